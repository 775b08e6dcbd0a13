//! Hostile input, as property tests (a bounded fuzzing run on every CI): the YAML parsers, the
//! traffic/mirror rules, JSON bodies for the ONNX hook and auth headers never panic, and what
//! they accept obeys the rules. `PROPTEST_CASES` scales the run (default 256 per property;
//! 2000 for the string parsers).

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use serde_json::Value;
use switchyard::spec::{self, traffic, AuthMode, DeploymentSpec, EndpointSpec};
use switchyard::tensor_json::{NestedArray, ScoreRequest};
use switchyard::Credentials;

/// Arbitrary JSON values of bounded size.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "[a-z0-9:_./-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("name".to_string()),
                    Just("model".to_string()),
                    Just("path".to_string()),
                    Just("traffic".to_string()),
                    Just("instance_count".to_string()),
                    Just("request_settings".to_string()),
                    Just("request_timeout_ms".to_string()),
                    Just("auth_mode".to_string()),
                    Just("code_configuration".to_string()),
                    Just("scoring_script".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn names() -> impl Strategy<Value = String> {
    prop_oneof![Just("blue".to_string()), Just("green".to_string()), Just("red".to_string()), "[a-z]{1,5}"]
}

/// Cases per property: `PROPTEST_CASES` when set (a longer local run), else `default`.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), .. ProptestConfig::default() })]

    #[test]
    fn yaml_text_never_panics(text in "\\PC{0,200}") {
        if let Ok(v) = spec::yaml_to_json(&text, "fuzz") {
            // Refusals say why; an accepted spec reads back the same.
            match EndpointSpec::from_value(v.clone()) {
                Ok((spec, _)) => {
                    let (back, _) = EndpointSpec::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
                    prop_assert_eq!(back, spec);
                }
                Err(e) => prop_assert!(!e.message.is_empty(), "{:?}", e),
            }
            match DeploymentSpec::from_value(v) {
                Ok((spec, _)) => {
                    let (back, _) = DeploymentSpec::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
                    prop_assert_eq!(back, spec);
                }
                Err(e) => prop_assert!(!e.message.is_empty(), "{:?}", e),
            }
        }
    }

    #[test]
    fn traffic_strings_never_panic_and_parse_what_they_print(text in "[a-z0-9=, -]{0,40}") {
        if let Ok(t) = traffic::parse_assignments(&text, "--traffic") {
            let printed: Vec<String> = t.iter().map(|(k, v)| format!("{k}={v}")).collect();
            prop_assert_eq!(traffic::parse_assignments(&printed.join(" "), "--traffic").unwrap(), t);
        }
    }

    #[test]
    fn request_bodies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        // Whatever the bytes, a request that parses is valid JSON with rectangular arrays.
        if let Ok(request) = serde_json::from_slice::<ScoreRequest>(&bytes) {
            prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            for a in request.data.iter().chain(request.inputs.iter().flat_map(|m| m.values())) {
                prop_assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
            }
        }
    }

    #[test]
    fn authorization_headers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..120)) {
        let keys = Credentials::generate(AuthMode::Key, std::time::Duration::from_secs(60));
        prop_assert!(!keys.allows(Some(&bytes)));
        let tokens = Credentials::generate(AuthMode::AmlToken, std::time::Duration::from_secs(60));
        prop_assert!(!tokens.allows(Some(&bytes)));
    }
}

proptest! {
    #[test]
    fn structured_specs_never_panic_and_accepted_ones_obey_the_rules(v in json_value()) {
        if let Ok((spec, _)) = DeploymentSpec::from_value(v.clone()) {
            prop_assert!(spec.instance_count >= 1);
            prop_assert!((1..=180_000).contains(&spec.request_settings.request_timeout_ms));
            prop_assert!((3..=32).contains(&spec.name.len()));
        }
        if let Ok((spec, _)) = EndpointSpec::from_value(v) {
            prop_assert!((3..=32).contains(&spec.name.len()));
        }
    }

    #[test]
    fn nested_arrays_are_rectangular(v in json_value()) {
        if let Ok(a) = serde_json::from_value::<NestedArray>(v) {
            prop_assert_eq!(a.values.len(), a.shape.iter().product::<usize>());
        }
    }

    #[test]
    fn accepted_traffic_obeys_every_rule(
        t in prop::collection::btree_map(names(), 0u32..120, 0..4),
        m in prop::collection::btree_map(names(), 0u32..80, 0..3),
    ) {
        let deployments: BTreeSet<String> = ["blue", "green", "red"].iter().map(|s| s.to_string()).collect();
        if let Ok((live, mirror)) = traffic::validate(&t, &m, &deployments) {
            let sum: u32 = live.values().sum();
            prop_assert!(sum == 0 || sum == 100);
            prop_assert!(live.keys().all(|k| deployments.contains(k)));
            prop_assert_eq!(live.len(), deployments.len(), "every deployment is listed");
            prop_assert!(mirror.len() <= 1);
            for (name, pct) in &mirror {
                prop_assert!(*pct > 0 && *pct <= 50);
                prop_assert_eq!(live[name], 0);
            }
        } else {
            let _: BTreeMap<String, u32> = t;
        }
    }
}
