//! `endpoint.yml`: the endpoint's name, auth mode and routing rules (CONTRACT §2).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rollout::RolloutPlan;
use super::{names::validate_name, traffic, SpecError, Traffic};

/// Cloud-only keys: accepted so the Azure files parse unchanged, reported as ignored.
const CLOUD_ONLY: &[&str] = &["identity", "public_network_access", "compute", "kind"];

/// How `/score` callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthMode {
    /// A primary and a secondary key, either accepted (`Authorization: Bearer <key>`).
    #[default]
    Key,
    /// Short-lived tokens issued by `get-credentials`.
    AmlToken,
}

/// A parsed, validated-in-isolation endpoint definition. Rules that depend on the deployments
/// (traffic names, mirror) are checked by the control plane against its state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointSpec {
    /// The endpoint's name (CONTRACT §1 naming rule).
    pub name: String,
    /// Free text shown by `show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// User labels, kept as given.
    #[serde(default)]
    pub tags: BTreeMap<String, Value>,
    /// `key` (default) or `aml_token`.
    #[serde(default)]
    pub auth_mode: AuthMode,
    /// Live traffic percentages by deployment.
    #[serde(default)]
    #[schema(inline)]
    pub traffic: Traffic,
    /// Shadow traffic percentages (at most one deployment).
    #[serde(default)]
    #[schema(inline)]
    pub mirror_traffic: Traffic,
    /// Sticky assignment (local extension): requests carrying this header are routed by a
    /// stable hash of its value, so one user keeps one deployment while the weights hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_affinity: Option<TrafficAffinity>,
    /// A guarded rollout to run (local extension, read from endpoint.yml in `--config-dir`
    /// mode only; the admin API starts one with `POST /v1/endpoint/rollout`). Never part of
    /// the accepted state: its progress is reported apart and never written back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(ignore)]
    pub rollout: Option<RolloutPlan>,
}

/// `traffic_affinity: {header: x-user-id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrafficAffinity {
    /// The request header whose value picks the deployment (lower case).
    pub header: String,
}

impl TrafficAffinity {
    /// Reads `{header: NAME}` (null: no affinity). The name must be a valid HTTP header name
    /// and not the pin header, which always wins anyway.
    pub fn from_value(value: &Value) -> Result<Option<Self>, SpecError> {
        let header = match value {
            Value::Null => return Ok(None),
            Value::Object(m) => {
                if let Some(key) = m.keys().find(|k| k.as_str() != "header") {
                    return Err(SpecError::invalid(format!(
                        "unknown traffic_affinity field `{key}`: expected `header`, e.g. {{header: x-user-id}}"
                    )));
                }
                m.get("header").and_then(Value::as_str).unwrap_or("")
            }
            _ => "",
        };
        let valid = !header.is_empty()
            && header.len() <= 64
            && header.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid {
            return Err(SpecError::invalid(format!(
                "traffic_affinity must be {{header: NAME}} with NAME an HTTP header name of at most 64 characters (e.g. x-user-id), got {value}"
            )));
        }
        let header = header.to_ascii_lowercase();
        if header == "azureml-model-deployment" || header == "authorization" {
            return Err(SpecError::invalid(format!("traffic_affinity cannot use the {header} header")));
        }
        Ok(Some(Self { header }))
    }
}

impl EndpointSpec {
    /// Reads and parses an `endpoint.yml` file.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<String>), SpecError> {
        let text = super::limits::read_document_file(path)?;
        Self::from_value(super::yaml_to_json(&text, &path.display().to_string())?)
    }

    /// Builds a spec from a JSON/YAML document. Returns it with the list of keys that were
    /// accepted but have no effect here, so the caller can tell the user.
    pub fn from_value(value: Value) -> Result<(Self, Vec<String>), SpecError> {
        let Value::Object(mut map) = value else {
            return Err(SpecError::invalid("an endpoint must be a mapping of fields (name, auth_mode, traffic, ...)"));
        };
        map.remove("$schema");
        let mut ignored = Vec::new();
        for key in CLOUD_ONLY {
            if map.remove(*key).is_some() {
                ignored.push(format!("{key} (cloud-only; no effect here)"));
            }
        }
        let known =
            ["name", "description", "tags", "auth_mode", "traffic", "mirror_traffic", "traffic_affinity", "rollout"];
        if let Some(key) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(SpecError::invalid(format!(
                "unknown endpoint field `{key}`: expected one of {}",
                known.join(", ")
            )));
        }
        let name = match map.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(SpecError::invalid(format!("endpoint name must be a string, got {other}"))),
            None => return Err(SpecError::invalid("endpoint.yml needs a `name`")),
        };
        validate_name("endpoint", &name)?;
        let auth_mode = match map.get("auth_mode").and_then(Value::as_str) {
            None if map.get("auth_mode").is_none_or(Value::is_null) => AuthMode::Key,
            Some("key") => AuthMode::Key,
            Some("aml_token") => AuthMode::AmlToken,
            Some("aad_token") => {
                return Err(SpecError::invalid(
                    "auth_mode aad_token needs Microsoft Entra ID, which a local endpoint cannot reach: use `key` or `aml_token`",
                ))
            }
            _ => {
                return Err(SpecError::invalid(format!(
                    "auth_mode must be `key` or `aml_token`, got {}",
                    map["auth_mode"]
                )))
            }
        };
        let description = match map.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        let tags = match map.get("tags") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m.clone().into_iter().collect(),
            Some(_) => return Err(SpecError::invalid("tags must be a mapping of name to value")),
        };
        let traffic = traffic::from_json(map.get("traffic").unwrap_or(&Value::Null), "traffic")?;
        let mirror_traffic = traffic::from_json(map.get("mirror_traffic").unwrap_or(&Value::Null), "mirror_traffic")?;
        let traffic_affinity = TrafficAffinity::from_value(map.get("traffic_affinity").unwrap_or(&Value::Null))?;
        let rollout = match map.get("rollout") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                RolloutPlan::from_value(v)
                    .map_err(|e| SpecError { message: format!("rollout: {}", e.message), ..e })?,
            ),
        };
        Ok((
            EndpointSpec { name, description, tags, auth_mode, traffic, mirror_traffic, traffic_affinity, rollout },
            ignored,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_endpoint() {
        let text = "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineEndpoint.schema.json\nname: my-endpoint\nauth_mode: key\n";
        let (spec, ignored) = EndpointSpec::from_value(crate::spec::yaml_to_json(text, "t").unwrap()).unwrap();
        assert_eq!(spec.name, "my-endpoint");
        assert_eq!(spec.auth_mode, AuthMode::Key);
        assert!(ignored.is_empty());
    }

    #[test]
    fn reports_cloud_keys_and_refuses_aad() {
        let text = "name: ep-1\nidentity:\n  type: system_assigned\npublic_network_access: enabled\n";
        let (_, ignored) = EndpointSpec::from_value(crate::spec::yaml_to_json(text, "t").unwrap()).unwrap();
        assert_eq!(ignored.len(), 2);
        let err = EndpointSpec::from_value(serde_json::json!({"name": "ep-1", "auth_mode": "aad_token"})).unwrap_err();
        assert!(err.message.contains("aad_token"));
        assert!(EndpointSpec::from_value(serde_json::json!({"auth_mode": "key"})).is_err());
        assert!(EndpointSpec::from_value(serde_json::json!({"name": "e"})).is_err());
    }
}
