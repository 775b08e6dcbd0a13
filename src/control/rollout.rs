//! Guarded progressive rollout: traffic moves to a target deployment in steps, each step is
//! watched for a window, and a step whose gates fail sends traffic back to the last good split
//! by itself, with the reason on record.
//!
//! **No side door.** Every step, rollback and abort is an ordinary traffic change: the same
//! `traffic::validate` and `check_can_serve` as `PATCH /v1/endpoint`, made under the state lock,
//! saved (`--state-dir`) before it is published, and published as a new routing snapshot. The
//! rollout's own progress is saved in the same document in the same save, so a restart finds
//! the traffic and the step that produced it together. While a rollout is running or paused,
//! other traffic changes are refused (409): it owns the split and the mirror rule.
//!
//! **Gates.** A step's numbers are windows over the deployments' cumulative series
//! (`telemetry::window`): a reading at the step's start, one at its end, the difference. The
//! target is read in its live role (live steps) or its mirror role (mirror steps); the p99
//! ratio compares it with the other deployments of the step's split over the same window. A
//! step is judged once its window is over *and* the target answered `min_requests` in it
//! (it holds until then); it is judged once, so a healthy target is not rolled back by
//! looking many times at a noisy number.
//!
//! **Timer.** One task per rollout ticks a few times per window (`tick`); it does nothing but
//! call the control plane, which decides under the lock. A restart restores the rollout and
//! starts a new task; the current step's window starts again then (the counts before the
//! restart are gone with the process).

use std::sync::Arc;
use std::time::Duration;

// The window clock is tokio's: under its paused clock (the unit tests) a step's minute passes at once.
use tokio::time::Instant;

use super::views::{RolloutSummary, RolloutView, StepView};
use super::{ControlError, ControlPlane, State};
use crate::spec::rollout::live_split;
use crate::spec::{traffic, RolloutPlan, Step, Traffic};
use crate::telemetry::samples::Reservoir;
use crate::telemetry::{Reading, Role};
use serde::{Deserialize, Serialize};

/// The most events a rollout keeps (the oldest go first).
const MAX_EVENTS: usize = 100;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RolloutStatus {
    /// Steps are being watched and taken.
    Running,
    /// Held by `rollout pause`: traffic stays, nothing is judged.
    Paused,
    /// The target has all traffic and passed the last step.
    Succeeded,
    /// A gate failed: traffic went back to the last good split.
    RolledBack,
    /// Stopped by `rollout abort`: traffic went back to the split the rollout started from.
    Aborted,
}

impl RolloutStatus {
    /// Running or paused: the rollout owns the traffic.
    pub(crate) fn active(self) -> bool {
        matches!(self, RolloutStatus::Running | RolloutStatus::Paused)
    }
}

/// Who started a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RolloutSource {
    /// `online-endpoint rollout` / `POST /v1/endpoint/rollout`.
    Api,
    /// The `rollout:` field of endpoint.yml in `--config-dir` mode.
    ConfigDir,
}

/// The numbers of one step's window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct GateValues {
    /// Answers of the target in the window (live or mirror role, per the step).
    pub requests: u64,
    /// Of those, 5xx, 424 and 408.
    pub errors: u64,
    pub error_rate: Option<f64>,
    pub p99_ms: Option<f64>,
    /// p99 of the other deployments of the split over the same window.
    pub live_p99_ms: Option<f64>,
    pub p99_ratio: Option<f64>,
    /// Mirror agreement since the step set the mirror rule (mirror steps).
    pub agreement: Option<f64>,
    pub compared_pairs: Option<u64>,
    /// Live answers of the incumbent in the window: on live steps the other deployments of
    /// the split; on mirror steps the live answers to the very requests that were copied
    /// (the pairs that met).
    #[serde(default)]
    pub incumbent_requests: u64,
    /// Of those, 5xx, 424 and 408.
    #[serde(default)]
    pub incumbent_errors: u64,
    /// Mirror steps: the shadow's errors among those pairs (what the error gate compares
    /// with `incumbent_errors`, request for request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paired_target_errors: Option<u64>,
}

/// One side of an evidence gate's comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct SideEvidence {
    /// Answers (error gate) or latencies in the sample (latency gate).
    pub n: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
}

impl SideEvidence {
    fn errors(errors: u64, n: u64) -> Self {
        Self { n, errors: Some(errors), rate: (n > 0).then(|| errors as f64 / n as f64), ..Self::default() }
    }

    fn latencies(seconds: &[f64]) -> Self {
        let mut sorted = seconds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            (!sorted.is_empty()).then(|| {
                let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
                (sorted[i] * 1e6).round() / 1e3
            })
        };
        Self { n: sorted.len() as u64, median_ms: at(0.5), p99_ms: at(0.99), ..Self::default() }
    }
}

/// Per-request latencies of a window, for the latency gate (seconds).
#[derive(Debug, Clone, Copy)]
struct LatencySamples<'a> {
    target: &'a [f64],
    incumbent: &'a [f64],
}

/// One evidence gate's judgement of a window (issue 27): what it compared and what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct GateEvidence {
    /// `error_increase`, `latency_increase` or `agreement`.
    pub gate: String,
    /// The look at the step's growing window (1 = its first window).
    pub look: u32,
    #[serde(flatten)]
    pub judgement: super::evidence::Judgement,
    /// The margin or bound it was judged against.
    pub limit: f64,
    /// Why the gate could not be judged, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The target's side: answers and errors, or the latency sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<SideEvidence>,
    /// The incumbent's side, over the same window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incumbent: Option<SideEvidence>,
}

/// Why a rollout was rolled back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Rollback {
    /// The step that failed (`mirror:10`, `25`).
    pub step: String,
    /// `error_rate`, `p99_ms`, `p99_ratio`, `agreement`, the evidence gates' `error_increase`
    /// and `latency_increase`, `inconclusive`, `traffic_change` or `target_failed`.
    pub gate: String,
    /// The measured value (null when none could be measured).
    pub value: Option<f64>,
    /// The limit it broke.
    pub limit: Option<f64>,
    /// What happened, in words.
    pub message: String,
    /// The split traffic went back to.
    #[schema(inline)]
    pub traffic: Traffic,
    pub at: String,
    /// The evidence gates' judgements of the last window (plans with `confidence`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<GateEvidence>,
}

/// A passed step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct PassedStep {
    pub step: String,
    pub gates: GateValues,
    pub at: String,
    /// The evidence gates' judgements of the deciding window (plans with `confidence`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<GateEvidence>,
    /// Set when the step proceeded undecided (`on_inconclusive: proceed`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub inconclusive: bool,
}

/// One line of a rollout's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Event {
    pub at: String,
    pub message: String,
}

/// A rollout as saved (`--state-dir`): the plan and its progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DurableRollout {
    pub plan: RolloutPlan,
    pub source: RolloutSource,
    pub status: RolloutStatus,
    /// The live split when the rollout started (an abort returns to it).
    pub from: Traffic,
    /// The split of the last live step that passed (`from` before any); a rollback returns to it.
    pub last_good: Traffic,
    /// Index of the current step in `plan.steps`.
    pub step: usize,
    pub started_at: String,
    #[serde(default)]
    pub passed: Vec<PassedStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<Rollback>,
    #[serde(default)]
    pub events: Vec<Event>,
    /// The evidence of the window a rollback is about to record (never saved).
    #[serde(skip)]
    pub pending_evidence: Vec<GateEvidence>,
    /// Every window the evidence gates judged (plans with `confidence`), oldest first.
    #[serde(default)]
    pub judged: Vec<JudgedWindow>,
    /// What the evidence gates need per step, estimated when the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<super::needs::PlanNeeds>,
    /// Looks the evidence gates took at the current step and found inconclusive. Kept across
    /// a pause, a resume and a restart (whose windows start again), so a step never gets more
    /// than `1 + max_extensions` looks in all: the level split between them holds.
    #[serde(default)]
    pub step_looks: u32,
}

/// One window judged by the evidence gates, and what the rollout did with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct JudgedWindow {
    pub step: String,
    /// 1 for the step's first window, then one more per extension.
    pub look: u32,
    /// `passed`, `failed`, `extended` (inconclusive, the window grows), `rolled_back_inconclusive`
    /// or `proceeded_inconclusive`.
    pub decision: String,
    pub gates: Vec<GateEvidence>,
    pub at: String,
}

/// The most judged windows a rollout keeps (the oldest go).
const MAX_JUDGED: usize = 200;

impl DurableRollout {
    fn judged_window(&mut self, decision: &str, gates: &[GateEvidence]) {
        if gates.is_empty() {
            return;
        }
        let look = gates[0].look;
        self.judged.push(JudgedWindow {
            step: self.current().to_string(),
            look,
            decision: decision.to_string(),
            gates: gates.to_vec(),
            at: now_text(),
        });
        if self.judged.len() > MAX_JUDGED {
            self.judged.remove(0);
        }
    }
}

/// The rollout in the control plane's state: the saved part and the current window.
#[derive(Debug, Clone)]
pub(super) struct RolloutRecord {
    pub durable: DurableRollout,
    /// The current step's window; `None` until it starts (after a restart, a resume).
    window: Option<Window>,
    /// The timer task that drives this rollout (a newer rollout's task has another id).
    ticker: u64,
}

/// Where the current step's window started.
#[derive(Debug, Clone)]
struct Window {
    started: Instant,
    target: Reading,
    others: Vec<(String, Reading)>,
    /// Windows this step has been judged inconclusive on (the window keeps growing).
    extensions: u32,
    /// Live steps of a plan with a latency gate: the per-request latencies gathered so far.
    latency: Option<LatencyWindow>,
}

/// Latencies of a live step's window: where each watched ring was read up to, and a bounded
/// uniform sample of each side (`telemetry::samples`), which grows with the window.
#[derive(Debug, Clone)]
struct LatencyWindow {
    /// `(deployment, is the target, ring cursor)`.
    cursors: Vec<(String, bool, u64)>,
    target: Reservoir,
    incumbent: Reservoir,
}

/// Latencies each side of a window keeps.
const LATENCY_SAMPLE: usize = crate::telemetry::samples::SAMPLE;

fn now_text() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl DurableRollout {
    fn event(&mut self, message: String) {
        tracing::info!(target: "switchyard::rollout", to = %self.plan.to, "{message}");
        if crate::telemetry::traces::on() {
            // One trace per rollout: named by its target and its start.
            let rollout = format!("{} {}", self.plan.to, self.started_at);
            crate::telemetry::traces::rollout_event(&rollout, &self.plan.to, &message);
        }
        self.events.push(Event { at: now_text(), message });
        if self.events.len() > MAX_EVENTS {
            self.events.remove(0);
        }
    }

    fn current(&self) -> Step {
        self.plan.steps[self.step.min(self.plan.steps.len() - 1)]
    }

    /// The live split and mirror rule of step `index`.
    fn split_of(&self, index: usize) -> (Traffic, Traffic) {
        match self.plan.steps[index] {
            Step::Mirror(p) => (self.last_good.clone(), [(self.plan.to.clone(), p)].into()),
            Step::Live(p) => (live_split(&self.from, &self.plan.to, p).unwrap_or_default(), Traffic::new()),
        }
    }

    /// Checks a saved rollout against the saved deployments (restart).
    pub(crate) fn validate(&self, names: &std::collections::BTreeSet<String>) -> Result<(), crate::spec::SpecError> {
        let plan = RolloutPlan::from_document(&self.plan.to_document())?;
        let bad = |what: &str| crate::spec::SpecError::invalid(format!("the saved rollout {what}"));
        if plan.steps != self.plan.steps || self.step >= plan.steps.len() {
            return Err(bad("has a step out of its plan"));
        }
        if self.status.active() && !names.contains(&plan.to) {
            return Err(bad(&format!("moves traffic to deployment {:?}, which is not saved", plan.to)));
        }
        let positive =
            |t: &Traffic| -> Traffic { t.iter().filter(|(_, w)| **w > 0).map(|(n, w)| (n.clone(), *w)).collect() };
        if self.status.active() {
            traffic::validate(&positive(&self.from), &Traffic::new(), names)
                .map_err(|e| bad(&format!("starts from a split that breaks a rule: {}", e.message)))?;
            traffic::validate(&positive(&self.last_good), &Traffic::new(), names)
                .map_err(|e| bad(&format!("has a last good split that breaks a rule: {}", e.message)))?;
        }
        Ok(())
    }
}

impl RolloutRecord {
    /// A record restored from the saved state: its window starts when its task first ticks.
    pub(super) fn restored(durable: DurableRollout) -> Self {
        Self { durable, window: None, ticker: 0 }
    }
}

/// What a tick decided.
#[derive(Debug, PartialEq)]
enum Verdict {
    Hold,
    Pass(GateValues),
    Fail { gate: &'static str, value: Option<f64>, limit: Option<f64>, values: GateValues },
}

/// What a tick does with the current window.
#[derive(Debug, PartialEq)]
enum Decision {
    Hold,
    Pass {
        values: GateValues,
        evidence: Vec<GateEvidence>,
        inconclusive: bool,
    },
    Fail {
        gate: &'static str,
        value: Option<f64>,
        limit: Option<f64>,
        values: GateValues,
        evidence: Vec<GateEvidence>,
    },
    /// Inconclusive, with extensions left: the window grows by one step window.
    Extend {
        values: GateValues,
        evidence: Vec<GateEvidence>,
    },
}

/// What the evidence gates make of a window the absolute gates passed.
#[derive(Debug, PartialEq)]
enum Weighed {
    /// Every gate passed (or could not apply, which the record says).
    Pass(Vec<GateEvidence>),
    /// A gate showed the target worse than the incumbent by more than its margin.
    Fail { gate: &'static str, value: f64, limit: f64, evidence: Vec<GateEvidence> },
    /// Not decided at this look.
    Inconclusive(Vec<GateEvidence>),
}

/// The evidence gates of a window (plans with `confidence`), pure: the errors of the target
/// against the incumbent's over the same window (mirror steps: the two answers to the same
/// copied requests), the latencies when the plan has `max_latency_increase`, and on mirror
/// steps the agreement's lower bound. `look` counts from 1; each look is judged at its share
/// of `1 - confidence`. A gate with nothing to compare with (no incumbent) carries a note and
/// decides nothing.
fn weigh(
    plan: &RolloutPlan,
    step: Step,
    look: u32,
    v: &GateValues,
    latency: Option<LatencySamples>,
) -> Option<Weighed> {
    use super::evidence::{agreement, alpha_per_look, error_increase, latency_increase, Outcome};
    let e = plan.evidence.as_ref()?;
    let alpha = alpha_per_look(e.confidence, 1 + e.max_extensions);
    let mut evidence = Vec::new();
    // Only a step that gives the target all live traffic has no incumbent to compare with;
    // any other step whose incumbent did not answer yet is undecided, never passed.
    let no_incumbent = (step == Step::Live(100)).then(|| {
        "no incumbent in this step (it gives the target all live traffic): the absolute gates judged it".to_string()
    });
    let target = match (step, v.paired_target_errors) {
        (Step::Mirror(_), Some(errors)) => (errors, v.incumbent_requests),
        _ => (v.errors, v.requests),
    };
    let incumbent = (v.incumbent_errors, v.incumbent_requests);
    evidence.push(GateEvidence {
        gate: "error_increase".into(),
        look,
        judgement: error_increase(target, incumbent, e.max_error_increase, alpha),
        limit: e.max_error_increase,
        note: no_incumbent.clone(),
        target: Some(SideEvidence::errors(target.0, target.1)),
        incumbent: Some(SideEvidence::errors(incumbent.0, incumbent.1)),
    });
    if let Some(margin) = e.max_latency_increase {
        let samples = latency.unwrap_or(LatencySamples { target: &[], incumbent: &[] });
        evidence.push(GateEvidence {
            gate: "latency_increase".into(),
            look,
            judgement: latency_increase(samples.target, samples.incumbent, margin, alpha),
            limit: margin,
            // An empty side is undecided, not skipped: more requests can decide it.
            note: no_incumbent.clone(),
            target: Some(SideEvidence::latencies(samples.target)),
            incumbent: Some(SideEvidence::latencies(samples.incumbent)),
        });
    }
    if let (Some(min), Step::Mirror(_), Some(compared)) = (plan.min_agreement, step, v.compared_pairs) {
        let agreed = (v.agreement.unwrap_or(0.0) * compared as f64).round() as u64;
        evidence.push(GateEvidence {
            gate: "agreement".into(),
            look,
            judgement: agreement(agreed, compared, min, alpha),
            limit: min,
            note: None,
            target: None,
            incumbent: None,
        });
    }
    let judged = |g: &GateEvidence| g.note.is_none();
    if let Some(f) = evidence.iter().find(|g| judged(g) && g.judgement.outcome == Outcome::Fail) {
        let gate = match f.gate.as_str() {
            "agreement" => "agreement",
            "latency_increase" => "latency_increase",
            _ => "error_increase",
        };
        // The latency gate's value is the ratio of the medians (comparable with its margin);
        // the others', their estimate.
        let median_ratio = match (&f.target, &f.incumbent) {
            (Some(SideEvidence { median_ms: Some(t), .. }), Some(SideEvidence { median_ms: Some(i), .. }))
                if *i > 0.0 =>
            {
                Some(t / i)
            }
            _ => None,
        };
        let value = if gate == "latency_increase" {
            median_ratio.unwrap_or(f.judgement.estimate)
        } else {
            f.judgement.estimate
        };
        let limit = f.limit;
        return Some(Weighed::Fail { gate, value, limit, evidence });
    }
    if evidence.iter().filter(|g| judged(g)).all(|g| g.judgement.outcome == Outcome::Pass) {
        return Some(Weighed::Pass(evidence));
    }
    Some(Weighed::Inconclusive(evidence))
}

/// The rules of a step's gates, on the window's numbers alone (no clock, no state): hold
/// until the step has lasted `step_duration` and the target answered `min_requests`; then the
/// first gate broken fails the step, in the order error rate, p99, p99 ratio, agreement; else
/// it passes. A gate whose number could not be measured (no p99, no live traffic to compare
/// with) does not fail the step, except agreement on a mirror step, which must be measured.
fn verdict(plan: &RolloutPlan, step: Step, elapsed: Duration, v: GateValues) -> Verdict {
    if elapsed < plan.step_duration() || v.requests < plan.min_requests {
        return Verdict::Hold;
    }
    let fail = |gate, value, limit: f64, values: GateValues| Verdict::Fail { gate, value, limit: Some(limit), values };
    if let Some(rate) = v.error_rate.filter(|rate| *rate > plan.max_error_rate) {
        return fail("error_rate", Some(rate), plan.max_error_rate, v);
    }
    if let (Some(limit), Some(p99)) = (plan.max_p99_ms, v.p99_ms) {
        if p99 > limit {
            return fail("p99_ms", Some(p99), limit, v);
        }
    }
    if let (Some(limit), Some(ratio)) = (plan.max_p99_ratio, v.p99_ratio) {
        if ratio > limit {
            return fail("p99_ratio", Some(ratio), limit, v);
        }
    }
    if let (Some(limit), Step::Mirror(_)) = (plan.min_agreement, step) {
        match v.agreement {
            Some(a) if a >= limit => {}
            other => return fail("agreement", other, limit, v),
        }
    }
    Verdict::Pass(v)
}

impl ControlPlane {
    /// `POST /v1/endpoint/rollout` (and the config-dir reconciler): checks the plan against the
    /// state, takes the first step as an ordinary traffic change, and starts the timer.
    pub(crate) fn start_rollout(
        self: &Arc<Self>,
        plan: RolloutPlan,
        source: RolloutSource,
    ) -> Result<RolloutView, ControlError> {
        let ticker = {
            let mut state = self.lock();
            let ep = state.endpoint.as_ref().ok_or_else(super::endpoint::no_endpoint)?;
            if let Some(r) = state.rollout.as_ref().filter(|r| r.durable.status.active()) {
                return Err(ControlError::Conflict(format!(
                    "a rollout to {:?} is {}: wait for it, or abort the rollout",
                    r.durable.plan.to,
                    status_word(r.durable.status)
                )));
            }
            if !state.deployments.contains_key(&plan.to) {
                let known: Vec<&str> = state.deployments.keys().map(String::as_str).collect();
                return Err(ControlError::invalid(format!(
                    "rollout --to names deployment {:?}, which does not exist (deployments: {})",
                    plan.to,
                    known.join(", ")
                )));
            }
            let from = ep.spec.traffic.clone();
            if from.get(&plan.to).copied() == Some(100) {
                return Err(ControlError::Conflict(format!("deployment {:?} already has all live traffic", plan.to)));
            }
            if live_split(&from, &plan.to, 50).is_none() {
                return Err(ControlError::Conflict(
                    "no deployment has live traffic to move from: give one traffic first (the endpoint's traffic)"
                        .into(),
                ));
            }
            let mut durable = DurableRollout {
                plan,
                source,
                status: RolloutStatus::Running,
                last_good: from.clone(),
                from,
                step: 0,
                started_at: now_text(),
                passed: Vec::new(),
                rollback: None,
                events: Vec::new(),
                pending_evidence: Vec::new(),
                judged: Vec::new(),
                needs: None,
                step_looks: 0,
            };
            durable.event(format!(
                "rollout to {} started from {}: steps {}, {} each",
                durable.plan.to,
                split_text(&durable.from),
                durable.plan.steps.iter().map(Step::to_string).collect::<Vec<_>>().join(","),
                humantime::format_duration(durable.plan.step_duration())
            ));
            if let Some(e) = durable.plan.evidence.clone() {
                // What the plan needs, said upfront: per step, the answers the evidence gates
                // need to pass a target no worse than the incumbent, and how long that takes
                // at the endpoint's rate over the last minute.
                let mut incumbent = Reading::default();
                for (n, _) in durable.from.iter().filter(|(_, w)| **w > 0) {
                    if let Some(d) = state.deployments.get(n) {
                        incumbent.merge(&d.live.metrics().reading(Role::live));
                    }
                }
                let error_rate =
                    if incumbent.requests > 0 { incumbent.errors as f64 / incumbent.requests as f64 } else { 0.0 };
                let sigma = super::needs::log_sigma_from_buckets(&incumbent.buckets);
                let rate = self.meter.lock().unwrap_or_else(|p| p.into_inner()).per_second();
                let needs = super::needs::plan_needs(&durable.plan, &e, rate, error_rate, sigma);
                let (summary, warnings) = super::needs::needs_text(&needs, &durable.plan);
                // From the config folder, an unknown rate (the folder is applied at start,
                // before any traffic) is a warning: refusing would never start the rollout.
                let mut warnings = warnings;
                if rate.is_none() && e.strict && source == RolloutSource::ConfigDir {
                    warnings.push(
                        "warning: strict could not check this plan: the endpoint's request rate is not measured yet"
                            .to_string(),
                    );
                }
                if e.strict {
                    let why = if rate.is_none() && source == RolloutSource::ConfigDir {
                        None
                    } else if rate.is_none() {
                        Some(
                            "the endpoint's request rate is not measured yet (it takes a few seconds of serving)"
                                .to_string(),
                        )
                    } else if warnings.is_empty() {
                        None
                    } else {
                        Some(warnings.iter().map(|w| w.trim_start_matches("warning: ")).collect::<Vec<_>>().join("; "))
                    };
                    if let Some(why) = why {
                        return Err(ControlError::invalid(format!(
                            "strict: this plan cannot gather the evidence it needs: {why}. {summary}"
                        )));
                    }
                }
                durable.event(summary);
                for w in warnings {
                    tracing::warn!(target: "switchyard::rollout", to = %durable.plan.to, "{w}");
                    durable.event(w);
                }
                durable.needs = Some(needs);
            }
            let ticker = self.next_ticker();
            let (live, mirror) = durable.split_of(0);
            durable.event(step_started(&durable, &live, &mirror));
            let record = RolloutRecord { durable, window: None, ticker };
            self.move_traffic(&mut state, live, mirror, move |s| s.rollout = Some(record))?;
            self.start_window(&mut state);
            ticker
        };
        self.spawn_ticker(ticker);
        self.rollout_view()
    }

    /// `POST /v1/endpoint/rollout/pause`: traffic stays where it is and nothing is judged.
    pub(crate) fn pause_rollout(&self) -> Result<RolloutView, ControlError> {
        self.change_status(RolloutStatus::Running, RolloutStatus::Paused, "paused: traffic stays, nothing is judged")
    }

    /// `POST /v1/endpoint/rollout/resume`: the current step's window starts again.
    pub(crate) fn resume_rollout(&self) -> Result<RolloutView, ControlError> {
        self.change_status(
            RolloutStatus::Paused,
            RolloutStatus::Running,
            "resumed: the current step's window starts again",
        )
    }

    /// `POST /v1/endpoint/rollout/abort`: traffic goes back to the split the rollout started
    /// from (mirror rule cleared), as one traffic change. An abort always ends the rollout: a
    /// deployment of that split that cannot serve now (it failed to load) is left out and its
    /// share spread over the others; when none of them can serve, traffic stays on the
    /// deployments of the current split that can (CONTRACT §5).
    pub(crate) fn abort_rollout(&self) -> Result<RolloutView, ControlError> {
        {
            let mut state = self.lock();
            let r = active(&state)?;
            let mut durable = r.durable.clone();
            let current = state.endpoint.as_ref().map(|e| e.spec.traffic.clone()).unwrap_or_default();
            let can = |n: &str| servable(&state, n);
            let (back, note) = match traffic::spread(&durable.from, can) {
                Some(back) => {
                    let left: Vec<&str> =
                        durable.from.iter().filter(|(n, w)| **w > 0 && !can(n)).map(|(n, _)| n.as_str()).collect();
                    let note = match left.is_empty() {
                        true => String::new(),
                        false => format!(" (left out, as it cannot serve: {})", left.join(", ")),
                    };
                    (back, note)
                }
                None => (
                    traffic::spread(&current, can).unwrap_or_else(|| current.clone()),
                    " (no deployment of the split it started from can serve: traffic stays with the current split's)"
                        .to_string(),
                ),
            };
            durable.status = RolloutStatus::Aborted;
            durable.event(format!("aborted: traffic back to {}{note}", split_text(&back)));
            self.move_traffic(&mut state, back, Traffic::new(), move |s| {
                if let Some(r) = s.rollout.as_mut() {
                    r.durable = durable;
                }
            })?;
        }
        self.rollout_view()
    }

    /// `GET /v1/endpoint/rollout`: the plan, the status, the current step with its time left
    /// and gate values so far, the passed steps, the rollback reason and the events.
    pub(crate) fn rollout_view(&self) -> Result<RolloutView, ControlError> {
        let state = self.lock();
        let r = state.rollout.as_ref().ok_or_else(|| {
            ControlError::NotFound(
                "no rollout has been started on this endpoint: start one first (to, steps, step_duration)".into(),
            )
        })?;
        Ok(self.view_of(&state, r))
    }

    /// A short form for the endpoint's view (`rollout_status`): never a plan, so that a shown
    /// endpoint written back as a file starts nothing.
    pub(super) fn rollout_summary(&self, state: &State) -> Option<RolloutSummary> {
        let r = state.rollout.as_ref()?;
        let d = &r.durable;
        Some(RolloutSummary {
            to: d.plan.to.clone(),
            status: d.status,
            step: d.current().to_string(),
            step_index: d.step,
            steps: d.plan.steps.len(),
            source: d.source,
            rollback: d.rollback.clone(),
        })
    }

    fn view_of(&self, state: &State, r: &RolloutRecord) -> RolloutView {
        let d = &r.durable;
        let (traffic, mirror_traffic) = state
            .endpoint
            .as_ref()
            .map(|e| (e.spec.traffic.clone(), e.spec.mirror_traffic.clone()))
            .unwrap_or_default();
        let mut step = StepView {
            index: d.step,
            of: d.plan.steps.len(),
            step: d.current().to_string(),
            traffic,
            mirror_traffic,
            elapsed_ms: None,
            remaining_ms: None,
            gates: None,
        };
        if d.status.active() {
            match &r.window {
                Some(w) => {
                    let elapsed = w.started.elapsed();
                    step.elapsed_ms = Some(elapsed.as_millis() as u64);
                    let window = d.plan.step_duration() * (w.extensions + 1);
                    step.remaining_ms = Some(window.saturating_sub(elapsed).as_millis() as u64);
                    step.gates = Some(self.measure(state, d, w));
                }
                None => step.remaining_ms = Some(d.plan.step_duration_ms),
            }
        }
        RolloutView {
            to: d.plan.to.clone(),
            status: d.status,
            source: d.source,
            plan: d.plan.to_document(),
            from: d.from.clone(),
            last_good: d.last_good.clone(),
            started_at: d.started_at.clone(),
            passed: d.passed.clone(),
            rollback: d.rollback.clone(),
            events: d.events.clone(),
            judged: d.judged.clone(),
            needs: d.needs.clone(),
            step,
        }
    }

    fn change_status(&self, from: RolloutStatus, to: RolloutStatus, what: &str) -> Result<RolloutView, ControlError> {
        {
            let mut state = self.lock();
            let r = active(&state)?;
            if r.durable.status != from {
                return Err(ControlError::Conflict(format!(
                    "the rollout to {:?} is {}, not {}",
                    r.durable.plan.to,
                    status_word(r.durable.status),
                    status_word(from)
                )));
            }
            let before = state.clone();
            let r = state.rollout.as_mut().expect("checked above");
            r.durable.status = to;
            r.durable.event(what.to_string());
            r.window = None;
            self.commit(&mut state, before)?;
            // Paused: nothing is judged, so no request pays for latency samples.
            disarm_latencies(&state);
            if to == RolloutStatus::Running {
                self.start_window(&mut state);
            }
        }
        self.rollout_view()
    }

    /// One change of traffic and mirror rule, with `update` applied to the state in the same
    /// save: the same rules and the same commit as `PATCH /v1/endpoint`.
    fn move_traffic(
        &self,
        state: &mut State,
        live: Traffic,
        mirror: Traffic,
        update: impl FnOnce(&mut State),
    ) -> Result<(), ControlError> {
        let names = state.deployments.keys().cloned().collect();
        // A deployment deleted since the split was recorded had 0 there (one with traffic
        // cannot be deleted during a rollout): leave it out.
        let mut live = live;
        live.retain(|_, w| *w > 0);
        let (live, mirror) = traffic::validate(&live, &mirror, &names)?;
        super::endpoint::check_can_serve(state, &live)?;
        let before = state.clone();
        let ep = state.endpoint.as_mut().ok_or_else(super::endpoint::no_endpoint)?;
        let old_mirror = std::mem::replace(&mut ep.spec.mirror_traffic, mirror.clone());
        ep.spec.traffic = live;
        update(state);
        self.commit(state, before)?;
        self.reset_comparisons(state, &old_mirror, &mirror);
        Ok(())
    }

    /// Takes the readings the current step's window starts from. A live step of a plan with a
    /// latency gate also arms the latency rings of the target and the incumbent (and only
    /// theirs: every other ring of the endpoint is disarmed, so requests pay for them only
    /// while they are watched).
    fn start_window(&self, state: &mut State) {
        let Some(r) = state.rollout.as_ref() else { return };
        let d = &r.durable;
        let role = match d.current() {
            Step::Mirror(_) => Role::mirror,
            Step::Live(_) => Role::live,
        };
        let reading = |name: &str, role| state.deployments.get(name).map(|rec| rec.live.metrics().reading(role));
        let target = reading(&d.plan.to, role).unwrap_or_default();
        let traffic = state.endpoint.as_ref().map(|e| e.spec.traffic.clone()).unwrap_or_default();
        let others: Vec<(String, Reading)> = traffic
            .iter()
            .filter(|(n, w)| **w > 0 && **n != d.plan.to)
            .filter_map(|(n, _)| reading(n, Role::live).map(|r| (n.clone(), r)))
            .collect();
        disarm_latencies(state);
        // The 100% step has no incumbent: nothing to compare its latencies with.
        let watch_latency = d.plan.evidence.as_ref().is_some_and(|e| e.max_latency_increase.is_some())
            && matches!(d.current(), Step::Live(p) if p < 100);
        let latency = watch_latency.then(|| {
            let sides =
                std::iter::once((d.plan.to.clone(), true)).chain(others.iter().map(|(n, _)| (n.clone(), false)));
            let cursors = sides
                .filter_map(|(name, is_target)| {
                    let ring = state.deployments.get(&name)?.live.metrics().latencies(Role::live);
                    ring.arm(true);
                    Some((name, is_target, ring.cursor()))
                })
                .collect();
            // Seeded by the step, so a rerun of the same traffic samples alike.
            let seed = d.step as u64;
            LatencyWindow {
                cursors,
                target: Reservoir::new(LATENCY_SAMPLE, seed * 2 + 1),
                incumbent: Reservoir::new(LATENCY_SAMPLE, seed * 2 + 2),
            }
        });
        let window = Window { started: Instant::now(), target, others, extensions: 0, latency };
        if let Some(r) = state.rollout.as_mut() {
            r.window = Some(window);
        }
    }

    /// Moves the latencies recorded since the last tick into the window's samples (live
    /// steps of a plan with a latency gate). Re-arms each ring: a deployment replaced by a new
    /// version mid-step has a new one.
    fn gather_latencies(&self, state: &mut State) {
        let State { rollout, deployments, .. } = state;
        let Some(LatencyWindow { cursors, target, incumbent }) =
            rollout.as_mut().and_then(|r| r.window.as_mut()).and_then(|w| w.latency.as_mut())
        else {
            return;
        };
        for (name, is_target, cursor) in cursors.iter_mut() {
            let Some(rec) = deployments.get(name.as_str()) else { continue };
            let ring = rec.live.metrics().latencies(Role::live);
            ring.arm(true);
            let sample = if *is_target { &mut *target } else { &mut *incumbent };
            *cursor = ring.drain(*cursor, &mut |v| sample.push(v));
        }
    }

    /// The gate values of the current window so far.
    fn measure(&self, state: &State, d: &DurableRollout, w: &Window) -> GateValues {
        let mirror_step = matches!(d.current(), Step::Mirror(_));
        let role = if mirror_step { Role::mirror } else { Role::live };
        let Some(target) = state.deployments.get(&d.plan.to) else {
            return GateValues::default();
        };
        let now = target.live.metrics().reading(role).since(&w.target);
        let mut others = Reading::default();
        for (name, before) in &w.others {
            if let Some(rec) = state.deployments.get(name) {
                others.merge(&rec.live.metrics().reading(Role::live).since(before));
            }
        }
        let ms = |s: f64| (s * 1e6).round() / 1e3;
        let p99 = now.quantile(0.99).map(ms);
        let live_p99 =
            (!mirror_step && others.requests >= d.plan.min_requests).then(|| others.quantile(0.99).map(ms)).flatten();
        let gauges = mirror_step.then(|| target.shadow.report.gauges());
        // Mirror steps compare the copies with the live answers to the same requests: the
        // report was reset when the step set the mirror rule, so its pairs are the window's.
        let paired = mirror_step.then(|| target.shadow.report.paired());
        let (incumbent_requests, incumbent_errors) = match &paired {
            Some(p) => (p.pairs, p.live_errors),
            None => (others.requests, others.errors),
        };
        GateValues {
            requests: now.requests,
            errors: now.errors,
            error_rate: (now.requests > 0).then(|| now.errors as f64 / now.requests as f64),
            p99_ms: p99,
            live_p99_ms: live_p99,
            p99_ratio: match (p99, live_p99) {
                (Some(t), Some(l)) if l > 0.0 => Some(t / l),
                _ => None,
            },
            agreement: gauges.filter(|g| g.compared > 0).map(|g| g.agreement_ratio),
            compared_pairs: gauges.map(|g| g.compared),
            incumbent_requests,
            incumbent_errors,
            paired_target_errors: paired.map(|p| p.shadow_errors),
        }
    }

    /// Judges the current window: the absolute gates (`verdict`), then the evidence gates
    /// (`weigh`) of a plan that has them. A window judged inconclusive grows by one more step
    /// window, up to `max_extensions`; then `on_inconclusive` decides.
    fn judge(&self, state: &State, r: &RolloutRecord) -> Decision {
        let d = &r.durable;
        let Some(w) = &r.window else { return Decision::Hold };
        let elapsed = w.started.elapsed();
        if elapsed < d.plan.step_duration() * (w.extensions + 1) {
            return Decision::Hold;
        }
        let values = self.measure(state, d, w);
        let passed = match verdict(&d.plan, d.current(), elapsed, values.clone()) {
            Verdict::Hold => return Decision::Hold,
            Verdict::Fail { gate, value, limit, values } => {
                return Decision::Fail { gate, value, limit, values, evidence: Vec::new() }
            }
            Verdict::Pass(values) => values,
        };
        let look = d.step_looks + 1;
        let paired = matches!(d.current(), Step::Mirror(_))
            .then(|| state.deployments.get(&d.plan.to).map(|t| t.shadow.report.paired()))
            .flatten();
        let latency = match (&w.latency, &paired) {
            (Some(l), _) => Some(LatencySamples { target: l.target.values(), incumbent: l.incumbent.values() }),
            (None, Some(p)) => Some(LatencySamples { target: &p.shadow_latency, incumbent: &p.live_latency }),
            (None, None) => None,
        };
        match weigh(&d.plan, d.current(), look, &passed, latency) {
            None => Decision::Pass { values: passed, evidence: Vec::new(), inconclusive: false },
            Some(Weighed::Pass(evidence)) => Decision::Pass { values: passed, evidence, inconclusive: false },
            Some(Weighed::Fail { gate, value, limit, evidence }) => {
                Decision::Fail { gate, value: Some(value), limit: Some(limit), values: passed, evidence }
            }
            Some(Weighed::Inconclusive(evidence)) => {
                let e = d.plan.evidence.as_ref().expect("weighed with evidence");
                if d.step_looks < e.max_extensions {
                    Decision::Extend { values: passed, evidence }
                } else if e.on_inconclusive == crate::spec::OnInconclusive::Proceed {
                    Decision::Pass { values: passed, evidence, inconclusive: true }
                } else {
                    Decision::Fail { gate: "inconclusive", value: None, limit: None, values: passed, evidence }
                }
            }
        }
    }

    /// One tick of rollout `ticker`'s timer; false once that rollout no longer needs it.
    fn tick(&self, ticker: u64) -> bool {
        let mut state = self.lock();
        let Some(r) = state.rollout.as_ref().filter(|r| r.ticker == ticker) else { return false };
        match r.durable.status {
            RolloutStatus::Paused => return true,
            RolloutStatus::Running => {}
            _ => return false,
        }
        if r.window.is_none() {
            // Restored after a restart, or resumed: the window starts now.
            self.start_window(&mut state);
            return true;
        }
        self.gather_latencies(&mut state);
        let Some(r) = state.rollout.as_ref() else { return false };
        let decision = self.judge(&state, r);
        let mut durable = r.durable.clone();
        match decision {
            Decision::Hold => true,
            Decision::Extend { values, evidence } => {
                let look = evidence.first().map_or(1, |g| g.look);
                durable.event(format!(
                    "step {} inconclusive at look {look}: the window grows by {}; {}; {}",
                    durable.current(),
                    humantime::format_duration(durable.plan.step_duration()),
                    gates_text(&values),
                    evidence_text(&evidence)
                ));
                count_outcomes(&self.metrics, &self.name, &durable.plan.to, &evidence);
                durable.judged_window("extended", &evidence);
                durable.step_looks += 1;
                if let Some(w) = state.rollout.as_mut().and_then(|r| r.window.as_mut()) {
                    w.extensions += 1;
                }
                self.save_rollout(&mut state, durable);
                true
            }
            Decision::Pass { values, evidence, inconclusive } => {
                let step = durable.current();
                let how = if inconclusive { "proceeded, inconclusive (on_inconclusive: proceed)" } else { "passed" };
                let judged =
                    if evidence.is_empty() { String::new() } else { format!("; {}", evidence_text(&evidence)) };
                durable.event(format!("step {step} {how}: {}{judged}", gates_text(&values)));
                count_outcomes(&self.metrics, &self.name, &durable.plan.to, &evidence);
                durable.judged_window(if inconclusive { "proceeded_inconclusive" } else { "passed" }, &evidence);
                durable.passed.push(PassedStep {
                    step: step.to_string(),
                    gates: values,
                    at: now_text(),
                    evidence,
                    inconclusive,
                });
                if let Step::Live(_) = step {
                    durable.last_good = state.endpoint.as_ref().map(|e| e.spec.traffic.clone()).unwrap_or_default();
                }
                if durable.step + 1 >= durable.plan.steps.len() {
                    durable.status = RolloutStatus::Succeeded;
                    durable.event(format!("succeeded: {} has all live traffic", durable.plan.to));
                    self.save_rollout(&mut state, durable);
                    return false;
                }
                durable.step += 1;
                durable.step_looks = 0;
                let (live, mirror) = durable.split_of(durable.step);
                durable.event(step_started(&durable, &live, &mirror));
                let next = durable.clone();
                match self.move_traffic(&mut state, live, mirror, move |s| {
                    if let Some(r) = s.rollout.as_mut() {
                        r.durable = next;
                    }
                }) {
                    Ok(()) => {
                        self.start_window(&mut state);
                        true
                    }
                    Err(e) => {
                        durable.step -= 1;
                        let message = format!("the next step's traffic change was refused: {e}");
                        self.roll_back(&mut state, durable, "traffic_change", None, None, message);
                        false
                    }
                }
            }
            Decision::Fail { gate, value, limit, values, evidence } => {
                let mut message = if gate == "inconclusive" {
                    format!(
                        "step {} stayed inconclusive after {} extension(s) (on_inconclusive: rollback): not enough evidence to promote; {}",
                        durable.current(),
                        durable.plan.evidence.as_ref().map_or(0, |e| e.max_extensions),
                        gates_text(&values)
                    )
                } else {
                    format!(
                        "gate {gate} failed at step {}: {} (limit {}); {}",
                        durable.current(),
                        value.map_or("nothing measurable".to_string(), |v| format!("{v:.4}")),
                        limit.map_or("-".to_string(), |l| format!("{l}")),
                        gates_text(&values)
                    )
                };
                if !evidence.is_empty() {
                    message.push_str(&format!("; {}", evidence_text(&evidence)));
                }
                count_outcomes(&self.metrics, &self.name, &durable.plan.to, &evidence);
                durable.judged_window(
                    if gate == "inconclusive" { "rolled_back_inconclusive" } else { "failed" },
                    &evidence,
                );
                durable.pending_evidence = evidence;
                self.roll_back(&mut state, durable, gate, value, limit, message);
                false
            }
        }
    }

    /// Sends traffic back to the last good split at once (mirror rule cleared) and records why:
    /// in the rollout (`show`, events), the target's log, the process log and a metric.
    fn roll_back(
        &self,
        state: &mut State,
        mut durable: DurableRollout,
        gate: &str,
        value: Option<f64>,
        limit: Option<f64>,
        message: String,
    ) {
        let back = durable.last_good.clone();
        durable.status = RolloutStatus::RolledBack;
        let evidence = std::mem::take(&mut durable.pending_evidence);
        durable.rollback = Some(Rollback {
            step: durable.current().to_string(),
            gate: gate.to_string(),
            value,
            limit,
            message: message.clone(),
            traffic: back.clone(),
            at: now_text(),
            evidence,
        });
        durable.event(format!("rolled back to {}: {message}", split_text(&back)));
        let target = durable.plan.to.clone();
        let saved = durable.clone();
        let result = self.move_traffic(state, back.clone(), Traffic::new(), move |s| {
            if let Some(r) = s.rollout.as_mut() {
                r.durable = saved;
            }
        });
        if let Err(e) = result {
            // The last good split was valid when it served; a refusal now (a deployment gone)
            // leaves the traffic where it is, and says so.
            tracing::error!(to = %target, error = %e, "the rollback's traffic change was refused");
            durable.event(format!("the rollback's traffic change was refused ({e}); traffic stays as it was"));
            self.save_rollout(state, durable);
        }
        if let Some(rec) = state.deployments.get(&target) {
            rec.live.logs().push(format!("ROLLOUT rolled back to {}: {message}", split_text(&back)));
        }
        self.metrics.rollout_rolled_back(&self.name, &target, gate);
        tracing::warn!(target: "switchyard::rollout", to = %target, gate, "rollout rolled back: {message}");
    }

    /// Rolls the running or paused rollout back at once when its target is `name`, which failed
    /// to load (after a restart, its model folder gone): it must not resume onto it.
    pub(super) fn roll_back_if_target_failed(&self, state: &mut State, name: &str, error: &str) {
        let Some(r) = state.rollout.as_ref().filter(|r| r.durable.status.active() && r.durable.plan.to == name) else {
            return;
        };
        let durable = r.durable.clone();
        let message = format!("the target {name} failed to load: {error}");
        self.roll_back(state, durable, "target_failed", None, None, message);
    }

    /// Ends the running or paused rollout as aborted when `name`, one of the deployments it
    /// moves traffic from, failed to load (after a restart, its model folder gone). Left
    /// running, the failed source's share went to the target with no gate judged, and abort,
    /// traffic changes and the source's deletion were all refused. Traffic goes to the last
    /// good split without the deployments that cannot serve; when none can, it stays where the
    /// failed-load rule puts it (`drop_failed_traffic`, run next by the caller).
    pub(super) fn end_rollout_if_source_failed(&self, state: &mut State, name: &str, error: &str) {
        let Some(r) = state.rollout.as_ref().filter(|r| r.durable.status.active() && r.durable.plan.to != name) else {
            return;
        };
        let d = &r.durable;
        if ![&d.from, &d.last_good].iter().any(|t| t.get(name).is_some_and(|w| *w > 0)) {
            return;
        }
        let mut durable = d.clone();
        durable.status = RolloutStatus::Aborted;
        let why = format!("aborted: the source {name} failed to load ({error})");
        tracing::warn!(target: "switchyard::rollout", to = %durable.plan.to, "{why}");
        if let Some(rec) = state.deployments.get(&durable.plan.to) {
            rec.live.logs().push(format!("ROLLOUT {why}"));
        }
        match traffic::spread(&durable.last_good, |n| servable(state, n)) {
            Some(back) => {
                durable.event(format!("{why}; traffic goes to the last good split without it: {}", split_text(&back)));
                let saved = durable.clone();
                let result = self.move_traffic(state, back, Traffic::new(), move |s| {
                    if let Some(r) = s.rollout.as_mut() {
                        r.durable = saved;
                    }
                });
                if let Err(e) = result {
                    durable.event(format!("the abort's traffic change was refused ({e}); traffic stays as it was"));
                    self.save_rollout(state, durable);
                }
            }
            None => {
                durable.event(format!(
                    "{why}; no deployment of the last good split can serve, so traffic stays with the current split's deployments that loaded"
                ));
                self.save_rollout(state, durable);
            }
        }
    }

    /// The endpoint is being deleted: a running or paused rollout ends as aborted, with an
    /// event saying why (in `rollout show` and the process log), instead of vanishing.
    pub(super) fn end_rollout_with_endpoint(&self, state: &mut State) {
        if let Some(r) = state.rollout.as_mut().filter(|r| r.durable.status.active()) {
            r.durable.status = RolloutStatus::Aborted;
            r.durable.event(format!(
                "aborted: the endpoint was deleted (with its deployments) while the rollout to {} was at step {}",
                r.durable.plan.to,
                r.durable.current()
            ));
            tracing::warn!(target: "switchyard::rollout", to = %r.durable.plan.to, "rollout aborted: the endpoint was deleted");
        }
    }

    /// Saves the rollout's progress with no traffic change (a background change: a failed
    /// save is logged).
    fn save_rollout(&self, state: &mut State, durable: DurableRollout) {
        if let Some(r) = state.rollout.as_mut() {
            r.durable = durable;
        }
        self.commit_background(state);
    }

    fn next_ticker(&self) -> u64 {
        self.rollout_tickers.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Starts the timer task of the rollout now in the state (after a restart).
    pub(super) fn resume_restored_rollout(self: &Arc<Self>) {
        let ticker = {
            let mut state = self.lock();
            let ticker = self.next_ticker();
            let Some(r) = state.rollout.as_mut().filter(|r| r.durable.status.active()) else { return };
            r.ticker = ticker;
            r.window = None;
            if r.durable.status == RolloutStatus::Running {
                r.durable
                    .event(format!("resumed after a restart at step {}: its window starts again", r.durable.current()));
            }
            ticker
        };
        self.spawn_ticker(ticker);
    }

    fn spawn_ticker(self: &Arc<Self>, ticker: u64) {
        let period = {
            let state = self.lock();
            let Some(r) = state.rollout.as_ref() else { return };
            (r.durable.plan.step_duration() / 20).clamp(Duration::from_millis(10), Duration::from_secs(1))
        };
        let cp = Arc::clone(self);
        self.runtime.spawn(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                if !cp.tick(ticker) {
                    // Over: requests stop paying for latency samples (a newer rollout that
                    // outlived this one keeps what it armed).
                    let state = cp.lock();
                    if !state.rollout.as_ref().is_some_and(|r| r.durable.status.active()) {
                        disarm_latencies(&state);
                    }
                    return;
                }
            }
        });
    }

    /// Refuses a traffic or mirror change made around a running or paused rollout.
    pub(super) fn check_no_rollout(&self, state: &State, live: &Traffic, mirror: &Traffic) -> Result<(), ControlError> {
        let (Some(r), Some(ep)) = (state.rollout.as_ref(), state.endpoint.as_ref()) else { return Ok(()) };
        if r.durable.status.active() && (*live != ep.spec.traffic || *mirror != ep.spec.mirror_traffic) {
            return Err(ControlError::Conflict(format!(
                "a rollout to {:?} is {} and owns the traffic: abort the rollout first",
                r.durable.plan.to,
                status_word(r.durable.status)
            )));
        }
        Ok(())
    }

    /// The plan of the rollout now in the state, if one was started from the config folder
    /// (the reconciler starts a new one only when the file's plan differs).
    pub(super) fn config_rollout(&self) -> Option<RolloutPlan> {
        let state = self.lock();
        state.rollout.as_ref().filter(|r| r.durable.source == RolloutSource::ConfigDir).map(|r| r.durable.plan.clone())
    }

    /// Reads the endpoint's live request count into its rate meter (`serve` calls it every
    /// [`RATE_EVERY`](crate::telemetry::rate::RATE_EVERY)).
    pub(crate) fn sample_rate(&self) {
        let total: u64 = self.lock().deployments.values().map(|d| d.live.metrics().reading(Role::live).requests).sum();
        self.meter.lock().unwrap_or_else(|p| p.into_inner()).sample(Instant::now(), total);
    }

    /// Whether a rollout is running or paused.
    pub(super) fn rollout_active(&self) -> bool {
        self.lock().rollout.as_ref().is_some_and(|r| r.durable.status.active())
    }

    /// Refuses deleting a deployment a running or paused rollout moves traffic to or from.
    pub(super) fn check_rollout_keeps(&self, state: &State, name: &str) -> Result<(), ControlError> {
        let Some(r) = state.rollout.as_ref().filter(|r| r.durable.status.active()) else { return Ok(()) };
        let d = &r.durable;
        if d.plan.to == name
            || d.from.get(name).is_some_and(|w| *w > 0)
            || d.last_good.get(name).is_some_and(|w| *w > 0)
        {
            return Err(ControlError::Conflict(format!(
                "a rollout to {:?} is {} and may move traffic to deployment {name:?}: abort the rollout first",
                d.plan.to,
                status_word(d.status)
            )));
        }
        Ok(())
    }
}

/// Stops recording per-request latencies on every deployment of the endpoint.
fn disarm_latencies(state: &State) {
    for rec in state.deployments.values() {
        rec.live.metrics().latencies(Role::live).arm(false);
    }
}

/// Whether deployment `name` can carry live traffic now: it has a ready instance, or it
/// carries some already and has not failed (the rule of `check_can_serve`, a failed one out).
fn servable(state: &State, name: &str) -> bool {
    let Some(r) = state.deployments.get(name) else { return false };
    let has = state.endpoint.as_ref().and_then(|e| e.spec.traffic.get(name)).is_some_and(|w| *w > 0);
    r.live.pool().ready() > 0 || (has && r.live.state().get() != crate::deployment::ProvisioningState::Failed)
}

fn active(state: &State) -> Result<&RolloutRecord, ControlError> {
    match state.rollout.as_ref() {
        Some(r) if r.durable.status.active() => Ok(r),
        Some(r) => Err(ControlError::Conflict(format!(
            "the rollout to {:?} is over ({}): nothing to change",
            r.durable.plan.to,
            status_word(r.durable.status)
        ))),
        None => Err(ControlError::NotFound("no rollout has been started on this endpoint".into())),
    }
}

fn status_word(s: RolloutStatus) -> &'static str {
    match s {
        RolloutStatus::Running => "running",
        RolloutStatus::Paused => "paused",
        RolloutStatus::Succeeded => "succeeded",
        RolloutStatus::RolledBack => "rolled back",
        RolloutStatus::Aborted => "aborted",
    }
}

fn split_text(t: &Traffic) -> String {
    let parts: Vec<String> = t.iter().filter(|(_, w)| **w > 0).map(|(n, w)| format!("{n}={w}")).collect();
    if parts.is_empty() {
        "no traffic".into()
    } else {
        parts.join(" ")
    }
}

fn step_started(d: &DurableRollout, live: &Traffic, mirror: &Traffic) -> String {
    let mirror = if mirror.is_empty() { String::new() } else { format!(", mirror {}", split_text(mirror)) };
    format!(
        "step {}/{} ({}) started: traffic {}{mirror}",
        d.step + 1,
        d.plan.steps.len(),
        d.current(),
        split_text(live)
    )
}

/// Counts a window's evidence-gate judgements in the metrics.
fn count_outcomes(metrics: &crate::telemetry::Metrics, endpoint: &str, to: &str, evidence: &[GateEvidence]) {
    for g in evidence.iter().filter(|g| g.note.is_none()) {
        metrics.rollout_gate_outcome(endpoint, to, &g.gate, outcome_word(g.judgement.outcome));
    }
}

fn outcome_word(o: super::evidence::Outcome) -> &'static str {
    match o {
        super::evidence::Outcome::Pass => "pass",
        super::evidence::Outcome::Fail => "fail",
        super::evidence::Outcome::Inconclusive => "inconclusive",
    }
}

/// The evidence gates of a window in words: `error_increase pass (-0.0012 in [-0.0051, 0.0030], limit 0.005)`.
fn evidence_text(evidence: &[GateEvidence]) -> String {
    let one = |g: &GateEvidence| {
        let outcome = outcome_word(g.judgement.outcome);
        let interval = g.judgement.interval.map_or(String::new(), |(l, u)| format!(" in [{l:.4}, {u:.4}]"));
        let note = g.note.as_ref().map_or(String::new(), |n| format!(" — {n}"));
        let estimate =
            if g.judgement.estimate.is_finite() { format!("{:.4}", g.judgement.estimate) } else { "-".to_string() };
        format!("{} {outcome} ({estimate}{interval}, limit {}, α {:.4}){note}", g.gate, g.limit, g.judgement.alpha)
    };
    evidence.iter().map(one).collect::<Vec<_>>().join("; ")
}

fn gates_text(v: &GateValues) -> String {
    let f = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.4}"));
    format!(
        "requests {} errors {} error_rate {} p99_ms {} live_p99_ms {} p99_ratio {} agreement {}",
        v.requests,
        v.errors,
        f(v.error_rate),
        f(v.p99_ms),
        f(v.live_p99_ms),
        f(v.p99_ratio),
        f(v.agreement)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn plan(extra: Value) -> RolloutPlan {
        let mut doc = json!({"to": "green", "steps": "mirror:10,50,100", "step_duration": "60s",
                             "min_requests": 20, "max_error_rate": 0.01});
        for (k, v) in extra.as_object().unwrap() {
            doc[k] = v.clone();
        }
        RolloutPlan::from_value(&doc).unwrap()
    }

    fn values(requests: u64, errors: u64) -> GateValues {
        GateValues {
            requests,
            errors,
            error_rate: (requests > 0).then(|| errors as f64 / requests as f64),
            ..GateValues::default()
        }
    }

    const STEP: Duration = Duration::from_secs(60);

    fn failed_gate(v: Verdict) -> Option<(&'static str, Option<f64>, Option<f64>)> {
        match v {
            Verdict::Fail { gate, value, limit, .. } => Some((gate, value, limit)),
            _ => None,
        }
    }

    #[test]
    fn a_step_holds_until_its_duration_is_over_and_the_target_answered_enough() {
        let p = plan(json!({}));
        let bad = values(1000, 1000);
        assert_eq!(verdict(&p, Step::Live(50), STEP - Duration::from_millis(1), bad.clone()), Verdict::Hold);
        assert_eq!(verdict(&p, Step::Live(50), STEP * 10, values(19, 19)), Verdict::Hold, "19 of 20 requests");
        assert!(failed_gate(verdict(&p, Step::Live(50), STEP, bad)).is_some(), "judged at the duration exactly");
        assert_eq!(verdict(&p, Step::Live(50), STEP, values(20, 0)), Verdict::Pass(values(20, 0)));
    }

    #[test]
    fn the_error_rate_fails_a_step_only_above_its_limit() {
        let p = plan(json!({"max_error_rate": 0.1}));
        assert_eq!(verdict(&p, Step::Live(50), STEP, values(100, 10)), Verdict::Pass(values(100, 10)), "at the limit");
        assert_eq!(
            failed_gate(verdict(&p, Step::Live(50), STEP, values(100, 11))),
            Some(("error_rate", Some(0.11), Some(0.1)))
        );
    }

    #[test]
    fn p99_and_p99_ratio_fail_above_their_limits_and_an_unmeasured_one_does_not_fail() {
        let p = plan(json!({"max_p99_ms": 100, "max_p99_ratio": 1.5}));
        let with = |p99: Option<f64>, ratio: Option<f64>| GateValues { p99_ms: p99, p99_ratio: ratio, ..values(50, 0) };
        assert!(matches!(verdict(&p, Step::Live(50), STEP, with(Some(100.0), Some(1.5))), Verdict::Pass(_)));
        assert_eq!(
            failed_gate(verdict(&p, Step::Live(50), STEP, with(Some(100.5), None))),
            Some(("p99_ms", Some(100.5), Some(100.0)))
        );
        assert_eq!(
            failed_gate(verdict(&p, Step::Live(50), STEP, with(Some(10.0), Some(1.6)))),
            Some(("p99_ratio", Some(1.6), Some(1.5)))
        );
        // No live traffic to compare with (no ratio), no p99: nothing to judge them on.
        assert!(matches!(verdict(&p, Step::Live(50), STEP, with(None, None)), Verdict::Pass(_)));
        // Without the limits in the plan, any value passes.
        assert!(matches!(
            verdict(&plan(json!({})), Step::Live(50), STEP, with(Some(1e9), Some(1e9))),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn gates_are_judged_in_order_and_the_first_broken_one_is_named() {
        let p = plan(json!({"max_p99_ms": 100, "max_p99_ratio": 1.5}));
        let all_bad = GateValues { p99_ms: Some(500.0), p99_ratio: Some(5.0), ..values(100, 50) };
        assert_eq!(failed_gate(verdict(&p, Step::Live(50), STEP, all_bad.clone())).unwrap().0, "error_rate");
        let v = GateValues { errors: 0, error_rate: Some(0.0), ..all_bad };
        assert_eq!(failed_gate(verdict(&p, Step::Live(50), STEP, v.clone())).unwrap().0, "p99_ms");
        let v = GateValues { p99_ms: Some(1.0), ..v };
        assert_eq!(failed_gate(verdict(&p, Step::Live(50), STEP, v)).unwrap().0, "p99_ratio");
    }

    #[test]
    fn agreement_gates_mirror_steps_only_and_must_be_measured_there() {
        let p = plan(json!({"min_agreement": 0.99}));
        let agreeing = |a: Option<f64>| GateValues { agreement: a, ..values(50, 0) };
        assert!(matches!(verdict(&p, Step::Mirror(10), STEP, agreeing(Some(0.99))), Verdict::Pass(_)));
        assert_eq!(
            failed_gate(verdict(&p, Step::Mirror(10), STEP, agreeing(Some(0.9)))),
            Some(("agreement", Some(0.9), Some(0.99)))
        );
        assert_eq!(
            failed_gate(verdict(&p, Step::Mirror(10), STEP, agreeing(None))),
            Some(("agreement", None, Some(0.99))),
            "no pair compared"
        );
        assert!(
            matches!(verdict(&p, Step::Live(50), STEP, agreeing(Some(0.0))), Verdict::Pass(_)),
            "a live step ignores it"
        );
    }
}
