//! A deployment in its role as a shadow: its own bounded copy queue (apart from live admission,
//! so copies can never make live requests wait or fail), the comparison report, and the
//! rate-limited drop log. The control plane keeps one beside each deployment version; the
//! routing snapshot's mirror rule points at it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::executor;
use super::report::{DropReason, MirrorReport};
use super::Tolerance;
use crate::deployment::{Deployment, RunError, ScoreError};
use crate::hooks::{HookResponse, Request};
use crate::telemetry::Role;

/// One deployment version as a shadow.
pub(crate) struct Shadow {
    /// The deployment that scores the copies.
    pub deployment: Arc<Deployment>,
    /// How its answers compare with the live ones.
    pub report: MirrorReport,
    /// Copies admitted and not yet finished (queued or running).
    inflight: AtomicUsize,
    /// Rate limit of the drop log lines: copies dropped since the last line, and when (ms
    /// since `born`) that line was written.
    drops_unlogged: AtomicU64,
    drop_logged_at_ms: AtomicU64,
    born: Instant,
}

impl Shadow {
    /// The shadow side of `deployment`, comparing with `tolerance`.
    pub(crate) fn new(deployment: Arc<Deployment>, tolerance: Tolerance) -> Arc<Self> {
        Arc::new(Self {
            deployment,
            report: MirrorReport::new(tolerance),
            inflight: AtomicUsize::new(0),
            drops_unlogged: AtomicU64::new(0),
            drop_logged_at_ms: AtomicU64::new(0),
            born: Instant::now(),
        })
    }

    /// Copies admitted and not finished yet (queued or running).
    pub(crate) fn queued_copies(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts a mirror copy that was dropped (wanted in share window `window`), and says so in
    /// the log. Drops come in floods when a shadow falls behind, so the log gets at most one
    /// line per second with the count since the last one (the metric and the report count
    /// every drop). When drops pass 10% of the wanted copies the log and the tracing output
    /// also get a warning (at most one per 30 s, see [`MirrorReport::dropped`]): users set a
    /// percentage and must not be left to believe the shadow sees it when it does not.
    pub(crate) fn drop_copy(&self, request_id: &str, window: u64, reason: DropReason) {
        let d = &self.deployment;
        d.metrics().mirror_dropped.inc();
        if let Some(share) = self.report.dropped(window, reason) {
            let line = format!(
                "WARNING mirror share below target: {} of {} wanted copies dropped ({:.1}%), {} copied, since the mirror rule was set; drops by reason: {}. The shadow sees less traffic than its mirror percentage: give it more room (instance_count, max_concurrent_requests_per_instance) or CPU (serve --mirror-cpu-percent); see `online-deployment compare`",
                share.dropped,
                share.wanted,
                100.0 * share.dropped as f64 / share.wanted.max(1) as f64,
                share.copied,
                share.reasons_text(),
            );
            d.logs().push(&line);
            tracing::warn!(deployment = %d.name(), wanted = share.wanted, copied = share.copied, dropped = share.dropped, "{line}");
        }
        self.drops_unlogged.fetch_add(1, Ordering::Relaxed);
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.drop_logged_at_ms.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 1000)
            && self.drop_logged_at_ms.compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            let n = self.drops_unlogged.swap(0, Ordering::Relaxed);
            d.logs().push(format!(
                "request_id={request_id} role=mirror dropped ({}): {} ({n} copies dropped since the last such line)",
                reason.key(),
                reason.describe()
            ));
        }
    }

    /// Admits a copy into this shadow's own bounded queue (as deep as the deployment's
    /// admission cap). Counts the copy as wanted first, so that every copy the front door
    /// picks is either scored or dropped with a reason. `None` when the queue is full (the
    /// copy is dropped and counted).
    pub(crate) fn admit_copy(self: &Arc<Self>, request_id: &str) -> Option<CopyTicket> {
        let window = self.report.wanted();
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        if before >= self.deployment.capacity() {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            // A queue full of copies waiting for CPU is the budget's doing: say so, so that the
            // user raises the budget rather than the shadow's size.
            let reason =
                if executor::shadow_budget().available() { DropReason::QueueFull } else { DropReason::CpuBudget };
            self.drop_copy(request_id, window, reason);
            return None;
        }
        Some(CopyTicket { shadow: Arc::clone(self), window })
    }

    /// Scores an admitted copy on the calling (shadow) thread, within the shadow CPU budget,
    /// on an instance that is idle then: the copy never takes a place in an instance's queue,
    /// so it never runs ahead of a live (pinned) request. While the budget is spent or every
    /// instance is busy (another copy, pinned requests) it waits on this thread and tries
    /// again, until its deadline (`request_timeout_ms` after it was queued at `queued`);
    /// `None` when it is dropped then (counted, with the reason), or at once when the shadow
    /// has no ready instance. The budget is charged by the shadow thread, in CPU time.
    pub(crate) fn score_copy(
        &self,
        copy: Request<'_>,
        queued: Instant,
        window: u64,
    ) -> Option<(Result<HookResponse, ScoreError>, Duration)> {
        let d = &self.deployment;
        let request_id = copy.request_id;
        let deadline = queued + d.timeout();
        let budget = executor::shadow_budget();
        let mut pause = Duration::from_micros(50);
        loop {
            let waiting_for = if budget.available() {
                let start = Instant::now();
                match d.pool().run_here_if_idle(copy) {
                    Err(RunError::Busy) => DropReason::NoIdleInstance,
                    Err(RunError::NoInstance) => {
                        self.drop_copy(request_id, window, DropReason::NotReady);
                        return None;
                    }
                    other => {
                        let elapsed = start.elapsed();
                        let outcome = other.map_err(ScoreError::from);
                        self.report.copied(window);
                        d.record(Role::mirror, request_id, &outcome, elapsed);
                        return Some((outcome, elapsed));
                    }
                }
            } else {
                DropReason::CpuBudget
            };
            if Instant::now() >= deadline {
                self.drop_copy(request_id, window, waiting_for);
                return None;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(2));
        }
    }
}

/// A copy's place in its shadow's queue; freed when the copy is done or dropped.
pub(crate) struct CopyTicket {
    shadow: Arc<Shadow>,
    /// The share window the copy was wanted in (see `MirrorReport::wanted`).
    window: u64,
}

impl CopyTicket {
    /// The shadow.
    pub(crate) fn shadow(&self) -> &Arc<Shadow> {
        &self.shadow
    }

    /// The share window the copy was wanted in.
    pub(crate) fn window(&self) -> u64 {
        self.window
    }
}

impl Drop for CopyTicket {
    fn drop(&mut self) {
        self.shadow.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}
