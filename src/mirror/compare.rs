//! Comparing a shadow's answer with the live answer to the same request.
//!
//! Both bodies are parsed as JSON and walked together: strings, booleans, null and integers
//! must be equal; floats may differ within `atol + rtol × |live|` (numpy's `isclose`, with the
//! live answer as the reference); arrays and objects must have the same length and keys, and
//! a difference there is a *shape mismatch*, counted apart from value disagreements. Bodies
//! that are not JSON are compared byte for byte.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How far two floats may be apart and still agree.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, against the live value.
    pub rtol: f64,
}

impl Default for Tolerance {
    fn default() -> Self {
        Self { atol: 1e-6, rtol: 1e-6 }
    }
}

/// The outcome of comparing one pair of bodies.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PairDiff {
    /// Every value agrees within tolerance and the shapes match.
    pub agree: bool,
    /// Lengths, keys or kinds (scalar vs container) differ somewhere.
    pub shape_mismatch: bool,
    /// Largest absolute difference between paired numbers.
    pub max_abs_diff: f64,
    /// Sum of absolute differences between paired numbers (for the mean).
    pub sum_abs_diff: f64,
    /// How many numbers were paired.
    pub numbers: u64,
    /// Where the first disagreement is, as a JSON path (`$[0][1]`, `$.outputs.y`).
    pub first_difference: Option<String>,
}

/// Compares two response bodies.
pub(crate) fn compare_bodies(live: &[u8], shadow: &[u8], tol: Tolerance) -> PairDiff {
    match (serde_json::from_slice::<Value>(live), serde_json::from_slice::<Value>(shadow)) {
        (Ok(l), Ok(s)) => {
            let mut diff = PairDiff { agree: true, ..PairDiff::default() };
            walk(&l, &s, "$", tol, &mut diff);
            diff
        }
        _ if live == shadow => PairDiff { agree: true, ..PairDiff::default() },
        _ => PairDiff { agree: false, first_difference: Some("$ (bodies differ)".into()), ..PairDiff::default() },
    }
}

fn disagree(diff: &mut PairDiff, path: &str, shape: bool) {
    diff.agree = false;
    diff.shape_mismatch |= shape;
    if diff.first_difference.is_none() {
        diff.first_difference = Some(path.to_string());
    }
}

fn walk(live: &Value, shadow: &Value, path: &str, tol: Tolerance, diff: &mut PairDiff) {
    match (live, shadow) {
        (Value::Number(a), Value::Number(b)) => {
            let integers = !a.is_f64() && !b.is_f64();
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            let d = (x - y).abs();
            diff.numbers += 1;
            diff.sum_abs_diff += d;
            diff.max_abs_diff = diff.max_abs_diff.max(d);
            let same = if integers { a == b } else { d <= tol.atol + tol.rtol * x.abs() };
            if !same {
                disagree(diff, path, false);
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                disagree(diff, path, true);
                return;
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(x, y, &format!("{path}[{i}]"), tol, diff);
            }
        }
        (Value::Object(a), Value::Object(b)) => {
            if a.len() != b.len() || a.keys().any(|k| !b.contains_key(k)) {
                disagree(diff, path, true);
                return;
            }
            for (k, x) in a {
                walk(x, &b[k], &format!("{path}.{k}"), tol, diff);
            }
        }
        (Value::Array(_) | Value::Object(_), _) | (_, Value::Array(_) | Value::Object(_)) => disagree(diff, path, true),
        (a, b) => {
            if a != b {
                disagree(diff, path, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> PairDiff {
        compare_bodies(a.as_bytes(), b.as_bytes(), Tolerance { atol: 1e-6, rtol: 1e-6 })
    }

    #[test]
    fn identical_and_close_floats_agree() {
        assert!(cmp("[1.5, 2.5]", "[1.5, 2.5]").agree);
        let d = cmp("[1000.0]", "[1000.0005]");
        assert!(d.agree, "within rtol: {d:?}");
        assert!((d.max_abs_diff - 0.0005).abs() < 1e-9);
    }

    #[test]
    fn differences_are_found_and_located() {
        let d = cmp("[[1.0, 2.0]]", "[[1.0, 2.1]]");
        assert!(!d.agree && !d.shape_mismatch);
        assert_eq!(d.first_difference.as_deref(), Some("$[0][1]"));
        assert_eq!(d.numbers, 2);
        assert!((d.max_abs_diff - 0.1).abs() < 1e-9);
        assert!(!cmp("[1, 2]", "[1, 3]").agree, "integers are exact");
        assert!(!cmp(r#"{"a": "x"}"#, r#"{"a": "y"}"#).agree);
    }

    #[test]
    fn shape_mismatches_are_counted_apart() {
        assert!(cmp("[1, 2]", "[1, 2, 3]").shape_mismatch);
        assert!(cmp(r#"{"a": 1}"#, r#"{"b": 1}"#).shape_mismatch);
        assert!(cmp("[1]", "1").shape_mismatch);
        assert!(!cmp("\"a\"", "1").shape_mismatch);
    }

    #[test]
    fn non_json_bodies_compare_bytes() {
        assert!(cmp("plain", "plain").agree);
        assert!(!cmp("plain", "other").agree);
    }
}
