//! The asset store: registered models and environments by name and version, and code folders,
//! each a content-addressed, read-only copy (CONTRACT §11). One store serves every endpoint of
//! the process, as an Azure workspace's assets serve all its endpoints.
//!
//! Layout under the store's root: `blobs/sha256/DIGEST/ENTRY` (the registered folder or file,
//! `ENTRY` its base name: Azure's scoring scripts find a registered folder's files under
//! `AZUREML_MODEL_DIR/ENTRY/`), `models/NAME/VERSION.json`, `environments/NAME/VERSION.json`,
//! `uploads/ID/files/` (in progress). Metadata is written to a temporary file and renamed, so a
//! crash leaves a version whole or absent; a blob is renamed into place whole. The metadata is
//! checked when read: names and versions must be the file's own, a blob a digest, an entry a
//! single name, so nothing the files say is used as a path as is.
//!
//! Leaf-like: it uses `spec` (names, references, conda files) and `sys`, and no layer above.

mod upload;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::spec::reference::{validate_asset_name, validate_asset_version};
use crate::spec::{AssetKind, AssetRef, SpecError};

pub(crate) use upload::UploadFile;
pub(crate) use upload::{MAX_UPLOAD_BYTES, MAX_UPLOAD_FILES, UPLOAD_IDLE};

/// Why the store refused an operation; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AssetError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("the asset store could not {0}: {1}")]
    Io(&'static str, #[source] std::io::Error),
}

impl AssetError {
    fn io(what: &'static str) -> impl Fn(std::io::Error) -> AssetError {
        move |e| AssetError::Io(what, e)
    }
}

impl From<SpecError> for AssetError {
    fn from(e: SpecError) -> Self {
        AssetError::Invalid(e.message)
    }
}

/// The model types Azure registers (`type:`); recorded, and shown.
pub(crate) const MODEL_TYPES: &[&str] = &["custom_model", "mlflow_model", "triton_model"];
/// The most tags one asset carries, and their sizes.
const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 256;
const MAX_TAG_VALUE: usize = 1024;
const MAX_DESCRIPTION: usize = 4096;

/// A version as clients send it: Azure's versions are strings, and SDKs send numbers too.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(crate) enum VersionInput {
    Text(String),
    Number(u64),
    /// Anything else (`1.0`, `-1`, a list): refused with what a version may be.
    #[schema(value_type = f64)]
    Other(Value),
}

impl VersionInput {
    fn text(&self, kind: AssetKind) -> Result<String, AssetError> {
        match self {
            VersionInput::Text(s) => Ok(s.clone()),
            VersionInput::Number(n) => Ok(n.to_string()),
            VersionInput::Other(v) => Err(AssetError::Invalid(format!(
                "{} version {v} must be a string (\"1\", \"1.0\") or a whole number",
                kind.word()
            ))),
        }
    }
}

/// `POST /v1/models`: register an upload as a model.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelInput {
    pub name: String,
    /// The next whole number when absent.
    #[serde(default)]
    pub version: Option<VersionInput>,
    /// `custom_model` (default), `mlflow_model` or `triton_model`.
    #[serde(default, rename = "type")]
    pub model_type: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tags: BTreeMap<String, Value>,
    /// The upload's id (`POST /v1/uploads`); it must hold one top-level folder or file.
    pub upload: String,
}

/// `POST /v1/environments`: register an environment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EnvironmentInput {
    pub name: String,
    #[serde(default)]
    pub version: Option<VersionInput>,
    /// The Docker image (recorded: the worker runs in this server's own Python).
    #[serde(default)]
    pub image: Option<String>,
    /// The conda YAML's text (not a path: the client reads the file).
    #[serde(default)]
    pub conda_file: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tags: BTreeMap<String, Value>,
}

/// `POST /v1/codes`: store an upload's folder as code.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CodeInput {
    pub upload: String,
}

/// A registered model version, as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct ModelView {
    /// `azureml:NAME:VERSION`, what a deployment's `model:` takes.
    pub id: String,
    pub name: String,
    pub version: String,
    #[serde(rename = "type")]
    pub model_type: String,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub tags: BTreeMap<String, String>,
    /// Where the stored copy is (a deployment's `model.path` once resolved).
    pub path: String,
    /// `sha256:HEX` of the content.
    pub digest: String,
    pub size_bytes: u64,
    pub file_count: u64,
    /// RFC 3339, seconds.
    pub created_at: String,
    pub archived: bool,
}

/// A registered environment version, as the admin API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct EnvironmentView {
    pub id: String,
    pub name: String,
    pub version: String,
    pub image: Option<String>,
    /// The stored conda file, if one was registered.
    pub conda_file: Option<String>,
    /// Its text.
    pub conda_yaml: Option<String>,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub tags: BTreeMap<String, String>,
    pub digest: Option<String>,
    pub created_at: String,
    pub archived: bool,
}

/// A curated environment this server maps to a package set.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct CuratedEnvironmentView {
    /// The reference a deployment's `environment:` takes.
    pub id: String,
    pub name: String,
    pub description: String,
    pub packages: Vec<String>,
}

/// Stored code (`POST /v1/codes`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct CodeView {
    pub id: String,
    /// What a deployment's `code_configuration.code` takes.
    pub path: String,
    pub digest: String,
    pub size_bytes: u64,
    pub file_count: u64,
}

/// `POST /v1/uploads`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct UploadView {
    pub id: String,
    pub max_bytes: u64,
    pub max_files: usize,
    pub expires_after_s: u64,
}

/// One file received (`PUT /v1/uploads/{id}/files/{path}`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub(crate) struct UploadedFileView {
    pub path: String,
    pub size_bytes: u64,
}

/// What both kinds of registration record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    name: String,
    version: String,
    description: Option<String>,
    tags: BTreeMap<String, String>,
    created_ms: u64,
    /// Registration order across the store: `latest` is the highest not archived.
    seq: u64,
    archived: bool,
}

/// A blob and the entry in it: `blobs/sha256/DIGEST/ENTRY`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Blob {
    digest: String,
    entry: String,
    size_bytes: u64,
    file_count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelRecord {
    #[serde(flatten)]
    meta: Meta,
    model_type: String,
    blob: Blob,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentRecord {
    #[serde(flatten)]
    meta: Meta,
    image: Option<String>,
    conda: Option<Blob>,
    conda_yaml: Option<String>,
}

trait Record: Serialize + serde::de::DeserializeOwned + Clone {
    const KIND: AssetKind;
    fn meta(&self) -> &Meta;
    fn meta_mut(&mut self) -> &mut Meta;
    fn blobs(&self) -> Vec<&Blob>;
}

impl Record for ModelRecord {
    const KIND: AssetKind = AssetKind::Model;
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }
    fn blobs(&self) -> Vec<&Blob> {
        vec![&self.blob]
    }
}

impl Record for EnvironmentRecord {
    const KIND: AssetKind = AssetKind::Environment;
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut Meta {
        &mut self.meta
    }
    fn blobs(&self) -> Vec<&Blob> {
        self.conda.iter().collect()
    }
}

/// Every registration, by kind and name, versions in registration order.
#[derive(Default)]
struct Index {
    models: BTreeMap<String, Vec<ModelRecord>>,
    environments: BTreeMap<String, Vec<EnvironmentRecord>>,
    seq: u64,
}

/// The store. Registrations are kept in memory (read at start) and written through.
pub(crate) struct AssetStore {
    root: PathBuf,
    index: Mutex<Index>,
    uploads: upload::Uploads,
    /// The private folder used when no `--assets-dir`/`--state-dir` is given; removed on drop.
    _temporary: Option<tempfile::TempDir>,
}

fn folder_of(kind: AssetKind) -> &'static str {
    match kind {
        AssetKind::Model => "models",
        AssetKind::Environment => "environments",
    }
}

impl AssetStore {
    /// Opens (creating it) the store at `root`, reading every registration; uploads of an
    /// earlier process are removed.
    pub(crate) fn open(root: &Path) -> Result<Self, AssetError> {
        Self::open_in(root.to_path_buf(), None)
    }

    /// A store in a private temporary folder, removed when the store is dropped.
    pub(crate) fn temporary() -> Result<Self, AssetError> {
        // Named with this server's pid and start time: a server that dies without removing it
        // has it removed by the next one (`remove_dead_temporaries`).
        let dir = tempfile::Builder::new()
            .prefix(&crate::sys::tmp::own_prefix(TEMPORARY_PREFIX))
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir()
            .map_err(AssetError::io("create"))?;
        let root = dir.path().to_path_buf();
        Self::open_in(root, Some(dir))
    }

    fn open_in(root: PathBuf, temporary: Option<tempfile::TempDir>) -> Result<Self, AssetError> {
        for sub in ["blobs/sha256", "models", "environments"] {
            fs::create_dir_all(root.join(sub)).map_err(AssetError::io("create its folders"))?;
        }
        // Absolute: a stored path is handed to hooks that run in other folders (a model's link
        // in a worker's folder, a code folder made the worker's working folder).
        let root = std::path::absolute(&root).map_err(AssetError::io("find its folder"))?;
        let _ = fs::remove_dir_all(root.join("uploads"));
        fs::create_dir_all(root.join("uploads")).map_err(AssetError::io("create its folders"))?;
        let mut index = Index {
            models: read_all::<ModelRecord>(&root),
            environments: read_all::<EnvironmentRecord>(&root),
            seq: 0,
        };
        let seqs = index.models.values().flatten().map(|r| r.meta.seq);
        index.seq = seqs.chain(index.environments.values().flatten().map(|r| r.meta.seq)).max().unwrap_or(0);
        Ok(Self { root, index: Mutex::new(index), uploads: upload::Uploads::default(), _temporary: temporary })
    }

    fn index(&self) -> MutexGuard<'_, Index> {
        // Changed only by whole inserts and flag flips: a poisoned lock is still consistent.
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// `POST /v1/uploads`.
    pub(crate) fn begin_upload(&self) -> Result<UploadView, AssetError> {
        let id = self.uploads.begin(&self.uploads_dir())?;
        Ok(UploadView {
            id,
            max_bytes: MAX_UPLOAD_BYTES,
            max_files: MAX_UPLOAD_FILES,
            expires_after_s: UPLOAD_IDLE.as_secs(),
        })
    }

    /// Opens one file of an upload for writing (blocking I/O: call off the async workers).
    pub(crate) fn upload_file(&self, id: &str, relative: &str) -> Result<UploadFile, AssetError> {
        self.uploads.file(id, relative)
    }

    /// `DELETE /v1/uploads/{id}`.
    pub(crate) fn abandon_upload(&self, id: &str) -> Result<(), AssetError> {
        self.uploads.abandon(id, &self.uploads_dir())
    }

    /// Moves an upload's one top-level entry into the blobs: the folder that was sent
    /// becomes `blobs/sha256/DIGEST/ENTRY`. An identical blob already there is reused.
    fn store_upload(&self, id: &str, want_folder: bool) -> Result<(Blob, bool), AssetError> {
        let upload = self.uploads.take(id)?;
        let dir = upload.files_dir.clone();
        match self.store_tree(&dir, want_folder) {
            Ok(blob) => {
                let _ = fs::remove_dir_all(dir.parent().unwrap_or(&dir));
                Ok(blob)
            }
            // Refused before anything moved (the entry rule): the upload stays usable.
            Err(e @ AssetError::Invalid(_)) => {
                self.uploads.put_back(id, upload);
                Err(e)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(dir.parent().unwrap_or(&dir));
                Err(e)
            }
        }
    }

    /// Stores the one entry of `dir` as a blob (moving it; `dir` is left to the caller).
    /// Returns the blob, and whether it is new (false: that content was stored before).
    fn store_tree(&self, dir: &Path, want_folder: bool) -> Result<(Blob, bool), AssetError> {
        let entries: Vec<_> = fs::read_dir(dir)
            .map_err(AssetError::io("read an upload"))?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        let [entry] = entries.as_slice() else {
            return Err(AssetError::Invalid(format!(
                "an upload must hold exactly one top-level folder or file (the one registered), this one holds {}: \
                 send paths as FOLDER/FILE",
                entries.len()
            )));
        };
        let entry = entry.to_str().ok_or_else(|| AssetError::Invalid("a file name is not UTF-8".into()))?.to_string();
        let source = dir.join(&entry);
        if want_folder && !source.is_dir() {
            return Err(AssetError::Invalid(format!(
                "code must be a folder holding the scoring script; the upload holds the file {entry:?}: send it as FOLDER/{entry}"
            )));
        }
        let (digest, size_bytes, file_count) = digest_tree(&source, &entry)?;
        if file_count == 0 {
            return Err(AssetError::Invalid(format!("the upload's folder {entry:?} holds no file: send its files")));
        }
        let target = self.root.join("blobs/sha256").join(&digest);
        let fresh = !target.exists();
        if fresh {
            make_read_only(&source)?;
            // A folder of its own (`DIGEST/`), holding the entry with its name.
            // Beside `files/` (the upload's own folder), so no uploaded name can collide.
            let staging = dir.parent().unwrap_or(dir).join("blob");
            fs::create_dir(&staging).map_err(AssetError::io("store a blob"))?;
            fs::rename(&source, staging.join(&entry)).map_err(AssetError::io("store a blob"))?;
            if let Err(e) = fs::rename(&staging, &target) {
                // The same content stored meanwhile by another registration is as good.
                if !target.exists() {
                    return Err(AssetError::Io("store a blob", e));
                }
            }
        }
        Ok((Blob { digest, entry, size_bytes, file_count }, fresh))
    }

    fn blob_path(&self, blob: &Blob) -> PathBuf {
        self.root.join("blobs/sha256").join(&blob.digest).join(&blob.entry)
    }

    /// `POST /v1/models`.
    pub(crate) fn register_model(&self, input: ModelInput) -> Result<(ModelView, bool), AssetError> {
        let kind = AssetKind::Model;
        validate_asset_name(kind, &input.name)?;
        let version = input.version.as_ref().map(|v| v.text(kind)).transpose()?;
        if let Some(v) = &version {
            validate_asset_version(kind, v)?;
        }
        let model_type = input.model_type.clone().unwrap_or_else(|| "custom_model".into());
        if !MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(AssetError::Invalid(format!(
                "model type {model_type:?} is not one of {}",
                MODEL_TYPES.join(", ")
            )));
        }
        let (description, tags) = check_labels(input.description, input.tags)?;
        let (blob, _) = self.store_upload(&input.upload, false)?;
        let on_disk = self.versions_on_disk(kind, &input.name);
        let mut index = self.index();
        let seq = index.seq + 1;
        let versions = index.models.entry(input.name.clone()).or_default();
        let same = |r: &ModelRecord| r.blob == blob && r.model_type == model_type;
        let record = match pick_version(kind, &input.name, versions, &on_disk, version, same)? {
            Pick::Existing(r) => return Ok((self.model_view(&r), false)),
            Pick::New(version) => {
                ModelRecord { meta: Meta::new(input.name, version, description, tags, seq), model_type, blob }
            }
        };
        self.write_record(&record, true)?;
        index.seq = seq;
        index.models.entry(record.meta.name.clone()).or_default().push(record.clone());
        Ok((self.model_view(&record), true))
    }

    /// `POST /v1/environments`.
    pub(crate) fn register_environment(&self, input: EnvironmentInput) -> Result<(EnvironmentView, bool), AssetError> {
        let kind = AssetKind::Environment;
        validate_asset_name(kind, &input.name)?;
        let version = input.version.as_ref().map(|v| v.text(kind)).transpose()?;
        if let Some(v) = &version {
            validate_asset_version(kind, v)?;
        }
        if input.name == "curated" {
            return Err(AssetError::Invalid(
                "environment name \"curated\" is reserved (GET /v1/environments/curated lists the curated ones): choose another".into(),
            ));
        }
        if input.image.is_none() && input.conda_file.is_none() {
            return Err(AssetError::Invalid(
                "an environment needs `image`, `conda_file` or both (a Docker build context cannot be built here)"
                    .into(),
            ));
        }
        if let Some(image) = &input.image {
            if image.is_empty() || image.len() > 512 || image.chars().any(char::is_control) {
                return Err(AssetError::Invalid("image must be an image name of 1 to 512 characters".into()));
            }
        }
        let (description, tags) = check_labels(input.description, input.tags)?;
        let conda = match &input.conda_file {
            Some(text) => {
                crate::spec::python::parse_conda(text, "conda_file")?;
                let own = self.uploads_dir().join(format!("env-{}", uuid::Uuid::new_v4().simple()));
                let staging = own.join("files");
                fs::create_dir_all(&staging).map_err(AssetError::io("store a blob"))?;
                let stored = fs::write(staging.join("conda.yaml"), text)
                    .map_err(AssetError::io("store a blob"))
                    .and_then(|()| self.store_tree(&staging, false).map(|(blob, _)| blob));
                let _ = fs::remove_dir_all(&own);
                Some(stored?)
            }
            None => None,
        };
        let on_disk = self.versions_on_disk(kind, &input.name);
        let mut index = self.index();
        let seq = index.seq + 1;
        let versions = index.environments.entry(input.name.clone()).or_default();
        let same = |r: &EnvironmentRecord| r.conda == conda && r.image == input.image;
        let record = match pick_version(kind, &input.name, versions, &on_disk, version, same)? {
            Pick::Existing(r) => return Ok((self.environment_view(&r), false)),
            Pick::New(version) => EnvironmentRecord {
                meta: Meta::new(input.name, version, description, tags, seq),
                image: input.image,
                conda,
                conda_yaml: input.conda_file,
            },
        };
        self.write_record(&record, true)?;
        index.seq = seq;
        index.environments.entry(record.meta.name.clone()).or_default().push(record.clone());
        Ok((self.environment_view(&record), true))
    }

    /// `POST /v1/codes`.
    pub(crate) fn store_code(&self, input: CodeInput) -> Result<(CodeView, bool), AssetError> {
        let (blob, fresh) = self.store_upload(&input.upload, true)?;
        let view = CodeView {
            id: format!("sha256:{}", blob.digest),
            path: self.blob_path(&blob).display().to_string(),
            digest: format!("sha256:{}", blob.digest),
            size_bytes: blob.size_bytes,
            file_count: blob.file_count,
        };
        Ok((view, fresh))
    }

    /// Writes a record: temp file, then into place. A new version never replaces a file (a
    /// registration skipped at start because it did not validate keeps its name: the link
    /// fails and the registration is refused); a flip of `archived` replaces its own.
    fn write_record<R: Record>(&self, record: &R, new: bool) -> Result<(), AssetError> {
        let meta = record.meta();
        let dir = self.root.join(folder_of(R::KIND)).join(&meta.name);
        fs::create_dir_all(&dir).map_err(AssetError::io("write a registration"))?;
        let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
        let tmp = dir.join(format!(".{}.json.tmp", meta.version));
        let target = dir.join(format!("{}.json", meta.version));
        let write = || -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            if new {
                let linked = fs::hard_link(&tmp, &target);
                let _ = fs::remove_file(&tmp);
                linked?;
            } else {
                fs::rename(&tmp, &target)?;
            }
            fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                AssetError::Conflict(format!(
                    "{} {} version {} has a file in the store that could not be read at start (see the server's log): \
                     register under another version",
                    R::KIND.word(),
                    meta.name,
                    meta.version
                ))
            } else {
                AssetError::Io("write a registration", e)
            }
        })
    }

    /// The versions of `name` with a file in the store, read or not: an automatic version
    /// skips them all.
    fn versions_on_disk(&self, kind: AssetKind, name: &str) -> Vec<String> {
        let Ok(files) = fs::read_dir(self.root.join(folder_of(kind)).join(name)) else {
            return Vec::new();
        };
        files
            .filter_map(Result::ok)
            .filter_map(|f| f.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_string))
            .filter(|v| !v.starts_with('.'))
            .collect()
    }

    /// The latest version of each model (or every version of `name`), archived ones only
    /// when asked.
    pub(crate) fn models(&self, name: Option<&str>, archived: bool) -> Result<Vec<ModelView>, AssetError> {
        let index = self.index();
        listed(&index.models, name, archived, AssetKind::Model)
            .map(|rs| rs.iter().map(|r| self.model_view(r)).collect())
    }

    /// As [`models`](Self::models), for environments.
    pub(crate) fn environments(&self, name: Option<&str>, archived: bool) -> Result<Vec<EnvironmentView>, AssetError> {
        let index = self.index();
        listed(&index.environments, name, archived, AssetKind::Environment)
            .map(|rs| rs.iter().map(|r| self.environment_view(r)).collect())
    }

    /// One model version (`None`: the latest).
    pub(crate) fn model(&self, name: &str, version: Option<&str>) -> Result<ModelView, AssetError> {
        let index = self.index();
        let r = AssetRef { kind: AssetKind::Model, name: name.into(), version: version.map(str::to_string) };
        resolve(&index.models, &r, None).map(|r| self.model_view(r)).map_err(missing)
    }

    /// One environment version (`None`: the latest).
    pub(crate) fn environment(&self, name: &str, version: Option<&str>) -> Result<EnvironmentView, AssetError> {
        let index = self.index();
        let r = AssetRef { kind: AssetKind::Environment, name: name.into(), version: version.map(str::to_string) };
        resolve(&index.environments, &r, None).map(|r| self.environment_view(r)).map_err(missing)
    }

    /// Resolves a deployment's model reference; `keep` is the version it resolved to before
    /// (an update that keeps the reference keeps it, even after `@latest` moved).
    pub(crate) fn resolve_model(&self, r: &AssetRef, keep: Option<&str>) -> Result<ModelView, AssetError> {
        let index = self.index();
        resolve(&index.models, r, keep).map(|r| self.model_view(r))
    }

    /// As [`resolve_model`](Self::resolve_model), for environments.
    pub(crate) fn resolve_environment(&self, r: &AssetRef, keep: Option<&str>) -> Result<EnvironmentView, AssetError> {
        let index = self.index();
        resolve(&index.environments, r, keep).map(|r| self.environment_view(r))
    }

    /// Whether an environment of this name is registered (it then wins over a curated one).
    pub(crate) fn has_environment(&self, name: &str) -> bool {
        self.index().environments.get(name).is_some_and(|v| !v.is_empty())
    }

    /// Archives or restores `version` of `name` (every version when `None`); the caller has
    /// checked that no deployment uses what it archives. Returns the versions changed.
    pub(crate) fn set_archived(
        &self,
        kind: AssetKind,
        name: &str,
        version: Option<&str>,
        archived: bool,
    ) -> Result<Vec<String>, AssetError> {
        let mut index = self.index();
        match kind {
            AssetKind::Model => self.flip(&mut index.models, name, version, archived),
            AssetKind::Environment => self.flip(&mut index.environments, name, version, archived),
        }
    }

    fn flip<R: Record>(
        &self,
        all: &mut BTreeMap<String, Vec<R>>,
        name: &str,
        version: Option<&str>,
        archived: bool,
    ) -> Result<Vec<String>, AssetError> {
        let r = AssetRef { kind: R::KIND, name: name.into(), version: version.map(str::to_string) };
        if all.get(name).is_none_or(|v| v.is_empty()) {
            return Err(missing(not_registered(&r, all_names(all))));
        }
        let versions = all.get_mut(name).expect("checked above");
        if let Some(v) = version {
            if !versions.iter().any(|x| x.meta().version == v) {
                return Err(missing(no_version(&r, versions)));
            }
        }
        let mut changed = Vec::new();
        for record in versions.iter_mut().filter(|x| version.is_none_or(|v| x.meta().version == v)) {
            if record.meta().archived != archived {
                let mut next = record.clone();
                next.meta_mut().archived = archived;
                self.write_record(&next, false)?;
                *record = next;
                changed.push(record.meta().version.clone());
            }
        }
        Ok(changed)
    }

    fn model_view(&self, r: &ModelRecord) -> ModelView {
        ModelView {
            id: format!("azureml:{}:{}", r.meta.name, r.meta.version),
            name: r.meta.name.clone(),
            version: r.meta.version.clone(),
            model_type: r.model_type.clone(),
            description: r.meta.description.clone(),
            tags: r.meta.tags.clone(),
            path: self.blob_path(&r.blob).display().to_string(),
            digest: format!("sha256:{}", r.blob.digest),
            size_bytes: r.blob.size_bytes,
            file_count: r.blob.file_count,
            created_at: rfc3339(r.meta.created_ms),
            archived: r.meta.archived,
        }
    }

    fn environment_view(&self, r: &EnvironmentRecord) -> EnvironmentView {
        EnvironmentView {
            id: format!("azureml:{}:{}", r.meta.name, r.meta.version),
            name: r.meta.name.clone(),
            version: r.meta.version.clone(),
            image: r.image.clone(),
            conda_file: r.conda.as_ref().map(|b| self.blob_path(b).display().to_string()),
            conda_yaml: r.conda_yaml.clone(),
            description: r.meta.description.clone(),
            tags: r.meta.tags.clone(),
            digest: r.conda.as_ref().map(|b| format!("sha256:{}", b.digest)),
            created_at: rfc3339(r.meta.created_ms),
            archived: r.meta.archived,
        }
    }
}

/// The name of the temporary stores (a server without `--state-dir` or `--assets-dir`).
const TEMPORARY_PREFIX: &str = "switchyard-assets-";

/// Removes the temporary stores of servers that are no longer running (killed before their
/// cleanup). Called once at the server's start.
pub(crate) fn remove_dead_temporaries() {
    crate::sys::tmp::remove_dead_owners(TEMPORARY_PREFIX, "temporary asset store");
}

/// The curated environments `GET /v1/environments/curated` lists.
pub(crate) fn curated_environments() -> Vec<CuratedEnvironmentView> {
    crate::spec::python::CURATED_SKLEARN
        .iter()
        .map(|v| CuratedEnvironmentView {
            id: format!("azureml://registries/azureml/environments/sklearn-{v}/labels/latest"),
            name: format!("sklearn-{v}"),
            description: format!(
                "scikit-learn {v} with numpy, scipy, pandas, joblib and inference-schema (Azure's curated set)"
            ),
            packages: crate::spec::python::curated_requirements(v),
        })
        .collect()
}

impl Meta {
    fn new(
        name: String,
        version: String,
        description: Option<String>,
        tags: BTreeMap<String, String>,
        seq: u64,
    ) -> Self {
        let created_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Meta { name, version, description, tags, created_ms, seq, archived: false }
    }
}

/// The last time a record may carry (the end of year 9999: RFC 3339 has four-digit years).
const LATEST_TIME_MS: u64 = 253_402_300_799_000;

/// The highest version numbered automatically (what JSON numbers hold exactly).
const MAX_AUTO_VERSION: u64 = (1 << 53) - 1;

enum Pick<R> {
    Existing(R),
    New(String),
}

/// The version a registration gets: the one given (409 if taken by other content; the
/// existing one if the content is identical), or the next whole number.
fn pick_version<R: Record>(
    kind: AssetKind,
    name: &str,
    versions: &[R],
    on_disk: &[String],
    version: Option<String>,
    same: impl Fn(&R) -> bool,
) -> Result<Pick<R>, AssetError> {
    match version {
        Some(v) => match versions.iter().find(|r| r.meta().version == v) {
            Some(r) if same(r) => Ok(Pick::Existing(r.clone())),
            Some(_) => Err(AssetError::Conflict(format!(
                "{} {name} version {v} is registered with other content, and versions never change: \
                 register under a new version (or none, for the next one)",
                kind.word()
            ))),
            None => Ok(Pick::New(v)),
        },
        None => {
            let numbers = versions.iter().map(|r| r.meta().version.as_str()).chain(on_disk.iter().map(String::as_str));
            let highest = numbers.filter_map(|v| v.parse::<u64>().ok()).max().unwrap_or(0);
            match highest.checked_add(1).filter(|n| *n <= MAX_AUTO_VERSION) {
                Some(next) => Ok(Pick::New(next.to_string())),
                None => Err(AssetError::Invalid(format!(
                    "{} {name}'s highest version is {highest}: give the next one's version yourself",
                    kind.word()
                ))),
            }
        }
    }
}

fn check_labels(
    description: Option<String>,
    tags: BTreeMap<String, Value>,
) -> Result<(Option<String>, BTreeMap<String, String>), AssetError> {
    if description.as_ref().is_some_and(|d| d.len() > MAX_DESCRIPTION) {
        return Err(AssetError::Invalid(format!("description is longer than {MAX_DESCRIPTION} bytes")));
    }
    if tags.len() > MAX_TAGS {
        return Err(AssetError::Invalid(format!("an asset carries at most {MAX_TAGS} tags")));
    }
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        let v = match v {
            Value::String(s) => s,
            Value::Number(_) | Value::Bool(_) => v.to_string(),
            Value::Null => String::new(),
            _ => return Err(AssetError::Invalid(format!("tag {k:?} must be a string, number or boolean"))),
        };
        if k.is_empty() || k.len() > MAX_TAG_KEY || v.len() > MAX_TAG_VALUE {
            return Err(AssetError::Invalid(format!(
                "tag {k:?}: keys are 1 to {MAX_TAG_KEY} bytes, values at most {MAX_TAG_VALUE}"
            )));
        }
        out.insert(k, v);
    }
    Ok((description, out))
}

fn listed<'a, R: Record>(
    all: &'a BTreeMap<String, Vec<R>>,
    name: Option<&str>,
    archived: bool,
    kind: AssetKind,
) -> Result<Vec<&'a R>, AssetError> {
    let shown = |r: &&R| archived || !r.meta().archived;
    match name {
        Some(n) => {
            let versions = all.get(n).filter(|v| !v.is_empty()).ok_or_else(|| {
                missing(not_registered(&AssetRef { kind, name: n.into(), version: None }, all_names(all)))
            })?;
            Ok(versions.iter().filter(shown).collect())
        }
        None => Ok(all.values().filter_map(|v| v.iter().filter(shown).max_by_key(|r| r.meta().seq)).collect()),
    }
}

enum Missing {
    Name,
    Version,
    AllArchived,
}

fn find<'a, R: Record>(all: &'a BTreeMap<String, Vec<R>>, r: &AssetRef) -> Result<&'a R, Missing> {
    let versions = all.get(&r.name).filter(|v| !v.is_empty()).ok_or(Missing::Name)?;
    match &r.version {
        Some(v) => versions.iter().find(|x| x.meta().version == *v).ok_or(Missing::Version),
        None => versions.iter().filter(|x| !x.meta().archived).max_by_key(|x| x.meta().seq).ok_or(Missing::AllArchived),
    }
}

fn resolve<'a, R: Record>(
    all: &'a BTreeMap<String, Vec<R>>,
    r: &AssetRef,
    keep: Option<&str>,
) -> Result<&'a R, AssetError> {
    if r.version.is_none() {
        if let Some(kept) = keep.and_then(|k| all.get(&r.name)?.iter().find(|x| x.meta().version == k)) {
            return Ok(kept);
        }
    }
    find(all, r).map_err(|e| match e {
        Missing::Name => not_registered(r, all_names(all)),
        Missing::Version => no_version(r, &all[&r.name]),
        Missing::AllArchived => AssetError::Invalid(format!(
            "every version of {} {} is archived: restore one, or name a version ({})",
            r.kind.word(),
            r.name,
            r.short()
        )),
    })
}

/// The same message as a 404: a route naming the asset, rather than a deployment referring
/// to it.
fn missing(e: AssetError) -> AssetError {
    match e {
        AssetError::Invalid(m) => AssetError::NotFound(m),
        e => e,
    }
}

fn all_names<R>(all: &BTreeMap<String, Vec<R>>) -> Vec<&str> {
    all.iter().filter(|(_, v)| !v.is_empty()).map(|(k, _)| k.as_str()).collect()
}

fn not_registered(r: &AssetRef, names: Vec<&str>) -> AssetError {
    let what = r.kind.word();
    let known = if names.is_empty() {
        format!("no {what} is registered yet")
    } else {
        format!("registered {what}s: {}", names.join(", "))
    };
    // The phrases the CLI's hints follow.
    let first = match r.kind {
        AssetKind::Model => "register the model first",
        AssetKind::Environment => "register the environment first",
    };
    AssetError::Invalid(format!("{what} {} is not registered ({known}): {first}", r.short()))
}

fn no_version<R: Record>(r: &AssetRef, versions: &[R]) -> AssetError {
    let list: Vec<&str> = versions.iter().map(|x| x.meta().version.as_str()).collect();
    AssetError::Invalid(format!(
        "{} {} has no version {}: its versions are {}",
        r.kind.word(),
        r.name,
        r.version.as_deref().unwrap_or("latest"),
        list.join(", ")
    ))
}

fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Reads every registration of one kind; a file that does not validate is skipped (logged).
fn read_all<R: Record>(root: &Path) -> BTreeMap<String, Vec<R>> {
    let mut all: BTreeMap<String, Vec<R>> = BTreeMap::new();
    let Ok(names) = fs::read_dir(root.join(folder_of(R::KIND))) else {
        return all;
    };
    for dir in names.filter_map(Result::ok) {
        let name = dir.file_name().to_string_lossy().into_owned();
        let Ok(files) = fs::read_dir(dir.path()) else { continue };
        for file in files.filter_map(Result::ok) {
            let path = file.path();
            let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
            if file_name.starts_with('.') && file_name.ends_with(".json.tmp") {
                let _ = fs::remove_file(&path); // a write cut short
                continue;
            }
            let Some(version) = file_name.strip_suffix(".json").filter(|v| !v.starts_with('.')) else {
                continue;
            };
            match read_record::<R>(root, &path, &name, version) {
                Ok(r) => all.entry(name.clone()).or_default().push(r),
                Err(why) => {
                    tracing::warn!(file = %path.display(), "skipping a registration that does not validate: {why}");
                }
            }
        }
    }
    for versions in all.values_mut() {
        versions.sort_by_key(|r| r.meta().seq);
    }
    all
}

fn read_record<R: Record>(root: &Path, path: &Path, name: &str, version: &str) -> Result<R, String> {
    // A conda file of up to 1 MiB is kept as JSON text, where an escaped byte takes up to 6.
    let text = crate::sys::files::read_text_bounded(
        path,
        8 * crate::spec::limits::MAX_DOCUMENT_BYTES as u64,
        crate::sys::files::READ_DEADLINE,
    )
    .map_err(|e| e.to_string())?;
    let record: R = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let meta = record.meta();
    if meta.name != name || meta.version != version {
        return Err(format!("it names {}:{}, its place {name}:{version}", meta.name, meta.version));
    }
    validate_asset_name(R::KIND, name).map_err(|e| e.message)?;
    validate_asset_version(R::KIND, version).map_err(|e| e.message)?;
    if meta.seq > MAX_AUTO_VERSION || meta.created_ms > LATEST_TIME_MS {
        return Err("its seq or created_ms is out of range".into());
    }
    for blob in record.blobs() {
        let hex_ok = blob.digest.len() == 64 && blob.digest.bytes().all(|b| b.is_ascii_hexdigit());
        let entry_ok = upload::check_relative(&blob.entry).is_ok_and(|p| p.len() == 1);
        if !hex_ok || !entry_ok {
            return Err("its blob is not a digest and one name".into());
        }
        // The blob and its entry must be the store's own: a link planted there could lead
        // anywhere.
        let folder = root.join("blobs/sha256").join(&blob.digest);
        let plain = |p: &Path| fs::symlink_metadata(p).is_ok_and(|m| !m.file_type().is_symlink());
        if !plain(&folder) || !plain(&folder.join(&blob.entry)) {
            return Err(format!("its files (blobs/sha256/{}) are missing or a link", blob.digest));
        }
    }
    Ok(record)
}

/// The content digest of a folder or file: every file's path (relative to the entry's parent,
/// so the entry's name counts), size and bytes, in path order, and every folder's path.
/// Symbolic links and special files are refused (uploads only make plain files).
fn digest_tree(source: &Path, entry: &str) -> Result<(String, u64, u64), AssetError> {
    let mut items = Vec::new();
    walk(source, entry, 0, &mut items)?;
    items.sort();
    let mut hasher = Sha256::new();
    let (mut size, mut count) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    for (rel, is_dir) in items {
        if is_dir {
            hasher.update(b"d\0");
            hasher.update(rel.as_bytes());
            hasher.update(b"\0");
            continue;
        }
        let path = source.parent().unwrap_or(source).join(&rel);
        let mut f = fs::File::open(&path).map_err(AssetError::io("read an upload"))?;
        let len = f.metadata().map_err(AssetError::io("read an upload"))?.len();
        hasher.update(b"f\0");
        hasher.update(rel.as_bytes());
        hasher.update(b"\0");
        hasher.update(len.to_le_bytes());
        loop {
            let n = f.read(&mut buf).map_err(AssetError::io("read an upload"))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        size += len;
        count += 1;
    }
    Ok((hex::encode(hasher.finalize()), size, count))
}

fn walk(path: &Path, rel: &str, depth: usize, out: &mut Vec<(String, bool)>) -> Result<(), AssetError> {
    let meta = fs::symlink_metadata(path).map_err(AssetError::io("read an upload"))?;
    if meta.is_file() {
        out.push((rel.to_string(), false));
        return Ok(());
    }
    if !meta.is_dir() || depth > upload::MAX_DEPTH {
        return Err(AssetError::Invalid(format!("{rel} is not a plain file or folder")));
    }
    out.push((rel.to_string(), true));
    for e in fs::read_dir(path).map_err(AssetError::io("read an upload"))? {
        let e = e.map_err(AssetError::io("read an upload"))?;
        let name = e.file_name().to_string_lossy().into_owned();
        walk(&e.path(), &format!("{rel}/{name}"), depth + 1, out)?;
    }
    Ok(())
}

/// Files of a blob become read-only (folders stay writable by the owner, so the store can be
/// removed with an ordinary `rm -r`).
fn make_read_only(path: &Path) -> Result<(), AssetError> {
    let meta = fs::symlink_metadata(path).map_err(AssetError::io("store a blob"))?;
    if meta.is_dir() {
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(AssetError::io("store a blob"))?;
        for e in fs::read_dir(path).map_err(AssetError::io("store a blob"))? {
            make_read_only(&e.map_err(AssetError::io("store a blob"))?.path())?;
        }
    } else {
        fs::set_permissions(path, fs::Permissions::from_mode(0o444)).map_err(AssetError::io("store a blob"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
