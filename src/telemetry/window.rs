//! Numbers over a window of time, read from the cumulative per-deployment series.
//!
//! The hot path only ever adds to counters and histogram buckets; a window is the difference
//! of two [`Reading`]s of those totals, taken at its start and at its end. So a rollout's gates
//! cost requests nothing: no timestamps, no per-request ring, no lock.

/// Cumulative counts of one role (live or mirror) of one deployment at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Answers counted (every status, 429 refusals included).
    pub requests: u64,
    /// Answers that count as errors for a rollout: 5xx, 424 (model error) and 408 (timeout).
    pub errors: u64,
    /// `(upper bound in seconds, count)` per duration bucket, increasing; the last is +Inf.
    pub buckets: Vec<(f64, u64)>,
}

/// Whether a status counts against a rollout's error rate.
pub(crate) fn is_error(code: u16) -> bool {
    code >= 500 || code == 424 || code == 408
}

impl Reading {
    /// What happened between `before` and `self` (a later reading of the same series).
    pub fn since(&self, before: &Reading) -> Reading {
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, (bound, n))| (*bound, n.saturating_sub(before.buckets.get(i).map_or(0, |b| b.1))))
            .collect();
        Reading {
            requests: self.requests.saturating_sub(before.requests),
            errors: self.errors.saturating_sub(before.errors),
            buckets,
        }
    }

    /// Adds `other` (a window of another deployment with the same buckets) into this one.
    pub fn merge(&mut self, other: &Reading) {
        self.requests += other.requests;
        self.errors += other.errors;
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
    }

    /// The `q` quantile of the durations, in seconds: the bucket that holds it, interpolated
    /// linearly inside it (the buckets double in width, so an upper bound alone could be off by
    /// up to 2×). The +Inf bucket answers its lower bound. `None` with no observation.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.buckets.iter().map(|b| b.1).sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0u64;
        let mut lower = 0.0;
        for (bound, n) in &self.buckets {
            if *n > 0 && (seen + n) as f64 >= rank {
                if *bound == f64::MAX {
                    return Some(lower);
                }
                let within = (rank - seen as f64) / *n as f64;
                return Some(lower + (bound - lower) * within);
            }
            seen += n;
            lower = *bound;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(counts: &[u64]) -> Reading {
        let mut buckets: Vec<(f64, u64)> =
            counts.iter().enumerate().map(|(i, n)| (0.001 * f64::powi(2.0, i as i32), *n)).collect();
        buckets.last_mut().unwrap().0 = f64::MAX;
        Reading { requests: counts.iter().sum(), errors: 0, buckets }
    }

    #[test]
    fn windows_subtract_and_quantiles_interpolate() {
        let before = reading(&[10, 0, 0, 0]);
        let after = reading(&[10, 0, 100, 0]);
        let w = after.since(&before);
        assert_eq!(w.requests, 100);
        let p99 = w.quantile(0.99).unwrap();
        assert!(p99 > 0.002 && p99 <= 0.004, "inside the (2 ms, 4 ms] bucket: {p99}");
        assert_eq!(reading(&[0, 0, 0, 0]).quantile(0.99), None);
        assert_eq!(reading(&[0, 0, 0, 5]).quantile(0.99), Some(0.004), "+Inf answers its lower bound");
        let mut a = reading(&[1, 0, 0, 0]);
        a.merge(&reading(&[0, 3, 0, 0]));
        assert_eq!(a.requests, 4);
        assert!(is_error(503) && is_error(424) && is_error(408) && !is_error(429) && !is_error(400));
    }
}
