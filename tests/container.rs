//! The container entrypoint: `switchyard probe` (the image's HEALTHCHECK) against a real
//! server, `--local` refused with what to run, and the shape of the Dockerfile and the
//! Kubernetes manifests (the real checks are hadolint and kubernetes-validate in
//! scripts/lint-deploy.sh).

use crate::common;

use std::process::Command;

use common::*;

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(bin()).arg("probe").args(args).output().expect("run switchyard probe")
}

#[test]
fn probe_exits_0_when_ready_and_1_when_not() {
    let s = Server::start();
    let base = s.scoring.clone();

    // No deployment has live traffic yet: not ready.
    let out = probe(&["--url", &base]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/health/ready") && err.contains("not ready (503)"), "{err}");

    // Liveness answers regardless.
    let out = probe(&["--url", &format!("{base}/health/live")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    s.create_endpoint();
    s.deploy("blue", "model-1", serde_json::json!({}));
    assert_eq!(s.set_traffic(serde_json::json!({"blue": 100})).status, 200);
    s.wait_ready();
    let out = probe(&["--url", &format!("{base}/")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("200"), "{out:?}");
}

#[test]
fn probe_exits_1_when_nothing_listens() {
    // A port nobody listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = probe(&["--url", &format!("http://127.0.0.1:{port}"), "--timeout-secs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not reachable"), "{out:?}");
}

#[test]
fn local_is_refused_with_the_docker_run_line() {
    for args in [
        &["online-endpoint", "list", "--local"][..],
        &["online-deployment", "create", "-f", "examples/blue-deployment.yml", "--local"][..],
    ] {
        let out = Command::new(bin()).args(args).current_dir(repo()).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--local is not supported") && err.contains("docker run"), "{err}");
    }
    // The line printed is the README's, verbatim.
    let out = Command::new(bin()).args(["online-endpoint", "list", "--local"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err.lines().map(str::trim).find(|l| l.starts_with("docker run ")).expect("a docker run line");
    assert!(line.contains("-v \"$PWD\":/var/azureml-app:ro") && line.contains("--host 0.0.0.0"), "{line}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(readme.lines().any(|l| l == line), "README lacks the line --local prints: {line}");
}

#[test]
fn dockerfile_runs_as_non_root_with_a_healthcheck() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let user = lines.iter().rev().find(|l| l.starts_with("USER ")).expect("a USER instruction");
    assert!(!user.ends_with(" root") && !user.ends_with(" 0"), "{user}");
    assert!(lines.iter().any(|l| l.starts_with("HEALTHCHECK ") && l.contains("\"probe\"")), "HEALTHCHECK probe");
    assert!(lines.contains(&"EXPOSE 5001 5003"), "the scoring and gRPC planes exposed");
    assert!(lines.contains(&"ENTRYPOINT [\"switchyard\"]"));
    // The ONNX Runtime pin is the one scripts/setup.sh verifies.
    let setup = std::fs::read_to_string(repo().join("scripts/setup.sh")).unwrap();
    for pin in ["ORT_VERSION=", "WHEEL_SHA256="] {
        let line = setup.lines().find(|l| l.starts_with(pin)).unwrap();
        let value = line.split('=').nth(1).unwrap();
        assert!(text.contains(value), "Dockerfile lacks setup.sh's {line}");
    }
}

#[test]
fn kubernetes_manifests_cover_every_kind() {
    let dir = repo().join("deploy/kubernetes");
    let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !name.ends_with(".yaml") || name == "kustomization.yaml" {
            continue;
        }
        assert!(kustomization.contains(&name), "kustomization.yaml does not list {name}");
        let text = std::fs::read_to_string(&path).unwrap();
        kinds.extend(text.lines().filter_map(|l| l.strip_prefix("kind: ")).map(str::trim).map(String::from));
    }
    for kind in ["Deployment", "Service", "ConfigMap", "Secret", "PodDisruptionBudget", "HorizontalPodAutoscaler"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} in deploy/kubernetes: {kinds:?}");
    }
}

#[test]
fn the_configmap_files_serve_the_sample_endpoint() {
    // The ConfigMap's data, written out as the kubelet mounts it, with the image's model folder
    // replaced by the repository's (the image copies models/ there).
    let text = std::fs::read_to_string(repo().join("deploy/kubernetes/configmap.yaml")).unwrap();
    let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let data = doc["data"].as_object().expect("ConfigMap data");
    assert!(data.contains_key("endpoint.yml"), "{data:?}");
    let dir = tempfile::tempdir().unwrap();
    let models = format!("{}/", repo().join("models").display());
    for (name, body) in data {
        let body = body.as_str().unwrap().replace("/var/azureml-app/azureml-models/", &models);
        std::fs::write(dir.path().join(name), body).unwrap();
    }
    let s = Server::start_with(&["--config-dir", dir.path().to_str().unwrap()]);
    s.wait_ready();
    let key = s.primary_key();
    let r = s.score_authed(&key, &sample_request(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("azureml-model-deployment"), Some("blue"));
    assert_model_1(&r.body);
    // green is loaded at 0 traffic, reachable when pinned: the first step of a rollout.
    let r = s.score_authed(&key, &sample_request(), Some("green"));
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn the_prebuilt_binary_is_what_image_sh_stages_and_the_context_keeps_it() {
    // scripts/image.sh (run by .ci/run) builds with `--build-arg BINARY=prebuilt`: the builder
    // stage then copies the host's binary from where the script stages it, the only thing under
    // target/ that .dockerignore lets into the build context; by default it compiles.
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    assert!(dockerfile.lines().any(|l| l == "ARG BINARY=cargo"), "the default build must compile");
    let run = dockerfile.lines().find(|l| l.contains("\"${BINARY}\" = prebuilt")).expect("the BINARY switch");
    let source = run.split("then cp ").nth(1).and_then(|r| r.split_whitespace().next()).expect("the staged path");
    assert!(dockerfile.contains("cargo build --release --locked --bin switchyard"));
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/"), "target/ stays out of the context");
    assert!(ignore.lines().any(|l| l == format!("!{source}")), ".dockerignore does not re-include {source}");
    let script = std::fs::read_to_string(repo().join("scripts/image.sh")).unwrap();
    assert!(script.contains(&format!("mv {source}.tmp {source}")), "scripts/image.sh does not stage {source}");
    assert!(script.contains("--build-arg BINARY=prebuilt") && script.contains("--pull-never"));
}
