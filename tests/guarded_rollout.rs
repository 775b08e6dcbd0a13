//! `online-endpoint rollout`: a guarded progressive rollout that rolls itself back, and sticky
//! assignment by header hash. Real servers, real models (`models/test/fail` fails on x00 >= 2,
//! `models/test/slow` takes about x00 ms), real load; step windows are sub-second so the suite
//! stays fast.

use crate::common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Waits until the rollout's status is `status` (failing after `limit`), returning `show`.
fn wait_rollout(s: &Server, status: &str, limit: Duration) -> Value {
    eventually(&format!("the rollout is {status}"), limit, || {
        let r = s.admin("GET", "/v1/endpoint/rollout", None);
        if r.status == 200 && r.json()["status"] == status {
            Ok(r.json())
        } else {
            Err(r.body)
        }
    })
}

/// Waits until the rollout's current step is `index`.
fn wait_step(s: &Server, index: u64) {
    eventually(&format!("the rollout reaches step index {index}"), Duration::from_secs(30), || {
        let show = s.admin("GET", "/v1/endpoint/rollout", None).json();
        if show["step"]["index"] == index {
            Ok(())
        } else {
            Err(show.to_string())
        }
    });
}

fn events(show: &Value) -> Vec<String> {
    show["events"].as_array().unwrap().iter().map(|e| e["message"].as_str().unwrap().to_string()).collect()
}

fn blue_green(s: &Server, green_model: &str) {
    s.create_endpoint();
    let roomy = json!({"request_settings": {"max_concurrent_requests_per_instance": 16}});
    s.deploy("blue", "model-1", roomy.clone());
    s.deploy("green", green_model, roomy);
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
}

#[test]
fn a_healthy_green_reaches_100_under_load_with_no_failed_request() {
    let s = Arc::new(Server::start());
    blue_green(&s, "model-1");
    let key = s.primary_key();
    let load = Load::start(&s, 6, &key, sample_request());

    // Plans that break a rule change nothing.
    let bad = s.cli_err(&["online-endpoint", "rollout", "--to", "green", "--steps", "10,25", "--step-duration", "1s"]);
    assert!(bad.contains("end with 100"), "{bad}");
    let bad = s.cli_err(&["online-endpoint", "rollout", "--to", "red", "--steps", "100", "--step-duration", "1s"]);
    assert!(bad.contains("does not exist"), "{bad}");
    assert_eq!(s.admin("GET", "/v1/endpoint/rollout", None).status, 404);

    let started = s.cli_json(&[
        "online-endpoint",
        "rollout",
        "--to",
        "green",
        "--steps",
        "mirror:20,10,50,100",
        "--step-duration",
        "400ms",
        "--min-requests",
        "10",
        "--max-error-rate",
        "0",
        "--max-p99-ms",
        "2000",
        "--min-agreement",
        "0.99",
    ]);
    assert_eq!(started["status"], "running");
    assert_eq!(started["step"]["step"], "mirror:20");
    assert_eq!(started["step"]["mirror_traffic"], json!({"green": 20}));

    // While it runs, it owns the traffic: another change, another rollout, deleting the
    // target are refused and change nothing.
    let r = s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"green": 0}})));
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.message().contains("abort the rollout"), "{}", r.body);
    let r =
        s.admin("POST", "/v1/endpoint/rollout", Some(&json!({"to": "green", "steps": "100", "step_duration": "1s"})));
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(s.admin("DELETE", "/v1/deployments/green", None).status, 409);
    let shown = s.cli_json(&["online-endpoint", "rollout", "show"]);
    assert!(shown["step"]["remaining_ms"].as_u64().is_some(), "{shown}");
    assert!(shown["step"]["gates"]["requests"].is_u64(), "{shown}");

    let done = wait_rollout(&s, "succeeded", Duration::from_secs(60));
    let report = load.stop();
    assert_eq!(report.ok, report.total, "every request answered 200: {:?}", report.failures);
    let passed: Vec<&str> = done["passed"].as_array().unwrap().iter().map(|p| p["step"].as_str().unwrap()).collect();
    assert_eq!(passed, ["mirror:20", "10", "50", "100"]);
    let mirror_gates = &done["passed"][0]["gates"];
    assert!(mirror_gates["agreement"].as_f64().unwrap() >= 0.99, "{mirror_gates}");
    assert!(mirror_gates["requests"].as_u64().unwrap() >= 10, "{mirror_gates}");
    // Measured even where not gated (a ratio gate on two equal models would only test noise).
    assert!(done["passed"][1]["gates"]["p99_ratio"].as_f64().is_some(), "{done}");
    assert!(events(&done).iter().any(|e| e.starts_with("succeeded")), "{done}");
    let ep = s.admin("GET", "/v1/endpoint", None).json();
    assert_eq!(ep["traffic"], json!({"blue": 0, "green": 100}));
    assert_eq!(ep["mirror_traffic"], json!({}));
    assert_eq!(ep["rollout_status"]["status"], "succeeded");
    // Over: pause/abort have nothing to act on.
    assert_eq!(s.admin("POST", "/v1/endpoint/rollout/pause", None).status, 409);
}

#[test]
fn a_failing_green_rolls_back_within_one_window_with_the_reason_on_record() {
    let s = Arc::new(Server::start());
    blue_green(&s, "test/fail");
    let key = s.primary_key();
    // x00 = 5: model-1 (blue) answers; test/fail (green) fails every request.
    let load = Load::start(&s, 6, &key, body_with_x00(5.0));
    load.wait_for_more(50);
    let started = s.admin(
        "POST",
        "/v1/endpoint/rollout",
        Some(&json!({"to": "green", "steps": "10,50,100", "step_duration": "500ms", "min_requests": 5})),
    );
    assert_eq!(started.status, 201, "{}", started.body);
    let show = wait_rollout(&s, "rolled_back", Duration::from_secs(30));
    let at_rollback = load.sent();
    load.wait_for_more(300);
    let report = load.stop();

    let rollback = &show["rollback"];
    assert_eq!(rollback["gate"], "error_rate", "{show}");
    assert_eq!(rollback["step"], "10");
    assert_eq!(rollback["value"], 1.0);
    assert_eq!(rollback["limit"], 0.01);
    assert_eq!(rollback["traffic"], json!({"blue": 100, "green": 0}));
    assert!(show["passed"].as_array().unwrap().is_empty());
    assert!(events(&show).iter().any(|e| e.starts_with("rolled back to blue=100")), "{show}");
    let ep = s.admin("GET", "/v1/endpoint", None).json();
    assert_eq!(ep["traffic"], json!({"blue": 100, "green": 0}));
    // Clients saw green's errors for one window at 10%, nothing after.
    let errors = report.total - report.ok;
    assert!(errors > 0, "green served and failed during its step");
    assert!(
        (errors as f64) < 0.2 * at_rollback as f64,
        "{errors} errors of {at_rollback} requests sent before the rollback: more than one 10% window's share"
    );
    assert!(report.statuses.keys().all(|c| *c == 200 || *c == 424), "{:?}", report.statuses);
    let logs = s.cli_ok(&["online-deployment", "get-logs", "-n", "green", "--lines", "1000"]);
    assert!(logs.contains("ROLLOUT rolled back to blue=100: gate error_rate failed"), "{logs}");
    let metrics = s.admin("GET", "/metrics", None).body;
    assert!(
        metrics.contains(
            "switchyard_rollout_rollbacks_total{deployment=\"green\",gate=\"error_rate\",endpoint=\"my-endpoint\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn a_slow_green_rolls_back_on_p99_absolute_and_relative() {
    let s = Arc::new(Server::start());
    blue_green(&s, "test/slow");
    let key = s.primary_key();
    // test/slow takes about 30 ms at x00 = 30; model-1 well under 1 ms.
    let load = Load::start(&s, 4, &key, body_with_x00(30.0));
    let plan = |gate: Value| {
        let mut p = json!({"to": "green", "steps": "25,100", "step_duration": "400ms", "min_requests": 5});
        for (k, v) in gate.as_object().unwrap() {
            p[k] = v.clone();
        }
        let r = s.admin("POST", "/v1/endpoint/rollout", Some(&p));
        assert_eq!(r.status, 201, "{}", r.body);
        wait_rollout(&s, "rolled_back", Duration::from_secs(30))
    };
    let show = plan(json!({"max_p99_ms": 10}));
    assert_eq!(show["rollback"]["gate"], "p99_ms", "{show}");
    assert!(show["rollback"]["value"].as_f64().unwrap() > 10.0, "{show}");
    // A finished rollout does not stop the next one.
    let show = plan(json!({"max_p99_ratio": 3}));
    assert_eq!(show["rollback"]["gate"], "p99_ratio", "{show}");
    let gates = &show["rollback"];
    assert!(gates["value"].as_f64().unwrap() > 3.0, "{show}");
    load.stop();
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 100, "green": 0}));
}

#[test]
fn pause_resume_abort() {
    let s = Arc::new(Server::start());
    blue_green(&s, "model-1");
    let r = s.admin(
        "POST",
        "/v1/endpoint/rollout",
        Some(&json!({"to": "green", "steps": "10,25,100", "step_duration": "300ms", "min_requests": 1})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let paused = s.cli_json(&["online-endpoint", "rollout", "pause"]);
    assert_eq!(paused["status"], "paused");
    assert_eq!(s.admin("POST", "/v1/endpoint/rollout/pause", None).status, 409, "already paused");
    let key = s.primary_key();
    let load = Load::start(&s, 2, &key, sample_request());
    load.wait_for_more(100);
    // Paused: no step was judged however long the window and however many requests.
    let show = s.admin("GET", "/v1/endpoint/rollout", None).json();
    assert_eq!(show["status"], "paused");
    assert_eq!(show["step"]["index"], 0);
    assert_eq!(s.cli_json(&["online-endpoint", "rollout", "resume"])["status"], "running");
    wait_step(&s, 1);
    let aborted = s.cli_json(&["online-endpoint", "rollout", "abort"]);
    load.stop();
    assert_eq!(aborted["status"], "aborted");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 100, "green": 0}));
    assert!(s.cli_err(&["online-endpoint", "rollout", "frobnicate"]).contains("frobnicate"));
}

#[test]
fn a_restart_in_the_middle_resumes_the_current_step() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap().to_string();
    let mut s = Arc::new(Server::start_with(&["--state-dir", &state]));
    blue_green(&s, "model-1");
    let key = s.primary_key();
    let load = Load::start(&s, 4, &key, sample_request());
    let r = s.admin(
        "POST",
        "/v1/endpoint/rollout",
        Some(&json!({"to": "green", "steps": "10,25,50,100", "step_duration": "600ms", "min_requests": 5})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_step(&s, 1);
    // SIGKILL: nothing is saved on the way out; what was acknowledged is already on disk.
    drop(load.stop());
    Arc::get_mut(&mut s).expect("the load holds no more clones once stopped").kill9();
    let s = Arc::new(Server::start_with(&["--state-dir", &state]));
    s.wait_ready();
    let show = s.admin("GET", "/v1/endpoint/rollout", None).json();
    assert_eq!(show["status"], "running", "{show}");
    let index = show["step"]["index"].as_u64().unwrap();
    assert!(index >= 1, "resumed where it was, not from the start: {show}");
    assert!(show["passed"][0]["step"] == "10", "{show}");
    let ep = s.admin("GET", "/v1/endpoint", None).json();
    assert_eq!(ep["traffic"], show["step"]["traffic"], "the saved split is the one restored");
    assert!(events(&show).iter().any(|e| e.starts_with("resumed after a restart")), "{show}");
    let load = Load::start(&s, 4, &key, sample_request());
    wait_rollout(&s, "succeeded", Duration::from_secs(60));
    let report = load.stop();
    assert_eq!(report.ok, report.total, "{:?}", report.failures);
}

#[test]
fn a_rollout_in_endpoint_yml_runs_and_is_never_written_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let deployment = |name: &str| {
        format!(
            "name: {name}\nendpoint_name: my-endpoint\nmodel:\n  path: {}\ninstance_count: 1\nrequest_settings:\n  max_concurrent_requests_per_instance: 8\n",
            repo().join("models/model-1").display()
        )
    };
    std::fs::write(d.join("blue.yml"), deployment("blue")).unwrap();
    std::fs::write(d.join("green.yml"), deployment("green")).unwrap();
    let endpoint = "name: my-endpoint\nauth_mode: key\ntraffic:\n  blue: 100\nrollout:\n  to: green\n  steps: 10,50,100\n  step_duration: 300ms\n  min_requests: 5\n";
    std::fs::write(d.join("endpoint.yml"), endpoint).unwrap();
    let s = Arc::new(Server::start_with(&["--config-dir", d.to_str().unwrap()]));
    s.wait_ready();
    let key = eventually("keys", Duration::from_secs(20), || {
        let r = s.admin("GET", "/v1/endpoint/keys", None);
        if r.status == 200 {
            Ok(r.json()["primaryKey"].as_str().unwrap().to_string())
        } else {
            Err(r.body)
        }
    });
    let load = Load::start(&s, 4, &key, sample_request());
    let show = wait_rollout(&s, "succeeded", Duration::from_secs(60));
    load.stop();
    assert_eq!(show["source"], "config_dir");
    let ep = s.admin("GET", "/v1/endpoint", None).json();
    assert_eq!(ep["traffic"], json!({"blue": 0, "green": 100}));
    assert_eq!(ep["rollout_status"]["status"], "succeeded");
    assert_eq!(std::fs::read_to_string(d.join("endpoint.yml")).unwrap(), endpoint, "progress is never written back");
    // The files own the rollout: the API cannot start one; an operator can still look.
    let r =
        s.admin("POST", "/v1/endpoint/rollout", Some(&json!({"to": "blue", "steps": "100", "step_duration": "1s"})));
    assert_eq!(r.status, 409, "{}", r.body);
}

/// 10,000 users at 90/10: each is served by one deployment only; raising green to 25 moves
/// exactly the users whose hash falls in the new band, none from green to blue; a request
/// without the header is split at random; the pin header still wins.
#[test]
fn sticky_users_stay_put_and_only_move_into_the_growing_band() {
    const USERS: usize = 10_000;
    const CLIENTS: usize = 8;
    let s = Arc::new(Server::start());
    blue_green(&s, "model-1");
    let shown = s.cli_json(&["online-endpoint", "update", "--set", "traffic_affinity.header=X-User-Id"]);
    assert_eq!(shown["traffic_affinity"], json!({"header": "x-user-id"}));
    let bad = s.admin("PATCH", "/v1/endpoint", Some(&json!({"traffic_affinity": {"header": "bad header"}})));
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert_eq!(s.set_traffic(json!({"blue": 90, "green": 10})).status, 200);
    let key = s.primary_key();

    // Who serves each user, asked by CLIENTS threads.
    let serve_all = |s: &Arc<Server>| -> Vec<String> {
        let chunks: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (s, key) = (s.clone(), key.clone());
                std::thread::spawn(move || {
                    let auth = format!("Bearer {key}");
                    (c..USERS)
                        .step_by(CLIENTS)
                        .map(|u| {
                            let user = format!("user-{u}");
                            let r = s.score(&sample_request(), &[("Authorization", &auth), ("x-user-id", &user)]);
                            assert_eq!(r.status, 200, "{}", r.body);
                            (u, r.header("azureml-model-deployment").unwrap().to_string())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = vec![String::new(); USERS];
        for chunk in chunks {
            for (u, d) in chunk.join().unwrap() {
                all[u] = d;
            }
        }
        all
    };
    let first = serve_all(&s);
    let second = serve_all(&s);
    assert_eq!(first, second, "every user is served by one deployment while the weights hold");
    let green = first.iter().filter(|d| *d == "green").count();
    assert!((800..1200).contains(&green), "about 10% of users on green: {green}");
    for (u, d) in first.iter().enumerate() {
        let point = switchyard::affinity_point(format!("user-{u}").as_bytes(), 100);
        assert_eq!(d, if point < 90 { "blue" } else { "green" }, "user-{u} at point {point}");
    }

    assert_eq!(s.set_traffic(json!({"blue": 75, "green": 25})).status, 200);
    let third = serve_all(&s);
    let mut moves: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (u, (before, after)) in first.iter().zip(&third).enumerate() {
        if before != after {
            *moves.entry((before.clone(), after.clone())).or_default() += 1;
            let point = switchyard::affinity_point(format!("user-{u}").as_bytes(), 100);
            assert!((75..90).contains(&point), "user-{u} at point {point} moved {before} -> {after}");
        }
    }
    let expected = (0..USERS)
        .filter(|u| (75..90).contains(&switchyard::affinity_point(format!("user-{u}").as_bytes(), 100)))
        .count();
    assert_eq!(moves.get(&("green".into(), "blue".into())), None, "nobody moved from green to blue");
    assert_eq!(moves.get(&("blue".into(), "green".into())).copied().unwrap_or(0), expected, "{moves:?}");

    // Without the header: random (both serve); with the pin: the pin wins.
    let auth = format!("Bearer {key}");
    let mut served = BTreeMap::<String, usize>::new();
    for _ in 0..200 {
        let r = s.score(&sample_request(), &[("Authorization", &auth)]);
        *served.entry(r.header("azureml-model-deployment").unwrap().to_string()).or_default() += 1;
    }
    assert!(served.len() == 2, "{served:?}");
    let blue_user = (0..USERS).find(|u| third[*u] == "blue").unwrap();
    let user = format!("user-{blue_user}");
    let r = s.score(
        &sample_request(),
        &[("Authorization", &auth), ("x-user-id", &user), ("azureml-model-deployment", "green")],
    );
    assert_eq!(r.header("azureml-model-deployment"), Some("green"));
}

#[test]
fn deleting_the_endpoint_during_a_rollout_leaves_an_event() {
    let s = Server::start();
    blue_green(&s, "model-1");
    let plan = json!({"to": "green", "steps": "10,100", "step_duration": "600s"});
    assert_eq!(s.admin("POST", "/v1/endpoint/rollout", Some(&plan)).status, 201);
    assert_eq!(s.admin("DELETE", "/v1/endpoint", None).status, 200);
    // The defect: the rollout vanished with no event (404 here).
    let show = s.admin("GET", "/v1/endpoint/rollout", None);
    assert_eq!(show.status, 200, "{}", show.body);
    let show = show.json();
    assert_eq!(show["status"], "aborted", "{show}");
    assert!(events(&show).iter().any(|e| e.contains("the endpoint was deleted")), "{show}");
}

/// Evidence gates (issue 27) with real servers under load: an identical twin is promoted on
/// evidence (every live step's window shows no error increase over blue's), and a green that
/// fails a share of requests blue answers is rolled back on `error_increase`, with the
/// interval on record, though the absolute gate would let it through.
#[test]
fn evidence_gates_promote_a_twin_and_roll_back_a_worse_green_under_load() {
    let s = Arc::new(Server::start());
    blue_green(&s, "model-1");
    let key = s.primary_key();
    let load = Load::start(&s, 6, &key, sample_request());
    let plan = |steps: &str| {
        json!({"to": "green", "steps": steps, "step_duration": "400ms", "min_requests": 10,
               "max_error_rate": 1.0, "confidence": 0.95, "max_error_increase": 0.02, "max_extensions": 20})
    };
    // The twin passes the latency gate too: its latencies are the incumbent's.
    let mut twin = plan("50,100");
    twin["max_latency_increase"] = json!(1.3);
    let started = s.admin("POST", "/v1/endpoint/rollout", Some(&twin));
    assert_eq!(started.status, 201, "{}", started.body);
    let done = wait_rollout(&s, "succeeded", Duration::from_secs(60));
    load.stop();
    let judged = done["judged"].as_array().unwrap();
    let step_50: Vec<&Value> = judged.iter().filter(|w| w["step"] == "50").collect();
    let last = step_50.last().unwrap_or_else(|| panic!("the 50% step was judged on evidence: {done}"));
    assert_eq!(last["decision"], "passed", "{done}");
    let gate = &last["gates"][0];
    assert_eq!((gate["gate"].as_str(), gate["outcome"].as_str()), (Some("error_increase"), Some("pass")), "{gate}");
    assert!(gate["interval"][1].as_f64().unwrap() <= 0.02, "{gate}");
    let latency = last["gates"].as_array().unwrap().iter().find(|g| g["gate"] == "latency_increase").unwrap();
    assert_eq!(latency["outcome"], "pass", "{latency}");
    assert!(events(&done).iter().any(|e| e.starts_with("evidence: a step needs about")), "{done}");

    // Now a green with 3% injected errors: x00 = 5 fails on test/fail (blue answers it), sent
    // by one client in 33.
    let s = Arc::new(Server::start());
    blue_green(&s, "test/fail");
    let key = s.primary_key();
    let good = Load::start(&s, 32, &key, body_with_x00(1.0));
    let bad = Load::start(&s, 1, &key, body_with_x00(5.0));
    good.wait_for_more(50);
    let mut three_percent = plan("50,100");
    three_percent["max_error_increase"] = json!(0.005);
    let started = s.admin("POST", "/v1/endpoint/rollout", Some(&three_percent));
    assert_eq!(started.status, 201, "{}", started.body);
    let show = wait_rollout(&s, "rolled_back", Duration::from_secs(60));
    good.stop();
    bad.stop();
    let rollback = &show["rollback"];
    assert_eq!(rollback["gate"], "error_increase", "{show}");
    let evidence = &rollback["evidence"][0];
    assert_eq!(evidence["outcome"], "fail", "{show}");
    assert!(evidence["interval"][0].as_f64().unwrap() > 0.005, "{evidence}");
    let rate = evidence["target"]["rate"].as_f64().unwrap();
    assert!((0.01..0.08).contains(&rate), "about 3% of green's answers failed: {evidence}");
    assert_eq!(evidence["incumbent"]["errors"], 0, "{evidence}");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 100, "green": 0}));
    let metrics = s.admin("GET", "/metrics", None).body;
    assert!(
        metrics.contains("switchyard_rollout_gate_outcomes_total{deployment=\"green\",gate=\"error_increase\",outcome=\"fail\",endpoint=\"my-endpoint\"} 1"),
        "{metrics}"
    );
}

/// The latency gate (issue 27) with real servers under load: green answers exactly what blue
/// answers (test/slow computes model-1's prediction) but about 5 ms slower, which the error
/// gates cannot see; it is rolled back on `latency_increase`, both sides' medians on record.
/// The CLI gives the same rollout as a table with the failing gate marked.
#[test]
fn evidence_latency_gate_rolls_back_a_twin_5ms_slower_under_load() {
    let s = Arc::new(Server::start());
    blue_green(&s, "test/slow");
    let key = s.primary_key();
    let body = body_with_x00(5.0);
    let blue = s.score_authed(&key, &body, Some("blue"));
    let green = s.score_authed(&key, &body, Some("green"));
    assert_eq!((blue.status, green.status), (200, 200));
    assert_eq!(blue.json(), green.json(), "the same answer");
    let load = Load::start(&s, 4, &key, body);
    load.wait_for_more(50);
    let started = s.admin(
        "POST",
        "/v1/endpoint/rollout",
        Some(&json!({"to": "green", "steps": "50,100", "step_duration": "400ms", "min_requests": 10,
                     "max_error_rate": 1.0, "confidence": 0.95, "max_latency_increase": 1.2, "max_extensions": 20})),
    );
    assert_eq!(started.status, 201, "{}", started.body);
    assert!(started.json()["needs"]["steps"][0]["latency_requests"].as_u64().is_some(), "{}", started.body);
    let show = wait_rollout(&s, "rolled_back", Duration::from_secs(60));
    let report = load.stop();
    assert_eq!(report.ok, report.total, "no request failed: {:?}", report.failures);
    let rollback = &show["rollback"];
    assert_eq!(
        (rollback["step"].as_str(), rollback["gate"].as_str()),
        (Some("50"), Some("latency_increase")),
        "{show}"
    );
    let gate = rollback["evidence"].as_array().unwrap().iter().find(|g| g["gate"] == "latency_increase").unwrap();
    assert_eq!(gate["outcome"], "fail", "{gate}");
    let (t, i) = (gate["target"]["median_ms"].as_f64().unwrap(), gate["incumbent"]["median_ms"].as_f64().unwrap());
    assert!(t > i + 3.0, "the target's median is milliseconds above the incumbent's: {t} vs {i}");
    assert!(gate["p_value"].as_f64().unwrap() < gate["alpha"].as_f64().unwrap(), "{gate}");
    let errors = rollback["evidence"].as_array().unwrap().iter().find(|g| g["gate"] == "error_increase").unwrap();
    assert_ne!(errors["outcome"], "fail", "the errors were no reason: {errors}");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 100, "green": 0}));
    let metrics = s.admin("GET", "/metrics", None).body;
    assert!(metrics.contains("gate=\"latency_increase\",outcome=\"fail\""), "{metrics}");

    let table = s.cli_ok(&["online-endpoint", "rollout", "show", "-o", "table"]);
    assert!(table.starts_with("rollout to green: rolled_back"), "{table}");
    let marked: Vec<&str> = table.lines().filter(|l| l.ends_with("<-")).collect();
    assert!(marked.len() == 1 && marked[0].contains("latency_increase"), "{table}");
}

/// A trickle too small to decide ends `inconclusive → rolled back`, with the reason; the same
/// plan with `--strict` is refused upfront (at this rate it cannot gather its evidence), and
/// nothing changes.
#[test]
fn a_trickle_ends_inconclusive_and_rolled_back_and_strict_refuses_it_upfront() {
    let s = Arc::new(Server::start());
    blue_green(&s, "model-1");
    let key = s.primary_key();
    let plan = [
        "online-endpoint",
        "rollout",
        "--to",
        "green",
        "--steps",
        "50,100",
        "--step-duration",
        "300ms",
        "--confidence",
        "0.95",
        "--max-extensions",
        "1",
    ];
    let strict = s.cli_err(&[&plan[..], &["--strict"]].concat());
    assert!(strict.contains("strict: this plan cannot gather the evidence it needs"), "{strict}");
    assert_eq!(s.admin("GET", "/v1/endpoint/rollout", None).status, 404, "a refused plan starts nothing");
    let started = s.cli_json(&[&plan[..], &["--min-requests", "1", "-o", "json"]].concat());
    assert_eq!(started["status"], "running", "{started}");
    // A trickle: a few requests in all, both sides served.
    eventually("both sides answered some of a trickle", Duration::from_secs(30), || {
        let r = s.score_authed(&key, &sample_request(), None);
        assert_eq!(r.status, 200, "{}", r.body);
        let gates = &s.admin("GET", "/v1/endpoint/rollout", None).json()["step"]["gates"];
        if gates["requests"].as_u64() >= Some(1) && gates["incumbent_requests"].as_u64() >= Some(1) {
            Ok(())
        } else {
            Err(gates.to_string())
        }
    });
    let show = wait_rollout(&s, "rolled_back", Duration::from_secs(30));
    let rollback = &show["rollback"];
    assert_eq!(rollback["gate"], "inconclusive", "{show}");
    assert!(rollback["message"].as_str().unwrap().contains("stayed inconclusive after 1 extension(s)"), "{show}");
    let decisions: Vec<&str> =
        show["judged"].as_array().unwrap().iter().map(|w| w["decision"].as_str().unwrap()).collect();
    assert_eq!(decisions, ["extended", "rolled_back_inconclusive"], "{show}");
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["traffic"], json!({"blue": 100, "green": 0}));
}
