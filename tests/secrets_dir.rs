//! `serve --secrets-dir` on one server: a bad folder stops the start with the reason; the admin
//! token may come from the folder (and rotates with it); `--key-grace-secs 0` revokes a key that
//! left at once; a restored `--state-dir` takes the folder's keys. The many-replica behaviour is
//! in tests/cluster.rs.

use crate::common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const P: &str = "primary-0123456789abcdef0123456789abcdef";
const S1: &str = "secondary-one-0123456789abcdef0123456789";
const S2: &str = "secondary-two-0123456789abcdef0123456789";
const T: &str = "signing-0123456789abcdef0123456789abcdef";
const A1: &str = "admin-one-0123456789abcdef0123456789abcd";
const A2: &str = "admin-two-0123456789abcdef0123456789abcd";

/// Writes each file by rename, so the watcher never reads half a file.
fn write(dir: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), files);
    d
}

fn keys(secondary: &str) -> Vec<(&'static str, &str)> {
    vec![("primary-key", P), ("secondary-key", secondary), ("token-signing-key", T)]
}

/// Runs `serve` expecting it to refuse to start; returns its stderr.
fn refused(args: &[&str], env_token: Option<&str>) -> String {
    let mut cmd = Command::new(bin());
    cmd.args(["serve", "--port", "0", "--admin-port", "0"]).args(args).stdin(Stdio::null());
    cmd.env("SWITCHYARD_PARENT_PID", std::process::id().to_string()).env_remove("SWITCHYARD_ADMIN_TOKEN");
    if let Some(t) = env_token {
        cmd.env("SWITCHYARD_ADMIN_TOKEN", t);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_bad_secrets_folder_stops_the_start_with_the_reason() {
    let missing = folder(&[("primary-key", P), ("token-signing-key", T)]);
    let empty = folder(&[("primary-key", "\n"), ("secondary-key", S1), ("token-signing-key", T)]);
    let short = folder(&[("primary-key", P), ("secondary-key", "abc"), ("token-signing-key", T)]);
    let typo = folder(&[("primary-key", P), ("secondary-key", S1), ("token-signing-key", T), ("primary_key", P)]);
    let cases: [(&Path, &str); 4] = [
        (missing.path(), "has no secondary-key file"),
        (empty.path(), "primary-key is empty"),
        (short.path(), "holds 3 characters: a secret needs at least 32"),
        (typo.path(), "unexpected file \"primary_key\""),
    ];
    for (dir, want) in cases {
        let err = refused(&["--secrets-dir", dir.to_str().unwrap()], None);
        assert!(err.contains(want), "{want}: {err}");
        assert!(!err.contains(P), "no secret in the message: {err}");
    }
    let err = refused(&["--secrets-dir", "/nonexistent/secrets"], None);
    assert!(err.contains("--secrets-dir /nonexistent/secrets is not a folder"), "{err}");
    // One admin token, from one place.
    let mut with_admin = keys(S1);
    with_admin.push(("admin-token", A1));
    let d = folder(&with_admin);
    let err = refused(&["--secrets-dir", d.path().to_str().unwrap()], Some(A2));
    assert!(err.contains("the admin token is given twice"), "{err}");
}

#[test]
fn the_admin_token_can_come_from_the_folder_and_rotates_with_it() {
    let mut files = keys(S1);
    files.push(("admin-token", A1));
    let d = folder(&files);
    // A public admin address needs a token: the folder's counts.
    let s = Server::start_with(&["--secrets-dir", d.path().to_str().unwrap(), "--admin-host", "0.0.0.0"]);
    let agent = agent();
    let show = |token: &str| {
        let auth = format!("Bearer {token}");
        http(&agent, "GET", &format!("{}/metrics", s.admin), &[("Authorization", &auth)], None).status
    };
    assert_eq!(show(A1), 200);
    assert_eq!(show(A2), 401);
    files.pop();
    files.push(("admin-token", A2));
    write(d.path(), &files);
    eventually("the new admin token works", Duration::from_secs(20), || match show(A2) {
        200 => Ok(()),
        s => Err(s.to_string()),
    });
    assert_eq!(show(A1), 401, "the admin token changes at once");
    // Removing it is refused as a bad edit: the token in use stays.
    std::fs::remove_file(d.path().join("admin-token")).unwrap();
    let auth = format!("Bearer {A2}");
    let e = eventually("the removal is reported", Duration::from_secs(20), || {
        let e = http(&agent, "GET", &format!("{}/v1/endpoint", s.admin), &[("Authorization", &auth)], None);
        // No endpoint yet: 404; the folder's status shows once an endpoint exists, so create one.
        if e.status == 404 {
            let r = http(
                &agent,
                "PUT",
                &format!("{}/v1/endpoint", s.admin),
                &[("Authorization", &auth), ("Content-Type", "application/json")],
                Some(br#"{"name": "my-endpoint"}"#),
            );
            assert_eq!(r.status, 201, "{}", r.body);
            return Err("created".into());
        }
        let v = e.json();
        match v["secrets_dir"]["last_error"].as_str() {
            Some(m) if m.contains("admin-token is gone") => Ok(v),
            _ => Err(v.to_string()),
        }
    });
    assert_eq!(e["secrets_dir"]["path"], d.path().to_str().unwrap());
    assert_eq!(show(A2), 200);
}

#[test]
fn without_grace_a_key_that_left_is_refused_at_once() {
    let d = folder(&keys(S1));
    let s = Server::start_with(&["--secrets-dir", d.path().to_str().unwrap(), "--key-grace-secs", "0"]);
    // Without --config-dir: the admin API creates the endpoint; its keys are the folder's.
    s.create_endpoint();
    s.deploy("blue", "model-1", serde_json::json!({}));
    assert_eq!(s.set_traffic(serde_json::json!({"blue": 100})).status, 200);
    assert_eq!(s.cli_json(&["online-endpoint", "get-credentials", "-n", "my-endpoint"])["secondaryKey"], S1);
    let err = s.cli_err(&["online-endpoint", "regenerate-keys", "-n", "my-endpoint", "--key-type", "secondary"]);
    assert!(err.contains(d.path().to_str().unwrap()) && err.contains("--secrets-dir"), "{err}");
    assert_eq!(s.score_authed(S1, &sample_request(), None).status, 200);
    write(d.path(), &keys(S2));
    eventually("the new secondary key works", Duration::from_secs(20), || {
        match s.score_authed(S2, &sample_request(), None).status {
            200 => Ok(()),
            st => Err(st.to_string()),
        }
    });
    assert_eq!(s.score_authed(S1, &sample_request(), None).status, 401);
    assert_eq!(s.score_authed(P, &sample_request(), None).status, 200);
}

#[test]
fn a_restored_state_takes_the_folders_keys() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().to_str().unwrap();
    let mut s = Server::start_with(&["--state-dir", state_dir]);
    s.create_endpoint();
    let generated = s.primary_key();
    assert_eq!(s.terminate().code(), Some(0));
    let d = folder(&keys(S1));
    let s = Server::start_with(&["--state-dir", state_dir, "--secrets-dir", d.path().to_str().unwrap()]);
    let keys = eventually("the endpoint is restored", Duration::from_secs(20), || {
        let r = s.admin("GET", "/v1/endpoint/keys", None);
        if r.status == 200 {
            Ok(r.json())
        } else {
            Err(r.body)
        }
    });
    assert_eq!(keys, serde_json::json!({"primaryKey": P, "secondaryKey": S1}));
    assert_ne!(generated, P);
}

#[test]
fn the_shipped_secret_holds_the_files_the_server_reads_and_its_placeholders_cannot_go_live() {
    let k8s = repo().join("deploy/kubernetes");
    let doc: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(k8s.join("secret.yaml")).unwrap()).unwrap();
    let data = doc["stringData"].as_object().expect("stringData");
    // As shipped: refused (the placeholders are too short to be keys).
    let d = tempfile::tempdir().unwrap();
    for (name, value) in data {
        std::fs::write(d.path().join(name), value.as_str().unwrap()).unwrap();
    }
    let err = refused(&["--secrets-dir", d.path().to_str().unwrap()], None);
    assert!(err.contains("a secret needs at least 32"), "{err}");
    // With real values, a server starts on exactly these names and takes its admin token there.
    for (i, name) in data.keys().enumerate() {
        std::fs::write(d.path().join(name), format!("{i}{}", "0123456789abcdef".repeat(4))).unwrap();
    }
    let s = Server::start_with(&["--secrets-dir", d.path().to_str().unwrap()]);
    assert_eq!(s.admin("GET", "/metrics", None).status, 401, "the admin-token entry guards the admin API");
    // The Deployment passes the flag and mounts the Secret there.
    let deployment = std::fs::read_to_string(k8s.join("deployment.yaml")).unwrap();
    for want in ["- --secrets-dir\n            - /secrets\n", "mountPath: /secrets", "secretName: switchyard-secrets"] {
        assert!(deployment.contains(want), "deployment.yaml lacks {want:?}");
    }
    assert!(!deployment.contains("SWITCHYARD_ADMIN_TOKEN\n"), "the admin token would be given twice");
}

/// Makes a FIFO at `path` (a file whose open for reading waits for a writer, for ever).
fn mkfifo(path: &Path) {
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

#[test]
fn a_fifo_for_a_key_file_is_refused_at_start_and_in_an_edit_without_wedging_anything() {
    // At start: the defect hung the start (past SIGTERM) on opening the FIFO.
    let d = folder(&[("primary-key", P), ("token-signing-key", T)]);
    mkfifo(&d.path().join("secondary-key"));
    let mut child = Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--secrets-dir", d.path().to_str().unwrap()])
        .env("SWITCHYARD_PARENT_PID", std::process::id().to_string())
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = eventually("serve refuses the FIFO and exits", Duration::from_secs(30), || {
        child.try_wait().unwrap().ok_or_else(|| "still starting".to_string())
    });
    assert!(!exited.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("secondary-key is not a regular file"), "{err}");

    // In an edit: the defect wedged the watcher for good (no later edit was ever taken).
    let d = folder(&keys(S1));
    let s = Server::start_with(&["--secrets-dir", d.path().to_str().unwrap()]);
    s.create_endpoint();
    let fifo = d.path().join(".fifo.tmp");
    mkfifo(&fifo);
    std::fs::rename(&fifo, d.path().join("secondary-key")).unwrap();
    eventually("the FIFO is refused", Duration::from_secs(20), || {
        let v = s.admin("GET", "/v1/endpoint", None).json();
        match v["secrets_dir"]["last_error"].as_str() {
            Some(m) if m.contains("secondary-key is not a regular file") => Ok(()),
            _ => Err(v.to_string()),
        }
    });
    write(d.path(), &keys(S2));
    eventually("the next edit is taken", Duration::from_secs(20), || {
        let v = s.admin("GET", "/v1/endpoint/keys", None).json();
        if v["secondaryKey"] == S2 {
            Ok(())
        } else {
            Err(v.to_string())
        }
    });
}
