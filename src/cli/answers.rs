//! What the CLI reads of the admin API's answers, as types: each names its route, and a test
//! checks every field of each against the admin API's OpenAPI document (`server::openapi`), so
//! a field renamed or removed on the server fails here, not at a user's terminal. The CLI
//! prints whole answers as they come (`-o json`, `--query`); fields it reads itself, to decide
//! or to lay out a table, are read only through these types.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Reads `T` out of an answer; the error says which answer did not have what was expected.
pub(super) fn read<T: serde::de::DeserializeOwned>(answer: &Value, what: &str) -> Result<T, String> {
    T::deserialize(answer).map_err(|e| format!("the admin API's {what} answer is not what this CLI reads: {e}"))
}

/// `GET /v1/endpoints/{endpoint}` (and `GET /v1/endpoint`, the only endpoint): its name
/// (when `--name` is not given) and where `invoke` sends.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct EndpointAnswer {
    pub name: String,
    pub scoring_uri: String,
}

/// `GET /v1/deployments/{name}` (and a create's answer): what `--wait` follows.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct DeploymentAnswer {
    pub provisioning_state: String,
    pub error: Option<String>,
}

/// `POST /v1/uploads`: where `model create` sends the files.
#[derive(Debug, Deserialize, ToSchema)]
pub(super) struct UploadAnswer {
    pub id: String,
}

/// `GET /v1/endpoint/keys`: the secret `invoke` sends.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(super) enum KeysAnswer {
    Keys {
        #[serde(rename = "primaryKey")]
        primary_key: String,
    },
    Token {
        #[serde(rename = "accessToken")]
        access_token: String,
    },
}

impl KeysAnswer {
    pub(super) fn secret(&self) -> &str {
        match self {
            KeysAnswer::Keys { primary_key } => primary_key,
            KeysAnswer::Token { access_token } => access_token,
        }
    }
}

/// `GET .../deployments/{name}/collected`: what the terminal prints.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct CollectedAnswer {
    #[schema(value_type = Vec<Object>)]
    pub records: Vec<Value>,
    pub more: bool,
}

/// `GET /v1/endpoints/{endpoint}/rollout`: what the rollout table shows.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct RolloutAnswer {
    pub to: String,
    pub status: String,
    pub started_at: String,
    pub step: RolloutStepAnswer,
    pub rollback: Option<RolloutRollbackAnswer>,
    pub judged: Vec<JudgedAnswer>,
    pub needs: Option<NeedsAnswer>,
    pub passed: Vec<PassedAnswer>,
    pub events: Vec<EventAnswer>,
}

/// A passed step.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct PassedAnswer {
    pub step: String,
    pub at: String,
}

/// One line of the rollout's history.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct EventAnswer {
    pub at: String,
    pub message: String,
}

/// The current window's numbers so far.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct WindowAnswer {
    pub requests: u64,
    pub errors: u64,
    pub p99_ms: Option<f64>,
    pub incumbent_requests: u64,
    pub incumbent_errors: u64,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct RolloutStepAnswer {
    pub index: u64,
    pub of: u64,
    pub step: String,
    pub remaining_ms: Option<u64>,
    pub gates: Option<WindowAnswer>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct RolloutRollbackAnswer {
    pub step: String,
    pub gate: String,
    pub message: String,
}

/// One judged window.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct JudgedAnswer {
    pub step: String,
    pub look: u64,
    pub decision: String,
    pub gates: Vec<GateAnswer>,
}

/// One gate of a judged window.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct GateAnswer {
    pub gate: String,
    pub outcome: String,
    pub estimate: Option<f64>,
    pub interval: Option<Vec<f64>>,
    pub p_value: Option<f64>,
    pub alpha: f64,
    pub limit: f64,
    pub note: Option<String>,
    pub target: Option<SideAnswer>,
    pub incumbent: Option<SideAnswer>,
}

/// One side of a gate.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct SideAnswer {
    pub n: u64,
    pub errors: Option<u64>,
    pub median_ms: Option<f64>,
}

/// What the plan needs.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct NeedsAnswer {
    pub rate_per_second: Option<f64>,
    pub steps: Vec<StepNeedAnswer>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct StepNeedAnswer {
    pub step: String,
    pub error_requests: u64,
    pub latency_requests: Option<u64>,
    pub seconds: Option<f64>,
    pub window_seconds: f64,
    pub fits: Option<bool>,
}

/// `GET /v1/deployments/{name}/comparison`: what the comparison table shows.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct ComparisonAnswer {
    pub deployment: String,
    pub live_deployments: Vec<String>,
    pub mirror_percent: u32,
    pub since: String,
    pub tolerance: ToleranceAnswer,
    pub pairs: u64,
    pub compared: u64,
    pub agreement_ratio: Option<f64>,
    pub value_disagreements: u64,
    pub shape_mismatches: u64,
    /// Null when the difference overflowed (serde_json writes a non-finite number as null).
    pub max_abs_diff: Option<f64>,
    pub mean_abs_diff: Option<f64>,
    pub shadow_errors: u64,
    pub live_errors: u64,
    pub unpaired: u64,
    pub mirror: Option<ShareAnswer>,
    pub live_latency_ms: Option<LatencyAnswer>,
    pub shadow_latency_ms: Option<LatencyAnswer>,
    pub disagreement_samples: Vec<SampleAnswer>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct ToleranceAnswer {
    pub atol: f64,
    pub rtol: f64,
}

/// The effective mirror share.
#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct ShareAnswer {
    pub percent: u32,
    pub wanted: u64,
    pub copied: u64,
    pub dropped: u64,
    pub in_flight: u64,
    pub dropped_by_reason: BTreeMap<String, u64>,
    pub effective_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct LatencyAnswer {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Debug, Default, Deserialize, serde::Serialize, ToSchema)]
#[serde(default)]
pub(super) struct SampleAnswer {
    pub request_id: String,
    pub reason: String,
    pub live_body: String,
    pub shadow_body: String,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use utoipa::{OpenApi as _, PartialSchema};

    use super::*;

    /// A schema as JSON, its `$ref`s resolved against `doc`'s components.
    struct Doc(Value);

    impl Doc {
        fn resolve<'a>(&'a self, mut s: &'a Value) -> &'a Value {
            while let Some(r) = s.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or_default();
                s = &self.0["components"]["schemas"][name];
            }
            s
        }

        /// The object schemas a value may be (through `oneOf`, `anyOf`, `allOf`).
        fn variants<'a>(&'a self, s: &'a Value, out: &mut Vec<&'a Value>) {
            let s = self.resolve(s);
            let mut composite = false;
            for key in ["oneOf", "anyOf", "allOf"] {
                for v in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                    composite = true;
                    self.variants(v, out);
                }
            }
            if !composite || s.get("properties").is_some() {
                out.push(s);
            }
        }

        /// Whether a value of `schema` can have `path`.
        fn has(&self, schema: &Value, path: &[String]) -> bool {
            !self.at(schema, path).is_empty()
        }

        /// The schemas a value at `path` of a value of `schema` may have.
        fn at<'a>(&'a self, schema: &'a Value, path: &[String]) -> Vec<&'a Value> {
            let Some((key, rest)) = path.split_first() else {
                return vec![schema];
            };
            let mut variants = Vec::new();
            self.variants(schema, &mut variants);
            variants
                .iter()
                .flat_map(|v| {
                    let child = if key == "[]" {
                        v.get("items")
                    } else {
                        v.get("properties")
                            .and_then(|p| p.get(key))
                            .or(v.get("additionalProperties").filter(|e| e.is_object()))
                    };
                    child.map(|c| self.at(c, rest)).unwrap_or_default()
                })
                .collect()
        }

        /// The JSON types a value of `schema` may be; `None` for any.
        fn types(&self, schema: &Value) -> Option<std::collections::BTreeSet<String>> {
            let s = self.resolve(schema);
            let mut found = std::collections::BTreeSet::new();
            let mut composite = false;
            for key in ["oneOf", "anyOf", "allOf"] {
                for part in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                    composite = true;
                    found.extend(self.types(part)?);
                }
            }
            match s.get("type") {
                Some(Value::String(t)) => {
                    found.insert(t.clone());
                }
                Some(Value::Array(ts)) => found.extend(ts.iter().filter_map(|t| t.as_str().map(str::to_string))),
                _ if s.get("enum").is_some() => {
                    found.insert("string".into());
                }
                _ if s.get("properties").is_some() || s.get("additionalProperties").is_some() => {
                    found.insert("object".into());
                }
                _ if !composite => return None,
                _ => {}
            }
            Some(found)
        }

        /// The union of the types of `schemas`; `None` if any may be anything.
        fn types_of(&self, schemas: &[&Value]) -> Option<std::collections::BTreeSet<String>> {
            schemas.iter().try_fold(std::collections::BTreeSet::new(), |mut all, s| {
                all.extend(self.types(s)?);
                Some(all)
            })
        }
    }

    /// Every field path of a CLI answer type (lists as `[]`, maps as any key: not descended).
    fn paths(schema: &Value, defs: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut s = schema;
        while let Some(r) = s.get("$ref").and_then(Value::as_str) {
            s = &defs[r.rsplit('/').next().unwrap_or_default()];
        }
        for key in ["oneOf", "anyOf", "allOf"] {
            for v in s.get(key).and_then(Value::as_array).into_iter().flatten() {
                paths(v, defs, prefix, out);
            }
        }
        if let Some(items) = s.get("items") {
            prefix.push("[]".into());
            paths(items, defs, prefix, out);
            prefix.pop();
        }
        for (name, child) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
            prefix.push(name.clone());
            out.push(prefix.clone());
            paths(child, defs, prefix, out);
            prefix.pop();
        }
    }

    fn schema_of<T: PartialSchema + ToSchema>() -> (Value, Value) {
        let mut defs = Vec::new();
        T::schemas(&mut defs);
        let defs: serde_json::Map<String, Value> =
            defs.into_iter().map(|(name, s)| (name, serde_json::to_value(s).unwrap())).collect();
        (serde_json::to_value(T::schema()).unwrap(), Value::Object(defs))
    }

    /// Every field the CLI reads is in the answer the document gives for its route.
    #[test]
    fn every_field_the_cli_reads_is_in_the_admin_apis_document() {
        let doc = Doc(serde_json::from_str(&crate::server::openapi::document()).unwrap());
        let cases: Vec<(&str, &str, (Value, Value))> = vec![
            ("get", "/v1/endpoint", schema_of::<EndpointAnswer>()),
            ("get", "/v1/endpoints/{endpoint}", schema_of::<EndpointAnswer>()),
            ("get", "/v1/endpoints/{endpoint}/deployments/{name}", schema_of::<DeploymentAnswer>()),
            ("put", "/v1/endpoints/{endpoint}/deployments/{name}", schema_of::<DeploymentAnswer>()),
            ("get", "/v1/endpoints/{endpoint}/keys", schema_of::<KeysAnswer>()),
            ("get", "/v1/endpoints/{endpoint}/deployments/{name}/comparison", schema_of::<ComparisonAnswer>()),
            ("get", "/v1/endpoints/{endpoint}/rollout", schema_of::<RolloutAnswer>()),
            ("get", "/v1/endpoints/{endpoint}/deployments/{name}/collected", schema_of::<CollectedAnswer>()),
        ];
        let mut missing = Vec::new();
        for (method, route, (schema, defs)) in cases {
            let answer = &doc.0["paths"][route][method]["responses"]["200"]["content"]["application/json"]["schema"];
            assert!(!answer.is_null(), "{method} {route}: no 200 JSON answer in the document");
            let mut all = Vec::new();
            paths(&schema, &defs, &mut Vec::new(), &mut all);
            assert!(!all.is_empty(), "{method} {route}: the CLI's type has no field");
            let cli = Doc(json!({"components": {"schemas": defs}}));
            for path in all {
                let sent = doc.at(answer, &path);
                if sent.is_empty() {
                    missing.push(format!("{} {route}: {}", method.to_uppercase(), path.join(".")));
                    continue;
                }
                // Every type the server may send there is one the CLI's field reads (an
                // integer where the CLI reads a number).
                let (Some(sent), Some(read)) = (doc.types_of(&sent), cli.types_of(&cli.at(&schema, &path))) else {
                    continue;
                };
                let reads = |t: &str| read.contains(t) || (t == "integer" && read.contains("number"));
                for t in sent.iter().filter(|t| !reads(t)) {
                    missing.push(format!(
                        "{} {route}: {} may be {t}; the CLI reads {read:?}",
                        method.to_uppercase(),
                        path.join(".")
                    ));
                }
            }
        }
        assert!(missing.is_empty(), "the CLI reads fields the admin API does not send: {missing:#?}");
    }

    /// Every route the CLI calls, with the query parameters it sends, is in the document. The
    /// CLI names its routes as literals, `admin.call("METHOD", "/v1/...")` or a
    /// `("METHOD", "/v1/...")` pair for a call that picks one (the rollout verbs); a call with
    /// a route computed any other way fails this test, so none escapes it.
    #[test]
    fn every_route_the_cli_calls_is_in_the_admin_apis_document() {
        let doc: Value = serde_json::from_str(&crate::server::openapi::document()).unwrap();
        let sources = [
            ("asset.rs", include_str!("asset.rs")),
            ("client.rs", include_str!("client.rs")),
            ("deployment.rs", include_str!("deployment.rs")),
            ("endpoint.rs", include_str!("endpoint.rs")),
            ("env.rs", include_str!("env.rs")),
            ("mod.rs", include_str!("mod.rs")),
            ("output.rs", include_str!("output.rs")),
            ("probe.rs", include_str!("probe.rs")),
        ];
        // (method, route, query parameters, the documented values of each path parameter)
        type Route = (String, String, Vec<String>, Vec<(String, Vec<String>)>);
        let documented: Vec<Route> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object().unwrap().iter().map(move |(method, op)| {
                    let params = op["parameters"].as_array().cloned().unwrap_or_default();
                    let name = |p: &Value| p["name"].as_str().unwrap_or_default().to_string();
                    let query = params.iter().filter(|p| p["in"] == "query").map(name).collect();
                    let values = params
                        .iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| {
                            let allowed = p["schema"]["enum"].as_array().into_iter().flatten();
                            (name(p), allowed.filter_map(|v| v.as_str().map(str::to_string)).collect())
                        })
                        .collect();
                    (method.to_uppercase(), path.clone(), query, values)
                })
            })
            .collect();
        // A literal path matches a route segment by segment; a `{param}` takes a placeholder,
        // or a literal among its documented values (any, when it documents none).
        let matches = |route: &str, values: &[(String, Vec<String>)], path: &str| {
            let (r, p): (Vec<&str>, Vec<&str>) = (route.split('/').collect(), path.split('/').collect());
            r.len() == p.len()
                && r.iter().zip(&p).all(|(r, p)| match r.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    None => r == p,
                    Some(param) => {
                        p.starts_with('{')
                            || values
                                .iter()
                                .find(|(n, _)| n == param)
                                .is_none_or(|(_, v)| v.is_empty() || v.iter().any(|v| v == p))
                    }
                })
        };
        let mut seen = 0;
        let mut missing = Vec::new();
        for (file, text) in sources {
            let computed = text.matches("admin.call(").count() - text.matches("admin.call(\"").count();
            let pairs = text.matches("\", \"/v1/").count();
            assert!(computed == 0 || pairs > 0, "{file}: admin.call with a route that is not a literal");
            for (i, _) in text.match_indices("\"/v1/").chain(text.match_indices("\"/metrics")) {
                let before = &text[..i];
                let Some(method) = ["GET", "PUT", "PATCH", "POST", "DELETE"].into_iter().find(|m| {
                    before.trim_end_matches("&format!(").trim_end().trim_end_matches(',').ends_with(&format!("\"{m}\""))
                }) else {
                    continue; // a path in a message, not a call
                };
                let literal = &text[i + 1..];
                let literal = &literal[..literal.find('"').unwrap()];
                let (path, query) = literal.split_once('?').unwrap_or((literal, ""));
                let keys: Vec<&str> =
                    query.split('&').filter(|q| !q.is_empty()).map(|q| q.split('=').next().unwrap()).collect();
                seen += 1;
                let found =
                    documented.iter().find(|(m, route, _, values)| *m == method && matches(route, values, path));
                match found {
                    None => missing.push(format!("{file}: {method} {path}")),
                    Some((_, _, documented_query, _)) => {
                        for k in keys.iter().filter(|k| !documented_query.iter().any(|d| d == *k)) {
                            missing.push(format!("{file}: {method} {path}?{k}="));
                        }
                    }
                }
            }
        }
        assert!(seen >= 20, "only {seen} routes found in the CLI's sources: the scan is broken");
        assert!(missing.is_empty(), "the CLI calls what the admin API's document does not have: {missing:#?}");
    }

    /// The check itself finds a field the server does not send.
    #[test]
    fn a_field_the_server_does_not_send_is_found() {
        #[derive(Deserialize, ToSchema)]
        #[allow(dead_code)]
        struct Drifted {
            provisioning_state: String,
            provisioning_status: String,
        }
        let doc = Doc(serde_json::to_value(crate::server::openapi::AdminApi::openapi()).unwrap());
        let answer = &doc.0["paths"]["/v1/deployments/{name}"]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"];
        let (schema, defs) = schema_of::<Drifted>();
        let mut all = Vec::new();
        paths(&schema, &defs, &mut Vec::new(), &mut all);
        let missing: Vec<_> = all.iter().filter(|p| !doc.has(answer, p)).collect();
        assert_eq!(missing, [&vec!["provisioning_status".to_string()]]);
    }
}
