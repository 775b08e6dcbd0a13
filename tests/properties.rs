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

/// Sticky assignment is monotone: when one deployment's weight grows and every other weight
/// shrinks or stays (any split of up to 6 deployments, in name order as the control plane
/// builds it), no key that the growing deployment served leaves it. (With three or more, the
/// shrinking ones may trade keys among themselves: bands in a fixed order shift.) With two,
/// the keys that move are exactly those whose point lies in the added width.
fn weights_growing_one() -> impl Strategy<Value = (Vec<u32>, Vec<u32>, usize)> {
    (2usize..=6).prop_flat_map(|n| {
        (prop::collection::vec(0u32..=100, n), 0..n, prop::collection::vec(0u32..=100, n)).prop_map(
            move |(raw, grow, cut)| {
                let total: u32 = raw.iter().sum::<u32>().max(1);
                let mut before: Vec<u32> = raw.iter().map(|w| w * 100 / total).collect();
                let short = 100 - before.iter().sum::<u32>();
                before[0] += short;
                // Take from the others (each by at most what it has), give to `grow`.
                let mut after = before.clone();
                let mut moved = 0;
                for i in (0..n).filter(|i| *i != grow) {
                    let take = after[i] * cut[i] / 100;
                    after[i] -= take;
                    moved += take;
                }
                after[grow] += moved;
                (before, after, grow)
            },
        )
    })
}

proptest! {
    #[test]
    fn sticky_assignment_never_moves_a_user_out_of_the_growing_band((before, after, grow) in weights_growing_one()) {
        let split = |w: &[u32]| switchyard::WeightedSplit::<usize>::new(w.iter().copied().enumerate());
        let (old, new) = (split(&before), split(&after));
        for user in 0..2_000u32 {
            let key = format!("user-{user}");
            let (a, b) = (old.pick_sticky(key.as_bytes()).copied(), new.pick_sticky(key.as_bytes()).copied());
            prop_assert_eq!(a, old.pick_sticky(key.as_bytes()).copied(), "the same key, the same deployment");
            if a == Some(grow) {
                prop_assert_eq!(b, Some(grow), "user {} left the growing deployment {}: {:?} -> {:?}", key, grow, before, after);
            }
        }
    }

    #[test]
    fn with_two_deployments_exactly_the_new_band_moves(green in 0u32..=100, more in 0u32..=100) {
        let raised = (green + more).min(100);
        let split = |g: u32| switchyard::WeightedSplit::<&str>::new([("blue", 100 - g), ("green", g)]);
        let (old, new) = (split(green), split(raised));
        for user in 0..2_000u32 {
            let key = format!("user-{user}");
            let point = switchyard::affinity_point(key.as_bytes(), 100);
            let moved = old.pick_sticky(key.as_bytes()) != new.pick_sticky(key.as_bytes());
            prop_assert_eq!(moved, (100 - raised..100 - green).contains(&point), "user {} at point {}", key, point);
        }
    }
}
