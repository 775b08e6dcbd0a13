//! Per-request latencies, bounded, for the rollout's latency gate (issue 27).
//!
//! The duration histograms' buckets double in width, too coarse to tell a 20% slower target
//! apart, so a rank test needs the latencies themselves. A [`LatencyRing`] keeps the last
//! [`RING`] of them in fixed atomic slots, and only while a rollout watches the deployment
//! ([`LatencyRing::arm`]): otherwise a request pays one relaxed load of a flag. The rollout's
//! timer drains each ring a few times per window into a [`Reservoir`], a uniform sample of
//! the whole (growing) window of a bounded size, so neither memory nor the test's cost grows
//! with traffic.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// Latencies a ring holds between two drains (a drain every second at most; a deployment
/// answering more than this per drain has the surplus skipped, which keeps the sample fair).
pub(crate) const RING: usize = 4096;

/// Latencies each side of a rollout's window keeps (the latency gate's sample; a plan needing
/// more than this per side cannot reach its power, which the upfront estimate says).
pub(crate) const SAMPLE: usize = 2048;

/// The last [`RING`] latencies of one role of one deployment, while armed.
///
/// Each slot holds `(sequence number's low 32 bits) << 32 | microseconds`: a reader keeps a
/// slot only when its tag is the sequence number it expects, so a slot being written (the
/// counter moved, the store not yet done) or already overwritten by a later lap is skipped,
/// never misread. No lock, and writers never wait for readers.
#[derive(Default)]
pub(crate) struct LatencyRing {
    armed: AtomicBool,
    next: AtomicU64,
    /// Allocated the first time the ring is armed (32 KiB), never for deployments no rollout
    /// watched.
    slots: OnceLock<Box<[AtomicU64]>>,
}

impl LatencyRing {
    /// Records one latency when armed; one relaxed load otherwise.
    #[inline]
    pub(crate) fn record(&self, seconds: f64) {
        if !self.armed.load(Ordering::Relaxed) {
            return;
        }
        let Some(slots) = self.slots.get() else { return };
        let micros = (seconds * 1e6).clamp(1.0, f64::from(u32::MAX)) as u64;
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        slots[(seq % RING as u64) as usize].store(((seq & 0xffff_ffff) << 32) | micros, Ordering::Release);
    }

    /// Starts or stops recording.
    pub(crate) fn arm(&self, on: bool) {
        if on {
            self.slots.get_or_init(|| (0..RING).map(|_| AtomicU64::new(u64::MAX)).collect());
        }
        self.armed.store(on, Ordering::Relaxed);
    }

    /// The sequence number the next latency gets: where a reader starts.
    pub(crate) fn cursor(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// The latencies recorded since `from` (a [`cursor`](Self::cursor)) that the ring still
    /// holds, in seconds, and the cursor to read from next time.
    pub(crate) fn drain(&self, from: u64, into: &mut impl FnMut(f64)) -> u64 {
        let to = self.cursor();
        let Some(slots) = self.slots.get() else { return to };
        for seq in from.max(to.saturating_sub(RING as u64))..to {
            let v = slots[(seq % RING as u64) as usize].load(Ordering::Acquire);
            if v >> 32 == seq & 0xffff_ffff {
                into((v & 0xffff_ffff) as f64 / 1e6);
            }
        }
        to
    }
}

/// A uniform random sample of at most `cap` values of a stream of unknown length
/// (Vitter's algorithm R): each value seen so far is in it with the same probability.
#[derive(Debug, Clone)]
pub(crate) struct Reservoir {
    cap: usize,
    seen: u64,
    values: Vec<f64>,
    rng: fastrand::Rng,
}

impl Reservoir {
    pub(crate) fn new(cap: usize, seed: u64) -> Self {
        Self { cap, seen: 0, values: Vec::new(), rng: fastrand::Rng::with_seed(seed) }
    }

    pub(crate) fn push(&mut self, v: f64) {
        self.seen += 1;
        if self.values.len() < self.cap {
            self.values.push(v);
        } else {
            let j = self.rng.u64(0..self.seen);
            if (j as usize) < self.cap {
                self.values[j as usize] = v;
            }
        }
    }

    /// The sample.
    pub(crate) fn values(&self) -> &[f64] {
        &self.values
    }

    /// Values offered so far (the sample holds at most `cap` of them).
    #[cfg(test)]
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_records_only_while_armed_and_a_drain_reads_each_latency_once() {
        let ring = LatencyRing::default();
        ring.record(0.5);
        assert_eq!(ring.cursor(), 0, "not armed: nothing recorded, nothing allocated");
        assert!(ring.slots.get().is_none());
        ring.arm(true);
        let start = ring.cursor();
        for ms in 1..=10 {
            ring.record(f64::from(ms) / 1000.0);
        }
        let mut got = Vec::new();
        let next = ring.drain(start, &mut |v| got.push(v));
        assert_eq!(got, (1..=10).map(|ms| f64::from(ms) / 1000.0).collect::<Vec<_>>());
        let mut again = Vec::new();
        assert_eq!(ring.drain(next, &mut |v| again.push(v)), next);
        assert!(again.is_empty(), "a drain reads each latency once");
        ring.arm(false);
        ring.record(1.0);
        assert_eq!(ring.cursor(), next, "disarmed again");
    }

    #[test]
    fn a_ring_lapped_between_drains_gives_the_latest_ring_full_and_skips_overwritten_slots() {
        let ring = LatencyRing::default();
        ring.arm(true);
        for i in 0..(RING as u64 * 2 + 5) {
            ring.record((i + 1) as f64 / 1e6);
        }
        let mut got = Vec::new();
        ring.drain(0, &mut |v| got.push(v));
        assert_eq!(got.len(), RING, "no more than one ring full");
        assert_eq!(got[0], (RING as u64 + 6) as f64 / 1e6, "the oldest one the ring still holds");
        assert_eq!(*got.last().unwrap(), (RING as u64 * 2 + 5) as f64 / 1e6);
        // A slot whose tag is not the expected sequence (a write in progress) is skipped.
        let slots = ring.slots.get().unwrap();
        let seq = ring.cursor() - 1;
        slots[(seq % RING as u64) as usize].store(u64::MAX, Ordering::Release);
        let mut last = Vec::new();
        ring.drain(seq, &mut |v| last.push(v));
        assert!(last.is_empty());
    }

    #[test]
    fn records_from_many_threads_are_all_read_back() {
        let ring = std::sync::Arc::new(LatencyRing::default());
        ring.arm(true);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let ring = ring.clone();
                std::thread::spawn(move || (0..500).for_each(|_| ring.record(0.001)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let mut n = 0;
        ring.drain(0, &mut |v| {
            assert_eq!(v, 0.001);
            n += 1;
        });
        assert_eq!(n, 2000);
    }

    #[test]
    fn a_reservoir_keeps_a_uniform_sample_of_a_long_stream() {
        let mut r = Reservoir::new(1000, 7);
        for i in 0..100_000 {
            r.push(f64::from(i));
        }
        assert_eq!((r.values().len(), r.seen()), (1000, 100_000));
        // Uniform over the stream: the sample's mean is near the stream's (49,999.5; the
        // standard error of a 1000-sample mean of a uniform over 100,000 is about 913).
        let mean = r.values().iter().sum::<f64>() / 1000.0;
        assert!((mean - 49_999.5).abs() < 4.0 * 913.0, "{mean}");
        let late = r.values().iter().filter(|v| **v >= 50_000.0).count();
        assert!((400..=600).contains(&late), "half of it from the stream's second half: {late}");
    }
}
