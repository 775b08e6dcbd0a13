//! An endpoint's recent request rate, from its cumulative request count read every few
//! seconds (`serve` reads it; nothing on the request path): what a rollout's plan is
//! measured against when it starts ("at the current rate, a step takes about ...").

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// How far back the rate looks.
pub(crate) const RATE_SPAN: Duration = Duration::from_secs(60);
/// How often `serve` reads the counts.
pub(crate) const RATE_EVERY: Duration = Duration::from_secs(2);

/// Readings of a cumulative count over the last [`RATE_SPAN`].
#[derive(Debug, Default)]
pub(crate) struct RateMeter {
    readings: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    /// Adds a reading of the cumulative count `total` taken at `at`; readings older than the
    /// span (but the one the span starts from) are dropped.
    pub(crate) fn sample(&mut self, at: Instant, total: u64) {
        // A count that went down (a deployment deleted, its series with it) starts over: the
        // difference across it would read as no traffic for a minute.
        if self.readings.back().is_some_and(|(_, last)| total < *last) {
            self.readings.clear();
        }
        self.readings.push_back((at, total));
        while self.readings.len() > 2 && at.duration_since(self.readings[1].0) >= RATE_SPAN {
            self.readings.pop_front();
        }
    }

    /// Requests per second over the readings held, once they span at least one second.
    pub(crate) fn per_second(&self) -> Option<f64> {
        let (first, last) = (self.readings.front()?, self.readings.back()?);
        let span = last.0.duration_since(first.0);
        (span >= Duration::from_secs(1)).then(|| (last.1 - first.1) as f64 / span.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_over_the_last_minute_and_unknown_before_a_second() {
        let start = Instant::now();
        let mut m = RateMeter::default();
        assert_eq!(m.per_second(), None);
        m.sample(start, 1000);
        m.sample(start + Duration::from_millis(500), 1050);
        assert_eq!(m.per_second(), None, "half a second says nothing yet");
        // 10 requests per second for two minutes, then 100 per second for a minute.
        let mut total = 1050;
        for s in 1..=120 {
            total += 10;
            m.sample(start + Duration::from_secs(s), total);
        }
        assert!((m.per_second().unwrap() - 10.0).abs() < 0.5, "{:?}", m.per_second());
        for s in 121..=180 {
            total += 100;
            m.sample(start + Duration::from_secs(s), total);
        }
        assert!((m.per_second().unwrap() - 100.0).abs() < 2.0, "the old minute is gone: {:?}", m.per_second());
        // A deployment deleted: the count goes down, and the rate starts over from there.
        m.sample(start + Duration::from_secs(181), 500);
        assert_eq!(m.per_second(), None, "a count that went down is not read as no traffic");
        m.sample(start + Duration::from_secs(183), 700);
        assert_eq!(m.per_second(), Some(100.0));
    }
}
