//! Tier 2 of recovery: when the history cannot cover a reconnect gap,
//! asking the upstream that owns the data (`GET {recovery_url}?key=K&since=ID`,
//! served by the Django package; contract in `docs/PROTOCOL.md`).
//!
//! One plain HTTP/1.1 connection per request (hyper's connection API), not
//! the proxy's per-worker pools: recovery requests are rare (reconnects
//! with a gap), go to a URL rather than a configured upstream, and must be
//! bounded in time and size, whatever the upstream does.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::hub::resume::Resumed;
use super::hub::{Connection, SubscribeError};
use super::key::{Key, Pattern};
use super::protocol;
use crate::broker::Message;

/// Why the upstream could not fill a gap (the client then gets
/// `recovered: false`).
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("recovery URL {0:?} is not a valid http URL")]
    Url(String),
    #[error("recovery connection failed: {0}")]
    Connect(#[from] std::io::Error),
    #[error("recovery request failed: {0}")]
    Request(#[from] hyper::Error),
    #[error("recovery answered {0}")]
    Status(StatusCode),
    #[error("recovery did not answer in time")]
    Timeout,
    #[error("recovery answer unreadable or larger than allowed: {0}")]
    Body(crate::body::BoxError),
    #[error("recovery answer is not {{\"messages\":[{{\"id\":..,\"data\":..}}]}}: {0}")]
    Json(#[from] serde_json::Error),
}

#[derive(Deserialize)]
struct Answer {
    messages: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    id: String,
    data: Box<RawValue>,
}

/// The HTTP client for recovery requests, shared by every live route.
pub struct Recoverer {
    timeout: Duration,
    max_bytes: usize,
}

impl Recoverer {
    pub fn new(timeout: Duration, max_bytes: usize) -> Recoverer {
        Recoverer { timeout, max_bytes }
    }

    /// Asks `url` for the messages on `key` after `since`, oldest first.
    pub async fn fetch(&self, url: &str, key: &Key, since: &str) -> Result<Vec<Message>, RecoverError> {
        let sep = if url.contains('?') { '&' } else { '?' };
        let full =
            format!("{url}{sep}key={}&since={}", key.as_str(), utf8_percent_encode(since, NON_ALPHANUMERIC));
        let uri: Uri = full.parse().map_err(|_| RecoverError::Url(url.to_owned()))?;
        let bad_url = || RecoverError::Url(url.to_owned());
        let authority =
            uri.authority().filter(|_| uri.scheme_str() == Some("http")).ok_or_else(bad_url)?.clone();
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let req = Request::get(target)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|_| bad_url())?;
        let address = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let exchange = async {
            let stream = tokio::net::TcpStream::connect(address).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let resp = sender.send_request(req).await?;
            if resp.status() != StatusCode::OK {
                return Err(RecoverError::Status(resp.status()));
            }
            let body = Limited::new(resp.into_body(), self.max_bytes)
                .collect()
                .await
                .map_err(RecoverError::Body)?
                .to_bytes();
            Ok(body)
        };
        let body =
            tokio::time::timeout(self.timeout, exchange).await.map_err(|_| RecoverError::Timeout)??;
        let answer: Answer = serde_json::from_slice(&body)?;
        Ok(answer
            .messages
            .into_iter()
            .map(|m| Message {
                key: key.clone(),
                id: m.id.into(),
                data: Bytes::from(m.data.get().to_owned()),
                from: None,
            })
            .collect())
    }
}

/// Where a live route recovers from, when it names a recovery URL.
#[derive(Clone)]
pub struct Target {
    pub recoverer: Arc<Recoverer>,
    pub url: String,
}

/// Subscribes with a resume point, both tiers: the history first, then the
/// upstream when the route has one. Whatever happens, the client gets one
/// `subscribed` frame, then the recovered messages, then live ones.
pub async fn subscribe(
    conn: &mut Connection,
    pattern: Pattern,
    since: &str,
    max: usize,
    target: Option<&Target>,
) -> Result<(), SubscribeError> {
    let name = pattern.clone();
    let pending = match conn.resume(pattern, since, max, target.is_some())? {
        Resumed::Recovered => return Ok(()),
        Resumed::NotRecovered => {
            conn.settled().await;
            conn.send(protocol::subscribed(name.as_str(), false));
            return Ok(());
        }
        // Asked only once the broker routes the key here: whatever the
        // upstream's answer misses is then delivered live.
        Resumed::Pending(pending) => {
            conn.settled().await;
            pending
        }
    };
    let recovered = match (target, pending.pattern.is_exact()) {
        (Some(target), Some(key)) => match target.recoverer.fetch(&target.url, &key, &pending.since).await {
            Ok(messages) => Some(messages),
            Err(e) => {
                tracing::warn!(url = %target.url, key = %key, error = %e, "recovery from upstream failed");
                None
            }
        },
        _ => None,
    };
    conn.finish(pending, recovered);
    Ok(())
}
