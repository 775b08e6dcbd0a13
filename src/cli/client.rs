//! A small blocking HTTP client for the admin API and `invoke`.

use std::time::Duration;

use serde_json::Value;

use super::GlobalArgs;

/// One HTTP answer.
pub struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON (or a JSON string of the text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| Value::String(self.body.clone()))
    }

    /// `Ok(json)` for 2xx; otherwise the server's message.
    pub fn ok_json(self) -> Result<Value, String> {
        if (200..300).contains(&self.status) {
            Ok(self.json())
        } else {
            Err(self.error_text())
        }
    }

    /// The server's `message`, or the raw body.
    pub fn error_text(&self) -> String {
        let message = serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| self.body.trim().to_string());
        format!("({}) {message}", self.status)
    }
}

/// Talks to one server's admin API.
pub struct AdminClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    /// `--verbose`: one stderr line per request; `--debug`: also the answer's status and size.
    verbose: bool,
    debug: bool,
}

impl AdminClient {
    /// A client for `--server` / `SWITCHYARD_ADMIN_URL`.
    pub fn new(global: &GlobalArgs) -> Self {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            base: global.server.trim_end_matches('/').to_string(),
            token: global.admin_token.clone(),
            verbose: global.verbose,
            debug: global.debug,
        }
    }

    /// A request to the admin API. `path` starts with `/`.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let url = format!("{}{path}", self.base);
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("Authorization".to_string(), format!("Bearer {t}")));
        }
        let body = body.map(|b| b.to_string().into_bytes());
        self.send(method, &url, &headers, body.as_deref()).map_err(|e| {
            format!("cannot reach the Switchyard admin API at {}: {e} (start `switchyard serve`, or set --server / SWITCHYARD_ADMIN_URL)", self.base)
        })
    }

    /// Any HTTP request (used by `invoke` for the scoring plane).
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(String, String)],
        body: Option<&[u8]>,
    ) -> Result<Reply, String> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let request = builder.body(body.map(<[u8]>::to_vec).unwrap_or_default()).map_err(|e| e.to_string())?;
        if self.verbose || self.debug {
            eprintln!("INFO: {method} {url}");
        }
        let started = std::time::Instant::now();
        let mut response = self.agent.run(request).map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        if self.debug {
            eprintln!("DEBUG: {method} {url} -> {status}, {} bytes in {:?}", body.len(), started.elapsed());
        }
        Ok(Reply { status, body })
    }
}
