//! The Python SDK tab: the Azure tutorial's SDK steps (sdk/python/tests/tutorial.py, the
//! tutorial's code with only `MLClient(...)` changed, azure-ai-ml's own entity classes) run in
//! order against a real server, blue being the sample's score.py with `Model(path=<the .pkl>)`.
//! scripts/sdk-setup.sh makes the pinned azure-ai-ml venv (target/sdk-venv) once.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::*;

/// The SDK's interpreter with the contract recorder (tests/contract/sitecustomize.py) on its
/// path, writing what the script sent and read to `log`.
fn sdk_python(log: &Path) -> Command {
    let mut python = Command::new(repo().join("target/sdk-venv/bin/python"));
    // The working tree's package, not the copy installed when the venv was made.
    let path = format!("{}:{}", path_str(&repo().join("sdk/python")), path_str(&repo().join("tests/contract")));
    python.env("PYTHONPATH", path).env("SWITCHYARD_CONTRACT_LOG", log);
    python
}

/// Checks the recorded calls against the document the server serves: every route, method,
/// query parameter and body field the SDK sent, and every answer field it read, is in it.
pub(crate) fn assert_contract(admin: &str, log: &Path) {
    let out = Command::new("python3")
        .arg(repo().join("tests/contract/openapi_contract.py"))
        .arg(admin)
        .arg(log)
        .output()
        .expect("run tests/contract/openapi_contract.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("match the admin API's document"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{stdout}");
}

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
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let out = sdk_python(&log)
        .arg(repo().join("sdk/python/tests/tutorial.py"))
        .arg(repo().join("examples/azure-sample"))
        .env("SWITCHYARD_ADMIN_URL", &s.admin)
        .output()
        .expect("run sdk/python/tests/tutorial.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("tutorial: all steps passed"), "{stdout}\n{stderr}");
    // What the script did is visible through the admin API: the endpoint is gone.
    assert_eq!(s.admin("GET", "/v1/endpoint", None).status, 404);
    assert_contract(&s.admin, &log);
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
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let out = sdk_python(&log)
        .arg(repo().join("sdk/python/tests/checks.py"))
        .arg(repo())
        .env("SWITCHYARD_ADMIN_URL", &s.admin)
        .output()
        .expect("run sdk/python/tests/checks.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("checks: all passed"), "{stdout}\n{stderr}");
    assert_contract(&s.admin, &log);
}
