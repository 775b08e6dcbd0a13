//! The admin API's answers and small inputs, as types: what the CLI, the Python SDK and the
//! studio page read. The OpenAPI document (`server/openapi.rs`) is generated from these and
//! the spec types they embed, so a field added, renamed or removed here changes the document,
//! and the clients' contract tests see it (`docs/CONTRACT.md` §5).
//!
//! Views serialize straight to the answer body: no `json!` literal between the state and the
//! wire. Optional parts are left out when absent (`skip_serializing_if`), except where a null
//! says something (`rollback: null`: none happened).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::rollout::{Event, GateValues, PassedStep, Rollback, RolloutSource, RolloutStatus};
use crate::deployment::{InstanceCounts, ProvisioningState, Restart};
use crate::endpoint::auth::{IssuedToken, KeyType};
use crate::mirror::{ReportView, ShareView};
use crate::spec::{DeploymentSpec, EndpointSpec, ModelSpec, RolloutDocument, Traffic, TrafficAffinity};

/// `GET /v1/endpoint` (and the answer of every endpoint change): the endpoint as accepted,
/// where to call it, and where its rollout, config folder and secrets stand.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct EndpointView {
    #[serde(flatten)]
    pub spec: EndpointSpec,
    /// `http://HOST:PORT/endpoints/NAME/score` on the scoring plane (the bare `/score` also
    /// reaches it while it is the server's only endpoint).
    pub scoring_uri: String,
    /// The scoring plane's Azure-style swagger document.
    pub swagger_uri: String,
    /// The same document (Azure names both).
    pub openapi_uri: String,
    /// Always `Succeeded`: an endpoint is created in one step.
    pub provisioning_state: ProvisioningState,
    /// The rollout's short form, while one exists (never its plan: a shown endpoint written
    /// back as a file starts nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout_status: Option<RolloutSummary>,
    /// `--config-dir` mode: the folder that owns the state and its last refused change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_dir: Option<ConfigDirView>,
    /// `--secrets-dir`: where the keys come from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<SecretsDirView>,
    /// On `PUT`: keys of the document that only mean something in Azure (accepted, ignored).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// `config_dir` in the endpoint's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ConfigDirView {
    pub path: String,
    /// Why the last change of the files was refused (null once a change applied).
    pub last_error: Option<String>,
}

/// `secrets_dir` in the endpoint's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct SecretsDirView {
    pub path: String,
    /// Equal on replicas that hold the same Secret.
    pub fingerprint: String,
    /// When the secrets were read (RFC 3339).
    pub loaded_at: String,
    /// Why the last edit of the files was refused, if it was.
    pub last_error: Option<String>,
}

/// `rollout_status` in the endpoint's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct RolloutSummary {
    pub to: String,
    pub status: RolloutStatus,
    /// The current step (`mirror:10`, `25`).
    pub step: String,
    pub step_index: usize,
    /// How many steps the plan has.
    pub steps: usize,
    pub source: RolloutSource,
    pub rollback: Option<Rollback>,
}

/// `GET /v1/deployments/{name}`: the spec (while a replacement loads, the one being loaded)
/// and the deployment's state.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DeploymentView {
    #[serde(flatten)]
    pub spec: DeploymentSpec,
    pub provisioning_state: ProvisioningState,
    /// Why it failed, or why nothing serves while instances are replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub instances: InstancesView,
    /// Instances being replaced: why, and when the next try is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<Restart>,
    /// Why an instance was taken out of service (a run outlived its deadline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hung_reason: Option<String>,
    /// Worker processes, when an instance has more than one (`WORKER_COUNT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<WorkersView>,
    /// How long the last version took to load, in milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_ms: Option<f64>,
    /// An update that failed while the previous version kept serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failed_update: Option<FailedUpdateView>,
    /// The effective mirror share while this deployment is (or was) the mirror target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<ShareView>,
    /// Its data collector at work (a `data_collector` with a collection on): where the
    /// records go, how many were written, dropped or refused by the disk, the last disk error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_collector_status: Option<crate::collector::CollectorView>,
    /// Its batching at work (`batching:` set): runs so far, and the mean rows per run over
    /// the last minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batching_status: Option<crate::deployment::batch::BatchingStatus>,
}

/// `GET .../deployments/{name}/collected`: a deployment's records, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct CollectedView {
    pub deployment: String,
    /// The deployment's folder under the data folder.
    pub folder: String,
    /// The collection read (null: all).
    pub collection: Option<String>,
    /// The oldest time read (RFC 3339; null: any).
    pub since: Option<String>,
    /// More records match than were answered (raise `limit`, or narrow `since`).
    pub more: bool,
    /// Record files that could not be read (removed meanwhile by the size cap, or not plain
    /// files): skipped.
    pub skipped_files: usize,
    /// The collector's counts and last error, while the deployment collects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::collector::CollectorView>,
    /// The records as written (JSON lines, Azure's record shape), newest first.
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<serde_json::Value>,
}

/// `instances` in a deployment's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct InstancesView {
    #[serde(flatten)]
    pub counts: InstanceCounts,
    /// Instance inits that failed since the deployment was made.
    pub failed_inits_total: u64,
}

/// `workers` in a deployment's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct WorkersView {
    #[serde(flatten)]
    pub counts: InstanceCounts,
    pub per_instance: usize,
}

/// `last_failed_update` in a deployment's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct FailedUpdateView {
    pub error: String,
    /// When it failed (RFC 3339).
    pub at: String,
    pub instance_count: u32,
    pub model: ModelSpec,
}

/// `GET /v1/endpoint/keys`: the two keys, or in `aml_token` mode a fresh token.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum CredentialsView {
    Keys(KeysView),
    Token(IssuedToken),
}

/// The endpoint's keys (either is accepted as `Authorization: Bearer <key>`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeysView {
    pub primary_key: String,
    pub secondary_key: String,
}

/// `POST /v1/endpoint/keys/regenerate`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
pub(crate) struct RegenerateKeyInput {
    #[serde(rename = "keyType")]
    pub key_type: KeyType,
}

/// `PATCH /v1/endpoint`: the fields that may change (each optional; `traffic` replaces the
/// whole split; `null` clears `description` and `traffic_affinity`). The control plane's
/// `PATCHABLE` list is checked against this type's fields by a test.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[allow(dead_code)] // A schema: the patch is applied field by field from its JSON.
pub(crate) struct EndpointPatch {
    #[schema(inline)]
    pub traffic: Option<Traffic>,
    #[schema(inline)]
    pub mirror_traffic: Option<Traffic>,
    pub description: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub tags: Option<BTreeMap<String, serde_json::Value>>,
    pub traffic_affinity: Option<TrafficAffinity>,
}

/// `POST /v1/deployments/{name}/comparison/reset`: a new tolerance (each optional; the
/// current one stays for a field left out).
#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
pub(crate) struct ToleranceInput {
    pub atol: Option<f64>,
    pub rtol: Option<f64>,
}

/// `GET /v1/endpoint/rollout`: the plan, where it stands, the current step with its time
/// left and gate values so far, the steps passed, the rollback and the history.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct RolloutView {
    pub to: String,
    pub status: RolloutStatus,
    pub source: RolloutSource,
    pub plan: RolloutDocument,
    /// The live split when the rollout started (an abort returns to it).
    #[schema(inline)]
    pub from: Traffic,
    /// The split of the last live step that passed; a rollback returns to it.
    #[schema(inline)]
    pub last_good: Traffic,
    pub started_at: String,
    pub passed: Vec<PassedStep>,
    pub rollback: Option<Rollback>,
    pub events: Vec<Event>,
    /// Every window the evidence gates judged (plans with `confidence`): the gates'
    /// estimates, intervals, statistics and p-values, and what the rollout did.
    pub judged: Vec<super::rollout::JudgedWindow>,
    /// Plans with evidence gates: what each step needs, estimated at the start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<super::needs::PlanNeeds>,
    pub step: StepView,
}

/// `step` in the rollout's view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct StepView {
    pub index: usize,
    /// How many steps the plan has.
    pub of: usize,
    pub step: String,
    #[schema(inline)]
    pub traffic: Traffic,
    #[schema(inline)]
    pub mirror_traffic: Traffic,
    /// While the rollout runs and the step's window has started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// While the rollout runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_ms: Option<u64>,
    /// The gate values of the window so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gates: Option<GateValues>,
}

/// `GET /v1/deployments/{name}/comparison`: the report since its last reset, with the rule
/// it describes.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ComparisonView {
    #[serde(flatten)]
    pub report: ReportView,
    pub deployment: String,
    /// Copies waiting for the shadow now.
    pub queued: usize,
    /// The mirror rule's percentage for this deployment now.
    pub mirror_percent: u32,
    pub mirror: ShareView,
    /// The deployments with live traffic (the other side of each pair).
    pub live_deployments: Vec<String>,
}

/// `GET /v1/metrics`: cumulative counts per deployment; a reader takes rates and quantiles
/// from two reads.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MetricsView {
    /// When the counts were read (milliseconds since the Unix epoch).
    pub time_ms: u64,
    /// The endpoint's name, null without one (a poller learns there is none without a 404);
    /// on `GET /v1/metrics` of a server holding several, null (each deployment names its own).
    pub endpoint: Option<String>,
    pub deployments: Vec<DeploymentMetrics>,
}

/// One deployment in `GET /v1/metrics`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct DeploymentMetrics {
    /// The endpoint the deployment belongs to.
    pub endpoint: String,
    pub name: String,
    /// Requests admitted and not answered yet.
    pub inflight: usize,
    pub instances: MetricInstances,
    pub live: LiveMetrics,
    pub mirror: RoleMetrics,
}

/// Instance counts in `GET /v1/metrics`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct MetricInstances {
    pub ready: usize,
    pub loading: usize,
    pub draining: usize,
    pub failed: usize,
}

/// Live requests: the role's counts and their outcome.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct LiveMetrics {
    #[serde(flatten)]
    pub role: RoleMetrics,
    pub ok: u64,
    pub errors: u64,
}

/// Requests of one role (live or mirror copies): count, total seconds, duration histogram.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct RoleMetrics {
    pub requests: u64,
    pub seconds_sum: f64,
    pub buckets: Vec<Bucket>,
}

/// One cumulative histogram bucket: requests that took at most `le` seconds (`null`: +Inf).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Bucket {
    pub le: Option<f64>,
    pub count: u64,
}

/// A confirmation (`DELETE`, `regenerate`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Message {
    pub message: String,
}

impl Message {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self { message: message.into() }
    }
}
