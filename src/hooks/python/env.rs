//! Python environments: which interpreter a deployment's workers run, building a venv from a
//! conda file when the deployment has one.
//!
//! An environment belongs to the deployment, not to an instance: [`EnvSlot`] resolves it once
//! (the first instance's load builds it, the others wait for that result), before any worker
//! starts, on a loader thread (never on a request's path). Built venvs are cached under
//! `--env-cache-dir` by the hash of what is built (interpreter version and requirement lines),
//! so a second create with the same conda file starts in seconds, and two deployments whose
//! files ask for the same packages share one venv. A build holds an `flock` on the cache entry, so two servers sharing a cache never build
//! the same venv at once; an entry is complete only once its `.complete` marker is written, so
//! a build killed half way is rebuilt, never used.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::spec::python::{EnvironmentBuild, PythonEnvironment};
use crate::telemetry::LogRing;

/// Bumped when the way venvs are built changes, so old cache entries are not reused.
const BUILDER_VERSION: &str = "1";

/// Server-wide settings of the Python hook (`serve --python`, `--env-cache-dir`).
#[derive(Debug, Clone, Default)]
pub(crate) struct PythonOptions {
    /// `--python` / `SWITCHYARD_PYTHON`: every Python deployment runs this interpreter, and no
    /// environment is built (for machines without network, and for tests).
    pub python: Option<PathBuf>,
    /// `--env-cache-dir`: where built venvs are kept (default: the user's cache folder).
    pub env_cache_dir: Option<PathBuf>,
}

static OPTIONS: OnceLock<PythonOptions> = OnceLock::new();

/// Sets the server-wide options (once, at `serve`; later calls are ignored).
pub(crate) fn configure(options: PythonOptions) {
    let _ = OPTIONS.set(options);
}

/// The interpreter `--python`/`SWITCHYARD_PYTHON` names for every deployment, if any.
pub(crate) fn forced_python() -> Option<PathBuf> {
    options().python
}

fn options() -> PythonOptions {
    OPTIONS.get().cloned().unwrap_or_else(|| PythonOptions {
        python: std::env::var_os("SWITCHYARD_PYTHON").filter(|p| !p.is_empty()).map(PathBuf::from),
        env_cache_dir: None,
    })
}

/// The cache folder: `--env-cache-dir`, else `$XDG_CACHE_HOME/switchyard/envs`, else
/// `~/.cache/switchyard/envs`, else under the temp folder.
pub(crate) fn cache_dir() -> PathBuf {
    if let Some(dir) = options().env_cache_dir {
        return dir;
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("switchyard").join("envs")
}

/// Where a build's progress lines go: the deployment's log (`get-logs` while it is
/// `Creating`), or stderr for `switchyard env build`. One sink, so both show the same lines.
pub(crate) trait Progress: Send + Sync {
    /// One line of progress.
    fn line(&self, line: &str);
}

impl Progress for LogRing {
    fn line(&self, line: &str) {
        self.push(line);
    }
}

/// Progress lines on stderr, as they come.
pub(crate) struct Stderr;

impl Progress for Stderr {
    fn line(&self, line: &str) {
        eprintln!("{line}");
    }
}

/// Why a deployment's Python environment could not be had. Clone: a deployment's instances
/// share one outcome ([`EnvSlot`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A file or folder of the environment cache could not be made, written, locked or removed.
    #[error("cannot {action} {}: {reason}", path.display())]
    Cache { action: &'static str, path: PathBuf, reason: String },
    /// No interpreter of the version asked for, or the one given does not run.
    #[error("{0}")]
    Interpreter(String),
    /// A build command could not run or failed: its own error line (pip's `ERROR: ...`).
    #[error("{0}")]
    Command(String),
    /// A step of the build failed; `reason` is the tool's own error line.
    #[error("building the environment from {from} failed: {reason}")]
    Build { from: String, reason: String },
}

impl From<EnvError> for super::super::InitError {
    fn from(e: EnvError) -> Self {
        super::super::InitError(e.to_string())
    }
}

/// A cache operation's failure.
fn cache<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> EnvError + 'a {
    move |e| EnvError::Cache { action, path: path.to_path_buf(), reason: e.to_string() }
}

/// Builds (or finds in the cache) the venv of `build`, as a deployment's create does (same
/// cache key, folder and progress lines), with `base` as the interpreter to make it from
/// instead of the one `python=X.Y` picks; returns the venv's folder. `switchyard env build`
/// runs this at image build time, so that `serve` with the same cache starts without a build.
pub(crate) fn prebuild(
    build: &EnvironmentBuild,
    base: Option<&Path>,
    progress: Arc<dyn Progress>,
) -> Result<PathBuf, EnvError> {
    let python = build_env(build, base, &progress)?;
    // <venv>/bin/python → <venv>
    Ok(python.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or(python))
}

/// A deployment's environment, resolved once and shared by its instances.
#[derive(Clone, Default)]
pub struct EnvSlot(Arc<Mutex<Option<Result<PathBuf, EnvError>>>>);

impl std::fmt::Debug for EnvSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnvSlot")
    }
}

impl EnvSlot {
    /// The interpreter for `environment`, building its venv the first time. Every instance
    /// of the deployment calls this; the first one does the work while the others wait.
    pub fn interpreter(&self, environment: &PythonEnvironment, logs: &Arc<LogRing>) -> Result<PathBuf, EnvError> {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = slot.as_ref() {
            return done.clone();
        }
        let resolved = resolve(environment, logs);
        *slot = Some(resolved.clone());
        resolved
    }
}

fn resolve(environment: &PythonEnvironment, logs: &Arc<LogRing>) -> Result<PathBuf, EnvError> {
    if let Some(python) = options().python {
        logs.line(&format!("python: {} (--python/SWITCHYARD_PYTHON; no environment is built)", python.display()));
        return Ok(python);
    }
    match environment {
        PythonEnvironment::Default => Ok(PathBuf::from("python3")),
        PythonEnvironment::Interpreter(p) => {
            logs.line(&format!("python: {} (environment.python; no environment is built)", p.display()));
            Ok(p.clone())
        }
        PythonEnvironment::Build(build) => build_env(build, None, &(Arc::clone(logs) as Arc<dyn Progress>)),
    }
}

/// The cache key: the builder version, the interpreter version asked for and the requirement
/// lines, i.e. what is built, not the file's text: two conda files that differ only in layout,
/// comments, channels or a final newline (the sample's model-1 and model-2 files) share a venv.
fn key_of(build: &EnvironmentBuild) -> String {
    let mut h = Sha256::new();
    h.update(BUILDER_VERSION.as_bytes());
    h.update([0]);
    h.update(build.python_version.as_deref().unwrap_or("").as_bytes());
    for line in &build.requirements {
        h.update([0]);
        h.update(line.as_bytes());
    }
    hex::encode(&h.finalize()[..12])
}

/// Builds (or finds) the venv for `build` (from `base`, else the interpreter its `python=`
/// picks); returns its interpreter.
fn build_env(build: &EnvironmentBuild, base: Option<&Path>, logs: &Arc<dyn Progress>) -> Result<PathBuf, EnvError> {
    build_env_in(&cache_dir(), build, base, logs)
}

/// [`build_env`] with the cache at `cache`.
fn build_env_in(
    cache: &Path,
    build: &EnvironmentBuild,
    base: Option<&Path>,
    logs: &Arc<dyn Progress>,
) -> Result<PathBuf, EnvError> {
    let dir = cache.join(key_of(build));
    let python = dir.join("bin").join("python");
    if dir.join(".complete").is_file() {
        logs.line(&format!("environment: cache hit {} (built from {})", dir.display(), build.source));
        return Ok(python);
    }
    std::fs::create_dir_all(cache).map_err(self::cache("create the environment cache", cache))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(self::cache("create", &lock_path))?;
    logs.line(&format!("environment: waiting for the build lock {}", lock_path.display()));
    crate::sys::lock_exclusive(&lock).map_err(self::cache("lock", &lock_path))?;
    if dir.join(".complete").is_file() {
        logs.line(&format!("environment: cache hit {} (built meanwhile by another deployment)", dir.display()));
        return Ok(python);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(self::cache("remove the unfinished", &dir))?;
    }
    let started = Instant::now();
    let base = match base {
        Some(base) => {
            let found = version_of(base);
            if found.is_none() {
                return Err(EnvError::Interpreter(format!("the interpreter {} does not run", base.display())));
            }
            if let (Some(want), Some(found)) = (build.python_version.as_deref(), found.as_deref()) {
                if want != found {
                    logs.line(&format!(
                        "environment: warning: {} asks for python={want}; {} is Python {found}",
                        build.source,
                        base.display()
                    ));
                }
            }
            base.to_path_buf()
        }
        None => find_interpreter(build.python_version.as_deref())?,
    };
    logs.line(&format!(
        "environment: building {} from {} with {} ({} requirement(s))",
        dir.display(),
        build.source,
        base.display(),
        build.requirements.len()
    ));
    let outcome = make_venv(&base, &dir, build, logs);
    if let Err(e) = outcome {
        let _ = std::fs::remove_dir_all(&dir);
        // The requirements file sits next to the venv until a build succeeds (then it moves in).
        let _ = std::fs::remove_file(requirements_file(&dir));
        return Err(EnvError::Build { from: build.source.clone(), reason: e.to_string() });
    }
    let complete = dir.join(".complete");
    std::fs::write(&complete, format!("{:.1}\n", started.elapsed().as_secs_f64()))
        .map_err(self::cache("write", &complete))?;
    logs.line(&format!("environment: built in {:.1} s: {}", started.elapsed().as_secs_f64(), dir.display()));
    tracing::info!(env = %dir.display(), seconds = started.elapsed().as_secs_f64(), "python environment built");
    Ok(python)
}

fn make_venv(base: &Path, dir: &Path, build: &EnvironmentBuild, logs: &Arc<dyn Progress>) -> Result<(), EnvError> {
    let uv = which("uv");
    let reqs = requirements_file(dir);
    std::fs::write(&reqs, build.requirements.join("\n") + "\n")
        .map_err(|e| EnvError::Command(format!("cannot write {}: {e}", reqs.display())))?;
    let venv_python = dir.join("bin").join("python");
    if let Some(uv) = uv {
        logs.line(&format!("environment: using {}", uv.display()));
        run_logged(Command::new(&uv).arg("venv").arg("--python").arg(base).arg(dir), logs)?;
        if !build.requirements.is_empty() {
            run_logged(
                Command::new(&uv).args(["pip", "install", "--python"]).arg(&venv_python).arg("-r").arg(&reqs),
                logs,
            )?;
        }
    } else {
        logs.line("environment: uv is not installed: using python -m venv and pip (slower)");
        run_logged(Command::new(base).args(["-m", "venv"]).arg(dir), logs)?;
        if !build.requirements.is_empty() {
            run_logged(
                Command::new(&venv_python)
                    .args([
                        "-m",
                        "pip",
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "--progress-bar",
                        "off",
                    ])
                    .arg("-r")
                    .arg(&reqs),
                logs,
            )?;
        }
    }
    let _ = std::fs::rename(&reqs, dir.join("requirements.txt"));
    Ok(())
}

/// Where a build writes the requirement lines it installs: `<key>.requirements.txt`, next to the
/// venv's folder (moved into it once the build succeeds, removed when it fails).
fn requirements_file(dir: &Path) -> PathBuf {
    dir.with_extension("requirements.txt")
}

/// Runs a build step, copying its output into the deployment's log line by line. On failure,
/// the error is the tool's own error line (pip's `ERROR: ...`), else its last line.
fn run_logged(cmd: &mut Command, logs: &Arc<dyn Progress>) -> Result<(), EnvError> {
    let shown = format!("{cmd:?}");
    logs.line(&format!("environment: $ {shown}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("PIP_NO_INPUT", "1")
        .spawn()
        .map_err(|e| EnvError::Command(format!("cannot run {shown}: {e}")))?;
    let stderr = child.stderr.take();
    // Lines go to the log as they come: the build's progress is what `get-logs` shows
    // while the deployment is Creating.
    let err_logs = LogSink::default();
    let err_thread = stderr.map(|s| {
        let (sink, logs) = (err_logs.clone(), Arc::clone(logs));
        std::thread::spawn(move || copy_lines(s, &sink, logs.as_ref()))
    });
    let out_logs = LogSink::default();
    if let Some(out) = child.stdout.take() {
        copy_lines(out, &out_logs, logs.as_ref());
    }
    if let Some(t) = err_thread {
        let _ = t.join();
    }
    let status = child.wait().map_err(|e| EnvError::Command(format!("{shown}: {e}")))?;
    let mut all = out_logs.take();
    all.extend(err_logs.take());
    if status.success() {
        return Ok(());
    }
    let reason = all
        .iter()
        .rev()
        .find(|l| l.trim_start().starts_with("ERROR:") || l.trim_start().starts_with("error:"))
        .or_else(|| all.iter().rev().find(|l| !l.trim().is_empty()))
        .cloned()
        .unwrap_or_else(|| format!("{shown} exited with {status}"));
    Err(EnvError::Command(reason.trim().to_string()))
}

/// Lines gathered from one stream of a build step.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<String>>>);

impl LogSink {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn copy_lines(stream: impl Read, sink: &LogSink, logs: &dyn Progress) {
    for line in BufReader::new(stream).split(b'\n') {
        let Ok(line) = line else { break };
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !text.is_empty() {
            logs.line(&format!("environment: {text}"));
            sink.0.lock().unwrap_or_else(|e| e.into_inner()).push(text);
        }
    }
}

/// An executable on PATH.
pub(crate) fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// An interpreter for `python=X.Y`: `pythonX.Y` on PATH, then pyenv's and uv's installed
/// Pythons, then `python3` if it is that version. Each candidate is run once to check its
/// version (pyenv shims exist for versions that are not selected, and fail when run).
pub(crate) fn find_interpreter(version: Option<&str>) -> Result<PathBuf, EnvError> {
    let Some(version) = version else {
        return Ok(which("python3").unwrap_or_else(|| PathBuf::from("python3")));
    };
    if version.split('.').next().and_then(|major| major.parse::<u32>().ok()).is_some_and(|major| major < 3) {
        // The worker (as Azure's inference server) is Python 3 code: say so, whether or not
        // this machine has the old interpreter.
        let found = candidates(version).into_iter().find(|c| version_of(c).as_deref() == Some(version));
        let found = found.map(|p| format!(" (found at {})", p.display())).unwrap_or_default();
        return Err(EnvError::Interpreter(format!(
            "the environment asks for python={version}{found}, which is not supported: scoring scripts run on \
             Python 3 (as on Azure, whose inference server needs Python 3.8 or later): pin python=3.x"
        )));
    }
    for c in candidates(version) {
        if version_of(&c).as_deref() == Some(version) {
            return Ok(c);
        }
    }
    Err(EnvError::Interpreter(format!(
        "the environment asks for python={version}, and no working Python {version} was found \
         (looked on PATH, in pyenv's and uv's Pythons): install it (e.g. `uv python install {version}`), \
         or run an existing interpreter with `environment: {{python: /path/to/bin/python}}` or `serve --python`"
    )))
}

/// Where a Python `X.Y` may be, most specific first.
fn candidates(version: &str) -> Vec<PathBuf> {
    // An installed Python's folder has bin/python3, or (Python 2) only bin/python2.7.
    let in_bin = |d: PathBuf| [d.join("bin/python3"), d.join(format!("bin/python{version}"))];
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(which(&format!("python{version}")));
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let pyenv_root =
        std::env::var_os("PYENV_ROOT").map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".pyenv")));
    if let Some(root) = pyenv_root {
        candidates.extend(sorted_dirs(&root.join("versions"), version).into_iter().flat_map(in_bin));
    }
    if let Some(h) = &home {
        let uv_root = h.join(".local/share/uv/python");
        candidates.extend(sorted_dirs(&uv_root, &format!("cpython-{version}")).into_iter().flat_map(in_bin));
    }
    candidates.push(PathBuf::from(format!("/usr/bin/python{version}")));
    candidates.push(PathBuf::from(format!("/usr/local/bin/python{version}")));
    candidates.extend(which("python3"));
    candidates.retain(|c| c.is_file() || c.components().count() == 1);
    candidates
}

/// Folders under `root` whose names start with `prefix` followed by `.` or `-` or nothing,
/// newest name last reversed (the highest patch version first).
fn sorted_dirs(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '-']))
            })
        })
        .collect();
    found.sort();
    found.reverse();
    found
}

/// `X.Y` of an interpreter, or `None` when it does not run.
fn version_of(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_2_is_refused_as_unsupported_not_as_missing() {
        // This machine may have a Python 2.7 (pyenv's keeps it in bin/python2.7) or not:
        // either way the answer is that it is not supported.
        let e = find_interpreter(Some("2.7")).unwrap_err().to_string();
        assert!(e.contains("python=2.7") && e.contains("not supported") && e.contains("python=3.x"), "{e}");
        assert!(!e.contains("no working Python"), "{e}");
    }

    #[test]
    fn a_failed_build_leaves_no_requirements_file() {
        let cache = tempfile::tempdir().unwrap();
        // A requirement pip cannot satisfy without asking a registry: a local path that is not there.
        let missing = cache.path().join("no-such-package-dir");
        let text = format!("dependencies:\n  - pip:\n    - {}\n", missing.display());
        let build = crate::spec::python::parse_conda(&text, "conda.yaml").unwrap();
        let logs: Arc<dyn Progress> = Arc::new(LogRing::default());
        let python = which("python3").expect("python3 on PATH");
        let e = build_env_in(cache.path(), &build, Some(&python), &logs).unwrap_err().to_string();
        assert!(e.contains("failed"), "{e}");
        let left: Vec<_> = std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "only the lock file may stay");
    }

    #[test]
    fn a_missing_python_version_says_how_to_get_one() {
        let e = find_interpreter(Some("3.1")).unwrap_err().to_string();
        assert!(e.contains("python=3.1") && e.contains("environment: {python"), "{e}");
    }

    #[test]
    fn the_cache_key_follows_what_is_built() {
        let a = crate::spec::python::parse_conda("dependencies:\n  - numpy=2.3.1\n", "a").unwrap();
        let b = crate::spec::python::parse_conda("dependencies:\n  - numpy=2.3.0\n", "a").unwrap();
        assert_ne!(key_of(&a), key_of(&b));
        assert_eq!(key_of(&a), key_of(&a.clone()));
        // Layout, channels and a final newline change nothing that is built.
        let c = crate::spec::python::parse_conda("channels: [conda-forge]\ndependencies: [numpy=2.3.1]", "c").unwrap();
        assert_eq!(key_of(&a), key_of(&c));
        let d = crate::spec::python::parse_conda("dependencies:\n  - python=3.12\n  - numpy=2.3.1\n", "d").unwrap();
        assert_ne!(key_of(&a), key_of(&d));
    }
}
