//! `switchyard online-deployment ...`

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use clap::Subcommand;
use serde_json::{json, Value};

use super::answers::{read, CollectedAnswer, DeploymentAnswer};
use super::client::AdminClient;
use super::endpoint::endpoint_of;
use super::output::{self, print};
use super::GlobalArgs;
use crate::spec::DeploymentSpec;

#[derive(Subcommand, Debug)]
pub enum DeploymentVerb {
    /// Create (or replace) a deployment from its YAML; waits until it is ready unless --no-wait.
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Give this deployment 100% of live traffic once it is ready.
        #[arg(long)]
        all_traffic: bool,
        #[arg(long, num_args = 1..)]
        set: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a deployment.
    Show {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
    },
    /// Update a deployment: --set instance_count=2 scales in place; -f replaces it.
    Update {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        #[arg(long, num_args = 1..)]
        set: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// List the endpoint's deployments.
    List {
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
    },
    /// Delete a deployment (it must have no live traffic).
    Delete {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// The mirror comparison report: does this shadow agree with live traffic?
    Compare {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
        /// Start the report over (optionally with a new --atol / --rtol).
        #[arg(long)]
        reset: bool,
        /// Absolute tolerance for floats (with --reset).
        #[arg(long, requires = "reset")]
        atol: Option<f64>,
        /// Relative tolerance for floats (with --reset).
        #[arg(long, requires = "reset")]
        rtol: Option<f64>,
    },
    /// Print the records its data collector wrote (`data_collector` in the deployment YAML),
    /// newest first: payload logging (`request`, `response`) and a scoring script's own
    /// collections (`model_inputs`...).
    Collected {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
        /// One collection (request, response, model_inputs, ...); all when absent.
        #[arg(long)]
        collection: Option<String>,
        /// Only records written since: an RFC 3339 time, or a duration ago (10m, 2h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many records (newest first).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print the last lines of a deployment's log.
    GetLogs {
        #[arg(short = 'n', long)]
        name: String,
        #[arg(short = 'e', long)]
        endpoint_name: Option<String>,
        #[arg(short = 'l', long, default_value_t = 100)]
        lines: usize,
        /// Accepted for compatibility (logs come from the instances' shared log).
        #[arg(long)]
        container: Option<String>,
    },
}

pub(super) fn run(verb: DeploymentVerb, global: &GlobalArgs) -> Result<(), String> {
    let admin = AdminClient::new(global);
    match verb {
        DeploymentVerb::Create { name, endpoint_name, file, all_traffic, set, no_wait } => {
            let (name, doc) = document(name, endpoint_name.as_deref(), file.as_ref(), &set)?;
            let ep = endpoint_of(&admin, endpoint_name.as_deref().or(named_in(&doc)))?;
            let shown = admin
                .call("PUT", &format!("/v1/endpoints/{ep}/deployments/{name}?all_traffic={all_traffic}"), Some(&doc))?
                .ok_json()?;
            finish(&admin, &ep, &name, shown, no_wait, global)
        }
        DeploymentVerb::Update { name, endpoint_name, file, set, no_wait } => {
            let (ep, shown) = if file.is_some() {
                let (name, doc) = document(name, endpoint_name.as_deref(), file.as_ref(), &set)?;
                let ep = endpoint_of(&admin, endpoint_name.as_deref().or(named_in(&doc)))?;
                let shown =
                    admin.call("PUT", &format!("/v1/endpoints/{ep}/deployments/{name}"), Some(&doc))?.ok_json()?;
                (ep, (name, shown))
            } else {
                let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
                let name = name.ok_or("give the deployment's --name")?;
                if set.is_empty() {
                    return Err("nothing to update: give --set KEY=VALUE or --file".into());
                }
                let patch = output::set_document(&set)?;
                let shown =
                    admin.call("PATCH", &format!("/v1/endpoints/{ep}/deployments/{name}"), Some(&patch))?.ok_json()?;
                (ep, (name, shown))
            };
            finish(&admin, &ep, &shown.0, shown.1, no_wait, global)
        }
        DeploymentVerb::Show { name, endpoint_name } => {
            let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
            print(&admin.call("GET", &format!("/v1/endpoints/{ep}/deployments/{name}"), None)?.ok_json()?, global)
        }
        DeploymentVerb::List { endpoint_name } => {
            let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
            print(&admin.call("GET", &format!("/v1/endpoints/{ep}/deployments"), None)?.ok_json()?, global)
        }
        DeploymentVerb::Delete { name, endpoint_name, yes, no_wait: _ } => {
            let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
            super::confirm(&format!("deployment {name:?} of endpoint {ep:?} will be deleted"), yes)?;
            admin.call("DELETE", &format!("/v1/endpoints/{ep}/deployments/{name}"), None)?.ok_json()?;
            Ok(())
        }
        DeploymentVerb::Compare { name, endpoint_name, reset, atol, rtol } => {
            let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
            let report = if reset {
                let body = json!({"atol": atol, "rtol": rtol});
                admin
                    .call("POST", &format!("/v1/endpoints/{ep}/deployments/{name}/comparison/reset"), Some(&body))?
                    .ok_json()?
            } else {
                admin.call("GET", &format!("/v1/endpoints/{ep}/deployments/{name}/comparison"), None)?.ok_json()?
            };
            if global.output.is_none() && global.query.is_none() && std::io::stdout().is_terminal() {
                print!("{}", output::comparison_table(&read(&report, "comparison")?));
                Ok(())
            } else {
                print(&report, global)
            }
        }
        DeploymentVerb::Collected { name, endpoint_name, collection, since, limit } => {
            let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
            let enc = |v: Option<String>| {
                percent_encoding::utf8_percent_encode(&v.unwrap_or_default(), percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            };
            let (collection, since) = (enc(collection), enc(since));
            let answer = admin
                .call(
                    "GET",
                    &format!(
                        "/v1/endpoints/{ep}/deployments/{name}/collected?limit={limit}&collection={collection}&since={since}"
                    ),
                    None,
                )?
                .ok_json()?;
            if global.output.is_none() && global.query.is_none() && std::io::stdout().is_terminal() {
                // On a terminal, the records as the JSON lines they are on disk.
                let collected: CollectedAnswer = read(&answer, "collected records")?;
                for r in &collected.records {
                    println!("{r}");
                }
                if collected.more {
                    eprintln!("(more records match: raise --limit or narrow --since)");
                }
                Ok(())
            } else {
                print(&answer, global)
            }
        }
        DeploymentVerb::GetLogs { name, endpoint_name, lines, container: _ } => {
            let ep = endpoint_of(&admin, endpoint_name.as_deref())?;
            let reply =
                admin.call("GET", &format!("/v1/endpoints/{ep}/deployments/{name}/logs?lines={lines}"), None)?;
            if reply.status != 200 {
                return Err(reply.error_text());
            }
            print!("{}", reply.body);
            Ok(())
        }
    }
}

/// Reads the deployment YAML (paths resolved against its folder) and applies -n, -e and --set.
fn document(
    name: Option<String>,
    endpoint: Option<&str>,
    file: Option<&PathBuf>,
    set: &[String],
) -> Result<(String, Value), String> {
    let mut doc = match file {
        Some(f) => {
            serde_json::to_value(DeploymentSpec::from_file(f).map_err(|e| e.message)?.0).map_err(|e| e.to_string())?
        }
        None => json!({}),
    };
    if let Some(n) = &name {
        doc["name"] = json!(n);
    }
    if let Some(e) = endpoint {
        doc["endpoint_name"] = json!(e);
    }
    json_patch::merge(&mut doc, &output::set_document(set)?);
    let name = doc
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or("give the deployment a name: --name NAME or a `name` in the --file")?;
    Ok((name, doc))
}

/// The `endpoint_name` a deployment document names (the Azure YAML's own field).
fn named_in(doc: &Value) -> Option<&str> {
    doc.get("endpoint_name").and_then(Value::as_str)
}

/// Waits for a terminal state (unless --no-wait), showing progress on a terminal, then prints.
fn finish(
    admin: &AdminClient,
    ep: &str,
    name: &str,
    shown: Value,
    no_wait: bool,
    global: &GlobalArgs,
) -> Result<(), String> {
    if no_wait {
        return print(&shown, global);
    }
    let tty = std::io::stderr().is_terminal() && !global.only_show_errors;
    let start = Instant::now();
    // The server answers once the operation ends (`?wait`), at the latest after `wait`
    // seconds: on a terminal the progress line is redrawn after each answer, so it ticks at
    // least once a second and shows the deployment's latest log line (the environment
    // build's, init's); a script just waits.
    let wait = if tty { 1 } else { 30 };
    let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse::<usize>().ok()).unwrap_or(100);
    if tty {
        // The first frame at once, from the create's own answer.
        let state = read::<DeploymentAnswer>(&shown, "deployment").map(|d| d.provisioning_state);
        eprint!("\r{}\x1b[K", progress_line(name, state.as_deref().unwrap_or("Creating"), 0, None, width));
        let _ = std::io::stderr().flush();
    }
    loop {
        let current =
            admin.call("GET", &format!("/v1/endpoints/{ep}/deployments/{name}?wait={wait}"), None)?.ok_json()?;
        let DeploymentAnswer { provisioning_state: state, error } = read(&current, "deployment")?;
        if tty {
            let latest = match state.as_str() {
                "Creating" | "Updating" => latest_log_line(admin, ep, name),
                _ => None,
            };
            let line = progress_line(name, &state, start.elapsed().as_secs(), latest.as_deref(), width);
            eprint!("\r{line}\x1b[K");
            let _ = std::io::stderr().flush();
        }
        match state.as_str() {
            "Succeeded" => {
                if tty {
                    eprintln!();
                }
                return print(&current, global);
            }
            "Failed" => {
                if tty {
                    eprintln!();
                }
                let error = error.as_deref().unwrap_or("unknown error");
                return Err(format!("deployment {name} failed: {error}"));
            }
            "Creating" | "Updating" => {}
            other => return Err(format!("deployment {name} is {other}")),
        }
    }
}

/// The deployment's last log line, without its timestamp; `None` when it cannot be read
/// (progress is best effort: the wait itself reports real errors).
fn latest_log_line(admin: &AdminClient, ep: &str, name: &str) -> Option<String> {
    let reply = admin.call("GET", &format!("/v1/endpoints/{ep}/deployments/{name}/logs?lines=1"), None).ok()?;
    if reply.status != 200 {
        return None;
    }
    let line = reply.body.lines().rev().find(|l| !l.trim().is_empty())?.trim();
    // `2026-01-01T00:00:00.000Z text`: the clock is on the screen already.
    let text = match line.split_once(' ') {
        Some((stamp, rest)) if stamp.ends_with('Z') && stamp.contains('T') => rest,
        _ => line,
    };
    Some(text.to_string())
}

/// One frame of the progress line: `blue: Creating 12s | <latest log line>`, cut to `width`
/// characters so that `\r` redraws it in place instead of wrapping.
fn progress_line(name: &str, state: &str, secs: u64, latest: Option<&str>, width: usize) -> String {
    let mut line = format!("{name}: {state} {secs}s");
    if let Some(l) = latest.map(|l| l.replace(['\r', '\t'], " ")) {
        line.push_str(" | ");
        line.push_str(&l);
    }
    let width = width.max(20) - 1;
    if line.chars().count() > width {
        line = line.chars().take(width - 1).collect::<String>() + "…";
    }
    line
}

#[cfg(test)]
mod tests {
    use super::progress_line;

    #[test]
    fn the_progress_line_shows_state_seconds_and_the_latest_log_line_within_the_width() {
        assert_eq!(progress_line("blue", "Creating", 3, None, 100), "blue: Creating 3s");
        assert_eq!(
            progress_line("blue", "Creating", 12, Some("environment: building"), 100),
            "blue: Creating 12s | environment: building"
        );
        let long = "x".repeat(300);
        let cut = progress_line("blue", "Creating", 1, Some(&long), 80);
        assert_eq!(cut.chars().count(), 79, "{cut}");
        assert!(cut.ends_with('…'));
    }
}
