//! Running totals of a shadow deployment's comparison with live traffic: "does green agree
//! with blue on live traffic?" answered with numbers.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::compare::{compare_bodies, PairDiff, Tolerance};

/// Disagreeing pairs kept as examples.
pub(crate) const MAX_SAMPLES: usize = 10;
/// Characters of each body kept in a sample.
const SAMPLE_BODY_CHARS: usize = 512;

/// One side of a mirrored pair: what a deployment answered and how long it took.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
    pub latency: Duration,
}

/// A disagreeing pair kept as an example.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct Sample {
    pub request_id: String,
    pub reason: String,
    pub live_status: u16,
    pub shadow_status: u16,
    pub live_body: String,
    pub shadow_body: String,
    pub max_abs_diff: f64,
}

/// The totals since the last reset.
struct Totals {
    tolerance: Tolerance,
    since: SystemTime,
    pairs: u64,
    compared: u64,
    agreed: u64,
    value_disagreements: u64,
    shape_mismatches: u64,
    shadow_errors: u64,
    live_errors: u64,
    both_errors: u64,
    unpaired: u64,
    max_abs_diff: f64,
    sum_abs_diff: f64,
    numbers: u64,
    live_latency_us: Histogram<u64>,
    shadow_latency_us: Histogram<u64>,
    samples: VecDeque<Sample>,
    /// What a rollout's evidence gates compare in a mirror step: the live and the shadow
    /// answer to the very same requests.
    paired: Paired,
}

/// The pairs as a rollout's evidence: error counts by the rollout's rule (5xx, 424, 408) on
/// each side, and a uniform bounded sample of both sides' latencies.
#[derive(Debug, Clone)]
struct Paired {
    live_errors: u64,
    shadow_errors: u64,
    live_latency: Reservoir,
    shadow_latency: Reservoir,
}

/// Latencies of each side a report keeps for the latency gate.
const PAIRED_SAMPLE: usize = crate::telemetry::samples::SAMPLE;

/// The mirrored pairs since the last reset, as the evidence gates read them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PairedEvidence {
    pub pairs: u64,
    pub live_errors: u64,
    pub shadow_errors: u64,
    /// A uniform sample of the live answers' latencies, in seconds.
    pub live_latency: Vec<f64>,
    /// A uniform sample of the shadow answers' latencies (other pairs than the live sample's
    /// are possible: each side is sampled on its own), in seconds.
    pub shadow_latency: Vec<f64>,
}

impl Totals {
    fn new(tolerance: Tolerance) -> Self {
        let histogram = || Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds");
        Self {
            tolerance,
            since: SystemTime::now(),
            pairs: 0,
            compared: 0,
            agreed: 0,
            value_disagreements: 0,
            shape_mismatches: 0,
            shadow_errors: 0,
            live_errors: 0,
            both_errors: 0,
            unpaired: 0,
            max_abs_diff: 0.0,
            sum_abs_diff: 0.0,
            numbers: 0,
            live_latency_us: histogram(),
            shadow_latency_us: histogram(),
            samples: VecDeque::new(),
            paired: Paired {
                live_errors: 0,
                shadow_errors: 0,
                live_latency: Reservoir::new(PAIRED_SAMPLE, 0x5eed_0001),
                shadow_latency: Reservoir::new(PAIRED_SAMPLE, 0x5eed_0002),
            },
        }
    }
}

/// Why a mirror copy was not scored. Each reason has a stable key (JSON, CLI) and a sentence
/// for the logs that says what to change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The shadow's own bounded copy queue (2 × max_concurrent_requests_per_instance ×
    /// instance_count), or the process-wide shadow job queue, was full.
    QueueFull,
    /// The shadow CPU budget (`serve --mirror-cpu-percent`) stayed spent until the copy's
    /// deadline (`request_timeout_ms` after it was queued), or the copy queue was full while
    /// the budget was spent (copies waiting for CPU fill it).
    CpuBudget,
    /// Every shadow instance stayed busy (pinned requests, other copies) until the deadline.
    NoIdleInstance,
    /// The shadow had no ready instance (loading, failed or scaling).
    NotReady,
}

impl DropReason {
    /// Every reason, in the order reports list them.
    pub(crate) const ALL: [DropReason; 4] =
        [DropReason::QueueFull, DropReason::CpuBudget, DropReason::NoIdleInstance, DropReason::NotReady];

    /// The stable key used in JSON and tables.
    pub(crate) fn key(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::CpuBudget => "cpu_budget",
            DropReason::NoIdleInstance => "no_idle_instance",
            DropReason::NotReady => "not_ready",
        }
    }

    /// What happened, for a log line.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            DropReason::QueueFull => "the shadow's copy queue is full",
            DropReason::CpuBudget => "the shadow CPU budget is spent (serve --mirror-cpu-percent)",
            DropReason::NoIdleInstance => "every shadow instance stayed busy until the copy's deadline",
            DropReason::NotReady => "the shadow has no ready instance",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The effective mirror share since the last reset: how many copies the front door wanted to
/// send, how many the shadow scored, and how many were dropped and why. Kept apart from the
/// comparison totals (and under its own lock) because the live path touches it once per copy.
#[derive(Debug)]
struct Share {
    /// Bumped by every reset; a copy is settled only into the window it was wanted in, so
    /// `wanted = copied + dropped + in flight` holds exactly within one window.
    generation: u64,
    wanted: u64,
    copied: u64,
    dropped: [u64; DropReason::ALL.len()],
    /// When the last low-share warning was written (rate limit), in this window.
    warned_at: Option<Instant>,
}

impl Share {
    fn new(generation: u64) -> Self {
        Self { generation, wanted: 0, copied: 0, dropped: [0; DropReason::ALL.len()], warned_at: None }
    }

    fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

/// A share window's numbers, copied out of the lock.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ShareSnapshot {
    pub wanted: u64,
    pub copied: u64,
    pub dropped: u64,
    /// Drops per reason, in [`DropReason::ALL`] order.
    pub dropped_by_reason: Vec<(DropReason, u64)>,
}

impl ShareSnapshot {
    /// Copies wanted and neither scored nor dropped yet (queued or running).
    pub(crate) fn in_flight(&self) -> u64 {
        self.wanted.saturating_sub(self.copied + self.dropped)
    }

    /// The drops per reason, most frequent first, as `reason N` items (for log lines).
    pub(crate) fn reasons_text(&self) -> String {
        let mut by: Vec<_> = self.dropped_by_reason.iter().filter(|(_, n)| *n > 0).collect();
        by.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
        by.iter().map(|(r, n)| format!("{} {n}", r.key())).collect::<Vec<_>>().join(", ")
    }

    /// The view of this window; `percent` is the mirror rule's percentage (for the effective
    /// percentage).
    pub(crate) fn view(&self, percent: u32) -> ShareView {
        let share = (self.wanted > 0).then(|| ratio(self.copied, self.wanted));
        ShareView {
            percent,
            wanted: self.wanted,
            copied: self.copied,
            dropped: self.dropped,
            in_flight: self.in_flight(),
            dropped_by_reason: self.dropped_by_reason.iter().map(|(r, n)| (r.key().to_string(), *n)).collect(),
            copied_ratio: share,
            effective_percent: share.map(|s| s * f64::from(percent)),
        }
    }
}

/// The effective mirror share since the rule was set (`mirror` in a deployment's view and in
/// its comparison report): whether a user who asked for 10% got 10%.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct ShareView {
    /// The mirror rule's percentage now.
    pub percent: u32,
    /// Copies the rule asked for.
    pub wanted: u64,
    /// Copies scored by the shadow.
    pub copied: u64,
    /// Copies dropped (queue full, over the CPU budget, shutting down...).
    pub dropped: u64,
    /// Copies wanted and neither scored nor dropped yet.
    pub in_flight: u64,
    /// Drops per reason.
    pub dropped_by_reason: std::collections::BTreeMap<String, u64>,
    /// `copied / wanted` (null before any copy was wanted).
    pub copied_ratio: Option<f64>,
    /// `copied_ratio × percent`: the share of live requests the shadow actually saw.
    pub effective_percent: Option<f64>,
}

/// Latency percentiles of one side of the mirrored pairs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct LatencyView {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// A comparison report since its last reset (`GET /v1/deployments/{name}/comparison`, with
/// the control plane's fields around it).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct ReportView {
    /// When the report began (RFC 3339).
    pub since: String,
    pub tolerance: Tolerance,
    /// Pairs that met (both answers arrived).
    pub pairs: u64,
    /// Pairs compared (both answered 2xx).
    pub compared: u64,
    pub agreed: u64,
    /// `agreed / compared` (null before any comparison).
    pub agreement_ratio: Option<f64>,
    pub value_disagreements: u64,
    pub shape_mismatches: u64,
    /// Null when the difference overflowed (serde_json writes a non-finite number as null).
    #[schema(nullable)]
    pub max_abs_diff: f64,
    #[schema(nullable)]
    pub mean_abs_diff: f64,
    pub numbers_compared: u64,
    pub shadow_errors: u64,
    pub live_errors: u64,
    pub both_errors: u64,
    /// Copies whose live answer never met them.
    pub unpaired: u64,
    pub dropped: u64,
    pub live_latency_ms: Option<LatencyView>,
    pub shadow_latency_ms: Option<LatencyView>,
    /// A few disagreeing pairs, as examples.
    pub disagreement_samples: Vec<Sample>,
}

/// Drops above this share of wanted copies make the shadow's log warn.
pub(crate) const DROP_WARN_RATIO: f64 = 0.10;
/// No warning before this many copies were wanted (one early drop is not a trend).
const DROP_WARN_MIN_WANTED: u64 = 50;
/// At most one low-share warning per this long, per window.
const DROP_WARN_EVERY: Duration = Duration::from_secs(30);

/// The comparison report of one (shadow) deployment.
pub(crate) struct MirrorReport {
    totals: Mutex<Totals>,
    share: Mutex<Share>,
}

use crate::telemetry::samples::Reservoir;
use crate::telemetry::window::is_error;
use crate::telemetry::MirrorGauges;

impl MirrorReport {
    /// An empty report comparing with `tolerance`.
    pub(crate) fn new(tolerance: Tolerance) -> Self {
        Self { totals: Mutex::new(Totals::new(tolerance)), share: Mutex::new(Share::new(0)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_share(&self) -> std::sync::MutexGuard<'_, Share> {
        self.share.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tolerance in use.
    pub(crate) fn tolerance(&self) -> Tolerance {
        self.lock().tolerance
    }

    /// Starts over (the mirror rule changed, or the user asked), optionally with a new
    /// tolerance.
    pub(crate) fn reset(&self, tolerance: Option<Tolerance>) {
        let mut t = self.lock();
        let tol = tolerance.unwrap_or(t.tolerance);
        *t = Totals::new(tol);
        let mut share = self.lock_share();
        let next = share.generation.wrapping_add(1);
        *share = Share::new(next);
    }

    /// The front door wants a copy sent (the mirror percentage picked this request). Returns
    /// the window the copy belongs to, for [`Self::copied`] and [`Self::dropped`].
    pub(crate) fn wanted(&self) -> u64 {
        let mut s = self.lock_share();
        s.wanted += 1;
        s.generation
    }

    /// The shadow scored a copy wanted in window `generation` (whatever it answered).
    pub(crate) fn copied(&self, generation: u64) {
        let mut s = self.lock_share();
        if s.generation == generation {
            s.copied += 1;
        }
    }

    /// A copy wanted in window `generation` was dropped. Returns the window's numbers when the
    /// drops have passed [`DROP_WARN_RATIO`] of the wanted copies and no warning was given in
    /// the last [`DROP_WARN_EVERY`]: the caller then warns (the rate limit lives here, under the
    /// same lock as the counts, so two threads never both warn).
    pub(crate) fn dropped(&self, generation: u64, reason: DropReason) -> Option<ShareSnapshot> {
        let mut s = self.lock_share();
        if s.generation != generation {
            return None;
        }
        s.dropped[reason.index()] += 1;
        let dropped = s.dropped_total();
        let over = s.wanted >= DROP_WARN_MIN_WANTED && dropped as f64 > DROP_WARN_RATIO * s.wanted as f64;
        if !over || s.warned_at.is_some_and(|at| at.elapsed() < DROP_WARN_EVERY) {
            return None;
        }
        s.warned_at = Some(Instant::now());
        Some(snapshot(&s))
    }

    /// The effective share since the last reset.
    pub(crate) fn share(&self) -> ShareSnapshot {
        snapshot(&self.lock_share())
    }

    /// The shadow answered but the live answer never came (the client went away).
    pub(crate) fn record_unpaired(&self) {
        self.lock().unpaired += 1;
    }

    /// Records one mirrored pair. The bodies are compared before the lock is taken.
    pub(crate) fn record(&self, request_id: &str, live: &Answer, shadow: &Answer) {
        let tolerance = self.tolerance();
        let both_ok = live.status == 200 && shadow.status == 200;
        let diff = if both_ok { Some(compare_bodies(&live.body, &shadow.body, tolerance)) } else { None };
        let mut t = self.lock();
        t.pairs += 1;
        let _ = t.live_latency_us.record(micros(live.latency));
        let _ = t.shadow_latency_us.record(micros(shadow.latency));
        t.paired.live_errors += u64::from(is_error(live.status));
        t.paired.shadow_errors += u64::from(is_error(shadow.status));
        t.paired.live_latency.push(live.latency.as_secs_f64());
        t.paired.shadow_latency.push(shadow.latency.as_secs_f64());
        let reason = match (&diff, live.status == 200, shadow.status == 200) {
            (Some(d), _, _) => {
                t.compared += 1;
                t.numbers += d.numbers;
                t.sum_abs_diff += d.sum_abs_diff;
                t.max_abs_diff = t.max_abs_diff.max(d.max_abs_diff);
                if d.agree {
                    t.agreed += 1;
                    None
                } else if d.shape_mismatch {
                    t.shape_mismatches += 1;
                    Some(format!("shape mismatch at {}", d.first_difference.as_deref().unwrap_or("$")))
                } else {
                    t.value_disagreements += 1;
                    Some(format!("values differ at {}", d.first_difference.as_deref().unwrap_or("$")))
                }
            }
            (None, true, false) => {
                t.shadow_errors += 1;
                Some(format!("shadow answered {}", shadow.status))
            }
            (None, false, true) => {
                t.live_errors += 1;
                Some(format!("live answered {}", live.status))
            }
            (None, _, _) => {
                t.both_errors += 1;
                (live.status != shadow.status)
                    .then(|| format!("both failed: live {}, shadow {}", live.status, shadow.status))
            }
        };
        if let Some(reason) = reason {
            if t.samples.len() == MAX_SAMPLES {
                t.samples.pop_front();
            }
            t.samples.push_back(Sample {
                request_id: request_id.to_string(),
                reason,
                live_status: live.status,
                shadow_status: shadow.status,
                live_body: clip(&live.body),
                shadow_body: clip(&shadow.body),
                max_abs_diff: diff.as_ref().map_or(0.0, |d: &PairDiff| d.max_abs_diff),
            });
        }
    }

    /// The pairs since the last reset, for a rollout's evidence gates.
    pub(crate) fn paired(&self) -> PairedEvidence {
        let t = self.lock();
        PairedEvidence {
            pairs: t.pairs,
            live_errors: t.paired.live_errors,
            shadow_errors: t.paired.shadow_errors,
            live_latency: t.paired.live_latency.values().to_vec(),
            shadow_latency: t.paired.shadow_latency.values().to_vec(),
        }
    }

    /// The numbers exported as metrics.
    pub(crate) fn gauges(&self) -> MirrorGauges {
        let t = self.lock();
        MirrorGauges {
            pairs: t.pairs,
            compared: t.compared,
            agreement_ratio: ratio(t.agreed, t.compared),
            max_abs_diff: t.max_abs_diff,
            mean_abs_diff: if t.numbers == 0 { 0.0 } else { t.sum_abs_diff / t.numbers as f64 },
            shadow_errors: t.shadow_errors,
        }
    }

    /// The whole report, as `GET /v1/deployments/{name}/comparison` answers it.
    pub(crate) fn view(&self) -> ReportView {
        let dropped = self.share().dropped;
        let t = self.lock();
        let pct = |h: &Histogram<u64>| {
            let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            (!h.is_empty()).then(|| LatencyView {
                p50: ms(0.50),
                p90: ms(0.90),
                p99: ms(0.99),
                max: h.max() as f64 / 1000.0,
            })
        };
        ReportView {
            since: humantime::format_rfc3339_seconds(t.since).to_string(),
            tolerance: t.tolerance,
            pairs: t.pairs,
            compared: t.compared,
            agreed: t.agreed,
            agreement_ratio: (t.compared > 0).then(|| ratio(t.agreed, t.compared)),
            value_disagreements: t.value_disagreements,
            shape_mismatches: t.shape_mismatches,
            max_abs_diff: t.max_abs_diff,
            mean_abs_diff: if t.numbers == 0 { 0.0 } else { t.sum_abs_diff / t.numbers as f64 },
            numbers_compared: t.numbers,
            shadow_errors: t.shadow_errors,
            live_errors: t.live_errors,
            both_errors: t.both_errors,
            unpaired: t.unpaired,
            dropped,
            live_latency_ms: pct(&t.live_latency_us),
            shadow_latency_ms: pct(&t.shadow_latency_us),
            disagreement_samples: t.samples.iter().cloned().collect(),
        }
    }
}

fn snapshot(s: &Share) -> ShareSnapshot {
    ShareSnapshot {
        wanted: s.wanted,
        copied: s.copied,
        dropped: s.dropped_total(),
        dropped_by_reason: DropReason::ALL.iter().map(|r| (*r, s.dropped[r.index()])).collect(),
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, 3_600_000_000)
}

fn clip(body: &Bytes) -> String {
    let text = String::from_utf8_lossy(body);
    if text.chars().count() <= SAMPLE_BODY_CHARS {
        text.into_owned()
    } else {
        format!("{}…", text.chars().take(SAMPLE_BODY_CHARS).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer { status, body: Bytes::from(body.to_string()), latency: Duration::from_micros(100) }
    }

    #[test]
    fn totals_and_samples() {
        let r = MirrorReport::new(Tolerance::default());
        r.record("a", &answer(200, "[1.0]"), &answer(200, "[1.0]"));
        r.record("b", &answer(200, "[1.0]"), &answer(200, "[3.0]"));
        r.record("c", &answer(200, "[1.0]"), &answer(424, "{}"));
        r.record("d", &answer(200, "[1.0]"), &answer(200, "[1.0, 2.0]"));
        let window = r.wanted();
        assert!(r.dropped(window, DropReason::QueueFull).is_none(), "no warning on the first drop");
        let v = serde_json::to_value(r.view()).unwrap();
        assert_eq!(v["pairs"], 4);
        assert_eq!(v["compared"], 3);
        assert_eq!(v["agreed"], 1);
        assert_eq!(v["value_disagreements"], 1);
        assert_eq!(v["shape_mismatches"], 1);
        assert_eq!(v["shadow_errors"], 1);
        assert_eq!(v["dropped"], 1);
        assert_eq!(v["max_abs_diff"], 2.0);
        assert_eq!(v["disagreement_samples"].as_array().unwrap().len(), 3);
        assert_eq!(v["disagreement_samples"][0]["request_id"], "b");
        r.reset(Some(Tolerance { atol: 5.0, rtol: 0.0 }));
        r.record("e", &answer(200, "[1.0]"), &answer(200, "[3.0]"));
        assert_eq!(serde_json::to_value(r.view()).unwrap()["agreed"], 1, "a wider tolerance after reset");
        assert_eq!(serde_json::to_value(r.view()).unwrap()["pairs"], 1);
        assert_eq!(serde_json::to_value(r.view()).unwrap()["dropped"], 0, "reset starts the share over");
    }

    #[test]
    fn pairs_are_kept_as_evidence_with_the_rollouts_error_rule_and_both_latencies() {
        let r = MirrorReport::new(Tolerance::default());
        let timed = |status: u16, ms: u64| Answer {
            status,
            body: Bytes::from_static(b"[1.0]"),
            latency: Duration::from_millis(ms),
        };
        r.record("a", &timed(200, 2), &timed(200, 3));
        r.record("b", &timed(200, 2), &timed(503, 9));
        r.record("c", &timed(408, 5), &timed(200, 3));
        r.record("d", &timed(200, 2), &timed(404, 1)); // a 404 is no error for a rollout
        let p = r.paired();
        assert_eq!((p.pairs, p.live_errors, p.shadow_errors), (4, 1, 1));
        assert_eq!(p.live_latency, vec![0.002, 0.002, 0.005, 0.002]);
        assert_eq!(p.shadow_latency, vec![0.003, 0.009, 0.003, 0.001]);
        for i in 0..(PAIRED_SAMPLE as u64 * 3) {
            r.record(&i.to_string(), &timed(200, 2), &timed(200, 4));
        }
        let p = r.paired();
        assert_eq!((p.live_latency.len(), p.shadow_latency.len()), (PAIRED_SAMPLE, PAIRED_SAMPLE), "bounded");
        r.reset(None);
        assert_eq!(r.paired(), PairedEvidence::default(), "a reset starts the evidence over");
    }

    #[test]
    fn share_counts_by_window_and_warns_rate_limited() {
        let r = MirrorReport::new(Tolerance::default());
        let mut warnings = Vec::new();
        for i in 0..100 {
            let w = r.wanted();
            if i % 5 == 0 {
                warnings.extend(r.dropped(w, if i % 10 == 0 { DropReason::CpuBudget } else { DropReason::QueueFull }));
            } else {
                r.copied(w);
            }
        }
        let s = r.share();
        assert_eq!((s.wanted, s.copied, s.dropped, s.in_flight()), (100, 80, 20, 0));
        assert_eq!(warnings.len(), 1, "one warning per window and period: {warnings:?}");
        assert!(warnings[0].wanted >= DROP_WARN_MIN_WANTED);
        assert_eq!(s.reasons_text(), "queue_full 10, cpu_budget 10", "ties in report order");
        let j = serde_json::to_value(s.view(10)).unwrap();
        assert_eq!(j["dropped_by_reason"]["cpu_budget"], 10);
        assert_eq!(j["dropped_by_reason"]["no_idle_instance"], 0);
        assert_eq!(j["copied_ratio"], 0.8);
        assert!((j["effective_percent"].as_f64().unwrap() - 8.0).abs() < 1e-9);

        // A copy wanted before a reset settles into no window: the new one stays consistent.
        let old = r.wanted();
        r.reset(None);
        r.copied(old);
        assert!(r.dropped(old, DropReason::NotReady).is_none());
        let fresh = r.wanted();
        let s = r.share();
        assert_eq!((s.wanted, s.copied, s.dropped, s.in_flight()), (1, 0, 0, 1));
        r.copied(fresh);
        assert_eq!(r.share().in_flight(), 0);
        assert_eq!(MirrorReport::new(Tolerance::default()).share().view(10).copied_ratio, None);
    }

    #[test]
    fn samples_are_bounded() {
        let r = MirrorReport::new(Tolerance::default());
        for i in 0..50 {
            r.record(&i.to_string(), &answer(200, "[1]"), &answer(200, "[2]"));
        }
        let v = serde_json::to_value(r.view()).unwrap();
        assert_eq!(v["disagreement_samples"].as_array().unwrap().len(), MAX_SAMPLES);
        assert_eq!(v["disagreement_samples"][MAX_SAMPLES - 1]["request_id"], "49");
    }
}
