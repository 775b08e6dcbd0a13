//! Per-deployment logs: a bounded ring of recent lines, served by `get-logs`.
//!
//! Bounded so that a busy deployment can log every request forever in constant memory; the
//! process log (tracing) keeps the long history where the user wants it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

/// Lines kept per deployment.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// A bounded, thread-safe ring of log lines.
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<String>>,
    capacity: usize,
}

impl LogRing {
    /// An empty ring holding at most `capacity` lines.
    pub fn new(capacity: usize) -> Self {
        Self { lines: Mutex::new(VecDeque::with_capacity(capacity.min(1024))), capacity: capacity.max(1) }
    }

    /// Appends one line, prefixed with the current UTC time; the oldest line goes when full.
    pub fn push(&self, line: impl AsRef<str>) {
        let stamped = format!("{} {}", humantime::format_rfc3339_millis(SystemTime::now()), line.as_ref());
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == self.capacity {
            lines.pop_front();
        }
        lines.push_back(stamped);
    }

    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().skip(lines.len().saturating_sub(n)).cloned().collect()
    }
}

impl Default for LogRing {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_lines() {
        let ring = LogRing::new(3);
        for i in 0..5 {
            ring.push(format!("line {i}"));
        }
        let tail = ring.tail(10);
        assert_eq!(tail.len(), 3);
        assert!(tail[0].ends_with("line 2") && tail[2].ends_with("line 4"));
        assert_eq!(ring.tail(1).len(), 1);
    }
}
