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

pub mod env;
/// The frame protocol, shared with process-isolated native plugins (`hooks::worker`).
pub use super::worker::frame;

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use env::{configure, EnvSlot, PythonOptions};

use super::worker::{copy_output, describe_exit, intern_content_type, Flavor};
use super::{HeaderName, HeaderValue, HookError, HookRequest, HookResponse, InitContext, ScoringHook};
use crate::spec::python::{PythonEnvironment, PythonScript};
use crate::telemetry::LogRing;

/// The worker program, embedded so the binary is all a user installs.
const WORKER_SOURCE: &str = include_str!("../../../runtime/python/switchyard_worker.py");

/// How long `init()` may take (Azure has no limit but its probes; a model download in init
/// can take minutes).
const INIT_TIMEOUT: Duration = Duration::from_secs(600);

/// One instance: a worker process running the deployment's scoring script.
pub struct PythonHook {
    child: Child,
    /// Requests go here (the worker's fd 3).
    to_worker: std::io::PipeWriter,
    /// Answers come from here (the worker's fd 4).
    from_worker: std::io::PipeReader,
    /// Reused buffer for outgoing frames.
    scratch: Vec<u8>,
    /// Reused buffer for incoming frames (runs awaited on a task).
    inbox: Vec<u8>,
    /// The script reads the request's headers (`request_headers`, `@rawhttp`): only then are
    /// they encoded and sent.
    wants_headers: bool,
    /// False once the worker died, hung or broke the protocol: the pool replaces the instance.
    alive: bool,
    /// `deployment/instance-N pid P`, on every log line of this worker.
    tag: String,
    /// What `describe` says (the interpreter, the script).
    about: String,
    /// The deadline of runs that come without a `Cancellation` (mirror copies).
    timeout: Duration,
    logs: Arc<LogRing>,
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
        link_model(&script.model_path, &model_dir)?;

        let (in_r, in_w) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let (out_r, out_w) = std::io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let mut cmd = Command::new(python);
        cmd.arg("-u")
            .arg(&worker)
            .current_dir(&script.code_dir)
            .env_remove("SWITCHYARD_ADMIN_TOKEN")
            .env("PYTHONUNBUFFERED", "1")
            .env("AZUREML_MODEL_DIR", &model_dir)
            .env("AML_APP_ROOT", &script.code_dir)
            .env("AZUREML_SOURCE_DIRECTORY", &script.code_dir)
            .env("AZUREML_ENTRY_SCRIPT", &script.script)
            .env("SCORING_TIMEOUT_MS", ctx.request_timeout_ms.to_string())
            .envs(&ctx.environment_variables)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a kill reaches whatever the script started too, and a
            // Ctrl-C at the terminal reaches the server only (which then drops its workers).
            .process_group(0);
        if let Some(bin) = python.parent().filter(|_| is_venv(python)) {
            // As an activated venv: tools the script runs come from the venv first.
            let path = std::env::var_os("PATH").unwrap_or_default();
            let joined = std::env::join_paths(std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&path)));
            if let (Ok(joined), Some(venv)) = (joined, bin.parent()) {
                cmd.env("PATH", joined).env("VIRTUAL_ENV", venv);
            }
        }
        let (child_in, child_out) = (in_r.as_raw_fd(), out_w.as_raw_fd());
        crate::sys::inherit_as_fd3_fd4(&mut cmd, child_in, child_out);
        let mut child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start the Python interpreter {}: {e} (set environment.python or serve --python)",
                python.display()
            )
        })?;
        drop(in_r);
        // Runs awaited on a task read this end through the reactor: a read must not wait.
        crate::sys::set_nonblocking(out_r.as_raw_fd()).map_err(|e| format!("cannot set up the worker's pipe: {e}"))?;
        drop(out_w);
        let tag = format!("{}/instance-{n} pid {}", ctx.deployment, child.id());
        let mut copiers = Vec::new();
        if let Some(out) = child.stdout.take() {
            copiers.push(copy_output(out, "stdout", &tag, &ctx.deployment, &ctx.logs, Flavor::Python));
        }
        if let Some(err) = child.stderr.take() {
            copiers.push(copy_output(err, "stderr", &tag, &ctx.deployment, &ctx.logs, Flavor::Python));
        }
        let mut hook = Self {
            child,
            to_worker: in_w,
            from_worker: out_r,
            scratch: Vec::new(),
            inbox: Vec::new(),
            wants_headers: true,
            alive: true,
            tag,
            about: String::new(),
            timeout: Duration::from_millis(ctx.request_timeout_ms.max(1)),
            logs: Arc::clone(&ctx.logs),
            files: files.to_path_buf(),
        };
        match frame::read_frame(&mut hook.from_worker, Some(Instant::now() + INIT_TIMEOUT)) {
            Ok((frame::kind::INIT_OK, payload)) => {
                let info: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
                hook.wants_headers = info["headers"].as_bool().unwrap_or(true);
                hook.about = format!(
                    "{}: python {} ({}) ran init() of {} in {}",
                    hook.tag,
                    info["python"].as_str().unwrap_or("?"),
                    info["executable"].as_str().unwrap_or("?"),
                    script.script,
                    script.code_dir.display()
                );
                Ok(hook)
            }
            Ok((frame::kind::INIT_FAILED, payload)) => {
                let line = String::from_utf8_lossy(&payload).to_string();
                hook.finish_output(copiers);
                Err(format!("init() of {} raised {line} (the traceback is in get-logs)", script.script))
            }
            Ok((other, _)) => {
                hook.alive = false;
                Err(format!("the Python worker sent frame type {other} instead of its init result"))
            }
            Err(frame::ReadError::TimedOut) => Err(format!(
                "init() of {} did not finish within {} s; the worker was stopped",
                script.script,
                INIT_TIMEOUT.as_secs()
            )),
            Err(_) => {
                let status = hook.wait_exit(Duration::from_secs(5));
                hook.finish_output(copiers);
                Err(format!(
                    "the Python worker exited while loading {} ({status}); its output is in get-logs",
                    script.script
                ))
            }
        }
    }

    /// Waits (bounded) for the output copiers, so a failed init's traceback is in the log
    /// before the deployment is marked Failed.
    fn finish_output(&mut self, copiers: Vec<std::sync::mpsc::Receiver<()>>) {
        let _ = self.wait_exit(Duration::from_secs(5));
        let until = Instant::now() + Duration::from_secs(2);
        for done in copiers {
            let _ = done.recv_timeout(until.saturating_duration_since(Instant::now()));
        }
    }

    /// How the worker ended, waiting up to `limit` for it (then killing it).
    fn wait_exit(&mut self, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return describe_exit(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    kill_group(self.child.id());
                    return "did not exit; killed".to_string();
                }
            }
        }
    }

    /// Sends one request and reads its answer.
    fn exchange(&mut self, request: &HookRequest<'_>, deadline: Option<Instant>) -> Result<(u8, Vec<u8>), Exchange> {
        let headers = self.wants_headers.then_some(request.headers);
        frame::write_run(
            &mut self.to_worker,
            &mut self.scratch,
            request.content_type.unwrap_or(""),
            headers,
            request.body,
        )
        .map_err(|_| Exchange::Gone)?;
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new(); // do not keep one huge request's buffer forever
        }
        frame::read_frame(&mut self.from_worker, deadline).map_err(|e| match e {
            frame::ReadError::TimedOut => Exchange::TimedOut,
            frame::ReadError::Malformed(m) => Exchange::Broken(m),
            frame::ReadError::Closed => Exchange::Gone,
            frame::ReadError::Io(e) => {
                tracing::debug!(error = %e, "a worker's pipe failed");
                Exchange::Gone
            }
        })
    }

    /// A script's response headers that HTTP can carry: framing headers (the server sets
    /// them for the body it sends) and malformed names or values are dropped, with a line in
    /// the deployment's log.
    fn answer_headers(&self, block: &[u8]) -> Vec<(HeaderName, HeaderValue)> {
        const FRAMING: &[&str] = &[
            "content-type",
            "content-length",
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-connection",
        ];
        let mut out = Vec::new();
        for (name, value) in frame::header_pairs(block) {
            match (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
                (Ok(n), Ok(v)) if !FRAMING.contains(&n.as_str()) => out.push((n, v)),
                (Ok(_), Ok(_)) => {}
                _ => self.logs.push(format!(
                    "{}: run() answered a header HTTP cannot carry ({:?}); it was left out",
                    self.tag,
                    String::from_utf8_lossy(name)
                )),
            }
        }
        out
    }

    /// Marks the worker dead and makes sure it is: the pool replaces this instance.
    fn retire(&mut self, why: &str) -> String {
        self.alive = false;
        kill_group(self.child.id());
        let status = self.wait_exit(Duration::from_millis(500));
        let line = format!("{}: worker {why} ({status}); a new worker replaces it", self.tag);
        self.logs.push(&line);
        tracing::warn!(target: "switchyard::python", "{line}");
        status
    }
}

/// Why an exchange with the worker failed.
enum Exchange {
    /// The pipe closed: the worker exited or was killed.
    Gone,
    /// The safety deadline passed (runs without a `Cancellation`).
    TimedOut,
    /// The worker sent something that is not a frame.
    Broken(String),
}

impl PythonHook {
    /// What one exchange's outcome means for the caller, and for the worker (retired when it
    /// died, hung or broke the protocol).
    fn outcome(&mut self, outcome: Result<(u8, &[u8]), Exchange>, cancelled: bool) -> Result<HookResponse, HookError> {
        match outcome {
            Ok((frame::kind::ANSWER, payload)) => match frame::parse_answer(payload) {
                Some(answer) => Ok(HookResponse {
                    status: if (100..=999).contains(&answer.status) { answer.status } else { 500 },
                    content_type: intern_content_type(answer.content_type),
                    body: Bytes::copy_from_slice(answer.body),
                    headers: if answer.headers.is_empty() { Vec::new() } else { self.answer_headers(answer.headers) },
                }),
                None => {
                    self.retire("sent a malformed answer");
                    Err(HookError::Failed("the Python worker sent a malformed answer".into()))
                }
            },
            Ok((frame::kind::RAISED, payload)) => {
                Err(HookError::Failed(format!("run() raised {}", String::from_utf8_lossy(payload))))
            }
            Ok((frame::kind::BAD_INPUT, payload)) => Err(HookError::BadInput(String::from_utf8_lossy(payload).into())),
            Ok((other, _)) => {
                self.retire("broke the protocol");
                Err(HookError::Failed(format!("the Python worker sent an unexpected frame type {other}")))
            }
            Err(Exchange::Gone) if cancelled => {
                self.retire("was stopped at the request's deadline");
                Err(HookError::Failed("the run passed request_timeout_ms; its worker was stopped".into()))
            }
            Err(Exchange::Gone) => {
                let status = self.retire("died during a run");
                Err(HookError::Failed(format!("the Python worker died during the run ({status})")))
            }
            Err(Exchange::TimedOut) => {
                self.retire("passed the deadline");
                Err(HookError::Failed(format!(
                    "the run took longer than {} ms; its worker was stopped",
                    self.timeout.as_millis()
                )))
            }
            Err(Exchange::Broken(m)) => {
                self.retire("broke the protocol");
                Err(HookError::Failed(format!("the Python worker broke the frame protocol: {m}")))
            }
        }
    }

    /// The run on the caller's task: the frame is written at once (the worker is idle and
    /// the pipe empty, so a body under [`ASYNC_BODY_LIMIT`] never waits), and the answer is
    /// awaited on the runtime's reactor. The request's deadline is the caller's (a timeout
    /// drops this future; [`InFlight`] then stops the worker).
    async fn run_on_task(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let headers = self.wants_headers.then_some(request.headers);
        let sent = frame::write_run(
            &mut self.to_worker,
            &mut self.scratch,
            request.content_type.unwrap_or(""),
            headers,
            request.body,
        );
        if sent.is_err() {
            return self.outcome(Err(Exchange::Gone), false);
        }
        let mut flight = InFlight { hook: self, done: false };
        let read = flight.read_answer().await;
        flight.done = true;
        let hook = &mut *flight.hook;
        let mut inbox = std::mem::take(&mut hook.inbox);
        let result = match read {
            Ok(len) => hook.outcome(Ok((inbox[4], &inbox[5..len])), false),
            Err(e) => hook.outcome(Err(e), false),
        };
        if inbox.len() > 1 << 20 {
            inbox = Vec::new(); // do not keep one huge answer's buffer forever
        }
        hook.inbox = inbox;
        result
    }
}

/// Bodies up to this size are written to the worker from the request's own task (a pipe
/// holds 64 KiB; the worker, idle, has read everything before). Larger ones are queued to a
/// blocking thread, where a write that waits for the worker harms no other request.
pub const ASYNC_BODY_LIMIT: usize = 32 * 1024;

/// A run whose answer is being awaited. Dropped before `done` (the request's deadline passed,
/// or its client went away), it stops the worker: its answer would arrive in the next
/// request's place. The pool then replaces the instance.
struct InFlight<'h> {
    hook: &'h mut PythonHook,
    done: bool,
}

impl InFlight<'_> {
    /// Reads one whole frame into the hook's inbox; returns its length.
    async fn read_answer(&mut self) -> Result<usize, Exchange> {
        let hook = &mut *self.hook;
        // Reads go through `&PipeReader`, so the registration's borrow of the pipe end and the
        // reads share it (no second descriptor per request).
        let pipe = &hook.from_worker;
        let ready = crate::sys::await_readable(pipe.as_fd())
            .map_err(|e| Exchange::Broken(format!("cannot wait for the worker's pipe: {e}")))?;
        if hook.inbox.len() < 4096 {
            hook.inbox.resize(4096, 0);
        }
        let mut filled = 0;
        let mut want: Option<usize> = None;
        loop {
            let mut guard = ready.readable().await.map_err(|_| Exchange::Gone)?;
            match guard.try_io(|_| { pipe }.read(&mut hook.inbox[filled..])) {
                Err(_would_block) => continue,
                Ok(Ok(0)) => return Err(Exchange::Gone),
                Ok(Ok(n)) => filled += n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(Err(_)) => return Err(Exchange::Gone),
            }
            if want.is_none() && filled >= 5 {
                let len = u32::from_be_bytes([hook.inbox[0], hook.inbox[1], hook.inbox[2], hook.inbox[3]]) as usize;
                if len == 0 || len > frame::MAX_FRAME {
                    return Err(Exchange::Broken(format!("a frame of {len} bytes")));
                }
                want = Some(4 + len);
                if hook.inbox.len() < 4 + len {
                    hook.inbox.resize(4 + len, 0);
                }
            }
            match want {
                Some(w) if filled > w => return Err(Exchange::Broken("the worker sent more than one answer".into())),
                Some(w) if filled == w => return Ok(w),
                _ => {}
            }
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.done {
            let hook = &mut *self.hook;
            hook.alive = false;
            kill_group(hook.child.id());
            let line = format!("{}: worker was stopped at the request's deadline; a new worker replaces it", hook.tag);
            hook.logs.push(&line);
            tracing::warn!(target: "switchyard::python", "{line}");
        }
    }
}

impl ScoringHook for PythonHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        if !self.alive {
            return Err(HookError::Failed("the instance's Python worker is gone; it is being replaced".into()));
        }
        let pid = self.child.id();
        if let Some(cancel) = request.cancel {
            // The deadline was hit while this run was in the worker: kill the worker (a
            // Python function cannot be interrupted safely from outside), and the pool
            // replaces it.
            if !cancel.on_cancel(move || kill_group(pid)) {
                return Err(HookError::Failed("the run was cancelled before it started".into()));
            }
        }
        let deadline = request.cancel.is_none().then(|| Instant::now() + self.timeout);
        let outcome = self.exchange(&request, deadline);
        if let Some(cancel) = request.cancel {
            cancel.clear();
        }
        let cancelled = request.cancel.is_some_and(|c| c.is_cancelled());
        match outcome {
            Ok((kind, payload)) => self.outcome(Ok((kind, &payload)), cancelled),
            Err(e) => self.outcome(Err(e), cancelled),
        }
    }

    fn run_async<'a>(&'a mut self, request: HookRequest<'a>) -> Option<super::RunFuture<'a>> {
        if !self.alive || request.body.len() > ASYNC_BODY_LIMIT || tokio::runtime::Handle::try_current().is_err() {
            return None;
        }
        Some(Box::pin(self.run_on_task(request)))
    }

    fn describe(&self) -> String {
        self.about.clone()
    }

    fn is_healthy(&self) -> bool {
        self.alive
    }
}

impl Drop for PythonHook {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.files);
    }
}

/// SIGKILL to the worker's process group (the worker and whatever it started).
fn kill_group(pid: u32) {
    crate::sys::kill_process_group(pid);
}

/// Whether `python` is a venv's interpreter (a `pyvenv.cfg` one folder up from `bin/`).
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
fn link_model(model: &Path, model_dir: &Path) -> Result<(), String> {
    let link = |target: &Path, at: PathBuf| {
        std::os::unix::fs::symlink(target, &at)
            .map_err(|e| format!("cannot link the model into {}: {e}", model_dir.display()))
    };
    let base = model.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("model"));
    link(model, model_dir.join(&base))?;
    if model.is_file() {
        let folder = model.parent().and_then(Path::file_name).map(PathBuf::from);
        if let Some(folder) = folder.filter(|f| *f != base) {
            let inner = model_dir.join(folder);
            std::fs::create_dir(&inner).map_err(|e| format!("cannot create {}: {e}", inner.display()))?;
            link(model, inner.join(&base))?;
        }
    }
    Ok(())
}

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
