//! Why the control plane refused an operation. Validation errors come from `spec` unchanged;
//! the rest depend on the state (a name that does not exist, a deployment busy loading, a
//! state folder that cannot be written). The admin API maps each to a status in one place.

use crate::spec::SpecError;

/// A refused control-plane operation; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ControlError {
    /// The request breaks a rule that needs no state.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The request is well formed but conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request names something that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change could not be made durable (`--state-dir`), so it was undone.
    #[error("the change could not be saved to --state-dir ({0}); nothing was changed")]
    Unsaved(#[source] std::io::Error),
    /// The server cannot take the request right now; the same request may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The server failed at something that should not fail (the asset store's disk).
    #[error("{0}")]
    Internal(String),
    /// The endpoint's plane was retired (the endpoint deleted) between finding it and
    /// changing it: the workspace makes the change again on the current plane.
    #[error("the endpoint was deleted while this change was made: try again")]
    Retry,
}

impl ControlError {
    /// Shorthand for a refused, malformed request.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Spec(SpecError::invalid(message))
    }
}
