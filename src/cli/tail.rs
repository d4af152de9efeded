//! `olive tail`: subscribes to keys or patterns and prints the live
//! messages, one line each, reconnecting (and resuming) until stopped.
//!
//! Messages go to stdout; what happens to the connection (subscribed,
//! reconnecting, errors) goes to stderr, so that stdout stays a clean
//! stream of messages for scripts.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::client::{ConnectArgs, Failure, Incoming, Session, Status};
use crate::live::id::MessageId;
use crate::live::key::{Key, Pattern};

/// First reconnect delay; doubled after each failed attempt.
const RECONNECT_MIN: Duration = Duration::from_millis(250);
/// Longest reconnect delay: a restart of olive is seen within this.
const RECONNECT_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Keys or patterns to subscribe to (`*` one segment, `#` any number).
    #[arg(required = true, value_name = "PATTERN")]
    pub patterns: Vec<String>,
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print each message frame exactly as received, one JSON object a line.
    #[arg(long)]
    pub json: bool,
    /// Resume after this message id: first replay what olive's history
    /// still holds after it (exact keys only).
    #[arg(long, value_name = "ID")]
    pub since: Option<String>,
    /// Exit when the connection ends instead of reconnecting.
    #[arg(long)]
    pub once: bool,
    /// Exit 0 after printing N messages (implies --once).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// What carries over from one connection to the next.
struct State {
    /// The `since` to send per pattern: the last message id it delivered.
    since: HashMap<String, String>,
    /// Parsed patterns, to tell which of them a message came through.
    patterns: Vec<(String, Option<Pattern>)>,
    printed: u64,
    /// Failed attempts since the last good session (for the backoff).
    attempts: u32,
}

enum Ended {
    /// --count reached or SIGINT/SIGTERM.
    Done,
    /// stdout was closed (`olive tail ... | head`): nothing more to do.
    OutputClosed,
}

pub async fn run(args: Args) -> Status {
    let stop = CancellationToken::new();
    let trigger = stop.clone();
    tokio::spawn(async move {
        crate::edge::termination_signal().await;
        trigger.cancel();
    });
    let mut state = State {
        since: match &args.since {
            Some(id) => args.patterns.iter().map(|p| (p.clone(), id.clone())).collect(),
            None => HashMap::new(),
        },
        patterns: args.patterns.iter().map(|p| (p.clone(), Pattern::parse(p).ok())).collect(),
        printed: 0,
        attempts: 0,
    };
    let once = args.once || args.count.is_some();
    loop {
        let failure = tokio::select! {
            ended = session(&args, &mut state) => match ended {
                Ok(Ended::Done | Ended::OutputClosed) => return Status::Ok,
                Err(failure) => failure,
            },
            _ = stop.cancelled() => return Status::Ok,
        };
        if once || matches!(failure.status, Status::Usage | Status::Refused) {
            eprintln!("olive tail: {failure}");
            return failure.status;
        }
        let delay = backoff(state.attempts);
        state.attempts = state.attempts.saturating_add(1);
        eprintln!("olive tail: {failure}; reconnecting in {:.1}s", delay.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => return Status::Ok,
        }
    }
}

/// One connection: subscribe to every pattern, then print until the count
/// is reached or the connection fails.
async fn session(args: &Args, state: &mut State) -> Result<Ended, Failure> {
    let mut session = Session::connect(&args.connect).await?;
    for pattern in &args.patterns {
        let mut frame = json!({"type": "subscribe", "key": pattern});
        if let Some(since) = state.since.get(pattern) {
            frame["since"] = json!(since);
        }
        session.send(&frame).await?;
    }
    // olive answers a connection's subscribes in order, one frame each.
    let mut unanswered = args.patterns.len();
    let mut out = std::io::stdout().lock();
    loop {
        let incoming = session.recv().await?;
        match incoming.frame.kind.as_str() {
            "message" => {
                state.delivered(&incoming);
                let line = if args.json { incoming.text.clone() } else { human_line(&incoming) };
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(Ended::OutputClosed);
                }
                state.printed += 1;
                if args.count.is_some_and(|n| state.printed >= n) {
                    drop(out);
                    session.close().await;
                    return Ok(Ended::Done);
                }
            }
            "subscribed" if unanswered > 0 => {
                unanswered -= 1;
                let key = incoming.frame.key.as_deref().unwrap_or("?");
                let resumed = match (state.since.contains_key(key), incoming.frame.recovered) {
                    (true, Some(true)) => ", resumed",
                    (true, _) => ", not resumed: messages may have been missed",
                    (false, _) => "",
                };
                eprintln!("olive tail: subscribed to {key}{resumed}");
                if unanswered == 0 {
                    state.attempts = 0;
                }
            }
            "error" => {
                let code = incoming.frame.code.as_deref().unwrap_or("?");
                let failure =
                    Failure::from_error_frame(code, incoming.frame.message.as_deref().unwrap_or(""));
                if unanswered > 0 {
                    return Err(failure);
                }
                eprintln!("olive tail: {failure}");
            }
            _ => {}
        }
    }
}

impl State {
    /// Remembers a message's id as the resume point of every pattern it
    /// matches.
    fn delivered(&mut self, incoming: &Incoming) {
        let (Some(key), Some(id)) = (&incoming.frame.key, &incoming.frame.id) else { return };
        let Ok(key) = Key::parse(key) else { return };
        for (text, pattern) in &self.patterns {
            if pattern.as_ref().is_some_and(|p| p.matches(&key)) {
                self.since.insert(text.clone(), id.clone());
            }
        }
    }
}

/// Exponential backoff with jitter: a delay in [d/2, d] where d doubles
/// from RECONNECT_MIN up to RECONNECT_MAX, so that many clients cut off
/// together do not come back in lockstep.
fn backoff(attempts: u32) -> Duration {
    let full = RECONNECT_MIN.saturating_mul(1u32 << attempts.min(16)).min(RECONNECT_MAX);
    full / 2 + full.mul_f64(fastrand::f64() / 2.0)
}

/// `TIME KEY [NAME:] TEXT`: the time the id says the message was
/// published (UTC), the key, the sender when olive knows one, and the
/// message: a comment's text, or its data as compact JSON.
fn human_line(incoming: &Incoming) -> String {
    let frame = &incoming.frame;
    let time = frame
        .id
        .as_deref()
        .and_then(|id| MessageId::parse(id).ok())
        .map(|id| UNIX_EPOCH + Duration::from_millis(id.timestamp_ms()))
        .unwrap_or_else(SystemTime::now);
    let mut line =
        format!("{} {}", humantime::format_rfc3339_millis(time), clean(frame.key.as_deref().unwrap_or("?")));
    if let Some(from) = &frame.from {
        line.push(' ');
        line.push_str(&clean(from.name.as_deref().unwrap_or(&from.user)));
        line.push(':');
    }
    line.push(' ');
    line.push_str(&clean(&frame.data.as_ref().map_or_else(|| "null".to_owned(), |raw| data_text(raw))));
    line
}

/// A comment's text: its `text` field, else its `html` field as text;
/// anything else as compact JSON (or as sent, when `Value` cannot hold it).
fn data_text(raw: &serde_json::value::RawValue) -> String {
    let Ok(data) = serde_json::from_str::<Value>(raw.get()) else {
        return raw.get().trim().to_owned();
    };
    if let Some(text) = data.get("text").and_then(Value::as_str) {
        return text.to_owned();
    }
    if let Some(html) = data.get("html").and_then(Value::as_str) {
        return html_text(html);
    }
    data.to_string()
}

#[cfg(test)]
#[test]
fn data_beyond_f64_is_printed_as_sent() {
    let raw = serde_json::value::RawValue::from_string("1e99999".into()).unwrap();
    assert_eq!(data_text(&raw), "1e99999");
    let raw = serde_json::value::RawValue::from_string(r#"{"text":"hi","n":1e99999}"#.into()).unwrap();
    assert_eq!(data_text(&raw), r#"{"text":"hi","n":1e99999}"#);
}

/// The text of an HTML fragment: tags dropped, the common entities
/// decoded. Enough for a comment on a terminal; not an HTML parser.
fn html_text(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(at) = rest.find(['<', '&']) {
        text.push_str(&rest[..at]);
        rest = &rest[at..];
        if rest.starts_with('<') {
            match rest.find('>') {
                Some(end) => {
                    // Block-level breaks become spaces so words do not run together.
                    text.push(' ');
                    rest = &rest[end + 1..];
                }
                None => {
                    text.push_str(rest);
                    rest = "";
                }
            }
        } else {
            let entity =
                rest.find(';').filter(|&end| end <= 10).and_then(|end| Some((entity(&rest[1..end])?, end)));
            match entity {
                Some((ch, end)) => {
                    text.push(ch);
                    rest = &rest[end + 1..];
                }
                None => {
                    text.push('&');
                    rest = &rest[1..];
                }
            }
        }
    }
    text.push_str(rest);
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn entity(name: &str) -> Option<char> {
    match name {
        "amp" => Some('&'),
        "lt" => Some('<'),
        "gt" => Some('>'),
        "quot" => Some('"'),
        "apos" => Some('\''),
        "nbsp" => Some(' '),
        _ => {
            let number = name.strip_prefix('#')?;
            let code = match number.strip_prefix(['x', 'X']) {
                Some(hex) => u32::from_str_radix(hex, 16).ok()?,
                None => number.parse().ok()?,
            };
            char::from_u32(code)
        }
    }
}

/// One line, safe for a terminal: line breaks and tabs become spaces and
/// other control characters (escape sequences a publisher could use to
/// rewrite the operator's screen) are dropped.
fn clean(text: &str) -> String {
    text.chars()
        .filter_map(|c| match c {
            '\n' | '\r' | '\t' => Some(' '),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::client::ServerFrame;

    fn incoming(text: &str) -> Incoming {
        let frame: ServerFrame = serde_json::from_str(text).unwrap();
        Incoming { text: text.to_owned(), frame }
    }

    #[test]
    fn human_lines() {
        // 01JAAAAAAA... : a real id, so the time comes from it.
        let id = MessageId::from_parts(1_700_000_000_123, 42).to_string();
        for (data, from, want) in [
            (r#"{"text":"hello"}"#, "", "hello"),
            (r#"{"html":"<p>hi &amp; <b>bye</b></p>","text":"plain"}"#, "", "plain"),
            (r#"{"html":"<p>hi &amp;&#x41;&#66; <b>bye</b></p>"}"#, "", "hi &AB bye"),
            (r#"{"n":1,"text":7}"#, "", r#"{"n":1,"text":7}"#),
            (r#""just a string""#, "", r#""just a string""#),
            (r#"{"text":"two\nlines\u001b[2J"}"#, "", "two lines[2J"),
            (r#"{"text":"hi"}"#, r#","from":{"user":"7","name":"Ann"}"#, "Ann: hi"),
            (r#"{"text":"hi"}"#, r#","from":{"user":"7"}"#, "7: hi"),
        ] {
            let text = format!(r#"{{"type":"message","key":"olive.a.b.1","id":"{id}","data":{data}{from}}}"#);
            assert_eq!(
                human_line(&incoming(&text)),
                format!("2023-11-14T22:13:20.123Z olive.a.b.1 {want}"),
                "{data}"
            );
        }
    }

    #[test]
    fn html_text_is_forgiving() {
        for (html, want) in [
            ("a < b", "a < b"),
            ("fish &chips; &unknown; &", "fish &chips; &unknown; &"),
            ("<p>one</p><p>two</p>", "one two"),
            ("&lt;script&gt;", "<script>"),
        ] {
            assert_eq!(html_text(html), want, "{html}");
        }
    }

    #[test]
    fn backoff_grows_jittered_and_capped() {
        for attempts in [0, 1, 5, 40] {
            let full = RECONNECT_MIN.saturating_mul(1 << attempts.min(16)).min(RECONNECT_MAX);
            for _ in 0..20 {
                let d = backoff(attempts);
                assert!(d >= full / 2 && d <= full, "{attempts}: {d:?}");
            }
        }
        assert_eq!(backoff(40).max(RECONNECT_MAX), RECONNECT_MAX);
    }

    #[test]
    fn resume_points_follow_the_patterns_a_message_matched() {
        let mut state = State {
            since: HashMap::new(),
            patterns: ["olive.a.b.1", "olive.a.#", "olive.x.*"]
                .iter()
                .map(|p| (p.to_string(), Pattern::parse(p).ok()))
                .collect(),
            printed: 0,
            attempts: 0,
        };
        state.delivered(&incoming(r#"{"type":"message","key":"olive.a.b.1","id":"ID1","data":1}"#));
        state.delivered(&incoming(r#"{"type":"message","key":"olive.a.c.2","id":"ID2","data":1}"#));
        assert_eq!(state.since.get("olive.a.b.1").map(String::as_str), Some("ID1"));
        assert_eq!(state.since.get("olive.a.#").map(String::as_str), Some("ID2"));
        assert_eq!(state.since.get("olive.x.*"), None);
    }
}
