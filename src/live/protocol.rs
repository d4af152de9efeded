//! Wire protocol v1: the JSON text frames between browsers and olive
//! (`docs/PROTOCOL.md`).
//!
//! Client frames are parsed into [`ClientFrame`] with every error mapped to
//! one of the protocol's error codes; server frames are built by the
//! functions here, so that the exact bytes sent for each kind of frame are
//! decided in one place. Message frames are serialised once per message
//! and the same bytes shared by every receiving connection.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::key::{Key, KeyError, Pattern};
use super::presence::Member;

/// The protocol's error codes (`{"type":"error","code":C}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    Invalid,
    Forbidden,
    RateLimited,
    Unavailable,
    TooLarge,
}

/// Who published a message through olive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    pub user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A frame a client sent, validated.
#[derive(Debug)]
pub enum ClientFrame {
    Subscribe { key: Pattern, since: Option<String> },
    Unsubscribe { key: Pattern },
    Publish { key: Key, data: Box<RawValue>, reference: Option<Box<RawValue>> },
    Presence { key: Key },
    Ping,
}

/// A client frame that could not be used, with the `ref` to echo when the
/// client gave one.
#[derive(Debug)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow)]
    key: Option<std::borrow::Cow<'a, str>>,
    since: Option<String>,
    data: Option<Box<RawValue>>,
    #[serde(rename = "ref")]
    reference: Option<Box<RawValue>>,
}

impl ClientFrame {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        let raw: Raw<'_> = serde_json::from_str(text).map_err(|e| FrameError {
            code: ErrorCode::Invalid,
            message: format!("not a protocol frame: {e}"),
            reference: None,
        })?;
        let reference = raw.reference;
        let invalid = |message: String, reference: Option<Box<RawValue>>| FrameError {
            code: ErrorCode::Invalid,
            message,
            reference,
        };
        let key = raw.key.as_deref();
        let need_key = |reference: &Option<Box<RawValue>>| {
            key.ok_or_else(|| invalid(format!("{} needs a key", raw.kind), reference.clone()))
        };
        let pattern = |reference: &Option<Box<RawValue>>| -> Result<Pattern, FrameError> {
            Pattern::parse(need_key(reference)?).map_err(|e| key_error(e, reference.clone()))
        };
        let exact = |reference: &Option<Box<RawValue>>| -> Result<Key, FrameError> {
            Key::parse(need_key(reference)?).map_err(|e| key_error(e, reference.clone()))
        };
        match raw.kind {
            "subscribe" => Ok(ClientFrame::Subscribe { key: pattern(&reference)?, since: raw.since }),
            "unsubscribe" => Ok(ClientFrame::Unsubscribe { key: pattern(&reference)? }),
            "publish" => {
                let key = exact(&reference)?;
                let data = raw.data.ok_or_else(|| invalid("publish needs data".into(), reference.clone()))?;
                Ok(ClientFrame::Publish { key, data, reference })
            }
            "presence" => Ok(ClientFrame::Presence { key: exact(&reference)? }),
            "ping" => Ok(ClientFrame::Ping),
            other => Err(invalid(format!("unknown frame type {other:?}"), reference)),
        }
    }
}

fn key_error(e: KeyError, reference: Option<Box<RawValue>>) -> FrameError {
    FrameError { code: ErrorCode::Invalid, message: e.to_string(), reference }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Subscribed {
        key: &'a str,
        recovered: bool,
    },
    Unsubscribed {
        key: &'a str,
    },
    Message {
        key: &'a str,
        id: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a From>,
    },
    Ack {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
        id: &'a str,
    },
    Error {
        #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
        reference: Option<&'a RawValue>,
        code: ErrorCode,
        message: &'a str,
    },
    Pong,
    Presence {
        key: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<&'a [&'a Member]>,
        #[serde(skip_serializing_if = "Option::is_none")]
        anonymous: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        count: Option<usize>,
    },
    Join(Change<'a>),
    Leave(Change<'a>),
}

/// A `join` or `leave`: one named member, or the new anonymous total.
#[derive(Serialize)]
struct Change<'a> {
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    member: Option<&'a Member>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anonymous: Option<usize>,
}

fn encode(frame: &Out<'_>) -> Bytes {
    // Serialising these types cannot fail: every field is a string, a bool
    // or already-valid JSON.
    Bytes::from(serde_json::to_vec(frame).unwrap_or_default())
}

pub fn subscribed(key: &str, recovered: bool) -> Bytes {
    encode(&Out::Subscribed { key, recovered })
}

pub fn unsubscribed(key: &str) -> Bytes {
    encode(&Out::Unsubscribed { key })
}

/// A `message` frame; `data` must be valid JSON (it is checked on entry).
pub fn message(key: &str, id: &str, data: &RawValue, from: Option<&From>) -> Bytes {
    encode(&Out::Message { key, id, data, from })
}

pub fn ack(reference: Option<&RawValue>, id: &str) -> Bytes {
    encode(&Out::Ack { reference, id })
}

pub fn error(reference: Option<&RawValue>, code: ErrorCode, message: &str) -> Bytes {
    encode(&Out::Error { reference, code, message })
}

pub fn pong() -> Bytes {
    encode(&Out::Pong)
}

/// The answer to a presence request while a key is small: its named
/// members and how many anonymous connections are on it.
pub fn presence(key: &str, members: &[&Member], anonymous: usize) -> Bytes {
    encode(&Out::Presence { key, members: Some(members), anonymous: Some(anonymous), count: None })
}

/// A key's presence as a count only (above `live.presence_max_members`).
pub fn presence_count(key: &str, count: usize) -> Bytes {
    encode(&Out::Presence { key, members: None, anonymous: None, count: Some(count) })
}

/// `join` (`joined`) or `leave` of a named member.
pub fn member_event(joined: bool, key: &str, member: &Member) -> Bytes {
    let change = Change { key, member: Some(member), anonymous: None };
    encode(&if joined { Out::Join(change) } else { Out::Leave(change) })
}

/// `join` or `leave` of anonymous connections, with the new total.
pub fn anonymous_event(joined: bool, key: &str, anonymous: usize) -> Bytes {
    let change = Change { key, member: None, anonymous: Some(anonymous) };
    encode(&if joined { Out::Join(change) } else { Out::Leave(change) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(text: &str) -> Option<ErrorCode> {
        ClientFrame::parse(text).err().map(|e| e.code)
    }

    #[test]
    fn client_frames() {
        match ClientFrame::parse(r#"{"type":"subscribe","key":"olive.notes.note.*","since":"X"}"#).unwrap() {
            ClientFrame::Subscribe { key, since } => {
                assert_eq!(key, Pattern::parse("olive.notes.note.*").unwrap());
                assert_eq!(since.as_deref(), Some("X"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(ClientFrame::parse(r#"{"type":"ping"}"#).unwrap(), ClientFrame::Ping));
        match ClientFrame::parse(r#"{"type":"publish","key":"olive.a.b.1","data":{"x":[1,2]},"ref":7}"#)
            .unwrap()
        {
            ClientFrame::Publish { key, data, reference } => {
                assert_eq!(key.as_str(), "olive.a.b.1");
                assert_eq!(data.get(), r#"{"x":[1,2]}"#);
                assert_eq!(reference.unwrap().get(), "7");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_frames_are_invalid() {
        for text in [
            "not json",
            "[]",
            r#"{"type":"dance"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","key":"a..b"}"#,
            r#"{"type":"publish","key":"olive.a.*","data":1}"#,
            r#"{"type":"publish","key":"olive.a.b"}"#,
            r#"{"type":"ping","extra":1}"#,
        ] {
            assert_eq!(code_of(text), Some(ErrorCode::Invalid), "{text}");
        }
    }

    #[test]
    fn errors_echo_the_reference() {
        let e =
            ClientFrame::parse(r#"{"type":"publish","key":"olive.a.#","data":1,"ref":"r1"}"#).unwrap_err();
        assert_eq!(e.reference.unwrap().get(), r#""r1""#);
    }

    #[test]
    fn server_frames() {
        let data = RawValue::from_string(r#"{"html":"<p>hi</p>"}"#.into()).unwrap();
        let from = From { user: "7".into(), name: Some("Ann".into()) };
        assert_eq!(
            message("olive.a.b.1", "01J", &data, Some(&from)),
            r#"{"type":"message","key":"olive.a.b.1","id":"01J","data":{"html":"<p>hi</p>"},"from":{"user":"7","name":"Ann"}}"#
        );
        assert_eq!(subscribed("k", false), r#"{"type":"subscribed","key":"k","recovered":false}"#);
        assert_eq!(
            error(None, ErrorCode::TooLarge, "big"),
            r#"{"type":"error","code":"too_large","message":"big"}"#
        );
        assert_eq!(pong(), r#"{"type":"pong"}"#);
    }

    #[test]
    fn presence_frames() {
        let ann = Member { user: "7".into(), name: Some("Ann".into()) };
        let bob = Member { user: "8".into(), name: None };
        assert_eq!(
            presence("k", &[&ann, &bob], 3),
            r#"{"type":"presence","key":"k","members":[{"user":"7","name":"Ann"},{"user":"8"}],"anonymous":3}"#
        );
        assert_eq!(presence_count("k", 250), r#"{"type":"presence","key":"k","count":250}"#);
        assert_eq!(
            member_event(true, "k", &ann),
            r#"{"type":"join","key":"k","member":{"user":"7","name":"Ann"}}"#
        );
        assert_eq!(anonymous_event(false, "k", 2), r#"{"type":"leave","key":"k","anonymous":2}"#);
    }
}
