//! Printing results as the Azure CLI does: `--query` (JMESPath) then `-o json|tsv|yaml|none`.

use serde_json::Value;

use super::answers::{ComparisonAnswer, LatencyAnswer, RolloutAnswer, ShareAnswer};
use super::{GlobalArgs, OutputFormat};

/// Applies `--query` and prints in the chosen format.
pub(super) fn print(value: &Value, global: &GlobalArgs) -> Result<(), String> {
    let value = match &global.query {
        Some(q) => query(value, q)?,
        None => value.clone(),
    };
    match global.output.unwrap_or(OutputFormat::Json) {
        OutputFormat::None => {}
        OutputFormat::Json | OutputFormat::Jsonc => {
            println!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
        }
        OutputFormat::Yaml | OutputFormat::Yamlc => {
            print!("{}", serde_norway::to_string(&value).map_err(|e| e.to_string())?);
        }
        OutputFormat::Table => print!("{}", table(&value)),
        OutputFormat::Tsv => {
            for line in tsv_lines(&value) {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// The Azure CLI's table: one row per object (one for a single object), a column per scalar
/// field, headers from the field names; nested values are left out, as `az -o table` does.
pub(super) fn table(value: &Value) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    };
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        match row {
            Value::Object(m) => {
                for (k, v) in m {
                    if !v.is_object() && !v.is_array() && !columns.contains(k) {
                        columns.push(k.clone());
                    }
                }
            }
            _ => {
                if !columns.iter().any(|c| c == "Result") {
                    columns.push("Result".into());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| match row {
                    Value::Object(m) => m.get(c).map(scalar).unwrap_or_default(),
                    other if c == "Result" => scalar(other),
                    _ => String::new(),
                })
                .collect()
        })
        .collect();
    let headers: Vec<String> = columns.iter().map(|c| header_name(c)).collect();
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| cells.iter().map(|r| r[i].chars().count()).chain([headers[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line = |parts: Vec<String>| {
        parts.iter().zip(&widths).map(|(p, w)| format!("{p:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
    };
    let mut out = String::new();
    if columns.is_empty() {
        return out;
    }
    out.push_str(&line(headers.clone()));
    out.push('\n');
    out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
    out.push('\n');
    for row in cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// `provisioning_state` → `ProvisioningState`, as `az -o table` titles its columns.
fn header_name(field: &str) -> String {
    field
        .split(['_', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect()
}

/// Evaluates a JMESPath expression.
pub(super) fn query(value: &Value, expression: &str) -> Result<Value, String> {
    let expr = jmespath::compile(expression).map_err(|e| format!("invalid --query {expression:?}: {e}"))?;
    let found = expr.search(value.clone()).map_err(|e| format!("--query {expression:?} failed: {e}"))?;
    serde_json::to_value(&*found).map_err(|e| e.to_string())
}

/// The Azure CLI's tsv: scalars bare, an object's values on one line separated by tabs, one
/// line per element of a list.
pub(super) fn tsv_lines(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(tsv_row).collect(),
        other => vec![tsv_row(other)],
    }
}

fn tsv_row(value: &Value) -> String {
    match value {
        Value::Object(m) => {
            m.values().filter(|v| !v.is_object() && !v.is_array()).map(scalar).collect::<Vec<_>>().join("\t")
        }
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join("\t"),
        other => scalar(other),
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => {
            if *b {
                "True".into()
            } else {
                "False".into()
            }
        }
        other => other.to_string(),
    }
}

/// `--set a.b=c` pairs as a JSON merge document: values parse as JSON where they can
/// (`2` is a number, `true` a boolean), otherwise they are strings.
pub(super) fn set_document(pairs: &[String]) -> Result<Value, String> {
    let mut doc = Value::Object(Default::default());
    for pair in pairs {
        let (path, raw) = pair
            .split_once('=')
            .ok_or_else(|| format!("--set expects KEY=VALUE (e.g. instance_count=2), got {pair:?}"))?;
        let keys: Vec<&str> = path.split('.').collect();
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err(format!("--set key {path:?} has an empty part"));
        }
        let value = serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_string()));
        let mut node = &mut doc;
        for (i, key) in keys.iter().enumerate() {
            let map = node
                .as_object_mut()
                .ok_or_else(|| format!("--set {path:?}: {key} is inside a value that is not a mapping"))?;
            if i + 1 == keys.len() {
                map.insert(key.to_string(), value.clone());
                break;
            }
            node = map.entry(key.to_string()).or_insert_with(|| Value::Object(Default::default()));
        }
    }
    Ok(doc)
}

/// A number as the JSON answer wrote it (`2.0`, `1e-6`), as the table showed it before it read
/// typed answers.
fn json_number(x: f64) -> String {
    Value::from(x).to_string()
}

/// One quantile of a latency summary.
type Quantile = fn(&LatencyAnswer) -> f64;

/// The comparison report as a table for people.
pub(super) fn comparison_table(r: &ComparisonAnswer) -> String {
    let ms = |side: &Option<LatencyAnswer>, q: Quantile| {
        side.as_ref().map_or("-".to_string(), |l| format!("{:.3} ms", q(l)))
    };
    let ratio = r.agreement_ratio.map_or("-".to_string(), |x| format!("{:.2}%", x * 100.0));
    let mut rows = vec![
        ("shadow deployment", r.deployment.clone()),
        ("live deployment(s)", r.live_deployments.join(", ")),
        ("mirror percent", r.mirror_percent.to_string()),
        ("since", r.since.clone()),
        ("tolerance (atol, rtol)", format!("{}, {}", json_number(r.tolerance.atol), json_number(r.tolerance.rtol))),
        ("pairs", r.pairs.to_string()),
        ("compared (both 200)", r.compared.to_string()),
        ("agreement", ratio),
        ("value disagreements", r.value_disagreements.to_string()),
        ("shape mismatches", r.shape_mismatches.to_string()),
        ("max |diff|", r.max_abs_diff.map_or("-".to_string(), json_number)),
        ("mean |diff|", r.mean_abs_diff.map_or("-".to_string(), json_number)),
        ("shadow errors / live errors", format!("{} / {}", r.shadow_errors, r.live_errors)),
        ("unpaired (client gone)", r.unpaired.to_string()),
    ];
    rows.extend(r.mirror.as_ref().map(share_rows).unwrap_or_default());
    let quantiles: [(&str, Quantile); 3] = [
        ("latency p50 live / shadow", |l| l.p50),
        ("latency p90 live / shadow", |l| l.p90),
        ("latency p99 live / shadow", |l| l.p99),
    ];
    for (label, q) in quantiles {
        rows.push((label, format!("{} / {}", ms(&r.live_latency_ms, q), ms(&r.shadow_latency_ms, q))));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<width$}  {v}\n"));
    }
    if !r.disagreement_samples.is_empty() {
        out.push_str("\nrecent disagreements:\n");
        for s in &r.disagreement_samples {
            out.push_str(&format!(
                "  {}  {}\n    live:   {}\n    shadow: {}\n",
                s.request_id, s.reason, s.live_body, s.shadow_body
            ));
        }
    }
    out
}

/// A rollout as a table for people: where it stands, why it rolled back, what each step
/// needed, and a row per judged window and gate, the failing gate marked `<-`.
pub(super) fn rollout_table(r: &RolloutAnswer) -> String {
    let mut out = format!(
        "rollout to {}: {} (step {} of {}: {}), started {}\n",
        r.to,
        r.status,
        r.step.index + 1,
        r.step.of,
        r.step.step,
        r.started_at
    );
    if let Some(b) = &r.rollback {
        out.push_str(&format!("rolled back at step {} on {}: {}\n", b.step, b.gate, b.message));
    }
    if let Some(g) = &r.step.gates {
        out.push_str(&format!(
            "this window so far: target {} answers ({} errors, p99 {}), incumbent {} answers ({} errors){}\n",
            g.requests,
            g.errors,
            g.p99_ms.map_or("-".to_string(), |p| format!("{p:.3} ms")),
            g.incumbent_requests,
            g.incumbent_errors,
            r.step.remaining_ms.map_or(String::new(), |ms| format!("; {:.1}s left", ms as f64 / 1000.0))
        ));
    }
    if !r.passed.is_empty() {
        let steps: Vec<String> = r.passed.iter().map(|p| format!("{} ({})", p.step, p.at)).collect();
        out.push_str(&format!("passed: {}\n", steps.join(", ")));
    }
    let num = |x: Option<f64>, digits: usize| x.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    if let Some(n) = &r.needs {
        out.push_str(&format!(
            "\nwhat each step needs (at {}):\n",
            n.rate_per_second.map_or("a rate not measured yet".to_string(), |r| format!("{r:.1} requests/s"))
        ));
        let rows: Vec<Vec<String>> = n
            .steps
            .iter()
            .map(|s| {
                vec![
                    s.step.clone(),
                    s.error_requests.to_string(),
                    s.latency_requests.map_or("-".to_string(), |l| l.to_string()),
                    s.seconds.map_or("-".to_string(), |t| format!("{t:.1}s")),
                    format!("{:.1}s", s.window_seconds),
                    match s.fits {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "-".into(),
                    },
                ]
            })
            .collect();
        out.push_str(&grid(&["STEP", "ERROR REQS", "LATENCY REQS", "TAKES", "MAY WATCH", "FITS"], &rows));
    }
    if !r.judged.is_empty() {
        out.push_str("\nevidence (a row per judged window and gate):\n");
        let mut rows = Vec::new();
        for w in &r.judged {
            for g in &w.gates {
                let side = |s: &Option<super::answers::SideAnswer>| {
                    s.as_ref().map_or("-".to_string(), |s| match (s.errors, s.median_ms) {
                        (Some(e), _) => format!("{e}/{}", s.n),
                        (None, Some(m)) => format!("{m:.3}ms n={}", s.n),
                        (None, None) => format!("n={}", s.n),
                    })
                };
                let interval = g
                    .interval
                    .as_ref()
                    .filter(|i| i.len() == 2)
                    .map_or("-".to_string(), |i| format!("[{:.4}, {:.4}]", i[0], i[1]));
                let failed = g.outcome == "fail" && g.note.is_none();
                rows.push(vec![
                    w.step.clone(),
                    w.look.to_string(),
                    g.gate.clone(),
                    if g.note.is_some() { format!("{} (not judged)", g.outcome) } else { g.outcome.clone() },
                    num(g.estimate, 4),
                    interval,
                    num(g.p_value, 4),
                    format!("{:.4}", g.alpha),
                    json_number(g.limit),
                    side(&g.target),
                    side(&g.incumbent),
                    format!("{}{}", w.decision, if failed { "  <-" } else { "" }),
                ]);
            }
        }
        out.push_str(&grid(
            &[
                "STEP",
                "LOOK",
                "GATE",
                "OUTCOME",
                "ESTIMATE",
                "INTERVAL",
                "P",
                "ALPHA",
                "LIMIT",
                "TARGET",
                "INCUMBENT",
                "DECISION",
            ],
            &rows,
        ));
    }
    if !r.events.is_empty() {
        out.push_str("\nlast events:\n");
        for e in r.events.iter().rev().take(5).rev() {
            out.push_str(&format!("  {}  {}\n", e.at, e.message));
        }
    }
    out
}

/// Rows under headers, each column as wide as its widest cell.
fn grid(headers: &[&str], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([headers[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_string()
            + "\n"
    };
    let mut out = line(headers.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

/// The effective mirror share rows of the comparison table: what the user asked for against
/// what the shadow got, and why the rest was dropped.
fn share_rows(m: &ShareAnswer) -> Vec<(&'static str, String)> {
    let effective =
        m.effective_percent.map_or("-".to_string(), |e| format!("{e:.1}% of unpinned requests (asked {}%)", m.percent));
    let mut reasons: Vec<(&String, &u64)> = m.dropped_by_reason.iter().filter(|(_, n)| **n > 0).collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    let reasons: Vec<String> = reasons.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let dropped =
        if reasons.is_empty() { m.dropped.to_string() } else { format!("{} ({})", m.dropped, reasons.join(", ")) };
    vec![
        ("copies wanted / copied / in flight", format!("{} / {} / {}", m.wanted, m.copied, m.in_flight)),
        ("copies dropped", dropped),
        ("effective mirror share", effective),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::answers::read;
    use super::*;
    use serde_json::json;

    #[test]
    fn the_rollout_table_has_a_row_per_judged_gate_and_marks_the_failing_one() {
        let r = json!({"to": "green", "status": "rolled_back", "started_at": "t0",
            "step": {"index": 0, "of": 2, "step": "50"},
            "rollback": {"step": "50", "gate": "latency_increase", "message": "gate latency_increase failed"},
            "needs": {"rate_per_second": 12.5, "steps": [
                {"step": "50", "error_requests": 1900, "latency_requests": 60, "seconds": 304.0, "window_seconds": 240.0, "fits": false},
                {"step": "100", "error_requests": 1900, "window_seconds": 240.0}]},
            "judged": [{"step": "50", "look": 1, "decision": "failed", "gates": [
                {"gate": "error_increase", "outcome": "pass", "estimate": 0.0, "interval": [-0.01, 0.004], "p_value": null,
                 "alpha": 0.0125, "limit": 0.005, "target": {"n": 900, "errors": 0}, "incumbent": {"n": 880, "errors": 1}},
                {"gate": "latency_increase", "outcome": "fail", "estimate": 0.97, "p_value": 0.0001, "alpha": 0.0125,
                 "limit": 1.2, "target": {"n": 900, "median_ms": 5.2}, "incumbent": {"n": 880, "median_ms": 0.4}}]}]});
        let t = rollout_table(&read(&r, "rollout").unwrap());
        assert!(t.starts_with("rollout to green: rolled_back (step 1 of 2: 50)"), "{t}");
        assert!(t.contains("rolled back at step 50 on latency_increase"), "{t}");
        assert!(t.contains("at 12.5 requests/s"), "{t}");
        let fits: Vec<&str> = t.lines().filter(|l| l.starts_with("50 ") && l.contains("1900")).collect();
        assert!(fits[0].ends_with("NO"), "{t}");
        let failing: Vec<&str> = t.lines().filter(|l| l.ends_with("<-")).collect();
        assert_eq!(failing.len(), 1, "{t}");
        assert!(failing[0].contains("latency_increase") && failing[0].contains("5.200ms n=900"), "{t}");
        assert!(t.lines().any(|l| l.contains("error_increase") && l.contains("0/900") && l.contains("1/880")), "{t}");
        let running = json!({"to": "green", "status": "running", "started_at": "t0",
            "step": {"index": 1, "of": 3, "step": "50", "remaining_ms": 1500,
                     "gates": {"requests": 40, "errors": 1, "p99_ms": 2.5, "incumbent_requests": 38, "incumbent_errors": 0}},
            "passed": [{"step": "mirror:10", "at": "t1"}],
            "events": (0..8).map(|i| json!({"at": format!("t{i}"), "message": format!("event {i}")})).collect::<Vec<_>>()});
        let t = rollout_table(&read(&running, "rollout").unwrap());
        assert!(
            t.contains("target 40 answers (1 errors, p99 2.500 ms), incumbent 38 answers (0 errors); 1.5s left"),
            "{t}"
        );
        assert!(t.contains("passed: mirror:10 (t1)"), "{t}");
        assert!(t.contains("event 7") && t.contains("event 3") && !t.contains("event 2"), "the last five events: {t}");
    }

    #[test]
    fn table_has_a_titled_column_per_scalar_field() {
        let t = table(&json!([
            {"name": "blue", "provisioning_state": "Succeeded", "instance_count": 2, "model": {"path": "x"}},
            {"name": "green", "provisioning_state": "Creating", "instance_count": 1}
        ]));
        let lines: Vec<&str> = t.lines().collect();
        // Columns in the order of the JSON fields (alphabetical, as serde_json keeps them).
        assert_eq!(lines[0], "InstanceCount  Name   ProvisioningState");
        assert!(lines[1].starts_with("-------------  -----  "), "{t}");
        assert_eq!(lines[2], "2              blue   Succeeded");
        assert_eq!(lines[3], "1              green  Creating");
        assert_eq!(table(&json!("Healthy")), "Result\n-------\nHealthy\n");
    }

    #[test]
    fn comparison_table_shows_the_effective_share() {
        let r = json!({"deployment": "green", "tolerance": {"atol": 1e-6, "rtol": 1e-6}, "mirror": {
            "percent": 10, "wanted": 300, "copied": 270, "dropped": 30, "in_flight": 0,
            "dropped_by_reason": {"queue_full": 20, "cpu_budget": 10, "no_idle_instance": 0, "not_ready": 0},
            "copied_ratio": 0.9, "effective_percent": 9.0}});
        let t = comparison_table(&read(&r, "comparison").unwrap());
        assert!(t.contains("300 / 270 / 0"), "{t}");
        assert!(
            t.contains("30 (queue_full 20, cpu_budget 10)") || t.contains("30 (cpu_budget 10, queue_full 20)"),
            "{t}"
        );
        assert!(t.contains("9.0% of unpinned requests (asked 10%)"), "{t}");
        let bare = comparison_table(&read(&json!({"tolerance": {}}), "comparison").unwrap());
        assert!(!bare.contains("copies wanted"), "no mirror object, no rows");
    }

    #[test]
    fn set_builds_nested_documents() {
        let d = set_document(&[
            "instance_count=2".into(),
            "request_settings.request_timeout_ms=9000".into(),
            "description=hi there".into(),
        ])
        .unwrap();
        assert_eq!(
            d,
            json!({"instance_count": 2, "request_settings": {"request_timeout_ms": 9000}, "description": "hi there"})
        );
        assert!(set_document(&["nokey".into()]).is_err());
        assert!(set_document(&["a..b=1".into()]).is_err());
        assert!(set_document(&["a=1".into(), "a.b=2".into()]).is_err());
    }

    #[test]
    fn query_and_tsv() {
        let v = json!({"primaryKey": "k1", "secondaryKey": "k2", "traffic": {"blue": 90}});
        assert_eq!(query(&v, "primaryKey").unwrap(), json!("k1"));
        assert_eq!(query(&v, "traffic.blue").unwrap(), json!(90));
        assert_eq!(tsv_lines(&json!("k1")), vec!["k1"]);
        assert_eq!(tsv_lines(&json!({"a": 1, "b": "x"})), vec!["1\tx"]);
        assert!(query(&v, "[[").is_err());
    }
}
