//! A guarded progressive rollout's plan (`online-endpoint rollout`, `POST /v1/endpoint/rollout`,
//! or the `rollout:` field of endpoint.yml in `--config-dir` mode): which deployment traffic
//! moves to, in which steps, how long each step is watched, and the gates it must pass. Also
//! the one rule for turning a step into a traffic split, so that the control plane, `show` and
//! the tests compute the same split.
//!
//! Everything here is pure; the control plane checks the names against its deployments.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::traffic::{Traffic, MAX_MIRROR_PERCENT};
use super::SpecError;

/// The shortest step window accepted (tests use sub-second windows; shorter ones measure
/// nothing).
pub const MIN_STEP_DURATION: Duration = Duration::from_millis(100);
/// The longest step window accepted.
pub const MAX_STEP_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);
/// `--max-error-rate` when none is given: a rollout always watches errors.
pub const DEFAULT_MAX_ERROR_RATE: f64 = 0.01;
/// `--min-requests` when none is given.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;

/// One step of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Copy this percent of live requests to the target (mirror traffic); live stays as it was.
    Mirror(u32),
    /// Give the target this percent of live traffic.
    Live(u32),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Mirror(p) => write!(f, "mirror:{p}"),
            Step::Live(p) => write!(f, "{p}"),
        }
    }
}

/// A validated rollout plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutPlan {
    /// The deployment traffic moves to.
    pub to: String,
    /// The steps, mirror steps first, live percents increasing, ending at 100.
    pub steps: Vec<Step>,
    /// How long each step is watched before its gates are judged.
    pub step_duration_ms: u64,
    /// Requests the target must have answered in a step before it is judged.
    pub min_requests: u64,
    /// Largest share of the target's answers that may be 5xx, 424 or 408.
    pub max_error_rate: f64,
    /// Largest p99 of the target, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    /// Largest p99 of the target as a multiple of the live deployments' p99 over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    /// Smallest agreement of the mirror comparison during a mirror step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// The evidence gates (issue 27), when the plan asks for them (`confidence` or one of
    /// its companions given): the target against the incumbent over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidencePlan>,
}

/// How the evidence gates judge (`control::evidence`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidencePlan {
    /// 1 − the promised rate of rolling back a target no worse than the incumbent.
    pub confidence: f64,
    /// The largest increase of the error rate over the incumbent's (absolute).
    pub max_error_increase: f64,
    /// Windows a step may add when its gates cannot decide yet.
    pub max_extensions: u32,
    /// What an undecided step does once its extensions are spent.
    pub on_inconclusive: OnInconclusive,
    /// The latency gate's margin: the largest ratio of the target's latencies to the
    /// incumbent's (e.g. 1.2); `None` leaves latency to the absolute gates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_increase: Option<f64>,
    /// Refuse a plan whose steps cannot gather the evidence they need at the current rate.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
}

/// `on_inconclusive`: roll back (the default: no evidence, no promotion) or proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnInconclusive {
    Rollback,
    Proceed,
}

/// Defaults of the evidence gates.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;
pub const DEFAULT_MAX_ERROR_INCREASE: f64 = 0.005;
pub const DEFAULT_MAX_EXTENSIONS: u32 = 3;
/// The most extensions a step may have (each is a whole step window).
pub const MAX_EXTENSIONS: u32 = 20;
/// The largest latency margin accepted (a target ten times slower is no "increase" to allow).
pub const MAX_LATENCY_INCREASE: f64 = 10.0;

/// A plan as a document: what `POST /v1/endpoint/rollout` and endpoint.yml's `rollout:` take
/// (read by [`RolloutPlan::from_value`], which also takes `steps` as a list and
/// `step_duration` as seconds), and what `show` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutDocument {
    /// The deployment traffic moves to.
    pub to: String,
    /// `mirror:N` steps first, then live percents increasing to 100, e.g. `mirror:10,10,25,50,100`.
    pub steps: String,
    /// How long each step is watched, e.g. `60s`, `5m`.
    pub step_duration: String,
    /// Requests the target must answer in a step before it is judged (default 20).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Largest share of 5xx, 424 and 408 answers (default 0.01).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_p99_ratio: Option<f64>,
    /// Smallest mirror agreement during mirror steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// Turns on the evidence gates: 1 − the rate at which a target no worse than the
    /// incumbent may be rolled back (default 0.95 when another evidence field is given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Largest error-rate increase over the incumbent, absolute (default 0.005).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_increase: Option<f64>,
    /// Windows a step may add while its gates are inconclusive (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_extensions: Option<u32>,
    /// `rollback` (default) or `proceed` once the extensions are spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_inconclusive: Option<OnInconclusive>,
    /// Largest ratio of the target's latencies to the incumbent's, judged by a rank test on
    /// per-request latencies (e.g. 1.2); no latency gate without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_latency_increase: Option<f64>,
    /// Refuse (400) a plan whose steps cannot gather the evidence they need at the current
    /// request rate within their windows, instead of warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// Fields a plan document may carry.
const FIELDS: &[&str] = &[
    "to",
    "steps",
    "step_duration",
    "min_requests",
    "max_error_rate",
    "max_p99_ms",
    "max_p99_ratio",
    "min_agreement",
    "confidence",
    "max_error_increase",
    "max_extensions",
    "on_inconclusive",
    "max_latency_increase",
    "strict",
];

impl RolloutPlan {
    /// The step window.
    pub fn step_duration(&self) -> Duration {
        Duration::from_millis(self.step_duration_ms)
    }

    /// Reads a plan from the admin API's JSON (or endpoint.yml's `rollout:` mapping):
    /// `{"to": "green", "steps": "mirror:10,10,25,50,100", "step_duration": "60s",
    /// "min_requests": 20, "max_error_rate": 0.01, "max_p99_ms": 100, "max_p99_ratio": 1.5,
    /// "min_agreement": 0.99}`. `steps` may also be a list (`["mirror:10", 10, 25]`) and
    /// `step_duration` a number of seconds.
    pub fn from_value(value: &Value) -> Result<Self, SpecError> {
        let Value::Object(map) = value else {
            return Err(SpecError::invalid(
                "a rollout must be a mapping, e.g. {\"to\": \"green\", \"steps\": \"mirror:10,10,25,50,100\", \"step_duration\": \"60s\"}",
            ));
        };
        if let Some(key) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(SpecError::invalid(format!(
                "unknown rollout field `{key}`: expected one of {}",
                FIELDS.join(", ")
            )));
        }
        let to = match map.get("to") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(SpecError::invalid("a rollout needs `to`: the deployment traffic moves to")),
        };
        super::names::validate_name("deployment", &to)?;
        let steps = match map.get("steps") {
            None | Some(Value::Null) => {
                return Err(SpecError::invalid("a rollout needs `steps`, e.g. \"mirror:10,10,25,50,100\""))
            }
            Some(Value::String(s)) => parse_steps(s)?,
            Some(Value::Array(items)) => {
                let text: Vec<String> = items
                    .iter()
                    .map(|v| match v {
                        Value::String(s) => Ok(s.clone()),
                        Value::Number(n) => Ok(n.to_string()),
                        other => {
                            Err(SpecError::invalid(format!("steps: expected \"mirror:N\" or a percent, got {other}")))
                        }
                    })
                    .collect::<Result<_, _>>()?;
                parse_steps(&text.join(","))?
            }
            Some(other) => {
                return Err(SpecError::invalid(format!(
                    "steps must be a string such as \"mirror:10,10,25,50,100\" or a list, got {other}"
                )))
            }
        };
        let step_duration = match map.get("step_duration") {
            None | Some(Value::Null) => {
                return Err(SpecError::invalid("a rollout needs `step_duration`, e.g. \"60s\""))
            }
            Some(Value::String(s)) => parse_duration(s)?,
            Some(Value::Number(n)) => n
                .as_f64()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| SpecError::invalid(format!("step_duration: expected seconds or \"60s\", got {n}")))?,
            Some(other) => return Err(SpecError::invalid(format!("step_duration: expected \"60s\", got {other}"))),
        };
        if !(MIN_STEP_DURATION..=MAX_STEP_DURATION).contains(&step_duration) {
            return Err(SpecError::invalid(format!(
                "step_duration must be from {} to {}, got {}",
                humantime::format_duration(MIN_STEP_DURATION),
                humantime::format_duration(MAX_STEP_DURATION),
                humantime::format_duration(step_duration)
            )));
        }
        let min_requests = match map.get("min_requests") {
            None | Some(Value::Null) => DEFAULT_MIN_REQUESTS,
            Some(v) => v.as_u64().filter(|n| *n >= 1).ok_or_else(|| {
                SpecError::invalid(format!("min_requests must be a whole number of at least 1, got {v}"))
            })?,
        };
        let max_error_rate = fraction(map.get("max_error_rate"), "max_error_rate")?.unwrap_or(DEFAULT_MAX_ERROR_RATE);
        let min_agreement = fraction(map.get("min_agreement"), "min_agreement")?;
        let max_p99_ms = positive(map.get("max_p99_ms"), "max_p99_ms")?;
        let max_p99_ratio = positive(map.get("max_p99_ratio"), "max_p99_ratio")?;
        if min_agreement.is_some() && !steps.iter().any(|s| matches!(s, Step::Mirror(_))) {
            return Err(SpecError::invalid(
                "min_agreement is judged during mirror steps, and these steps have none: add one, e.g. \"mirror:10,10,25,50,100\"",
            ));
        }
        let evidence = evidence_plan(map)?;
        Ok(Self {
            to,
            steps,
            step_duration_ms: step_duration.as_millis() as u64,
            min_requests,
            max_error_rate,
            max_p99_ms,
            max_p99_ratio,
            min_agreement,
            evidence,
        })
    }

    /// Reads a plan from its document form (what `show` printed, or endpoint.yml's mapping).
    pub fn from_document(doc: &RolloutDocument) -> Result<Self, SpecError> {
        let value = serde_json::to_value(doc)
            .map_err(|e| SpecError::invalid(format!("the rollout document cannot be read: {e}")))?;
        Self::from_value(&value)
    }

    /// The plan in the document form [`from_value`](Self::from_value) reads (for `show`).
    pub fn to_document(&self) -> RolloutDocument {
        RolloutDocument {
            to: self.to.clone(),
            steps: self.steps.iter().map(Step::to_string).collect::<Vec<_>>().join(","),
            step_duration: humantime::format_duration(self.step_duration()).to_string(),
            min_requests: Some(self.min_requests),
            max_error_rate: Some(self.max_error_rate),
            max_p99_ms: self.max_p99_ms,
            max_p99_ratio: self.max_p99_ratio,
            min_agreement: self.min_agreement,
            confidence: self.evidence.as_ref().map(|e| e.confidence),
            max_error_increase: self.evidence.as_ref().map(|e| e.max_error_increase),
            max_extensions: self.evidence.as_ref().map(|e| e.max_extensions),
            on_inconclusive: self.evidence.as_ref().map(|e| e.on_inconclusive),
            max_latency_increase: self.evidence.as_ref().and_then(|e| e.max_latency_increase),
            strict: self.evidence.as_ref().and_then(|e| e.strict.then_some(true)),
        }
    }
}

/// The evidence fields of a plan document: `None` when none is given (the absolute gates
/// alone, as before).
fn evidence_plan(map: &serde_json::Map<String, Value>) -> Result<Option<EvidencePlan>, SpecError> {
    // `strict: false` alone asks for nothing.
    let given = |k: &str| map.get(k).is_some_and(|v| !v.is_null() && *v != Value::Bool(false));
    let fields =
        ["confidence", "max_error_increase", "max_extensions", "on_inconclusive", "max_latency_increase", "strict"];
    if !fields.iter().any(|k| given(k)) {
        return Ok(None);
    }
    let confidence = match map.get("confidence").filter(|v| !v.is_null()) {
        None => DEFAULT_CONFIDENCE,
        Some(v) => v.as_f64().filter(|c| (0.5..1.0).contains(c)).ok_or_else(|| {
            SpecError::invalid(format!("confidence must be at least 0.5 and below 1 (e.g. 0.95), got {v}"))
        })?,
    };
    let max_error_increase = match map.get("max_error_increase").filter(|v| !v.is_null()) {
        None => DEFAULT_MAX_ERROR_INCREASE,
        Some(v) => v.as_f64().filter(|m| *m > 0.0 && *m < 1.0).ok_or_else(|| {
            SpecError::invalid(format!("max_error_increase must be above 0 and below 1 (e.g. 0.005), got {v}"))
        })?,
    };
    let max_extensions = match map.get("max_extensions").filter(|v| !v.is_null()) {
        None => DEFAULT_MAX_EXTENSIONS,
        Some(v) => v.as_u64().filter(|n| *n <= u64::from(MAX_EXTENSIONS)).map(|n| n as u32).ok_or_else(|| {
            SpecError::invalid(format!("max_extensions must be a whole number from 0 to {MAX_EXTENSIONS}, got {v}"))
        })?,
    };
    let on_inconclusive = match map.get("on_inconclusive").filter(|v| !v.is_null()) {
        None => OnInconclusive::Rollback,
        Some(Value::String(s)) if s == "rollback" => OnInconclusive::Rollback,
        Some(Value::String(s)) if s == "proceed" => OnInconclusive::Proceed,
        Some(v) => return Err(SpecError::invalid(format!("on_inconclusive must be rollback or proceed, got {v}"))),
    };
    let max_latency_increase = match map.get("max_latency_increase").filter(|v| !v.is_null()) {
        None => None,
        Some(v) => Some(v.as_f64().filter(|m| *m > 1.0 && *m <= MAX_LATENCY_INCREASE).ok_or_else(|| {
            SpecError::invalid(format!(
                "max_latency_increase must be a ratio above 1 and at most {MAX_LATENCY_INCREASE} (e.g. 1.2: the target at most 20% slower), got {v}"
            ))
        })?),
    };
    let strict = match map.get("strict").filter(|v| !v.is_null()) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(SpecError::invalid(format!("strict must be true or false, got {v}"))),
    };
    Ok(Some(EvidencePlan {
        confidence,
        max_error_increase,
        max_extensions,
        on_inconclusive,
        max_latency_increase,
        strict,
    }))
}

/// Parses `mirror:10,10,25,50,100`: mirror steps (1..=50 percent) first, then live percents
/// (1..=100) strictly increasing and ending at 100.
pub fn parse_steps(text: &str) -> Result<Vec<Step>, SpecError> {
    let mut steps = Vec::new();
    for part in text.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
        let (mirror, number) = match part.strip_prefix("mirror:") {
            Some(rest) => (true, rest),
            None => (false, part),
        };
        let percent: u32 = number.trim().parse().map_err(|_| {
            SpecError::invalid(format!(
                "steps: expected \"mirror:N\" or a live percent from 1 to 100 (e.g. \"mirror:10,10,25,50,100\"), got {part:?}"
            ))
        })?;
        let step = if mirror {
            if !(1..=MAX_MIRROR_PERCENT).contains(&percent) {
                return Err(SpecError::invalid(format!(
                    "steps: a mirror step copies 1 to {MAX_MIRROR_PERCENT} percent, got {part:?}"
                )));
            }
            if steps.iter().any(|s| matches!(s, Step::Live(_))) {
                return Err(SpecError::invalid(format!(
                    "steps: mirror steps come before live ones (the target cannot be mirrored once it has live traffic), got {part:?} after a live step"
                )));
            }
            Step::Mirror(percent)
        } else {
            if !(1..=100).contains(&percent) {
                return Err(SpecError::invalid(format!("steps: a live step is a percent from 1 to 100, got {part:?}")));
            }
            if let Some(Step::Live(last)) = steps.last() {
                if percent <= *last {
                    return Err(SpecError::invalid(format!(
                        "steps: live percents must increase, got {percent} after {last}"
                    )));
                }
            }
            Step::Live(percent)
        };
        steps.push(step);
    }
    match steps.last() {
        None => Err(SpecError::invalid("steps is empty: give at least one step, e.g. \"mirror:10,10,25,50,100\"")),
        Some(Step::Live(100)) => Ok(steps),
        Some(_) => {
            Err(SpecError::invalid("steps must end with 100: the rollout is over when the target has all traffic"))
        }
    }
}

/// Parses a duration such as `60s`, `500ms`, `2m` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, SpecError> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(text).map_err(|e| {
        SpecError::invalid(format!(
            "step_duration: expected a duration such as \"60s\" or \"500ms\", got {text:?} ({e})"
        ))
    })
}

fn fraction(v: Option<&Value>, field: &str) -> Result<Option<f64>, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| (0.0..=1.0).contains(f))
            .map(Some)
            .ok_or_else(|| SpecError::invalid(format!("{field} must be a number from 0 to 1 (a share), got {v}"))),
    }
}

fn positive(v: Option<&Value>, field: &str) -> Result<Option<f64>, SpecError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .map(Some)
            .ok_or_else(|| SpecError::invalid(format!("{field} must be a positive number, got {v}"))),
    }
}

/// The live split of a step that gives `target` `percent`: the rest is shared among the
/// deployments that had traffic in `from` (the target's own share there excluded), in
/// proportion to their shares, by largest remainder (ties to the first name), so it sums to
/// 100 exactly. `None` when `from` gives nothing to anyone but the target.
pub fn live_split(from: &Traffic, target: &str, percent: u32) -> Option<Traffic> {
    let others: Vec<(&String, u32)> =
        from.iter().filter(|(n, w)| n.as_str() != target && **w > 0).map(|(n, w)| (n, *w)).collect();
    let total: u32 = others.iter().map(|(_, w)| w).sum();
    if total == 0 {
        return None;
    }
    let rest = 100 - percent.min(100);
    let mut out: Traffic = from.keys().map(|n| (n.clone(), 0)).collect();
    out.insert(target.to_string(), percent.min(100));
    let mut given = 0;
    let mut remainders = Vec::new();
    for (i, (name, w)) in others.iter().enumerate() {
        let share = rest * w / total;
        given += share;
        out.insert((*name).clone(), share);
        remainders.push((rest * w % total, i));
    }
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, i) in remainders.into_iter().take((rest - given) as usize) {
        *out.get_mut(others[i].0).expect("inserted above") += 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_issues_plan_and_refuses_bad_ones() {
        let plan = RolloutPlan::from_value(&serde_json::json!({
            "to": "green", "steps": "mirror:10,10,25,50,100", "step_duration": "60s", "min_agreement": 0.99
        }))
        .unwrap();
        assert_eq!(plan.steps, vec![Step::Mirror(10), Step::Live(10), Step::Live(25), Step::Live(50), Step::Live(100)]);
        assert_eq!(plan.step_duration_ms, 60_000);
        assert_eq!(plan.max_error_rate, DEFAULT_MAX_ERROR_RATE);
        assert_eq!(RolloutPlan::from_document(&plan.to_document()).unwrap(), plan, "show's form reads back");
        for (bad, says) in [
            ("10,25", "end with 100"),
            ("25,10,100", "increase"),
            ("10,mirror:10,100", "before live"),
            ("mirror:60,100", "1 to 50"),
            ("0,100", "1 to 100"),
            ("ten,100", "expected"),
            ("", "empty"),
        ] {
            let e = parse_steps(bad).unwrap_err();
            assert!(e.message.contains(says), "{bad:?}: {}", e.message);
        }
        let base = serde_json::json!({"to": "green", "steps": "10,100", "step_duration": "1s"});
        for (field, value, says) in [
            ("step_duration", serde_json::json!("10ms"), "step_duration"),
            ("max_error_rate", serde_json::json!(2), "0 to 1"),
            ("max_p99_ms", serde_json::json!(-1), "positive"),
            ("min_agreement", serde_json::json!(0.9), "mirror steps"),
            ("min_requests", serde_json::json!(0), "at least 1"),
            ("colour", serde_json::json!(1), "unknown rollout field"),
        ] {
            let mut doc = base.clone();
            doc[field] = value;
            let e = RolloutPlan::from_value(&doc).unwrap_err();
            assert!(e.message.contains(says), "{field}: {}", e.message);
        }
    }

    #[test]
    fn splits_sum_to_100_and_keep_the_others_proportions() {
        let from: Traffic = [("blue".to_string(), 100), ("green".to_string(), 0)].into();
        assert_eq!(
            live_split(&from, "green", 10).unwrap(),
            [("blue".to_string(), 90), ("green".to_string(), 10)].into()
        );
        let three: Traffic = [("a".to_string(), 50), ("b".to_string(), 50), ("t".to_string(), 0)].into();
        for p in 1..=100 {
            let s = live_split(&three, "t", p).unwrap();
            assert_eq!(s.values().sum::<u32>(), 100);
            assert_eq!(s["t"], p);
            assert!(s["a"].abs_diff(s["b"]) <= 1);
        }
        assert!(live_split(&[("green".to_string(), 100)].into(), "green", 10).is_none());
    }

    #[test]
    fn evidence_fields_turn_the_evidence_gates_on_with_defaults_and_are_checked() {
        let base = serde_json::json!({"to": "green", "steps": "50,100", "step_duration": "60s"});
        assert_eq!(RolloutPlan::from_value(&base).unwrap().evidence, None, "absolute gates alone, as before");
        let mut not_strict = base.clone();
        not_strict["strict"] = serde_json::json!(false);
        assert_eq!(RolloutPlan::from_value(&not_strict).unwrap().evidence, None, "strict: false turns nothing on");
        let mut with = base.clone();
        with["confidence"] = serde_json::json!(0.99);
        let plan = RolloutPlan::from_value(&with).unwrap();
        let e = plan.evidence.clone().unwrap();
        assert_eq!((e.confidence, e.max_error_increase, e.max_extensions), (0.99, 0.005, 3));
        assert_eq!(e.on_inconclusive, OnInconclusive::Rollback);
        assert_eq!(RolloutPlan::from_document(&plan.to_document()).unwrap(), plan, "round trip");
        assert_eq!((e.max_latency_increase, e.strict), (None, false), "no latency gate unless asked");
        let mut latency = base.clone();
        latency["max_latency_increase"] = serde_json::json!(1.2);
        latency["strict"] = serde_json::json!(true);
        let plan = RolloutPlan::from_value(&latency).unwrap();
        let e = plan.evidence.clone().expect("max_latency_increase alone turns the evidence gates on");
        assert_eq!((e.max_latency_increase, e.strict, e.confidence), (Some(1.2), true, 0.95));
        assert_eq!(RolloutPlan::from_document(&plan.to_document()).unwrap(), plan, "round trip with latency");
        for (key, bad, says) in [
            ("max_latency_increase", serde_json::json!(1.0), "above 1"),
            ("max_latency_increase", serde_json::json!(0.8), "above 1"),
            ("max_latency_increase", serde_json::json!(11), "at most 10"),
            ("strict", serde_json::json!("yes"), "true or false"),
            ("confidence", serde_json::json!(1.0), "below 1"),
            ("confidence", serde_json::json!(0.2), "at least 0.5"),
            ("max_error_increase", serde_json::json!(0), "above 0"),
            ("max_extensions", serde_json::json!(21), "0 to 20"),
            ("on_inconclusive", serde_json::json!("guess"), "rollback or proceed"),
        ] {
            let mut doc = base.clone();
            doc[key] = bad;
            let e = RolloutPlan::from_value(&doc).unwrap_err();
            assert!(e.message.contains(says), "{key}: {e}");
        }
    }
}
