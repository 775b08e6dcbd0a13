//! Azure's data collector, locally (issue 28): payload logging of requests and answers, and
//! custom logging from scoring scripts (`azureml.ai.monitoring.Collector`), as JSON lines a
//! user can read (`sink.rs`, `record.rs`).
//!
//! A deployment whose `data_collector` turns a collection on gets a [`DeploymentCollector`]:
//! the front door hands it each sampled request and answer (live, and mirror copies marked as
//! such), and the custom-logging listener hands it what the deployment's workers post. A
//! deployment without one pays one `Option` check per request.

pub(crate) mod record;
pub(crate) mod sink;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use bytes::Bytes;

pub(crate) use record::{Kind, Record, Role};
pub(crate) use sink::{Counts, Sink, SinkError};

use crate::spec::DataCollector;

/// What every collector of the process shares: the data folder's writer, the custom-logging
/// listener's port (once `serve` bound it), and the collectors by token (the listener finds a
/// post's deployment by the token its worker presents).
pub(crate) struct Hub {
    sink: Arc<Sink>,
    port: OnceLock<u16>,
    /// Where each deployment's `AZUREML_MDC_CONFIG_PATH` file is written (a private folder,
    /// 0711: workers running as `--worker-user` open their file by name, nobody lists it;
    /// removed at exit).
    config_dir: PathBuf,
    _config: Option<tempfile::TempDir>,
    collectors: Mutex<HashMap<String, Weak<DeploymentCollector>>>,
}

impl Hub {
    /// A hub writing records with `sink`, and configuration files in `config` (kept until the
    /// hub goes).
    pub(crate) fn new(sink: Arc<Sink>, config: tempfile::TempDir) -> Arc<Self> {
        Arc::new(Self {
            sink,
            port: OnceLock::new(),
            config_dir: config.path().to_path_buf(),
            _config: Some(config),
            collectors: Mutex::default(),
        })
    }

    /// The data folder's writer.
    pub(crate) fn sink(&self) -> &Arc<Sink> {
        &self.sink
    }

    /// The custom-logging listener is bound to `port` on the loopback interface.
    pub(crate) fn set_port(&self, port: u16) {
        let _ = self.port.set(port);
    }

    /// The collector whose workers present `token`, while its deployment version lives.
    pub(crate) fn find(&self, token: &str) -> Option<Arc<DeploymentCollector>> {
        let mut map = self.collectors.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, c| c.strong_count() > 0);
        map.get(token).and_then(Weak::upgrade)
    }
}

/// One deployment version's collector. Its counts are this version's (a new version, made by
/// a change of the deployment, starts from zero).
pub(crate) struct DeploymentCollector {
    hub: Arc<Hub>,
    endpoint: Arc<str>,
    deployment: Arc<str>,
    model_version: Option<Arc<str>>,
    settings: DataCollector,
    sink: Arc<Sink>,
    counts: Arc<Counts>,
    /// What the deployment's workers present to the custom-logging listener (in
    /// `AZUREML_MDC_HOST` as `TOKEN:switchyard@127.0.0.1`, which Python's `requests` sends as
    /// Basic authentication; it needs the password part to send any): it names the
    /// deployment and keeps other local processes out.
    token: String,
    /// The `AZUREML_MDC_CONFIG_PATH` file, once written (removed with the collector).
    config_file: OnceLock<PathBuf>,
}

impl Drop for DeploymentCollector {
    /// The version is gone: its configuration file goes, and its token stops being accepted.
    fn drop(&mut self) {
        if let Some(path) = self.config_file.get() {
            let _ = std::fs::remove_file(path);
        }
        self.hub.collectors.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.token);
    }
}

/// What `show` says about a deployment's collection.
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct CollectorView {
    /// Where its records are: `DATA_DIR/ENDPOINT/DEPLOYMENT/COLLECTION/...`.
    pub folder: String,
    /// Collections on.
    pub collections: Vec<String>,
    pub sampling_rate: f64,
    pub rolling_rate: String,
    /// Records written since this version started (a change of the deployment is a new
    /// version).
    pub written: u64,
    /// Records dropped because the writer was behind.
    pub dropped: u64,
    /// Records the disk refused (full, unwritable).
    pub failed: u64,
    /// Files the data folder's size cap removed (oldest first; the whole folder's count).
    pub removed_files: u64,
    /// The data folder's last disk error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SinkError>,
}

impl DeploymentCollector {
    pub(crate) fn new(
        hub: &Arc<Hub>,
        endpoint: &str,
        deployment: &str,
        model_version: Option<String>,
        settings: DataCollector,
    ) -> Arc<Self> {
        let me = Arc::new(Self {
            hub: Arc::clone(hub),
            endpoint: endpoint.into(),
            deployment: deployment.into(),
            model_version: model_version.map(Into::into),
            settings,
            sink: Arc::clone(&hub.sink),
            counts: Arc::default(),
            token: uuid::Uuid::new_v4().simple().to_string(),
            config_file: OnceLock::new(),
        });
        hub.collectors.lock().unwrap_or_else(|e| e.into_inner()).insert(me.token.clone(), Arc::downgrade(&me));
        me
    }

    /// The environment a scoring script's `azureml.ai.monitoring.Collector` reads, for a
    /// deployment with custom collections: `AZUREML_MDC_CONFIG_PATH` (a file naming the
    /// collections, as Azure's server writes it), `AZUREML_MDC_HOST` (`TOKEN:switchyard@127.0.0.1`) and
    /// `AZUREML_MDC_PORT` (the listener). Empty without custom collections, or when the file
    /// cannot be written (logged: the script's Collector then says custom logging is off).
    pub(crate) fn worker_env(&self) -> Vec<(String, String)> {
        let custom: Vec<&str> = self.settings.custom().collect();
        let Some(port) = self.hub.port.get().copied().filter(|_| !custom.is_empty()) else {
            return Vec::new();
        };
        let collections: serde_json::Map<String, serde_json::Value> = custom
            .iter()
            .map(|n| {
                let percent = (self.settings.rate_of(n) * 100.0).round();
                ((*n).to_string(), serde_json::json!({"enabled": true, "sampleRatePercentage": percent}))
            })
            .collect();
        let doc = serde_json::json!({"collections": collections, "runMode": "cloud"});
        // Named by an id of its own (never the token: the folder can be entered by workers
        // running as another user, and a name can be seen where a content cannot).
        let path = self.hub.config_dir.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
        let written = std::fs::write(&path, doc.to_string());
        if let Err(e) = written {
            tracing::warn!(target: "switchyard::collector", deployment = %self.deployment, error = %e,
                "cannot write the data collector's configuration: the scoring script's Collector will find custom logging off");
            return Vec::new();
        }
        let _ = self.config_file.set(path.clone());
        // The posts go to the loopback listener, never through a proxy the deployment sets.
        let no_proxy = |name: &str| match std::env::var(name) {
            Ok(v) if !v.is_empty() => format!("{v},127.0.0.1"),
            _ => "127.0.0.1".to_string(),
        };
        vec![
            ("AZUREML_MDC_CONFIG_PATH".into(), path.display().to_string()),
            ("AZUREML_MDC_HOST".into(), format!("{}:switchyard@127.0.0.1", self.token)),
            ("AZUREML_MDC_PORT".into(), port.to_string()),
            ("NO_PROXY".into(), no_proxy("NO_PROXY")),
            ("no_proxy".into(), no_proxy("no_proxy")),
        ]
    }

    /// The settings.
    pub(crate) fn settings(&self) -> &DataCollector {
        &self.settings
    }

    /// Whether this request's payloads are logged: payload logging is on and the request is
    /// sampled (`sampling_rate`). The draw is a hash of the request id, so a request and its
    /// answer, and the live and mirror sides of one request at the same rate, are sampled
    /// together and join.
    #[inline]
    pub(crate) fn sample_payload(&self, request_id: &str) -> bool {
        let rate = self.settings.sampling_rate;
        self.settings.payload() && (rate >= 1.0 || unit_hash(request_id) < rate)
    }

    /// Request headers payload records capture (lower-case names).
    pub(crate) fn capture_headers(&self) -> &[String] {
        &self.settings.capture_headers
    }

    /// Logs one request and its answer (the collections that are on), live or mirror copy.
    /// Cheap on the request's thread: the two records share the request's id, path and
    /// method, hold the bodies by reference count, and are formatted by the writer.
    pub(crate) fn payload(&self, p: Payload) {
        let now = SystemTime::now();
        let request_id: record::Text = p.request_id.into();
        let kind = Kind::Payload { role: p.role, path: p.path.into(), method: p.method.into(), status: p.status };
        let make = |collection: &'static str, body: Bytes, content_type, headers| Record {
            endpoint: Arc::clone(&self.endpoint),
            deployment: Arc::clone(&self.deployment),
            collection: collection.into(),
            id: None,
            time: now,
            request_id: Some(Arc::clone(&request_id)),
            correlation_id: Some(Arc::clone(&request_id)),
            model_version: self.model_version.clone(),
            content_type,
            headers,
            body,
            kind: kind.clone(),
        };
        if self.settings.enabled("request") {
            let record = make("request", p.request_body, p.request_content_type.map(Into::into), p.headers);
            self.sink.push(record, self.settings.rolling_rate, &self.counts);
        }
        if self.settings.enabled("response") {
            let record = make("response", p.response_body, Some(p.response_content_type), Vec::new());
            self.sink.push(record, self.settings.rolling_rate, &self.counts);
        }
    }

    /// Logs one record a worker's `Collector` posted to collection `collection`.
    pub(crate) fn custom(&self, c: Custom) {
        let record = Record {
            endpoint: Arc::clone(&self.endpoint),
            deployment: Arc::clone(&self.deployment),
            collection: c.collection.into(),
            id: c.id,
            time: c.time.unwrap_or_else(SystemTime::now),
            request_id: c.request_id.map(Into::into),
            correlation_id: c.correlation_id.map(Into::into),
            model_version: c.model_version.map(Into::into).or_else(|| self.model_version.clone()),
            content_type: c.content_type.map(Into::into),
            headers: Vec::new(),
            body: c.body,
            kind: Kind::Custom { collect_type: c.collect_type, agent: c.agent, role: c.role },
        };
        self.sink.push(record, self.settings.rolling_rate, &self.counts);
    }

    /// Whether custom collection `name` is on.
    pub(crate) fn custom_enabled(&self, name: &str) -> bool {
        name != "request" && name != "response" && self.settings.enabled(name)
    }

    /// What `show` says.
    pub(crate) fn view(&self) -> CollectorView {
        let folder: PathBuf = self.sink.dir().join(&*self.endpoint).join(&*self.deployment);
        CollectorView {
            folder: folder.display().to_string(),
            collections: self.settings.collections.iter().filter(|(_, on)| **on).map(|(n, _)| n.clone()).collect(),
            sampling_rate: self.settings.sampling_rate,
            rolling_rate: self.settings.rolling_rate.as_str().into(),
            written: self.counts.written.load(Ordering::Relaxed),
            dropped: self.counts.dropped.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
            removed_files: self.sink.removed_files(),
            last_error: self.sink.last_error(),
        }
    }
}

/// A hash of `s` in [0, 1) (FNV-1a 64, then SplitMix64's finaliser).
fn unit_hash(s: &str) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// One request and its answer, for payload logging.
pub(crate) struct Payload {
    pub role: Role,
    pub request_id: String,
    pub path: String,
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub request_body: Bytes,
    pub request_content_type: Option<String>,
    pub status: u16,
    pub response_body: Bytes,
    pub response_content_type: std::borrow::Cow<'static, str>,
}

/// One custom record as a worker's `Collector` posted it.
pub(crate) struct Custom {
    pub collection: String,
    pub id: Option<String>,
    pub time: Option<SystemTime>,
    pub request_id: Option<String>,
    pub correlation_id: Option<String>,
    pub model_version: Option<String>,
    pub content_type: Option<String>,
    pub collect_type: Option<String>,
    pub agent: Option<String>,
    pub role: Option<Role>,
    pub body: Bytes,
}

/// The most bytes of files one read-back reads.
const READ_BUDGET: u64 = 128 << 20;

/// The records of one deployment (one collection, or all), newest first, at most `limit`,
/// written at or after `since` (RFC 3339, compared as written); whether more match; how many
/// files could not be read (skipped, not fatal: one bad file must not hide the others).
/// Whole rolling periods are read, newest first, every collection's files of a period before
/// the next older period, until `limit` records, `since` or [`READ_BUDGET`] bytes are reached.
pub(crate) fn read_records(
    dir: &std::path::Path,
    endpoint: &str,
    deployment: &str,
    collection: Option<&str>,
    since: Option<&str>,
    limit: usize,
) -> (Vec<serde_json::Value>, bool, usize) {
    let (mut out, mut read, mut skipped, mut more) = (Vec::new(), 0u64, 0usize, false);
    let periods = sink::files_by_period(dir, endpoint, deployment, collection);
    let count = periods.len();
    for (i, files) in periods.into_iter().enumerate() {
        let mut any_recent = false;
        for path in files {
            if read >= READ_BUDGET {
                more = true;
                break;
            }
            let Ok(bytes) =
                crate::sys::files::read_bounded(&path, sink::MAX_FILE_BYTES * 2, std::time::Duration::from_secs(10))
            else {
                skipped += 1;
                continue;
            };
            read += bytes.len() as u64;
            for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                let Ok(r) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
                if since.is_some_and(|since| r["time"].as_str().is_some_and(|t| t < since)) {
                    continue;
                }
                any_recent = true;
                out.push(r);
            }
        }
        let last = i + 1 == count;
        if read >= READ_BUDGET || out.len() >= limit || (since.is_some() && !any_recent) {
            more |= out.len() > limit || (!last && out.len() >= limit);
            break;
        }
    }
    // Newest first by time (a stable sort: a file's order breaks ties).
    out.sort_by(|a, b| b["time"].as_str().unwrap_or_default().cmp(a["time"].as_str().unwrap_or_default()));
    more |= out.len() > limit;
    out.truncate(limit);
    (out, more, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(doc: serde_json::Value) -> DataCollector {
        DataCollector::from_value(&doc).unwrap()
    }

    #[test]
    fn a_workers_configuration_never_names_its_token_and_goes_with_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let config = tempfile::tempdir().unwrap();
        let hub = Hub::new(Sink::new(dir.path().to_path_buf(), 1 << 20), config);
        hub.set_port(4242);
        let c = DeploymentCollector::new(
            &hub,
            "ep",
            "blue",
            None,
            settings(serde_json::json!({"collections": {"model_inputs": {"enabled": "True", "sampling_rate": 0.25}}})),
        );
        let env: std::collections::BTreeMap<String, String> = c.worker_env().into_iter().collect();
        let path = PathBuf::from(&env["AZUREML_MDC_CONFIG_PATH"]);
        assert!(!path.to_string_lossy().contains(&c.token), "the token is not in a name anyone can see");
        assert_eq!(env["AZUREML_MDC_HOST"], format!("{}:switchyard@127.0.0.1", c.token));
        assert!(env["NO_PROXY"].ends_with("127.0.0.1"));
        let doc: serde_json::Value = serde_json::from_slice(
            &crate::sys::files::read_bounded(&path, 1 << 16, std::time::Duration::from_secs(5)).unwrap(),
        )
        .unwrap();
        assert_eq!(doc["collections"]["model_inputs"]["sampleRatePercentage"], 25.0);
        let token = c.token.clone();
        assert!(hub.find(&token).is_some());
        drop(c);
        assert!(hub.find(&token).is_none(), "a version gone: its token no longer accepted");
        assert!(!path.exists(), "and its configuration removed");
    }

    #[test]
    fn a_read_takes_every_collections_newest_period_and_skips_a_file_it_cannot_read() {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::new(Sink::new(dir.path().to_path_buf(), 1 << 30), tempfile::tempdir().unwrap());
        let c = DeploymentCollector::new(
            &hub,
            "ep",
            "blue",
            None,
            settings(serde_json::json!({"collections": {"request": {"enabled": true}, "response": {"enabled": true}}})),
        );
        for i in 0..3 {
            c.payload(Payload {
                role: Role::Live,
                request_id: format!("r{i}"),
                path: "/score".into(),
                method: "POST".into(),
                headers: Vec::new(),
                request_body: Bytes::from(format!("[{i}]")),
                request_content_type: Some("application/json".into()),
                status: 200,
                response_body: Bytes::from(format!("[{}]", i * 10)),
                response_content_type: "application/json".into(),
            });
        }
        assert!(hub.sink().flush(std::time::Duration::from_secs(10)));
        let (records, more, skipped) = read_records(dir.path(), "ep", "blue", None, None, 4);
        assert_eq!((records.len(), more, skipped), (4, true, 0));
        let collections: std::collections::BTreeSet<&str> =
            records.iter().map(|r| r["collection"].as_str().unwrap()).collect();
        assert_eq!(collections.len(), 2, "both collections of the newest period: {records:?}");
        // A FIFO named like a record file is not listed; a file too large to read is skipped,
        // and the others are still read.
        let period =
            sink::files_by_period(dir.path(), "ep", "blue", Some("request"))[0][0].parent().unwrap().to_path_buf();
        let status = std::process::Command::new("mkfifo").arg(period.join("data.7.jsonl")).status().unwrap();
        assert!(status.success());
        let huge = std::fs::File::create(period.join("data.8.jsonl")).unwrap();
        huge.set_len(sink::MAX_FILE_BYTES * 2 + 1).unwrap();
        let (records, _, skipped) = read_records(dir.path(), "ep", "blue", Some("request"), None, 100);
        assert_eq!((records.len(), skipped), (3, 1));
    }
}
