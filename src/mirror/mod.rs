//! Shadow (mirror) traffic: copying a share of unpinned requests to a shadow deployment,
//! pairing each shadow answer with the live answer to the same request, and keeping the
//! comparison report.
//!
//! The live path pays one check and, for a copied request, one channel send after its answer
//! is ready; it never waits for the shadow. The shadow task scores the copy on the shadow's own
//! pool (always on the blocking side), then waits for the live answer and records the pair.

pub mod compare;
pub mod report;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::deployment::{Deployment, ScoreError};
use crate::telemetry::Role;

pub use compare::Tolerance;
pub use report::{Answer, MirrorReport};

/// Where the front door sends the live answer of a mirrored request.
pub struct LiveAnswerSlot(oneshot::Sender<Answer>);

impl LiveAnswerSlot {
    /// Hands the live answer to the shadow task (never blocks; a finished task is fine).
    pub fn send(self, answer: Answer) {
        let _ = self.0.send(answer);
    }
}

/// Sends a copy of a request to `shadow`. Returns the slot for the live answer, or `None` when
/// the shadow is full and the copy was dropped (and counted).
pub fn copy(
    shadow: Arc<Deployment>,
    body: Bytes,
    content_type: Option<&str>,
    request_id: &str,
) -> Option<LiveAnswerSlot> {
    if !shadow.has_room_for_copy() {
        shadow.drop_copy(request_id, "shadow deployment is full");
        return None;
    }
    let (tx, rx) = oneshot::channel();
    let content_type = content_type.map(str::to_owned);
    let request_id = request_id.to_owned();
    actix_web::rt::spawn(async move {
        let start = Instant::now();
        let outcome = shadow.score(body, content_type.as_deref(), Role::mirror, &request_id).await;
        let shadow_answer = match outcome {
            Ok(r) => Answer { status: r.status, body: r.body, latency: start.elapsed() },
            // Dropped (full or busy): already counted as a drop, not a pair.
            Err(ScoreError::Overloaded) => return,
            Err(e) => Answer { status: e.status(), body: Bytes::new(), latency: start.elapsed() },
        };
        match rx.await {
            Ok(live) => shadow.mirror_report.record(&request_id, &live, &shadow_answer),
            Err(_) => shadow.mirror_report.record_unpaired(),
        }
    });
    Some(LiveAnswerSlot(tx))
}
