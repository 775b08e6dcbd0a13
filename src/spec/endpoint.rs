//! `endpoint.yml`: the endpoint's name, auth mode and routing rules (CONTRACT §2).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{names::validate_name, traffic, SpecError, Traffic};

/// Cloud-only keys: accepted so the Azure files parse unchanged, reported as ignored.
const CLOUD_ONLY: &[&str] = &["identity", "public_network_access", "compute", "kind"];

/// How `/score` callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    pub traffic: Traffic,
    /// Shadow traffic percentages (at most one deployment).
    #[serde(default)]
    pub mirror_traffic: Traffic,
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
        let known = ["name", "description", "tags", "auth_mode", "traffic", "mirror_traffic"];
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
        Ok((EndpointSpec { name, description, tags, auth_mode, traffic, mirror_traffic }, ignored))
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
