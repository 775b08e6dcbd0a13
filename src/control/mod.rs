//! The control plane: the one owner of the endpoint's state. Every change is validated here
//! completely before anything is touched; an accepted change updates the state and publishes a
//! new routing snapshot in one step, so the front door never sees a half-applied change.
#![forbid(unsafe_code)]

mod assets;
mod collected;
mod comparison;
mod deployments;
mod endpoint;
mod error;
mod evidence;
pub(crate) mod loader;
mod needs;
mod restore;
mod rollout;
pub(crate) mod secrets;
pub(crate) mod store;
#[cfg(test)]
mod tests;
pub(crate) mod views;
pub(crate) mod watch;
mod workspace;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::deployment::{Deployment, ProvisioningState};
use crate::endpoint::{Credentials, EndpointView, RoutingTable, Unavailable, WeightedSplit};
use crate::mirror::{Shadow, Tolerance};
use crate::spec::{DeploymentSpec, EndpointSpec};
use crate::telemetry::Metrics;
pub(crate) use error::ControlError;
pub(crate) use rollout::RolloutSource;
use store::{Durable, DurableEndpoint, FailedUpdate, StateStore};
use views::{
    Bucket, DeploymentMetrics, DeploymentView, LiveMetrics, MetricInstances, MetricsView, RoleMetrics, SecretsDirView,
};
pub(crate) use workspace::Workspace;

/// The control plane's state: the endpoint and its deployments. Cloning it is cheap (the
/// pools are shared), which is how a change that cannot be saved is undone.
#[derive(Default, Clone)]
struct State {
    endpoint: Option<EndpointRecord>,
    deployments: BTreeMap<String, DeploymentRecord>,
    /// Increases with each load started (create, replace), so a finished background load can
    /// tell whether its deployment is still the current one.
    next_load_id: u64,
    /// The last rollout started (running, paused or over), kept for `rollout show`.
    rollout: Option<rollout::RolloutRecord>,
    /// Set when the endpoint was deleted and its plane left the workspace: the plane changes,
    /// saves and publishes nothing more (a request that still holds it gets a 404).
    retired: bool,
}

/// The endpoint as accepted: its spec holds the normalised traffic (every deployment listed)
/// and mirror rule (only a non-zero entry).
#[derive(Clone)]
struct EndpointRecord {
    spec: EndpointSpec,
    credentials: Credentials,
    /// A deployment created with `--all-traffic` that takes all traffic once it is ready.
    all_traffic_on_ready: Option<String>,
}

/// One deployment. `spec` is always what `live` runs (for a deployment still being created, or
/// whose create failed, the spec asked for): scaling and merge patches start from it, and it is
/// what a restart loads. An acknowledged replacement loads beside it as `pending`, and only a
/// successful load makes it the spec; a failed one is kept apart as `last_failure`, so a failed
/// update can neither take instances from the version that serves nor be restored in its place.
#[derive(Clone)]
struct DeploymentRecord {
    spec: DeploymentSpec,
    live: Arc<Deployment>,
    /// `live` in its role as a shadow (copy queue, comparison report); replaced with it.
    shadow: Arc<Shadow>,
    /// The id of the newest load started for this deployment (of `pending` while a
    /// replacement loads).
    load_id: u64,
    /// A replacement being loaded beside `live`.
    pending: Option<PendingVersion>,
    /// The last update that failed while `live` kept serving.
    last_failure: Option<FailedUpdate>,
}

impl DeploymentRecord {
    fn new(spec: DeploymentSpec, live: Arc<Deployment>, load_id: u64, tolerance: Tolerance) -> Self {
        let shadow = Shadow::new(Arc::clone(&live), tolerance);
        Self { spec, live, shadow, load_id, pending: None, last_failure: None }
    }

    /// Makes `next` the version that serves (with a shadow side of its own); returns the old.
    fn replace_live(&mut self, next: Arc<Deployment>, tolerance: Tolerance) -> Arc<Deployment> {
        self.shadow = Shadow::new(Arc::clone(&next), tolerance);
        std::mem::replace(&mut self.live, next)
    }
}

/// A new version of a deployment, loading beside the one that serves.
#[derive(Clone)]
struct PendingVersion {
    spec: DeploymentSpec,
    pool: Arc<Deployment>,
}

/// One endpoint's control plane: the one owner of that endpoint's state. The process holds
/// one per endpoint ([`Workspace`]); what they share (the routing snapshot, the admin token,
/// the secrets folder, the scoring address) is in [`Shared`]. Keeping each endpoint's state
/// behind its own lock is what makes the endpoints independent: a slow change on one (a save,
/// a load's bookkeeping) never waits on another's, and an operation cannot reach a
/// deployment of another endpoint by mistake, since it holds no reference to it.
pub(crate) struct ControlPlane {
    /// The endpoint this plane owns (fixed: a new name is a new plane).
    name: String,
    /// Tells this plane's publishes apart from those of an earlier plane of the same name.
    id: u64,
    /// What every endpoint's plane shares.
    shared: Arc<Shared>,
    /// Makes deployments from specs (the hooks on disk; a fake in unit tests).
    loader: Arc<dyn loader::Loader>,
    state: Mutex<State>,
    metrics: Arc<Metrics>,
    /// Where background work (model loads, drains) runs.
    runtime: tokio::runtime::Handle,
    /// Settings given at start.
    options: ControlOptions,
    /// Where accepted changes are saved (`--state-dir`).
    store: Option<StateStore>,
    /// True while a saved state is being restored: the endpoint answers 503.
    restoring: AtomicBool,
    /// `--config-dir`, when the files own the state, and how the last application went.
    declarative: OnceLock<PathBuf>,
    /// Why the folder's last version was refused or not applied whole; `None` once applied.
    config_error: Mutex<Option<String>>,
    /// Numbers the rollout timer tasks, so a task outlived by its rollout stops.
    rollout_tickers: std::sync::atomic::AtomicU64,
    /// The endpoint's live request rate over the last minute (read by `serve` every few
    /// seconds), which a rollout's upfront estimate uses.
    meter: Mutex<crate::telemetry::rate::RateMeter>,
}

/// What the endpoints of one process share.
pub(crate) struct Shared {
    routing: Arc<ArcSwap<RoutingTable>>,
    /// Bumped after each publish (the front door's per-thread snapshot caches watch it).
    publish_count: Arc<std::sync::atomic::AtomicU64>,
    /// What each endpoint last published, by name, with the id of the plane that did; a
    /// publish rebuilds the table from it under this lock, so two endpoints publishing at
    /// once cannot lose each other's change.
    board: Mutex<BTreeMap<String, (u64, Published)>>,
    /// Numbers the planes.
    next_plane: std::sync::atomic::AtomicU64,
    /// True once shutdown began: the scoring plane answers 503 to new requests.
    shutting_down: AtomicBool,
    /// The scoring plane's base URL, known once it is bound.
    scoring_base: OnceLock<String>,
    /// `--secrets-dir`, when the endpoints' secrets come from files.
    secrets: OnceLock<SecretsSource>,
    /// The admin API's bearer token (`--admin-token`, or `admin-token` in `--secrets-dir`,
    /// which may change while the server runs).
    admin_token: ArcSwapOption<String>,
    /// Registered models and environments (CONTRACT §11), shared by every endpoint.
    assets: OnceLock<Arc<crate::assets::AssetStore>>,
    /// The data collector's folder, writer and custom-logging listener (issue 28).
    collector: OnceLock<Arc<crate::collector::Hub>>,
    /// Resolving references (shared) against archiving (exclusive): see `assets.rs`.
    asset_gate: std::sync::RwLock<()>,
}

/// What one endpoint shows the scoring plane.
#[derive(Clone)]
enum Published {
    /// Its saved state is being restored (503).
    Restoring,
    Serving(Arc<EndpointView>),
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            routing: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            publish_count: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            board: Mutex::new(BTreeMap::new()),
            next_plane: std::sync::atomic::AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            scoring_base: OnceLock::new(),
            secrets: OnceLock::new(),
            admin_token: ArcSwapOption::empty(),
            assets: OnceLock::new(),
            collector: OnceLock::new(),
            asset_gate: std::sync::RwLock::new(()),
        })
    }

    /// Records what plane `id` shows for endpoint `name` (`None`: nothing, it is gone) and
    /// swaps in a table rebuilt with it. A plane that no longer owns the name (deleted, and
    /// the name taken by a new endpoint since) changes nothing.
    fn publish(&self, id: u64, name: &str, shown: Option<Published>) {
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        if board.get(name).is_some_and(|(owner, _)| *owner != id) {
            return;
        }
        match shown {
            Some(p) => {
                board.insert(name.to_string(), (id, p));
            }
            None => {
                board.remove(name);
            }
        }
        self.swap_in(&board);
    }

    /// Builds the table from `board` and makes it the one requests see.
    fn swap_in(&self, board: &BTreeMap<String, (u64, Published)>) {
        let mut table = RoutingTable {
            unavailable: self.shutting_down.load(Ordering::Acquire).then_some(Unavailable::ShuttingDown),
            ..RoutingTable::default()
        };
        for (name, (_, shown)) in board {
            match shown {
                Published::Restoring => table.restoring.push(name.clone()),
                Published::Serving(view) => {
                    table.endpoints.insert(name.as_str().into(), Arc::clone(view));
                }
            }
        }
        if board.len() == 1 {
            table.only = table.endpoints.values().next().cloned();
        }
        self.routing.store(Arc::new(table));
        self.publish_count.fetch_add(1, Ordering::AcqRel);
    }

    /// From now on every scoring request is refused (503).
    fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        let board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        self.swap_in(&board);
    }
}

/// A `--secrets-dir` and what was last read from it.
struct SecretsSource {
    dir: PathBuf,
    status: Mutex<SecretsStatus>,
}

struct SecretsStatus {
    files: secrets::SecretFiles,
    loaded_at: SystemTime,
    last_error: Option<String>,
}

/// Settings of the control plane that come from `switchyard serve`'s flags.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ControlOptions {
    /// Lifetime of `aml_token` tokens.
    pub token_lifetime: Duration,
    /// Default tolerance of mirror comparisons.
    pub tolerance: Tolerance,
    /// `--key-grace-secs`: how long a secret that left `--secrets-dir` stays accepted.
    pub key_grace: Duration,
}

impl ControlPlane {
    /// A plane for endpoint `name`, with no endpoint yet (created by the workspace).
    fn new(name: &str, ws: &Workspace, store: Option<StateStore>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_string(),
            id: ws.shared.next_plane.fetch_add(1, Ordering::Relaxed),
            shared: Arc::clone(&ws.shared),
            loader: Arc::clone(&ws.loader),
            state: Mutex::new(State::default()),
            metrics: Arc::clone(&ws.metrics),
            runtime: ws.runtime.clone(),
            options: ws.options,
            store,
            restoring: AtomicBool::new(false),
            declarative: OnceLock::new(),
            config_error: Mutex::new(None),
            rollout_tickers: std::sync::atomic::AtomicU64::new(0),
            meter: Mutex::new(Default::default()),
        })
    }

    /// A new version of deployment `spec` (hook `kind`), with its data collector: its pool is
    /// empty, the caller loads it.
    fn new_version(&self, spec: &DeploymentSpec, kind: crate::spec::HookKind) -> Arc<Deployment> {
        self.loader.deployment(&self.name, spec, kind, &self.metrics, self.runtime.clone(), self.collector_for(spec))
    }

    /// The data collector of a deployment of `spec`, when its `data_collector` turns a
    /// collection on and the server has a data folder.
    fn collector_for(&self, spec: &DeploymentSpec) -> Option<Arc<crate::collector::DeploymentCollector>> {
        let settings = spec.collector().filter(|c| c.collections.values().any(|on| *on))?;
        let hub = self.shared.collector.get()?;
        Some(crate::collector::DeploymentCollector::new(
            hub,
            &self.name,
            &spec.name,
            spec.model.served_version(),
            settings,
        ))
    }

    /// The endpoint this plane owns.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The `--secrets-dir`, when the endpoint's secrets come from files.
    pub(crate) fn secrets_dir(&self) -> Option<&Path> {
        self.shared.secrets.get().map(|s| s.dir.as_path())
    }

    /// Rotates to an edited `--secrets-dir`: the endpoint's credentials move to the new
    /// secrets (keeping the ones that left for the grace period) in one published change.
    fn apply_secrets(&self, files: &secrets::SecretFiles) {
        let mut state = self.lock();
        // No endpoint yet (a restore that has not set it up): nothing to rotate, and nothing
        // to save (a document without the endpoint would remove its saved file). The restore
        // takes the folder's secrets as it sets the endpoint up.
        let Some(ep) = state.endpoint.as_mut() else { return };
        ep.credentials.rotate_to(files.of(&self.name), self.options.key_grace, Instant::now());
        self.commit_background(&state);
    }

    /// The credentials a new endpoint gets: the folder's secrets in `--secrets-dir` mode, fresh
    /// random ones otherwise.
    fn new_credentials(&self, auth_mode: crate::spec::AuthMode) -> Credentials {
        match self.shared.secrets.get() {
            Some(source) => {
                let status = source.status.lock().unwrap_or_else(|e| e.into_inner());
                Credentials::from_shared(auth_mode, self.options.token_lifetime, status.files.of(&self.name))
            }
            None => Credentials::generate(auth_mode, self.options.token_lifetime),
        }
    }

    /// `show`'s `secrets_dir` object: where the secrets come from, a fingerprint of them (equal
    /// on replicas that hold the same Secret), when they were read, and the last refused edit.
    fn secrets_view(&self) -> Option<SecretsDirView> {
        let source = self.shared.secrets.get()?;
        let status = source.status.lock().unwrap_or_else(|e| e.into_inner());
        Some(SecretsDirView {
            path: source.dir.display().to_string(),
            fingerprint: status.files.of(&self.name).fingerprint(),
            loaded_at: humantime::format_rfc3339_seconds(status.loaded_at).to_string(),
            last_error: status.last_error.clone(),
        })
    }

    /// Puts the plane in declarative mode: the files in `dir` own the endpoint.
    pub(crate) fn set_declarative(&self, dir: PathBuf) {
        let _ = self.declarative.set(dir);
    }

    /// The `--config-dir` folder of this endpoint, when its state is owned by files.
    pub(crate) fn declarative_dir(&self) -> Option<&Path> {
        self.declarative.get().map(PathBuf::as_path)
    }

    /// Records how the last application of the config folder went (shown by `show`): why it
    /// was refused, or `None` once it applied.
    pub(crate) fn set_config_error(&self, error: Option<String>) {
        *self.config_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// The endpoint spec and deployment specs as accepted now (a replacement still loading is
    /// accepted; one that failed is not, so the config-dir reconciler tries it again).
    pub(crate) fn current_specs(&self) -> (Option<EndpointSpec>, BTreeMap<String, DeploymentSpec>) {
        let state = self.lock();
        (
            state.endpoint.as_ref().map(|e| e.spec.clone()),
            state
                .deployments
                .iter()
                .map(|(n, r)| (n.clone(), r.pending.as_ref().map_or(&r.spec, |p| &p.spec).clone()))
                .collect(),
        )
    }

    /// Waits until the named deployment has no operation in progress, or `limit` passes;
    /// returns its view then (`None` if it does not exist). Woken by the deployment's state
    /// changes, not by polling.
    pub(crate) async fn wait_settled(&self, name: &str, limit: Duration) -> Option<DeploymentView> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let live = self.lock().deployments.get(name).map(|r| Arc::clone(&r.live))?;
            let now = live.state().get();
            if !matches!(now, ProvisioningState::Creating | ProvisioningState::Updating) {
                let state = self.lock();
                let record = state.deployments.get(name)?;
                if Arc::ptr_eq(&record.live, &live) {
                    return Some(self.deployment_view(record));
                }
                continue; // replaced meanwhile: wait on the version that took over
            }
            if tokio::time::timeout_at(deadline, live.state().settled()).await.is_err() {
                let state = self.lock();
                return state.deployments.get(name).map(|r| self.deployment_view(r));
            }
        }
    }

    /// Refreshes the gauges that are read rather than counted (instances, in flight, mirror
    /// comparison) before a scrape.
    fn refresh_gauges(&self) {
        let state = self.lock();
        for record in state.deployments.values() {
            let c = record.live.pool().counts();
            record.live.metrics().set_instances([c.ready, c.loading, c.draining, c.failed, c.restarting]);
            record.live.metrics().set_inflight(record.live.inflight());
            record.live.metrics().set_mirror(&record.shadow.report.gauges());
            if let Some(c) = record.live.collector() {
                let v = c.view();
                record.live.metrics().set_collected([v.written, v.dropped, v.failed]);
            }
        }
    }

    /// This endpoint's deployments in `GET /v1/metrics`: the counts behind the request and
    /// duration series (cumulative; a reader takes rates and quantiles from two reads).
    fn metric_rows(&self) -> Vec<DeploymentMetrics> {
        let state = self.lock();
        let role = |r: &crate::telemetry::metrics::RoleSummary| RoleMetrics {
            requests: r.requests,
            seconds_sum: r.seconds_sum,
            buckets: r
                .buckets
                .iter()
                .map(|(le, n)| Bucket { le: (*le != f64::MAX).then_some(*le), count: *n })
                .collect(),
        };
        state
            .deployments
            .iter()
            .map(|(name, record)| {
                let s = record.live.metrics().summary();
                let c = record.live.pool().counts();
                DeploymentMetrics {
                    endpoint: self.name.clone(),
                    name: name.clone(),
                    inflight: record.live.inflight(),
                    instances: MetricInstances {
                        ready: c.ready,
                        loading: c.loading,
                        draining: c.draining,
                        failed: c.failed,
                    },
                    live: LiveMetrics {
                        role: role(&s.live),
                        ok: s.live_ok,
                        errors: s.live.requests.saturating_sub(s.live_ok),
                    },
                    mirror: role(&s.mirror),
                }
            })
            .collect()
    }

    /// `GET /v1/endpoints/{name}/metrics`: this endpoint's deployments.
    pub(crate) fn metrics_json(&self) -> MetricsView {
        MetricsView { time_ms: now_ms(), endpoint: Some(self.name.clone()), deployments: self.metric_rows() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed: every change is
        // computed first and applied with plain assignments. So a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes an accepted change durable (when `--state-dir` is set) and then visible. If it
    /// cannot be saved, the state goes back to `before` and the change is refused: nothing is
    /// acknowledged that a restart would lose.
    fn commit(&self, state: &mut State, before: State) -> Result<(), ControlError> {
        if state.retired {
            *state = before;
            return Err(ControlError::NotFound(format!("endpoint {:?} was deleted", self.name)));
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.save(&durable(state)) {
                *state = before;
                tracing::error!(endpoint = %self.name, error = %e, "cannot save the state");
                return Err(ControlError::Unsaved(e));
            }
        }
        self.publish(state);
        Ok(())
    }

    /// Saves and publishes a change made by a background task (a load that finished), which
    /// has nobody to refuse it to: a failure to save is logged. A deleted endpoint's plane
    /// saves and publishes nothing (its name may belong to a new endpoint by now).
    fn commit_background(&self, state: &State) {
        if state.retired {
            return;
        }
        if let Some(store) = &self.store {
            if let Err(e) = store.save(&durable(state)) {
                tracing::error!(endpoint = %self.name, error = %e, "cannot save the state after a background change");
            }
        }
        self.publish(state);
    }

    /// Builds this endpoint's routing view from `state` and swaps in a table with it.
    fn publish(&self, state: &State) {
        if state.retired {
            return;
        }
        let shown = if self.restoring.load(Ordering::Acquire) {
            Some(Published::Restoring)
        } else {
            state.endpoint.as_ref().map(|ep| {
                let live = |name: &String| state.deployments.get(name).map(|r| Arc::clone(&r.live));
                Published::Serving(Arc::new(EndpointView {
                    name: ep.spec.name.clone(),
                    credentials: ep.credentials.clone(),
                    deployments: state.deployments.iter().map(|(n, r)| (n.clone(), Arc::clone(&r.live))).collect(),
                    split: WeightedSplit::new(ep.spec.traffic.iter().filter_map(|(n, w)| live(n).map(|d| (d, *w)))),
                    mirror: ep
                        .spec
                        .mirror_traffic
                        .iter()
                        .find_map(|(n, p)| state.deployments.get(n).map(|r| (Arc::clone(&r.shadow), *p))),
                    affinity: ep.spec.traffic_affinity.as_ref().map(|a| a.header.clone()),
                }))
            })
        };
        self.shared.publish(self.id, &self.name, shown);
    }

    /// This endpoint's view in the routing snapshot now (readable while the state lock is
    /// held).
    fn published(&self) -> Option<Arc<EndpointView>> {
        self.shared.routing.load().endpoints.get(self.name.as_str()).cloned()
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The durable part of `state`: what serves, the replacements still loading (acknowledged, so
/// a restart carries them on), and the last failed update of each deployment.
fn durable(state: &State) -> Durable {
    let mut doc = Durable::new(
        state.endpoint.as_ref().map(|e| DurableEndpoint {
            spec: e.spec.clone(),
            credentials: e.credentials.clone(),
            all_traffic_on_ready: e.all_traffic_on_ready.clone(),
        }),
        state.deployments.values().map(|r| r.spec.clone()).collect(),
    );
    doc.pending = state.deployments.values().filter_map(|r| r.pending.as_ref().map(|p| p.spec.clone())).collect();
    doc.failed_updates = state.deployments.values().filter_map(|r| r.last_failure.clone()).collect();
    doc.rollout = state.rollout.as_ref().map(|r| r.durable.clone());
    doc
}
