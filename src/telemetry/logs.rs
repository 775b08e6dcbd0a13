//! Per-deployment logs: a bounded ring of recent lines, served by `get-logs`.
//!
//! Bounded so that a busy deployment can log every request forever in constant memory; the
//! process log (tracing) keeps the long history where the user wants it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::sharded::{shard, SHARDS};

/// Lines kept per deployment.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// One thread shard.
type Shard = Mutex<ShardLines>;

#[derive(Debug, Default)]
struct ShardLines {
    /// (nanoseconds since the epoch, stamped line), oldest first.
    lines: VecDeque<(u128, String)>,
    /// The time of the newest line this shard let go (0: none yet).
    evicted_upto: u128,
}

/// A bounded, thread-safe ring of log lines. Every request writes a line, so the ring is
/// sharded by thread (no lock shared between worker threads); `tail` merges the shards by
/// time.
#[derive(Debug)]
pub struct LogRing {
    shards: Box<[Shard]>,
    capacity_per_shard: usize,
    capacity: usize,
}

impl LogRing {
    /// An empty ring holding at most about `capacity` lines (split over the shards).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(ShardLines::default())).collect(),
            capacity_per_shard: capacity.div_ceil(SHARDS),
            capacity,
        }
    }

    /// Appends one line, prefixed with the current UTC time; the shard's oldest line goes when
    /// it is full.
    pub fn push(&self, line: impl AsRef<str>) {
        let now = SystemTime::now();
        let stamped = format!("{} {}", humantime::format_rfc3339_millis(now), line.as_ref());
        let key = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mut shard = self.shards[shard()].lock().unwrap_or_else(|e| e.into_inner());
        if shard.lines.len() >= self.capacity_per_shard {
            if let Some((t, _)) = shard.lines.pop_front() {
                shard.evicted_upto = shard.evicted_upto.max(t);
            }
        }
        shard.lines.push_back((key, stamped));
    }

    /// The last `n` lines (at most the ring's capacity), oldest first, without a gap: a busy
    /// thread's shard (a worker's output copier) lets its old lines go sooner than the
    /// others, so lines of other shards older than the newest line any shard let go are left
    /// out too. Otherwise the tail would show an old line next to newer ones with the lines
    /// between them silently missing.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let n = n.min(self.capacity);
        let mut all: Vec<(u128, String)> = Vec::new();
        let mut cutoff = 0;
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            cutoff = cutoff.max(shard.evicted_upto);
            all.extend(shard.lines.iter().skip(shard.lines.len().saturating_sub(n)).cloned());
        }
        if cutoff > 0 {
            all.retain(|(t, _)| *t > cutoff);
        }
        // Stable: lines of one thread with the same timestamp keep their order.
        all.sort_by_key(|(t, _)| *t);
        let skip = all.len().saturating_sub(n);
        all.into_iter().skip(skip).map(|(_, l)| l).collect()
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
        let ring = LogRing::new(3 * crate::telemetry::sharded::SHARDS);
        for i in 0..5 {
            ring.push(format!("line {i}"));
        }
        let tail = ring.tail(10);
        assert_eq!(tail.len(), 3, "one thread writes one shard of 3 lines");
        assert!(tail[0].ends_with("line 2") && tail[2].ends_with("line 4"));
        assert_eq!(ring.tail(1).len(), 1);
        assert!(ring.tail(1)[0].ends_with("line 4"));
    }

    /// A busy thread (a worker's output copier) fills its shard and lets old lines go; the
    /// tail must not show another thread's older line next to the newest ones as if nothing
    /// came between.
    #[test]
    fn the_tail_has_no_gap_when_a_busy_shard_let_lines_go() {
        let ring = std::sync::Arc::new(LogRing::new(2 * crate::telemetry::sharded::SHARDS));
        ring.push("quiet thread: old line");
        let mine = crate::telemetry::sharded::shard();
        // A thread on another shard prints ten lines; its shard keeps two.
        loop {
            let r = std::sync::Arc::clone(&ring);
            let busy = std::thread::spawn(move || {
                if crate::telemetry::sharded::shard() == mine {
                    return false;
                }
                for i in 0..10 {
                    r.push(format!("busy line {i}"));
                }
                true
            });
            if busy.join().unwrap() {
                break;
            }
        }
        let tail = ring.tail(100);
        assert_eq!(tail.len(), 2, "{tail:?}");
        assert!(tail[0].ends_with("busy line 8") && tail[1].ends_with("busy line 9"), "{tail:?}");
    }
}
