//! The Open Inference Protocol over gRPC against REST binary (issue 30), same run, same load
//! tool: one release server (`switchyard serve`, model-2 with 2 instances), this process as
//! the client on the same machine, C concurrent callers for S seconds per round, rounds
//! alternating REST (`POST /v2/models/model-2/infer`, binary tensors, kept-alive HTTP/1.1
//! connections) and gRPC (`ModelInfer` with `raw_input_contents` on one HTTP/2 channel, as
//! tritonclient does), 64 rows of 10 FP32 features each time. Prints req/s and p99 per round,
//! and gRPC/REST of the medians.
//!
//! Run: `cargo bench --bench grpc_rest -- [BIN] [SECONDS] [ROUNDS] [CONCURRENCY]` (defaults:
//! target/release/switchyard, 5, 3, 16).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

mod pb {
    #![allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub, dead_code)]
    tonic::include_proto!("inference");
}

const ROWS: usize = 64;

fn features() -> Vec<f32> {
    (0..ROWS * 10).map(|i| ((i * 37) % 101) as f32 * 0.37).collect()
}

struct Server {
    child: std::process::Child,
    scoring: String,
    grpc: String,
    key: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(bin: &str) -> Server {
    let mut child = Command::new(bin)
        .args(["serve", "--port", "0", "--admin-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start switchyard serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut scoring, mut admin, mut grpc) = (String::new(), String::new(), String::new());
    while admin.is_empty() || scoring.is_empty() {
        let line = lines.next().expect("the server printed its addresses").unwrap();
        if let Some(a) = line.strip_prefix("Scoring plane: ") {
            scoring = a.trim().into();
        } else if let Some(a) = line.strip_prefix("Admin plane: ") {
            admin = a.trim().into();
        } else if let Some(a) = line.strip_prefix("gRPC plane: ") {
            grpc = a.trim().into();
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
    let put = |path: &str, body: serde_json::Value| {
        let r = agent.put(&format!("{admin}{path}")).send_json(body).unwrap();
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    };
    put("/v1/endpoint", serde_json::json!({"name": "bench"}));
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/model-2");
    put(
        "/v1/deployments/green?all_traffic=true",
        serde_json::json!({"model": {"path": model}, "instance_count": 2,
                           "request_settings": {"max_concurrent_requests_per_instance": 32}}),
    );
    for _ in 0..600 {
        let state: serde_json::Value =
            agent.get(&format!("{admin}/v1/deployments/green")).call().unwrap().body_mut().read_json().unwrap();
        if state["provisioning_state"] == "Succeeded" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let keys: serde_json::Value =
        agent.get(&format!("{admin}/v1/endpoint/keys")).call().unwrap().body_mut().read_json().unwrap();
    Server { child, scoring, grpc, key: keys["primaryKey"].as_str().unwrap().into() }
}

/// The server process's CPU time so far (user + system, from /proc), in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(") ").map(|(_, rest)| rest.split(' ').collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the command); the
    // kernel's clock ticks are 100 per second on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Runs `call` from `concurrency` tasks for `seconds`; (req/s, p99).
async fn load<F, Fut>(concurrency: usize, seconds: u64, call: F) -> (f64, Duration)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let call = Arc::new(call);
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, stop, latencies) = (Arc::clone(&call), Arc::clone(&stop), Arc::clone(&latencies));
            tokio::spawn(async move {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    assert!(call().await, "a call failed");
                    mine.push(t.elapsed());
                }
                latencies.lock().unwrap().extend(mine);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = latencies.lock().unwrap().clone();
    all.sort();
    let p99 = all.get(all.len() * 99 / 100).copied().unwrap_or_default();
    (all.len() as f64 / elapsed, p99)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let bin =
        args.first().cloned().unwrap_or_else(|| format!("{}/target/release/switchyard", env!("CARGO_MANIFEST_DIR")));
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let concurrency: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(16);
    let server = start(&bin);
    let raw: Vec<u8> = features().iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = serde_json::json!({"inputs": [{"name": "X", "datatype": "FP32", "shape": [ROWS, 10],
        "parameters": {"binary_data_size": raw.len()}}], "parameters": {"binary_data_output": true}})
    .to_string();
    let mut rest_body = header.clone().into_bytes();
    rest_body.extend_from_slice(&raw);
    let rest_body = Bytes::from(rest_body);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (mut rest_rates, mut grpc_rates) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
            .unwrap()
            .connect()
            .await
            .expect("connect to the gRPC plane");
        let grpc = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel);
        let auth = format!("Bearer {}", server.key);
        let request = pb::ModelInferRequest {
            model_name: "model-2".into(),
            inputs: vec![pb::model_infer_request::InferInputTensor {
                name: "X".into(),
                datatype: "FP32".into(),
                shape: vec![ROWS as i64, 10],
                ..Default::default()
            }],
            raw_input_contents: vec![raw.clone()],
            ..Default::default()
        };
        let pid = server.child.id();
        for round in 1..=rounds {
            let (client, body, auth2, url) = (
                client.clone(),
                rest_body.clone(),
                auth.clone(),
                format!("{}/v2/models/model-2/infer", server.scoring),
            );
            let header_len = header.len().to_string();
            let cpu = cpu_seconds(pid);
            let (rate, p99) = load(concurrency, seconds, move || {
                let request = http1::Request::post(url.as_str())
                    .header("authorization", auth2.as_str())
                    .header("inference-header-content-length", header_len.as_str())
                    .body(Full::new(body.clone()))
                    .unwrap();
                let client = client.clone();
                async move {
                    match client.request(request).await {
                        Ok(r) => r.status() == 200 && r.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    }
                }
            })
            .await;
            let per = (cpu_seconds(pid) - cpu) / (rate * seconds as f64) * 1e6;
            println!(
                "round {round} REST binary  req/s={rate:.0} p99={:.2}ms server CPU/request={per:.0}us",
                p99.as_secs_f64() * 1e3
            );
            rest_rates.push(rate);
            let (grpc, request, auth3) = (grpc.clone(), request.clone(), auth.clone());
            let cpu = cpu_seconds(pid);
            let (rate, p99) = load(concurrency, seconds, move || {
                let mut grpc = grpc.clone();
                let mut call = tonic::Request::new(request.clone());
                call.metadata_mut().insert("authorization", auth3.parse().unwrap());
                async move { grpc.model_infer(call).await.is_ok_and(|r| r.get_ref().raw_output_contents.len() == 1) }
            })
            .await;
            let per = (cpu_seconds(pid) - cpu) / (rate * seconds as f64) * 1e6;
            println!(
                "round {round} gRPC         req/s={rate:.0} p99={:.2}ms server CPU/request={per:.0}us",
                p99.as_secs_f64() * 1e3
            );
            grpc_rates.push(rate);
        }
    });
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (rest, grpc) = (median(&mut rest_rates), median(&mut grpc_rates));
    println!("median REST {rest:.0} req/s, gRPC {grpc:.0} req/s: gRPC/REST {:.2}", grpc / rest);
}
