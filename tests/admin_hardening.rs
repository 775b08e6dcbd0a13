//! Issue 9, a hostile user against the admin plane and its neighbours: deep or huge documents
//! are refused quickly with a message naming the limit while the admin plane keeps answering;
//! a model replacement keeps the deployment's metrics; servers die with the tests that
//! started them.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// 64k levels of flow nesting in 128 KB: took 14 s in the YAML parser before the limit.
fn deep_flow(levels: usize) -> Vec<u8> {
    ("[".repeat(levels) + &"]".repeat(levels)).into_bytes()
}

fn admin_raw(s: &Server, method: &str, path: &str, body: &[u8], content_type: &str) -> Reply {
    http(&agent(), method, &format!("{}{path}", s.admin), &[("Content-Type", content_type)], Some(body))
}

/// Where the refusal says the parse stopped: `(line, column)` of "at line L column C".
fn stopped_at(message: &str) -> (u64, u64) {
    let at = message.split("(at line ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_default();
    let (line, column) = at.split_once(" column ").unwrap_or_default();
    (line.parse().unwrap_or(u64::MAX), column.parse().unwrap_or(u64::MAX))
}

#[test]
fn a_deeply_nested_body_is_refused_at_once_and_the_admin_plane_keeps_answering() {
    let s = Server::start();
    s.create_endpoint();
    let admin = s.admin.clone();
    // A client sends the deep body while another asks for the endpoint.
    let hostile = std::thread::spawn(move || {
        http(
            &agent(),
            "PATCH",
            &format!("{admin}/v1/endpoint"),
            &[("Content-Type", "application/yaml")],
            Some(&deep_flow(64 * 1024)),
        )
    });
    let r = s.admin("GET", "/v1/endpoint", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = hostile.join().unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("nested more than 64 levels"), "{}", r.body);
    // At once: the parse stopped at the 65th bracket of 128 Ki (the unbounded parse of this
    // body took seconds); the position proves it where a time bound would be load-sensitive.
    assert_eq!(stopped_at(&r.message()), (1, 65), "{}", r.body);
    // The endpoint is unchanged and the plane still answers.
    assert_eq!(s.admin("GET", "/v1/endpoint", None).json()["name"], "my-endpoint");
}

#[test]
fn json_bodies_have_the_same_limits() {
    let s = Server::start();
    s.create_endpoint();
    // Valid JSON, within serde_json's own limit (128) but over ours.
    let mut deep = json!({"x": 1});
    for _ in 0..100 {
        deep = json!({ "a": deep });
    }
    let body = json!({"tags": deep}).to_string();
    let r = admin_raw(&s, "PATCH", "/v1/endpoint", body.as_bytes(), "application/json");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("nested more than 64 levels"), "{}", r.body);
    // Over serde_json's limit: refused the same way, not handed to the YAML parser.
    let r = admin_raw(&s, "PUT", "/v1/deployments/blue", &deep_flow(32 * 1024), "application/json");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("nested more than 64 levels"), "{}", r.body);
    assert_eq!(stopped_at(&r.message()), (1, 65), "stopped at the limit: {}", r.body);
    // A body over 1 MiB: refused with the admin API's JSON error naming the limit.
    let big = format!("{{\"description\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = admin_raw(&s, "PATCH", "/v1/endpoint", big.as_bytes(), "application/json");
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.message().contains("1 MiB"), "{}", r.body);
    // A normal document still works, JSON or YAML.
    let r = admin_raw(&s, "PATCH", "/v1/endpoint", b"description: fine\ntags: {team: a}\n", "application/yaml");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_deeply_nested_config_file_is_refused_with_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("endpoint.yml"), "name: my-endpoint\nauth_mode: key\ntraffic: {}\n").unwrap();
    let s = Server::start_with(&["--config-dir", d.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.admin("GET", "/v1/endpoint", None).status != 200 {
        assert!(Instant::now() < deadline, "the endpoint was never applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let deep = String::from_utf8(deep_flow(64 * 1024)).unwrap();
    let tmp = d.join(".deep.tmp");
    std::fs::write(&tmp, format!("name: deep\nmodel: {{path: x}}\ntags: {{a: {deep}}}\n")).unwrap();
    std::fs::rename(&tmp, d.join("deep-deployment.yml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ep = s.admin("GET", "/v1/endpoint", None).json();
        let error = ep["config_dir"]["last_error"].as_str().unwrap_or_default().to_string();
        if !error.is_empty() {
            assert!(error.contains("nested more than 64 levels"), "{error}");
            break;
        }
        assert!(Instant::now() < deadline, "the deep file was never refused: {ep}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn series(text: &str, family: &str, deployment: &str) -> bool {
    let label = format!("deployment=\"{deployment}\"");
    text.lines().any(|l| l.starts_with(family) && l.contains(&label))
}

#[test]
fn metrics_survive_a_model_replacement() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();
    assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    let r = s.admin(
        "PATCH",
        "/v1/deployments/blue",
        Some(&json!({"model": {"path": repo().join("models").join("model-2")}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("blue", "Succeeded");
    for _ in 0..5 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
    let text = s.admin("GET", "/metrics", None).body;
    for family in
        ["switchyard_request_duration_seconds", "switchyard_inflight_requests", "switchyard_mirror_dropped_total"]
    {
        assert!(series(&text, family, "blue"), "{family} for blue is gone after the replacement:\n{text}");
    }
    // The counts go on across versions: 1 request before the replacement, 5 after.
    assert!(
        text.contains(
            "switchyard_request_duration_seconds_count{deployment=\"blue\",role=\"live\",endpoint=\"my-endpoint\"} 6"
        ),
        "{text}"
    );
    // Deleting the name does remove its series.
    assert_eq!(s.set_traffic(json!({"blue": 0})).status, 200);
    assert_eq!(s.admin("DELETE", "/v1/deployments/blue", None).status, 200);
    let text = s.admin("GET", "/metrics", None).body;
    assert!(!series(&text, "switchyard_inflight_requests", "blue"), "{text}");
}

fn running(pid: u32) -> bool {
    // A zombie waiting for its new parent to reap it has exited too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

#[test]
#[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
fn a_server_exits_when_the_process_that_started_it_is_gone() {
    // A shell starts the server the way tests/common does (naming itself as the parent),
    // prints its pid and exits without stopping it: what a never-dropped fixture amounts to.
    // Also with stderr, then stdout, a pipe nobody reads any more (a test whose output was cut
    // short, `serve | head -1`): the server ran on, and its exit must not depend on being able
    // to say why (both panicked the server at its first line of output, stderr's at startup).
    let closed = ">(head -c 0 >/dev/null)";
    for stderr in ["2>/dev/null".to_string(), format!("2> {closed}"), format!("2>/dev/null > {closed}")] {
        let script = format!("SWITCHYARD_PARENT_PID=$$ \"$0\" serve --port 0 --admin-port 0 >/dev/null {stderr} & pid=$!; echo $pid; sleep 1; kill -0 $pid && echo alive");
        let out = Command::new("bash").args(["-c", &script, bin()]).stdin(Stdio::null()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let mut lines = stdout.lines();
        let pid: u32 = lines.next().unwrap_or_default().trim().parse().expect("the shell printed the pid");
        record_server_pid(pid);
        // The server was up while its parent lived: it is the watch that must end it.
        assert_eq!(lines.next(), Some("alive"), "the server ran while its parent lived (stderr {stderr})");
        let deadline = Instant::now() + Duration::from_secs(10);
        while running(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let still = running(pid);
        if still {
            // SAFETY: kill(2) on the pid this test started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        assert!(!still, "the server outlived the process that started it (stderr {stderr})");
    }
}
