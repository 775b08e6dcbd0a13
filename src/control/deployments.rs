//! Deployment operations: create or replace, update (scale in place, or replace when the model
//! or hook changes), delete, and the background loads that finish them.

use std::sync::Arc;

use serde_json::Value;

use super::endpoint::no_endpoint;
use super::{ControlPlane, DeploymentRecord, State};
use crate::deployment::{Deployment, ProvisioningState};
use crate::spec::{DeploymentSpec, SpecError, MAX_DEPLOYMENTS};

/// Fields whose change needs new instances (the model or the hook changes).
const REPLACING_FIELDS: &[&str] = &["model", "code_configuration", "environment", "environment_variables"];

impl ControlPlane {
    /// `PUT /v1/deployments/{name}`: creates a deployment, or replaces an existing one (the old
    /// version serves until the new one is ready). Loading runs in the background; the answer
    /// shows `Creating`/`Updating`. With `all_traffic`, the deployment gets 100% of live
    /// traffic the moment it is ready.
    pub fn put_deployment(
        self: &Arc<Self>,
        name: &str,
        body: Value,
        all_traffic: bool,
    ) -> Result<(Value, bool), SpecError> {
        let body = with_name(body, name)?;
        let (spec, _ignored) = DeploymentSpec::from_value(body)?;
        let mut state = self.lock();
        self.check_endpoint_name(&state, &spec)?;
        let exists = state.deployments.contains_key(name);
        if !exists && state.deployments.len() >= MAX_DEPLOYMENTS {
            return Err(SpecError::conflict(format!("an endpoint holds at most {MAX_DEPLOYMENTS} deployments")));
        }
        if let Some(record) = state.deployments.get(name) {
            let s = record.live.state.get();
            if s.is_busy() {
                return Err(busy(name, s));
            }
        }
        let kind = spec.hook_kind()?;
        let before = state.clone();
        state.next_generation += 1;
        let generation = state.next_generation;
        let fresh = Deployment::new(&spec, kind, &self.metrics, self.options.tolerance, self.runtime.clone());
        if exists {
            // The new spec is what was asked for (and what a restart loads); the old version
            // serves until the new one is ready.
            let record = state.deployments.get_mut(name).expect("checked above");
            record.spec = spec.clone();
            record.generation = generation;
        } else {
            state.deployments.insert(
                name.to_string(),
                DeploymentRecord { spec: spec.clone(), live: Arc::clone(&fresh), generation },
            );
        }
        if let Some(ep) = state.endpoint.as_mut() {
            ep.spec.traffic.entry(name.to_string()).or_insert(0);
            if all_traffic {
                ep.all_traffic_on_ready = Some(name.to_string());
            }
        }
        self.commit(&mut state, before)?;
        if exists {
            let record = state.deployments.get(name).expect("checked above");
            record.live.state.set(ProvisioningState::Updating, None);
        }
        let view = self.deployment_view(state.deployments.get(name).expect("inserted or present"));
        drop(state);
        self.load_in_background(spec, fresh, generation);
        Ok((view, !exists))
    }

    /// `PATCH /v1/deployments/{name}`: merges the given fields (JSON merge patch) into the
    /// deployment. A change of instance count, request settings or labels is applied in place
    /// (scaling adds or drains instances without dropping a request); a change of the model or
    /// hook replaces the deployment as `PUT` does.
    pub fn patch_deployment(self: &Arc<Self>, name: &str, patch: Value) -> Result<Value, SpecError> {
        if !patch.is_object() {
            return Err(SpecError::invalid("a deployment update must be a JSON object, e.g. {\"instance_count\": 2}"));
        }
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| unknown_deployment(name, &state))?;
        let mut merged = serde_json::to_value(&record.spec).unwrap_or(Value::Null);
        merge_patch(&mut merged, &patch);
        let replace = REPLACING_FIELDS.iter().any(|f| patch.get(*f).is_some());
        if replace {
            drop(state);
            return self.put_deployment(name, merged, false).map(|(v, _)| v);
        }
        let merged = with_name(merged, name)?;
        let (spec, _) = DeploymentSpec::from_value(merged)?;
        drop(state);
        let mut state = self.lock();
        if !state.deployments.contains_key(name) {
            return Err(unknown_deployment(name, &state));
        }
        let record = state.deployments.get_mut(name).expect("checked above");
        let current = record.live.state.get();
        if current.is_busy() {
            return Err(busy(name, current));
        }
        if current == ProvisioningState::Failed && record.live.pool.ready() == 0 {
            return Err(SpecError::conflict(format!(
                "deployment {name:?} failed to load; fix it with `online-deployment update -f` (replace) or delete it"
            )));
        }
        let from = record.spec.instance_count as usize;
        let to = spec.instance_count as usize;
        let before = state.clone();
        let record = state.deployments.get_mut(name).expect("checked above");
        record.spec = spec;
        self.commit(&mut state, before)?;
        let record = state.deployments.get(name).expect("checked above");
        record.live.apply_settings(&record.spec);
        let live = Arc::clone(&record.live);
        let view = if from != to {
            live.state.set(ProvisioningState::Updating, None);
            let view = self.deployment_view(record);
            drop(state);
            self.scale_in_background(live, from, to);
            view
        } else {
            self.deployment_view(record)
        };
        Ok(view)
    }

    /// `DELETE /v1/deployments/{name}`: refused while it has live traffic; removes the mirror
    /// rule if it is the shadow. Requests in flight finish first.
    pub fn delete_deployment(&self, name: &str) -> Result<(), SpecError> {
        let mut state = self.lock();
        if !state.deployments.contains_key(name) {
            return Err(unknown_deployment(name, &state));
        }
        let before = state.clone();
        if let Some(ep) = state.endpoint.as_mut() {
            let live = ep.spec.traffic.get(name).copied().unwrap_or(0);
            if live > 0 {
                return Err(SpecError::conflict(format!(
                    "deployment {name:?} has {live}% of live traffic: move its traffic to other deployments first (`online-endpoint update --traffic`)"
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
        self.retire(record.live);
        Ok(())
    }

    /// `GET /v1/deployments/{name}`.
    pub fn get_deployment(&self, name: &str) -> Result<Value, SpecError> {
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| unknown_deployment(name, &state))?;
        Ok(self.deployment_view(record))
    }

    /// `GET /v1/deployments`.
    pub fn list_deployments(&self) -> Result<Value, SpecError> {
        let state = self.lock();
        if state.endpoint.is_none() {
            return Err(no_endpoint());
        }
        Ok(Value::Array(state.deployments.values().map(|r| self.deployment_view(r)).collect()))
    }

    /// `GET /v1/deployments/{name}/logs?lines=N`.
    pub fn deployment_logs(&self, name: &str, lines: usize) -> Result<Vec<String>, SpecError> {
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| unknown_deployment(name, &state))?;
        Ok(record.live.logs.tail(lines))
    }

    /// Drains and drops a deployment that left the routing table.
    pub(super) fn retire(&self, deployment: Arc<Deployment>) {
        deployment.state.set(ProvisioningState::Deleting, None);
        deployment.logs.push("deployment removed: draining in-flight requests");
        self.metrics.remove_deployment(&deployment.name);
        self.runtime.spawn(async move {
            let n = deployment.pool.ready();
            deployment.pool.remove(n).await;
        });
    }

    fn load_in_background(self: &Arc<Self>, spec: DeploymentSpec, fresh: Arc<Deployment>, generation: u64) {
        let cp = Arc::clone(self);
        self.runtime.spawn(async move {
            let count = spec.instance_count as usize;
            fresh.logs.push(format!("loading {count} instance(s)"));
            let started = std::time::Instant::now();
            let outcome = fresh.pool.add(count).await;
            fresh.load_micros.store(started.elapsed().as_micros() as u64, std::sync::atomic::Ordering::Relaxed);
            cp.finish_load(spec, fresh, generation, outcome).await;
        });
    }

    pub(super) async fn finish_load(
        &self,
        spec: DeploymentSpec,
        fresh: Arc<Deployment>,
        generation: u64,
        outcome: Result<(), String>,
    ) {
        // Decide under the lock, then drain outside it (draining waits for requests).
        let to_drain = self.apply_load(&spec.name, &fresh, generation, outcome);
        if let Some(stale) = to_drain {
            let n = stale.pool.ready();
            stale.pool.remove(n).await;
        }
    }

    /// Records the outcome of a background load. Returns a pool to drain, if any.
    fn apply_load(
        &self,
        name: &str,
        fresh: &Arc<Deployment>,
        generation: u64,
        outcome: Result<(), String>,
    ) -> Option<Arc<Deployment>> {
        let name = name.to_string();
        let mut state = self.lock();
        let current = state.deployments.get(&name).filter(|r| r.generation == generation).map(|r| Arc::clone(&r.live));
        let Some(current) = current else {
            // Deleted or replaced again while loading: this version never serves.
            fresh.state.set(ProvisioningState::Deleting, None);
            return Some(Arc::clone(fresh));
        };
        let replacing = !Arc::ptr_eq(&current, fresh);
        match outcome {
            Ok(()) => {
                fresh.state.set(ProvisioningState::Succeeded, None);
                fresh.logs.push(format!("ready: {} instance(s)", fresh.pool.ready()));
                tracing::info!(deployment = %name, "deployment ready");
                let record = state.deployments.get_mut(&name).expect("found above");
                record.live = Arc::clone(fresh);
                if let Some(ep) = state.endpoint.as_mut().filter(|e| e.all_traffic_on_ready.as_deref() == Some(&name)) {
                    for (n, w) in ep.spec.traffic.iter_mut() {
                        *w = if *n == name { 100 } else { 0 };
                    }
                    // A deployment with live traffic cannot also be the shadow.
                    ep.spec.mirror_traffic.remove(&name);
                    ep.all_traffic_on_ready = None;
                }
                self.commit_background(&state);
                drop(state);
                if replacing {
                    current.logs.push("replaced by a new version: draining");
                    self.retire(current);
                }
                None
            }
            Err(error) => {
                tracing::warn!(deployment = %name, %error, "deployment failed to load");
                fresh.logs.push(format!("init failed: {error}"));
                if replacing {
                    current.state.set(
                        ProvisioningState::Failed,
                        Some(format!("update failed, the previous version keeps serving: {error}")),
                    );
                } else {
                    fresh.state.set(ProvisioningState::Failed, Some(error));
                }
                if let Some(ep) = state.endpoint.as_mut().filter(|e| e.all_traffic_on_ready.as_deref() == Some(&name)) {
                    // A failed create takes no traffic.
                    ep.all_traffic_on_ready = None;
                    self.commit_background(&state);
                }
                // Instances that did load are released: a failed version holds nothing.
                Some(Arc::clone(fresh))
            }
        }
    }

    fn scale_in_background(&self, deployment: Arc<Deployment>, from: usize, to: usize) {
        self.runtime.spawn(async move {
            deployment.logs.push(format!("scaling from {from} to {to} instance(s)"));
            let outcome = if to > from {
                deployment.pool.add(to - from).await
            } else {
                deployment.pool.remove(from - to).await;
                Ok(())
            };
            match outcome {
                Ok(()) => {
                    deployment.logs.push(format!("scaled to {} instance(s)", deployment.pool.ready()));
                    deployment.state.set(ProvisioningState::Succeeded, None);
                }
                Err(e) => {
                    deployment.logs.push(format!("scale-up failed: {e}"));
                    deployment.state.set(ProvisioningState::Failed, Some(format!("scale-up failed: {e}")));
                }
            }
        });
    }

    fn check_endpoint_name(&self, state: &State, spec: &DeploymentSpec) -> Result<(), SpecError> {
        let ep = state.endpoint.as_ref().ok_or_else(|| {
            SpecError::conflict(
                "this server has no endpoint yet: create it before its deployments (`online-endpoint create`)",
            )
        })?;
        match &spec.endpoint_name {
            Some(n) if *n != ep.spec.name => Err(SpecError::invalid(format!(
                "deployment {:?} is for endpoint {n:?}, but this server hosts endpoint {:?}",
                spec.name, ep.spec.name
            ))),
            _ => Ok(()),
        }
    }

    /// A deployment as `show` prints it: the spec plus state, error and instance counts.
    fn deployment_view(&self, record: &DeploymentRecord) -> Value {
        let mut v = serde_json::to_value(&record.spec).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            let state = record.live.state.get();
            m.insert("provisioning_state".into(), serde_json::json!(state));
            if let Some(e) = record.live.state.error() {
                m.insert("error".into(), Value::String(e));
            }
            m.insert("instances".into(), serde_json::json!(record.live.pool.counts()));
            let load = record.live.load_micros.load(std::sync::atomic::Ordering::Relaxed);
            if load > 0 {
                m.insert("load_ms".into(), serde_json::json!(load as f64 / 1000.0));
            }
            if let Some(ep) = self.published_endpoint_name() {
                m.entry("endpoint_name").or_insert(Value::String(ep));
            }
            if let Some(mirror) = self.mirror_view(record) {
                m.insert("mirror".into(), mirror);
            }
        }
        v
    }

    /// The endpoint's name from the routing snapshot (readable while the state lock is held).
    fn published_endpoint_name(&self) -> Option<String> {
        self.routing.load().endpoint.as_ref().map(|e| e.name.clone())
    }
}

/// Sets the body's `name` from the URL (or checks they agree).
fn with_name(body: Value, name: &str) -> Result<Value, SpecError> {
    let Value::Object(mut m) = body else {
        return Err(SpecError::invalid("a deployment must be a JSON or YAML mapping of fields"));
    };
    match m.get("name") {
        None | Some(Value::Null) => {
            m.insert("name".into(), Value::String(name.to_string()));
        }
        Some(Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(SpecError::invalid(format!(
                "the body names deployment {other}, but the URL names {name:?}: they must agree"
            )))
        }
    }
    Ok(Value::Object(m))
}

/// RFC 7396 JSON merge patch: objects merge key by key, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn busy(name: &str, state: ProvisioningState) -> SpecError {
    SpecError::conflict(format!(
        "deployment {name:?} is {state:?}: wait until the current operation finishes (`online-deployment show`)"
    ))
}

pub(super) fn unknown_deployment(name: &str, state: &State) -> SpecError {
    if state.endpoint.is_none() {
        return no_endpoint();
    }
    let known: Vec<&str> = state.deployments.keys().map(String::as_str).collect();
    SpecError::not_found(format!(
        "deployment {name:?} does not exist (deployments: {})",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    ))
}

#[cfg(test)]
mod tests {
    use super::merge_patch;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &json!({"a": 5, "b": {"c": null, "e": 4}}));
        assert_eq!(t, json!({"a": 5, "b": {"d": 3, "e": 4}}));
    }
}
