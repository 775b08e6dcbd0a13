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

pub use pool::{InstanceCounts, InstancePool, Lane, RunError};
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
        let ctx = InitContext {
            deployment: spec.name.clone(),
            environment_variables: spec.environment_variables.clone(),
            intra_threads: 1,
        };
        let factory_kind = kind.clone();
        let logs = Arc::new(LogRing::default());
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

    /// Whether a mirror copy can be admitted right now (the mirror path drops instead of
    /// waiting).
    pub fn has_room_for_copy(&self) -> bool {
        self.mirror_inflight.load(Ordering::Relaxed) < self.capacity.load(Ordering::Relaxed)
    }

    /// Counts and logs a mirror copy that was dropped because this shadow was full or busy.
    pub fn drop_copy(&self, request_id: &str, why: &str) {
        self.metrics.mirror_dropped.inc();
        self.mirror_report.record_drop();
        self.logs.push(format!("request_id={request_id} role=mirror dropped: {why}"));
    }

    /// Admits and scores one request, logging and counting the outcome.
    pub async fn score(
        &self,
        body: Bytes,
        content_type: Option<&str>,
        role: Role,
        request_id: &str,
    ) -> Result<HookResponse, ScoreError> {
        let start = Instant::now();
        let outcome = match Admission::enter(self, role) {
            None if role == Role::mirror => {
                self.drop_copy(request_id, "shadow deployment is full");
                return Err(ScoreError::Overloaded);
            }
            None => Err(ScoreError::Overloaded),
            Some(_admitted) => {
                let lane = if role == Role::mirror { Lane::Shadow } else { Lane::Live };
                let limit = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
                // Dropping the run's future on timeout cancels the run and frees the slot; a
                // run that finished inline past its deadline has its answer discarded.
                match tokio::time::timeout(limit, self.pool.run(body, content_type, lane)).await {
                    Err(_) => Err(ScoreError::Timeout(limit)),
                    Ok(_) if start.elapsed() > limit => Err(ScoreError::Timeout(limit)),
                    Ok(Err(RunError::Busy)) => {
                        self.drop_copy(request_id, "every shadow instance is busy");
                        return Err(ScoreError::Overloaded);
                    }
                    Ok(result) => result.map_err(|e| match e {
                        RunError::NoInstance | RunError::Busy => ScoreError::NotReady,
                        RunError::BadInput(m) => ScoreError::BadInput(m),
                        RunError::Failed(m) => ScoreError::ModelFailed(m),
                    }),
                }
            }
        };
        let elapsed = start.elapsed();
        let status = match &outcome {
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
        if let Err(ScoreError::ModelFailed(reason)) = &outcome {
            self.logs.push(format!("request_id={request_id} model error: {reason}"));
        }
        outcome
    }
}

/// An admitted request or copy; leaving (also by cancellation) frees its slot.
struct Admission<'a> {
    deployment: &'a Deployment,
    counter: &'a AtomicUsize,
    live: bool,
}

impl<'a> Admission<'a> {
    fn enter(deployment: &'a Deployment, role: Role) -> Option<Self> {
        let live = role == Role::live;
        let counter = if live { &deployment.inflight } else { &deployment.mirror_inflight };
        let before = counter.fetch_add(1, Ordering::AcqRel);
        if before >= deployment.capacity.load(Ordering::Relaxed) {
            counter.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        if live {
            deployment.metrics.inflight.inc();
        }
        Some(Self { deployment, counter, live })
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::AcqRel);
        if self.live {
            self.deployment.metrics.inflight.dec();
        }
    }
}
