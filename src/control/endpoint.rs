//! Endpoint operations: create/replace, update (traffic, mirror, description, tags), delete,
//! credentials.

use std::collections::BTreeSet;
use std::time::SystemTime;

use serde_json::Value;

use super::views::{ConfigDirView, CredentialsView, EndpointView, KeysView};
use super::ControlError;
use super::{ControlPlane, EndpointRecord, State};
use crate::deployment::ProvisioningState;
use crate::endpoint::auth::KeyType;
use crate::spec::{traffic, AuthMode, EndpointSpec, Traffic};

/// Fields `PATCH /v1/endpoint` may change.
const PATCHABLE: &[&str] = &["traffic", "mirror_traffic", "description", "tags", "traffic_affinity"];

impl ControlPlane {
    /// `PUT /v1/endpoint`: creates the endpoint, or replaces its settings if it is the same one.
    /// Returns the endpoint view (with the document's `ignored` keys) and whether it was
    /// created.
    pub(crate) fn put_endpoint(
        &self,
        spec: EndpointSpec,
        ignored: Vec<String>,
    ) -> Result<(EndpointView, bool), ControlError> {
        if spec.rollout.is_some() {
            return Err(ControlError::invalid(
                "`rollout` is read from endpoint.yml in --config-dir mode only: through the API, start one with POST /v1/endpoint/rollout",
            ));
        }
        let mut state = self.lock();
        let created = match &state.endpoint {
            _ if state.retired => return Err(ControlError::Retry),
            _ if spec.name != self.name => {
                return Err(ControlError::invalid(format!(
                    "the document names endpoint {:?}, not {:?}",
                    spec.name, self.name
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
            Some(old) if old.credentials.auth_mode() == spec.auth_mode => (old.credentials, old.all_traffic_on_ready),
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
        let mut view = self.endpoint_view(&state).ok_or_else(no_endpoint)?;
        view.ignored_fields = ignored;
        Ok((view, created))
    }

    /// `PATCH /v1/endpoint`: changes traffic, mirror rule, description or tags. Traffic given
    /// replaces the whole split (deployments not named get 0).
    pub(crate) fn patch_endpoint(&self, body: Value) -> Result<EndpointView, ControlError> {
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
        self.endpoint_view(&state).ok_or_else(no_endpoint)
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
    pub(crate) fn get_endpoint(&self) -> Result<EndpointView, ControlError> {
        let state = self.lock();
        self.endpoint_view(&state).ok_or_else(no_endpoint)
    }

    /// `GET /v1/endpoint/keys`: the keys, or a fresh token in `aml_token` mode.
    pub(crate) fn credentials(&self) -> Result<CredentialsView, ControlError> {
        let state = self.lock();
        let ep = state.endpoint.as_ref().ok_or_else(no_endpoint)?;
        Ok(match ep.credentials.auth_mode() {
            AuthMode::Key => CredentialsView::Keys(KeysView {
                primary_key: ep.credentials.keys().0.to_string(),
                secondary_key: ep.credentials.keys().1.to_string(),
            }),
            AuthMode::AmlToken => CredentialsView::Token(ep.credentials.issue_token(SystemTime::now())),
        })
    }

    /// `POST /v1/endpoint/keys/regenerate`: replaces one key at once; the other keeps working.
    pub(crate) fn regenerate_key(&self, which: KeyType) -> Result<(), ControlError> {
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
        if ep.credentials.auth_mode() != AuthMode::Key {
            return Err(ControlError::invalid(
                "this endpoint uses auth_mode aml_token: it has no keys to regenerate (its credentials are tokens, issued on request)",
            ));
        }
        ep.credentials.regenerate(which);
        self.commit(&mut state, before)
    }

    /// The endpoint as `show` prints it; `None` without one.
    pub(super) fn endpoint_view(&self, state: &State) -> Option<EndpointView> {
        let ep = state.endpoint.as_ref()?;
        let base = self.shared.scoring_base.get().map(String::as_str).unwrap_or_default();
        let base = format!("{base}/endpoints/{}", self.name);
        let config_dir = self.declarative_dir().map(|dir| ConfigDirView {
            path: dir.display().to_string(),
            last_error: self.config_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        });
        Some(EndpointView {
            spec: ep.spec.clone(),
            scoring_uri: format!("{base}/score"),
            swagger_uri: format!("{base}/swagger.json"),
            openapi_uri: format!("{base}/swagger.json"),
            provisioning_state: ProvisioningState::Succeeded,
            rollout_status: self.rollout_summary(state),
            config_dir,
            secrets_dir: self.secrets_view(),
            ignored_fields: Vec::new(),
        })
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

    use serde_json::json;

    use super::super::views::{CredentialsView, EndpointView};
    use super::super::{ControlError, ControlOptions, ControlPlane};
    use crate::endpoint::auth::KeyType;
    use crate::spec::EndpointSpec;
    use crate::telemetry::Metrics;

    /// A control plane in process, with no state folder: the endpoint rules need no server.
    fn control() -> (tokio::runtime::Runtime, Arc<ControlPlane>) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let options = ControlOptions {
            token_lifetime: Duration::from_secs(3600),
            tolerance: Default::default(),
            key_grace: Duration::from_secs(60),
        };
        let cp = rt.block_on(async { super::super::Workspace::new(Metrics::new(), options, None).plane_for("my-ep") });
        let cp = cp.unwrap().0;
        (rt, cp)
    }

    /// A `PUT /v1/endpoint` of this document, as the admin API makes it.
    fn put(cp: &ControlPlane, doc: serde_json::Value) -> Result<(EndpointView, bool), ControlError> {
        let (spec, ignored) = EndpointSpec::from_value(doc)?;
        cp.put_endpoint(spec, ignored)
    }

    fn keys(cp: &ControlPlane) -> (String, String) {
        match cp.credentials().unwrap() {
            CredentialsView::Keys(k) => (k.primary_key, k.secondary_key),
            CredentialsView::Token(_) => panic!("a key endpoint answered with a token"),
        }
    }

    #[test]
    fn an_endpoint_is_created_once_and_only_it_replaces_itself() {
        let (_rt, cp) = control();
        let (view, created) = put(&cp, json!({"name": "my-ep", "auth_mode": "key", "kind": "x"})).unwrap();
        assert!(created);
        assert_eq!(view.spec.name, "my-ep");
        assert!(
            matches!(view.ignored_fields.as_slice(), [k] if k.starts_with("kind ")),
            "a cloud-only key is accepted and reported: {:?}",
            view.ignored_fields
        );
        let before_keys = keys(&cp);
        let (_, created) = put(&cp, json!({"name": "my-ep", "auth_mode": "key", "description": "d"})).unwrap();
        assert!(!created, "the same endpoint again is a replace");
        assert_eq!(keys(&cp), before_keys, "a replace with the same auth mode keeps the keys");
        let other = put(&cp, json!({"name": "other-ep", "auth_mode": "key"})).unwrap_err();
        assert!(matches!(&other, ControlError::Spec(_)) && other.to_string().contains("\"other-ep\""), "{other}");
        assert_eq!(cp.get_endpoint().unwrap().spec.name, "my-ep", "the refused PUT changed nothing");
        let rollout =
            put(&cp, json!({"name": "my-ep", "rollout": {"to": "green", "steps": "50,100", "step_duration": "60s"}}))
                .unwrap_err();
        assert!(rollout.to_string().contains("POST /v1/endpoint/rollout"), "{rollout}");
    }

    #[test]
    fn a_patch_naming_an_unknown_deployment_or_field_changes_nothing() {
        let (_rt, cp) = control();
        put(&cp, json!({"name": "my-ep", "auth_mode": "key"})).unwrap();
        let before = cp.get_endpoint().unwrap().spec;
        let ghost = cp.patch_endpoint(json!({"traffic": {"ghost": 100}})).unwrap_err();
        assert!(ghost.to_string().contains("ghost"), "{ghost}");
        let field = cp.patch_endpoint(json!({"colour": "blue"})).unwrap_err();
        assert!(field.to_string().contains("`colour`") && field.to_string().contains("traffic"), "{field}");
        let not_object = cp.patch_endpoint(json!([1])).unwrap_err();
        assert!(not_object.to_string().contains("JSON object"), "{not_object}");
        let tags = cp.patch_endpoint(json!({"tags": "x"})).unwrap_err();
        assert!(tags.to_string().contains("mapping"), "{tags}");
        assert_eq!(cp.get_endpoint().unwrap().spec, before);
        let changed = cp.patch_endpoint(json!({"description": "new", "tags": {"team": "ml"}})).unwrap();
        assert_eq!(changed.spec.description.as_deref(), Some("new"));
        assert_eq!(changed.spec.tags["team"], "ml");
    }

    #[test]
    fn regenerating_one_key_leaves_the_other_and_bad_requests_change_nothing() {
        let (_rt, cp) = control();
        put(&cp, json!({"name": "my-ep", "auth_mode": "key"})).unwrap();
        let (primary, secondary) = keys(&cp);
        cp.regenerate_key(KeyType::Secondary).unwrap();
        let (p2, s2) = keys(&cp);
        assert_eq!(p2, primary);
        assert_ne!(s2, secondary);
        put(&cp, json!({"name": "my-ep", "auth_mode": "aml_token"})).unwrap();
        let token = cp.regenerate_key(KeyType::Primary).unwrap_err();
        assert!(token.to_string().contains("aml_token"), "{token}");
    }

    /// The fields a patch may change are the ones the admin API's document shows for it.
    #[test]
    fn the_patchable_fields_are_the_documented_ones() {
        use utoipa::openapi::schema::Schema;
        use utoipa::openapi::RefOr;
        let RefOr::T(Schema::Object(schema)) = <super::super::views::EndpointPatch as utoipa::PartialSchema>::schema()
        else {
            panic!("EndpointPatch is an object schema");
        };
        let documented: Vec<&str> = schema.properties.keys().map(String::as_str).collect();
        assert_eq!(documented, super::PATCHABLE);
    }

    #[test]
    fn without_an_endpoint_every_operation_says_so_and_delete_removes_it() {
        let (_rt, cp) = control();
        fn none<T>(r: Result<T, ControlError>) -> bool {
            matches!(r, Err(ControlError::NotFound(_)))
        }
        assert!(none(cp.get_endpoint()));
        assert!(none(cp.credentials()));
        assert!(none(cp.patch_endpoint(json!({"description": "x"}))));
        assert!(none(cp.delete_endpoint()));
        put(&cp, json!({"name": "my-ep"})).unwrap();
        cp.delete_endpoint().unwrap();
        assert!(none(cp.get_endpoint()));
    }
}
