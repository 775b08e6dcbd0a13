//! A bounded fuzzing run against a real server: hostile bodies and headers on /score and
//! hostile admin changes. The front door never answers a client error with 5xx, and a refused
//! change leaves the state exactly as it was. `PROPTEST_CASES` scales it (default 300 each).

use crate::common;

use std::sync::OnceLock;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};

struct Fixture {
    server: Server,
    key: String,
}

/// The server the scoring properties share (never changed by them).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(start_fixture)
}

/// A server of its own for the admin property, whose accepted changes would otherwise race
/// with the scoring properties running in parallel.
fn admin_fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(start_fixture)
}

fn start_fixture() -> Fixture {
    {
        let server = Server::start();
        server.create_endpoint();
        server.deploy("blue", "model-1", json!({"request_settings": {"max_concurrent_requests_per_instance": 16}}));
        server.deploy("green", "model-2", json!({"request_settings": {"max_concurrent_requests_per_instance": 16}}));
        assert_eq!(server.set_traffic(json!({"blue": 50, "green": 50})).status, 200);
        let key = server.primary_key();
        Fixture { server, key }
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z0-9 ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..12).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("data".to_string()),
                    Just("inputs".to_string()),
                    Just("X".to_string()),
                    Just("traffic".to_string()),
                    Just("mirror_traffic".to_string()),
                    Just("blue".to_string()),
                    Just("green".to_string()),
                    Just("instance_count".to_string()),
                    Just("model".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Bodies of the right form with random shapes and values.
fn data_body() -> impl Strategy<Value = Vec<u8>> {
    (0usize..4, 0usize..14, -1e9f64..1e9).prop_map(|(rows, cols, v)| {
        let row: Vec<f64> = (0..cols).map(|i| v / (i as f64 + 1.0)).collect();
        json!({ "data": vec![row; rows] }).to_string().into_bytes()
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        json_value().prop_map(|v| json!({ "data": v }).to_string().into_bytes()),
        json_value().prop_map(|v| json!({ "inputs": { "X": v } }).to_string().into_bytes()),
        data_body(),
    ]
}

/// Cases per property: `PROPTEST_CASES` when set (a longer local run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), .. ProptestConfig::default() })]

    #[test]
    fn score_never_answers_a_client_error_with_5xx(body in body()) {
        let f = fixture();
        let r = f.server.score_authed(&f.key, &body, None);
        prop_assert!(r.status == 200 || r.status == 400, "{} {}", r.status, r.body);
        if r.status == 400 {
            prop_assert!(!r.message().is_empty());
        }
    }

    #[test]
    fn hostile_headers_get_client_errors(pin in "[ -~]{0,40}", client_id in "[ -~]{0,120}", auth in "[ -~]{0,80}") {
        let f = fixture();
        let good = format!("Bearer {}", f.key);
        let r = f.server.score(&sample_request(), &[("Authorization", &good), ("azureml-model-deployment", &pin), ("x-ms-client-request-id", &client_id)]);
        prop_assert!([200, 404, 431].contains(&r.status), "{} {}", r.status, r.body);
        if let Some(echo) = r.header("x-ms-client-request-id") {
            prop_assert!(echo.len() <= 40 || r.status == 431);
        }
        let r = f.server.score(&sample_request(), &[("Authorization", &auth)]);
        prop_assert!(r.status == 401 || auth.trim_start_matches("Bearer ").trim() == f.key, "{}", r.status);
    }

    #[test]
    fn refused_admin_changes_change_nothing(patch in json_value(), name in "[a-zA-Z0-9-]{1,12}", dep in json_value()) {
        let f = admin_fixture();
        let s = &f.server;
        let before = (s.admin("GET", "/v1/endpoint", None).body, s.admin("GET", "/v1/deployments", None).json());
        let r = s.admin("PATCH", "/v1/endpoint", Some(&patch));
        prop_assert!(r.status < 500, "{} {}", r.status, r.body);
        if r.status >= 400 {
            prop_assert_eq!(&s.admin("GET", "/v1/endpoint", None).body, &before.0);
        } else {
            // Put the fixture's traffic back for the other properties.
            prop_assert_eq!(s.admin("PATCH", "/v1/endpoint", Some(&json!({"traffic": {"blue": 50, "green": 50}, "mirror_traffic": {}}))).status, 200);
        }
        let r = s.admin("PUT", &format!("/v1/deployments/{name}"), Some(&dep));
        prop_assert!(r.status >= 400 && r.status < 500, "{} {}", r.status, r.body);
        let r = s.admin("PATCH", "/v1/deployments/blue", Some(&dep));
        prop_assert!(r.status < 500, "{} {}", r.status, r.body);
        if r.status >= 400 {
            let after = s.admin("GET", "/v1/deployments", None).json();
            prop_assert_eq!(strip_live(&after), strip_live(&before.1));
        } else {
            s.wait_state("blue", "Succeeded");
        }
    }
}

/// Deployments without the fields that change as requests flow (instance states).
fn strip_live(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(list) = v.as_array_mut() {
        for d in list {
            if let Some(m) = d.as_object_mut() {
                m.remove("instances");
            }
        }
    }
    v
}
