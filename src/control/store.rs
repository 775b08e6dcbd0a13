//! `--state-dir`: the control-plane state on disk, so a restarted process comes back exactly
//! where it was.
//!
//! The whole durable state (endpoint with its traffic and mirror rule, credentials, deployment
//! specs) is one small JSON document, rewritten after each accepted change: write a temporary
//! file, fsync it, rename it over `state.json`, fsync the folder. A reader therefore sees the
//! old document or the new one, never a mix, and a change is acknowledged only once the rename
//! is durable. A document that cannot be read is reported and left alone: the operator decides,
//! nothing is silently replaced.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::endpoint::Credentials;
use crate::spec::{DeploymentSpec, EndpointSpec};

/// The file name inside the state folder.
pub const STATE_FILE: &str = "state.json";
/// The format version written now.
const VERSION: u32 = 1;

/// Everything that survives a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Durable {
    pub version: u32,
    pub endpoint: Option<DurableEndpoint>,
    pub deployments: Vec<DeploymentSpec>,
}

/// The endpoint's part of the durable state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurableEndpoint {
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
    pub fn new(endpoint: Option<DurableEndpoint>, deployments: Vec<DeploymentSpec>) -> Self {
        Self { version: VERSION, endpoint, deployments }
    }
}

/// The state folder.
#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
}

impl StateStore {
    /// Opens (creating) the folder and reads the saved state, if any. A file that exists but
    /// cannot be read or parsed is an error that names the file.
    pub fn open(dir: &Path) -> Result<(Self, Option<Durable>), String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create --state-dir {}: {e}", dir.display()))?;
        let path = dir.join(STATE_FILE);
        let saved = match fs::read(&path) {
            Ok(bytes) => {
                let doc: Durable = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "the saved state {} is corrupt ({e}); it was left as it is: move it away to start empty, or restore a backup",
                        path.display()
                    )
                })?;
                if doc.version != VERSION {
                    return Err(format!(
                        "the saved state {} has format version {}, this switchyard reads version {VERSION}",
                        path.display(),
                        doc.version
                    ));
                }
                Some(doc)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read the saved state {}: {e}", path.display())),
        };
        Ok((Self { dir: dir.to_path_buf() }, saved))
    }

    /// Replaces the saved state atomically and durably.
    pub fn save(&self, doc: &Durable) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(doc).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
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
        fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AuthMode;

    #[test]
    fn saves_and_reads_back_and_refuses_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let (store, saved) = StateStore::open(dir.path()).unwrap();
        assert!(saved.is_none());
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
        let (_, back) = StateStore::open(dir.path()).unwrap();
        assert_eq!(back, Some(doc));
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").unwrap();
        let err = StateStore::open(dir.path()).unwrap_err();
        assert!(err.contains("corrupt") && err.contains("left as it is"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(STATE_FILE)).unwrap(), b"{not json", "never replaced");
    }
}
