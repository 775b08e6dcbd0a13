//! The Azure CLI v2 file formats (`endpoint.yml`, deployment YAML) and the rules a valid endpoint
//! obeys. Everything here is pure: parsing and validation with no I/O beyond reading the file,
//! so the control plane can check a change completely before it touches any running state.
#![forbid(unsafe_code)]

pub mod data_collector;
pub mod deployment;
pub mod endpoint;
pub mod error;
pub mod limits;
pub mod names;
pub mod python;
pub mod reference;
pub mod rollout;
pub mod traffic;

pub use data_collector::{DataCollector, RollingRate};
pub use deployment::{resolve_scoring_script, Batching, DeploymentSpec, HookKind, Isolation, ModelSpec, NativePlugin};
pub use endpoint::{AuthMode, EndpointSpec, TrafficAffinity};
pub use error::{SpecError, SpecErrorKind};
pub use reference::{parse_reference, AssetKind, AssetRef};
pub use rollout::{EvidencePlan, OnInconclusive, RolloutDocument, RolloutPlan, Step};
pub use traffic::{parse_assignments, Traffic};

/// The most deployments one endpoint may hold (Azure's limit, CONTRACT §1).
pub const MAX_DEPLOYMENTS: usize = 20;
/// The most endpoints one server holds (each with up to [`MAX_DEPLOYMENTS`] deployments).
pub const MAX_ENDPOINTS: usize = 50;

/// Parses YAML text into a generic JSON value, so that both the YAML files and the admin API's
/// JSON bodies go through the same typed deserialisation and the same error messages. The
/// document is checked against the size and nesting limits first (see [`limits`]).
pub fn yaml_to_json(text: &str, what: &str) -> Result<serde_json::Value, SpecError> {
    limits::check_document(text.as_bytes(), what)?;
    let value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| SpecError::invalid(format!("{what} is not valid YAML: {e}")))?;
    match value {
        serde_json::Value::Object(_) => Ok(value),
        serde_json::Value::Null => Err(SpecError::invalid(format!("{what} is empty"))),
        _ => Err(SpecError::invalid(format!("{what} must be a YAML mapping of fields (name: ..., ...)"))),
    }
}
