//! Low-priority threads for work no client is waiting for: mirror (shadow) copies, and model
//! loads (create, scale-up, replace) and unloads.
//!
//! On a small machine a shadow that is busy all the time competes with the live path for the
//! same cores, and the scheduler's time slices (milliseconds) then show up directly in live
//! p99. So shadow runs execute on threads of their own scheduled with Linux's `SCHED_IDLE`
//! policy (falling back to nice 19): they use idle CPU only, and live work always preempts
//! them. A shadow that cannot keep up fills its admission cap and its copies are dropped and
//! counted, which is the behaviour the mirror contract asks for.
//!
//! Handing a job over must cost the live thread next to nothing: the queue is a lock-free
//! bounded array, and the shadow threads poll it (sleeping 2 ms when it is empty) instead
//! of being woken, so a push is a few atomic operations and never a system call.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

type Job = Box<dyn FnOnce() + Send>;

/// Jobs waiting for a shadow thread, across all deployments.
const QUEUE_CAPACITY: usize = 4096;
/// How long an idle shadow thread sleeps before looking at the queue again.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// The process-wide queue, whose threads start on first use.
static QUEUE: OnceLock<Arc<ArrayQueue<Job>>> = OnceLock::new();

/// Queues `job` for a low-priority thread; gives it back when the queue is full.
pub fn spawn(job: impl FnOnce() + Send + 'static) -> Result<(), Job> {
    QUEUE.get_or_init(start).push(Box::new(job))
}

fn start() -> Arc<ArrayQueue<Job>> {
    let queue = Arc::new(ArrayQueue::<Job>::new(QUEUE_CAPACITY));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    for i in 0..threads {
        let queue = Arc::clone(&queue);
        let _ = std::thread::Builder::new().name(format!("switchyard-shadow-{i}")).spawn(move || {
            lower_priority();
            loop {
                match queue.pop() {
                    Some(job) => job(),
                    None => std::thread::sleep(IDLE_POLL),
                }
            }
        });
    }
    queue
}

/// The CPU the shadow threads may use together, as a token bucket: `rate` ns of run time per
/// second of wall time, `burst` ns at most saved up. Measured on the 2-core machine, idle-class
/// threads that run whenever a core is idle still cost the live path a context switch per
/// wake-up; a budget bounds that cost, and copies beyond it are dropped and counted.
pub struct CpuBudget {
    state: std::sync::Mutex<(std::time::Instant, f64)>,
    rate_per_ns: f64,
    burst_ns: f64,
}

impl CpuBudget {
    /// A budget of `percent` of one core (0 = no limit).
    pub fn new(percent: f64) -> Self {
        let rate = if percent <= 0.0 { f64::INFINITY } else { percent / 100.0 };
        Self { state: std::sync::Mutex::new((std::time::Instant::now(), 0.0)), rate_per_ns: rate, burst_ns: 20e6 }
    }

    /// Whether there is budget left now (refilling first).
    pub fn available(&self) -> bool {
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
    pub fn charge(&self, spent: Duration) {
        if !self.rate_per_ns.is_infinite() {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.1 -= spent.as_nanos() as f64;
        }
    }
}

/// The shadow threads' budget (`serve --mirror-cpu-percent`, default 5% of one core).
static BUDGET: OnceLock<CpuBudget> = OnceLock::new();

/// Sets the shadow CPU budget (once, at start; later calls are ignored).
pub fn set_shadow_budget(percent: f64) {
    let _ = BUDGET.set(CpuBudget::new(percent));
}

/// The shadow CPU budget.
pub fn shadow_budget() -> &'static CpuBudget {
    BUDGET.get_or_init(|| CpuBudget::new(DEFAULT_SHADOW_CPU_PERCENT))
}

/// Default shadow CPU budget, percent of one core.
pub const DEFAULT_SHADOW_CPU_PERCENT: f64 = 5.0;

/// Nice value of model-load threads: below live work, so a create or scale-up does not show
/// in live latency, but not idle-only, so it still finishes on a saturated machine.
const LOADER_NICE: i32 = 19;

/// Runs `job` on a new thread at nice 19 (loads are rare and may take seconds: a thread each).
pub fn spawn_loader(job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name("switchyard-load".into()).spawn(move || {
        set_nice(LOADER_NICE);
        job();
    })?;
    Ok(())
}

/// Nice value of the control plane's threads (admin API worker, background runtime): control
/// calls and bookkeeping yield to scoring.
pub const CONTROL_NICE: i32 = 10;

/// Sets the calling thread's nice value (Linux; elsewhere a no-op).
pub fn set_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: changes only the calling thread's nice value (by its tid); failure is ignored.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Puts the calling thread in `SCHED_IDLE`, or at nice 19 where that is refused.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls only change the scheduling of the calling thread (pid 0 / its tid)
    // and take plain values; a failure is reported through the return value and ignored.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            set_nice(19);
        }
    }
}

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
}
