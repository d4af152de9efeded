//! The embedded in-process broker, for a site that runs on one machine.
//!
//! A publish is delivered straight to this node's hub, in publish order,
//! through the same channel an AMQP broker would use. Bindings need no
//! bookkeeping: every message goes to the hub, which drops those no local
//! client wants.

use futures_util::future::BoxFuture;
use tokio::sync::watch;

use super::{Broker, BrokerError, Deliveries, Message};
use crate::live::key::Pattern;

pub struct MemoryBroker {
    deliveries: Deliveries,
    ready: watch::Sender<bool>,
}

impl MemoryBroker {
    pub fn new(deliveries: Deliveries) -> MemoryBroker {
        MemoryBroker { deliveries, ready: watch::Sender::new(true) }
    }
}

impl Broker for MemoryBroker {
    fn publish(&self, message: Message) -> BoxFuture<'static, Result<(), BrokerError>> {
        let sent =
            self.deliveries.send(message).map_err(|_| BrokerError::Unavailable("the hub has stopped".into()));
        Box::pin(std::future::ready(sent))
    }

    fn bind(&self, _: &Pattern) {}

    fn unbind(&self, _: &Pattern) {}

    fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::key::Key;

    #[tokio::test]
    async fn publishes_arrive_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let broker = MemoryBroker::new(tx);
        for i in 0..3 {
            let message = Message {
                key: Key::parse("olive.a.b.1").unwrap(),
                id: i.to_string().into(),
                data: "1".into(),
                from: None,
            };
            broker.publish(message).await.unwrap();
        }
        for i in 0..3 {
            assert_eq!(&*rx.recv().await.unwrap().id, i.to_string());
        }
        assert!(*broker.ready().borrow());
    }
}
