//! What a rollout's evidence gates need, said before the rollout starts (issue 27): per step,
//! how many target answers (and as many of the incumbent's) the gates need to pass a target
//! no worse than the incumbent, and at the endpoint's current request rate how long gathering
//! them takes, against the time the step may watch (`step_duration × (1 + max_extensions)`).
//! A step that cannot get there would end inconclusive: the start warns, `strict` refuses.
//!
//! Pure: the control plane passes the rate (`telemetry::rate`) and the incumbent's numbers.

use serde::{Deserialize, Serialize};

use super::evidence::{alpha_per_look, requests_for_errors, requests_for_latency};
use crate::spec::{EvidencePlan, RolloutPlan, Step};
use crate::telemetry::samples::SAMPLE;

/// The chance of passing an identical target the estimates are made for.
pub(crate) const POWER: f64 = 0.8;
/// The spread of log latency assumed before the incumbent has answered enough to measure it.
pub(crate) const DEFAULT_LOG_SIGMA: f64 = 0.5;

/// What the plan needs, as `rollout` start answers it and `rollout show` keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PlanNeeds {
    /// The endpoint's live requests per second over the last minute (null: not measured yet).
    pub rate_per_second: Option<f64>,
    /// The incumbent's error rate so far, which the error estimate assumes for both sides.
    pub incumbent_error_rate: f64,
    /// The spread (standard deviation of log latency) the latency estimate assumes, when the
    /// plan has a latency gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_log_sigma: Option<f64>,
    /// The chance of passing a target no worse than the incumbent the numbers are for.
    pub power: f64,
    pub steps: Vec<StepNeed>,
}

/// One step's needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct StepNeed {
    pub step: String,
    /// Answers per side the error gate needs.
    pub error_requests: u64,
    /// Answers per side the latency gate needs (plans with `max_latency_increase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_requests: Option<u64>,
    /// Expected target answers per second at this step (mirror steps: copies).
    pub target_per_second: Option<f64>,
    /// Expected incumbent answers per second to compare with (mirror steps: the live answers
    /// to the copied requests).
    pub incumbent_per_second: Option<f64>,
    /// How long gathering the larger need takes on the slower side, at those rates.
    pub seconds: Option<f64>,
    /// How long the step may watch: `step_duration × (1 + max_extensions)`.
    pub window_seconds: f64,
    /// Whether `seconds` fits in `window_seconds`; null when the rate is not known or the step
    /// has no incumbent.
    pub fits: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The needs of `plan` (which has evidence gates) at `rate` requests per second, with the
/// incumbent's error rate and log-latency spread (`None`: not measured, a default assumed).
pub(crate) fn plan_needs(
    plan: &RolloutPlan,
    e: &EvidencePlan,
    rate: Option<f64>,
    incumbent_error_rate: f64,
    log_sigma: Option<f64>,
) -> PlanNeeds {
    let alpha = alpha_per_look(e.confidence, 1 + e.max_extensions);
    let error_requests =
        requests_for_errors(incumbent_error_rate, incumbent_error_rate, e.max_error_increase, alpha, POWER);
    let sigma = log_sigma.unwrap_or(DEFAULT_LOG_SIGMA);
    let latency_requests = e.max_latency_increase.map(|m| requests_for_latency(sigma, m, 1.0, alpha, POWER));
    let window_seconds = plan.step_duration().as_secs_f64() * f64::from(1 + e.max_extensions);
    let steps = plan
        .steps
        .iter()
        .map(|step| {
            let (target_share, incumbent_share) = match *step {
                Step::Mirror(p) => (f64::from(p) / 100.0, f64::from(p) / 100.0),
                Step::Live(p) => (f64::from(p) / 100.0, f64::from(100 - p) / 100.0),
            };
            let mut need = StepNeed {
                step: step.to_string(),
                error_requests,
                latency_requests,
                target_per_second: rate.map(|r| r * target_share),
                incumbent_per_second: rate.map(|r| r * incumbent_share),
                seconds: None,
                window_seconds,
                fits: None,
                note: None,
            };
            if incumbent_share == 0.0 {
                need.incumbent_per_second = None;
                need.note = Some(
                    "the target has all live traffic: no incumbent to compare with, the absolute gates judge this step"
                        .into(),
                );
                return need;
            }
            if latency_requests.is_some_and(|n| n > SAMPLE as u64) {
                // The window's latency sample holds SAMPLE per side: more never comes.
                need.fits = Some(false);
                need.note = Some(format!(
                    "the latency gate needs about {} latencies on each side, more than the {SAMPLE} a window samples: it cannot reach its power at this margin (a larger max_latency_increase fits)",
                    latency_requests.unwrap_or_default()
                ));
                return need;
            }
            if let Some(slower) = rate.map(|r| r * target_share.min(incumbent_share)) {
                let seconds = if slower > 0.0 {
                    need_seconds(need.error_requests.max(need.latency_requests.unwrap_or(0)), slower)
                } else {
                    f64::INFINITY
                };
                need.seconds = seconds.is_finite().then_some(seconds);
                need.fits = Some(seconds <= window_seconds);
            }
            need
        })
        .collect();
    PlanNeeds {
        rate_per_second: rate,
        incumbent_error_rate,
        latency_log_sigma: e.max_latency_increase.map(|_| sigma),
        power: POWER,
        steps,
    }
}

fn need_seconds(requests: u64, per_second: f64) -> f64 {
    (requests as f64 / per_second * 10.0).ceil() / 10.0
}

/// The standard deviation of log latency from a duration histogram's buckets (`(upper bound
/// in seconds, count)`, doubling, the last +Inf): each bucket's count at the geometric middle
/// of its bounds, plus the spread inside a factor-2 bucket (`ln 2² / 12`, a uniform on the log
/// scale). `None` under 20 observations.
pub(crate) fn log_sigma_from_buckets(buckets: &[(f64, u64)]) -> Option<f64> {
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    if total < 20 {
        return None;
    }
    let mut lower = 0.0_f64;
    let mut points = Vec::with_capacity(buckets.len());
    for (upper, n) in buckets {
        let middle = match (lower > 0.0, upper.is_finite() && *upper < f64::MAX) {
            (true, true) => (lower * upper).sqrt(),
            (false, true) => upper / std::f64::consts::SQRT_2,
            (_, false) => lower * std::f64::consts::SQRT_2,
        };
        if *n > 0 && middle > 0.0 {
            points.push((middle.ln(), *n as f64));
        }
        lower = *upper;
    }
    let count: f64 = points.iter().map(|p| p.1).sum();
    let mean = points.iter().map(|(x, n)| x * n).sum::<f64>() / count;
    let var = points.iter().map(|(x, n)| n * (x - mean).powi(2)).sum::<f64>() / count;
    Some((var + std::f64::consts::LN_2.powi(2) / 12.0).sqrt())
}

/// The needs in words, for the rollout's events: one line for the plan, one per step that
/// cannot get there.
pub(crate) fn needs_text(needs: &PlanNeeds, plan: &RolloutPlan) -> (String, Vec<String>) {
    let rate = needs.rate_per_second.map_or("not measured yet".to_string(), |r| format!("{r:.1}/s"));
    let latency = needs.steps.first().and_then(|s| s.latency_requests).map_or(String::new(), |n| {
        format!(", {n} for the latency gate (log-latency spread {:.2})", needs.latency_log_sigma.unwrap_or_default())
    });
    let per_step: Vec<String> = needs
        .steps
        .iter()
        .map(|s| match (s.seconds, &s.note) {
            (_, Some(_)) if s.fits == Some(false) => format!("{} cannot reach its power", s.step),
            (_, Some(_)) => format!("{} absolute gates only", s.step),
            (Some(t), _) => format!("{} ~{t:.1}s", s.step),
            (None, _) => format!("{} -", s.step),
        })
        .collect();
    let summary = format!(
        "evidence: a step needs about {} target requests (and as many of the incumbent) for the error gate{latency}, to pass a target no worse than the incumbent {:.0}% of the time (incumbent error rate {:.4} so far); at the endpoint's current rate ({rate}) that takes: {}; each step may watch {} ({} window(s) of {})",
        needs.steps.first().map_or(0, |s| s.error_requests),
        needs.power * 100.0,
        needs.incumbent_error_rate,
        per_step.join(", "),
        humantime::format_duration(std::time::Duration::from_secs_f64(needs.steps.first().map_or(0.0, |s| s.window_seconds))),
        1 + plan.evidence.as_ref().map_or(0, |e| e.max_extensions),
        humantime::format_duration(plan.step_duration()),
    );
    let warnings = needs
        .steps
        .iter()
        .filter(|s| s.fits == Some(false))
        .map(|s| match &s.note {
            Some(note) => format!("warning: step {} cannot gather its evidence: {note}", s.step),
            None => {
                let took = s.seconds.map_or("forever (no traffic)".to_string(), |t| format!("about {t:.1}s"));
                format!(
                    "warning: step {} cannot gather its evidence in time: it needs about {} answers on each side, which at the current rate takes {took}, longer than the {:.1}s it may watch; it will end inconclusive unless traffic grows (a longer step_duration, more max_extensions or wider margins would fit)",
                    s.step,
                    s.error_requests.max(s.latency_requests.unwrap_or(0)),
                    s.window_seconds
                )
            }
        })
        .collect();
    (summary, warnings)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn plan(extra: serde_json::Value) -> RolloutPlan {
        let mut doc =
            json!({"to": "green", "steps": "mirror:10,10,50,100", "step_duration": "60s", "confidence": 0.95});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        RolloutPlan::from_value(&doc).unwrap()
    }

    #[test]
    fn each_step_needs_time_by_its_share_and_the_full_step_has_no_incumbent() {
        let p = plan(json!({}));
        let e = p.evidence.clone().unwrap();
        let n = plan_needs(&p, &e, Some(200.0), 0.0, None);
        assert_eq!(n.steps.len(), 4);
        let need = n.steps[0].error_requests;
        assert_eq!(need, requests_for_errors(0.0, 0.0, 0.005, alpha_per_look(0.95, 4), POWER));
        // mirror:10 and 10 both see 20/s on the slower side; 50 sees 100/s on each.
        let at = |i: usize| n.steps[i].seconds.unwrap();
        assert!((at(0) - need as f64 / 20.0).abs() < 0.11, "{:?}", n.steps[0]);
        assert!((at(1) - at(0)).abs() < 1e-9);
        assert!((at(2) - need as f64 / 100.0).abs() < 0.11);
        assert_eq!(n.steps[0].window_seconds, 240.0, "60s × (1 + 3 extensions)");
        assert_eq!(n.steps[3].fits, None);
        assert!(n.steps[3].note.as_deref().unwrap().contains("no incumbent"));
        assert_eq!(n.latency_log_sigma, None, "no latency gate asked");

        // A trickle: the steps do not fit, and the words say so.
        let slow = plan_needs(&p, &e, Some(1.0), 0.0, None);
        assert_eq!(slow.steps[0].fits, Some(false));
        let (summary, warnings) = needs_text(&slow, &p);
        assert!(summary.contains("current rate (1.0/s)"), "{summary}");
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        assert!(
            warnings[0].starts_with("warning: step mirror:10 cannot gather its evidence in time"),
            "{}",
            warnings[0]
        );
        let unknown = plan_needs(&p, &e, None, 0.0, None);
        assert!(unknown.steps.iter().all(|s| s.fits.is_none() && s.seconds.is_none()));
        let none = plan_needs(&p, &e, Some(0.0), 0.0, None);
        assert_eq!(none.steps[0].fits, Some(false), "no traffic at all never fits");
    }

    #[test]
    fn a_latency_gate_adds_its_need_from_the_spread() {
        let p = plan(json!({"max_latency_increase": 1.2}));
        let e = p.evidence.clone().unwrap();
        let tight = plan_needs(&p, &e, Some(100.0), 0.0, Some(0.2));
        let wide = plan_needs(&p, &e, Some(100.0), 0.0, Some(1.0));
        let (t, w) = (tight.steps[2].latency_requests.unwrap(), wide.steps[2].latency_requests.unwrap());
        assert!(t < w, "a wider spread needs more: {t} vs {w}");
        assert_eq!(plan_needs(&p, &e, Some(100.0), 0.0, None).latency_log_sigma, Some(DEFAULT_LOG_SIGMA));
        // A margin so tight that a window's sample cannot show it: never fits, whatever the rate.
        let tight = plan(json!({"max_latency_increase": 1.02}));
        let n = plan_needs(&tight, tight.evidence.as_ref().unwrap(), Some(1e6), 0.0, Some(0.5));
        assert!(n.steps[0].latency_requests.unwrap() > SAMPLE as u64);
        assert_eq!(n.steps[0].fits, Some(false));
        let (_, warnings) = needs_text(&n, &tight);
        assert!(warnings[0].contains("more than the 2048 a window samples"), "{warnings:?}");
    }

    #[test]
    fn the_spread_of_log_latency_is_read_from_doubling_buckets() {
        assert_eq!(log_sigma_from_buckets(&[(0.001, 5), (f64::MAX, 0)]), None, "too few");
        // All in one bucket: only the spread inside it.
        let one = log_sigma_from_buckets(&[(0.001, 0), (0.002, 100), (0.004, 0), (f64::MAX, 0)]).unwrap();
        assert!((one - std::f64::consts::LN_2 / 12f64.sqrt()).abs() < 1e-9, "{one}");
        // Half in each of two neighbouring buckets: ln 2 apart, so σ² = (ln2/2)² + ln2²/12.
        let two = log_sigma_from_buckets(&[(0.001, 0), (0.002, 50), (0.004, 50), (f64::MAX, 0)]).unwrap();
        let want = ((std::f64::consts::LN_2 / 2.0).powi(2) + std::f64::consts::LN_2.powi(2) / 12.0).sqrt();
        assert!((two - want).abs() < 1e-9, "{two} vs {want}");
    }
}
