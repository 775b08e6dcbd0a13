//! Uploads: a client sends the files of a folder one by one (`PUT /v1/uploads/{id}/files/PATH`),
//! then registers the upload as a model or stores it as code. Each file's path is checked
//! before a byte is written, and an upload is bounded in bytes and files.
//!
//! Why one request per file rather than one `multipart/form-data` body: a browser's folder
//! upload, the CLI and the SDK all send plain files this way with no multipart library, the
//! bytes stream straight to disk, and `application/octet-stream` is not a type a cross-site form
//! can send, so the admin plane's rule against cross-site requests holds without exception.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::AssetError;

/// The most bytes one upload may hold.
pub(crate) const MAX_UPLOAD_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// The most files one upload may hold.
pub(crate) const MAX_UPLOAD_FILES: usize = 10_000;
/// The deepest a file may sit in an upload (folders, then the file).
pub(crate) const MAX_DEPTH: usize = 32;
/// Uploads open at once; the oldest idle ones must finish or be abandoned first.
pub(crate) const MAX_OPEN_UPLOADS: usize = 32;
/// An upload with no write for this long is removed (a registration refused for a bad name
/// leaves its upload behind: the open uploads are bounded, so they must not stay long).
pub(crate) const UPLOAD_IDLE: Duration = Duration::from_secs(600);

/// One upload in progress.
pub(super) struct Upload {
    /// `uploads/ID/files`: what is registered.
    pub(super) files_dir: PathBuf,
    /// Its limits (the constants above; smaller in tests).
    limits: Limits,
    bytes: AtomicU64,
    names: Mutex<BTreeSet<String>>,
    last_write: Mutex<Instant>,
}

/// How much one upload may hold.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub bytes: u64,
    pub files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { bytes: MAX_UPLOAD_BYTES, files: MAX_UPLOAD_FILES }
    }
}

/// The uploads in progress, by id.
#[derive(Default)]
pub(super) struct Uploads {
    open: Mutex<BTreeMap<String, Arc<Upload>>>,
    limits: Limits,
}

impl Uploads {
    fn open(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Upload>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts an upload under `root` (the store's `uploads/`), removing idle ones first.
    pub(super) fn begin(&self, root: &Path) -> Result<String, AssetError> {
        let mut open = self.open();
        sweep(&mut open);
        if open.len() >= MAX_OPEN_UPLOADS {
            return Err(AssetError::Conflict(format!(
                "{MAX_OPEN_UPLOADS} uploads are in progress: register or abandon one (DELETE /v1/uploads/ID) first"
            )));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let files_dir = root.join(&id).join("files");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&files_dir).map_err(AssetError::io("create"))?;
        let upload = Upload {
            files_dir,
            limits: self.limits,
            bytes: AtomicU64::new(0),
            names: Mutex::new(BTreeSet::new()),
            last_write: Mutex::new(Instant::now()),
        };
        open.insert(id.clone(), Arc::new(upload));
        Ok(id)
    }

    fn get(&self, id: &str) -> Result<Arc<Upload>, AssetError> {
        let mut open = self.open();
        sweep(&mut open);
        open.get(id).cloned().ok_or_else(|| unknown(id))
    }

    /// Opens `relative` in upload `id` for writing; the path is checked first.
    pub(super) fn file(&self, id: &str, relative: &str) -> Result<UploadFile, AssetError> {
        let parts = check_relative(relative)?;
        let upload = self.get(id)?;
        {
            let mut names = upload.names.lock().unwrap_or_else(|e| e.into_inner());
            if names.len() >= upload.limits.files {
                return Err(AssetError::TooLarge(format!("an upload holds at most {} files", upload.limits.files)));
            }
            if !names.insert(parts.join("/")) {
                return Err(AssetError::Conflict(format!("{relative:?} was already uploaded in this upload")));
            }
        }
        let path = parts.iter().fold(upload.files_dir.clone(), |p, c| p.join(c));
        let opened = path
            .parent()
            .map_or(Ok(()), |dir| fs::DirBuilder::new().recursive(true).mode(0o700).create(dir))
            .and_then(|()| fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path));
        match opened {
            Ok(file) => Ok(UploadFile { upload, name: parts.join("/"), path, file: Some(file), written: 0 }),
            Err(e) => {
                upload.names.lock().unwrap_or_else(|e| e.into_inner()).remove(&parts.join("/"));
                Err(AssetError::Invalid(format!(
                    "{relative:?} cannot be written in this upload ({e}): a name cannot be both a file and a folder"
                )))
            }
        }
    }

    /// Takes upload `id` out of the open ones, to register it.
    pub(super) fn take(&self, id: &str) -> Result<Arc<Upload>, AssetError> {
        let mut open = self.open();
        sweep(&mut open);
        let upload = open.get(id).cloned().ok_or_else(|| unknown(id))?;
        // A file still being written holds a reference: registering now would miss it.
        if Arc::strong_count(&upload) > 2 {
            return Err(AssetError::Conflict(format!(
                "upload {id} is still receiving a file: register it once every file is sent"
            )));
        }
        open.remove(id);
        Ok(upload)
    }

    /// Puts back an upload whose registration was refused, so it can be registered again
    /// (corrected) or abandoned.
    pub(super) fn put_back(&self, id: &str, upload: Arc<Upload>) {
        self.open().insert(id.to_string(), upload);
    }

    /// Abandons upload `id`, removing its files.
    pub(super) fn abandon(&self, id: &str, root: &Path) -> Result<(), AssetError> {
        self.open().remove(id).ok_or_else(|| unknown(id))?;
        fs::remove_dir_all(root.join(id)).map_err(AssetError::io("remove"))
    }
}

/// Removes the uploads idle for [`UPLOAD_IDLE`], files and all (one still receiving a file is
/// not idle: each write stamps it).
fn sweep(open: &mut BTreeMap<String, Arc<Upload>>) {
    let idle: Vec<String> = open
        .iter()
        .filter(|(_, u)| u.last_write.lock().unwrap_or_else(|e| e.into_inner()).elapsed() > UPLOAD_IDLE)
        .map(|(id, _)| id.clone())
        .collect();
    for id in idle {
        if let Some(upload) = open.remove(&id) {
            let _ = fs::remove_dir_all(upload.files_dir.parent().unwrap_or(&upload.files_dir));
        }
    }
}

fn unknown(id: &str) -> AssetError {
    AssetError::NotFound(format!(
        "no upload {id:?} is in progress (uploads are removed once registered, abandoned, or idle for ten minutes): start one with POST /v1/uploads"
    ))
}

/// Checks a file's path in an upload: relative, normal components only, no control
/// characters, bounded. Returns the components.
pub(super) fn check_relative(relative: &str) -> Result<Vec<String>, AssetError> {
    let bad = |why: &str| {
        AssetError::Invalid(format!(
            "file path {relative:?} {why}: send the path relative to the uploaded folder's parent, e.g. model/weights.pkl"
        ))
    };
    if relative.is_empty() {
        return Err(bad("is empty"));
    }
    if relative.chars().any(char::is_control) || relative.contains('\\') {
        return Err(bad("holds a control character or a backslash"));
    }
    let mut parts = Vec::new();
    for c in Path::new(relative).components() {
        match c {
            Component::Normal(part) => {
                let part = part.to_str().ok_or_else(|| bad("is not UTF-8"))?;
                if part.len() > 255 {
                    return Err(bad("has a name over 255 bytes"));
                }
                parts.push(part.to_string());
            }
            Component::CurDir => return Err(bad("holds '.'")),
            Component::ParentDir => return Err(bad("holds '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("is absolute")),
        }
    }
    if relative.split('/').any(|p| p.is_empty() || p == ".") {
        return Err(bad("has an empty or '.' component"));
    }
    if parts.len() > MAX_DEPTH {
        return Err(bad(&format!("is more than {MAX_DEPTH} levels deep")));
    }
    Ok(parts)
}

/// A file of an upload being written. Dropped before [`UploadFile::finish`], it is removed,
/// so the same path can be sent again.
pub(crate) struct UploadFile {
    upload: Arc<Upload>,
    name: String,
    path: PathBuf,
    file: Option<fs::File>,
    written: u64,
}

impl UploadFile {
    /// Appends `chunk`, within the upload's byte limit.
    pub(crate) fn write(&mut self, chunk: &[u8]) -> Result<(), AssetError> {
        let n = chunk.len() as u64;
        let before = self.upload.bytes.fetch_add(n, Ordering::Relaxed);
        self.written += n;
        let max = self.upload.limits.bytes;
        if before + n > max {
            return Err(AssetError::TooLarge(format!("an upload holds at most {max} bytes; this file would pass it")));
        }
        let file = self.file.as_mut().expect("open until finished or dropped");
        file.write_all(chunk).map_err(AssetError::io("write"))?;
        *self.upload.last_write.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    /// Makes the file durable; returns its path in the upload and its size.
    pub(crate) fn finish(mut self) -> Result<(String, u64), AssetError> {
        let file = self.file.take().expect("open until finished");
        file.sync_all().map_err(AssetError::io("write"))?;
        Ok((std::mem::take(&mut self.name), self.written))
    }
}

impl Drop for UploadFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.path);
            self.upload.bytes.fetch_sub(self.written, Ordering::Relaxed);
            self.upload.names.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_checked_before_anything_is_written() {
        assert_eq!(check_relative("model/a.pkl").unwrap(), ["model", "a.pkl"]);
        for bad in ["", "/etc/passwd", "../x", "model/../../x", "a//b", "./a", "a/./b", "a\u{0}b", "a\nb", "a\\b"] {
            assert!(check_relative(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_relative("a/".repeat(MAX_DEPTH + 1).trim_end_matches('/')).is_err());
        assert!(check_relative(&"x".repeat(256)).is_err());
    }

    #[test]
    fn a_file_sent_twice_is_refused_and_a_dropped_one_can_be_sent_again() {
        let d = tempfile::tempdir().unwrap();
        let uploads = Uploads::default();
        let id = uploads.begin(d.path()).unwrap();
        let mut f = uploads.file(&id, "m/a").unwrap();
        f.write(b"abc").unwrap();
        assert_eq!(f.finish().unwrap(), ("m/a".to_string(), 3));
        assert!(matches!(uploads.file(&id, "m/a"), Err(AssetError::Conflict(_))));
        let mut g = uploads.file(&id, "m/b").unwrap();
        g.write(b"x").unwrap();
        drop(g);
        assert!(!d.path().join(&id).join("files/m/b").exists(), "a file not finished is removed");
        uploads.file(&id, "m/b").unwrap().finish().unwrap();
        // A name cannot be a file and a folder.
        assert!(matches!(uploads.file(&id, "m/a/c"), Err(AssetError::Invalid(_))));
        assert!(matches!(uploads.file("nope", "m/c"), Err(AssetError::NotFound(_))));
        uploads.abandon(&id, d.path()).unwrap();
        assert!(!d.path().join(&id).exists());
    }

    #[test]
    fn an_upload_is_bounded_in_bytes_and_files() {
        let d = tempfile::tempdir().unwrap();
        let uploads = Uploads { limits: Limits { bytes: 10, files: 2 }, ..Uploads::default() };
        let id = uploads.begin(d.path()).unwrap();
        let mut f = uploads.file(&id, "m/a").unwrap();
        f.write(b"123456").unwrap();
        f.finish().unwrap();
        let mut g = uploads.file(&id, "m/b").unwrap();
        assert!(matches!(g.write(b"12345"), Err(AssetError::TooLarge(_))), "16 bytes > 10");
        drop(g);
        // What the refused file counted is given back, and its name can be sent again.
        let mut g = uploads.file(&id, "m/b").unwrap();
        g.write(b"1234").unwrap();
        g.finish().unwrap();
        assert!(matches!(uploads.file(&id, "m/c"), Err(AssetError::TooLarge(_))), "a third file");
    }
}
