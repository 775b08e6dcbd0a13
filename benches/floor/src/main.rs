//! The load benchmark's floor: a minimal actix-web server whose `/score` makes the same ONNX
//! call as Switchyard's ONNX hook (same JSON parsing, same session settings), inline on the
//! worker thread, with no routing, pools, auth, admission, logs or metrics. Whatever Switchyard
//! costs beyond this is the price of its features.
//!
//! Usage: switchyard-bench-floor MODEL.onnx PORT [WORKERS]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use switchyard::{HookError, HookRequest, InitContext, OnnxHook, ScoringHook};

thread_local! {
    /// One session per worker thread, loaded on its first request.
    static HOOK: RefCell<Option<OnnxHook>> = const { RefCell::new(None) };
}

async fn score(body: Bytes, model: web::Data<PathBuf>) -> HttpResponse {
    HOOK.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let ctx = InitContext::new("floor", BTreeMap::new());
            match OnnxHook::load(&model, &ctx) {
                Ok(h) => *slot = Some(h),
                Err(e) => return HttpResponse::InternalServerError().body(e.to_string()),
            }
        }
        let hook = slot.as_mut().expect("loaded above");
        match hook.run(HookRequest { body: &body, content_type: None, headers: &Default::default(), cancel: None }) {
            Ok(r) => HttpResponse::Ok().content_type(r.content_type).body(r.body),
            Err(HookError::BadInput(m)) => HttpResponse::BadRequest().body(m),
            Err(HookError::Failed(m)) => HttpResponse::InternalServerError().body(m),
        }
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: switchyard-bench-floor MODEL.onnx PORT [WORKERS]");
        std::process::exit(2);
    }
    let model = web::Data::new(PathBuf::from(&args[1]));
    let port: u16 = args[2].parse().expect("PORT must be a number");
    let workers: usize = args.get(3).and_then(|w| w.parse().ok()).unwrap_or(2);
    println!("floor listening on 127.0.0.1:{port}");
    HttpServer::new(move || {
        App::new()
            .app_data(model.clone())
            .app_data(web::PayloadConfig::new(10 * 1024 * 1024))
            .route("/score", web::post().to(score))
    })
    .workers(workers)
    .bind(("127.0.0.1", port))?
    .run()
    .await
}
