//! Traffic and mirror rules: the `--traffic "blue=90 green=10"` syntax, the JSON maps of the
//! admin API, and the invariants an endpoint's routing obeys (CONTRACT §5). The routing table is
//! only ever built from maps that passed [`validate`], so the hot path never re-checks them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::SpecError;

/// Percent of requests per deployment name. Deployments not listed receive 0.
pub type Traffic = BTreeMap<String, u32>;

/// The largest share of traffic that may be mirrored to a shadow deployment (Azure's limit).
pub const MAX_MIRROR_PERCENT: u32 = 50;

/// Parses the CLI form `"blue=90 green=10"` (spaces or commas between pairs).
pub fn parse_assignments(text: &str, flag: &str) -> Result<Traffic, SpecError> {
    let mut out = Traffic::new();
    for pair in text.split(|c: char| c.is_whitespace() || c == ',').filter(|p| !p.is_empty()) {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(SpecError::invalid(format!(
                "{flag}: expected NAME=PERCENT pairs such as \"blue=90 green=10\", got {pair:?}"
            )));
        };
        let percent = value.trim().parse::<u32>().map_err(|_| {
            SpecError::invalid(format!(
                "{flag}: the percent for {name:?} must be an integer from 0 to 100, got {value:?}"
            ))
        })?;
        if out.insert(name.trim().to_string(), percent).is_some() {
            return Err(SpecError::invalid(format!("{flag}: deployment {name:?} is named twice")));
        }
    }
    Ok(out)
}

/// Reads a `{name: percent}` JSON object (the admin API and YAML form) into a [`Traffic`] map.
pub fn from_json(value: &Value, field: &str) -> Result<Traffic, SpecError> {
    let Value::Object(map) = value else {
        if value.is_null() {
            return Ok(Traffic::new());
        }
        return Err(SpecError::invalid(format!(
            "{field} must be a mapping of deployment name to integer percent, e.g. {{\"blue\": 90, \"green\": 10}}"
        )));
    };
    let mut out = Traffic::new();
    for (name, v) in map {
        let percent = v.as_u64().filter(|p| *p <= 100).ok_or_else(|| {
            SpecError::invalid(format!("{field}: the percent for {name:?} must be an integer from 0 to 100, got {v}"))
        })?;
        out.insert(name.clone(), percent as u32);
    }
    Ok(out)
}

/// Checks the live traffic and the mirror rule together against the set of deployments.
///
/// Rules (CONTRACT §5): traffic values are integers 0..100 naming existing deployments and sum
/// to 0 or 100; at most one mirror deployment, at most 50 percent, never one with live traffic.
/// Returns the normalised pair: every deployment listed in traffic (0 where it has none) and
/// the mirror map without zero entries (`green=0` turns mirroring off).
pub fn validate(
    traffic: &Traffic,
    mirror: &Traffic,
    deployments: &BTreeSet<String>,
) -> Result<(Traffic, Traffic), SpecError> {
    let mut sum = 0u32;
    for (name, percent) in traffic {
        if !deployments.contains(name) {
            return Err(SpecError::invalid(format!(
                "traffic names deployment {name:?}, which does not exist in this endpoint{}",
                known(deployments)
            )));
        }
        if *percent > 100 {
            return Err(SpecError::invalid(format!(
                "traffic for {name:?} is {percent}: each value must be an integer from 0 to 100"
            )));
        }
        sum += percent;
    }
    if sum != 0 && sum != 100 {
        return Err(SpecError::invalid(format!(
            "traffic values must sum to 100 (or 0 to stop all traffic); these sum to {sum}"
        )));
    }
    let live: Traffic = deployments.iter().map(|d| (d.clone(), traffic.get(d).copied().unwrap_or(0))).collect();

    let active: Traffic = mirror.iter().filter(|(_, p)| **p > 0).map(|(n, p)| (n.clone(), *p)).collect();
    for (name, percent) in mirror {
        if !deployments.contains(name) {
            return Err(SpecError::invalid(format!(
                "mirror_traffic names deployment {name:?}, which does not exist in this endpoint{}",
                known(deployments)
            )));
        }
        if *percent > MAX_MIRROR_PERCENT {
            return Err(SpecError::invalid(format!(
                "mirror_traffic for {name:?} is {percent}: at most {MAX_MIRROR_PERCENT} percent of traffic can be mirrored"
            )));
        }
    }
    if active.len() > 1 {
        return Err(SpecError::invalid(format!(
            "mirror_traffic may name only one deployment, got {}",
            active.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    if let Some((name, _)) = active.iter().next() {
        if live.get(name).copied().unwrap_or(0) > 0 {
            return Err(SpecError::conflict(format!(
                "deployment {name:?} has live traffic, so it cannot also receive mirror traffic: a mirror deployment must have 0 live traffic"
            )));
        }
    }
    Ok((live, active))
}

fn known(deployments: &BTreeSet<String>) -> String {
    if deployments.is_empty() {
        " (it has no deployments yet)".to_string()
    } else {
        format!(" (deployments: {})", deployments.iter().cloned().collect::<Vec<_>>().join(", "))
    }
}

/// `split` with only the deployments `keep` accepts: the shares of the others are spread over
/// them in proportion to their own (what integer division leaves goes to the largest), so the
/// total stays the same. `None` when no kept deployment has a share. Used wherever a split
/// must do without deployments that cannot serve (a failed load, an abort of a rollout whose
/// source failed), so every such place moves traffic by the same rule.
pub fn spread(split: &Traffic, keep: impl Fn(&str) -> bool) -> Option<Traffic> {
    let total: u32 = split.values().sum();
    let kept: Traffic = split.iter().filter(|(n, w)| **w > 0 && keep(n)).map(|(n, w)| (n.clone(), *w)).collect();
    let kept_total: u32 = kept.values().sum();
    if kept_total == 0 {
        return None;
    }
    let moved = total - kept_total;
    let mut next: Traffic = kept.iter().map(|(n, w)| (n.clone(), w + moved * w / kept_total)).collect();
    let left = total - next.values().sum::<u32>();
    if let Some((_, top)) = next.iter_mut().max_by_key(|(_, w)| **w) {
        *top += left;
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_cli_form() {
        let t = parse_assignments("blue=90 green=10", "--traffic").unwrap();
        assert_eq!(t.get("blue"), Some(&90));
        assert_eq!(t.get("green"), Some(&10));
        assert!(parse_assignments("blue:90", "--traffic").is_err());
        assert!(parse_assignments("blue=x", "--traffic").is_err());
        assert!(parse_assignments("blue=-1", "--traffic").is_err());
        assert!(parse_assignments("blue=1 blue=2", "--traffic").is_err());
    }

    #[test]
    fn traffic_rules() {
        let d = set(&["blue", "green"]);
        let none = Traffic::new();
        let (live, _) = validate(&parse_assignments("blue=100", "t").unwrap(), &none, &d).unwrap();
        assert_eq!(live.get("green"), Some(&0), "every deployment is listed");
        assert!(validate(&parse_assignments("blue=90", "t").unwrap(), &none, &d)
            .unwrap_err()
            .message
            .contains("sum to 100"));
        assert!(validate(&parse_assignments("red=100", "t").unwrap(), &none, &d)
            .unwrap_err()
            .message
            .contains("does not exist"));
        assert!(validate(&parse_assignments("blue=0 green=0", "t").unwrap(), &none, &d).is_ok());
    }

    #[test]
    fn mirror_rules() {
        let d = set(&["blue", "green", "red"]);
        let t = parse_assignments("blue=100", "t").unwrap();
        let m = |s| parse_assignments(s, "m").unwrap();
        assert!(validate(&t, &m("green=10"), &d).is_ok());
        assert!(validate(&t, &m("green=51"), &d).unwrap_err().message.contains("at most 50"));
        assert!(validate(&t, &m("green=10 red=10"), &d).unwrap_err().message.contains("only one"));
        let e = validate(&t, &m("blue=10"), &d).unwrap_err();
        assert_eq!(e.kind, crate::spec::SpecErrorKind::Conflict);
        assert!(e.message.contains("live traffic"));
        let (_, active) = validate(&t, &m("green=0"), &d).unwrap();
        assert!(active.is_empty(), "green=0 turns mirroring off");
    }

    #[test]
    fn spread_moves_the_shares_left_out_in_proportion_and_keeps_the_total() {
        let t = |pairs: &[(&str, u32)]| pairs.iter().map(|(n, w)| (n.to_string(), *w)).collect::<Traffic>();
        let split = t(&[("a", 45), ("b", 45), ("c", 10)]);
        assert_eq!(spread(&split, |n| n != "a"), Some(t(&[("b", 82), ("c", 18)])));
        assert_eq!(spread(&split, |n| n == "c"), Some(t(&[("c", 100)])));
        assert_eq!(spread(&split, |_| false), None);
        assert_eq!(spread(&t(&[("a", 0), ("b", 100)]), |n| n == "a"), None);
        assert_eq!(spread(&t(&[("a", 34), ("b", 33), ("c", 33)]), |n| n != "c"), Some(t(&[("a", 51), ("b", 49)])));
    }
}
