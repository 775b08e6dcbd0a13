//! Azure's data collector, locally (issue 28): `data_collector` in the deployment YAML,
//! payload logging on ONNX and Python deployments (live and mirror, joined by the request's
//! id), the real `azureml-ai-monitoring` Collector in a score.py, files read back with
//! `online-deployment collected`, SIGTERM and a failing folder. Real servers, real files.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn payload_logging(extra: Value) -> Value {
    let mut dc = json!({"collections": {"request": {"enabled": "True"}, "response": {"enabled": "True"}},
                        "rolling_rate": "minute", "request_logging": {"capture_headers": ["x-user-id"]}});
    json_patch::merge(&mut dc, &extra);
    json!({"data_collector": dc, "request_settings": {"max_concurrent_requests_per_instance": 8}})
}

/// `online-deployment collected -o json`: the records, newest first.
fn collected(s: &Server, name: &str, more: &[&str]) -> Vec<Value> {
    let mut args = vec!["online-deployment", "collected", "--name", name, "--limit", "10000", "-o", "json"];
    args.extend_from_slice(more);
    s.cli_json(&args)["records"].as_array().unwrap().clone()
}

/// Waits until deployment `name` has at least `n` records of `collection`.
fn wait_records(s: &Server, name: &str, collection: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} {collection} records of {name}"), Duration::from_secs(60), || {
        let records = collected(s, name, &["--collection", collection]);
        if records.len() >= n {
            Ok(records)
        } else {
            Err(format!("{} so far", records.len()))
        }
    })
}

fn metric(s: &Server, name: &str, labels: &[&str]) -> f64 {
    let text = s.admin("GET", "/metrics", None).body;
    text.lines()
        .filter(|l| l.starts_with(name) && l.len() > name.len() && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|lab| l.contains(lab)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Payload logging on ONNX deployments: every request and answer of blue, with the captured
/// header; green's mirror copies marked `mirror` and joined to blue's records by the request's
/// id; files laid out by endpoint/deployment/collection/date/hour/minute; the counts in
/// `show` and the metrics; a sampling rate honoured.
#[test]
fn payload_logging_records_live_and_mirror_answers_joined_by_request_id() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--data-dir", data.path().to_str().unwrap()]);
    s.create_endpoint();
    let shown = s.deploy("blue", "model-1", payload_logging(json!({})));
    assert_eq!(shown["data_collector"]["collections"]["request"]["enabled"], "True", "as written: {shown}");
    s.deploy("green", "model-1", payload_logging(json!({})));
    s.set_traffic(json!({"blue": 100}));
    assert_eq!(s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"green": 50}}))).status, 200);
    let key = s.primary_key();
    let auth = format!("Bearer {key}");
    let mut sent = BTreeMap::new();
    for i in 0..40 {
        let body = body_with_x00(f64::from(i));
        let user = format!("u{i}");
        let r = s.score(&body, &[("Authorization", &auth), ("x-user-id", &user)]);
        assert_eq!(r.status, 200, "{}", r.body);
        sent.insert(r.header("x-request-id").unwrap().to_string(), (body, user, r.json()));
    }
    let requests = wait_records(&s, "blue", "request", 40);
    let responses = wait_records(&s, "blue", "response", 40);
    assert_eq!((requests.len(), responses.len()), (40, 40));
    for r in &requests {
        let (body, user, _) = &sent[r["xrequestid"].as_str().unwrap()];
        assert_eq!(r["type"], "azureml.inference.request");
        assert_eq!(
            (r["role"].as_str(), r["status"].as_u64(), r["path"].as_str()),
            (Some("live"), Some(200), Some("/score"))
        );
        assert_eq!(r["correlationid"], r["xrequestid"]);
        assert_eq!(r["data"], serde_json::from_slice::<Value>(body).unwrap());
        assert_eq!(r["headers"]["x-user-id"], user.as_str(), "captured: {r}");
        assert!(r["headers"].get("authorization").is_none());
    }
    for r in &responses {
        assert_eq!(r["data"], sent[r["xrequestid"].as_str().unwrap()].2, "the answer as sent: {r}");
    }
    // The v2 route is logged too, with its path.
    let agent = ureq::Agent::new_with_defaults();
    let infer = json!({"inputs": [{"name": "X", "shape": [1, 10], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}]});
    let v2 = http(
        &agent,
        "POST",
        &format!("{}/v2/models/model-1/infer", s.scoring),
        &[("Authorization", &auth), ("Content-Type", "application/json"), ("azureml-model-deployment", "blue")],
        Some(infer.to_string().as_bytes()),
    );
    assert_eq!(v2.status, 200, "{}", v2.body);
    let v2_id = v2.header("x-request-id").unwrap().to_string();
    let logged = eventually("the v2 request's record", Duration::from_secs(30), || {
        collected(&s, "blue", &["--collection", "request"])
            .into_iter()
            .find(|r| r["xrequestid"] == v2_id.as_str())
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!((logged["path"].as_str(), logged["data"].clone()), (Some("/v2/models/model-1/infer"), infer));
    // Green saw copies of some of them: its records are marked and join blue's.
    let copies = eventually("green's mirror records", Duration::from_secs(60), || {
        let c = collected(&s, "green", &["--collection", "response"]);
        if c.is_empty() {
            Err("none yet".into())
        } else {
            Ok(c)
        }
    });
    for c in &copies {
        assert_eq!(c["role"], "mirror", "{c}");
        let (_, _, live_answer) = sent.get(c["xrequestid"].as_str().unwrap()).expect("a request blue answered");
        assert_eq!(&c["data"], live_answer, "the same model answers the same");
    }
    // The layout on disk, by minute.
    let minute_files: Vec<_> = walk(&data.path().join("my-endpoint/blue/request"));
    assert!(!minute_files.is_empty());
    for f in &minute_files {
        let rel = f.strip_prefix(data.path().join("my-endpoint/blue/request")).unwrap().to_str().unwrap().to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 5, "YYYY/MM/DD/HH/MM.jsonl: {rel}");
        assert!(parts[4].ends_with(".jsonl") && parts[0].len() == 4, "{rel}");
    }
    let status = &s.admin("GET", "/v1/deployments/blue", None).json()["data_collector_status"];
    assert_eq!(status["written"], 82, "{status}");
    assert_eq!((status["dropped"].as_u64(), status["failed"].as_u64()), (Some(0), Some(0)), "{status}");
    assert!(metric(&s, "switchyard_data_collector_records", &["deployment=\"blue\"", "outcome=\"written\""]) >= 82.0);

    // Half the requests sampled: the draw is per request, so 200 give about 100.
    let r = s.admin("PATCH", "/v1/deployments/blue", Some(&json!({"data_collector": {"sampling_rate": 0.5}})));
    assert_eq!(r.status, 200, "{}", r.body);
    s.wait_state("blue", "Succeeded");
    let before = collected(&s, "blue", &["--collection", "request"]).len();
    for i in 0..200 {
        assert_eq!(s.score_authed(&key, &body_with_x00(f64::from(i)), Some("blue")).status, 200);
    }
    let flushed =
        |n: usize| s.admin("GET", "/v1/deployments/blue", None).json()["data_collector_status"]["written"] == n;
    eventually("the sampled records written", Duration::from_secs(30), || {
        let n = collected(&s, "blue", &["--collection", "request"]).len() - before;
        let responses = collected(&s, "blue", &["--collection", "response"]).len() - 41;
        if n == responses && flushed(2 * n) {
            Ok(())
        } else {
            Err(format!("{n} requests, {responses} responses"))
        }
    });
    let sampled = collected(&s, "blue", &["--collection", "request"]).len() - before;
    assert!((60..=140).contains(&sampled), "about half of 200 sampled: {sampled}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}

/// `data_collector` is checked as Azure defines it: a bad value is a 400 naming the field,
/// and nothing changes.
#[test]
fn a_bad_data_collector_is_refused_naming_the_field() {
    let s = Server::start();
    s.create_endpoint();
    for (dc, says) in [
        (json!({"sampling_rate": 2}), "data_collector.sampling_rate"),
        (json!({"rolling_rate": "week"}), "data_collector.rolling_rate"),
        (
            json!({"collections": {"model_inputs": {"enabled": "maybe"}}}),
            "data_collector.collections.model_inputs.enabled",
        ),
        (
            json!({"request_logging": {"capture_headers": ["not a header"]}}),
            "data_collector.request_logging.capture_headers",
        ),
    ] {
        let doc = json!({"name": "blue", "model": {"path": repo().join("models/model-1")}, "data_collector": dc});
        let r = s.admin("PUT", "/v1/deployments/blue", Some(&doc));
        assert_eq!(r.status, 400, "{dc}: {}", r.body);
        assert!(r.body.contains(says), "{says}: {}", r.body);
    }
    assert_eq!(s.admin("GET", "/v1/deployments/blue", None).status, 404, "nothing was created");
}

/// Azure's documented score.py, unchanged: `Collector(name="model_inputs")` in init(), pandas
/// DataFrames collected in run(). Its records land beside the payload records, inputs joined
/// to outputs by the collector's correlation context, and both to the payload records by the
/// request's id, though the script passes no context of its own to the inputs.
#[test]
fn the_azure_collector_in_score_py_works_unchanged_and_joins_the_payload_records() {
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_with(&["--python", &test_venv_python(), "--data-dir", data.path().to_str().unwrap()]);
    s.create_endpoint();
    let fixture = repo().join("tests/fixtures/python/collector");
    let doc = json!({
        "name": "blue",
        "model": {"path": fixture.join("model")},
        "code_configuration": {"code": fixture.join("code"), "scoring_script": "score.py"},
        "data_collector": {"collections": {
            "model_inputs": {"enabled": "True"}, "model_outputs": {"enabled": "True"},
            "request": {"enabled": "True"}, "response": {"enabled": "True"}}},
    });
    let r = s.admin("PUT", "/v1/deployments/blue", Some(&doc));
    assert_eq!(r.status, 201, "{}", r.body);
    eventually("blue loaded its score.py", Duration::from_secs(120), || {
        let v = s.admin("GET", "/v1/deployments/blue?wait=10", None).json();
        match v["provisioning_state"].as_str() {
            Some("Succeeded") => Ok(()),
            Some("Failed") => panic!("blue failed: {v}"),
            _ => Err(v.to_string()),
        }
    });
    s.set_traffic(json!({"blue": 100}));
    let key = s.primary_key();
    let mut ids = BTreeSet::new();
    for i in 0..5 {
        let body = json!({"data": {"a": [i, 1], "b": [2, 3]}}).to_string();
        let r = s.score_authed(&key, body.as_bytes(), None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), json!({"total": {"0": i + 2, "1": 4}}));
        ids.insert(r.header("x-request-id").unwrap().to_string());
    }
    let inputs = wait_records(&s, "blue", "model_inputs", 5);
    let outputs = wait_records(&s, "blue", "model_outputs", 5);
    let payload = wait_records(&s, "blue", "request", 5);
    let payload_ids: BTreeSet<String> = payload.iter().map(|r| r["xrequestid"].as_str().unwrap().to_string()).collect();
    assert_eq!(payload_ids, ids);
    for r in inputs.iter().chain(&outputs) {
        assert_eq!(r["collectdatatype"], "pandas.core.frame.DataFrame", "{r}");
        assert!(r["agent"].as_str().unwrap().starts_with("azureml-ai-monitoring/"), "{r}");
        let rid = r["xrequestid"].as_str().expect("the request it was collected in");
        assert!(ids.contains(rid), "{r}");
        assert_eq!(r["correlationid"], rid, "no context passed: the request's id is the correlation id");
    }
    let by_id = |records: &[Value]| -> BTreeMap<String, Value> {
        records.iter().map(|r| (r["correlationid"].as_str().unwrap().to_string(), r["data"].clone())).collect()
    };
    let (ins, outs) = (by_id(&inputs), by_id(&outputs));
    assert_eq!(ins.keys().collect::<Vec<_>>(), outs.keys().collect::<Vec<_>>(), "inputs join outputs");
    for (id, input) in &ins {
        // The DataFrame as JSON records (df.to_json(orient="records")).
        let rows = input.as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1], json!({"a": 1, "b": 3}));
        assert_eq!(outs[id].as_array().unwrap()[1], json!({"total": 4}));
    }

    // A script's own context with a time in milliseconds: its posts are refused (400, said in
    // the deployment's log by the Collector), the answer is unaffected, and the next request's
    // records are written: one bad post stops nothing.
    let body = json!({"data": {"a": [1, 1], "b": [2, 3]}, "context_timestamp": 1_765_000_000_000u64}).to_string();
    let r = s.score_authed(&key, body.as_bytes(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    eventually("the Collector's refusal in the log", Duration::from_secs(30), || {
        let logs = s.admin("GET", "/v1/deployments/blue/logs?lines=500", None).body;
        if logs.contains("ce-time must be whole seconds") {
            Ok(())
        } else {
            Err(logs.lines().last().unwrap_or_default().to_string())
        }
    });
    let r = s.score_authed(&key, json!({"data": {"a": [9], "b": [1]}}).to_string().as_bytes(), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let after = r.header("x-request-id").unwrap().to_string();
    let inputs = wait_records(&s, "blue", "model_inputs", 6);
    assert!(inputs.iter().any(|r| r["xrequestid"] == after.as_str()), "{inputs:?}");
    assert_eq!(inputs.len(), 6, "the refused one is not there");
}

/// The sink never touches scoring: with a data folder that cannot be written, every request
/// is answered, and `show`, the metrics and the log say why records are lost. And SIGTERM
/// writes every record of the requests answered before it.
#[test]
fn a_failing_folder_never_fails_scoring_and_sigterm_flushes_every_record() {
    let data = tempfile::tempdir().unwrap();
    let blocked = data.path().join("not-a-folder");
    std::fs::write(&blocked, b"a file where the data folder should be").unwrap();
    let s = Server::start_with(&["--data-dir", blocked.to_str().unwrap()]);
    s.create_endpoint();
    s.deploy("blue", "model-1", payload_logging(json!({})));
    s.set_traffic(json!({"blue": 100}));
    let key = s.primary_key();
    for _ in 0..20 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
    let status = eventually("the failures reported", Duration::from_secs(30), || {
        let st = s.admin("GET", "/v1/deployments/blue", None).json()["data_collector_status"].clone();
        if st["failed"].as_u64() == Some(40) {
            Ok(st)
        } else {
            Err(st.to_string())
        }
    });
    assert!(status["last_error"]["message"].as_str().unwrap().contains("cannot write collected records"), "{status}");
    assert_eq!(metric(&s, "switchyard_data_collector_records", &["deployment=\"blue\"", "outcome=\"failed\""]), 40.0);

    let good = data.path().join("data");
    let mut s = Server::start_with(&["--data-dir", good.to_str().unwrap()]);
    s.create_endpoint();
    s.deploy("blue", "model-1", payload_logging(json!({"collections": {"response": {"enabled": "False"}}})));
    s.set_traffic(json!({"blue": 100}));
    let key = s.primary_key();
    for _ in 0..300 {
        assert_eq!(s.score_authed(&key, &sample_request(), None).status, 200);
    }
    assert!(s.terminate().success());
    let lines: usize = walk(&good.join("my-endpoint/blue/request"))
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap().lines().count())
        .sum();
    assert_eq!(lines, 300, "every answered request's record is on disk after SIGTERM");
}
