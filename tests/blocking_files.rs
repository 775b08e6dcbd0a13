//! Files the user names are read off the async threads, only when they are regular files, and
//! within a deadline (issue 22 item 9): a FIFO standing in for a hung network mount must not
//! stall the admin plane or the graceful stop. (The secrets folder's files: tests/secrets_dir.rs.)

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

#[test]
fn a_fifo_conda_file_is_refused_at_once_and_the_admin_plane_and_stop_are_unaffected() {
    let mut s = Server::start();
    s.create_endpoint();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("code")).unwrap();
    std::fs::write(dir.path().join("code/score.py"), "def init():\n    pass\n\ndef run(raw):\n    return 1\n").unwrap();
    let conda = dir.path().join("conda.yaml");
    assert!(Command::new("mkfifo").arg(&conda).status().unwrap().success());
    let doc = json!({
        "name": "blue",
        "model": {"path": path_str(&repo().join("models/model-1"))},
        "code_configuration": {"code": dir.path().join("code"), "scoring_script": "score.py"},
        "environment": {"conda_file": conda},
    });
    // A short client deadline: the defect held the call (and an admin worker) for ever.
    let quick = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(20))).build(),
    );
    let body = serde_json::to_vec(&doc).unwrap();
    let url = format!("{}/v1/deployments/blue", s.admin);
    let r = try_http(&quick, "PUT", &url, &[("Content-Type", "application/json")], Some(&body))
        .expect("the PUT was answered");
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("conda.yaml is not a regular file"), "{}", r.body);
    assert_eq!(s.admin("GET", "/v1/deployments", None).json(), json!([]), "nothing changed");
    assert!(s.terminate().success(), "a graceful stop");
}
