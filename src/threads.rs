//! Thread priorities: who yields to whom when the cores are contended. Live scoring runs at
//! nice 0; everything nobody's request waits for runs below it, each at the level measured to
//! keep it off live p99 without starving it.
#![forbid(unsafe_code)]

/// Nice value of the control plane's threads (admin API workers, the background runtime):
/// control calls and bookkeeping yield to scoring.
pub const CONTROL_NICE: i32 = 10;

/// Nice value of the shadow (mirror) threads: below live work (nice 0), so a live thread
/// waking up preempts them and gets three times their share of a contended core; but not
/// idle-only, so the shadow still gets its CPU budget when other processes keep the cores busy.
pub const SHADOW_NICE: i32 = 5;

/// Nice value of model-load threads: below live work, so a create or scale-up does not show
/// in live latency, but not idle-only, so it still finishes on a saturated machine.
const LOADER_NICE: i32 = 19;

/// Sets the calling thread's nice value.
pub use crate::sys::set_nice;

/// Runs `job` on a new thread at nice 19 (loads are rare and may take seconds: a thread each;
/// how many run at once is bounded by the pool's load slots).
pub fn spawn_loader(job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name("switchyard-load".into()).spawn(move || {
        set_nice(LOADER_NICE);
        job();
    })?;
    Ok(())
}
