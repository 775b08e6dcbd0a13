//! The Python SDK tab: the Azure tutorial's SDK steps (sdk/python/tests/tutorial.py, the
//! tutorial's code with only `MLClient(...)` changed, azure-ai-ml's own entity classes) run in
//! order against a real server, blue being the sample's score.py with `Model(path=<the .pkl>)`.
//! scripts/sdk-setup.sh makes the pinned azure-ai-ml venv (target/sdk-venv) once.

use crate::common;

use std::process::Command;

use common::*;

#[test]
fn the_tutorials_sdk_steps_run_in_order_against_a_real_server() {
    if std::env::var("SWITCHYARD_SKIP_SDK").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_SDK=1");
        return;
    }
    let status = Command::new(repo().join("scripts/sdk-setup.sh")).status().expect("run scripts/sdk-setup.sh");
    assert!(status.success(), "scripts/sdk-setup.sh failed");
    let status = Command::new(repo().join("scripts/setup.sh"))
        .env("SWITCHYARD_SKIP_BUILD", "1")
        .status()
        .expect("run scripts/setup.sh");
    assert!(status.success(), "scripts/setup.sh failed");
    let hook_python = path_str(&repo().join("target/python-test-venv/bin/python"));
    let s = Server::start_with(&["--python", &hook_python]);
    let out = Command::new(repo().join("target/sdk-venv/bin/python"))
        .arg(repo().join("sdk/python/tests/tutorial.py"))
        .arg(repo().join("examples/azure-sample"))
        .env("SWITCHYARD_ADMIN_URL", &s.admin)
        // The working tree's package, not the copy installed when the venv was made.
        .env("PYTHONPATH", repo().join("sdk/python"))
        .output()
        .expect("run sdk/python/tests/tutorial.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("tutorial: all steps passed"), "{stdout}\n{stderr}");
    // What the script did is visible through the admin API: the endpoint is gone.
    assert_eq!(s.admin("GET", "/v1/endpoint", None).status, 404);
}

/// sdk/python/tests/checks.py: `endpoint_name` is checked, `{}` clears traffic and mirror
/// traffic, `get` returns the environment, `from_config`, progress during `result()`, and
/// messages without CLI advice; against a real server and real Python workers.
#[test]
fn the_sdk_checks_endpoint_names_clears_traffic_shows_progress_and_reads_config_json() {
    if std::env::var("SWITCHYARD_SKIP_SDK").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_SDK=1");
        return;
    }
    let status = Command::new(repo().join("scripts/sdk-setup.sh")).status().expect("run scripts/sdk-setup.sh");
    assert!(status.success(), "scripts/sdk-setup.sh failed");
    let hook_python = test_venv_python();
    let s = Server::start_with(&["--python", &hook_python]);
    let out = Command::new(repo().join("target/sdk-venv/bin/python"))
        .arg(repo().join("sdk/python/tests/checks.py"))
        .arg(repo())
        .env("SWITCHYARD_ADMIN_URL", &s.admin)
        .env("PYTHONPATH", repo().join("sdk/python"))
        .output()
        .expect("run sdk/python/tests/checks.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("checks: all passed"), "{stdout}\n{stderr}");
}
