//! The Open Inference Protocol v2 (KServe v2 / Triton) routes on the scoring plane, so stock
//! clients (`tritonclient[http]`) talk to an endpoint as they talk to Triton: same key, same
//! `azureml-model-deployment` pin, same traffic split and mirror as `/score` (the front door
//! does all of it, see [`front_door::serve`]). `{model}` is the model's name
//! (`model.name`, see `ModelSpec::served_name`) and must be the one the chosen deployment serves.
//! Errors are `{"error": ...}`, as the protocol has them. The tensor codec is the hooks'
//! ([`crate::hooks::oip`]): the hook that owns the model decodes the tensors.

use actix_web::http::header::HeaderValue;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::errors::{ErrorStyle, Refused};
use super::front_door::{self, ModelRef, Scoring, ScoringState, DEPLOYMENT_HEADER, INFERENCE_HEADER_LENGTH};
use crate::deployment::Deployment;
use crate::hooks::{Protocol, TensorSpec};

const STYLE: ErrorStyle = ErrorStyle::Error;

/// Registers the v2 routes (under `/v2`; unknown ones answer 404 `{"error"}`).
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/v2")
            .route("", web::get().to(server_metadata))
            .route("/health/live", web::get().to(live))
            .route("/health/ready", web::get().to(ready))
            .route("/models/{model}", web::get().to(model_metadata))
            .route("/models/{model}/versions/{version}", web::get().to(model_metadata))
            .route("/models/{model}/ready", web::get().to(model_ready))
            .route("/models/{model}/versions/{version}/ready", web::get().to(model_ready))
            .route("/models/{model}/infer", web::post().to(infer))
            .route("/models/{model}/versions/{version}/infer", web::post().to(infer))
            .default_service(web::to(|| async {
                Refused::NotFound(
                    "no such v2 route: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{model}[/versions/{version}][/ready]; POST /v2/models/{model}[/versions/{version}]/infer"
                        .into(),
                )
                .response(STYLE)
            })),
    );
}

/// Whether `path` is a v2 route (`/v2/...` or `/endpoints/NAME/v2/...`): its errors are
/// spelled `{"error"}`.
pub(super) fn is_v2(path: &str) -> bool {
    let rest = path.strip_prefix("/endpoints/").and_then(|p| p.split_once('/')).map_or(path, |(_, rest)| rest);
    path.starts_with("/v2/") || rest.starts_with("v2/")
}

/// `{model}` and `{version}` of the URL.
fn model_ref(req: &HttpRequest) -> ModelRef<'_> {
    let info = req.match_info();
    ModelRef { name: info.get("model").unwrap_or(""), version: info.get("version") }
}

/// Checks the key (when an endpoint exists) for the server-level routes.
fn authorized(req: &HttpRequest, state: &ScoringState) -> Result<(), Refused> {
    let table = state.snapshot();
    front_door::authorize(&front_door::Call::of(req), &table).map(|_| ())
}

async fn server_metadata(req: HttpRequest, state: web::Data<ScoringState>) -> HttpResponse {
    if let Err(e) = authorized(&req, &state) {
        return e.response(STYLE);
    }
    HttpResponse::Ok().json(json!({
        "name": "switchyard",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// Health checks take the key of the endpoint they are for; before any endpoint exists there
/// is no key to check, and the process is live (not ready) all the same. `Ok(true)` when that
/// endpoint is ready: a deployment with live traffic has a ready instance.
fn health_authorized(req: &HttpRequest, state: &ScoringState) -> Result<bool, Refused> {
    let table = state.snapshot();
    let named = req.match_info().get("endpoint").is_some();
    if !named && table.endpoints.is_empty() && table.restoring.is_empty() && table.unavailable.is_none() {
        return Ok(false);
    }
    front_door::authorize(&front_door::Call::of(req), &table)
        .map(|e| e.split.deployments().any(|d| d.pool().ready() > 0))
}

async fn live(req: HttpRequest, state: web::Data<ScoringState>) -> HttpResponse {
    let mut response = match health_authorized(&req, &state) {
        Ok(_) => HttpResponse::Ok().json(json!({"live": true})),
        Err(e) => e.response(STYLE),
    };
    state.drain.close_if_shutting_down(&mut response);
    response
}

async fn ready(req: HttpRequest, state: web::Data<ScoringState>) -> HttpResponse {
    let mut response = match health_authorized(&req, &state) {
        Err(e) => e.response(STYLE),
        Ok(_) if state.drain.shutting_down() => {
            Refused::Unavailable("not ready: the server is shutting down".into()).response(STYLE)
        }
        Ok(ready) => ready_answer(ready),
    };
    state.drain.close_if_shutting_down(&mut response);
    response
}

/// The v2 readiness answer.
fn ready_answer(ready: bool) -> HttpResponse {
    if ready {
        HttpResponse::Ok().json(json!({"ready": true}))
    } else {
        Refused::Unavailable("not ready: no deployment with live traffic has a ready instance".into()).response(STYLE)
    }
}

/// Runs `answer` on the deployment a request to `/v2/models/{model}...` would be scored on
/// (traffic split or pin), once it is known to serve that model. Never mirrored: nothing is
/// scored.
fn with_model(
    req: &HttpRequest,
    state: &ScoringState,
    answer: impl FnOnce(&Deployment) -> HttpResponse,
) -> HttpResponse {
    let table = state.snapshot();
    let deployment = match front_door::route(&front_door::Call::of(req), &table) {
        Ok((deployment, _)) => deployment,
        Err(e) => return e.response(STYLE),
    };
    let mut response = match front_door::serves(deployment, model_ref(req)) {
        Ok(()) => answer(deployment),
        Err(e) => e.response(STYLE),
    };
    if let Ok(v) = HeaderValue::from_str(deployment.name()) {
        response.headers_mut().insert(actix_web::http::header::HeaderName::from_static(DEPLOYMENT_HEADER), v);
    }
    response
}

fn tensors(list: &[TensorSpec]) -> Value {
    list.iter().map(|t| json!({"name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape})).collect()
}

async fn model_metadata(req: HttpRequest, state: web::Data<ScoringState>) -> HttpResponse {
    with_model(&req, &state, |d| {
        let signature = d.signature();
        let (inputs, outputs) = match signature.as_deref() {
            Some(s) => (tensors(&s.inputs), tensors(&s.outputs)),
            // A scoring script's tensors are its own business: nothing to declare.
            None => (json!([]), json!([])),
        };
        let versions: Vec<&str> = d.model_version().into_iter().collect();
        HttpResponse::Ok().json(json!({
            "name": d.model_name(),
            "versions": versions,
            "platform": if signature.is_some() { "onnxruntime_onnx" } else { "switchyard_hook" },
            "inputs": inputs,
            "outputs": outputs,
        }))
    })
}

async fn model_ready(req: HttpRequest, state: web::Data<ScoringState>) -> HttpResponse {
    with_model(&req, &state, |d| {
        if d.pool().ready() > 0 {
            HttpResponse::Ok().json(json!({"name": d.model_name(), "ready": true}))
        } else {
            Refused::Unavailable(format!(
                "model {:?} is not ready: deployment {:?} has no ready instance",
                d.model_name(),
                d.name()
            ))
            .response(STYLE)
        }
    })
}

async fn infer(req: HttpRequest, payload: web::Payload, state: web::Data<ScoringState>) -> HttpResponse {
    let header_length = match req.headers().get(INFERENCE_HEADER_LENGTH) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()) {
            Some(n) => Some(n),
            None => {
                return Refused::BadRequest(format!(
                    "{INFERENCE_HEADER_LENGTH} must be the JSON header's length in bytes, got {v:?}"
                ))
                .response(STYLE)
            }
        },
    };
    let how = Scoring { protocol: Protocol::Infer { header_length }, style: STYLE, model: Some(model_ref(&req)) };
    front_door::serve(&req, payload, &state, how).await
}
