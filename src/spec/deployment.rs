//! Deployment YAML (CONTRACT §2): the model, the scoring hook, the instance count and the
//! request settings of one deployment.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::reference::{parse_reference, AssetKind};
use super::{names::validate_name, SpecError};

/// Keys Azure accepts that have no effect on one machine: kept, reported as ignored.
const CLOUD_ONLY: &[&str] = &["type", "egress_public_network_access", "code_configuration_ref"];

/// `request_settings`: per-request limits of a deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestSettings {
    /// How long one request may take from admission to answer (default 5000, at most 180000).
    #[serde(default = "default_timeout")]
    pub request_timeout_ms: u64,
    /// Requests one instance accepts at once; the admission cap is twice this per instance.
    #[serde(default = "default_concurrency")]
    pub max_concurrent_requests_per_instance: u32,
    /// Deprecated by Azure; accepted and recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue_wait_ms: Option<u64>,
}

fn default_timeout() -> u64 {
    5000
}
fn default_concurrency() -> u32 {
    1
}

impl Default for RequestSettings {
    fn default() -> Self {
        Self {
            request_timeout_ms: default_timeout(),
            max_concurrent_requests_per_instance: default_concurrency(),
            max_queue_wait_ms: None,
        }
    }
}

/// A liveness or readiness probe (recorded; the runtime knows its instances' state directly).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_threshold: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u64>,
}

/// `model:` — a local `path:`, or a registered model (`model: azureml:NAME:VERSION`, which
/// the control plane resolves to the stored copy's path, name and version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelSpec {
    /// The registered model as the deployment names it (`azureml:my-model:1`,
    /// `azureml:my-model@latest`); `path`, `name` and `version` are then what it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// A folder or a file; relative paths resolve against the YAML file's folder. Empty in a
    /// reference not resolved yet.
    #[serde(default)]
    #[schema(value_type = String)]
    pub path: PathBuf,
    /// The model's name, as Open Inference Protocol clients address it
    /// (`/v2/models/{name}/...`); defaults to [`ModelSpec::served_name`]'s fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model's version (Azure's `model.version`), reported by the v2 metadata route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Value>,
}

impl ModelSpec {
    /// The name v2 clients address the model by: `model.name`, or else the base name of
    /// `model.path` without a `.onnx` extension (`models/model-1` and `model-1.onnx` are both
    /// `model-1`), so a deployment written without a name still has a stable one.
    pub fn served_name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let base = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        base.strip_suffix(".onnx").map(str::to_string).unwrap_or(base)
    }

    /// The version as text (Azure allows a number or a string), if any.
    pub fn served_version(&self) -> Option<String> {
        match &self.version {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => Some(v.to_string()),
        }
    }
}

/// `code_configuration:` — where the scoring script lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeConfiguration {
    /// The folder holding the scoring script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub code: Option<PathBuf>,
    /// `score.py` (python hook) or a `.so` (native hook).
    pub scoring_script: String,
}

/// Which scoring hook serves a deployment; chosen from `code_configuration.scoring_script`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookKind {
    /// Built-in ONNX Runtime hook on this `.onnx` file.
    Onnx { model_file: PathBuf },
    /// An Azure ML scoring script (`score.py`) run by worker processes.
    Python(super::python::PythonScript),
    /// A native plugin (`.so`) speaking the C ABI of `runtime/include/switchyard_plugin.h`.
    Native(NativePlugin),
}

/// `isolation:` (a local extension): where a native plugin's instances run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In the server's process (the default): fastest; a crash takes the server down.
    #[default]
    InProcess,
    /// Each instance in a worker process: a crash costs one request and one instance restart.
    Process,
}

/// `batching:` (a local extension, issue 29): concurrent requests to an ONNX deployment
/// stacked along their first dimension and run once. Off when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// The most rows one run stacks (2 to 1024); a request with more runs alone.
    pub max_batch_size: u32,
    /// How long the first request of a batch may wait for others, in microseconds (0 to
    /// 100000; 0, the default, stacks only what is already waiting while an instance is busy).
    #[serde(default)]
    pub max_delay_us: u64,
}

/// The bounds of [`Batching`]'s fields.
pub const MAX_BATCH_SIZE: u32 = 1024;
pub const MAX_BATCH_DELAY_US: u64 = 100_000;

/// A native deployment's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativePlugin {
    /// The shared library: `code_configuration.code` joined with `scoring_script`.
    pub library: PathBuf,
    /// `code_configuration.code`: the worker's working folder under `isolation: process`.
    pub code_dir: PathBuf,
    /// `model.path`: what the plugin's init receives as its model folder (or file).
    pub model_path: PathBuf,
    pub isolation: Isolation,
}

/// One deployment as the user wrote it (paths made absolute).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, Value>,
    pub model: ModelSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_configuration: Option<CodeConfiguration>,
    /// The Python hook's environment (`conda_file`, or the local `python:` extension); the
    /// ONNX hook ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Value>,
    /// Given to the hook's init.
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    #[serde(default = "default_instances")]
    pub instance_count: u32,
    #[serde(default)]
    pub request_settings: RequestSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    #[serde(default)]
    pub app_insights_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_settings: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_collector: Option<Value>,
    /// Local extension: `in_process` (default) or `process`, for native (`.so`) plugins only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// Local extension: adaptive batching, for ONNX models only (issue 29).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batching: Option<Batching>,
}

fn default_instances() -> u32 {
    1
}

/// `WORKER_COUNT` as Azure's server reads it (an integer above zero; spaces around it allowed).
fn parse_worker_count(v: &str) -> Result<u32, SpecError> {
    match v.trim().parse::<u32>() {
        Ok(k) if (1..=MAX_WORKERS).contains(&k) => Ok(k),
        _ => Err(SpecError::invalid(format!(
            "environment_variables.WORKER_COUNT must be a whole number of worker processes per instance, from 1 to {MAX_WORKERS}; got {v:?}"
        ))),
    }
}

/// The most instances one deployment may ask for: each holds a loaded model in memory.
pub const MAX_INSTANCES: u32 = 256;

/// The most worker processes (`instance_count` × `WORKER_COUNT`) one deployment may ask for.
pub const MAX_WORKERS: u32 = MAX_INSTANCES;

impl DeploymentSpec {
    /// Reads a deployment YAML file; relative paths resolve against its folder.
    pub fn from_file(path: &Path) -> Result<(Self, Vec<String>), SpecError> {
        let text = super::limits::read_document_file(path)?;
        let value = super::yaml_to_json(&text, &path.display().to_string())?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        // Absolute, so the server resolves the same files whatever its working folder is.
        let base = std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf());
        let (mut spec, ignored) = Self::from_value(value)?;
        spec.resolve_paths(&base);
        Ok((spec, ignored))
    }

    /// Builds a spec from a JSON/YAML document and checks every rule that needs no state.
    /// Returns the keys that were accepted but have no effect here.
    pub fn from_value(value: Value) -> Result<(Self, Vec<String>), SpecError> {
        let Value::Object(mut map) = value else {
            return Err(SpecError::invalid(
                "a deployment must be a mapping of fields (name, model, instance_count, ...)",
            ));
        };
        map.remove("$schema");
        let mut ignored = Vec::new();
        for key in CLOUD_ONLY {
            if map.remove(*key).is_some() {
                ignored.push(format!("{key} (cloud-only; no effect here)"));
            }
        }
        // Fields the runtime does not read and that must not stop status fields from round-tripping.
        for key in [
            "provisioning_state",
            "error",
            "instances",
            "workers",
            "load_ms",
            "mirror",
            "data_collector_status",
            "batching_status",
        ] {
            map.remove(key);
        }
        match map.get("model") {
            Some(Value::String(s)) if s.starts_with("azureml:") => {
                // A registered model: the control plane resolves it (the spec holds no state).
                parse_reference(AssetKind::Model, s)?;
                let reference = serde_json::json!({ "reference": s });
                map.insert("model".into(), reference);
            }
            Some(Value::String(s)) => {
                return Err(SpecError::invalid(format!(
                    "model must be a mapping with a local path, e.g. `model: {{path: {s}}}`"
                )))
            }
            None => return Err(SpecError::invalid("a deployment needs `model: {path: ...}`")),
            _ => {}
        }
        // Azure lets environment variable values be numbers or booleans; the hook sees strings.
        if let Some(Value::Object(vars)) = map.get_mut("environment_variables") {
            for v in vars.values_mut() {
                if !v.is_string() && !v.is_null() {
                    *v = Value::String(v.to_string());
                }
            }
        }
        if map.get("environment_variables").is_some_and(Value::is_null) {
            map.remove("environment_variables");
        }
        // The path names the field at fault ("request_settings.request_timeout_ms: ...").
        let spec: DeploymentSpec = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path == "." {
                SpecError::invalid(format!("invalid deployment: {inner}"))
            } else {
                SpecError::invalid(format!("invalid deployment field {path}: {inner}"))
            }
        })?;
        spec.check()?;
        Ok((spec, ignored))
    }

    /// Azure's `WORKER_COUNT` from `environment_variables`: worker processes per instance
    /// (1 when unset). Checked by [`Self::from_value`]; an unreadable value counts as 1 here.
    pub fn workers_per_instance(&self) -> u32 {
        self.environment_variables.get("WORKER_COUNT").and_then(|v| parse_worker_count(v).ok()).unwrap_or(1)
    }

    /// The checked `data_collector` (issue 28), when the deployment has one. Checked by
    /// [`Self::from_value`]; an unreadable one counts as none here.
    pub fn collector(&self) -> Option<super::DataCollector> {
        self.data_collector.as_ref().and_then(|v| super::DataCollector::from_value(v).ok())
    }

    /// Rules that need no state: name, counts, limits.
    fn check(&self) -> Result<(), SpecError> {
        validate_name("deployment", &self.name)?;
        if let Some(dc) = &self.data_collector {
            super::DataCollector::from_value(dc)?;
        }
        if let Some(ep) = &self.endpoint_name {
            validate_name("endpoint", ep)?;
        }
        if self.instance_count == 0 || self.instance_count > MAX_INSTANCES {
            return Err(SpecError::invalid(format!(
                "instance_count must be from 1 to {MAX_INSTANCES}, got {}",
                self.instance_count
            )));
        }
        if let Some(v) = self.environment_variables.get("WORKER_COUNT") {
            let k = parse_worker_count(v)?;
            if k.saturating_mul(self.instance_count) > MAX_WORKERS {
                return Err(SpecError::invalid(format!(
                    "instance_count × environment_variables.WORKER_COUNT is {} worker processes; at most {MAX_WORKERS} are allowed",
                    u64::from(k) * u64::from(self.instance_count)
                )));
            }
        }
        if let Some(b) = &self.batching {
            if !(2..=MAX_BATCH_SIZE).contains(&b.max_batch_size) {
                return Err(SpecError::invalid(format!(
                    "batching.max_batch_size must be a whole number of rows from 2 to {MAX_BATCH_SIZE}, got {}",
                    b.max_batch_size
                )));
            }
            if b.max_delay_us > MAX_BATCH_DELAY_US {
                return Err(SpecError::invalid(format!(
                    "batching.max_delay_us must be from 0 to {MAX_BATCH_DELAY_US} microseconds (100 ms), got {}",
                    b.max_delay_us
                )));
            }
        }
        let rs = &self.request_settings;
        if rs.request_timeout_ms == 0 || rs.request_timeout_ms > 180_000 {
            return Err(SpecError::invalid(format!(
                "request_settings.request_timeout_ms must be from 1 to 180000, got {}",
                rs.request_timeout_ms
            )));
        }
        if rs.max_concurrent_requests_per_instance == 0 || rs.max_concurrent_requests_per_instance > 1000 {
            return Err(SpecError::invalid(format!(
                "request_settings.max_concurrent_requests_per_instance must be from 1 to 1000, got {}",
                rs.max_concurrent_requests_per_instance
            )));
        }
        match &self.model.reference {
            Some(r) if parse_reference(AssetKind::Model, r)?.is_none() => {
                return Err(SpecError::invalid(format!(
                    "model.reference {r:?} must name a registered model: azureml:NAME:VERSION or azureml:NAME@latest"
                )));
            }
            None if self.model.path.as_os_str().is_empty() => {
                return Err(SpecError::invalid("model.path is empty"));
            }
            _ => {}
        }
        if let Some(name) = &self.model.name {
            // It is a URL path segment of the v2 routes.
            if name.is_empty()
                || name.len() > 255
                || name.contains(['/', '?', '#', '%'])
                || name.chars().any(char::is_control)
            {
                return Err(SpecError::invalid(format!(
                    "model.name {name:?} must be 1 to 255 characters without '/', '?', '#', '%' or control characters (v2 clients put it in the URL)"
                )));
            }
        }
        if let Some(v) = &self.model.version {
            if !(v.is_string() || v.is_number() || v.is_null()) {
                return Err(SpecError::invalid("model.version must be a string or a number"));
            }
        }
        Ok(())
    }

    /// Reads a deployment sent for the URL's `name` (`PUT /v1/deployments/{name}`, or a merge
    /// patch applied to one): the body's `name` is set from the URL, or must agree with it;
    /// relative paths resolve against `base_dir` (the YAML file's folder) when one is given.
    pub fn from_request(body: Value, name: &str, base_dir: Option<&Path>) -> Result<(Self, Vec<String>), SpecError> {
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
        let (mut spec, ignored) = Self::from_value(Value::Object(m))?;
        if let Some(base) = base_dir {
            if !base.is_absolute() {
                return Err(SpecError::invalid(format!(
                    "base_dir must be an absolute folder (the YAML file's), got {}",
                    base.display()
                )));
            }
            spec.resolve_paths(base);
        }
        Ok((spec, ignored))
    }

    /// Makes relative paths absolute against `base` (the YAML file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                normalize(&base.join(p))
            }
        };
        // A reference not resolved yet has no path to make absolute.
        if !self.model.path.as_os_str().is_empty() {
            self.model.path = abs(&self.model.path);
        }
        if let Some(code) = self.code_configuration.as_mut().and_then(|c| c.code.as_mut()) {
            *code = abs(code);
        }
        // The Python hook's files: a conda file, and an interpreter given by path (a bare
        // name such as `python3.12` is looked up on PATH instead).
        if let Some(Value::Object(env)) = self.environment.as_mut() {
            for key in ["conda_file", "python"] {
                if let Some(Value::String(p)) = env.get_mut(key) {
                    if key == "conda_file" || p.contains('/') {
                        *p = abs(Path::new(p.as_str())).display().to_string();
                    }
                }
            }
        }
    }

    /// Whether the deployment names a registered model or environment (`azureml:`, not a
    /// curated environment), which the control plane resolves through the asset store.
    pub fn names_registered_assets(&self) -> bool {
        let env_reference = match &self.environment {
            // A curated environment is mapped by the hook, with no store.
            Some(Value::String(s)) => s.starts_with("azureml:") && super::python::curated_sklearn_version(s).is_none(),
            Some(Value::Object(env)) => env.contains_key("reference"),
            _ => false,
        };
        self.model.reference.is_some() || env_reference
    }

    /// Picks the scoring hook and checks that what it needs is on disk.
    pub fn hook_kind(&self) -> Result<HookKind, SpecError> {
        if let (Some(r), true) = (&self.model.reference, self.model.path.as_os_str().is_empty()) {
            return Err(SpecError::invalid(format!(
                "model {r:?} names a registered model, which this path cannot look up: create the deployment through the server"
            )));
        }
        let native = self
            .code_configuration
            .as_ref()
            .is_some_and(|cc| cc.scoring_script.ends_with(".so") || cc.scoring_script.ends_with(".dylib"));
        if let (Some(isolation), false) = (self.isolation, native) {
            let value = if isolation == Isolation::Process { "process" } else { "in_process" };
            return Err(SpecError::invalid(format!(
                "isolation: {value} applies to native plugins only (code_configuration.scoring_script naming a .so); \
                 ONNX models always run in process and score.py always runs in a worker process: remove isolation"
            )));
        }
        if let (Some(_), Some(cc)) = (self.batching, &self.code_configuration) {
            return Err(SpecError::invalid(format!(
                "batching applies to ONNX models only (no code_configuration); this deployment's hook is \
                 scoring_script {}, whose run takes one request at a time: remove batching",
                cc.scoring_script
            )));
        }
        if let Some(cc) = &self.code_configuration {
            let script = cc.scoring_script.as_str();
            check_script_path(script)?;
            if let Some(code) = cc.code.as_deref() {
                // The same rule the hooks check again at each load (files change meanwhile).
                if code.join(script).exists() {
                    resolve_scoring_script(code, script)?;
                }
            }
            if script.ends_with(".py") {
                let code = cc.code.as_deref();
                let python = super::python::script(code, script, &self.model.path, self.environment.as_ref())?;
                return Ok(HookKind::Python(python));
            }
            if script.ends_with(".so") || script.ends_with(".dylib") {
                return self.native_plugin(cc.code.as_deref(), script).map(HookKind::Native);
            }
            return Err(SpecError::invalid(format!(
                "unknown kind of scoring_script {script:?}: expected none (built-in ONNX hook), a .so plugin or score.py"
            )));
        }
        Ok(HookKind::Onnx { model_file: find_onnx_file(&self.model.path)? })
    }
}

impl DeploymentSpec {
    /// A native plugin's files: the `.so` in the code folder, the model path.
    fn native_plugin(&self, code: Option<&Path>, script: &str) -> Result<NativePlugin, SpecError> {
        let Some(code_dir) = code else {
            return Err(SpecError::invalid(format!(
                "scoring_script {script} needs code_configuration.code: the folder that holds the plugin"
            )));
        };
        let library = normalize(&code_dir.join(script));
        if !library.is_file() {
            return Err(SpecError::invalid(format!(
                "scoring_script {script} is not a file in code_configuration.code ({}): build the plugin first \
                 (runtime/README.md)",
                code_dir.display()
            )));
        }
        std::fs::metadata(&self.model.path)
            .map_err(|e| SpecError::invalid(format!("model.path {} cannot be read: {e}", self.model.path.display())))?;
        Ok(NativePlugin {
            library,
            code_dir: code_dir.to_path_buf(),
            model_path: self.model.path.clone(),
            isolation: self.isolation.unwrap_or_default(),
        })
    }
}

/// The lexical half of the one rule for `code_configuration.scoring_script`, for every hook: a
/// path relative to `code_configuration.code` that stays inside it, so `../x/score.py` or
/// `/etc/x.so` never names a file the code folder does not hold. Checked at validation;
/// [`resolve_scoring_script`] checks where the file really is at each load.
pub fn check_script_path(script: &str) -> Result<(), SpecError> {
    let path = Path::new(script);
    let escapes =
        path.is_absolute() || path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if script.is_empty() || escapes || path.file_name().is_none() {
        return Err(SpecError::invalid(format!(
            "scoring_script {script:?} must be a file path relative to code_configuration.code, with no `..` \
             and not absolute (e.g. score.py or onlinescoring/score.py): the scoring script must be inside \
             the code folder"
        )));
    }
    Ok(())
}

/// Where the scoring script really is: `code_dir` joined with `script`, with every symbolic
/// link followed, which must still be inside `code_dir` (also resolved) and be a regular file.
/// The lexical rule ([`check_script_path`]) cannot see a link inside the code folder that leads
/// out of it, and the files can change after validation, so the hooks call this at each load
/// and load the path it returns. The message says what is expected.
pub fn resolve_scoring_script(code_dir: &Path, script: &str) -> Result<PathBuf, SpecError> {
    let code = std::fs::canonicalize(code_dir).map_err(|e| {
        SpecError::invalid(format!("code_configuration.code {} cannot be read: {e}", code_dir.display()))
    })?;
    let joined = code_dir.join(script);
    let real = std::fs::canonicalize(&joined).map_err(|e| {
        SpecError::invalid(format!(
            "scoring_script {script} cannot be read in code_configuration.code ({}): {e}",
            code_dir.display()
        ))
    })?;
    if !real.starts_with(&code) {
        return Err(SpecError::invalid(format!(
            "scoring_script {script} resolves to {}, outside code_configuration.code ({}): a symbolic link \
             leads out of the code folder; the scoring script must be a regular file inside it",
            real.display(),
            code.display()
        )));
    }
    let meta = std::fs::metadata(&real)
        .map_err(|e| SpecError::invalid(format!("scoring_script {script} cannot be read: {e}")))?;
    if !meta.is_file() {
        return Err(SpecError::invalid(format!(
            "scoring_script {script} in code_configuration.code ({}) is not a regular file",
            code_dir.display()
        )));
    }
    Ok(real)
}

/// `model.path` is a `.onnx` file, or a folder holding exactly one.
fn find_onnx_file(path: &Path) -> Result<PathBuf, SpecError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| SpecError::invalid(format!("model.path {} cannot be read: {e}", path.display())))?;
    if meta.is_file() {
        return Ok(path.to_path_buf());
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| SpecError::invalid(format!("model.path {} cannot be listed: {e}", path.display())))?;
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "onnx") && p.is_file())
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(SpecError::invalid(format!(
            "model.path {} holds no .onnx file: the built-in ONNX hook needs one (or point model.path at the file)",
            path.display()
        ))),
        n => Err(SpecError::invalid(format!(
            "model.path {} holds {n} .onnx files: point model.path at the one to serve",
            path.display()
        ))),
    }
}

/// Removes `.` and `..` components without touching the filesystem (the file may not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DeploymentSpec, SpecError> {
        DeploymentSpec::from_value(crate::spec::yaml_to_json(text, "t").unwrap()).map(|(s, _)| s)
    }

    #[test]
    fn parses_the_seed_blue_deployment() {
        let text = r#"$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json
name: blue
endpoint_name: my-endpoint
model:
  path: ../../model-1/model/
code_configuration:
  code: ../../model-1/onlinescoring/
  scoring_script: score.py
environment: 
  conda_file: ../../model-1/environment/conda.yaml
  image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest
instance_type: Standard_DS3_v2
instance_count: 1
"#;
        let mut spec = parse(text).unwrap();
        spec.resolve_paths(Path::new("/a/b/c/managed/sample"));
        assert_eq!(spec.model.path, PathBuf::from("/a/b/c/model-1/model"));
        assert_eq!(spec.request_settings.request_timeout_ms, 5000);
        let err = spec.hook_kind().unwrap_err();
        assert!(err.message.contains("is not a file in code_configuration.code"), "{err}");
    }

    #[test]
    fn refuses_bad_fields() {
        let base = "name: blue\nmodel:\n  path: m\n";
        let registered = parse("name: blue\nmodel: azureml:my-model:1\n").unwrap();
        assert_eq!(registered.model.reference.as_deref(), Some("azureml:my-model:1"));
        assert!(registered.model.path.as_os_str().is_empty(), "the control plane resolves it");
        assert!(parse("name: blue\nmodel: azureml:my-model\n")
            .unwrap_err()
            .message
            .contains("azureml:my-model@latest"));
        assert!(parse(&format!("{base}instance_count: 0\n")).unwrap_err().message.contains("instance_count"));
        assert!(parse(&format!("{base}instance_cout: 2\n")).unwrap_err().message.contains("unknown field"));
        assert!(parse(&format!("{base}request_settings:\n  request_timeout_ms: 180001\n"))
            .unwrap_err()
            .message
            .contains("180000"));
        assert!(parse("name: b\nmodel:\n  path: m\n").unwrap_err().message.contains("invalid deployment name"));
        let env = parse(&format!("{base}environment_variables:\n  A: 1\n  B: x\n")).unwrap();
        assert_eq!(env.environment_variables["A"], "1");
    }

    #[test]
    fn worker_count_is_a_whole_number_of_workers_per_instance_within_the_limit() {
        let base = "name: blue\nmodel:\n  path: m\n";
        let with = |count: &str, extra: &str| {
            parse(&format!("{base}{extra}environment_variables:\n  WORKER_COUNT: {count}\n"))
        };
        assert_eq!(with("3", "").unwrap().workers_per_instance(), 3);
        assert_eq!(with("\" 2 \"", "").unwrap().workers_per_instance(), 2);
        assert_eq!(parse(base).unwrap().workers_per_instance(), 1);
        assert_eq!(with("128", "instance_count: 2\n").unwrap().workers_per_instance(), 128);
        for bad in ["0", "-1", "three", "1.5", "\"\"", "257"] {
            let e = with(bad, "").unwrap_err().message;
            assert!(
                e.contains("WORKER_COUNT must be a whole number of worker processes per instance, from 1 to 256"),
                "{bad}: {e}"
            );
        }
        let e = with("100", "instance_count: 3\n").unwrap_err().message;
        assert!(e.contains("300 worker processes; at most 256"), "{e}");
    }

    #[test]
    fn isolation_is_for_native_plugins_and_the_plugin_must_be_in_the_code_folder() {
        let code = tempfile::tempdir().unwrap();
        std::fs::write(code.path().join("p.so"), b"x").unwrap();
        let model = code.path().display();
        let native = |extra: &str, script: &str| {
            let code = code.path().display();
            let mut spec = parse(&format!(
                "name: blue\nmodel:\n  path: {model}\ncode_configuration:\n  code: {code}\n  scoring_script: {script}\n{extra}"
            ))?;
            spec.resolve_paths(Path::new("/"));
            spec.hook_kind()
        };
        let Ok(HookKind::Native(p)) = native("", "p.so") else { panic!("not native") };
        assert_eq!((p.isolation, p.library), (Isolation::InProcess, code.path().join("p.so")));
        let Ok(HookKind::Native(p)) = native("isolation: process\n", "p.so") else { panic!("not native") };
        assert_eq!(p.isolation, Isolation::Process);
        let e = native("isolation: sandbox\n", "p.so").unwrap_err();
        assert!(e.message.contains("isolation") && e.message.contains("`process`"), "{e}");
        assert!(native("", "../p.so").unwrap_err().message.contains("no `..`"));
        assert!(native("", "q.so").unwrap_err().message.contains("q.so is not a file"));
        let onnx = parse("name: blue\nmodel:\n  path: m\nisolation: process\n").unwrap();
        assert!(onnx.hook_kind().unwrap_err().message.contains("applies to native plugins only"));
    }

    /// One rule for every hook: the scoring script is a regular file inside the code folder,
    /// by its path (no `..`, not absolute) and where it really is (links followed).
    #[test]
    fn the_scoring_script_must_be_inside_the_code_folder_for_every_hook() {
        let root = tempfile::tempdir().unwrap();
        let (code, outside) = (root.path().join("code"), root.path().join("x"));
        std::fs::create_dir_all(&code).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        for name in ["score.py", "p.so"] {
            std::fs::write(outside.join(name), b"x").unwrap();
            std::fs::write(code.join(name), b"x").unwrap();
        }
        std::os::unix::fs::symlink(outside.join("score.py"), code.join("linked.py")).unwrap();
        std::os::unix::fs::symlink(outside.join("p.so"), code.join("linked.so")).unwrap();
        std::os::unix::fs::symlink(&outside, code.join("sub")).unwrap();
        std::fs::create_dir(code.join("dir.py")).unwrap();
        let kind = |script: &str| {
            let mut spec = parse(&format!(
                "name: blue\nmodel:\n  path: {}\ncode_configuration:\n  code: {}\n  scoring_script: {script}\n",
                root.path().display(),
                code.display()
            ))?;
            spec.resolve_paths(Path::new("/"));
            spec.hook_kind()
        };
        assert!(matches!(kind("score.py"), Ok(HookKind::Python(_))));
        assert!(matches!(kind("./p.so"), Ok(HookKind::Native(_))));
        for script in ["../x/score.py", "../x/p.so", "sub/../../x/score.py"] {
            let e = kind(script).unwrap_err();
            assert!(e.message.contains("no `..`") && e.message.contains("inside the code folder"), "{script}: {e}");
        }
        for script in [outside.join("score.py"), outside.join("p.so")] {
            let e = kind(&script.display().to_string()).unwrap_err();
            assert!(e.message.contains("not absolute"), "{}: {e}", script.display());
        }
        for script in ["linked.py", "linked.so", "sub/score.py", "sub/p.so"] {
            let e = kind(script).unwrap_err();
            assert!(e.message.contains("outside code_configuration.code"), "{script}: {e}");
        }
        let e = kind("dir.py").unwrap_err();
        assert!(e.message.contains("not a regular file") || e.message.contains("is not a file"), "{e}");
        // At load time the same rule: a link made after validation is refused.
        assert_eq!(resolve_scoring_script(&code, "p.so").unwrap(), std::fs::canonicalize(code.join("p.so")).unwrap());
        std::fs::remove_file(code.join("p.so")).unwrap();
        std::os::unix::fs::symlink(outside.join("p.so"), code.join("p.so")).unwrap();
        assert!(resolve_scoring_script(&code, "p.so").unwrap_err().message.contains("outside code_configuration.code"));
    }
}
