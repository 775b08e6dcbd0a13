//! Registered models and environments as the control plane sees them: the workspace's asset
//! store (one per process, as Azure's workspace), references in deployments resolved when a
//! deployment is created or replaced, and archiving refused while a deployment of any
//! endpoint uses the asset (CONTRACT §11).
//!
//! Resolution and archiving exclude each other through `Shared::asset_gate`: a deployment
//! holds it (shared) from resolving its references to saving the change, and an archive holds
//! it (exclusive) from checking every endpoint to marking the version, so no deployment can
//! start using a version between the check and the mark.

use std::sync::{Arc, RwLockReadGuard};

use serde_json::Value;

use super::{ControlError, ControlPlane, Workspace};
use crate::assets::{
    AssetError, AssetStore, CodeInput, CodeView, CuratedEnvironmentView, EnvironmentInput, EnvironmentView, ModelInput,
    ModelView, UploadFile, UploadView,
};
use crate::spec::{parse_reference, AssetKind, AssetRef, DeploymentSpec};

impl From<AssetError> for ControlError {
    fn from(e: AssetError) -> Self {
        match e {
            AssetError::Invalid(m) => ControlError::invalid(m),
            AssetError::TooLarge(m) => ControlError::Spec(crate::spec::SpecError::too_large(m)),
            AssetError::NotFound(m) => ControlError::NotFound(m),
            AssetError::Conflict(m) => ControlError::Conflict(m),
            e @ AssetError::Io(..) => ControlError::Internal(e.to_string()),
        }
    }
}

impl Workspace {
    /// Sets the asset store (at start, before the admin API or a restore runs).
    pub(crate) fn set_assets(&self, store: AssetStore) {
        let _ = self.shared.assets.set(Arc::new(store));
    }

    /// The asset store.
    pub(crate) fn assets(&self) -> Result<&AssetStore, ControlError> {
        self.shared.assets()
    }

    /// `POST /v1/uploads`.
    pub(crate) fn begin_upload(&self) -> Result<UploadView, ControlError> {
        Ok(self.assets()?.begin_upload()?)
    }

    /// One file of an upload, opened for writing (blocking I/O).
    pub(crate) fn upload_file(&self, id: &str, relative: &str) -> Result<UploadFile, ControlError> {
        Ok(self.assets()?.upload_file(id, relative)?)
    }

    /// `DELETE /v1/uploads/{id}`.
    pub(crate) fn abandon_upload(&self, id: &str) -> Result<(), ControlError> {
        Ok(self.assets()?.abandon_upload(id)?)
    }

    /// `POST /v1/models` (blocking I/O: digests the upload).
    pub(crate) fn register_model(&self, input: ModelInput) -> Result<(ModelView, bool), ControlError> {
        Ok(self.assets()?.register_model(input)?)
    }

    /// `POST /v1/environments`.
    pub(crate) fn register_environment(
        &self,
        input: EnvironmentInput,
    ) -> Result<(EnvironmentView, bool), ControlError> {
        Ok(self.assets()?.register_environment(input)?)
    }

    /// `POST /v1/codes`.
    pub(crate) fn store_code(&self, input: CodeInput) -> Result<(CodeView, bool), ControlError> {
        Ok(self.assets()?.store_code(input)?)
    }

    /// `GET /v1/models[/{name}/versions]`.
    pub(crate) fn models(&self, name: Option<&str>, archived: bool) -> Result<Vec<ModelView>, ControlError> {
        Ok(self.assets()?.models(name, archived)?)
    }

    /// `GET /v1/models/{name}[/versions/{version}]`.
    pub(crate) fn model(&self, name: &str, version: Option<&str>) -> Result<ModelView, ControlError> {
        Ok(self.assets()?.model(name, version)?)
    }

    /// `GET /v1/environments[/{name}/versions]`.
    pub(crate) fn environments(
        &self,
        name: Option<&str>,
        archived: bool,
    ) -> Result<Vec<EnvironmentView>, ControlError> {
        Ok(self.assets()?.environments(name, archived)?)
    }

    /// `GET /v1/environments/{name}[/versions/{version}]`.
    pub(crate) fn environment(&self, name: &str, version: Option<&str>) -> Result<EnvironmentView, ControlError> {
        Ok(self.assets()?.environment(name, version)?)
    }

    /// `GET /v1/environments/curated`.
    pub(crate) fn curated_environments(&self) -> Vec<CuratedEnvironmentView> {
        crate::assets::curated_environments()
    }

    /// Archives (or restores) a version, or every version of a name. Archiving what a
    /// deployment of any endpoint uses is refused, naming them. Returns the versions changed.
    pub(crate) fn set_archived(
        &self,
        kind: AssetKind,
        name: &str,
        version: Option<&str>,
        archived: bool,
    ) -> Result<Vec<String>, ControlError> {
        let store = self.assets()?;
        let _exclusive = self.shared.asset_gate.write().unwrap_or_else(|e| e.into_inner());
        if archived {
            let users: Vec<String> = self
                .all()
                .iter()
                .flat_map(|plane| {
                    plane.users_of(kind, name, version).into_iter().map(|d| format!("{}/{d}", plane.name()))
                })
                .collect();
            if !users.is_empty() {
                let what = match version {
                    Some(v) => format!("{} {name} version {v}", kind.word()),
                    None => format!("{} {name}", kind.word()),
                };
                return Err(ControlError::Conflict(format!(
                    "{what} is used by deployment(s) {} (endpoint/deployment): update or delete them first",
                    users.join(", ")
                )));
            }
        }
        Ok(store.set_archived(kind, name, version, archived)?)
    }

    /// A deployment of `--config-dir` resolved as a create would resolve it, keeping the
    /// version `current` (what runs) resolved to: so an unchanged file compares equal to
    /// what runs, and a folder re-read never moves `@latest` by itself.
    pub(crate) fn resolved(
        &self,
        spec: &DeploymentSpec,
        current: Option<&DeploymentSpec>,
    ) -> Result<DeploymentSpec, ControlError> {
        let mut spec = spec.clone();
        if let Some(cur) = current {
            if cur.model.reference.is_some() && cur.model.reference == spec.model.reference {
                // The resolved path and version: `resolve` below keeps them.
                spec.model = cur.model.clone();
            }
            if let (Some(Value::Object(c)), Some(Value::String(r))) = (&cur.environment, &spec.environment) {
                if c.get("reference").and_then(Value::as_str) == Some(r.as_str()) {
                    spec.environment = cur.environment.clone();
                }
            }
        }
        resolve(self.shared.assets.get().map(Arc::as_ref), &mut spec)?;
        Ok(spec)
    }
}

impl super::Shared {
    fn assets(&self) -> Result<&AssetStore, ControlError> {
        self.assets
            .get()
            .map(Arc::as_ref)
            .ok_or_else(|| ControlError::Unavailable("the asset store is not open".into()))
    }

    /// Held (shared) from resolving a deployment's references to saving it.
    pub(super) fn asset_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.asset_gate.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl ControlPlane {
    /// Resolves the registered model and environment `spec` names (nothing to do for a spec
    /// without references). `current` is the deployment as it is: a reference it already
    /// has keeps the version it resolved to; any other is resolved anew.
    pub(super) fn resolve_assets(
        &self,
        spec: &mut DeploymentSpec,
        current: Option<&DeploymentSpec>,
    ) -> Result<(), ControlError> {
        forget_stale(spec, current);
        resolve(self.shared.assets.get().map(Arc::as_ref), spec)
    }

    /// The deployments (serving or loading) that use `version` of `name` (any version when
    /// `None`).
    fn users_of(&self, kind: AssetKind, name: &str, version: Option<&str>) -> Vec<String> {
        let state = self.lock();
        let mut users = Vec::new();
        for (d, record) in &state.deployments {
            let specs = std::iter::once(&record.spec).chain(record.pending.as_ref().map(|p| &p.spec));
            if specs.into_iter().any(|s| uses(s, kind, name, version)) {
                users.push(d.clone());
            }
        }
        users
    }
}

/// Drops what a reference resolved to unless the deployment already has that very reference:
/// a `show` output sent back with only its reference edited, or another deployment's copied,
/// must not keep a version resolved for something else.
fn forget_stale(spec: &mut DeploymentSpec, current: Option<&DeploymentSpec>) {
    if let Some(r) = &spec.model.reference {
        if current.and_then(|c| c.model.reference.as_ref()) != Some(r) {
            spec.model.path = std::path::PathBuf::new();
            spec.model.name = None;
            spec.model.version = None;
        }
    }
    let reference_of = |s: &DeploymentSpec| match &s.environment {
        Some(Value::Object(env)) => env.get("reference").and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let now = reference_of(spec);
    if now.is_some() && current.and_then(reference_of) != now {
        if let Some(Value::Object(env)) = spec.environment.as_mut() {
            env.remove("version");
        }
    }
}

/// Whether `spec` uses `version` of the asset `name` (any version when `None`).
fn uses(spec: &DeploymentSpec, kind: AssetKind, name: &str, version: Option<&str>) -> bool {
    let (reference, resolved) = match kind {
        AssetKind::Model => (spec.model.reference.clone(), spec.model.served_version()),
        AssetKind::Environment => match &spec.environment {
            Some(Value::Object(env)) => (
                env.get("reference").and_then(Value::as_str).map(str::to_string),
                env.get("version").and_then(Value::as_str).map(str::to_string),
            ),
            _ => (None, None),
        },
    };
    let Some(Ok(Some(r))) = reference.map(|r| parse_reference(kind, &r)) else {
        return false;
    };
    r.name == name && version.is_none_or(|v| resolved.as_deref() == Some(v))
}

/// Resolves `spec`'s references through `store`. A reference already resolved (a saved or
/// shown spec sent back: `path` set, `version` recorded) keeps its version, so scaling or
/// an edit of another field never moves `@latest`.
fn resolve(store: Option<&AssetStore>, spec: &mut DeploymentSpec) -> Result<(), ControlError> {
    if let Some(text) = spec.model.reference.clone() {
        let r = parse_reference(AssetKind::Model, &text)?
            .ok_or_else(|| ControlError::invalid(format!("model.reference {text:?} is not an azureml: reference")))?;
        let keep = spec.model.served_version().filter(|_| !spec.model.path.as_os_str().is_empty());
        let model = store_for(store, &r)?.resolve_model(&r, keep.as_deref())?;
        spec.model.path = model.path.into();
        spec.model.name = Some(model.name);
        spec.model.version = Some(Value::String(model.version));
    }
    let (text, keep) = match &spec.environment {
        Some(Value::String(s)) => (s.clone(), None),
        Some(Value::Object(env)) => match env.get("reference").and_then(Value::as_str) {
            Some(s) => (s.to_string(), env.get("version").and_then(Value::as_str).map(str::to_string)),
            None => return Ok(()),
        },
        _ => return Ok(()),
    };
    let curated = |name: &str| crate::spec::python::curated_sklearn_version(name).is_some();
    let r = match parse_reference(AssetKind::Environment, &text) {
        Ok(Some(r)) => r,
        Ok(None) => return Ok(()),
        // Curated names Azure writes without a version (`azureml:AzureML-sklearn-1.0-...`).
        Err(_) if curated(&text) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let registered = store.is_some_and(|s| s.has_environment(&r.name));
    if !registered && curated(&r.name) {
        // A curated environment: the Python hook maps it to its packages.
        spec.environment = Some(Value::String(text));
        return Ok(());
    }
    let env = store_for(store, &r)?.resolve_environment(&r, keep.as_deref()).map_err(|e| match e {
        AssetError::Invalid(m) => ControlError::invalid(format!(
            "{m} (curated environments: {}), or write `environment: {{conda_file: ./conda.yaml}}` with the packages \
             score.py needs, or `environment: {{python: /path/to/bin/python}}`",
            crate::assets::curated_environments().into_iter().map(|c| c.id).collect::<Vec<_>>().join(", ")
        )),
        e => e.into(),
    })?;
    let mut resolved = serde_json::Map::new();
    resolved.insert("reference".into(), Value::String(text));
    resolved.insert("name".into(), Value::String(env.name));
    resolved.insert("version".into(), Value::String(env.version));
    if let Some(image) = env.image {
        resolved.insert("image".into(), Value::String(image));
    }
    if let Some(conda) = env.conda_file {
        resolved.insert("conda_file".into(), Value::String(conda));
    }
    spec.environment = Some(Value::Object(resolved));
    Ok(())
}

fn store_for<'a>(store: Option<&'a AssetStore>, r: &AssetRef) -> Result<&'a AssetStore, ControlError> {
    store.ok_or_else(|| {
        ControlError::Unavailable(format!(
            "{} {} cannot be resolved: the asset store is not open",
            r.kind.word(),
            r.short()
        ))
    })
}
