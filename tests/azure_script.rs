//! The Azure sample's own shell script, `examples/azure-sample/deploy-managed-online-endpoint.sh`
//! (azureml-examples' `cli/deploy-managed-online-endpoint.sh` with `az ml` replaced by
//! `switchyard`), run start to finish against a real server: its status checks, invokes, curl
//! calls with the key, scaling, green, mirror, traffic and deletes all go through.

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;

/// The tests' venv (the sample conda file's scikit-learn pins), so no environment is built.
fn venv_python() -> String {
    test_venv_python()
}

const BLUE_ANSWER: &str = "[11055.977245525679, 4503.079536107787]";
const GREEN_ANSWER: &str = "[0.5, 0.5]";

#[test]
fn the_azure_samples_deploy_script_runs_start_to_finish() {
    let server = Server::start_with(&["--python", &venv_python()]);
    run_the_script(&server);
    // The script's last command deleted the endpoint (--no-wait).
    eventually("the endpoint is deleted", Duration::from_secs(30), || {
        let r = server.admin("GET", "/v1/endpoint", None);
        if r.status == 404 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
}

/// The same script on a server that already serves another endpoint: every step names its
/// own endpoint, and the other one serves throughout, untouched, after the script deleted
/// its own.
#[test]
fn the_azure_samples_deploy_script_runs_beside_another_endpoint() {
    let server = Server::start_with(&["--python", &venv_python()]);
    assert_eq!(server.admin("PUT", "/v1/endpoints/resident", Some(&serde_json::json!({}))).status, 201);
    let doc = serde_json::json!({"model": {"path": repo().join("models/model-1")}});
    let r = server.admin("PUT", "/v1/endpoints/resident/deployments/blue?all_traffic=true", Some(&doc));
    assert_eq!(r.status, 201, "{}", r.body);
    let key = server.key_of("resident");
    let score = || {
        let auth = format!("Bearer {key}");
        let headers = [("Content-Type", "application/json"), ("Authorization", auth.as_str())];
        let url = format!("{}/endpoints/resident/score", server.scoring);
        http(&agent(), "POST", &url, &headers, Some(&sample_request()))
    };
    eventually("resident serves", Duration::from_secs(60), || {
        let r = score();
        if r.status == 200 {
            Ok(())
        } else {
            Err(r.body)
        }
    });
    let before = server.admin("GET", "/v1/endpoints/resident", None).json();
    run_the_script(&server);
    eventually("only resident is left", Duration::from_secs(30), || {
        let names = server.endpoint_names();
        if names == ["resident"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    });
    assert_eq!(server.admin("GET", "/v1/endpoints/resident", None).json(), before, "resident is as it was");
    let r = score();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_model_1(&r.body);
}

/// Runs the sample's script against `server` and checks what it printed.
fn run_the_script(server: &Server) {
    let script = repo().join("examples/azure-sample/deploy-managed-online-endpoint.sh");
    // Run from elsewhere than the repository: the script finds its files by itself.
    let out = Command::new("bash")
        .arg(&script)
        .env("SWITCHYARD", bin())
        .env("SWITCHYARD_ADMIN_URL", &server.admin)
        .current_dir(std::env::temp_dir())
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the script failed ({}):\n{stdout}\n{stderr}", out.status);

    // The endpoint is the script's own random name, not endpoint.yml's.
    assert!(stdout.contains("\"name\": \"endpt-moe-"), "{stdout}");
    // Its status checks read `--query provisioning_state -o tsv`.
    assert!(stdout.contains("Succeeded\nEndpoint created successfully\n"), "{stdout}");
    assert!(stdout.contains("Succeeded\nDeployment completed successfully\n"), "{stdout}");
    // get-logs shows blue's instance and its init (the script's logging.info lines are
    // dropped, as by Azure's server).
    assert!(stdout.contains("blue/instance-0") && stdout.contains("ran init() of score.py"), "{stdout}");
    // `-o tsv --query scoring_uri` is the scoring URL, and the key it gets works with curl:
    // blue answers the invoke, the curl call and the 20 invokes of the mirror phase.
    let uri = format!("Scoring uri: {}/endpoints/endpt-moe-", server.scoring);
    let shown = stdout.lines().find(|l| l.starts_with(&uri)).unwrap_or_default();
    assert!(shown.ends_with("/score"), "the endpoint's own scoring URI: {stdout}");
    assert_eq!(stdout.matches(BLUE_ANSWER).count(), 22, "{stdout}");
    // Green, pinned by the CLI (--deployment-name) and by curl's azureml-model-deployment header.
    assert_eq!(stdout.matches(GREEN_ANSWER).count(), 2, "{stdout}");
    // `--query traffic` after green's create: green has no live traffic.
    assert!(stdout.contains("{\n  \"blue\": 100,\n  \"green\": 0\n}"), "{stdout}");
    // green's logs (after the mirror phase) are its own.
    assert!(stdout.contains("green/instance-0 pid") && stdout.contains("ran init() of score.py in"), "{stdout}");
}
