//! [`Quiet`]: a future polled only when it has something to say.
//!
//! A connection's writer waits in one `select!` for its next frames and
//! for a few rare things (a drain, the token running out). `select!` polls
//! every branch each time the task wakes, and the task wakes for every
//! delivery. Some of the rare branches are costly to poll even when
//! nothing happened: a `CancellationToken`'s `cancelled()` takes the lock
//! of a waiter list that every connection shares, and a broadcast
//! receiver (revocations) takes the channel's lock. At 200k deliveries a
//! second on two workers that is a contended lock per delivery.
//!
//! `Quiet` gives the inner future a waker of its own and polls it only
//! after that waker fired (and once at first, so that it can register).
//! Polling a `Quiet` that has not been woken is an atomic swap and an
//! `AtomicWaker` registration, both on the connection's own memory.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

pub struct Quiet<F> {
    future: F,
    signal: Arc<Signal>,
}

/// The inner future's waker: notes that it fired and wakes whoever polls
/// the `Quiet`.
struct Signal {
    woken: AtomicBool,
    outer: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.outer.wake();
    }
}

impl<F: Future + Unpin> Quiet<F> {
    pub fn new(future: F) -> Quiet<F> {
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), outer: AtomicWaker::new() });
        Quiet { future, signal }
    }
}

impl<F: Future + Unpin> Future for Quiet<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the check: a wake between the two is seen by
        // the check or wakes this task again.
        self.signal.outer.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(self.signal.clone());
        Pin::new(&mut self.future).poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts its polls; ready once `ready` is set, which wakes it.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<tokio::sync::Notify>,
    }

    #[tokio::test]
    async fn the_inner_future_is_polled_only_when_it_was_woken() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(tokio::sync::Notify::new());
        let probe = Probe { polls: polls.clone(), ready: ready.clone() };
        let mut quiet = Box::pin(Quiet::new(Box::pin(async move {
            probe.polls.fetch_add(1, Ordering::Relaxed);
            // Counted again on every poll that follows a wake.
            let notified = probe.ready.notified();
            tokio::pin!(notified);
            std::future::poll_fn(|cx| {
                probe.polls.fetch_add(1, Ordering::Relaxed);
                notified.as_mut().poll(cx)
            })
            .await;
            "done"
        })));
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(quiet.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2, "the first poll registers");
        for _ in 0..100 {
            assert!(quiet.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 2, "not woken, not polled");
        ready.notify_one();
        assert_eq!(quiet.as_mut().poll(&mut cx), Poll::Ready("done"));
        assert_eq!(polls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn a_wake_of_the_inner_future_wakes_the_task_that_polls() {
        let token = tokio_util::sync::CancellationToken::new();
        let quiet = Quiet::new(Box::pin(token.clone().cancelled_owned()));
        let waiting = tokio::spawn(quiet);
        tokio::task::yield_now().await;
        token.cancel();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await.unwrap().unwrap();
    }
}
