//! Hot-path counters without shared cache lines.
//!
//! Every request bumps a request counter and a duration histogram. prometheus-client's
//! histogram takes a write lock per observation and its counter is one atomic shared by every
//! worker thread; on two cores the cache line then bounces between them on every request. These
//! types keep one cache-padded slot per thread shard and add the shards up only when
//! `/metrics` is read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_utils::CachePadded;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Number of shards; threads are spread over them round-robin.
pub(crate) const SHARDS: usize = 8;

/// This thread's shard.
pub(crate) fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    INDEX.with(|i| *i)
}

/// A counter with one slot per shard.
#[derive(Clone, Default, Debug)]
pub(crate) struct ShardedCounter(Arc<[CachePadded<AtomicU64>; SHARDS]>);

impl ShardedCounter {
    /// Adds one.
    pub(crate) fn inc(&self) {
        self.0[shard()].fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// One shard of a histogram: a count per bucket and the sum of observations in nanoseconds.
#[derive(Debug)]
struct HistogramShard {
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

#[derive(Debug)]
struct HistogramInner {
    /// Upper bounds, increasing; the last is `f64::MAX` (+Inf).
    bounds: Box<[f64]>,
    shards: Box<[CachePadded<HistogramShard>]>,
}

/// A histogram of durations in seconds, lock-free and sharded.
#[derive(Clone, Debug)]
pub(crate) struct ShardedHistogram(Arc<HistogramInner>);

impl ShardedHistogram {
    /// A histogram with the given upper bounds (+Inf is added).
    pub(crate) fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let mut bounds: Vec<f64> = bounds.into_iter().collect();
        bounds.push(f64::MAX);
        let shards = (0..SHARDS)
            .map(|_| {
                CachePadded::new(HistogramShard {
                    counts: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                    sum_ns: AtomicU64::new(0),
                })
            })
            .collect();
        Self(Arc::new(HistogramInner { bounds: bounds.into(), shards }))
    }

    /// Records one duration in seconds.
    pub(crate) fn observe(&self, seconds: f64) {
        let i = self.0.bounds.partition_point(|b| *b < seconds).min(self.0.bounds.len() - 1);
        let shard = &self.0.shards[shard()];
        shard.counts[i].fetch_add(1, Ordering::Relaxed);
        shard.sum_ns.fetch_add((seconds.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }

    /// (sum in seconds, count, per-bucket counts) over all shards.
    pub(crate) fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = self.0.bounds.iter().map(|b| (*b, 0)).collect();
        let mut sum_ns = 0u64;
        for s in self.0.shards.iter() {
            for (b, c) in buckets.iter_mut().zip(s.counts.iter()) {
                b.1 += c.load(Ordering::Relaxed);
            }
            sum_ns += s.sum_ns.load(Ordering::Relaxed);
        }
        let count = buckets.iter().map(|b| b.1).sum();
        (sum_ns as f64 / 1e9, count, buckets)
    }
}

impl TypedMetric for ShardedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ShardedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_across_threads() {
        let c = ShardedCounter::default();
        let h = ShardedHistogram::new([0.001, 0.01]);
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (c, h) = (c.clone(), h.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        c.inc();
                        h.observe(if i % 2 == 0 { 0.0005 } else { 0.5 });
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(), 4000);
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 4000);
        assert_eq!(buckets[0].1, 2000);
        assert_eq!(buckets[1].1, 0);
        assert_eq!(buckets[2], (f64::MAX, 2000));
        assert!((sum - (2000.0 * 0.0005 + 2000.0 * 0.5)).abs() < 1e-3);
    }
}
