//! The Python SDK tab: the Azure tutorial's SDK steps (sdk/python/tests/tutorial.py, the
//! tutorial's code with only `MLClient(...)` changed, azure-ai-ml's own entity classes) run in
//! order against a real server, blue being the sample's score.py with `Model(path=<the .pkl>)`.
//! scripts/sdk-setup.sh makes the pinned azure-ai-ml venv (target/sdk-venv) once. One server
//! hosts many endpoints: the notebook runs twice beside another endpoint, and
//! sdk/python/tests/many_endpoints.py addresses two endpoints by name.
//! sdk/python/tests/assets.py registers models and environments and deploys them by reference.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

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

/// Whether the SDK tests are skipped (`SWITCHYARD_SKIP_SDK=1`); otherwise makes the SDK's venv.
fn skip_or_set_up() -> bool {
    if std::env::var("SWITCHYARD_SKIP_SDK").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_SDK=1");
        return true;
    }
    let status = Command::new(repo().join("scripts/sdk-setup.sh")).status().expect("run scripts/sdk-setup.sh");
    assert!(status.success(), "scripts/sdk-setup.sh failed");
    false
}

/// Runs an SDK script (`sdk/python/tests/SCRIPT`) with `arg` against the admin API at `admin`,
/// recording its calls to `log`; its output and whether its last line `passed` was printed.
fn run_sdk_script(script: &str, arg: &Path, admin: &str, log: &Path, passed: &str) -> (Output, bool) {
    let out = sdk_python(log)
        .arg(repo().join("sdk/python/tests").join(script))
        .arg(arg)
        .env("SWITCHYARD_ADMIN_URL", admin)
        .output()
        .unwrap_or_else(|e| panic!("run sdk/python/tests/{script}: {e}"));
    let ok = out.status.success() && String::from_utf8_lossy(&out.stdout).contains(passed);
    (out, ok)
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

/// Every recorded call names its endpoint (`/v1/endpoints...`): none uses the one-endpoint
/// routes (`/v1/endpoint...`, `/v1/deployments...`), which a server with several endpoints
/// refuses.
fn assert_named_routes(log: &Path) {
    let text = std::fs::read_to_string(log).expect("read the SDK's call log");
    let old: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("a JSON record")["path"].as_str().unwrap_or_default().to_string()
        })
        .filter(|p| {
            let route = p.split('?').next().unwrap_or_default();
            route == "/v1/endpoint" || route.starts_with("/v1/endpoint/") || route.starts_with("/v1/deployments")
        })
        .collect();
    assert!(old.is_empty(), "the SDK used the one-endpoint routes: {old:?}");
}

#[test]
fn the_tutorials_sdk_steps_run_in_order_against_a_real_server() {
    if skip_or_set_up() {
        return;
    }
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
    assert_eq!(s.admin("GET", "/v1/endpoints", None).json(), json!([]));
    assert_contract(&s.admin, &log);
    assert_named_routes(&log);
}

/// sdk/python/tests/checks.py: `endpoint_name` is checked, `{}` clears traffic and mirror
/// traffic, `get` returns the environment, `from_config`, progress during `result()`, and
/// messages without CLI advice; against a real server and real Python workers.
#[test]
fn the_sdk_checks_endpoint_names_clears_traffic_shows_progress_and_reads_config_json() {
    if skip_or_set_up() {
        return;
    }
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
    assert_named_routes(&log);
}

/// The endpoint the notebook runs beside in the test below: what must not change.
fn resident_state(s: &Server) -> (Value, Vec<Value>, Value) {
    let view = s.admin("GET", "/v1/endpoints/resident", None);
    assert_eq!(view.status, 200, "the other endpoint is gone: {}", view.body);
    let deployments = s.admin("GET", "/v1/endpoints/resident/deployments", None).json();
    let deployments = deployments
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            json!({"name": d["name"], "endpoint_name": d["endpoint_name"], "model": d["model"],
                "instance_count": d["instance_count"], "provisioning_state": d["provisioning_state"],
                "ready": d["instances"]["ready"]})
        })
        .collect();
    (view.json(), deployments, s.admin("GET", "/v1/endpoints/resident/keys", None).json())
}

/// The sample request through an endpoint's `scoring_uri` with its primary key (as a user's
/// curl does): the answer's body.
fn score_at(uri: &str, key: &str) -> String {
    let auth = format!("Bearer {key}");
    let h = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let r = http(&agent(), "POST", uri, &h, Some(&sample_request()));
    assert_eq!(r.status, 200, "{uri}: {}", r.body);
    r.body
}

/// The seed's SDK notebook (sdk/python/tests/tutorial.py: its endpoint is the tutorial's
/// `"endpt-moe-" + random`) twice in a row against one server that also hosts another
/// endpoint, `resident` (blue = model-2, two instances, all traffic, made through the admin
/// API). Both runs pass, every step going to the notebook's own endpoint while another one
/// exists (the one-endpoint routes would be refused with 409 then). The notebook deletes its
/// endpoint at its end, so after each run the server hosts `resident` alone: its settings,
/// deployments and keys are as they were, and it still answers through its `scoring_uri` with
/// its key, from its own model. Then twice more stopped before the clean-up cell: the two
/// endpoints remain beside resident, each served with its own key.
#[test]
fn the_seed_sdk_notebook_runs_twice_in_a_row_on_one_server_beside_another_endpoint() {
    if skip_or_set_up() {
        return;
    }
    let hook_python = test_venv_python();
    let s = Server::start_with(&["--python", &hook_python]);
    let r =
        s.admin("PUT", "/v1/endpoints/resident", Some(&json!({"auth_mode": "key", "tags": {"owner": "another team"}})));
    assert_eq!(r.status, 201, "{}", r.body);
    let blue = json!({"model": {"path": repo().join("models/model-2")}, "instance_count": 2});
    let r = s.admin("PUT", "/v1/endpoints/resident/deployments/blue?all_traffic=true", Some(&blue));
    assert_eq!(r.status, 201, "{}", r.body);
    s.wait_state_in("resident", "blue", "Succeeded");
    let before = resident_state(&s);
    assert_eq!(before.0["traffic"], json!({"blue": 100}), "{}", before.0);
    let resident_uri = before.0["scoring_uri"].as_str().unwrap().to_string();
    assert_eq!(resident_uri, format!("{}/endpoints/resident/score", s.scoring));
    let resident_key = before.2["primaryKey"].as_str().unwrap().to_string();
    let resident_answer = score_at(&resident_uri, &resident_key);
    let got = numbers(&resident_answer);
    assert!(
        got.len() == 2 && (got[0] - MODEL_1_ANSWER[0]).abs() > 1.0,
        "resident's blue is model-2: {resident_answer}"
    );

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let mut made = Vec::new();
    for run in 1..=2 {
        let (out, passed) = run_sdk_script(
            "tutorial.py",
            &repo().join("examples/azure-sample"),
            &s.admin,
            &log,
            "tutorial: all steps passed",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(passed, "run {run} of the notebook failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        // Its endpoint, by the scoring URI its "endpoint details" step printed: its own.
        let prefix = format!("{}/endpoints/", s.scoring);
        let name = stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix("/score")))
            .unwrap_or_else(|| panic!("run {run} printed no scoring URI under {prefix}:\n{stdout}"))
            .to_string();
        assert!(name.starts_with("endpt-moe-"), "run {run}: {name}");
        // The notebook deleted its endpoint and nothing else.
        assert_eq!(s.endpoint_names(), ["resident"], "after run {run}");
        let gone = s.admin("GET", &format!("/v1/endpoints/{name}"), None);
        assert!(
            gone.status == 404 && gone.message().contains("resident"),
            "after run {run}: {} {}",
            gone.status,
            gone.body
        );
        assert_eq!(resident_state(&s), before, "run {run} changed the other endpoint");
        assert_eq!(score_at(&resident_uri, &resident_key), resident_answer, "after run {run}");
        made.push(name);
    }
    eprintln!("the notebook's endpoints: {made:?}");

    // Twice more, each run stopped before its clean-up cell (a user who keeps what the
    // notebook deployed): both endpoints remain beside resident, each serving from its own
    // scoring URI with its own key, and one's key does not open the other.
    let mut kept = Vec::new();
    for run in 3..=4 {
        let out = sdk_python(&log)
            .arg(repo().join("sdk/python/tests/tutorial.py"))
            .arg(repo().join("examples/azure-sample"))
            .env("SWITCHYARD_ADMIN_URL", &s.admin)
            .env("TUTORIAL_STOP_BEFORE_CLEAN_UP", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("tutorial: all steps passed"), "run {run}:\n{stdout}");
        let listed = s.admin("GET", "/v1/endpoints", None).json();
        let new: Vec<Value> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["name"] != "resident" && !kept.iter().any(|(n, _, _): &(String, String, String)| e["name"] == *n)
            })
            .cloned()
            .collect();
        assert_eq!(new.len(), 1, "run {run} left its endpoint: {listed}");
        let name = new[0]["name"].as_str().unwrap().to_string();
        let key = s.key_of(&name);
        kept.push((name, new[0]["scoring_uri"].as_str().unwrap().to_string(), key));
    }
    let listed = s.admin("GET", "/v1/endpoints", None).json();
    assert_eq!(listed.as_array().unwrap().len(), 3, "resident and the two kept: {listed}");
    for (name, uri, key) in &kept {
        let answer = score_at(uri, key);
        assert_eq!(numbers(&answer).len(), 2, "{name} serves: {answer}");
    }
    let auth = format!("Bearer {}", kept[0].2);
    let h = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    let crossed = http(&agent(), "POST", &kept[1].1, &h, Some(&sample_request()));
    assert_eq!(crossed.status, 401, "one kept endpoint's key on the other's URI: {}", crossed.body);
    assert_eq!(resident_state(&s), before, "the kept runs changed resident");
    assert_contract(&s.admin, &log);
    assert_named_routes(&log);
}

/// sdk/python/tests/many_endpoints.py: two endpoints made with the SDK, each with a `blue`
/// (model-1 with one instance, model-2 with two); `list()` returns both; every deployment
/// call goes to its `endpoint_name`'s (and one without it is refused, naming both); `get` of a
/// missing endpoint raises `ResourceNotFoundError` naming the two; `invoke` answers from the
/// named endpoint's own blue; keys are per endpoint (one's key does not open the other's
/// `scoring_uri`); deleting one endpoint leaves the other serving.
#[test]
fn the_sdk_addresses_each_of_several_endpoints_by_name() {
    if skip_or_set_up() {
        return;
    }
    let s = Server::start_with(&["--python", &test_venv_python()]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let (out, passed) = run_sdk_script("many_endpoints.py", &repo(), &s.admin, &log, "many endpoints: all passed");
    assert!(passed, "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.admin("GET", "/v1/endpoints", None).json(), json!([]));
    assert_contract(&s.admin, &log);
    assert_named_routes(&log);
}

/// sdk/python/tests/assets.py: the sample's registered-assets path in the SDK (issue 26).
/// `models.create_or_update` uploads model-1/model and model-2/model as `my-model` versions 1
/// and 2 (the second without a version: the next number), `environments.create_or_update`
/// registers `my-env` from the sample's conda.yaml and image; `get`, `list` and their
/// refusals; blue deploys as blue-deployment-with-registered-assets.yml writes it
/// (`model="azureml:my-model:1"`, `environment="azureml:my-env:1"`) and answers as model-1;
/// `Model(name=, version=)` without a path is a reference too; archiving a version in use is
/// refused (409); after the endpoint is deleted, archive and restore. What the script left is
/// visible through the admin API: every version registered, each archived.
#[test]
fn the_sdk_registers_models_and_environments_and_deploys_them_by_reference() {
    if skip_or_set_up() {
        return;
    }
    let s = Server::start_with(&["--python", &test_venv_python()]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.jsonl");
    let (out, passed) = run_sdk_script("assets.py", &repo(), &s.admin, &log, "assets: all passed");
    assert!(passed, "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.admin("GET", "/v1/endpoints", None).json(), json!([]));
    assert_eq!(s.admin("GET", "/v1/models", None).json(), json!([]), "every model was archived");
    let versions = s.admin("GET", "/v1/models/my-model/versions?archived=true", None).json();
    let got: Vec<(Value, Value, Value)> = versions
        .as_array()
        .unwrap_or_else(|| panic!("{versions}"))
        .iter()
        .map(|v| (v["id"].clone(), v["version"].clone(), v["archived"].clone()))
        .collect();
    assert_eq!(
        got,
        [
            (json!("azureml:my-model:1"), json!("1"), json!(true)),
            (json!("azureml:my-model:2"), json!("2"), json!(true))
        ],
        "{versions}"
    );
    let env = s.admin("GET", "/v1/environments/my-env/versions/1", None).json();
    assert_eq!(env["archived"], json!(true), "{env}");
    let conda = std::fs::read_to_string(repo().join("examples/azure-sample/model-1/environment/conda.yaml")).unwrap();
    assert_eq!(env["conda_yaml"], json!(conda), "the conda file's text, as sent");
    assert_named_routes(&log);
    assert_contract(&s.admin, &log);
}
