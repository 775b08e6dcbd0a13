//! The one error type of validation: a message that names the rule broken, plus the HTTP status
//! the admin API answers with (400 for a malformed request, 409 for a conflict with the state).

use std::fmt;

/// A refused change. The message is written for the user: it says what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// HTTP status for the admin API: 400 (invalid input), 404 (unknown name) or 409 (conflict).
    pub status: u16,
    /// What rule was broken and what would be accepted.
    pub message: String,
}

impl SpecError {
    /// The request itself is malformed or breaks a rule (HTTP 400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { status: 400, message: message.into() }
    }

    /// The request is well formed but conflicts with the current state (HTTP 409).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { status: 409, message: message.into() }
    }

    /// The request names something that does not exist (HTTP 404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: 404, message: message.into() }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}
