//! Declarative mode: the folder's YAML files are applied at start and on every change, as a
//! diff; an invalid edit is refused and the running state stays; a Kubernetes ConfigMap's
//! `..data` symlink swap is picked up; the admin API refuses changes the files own.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn write(dir: &Path, name: &str, text: &str) {
    // Write then rename, as editors and ConfigMaps do, so a half-written file is never read.
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

fn deployment_yaml(name: &str, model: &str, instances: u32) -> String {
    format!(
        "$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json\nname: {name}\nendpoint_name: my-endpoint\nmodel:\n  path: {}\ninstance_count: {instances}\n",
        repo().join("models").join(model).display()
    )
}

fn endpoint_yaml(traffic: &str, mirror: &str) -> String {
    format!("name: my-endpoint\nauth_mode: key\ntraffic:\n{traffic}\nmirror_traffic:\n{mirror}\n")
}

/// Polls until `check` holds on `GET /v1/endpoint` (or fails after 20 s).
fn wait_endpoint(s: &Server, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(20), || {
        let r = s.admin("GET", "/v1/endpoint", None);
        if r.status == 200 && check(&r.json()) {
            Ok(r.json())
        } else {
            Err(r.body)
        }
    })
}

#[test]
fn files_are_applied_as_diffs_and_bad_edits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "endpoint.yml", &endpoint_yaml("  blue: 100", "  {}"));
    write(d, "blue-deployment.yml", &deployment_yaml("blue", "model-1", 1));
    let s = Server::start_with(&["--config-dir", d.to_str().unwrap()]);
    wait_endpoint(&s, "blue at 100", |e| e["traffic"] == json!({"blue": 100}));
    s.wait_ready();
    let key = s.primary_key();
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);

    // Add green and split 90/10: green is loaded before traffic moves.
    write(d, "green-deployment.yml", &deployment_yaml("green", "model-2", 1));
    write(d, "endpoint.yml", &endpoint_yaml("  blue: 90\n  green: 10", "  {}"));
    wait_endpoint(&s, "90/10", |e| e["traffic"] == json!({"blue": 90, "green": 10}));
    assert_eq!(s.admin("GET", "/v1/deployments/green", None).json()["provisioning_state"], "Succeeded");

    // An invalid edit is refused, logged, and the running state stays.
    write(d, "endpoint.yml", &endpoint_yaml("  blue: 50\n  green: 30", "  {}"));
    let e = wait_endpoint(&s, "the refusal", |e| !e["config_dir"]["last_error"].is_null());
    assert!(e["config_dir"]["last_error"].as_str().unwrap().contains("sum to 100"), "{e}");
    assert_eq!(e["traffic"], json!({"blue": 90, "green": 10}), "the running state is kept");
    assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);

    // The admin API refuses changes the files own; credentials stay the API's.
    let r = s.admin("PATCH", "/v1/endpoint", Some(&json!({"traffic": {"blue": 100}})));
    assert_eq!(r.status, 409);
    assert!(r.message().contains("declarative mode"), "{}", r.message());
    assert_eq!(s.admin("POST", "/v1/endpoint/keys/regenerate", Some(&json!({"keyType": "secondary"}))).status, 200);

    // A valid fix: mirror 10% to green, all live traffic to blue, blue scaled in place.
    write(d, "blue-deployment.yml", &deployment_yaml("blue", "model-1", 2));
    write(d, "endpoint.yml", &endpoint_yaml("  blue: 100", "  green: 10"));
    // The error clears once the whole folder is applied (the traffic is published a moment
    // before that status is recorded).
    wait_endpoint(&s, "the fix", |e| {
        e["mirror_traffic"] == json!({"green": 10}) && e["config_dir"]["last_error"].is_null()
    });
    let blue = s.wait_state("blue", "Succeeded");
    assert_eq!(blue["instances"]["ready"], 2);
    let blue_logs = s.admin("GET", "/v1/deployments/blue/logs?lines=100", None).body;
    assert!(blue_logs.contains("scaling from 1 to 2"), "scaled in place, not replaced: {blue_logs}");
    let green_logs = s.admin("GET", "/v1/deployments/green/logs?lines=100", None).body;
    assert_eq!(green_logs.matches("loading 1 instance(s)").count(), 1, "green was not touched: {green_logs}");

    // Removing a file removes its deployment (after its traffic moved away).
    std::fs::remove_file(d.join("green-deployment.yml")).unwrap();
    write(d, "endpoint.yml", &endpoint_yaml("  blue: 100", "  {}"));
    wait_endpoint(&s, "green gone", |e| e["traffic"] == json!({"blue": 100}));
    let names: Vec<String> = s
        .admin("GET", "/v1/deployments", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["blue"]);
}

#[test]
fn a_configmap_symlink_swap_is_applied() {
    // The layout a ConfigMap volume has: files are links into ..data, which links to a
    // timestamped folder; an update writes a new folder and renames a new ..data over the old.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = d.join("..2026_11_26_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("endpoint.yml"), endpoint_yaml("  blue: 100", "  {}")).unwrap();
    std::fs::write(v1.join("blue.yml"), deployment_yaml("blue", "model-1", 1)).unwrap();
    std::os::unix::fs::symlink("..2026_11_26_v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/endpoint.yml", d.join("endpoint.yml")).unwrap();
    std::os::unix::fs::symlink("..data/blue.yml", d.join("blue.yml")).unwrap();
    let s = Server::start_with(&["--config-dir", d.to_str().unwrap()]);
    wait_endpoint(&s, "blue at 100", |e| e["traffic"] == json!({"blue": 100}));
    s.wait_state("blue", "Succeeded");

    let v2 = d.join("..2026_11_26_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("endpoint.yml"), endpoint_yaml("  blue: 100", "  {}")).unwrap();
    std::fs::write(v2.join("blue.yml"), deployment_yaml("blue", "model-1", 3)).unwrap();
    std::os::unix::fs::symlink("..2026_11_26_v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();

    eventually("the swap was applied", Duration::from_secs(20), || {
        let b = s.admin("GET", "/v1/deployments/blue", None).json();
        if b["instance_count"] == 3 && b["instances"]["ready"] == 3 {
            Ok(())
        } else {
            Err(b.to_string())
        }
    });
}

#[test]
fn a_yaml_entry_that_is_not_a_regular_file_is_refused_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "endpoint.yml", &endpoint_yaml("  blue: 100", "  {}"));
    write(d, "blue-deployment.yml", &deployment_yaml("blue", "model-1", 1));
    let s = Server::start_with(&["--config-dir", d.to_str().unwrap()]);
    wait_endpoint(&s, "blue at 100", |e| e["traffic"] == json!({"blue": 100}));
    let key = s.primary_key();

    // The defect: both were skipped without a word ("config applied").
    let fifo = d.join(".green.tmp");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    std::fs::rename(&fifo, d.join("green.yml")).unwrap();
    let e = wait_endpoint(&s, "the FIFO refused", |e| !e["config_dir"]["last_error"].is_null());
    let error = e["config_dir"]["last_error"].as_str().unwrap();
    assert!(error.contains("green.yml") && error.contains("not a regular file"), "{e}");
    assert_eq!(e["traffic"], json!({"blue": 100}), "the running state is kept");
    assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);

    std::fs::remove_file(d.join("green.yml")).unwrap();
    wait_endpoint(&s, "the error cleared", |e| e["config_dir"]["last_error"].is_null());
    std::os::unix::fs::symlink("/dev/zero", d.join("red.yaml")).unwrap();
    let e = wait_endpoint(&s, "the device refused", |e| !e["config_dir"]["last_error"].is_null());
    let error = e["config_dir"]["last_error"].as_str().unwrap();
    assert!(error.contains("red.yaml") && error.contains("not a regular file"), "{e}");
    std::fs::remove_file(d.join("red.yaml")).unwrap();
    wait_endpoint(&s, "the error cleared", |e| e["config_dir"]["last_error"].is_null());
}
