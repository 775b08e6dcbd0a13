//! The scoring plane's routes (CONTRACT §6).

use actix_web::{web, HttpRequest, HttpResponse};

use super::errors::Refused;
use super::front_door::{self, ScoringState};

/// Registers `/score`, the v2 routes and the OpenAPI document of each endpoint under
/// `/endpoints/{endpoint}`, the same at the root for the server's only endpoint (or the one
/// `Host: NAME.localhost` names), and the process's health routes.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    // The root routes first: actix tries services in order, and a request of a one-endpoint
    // server (the bare `/score`) then matches before the scope's dynamic pattern is tried.
    cfg.configure(endpoint_routes)
        .service(web::scope("/endpoints/{endpoint}").configure(endpoint_routes))
        .route("/", web::get().to(|| async { HttpResponse::Ok().content_type("text/plain").body("Healthy") }))
        .route("/health/live", web::get().to(|| async { HttpResponse::Ok().content_type("text/plain").body("Live") }))
        .route("/health/ready", web::get().to(ready))
        .default_service(web::to(|| async {
            Refused::NotFound(
                "no such route: POST /score (or /endpoints/NAME/score) to score; GET /health/ready, /swagger.json"
                    .into(),
            )
            .answer()
        }));
}

/// An endpoint's own routes.
fn endpoint_routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(super::oip::configure)
        .route("/score", web::post().to(front_door::score))
        .route("/swagger.json", web::get().to(swagger));
}

async fn ready(state: web::Data<ScoringState>) -> HttpResponse {
    let mut response = if state.drain.shutting_down() {
        Refused::Unavailable("not ready: the server is shutting down".into()).answer()
    } else if state.routing.load().ready() {
        HttpResponse::Ok().content_type("text/plain").body("Ready")
    } else {
        Refused::Unavailable("not ready: no deployment with live traffic has a ready instance".into()).answer()
    };
    state.drain.close_if_shutting_down(&mut response);
    response
}

/// The scoring plane's document: the same for every endpoint (it holds no data, and needs no
/// key), but only for one that exists: `/endpoints/NAME/swagger.json` of an unknown name, and
/// the bare `/swagger.json` of a server holding several endpoints that the host does not pick
/// from, answer 404 naming them, as `/score` there would. With no endpoint yet the bare
/// document is served, as it always was.
async fn swagger(req: HttpRequest, state: web::Data<ScoringState>) -> HttpResponse {
    let table = state.snapshot();
    let bare_and_empty = req.match_info().get("endpoint").is_none() && table.endpoints.len() <= 1;
    match front_door::endpoint_of(&front_door::Call::of(&req), &table) {
        Err(e @ Refused::NotFound(_)) if !bare_and_empty => e.answer(),
        _ => HttpResponse::Ok().content_type("application/json").body(SWAGGER),
    }
}

/// OpenAPI 3 description of the scoring plane.
const SWAGGER: &str = r#"{
  "openapi": "3.0.3",
  "info": {"title": "Switchyard scoring API", "version": "1"},
  "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
  "security": [{"bearer": []}],
  "paths": {
    "/score": {"post": {
      "summary": "Score a request on the deployment chosen by traffic, or pinned by the azureml-model-deployment header",
      "parameters": [
        {"name": "azureml-model-deployment", "in": "header", "required": false, "schema": {"type": "string"}},
        {"name": "x-ms-client-request-id", "in": "header", "required": false, "schema": {"type": "string", "maxLength": 100}}
      ],
      "requestBody": {"required": true, "content": {"application/json": {"schema": {"oneOf": [
        {"type": "object", "required": ["data"], "properties": {"data": {"type": "array"}}},
        {"type": "object", "required": ["inputs"], "properties": {"inputs": {"type": "object"}}}
      ]}}}},
      "responses": {
        "200": {"description": "The model's answer"},
        "400": {"description": "The body is not what the deployment accepts"},
        "401": {"description": "Missing or wrong key or token"},
        "404": {"description": "No deployment has traffic, or the pinned deployment does not exist"},
        "408": {"description": "The body arrived too slowly (serve --body-timeout-ms), or the run took longer than request_timeout_ms"},
        "413": {"description": "Body too large (after decoding)"},
        "415": {"description": "Unsupported Content-Encoding (identity and gzip are accepted)"},
        "424": {"description": "The model failed, or produced a value JSON cannot carry (NaN or infinity)"},
        "429": {"description": "Too many requests in flight for the deployment"},
        "503": {"description": "No ready instance, or shutting down"}
      }
    }},
    "/": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Healthy"}}}},
    "/health/live": {"get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "Live"}}}},
    "/health/ready": {"get": {"summary": "Readiness", "security": [], "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
    "/v2": {"get": {"summary": "Open Inference Protocol v2 server metadata", "responses": {"200": {"description": "name, version, extensions"}}}},
    "/v2/health/live": {"get": {"summary": "v2 liveness", "responses": {"200": {"description": "Live"}}}},
    "/v2/health/ready": {"get": {"summary": "v2 readiness", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready"}}}},
    "/v2/models/{model}": {"get": {"summary": "v2 model metadata (the deployment chosen as for /score must serve {model})",
      "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}],
      "responses": {"200": {"description": "name, versions, platform, inputs, outputs"}, "404": {"description": "The chosen deployment serves another model"}}}},
    "/v2/models/{model}/ready": {"get": {"summary": "v2 model readiness",
      "parameters": [{"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}],
      "responses": {"200": {"description": "Ready"}, "503": {"description": "No ready instance"}}}},
    "/v2/models/{model}/infer": {"post": {"summary": "v2 inference: JSON tensors, or the binary tensor extension (Inference-Header-Content-Length)",
      "parameters": [
        {"name": "model", "in": "path", "required": true, "schema": {"type": "string"}},
        {"name": "azureml-model-deployment", "in": "header", "required": false, "schema": {"type": "string"}},
        {"name": "Inference-Header-Content-Length", "in": "header", "required": false, "schema": {"type": "integer"}}
      ],
      "responses": {"200": {"description": "outputs"}, "400": {"description": "Inputs not what the model takes ({\"error\"})"}, "404": {"description": "The chosen deployment serves another model"}}}}
  }
}"#;
