//! `--secrets-dir`: the endpoint's keys and token signing secret (and, optionally, the admin
//! token) come from files, one secret per file, the layout of a mounted Kubernetes Secret. Every
//! replica given the same Secret accepts the same keys and verifies the tokens the others sign.
//!
//! The folder is read and validated here, at the edge of the control plane: a folder that is
//! incomplete or holds a bad secret stops the start; a later bad edit is refused, logged and
//! shown in `show` (`secrets_dir.last_error`) while the secrets in use stay. The folder is
//! watched with the `--config-dir` watcher ([`FolderWatch`]), so the kubelet's `..data` swap of
//! an updated Secret rotates the keys with no restart. A secret that leaves the folder stays
//! accepted for `--key-grace-secs` (see [`Credentials::rotate_to`]); a new one is accepted as
//! soon as it is read.
//!
//! Several endpoints: the unprefixed files are every endpoint's keys by default; an endpoint
//! gets keys of its own from files prefixed with its name and a dot (`ep-a.primary-key`,
//! `ep-a.secondary-key`, `ep-a.token-signing-key`, optionally `ep-a.token-verify-key`). A
//! flat layout, because a Secret volume is flat: one Secret holds the keys of every endpoint,
//! and endpoint names hold no dot, so a prefix cannot be mistaken.
//!
//! [`Credentials::rotate_to`]: crate::endpoint::Credentials::rotate_to

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::watch::FolderWatch;
use super::Workspace;
use crate::endpoint::auth::SharedSecrets;

/// The endpoint's primary key (`auth_mode: key`).
pub(crate) const PRIMARY_KEY: &str = "primary-key";
/// The endpoint's secondary key.
pub(crate) const SECONDARY_KEY: &str = "secondary-key";
/// Signs (and verifies) `aml_token` tokens.
pub(crate) const TOKEN_SIGNING_KEY: &str = "token-signing-key";
/// Optional: verifies tokens, never signs (the middle step of a signing-key rotation).
pub(crate) const TOKEN_VERIFY_KEY: &str = "token-verify-key";
/// Optional: the admin API's bearer token, in place of `--admin-token`.
pub(crate) const ADMIN_TOKEN: &str = "admin-token";

/// Every file name the folder may hold (dot files, such as a Secret volume's `..data`, aside).
const KNOWN: &[&str] = &[PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY, TOKEN_VERIFY_KEY, ADMIN_TOKEN];
/// The files an endpoint may have of its own, as `NAME.FILE`.
const PER_ENDPOINT: &[&str] = &[PRIMARY_KEY, SECONDARY_KEY, TOKEN_SIGNING_KEY, TOKEN_VERIFY_KEY];
/// Shortest secret accepted: 32 characters (`openssl rand -hex 16` gives 32, Azure's keys have 32+).
pub(crate) const MIN_SECRET_CHARS: usize = 32;
/// Longest secret accepted (it travels in an `Authorization` header).
pub(crate) const MAX_SECRET_CHARS: usize = 4096;

/// Why a secrets folder, or one of its files, was refused (at start: the server does not
/// start; later: the secrets in use stay, and `show` says why). Each message names the file
/// and what is expected; none holds a secret.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SecretsError {
    #[error("--secrets-dir {0} is not a folder")]
    NotAFolder(String),
    #[error("cannot list --secrets-dir {dir}: {source}")]
    Unlistable { dir: String, source: std::io::Error },
    #[error("--secrets-dir {dir} holds an unexpected file {name:?}: the names are {PRIMARY_KEY}, {SECONDARY_KEY}, {TOKEN_SIGNING_KEY} (required), {TOKEN_VERIFY_KEY}, {ADMIN_TOKEN} (optional), and an endpoint's own ENDPOINT.{PRIMARY_KEY}, ENDPOINT.{SECONDARY_KEY}, ENDPOINT.{TOKEN_SIGNING_KEY} (with ENDPOINT.{TOKEN_VERIFY_KEY} optional)")]
    Unexpected { dir: String, name: String },
    #[error("--secrets-dir {dir} has no {name} file: it needs {PRIMARY_KEY}, {SECONDARY_KEY} and {TOKEN_SIGNING_KEY}, one secret per file")]
    Missing { dir: String, name: String },
    #[error("{0}")]
    Unreadable(crate::sys::files::ReadError),
    #[error("{0} is empty: write a secret of at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -hex 32`)")]
    Empty(String),
    #[error("{0} must hold visible ASCII characters only, no spaces or line breaks inside (it is sent in an Authorization header)")]
    NotVisibleAscii(String),
    #[error("{path} holds {len} characters: a secret needs at least {MIN_SECRET_CHARS} (e.g. `openssl rand -hex 32`)")]
    TooShort { path: String, len: usize },
    #[error("{0} is longer than {MAX_SECRET_CHARS} characters")]
    TooLong(String),
    #[error("{dir}/{prefix}{PRIMARY_KEY} and {prefix}{SECONDARY_KEY} hold the same key: the two keys exist so that one can change while clients use the other")]
    SameKeys { dir: String, prefix: String },
    #[error(
        "{0}/{ADMIN_TOKEN} is gone: the admin token came from it at start; put it back (or restart with --admin-token)"
    )]
    AdminTokenGone(String),
    #[error("{0}/{ADMIN_TOKEN} appeared after start, but the admin token comes from --admin-token (SWITCHYARD_ADMIN_TOKEN): restart to take it from the file, or remove it")]
    AdminTokenAppeared(String),
    #[error("the admin token is given twice: by --admin-token (or SWITCHYARD_ADMIN_TOKEN) and by {0}/{ADMIN_TOKEN}; keep one")]
    AdminTokenTwice(String),
    #[error(transparent)]
    Watch(#[from] super::watch::WatchError),
    #[error("the secrets read failed: {0}")]
    ReadTask(String),
}

/// What the folder holds, validated.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SecretFiles {
    /// The unprefixed files: the keys of every endpoint without files of its own.
    pub shared: SharedSecrets,
    /// The keys of endpoints with files of their own, by endpoint name.
    pub own: std::collections::BTreeMap<String, SharedSecrets>,
    pub admin_token: Option<String>,
}

impl SecretFiles {
    /// The secrets of endpoint `name`: its own, or the folder's shared ones.
    pub(crate) fn of(&self, name: &str) -> &SharedSecrets {
        // Endpoint names are unique regardless of case, and so is the prefix that names one.
        let own =
            self.own.get(name).or_else(|| self.own.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, s)| s));
        own.unwrap_or(&self.shared)
    }
}

impl std::fmt::Debug for SecretFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a secret in a message.
        f.debug_struct("SecretFiles").field("fingerprint", &self.shared.fingerprint()).finish_non_exhaustive()
    }
}

/// Reads and validates the folder. `admin_from_file` says whether the admin token comes from
/// it (decided at start: an `admin-token` file that appears or disappears later is refused).
pub(crate) fn read_folder(dir: &Path, admin_from_file: Option<bool>) -> Result<SecretFiles, SecretsError> {
    let shown = dir.display().to_string();
    let unlistable = |source| SecretsError::Unlistable { dir: shown.clone(), source };
    let mut prefixes = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).map_err(unlistable)? {
        let name = entry.map_err(unlistable)?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || KNOWN.contains(&name.as_ref()) {
            continue;
        }
        match name.split_once('.') {
            Some((endpoint, file))
                if PER_ENDPOINT.contains(&file) && crate::spec::names::validate_name("endpoint", endpoint).is_ok() =>
            {
                prefixes.insert(endpoint.to_string());
            }
            _ => return Err(SecretsError::Unexpected { dir: shown, name: name.into_owned() }),
        }
    }
    let shared = read_set(dir, "")?;
    let mut own = std::collections::BTreeMap::new();
    for endpoint in prefixes {
        let secrets = read_set(dir, &format!("{endpoint}."))?;
        own.insert(endpoint, secrets);
    }
    let admin_token = read_secret(dir, ADMIN_TOKEN)?;
    match (admin_from_file, &admin_token) {
        (Some(true), None) => return Err(SecretsError::AdminTokenGone(shown)),
        (Some(false), Some(_)) => return Err(SecretsError::AdminTokenAppeared(shown)),
        _ => {}
    }
    Ok(SecretFiles { shared, own, admin_token })
}

/// One set of keys: the files named `{prefix}primary-key` and so on (the shared set with no
/// prefix, an endpoint's own with `NAME.`).
fn read_set(dir: &Path, prefix: &str) -> Result<SharedSecrets, SecretsError> {
    let shown = dir.display().to_string();
    let read = |name: &str| read_secret(dir, &format!("{prefix}{name}"));
    let required = |name: &'static str| {
        read(name)?.ok_or_else(|| SecretsError::Missing { dir: shown.clone(), name: format!("{prefix}{name}") })
    };
    let primary_key = required(PRIMARY_KEY)?;
    let secondary_key = required(SECONDARY_KEY)?;
    let token_signing_key = required(TOKEN_SIGNING_KEY)?;
    let token_verify_key = read(TOKEN_VERIFY_KEY)?;
    if primary_key == secondary_key {
        return Err(SecretsError::SameKeys { dir: shown, prefix: prefix.to_string() });
    }
    Ok(SharedSecrets { primary_key, secondary_key, token_signing_key, token_verify_key })
}

/// One secret file: `None` when absent; its text without surrounding whitespace (a file
/// written with `echo` ends with a newline) otherwise, checked.
fn read_secret(dir: &Path, name: &str) -> Result<Option<String>, SecretsError> {
    let path = dir.join(name);
    let shown = || path.display().to_string();
    // Bounded in size (a secret larger than any key is not read) and in time, and only a
    // regular file: a FIFO here wedged the watcher and the start for good.
    let limit = MAX_SECRET_CHARS as u64 + 64;
    let bytes = match crate::sys::files::read_bounded(&path, limit, crate::sys::files::READ_DEADLINE) {
        Ok(bytes) => bytes,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(SecretsError::Unreadable(e)),
    };
    let text = bytes.trim_ascii();
    if text.is_empty() {
        return Err(SecretsError::Empty(shown()));
    }
    if !text.iter().all(|b| b.is_ascii_graphic()) {
        return Err(SecretsError::NotVisibleAscii(shown()));
    }
    if text.len() < MIN_SECRET_CHARS {
        return Err(SecretsError::TooShort { path: shown(), len: text.len() });
    }
    if text.len() > MAX_SECRET_CHARS {
        return Err(SecretsError::TooLong(shown()));
    }
    Ok(Some(String::from_utf8_lossy(text).into_owned()))
}

/// Reads `dir` (refusing to start on a bad folder), makes its secrets the endpoint's, and
/// watches it. `admin_token_given` says whether `--admin-token` was given: an `admin-token`
/// file besides it is refused (one admin token, from one place). Returns the file's admin token.
pub(crate) fn start(
    control: &Arc<Workspace>,
    dir: PathBuf,
    admin_token_given: bool,
) -> Result<Option<String>, SecretsError> {
    if !dir.is_dir() {
        return Err(SecretsError::NotAFolder(dir.display().to_string()));
    }
    // Watching before the first read: an edit in between is not missed.
    let mut changes = FolderWatch::new(&dir, "--secrets-dir")?;
    let files = read_folder(&dir, None)?;
    if admin_token_given && files.admin_token.is_some() {
        return Err(SecretsError::AdminTokenTwice(dir.display().to_string()));
    }
    let admin_from_file = files.admin_token.is_some();
    let admin_token = files.admin_token.clone();
    control.set_secrets_source(dir.clone(), files.clone());
    let watched = Arc::clone(control);
    control.runtime.clone().spawn(async move {
        let control = watched;
        let mut current = files;
        while changes.next().await {
            // Reading files may wait (a slow disk): off the async threads.
            let read_dir = dir.clone();
            let read = tokio::task::spawn_blocking(move || read_folder(&read_dir, Some(admin_from_file))).await;
            let read = read.unwrap_or_else(|e| Err(SecretsError::ReadTask(e.to_string())));
            match read {
                Ok(next) if next == current => control.set_secrets_error(None),
                Ok(next) => {
                    tracing::info!(dir = %dir.display(), fingerprint = %next.shared.fingerprint(), "secrets rotated");
                    control.apply_secrets(next.clone());
                    current = next;
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "secrets refused; the secrets in use are kept");
                    control.set_secrets_error(Some(e.to_string()));
                }
            }
        }
    });
    Ok(admin_token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "0123456789abcdef0123456789abcdef";
    const K2: &str = "fedcba9876543210fedcba9876543210";
    const K3: &str = "00112233445566778899aabbccddeeff";

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn a_complete_folder_is_read_trimmed() {
        let d = folder(&[(PRIMARY_KEY, &format!("{K1}\n")), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3)]);
        std::os::unix::fs::symlink("nowhere", d.path().join("..data")).unwrap();
        let f = read_folder(d.path(), None).unwrap();
        assert_eq!(f.shared.primary_key, K1);
        assert_eq!(f.shared.token_verify_key, None);
        assert_eq!(f.admin_token, None);
    }

    #[test]
    fn bad_folders_are_refused_with_the_reason() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3)], "has no primary-key file"),
            (&[(PRIMARY_KEY, "\n"), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3)], "is empty"),
            (&[(PRIMARY_KEY, "short"), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3)], "holds 5 characters"),
            (&[(PRIMARY_KEY, K1), (SECONDARY_KEY, K1), (TOKEN_SIGNING_KEY, K3)], "hold the same key"),
            (
                &[(PRIMARY_KEY, "0123456789abcdef 0123456789abcdef"), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3)],
                "visible ASCII",
            ),
            (
                &[(PRIMARY_KEY, K1), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3), ("primary_key", K1)],
                "unexpected file",
            ),
        ];
        for (files, want) in cases {
            let d = folder(files);
            let err = read_folder(d.path(), None).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(want), "{files:?}: {err}");
        }
    }

    /// An endpoint's own files (`NAME.primary-key`, ...) give it keys of its own; the others
    /// keep the shared ones. An incomplete set, or a prefix that is not an endpoint name, is
    /// refused naming the file.
    #[test]
    fn an_endpoints_own_files_give_it_its_own_keys() {
        const K4: &str = "44444444444444444444444444444444";
        const K5: &str = "55555555555555555555555555555555";
        let shared = [(PRIMARY_KEY, K1), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3)];
        let mut files = shared.to_vec();
        files.extend([("ep-a.primary-key", K4), ("ep-a.secondary-key", K5), ("ep-a.token-signing-key", K3)]);
        let f = read_folder(folder(&files).path(), None).unwrap();
        assert_eq!(f.of("ep-a").primary_key, K4);
        assert_eq!(f.of("ep-b").primary_key, K1, "no files of its own: the shared keys");
        assert_ne!(f.of("ep-a").fingerprint(), f.of("ep-b").fingerprint());
        assert_eq!(f.of("EP-A").primary_key, K4, "endpoint names are unique regardless of case, and so is the prefix");

        let mut incomplete = shared.to_vec();
        incomplete.push(("ep-a.primary-key", K4));
        let e = read_folder(folder(&incomplete).path(), None).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("no ep-a.secondary-key file"), "{e}");
        for bad in ["e.primary-key", "ep-a.admin-token", "ep-a.primary_key"] {
            let mut odd = shared.to_vec();
            odd.push((bad, K4));
            let e = read_folder(folder(&odd).path(), None).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("unexpected file") && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn the_admin_token_file_cannot_come_or_go_after_start() {
        let d = folder(&[(PRIMARY_KEY, K1), (SECONDARY_KEY, K2), (TOKEN_SIGNING_KEY, K3), (ADMIN_TOKEN, K1)]);
        assert!(read_folder(d.path(), Some(true)).is_ok());
        assert!(matches!(read_folder(d.path(), Some(false)), Err(SecretsError::AdminTokenAppeared(_))));
        std::fs::remove_file(d.path().join(ADMIN_TOKEN)).unwrap();
        let gone = read_folder(d.path(), Some(true)).unwrap_err();
        assert!(matches!(gone, SecretsError::AdminTokenGone(_)) && gone.to_string().contains("is gone"), "{gone}");
    }
}
