//! One collected record, and its JSON line: the shape Azure's data collector writes (a
//! CloudEvents 1.0 envelope: `specversion`, `id`, `source`, `type`, `datacontenttype`, `time`,
//! `data`, with the request's `path`, `method`, `correlationid`, `xrequestid`,
//! `modelversion`, `collectdatatype`, `agent` beside it), plus what only a local runtime knows:
//! `endpoint`, `deployment`, `collection`, `role` (`live` or `mirror`), the answer's `status`,
//! the captured request `headers`.
//!
//! Records are built on the request's thread from cheap parts (reference-counted bodies, a
//! few strings); the JSON is written on the sink's thread.

use std::sync::Arc;
use std::time::SystemTime;

use std::borrow::Cow;

use base64::Engine;
use bytes::Bytes;
use serde_json::value::RawValue;

/// Which answer a payload record is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Live,
    Mirror,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Live => "live",
            Role::Mirror => "mirror",
        }
    }
}

/// Text a record shares with others of its request (one allocation for the request and its
/// answer), or a constant.
pub(crate) type Text = Arc<str>;

/// What a record carries besides its body.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// Payload logging (`request`, `response`) by the front door.
    Payload { role: Role, path: Text, method: Text, status: u16 },
    /// Custom logging: a scoring script's `Collector(name=...).collect(df)`, as its client
    /// posted it (`ce-*` headers).
    Custom { collect_type: Option<String>, agent: Option<String>, role: Option<Role> },
}

/// One record on its way to a file. Built on the request's thread from shared parts (a few
/// reference counts, no formatting); its id and JSON are made on the writer's.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub endpoint: Text,
    pub deployment: Text,
    pub collection: Cow<'static, str>,
    /// The record's own id (a new one when `None`).
    pub id: Option<String>,
    pub time: SystemTime,
    /// The request it belongs to (`x-request-id`), when known.
    pub request_id: Option<Text>,
    /// What joins records of one request (payload records: the request id; custom ones:
    /// the collector's correlation context).
    pub correlation_id: Option<Text>,
    pub model_version: Option<Text>,
    pub content_type: Option<Cow<'static, str>>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub kind: Kind,
}

impl Record {
    /// The record as one JSON line (no newline), appended to `out`.
    pub(crate) fn write_line(&self, out: &mut Vec<u8>) {
        let mut first = true;
        let mut key = |out: &mut Vec<u8>, k: &str| {
            out.extend_from_slice(if first { b"{\"" } else { b",\"" });
            first = false;
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
        };
        let string = |out: &mut Vec<u8>, v: &str| {
            // serde_json's own escaping (writing to a Vec cannot fail).
            let _ = serde_json::to_writer(&mut *out, v);
        };
        key(out, "specversion");
        out.extend_from_slice(b"\"1.0\"");
        key(out, "id");
        match &self.id {
            Some(id) => string(out, id),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                string(out, uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf));
            }
        }
        key(out, "source");
        string(out, &format!("/endpoints/{}/deployments/{}", self.endpoint, self.deployment));
        key(out, "type");
        string(out, &format!("azureml.inference.{}", self.collection));
        key(out, "datacontenttype");
        string(out, self.content_type.as_deref().unwrap_or("application/octet-stream"));
        key(out, "time");
        string(out, &humantime::format_rfc3339_millis(self.time).to_string());
        key(out, "endpoint");
        string(out, &self.endpoint);
        key(out, "deployment");
        string(out, &self.deployment);
        key(out, "collection");
        string(out, &self.collection);
        if let Some(c) = &self.correlation_id {
            key(out, "correlationid");
            string(out, c);
        }
        if let Some(r) = &self.request_id {
            key(out, "xrequestid");
            string(out, r);
        }
        if let Some(v) = &self.model_version {
            key(out, "modelversion");
            string(out, v);
        }
        match &self.kind {
            Kind::Payload { role, path, method, status } => {
                key(out, "role");
                string(out, role.as_str());
                key(out, "path");
                string(out, path);
                key(out, "method");
                string(out, method);
                key(out, "status");
                out.extend_from_slice(itoa::Buffer::new().format(*status).as_bytes());
            }
            Kind::Custom { collect_type, agent, role } => {
                if let Some(role) = role {
                    key(out, "role");
                    string(out, role.as_str());
                }
                if let Some(t) = collect_type {
                    key(out, "collectdatatype");
                    string(out, t);
                }
                if let Some(a) = agent {
                    key(out, "agent");
                    string(out, a);
                }
            }
        }
        if !self.headers.is_empty() {
            key(out, "headers");
            out.push(b'{');
            for (i, (k, v)) in self.headers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(out, k);
                out.push(b':');
                string(out, v);
            }
            out.push(b'}');
        }
        key(out, "contentlength");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        // The body last, as written: a JSON body is embedded as it came (no reparse into a
        // map that would reorder or round its numbers), text as a string, anything else as
        // base64 (`data_base64`, the CloudEvents field for binary data).
        if let Ok(raw) = serde_json::from_slice::<&RawValue>(&self.body) {
            key(out, "data");
            // Valid JSON holds a line break only as whitespace between tokens (never inside a
            // string): as spaces, the record stays one line and the body keeps its meaning.
            let start = out.len();
            out.extend_from_slice(raw.get().as_bytes());
            for b in &mut out[start..] {
                if *b == b'\n' || *b == b'\r' {
                    *b = b' ';
                }
            }
        } else if let Ok(text) = std::str::from_utf8(&self.body) {
            key(out, "data");
            string(out, text);
        } else {
            key(out, "data_base64");
            out.push(b'"');
            out.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(&self.body).as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }

    /// The record as one JSON line (no newline).
    #[cfg(test)]
    pub(crate) fn to_line(&self) -> String {
        let mut out = Vec::new();
        self.write_line(&mut out);
        String::from_utf8(out).expect("JSON is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::Value;

    fn record(body: &[u8], kind: Kind) -> Record {
        Record {
            endpoint: "my-endpoint".into(),
            deployment: "blue".into(),
            collection: "request".into(),
            id: Some("id-1".into()),
            time: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            request_id: Some("rid".into()),
            correlation_id: Some("rid".into()),
            model_version: None,
            content_type: Some("application/json".into()),
            headers: vec![("x-user-id".to_string(), "u\"1".to_string())],
            body: Bytes::copy_from_slice(body),
            kind,
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_the_body_as_it_came() {
        let payload = Kind::Payload { role: Role::Mirror, path: "/score".into(), method: "POST".into(), status: 200 };
        let mut fresh = record(b"[1]", payload.clone());
        fresh.id = None;
        let a: Value = serde_json::from_str(&fresh.to_line()).unwrap();
        assert_eq!(a["id"].as_str().map(str::len), Some(36), "a new uuid: {a}");
        let line = record(br#"{"data": [[1.50, 2]]}"#, payload.clone()).to_line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "azureml.inference.request");
        assert_eq!(v["source"], "/endpoints/my-endpoint/deployments/blue");
        assert_eq!((v["role"].as_str(), v["status"].as_u64()), (Some("mirror"), Some(200)));
        assert_eq!((v["correlationid"].as_str(), v["xrequestid"].as_str()), (Some("rid"), Some("rid")));
        assert_eq!(v["headers"]["x-user-id"], "u\"1", "escaped");
        assert_eq!(v["id"], "id-1");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000Z");
        assert!(line.contains(r#""data":{"data": [[1.50, 2]]}"#), "embedded as written: {line}");
        let multi = record(b"{\"data\":\r\n  [[1,\n 2]],\n \"s\": \"a\\nb\"}\n", payload.clone()).to_line();
        assert!(!multi.contains('\n') && !multi.contains('\r'), "one line: {multi}");
        let v: Value = serde_json::from_str(&multi).unwrap();
        assert_eq!(v["data"], serde_json::json!({"data": [[1, 2]], "s": "a\nb"}));
        let text: Value = serde_json::from_str(&record(b"plain text", payload.clone()).to_line()).unwrap();
        assert_eq!(text["data"], "plain text");
        let binary: Value = serde_json::from_str(&record(&[0xff, 0x00, 0x01], payload).to_line()).unwrap();
        assert_eq!(binary["data_base64"], "/wAB");
        assert!(binary.get("data").is_none());
    }
}
