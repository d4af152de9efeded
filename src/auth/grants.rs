//! Grants: the key patterns an identity may subscribe to, publish on and
//! see the presence of, and the checks every live action goes through.
//!
//! A subscribe to a pattern is allowed only when one granted pattern
//! covers every key it can match ([`Pattern::contains`]), so a grant of
//! `olive.notes.#` allows `olive.notes.note.*` but never `olive.#`. A
//! pattern covered only by the union of several grants is refused: that
//! errs on the side of refusing, never of allowing.

use serde::{Deserialize, Serialize};

use crate::live::key::{Key, KeyError, Pattern};

/// What an identity may do, as patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    pub subscribe: Vec<Pattern>,
    pub publish: Vec<Pattern>,
    pub presence: Vec<Pattern>,
}

/// Grants as they travel in a token's `grants` claim (and as `olive
/// token` writes them). Unknown kinds are ignored: an older olive grants
/// nothing for them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawGrants {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribe: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presence: Vec<String>,
}

/// A grant that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("{kind}[{index}] {pattern:?}: {error}")]
    Pattern { kind: &'static str, index: usize, pattern: String, error: KeyError },
    #[error("{kind} has {count} patterns, at most {max}")]
    TooMany { kind: &'static str, count: usize, max: usize },
}

impl Grants {
    /// Parses each kind's patterns, at most `max` per kind.
    pub fn parse(
        subscribe: &[String],
        publish: &[String],
        presence: &[String],
        max: usize,
    ) -> Result<Grants, GrantError> {
        let kind = |kind: &'static str, list: &[String]| -> Result<Vec<Pattern>, GrantError> {
            if list.len() > max {
                return Err(GrantError::TooMany { kind, count: list.len(), max });
            }
            list.iter()
                .enumerate()
                .map(|(index, p)| {
                    Pattern::parse(p).map_err(|error| GrantError::Pattern {
                        kind,
                        index,
                        pattern: p.clone(),
                        error,
                    })
                })
                .collect()
        };
        Ok(Grants {
            subscribe: kind("subscribe", subscribe)?,
            publish: kind("publish", publish)?,
            presence: kind("presence", presence)?,
        })
    }

    pub fn from_raw(raw: &RawGrants, max: usize) -> Result<Grants, GrantError> {
        Self::parse(&raw.subscribe, &raw.publish, &raw.presence, max)
    }

    /// Whether every key `pattern` can match is covered by one grant.
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe.iter().any(|g| g.contains(pattern))
    }

    /// Whether a grant covers `key`. olive's control keys
    /// (`olive.control.…`, [`super::revoke`]) are never granted: only the
    /// admin listener and the site's own AMQP programs publish there.
    pub fn may_publish(&self, key: &Key) -> bool {
        !super::revoke::is_control(key) && self.publish.iter().any(|g| g.matches(key))
    }

    pub fn may_see_presence(&self, key: &Key) -> bool {
        self.presence.iter().any(|g| g.matches(key))
    }

    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.publish.is_empty() && self.presence.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(subscribe: &[&str], publish: &[&str]) -> Grants {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Grants::parse(&own(subscribe), &own(publish), &own(subscribe), 8).unwrap()
    }

    #[test]
    fn subscribe_needs_one_covering_grant() {
        let g = grants(&["olive.notes.#", "olive.demo.room.1"], &[]);
        for (pattern, allowed) in [
            ("olive.notes.note.17", true),
            ("olive.notes.note.*", true),
            ("olive.notes.#", true),
            ("olive.notes", true),
            ("olive.demo.room.1", true),
            ("olive.demo.room.*", false),
            ("olive.#", false),
            ("#", false),
            ("*.notes.note.1", false),
        ] {
            assert_eq!(g.may_subscribe(&Pattern::parse(pattern).unwrap()), allowed, "{pattern}");
        }
    }

    #[test]
    fn publish_and_presence_match_keys() {
        let g = grants(&["olive.demo.#"], &["olive.notes.*.1"]);
        assert!(g.may_publish(&Key::parse("olive.notes.note.1").unwrap()));
        assert!(!g.may_publish(&Key::parse("olive.notes.note.2").unwrap()));
        assert!(g.may_see_presence(&Key::parse("olive.demo.a.b").unwrap()));
        assert!(!g.may_see_presence(&Key::parse("olive.notes.note.1").unwrap()));
        assert!(!Grants::default().may_subscribe(&Pattern::parse("a").unwrap()));
    }

    #[test]
    fn no_grant_covers_olive_control_keys() {
        let g = grants(&[], &["#"]);
        assert!(g.may_publish(&Key::parse("olive.notes.note.1").unwrap()));
        assert!(!g.may_publish(&Key::parse("olive.control.revoke.1").unwrap()));
    }

    #[test]
    fn bad_and_too_many_patterns_are_refused() {
        let bad = Grants::parse(&["olive..x".into()], &[], &[], 8).unwrap_err();
        assert!(matches!(bad, GrantError::Pattern { kind: "subscribe", index: 0, .. }), "{bad}");
        let many: Vec<String> = (0..3).map(|i| format!("k.{i}")).collect();
        let err = Grants::parse(&[], &many, &[], 2).unwrap_err();
        assert_eq!(err, GrantError::TooMany { kind: "publish", count: 3, max: 2 });
    }
}
