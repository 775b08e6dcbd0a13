//! OpenTelemetry traces (issue 30), end to end: a real server exporting over OTLP/HTTP to a real
//! receiver (tests/traces/receiver.py, which decodes the protobuf with the OpenTelemetry
//! project's own messages), real clients sending a W3C `traceparent`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{agent, body_with_x00, eventually, http, repo, sample_request, Server};

/// The receiver, running until dropped.
struct Receiver {
    child: Child,
    url: String,
}

impl Receiver {
    fn start() -> Self {
        let python = crate::oip::venv_made_by("scripts/oip-client.sh", "target/oip-client-venv", &[]);
        let mut child = Command::new(python)
            .arg(repo().join("tests/traces/receiver.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tests/traces/receiver.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().parse().unwrap_or_else(|_| panic!("the receiver printed {line:?}"));
        Receiver { child, url: format!("http://127.0.0.1:{port}") }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let r = http(&agent(), "GET", &format!("{}/spans", self.url), &[], None);
        serde_json::from_str(&r.body).unwrap()
    }

    /// The spans of `trace`, once `done` says they are all there.
    fn trace(&self, what: &str, trace: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        eventually(what, Duration::from_secs(20), || {
            let spans: Vec<Value> = self.spans().into_iter().filter(|s| s["trace_id"] == trace).collect();
            if done(&spans) {
                Ok(spans)
            } else {
                Err(format!("{} span(s) of the trace so far: {spans:?}", spans.len()))
            }
        })
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server exporting to `receiver`, its batches sent every 50 ms.
fn traced_server(receiver: &Receiver, extra: &[&str]) -> Server {
    Server::start_with_env(
        extra,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "switchyard-under-test"),
        ],
    )
}

/// A traced server with blue (all traffic) and green (none), both model-1.
fn blue_green(receiver: &Receiver) -> Server {
    let s = traced_server(receiver, &[]);
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    s.deploy("green", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100, "green": 0})).status, 200);
    s
}

/// A traced server with `slow` (the test model whose run takes x00 ms; one instance) holding
/// all traffic, and its key.
fn slow_server(receiver: &Receiver, timeout_ms: u64) -> (Arc<Server>, String) {
    let s = Arc::new(traced_server(receiver, &[]));
    s.create_endpoint();
    s.deploy("slow", "test/slow", json!({"request_settings": {"request_timeout_ms": timeout_ms}}));
    assert_eq!(s.set_traffic(json!({"slow": 100})).status, 200);
    let key = s.primary_key();
    (s, key)
}

/// A caller's trace id and span id, new each time.
fn caller() -> (String, String) {
    (format!("{:032x}", fastrand::u128(1..)), format!("{:016x}", fastrand::u64(1..)))
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(found.len(), 1, "one {name:?} span: {spans:?}");
    found[0]
}

/// Whether `spans` hold the request's span (kind server: its name is the route) and `stages`.
fn has(spans: &[Value], stages: &[&str]) -> bool {
    spans.iter().any(|s| s["kind"] == SERVER) && stages.iter().all(|n| !named(spans, n).is_empty())
}

/// The request's span: the one of kind server, named after its route.
fn request_of(spans: &[Value]) -> &Value {
    let found: Vec<&Value> = spans.iter().filter(|s| s["kind"] == SERVER).collect();
    assert_eq!(found.len(), 1, "one request span: {spans:?}");
    found[0]
}

/// Span kind SERVER in OTLP's enum.
const SERVER: u64 = 2;
/// Status code ERROR in OTLP's enum.
const ERROR: u64 = 2;

/// Asserts admission, then queue, then run, each a child of `request` and inside it.
fn assert_stages(spans: &[Value], request: &Value) {
    let (admission, queue, run) = (one(spans, "admission"), one(spans, "queue"), one(spans, "run"));
    for stage in [admission, queue, run] {
        assert_eq!(stage["parent_span_id"], request["span_id"], "{stage} is a child of {request}");
        assert!(stage["start"].as_u64() >= request["start"].as_u64(), "{stage} starts in {request}");
        assert!(stage["end"].as_u64() <= request["end"].as_u64(), "{stage} ends in {request}");
    }
    assert!(admission["end"].as_u64() <= queue["start"].as_u64(), "admission, then the queue: {spans:?}");
    assert!(queue["end"].as_u64() <= run["start"].as_u64(), "the queue, then the run: {spans:?}");
}

#[test]
fn a_live_request_continues_the_callers_trace_through_its_stages_and_its_mirror_copy_links_to_it() {
    let receiver = Receiver::start();
    let s = blue_green(&receiver);
    assert_eq!(s.admin("PATCH", "/v1/endpoint", Some(&json!({"mirror_traffic": {"green": 50}}))).status, 200);
    let key = s.primary_key();
    let auth = format!("Bearer {key}");

    let (trace, parent) = caller();
    let traceparent = format!("00-{trace}-{parent}-01");
    let r = s.score(&sample_request(), &[("Authorization", &auth), ("traceparent", &traceparent)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = receiver.trace("the live request's spans", &trace, |s| has(s, &["admission", "queue", "run"]));
    let request = request_of(&spans);
    assert_eq!(request["parent_span_id"], parent.as_str(), "continued from the caller's span: {request}");
    assert_eq!(request["kind"], SERVER);
    assert_eq!(request["service"], "switchyard-under-test");
    let attributes = &request["attributes"];
    assert_eq!(attributes["endpoint"], "my-endpoint", "{request}");
    assert_eq!(attributes["deployment"], "blue", "{request}");
    assert_eq!(attributes["route"], "POST /score", "{request}");
    assert_eq!(request["name"], "POST /score", "named after the route, not the path");
    assert_eq!(attributes["status"], 200, "{request}");
    assert_eq!(attributes["request_id"].as_str(), r.header("x-request-id"), "{request}");
    assert_ne!(request["status_code"], ERROR);
    assert_stages(&spans, request);

    // The copy: a trace of its own, linked to the live request's span. Half the requests are
    // copied (the most a mirror takes): more requests, each in its own trace, until one is.
    let mut sent = vec![(trace.clone(), request["span_id"].as_str().unwrap().to_string())];
    let mirror = eventually("a mirror copy's span", Duration::from_secs(30), || {
        let all = receiver.spans();
        let copied = all.iter().find(|s| s["name"] == "mirror").cloned();
        if copied.is_none() {
            let (trace, parent) = caller();
            let traceparent = format!("00-{trace}-{parent}-01");
            assert_eq!(
                s.score(&sample_request(), &[("Authorization", &auth), ("traceparent", &traceparent)]).status,
                200
            );
            sent.push((trace, String::new()));
        }
        copied.ok_or_else(|| "no copy yet".to_string())
    });
    let linked = &mirror["links"][0];
    let live_trace = linked["trace_id"].as_str().unwrap();
    assert!(sent.iter().any(|(t, _)| t == live_trace), "linked to one of the live requests: {mirror}");
    let live = receiver.trace("the copied request's spans", live_trace, |s| has(s, &[]));
    assert_eq!(linked["span_id"], request_of(&live)["span_id"], "the link names the live request's span: {mirror}");
    assert_eq!(mirror["links"].as_array().unwrap().len(), 1);
    assert_ne!(mirror["trace_id"], live_trace, "{mirror}");
    assert_eq!(mirror["parent_span_id"], "", "a root: {mirror}");
    assert_eq!(mirror["attributes"]["deployment"], "green", "{mirror}");
    assert_eq!(mirror["attributes"]["status"], 200, "{mirror}");

    // gRPC's ModelInfer, through the same front door: `traceparent` comes as metadata.
    let (trace, parent) = caller();
    let url = format!("grpc://{}", s.grpc.clone().expect("the gRPC plane"));
    let rows = crate::oip::sample_rows();
    let plan = json!([{"op": "infer", "model": "model-1", "input": "X", "datatype": "FP64", "rows": rows,
                       "headers": {"traceparent": format!("00-{trace}-{parent}-01")}}]);
    let results = crate::oip::tritonclient_at(&url, &key, plan);
    assert!(results[0]["outputs"].is_object(), "{}", results[0]);
    let spans = receiver.trace("the gRPC call's spans", &trace, |s| has(s, &["run"]));
    let request = request_of(&spans);
    assert_eq!(request["parent_span_id"], parent.as_str());
    assert_eq!(request["attributes"]["route"], "inference.GRPCInferenceService/ModelInfer", "{request}");
    assert_eq!(request["attributes"]["status"], 200, "{request}");
    assert_stages(&spans, request);

    // A batching deployment: the request's run is the batch's, which says how large it was.
    let spec =
        json!({"model": {"path": repo().join("models/model-3"), "name": "mlp"}, "batching": {"max_batch_size": 8}});
    s.deploy("stacked", "model-3", spec);
    let (trace, parent) = caller();
    let rows: Vec<Vec<f64>> = (0..3).map(|r| (0..512).map(|c| ((r * 512 + c) % 7) as f64 - 3.0).collect()).collect();
    let headers = [("Authorization", auth.as_str()), ("azureml-model-deployment", "stacked")];
    let traceparent = format!("00-{trace}-{parent}-01");
    let r =
        s.score(json!({"data": rows}).to_string().as_bytes(), &[headers[0], headers[1], ("traceparent", &traceparent)]);
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = receiver.trace("the batched request's spans", &trace, |s| has(s, &["admission", "queue", "run"]));
    let request = request_of(&spans);
    assert_eq!(request["attributes"]["deployment"], "stacked");
    assert_stages(&spans, request);
    let run = one(&spans, "run");
    assert_eq!(run["attributes"]["batch_requests"], 1, "{run}");
    assert_eq!(run["attributes"]["batch_rows"], 3, "{run}");

    // A caller's trace that its sampler dropped (flags 00) is not sampled here either: nothing
    // of it is exported (checked once a later sampled request's spans are in).
    let (dropped, parent) = caller();
    let r =
        s.score(&sample_request(), &[("Authorization", &auth), ("traceparent", &format!("00-{dropped}-{parent}-00"))]);
    assert_eq!(r.status, 200);

    // Without a traceparent, a request starts a trace of its own.
    let before = receiver.spans().len();
    assert_eq!(s.score(&sample_request(), &[("Authorization", &auth)]).status, 200);
    let root = eventually("a new trace's request span", Duration::from_secs(20), || {
        let all = receiver.spans();
        all[before..]
            .iter()
            .find(|s| s["kind"] == SERVER && s["parent_span_id"] == "")
            .cloned()
            .ok_or_else(|| "not yet".to_string())
    });
    assert_eq!(root["attributes"]["deployment"], "blue");
    assert!(receiver.spans().iter().all(|s| s["trace_id"] != dropped.as_str()), "an unsampled trace is not exported");
}

#[test]
fn a_429_is_a_request_span_ended_at_admission() {
    let receiver = Receiver::start();
    // One instance, one request at a time: at most 2 in flight.
    let (s, key) = slow_server(&receiver, 60_000);
    let holders: Vec<_> = (0..2)
        .map(|_| {
            let (s, key) = (Arc::clone(&s), key.clone());
            std::thread::spawn(move || s.score_authed(&key, &body_with_x00(1500.0), None).status)
        })
        .collect();
    s.wait_inflight("slow", 2);
    let (trace, parent) = caller();
    let traceparent = format!("00-{trace}-{parent}-01");
    let auth = format!("Bearer {key}");
    let r = s.score(&body_with_x00(1.0), &[("Authorization", &auth), ("traceparent", &traceparent)]);
    assert_eq!(r.status, 429, "{}", r.body);
    for h in holders {
        assert_eq!(h.join().unwrap(), 200);
    }
    let spans = receiver.trace("the refused request's spans", &trace, |s| has(s, &["admission"]));
    let request = request_of(&spans);
    assert_eq!(request["parent_span_id"], parent.as_str());
    assert_eq!(request["attributes"]["status"], 429, "{request}");
    assert_ne!(request["status_code"], ERROR, "a 4xx is the caller's: the server span's status stays unset");
    let admission = one(&spans, "admission");
    assert_eq!(admission["parent_span_id"], request["span_id"]);
    assert_eq!(admission["status_code"], ERROR, "refused at admission: {admission}");
    assert!(named(&spans, "queue").is_empty() && named(&spans, "run").is_empty(), "never queued: {spans:?}");
}

#[test]
fn a_scoring_script_sees_the_trace_it_runs_in_among_its_request_headers() {
    let python =
        crate::oip::venv_made_by("scripts/setup.sh", "target/python-test-venv", &[("SWITCHYARD_SKIP_BUILD", "1")]);
    let receiver = Receiver::start();
    let s = traced_server(&receiver, &["--python", &python]);
    s.create_endpoint();
    let script = "def init():\n    pass\ndef run(raw_data, request_headers):\n    \
                  headers = {k.lower(): v for k, v in request_headers.items()}\n    \
                  return {\"traceparent\": headers.get(\"traceparent\")}\n";
    let _dir = crate::oip::python_deployment(&s, "pyecho", "echo-model", script);
    let key = s.primary_key();
    let (trace, parent) = caller();
    let auth = format!("Bearer {key}");
    let r = s.score(b"{}", &[("Authorization", &auth), ("traceparent", &format!("00-{trace}-{parent}-01"))]);
    assert_eq!(r.status, 200, "{}", r.body);
    let spans = receiver.trace("the script's request spans", &trace, |s| has(s, &["queue", "run"]));
    let request = request_of(&spans);
    let seen = r.json()["traceparent"].as_str().map(str::to_string);
    assert_eq!(seen, Some(format!("00-{trace}-{}-01", request["span_id"].as_str().unwrap())), "{}", r.body);
    // The run is the worker's round trip.
    assert_stages(&spans, request);
    // A request this server does not trace (the caller's sampled flag is clear) tells the
    // script so, in the caller's trace, so its own tracer does not start one.
    let (trace, parent) = caller();
    let r = s.score(b"{}", &[("Authorization", &auth), ("traceparent", &format!("00-{trace}-{parent}-00"))]);
    let seen = r.json()["traceparent"].as_str().unwrap().to_string();
    assert!(seen.starts_with(&format!("00-{trace}-")) && seen.ends_with("-00"), "{seen}");
    assert!(!seen.contains(&parent), "a span id of its own: {seen}");
}

#[test]
fn a_rollouts_events_are_spans_of_one_trace() {
    let receiver = Receiver::start();
    let s = blue_green(&receiver);
    let plan = json!({"to": "green", "steps": "50,100", "step_duration": "60s"});
    let started = s.admin("POST", "/v1/endpoint/rollout", Some(&plan));
    assert!(started.status == 200 || started.status == 201, "{}", started.body);
    assert_eq!(s.admin("POST", "/v1/endpoint/rollout/abort", None).status, 200);
    let events = eventually("the rollout's abort as a span", Duration::from_secs(20), || {
        let rollout: Vec<Value> = receiver.spans().into_iter().filter(|s| s["name"] == "rollout").collect();
        if rollout.iter().any(|s| s["attributes"]["event"].as_str().is_some_and(|e| e.starts_with("aborted"))) {
            Ok(rollout)
        } else {
            Err(format!("{rollout:?}"))
        }
    });
    assert!(events.len() >= 2, "the start and the abort at least: {events:?}");
    assert!(events.iter().all(|e| e["trace_id"] == events[0]["trace_id"]), "one trace: {events:?}");
    for e in &events {
        assert_eq!(e["attributes"]["to"], "green");
        let said = e["attributes"]["event"].as_str().unwrap();
        assert!(e["events"].as_array().unwrap().iter().any(|ev| ev["name"] == said), "the words as an event: {e}");
    }
}

#[test]
fn spans_still_queued_at_sigterm_are_sent_before_the_process_exits() {
    let receiver = Receiver::start();
    // Batches every 10 minutes: only the stop can send these spans.
    let mut s = Server::start_with_env(
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.url), ("OTEL_BSP_SCHEDULE_DELAY", "600000")],
    );
    s.create_endpoint();
    s.deploy("blue", "model-1", json!({}));
    assert_eq!(s.set_traffic(json!({"blue": 100})).status, 200);
    let key = s.primary_key();
    let (trace, parent) = caller();
    let auth = format!("Bearer {key}");
    let r =
        s.score(&sample_request(), &[("Authorization", &auth), ("traceparent", &format!("00-{trace}-{parent}-01"))]);
    assert_eq!(r.status, 200);
    assert!(receiver.spans().is_empty(), "nothing sent before the stop");
    assert!(s.terminate().success());
    let spans: Vec<Value> = receiver.spans().into_iter().filter(|s| s["trace_id"] == trace).collect();
    assert!(has(&spans, &["admission", "queue", "run"]), "sent by the time the process exited: {spans:?}");
    let service: Vec<&Value> = spans.iter().map(|s| &s["service"]).collect();
    assert!(service.iter().all(|s| *s == "switchyard"), "the default service name: {service:?}");
}

#[test]
fn a_request_that_times_out_waiting_ends_its_wait_with_it() {
    let receiver = Receiver::start();
    let (s, key) = slow_server(&receiver, 300);
    // A first run teaches the pool this model is slow: later runs are queued for the blocking
    // threads, where the second request below waits behind the first.
    assert_eq!(s.score_authed(&key, &body_with_x00(50.0), None).status, 200);
    let holder = {
        let (s, key) = (Arc::clone(&s), key.clone());
        std::thread::spawn(move || s.score_authed(&key, &body_with_x00(1000.0), None).status)
    };
    s.wait_inflight("slow", 1);
    let (trace, parent) = caller();
    let auth = format!("Bearer {key}");
    // A second long run: 408 at its deadline whether it waited all along or got the instance.
    let r = s.score(
        &body_with_x00(1000.0),
        &[("Authorization", &auth), ("traceparent", &format!("00-{trace}-{parent}-01"))],
    );
    assert_eq!(r.status, 408, "{}", r.body);
    assert_eq!(holder.join().unwrap(), 408);
    let spans = receiver.trace("the waiting request's spans", &trace, |s| has(s, &["admission", "queue"]));
    let request = request_of(&spans);
    let queue = one(&spans, "queue");
    // Before, the wait ended only when a blocking thread took the abandoned run from the
    // queue, after its request had ended (and held the request's span back until then).
    assert!(queue["end"].as_u64() <= request["end"].as_u64(), "the wait ends with its request: {spans:?}");
    assert_eq!(request["attributes"]["status"], 408);
    // If the run started before the deadline, it started after the wait.
    if let Some(run) = named(&spans, "run").first() {
        assert!(queue["end"].as_u64() <= run["start"].as_u64(), "{spans:?}");
    }
}
