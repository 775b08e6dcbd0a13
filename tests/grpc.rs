//! The Open Inference Protocol over gRPC end to end (issue 30): the stock `tritonclient[grpc]`
//! (pinned in tests/oip/requirements.txt, driven by tests/oip/client.py) against a real
//! server's `--grpc-port`, with the key in the `authorization` metadata; answers compared with
//! `/score`'s.

use serde_json::{json, Value};

use crate::common::*;
use crate::oip::{assert_close, blue_green, flat, sample_rows, tritonclient_at};

/// Runs a plan of tritonclient.grpc calls (see tests/oip/client.py); one result per step.
fn grpc_client(server: &Server, key: &str, plan: Value) -> Vec<Value> {
    let url = server.grpc.clone().expect("the server prints its gRPC plane");
    tritonclient_at(&format!("grpc://{url}"), key, plan)
}

#[test]
fn tritonclient_grpc_scores_both_models_as_score_does_through_the_same_front_door() {
    let (server, key) = blue_green();
    let rows = sample_rows();
    let blue_score = numbers(&server.score_authed(&key, &sample_request(), None).body);
    let green_score = numbers(&server.score_authed(&key, &sample_request(), Some("green")).body);
    let pin = json!({"azureml-model-deployment": "green"});
    let results = grpc_client(
        &server,
        &key,
        json!([
            {"op": "live"},
            {"op": "server_ready"},
            {"op": "server_metadata"},
            {"op": "model_ready", "model": "model-1"},
            {"op": "metadata", "model": "model-1"},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows, "id": "g-1"},
            {"op": "infer", "model": "model-2", "input": "X", "datatype": "FP32", "rows": rows, "headers": pin},
            {"op": "metadata", "model": "model-2", "headers": pin},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows,
             "outputs": ["variable"]},
        ]),
    );
    assert_eq!(results[0], json!({"live": true}));
    assert_eq!(results[1], json!({"ready": true}));
    assert_eq!(results[2]["name"], "switchyard", "{}", results[2]);
    assert_eq!(results[2]["extensions"], json!(["binary_tensor_data"]));
    assert_eq!(results[3], json!({"ready": true}));
    assert_eq!(results[4]["name"], "model-1");
    // tritonclient's JSON view of the proto spells int64 shapes as strings.
    assert_eq!(results[4]["inputs"], json!([{"name": "X", "datatype": "FP64", "shape": ["-1", "10"]}]));
    assert_close(&flat(&results[5]["outputs"]["variable"]), &blue_score, "model-1 over gRPC");
    assert_eq!(results[5]["response"]["id"], "g-1");
    assert_eq!(results[5]["response"]["model_name"], "model-1");
    assert_eq!(results[5]["response"]["outputs"][0]["shape"], json!(["2", "1"]));
    assert_close(&flat(&results[6]["outputs"]["variable"]), &green_score, "model-2 pinned over gRPC");
    assert_eq!(results[6]["response"]["outputs"][0]["datatype"], "FP32");
    assert_eq!(results[7]["inputs"][0]["datatype"], "FP32");
    assert_close(&flat(&results[8]["outputs"]["variable"]), &blue_score, "an output asked by name");
    assert_ne!(blue_score, green_score);
    // The gRPC calls went through the front door: counted on the deployments they reached.
    let metrics = server.admin("GET", "/metrics", None).body;
    let count = |deployment: &str| -> f64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("switchyard_requests_total{")
                    && l.contains(&format!("deployment=\"{deployment}\""))
                    && l.contains("code=\"200\"")
                    && l.contains("role=\"live\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    // blue: one /score and two gRPC infers; green: one /score and one gRPC infer.
    assert_eq!((count("blue"), count("green")), (3.0, 2.0), "{metrics}");
}

#[test]
fn tritonclient_grpc_reads_the_front_doors_refusals_as_grpc_status_codes() {
    let (server, key) = blue_green();
    server.deploy("failing", "test/fail", json!({}));
    server.deploy("slow", "test/slow", json!({"request_settings": {"request_timeout_ms": 50}}));
    let rows = sample_rows();
    let mut bad = rows.clone();
    bad[0][0] = json!(7.0);
    let mut long = rows.clone();
    long[0][0] = json!(500.0);
    let results = grpc_client(
        &server,
        "not-the-key",
        json!([{"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows}]),
    );
    assert_eq!(results[0]["status"], "StatusCode.UNAUTHENTICATED", "{}", results[0]);
    assert!(results[0]["error"].as_str().unwrap().contains("Authorization: Bearer"), "{}", results[0]);
    let results = grpc_client(
        &server,
        &key,
        json!([
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": [[1, 2, 3]], "shape": [1, 3]},
            {"op": "infer", "model": "model-9", "input": "X", "datatype": "FP64", "rows": rows},
            {"op": "infer", "model": "fail", "input": "X", "datatype": "FP64", "rows": bad,
             "headers": {"azureml-model-deployment": "failing"}},
            {"op": "infer", "model": "slow", "input": "X", "datatype": "FP64", "rows": long,
             "headers": {"azureml-model-deployment": "slow"}},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows,
             "headers": {"azureml-model-deployment": "nobody"}},
            {"op": "model_ready", "model": "model-9"},
        ]),
    );
    let status = |i: usize| results[i]["status"].as_str().unwrap_or_default().to_string();
    let error = |i: usize| results[i]["error"].as_str().unwrap_or_default().to_string();
    assert_eq!(status(0), "StatusCode.INVALID_ARGUMENT", "{}", results[0]);
    assert!(error(0).contains("expects shape [N, 10]"), "a readable message: {}", error(0));
    assert_eq!(status(1), "StatusCode.NOT_FOUND", "{}", results[1]);
    assert!(error(1).contains("model \"model-9\" is not served here"), "{}", error(1));
    assert_eq!(status(2), "StatusCode.INTERNAL", "{}", results[2]);
    assert!(error(2).contains("Gather"), "the model's own error: {}", error(2));
    assert_eq!(status(3), "StatusCode.DEADLINE_EXCEEDED", "{}", results[3]);
    assert_eq!(status(4), "StatusCode.NOT_FOUND", "{}", results[4]);
    assert!(error(4).contains("deployment \"nobody\" does not exist"), "{}", error(4));
    assert_eq!(status(5), "StatusCode.NOT_FOUND", "{}", results[5]);
}

#[test]
fn the_grpc_plane_is_off_when_asked_and_its_port_is_printed_otherwise() {
    let server = Server::start_with(&["--grpc-port", "off"]);
    assert_eq!(server.grpc, None);
    let server = Server::start();
    let addr = server.grpc.clone().unwrap();
    assert!(addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"), "{addr}");
    let out = std::process::Command::new(bin()).args(["serve", "--grpc-port", "many"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected a port (0 to 65535, 0 picks a free one) or `off`"));
}

#[test]
fn a_scoring_script_behind_the_grpc_plane_reads_the_binary_form_and_must_answer_the_protocols() {
    let python =
        crate::oip::venv_made_by("scripts/setup.sh", "target/python-test-venv", &[("SWITCHYARD_SKIP_BUILD", "1")]);
    let server = Server::start_with(&["--python", &python]);
    server.create_endpoint();
    let script = r#"import json, struct
def init():
    pass
def run(raw_data, request_headers):
    headers = {k.lower(): v for k, v in request_headers.items()}
    n = int(headers["inference-header-content-length"])
    head = json.loads(raw_data[:n])
    raw = raw_data[n:].encode("latin-1")
    values = struct.unpack("<%dq" % (len(raw) // 8), raw)
    if head.get("id") == "not-v2":
        return [1, 2]
    kind = headers.get("content-type")
    return {"outputs": [{"name": "sum", "datatype": "INT64", "shape": [1], "data": [sum(values)]},
                        {"name": "binary", "datatype": "INT64", "shape": [1], "data": [int(kind == "application/octet-stream")]}]}
"#;
    let _dir = crate::oip::python_deployment(&server, "pysum", "sums", script);
    let key = server.primary_key();
    let results = grpc_client(
        &server,
        &key,
        json!([
            {"op": "infer", "model": "sums", "input": "X", "datatype": "INT64", "rows": [[1, 2], [3, 4]], "id": "r-1"},
            {"op": "infer", "model": "sums", "input": "X", "datatype": "INT64", "rows": [[1, 2]], "id": "not-v2"},
        ]),
    );
    assert_eq!(results[0]["outputs"]["sum"], json!([10]), "{}", results[0]);
    assert_eq!(results[0]["outputs"]["binary"], json!([1]), "the script was told the body is binary: {}", results[0]);
    assert_eq!(results[0]["response"]["id"], "r-1", "the request's id, though the script gave none");
    assert_eq!(results[0]["response"]["model_name"], "sums");
    assert_eq!(results[1]["status"], "StatusCode.INTERNAL", "{}", results[1]);
    assert!(results[1]["error"].as_str().unwrap().contains("not a v2 infer answer"), "{}", results[1]);
}

#[test]
fn a_defaulted_grpc_port_that_is_taken_leaves_the_plane_off_and_the_server_up() {
    // Hold a port, and start the scoring plane two below it: its default gRPC port is taken.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let scoring = (taken - 2).to_string();
    let mut child = std::process::Command::new(bin())
        .args(["serve", "--port", &scoring, "--admin-port", "0"])
        .env("SWITCHYARD_PARENT_PID", std::process::id().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    record_server_pid(child.id());
    let lines: Vec<String> = {
        use std::io::BufRead;
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut seen = Vec::new();
        for line in out.lines() {
            let line = line.unwrap();
            let last = line.starts_with("Admin plane: ");
            seen.push(line);
            if last {
                break;
            }
        }
        seen
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l == &format!("Scoring plane: http://127.0.0.1:{scoring}")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.starts_with("gRPC plane: ")), "no gRPC plane on a port that is taken: {lines:?}");
    // Given explicitly, the same port stops the start, naming it.
    let out = std::process::Command::new(bin())
        .args(["serve", "--port", "0", "--admin-port", "0", "--grpc-port", &taken.to_string()])
        .env("SWITCHYARD_PARENT_PID", std::process::id().to_string())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--grpc-port"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_call_without_the_key_is_refused_before_its_message_is_read() {
    let server = Server::start_with(&["--max-body-bytes", "100000"]);
    server.create_endpoint();
    server.deploy("blue", "model-1", json!({}));
    assert_eq!(server.set_traffic(json!({"blue": 100})).status, 200);
    let key = server.primary_key();
    // 4,000 rows of 10 float64: 320 KB, past the message limit (the body limit and 64 KiB).
    let big: Vec<Value> = (0..4000).map(|_| sample_rows()[0].clone()).collect();
    let plan = json!([{"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": big}]);
    // Before, the message was read and decoded first: a caller without a key was told its
    // message was too large (OUT_OF_RANGE, as a caller with the key still is), after the
    // server had read it all.
    let results = grpc_client(&server, "not-the-key", plan.clone());
    assert_eq!(results[0]["status"], "StatusCode.UNAUTHENTICATED", "{}", results[0]);
    let results = grpc_client(&server, &key, plan);
    assert_eq!(results[0]["status"], "StatusCode.OUT_OF_RANGE", "with the key, the limit: {}", results[0]);
    // A small call without the key is refused the same way, and one with it is answered.
    let small = json!([{"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": sample_rows()}]);
    assert_eq!(grpc_client(&server, "not-the-key", small.clone())[0]["status"], "StatusCode.UNAUTHENTICATED");
    assert!(grpc_client(&server, &key, small)[0]["outputs"].is_object());
}

#[test]
fn sigterm_finishes_a_grpc_call_in_flight_refuses_new_ones_and_exits_0() {
    let mut server = Server::start();
    server.create_endpoint();
    server.deploy("slow", "test/slow", json!({"request_settings": {"request_timeout_ms": 60000}}));
    assert_eq!(server.set_traffic(json!({"slow": 100})).status, 200);
    let key = server.primary_key();
    let url = format!("grpc://{}", server.grpc.clone().expect("the gRPC plane"));
    let python = crate::oip::venv_made_by("scripts/oip-client.sh", "target/oip-client-venv", &[]);
    let client = |plan: Value| {
        std::process::Command::new(&python)
            .arg(repo().join("tests/oip/client.py"))
            .args([url.as_str(), key.as_str(), &plan.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run tests/oip/client.py")
    };
    // A 3-second run (x00 = 3000 on the test model).
    let mut rows = sample_rows();
    rows[0][0] = json!(3000.0);
    let long = client(json!([{"op": "infer", "model": "slow", "input": "X", "datatype": "FP64", "rows": rows}]));
    server.wait_inflight("slow", 1);
    server.signal_stop();
    // While the call drains, the plane still listens, and a new call is told to go elsewhere.
    let refused =
        client(json!([{"op": "infer", "model": "slow", "input": "X", "datatype": "FP64", "rows": sample_rows()}]));
    let refused: Vec<Value> = serde_json::from_slice(&refused.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(refused[0]["status"], "StatusCode.UNAVAILABLE", "{}", refused[0]);
    assert!(refused[0]["error"].as_str().unwrap().contains("shutting down"), "{}", refused[0]);
    let answered: Vec<Value> = serde_json::from_slice(&long.wait_with_output().unwrap().stdout).unwrap();
    assert!(answered[0]["outputs"].is_object(), "the call in flight is answered: {}", answered[0]);
    assert!(server.wait_exit().success(), "exit 0 after the drain");
}

#[test]
fn a_call_other_than_infer_may_not_send_a_large_message() {
    let server = Server::start();
    let target = server.grpc.clone().expect("the gRPC plane");
    let python = crate::oip::venv_made_by("scripts/oip-client.sh", "target/oip-client-venv", &[]);
    // A ServerLive message with one unknown field (number 15) of N bytes: valid protobuf,
    // which a decoder skips. Sent raw with grpcio, no key.
    let script = r#"
import sys, grpc
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
live = grpc.insecure_channel(sys.argv[1]).unary_unary("/inference.GRPCInferenceService/ServerLive")
for n in (10, 200000):
    try:
        live(b"\x7a" + varint(n) + b"x" * n, timeout=20)
        print("OK")
    except grpc.RpcError as e:
        print(e.code().name)
"#;
    let out = std::process::Command::new(python).args(["-c", script, &target]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines[0], "OK", "a small health call is answered: {lines:?}");
    // Before, the 200 KB message was read and decoded (the limit is the body limit's, 10 MiB).
    assert_ne!(lines[1], "OK", "past 64 KiB the message is not read: {lines:?}");
}
