//! The workspace: every endpoint of the process, each owned by a control plane of its own.
//!
//! An endpoint's plane is created with the endpoint and retired with it. What the planes
//! share (the routing snapshot they publish into, the admin token, the secrets folder, the
//! scoring address) is [`Shared`]; the workspace holds the planes by name and is what the
//! admin API, the config-dir reconciler and the server's start and shutdown talk to.
//!
//! Creating and deleting endpoints race with changes to them: a change may find a plane just
//! before its endpoint is deleted. A plane is therefore *retired* under its own lock when it
//! leaves the map, and a retired plane refuses every change ([`ControlError::Retry`] inside,
//! which [`Workspace::put_endpoint`] answers by trying again on the current plane), so
//! nothing acknowledged can land on a plane that no longer serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use super::store::{Saved, StateDir};
use super::views::{EndpointView, MetricsView, RolloutView};
use super::{
    loader, now_ms, secrets, ControlError, ControlOptions, ControlPlane, SecretsSource, SecretsStatus, Shared,
};
use crate::endpoint::RoutingTable;
use crate::spec::{EndpointSpec, MAX_ENDPOINTS};
use crate::telemetry::Metrics;

/// Every endpoint of the process.
pub(crate) struct Workspace {
    pub(super) shared: Arc<Shared>,
    pub(super) loader: Arc<dyn loader::Loader>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) options: ControlOptions,
    /// `--state-dir`.
    state_dir: Option<StateDir>,
    /// The planes by endpoint name.
    planes: Mutex<BTreeMap<String, Arc<ControlPlane>>>,
    /// `--config-dir`, when the files own the endpoints.
    declarative: OnceLock<PathBuf>,
    /// The last rollout of each deleted endpoint (aborted by the delete, with the event that
    /// says so): `rollout show` still answers for an endpoint deleted mid-rollout, until an
    /// endpoint of that name is created again. Bounded by the endpoint limit (oldest go).
    deleted_rollouts: Mutex<Vec<(String, RolloutView)>>,
    /// In `--config-dir` mode, the folder that owns each endpoint (by lower-case name).
    claims: Mutex<BTreeMap<String, PathBuf>>,
}

impl Workspace {
    /// A workspace with no endpoint. Call from inside a tokio runtime.
    pub(crate) fn new(metrics: Arc<Metrics>, options: ControlOptions, state_dir: Option<StateDir>) -> Arc<Self> {
        Self::with_loader(metrics, options, state_dir, Arc::new(loader::Hooks))
    }

    /// As [`new`](Self::new), with deployments made by `loader` (a fake one in unit tests).
    pub(crate) fn with_loader(
        metrics: Arc<Metrics>,
        options: ControlOptions,
        state_dir: Option<StateDir>,
        loader: Arc<dyn loader::Loader>,
    ) -> Arc<Self> {
        Arc::new(Self {
            shared: Shared::new(),
            loader,
            metrics,
            runtime: tokio::runtime::Handle::current(),
            options,
            state_dir,
            planes: Mutex::new(BTreeMap::new()),
            declarative: OnceLock::new(),
            deleted_rollouts: Mutex::new(Vec::new()),
            claims: Mutex::new(BTreeMap::new()),
        })
    }

    fn planes(&self) -> MutexGuard<'_, BTreeMap<String, Arc<ControlPlane>>> {
        // Changed only by single inserts and removes: a poisoned lock is still consistent.
        self.planes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the workspace its data collector (`serve` makes it from `--data-dir`).
    pub(crate) fn set_collector(&self, hub: Arc<crate::collector::Hub>) {
        let _ = self.shared.collector.set(hub);
    }

    /// The routing snapshot the front door reads.
    pub(crate) fn routing(&self) -> Arc<ArcSwap<RoutingTable>> {
        Arc::clone(&self.shared.routing)
    }

    /// The publish counter the front door's snapshot caches watch.
    pub(crate) fn publish_count(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.shared.publish_count)
    }

    /// Records the scoring plane's address (for each endpoint's `scoring_uri`).
    pub(crate) fn set_scoring_base(&self, base: String) {
        let _ = self.shared.scoring_base.set(base);
    }

    /// The admin API's bearer token now (`None`: the admin API is open, on loopback).
    pub(crate) fn admin_token(&self) -> Option<Arc<String>> {
        self.shared.admin_token.load_full()
    }

    /// Sets the admin API's bearer token.
    pub(crate) fn set_admin_token(&self, token: Option<String>) {
        self.shared.admin_token.store(token.map(Arc::new));
    }

    /// Makes the files of `dir` the source of the endpoints' secrets (at start, before any
    /// endpoint exists).
    pub(super) fn set_secrets_source(&self, dir: PathBuf, files: secrets::SecretFiles) {
        let status = SecretsStatus { files, loaded_at: SystemTime::now(), last_error: None };
        let _ = self.shared.secrets.set(SecretsSource { dir, status: Mutex::new(status) });
    }

    /// Records why the last edit of `--secrets-dir` was refused (`None`: it was fine).
    pub(super) fn set_secrets_error(&self, error: Option<String>) {
        if let Some(source) = self.shared.secrets.get() {
            source.status.lock().unwrap_or_else(|e| e.into_inner()).last_error = error;
        }
    }

    /// Rotates to an edited `--secrets-dir`: every endpoint's credentials move to the new
    /// secrets (keeping the ones that left for the grace period), and so does the admin token
    /// when it comes from the folder.
    pub(super) fn apply_secrets(&self, files: secrets::SecretFiles) {
        let Some(source) = self.shared.secrets.get() else {
            return;
        };
        // The new secrets first, so an endpoint created meanwhile gets them.
        *source.status.lock().unwrap_or_else(|e| e.into_inner()) =
            SecretsStatus { files: files.clone(), loaded_at: SystemTime::now(), last_error: None };
        if files.admin_token.is_some() {
            self.set_admin_token(files.admin_token.clone());
        }
        let planes: Vec<_> = self.planes().values().cloned().collect();
        for plane in planes {
            plane.apply_secrets(&files);
        }
    }

    /// Puts the workspace in declarative mode: the files in `dir` own the endpoints.
    pub(crate) fn set_declarative(&self, dir: PathBuf) {
        let _ = self.declarative.set(dir);
    }

    /// The `--config-dir`, when the endpoints are owned by files.
    pub(crate) fn declarative_dir(&self) -> Option<&Path> {
        self.declarative.get().map(PathBuf::as_path)
    }

    /// Makes `folder` the owner of endpoint `name` (`--config-dir`), unless another folder owns
    /// it: then that folder is the error. One check-and-set under one lock, so two folders
    /// that name the same endpoint cannot both be applied.
    pub(crate) fn claim(&self, name: &str, folder: &Path) -> Result<(), PathBuf> {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        match claims.get(&name.to_ascii_lowercase()) {
            Some(owner) if owner != folder => Err(owner.clone()),
            Some(_) => Ok(()),
            None => {
                claims.insert(name.to_ascii_lowercase(), folder.to_path_buf());
                Ok(())
            }
        }
    }

    /// `folder` no longer defines endpoint `name` (it renamed it).
    pub(crate) fn release(&self, name: &str, folder: &Path) {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        if claims.get(&name.to_ascii_lowercase()).is_some_and(|owner| owner == folder) {
            claims.remove(&name.to_ascii_lowercase());
        }
    }

    /// The names of the endpoints, sorted.
    pub(crate) fn names(&self) -> Vec<String> {
        self.planes().keys().cloned().collect()
    }

    /// What a request naming an endpoint that does not exist is told: the ones that do (in the
    /// words of the one-endpoint days when there is one, which scripts may match).
    fn unknown(&self, name: &str) -> ControlError {
        let names: Vec<String> = self.names().iter().map(|n| format!("{n:?}")).collect();
        ControlError::NotFound(match names.as_slice() {
            [] => format!("endpoint {name:?} not found: this server hosts no endpoint"),
            [one] => format!("endpoint {name:?} not found: this server hosts endpoint {one}"),
            all => format!("endpoint {name:?} not found: this server hosts endpoints {}", all.join(", ")),
        })
    }

    /// The plane of endpoint `name` (404 naming the endpoints that exist).
    pub(crate) fn endpoint(&self, name: &str) -> Result<Arc<ControlPlane>, ControlError> {
        let found = self.planes().get(name).cloned();
        found.ok_or_else(|| self.unknown(name))
    }

    /// The plane of the server's only endpoint, for the routes of the one-endpoint API
    /// (`/v1/endpoint`, `/v1/deployments`): 404 with none, 409 naming them with several.
    pub(crate) fn only(&self) -> Result<Arc<ControlPlane>, ControlError> {
        let planes = self.planes();
        let mut all = planes.values();
        match (all.next(), all.next()) {
            (Some(only), None) => Ok(Arc::clone(only)),
            (None, _) => Err(ControlError::NotFound(
                "this server hosts no endpoint: create one first (PUT /v1/endpoints/{name}, or `online-endpoint create`)"
                    .into(),
            )),
            (Some(_), Some(_)) => Err(ControlError::Conflict(format!(
                "this server hosts {} endpoints ({}): name one, under /v1/endpoints/{{name}}/... (the CLI's --name/--endpoint-name)",
                planes.len(),
                planes.keys().cloned().collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// `PUT /v1/endpoints/{name}` (and `PUT /v1/endpoint`): creates the endpoint `spec.name`
    /// beside the others, or replaces its settings. Returns its view and whether it was
    /// created.
    pub(crate) fn put_endpoint(
        &self,
        spec: EndpointSpec,
        ignored: Vec<String>,
    ) -> Result<(EndpointView, bool), ControlError> {
        loop {
            let (plane, new_plane) = self.plane_for(&spec.name)?;
            match plane.put_endpoint(spec.clone(), ignored.clone()) {
                Err(ControlError::Retry) => continue,
                Err(e) => {
                    if new_plane {
                        self.forget_if_empty(&plane);
                    }
                    return Err(e);
                }
                Ok(done) => {
                    if new_plane {
                        // An endpoint of the name again: the deleted one's rollout is history.
                        self.deleted_rollouts().retain(|(n, _)| *n != spec.name);
                    }
                    return Ok(done);
                }
            }
        }
    }

    /// The plane for endpoint `name`, made (without an endpoint yet) if there is none; and
    /// whether it was made now.
    pub(super) fn plane_for(&self, name: &str) -> Result<(Arc<ControlPlane>, bool), ControlError> {
        let mut planes = self.planes();
        if let Some(plane) = planes.get(name) {
            return Ok((Arc::clone(plane), false));
        }
        // Names are unique regardless of case: `NAME.localhost` routes by a host name, which
        // is case-insensitive.
        if let Some(other) = planes.keys().find(|n| n.eq_ignore_ascii_case(name)) {
            return Err(ControlError::Conflict(format!(
                "endpoint {other:?} exists; endpoint names are unique regardless of case (they are host names in NAME.localhost)"
            )));
        }
        if planes.len() >= MAX_ENDPOINTS {
            return Err(ControlError::Conflict(format!(
                "this server holds {MAX_ENDPOINTS} endpoints, its limit: delete one first, or start another `switchyard serve`"
            )));
        }
        let primary_taken = planes.values().any(|p| p.store.as_ref().is_some_and(|s| s.is_primary()));
        let store = self.state_dir.as_ref().map(|d| d.store_for(name, primary_taken));
        let plane = ControlPlane::new(name, self, store);
        planes.insert(name.to_string(), Arc::clone(&plane));
        Ok((plane, true))
    }

    /// Removes `plane` from the workspace if it holds no endpoint (deleted, or never created),
    /// retiring it under its own lock so that no change can land on it afterwards.
    fn forget_if_empty(&self, plane: &Arc<ControlPlane>) {
        let mut planes = self.planes();
        if !planes.get(plane.name()).is_some_and(|p| Arc::ptr_eq(p, plane)) {
            return;
        }
        let mut state = plane.lock();
        if state.endpoint.is_none() {
            state.retired = true;
            planes.remove(plane.name());
            // Whatever the plane last showed goes with it (an endpoint deleted while it was
            // still being restored showed "restoring": left there, it answered 503 for good
            // and held the process's readiness down).
            self.shared.publish(plane.id, plane.name(), None);
        }
    }

    /// `DELETE /v1/endpoints/{name}`: removes the endpoint and its deployments; the others are
    /// untouched.
    pub(crate) fn delete_endpoint(&self, name: &str) -> Result<(), ControlError> {
        let plane = self.endpoint(name)?;
        plane.delete_endpoint()?;
        let rollout = plane.rollout_view().ok();
        self.forget_if_empty(&plane);
        if let Some(view) = rollout {
            let mut kept = self.deleted_rollouts();
            kept.retain(|(n, _)| n != name);
            if kept.len() >= MAX_ENDPOINTS {
                kept.remove(0);
            }
            kept.push((name.to_string(), view));
        }
        Ok(())
    }

    fn deleted_rollouts(&self) -> MutexGuard<'_, Vec<(String, RolloutView)>> {
        self.deleted_rollouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last rollout of a deleted endpoint: `name`'s, or with `None` the most recently
    /// deleted endpoint's while the server holds none (the one-endpoint route's meaning).
    pub(crate) fn deleted_rollout(&self, name: Option<&str>) -> Option<RolloutView> {
        if name.is_none() && !self.planes().is_empty() {
            return None;
        }
        let kept = self.deleted_rollouts();
        let found = match name {
            Some(n) => kept.iter().rev().find(|(k, _)| k == n),
            None => kept.last(),
        };
        found.map(|(_, view)| view.clone())
    }

    /// `GET /v1/endpoints`: every endpoint, as `show` prints each.
    pub(crate) fn list_endpoints(&self) -> Vec<EndpointView> {
        let planes: Vec<_> = self.planes().values().cloned().collect();
        planes.iter().filter_map(|p| p.get_endpoint().ok()).collect()
    }

    /// Every plane now.
    pub(crate) fn all(&self) -> Vec<Arc<ControlPlane>> {
        self.planes().values().cloned().collect()
    }

    /// Prometheus text, with the gauges that are read rather than counted (instances, mirror
    /// comparison, process) refreshed first.
    pub(crate) fn metrics_text(&self) -> String {
        for plane in self.all() {
            plane.refresh_gauges();
        }
        self.metrics.refresh_process();
        self.metrics.render()
    }

    /// `GET /v1/metrics`: per deployment, the counts behind the request and duration series
    /// as JSON, so a client such as the studio page needs no Prometheus text parser. With one
    /// endpoint, `endpoint` names it; with several, each deployment names its own.
    pub(crate) fn metrics_json(&self) -> MetricsView {
        let planes = self.all();
        if let [only] = planes.as_slice() {
            return only.metrics_json();
        }
        MetricsView {
            time_ms: now_ms(),
            endpoint: None,
            deployments: planes.iter().flat_map(|p| p.metric_rows()).collect(),
        }
    }

    /// Starts bringing back the saved endpoints: each gets its plane now (answering 503 until
    /// it is restored); the returned tasks restore them, each on its own, so a slow model of
    /// one endpoint does not hold another's traffic.
    pub(crate) fn begin_restore(&self, saved: Vec<Saved>) -> Vec<(Arc<ControlPlane>, super::store::Durable)> {
        let mut planes = self.planes();
        let mut restores = Vec::new();
        for Saved { store, doc } in saved {
            let Some(name) = doc.endpoint.as_ref().map(|e| e.spec.name.clone()) else { continue };
            let plane = ControlPlane::new(&name, self, Some(store));
            plane.begin_restore();
            planes.insert(name, Arc::clone(&plane));
            restores.push((plane, doc));
        }
        restores
    }

    /// Stops serving new scoring requests (503, readiness false) for a graceful shutdown, and
    /// stops every endpoint's versions from growing.
    pub(crate) fn begin_shutdown(&self) {
        self.shared.begin_shutdown();
        for plane in self.all() {
            plane.begin_shutdown();
        }
    }
}
