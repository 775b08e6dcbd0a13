//! The Python hook: Azure ML scoring scripts (`score.py` with `init()` and `run()`), each
//! instance one worker process.
//!
//! Why processes and not an embedded interpreter: one interpreter has one GIL (N instances
//! would not run in parallel), one `os.environ` (blue would see green's `AZUREML_MODEL_DIR`),
//! and a crash in a C extension would take the server down. A worker process has none of these
//! problems, and its cost — a frame out and a frame back over a pipe — is tens of µs.
//!
//! The worker program ships inside the binary (`runtime/python/switchyard_worker.py`) and is
//! written next to the instance's model folder at start. Requests and answers travel as frames
//! ([`frame`]) on two inherited pipes, fds 3 and 4, because stdout and stderr belong to the
//! user's script: whatever it prints is copied line by line, tagged with the instance, into the
//! deployment's log and the process log.
//!
//! Failure handling follows Azure's server: an exception in `run` is a model error (HTTP 424)
//! and the worker lives on; a worker that dies or hangs past the deadline is killed, and the
//! instance reports itself unhealthy, so the pool replaces it (init again, with backoff) while
//! the other instances keep serving.

pub(crate) mod env;
mod line;
/// The frame protocol, shared with process-isolated native plugins (`hooks::worker`).
pub(crate) use super::worker::frame;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

pub(crate) use env::{configure, EnvSlot, PythonOptions};

use super::worker::{one_line, Flavor, Worker};
use super::{HookError, HookRequest, HookResponse, InitContext, InitError, ScoringHook};
use crate::spec::python::{PythonEnvironment, PythonScript};

/// The worker program, embedded so the binary is all a user installs.
const WORKER_SOURCE: &str = include_str!("../../../runtime/python/switchyard_worker.py");

/// One instance: a worker process running the deployment's scoring script.
pub(crate) struct PythonHook {
    /// The process, its pipes and its supervision (shared with process-isolated plugins),
    /// and the runs queued in it.
    line: Arc<line::Line>,
    /// What `describe` says (the interpreter, the script).
    about: String,
}

impl PythonHook {
    /// Starts a worker and waits for its `init()`; blocking (seconds).
    pub(crate) fn start(script: &PythonScript, ctx: &InitContext) -> Result<Self, InitError> {
        // The file may have changed since validation: it must still be inside the code folder.
        crate::spec::resolve_scoring_script(&script.code_dir, &script.script)?;
        let python = ctx.python_env.interpreter(&script.environment, &ctx.logs)?;
        let n = ctx.next_instance.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let files = instance_dir(&ctx.deployment, n)?;
        let hook = Self::spawn(script, ctx, &python, n, &files);
        if hook.is_err() {
            remove_instance_dir(&files);
        }
        hook
    }

    fn spawn(
        script: &PythonScript,
        ctx: &InitContext,
        python: &Path,
        n: usize,
        files: &Path,
    ) -> Result<Self, InitError> {
        let worker = files.join("switchyard_worker.py");
        std::fs::write(&worker, WORKER_SOURCE)
            .map_err(|e| InitError(format!("cannot write {}: {e}", worker.display())))?;
        let model_dir = files.join("azureml-models");
        std::fs::create_dir(&model_dir)
            .map_err(|e| InitError(format!("cannot create {}: {e}", model_dir.display())))?;
        link_model(&script.model_path, &model_dir)?;
        // Issue 22 D2: the worker may run as `serve --worker-user`; its folder is then its own.
        crate::sys::user::hand_over(files)
            .map_err(|e| InitError(format!("cannot hand {} to the worker user: {e}", files.display())))?;

        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(&worker)
            .current_dir(&script.code_dir)
            .env("PYTHONUNBUFFERED", "1")
            .env("AZUREML_MODEL_DIR", &model_dir)
            .env("AML_APP_ROOT", &script.code_dir)
            .env("AZUREML_SOURCE_DIRECTORY", &script.code_dir)
            .env("AZUREML_ENTRY_SCRIPT", &script.script)
            .env("SCORING_TIMEOUT_MS", ctx.request_timeout_ms.to_string())
            .env("SWITCHYARD_MAX_ANSWER", frame::MAX_FRAME.to_string());
        if read_only(&script.code_dir.join(&script.script)) {
            // Code stored by the server (`POST /v1/codes`, read-only files): Python must not
            // write `__pycache__` into it, or the stored copy would change under its digest.
            cmd.env("PYTHONDONTWRITEBYTECODE", "1");
        }
        cmd.envs(&ctx.environment_variables);
        if let Some(bin) = python.parent().filter(|_| is_venv(python)) {
            // As an activated venv: tools the script runs come from the venv first.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)));
            if let (Ok(joined), Some(venv)) = (joined, bin.parent()) {
                cmd.env("PATH", joined).env("VIRTUAL_ENV", venv);
            }
        }
        let mut worker = Worker::spawn(cmd, ctx, n, Flavor::Python).map_err(|e| {
            // Only a missing or unrunnable interpreter is the user's setting to fix; running
            // out of descriptors or processes is not.
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    " (set environment.python or serve --python)"
                }
                _ => "",
            };
            InitError(format!("cannot start a Python worker with {}: {e}{hint}", python.display()))
        })?;
        match worker.read_init() {
            Ok((frame::kind::INIT_OK, payload)) => {
                let info: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                worker.set_wants_headers(info["headers"].as_bool().unwrap_or(true));
                let about = format!(
                    "{}: python {} ({}) ran init() of {} in {}",
                    worker.tag(),
                    one_line(info["python"].as_str().unwrap_or("?").as_bytes()),
                    one_line(info["executable"].as_str().unwrap_or("?").as_bytes()),
                    script.script,
                    script.code_dir.display()
                );
                let line = line::Line::new(worker, files.to_path_buf())
                    .map_err(|e| InitError(format!("cannot open a second descriptor of the worker's pipe: {e}")))?;
                Ok(Self { line, about })
            }
            Ok((frame::kind::INIT_FAILED, payload)) => {
                let line = one_line(&payload).into_owned();
                worker.finish_output();
                Err(InitError(format!("init() of {} raised {line} (the traceback is in get-logs)", script.script)))
            }
            Ok((other, _)) => {
                Err(InitError(format!("the Python worker sent frame type {other} instead of its init result")))
            }
            Err(frame::ReadError::TimedOut) => Err(InitError(format!(
                "init() of {} did not finish within {} ms (the init deadline); the worker was stopped",
                script.script,
                super::init_timeout().as_millis()
            ))),
            Err(_) => {
                let status = worker.finish_output();
                Err(InitError(format!(
                    "the Python worker exited while loading {} ({status}); its output is in get-logs",
                    script.script
                )))
            }
        }
    }
}

/// Bodies up to this size are written to the worker from the request's own task (two such
/// runs fit in its request pipe together, see `worker::REQUEST_PIPE_BYTES`; a frame that
/// does not fit behind the one there is not queued). Larger ones are queued to a blocking
/// thread, where a write that waits for the worker harms no other request.
pub(crate) const ASYNC_BODY_LIMIT: usize = 32 * 1024;

impl ScoringHook for PythonHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        self.line.run(request)
    }

    fn start_run(&mut self, request: HookRequest<'_>) -> Option<super::Started> {
        if request.body.len() > ASYNC_BODY_LIMIT || tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        self.line.start(&request)
    }

    fn in_flight(&self) -> usize {
        self.line.in_flight()
    }

    fn notify_stop(&mut self, notice: Arc<dyn Fn() + Send + Sync>) {
        self.line.on_stop(notice);
    }

    fn settle(&mut self) {
        let limit = self.line.worker().timeout();
        self.line.settle(limit);
    }

    fn describe(&self) -> String {
        self.about.clone()
    }

    fn is_healthy(&self) -> bool {
        self.line.is_healthy()
    }
}

/// Whether `python` is a venv's interpreter (a `pyvenv.cfg` one folder up from `bin/`).
/// Whether nobody may write `file` (the asset store makes its files so).
fn read_only(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(file).is_ok_and(|m| m.permissions().mode() & 0o222 == 0)
}

fn is_venv(python: &Path) -> bool {
    python.parent().and_then(Path::parent).is_some_and(|venv| venv.join("pyvenv.cfg").is_file())
}

/// A fresh folder for one instance's files.
/// Lays the model out under `AZUREML_MODEL_DIR` as Azure does, so one score.py finds it
/// whichever way the model was named.
///
/// A folder keeps its base name: the sample opens
/// `$AZUREML_MODEL_DIR/model/sklearn_regression_model.pkl` for `path: ../../model-1/model/`.
/// A file (the SDK tutorial's `Model(path=".../model/sklearn_regression_model.pkl")`) is there
/// under its own name and also inside a folder named like the one it sits in, so the same
/// score.py opens the same relative path for both forms of the tutorial.
fn link_model(model: &Path, model_dir: &Path) -> Result<(), InitError> {
    let link = |target: &Path, at: PathBuf| {
        std::os::unix::fs::symlink(target, &at)
            .map_err(|e| InitError(format!("cannot link the model into {}: {e}", model_dir.display())))
    };
    let base = model.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("model"));
    link(model, model_dir.join(&base))?;
    if model.is_file() {
        let folder = model.parent().and_then(Path::file_name).map(PathBuf::from);
        if let Some(folder) = folder.filter(|f| *f != base) {
            let inner = model_dir.join(folder);
            std::fs::create_dir(&inner).map_err(|e| InitError(format!("cannot create {}: {e}", inner.display())))?;
            link(model, inner.join(&base))?;
        }
    }
    Ok(())
}

fn instance_dir(deployment: &str, n: usize) -> Result<PathBuf, InitError> {
    let root = std::env::temp_dir();
    for _ in 0..16 {
        let dir = root.join(format!("switchyard-{}-{deployment}-{n}-{:08x}", std::process::id(), fastrand::u32(..)));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                INSTANCE_DIRS.lock().unwrap_or_else(|e| e.into_inner()).push(dir.clone());
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(InitError(format!("cannot create {}: {e}", dir.display()))),
        }
    }
    Err(InitError(format!("cannot create a fresh folder under {}", root.display())))
}

/// The instance folders of this process that still exist: an instance's drop removes its own,
/// and [`remove_instance_folders`] the rest when the server stops (a stop that does not wait
/// for every pool to drop its instances must not leave them in the temp folder).
static INSTANCE_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn remove_instance_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    INSTANCE_DIRS.lock().unwrap_or_else(|e| e.into_inner()).retain(|d| d != dir);
}

/// Removes every instance folder this process made that is still there; called when the
/// server stops, on every path (SIGTERM, its parent gone). Workers still running are not
/// harmed: they loaded their program at start, and their model link is only a link.
pub(crate) fn remove_instance_folders() {
    let dirs = std::mem::take(&mut *INSTANCE_DIRS.lock().unwrap_or_else(|e| e.into_inner()));
    for dir in dirs {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// What `describe` says about a Python deployment before it starts: the script, and which
/// interpreter runs it and where that choice came from (`--python` wins over the deployment's
/// own environment, as [`EnvSlot::interpreter`] does).
pub(crate) fn describe_script(script: &PythonScript) -> String {
    let env = match (env::forced_python(), &script.environment) {
        (Some(p), _) => format!("{} from serve --python/SWITCHYARD_PYTHON", p.display()),
        (None, PythonEnvironment::Default) => match env::which("python3") {
            Some(p) => format!("python3 on PATH: {}", p.display()),
            None => "python3 on PATH, which has none".to_string(),
        },
        (None, PythonEnvironment::Interpreter(p)) => format!("{} from environment.python", p.display()),
        (None, PythonEnvironment::Build(b)) => format!("an environment built from {}", b.source),
    };
    format!("python {} in {} ({env})", script.script, script.code_dir.display())
}
