//! The one place where errors become HTTP answers, for both planes: every error is JSON
//! `{"message": ...}` with the status CONTRACT §5/§6 gives its kind, plus the headers that go
//! with it (`Retry-After` on 429, the model-error headers on 424). The layers below return
//! typed errors (`SpecError`, `ControlError`, `ScoreError`) and know nothing of HTTP.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;
use serde_json::Value;

use super::admin_guard::Refusal;
use crate::control::ControlError;
use crate::deployment::ScoreError;
use crate::spec::{SpecError, SpecErrorKind};

/// An error answer: JSON `{"message": ...}` with the given status.
pub(super) fn error_response(status: u16, message: &str) -> HttpResponse {
    ErrorStyle::Message.response(status, message)
}

/// How an API spells its error bodies: Azure's `{"message": ...}`, or the Open Inference
/// Protocol's `{"error": ...}` (what `tritonclient` reads). Same statuses and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorStyle {
    Message,
    Error,
}

impl ErrorStyle {
    /// An error answer in this style.
    pub(crate) fn response(self, status: u16, message: &str) -> HttpResponse {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            ErrorStyle::Message => HttpResponse::build(status).json(ErrorBody { message: message.to_string() }),
            ErrorStyle::Error => HttpResponse::build(status).json(serde_json::json!({ "error": message })),
        }
    }
}

/// Respells an error answer made in `{"message": ...}` (the body reader's refusals) in `style`,
/// keeping its status and headers. Errors only, so the extra copy costs nothing that matters.
pub(super) fn restyle(response: HttpResponse, style: ErrorStyle) -> HttpResponse {
    if style == ErrorStyle::Message || response.status().is_success() {
        return response;
    }
    let status = response.status().as_u16();
    let (head, body) = response.into_parts();
    let message = actix_web::body::MessageBody::try_into_bytes(body)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| head.status().canonical_reason().unwrap_or("error").to_string());
    let mut fresh = style.response(status, &message);
    for (k, v) in head.headers() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(k.clone(), v.clone());
        }
    }
    fresh.head_mut().set_connection_type(head.head().connection_type());
    fresh
}

/// The admin API's status for a refused document.
pub(super) fn spec_status(e: &SpecError) -> u16 {
    match e.kind {
        SpecErrorKind::Invalid => 400,
        SpecErrorKind::Conflict => 409,
        SpecErrorKind::TooLarge => 413,
    }
}

/// The admin API's status for a refused operation.
pub(super) fn control_status(e: &ControlError) -> u16 {
    match e {
        ControlError::Spec(e) => spec_status(e),
        ControlError::Conflict(_) => 409,
        ControlError::NotFound(_) => 404,
        ControlError::Unsaved(_) => 500,
        ControlError::Unavailable(_) => 503,
    }
}

/// A refused admin operation as an answer.
pub(super) fn control_error(e: &ControlError) -> HttpResponse {
    error_response(control_status(e), &e.to_string())
}

/// The admin gate's refusal as an answer: 403 for a foreign `Host` or a cross-site request,
/// 415 for a body not declared as JSON or YAML; each message says what was expected.
pub(super) fn admin_refusal(refusal: &Refusal) -> HttpResponse {
    match refusal {
        Refusal::ForeignHost { host, allowed } => error_response(
            403,
            &format!(
                "this admin plane has no admin token, so it answers only to the host names it serves ({allowed}); this request was sent to Host {host:?}. Add the name with --admin-allowed-hosts, or set an admin token"
            ),
        ),
        Refusal::CrossSite { evidence } => error_response(
            403,
            &format!(
                "a state-changing admin request must come from the admin plane's own origin (the studio page) or from a client that is not a browser; this one came from another site ({evidence})"
            ),
        ),
        Refusal::ContentType { got } => {
            let got = match got {
                Some(t) => format!("got Content-Type {t:?}"),
                None => "got a body without a Content-Type".to_string(),
            };
            error_response(
                415,
                &format!("admin request bodies must be sent as Content-Type: application/json (documents may also be application/yaml); {got}"),
            )
        }
    }
}

/// An admin result as an answer: 200 with the view as JSON, or the error.
pub(super) fn reply<T: serde::Serialize>(result: Result<T, ControlError>) -> HttpResponse {
    match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => control_error(&e),
    }
}

/// An admin result that may have created what it names: 201 then, else 200.
pub(super) fn reply_created<T: serde::Serialize>(result: Result<(T, bool), ControlError>) -> HttpResponse {
    match result {
        Ok((v, true)) => HttpResponse::Created().json(v),
        Ok((v, false)) => HttpResponse::Ok().json(v),
        Err(e) => control_error(&e),
    }
}

/// Every error body of the admin API (and of the scoring plane's Azure routes).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct ErrorBody {
    /// What went wrong and what was expected.
    pub message: String,
}

/// A scoring failure as an answer (CONTRACT §6). The status is the deployment's own
/// ([`ScoreError::status`], also the `code` label of its metrics); the message says what to do,
/// spelled in the API's error style.
pub(super) fn score_error_in(style: ErrorStyle, e: &ScoreError) -> HttpResponse {
    let error_response = |status: u16, message: &str| style.response(status, message);
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
            "the deployment has no ready instance: it is loading or failed (see its provisioning_state)",
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
