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
/// Connections the listener holds at once (a deployment's Collector sends from one thread).
const MAX_CONNECTIONS: usize = 64;
/// How long a post's body may take to arrive.
const BODY_DEADLINE: Duration = Duration::from_secs(10);
/// The latest `ce-time` accepted: the last second of year 9999 (dates are written with four
/// digits).
const LATEST_SECOND: u64 = 253_402_300_799;

/// Binds the listener on `127.0.0.1:0` and starts it; the port goes to the hub (for the
/// workers' environment).
pub(crate) fn start(hub: Arc<Hub>) -> std::io::Result<actix_web::dev::Server> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    hub.set_port(listener.local_addr()?.port());
    let data = web::Data::new(hub);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/modeldata/log", web::post().to(log))
            .default_service(web::to(|| async { HttpResponse::NotFound().body("POST /modeldata/log only") }))
    })
    .workers(1)
    .max_connections(MAX_CONNECTIONS)
    .client_request_timeout(Duration::from_secs(5))
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

/// One post. The token is checked before a byte of the body is read, the body is bounded in
/// size and time, and a request a browser sent (it carries `Origin`) is refused: a web page
/// must not post into a deployment's records.
async fn log(req: HttpRequest, payload: web::Payload, hub: web::Data<Arc<Hub>>) -> HttpResponse {
    let headers = req.headers();
    if headers.contains_key("origin") {
        return HttpResponse::Forbidden().body("posts from web pages are refused");
    }
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
    let time = match header(headers, "ce-time") {
        None => None,
        Some(t) => match t.parse::<u64>().ok().filter(|s| *s <= LATEST_SECOND) {
            Some(secs) => SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)),
            None => {
                return HttpResponse::BadRequest()
                    .body(format!("ce-time must be whole seconds since 1970 (before year 10000), got {t:?}"))
            }
        },
    };
    let body = match tokio::time::timeout(BODY_DEADLINE, payload.to_bytes_limited(MAX_POST)).await {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(e))) => return HttpResponse::BadRequest().body(format!("the body could not be read: {e}")),
        Ok(Err(_)) => return HttpResponse::PayloadTooLarge().body(format!("a post is at most {MAX_POST} bytes")),
        Err(_) => return HttpResponse::RequestTimeout().body("the body took too long"),
    };
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

#[cfg(test)]
mod tests {
    use actix_web::{test, web, App};
    use base64::Engine;

    use super::*;
    use crate::collector::{DeploymentCollector, Sink};

    fn basic(token: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{token}:switchyard")))
    }

    #[actix_web::test]
    async fn a_post_needs_a_live_token_no_origin_a_sane_time_and_an_enabled_collection() {
        let data = tempfile::tempdir().unwrap();
        let hub = Hub::new(Sink::new(data.path().to_path_buf(), 1 << 30), tempfile::tempdir().unwrap());
        let settings = crate::spec::DataCollector::from_value(
            &serde_json::json!({"collections": {"model_inputs": {"enabled": true}}}),
        )
        .unwrap();
        let c = DeploymentCollector::new(&hub, "ep", "blue", None, settings);
        hub.set_port(1);
        let env: std::collections::BTreeMap<String, String> = c.worker_env().into_iter().collect();
        let token = env["AZUREML_MDC_HOST"].split(':').next().unwrap().to_string();
        let app = test::init_service(
            App::new().app_data(web::Data::new(Arc::clone(&hub))).route("/modeldata/log", web::post().to(log)),
        )
        .await;
        let post = |auth: Option<String>, extra: Vec<(&'static str, &'static str)>, body: &'static str| {
            let mut r = test::TestRequest::post()
                .uri("/modeldata/log")
                .insert_header(("ce-type", "azureml.inference.model_inputs"));
            if let Some(a) = auth {
                r = r.insert_header(("authorization", a));
            }
            for h in extra {
                r = r.insert_header(h);
            }
            r.set_payload(body).to_request()
        };
        let status = |r: actix_web::dev::ServiceResponse| r.status().as_u16();
        assert_eq!(status(test::call_service(&app, post(None, vec![], "[]")).await), 401);
        assert_eq!(status(test::call_service(&app, post(Some(basic("guess")), vec![], "[]")).await), 401);
        assert_eq!(
            status(
                test::call_service(&app, post(Some(basic(&token)), vec![("origin", "http://evil.example")], "[]"))
                    .await
            ),
            403,
            "a web page's post"
        );
        assert_eq!(
            status(test::call_service(&app, post(Some(basic(&token)), vec![("ce-time", "1765000000000")], "[]")).await),
            400,
            "milliseconds"
        );
        assert_eq!(
            status(
                test::call_service(&app, post(Some(basic(&token)), vec![("ce-time", "18446744073709551615")], "[]"))
                    .await
            ),
            400
        );
        let other = test::TestRequest::post()
            .uri("/modeldata/log")
            .insert_header(("ce-type", "azureml.inference.model_outputs"))
            .insert_header(("authorization", basic(&token)))
            .set_payload("[]")
            .to_request();
        assert_eq!(status(test::call_service(&app, other).await), 400, "a collection that is not on");
        let ok =
            post(Some(basic(&token)), vec![("ce-time", "1765000000"), ("ce-x-request-id", "corr")], r#"[{"a":1}]"#);
        assert_eq!(status(test::call_service(&app, ok).await), 200);
        assert!(hub.sink().flush(Duration::from_secs(10)));
        assert_eq!(c.view().written, 1);
        drop(c);
        assert_eq!(
            status(test::call_service(&app, post(Some(basic(&token)), vec![], "[]")).await),
            401,
            "a version gone"
        );
    }
}
