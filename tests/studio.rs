//! The studio page (`GET /` on the admin plane) and the admin API it is built on: the page and
//! its assets come from the binary, `/v1/metrics` counts per deployment, `/v1/endpoint/invoke`
//! scores through the front door, `?base_dir=` resolves a picked YAML file's relative paths;
//! and, in headless Chromium (tests/studio/studio_test.py, installed by
//! scripts/studio-setup.sh), the Azure tutorial's studio steps, the Endpoints list of a
//! server holding several endpoints, and the seed's studio tab from its first step (register
//! the models from their folders, Deploy → Real-time endpoint).

use crate::common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;

use common::*;
use serde_json::json;

const TOKEN: &str = "studio-test-token";

fn get_with(s: &Server, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    http(&agent(), "GET", &format!("{}{path}", s.admin), &headers, None)
}

#[test]
fn the_page_and_its_assets_are_served_from_the_binary_without_the_token() {
    let s = Server::start_with(&["--admin-token", TOKEN]);
    let page = get_with(&s, "/", None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.header("content-type").unwrap().starts_with("text/html"), "{page:?}");
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"), "{page:?}");
    for id in [
        "view-list",
        "endpoints-table",
        "endpoint-rows",
        "no-endpoint",
        "create-endpoint",
        "view-endpoint",
        "back-to-list",
        "tab-details",
        "tab-test",
        "tab-logs",
        "tab-monitoring",
        "tab-consume",
        "tab-rollout",
        "update-traffic",
        "mirror-enable",
        "rollout-form",
        "rollout-status",
        "rollout-evidence",
        "rollout-confidence",
        "rollout-on-inconclusive",
        // The asset store's pages (CONTRACT §11): Models, Environments, Deploy → Real-time endpoint.
        "studio-nav",
        "nav-endpoints",
        "nav-models",
        "nav-environments",
        "view-models",
        "models-table",
        "model-rows",
        "no-models",
        "models-register",
        "register-local",
        "register-dialog",
        "register-form",
        "register-type",
        "register-folder",
        "register-file",
        "register-name",
        "register-description",
        "register-submit",
        "view-model",
        "model-id",
        "model-version-rows",
        "model-deploy",
        "deploy-realtime",
        "view-environments",
        "curated-rows",
        "environment-rows",
        "no-environments",
        "env-form",
        "view-deploy",
        "wizard-steps",
        "wiz-page-endpoint",
        "wiz-endpoint-new",
        "wiz-endpoint-existing",
        "wiz-endpoint-name",
        "wiz-endpoint-pick",
        "wiz-compute-type",
        "wiz-auth-key",
        "wiz-auth-token",
        "wiz-page-model",
        "wiz-model-id",
        "wiz-page-deployment",
        "wiz-deployment-name",
        "wiz-data-collection",
        "wiz-app-insights",
        "wiz-page-code",
        "wiz-code-file",
        "wiz-code-folder",
        "wiz-scoring-script",
        "wiz-environment",
        "wiz-page-compute",
        "wiz-instance-type",
        "wiz-instance-count",
        "wiz-page-traffic",
        "wiz-traffic-fields",
        "wiz-traffic-total",
        "wiz-page-review",
        "wiz-review-json",
        "wizard-next",
        "wizard-create",
        "wizard-progress",
        "wizard-log",
    ] {
        assert!(page.body.contains(&format!("id=\"{id}\"")), "the page has no #{id}");
    }
    // A folder upload (Register → From local files, the wizard's code folder) is a browser's
    // folder picker.
    assert_eq!(page.body.matches(" webkitdirectory").count(), 2, "the page has no folder pickers");
    for (path, kind) in [("/studio/studio.js", "text/javascript"), ("/studio/studio.css", "text/css")] {
        let r = get_with(&s, path, None);
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(kind), "{path}: {r:?}");
    }
    // The icon browsers ask for by themselves is there too (no 404 in the page's console).
    let icon = get_with(&s, "/favicon.ico", None);
    assert_eq!(icon.status, 200, "{}", icon.body);
    assert_eq!(icon.header("content-type"), Some("image/svg+xml"), "{icon:?}");
    assert!(icon.body.starts_with("<svg"), "{}", icon.body);
    assert!(page.body.contains(r#"<link rel="icon" href="/favicon.ico""#), "the page names no icon");
    // Nothing inline for the policy to allow: scripts come from studio.js, style from studio.css.
    let markup = page.body.to_ascii_lowercase();
    assert_eq!(markup.matches("<script").count(), markup.matches("<script src=").count(), "an inline <script>");
    assert!(!markup.contains(" style=") && !markup.contains("<style"), "inline style in the page");
    for handler in [" onclick=", " onload=", " onerror=", " onsubmit=", " onchange=", " oninput="] {
        assert!(!markup.contains(handler), "an inline event handler ({handler}) in the page");
    }
    // The page holds no data; the API it calls still wants the token.
    assert_eq!(get_with(&s, "/v1/metrics", None).status, 401);
    let m = get_with(&s, "/v1/metrics", Some(TOKEN));
    assert_eq!(m.status, 200);
    // No endpoint yet, said without a 404 (the page polls this, and a 404 is an error in the
    // browser's console).
    assert_eq!(m.json().get("endpoint"), Some(&json!(null)), "{}", m.body);
    assert_eq!(get_with(&s, "/studio/nothing.js", None).status, 404);
}

#[test]
fn v1_metrics_counts_live_requests_errors_and_durations_per_deployment() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();
    for _ in 0..5 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
    assert_eq!(s.score_authed(&key, b"{\"data\": \"not rows\"}", None).status, 400);
    let m = s.admin("GET", "/v1/metrics", None).json();
    let of = |name: &str| m["deployments"].as_array().unwrap().iter().find(|d| d["name"] == name).cloned().unwrap();
    let blue = of("blue");
    assert_eq!((blue["live"]["requests"].as_u64(), blue["live"]["ok"].as_u64()), (Some(6), Some(5)), "{blue}");
    assert_eq!(blue["live"]["errors"], 1, "{blue}");
    let counted: u64 = blue["live"]["buckets"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 6, "{blue}");
    assert!(blue["live"]["buckets"].as_array().unwrap().last().unwrap()["le"].is_null(), "+Inf is null: {blue}");
    assert_eq!(blue["instances"]["ready"], 1);
    assert_eq!(of("green")["live"]["requests"], 0);
    assert!(m["time_ms"].as_u64().unwrap() > 0);
    assert_eq!(m["endpoint"], json!(s.admin("GET", "/v1/endpoint", None).json()["name"]), "{m}");
}

#[test]
fn invoke_scores_through_the_front_door_pinned_or_by_traffic() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-2", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let invoke = |q: &str, body: &[u8]| {
        http(
            &agent(),
            "POST",
            &format!("{}/v1/endpoint/invoke{q}", s.admin),
            &[("Content-Type", "application/json")],
            Some(body),
        )
    };
    let r = invoke("", &sample_request());
    assert_eq!((r.status, r.header("azureml-model-deployment")), (200, Some("blue")), "{}", r.body);
    assert_model_1(&r.body);
    let r = invoke("?deployment_name=green", &sample_request());
    assert_eq!((r.status, r.header("azureml-model-deployment")), (200, Some("green")), "{}", r.body);
    // The scoring plane's own errors come back as they are.
    let r = invoke("?deployment_name=nosuch", &sample_request());
    assert_eq!(r.status, 404, "{}", r.body);
    let r = invoke("", b"{\"data\": 1}");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(!r.message().is_empty());
}

#[test]
fn put_with_base_dir_resolves_a_yaml_files_relative_paths() {
    let s = Server::start();
    s.create_endpoint();
    let yaml = "name: blue\nmodel:\n  path: ../models/model-1/\n";
    let put = |q: &str| {
        http(
            &agent(),
            "PUT",
            &format!("{}/v1/deployments/blue{q}", s.admin),
            &[("Content-Type", "application/yaml")],
            Some(yaml.as_bytes()),
        )
    };
    let r = put("?base_dir=relative/folder");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("base_dir must be an absolute folder"), "{}", r.body);
    assert_eq!(s.admin("GET", "/v1/deployments", None).json(), json!([]), "a refused PUT created nothing");
    let base = repo().join("sample-requests");
    let r = put(&format!("?base_dir={}", path_str(&base)));
    assert_eq!(r.status, 201, "{}", r.body);
    let d = s.wait_state("blue", "Succeeded");
    assert_eq!(d["model"]["path"], json!(path_str(&repo().join("models/model-1"))), "{d}");
}

/// Installs chromium, chromedriver and Selenium once (scripts/studio-setup.sh).
fn studio_python() -> PathBuf {
    static SETUP: Once = Once::new();
    SETUP.call_once(|| {
        let status =
            Command::new(repo().join("scripts/studio-setup.sh")).status().expect("run scripts/studio-setup.sh");
        assert!(status.success(), "scripts/studio-setup.sh failed");
    });
    repo().join("target/studio-venv/bin/python")
}

/// The seed's score.py deployments run in the Python hook's test venv (no env build).
fn hook_python() -> String {
    let status = Command::new(repo().join("scripts/setup.sh"))
        .env("SWITCHYARD_SKIP_BUILD", "1")
        .status()
        .expect("run scripts/setup.sh");
    assert!(status.success(), "scripts/setup.sh failed");
    path_str(&repo().join("target/python-test-venv/bin/python"))
}

fn skip_browser() -> bool {
    let skip = std::env::var("SWITCHYARD_SKIP_BROWSER").as_deref() == Ok("1");
    if skip {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_BROWSER=1");
    }
    skip
}

/// Runs one scenario of tests/studio/studio_test.py against `s`, its screenshots going to
/// `shots` (emptied first: shots of an earlier run would pass the checks for a step that no
/// longer ran).
fn run_studio(s: &Server, scenario: &str, shots: &std::path::Path) {
    let python = studio_python();
    let _ = std::fs::remove_dir_all(shots);
    let out = Command::new(python)
        .arg(repo().join("tests/studio/studio_test.py"))
        .env("STUDIO_URL", &s.admin)
        .env("ADMIN_TOKEN", TOKEN)
        .env("SAMPLE_DIR", repo().join("examples/azure-sample/managed/sample"))
        .env("MODELS_DIR", repo().join("models"))
        .env("STUDIO_SCENARIO", scenario)
        .env("SHOTS_DIR", shots)
        .output()
        .expect("run tests/studio/studio_test.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("studio: all steps passed"), "{stdout}\n{stderr}");
}

fn assert_screenshots(shots: &std::path::Path, names: &[&str]) {
    for name in names {
        let png = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&png).unwrap_or_default();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} is not a screenshot", png.display());
    }
}

#[test]
fn the_tutorials_studio_steps_clicked_through_in_headless_chromium() {
    if skip_browser() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_with(&[
        "--admin-token",
        TOKEN,
        "--python",
        &hook_python(),
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let shots = repo().join("target/studio-screenshots");
    run_studio(&s, "tutorial", &shots);
    assert_screenshots(
        &shots,
        &[
            "no-endpoint",
            "endpoints",
            "update-traffic-failed",
            "add-deployment-no-folder",
            "no-endpoint-after",
            "details",
            "test",
            "logs",
            "monitoring",
            "consume",
            "update-traffic-refused",
            "rollout",
            "rollout-refused",
            "rollout-rolled-back",
            "data",
        ],
    );
}

/// The Endpoints list of a server holding two endpoints (made through the admin API): both
/// listed with their scoring URIs, deployments and traffic; each row opens that endpoint's own
/// page (its deployments, traffic, Test answers, metrics and key, none of the other's); a
/// traffic change on one leaves the other as it was; the browser's Back and Forward move
/// between the list and a page; Delete endpoint on one page leaves the other; a link to an
/// endpoint that does not exist lands on the list; Create endpoint adds one beside the others.
/// Every call the page made names its endpoint (/v1/endpoints/NAME/...) and is in the
/// document.
#[test]
fn the_endpoints_list_opens_each_endpoints_own_page_in_headless_chromium() {
    if skip_browser() {
        return;
    }
    let s = Server::start_with(&["--admin-token", TOKEN]);
    let shots = repo().join("target/studio-screenshots-endpoints");
    run_studio(&s, "endpoints", &shots);
    assert_screenshots(
        &shots,
        &["endpoints-list", "endpoints-list-rollout", "endpoint-alpha", "endpoint-beta", "endpoints-list-after"],
    );
    // What the page left, read without it: alpha with the traffic set on its page, beta
    // deleted from its page, gamma created from the list.
    let list = get_with(&s, "/v1/endpoints", Some(TOKEN)).json();
    let names: Vec<_> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect();
    assert_eq!(names, ["alpha", "gamma"], "{list}");
    assert_eq!(list[0]["traffic"], json!({"blue": 0, "green": 100}), "{list}");
    assert_eq!(list[1]["auth_mode"], json!("aml_token"), "{list}");
}

/// The seed's studio tab followed from its first step, in headless Chromium: Models → Register →
/// From local files (model-1 and model-2 from their `model` folders), Models → model-1 → Deploy
/// → Real-time endpoint (a new endpoint, blue with data collection and Application Insights on,
/// `score.py` uploaded, the curated sklearn-1.5 environment, one instance, 100%), then green from
/// model-2 to the existing endpoint at 0% (its `onlinescoring` folder uploaded), then the page's
/// own steps (test, traffic, mirror, logs, delete). A screenshot per wizard page.
#[test]
fn the_seeds_studio_tab_registers_and_deploys_from_its_first_step_in_headless_chromium() {
    if skip_browser() {
        return;
    }
    let s = Server::start_with(&["--admin-token", TOKEN, "--python", &hook_python()]);
    let shots = repo().join("target/studio-screenshots-seed");
    run_studio(&s, "seed", &shots);
    // A screenshot per page of each wizard (blue's on a new endpoint, green's on the existing one).
    let pages = ["1-endpoint", "2-model", "3-deployment", "4-code", "5-compute", "6-traffic", "7-review"];
    let wizard: Vec<String> =
        ["deploy-", "deploy-green-"].iter().flat_map(|w| pages.iter().map(move |p| format!("{w}{p}"))).collect();
    let mut names = vec!["environments", "models-empty", "register-model-1", "register-model-2", "models", "model-1"];
    names.extend(wizard.iter().map(String::as_str));
    names.extend(["deploy-8-progress", "deploy-blue-done", "deploy-green-done", "seed-logs", "models-after"]);
    assert_screenshots(&shots, &names);
    // What the page left, read without it: both models registered once (version 1, from their
    // folders), the endpoint deleted from its page.
    let models = get_with(&s, "/v1/models", Some(TOKEN)).json();
    let listed: Vec<_> = models.as_array().unwrap().iter().map(|m| (m["name"].clone(), m["version"].clone())).collect();
    assert_eq!(listed, [(json!("model-1"), json!("1")), (json!("model-2"), json!("1"))], "{models}");
    assert_eq!(get_with(&s, "/v1/endpoints", Some(TOKEN)).json(), json!([]));
}
