//! Test harness: a real `switchyard serve` on ephemeral ports, real HTTP, the real CLI.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The expected answer of model-1 to the seed's sample request.
pub(crate) const MODEL_1_ANSWER: [f64; 2] = [11055.977245525679, 4503.079536107787];

pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The seed's sample request with its first number replaced by `x00`: the test models read it
/// (test/slow takes about x00 ms; test/fail fails when x00 >= 2).
pub(crate) fn body_with_x00(x00: f64) -> Vec<u8> {
    serde_json::json!({"data": [[x00, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]})
        .to_string()
        .into_bytes()
}

pub(crate) fn sample_request() -> Vec<u8> {
    std::fs::read(repo().join("sample-requests/model-1.json")).unwrap()
}

/// Waits until `probe` answers `Some`, checking every few milliseconds, and fails the test with
/// `what` and the last answer's debug form after `limit`. The one way tests wait for an effect
/// they cannot be told about directly (a load, a file applied, a counter reached).
pub(crate) fn eventually<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) => assert!(Instant::now() < deadline, "never happened: {what} (last seen: {last})"),
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running server, killed on drop.
pub(crate) struct Server {
    child: Child,
    pub scoring: String,
    pub admin: String,
    /// The gRPC plane's `host:port` (the server prints it after the other two).
    pub grpc: Option<String>,
    agent: ureq::Agent,
}

/// One HTTP answer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub(crate) fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or_default().to_string()
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(60))).build(),
    )
}

pub(crate) fn http(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    try_http(agent, method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// As [`http`], returning transport errors (a server killed mid-request) instead of panicking.
pub(crate) fn try_http(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Reply, String> {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(body.map(<[u8]>::to_vec).unwrap_or_default()).unwrap();
    let mut resp = agent.run(req).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    let body = resp.body_mut().read_to_string().map_err(|e| e.to_string())?;
    Ok(Reply { status, headers, body })
}

impl Server {
    pub(crate) fn start() -> Self {
        Self::start_with(&[])
    }

    pub(crate) fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// As [`Server::start_with`], with these environment variables set for the server.
    pub(crate) fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let stderr = if std::env::var_os("SWITCHYARD_TEST_LOG").is_some() { Stdio::inherit() } else { Stdio::null() };
        Self::start_with_stderr(extra, env, stderr)
    }

    /// As [`Server::start_with_env`], with the server's stderr (its process log) going to
    /// `stderr` (a file a test reads).
    pub(crate) fn start_with_stderr(extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(["serve", "--port", "0", "--admin-port", "0"]).args(extra);
        cmd.envs(env.iter().copied());
        cmd.stdout(Stdio::piped()).stdin(Stdio::null());
        cmd.stderr(stderr);
        // The server exits when this test process does, even if the `Server` is never dropped
        // (a `static` fixture): see PARENT_PID_ENV in src/server/mod.rs.
        cmd.env("SWITCHYARD_PARENT_PID", std::process::id().to_string());
        let mut child = cmd.spawn().expect("start switchyard serve");
        record_server_pid(child.id());
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // The server prints the scoring plane, the gRPC plane when it is on, then the admin plane.
        let (mut scoring, mut admin, mut grpc) = (None, None, None);
        while scoring.is_none() || admin.is_none() {
            let line = lines.next().expect("server exited before printing its addresses").unwrap();
            if let Some(a) = line.strip_prefix("Scoring plane: ") {
                scoring = Some(a.trim().to_string());
            } else if let Some(a) = line.strip_prefix("Admin plane: ") {
                admin = Some(a.trim().to_string());
            } else if let Some(a) = line.strip_prefix("gRPC plane: ") {
                grpc = Some(a.trim().to_string());
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, scoring: scoring.unwrap(), admin: admin.unwrap(), grpc, agent: agent() }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_stop();
        self.child.wait().unwrap()
    }

    /// Sends SIGTERM, without waiting (the drain is tested meanwhile; then `wait_exit`).
    #[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
    pub(crate) fn signal_stop(&self) {
        // SAFETY: kill(2) with a pid we own and a valid signal number.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
    }

    /// Waits for the process to end by itself (a test that crashes it).
    pub(crate) fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// How the process ended, if it did within `limit` (`None`: still running).
    pub(crate) fn wait_exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    pub(crate) fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits until the scoring plane reports ready (a restored state is live).
    pub(crate) fn wait_ready(&self) {
        self.wait_readiness(200, Duration::from_secs(60));
    }

    /// Waits until `/health/ready` answers `status` (503: not ready, e.g. shutting down).
    pub(crate) fn wait_readiness(&self, status: u16, limit: Duration) {
        eventually(&format!("/health/ready answers {status}"), limit, || {
            let r = self.get("/health/ready");
            if r.status == status {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        });
    }

    /// Runs the CLI against this server.
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("SWITCHYARD_ADMIN_URL", &self.admin)
            .current_dir(repo())
            .output()
            .expect("run switchyard CLI")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub(crate) fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "switchyard {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs the CLI, asserts success and parses its JSON output.
    pub(crate) fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("switchyard {args:?} printed no JSON ({e}): {out}"))
    }

    /// Runs the CLI and asserts failure; returns stderr.
    pub(crate) fn cli_err(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(!out.status.success(), "switchyard {args:?} should fail: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// Live requests deployment `name` has admitted and not answered (`GET /v1/metrics`).
    pub(crate) fn inflight(&self, name: &str) -> u64 {
        let m = self.admin("GET", "/v1/metrics", None).json();
        let d = m["deployments"].as_array().and_then(|ds| ds.iter().find(|d| d["name"] == name).cloned());
        d.and_then(|d| d["inflight"].as_u64()).unwrap_or(0)
    }

    /// Waits until deployment `name` has exactly `n` live requests in flight.
    pub(crate) fn wait_inflight(&self, name: &str, n: u64) {
        eventually(&format!("{n} request(s) in flight on {name}"), Duration::from_secs(10), || {
            let now = self.inflight(name);
            if now == n {
                Ok(())
            } else {
                Err(format!("{now} in flight"))
            }
        });
    }

    pub(crate) fn admin(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string().into_bytes());
        http(
            &self.agent,
            method,
            &format!("{}{path}", self.admin),
            &[("Content-Type", "application/json")],
            body.as_deref(),
        )
    }

    /// The names of the server's endpoints (`GET /v1/endpoints`), in its order.
    pub(crate) fn endpoint_names(&self) -> Vec<String> {
        let listed = self.admin("GET", "/v1/endpoints", None).json();
        listed.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap_or_default().to_string()).collect()
    }

    /// Endpoint `endpoint`'s primary key.
    pub(crate) fn key_of(&self, endpoint: &str) -> String {
        let keys = self.admin("GET", &format!("/v1/endpoints/{endpoint}/keys"), None).json();
        keys["primaryKey"].as_str().unwrap().to_string()
    }

    pub(crate) fn primary_key(&self) -> String {
        self.admin("GET", "/v1/endpoint/keys", None).json()["primaryKey"].as_str().unwrap().to_string()
    }

    /// POST /score with the given headers.
    pub(crate) fn score(&self, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        http(&self.agent, "POST", &format!("{}/score", self.scoring), &h, Some(body))
    }

    /// POST /score with the primary key.
    pub(crate) fn score_authed(&self, key: &str, body: &[u8], pin: Option<&str>) -> Reply {
        let auth = format!("Bearer {key}");
        let mut h = vec![("Authorization", auth.as_str())];
        if let Some(p) = pin {
            h.push(("azureml-model-deployment", p));
        }
        self.score(body, &h)
    }

    pub(crate) fn get(&self, path: &str) -> Reply {
        http(&self.agent, "GET", &format!("{}{path}", self.scoring), &[], None)
    }

    /// Creates the endpoint (seed endpoint.yml) through the admin API.
    pub(crate) fn create_endpoint(&self) {
        let r =
            self.admin("PUT", "/v1/endpoint", Some(&serde_json::json!({"name": "my-endpoint", "auth_mode": "key"})));
        assert_eq!(r.status, 201, "{}", r.body);
    }

    /// Creates a deployment of a shipped model and waits until it is Succeeded.
    pub(crate) fn deploy(&self, name: &str, model: &str, extra: Value) -> Value {
        let mut doc = serde_json::json!({"name": name, "model": {"path": repo().join("models").join(model)}});
        if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                d.insert(k.clone(), v.clone());
            }
        }
        let r = self.admin("PUT", &format!("/v1/deployments/{name}"), Some(&doc));
        assert!(r.status == 201 || r.status == 200, "{}", r.body);
        self.wait_state(name, "Succeeded")
    }

    /// Waits (on the server's `?wait`, so without polling) until a deployment reaches `state`,
    /// failing the test after 60 s.
    pub(crate) fn wait_state(&self, name: &str, state: &str) -> Value {
        self.wait_state_at("/v1/deployments", name, state)
    }

    /// [`wait_state`](Self::wait_state) for a deployment of endpoint `endpoint`.
    pub(crate) fn wait_state_in(&self, endpoint: &str, name: &str, state: &str) -> Value {
        self.wait_state_at(&format!("/v1/endpoints/{endpoint}/deployments"), name, state)
    }

    fn wait_state_at(&self, deployments: &str, name: &str, state: &str) -> Value {
        eventually(&format!("deployment {name} is {state}"), Duration::from_secs(60), || {
            let v = self.admin("GET", &format!("{deployments}/{name}?wait=10"), None).json();
            if v["provisioning_state"] == state {
                Ok(v)
            } else {
                Err(v.to_string())
            }
        })
    }

    pub(crate) fn set_traffic(&self, traffic: Value) -> Reply {
        self.admin("PATCH", "/v1/endpoint", Some(&serde_json::json!({ "traffic": traffic })))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// With `SWITCHYARD_TEST_PID_DIR` set (scripts/test.sh sets it), notes each server's pid there,
/// so the script can check after the test binaries exit that none of them is still running.
/// The file holds the process's start time (field 22 of `/proc/<pid>/stat`), which with the
/// pid names this very process (a reused pid starts later). Not its environment: the server
/// is not dumpable, so another user's process, or one without CAP_SYS_PTRACE, cannot read it.
pub(crate) fn record_server_pid(pid: u32) {
    if let Some(dir) = std::env::var_os("SWITCHYARD_TEST_PID_DIR") {
        let started = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(19).map(str::to_string))
            })
            .unwrap_or_default();
        let _ = std::fs::write(Path::new(&dir).join(pid.to_string()), started);
    }
}

/// Parses a JSON list of numbers.
pub(crate) fn numbers(body: &str) -> Vec<f64> {
    serde_json::from_str::<Vec<f64>>(body).unwrap_or_else(|e| panic!("expected a list of numbers ({e}): {body}"))
}

pub(crate) fn assert_model_1(body: &str) {
    let got = numbers(body);
    assert_eq!(got.len(), 2, "{body}");
    for (g, w) in got.iter().zip(MODEL_1_ANSWER) {
        assert!(((g - w) / w).abs() <= 1e-9, "model-1 answered {got:?}, expected {MODEL_1_ANSWER:?}");
    }
}

/// A model folder holding a file that is not an ONNX model.
pub(crate) fn broken_model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.onnx"), b"this is not an onnx model").unwrap();
    dir
}

pub(crate) fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// Clients that keep sending one request to `/score` until stopped: the one load harness of
/// the tests that change things under traffic.
pub(crate) struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sent: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    statuses: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<u16, usize>>>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub(crate) struct LoadReport {
    pub total: usize,
    pub ok: usize,
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// The first non-200 answers (status, serving deployment, body), at most 20.
    pub failures: Vec<String>,
}

impl Load {
    /// Starts `clients` threads sending `body` with `key` (unpinned), each request on a new
    /// round as soon as the last one is answered.
    pub(crate) fn start(server: &std::sync::Arc<Server>, clients: usize, key: &str, body: Vec<u8>) -> Self {
        use std::sync::atomic::Ordering;
        let load = Load {
            stop: Default::default(),
            sent: Default::default(),
            statuses: Default::default(),
            failures: Default::default(),
            clients: Vec::new(),
        };
        let clients = (0..clients)
            .map(|_| {
                let (s, key, body) = (server.clone(), key.to_string(), body.clone());
                let (stop, sent, statuses, failures) =
                    (load.stop.clone(), load.sent.clone(), load.statuses.clone(), load.failures.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = s.score_authed(&key, &body, None);
                        *statuses.lock().unwrap().entry(r.status).or_default() += 1;
                        if r.status != 200 {
                            let mut f = failures.lock().unwrap();
                            if f.len() < 20 {
                                f.push(format!("{} {:?} {}", r.status, r.header("azureml-model-deployment"), r.body));
                            }
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Load { clients, ..load }
    }

    /// Requests answered so far.
    pub(crate) fn sent(&self) -> usize {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests have been answered (traffic flowed over the last change).
    pub(crate) fn wait_for_more(&self, n: usize) {
        let before = self.sent();
        eventually(&format!("{n} more requests"), Duration::from_secs(60), || {
            let now = self.sent();
            if now >= before + n {
                Ok(())
            } else {
                Err(format!("{} answered", now - before))
            }
        });
    }

    /// Stops the clients and reports.
    pub(crate) fn stop(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for c in self.clients {
            c.join().unwrap();
        }
        let statuses = self.statuses.lock().unwrap().clone();
        let total = statuses.values().sum();
        let ok = statuses.get(&200).copied().unwrap_or(0);
        LoadReport { total, ok, statuses, failures: self.failures.lock().unwrap().clone() }
    }
}

/// The tests' plain Python venv (`target/python-test-venv`, pinned by
/// runtime/python/test-requirements.txt), made by scripts/setup.sh on first use; its python.
pub(crate) fn test_venv_python() -> String {
    static SETUP: std::sync::Once = std::sync::Once::new();
    let python = repo().join("target/python-test-venv/bin/python");
    SETUP.call_once(|| {
        let status = Command::new(repo().join("scripts/setup.sh"))
            .env("SWITCHYARD_SKIP_BUILD", "1")
            .status()
            .expect("run scripts/setup.sh");
        assert!(status.success(), "scripts/setup.sh failed");
    });
    assert!(python.is_file(), "scripts/setup.sh did not make {}", python.display());
    path_str(&python)
}
