//! What a score.py deployment's worker processes log and how many there are: the script's
//! logging as Azure's server leaves it (INFO dropped unless asked for, prints kept), every
//! printed line in `get-logs` under load, and Azure's `WORKER_COUNT` (worker processes per
//! instance, each running init() once, a crash replacing that worker only).
//!
//! Real Python (the tests' venv), real HTTP, the `chatty` fixture script.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

fn server() -> Server {
    Server::start_with(&["--python", &test_venv_python()])
}

fn chatty() -> PathBuf {
    repo().join("tests/fixtures/python/chatty")
}

/// A deployment of the chatty script (code folder `code`), with `more` merged in.
fn chatty_doc(name: &str, code: &std::path::Path, more: Value) -> Value {
    let mut doc = json!({
        "name": name,
        "model": {"path": chatty().join("model")},
        "code_configuration": {"code": code, "scoring_script": "score.py"},
    });
    json_patch::merge(&mut doc, &more);
    doc
}

fn put(s: &Server, doc: &Value) -> Reply {
    let name = doc["name"].as_str().unwrap();
    s.admin("PUT", &format!("/v1/deployments/{name}"), Some(doc))
}

/// Creates a deployment and waits for `state` (room for Python inits).
fn create(s: &Server, doc: Value, state: &str) -> Value {
    let r = put(s, &doc);
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    let name = doc["name"].as_str().unwrap();
    eventually(&format!("{name} is {state}"), Duration::from_secs(120), || {
        let v = s.admin("GET", &format!("/v1/deployments/{name}"), None).json();
        if v["provisioning_state"] == state {
            Ok(v)
        } else {
            Err(v.to_string())
        }
    })
}

fn logs(s: &Server, name: &str) -> String {
    s.admin("GET", &format!("/v1/deployments/{name}/logs?lines=10000"), None).body
}

fn order(s: &Server, key: &str, name: &str, order: Value) -> Reply {
    s.score_authed(key, order.to_string().as_bytes(), Some(name))
}

/// Waits until the deployment's log holds every one of `wanted`; returns the log.
fn log_with(s: &Server, name: &str, wanted: &[&str]) -> String {
    eventually(&format!("{name}'s log holds {wanted:?}"), Duration::from_secs(20), || {
        let log = logs(s, name);
        if wanted.iter().all(|w| log.contains(w)) {
            Ok(log)
        } else {
            Err(log)
        }
    })
}

#[test]
fn the_scripts_info_lines_are_dropped_as_on_azure_unless_asked_for_and_prints_are_always_kept() {
    let s = server();
    s.create_endpoint();
    let key = s.primary_key();
    let code = chatty().join("code");
    // A copy of the code folder with a logging.json, Azure's own way to configure logging.
    let configured = tempfile::tempdir().unwrap();
    std::fs::copy(code.join("score.py"), configured.path().join("score.py")).unwrap();
    std::fs::write(
        configured.path().join("logging.json"),
        json!({
            "version": 1,
            "disable_existing_loggers": false,
            "formatters": {"plain": {"format": "FROM-JSON %(levelname)s %(message)s"}},
            "handlers": {"err": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "plain"}},
            "root": {"level": "INFO", "handlers": ["err"]},
        })
        .to_string(),
    )
    .unwrap();
    create(&s, chatty_doc("quiet", &code, json!({})), "Succeeded");
    let loud = json!({"environment_variables": {"SWITCHYARD_SCRIPT_LOG_LEVEL": "info"}});
    create(&s, chatty_doc("loud", &code, loud), "Succeeded");
    create(&s, chatty_doc("configured", configured.path(), json!({})), "Succeeded");
    for name in ["quiet", "loud", "configured"] {
        let r = order(&s, &key, name, json!({"tag": name, "lines": 1}));
        assert_eq!(r.status, 200, "{name}: {}", r.body);
    }

    // By default (as Azure's server, whose root logger stays at WARNING): the prints and the
    // warning (in the format of Python's own basicConfig, which logging.warning() applies when
    // nothing configured the root logger), not the INFO lines. The warning follows the INFO
    // line on the same stream, so once it is there an INFO line would be too.
    let quiet =
        log_with(&s, "quiet", &["stdout: chatty line quiet 0", "stderr: WARNING:root:chatty run at warning quiet"]);
    assert!(quiet.contains("stdout: chatty init print"), "{quiet}");
    assert!(!quiet.contains("at info"), "INFO lines are dropped by default:\n{quiet}");

    let loud = log_with(
        &s,
        "loud",
        &[
            "stdout: chatty line loud 0",
            "stderr: INFO root: chatty run at info loud",
            "stderr: INFO root: chatty init at info",
        ],
    );
    assert!(loud.contains("stderr: WARNING root: chatty run at warning loud"), "{loud}");
    log_with(
        &s,
        "configured",
        &["stdout: chatty line configured 0", "stderr: FROM-JSON INFO chatty run at info configured"],
    );

    // A level that is not one fails the load, saying what is expected.
    let bad = json!({"environment_variables": {"SWITCHYARD_SCRIPT_LOG_LEVEL": "LOUD"}});
    let v = create(&s, chatty_doc("bad", &code, bad), "Failed");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(error.contains("SWITCHYARD_SCRIPT_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL"), "{v}");
}

#[test]
fn every_line_the_script_prints_under_load_reaches_get_logs_in_order() {
    let s = Arc::new(server());
    s.create_endpoint();
    let key = s.primary_key();
    let code = chatty().join("code");
    let more = json!({"instance_count": 2, "request_settings": {"max_concurrent_requests_per_instance": 4}});
    create(&s, chatty_doc("chatty", &code, more), "Succeeded");
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 25;
    const LINES: usize = 5;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (s, key) = (Arc::clone(&s), key.clone());
            std::thread::spawn(move || {
                for r in 0..REQUESTS {
                    let reply = order(&s, &key, "chatty", json!({"tag": format!("c{c}r{r}"), "lines": LINES}));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let want = CLIENTS * REQUESTS * LINES;
    let log = eventually("every printed line is in the log", Duration::from_secs(30), || {
        let log = logs(&s, "chatty");
        let n = log.lines().filter(|l| l.contains(" stdout: chatty line c")).count();
        if n >= want {
            Ok(log)
        } else {
            Err(format!("{n} of {want} lines"))
        }
    });
    // Each request's lines: all there, once, in the order printed, tagged with one instance.
    let mut seen: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains(" stdout: chatty line c")) {
        let (head, text) = line.split_once(" stdout: chatty line ").unwrap();
        let (tag, i) = text.split_once(' ').unwrap();
        let instance = head.split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
        assert!(instance.starts_with("chatty/instance-") && instance.contains(" pid "), "{line}");
        let entry = seen.entry(tag.to_string()).or_insert_with(|| (instance.clone(), Vec::new()));
        assert_eq!(entry.0, instance, "one request's lines come from one instance");
        entry.1.push(i.parse().unwrap());
    }
    assert_eq!(seen.len(), CLIENTS * REQUESTS);
    for (tag, (_, lines)) in &seen {
        assert_eq!(*lines, (0..LINES).collect::<Vec<_>>(), "request {tag}'s lines, in order, once each");
    }
}

#[test]
fn worker_count_runs_that_many_workers_per_instance_and_a_crash_replaces_one() {
    let s = Arc::new(server());
    s.create_endpoint();
    let key = s.primary_key();
    let code = chatty().join("code");

    // Bad values are refused before anything loads, saying what is expected.
    for bad in [json!("0"), json!("three"), json!(-1), json!("1.5")] {
        let doc = chatty_doc("bad", &code, json!({"environment_variables": {"WORKER_COUNT": bad}}));
        let r = put(&s, &doc);
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(r.body.contains("WORKER_COUNT must be a whole number of worker processes per instance"), "{}", r.body);
    }

    let more = json!({
        "instance_count": 2,
        "environment_variables": {"WORKER_COUNT": 3},
        "request_settings": {"max_concurrent_requests_per_instance": 3},
    });
    let v = create(&s, chatty_doc("pool", &code, more), "Succeeded");
    assert_eq!(v["instances"]["ready"], 2, "{v}");
    assert_eq!(
        v["workers"],
        json!({"per_instance": 3, "ready": 6, "loading": 0, "draining": 0, "failed": 0, "hung": 0, "restarting": 0}),
        "{v}"
    );
    let log = log_with(&s, "pool", &["chatty init print"]);
    eventually("six inits in the log", Duration::from_secs(20), || {
        let n = logs(&s, "pool").matches("stdout: chatty init print").count();
        if n == 6 {
            Ok(())
        } else {
            Err(format!("{n} inits\n{log}"))
        }
    });

    // Six processes serve, each ran init() once: concurrent requests reach all of them. The
    // runs last a moment so that the six overlap (an idle worker is always taken first); six
    // quick ones each took the worker the one before had just freed, so reaching all six took
    // hundreds of rounds under load, and their access lines pushed the init lines out of the
    // log window read below.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pids = BTreeSet::new();
    while pids.len() < 6 {
        assert!(Instant::now() < deadline, "only {} distinct workers answered", pids.len());
        let batch: Vec<_> = (0..6)
            .map(|_| {
                let (s, key) = (Arc::clone(&s), key.clone());
                std::thread::spawn(move || order(&s, &key, "pool", json!({"lines": 0, "sleep_ms": 300})))
            })
            .collect();
        for b in batch {
            let r = b.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            let v = r.json();
            assert_eq!(v["inits"], 1, "each worker runs init() once: {v}");
            pids.insert(v["pid"].as_u64().unwrap());
        }
    }
    assert_eq!(pids.len(), 6);

    // One worker dies: that request is a 424; only it is replaced, the other five live on.
    let r = order(&s, &key, "pool", json!({"do": "exit"}));
    assert_eq!(r.status, 424, "{}", r.body);
    assert!(r.body.contains("died during the run"), "{}", r.body);
    let v = eventually("a new worker replaced the one that died", Duration::from_secs(60), || {
        let v = s.admin("GET", "/v1/deployments/pool", None).json();
        let inits = logs(&s, "pool").matches("stdout: chatty init print").count();
        if v["workers"]["ready"] == 6 && inits == 7 {
            Ok(v)
        } else {
            let log = logs(&s, "pool");
            let tail: Vec<&str> = log.lines().rev().take(12).collect();
            Err(format!("{inits} inits: {v}\nlog, last lines first: {tail:#?}"))
        }
    });
    assert_eq!(v["instances"]["ready"], 2, "{v}");
    let alive = pids.iter().filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists()).count();
    assert_eq!(alive, 5, "the other workers were not restarted");
    assert!(!logs(&s, "pool").contains("but max_concurrent_requests_per_instance"));
    // With the default max_concurrent_requests_per_instance (1), the log says to match it.
    create(&s, chatty_doc("lean", &code, json!({"environment_variables": {"WORKER_COUNT": "2"}})), "Succeeded");
    log_with(
        &s,
        "lean",
        &["WORKER_COUNT is 2 but max_concurrent_requests_per_instance is 1", "set it to 2, as on Azure"],
    );
    // Scaling counts instances: 1 instance is 3 workers.
    let r = s.admin("PATCH", "/v1/deployments/pool", Some(&json!({"instance_count": 1})));
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("scaled to one instance of three workers", Duration::from_secs(60), || {
        let v = s.admin("GET", "/v1/deployments/pool", None).json();
        if v["provisioning_state"] == "Succeeded" && v["instances"]["ready"] == 1 && v["workers"]["ready"] == 3 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
}

/// A thread's nice value, from /proc/PID[/task/TID]/stat (field 19).
fn nice_of(stat_path: &std::path::Path) -> Option<(String, i64)> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let name = stat[stat.find('(')? + 1..stat.rfind(')')?].to_string();
    let nice = stat[stat.rfind(')')? + 1..].split_whitespace().nth(16)?.parse().ok()?;
    Some((name, nice))
}

#[test]
fn a_worker_and_its_output_copiers_serve_at_the_servers_own_priority_not_the_loaders() {
    let s = server();
    s.create_endpoint();
    let key = s.primary_key();
    create(&s, chatty_doc("chatty", &chatty().join("code"), json!({})), "Succeeded");
    let (_, live) = nice_of(&PathBuf::from(format!("/proc/{}/stat", s.pid()))).unwrap();
    let r = order(&s, &key, "chatty", json!({"lines": 1}));
    assert_eq!(r.status, 200, "{}", r.body);
    // Loads run on threads at nice 19; the worker they start must not inherit it.
    assert_eq!(r.json()["nice"], live, "the worker's nice value: {}", r.body);
    let copiers: Vec<(String, i64)> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
        .unwrap()
        .filter_map(|t| nice_of(&t.unwrap().path().join("stat")))
        .filter(|(name, _)| name == "switchyard-wlog")
        .collect();
    assert_eq!(copiers.len(), 2, "{copiers:?}");
    assert!(copiers.iter().all(|(_, nice)| *nice == live), "{copiers:?}");
}

fn queued() -> PathBuf {
    repo().join("tests/fixtures/python/queued/code")
}

/// A deployment of the `queued` script (no model of its own: the chatty one's).
fn queued_doc(name: &str, more: Value) -> Value {
    chatty_doc(name, &queued(), more)
}

/// A server with one instance of the `queued` script, which may hold two requests (one
/// running, one waiting in its pipe); its key.
fn one_queued_instance(name: &str, request_timeout_ms: u64) -> (Arc<Server>, String) {
    let s = Arc::new(server());
    s.create_endpoint();
    let key = s.primary_key();
    let settings = json!({"max_concurrent_requests_per_instance": 2, "request_timeout_ms": request_timeout_ms});
    create(&s, queued_doc(name, json!({"request_settings": settings})), "Succeeded");
    (s, key)
}

/// Waits until `run()` wrote `mark` (it has begun); returns the pid in it.
fn began(mark: &std::path::Path) -> u64 {
    eventually(&format!("run() began ({})", mark.display()), Duration::from_secs(20), || {
        std::fs::read_to_string(mark).ok().and_then(|p| p.trim().parse().ok()).ok_or_else(|| "not yet".to_string())
    })
}

/// Runs queued one behind another in a worker's pipe (issue 23): under concurrent load a
/// request is written while the run before it is still in the worker (the script sees it
/// waiting on fd 3), and every answer still reaches the request it belongs to.
#[test]
fn requests_queue_in_a_busy_workers_pipe_and_each_answer_reaches_its_own_request() {
    let s = Arc::new(server());
    s.create_endpoint();
    let key = s.primary_key();
    let more = json!({"instance_count": 2, "request_settings": {"max_concurrent_requests_per_instance": 4}});
    create(&s, queued_doc("queued", more), "Succeeded");
    const CLIENTS: usize = 6;
    const REQUESTS: usize = 15;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (s, key) = (Arc::clone(&s), key.clone());
            std::thread::spawn(move || {
                let mut queued_behind = 0;
                for r in 0..REQUESTS {
                    let tag = format!("c{c}r{r}");
                    // Runs of different lengths, so answers come back in another order than
                    // requests went out if any were crossed.
                    let sleep_ms = (c * 7 + r * 3) % 11;
                    let reply = order(&s, &key, "queued", json!({"tag": tag, "sleep_ms": sleep_ms}));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    let v = reply.json();
                    assert_eq!(v["tag"], tag, "the answer belongs to the request: {v}");
                    queued_behind += usize::from(v["queued_behind"] == true);
                }
                queued_behind
            })
        })
        .collect();
    let queued_behind: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(queued_behind > 0, "with 6 clients on 2 workers, some request waited in a worker's pipe");
    let v = s.admin("GET", "/v1/deployments/queued", None).json();
    assert_eq!(v["instances"]["ready"], 2, "no worker was replaced: {v}");
    // One client alone is never queued behind another request.
    for r in 0..5 {
        let v = order(&s, &key, "queued", json!({"tag": format!("alone{r}"), "sleep_ms": 5})).json();
        assert_eq!(v["queued_behind"], false, "{v}");
    }
}

/// A request queued behind a run whose worker dies never began: it is run on a new worker
/// and answered, not failed with the run it waited behind.
#[test]
fn a_request_queued_behind_a_run_whose_worker_dies_is_run_again_on_a_new_worker() {
    let (s, key) = one_queued_instance("dies", 30000);
    let dir = tempfile::tempdir().unwrap();
    let (mark_a, mark_b) = (dir.path().join("a"), dir.path().join("b"));
    // A is in the worker, and exits it once B waits in the pipe behind it (A answers 200 if
    // B never comes there).
    let (s1, k1, m) = (Arc::clone(&s), key.clone(), mark_a.clone());
    let a =
        std::thread::spawn(move || order(&s1, &k1, "dies", json!({"tag": "A", "mark": m, "do": "exit_when_queued"})));
    let first = began(&mark_a);
    let (s2, k2, m) = (Arc::clone(&s), key.clone(), mark_b.clone());
    let b = std::thread::spawn(move || order(&s2, &k2, "dies", json!({"tag": "B", "mark": m})));
    let a = a.join().unwrap();
    assert_eq!(a.status, 424, "B was written behind A, and A's worker died under it: {}", a.body);
    let b = b.join().unwrap();
    assert_eq!(b.status, 200, "B never began in the worker that died: {}", b.body);
    let v = b.json();
    assert_eq!(v["tag"], "B");
    assert_ne!(v["pid"].as_u64().unwrap(), first, "B ran on the new worker");
    assert_eq!(began(&mark_b), v["pid"].as_u64().unwrap(), "B ran once, there");
}

/// Two requests wait in a worker's pipe behind its current run (DEPTH 3): when that worker
/// dies under the run, neither had begun, and both are run once on the new worker.
#[test]
fn two_requests_queued_behind_a_run_whose_worker_dies_are_both_run_again_on_a_new_worker() {
    let (s, key) = one_queued_instance("dies2", 30000);
    let dir = tempfile::tempdir().unwrap();
    let marks: Vec<_> = ["a", "b", "c"].iter().map(|m| dir.path().join(m)).collect();
    let (s1, k1, m) = (Arc::clone(&s), key.clone(), marks[0].clone());
    let a = std::thread::spawn(move || {
        order(&s1, &k1, "dies2", json!({"tag": "A", "mark": m, "sleep_ms": 1500, "do": "exit"}))
    });
    let first = began(&marks[0]);
    let behind: Vec<_> = ["B", "C"]
        .iter()
        .zip(&marks[1..])
        .map(|(tag, m)| {
            let (s, k, m, tag) = (Arc::clone(&s), key.clone(), m.clone(), tag.to_string());
            std::thread::spawn(move || order(&s, &k, "dies2", json!({"tag": tag, "mark": m})))
        })
        .collect();
    assert_eq!(a.join().unwrap().status, 424, "A's worker exited under it");
    for (r, (tag, mark)) in behind.into_iter().zip(["B", "C"].iter().zip(&marks[1..])) {
        let r = r.join().unwrap();
        assert_eq!(r.status, 200, "{tag} never began in the worker that died: {}", r.body);
        let v = r.json();
        assert_eq!(v["tag"], *tag);
        let pid = v["pid"].as_u64().unwrap();
        assert_ne!(pid, first, "{tag} ran on the new worker");
        assert_eq!(began(mark), pid, "{tag} ran once, there");
    }
}

/// The server's worker processes (its children), from /proc.
fn workers_of(s: &Server) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some(end) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[end + 1..].split_whitespace().collect();
        if fields.len() > 1 && fields[1].parse::<u32>() == Ok(s.pid()) && fields[0] != "Z" {
            found.insert(pid);
        }
    }
    found
}

/// A worker stopped at a request's deadline while its instance was lent back to the pool is
/// replaced at once (it waited, dead and counted ready, until a request took it).
#[test]
fn a_worker_stopped_at_the_deadline_while_its_instance_is_lent_is_replaced_without_a_request() {
    let (s, key) = one_queued_instance("lent", 1000);
    let before = workers_of(&s);
    assert_eq!(before.len(), 1, "{before:?}");
    let r = order(&s, &key, "lent", json!({"tag": "slow", "sleep_ms": 20000}));
    assert_eq!(r.status, 408, "{}", r.body);
    let after = eventually("a new worker replaced the one stopped", Duration::from_secs(30), || {
        let now = workers_of(&s);
        let v = s.admin("GET", "/v1/deployments/lent", None).json();
        if now.len() == 1 && now.is_disjoint(&before) && v["instances"]["ready"] == 1 && v["instances"]["loading"] == 0
        {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    });
    let r = order(&s, &key, "lent", json!({"tag": "next"}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["pid"].as_u64(), Some(u64::from(*after.first().unwrap())), "{}", r.body);
}

/// A run queued for a blocking thread (a body over the size written from the request's
/// task) that finds an instance lent with a run whose worker then dies is not failed: it
/// waits for another instance, here the replacement.
#[test]
fn a_queued_run_given_a_lent_instance_whose_worker_dies_waits_for_another() {
    let (s, key) = one_queued_instance("big", 30000);
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("a");
    let (s1, k1, m) = (Arc::clone(&s), key.clone(), mark.clone());
    let a = std::thread::spawn(move || {
        order(&s1, &k1, "big", json!({"tag": "A", "mark": m, "sleep_ms": 1500, "do": "exit"}))
    });
    let first = began(&mark);
    // Over 32 KiB: queued for a blocking thread, which takes the lent instance.
    let b = order(&s, &key, "big", json!({"tag": "B", "padding": "x".repeat(40 * 1024)}));
    assert_eq!(a.join().unwrap().status, 424);
    assert_eq!(b.status, 200, "B never began in the worker that died: {}", b.body);
    let v = b.json();
    assert_eq!(v["tag"], "B");
    assert_ne!(v["pid"].as_u64().unwrap(), u64::from(first as u32), "B ran on the new worker");
}

/// Attack pass: a script that writes a well-formed answer to fd 4 (where the worker's answers
/// went) put it in the place of the request waiting behind its run, and every later answer
/// of that worker went to the client after its own. Scripts now find /dev/null on fds 3 and 4.
#[test]
fn a_script_that_writes_an_answer_to_fd_4_crosses_no_clients_answers() {
    let (s, key) = one_queued_instance("forger", 30000);
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (s, key) = (Arc::clone(&s), key.clone());
            std::thread::spawn(move || {
                for r in 0..12 {
                    let tag = format!("c{c}r{r}");
                    let forge = if r % 3 == 0 { "forge" } else { "" };
                    let reply = order(&s, &key, "forger", json!({"tag": tag, "sleep_ms": 3, "do": forge}));
                    assert_eq!(reply.status, 200, "{}", reply.body);
                    assert_eq!(reply.json()["tag"], tag, "the answer belongs to the request: {}", reply.body);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}
