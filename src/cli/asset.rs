//! `switchyard model ...` and `switchyard environment ...`: registered assets, as `az ml model`
//! and `az ml environment` (CONTRACT §11). A model's folder is uploaded file by file
//! (`POST /v1/uploads`, `PUT /v1/uploads/{id}/files/{path}`), then registered; an
//! environment's conda file is sent as text. Both work against a server on another machine.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde_json::{Map, Value};

use super::answers::{read, UploadAnswer};
use super::client::AdminClient;
use super::output::print;
use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum ModelVerb {
    /// Register a model from a local folder or file (a new version of the name).
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// The version (default: the next whole number).
        #[arg(short = 'v', long)]
        version: Option<String>,
        /// The folder or file to register.
        #[arg(short = 'p', long)]
        path: Option<PathBuf>,
        /// custom_model (default), mlflow_model or triton_model.
        #[arg(short = 't', long = "type")]
        model_type: Option<String>,
        #[arg(short = 'd', long)]
        description: Option<String>,
        /// Tags as key=value pairs.
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        /// A model YAML in Azure's schema (name, version, path, type, description, tags).
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// The latest version of each model, or every version of --name.
    List {
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Archived versions too.
        #[arg(long)]
        include_archived: bool,
    },
    /// One version (the latest without --version).
    Show(ShowArgs),
    /// Archive a version (every version without --version); refused while a deployment uses it.
    Archive(NameVersion),
    /// Restore an archived version (every version without --version).
    Restore(NameVersion),
}

#[derive(Subcommand, Debug)]
pub enum EnvironmentVerb {
    /// Register an environment from a YAML (name, version, image, conda_file) or flags.
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'v', long)]
        version: Option<String>,
        /// The Docker image (recorded).
        #[arg(short = 'i', long)]
        image: Option<String>,
        /// A conda YAML with the packages score.py needs.
        #[arg(short = 'c', long)]
        conda_file: Option<PathBuf>,
        #[arg(short = 'd', long)]
        description: Option<String>,
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
        /// An environment YAML in Azure's schema.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// The latest version of each environment, or every version of --name.
    List {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(long)]
        include_archived: bool,
        /// The curated environments this server maps instead.
        #[arg(long)]
        curated: bool,
    },
    /// One version (the latest without --version).
    Show(ShowArgs),
    /// Archive a version (every version without --version); refused while a deployment uses it.
    Archive(NameVersion),
    /// Restore an archived version (every version without --version).
    Restore(NameVersion),
}

/// `show`'s flags, the same for models and environments.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    #[arg(short = 'n', long)]
    name: String,
    #[arg(short = 'v', long, conflicts_with = "label")]
    version: Option<String>,
    /// `latest`.
    #[arg(short = 'l', long)]
    label: Option<String>,
}

/// `archive`'s and `restore`'s flags: a name, and a version (every version without one).
#[derive(clap::Args, Debug)]
pub struct NameVersion {
    #[arg(short = 'n', long)]
    name: String,
    #[arg(short = 'v', long)]
    version: Option<String>,
}

/// The most files `model create` walks (the server's limit per upload).
const MAX_FILES: usize = 10_000;
/// The deepest folder `model create` walks (the server's limit).
const MAX_DEPTH: usize = 32;

pub(super) fn run_model(verb: ModelVerb, global: &GlobalArgs) -> Result<(), String> {
    let admin = AdminClient::new(global);
    match verb {
        ModelVerb::Create { name, version, path, model_type, description, tags, file } => {
            let (mut doc, base) = yaml_of(file.as_deref(), "model")?;
            let path = path.or_else(|| doc.remove("path").and_then(|p| p.as_str().map(|p| base.join(p))));
            doc.remove("path");
            set(&mut doc, "name", name.map(Value::String));
            set(&mut doc, "version", version.map(Value::String));
            set(&mut doc, "type", model_type.map(Value::String));
            set(&mut doc, "description", description.map(Value::String));
            set(&mut doc, "tags", tag_map(&tags)?);
            if !doc.contains_key("name") {
                return Err("give the model a name: --name NAME or `name:` in the --file".into());
            }
            let path = path.ok_or("give the model's folder or file: --path PATH or `path:` in the --file")?;
            // What can be checked here is, before gigabytes are sent.
            if let Some(n) = doc.get("name").and_then(Value::as_str) {
                crate::spec::reference::validate_asset_name(crate::spec::AssetKind::Model, n).map_err(|e| e.message)?;
            }
            let id = upload(&admin, &path)?;
            doc.insert("upload".into(), Value::String(id.clone()));
            let registered = admin.call("POST", "/v1/models", Some(&Value::Object(doc))).and_then(|r| r.ok_json());
            if registered.is_err() {
                // A refused registration leaves its upload: nothing else would use it.
                let _ = admin.call("DELETE", &format!("/v1/uploads/{id}"), None);
            }
            print(&registered?, global)
        }
        ModelVerb::List { name, include_archived } => {
            let a = include_archived;
            let answer = match name {
                Some(n) => admin.call("GET", &format!("/v1/models/{n}/versions?archived={a}"), None)?,
                None => admin.call("GET", &format!("/v1/models?archived={a}"), None)?,
            };
            print(&answer.ok_json()?, global)
        }
        ModelVerb::Show(ShowArgs { name, version, label }) => {
            let answer = match shown_version(version, label)? {
                Some(v) => admin.call("GET", &format!("/v1/models/{name}/versions/{v}"), None)?,
                None => admin.call("GET", &format!("/v1/models/{name}"), None)?,
            };
            print(&answer.ok_json()?, global)
        }
        ModelVerb::Archive(NameVersion { name, version }) => {
            archive(&admin, "models", &name, version, "archive", global)
        }
        ModelVerb::Restore(NameVersion { name, version }) => {
            archive(&admin, "models", &name, version, "restore", global)
        }
    }
}

pub(super) fn run_environment(verb: EnvironmentVerb, global: &GlobalArgs) -> Result<(), String> {
    let admin = AdminClient::new(global);
    match verb {
        EnvironmentVerb::Create { name, version, image, conda_file, description, tags, file } => {
            let (mut doc, base) = yaml_of(file.as_deref(), "environment")?;
            if doc.contains_key("build") {
                return Err("`build:` (a Docker build context) cannot be built here: give `image:` and `conda_file:` with the packages score.py needs".into());
            }
            // `conda_file:` is a path relative to the YAML, or (Azure allows it) the conda
            // document itself, inline.
            let text = match (conda_file, doc.remove("conda_file")) {
                (Some(path), _) => Some(read_text(&path, "--conda-file")?),
                (None, Some(Value::String(p))) => Some(read_text(&base.join(p), "conda_file")?),
                (None, Some(inline @ Value::Object(_))) => {
                    Some(serde_norway::to_string(&inline).map_err(|e| format!("conda_file: {e}"))?)
                }
                (None, None | Some(Value::Null)) => None,
                (None, Some(other)) => {
                    return Err(format!("conda_file must be a path or a conda mapping, got {other}"));
                }
            };
            if let Some(text) = text {
                doc.insert("conda_file".into(), Value::String(text));
            }
            set(&mut doc, "name", name.map(Value::String));
            set(&mut doc, "version", version.map(Value::String));
            set(&mut doc, "image", image.map(Value::String));
            set(&mut doc, "description", description.map(Value::String));
            set(&mut doc, "tags", tag_map(&tags)?);
            if !doc.contains_key("name") {
                return Err("give the environment a name: --name NAME or `name:` in the --file".into());
            }
            print(&admin.call("POST", "/v1/environments", Some(&Value::Object(doc)))?.ok_json()?, global)
        }
        EnvironmentVerb::List { name, include_archived, curated } => {
            let a = include_archived;
            let answer = match (curated, name) {
                (true, _) => admin.call("GET", "/v1/environments/curated", None)?,
                (false, Some(n)) => admin.call("GET", &format!("/v1/environments/{n}/versions?archived={a}"), None)?,
                (false, None) => admin.call("GET", &format!("/v1/environments?archived={a}"), None)?,
            };
            print(&answer.ok_json()?, global)
        }
        EnvironmentVerb::Show(ShowArgs { name, version, label }) => {
            let answer = match shown_version(version, label)? {
                Some(v) => admin.call("GET", &format!("/v1/environments/{name}/versions/{v}"), None)?,
                None => admin.call("GET", &format!("/v1/environments/{name}"), None)?,
            };
            print(&answer.ok_json()?, global)
        }
        EnvironmentVerb::Archive(NameVersion { name, version }) => {
            archive(&admin, "environments", &name, version, "archive", global)
        }
        EnvironmentVerb::Restore(NameVersion { name, version }) => {
            archive(&admin, "environments", &name, version, "restore", global)
        }
    }
}

/// `--version V` or `--label latest` (`None`: the latest).
fn shown_version(version: Option<String>, label: Option<String>) -> Result<Option<String>, String> {
    match label.as_deref() {
        None | Some("latest") => Ok(version),
        Some(other) => Err(format!("the only label is `latest`, got {other:?}")),
    }
}

fn archive(
    admin: &AdminClient,
    kind: &str,
    name: &str,
    version: Option<String>,
    action: &str,
    global: &GlobalArgs,
) -> Result<(), String> {
    let answer = match (kind, version) {
        ("models", Some(v)) => admin.call("POST", &format!("/v1/models/{name}/versions/{v}/{action}"), None)?,
        ("models", None) => admin.call("POST", &format!("/v1/models/{name}/{action}"), None)?,
        (_, Some(v)) => admin.call("POST", &format!("/v1/environments/{name}/versions/{v}/{action}"), None)?,
        (_, None) => admin.call("POST", &format!("/v1/environments/{name}/{action}"), None)?,
    };
    print(&answer.ok_json()?, global)
}

/// The fields of an asset YAML (`$schema` dropped) and the folder its paths are relative to.
fn yaml_of(file: Option<&Path>, what: &str) -> Result<(Map<String, Value>, PathBuf), String> {
    let Some(file) = file else {
        return Ok((Map::new(), PathBuf::from(".")));
    };
    let text = read_text(file, "--file")?;
    let Value::Object(mut doc) =
        crate::spec::yaml_to_json(&text, &file.display().to_string()).map_err(|e| e.message)?
    else {
        return Err(format!("{} must be a {what} YAML mapping", file.display()));
    };
    doc.remove("$schema");
    let base = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    Ok((doc, base))
}

/// The user's own file, read whole (a YAML or conda file, small); not a FIFO or device, which
/// would wait for ever.
fn read_text(path: &Path, what: &str) -> Result<String, String> {
    let limit = crate::spec::limits::MAX_DOCUMENT_BYTES as u64;
    crate::sys::files::read_text_bounded(path, limit, crate::sys::files::READ_DEADLINE)
        .map_err(|e| format!("{what}: {e}"))
}

fn set(doc: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(v) = value {
        doc.insert(key.into(), v);
    }
}

fn tag_map(pairs: &[String]) -> Result<Option<Value>, String> {
    if pairs.is_empty() {
        return Ok(None);
    }
    let mut tags = Map::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| format!("--tags takes key=value pairs, got {pair:?}"))?;
        tags.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(Some(Value::Object(tags)))
}

/// Uploads a folder (or one file) under its own name; returns the upload's id.
fn upload(admin: &AdminClient, path: &Path) -> Result<String, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("--path {}: {e}", path.display()))?;
    // Canonical, so `..` or `.` name the folder they stand for.
    let base = std::fs::canonicalize(path).map_err(|e| format!("--path {}: {e}", path.display()))?;
    let entry = base
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| format!("--path {} has no usable name", path.display()))?
        .to_string();
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(&base, &entry, 0, &mut files)?;
    } else if meta.is_file() {
        files.push((base.clone(), entry));
    } else {
        return Err(format!("--path {} is neither a folder nor a file", path.display()));
    }
    let started: UploadAnswer = read(&admin.call("POST", "/v1/uploads", None)?.ok_json()?, "upload")?;
    let id = started.id;
    for (file, rel) in &files {
        let encoded: Vec<String> = rel.split('/').map(encode_segment).collect();
        let opened = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let sent = admin.send_file("PUT", &format!("/v1/uploads/{id}/files/{}", encoded.join("/")), opened);
        if let Err(e) = sent.and_then(|r| r.ok_json()) {
            let _ = admin.call("DELETE", &format!("/v1/uploads/{id}"), None);
            return Err(format!("uploading {}: {e}", file.display()));
        }
    }
    Ok(id)
}

/// Every file under `dir` with its path relative to the folder's parent (`model/a/b.pkl`).
/// Links to files are followed (their content is sent); links to folders are refused, as a
/// loop would never end.
fn walk(dir: &Path, rel: &str, depth: usize, out: &mut Vec<(PathBuf, String)>) -> Result<(), String> {
    if depth >= MAX_DEPTH {
        return Err(format!("{} is more than {MAX_DEPTH} names deep", dir.display()));
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let name = e.file_name().to_str().ok_or_else(|| format!("{}: a name is not UTF-8", dir.display()))?.to_string();
        let path = e.path();
        let link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
        let meta = std::fs::metadata(&path).map_err(|err| format!("{}: {err}", path.display()))?;
        let child = format!("{rel}/{name}");
        if meta.is_dir() {
            if link {
                return Err(format!("{} is a link to a folder: copy the folder in instead", path.display()));
            }
            walk(&path, &child, depth + 1, out)?;
        } else if meta.is_file() {
            // The server's limit counts every name of the path, the folder's own included.
            if child.split('/').count() > MAX_DEPTH {
                return Err(format!("{} is more than {MAX_DEPTH} names deep", path.display()));
            }
            out.push((path, child));
            if out.len() > MAX_FILES {
                return Err(format!("{} holds more than {MAX_FILES} files", dir.display()));
            }
        } else {
            return Err(format!("{} is not a plain file or folder", path.display()));
        }
    }
    Ok(())
}

/// A path segment as a URL carries it (RFC 3986 unreserved characters kept).
fn encode_segment(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, SEGMENT).to_string()
}

/// Everything but `A-Z a-z 0-9 - . _ ~` is encoded.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_is_sent_under_its_own_name_and_names_are_encoded() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("model");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::write(model.join("a b#.pkl"), "x").unwrap();
        std::fs::write(model.join("sub/c"), "y").unwrap();
        let mut files = Vec::new();
        walk(&model, "model", 0, &mut files).unwrap();
        let rels: Vec<&str> = files.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(rels, ["model/a b#.pkl", "model/sub/c"]);
        assert_eq!(encode_segment("a b#.pkl"), "a%20b%23.pkl");
        std::os::unix::fs::symlink(&model, model.join("loop")).unwrap();
        assert!(walk(&model, "model", 0, &mut Vec::new()).unwrap_err().contains("link to a folder"));
        assert_eq!(tag_map(&["a=1".into()]).unwrap(), Some(serde_json::json!({"a": "1"})));
        // 32 names in all (the folder's own included) is the server's limit.
        let deep = d.path().join("deep");
        let mut at = deep.clone();
        for i in 0..31 {
            at = at.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&at).unwrap();
        std::fs::write(at.join("f"), "x").unwrap();
        assert!(walk(&deep, "deep", 0, &mut Vec::new()).unwrap_err().contains("32 names deep"));
        std::fs::remove_file(at.join("f")).unwrap();
        std::fs::write(at.parent().unwrap().join("f"), "x").unwrap();
        assert_eq!(walk(&deep, "deep", 0, &mut Vec::new()).map(|()| 1).unwrap(), 1);
        assert!(tag_map(&["a".into()]).is_err());
    }
}
