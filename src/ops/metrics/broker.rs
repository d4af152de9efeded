//! Publish outcomes, counted where every publish path meets: the broker.
//!
//! [`Metered`] wraps the configured broker and counts each publish once it
//! resolves, confirmed (by key class) or failed. The websocket, the HTTP
//! endpoints and anything added later all publish through `Hub::broker()`,
//! so none of them has to remember to count.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::Metrics;
use crate::broker::{Announcements, Broker, BrokerError, Message};
use crate::live::key::{Key, Pattern};

/// A broker that counts publishes. It forwards every [`Broker`] method:
/// a method added to the trait must be forwarded here too, or the wrapped
/// broker's own version would never run.
pub struct Metered {
    inner: Arc<dyn Broker>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn wrap(inner: Arc<dyn Broker>, metrics: Arc<Metrics>) -> Arc<dyn Broker> {
        Arc::new(Metered { inner, metrics })
    }
}

impl Broker for Metered {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<(), BrokerError>> {
        let key = message.key.clone();
        let metrics = self.metrics.clone();
        self.inner
            .publish(message)
            .map(move |result| {
                match &result {
                    Ok(()) => metrics.published.add(&key, 1),
                    Err(_) => {
                        metrics.publish_failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                result
            })
            .boxed()
    }

    fn bind(&self, pattern: &Pattern) {
        self.inner.bind(pattern);
    }

    fn unbind(&self, pattern: &Pattern) {
        self.inner.unbind(pattern);
    }

    fn ready(&self) -> watch::Receiver<bool> {
        self.inner.ready()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        self.inner.close()
    }

    fn announce(&self, key: &Key, body: Bytes) {
        self.inner.announce(key, body);
    }

    fn bind_presence(&self, key: &Key) {
        self.inner.bind_presence(key);
    }

    fn unbind_presence(&self, key: &Key) {
        self.inner.unbind_presence(key);
    }

    fn take_announcements(&self) -> Option<Announcements> {
        self.inner.take_announcements()
    }

    fn settled(&self) -> BoxFuture<'static, ()> {
        self.inner.settled()
    }

    fn reconnects(&self) -> u64 {
        self.inner.reconnects()
    }
}
