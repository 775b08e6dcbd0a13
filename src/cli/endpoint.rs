//! `switchyard online-endpoint ...`

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use serde_json::{json, Value};

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
    /// List endpoints (this server hosts at most one).
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
}

#[derive(ValueEnum, Debug, Clone, Copy)]
pub enum KeyTypeArg {
    Primary,
    Secondary,
}

pub fn run(verb: EndpointVerb, global: &GlobalArgs) -> Result<(), String> {
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
            print(&admin.call("PUT", "/v1/endpoint", Some(&doc))?.ok_json()?, global)
        }
        EndpointVerb::Show { name } => print(&hosted(&admin, name.as_deref())?, global),
        EndpointVerb::Update { name, file, traffic, mirror_traffic, set, no_wait: _ } => {
            hosted(&admin, name.as_deref())?;
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
            print(&admin.call("PATCH", "/v1/endpoint", Some(&patch))?.ok_json()?, global)
        }
        EndpointVerb::List => {
            let reply = admin.call("GET", "/v1/endpoint", None)?;
            let list = if reply.status == 404 { json!([]) } else { json!([reply.ok_json()?]) };
            print(&list, global)
        }
        EndpointVerb::Delete { name, yes, no_wait: _ } => {
            let endpoint = hosted(&admin, name.as_deref())?;
            super::confirm(&format!("endpoint {endpoint:?} and all its deployments will be deleted"), yes)?;
            admin.call("DELETE", "/v1/endpoint", None)?.ok_json()?;
            Ok(())
        }
        EndpointVerb::Invoke { name, request_file, deployment_name } => {
            let endpoint = hosted(&admin, name.as_deref())?;
            invoke(&admin, &endpoint, &request_file, deployment_name.as_deref())
        }
        EndpointVerb::GetCredentials { name } => {
            hosted(&admin, name.as_deref())?;
            print(&admin.call("GET", "/v1/endpoint/keys", None)?.ok_json()?, global)
        }
        EndpointVerb::RegenerateKeys { name, key_type } => {
            hosted(&admin, name.as_deref())?;
            let key_type = match key_type {
                KeyTypeArg::Primary => "primary",
                KeyTypeArg::Secondary => "secondary",
            };
            admin.call("POST", "/v1/endpoint/keys/regenerate", Some(&json!({"keyType": key_type})))?.ok_json()?;
            Ok(())
        }
    }
}

/// The hosted endpoint, checked against `--name` when one is given.
pub fn hosted(admin: &AdminClient, name: Option<&str>) -> Result<Value, String> {
    let endpoint = admin.call("GET", "/v1/endpoint", None)?.ok_json()?;
    if let Some(n) = name {
        let actual = endpoint.get("name").and_then(Value::as_str).unwrap_or("");
        if actual != n {
            return Err(format!("endpoint {n:?} not found: this server hosts endpoint {actual:?}"));
        }
    }
    Ok(endpoint)
}

/// Posts the request file to the scoring URI with the endpoint's credentials and prints the
/// answer body.
fn invoke(admin: &AdminClient, endpoint: &Value, file: &PathBuf, deployment: Option<&str>) -> Result<(), String> {
    let body = std::fs::read(file).map_err(|e| format!("cannot read --request-file {}: {e}", file.display()))?;
    let uri = endpoint.get("scoring_uri").and_then(Value::as_str).ok_or("the endpoint has no scoring_uri")?.to_string();
    let creds = admin.call("GET", "/v1/endpoint/keys", None)?.ok_json()?;
    let secret = creds
        .get("primaryKey")
        .or_else(|| creds.get("accessToken"))
        .and_then(Value::as_str)
        .ok_or("the endpoint returned no key or token")?;
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
