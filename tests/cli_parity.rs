//! The CLI behaves as `az` does where scripts depend on it: `-o table`, the global
//! `--only-show-errors` / `--debug` / `--verbose`, and `delete` that refuses without `--yes`
//! when nobody can be asked.

mod common;

use common::*;
use serde_json::json;

#[test]
fn delete_without_yes_on_a_non_terminal_refuses_and_deletes_nothing() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    // The test's stdin is not a terminal, as in a script or CI.
    let err = s.cli_err(&["online-deployment", "delete", "--name", "blue", "--endpoint", "my-endpoint"]);
    assert!(err.contains("Use --yes"), "{err}");
    assert_eq!(s.admin("GET", "/v1/deployments/blue", None).status, 200, "nothing was deleted");
    let err = s.cli_err(&["online-endpoint", "delete", "--name", "my-endpoint"]);
    assert!(err.contains("Use --yes"), "{err}");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).status, 200, "nothing was deleted");
    s.cli_ok(&["online-deployment", "delete", "--name", "blue", "--endpoint", "my-endpoint", "--yes"]);
    assert_eq!(s.admin("GET", "/v1/deployments/blue", None).status, 404);
}

#[test]
fn table_output_and_the_global_flags_of_az() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    let out = s.cli_ok(&["online-deployment", "list", "-o", "table", "--only-show-errors"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("Name") && lines[0].contains("ProvisioningState"), "{out}");
    assert!(lines[1].starts_with("---"), "{out}");
    assert!(lines[2].contains("blue") && lines[2].contains("Succeeded"), "{out}");
    let out = s.cli(&["online-endpoint", "show", "--debug"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DEBUG: GET") && err.contains("-> 200"), "{err}");
    let out = s.cli(&["online-endpoint", "show", "--verbose", "--query", "name", "-o", "tsv"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "my-endpoint");
    assert!(String::from_utf8_lossy(&out.stderr).contains("INFO: GET"));
}

#[test]
fn get_with_wait_answers_when_the_load_is_over() {
    let s = Server::start();
    s.create_endpoint();
    let doc = json!({"name": "blue", "model": {"path": repo().join("models/model-2")}, "instance_count": 16});
    assert_eq!(s.admin("PUT", "/v1/deployments/blue", Some(&doc)).status, 201);
    // One call, no polling: it returns once the 16 instances are loaded.
    let v = s.admin("GET", "/v1/deployments/blue?wait=60", None).json();
    assert_eq!(v["provisioning_state"], "Succeeded", "{v}");
    assert_eq!(v["instances"]["ready"], 16, "{v}");
    let r = s.admin("GET", "/v1/deployments/blue?wait=soon", None);
    assert_eq!(r.status, 400);
    assert!(r.message().contains("wait must be a number"), "{}", r.body);
}
