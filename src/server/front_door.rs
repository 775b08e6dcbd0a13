//! `POST /score`: authenticate, pick a deployment (pin header or weighted traffic), copy a
//! share of unpinned requests to the shadow, score, and answer with the headers of CONTRACT §6.
//! The Open Inference Protocol's `infer` ([`super::oip`]) goes through the same steps: only
//! its error spelling, the model-name check and how the hook reads the body differ
//! ([`Scoring`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::{ConnectionType, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use arc_swap::ArcSwap;
use bytes::Bytes;

use super::body::{self, BodyLimits};
use super::errors::{ErrorStyle, Refused};
use crate::collector;
use crate::deployment::Deployment;
use crate::endpoint::{RoutingTable, Unavailable};
use crate::hooks::{Headers, Protocol, Request};
use crate::mirror::{self, Answer, Shadow};
use crate::telemetry::sharded::ShardedCounter;
use crate::telemetry::traces;

/// The header that pins a deployment and names the one that answered.
pub(crate) const DEPLOYMENT_HEADER: &str = "azureml-model-deployment";

// Header names the front door reads or writes on every request, made at compile time:
// `HeaderName::from_static` at run time, and a lookup by `&str`, parse and validate the name
// each time (measured: ~1,000 instructions per request for these four names).
const DEPLOYMENT: HeaderName = HeaderName::from_static(DEPLOYMENT_HEADER);
const CLIENT_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-client-request-id");
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const MS_REQUEST_ID: HeaderName = HeaderName::from_static("x-ms-request-id");
/// W3C trace context: read only when traces are on.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Client request ids longer than this are refused with 431, as the Azure server does.
pub(crate) const MAX_CLIENT_REQUEST_ID: usize = 100;
/// Total size of a request's header names and values beyond which it is refused with 431
/// (actix-web itself refuses more than 96 headers with 431).
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What the scoring plane's handlers share.
pub(crate) struct ScoringState {
    /// The current routing snapshot.
    pub routing: Arc<ArcSwap<RoutingTable>>,
    /// Bumped by the control plane after each publish: tells a worker thread its cached
    /// snapshot is stale without touching the shared snapshot itself.
    pub publish_count: Arc<AtomicU64>,
    /// Largest accepted body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// How long a body may take to arrive (408 beyond).
    pub body_timeout: Duration,
    /// Shutdown state and the count of `/score` requests being handled.
    pub drain: Arc<Drain>,
}

/// What a graceful shutdown needs from the front door. After SIGTERM the listeners stay open
/// (Kubernetes keeps sending to a terminating pod until its endpoints are updated, and expects
/// 503 and a failing readiness probe meanwhile, not refused connections): new requests get
/// 503 with `Connection: close`, and the server waits for `active` to reach zero before it
/// stops listening.
///
/// The requests in flight are counted with sharded counters (one cache line per thread shard,
/// as the metrics are): one atomic shared by every worker, touched twice per request, is the
/// cache-line bounce the hot path is built to avoid.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    shutting_down: AtomicBool,
    entered: ShardedCounter,
    left: ShardedCounter,
}

impl Drain {
    /// From now on, new requests are refused (503) and every answer closes its connection.
    pub(crate) fn begin(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Whether [`begin`](Self::begin) was called.
    pub(crate) fn shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// `/score` requests being handled now.
    pub(crate) fn active(&self) -> usize {
        // Exits first: every exit counted was preceded by its entry, so this never goes below
        // the true count of requests still inside.
        let left = self.left.get();
        std::sync::atomic::fence(Ordering::SeqCst);
        self.entered.get().saturating_sub(left) as usize
    }

    pub(crate) fn enter(&self) -> Active<'_> {
        self.entered.inc();
        Active(self)
    }

    /// As [`enter`](Self::enter), for a call counted before its handler runs (a gRPC call
    /// whose message is still arriving: `super::grpc::KeyGate`).
    pub(crate) fn enter_owned(self: &Arc<Self>) -> OwnedActive {
        self.entered.inc();
        OwnedActive(Arc::clone(self))
    }

    /// Marks `response` to close its connection when shutting down, so clients reconnect
    /// (to another replica) instead of keeping a connection to a process about to exit.
    pub(crate) fn close_if_shutting_down(&self, response: &mut HttpResponse) {
        if self.shutting_down() {
            response.head_mut().set_connection_type(ConnectionType::Close);
        }
    }
}

/// One `/score` request being handled; counted in [`Drain::active`] until dropped.
pub(crate) struct Active<'a>(&'a Drain);

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.left.inc();
    }
}

/// As [`Active`], owning its hold on the drain.
pub(crate) struct OwnedActive(Arc<Drain>);

impl Drop for OwnedActive {
    fn drop(&mut self) {
        self.0.left.inc();
    }
}

/// A worker thread's handle on the snapshot: the `Rc` is the point (its count is not atomic
/// and not shared between threads), so the extra allocation is intended.
#[allow(clippy::redundant_allocation)]
pub(crate) type LocalSnapshot = Rc<Arc<RoutingTable>>;

thread_local! {
    /// This worker thread's copy of the routing snapshot, and the generation it was taken at.
    static SNAPSHOT: RefCell<Option<(u64, LocalSnapshot)>> = const { RefCell::new(None) };
}

impl ScoringState {
    /// The routing snapshot, through a per-thread cache: a request holds it by a
    /// thread-local `Rc` and borrows its deployments, so no reference count shared between
    /// worker threads is touched per request (on two cores that cache line would bounce on
    /// every request). A publish bumps `publish_count`, and the next request on each thread takes
    /// the new snapshot.
    pub(crate) fn snapshot(&self) -> LocalSnapshot {
        let generation = self.publish_count.load(Ordering::Acquire);
        SNAPSHOT.with(|cell| {
            let mut cached = cell.borrow_mut();
            match &*cached {
                Some((g, table)) if *g == generation => Rc::clone(table),
                _ => {
                    let table = Rc::new(self.routing.load_full());
                    *cached = Some((generation, Rc::clone(&table)));
                    table
                }
            }
        })
    }
}

/// How a scoring API differs from `/score`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scoring<'a> {
    /// How the hook reads the body.
    pub protocol: Protocol,
    /// How errors are spelled.
    pub style: ErrorStyle,
    /// The model the request names (v2 `/v2/models/{model}[/versions/{version}]`): the
    /// chosen deployment must serve it.
    pub model: Option<ModelRef<'a>>,
}

/// What the front door reads of a call, whatever brought it (an HTTP request, or a gRPC call
/// made into one: see `super::grpc`).
pub(crate) struct Call<'a> {
    /// Whether an HTTP request brought the call (a message may list the endpoints' URIs for
    /// it; a gRPC caller has none to use).
    pub http: bool,
    /// The endpoint the path names (`/endpoints/NAME/...`), if it names one.
    pub endpoint: Option<&'a str>,
    pub path: &'a str,
    pub method: &'a str,
    /// The headers (for a gRPC call: its metadata, and its `:authority` as `host`).
    pub headers: &'a HeaderMap,
    /// The host of the request line (HTTP/2's `:authority`), when the headers have no `Host`.
    pub uri_host: Option<&'a str>,
}

impl<'a> Call<'a> {
    /// An HTTP request as a call.
    pub(crate) fn of(req: &'a HttpRequest) -> Self {
        Call {
            http: true,
            endpoint: req.match_info().get("endpoint"),
            path: req.path(),
            method: req.method().as_str(),
            headers: req.headers(),
            uri_host: req.uri().host(),
        }
    }
}

/// A model named in a v2 URL.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ModelRef<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
}

/// The `/score` handler.
pub(crate) async fn score(req: HttpRequest, payload: web::Payload, state: web::Data<ScoringState>) -> HttpResponse {
    let how = Scoring { protocol: Protocol::Score, style: ErrorStyle::Message, model: None };
    serve(&req, payload, &state, how).await
}

/// Scores one request of a scoring API. The order matters: cheap refusals first (ids, auth,
/// routing), then the admission slot (429 without reading the body), then the body (bounded
/// in size and time) while holding the slot, then the run.
pub(crate) async fn serve(
    req: &HttpRequest,
    payload: web::Payload,
    state: &ScoringState,
    how: Scoring<'_>,
) -> HttpResponse {
    let _active = state.drain.enter();
    let mut response = handle(req, payload, state, how).await;
    state.drain.close_if_shutting_down(&mut response);
    response
}

/// Whether `deployment`'s hook reads the request's headers (a scoring script's
/// `request_headers`, `@rawhttp`).
fn reads_headers(deployment: &Deployment) -> bool {
    deployment.pool().wants_headers()
}

/// The request's headers in the hooks' own type (below the server nothing knows actix's).
fn hook_headers(headers: &HeaderMap) -> Headers {
    let mut out = Headers::default();
    for (name, value) in headers {
        out.push(name.as_str(), value.as_bytes());
    }
    out
}

async fn handle(req: &HttpRequest, payload: web::Payload, state: &ScoringState, how: Scoring<'_>) -> HttpResponse {
    let style = how.style;
    let call = Call::of(req);
    let table = state.snapshot();
    let limits = BodyLimits { max_bytes: state.max_body_bytes, timeout: state.body_timeout };
    let read_body = move || body::read(req.headers(), payload, limits);
    score_call(
        &call,
        read_body,
        state,
        how,
        &table,
        || state.snapshot(),
        |done: Done<'_>| {
            let response = match done.outcome {
                Ok(answer) => {
                    let status = StatusCode::from_u16(answer.response.status).unwrap_or(StatusCode::OK);
                    let mut r = HttpResponse::build(status);
                    // A script's own headers first: the front door's (content type, deployment,
                    // ids) are set after and replace any of the same name.
                    for (name, value) in answer.response.headers {
                        r.append_header((name, value));
                    }
                    r.content_type(answer.response.content_type);
                    if let Some(n) = answer.header_length {
                        r.insert_header((INFERENCE_HEADER_LENGTH, n));
                    }
                    r.body(answer.response.body)
                }
                Err(refused) => refused.response(style),
            };
            let response = match done.deployment {
                Some(deployment) => served_by(response, deployment),
                None => response,
            };
            with_ids(response, done.request_id, done.client_id)
        },
    )
    .await
}

/// How a scored call ended, for its caller to answer in its own protocol: the answer or the
/// refusal, the deployment that was chosen (if one was), and the ids.
pub(crate) struct Done<'d> {
    pub outcome: Result<crate::hooks::Answer, Refused>,
    pub deployment: Option<&'d Deployment>,
    pub request_id: &'d str,
    pub client_id: Option<&'d str>,
}

/// Scores one call: ids, drain, auth and routing, the model check, admission, the body
/// (`read_body`, after admission: a refused call's body is never read), the run (with the
/// mirror copy and the data collector), and the re-route of a call whose version left.
/// `answer` turns how it ended into the caller's response; it runs while the routing
/// snapshots are held. The HTTP planes and the gRPC plane both score through here, so every
/// rule is written once; only the snapshot's holder differs (`snapshot`: a thread-local `Rc`
/// on the HTTP workers, an `Arc` where the future must be `Send`).
pub(crate) async fn score_call<F, S, R>(
    call: &Call<'_>,
    read_body: impl FnOnce() -> F,
    state: &ScoringState,
    how: Scoring<'_>,
    table: &RoutingTable,
    snapshot: impl Fn() -> S,
    answer: impl FnOnce(Done<'_>) -> R,
) -> R
where
    F: std::future::Future<Output = Result<Bytes, Refused>>,
    S: std::ops::Deref<Target = Arc<RoutingTable>>,
{
    // Traces off (the common case): no span, no wrapper; one relaxed load.
    if !traces::on() {
        return score_spanned(call, read_body, state, how, table, snapshot, answer, &tracing::Span::none()).await;
    }
    use tracing::Instrument;
    // Sampled at the head, before any span is made: a request whose trace is dropped costs a
    // header parse and a random draw, not a span (measured: a span made only for the SDK's
    // sampler to drop it cost ~7,000 instructions a request).
    let parent = call
        .headers
        .get(TRACEPARENT)
        .and_then(|tp| traces::remote_parent(tp.as_bytes(), call.headers.get(TRACESTATE).map(HeaderValue::as_bytes)));
    if !traces::keep(parent.as_ref()) {
        return score_spanned(call, read_body, state, how, table, snapshot, answer, &tracing::Span::none()).await;
    }
    let span = request_span(call, how, parent);
    let answer = |done: Done<'_>| {
        ended(&span, &done);
        answer(done)
    };
    // Entered on each poll: the stages below (admission, queue, run) are its children.
    score_spanned(call, read_body, state, how, table, snapshot, answer, &span).instrument(span.clone()).await
}

/// The request's span (traces on): continued from the caller's `traceparent`, else a trace of
/// its own. Its name is the route's template, not the path (a model's name in every span name
/// would make as many names as models).
fn request_span(call: &Call<'_>, how: Scoring<'_>, parent: Option<opentelemetry::trace::SpanContext>) -> tracing::Span {
    use tracing::field::Empty;
    let route = match (call.http, how.protocol) {
        (false, _) => "inference.GRPCInferenceService/ModelInfer",
        (true, Protocol::Score) => "POST /score",
        (true, Protocol::Infer { .. }) => "POST /v2/models/{model}/infer",
    };
    let span = tracing::info_span!(
        target: traces::TARGET,
        "request",
        otel.name = route,
        otel.kind = "server",
        otel.status_code = Empty,
        route,
        url.path = call.path,
        endpoint = Empty,
        deployment = Empty,
        status = Empty,
        request_id = Empty,
    );
    if let Some(parent) = parent {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
    span
}

/// Records how a call ended on its span: the deployment, the status (HTTP's, also for a gRPC
/// call, whose code is mapped from it), the ids; a server error marks the span an error (a 4xx
/// is the caller's, and leaves it unset, as OpenTelemetry's HTTP conventions say).
fn ended(span: &tracing::Span, done: &Done<'_>) {
    let status = match &done.outcome {
        Ok(answer) => answer.response.status,
        Err(refused) => refused.status_message().0,
    };
    // As i64: the OpenTelemetry layer writes a u64 as text.
    span.record("status", i64::from(status));
    span.record("request_id", done.request_id);
    if let Some(d) = done.deployment {
        span.record("deployment", d.name());
    }
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// [`score_call`], with the request's span (`Span::none()` when traces are off).
#[allow(clippy::too_many_arguments)]
async fn score_spanned<F, S, R>(
    call: &Call<'_>,
    read_body: impl FnOnce() -> F,
    state: &ScoringState,
    how: Scoring<'_>,
    table: &RoutingTable,
    snapshot: impl Fn() -> S,
    answer: impl FnOnce(Done<'_>) -> R,
    span: &tracing::Span,
) -> R
where
    F: std::future::Future<Output = Result<Bytes, Refused>>,
    S: std::ops::Deref<Target = Arc<RoutingTable>>,
{
    let request_id = uuid::Uuid::new_v4();
    let mut id_buf = uuid::Uuid::encode_buffer();
    let request_id: &str = request_id.hyphenated().encode_lower(&mut id_buf);
    let headers = call.headers;

    macro_rules! refuse {
        ($refused:expr, $deployment:expr, $client:expr) => {
            return answer(Done { outcome: Err($refused), deployment: $deployment, request_id, client_id: $client })
        };
    }
    let client_id = match client_request_id(headers) {
        Ok(id) => id,
        Err(refused) => refuse!(refused, None, None),
    };
    let client = client_id.as_deref();
    if state.drain.shutting_down() {
        refuse!(
            Refused::Unavailable("the server is shutting down: retry (another replica will answer)".into()),
            None,
            client
        );
    }

    let (deployment, shadow) = match route(call, table) {
        Ok(chosen) => chosen,
        Err(e) => refuse!(e, None, client),
    };
    if let Some(model) = how.model {
        if let Err(e) = serves(deployment, model) {
            refuse!(e, Some(deployment), client);
        }
    }
    if !span.is_disabled() {
        if let Ok(endpoint) = endpoint_of(call, table) {
            span.record("endpoint", endpoint.name.as_str());
        }
    }
    let admission = if span.is_disabled() {
        tracing::Span::none()
    } else {
        tracing::info_span!(target: traces::TARGET, "admission", otel.status_code = tracing::field::Empty)
    };
    let admitted = match deployment.admit(request_id) {
        Ok(admitted) => admitted,
        Err(e) => {
            admission.record("otel.status_code", "error");
            refuse!(e.into(), Some(deployment), client)
        }
    };
    drop(admission);
    let body = match read_body().await {
        Ok(body) => body,
        Err(e) => refuse!(e, None, client),
    };

    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    // The headers in the hooks' own type, converted only when a hook on the way reads them.
    let headers_converted = reads_headers(deployment) || shadow.is_some_and(|s| reads_headers(&s.deployment));
    // A scoring script whose custom records join this request (a `data_collector` with a
    // custom collection, on either side) gets the request's id, as Azure's endpoints give it.
    let collects = |d: &Deployment| d.collector().is_some_and(|c| c.settings().custom().next().is_some());
    let converted = if headers_converted {
        let with_id = collects(deployment) || shadow.is_some_and(|s| collects(&s.deployment));
        for_hooks(headers, request_id, with_id, span)
    } else {
        Headers::default()
    };
    let request = Request { body: &body, content_type, headers: &converted, protocol: how.protocol, request_id };
    // A shadow that collects payloads logs its copy's answer (marked `mirror`), with the
    // request id the live records carry.
    let live_slot = shadow.and_then(|s| {
        let collect = s.deployment.collector().filter(|c| c.sample_payload(request_id)).map(|c| mirror::Collect {
            path: call.path.to_string(),
            method: call.method.to_string(),
            headers: captured(headers, c.capture_headers()),
        });
        mirror::copy(s, request, collect)
    });
    // The live answer's latency is only compared when a shadow copy was made.
    let start = live_slot.as_ref().map(|_| Instant::now());
    let mut outcome = deployment.call(admitted, request).await;
    // Routed to a version that has since left the routing table (deleted, or replaced by a new
    // model) and lost its last instance before this request got one: route it again, once, on
    // the current table, so a rollout step never fails a request that the endpoint can serve.
    let current;
    let mut deployment = deployment;
    if matches!(outcome, Err(crate::deployment::ScoreError::NotReady)) && deployment.pool().is_closed() {
        current = snapshot();
        if let Ok((again, _)) = route(call, &current) {
            let same_model = how.model.is_none_or(|model| serves(again, model).is_ok());
            if !std::ptr::eq(again, deployment) && same_model {
                let admission = traces::stage!("admission");
                let admitted = again.admit(request_id);
                if admitted.is_err() {
                    admission.record("otel.status_code", "error");
                }
                drop(admission);
                if let Ok(admitted) = admitted {
                    deployment = again;
                    span.record("deployment", deployment.name());
                    // The version routed to now may read the headers where the first did not.
                    let again_headers;
                    let request = if reads_headers(deployment) && !headers_converted {
                        again_headers = for_hooks(headers, request_id, collects(deployment), span);
                        Request { headers: &again_headers, ..request }
                    } else {
                        request
                    };
                    outcome = deployment.call(admitted, request).await;
                }
            }
        }
    }
    if let Some(c) = deployment.collector().filter(|c| c.sample_payload(request_id)) {
        let (status, response_body, response_content_type) = match &outcome {
            Ok(answer) => (answer.response.status, answer.response.body.clone(), answer.response.content_type.into()),
            Err(e) => (e.status(), Bytes::from(e.reason()), "text/plain; charset=utf-8".into()),
        };
        c.payload(collector::Payload {
            role: collector::Role::Live,
            request_id: request_id.to_string(),
            path: call.path.to_string(),
            method: call.method.to_string(),
            headers: captured(headers, c.capture_headers()),
            request_body: body.clone(),
            request_content_type: content_type.map(String::from),
            status,
            response_body,
            response_content_type,
        });
    }
    if let Some(slot) = live_slot {
        let (status, body) = match &outcome {
            Ok(answer) => (answer.response.status, answer.response.body.clone()),
            Err(e) => (e.status(), Bytes::new()),
        };
        slot.send(Answer { status, body, latency: start.map(|t| t.elapsed()).unwrap_or_default() });
    }
    answer(Done {
        outcome: outcome.map_err(Refused::Score),
        deployment: Some(deployment),
        request_id,
        client_id: client,
    })
}

/// The request's headers as a hook that reads them gets them: with the request's id when its
/// script collects custom records (`with_id`), and with the trace it runs in (`traceparent`
/// naming the request's span, the caller's trace continued) when traces are on, as Azure's
/// server passes `traceparent` on.
fn for_hooks(headers: &HeaderMap, request_id: &str, with_id: bool, span: &tracing::Span) -> Headers {
    let mut converted = hook_headers(headers);
    if with_id {
        converted.retain(|name| name != "x-request-id");
        converted.push("x-request-id", request_id.as_bytes());
    }
    let traceparent = if !span.is_disabled() {
        traces::traceparent(span)
    } else if traces::on() {
        // Traces on, this request not traced: the script is told so (flag 00), in the caller's
        // trace when there is one.
        let caller = headers.get(TRACEPARENT).and_then(|tp| traces::remote_parent(tp.as_bytes(), None));
        Some(traces::not_traced(caller))
    } else {
        None
    };
    if let Some(traceparent) = traceparent {
        converted.retain(|name| name != "traceparent");
        converted.push("traceparent", traceparent.as_bytes());
    }
    converted
}

/// The request headers a data collector captures (`request_logging.capture_headers`), by
/// lower-case name, values as text (a value that is not text is left out).
fn captured(headers: &HeaderMap, names: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for name in names {
        for value in headers.get_all(name.as_str()) {
            if let Ok(v) = value.to_str() {
                out.push((name.clone(), v.to_string()));
            }
        }
    }
    out
}

/// Adds the header naming the deployment that answered.
fn served_by(mut response: HttpResponse, deployment: &Deployment) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(deployment.name()) {
        response.headers_mut().insert(DEPLOYMENT, v);
    }
    response
}

/// The binary tensor extension's header: the length of the JSON part of a body.
pub(crate) const INFERENCE_HEADER_LENGTH: &str = "inference-header-content-length";

/// Refuses a deployment that does not serve the model a v2 URL names (404 naming the model it
/// does serve). A URL version must be the model's, when the spec gives one.
pub(crate) fn serves(deployment: &Deployment, model: ModelRef<'_>) -> Result<(), Refused> {
    if model.name != deployment.model_name() {
        return Err(Refused::NotFound(format!(
            "model {:?} is not served here: deployment {:?} serves model {:?}",
            model.name,
            deployment.name(),
            deployment.model_name()
        )));
    }
    match (model.version, deployment.model_version()) {
        (Some(asked), Some(served)) if asked != served => Err(Refused::NotFound(format!(
            "version {asked:?} of model {:?} is not served here: deployment {:?} serves version {served:?}",
            model.name,
            deployment.name()
        ))),
        _ => Ok(()),
    }
}

/// The endpoint a scoring request is for: the one its path names (`/endpoints/NAME/...`),
/// else the server's only endpoint, else the one its `Host` names (`NAME.localhost`, as
/// Azure's scoring URIs carry the endpoint in the host name); else a 404 naming them.
///
/// The only-endpoint case is checked before the host on purpose: it is what every request of
/// a one-endpoint server takes, and it costs one field read, not a header parse.
pub(crate) fn endpoint_of<'t>(
    req: &Call<'_>,
    table: &'t RoutingTable,
) -> Result<&'t crate::endpoint::EndpointView, Refused> {
    if let Some(why) = table.unavailable {
        return Err(Refused::Unavailable(why.message().to_string()));
    }
    if let Some(name) = req.endpoint {
        return match table.endpoints.get(name) {
            Some(endpoint) => Ok(endpoint),
            None if table.restoring.iter().any(|r| r == name) => Err(restoring()),
            None => Err(Refused::NotFound(format!("endpoint {name:?} not found on this server{}", listed(table, req)))),
        };
    }
    if let Some(only) = &table.only {
        return Ok(only);
    }
    if let Some(endpoint) = host_endpoint(req, table) {
        return endpoint;
    }
    if table.endpoints.is_empty() && !table.restoring.is_empty() {
        return Err(restoring());
    }
    if table.endpoints.is_empty() {
        return Err(Refused::NotFound("this server hosts no endpoint".into()));
    }
    Err(Refused::NotFound(format!(
        "this server hosts several endpoints: call one at its own URI (or with Host: NAME.localhost){}",
        listed(table, req)
    )))
}

/// What a request for an endpoint coming back from a restart is told (503: retry).
fn restoring() -> Refused {
    Refused::Unavailable(Unavailable::Restoring.message().to_string())
}

/// The endpoint named by the request's host (`NAME.localhost[:port]`), if one exists. Host
/// names are case-insensitive, and so are endpoint names (the control plane keeps them
/// unique regardless of case).
fn host_endpoint<'t>(
    req: &Call<'_>,
    table: &'t RoutingTable,
) -> Option<Result<&'t crate::endpoint::EndpointView, Refused>> {
    let host = match req.headers.get(header::HOST) {
        Some(h) => h.to_str().ok()?,
        None => req.uri_host?,
    };
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    let label = host.strip_suffix('.').unwrap_or(host);
    let (name, domain) = label.split_once('.')?;
    if !domain.eq_ignore_ascii_case("localhost") {
        return None;
    }
    let serving = table
        .endpoints
        .get(name)
        .or_else(|| table.endpoints.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, e)| e));
    match serving {
        Some(e) => Some(Ok(&**e)),
        // Named, and coming back from a restart: 503, which a client retries (not a 404).
        None if table.restoring.iter().any(|r| r.eq_ignore_ascii_case(name)) => Some(Err(restoring())),
        None => None,
    }
}

/// `: a at /endpoints/a/score, b at ...` for the endpoints of `table`, with the path the
/// request asked for under each (so a `/v2/...` call is told its own URL).
fn listed(table: &RoutingTable, req: &Call<'_>) -> String {
    let names = table.names();
    // A gRPC caller has no URI to use: it is told to name the endpoint another way.
    if names.is_empty() || !req.http {
        return String::new();
    }
    let path = match req.endpoint {
        Some(name) => req.path.strip_prefix(&format!("/endpoints/{name}")).unwrap_or("/score").to_string(),
        None => req.path.to_string(),
    };
    // The host as the client addressed it: a proxy's `X-Forwarded-Host`, else `Host`.
    let header_text = |name: &str| req.headers.get(name).and_then(|h| h.to_str().ok());
    let host = header_text("x-forwarded-host")
        .and_then(|h| h.split(',').next())
        .map(str::trim)
        .or_else(|| header_text("host"))
        .or(req.uri_host)
        .unwrap_or("localhost");
    let uris: Vec<String> = names.iter().map(|n| format!("{n} at http://{host}/endpoints/{n}{path}")).collect();
    format!("; its endpoints: {}", uris.join(", "))
}

/// The endpoint, once the caller's credentials are checked. A key of one endpoint never
/// opens another: the endpoint is found first, and only its own credentials are checked.
pub(crate) fn authorize<'t>(
    req: &Call<'_>,
    table: &'t RoutingTable,
) -> Result<&'t crate::endpoint::EndpointView, Refused> {
    let endpoint = endpoint_of(req, table)?;
    if !endpoint.credentials.allows(req.headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes)) {
        return Err(Refused::Unauthenticated(
            "missing or invalid credentials: send `Authorization: Bearer <key or token>` (the endpoint's keys, or a token)"
                .into(),
        ));
    }
    Ok(endpoint)
}

/// Picks the live deployment and, for unpinned requests, maybe a shadow.
pub(crate) fn route<'t>(
    req: &Call<'_>,
    table: &'t RoutingTable,
) -> Result<(&'t Deployment, Option<&'t Arc<Shadow>>), Refused> {
    let headers = req.headers;
    let endpoint = authorize(req, table)?;
    if let Some(pinned) = headers.get(DEPLOYMENT) {
        let name = pinned.to_str().unwrap_or("").trim();
        return match endpoint.deployments.get(name) {
            Some(d) => Ok((d, None)),
            None => Err(Refused::NotFound(format!(
                "deployment {name:?} does not exist in endpoint {:?} ({DEPLOYMENT_HEADER} header)",
                endpoint.name
            ))),
        };
    }
    // Sticky assignment: the affinity header's value picks the band (no lock, no state: a
    // hash of the value against the snapshot's split); without it, a random pick.
    let sticky = endpoint.affinity.as_deref().and_then(|h| headers.get(h));
    let picked = match sticky {
        Some(value) => endpoint.split.pick_sticky(value.as_bytes()),
        None => endpoint.split.pick(),
    };
    let Some(live) = picked else {
        return Err(Refused::NotFound(
            "no deployment of this endpoint has traffic: give one live traffic (the endpoint's traffic) or pin a deployment with the azureml-model-deployment header"
                .into(),
        ));
    };
    let shadow = endpoint.mirror.as_ref().filter(|(_, percent)| fastrand::u32(0..100) < *percent).map(|(d, _)| d);
    Ok((live, shadow))
}

/// `x-ms-client-request-id`, sanitised to `[A-Za-z0-9_-]{0,40}`; over 100 characters is 431,
/// and so are headers over [`MAX_HEADER_BYTES`] in all.
fn client_request_id(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    let total: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
    if total > MAX_HEADER_BYTES {
        return Err(Refused::HeadersTooLarge(format!(
            "the request's headers total {total} bytes; at most {MAX_HEADER_BYTES} are accepted"
        )));
    }
    let Some(raw) = headers.get(CLIENT_REQUEST_ID) else {
        return Ok(None);
    };
    if raw.len() > MAX_CLIENT_REQUEST_ID {
        return Err(Refused::HeadersTooLarge(format!(
            "x-ms-client-request-id is longer than {MAX_CLIENT_REQUEST_ID} characters"
        )));
    }
    Ok(Some(
        raw.as_bytes()
            .iter()
            .filter(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'-')
            .take(40)
            .map(|b| *b as char)
            .collect(),
    ))
}

fn with_ids(mut response: HttpResponse, request_id: &str, client_id: Option<&str>) -> HttpResponse {
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert(REQUEST_ID, v.clone());
        h.insert(MS_REQUEST_ID, v.clone());
        let client = client_id.and_then(|c| HeaderValue::from_str(c).ok()).unwrap_or(v);
        h.insert(CLIENT_REQUEST_ID, client);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, host: &str) -> HttpRequest {
        actix_web::test::TestRequest::post().uri(path).insert_header((header::HOST, host)).to_http_request()
    }

    /// A request for an endpoint that is coming back from a restart is told to retry (503),
    /// however it names the endpoint; an endpoint that does not exist is 404. Before, the host
    /// name of a restoring endpoint got a 404, which clients take as final.
    #[test]
    fn an_endpoint_being_restored_is_503_by_path_and_by_host() {
        let serving = crate::endpoint::EndpointView {
            name: "ep-a".into(),
            credentials: crate::endpoint::Credentials::generate(crate::spec::AuthMode::Key, Duration::from_secs(60)),
            deployments: Default::default(),
            split: crate::endpoint::WeightedSplit::new(std::iter::empty()),
            mirror: None,
            affinity: None,
        };
        let mut table = RoutingTable { restoring: vec!["ep-s".into()], ..RoutingTable::default() };
        table.endpoints.insert("ep-a".into(), Arc::new(serving));
        let status = |r: &HttpRequest| match endpoint_of(&Call::of(r), &table) {
            Err(Refused::Unavailable(_)) => 503,
            Err(Refused::NotFound(_)) => 404,
            _ => 0,
        };
        assert_eq!(status(&request("/score", "ep-s.localhost:5001")), 503);
        assert_eq!(status(&request("/score", "EP-S.localhost")), 503);
        assert_eq!(status(&request("/score", "other.localhost")), 404, "no such endpoint, two on the server");
        let empty = RoutingTable::default();
        assert!(matches!(
            endpoint_of(&Call::of(&request("/score", "ep-s.localhost")), &empty),
            Err(Refused::NotFound(_))
        ));
    }
}
