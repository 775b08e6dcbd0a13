//! Hook workers: scoring code run in a child process, one per instance, spoken to in frames
//! ([`frame`], also the Python hook's) on two inherited pipes (the child's fds 3 and 4). Native
//! plugins deployed with `isolation: process` run this way (`switchyard native-worker`,
//! [`super::native::worker_main`]).
//!
//! What is here: starting the child in its own process group with the pipes and its
//! stdout/stderr copied line by line into the deployment's log; one exchange per run, waiting
//! with a deadline (a hung worker never hangs a thread) and killing the worker at the
//! request's cancellation; and the supervision rule: a worker that dies, hangs, panics or
//! breaks the protocol is killed and reports itself unhealthy, so the pool replaces the
//! instance (init again, with backoff) while the other instances keep serving.
//!
//! The Python hook is a [`Worker`] of [`Flavor::Python`] plus what only it has: the script's
//! files, the request headers its `run()` may read, and runs awaited on the request's task
//! (through [`Worker::send_run`], [`Worker::answer_pipe`] and [`Worker::outcome`]).

pub mod frame;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{HeaderName, HeaderValue, HookError, HookRequest, HookResponse, InitContext};
use crate::telemetry::LogRing;

/// How long a worker's init may take (Azure has no limit but its probes; a model download in
/// init can take minutes).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Longer lines of a worker's output are cut (a script printing a huge array without a
/// newline must not grow memory without bound).
const MAX_LOG_LINE: usize = 8 * 1024;

/// Which kind of worker: its name in messages and its log target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// A Python scoring script (log target `switchyard::python`).
    Python,
    /// A native plugin with `isolation: process` (log target `switchyard::native`).
    Native,
}

impl Flavor {
    fn what(self) -> &'static str {
        match self {
            Flavor::Python => "Python worker",
            Flavor::Native => "native plugin worker",
        }
    }

    /// A warning in the process log, under this flavor's target.
    fn warn(self, line: &str) {
        match self {
            Flavor::Python => tracing::warn!(target: "switchyard::python", "{line}"),
            Flavor::Native => tracing::warn!(target: "switchyard::native", "{line}"),
        }
    }

    /// What precedes a `RAISED` frame's text in the 424 message.
    fn raised(self) -> &'static str {
        match self {
            Flavor::Python => "run() raised ",
            Flavor::Native => "",
        }
    }
}

/// One running worker process and its frame pipes.
pub struct Worker {
    child: Child,
    /// Requests go here (the worker's fd 3).
    to_worker: std::io::PipeWriter,
    /// Answers come from here (the worker's fd 4).
    from_worker: std::io::PipeReader,
    /// Reused buffer for outgoing frames.
    scratch: Vec<u8>,
    /// False once the worker died, hung or broke the protocol: the pool replaces the instance.
    alive: bool,
    /// `deployment/instance-N pid P`, on every log line of this worker.
    tag: String,
    /// The deadline of runs that come without a `Cancellation` (mirror copies).
    timeout: Duration,
    logs: Arc<LogRing>,
    flavor: Flavor,
    /// The output copiers, until init is over (a failed init waits for them).
    copiers: Vec<std::sync::mpsc::Receiver<()>>,
    /// Set once the worker was killed and reaped: its pid may belong to another process now.
    reaped: bool,
    /// The request's headers go with each run (a Python script that reads them; native
    /// plugins take none).
    wants_headers: bool,
}

impl Worker {
    /// Starts `cmd` as instance `n`'s worker: in its own process group (a kill reaches
    /// whatever it started too, and a Ctrl-C at the terminal reaches the server only), with
    /// the frame pipes on fds 3 and 4, stdin closed and its output copied into the log.
    pub fn spawn(mut cmd: Command, ctx: &InitContext, n: usize, flavor: Flavor) -> std::io::Result<Self> {
        let (in_r, in_w) = std::io::pipe()?;
        let (out_r, out_w) = std::io::pipe()?;
        cmd.env_remove("SWITCHYARD_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        crate::sys::inherit_as_fd3_fd4(&mut cmd, in_r.as_raw_fd(), out_w.as_raw_fd());
        // Started (with its output copiers) at live priority, not at the loader thread's nice
        // 19, which the worker and the copiers would keep for every request they serve.
        let (deployment, logs) = (ctx.deployment.clone(), Arc::clone(&ctx.logs));
        let started = crate::threads::at_live_priority(move || {
            let mut child = cmd.spawn()?;
            let tag = format!("{deployment}/instance-{n} pid {}", child.id());
            let mut copiers = Vec::new();
            if let Some(out) = child.stdout.take() {
                copiers.push(copy_output(out, "stdout", &tag, &deployment, &logs, flavor));
            }
            if let Some(err) = child.stderr.take() {
                copiers.push(copy_output(err, "stderr", &tag, &deployment, &logs, flavor));
            }
            Ok::<_, std::io::Error>((child, tag, copiers))
        });
        let (mut child, tag, copiers) =
            started.unwrap_or_else(|| Err(std::io::Error::other("starting the worker process panicked")))?;
        drop(in_r);
        drop(out_w);
        if flavor == Flavor::Python {
            // Python runs awaited on a task read this end through the reactor: a read must
            // not wait. (`frame::read_frame` polls with a deadline either way.)
            if let Err(e) = crate::sys::set_nonblocking(out_r.as_raw_fd()) {
                crate::sys::kill_process_group(child.id());
                let _ = child.wait();
                return Err(e);
            }
        }
        Ok(Self {
            child,
            to_worker: in_w,
            from_worker: out_r,
            scratch: Vec::new(),
            alive: true,
            tag,
            timeout: Duration::from_millis(ctx.request_timeout_ms.max(1)),
            logs: Arc::clone(&ctx.logs),
            flavor,
            copiers,
            reaped: false,
            wants_headers: false,
        })
    }

    /// Sends the request's headers with each run from now on (or not).
    pub fn set_wants_headers(&mut self, wants: bool) {
        self.wants_headers = wants;
    }

    /// Writes one run frame (no waiting for the answer: see [`Self::answer_pipe`]).
    pub fn send_run(&mut self, request: &HookRequest<'_>) -> Result<(), Exchange> {
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
        Ok(())
    }

    /// The end answers come from, for a caller that awaits them on its own reactor (a
    /// Python worker's end is non-blocking).
    pub fn answer_pipe(&self) -> &std::io::PipeReader {
        &self.from_worker
    }

    /// A run whose answer was being awaited was abandoned (its deadline passed or its client
    /// went away): the answer would arrive in the next request's place, so the worker is
    /// stopped and the pool replaces the instance.
    pub fn stopped_at_deadline(&mut self) {
        self.alive = false;
        crate::sys::kill_process_group(self.child.id());
        let line = format!("{}: worker was stopped at the request's deadline; a new worker replaces it", self.tag);
        self.logs.push(&line);
        self.flavor.warn(&line);
    }

    /// `deployment/instance-N pid P`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Reads the worker's init result (`INIT_OK` or `INIT_FAILED`), waiting up to
    /// [`INIT_TIMEOUT`]. Anything but `INIT_OK` marks the worker dead.
    pub fn read_init(&mut self) -> Result<(u8, Vec<u8>), frame::ReadError> {
        let result = frame::read_frame(&mut self.from_worker, Some(Instant::now() + INIT_TIMEOUT));
        match &result {
            Ok((frame::kind::INIT_OK, _)) => self.copiers.clear(),
            _ => self.alive = false,
        }
        result
    }

    /// After a failed init: waits (bounded) for the worker to exit and for its output, so the
    /// traceback or message is in the log before the deployment is marked Failed; returns how
    /// it ended.
    pub fn finish_output(&mut self) -> String {
        let status = self.wait_exit(Duration::from_secs(5));
        let until = Instant::now() + Duration::from_secs(2);
        for done in std::mem::take(&mut self.copiers) {
            let _ = done.recv_timeout(until.saturating_duration_since(Instant::now()));
        }
        status
    }

    /// How the worker ended, waiting up to `limit` for it (then killing it).
    fn wait_exit(&mut self, limit: Duration) -> String {
        let until = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return describe_exit(status),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    crate::sys::kill_process_group(self.child.id());
                    return "did not exit; killed".to_string();
                }
            }
        }
    }

    /// Sends one request and reads its answer.
    fn exchange(&mut self, request: &HookRequest<'_>, deadline: Option<Instant>) -> Result<(u8, Vec<u8>), Exchange> {
        self.send_run(request)?;
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

    /// Marks the worker dead and makes sure it is: the pool replaces this instance.
    fn retire(&mut self, why: &str) -> String {
        self.alive = false;
        crate::sys::kill_process_group(self.child.id());
        let status = self.wait_exit(Duration::from_millis(500));
        let line = format!("{}: worker {why} ({status}); a new worker replaces it", self.tag);
        self.logs.push(&line);
        self.flavor.warn(&line);
        status
    }

    /// Scores one request in the worker (the `ScoringHook::run` of worker hooks).
    pub fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let what = self.flavor.what();
        if !self.alive {
            return Err(HookError::Failed(format!("the instance's {what} is gone; it is being replaced")));
        }
        let pid = self.child.id();
        if let Some(cancel) = request.cancel {
            // The deadline was hit while this run was in the worker: kill the worker (the
            // code in it cannot be interrupted safely from outside), and the pool replaces it.
            if !cancel.on_cancel(move || crate::sys::kill_process_group(pid)) {
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

    /// What one exchange's outcome means for the caller, and for the worker (retired when it
    /// died, hung, panicked or broke the protocol). `cancelled`: the request's deadline passed
    /// while the run was in the worker (which was killed for it).
    pub fn outcome(
        &mut self,
        outcome: Result<(u8, &[u8]), Exchange>,
        cancelled: bool,
    ) -> Result<HookResponse, HookError> {
        let what = self.flavor.what();
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
                    Err(HookError::Failed(format!("the {what} sent a malformed answer")))
                }
            },
            Ok((frame::kind::RAISED, payload)) => {
                Err(HookError::Failed(format!("{}{}", self.flavor.raised(), String::from_utf8_lossy(payload))))
            }
            Ok((frame::kind::BAD_INPUT, payload)) => Err(HookError::BadInput(String::from_utf8_lossy(payload).into())),
            Ok((frame::kind::PANICKED, payload)) => {
                self.retire("panicked");
                Err(HookError::Failed(String::from_utf8_lossy(payload).into()))
            }
            Ok((other, _)) => {
                self.retire("broke the protocol");
                Err(HookError::Failed(format!("the {what} sent an unexpected frame type {other}")))
            }
            Err(Exchange::Gone) if cancelled => {
                self.retire("was stopped at the request's deadline");
                Err(HookError::Failed("the run passed request_timeout_ms; its worker was stopped".into()))
            }
            Err(Exchange::Gone) => {
                let status = self.retire("died during a run");
                Err(HookError::Failed(format!("the {what} died during the run ({status})")))
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
                Err(HookError::Failed(format!("the {what} broke the frame protocol: {m}")))
            }
        }
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

    /// False once the worker died, hung or broke the protocol.
    pub fn is_healthy(&self) -> bool {
        self.alive
    }

    /// Kills the worker's process group and reaps it.
    pub fn stop(&mut self) {
        if !self.reaped {
            crate::sys::kill_process_group(self.child.id());
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why an exchange with the worker failed.
pub enum Exchange {
    /// The pipe closed: the worker exited or was killed.
    Gone,
    /// The safety deadline passed (runs without a `Cancellation`).
    TimedOut,
    /// The worker sent something that is not a frame.
    Broken(String),
}

/// How a worker ended, in words (`exit code N`, `killed by signal 11 SIGSEGV`).
pub fn describe_exit(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " SIGKILL (out of memory, or stopped)",
        libc::SIGSEGV => " SIGSEGV",
        libc::SIGABRT => " SIGABRT",
        libc::SIGBUS => " SIGBUS",
        libc::SIGTERM => " SIGTERM",
        _ => "",
    }
}

/// Copies one output stream of the worker into the deployment's log and the process log,
/// line by line. The receiver hears when the stream ends.
pub fn copy_output(
    stream: impl Read + Send + 'static,
    which: &'static str,
    tag: &str,
    deployment: &str,
    logs: &Arc<LogRing>,
    flavor: Flavor,
) -> std::sync::mpsc::Receiver<()> {
    let (done_tx, done) = std::sync::mpsc::channel();
    let (tag, deployment, logs) = (tag.to_string(), deployment.to_string(), Arc::clone(logs));
    let spawned = std::thread::Builder::new().name("switchyard-wlog".into()).spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        while read_line_bounded(&mut reader, &mut line) {
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end();
            logs.push(format!("{tag} {which}: {text}"));
            match flavor {
                Flavor::Python => {
                    tracing::info!(target: "switchyard::python", deployment = %deployment, instance = %tag, stream = which, "{text}")
                }
                Flavor::Native => {
                    tracing::info!(target: "switchyard::native", deployment = %deployment, instance = %tag, stream = which, "{text}")
                }
            }
        }
        let _ = done_tx.send(());
    });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to copy a worker's {which}: {e}");
    }
    done
}

/// Reads one line into `line` (without keeping more than [`MAX_LOG_LINE`] bytes of it);
/// false at the end of the stream.
fn read_line_bounded(reader: &mut impl BufRead, line: &mut Vec<u8>) -> bool {
    line.clear();
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return any,
        };
        if buf.is_empty() {
            return any;
        }
        any = true;
        let (chunk, used, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = MAX_LOG_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        reader.consume(used);
        if end {
            return true;
        }
    }
}

/// `HookResponse::content_type` is `&'static str` (the ONNX hook's are constants); scripts and
/// plugins may answer any type, so the few distinct ones are kept for the process's life.
/// Bounded: past 64 distinct types, the rest are answered as `application/octet-stream`.
pub fn intern_content_type(ct: &str) -> &'static str {
    const KNOWN: &[&str] =
        &["application/json", "text/plain", "text/plain; charset=utf-8", "text/html", "application/octet-stream"];
    if ct.is_empty() {
        return "application/octet-stream";
    }
    if let Some(k) = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(ct)) {
        return k;
    }
    static SEEN: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = seen.iter().find(|s| **s == ct) {
        return s;
    }
    if seen.len() >= 64 || actix_web::http::header::HeaderValue::from_str(ct).is_err() {
        return "application/octet-stream";
    }
    let leaked: &'static str = Box::leak(ct.to_string().into_boxed_str());
    seen.push(leaked);
    leaked
}
