//! Runs queued one behind another in a Python worker's pipe.
//!
//! Why: a worker that answers a run and finds its pipe empty goes to sleep, and is woken when
//! the server writes the next request; under load that sleep and wake-up (and the caches
//! other processes cooled meanwhile) cost the worker about as much CPU as the script's own
//! `run()` (`perf` of the sample at c=32: a fifth of the worker's samples in the scheduler),
//! and each write that wakes it costs the server a cross-CPU wake-up. So while a run is in
//! the worker, the instance goes back to the pool ([`Started::lend`]) and one more run may be
//! written behind it ([`DEPTH`]); the worker reads them in order and answers in order.
//!
//! The rules that keep this as safe as one run at a time:
//! - Answers are read in the order the runs were written: each run has a ticket, and a
//!   ticket reads only when every ticket before it has read its answer ([`Queue::done`]).
//!   Bytes read past one answer belong to the next ticket and are kept for it.
//! - Frames queued in the pipe together always fit in it ([`Worker::request_pipe_bytes`]), so
//!   writing one never waits for the worker (the write is made on an I/O thread).
//! - A run given up while it is in the worker (its deadline, its client gone) stops the
//!   worker, as before: it might never end. A run given up while it waits behind another is
//!   marked, and the worker is stopped when its turn comes. Runs waiting behind a run whose
//!   worker stopped never began (the worker runs one at a time and never answered the one
//!   before): they end [`Ran::NotStarted`] and the pool runs them on another instance.
//! - The worker and its files live until the last run started on it has its answer
//!   ([`Line`] is shared by the instance and its runs in flight), so a scale-down or a
//!   delete never cuts a run short.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::frame;
use crate::hooks::worker::{Exchange, Worker};
use crate::hooks::{HookError, HookRequest, HookResponse, Ran, Started};

/// Runs one worker holds at most: the one it runs and one waiting behind it. One more is
/// enough for the worker never to wait between runs; more would only lengthen the wait of
/// a request that another, idle instance could take.
pub const DEPTH: usize = 2;

/// One worker process and the runs in its pipe.
pub struct Line {
    worker: Mutex<Worker>,
    /// The answer pipe, a second descriptor of the worker's (non-blocking), read by the
    /// ticket whose turn it is.
    answers: std::io::PipeReader,
    queue: Mutex<Queue>,
    /// Signalled when a ticket ends or the worker stops (a run on a blocking thread waits
    /// for the pipe to be empty: [`Line::settle`]).
    settled: Condvar,
    /// Tickets written and not ended, readable without the lock (the pool's choice of the
    /// idlest instance).
    in_flight: AtomicUsize,
    /// The instance's folder (worker program, model links), removed with the worker.
    files: PathBuf,
}

#[derive(Default)]
struct Queue {
    /// Tickets written (the last one's number).
    sent: u64,
    /// Tickets ended, in order: ticket `done + 1` reads next.
    done: u64,
    /// The frame length of each ticket not ended, oldest first: what the pipe may still hold.
    frames: std::collections::VecDeque<usize>,
    /// Bytes read past the answers taken so far: the start of the next ticket's answer.
    inbox: Vec<u8>,
    have: usize,
    /// The ticket waiting for its turn, to be woken when the one before it ends.
    waiting: Option<(u64, Waker)>,
    /// A ticket given up while it waited behind another: the worker is stopped at its turn.
    abandoned: Option<u64>,
    /// The worker was stopped or died: tickets that have not had their turn never began.
    stopped: bool,
}

impl Line {
    pub fn new(worker: Worker, files: PathBuf) -> std::io::Result<Arc<Self>> {
        let answers = worker.answer_reader()?;
        Ok(Arc::new(Self {
            worker: Mutex::new(worker),
            answers,
            queue: Mutex::default(),
            settled: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            files,
        }))
    }

    pub fn worker(&self) -> MutexGuard<'_, Worker> {
        self.worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn is_healthy(&self) -> bool {
        self.worker().is_healthy() && !self.queue().stopped
    }

    /// Writes the run's frame and returns its ticket; `None` when it cannot be queued now
    /// (the worker holds [`DEPTH`] runs, or the frame would not fit behind the one in the
    /// pipe): the caller runs it through [`Line::run`] instead. A worker that is gone answers
    /// at once, as a run on it does.
    pub fn start(self: &Arc<Self>, request: &HookRequest<'_>) -> Option<Started> {
        let not_started = || Some(Started { lend: false, answer: Box::pin(std::future::ready(Ran::NotStarted)) });
        let mut worker = self.worker();
        if !worker.is_healthy() || self.queue().stopped {
            return not_started();
        }
        let len = match worker.prepare_run(request) {
            Ok(len) => len,
            Err(e) => {
                let outcome = worker.outcome(Err(e), false);
                return Some(Started { lend: false, answer: Box::pin(std::future::ready(Ran::Done(outcome))) });
            }
        };
        let mut q = self.queue();
        let queued: usize = q.frames.iter().sum();
        if q.frames.len() >= DEPTH || (!q.frames.is_empty() && queued + len > worker.request_pipe_bytes()) {
            return None;
        }
        if let Err(e) = worker.write_prepared() {
            // The worker is gone (its pipe closed): it is retired, and the run, which it never
            // read, goes to another instance.
            drop(q);
            let _ = worker.outcome(Err(e), false);
            drop(worker);
            let q = self.queue();
            self.wake(stop(q));
            return not_started();
        }
        q.sent += 1;
        q.frames.push_back(len);
        let ticket = Ticket { line: Arc::clone(self), n: q.sent, ended: false };
        let lend = q.frames.len() < DEPTH;
        self.in_flight.store(q.frames.len(), Ordering::Relaxed);
        drop(q);
        drop(worker);
        Some(Started { lend, answer: Box::pin(ticket.answer()) })
    }

    /// A run on the calling (blocking) thread, once the runs queued before it have ended.
    pub fn run(&self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let limit = self.worker().timeout();
        self.settle(limit);
        let mut worker = self.worker();
        let mut q = self.queue();
        if !q.frames.is_empty() {
            return Err(HookError::Failed("the instance's Python worker is still busy; try again".into()));
        }
        if q.stopped {
            drop(q);
            return worker.outcome(Err(Exchange::Gone), false);
        }
        // Nothing is in flight: the worker is ours until this run ends (tickets are only
        // written by whoever holds the instance, and that is this thread).
        q.inbox.clear();
        q.have = 0;
        drop(q);
        let outcome = worker.run(request);
        if !worker.is_healthy() {
            self.queue().stopped = true;
        }
        outcome
    }

    /// Waits (at most `limit`) until no run is in the pipe.
    fn settle(&self, limit: Duration) {
        let until = Instant::now() + limit;
        let mut q = self.queue();
        while !q.frames.is_empty() && !q.stopped {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            q = self.settled.wait_timeout(q, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Ticket `n`'s turn: `Ready(true)` when every ticket before it has ended, `Ready(false)`
    /// when the worker stopped before that (the run never began).
    fn poll_turn(&self, n: u64, waker: &Waker) -> Poll<bool> {
        let mut q = self.queue();
        if q.stopped {
            return Poll::Ready(false);
        }
        if q.done + 1 == n {
            return Poll::Ready(true);
        }
        q.waiting = Some((n, waker.clone()));
        Poll::Pending
    }

    /// Ticket `n` ended (its answer read, or the worker stopped under it).
    fn end(&self, n: u64, worker_gone: bool) {
        let mut q = self.queue();
        q.done = q.done.max(n);
        q.frames.pop_front();
        if worker_gone {
            q.stopped = true;
        }
        let next_abandoned = q.abandoned == Some(n + 1) && !q.stopped;
        if next_abandoned {
            // The run behind this one was given up: the worker takes it now, with nobody to
            // read its answer or stop it at a deadline.
            q.abandoned = None;
            q.stopped = true;
            drop(q);
            self.worker().stopped_at_deadline();
            q = self.queue();
        }
        self.wake(q);
    }

    /// Ticket `n` was given up before its answer was read.
    fn abandon(&self, n: u64) {
        let mut q = self.queue();
        if q.stopped || q.done >= n {
            q.frames.pop_front();
            q.done = q.done.max(n);
            return self.wake(q);
        }
        if q.done + 1 == n {
            // Its run is in the worker (or its answer in the pipe): the worker is stopped, as
            // a run given up always stopped it; what waits behind it never began.
            q.stopped = true;
            drop(q);
            self.worker().stopped_at_deadline();
            return self.end(n, true);
        }
        if q.waiting.as_ref().is_some_and(|(w, _)| *w == n) {
            q.waiting = None;
        }
        q.abandoned = Some(n);
    }

    fn wake(&self, mut q: MutexGuard<'_, Queue>) {
        if q.stopped {
            q.frames.clear();
        }
        self.in_flight.store(q.frames.len(), Ordering::Relaxed);
        let waiting = q.waiting.take();
        drop(q);
        if let Some((_, waker)) = waiting {
            waker.wake();
        }
        self.settled.notify_all();
    }
}

/// Marks the worker stopped.
fn stop(mut q: MutexGuard<'_, Queue>) -> MutexGuard<'_, Queue> {
    q.stopped = true;
    q
}

impl Drop for Line {
    fn drop(&mut self) {
        // The worker first: it may still have the instance's files open.
        self.worker().stop();
        super::remove_instance_dir(&self.files);
    }
}

/// One run written to the worker, until its answer is read.
struct Ticket {
    line: Arc<Line>,
    n: u64,
    ended: bool,
}

impl Ticket {
    async fn answer(mut self) -> Ran {
        let n = self.n;
        let turn = std::future::poll_fn(|cx| self.line.poll_turn(n, cx.waker())).await;
        if !turn {
            self.ended = true;
            self.line.end(n, true);
            return Ran::NotStarted;
        }
        let (mut inbox, mut have) = {
            let mut q = self.line.queue();
            (std::mem::take(&mut q.inbox), std::mem::take(&mut q.have))
        };
        let read = read_answer(&self.line.answers, &mut inbox, &mut have).await;
        let line = Arc::clone(&self.line);
        let (outcome, gone) = {
            let mut worker = line.worker();
            // Bytes past this answer with no run behind it: the worker answered what it
            // was not asked.
            let read = match read {
                Ok(end) if have > end && line.queue().sent <= n => {
                    Err(Exchange::Broken("the worker sent more than one answer".into()))
                }
                other => other,
            };
            let outcome = match read {
                Ok(end) => {
                    let outcome = worker.outcome(Ok((inbox[4], &inbox[5..end])), false);
                    inbox.copy_within(end..have, 0);
                    have -= end;
                    outcome
                }
                Err(e) => {
                    have = 0;
                    worker.outcome(Err(e), false)
                }
            };
            (outcome, !worker.is_healthy())
        };
        if inbox.len() > 1 << 20 && have <= 1 << 16 {
            inbox.truncate(have.max(4096));
            inbox.shrink_to_fit(); // do not keep one huge answer's buffer forever
        }
        {
            let mut q = self.line.queue();
            q.inbox = inbox;
            q.have = have;
        }
        self.ended = true;
        self.line.end(n, gone);
        Ran::Done(outcome)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.ended {
            self.line.abandon(self.n);
        }
        if Arc::strong_count(&self.line) == 1 {
            // The instance left the pool while this run was in flight (a scale-down, a
            // delete): the worker is stopped and reaped, and its files removed, with the last
            // reference, off the request's I/O thread.
            let last = Arc::clone(&self.line);
            if crate::threads::spawn_loader(move || drop(last)).is_err() {
                tracing::warn!("cannot start a thread to stop a worker; it is stopped here");
            }
        }
    }
}

/// Reads until `inbox[..have]` starts with one whole frame; returns its end. The pipe is
/// read at once, and waited on through the task's reactor only when it is empty (an answer
/// the worker wrote while the task was busy costs no registration).
async fn read_answer(pipe: &std::io::PipeReader, inbox: &mut Vec<u8>, have: &mut usize) -> Result<usize, Exchange> {
    use std::io::Read;
    let mut ready = None;
    loop {
        if *have >= 5 {
            let len = u32::from_be_bytes([inbox[0], inbox[1], inbox[2], inbox[3]]) as usize;
            if len > frame::MAX_FRAME {
                return Err(Exchange::TooLarge(len));
            }
            if len == 0 {
                return Err(Exchange::Broken("a frame of 0 bytes".into()));
            }
            if *have >= 4 + len {
                return Ok(4 + len);
            }
            if inbox.len() < 4 + len {
                inbox.resize(4 + len, 0);
            }
        }
        if inbox.len() < *have + 4096 {
            inbox.resize(*have + 4096, 0);
        }
        match { pipe }.read(&mut inbox[*have..]) {
            Ok(0) => return Err(Exchange::Gone),
            Ok(got) => *have += got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if ready.is_none() {
                    let registered = crate::sys::await_readable(pipe.as_fd())
                        .map_err(|e| Exchange::Broken(format!("cannot wait for the worker's pipe: {e}")))?;
                    ready = Some(registered);
                }
                let Some(fd) = ready.as_ref() else { continue };
                let mut guard = fd.readable().await.map_err(|_| Exchange::Gone)?;
                // Read again before waiting again: what arrived since is read then.
                guard.clear_ready();
            }
            Err(_) => return Err(Exchange::Gone),
        }
    }
}
