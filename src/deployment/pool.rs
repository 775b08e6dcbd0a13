//! A deployment's worker pool: `instance_count` hook instances, each used by one request at a
//! time, handed out through a semaphore that is fair within a bound ([`super::permits`]).
//!
//! How a request reaches an instance is the main performance decision of the runtime. A model-1
//! run takes ~4 µs and handing it to another thread costs more than that, so a run whose
//! measured cost is short executes right on the calling (actix worker) thread, waiting for an
//! instance on the semaphore; a long run is queued, and a blocking thread holding an instance
//! takes queued runs one after another, so it never stalls the event loop and the instance
//! never idles between runs under load. The cost is a moving average per pool, and an
//! unmeasured pool starts on the queued side: a slow model is never run inline by mistake.
//!
//! Invariant: the semaphore holds exactly one permit per instance in `idle`. A permit is taken
//! (and forgotten) before an instance is popped, and added back after it is pushed, so holding
//! a permit guarantees an idle instance, and waiting requests are served in arrival order
//! (a request waiting on the thread that gives an instance back may go first, by at most
//! [`super::permits::SKEW`]).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::permits::{Permit, Permits, TryAcquireError};

use crate::hooks::batch::Prepared;
use crate::hooks::cancel::{Cancellation, InitStop};
use crate::hooks::{
    self, Answer, Headers, HookError, HookRequest, HookResponse, InitError, Protocol, Request, ScoringHook, Turn,
};
use crate::telemetry::traces::{stage, Handoff};

/// Runs whose average cost is at most this run inline on the calling thread.
pub(crate) const INLINE_LIMIT_NS: u64 = 100_000;

/// Why instances did not load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The pool was closed (the deployment deleted or replaced) before the load finished.
    #[error("the load was cancelled: the deployment was deleted or replaced")]
    Cancelled,
    /// The hook's init failed (or panicked); the message says why, for `show`.
    #[error("{0}")]
    Init(String),
    /// No thread could be started for the load.
    #[error("cannot start a thread to load an instance: {0}")]
    Thread(String),
}

/// Model loads allowed to start at once in the whole process, and loads one deployment version
/// may have running at once. Loads are CPU- and memory-heavy and nobody's request waits for
/// them; without a bound, 8 creates of 256 instances started 2,048 loads and 299 threads at
/// once. One per core keeps a big scale-up from starving everything else and still uses every
/// core.
pub(crate) fn load_slot_count() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16)
}

/// The process-wide load slots ([`load_slot_count`] of them). A load holds one only for its
/// first [`SLOW_LOAD`]: a load still running after that (a `score.py` whose `init()` sleeps or
/// downloads) is waiting, not computing, and gives its slot back, so it cannot hold every
/// other deployment's creates and crash replacements for up to the init deadline (before, a
/// slow `init()` kept a new ONNX deployment `Creating` and a crashed live worker unreplaced
/// for 600 s). It still counts against its own version's [`load_slot_count`] loads at once,
/// which bounds how many run in all.
pub(crate) fn load_slots() -> Arc<Semaphore> {
    static SLOTS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    Arc::clone(SLOTS.get_or_init(|| Arc::new(Semaphore::new(load_slot_count()))))
}

/// How long a load holds a process-wide load slot at most (see [`load_slots`]).
pub(crate) const SLOW_LOAD: Duration = Duration::from_secs(5);

/// How much longer than [`hooks::init_timeout`] the pool waits for an init: the hooks keep that
/// deadline themselves and say more when it passes (a worker stopped, an in-process call left
/// behind); the pool's is the backstop for a hook that does not.
const INIT_GRACE: Duration = Duration::from_secs(2);

/// Marks a pool whose run cost has not been measured yet.
const UNMEASURED: u64 = u64::MAX;

/// Creates one hook instance (blocking).
pub(crate) type HookFactory = Arc<dyn Fn() -> Result<Box<dyn ScoringHook>, InitError> + Send + Sync>;

/// Why a run produced no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The pool has no loaded instance (still loading, failed, or removed).
    NoInstance,
    /// Every instance is busy and the run was not allowed to wait (shadow copies).
    Busy,
    /// The hook refused the input (HTTP 400).
    BadInput(String),
    /// The hook or model failed (HTTP 424).
    Failed(String),
}

impl From<HookError> for RunError {
    fn from(e: HookError) -> Self {
        match e {
            HookError::BadInput(m) => RunError::BadInput(m),
            HookError::Failed(m) => RunError::Failed(m),
        }
    }
}

/// Instance counts by state, for `show` and the `switchyard_instances` gauge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct InstanceCounts {
    pub ready: usize,
    pub loading: usize,
    pub draining: usize,
    pub failed: usize,
    /// Instances taken out of service because a run outlived its deadline and could not be
    /// stopped (in-process native plugins; see [`InstancePool::watch_runs`]).
    pub hung: usize,
    /// Instances that died and wait out the backoff before their replacement loads (then
    /// they count as `loading`); [`InstancePool::restart`] says why and when.
    pub restarting: usize,
}

/// Why instances are being replaced, and when the next try is (for `show`: without it, a
/// deployment at `ready: 1` of 2 said nothing of the instance waiting out its backoff).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Restart {
    /// Instances waiting to be replaced or loading their replacement.
    pub instances: usize,
    /// What went wrong last: the replacement's init error, or why the instance was dropped.
    pub last_error: String,
    /// Replacements of this pool that failed in a row.
    pub failed_tries: u64,
    /// When the next replacement starts loading (RFC 3339), if one is waiting.
    pub next_try_at: Option<String>,
}

/// The instances of one deployment.
pub struct InstancePool {
    /// Instances not running a request right now.
    idle: Mutex<Vec<Box<dyn ScoringHook>>>,
    /// One permit per instance in `idle`.
    available: Permits,
    /// Loaded instances, idle or busy.
    ready: AtomicUsize,
    /// Instances whose init is running.
    loading: AtomicUsize,
    /// Instances waiting to finish their request before removal.
    draining: AtomicUsize,
    /// Instances whose init failed and whose place no later load has filled (a replacement
    /// retried again and again counts once): what fails now, so an alert on it clears.
    failed: AtomicUsize,
    /// Instance inits that failed since the pool was made (never goes down).
    failed_inits: AtomicU64,
    /// Moving average of one run's cost in ns, or `UNMEASURED`.
    run_cost_ns: AtomicU64,
    factory: HookFactory,
    /// Where replacement instances are loaded (runs may finish on threads without a runtime).
    runtime: tokio::runtime::Handle,
    /// Long runs waiting for an instance, oldest first.
    pending: RunQueue,
    /// Set (under the `idle` lock) when the deployment version this pool serves is deleted or
    /// replaced: loads not started yet are skipped, and an instance that finishes loading
    /// after it is dropped instead of joining, so a deleted deployment stops costing CPU at
    /// once (before, 8 × create-256-then-delete still ran 2,048 loads).
    closed: AtomicBool,
    /// Every run is queued, whatever its measured cost: set for out-of-process hooks, whose
    /// runs may hang and must always have a deadline that can stop them.
    always_queued: AtomicBool,
    /// Runs carry the request's headers (a scoring script may read them); otherwise a
    /// queued run carries none and copies nothing.
    pass_headers: AtomicBool,
    /// Instances replaced in a row without a successful run since: the backoff of the next
    /// replacement grows with it, so a worker that dies at every request cannot spin.
    restarts_in_row: AtomicU64,
    /// Set for hooks whose in-process runs cannot be stopped (see [`InstancePool::watch_runs`]).
    watch: std::sync::OnceLock<RunWatch>,
    /// Instances whose run is past its deadline and still running (out of service).
    hung: AtomicUsize,
    /// Loads this version may run at once (see [`load_slots`]).
    own_loads: Semaphore,
    /// The hook's workers in init, stopped by [`close`](Self::close).
    init_stop: OnceLock<Arc<InitStop>>,
    /// How long one instance's init may take, for every hook (CONTRACT §9): past it the load
    /// fails with an error saying so and its slot is freed. [`hooks::init_timeout`] (600 s, or
    /// `SWITCHYARD_INIT_TIMEOUT_MS`) plus [`INIT_GRACE`], after the deadline the hooks keep themselves: an
    /// out-of-process worker is killed at it; an in-process init (a native plugin's `init`
    /// that never returns) cannot be stopped from outside, so its thread is left to finish and
    /// whatever it makes then is dropped. Shorter in tests.
    init_deadline: Duration,
    /// Instances being replaced (waiting out the backoff or loading).
    restarting: AtomicUsize,
    /// Instances waiting out the backoff (not loading yet).
    backing_off: AtomicUsize,
    /// The last replacement's error and the next try, while any instance is being replaced.
    restart: Mutex<Option<(String, u64, Option<SystemTime>)>>,
    /// Hooks per instance: Azure's `WORKER_COUNT` (worker processes per instance), 1 unless
    /// a deployment sets it. The pool holds `instance_count` × this many interchangeable
    /// hooks; `add`, `remove`, `ready` and `counts` speak in instances, `workers` in hooks.
    per_instance: AtomicUsize,
}

/// Watches the runs of a pool whose hook runs in process and cannot be stopped (a native
/// plugin's `run` is a plain call): a run that outlives `deadline` takes its instance out of
/// service, since the thread is stuck in it and nothing can take it back.
struct RunWatch {
    deadline: std::time::Duration,
    /// Runs in progress (and some finished since the last scan, dropped then).
    running: Mutex<Vec<Arc<RunClock>>>,
    /// Says what happened, in the deployment's log.
    report: Box<dyn Fn(&str) + Send + Sync>,
    /// The last time an instance was taken out of service: why (for `show`).
    last: Mutex<Option<String>>,
}

/// One watched run.
struct RunClock {
    started: Instant,
    /// `RUNNING`, then `DONE` (the run ended in time) or `HUNG` (the watch took the instance).
    state: std::sync::atomic::AtomicU8,
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const HUNG: u8 = 2;

/// The queue of long runs. Every inline run checks, when it gives its instance back, whether
/// runs are queued; that check reads a count instead of taking the queue's lock, so the inline
/// path (the common case for a fast model, which never queues) does not write a lock's cache
/// line shared by every worker thread on each request.
///
/// Why the lock-free check misses no run: a run is pushed, counted (`SeqCst`), and then a
/// `SeqCst` fence comes before its queuer tries to take an instance ([`InstancePool::kick`]);
/// a check-in adds its permit, then a `SeqCst` fence, then reads the count. With a fence on
/// both sides, either the queuer sees the permit (and takes the instance) or the check-in sees
/// the count (and kicks): never neither.
#[derive(Default)]
struct RunQueue {
    runs: Mutex<VecDeque<QueuedRun>>,
    /// `runs.len()`, written under the lock.
    len: AtomicUsize,
}

impl RunQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<QueuedRun>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, run: QueuedRun) {
        let mut runs = self.lock();
        runs.push_back(run);
        self.len.store(runs.len(), Ordering::SeqCst);
        drop(runs);
        std::sync::atomic::fence(Ordering::SeqCst);
    }

    fn pop(&self) -> Option<QueuedRun> {
        let mut runs = self.lock();
        let run = runs.pop_front();
        self.len.store(runs.len(), Ordering::SeqCst);
        run
    }

    fn take_all(&self) -> Vec<QueuedRun> {
        let mut runs = self.lock();
        self.len.store(0, Ordering::SeqCst);
        runs.drain(..).collect()
    }

    /// Whether runs may be queued, after this thread's permit was added (see the type's
    /// documentation); a stale `true` only costs a look under the lock.
    fn maybe_queued(&self) -> bool {
        std::sync::atomic::fence(Ordering::SeqCst);
        self.len.load(Ordering::Relaxed) != 0
    }
}

/// A long run waiting for an instance.
struct QueuedRun {
    body: Bytes,
    content_type: Option<Box<str>>,
    headers: Headers,
    protocol: Protocol,
    cancel: Arc<Cancellation>,
    reply: tokio::sync::oneshot::Sender<Result<Answer, RunError>>,
    /// Its wait and its run's parent, when traces are on.
    trace: Option<Box<Handoff>>,
}

/// Cancels a run when the request waiting for it goes away before it finishes.
struct CancelOnDrop(Option<Arc<Cancellation>>);

impl CancelOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.cancel();
        }
    }
}

impl InstancePool {
    /// An empty pool that makes instances with `factory`.
    pub fn new(factory: HookFactory, runtime: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            available: Permits::new(0),
            ready: AtomicUsize::new(0),
            loading: AtomicUsize::new(0),
            draining: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            failed_inits: AtomicU64::new(0),
            run_cost_ns: AtomicU64::new(UNMEASURED),
            factory,
            runtime,
            pending: RunQueue::default(),
            closed: AtomicBool::new(false),
            always_queued: AtomicBool::new(false),
            pass_headers: AtomicBool::new(false),
            restarts_in_row: AtomicU64::new(0),
            watch: std::sync::OnceLock::new(),
            hung: AtomicUsize::new(0),
            own_loads: Semaphore::new(load_slot_count()),
            init_stop: OnceLock::new(),
            init_deadline: hooks::init_timeout() + INIT_GRACE,
            restarting: AtomicUsize::new(0),
            backing_off: AtomicUsize::new(0),
            restart: Mutex::new(None),
            per_instance: AtomicUsize::new(1),
        })
    }

    /// As [`new`](Self::new), with another init deadline (tests).
    #[cfg(test)]
    fn with_init_deadline(factory: HookFactory, runtime: tokio::runtime::Handle, deadline: Duration) -> Arc<Self> {
        let mut pool = Self::new(factory, runtime);
        Arc::get_mut(&mut pool).expect("just made").init_deadline = deadline;
        pool
    }

    /// Where the factory registers the workers whose init runs: [`close`](Self::close) kills
    /// them. Set once, right after [`new`](Self::new).
    pub fn stop_inits_on_close(&self, stop: Arc<InitStop>) {
        let _ = self.init_stop.set(stop);
    }

    /// Takes out of service any instance whose run outlives `deadline` (the request's
    /// timeout): for hooks whose runs happen in this process and cannot be stopped. The
    /// instance leaves `ready` (counted as `hung`), a replacement loads (with the backoff of
    /// [`replace`](Self::replace)) and `report` gets a line. A watched pool's runs are always
    /// queued ([`call`](Self::call)), so a run that hangs holds a blocking thread, never a
    /// thread of the event loop. If the run returns after all, its instance is dropped, never
    /// reused.
    pub fn watch_runs(self: &Arc<Self>, deadline: std::time::Duration, report: impl Fn(&str) + Send + Sync + 'static) {
        let watch =
            RunWatch { deadline, running: Mutex::new(Vec::new()), report: Box::new(report), last: Mutex::new(None) };
        if self.watch.set(watch).is_err() {
            return;
        }
        let pool = Arc::downgrade(self);
        let period = (deadline / 4).clamp(std::time::Duration::from_millis(10), std::time::Duration::from_secs(1));
        self.runtime.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { break };
                pool.take_hung_out();
            }
        });
    }

    /// Why instances were taken out of service, while any is (`show`'s `hung_reason`).
    pub fn hung_reason(&self) -> Option<String> {
        if self.hung.load(Ordering::Relaxed) == 0 {
            return None;
        }
        self.watch.get().and_then(|w| w.last.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }

    /// One scan of the watched runs (see [`watch_runs`](Self::watch_runs)).
    fn take_hung_out(self: &Arc<Self>) {
        let Some(watch) = self.watch.get() else { return };
        let mut hung = 0;
        watch.running.lock().unwrap_or_else(|e| e.into_inner()).retain(|run| {
            if run.state.load(Ordering::Acquire) != RUNNING {
                return false;
            }
            let late = run.started.elapsed() > watch.deadline;
            if late && run.state.compare_exchange(RUNNING, HUNG, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                hung += 1;
                return false;
            }
            true
        });
        for _ in 0..hung {
            self.ready.fetch_sub(1, Ordering::AcqRel);
            self.hung.fetch_add(1, Ordering::AcqRel);
            self.queue_every_run();
            let line = format!(
                "an instance's run has not returned after {} ms (request_timeout_ms) and cannot be stopped in process: \
                 the instance is taken out of service and a new one loads in its place; its thread stays blocked \
                 in the plugin (isolation: process would have stopped it)",
                watch.deadline.as_millis()
            );
            (watch.report)(&line);
            *watch.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(line.clone());
            self.schedule_replacement(line);
        }
    }

    /// Queues every run for the blocking threads (see `always_queued`).
    pub fn queue_every_run(&self) {
        self.always_queued.store(true, Ordering::Relaxed);
    }

    /// Hands each run the request's headers (hooks that run user code; see `pass_headers`).
    pub fn pass_headers(&self) {
        self.pass_headers.store(true, Ordering::Relaxed);
    }

    /// Whether runs get the request's headers: callers that must copy them (a mirror copy)
    /// copy them only then.
    pub fn wants_headers(&self) -> bool {
        self.pass_headers.load(Ordering::Relaxed)
    }

    /// Stops the pool from growing: loads that have not started are skipped, and instances
    /// still loading are dropped when they finish. Existing instances keep serving until
    /// [`remove`](Self::remove)d, so nothing in flight is dropped.
    ///
    /// Workers still in init are killed (a deleted version's slow `init()` must not run on).
    pub fn close(&self) {
        {
            let _idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            self.closed.store(true, Ordering::Release);
        }
        if let Some(stop) = self.init_stop.get() {
            stop.stop();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Makes each instance `k` hooks (worker processes), before any is loaded.
    pub fn set_workers_per_instance(&self, k: usize) {
        self.per_instance.store(k.max(1), Ordering::Relaxed);
    }

    /// Hooks (worker processes) per instance.
    pub fn workers_per_instance(&self) -> usize {
        self.per_instance.load(Ordering::Relaxed)
    }

    /// Loaded instances (idle or busy): an instance counts once any of its workers is loaded,
    /// so this is 0 only when no hook can serve.
    pub fn ready(&self) -> usize {
        self.ready_workers().div_ceil(self.workers_per_instance())
    }

    /// Loaded hooks (worker processes), idle or busy.
    fn ready_workers(&self) -> usize {
        self.ready.load(Ordering::Acquire)
    }

    /// Long runs waiting for an instance.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.pending.lock().len()
    }

    /// Instance counts by state. With several workers per instance, a worker being replaced
    /// does not count as a loading instance (ready + loading stays what is asked for);
    /// [`workers`](Self::workers) has the counts per worker.
    pub fn counts(&self) -> InstanceCounts {
        let w = self.workers();
        let k = self.workers_per_instance();
        if k == 1 {
            return w;
        }
        let ready = w.ready.div_ceil(k);
        InstanceCounts {
            ready,
            loading: (w.ready + w.loading).div_ceil(k) - ready,
            draining: w.draining.div_ceil(k),
            failed: w.failed.div_ceil(k),
            hung: w.hung.div_ceil(k),
            restarting: w.restarting.div_ceil(k),
        }
    }

    /// Hook (worker process) counts by state.
    pub fn workers(&self) -> InstanceCounts {
        InstanceCounts {
            ready: self.ready_workers(),
            loading: self.loading.load(Ordering::Relaxed),
            draining: self.draining.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            hung: self.hung.load(Ordering::Relaxed),
            restarting: self.backing_off.load(Ordering::Relaxed),
        }
    }

    /// Instance inits that failed since the pool was made (`failed` counts only those that
    /// fail now).
    pub fn failed_inits_total(&self) -> u64 {
        self.failed_inits.load(Ordering::Relaxed)
    }

    /// Forgets the failed instances: the deployment no longer asks for them (a failed
    /// scale-up whose count went back to what serves, then a change that succeeded).
    pub fn forget_failed(&self) {
        self.failed.store(0, Ordering::Relaxed);
    }

    /// Takes `n` off `failed` (never below zero).
    fn unfail(&self, n: usize) {
        let _ = self.failed.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |f| Some(f.saturating_sub(n)));
    }

    /// Why and when instances are being replaced, while any is.
    pub fn restart(&self) -> Option<Restart> {
        let instances = self.restarting.load(Ordering::Relaxed);
        let guard = self.restart.lock().unwrap_or_else(|e| e.into_inner());
        let (error, failed_tries, next) = guard.as_ref().filter(|_| instances > 0)?;
        Some(Restart {
            instances,
            last_error: error.clone(),
            failed_tries: *failed_tries,
            next_try_at: next.map(|t| humantime::format_rfc3339_millis(t).to_string()),
        })
    }

    /// Loads `n` more instances (each [`workers_per_instance`](Self::workers_per_instance)
    /// hooks), at most [`load_slots`] at a time across the process, off the async threads.
    /// Each hook joins the pool as soon as it is ready. Returns the first init error, if any
    /// (the hooks that loaded stay). After [`close`](Self::close), the loads not started yet
    /// are skipped and the call answers [`LoadError::Cancelled`].
    pub async fn add(self: &Arc<Self>, n: usize) -> Result<(), LoadError> {
        self.add_workers(n * self.workers_per_instance()).await
    }

    /// Loads `n` more hooks (worker processes).
    async fn add_workers(self: &Arc<Self>, n: usize) -> Result<(), LoadError> {
        // Instances that failed before this call: those this call loads take their places.
        let failed_before = self.failed.load(Ordering::Relaxed);
        let mut loaded = 0;
        self.loading.fetch_add(n, Ordering::Relaxed);
        let mut loads = tokio::task::JoinSet::new();
        for _ in 0..n {
            loads.spawn_on(Arc::clone(self).load_one(), &self.runtime);
        }
        let mut first_error = None;
        while let Some(outcome) = loads.join_next().await {
            let outcome = outcome.unwrap_or_else(|_| Err(LoadError::Init("instance init task failed".into())));
            if outcome.is_ok() {
                loaded += 1;
            }
            if let Err(e) = outcome {
                // A real init error says more than the cancellations that follow it.
                if first_error.as_ref().is_none_or(|f| *f == LoadError::Cancelled) {
                    first_error = Some(e);
                }
            }
        }
        self.unfail(loaded.min(failed_before));
        first_error.map_or(Ok(()), Err)
    }

    /// Loads one instance (counted in `loading` by the caller) once this version may run
    /// another load and a process-wide load slot is free; the slot goes back after
    /// [`SLOW_LOAD`] even if the init goes on (see [`load_slots`]), the version's own share
    /// when the load ends. The init runs on a loader thread; the wait for it here ends at the
    /// init deadline whatever the hook does.
    async fn load_one(self: Arc<Self>) -> Result<(), LoadError> {
        let outcome = self.load_one_counted().await;
        self.loading.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = &outcome {
            if !matches!(e, LoadError::Cancelled) {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.failed_inits.fetch_add(1, Ordering::Relaxed);
            }
        }
        outcome
    }

    async fn load_one_counted(self: &Arc<Self>) -> Result<(), LoadError> {
        let own = self.own_loads.acquire().await;
        let slot = if own.is_ok() { load_slots().acquire_owned().await.ok() } else { None };
        if self.is_closed() || slot.is_none() {
            return Err(LoadError::Cancelled);
        }
        let (tx, mut rx) = tokio::sync::oneshot::channel::<Result<Box<dyn ScoringHook>, LoadError>>();
        let pool = Arc::clone(self);
        let load = move || {
            let made = if pool.is_closed() {
                Err(LoadError::Cancelled)
            } else {
                catch_unwind(AssertUnwindSafe(|| (pool.factory)()))
                    .unwrap_or_else(|_| Err(InitError("the scoring hook panicked during init".into())))
                    .map_err(|e| LoadError::Init(e.0))
            };
            // Nobody waits any more (the init deadline passed): what was made is dropped here.
            if let Err(Ok(hook)) = tx.send(made) {
                drop(catch_unwind(AssertUnwindSafe(|| drop(hook))));
            }
        };
        // Loading is CPU work nobody's request waits for: below live work in priority.
        if let Err(e) = crate::threads::spawn_loader(load) {
            return Err(LoadError::Thread(e.to_string()));
        }
        let started = tokio::time::Instant::now();
        let made = match tokio::time::timeout(SLOW_LOAD.min(self.init_deadline), &mut rx).await {
            Ok(made) => made,
            Err(_) => {
                drop(slot); // a slow init waits; it does not hold other deployments' loads
                let left = self.init_deadline.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, &mut rx).await {
                    Ok(made) => made,
                    Err(_) => {
                        return Err(LoadError::Init(format!(
                            "init did not finish within {} s (the init deadline); the instance was given up",
                            self.init_deadline.as_secs_f64()
                        )))
                    }
                }
            }
        };
        let made = made.unwrap_or_else(|_| Err(LoadError::Init("instance init task failed".into())));
        match made {
            Ok(hook) => self.join(hook).map_err(|hook| {
                drop_off_thread(hook);
                LoadError::Cancelled
            }),
            // A worker killed because its version was deleted or replaced fails its init:
            // that is the cancellation, not a failure of the deployment.
            Err(_) if self.is_closed() => Err(LoadError::Cancelled),
            Err(e) => Err(e),
        }
    }

    /// A freshly loaded instance joins the pool, unless the pool was closed meanwhile (then
    /// the instance is handed back to be dropped).
    fn join(self: &Arc<Self>, mut hook: Box<dyn ScoringHook>) -> Result<(), Box<dyn ScoringHook>> {
        let pool = Arc::downgrade(self);
        hook.notify_stop(Arc::new(move || {
            if let Some(pool) = pool.upgrade() {
                pool.replace_broken_idle();
            }
        }));
        {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if self.is_closed() {
                return Err(hook);
            }
            self.ready.fetch_add(1, Ordering::AcqRel);
            idle.push(hook);
            self.available.add_permits(1);
        }
        if !self.pending.lock().is_empty() {
            self.kick();
        }
        Ok(())
    }

    /// Removes up to `n` instances, each once it has finished its current request: nothing
    /// in flight is dropped. Requests already waiting are served first (the semaphore serves waiters before it).
    pub async fn remove(self: &Arc<Self>, n: usize) {
        for _ in 0..n * self.workers_per_instance() {
            if self.ready_workers() == 0 {
                break;
            }
            self.draining.fetch_add(1, Ordering::Relaxed);
            let Ok(permit) = self.available.acquire().await else {
                break;
            };
            permit.forget();
            let hook = self.pop_idle();
            self.ready.fetch_sub(1, Ordering::AcqRel);
            self.draining.fetch_sub(1, Ordering::Relaxed);
            // A session's teardown frees model memory: keep it off the async threads.
            if let Some(hook) = hook {
                drop_off_thread(hook);
            }
        }
        if self.is_closed() && self.ready() == 0 {
            self.turn_away_waiters();
        }
    }

    /// A closed pool whose last instance is gone will never serve again: requests that came
    /// for it after its drain began (routed on a table from before the deployment was deleted
    /// or replaced) are answered `NoInstance` now, so the front door can route them again,
    /// instead of waiting on a semaphore that no instance will ever release until their
    /// deadline (a 408 five seconds later, seen under load during a rollout's delete).
    fn turn_away_waiters(self: &Arc<Self>) {
        self.available.close();
        self.kick();
    }

    /// Scores one request on the next free instance, waiting for one if all are busy.
    pub async fn run(
        self: &Arc<Self>,
        body: Bytes,
        content_type: Option<&str>,
        headers: &Headers,
    ) -> Result<HookResponse, RunError> {
        let request = Request { body: &body, content_type, headers, protocol: Protocol::Score, request_id: "" };
        self.call(request).await.map(|a| a.response)
    }

    /// As [`run`](Self::run), for a request of the given protocol (`/score` or v2 `infer`).
    pub async fn call(self: &Arc<Self>, request: Request<'_>) -> Result<Answer, RunError> {
        if self.ready() == 0 {
            return Err(RunError::NoInstance);
        }
        // [wt-fixnative D1] A watched pool (an in-process native plugin, see `watch_runs`)
        // never runs inline, however short its runs: a run that hangs there held the I/O
        // thread for good (no 408, every connection on that thread stalled, SIGTERM never
        // finished). Queued, a hang costs one blocking thread and one instance.
        if self.watch.get().is_some() {
            return self.run_queued(request).await;
        }
        if self.always_queued.load(Ordering::Relaxed) {
            return self.run_on_task(request).await;
        }
        if self.run_cost_ns.load(Ordering::Relaxed) > INLINE_LIMIT_NS {
            return self.run_queued(request).await;
        }
        let queue = stage!("queue");
        let hook = self.take().await?;
        drop(queue);
        let _run = stage!("run");
        self.execute(hook, self.hook_request(&request, None), request.protocol)
    }

    /// Takes an idle instance, waiting for one when all are busy (in arrival order, within [`super::permits::SKEW`]). A permit of
    /// `available` stands for one instance in `idle`; it is forgotten here and added back when
    /// the instance returns. An instance that stopped serving while it waited in `idle` (its
    /// worker died under a run it had lent it for, see [`hooks::Started::lend`]) is replaced, and
    /// the next one taken.
    async fn take(self: &Arc<Self>) -> Result<Box<dyn ScoringHook>, RunError> {
        loop {
            let permit = match self.available.try_acquire() {
                Ok(p) => p,
                // A closed pool being drained (its deployment deleted or replaced) will free no
                // instance for a request that comes now: the drain takes each one as it frees.
                // Waiting here raced the drain for the permit (the semaphore's order holds only
                // within `permits::SKEW`), and a request that won held the last instance the
                // drain was waiting for. Answered at once, the front door routes it again.
                Err(TryAcquireError::NoPermits) if self.is_closed() && self.draining.load(Ordering::Relaxed) > 0 => {
                    return Err(RunError::NoInstance)
                }
                Err(TryAcquireError::NoPermits) => self.available.acquire().await.map_err(|_| RunError::NoInstance)?,
                Err(TryAcquireError::Closed) => return Err(RunError::NoInstance),
            };
            permit.forget();
            match self.pop_idle() {
                Some(hook) if self.lends() && !hook.is_healthy() => self.replace(hook),
                Some(hook) => return Ok(hook),
                None => return Err(RunError::NoInstance),
            }
        }
    }

    /// Whether this pool's instances may be lent while they run ([`hooks::Started::lend`]):
    /// only out-of-process hooks' runs are awaited apart from their instance. The others
    /// (an ONNX session) never wait in `idle` with a run in flight or a dead worker, and their
    /// take skips the checks for those.
    fn lends(&self) -> bool {
        self.always_queued.load(Ordering::Relaxed)
    }

    /// Takes an idle instance if one is free now; `Busy` when none is.
    fn try_take(self: &Arc<Self>) -> Result<Box<dyn ScoringHook>, RunError> {
        loop {
            let Ok(permit) = self.available.try_acquire() else {
                return Err(RunError::Busy);
            };
            permit.forget();
            match self.pop_idle() {
                Some(hook) if self.lends() && !hook.is_healthy() => self.replace(hook),
                Some(hook) => return Ok(hook),
                None => return Err(RunError::NoInstance),
            }
        }
    }

    /// The instance a forgotten permit stands for: the one with the fewest runs in flight
    /// (an instance lent back while its worker runs requests takes another only when every
    /// other is as busy). `None` is unreachable while the invariant holds; callers answer 503
    /// rather than panic.
    fn pop_idle(&self) -> Option<Box<dyn ScoringHook>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let last = idle.len().checked_sub(1)?;
        if !self.lends() || idle[last].in_flight() == 0 {
            return idle.pop();
        }
        let idlest = (0..idle.len()).rev().min_by_key(|&i| idle[i].in_flight()).unwrap_or(last);
        Some(idle.swap_remove(idlest))
    }

    /// The headers a run gets: the request's, or none when the hook takes none.
    fn headers_for_run<'h>(&self, headers: &'h Headers) -> &'h Headers {
        if self.wants_headers() {
            headers
        } else {
            Headers::none()
        }
    }

    /// What the hook gets of `request`.
    fn hook_request<'a>(&self, request: &Request<'a>, cancel: Option<&'a Cancellation>) -> HookRequest<'a> {
        HookRequest {
            body: request.body,
            content_type: request.content_type,
            headers: self.headers_for_run(request.headers),
            cancel,
        }
    }

    /// An out-of-process run, awaited on the request's own task when the hook can
    /// ([`ScoringHook::start_run`]): the instance is taken here, the request goes down its
    /// pipe, and the answer wakes this task, with no blocking thread in between (measured by
    /// `benches/python_hook.rs` against the hand-off to a blocking thread). While the run is
    /// in the worker, the instance is back in the pool when the hook lends it, so the next
    /// request waits in the worker's pipe. Otherwise (a body too large to write without
    /// waiting) the run is queued as a long run, as is a v2 `infer`, whose decoding is the
    /// hook's own [`ScoringHook::infer`].
    async fn run_on_task(self: &Arc<Self>, request: Request<'_>) -> Result<Answer, RunError> {
        if request.protocol != Protocol::Score {
            return self.run_queued(request).await;
        }
        // A run that never began (its worker stopped under the run before it) goes to another
        // instance, as often as that happens until the request's own deadline (the caller's
        // timeout) ends it: another client's run killed at its deadline must not fail this
        // one as a model error. `take` waits for an instance (replacements come after a
        // backoff), so this does not spin.
        loop {
            let queue = stage!("queue");
            let hook = self.take().await?;
            drop(queue);
            // The worker's round trip: the request down its pipe, the answer back.
            let run_span = stage!("run");
            let mut out = CheckedOut { pool: self, hook: Some(hook) };
            let run = self.hook_request(&request, None);
            let Some(started) = out.hook.as_mut().and_then(|h| h.start_run(run)) else {
                drop(out); // checked back in
                drop(run_span); // the queued run has its own wait and run
                return self.run_queued(request).await;
            };
            let answer = match started.turn.await {
                Turn::Begun(answer) => answer,
                Turn::NotStarted => continue, // `out` goes back, or is replaced, as it drops
            };
            if started.lend {
                drop(out); // back in the pool while the worker runs this request
            }
            // A worker that stops under this run while its instance is lent tells the pool
            // (`notify_stop`, set as the instance joined), which replaces it then; a run that
            // waited behind others in that worker never began, and goes to another instance.
            let Some(outcome) = answer.await else { continue };
            if outcome.is_ok() && self.restarts_in_row.load(Ordering::Relaxed) != 0 {
                self.restarts_in_row.store(0, Ordering::Relaxed);
            }
            return outcome.map(|response| Answer { response, header_length: None }).map_err(RunError::from);
        }
    }

    /// A long run: queued for the blocking threads. A blocking thread that holds an instance
    /// keeps taking queued runs until the queue is empty, so under load an instance goes from
    /// one run to the next without a round trip through the async worker (measured on model-2
    /// with 64-row requests, that round trip left 13% of the CPU idle between runs). Dropping
    /// this future (timeout, client gone) cancels the run: skipped if not started, stopped
    /// through ONNX Runtime's terminate flag if running.
    async fn run_queued(self: &Arc<Self>, request: Request<'_>) -> Result<Answer, RunError> {
        let cancel = Arc::new(Cancellation::default());
        let guard = CancelOnDrop(Some(Arc::clone(&cancel)));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (trace, _waiting) = Handoff::begin().unzip();
        self.pending.push(QueuedRun {
            body: request.body.clone(),
            content_type: request.content_type.map(Into::into),
            headers: self.headers_for_run(request.headers).clone(),
            protocol: request.protocol,
            cancel,
            reply: tx,
            trace,
        });
        self.kick();
        let outcome = rx.await.unwrap_or_else(|_| Err(RunError::Failed("the scoring task was lost".to_string())));
        guard.disarm();
        outcome
    }

    /// Starts a runner on each idle instance while runs are queued.
    fn kick(self: &Arc<Self>) {
        if self.available.is_closed() {
            // No instance will come (see `turn_away_waiters`): a run queued now, or before the
            // last instance left, is answered at once. Checked here, after the run was queued,
            // so a run that raced the close is never left behind.
            let stranded = self.pending.take_all();
            for run in stranded {
                let _ = run.reply.send(Err(RunError::NoInstance));
            }
            return;
        }
        while !self.pending.lock().is_empty() {
            let Ok(hook) = self.try_take() else { return };
            let pool = Arc::clone(self);
            let runner = move || pool.runner(hook);
            // Live long runs use the async worker's blocking pool (normal priority); a kick
            // from a thread without a runtime (a shadow thread's check-in) gets a thread.
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(runner)),
                Err(_) => drop(std::thread::Builder::new().name("switchyard-run".into()).spawn(runner)),
            }
        }
    }

    /// Runs queued runs on `hook` until the queue is empty (or an instance is being removed),
    /// then checks the instance back in.
    fn runner(self: &Arc<Self>, mut hook: Box<dyn ScoringHook>) {
        // An instance lent while its worker runs a request ([`hooks::Started::lend`]) takes
        // a queued run once that request is answered; if its worker stopped meanwhile, it is
        // replaced and the queued runs stay queued for the other instances (and for the
        // replacement, which kicks the queue as it joins).
        hook.settle();
        if !hook.is_healthy() {
            return self.replace(hook);
        }
        loop {
            let next = self.pending.pop();
            let Some(run) = next else { break };
            if run.cancel.is_cancelled() || run.reply.is_closed() {
                continue;
            }
            let span = run.trace.map(|t| (*t).run());
            let hook_run = HookRequest {
                body: &run.body,
                content_type: run.content_type.as_deref(),
                headers: &run.headers,
                cancel: Some(&run.cancel),
            };
            let (outcome, kept) = self.execute_keep(hook, hook_run, run.protocol);
            drop(span); // the run ends before its answer wakes the request
            let _ = run.reply.send(outcome);
            match kept {
                Some(h) => hook = h,
                None => return, // the hook panicked; a replacement is loading
            }
            // A scale-down takes this instance, unless it is the last one standing: then the
            // queue is served first (a deleted deployment finishes its in-flight work).
            let draining = self.draining.load(Ordering::Relaxed);
            if draining > 0 && self.ready_workers() > draining {
                break;
            }
        }
        self.checkin(hook);
    }

    /// Runs on the calling thread if an instance is idle right now; never waits. This is how
    /// mirror copies run, on low-priority threads: a copy never holds an instance while it
    /// waits for CPU and never queues ahead of live requests.
    pub fn run_here_if_idle(self: &Arc<Self>, request: Request<'_>) -> Result<HookResponse, RunError> {
        if self.ready() == 0 {
            return Err(RunError::NoInstance);
        }
        let hook = self.try_take_free()?;
        self.execute(hook, self.hook_request(&request, None), request.protocol).map(|a| a.response)
    }

    /// Replaces the instances in `idle` that can no longer serve: an instance lent back
    /// while its worker ran a request ([`hooks::Started::lend`]) waits there when that worker
    /// dies, and would count as ready until a request took it.
    fn replace_broken_idle(self: &Arc<Self>) {
        loop {
            // A permit stands for an instance in `idle`; none left means every one is being
            // taken, and `take` replaces a broken one it finds.
            let Ok(permit) = self.available.try_acquire() else { return };
            let broken = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.iter().position(|hook| !hook.is_healthy()).map(|at| idle.swap_remove(at))
            };
            let Some(broken) = broken else {
                return self.permit_back(permit);
            };
            permit.forget();
            self.replace(broken);
        }
    }

    /// Gives back a permit taken only to look: a queued run that found no permit meanwhile
    /// (its kick answered `Busy`) is kicked again, as a check-in would.
    fn permit_back(self: &Arc<Self>, permit: Permit<'_>) {
        drop(permit);
        if self.pending.maybe_queued() {
            self.kick();
        }
    }

    /// Takes an instance with no run in flight, if one is idle now; `Busy` otherwise. An
    /// instance lent back while its worker runs a live request ([`hooks::Started::lend`]) is
    /// not idle for a mirror copy: the copy would wait for that request and then hold the
    /// instance while live requests queue behind it.
    fn try_take_free(self: &Arc<Self>) -> Result<Box<dyn ScoringHook>, RunError> {
        loop {
            let Ok(permit) = self.available.try_acquire() else {
                return Err(RunError::Busy);
            };
            let hook = {
                let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
                idle.iter().rposition(|hook| hook.in_flight() == 0).map(|free| idle.swap_remove(free))
            };
            let Some(hook) = hook else {
                self.permit_back(permit);
                return Err(RunError::Busy);
            };
            permit.forget();
            if hook.is_healthy() {
                return Ok(hook);
            }
            self.replace(hook);
        }
    }

    /// Runs the hook, measures it, and puts the instance back (or replaces it after a panic).
    fn execute(
        self: &Arc<Self>,
        hook: Box<dyn ScoringHook>,
        run: HookRequest<'_>,
        protocol: Protocol,
    ) -> Result<Answer, RunError> {
        let (outcome, kept) = self.execute_keep(hook, run, protocol);
        if let Some(hook) = kept {
            self.checkin(hook);
        }
        outcome
    }

    /// Runs the hook and measures it; gives the instance back, or `None` after a panic (the
    /// instance is dropped and a replacement loads).
    fn execute_keep(
        self: &Arc<Self>,
        mut hook: Box<dyn ScoringHook>,
        run: HookRequest<'_>,
        protocol: Protocol,
    ) -> (Result<Answer, RunError>, Option<Box<dyn ScoringHook>>) {
        let start = Instant::now();
        let clock = self.watch.get().map(|watch| {
            let clock = Arc::new(RunClock { started: start, state: std::sync::atomic::AtomicU8::new(RUNNING) });
            watch.running.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::clone(&clock));
            clock
        });
        let outcome = catch_unwind(AssertUnwindSafe(|| hooks::call(hook.as_mut(), run, protocol)));
        self.record_cost(start.elapsed().as_nanos() as u64);
        if let Some(clock) = clock {
            if clock.state.compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire).is_err() {
                // The watch took this instance out of service while it ran (and a replacement
                // is loading): it is dropped, whatever the run came to.
                self.hung.fetch_sub(1, Ordering::AcqRel);
                if let Some(watch) = self.watch.get() {
                    (watch.report)(&format!(
                        "a run taken out of service returned after {} ms; its instance is dropped",
                        start.elapsed().as_millis()
                    ));
                }
                drop(catch_unwind(AssertUnwindSafe(|| drop(hook))));
                let deadline = self.watch.get().map_or(0, |w| w.deadline.as_millis());
                return (
                    Err(RunError::Failed(format!(
                        "the run took longer than {deadline} ms and could not be stopped; its instance was taken out of service"
                    ))),
                    None,
                );
            }
        }
        match outcome {
            Ok(result) if hook.is_healthy() => {
                if result.is_ok() && self.restarts_in_row.load(Ordering::Relaxed) != 0 {
                    self.restarts_in_row.store(0, Ordering::Relaxed);
                }
                (result.map_err(RunError::from), Some(hook))
            }
            Ok(result) => {
                // The instance cannot serve again (its worker process died or hung): the
                // run's own error goes back, and a fresh instance replaces it.
                self.replace(hook);
                (result.map_err(RunError::from), None)
            }
            Err(panic) => {
                // The instance's state is unknown after a panic: drop it and load a fresh one.
                self.replace(hook);
                (Err(RunError::Failed(format!("the scoring hook panicked: {}", panic_message(&panic)))), None)
            }
        }
    }

    /// Drops a broken instance and loads a replacement, after a backoff that doubles with
    /// each replacement in a row (0, 0.1, 0.2, ... up to 10 s) until a run succeeds again. A
    /// replacement whose init fails is tried again on the same backoff until one loads or the
    /// version is closed (before, one failed init left the deployment at 0 ready for good).
    /// While it waits, [`restart`](Self::restart) says why and when the next try is.
    fn replace(self: &Arc<Self>, hook: Box<dyn ScoringHook>) {
        self.ready.fetch_sub(1, Ordering::AcqRel);
        // Dropping an out-of-process instance reaps its process: off the caller's thread,
        // which may be an async worker.
        drop_off_thread(hook);
        self.schedule_replacement(
            "the instance stopped serving (its worker died, hung or panicked; see the log)".to_string(),
        );
    }

    /// Loads one instance in place of one that left (see [`replace`](Self::replace)): after the
    /// backoff, again and again until one loads or the version is closed; `why` is what
    /// [`restart`](Self::restart) says until a replacement's init fails with something else.
    fn schedule_replacement(self: &Arc<Self>, mut why: String) {
        self.restarting.fetch_add(1, Ordering::Relaxed);
        let pool = Arc::clone(self);
        self.runtime.spawn(async move {
            // This instance counts once in `failed` however many of its tries fail.
            let mut failed_once = false;
            loop {
                let n = pool.restarts_in_row.fetch_add(1, Ordering::Relaxed);
                let backoff = Duration::from_millis(if n == 0 { 0 } else { (100u64 << (n - 1).min(7)).min(10_000) });
                pool.backing_off.fetch_add(1, Ordering::Relaxed);
                pool.note_restart(&why, Some(SystemTime::now() + backoff));
                tokio::time::sleep(backoff).await;
                pool.backing_off.fetch_sub(1, Ordering::Relaxed);
                if pool.is_closed() {
                    break;
                }
                pool.note_restart(&why, None);
                match pool.add_workers(1).await {
                    Ok(()) | Err(LoadError::Cancelled) => break,
                    Err(e) => {
                        if failed_once {
                            pool.unfail(1);
                        }
                        failed_once = true;
                        why = format!("the replacement's init failed: {e}");
                        tracing::warn!(instance_error = %e, "a replacement instance failed to load; retrying with backoff");
                    }
                }
            }
            if pool.restarting.fetch_sub(1, Ordering::Relaxed) == 1 {
                *pool.restart.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        });
    }

    /// Records the last replacement error and the next try (`None`: loading now).
    fn note_restart(&self, why: &str, next: Option<SystemTime>) {
        let tries = self.restarts_in_row.load(Ordering::Relaxed).saturating_sub(1);
        *self.restart.lock().unwrap_or_else(|e| e.into_inner()) = Some((why.to_string(), tries, next));
    }

    /// Puts an instance back; if long runs are queued, an idle instance starts on them.
    fn checkin(self: &Arc<Self>, hook: Box<dyn ScoringHook>) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(hook);
        self.available.add_permits(1);
        if self.pending.maybe_queued() {
            self.kick();
        }
    }

    fn record_cost(&self, ns: u64) {
        let old = self.run_cost_ns.load(Ordering::Relaxed);
        let new = if old == UNMEASURED { ns } else { (old.saturating_mul(7).saturating_add(ns)) / 8 };
        self.run_cost_ns.store(new, Ordering::Relaxed);
    }
}

/// An instance held for one batched run ([`super::batch`]). Dropping it unused gives the
/// instance back.
pub(crate) struct Lease {
    pool: Arc<InstancePool>,
    hook: Option<Box<dyn ScoringHook>>,
}

impl InstancePool {
    /// Waits for an idle instance (in arrival order, as every run's `take`) and holds it for a
    /// batch: a scale-down or a delete waits for it as for any busy instance. A pool with no
    /// ready instance, or closed and draining, answers `NoInstance` at once.
    pub(crate) async fn lease(self: &Arc<Self>) -> Result<Lease, RunError> {
        if self.ready() == 0 {
            return Err(RunError::NoInstance);
        }
        let hook = self.take().await?;
        Ok(Lease { pool: Arc::clone(self), hook: Some(hook) })
    }
}

impl Lease {
    /// Runs `batch` on the held instance (blocking: call it on a blocking thread) and gives
    /// the instance back; one answer per request, in order. A panic drops the instance (a
    /// replacement loads, as after any panicking run) and fails the batch's requests alone.
    pub(crate) fn run_batch(mut self, batch: Vec<Prepared>, cancel: &Cancellation) -> Vec<Result<Answer, RunError>> {
        let n = batch.len();
        let Some(mut hook) = self.hook.take() else {
            return vec![Err(RunError::NoInstance); n];
        };
        let start = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| hook.run_batch(batch, Some(cancel))));
        self.pool.record_cost(start.elapsed().as_nanos() as u64);
        match outcome {
            Ok(answers) => {
                // As after a lone run: a success ends a run of replacements' backoff.
                if answers.iter().any(Result::is_ok) && self.pool.restarts_in_row.load(Ordering::Relaxed) != 0 {
                    self.pool.restarts_in_row.store(0, Ordering::Relaxed);
                }
                if hook.is_healthy() {
                    self.pool.checkin(hook);
                } else {
                    self.pool.replace(hook);
                }
                let mut answers: Vec<Result<Answer, RunError>> =
                    answers.into_iter().take(n).map(|a| a.map_err(RunError::from)).collect();
                answers.resize_with(n, || Err(RunError::Failed("the hook gave no answer for this request".into())));
                answers
            }
            Err(panic) => {
                self.pool.replace(hook);
                vec![Err(RunError::Failed(format!("the scoring hook panicked: {}", panic_message(&panic)))); n]
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(hook) = self.hook.take() {
            self.pool.checkin(hook);
        }
    }
}

/// An instance taken for a run awaited on a task. However the run ends (answered, or its
/// future dropped at the deadline), dropping this gives the instance back, or replaces it
/// when it can no longer serve.
struct CheckedOut<'p> {
    pool: &'p Arc<InstancePool>,
    hook: Option<Box<dyn ScoringHook>>,
}

impl Drop for CheckedOut<'_> {
    fn drop(&mut self) {
        if let Some(hook) = self.hook.take() {
            if hook.is_healthy() {
                self.pool.checkin(hook);
            } else {
                self.pool.replace(hook);
            }
        }
    }
}

/// Drops an instance on a loader thread: dropping an out-of-process instance reaps its
/// process, and a session's teardown frees model memory, neither on an async thread.
fn drop_off_thread(hook: Box<dyn ScoringHook>) {
    let dropped = crate::threads::spawn_loader(move || drop(catch_unwind(AssertUnwindSafe(|| drop(hook)))));
    if let Err(e) = dropped {
        tracing::warn!("cannot start a thread to drop an instance: {e}");
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hook that answers its body back, or panics on the body `panic`.
    struct Echo;

    impl ScoringHook for Echo {
        fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
            if request.body == b"panic" {
                panic!("asked to panic");
            }
            Ok(HookResponse::json(request.body.to_vec()))
        }
    }

    fn pool() -> Arc<InstancePool> {
        InstancePool::new(Arc::new(|| Ok(Box::new(Echo) as Box<dyn ScoringHook>)), tokio::runtime::Handle::current())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_run_is_a_model_error_and_the_instance_is_replaced() {
        let p = pool();
        p.add(1).await.unwrap();
        let err = p.run(Bytes::from_static(b"panic"), None, Headers::none()).await.unwrap_err();
        assert_eq!(err, RunError::Failed("the scoring hook panicked: asked to panic".into()));
        eventually("a fresh instance replaced the one that panicked", || p.ready() == 1).await;
        let ok = p.run(Bytes::from_static(b"[1]"), None, Headers::none()).await.unwrap();
        assert_eq!(&ok.body[..], b"[1]");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn scale_down_waits_for_busy_instances_and_drops_nothing() {
        let p = pool();
        p.add(3).await.unwrap();
        assert_eq!(p.counts().ready, 3);
        let runs: Vec<_> = (0..50)
            .map(|i| {
                let p = Arc::clone(&p);
                tokio::spawn(async move { p.run(Bytes::from(format!("[{i}]")), None, Headers::none()).await })
            })
            .collect();
        p.remove(2).await;
        for r in runs {
            assert!(r.await.unwrap().is_ok());
        }
        assert_eq!(p.counts(), InstanceCounts { ready: 1, loading: 0, draining: 0, failed: 0, hung: 0, restarting: 0 });
    }

    /// Waits (bounded) until `condition` holds: the explicit wait for a background effect.
    async fn eventually(what: &str, condition: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition() {
            assert!(std::time::Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// Lets runs through only while open, so a test decides when a run may finish.
    #[derive(Default)]
    struct Gate {
        open: std::sync::Mutex<bool>,
        changed: std::sync::Condvar,
    }

    impl Gate {
        fn set(&self, open: bool) {
            *self.open.lock().unwrap() = open;
            self.changed.notify_all();
        }
        fn pass(&self) {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.changed.wait(open).unwrap();
            }
        }
    }

    /// A hook whose runs take 1 ms (always on the queued, long-run path) and wait at the gate.
    struct Slow(Arc<AtomicUsize>, Arc<Gate>);

    impl ScoringHook for Slow {
        fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
            self.1.pass();
            std::thread::sleep(std::time::Duration::from_millis(1));
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(HookResponse::json(request.body.to_vec()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_runs_all_finish_through_a_scale_down_and_cancelled_ones_are_skipped() {
        let ran = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Gate::default());
        gate.set(true);
        let (counter, g) = (Arc::clone(&ran), Arc::clone(&gate));
        let p = InstancePool::new(
            Arc::new(move || Ok(Box::new(Slow(Arc::clone(&counter), Arc::clone(&g))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        p.add(3).await.unwrap();
        let runs: Vec<_> = (0..60)
            .map(|i| {
                let p = Arc::clone(&p);
                tokio::spawn(async move { p.run(Bytes::from(format!("[{i}]")), None, Headers::none()).await })
            })
            .collect();
        p.remove(2).await;
        for (i, r) in runs.into_iter().enumerate() {
            assert_eq!(&r.await.unwrap().unwrap().body[..], format!("[{i}]").as_bytes());
        }
        assert_eq!(p.counts().ready, 1);
        // A queued run whose caller gave up is never run. With the gate shut, the one instance
        // holds the first of 5 runs and the other 4 wait in the queue.
        gate.set(false);
        let before = ran.load(Ordering::SeqCst);
        let busy: Vec<_> = (0..5)
            .map(|_| {
                let p = Arc::clone(&p);
                tokio::spawn(async move { p.run(Bytes::from_static(b"[1]"), None, Headers::none()).await })
            })
            .collect();
        eventually("4 runs queued behind the one running", || p.queued() == 4).await;
        let no_headers = Headers::default();
        let gave_up = tokio::time::timeout(
            std::time::Duration::from_millis(10),
            p.run(Bytes::from_static(b"[2]"), None, &no_headers),
        );
        assert!(gave_up.await.is_err(), "timed out while queued");
        assert_eq!(p.queued(), 5, "the abandoned run is still queued, behind the others");
        gate.set(true);
        for b in busy {
            b.await.unwrap().unwrap();
        }
        eventually("the queue is drained", || p.queued() == 0).await;
        assert_eq!(ran.load(Ordering::SeqCst) - before, 5, "the abandoned run was skipped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deleting_cancels_loads_not_started_and_drops_instances_loaded_after() {
        let gate = Arc::new(Gate::default());
        let g = Arc::clone(&gate);
        let inits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&inits);
        // Each init waits at the gate, so the loads in their slots are still running at close.
        let p = InstancePool::new(
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                g.pass();
                Ok(Box::new(Echo) as Box<dyn ScoringHook>)
            }),
            tokio::runtime::Handle::current(),
        );
        let loading = {
            let p = Arc::clone(&p);
            tokio::spawn(async move { p.add(50).await })
        };
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16);
        eventually("the first loads are running", || inits.load(Ordering::SeqCst) >= 1).await;
        p.close();
        gate.set(true);
        assert_eq!(loading.await.unwrap().unwrap_err(), LoadError::Cancelled);
        assert!(inits.load(Ordering::SeqCst) <= slots, "{} inits ran after close", inits.load(Ordering::SeqCst));
        assert_eq!(p.counts(), InstanceCounts { ready: 0, loading: 0, draining: 0, failed: 0, hung: 0, restarting: 0 });
    }

    /// A hook whose runs are awaited on the task (as a Python worker's are) and finish when
    /// the test lets them.
    struct Held(Arc<tokio::sync::Notify>);

    impl ScoringHook for Held {
        fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
            Ok(HookResponse::json(request.body.to_vec()))
        }

        fn start_run(&mut self, request: HookRequest<'_>) -> Option<crate::hooks::Started> {
            let (open, body) = (Arc::clone(&self.0), request.body.to_vec());
            let answer = Box::pin(async move {
                open.notified().await;
                Ok(HookResponse::json(body))
            });
            let turn = Box::pin(std::future::ready(Turn::Begun(Box::pin(async move { Some(answer.await) }))));
            Some(crate::hooks::Started { lend: false, turn })
        }
    }

    /// A hook whose first runs never begin (as a Python run queued behind a run killed at its
    /// deadline), counted down from a shared number.
    struct NeverBegins(Arc<AtomicUsize>);

    impl ScoringHook for NeverBegins {
        fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
            Ok(HookResponse::json(request.body.to_vec()))
        }

        fn start_run(&mut self, request: HookRequest<'_>) -> Option<crate::hooks::Started> {
            let begins = self.0.fetch_sub(1, Ordering::SeqCst) == 0;
            if begins {
                self.0.store(0, Ordering::SeqCst);
            }
            let body = request.body.to_vec();
            let turn = if begins {
                Turn::Begun(Box::pin(std::future::ready(Some(Ok(HookResponse::json(body))))))
            } else {
                Turn::NotStarted
            };
            Some(crate::hooks::Started { lend: false, turn: Box::pin(std::future::ready(turn)) })
        }
    }

    /// Issue 23 attack pass: a run that never began was offered to three instances and then
    /// failed as a model error (424), though another client's runs were what stopped them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_run_that_never_begins_is_offered_again_until_it_does() {
        let left = Arc::new(AtomicUsize::new(7));
        let l = Arc::clone(&left);
        let p = InstancePool::new(
            Arc::new(move || Ok(Box::new(NeverBegins(Arc::clone(&l))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        p.queue_every_run();
        p.add(1).await.unwrap();
        let answer = p.run(Bytes::from_static(b"[7]"), None, Headers::none()).await;
        assert_eq!(&answer.expect("answered once it began").body[..], b"[7]");
        assert_eq!(left.load(Ordering::SeqCst), 0, "offered until it began");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_comes_for_a_deleted_pool_after_its_drain_began_is_turned_away_not_held() {
        let open = Arc::new(tokio::sync::Notify::new());
        let o = Arc::clone(&open);
        let p = InstancePool::new(
            Arc::new(move || Ok(Box::new(Held(Arc::clone(&o))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        p.queue_every_run();
        p.add(1).await.unwrap();
        // A holds the one instance.
        let p1 = Arc::clone(&p);
        let a = tokio::spawn(async move { p1.run(Bytes::from_static(b"[1]"), None, Headers::none()).await });
        eventually("A holds the instance", || p.idle.lock().unwrap().is_empty()).await;
        // The deployment is deleted: its drain waits for A.
        p.close();
        let p2 = Arc::clone(&p);
        let drain = tokio::spawn(async move { p2.remove(1).await });
        eventually("the drain waits", || p.counts().draining == 1).await;
        // B was routed here before the delete and asks for an instance after the drain began:
        // no instance will ever serve it, so it is answered at once, while A still runs (it
        // waited on the semaphore until its deadline at first; then it could win the freed
        // instance from the drain, and hold it, now and then under load).
        let b = p.run(Bytes::from_static(b"[2]"), None, Headers::none());
        let b = tokio::time::timeout(std::time::Duration::from_secs(5), b).await;
        assert_eq!(b.expect("B was held while the pool drained"), Err(RunError::NoInstance));
        // A finishes: the drain takes the instance.
        open.notify_one();
        assert_eq!(&a.await.unwrap().unwrap().body[..], b"[1]", "A, in flight, was served");
        tokio::time::timeout(std::time::Duration::from_secs(5), drain).await.expect("the drain ends").unwrap();
        assert_eq!(p.ready(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_watched_run_past_its_deadline_takes_its_instance_out_of_service_for_good() {
        let (ran, gate) = (Arc::new(AtomicUsize::new(0)), Arc::new(Gate::default()));
        let (counter, g) = (Arc::clone(&ran), Arc::clone(&gate));
        let p = InstancePool::new(
            Arc::new(move || Ok(Box::new(Slow(Arc::clone(&counter), Arc::clone(&g))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let said = Arc::clone(&lines);
        p.watch_runs(std::time::Duration::from_millis(50), move |l| said.lock().unwrap().push(l.to_string()));
        p.add(1).await.unwrap();
        // The gate is shut: the run does not return, and its caller gives up.
        let no_headers = Headers::default();
        let stuck = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            p.run(Bytes::from_static(b"[1]"), None, &no_headers),
        );
        assert!(stuck.await.is_err());
        eventually("the stuck instance is out of service and replaced", || {
            p.counts() == InstanceCounts { ready: 1, loading: 0, draining: 0, failed: 0, hung: 1, restarting: 0 }
        })
        .await;
        assert!(p.hung_reason().unwrap().contains("taken out of service"));
        assert!(lines.lock().unwrap()[0].contains("50 ms"), "{:?}", lines.lock().unwrap());
        assert!(p.always_queued.load(Ordering::Relaxed), "after a hang no run is inline");
        // The stuck run returns at last: its instance is dropped, not handed out again.
        gate.set(true);
        eventually("the late run's instance is dropped", || p.counts().hung == 0).await;
        assert_eq!(p.counts().ready, 1);
        assert!(lines.lock().unwrap()[1].contains("returned after"), "{:?}", lines.lock().unwrap());
        let ok = p.run(Bytes::from_static(b"[2]"), None, Headers::none()).await.unwrap();
        assert_eq!(&ok.body[..], b"[2]");
        assert_eq!(p.hung_reason(), None);
    }

    /// Records the thread each run ran on.
    struct WhereRan(Arc<Mutex<Vec<std::thread::ThreadId>>>);

    impl ScoringHook for WhereRan {
        fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
            self.0.lock().unwrap().push(std::thread::current().id());
            Ok(HookResponse::json(request.body.to_vec()))
        }
    }

    #[tokio::test]
    async fn a_watched_pool_never_runs_on_the_calling_thread_however_short_its_runs() {
        // An in-process native plugin's run cannot be stopped: on the I/O thread, one that
        // hangs held the event loop for good. Short runs must still be queued.
        let threads = Arc::new(Mutex::new(Vec::new()));
        let t = Arc::clone(&threads);
        let p = InstancePool::new(
            Arc::new(move || Ok(Box::new(WhereRan(Arc::clone(&t))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        p.watch_runs(Duration::from_secs(60), |_| {});
        p.add(1).await.unwrap();
        for _ in 0..20 {
            p.run(Bytes::from_static(b"[1]"), None, Headers::none()).await.unwrap();
        }
        assert!(p.run_cost_ns.load(Ordering::Relaxed) <= INLINE_LIMIT_NS, "the runs were measured short");
        let here = std::thread::current().id();
        let threads = threads.lock().unwrap();
        assert_eq!(threads.len(), 20);
        assert!(threads.iter().all(|t| *t != here), "a watched run ran on the calling thread");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_init_that_never_returns_fails_at_the_deadline_and_gives_its_slots_back() {
        // An in-process init that hangs (a native plugin's `init` that never returns): the
        // gate is never opened while the pool waits.
        let gate = Arc::new(Gate::default());
        let g = Arc::clone(&gate);
        let hung = InstancePool::with_init_deadline(
            Arc::new(move || {
                g.pass();
                Ok(Box::new(Echo) as Box<dyn ScoringHook>)
            }),
            tokio::runtime::Handle::current(),
            Duration::from_millis(200),
        );
        let n = load_slot_count();
        let outcome = tokio::time::timeout(Duration::from_secs(30), hung.add(n)).await;
        let err = outcome.expect("the load waited past the init deadline").unwrap_err();
        assert!(matches!(&err, LoadError::Init(m) if m.contains("init deadline")), "{err}");
        assert_eq!(hung.counts(), InstanceCounts { failed: n, ..InstanceCounts::default() });
        // Every slot and every share is free again: another load goes through.
        let p = pool();
        tokio::time::timeout(Duration::from_secs(30), p.add(n)).await.expect("slots were freed").unwrap();
        assert_eq!(p.ready(), n);
        // The hung inits finish some day: what they make is dropped, never joins.
        gate.set(true);
        eventually("nothing joins the hung pool", || hung.counts().loading == 0).await;
        assert_eq!(hung.ready(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_empty_pool_answers_no_instance() {
        let p = pool();
        assert_eq!(p.run(Bytes::new(), None, Headers::none()).await.unwrap_err(), RunError::NoInstance);
    }

    /// Azure's WORKER_COUNT: an instance is that many hooks; a broken one is replaced alone,
    /// and scaling counts instances.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_instance_of_three_workers_is_three_hooks_and_a_panic_replaces_one_of_them() {
        let inits = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&inits);
        let p = InstancePool::new(
            Arc::new(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(Box::new(Echo) as Box<dyn ScoringHook>)
            }),
            tokio::runtime::Handle::current(),
        );
        p.set_workers_per_instance(3);
        p.add(2).await.unwrap();
        assert_eq!(p.counts(), InstanceCounts { ready: 2, ..InstanceCounts::default() });
        assert_eq!(p.workers(), InstanceCounts { ready: 6, ..InstanceCounts::default() });
        assert_eq!(inits.load(Ordering::SeqCst), 6);
        p.run(Bytes::from_static(b"panic"), None, Headers::none()).await.unwrap_err();
        eventually("one worker replaced the one that panicked", || p.workers().ready == 6).await;
        assert_eq!(inits.load(Ordering::SeqCst), 7, "only the broken worker is loaded again");
        assert_eq!(p.counts().ready, 2);
        p.remove(1).await;
        assert_eq!(p.counts(), InstanceCounts { ready: 1, ..InstanceCounts::default() });
        assert_eq!(p.workers().ready, 3);
    }
}
