//! The one place where errors become HTTP answers, for both planes and both error styles:
//! every refusal is a [`Refused`] kind (or a layer's typed error converted into one), and
//! [`Refused::response`] alone gives it its status, its body (`{"message": ...}`, or the Open
//! Inference Protocol's `{"error": ...}`) and the headers that go with it (`WWW-Authenticate` on
//! 401, `Retry-After` on 429, `Accept-Encoding` on 415, the model-error headers on 424). The
//! layers below return typed errors (`SpecError`, `ControlError`, `ScoreError`) and know
//! nothing of HTTP; the handlers and the body reader name kinds, never status codes.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use super::admin_guard::Refusal;
use crate::control::ControlError;
use crate::deployment::ScoreError;
use crate::spec::{SpecError, SpecErrorKind};

/// Why a request is refused, by kind; each message says what was expected.
#[derive(Debug)]
pub(crate) enum Refused {
    /// 400: the request is not what was expected.
    BadRequest(String),
    /// 401, with `WWW-Authenticate: Bearer`: credentials missing or wrong.
    Unauthenticated(String),
    /// 404.
    NotFound(String),
    /// 408: the body did not arrive in time; the connection closes (its rest is never read).
    BodyTimeout(String),
    /// 413.
    TooLarge(String),
    /// 415, with `Accept-Encoding: gzip`: a content coding this server does not read.
    UnsupportedEncoding(String),
    /// 431: headers too large.
    HeadersTooLarge(String),
    /// 502: the scoring plane did not answer an invoke.
    BadGateway(String),
    /// 503: not now (shutting down, nothing ready, the endpoint unavailable).
    Unavailable(String),
    /// A deployment did not answer (CONTRACT §6: 429, 503, 400, 424, 408).
    Score(ScoreError),
    /// A refused admin operation (CONTRACT §5: 400, 409, 404, 413, 500, 503).
    Control(ControlError),
}

impl From<ScoreError> for Refused {
    fn from(e: ScoreError) -> Self {
        Refused::Score(e)
    }
}

impl From<ControlError> for Refused {
    fn from(e: ControlError) -> Self {
        Refused::Control(e)
    }
}

impl From<SpecError> for Refused {
    fn from(e: SpecError) -> Self {
        Refused::Control(ControlError::Spec(e))
    }
}

impl Refused {
    /// The answer in the admin API's (and Azure's scoring routes') style, `{"message": ...}`.
    pub(super) fn answer(&self) -> HttpResponse {
        self.response(ErrorStyle::Message)
    }

    /// The answer in `style`: the kind's status, body and headers.
    pub(crate) fn response(&self, style: ErrorStyle) -> HttpResponse {
        let (status, message) = self.status_message();
        let mut r = style.render(status, &message);
        match self {
            Refused::Unauthenticated(_) => {
                r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Refused::BodyTimeout(_) => r.head_mut().set_connection_type(actix_web::http::ConnectionType::Close),
            Refused::UnsupportedEncoding(_) => {
                r.headers_mut().insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            }
            Refused::Score(e) => score_headers(&mut r, e),
            _ => {}
        }
        r
    }

    /// The kind's status and message, for an answer in any protocol (the gRPC plane turns the
    /// status into its code).
    pub(crate) fn status_message(&self) -> (u16, std::borrow::Cow<'_, str>) {
        use std::borrow::Cow::Borrowed;
        match self {
            Refused::BadRequest(m) => (400, Borrowed(m)),
            Refused::Unauthenticated(m) => (401, Borrowed(m)),
            Refused::NotFound(m) => (404, Borrowed(m)),
            Refused::BodyTimeout(m) => (408, Borrowed(m)),
            Refused::TooLarge(m) => (413, Borrowed(m)),
            Refused::UnsupportedEncoding(m) => (415, Borrowed(m)),
            Refused::HeadersTooLarge(m) => (431, Borrowed(m)),
            Refused::BadGateway(m) => (502, Borrowed(m)),
            Refused::Unavailable(m) => (503, Borrowed(m)),
            Refused::Score(e) => (e.status(), score_message(e)),
            Refused::Control(e) => (control_status(e), e.to_string().into()),
        }
    }
}

/// How an API spells its error bodies: Azure's `{"message": ...}`, or the Open Inference
/// Protocol's `{"error": ...}` (what `tritonclient` reads). Same statuses and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorStyle {
    Message,
    Error,
}

impl ErrorStyle {
    /// An error body in this style with `status`.
    fn render(self, status: u16, message: &str) -> HttpResponse {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self {
            ErrorStyle::Message => HttpResponse::build(status).json(ErrorBody { message: message.to_string() }),
            ErrorStyle::Error => HttpResponse::build(status).json(serde_json::json!({ "error": message })),
        }
    }
}

/// The admin API's status for a refused document.
fn spec_status(e: &SpecError) -> u16 {
    match e.kind {
        SpecErrorKind::Invalid => 400,
        SpecErrorKind::Conflict => 409,
        SpecErrorKind::TooLarge => 413,
    }
}

/// The admin API's status for a refused operation.
fn control_status(e: &ControlError) -> u16 {
    match e {
        ControlError::Spec(e) => spec_status(e),
        ControlError::Conflict(_) | ControlError::Retry => 409,
        ControlError::NotFound(_) => 404,
        ControlError::Unsaved(_) | ControlError::Internal(_) => 500,
        ControlError::Unavailable(_) => 503,
    }
}

/// The admin gate's refusal as an answer: 403 for a foreign `Host` or a cross-site request,
/// 415 for a body not declared as JSON or YAML; each message says what was expected.
pub(super) fn admin_refusal(refusal: &Refusal) -> HttpResponse {
    let error_response = |status: u16, message: &str| ErrorStyle::Message.render(status, message);
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
                &format!("admin request bodies must be sent as Content-Type: application/json (documents may also be application/yaml; a file of an upload, PUT /v1/uploads/ID/files/PATH, application/octet-stream); {got}"),
            )
        }
    }
}

/// An admin result as an answer: 200 with the view as JSON, or the error.
pub(super) fn reply<T: serde::Serialize>(result: Result<T, ControlError>) -> HttpResponse {
    match result {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => Refused::from(e).answer(),
    }
}

/// An admin result that may have created what it names: 201 then, else 200.
pub(super) fn reply_created<T: serde::Serialize>(result: Result<(T, bool), ControlError>) -> HttpResponse {
    match result {
        Ok((v, true)) => HttpResponse::Created().json(v),
        Ok((v, false)) => HttpResponse::Ok().json(v),
        Err(e) => Refused::from(e).answer(),
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
fn score_message(e: &ScoreError) -> std::borrow::Cow<'_, str> {
    match e {
        ScoreError::Overloaded => "too many requests in flight for this deployment: retry later, or scale it (instance_count) or raise max_concurrent_requests_per_instance".into(),
        ScoreError::NotReady => "the deployment has no ready instance: it is loading or failed (see its provisioning_state)".into(),
        ScoreError::BadInput(m) => m.as_str().into(),
        ScoreError::Timeout(limit) => format!(
            "the request took longer than the deployment's request_timeout_ms ({} ms); raise request_settings.request_timeout_ms (at most 180000) or send less work",
            limit.as_millis()
        )
        .into(),
        ScoreError::ModelFailed(reason) => format!("the model failed to score the request: {reason}").into(),
    }
}

/// The headers a deployment's refusal carries besides its body: `Retry-After` on 429, the
/// model's error reason on 424.
fn score_headers(r: &mut HttpResponse, e: &ScoreError) {
    match e {
        ScoreError::Overloaded => {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        ScoreError::ModelFailed(reason) => {
            let h = r.headers_mut();
            h.insert(
                header::HeaderName::from_static("ms-azureml-model-error-statuscode"),
                HeaderValue::from_static("500"),
            );
            h.insert(
                header::HeaderName::from_static("ms-azureml-model-error-reason"),
                HeaderValue::from_str(&header_safe(reason)).unwrap_or(HeaderValue::from_static("model_error")),
            );
        }
        _ => {}
    }
}

/// Makes free text fit in a header value: visible ASCII only, at most 256 characters.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if (' '..='~').contains(&c) { c } else { ' ' }).take(256).collect()
}
