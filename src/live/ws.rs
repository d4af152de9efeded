//! The websocket endpoint of the live hub (`{route}/ws`), protocol v1.
//!
//! The opening handshake is answered here: an HTTP/1.1 upgrade (RFC 6455
//! §4.2.2, `101` with `Sec-WebSocket-Accept`) or, over HTTP/2, an extended
//! CONNECT with `:protocol = websocket` (RFC 8441 §4-5, `200`, no key and
//! no accept: the stream is the connection). The session then runs
//! as two tasks on the connection's worker. The reader parses client
//! frames and acts on them; the writer owns the socket's sending half and
//! drains the connection's bounded queue, batching what is queued into one
//! flush. When either ends the other follows: the reader's end drops the
//! hub connection, which closes the queue the writer drains; the writer's
//! end cancels a token the reader watches.
//!
//! Every subscribe, publish and presence request is checked against the
//! session's [`Identity`] (denials are `error` frames with `forbidden`, and
//! the session stays); when the identity's token expires, the writer
//! closes the session with 4401 so the client refreshes and reconnects.

use std::sync::Arc;

use crate::edge::handler::Upgrade;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message as WsMessage, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::hub::outbox::{End, Refused};
use super::hub::{Connection, Frame, Hub, Kick, Outbound, SubscribeError};
use super::id::MessageId;
use super::protocol::{self, ClientFrame, ErrorCode};
use super::recover::{self, Target};
use crate::auth::{Auth, Identity, Stats};
use crate::body::{self, Body};
use crate::broker::Message;
use crate::config::Live;
use crate::limit::{Client, RateLimits, Share};
use crate::ops::metrics::Metrics;

/// Frames the writer may batch into one flush.
const WRITE_BATCH: usize = 64;

/// Bytes of batched frames tungstenite holds before it writes to the
/// socket. A batch (what is queued when the writer wakes) goes out in one
/// `send()` up to this size: with 0, every frame was a syscall of its own,
/// and a connection that fell behind never caught up cheaper. A lone frame
/// is still written at once, by the flush that ends every batch.
const WRITE_BUFFER: usize = 8 * 1024;

/// The close code for an expired or revoked token (private-use range,
/// RFC 6455 §7.4.2): like HTTP 401, "get a new token and come back".
pub const CLOSE_TOKEN_EXPIRED: u16 = 4401;

/// What a session acts as: who it is, where its denials are counted, and
/// the per-client limits it answers to.
pub struct Session {
    pub identity: Identity,
    pub auth: Arc<Auth>,
    /// Who `rate_limits.publishes_per_user` counts.
    pub client: Client,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    /// The session's place under `rate_limits.max_sessions_per_user`
    /// (users' live sessions only), released when it ends.
    pub share: Option<Share<Arc<str>>>,
}

impl Session {
    /// Spends one of the publisher's `publishes_per_user`, or says why not.
    pub fn publish_allowed(&self) -> Result<(), String> {
        RateLimits::check(&self.limits.publishes, &self.client, &self.metrics, "publishes_per_user")
            .map_err(|l| format!("publishing too fast; try again in {} ms", l.retry_after.as_millis().max(1)))
    }
}

/// Answers a websocket upgrade on the live route and starts the session.
pub fn upgrade(
    hub: &Arc<Hub>,
    config: &Arc<Live>,
    mut req: Request<Incoming>,
    upgrade: Upgrade,
    recovery: Option<Target>,
    who: Session,
) -> Response<Body> {
    let headers = req.headers();
    // `None`: RFC 8441, nothing to accept.
    let accept = if is_extended_connect(&req) {
        None
    } else {
        let is_upgrade = crate::proxy::tunnel::is_websocket_upgrade(&req);
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).filter(|_| is_upgrade) else {
            return plain(StatusCode::BAD_REQUEST, "websocket upgrade expected\n");
        };
        Some(derive_accept_key(key.as_bytes()))
    };
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        let mut resp = plain(StatusCode::UPGRADE_REQUIRED, "websocket version 13 expected\n");
        resp.headers_mut().insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return resp;
    }
    let upgraded = hyper::upgrade::on(&mut req);
    let (hub, config) = (hub.clone(), config.clone());
    let shutdown = upgrade.shutdown.clone();
    // Boxed: every idle session's task would otherwise carry it inline.
    let who = Box::new(who);
    let task = async move {
        let io = match upgraded.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => return tracing::debug!(error = %e, "websocket upgrade failed"),
        };
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_bytes)
            .write_buffer_size(WRITE_BUFFER)
            // olive answers frames up to max_frame_bytes with too_large and
            // keeps the connection; far larger ones end it (1009).
            .max_message_size(Some(config.max_frame_bytes.saturating_mul(4)))
            .max_frame_size(Some(config.max_frame_bytes.saturating_mul(4)));
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
        if config.diagnostic_echo {
            return echo(ws).await;
        }
        session(ws, hub, config, shutdown, recovery, who).await;
    };
    upgrade.spawn(task);
    let mut resp = Response::new(body::empty());
    let Some(accept) = accept else {
        return resp; // 200: the HTTP/2 stream carries the websocket from here
    };
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::SEC_WEBSOCKET_ACCEPT, HeaderValue::from_str(&accept).expect("base64 is a valid header"));
    resp
}

/// An HTTP/2 extended CONNECT for a websocket (RFC 8441 §4): olive's
/// HTTP/2 settings announce `SETTINGS_ENABLE_CONNECT_PROTOCOL`.
pub fn is_extended_connect<B>(req: &Request<B>) -> bool {
    req.method() == http::Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some_and(|p| p.as_str() == "websocket")
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp
}

/// `live.diagnostic_echo`: every data message back as it came (pings,
/// pongs and the close handshake are tungstenite's, as in a session), for
/// conformance suites; no hub, no protocol.
async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(msg)) if msg.is_text() || msg.is_binary() => {
                if ws.send(msg).await.is_err() {
                    break;
                }
            }
            Some(Ok(_)) => {}
            // Past the message or frame limit: say so (tungstenite closes
            // with 1002 or 1007 for protocol and UTF-8 errors itself).
            Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                let _ = ws.send(close(CloseCode::Size, "message too big")).await;
                break;
            }
            Some(Err(_)) | None => break,
        }
    }
}

/// Why the session ended, as a close frame.
fn close(code: CloseCode, reason: &'static str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: Utf8Bytes::from_static(reason) }))
}

async fn session<S>(
    ws: WebSocketStream<S>,
    hub: Arc<Hub>,
    config: Arc<Live>,
    shutdown: CancellationToken,
    recovery: Option<Target>,
    who: Box<Session>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (mut conn, Outbound { frames: mut outbound }) = hub.connect(config.outbound_queue);
    conn.set_member(who.identity.member());
    // Token expiry or revocation; anonymous sessions have no timer at all.
    let ended = who.auth.session_end(&who.identity);
    let auth = who.auth.clone();
    let writer_done = CancellationToken::new();
    // The reader's reason to close, when it has one (abuse: 1008).
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<WsMessage>();

    let done = writer_done.clone();
    let ping_interval = config.ping_interval;
    let mut outside = super::outside(shutdown, config.reconnect_spread, ended);
    let writer_task = async move {
        let mut ping = tokio::time::interval_at(Instant::now() + ping_interval, ping_interval);
        let farewell = loop {
            tokio::select! {
                // In this order: the rare ends first (cheap to poll, and
                // never starved by a busy queue), then deliveries, the
                // keepalive last (traffic keeps the connection alive too).
                biased;
                Ok(frame) = &mut close_rx => break Some(frame),
                why = &mut outside => match why {
                    None => break Some(close(CloseCode::Away, "olive is restarting")),
                    Some(why) => {
                        Stats::add(&auth.stats.sessions_expired);
                        break Some(close(CloseCode::from(CLOSE_TOKEN_EXPIRED), why.reason()));
                    }
                },
                frame = outbound.recv() => {
                    let frame = match frame {
                        Ok(frame) => frame,
                        Err(End::Kicked(Kick::SlowConsumer)) => break Some(close(CloseCode::Again, "slow consumer")),
                        // The reader ended; it may have left a reason to close
                        // (1008) just before dropping the queue's last sender.
                        Err(End::Closed) => break close_rx.try_recv().ok(),
                    };
                    if sink.feed(WsMessage::Text(frame.text.clone())).await.is_err() { break None }
                    let mut batch = 1;
                    while batch < WRITE_BATCH {
                        let Some(frame) = outbound.try_recv() else { break };
                        if sink.feed(WsMessage::Text(frame.text.clone())).await.is_err() { break }
                        batch += 1;
                    }
                    if sink.flush().await.is_err() { break None }
                }
                _ = ping.tick() => {
                    if sink.send(WsMessage::Ping(Bytes::new())).await.is_err() { break None }
                }
            }
        };
        if let Some(frame) = farewell {
            let _ = sink.send(frame).await;
        }
        let _ = sink.close().await;
        done.cancel();
    };
    let writer = tokio::spawn(writer_task);

    let mut invalid = 0;
    let frames = who.limits.frames();
    let idle = config.idle_timeout;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(idle, stream.next()) => frame,
            _ = writer_done.cancelled() => break,
        };
        let text = match frame {
            Err(_) => break, // idle timeout: nothing, not even a pong
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(WsMessage::Text(text)))) => Some(text),
            Ok(Some(Ok(WsMessage::Binary(_)))) => None,
            Ok(Some(Ok(WsMessage::Close(_)))) => break,
            Ok(Some(Ok(_))) => continue, // ping, pong: tungstenite answers pings itself
        };
        let valid = match text {
            _ if frames.as_ref().is_some_and(|f| f.check().is_err()) => {
                who.metrics.rate_limited("frames_per_connection");
                conn.send(protocol::error(
                    None,
                    ErrorCode::RateLimited,
                    "too many frames per second; frame ignored",
                ));
                false
            }
            None => {
                conn.send(protocol::error(
                    None,
                    ErrorCode::Invalid,
                    "binary frames are not part of the protocol",
                ));
                false
            }
            Some(text) if text.len() > config.max_frame_bytes => {
                let message = format!("frame larger than {} bytes", config.max_frame_bytes);
                conn.send(protocol::error(None, ErrorCode::TooLarge, &message));
                false
            }
            // Boxed: most sessions are idle, and the frame handler's state
            // (a subscribe may wait for the broker or the upstream) would
            // otherwise sit in every session's task.
            Some(text) => {
                Box::pin(handle(&hub, &mut conn, &config, &text, recovery.as_ref(), &who)).await.is_ok()
            }
        };
        if !valid {
            invalid += 1;
        }
        if invalid > config.max_invalid_frames {
            tracing::debug!(conn = conn.id(), "closing a connection that keeps sending invalid frames");
            let _ = close_tx.send(close(CloseCode::Policy, "too many invalid frames"));
            break;
        }
    }
    drop(conn);
    let _ = writer.await;
}

/// Acts on one text frame. `Err` when the frame was invalid.
///
/// A subscribe with `since` may wait for the upstream (tier 2 recovery);
/// the reader reads nothing else meanwhile, which keeps one connection's
/// subscribes in order and bounds it to one recovery at a time.
async fn handle(
    hub: &Arc<Hub>,
    conn: &mut Connection,
    config: &Live,
    text: &str,
    recovery: Option<&Target>,
    who: &Session,
) -> Result<(), ()> {
    let frame = match ClientFrame::parse(text) {
        Ok(frame) => frame,
        Err(e) => {
            conn.send(protocol::error(e.reference.as_deref(), e.code, &e.message));
            return Err(());
        }
    };
    let grants = &who.identity.grants;
    let denied = match &frame {
        ClientFrame::Subscribe { key, .. } => {
            (!grants.may_subscribe(key)).then(|| (None, format!("not allowed to subscribe to {key}")))
        }
        ClientFrame::Publish { key, reference, .. } => (!grants.may_publish(key))
            .then(|| (reference.as_deref(), format!("not allowed to publish on {key}"))),
        ClientFrame::Presence { key } => {
            (!grants.may_see_presence(key)).then(|| (None, format!("not allowed to see presence on {key}")))
        }
        ClientFrame::Unsubscribe { .. } | ClientFrame::Ping => None,
    };
    if let Some((reference, message)) = denied {
        Stats::add(&who.auth.stats.forbidden);
        conn.send(protocol::error(reference, ErrorCode::Forbidden, &message));
        return Err(());
    }
    match frame {
        ClientFrame::Subscribe { key, since } => match match since {
            Some(since) => recover::subscribe(conn, key, &since, config.max_subscriptions, recovery).await,
            None => match conn.subscribe(key.clone(), config.max_subscriptions) {
                Ok(_) => {
                    // `subscribed` only once the broker routes the key to this
                    // node: a message published after the client hears it
                    // must reach it.
                    conn.settled().await;
                    conn.send(protocol::subscribed(key.as_str(), false));
                    Ok(())
                }
                Err(e) => Err(e),
            },
        } {
            Ok(()) => {}
            Err(SubscribeError::TooMany) => {
                who.metrics.rate_limited("subscriptions_per_connection");
                let message = format!("at most {} subscriptions per connection", config.max_subscriptions);
                conn.send(protocol::error(None, ErrorCode::TooLarge, &message));
                return Err(());
            }
        },
        ClientFrame::Unsubscribe { key } => {
            conn.unsubscribe(&key);
            conn.send(protocol::unsubscribed(key.as_str()));
        }
        ClientFrame::Publish { key, data, reference } => {
            if let Err(message) = who.publish_allowed() {
                conn.send(protocol::error(reference.as_deref(), ErrorCode::RateLimited, &message));
                return Err(());
            }
            let id = MessageId::new().to_string();
            let message = Message {
                key,
                id: id.clone().into(),
                data: Bytes::from(data.get().to_owned()),
                from: who.identity.from(),
            };
            let (queue, hub) = (conn.queue.clone(), hub.clone());
            let publish = hub.broker().publish(message);
            tokio::spawn(async move {
                let reply = match publish.await {
                    Ok(()) => protocol::ack(reference.as_deref(), &id),
                    Err(e) => protocol::error(reference.as_deref(), ErrorCode::Unavailable, &e.to_string()),
                };
                let Ok(text) = Utf8Bytes::try_from(reply) else { return };
                // A client that leaves its acks unread is a slow consumer
                // like any other.
                if queue.try_send(Frame::own(text)) == Err(Refused::Full) {
                    queue.kick(Kick::SlowConsumer);
                    hub.stats.slow_consumers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
        ClientFrame::Presence { key } => {
            if conn.watch_presence(&key).is_err() {
                let message = "presence is for keys the connection is subscribed to (exact key)";
                conn.send(protocol::error(None, ErrorCode::Invalid, message));
                return Err(());
            }
        }
        ClientFrame::Ping => {
            conn.send(protocol::pong());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::MemoryBroker;
    use std::time::Duration;

    /// Every idle websocket keeps its session's future in memory, so its
    /// size is RSS per connection (the 8 KiB budget of the fan-out
    /// benchmark). It was 1,792 bytes while the frame handler's state sat
    /// inline; 848 since it is boxed and the config and identity are
    /// shared or boxed.
    #[tokio::test]
    async fn an_idle_session_stays_small() {
        let (io, _peer) = tokio::io::duplex(64);
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let history = crate::live::history::Limits {
            size: 1,
            ttl: Duration::ZERO,
            max_keys: 1,
            linger: Duration::ZERO,
        };
        let presence = crate::live::presence::Limits {
            heartbeat: Duration::from_secs(10),
            ttl: Duration::from_secs(30),
            max_members: 100,
            count_interval: Duration::from_secs(1),
        };
        let (hub, _) = Hub::new(Arc::new(MemoryBroker::new(tx)), 1, history, presence);
        let auth = Arc::new(Auth::new(&crate::config::Auth::default()));
        let limits = Arc::new(RateLimits::new(&crate::config::RateLimits::default()));
        let metrics = Arc::new(Metrics::new());
        let who = Box::new(Session {
            identity: Identity::anonymous(Arc::default()),
            auth,
            client: Client::Ip(0),
            limits,
            metrics,
            share: None,
        });
        let session = session(ws, hub, Arc::new(Live::default()), CancellationToken::new(), None, who);
        let size = std::mem::size_of_val(&session);
        assert!(size <= 1024, "the session future grew to {size} bytes; box what idle sessions never run");
    }
}
