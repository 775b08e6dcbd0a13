//! The one place where errors become HTTP answers, for both planes: every error is JSON
//! `{"message": ...}` with the status CONTRACT §5/§6 gives its kind, plus the headers that go
//! with it (`Retry-After` on 429, the model-error headers on 424). The layers below return
//! typed errors (`SpecError`, `ControlError`, `ScoreError`) and know nothing of HTTP.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::Value;

use crate::control::ControlError;
use crate::deployment::ScoreError;
use crate::spec::{SpecError, SpecErrorKind};

/// An error answer: JSON `{"message": ...}` with the given status.
pub fn error_response(status: u16, message: &str) -> HttpResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status).json(serde_json::json!({ "message": message }))
}

/// The admin API's status for a refused document.
pub fn spec_status(e: &SpecError) -> u16 {
    match e.kind {
        SpecErrorKind::Invalid => 400,
        SpecErrorKind::Conflict => 409,
        SpecErrorKind::TooLarge => 413,
    }
}

/// The admin API's status for a refused operation.
pub fn control_status(e: &ControlError) -> u16 {
    match e {
        ControlError::Spec(e) => spec_status(e),
        ControlError::Conflict(_) => 409,
        ControlError::NotFound(_) => 404,
        ControlError::Unsaved(_) => 500,
        ControlError::Unavailable(_) => 503,
    }
}

/// A refused admin operation as an answer.
pub fn control_error(e: &ControlError) -> HttpResponse {
    error_response(control_status(e), &e.to_string())
}

/// An admin result as an answer: 200 with the JSON, or the error.
pub fn reply(result: Result<Value, ControlError>) -> HttpResponse {
    match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => control_error(&e),
    }
}

/// A scoring failure as an answer (CONTRACT §6). The status is the deployment's own
/// ([`ScoreError::status`], also the `code` label of its metrics); the message says what to do.
pub fn score_error(e: &ScoreError) -> HttpResponse {
    match e {
        ScoreError::Overloaded => {
            let mut r = error_response(
                e.status(),
                "too many requests in flight for this deployment: retry later, or scale it (instance_count) or raise max_concurrent_requests_per_instance",
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        ScoreError::NotReady => error_response(
            e.status(),
            "the deployment has no ready instance: it is loading or failed (see `online-deployment show`)",
        ),
        ScoreError::BadInput(m) => error_response(e.status(), m),
        ScoreError::Timeout(limit) => error_response(
            e.status(),
            &format!(
                "the request took longer than the deployment's request_timeout_ms ({} ms); raise request_settings.request_timeout_ms (at most 180000) or send less work",
                limit.as_millis()
            ),
        ),
        ScoreError::ModelFailed(reason) => {
            let mut r = error_response(e.status(), &format!("the model failed to score the request: {reason}"));
            let h = r.headers_mut();
            h.insert(
                header::HeaderName::from_static("ms-azureml-model-error-statuscode"),
                HeaderValue::from_static("500"),
            );
            h.insert(
                header::HeaderName::from_static("ms-azureml-model-error-reason"),
                HeaderValue::from_str(&header_safe(reason)).unwrap_or(HeaderValue::from_static("model_error")),
            );
            r
        }
    }
}

/// Makes free text fit in a header value: visible ASCII only, at most 256 characters.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if (' '..='~').contains(&c) { c } else { ' ' }).take(256).collect()
}
