//! Per-deployment logs: a bounded ring of recent lines, served by `get-logs`.
//!
//! Bounded so that a busy deployment can log every request forever in constant memory; the
//! process log (tracing) keeps the long history where the user wants it.
//!
//! Every request writes an access line, so what a line costs to write is on the hot path, and
//! nearly all of them are never read (the ring keeps 10,000; `get-logs` shows the last few).
//! A line is therefore stored as its parts (the clock reading, and for an access line the
//! request id, role, status and duration) and turned into text only when it is read: writing
//! one costs a clock read and a lock of this thread's shard, with no allocation and no
//! formatting (measured: the two `format!`s and the timestamp formatting were ~5,000
//! instructions and three allocations per request, more than the rest of the front door).
//! The text read back is exactly what formatting at write time gave.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::sharded::{shard, SHARDS};

/// Lines kept per deployment.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// Longest request id an access line keeps inline (a hyphenated UUID is 36 bytes); a longer
/// one is stored as text.
const INLINE_ID: usize = 40;

/// One line, as written.
#[derive(Debug, Clone)]
enum Entry {
    /// Free text.
    Text(String),
    /// `request_id=… role=… status=… duration_ms=…`, formatted when read.
    Access { id: [u8; INLINE_ID], id_len: u8, role: &'static str, status: u16, elapsed: Duration },
}

impl Entry {
    fn write_to(&self, out: &mut String) {
        match self {
            Entry::Text(text) => out.push_str(text),
            Entry::Access { id, id_len, role, status, elapsed } => {
                // Only ever built from a `&str` cut at its full length: valid UTF-8.
                let id = std::str::from_utf8(&id[..*id_len as usize]).unwrap_or("?");
                let _ = write!(out, "{}", AccessLine { request_id: id, role, status: *status, elapsed: *elapsed });
            }
        }
    }
}

/// The text of an access line (one definition, whether it is stored as text or as parts).
struct AccessLine<'a> {
    request_id: &'a str,
    role: &'a str,
    status: u16,
    elapsed: Duration,
}

impl std::fmt::Display for AccessLine<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.elapsed.as_secs_f64() * 1e3;
        write!(f, "request_id={} role={} status={} duration_ms={ms:.3}", self.request_id, self.role, self.status)
    }
}

/// One thread shard.
type Shard = Mutex<ShardLines>;

#[derive(Debug, Default)]
struct ShardLines {
    /// (nanoseconds since the epoch, line), oldest first.
    lines: VecDeque<(u128, Entry)>,
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

    /// Appends one line, prefixed with the current UTC time when read; the shard's oldest
    /// line goes when it is full.
    pub fn push(&self, line: impl AsRef<str>) {
        self.append(Entry::Text(line.as_ref().to_string()));
    }

    /// Appends the access line of one answered request or copy:
    /// `request_id={request_id} role={role} status={status} duration_ms={ms:.3}`. Stored as
    /// its parts (no allocation) and formatted when read.
    pub fn push_access(&self, request_id: &str, role: &'static str, status: u16, elapsed: Duration) {
        let entry = if request_id.len() <= INLINE_ID {
            let mut id = [0u8; INLINE_ID];
            id[..request_id.len()].copy_from_slice(request_id.as_bytes());
            Entry::Access { id, id_len: request_id.len() as u8, role, status, elapsed }
        } else {
            Entry::Text(AccessLine { request_id, role, status, elapsed }.to_string())
        };
        self.append(entry);
    }

    fn append(&self, entry: Entry) {
        let key = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let mut shard = self.shards[shard()].lock().unwrap_or_else(|e| e.into_inner());
        if shard.lines.len() >= self.capacity_per_shard {
            if let Some((t, _)) = shard.lines.pop_front() {
                shard.evicted_upto = shard.evicted_upto.max(t);
            }
        }
        shard.lines.push_back((key, entry));
    }

    /// The last `n` lines (at most the ring's capacity), oldest first, each prefixed with the
    /// UTC time it was written (RFC 3339, milliseconds), without a gap: a busy thread's shard
    /// (a worker's output copier) lets its old lines go sooner than the others, so lines of
    /// other shards older than the newest line any shard let go are left out too. Otherwise
    /// the tail would show an old line next to newer ones with the lines between them
    /// silently missing.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let n = n.min(self.capacity);
        let mut all: Vec<(u128, Entry)> = Vec::new();
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
        all.into_iter().skip(skip).map(|(t, entry)| stamped(t, &entry)).collect()
    }
}

/// `{RFC 3339 time, ms} {line}`.
fn stamped(nanos: u128, entry: &Entry) -> String {
    let when = UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    let mut out = String::with_capacity(96);
    let _ = write!(out, "{} ", humantime::format_rfc3339_millis(when));
    entry.write_to(&mut out);
    out
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

    /// An access line stored as parts reads back as the text that was formatted at write
    /// time before: same fields, same rounding, same time stamp format.
    #[test]
    fn access_lines_read_back_as_text() {
        let ring = LogRing::new(100);
        let id = "0b7c5a9e-3f1d-4c2b-9a8e-1d2c3b4a5f60";
        ring.push_access(id, "live", 200, Duration::from_micros(1234));
        ring.push_access(&"x".repeat(60), "mirror", 424, Duration::from_nanos(999_999_999));
        ring.push("plain");
        let tail = ring.tail(3);
        let body = |line: &str| line.split_once(' ').map(|(_, rest)| rest.to_string()).unwrap();
        assert_eq!(body(&tail[0]), format!("request_id={id} role=live status=200 duration_ms=1.234"));
        assert_eq!(
            body(&tail[1]),
            format!("request_id={} role=mirror status=424 duration_ms=1000.000", "x".repeat(60))
        );
        assert_eq!(body(&tail[2]), "plain");
        for line in &tail {
            let stamp = line.split_once(' ').unwrap().0;
            assert_eq!(stamp.len(), "2026-12-06T10:00:00.000Z".len(), "{line}");
            assert!(humantime::parse_rfc3339(stamp).is_ok(), "{line}");
        }
    }
}
