//! Many endpoints in one server (CONTRACT §1): each with its own scoring URI, keys, traffic
//! and deployments, through the CLI, the scoring plane (`/endpoints/NAME/...`, `Host:
//! NAME.localhost`, the bare routes while one endpoint is left), a restart, `--config-dir`
//! folders and `--secrets-dir` files; and one endpoint under attack while the other serves.

use crate::common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Creates a deployment of a shipped model in endpoint `ep` with all its traffic, and waits
/// until it serves.
fn deploy_in(s: &Server, ep: &str, name: &str, model: &str, extra: Value) {
    let mut doc = json!({"name": name, "model": {"path": repo().join("models").join(model)}});
    json_patch::merge(&mut doc, &extra);
    let r = s.admin("PUT", &format!("/v1/endpoints/{ep}/deployments/{name}?all_traffic=true"), Some(&doc));
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    eventually(&format!("{ep}/{name} serves"), Duration::from_secs(60), || {
        let v = s.admin("GET", &format!("/v1/endpoints/{ep}/deployments/{name}?wait=10"), None).json();
        let traffic = s.admin("GET", &format!("/v1/endpoints/{ep}"), None).json()["traffic"][name].clone();
        match (v["provisioning_state"].as_str(), traffic.as_u64()) {
            (Some("Succeeded"), Some(100)) => Ok(()),
            (Some("Failed"), _) => panic!("{v}"),
            _ => Err(v.to_string()),
        }
    });
}

fn post(s: &Server, url: &str, key: &str, body: &[u8], host: Option<&str>) -> Reply {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("Content-Type", "application/json"), ("Authorization", auth.as_str())];
    if let Some(h) = host {
        headers.push(("Host", h));
    }
    http(&agent(), "POST", &format!("{}{url}", s.scoring), &headers, Some(body))
}

fn model_2_request() -> Vec<u8> {
    std::fs::read(repo().join("sample-requests/model-2.json")).unwrap()
}

#[test]
fn two_endpoints_side_by_side_through_the_cli_each_with_its_own_uri_and_keys() {
    let s = Server::start();
    for ep in ["ep-a", "ep-b"] {
        s.cli_ok(&["online-endpoint", "create", "-n", ep, "--auth-mode", "key"]);
    }
    deploy_in(&s, "ep-a", "blue", "model-1", json!({}));
    deploy_in(&s, "ep-b", "blue", "model-2", json!({}));

    // `list` in every output form.
    let list = s.cli_json(&["online-endpoint", "list", "-o", "json"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ep-a", "ep-b"]);
    for form in ["tsv", "table"] {
        let out = s.cli_ok(&["online-endpoint", "list", "-o", form]);
        assert!(out.contains("ep-a") && out.contains("ep-b"), "-o {form}: {out}");
    }

    // Each endpoint's scoring URI, from `show`, with its own key.
    let uri = |ep: &str| s.cli_ok(&["online-endpoint", "show", "-n", ep, "-o", "tsv", "--query", "scoring_uri"]);
    let (uri_a, uri_b) = (uri("ep-a").trim().to_string(), uri("ep-b").trim().to_string());
    assert_eq!(uri_a, format!("{}/endpoints/ep-a/score", s.scoring));
    let path = |uri: &str| uri.strip_prefix(&s.scoring).unwrap().to_string();
    let creds = |ep: &str| s.cli_json(&["online-endpoint", "get-credentials", "-n", ep])["primaryKey"].clone();
    let (key_a, key_b) = (creds("ep-a").as_str().unwrap().to_string(), creds("ep-b").as_str().unwrap().to_string());
    let r = post(&s, &path(&uri_a), &key_a, &sample_request(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_model_1(&r.body);
    let r = post(&s, &path(&uri_b), &key_b, &model_2_request(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("azureml-model-deployment"), Some("blue"));

    // A key of one endpoint never opens the other, either way.
    assert_eq!(post(&s, &path(&uri_a), &key_b, &sample_request(), None).status, 401);
    assert_eq!(post(&s, &path(&uri_b), &key_a, &model_2_request(), None).status, 401);
    let v2 = |ep: &str, key: &str| {
        let auth = format!("Bearer {key}");
        let url = format!("{}/endpoints/{ep}/v2/health/ready", s.scoring);
        http(&agent(), "GET", &url, &[("Authorization", auth.as_str())], None)
    };
    assert_eq!(v2("ep-b", &key_b).status, 200);
    assert_eq!(v2("ep-b", &key_a).status, 401);

    // Two endpoints: the bare route names both, with their URIs; the host name picks one.
    let bare = post(&s, "/score", &key_a, &sample_request(), None);
    assert_eq!(bare.status, 404);
    assert!(bare.message().contains(&uri_a) && bare.message().contains(&uri_b), "{}", bare.message());
    let by_host = post(&s, "/score", &key_b, &model_2_request(), Some("ep-b.localhost"));
    assert_eq!(by_host.status, 200, "{}", by_host.body);
    assert_eq!(post(&s, "/score", &key_a, &sample_request(), Some("ep-b.localhost")).status, 401);
    // The scoring document: each endpoint's; an unknown endpoint's, or the bare one with two
    // endpoints and no host to pick one, is 404 as `/score` there is.
    assert_eq!(s.get("/endpoints/ep-a/swagger.json").status, 200);
    assert_eq!(s.get("/endpoints/ep-c/swagger.json").status, 404);
    assert_eq!(s.get("/swagger.json").status, 404);
    let unknown = post(&s, "/endpoints/ep-c/score", &key_a, &sample_request(), None);
    assert_eq!(unknown.status, 404);
    assert!(unknown.message().contains("ep-c") && unknown.message().contains(&uri_a), "{}", unknown.message());

    // Python's urllib on a stock machine reaches the URI as it is.
    let script = "import json, sys, urllib.request\n\
        r = urllib.request.Request(sys.argv[1], data=open(sys.argv[3], 'rb').read(), \
        headers={'Content-Type': 'application/json', 'Authorization': 'Bearer ' + sys.argv[2]})\n\
        print(urllib.request.urlopen(r).read().decode())";
    let request = repo().join("sample-requests/model-1.json");
    let out = std::process::Command::new("python3")
        .args(["-c", script, &uri_a, &key_a, request.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_model_1(&String::from_utf8_lossy(&out.stdout));

    // The CLI's invoke goes to the endpoint named.
    let invoked = s.cli_ok(&["online-endpoint", "invoke", "-n", "ep-a", "--request-file", request.to_str().unwrap()]);
    assert_model_1(&invoked);
    // A name that does not exist is 404 naming the ones that do.
    let err = s.cli_err(&["online-endpoint", "show", "-n", "nope"]);
    assert!(err.contains("(ResourceNotFound)") && err.contains("\"ep-a\", \"ep-b\""), "{err}");
    // The one-endpoint routes name both.
    let r = s.admin("GET", "/v1/deployments", None);
    assert_eq!(r.status, 409);
    assert!(r.message().contains("ep-a, ep-b"), "{}", r.message());

    // Metrics carry the endpoint: the same deployment name in two endpoints is two series.
    let m = s.admin("GET", "/metrics", None).body;
    for ep in ["ep-a", "ep-b"] {
        let series =
            format!("switchyard_requests_total{{deployment=\"blue\",role=\"live\",code=\"200\",endpoint=\"{ep}\"}}");
        assert!(m.contains(&series), "{series} in\n{m}");
    }

    // Deleting one leaves the other as it was; the bare route serves the one left.
    s.cli_ok(&["online-endpoint", "delete", "-n", "ep-a", "--yes"]);
    assert_eq!(post(&s, &path(&uri_a), &key_a, &sample_request(), None).status, 404);
    assert_eq!(post(&s, &path(&uri_b), &key_b, &model_2_request(), None).status, 200);
    let bare = post(&s, "/score", &key_b, &model_2_request(), None);
    assert_eq!(bare.status, 200, "{}", bare.body);
    assert_eq!(s.get("/swagger.json").status, 200, "one endpoint left: the bare document again");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["name"], "ep-b");
}

#[test]
fn every_endpoint_comes_back_after_kill_9_with_its_own_keys() {
    let state = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let mut s = Server::start_with(&args);
    for ep in ["ep-a", "ep-b"] {
        assert_eq!(s.admin("PUT", &format!("/v1/endpoints/{ep}"), Some(&json!({}))).status, 201);
    }
    deploy_in(&s, "ep-a", "blue", "model-1", json!({}));
    deploy_in(&s, "ep-b", "green", "model-2", json!({}));
    let keys = [s.key_of("ep-a"), s.key_of("ep-b")];
    assert!(state.path().join("state.json").is_file() && state.path().join("endpoints/ep-b.json").is_file());
    s.kill9();
    let s = Server::start_with(&args);
    s.wait_ready();
    assert_eq!([s.key_of("ep-a"), s.key_of("ep-b")], keys, "each endpoint's own keys");
    eventually("both endpoints serve again", Duration::from_secs(60), || {
        let a = post(&s, "/endpoints/ep-a/score", &keys[0], &sample_request(), None);
        let b = post(&s, "/endpoints/ep-b/score", &keys[1], &model_2_request(), None);
        if (a.status, b.status) == (200, 200) {
            Ok(())
        } else {
            Err(format!("{} {}", a.body, b.body))
        }
    });
}

#[test]
fn a_config_dir_of_endpoint_folders_applies_each_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    for (ep, model) in [("ep-a", "model-1"), ("ep-b", "model-2")] {
        let folder = dir.path().join(ep);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(folder.join("endpoint.yml"), format!("name: {ep}\nauth_mode: key\ntraffic:\n  blue: 100\n"))
            .unwrap();
        let model = repo().join("models").join(model);
        std::fs::write(
            folder.join("blue.yml"),
            format!("name: blue\nendpoint_name: {ep}\nmodel:\n  path: {}\ninstance_count: 1\n", model.display()),
        )
        .unwrap();
    }
    let s = Server::start_with(&["--config-dir", dir.path().to_str().unwrap()]);
    // The folders are applied after the server starts: until an endpoint exists it has no key
    // (asked for then, `key_of` would fail the test on a slow machine instead of waiting).
    let key = |ep: &str| {
        let keys = s.admin("GET", &format!("/v1/endpoints/{ep}/keys"), None).json();
        keys["primaryKey"].as_str().map(str::to_string).ok_or_else(|| format!("{ep} has no keys yet: {keys}"))
    };
    eventually("both folders applied", Duration::from_secs(60), || {
        let a = post(&s, "/endpoints/ep-a/score", &key("ep-a")?, &sample_request(), None);
        let b = post(&s, "/endpoints/ep-b/score", &key("ep-b")?, &model_2_request(), None);
        if (a.status, b.status) == (200, 200) {
            Ok(())
        } else {
            Err(format!("{} {}", a.body, b.body))
        }
    });
    // A bad edit in one folder is refused there and shown on that endpoint only.
    std::fs::write(dir.path().join("ep-a/endpoint.yml"), "name: ep-a\ntraffic:\n  blue: 150\n").unwrap();
    eventually("ep-a shows the refusal", Duration::from_secs(30), || {
        let shown = s.admin("GET", "/v1/endpoints/ep-a", None).json();
        match shown["config_dir"]["last_error"].as_str() {
            Some(e) if e.contains("150") => Ok(()),
            _ => Err(shown.to_string()),
        }
    });
    let b = s.admin("GET", "/v1/endpoints/ep-b", None).json();
    assert!(b["config_dir"]["last_error"].is_null(), "{b}");
    assert!(b["config_dir"]["path"].as_str().unwrap().ends_with("ep-b"), "{b}");
    assert_eq!(post(&s, "/endpoints/ep-a/score", &s.key_of("ep-a"), &sample_request(), None).status, 200);
}

#[test]
fn secrets_dir_files_of_an_endpoint_give_it_keys_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("primary-key", "shared-primary-0123456789abcdef0123"),
        ("secondary-key", "shared-secondary-0123456789abcdef01"),
        ("token-signing-key", "shared-signing-0123456789abcdef0123"),
        ("ep-a.primary-key", "a-own-primary-0123456789abcdef01234"),
        ("ep-a.secondary-key", "a-own-secondary-0123456789abcdef012"),
        ("ep-a.token-signing-key", "a-own-signing-0123456789abcdef01234"),
    ];
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let s = Server::start_with(&["--secrets-dir", dir.path().to_str().unwrap()]);
    for ep in ["ep-a", "ep-b"] {
        assert_eq!(s.admin("PUT", &format!("/v1/endpoints/{ep}"), Some(&json!({}))).status, 201);
    }
    deploy_in(&s, "ep-a", "blue", "model-1", json!({}));
    deploy_in(&s, "ep-b", "blue", "model-1", json!({}));
    let (own, shared) = (files[3].1, files[0].1);
    assert_eq!(s.key_of("ep-a"), own);
    assert_eq!(s.key_of("ep-b"), shared);
    assert_eq!(post(&s, "/endpoints/ep-a/score", own, &sample_request(), None).status, 200);
    assert_eq!(post(&s, "/endpoints/ep-a/score", shared, &sample_request(), None).status, 401);
    assert_eq!(post(&s, "/endpoints/ep-b/score", own, &sample_request(), None).status, 401);
    assert_eq!(post(&s, "/endpoints/ep-b/score", shared, &sample_request(), None).status, 200);
}

/// A score.py whose run kills its own worker process.
fn crashing_script() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("code")).unwrap();
    std::fs::write(
        dir.path().join("code/score.py"),
        "import os\n\ndef init():\n    pass\n\ndef run(raw):\n    os._exit(3)\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("model.txt"), "none").unwrap();
    dir
}

/// Endpoint `noisy` is flooded past its admission limit (429s), its score.py crashes on every
/// request and a rollout on it rolls back, while endpoint `quiet` serves steady load: not one
/// of quiet's requests fails, and its p99 stays far below what sharing anything with noisy
/// would cost (noisy's slow requests take 400 ms each).
#[test]
fn a_flooded_and_crashing_endpoint_does_not_touch_the_other() {
    let s = Arc::new(Server::start_with(&["--python", &test_venv_python()]));
    for ep in ["quiet", "noisy"] {
        assert_eq!(s.admin("PUT", &format!("/v1/endpoints/{ep}"), Some(&json!({}))).status, 201);
    }
    deploy_in(&s, "quiet", "blue", "model-1", json!({}));
    deploy_in(
        &s,
        "noisy",
        "slow",
        "test/slow",
        json!({"request_settings": {"max_concurrent_requests_per_instance": 1}}),
    );
    let crash = crashing_script();
    let doc = json!({"model": {"path": crash.path().join("model.txt")},
        "code_configuration": {"code": crash.path().join("code"), "scoring_script": "score.py"}});
    assert_eq!(s.admin("PUT", "/v1/endpoints/noisy/deployments/crashy", Some(&doc)).status, 201);
    s.wait_state_in("noisy", "crashy", "Succeeded");
    let (quiet_key, noisy_key) = (s.key_of("quiet"), s.key_of("noisy"));

    // A rollout on noisy to the crashing deployment (while it still has an instance), judged
    // on its errors: once the attack sends it traffic it rolls back.
    let plan =
        json!({"to": "crashy", "steps": "50,100", "step_duration": "2s", "min_requests": 1, "max_error_rate": 0.01});
    let started = s.admin("POST", "/v1/endpoints/noisy/rollout", Some(&plan));
    assert_eq!(started.status, 201, "{}", started.body);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let quiet: Vec<_> = (0..2)
        .map(|_| {
            let (s, key, stop, latencies, failures) =
                (s.clone(), quiet_key.clone(), stop.clone(), latencies.clone(), failures.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = post(&s, "/endpoints/quiet/score", &key, &sample_request(), None);
                    latencies.lock().unwrap().push(t.elapsed());
                    if r.status != 200 {
                        failures.lock().unwrap().push(format!("{} {}", r.status, r.body));
                    }
                }
            })
        })
        .collect();
    let statuses = Arc::new(Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let attackers: Vec<_> = (0..8)
        .map(|i| {
            let (s, key, stop, statuses) = (s.clone(), noisy_key.clone(), stop.clone(), statuses.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = if i % 2 == 0 {
                        post(&s, "/endpoints/noisy/score", &key, &body_with_x00(400.0), None)
                    } else {
                        let auth = format!("Bearer {key}");
                        let headers = [
                            ("Content-Type", "application/json"),
                            ("Authorization", auth.as_str()),
                            ("azureml-model-deployment", "crashy"),
                        ];
                        http(&agent(), "POST", &format!("{}/endpoints/noisy/score", s.scoring), &headers, Some(b"{}"))
                    };
                    *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                }
            })
        })
        .collect();
    eventually("noisy's rollout rolls back", Duration::from_secs(60), || {
        let shown = s.admin("GET", "/v1/endpoints/noisy/rollout", None).json();
        match shown["status"].as_str() {
            Some("rolled_back") => Ok(()),
            _ => Err(shown["status"].to_string()),
        }
    });
    eventually("noisy refused some with 429", Duration::from_secs(30), || {
        let seen = statuses.lock().unwrap().clone();
        if seen.get(&429).copied().unwrap_or(0) > 0 {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    stop.store(true, Ordering::Relaxed);
    for t in quiet.into_iter().chain(attackers) {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "quiet failed {} requests: {:?}", failures.len(), &failures[..failures.len().min(5)]);
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort();
    assert!(latencies.len() >= 50, "quiet answered only {}", latencies.len());
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(p99 < Duration::from_millis(200), "quiet's p99 {p99:?} (noisy's slow runs take 400 ms)");
    assert_eq!(s.admin("GET", "/v1/endpoints/quiet", None).json()["traffic"]["blue"], 100);
}
