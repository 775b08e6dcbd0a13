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
}
