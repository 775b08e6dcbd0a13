//! Adaptive batching (issue 29), end to end: a real server, real ONNX Runtime, concurrent
//! clients. Each test compares a batching deployment with the same model unbatched, or with
//! what the runtime guarantees without batching (admission, deadlines, model errors, mirror,
//! deletes).

use std::sync::{Arc, Barrier};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{eventually, http, repo, Reply, Server};

/// A request of `rows` rows of model-3's 512 features, different for each `seed`.
fn mlp_request(seed: u64, rows: usize) -> Value {
    let mut rng = fastrand::Rng::with_seed(seed);
    let data: Vec<Vec<f64>> =
        (0..rows).map(|_| (0..512).map(|_| ((rng.f64() * 8.0 - 4.0) * 1000.0).round() / 1000.0).collect()).collect();
    json!({ "data": data })
}

/// The same rows as a v2 `infer` body with JSON data.
fn mlp_infer(seed: u64, rows: usize) -> Value {
    let data = mlp_request(seed, rows)["data"].clone();
    json!({"id": format!("req-{seed}"), "inputs": [{"name": "X", "datatype": "FP32", "shape": [rows, 512], "data": data}]})
}

fn post(s: &Server, path: &str, key: &str, pin: &str, body: &[u8]) -> Reply {
    let auth = format!("Bearer {key}");
    let headers =
        [("Content-Type", "application/json"), ("Authorization", auth.as_str()), ("azureml-model-deployment", pin)];
    http(&common_agent(), "POST", &format!("{}{path}", s.scoring), &headers, Some(body))
}

fn common_agent() -> ureq::Agent {
    crate::common::agent()
}

/// `name`'s series of a Prometheus histogram: (count, sum).
fn histogram(s: &Server, metric: &str, deployment: &str) -> (f64, f64) {
    let text = s.admin("GET", "/metrics", None).body;
    let read = |suffix: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{metric}_{suffix}{{")) && l.contains(&format!("deployment=\"{deployment}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (read("count"), read("sum"))
}

/// Sends each body from its own thread, all released at once; the answers in order.
fn at_once(s: &Arc<Server>, key: &str, sends: Vec<(String, String, Vec<u8>)>) -> Vec<Reply> {
    let gate = Arc::new(Barrier::new(sends.len()));
    let threads: Vec<_> = sends
        .into_iter()
        .map(|(path, pin, body)| {
            let (s, key, gate) = (Arc::clone(s), key.to_string(), Arc::clone(&gate));
            std::thread::spawn(move || {
                gate.wait();
                post(&s, &path, &key, &pin, &body)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Number(n) => out.push(n.as_f64().unwrap()),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

/// The answer's numbers: a `/score` answer's, or a v2 answer's first output's data.
fn answer_numbers(r: &Reply) -> Vec<f64> {
    let v = r.json();
    let mut out = Vec::new();
    match v.get("outputs") {
        Some(outputs) => numbers(&outputs[0]["data"], &mut out),
        None => numbers(&v, &mut out),
    }
    out
}

/// Two deployments of model-3: `alone` (no batching, all traffic) and `stacked` (batching, 0%,
/// reached by pin), with `extra` on `stacked`.
fn two_mlps(batching: Value, extra: Value) -> (Arc<Server>, String) {
    let s = Server::start();
    s.create_endpoint();
    s.deploy(
        "alone",
        "model-3",
        json!({"model": {"path": repo().join("models/model-3"), "name": "mlp-alone"},
               "request_settings": {"max_concurrent_requests_per_instance": 16}}),
    );
    // Admission lets 2 × max_concurrent_requests_per_instance requests in per instance: the
    // batches can hold no more (the server says so in the deployment's log).
    let mut spec = json!({"model": {"path": repo().join("models/model-3"), "name": "mlp"}, "batching": batching,
                          "request_settings": {"max_concurrent_requests_per_instance": 16}});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    s.deploy("stacked", "model-3", spec);
    assert_eq!(s.set_traffic(json!({"alone": 100, "stacked": 0})).status, 200);
    let key = s.primary_key();
    (Arc::new(s), key)
}

#[test]
fn concurrent_requests_are_stacked_into_runs_and_each_is_answered_as_if_alone() {
    // A wide delay, so the burst of 24 (released together) is stacked into far fewer runs.
    let (s, key) = two_mlps(json!({"max_batch_size": 32, "max_delay_us": 100000}), json!({}));
    let sends: Vec<(String, String, Vec<u8>)> = (0..24u64)
        .map(|i| {
            let rows = 1 + (i % 3) as usize;
            if i % 4 == 3 {
                ("/v2/models/mlp/infer".into(), "stacked".into(), mlp_infer(i, rows).to_string().into_bytes())
            } else {
                ("/score".into(), "stacked".into(), mlp_request(i, rows).to_string().into_bytes())
            }
        })
        .collect();
    let batched = at_once(&s, &key, sends.clone());
    let mut exact = 0;
    for (i, ((path, _, body), got)) in sends.iter().zip(&batched).enumerate() {
        assert_eq!(got.status, 200, "request {i}: {}", got.body);
        let alone_path = path.replace("/mlp/", "/mlp-alone/");
        let want = post(&s, &alone_path, &key, "alone", body);
        assert_eq!(want.status, 200, "{}", want.body);
        let (a, b) = (answer_numbers(got), answer_numbers(&want));
        assert_eq!(a.len(), b.len(), "request {i} has its own rows: {} vs {}", got.body, want.body);
        assert_eq!(a.len(), 16 * (1 + i % 3), "request {i}: 16 outputs per row");
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-3), "request {i}: {x} batched vs {y} alone");
        }
        exact += usize::from(got.body == want.body);
        if path.contains("infer") {
            assert_eq!(got.json()["id"], format!("req-{i}"), "a v2 answer echoes its own request's id");
            assert_eq!(got.json()["outputs"][0]["shape"], json!([1 + i % 3, 16]));
        }
    }
    let (runs, rows) = histogram(&s, "switchyard_batch_size", "stacked");
    let total_rows: f64 = (0..24).map(|i| (1 + i % 3) as f64).sum();
    assert_eq!(rows, total_rows, "every row ran once");
    assert!(runs < 24.0, "24 concurrent requests ran in {runs} runs: none were stacked");
    let (delays, _) = histogram(&s, "switchyard_batch_queue_delay_seconds", "stacked");
    assert_eq!(delays, 24.0, "one queue delay per request");
    let show = s.admin("GET", "/v1/deployments/stacked", None).json();
    assert_eq!(show["batching"], json!({"max_batch_size": 32, "max_delay_us": 100000}));
    assert_eq!(show["batching_status"]["runs"].as_f64(), Some(runs));
    let mean = show["batching_status"]["mean_batch_size"].as_f64().unwrap();
    assert!((mean - total_rows / runs).abs() < 1e-9, "mean {mean} = rows / runs");
    // Deterministic on CPU with one intra-op thread: the stacked rows' answers are the same
    // numbers as alone (printed as the same text) in practice; reported, not required.
    eprintln!("{exact} of 24 batched answers are byte-identical to the unbatched answers");
}

#[test]
fn batching_is_refused_where_the_model_or_hook_cannot_batch_and_bad_settings_name_the_field() {
    let s = Server::start();
    s.create_endpoint();
    let put = |name: &str, doc: Value| s.admin("PUT", &format!("/v1/deployments/{name}"), Some(&doc));
    let model3 = repo().join("models/model-3");
    for (batching, field) in [
        (json!({"max_batch_size": 1}), "batching.max_batch_size"),
        (json!({"max_batch_size": 2000}), "batching.max_batch_size"),
        (json!({"max_batch_size": 8, "max_delay_us": 100001}), "batching.max_delay_us"),
        (json!({"max_batch_size": 8, "max_wait": 5}), "batching"),
        (json!({"max_delay_us": 5}), "batching"),
        (json!({"max_batch_size": "big"}), "batching.max_batch_size"),
    ] {
        let r = put("bat", json!({"model": {"path": model3}, "batching": batching}));
        assert_eq!(r.status, 400, "{batching}: {}", r.body);
        assert!(r.message().contains(field), "{batching}: the message names {field}: {}", r.message());
    }
    // A model whose input has a fixed first dimension cannot stack requests: named.
    let fixed = repo().join("models/test/fixed");
    let r = put("bat", json!({"model": {"path": fixed}, "batching": {"max_batch_size": 8}}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("input \"X\" has a fixed first dimension 1"), "{}", r.message());
    // A scoring script runs one request at a time.
    let code = repo().join("tests/fixtures/python/echo");
    let r = put(
        "bat",
        json!({"model": {"path": model3}, "code_configuration": {"code": code, "scoring_script": "score.py"},
               "batching": {"max_batch_size": 8}}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("batching applies to ONNX models only"), "{}", r.message());
    assert_eq!(s.admin("GET", "/v1/deployments/bat", None).status, 404, "nothing was created");
    // The same fixed model without batching serves as before.
    s.deploy("fixed", "test/fixed", json!({}));
}

#[test]
fn no_request_waits_past_its_deadline_in_the_queue_and_admission_is_unchanged() {
    // One instance, a cap of 2 in flight; the first request's batch waits up to 100 ms for
    // others, and each request's deadline is 30 ms: it is answered 408 at its deadline, and a
    // third concurrent request finds the cap full (429), as without batching.
    let (s, key) = two_mlps(
        json!({"max_batch_size": 32, "max_delay_us": 100000}),
        json!({"request_settings": {"request_timeout_ms": 30, "max_concurrent_requests_per_instance": 1}}),
    );
    let body = mlp_request(1, 1).to_string().into_bytes();
    let started = std::time::Instant::now();
    let r = post(&s, "/score", &key, "stacked", &body);
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(started.elapsed() < Duration::from_millis(95), "answered at its 30 ms deadline, not the batch's 100 ms");
    let sends = (0..6).map(|_| ("/score".to_string(), "stacked".to_string(), body.clone())).collect();
    let statuses: Vec<u16> = at_once(&s, &key, sends).iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 408 || *s == 429), "{statuses:?}");
    assert!(statuses.contains(&429), "6 at once against a cap of 2: {statuses:?}");
    // The slots came back: with the deadline raised the deployment answers.
    let r =
        s.admin("PATCH", "/v1/deployments/stacked", Some(&json!({"request_settings": {"request_timeout_ms": 5000}})));
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("stacked", "Succeeded");
    eventually("an answer within the raised deadline", Duration::from_secs(10), || {
        let r = post(&s, "/score", &key, "stacked", &body);
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
}

/// model-1's features with the first number `x0` (test/fail-rows fails a run holding a row
/// whose first number is 2 or more).
fn linear_request(x0: f64, rows: usize) -> Vec<u8> {
    let row = |r: usize| {
        let mut v: Vec<f64> = (1..=10).map(|k| (k + r) as f64).collect();
        v[0] = x0;
        v
    };
    json!({ "data": (0..rows).map(row).collect::<Vec<_>>() }).to_string().into_bytes()
}

#[test]
fn a_model_error_in_a_stacked_run_reaches_only_the_requests_it_belongs_to() {
    let s = Server::start();
    s.create_endpoint();
    let spec = json!({"batching": {"max_batch_size": 64, "max_delay_us": 100000},
                      "request_settings": {"max_concurrent_requests_per_instance": 8}});
    s.deploy("rows", "test/fail-rows", spec.clone());
    s.deploy("alone", "test/fail-rows", json!({}));
    assert_eq!(s.set_traffic(json!({"rows": 100, "alone": 0})).status, 200);
    let s = Arc::new(s);
    let key = s.primary_key();
    // 12 requests at once, every third one with a bad row: stacked, any bad row fails the run.
    let sends: Vec<(String, String, Vec<u8>)> = (0..12)
        .map(|i| {
            let x0 = if i % 3 == 1 { 7.0 } else { 1.0 };
            ("/score".to_string(), "rows".to_string(), linear_request(x0, 1 + i % 2))
        })
        .collect();
    let answers = at_once(&s, &key, sends.clone());
    for (i, ((_, _, body), got)) in sends.iter().zip(&answers).enumerate() {
        let alone = post(&s, "/score", &key, "alone", body);
        assert_eq!(got.status, alone.status, "request {i}: batched {} vs alone {}", got.body, alone.body);
        if i % 3 == 1 {
            assert_eq!(got.status, 424, "{}", got.body);
            let reason = got.header("ms-azureml-model-error-reason").unwrap_or_default().to_string();
            assert!(reason.contains("Gather"), "its own model error: {reason}");
        } else {
            assert_eq!(got.body, alone.body, "request {i} answered as alone");
        }
    }
    let (runs, _) = histogram(&s, "switchyard_batch_size", "rows");
    assert!(runs < 12.0, "the 12 requests were stacked ({runs} runs)");
}

#[test]
fn mirror_copies_pins_and_a_delete_under_load_behave_as_without_batching() {
    let (s, key) = two_mlps(json!({"max_batch_size": 16, "max_delay_us": 500}), json!({"instance_count": 2}));
    // The batching deployment as the mirror target: copies are compared with live answers.
    assert_eq!(s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"stacked": 50}}))).status, 200);
    let body = mlp_request(7, 1).to_string().into_bytes();
    for _ in 0..40 {
        let r = s.score_authed(&key, &body, None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    eventually("mirror pairs compared and agreeing", Duration::from_secs(20), || {
        let m = s.admin("GET", "/v1/deployments/stacked/comparison", None).json();
        if m["compared"].as_u64().unwrap_or(0) >= 5 && m["agreement_ratio"] == 1.0 {
            Ok(())
        } else {
            Err(m.to_string())
        }
    });
    assert_eq!(s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {}}))).status, 200);
    // Traffic moves to the batching deployment under load; then it is emptied and deleted:
    // every request is answered 200 throughout (the front door routes again around a delete).
    let load = crate::common::Load::start(&s, 8, &key, body.clone());
    assert_eq!(s.set_traffic(json!({"alone": 0, "stacked": 100})).status, 200);
    load.wait_for_more(200);
    assert_eq!(s.set_traffic(json!({"alone": 100, "stacked": 0})).status, 200);
    let r = s.admin("DELETE", "/v1/deployments/stacked", None);
    assert!(r.status == 200 || r.status == 202, "{}", r.body);
    load.wait_for_more(100);
    let report = load.stop();
    assert_eq!(report.ok, report.total, "{:?}", report);
    let (runs, rows) = histogram(&s, "switchyard_batch_size", "stacked");
    eprintln!("stacked: {rows} rows in {runs} runs before its delete (series removed: {})", runs == 0.0);
}
