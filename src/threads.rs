//! Thread priorities: who yields to whom when the cores are contended. Live scoring runs at
//! nice 0; everything nobody's request waits for runs below it, each at the level measured to
//! keep it off live p99 without starving it.
#![forbid(unsafe_code)]

/// Nice value of the control plane's threads (admin API workers, the background runtime):
/// control calls and bookkeeping yield to scoring.
pub(crate) const CONTROL_NICE: i32 = 10;

/// Nice value of the shadow (mirror) threads: below live work (nice 0), so a live thread
/// waking up preempts them and gets three times their share of a contended core; but not
/// idle-only, so the shadow still gets its CPU budget when other processes keep the cores busy.
pub(crate) const SHADOW_NICE: i32 = 5;

/// Nice value of the data collector's writer: below live work, so writing records yields the
/// core to requests (its records wait in a bounded queue, drained every 20 ms), as the shadow.
pub(crate) const COLLECTOR_NICE: i32 = 5;

/// Nice value of model-load threads: below live work, so a create or scale-up does not show
/// in live latency, but not idle-only, so it still finishes on a saturated machine.
const LOADER_NICE: i32 = 19;

/// Sets the calling thread's nice value.
pub(crate) use crate::sys::set_nice;

/// Runs `job` on a new thread at nice 19 (loads are rare and may take seconds: a thread each;
/// how many run at once is bounded by the pool's load slots).
pub(crate) fn spawn_loader(job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name("switchyard-load".into()).spawn(move || {
        set_nice(LOADER_NICE);
        job();
    })?;
    Ok(())
}

type LiveJob = Box<dyn FnOnce() + Send>;

/// The thread that starts hook worker processes (see [`at_live_priority`]).
static LIVE_SPAWNER: std::sync::OnceLock<std::sync::mpsc::Sender<LiveJob>> = std::sync::OnceLock::new();

/// Starts the live-priority spawner thread: call it from a thread at nice 0 (the main thread,
/// first thing in `serve`), because a thread inherits the nice value of the thread that
/// starts it.
pub(crate) fn start_live_spawner() {
    LIVE_SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<LiveJob>();
        let started = std::thread::Builder::new().name("switchyard-spawn".into()).spawn(move || {
            for job in rx {
                job();
            }
        });
        if let Err(e) = started {
            tracing::warn!("cannot start the thread that starts worker processes: {e}");
        }
        tx
    });
}

/// Runs `job` on the live-priority spawner thread (nice 0) and returns its result (`None` if
/// it panicked); on the calling thread when the spawner was not started (unit tests, other
/// subcommands).
///
/// Why: a process or thread inherits the nice value of the thread that starts it, and an
/// unprivileged process cannot lower a nice value again. Hook worker processes are started
/// by loads, on loader threads at nice 19; started there, a Python worker and its output
/// copiers served every live request at nice 19, below everything else on a busy machine
/// (measured: both sample workers at nice 19 under load). Started from here, they run at
/// live priority; their init() runs at it too (it is a process the kernel schedules like
/// any other).
pub(crate) fn at_live_priority<R: Send + 'static>(job: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let run = move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).ok();
    let Some(spawner) = LIVE_SPAWNER.get() else {
        return run();
    };
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let job = std::sync::Arc::new(std::sync::Mutex::new(Some(run)));
    let queued = std::sync::Arc::clone(&job);
    let sent = spawner.send(Box::new(move || {
        let job = queued.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(job) = job {
            let _ = tx.send(job());
        }
    }));
    if sent.is_ok() {
        if let Ok(result) = rx.recv() {
            return result;
        }
    }
    // The spawner thread is gone (it cannot be: jobs do not unwind): run here if it never ran.
    let job = job.lock().unwrap_or_else(|e| e.into_inner()).take();
    job.and_then(|job| job())
}
