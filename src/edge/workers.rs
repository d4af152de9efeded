//! Worker threads, one single-threaded tokio runtime each, like nginx's
//! worker processes.
//!
//! A proxied request touches four sockets and wakes several tasks (client
//! connection, upstream connection, the handler between them). On tokio's
//! work-stealing runtime those tasks land on different threads, and every
//! hand-off becomes a cross-thread wake-up: measured on two cores, two
//! stealing workers served no more than one (see docs/BENCHMARKS.md). Here
//! a connection lives its whole life on one worker, with that worker's own
//! upstream pools, so the hand-offs stay on one thread and workers scale
//! like independent processes.
//!
//! The accept loops hand each new connection to the least-loaded worker as
//! a `std` socket, which the worker registers with its own reactor.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the calling thread (0 outside workers).
/// Per-worker resources such as upstream pools are indexed by it.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// The number of workers for a configured count (0 means one per CPU).
pub fn count(configured: usize) -> usize {
    if configured > 0 { configured } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

pub struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

struct Worker {
    handle: Handle,
    /// Connections currently served by this worker.
    load: Arc<AtomicUsize>,
}

/// Decrements a worker's load when its connection ends.
pub struct LoadGuard(Arc<AtomicUsize>);

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `n` worker threads.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let stop = CancellationToken::new();
        let mut workers = Vec::with_capacity(n);
        for index in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let handle = runtime.handle().clone();
            let stop = stop.clone();
            std::thread::Builder::new().name(format!("olive-worker-{index}")).spawn(move || {
                CURRENT.with(|c| c.set(index));
                // Dropping the runtime at the end cancels whatever is left.
                runtime.block_on(async {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = keep_timer_awake() => {}
                    }
                });
            })?;
            workers.push(Worker { handle, load: Arc::new(AtomicUsize::new(0)) });
        }
        Ok(Workers { workers, stop })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Runs a long-lived task on worker `index` (not counted as load).
    pub fn spawn_on<Fut>(&self, index: usize, task: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.workers[index % self.workers.len()].handle.spawn(task);
    }

    /// Runs `make(guard)` on the least-loaded worker. The future is built on
    /// the worker's thread so that sockets it creates register there.
    pub fn spawn<F, Fut>(&self, make: F)
    where
        F: FnOnce(LoadGuard) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let worker =
            self.workers.iter().min_by_key(|w| w.load.load(Ordering::Relaxed)).expect("at least one worker");
        worker.load.fetch_add(1, Ordering::Relaxed);
        let guard = LoadGuard(worker.load.clone());
        worker.handle.spawn(async move { make(guard).await });
    }
}

/// How often a worker's timer wakes with nothing to do; shorter than
/// any timeout a request arms (the shortest default is 10 s).
const TIMER_KEEPALIVE: Duration = Duration::from_millis(500);

/// Keeps a near deadline in the worker's timer wheel, forever.
///
/// tokio's timer wakes its driver (an `eventfd` write, then an extra
/// `epoll_wait` return) whenever a timer is armed earlier than the driver's
/// next planned wake-up, even from the driver's own thread. With no other
/// timer pending, every request's header-read timeout (hyper re-arms one
/// per request) and upstream timeout did that: about one syscall pair per
/// request, found with `strace -c` and a breakpoint on the write. A
/// deadline never more than half a second away means a 10 s timeout is
/// never the earliest, at the cost of two wake-ups a second.
async fn keep_timer_awake() {
    let mut tick = tokio::time::interval(TIMER_KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
