//! A low-priority executor for work no client is waiting for: mirror (shadow) copies.
//!
//! On a small machine a shadow that is busy all the time competes with the live path for the
//! same cores, and the scheduler's time slices (milliseconds) then show up directly in live
//! p99. So shadow runs execute on threads of their own scheduled with Linux's `SCHED_IDLE`
//! policy (falling back to nice 19): they use idle CPU only, and live work always preempts
//! them. A shadow that cannot keep up fills its admission cap and its copies are dropped and
//! counted, which is the behaviour the mirror contract asks for.

use std::sync::mpsc::{self, Sender};
use std::sync::{Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The process-wide pool, started on first use.
static POOL: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Runs `job` on a low-priority thread.
pub fn spawn(job: impl FnOnce() + Send + 'static) {
    let sender = POOL.get_or_init(start);
    let sender = sender.lock().unwrap_or_else(|e| e.into_inner());
    // The workers live for the whole process, so the channel never closes.
    let _ = sender.send(Box::new(job));
}

fn start() -> Mutex<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = std::sync::Arc::new(Mutex::new(rx));
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2);
    for i in 0..threads {
        let rx = std::sync::Arc::clone(&rx);
        let _ = std::thread::Builder::new().name(format!("switchyard-shadow-{i}")).spawn(move || {
            lower_priority();
            loop {
                let job = {
                    let rx = rx.lock().unwrap_or_else(|e| e.into_inner());
                    rx.recv()
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            }
        });
    }
    Mutex::new(tx)
}

/// Puts the calling thread in `SCHED_IDLE`, or at nice 19 where that is refused.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: both calls only change the scheduling of the calling thread (pid 0 / its tid)
    // and take plain values; a failure is reported through the return value and ignored.
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, 19);
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
            super::spawn(move || tx.send(i).unwrap());
        }
        let mut got: Vec<i32> = (0..10).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }
}
