//! Azure's `data_collector` of a deployment (issue 28): which collections are on, at what
//! sampling rate, how often files roll, which request headers payload records capture.
//!
//! The deployment keeps the mapping as written (so `show` gives it back as the user wrote it,
//! `enabled: 'True'` included); [`DataCollector::from_value`] checks it when the deployment
//! is accepted and gives the typed settings the runtime uses.

use std::collections::BTreeMap;

use serde_json::Value;

use super::SpecError;

/// How often a collection's files roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RollingRate {
    Minute,
    Hour,
    Day,
}

impl RollingRate {
    pub fn as_str(self) -> &'static str {
        match self {
            RollingRate::Minute => "minute",
            RollingRate::Hour => "hour",
            RollingRate::Day => "day",
        }
    }
}

/// The checked settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DataCollector {
    /// Enabled collections by name (lower-cased, as Azure's collector reads them); `request`
    /// and `response` are payload logging, any other is custom logging.
    pub collections: BTreeMap<String, bool>,
    /// The share of requests whose payloads are logged (0..=1, default 1).
    pub sampling_rate: f64,
    /// A collection's own `sampling_rate` (azure-ai-ml writes the top-level one into each),
    /// where it has one: what a custom collection's Collector samples at.
    pub rates: BTreeMap<String, f64>,
    pub rolling_rate: RollingRate,
    /// Request headers payload records capture (lower-cased).
    pub capture_headers: Vec<String>,
}

/// The most collections a deployment may name.
const MAX_COLLECTIONS: usize = 32;
/// The most headers `capture_headers` may name.
const MAX_CAPTURE_HEADERS: usize = 32;

const FIELDS: &[&str] = &["collections", "sampling_rate", "rolling_rate", "request_logging"];
const COLLECTION_FIELDS: &[&str] = &["enabled", "data", "client_id", "sampling_rate"];

impl DataCollector {
    /// Checks `data_collector` as Azure defines it; errors name the field at fault.
    pub fn from_value(value: &Value) -> Result<Self, SpecError> {
        let bad = |field: &str, what: String| SpecError::invalid(format!("data_collector.{field}: {what}"));
        let Value::Object(map) = value else {
            return Err(SpecError::invalid(format!(
                "data_collector must be a mapping (collections, sampling_rate, rolling_rate, request_logging), got {value}"
            )));
        };
        if let Some(key) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(bad(key, format!("unknown field: expected one of {}", FIELDS.join(", "))));
        }
        let mut collections = BTreeMap::new();
        let mut rates = BTreeMap::new();
        match map.get("collections") {
            None | Some(Value::Null) => {}
            Some(Value::Object(c)) => {
                if c.len() > MAX_COLLECTIONS {
                    return Err(bad("collections", format!("at most {MAX_COLLECTIONS} collections, got {}", c.len())));
                }
                for (name, settings) in c {
                    let field = format!("collections.{name}");
                    if name.is_empty()
                        || name.len() > 64
                        || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-')
                    {
                        return Err(bad(
                            &field,
                            "a collection name is 1 to 64 letters, digits, `_` or `-` (e.g. model_inputs)".into(),
                        ));
                    }
                    let enabled = match settings {
                        Value::Null => false,
                        Value::Object(s) => {
                            if let Some(key) = s.keys().find(|k| !COLLECTION_FIELDS.contains(&k.as_str())) {
                                return Err(bad(
                                    &format!("{field}.{key}"),
                                    format!("unknown field: expected one of {}", COLLECTION_FIELDS.join(", ")),
                                ));
                            }
                            if let Some(v) = s.get("sampling_rate").filter(|v| !v.is_null()) {
                                let rate = v.as_f64().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                                    bad(
                                        &format!("{field}.sampling_rate"),
                                        format!("expected a number from 0 to 1, got {v}"),
                                    )
                                })?;
                                rates.insert(name.to_ascii_lowercase(), rate);
                            }
                            truth(s.get("enabled")).map_err(|got| {
                                bad(
                                    &format!("{field}.enabled"),
                                    format!("expected true or false ('True'/'False'), got {got}"),
                                )
                            })?
                        }
                        other => {
                            return Err(bad(
                                &field,
                                format!("expected a mapping such as {{enabled: 'True'}}, got {other}"),
                            ))
                        }
                    };
                    if collections.insert(name.to_ascii_lowercase(), enabled).is_some() {
                        return Err(bad(&field, "named twice (collection names are not case-sensitive)".into()));
                    }
                }
            }
            Some(other) => {
                return Err(bad("collections", format!("expected a mapping of collection names, got {other}")))
            }
        }
        let sampling_rate = match map.get("sampling_rate") {
            None | Some(Value::Null) => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| bad("sampling_rate", format!("expected a number from 0 to 1 (e.g. 0.1), got {v}")))?,
        };
        let rolling_rate = match map.get("rolling_rate") {
            None | Some(Value::Null) => RollingRate::Hour,
            Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
                "minute" => RollingRate::Minute,
                "hour" => RollingRate::Hour,
                "day" => RollingRate::Day,
                _ => return Err(bad("rolling_rate", format!("expected minute, hour or day, got {s:?}"))),
            },
            Some(v) => return Err(bad("rolling_rate", format!("expected minute, hour or day, got {v}"))),
        };
        let mut capture_headers = Vec::new();
        match map.get("request_logging") {
            None | Some(Value::Null) => {}
            Some(Value::Object(r)) => {
                if let Some(key) = r.keys().find(|k| *k != "capture_headers") {
                    return Err(bad(
                        &format!("request_logging.{key}"),
                        "unknown field: expected capture_headers".into(),
                    ));
                }
                match r.get("capture_headers") {
                    None | Some(Value::Null) => {}
                    Some(Value::Array(items)) => {
                        if items.len() > MAX_CAPTURE_HEADERS {
                            return Err(bad(
                                "request_logging.capture_headers",
                                format!("at most {MAX_CAPTURE_HEADERS} headers, got {}", items.len()),
                            ));
                        }
                        for item in items {
                            let name = item.as_str().filter(|n| is_header_name(n)).ok_or_else(|| {
                                bad(
                                    "request_logging.capture_headers",
                                    format!("expected HTTP header names (e.g. x-user-id), got {item}"),
                                )
                            })?;
                            let lower = name.to_ascii_lowercase();
                            if lower == "authorization" {
                                return Err(bad(
                                    "request_logging.capture_headers",
                                    "authorization carries the endpoint's key or token and is never captured".into(),
                                ));
                            }
                            if !capture_headers.contains(&lower) {
                                capture_headers.push(lower);
                            }
                        }
                    }
                    Some(v) => {
                        return Err(bad(
                            "request_logging.capture_headers",
                            format!("expected a list of header names, got {v}"),
                        ))
                    }
                }
            }
            Some(v) => return Err(bad("request_logging", format!("expected {{capture_headers: [...]}}, got {v}"))),
        }
        Ok(Self { collections, sampling_rate, rates, rolling_rate, capture_headers })
    }

    /// The sampling rate of collection `name`: its own, else the deployment's.
    pub fn rate_of(&self, name: &str) -> f64 {
        self.rates.get(name).copied().unwrap_or(self.sampling_rate)
    }

    /// Whether a collection is on.
    pub fn enabled(&self, name: &str) -> bool {
        self.collections.get(name).copied().unwrap_or(false)
    }

    /// Payload logging of requests or responses is on.
    pub fn payload(&self) -> bool {
        self.enabled("request") || self.enabled("response")
    }

    /// Custom collections that are on (a scoring script's `Collector(name=...)`).
    pub fn custom(&self) -> impl Iterator<Item = &str> {
        self.collections.iter().filter(|(n, on)| **on && *n != "request" && *n != "response").map(|(n, _)| n.as_str())
    }
}

/// `enabled` as Azure writes it: a boolean, or the strings `True`/`False` in any case.
fn truth(v: Option<&Value>) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(other) => Err(other.to_string()),
    }
}

/// An HTTP header name (RFC 9110 token), at most 100 bytes.
fn is_header_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 100 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn azures_sample_reads_as_written() {
        let d = DataCollector::from_value(&json!({
            "collections": {"model_inputs": {"enabled": "True"}, "model_outputs": {"enabled": "True"},
                            "request": {"enabled": "true"}, "response": {"enabled": false},
                            "Extra": {"enabled": "False", "data": {"name": "d", "path": "p", "version": 1}}},
            "sampling_rate": 0.5, "rolling_rate": "Minute",
            "request_logging": {"capture_headers": ["X-User-Id", "x-user-id", "traceparent"]}}))
        .unwrap();
        assert!(d.enabled("model_inputs") && d.enabled("request") && !d.enabled("response") && !d.enabled("extra"));
        assert!(d.payload());
        assert_eq!(d.custom().collect::<Vec<_>>(), ["model_inputs", "model_outputs"]);
        assert_eq!((d.sampling_rate, d.rolling_rate), (0.5, RollingRate::Minute));
        assert_eq!(d.capture_headers, ["x-user-id", "traceparent"]);
        let own = DataCollector::from_value(
            &json!({"collections": {"m": {"enabled": true, "sampling_rate": 0.25}}, "sampling_rate": 0.5}),
        )
        .unwrap();
        assert_eq!((own.rate_of("m"), own.rate_of("other")), (0.25, 0.5));
        let defaults = DataCollector::from_value(&json!({})).unwrap();
        assert_eq!(
            (defaults.sampling_rate, defaults.rolling_rate, defaults.payload()),
            (1.0, RollingRate::Hour, false)
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_field() {
        for (doc, says) in [
            (json!({"sampling_rate": 1.5}), "data_collector.sampling_rate: expected a number from 0 to 1"),
            (json!({"sampling_rate": "all"}), "data_collector.sampling_rate"),
            (json!({"rolling_rate": "week"}), "data_collector.rolling_rate: expected minute, hour or day"),
            (json!({"collections": {"model inputs": {"enabled": true}}}), "data_collector.collections.model inputs"),
            (json!({"collections": {"x": {"enabled": "yes"}}}), "data_collector.collections.x.enabled"),
            (json!({"collections": {"x": {"enabeld": true}}}), "data_collector.collections.x.enabeld: unknown field"),
            (
                json!({"collections": {"x": {"enabled": true, "sampling_rate": 3}}}),
                "data_collector.collections.x.sampling_rate",
            ),
            (json!({"collections": {"x": true}}), "data_collector.collections.x: expected a mapping"),
            (json!({"collections": {"x": {}, "X": {}}}), "named twice"),
            (json!({"collections": []}), "data_collector.collections: expected a mapping"),
            (
                json!({"request_logging": {"capture_headers": ["bad header"]}}),
                "capture_headers: expected HTTP header names",
            ),
            (json!({"request_logging": {"capture_headers": ["Authorization"]}}), "never captured"),
            (json!({"request_logging": {"headers": []}}), "data_collector.request_logging.headers: unknown field"),
            (json!({"colections": {}}), "data_collector.colections: unknown field"),
            (json!("on"), "data_collector must be a mapping"),
        ] {
            let e = DataCollector::from_value(&doc).unwrap_err();
            assert!(e.message.contains(says), "{doc}: {}", e.message);
        }
    }
}
