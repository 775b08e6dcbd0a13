//! A deployment's provisioning state (CONTRACT §5), readable without a lock.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// Where a deployment is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub(crate) enum ProvisioningState {
    /// Instances are loading for the first time; no traffic can reach it yet.
    Creating,
    /// A scale or replace is in progress; existing instances keep serving.
    Updating,
    /// Every instance asked for is ready.
    Succeeded,
    /// Init failed; the deployment never receives traffic. The error says why.
    Failed,
    /// Being removed; in-flight requests finish first.
    Deleting,
}

impl ProvisioningState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Creating,
            1 => Self::Updating,
            2 => Self::Succeeded,
            3 => Self::Failed,
            _ => Self::Deleting,
        }
    }

    /// Whether a control operation is still running (create, scale, replace).
    pub(crate) fn is_busy(self) -> bool {
        matches!(self, Self::Creating | Self::Updating | Self::Deleting)
    }
}

/// The state plus the last error, updated by the control plane's background tasks. Waiters
/// (the config-dir reconciler, the admin API's `?wait`) subscribe to changes instead of polling.
#[derive(Debug)]
pub(crate) struct StateCell {
    state: AtomicU8,
    error: Mutex<Option<String>>,
    changes: tokio::sync::watch::Sender<ProvisioningState>,
}

impl StateCell {
    /// Starts in `state` with no error.
    pub(crate) fn new(state: ProvisioningState) -> Self {
        Self {
            state: AtomicU8::new(state as u8),
            error: Mutex::new(None),
            changes: tokio::sync::watch::Sender::new(state),
        }
    }

    /// Resolves once this version is no longer creating or updating, and returns its state
    /// (`Deleting` included: a replaced version ends that way, and the waiter then looks at
    /// the version that took its place).
    pub(crate) async fn settled(&self) -> ProvisioningState {
        let mut rx = self.changes.subscribe();
        let settled = rx.wait_for(|s| !matches!(s, ProvisioningState::Creating | ProvisioningState::Updating)).await;
        match settled {
            Ok(s) => *s,
            // The sender lives as long as `self`; this cannot happen while we borrow it.
            Err(_) => self.get(),
        }
    }

    /// The current state.
    pub(crate) fn get(&self) -> ProvisioningState {
        ProvisioningState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Moves to `state`; an error is recorded with `Failed` and cleared by any other state.
    pub(crate) fn set(&self, state: ProvisioningState, error: Option<String>) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = error;
        self.state.store(state as u8, Ordering::Release);
        self.changes.send_replace(state);
    }

    /// The error of the last failed operation, if any.
    pub(crate) fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
