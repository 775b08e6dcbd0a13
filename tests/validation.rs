//! Every control-plane rule of CONTRACT §5 refused with its message, through the admin API and
//! the CLI, and a refused change leaves the state exactly as it was.

use crate::common;

use common::*;
use serde_json::{json, Value};

fn setup() -> Server {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-2", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    s
}

/// Asserts a refusal with the status and a message containing `needle`, and that neither the
/// endpoint nor the deployments changed.
fn refused(s: &Server, method: &str, path: &str, body: Value, status: u16, needle: &str) {
    let before = (s.admin("GET", "/v1/endpoint", None).body, s.admin("GET", "/v1/deployments", None).body);
    let r = s.admin(method, path, Some(&body));
    assert_eq!(r.status, status, "{method} {path} {body}: {}", r.body);
    assert!(r.message().contains(needle), "message {:?} should contain {needle:?}", r.message());
    let after = (s.admin("GET", "/v1/endpoint", None).body, s.admin("GET", "/v1/deployments", None).body);
    assert_eq!(before, after, "a refused change must change nothing");
}

#[test]
fn traffic_rules() {
    let s = setup();
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": 90}}), 400, "sum to 100");
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": 50, "green": 40}}), 400, "sum to 100");
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"red": 100}}), 400, "does not exist");
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": 101}}), 400, "integer from 0 to 100");
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": -10, "green": 110}}), 400, "integer from 0 to 100");
    refused(
        &s,
        "PATCH",
        "/v1/endpoint",
        json!({"traffic": {"blue": 50.5, "green": 49.5}}),
        400,
        "integer from 0 to 100",
    );
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": "100"}}), 400, "integer from 0 to 100");
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": [1, 2]}), 400, "mapping of deployment name");
    refused(&s, "PATCH", "/v1/endpoint", json!({"auth_mode": "aml_token"}), 400, "cannot be updated");
    // Sum 0 is allowed (stops all traffic), and an unlisted deployment gets 0.
    let r = s.set_traffic(json!({"blue": 0}));
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["traffic"], json!({"blue": 0, "green": 0}));
    let r = s.set_traffic(json!({"green": 100}));
    assert_eq!(r.json()["traffic"], json!({"blue": 0, "green": 100}));
    // The CLI's parser refuses malformed pairs before calling the server.
    let err = s.cli_err(&["online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue:90"]);
    assert!(err.contains("NAME=PERCENT"), "{err}");
    let err = s.cli_err(&["online-endpoint", "update", "-n", "my-endpoint", "--traffic", "blue=90 green=5"]);
    assert!(err.contains("sum to 100"), "{err}");
}

#[test]
fn mirror_rules() {
    let s = setup();
    s.deploy("red", "model-1", json!({}));
    refused(&s, "PATCH", "/v1/endpoint", json!({"mirror_traffic": {"green": 51}}), 400, "at most 50");
    refused(&s, "PATCH", "/v1/endpoint", json!({"mirror_traffic": {"green": 10, "red": 10}}), 400, "only one");
    refused(&s, "PATCH", "/v1/endpoint", json!({"mirror_traffic": {"blue": 10}}), 409, "live traffic");
    refused(&s, "PATCH", "/v1/endpoint", json!({"mirror_traffic": {"nope": 10}}), 400, "does not exist");
    let r = s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"green": 10}})));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["mirror_traffic"], json!({"green": 10}));
    // Live traffic to the shadow is refused while it is mirrored.
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": 50, "green": 50}}), 409, "live traffic");
    // green=0 turns mirroring off.
    let out = s.cli_ok(&["online-endpoint", "update", "-n", "my-endpoint", "--mirror-traffic", "green=0"]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["mirror_traffic"], json!({}));
    // Deleting the shadow deployment removes the mirror rule.
    assert_eq!(s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"red": 20}}))).status, 200);
    assert_eq!(s.admin("DELETE", "/v1/deployments/red", None).status, 200);
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["mirror_traffic"], json!({}));
}

#[test]
fn deployment_rules() {
    let s = setup();
    // A new deployment gets 0 traffic.
    s.deploy("new-one", "model-1", json!({}));
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"]["new-one"], 0);
    // A deployment with live traffic cannot be deleted.
    refused(&s, "DELETE", "/v1/deployments/blue", json!(null), 409, "live traffic");
    refused(&s, "DELETE", "/v1/deployments/nope", json!(null), 404, "does not exist");
    let model = repo().join("models/model-1");
    let m = json!({"path": model});
    refused(&s, "PUT", "/v1/deployments/b", json!({"model": m}), 400, "invalid deployment name");
    refused(&s, "PUT", "/v1/deployments/-bad-", json!({"model": m}), 400, "invalid deployment name");
    refused(&s, "PUT", "/v1/deployments/purple", json!({"model": "azureml:my-model:1"}), 400, "is not registered");
    refused(&s, "PUT", "/v1/deployments/purple", json!({"model": m, "instance_count": 0}), 400, "instance_count");
    refused(
        &s,
        "PUT",
        "/v1/deployments/purple",
        json!({"model": m, "request_settings": {"request_timeout_ms": 180001}}),
        400,
        "180000",
    );
    refused(
        &s,
        "PUT",
        "/v1/deployments/purple",
        json!({"model": m, "request_settings": {"max_concurrent_requests_per_instance": 0}}),
        400,
        "max_concurrent_requests_per_instance",
    );
    refused(&s, "PUT", "/v1/deployments/purple", json!({"model": m, "instance_cout": 2}), 400, "unknown field");
    refused(
        &s,
        "PUT",
        "/v1/deployments/purple",
        json!({"model": m, "endpoint_name": "other-endpoint"}),
        400,
        "this server hosts endpoint",
    );
    refused(&s, "PUT", "/v1/deployments/purple", json!({"name": "pink", "model": m}), 400, "must agree");
    refused(&s, "PUT", "/v1/deployments/purple", json!({"model": {"path": "/no/such/model"}}), 400, "cannot be read");
    refused(
        &s,
        "PUT",
        "/v1/deployments/purple",
        json!({"model": m, "code_configuration": {"code": ".", "scoring_script": "score.py"}}),
        400,
        "is not a file in code_configuration.code",
    );
    refused(&s, "PATCH", "/v1/deployments/blue", json!({"instance_count": -1}), 400, "instance_count");
    refused(&s, "PATCH", "/v1/deployments/nope", json!({"instance_count": 2}), 404, "does not exist");
    // A model folder with two .onnx files is ambiguous.
    let two = tempfile::tempdir().unwrap();
    std::fs::copy(model.join("model.onnx"), two.path().join("a.onnx")).unwrap();
    std::fs::copy(model.join("model.onnx"), two.path().join("b.onnx")).unwrap();
    refused(&s, "PUT", "/v1/deployments/purple", json!({"model": {"path": two.path()}}), 400, "2 .onnx files");
}

#[test]
fn endpoint_rules() {
    let s = Server::start();
    // No endpoint yet: deployments are refused, show is 404.
    let r = s.admin("PUT", "/v1/deployments/blue", Some(&json!({"model": {"path": repo().join("models/model-1")}})));
    assert_eq!(r.status, 409);
    assert!(r.message().contains("no endpoint"), "{}", r.message());
    assert_eq!(s.admin("GET", "/v1/endpoint", None).status, 404);
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "ep-1", "auth_mode": "aad_token"})));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("aad_token"));
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "e"})));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("invalid endpoint name"));
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "ep-1", "traffic": {"blue": 100}})));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("does not exist"));
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "ep-1", "trafic": {}})));
    assert_eq!(r.status, 400);
    assert!(r.message().contains("unknown endpoint field"));
    // Cloud-only keys are accepted and reported.
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "ep-1", "identity": {"type": "system_assigned"}})));
    assert_eq!(r.status, 201);
    assert!(r.json()["ignored_fields"][0].as_str().unwrap().contains("identity"));
    // A second endpoint goes beside the first; the one-endpoint routes then name both (409)
    // until it is gone again.
    let r = s.admin("PUT", "/v1/endpoint", Some(&json!({"name": "ep-2"})));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.admin("GET", "/v1/endpoint", None);
    assert_eq!(r.status, 409);
    assert!(r.message().contains("ep-1, ep-2"), "{}", r.message());
    assert_eq!(s.admin("DELETE", "/v1/endpoints/ep-2", None).status, 200);
    // Malformed bodies.
    let r = s.admin("PATCH", "/v1/endpoint", None);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("empty"));
    // A wrong --name is refused by the CLI.
    let err = s.cli_err(&["online-endpoint", "show", "-n", "other"]);
    assert!(err.contains("this server hosts endpoint \"ep-1\""), "{err}");
}

#[test]
fn at_most_twenty_deployments() {
    let s = Server::start();
    s.create_endpoint();
    for i in 0..20 {
        s.deploy(&format!("dep-{i}"), "model-1", json!({}));
    }
    let r = s.admin("PUT", "/v1/deployments/dep-20", Some(&json!({"model": {"path": repo().join("models/model-1")}})));
    assert_eq!(r.status, 409);
    assert!(r.message().contains("at most 20"));
}

#[test]
fn failed_init_touches_nothing_else() {
    let s = setup();
    let key = s.primary_key();
    let broken = broken_model_dir();
    let r = s.admin("PUT", "/v1/deployments/broken", Some(&json!({"model": {"path": broken.path()}})));
    assert_eq!(r.status, 201);
    let v = s.wait_state("broken", "Failed");
    assert!(v["error"].as_str().unwrap().contains("cannot load ONNX model"), "{v}");
    // It never receives traffic; the others are untouched.
    refused(&s, "PATCH", "/v1/endpoint", json!({"traffic": {"blue": 50, "broken": 50}}), 409, "failed");
    let r = s.score_authed(&key, &sample_request(), None);
    assert_eq!(r.status, 200);
    assert_model_1(&r.body);
    assert_eq!(s.admin("GET", "/v1/deployments/blue", None).json()["provisioning_state"], "Succeeded");
    // Pinned to the failed deployment: 503, no ready instance.
    assert_eq!(s.score_authed(&key, &sample_request(), Some("broken")).status, 503);
    // The CLI's create reports the failure with a non-zero exit.
    let yml = broken.path().join("dep.yml");
    std::fs::write(&yml, "name: broken2\nmodel:\n  path: .\n").unwrap();
    let err = s.cli_err(&["online-deployment", "create", "-f", yml.to_str().unwrap()]);
    assert!(err.contains("deployment broken2 failed") && err.contains("cannot load ONNX model"), "{err}");
    // Fixing it by replacing the deployment works.
    let r = s.admin("PUT", "/v1/deployments/broken", Some(&json!({"model": {"path": repo().join("models/model-1")}})));
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("broken", "Succeeded");
    assert_eq!(s.score_authed(&key, &sample_request(), Some("broken")).status, 200);
}
