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
//! What a worker may do to the server is bounded here too: everything it prints or sends as
//! text is logged as one line with its control characters escaped (no script text starts a
//! line of its own), what it prints reaches the process log at a bounded rate
//! ([`LOG_LINES_PER_SEC`]), it runs with a high `oom_score_adj` and an optional memory limit
//! ([`MAX_MEMORY_ENV`]), and a kill reaches its whole descendant tree ([`kill_tree`]).
//!
//! The Python hook is a [`Worker`] of [`Flavor::Python`] plus what only it has: the script's
//! files, the request headers its `run()` may read, and runs awaited on the request's task
//! (through [`Worker::prepare_run`], [`Worker::answer_reader`] and [`Worker::outcome`]).

pub(crate) mod frame;

use std::borrow::Cow;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{HeaderName, HeaderValue, HookError, HookRequest, HookResponse, InitContext};
use crate::telemetry::LogRing;

/// How long a worker's init may take (Azure has no limit but its probes; a model download in
/// init can take minutes).
pub(crate) const INIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Longer lines of a worker's output are cut (a script printing a huge array without a
/// newline must not grow memory without bound).
const MAX_LOG_LINE: usize = 8 * 1024;

/// What one worker's output (stdout and stderr together) may copy into the process log, per
/// second, after a burst of [`LOG_BURST_LINES`] lines or [`LOG_BURST_BYTES`]: a script that
/// prints 100 MB must not write 100 MB to the server's stderr (and to whatever collects it).
/// The lines over it are counted and reported in a warning; the deployment's log
/// (`get-logs`) still gets every line, as far as its ring holds.
pub(crate) const LOG_LINES_PER_SEC: f64 = 100.0;
/// See [`LOG_LINES_PER_SEC`].
pub(crate) const LOG_BYTES_PER_SEC: f64 = 100.0 * 1024.0;
/// See [`LOG_LINES_PER_SEC`].
pub(crate) const LOG_BURST_LINES: f64 = 1000.0;
/// See [`LOG_LINES_PER_SEC`].
pub(crate) const LOG_BURST_BYTES: f64 = 1024.0 * 1024.0;
/// How often a worker's dropped lines are reported while it keeps printing over the rate.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);
/// Dropped lines are reported once the worker's output has been quiet this long.
const DROP_REPORT_QUIET_MS: i32 = 1000;

/// The deployment's `environment_variables` entry (or the server's environment variable) that
/// limits each worker's memory: a size in bytes, or with a `K`, `M` or `G` suffix (powers of
/// 1024). Applied as `RLIMIT_DATA`: the worker's heap and other private writable memory, not
/// its resident size; past it, allocations fail (`MemoryError` in Python, a 424).
pub(crate) const MAX_MEMORY_ENV: &str = "SWITCHYARD_WORKER_MAX_MEMORY";

/// A worker's `oom_score_adj` (or the server's own, where that is higher): under memory
/// pressure the kernel kills a worker, which the pool replaces, rather than the server.
pub(crate) const WORKER_OOM_SCORE_ADJ: i32 = 800;

/// Which kind of worker: its name in messages and its log target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
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
pub(crate) struct Worker {
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
    /// Why Switchyard killed the worker, once it did (the first reason wins; set from the
    /// request's cancellation too): a SIGKILL is then reported as ours, not as the kernel's.
    killed: Arc<OnceLock<String>>,
    /// The request's headers go with each run (a Python script that reads them; native
    /// plugins take none).
    wants_headers: bool,
    /// Where this worker is registered while its init runs (a delete, replace or shutdown
    /// kills it there); `None` once init is over.
    init_stop: Option<Arc<super::cancel::InitStop>>,
    /// Bytes the request pipe holds ([`REQUEST_PIPE_BYTES`] where the kernel allows).
    request_pipe: usize,
}

/// The request pipe's size asked for: two runs of a Python worker may wait in it, one
/// behind the other, and a write must never wait for the worker (it is made on an I/O
/// thread). 256 KiB holds two of the largest runs written from a task (32 KiB bodies and
/// 16 KiB of headers) several times over.
pub(crate) const REQUEST_PIPE_BYTES: usize = 256 * 1024;

impl Worker {
    /// Starts `cmd` as instance `n`'s worker: in its own process group (a kill reaches
    /// whatever it started too, and a Ctrl-C at the terminal reaches the server only), with
    /// the frame pipes on fds 3 and 4, stdin closed and its output copied into the log.
    pub(crate) fn spawn(mut cmd: Command, ctx: &InitContext, n: usize, flavor: Flavor) -> std::io::Result<Self> {
        let max_data_bytes = max_memory(&ctx.environment_variables)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let oom_score_adj =
            Some(crate::sys::own_oom_score_adj().map_or(WORKER_OOM_SCORE_ADJ, |own| own.max(WORKER_OOM_SCORE_ADJ)));
        crate::sys::worker_child_setup(&mut cmd, crate::sys::WorkerChildSetup { oom_score_adj, max_data_bytes });
        let (in_r, in_w) = std::io::pipe()?;
        let (out_r, out_w) = std::io::pipe()?;
        // --- secrets kept from workers (issue 22 D2; sys::scrub, sys::user) ---
        for variable in crate::sys::scrub::SECRET_VARIABLES {
            cmd.env_remove(variable);
        }
        // --- end ---
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        crate::sys::inherit_as_fd3_fd4(&mut cmd, in_r.as_raw_fd(), out_w.as_raw_fd());
        // --- worker user (issue 22 D2): last of the child's steps, the others need our rights ---
        crate::sys::user::run_as_worker_user(&mut cmd);
        // --- end ---
        // Started (with its output copiers) at live priority, not at the loader thread's nice
        // 19, which the worker and the copiers would keep for every request they serve.
        let (deployment, logs) = (ctx.deployment.clone(), Arc::clone(&ctx.logs));
        let started = crate::threads::at_live_priority(move || {
            let mut child = cmd.spawn().map_err(|e| match crate::sys::user::worker_user() {
                Some(user) => std::io::Error::new(e.kind(), format!("{e} (started as --worker-user {user})")),
                None => e,
            })?;
            LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
            let tag = format!("{deployment}/instance-{n} pid {}", child.id());
            let mut copiers = Vec::new();
            let limit = Arc::new(Mutex::new(OutputLimit::new(Instant::now())));
            if let Some(out) = child.stdout.take() {
                copiers.push(copy_output(out, "stdout", &tag, &deployment, &logs, flavor, Arc::clone(&limit)));
            }
            if let Some(err) = child.stderr.take() {
                copiers.push(copy_output(err, "stderr", &tag, &deployment, &logs, flavor, limit));
            }
            Ok::<_, std::io::Error>((child, tag, copiers))
        });
        let (mut child, tag, copiers) =
            started.unwrap_or_else(|| Err(std::io::Error::other("starting the worker process panicked")))?;
        drop(in_r);
        drop(out_w);
        // Only a Python worker's runs queue one behind another (`hooks::python::line`).
        let asked = if flavor == Flavor::Python { REQUEST_PIPE_BYTES } else { 0 };
        let request_pipe = crate::sys::grow_pipe(std::os::fd::AsFd::as_fd(&in_w), asked);
        if !ctx.init_stop.track(child.id()) {
            // The version was deleted or replaced (or the server is stopping) meanwhile.
            kill_tree(child.id());
            forget_live(child.id());
            let _ = child.wait();
            return Err(std::io::Error::other("the deployment was deleted or replaced while the worker started"));
        }
        let init_stop = Some(Arc::clone(&ctx.init_stop));
        if flavor == Flavor::Python {
            // Python runs awaited on a task read this end through the reactor: a read must
            // not wait. (`frame::read_frame` polls with a deadline either way.)
            if let Err(e) = crate::sys::set_nonblocking(out_r.as_raw_fd()) {
                ctx.init_stop.untrack(child.id());
                kill_tree(child.id());
                forget_live(child.id());
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
            killed: Arc::default(),
            wants_headers: false,
            init_stop,
            request_pipe,
        })
    }

    /// Sends the request's headers with each run from now on (or not).
    pub(crate) fn set_wants_headers(&mut self, wants: bool) {
        self.wants_headers = wants;
    }

    /// Writes one run frame (no waiting for the answer).
    pub(crate) fn send_run(&mut self, request: &HookRequest<'_>) -> Result<(), Exchange> {
        self.prepare_run(request)?;
        self.write_prepared()
    }

    /// Builds the run frame of `request`, not written yet ([`Self::write_prepared`]); its
    /// length in bytes.
    pub(crate) fn prepare_run(&mut self, request: &HookRequest<'_>) -> Result<usize, Exchange> {
        let headers = self.wants_headers.then_some(request.headers);
        frame::build_run(&mut self.scratch, request.content_type.unwrap_or(""), headers, request.body)
            .map_err(|e| Exchange::Broken(e.to_string()))?;
        Ok(self.scratch.len())
    }

    /// Writes the frame [`Self::prepare_run`] built.
    pub(crate) fn write_prepared(&mut self) -> Result<(), Exchange> {
        use std::io::Write;
        let written = self.to_worker.write_all(&self.scratch).map_err(|_| Exchange::Gone);
        if self.scratch.capacity() > 1 << 20 {
            self.scratch = Vec::new(); // do not keep one huge request's buffer forever
        }
        written
    }

    /// The deadline of runs that come without a `Cancellation`.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Bytes the request pipe holds: frames queued in it together up to this never make a
    /// write wait.
    pub(crate) fn request_pipe_bytes(&self) -> usize {
        self.request_pipe
    }

    /// A second descriptor of the answer pipe, for a reader that does not hold the worker
    /// (runs queued one behind another read their answers in turn; see `hooks::python`).
    pub(crate) fn answer_reader(&self) -> std::io::Result<std::io::PipeReader> {
        self.from_worker.try_clone()
    }

    /// A run whose answer was being awaited was abandoned (its deadline passed or its client
    /// went away): the answer would arrive in the next request's place, so the worker is
    /// stopped and the pool replaces the instance.
    pub(crate) fn stopped_at_deadline(&mut self) {
        self.alive = false;
        self.kill("the request's deadline passed (or its client went away) during the run");
        let line = format!("{}: worker was stopped at the request's deadline; a new worker replaces it", self.tag);
        self.logs.push(&line);
        self.flavor.warn(&line);
    }

    /// `deployment/instance-N pid P`.
    pub(crate) fn tag(&self) -> &str {
        &self.tag
    }

    /// Reads the worker's init result (`INIT_OK` or `INIT_FAILED`), waiting up to
    /// [`super::init_timeout`] ([`INIT_TIMEOUT`] unless set). Anything but `INIT_OK` marks the worker dead.
    pub(crate) fn read_init(&mut self) -> Result<(u8, Vec<u8>), frame::ReadError> {
        let result = frame::read_frame(&mut self.from_worker, Some(Instant::now() + super::init_timeout()));
        self.end_init();
        match &result {
            Ok((frame::kind::INIT_OK, _)) => self.copiers.clear(),
            _ => self.alive = false,
        }
        result
    }

    /// After a failed init: waits (bounded) for the worker to exit and for its output, so the
    /// traceback or message is in the log before the deployment is marked Failed; returns how
    /// it ended.
    pub(crate) fn finish_output(&mut self) -> String {
        let status = self.wait_exit(Duration::from_secs(5));
        let until = Instant::now() + Duration::from_secs(2);
        for done in std::mem::take(&mut self.copiers) {
            let _ = done.recv_timeout(until.saturating_duration_since(Instant::now()));
        }
        status
    }

    /// How the worker ended, waiting up to `limit` for it (then killing it).
    fn wait_exit(&mut self, limit: Duration) -> String {
        // `try_wait` may reap it: from then on its pid may be another process's, so it leaves
        // the registry first (this worker is killed here if it does not exit).
        forget_live(self.child.id());
        let until = Instant::now() + limit;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return self.describe(status);
                }
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    self.kill("it did not exit by itself");
                    return "it did not exit by itself; stopped by Switchyard".to_string();
                }
            }
        }
    }

    /// Kills the worker and its descendants, noting why (the first reason is kept). Nothing
    /// once it was reaped: its pid may be another process's by now.
    fn kill(&self, because: &str) {
        let _ = self.killed.set(because.to_string());
        if !self.reaped {
            kill_tree(self.child.id());
        }
    }

    /// How the worker ended, in words: a SIGKILL Switchyard sent is said to be ours, with why.
    fn describe(&self, status: std::process::ExitStatus) -> String {
        match (status.signal(), self.killed.get()) {
            (Some(libc::SIGKILL), Some(why)) => format!("stopped by Switchyard: {why}"),
            _ => describe_exit(status),
        }
    }

    /// Sends one request and reads its answer.
    fn exchange(&mut self, request: &HookRequest<'_>, deadline: Option<Instant>) -> Result<(u8, Vec<u8>), Exchange> {
        self.send_run(request)?;
        frame::read_frame(&mut self.from_worker, deadline).map_err(|e| match e {
            frame::ReadError::TimedOut => Exchange::TimedOut,
            frame::ReadError::Malformed(m) => Exchange::Broken(m),
            frame::ReadError::TooLarge(len) => Exchange::TooLarge(len),
            frame::ReadError::Closed => Exchange::Gone,
            frame::ReadError::Io(e) => {
                tracing::debug!(error = %e, "a worker's pipe failed");
                Exchange::Gone
            }
        })
    }

    /// Marks the worker dead and makes sure it is: the pool replaces this instance. A worker
    /// that `ended` by itself (its pipe closed) is given a moment to exit, so its own exit
    /// status is what is reported; any other is killed at once.
    fn retire(&mut self, why: &str, ended: bool) -> String {
        self.alive = false;
        if !ended {
            self.kill(&format!("it {why}"));
        }
        let status = self.wait_exit(Duration::from_millis(500));
        let line = format!("{}: worker {why} ({status}); a new worker replaces it", self.tag);
        self.logs.push(&line);
        self.flavor.warn(&line);
        status
    }

    /// Scores one request in the worker (the `ScoringHook::run` of worker hooks).
    pub(crate) fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let what = self.flavor.what();
        if !self.alive {
            return Err(HookError::Failed(format!("the instance's {what} is gone; it is being replaced")));
        }
        let pid = self.child.id();
        if let Some(cancel) = request.cancel {
            // The deadline was hit while this run was in the worker: kill the worker (the
            // code in it cannot be interrupted safely from outside), and the pool replaces it.
            let killed = Arc::clone(&self.killed);
            let kill = move || {
                let _ = killed.set("the request's deadline (request_timeout_ms) passed during the run".into());
                kill_tree(pid);
            };
            if !cancel.on_cancel(kill) {
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
    pub(crate) fn outcome(
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
                    self.retire("sent a malformed answer", false);
                    Err(HookError::Failed(format!("the {what} sent a malformed answer")))
                }
            },
            Ok((frame::kind::RAISED, payload)) => {
                Err(HookError::Failed(format!("{}{}", self.flavor.raised(), one_line(payload))))
            }
            Ok((frame::kind::BAD_INPUT, payload)) => Err(HookError::BadInput(one_line(payload).into())),
            Ok((frame::kind::UNSERVABLE, payload)) => Err(HookError::Failed(one_line(payload).into())),
            Ok((frame::kind::PANICKED, payload)) => {
                self.retire("panicked", false);
                Err(HookError::Failed(one_line(payload).into()))
            }
            Ok((other, _)) => {
                self.retire("broke the protocol", false);
                Err(HookError::Failed(format!("the {what} sent an unexpected frame type {other}")))
            }
            Err(Exchange::Gone) if cancelled => {
                self.retire("was stopped at the request's deadline", true);
                Err(HookError::Failed("the run passed request_timeout_ms; its worker was stopped".into()))
            }
            Err(Exchange::Gone) => {
                let status = self.retire("died during a run", true);
                Err(HookError::Failed(format!("the {what} died during the run ({status})")))
            }
            Err(Exchange::TimedOut) => {
                self.retire("passed the deadline", false);
                Err(HookError::Failed(format!(
                    "the run took longer than {} ms; its worker was stopped",
                    self.timeout.as_millis()
                )))
            }
            Err(Exchange::TooLarge(len)) => {
                self.retire(
                    &format!("sent an answer of {len} bytes, over the cap of {} bytes", frame::MAX_FRAME),
                    false,
                );
                Err(HookError::Failed(format!(
                    "the answer is {len} bytes, over the cap of {} bytes per answer; its worker was stopped",
                    frame::MAX_FRAME
                )))
            }
            Err(Exchange::Broken(m)) => {
                self.retire("broke the protocol", false);
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
    pub(crate) fn is_healthy(&self) -> bool {
        self.alive
    }

    /// The worker's init is over (or it is being reaped): a stop of its version no longer
    /// needs to kill it here, and must not once its pid can be reused.
    fn end_init(&mut self) {
        if let Some(stop) = self.init_stop.take() {
            stop.untrack(self.child.id());
        }
    }

    /// Kills the worker, its process group and its descendants, and reaps it.
    pub(crate) fn stop(&mut self) {
        self.end_init();
        if !self.reaped {
            self.kill("its instance was removed (delete, replacement, scale-down or shutdown)");
            forget_live(self.child.id());
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
pub(crate) enum Exchange {
    /// The pipe closed: the worker exited or was killed.
    Gone,
    /// The safety deadline passed (runs without a `Cancellation`).
    TimedOut,
    /// The worker sent something that is not a frame.
    Broken(String),
    /// The worker announced an answer longer than [`frame::MAX_FRAME`] bytes.
    TooLarge(usize),
}

/// How a worker ended, in words (`exit code N`, `killed by signal 11 SIGSEGV`).
pub(crate) fn describe_exit(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
        _ => status.to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " SIGKILL, not sent by Switchyard (the kernel's out-of-memory killer, or another process)",
        libc::SIGSEGV => " SIGSEGV",
        libc::SIGABRT => " SIGABRT",
        libc::SIGBUS => " SIGBUS",
        libc::SIGTERM => " SIGTERM",
        _ => "",
    }
}

/// Copies one output stream of the worker into the deployment's log and the process log,
/// line by line. The receiver hears when the stream ends.
/// Each line is escaped into one line ([`one_line`]) and tagged; the process log gets it
/// within the worker's [`OutputLimit`] (shared by its two streams).
pub(crate) fn copy_output(
    stream: impl Read + AsRawFd + Send + 'static,
    which: &'static str,
    tag: &str,
    deployment: &str,
    logs: &Arc<LogRing>,
    flavor: Flavor,
    limit: Arc<Mutex<OutputLimit>>,
) -> std::sync::mpsc::Receiver<()> {
    let (done_tx, done) = std::sync::mpsc::channel();
    let (tag, deployment, logs) = (tag.to_string(), deployment.to_string(), Arc::clone(logs));
    let spawned = std::thread::Builder::new().name("switchyard-wlog".into()).spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        let report = |dropped: u64, over: Duration| {
            let line = format!(
                "{tag}: {dropped} line(s) of the worker's output in the last {:.0} s were not copied to the process log \
                 (over {LOG_LINES_PER_SEC} lines or {} KiB per second); get-logs has them, as far as it holds",
                over.as_secs_f64().max(1.0),
                LOG_BYTES_PER_SEC as u64 / 1024
            );
            logs.push(&line);
            flavor.warn(&line);
        };
        let fd = reader.get_ref().as_raw_fd();
        loop {
            // Lines were dropped and nothing is waiting to be read: report them once the
            // output has been quiet a moment (a flood that ended is reported at once, not
            // whenever the script prints next).
            if reader.buffer().is_empty() && limit.lock().unwrap_or_else(|e| e.into_inner()).has_dropped() {
                let quiet = matches!(crate::sys::poll_readable(fd, DROP_REPORT_QUIET_MS), Ok(false));
                let due = quiet.then(|| limit.lock().unwrap_or_else(|e| e.into_inner()).take_dropped(Instant::now()));
                if let Some((dropped, over)) = due.flatten() {
                    report(dropped, over);
                }
            }
            if !read_line_bounded(&mut reader, &mut line) {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            let text = one_line(text.trim_end().as_bytes());
            logs.push(format!("{tag} {which}: {text}"));
            let (copy, due) = {
                let mut limit = limit.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                (limit.admit(text.len(), now), limit.report_due(now))
            };
            if let Some((dropped, over)) = due {
                report(dropped, over);
            }
            if !copy {
                continue;
            }
            match flavor {
                Flavor::Python => {
                    tracing::info!(target: "switchyard::python", deployment = %deployment, instance = %tag, stream = which, "{text}");
                }
                Flavor::Native => {
                    tracing::info!(target: "switchyard::native", deployment = %deployment, instance = %tag, stream = which, "{text}");
                }
            }
        }
        // The stream ended: what was dropped since the last report is reported now.
        let left = limit.lock().unwrap_or_else(|e| e.into_inner()).take_dropped(Instant::now());
        if let Some((dropped, over)) = left {
            report(dropped, over);
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
pub(crate) fn intern_content_type(ct: &str) -> &'static str {
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
    if seen.len() >= 64 || HeaderValue::from_str(ct).is_err() {
        return "application/octet-stream";
    }
    let leaked: &'static str = Box::leak(ct.to_string().into_boxed_str());
    seen.push(leaked);
    leaked
}

/// Text from a worker (a line it printed, an exception's message) as one log line: control
/// characters are written as escapes (`\n`, `\r`, `\u{1b}`), and so are Unicode's line and
/// paragraph separators. Whatever a script prints or raises then stays inside the line that
/// names it, after the tag, and cannot start a line that looks like the server's own, nor
/// rewrite one on a terminal. Tabs are kept. Borrowed when there is nothing to escape.
pub(crate) fn one_line(bytes: &[u8]) -> Cow<'_, str> {
    fn escaped(c: char) -> bool {
        (c.is_control() && c != '\t') || c == '\u{2028}' || c == '\u{2029}'
    }
    let text = String::from_utf8_lossy(bytes);
    if !text.chars().any(escaped) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if escaped(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The rate at which one worker's output is copied into the process log: two token buckets
/// (lines and bytes, [`LOG_LINES_PER_SEC`] and the others), and the count of lines left out
/// since the last report.
#[derive(Debug)]
pub(crate) struct OutputLimit {
    lines: f64,
    bytes: f64,
    last: Instant,
    dropped: u64,
    /// When dropping started since the last report (`None`: nothing dropped since).
    dropping_since: Option<Instant>,
}

impl OutputLimit {
    /// A full bucket at `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Self { lines: LOG_BURST_LINES, bytes: LOG_BURST_BYTES, last: now, dropped: 0, dropping_since: None }
    }

    /// Whether a line of `len` bytes may be copied at `now` (it is counted as dropped if not).
    pub(crate) fn admit(&mut self, len: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.lines = (self.lines + elapsed * LOG_LINES_PER_SEC).min(LOG_BURST_LINES);
        self.bytes = (self.bytes + elapsed * LOG_BYTES_PER_SEC).min(LOG_BURST_BYTES);
        let cost = len as f64;
        if self.lines >= 1.0 && self.bytes >= cost.min(LOG_BURST_BYTES) {
            self.lines -= 1.0;
            self.bytes -= cost;
            return true;
        }
        self.dropped += 1;
        self.dropping_since.get_or_insert(now);
        false
    }

    /// Lines dropped, and over how long, when a report is due at `now` while the output goes
    /// on: every [`DROP_REPORT_EVERY`] from the first drop.
    pub(crate) fn report_due(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let since = self.dropping_since?;
        if now.saturating_duration_since(since) < DROP_REPORT_EVERY {
            return None;
        }
        self.take_dropped(now)
    }

    /// Whether lines were dropped since the last report.
    pub(crate) fn has_dropped(&self) -> bool {
        self.dropped > 0
    }

    /// Lines dropped since the last report, and over how long; resets the count.
    pub(crate) fn take_dropped(&mut self, now: Instant) -> Option<(u64, Duration)> {
        let since = self.dropping_since.take()?;
        let dropped = std::mem::take(&mut self.dropped);
        Some((dropped, now.saturating_duration_since(since)))
    }
}

/// The pids of this process's workers not yet reaped (a pid leaves before its worker is
/// reaped, so a pid here is always that worker's): [`stop_all`] reaches them when the server
/// stops, whether or not their instances are dropped by then.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn forget_live(pid: u32) {
    LIVE.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
}

/// Kills every worker of this process that is still running, with its descendants
/// ([`kill_tree`]); called when the server stops (SIGTERM, or its parent gone). A worker would
/// exit by itself once its request pipe closes with the server, but what its script started
/// would not. The registry stays locked meanwhile, so no worker is reaped (and its pid reused)
/// under the kill.
pub(crate) fn stop_all() {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    for &pid in live.iter() {
        kill_tree(pid);
    }
}

/// Kills the worker `pid`, its process group, and every process descended from it, also those
/// that left its group or session (`setsid`, a daemon's double fork: the worker is their
/// subreaper, see [`crate::sys::worker_child_setup`], so they stay its descendants). The
/// descendants go first, while the worker still holds them; each round kills what `/proc`
/// shows, and what a killed process orphaned shows up under the worker in the next round.
/// Without `/proc` (not Linux) only the process group is reached.
pub(crate) fn kill_tree(pid: u32) {
    for _ in 0..32 {
        let found = descendants(pid);
        if found.is_empty() {
            break;
        }
        for (child, parent) in found {
            crate::sys::kill_if_child_of(child, parent);
        }
    }
    crate::sys::kill_process_group(pid);
}

/// The living descendants of `root` as (pid, parent pid), from one pass over `/proc`.
fn descendants(root: u32) -> Vec<(u32, u32)> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut parent_of: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| match crate::sys::process_parent(pid) {
            // A zombie is dead already (and has no children left).
            Some((ppid, state)) if state != 'Z' && state != 'X' => Some((pid, ppid)),
            _ => None,
        })
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        parent_of.retain(|&(pid, ppid)| {
            if ppid == parent {
                found.push((pid, ppid));
                frontier.push(pid);
                false
            } else {
                true
            }
        });
    }
    found
}

/// The memory limit of a deployment's workers ([`MAX_MEMORY_ENV`]): its own
/// `environment_variables` first, then the server's environment. `Err` says what is wrong.
fn max_memory(vars: &std::collections::BTreeMap<String, String>) -> Result<Option<u64>, String> {
    let value = match vars.get(MAX_MEMORY_ENV) {
        Some(v) => v.clone(),
        None => match std::env::var(MAX_MEMORY_ENV) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        },
    };
    parse_size(&value)
        .map(Some)
        .ok_or_else(|| format!("{MAX_MEMORY_ENV} must be a size such as 2G, 512M or 1073741824 (bytes), got {value:?}"))
}

/// `2G`, `512M`, `64K` (powers of 1024, an optional `i`/`B`: `2GiB`, `512MB`) or bytes; at
/// least 1 MiB (less cannot start an interpreter, and 0 would read as "none").
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
    let t = t.strip_suffix(['i', 'I']).unwrap_or(t);
    let (digits, unit) = match t.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&t[..i], c.to_ascii_uppercase()),
        _ => (t, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    let n: u64 = digits.trim().parse().ok()?;
    let bytes = n.checked_mul(1u64 << shift)?;
    (bytes >= 1 << 20).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_text_stays_on_one_line() {
        assert!(matches!(one_line(b"plain words\tand a tab"), Cow::Borrowed(_)));
        let forged = "boom\n2026-12-06T10:00:00.000Z request_id=x status=200\r\x1b[2K\u{2028}end";
        assert_eq!(
            one_line(forged.as_bytes()),
            "boom\\n2026-12-06T10:00:00.000Z request_id=x status=200\\r\\u{1b}[2K\\u{2028}end"
        );
        assert!(!one_line(forged.as_bytes()).contains(['\n', '\r', '\x1b']));
    }

    #[test]
    fn output_over_the_rate_is_counted_and_reported_once_per_period() {
        let t0 = Instant::now();
        let mut limit = OutputLimit::new(t0);
        let passed = (0..5000).filter(|_| limit.admit(10, t0)).count();
        assert_eq!(passed, LOG_BURST_LINES as usize, "the burst, then nothing in the same instant");
        assert_eq!(limit.report_due(t0), None, "reported when quiet, or once a period is over");
        // One second later: a second's worth of lines passes again.
        let t1 = t0 + Duration::from_secs(1);
        let passed = (0..1000).filter(|_| limit.admit(10, t1)).count();
        assert_eq!(passed, LOG_LINES_PER_SEC as usize);
        assert_eq!(limit.take_dropped(t1), Some((4900, Duration::from_secs(1))));
        assert!(!limit.has_dropped());
        // Flooding on: a report every period.
        let t2 = t1 + DROP_REPORT_EVERY;
        assert!(!limit.admit(10, t1) && limit.report_due(t1).is_none());
        assert_eq!(limit.report_due(t2), Some((1, DROP_REPORT_EVERY)));
        // Bytes count too: a few long lines use the byte budget up.
        let mut limit = OutputLimit::new(t0);
        let passed = (0..1000).filter(|_| limit.admit(MAX_LOG_LINE, t0)).count();
        assert_eq!(passed, (LOG_BURST_BYTES as usize) / MAX_LOG_LINE);
    }

    #[test]
    fn memory_sizes_parse_or_say_what_is_expected() {
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("512M"), Some(512 << 20));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size(" 1073741824 "), Some(1 << 30));
        for bad in ["", "lots", "1.5G", "-1G", "0", "100K", "2X"] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
        let vars = [(MAX_MEMORY_ENV.to_string(), "a lot".to_string())].into_iter().collect();
        assert!(max_memory(&vars).unwrap_err().contains("such as 2G"));
    }
}
