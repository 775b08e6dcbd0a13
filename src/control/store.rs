//! `--state-dir`: the control-plane state on disk, so a restarted process comes back exactly
//! where it was.
//!
//! Each endpoint's durable state (the endpoint with its traffic and mirror rule, credentials,
//! deployment specs) is one small JSON document, rewritten after each accepted change: write a
//! temporary file, fsync it, rename it over the endpoint's file, fsync the folder. A reader
//! therefore sees the old document or the new one, never a mix, and a change is acknowledged
//! only once the rename is durable. One file per endpoint is what keeps endpoints apart on
//! disk too: a crash in the middle of one endpoint's change leaves every other file as it was.
//!
//! Layout: the first endpoint lives in `state.json`, exactly as when a process held one
//! endpoint (so a state folder of that time is read as it is, and a one-endpoint server still
//! writes the same file); every further endpoint in `endpoints/NAME.json`. A deleted
//! endpoint's file is removed, and `state.json` goes to the next endpoint created.
//!
//! A document that cannot be read is reported and left alone: the operator decides, nothing
//! is silently replaced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::endpoint::Credentials;
use crate::spec::{traffic, DeploymentSpec, EndpointSpec, SpecError, MAX_DEPLOYMENTS};

/// The file name inside the state folder.
pub(crate) const STATE_FILE: &str = "state.json";
/// The format version written now.
const VERSION: u32 = 1;

/// Everything that survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Durable {
    pub version: u32,
    pub endpoint: Option<DurableEndpoint>,
    /// Each deployment as it serves (a failed update never lands here).
    pub deployments: Vec<DeploymentSpec>,
    /// Replacements acknowledged and still loading: after a restart they load again beside the
    /// version that serves, which keeps serving until they are ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<DeploymentSpec>,
    /// The last failed update of each deployment that has one, for `show`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_updates: Vec<FailedUpdate>,
    /// The last rollout and its progress (a running one resumes after a restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<super::rollout::DurableRollout>,
}

/// An update (replacement or scale-up) that failed while the previous version kept serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FailedUpdate {
    /// The spec that was asked for.
    pub spec: DeploymentSpec,
    /// Why it failed.
    pub error: String,
    /// When it failed (RFC 3339, UTC).
    pub at: String,
}

impl FailedUpdate {
    /// A failure recorded now.
    pub(crate) fn now(spec: DeploymentSpec, error: String) -> Self {
        Self { spec, error, at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string() }
    }
}

/// The endpoint's part of the durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DurableEndpoint {
    /// Name, auth mode, description, tags, traffic and mirror rule as accepted.
    pub spec: EndpointSpec,
    pub credentials: Credentials,
    /// A deployment created with `--all-traffic` that was not ready yet: it takes all traffic
    /// once loaded, also after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_traffic_on_ready: Option<String>,
}

impl Durable {
    /// A document of the current version.
    pub(crate) fn new(endpoint: Option<DurableEndpoint>, deployments: Vec<DeploymentSpec>) -> Self {
        Self { version: VERSION, endpoint, deployments, pending: Vec::new(), failed_updates: Vec::new(), rollout: None }
    }

    /// Checks a document read from disk with the same rules as the admin API, so a hand-edited
    /// or damaged file cannot bring back a state the API would refuse (traffic 150, a mirror to
    /// the live deployment, 300 instances, a name with an escape sequence...). The error names
    /// the rule.
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        let mut names = BTreeSet::new();
        let check = |spec: &DeploymentSpec, what: &str| -> Result<(), SpecError> {
            let value = serde_json::to_value(spec).map_err(|e| SpecError::invalid(e.to_string()))?;
            // Whether the model is on disk is not checked here: a deployment whose files went
            // missing is restored as `Failed`, and the others still serve.
            DeploymentSpec::from_value(value)
                .map_err(|e| SpecError::invalid(format!("{what} {:?}: {}", spec.name, e.message)))?;
            if let (Some(own), Some(ep)) = (&spec.endpoint_name, &self.endpoint) {
                if *own != ep.spec.name {
                    return Err(SpecError::invalid(format!(
                        "{what} {:?} is for endpoint {own:?}, but the saved endpoint is {:?}",
                        spec.name, ep.spec.name
                    )));
                }
            }
            Ok(())
        };
        for spec in &self.deployments {
            check(spec, "deployment")?;
            if !names.insert(spec.name.clone()) {
                return Err(SpecError::invalid(format!("deployment {:?} is saved twice", spec.name)));
            }
        }
        if names.len() > MAX_DEPLOYMENTS {
            return Err(SpecError::invalid(format!(
                "{} deployments are saved; an endpoint holds at most {MAX_DEPLOYMENTS}",
                names.len()
            )));
        }
        for spec in &self.pending {
            check(spec, "pending replacement of deployment")?;
            if !names.contains(&spec.name) {
                return Err(SpecError::invalid(format!(
                    "a replacement is saved for deployment {:?}, which is not saved",
                    spec.name
                )));
            }
        }
        for failed in &self.failed_updates {
            if !names.contains(&failed.spec.name) {
                return Err(SpecError::invalid(format!(
                    "a failed update is saved for deployment {:?}, which is not saved",
                    failed.spec.name
                )));
            }
        }
        match &self.endpoint {
            Some(ep) => {
                let value = serde_json::to_value(&ep.spec).map_err(|e| SpecError::invalid(e.to_string()))?;
                let (spec, _) = EndpointSpec::from_value(value)?;
                traffic::validate(&spec.traffic, &spec.mirror_traffic, &names)?;
                if ep.credentials.auth_mode() != spec.auth_mode {
                    return Err(SpecError::invalid(format!(
                        "the saved credentials are for auth_mode {:?}, the endpoint says {:?}",
                        ep.credentials.auth_mode(),
                        spec.auth_mode
                    )));
                }
                if let Some(n) = ep.all_traffic_on_ready.as_ref().filter(|n| !names.contains(*n)) {
                    return Err(SpecError::invalid(format!(
                        "all_traffic_on_ready names deployment {n:?}, which is not saved"
                    )));
                }
            }
            None if !names.is_empty() => {
                return Err(SpecError::invalid("deployments are saved without an endpoint"));
            }
            None => {}
        }
        if let Some(rollout) = &self.rollout {
            rollout.validate(&names)?;
        }
        Ok(())
    }
}

/// Why the state folder cannot be opened. Each message names the file and what to do: a
/// saved state that cannot be trusted stops the start and is never overwritten.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    #[error("cannot create --state-dir {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("cannot read the saved state {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the saved state {} is corrupt ({source}); it was left as it is: move it away to start empty, or restore a backup",
        path.display()
    )]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("the saved state {} has format version {found}, this switchyard reads version {VERSION}", path.display())]
    Version { path: PathBuf, found: u32 },
    #[error("the saved state {} breaks a rule: {rule}; it was left as it is: fix or move it away to start", path.display())]
    BreaksRule { path: PathBuf, rule: String },
}

/// The largest saved state read back: far above what the limits allow (at most
/// `MAX_DEPLOYMENTS` deployments of documents of at most 1 MiB each).
const MAX_STATE_BYTES: u64 = 256 * 1024 * 1024;

/// The folder of the endpoints' files other than `state.json`.
pub(crate) const ENDPOINTS_DIR: &str = "endpoints";

/// The state folder.
#[derive(Debug)]
pub(crate) struct StateDir {
    dir: PathBuf,
}

/// One saved endpoint: its document and the store it was read from (where its changes go).
#[derive(Debug)]
pub(crate) struct Saved {
    pub store: StateStore,
    pub doc: Durable,
}

impl StateDir {
    /// Opens (creating) the folder and reads every saved endpoint. A file that exists but
    /// cannot be read, parsed or trusted is an error that names the file.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<Saved>), OpenError> {
        fs::create_dir_all(dir).map_err(|source| OpenError::CreateDir { dir: dir.to_path_buf(), source })?;
        let mut saved = Vec::new();
        let primary = StateStore { dir: dir.to_path_buf(), file: STATE_FILE.to_string() };
        if let Some(doc) = primary.read()? {
            if doc.endpoint.is_some() {
                saved.push(Saved { store: primary, doc });
            }
        }
        let others = dir.join(ENDPOINTS_DIR);
        let entries = match fs::read_dir(&others) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.file_name()).collect::<Vec<_>>(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(OpenError::Read { path: others, source }),
        };
        let mut names: Vec<String> = entries
            .iter()
            .filter_map(|n| n.to_str())
            // Temporary files of an interrupted save start with a dot.
            .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
            .map(str::to_string)
            .collect();
        names.sort();
        for file in names {
            let store = StateStore { dir: others.clone(), file };
            let path = store.path();
            let Some(doc) = store.read()? else { continue };
            let Some(ep) = &doc.endpoint else {
                return Err(OpenError::BreaksRule { path, rule: "the file holds no endpoint".into() });
            };
            if store.file != format!("{}.json", ep.spec.name) {
                return Err(OpenError::BreaksRule {
                    path,
                    rule: format!("the file is named for another endpoint than the one it holds ({:?})", ep.spec.name),
                });
            }
            let name = &ep.spec.name;
            if saved.iter().any(|s: &Saved| s.doc.endpoint.as_ref().is_some_and(|e| e.spec.name == *name)) {
                return Err(OpenError::BreaksRule {
                    path,
                    rule: format!("endpoint {name:?} is saved twice (also in {STATE_FILE})"),
                });
            }
            saved.push(Saved { store, doc });
        }
        if saved.len() > crate::spec::MAX_ENDPOINTS {
            return Err(OpenError::BreaksRule {
                path: dir.to_path_buf(),
                rule: format!(
                    "it holds {} endpoints; a server holds at most {}",
                    saved.len(),
                    crate::spec::MAX_ENDPOINTS
                ),
            });
        }
        Ok((Self { dir: dir.to_path_buf() }, saved))
    }

    /// Where a new endpoint's changes go: `state.json` when no other endpoint holds it
    /// (`primary_taken` false), else `endpoints/NAME.json`.
    pub(crate) fn store_for(&self, name: &str, primary_taken: bool) -> StateStore {
        if primary_taken {
            StateStore { dir: self.dir.join(ENDPOINTS_DIR), file: format!("{name}.json") }
        } else {
            StateStore { dir: self.dir.clone(), file: STATE_FILE.to_string() }
        }
    }
}

/// One endpoint's file in the state folder.
#[derive(Debug)]
pub(crate) struct StateStore {
    dir: PathBuf,
    file: String,
}

impl StateStore {
    /// Whether this is `state.json` (which a new endpoint may take once it is free).
    pub(crate) fn is_primary(&self) -> bool {
        self.file == STATE_FILE && !self.dir.ends_with(ENDPOINTS_DIR)
    }

    fn path(&self) -> PathBuf {
        self.dir.join(&self.file)
    }

    /// Reads and checks the document, if the file exists.
    fn read(&self) -> Result<Option<Durable>, OpenError> {
        let path = self.path();
        // A regular file only, read within a deadline (see `sys::files`): a FIFO or a hung
        // mount here would hang the start past SIGTERM.
        match crate::sys::files::read_bounded(&path, MAX_STATE_BYTES, crate::sys::files::READ_DEADLINE) {
            Ok(bytes) => {
                let doc: Durable = serde_json::from_slice(&bytes)
                    .map_err(|source| OpenError::Corrupt { path: path.clone(), source })?;
                if doc.version != VERSION {
                    return Err(OpenError::Version { path, found: doc.version });
                }
                doc.validate().map_err(|e| OpenError::BreaksRule { path: path.clone(), rule: e.message })?;
                Ok(Some(doc))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(OpenError::Read { path, source: std::io::Error::other(e.to_string()) }),
        }
    }

    /// Replaces the saved document atomically and durably; a document without an endpoint
    /// (it was deleted) removes the file.
    pub(crate) fn save(&self, doc: &Durable) -> std::io::Result<()> {
        if doc.endpoint.is_none() {
            return match fs::remove_file(self.path()) {
                Ok(()) => File::open(&self.dir)?.sync_all(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
        }
        if !self.dir.is_dir() {
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            builder.recursive(true).create(&self.dir)?;
        }
        let bytes = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{}.tmp", self.file));
        {
            let mut options = OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                // The file holds the endpoint's keys: readable by this user only.
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AuthMode;

    #[test]
    #[allow(clippy::disallowed_methods, reason = "a test reading the file it wrote")]
    fn saves_and_reads_back_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (folder, saved) = StateDir::open(dir.path()).unwrap();
        assert!(saved.is_empty());
        let store = folder.store_for("ep-1", false);
        let (spec, _) = EndpointSpec::from_value(serde_json::json!({"name": "ep-1"})).unwrap();
        let doc = Durable::new(
            Some(DurableEndpoint {
                spec,
                credentials: Credentials::generate(AuthMode::Key, std::time::Duration::from_secs(60)),
                all_traffic_on_ready: None,
            }),
            vec![],
        );
        store.save(&doc).unwrap();
        let (_, back) = StateDir::open(dir.path()).unwrap();
        assert_eq!(back.into_iter().map(|s| s.doc).collect::<Vec<_>>(), vec![doc]);
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = StateDir::open(dir.path()).unwrap_err();
        assert!(matches!(err, OpenError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("left as it is"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), b"{not json", "never replaced");
    }
}
