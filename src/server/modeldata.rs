//! The custom-logging listener (issue 28): where a scoring script's
//! `azureml.ai.monitoring.Collector` posts what it collects, as it posts to Azure's data
//! collector (`POST /modeldata/log`, the DataFrame as JSON records, `ce-*` headers).
//!
//! It listens on the loopback interface only, on a port of its own (`AZUREML_MDC_PORT` in the
//! workers' environment), never beside the scoring plane. A post names its deployment by the
//! token the deployment's workers got in `AZUREML_MDC_HOST` (`TOKEN@127.0.0.1`, which the
//! client's `requests` sends as Basic authentication): without a live deployment's token a
//! post is refused (401), so another local process cannot write into a deployment's records.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use actix_web::http::header::HeaderMap;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine;

use crate::collector::{Custom, Hub, Role};

/// The largest post accepted (a DataFrame of a few thousand rows).
const MAX_POST: usize = 8 << 20;

/// Binds the listener on `127.0.0.1:0` and starts it; the port goes to the hub (for the
/// workers' environment).
pub(crate) fn start(hub: Arc<Hub>) -> std::io::Result<actix_web::dev::Server> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    hub.set_port(listener.local_addr()?.port());
    let data = web::Data::new(hub);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(MAX_POST))
            .route("/modeldata/log", web::post().to(log))
            .default_service(web::to(|| async { HttpResponse::NotFound().body("POST /modeldata/log only") }))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(2)
    .listen(listener)?
    .run())
}

/// The token of `Authorization: Basic base64(TOKEN:PASSWORD)`.
fn token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    Some(text.split(':').next().unwrap_or_default().to_string())
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string).filter(|v| !v.is_empty() && v.len() <= 512)
}

async fn log(req: HttpRequest, body: web::Bytes, hub: web::Data<Arc<Hub>>) -> HttpResponse {
    let headers = req.headers();
    let Some(collector) = token(headers).and_then(|t| hub.find(&t)) else {
        return HttpResponse::Unauthorized()
            .body("unknown deployment: this listener takes posts from Switchyard's workers only");
    };
    let Some(collection) =
        header(headers, "ce-type").and_then(|t| t.strip_prefix("azureml.inference.").map(str::to_lowercase))
    else {
        return HttpResponse::BadRequest().body("ce-type must be azureml.inference.COLLECTION");
    };
    if !collector.custom_enabled(&collection) {
        return HttpResponse::BadRequest()
            .body(format!("collection {collection:?} is not enabled in the deployment's data_collector"));
    }
    let time = header(headers, "ce-time")
        .and_then(|t| t.parse::<u64>().ok())
        .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
    collector.custom(Custom {
        collection,
        id: header(headers, "trace-id"),
        time,
        request_id: header(headers, "ce-switchyard-request-id"),
        correlation_id: header(headers, "ce-x-request-id"),
        model_version: header(headers, "ce-model-version"),
        content_type: header(headers, "content-type"),
        collect_type: header(headers, "ce-collect-data-type"),
        agent: header(headers, "ce-agent"),
        role: match header(headers, "ce-switchyard-role").as_deref() {
            Some("mirror") => Some(Role::Mirror),
            Some("live") => Some(Role::Live),
            _ => None,
        },
        body,
    });
    HttpResponse::Ok().body("ok")
}
