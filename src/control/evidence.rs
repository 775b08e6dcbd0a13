//! The statistics of evidence-based rollout gates (issue 27): each gate compares the target
//! with the incumbent measured over the same window and answers pass, fail or inconclusive,
//! with the interval or statistic it decided on. Pure functions over counts and samples; the
//! rollout (`rollout.rs`) gathers the numbers and acts on the outcome.
//!
//! The rule of every gate: *fail* only when the data show, at the look's level, that the
//! target is worse than the incumbent by more than the margin; *pass* only when they show it
//! is not; otherwise *inconclusive* (more data, or the plan's `on_inconclusive`). A step may
//! look up to `1 + max_extensions` times at its growing window; each look gets an equal share
//! of `1 - confidence` (Bonferroni), so an identical target is rolled back at most at the
//! promised rate however many looks it takes. Bonferroni is conservative for looks at
//! cumulative data (they are correlated), which costs some power and never the guarantee.
//!
//! Distributions come from `statrs` (no hand-written special functions).

use statrs::distribution::{ContinuousCDF, Normal};

/// A gate's answer for one look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Outcome {
    Pass,
    Fail,
    Inconclusive,
}

/// What a gate decided on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub(crate) struct Judgement {
    pub outcome: Outcome,
    /// The point estimate (an error-rate difference, a probability of being slower, an
    /// agreement ratio); null when there was nothing to estimate from.
    #[serde(deserialize_with = "nan_when_null")]
    #[schema(nullable)]
    pub estimate: f64,
    /// The interval at the look's level (two-sided `1 - 2α`: each bound one-sided `1 - α`),
    /// when the gate has one.
    pub interval: Option<(f64, f64)>,
    /// The test statistic (a z score), when the gate has one.
    pub statistic: Option<f64>,
    /// One-sided p-value of "worse than the margin", when the gate has one.
    pub p_value: Option<f64>,
    /// The significance level this look was judged at.
    pub alpha: f64,
}

/// Reads back what serde_json wrote for a NaN estimate (null), so a saved rollout whose gate
/// had nothing to estimate from restores.
fn nan_when_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl Judgement {
    /// Nothing to judge on (an empty side): inconclusive, no estimate.
    fn undecided(alpha: f64) -> Self {
        Self {
            outcome: Outcome::Inconclusive,
            estimate: f64::NAN,
            interval: None,
            statistic: None,
            p_value: None,
            alpha,
        }
    }
}

fn standard_normal() -> Normal {
    Normal::new(0.0, 1.0).expect("a standard normal")
}

/// The quantile of the standard normal at `p` (0 < p < 1).
fn z(p: f64) -> f64 {
    standard_normal().inverse_cdf(p)
}

/// The level of one look: `1 - confidence` split evenly over the step's possible looks.
pub(crate) fn alpha_per_look(confidence: f64, looks: u32) -> f64 {
    (1.0 - confidence) / f64::from(looks.max(1))
}

/// Wilson's score interval for `x` of `n`, two-sided at level `1 - 2α`.
pub(crate) fn wilson(x: u64, n: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let (n, p) = (n as f64, x as f64 / n as f64);
    let k = z(1.0 - alpha);
    let k2 = k * k;
    let centre = (p + k2 / (2.0 * n)) / (1.0 + k2 / n);
    let half = k / (1.0 + k2 / n) * (p * (1.0 - p) / n + k2 / (4.0 * n * n)).sqrt();
    // At 0 (or all) the bound is exact; the formula leaves rounding noise there.
    let lower = if x == 0 { 0.0 } else { (centre - half).max(0.0) };
    let upper = if x as f64 == n { 1.0 } else { (centre + half).min(1.0) };
    (lower, upper)
}

/// Errors: the target's error rate minus the incumbent's, judged against `margin` (an absolute
/// increase, e.g. 0.005). Newcombe's hybrid score interval (his method 10, built from the two
/// Wilson intervals): it keeps its level near rates of 0, where a Wald interval does not.
/// Fail when the lower bound exceeds the margin; pass when the upper bound does not.
pub(crate) fn error_increase(target: (u64, u64), incumbent: (u64, u64), margin: f64, alpha: f64) -> Judgement {
    let ((xt, nt), (xi, ni)) = (target, incumbent);
    if nt == 0 || ni == 0 {
        return Judgement::undecided(alpha);
    }
    let (pt, pi) = (xt as f64 / nt as f64, xi as f64 / ni as f64);
    let (lt, ut) = wilson(xt, nt, alpha);
    let (li, ui) = wilson(xi, ni, alpha);
    let d = pt - pi;
    let lower = d - ((pt - lt).powi(2) + (ui - pi).powi(2)).sqrt();
    let upper = d + ((ut - pt).powi(2) + (pi - li).powi(2)).sqrt();
    // The p-value of "worse by more than the margin" from the score statistic's normal
    // approximation, for the record (the decision is the interval's).
    let se = ((pt * (1.0 - pt)) / nt as f64 + (pi * (1.0 - pi)) / ni as f64).sqrt();
    let statistic = if se > 0.0 { Some((d - margin) / se) } else { None };
    let outcome = if lower > margin {
        Outcome::Fail
    } else if upper <= margin {
        Outcome::Pass
    } else {
        Outcome::Inconclusive
    };
    Judgement {
        outcome,
        estimate: d,
        interval: Some((lower, upper)),
        statistic,
        p_value: statistic.map(|s| 1.0 - standard_normal().cdf(s)),
        alpha,
    }
}

/// Latency: is the target slower than `margin` × the incumbent (e.g. 1.2)? A Mann-Whitney rank
/// test on the logarithms of per-request latencies, the target's shifted down by `ln(margin)`:
/// it compares whole distributions (the median and the tail move the ranks), makes no
/// assumption of normality, and a ratio margin becomes a shift on the log scale. Fail when the
/// shifted target is significantly slower; pass when it is significantly faster (so the target
/// is within the margin); the estimate is P(shifted target > incumbent).
pub(crate) fn latency_increase(target: &[f64], incumbent: &[f64], margin: f64, alpha: f64) -> Judgement {
    let shift = margin.ln();
    let xs: Vec<f64> = target.iter().filter(|v| **v > 0.0).map(|v| v.ln() - shift).collect();
    let ys: Vec<f64> = incumbent.iter().filter(|v| **v > 0.0).map(|v| v.ln()).collect();
    let Some((u, var)) = mann_whitney(&xs, &ys) else {
        return Judgement::undecided(alpha);
    };
    let (n1, n2) = (xs.len() as f64, ys.len() as f64);
    let mean = n1 * n2 / 2.0;
    // Continuity correction toward the mean.
    let diff = u - mean;
    let corrected = if diff.abs() <= 0.5 { 0.0 } else { diff - 0.5 * diff.signum() };
    let statistic = if var > 0.0 { corrected / var.sqrt() } else { 0.0 };
    let k = z(1.0 - alpha);
    let outcome = if statistic > k {
        Outcome::Fail
    } else if statistic < -k {
        Outcome::Pass
    } else {
        Outcome::Inconclusive
    };
    Judgement {
        outcome,
        estimate: u / (n1 * n2),
        interval: None,
        statistic: Some(statistic),
        p_value: Some(1.0 - standard_normal().cdf(statistic)),
        alpha,
    }
}

/// The Mann-Whitney U of `xs` over `ys` (pairs where x > y, ties counting a half) and its
/// variance under the null with the tie correction; `None` when either side is empty.
fn mann_whitney(xs: &[f64], ys: &[f64]) -> Option<(f64, f64)> {
    if xs.is_empty() || ys.is_empty() {
        return None;
    }
    let mut all: Vec<(f64, bool)> = xs.iter().map(|v| (*v, true)).chain(ys.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut rank_sum_x, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their average.
        let average = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        rank_sum_x += average * all[i..=j].iter().filter(|e| e.1).count() as f64;
        i = j + 1;
    }
    let (n1, n2, nn) = (xs.len() as f64, ys.len() as f64, n as f64);
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let var = n1 * n2 / 12.0 * ((nn + 1.0) - ties / (nn * (nn - 1.0)).max(1.0));
    Some((u, var))
}

/// Agreement (mirror steps): Wilson's interval on agreed of compared pairs against
/// `min_agreement`: pass when its lower bound reaches it, fail when its upper bound does not.
pub(crate) fn agreement(agreed: u64, compared: u64, min_agreement: f64, alpha: f64) -> Judgement {
    let (lower, upper) = wilson(agreed, compared, alpha);
    let outcome = if compared == 0 {
        Outcome::Inconclusive
    } else if lower >= min_agreement {
        Outcome::Pass
    } else if upper < min_agreement {
        Outcome::Fail
    } else {
        Outcome::Inconclusive
    };
    Judgement {
        outcome,
        estimate: if compared == 0 { f64::NAN } else { agreed as f64 / compared as f64 },
        interval: Some((lower, upper)),
        statistic: None,
        p_value: None,
        alpha,
    }
}

/// Requests per arm an error gate needs to decide, with probability `power`, between a target
/// whose true error rate is `target` and an incumbent at `incumbent`, against `margin` at the
/// look's `alpha`: the distance from the truth to the margin must span `z(1-α) + z(power)`
/// standard errors. `target == incumbent` is what passing an identical twin needs; a target
/// past the margin, what catching it needs. Rates are taken as at least half the margin (a
/// rate of 0 measured in a short window is not evidence of a rate of 0).
pub(crate) fn requests_for_errors(incumbent: f64, target: f64, margin: f64, alpha: f64, power: f64) -> u64 {
    let floor = |p: f64| p.max(margin / 2.0).min(0.5);
    let (pi, pt) = (floor(incumbent), floor(target));
    let distance = (target - incumbent - margin).abs().max(1e-9);
    let k = z(1.0 - alpha) + z(power);
    (k * k * (pi * (1.0 - pi) + pt * (1.0 - pt)) / (distance * distance)).ceil() as u64
}

/// Requests per arm the latency gate needs to decide, with probability `power`, on a target
/// whose latencies are truly `ratio` × the incumbent's (1.0: an identical target, which must
/// pass; above `margin`: a slower one, which must be caught). Noether's formula for the rank
/// test: on the log scale the margin is a shift of `ln(margin)` against a spread `sigma` (the
/// standard deviation of log latency).
pub(crate) fn requests_for_latency(sigma: f64, margin: f64, ratio: f64, alpha: f64, power: f64) -> u64 {
    let sigma = sigma.max(1e-3);
    // P(shifted target > incumbent) for log-normal latencies with the same spread.
    let p = standard_normal().cdf((ratio.ln() - margin.ln()) / (sigma * std::f64::consts::SQRT_2));
    let k = z(1.0 - alpha) + z(power);
    // Equal arms: N = k² / (12 c(1-c) (p - 1/2)²) with c = 1/2, per arm half of it.
    (k * k / (6.0 * (p - 0.5).powi(2).max(1e-12))).ceil() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Standard normal draws (Box-Muller) from a seeded generator.
    fn normal(rng: &mut fastrand::Rng) -> f64 {
        let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn errors(rng: &mut fastrand::Rng, n: u64, rate: f64) -> u64 {
        (0..n).filter(|_| rng.f64() < rate).count() as u64
    }

    /// A step of `looks` looks at a window growing by `per_look` requests per arm: the first
    /// decisive look decides; inconclusive at the last look counts as not rolled back here
    /// (`on_inconclusive` decides it in the rollout).
    fn step_errors(rng: &mut fastrand::Rng, rates: (f64, f64), per_look: u64, looks: u32, margin: f64) -> Outcome {
        let alpha = alpha_per_look(0.95, looks);
        let (mut t, mut i) = ((0, 0), (0, 0));
        for _ in 0..looks {
            t = (t.0 + errors(rng, per_look, rates.0), t.1 + per_look);
            i = (i.0 + errors(rng, per_look, rates.1), i.1 + per_look);
            match error_increase(t, i, margin, alpha).outcome {
                Outcome::Inconclusive => {}
                decided => return decided,
            }
        }
        Outcome::Inconclusive
    }

    /// 10,000 identical targets over steps of four looks: rolled back at most at the promised
    /// 5%, plus three standard errors of the simulation.
    #[test]
    fn an_identical_target_is_rolled_back_at_most_at_the_promised_rate() {
        let mut rng = fastrand::Rng::with_seed(26);
        let windows = 10_000;
        let failed =
            (0..windows).filter(|_| step_errors(&mut rng, (0.01, 0.01), 1_000, 4, 0.005) == Outcome::Fail).count();
        let rate = failed as f64 / windows as f64;
        let bound = 0.05 + 3.0 * (0.05f64 * 0.95 / windows as f64).sqrt();
        assert!(rate <= bound, "false rollback rate {rate} > {bound}");
    }

    /// The share of `windows` one-look windows of `n` requests per side, errors at `rates`
    /// (target, incumbent), whose error gate answers `wanted`.
    fn one_look_rate(seed: u64, n: u64, rates: (f64, f64), wanted: Outcome) -> f64 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let alpha = alpha_per_look(0.95, 1);
        let windows = 2_000;
        let hits = (0..windows)
            .filter(|_| {
                let t = (errors(&mut rng, n, rates.0), n);
                let i = (errors(&mut rng, n, rates.1), n);
                error_increase(t, i, 0.005, alpha).outcome == wanted
            })
            .count();
        hits as f64 / windows as f64
    }

    /// 80% less three standard errors of a 2,000-window simulation.
    fn promised_power() -> f64 {
        0.8 - 3.0 * (0.8f64 * 0.2 / 2_000.0).sqrt()
    }

    /// An identical target passes, with the requests the plan names, at least as often as the
    /// plan promises.
    #[test]
    fn an_identical_target_passes_with_the_requests_the_plan_names() {
        let n = requests_for_errors(0.01, 0.01, 0.005, alpha_per_look(0.95, 1), 0.8);
        let rate = one_look_rate(29, n, (0.01, 0.01), Outcome::Pass);
        assert!(rate >= promised_power(), "passed {rate} with {n} requests");
    }

    /// A planted +2% error rate is caught at least as often as the plan promises.
    #[test]
    fn a_planted_error_increase_is_caught_with_the_promised_power() {
        // The requests the plan names for catching +2% against the 0.5% margin, at 80% power.
        let n = requests_for_errors(0.01, 0.03, 0.005, alpha_per_look(0.95, 1), 0.8);
        let rate = one_look_rate(27, n, (0.03, 0.01), Outcome::Fail);
        assert!(rate >= promised_power(), "caught {rate} with {n} requests");
    }

    fn latencies(rng: &mut fastrand::Rng, n: usize, median_ms: f64, sigma: f64) -> Vec<f64> {
        (0..n).map(|_| median_ms * (sigma * normal(rng)).exp()).collect()
    }

    #[test]
    fn latency_gate_passes_twins_and_catches_a_slower_target() {
        let mut rng = fastrand::Rng::with_seed(28);
        let alpha = alpha_per_look(0.95, 1);
        let windows = 2_000;
        let mut false_rollbacks = 0;
        let mut passed = 0;
        let n = requests_for_latency(0.3, 1.2, 1.0, alpha, 0.8) as usize;
        for _ in 0..windows {
            let j = latency_increase(&latencies(&mut rng, n, 2.0, 0.3), &latencies(&mut rng, n, 2.0, 0.3), 1.2, alpha);
            false_rollbacks += usize::from(j.outcome == Outcome::Fail);
            passed += usize::from(j.outcome == Outcome::Pass);
        }
        let (fail_rate, pass_rate) = (false_rollbacks as f64 / windows as f64, passed as f64 / windows as f64);
        assert!(fail_rate <= 0.05, "twins failed {fail_rate}");
        assert!(pass_rate >= 0.8 - 0.03, "twins passed only {pass_rate} with the {n} requests the plan names");
        // +60% against a margin of 1.2: caught.
        let caught = (0..200)
            .filter(|_| {
                let t = latencies(&mut rng, 500, 3.2, 0.3);
                latency_increase(&t, &latencies(&mut rng, 500, 2.0, 0.3), 1.2, alpha).outcome == Outcome::Fail
            })
            .count();
        assert!(caught >= 190, "caught {caught} of 200");
    }

    /// A planted +30% latency against a 1.1 margin is caught at least as often as the plan
    /// promises, with the requests it names for that.
    #[test]
    fn a_planted_latency_increase_is_caught_with_the_promised_power() {
        let mut rng = fastrand::Rng::with_seed(30);
        let alpha = alpha_per_look(0.95, 1);
        let n = requests_for_latency(0.3, 1.1, 1.3, alpha, 0.8) as usize;
        let windows = 2_000;
        let caught = (0..windows)
            .filter(|_| {
                let t = latencies(&mut rng, n, 2.6, 0.3);
                latency_increase(&t, &latencies(&mut rng, n, 2.0, 0.3), 1.1, alpha).outcome == Outcome::Fail
            })
            .count();
        let rate = caught as f64 / windows as f64;
        assert!(rate >= promised_power(), "caught {rate} with {n} requests");
        assert!(n < 200, "a clear regression needs few requests: {n}");
    }

    #[test]
    fn intervals_and_edges() {
        let (l, u) = wilson(0, 20, 0.025);
        assert!(l == 0.0 && (0.15..0.2).contains(&u), "0 of 20: ({l}, {u})");
        assert_eq!(error_increase((0, 0), (1, 10), 0.005, 0.05).outcome, Outcome::Inconclusive);
        // One error in 20 against none in 20: nothing can be told at these counts.
        assert_eq!(error_increase((1, 20), (0, 20), 0.005, 0.05).outcome, Outcome::Inconclusive);
        let a = agreement(9_990, 10_000, 0.99, 0.05);
        assert_eq!(a.outcome, Outcome::Pass, "{a:?}");
        assert_eq!(agreement(900, 1_000, 0.99, 0.05).outcome, Outcome::Fail);
        assert_eq!(agreement(0, 0, 0.99, 0.05).outcome, Outcome::Inconclusive);
        // Ties everywhere (bucketed latencies): no panic, no decision from nothing.
        let same = vec![1.0; 50];
        assert_eq!(latency_increase(&same, &same, 1.0, 0.05).outcome, Outcome::Inconclusive);
        assert!((alpha_per_look(0.95, 4) - 0.0125).abs() < 1e-12);
    }
}
