//! The admin API's OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! declarations (`admin.rs`) and the view and input types they name (`control::views`, the
//! spec types). Served at `GET /openapi.json` on the admin plane; a copy is committed as
//! `docs/admin-openapi.json`, and a test fails when the two differ, so a change of an admin
//! field shows in review as a change of the document. The CLI, the Python SDK and the studio
//! page are each checked against it by their own tests (docs/CONTRACT.md §5).

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::admin;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Switchyard admin API",
        description = "The control API of one `switchyard serve` (docs/CONTRACT.md §5). When the server has an admin token, every call but this document and the studio page needs `Authorization: Bearer <admin token>`. Request documents may be JSON or YAML (`Content-Type: application/yaml`); every error is `{\"message\": ...}`.",
        license(name = "MIT OR Apache-2.0")
    ),
    paths(
        admin::list_endpoints,
        admin::endpoint_metrics,
        admin::get_endpoint,
        admin::put_endpoint,
        admin::patch_endpoint,
        admin::delete_endpoint,
        admin::get_keys,
        admin::regenerate_keys,
        admin::invoke,
        admin::get_rollout,
        admin::start_rollout,
        admin::rollout_action,
        admin::list_deployments,
        admin::get_deployment,
        admin::put_deployment,
        admin::patch_deployment,
        admin::delete_deployment,
        admin::deployment_logs,
        admin::collected,
        admin::get_comparison,
        admin::reset_comparison,
        admin::metrics_json,
        admin::metrics,
        admin::assets::begin_upload,
        admin::assets::abandon_upload,
        admin::assets::upload_file,
        admin::assets::store_code,
        admin::assets::register_model,
        admin::assets::list_models,
        admin::assets::get_model,
        admin::assets::list_model_versions,
        admin::assets::get_model_version,
        admin::assets::archive_model,
        admin::assets::archive_model_version,
        admin::assets::register_environment,
        admin::assets::list_environments,
        admin::assets::curated_environments,
        admin::assets::get_environment,
        admin::assets::list_environment_versions,
        admin::assets::get_environment_version,
        admin::assets::archive_environment,
        admin::assets::archive_environment_version,
    ),
    modifiers(&AdminToken),
    security(("admin_token" = []))
)]
pub(crate) struct AdminApi;

/// The admin token as a bearer scheme.
struct AdminToken;

impl Modify for AdminToken {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("the admin token (`--admin-token-file`, SWITCHYARD_ADMIN_TOKEN)"))
            .build();
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme("admin_token", SecurityScheme::Http(scheme));
    }
}

/// The document as served and committed: pretty JSON with a final newline.
pub(crate) fn document() -> String {
    let generated = serde_json::to_value(AdminApi::openapi()).map(per_endpoint);
    let mut text = generated
        .and_then(|doc| serde_json::to_string_pretty(&doc))
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// Every route of one endpoint exists twice (`admin::SCOPES`): under
/// `/v1/endpoints/{endpoint}` for the endpoint the path names, and in the one-endpoint form
/// of before (`/v1/endpoint`, `/v1/deployments`), which means the server's only endpoint. The
/// handlers declare the short form once; this adds the named form of each, with its
/// `endpoint` parameter, and says what the short form means.
fn per_endpoint(mut doc: serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    let mut named = Vec::new();
    for (path, item) in paths.iter_mut() {
        let long = if path == "/v1/endpoint" || path.starts_with("/v1/endpoint/") {
            format!("/v1/endpoints/{{endpoint}}{}", &path["/v1/endpoint".len()..])
        } else if let Some(rest) = path.strip_prefix("/v1/deployments") {
            format!("/v1/endpoints/{{endpoint}}/deployments{rest}")
        } else {
            continue;
        };
        let mut copy = item.clone();
        for (_, op) in copy.as_object_mut().into_iter().flatten() {
            let Some(op) = op.as_object_mut() else { continue };
            if let Some(Value::String(id)) = op.get_mut("operationId") {
                id.push_str("_of_endpoint");
            }
            let parameter = json!({"name": "endpoint", "in": "path", "required": true,
                "description": "the endpoint's name", "schema": {"type": "string"}});
            match op.get_mut("parameters").and_then(Value::as_array_mut) {
                Some(list) => list.insert(0, parameter),
                None => {
                    op.insert("parameters".into(), json!([parameter]));
                }
            }
        }
        for (_, op) in item.as_object_mut().into_iter().flatten() {
            if let Some(op) = op.as_object_mut() {
                let said = op.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
                op.insert(
                    "description".into(),
                    json!(format!("{said}\n\nThe one-endpoint form of `{long}`: the server's only endpoint (404 without one, 409 naming them when it holds several).").trim_start()),
                );
            }
        }
        named.push((long, copy));
    }
    paths.extend(named);
    doc
}

/// The document, built once per process: it depends only on the code, and the route that
/// serves it needs no token, so a client asking in a loop must not make the server rebuild
/// 76 KB of JSON per request.
fn served() -> bytes::Bytes {
    static DOCUMENT: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| bytes::Bytes::from(document())).clone()
}

/// Registers `GET /openapi.json`. Served without the admin token, as the studio page is: it
/// is the same for every server and holds no data.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/openapi.json",
        web::get().to(|| async {
            HttpResponse::Ok()
                .content_type("application/json")
                .insert_header((header::CACHE_CONTROL, "no-cache"))
                .body(served())
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` names a schema the document defines (a parameter's type is not collected by
    /// itself: one named only there would dangle).
    #[test]
    fn every_reference_is_defined() {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (i, _) in text.match_indices("#/components/schemas/") {
            let name: String = text[i + 21..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            assert!(schemas.contains_key(&name), "a $ref to {name} dangles");
        }
    }

    /// The committed copy is the generated document. To accept a change of the API, run
    /// `SWITCHYARD_BLESS=1 cargo test --lib openapi` and commit `docs/admin-openapi.json`.
    #[test]
    fn the_committed_document_is_the_generated_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin-openapi.json");
        let generated = document();
        if std::env::var_os("SWITCHYARD_BLESS").is_some() {
            std::fs::write(path, &generated).unwrap();
            return;
        }
        let committed = include_str!("../../docs/admin-openapi.json");
        assert!(
            committed == generated,
            "docs/admin-openapi.json differs from the admin API the code serves: run `SWITCHYARD_BLESS=1 cargo test --lib openapi` and review the diff"
        );
    }
}
