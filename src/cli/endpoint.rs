//! `switchyard online-endpoint ...`

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::answers::{read, EndpointAnswer, KeysAnswer, RolloutAnswer};
use super::client::AdminClient;
use super::output::{self, print};
use super::GlobalArgs;
use crate::spec::{parse_assignments, EndpointSpec};

#[derive(Subcommand, Debug)]
pub enum EndpointVerb {
    /// Create the endpoint from an endpoint.yml.
    Create {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// key (default) or aml_token.
        #[arg(long)]
        auth_mode: Option<String>,
        #[arg(long, num_args = 1..)]
        set: Vec<String>,
        /// Accepted for compatibility: the endpoint is ready when create returns.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show the endpoint.
    Show {
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
    /// Update traffic, mirror traffic, description or tags.
    Update {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
        /// Live traffic, e.g. "blue=90 green=10".
        #[arg(long)]
        traffic: Option<String>,
        /// Shadow traffic, e.g. "green=10"; "green=0" turns it off.
        #[arg(long)]
        mirror_traffic: Option<String>,
        #[arg(long, num_args = 1..)]
        set: Vec<String>,
        #[arg(long)]
        no_wait: bool,
    },
    /// List the server's endpoints.
    List,
    /// Delete the endpoint and all its deployments.
    Delete {
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Do not ask for confirmation.
        #[arg(short = 'y', long)]
        yes: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Send a request file to the endpoint's scoring URI.
    Invoke {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'r', long)]
        request_file: PathBuf,
        /// Pin this deployment (azureml-model-deployment header).
        #[arg(short = 'd', long)]
        deployment_name: Option<String>,
    },
    /// Show the keys (key mode) or a fresh token (aml_token mode).
    GetCredentials {
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
    /// Replace the primary or secondary key.
    RegenerateKeys {
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(long, value_enum, default_value_t = KeyTypeArg::Primary)]
        key_type: KeyTypeArg,
    },
    /// Move traffic to a deployment in guarded steps that roll back by themselves (local
    /// extension), e.g. `rollout --to green --steps mirror:10,10,25,50,100 --step-duration 60s`;
    /// or `rollout pause|resume|abort|show`.
    Rollout(RolloutArgs),
}

/// `online-endpoint rollout`: start one with the flags, or act on the current one.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RolloutArgs {
    #[command(subcommand)]
    action: Option<RolloutAction>,
    #[arg(short = 'n', long)]
    name: Option<String>,
    /// The deployment traffic moves to.
    #[arg(long)]
    to: Option<String>,
    /// Steps: mirror percents first (`mirror:10`), then live percents ending at 100.
    #[arg(long)]
    steps: Option<String>,
    /// How long each step is watched, e.g. 60s, 500ms.
    #[arg(long)]
    step_duration: Option<String>,
    /// Answers the target must give in a step before it is judged (default 20).
    #[arg(long)]
    min_requests: Option<u64>,
    /// Largest share of 5xx/424/408 answers of the target (default 0.01).
    #[arg(long)]
    max_error_rate: Option<f64>,
    /// Largest p99 latency of the target, in milliseconds.
    #[arg(long)]
    max_p99_ms: Option<f64>,
    /// Largest p99 of the target as a multiple of the live deployments' p99 over the window.
    #[arg(long)]
    max_p99_ratio: Option<f64>,
    /// Smallest mirror agreement during mirror steps (0..1).
    #[arg(long)]
    min_agreement: Option<f64>,
    /// Judge each step on evidence against the incumbent at this confidence (e.g. 0.95):
    /// pass, fail or inconclusive (docs/CONTRACT.md §9, "Evidence gates").
    #[arg(long)]
    confidence: Option<f64>,
    /// Largest error-rate increase over the incumbent, absolute (default 0.005).
    #[arg(long)]
    max_error_increase: Option<f64>,
    /// Windows a step may add while inconclusive (default 3).
    #[arg(long)]
    max_extensions: Option<u32>,
    /// What an undecided step does once its extensions are spent: rollback (default) or proceed.
    #[arg(long, value_parser = ["rollback", "proceed"])]
    on_inconclusive: Option<String>,
    /// Latency gate: the largest ratio of the target's latencies to the incumbent's (e.g. 1.2),
    /// judged by a rank test on per-request latencies.
    #[arg(long)]
    max_latency_increase: Option<f64>,
    /// Refuse the plan when a step cannot gather the evidence it needs at the current
    /// request rate within its windows (without it, a warning).
    #[arg(long)]
    strict: bool,
}

/// What to do with the current rollout.
#[derive(Subcommand, Debug)]
pub(super) enum RolloutAction {
    /// Hold the current step: traffic stays, nothing is judged.
    Pause {
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
    /// Go on from the current step (its window starts again).
    Resume {
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
    /// Stop, sending traffic back to the split the rollout started from.
    Abort {
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
    /// The current step, time left, gate values so far, passed steps, rollback reason, events.
    Show {
        #[arg(short = 'n', long)]
        name: Option<String>,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum KeyTypeArg {
    Primary,
    Secondary,
}

pub(super) fn run(verb: EndpointVerb, global: &GlobalArgs) -> Result<(), String> {
    let admin = AdminClient::new(global);
    match verb {
        EndpointVerb::Create { name, file, auth_mode, set, no_wait: _ } => {
            let mut doc = match &file {
                Some(f) => serde_json::to_value(EndpointSpec::from_file(f).map_err(|e| e.message)?.0)
                    .map_err(|e| e.to_string())?,
                None => json!({}),
            };
            if let Some(n) = name {
                doc["name"] = json!(n);
            }
            if let Some(m) = auth_mode {
                doc["auth_mode"] = json!(m);
            }
            json_patch::merge(&mut doc, &output::set_document(&set)?);
            if doc.get("name").is_none() {
                return Err("give the endpoint a name: --name NAME or a `name` in the --file".into());
            }
            let ep = endpoint_of(&admin, doc.get("name").and_then(Value::as_str))?;
            print(&admin.call("PUT", &format!("/v1/endpoints/{ep}"), Some(&doc))?.ok_json()?, global)
        }
        EndpointVerb::Show { name } => print(&hosted(&admin, name.as_deref())?.1, global),
        EndpointVerb::Update { name, file, traffic, mirror_traffic, set, no_wait: _ } => {
            let ep = endpoint_of(&admin, name.as_deref())?;
            let mut patch = json!({});
            if let Some(f) = file {
                let spec = EndpointSpec::from_file(&f).map_err(|e| e.message)?.0;
                patch = json!({"description": spec.description, "tags": spec.tags});
                if !spec.traffic.is_empty() {
                    patch["traffic"] = json!(spec.traffic);
                }
                if !spec.mirror_traffic.is_empty() {
                    patch["mirror_traffic"] = json!(spec.mirror_traffic);
                }
                if let Some(affinity) = &spec.traffic_affinity {
                    patch["traffic_affinity"] = json!(affinity);
                }
            }
            if let Some(t) = traffic {
                patch["traffic"] = json!(parse_assignments(&t, "--traffic").map_err(|e| e.message)?);
            }
            if let Some(m) = mirror_traffic {
                patch["mirror_traffic"] = json!(parse_assignments(&m, "--mirror-traffic").map_err(|e| e.message)?);
            }
            json_patch::merge(&mut patch, &output::set_document(&set)?);
            if patch.as_object().is_some_and(|m| m.is_empty()) {
                return Err("nothing to update: give --traffic, --mirror-traffic, --file or --set".into());
            }
            print(&admin.call("PATCH", &format!("/v1/endpoints/{ep}"), Some(&patch))?.ok_json()?, global)
        }
        EndpointVerb::List => print(&admin.call("GET", "/v1/endpoints", None)?.ok_json()?, global),
        EndpointVerb::Delete { name, yes, no_wait: _ } => {
            let ep = endpoint_of(&admin, name.as_deref())?;
            super::confirm(&format!("endpoint {ep:?} and all its deployments will be deleted"), yes)?;
            admin.call("DELETE", &format!("/v1/endpoints/{ep}"), None)?.ok_json()?;
            Ok(())
        }
        EndpointVerb::Invoke { name, request_file, deployment_name } => {
            let (ep, endpoint) = hosted(&admin, name.as_deref())?;
            invoke(&admin, &ep, &endpoint, &request_file, deployment_name.as_deref())
        }
        EndpointVerb::GetCredentials { name } => {
            let ep = endpoint_of(&admin, name.as_deref())?;
            print(&admin.call("GET", &format!("/v1/endpoints/{ep}/keys"), None)?.ok_json()?, global)
        }
        EndpointVerb::RegenerateKeys { name, key_type } => {
            let ep = endpoint_of(&admin, name.as_deref())?;
            let key_type = match key_type {
                KeyTypeArg::Primary => "primary",
                KeyTypeArg::Secondary => "secondary",
            };
            let body = json!({"keyType": key_type});
            admin.call("POST", &format!("/v1/endpoints/{ep}/keys/regenerate"), Some(&body))?.ok_json()?;
            Ok(())
        }
        EndpointVerb::Rollout(args) => rollout(&admin, args, global),
    }
}

fn rollout(admin: &AdminClient, args: RolloutArgs, global: &GlobalArgs) -> Result<(), String> {
    let name = match &args.action {
        Some(
            RolloutAction::Pause { name }
            | RolloutAction::Resume { name }
            | RolloutAction::Abort { name }
            | RolloutAction::Show { name },
        ) => name.clone(),
        None => args.name.clone(),
    };
    let ep = endpoint_of(admin, name.as_deref())?;
    let empty = json!({});
    let reply = match args.action {
        Some(RolloutAction::Pause { .. }) => {
            admin.call("POST", &format!("/v1/endpoints/{ep}/rollout/pause"), Some(&empty))?
        }
        Some(RolloutAction::Resume { .. }) => {
            admin.call("POST", &format!("/v1/endpoints/{ep}/rollout/resume"), Some(&empty))?
        }
        Some(RolloutAction::Abort { .. }) => {
            admin.call("POST", &format!("/v1/endpoints/{ep}/rollout/abort"), Some(&empty))?
        }
        Some(RolloutAction::Show { .. }) => admin.call("GET", &format!("/v1/endpoints/{ep}/rollout"), None)?,
        None => {
            let (Some(to), Some(steps), Some(step_duration)) = (args.to, args.steps, args.step_duration) else {
                return Err("a rollout needs --to NAME, --steps (e.g. mirror:10,10,25,50,100) and --step-duration (e.g. 60s); or use rollout pause|resume|abort|show".into());
            };
            let mut body = json!({"to": to, "steps": steps, "step_duration": step_duration});
            for (key, value) in [
                ("min_requests", args.min_requests.map(|n| json!(n))),
                ("max_error_rate", args.max_error_rate.map(|n| json!(n))),
                ("max_p99_ms", args.max_p99_ms.map(|n| json!(n))),
                ("max_p99_ratio", args.max_p99_ratio.map(|n| json!(n))),
                ("min_agreement", args.min_agreement.map(|n| json!(n))),
                ("confidence", args.confidence.map(|n| json!(n))),
                ("max_error_increase", args.max_error_increase.map(|n| json!(n))),
                ("max_extensions", args.max_extensions.map(|n| json!(n))),
                ("on_inconclusive", args.on_inconclusive.map(|n| json!(n))),
                ("max_latency_increase", args.max_latency_increase.map(|n| json!(n))),
                ("strict", args.strict.then_some(json!(true))),
            ] {
                if let Some(v) = value {
                    body[key] = v;
                }
            }
            admin.call("POST", &format!("/v1/endpoints/{ep}/rollout"), Some(&body))?
        }
    };
    let answer = reply.ok_json()?;
    // On a terminal (or with `-o table`), the rollout as a table: the evidence gates'
    // judgements are rows, not a JSON tree.
    let terminal = global.output.is_none() && global.query.is_none() && std::io::stdout().is_terminal();
    if terminal || (global.output == Some(super::OutputFormat::Table) && global.query.is_none()) {
        print!("{}", output::rollout_table(&read::<RolloutAnswer>(&answer, "rollout")?));
        return Ok(());
    }
    print(&answer, global)
}

/// The endpoint a command is for, as a path segment: the one `--name` (`--endpoint-name`)
/// gives, or without one the server's only endpoint (the server's answer names its endpoints
/// when it holds several, so the user learns what to pass).
pub(super) fn endpoint_of(admin: &AdminClient, name: Option<&str>) -> Result<String, String> {
    match name {
        Some(n) => Ok(path_segment(n)),
        None => {
            let only = admin.call("GET", "/v1/endpoint", None)?.ok_json()?;
            Ok(path_segment(&read::<EndpointAnswer>(&only, "endpoint")?.name))
        }
    }
}

/// The endpoint a command is for (see [`endpoint_of`]) and its view; a name that does not
/// exist is the server's 404, which names the endpoints that do (`ResourceNotFound`, as
/// Azure answers).
pub(super) fn hosted(admin: &AdminClient, name: Option<&str>) -> Result<(String, Value), String> {
    let ep = endpoint_of(admin, name)?;
    let endpoint = admin.call("GET", &format!("/v1/endpoints/{ep}"), None)?.ok_json()?;
    Ok((ep, endpoint))
}

/// `name` as one URL path segment: a name typed by a user (`-n 'a/b?c'`) must not reach
/// another route. Endpoint names are letters, digits and `-`, so a valid one is unchanged.
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Posts the request file to the scoring URI with the endpoint's credentials and prints the
/// answer body.
#[allow(clippy::disallowed_methods, reason = "the CLI reads its own user's --request-file, as curl would")]
fn invoke(
    admin: &AdminClient,
    ep: &str,
    endpoint: &Value,
    file: &PathBuf,
    deployment: Option<&str>,
) -> Result<(), String> {
    let body = std::fs::read(file).map_err(|e| format!("cannot read --request-file {}: {e}", file.display()))?;
    let uri = read::<EndpointAnswer>(endpoint, "endpoint")?.scoring_uri;
    let creds: KeysAnswer = read(&admin.call("GET", &format!("/v1/endpoints/{ep}/keys"), None)?.ok_json()?, "keys")?;
    let secret = creds.secret();
    let mut headers = vec![
        ("Content-Type".to_string(), "application/json".to_string()),
        ("Authorization".to_string(), format!("Bearer {secret}")),
    ];
    if let Some(d) = deployment {
        headers.push(("azureml-model-deployment".to_string(), d.to_string()));
    }
    let reply = admin.send("POST", &uri, &headers, Some(&body)).map_err(|e| format!("cannot reach {uri}: {e}"))?;
    if (200..300).contains(&reply.status) {
        println!("{}", reply.body.trim_end());
        Ok(())
    } else {
        Err(reply.error_text())
    }
}
