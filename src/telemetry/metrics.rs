//! Prometheus metrics with the names of CONTRACT §7.
//!
//! Label lookups in a metric family take a lock and hash the labels, so each deployment keeps
//! handles to its hot series (successful live requests, durations, in-flight gauge); only rarer
//! series (errors, mirror) go through the family lookup per request.
//!
//! The series belong to a deployment's *name*, not to one version of it: replacing a
//! deployment's model creates a second [`DeploymentMetrics`] for the same name while the old
//! version drains, and both hold the same series. So each name counts the handle sets that hold
//! it, and its series are removed only when the last one is released (the name was deleted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::sharded::{ShardedCounter, ShardedHistogram};

/// Whether a request was answered for the client or copied to a shadow deployment.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Role {
    #[allow(non_camel_case_types)]
    live,
    #[allow(non_camel_case_types)]
    mirror,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::live => "live",
            Role::mirror => "mirror",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    deployment: String,
    role: Role,
    code: u16,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    deployment: String,
    role: Role,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeploymentLabel {
    deployment: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RollbackLabels {
    deployment: String,
    gate: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GateLabels {
    deployment: String,
    gate: String,
    outcome: String,
    endpoint: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    deployment: String,
    state: &'static str,
    endpoint: String,
}

/// Labels of `switchyard_data_collector_records`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CollectedLabels {
    deployment: String,
    outcome: &'static str,
    endpoint: String,
}

impl DeploymentLabel {
    fn request(&self, role: Role, code: u16) -> RequestLabels {
        RequestLabels { deployment: self.deployment.clone(), role, code, endpoint: self.endpoint.clone() }
    }

    fn duration(&self, role: Role) -> DurationLabels {
        DurationLabels { deployment: self.deployment.clone(), role, endpoint: self.endpoint.clone() }
    }

    fn instances(&self, state: &'static str) -> InstanceLabels {
        InstanceLabels { deployment: self.deployment.clone(), state, endpoint: self.endpoint.clone() }
    }

    fn collected(&self, outcome: &'static str) -> CollectedLabels {
        CollectedLabels { deployment: self.deployment.clone(), outcome, endpoint: self.endpoint.clone() }
    }
}

type HistogramFamily<L> = Family<L, ShardedHistogram, fn() -> ShardedHistogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn duration_histogram() -> ShardedHistogram {
    // 20 µs .. ~21 s: microsecond models and slow shadows on one scale.
    ShardedHistogram::new(exponential_buckets(0.00002, 2.0, 21))
}

/// The comparison report's numbers exported as metrics (`switchyard_mirror_*`): plain numbers,
/// so telemetry needs nothing from the mirror module.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorGauges {
    pub pairs: u64,
    pub compared: u64,
    pub agreement_ratio: f64,
    pub max_abs_diff: f64,
    pub mean_abs_diff: f64,
    pub shadow_errors: u64,
}

/// The process's metric registry and families.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, ShardedCounter>,
    durations: HistogramFamily<DurationLabels>,
    mirror_dropped: Family<DeploymentLabel, Counter>,
    inflight: Family<DeploymentLabel, Gauge>,
    instances: Family<InstanceLabels, Gauge>,
    collected: Family<CollectedLabels, Gauge>,
    mirror: MirrorFamilies,
    process: ProcessGauges,
    /// Live and mirror error answers (5xx, 424, 408) per deployment name, for windowed reads
    /// (rollout gates); not exported (`switchyard_requests_total` has them by code).
    errors: Mutex<HashMap<DeploymentLabel, [ShardedCounter; 2]>>,
    /// Rollouts rolled back, by target deployment and failed gate (kept as history).
    rollbacks: Family<RollbackLabels, Counter>,
    gate_outcomes: Family<GateLabels, Counter>,
    /// Rows per batched run and each request's wait for its batch (issue 29), for batching
    /// deployments only.
    batch_size: Family<DeploymentLabel, Histogram, fn() -> Histogram>,
    batch_delay: HistogramFamily<DeploymentLabel>,
    /// Unreleased [`DeploymentMetrics`] per deployment name. Creating handles and removing a
    /// name's series both happen under this lock, so a version created while the last one of
    /// the same name is released either keeps the series or gets fresh ones, never detached
    /// handles.
    holders: Mutex<HashMap<DeploymentLabel, usize>>,
}

/// The comparison report's numbers (`switchyard_mirror_*`), read from the reports at scrape.
#[derive(Default)]
struct MirrorFamilies {
    agreement_ratio: Family<DeploymentLabel, FloatGauge>,
    pairs: Family<DeploymentLabel, Gauge>,
    compared: Family<DeploymentLabel, Gauge>,
    max_abs_diff: Family<DeploymentLabel, FloatGauge>,
    mean_abs_diff: Family<DeploymentLabel, FloatGauge>,
    shadow_errors: Family<DeploymentLabel, Gauge>,
}

/// Process CPU and memory from sysinfo (`switchyard_process_*`), refreshed at scrape.
#[derive(Default)]
struct ProcessGauges {
    cpu_percent: FloatGauge,
    resident_bytes: Gauge,
    virtual_bytes: Gauge,
    /// Kept between scrapes: CPU usage is measured over the time since the last refresh.
    system: Mutex<Option<sysinfo::System>>,
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, ShardedCounter>::default();
        let durations: HistogramFamily<DurationLabels> = Family::new_with_constructor(duration_histogram);
        let mirror_dropped = Family::<DeploymentLabel, Counter>::default();
        let inflight = Family::<DeploymentLabel, Gauge>::default();
        let instances = Family::<InstanceLabels, Gauge>::default();
        registry.register("switchyard_requests", "Scoring requests by deployment, role and status", requests.clone());
        registry.register(
            "switchyard_request_duration_seconds",
            "Time spent in the deployment, admission to answer",
            durations.clone(),
        );
        registry.register(
            "switchyard_mirror_dropped",
            "Mirror copies dropped because the shadow deployment was full",
            mirror_dropped.clone(),
        );
        registry.register("switchyard_inflight_requests", "Requests admitted and not yet answered", inflight.clone());
        registry.register("switchyard_instances", "Instances by state", instances.clone());
        let collected = Family::<CollectedLabels, Gauge>::default();
        registry.register(
            "switchyard_data_collector_records",
            "Records of the deployment's data collector since it started: written, dropped (the writer behind) or failed (the disk refused them)",
            collected.clone(),
        );
        let mirror = MirrorFamilies::default();
        registry.register(
            "switchyard_mirror_agreement_ratio",
            "Share of compared mirror pairs whose answers agree (since the mirror rule was set)",
            mirror.agreement_ratio.clone(),
        );
        registry.register(
            "switchyard_mirror_pairs",
            "Mirror pairs recorded since the rule was set",
            mirror.pairs.clone(),
        );
        registry.register(
            "switchyard_mirror_compared_pairs",
            "Mirror pairs where both answered 200 and were compared",
            mirror.compared.clone(),
        );
        registry.register(
            "switchyard_mirror_max_abs_diff",
            "Largest absolute difference between paired numbers",
            mirror.max_abs_diff.clone(),
        );
        registry.register(
            "switchyard_mirror_mean_abs_diff",
            "Mean absolute difference between paired numbers",
            mirror.mean_abs_diff.clone(),
        );
        registry.register(
            "switchyard_mirror_shadow_errors",
            "Mirror pairs where live answered 200 and the shadow did not",
            mirror.shadow_errors.clone(),
        );
        let rollbacks = Family::<RollbackLabels, Counter>::default();
        registry.register(
            "switchyard_rollout_rollbacks",
            "Rollouts rolled back automatically, by target deployment and failed gate",
            rollbacks.clone(),
        );
        let gate_outcomes = Family::<GateLabels, Counter>::default();
        registry.register(
            "switchyard_rollout_gate_outcomes",
            "Rollout evidence-gate judgements, by target deployment, gate and outcome (pass, fail, inconclusive)",
            gate_outcomes.clone(),
        );
        let batch_size: Family<DeploymentLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 11)));
        registry.register(
            "switchyard_batch_size",
            "Rows per batched run of a batching deployment (a request alone is a run of its own rows)",
            batch_size.clone(),
        );
        let batch_delay: HistogramFamily<DeploymentLabel> =
            Family::new_with_constructor(|| ShardedHistogram::new(exponential_buckets(0.000_001, 2.0, 18)));
        registry.register(
            "switchyard_batch_queue_delay_seconds",
            "Time a request of a batching deployment waited from queueing to its batch's run",
            batch_delay.clone(),
        );
        let process = ProcessGauges::default();
        registry.register(
            "switchyard_process_cpu_usage_percent",
            "CPU use of this process (100 = one core)",
            process.cpu_percent.clone(),
        );
        registry.register(
            "switchyard_process_resident_memory_bytes",
            "Resident memory of this process",
            process.resident_bytes.clone(),
        );
        registry.register(
            "switchyard_process_virtual_memory_bytes",
            "Virtual memory of this process",
            process.virtual_bytes.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            durations,
            mirror_dropped,
            inflight,
            instances,
            collected,
            mirror,
            process,
            rollbacks,
            gate_outcomes,
            batch_size,
            batch_delay,
            errors: Mutex::new(HashMap::new()),
            holders: Mutex::new(HashMap::new()),
        })
    }

    fn holders(&self) -> std::sync::MutexGuard<'_, HashMap<DeploymentLabel, usize>> {
        // The map is only ever changed by one `+= 1`, `-= 1` or remove: a panic cannot leave
        // it half-changed, so a poisoned lock is still usable.
        self.holders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles for one deployment's series (endpoint `endpoint`, name `name`), shared with
    /// every other version of the same name in that endpoint. The series stay until every
    /// handle set of the name is released.
    pub fn for_deployment(self: &Arc<Self>, endpoint: &str, name: &str) -> DeploymentMetrics {
        let dep = DeploymentLabel { deployment: name.to_string(), endpoint: endpoint.to_string() };
        let mut holders = self.holders();
        *holders.entry(dep.clone()).or_insert(0) += 1;
        let live_ok = self.requests.get_or_create(&dep.request(Role::live, 200)).clone();
        let live_duration = self.durations.get_or_create(&dep.duration(Role::live)).clone();
        let mirror_duration = self.durations.get_or_create(&dep.duration(Role::mirror)).clone();
        let inflight = self.inflight.get_or_create(&dep).clone();
        let mirror_dropped = self.mirror_dropped.get_or_create(&dep).clone();
        DeploymentMetrics {
            root: Arc::clone(self),
            errors: self.errors_of(&dep),
            key: dep,
            live_ok,
            live_duration,
            mirror_duration,
            inflight,
            mirror_dropped,
            released: AtomicBool::new(false),
            latencies: Default::default(),
        }
    }

    /// The error counters of a name, shared by its versions like its series (created on
    /// first use; kept for the process's life, a few bytes per name ever deployed).
    fn errors_of(&self, dep: &DeploymentLabel) -> [ShardedCounter; 2] {
        let mut map = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(dep.clone()).or_default().clone()
    }

    /// Gives back one handle set of `dep`; the last one out removes the name's series.
    fn release(&self, dep: &DeploymentLabel) {
        let mut holders = self.holders();
        let Some(n) = holders.get_mut(dep) else { return };
        *n -= 1;
        if *n == 0 {
            holders.remove(dep);
            self.remove_series(dep);
        }
    }

    /// Forgets every series of a deployment name that no version holds any more.
    fn remove_series(&self, dep: &DeploymentLabel) {
        self.inflight.remove(dep);
        self.mirror_dropped.remove(dep);
        for role in [Role::live, Role::mirror] {
            self.durations.remove(&dep.duration(role));
        }
        for state in INSTANCE_STATES {
            self.instances.remove(&dep.instances(state));
        }
        for outcome in COLLECTED_OUTCOMES {
            self.collected.remove(&dep.collected(outcome));
        }
        self.batch_size.remove(dep);
        self.batch_delay.remove(dep);
        let m = &self.mirror;
        m.agreement_ratio.remove(dep);
        m.pairs.remove(dep);
        m.compared.remove(dep);
        m.max_abs_diff.remove(dep);
        m.mean_abs_diff.remove(dep);
        m.shadow_errors.remove(dep);
        // Request counters are kept: a counter that vanishes looks like a reset to Prometheus,
        // and the totals of a deleted deployment are still history worth querying.
    }

    /// Counts a rollout to `deployment` of `endpoint` rolled back by `gate`.
    pub fn rollout_rolled_back(&self, endpoint: &str, deployment: &str, gate: &str) {
        self.rollbacks
            .get_or_create(&RollbackLabels {
                deployment: deployment.to_string(),
                gate: gate.to_string(),
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// Counts one evidence-gate judgement of a rollout to `deployment` of `endpoint`.
    pub fn rollout_gate_outcome(&self, endpoint: &str, deployment: &str, gate: &str, outcome: &str) {
        self.gate_outcomes
            .get_or_create(&GateLabels {
                deployment: deployment.to_string(),
                gate: gate.to_string(),
                outcome: outcome.to_string(),
                endpoint: endpoint.to_string(),
            })
            .inc();
    }

    /// Reads this process's CPU and memory use.
    pub fn refresh_process(&self) {
        let Ok(pid) = sysinfo::get_current_pid() else { return };
        let mut guard = self.process.system.lock().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            *guard = sysinfo::System::new().ok();
        }
        let Some(system) = guard.as_mut() else { return };
        system.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            false,
            sysinfo::ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        if let Some(p) = system.process(pid) {
            self.process.cpu_percent.set(p.cpu_usage() as f64);
            self.process.resident_bytes.set(p.memory() as i64);
            self.process.virtual_bytes.set(p.virtual_memory() as i64);
        }
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// One role's answered requests and their durations.
#[derive(Debug, Clone)]
pub struct RoleSummary {
    /// Answered requests, whatever their status.
    pub requests: u64,
    /// Their total time in seconds.
    pub seconds_sum: f64,
    /// (upper bound in seconds, requests in that bucket); the last bound is `f64::MAX` (+Inf).
    pub buckets: Vec<(f64, u64)>,
}

/// What [`DeploymentMetrics::summary`] reads.
#[derive(Debug, Clone)]
pub struct DeploymentSummary {
    pub live: RoleSummary,
    /// Live requests answered 200 (the others are errors).
    pub live_ok: u64,
    pub mirror: RoleSummary,
}

/// The outcomes of `switchyard_data_collector_records`.
const COLLECTED_OUTCOMES: [&str; 3] = ["written", "dropped", "failed"];

/// A batching deployment's batch series: `switchyard_batch_size` and
/// `switchyard_batch_queue_delay_seconds`.
#[derive(Clone)]
pub(crate) struct BatchMetrics {
    size: Histogram,
    delay: ShardedHistogram,
}

impl BatchMetrics {
    /// Records one batched run of `rows` rows and each of its requests' wait.
    pub(crate) fn observe_batch(&self, rows: usize, delays: impl Iterator<Item = std::time::Duration>) {
        self.size.observe(rows as f64);
        for d in delays {
            self.delay.observe(d.as_secs_f64());
        }
    }
}

/// The instance states of `switchyard_instances`.
pub(crate) const INSTANCE_STATES: [&str; 5] = ["ready", "loading", "draining", "failed", "restarting"];

/// One deployment's metric handles.
pub struct DeploymentMetrics {
    /// The endpoint and deployment name the series are labelled with.
    key: DeploymentLabel,
    root: Arc<Metrics>,
    /// Error answers, `[live, mirror]` (see [`super::window::is_error`]).
    errors: [ShardedCounter; 2],
    live_ok: ShardedCounter,
    live_duration: ShardedHistogram,
    mirror_duration: ShardedHistogram,
    /// Admitted and unanswered requests (set when metrics are read).
    inflight: Gauge,
    /// Mirror copies dropped.
    pub mirror_dropped: Counter,
    /// Whether [`Self::release`] ran (it runs at most once: on retirement or on drop).
    released: AtomicBool,
    /// Per-request latencies, `[live, mirror]`, recorded only while a rollout's latency gate
    /// watches this deployment ([`super::samples`]).
    latencies: [super::samples::LatencyRing; 2],
}

impl Drop for DeploymentMetrics {
    /// A version that never served (a failed or superseded load) is never retired; dropping it
    /// gives its hold back, so a later delete of the name still removes the series.
    fn drop(&mut self) {
        self.release();
    }
}

impl DeploymentMetrics {
    /// This version leaves the routing table (deleted, or replaced by a new version). The
    /// series are removed only if no other version of the name holds them, so replacing a
    /// model keeps the name's series (and their counts) for the new version. Idempotent.
    pub fn release(&self) {
        if !self.released.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.root.release(&self.key);
        }
    }

    /// Records one answered request.
    pub fn observe(&self, role: Role, code: u16, seconds: f64) {
        match (role, code) {
            (Role::live, 200) => self.live_ok.inc(),
            _ => {
                // Off the common path (a non-200 answer already looks its series up): counted
                // again for windowed reads.
                if super::window::is_error(code) {
                    self.errors[role as usize].inc();
                }
                self.root.requests.get_or_create(&self.key.request(role, code)).inc();
            }
        };
        match role {
            Role::live => self.live_duration.observe(seconds),
            Role::mirror => self.mirror_duration.observe(seconds),
        }
        // A refusal (429) never ran: its zero duration is no latency of the deployment.
        if code != 429 {
            self.latencies[role as usize].record(seconds);
        }
    }

    /// The batch series of this deployment (created on first call: only batching
    /// deployments have them).
    pub(crate) fn batches(&self) -> BatchMetrics {
        BatchMetrics {
            size: self.root.batch_size.get_or_create(&self.key).clone(),
            delay: self.root.batch_delay.get_or_create(&self.key).clone(),
        }
    }

    /// The per-request latency ring of one role (armed by a rollout's latency gate).
    pub(crate) fn latencies(&self, role: Role) -> &super::samples::LatencyRing {
        &self.latencies[role as usize]
    }

    /// The cumulative counts of one role now, for windows (`Reading::since`).
    pub fn reading(&self, role: Role) -> super::Reading {
        let histogram = match role {
            Role::live => &self.live_duration,
            Role::mirror => &self.mirror_duration,
        };
        let (_, requests, buckets) = histogram.snapshot();
        super::Reading { requests, errors: self.errors[role as usize].get(), buckets }
    }

    /// Sets the in-flight gauge (read from the admission counter when metrics are rendered,
    /// so requests pay no gauge update).
    pub fn set_inflight(&self, n: usize) {
        self.inflight.set(n as i64);
    }

    /// Sets the mirror comparison gauges (only for deployments that were ever a shadow).
    pub fn set_mirror(&self, g: &MirrorGauges) {
        if g.pairs == 0 {
            return;
        }
        let dep = &self.key;
        let m = &self.root.mirror;
        m.agreement_ratio.get_or_create(dep).set(g.agreement_ratio);
        m.pairs.get_or_create(dep).set(g.pairs as i64);
        m.compared.get_or_create(dep).set(g.compared as i64);
        m.max_abs_diff.get_or_create(dep).set(g.max_abs_diff);
        m.mean_abs_diff.get_or_create(dep).set(g.mean_abs_diff);
        m.shadow_errors.get_or_create(dep).set(g.shadow_errors as i64);
    }

    /// The counts behind this deployment's request and duration series, for the admin API's
    /// JSON view (`GET /v1/metrics`): cumulative since the name first served, so a reader
    /// takes rates and quantiles from the difference between two reads.
    pub fn summary(&self) -> DeploymentSummary {
        let role = |h: &ShardedHistogram| {
            let (seconds_sum, requests, buckets) = h.snapshot();
            RoleSummary { requests, seconds_sum, buckets }
        };
        DeploymentSummary {
            live: role(&self.live_duration),
            live_ok: self.live_ok.get(),
            mirror: role(&self.mirror_duration),
        }
    }

    /// Sets the data collector's record counts (written, dropped, failed), read at a scrape.
    pub(crate) fn set_collected(&self, counts: [u64; 3]) {
        for (outcome, n) in COLLECTED_OUTCOMES.into_iter().zip(counts) {
            self.root.collected.get_or_create(&self.key.collected(outcome)).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Sets the instance gauges.
    /// `counts` are ready, loading, draining, failed and restarting, in [`INSTANCE_STATES`] order.
    pub fn set_instances(&self, counts: [usize; 5]) {
        for (state, n) in INSTANCE_STATES.into_iter().zip(counts) {
            self.root.instances.get_or_create(&self.key.instances(state)).set(n as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_no_latency_sample() {
        let d = Metrics::new().for_deployment("ep", "blue");
        d.latencies(Role::live).arm(true);
        d.observe(Role::live, 429, 0.0);
        assert_eq!(d.latencies(Role::live).cursor(), 0, "a 429 never ran");
        d.observe(Role::live, 200, 0.002);
        d.observe(Role::live, 500, 0.003);
        assert_eq!(d.latencies(Role::live).cursor(), 2);
    }

    fn has_series(m: &Metrics, family: &str, name: &str) -> bool {
        m.render().lines().any(|l| l.starts_with(family) && l.contains(&format!("deployment=\"{name}\"")))
    }

    #[test]
    fn a_replaced_version_leaves_the_names_series_to_the_new_one() {
        let m = Metrics::new();
        let old = m.for_deployment("ep", "blue");
        let new = m.for_deployment("ep", "blue");
        new.observe(Role::live, 200, 0.01);
        old.release();
        drop(old);
        new.observe(Role::live, 200, 0.01);
        for family in
            ["switchyard_request_duration_seconds", "switchyard_inflight_requests", "switchyard_mirror_dropped"]
        {
            assert!(has_series(&m, family, "blue"), "{family} vanished with the replaced version:\n{}", m.render());
        }
        assert!(m.render().contains(
            "switchyard_request_duration_seconds_count{deployment=\"blue\",role=\"live\",endpoint=\"ep\"} 2"
        ));
        new.release();
        assert!(!has_series(&m, "switchyard_inflight_requests", "blue"), "the last version out removes the series");
        assert!(!has_series(&m, "switchyard_request_duration_seconds", "blue"));
    }

    #[test]
    fn a_version_that_never_served_gives_its_hold_back_on_drop() {
        let m = Metrics::new();
        let serving = m.for_deployment("ep", "green");
        let failed_replacement = m.for_deployment("ep", "green");
        drop(failed_replacement);
        assert!(has_series(&m, "switchyard_inflight_requests", "green"));
        serving.release();
        serving.release(); // idempotent: a second release does not take another holder's share
        assert!(!has_series(&m, "switchyard_inflight_requests", "green"));
        let again = m.for_deployment("ep", "green");
        assert!(has_series(&m, "switchyard_inflight_requests", "green"), "a re-created name gets fresh series");
        drop(again);
    }
}
