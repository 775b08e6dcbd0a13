//! The Open Inference Protocol v2 routes end to end: the stock `tritonclient[http]` from PyPI
//! (pinned, installed by scripts/oip-client.sh into target/oip-client-venv) against a real
//! server with model-1 (FP64) and model-2 (FP32), and raw HTTP for what the client checks on
//! its own side (shape against data) or never sends (a missing key, a wrong binary length).

use crate::common;

use common::*;
use serde_json::{json, Value};

/// The Python of a venv under target/ that a project script makes, running the script once
/// per test binary for each venv.
pub(crate) fn venv_made_by(script: &str, venv: &str, env: &[(&str, &str)]) -> String {
    static MADE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut made = MADE.lock().unwrap_or_else(|e| e.into_inner());
    if !made.iter().any(|v| v == venv) {
        let status = std::process::Command::new(repo().join(script))
            .envs(env.iter().copied())
            .status()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        assert!(status.success(), "{script} failed");
        made.push(venv.to_string());
    }
    let python = repo().join(venv).join("bin/python");
    assert!(python.is_file(), "{script} did not make {}", python.display());
    path_str(&python)
}

/// The stock client's venv (tests/oip/requirements.txt): tritonclient[http,grpc].
fn client_python() -> String {
    venv_made_by("scripts/oip-client.sh", "target/oip-client-venv", &[])
}

/// Runs a plan of tritonclient calls (see tests/oip/client.py); one result per step.
fn tritonclient(server: &Server, key: &str, plan: Value) -> Vec<Value> {
    tritonclient_at(&server.scoring, key, plan)
}

/// As [`tritonclient`], at `url` (tritonclient takes `host:port/<base path>`; `grpc://HOST:PORT`
/// drives its gRPC client instead).
pub(crate) fn tritonclient_at(url: &str, key: &str, plan: Value) -> Vec<Value> {
    let out = std::process::Command::new(client_python())
        .arg(repo().join("tests/oip/client.py"))
        .args([url, key, &plan.to_string()])
        .output()
        .expect("run tests/oip/client.py");
    assert!(out.status.success(), "client.py failed: {}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("client.py printed no JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(results.len(), plan.as_array().unwrap().len());
    results
}

/// An endpoint with blue = model-1 (all traffic) and green = model-2 (no traffic).
pub(crate) fn blue_green() -> (Server, String) {
    let server = Server::start();
    server.create_endpoint();
    server.deploy("blue", "model-1", json!({}));
    server.deploy("green", "model-2", json!({}));
    assert_eq!(server.set_traffic(json!({"blue": 100, "green": 0})).status, 200);
    let key = server.primary_key();
    (server, key)
}

/// The sample request's rows.
pub(crate) fn sample_rows() -> Value {
    serde_json::from_slice::<Value>(&sample_request()).unwrap()["data"].clone()
}

/// The numbers of a tritonclient output (`[[a], [b]]`), flattened.
pub(crate) fn flat(v: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Number(n) => out.push(n.as_f64().unwrap()),
            other => panic!("not a number: {other}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}

pub(crate) fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: {got:?} vs {want:?}");
    for (g, w) in got.iter().zip(want) {
        assert!(((g - w) / w).abs() <= 1e-6, "{what}: {got:?}, /score answered {want:?}");
    }
}

#[test]
fn tritonclient_scores_both_models_in_both_encodings_as_score_does() {
    let (server, key) = blue_green();
    let rows = sample_rows();
    let blue_score = numbers(&server.score_authed(&key, &sample_request(), None).body);
    let green_reply = server.score_authed(&key, &sample_request(), Some("green"));
    let green_score = numbers(&green_reply.body);
    assert_model_1(&server.score_authed(&key, &sample_request(), None).body);
    let pin = json!({"azureml-model-deployment": "green"});
    let results = tritonclient(
        &server,
        &key,
        json!([
            {"op": "live"},
            {"op": "server_ready"},
            {"op": "server_metadata"},
            {"op": "model_ready", "model": "model-1"},
            {"op": "metadata", "model": "model-1"},
            {"op": "metadata", "model": "model-2", "headers": pin},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows, "binary": true},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows, "binary": false,
             "outputs": ["variable"], "binary_output": false, "id": "req-7"},
            {"op": "infer", "model": "model-2", "input": "X", "datatype": "FP32", "rows": rows, "binary": true, "headers": pin},
            {"op": "infer", "model": "model-2", "input": "X", "datatype": "FP32", "rows": rows, "binary": false,
             "outputs": ["variable"], "binary_output": false, "headers": pin},
            {"op": "model_ready", "model": "model-2", "headers": pin},
        ]),
    );
    assert_eq!(results[0], json!({"live": true}));
    assert_eq!(results[1], json!({"ready": true}));
    assert_eq!(results[2]["extensions"], json!(["binary_tensor_data"]), "{}", results[2]);
    assert_eq!(results[3], json!({"ready": true}));
    assert_eq!(results[4]["name"], "model-1");
    assert_eq!(results[4]["inputs"], json!([{"name": "X", "datatype": "FP64", "shape": [-1, 10]}]));
    assert_eq!(results[4]["outputs"], json!([{"name": "variable", "datatype": "FP64", "shape": [-1, 1]}]));
    assert_eq!(results[5]["inputs"], json!([{"name": "X", "datatype": "FP32", "shape": [-1, 10]}]));

    // model-1, binary in and (tritonclient's default) binary out; then JSON both ways.
    assert_eq!(results[6]["binary"], json!({"variable": true}), "{}", results[6]);
    assert_close(&flat(&results[6]["outputs"]["variable"]), &blue_score, "model-1 binary");
    assert_eq!(results[6]["response"]["model_name"], "model-1");
    assert_eq!(results[6]["response"]["outputs"][0]["shape"], json!([2, 1]));
    assert_eq!(results[7]["binary"], json!({"variable": false}), "{}", results[7]);
    assert_close(&flat(&results[7]["outputs"]["variable"]), &blue_score, "model-1 JSON");
    assert_eq!(results[7]["response"]["id"], "req-7");
    // model-2 on the 0-traffic deployment, pinned.
    assert_close(&flat(&results[8]["outputs"]["variable"]), &green_score, "model-2 binary");
    assert_eq!(results[8]["response"]["outputs"][0]["datatype"], "FP32");
    assert_close(&flat(&results[9]["outputs"]["variable"]), &green_score, "model-2 JSON");
    assert_eq!(results[10], json!({"ready": true}));
    assert_ne!(blue_score, green_score, "the two models answer differently");
}

/// Two endpoints in one server: tritonclient reaches each at its own base URL
/// (`host:port/endpoints/NAME`), with that endpoint's key only, and gets its model.
#[test]
fn tritonclient_reaches_each_endpoint_at_its_own_url() {
    let server = Server::start();
    let mut keys = Vec::new();
    for (ep, model) in [("ep-a", "model-1"), ("ep-b", "model-2")] {
        assert_eq!(server.admin("PUT", &format!("/v1/endpoints/{ep}"), Some(&json!({}))).status, 201);
        let doc = json!({"model": {"path": repo().join("models").join(model)}});
        let r = server.admin("PUT", &format!("/v1/endpoints/{ep}/deployments/blue?all_traffic=true"), Some(&doc));
        assert_eq!(r.status, 201, "{}", r.body);
        eventually("blue takes the traffic", std::time::Duration::from_secs(60), || {
            let shown = server.admin("GET", &format!("/v1/endpoints/{ep}"), None).json();
            if shown["traffic"]["blue"] == 100 {
                Ok(())
            } else {
                Err(shown.to_string())
            }
        });
        keys.push(server.key_of(ep));
    }
    let key = |i: usize| keys[i].clone();
    let rows = sample_rows();
    let url = |ep: &str| format!("{}/endpoints/{ep}", server.scoring);
    let a = tritonclient_at(
        &url("ep-a"),
        &key(0),
        json!([
            {"op": "server_ready"},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows, "binary": true},
            {"op": "metadata", "model": "model-2"},
        ]),
    );
    assert_eq!(a[0], json!({"ready": true}));
    assert_close(&flat(&a[1]["outputs"]["variable"]), &MODEL_1_ANSWER, "ep-a's model-1");
    assert_eq!(a[2]["status"], "404", "ep-a serves no model-2: {}", a[2]);
    let b = tritonclient_at(
        &url("ep-b"),
        &key(1),
        json!([{"op": "infer", "model": "model-2", "input": "X", "datatype": "FP32", "rows": rows, "binary": true}]),
    );
    assert_eq!(b[0]["response"]["model_name"], "model-2", "{}", b[0]);
    let crossed = tritonclient_at(&url("ep-b"), &key(0), json!([{"op": "metadata", "model": "model-2"}]));
    assert_eq!(crossed[0]["status"], "401", "ep-a's key on ep-b: {}", crossed[0]);
}

#[test]
fn tritonclient_users_read_what_is_wrong() {
    let (server, key) = blue_green();
    let rows = sample_rows();
    let results = tritonclient(
        &server,
        &key,
        json!([
            // model-1 takes FP64.
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP32", "rows": rows, "binary": true},
            // 9 features instead of 10.
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": [[1, 2, 3, 4, 5, 6, 7, 8, 9]], "binary": false},
            // Traffic goes to blue, which serves model-1.
            {"op": "infer", "model": "model-2", "input": "X", "datatype": "FP32", "rows": rows, "binary": true},
            {"op": "metadata", "model": "model-2"},
            {"op": "infer", "model": "model-1", "input": "features", "datatype": "FP64", "rows": rows, "binary": true},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows, "binary": true,
             "outputs": ["nope"]},
            {"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows, "binary": true,
             "headers": {"azureml-model-deployment": "purple"}},
        ]),
    );
    let error =
        |i: usize| results[i]["error"].as_str().unwrap_or_else(|| panic!("no error: {}", results[i])).to_string();
    assert!(error(0).contains("[400]") && error(0).contains("FP64") && error(0).contains("FP32"), "{}", error(0));
    assert!(error(1).contains("[400]") && error(1).contains("[N, 10]") && error(1).contains("[1, 9]"), "{}", error(1));
    assert!(error(2).contains("[404]") && error(2).contains("serves model \"model-1\""), "{}", error(2));
    assert!(error(3).contains("serves model \"model-1\""), "{}", error(3));
    assert!(error(4).contains("no input \"features\"") && error(4).contains("X"), "{}", error(4));
    assert!(error(5).contains("no output \"nope\"") && error(5).contains("variable"), "{}", error(5));
    assert!(error(6).contains("[404]") && error(6).contains("purple"), "{}", error(6));

    // A wrong key: the client reads the protocol's {"error"}.
    let denied = tritonclient(&server, "not-the-key", json!([{"op": "metadata", "model": "model-1"}]));
    assert!(denied[0]["error"].as_str().unwrap().contains("credentials"), "{}", denied[0]);
}

/// POSTs raw bytes to a v2 route with the key; the body comes back as bytes.
fn post_raw(
    server: &Server,
    key: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let auth = format!("Bearer {key}");
    let mut b = ureq::http::Request::builder().method("POST").uri(format!("{}{path}", server.scoring));
    b = b.header("Authorization", auth.as_str());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut resp = agent().run(b.body(body.to_vec()).unwrap()).unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = resp.body_mut().read_to_vec().unwrap();
    (status, headers, body)
}

fn error_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"));
    v["error"].as_str().unwrap_or_else(|| panic!("no \"error\": {v}")).to_string()
}

#[test]
fn raw_requests_get_clear_errors_and_binary_answers() {
    let (server, key) = blue_green();
    let infer = "/v2/models/model-1/infer";
    let json_input = |shape: Value, data: Value| {
        json!({"inputs": [{"name": "X", "shape": shape, "datatype": "FP64", "data": data}]}).to_string().into_bytes()
    };

    // Nested data, no Content-Type: answered as /score answers.
    let (status, _, body) = post_raw(&server, &key, infer, &[], &json_input(json!([2, 10]), sample_rows()));
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    let got: Vec<f64> = v["outputs"][0]["data"].as_array().unwrap().iter().map(|n| n.as_f64().unwrap()).collect();
    assert_model_1(&serde_json::to_string(&got).unwrap());

    // The shape says 2 rows, the data holds 1.
    let (status, _, body) =
        post_raw(&server, &key, infer, &[], &json_input(json!([2, 10]), json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])));
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("holds 20 elements but data has 10"), "{}", error_of(&body));
    let (status, _, body) = post_raw(&server, &key, infer, &[], &json_input(json!([1, 10]), json!(["a"])));
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("data must be numbers (FP64)"), "{}", error_of(&body));
    let (status, _, body) = post_raw(&server, &key, infer, &[], b"{\"inputs\": 3}");
    assert_eq!(status, 400);
    assert!(error_of(&body).contains("expected {\"inputs\""), "{}", error_of(&body));

    // Binary in, binary out, by hand: the JSON header's length in both directions.
    let header = json!({
        "inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "parameters": {"binary_data_size": 80}}],
        "outputs": [{"name": "variable", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    for x in 1..=10 {
        body.extend_from_slice(&(x as f64).to_le_bytes());
    }
    let length = header.len().to_string();
    let (status, headers, answer) =
        post_raw(&server, &key, infer, &[("Inference-Header-Content-Length", &length)], &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let n: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("inference-header-content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .expect("the answer's Inference-Header-Content-Length");
    let head: Value = serde_json::from_slice(&answer[..n]).unwrap();
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], 8, "{head}");
    let value = f64::from_le_bytes(answer[n..].try_into().unwrap());
    assert!((value - MODEL_1_ANSWER[0]).abs() <= 1e-9 * MODEL_1_ANSWER[0], "{value}");
    assert!(headers.iter().any(|(k, v)| k == "azureml-model-deployment" && v == "blue"), "{headers:?}");

    // A binary length that does not match the shape, and one past the body.
    let (status, _, answer) =
        post_raw(&server, &key, infer, &[("Inference-Header-Content-Length", &length)], &body[..body.len() - 8]);
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("binary_data_size is 80"), "{}", error_of(&answer));
    let (status, _, answer) = post_raw(&server, &key, infer, &[("Inference-Header-Content-Length", "100000")], &body);
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("Inference-Header-Content-Length"), "{}", error_of(&answer));

    // No key; an unknown v2 route; the errors are the protocol's {"error"}.
    assert_eq!(server.get("/v2/health/live").status, 401, "the endpoint's key is needed once it exists");
    let r = server.get("/v2/models/model-1");
    assert_eq!(r.status, 401);
    assert!(r.json()["error"].as_str().unwrap().contains("credentials"), "{}", r.body);
    let (status, _, answer) = post_raw(&server, &key, "/v2/models/model-1/explain", &[], b"{}");
    assert_eq!(status, 404);
    assert!(error_of(&answer).contains("no such v2 route"));
    let swagger = server.get("/swagger.json").json();
    assert!(swagger["paths"]["/v2/models/{model}/infer"]["post"].is_object(), "{swagger}");
    // /score keeps its own spelling.
    assert!(server.score(b"{}", &[]).message().contains("credentials"));
}

#[test]
fn a_tensor_named_twice_is_a_400_naming_it_not_an_answer_that_many_times_larger() {
    // Naming one output 10,000 times made a 360 MB answer from a 360 KB request.
    let (server, key) = blue_green();
    let infer = "/v2/models/model-1/infer";
    let x = json!({"name": "X", "shape": [2, 10], "datatype": "FP64", "data": sample_rows()});
    let outputs: Vec<Value> = (0..10_000).map(|_| json!({"name": "variable"})).collect();
    let body = json!({"inputs": [x], "outputs": outputs}).to_string();
    let (status, _, answer) = post_raw(&server, &key, infer, &[], body.as_bytes());
    assert_eq!(status, 400, "{} bytes answered", answer.len());
    assert!(error_of(&answer).contains("output \"variable\" appears more than once"), "{}", error_of(&answer));
    let body = json!({"inputs": [x, x]}).to_string();
    let (status, _, answer) = post_raw(&server, &key, infer, &[], body.as_bytes());
    assert_eq!(status, 400);
    assert!(error_of(&answer).contains("input \"X\" appears more than once"), "{}", error_of(&answer));
    // Each once is still fine.
    let body = json!({"inputs": [x], "outputs": [{"name": "variable"}]}).to_string();
    let (status, _, answer) = post_raw(&server, &key, infer, &[], body.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
}

#[test]
fn model_name_and_version_come_from_the_spec() {
    let server = Server::start();
    // No endpoint yet: live, not ready, no key to check.
    assert_eq!(server.get("/v2/health/live").status, 200);
    let r = server.get("/v2/health/ready");
    assert_eq!(r.status, 503);
    assert!(r.json()["error"].as_str().unwrap().contains("not ready"), "{}", r.body);
    server.create_endpoint();
    server.deploy(
        "blue",
        "model-1",
        json!({"model": {"path": repo().join("models/model-1"), "name": "regressor", "version": 3}}),
    );
    assert_eq!(server.set_traffic(json!({"blue": 100})).status, 200);
    let key = server.primary_key();
    let auth = format!("Bearer {key}");
    let get =
        |path: &str| http(&agent(), "GET", &format!("{}{path}", server.scoring), &[("Authorization", &auth)], None);
    let meta = get("/v2/models/regressor").json();
    assert_eq!(meta["name"], "regressor");
    assert_eq!(meta["versions"], json!(["3"]));
    assert_eq!(get("/v2/models/regressor/versions/3/ready").status, 200);
    let wrong = get("/v2/models/regressor/versions/2");
    assert_eq!(wrong.status, 404);
    assert!(wrong.json()["error"].as_str().unwrap().contains("serves version \"3\""), "{}", wrong.body);
    assert_eq!(get("/v2/models/model-1").status, 404);

    // A name that cannot be a URL segment is refused at the edge, and nothing changes.
    let bad = json!({"name": "blue", "model": {"path": repo().join("models/model-1"), "name": "a/b"}});
    let r = server.admin("PUT", "/v1/deployments/blue", Some(&bad));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("model.name"), "{}", r.body);
    assert_eq!(get("/v2/models/regressor").status, 200);
}

/// The sum of a metric family's samples whose labels contain all of `labels`.
fn metric(s: &Server, name: &str, labels: &[&str]) -> f64 {
    let text = s.admin("GET", "/metrics", None).body;
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn v2_infers_are_mirrored_as_v2_infers() {
    let server = Server::start();
    server.create_endpoint();
    server.deploy("blue", "model-1", json!({}));
    server.deploy("shadow", "model-1", json!({}));
    assert_eq!(server.set_traffic(json!({"blue": 100})).status, 200);
    let r = server.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"shadow": 50}})));
    assert_eq!(r.status, 200, "{}", r.body);
    let key = server.primary_key();
    let body = json!({"inputs": [{"name": "X", "shape": [2, 10], "datatype": "FP64", "data": sample_rows()}]});
    for _ in 0..40 {
        let (status, _, answer) = post_raw(&server, &key, "/v2/models/model-1/infer", &[], body.to_string().as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    }
    // The shadow reads the copies as v2 requests too: answered 200, not refused as /score bodies.
    eventually("mirror copies answered 200", std::time::Duration::from_secs(20), || {
        let ok =
            metric(&server, "switchyard_requests_total", &["deployment=\"shadow\"", "role=\"mirror\"", "code=\"200\""]);
        if ok >= 3.0 {
            Ok(())
        } else {
            Err(format!("{ok} copies answered 200 so far"))
        }
    });
    let refused =
        metric(&server, "switchyard_requests_total", &["deployment=\"shadow\"", "role=\"mirror\"", "code=\"400\""]);
    assert_eq!(refused, 0.0, "no mirror copy of a v2 infer is refused as a /score body");
}

/// Deploys `script` as `score.py` of deployment `name` (model folder `model`, so v2 calls name
/// that model) with all the traffic, and waits until it serves; the folder lives as long as
/// the returned guard.
pub(crate) fn python_deployment(server: &Server, name: &str, model: &str, script: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("code")).unwrap();
    std::fs::create_dir_all(dir.path().join(model)).unwrap();
    std::fs::write(dir.path().join("code/score.py"), script).unwrap();
    let doc = json!({
        "name": name,
        "model": {"path": dir.path().join(model)},
        "code_configuration": {"code": dir.path().join("code"), "scoring_script": "score.py"},
    });
    let r = server.admin("PUT", &format!("/v1/deployments/{name}"), Some(&doc));
    assert!(r.status == 201 || r.status == 200, "{}", r.body);
    server.wait_state(name, "Succeeded");
    assert_eq!(server.set_traffic(json!({ name: 100 })).status, 200);
    dir
}

#[test]
fn python_deployments_get_the_v2_body_as_it_came() {
    let python = venv_made_by("scripts/setup.sh", "target/python-test-venv", &[("SWITCHYARD_SKIP_BUILD", "1")]);
    let server = Server::start_with(&["--python", &python]);
    server.create_endpoint();
    let script = "import json\ndef init():\n    pass\ndef run(raw_data):\n    return {\"got\": json.loads(raw_data)}\n";
    let _dir = python_deployment(&server, "pyecho", "echo-model", script);
    let key = server.primary_key();
    let body = json!({"inputs": [{"name": "anything", "shape": [1], "datatype": "BYTES", "data": ["hello"]}]});
    let (status, _, answer) = post_raw(&server, &key, "/v2/models/echo-model/infer", &[], body.to_string().as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["got"], body, "the script saw the v2 body unchanged");
    // Its metadata declares no tensors: the script's are its own business.
    let auth = format!("Bearer {key}");
    let meta =
        http(&agent(), "GET", &format!("{}/v2/models/echo-model", server.scoring), &[("Authorization", &auth)], None);
    assert_eq!(meta.json()["inputs"], json!([]), "{}", meta.body);
    assert_eq!(meta.json()["platform"], "switchyard_hook");
}
