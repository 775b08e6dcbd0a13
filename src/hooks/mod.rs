//! Scoring hooks: the init/run contract every way of scoring a request implements.
//!
//! A hook instance is created by `init` on a blocking thread (it may load a model for seconds)
//! and then owned by exactly one worker-pool instance, which calls `run` for one request at a
//! time. That ownership is why `run` takes `&mut self`: ONNX Runtime sessions, native plugin
//! handles and a Python subprocess's pipes all need exclusive access, and no hook needs a lock.
//!
//! The request is raw bytes plus the content type, and the answer raw bytes plus a status, so
//! a C-ABI plugin (bytes in, bytes out) and a Python scoring script (whose `run` returns any
//! JSON-able value or an `AMLResponse`) fit the same trait as the built-in ONNX hook.
#![forbid(unsafe_code)]

pub(crate) mod batch;
pub(crate) mod cancel;
pub(crate) mod native;
pub(crate) mod oip;
pub(crate) mod onnx;
pub(crate) mod ort_runtime;
pub(crate) mod python;
mod request;
pub mod tensor_json;
pub(crate) mod worker;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

// A script's answer headers are validated as HTTP's own types (the `http` crate, which
// the server's framework also uses) so the server can put them on the wire as they are.
use bytes::Bytes;
pub(crate) use http::{HeaderName, HeaderValue};
pub use request::{Headers, Request};

use crate::spec::HookKind;
use crate::telemetry::LogRing;

/// The largest answer any hook may give, in bytes (256 MiB): the worker processes' frame limit,
/// and the same cap for in-process answers (ONNX, v2 `infer`, native plugins), so no request
/// can make the server build an answer of unbounded size (a v2 request naming one output
/// 10,000 times once made a 360 MB answer from 360 KB). An answer over it is the model's
/// failure (424) with [`answer_over_cap`]'s message; encoders stop as soon as they know.
pub(crate) const MAX_ANSWER_BYTES: usize = worker::frame::MAX_FRAME;

/// The message of an answer over [`MAX_ANSWER_BYTES`]; `size` when it is known.
pub(crate) fn answer_over_cap(size: Option<usize>) -> String {
    let mib = MAX_ANSWER_BYTES >> 20;
    match size {
        Some(n) => format!("the answer is {n} bytes, over the answer cap of {mib} MiB ({MAX_ANSWER_BYTES} bytes)"),
        None => format!("the answer would be over the answer cap of {mib} MiB ({MAX_ANSWER_BYTES} bytes)"),
    }
}

/// How long an instance's init may take: [`worker::INIT_TIMEOUT`] (600 s), or
/// `SWITCHYARD_INIT_TIMEOUT_MS` from the server's environment (read once; for operators whose
/// inits are known to be quick, and for tests). An in-process native init past it fails the
/// load (its thread cannot be stopped and is left behind; see `native::NativeHook::load`).
pub(crate) fn init_timeout() -> std::time::Duration {
    static TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        std::env::var("SWITCHYARD_INIT_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&ms| ms > 0)
            .map_or(worker::INIT_TIMEOUT, std::time::Duration::from_millis)
    })
}

/// One scoring request as a hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct HookRequest<'a> {
    /// The request body, unparsed: each hook decides what it accepts.
    pub body: &'a [u8],
    /// The `Content-Type` header, if any.
    pub content_type: Option<&'a str>,
    /// The request's headers, for hooks that hand them to user code (a scoring script's
    /// `request_headers`); empty for the others (see `InstancePool::headers_for_run`).
    pub headers: &'a Headers,
    /// Set when the run may be cancelled (it runs off the request's thread and has a
    /// deadline); hooks that can stop early register how.
    pub cancel: Option<&'a cancel::Cancellation>,
}

/// A hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResponse {
    /// HTTP status to return (200 for a normal answer; hooks may choose others).
    pub status: u16,
    /// `Content-Type` of `body`.
    pub content_type: &'static str,
    /// The response body (shared, so a mirrored pair can keep it without a copy).
    pub body: Bytes,
    /// Further headers the hook answers with (a script's `AMLResponse` headers); the front
    /// door's own headers win where a name collides. Empty (no allocation) for most answers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl HookResponse {
    /// A 200 JSON answer.
    pub fn json(body: Vec<u8>) -> Self {
        Self { status: 200, content_type: "application/json", body: Bytes::from(body), headers: Vec::new() }
    }
}

/// Which API a request came by, and so how a hook reads it and answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    /// `POST /score`: the body is the hook's own format.
    #[default]
    Score,
    /// Open Inference Protocol v2 `infer` ([`oip`]); `header_length` is the request's
    /// `Inference-Header-Content-Length` (binary tensor extension).
    Infer { header_length: Option<usize> },
}

/// A hook's answer to a request of either [`Protocol`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub response: HookResponse,
    /// For a v2 answer with binary outputs: the JSON header's length, sent as the answer's
    /// `Inference-Header-Content-Length`.
    pub header_length: Option<usize>,
}

/// One tensor of a model's signature, for the v2 metadata route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: oip::Datatype,
    /// Declared dimensions, -1 where dynamic.
    pub shape: Vec<i64>,
}

/// What a hook knows of its model's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Why a run produced no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The caller's input is not what the hook accepts (HTTP 400); the message says what is.
    #[error("{0}")]
    BadInput(String),
    /// The model or hook failed (HTTP 424 with the reason in `ms-azureml-model-error-reason`).
    #[error("{0}")]
    Failed(String),
}

/// What a hook's init receives.
#[derive(Debug, Clone)]
pub struct InitContext {
    /// The deployment's name, for messages.
    pub deployment: String,
    /// The deployment's `environment_variables` (the ONNX hook has no use for them; hooks that
    /// run user code set them).
    #[allow(dead_code)]
    pub environment_variables: BTreeMap<String, String>,
    /// Threads ONNX Runtime may use inside one run (1 by default: instances give parallelism).
    pub intra_threads: usize,
    /// The deployment's log: out-of-process hooks copy their workers' output into it.
    pub logs: Arc<LogRing>,
    /// `request_timeout_ms` when the deployment was made: the deadline of runs that come
    /// without a `Cancellation` (mirror copies), and `SCORING_TIMEOUT_MS` for scripts.
    pub request_timeout_ms: u64,
    /// The deployment's Python environment, resolved (built) once for all its instances.
    pub python_env: python::EnvSlot,
    /// Numbers the deployment's instances in logs (`blue/instance-0`, ...).
    pub next_instance: Arc<AtomicUsize>,
    /// The model's name and version, as v2 answers name it (`model_name`, `model_version`).
    pub model_name: String,
    pub model_version: Option<String>,
    /// The workers of this deployment version whose init is running, killed when the version
    /// is deleted or replaced, or the server stops (see [`cancel::InitStop`]).
    pub init_stop: Arc<cancel::InitStop>,
    /// The deployment batches requests (`batching:`): the model must be able to.
    pub batching: bool,
}

impl InitContext {
    /// A context with the defaults: one intra-op thread, a fresh log and environment slot.
    pub fn new(deployment: &str, environment_variables: BTreeMap<String, String>) -> Self {
        Self {
            deployment: deployment.to_string(),
            environment_variables,
            intra_threads: 1,
            logs: Arc::new(LogRing::default()),
            request_timeout_ms: 5000,
            python_env: python::EnvSlot::default(),
            next_instance: Arc::default(),
            model_name: String::new(),
            model_version: None,
            init_stop: Arc::default(),
            batching: false,
        }
    }
}

/// A run started on an out-of-process hook ([`ScoringHook::start_run`]): its request is in
/// the worker's pipe, and its answer is awaited on the request's own task, apart from the
/// instance.
pub struct Started {
    /// The instance may take another run once [`turn`](Self::turn) resolves: the pool gives
    /// it back then, so the worker finds the next requests waiting in its pipe when it
    /// answers this one instead of going to sleep between them.
    pub lend: bool,
    /// Resolves when few enough runs are ahead of this one in the worker for its instance to
    /// be lent (for a hook that does not lend: when the run is the worker's). Dropped before
    /// its answer (the request's deadline, its client gone), the run is given up: the worker
    /// is stopped and replaced when the run had begun, as a run that went on unwatched might
    /// never end.
    pub turn: std::pin::Pin<Box<dyn std::future::Future<Output = Turn> + Send + 'static>>,
}

/// The end of a started run: its answer, or `None` when it never began (the worker was
/// stopped before it took the run; the pool runs it on another instance).
pub(crate) type Answering =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<Result<HookResponse, HookError>>> + Send + 'static>>;

/// Where a started run stands once its instance may be lent.
pub enum Turn {
    /// The run is in the worker, or waits there behind runs that will end: its end.
    Begun(Answering),
    /// The run never began: the worker was stopped (it died, or a run before it was given up
    /// at its deadline) before it took this one. The pool runs it on another instance.
    NotStarted,
}

/// The per-instance scoring contract.
pub trait ScoringHook: Send {
    /// Scores one request. Called by one thread at a time for a given instance.
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError>;

    /// Scores one Open Inference Protocol v2 `infer` request. By default the hook's own `run`
    /// gets the body as it came (a scoring script or plugin decides what it accepts);
    /// hooks that know their tensors (ONNX) decode it with [`oip`] instead.
    fn infer(&mut self, request: HookRequest<'_>, header_length: Option<usize>) -> Result<Answer, HookError> {
        let _ = header_length;
        self.run(request).map(|response| Answer { response, header_length: None })
    }

    /// The model's inputs and outputs, where the hook knows them (v2 metadata).
    fn signature(&self) -> Option<Signature> {
        None
    }

    /// One line about what this instance loaded, for the deployment's log.
    fn describe(&self) -> String {
        String::new()
    }

    /// Starts the run and returns at once, its answer to be awaited on the calling task's
    /// reactor instead of a thread: for an out-of-process hook, whose run is a frame out and a
    /// frame back over pipes, this saves the two thread hand-offs a queued run costs (to a
    /// blocking thread and back), and lets the next request wait in the worker's pipe
    /// ([`Started::lend`]). `None`: this hook (or this request, or this moment) runs only
    /// through [`run`](Self::run).
    fn start_run(&mut self, _request: HookRequest<'_>) -> Option<Started> {
        None
    }

    /// Asks to be told when the instance stops serving outside a run the pool holds it for
    /// (a Python worker that dies under a run while its instance is lent, see
    /// [`Started::lend`]): the pool then replaces it at once. Nothing by default: other hooks
    /// only stop during their own runs.
    fn notify_stop(&mut self, _notice: std::sync::Arc<dyn Fn() + Send + Sync>) {}

    /// Waits until no run started with [`start_run`](Self::start_run) is in flight, before a
    /// run through [`run`](Self::run) (bounded by the request deadline). Nothing by default.
    fn settle(&mut self) {}

    /// Runs started on this instance and not answered yet (it may be idle in the pool with
    /// one in flight: see [`Started::lend`]). The pool takes an instance with none first.
    fn in_flight(&self) -> usize {
        0
    }

    /// False once the instance cannot serve again (an out-of-process worker died, hung or
    /// broke the protocol): the pool drops it and loads a replacement, with backoff. An
    /// in-process hook is always healthy (a panic is handled by the pool).
    fn is_healthy(&self) -> bool {
        true
    }

    /// What prepares requests for [`run_batch`](Self::run_batch) without an instance (the
    /// model's signature), for a hook that batches; `None` for the others.
    fn preparer(&self) -> Option<Arc<dyn batch::Prepare>> {
        None
    }

    /// Runs prepared requests as one batch and answers each, in order. Only hooks with a
    /// [`preparer`](Self::preparer) are given batches.
    fn run_batch(
        &mut self,
        batch: Vec<batch::Prepared>,
        _cancel: Option<&cancel::Cancellation>,
    ) -> Vec<Result<Answer, HookError>> {
        batch.iter().map(|_| Err(HookError::Failed("this hook does not run batches".into()))).collect()
    }
}

/// Runs one request on `hook` by the protocol it came by.
pub(crate) fn call(
    hook: &mut dyn ScoringHook,
    request: HookRequest<'_>,
    protocol: Protocol,
) -> Result<Answer, HookError> {
    match protocol {
        Protocol::Score => hook.run(request).map(|response| Answer { response, header_length: None }),
        Protocol::Infer { header_length } => hook.infer(request, header_length),
    }
}

/// Creates one hook instance of the given kind. Blocking: call it off the request path.
pub(crate) fn init(kind: &HookKind, ctx: &InitContext) -> Result<Box<dyn ScoringHook>, InitError> {
    match kind {
        HookKind::Onnx { model_file } => {
            onnx::OnnxHook::load(model_file, ctx).map(|h| Box::new(h) as _).map_err(|e| InitError(e.to_string()))
        }
        HookKind::Python(script) => python::PythonHook::start(script, ctx).map(|h| Box::new(h) as _),
        HookKind::Native(plugin) => native::start(plugin, ctx),
    }
}

/// Why a hook instance could not be created: the message is the user's answer (`show` prints
/// it), e.g. the model file that does not load or the exception `init()` raised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InitError(pub String);

impl From<crate::spec::SpecError> for InitError {
    /// A spec rule that no longer holds at load time (the scoring script moved out of its
    /// folder since validation): the rule's message is the init error.
    fn from(e: crate::spec::SpecError) -> Self {
        InitError(e.message)
    }
}

/// Where a hook's files are, for messages and logs.
pub(crate) fn describe(kind: &HookKind) -> String {
    match kind {
        HookKind::Onnx { model_file } => format!("onnx {}", model_file.display()),
        HookKind::Python(script) => python::describe_script(script),
        HookKind::Native(plugin) => native::describe_plugin(plugin),
    }
}
