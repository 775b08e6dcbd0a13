//! The CLI behaves as `az` does where scripts depend on it: `-o table`, the global
//! `--only-show-errors` / `--debug` / `--verbose`, and `delete` that refuses without `--yes`
//! when nobody can be asked.

use crate::common;

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

/// A deployment of tests/fixtures/python/gated: its init() logs a line, then waits for `gate`
/// to exist, so it stays Creating until the test opens the gate.
fn gated_yaml(dir: &std::path::Path, gate: &std::path::Path) -> std::path::PathBuf {
    let fixtures = repo().join("tests/fixtures/python");
    let doc = json!({
        "name": "gated",
        "model": {"path": fixtures.join("probe/model")},
        "code_configuration": {"code": fixtures.join("gated/code"), "scoring_script": "score.py"},
        "environment_variables": {"GATE_FILE": gate, "GATE_TIMEOUT_S": "60"},
    });
    let file = dir.join("gated.yml");
    std::fs::write(&file, serde_json::to_string(&doc).unwrap()).unwrap();
    file
}

#[test]
fn a_long_create_on_a_terminal_ticks_and_shows_the_latest_log_line() {
    let python = test_venv_python();
    let s = Server::start_with(&["--python", &python]);
    s.create_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let file = gated_yaml(dir.path(), &gate);
    // The CLI on a pseudo-terminal, its redraws arriving here as lines.
    let mut child = std::process::Command::new(&python)
        .arg(repo().join("tests/fixtures/pty_run.py"))
        .args([bin(), "online-deployment", "create", "-f", &path_str(&file), "-o", "none"])
        .env("SWITCHYARD_ADMIN_URL", &s.admin)
        .env("COLUMNS", "200")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run tests/fixtures/pty_run.py");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let limit = std::time::Duration::from_secs(30);
    let mut seen = Vec::new();
    // While init waits (nothing changes on the server), the line shows init's own log line
    // and keeps ticking: three frames with different seconds.
    let mut seconds = std::collections::BTreeSet::new();
    while seconds.len() < 3 {
        let line = rx.recv_timeout(limit).unwrap_or_else(|_| panic!("no ticking progress line; saw {seen:#?}"));
        if line.contains("gated: Creating") && line.contains("gated init: waiting for the gate file") {
            let secs = line.split_whitespace().nth(2).unwrap_or("").to_string();
            seconds.insert(secs);
        }
        seen.push(line);
    }
    std::fs::write(&gate, "").unwrap();
    let status = child.wait().unwrap();
    let rest: Vec<String> = rx.iter().collect();
    assert!(status.success(), "{seen:#?}\n{rest:#?}");
    assert!(rest.iter().any(|l| l.starts_with("gated: Succeeded")), "{rest:#?}");
}

#[test]
fn errors_are_printed_as_az_prints_them_and_advice_names_cli_commands() {
    let s = Server::start();
    // No endpoint at all, then one of another name: both ResourceNotFound.
    let err = s.cli_err(&["online-endpoint", "show"]);
    assert!(err.contains("(ResourceNotFound) this server hosts no endpoint"), "{err}");
    assert!(err.contains("Code: ResourceNotFound") && err.contains("Status: 404"), "{err}");
    assert!(err.contains("switchyard online-endpoint create"), "the CLI's own advice: {err}");
    s.create_endpoint();
    let err = s.cli_err(&["online-endpoint", "show", "-n", "some-other"]);
    assert!(err.starts_with("ERROR: (ResourceNotFound) endpoint \"some-other\" not found"), "{err}");
    assert!(err.contains("Code: ResourceNotFound") && err.contains("Status: 404"), "{err}");
    let err = s.cli_err(&["online-deployment", "show", "-n", "nope", "-e", "my-endpoint"]);
    assert!(err.contains("(ResourceNotFound)"), "{err}");
    // A refusal: the server says what to change, the CLI adds the command that changes it.
    s.deploy("blue", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let err = s.cli_err(&["online-deployment", "delete", "-n", "blue", "-e", "my-endpoint", "--yes"]);
    assert!(err.contains("(Conflict)") && err.contains("live traffic"), "{err}");
    assert!(err.contains("switchyard online-endpoint update --traffic"), "{err}");
    // After a delete there is no endpoint; nothing says "yet".
    s.cli_ok(&["online-endpoint", "delete", "-n", "my-endpoint", "--yes"]);
    let err = s.cli_err(&["online-endpoint", "show"]);
    assert!(err.contains("(ResourceNotFound) this server hosts no endpoint") && !err.contains("yet"), "{err}");
}

#[test]
fn serve_help_lists_only_serves_flags_and_client_flags_stay_on_the_client_verbs() {
    let out = std::process::Command::new(bin()).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("--admin-port"), "{help}");
    for flag in ["--server", "--query", "--output", "--only-show-errors", "--debug", "--verbose"] {
        assert!(!help.contains(flag), "serve --help lists {flag}:\n{help}");
    }
    assert!(help.contains("--admin-token"), "serve takes its own token: {help}");
    // A client flag given to serve is refused, not ignored.
    let out = std::process::Command::new(bin()).args(["serve", "--query", "name"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = std::process::Command::new(bin()).args(["--server", "http://127.0.0.1:1", "serve"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--server is a flag of the client verbs"), "{out:?}");
    // The client verbs list them, and take them before or after the verb.
    let out = std::process::Command::new(bin()).args(["online-endpoint", "show", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--server") && help.contains("--query") && help.contains("SWITCHYARD_ADMIN_URL"), "{help}");
    let s = Server::start();
    s.create_endpoint();
    for args in [
        vec!["--server", s.admin.as_str(), "online-endpoint", "show", "--query", "name", "-o", "tsv"],
        vec!["online-endpoint", "show", "--server", s.admin.as_str(), "--query", "name", "-o", "tsv"],
    ] {
        let out = std::process::Command::new(bin())
            .args(&args)
            .env("SWITCHYARD_ADMIN_URL", "http://127.0.0.1:1")
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "my-endpoint", "{args:?}: {out:?}");
    }
}
