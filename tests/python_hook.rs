//! The Python hook end to end: the Azure sample's own score.py deployments, a split with an
//! ONNX deployment, every failure Azure's server reports (with another deployment served
//! throughout), environment isolation, logs, and environments built from conda files.
//!
//! Real Python, real pickles. Most tests run their scripts in the plain venv that
//! scripts/setup.sh makes (`serve --python`); the environment tests build venvs from conda files.

use crate::common;

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

/// The sample's blue (model-1's score.py) with `model.path` = `model-1/<model>`, plus `more`.
fn sample_blue(model: &str, more: Value) -> Value {
    let dir = sample().join("model-1");
    let mut doc = json!({
        "name": "blue",
        "model": {"path": dir.join(model)},
        "code_configuration": {"code": dir.join("onlinescoring"), "scoring_script": "score.py"},
    });
    json_patch::merge(&mut doc, &more);
    doc
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
    // Its logging.info lines are dropped, as by Azure's server (tests/python_workers.rs).
    eventually("the instance's init is in the log", Duration::from_secs(10), || {
        let log = logs(&s, "blue");
        let found = log.contains("blue/instance-0") && log.contains("ran init() of score.py");
        if found {
            Ok(())
        } else {
            Err(log)
        }
    });
    // The registered-asset variant of the sample, before `my-model` is registered: what to do
    // (tests/registered_assets.rs registers it and deploys).
    let e =
        s.cli_err(&["online-deployment", "create", "-f", &format!("{dir}/blue-deployment-with-registered-assets.yml")]);
    assert!(e.contains("azureml:my-model:1 is not registered") && e.contains("switchyard model create"), "{e}");
}

/// The SDK tutorial names the pickle itself (`Model(path=".../model/sklearn_regression_model.pkl")`)
/// where the CLI YAML names its folder; the same score.py finds it either way, as on Azure.
#[test]
fn the_sample_score_py_finds_its_pickle_when_the_model_path_names_the_file() {
    let s = server();
    s.create_endpoint();
    put(&s, sample_blue("model/sklearn_regression_model.pkl", json!({})), "Succeeded");
    let r = s.score_authed(&s.primary_key(), &sample_request(), Some("blue"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_model_1(&r.body);
}

#[test]
fn a_90_10_split_between_a_score_py_deployment_and_an_onnx_one() {
    let s = server();
    s.create_endpoint();
    let more = json!({"instance_count": 2, "request_settings": {"max_concurrent_requests_per_instance": 4}});
    put(&s, sample_blue("model", more), "Succeeded");
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
    // The worker's stderr is copied into the log by its own thread, which may trail the answer.
    eventually("the traceback is in the log", Duration::from_secs(10), || {
        let log = logs(&s, "probe");
        let found = log.contains("Traceback (most recent call last)") && log.contains("ValueError: asked to raise");
        if found {
            Ok(())
        } else {
            Err(log)
        }
    });

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
    eventually("init ran once per worker", Duration::from_secs(10), || {
        let log = logs(&s, "probe");
        if log.matches("probe init: hello from probe").count() == 3 {
            Ok(())
        } else {
            Err(log)
        }
    });

    // An AMLResponse-like answer passes its status, type and headers through.
    let r = pinned(&s, &key, "probe", "text");
    assert_eq!((r.status, r.body.as_str()), (201, "plain words"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("x-probe"), Some("yes"), "{r:?}");
    let multi: Vec<&str> =
        r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("x-multi")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(multi, ["one", "two"], "a repeated header stays repeated: {r:?}");
    // Where a name collides, the front door's own headers (CONTRACT §6) win.
    assert_eq!(r.header("azureml-model-deployment"), Some("probe"));
    assert_ne!(r.header("x-request-id"), Some("the script's own"));
    assert_eq!(r.header("x-request-id"), r.header("x-ms-request-id"));

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
    // request_headers holds the request's headers as Azure's server passes them: title-cased
    // names, repeated ones joined with ",", no names with "_", and never the endpoint's key.
    let auth = format!("Bearer {key}");
    let r = s.score(
        &json!({"do": "ok"}).to_string().into_bytes(),
        &[
            ("Authorization", &auth),
            ("azureml-model-deployment", "blue"),
            ("x-ms-client-request-id", "client-1"),
            ("X-Custom-Thing", "a"),
            ("x-custom-thing", "b"),
            ("x_under", "dropped"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = &r.json()["headers"];
    assert_eq!(seen["Content-Type"], "application/json", "{seen}");
    assert_eq!(seen["X-Ms-Client-Request-Id"], "client-1", "{seen}");
    assert_eq!(seen["Azureml-Model-Deployment"], "blue", "{seen}");
    assert_eq!(seen["X-Custom-Thing"], "a,b", "{seen}");
    assert!(seen.get("Authorization").is_none() && seen.get("X_Under").is_none(), "{seen}");
    assert!(!r.body.contains(&key), "the key reached the script");
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

#[test]
fn env_build_bakes_the_venv_that_serve_then_starts_without_pip() {
    let cache = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let cache_dir = path_str(cache.path());
    // A small environment (the probe needs only the standard library; joblib stands for the
    // packages a real one installs).
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .expect("python3 on PATH");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let conda = files.path().join("conda.yaml");
    std::fs::write(&conda, format!("dependencies:\n  - python={version}\n  - pip\n  - pip:\n    - joblib==1.5.1\n"))
        .unwrap();
    let build = |file: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["env", "build", "-f", file.to_str().unwrap(), "--env-cache-dir", &cache_dir];
        args.extend_from_slice(extra);
        std::process::Command::new(bin()).args(&args).output().unwrap()
    };
    let first = build(&conda, &[]);
    let (stdout, stderr) = (String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&first.stderr));
    assert!(first.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("environment: building") && stderr.contains("environment: built in"), "{stderr}");
    let venv = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(venv.starts_with(cache.path()) && venv.join("bin/python").is_file(), "{stdout}");
    // Again: found, not built.
    let again = build(&conda, &[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("environment: cache hit"));
    assert_eq!(String::from_utf8_lossy(&again.stdout).lines().last().map(str::trim), venv.to_str());

    // serve with the same cache starts a deployment of that conda file with no pip run.
    let s = Server::start_with(&["--env-cache-dir", &cache_dir]);
    s.create_endpoint();
    let mut doc = probe_doc("blue", json!({}), 5000);
    doc["environment"] = json!({"conda_file": conda});
    put(&s, doc, "Succeeded");
    let log = logs(&s, "blue");
    assert!(log.contains("environment: cache hit"), "{log}");
    assert!(!log.contains("environment: $") && !log.contains("environment: building"), "pip ran: {log}");
    let key = s.primary_key();
    let answer = wait_answer(&s, &key, "blue");
    assert!(answer["executable"].as_str().unwrap_or_default().starts_with(venv.to_str().unwrap()), "{answer}");

    // A package pip cannot find: non-zero, with pip's own error line; an interpreter that
    // does not run: non-zero, saying so.
    let bad = files.path().join("bad.yaml");
    std::fs::write(&bad, "dependencies:\n  - pip:\n    - switchyard-no-such-package-xyz==0.0.1\n").unwrap();
    let failed = build(&bad, &[]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success() && failed.stdout.is_empty(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("ERROR:") && last.contains("switchyard-no-such-package-xyz"), "{stderr}");
    let failed = build(&bad, &["--python", "/no/such/python"]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("/no/such/python"));
}

/// A deployment of one of the fixture scripts under tests/fixtures/python/NAME.
fn fixture_doc(name: &str, fixture: &str) -> Value {
    let dir = repo().join("tests/fixtures/python").join(fixture);
    json!({
        "name": name,
        "model": {"path": dir.join("model")},
        "code_configuration": {"code": dir.join("code"), "scoring_script": "score.py"},
    })
}

#[test]
fn input_schema_and_rawhttp_scripts_run_with_azures_own_packages() {
    let s = server();
    s.create_endpoint();
    put(&s, fixture_doc("schema", "schema"), "Succeeded");
    put(&s, fixture_doc("raw", "rawhttp"), "Succeeded");
    let key = s.primary_key();
    let auth = format!("Bearer {key}");

    // @input_schema: the body's keys are run()'s arguments; request_headers comes along.
    let body = json!({"data": [[1, 2], [3, 4]], "scale": 2}).to_string();
    let r = s.score(
        body.as_bytes(),
        &[("Authorization", &auth), ("azureml-model-deployment", "schema"), ("x-ms-client-request-id", "c-7")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json(), json!({"sum": 20, "client": "c-7"}));
    // As Azure's server: keys run() does not declare are ignored; a missing one is a 400.
    let r = s.score_authed(&key, json!({"data": [[1]], "scale": 3, "extra": 1}).to_string().as_bytes(), Some("schema"));
    assert_eq!((r.status, r.json()["sum"].clone()), (200, json!(3)), "{}", r.body);
    let r = s.score_authed(&key, json!({"scale": 3}).to_string().as_bytes(), Some("schema"));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("'data'"), "{}", r.body);
    // Not JSON by its Content-Type: 415, as Azure's server answers.
    let r = http(
        &agent(),
        "POST",
        &format!("{}/score", s.scoring),
        &[("Authorization", &auth), ("azureml-model-deployment", "schema"), ("Content-Type", "text/plain")],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 415, "{}", r.body);

    // @rawhttp: run() gets the request; Azure's AMLResponse passes status, headers and body.
    let r = http(
        &agent(),
        "POST",
        &format!("{}/score", s.scoring),
        &[("Authorization", &auth), ("azureml-model-deployment", "raw"), ("Content-Type", "text/csv")],
        Some(b"abc"),
    );
    assert_eq!((r.status, r.body.as_str()), (207, "cba"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("x-raw"), Some("POST"));
    assert_eq!(r.header("x-seen-type"), Some("text/csv"), "headers are looked up without regard to case");
    let twice: Vec<&str> =
        r.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("x-twice")).map(|(_, v)| v.as_str()).collect();
    assert_eq!(twice, ["a", "b"], "{r:?}");
    assert_eq!(r.header("x-ms-run-function-failed"), Some("False"));
    assert_eq!(r.header("azureml-model-deployment"), Some("raw"));

    // A run() Azure's server would refuse to load: the deployment fails, saying why.
    let failed = put(&s, fixture_doc("varargs", "varargs"), "Failed").to_string();
    assert!(failed.contains("*args, or **kwargs"), "{failed}");

    // An environment that is not registered: 400, saying what to write.
    let mut doc = fixture_doc("azureenv", "schema");
    doc["environment"] = json!("azureml:my-env:1");
    let r = s.admin("PUT", "/v1/deployments/azureenv", Some(&doc));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("conda_file:") && r.message().contains("python:"), "{}", r.body);
}

#[test]
fn an_interpreter_that_cannot_run_fails_the_deployment_naming_it_and_the_setting() {
    // No `--python` here: it would take precedence over the deployment's environment.python.
    let s = Server::start();
    s.create_endpoint();
    let dir = tempfile::tempdir().unwrap();
    // A file that is there but not executable, as a mistyped environment.python may be.
    let python = dir.path().join("python3");
    std::fs::write(&python, "not an interpreter").unwrap();
    let v = put(&s, sample_blue("model", json!({"environment": {"python": python}})), "Failed");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("cannot start a Python worker with {}", python.display())), "{v}");
    assert!(error.contains("set environment.python or serve --python"), "the setting to fix is named: {v}");
}
