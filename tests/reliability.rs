//! Failed updates, restarts and deletes that must never take down what serves (issue 9 items
//! 1, 2, 3, 7 and the state-file rules of item 8). Each test failed before its fix.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn model(name: &str) -> String {
    path_str(&repo().join("models").join(name))
}

/// Blue serving with all traffic.
fn blue_serving(s: &Server) -> String {
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
    key
}

fn patch(s: &Server, name: &str, body: Value) -> Reply {
    s.admin("PATCH", &format!("/v1/deployments/{name}"), Some(&body))
}

/// Waits until the deployment has no operation in progress; returns its view.
fn settle(s: &Server, name: &str) -> Value {
    eventually(&format!("{name} settled"), Duration::from_secs(60), || {
        let v = s.admin("GET", &format!("/v1/deployments/{name}?wait=10"), None).json();
        if v["provisioning_state"] == "Succeeded" || v["provisioning_state"] == "Failed" {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
}

#[test]
fn a_failed_replacement_then_a_scale_keeps_the_old_version_serving() {
    let s = Server::start();
    let key = blue_serving(&s);
    let broken = broken_model_dir();
    let r = patch(&s, "blue", json!({"model": {"path": path_str(broken.path())}, "instance_count": 3}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = settle(&s, "blue");
    assert_eq!(v["provisioning_state"], "Failed", "{v}");
    assert_eq!(v["instance_count"], 1, "the spec is what serves: {v}");
    assert_eq!(v["model"]["path"], model("model-1"), "{v}");
    assert_eq!(v["last_failed_update"]["instance_count"], 3, "{v}");
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);

    // The defect: this scale was computed from the failed spec (3 -> 2 drained the only one).
    let r = patch(&s, "blue", json!({"instance_count": 2}));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = settle(&s, "blue");
    assert_eq!(v["provisioning_state"], "Succeeded", "{v}");
    assert_eq!(v["instances"]["ready"], 2, "{v}");
    assert_eq!(s.get("/health/ready").status, 200);
    for _ in 0..5 {
        assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
    }
}

#[test]
fn a_failed_scale_up_records_what_serves_and_the_next_scale_starts_from_it() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("model.onnx");
    std::fs::copy(repo().join("models/model-1/model.onnx"), &file).unwrap();
    s.create_endpoint();
    let r = s.admin("PUT", "/v1/deployments/blue", Some(&json!({"name": "blue", "model": {"path": path_str(&file)}})));
    assert_eq!(r.status, 201, "{}", r.body);
    s.wait_state("blue", "Succeeded");
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();

    std::fs::remove_file(&file).unwrap();
    assert_eq!(patch(&s, "blue", json!({"instance_count": 3})).status, 200);
    let v = settle(&s, "blue");
    assert_eq!(v["provisioning_state"], "Failed", "{v}");
    assert_eq!(v["instance_count"], 1, "the count that serves: {v}");
    assert_eq!(v["last_failed_update"]["instance_count"], 3, "{v}");
    assert!(v["error"].as_str().unwrap().contains("1 instance(s) keep serving"), "{v}");
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);

    std::fs::copy(repo().join("models/model-1/model.onnx"), &file).unwrap();
    assert_eq!(patch(&s, "blue", json!({"instance_count": 2})).status, 200);
    let v = settle(&s, "blue");
    assert_eq!(v["provisioning_state"], "Succeeded", "{v}");
    assert_eq!(v["instances"]["ready"], 2, "{v}");
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
}

#[test]
fn a_failed_update_is_not_what_a_restart_brings_back() {
    let state = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let mut s = Server::start_with(&args);
    blue_serving(&s);
    let broken = broken_model_dir();
    assert_eq!(patch(&s, "blue", json!({"model": {"path": path_str(broken.path())}})).status, 200);
    assert_eq!(settle(&s, "blue")["provisioning_state"], "Failed");
    assert!(s.terminate().success());

    let s = Server::start_with(&args);
    s.wait_ready();
    let v = s.wait_state("blue", "Succeeded");
    assert_eq!(v["model"]["path"], model("model-1"), "the version that served came back: {v}");
    assert!(v["last_failed_update"]["error"].as_str().is_some(), "the failure is still shown: {v}");
    let key = s.primary_key();
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
}

#[test]
fn a_replacement_acknowledged_before_a_restart_still_happens_after_it() {
    let state = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let mut s = Server::start_with(&args);
    blue_serving(&s);
    // Many instances of model-2 take a while to load: SIGKILL lands while it loads.
    let r = patch(&s, "blue", json!({"model": {"path": model("model-2")}, "instance_count": 64}));
    assert_eq!(r.status, 200, "{}", r.body);
    s.kill9();

    let s = Server::start_with(&args);
    s.wait_ready();
    let key = s.primary_key();
    // Whether or not the replacement had finished, something serves at once...
    assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    // ...and the acknowledged replacement ends up serving.
    let v = eventually("the replacement serves", Duration::from_secs(120), || {
        let v = s.admin("GET", "/v1/deployments/blue?wait=10", None).json();
        assert_ne!(v["provisioning_state"], "Failed", "{v}");
        if v["provisioning_state"] == "Succeeded" && v["model"]["path"] == model("model-2") {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    });
    assert_eq!(v["instances"]["ready"], 64, "{v}");
}

#[test]
fn restore_publishes_traffic_before_deployments_without_traffic_are_loaded() {
    let state = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let mut s = Server::start_with(&args);
    blue_serving(&s);
    // A 0% deployment that takes much longer to load than blue.
    s.deploy("green", "model-2", json!({"instance_count": 128}));
    assert!(s.terminate().success());

    let s = Server::start_with(&args);
    let started = Instant::now();
    s.wait_ready();
    let ready_after = started.elapsed();
    let green = s.admin("GET", "/v1/deployments/green", None).json();
    let key = s.primary_key();
    assert_model_1(&s.score_authed(&key, &sample_request(), None).body);
    let green_done = s.wait_state("green", "Succeeded");
    let green_after = started.elapsed();
    eprintln!("restore: ready after {ready_after:?}, green (128 instances, 0%) loaded after {green_after:?}");
    assert_ne!(green["provisioning_state"], "Succeeded", "green was still loading when traffic went live: {green}");
    assert_eq!(green_done["instances"]["ready"], 128);
}

/// Threads of the server process whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(Result::ok)
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
        .count()
}

#[test]
fn deleting_a_deployment_stops_its_loads_and_loads_are_bounded() {
    let s = Server::start();
    s.create_endpoint();
    // ONNX Runtime's own threads, started by the first load, inherit the loader's name.
    s.deploy("blue", "model-1", json!({}));
    let pid = s.pid();
    let baseline = threads_named(pid, "switchyard-load");
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(threads_named(pid, "switchyard-load"), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    for _ in 0..8 {
        let doc = json!({"name": "big", "model": {"path": model("model-2")}, "instance_count": 256});
        assert_eq!(s.admin("PUT", "/v1/deployments/big", Some(&doc)).status, 201);
        assert_eq!(s.admin("DELETE", "/v1/deployments/big", None).status, 200);
    }
    let deleted = Instant::now();
    // Loads stop within a few loads' time, not after 2,048 of them.
    eventually("the loads of deleted deployments stopped", Duration::from_secs(10), || {
        match threads_named(pid, "switchyard-load") {
            n if n <= baseline => Ok(()),
            n => Err(format!("{n} loader threads")),
        }
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let slots = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 16);
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("peak loader threads {peak} (slots {slots}); loads gone {:?} after the last delete", deleted.elapsed());
    // Each load slot's thread, plus the short-lived threads that drop unloaded instances.
    assert!(peak <= baseline + 2 * slots + 2, "{peak} loader threads at once: loads are not bounded");
    // The server is fine afterwards.
    s.deploy("green", "model-2", json!({}));
}

/// Starts `serve` on a state folder expected to be refused; returns its stderr.
fn refused_start(state: &std::path::Path) -> String {
    let mut child = Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--state-dir", state.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server started on a broken state");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_saved_state_that_breaks_a_rule_stops_the_start_and_names_the_rule() {
    let state = tempfile::tempdir().unwrap();
    let mut s = Server::start_with(&["--state-dir", state.path().to_str().unwrap()]);
    blue_serving(&s);
    s.deploy("green", "model-2", json!({}));
    assert!(s.terminate().success());
    let file = state.path().join("state.json");
    let good: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    type Breakage = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Breakage)> = vec![
        ("from 0 to 100", Box::new(|d| d["endpoint"]["spec"]["traffic"]["blue"] = json!(150))),
        ("instance_count must be from 1 to 256", Box::new(|d| d["deployments"][0]["instance_count"] = json!(300))),
        (
            "request_timeout_ms must be from 1 to 180000",
            Box::new(|d| d["deployments"][0]["request_settings"]["request_timeout_ms"] = json!(0)),
        ),
        ("live traffic", Box::new(|d| d["endpoint"]["spec"]["mirror_traffic"] = json!({"blue": 50}))),
        ("at most 50", Box::new(|d| d["endpoint"]["spec"]["mirror_traffic"] = json!({"green": 100}))),
        ("deployment name", Box::new(|d| d["deployments"][1]["name"] = json!("gr\u{1b}[31meen"))),
    ];
    for (rule, break_it) in cases {
        let mut doc = good.clone();
        break_it(&mut doc);
        let text = serde_json::to_vec_pretty(&doc).unwrap();
        std::fs::write(&file, &text).unwrap();
        let err = refused_start(state.path());
        assert!(err.contains("breaks a rule"), "{rule}: {err}");
        assert!(err.to_lowercase().contains(&rule.to_lowercase()), "the message names the rule ({rule}): {err}");
        assert_eq!(std::fs::read(&file).unwrap(), text, "the file is left as it is");
    }
    // The good state still starts.
    std::fs::write(&file, serde_json::to_vec_pretty(&good).unwrap()).unwrap();
    let s = Server::start_with(&["--state-dir", state.path().to_str().unwrap()]);
    s.wait_ready();
}

#[test]
fn concurrent_patches_never_lose_each_others_fields() {
    let s = std::sync::Arc::new(Server::start());
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || {
                for round in 0..5 {
                    let r = patch(&s, "blue", json!({"tags": {format!("writer{i}"): format!("round{round}")}}));
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().unwrap());
    let tags = s.admin("GET", "/v1/deployments/blue", None).json()["tags"].clone();
    for i in 0..16 {
        assert_eq!(tags[format!("writer{i}")], "round4", "writer {i}'s last patch is kept: {tags}");
    }
}

/// Blue (model-1) and green (a copy of model-1 in `models`, which the test can remove) both
/// Succeeded.
fn blue_and_removable_green(s: &Server, models: &std::path::Path) {
    std::fs::create_dir_all(models.join("green")).unwrap();
    std::fs::copy(repo().join("models/model-1/model.onnx"), models.join("green/model.onnx")).unwrap();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    let green = json!({"name": "green", "model": {"path": path_str(&models.join("green"))}});
    assert_eq!(s.admin("PUT", "/v1/deployments/green", Some(&green)).status, 201);
    s.wait_state("green", "Succeeded");
}

#[test]
fn a_restart_moves_the_traffic_of_a_deployment_that_no_longer_loads_and_readiness_is_honest() {
    let state = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let mut s = Server::start_with(&args);
    blue_and_removable_green(&s, models.path());
    assert_eq!(s.set_traffic(json!({"blue": 50, "green": 50})).status, 200);
    assert!(s.terminate().success());
    std::fs::remove_dir_all(models.path().join("green")).unwrap();

    let s = Server::start_with(&args);
    s.wait_ready();
    assert_eq!(s.wait_state("green", "Failed")["provisioning_state"], "Failed");
    // The defect: green kept 50% and half the requests were 503 while readiness said 200.
    let ep = s.admin("GET", "/v1/endpoint", None).json();
    assert_eq!(ep["traffic"], json!({"blue": 100, "green": 0}), "{ep}");
    let key = s.primary_key();
    for _ in 0..20 {
        let r = s.score_authed(&key, &sample_request(), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let logs = s.admin("GET", "/v1/deployments/green/logs?lines=50", None).body;
    assert!(logs.contains("50% of live traffic moved to the others: now blue=100"), "{logs}");
}

#[test]
fn a_rollout_whose_target_no_longer_loads_after_a_restart_rolls_back_at_once() {
    let state = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let mut s = Server::start_with(&args);
    blue_and_removable_green(&s, models.path());
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let plan = json!({"to": "green", "steps": "10,100", "step_duration": "600s"});
    assert_eq!(s.admin("POST", "/v1/endpoint/rollout", Some(&plan)).status, 201);
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 90, "green": 10}));
    assert!(s.terminate().success());
    std::fs::remove_dir_all(models.path().join("green")).unwrap();

    let s = Server::start_with(&args);
    s.wait_ready();
    // The defect: the rollout resumed onto the failed target (and 10% of requests were 503).
    let show = s.admin("GET", "/v1/endpoint/rollout", None).json();
    assert_eq!(show["status"], "rolled_back", "{show}");
    assert_eq!(show["rollback"]["gate"], "target_failed", "{show}");
    assert!(show["rollback"]["message"].as_str().unwrap().contains("green failed to load"), "{show}");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 100, "green": 0}));
    let key = s.primary_key();
    for _ in 0..20 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
}

/// Starts a rollout to blue (steps 10, 50, 100, a week each), stops the server, takes green's
/// model away and starts again on the same arguments: the restore finds green unloadable.
fn restart_mid_rollout_to_blue_without_green(mut s: Server, models: &std::path::Path, args: &[&str]) -> Server {
    let plan = json!({"to": "blue", "steps": "10,50,100", "step_duration": "7d"});
    assert_eq!(s.admin("POST", "/v1/endpoint/rollout", Some(&plan)).status, 201);
    assert!(s.terminate().success());
    std::fs::remove_dir_all(models.join("green")).unwrap();
    let s = Server::start_with(args);
    s.wait_ready();
    s.wait_state("green", "Failed");
    s
}

#[test]
fn a_rollout_whose_source_no_longer_loads_after_a_restart_ends_and_nothing_is_stuck() {
    let state = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let s = Server::start_with(&args);
    blue_and_removable_green(&s, models.path());
    // The rollout moves traffic FROM green (the one whose model goes away) to blue.
    assert_eq!(s.set_traffic(json!({"green": 100})).status, 200);
    let s = restart_mid_rollout_to_blue_without_green(s, models.path(), &args);
    // The defect: the rollout stayed `running` (blue at 100% at step "10", no gate judged) and
    // abort, PATCH and DELETE were all refused with 409.
    let show = s.admin("GET", "/v1/endpoint/rollout", None).json();
    assert_eq!(show["status"], "aborted", "{show}");
    assert!(events(&show).iter().any(|e| e.contains("green failed to load")), "{show}");
    assert_eq!(share(&s, "blue"), 100);
    assert_eq!(share(&s, "green"), 0);
    let key = s.primary_key();
    for _ in 0..10 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let r = s.admin("DELETE", "/v1/deployments/green", None);
    assert!(r.status < 300, "{} {}", r.status, r.body);
}

#[test]
fn abort_always_succeeds_and_leaves_out_a_source_that_failed() {
    let state = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let args = ["--state-dir", state.path().to_str().unwrap()];
    let s = Server::start_with(&args);
    blue_and_removable_green(&s, models.path());
    s.deploy("red", "model-1", json!({}));
    // Sources: green (its model goes away) and red; target: blue.
    assert_eq!(s.set_traffic(json!({"green": 50, "red": 50})).status, 200);
    let s = restart_mid_rollout_to_blue_without_green(s, models.path(), &args);
    let show = s.admin("GET", "/v1/endpoint/rollout", None).json();
    assert_eq!(show["status"], "aborted", "{show}");
    // The last good split without the failed source: red carries what green had.
    assert_eq!((share(&s, "red"), share(&s, "green"), share(&s, "blue")), (100, 0, 0));
    // A new rollout can start, and its abort goes back to where it started.
    let plan = json!({"to": "blue", "steps": "10,100", "step_duration": "7d"});
    let r = s.admin("POST", "/v1/endpoint/rollout", Some(&plan));
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s.admin("POST", "/v1/endpoint/rollout/abort", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(share(&s, "red"), 100);
}

/// A deployment's live share (0 when absent).
fn share(s: &Server, name: &str) -> u64 {
    s.admin("GET", "/v1/endpoint", None).json()["traffic"][name].as_u64().unwrap_or(0)
}

fn events(show: &Value) -> Vec<String> {
    show["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}
