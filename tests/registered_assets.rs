//! Registered models and environments (issue 26, CONTRACT §11) through the CLI against a real
//! server: `model create` / `environment create` as the Azure tutorial's CLI tab names them, the
//! sample's `blue-deployment-with-registered-assets.yml` deployed as it is, the stored copy
//! immune to later edits of the source folder, archive refused while in use, `@latest`
//! pinned, a restart keeping all of it; and the upload route refusing hostile paths and
//! cross-site pages.

use crate::common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

const BLUE_ANSWER: &str = "[11055.977245525679, 4503.079536107787]";
const GREEN_ANSWER: &str = "[0.5, 0.5]";

fn sample(rel: &str) -> String {
    path_str(&repo().join("examples/azure-sample").join(rel))
}

fn invoke(s: &Server, deployment: &str) -> String {
    let request = sample("model-1/sample-request.json");
    s.cli_ok(&[
        "online-endpoint",
        "invoke",
        "-n",
        "my-endpoint",
        "--deployment-name",
        deployment,
        "--request-file",
        &request,
    ])
    .trim()
    .to_string()
}

/// `env.yml` in Azure's schema, its conda file relative to it.
fn environment_yaml(dir: &Path) -> String {
    std::fs::copy(repo().join("examples/azure-sample/model-1/environment/conda.yaml"), dir.join("conda.yaml")).unwrap();
    let file = dir.join("env.yml");
    std::fs::write(
        &file,
        "$schema: https://azuremlschemas.azureedge.net/latest/environment.schema.json\nname: my-env\nversion: 1\n\
         image: mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest\nconda_file: conda.yaml\n",
    )
    .unwrap();
    path_str(&file)
}

#[test]
fn the_samples_registered_assets_deploy_and_survive_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let python = test_venv_python();
    let state_dir = path_str(state.path());
    let mut s = Server::start_with(&["--python", &python, "--state-dir", &state_dir]);

    // Register as the tutorial's CLI tab does: the model from its folder, twice.
    let v1 = s.cli_json(&["model", "create", "--name", "my-model", "--path", &sample("model-1/model")]);
    assert_eq!((v1["version"].as_str(), v1["id"].as_str()), (Some("1"), Some("azureml:my-model:1")), "{v1}");
    assert_eq!(v1["type"], "custom_model");
    let v2 = s.cli_json(&["model", "create", "--name", "my-model", "--path", &sample("model-2/model")]);
    assert_eq!(v2["version"], "2", "{v2}");
    assert!(v1["path"].as_str().unwrap().starts_with(&state_dir), "stored under --state-dir: {v1}");
    let env = s.cli_json(&["environment", "create", "-f", &environment_yaml(work.path())]);
    assert_eq!(env["id"], "azureml:my-env:1", "{env}");
    assert!(env["conda_yaml"].as_str().unwrap().contains("scikit-learn"), "{env}");
    // Registering the same file again under its version is answered with that version.
    let again = s.cli_json(&["environment", "create", "-f", &environment_yaml(work.path())]);
    assert_eq!(again["version"], "1");

    let listed = s.cli_json(&["model", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 1, "the latest version per name: {listed}");
    assert_eq!(listed[0]["version"], "2");
    let versions = s.cli_json(&["model", "list", "--name", "my-model"]);
    assert_eq!(versions.as_array().unwrap().len(), 2, "{versions}");
    let table = s.cli_ok(&["model", "list", "-o", "table"]);
    assert!(table.contains("my-model") && table.contains("custom_model"), "{table}");
    assert_eq!(s.cli_json(&["model", "show", "--name", "my-model", "--version", "1"])["digest"], v1["digest"]);
    assert_eq!(s.cli_json(&["model", "show", "--name", "my-model", "--label", "latest"])["version"], "2");
    let missing = s.cli_err(&["model", "show", "--name", "my-model", "--version", "7"]);
    assert!(missing.contains("has no version"), "{missing}");

    // The sample's YAML, as it is.
    let sample_dir = "examples/azure-sample/managed/sample";
    s.cli_ok(&["online-endpoint", "create", "-f", &format!("{sample_dir}/endpoint.yml")]);
    s.cli_ok(&[
        "online-deployment",
        "create",
        "-f",
        &format!("{sample_dir}/blue-deployment-with-registered-assets.yml"),
        "--all-traffic",
    ]);
    s.cli_ok(&[
        "online-deployment",
        "create",
        "-f",
        &format!("{sample_dir}/green-deployment-with-registered-assets.yml"),
    ]);
    assert_eq!(invoke(&s, "blue"), BLUE_ANSWER);
    assert_eq!(invoke(&s, "green"), GREEN_ANSWER);
    let blue = s.cli_json(&["online-deployment", "show", "-n", "blue", "-e", "my-endpoint"]);
    assert_eq!(blue["model"]["reference"], "azureml:my-model:1", "{blue}");
    assert_eq!(blue["model"]["version"], "1");
    assert_eq!(blue["model"]["path"], v1["path"]);
    assert_eq!(blue["environment"]["reference"], "azureml:my-env:1", "{blue}");
    assert_eq!(blue["environment"]["conda_file"], env["conda_file"]);
    // Both deployments build from the one stored conda file: one venv in the cache.
    let green = s.cli_json(&["online-deployment", "show", "-n", "green", "-e", "my-endpoint"]);
    assert_eq!(green["environment"]["conda_file"], env["conda_file"], "{green}");

    // Archiving what a deployment uses is refused, naming it; an unused version is not.
    let refused = s.cli_err(&["model", "archive", "--name", "my-model", "--version", "1"]);
    assert!(refused.contains("my-endpoint/blue"), "{refused}");
    let refused = s.cli_err(&["environment", "archive", "--name", "my-env"]);
    assert!(refused.contains("my-endpoint/blue") && refused.contains("my-endpoint/green"), "{refused}");
    let admin_refusal = s.admin("POST", "/v1/models/my-model/archive", None);
    assert_eq!(admin_refusal.status, 409, "{}", admin_refusal.body);

    // An unknown version is a 400 naming what exists; nothing changes.
    let bad = s.admin(
        "PUT",
        "/v1/endpoints/my-endpoint/deployments/red",
        Some(&json!({"model": "azureml:my-model:9", "code_configuration": {"code": sample("model-1/onlinescoring"), "scoring_script": "score.py"}})),
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.message().contains("its versions are 1, 2"), "{}", bad.body);
    assert_eq!(s.admin("GET", "/v1/endpoints/my-endpoint/deployments/red", None).status, 404);

    // `@latest` is resolved once: a scale keeps the version even after a newer one exists.
    let latest = s.admin(
        "PUT",
        "/v1/endpoints/my-endpoint/deployments/latest?all_traffic=false",
        Some(&json!({
            "model": "azureml:my-model@latest",
            "code_configuration": {"code": sample("model-2/onlinescoring"), "scoring_script": "score.py"},
            "environment": "azureml:my-env@latest",
        })),
    );
    assert_eq!(latest.status, 201, "{}", latest.body);
    s.wait_state_in("my-endpoint", "latest", "Succeeded");
    assert_eq!(invoke(&s, "latest"), GREEN_ANSWER);
    let v3 = s.cli_json(&["model", "create", "--name", "my-model", "--path", &sample("model-1/model")]);
    assert_eq!(
        (v3["version"].as_str(), v3["path"].as_str()),
        (Some("3"), v1["path"].as_str()),
        "identical content shares the copy"
    );
    s.cli_ok(&["online-deployment", "update", "-n", "latest", "-e", "my-endpoint", "--set", "instance_count=2"]);
    let shown = s.cli_json(&["online-deployment", "show", "-n", "latest", "-e", "my-endpoint"]);
    assert_eq!((shown["model"]["version"].as_str(), shown["instance_count"].as_u64()), (Some("2"), Some(2)), "{shown}");
    assert_eq!(invoke(&s, "latest"), GREEN_ANSWER);

    // A restart keeps the registrations and loads the versions the deployments resolved to.
    s.terminate();
    let s = Server::start_with(&["--python", &python, "--state-dir", &state_dir]);
    s.wait_state_in("my-endpoint", "blue", "Succeeded");
    s.wait_state_in("my-endpoint", "latest", "Succeeded");
    assert_eq!(invoke(&s, "blue"), BLUE_ANSWER);
    assert_eq!(invoke(&s, "latest"), GREEN_ANSWER);
    assert_eq!(s.cli_json(&["model", "list", "--name", "my-model"]).as_array().unwrap().len(), 3);
    let refused = s.cli_err(&["model", "archive", "--name", "my-model", "--version", "2"]);
    assert!(refused.contains("my-endpoint/latest") && refused.contains("my-endpoint/green"), "{refused}");
    // Once unused, a version archives, leaves lists and `@latest`, and comes back.
    s.cli_ok(&["online-deployment", "delete", "-n", "latest", "-e", "my-endpoint", "--yes"]);
    let archived = s.cli_json(&["model", "archive", "--name", "my-model", "--version", "3"]);
    assert_eq!(archived["versions"], json!(["3"]), "{archived}");
    assert_eq!(s.cli_json(&["model", "show", "--name", "my-model"])["version"], "2");
    assert_eq!(s.cli_json(&["model", "list", "--name", "my-model"]).as_array().unwrap().len(), 2);
    assert_eq!(s.cli_json(&["model", "list", "--name", "my-model", "--include-archived"]).as_array().unwrap().len(), 3);
    s.cli_ok(&["model", "restore", "--name", "my-model", "--version", "3"]);
    assert_eq!(s.cli_json(&["model", "show", "--name", "my-model"])["version"], "3");
}

#[test]
fn a_registered_copy_does_not_follow_edits_of_its_source() {
    let s = Server::start_with(&["--python", &test_venv_python()]);
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("model");
    std::fs::create_dir(&folder).unwrap();
    std::fs::copy(
        repo().join("examples/azure-sample/model-1/model/sklearn_regression_model.pkl"),
        folder.join("sklearn_regression_model.pkl"),
    )
    .unwrap();
    let yml = work.path().join("model.yml");
    std::fs::write(&yml, "name: edited\npath: model\ndescription: from a YAML\ntags:\n  stage: test\n").unwrap();
    let m = s.cli_json(&["model", "create", "-f", &path_str(&yml)]);
    assert_eq!(
        (m["version"].as_str(), m["description"].as_str(), m["tags"]["stage"].as_str()),
        (Some("1"), Some("from a YAML"), Some("test"))
    );
    // The source is overwritten after registration: a deployment reading it would fail to load.
    std::fs::write(folder.join("sklearn_regression_model.pkl"), b"not a pickle any more").unwrap();
    s.create_endpoint();
    let body = json!({
        "model": "azureml:edited:1",
        "code_configuration": {"code": sample("model-1/onlinescoring"), "scoring_script": "score.py"},
    });
    assert_eq!(s.admin("PUT", "/v1/deployments/blue?all_traffic=true", Some(&body)).status, 201);
    s.wait_state("blue", "Succeeded");
    let key = s.primary_key();
    let r = s.score_authed(
        &key,
        &std::fs::read(repo().join("examples/azure-sample/model-1/sample-request.json")).unwrap(),
        None,
    );
    assert_eq!(r.body.trim(), BLUE_ANSWER, "the registered weights serve, not the edited folder's");
    // Registering the edited folder is a new version with its own copy.
    let m2 = s.cli_json(&["model", "create", "-f", &path_str(&yml)]);
    assert_eq!(m2["version"], "2");
    assert_ne!(m2["digest"], m["digest"]);
    // The stored file is read-only.
    let stored = Path::new(m["path"].as_str().unwrap()).join("sklearn_regression_model.pkl");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&stored).unwrap().permissions());
    assert_eq!(mode & 0o222, 0, "{stored:?} is writable");
}

#[test]
fn uploads_refuse_hostile_paths_and_cross_site_pages() {
    let assets = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--assets-dir", &path_str(assets.path())]);
    let id = s.admin("POST", "/v1/uploads", None).json()["id"].as_str().unwrap().to_string();
    let put = |path: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Content-Type", "application/octet-stream")];
        h.extend_from_slice(headers);
        http(&agent(), "PUT", &format!("{}/v1/uploads/{id}/files/{path}", s.admin), &h, Some(b"bytes"))
    };
    for bad in ["model/..%2F..%2Fescape", "model/%2E%2E/x", "%2Fetc%2Fpasswd", "a%00b", "model//x", "model/%FF"] {
        let r = put(bad, &[]);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    // A name holding '%' or a space arrives as that name.
    let r = put("model/a%25b%20c.txt", &[]);
    assert_eq!((r.status, r.json()["path"].as_str()), (201, Some("model/a%b c.txt")), "{}", r.body);
    let escaped =
        std::fs::read_dir(std::env::temp_dir()).unwrap().filter_map(Result::ok).any(|e| e.file_name() == "escape");
    assert!(!escaped, "a file escaped the upload");
    // A cross-site page cannot upload, and JSON-only routes do not take raw bytes.
    let r = put("model/w", &[("Origin", "http://evil.example"), ("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(
        &agent(),
        "POST",
        &format!("{}/v1/models", s.admin),
        &[("Content-Type", "application/octet-stream")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 415, "{}", r.body);
    // A good file, then the same path again (409), then one that is both a file and a folder.
    assert_eq!(put("model/w", &[]).status, 201);
    assert_eq!(put("model/w", &[]).status, 409);
    assert_eq!(put("model/w/x", &[]).status, 400);
    // A registration with two top-level entries is refused.
    assert_eq!(put("other", &[]).status, 201);
    let r = s.admin("POST", "/v1/models", Some(&json!({"name": "m", "upload": id})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("exactly one top-level"), "{}", r.body);
    // Unknown fields and bad names say what is expected.
    let r = s.admin("POST", "/v1/models", Some(&json!({"name": "../m", "upload": "x"})));
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.admin("POST", "/v1/environments", Some(&json!({"name": "e", "build": {"path": "."}})));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("expected"), "{}", r.body);
    assert_eq!(s.admin("DELETE", &format!("/v1/uploads/{id}"), None).status, 204);
    assert_eq!(put("model/z", &[]).status, 404);
    let empty: Value = s.admin("GET", "/v1/models", None).json();
    assert_eq!(empty, json!([]));

    // A declared size over the limit is refused before the body is read.
    let id = s.admin("POST", "/v1/uploads", None).json()["id"].as_str().unwrap().to_string();
    let admin = s.admin.trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&admin).unwrap();
    use std::io::{Read, Write};
    write!(
        conn,
        "PUT /v1/uploads/{id}/files/m/huge HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/octet-stream\r\nContent-Length: 5000000000\r\n\r\n"
    )
    .unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 64];
    let n = conn.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    assert_eq!(s.admin("DELETE", &format!("/v1/uploads/{id}"), None).status, 204);

    // The CLI checks the name before sending, and abandons an upload the server refused.
    let folder = sample("model-1/model");
    let e = s.cli_err(&["model", "create", "--name", "bad name", "--path", &folder]);
    assert!(e.contains("may hold only letters"), "{e}");
    s.cli_ok(&["model", "create", "--name", "m", "--version", "1", "--path", &folder]);
    let e =
        s.cli_err(&["model", "create", "--name", "m", "--version", "1", "--path", &sample("model-1/onlinescoring")]);
    assert!(e.contains("other content"), "{e}");
    let open = std::fs::read_dir(assets.path().join("uploads")).unwrap().count();
    assert_eq!(open, 0, "no upload is left behind");
}

/// `--config-dir` files may name registered models: they resolve when the folder is applied,
/// and a later edit of another field keeps the version, `@latest` having moved meanwhile.
#[test]
fn a_config_folder_names_a_registered_model() {
    let assets = tempfile::tempdir().unwrap();
    let assets_dir = path_str(assets.path());
    let mut first = Server::start_with(&["--assets-dir", &assets_dir]);
    let v1 = first.cli_json(&[
        "model",
        "create",
        "--name",
        "cfg-model",
        "--path",
        &path_str(&repo().join("models/model-1")),
    ]);
    assert_eq!(v1["version"], "1");
    first.terminate();

    let config = tempfile::tempdir().unwrap();
    let deployment = |instances: u32| {
        format!("name: blue\nendpoint_name: cfg\nmodel: azureml:cfg-model@latest\ninstance_count: {instances}\n")
    };
    std::fs::write(config.path().join("endpoint.yml"), "name: cfg\nauth_mode: key\ntraffic:\n  blue: 100\n").unwrap();
    std::fs::write(config.path().join("blue.yml"), deployment(1)).unwrap();
    let s = Server::start_with(&["--config-dir", &path_str(config.path()), "--assets-dir", &assets_dir]);
    let blue = s.wait_state_in("cfg", "blue", "Succeeded");
    assert_eq!(
        (blue["model"]["version"].as_str(), blue["model"]["path"].as_str()),
        (Some("1"), v1["path"].as_str()),
        "{blue}"
    );
    let key = s.key_of("cfg");
    eventually("blue serves", std::time::Duration::from_secs(20), || {
        let r = s.score_authed(&key, &sample_request(), None);
        if r.status == 200 {
            assert_model_1(&r.body);
            Ok(())
        } else {
            Err(r.body)
        }
    });
    // A newer version, then an edit of the instance count: a scale, on the same version.
    let v2 =
        s.cli_json(&["model", "create", "--name", "cfg-model", "--path", &path_str(&repo().join("models/model-2"))]);
    assert_eq!(v2["version"], "2");
    let tmp = config.path().join(".blue.yml.tmp");
    std::fs::write(&tmp, deployment(2)).unwrap();
    std::fs::rename(&tmp, config.path().join("blue.yml")).unwrap();
    let scaled = eventually("blue has 2 instances", std::time::Duration::from_secs(30), || {
        let d = s.admin("GET", "/v1/endpoints/cfg/deployments/blue", None).json();
        if d["instance_count"] == 2 && d["provisioning_state"] == "Succeeded" {
            Ok(d)
        } else {
            Err(d.to_string())
        }
    });
    assert_eq!(scaled["model"]["version"], "1", "{scaled}");
}

/// Code stored by the server (the studio's upload) runs as it is stored: Python writes no
/// `__pycache__` into it, even where the environment would let it.
#[test]
fn stored_code_runs_without_being_written_to() {
    let python = test_venv_python();
    let s = Server::start_with_env(&["--python", &python], &[("PYTHONDONTWRITEBYTECODE", "")]);
    let id = s.admin("POST", "/v1/uploads", None).json()["id"].as_str().unwrap().to_string();
    let code = repo().join("examples/azure-sample/model-1/onlinescoring/score.py");
    let r = http(
        &agent(),
        "PUT",
        &format!("{}/v1/uploads/{id}/files/onlinescoring/score.py", s.admin),
        &[("Content-Type", "application/octet-stream")],
        Some(&std::fs::read(code).unwrap()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let stored = s.admin("POST", "/v1/codes", Some(&json!({"upload": id})));
    assert_eq!(stored.status, 201, "{}", stored.body);
    let path = stored.json()["path"].as_str().unwrap().to_string();
    s.create_endpoint();
    let body = json!({
        "model": {"path": sample("model-1/model")},
        "code_configuration": {"code": path, "scoring_script": "score.py"},
    });
    assert_eq!(s.admin("PUT", "/v1/deployments/blue?all_traffic=true", Some(&body)).status, 201);
    s.wait_state("blue", "Succeeded");
    let r = s.score_authed(
        &s.primary_key(),
        &std::fs::read(repo().join("examples/azure-sample/model-1/sample-request.json")).unwrap(),
        None,
    );
    assert_eq!(r.body.trim(), BLUE_ANSWER);
    let written: Vec<_> = std::fs::read_dir(&path).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
    assert_eq!(written, [std::ffi::OsString::from("score.py")], "the stored folder changed");
}

/// Without `--state-dir` the store is a temporary folder: a server killed before its cleanup
/// leaves it, and the next server removes it (models are copied whole: gigabytes, otherwise).
#[test]
fn a_killed_servers_temporary_store_is_removed_by_the_next_server() {
    let mut first = Server::start();
    let m = first.cli_json(&["model", "create", "--name", "m", "--path", &path_str(&repo().join("models/model-1"))]);
    let stored = std::path::PathBuf::from(m["path"].as_str().unwrap());
    let root = stored
        .ancestors()
        .find(|a| a.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("switchyard-assets-")))
        .unwrap_or_else(|| panic!("{stored:?} is not in a temporary store"))
        .to_path_buf();
    first.kill9();
    assert!(root.exists(), "kill -9 ran no cleanup");
    let _second = Server::start();
    assert!(!root.exists(), "{root:?} was left behind");
}

/// Azure's environment YAML may hold the conda document inline instead of naming a file.
#[test]
fn an_environment_yaml_may_hold_its_conda_file_inline() {
    let s = Server::start();
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("env.yml");
    std::fs::write(&file, "name: inline-env\nimage: python:3.12\nconda_file:\n  dependencies:\n    - python=3.12\n    - pip:\n      - joblib\n").unwrap();
    let env = s.cli_json(&["environment", "create", "-f", &path_str(&file)]);
    assert!(env["conda_yaml"].as_str().unwrap().contains("joblib"), "{env}");
    assert!(env["conda_file"].is_string(), "{env}");
}
