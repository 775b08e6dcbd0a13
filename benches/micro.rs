//! Micro benchmarks of the hot path's pure parts: the routing decision, JSON → tensor input
//! conversion, response encoding, the native plugin ABI's cost per run, and what the v2
//! protocol's binary tensors save in the hook. Run:
//! `cargo bench --bench micro`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use switchyard::spec::DeploymentSpec;
use switchyard::tensor_json::{write_f64, write_nested, ScoreRequest};
use switchyard::Deployment;
use switchyard::Metrics;
use switchyard::WeightedSplit;

fn deployments(runtime: &tokio::runtime::Runtime) -> Vec<Arc<Deployment>> {
    let metrics = Metrics::new();
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/model-1");
    ["blue", "green", "red"]
        .iter()
        .map(|name| {
            let (spec, _) =
                DeploymentSpec::from_value(serde_json::json!({"name": name, "model": {"path": model}})).unwrap();
            let kind = spec.hook_kind().unwrap();
            Deployment::new(&spec, kind, &metrics, runtime.handle().clone())
        })
        .collect()
}

fn routing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let d = deployments(&runtime);
    let split = WeightedSplit::new([(d[0].clone(), 90), (d[1].clone(), 10)]);
    c.bench_function("routing: weighted pick, 90/10", |b| b.iter(|| black_box(split.pick()).map(|d| d.name().len())));
    let three = WeightedSplit::new([(d[0].clone(), 34), (d[1].clone(), 33), (d[2].clone(), 33)]);
    c.bench_function("routing: weighted pick, 3 ways", |b| b.iter(|| black_box(three.pick()).map(|d| d.name().len())));
    // Sticky assignment as the front door does it: find the affinity header among a request's
    // usual headers, hash its value, pick the band. Compared with the random pick above.
    let mut headers = actix_web::http::header::HeaderMap::new();
    for (k, v) in [
        ("host", "127.0.0.1:5001"),
        ("content-type", "application/json"),
        ("authorization", "Bearer 0123456789abcdef0123456789abcdef"),
        ("content-length", "61"),
        ("x-ms-client-request-id", "c0ffee"),
        ("x-user-id", "user-12345678"),
    ] {
        headers.insert(
            actix_web::http::header::HeaderName::from_static(k),
            actix_web::http::header::HeaderValue::from_static(v),
        );
    }
    let affinity = String::from("x-user-id");
    c.bench_function("routing: sticky pick by header hash, 90/10", |b| {
        b.iter(|| {
            let value = black_box(&headers).get(affinity.as_str()).map(|v| v.as_bytes());
            value.and_then(|v| split.pick_sticky(v)).map(|d| d.name().len())
        });
    });
}

fn body(rows: usize) -> Vec<u8> {
    let row = "[1,2,3,4,5,6,7,8,9,10]";
    format!("{{\"data\": [{}]}}", vec![row; rows].join(",")).into_bytes()
}

fn json_to_tensor(c: &mut Criterion) {
    for rows in [2, 64] {
        let b = body(rows);
        c.bench_function(&format!("json -> tensor input, {rows} rows"), |bench| {
            bench.iter(|| {
                let r: ScoreRequest = serde_json::from_slice(black_box(&b)).unwrap();
                r.data.map(|d| d.values.len())
            });
        });
    }
}

fn response_encoding(c: &mut Criterion) {
    for n in [2usize, 64] {
        let values: Vec<f64> = (0..n).map(|i| 11055.977245525679 * (i as f64 + 1.0)).collect();
        c.bench_function(&format!("response encoding, {n} predictions"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(32 * n);
                write_nested(&mut out, &[n], black_box(&values), &write_f64);
                out.len()
            });
        });
    }
}

/// The cost of one run through the native plugin ABI (src/sys/native.rs): a no-op C plugin
/// (tests/fixtures/native/faults.c, which answers a constant 12 bytes), called through
/// `NativeHook::run` — the call through the table, the respond callback copying the answer,
/// the return code's mapping — beside the same answer made without the ABI (a 12-byte copy
/// into `Bytes`), in the same run. The target is <= 1 us per run.
fn native_abi(c: &mut Criterion) {
    use switchyard::{HookRequest, InitContext, NativeHook, ScoringHook};
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let status = std::process::Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O2", "-I", &format!("{root}/runtime/include")])
        .arg(format!("{root}/tests/fixtures/native/faults.c"))
        .arg("-o")
        .arg(dir.path().join("noop.so"))
        .status();
    if !status.is_ok_and(|s| s.success()) {
        eprintln!("native ABI benchmark skipped: no C compiler (cc)");
        return;
    }
    let (spec, _) = DeploymentSpec::from_value(serde_json::json!({
        "name": "native",
        "model": {"path": format!("{root}/models/model-1")},
        "code_configuration": {"code": dir.path(), "scoring_script": "noop.so"},
    }))
    .unwrap();
    let switchyard::spec::HookKind::Native(plugin) = spec.hook_kind().unwrap() else { panic!("not native") };
    let mut hook = NativeHook::load(&plugin, &InitContext::new("native", Default::default())).unwrap();
    let headers = Default::default();
    let request = HookRequest { body: b"{}", content_type: Some("application/json"), headers: &headers, cancel: None };
    c.bench_function("native ABI: one run of a no-op C plugin", |b| {
        b.iter(|| hook.run(black_box(request)).map(|r| r.body.len()));
    });
    c.bench_function("native ABI baseline: the same answer without the ABI", |b| {
        b.iter(|| bytes::Bytes::from(black_box(&b"{\"ok\": true}"[..]).to_vec()).len());
    });
}

/// What the Open Inference Protocol's binary tensors save inside the hook: model-2 (300 trees,
/// float32) on 64 rows of 10 features, scored three ways by one ONNX hook instance in the same
/// run — `/score`'s JSON (`{"data": [[...], ...]}`), a v2 `infer` with JSON tensors, and a v2
/// `infer` with the binary extension (raw little-endian floats after the JSON header, binary
/// output). The HTTP path is the same for all three, so the difference is decoding and
/// encoding; the model's own run is common to all three and bounds the ratio.
fn oip_binary(c: &mut Criterion) {
    use switchyard::{HookRequest, InitContext, OnnxHook, ScoringHook};
    let root = env!("CARGO_MANIFEST_DIR");
    let Ok(mut hook) = OnnxHook::load(
        std::path::Path::new(&format!("{root}/models/model-2/model.onnx")),
        &InitContext::new("m2", Default::default()),
    ) else {
        eprintln!("OIP benchmark skipped: ONNX Runtime not found (scripts/setup.sh)");
        return;
    };
    let signature = hook.signature().expect("the ONNX hook knows its signature");
    let (input, output) = (&signature.inputs[0].name, &signature.outputs[0].name);
    let rows: Vec<Vec<f32>> =
        (0..64).map(|r| (0..10).map(|i| ((r * 7 + i * 3) % 50) as f32 * 0.37).collect()).collect();
    let score_body = serde_json::to_vec(&serde_json::json!({ "data": rows })).unwrap();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let v2_json = serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": input, "shape": [64, 10], "datatype": "FP32", "data": flat}],
        "outputs": [{"name": output}],
    }))
    .unwrap();
    let header = serde_json::to_vec(&serde_json::json!({
        "inputs": [{"name": input, "shape": [64, 10], "datatype": "FP32", "parameters": {"binary_data_size": 64 * 10 * 4}}],
        "outputs": [{"name": output, "parameters": {"binary_data": true}}],
    }))
    .unwrap();
    let mut v2_binary = header.clone();
    v2_binary.extend(flat.iter().flat_map(|v| v.to_le_bytes()));
    let headers = Default::default();
    let request =
        |body: &'static [u8], content_type| HookRequest { body, content_type, headers: &headers, cancel: None };
    let (score_body, v2_json, v2_binary) = (score_body.leak(), v2_json.leak(), v2_binary.leak());
    // The same predictions three ways, or the comparison means nothing.
    let from_score: Vec<f64> =
        serde_json::from_slice(&hook.run(request(score_body, Some("application/json"))).unwrap().body).unwrap();
    let v2: serde_json::Value =
        serde_json::from_slice(&hook.infer(request(v2_json, None), None).unwrap().response.body).unwrap();
    let from_v2_json: Vec<f64> = serde_json::from_value(v2["outputs"][0]["data"].clone()).unwrap();
    let binary = hook.infer(request(v2_binary, None), Some(header.len())).unwrap();
    let tensors = &binary.response.body[binary.header_length.expect("a binary answer")..];
    let from_v2_binary: Vec<f64> =
        tensors.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
    assert_eq!(from_score.len(), 64);
    for (i, want) in from_score.iter().enumerate() {
        assert!((from_v2_json[i] - want).abs() < 1e-3 && (from_v2_binary[i] - want).abs() < 1e-3, "row {i}");
    }
    c.bench_function("model-2 64 rows: /score JSON through the hook", |b| {
        b.iter(|| hook.run(black_box(request(score_body, Some("application/json")))).map(|r| r.body.len()));
    });
    c.bench_function("model-2 64 rows: v2 infer, JSON tensors", |b| {
        b.iter(|| hook.infer(black_box(request(v2_json, None)), None).map(|a| a.response.body.len()));
    });
    c.bench_function("model-2 64 rows: v2 infer, binary tensors", |b| {
        b.iter(|| hook.infer(black_box(request(v2_binary, None)), Some(header.len())).map(|a| a.response.body.len()));
    });
}

criterion_group!(benches, routing, json_to_tensor, response_encoding, native_abi, oip_binary);
criterion_main!(benches);
