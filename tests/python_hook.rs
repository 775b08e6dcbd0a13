//! The Python hook end to end: the Azure sample's own score.py deployments, a split with an
//! ONNX deployment, every failure Azure's server reports (with another deployment served
//! throughout), environment isolation, logs, and environments built from conda files.
//!
//! Real Python, real pickles. Most tests run their scripts in the plain venv that
//! scripts/setup.sh makes (`serve --python`); the environment tests build venvs from conda files.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// The tests' venv (scikit-learn pinned as in the sample's conda file), made on first use.
fn venv_python() -> String {
    test_venv_python()
}

fn sample() -> PathBuf {
    repo().join("examples/azure-sample")
}

fn probe() -> PathBuf {
    repo().join("tests/fixtures/python/probe")
}

/// A server whose score.py deployments run in the tests' venv.
fn server() -> Server {
    Server::start_with(&["--python", &venv_python()])
}

/// Creates (or replaces) a deployment from a JSON document and waits for `state`.
fn put(s: &Server, doc: Value, state: &str) -> Value {
    let name = doc["name"].as_str().unwrap().to_string();
    let r = s.admin("PUT", &format!("/v1/deployments/{name}"), Some(&doc));
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    wait_state(s, &name, state)
}

/// As `Server::wait_state`, with room for a Python init (and, with a conda file, a build).
fn wait_state(s: &Server, name: &str, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let v = s.admin("GET", &format!("/v1/deployments/{name}"), None).json();
        if v["provisioning_state"] == state {
            return v;
        }
        assert!(Instant::now() < deadline, "deployment {name} never reached {state}: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A deployment of the probe script.
fn probe_doc(name: &str, vars: Value, timeout_ms: u64) -> Value {
    json!({
        "name": name,
        "model": {"path": probe().join("model")},
        "code_configuration": {"code": probe().join("code"), "scoring_script": "score.py"},
        "environment_variables": vars,
        "request_settings": {"request_timeout_ms": timeout_ms},
    })
}

fn pinned(s: &Server, key: &str, deployment: &str, order: &str) -> Reply {
    let body = json!({ "do": order }).to_string();
    s.score_authed(key, body.as_bytes(), Some(deployment))
}

fn logs(s: &Server, name: &str) -> String {
    s.admin("GET", &format!("/v1/deployments/{name}/logs?lines=2000"), None).body
}

/// Waits until the probe deployment answers again (a replaced worker is ready); returns the
/// answer.
fn wait_answer(s: &Server, key: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = pinned(s, key, name, "ok");
        if r.status == 200 {
            return r.json();
        }
        assert!(Instant::now() < deadline, "{name} never answered again: {} {}", r.status, r.body);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends the sample request to `name` from a thread until stopped; every answer must be a 200.
struct Steady {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    failures: Arc<Mutex<Vec<String>>>,
    count: Arc<Mutex<usize>>,
}

impl Steady {
    fn start(s: &Arc<Server>, key: &str, name: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(Mutex::new(0));
        let (s, key, name, stop2, f2, c2) =
            (Arc::clone(s), key.to_string(), name.to_string(), stop.clone(), failures.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let r = s.score_authed(&key, &sample_request(), Some(&name));
                if r.status != 200 {
                    f2.lock().unwrap().push(format!("{} {}", r.status, r.body));
                }
                *c2.lock().unwrap() += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self { stop, thread: Some(thread), failures, count }
    }

    fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        assert!(*self.count.lock().unwrap() > 10, "the steady deployment was barely exercised");
        assert_eq!(*self.failures.lock().unwrap(), Vec::<String>::new(), "the other deployment noticed");
    }
}

#[test]
fn the_sample_blue_deployment_answers_from_its_own_yaml_and_logs_its_prints() {
    let s = server();
    let dir = sample().join("managed/sample");
    let dir = path_str(&dir);
    let (endpoint, blue, request) =
        (format!("{dir}/endpoint.yml"), format!("{dir}/blue-deployment.yml"), format!("{dir}/sample-request.json"));
    s.cli_ok(&["online-endpoint", "create", "-f", &endpoint]);
    s.cli_ok(&["online-deployment", "create", "-f", &blue, "--all-traffic"]);
    wait_state(&s, "blue", "Succeeded");
    let out = s.cli_ok(&["online-endpoint", "invoke", "--name", "my-endpoint", "--request-file", &request]);
    assert_model_1(out.trim());
    let key = s.primary_key();
    let r = s.score_authed(&key, &std::fs::read(&request).unwrap(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_model_1(&r.body);
    let log = logs(&s, "blue");
    assert!(log.contains("blue/instance-0") && log.contains("INFO root: Init complete"), "{log}");
    assert!(log.contains("model 1: request received"), "{log}");
    // The registered-asset variant of the sample says what to write instead.
    let e =
        s.cli_err(&["online-deployment", "create", "-f", &format!("{dir}/blue-deployment-with-registered-assets.yml")]);
    assert!(e.contains("model: {path:"), "{e}");
}

#[test]
fn a_90_10_split_between_a_score_py_deployment_and_an_onnx_one() {
    let s = server();
    s.create_endpoint();
    let dir = sample().join("model-1");
    put(
        &s,
        json!({
            "name": "blue",
            "model": {"path": dir.join("model")},
            "code_configuration": {"code": dir.join("onlinescoring"), "scoring_script": "score.py"},
            "instance_count": 2,
            "request_settings": {"max_concurrent_requests_per_instance": 4},
        }),
        "Succeeded",
    );
    s.deploy("green", "model-2", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 90, "green": 10})).status, 200);
    let key = s.primary_key();
    let mut by = BTreeMap::<String, usize>::new();
    for _ in 0..300 {
        let r = s.score_authed(&key, &sample_request(), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let who = r.header("azureml-model-deployment").unwrap().to_string();
        if who == "blue" {
            assert_model_1(&r.body);
        }
        *by.entry(who).or_default() += 1;
    }
    let blue = by.get("blue").copied().unwrap_or(0);
    assert!((240..=293).contains(&blue), "blue got {blue} of 300: {by:?}");
    assert!(by.get("green").copied().unwrap_or(0) > 0, "{by:?}");
}

#[test]
fn each_failure_is_answered_as_azure_does_and_the_other_deployment_serves_throughout() {
    let s = Arc::new(server());
    s.create_endpoint();
    put(&s, probe_doc("probe", json!({"COLOR": "probe"}), 1500), "Succeeded");
    s.deploy("steady", "model-1", json!({}));
    let key = s.primary_key();
    let steady = Steady::start(&s, &key, "steady");
    let first = wait_answer(&s, &key, "probe");

    // An exception in run: 424 with Azure's headers; the worker lives on.
    let r = pinned(&s, &key, "probe", "raise");
    assert_eq!(r.status, 424, "{}", r.body);
    assert_eq!(r.header("ms-azureml-model-error-statuscode"), Some("500"));
    assert!(r.header("ms-azureml-model-error-reason").unwrap().contains("ValueError: asked to raise"), "{r:?}");
    assert_eq!(wait_answer(&s, &key, "probe")["pid"], first["pid"], "the worker lives on after an exception");
    let log = logs(&s, "probe");
    assert!(log.contains("Traceback (most recent call last)") && log.contains("ValueError: asked to raise"), "{log}");

    // The worker dies: that request is a 424, and a new worker (init again) replaces it.
    let r = pinned(&s, &key, "probe", "exit");
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.body.contains("died during the run (exit code 7)"), "{}", r.body);
    let second = wait_answer(&s, &key, "probe");
    assert_ne!(second["pid"], first["pid"], "a new worker");

    // The worker hangs past request_timeout_ms: 408, killed, replaced.
    let started = Instant::now();
    let r = pinned(&s, &key, "probe", "hang");
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(10), "the hang was cut at the deadline");
    let third = wait_answer(&s, &key, "probe");
    assert_ne!(third["pid"], second["pid"], "the hung worker was replaced");
    let log = logs(&s, "probe");
    assert!(log.contains("died during a run") && log.contains("stopped at the request's deadline"), "{log}");
    assert_eq!(log.matches("probe init: hello from probe").count(), 3, "init ran once per worker: {log}");

    // An AMLResponse-like answer passes its status and type through.
    let r = pinned(&s, &key, "probe", "text");
    assert_eq!((r.status, r.body.as_str()), (201, "plain words"));
    assert_eq!(r.header("content-type"), Some("text/plain"));

    // init() raising: the deployment is Failed with the exception's last line.
    let failed = put(&s, probe_doc("broken", json!({"INIT_FAIL": "1"}), 1500), "Failed");
    let shown = failed.to_string();
    assert!(shown.contains("RuntimeError: no model here: INIT_FAIL is set"), "{shown}");
    let log = logs(&s, "broken");
    assert!(log.contains("Traceback (most recent call last)"), "{log}");
    steady.finish();
}

#[test]
fn blue_and_green_see_only_their_own_environment() {
    let s = server();
    s.create_endpoint();
    put(&s, probe_doc("blue", json!({"COLOR": "blue", "OTHER_ONLY": "b"}), 5000), "Succeeded");
    put(&s, probe_doc("green", json!({"COLOR": "green"}), 5000), "Succeeded");
    let key = s.primary_key();
    let blue = wait_answer(&s, &key, "blue");
    let green = wait_answer(&s, &key, "green");
    assert_eq!((blue["color"].as_str(), blue["other"].as_str()), (Some("blue"), Some("b")));
    assert_eq!((green["color"].as_str(), green["other"].as_str()), (Some("green"), None));
    // The Azure layout: the model folder keeps its base name under AZUREML_MODEL_DIR; the
    // code folder is the working directory and on sys.path; run gets a str and the headers.
    assert_eq!(blue["model_files"], json!(["weights.txt"]));
    assert_eq!(blue["cwd"].as_str(), Some(path_str(&probe().join("code")).as_str()));
    assert_eq!(blue["helper"], "helper from the code folder");
    assert_eq!(blue["raw_type"], "str");
    assert_eq!(blue["content_type"], "application/json");
    assert_ne!(blue["pid"], green["pid"]);
    // A body that is not UTF-8 is the caller's error.
    let r = s.score_authed(&key, b"\xff\xfe", Some("blue"));
    assert_eq!(r.status, 400, "{}", r.body);
}

/// Writes a conda file that pins the sample's packages for the Python on PATH (CI's Python
/// may not be the sample's 3.12), without the sample's azureml-inference-server-http (which
/// Switchyard does not need and which triples the download).
fn conda_file(dir: &std::path::Path, extra_pip: &str) -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .expect("python3 on PATH");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let text = format!(
        "name: model-env\nchannels:\n  - conda-forge\ndependencies:\n  - python={version}\n  - numpy=2.3.1\n  - pip\n  - scikit-learn=1.7.0\n  - scipy=1.16.0\n  - pip:\n    - joblib\n{extra_pip}"
    );
    let file = dir.join("conda.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn an_environment_is_built_from_a_conda_file_once_then_served_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--env-cache-dir", &path_str(cache.path())]);
    s.create_endpoint();
    let conda = conda_file(files.path(), "");
    let dir = sample().join("model-1");
    let doc = |name: &str| {
        json!({
            "name": name,
            "model": {"path": dir.join("model")},
            "code_configuration": {"code": dir.join("onlinescoring"), "scoring_script": "score.py"},
            "environment": {"conda_file": conda},
        })
    };
    let started = Instant::now();
    put(&s, doc("blue"), "Succeeded");
    let first = started.elapsed();
    eprintln!("first environment build and start: {:.1} s", first.as_secs_f64());
    let log = logs(&s, "blue");
    assert!(log.contains("environment: building") && log.contains("environment: built in"), "{log}");
    let key = s.primary_key();
    let r = s.score_authed(&key, &sample_request(), Some("blue"));
    assert_model_1(&r.body);

    let started = Instant::now();
    put(&s, doc("green"), "Succeeded");
    let second = started.elapsed();
    eprintln!("second create (cache hit): {:.1} s", second.as_secs_f64());
    assert!(logs(&s, "green").contains("environment: cache hit"), "{}", logs(&s, "green"));
    assert!(second < Duration::from_secs(20), "a cache hit starts in seconds: {second:?}");
    assert_model_1(&s.score_authed(&key, &sample_request(), Some("green")).body);

    // A package pip cannot find: Failed, with pip's own error line.
    let bad = conda_file(files.path(), "    - switchyard-no-such-package-xyz==0.0.1\n");
    let mut d = doc("broken");
    d["environment"]["conda_file"] = json!(bad);
    let failed = put(&s, d, "Failed").to_string();
    assert!(failed.contains("switchyard-no-such-package-xyz"), "{failed}");
    assert!(failed.contains("No matching distribution") || failed.contains("ERROR"), "{failed}");
}
