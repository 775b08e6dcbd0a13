//! Cancelling a run that nobody waits for any more (its request timed out).
//!
//! The waiting side cannot stop a thread, so cancellation is cooperative: a hook that can stop
//! early registers how (ONNX Runtime's `RunOptions::terminate`), and `cancel` calls it. A hook
//! that registers nothing simply finishes; its result is discarded either way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

type Stopper = Box<dyn Fn() + Send + Sync>;

/// Shared between the waiting request and the running hook.
#[derive(Default)]
pub struct Cancellation {
    cancelled: AtomicBool,
    stopper: Mutex<Option<Stopper>>,
}

impl std::fmt::Debug for Cancellation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancellation").field("cancelled", &self.is_cancelled()).finish_non_exhaustive()
    }
}

impl Cancellation {
    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Cancels: marks the run and asks the hook to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        if let Some(stop) = self.stopper.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            stop();
        }
    }

    /// Registers how to stop the run in progress; returns false (and registers nothing) when
    /// it was cancelled already, so the hook can skip the run.
    pub fn on_cancel(&self, stop: impl Fn() + Send + Sync + 'static) -> bool {
        let mut slot = self.stopper.lock().unwrap_or_else(|e| e.into_inner());
        if self.is_cancelled() {
            return false;
        }
        *slot = Some(Box::new(stop));
        true
    }

    /// Forgets the stopper once the run is over.
    pub fn clear(&self) {
        *self.stopper.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// The worker processes of one deployment version whose `init` is still running. Deleting or
/// replacing the version, or stopping the server, calls [`stop`](Self::stop): those workers are
/// killed at once instead of running on for up to the init deadline (before, a `DELETE`
/// answered 200 while a sleeping `init()` went on, and after SIGTERM such workers were left as
/// orphans: a worker notices the server is gone only when it next reads its pipe, after init).
/// A worker started after `stop` is refused, so a load that raced the stop cannot slip through.
#[derive(Debug, Default)]
pub struct InitStop {
    /// Whether `stop` was called, and the process groups (worker pids) in init now.
    inner: Mutex<(bool, Vec<u32>)>,
}

impl InitStop {
    /// Registers a worker (its own process group) whose init is starting. False when the
    /// version was stopped already: the caller kills the worker and gives up the load.
    pub fn track(&self, pgid: u32) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.0 {
            return false;
        }
        inner.1.push(pgid);
        true
    }

    /// Forgets a worker whose init is over (or which is being reaped: call this *before*
    /// reaping it, so its pid, free for reuse once reaped, is never killed by `stop`).
    pub fn untrack(&self, pgid: u32) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.retain(|p| *p != pgid);
    }

    /// Whether [`stop`](Self::stop) was called.
    #[cfg(test)]
    fn is_stopped(&self) -> bool {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// Kills every worker still in init and refuses new ones. Their loads then fail at once
    /// (the init pipe closes); the pool reports them as cancelled.
    pub fn stop(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0 = true;
        for pgid in inner.1.drain(..) {
            crate::sys::kill_process_group(pgid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn cancel_calls_the_registered_stopper_once_registered() {
        let c = Cancellation::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = Arc::clone(&hits);
        assert!(c.on_cancel(move || {
            h.fetch_add(1, Ordering::SeqCst);
        }));
        c.cancel();
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert!(c.is_cancelled());
        assert!(!c.on_cancel(|| {}), "too late to register");
    }

    #[test]
    fn a_stopped_init_stop_refuses_new_workers() {
        let s = InitStop::default();
        assert!(s.track(u32::MAX), "tracked before the stop");
        s.untrack(u32::MAX); // never kill a made-up pid below
        s.stop();
        assert!(s.is_stopped());
        assert!(!s.track(1), "a worker starting after the stop is refused");
    }
}
