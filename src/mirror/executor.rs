//! The shadow executor: low-priority threads for mirror copies and their comparisons, within a
//! CPU budget.
//!
//! On a small machine a shadow that is busy all the time competes with the live path for the
//! same cores, and the scheduler's time slices (milliseconds) then show up directly in live
//! p99. So shadow runs execute on threads of their own, at nice 5 (below live work, which
//! wins every wake-up race and gets about three times their share of a contended core), and
//! within a CPU budget (`serve --mirror-cpu-percent`) charged in the CPU time these threads
//! use. The budget, not the priority, is what bounds the shadow's cost to live traffic.
//!
//! They used to run under `SCHED_IDLE`, on idle CPU only. That made the mirror share depend on
//! what else ran on the host: with any other process keeping the cores busy, a 10% mirror
//! copied 4 of ~300 wanted requests. A user who sets a percentage expects it while the shadow
//! has capacity, so the shadow now gets its budget at normal (slightly lowered) priority, and
//! copies it cannot take are dropped, counted by reason, and reported (see `mirror::report`).
//!
//! Handing a job over must cost the live thread next to nothing: the queue is a lock-free
//! bounded array, and the shadow threads poll it (sleeping 2 ms when it is empty) instead
//! of being woken, so a push is a few atomic operations and never a system call.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::sys::thread_cpu_time;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting for a shadow thread, across all deployments.
const QUEUE_CAPACITY: usize = 4096;
/// How long an idle shadow thread sleeps before looking at the queue again.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// The process-wide queue, whose threads start on first use.
static QUEUE: OnceLock<Arc<ArrayQueue<Job>>> = OnceLock::new();

/// Queues `job` for a low-priority thread; gives it back when the queue is full.
pub(crate) fn spawn(job: impl FnOnce() + Send + 'static) -> Result<(), Job> {
    QUEUE.get_or_init(start).push(Box::new(job))
}

fn start() -> Arc<ArrayQueue<Job>> {
    let queue = Arc::new(ArrayQueue::<Job>::new(QUEUE_CAPACITY));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    for i in 0..threads {
        let queue = Arc::clone(&queue);
        let _ = std::thread::Builder::new().name(format!("switchyard-shadow-{i}")).spawn(move || {
            crate::threads::set_nice(crate::threads::SHADOW_NICE);
            let budget = shadow_budget();
            loop {
                match queue.pop() {
                    Some(job) => {
                        // Every job is charged (copies, and the comparisons and logging they
                        // lead to): the budget bounds all CPU the shadow takes from live work.
                        let clock = ThreadClock::start();
                        job();
                        budget.charge(clock.spent());
                    }
                    None => std::thread::sleep(IDLE_POLL),
                }
            }
        });
    }
    queue
}

/// Measures the CPU time the calling thread spends (not wall time: on a busy host a preempted
/// run would otherwise be charged for time other processes used, and the budget would starve
/// the shadow exactly when it has the least CPU).
struct ThreadClock {
    cpu: Option<Duration>,
    wall: std::time::Instant,
}

impl ThreadClock {
    fn start() -> Self {
        Self { cpu: thread_cpu_time(), wall: std::time::Instant::now() }
    }

    /// CPU time since `start` (wall time where the thread's CPU clock is unavailable).
    fn spent(&self) -> Duration {
        match (self.cpu, thread_cpu_time()) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => self.wall.elapsed(),
        }
    }
}

/// The CPU the shadow threads may use together, as a token bucket: `rate` ns of CPU time per
/// second of wall time, `burst` ns at most saved up. Measured on the 2-core machine, shadow
/// threads that run whenever they have work cost the live path CPU and a context switch per
/// wake-up; a budget bounds that cost, and copies beyond it are dropped and counted.
pub(crate) struct CpuBudget {
    state: std::sync::Mutex<(std::time::Instant, f64)>,
    rate_per_ns: f64,
    burst_ns: f64,
}

impl CpuBudget {
    /// A budget of `percent` of one core (0 = no limit).
    pub(crate) fn new(percent: f64) -> Self {
        let rate = if percent <= 0.0 { f64::INFINITY } else { percent / 100.0 };
        Self { state: std::sync::Mutex::new((std::time::Instant::now(), 0.0)), rate_per_ns: rate, burst_ns: 20e6 }
    }

    /// Whether there is budget left now (refilling first).
    pub(crate) fn available(&self) -> bool {
        if self.rate_per_ns.is_infinite() {
            return true;
        }
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        let refill = now.duration_since(s.0).as_nanos() as f64 * self.rate_per_ns;
        *s = (now, (s.1 + refill).min(self.burst_ns));
        s.1 > 0.0
    }

    /// Charges a finished run.
    pub(crate) fn charge(&self, spent: Duration) {
        if !self.rate_per_ns.is_infinite() {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.1 -= spent.as_nanos() as f64;
        }
    }
}

/// The shadow threads' budget (`serve --mirror-cpu-percent`, default 5% of one core).
static BUDGET: OnceLock<CpuBudget> = OnceLock::new();

/// Sets the shadow CPU budget (once, at start; later calls are ignored).
pub(crate) fn set_shadow_budget(percent: f64) {
    let _ = BUDGET.set(CpuBudget::new(percent));
}

/// The shadow CPU budget.
pub(crate) fn shadow_budget() -> &'static CpuBudget {
    BUDGET.get_or_init(|| CpuBudget::new(DEFAULT_SHADOW_CPU_PERCENT))
}

/// Default shadow CPU budget, percent of one core.
pub(crate) const DEFAULT_SHADOW_CPU_PERCENT: f64 = 5.0;

#[cfg(test)]
mod tests {
    #[test]
    fn runs_jobs() {
        let (tx, rx) = std::sync::mpsc::channel();
        for i in 0..10 {
            let tx = tx.clone();
            assert!(super::spawn(move || tx.send(i).unwrap()).is_ok());
        }
        let mut got: Vec<i32> = (0..10).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn the_thread_clock_counts_cpu_not_sleep() {
        let clock = super::ThreadClock::start();
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(clock.spent() < std::time::Duration::from_millis(15), "sleeping is not CPU: {:?}", clock.spent());
        let clock = super::ThreadClock::start();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed() < std::time::Duration::from_millis(20) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(clock.spent() > std::time::Duration::ZERO);
    }

    #[test]
    fn the_budget_refills_at_its_rate() {
        let b = super::CpuBudget::new(50.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(b.available());
        b.charge(std::time::Duration::from_millis(100));
        assert!(!b.available(), "100 ms charged against a 20 ms burst");
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert!(b.available(), "50% of a core refills 100 ms in 200 ms");
    }
}
