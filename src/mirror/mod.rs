//! Shadow (mirror) traffic: copying a share of unpinned requests to a shadow deployment,
//! pairing each shadow answer with the live answer to the same request, and keeping the
//! comparison report.
//!
//! The live path pays one admission check and a queue push for a copy, and one store of its
//! answer afterwards; it never waits for the shadow. Everything else — scoring the copy,
//! logging it, parsing and comparing both answers — runs on the shadow threads
//! (`executor`): below live priority, within a CPU budget. A shadow that falls
//! behind fills its queue, and further copies are dropped and counted with the reason; the
//! effective share (wanted / copied / dropped) is part of the report.
#![forbid(unsafe_code)]

pub(crate) mod compare;
pub(crate) mod executor;
pub(crate) mod report;
pub(crate) mod shadow;

use std::sync::{Arc, Mutex};

use crate::hooks::{Headers, Request};
use bytes::Bytes;

pub(crate) use compare::Tolerance;
pub(crate) use report::{Answer, ReportView, ShareView};
pub(crate) use shadow::Shadow;

/// Where the two answers of a mirrored request meet. Whichever side arrives second has the
/// pair recorded, always on a shadow thread, so neither side ever waits for the other.
struct Rendezvous {
    shadow: Arc<Shadow>,
    request_id: Box<str>,
    state: Mutex<Meeting>,
}

#[derive(Default)]
enum Meeting {
    #[default]
    Empty,
    Live(Answer),
    Shadow(Answer),
    /// The live request ended without an answer (its future was dropped).
    LiveGone,
    Done,
}

impl Rendezvous {
    /// Records the pair (runs on a shadow thread).
    fn record(&self, live: Option<&Answer>, shadow: &Answer) {
        match live {
            Some(live) => self.shadow.report.record(&self.request_id, live, shadow),
            None => self.shadow.report.record_unpaired(),
        }
    }

    /// The shadow's answer arrives (on a shadow thread).
    fn shadow_answered(&self, answer: Answer) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, Meeting::Done) {
            Meeting::Empty => *state = Meeting::Shadow(answer),
            Meeting::Live(live) => {
                drop(state);
                self.record(Some(&live), &answer);
            }
            _ => {
                drop(state);
                self.record(None, &answer);
            }
        }
    }

    /// The live answer arrives, or `None` when the live request went away (front door).
    fn live_answered(self: &Arc<Self>, answer: Option<Answer>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match std::mem::replace(&mut *state, Meeting::Done) {
            Meeting::Empty => *state = answer.map_or(Meeting::LiveGone, Meeting::Live),
            Meeting::Shadow(shadow) => {
                drop(state);
                // The comparison parses both bodies: not on a live thread.
                let me = Arc::clone(self);
                if executor::spawn(move || me.record(answer.as_ref(), &shadow)).is_err() {
                    self.shadow.report.record_unpaired();
                }
            }
            _ => {}
        }
    }
}

/// Where the front door puts the live answer of a mirrored request.
pub(crate) struct LiveAnswerSlot(Option<Arc<Rendezvous>>);

impl LiveAnswerSlot {
    /// Hands the live answer over (never waits for the shadow).
    pub(crate) fn send(mut self, answer: Answer) {
        if let Some(r) = self.0.take() {
            r.live_answered(Some(answer));
        }
    }
}

impl Drop for LiveAnswerSlot {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r.live_answered(None);
        }
    }
}

/// Sends a copy of a request to `shadow`. Returns the slot for the live answer, or `None` when
/// the shadow's queue is full and the copy was dropped (and counted).
/// What a shadow that collects payloads logs with its copy's answer (the front door knows the
/// request's path, method and headers; the copy does not).
pub(crate) struct Collect {
    pub path: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
}

/// The copy's span (traces on): a trace of its own, linked to the live request's span, since
/// a copy never makes the live request wait and is not a stage of it. It ends when the copy is
/// answered or dropped. None when the live request is not sampled: a copy's trace would link
/// to a span that is never exported.
fn copy_span(deployment: &crate::deployment::Deployment) -> Option<tracing::Span> {
    use crate::telemetry::traces;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !traces::on() {
        return None;
    }
    let live = tracing::Span::current().context();
    let live = live.span().span_context().clone();
    if !live.is_sampled() {
        return None;
    }
    let span = tracing::info_span!(
        target: traces::TARGET,
        parent: None,
        "mirror",
        deployment = deployment.name(),
        status = tracing::field::Empty,
    );
    span.add_link(live);
    Some(span)
}

pub(crate) fn copy(shadow: &Arc<Shadow>, request: Request<'_>, collect: Option<Collect>) -> Option<LiveAnswerSlot> {
    let request_id = request.request_id;
    let ticket = shadow.admit_copy(request_id)?;
    let meeting = Arc::new(Rendezvous {
        shadow: Arc::clone(shadow),
        request_id: request_id.into(),
        state: Mutex::new(Meeting::Empty),
    });
    let for_shadow = Arc::clone(&meeting);
    let body = request.body.clone();
    let content_type: Option<Box<str>> = request.content_type.map(Into::into);
    let protocol = request.protocol;
    let span = copy_span(&shadow.deployment);
    // Copied only for a shadow whose hook reads them (a scoring script); its `traceparent` names
    // the copy's span, so the script's own spans join the copy's trace, not the live one's.
    let headers = if shadow.deployment.pool().wants_headers() {
        let mut headers = request.headers.clone();
        if let Some(traceparent) = span.as_ref().and_then(crate::telemetry::traces::traceparent) {
            headers.retain(|name| name != "traceparent");
            headers.push("traceparent", traceparent.as_bytes());
        }
        headers
    } else {
        Headers::default()
    };
    let queued_at = std::time::Instant::now();
    let window = ticket.window();
    let queued = executor::spawn(move || {
        let shadow = ticket.shadow();
        let copy = Request {
            body: &body,
            content_type: content_type.as_deref(),
            headers: &headers,
            protocol,
            request_id: &for_shadow.request_id,
        };
        let Some((outcome, latency)) = shadow.score_copy(copy, queued_at, ticket.window()) else {
            return; // counted as a drop
        };
        if let Some(span) = &span {
            span.record("status", i64::from(outcome.as_ref().map_or_else(|e| e.status(), |r| r.status)));
        }
        let collector = shadow.deployment.collector().cloned();
        drop(ticket);
        if let (Some(c), Some(collector)) = (collect, collector) {
            let (status, response_body, response_content_type) = match &outcome {
                Ok(r) => (r.status, r.body.clone(), r.content_type.into()),
                Err(e) => (e.status(), Bytes::from(e.reason()), "text/plain; charset=utf-8".into()),
            };
            collector.payload(crate::collector::Payload {
                role: crate::collector::Role::Mirror,
                request_id: for_shadow.request_id.to_string(),
                path: c.path,
                method: c.method,
                headers: c.headers,
                request_body: body.clone(),
                request_content_type: content_type.as_deref().map(String::from),
                status,
                response_body,
                response_content_type,
            });
        }
        for_shadow.shadow_answered(match outcome {
            Ok(r) => Answer { status: r.status, body: r.body, latency },
            Err(e) => Answer { status: e.status(), body: Bytes::new(), latency },
        });
    });
    if queued.is_err() {
        // The job (and its ticket) is dropped with the error: the copy never ran.
        shadow.drop_copy(request_id, window, report::DropReason::QueueFull);
        return None;
    }
    Some(LiveAnswerSlot(Some(meeting)))
}
