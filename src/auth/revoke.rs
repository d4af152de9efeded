//! Revocation: ending a user's sessions on every node at once.
//!
//! Django (or an operator) publishes to olive's exchange with the routing
//! key `olive.control.revoke.USER`, the body `{}` or `{"before": SECONDS}`
//! (an AMQP client, or `POST /olive/publish` on the admin listener). Every
//! node binds `olive.control.revoke.*` at start, and its hub hands what
//! arrives there to [`Revocations::apply`], never to subscribers. From
//! then on, for `auth.revoke_ttl`:
//!
//! - the user's tokens issued at or before `before` (by default: when the
//!   node received the revocation) are refused, like an expired token,
//!   with the reason "token revoked" (a token without `iat` is always
//!   covered);
//! - their open websocket sessions close with 4401 and SSE streams end,
//!   so the page asks Django for a new token, which Django grants or not.
//!
//! Keys under `olive.control.` are olive's own: no grant lets a client
//! publish there ([`super::Grants::may_publish`]), and the hub never
//! delivers them to subscribers.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::broker::Message;
use crate::live::key::{Key, Pattern};

/// Keys olive reserves for its own control messages.
pub const CONTROL_PREFIX: &str = "olive.control.";

/// What a revocation's key starts with; the user id follows.
pub const REVOKE_PREFIX: &str = "olive.control.revoke.";

/// Whether `key` is one of olive's control keys.
pub fn is_control(key: &Key) -> bool {
    key.as_str().starts_with(CONTROL_PREFIX)
}

/// The pattern every node binds to hear revocations.
pub fn pattern() -> Pattern {
    Pattern::parse("olive.control.revoke.*").expect("a valid pattern")
}

/// Revocations in force, and the signal that ends sessions.
pub struct Revocations {
    state: Mutex<State>,
    ttl: Duration,
    max: usize,
    /// The user id of each revocation, to every session waiting in
    /// [`Revocations::ended`].
    notify: broadcast::Sender<Arc<str>>,
}

#[derive(Default)]
struct State {
    by_user: HashMap<Arc<str>, Entry>,
    /// Oldest first, for expiry and the cap. A user revoked twice has two
    /// items; only the one whose time matches its entry counts.
    order: VecDeque<(Instant, Arc<str>)>,
}

#[derive(Clone, Copy)]
struct Entry {
    /// Tokens issued at or before this (seconds since the epoch) are refused.
    before: u64,
    at: Instant,
}

/// Why a control message was not applied.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("unknown control key {0} (olive knows olive.control.revoke.USER)")]
    UnknownKey(String),
    #[error("a revocation's body is {{}} or {{\"before\": SECONDS}}")]
    Body,
}

impl Revocations {
    pub fn new(ttl: Duration, max: usize) -> Revocations {
        let (notify, _) = broadcast::channel(64);
        Revocations { state: Mutex::default(), ttl, max, notify }
    }

    /// Applies a control message from the broker; returns the revoked user.
    pub fn apply(&self, message: &Message) -> Result<Arc<str>, ControlError> {
        let key = message.key.as_str();
        let user = key
            .strip_prefix(REVOKE_PREFIX)
            .filter(|u| !u.contains('.'))
            .ok_or_else(|| ControlError::UnknownKey(key.to_owned()))?;
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            before: Option<u64>,
        }
        let body: Body = serde_json::from_slice(&message.data).map_err(|_| ControlError::Body)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let user: Arc<str> = user.into();
        self.revoke(user.clone(), body.before.unwrap_or(now), Instant::now());
        Ok(user)
    }

    fn revoke(&self, user: Arc<str>, before: u64, now: Instant) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            state.expire(now, self.ttl);
            let before = state.by_user.get(&user).map_or(before, |e| e.before.max(before));
            state.by_user.insert(user.clone(), Entry { before, at: now });
            state.order.push_back((now, user.clone()));
            while state.by_user.len() > self.max {
                state.pop_oldest();
            }
        }
        // No receiver: no session of anyone is open, nothing to end.
        let _ = self.notify.send(user);
    }

    /// Whether a token of `user` issued at `issued` is revoked.
    pub fn revoked(&self, user: &str, issued: Option<u64>) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state
            .by_user
            .get(user)
            .is_some_and(|e| e.at.elapsed() < self.ttl && issued.is_none_or(|iat| iat <= e.before))
    }

    /// Completes when a token of `user` issued at `issued` is revoked.
    pub async fn ended(&self, user: &str, issued: Option<u64>) {
        // Subscribed before the first check: a revocation in between is
        // either seen by the check or received.
        let mut rx = self.notify.subscribe();
        if self.revoked(user, issued) {
            return;
        }
        loop {
            let heard = match rx.recv().await {
                Ok(revoked) => &*revoked == user,
                // Missed some: the table knows.
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => return std::future::pending().await,
            };
            if heard && self.revoked(user, issued) {
                return;
            }
        }
    }

    /// Revocations in force (for tests and metrics).
    pub fn len(&self) -> usize {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.expire(Instant::now(), self.ttl);
        state.by_user.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    fn expire(&mut self, now: Instant, ttl: Duration) {
        while self.order.front().is_some_and(|(at, _)| now.duration_since(*at) >= ttl) {
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        let Some((at, user)) = self.order.pop_front() else { return };
        if self.by_user.get(&user).is_some_and(|e| e.at == at) {
            self.by_user.remove(&user);
        }
    }
}

/// Applies the control messages the hub hands over ([`crate::live::hub::Hub::take_control`])
/// until the channel closes.
pub async fn run(auth: Arc<super::Auth>, mut control: tokio::sync::mpsc::UnboundedReceiver<Message>) {
    while let Some(message) = control.recv().await {
        match auth.revocations.apply(&message) {
            Ok(user) => {
                auth.amqp_users.forget(&user);
                super::Stats::add(&auth.stats.revocations);
                tracing::info!(%user, id = %message.id, "revoked: the user's sessions end and older tokens are refused");
            }
            Err(e) => {
                tracing::warn!(key = %message.key, id = %message.id, error = %e, "control message ignored")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, body: &str) -> Message {
        Message { key: Key::parse(key).unwrap(), id: "1".into(), data: body.to_owned().into(), from: None }
    }

    #[test]
    fn a_revocation_covers_tokens_issued_up_to_before() {
        let r = Revocations::new(Duration::from_secs(60), 10);
        assert_eq!(r.apply(&message("olive.control.revoke.42", r#"{"before": 1000}"#)).as_deref(), Ok("42"));
        assert!(r.revoked("42", Some(999)));
        assert!(r.revoked("42", Some(1000)));
        assert!(!r.revoked("42", Some(1001)), "a token minted after the revocation is good");
        assert!(r.revoked("42", None), "a token without iat cannot show it is newer");
        assert!(!r.revoked("43", Some(1)));
        // Without `before`: now, so every token minted so far.
        r.apply(&message("olive.control.revoke.7", "{}")).unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!(r.revoked("7", Some(now)));
        assert!(!r.revoked("7", Some(now + 1)));
    }

    #[test]
    fn bad_control_messages_are_refused() {
        let r = Revocations::new(Duration::from_secs(60), 10);
        for (key, body, want) in [
            ("olive.control.other.1", "{}", ControlError::UnknownKey("olive.control.other.1".into())),
            ("olive.control.revoke.1.2", "{}", ControlError::UnknownKey("olive.control.revoke.1.2".into())),
            ("olive.control.revoke.1", "[]", ControlError::Body),
            ("olive.control.revoke.1", r#"{"before":"x"}"#, ControlError::Body),
            ("olive.control.revoke.1", r#"{"after":1}"#, ControlError::Body),
        ] {
            assert_eq!(r.apply(&message(key, body)), Err(want), "{key} {body}");
        }
        assert!(r.is_empty());
    }

    #[test]
    fn revocations_expire_and_are_capped() {
        let r = Revocations::new(Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for (i, user) in ["a", "b", "c", "d"].into_iter().enumerate() {
            r.revoke(user.into(), 10, t0 + Duration::from_secs(i as u64));
        }
        assert!(!r.revoked("a", Some(1)), "the oldest goes past the cap");
        assert!(r.revoked("d", Some(1)));
        // A second revocation of b moves it to the back of the queue.
        r.revoke("b".into(), 10, t0 + Duration::from_secs(5));
        r.revoke("e".into(), 10, t0 + Duration::from_secs(6));
        assert!(r.revoked("b", Some(1)) && !r.revoked("c", Some(1)));
        let mut state = r.state.lock().unwrap();
        state.expire(t0 + Duration::from_secs(64), r.ttl);
        let mut left: Vec<_> = state.by_user.keys().map(|u| u.to_string()).collect();
        left.sort();
        assert_eq!(left, ["b", "e"]);
    }

    #[tokio::test]
    async fn sessions_end_when_their_user_is_revoked() {
        let r = Arc::new(Revocations::new(Duration::from_secs(60), 10));
        let waiting = {
            let r = r.clone();
            tokio::spawn(async move { r.ended("42", Some(5)).await })
        };
        let other = {
            let r = r.clone();
            tokio::spawn(async move { r.ended("43", Some(5)).await })
        };
        tokio::task::yield_now().await;
        r.revoke("42".into(), 10, Instant::now());
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("ended").unwrap();
        tokio::task::yield_now().await;
        assert!(!other.is_finished(), "another user's session goes on");
        // A newer token of the revoked user is not ended by the old revocation.
        let newer = tokio::time::timeout(Duration::from_millis(50), r.ended("42", Some(11))).await;
        assert!(newer.is_err());
    }
}
