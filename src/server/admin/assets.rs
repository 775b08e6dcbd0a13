//! The asset routes of the admin API (CONTRACT §11): uploads, registered models and
//! environments, stored code. HTTP ⇄ workspace calls only; the rules are in `control::assets`
//! and the store (`assets`). Everything that touches the disk runs off the admin workers.

use std::pin::Pin;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{input, off_worker, parse, refuse, segment, Body, Data};
use crate::assets::{
    CodeInput, CodeView, CuratedEnvironmentView, EnvironmentInput, EnvironmentView, ModelInput, ModelView, UploadFile,
    UploadView, UploadedFileView,
};
use crate::control::ControlError;
use crate::server::errors::{reply, reply_created, ErrorBody, Refused};
use crate::spec::AssetKind;

/// Registers the routes (before the one-endpoint routes: none of them overlap).
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/uploads", web::post().to(begin_upload))
        .route("/v1/uploads/{id}", web::delete().to(abandon_upload))
        .route("/v1/uploads/{id}/files/{path:.*}", web::put().to(upload_file))
        .route("/v1/codes", web::post().to(store_code))
        .route("/v1/models", web::post().to(register_model))
        .route("/v1/models", web::get().to(list_models))
        .route("/v1/models/{name}", web::get().to(get_model))
        .route("/v1/models/{name}/versions", web::get().to(list_model_versions))
        .route("/v1/models/{name}/versions/{version}", web::get().to(get_model_version))
        .route("/v1/models/{name}/{action}", web::post().to(archive_model))
        .route("/v1/models/{name}/versions/{version}/{action}", web::post().to(archive_model_version))
        .route("/v1/environments", web::post().to(register_environment))
        .route("/v1/environments", web::get().to(list_environments))
        .route("/v1/environments/curated", web::get().to(curated_environments))
        .route("/v1/environments/{name}", web::get().to(get_environment))
        .route("/v1/environments/{name}/versions", web::get().to(list_environment_versions))
        .route("/v1/environments/{name}/versions/{version}", web::get().to(get_environment_version))
        .route("/v1/environments/{name}/{action}", web::post().to(archive_environment))
        .route("/v1/environments/{name}/versions/{version}/{action}", web::post().to(archive_environment_version));
}

macro_rules! guard {
    ($req:expr, $data:expr) => {
        if let Some(r) = refuse(&$req, &$data) {
            return r;
        }
    };
}

/// How long an upload's body may go without a byte before it is given up.
const BODY_IDLE: Duration = Duration::from_secs(60);
/// Bytes gathered before each write to disk (one blocking-pool call per write).
const WRITE_CHUNK: usize = 1 << 20;

/// Starts an upload: send its files with `PUT /v1/uploads/{id}/files/{path}`, then register it.
#[utoipa::path(post, path = "/v1/uploads", tag = "assets",
    responses((status = 201, body = UploadView), (status = 409, description = "too many uploads in progress", body = ErrorBody)))]
pub(super) async fn begin_upload(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    let ws = data.control.clone();
    reply_created(off_worker(move || ws.begin_upload()).await.map(|v| (v, true)))
}

/// Abandons an upload and its files.
#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "assets", params(("id" = String, Path)),
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
pub(super) async fn abandon_upload(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    let (ws, id) = (data.control.clone(), segment(&req, "id"));
    match off_worker(move || ws.abandon_upload(&id)).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => Refused::from(e).answer(),
    }
}

/// One file of an upload, its bytes the body (`application/octet-stream`); `path` relative,
/// the uploaded folder's name first (`model/weights.pkl`).
#[utoipa::path(put, path = "/v1/uploads/{id}/files/{path}", tag = "assets",
    params(("id" = String, Path), ("path" = String, Path, description = "the file's path in the upload, e.g. model/weights.pkl")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = UploadedFileView), (status = 400, description = "a path that is not a plain relative one", body = ErrorBody),
        (status = 404, description = "no such upload", body = ErrorBody), (status = 409, description = "sent twice", body = ErrorBody),
        (status = 413, description = "over the upload's limits", body = ErrorBody)))]
pub(super) async fn upload_file(req: HttpRequest, payload: web::Payload, data: Data) -> HttpResponse {
    guard!(req, data);
    // A declared size over the limit is refused before a byte is read.
    let declared =
        req.headers().get(actix_web::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > crate::assets::MAX_UPLOAD_BYTES) {
        return Refused::TooLarge(format!(
            "an upload holds at most {} bytes; this file is larger",
            crate::assets::MAX_UPLOAD_BYTES
        ))
        .answer();
    }
    let (ws, id) = (data.control.clone(), segment(&req, "id"));
    let path = match file_path(&req, &id) {
        Ok(path) => path,
        Err(e) => return e.answer(),
    };
    let file = match off_worker(move || ws.upload_file(&id, &path)).await {
        Ok(file) => file,
        Err(e) => return Refused::from(e).answer(),
    };
    match receive(payload, file).await {
        Ok(view) => HttpResponse::Created().json(view),
        Err(e) => e.answer(),
    }
}

/// The file's path as the client meant it: the raw path after `/files/`, percent-decoded whole
/// (the router leaves `%2F` and `%25` encoded), so `..%2F` is seen as the `../` it stands for
/// and refused, and a name holding `%` arrives as that name.
fn file_path(req: &HttpRequest, id: &str) -> Result<String, Refused> {
    let raw = req.uri().path();
    let rest = raw.find("/files/").map(|at| &raw[at + "/files/".len()..]).unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(rest)
        .decode_utf8()
        .map_err(|_| Refused::BadRequest(format!("the file path in upload {id} is not UTF-8 once decoded")))?;
    Ok(decoded.into_owned())
}

/// Streams the body into `file`, in writes of about [`WRITE_CHUNK`] made on the blocking pool.
/// A body that stalls for [`BODY_IDLE`] or fails is given up, and the file removed.
async fn receive(mut payload: web::Payload, file: UploadFile) -> Result<UploadedFileView, Refused> {
    let mut file = Some(file);
    let mut pending = BytesMut::new();
    loop {
        let next = std::future::poll_fn(|cx| Pin::new(&mut payload).poll_next(cx));
        let chunk = match tokio::time::timeout(BODY_IDLE, next).await {
            Err(_) => {
                return Err(Refused::BodyTimeout(format!(
                    "the file's body sent nothing for {} s: send it again",
                    BODY_IDLE.as_secs()
                )))
            }
            Ok(None) => None,
            Ok(Some(Err(e))) => return Err(Refused::BadRequest(format!("the file's body could not be read: {e}"))),
            Ok(Some(Ok(chunk))) => Some(chunk),
        };
        let done = chunk.is_none();
        if let Some(chunk) = chunk {
            pending.extend_from_slice(&chunk);
        }
        if pending.len() >= WRITE_CHUNK || done {
            let bytes: Bytes = pending.split().freeze();
            let mut f = file.take().expect("kept between writes");
            let (f, written) = web::block(move || {
                let r = f.write(&bytes);
                (f, r)
            })
            .await
            .map_err(|_| Refused::Unavailable("the file could not be written now: try again".into()))?;
            written.map_err(|e| Refused::from(ControlError::from(e)))?;
            file = Some(f);
        }
        if done {
            let f = file.take().expect("kept between writes");
            let (path, size_bytes) =
                off_worker(move || f.finish().map_err(ControlError::from)).await.map_err(Refused::from)?;
            return Ok(UploadedFileView { path, size_bytes });
        }
    }
}

/// Stores an upload's one folder as code (content-addressed, no name): its `path` is what a
/// deployment's `code_configuration.code` takes.
#[utoipa::path(post, path = "/v1/codes", tag = "assets", request_body = CodeInput,
    responses((status = 201, body = CodeView), (status = 200, description = "that content, stored before", body = CodeView),
        (status = 400, body = ErrorBody), (status = 404, description = "no such upload", body = ErrorBody)))]
pub(super) async fn store_code(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    let ws = data.control.clone();
    let parsed = parse(body).await.and_then(|v| input::<CodeInput>(v, "{\"upload\": ID}"));
    reply_created(match parsed {
        Ok(code) => off_worker(move || ws.store_code(code)).await,
        Err(e) => Err(e),
    })
}

/// Registers an upload as a model: 201 with the new version, or 200 with the existing one
/// when the same content is registered again under its version.
#[utoipa::path(post, path = "/v1/models", tag = "assets", request_body = ModelInput,
    responses((status = 201, body = ModelView), (status = 200, description = "that version, registered before with this content", body = ModelView),
        (status = 400, body = ErrorBody), (status = 404, description = "no such upload", body = ErrorBody),
        (status = 409, description = "the version exists with other content", body = ErrorBody)))]
pub(super) async fn register_model(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    let ws = data.control.clone();
    let expected = "{\"name\", \"version\"?, \"type\"?, \"description\"?, \"tags\"?, \"upload\"}";
    let parsed = parse(body).await.and_then(|v| input::<ModelInput>(v, expected));
    reply_created(match parsed {
        Ok(model) => off_worker(move || ws.register_model(model)).await,
        Err(e) => Err(e),
    })
}

/// Registers an environment (the conda file's text, an image, or both).
#[utoipa::path(post, path = "/v1/environments", tag = "assets", request_body = EnvironmentInput,
    responses((status = 201, body = EnvironmentView), (status = 200, description = "that version, registered before with this content", body = EnvironmentView),
        (status = 400, body = ErrorBody), (status = 409, description = "the version exists with other content", body = ErrorBody)))]
pub(super) async fn register_environment(req: HttpRequest, body: Body, data: Data) -> HttpResponse {
    guard!(req, data);
    let ws = data.control.clone();
    let expected =
        "{\"name\", \"version\"?, \"image\"?, \"conda_file\"? (the conda YAML's text), \"description\"?, \"tags\"?}";
    let parsed = parse(body).await.and_then(|v| input::<EnvironmentInput>(v, expected));
    reply_created(match parsed {
        Ok(env) => off_worker(move || ws.register_environment(env)).await,
        Err(e) => Err(e),
    })
}

/// `?archived=true` on the lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Include archived versions.
    #[serde(default)]
    archived: bool,
}

fn archived(req: &HttpRequest) -> Result<bool, ControlError> {
    web::Query::<ListQuery>::from_query(req.query_string())
        .map(|q| q.archived)
        .map_err(|_| ControlError::invalid("archived must be true or false"))
}

/// The latest version of each registered model.
#[utoipa::path(get, path = "/v1/models", tag = "assets", params(ListQuery), responses((status = 200, body = Vec<ModelView>)))]
pub(super) async fn list_models(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archived(&req).and_then(|a| data.control.models(None, a)))
}

/// Every version of one model, oldest first.
#[utoipa::path(get, path = "/v1/models/{name}/versions", tag = "assets", params(("name" = String, Path), ListQuery),
    responses((status = 200, body = Vec<ModelView>), (status = 404, description = "not registered", body = ErrorBody)))]
pub(super) async fn list_model_versions(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archived(&req).and_then(|a| data.control.models(Some(&segment(&req, "name")), a)))
}

/// The latest version of one model.
#[utoipa::path(get, path = "/v1/models/{name}", tag = "assets", params(("name" = String, Path)),
    responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_model(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(data.control.model(&segment(&req, "name"), None))
}

/// One version of a model.
#[utoipa::path(get, path = "/v1/models/{name}/versions/{version}", tag = "assets",
    params(("name" = String, Path), ("version" = String, Path)), responses((status = 200, body = ModelView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_model_version(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(data.control.model(&segment(&req, "name"), Some(&segment(&req, "version"))))
}

/// What `POST .../{action}` does to an asset (its documented values; the handler matches the
/// path segment against them).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)] // A schema: the action is read from the path as text.
enum ArchiveAction {
    Archive,
    Restore,
}

/// The versions an archive or restore changed.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(crate) struct ArchivedView {
    pub name: String,
    /// The versions whose state changed (none when they were already so).
    pub versions: Vec<String>,
    pub archived: bool,
}

/// Archives or restores, off the admin workers: it waits for deployment changes in flight
/// (which may be reading files) and writes the store.
async fn archive(req: &HttpRequest, data: &Data, kind: AssetKind) -> Result<ArchivedView, ControlError> {
    let name = segment(req, "name");
    let version = req.match_info().get("version").map(str::to_string);
    let archived = match segment(req, "action").as_str() {
        "archive" => true,
        "restore" => false,
        other => {
            return Err(ControlError::NotFound(format!(
                "no action {other:?} on a {}: expected archive or restore",
                kind.word()
            )))
        }
    };
    let ws = data.control.clone();
    let shown = name.clone();
    let versions = off_worker(move || ws.set_archived(kind, &name, version.as_deref(), archived)).await?;
    Ok(ArchivedView { name: shown, versions, archived })
}

/// Archives or restores every version of a model; archiving one a deployment uses is 409.
#[utoipa::path(post, path = "/v1/models/{name}/{action}", tag = "assets",
    params(("name" = String, Path), ("action" = inline(ArchiveAction), Path, description = "`archive` or `restore`")),
    responses((status = 200, body = ArchivedView), (status = 404, description = "not registered", body = ErrorBody),
        (status = 409, description = "a deployment uses it", body = ErrorBody)))]
pub(super) async fn archive_model(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archive(&req, &data, AssetKind::Model).await)
}

/// Archives or restores one version of a model; archiving one a deployment uses is 409.
#[utoipa::path(post, path = "/v1/models/{name}/versions/{version}/{action}", tag = "assets",
    params(("name" = String, Path), ("version" = String, Path), ("action" = inline(ArchiveAction), Path, description = "`archive` or `restore`")),
    responses((status = 200, body = ArchivedView), (status = 404, description = "not registered", body = ErrorBody),
        (status = 409, description = "a deployment uses it", body = ErrorBody)))]
pub(super) async fn archive_model_version(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archive(&req, &data, AssetKind::Model).await)
}

/// The latest version of each registered environment.
#[utoipa::path(get, path = "/v1/environments", tag = "assets", params(ListQuery), responses((status = 200, body = Vec<EnvironmentView>)))]
pub(super) async fn list_environments(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archived(&req).and_then(|a| data.control.environments(None, a)))
}

/// The curated environments this server maps to a package set.
#[utoipa::path(get, path = "/v1/environments/curated", tag = "assets", responses((status = 200, body = Vec<CuratedEnvironmentView>)))]
pub(super) async fn curated_environments(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    HttpResponse::Ok().json(data.control.curated_environments())
}

/// Every version of one environment, oldest first.
#[utoipa::path(get, path = "/v1/environments/{name}/versions", tag = "assets", params(("name" = String, Path), ListQuery),
    responses((status = 200, body = Vec<EnvironmentView>), (status = 404, description = "not registered", body = ErrorBody)))]
pub(super) async fn list_environment_versions(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archived(&req).and_then(|a| data.control.environments(Some(&segment(&req, "name")), a)))
}

/// The latest version of one environment.
#[utoipa::path(get, path = "/v1/environments/{name}", tag = "assets", params(("name" = String, Path)),
    responses((status = 200, body = EnvironmentView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_environment(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(data.control.environment(&segment(&req, "name"), None))
}

/// One version of an environment.
#[utoipa::path(get, path = "/v1/environments/{name}/versions/{version}", tag = "assets",
    params(("name" = String, Path), ("version" = String, Path)), responses((status = 200, body = EnvironmentView), (status = 404, body = ErrorBody)))]
pub(super) async fn get_environment_version(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(data.control.environment(&segment(&req, "name"), Some(&segment(&req, "version"))))
}

/// Archives or restores every version of an environment; archiving one a deployment uses is 409.
#[utoipa::path(post, path = "/v1/environments/{name}/{action}", tag = "assets",
    params(("name" = String, Path), ("action" = inline(ArchiveAction), Path, description = "`archive` or `restore`")),
    responses((status = 200, body = ArchivedView), (status = 404, description = "not registered", body = ErrorBody),
        (status = 409, description = "a deployment uses it", body = ErrorBody)))]
pub(super) async fn archive_environment(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archive(&req, &data, AssetKind::Environment).await)
}

/// Archives or restores one version of an environment; archiving one a deployment uses is 409.
#[utoipa::path(post, path = "/v1/environments/{name}/versions/{version}/{action}", tag = "assets",
    params(("name" = String, Path), ("version" = String, Path), ("action" = inline(ArchiveAction), Path, description = "`archive` or `restore`")),
    responses((status = 200, body = ArchivedView), (status = 404, description = "not registered", body = ErrorBody),
        (status = 409, description = "a deployment uses it", body = ErrorBody)))]
pub(super) async fn archive_environment_version(req: HttpRequest, data: Data) -> HttpResponse {
    guard!(req, data);
    reply(archive(&req, &data, AssetKind::Environment).await)
}
