//! Deployments: a named worker pool plus its admission limit, lifecycle state, log and metrics.
//! This is the hot-path object the routing snapshot points at; the control plane keeps the
//! deployment's spec beside it.
#![forbid(unsafe_code)]

pub(crate) mod batch;
mod permits;
pub(crate) mod pool;
pub(crate) mod state;

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use crate::collector::DeploymentCollector;
use crate::hooks::{self, Answer, HookResponse, InitContext, Request, Signature};
use crate::spec::{DeploymentSpec, HookKind};
use crate::telemetry::{DeploymentMetrics, LogRing, Metrics, Role};

pub(crate) use pool::{InstanceCounts, InstancePool, LoadError, Restart, RunError};
pub(crate) use state::{ProvisioningState, StateCell};

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

    /// What happened, in a few words (the collected record of a failed request; the answer's
    /// own message is the server's, `server::errors`).
    pub(crate) fn reason(&self) -> String {
        match self {
            ScoreError::Overloaded => "too many requests in flight for this deployment".into(),
            ScoreError::NotReady => "the deployment has no ready instance".into(),
            ScoreError::BadInput(m) => m.clone(),
            ScoreError::ModelFailed(r) => format!("the model failed to score the request: {r}"),
            ScoreError::Timeout(limit) => format!("the request took longer than {} ms", limit.as_millis()),
        }
    }
}

/// What a deployment has beside its pool when its spec asks: a data collector, a batcher
/// (its settings, the slot its first instance fills with a preparer, the runtime its batches
/// run on).
struct Extras {
    collector: Option<Arc<DeploymentCollector>>,
    batching: Option<(crate::spec::Batching, batch::PreparerSlot, tokio::runtime::Handle)>,
}

/// One deployment as the front door sees it.
pub struct Deployment {
    /// The deployment's name.
    name: String,
    /// The model's name, as v2 clients address it (`/v2/models/{model_name}`).
    model_name: String,
    /// The model's version, if the spec gives one.
    model_version: Option<String>,
    /// The model's inputs and outputs, as the first instance to load reported them (`None`
    /// until then, or when the hook does not know them).
    signature: Arc<ArcSwapOption<Signature>>,
    /// The instances.
    pool: Arc<InstancePool>,
    /// Provisioning state and last error.
    state: StateCell,
    /// Recent log lines (init output, one access line per request).
    logs: Arc<LogRing>,
    /// Metric handles.
    metrics: DeploymentMetrics,
    /// Live requests admitted and not yet answered.
    inflight: AtomicUsize,
    /// Admission cap: 2 × max_concurrent_requests_per_instance × instance_count.
    capacity: AtomicUsize,
    /// `request_timeout_ms`, measured from admission.
    timeout_ms: AtomicU64,
    /// How long the last load of instances (create, replace, scale-up) took, in µs.
    load_micros: AtomicU64,
    /// Azure's data collector, when the spec turns a collection on (issue 28).
    collector: Option<Arc<DeploymentCollector>>,
    /// The batcher, when the spec turns `batching` on (issue 29); without it a request goes
    /// straight to the pool.
    batcher: Option<batch::Batcher>,
}

impl Deployment {
    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's name, as v2 clients address it (`/v2/models/{model_name}`).
    pub(crate) fn model_name(&self) -> &str {
        &self.model_name
    }

    /// The model's version, if the spec gives one.
    pub(crate) fn model_version(&self) -> Option<&str> {
        self.model_version.as_deref()
    }

    /// The model's inputs and outputs, once the first instance reported them.
    pub(crate) fn signature(&self) -> Option<Arc<Signature>> {
        self.signature.load_full()
    }

    /// The instances.
    pub fn pool(&self) -> &Arc<InstancePool> {
        &self.pool
    }

    /// Provisioning state and last error.
    pub(crate) fn state(&self) -> &StateCell {
        &self.state
    }

    /// Recent log lines (init output, one access line per request).
    pub(crate) fn logs(&self) -> &Arc<LogRing> {
        &self.logs
    }

    /// Metric handles.
    pub(crate) fn metrics(&self) -> &DeploymentMetrics {
        &self.metrics
    }

    /// The data collector, when the spec turns a collection on.
    #[inline]
    pub(crate) fn collector(&self) -> Option<&Arc<DeploymentCollector>> {
        self.collector.as_ref()
    }

    /// What batching came to, when the spec turns it on (the settings are the spec's).
    pub(crate) fn batching(&self) -> Option<batch::BatchingStatus> {
        self.batcher.as_ref().map(batch::Batcher::status)
    }

    /// How long the last load of instances (create, replace, scale-up) took.
    pub(crate) fn load_time(&self) -> Duration {
        Duration::from_micros(self.load_micros.load(Ordering::Relaxed))
    }

    /// Records how long a load of instances took.
    pub(crate) fn set_load_time(&self, took: Duration) {
        self.load_micros.store(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// A deployment with an empty pool; the control plane loads its instances.
    pub fn new(
        spec: &DeploymentSpec,
        kind: HookKind,
        metrics: &Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        Self::new_collecting(spec, kind, metrics, runtime, None)
    }

    /// As [`new`](Self::new), with a data collector: its records are written as requests
    /// are answered, and a scoring script's workers get the environment Azure's `Collector`
    /// reads.
    pub(crate) fn new_collecting(
        spec: &DeploymentSpec,
        kind: HookKind,
        metrics: &Arc<Metrics>,
        runtime: tokio::runtime::Handle,
        collector: Option<Arc<DeploymentCollector>>,
    ) -> Arc<Self> {
        let logs = Arc::new(LogRing::default());
        let mut environment_variables = spec.environment_variables.clone();
        if let (Some(c), HookKind::Python(_)) = (&collector, &kind) {
            environment_variables.extend(c.worker_env());
        }
        let init_stop = Arc::new(hooks::cancel::InitStop::default());
        let ctx = InitContext {
            deployment: spec.name.clone(),
            environment_variables,
            intra_threads: 1,
            logs: Arc::clone(&logs),
            request_timeout_ms: spec.request_settings.request_timeout_ms,
            python_env: hooks::python::EnvSlot::default(),
            next_instance: Arc::default(),
            model_name: spec.model.served_name(),
            model_version: spec.model.served_version(),
            init_stop: Arc::clone(&init_stop),
            batching: spec.batching.is_some(),
        };
        let signature: Arc<ArcSwapOption<Signature>> = Arc::default();
        let signature_slot = Arc::clone(&signature);
        let preparer: batch::PreparerSlot = Arc::default();
        let preparer_slot = spec.batching.map(|_| Arc::clone(&preparer));
        let factory_kind = kind.clone();
        let init_log = Arc::clone(&logs);
        let pool = InstancePool::new(
            Arc::new(move || {
                let hook = hooks::init(&factory_kind, &ctx)?;
                if signature_slot.load().is_none() {
                    signature_slot.store(hook.signature().map(Arc::new));
                }
                if let Some(slot) = &preparer_slot {
                    if let Some(p) = hook.preparer() {
                        let _ = slot.set(p);
                    }
                }
                let about = hook.describe();
                if !about.is_empty() {
                    init_log.push(&about);
                    tracing::info!(deployment = %ctx.deployment, "{about}");
                }
                Ok(hook)
            }),
            runtime.clone(),
        );
        pool.stop_inits_on_close(init_stop);
        if matches!(kind, HookKind::Python(_)) {
            // Azure's WORKER_COUNT: that many worker processes (hooks) per instance.
            let workers = spec.workers_per_instance();
            pool.set_workers_per_instance(workers as usize);
            let mcr = spec.request_settings.max_concurrent_requests_per_instance;
            if mcr < workers {
                logs.push(format!(
                    "WORKER_COUNT is {workers} but max_concurrent_requests_per_instance is {mcr}: admission lets \
                     2 x {mcr} requests per instance in flight, so some workers may idle; set it to {workers}, as on Azure"
                ));
            }
            // A run in a worker process is a pipe round trip at best and may hang: never on
            // the request's thread, always where a deadline can stop it.
            pool.queue_every_run();
            // A script's run(raw_data, request_headers) reads them.
            pool.pass_headers();
        }
        if let Some(b) = spec.batching {
            let admitted = 2 * spec.request_settings.max_concurrent_requests_per_instance;
            if admitted < b.max_batch_size {
                logs.push(format!(
                    "batching.max_batch_size is {} but admission lets 2 x max_concurrent_requests_per_instance = {admitted} \
                     requests per instance in flight, so a batch holds at most {admitted} requests; raise \
                     request_settings.max_concurrent_requests_per_instance to fill it",
                    b.max_batch_size
                ));
            }
        }
        if let HookKind::Native(plugin) = &kind {
            if plugin.isolation == crate::spec::Isolation::InProcess {
                // A plugin's run is a plain call that nothing can stop: one that outlives the
                // request's deadline takes its instance out of service (see `watch_runs`).
                let (log, name) = (Arc::clone(&logs), spec.name.clone());
                let deadline = std::time::Duration::from_millis(spec.request_settings.request_timeout_ms);
                pool.watch_runs(deadline, move |line| {
                    log.push(format!("{name}: {line}"));
                    tracing::warn!(target: "switchyard::native", deployment = %name, "{line}");
                });
            }
        }
        let batching = spec.batching.map(|settings| (settings, preparer, runtime));
        Self::assemble(spec, pool, logs, signature, metrics, &hooks::describe(&kind), Extras { collector, batching })
    }

    /// A deployment whose instances come from `factory` rather than from a hook on disk: the
    /// control plane's unit tests load fake instances through it (`control::loader`).
    #[cfg(test)]
    pub(crate) fn with_factory(
        spec: &DeploymentSpec,
        factory: pool::HookFactory,
        metrics: &Arc<Metrics>,
        runtime: tokio::runtime::Handle,
    ) -> Arc<Self> {
        let pool = InstancePool::new(factory, runtime);
        let none = Extras { collector: None, batching: None };
        Self::assemble(spec, pool, Arc::new(LogRing::default()), Arc::default(), metrics, "test instances", none)
    }

    fn assemble(
        spec: &DeploymentSpec,
        pool: Arc<InstancePool>,
        logs: Arc<LogRing>,
        signature: Arc<ArcSwapOption<Signature>>,
        metrics: &Arc<Metrics>,
        described: &str,
        Extras { collector, batching }: Extras,
    ) -> Arc<Self> {
        let metrics = metrics.for_deployment(spec.endpoint_name.as_deref().unwrap_or_default(), &spec.name);
        let batcher = batching.map(|(settings, preparer, runtime)| {
            batch::Batcher::new(settings, Arc::clone(&pool), preparer, metrics.batches(), &runtime)
        });
        let deployment = Arc::new(Self {
            name: spec.name.clone(),
            model_name: spec.model.served_name(),
            model_version: spec.model.served_version(),
            signature,
            pool,
            state: StateCell::new(ProvisioningState::Creating),
            logs,
            // Labelled with the endpoint the spec names (the control plane's loader sets it).
            metrics,
            inflight: AtomicUsize::new(0),
            capacity: AtomicUsize::new(0),
            timeout_ms: AtomicU64::new(0),
            load_micros: AtomicU64::new(0),
            collector,
            batcher,
        });
        deployment.apply_settings(spec);
        deployment.logs.push(format!("deployment {} created: {described}", spec.name));
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

    /// Takes an admission slot for one live request, or refuses it (429, counted and logged
    /// here). The front door takes the slot *before* it reads the body: a request that will
    /// be refused never has its body read, so memory in flight is bounded by the admission
    /// cap and not by how many clients send at once. The slot is freed when the returned
    /// [`Admission`] is dropped, on every path (answer, error, cancelled request).
    pub fn admit(&self, request_id: &str) -> Result<Admission<'_>, ScoreError> {
        Admission::enter(self).ok_or_else(|| {
            let refused = Err(ScoreError::Overloaded);
            self.record(Role::live, request_id, &refused, Duration::ZERO);
            ScoreError::Overloaded
        })
    }

    /// Scores one admitted live request of the given protocol (`/score` or v2 `infer`),
    /// logging and counting the outcome. The deadline (`request_timeout_ms`) runs from here,
    /// after the body was read (reading it has its own deadline at the front door).
    pub async fn call(&self, admitted: Admission<'_>, request: Request<'_>) -> Result<Answer, ScoreError> {
        debug_assert!(std::ptr::eq(admitted.deployment, self), "an admission is used on its own deployment");
        let start = Instant::now();
        let limit = Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed));
        // Dropping the run's future on timeout cancels the run and frees the slot; a run that
        // finished inline past its deadline has its answer discarded. A run that finishes at
        // its first poll (an inline run on an idle instance, the common case) needs no timer:
        // the deadline timer is armed only when the run has to wait, for the same deadline,
        // so most requests do not pay a registration and cancellation on the timer wheel.
        let mut run = std::pin::pin!(async {
            match &self.batcher {
                None => self.pool.call(request).await,
                Some(batcher) => batcher.call(&self.pool, request).await,
            }
        });
        let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
        let finished = match first {
            Poll::Ready(result) => Ok(result),
            Poll::Pending => tokio::time::timeout_at((start + limit).into(), run).await,
        };
        let elapsed = start.elapsed();
        let outcome = match finished {
            Err(_) => Err(ScoreError::Timeout(limit)),
            Ok(_) if elapsed > limit => Err(ScoreError::Timeout(limit)),
            Ok(result) => result.map_err(ScoreError::from),
        };
        drop(admitted);
        self.record_status(Role::live, request.request_id, outcome.as_ref().map(|a| a.response.status), elapsed);
        outcome
    }

    /// The admission cap: 2 × max_concurrent_requests_per_instance × instance_count.
    pub fn capacity(&self) -> usize {
        self.capacity.load(Ordering::Relaxed)
    }

    /// `request_timeout_ms`.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    /// Counts, logs and traces one answered request or copy.
    pub fn record(&self, role: Role, request_id: &str, outcome: &Result<HookResponse, ScoreError>, elapsed: Duration) {
        self.record_status(role, request_id, outcome.as_ref().map(|r| r.status), elapsed);
    }

    /// As [`record`](Self::record), from the answer's status or the error.
    fn record_status(&self, role: Role, request_id: &str, outcome: Result<u16, &ScoreError>, elapsed: Duration) {
        let status = match outcome {
            Ok(status) => status,
            Err(e) => e.status(),
        };
        self.metrics.observe(role, status, elapsed.as_secs_f64());
        self.logs.push_access(request_id, role.as_str(), status, elapsed);
        tracing::info!(
            target: "switchyard::access",
            deployment = %self.name,
            request_id,
            role = role.as_str(),
            status,
            duration_ms = elapsed.as_secs_f64() * 1e3
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

/// An admitted live request's slot in its deployment's admission cap; dropping it (also by
/// cancellation) frees the slot.
#[must_use = "dropping the admission frees the slot at once"]
pub struct Admission<'a> {
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
