//! What a hostile or careless `score.py` can do to the server that runs it, and what it cannot:
//! forge the server's log lines, flood its stderr, take its memory, answer what HTTP cannot
//! carry, leave processes or folders behind. Real server, real Python
//! (tests/fixtures/python/hostile).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn hostile_doc(name: &str, vars: Value) -> Value {
    let dir = repo().join("tests/fixtures/python/hostile");
    json!({
        "name": name,
        "model": {"path": dir.join("model")},
        "code_configuration": {"code": dir.join("code"), "scoring_script": "score.py"},
        "environment_variables": vars,
        "request_settings": {"request_timeout_ms": 5000},
    })
}

/// A server running score.py in the tests' venv, its process log written to a file.
fn server_logging() -> (Server, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let file = log.reopen().unwrap();
    let s = Server::start_with_stderr(&["--python", &test_venv_python()], &[], Stdio::from(file));
    s.create_endpoint();
    (s, log)
}

fn put(s: &Server, doc: Value, state: &str) -> Value {
    let name = doc["name"].as_str().unwrap().to_string();
    let r = s.admin("PUT", &format!("/v1/deployments/{name}"), Some(&doc));
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    s.wait_state(&name, state)
}

fn order(s: &Server, deployment: &str, order: Value) -> Reply {
    s.score_authed(&s.primary_key(), order.to_string().as_bytes(), Some(deployment))
}

fn logs(s: &Server, name: &str) -> String {
    s.admin("GET", &format!("/v1/deployments/{name}/logs?lines=10000"), None).body
}

const FORGED: &str = "2026-12-06T10:00:00.000Z request_id=forged role=live status=200 duration_ms=0.100";

/// No line may start with the script's imitation of a server line: not in get-logs (after the
/// ring's own timestamp), not in the process log.
fn assert_no_forged_line(text: &str, what: &str) {
    for line in text.lines() {
        let content = line.split_once(' ').map_or(line, |(_, rest)| rest);
        assert!(
            !line.starts_with(FORGED) && !content.starts_with("request_id=forged") && !line.contains('\r'),
            "{what} has a line the script wrote as its own: {line:?}"
        );
    }
}

#[test]
fn script_text_cannot_forge_the_servers_log_lines() {
    let (s, log) = server_logging();
    put(&s, hostile_doc("hostile", json!({})), "Succeeded");
    let r = order(&s, "hostile", json!({"do": "forge"}));
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.message().contains("ValueError: boom\\n2026-12-06T10:00:00.000Z request_id=forged"), "{}", r.body);
    // The traceback and the prints are copied by their own threads: wait for the last of them.
    let ring = eventually("the traceback is in get-logs", Duration::from_secs(10), || {
        let text = logs(&s, "hostile");
        if text.contains("Traceback") && text.contains("stderr: ValueError: boom") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert_no_forged_line(&ring, "get-logs");
    // Each line the script printed is there, escaped, after the instance's tag.
    assert!(ring.contains(&format!("stdout: {FORGED}\\r{FORGED}\\u{{1b}}[2K")), "{ring}");
    let process_log = std::fs::read_to_string(log.path()).unwrap();
    assert!(process_log.contains("before"), "the process log has the script's output: {process_log}");
    assert_no_forged_line(&process_log, "the process log");
    assert!(!process_log.contains('\x1b'), "no escape sequence reaches the process log");
}

#[test]
fn a_flood_of_output_is_rate_limited_into_the_process_log_and_counted() {
    let (s, log) = server_logging();
    let mut doc = hostile_doc("hostile", json!({}));
    doc["request_settings"]["request_timeout_ms"] = json!(120_000);
    put(&s, doc, "Succeeded");
    let before = std::fs::metadata(log.path()).unwrap().len();
    // 50,000 lines of 100 bytes: 5 MB printed.
    let r = order(&s, "hostile", json!({"do": "flood", "n": 50_000}));
    assert_eq!(r.status, 200, "{}", r.body);
    // Reported once the output has been quiet a second: one warning line, with the count.
    let warning = eventually("the dropped lines are reported", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(log.path()).unwrap();
        match text.lines().find(|l| l.contains("were not copied to the process log")) {
            Some(line) => Ok(line.to_string()),
            _ => Err(text.lines().rev().take(3).collect::<Vec<_>>().join("\n")),
        }
    });
    // Counted: the burst (1,000 lines, or 1 MiB) and what the rate allows pass; the rest not.
    let dropped: u64 = warning
        .split(": ")
        .nth(2)
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no count in {warning:?}"));
    assert!(dropped > 30_000 && dropped < 50_001, "{warning}");
    assert!(logs(&s, "hostile").contains(&warning[warning.find("hostile/instance").unwrap()..]), "get-logs has it too");
    let written = std::fs::metadata(log.path()).unwrap().len() - before;
    assert!(written < 2 << 20, "the process log grew by {written} bytes for 5 MB printed");
    // The deployment's own log keeps what its ring holds: the newest lines.
    assert!(logs(&s, "hostile").contains("stdout: flood done"));
}

#[test]
fn a_worker_has_a_high_oom_score_and_an_optional_memory_limit() {
    let (s, _log) = server_logging();
    put(&s, hostile_doc("free", json!({})), "Succeeded");
    put(&s, hostile_doc("capped", json!({"SWITCHYARD_WORKER_MAX_MEMORY": "300M"})), "Succeeded");
    let r = order(&s, "free", json!({"do": "oom"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.json()["oom_score_adj"].as_i64().unwrap() >= 800, "{}", r.body);
    // Within the limit: served. Over it: MemoryError, a 424, and the worker lives on.
    assert_eq!(order(&s, "capped", json!({"do": "alloc", "n": 50})).status, 200);
    let r = order(&s, "capped", json!({"do": "alloc", "n": 400}));
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.message().contains("MemoryError"), "{}", r.body);
    assert_eq!(order(&s, "free", json!({"do": "alloc", "n": 400})).status, 200, "no limit where none is set");
    // A limit that is not a size: the deployment fails, saying what is expected.
    let v = put(&s, hostile_doc("bad", json!({"SWITCHYARD_WORKER_MAX_MEMORY": "plenty"})), "Failed");
    assert!(v.to_string().contains("such as 2G"), "{v}");
}

#[test]
fn nan_and_answers_over_the_cap_are_model_errors_that_say_so() {
    let (s, _log) = server_logging();
    put(&s, hostile_doc("hostile", json!({"SWITCHYARD_MAX_ANSWER": "100000"})), "Succeeded");
    let pid_before = order(&s, "hostile", json!({"do": "oom"}));
    assert_eq!(pid_before.status, 200);
    let r = order(&s, "hostile", json!({"do": "nan"}));
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.message().contains("NaN or Infinity"), "{}", r.body);
    let r = order(&s, "hostile", json!({"do": "big", "n": 200_000}));
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.message().contains("over the cap of 99999 bytes"), "{}", r.body);
    assert!(!r.message().contains("died") && !r.message().contains("protocol"), "{}", r.body);
    // Neither cost the worker its life.
    assert_eq!(order(&s, "hostile", json!({"do": "ok"})).status, 200);
    // A worker that announces more than the server reads at all is stopped, and it is said so.
    let r = order(&s, "hostile", json!({"do": "lie", "n": 300_000_000}));
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.message().contains("300000000 bytes, over the cap of 268435456 bytes"), "{}", r.body);
    let log = eventually("the replacement is logged", Duration::from_secs(10), || {
        let text = logs(&s, "hostile");
        if text.contains("a new worker replaces it") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(log.contains("stopped by Switchyard"), "{log}");
    assert!(!log.contains("out of memory"), "a kill of ours is not blamed on the kernel: {log}");
}

#[test]
fn a_kill_at_the_deadline_is_reported_as_the_servers() {
    let (s, _log) = server_logging();
    let mut doc = hostile_doc("hostile", json!({}));
    doc["request_settings"]["request_timeout_ms"] = json!(500);
    put(&s, doc, "Succeeded");
    // A body over 32 KiB is run from a blocking thread, whose exchange reports how the worker
    // ended (the live path's smaller bodies are awaited on the request's task).
    let r = order(&s, "hostile", json!({"do": "hang", "pad": "x".repeat(40_000)}));
    assert_eq!(r.status, 408, "{}", r.body);
    let log = eventually("the kill is logged", Duration::from_secs(10), || {
        let text = logs(&s, "hostile");
        if text.contains("a new worker replaces it") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(log.contains("stopped by Switchyard: the request's deadline (request_timeout_ms) passed"), "{log}");
    assert!(!log.contains("out of memory"), "a kill of ours is not blamed on the kernel: {log}");
}

#[test]
fn the_create_line_names_the_interpreter_and_where_it_came_from() {
    let (s, _log) = server_logging();
    put(&s, hostile_doc("hostile", json!({})), "Succeeded");
    let log = logs(&s, "hostile");
    let python = test_venv_python();
    let created = log.lines().find(|l| l.contains("deployment hostile created")).unwrap_or_default();
    assert!(created.contains(&format!("{python} from serve --python")), "{created}");
    assert!(!created.contains("python3 on PATH"), "{created}");
}

fn alive(pid: u64) -> bool {
    // A zombie (killed, not yet reaped by its new parent) has exited.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
}

#[test]
fn delete_kills_what_the_script_started_even_in_a_new_session() {
    let (s, _log) = server_logging();
    put(&s, hostile_doc("hostile", json!({})), "Succeeded");
    let r = order(&s, "hostile", json!({"do": "spawn"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let pids: Vec<u64> = r.json()["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");
    let _ = s.set_traffic(json!({"hostile": 0}));
    assert_eq!(s.admin("DELETE", "/v1/deployments/hostile", None).status, 200);
    eventually("the script's processes are gone", Duration::from_secs(10), || {
        let left: Vec<u64> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("still running: {left:?}"))
        }
    });
}

fn instance_folder(s: &Server, name: &str) -> PathBuf {
    let r = order(s, name, json!({"do": "where"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let model_dir = PathBuf::from(r.json()["model_dir"].as_str().unwrap());
    model_dir.parent().unwrap().to_path_buf()
}

#[test]
fn a_clean_stop_leaves_no_instance_folder() {
    // The folder used to stay after about 1 stop in 3: try several.
    for round in 0..4 {
        let (mut s, _log) = server_logging();
        put(&s, hostile_doc("one", json!({})), "Succeeded");
        put(&s, hostile_doc("two", json!({})), "Succeeded");
        let folders = [instance_folder(&s, "one"), instance_folder(&s, "two")];
        assert!(folders.iter().all(|f| f.is_dir()), "{folders:?}");
        assert!(s.terminate().success());
        let left: Vec<&Path> = folders.iter().map(PathBuf::as_path).filter(|f| f.exists()).collect();
        assert!(left.is_empty(), "round {round}: left behind: {left:?}");
    }
}

#[test]
fn azures_documented_import_paths_work() {
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("code");
    std::fs::create_dir(&code).unwrap();
    // As Azure's documentation writes a @rawhttp script.
    std::fs::write(
        code.join("score.py"),
        "from azureml.contrib.services.aml_request import AMLRequest, rawhttp\n\
         from azureml.contrib.services.aml_response import AMLResponse\n\
         import azureml_inference_server_http.api.aml_response as real\n\
         def init():\n    pass\n\
         @rawhttp\n\
         def run(request):\n\
         \x20   assert AMLResponse is real.AMLResponse\n\
         \x20   return AMLResponse(request.get_data()[::-1], 201, {'X-Doc': 'yes'})\n",
    )
    .unwrap();
    let model = dir.path().join("model.txt");
    std::fs::write(&model, "none").unwrap();
    let (s, _log) = server_logging();
    let doc = json!({
        "name": "documented",
        "model": {"path": model},
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    });
    put(&s, doc, "Succeeded");
    let r = s.score_authed(&s.primary_key(), b"abc", Some("documented"));
    assert_eq!((r.status, r.body.as_str()), (201, "cba"), "{r:?}");
    assert_eq!(r.header("x-doc"), Some("yes"));
}

#[test]
fn a_clean_stop_kills_what_the_script_started() {
    // As for instance folders, a stop must not depend on every instance being dropped in time.
    for round in 0..3 {
        let (mut s, _log) = server_logging();
        put(&s, hostile_doc("hostile", json!({})), "Succeeded");
        let r = order(&s, "hostile", json!({"do": "spawn"}));
        assert_eq!(r.status, 200, "{}", r.body);
        let pids: Vec<u64> = r.json()["pids"].as_array().unwrap().iter().map(|p| p.as_u64().unwrap()).collect();
        assert!(s.terminate().success());
        eventually("the script's processes are gone", Duration::from_secs(10), || {
            let left: Vec<u64> = pids.iter().copied().filter(|&p| alive(p)).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("round {round}: still running: {left:?}"))
            }
        });
    }
}

/// SWITCHYARD_WORKER_PROFILE (a benchmark's setting) writes the worker's CPU time per part of
/// a run and the runs it counted (after runs 1, 10, 100, then every 1000).
#[test]
fn the_worker_profile_counts_its_runs_and_splits_their_cpu_time() {
    let (s, _log) = server_logging();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("p");
    put(&s, hostile_doc("prof", json!({"SWITCHYARD_WORKER_PROFILE": base})), "Succeeded");
    for _ in 0..10 {
        let r = order(&s, "prof", json!({}));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let p = eventually("the profile of 10 runs", Duration::from_secs(20), || {
        let found: Vec<PathBuf> = std::fs::read_dir(dir.path())
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x != "tmp"))
            .collect();
        let [one] = found.as_slice() else { return Err(format!("{found:?}")) };
        let p: Value =
            serde_json::from_slice(&std::fs::read(one).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        if p["runs"] == 10 {
            Ok(p)
        } else {
            Err(p.to_string())
        }
    });
    let part = |k: &str| p[k].as_i64().unwrap_or_else(|| panic!("{k} in {p}"));
    assert!(part("run_ns") > 0 && part("read_frame_ns") > 0 && part("write_answer_ns") > 0, "{p}");
    assert!(part("rest_ns") >= 0, "the timed parts fit in the worker's CPU time: {p}");
}
