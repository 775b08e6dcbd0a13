//! Deployments: a named worker pool plus its admission limit, lifecycle state, log and metrics.
//! This is the hot-path object the routing snapshot points at; the control plane keeps the
//! deployment's spec beside it.

pub mod background;
pub mod pool;
pub mod state;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::hooks::{self, HookResponse, InitContext};
use crate::mirror::{MirrorReport, Tolerance};
use crate::spec::{DeploymentSpec, HookKind};
use crate::telemetry::{DeploymentMetrics, LogRing, Metrics, Role};

pub use pool::{InstanceCounts, InstancePool, RunError};
pub use state::{ProvisioningState, StateCell};

/// Why a deployment did not answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScoreError {
    /// The admission cap is reached (HTTP 429).
    Overloaded,
    /// No instance is ready (HTTP 503).
    NotReady,
    /// The hook refused the input (HTTP 400).
    BadInput(String),
    /// The hook or model failed (HTTP 424).
    ModelFailed(String),
    /// The run took longer than `request_timeout_ms` from admission (HTTP 408).
    Timeout(Duration),
}

impl ScoreError {
    /// The HTTP status this error is answered with (CONTRACT §6).
    pub fn status(&self) -> u16 {
        match self {
            ScoreError::Overloaded => 429,
            ScoreError::NotReady => 503,
            ScoreError::BadInput(_) => 400,
            ScoreError::ModelFailed(_) => 424,
            ScoreError::Timeout(_) => 408,
        }
    }
}

/// One deployment as the front door sees it.
pub struct Deployment {
    /// The deployment's name.
    pub name: String,
    /// The instances.
    pub pool: Arc<InstancePool>,
    /// Provisioning state and last error.
    pub state: StateCell,
    /// Recent log lines (init output, one access line per request).
    pub logs: Arc<LogRing>,
    /// How this deployment's answers compare with live ones while it is a shadow.
    pub mirror_report: MirrorReport,
    /// Metric handles.
    pub metrics: DeploymentMetrics,
    /// Live requests admitted and not yet answered.
    inflight: AtomicUsize,
    /// Mirror copies admitted and not yet finished: the shadow's own bounded queue, apart
    /// from live admission so that copies can never make live requests wait or fail.
    mirror_inflight: AtomicUsize,
    /// Admission cap: 2 × max_concurrent_requests_per_instance × instance_count.
    capacity: AtomicUsize,
    /// `request_timeout_ms`, measured from admission.
    timeout_ms: AtomicU64,
    /// How long the last load of instances (create, replace, scale-up) took, in µs.
    pub load_micros: AtomicU64,
    /// Rate limit of the drop log lines: copies dropped since the last line, and when (ms
    /// since `born`) that line was written.
    drops_unlogged: AtomicU64,
    drop_logged_at_ms: AtomicU64,
    born: Instant,
}

impl Deployment {
    /// A deployment with an empty pool; the control plane loads its instances.
    pub fn new(
        spec: &DeploymentSpec,
        kind: HookKind,
        metrics: &Arc<Metrics>,
        tolerance: Tolerance,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let logs = Arc::new(LogRing::default());
        let ctx = InitContext {
            deployment: spec.name.clone(),
            environment_variables: spec.environment_variables.clone(),
            intra_threads: 1,
            logs: Arc::clone(&logs),
            request_timeout_ms: spec.request_settings.request_timeout_ms,
            python_env: hooks::python::EnvSlot::default(),
            next_instance: Arc::default(),
        };
        let factory_kind = kind.clone();
        let init_log = Arc::clone(&logs);
        let pool = InstancePool::new(
            Arc::new(move || {
                let hook = hooks::init(&factory_kind, &ctx)?;
                let about = hook.describe();
                if !about.is_empty() {
                    init_log.push(&about);
                    tracing::info!(deployment = %ctx.deployment, "{about}");
                }
                Ok(hook)
            }),
            runtime,
        );
        if matches!(kind, HookKind::Python(_)) {
            // A run in a worker process is a pipe round trip at best and may hang: never on
            // the request's thread, always where a deadline can stop it.
            pool.queue_every_run();
        }
        let deployment = Arc::new(Self {
            name: spec.name.clone(),
            pool,
            state: StateCell::new(ProvisioningState::Creating),
            logs,
            mirror_report: MirrorReport::new(tolerance),
            metrics: metrics.for_deployment(&spec.name),
            inflight: AtomicUsize::new(0),
            mirror_inflight: AtomicUsize::new(0),
            capacity: AtomicUsize::new(0),
            timeout_ms: AtomicU64::new(0),
            load_micros: AtomicU64::new(0),
            drops_unlogged: AtomicU64::new(0),
            drop_logged_at_ms: AtomicU64::new(0),
            born: Instant::now(),
        });
        deployment.apply_settings(spec);
        deployment.logs.push(format!("deployment {} created: {}", spec.name, hooks::describe(&kind)));
        deployment
    }

    /// Takes the admission cap and timeout from the spec (after create, scale or update).
    pub fn apply_settings(&self, spec: &DeploymentSpec) {
        let per_instance = spec.request_settings.max_concurrent_requests_per_instance as usize;
        self.capacity.store(2 * per_instance * spec.instance_count as usize, Ordering::Relaxed);
        self.timeout_ms.store(spec.request_settings.request_timeout_ms, Ordering::Relaxed);
    }

    /// Requests admitted and not yet answered.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Mirror copies admitted and not finished yet (queued or running).
    pub fn queued_copies(&self) -> usize {
        self.mirror_inflight.load(Ordering::Relaxed)
    }

    /// Counts a mirror copy that was dropped because this shadow was full or busy. Drops come
    /// in floods when a shadow falls behind, so the log gets at most one line per second with
    /// the count since the last one (the metric and the report count every drop).
    pub fn drop_copy(&self, request_id: &str, why: &str) {
        self.metrics.mirror_dropped.inc();
        self.mirror_report.record_drop();
        self.drops_unlogged.fetch_add(1, Ordering::Relaxed);
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.drop_logged_at_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self.drop_logged_at_ms.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let n = self.drops_unlogged.swap(0, Ordering::Relaxed);
            self.logs.push(format!(
                "request_id={request_id} role=mirror dropped: {why} ({n} copies dropped since the last such line)"
            ));
        }
    }

    /// Admits and scores one live request, logging and counting the outcome.
    pub async fn score(
        &self,
        body: Bytes,
        content_type: Option<&str>,
        request_id: &str,
    ) -> Result<HookResponse, ScoreError> {
        let start = Instant::now();
        let outcome = match Admission::enter(self) {
            None => Err(ScoreError::Overloaded),
            Some(_admitted) => {
                let limit = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
                // Dropping the run's future on timeout cancels the run and frees the slot; a
                // run that finished inline past its deadline has its answer discarded.
                match tokio::time::timeout(limit, self.pool.run(body, content_type)).await {
                    Err(_) => Err(ScoreError::Timeout(limit)),
                    Ok(_) if start.elapsed() > limit => Err(ScoreError::Timeout(limit)),
                    Ok(result) => result.map_err(ScoreError::from),
                }
            }
        };
        self.record(Role::live, request_id, &outcome, start.elapsed());
        outcome
    }

    /// Admits a mirror copy into this shadow's own bounded queue, apart from live admission so
    /// that copies can never make live requests wait or fail. `None` when the queue is full
    /// (the copy is dropped and counted).
    pub fn admit_copy(self: &Arc<Self>, request_id: &str) -> Option<CopyTicket> {
        let before = self.mirror_inflight.fetch_add(1, Ordering::AcqRel);
        if before >= self.capacity.load(Ordering::Relaxed) {
            self.mirror_inflight.fetch_sub(1, Ordering::AcqRel);
            self.drop_copy(request_id, "shadow deployment is full");
            return None;
        }
        Some(CopyTicket { deployment: Arc::clone(self) })
    }

    /// Scores an admitted mirror copy on the calling (idle-priority) thread, within the shadow
    /// CPU budget, on an instance that is idle then. `None` when the copy is dropped (and
    /// counted): every shadow instance busy, or no budget before the copy's deadline
    /// (`request_timeout_ms` after it was queued at `queued`).
    pub fn score_copy(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        request_id: &str,
        queued: Instant,
    ) -> Option<(Result<HookResponse, ScoreError>, Duration)> {
        let deadline = queued + Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        let budget = background::shadow_budget();
        let mut pause = Duration::from_micros(50);
        while !budget.available() {
            if Instant::now() >= deadline {
                self.drop_copy(request_id, "the shadow CPU budget was spent until the copy's deadline");
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
        let start = Instant::now();
        let outcome = match self.pool.run_here_if_idle(body, content_type) {
            Err(RunError::Busy) => {
                self.drop_copy(request_id, "every shadow instance is busy");
                return None;
            }
            other => other.map_err(ScoreError::from),
        };
        let elapsed = start.elapsed();
        budget.charge(elapsed);
        self.record(Role::mirror, request_id, &outcome, elapsed);
        Some((outcome, elapsed))
    }

    /// Counts, logs and traces one answered request or copy.
    fn record(&self, role: Role, request_id: &str, outcome: &Result<HookResponse, ScoreError>, elapsed: Duration) {
        let status = match outcome {
            Ok(r) => r.status,
            Err(e) => e.status(),
        };
        self.metrics.observe(role, status, elapsed.as_secs_f64());
        let ms = elapsed.as_secs_f64() * 1e3;
        self.logs.push(format!("request_id={request_id} role={} status={status} duration_ms={ms:.3}", role.as_str()));
        tracing::info!(
            target: "switchyard::access",
            deployment = %self.name,
            request_id,
            role = role.as_str(),
            status,
            duration_ms = ms
        );
        if let Err(ScoreError::ModelFailed(reason)) = outcome {
            self.logs.push(format!("request_id={request_id} model error: {reason}"));
        }
    }
}

impl From<RunError> for ScoreError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::NoInstance | RunError::Busy => ScoreError::NotReady,
            RunError::BadInput(m) => ScoreError::BadInput(m),
            RunError::Failed(m) => ScoreError::ModelFailed(m),
        }
    }
}

/// A mirror copy's place in its shadow's queue; freed when the copy is done or dropped.
pub struct CopyTicket {
    deployment: Arc<Deployment>,
}

impl CopyTicket {
    /// The shadow deployment.
    pub fn deployment(&self) -> &Arc<Deployment> {
        &self.deployment
    }
}

impl Drop for CopyTicket {
    fn drop(&mut self) {
        self.deployment.mirror_inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An admitted live request; leaving (also by cancellation) frees its slot.
struct Admission<'a> {
    deployment: &'a Deployment,
}

impl<'a> Admission<'a> {
    fn enter(deployment: &'a Deployment) -> Option<Self> {
        let before = deployment.inflight.fetch_add(1, Ordering::AcqRel);
        if before >= deployment.capacity.load(Ordering::Relaxed) {
            deployment.inflight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self { deployment })
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.deployment.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
