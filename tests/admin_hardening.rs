//! Issue 9, a hostile user against the admin plane and its neighbours: deep or huge documents
//! are refused quickly with a message naming the limit while the admin plane keeps answering;
//! a model replacement keeps the deployment's metrics; servers die with the tests that
//! started them.

mod common;

use common::*;
use serde_json::json;

fn series(text: &str, family: &str, deployment: &str) -> bool {
    let label = format!("deployment=\"{deployment}\"");
    text.lines().any(|l| l.starts_with(family) && l.contains(&label))
}

#[test]
fn metrics_survive_a_model_replacement() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();
    assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    let r = s.admin(
        "PATCH",
        "/v1/deployments/blue",
        Some(&json!({"model": {"path": repo().join("models").join("model-2")}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("blue", "Succeeded");
    for _ in 0..5 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
    let text = s.admin("GET", "/metrics", None).body;
    for family in
        ["switchyard_request_duration_seconds", "switchyard_inflight_requests", "switchyard_mirror_dropped_total"]
    {
        assert!(series(&text, family, "blue"), "{family} for blue is gone after the replacement:\n{text}");
    }
    // The counts go on across versions: 1 request before the replacement, 5 after.
    assert!(text.contains("switchyard_request_duration_seconds_count{deployment=\"blue\",role=\"live\"} 6"), "{text}");
    // Deleting the name does remove its series.
    assert_eq!(s.set_traffic(json!({"blue": 0})).status, 200);
    assert_eq!(s.admin("DELETE", "/v1/deployments/blue", None).status, 200);
    let text = s.admin("GET", "/metrics", None).body;
    assert!(!series(&text, "switchyard_inflight_requests", "blue"), "{text}");
}
