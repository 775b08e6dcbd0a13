//! What the Python hook costs per request beyond the script's own `run()`: a trivial
//! `run()` (it returns `[0.5, 0.5]`) scored through one worker process, all in one run:
//!
//! - `run() in process`: the same call in a Python loop, the floor;
//! - `pipe only`: the frame out and back on the calling thread (`run_here_if_idle`, the
//!   synchronous path mirror copies take);
//! - `hand-off to a blocking thread`: the same from an async task through `spawn_blocking`,
//!   as every live run went before (request thread → blocking thread → worker → blocking
//!   thread → request thread);
//! - `awaited on the task`: `InstancePool::run`, the live path now (request thread → worker →
//!   request thread, the answer awaited on the reactor).
//!
//! Rounds interleave the three Rust paths; medians of the rounds are printed, with each path's
//! overhead (its µs − `run()` in process) and the ratio of the old path's overhead to the new.
//! Run: `cargo bench --bench python_hook` (the interpreter: `SWITCHYARD_PYTHON`, else
//! `target/python-test-venv/bin/python`, else `python3`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use switchyard::spec::DeploymentSpec;
use switchyard::{Deployment, Headers, Metrics, Protocol, Request};

const SCRIPT: &str = "def init():\n    pass\n\n\ndef run(raw_data):\n    return [0.5, 0.5]\n";
const BODY: &[u8] = br#"{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}"#;

fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("SWITCHYARD_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/python-test-venv/bin/python");
    if venv.is_file() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// µs per call of run() in one Python process.
fn in_process(python: &Path, code: &Path, n: usize) -> f64 {
    let program = format!(
        "import importlib.util, time\n\
         spec = importlib.util.spec_from_file_location('entry_module', {script:?})\n\
         m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); m.init()\n\
         body = {body:?}\n\
         for _ in range(2000): m.run(body)\n\
         t = time.perf_counter()\n\
         for _ in range({n}): m.run(body)\n\
         print((time.perf_counter() - t) / {n} * 1e6)\n",
        script = code.join("score.py").display().to_string(),
        body = String::from_utf8_lossy(BODY),
    );
    let out = std::process::Command::new(python).arg("-c").arg(program).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a number of µs")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let python = interpreter();
    // The hook's interpreter, for every Python deployment of this process (serve --python).
    std::env::set_var("SWITCHYARD_PYTHON", &python);
    let dir = tempfile::tempdir().expect("a temp dir");
    let code = dir.path().join("code");
    let model = dir.path().join("model");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(code.join("score.py"), SCRIPT).unwrap();

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (spec, _) = DeploymentSpec::from_value(serde_json::json!({
        "name": "bench",
        "model": {"path": model},
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    }))
    .unwrap();
    let kind = spec.hook_kind().unwrap();
    let d: Arc<Deployment> = Deployment::new(&spec, kind, &Metrics::new(), runtime.handle().clone());
    runtime.block_on(d.pool().add(1)).expect("the worker starts");
    let headers = Headers::default();
    let body = bytes::Bytes::from_static(BODY);

    let n: usize = std::env::var("BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(5000);
    let rounds = 7;
    let (mut pipe, mut handoff, mut task) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..=rounds {
        let t = Instant::now();
        for _ in 0..n {
            let r = d.pool().run_here_if_idle(request(&body, &headers)).unwrap();
            assert_eq!(&r.body[..], b"[0.5, 0.5]");
        }
        let pipe_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

        let t = Instant::now();
        runtime.block_on(async {
            for _ in 0..n {
                let pool = Arc::clone(d.pool());
                let body = body.clone();
                let r = tokio::task::spawn_blocking(move || pool.run_here_if_idle(request(&body, Headers::none())))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(r.status, 200);
            }
        });
        let handoff_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;

        let t = Instant::now();
        runtime.block_on(async {
            for _ in 0..n {
                let r =
                    d.pool().run(bytes::Bytes::from_static(BODY), Some("application/json"), &headers).await.unwrap();
                assert_eq!(r.status, 200);
            }
        });
        let task_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
        if round > 0 {
            // Round 0 warms up.
            pipe.push(pipe_us);
            handoff.push(handoff_us);
            task.push(task_us);
        }
    }
    let floor = in_process(&python, &code, 20 * n);
    let (pipe, handoff, task) = (median(pipe), median(handoff), median(task));
    println!("python hook, trivial run(), {} ({n} requests x {rounds} rounds, medians):", python.display());
    println!("  run() in process                 {floor:8.1} us");
    for (what, us) in [
        ("pipe only (calling thread)", pipe),
        ("hand-off to a blocking thread", handoff),
        ("awaited on the task (live path)", task),
    ] {
        println!("  {what:32} {us:8.1} us   overhead {:8.1} us", us - floor);
    }
    println!(
        "  overhead, blocking-thread hand-off / awaited on the task: {:.2}x",
        (handoff - floor) / (task - floor).max(0.001)
    );
}

/// The benchmark's request: the sample's body as JSON.
fn request<'a>(body: &'a bytes::Bytes, headers: &'a Headers) -> Request<'a> {
    Request { body, content_type: Some("application/json"), headers, protocol: Protocol::Score, request_id: "" }
}
