//! The contract check itself (tests/contract/openapi_contract.py): it must fail on each kind
//! of drift a client can make, or the SDK's and the studio's checks prove nothing. Run on the
//! committed document (the same as the served one: `server::openapi`'s test).

use crate::common;

use std::process::Command;

use common::*;

fn check(records: &[serde_json::Value]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&log, text).unwrap();
    let out = Command::new("python3")
        .arg(repo().join("tests/contract/openapi_contract.py"))
        .arg(repo().join("docs/admin-openapi.json"))
        .arg(&log)
        .output()
        .expect("run tests/contract/openapi_contract.py");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn the_contract_check_passes_what_the_api_has_and_names_each_drift() {
    use serde_json::json;
    let good = [
        json!({"method": "GET", "path": "/v1/deployments/blue?wait=5", "status": 200,
               "reads": [["provisioning_state"], ["instances", "ready"], ["model", "path"], ["tags", "any-label"]]}),
        json!({"method": "PATCH", "path": "/v1/endpoint", "status": "2xx", "body": {"traffic": {"blue": 100}},
               "reads": [["traffic", "blue"], ["scoring_uri"], ["rollout_status", "step"]]}),
        json!({"method": "GET", "path": "/v1/endpoint/keys", "status": 200, "reads": [["primaryKey"], ["accessToken"]]}),
        json!({"method": "GET", "path": "/v1/metrics", "status": 200,
               "reads": [["deployments", "[]", "live", "buckets", "[]", "le"]]}),
        json!({"method": "DELETE", "path": "/v1/endpoint", "status": 404, "reads": [["message"]]}),
        // An error no route documents (a 503 of any route) is still an ErrorBody.
        json!({"method": "GET", "path": "/v1/endpoint", "status": 503, "reads": [["message"]]}),
        json!({"method": "PUT", "path": "/v1/deployments/blue", "status": 201,
               "body": {"name": "blue", "model": {"path": "m"}, "tags": {"any": {"thing": 1}}}}),
        // Types as the server sends them: a nullable number as null, a free-form tag as anything.
        json!({"method": "GET", "path": "/v1/deployments/green/comparison", "status": 200,
               "types": [[["max_abs_diff"], "null"], [["agreement_ratio"], "number"], [["pairs"], "integer"]]}),
        json!({"method": "GET", "path": "/v1/deployments/blue", "status": 200,
               "types": [[["tags", "x"], "object"], [["provisioning_state"], "string"]]}),
    ];
    let (ok, out) = check(&good);
    assert!(ok, "{out}");
    let drift = [
        json!({"method": "GET", "path": "/v1/deployment/blue", "status": 200}),
        json!({"method": "POST", "path": "/v1/endpoint", "status": 200}),
        json!({"method": "GET", "path": "/v1/deployments/blue?follow=1", "status": 200}),
        json!({"method": "PATCH", "path": "/v1/endpoint", "status": 200, "body": {"trafic": {"blue": 100}}}),
        json!({"method": "GET", "path": "/v1/deployments/blue", "status": 200, "reads": [["instances", "redy"]]}),
        json!({"method": "GET", "path": "/v1/endpoint/rollout", "status": 200, "reads": [["step", "gates", "p95_ms"]]}),
    ];
    let drift: Vec<_> = drift
        .into_iter()
        .chain([
            json!({"method": "POST", "path": "/v1/endpoint/rollout/pasue", "status": 200}),
            json!({"method": "PUT", "path": "/v1/deployments/blue", "status": 201,
                   "body": {"name": "blue", "model": {"pth": "x"}}}),
            json!({"method": "PATCH", "path": "/v1/deployments/blue", "status": 200, "body": {"instance_cont": 2}}),
            json!({"method": "GET", "path": "/v1/deployments/blue", "status": 200,
                   "types": [[["instances", "ready"], "string"]]}),
        ])
        .collect();
    let (ok, out) = check(&drift);
    assert!(!ok, "drift passed the check: {out}");
    for named in [
        "/v1/deployment/blue: no such route",
        "POST /v1/endpoint: the document has",
        "query parameter 'follow'",
        "sends field trafic,",
        "reads instances.redy",
        "reads step.gates.p95_ms",
        "action 'pasue' is not one of pause, resume, abort",
        "sends field model.pth,",
        "sends field instance_cont,",
        "reads instances.ready of the 200 answer as JSON type string",
    ] {
        assert!(out.contains(named), "the check did not name {named:?}: {out}");
    }
}
