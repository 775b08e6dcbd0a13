//! The seed's safe-rollout walkthrough, through the real CLI and real HTTP: blue with all
//! traffic, invoke, scale, green at 0, pinned invoke, 90/10, 0/100, delete blue.

use crate::common;

use common::*;
use serde_json::Value;

/// Two-sided bound for a binomial count: mean ± 5 standard deviations (a false failure about
/// once in 1.7 million runs).
fn binomial_bounds(n: usize, p: f64) -> (f64, f64) {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (mean - 5.0 * sd, mean + 5.0 * sd)
}

#[test]
fn seed_walkthrough_through_the_cli() {
    let server = Server::start();
    let ep = "my-endpoint";

    // Create the endpoint from the seed's own endpoint.yml.
    let created: Value =
        server.cli_json(&["online-endpoint", "create", "--name", ep, "-f", "tests/fixtures/seed/endpoint.yml"]);
    assert_eq!(created["name"], ep);
    assert_eq!(created["auth_mode"], "key");
    assert!(created["scoring_uri"].as_str().unwrap().ends_with("/score"));
    let state = server.cli_ok(&["online-endpoint", "show", "-n", ep, "--query", "provisioning_state", "-o", "tsv"]);
    assert_eq!(state.trim(), "Succeeded");

    // The seed's blue YAML copied here without its score.py: refused, naming the missing file
    // (the sample with its files is served in tests/python_hook.rs).
    let err = server.cli_err(&[
        "online-deployment",
        "create",
        "--name",
        "blue",
        "--endpoint",
        ep,
        "-f",
        "tests/fixtures/seed/blue-deployment.yml",
    ]);
    assert!(err.contains("scoring_script score.py is not a file in code_configuration.code"), "{err}");

    // Blue with all traffic (the create waits until it is ready).
    let blue: Value = server.cli_json(&[
        "online-deployment",
        "create",
        "--name",
        "blue",
        "--endpoint",
        ep,
        "-f",
        "examples/blue-deployment.yml",
        "--all-traffic",
    ]);
    assert_eq!(blue["provisioning_state"], "Succeeded");
    let traffic: Value = server.cli_json(&["online-endpoint", "show", "-n", ep, "--query", "traffic"]);
    assert_eq!(traffic, serde_json::json!({"blue": 100}));

    // Invoke through the CLI and through HTTP with the key.
    let answer =
        server.cli_ok(&["online-endpoint", "invoke", "--name", ep, "--request-file", "sample-requests/model-1.json"]);
    assert_model_1(answer.trim());
    let key = server.cli_ok(&["online-endpoint", "get-credentials", "-n", ep, "-o", "tsv", "--query", "primaryKey"]);
    let key = key.trim().to_string();
    assert_eq!(key, server.primary_key());
    let r = server.score(
        &sample_request(),
        &[("Authorization", &format!("Bearer {key}")), ("x-ms-client-request-id", "my-id_1!@#")],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_model_1(&r.body);
    assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
    let request_id = r.header("x-request-id").unwrap();
    assert!(uuid::Uuid::parse_str(request_id).is_ok(), "x-request-id is a GUID: {request_id}");
    assert_eq!(r.header("x-ms-request-id"), Some(request_id));
    assert_eq!(r.header("x-ms-client-request-id"), Some("my-id_1"), "echoed, sanitised");

    // Scale blue to 2 instances.
    let scaled: Value = server.cli_json(&[
        "online-deployment",
        "update",
        "--name",
        "blue",
        "--endpoint-name",
        ep,
        "--set",
        "instance_count=2",
    ]);
    assert_eq!(scaled["instance_count"], 2);
    assert_eq!(scaled["instances"]["ready"], 2);
    let logs = server.cli_ok(&["online-deployment", "get-logs", "--name", "blue", "--endpoint", ep, "--lines", "50"]);
    assert!(logs.contains("scaled to 2 instance(s)"), "{logs}");
    assert!(logs.contains("role=live status=200"), "{logs}");

    // Green at 0 traffic: unpinned requests all go to blue.
    server.cli_ok(&[
        "online-deployment",
        "create",
        "--name",
        "green",
        "--endpoint-name",
        ep,
        "-f",
        "examples/green-deployment.yml",
    ]);
    let traffic: Value = server.cli_json(&["online-endpoint", "show", "-n", ep, "--query", "traffic"]);
    assert_eq!(traffic, serde_json::json!({"blue": 100, "green": 0}));
    for _ in 0..200 {
        let r = server.score_authed(&key, &sample_request(), None);
        assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
    }

    // Pinned invoke of green at 0 traffic.
    let green_answer = server.cli_ok(&[
        "online-endpoint",
        "invoke",
        "--name",
        ep,
        "--deployment-name",
        "green",
        "--request-file",
        "sample-requests/model-2.json",
    ]);
    let green = numbers(green_answer.trim());
    assert_eq!(green.len(), 2);
    assert!((green[0] - MODEL_1_ANSWER[0]).abs() > 100.0, "green answers differently: {green:?}");
    let r = server.score_authed(&key, &sample_request(), Some("green"));
    assert_eq!(r.header("azureml-model-deployment"), Some("green"));

    // 90/10 over 2,000 requests: green's share within binomial bounds.
    server.cli_ok(&["online-endpoint", "update", "--name", ep, "--traffic", "blue=90 green=10"]);
    let n = 2000;
    let mut to_green = 0;
    for _ in 0..n {
        let r = server.score_authed(&key, &sample_request(), None);
        assert_eq!(r.status, 200);
        match r.header("azureml-model-deployment") {
            Some("green") => {
                to_green += 1;
                assert_eq!(numbers(&r.body), green);
            }
            Some("blue") => assert_model_1(&r.body),
            other => panic!("answered by {other:?}"),
        }
    }
    let (lo, hi) = binomial_bounds(n, 0.10);
    assert!((lo..=hi).contains(&(to_green as f64)), "green got {to_green} of {n}, expected {lo:.0}..{hi:.0}");

    // 0/100: everything goes to green.
    server.cli_ok(&["online-endpoint", "update", "--name", ep, "--traffic", "blue=0 green=100"]);
    for _ in 0..100 {
        let r = server.score_authed(&key, &sample_request(), None);
        assert_eq!(r.header("azureml-model-deployment"), Some("green"));
    }

    // Delete blue; only green is left and still serving.
    server.cli_ok(&["online-deployment", "delete", "--name", "blue", "--endpoint", ep, "--yes", "--no-wait"]);
    let names: Value = server.cli_json(&["online-deployment", "list", "-e", ep, "--query", "[].name"]);
    assert_eq!(names, serde_json::json!(["green"]));
    let r = server.score_authed(&key, &sample_request(), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("azureml-model-deployment"), Some("green"));
    let r = server.score_authed(&key, &sample_request(), Some("blue"));
    assert_eq!(r.status, 404, "a deleted deployment cannot be pinned");

    // Delete the endpoint.
    server.cli_ok(&["online-endpoint", "delete", "--name", ep, "--yes", "--no-wait"]);
    let listed = server.cli_ok(&["online-endpoint", "list"]);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), serde_json::json!([]));
    assert_eq!(server.score_authed(&key, &sample_request(), None).status, 404);
}

#[test]
fn seed_files_parse() {
    use switchyard::spec::{DeploymentSpec, EndpointSpec};
    let dir = repo().join("tests/fixtures/seed");
    let (ep, _) = EndpointSpec::from_file(&dir.join("endpoint.yml")).unwrap();
    assert_eq!(ep.name, "my-endpoint");
    for f in [
        "blue-deployment.yml",
        "green-deployment.yml",
        "blue-deployment-with-curated-env.yml",
        "green-deployment-with-curated-env.yml",
    ] {
        let (spec, _) = DeploymentSpec::from_file(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(spec.instance_count, 1);
        assert!(spec.model.path.is_absolute());
    }
    // Registered models (CONTRACT §11): the reference is kept for the server to resolve.
    for (f, model) in [
        ("blue-deployment-with-registered-assets.yml", "azureml:my-model:1"),
        ("green-deployment-with-registered-assets.yml", "azureml:my-model:2"),
    ] {
        let (spec, _) = DeploymentSpec::from_file(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(spec.model.reference.as_deref(), Some(model), "{f}");
        assert!(spec.names_registered_assets(), "{f}");
    }
}
