//! Issue 22, item 1: web pages of other origins must not own the admin plane through the
//! user's browser. State-changing admin requests take JSON (or YAML) bodies only and refuse a
//! foreign `Origin` or `Sec-Fetch-Site`; a token-less plane answers only to its own host names
//! (DNS rebinding); every admin answer carries `nosniff` and a CSP, and invoke's answer is an
//! attachment. Checked over plain HTTP here, and from a real page of another origin in headless
//! Chromium (tests/studio/cross_site_test.py).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// One request written by hand (so that `Host` is whatever the test says), `Connection: close`.
fn raw(admin: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let addr = admin.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    // Bodies here are small and not chunked (actix sends a length).
    Reply { status, headers, body: body.to_string() }
}

fn port(s: &Server) -> String {
    s.admin.rsplit(':').next().unwrap().to_string()
}

/// What a cross-site attempt could change: the keys, the deployments, traffic, the rollout.
fn observable(s: &Server) -> Value {
    let deployments: Vec<Value> = s
        .admin("GET", "/v1/deployments", None)
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!({"name": d["name"], "model": d["model"], "instance_count": d["instance_count"]}))
        .collect();
    let endpoint = s.admin("GET", "/v1/endpoint", None).json();
    json!({
        "keys": s.admin("GET", "/v1/endpoint/keys", None).json(),
        "deployments": deployments,
        "traffic": endpoint["traffic"],
        "mirror_traffic": endpoint["mirror_traffic"],
        "rollout": s.admin("GET", "/v1/endpoint/rollout", None).status,
    })
}

#[test]
fn a_token_less_plane_answers_only_to_its_own_host_names() {
    let s = Server::start_with(&["--admin-allowed-hosts", "studio.internal,10.1.2.3"]);
    s.create_endpoint();
    let key = s.primary_key();
    let p = port(&s);
    // DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1.
    for host in [format!("evil.example:{p}"), format!("localhost.evil.example:{p}"), "10.9.9.9".to_string()] {
        for path in ["/v1/endpoint/keys", "/", "/metrics"] {
            let r = raw(&s.admin, "GET", path, &[("Host", &host)], b"");
            assert_eq!(r.status, 403, "{host} {path}: {r:?}");
            assert!(!r.body.contains(&key), "{host} {path}: the key leaked");
            assert!(r.message().contains("--admin-allowed-hosts"), "{}", r.body);
            assert!(r.message().contains(&host), "the message names the Host sent: {}", r.body);
        }
    }
    // The names it serves.
    for host in [
        format!("127.0.0.1:{p}"),
        format!("localhost:{p}"),
        "LocalHost.".to_string(),
        "studio.internal".to_string(),
        format!("10.1.2.3:{p}"),
    ] {
        let r = raw(&s.admin, "GET", "/v1/endpoint/keys", &[("Host", &host)], b"");
        assert_eq!(r.status, 200, "{host}: {r:?}");
    }
}

#[test]
fn with_an_admin_token_the_token_is_the_guard_whatever_the_host() {
    let s = Server::start_with(&["--admin-token", "host-test-token"]);
    let h = [("Host", "pod-10-1-2-3.example:5002"), ("Authorization", "Bearer host-test-token")];
    assert_eq!(raw(&s.admin, "GET", "/metrics", &h, b"").status, 200, "Prometheus scraping a pod by any name");
    let r = raw(&s.admin, "GET", "/metrics", &[("Host", "pod.example")], b"");
    assert_eq!(r.status, 401, "{r:?}");
}

#[test]
fn a_bad_allowed_hosts_entry_stops_the_start() {
    let out = Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--admin-allowed-hosts", "http://studio.internal:5002"])
        .env("SWITCHYARD_PARENT_PID", std::process::id().to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--admin-allowed-hosts") && err.contains("without scheme or port"), "{err}");
}

#[test]
fn state_changes_need_a_json_body_and_no_foreign_origin() {
    let s = Server::start();
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let before = observable(&s);
    let h = format!("127.0.0.1:{}", port(&s));
    let rotate = br#"{"keyType": "primary"}"#.as_slice();
    let rollout = br#"{"to": "green", "steps": "10,100", "step_duration": "60s"}"#.as_slice();
    // What a form or a no-cors fetch can send: the three CORS-safelisted types.
    for ct in ["text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        for (method, path, body) in [
            ("POST", "/v1/endpoint/keys/regenerate", rotate),
            ("POST", "/v1/endpoint/rollout", rollout),
            ("POST", "/v1/endpoint/invoke", b"{}".as_slice()),
            ("POST", "/v1/deployments/green/comparison/reset", b"{}".as_slice()),
            ("PATCH", "/v1/endpoint", br#"{"traffic": {"green": 100}}"#.as_slice()),
        ] {
            let r = raw(&s.admin, method, path, &[("Host", &h), ("Content-Type", ct)], body);
            assert_eq!(r.status, 415, "{method} {path} as {ct}: {r:?}");
            assert!(r.message().contains("application/json"), "says what was expected: {}", r.body);
        }
    }
    // A body without a type.
    let r = raw(&s.admin, "POST", "/v1/endpoint/keys/regenerate", &[("Host", &h)], rotate);
    assert_eq!(r.status, 415, "{r:?}");
    assert!(r.message().contains("without a Content-Type"), "{}", r.body);
    // A page of another origin, whatever it sends (body-less requests included).
    let json = ("Content-Type", "application/json");
    for foreign in [
        ("Origin", "http://evil.example"),
        ("Origin", "http://127.0.0.1:1"),
        ("Origin", "null"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Site", "same-site"),
    ] {
        for (method, path, body) in [
            ("POST", "/v1/endpoint/keys/regenerate", rotate),
            ("POST", "/v1/endpoint/rollout", rollout),
            ("POST", "/v1/endpoint/rollout/abort", b"".as_slice()),
            ("DELETE", "/v1/deployments/green", b"".as_slice()),
            ("PUT", "/v1/deployments/evil", br#"{"model": {"path": "/"}}"#.as_slice()),
        ] {
            let r = raw(&s.admin, method, path, &[("Host", &h), json, foreign], body);
            assert_eq!(r.status, 403, "{method} {path} with {foreign:?}: {r:?}");
            assert!(r.message().contains("own origin") && r.message().contains(foreign.1), "{}", r.body);
        }
    }
    assert_eq!(observable(&s), before, "nothing changed");
    // The admin plane's own origin (the studio page) and clients that are not browsers.
    let own = format!("http://{h}");
    let r = raw(&s.admin, "POST", "/v1/endpoint/keys/regenerate", &[("Host", &h), json, ("Origin", &own)], rotate);
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw(
        &s.admin,
        "POST",
        "/v1/endpoint/keys/regenerate",
        &[("Host", &h), ("Content-Type", "application/yaml"), ("Sec-Fetch-Site", "same-origin")],
        b"keyType: secondary\n",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = raw(&s.admin, "DELETE", "/v1/deployments/green", &[("Host", &h)], b"");
    assert_eq!(r.status, 200, "a body-less DELETE without any type: {r:?}");
    // The CLI still works.
    s.cli_ok(&["online-endpoint", "regenerate-keys", "-n", "my-endpoint", "--key-type", "primary"]);
    assert_ne!(observable(&s)["keys"], before["keys"]);
}

#[test]
fn every_admin_answer_carries_nosniff_and_a_policy_and_invoke_is_an_attachment() {
    let s = Server::start_with(&["--python", &test_venv_python()]);
    s.create_endpoint();
    let dir = repo().join("tests/fixtures/python/reflect");
    let doc = json!({
        "name": "echo",
        "model": {"path": dir.join("model")},
        "code_configuration": {"code": dir.join("code"), "scoring_script": "score.py"},
    });
    assert_eq!(s.admin("PUT", "/v1/deployments/echo", Some(&doc)).status, 201);
    s.wait_state("echo", "Succeeded");
    let agent = agent();
    let reflected = b"<html><script>document.title='pwned'</script></html>".as_slice();
    let invoke = http(
        &agent,
        "POST",
        &format!("{}/v1/endpoint/invoke?deployment_name=echo", s.admin),
        &[("Content-Type", "application/json")],
        Some(reflected),
    );
    assert_eq!(invoke.status, 200, "{invoke:?}");
    assert_eq!(invoke.body.as_bytes(), reflected, "the body comes back unchanged");
    let disposition = invoke.header("content-disposition").unwrap_or_default();
    assert!(disposition.starts_with("attachment"), "invoke's answer never renders as a page: {invoke:?}");
    assert!(invoke.header("content-security-policy").unwrap_or_default().contains("sandbox"), "{invoke:?}");
    let answers = [
        invoke,
        http(&agent, "GET", &format!("{}/v1/endpoint", s.admin), &[], None),
        http(&agent, "GET", &format!("{}/v1/endpoint/keys", s.admin), &[], None),
        http(&agent, "GET", &format!("{}/v1/deployments/echo/logs", s.admin), &[], None),
        http(&agent, "GET", &format!("{}/metrics", s.admin), &[], None),
        http(&agent, "GET", &format!("{}/no/such/route", s.admin), &[], None),
        http(&agent, "GET", &format!("{}/v1/deployments/nosuch", s.admin), &[], None),
        http(
            &agent,
            "POST",
            &format!("{}/v1/endpoint/keys/regenerate", s.admin),
            &[("Content-Type", "text/plain")],
            Some(b"x"),
        ),
        http(&agent, "GET", &format!("{}/", s.admin), &[], None),
        http(&agent, "GET", &format!("{}/studio/studio.js", s.admin), &[], None),
    ];
    for r in &answers {
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{r:?}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("default-src") && csp.contains("frame-ancestors 'none'"), "{r:?}");
        assert_eq!(r.header("cross-origin-resource-policy"), Some("same-origin"), "{r:?}");
    }
    // The studio page keeps its own policy (it loads its own script and style).
    let page = &answers[8];
    assert!(page.header("content-security-policy").unwrap().contains("default-src 'self'"), "{page:?}");
    assert!(!page.header("content-security-policy").unwrap().contains("sandbox"), "{page:?}");
}

/// A page served from another origin (another port of 127.0.0.1, and a cross-site name) tries
/// every way a browser allows to change or read the admin plane; then a DNS-rebinding page
/// (a name that resolves to 127.0.0.1, through Chromium's resolver rules) tries to read the
/// keys. Nothing changes, and nothing is read.
#[test]
fn a_page_of_another_origin_can_change_nothing_in_headless_chromium() {
    if std::env::var("SWITCHYARD_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: SWITCHYARD_SKIP_BROWSER=1");
        return;
    }
    let status = Command::new(repo().join("scripts/studio-setup.sh")).status().expect("run scripts/studio-setup.sh");
    assert!(status.success(), "scripts/studio-setup.sh failed");
    // The default: no admin token.
    let s = Server::start_with(&["--python", &test_venv_python()]);
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let dir = repo().join("tests/fixtures/python/reflect");
    let doc = json!({
        "name": "echo",
        "model": {"path": dir.join("model")},
        "code_configuration": {"code": dir.join("code"), "scoring_script": "score.py"},
    });
    assert_eq!(s.admin("PUT", "/v1/deployments/echo", Some(&doc)).status, 201);
    s.wait_state("echo", "Succeeded");
    let before = observable(&s);
    let out = Command::new(repo().join("target/studio-venv/bin/python"))
        .arg(repo().join("tests/studio/cross_site_test.py"))
        .env("ADMIN_URL", &s.admin)
        .env("PRIMARY_KEY", before["keys"]["primaryKey"].as_str().unwrap())
        .env("MODEL_DIR", repo().join("models/model-1"))
        .output()
        .expect("run tests/studio/cross_site_test.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success() && stdout.contains("cross-site: all attempts failed"), "{stdout}\n{stderr}");
    assert_eq!(observable(&s), before, "a foreign page changed the admin plane\n{stdout}");
}
