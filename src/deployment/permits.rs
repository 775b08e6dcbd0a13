//! The pool's count of idle instances: a semaphore that hands a released permit to a waiter
//! on the releasing thread first.
//!
//! Why not `tokio::sync::Semaphore`: it serves waiters strictly in arrival order, so on a
//! server with one actix worker per core the instance one thread gives back goes, about half
//! the time, to a request waiting on another thread, and each such hand-off is a cross-thread
//! wake-up (an eventfd write, the other thread leaving `epoll_wait`). For a `score.py`
//! deployment at c=32 those wake-ups were most of what `switchyard serve` spent above a
//! single-threaded server (`--workers 1`: 41–47 µs of CPU per request against 53–61; issue
//! 23's A/B in BENCHMARKS.md). Handed to a waiter on the same thread, the wake-up is a push
//! on that thread's own run queue. No maintained crate offers this hand-off policy, hence
//! this small module.
//!
//! Fairness is bounded, not given up: a waiter on the releasing thread may go before older
//! waiters on other threads only while the oldest of them has waited less than [`SKEW`]
//! longer than it. A thread that holds no instance therefore gets one within `SKEW` of
//! its turn, and waiters of one thread are always served in their arrival order.

use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// How much longer than the releasing thread's oldest waiter the oldest waiter of another
/// thread may wait before it is served first. A few times the time a `score.py` run takes
/// in the worker: short enough that no thread's requests fall behind in a way a client
/// sees, long enough that under steady load each thread keeps the instances it returns.
pub(super) const SKEW: Duration = Duration::from_millis(1);

/// How far down the queue a release looks for a waiter of its own thread (bounds the cost of
/// a release under a very deep queue; beyond it, arrival order).
const LOOK_AHEAD: usize = 64;

/// The calling thread's number (assigned at its first use, never reused).
fn thread_token() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    thread_local!(static TOKEN: Cell<u32> = const { Cell::new(0) });
    TOKEN.with(|t| {
        if t.get() == 0 {
            t.set(NEXT.fetch_add(1, Ordering::Relaxed));
        }
        t.get()
    })
}

/// A closed semaphore: no permit will come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Closed;

/// Why `try_acquire` found no permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TryAcquireError {
    NoPermits,
    Closed,
}

pub(super) struct Permits {
    state: Mutex<State>,
    /// [`SKEW`], but for tests.
    skew: Duration,
}

#[derive(Default)]
struct State {
    permits: usize,
    closed: bool,
    waiters: VecDeque<Waiter>,
    /// Waiters handed a permit that have not taken it yet (their future is woken).
    granted: Vec<u64>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    thread: u32,
    since: Instant,
    waker: Waker,
}

/// One permit, released when dropped unless [`forget`](Permit::forget) is called.
#[must_use]
pub(super) struct Permit<'a> {
    permits: &'a Permits,
}

impl Permit<'_> {
    /// Keeps the permit taken for good (the caller stands for it otherwise).
    #[allow(clippy::mem_forget, reason = "not running Drop is the point: it would give the permit back")]
    pub(super) fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.permits.add_permits(1);
    }
}

impl Permits {
    pub(super) fn new(permits: usize) -> Self {
        Self::with_skew(permits, SKEW)
    }

    fn with_skew(permits: usize, skew: Duration) -> Self {
        Self { state: Mutex::new(State { permits, ..State::default() }), skew }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit now, if one is free and nobody waits for one.
    pub(super) fn try_acquire(&self) -> Result<Permit<'_>, TryAcquireError> {
        let mut s = self.state();
        if s.closed {
            return Err(TryAcquireError::Closed);
        }
        if s.permits == 0 {
            return Err(TryAcquireError::NoPermits);
        }
        s.permits -= 1;
        Ok(Permit { permits: self })
    }

    /// Waits for a permit (cancel-safe: a permit handed to a future dropped before it took
    /// it goes to the next waiter).
    pub(super) fn acquire(&self) -> Acquire<'_> {
        Acquire { permits: self, id: None }
    }

    /// Adds `n` permits, each handed to a waiter if one waits ([`choose`] says which).
    pub(super) fn add_permits(&self, n: usize) {
        let mut wake = Vec::new();
        {
            let mut s = self.state();
            let me = thread_token();
            let mut now = None;
            for _ in 0..n {
                if s.waiters.is_empty() {
                    s.permits += 1;
                    continue;
                }
                let now = *now.get_or_insert_with(Instant::now);
                let at = choose(&s.waiters, me, now, self.skew);
                let Some(waiter) = s.waiters.remove(at) else { continue };
                s.granted.push(waiter.id);
                wake.push(waiter.waker);
            }
        }
        for waker in wake {
            waker.wake();
        }
    }

    /// No permit will be given any more: waiters and later acquires get `Closed`.
    pub(super) fn close(&self) {
        let waiters = {
            let mut s = self.state();
            s.closed = true;
            std::mem::take(&mut s.waiters)
        };
        for w in waiters {
            w.waker.wake();
        }
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state().closed
    }
}

/// Which waiter a permit released on thread `me` goes to: the oldest waiter of `me` among
/// the first [`LOOK_AHEAD`], unless the oldest waiter of all has waited `skew` longer
/// than it (or `me` has none): then the oldest of all.
fn choose(waiters: &VecDeque<Waiter>, me: u32, now: Instant, skew: Duration) -> usize {
    let Some(head) = waiters.front() else { return 0 };
    if head.thread == me {
        return 0;
    }
    let Some(mine) = waiters.iter().take(LOOK_AHEAD).position(|w| w.thread == me) else {
        return 0;
    };
    let head_wait = now.saturating_duration_since(head.since);
    let my_wait = now.saturating_duration_since(waiters[mine].since);
    if head_wait.saturating_sub(my_wait) >= skew {
        0
    } else {
        mine
    }
}

/// The future of [`Permits::acquire`].
pub(super) struct Acquire<'a> {
    permits: &'a Permits,
    /// Set once it waits in the queue.
    id: Option<u64>,
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<Permit<'a>, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let permits = self.permits;
        let mut s = permits.state();
        if let Some(id) = self.id {
            if let Some(at) = s.granted.iter().position(|g| *g == id) {
                s.granted.swap_remove(at);
                self.id = None;
                return Poll::Ready(Ok(Permit { permits }));
            }
            if s.closed {
                self.id = None;
                return Poll::Ready(Err(Closed));
            }
            if let Some(w) = s.waiters.iter_mut().find(|w| w.id == id) {
                if !w.waker.will_wake(cx.waker()) {
                    w.waker = cx.waker().clone();
                }
            }
            return Poll::Pending;
        }
        if s.closed {
            return Poll::Ready(Err(Closed));
        }
        // Nobody waits ahead of a newcomer that finds a permit free: permits are only left
        // free while the queue is empty.
        if s.permits > 0 {
            s.permits -= 1;
            return Poll::Ready(Ok(Permit { permits }));
        }
        s.next_id += 1;
        let id = s.next_id;
        s.waiters.push_back(Waiter { id, thread: thread_token(), since: Instant::now(), waker: cx.waker().clone() });
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let mut s = self.permits.state();
        if let Some(at) = s.granted.iter().position(|g| *g == id) {
            // Handed a permit it will never take: it goes to the next waiter.
            s.granted.swap_remove(at);
            drop(s);
            self.permits.add_permits(1);
            return;
        }
        if let Some(at) = s.waiters.iter().position(|w| w.id == id) {
            s.waiters.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn waiter(id: u64, thread: u32, since: Instant) -> Waiter {
        Waiter { id, thread, since, waker: Waker::noop().clone() }
    }

    #[test]
    fn a_release_goes_to_the_oldest_waiter_of_its_own_thread_within_the_skew() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(10);
        let q: VecDeque<_> =
            [waiter(1, 7, t0), waiter(2, 8, t0 + SKEW / 2), waiter(3, 8, t0 + SKEW / 4 * 3), waiter(4, 7, t0 + SKEW)]
                .into();
        // Thread 8's oldest waited SKEW/2 less than the head: it goes first.
        assert_eq!(choose(&q, 8, now, SKEW), 1);
        // The head is thread 7's own.
        assert_eq!(choose(&q, 7, now, SKEW), 0);
        // A thread with no waiter serves arrival order.
        assert_eq!(choose(&q, 9, now, SKEW), 0);
    }

    #[test]
    fn the_oldest_waiter_of_another_thread_goes_first_once_it_waited_the_skew_longer() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_millis(10);
        let q: VecDeque<_> = [waiter(1, 7, t0), waiter(2, 8, t0 + SKEW)].into();
        assert_eq!(choose(&q, 8, now, SKEW), 0, "the head waited exactly SKEW longer");
        let q: VecDeque<_> = [waiter(1, 7, t0), waiter(2, 8, t0 + SKEW - Duration::from_micros(1))].into();
        assert_eq!(choose(&q, 8, now, SKEW), 1);
    }

    #[test]
    fn a_waiter_beyond_the_look_ahead_is_not_searched_for() {
        let t0 = Instant::now();
        let mut q: VecDeque<_> = (0..LOOK_AHEAD as u64).map(|i| waiter(i, 7, t0)).collect();
        q.push_back(waiter(99, 8, t0));
        assert_eq!(choose(&q, 8, t0, SKEW), 0);
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
    }

    #[test]
    fn permits_are_counted_taken_forgotten_given_back_and_closed() {
        let p = Permits::new(2);
        let a = p.try_acquire().unwrap();
        let b = block_on(p.acquire()).unwrap();
        assert_eq!(p.try_acquire().err(), Some(TryAcquireError::NoPermits));
        a.forget();
        drop(b);
        let c = p.try_acquire().unwrap();
        assert_eq!(p.try_acquire().err(), Some(TryAcquireError::NoPermits), "the forgotten one stays taken");
        drop(c);
        p.close();
        assert!(p.is_closed());
        assert_eq!(p.try_acquire().err(), Some(TryAcquireError::Closed));
        assert!(block_on(p.acquire()).is_err());
    }

    #[test]
    fn waiters_of_one_thread_are_served_in_arrival_order_and_a_close_wakes_them_all() {
        block_on(async {
            let p = Arc::new(Permits::new(0));
            let order = Arc::new(Mutex::new(Vec::new()));
            let local = tokio::task::LocalSet::new();
            local
                .run_until(async {
                    let mut tasks = Vec::new();
                    for i in 0..4 {
                        let (p, order) = (Arc::clone(&p), Arc::clone(&order));
                        tasks.push(tokio::task::spawn_local(async move {
                            let got = p.acquire().await;
                            order.lock().unwrap().push(i);
                            got.map(Permit::forget).is_ok()
                        }));
                        tokio::task::yield_now().await; // each one queued before the next
                    }
                    p.add_permits(3);
                    p.close();
                    let served: Vec<bool> = futures_join(tasks).await;
                    assert_eq!(served, [true, true, true, false]);
                    assert_eq!(*order.lock().unwrap(), [0, 1, 2, 3]);
                })
                .await;
        });
    }

    async fn futures_join(tasks: Vec<tokio::task::JoinHandle<bool>>) -> Vec<bool> {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[test]
    fn a_permit_handed_to_a_waiter_that_is_dropped_goes_to_the_next() {
        block_on(async {
            let p = Permits::new(0);
            let mut first = Box::pin(p.acquire());
            let mut second = Box::pin(p.acquire());
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(first.as_mut().poll(&mut cx).is_pending());
            assert!(second.as_mut().poll(&mut cx).is_pending());
            p.add_permits(1); // granted to `first`
            drop(first);
            match second.as_mut().poll(&mut cx) {
                Poll::Ready(Ok(permit)) => permit.forget(),
                _ => panic!("the dropped waiter's permit did not pass on"),
            }
            assert_eq!(p.try_acquire().err(), Some(TryAcquireError::NoPermits));
            // A waiter dropped before any grant leaves nothing behind.
            let mut third = Box::pin(p.acquire());
            assert!(third.as_mut().poll(&mut cx).is_pending());
            drop(third);
            p.add_permits(1);
            assert!(p.try_acquire().is_ok());
        });
    }

    /// Thread A's waiter queues first, then thread B's; B releases one permit, then another.
    /// Returns which of the two got the first.
    fn two_threads_one_release(skew: Duration) -> &'static str {
        let p = Arc::new(Permits::with_skew(0, skew));
        let first = Arc::new(Mutex::new(None));
        let (a_queued_tx, a_queued_rx) = std::sync::mpsc::channel();
        let (pa, fa) = (Arc::clone(&p), Arc::clone(&first));
        let a = std::thread::spawn(move || {
            block_on(async {
                let mut acq = Box::pin(pa.acquire());
                let mut cx = Context::from_waker(Waker::noop());
                assert!(acq.as_mut().poll(&mut cx).is_pending());
                a_queued_tx.send(()).unwrap();
                let got = std::future::poll_fn(|cx| acq.as_mut().poll(cx)).await;
                fa.lock().unwrap().get_or_insert("A");
                got.map(Permit::forget).is_ok()
            })
        });
        a_queued_rx.recv().unwrap();
        let mut mine = Box::pin(p.acquire());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(mine.as_mut().poll(&mut cx).is_pending());
        p.add_permits(1);
        if let Poll::Ready(Ok(permit)) = mine.as_mut().poll(&mut cx) {
            first.lock().unwrap().get_or_insert("B");
            permit.forget();
            p.add_permits(1); // A's now, whatever thread releases it
        } else {
            assert!(a.join().unwrap());
            p.add_permits(1);
            assert!(matches!(mine.as_mut().poll(&mut cx), Poll::Ready(Ok(_))), "B is served next");
            let who = first.lock().unwrap().take().unwrap();
            return who;
        }
        assert!(a.join().unwrap(), "thread A's waiter was served");
        let who = first.lock().unwrap().take().unwrap();
        who
    }

    #[test]
    fn a_release_prefers_its_own_threads_waiter_and_the_skew_bounds_how_long_another_waits() {
        // With a skew no test outlives, the releasing thread's own (younger) waiter goes first.
        assert_eq!(two_threads_one_release(Duration::from_secs(3600)), "B");
        // With none, arrival order: A's.
        assert_eq!(two_threads_one_release(Duration::ZERO), "A");
    }
}
