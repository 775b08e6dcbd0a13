//! The admin API of CONTRACT §5 over the control plane. Handlers only translate HTTP to control
//! plane calls and back; every rule lives in the control plane and `spec`.

use std::sync::Arc;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;

use super::errors::{reply, reply_created, ErrorBody, Refused};
use crate::control::views::{
    ComparisonView, CredentialsView, DeploymentView, EndpointPatch, EndpointView, Message, MetricsView,
    RegenerateKeyInput, RolloutView, ToleranceInput,
};
use crate::control::{ControlError, ControlPlane, RolloutSource, Workspace};
use crate::spec::{limits, DeploymentSpec, EndpointSpec, RolloutDocument, RolloutPlan, SpecError};

/// What the admin handlers share.
pub(super) struct AdminState {
    /// The workspace: every endpoint's control plane (it also holds the admin token: when
    /// set, every admin call must send `Authorization: Bearer <token>`).
    pub control: Arc<Workspace>,
    /// The names a token-less plane answers to (see `admin_guard`).
    pub allowed_hosts: super::admin_guard::AllowedHosts,
}

/// Where an endpoint's routes live: under `/v1/endpoints/{endpoint}` for the endpoint
/// named in the path, and the one-endpoint forms of before, which mean the server's only
/// endpoint (409 naming them when it holds several).
const SCOPES: [(&str, &str); 2] =
    [("/v1/endpoints/{endpoint}", "/v1/endpoints/{endpoint}/deployments"), ("/v1/endpoint", "/v1/deployments")];

pub(super) mod assets;

/// Registers the admin routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.configure(assets::configure);
    cfg.route("/v1/endpoints", web::get().to(list_endpoints))
        .route("/v1/endpoints/{endpoint}/metrics", web::get().to(endpoint_metrics));
    for (ep, deployments) in SCOPES {
        cfg.route(ep, web::get().to(get_endpoint))
            .route(ep, web::put().to(put_endpoint))
            .route(ep, web::patch().to(patch_endpoint))
            .route(ep, web::delete().to(delete_endpoint))
            .route(&format!("{ep}/keys"), web::get().to(get_keys))
            .route(&format!("{ep}/keys/regenerate"), web::post().to(regenerate_keys))
            .route(&format!("{ep}/invoke"), web::post().to(invoke))
            .route(&format!("{ep}/rollout"), web::get().to(get_rollout))
            .route(&format!("{ep}/rollout"), web::post().to(start_rollout))
            .route(&format!("{ep}/rollout/{{action}}"), web::post().to(rollout_action))
            .route(deployments, web::get().to(list_deployments))
            .route(&format!("{deployments}/{{name}}"), web::get().to(get_deployment))
            .route(&format!("{deployments}/{{name}}"), web::put().to(put_deployment))
            .route(&format!("{deployments}/{{name}}"), web::patch().to(patch_deployment))
            .route(&format!("{deployments}/{{name}}"), web::delete().to(delete_deployment))
            .route(&format!("{deployments}/{{name}}/logs"), web::get().to(deployment_logs))
            .route(&format!("{deployments}/{{name}}/collected"), web::get().to(collected))
            .route(&format!("{deployments}/{{name}}/comparison"), web::get().to(get_comparison))
            .route(&format!("{deployments}/{{name}}/comparison/reset"), web::post().to(reset_comparison));
    }
    cfg.route("/v1/metrics", web::get().to(metrics_json))
        .route("/metrics", web::get().to(metrics))
        .configure(super::studio::configure)
        .configure(super::openapi::configure)
        .default_service(web::to(|| async {
            Refused::NotFound("no such admin route: see CONTRACT §5 (/v1/endpoints, /v1/endpoints/{name}[/deployments], /v1/endpoint and /v1/deployments for the only endpoint, /v1/metrics, /metrics, /v1/models, /v1/environments, /v1/uploads, /v1/codes; the studio page is at /; this API's document at /openapi.json)".into()).answer()
        }));
}

type Data = web::Data<AdminState>;

/// The plane of the endpoint a request is about: the one its path names, or the server's only
/// endpoint on the one-endpoint routes.
fn select(req: &HttpRequest, data: &AdminState) -> Result<Arc<ControlPlane>, ControlError> {
    match req.match_info().get("endpoint") {
        Some(name) => data.control.endpoint(name),
        None => data.control.only(),
    }
}

/// The endpoint's plane, or the refusal to answer with.
macro_rules! plane {
    ($req:expr, $data:expr) => {
        match select(&$req, &$data) {
            Ok(plane) => plane,
            Err(e) => return Refused::from(e).answer(),
        }
    };
}

/// A segment of the route's path (`name`, `action`); always present where the route has it.
fn segment(req: &HttpRequest, key: &str) -> String {
    req.match_info().get(key).unwrap_or_default().to_string()
}

/// Admin token check; `None` when the call may proceed.
fn refuse(req: &HttpRequest, data: &AdminState) -> Option<HttpResponse> {
    let expected = data.control.admin_token()?;
    // The scoring plane's parser: one rule for both planes (scheme case-insensitive).
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| crate::endpoint::auth::strip_bearer(v.as_bytes()))
        .unwrap_or(b"");
    if bool::from(presented.ct_eq(expected.as_bytes())) {
        return None;
    }
    Some(
        Refused::Unauthenticated(
            "the admin API needs `Authorization: Bearer <admin token>` (set SWITCHYARD_ADMIN_TOKEN for the CLI)".into(),
        )
        .answer(),
    )
}

macro_rules! guard {
    ($req:expr, $data:expr) => {
        if let Some(r) = refuse(&$req, &$data) {
            return r;
        }
    };
}

/// In declarative mode the files own the endpoint and deployments: changes through the API
/// would be overwritten at the next file change, so they are refused.
macro_rules! files_own_state {
    ($data:expr) => {
        if let Some(dir) = $data.control.declarative_dir() {
            return Refused::from(ControlError::Conflict(format!(
                "this server is in declarative mode: the endpoint and deployments are defined by the files in {}; edit them instead",
                dir.display()
            )))
            .answer();
        }
    };
}

/// An admin request body, or why it could not be read (too large, cut off). Taking the
/// `Result` lets the handler answer with the admin API's JSON error instead of actix's text.
type Body = Result<Bytes, actix_web::Error>;

/// Reads a JSON or YAML body off the admin worker thread.
///
/// Parsing runs on actix's blocking pool: the limits of `spec::limits` keep a parse short, and
/// even so a slow one must not stop the admin plane from answering other calls.
async fn parse(body: Body) -> Result<Value, ControlError> {
    let body = read(body)?;
    match web::block(move || parse_body(&body)).await {
        Ok(parsed) => Ok(parsed?),
        Err(_) => Err(ControlError::Unavailable("the request body could not be parsed now: try again".into())),
    }
}

/// Runs a control-plane call that reads files (a deployment's hook is found on disk: its model
/// folder, its scoring script, its conda file) on actix's blocking pool. A read may wait up to
/// `READ_DEADLINE` on a hung mount; on one of the two admin workers, two such calls took the
/// whole admin plane down for that long. Off the workers, a hung read costs its request only.
async fn off_worker<T: Send + 'static>(
    call: impl FnOnce() -> Result<T, ControlError> + Send + 'static,
) -> Result<T, ControlError> {
    match web::block(call).await {
        Ok(outcome) => outcome,
        Err(_) => Err(ControlError::Unavailable("the change could not be made now: try again".into())),
    }
}

/// The body's bytes, or the admin API's error for a body that could not be read.
fn read(body: Body) -> Result<Bytes, ControlError> {
    body.map_err(|e| {
        let status = e.as_response_error().status_code().as_u16();
        if status == 413 {
            SpecError::too_large(limits::too_large("the request body")).into()
        } else {
            ControlError::invalid(format!("cannot read the request body: {e}"))
        }
    })
}

/// Parses a JSON or YAML body (YAML is a superset of JSON, so both parse). The size and nesting
/// limits are checked first, for both: a JSON body too deep for serde_json must not fall back to
/// the YAML parser, whose cost grows faster than the body on deep nesting.
fn parse_body(body: &Bytes) -> Result<Value, SpecError> {
    const WHAT: &str = "the request body";
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(SpecError::invalid("the request body is empty: send the fields as JSON (or YAML)"));
    }
    limits::check_document(body, WHAT)?;
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => return limits::check_value_depth(&v, WHAT).map(|()| v),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            return Err(limits::too_deep(WHAT, e.line() as u64, e.column() as u64))
        }
        Err(_) => {}
    }
    let text = std::str::from_utf8(body).map_err(|_| SpecError::invalid("the request body is not UTF-8 text"))?;
    serde_norway::from_str::<Value>(text)
        .map_err(|e| SpecError::invalid(format!("the request body is neither JSON nor YAML: {e}")))
}

/// Reads a small typed input (not an Azure document) from a parsed body; the error names the
/// field and what was expected.
fn input<T: serde::de::DeserializeOwned>(value: Value, expected: &str) -> Result<T, ControlError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let at = if at == "." { String::new() } else { format!("{at}: ") };
        ControlError::invalid(format!("{at}{}; expected {expected}", e.inner()))
    })
}

/// The endpoint as `show` prints it.
#[utoipa::path(get, path = "/v1/endpoint", tag = "endpoint",
    responses((status = 200, body = EndpointView), (status = 404, description = "no endpoint", body = ErrorBody)))]
async fn get_endpoint(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(plane!(req, data).get_endpoint())
}

/// Every endpoint of the server, as `show` prints each.
#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoint", responses((status = 200, body = Vec<EndpointView>)))]
async fn list_endpoints(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    HttpResponse::Ok().json(data.control.list_endpoints())
}

/// One endpoint's deployments in the form of `GET /v1/metrics`.
#[utoipa::path(get, path = "/v1/endpoints/{endpoint}/metrics", tag = "metrics", params(("endpoint" = String, Path)),
    responses((status = 200, body = MetricsView), (status = 404, body = ErrorBody)))]
async fn endpoint_metrics(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    HttpResponse::Ok().json(plane!(req, data).metrics_json())
}

/// Creates the endpoint, or replaces its settings (the same name). The body is Azure's
/// endpoint YAML (or the same as JSON); cloud-only keys are accepted and listed under
/// `ignored_fields`.
#[utoipa::path(put, path = "/v1/endpoint", tag = "endpoint",
    request_body(content = EndpointSpec, description = "endpoint.yml's fields, as JSON or YAML"),
    responses((status = 201, description = "created", body = EndpointView), (status = 200, description = "replaced", body = EndpointView),
        (status = 400, body = ErrorBody), (status = 409, description = "another endpoint, a rollout, or declarative mode", body = ErrorBody),
        (status = 413, body = ErrorBody)))]
async fn put_endpoint(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let named = req.match_info().get("endpoint").map(str::to_string);
    let spec = parse(body).await.and_then(|v| Ok(EndpointSpec::from_value(named_in_path(v, named.as_deref())?)?));
    reply_created(spec.and_then(|(spec, ignored)| data.control.put_endpoint(spec, ignored)))
}

/// The endpoint document of `PUT /v1/endpoints/{name}`: the name comes from the path when the
/// document has none, and a document naming another endpoint is refused (a copy of another
/// endpoint's file sent to the wrong URL must not create or change that one).
fn named_in_path(mut doc: Value, path: Option<&str>) -> Result<Value, ControlError> {
    let (Some(path), Value::Object(fields)) = (path, &mut doc) else {
        return Ok(doc);
    };
    match fields.get("name") {
        None | Some(Value::Null) => {
            fields.insert("name".into(), Value::String(path.to_string()));
        }
        Some(Value::String(n)) if n == path => {}
        Some(other) => {
            return Err(ControlError::invalid(format!(
                "the document names endpoint {other}, but the URL names {path:?}: they must agree"
            )))
        }
    }
    Ok(doc)
}

/// Changes traffic, the mirror rule, description, tags or traffic affinity.
#[utoipa::path(patch, path = "/v1/endpoint", tag = "endpoint", request_body = EndpointPatch,
    responses((status = 200, body = EndpointView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "a deployment that cannot serve, a rollout, or declarative mode", body = ErrorBody)))]
async fn patch_endpoint(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let plane = plane!(req, data);
    reply(parse(body).await.and_then(|v| plane.patch_endpoint(v)))
}

/// Deletes the endpoint and every deployment.
#[utoipa::path(delete, path = "/v1/endpoint", tag = "endpoint",
    responses((status = 200, body = Message), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_endpoint(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let plane = plane!(req, data);
    reply(
        data.control.delete_endpoint(plane.name()).map(|()| Message::new(format!("endpoint {} deleted", plane.name()))),
    )
}

/// The rollout: plan, status, current step and its gate values, history.
#[utoipa::path(get, path = "/v1/endpoint/rollout", tag = "rollout",
    responses((status = 200, body = RolloutView), (status = 404, description = "no rollout was started", body = ErrorBody)))]
async fn get_rollout(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    match select(&req, &data) {
        Ok(plane) => reply(plane.rollout_view()),
        // An endpoint deleted mid-rollout: its rollout still shows, aborted, with the event.
        Err(e) => match data.control.deleted_rollout(req.match_info().get("endpoint")) {
            Some(view) => HttpResponse::Ok().json(view),
            None => Refused::from(e).answer(),
        },
    }
}

/// Starts a guarded rollout (201). In declarative mode the rollout is a field of endpoint.yml.
#[utoipa::path(post, path = "/v1/endpoint/rollout", tag = "rollout", request_body = RolloutDocument,
    responses((status = 201, body = RolloutView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn start_rollout(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let plan = parse(body).await.and_then(|v| Ok(RolloutPlan::from_value(&v)?));
    let plane = plane!(req, data);
    match plan.and_then(|plan| plane.start_rollout(plan, RolloutSource::Api)) {
        Ok(view) => HttpResponse::Created().json(view),
        Err(e) => Refused::from(e).answer(),
    }
}

/// What `POST /v1/endpoint/rollout/{action}` does (its documented values; the handler matches
/// the path segment against them).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // A schema: the action is read from the path as text.
enum RolloutAction {
    Pause,
    Resume,
    Abort,
}

/// `pause`, `resume` or `abort`: operational controls, allowed in declarative mode too (the
/// files own what the rollout is, not whether someone holds or stops it).
#[utoipa::path(post, path = "/v1/endpoint/rollout/{action}", tag = "rollout",
    params(("action" = inline(RolloutAction), Path, description = "`pause`, `resume` or `abort`")),
    responses((status = 200, body = RolloutView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn rollout_action(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    let plane = plane!(req, data);
    reply(match segment(&req, "action").as_str() {
        "pause" => plane.pause_rollout(),
        "resume" => plane.resume_rollout(),
        "abort" => plane.abort_rollout(),
        other => Err(ControlError::NotFound(format!("no rollout action {other:?}: expected pause, resume or abort"))),
    })
}

/// The keys, or in `aml_token` mode a fresh token.
#[utoipa::path(get, path = "/v1/endpoint/keys", tag = "endpoint",
    responses((status = 200, body = CredentialsView), (status = 404, body = ErrorBody)))]
async fn get_keys(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(plane!(req, data).credentials())
}

/// Replaces one key at once; the other keeps working.
#[utoipa::path(post, path = "/v1/endpoint/keys/regenerate", tag = "endpoint", request_body = RegenerateKeyInput,
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "the keys come from --secrets-dir", body = ErrorBody)))]
async fn regenerate_keys(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    let which = parse(body)
        .await
        .and_then(|v| input::<RegenerateKeyInput>(v, "{\"keyType\": \"primary\"} or {\"keyType\": \"secondary\"}"));
    let plane = plane!(req, data);
    reply(which.and_then(|i| plane.regenerate_key(i.key_type)).map(|()| Message::new("key regenerated")))
}

/// Every deployment, as `show` prints each.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments",
    responses((status = 200, body = Vec<DeploymentView>), (status = 404, body = ErrorBody)))]
async fn list_deployments(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(plane!(req, data).list_deployments())
}

/// `?wait=SECONDS` on `GET /v1/deployments/{name}`: answer once no operation is in progress
/// (or the time is up), so clients wait for a load without polling.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct WaitQuery {
    /// Answer once the deployment is neither Creating nor Updating, or after this many seconds
    /// (at most 60).
    wait: Option<f64>,
}

/// The longest `?wait` honoured in one call; clients call again for longer waits.
const MAX_WAIT_SECS: f64 = 60.0;

/// A deployment: its spec, state, instances and mirror share.
#[utoipa::path(get, path = "/v1/deployments/{name}", tag = "deployments", params(("name" = String, Path), WaitQuery),
    responses((status = 200, body = DeploymentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_deployment(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    let (plane, name) = (plane!(req, data), segment(&req, "name"));
    let wait = match web::Query::<WaitQuery>::from_query(req.query_string()) {
        Ok(q) => q.wait,
        Err(_) => return Refused::BadRequest("wait must be a number of seconds, e.g. ?wait=30".into()).answer(),
    };
    let Some(wait) = wait.filter(|w| w.is_finite() && *w > 0.0) else {
        return reply(plane.get_deployment(&name));
    };
    let limit = std::time::Duration::from_secs_f64(wait.min(MAX_WAIT_SECS));
    match plane.wait_settled(&name, limit).await {
        Some(view) => reply(Ok(view)),
        None => reply(plane.get_deployment(&name)),
    }
}

/// `?all_traffic=true` on create.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct PutQuery {
    /// Give the deployment all live traffic once it is ready.
    #[serde(default)]
    all_traffic: bool,
    /// The folder relative paths in the body resolve against (the studio page's "YAML file
    /// folder", since a browser never learns where a picked file lives).
    #[param(value_type = Option<String>)]
    base_dir: Option<std::path::PathBuf>,
}

/// Creates a deployment, or replaces it (the old version serves until the new one is ready).
/// The body is Azure's deployment YAML (or the same as JSON); loading runs in the background.
#[utoipa::path(put, path = "/v1/deployments/{name}", tag = "deployments", params(("name" = String, Path), PutQuery),
    request_body(content = DeploymentSpec, description = "the deployment YAML's fields, as JSON or YAML"),
    responses((status = 201, description = "created (Creating)", body = DeploymentView),
        (status = 200, description = "replaced (Updating)", body = DeploymentView),
        (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
async fn put_deployment(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let (all_traffic, base_dir) = match web::Query::<PutQuery>::from_query(req.query_string()) {
        Ok(q) => {
            let q = q.into_inner();
            (q.all_traffic, q.base_dir.filter(|b| !b.as_os_str().is_empty()))
        }
        Err(_) => {
            return Refused::BadRequest("all_traffic must be true or false; base_dir an absolute folder".into())
                .answer()
        }
    };
    let control = match select(&req, &data) {
        Ok(plane) => plane,
        // The one-endpoint route with no endpoint: a conflict with the state, as before.
        Err(ControlError::NotFound(_)) if req.match_info().get("endpoint").is_none() => {
            return Refused::from(ControlError::Conflict(
                "this server hosts no endpoint: create the endpoint before its deployments".into(),
            ))
            .answer()
        }
        Err(e) => return Refused::from(e).answer(),
    };
    let name = segment(&req, "name");
    let spec = parse(body).await.and_then(|v| Ok(DeploymentSpec::from_request(v, &name, base_dir.as_deref())?));
    let put = match spec {
        Ok((spec, _)) => off_worker(move || control.put_deployment(spec, all_traffic)).await,
        Err(e) => Err(e),
    };
    reply_created(put)
}

/// Merges the given fields (JSON merge patch, RFC 7396) into the deployment: instance count
/// and settings change in place; a new model, code or environment replaces it as `PUT` does.
#[utoipa::path(patch, path = "/v1/deployments/{name}", tag = "deployments", params(("name" = String, Path)),
    request_body(content = DeploymentSpec, description = "any of the deployment's fields: a JSON merge patch (RFC 7396) of the deployment, `null` removing a field"),
    responses((status = 200, body = DeploymentView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn patch_deployment(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let (control, name) = (plane!(req, data), segment(&req, "name"));
    match parse(body).await {
        Ok(v) => reply(off_worker(move || control.patch_deployment(&name, v)).await),
        Err(e) => reply::<DeploymentView>(Err(e)),
    }
}

/// Deletes a deployment (refused while it has live traffic).
#[utoipa::path(delete, path = "/v1/deployments/{name}", tag = "deployments", params(("name" = String, Path)),
    responses((status = 200, body = Message), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_deployment(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    files_own_state!(data);
    let (plane, name) = (plane!(req, data), segment(&req, "name"));
    reply(plane.delete_deployment(&name).map(|()| Message::new(format!("deployment {name} deleted"))))
}

/// `?lines=N` for logs.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogQuery {
    /// How many of the last lines (default 100).
    lines: Option<usize>,
}

/// The last lines of a deployment's log (its instances' output and the server's own events).
#[utoipa::path(get, path = "/v1/deployments/{name}/logs", tag = "deployments", params(("name" = String, Path), LogQuery),
    responses((status = 200, content_type = "text/plain", body = String), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn deployment_logs(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    let (plane, name) = (plane!(req, data), segment(&req, "name"));
    let lines = match web::Query::<LogQuery>::from_query(req.query_string()) {
        Ok(q) => q.lines.unwrap_or(100),
        Err(_) => return Refused::BadRequest("lines must be a non-negative integer".into()).answer(),
    };
    match plane.deployment_logs(&name, lines) {
        Ok(lines) => {
            let mut text = lines.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(text)
        }
        Err(e) => Refused::from(e).answer(),
    }
}

/// `?collection=&since=&limit=` for collected records.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CollectedQuery {
    /// One collection (`request`, `response`, `model_inputs`...); all when absent.
    collection: Option<String>,
    /// Only records written at or after this: an RFC 3339 time, or a duration ago (`10m`).
    since: Option<String>,
    /// At most this many records, newest first (default 100, at most 10000).
    limit: Option<usize>,
}

/// A deployment's collected records (its `data_collector`), newest first, as written under
/// the data folder.
#[utoipa::path(get, path = "/v1/deployments/{name}/collected", tag = "deployments",
    params(("name" = String, Path), CollectedQuery),
    responses((status = 200, body = crate::control::views::CollectedView), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn collected(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    let (plane, name) = (plane!(req, data), segment(&req, "name"));
    let q = match web::Query::<CollectedQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner(),
        Err(_) => return Refused::BadRequest("limit must be a non-negative integer".into()).answer(),
    };
    // The CLI sends every parameter; an empty one means "not given".
    let (collection, since) = (q.collection.filter(|c| !c.is_empty()), q.since.filter(|s| !s.is_empty()));
    let since = match since.as_deref().map(since_time) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return Refused::BadRequest(e).answer(),
    };
    let limit = q.limit.unwrap_or(100);
    reply(off_worker(move || plane.collected(&name, collection.as_deref(), since.as_deref(), limit)).await)
}

/// `since` as the RFC 3339 time records are compared with: a time as given, or a duration
/// ago (`90s`, `10m`, `2h`).
fn since_time(text: &str) -> Result<String, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(humantime::format_rfc3339_millis(t).to_string());
    }
    match humantime::parse_duration(text) {
        Ok(ago) => {
            let t = std::time::SystemTime::now().checked_sub(ago).unwrap_or(std::time::SystemTime::UNIX_EPOCH);
            Ok(humantime::format_rfc3339_millis(t).to_string())
        }
        Err(_) => Err(format!(
            "since must be an RFC 3339 time (2026-12-07T10:00:00Z) or a duration ago (10m, 2h), got {text:?}"
        )),
    }
}

/// The mirror comparison report of a shadow deployment.
#[utoipa::path(get, path = "/v1/deployments/{name}/comparison", tag = "deployments", params(("name" = String, Path)),
    responses((status = 200, body = ComparisonView), (status = 404, body = ErrorBody)))]
async fn get_comparison(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(plane!(req, data).comparison(&segment(&req, "name")))
}

/// Starts the comparison report over, optionally with a new tolerance (an empty body keeps it).
#[utoipa::path(post, path = "/v1/deployments/{name}/comparison/reset", tag = "deployments", params(("name" = String, Path)),
    request_body(content = Option<ToleranceInput>, description = "optional: a new atol and/or rtol"),
    responses((status = 200, body = ComparisonView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn reset_comparison(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    let (plane, name) = (plane!(req, data), segment(&req, "name"));
    const EXPECTED: &str = "{\"atol\": number, \"rtol\": number} (both optional)";
    let input = match read(body) {
        Ok(b) if b.iter().all(u8::is_ascii_whitespace) => Ok(ToleranceInput::default()),
        Ok(b) => parse(Ok(b)).await.and_then(|v| match v {
            Value::Null => Ok(ToleranceInput::default()),
            v => input::<ToleranceInput>(v, EXPECTED),
        }),
        Err(e) => Err(e),
    };
    reply(input.and_then(|i| plane.reset_comparison(&name, i)))
}

/// The Prometheus families (CONTRACT §7), as OpenMetrics text.
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, content_type = "application/openmetrics-text", body = String)))]
async fn metrics(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(data.control.metrics_text())
}

/// The counts behind the request and duration series, per deployment, as JSON.
#[utoipa::path(get, path = "/v1/metrics", tag = "metrics", responses((status = 200, body = MetricsView)))]
async fn metrics_json(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    HttpResponse::Ok().json(data.control.metrics_json())
}

/// `?deployment_name=` on invoke: pins the request as `--deployment-name` does.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InvokeQuery {
    /// Send the request to this deployment (as `azureml-model-deployment` does).
    deployment_name: Option<String>,
}

/// The longest an invoke waits for the scoring plane (the longest `request_timeout_ms`, and
/// some room for the body).
const INVOKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(200);

/// `POST /v1/endpoint/invoke`: what `online-endpoint invoke` does, for clients that cannot
/// reach the scoring plane themselves (the studio page: a browser on the admin origin may not
/// call another port). The body goes to the endpoint's own `scoring_uri` with its primary
/// key (or token), through the front door like any client's request (auth, routing, pinning,
/// mirroring, metrics); the scoring plane's status, body and `azureml-model-deployment` come
/// back unchanged, as an attachment (see below).
#[utoipa::path(post, path = "/v1/endpoint/invoke", tag = "endpoint", params(InvokeQuery),
    request_body(content = Object, description = "the scoring request, sent as it is"),
    responses((status = 200, description = "the scoring plane's answer, status and body unchanged"),
        (status = 502, description = "the scoring plane did not answer", body = ErrorBody)))]
async fn invoke(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    let pin = match web::Query::<InvokeQuery>::from_query(req.query_string()) {
        Ok(q) => q.into_inner().deployment_name.filter(|d| !d.is_empty()),
        Err(_) => return Refused::BadRequest("deployment_name must be a deployment's name".into()).answer(),
    };
    let body = match read(body) {
        Ok(b) => b,
        Err(e) => return Refused::from(e).answer(),
    };
    let plane = plane!(req, data);
    let (uri, secret) = match plane.get_endpoint().and_then(|ep| Ok((ep, plane.credentials()?))) {
        Ok((ep, creds)) => {
            let secret = match creds {
                CredentialsView::Keys(k) => k.primary_key,
                CredentialsView::Token(t) => t.access_token,
            };
            (ep.scoring_uri, Some(secret))
        }
        Err(e) => return Refused::from(e).answer(),
    };
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json").to_string();
    let sent = web::block(move || {
        let mut request = ureq::http::Request::builder().method("POST").uri(&uri).header("Content-Type", content_type);
        if let Some(secret) = secret {
            request = request.header("Authorization", format!("Bearer {secret}"));
        }
        if let Some(pin) = pin {
            request = request.header("azureml-model-deployment", pin);
        }
        let request = request.body(body.to_vec()).map_err(|e| e.to_string())?;
        let config =
            ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(INVOKE_TIMEOUT)).build();
        let mut response = ureq::Agent::new_with_config(config).run(request).map_err(|e| format!("{uri}: {e}"))?;
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (served, content_type) = (header("azureml-model-deployment"), header("content-type"));
        let body = response.body_mut().read_to_vec().map_err(|e| format!("{uri}: {e}"))?;
        Ok::<_, String>((status, served, content_type, body))
    })
    .await;
    match sent {
        Ok(Ok((status, served, content_type, body))) => {
            let status =
                actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::BAD_GATEWAY);
            let mut r = HttpResponse::build(status);
            if let Some(served) = served {
                r.insert_header(("azureml-model-deployment", served));
            }
            // The body is whatever a scoring script returned (HTML from a `@rawhttp` script,
            // say): it must never render as a page of the admin origin. The gate adds
            // `nosniff` and a sandboxing policy; opened as a page, this is a download.
            r.insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"invoke-answer\""));
            r.content_type(content_type.unwrap_or_else(|| "application/json".into())).body(body)
        }
        Ok(Err(e)) => Refused::BadGateway(format!("the scoring plane did not answer: {e}")).answer(),
        Err(_) => Refused::Unavailable("the invoke could not run now: try again".into()).answer(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A small input that is not what was expected is refused with the field and the
    /// expected form named.
    #[test]
    fn a_typed_input_names_the_field_and_the_expected_form() {
        const EXPECTED: &str = "{\"keyType\": \"primary\"} or {\"keyType\": \"secondary\"}";
        for bad in [json!({}), json!({"keyType": "tertiary"}), json!("primary"), json!({"keyType": 1})] {
            let e = input::<RegenerateKeyInput>(bad.clone(), EXPECTED).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, ControlError::Spec(_)) && text.contains("keyType") && text.contains(EXPECTED),
                "{bad}: {text}"
            );
        }
        let bad = input::<ToleranceInput>(json!({"atol": "x"}), "numbers").unwrap_err().to_string();
        assert!(bad.starts_with("atol: "), "{bad}");
        let ok = input::<RegenerateKeyInput>(json!({"keyType": "secondary"}), EXPECTED).unwrap();
        assert_eq!(ok.key_type, crate::endpoint::auth::KeyType::Secondary);
    }

    /// A call that blocks its thread (as a read on a hung mount does) must leave the admin
    /// worker free: on a one-thread runtime (one admin worker), another request's future still
    /// completes while the call blocks.
    #[actix_web::test]
    async fn a_blocking_control_call_leaves_the_admin_worker_free() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let slow = actix_web::rt::spawn(off_worker(move || {
            // Blocks until the other request has been answered on this worker.
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .map_err(|_| ControlError::Unavailable("the worker was held".into()))
        }));
        // Another request on the same worker, answered while the call above still blocks.
        actix_web::rt::task::yield_now().await;
        tx.send(()).unwrap();
        assert!(slow.await.unwrap().is_ok());
    }
}
