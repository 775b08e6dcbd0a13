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
//! (`hooks::worker`, shared with process-isolated native plugins) on two inherited pipes, fds 3 and 4, because stdout and stderr belong to the
//! user's script: whatever it prints is copied line by line, tagged with the instance, into the
//! deployment's log and the process log.
//!
//! Failure handling follows Azure's server: an exception in `run` is a model error (HTTP 424)
//! and the worker lives on; a worker that dies or hangs past the deadline is killed, and the
//! instance reports itself unhealthy, so the pool replaces it (init again, with backoff) while
//! the other instances keep serving.

pub mod env;

use std::path::{Path, PathBuf};
use std::process::Command;

pub use env::{configure, EnvSlot, PythonOptions};

use super::worker::{frame, Flavor, Worker};
use super::{HookError, HookRequest, HookResponse, InitContext, ScoringHook};
use crate::spec::python::{PythonEnvironment, PythonScript};

/// The worker program, embedded so the binary is all a user installs.
const WORKER_SOURCE: &str = include_str!("../../../runtime/python/switchyard_worker.py");

/// One instance: a worker process running the deployment's scoring script (the process, the
/// frames and the supervision are [`Worker`]'s).
pub struct PythonHook {
    worker: Worker,
    /// What `describe` says (the interpreter, the script).
    about: String,
    /// The instance's folder (worker program, model dir); removed on drop.
    files: PathBuf,
}

impl PythonHook {
    /// Starts a worker and waits for its `init()`; blocking (seconds).
    pub fn start(script: &PythonScript, ctx: &InitContext) -> Result<Self, String> {
        let python = ctx.python_env.interpreter(&script.environment, &ctx.logs)?;
        let n = ctx.next_instance.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let files = instance_dir(&ctx.deployment, n)?;
        let hook = Self::spawn(script, ctx, &python, n, &files);
        if hook.is_err() {
            let _ = std::fs::remove_dir_all(&files);
        }
        hook
    }

    fn spawn(script: &PythonScript, ctx: &InitContext, python: &Path, n: usize, files: &Path) -> Result<Self, String> {
        let worker = files.join("switchyard_worker.py");
        std::fs::write(&worker, WORKER_SOURCE).map_err(|e| format!("cannot write {}: {e}", worker.display()))?;
        let model_dir = files.join("azureml-models");
        std::fs::create_dir(&model_dir).map_err(|e| format!("cannot create {}: {e}", model_dir.display()))?;
        // Azure keeps the model folder's (or file's) base name under AZUREML_MODEL_DIR: the
        // sample opens $AZUREML_MODEL_DIR/model/sklearn_regression_model.pkl.
        let base = script.model_path.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("model"));
        std::os::unix::fs::symlink(&script.model_path, model_dir.join(&base))
            .map_err(|e| format!("cannot link the model into {}: {e}", model_dir.display()))?;

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
            .envs(&ctx.environment_variables);
        if let Some(bin) = python.parent().filter(|_| is_venv(python)) {
            // As an activated venv: tools the script runs come from the venv first.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)));
            if let (Ok(joined), Some(venv)) = (joined, bin.parent()) {
                cmd.env("PATH", joined).env("VIRTUAL_ENV", venv);
            }
        }
        let worker = Worker::spawn(cmd, ctx, n, Flavor::Python).map_err(|e| {
            format!(
                "cannot start the Python interpreter {}: {e} (set environment.python or serve --python)",
                python.display()
            )
        })?;
        let mut hook = Self { worker, about: String::new(), files: files.to_path_buf() };
        match hook.worker.read_init() {
            Ok((frame::kind::INIT_OK, payload)) => {
                let info: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                hook.about = format!(
                    "{}: python {} ({}) ran init() of {} in {}",
                    hook.worker.tag(),
                    info["python"].as_str().unwrap_or("?"),
                    info["executable"].as_str().unwrap_or("?"),
                    script.script,
                    script.code_dir.display()
                );
                Ok(hook)
            }
            Ok((frame::kind::INIT_FAILED, payload)) => {
                let line = String::from_utf8_lossy(&payload).to_string();
                hook.worker.finish_output();
                Err(format!("init() of {} raised {line} (the traceback is in get-logs)", script.script))
            }
            Ok((other, _)) => Err(format!("the Python worker sent frame type {other} instead of its init result")),
            Err(frame::ReadError::TimedOut) => Err(format!(
                "init() of {} did not finish within {} s; the worker was stopped",
                script.script,
                super::worker::INIT_TIMEOUT.as_secs()
            )),
            Err(_) => {
                let status = hook.worker.finish_output();
                Err(format!(
                    "the Python worker exited while loading {} ({status}); its output is in get-logs",
                    script.script
                ))
            }
        }
    }
}

impl ScoringHook for PythonHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        self.worker.run(request)
    }

    fn describe(&self) -> String {
        self.about.clone()
    }

    fn is_healthy(&self) -> bool {
        self.worker.is_healthy()
    }
}

impl Drop for PythonHook {
    fn drop(&mut self) {
        self.worker.stop();
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

/// Whether `python` is a venv's interpreter (a `pyvenv.cfg` one folder up from `bin/`).
fn is_venv(python: &Path) -> bool {
    python.parent().and_then(Path::parent).is_some_and(|venv| venv.join("pyvenv.cfg").is_file())
}

/// A fresh folder for one instance's files.
fn instance_dir(deployment: &str, n: usize) -> Result<PathBuf, String> {
    let root = std::env::temp_dir();
    for _ in 0..16 {
        let dir = root.join(format!("switchyard-{}-{deployment}-{n}-{:08x}", std::process::id(), fastrand::u32(..)));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!("cannot create a fresh folder under {}", root.display()))
}

/// What `describe` says about a Python deployment before it starts.
pub fn describe_script(script: &PythonScript) -> String {
    let env = match &script.environment {
        PythonEnvironment::Default => "python3 on PATH".to_string(),
        PythonEnvironment::Interpreter(p) => p.display().to_string(),
        PythonEnvironment::Build(b) => format!("environment from {}", b.source),
    };
    format!("python {} in {} ({env})", script.script, script.code_dir.display())
}
