//! Attaching a debugger to a scoring script (the README's "Local debugging in Docker"):
//! `SWITCHYARD_DEBUGPY=HOST:PORT` makes the Python worker listen with debugpy and hold the
//! script until a debugger attaches. A real debugpy (pinned in the tests' venv) and a real
//! Debug Adapter Protocol client attach here, as an editor's "Remote Attach" would.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn probe_doc(name: &str, python: &str, debugpy: &str) -> Value {
    let probe = repo().join("tests/fixtures/python/probe");
    json!({
        "name": name,
        "model": {"path": probe.join("model")},
        "code_configuration": {"code": probe.join("code"), "scoring_script": "score.py"},
        "environment": {"python": python},
        "environment_variables": {"SWITCHYARD_DEBUGPY": debugpy},
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One Debug Adapter Protocol connection: `Content-Length` framed JSON both ways.
struct Dap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    seq: u64,
}

impl Dap {
    fn request(&mut self, command: &str, arguments: Value) -> u64 {
        self.seq += 1;
        let body = json!({"seq": self.seq, "type": "request", "command": command, "arguments": arguments}).to_string();
        write!(self.writer, "Content-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        self.seq
    }

    fn message(&mut self) -> Value {
        let mut length = None;
        loop {
            let mut line = String::new();
            assert!(self.reader.read_line(&mut line).unwrap() > 0, "debugpy closed the connection");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(n) = line.strip_prefix("Content-Length:") {
                length = Some(n.trim().parse::<usize>().unwrap());
            }
        }
        let mut body = vec![0; length.expect("a Content-Length header")];
        self.reader.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Reads until `pick` accepts a message, returning it.
    fn until(&mut self, what: &str, pick: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1000 {
            let m = self.message();
            if pick(&m) {
                return m;
            }
        }
        panic!("debugpy never sent {what}");
    }
}

#[test]
fn a_debugger_attaches_before_init_and_the_deployment_serves_after() {
    // The tests' venv: runtime/python/test-requirements.txt pins debugpy in it.
    let python = test_venv_python();
    let s = Server::start();
    s.create_endpoint();
    let port = free_port();
    let doc = probe_doc("dbg", &python, &format!("127.0.0.1:{port}"));
    let r = s.admin("PUT", "/v1/deployments/dbg", Some(&doc));
    assert_eq!(r.status, 201, "{}", r.body);

    // debugpy listens, and the deployment waits for the debugger: not Succeeded yet.
    let stream = eventually("debugpy listens", Duration::from_secs(120), || {
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())
    });
    let state = s.admin("GET", "/v1/deployments/dbg", None).json();
    assert_eq!(state["provisioning_state"], "Creating", "{state}");
    let line = format!("debugpy listens on 127.0.0.1:{port}: waiting for a debugger to attach");
    eventually("the worker logs that it waits", Duration::from_secs(30), || {
        let logs = s.admin("GET", "/v1/deployments/dbg/logs?lines=200", None).body;
        if logs.contains(&line) {
            Ok(())
        } else {
            Err(logs)
        }
    });

    // Attach as an editor's "Python: Remote Attach" does.
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut dap = Dap { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream, seq: 0 };
    let init = dap.request("initialize", json!({"adapterID": "python", "clientID": "switchyard-test"}));
    let reply = dap.until("the initialize response", |m| m["type"] == "response" && m["request_seq"] == init);
    assert_eq!(reply["success"], true, "{reply}");
    let attach = dap.request("attach", json!({"justMyCode": true}));
    dap.until("the initialized event", |m| m["type"] == "event" && m["event"] == "initialized");
    let done = dap.request("configurationDone", json!({}));
    dap.until("the configurationDone response", |m| m["type"] == "response" && m["request_seq"] == done);
    let reply = dap.until("the attach response", |m| m["type"] == "response" && m["request_seq"] == attach);
    assert_eq!(reply["success"], true, "{reply}");

    // init() ran once attached; the script answers (with the debugger still attached).
    s.wait_state("dbg", "Succeeded");
    let r = s.score_authed(&s.primary_key(), br#"{"do": "ok"}"#, Some("dbg"));
    assert_eq!(r.status, 200, "{}", r.body);
    dap.request("disconnect", json!({}));
}

#[test]
fn without_debugpy_installed_the_deployment_fails_saying_what_to_add() {
    // The system's python3 has no debugpy (the tests' venv does).
    let system = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, importlib.util; print(sys.executable if importlib.util.find_spec('debugpy') is None else '')",
        ])
        .output()
        .expect("python3");
    let python = String::from_utf8_lossy(&system.stdout).trim().to_string();
    assert!(!python.is_empty(), "this test needs a python3 without debugpy on PATH");
    let s = Server::start();
    s.create_endpoint();
    let r = s.admin("PUT", "/v1/deployments/dbg", Some(&probe_doc("dbg", &python, "127.0.0.1:1")));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = s.wait_state("dbg", "Failed");
    let text = format!("{v} {}", s.admin("GET", "/v1/deployments/dbg/logs?lines=200", None).body);
    assert!(text.contains("debugpy is not installed") && text.contains("add debugpy to the conda file"), "{text}");

    // A malformed address is refused as clearly.
    let r = s.admin("PUT", "/v1/deployments/bad", Some(&probe_doc("bad", &python, "localhost")));
    assert_eq!(r.status, 201, "{}", r.body);
    let v = s.wait_state("bad", "Failed");
    let text = format!("{v} {}", s.admin("GET", "/v1/deployments/bad/logs?lines=200", None).body);
    assert!(text.contains("SWITCHYARD_DEBUGPY must be PORT or HOST:PORT"), "{text}");
}
