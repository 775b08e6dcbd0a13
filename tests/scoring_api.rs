//! The scoring plane (CONTRACT §6): auth, routing errors, input errors, health and headers.

use crate::common;

use common::*;
use serde_json::json;

#[test]
fn keys_are_required_and_both_work() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.set_traffic(json!({"blue": 100}));
    let keys = s.admin("GET", "/v1/endpoint/keys", None).json();
    let (primary, secondary) = (keys["primaryKey"].as_str().unwrap(), keys["secondaryKey"].as_str().unwrap());
    assert_ne!(primary, secondary);

    let r = s.score(&sample_request(), &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert!(r.message().contains("Authorization: Bearer"));
    assert!(!r.body.contains(primary) && !r.body.contains(secondary), "keys never appear in errors");
    assert_eq!(s.score(&sample_request(), &[("Authorization", "Bearer wrong")]).status, 401);
    assert_eq!(s.score(&sample_request(), &[("Authorization", primary)]).status, 401, "scheme required");
    let almost = format!("Bearer {}x", primary);
    assert_eq!(s.score(&sample_request(), &[("Authorization", &almost)]).status, 401);
    assert_eq!(s.score_authed(primary, &sample_request(), None).status, 200);
    assert_eq!(s.score_authed(secondary, &sample_request(), None).status, 200);

    // Regenerating the primary key takes effect at once; the secondary keeps working.
    s.cli_ok(&["online-endpoint", "regenerate-keys", "-n", "my-endpoint", "--key-type", "primary"]);
    assert_eq!(s.score_authed(primary, &sample_request(), None).status, 401);
    assert_eq!(s.score_authed(secondary, &sample_request(), None).status, 200);
    let new_primary = s.primary_key();
    assert_ne!(new_primary, primary);
    assert_eq!(s.score_authed(&new_primary, &sample_request(), None).status, 200);
}

#[test]
fn aml_tokens_work_and_expire() {
    let s = Server::start();
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "tok-ep", "auth_mode": "aml_token"})));
    assert_eq!(r.status, 201);
    s.deploy("blue", "model-1", json!({}));
    s.set_traffic(json!({"blue": 100}));
    let creds = s.admin("GET", "/v1/endpoint/keys", None).json();
    for field in ["accessToken", "expiryTimeUtc", "refreshAfterTimeUtc", "tokenType"] {
        assert!(creds.get(field).is_some(), "{field} in {creds}");
    }
    let token = creds["accessToken"].as_str().unwrap();
    assert_eq!(s.score_authed(token, &sample_request(), None).status, 200);
    // The CLI's invoke fetches a token by itself.
    assert_model_1(
        s.cli_ok(&["online-endpoint", "invoke", "-n", "tok-ep", "--request-file", "sample-requests/model-1.json"])
            .trim(),
    );
    // Expiry itself is tested with an injected clock (endpoint::auth's unit tests).
    assert_eq!(s.score_authed("not-a-token", &sample_request(), None).status, 401);
    let r = s.admin("POST", "/v1/endpoint/keys/regenerate", Some(&json!({"keyType": "primary"})));
    assert_eq!(r.status, 400);
}

#[test]
fn routing_and_input_errors() {
    let s = Server::start();
    // No endpoint.
    let r = s.score(&sample_request(), &[]);
    assert_eq!(r.status, 404);
    assert!(r.message().contains("no endpoint"));
    s.create_endpoint();
    let key = s.primary_key();
    s.deploy("blue", "model-1", json!({}));
    // No traffic and nothing pinned.
    let r = s.score_authed(&key, &sample_request(), None);
    assert_eq!(r.status, 404);
    assert!(r.message().contains("no deployment of this endpoint has traffic"), "{}", r.message());
    // Pinned at 0 traffic works; a pinned unknown deployment is 404.
    let r = s.score_authed(&key, &sample_request(), Some("blue"));
    assert_eq!(r.status, 200);
    assert_model_1(&r.body);
    let r = s.score_authed(&key, &sample_request(), Some("nope"));
    assert_eq!(r.status, 404);
    assert!(r.message().contains("\"nope\" does not exist"));
    s.set_traffic(json!({"blue": 100}));

    // Input errors say what the model expects.
    let cases: &[(&str, &str)] = &[
        ("{\"data\": [[1,2,3]]}", "shape [N, 10]"),
        ("{\"data\": [1,2,3,4,5,6,7,8,9,10]}", "shape [N, 10]"),
        ("{\"data\": [[1,2],[3]]}", "ragged"),
        ("{\"data\": [[\"a\",2,3,4,5,6,7,8,9,10]]}", "float64"),
        ("{\"dat\": [[1,2,3,4,5,6,7,8,9,10]]}", "unknown field"),
        ("{}", "exactly one of"),
        ("not json", "request body is not valid"),
        ("{\"inputs\": {\"Z\": [[1,2,3,4,5,6,7,8,9,10]]}}", "missing input \"X\""),
        ("{\"inputs\": {\"X\": [[1,2,3,4,5,6,7,8,9,10]], \"Y\": [[2]]}}", "no input \"Y\""),
        ("{\"data\": [[1,2,3,4,5,6,7,8,9,10]], \"inputs\": {}}", "exactly one of"),
    ];
    for (body, needle) in cases {
        let r = s.score_authed(&key, body.as_bytes(), None);
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.message().contains(needle), "{body}: {:?} should contain {needle:?}", r.message());
        assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
        assert!(r.header("x-request-id").is_some());
    }
    // Named inputs answer with named outputs.
    let r = s.score_authed(&key, b"{\"inputs\": {\"X\": [[1,2,3,4,5,6,7,8,9,10]]}}", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let out = r.json();
    let (name, value) = out["outputs"].as_object().unwrap().iter().next().unwrap();
    assert!(!name.is_empty());
    assert!((value[0][0].as_f64().unwrap() - MODEL_1_ANSWER[0]).abs() < 1e-6, "{out}");
    // A long client request id is refused with 431.
    let long = "a".repeat(101);
    let auth = format!("Bearer {key}");
    let r = s.score(&sample_request(), &[("Authorization", &auth), ("x-ms-client-request-id", &long)]);
    assert_eq!(r.status, 431);
    // So are oversized headers.
    let huge = "h".repeat(20 * 1024);
    let r = s.score(&sample_request(), &[("Authorization", &auth), ("x-padding", &huge)]);
    assert_eq!(r.status, 431);
    assert!(r.message().contains("at most 16384"), "{}", r.message());
}

#[test]
fn health_and_swagger() {
    let s = Server::start();
    let r = s.get("/");
    assert_eq!((r.status, r.body.as_str()), (200, "Healthy"));
    assert_eq!(s.get("/health/live").status, 200);
    assert_eq!(s.get("/health/ready").status, 503, "no endpoint: not ready");
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    assert_eq!(s.get("/health/ready").status, 503, "no traffic: not ready");
    s.set_traffic(json!({"blue": 100}));
    assert_eq!(s.get("/health/ready").status, 200);
    let swagger = s.get("/swagger.json").json();
    assert!(swagger["paths"]["/score"]["post"].is_object());
    let metrics = s.admin("GET", "/metrics", None).body;
    assert!(
        metrics.contains("switchyard_instances{deployment=\"blue\",state=\"ready\",endpoint=\"my-endpoint\"} 1"),
        "{metrics}"
    );
}

/// model-3 (issue 29's multilayer perceptron, 512 → 1024 → 1024 → 16, float32) serves its
/// one-row sample, and answers 32 stacked rows with each row's own answer: what adaptive
/// batching will rely on.
#[test]
fn model_3_answers_its_sample_and_a_stacked_batch_row_for_row() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("mlp", "model-3", json!({}));
    s.set_traffic(json!({"mlp": 100}));
    let key = s.primary_key();
    #[allow(clippy::disallowed_methods, reason = "the repository's own sample request")]
    let sample = std::fs::read(repo().join("sample-requests/model-3.json")).unwrap();
    let one = s.score_authed(&key, &sample, None);
    assert_eq!(one.status, 200, "{}", one.body);
    let one: Vec<Vec<f64>> = serde_json::from_str(&one.body).unwrap();
    assert_eq!((one.len(), one[0].len()), (1, 16));
    assert!(one[0].iter().all(|v| v.is_finite()));
    let row = serde_json::from_slice::<serde_json::Value>(&sample).unwrap()["data"][0].clone();
    let batch = json!({"data": vec![row; 32]}).to_string();
    let many = s.score_authed(&key, batch.as_bytes(), None);
    assert_eq!(many.status, 200, "{}", many.body);
    let many: Vec<Vec<f64>> = serde_json::from_str(&many.body).unwrap();
    assert_eq!(many.len(), 32);
    for r in &many {
        for (a, b) in r.iter().zip(&one[0]) {
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
