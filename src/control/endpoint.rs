//! Endpoint operations: create/replace, update (traffic, mirror, description, tags), delete,
//! credentials.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::{json, Value};

use super::ControlError;
use super::{ControlPlane, EndpointRecord, State};
use crate::deployment::ProvisioningState;
use crate::endpoint::auth::KeyType;
use crate::spec::{traffic, AuthMode, EndpointSpec, Traffic};

/// Fields `PATCH /v1/endpoint` may change.
const PATCHABLE: &[&str] = &["traffic", "mirror_traffic", "description", "tags", "traffic_affinity"];

impl ControlPlane {
    /// `PUT /v1/endpoint`: creates the endpoint, or replaces its settings if it is the same one.
    /// Returns the endpoint view, whether it was created, and the ignored keys.
    pub(crate) fn put_endpoint(&self, body: Value) -> Result<(Value, bool, Vec<String>), ControlError> {
        let (spec, ignored) = EndpointSpec::from_value(body)?;
        if spec.rollout.is_some() {
            return Err(ControlError::invalid(
                "`rollout` is read from endpoint.yml in --config-dir mode only: through the API, start one with POST /v1/endpoint/rollout",
            ));
        }
        let mut state = self.lock();
        let created = match &state.endpoint {
            Some(existing) if existing.spec.name != spec.name => {
                return Err(ControlError::Conflict(format!(
                    "this server hosts endpoint {:?}; one process serves one endpoint: delete it first, or start another `switchyard serve`",
                    existing.spec.name
                )))
            }
            Some(_) => false,
            None => true,
        };
        let names: BTreeSet<String> = state.deployments.keys().cloned().collect();
        let (live, mirror) = traffic::validate(&spec.traffic, &spec.mirror_traffic, &names)?;
        check_can_serve(&state, &live)?;
        self.check_no_rollout(&state, &live, &mirror)?;
        let before = state.clone();
        let old_mirror = state.endpoint.as_ref().map(|e| e.spec.mirror_traffic.clone()).unwrap_or_default();
        let (credentials, pending) = match state.endpoint.take() {
            Some(old) if old.credentials.auth_mode == spec.auth_mode => (old.credentials, old.all_traffic_on_ready),
            Some(old) => (self.new_credentials(spec.auth_mode), old.all_traffic_on_ready),
            None => (self.new_credentials(spec.auth_mode), None),
        };
        let new_mirror = mirror.clone();
        state.endpoint = Some(EndpointRecord {
            spec: EndpointSpec { traffic: live, mirror_traffic: mirror, ..spec },
            credentials,
            all_traffic_on_ready: pending,
        });
        self.commit(&mut state, before)?;
        self.reset_comparisons(&state, &old_mirror, &new_mirror);
        Ok((self.endpoint_view(&state), created, ignored))
    }

    /// `PATCH /v1/endpoint`: changes traffic, mirror rule, description or tags. Traffic given
    /// replaces the whole split (deployments not named get 0).
    pub(crate) fn patch_endpoint(&self, body: Value) -> Result<Value, ControlError> {
        let Value::Object(fields) = body else {
            return Err(ControlError::invalid(
                "an endpoint update must be a JSON object, e.g. {\"traffic\": {\"blue\": 90, \"green\": 10}}",
            ));
        };
        if let Some(key) = fields.keys().find(|k| !PATCHABLE.contains(&k.as_str())) {
            return Err(ControlError::invalid(format!(
                "endpoint field `{key}` cannot be updated; updatable fields: {}",
                PATCHABLE.join(", ")
            )));
        }
        let mut state = self.lock();
        let names: BTreeSet<String> = state.deployments.keys().cloned().collect();
        let Some(ep) = &state.endpoint else {
            return Err(no_endpoint());
        };
        let new_traffic = match fields.get("traffic") {
            Some(v) => traffic::from_json(v, "traffic")?,
            None => ep.spec.traffic.clone(),
        };
        let new_mirror = match fields.get("mirror_traffic") {
            Some(v) => traffic::from_json(v, "mirror_traffic")?,
            None => ep.spec.mirror_traffic.clone(),
        };
        let (live, mirror) = traffic::validate(&new_traffic, &new_mirror, &names)?;
        check_can_serve(&state, &live)?;
        self.check_no_rollout(&state, &live, &mirror)?;
        let traffic_affinity = match fields.get("traffic_affinity") {
            None => ep.spec.traffic_affinity.clone(),
            Some(v) => crate::spec::TrafficAffinity::from_value(v)?,
        };
        let description = match fields.get("description") {
            None => ep.spec.description.clone(),
            Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(ControlError::invalid(format!("description must be a string, got {other}"))),
        };
        let tags = match fields.get("tags") {
            None => ep.spec.tags.clone(),
            Some(Value::Object(m)) => m.clone().into_iter().collect(),
            Some(_) => return Err(ControlError::invalid("tags must be a mapping of name to value")),
        };
        let old_mirror = ep.spec.mirror_traffic.clone();
        let before = state.clone();
        let new_mirror = mirror.clone();
        let ep = state.endpoint.as_mut().expect("checked above while holding the lock");
        ep.spec.traffic = live;
        ep.spec.mirror_traffic = mirror;
        ep.spec.description = description;
        ep.spec.tags = tags;
        ep.spec.traffic_affinity = traffic_affinity;
        self.commit(&mut state, before)?;
        self.reset_comparisons(&state, &old_mirror, &new_mirror);
        Ok(self.endpoint_view(&state))
    }

    /// `DELETE /v1/endpoint`: removes the endpoint and every deployment; requests in flight
    /// finish on the pools they hold.
    pub(crate) fn delete_endpoint(&self) -> Result<(), ControlError> {
        let mut state = self.lock();
        if state.endpoint.is_none() {
            return Err(no_endpoint());
        }
        let before = state.clone();
        let removed: Vec<_> = std::mem::take(&mut state.deployments).into_values().collect();
        state.endpoint = None;
        self.end_rollout_with_endpoint(&mut state);
        self.commit(&mut state, before)?;
        drop(state);
        for record in removed {
            self.retire_record(record);
        }
        Ok(())
    }

    /// `GET /v1/endpoint`.
    pub(crate) fn get_endpoint(&self) -> Result<Value, ControlError> {
        let state = self.lock();
        if state.endpoint.is_none() {
            return Err(no_endpoint());
        }
        Ok(self.endpoint_view(&state))
    }

    /// `GET /v1/endpoint/keys`: the keys, or a fresh token in `aml_token` mode.
    pub(crate) fn credentials(&self) -> Result<Value, ControlError> {
        let state = self.lock();
        let ep = state.endpoint.as_ref().ok_or_else(no_endpoint)?;
        Ok(match ep.credentials.auth_mode {
            AuthMode::Key => json!({
                "primaryKey": ep.credentials.primary_key,
                "secondaryKey": ep.credentials.secondary_key,
            }),
            AuthMode::AmlToken => {
                serde_json::to_value(ep.credentials.issue_token(SystemTime::now())).unwrap_or(Value::Null)
            }
        })
    }

    /// `POST /v1/endpoint/keys/regenerate`: replaces one key at once; the other keeps working.
    pub(crate) fn regenerate_key(&self, body: Value) -> Result<(), ControlError> {
        let which: KeyType =
            body.get("keyType").cloned().and_then(|v| serde_json::from_value(v).ok()).ok_or_else(|| {
                ControlError::invalid("expected {\"keyType\": \"primary\"} or {\"keyType\": \"secondary\"}")
            })?;
        if let Some(dir) = self.secrets_dir() {
            return Err(ControlError::Conflict(format!(
                "the endpoint's keys come from the files in {} (--secrets-dir, a mounted Secret) and are shared by every replica: regenerating one here would split them; write a new key into the Secret's {} (or {}) instead, and every replica takes it (docs/KUBERNETES.md, \"Rotating keys\")",
                dir.display(),
                super::secrets::SECONDARY_KEY,
                super::secrets::PRIMARY_KEY,
            )));
        }
        let mut state = self.lock();
        let before = state.clone();
        let ep = state.endpoint.as_mut().ok_or_else(no_endpoint)?;
        if ep.credentials.auth_mode != AuthMode::Key {
            return Err(ControlError::invalid(
                "this endpoint uses auth_mode aml_token: it has no keys to regenerate (its credentials are tokens, issued on request)",
            ));
        }
        ep.credentials.regenerate(which);
        self.commit(&mut state, before)
    }

    /// The endpoint as `show` prints it.
    pub(super) fn endpoint_view(&self, state: &State) -> Value {
        let Some(ep) = &state.endpoint else {
            return Value::Null;
        };
        let base = self.scoring_base.get().cloned().unwrap_or_default();
        let mut spec = serde_json::to_value(&ep.spec).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut spec {
            m.insert("scoring_uri".into(), json!(format!("{base}/score")));
            m.insert("swagger_uri".into(), json!(format!("{base}/swagger.json")));
            m.insert("openapi_uri".into(), json!(format!("{base}/swagger.json")));
            m.insert("provisioning_state".into(), json!("Succeeded"));
            if let Some(rollout) = self.rollout_summary(state) {
                m.insert("rollout_status".into(), rollout);
            }
            if let Some(dir) = self.declarative_dir() {
                let last_error = self.config_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
                m.insert(
                    "config_dir".into(),
                    json!({
                        "path": dir.display().to_string(),
                        "last_error": last_error,
                    }),
                );
            }
            if let Some(secrets) = self.secrets_view() {
                m.insert("secrets_dir".into(), secrets);
            }
        }
        spec
    }
}

/// Positive traffic may only go to a deployment that can answer: not one still loading its
/// first instances, and not one whose init failed.
pub(super) fn check_can_serve(state: &State, live: &Traffic) -> Result<(), ControlError> {
    let current = state.endpoint.as_ref().map(|e| &e.spec.traffic);
    for (name, percent) in live {
        let had = current.and_then(|t| t.get(name)).copied().unwrap_or(0);
        if *percent == 0 || had > 0 {
            continue;
        }
        let Some(record) = state.deployments.get(name) else {
            continue;
        };
        if record.live.pool().ready() > 0 {
            continue;
        }
        return Err(match record.live.state().get() {
            ProvisioningState::Failed => ControlError::Conflict(format!(
                "deployment {name:?} failed and cannot receive traffic: {}",
                record.live.state().error().unwrap_or_default()
            )),
            state => ControlError::Conflict(format!(
                "deployment {name:?} is {state:?} and has no ready instance yet: give it traffic once it has Succeeded"
            )),
        });
    }
    Ok(())
}

pub(super) fn no_endpoint() -> ControlError {
    ControlError::NotFound("this server hosts no endpoint: create one first".into())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use serde_json::{json, Value};

    use super::super::{ControlError, ControlOptions, ControlPlane};
    use crate::telemetry::Metrics;

    /// A control plane in process, with no state folder: the endpoint rules need no server.
    fn control() -> (tokio::runtime::Runtime, Arc<ControlPlane>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let options = ControlOptions {
            token_lifetime: Duration::from_secs(3600),
            tolerance: Default::default(),
            key_grace: Duration::from_secs(60),
        };
        let cp = rt.block_on(async { ControlPlane::new(Metrics::new(), options, None) });
        (rt, cp)
    }

    fn keys(cp: &ControlPlane) -> (Value, Value) {
        let k = cp.credentials().unwrap();
        (k["primaryKey"].clone(), k["secondaryKey"].clone())
    }

    #[test]
    fn an_endpoint_is_created_once_and_only_it_replaces_itself() {
        let (_rt, cp) = control();
        let (view, created, _) = cp.put_endpoint(json!({"name": "my-ep", "auth_mode": "key"})).unwrap();
        assert!(created);
        assert_eq!(view["name"], "my-ep");
        let before_keys = keys(&cp);
        let (_, created, _) =
            cp.put_endpoint(json!({"name": "my-ep", "auth_mode": "key", "description": "d"})).unwrap();
        assert!(!created, "the same endpoint again is a replace");
        assert_eq!(keys(&cp), before_keys, "a replace with the same auth mode keeps the keys");
        let other = cp.put_endpoint(json!({"name": "other-ep", "auth_mode": "key"})).unwrap_err();
        assert!(matches!(&other, ControlError::Conflict(m) if m.contains("\"my-ep\"")), "{other}");
        assert_eq!(cp.get_endpoint().unwrap()["name"], "my-ep", "the refused PUT changed nothing");
        let rollout = cp
            .put_endpoint(
                json!({"name": "my-ep", "rollout": {"to": "green", "steps": "50,100", "step_duration": "60s"}}),
            )
            .unwrap_err();
        assert!(rollout.to_string().contains("POST /v1/endpoint/rollout"), "{rollout}");
    }

    #[test]
    fn a_patch_naming_an_unknown_deployment_or_field_changes_nothing() {
        let (_rt, cp) = control();
        cp.put_endpoint(json!({"name": "my-ep", "auth_mode": "key"})).unwrap();
        let before = cp.get_endpoint().unwrap();
        let ghost = cp.patch_endpoint(json!({"traffic": {"ghost": 100}})).unwrap_err();
        assert!(ghost.to_string().contains("ghost"), "{ghost}");
        let field = cp.patch_endpoint(json!({"colour": "blue"})).unwrap_err();
        assert!(field.to_string().contains("`colour`") && field.to_string().contains("traffic"), "{field}");
        let not_object = cp.patch_endpoint(json!([1])).unwrap_err();
        assert!(not_object.to_string().contains("JSON object"), "{not_object}");
        let tags = cp.patch_endpoint(json!({"tags": "x"})).unwrap_err();
        assert!(tags.to_string().contains("mapping"), "{tags}");
        assert_eq!(cp.get_endpoint().unwrap(), before);
        let changed = cp.patch_endpoint(json!({"description": "new", "tags": {"team": "ml"}})).unwrap();
        assert_eq!(changed["description"], "new");
        assert_eq!(changed["tags"]["team"], "ml");
    }

    #[test]
    fn regenerating_one_key_leaves_the_other_and_bad_requests_change_nothing() {
        let (_rt, cp) = control();
        cp.put_endpoint(json!({"name": "my-ep", "auth_mode": "key"})).unwrap();
        let (primary, secondary) = keys(&cp);
        cp.regenerate_key(json!({"keyType": "secondary"})).unwrap();
        let (p2, s2) = keys(&cp);
        assert_eq!(p2, primary);
        assert_ne!(s2, secondary);
        for bad in [json!({}), json!({"keyType": "tertiary"}), json!("primary")] {
            let e = cp.regenerate_key(bad.clone()).unwrap_err();
            assert!(e.to_string().contains("keyType"), "{bad}: {e}");
        }
        assert_eq!(keys(&cp), (p2, s2));
        cp.put_endpoint(json!({"name": "my-ep", "auth_mode": "aml_token"})).unwrap();
        let token = cp.regenerate_key(json!({"keyType": "primary"})).unwrap_err();
        assert!(token.to_string().contains("aml_token"), "{token}");
    }

    #[test]
    fn without_an_endpoint_every_operation_says_so_and_delete_removes_it() {
        let (_rt, cp) = control();
        let none = |r: Result<Value, ControlError>| matches!(r, Err(ControlError::NotFound(_)));
        assert!(none(cp.get_endpoint()));
        assert!(none(cp.credentials()));
        assert!(none(cp.patch_endpoint(json!({"description": "x"}))));
        assert!(matches!(cp.delete_endpoint(), Err(ControlError::NotFound(_))));
        cp.put_endpoint(json!({"name": "my-ep"})).unwrap();
        cp.delete_endpoint().unwrap();
        assert!(none(cp.get_endpoint()));
    }
}
