//! Deployment operations: create or replace, update (scale in place, or replace when the model
//! or hook changes), delete, and the background loads that finish them.

use std::sync::{Arc, MutexGuard};

use serde_json::Value;

use super::endpoint::no_endpoint;
use super::store::FailedUpdate;
use super::views::{DeploymentView, FailedUpdateView, InstancesView, WorkersView};
use super::ControlError;
use super::{ControlPlane, DeploymentRecord, PendingVersion, State};
use crate::deployment::{Deployment, LoadError, ProvisioningState};
use crate::spec::{DeploymentSpec, HookKind, MAX_DEPLOYMENTS};

/// Fields whose change needs new instances (the model or the hook changes).
const REPLACING_FIELDS: &[&str] =
    &["model", "code_configuration", "environment", "environment_variables", "data_collector", "batching"];

impl ControlPlane {
    /// `PUT /v1/deployments/{name}`: creates a deployment, or replaces an existing one (the old
    /// version serves until the new one is ready). Loading runs in the background; the answer
    /// shows `Creating`/`Updating`. With `all_traffic`, the deployment gets 100% of live
    /// traffic the moment it is ready. Finding the hook reads the disk (the model folder, the
    /// scoring script): the admin API calls this off its workers.
    pub(crate) fn put_deployment(
        self: &Arc<Self>,
        mut spec: DeploymentSpec,
        all_traffic: bool,
    ) -> Result<(DeploymentView, bool), ControlError> {
        // Held to the save: an archive cannot slip between resolving and using a version.
        let _assets = self.shared.asset_gate();
        let current = self.lock().deployments.get(&spec.name).map(|r| r.spec.clone());
        self.resolve_assets(&mut spec, current.as_ref())?;
        let kind = self.loader.hook_kind(&spec)?;
        self.loader.check_new(&spec, &kind)?;
        let mut state = self.lock();
        self.put_locked(&mut state, spec, kind, all_traffic)
    }

    /// Creates or replaces, with the state lock held from validation to publish, so no other
    /// change can slip in between.
    fn put_locked(
        self: &Arc<Self>,
        state: &mut MutexGuard<'_, State>,
        spec: DeploymentSpec,
        kind: HookKind,
        all_traffic: bool,
    ) -> Result<(DeploymentView, bool), ControlError> {
        let name = spec.name.clone();
        self.check_endpoint_name(state, &spec)?;
        let exists = state.deployments.contains_key(&name);
        if !exists && state.deployments.len() >= MAX_DEPLOYMENTS {
            return Err(ControlError::Conflict(format!("an endpoint holds at most {MAX_DEPLOYMENTS} deployments")));
        }
        if let Some(record) = state.deployments.get(&name) {
            let s = record.live.state().get();
            if s.is_busy() && !supersedable(record) {
                return Err(busy(&name, s));
            }
        }
        let before = state.clone();
        state.next_load_id += 1;
        let load_id = state.next_load_id;
        let fresh = self.new_version(&spec, kind);
        let mut replaced = None;
        // A replacement still loading is superseded: it never serves, and its pool is closed
        // once this change is saved (its workers in init are killed).
        let superseded = state.deployments.get_mut(&name).and_then(|r| r.pending.take());
        match state.deployments.get_mut(&name) {
            // Something serves: the new version loads beside it and takes over once ready.
            Some(record) if record.live.pool().ready() > 0 => {
                record.pending = Some(PendingVersion { spec: spec.clone(), pool: Arc::clone(&fresh) });
                record.load_id = load_id;
            }
            // Nothing serves (a failed create): the new version takes its place at once.
            Some(record) => {
                replaced = Some(record.replace_live(Arc::clone(&fresh), self.options.tolerance));
                record.spec = spec.clone();
                record.load_id = load_id;
                record.last_failure = None;
            }
            None => {
                let record = DeploymentRecord::new(spec.clone(), Arc::clone(&fresh), load_id, self.options.tolerance);
                state.deployments.insert(name.clone(), record);
            }
        }
        if let Some(ep) = state.endpoint.as_mut() {
            ep.spec.traffic.entry(name.clone()).or_insert(0);
            if all_traffic {
                ep.all_traffic_on_ready = Some(name.clone());
            }
        }
        self.commit(state, before)?;
        let record = state.deployments.get(&name).expect("inserted or present");
        if record.pending.is_some() {
            record.live.state().set(ProvisioningState::Updating, None);
        }
        let view = self.deployment_view(record);
        if let Some(old) = superseded {
            record.live.logs().push("a newer update supersedes the one still loading: its instances are stopped");
            self.retire(old.pool);
        }
        if let Some(old) = replaced {
            self.retire(old);
        }
        self.load_in_background(spec, fresh, load_id);
        Ok((view, !exists))
    }

    /// `PATCH /v1/deployments/{name}`: merges the given fields (JSON merge patch) into the
    /// deployment as it serves. A change of instance count, request settings or labels is
    /// applied in place (scaling adds or drains instances without dropping a request); a change
    /// of the model or hook replaces the deployment as `PUT` does. The lock is held from the
    /// merge to the publish: two concurrent patches cannot lose each other's fields.
    pub(crate) fn patch_deployment(self: &Arc<Self>, name: &str, patch: Value) -> Result<DeploymentView, ControlError> {
        if !patch.is_object() {
            return Err(ControlError::invalid(
                "a deployment update must be a JSON object, e.g. {\"instance_count\": 2}",
            ));
        }
        let mut state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| unknown_deployment(name, &state))?;
        let current = record.live.state().get();
        let replacing = REPLACING_FIELDS.iter().any(|f| patch.get(*f).is_some());
        // A change of the model or hook supersedes an update still loading, as a PUT does; a
        // change in place (instance count, settings) waits for it.
        if current.is_busy() && !(replacing && supersedable(record)) {
            return Err(busy(name, current));
        }
        let mut merged = serde_json::to_value(&record.spec).unwrap_or(Value::Null);
        // A new model or environment source replaces the old one whole: merged key by key, a
        // `path` sent would keep the registered model's `reference`, which then wins.
        for (field, sources) in [
            ("model", &["path", "reference"][..]),
            ("environment", &["conda_file", "python", "image", "reference"][..]),
        ] {
            if patch.get(field).and_then(Value::as_object).is_some_and(|p| sources.iter().any(|k| p.contains_key(*k))) {
                merged[field] = Value::Null;
            }
        }
        // RFC 7396: objects merge key by key, `null` removes, anything else replaces.
        json_patch::merge(&mut merged, &patch);
        let (mut spec, _) = DeploymentSpec::from_request(merged, name, None)?;
        // A merge patch may name another endpoint: refused here as a PUT's document is (saved,
        // it would stop the next start).
        self.check_endpoint_name(&state, &spec)?;
        if replacing {
            // Finding the hook reads the disk: not while holding the lock. The change goes in
            // only if the deployment is still the one the patch was merged into.
            let based_on = (record.load_id, record.spec.clone());
            drop(state);
            let _assets = self.shared.asset_gate();
            self.resolve_assets(&mut spec, Some(&based_on.1))?;
            let kind = self.loader.hook_kind(&spec)?;
            self.loader.check_new(&spec, &kind)?;
            let mut state = self.lock();
            let unchanged =
                state.deployments.get(name).is_some_and(|r| (r.load_id, &r.spec) == (based_on.0, &based_on.1));
            if !unchanged {
                return Err(ControlError::Conflict(format!(
                    "deployment {name:?} changed while this update was prepared: send it again"
                )));
            }
            return self.put_locked(&mut state, spec, kind, false).map(|(v, _)| v);
        }
        if current == ProvisioningState::Failed && record.live.pool().ready() == 0 {
            return Err(ControlError::Conflict(format!(
                "deployment {name:?} failed to load; replace it (new model, code or environment) or delete it"
            )));
        }
        // Scaling starts from what runs, never from a count that was asked for and failed.
        let counts = record.live.pool().counts();
        // Instances waiting out a replacement's backoff count too: they come back by themselves.
        let from = counts.ready + counts.loading + counts.restarting;
        let to = spec.instance_count as usize;
        let before = state.clone();
        let record = state.deployments.get_mut(name).expect("checked above");
        record.spec = spec;
        self.commit(&mut state, before)?;
        let record = state.deployments.get(name).expect("checked above");
        record.live.apply_settings(&record.spec);
        if from != to {
            record.live.state().set(ProvisioningState::Updating, None);
            let view = self.deployment_view(record);
            let live = Arc::clone(&record.live);
            drop(state);
            self.scale_in_background(live, from, to);
            return Ok(view);
        }
        if current == ProvisioningState::Failed {
            // A change that went through while the version serves (checked above: a failed
            // version with nothing ready was refused) ends the failure shown: the deployment is
            // Succeeded again, the failure stays under `last_failed_update`.
            record.live.pool().forget_failed();
            record.live.state().set(ProvisioningState::Succeeded, None);
            record
                .live
                .logs()
                .push("update applied: Succeeded again (the last failure stays under last_failed_update)");
        }
        Ok(self.deployment_view(record))
    }

    /// `DELETE /v1/deployments/{name}`: refused while it has live traffic; removes the mirror
    /// rule if it is the shadow. Requests in flight finish first; loads still running stop.
    pub(crate) fn delete_deployment(&self, name: &str) -> Result<(), ControlError> {
        let mut state = self.lock();
        if !state.deployments.contains_key(name) {
            return Err(unknown_deployment(name, &state));
        }
        self.check_rollout_keeps(&state, name)?;
        let before = state.clone();
        if let Some(ep) = state.endpoint.as_mut() {
            let live = ep.spec.traffic.get(name).copied().unwrap_or(0);
            if live > 0 {
                return Err(ControlError::Conflict(format!(
                    "deployment {name:?} has {live}% of live traffic: move its traffic to other deployments first (the endpoint's traffic)"
                )));
            }
            ep.spec.traffic.remove(name);
            ep.spec.mirror_traffic.remove(name);
            if ep.all_traffic_on_ready.as_deref() == Some(name) {
                ep.all_traffic_on_ready = None;
            }
        }
        let record = state.deployments.remove(name).expect("checked above");
        self.commit(&mut state, before)?;
        drop(state);
        self.retire_record(record);
        Ok(())
    }

    /// `GET /v1/deployments/{name}`.
    pub(crate) fn get_deployment(&self, name: &str) -> Result<DeploymentView, ControlError> {
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| unknown_deployment(name, &state))?;
        Ok(self.deployment_view(record))
    }

    /// `GET /v1/deployments`.
    pub(crate) fn list_deployments(&self) -> Result<Vec<DeploymentView>, ControlError> {
        let state = self.lock();
        if state.endpoint.is_none() {
            return Err(no_endpoint());
        }
        Ok(state.deployments.values().map(|r| self.deployment_view(r)).collect())
    }

    /// `GET /v1/deployments/{name}/logs?lines=N`.
    pub(crate) fn deployment_logs(&self, name: &str, lines: usize) -> Result<Vec<String>, ControlError> {
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| unknown_deployment(name, &state))?;
        Ok(record.live.logs().tail(lines))
    }

    /// Retires a removed deployment: the version that served and a replacement still loading.
    pub(super) fn retire_record(&self, record: DeploymentRecord) {
        if let Some(pending) = record.pending {
            self.retire(pending.pool);
        }
        self.retire(record.live);
    }

    /// Drains and drops a deployment version that left the routing table: loads not finished
    /// are cancelled, requests in flight finish first.
    pub(super) fn retire(&self, deployment: Arc<Deployment>) {
        deployment.pool().close();
        deployment.state().set(ProvisioningState::Deleting, None);
        deployment.logs().push("deployment removed: draining in-flight requests");
        // Gives back this version's hold on the name's series: they go only when no other
        // version (a replacement) holds them.
        deployment.metrics().release();
        self.runtime.spawn(async move {
            let n = deployment.pool().ready();
            deployment.pool().remove(n).await;
        });
    }

    fn load_in_background(self: &Arc<Self>, spec: DeploymentSpec, fresh: Arc<Deployment>, load_id: u64) {
        let cp = Arc::clone(self);
        self.runtime.spawn(async move {
            let count = spec.instance_count as usize;
            fresh.logs().push(format!("loading {count} instance(s)"));
            let started = std::time::Instant::now();
            let outcome = fresh.pool().add(count).await;
            fresh.set_load_time(started.elapsed());
            cp.finish_load(&spec.name, fresh, load_id, outcome).await;
        });
    }

    pub(super) async fn finish_load(
        &self,
        name: &str,
        fresh: Arc<Deployment>,
        load_id: u64,
        outcome: Result<(), LoadError>,
    ) {
        // Decide under the lock, then drain outside it (draining waits for requests).
        let to_drain = self.apply_load(name, &fresh, load_id, outcome);
        if let Some(stale) = to_drain {
            stale.pool().close();
            let n = stale.pool().ready();
            stale.pool().remove(n).await;
        }
    }

    /// Records the outcome of a background load. Returns a pool to drain, if any.
    fn apply_load(
        &self,
        name: &str,
        fresh: &Arc<Deployment>,
        load_id: u64,
        outcome: Result<(), LoadError>,
    ) -> Option<Arc<Deployment>> {
        let mut state = self.lock();
        let Some(record) = state.deployments.get_mut(name).filter(|r| r.load_id == load_id) else {
            // Deleted or replaced again while loading: this version never serves.
            fresh.state().set(ProvisioningState::Deleting, None);
            return Some(Arc::clone(fresh));
        };
        let replacing = !Arc::ptr_eq(&record.live, fresh);
        match outcome {
            Ok(()) => {
                fresh.state().set(ProvisioningState::Succeeded, None);
                fresh.logs().push(format!("ready: {} instance(s)", fresh.pool().ready()));
                tracing::info!(deployment = %name, "deployment ready");
                let old = if replacing {
                    if let Some(pending) = record.pending.take() {
                        record.spec = pending.spec;
                    }
                    record.last_failure = None;
                    Some(record.replace_live(Arc::clone(fresh), self.options.tolerance))
                } else {
                    None
                };
                if let Some(ep) = state.endpoint.as_mut().filter(|e| e.all_traffic_on_ready.as_deref() == Some(name)) {
                    for (n, w) in ep.spec.traffic.iter_mut() {
                        *w = if n == name { 100 } else { 0 };
                    }
                    // A deployment with live traffic cannot also be the shadow.
                    ep.spec.mirror_traffic.remove(name);
                    ep.all_traffic_on_ready = None;
                }
                self.commit_background(&state);
                drop(state);
                if let Some(old) = old {
                    old.logs().push("replaced by a new version: draining");
                    self.retire(old);
                }
                None
            }
            Err(error) => {
                tracing::warn!(deployment = %name, %error, "deployment failed to load");
                fresh.logs().push(format!("init failed: {error}"));
                if replacing {
                    // The version that serves stays as it is, spec included; the attempt is
                    // kept apart so `show` can say what failed and a restart does not load it.
                    if let Some(pending) = record.pending.take() {
                        record.last_failure = Some(FailedUpdate::now(pending.spec, error.to_string()));
                    }
                    record.live.state().set(
                        ProvisioningState::Failed,
                        Some(format!("update failed, the previous version keeps serving: {error}")),
                    );
                    record.live.logs().push(format!("update failed, this version keeps serving: {error}"));
                } else {
                    fresh.state().set(ProvisioningState::Failed, Some(error.to_string()));
                    // A version that never loaded gets no traffic (CONTRACT §5): a rollout to
                    // it rolls back now, and live traffic it still has (saved before a
                    // restart) goes to the others. Not for a load cancelled by a stop: that
                    // says nothing about the deployment, and the saved traffic must stay.
                    if error != LoadError::Cancelled
                        && !self.shared.shutting_down.load(std::sync::atomic::Ordering::Acquire)
                    {
                        self.roll_back_if_target_failed(&mut state, name, &error.to_string());
                        self.end_rollout_if_source_failed(&mut state, name, &error.to_string());
                        self.drop_failed_traffic(&mut state);
                    }
                }
                if let Some(ep) = state.endpoint.as_mut().filter(|e| e.all_traffic_on_ready.as_deref() == Some(name)) {
                    // A failed create takes no traffic.
                    ep.all_traffic_on_ready = None;
                }
                self.commit_background(&state);
                // Instances that did load are released: a failed version holds nothing.
                Some(Arc::clone(fresh))
            }
        }
    }

    /// Moves the live traffic of deployments whose init failed (`Failed`, nothing loaded) to
    /// the deployments that keep theirs, in proportion to their shares, and logs it in the
    /// process log and both deployments' logs. Until now only a restart could leave such a
    /// share (the saved traffic named a deployment whose model folder was gone): half the
    /// requests were answered 503 while readiness said 200. When no deployment with traffic
    /// loaded, traffic stays as it is (and readiness says 503). The caller saves the change.
    pub(super) fn drop_failed_traffic(&self, state: &mut State) -> bool {
        let failed = |name: &str| {
            state.deployments.get(name).is_some_and(|r| {
                r.live.pool().ready() == 0 && r.live.state().get() == ProvisioningState::Failed && r.pending.is_none()
            })
        };
        let Some(ep) = state.endpoint.as_ref() else { return false };
        let gone: Vec<(String, u32)> =
            ep.spec.traffic.iter().filter(|(n, w)| **w > 0 && failed(n)).map(|(n, w)| (n.clone(), *w)).collect();
        if gone.is_empty() {
            return false;
        }
        let names = gone.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ");
        let Some(next) = crate::spec::traffic::spread(&ep.spec.traffic, |n| !failed(n)) else {
            tracing::error!(deployments = %names, "every deployment with live traffic failed to load: nothing serves");
            return false;
        };
        let moved: u32 = gone.iter().map(|(_, w)| *w).sum();
        let Some(ep) = state.endpoint.as_mut() else { return false };
        for (n, _) in &gone {
            ep.spec.traffic.insert(n.clone(), 0);
        }
        for (n, w) in &next {
            ep.spec.traffic.insert(n.clone(), *w);
        }
        let to = next.iter().map(|(n, w)| format!("{n}={w}")).collect::<Vec<_>>().join(", ");
        let line = format!("failed to load, so its {moved}% of live traffic moved to the others: now {to}");
        tracing::warn!(deployments = %names, "{line}");
        for n in gone.iter().map(|(n, _)| n).chain(next.keys()) {
            if let Some(r) = state.deployments.get(n) {
                r.live.logs().push(format!("traffic: {names} {line}"));
            }
        }
        true
    }

    /// Adds or drains instances of the version that serves. A scale-up that fails part-way
    /// keeps the instances that loaded and records the count that really serves as the spec
    /// (the failed count is kept apart), so the next scale starts from what runs.
    fn scale_in_background(self: &Arc<Self>, deployment: Arc<Deployment>, from: usize, to: usize) {
        let cp = Arc::clone(self);
        self.runtime.spawn(async move {
            deployment.logs().push(format!("scaling from {from} to {to} instance(s)"));
            let outcome = if to > from {
                deployment.pool().add(to - from).await
            } else {
                deployment.pool().remove(from - to).await;
                Ok(())
            };
            match outcome {
                Ok(()) => {
                    // The count asked for serves: instances that failed before are not wanted.
                    deployment.pool().forget_failed();
                    deployment.logs().push(format!("scaled to {} instance(s)", deployment.pool().ready()));
                    deployment.state().set(ProvisioningState::Succeeded, None);
                }
                Err(LoadError::Cancelled) => {}
                Err(e) => cp.scale_up_failed(&deployment, to, e.to_string()),
            }
        });
    }

    fn scale_up_failed(&self, deployment: &Arc<Deployment>, asked: usize, error: String) {
        let serving = deployment.pool().ready();
        deployment.logs().push(format!("scale-up to {asked} failed, {serving} instance(s) keep serving: {error}"));
        let mut state = self.lock();
        let record = state.deployments.get_mut(deployment.name()).filter(|r| Arc::ptr_eq(&r.live, deployment));
        if let Some(record) = record.filter(|_| serving > 0) {
            let mut attempted = record.spec.clone();
            attempted.instance_count = asked as u32;
            record.spec.instance_count = serving as u32;
            record.last_failure = Some(FailedUpdate::now(attempted, error.clone()));
            deployment.apply_settings(&record.spec);
            self.commit_background(&state);
        }
        deployment.state().set(
            ProvisioningState::Failed,
            Some(format!("scale-up to {asked} failed, {serving} instance(s) keep serving: {error}")),
        );
    }

    fn check_endpoint_name(&self, state: &State, spec: &DeploymentSpec) -> Result<(), ControlError> {
        let ep = state.endpoint.as_ref().ok_or_else(|| {
            ControlError::Conflict("this server hosts no endpoint: create the endpoint before its deployments".into())
        })?;
        match &spec.endpoint_name {
            Some(n) if *n != ep.spec.name => Err(ControlError::invalid(format!(
                "deployment {:?} is for endpoint {n:?}, but this server hosts endpoint {:?} here (the one the request names): send it to endpoint {n:?}, or drop endpoint_name; a deployment stays in its endpoint",
                spec.name, ep.spec.name
            ))),
            _ => Ok(()),
        }
    }

    /// A deployment as `show` prints it: the spec plus state, error and instance counts.
    /// While a replacement loads, the spec shown is the one being loaded (what was just
    /// acknowledged); a failed update shows under `last_failed_update`.
    pub(super) fn deployment_view(&self, record: &DeploymentRecord) -> DeploymentView {
        let mut spec = record.pending.as_ref().map_or(&record.spec, |p| &p.spec).clone();
        let pool = record.live.pool();
        let counts = pool.counts();
        let restart = pool.restart();
        let mut state = record.live.state().get();
        let mut error = record.live.state().error();
        if let Some(r) = restart.as_ref().filter(|_| state == ProvisioningState::Succeeded && counts.ready == 0) {
            // Nothing serves while its instances are being replaced: not `Succeeded`.
            state = ProvisioningState::Failed;
            error = Some(format!(
                "no instance serves: {}; its replacement is retried with backoff{}",
                r.last_error,
                r.next_try_at.as_ref().map(|t| format!(" (next try at {t})")).unwrap_or_default()
            ));
        }
        let per_instance = pool.workers_per_instance();
        let load = record.live.load_time();
        if spec.endpoint_name.is_none() {
            spec.endpoint_name = Some(self.name.clone());
        }
        DeploymentView {
            spec,
            provisioning_state: state,
            error,
            instances: InstancesView { counts, failed_inits_total: pool.failed_inits_total() },
            restart,
            hung_reason: pool.hung_reason(),
            workers: (per_instance > 1).then(|| WorkersView { counts: pool.workers(), per_instance }),
            load_ms: (!load.is_zero()).then(|| load.as_micros() as f64 / 1000.0),
            last_failed_update: record.last_failure.as_ref().map(|failed| FailedUpdateView {
                error: failed.error.clone(),
                at: failed.at.clone(),
                instance_count: failed.spec.instance_count,
                model: failed.spec.model.clone(),
            }),
            mirror: self.mirror_view(record),
            data_collector_status: record.live.collector().map(|c| c.view()),
            batching_status: record.live.batching(),
        }
    }
}

/// Whether a PUT (or a PATCH of the model or hook) may go ahead while the deployment is busy:
/// only when what keeps it busy is a replacement still loading beside the version that
/// serves. That replacement is superseded; the serving version is untouched. A create still
/// loading, a scale or a delete is waited for.
fn supersedable(record: &DeploymentRecord) -> bool {
    record.pending.is_some() && record.live.state().get() == ProvisioningState::Updating
}

fn busy(name: &str, state: ProvisioningState) -> ControlError {
    ControlError::Conflict(format!(
        "deployment {name:?} is {state:?}: wait until the current operation finishes (its provisioning_state)"
    ))
}

pub(super) fn unknown_deployment(name: &str, state: &State) -> ControlError {
    if state.endpoint.is_none() {
        return no_endpoint();
    }
    let known: Vec<&str> = state.deployments.keys().map(String::as_str).collect();
    ControlError::NotFound(format!(
        "deployment {name:?} does not exist (deployments: {})",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    ))
}
