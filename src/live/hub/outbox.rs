//! A connection's outbound queue: bounded, many senders (the fan-out, the
//! connection's own frames), one receiver (its writer), and the hub's
//! notice that the client is too slow to keep.
//!
//! Why not `tokio::sync::mpsc`: every idle connection owns one, and an
//! mpsc channel costs about 800 bytes before its first message (a
//! cache-padded channel of ~500 bytes plus a first block of 32 slots
//! allocated with it), a tenth of the budget of an idle websocket. This
//! queue is a `VecDeque` under a plain mutex (never held across an
//! `.await`, uncontended: a connection's frames are pushed from its own
//! worker) and an `AtomicWaker`, about 100 bytes, growing only while
//! frames wait and giving the memory back once a burst has drained.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;

use futures_util::task::AtomicWaker;

use super::{Kick, Outgoing};

/// Slots a drained queue may keep; a larger buffer (left by a burst) is
/// freed when the queue empties.
const KEEP_SLOTS: usize = 32;

struct Shared {
    state: Mutex<State>,
    waker: AtomicWaker,
    capacity: usize,
}

struct State {
    frames: VecDeque<Outgoing>,
    senders: usize,
    receiving: bool,
    kicked: Option<Kick>,
}

/// Why nothing more will come out of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Every sender is gone: the connection is closing.
    Closed,
    /// The hub told the connection to close.
    Kicked(Kick),
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The queue holds `capacity` frames: the client is not reading.
    Full,
    /// The writer is gone or the connection was kicked.
    Closed,
}

pub struct Sender {
    shared: Arc<Shared>,
}

pub struct Receiver {
    shared: Arc<Shared>,
}

/// A queue of at most `capacity` frames (at least one).
pub fn channel(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { frames: VecDeque::new(), senders: 1, receiving: true, kicked: None }),
        waker: AtomicWaker::new(),
        capacity: capacity.max(1),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Sender {
    pub fn try_send(&self, frame: Outgoing) -> Result<(), Refused> {
        {
            let mut state = self.shared.lock();
            if !state.receiving || state.kicked.is_some() {
                return Err(Refused::Closed);
            }
            if state.frames.len() >= self.shared.capacity {
                return Err(Refused::Full);
            }
            state.frames.push_back(frame);
        }
        self.shared.waker.wake();
        Ok(())
    }

    /// Frames the queue can still take.
    pub fn room(&self) -> usize {
        self.shared.capacity.saturating_sub(self.shared.lock().frames.len())
    }

    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Tells the receiver to stop at once; queued frames are dropped.
    pub fn kick(&self, why: Kick) {
        {
            let mut state = self.shared.lock();
            state.kicked.get_or_insert(why);
            state.frames.clear();
        }
        self.shared.waker.wake();
    }
}

impl Clone for Sender {
    fn clone(&self) -> Sender {
        self.shared.lock().senders += 1;
        Sender { shared: self.shared.clone() }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let last = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            state.senders == 0
        };
        if last {
            self.shared.waker.wake();
        }
    }
}

impl Receiver {
    /// The next frame; a kick comes before any frame still queued.
    pub async fn recv(&mut self) -> Result<Outgoing, End> {
        poll_fn(|cx| {
            if let Some(next) = self.take() {
                return Poll::Ready(next);
            }
            self.shared.waker.register(cx.waker());
            // A frame pushed between `take` and `register` woke nobody.
            self.take().map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// The next frame if one is queued (not the end: that is for `recv`).
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.take()?.ok()
    }

    fn take(&mut self) -> Option<Result<Outgoing, End>> {
        let mut state = self.shared.lock();
        if let Some(why) = state.kicked {
            return Some(Err(End::Kicked(why)));
        }
        if let Some(frame) = state.frames.pop_front() {
            if state.frames.is_empty() && state.frames.capacity() > KEEP_SLOTS {
                state.frames = VecDeque::new();
            }
            return Some(Ok(frame));
        }
        (state.senders == 0).then_some(Err(End::Closed))
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.receiving = false;
        state.frames.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::hub::Frame;

    fn frame(text: &'static str) -> Outgoing {
        Frame::own(text.into())
    }

    #[tokio::test]
    async fn frames_come_out_in_order_up_to_the_capacity() {
        let (tx, mut rx) = channel(2);
        assert_eq!(tx.try_send(frame("a")), Ok(()));
        assert_eq!(tx.try_send(frame("b")), Ok(()));
        assert_eq!(tx.try_send(frame("c")), Err(Refused::Full));
        assert_eq!(tx.room(), 0);
        assert_eq!(rx.recv().await.unwrap().text.as_str(), "a");
        assert_eq!(rx.try_recv().unwrap().text.as_str(), "b");
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.room(), 2);
    }

    #[tokio::test]
    async fn recv_waits_for_a_frame_and_ends_with_the_last_sender() {
        let (tx, mut rx) = channel(4);
        let other = tx.clone();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.unwrap().text.as_str().to_owned();
            (first, rx.recv().await.err())
        });
        tokio::task::yield_now().await;
        tx.try_send(frame("x")).unwrap();
        drop(tx);
        drop(other);
        assert_eq!(waiting.await.unwrap(), ("x".to_owned(), Some(End::Closed)));
    }

    #[tokio::test]
    async fn a_kick_comes_first_and_closes_the_queue() {
        let (tx, mut rx) = channel(4);
        tx.try_send(frame("queued")).unwrap();
        tx.kick(Kick::SlowConsumer);
        assert_eq!(tx.try_send(frame("late")), Err(Refused::Closed));
        assert_eq!(rx.recv().await.err(), Some(End::Kicked(Kick::SlowConsumer)));
    }

    #[test]
    fn a_gone_receiver_refuses_frames() {
        let (tx, rx) = channel(4);
        drop(rx);
        assert_eq!(tx.try_send(frame("x")), Err(Refused::Closed));
    }

    #[test]
    fn a_drained_burst_gives_its_memory_back() {
        let (tx, mut rx) = channel(1000);
        for _ in 0..500 {
            tx.try_send(frame("x")).unwrap();
        }
        while rx.try_recv().is_some() {}
        assert!(tx.shared.lock().frames.capacity() <= KEEP_SLOTS);
    }
}
