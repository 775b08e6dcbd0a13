//! Every failure answer of CONTRACT §6 provoked through real HTTP: 408, 413, 424, 429 (400,
//! 401, 404, 431 and 503 are in scoring_api.rs and validation.rs), key rotation under traffic,
//! and the admin plane's token.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

#[test]
fn timeout_is_408_and_cancels_the_run() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("slow", "test/slow", json!({"request_settings": {"request_timeout_ms": 200}}));
    s.set_traffic(json!({"slow": 100}));
    let key = s.primary_key();
    assert_eq!(s.score_authed(&key, &body_with_x00(1.0), None).status, 200);
    // A run of 120 s: an answer that waited for it, or an instance it kept busy, would take
    // minutes; the bounds below are half of that, so no load on the machine makes them flaky.
    let run = Duration::from_secs(120);
    let t = Instant::now();
    let r = s.score_authed(&key, &body_with_x00(run.as_millis() as f64), None);
    let took = t.elapsed();
    assert_eq!(r.status, 408, "{}", r.body);
    assert!(r.message().contains("request_timeout_ms (200 ms)"), "{}", r.message());
    assert!(took < run / 2, "answered at the deadline, not after the run: {took:?}");
    // The run was cancelled: the single instance answers the next request, not after the run.
    let t = Instant::now();
    let r = s.score_authed(&key, &body_with_x00(1.0), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(t.elapsed() < run / 2, "the instance was stuck: {:?}", t.elapsed());
    let m = s.admin("GET", "/metrics", None).body;
    assert!(m.contains("switchyard_inflight_requests{deployment=\"slow\",endpoint=\"my-endpoint\"} 0"), "no slot held");
    assert!(
        m.contains(
            "switchyard_requests_total{deployment=\"slow\",role=\"live\",code=\"408\",endpoint=\"my-endpoint\"} 1"
        ),
        "{m}"
    );
}

#[test]
fn oversized_body_is_413() {
    let s = Server::start_with(&["--max-body-bytes", "1000"]);
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.set_traffic(json!({"blue": 100}));
    let key = s.primary_key();
    let rows: Vec<_> = (0..60).map(|_| json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).collect();
    let big = json!({ "data": rows }).to_string();
    assert!(big.len() > 1000);
    let r = s.score_authed(&key, big.as_bytes(), None);
    assert_eq!(r.status, 413);
    assert!(r.message().contains("1000 bytes"), "{}", r.message());
    assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
}

#[test]
fn model_error_is_424_with_its_reason_and_the_instance_lives() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("flaky", "test/fail", json!({}));
    s.set_traffic(json!({"flaky": 100}));
    let key = s.primary_key();
    let r = s.score_authed(&key, &body_with_x00(7.0), None);
    assert_eq!(r.status, 424, "{}", r.body);
    assert_eq!(r.header("ms-azureml-model-error-statuscode"), Some("500"));
    let reason = r.header("ms-azureml-model-error-reason").unwrap();
    assert!(reason.contains("indices element out of data bounds"), "the reason is never hidden: {reason}");
    assert!(r.message().contains("the model failed"));
    assert_eq!(r.header("azureml-model-deployment"), Some("flaky"));
    // The same instance keeps serving.
    let r = s.score_authed(&key, &body_with_x00(1.0), None);
    assert_eq!(r.status, 200);
    let got = numbers(&r.body);
    assert!((got[0] - MODEL_1_ANSWER[0]).abs() < 1e-6, "{got:?}");
    let logs = s.admin("GET", "/v1/deployments/flaky/logs?lines=20", None).body;
    assert!(logs.contains("status=424") && logs.contains("model error"), "{logs}");
}

#[test]
fn over_the_admission_cap_is_429_at_once() {
    let s = Arc::new(Server::start());
    s.create_endpoint();
    // One instance, one request at a time: at most 2 in flight. A long request timeout: what
    // is tested is admission, and on a loaded machine (the tests run two at a time on two
    // cores) the 2 s run ahead of the second admitted request took past the default 5 s, so
    // both admitted requests were 408s and none was answered.
    s.deploy("slow", "test/slow", json!({"request_settings": {"request_timeout_ms": 60000}}));
    s.set_traffic(json!({"slow": 100}));
    let key = s.primary_key();
    let go = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (s, key, go) = (s.clone(), key.clone(), go.clone());
            std::thread::spawn(move || {
                while !go.load(Ordering::Acquire) {
                    std::hint::spin_loop();
                }
                let r = s.score_authed(&key, &body_with_x00(2000.0), None);
                (r.status, r.header("retry-after").map(str::to_owned), start.elapsed())
            })
        })
        .collect();
    go.store(true, Ordering::Release);
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // An admitted request is answered by the model (200), or 408 when the one ahead of it kept
    // the instance past its timeout (a loaded machine slows the test model down): either way it
    // was admitted, which is what this test is about.
    let admitted = results.iter().filter(|r| r.0 == 200 || r.0 == 408).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(admitted + refused.len(), 6, "{results:?}");
    assert!(results.iter().any(|r| r.0 == 200), "the first admitted request is answered: {results:?}");
    assert!(admitted <= 2, "at most 2 admitted: {results:?}");
    assert!(refused.len() >= 4, "{results:?}");
    // At once, not after queueing: every refusal came before the first admitted request (a
    // run of 2 s) was answered. An order of events, not a time bound that load could break.
    let first_answer = results.iter().filter(|r| r.0 != 429).map(|r| r.2).min().unwrap();
    for (_, retry, refused_at) in refused {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(*refused_at < first_answer, "a 429 at {refused_at:?} waited for the answer at {first_answer:?}");
    }
}

#[test]
fn key_rotation_under_traffic() {
    let s = Arc::new(Server::start());
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({"request_settings": {"max_concurrent_requests_per_instance": 4}}));
    s.set_traffic(json!({"blue": 100}));
    let secondary = s.admin("GET", "/v1/endpoint/keys", None).json()["secondaryKey"].as_str().unwrap().to_string();
    let load = Load::start(&s, 2, &secondary, sample_request());
    let mut old = s.primary_key();
    for _ in 0..5 {
        // Let the secondary-key clients run between rotations.
        load.wait_for_more(50);
        let r = s.admin("POST", "/v1/endpoint/keys/regenerate", Some(&json!({"keyType": "primary"})));
        assert_eq!(r.status, 200);
        assert_eq!(s.score_authed(&old, &sample_request(), None).status, 401, "the old primary stops at once");
        let new = s.primary_key();
        assert_eq!(s.score_authed(&new, &sample_request(), None).status, 200, "the new one works at once");
        old = new;
    }
    let report = load.stop();
    assert!(report.total > 100);
    assert_eq!(report.ok, report.total, "the secondary key kept working throughout: {:?}", report.failures);
    let logs = s.admin("GET", "/v1/deployments/blue/logs?lines=100000", None).body;
    assert!(!logs.contains(&secondary) && !logs.contains(&old), "keys never appear in logs");
}

#[test]
fn admin_plane_needs_a_token_off_loopback() {
    let out = std::process::Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--admin-host", "0.0.0.0"])
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("without a token"));

    let s = Server::start_with(&["--admin-token", "s3cret-token"]);
    let r = s.admin("GET", "/v1/endpoint", None);
    assert_eq!(r.status, 401);
    assert!(!r.body.contains("s3cret-token"));
    let r = http(
        &agent(),
        "GET",
        &format!("{}/v1/deployments", s.admin),
        &[("Authorization", "Bearer s3cret-token")],
        None,
    );
    assert_eq!(r.status, 404, "authorised; there is no endpoint yet: {}", r.body);
    let out = std::process::Command::new(bin())
        .args(["online-endpoint", "create", "-n", "ep-1"])
        .env("SWITCHYARD_ADMIN_URL", &s.admin)
        .env("SWITCHYARD_ADMIN_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = s.cli_err(&["online-endpoint", "show"]);
    assert!(err.contains("401"), "{err}");
}
