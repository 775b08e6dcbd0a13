//! Runs queued one behind another in a Python worker's pipe.
//!
//! Why: a worker that answers a run and finds its pipe empty goes to sleep, and is woken when
//! the server writes the next request; under load that sleep and wake-up (and the caches
//! other processes cooled meanwhile) cost the worker about as much CPU as the script's own
//! `run()` (`perf` of the sample at c=32: a fifth of the worker's samples in the scheduler),
//! and each write that wakes it costs the server a cross-CPU wake-up. So once at most one
//! run is ahead of a run in the worker, its instance goes back to the pool ([`Started::lend`])
//! and another run may be written behind it, up to [`DEPTH`] in all; the worker reads them in
//! order and answers in order, and while it runs one, the next ones wait in its pipe.
//!
//! The rules that keep this as safe as one run at a time:
//! - Answers are read in the order the runs were written: each run has a ticket, and a
//!   ticket reads only when every ticket before it has read its answer ([`Queue::done`]).
//!   Bytes read past one answer belong to the next ticket and are kept for it.
//! - Frames queued in the pipe together always fit in it ([`Worker::request_pipe_bytes`]), so
//!   writing one never waits for the worker (the write is made on an I/O thread).
//! - A run given up while it is in the worker (its deadline, its client gone) stops the
//!   worker, as before: it might never end; but when its whole answer is already there, the
//!   answer is read and dropped and the worker goes on (it may have begun the next run). A
//!   run given up while it waits behind another is marked, and the worker is stopped when its
//!   turn comes. Runs waiting behind a run whose worker stopped in it never began (the
//!   worker runs one at a time and never answered the one before): they end
//!   not started (`Turn::NotStarted`, or `None` from a lent run's answer) and the pool runs
//!   them on another instance. Only when the worker
//!   was retired after a whole answer (it broke the protocol) may the next run have begun:
//!   that one fails, it is not run twice.
//! - The pool hears at once when a worker stops while its instance is lent
//!   ([`Line::on_stop`]), so the instance is replaced then, not when a request next takes it.
//! - The worker and its files live until the last run started on it has its answer
//!   ([`Line`] is shared by the instance and its runs in flight), so a scale-down or a
//!   delete never cuts a run short.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use super::frame;
use crate::hooks::worker::{Exchange, Worker};
use crate::hooks::{HookError, HookRequest, HookResponse, Started, Turn};

/// Runs one worker holds at most: the one it runs and two waiting behind it. With one
/// behind, the next request was written only once the server thread that read the previous
/// answer got the CPU back, which on 2 cores shared with the load generator often took
/// longer than a run: at c=32 the worker found its pipe empty after 0.37–0.39 runs per
/// request, against 0.29 at c=8, and c=32 served less than c=8. Two behind give the server
/// two runs' time. The pool gives a request the instance with the fewest runs in flight, so
/// a request waits behind two others only when every instance is that busy.
pub(super) const DEPTH: usize = 3;

/// A run's instance is lent back (and may take another run) once at most this many runs
/// are ahead of it in the worker.
const LEND_BEHIND: u64 = DEPTH as u64 - 2;

/// One worker process and the runs in its pipe.
pub(super) struct Line {
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
    /// False once the worker stopped or was retired; read without a lock (a worker being
    /// reaped holds its mutex for up to half a second).
    healthy: AtomicBool,
    /// Told when the worker stops ([`Line::on_stop`]).
    stop_notice: OnceLock<Arc<dyn Fn() + Send + Sync>>,
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
    /// Bytes read past the answers taken so far: the start of the next ticket's answer
    /// (taken by the ticket whose turn it is while it reads).
    inbox: Vec<u8>,
    have: usize,
    /// Tickets waiting (to be lent, or for their turn), woken when a ticket ends.
    waiting: Vec<(u64, Waker)>,
    /// Tickets given up while they waited behind another: the worker is stopped at their turn.
    abandoned: Vec<u64>,
    /// The worker was stopped or died: tickets that have not had their turn never began...
    stopped: bool,
    /// ...unless it was retired after it had answered the run before theirs whole.
    maybe_begun: bool,
}

impl Line {
    pub(super) fn new(worker: Worker, files: PathBuf) -> std::io::Result<Arc<Self>> {
        let answers = worker.answer_reader()?;
        Ok(Arc::new(Self {
            worker: Mutex::new(worker),
            answers,
            queue: Mutex::default(),
            settled: Condvar::new(),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            stop_notice: OnceLock::new(),
            files,
        }))
    }

    pub(super) fn worker(&self) -> MutexGuard<'_, Worker> {
        self.worker.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(super) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// `notice` is called (on whichever thread stops it, with no lock held) when the worker
    /// stops or is retired: the pool then replaces the instance if it is idle.
    pub(super) fn on_stop(&self, notice: Arc<dyn Fn() + Send + Sync>) {
        let _ = self.stop_notice.set(notice);
    }

    /// Writes the run's frame and returns its ticket; `None` when it cannot be queued now
    /// (the worker holds [`DEPTH`] runs, or the frame would not fit behind the one in the
    /// pipe): the caller runs it through [`Line::run`] instead. On a worker that is gone the
    /// run never begins ([`Turn::NotStarted`]).
    pub(super) fn start(self: &Arc<Self>, request: &HookRequest<'_>) -> Option<Started> {
        let not_started = || Some(Started { lend: false, turn: Box::pin(std::future::ready(Turn::NotStarted)) });
        let mut worker = self.worker();
        if !worker.is_healthy() || !self.is_healthy() {
            return not_started();
        }
        // A frame that cannot be built (over 4 GiB) is the blocking path's to refuse.
        let len = worker.prepare_run(request).ok()?;
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
            self.stop(self.queue(), false);
            return not_started();
        }
        q.sent += 1;
        q.frames.push_back(len);
        let ticket = Ticket { line: Some(Arc::clone(self)), n: q.sent, ended: false, inbox: None };
        self.in_flight.store(q.frames.len(), Ordering::Relaxed);
        drop(q);
        drop(worker);
        Some(Started { lend: true, turn: Box::pin(ticket.turn()) })
    }

    /// A run on the calling (blocking) thread, once the runs queued before it have ended.
    pub(super) fn run(&self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        let limit = self.worker().timeout();
        self.settle(limit);
        let mut worker = self.worker();
        let mut q = self.queue();
        if q.stopped {
            return Err(HookError::Failed(
                "the instance's Python worker stopped before it took this run; it is being replaced".into(),
            ));
        }
        if !q.frames.is_empty() {
            return Err(HookError::Failed("the instance's Python worker is still busy; try again".into()));
        }
        // Nothing is in flight: the worker is ours until this run ends (tickets are only
        // written by whoever holds the instance, and that is this thread).
        q.have = 0;
        drop(q);
        let outcome = worker.run(request);
        let gone = !worker.is_healthy();
        drop(worker);
        if gone {
            self.stop(self.queue(), false);
        }
        outcome
    }

    /// Waits (at most `limit`) until no run is in the pipe.
    pub(super) fn settle(&self, limit: Duration) {
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

    /// Ticket `n`'s wait until at most `ahead` tickets before it have not ended (0: its
    /// turn); `Err(maybe_begun)` when the worker stopped before that.
    fn poll_ahead(&self, n: u64, ahead: u64, waker: &Waker) -> Poll<Result<(), bool>> {
        let mut q = self.queue();
        if q.stopped {
            return Poll::Ready(Err(q.maybe_begun));
        }
        if q.done + 1 + ahead >= n {
            return Poll::Ready(Ok(()));
        }
        match q.waiting.iter_mut().find(|(w, _)| *w == n) {
            Some((_, w)) if w.will_wake(waker) => {}
            Some((_, w)) => *w = waker.clone(),
            None => q.waiting.push((n, waker.clone())),
        }
        Poll::Pending
    }

    /// Ticket `n` ended: its answer was read (`answered`), or the worker stopped under it.
    /// `gone`: the worker can serve no more.
    fn end(&self, n: u64, gone: bool, answered: bool) {
        let mut q = self.queue();
        q.done = q.done.max(n);
        q.frames.pop_front();
        if gone {
            return self.stop(q, answered);
        }
        if let Some(at) = q.abandoned.iter().position(|a| *a == n + 1).filter(|_| !q.stopped) {
            // The run behind this one was given up: the worker takes it now, with nobody to
            // read its answer or stop it at a deadline.
            q.abandoned.swap_remove(at);
            drop(q);
            self.worker().stopped_at_deadline();
            // A run may wait behind the one given up ([`DEPTH`] 3), and the worker may have
            // answered the given-up run whole and begun that next one before it was stopped:
            // then the next one must not be run again elsewhere.
            let mut q = self.queue();
            let (mut buf, mut have) = (std::mem::take(&mut q.inbox), std::mem::take(&mut q.have));
            let answered = matches!(read_now(&self.answers, &mut buf, &mut have), Ok(Some(_)));
            return self.stop(q, answered);
        }
        self.wake(q);
    }

    /// Ticket `n` was given up before its answer was taken; `inbox`: what it had read.
    fn abandon(&self, n: u64, inbox: Option<(Vec<u8>, usize)>) {
        let mut q = self.queue();
        if q.stopped || q.done >= n {
            q.frames.pop_front();
            q.done = q.done.max(n);
            return self.wake(q);
        }
        if q.done + 1 != n {
            // It waits behind another run: the worker is stopped when its turn comes.
            q.waiting.retain(|(w, _)| *w != n);
            q.abandoned.push(n);
            return;
        }
        // Its run is in the worker, or done: if its whole answer is there, the answer is
        // dropped and the worker goes on (it may be running the next run already).
        let (mut buf, mut have) = inbox.unwrap_or_else(|| (std::mem::take(&mut q.inbox), std::mem::take(&mut q.have)));
        if let Ok(Some(end)) = read_now(&self.answers, &mut buf, &mut have) {
            buf.copy_within(end..have, 0);
            q.inbox = buf;
            q.have = have - end;
            drop(q);
            return self.end(n, false, true);
        }
        // Still running: it might never end, and nobody would stop it at a deadline.
        drop(q);
        self.worker().stopped_at_deadline();
        // Its answer may have come whole between the look above and the kill: then the worker
        // may have begun the next run, which must not be run again elsewhere.
        let mut q = self.queue();
        let answered = matches!(read_now(&self.answers, &mut buf, &mut have), Ok(Some(_)));
        q.done = q.done.max(n);
        q.frames.pop_front();
        self.stop(q, answered);
    }

    /// Marks the worker stopped (what waits behind it is woken to go elsewhere) and tells
    /// the pool.
    fn stop(&self, mut q: MutexGuard<'_, Queue>, maybe_begun: bool) {
        let first = !q.stopped;
        q.stopped = true;
        q.maybe_begun |= maybe_begun;
        self.healthy.store(false, Ordering::Release);
        self.wake(q);
        if first {
            if let Some(notice) = self.stop_notice.get() {
                notice();
            }
        }
    }

    fn wake(&self, mut q: MutexGuard<'_, Queue>) {
        if q.stopped {
            q.frames.clear();
        }
        self.in_flight.store(q.frames.len(), Ordering::Relaxed);
        let waiting = std::mem::take(&mut q.waiting);
        drop(q);
        for (_, waker) in waiting {
            waker.wake();
        }
        self.settled.notify_all();
    }
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
    /// `None` only once dropped (the last reference may be handed to another thread).
    line: Option<Arc<Line>>,
    n: u64,
    ended: bool,
    /// The answer bytes read so far, while it is this ticket's turn.
    inbox: Option<(Vec<u8>, usize)>,
}

impl Ticket {
    fn line(&self) -> &Arc<Line> {
        self.line.as_ref().expect("a ticket's line is taken only when it drops")
    }

    /// Waits until at most [`LEND_BEHIND`] tickets before this one have not ended: the
    /// instance may then be lent.
    async fn turn(mut self) -> Turn {
        let n = self.n;
        match std::future::poll_fn(|cx| self.line().poll_ahead(n, LEND_BEHIND, cx.waker())).await {
            Ok(()) => Turn::Begun(Box::pin(self.answer())),
            Err(maybe_begun) => match self.never_had_its_turn(maybe_begun) {
                Some(failed) => Turn::Begun(Box::pin(std::future::ready(Some(failed)))),
                None => Turn::NotStarted,
            },
        }
    }

    /// The worker stopped before this ticket's turn: `None` when the run never began (the
    /// pool runs it elsewhere), a failure when it may have.
    fn never_had_its_turn(&mut self, maybe_begun: bool) -> Option<Result<HookResponse, HookError>> {
        self.ended = true;
        self.line().end(self.n, true, false);
        // Not run twice: it may have begun in the worker that was retired.
        maybe_begun.then(|| {
            Err(HookError::Failed(
                "the Python worker was stopped after it broke the protocol; this run may have begun in it".into(),
            ))
        })
    }

    /// Waits for this ticket's turn and reads its answer; `None` when the worker stopped
    /// before it took the run.
    async fn answer(mut self) -> Option<Result<HookResponse, HookError>> {
        let n = self.n;
        if let Err(maybe_begun) = std::future::poll_fn(|cx| self.line().poll_ahead(n, 0, cx.waker())).await {
            return self.never_had_its_turn(maybe_begun);
        }
        Some(self.read_answer().await)
    }

    /// Reads this ticket's answer (its turn has come).
    async fn read_answer(&mut self) -> Result<HookResponse, HookError> {
        let n = self.n;
        let line = Arc::clone(self.line());
        self.inbox = Some({
            let mut q = line.queue();
            (std::mem::take(&mut q.inbox), std::mem::take(&mut q.have))
        });
        let (inbox, have) = self.inbox.as_mut().expect("just set");
        let read = read_answer(&line.answers, inbox, have).await;
        let (inbox, mut have) = self.inbox.take().expect("set above");
        let mut inbox = inbox;
        let answered = read.is_ok();
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
            let mut q = line.queue();
            q.inbox = inbox;
            q.have = have;
        }
        self.ended = true;
        line.end(n, gone, answered);
        outcome
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let Some(line) = self.line.take() else { return };
        if !self.ended {
            line.abandon(self.n, self.inbox.take());
        }
        if let Some(last) = Arc::into_inner(line) {
            // The instance left the pool while this run was in flight (a scale-down, a
            // delete): the worker is stopped and reaped, and its files removed, off the
            // request's I/O thread.
            if crate::threads::spawn_loader(move || drop(last)).is_err() {
                tracing::warn!("cannot start a thread to stop a worker; it is stopped here");
            }
        }
    }
}

/// Where the first frame in `inbox[..have]` ends, once it is whole; `Err` for a frame that
/// cannot be.
fn frame_end(inbox: &[u8], have: usize) -> Result<Option<usize>, Exchange> {
    if have < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([inbox[0], inbox[1], inbox[2], inbox[3]]) as usize;
    if len > frame::MAX_FRAME {
        return Err(Exchange::TooLarge(len));
    }
    if len == 0 {
        return Err(Exchange::Broken("a frame of 0 bytes".into()));
    }
    Ok((have >= 4 + len).then_some(4 + len))
}

/// One non-blocking read into `inbox` after `have` (made room for); `Ok(false)` when the
/// pipe is empty now.
fn read_some(pipe: &std::io::PipeReader, inbox: &mut Vec<u8>, have: &mut usize) -> Result<bool, Exchange> {
    use std::io::Read;
    if inbox.len() < *have + 4096 {
        inbox.resize(*have + 4096, 0);
    }
    if *have >= 5 {
        let want = 4 + u32::from_be_bytes([inbox[0], inbox[1], inbox[2], inbox[3]]) as usize;
        if inbox.len() < want {
            inbox.resize(want, 0);
        }
    }
    loop {
        match { pipe }.read(&mut inbox[*have..]) {
            Ok(0) => return Err(Exchange::Gone),
            Ok(got) => {
                *have += got;
                return Ok(true);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(false),
            Err(_) => return Err(Exchange::Gone),
        }
    }
}

/// What is there now, without waiting: the end of the whole first frame, or `None`.
fn read_now(pipe: &std::io::PipeReader, inbox: &mut Vec<u8>, have: &mut usize) -> Result<Option<usize>, Exchange> {
    loop {
        if let Some(end) = frame_end(inbox, *have)? {
            return Ok(Some(end));
        }
        if !read_some(pipe, inbox, have)? {
            return Ok(None);
        }
    }
}

/// Reads until `inbox[..have]` starts with one whole frame; returns its end. The pipe is
/// read at once, and waited on through the task's reactor only when it is empty (an answer
/// the worker wrote while the task was busy costs no registration).
async fn read_answer(pipe: &std::io::PipeReader, inbox: &mut Vec<u8>, have: &mut usize) -> Result<usize, Exchange> {
    let mut ready = None;
    loop {
        if let Some(end) = read_now(pipe, inbox, have)? {
            return Ok(end);
        }
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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    use super::*;
    use crate::hooks::worker::Flavor;
    use crate::hooks::{Headers, InitContext};

    /// A worker speaking the frame protocol that answers each run with its body, except that
    /// it answers "A" only once the file `go` exists, and on "C" writes `c-began` and stays.
    const WORKER: &str = r#"
import os, struct, sys, time
IN, OUT, DIR = 3, 4, sys.argv[1]
def read_exact(n):
    b = b""
    while len(b) < n:
        c = os.read(IN, n - len(b))
        if not c:
            sys.exit(0)
        b += c
    return b
while True:
    length, _ = struct.unpack(">IB", read_exact(5))
    p = read_exact(length - 1)
    at = 2 + struct.unpack(">H", p[:2])[0]
    body = p[at + 4 + struct.unpack(">I", p[at:at + 4])[0]:]
    if body == b"A":
        while not os.path.exists(os.path.join(DIR, "go")):
            time.sleep(0.005)
    if body == b"C":
        open(os.path.join(DIR, "c-began"), "w").close()
        time.sleep(60)
    ct = b"text/plain"
    payload = struct.pack(">HH", 200, len(ct)) + ct + struct.pack(">I", 0) + body
    os.write(OUT, struct.pack(">IB", len(payload) + 1, ord("A")) + payload)
"#;

    fn started(line: &Arc<Line>, body: &'static [u8]) -> Started {
        let request = HookRequest { body, content_type: None, headers: Headers::none(), cancel: None };
        line.start(&request).expect("the run is written")
    }

    fn wait_for(file: &Path) {
        let until = Instant::now() + Duration::from_secs(20);
        while !file.exists() {
            assert!(Instant::now() < until, "{} never appeared", file.display());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Review finding: A runs, B and C wait behind it, B is given up. The worker answers A
    /// and B whole and begins C before A's answer is read; reading it stops the worker at
    /// B's turn. C may have begun (here it did): it must fail, not be run again elsewhere.
    #[test]
    fn a_run_behind_a_given_up_one_that_the_worker_may_have_begun_is_not_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("python3");
        cmd.arg("-c").arg(WORKER).arg(dir.path());
        let worker = Worker::spawn(cmd, &InitContext::new("t", BTreeMap::new()), 0, Flavor::Python).unwrap();
        let line = Line::new(worker, dir.path().join("instance")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let Turn::Begun(a) = started(&line, b"A").turn.await else { panic!("A is lent at once") };
            let Turn::Begun(b) = started(&line, b"B").turn.await else { panic!("B is lent at once") };
            let c = started(&line, b"C");
            drop(b); // B is given up while it waits behind A
            std::fs::write(dir.path().join("go"), b"").unwrap();
            wait_for(&dir.path().join("c-began"));
            let a = a.await.expect("A began").expect("A is answered");
            assert_eq!(&a.body[..], b"A");
            match c.turn.await {
                Turn::NotStarted => panic!("C began in the stopped worker and would be run again elsewhere"),
                Turn::Begun(c) => {
                    let failed = c.await.expect("C may have begun: it is not sent elsewhere");
                    assert!(matches!(&failed, Err(HookError::Failed(m)) if m.contains("may have begun")), "{failed:?}");
                }
            }
        });
    }
}
