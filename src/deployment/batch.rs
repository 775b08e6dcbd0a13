//! Adaptive batching (issue 29): concurrent requests to an ONNX deployment stacked into one
//! run.
//!
//! It sits between [`super::Deployment::call`] and the pool. A request is prepared on its own
//! task (parsed into typed arrays, so a bad body is its own 400) and queued with a one-shot
//! reply. One collector task per deployment version forms batches: it takes the first waiting
//! request, waits for an instance (while it waits, requests pile up: that is where batches come
//! from under load), then takes every waiting request that stacks with the first, and waits
//! for more only until `max_delay_us` after the first arrived, never longer, and only while
//! the batch has room. With one instance the collector runs the batch itself, so the next one
//! starts the moment it ends (measured on model-3 at c=32: 25% more requests per second than
//! handing every batch to another thread, whose wake-ups left the instance idle between
//! batches); with more, each batch runs on a blocking thread while the collector forms the next
//! one for the next instance.
//!
//! What stays as without batching: admission happened before (the queue holds at most the
//! admission cap, and [`MAX_QUEUED`] whatever happens), each request keeps its own deadline (its
//! future is dropped at `request_timeout_ms`, a 408; a request gone before its batch runs is
//! skipped, and a running batch whose every request is gone is stopped through ONNX Runtime's
//! terminate flag), per-request metrics and access lines are the caller's, and a failed run
//! fails only its own requests.
//! Mirror copies never come here (they run alone on an idle instance, `run_here_if_idle`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::pool::{InstancePool, Lease, RunError};
use crate::hooks::batch::{Prepare, Prepared};
use crate::hooks::cancel::Cancellation;
use crate::hooks::{Answer, Headers, HookRequest, Request};
use crate::spec::Batching;
use crate::telemetry::traces::Handoff;
use crate::telemetry::BatchMetrics;

/// Seconds of runs `show`'s mean batch size covers: one slot per second, so the mean is over
/// the last minute exactly, in fixed memory whatever the rate.
const RECENT_SECONDS: u64 = 60;

/// The most requests a batcher holds queued (see `Batcher::queued`); past it, a request is
/// refused as when no instance can take it (503), never held.
const MAX_QUEUED: usize = 8192;

/// Bodies larger than this are parsed on a blocking thread, not on the event loop (a body of
/// megabytes takes milliseconds to parse, and other connections wait on that thread).
const PREPARE_INLINE_BYTES: usize = 64 * 1024;

/// The preparer a deployment version's first instance gives (its model's signature); set once.
pub(crate) type PreparerSlot = Arc<OnceLock<Arc<dyn Prepare>>>;

/// A deployment version's batcher: the queue's sending side and what `show` reads.
pub(crate) struct Batcher {
    queue: mpsc::Sender<Waiting>,
    /// Requests queued and not yet taken by the collector: a request that left at its
    /// deadline frees its admission slot but stays queued until the collector looks at it,
    /// so the queue has its own bound ([`MAX_QUEUED`]).
    queued: Arc<std::sync::atomic::AtomicUsize>,
    preparer: PreparerSlot,
    stats: Arc<BatchStats>,
}

/// A prepared request waiting for its batch.
struct Waiting {
    prepared: Prepared,
    /// Its rows; `None` when it cannot stack with anything (it runs alone).
    rows: Option<usize>,
    /// When it was queued: the batch it starts waits for others until `since + max_delay`.
    since: Instant,
    reply: Reply,
    /// Its wait and its run's parent, when traces are on.
    trace: Option<Box<Handoff>>,
}

/// Batches run, for `show` and the metrics.
pub(crate) struct BatchStats {
    /// When the batcher started: seconds are counted from it.
    epoch: Instant,
    /// Per second of the last minute: `(second, runs, rows)`, slot `second % 60`.
    recent: Mutex<[(u64, u64, u64); RECENT_SECONDS as usize]>,
    runs: std::sync::atomic::AtomicU64,
    metrics: BatchMetrics,
}

/// What `show` says of a deployment's batching.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct BatchingStatus {
    /// Batched runs since this version loaded (a request alone counts as a run of one).
    pub runs: u64,
    /// Runs in the last minute, and their mean rows per run (0 when none).
    pub recent_runs: u64,
    pub mean_batch_size: f64,
}

impl BatchStats {
    fn record(&self, rows: usize, delays: impl Iterator<Item = Duration>) {
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.observe_batch(rows, delays);
        let second = self.epoch.elapsed().as_secs();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut recent[(second % RECENT_SECONDS) as usize];
        if slot.0 != second {
            *slot = (second, 0, 0);
        }
        slot.1 += 1;
        slot.2 = slot.2.saturating_add(rows as u64);
    }

    fn status(&self) -> BatchingStatus {
        let second = self.epoch.elapsed().as_secs();
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let (n, rows) = recent
            .iter()
            .filter(|(s, _, _)| second.saturating_sub(*s) < RECENT_SECONDS && *s <= second)
            .fold((0u64, 0u64), |(n, rows), (_, r, w)| (n + r, rows.saturating_add(*w)));
        BatchingStatus {
            runs: self.runs.load(std::sync::atomic::Ordering::Relaxed),
            recent_runs: n,
            mean_batch_size: if n == 0 { 0.0 } else { rows as f64 / n as f64 },
        }
    }
}

impl Batcher {
    /// A batcher for `pool`; its collector thread runs until the batcher is dropped (with its
    /// deployment version), and its batches run on `runtime`.
    ///
    /// The collector is a thread, not a task, for its clock: tokio's timers tick in whole
    /// milliseconds and round a deadline up, so a task waiting for `max_delay_us` = 500 would
    /// wait up to 1.5 ms; a thread's timed `recv` wakes within tens of microseconds of it.
    pub(crate) fn new(
        settings: Batching,
        pool: Arc<InstancePool>,
        preparer: PreparerSlot,
        metrics: BatchMetrics,
        runtime: &tokio::runtime::Handle,
    ) -> Self {
        let (queue, waiting) = mpsc::channel();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let waiting = Incoming { rx: waiting, queued: Arc::clone(&queued) };
        let stats = Arc::new(BatchStats {
            epoch: Instant::now(),
            recent: Mutex::new([(u64::MAX, 0, 0); RECENT_SECONDS as usize]),
            runs: Default::default(),
            metrics,
        });
        let (runtime, collected) = (runtime.clone(), Arc::clone(&stats));
        let started = std::thread::Builder::new().name("switchyard-batch".into()).spawn(move || {
            // A panic here (a bug) costs the requests the collector held, never the queue: it
            // starts over on the same queue, so the deployment keeps answering.
            while std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                collect(&waiting, &pool, settings, &collected, &runtime);
            }))
            .is_err()
            {
                tracing::error!("the batch collector panicked; it starts over");
            }
        });
        if let Err(e) = started {
            // Without a collector every request is answered at once (its reply dropped).
            tracing::error!("cannot start a batch collector thread: {e}");
        }
        Self { queue, queued, preparer, stats }
    }

    /// Runs so far and the recent mean batch size.
    pub(crate) fn status(&self) -> BatchingStatus {
        self.stats.status()
    }

    /// Prepares `request` here, queues it, and waits for its batch's answer. Until the first
    /// instance has loaded (no preparer yet) there is nothing to batch with: the pool answers.
    pub(crate) async fn call(&self, pool: &Arc<InstancePool>, request: Request<'_>) -> Result<Answer, RunError> {
        let Some(preparer) = self.preparer.get() else {
            return pool.call(request).await;
        };
        if pool.ready() == 0 {
            return Err(RunError::NoInstance);
        }
        let hook_request =
            |body| HookRequest { body, content_type: request.content_type, headers: Headers::none(), cancel: None };
        let prepared = if request.body.len() <= PREPARE_INLINE_BYTES {
            preparer.prepare(hook_request(request.body), request.protocol)?
        } else {
            let (preparer, body, protocol) = (Arc::clone(preparer), request.body.clone(), request.protocol);
            let content_type = request.content_type.map(str::to_string);
            tokio::task::spawn_blocking(move || {
                let request = HookRequest {
                    body: &body,
                    content_type: content_type.as_deref(),
                    headers: Headers::none(),
                    cancel: None,
                };
                preparer.prepare(request, protocol)
            })
            .await
            .map_err(|_| RunError::Failed("the request's parsing was lost".into()))??
        };
        use std::sync::atomic::Ordering::Relaxed;
        if self.queued.fetch_add(1, Relaxed) >= MAX_QUEUED {
            self.queued.fetch_sub(1, Relaxed);
            return Err(RunError::Busy);
        }
        let (reply, answer) = oneshot::channel();
        let rows = prepared.rows();
        let (trace, _waiting) = Handoff::begin().unzip();
        let waiting = Waiting { prepared, rows, since: Instant::now(), reply, trace };
        if self.queue.send(waiting).is_err() {
            self.queued.fetch_sub(1, Relaxed);
            return Err(RunError::NoInstance);
        }
        answer.await.unwrap_or_else(|_| Err(RunError::Failed("the batch this request was in was lost".into())))
    }
}

/// The collector: forms batches from the queue and starts each on an instance, until the
/// batcher is dropped. Requests that do not stack with the batch being formed wait in `carry`,
/// ahead of the queue, for the next one.
fn collect(
    queue: &Incoming,
    pool: &Arc<InstancePool>,
    settings: Batching,
    stats: &Arc<BatchStats>,
    runtime: &tokio::runtime::Handle,
) {
    let max_rows = settings.max_batch_size as usize;
    let max_delay = Duration::from_micros(settings.max_delay_us);
    let mut carry: VecDeque<Waiting> = VecDeque::new();
    loop {
        let first = match carry.pop_front() {
            Some(w) => w,
            None => match queue.recv() {
                Ok(w) => w,
                Err(_) => return,
            },
        };
        if first.reply.is_closed() {
            continue; // its deadline passed, or its client left, while it waited
        }
        // Waiting here, the queue fills: under load that is where batches come from.
        let lease = match runtime.block_on(pool.lease()) {
            Ok(lease) => lease,
            Err(e) => {
                // Deleted, or nothing ready: the front door routes it again or answers 503.
                let _ = first.reply.send(Err(e));
                continue;
            }
        };
        let deadline = first.since + max_delay;
        let mut batch = vec![first];
        let mut rows = batch[0].rows.unwrap_or(usize::MAX);
        if rows < max_rows {
            // Those carried from the last batch first, in arrival order.
            let mut kept = VecDeque::with_capacity(carry.len());
            let mut full = false;
            for w in carry.drain(..) {
                match fit(&batch[0], &w, rows, max_rows) {
                    _ if w.reply.is_closed() => {}
                    Fit::Stacks(n) if !full => {
                        rows += n;
                        full = rows >= max_rows;
                        batch.push(w);
                    }
                    Fit::TooMany => {
                        full = true;
                        kept.push_back(w);
                    }
                    _ => kept.push_back(w),
                }
            }
            carry = kept;
            // Then the queue: what waits now, then what comes before the first's deadline.
            while !full {
                let next = match queue.try_recv() {
                    Ok(w) => w,
                    Err(mpsc::TryRecvError::Disconnected) => break,
                    Err(mpsc::TryRecvError::Empty) => {
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break;
                        }
                        match queue.recv_timeout(left) {
                            Ok(w) => w,
                            Err(_) => break,
                        }
                    }
                };
                match fit(&batch[0], &next, rows, max_rows) {
                    _ if next.reply.is_closed() => {}
                    Fit::Stacks(n) => {
                        rows += n;
                        full = rows >= max_rows;
                        batch.push(next);
                    }
                    Fit::TooMany => {
                        full = true;
                        carry.push_back(next);
                    }
                    Fit::Apart => carry.push_back(next),
                }
            }
        }
        if pool.ready() <= 1 {
            // One instance: no other could take a batch meanwhile, so this one runs here and
            // the next batch is formed the moment it ends, with no hand-off in between. With
            // more, a batch run here would leave an instance that frees meanwhile idle.
            run_here(lease, batch, stats, runtime);
        } else {
            runtime.spawn(run(lease, batch, Arc::clone(stats)));
        }
    }
}

/// Runs one batch on the collector's own thread and answers each request (see `collect`). A
/// task on `runtime` watches the requests meanwhile: once every one is gone (deadline,
/// client), the run is stopped through ONNX Runtime's terminate flag, as a lone run is.
fn run_here(lease: Lease, batch: Vec<Waiting>, stats: &BatchStats, runtime: &tokio::runtime::Handle) {
    let Some((prepared, mut replies, spans)) = start(batch, stats) else { return };
    let n = prepared.len();
    let cancel = Arc::new(Cancellation::default());
    let stop = Arc::clone(&cancel);
    let (done, ended) = oneshot::channel::<()>();
    let watcher = runtime.spawn(async move {
        tokio::select! {
            () = all_gone(&mut replies) => stop.cancel(),
            _ = ended => {}
        }
        replies
    });
    let answers = lease.run_batch(prepared, &cancel);
    drop(spans); // the run ends before its answers wake the requests
    let _ = done.send(());
    // The watcher gives the replies back as soon as it sees the run ended (or had stopped it).
    let Ok(replies) = runtime.block_on(watcher) else { return };
    debug_assert_eq!(replies.len(), n);
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// What a batch about to run needs: its requests still waiting (one that left is not run),
/// recorded in the stats; `None` when none is.
fn start(mut batch: Vec<Waiting>, stats: &BatchStats) -> Option<Started> {
    batch.retain(|w| !w.reply.is_closed());
    if batch.is_empty() {
        return None; // the lease gives the instance back as it drops
    }
    let started = Instant::now();
    let rows = batch.iter().fold(0usize, |sum, w| sum.saturating_add(w.rows.unwrap_or(1)));
    stats.record(rows, batch.iter().map(|w| started.duration_since(w.since)));
    let requests = batch.len();
    let mut spans = Vec::new();
    let mut prepared = Vec::with_capacity(requests);
    let mut replies = Vec::with_capacity(requests);
    for w in batch {
        if let Some(trace) = w.trace {
            spans.push((*trace).run_batch(requests, rows));
        }
        prepared.push(w.prepared);
        replies.push(w.reply);
    }
    Some((prepared, replies, spans))
}

/// A batch as it starts: its requests, their answer channels, and (traces on) each request's
/// run span, which ends when the batch's answers are sent.
type Started = (Vec<Prepared>, Vec<Reply>, Vec<tracing::Span>);

/// A waiting request's answer channel.
type Reply = oneshot::Sender<Result<Answer, RunError>>;

/// The collector's end of the queue: counts what it takes out (see `Batcher::queued`).
struct Incoming {
    rx: mpsc::Receiver<Waiting>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl Incoming {
    fn took(&self, w: Waiting) -> Waiting {
        self.queued.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        w
    }

    fn recv(&self) -> Result<Waiting, mpsc::RecvError> {
        self.rx.recv().map(|w| self.took(w))
    }

    fn try_recv(&self) -> Result<Waiting, mpsc::TryRecvError> {
        self.rx.try_recv().map(|w| self.took(w))
    }

    fn recv_timeout(&self, wait: Duration) -> Result<Waiting, mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(wait).map(|w| self.took(w))
    }
}

/// How a waiting request fits the batch being formed.
enum Fit {
    /// It stacks with the batch's first request, adding this many rows.
    Stacks(usize),
    /// It stacks, but the batch has no room for its rows: the batch is as full as it gets.
    TooMany,
    /// It cannot share a run with this batch.
    Apart,
}

fn fit(first: &Waiting, w: &Waiting, rows: usize, max_rows: usize) -> Fit {
    match w.rows {
        Some(n) if first.prepared.stacks_with(&w.prepared) => {
            if rows.saturating_add(n) <= max_rows {
                Fit::Stacks(n)
            } else {
                Fit::TooMany
            }
        }
        _ => Fit::Apart,
    }
}

/// Runs one batch on its instance and answers each request. If every request of the batch
/// is gone (deadline, client) while it runs, the run is stopped.
async fn run(lease: Lease, batch: Vec<Waiting>, stats: Arc<BatchStats>) {
    let Some((prepared, mut replies, spans)) = start(batch, &stats) else { return };
    let n = prepared.len();
    let cancel = Arc::new(Cancellation::default());
    let stop = Arc::clone(&cancel);
    let mut job = tokio::task::spawn_blocking(move || lease.run_batch(prepared, &stop));
    let answers = tokio::select! {
        done = &mut job => done,
        () = all_gone(&mut replies) => {
            cancel.cancel();
            job.await
        }
    };
    let answers = answers.unwrap_or_else(|_| vec![Err(RunError::Failed("the batch's run was lost".into())); n]);
    drop(spans); // the run ends before its answers wake the requests
    for (reply, answer) in replies.into_iter().zip(answers) {
        let _ = reply.send(answer);
    }
}

/// Resolves once every request of a batch has stopped waiting for its answer.
async fn all_gone(replies: &mut [Reply]) {
    for reply in replies.iter_mut() {
        reply.closed().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::hooks::batch::{Array, Reply};
    use crate::hooks::{HookError, HookResponse, Protocol, ScoringHook};
    use crate::telemetry::Metrics;

    /// Parses `[[x, ...], ...]` as float64 rows.
    struct Rows;

    impl Prepare for Rows {
        fn prepare(&self, request: HookRequest<'_>, _: Protocol) -> Result<Prepared, HookError> {
            let rows: Vec<Vec<f64>> =
                serde_json::from_slice(request.body).map_err(|e| HookError::BadInput(e.to_string()))?;
            let width = rows.first().map_or(0, Vec::len);
            let flat: Vec<f64> = rows.iter().flatten().copied().collect();
            let array = Array::from_shape_vec(&[rows.len(), width], flat)?;
            Ok(Prepared { inputs: vec![Array::F64(array)], reply: Reply::Flat })
        }
    }

    /// Answers each request with its rows' sums; records each batch's requests' row counts; a
    /// negative number anywhere fails the whole run (a model error of the stacked run).
    struct Summer(Arc<Mutex<Vec<Vec<usize>>>>);

    impl ScoringHook for Summer {
        fn run(&mut self, _: HookRequest<'_>) -> Result<HookResponse, HookError> {
            Err(HookError::Failed("batched deployments run batches".into()))
        }

        fn run_batch(&mut self, batch: Vec<Prepared>, _: Option<&Cancellation>) -> Vec<Result<Answer, HookError>> {
            self.0.lock().unwrap().push(batch.iter().map(|p| p.rows().unwrap_or(0)).collect());
            let arrays: Vec<&ndarray::ArrayD<f64>> = batch
                .iter()
                .map(|p| match &p.inputs[0] {
                    Array::F64(a) => a,
                    _ => unreachable!("Rows prepares float64"),
                })
                .collect();
            if arrays.iter().any(|a| a.iter().any(|v| *v < 0.0)) {
                return batch.iter().map(|_| Err(HookError::Failed("negative input".into()))).collect();
            }
            arrays
                .iter()
                .map(|a| {
                    let sums: Vec<f64> = a.outer_iter().map(|row| row.sum()).collect();
                    let response = HookResponse::json(serde_json::to_vec(&sums).unwrap());
                    Ok(Answer { response, header_length: None })
                })
                .collect()
        }
    }

    struct Fixture {
        batcher: Batcher,
        pool: Arc<InstancePool>,
        batches: Arc<Mutex<Vec<Vec<usize>>>>,
    }

    /// One loaded instance of [`Summer`] behind a batcher with these settings.
    async fn fixture(max_batch_size: u32, max_delay_us: u64) -> Fixture {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&batches);
        let pool = InstancePool::new(
            Arc::new(move || Ok(Box::new(Summer(Arc::clone(&record))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        pool.add(1).await.unwrap();
        let slot: PreparerSlot = Arc::default();
        let _ = slot.set(Arc::new(Rows));
        let metrics = Metrics::new().for_deployment("e", "d").batches();
        let settings = Batching { max_batch_size, max_delay_us };
        let batcher = Batcher::new(settings, Arc::clone(&pool), slot, metrics, &tokio::runtime::Handle::current());
        Fixture { batcher, pool, batches }
    }

    impl Fixture {
        async fn call(&self, body: &str) -> Result<String, RunError> {
            let body = bytes::Bytes::copy_from_slice(body.as_bytes());
            let request = Request {
                body: &body,
                content_type: None,
                headers: Headers::none(),
                protocol: Protocol::Score,
                request_id: "",
            };
            let answer = self.batcher.call(&self.pool, request).await?;
            Ok(String::from_utf8(answer.response.body.to_vec()).unwrap())
        }

        fn batches(&self) -> Vec<Vec<usize>> {
            self.batches.lock().unwrap().clone()
        }
    }

    // The collector keeps real time (see `Batcher::new`): each test lets the batch wait long
    // enough (hundreds of ms) for requests sent together to meet whatever the scheduling, and
    // checks the order of events, not durations, except where the bound itself is the point.

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_request_waits_for_company_no_longer_than_max_delay() {
        let f = fixture(8, 20_000).await;
        let start = std::time::Instant::now();
        assert_eq!(f.call("[[1, 2]]").await.unwrap(), "[3.0]");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20), "it waited max_delay_us for others: {waited:?}");
        // The bound: generous for a loaded machine, far below what a timer tick can explain.
        assert!(waited < Duration::from_millis(20 + 250), "and then ran: {waited:?}");
        let f = fixture(8, 0).await;
        assert_eq!(f.call("[[1, 2]]").await.unwrap(), "[3.0]");
        assert_eq!(f.batcher.status().runs, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_waiting_together_run_as_one_batch_and_each_gets_its_own_rows() {
        let f = fixture(8, 300_000).await;
        let (a, b, c) = tokio::join!(f.call("[[1, 2]]"), f.call("[[10, 20], [30, 40]]"), f.call("[[100, 0]]"));
        assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), ("[3.0]".into(), "[30.0,70.0]".into(), "[100.0]".into()));
        assert_eq!(f.batches(), vec![vec![1, 2, 1]], "one run of the three, in arrival order");
        let status = f.batcher.status();
        assert_eq!((status.runs, status.recent_runs, status.mean_batch_size), (1, 1, 4.0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_runs_at_once_without_waiting_for_max_delay() {
        let f = fixture(2, 60_000_000).await;
        let (a, b) = tokio::join!(f.call("[[1, 2]]"), f.call("[[3, 4]]"));
        assert_eq!((a.unwrap(), b.unwrap()), ("[3.0]".into(), "[7.0]".into()));
        assert_eq!(f.batches(), vec![vec![1, 1]], "two rows fill max_batch_size 2: run before the minute is up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shapes_that_differ_run_apart_and_a_request_over_max_batch_size_runs_alone() {
        let f = fixture(4, 200_000).await;
        let (a, b, c, d) = tokio::join!(
            f.call("[[1, 1]]"),
            f.call("[[1, 1, 1]]"),
            f.call("[[2, 2]]"),
            f.call("[[1, 1], [1, 1], [1, 1], [1, 1], [1, 1]]")
        );
        assert_eq!(a.unwrap(), "[2.0]");
        assert_eq!(b.unwrap(), "[3.0]");
        assert_eq!(c.unwrap(), "[4.0]");
        assert_eq!(d.unwrap(), "[2.0,2.0,2.0,2.0,2.0]");
        assert_eq!(f.batches(), vec![vec![1, 1], vec![1], vec![5]], "2 columns together; 3 apart; 5 rows alone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_error_fails_the_requests_of_its_run_and_no_others() {
        let f = fixture(3, 200_000).await;
        let (a, b, c, d, e) = tokio::join!(
            f.call("[[1, 1]]"),
            f.call("[[-1, 1]]"),
            f.call("[[2, 2]]"),
            f.call("[[3, 3]]"),
            f.call("[[4, 4]]")
        );
        for failed in [a, b, c] {
            assert_eq!(failed, Err(RunError::Failed("negative input".into())));
        }
        assert_eq!((d.unwrap(), e.unwrap()), ("[6.0]".into(), "[8.0]".into()));
        assert_eq!(f.batches(), vec![vec![1, 1, 1], vec![1, 1]]);
        assert_eq!(f.pool.ready(), 1, "a model error keeps the instance");
    }

    /// Runs until its batch is cancelled (at most 20 s), and says whether it was.
    struct Stuck(Arc<std::sync::atomic::AtomicBool>);

    impl ScoringHook for Stuck {
        fn run(&mut self, _: HookRequest<'_>) -> Result<HookResponse, HookError> {
            Err(HookError::Failed("batched deployments run batches".into()))
        }

        fn run_batch(&mut self, batch: Vec<Prepared>, cancel: Option<&Cancellation>) -> Vec<Result<Answer, HookError>> {
            let until = std::time::Instant::now() + Duration::from_secs(20);
            while !cancel.is_some_and(Cancellation::is_cancelled) && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            self.0.store(cancel.is_some_and(Cancellation::is_cancelled), std::sync::atomic::Ordering::SeqCst);
            batch.iter().map(|_| Err(HookError::Failed("stopped".into()))).collect()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_running_batch_whose_requests_all_left_is_stopped_and_the_next_one_runs() {
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::clone(&stopped);
        let pool = InstancePool::new(
            Arc::new(move || Ok(Box::new(Stuck(Arc::clone(&seen))) as Box<dyn ScoringHook>)),
            tokio::runtime::Handle::current(),
        );
        pool.add(1).await.unwrap();
        let slot: PreparerSlot = Arc::default();
        let _ = slot.set(Arc::new(Rows));
        let settings = Batching { max_batch_size: 8, max_delay_us: 0 };
        let metrics = Metrics::new().for_deployment("e", "d").batches();
        let batcher = Batcher::new(settings, Arc::clone(&pool), slot, metrics, &tokio::runtime::Handle::current());
        let f = Fixture { batcher, pool, batches: Arc::default() };
        // One instance: the batch runs on the collector's thread; both requests leave at 50 ms.
        let (a, b) = tokio::join!(
            tokio::time::timeout(Duration::from_millis(50), f.call("[[1, 2]]")),
            tokio::time::timeout(Duration::from_millis(50), f.call("[[3, 4]]"))
        );
        assert!(a.is_err() && b.is_err());
        // The run was stopped (not left to run its 20 s), and the instance takes the next batch.
        let next = tokio::time::timeout(Duration::from_secs(10), async {
            while !stopped.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(next.is_ok(), "the batch whose requests all left was stopped");
        stopped.store(false, std::sync::atomic::Ordering::SeqCst);
        let again = tokio::time::timeout(Duration::from_millis(50), f.call("[[5, 6]]")).await;
        assert!(again.is_err(), "the next request reached the instance (and left at its deadline)");
        assert_eq!(f.batcher.status().runs, 2, "both batches ran: the collector was free again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_gone_before_its_batch_runs_is_not_run_and_a_bad_body_never_queues() {
        let f = fixture(8, 300_000).await;
        let gone = tokio::time::timeout(Duration::from_millis(1), f.call("[[1, 2]]")).await;
        assert!(gone.is_err(), "its deadline passed while the batch waited for company");
        // The next request's batch runs; the one that left was never run.
        assert_eq!(f.call("[[5, 5]]").await.unwrap(), "[10.0]");
        assert_eq!(f.batches(), vec![vec![1]]);
        assert!(matches!(f.call("not json").await, Err(RunError::BadInput(_))));
        assert_eq!(f.batches(), vec![vec![1]], "a bad body is its own 400, before any queue");
    }
}
