//! The one error type of validation: a message that names the rule broken and what would be
//! accepted, and what kind of refusal it is. It knows nothing of HTTP: the planes map the kind
//! to a status in one place (`server::errors`).

/// What kind of rule a refused document broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// The document or a value in it is malformed or out of range.
    Invalid,
    /// Two parts of a valid document contradict each other (a mirror to a live deployment).
    Conflict,
    /// The document is larger than this server reads.
    TooLarge,
}

/// A refused document or value. The message is written for the user: it says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// What kind of rule was broken.
    pub kind: SpecErrorKind,
    /// What rule was broken and what would be accepted.
    pub message: String,
}

impl SpecError {
    /// The document is malformed or breaks a rule.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { kind: SpecErrorKind::Invalid, message: message.into() }
    }

    /// Two parts of the document contradict each other.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { kind: SpecErrorKind::Conflict, message: message.into() }
    }

    /// The document is too large to be read.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self { kind: SpecErrorKind::TooLarge, message: message.into() }
    }
}
