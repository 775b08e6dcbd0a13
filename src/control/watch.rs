//! `--config-dir`: declarative mode. The folder's `endpoint.yml` and deployment YAML files own
//! the state; they are applied at start and again whenever a file changes, including the
//! `..data` symlink swap a Kubernetes ConfigMap volume does on update. A folder without an
//! `endpoint.yml` of its own holds one sub-folder per endpoint, each read as such a folder
//! and applied on its own (a refused edit in one keeps that endpoint as it runs and touches
//! no other).
//!
//! Each application is a diff against what runs: only deployments whose spec changed are
//! touched (scaled in place, or replaced when the model or hook changed), new ones are created
//! and loaded before traffic moves to them, and removed ones are deleted after their traffic
//! has moved away. The whole folder is parsed and validated first: an invalid edit is refused
//! and logged, and the running state stays as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::{json, Value};

use super::{ControlPlane, Workspace};
use crate::spec::{traffic, DeploymentSpec, EndpointSpec};

/// Quiet time after a change before the folder is read (editors and ConfigMaps write in steps).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// The longest a deployment may take to load before the rest of an application goes on.
const LOAD_WAIT: Duration = Duration::from_secs(600);

/// What the folder asks for.
#[derive(Debug, Clone, PartialEq)]
struct Desired {
    endpoint: EndpointSpec,
    deployments: BTreeMap<String, DeploymentSpec>,
}

/// Why a config folder was refused (at start: the server does not start; later: the running
/// state is kept, and `show` says why in `config_dir.last_error`). Each message names the
/// file at fault.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigDirError {
    #[error("--config-dir {0} is not a folder")]
    NotAFolder(String),
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error("{0} has no endpoint.yml")]
    NoEndpointFile(String),
    #[error("cannot list {dir}: {source}")]
    Unlistable { dir: String, source: std::io::Error },
    /// endpoint.yml itself is invalid (its message names the file).
    #[error("{}", .0.message)]
    EndpointFile(crate::spec::SpecError),
    /// A file of the folder breaks a rule.
    #[error("{file}: {error}")]
    InFile { file: String, error: crate::spec::SpecError },
    #[error("{file}: deployment {name:?} is for endpoint {for_endpoint:?}, but endpoint.yml names {endpoint:?}")]
    OtherEndpoint { file: String, name: String, for_endpoint: String, endpoint: String },
    #[error("{folder}: endpoint {name:?} is already defined by the folder {owner}")]
    Claimed { folder: String, name: String, owner: String },
    #[error("{0}: another file already defines this deployment")]
    Duplicate(String),
    #[error("an endpoint holds at most {} deployments", crate::spec::MAX_DEPLOYMENTS)]
    TooMany,
    /// The folder is valid, but the control plane refused a step of applying it.
    #[error("{step}: {error}")]
    Apply { step: String, error: super::ControlError },
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

/// A folder that cannot be watched (`flag` names it: `--config-dir`, `--secrets-dir`).
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {flag} {dir}: {source}")]
pub(crate) struct WatchError {
    flag: &'static str,
    dir: String,
    source: notify::Error,
}

/// Starts declarative mode on `dir`: applies it now and on every change. With an
/// `endpoint.yml` at its top (or nothing that looks like an endpoint's folder) `dir` is one
/// endpoint's folder, as it always was; otherwise each sub-folder with an `endpoint.yml` is
/// one endpoint's, watched and applied on its own. Sub-folders added later are picked up at
/// the next start.
pub(crate) fn start(control: Arc<Workspace>, dir: PathBuf) -> Result<(), ConfigDirError> {
    if !dir.is_dir() {
        return Err(ConfigDirError::NotAFolder(dir.display().to_string()));
    }
    control.set_declarative(dir.clone());
    let folders = endpoint_folders(&dir)?;
    // Each endpoint belongs to the first folder (in name order) that names it; claimed here,
    // before any folder is applied, so which folder wins does not depend on which task runs
    // first.
    for folder in &folders {
        if let Ok(desired) = read_folder(folder) {
            let _ = control.claim(&desired.endpoint.name, folder);
        }
    }
    for folder in folders {
        let mut changes = FolderWatch::new(&folder, "--config-dir")?;
        let ws = Arc::clone(&control);
        control.runtime.spawn(async move {
            let mut applied: Option<Desired> = None;
            apply_folder(&ws, &folder, &mut applied).await;
            while changes.next().await {
                apply_folder(&ws, &folder, &mut applied).await;
            }
        });
    }
    Ok(())
}

/// The folders of `dir` that each hold one endpoint: `dir` itself when it has an
/// `endpoint.yml` (or holds no sub-folder that has one), else those sub-folders, in name order.
fn endpoint_folders(dir: &Path) -> Result<Vec<PathBuf>, ConfigDirError> {
    if endpoint_file(dir).is_some() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ConfigDirError::Unlistable { dir: dir.display().to_string(), source })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let hidden = p.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
            !hidden && p.is_dir() && endpoint_file(p).is_some()
        })
        .collect();
    subs.sort();
    Ok(if subs.is_empty() { vec![dir.to_path_buf()] } else { subs })
}

/// The saved endpoints (`--state-dir`) that a folder of `dir` still defines; the others were
/// removed from the files while the server was down (a folder gone, an `endpoint.yml` that
/// names another endpoint now), and their saved files go with them: in declarative mode the
/// files own the endpoints, and one that no file defines could never be changed or deleted.
/// When a folder cannot be read, every saved endpoint is kept (its folder may be the one).
pub(crate) fn keep_defined(dir: &Path, saved: Vec<super::store::Saved>) -> Vec<super::store::Saved> {
    let Ok(folders) = endpoint_folders(dir) else { return saved };
    let mut names = BTreeSet::new();
    for folder in &folders {
        match read_folder(folder) {
            Ok(desired) => names.insert(desired.endpoint.name.to_ascii_lowercase()),
            Err(_) => return saved,
        };
    }
    saved
        .into_iter()
        .filter(|s| {
            let Some(name) = s.doc.endpoint.as_ref().map(|e| e.spec.name.clone()) else { return false };
            if names.contains(&name.to_ascii_lowercase()) {
                return true;
            }
            tracing::warn!(endpoint = %name, dir = %dir.display(), "a saved endpoint that no folder of --config-dir defines any more: deleted");
            if let Err(e) = s.store.save(&super::store::Durable::new(None, Vec::new())) {
                tracing::error!(endpoint = %name, error = %e, "cannot remove the saved endpoint's file");
            }
            false
        })
        .collect()
}

/// The folder's `endpoint.yml` (or `.yaml`): any entry of that name counts (not only a
/// regular file), so one that is not a regular file is refused by the read, naming it,
/// rather than reported as missing.
fn endpoint_file(dir: &Path) -> Option<PathBuf> {
    ["endpoint.yml", "endpoint.yaml"].iter().map(|f| dir.join(f)).find(|p| std::fs::symlink_metadata(p).is_ok())
}

/// A folder watched for changes: its files, and the `..data` symlink swap by which the
/// kubelet updates a ConfigMap or Secret volume (a rename in the folder itself, so a
/// non-recursive watch sees it). Shared by `--config-dir` and `--secrets-dir`.
pub(super) struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    rx: tokio::sync::mpsc::UnboundedReceiver<()>,
}

impl FolderWatch {
    /// Starts watching `dir`; `flag` names it in errors.
    pub(super) fn new(dir: &Path, flag: &'static str) -> Result<Self, WatchError> {
        let failed = |source| WatchError { flag, dir: dir.display().to_string(), source };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Reading a file (ours or ONNX Runtime's) produces access events: never a change.
            if let Ok(e) = event {
                if !matches!(e.kind, EventKind::Access(_)) {
                    let _ = tx.send(());
                }
            }
        })
        .map_err(failed)?;
        watcher.watch(dir, RecursiveMode::NonRecursive).map_err(failed)?;
        Ok(Self { _watcher: watcher, rx })
    }

    /// Waits for the next change and lets its burst of events settle ([`DEBOUNCE`]), so the
    /// folder is read once per edit. `false` once the watcher has stopped.
    pub(super) async fn next(&mut self) -> bool {
        if self.rx.recv().await.is_none() {
            return false;
        }
        loop {
            match tokio::time::timeout(DEBOUNCE, self.rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}

async fn apply_folder(ws: &Arc<Workspace>, dir: &Path, applied: &mut Option<Desired>) {
    // Where a refusal is shown: the endpoint this folder last applied (`show`'s config_dir).
    let shown = |error: Option<String>, name: Option<&str>| {
        if let Some(plane) = name.and_then(|n| ws.endpoint(n).ok()) {
            plane.set_config_error(error);
        }
    };
    let last = applied.as_ref().map(|a| a.endpoint.name.clone());
    let desired = match read_folder(dir) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "config refused; the running state is kept");
            shown(Some(e.to_string()), last.as_deref());
            return;
        }
    };
    if applied.as_ref() == Some(&desired) {
        // Back to what runs (a refused entry removed): the refusal is over.
        shown(None, last.as_deref());
        return;
    }
    match apply(ws, dir, &desired).await {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), deployments = desired.deployments.len(), "config applied");
            shown(None, Some(&desired.endpoint.name));
            // The folder renamed its endpoint: the old one was this folder's, and goes.
            if let Some(old) = last.filter(|old| *old != desired.endpoint.name) {
                ws.release(&old, dir);
                if let Err(e) = ws.delete_endpoint(&old) {
                    tracing::warn!(dir = %dir.display(), endpoint = %old, error = %e, "the endpoint the folder no longer names could not be deleted");
                }
            }
            *applied = Some(desired);
        }
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "config could not be applied completely");
            shown(Some(e.to_string()), Some(&desired.endpoint.name));
            shown(Some(e.to_string()), last.as_deref());
        }
    }
}

/// Parses and validates the whole folder; nothing is applied unless all of it is valid. Every
/// `.yml`/`.yaml` entry is read: one that is not a regular file (a FIFO, a link to a device, a
/// folder) is refused by the bounded read with its name and why, as an invalid edit is, where
/// it used to be skipped without a word.
fn read_folder(dir: &Path) -> Result<Desired, ConfigDirError> {
    let Some(endpoint_file) = endpoint_file(dir) else {
        return Err(ConfigDirError::NoEndpointFile(dir.display().to_string()));
    };
    let (endpoint, _) = EndpointSpec::from_file(&endpoint_file).map_err(ConfigDirError::EndpointFile)?;
    let in_file = |file: &Path| {
        let file = file.display().to_string();
        move |error| ConfigDirError::InFile { file, error }
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| ConfigDirError::Unlistable { dir: dir.display().to_string(), source })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            // Dot files include a ConfigMap's `..data` folder and editors' swap files.
            !name.starts_with('.') && (name.ends_with(".yml") || name.ends_with(".yaml")) && *p != endpoint_file
        })
        .collect();
    files.sort();
    let mut deployments = BTreeMap::new();
    for file in files {
        let (spec, _) = DeploymentSpec::from_file(&file).map_err(in_file(&file))?;
        if let Some(ep) = &spec.endpoint_name {
            if *ep != endpoint.name {
                return Err(ConfigDirError::OtherEndpoint {
                    file: file.display().to_string(),
                    name: spec.name.clone(),
                    for_endpoint: ep.clone(),
                    endpoint: endpoint.name.clone(),
                });
            }
        }
        // Registered assets are resolved when the folder is applied (the store is the
        // workspace's); the rest of the spec is checked here, before anything is applied.
        if !spec.names_registered_assets() {
            spec.hook_kind().map_err(in_file(&file))?;
        }
        if deployments.insert(spec.name.clone(), spec).is_some() {
            return Err(ConfigDirError::Duplicate(file.display().to_string()));
        }
    }
    if deployments.len() > crate::spec::MAX_DEPLOYMENTS {
        return Err(ConfigDirError::TooMany);
    }
    let names: BTreeSet<String> = deployments.keys().cloned().collect();
    traffic::validate(&endpoint.traffic, &endpoint.mirror_traffic, &names).map_err(in_file(&endpoint_file))?;
    Ok(Desired { endpoint, deployments })
}

/// Brings the running state of the endpoint `desired` names to it, touching only what
/// differs. The endpoint belongs to the folder `dir`: another folder naming it is refused.
async fn apply(ws: &Workspace, dir: &Path, desired: &Desired) -> Result<(), ConfigDirError> {
    let step = |step: String| move |error| ConfigDirError::Apply { step, error };
    if let Err(owner) = ws.claim(&desired.endpoint.name, dir) {
        return Err(ConfigDirError::Claimed {
            folder: dir.display().to_string(),
            name: desired.endpoint.name.clone(),
            owner: owner.display().to_string(),
        });
    }
    let existing = ws.endpoint(&desired.endpoint.name).ok();
    let current = existing.map(|p| p.current_specs()).unwrap_or_default();
    // 0. Registered assets resolved, and the hooks they make checked, before anything changes:
    // the folder is applied whole or not at all, as for a file that does not parse.
    let mut resolved = BTreeMap::new();
    for (name, spec) in desired.deployments.iter().filter(|(_, s)| s.names_registered_assets()) {
        let spec = ws.resolved(spec, current.1.get(name)).map_err(step(format!("deployment {name}")))?;
        ws.loader.hook_kind(&spec).map_err(|e| step(format!("deployment {name}"))(e.into()))?;
        resolved.insert(name.clone(), spec);
    }
    // 1. The endpoint itself (keeping the running traffic until the deployments are ready).
    let ep = &desired.endpoint;
    let needs_put = match &current.0 {
        None => true,
        Some(cur) => {
            cur.name != ep.name
                || cur.auth_mode != ep.auth_mode
                || cur.description != ep.description
                || cur.tags != ep.tags
                || cur.traffic_affinity != ep.traffic_affinity
        }
    };
    if needs_put {
        // The settings from the file; traffic stays where it is until step 3 moves it.
        let (traffic, mirror_traffic) = current
            .0
            .as_ref()
            .filter(|c| c.name == ep.name)
            .map(|c| (c.traffic.clone(), c.mirror_traffic.clone()))
            .unwrap_or_default();
        let spec = EndpointSpec { traffic, mirror_traffic, rollout: None, ..ep.clone() };
        ws.put_endpoint(spec, Vec::new()).map_err(step("endpoint".into()))?;
    }
    let control = &ws.endpoint(&ep.name).map_err(step("endpoint".into()))?;
    control.set_declarative(dir.to_path_buf());
    // 2. New and changed deployments, loaded before traffic moves.
    let mut touched = Vec::new();
    for (name, spec) in &desired.deployments {
        let spec = resolved.get(name).unwrap_or(spec);
        match current.1.get(name) {
            Some(old) if old == spec => {}
            Some(old) => {
                wait_idle(control, name).await;
                let patch = changed_fields(old, spec);
                control.patch_deployment(name, patch).map_err(step(format!("deployment {name}")))?;
                touched.push(name.clone());
            }
            None => {
                control.put_deployment(spec.clone(), false).map_err(step(format!("deployment {name}")))?;
                touched.push(name.clone());
            }
        }
    }
    for name in &touched {
        wait_idle(control, name).await;
    }
    // 3. Traffic and mirror rule, in one atomic change. With a `rollout:` in the file, the
    // file's traffic is where the rollout starts: once started, the rollout owns the traffic
    // (its progress is in `rollout show` and the endpoint's `rollout_status`, never written
    // back), and it starts again only when the plan in the file changes. Removing the field
    // aborts a rollout still going and applies the file's traffic.
    let split = json!({"traffic": ep.traffic, "mirror_traffic": ep.mirror_traffic});
    let running_plan = control.config_rollout();
    if ep.rollout.is_none() || running_plan != ep.rollout {
        if running_plan.is_some() && control.rollout_active() {
            control.abort_rollout().map_err(step("rollout".into()))?;
        }
        control.patch_endpoint(split).map_err(step("traffic".into()))?;
        if let Some(plan) = &ep.rollout {
            control.start_rollout(plan.clone(), super::RolloutSource::ConfigDir).map_err(step("rollout".into()))?;
        }
    }
    // 4. Deployments no longer in the folder (their traffic is 0 now).
    for name in current.1.keys().filter(|n| !desired.deployments.contains_key(*n)) {
        control.delete_deployment(name).map_err(step(format!("deployment {name}")))?;
    }
    Ok(())
}

/// A merge patch with the top-level fields of `new` that differ from `old` (null for removed
/// ones), so that only an instance-count change scales in place.
fn changed_fields(old: &DeploymentSpec, new: &DeploymentSpec) -> Value {
    let (Ok(Value::Object(o)), Ok(Value::Object(n))) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return json!({});
    };
    let mut patch = serde_json::Map::new();
    for (k, v) in &n {
        if o.get(k) != Some(v) {
            patch.insert(k.clone(), v.clone());
        }
    }
    for k in o.keys().filter(|k| !n.contains_key(*k)) {
        patch.insert(k.clone(), Value::Null);
    }
    Value::Object(patch)
}

/// Waits until a deployment has no operation in progress (or the wait limit passes).
async fn wait_idle(control: &ControlPlane, name: &str) {
    control.wait_settled(name, LOAD_WAIT).await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::loader::FakeLoader;
    use super::super::tests::{deployment, split, workspace};
    use super::*;
    use crate::deployment::ProvisioningState;

    /// A folder naming a model that is not registered changes nothing, not even the endpoint
    /// or the deployments before it: references are resolved before anything is applied.
    #[tokio::test]
    async fn a_folder_naming_an_unregistered_model_applies_nothing() {
        let loader = Arc::new(FakeLoader::default());
        let ws = workspace(&loader, None);
        ws.set_assets(crate::assets::AssetStore::temporary().unwrap());
        let blue = deployment("blue", "models/v1", json!({}));
        let (red, _) = DeploymentSpec::from_value(json!({"name": "red", "model": "azureml:nope:1"})).unwrap();
        let e = apply(&ws, Path::new("/config/my-ep"), &desired(json!({"blue": 100}), &[blue, red])).await.unwrap_err();
        assert!(e.to_string().contains("azureml:nope:1 is not registered"), "{e}");
        assert!(ws.endpoint("my-ep").is_err(), "the endpoint was created");
    }

    fn desired(traffic: Value, deployments: &[DeploymentSpec]) -> Desired {
        let (endpoint, _) = EndpointSpec::from_value(json!({"name": "my-ep", "traffic": traffic})).unwrap();
        Desired { endpoint, deployments: deployments.iter().map(|d| (d.name.clone(), d.clone())).collect() }
    }

    /// A folder applied from nothing, then changed: only what differs is touched (a count
    /// scales the same version in place), a deployment gone from the folder is deleted, and
    /// traffic moves once the deployments it names are ready.
    #[tokio::test]
    async fn a_folder_is_applied_and_a_change_touches_only_what_differs() {
        let loader = Arc::new(FakeLoader::default());
        let ws = workspace(&loader, None);
        let dir = Path::new("/config/my-ep");
        let blue = deployment("blue", "models/v1", json!({}));
        let green = deployment("green", "models/v2", json!({}));
        apply(&ws, dir, &desired(json!({"blue": 80, "green": 20}), &[blue.clone(), green.clone()])).await.unwrap();
        let cp = ws.endpoint("my-ep").unwrap();
        assert_eq!(split(&cp), json!({"blue": 80, "green": 20}));
        let load_of = |name: &str| cp.lock().deployments[name].load_id;
        let (blue_load, green_load) = (load_of("blue"), load_of("green"));

        let green2 = deployment("green", "models/v2", json!({"instance_count": 2}));
        apply(&ws, dir, &desired(json!({"blue": 80, "green": 20}), &[blue.clone(), green2])).await.unwrap();
        assert_eq!(load_of("blue"), blue_load, "blue did not change: untouched");
        assert_eq!(load_of("green"), green_load, "a count change scales the same version");
        assert_eq!(cp.get_deployment("green").unwrap().instances.counts.ready, 2);

        apply(&ws, dir, &desired(json!({"blue": 100}), std::slice::from_ref(&blue))).await.unwrap();
        assert_eq!(split(&cp), json!({"blue": 100}));
        assert!(cp.get_deployment("green").is_err(), "green left the folder: deleted");

        // A second folder naming the same endpoint is refused, and changes nothing.
        let claimed = apply(&ws, Path::new("/config/copy"), &desired(json!({}), &[])).await.unwrap_err();
        assert!(
            matches!(claimed, ConfigDirError::Claimed { .. }) && claimed.to_string().contains("/config/my-ep"),
            "{claimed}"
        );
        assert_eq!(split(&cp), json!({"blue": 100}));
    }

    /// Two folders that name one endpoint, applied at once: exactly one owns it, the other is
    /// refused naming the owner (before, both could pass the check and be applied, mixed).
    #[tokio::test]
    async fn two_folders_naming_one_endpoint_never_both_apply() {
        let loader = Arc::new(FakeLoader::default());
        let ws = workspace(&loader, None);
        let (one, two) = (Path::new("/config/one"), Path::new("/config/two"));
        let first = desired(json!({"one": 100}), &[deployment("one", "models/a", json!({}))]);
        let second = desired(json!({"two": 100}), &[deployment("two", "models/b", json!({}))]);
        let (x, y) = tokio::join!(apply(&ws, one, &first), apply(&ws, two, &second));
        assert!(x.is_ok() != y.is_ok(), "exactly one applies: {x:?} {y:?}");
        let refused = x.err().or(y.err()).unwrap();
        assert!(matches!(refused, ConfigDirError::Claimed { .. }), "{refused}");
        assert_eq!(ws.endpoint("my-ep").unwrap().list_deployments().unwrap().len(), 1);
    }

    /// Saved endpoints that no folder defines any more (renamed or removed while the server
    /// was down) are not restored, and their files go: before, they came back owned by no
    /// folder, and could then be neither changed nor deleted.
    #[tokio::test]
    async fn a_saved_endpoint_no_folder_defines_is_not_restored() {
        let loader = Arc::new(FakeLoader::default());
        let state = tempfile::tempdir().unwrap();
        {
            let (state_dir, _) = super::super::store::StateDir::open(state.path()).unwrap();
            let ws = workspace(&loader, Some(state_dir));
            for name in ["old-ep", "kept-ep"] {
                let (spec, _) = EndpointSpec::from_value(json!({"name": name})).unwrap();
                ws.put_endpoint(spec, vec![]).unwrap();
            }
        }
        let config = tempfile::tempdir().unwrap();
        std::fs::write(config.path().join("endpoint.yml"), "name: kept-ep\n").unwrap();
        let (_, saved) = super::super::store::StateDir::open(state.path()).unwrap();
        let kept = keep_defined(config.path(), saved);
        let names: Vec<_> = kept.iter().map(|s| s.doc.endpoint.as_ref().unwrap().spec.name.clone()).collect();
        assert_eq!(names, ["kept-ep"]);
        let (_, again) = super::super::store::StateDir::open(state.path()).unwrap();
        assert_eq!(again.len(), 1, "old-ep's file is gone");
        // A folder that cannot be read keeps every saved endpoint (it may be the one).
        std::fs::write(config.path().join("endpoint.yml"), "name: [").unwrap();
        assert_eq!(keep_defined(config.path(), again).len(), 1);
    }

    /// Traffic to a deployment whose init failed is refused as the API refuses it: the error
    /// names the step, and the split that serves stays.
    #[tokio::test]
    async fn traffic_to_a_deployment_that_failed_is_refused_and_the_running_split_stays() {
        let loader = Arc::new(FakeLoader::default());
        loader.fail_model("models/broken");
        let ws = workspace(&loader, None);
        let dir = Path::new("/config");
        let blue = deployment("blue", "models/v1", json!({}));
        apply(&ws, dir, &desired(json!({"blue": 100}), std::slice::from_ref(&blue))).await.unwrap();
        let cp = ws.endpoint("my-ep").unwrap();
        let green = deployment("green", "models/broken", json!({}));
        let e = apply(&ws, dir, &desired(json!({"blue": 50, "green": 50}), &[blue, green])).await.unwrap_err();
        assert!(e.to_string().contains("traffic"), "{e}");
        assert_eq!(cp.get_deployment("green").unwrap().provisioning_state, ProvisioningState::Failed);
        assert_eq!(split(&cp), json!({"blue": 100, "green": 0}));
    }
}
