//! The studio page: a browser view of the endpoint served by the admin plane at `GET /`.
//!
//! Three hand-written files (HTML, CSS, vanilla JS with its own small canvas charts) are
//! embedded with `include_str!`, so the binary needs no CDN, no bundler and no network at build
//! or run time. The page is served without the admin token (it holds no data); every call it
//! makes goes to the public admin API with the token the user types, so whatever the page does
//! is also scriptable, and it has no route of its own into the control plane.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

const INDEX_HTML: &str = include_str!("index.html");
const STUDIO_JS: &str = include_str!("studio.js");
const STUDIO_CSS: &str = include_str!("studio.css");
/// The page's icon, at the path browsers ask for by themselves, so no request of the page (or
/// of a JSON answer opened in a tab) ends in a 404 in the console.
const FAVICON_SVG: &str = include_str!("favicon.svg");

/// Registers `/`, the page's two assets and its icon.
pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }))
        .route("/studio/studio.js", web::get().to(|| async { asset(STUDIO_JS, "text/javascript; charset=utf-8") }))
        .route("/studio/studio.css", web::get().to(|| async { asset(STUDIO_CSS, "text/css; charset=utf-8") }))
        .route("/favicon.ico", web::get().to(|| async { asset(FAVICON_SVG, "image/svg+xml") }));
}

/// One embedded file. The policy keeps the page to its own origin (no inline script, no
/// framing): the admin plane may hold an admin token, so nothing else may run beside it.
fn asset(body: &'static str, content_type: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(body)
}
