//! A small blocking HTTP client for the admin API and `invoke`.

use std::time::Duration;

use serde_json::Value;

use super::GlobalArgs;

/// One HTTP answer.
pub(super) struct Reply {
    pub status: u16,
    pub body: String,
}

impl Reply {
    /// The body as JSON (or a JSON string of the text when it is not JSON).
    pub(super) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| Value::String(self.body.clone()))
    }

    /// `Ok(json)` for 2xx; otherwise the server's message.
    pub(super) fn ok_json(self) -> Result<Value, String> {
        if (200..300).contains(&self.status) {
            Ok(self.json())
        } else {
            Err(self.error_text())
        }
    }

    /// The server's `message` (or the raw body) as `az` prints a service error:
    /// `(ResourceNotFound) message`, then `Code:`, `Message:` and `Status:` lines.
    pub(super) fn error_text(&self) -> String {
        let message = serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v.get("message").or_else(|| v.get("error")).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| self.body.trim().to_string());
        let text = az_error(self.status, &message);
        match cli_hint(&message) {
            Some(hint) => format!("{text}\n{hint}"),
            None => text,
        }
    }
}

/// The command that does what a refusal asks, by a phrase of the admin API's message. The
/// admin API's messages say what to change in API terms (the SDK and the studio show them too);
/// the CLI adds its own commands. Each phrase is checked against the server's sources by a test.
const HINTS: [(&str, &str); 8] = [
    ("hosts no endpoint", "Create one with `switchyard online-endpoint create -f endpoint.yml`."),
    ("abort the rollout", "Abort it with `switchyard online-endpoint rollout abort`."),
    (
        "no rollout has been started",
        "Start one with `switchyard online-endpoint rollout --to NAME --steps mirror:10,10,25,50,100 --step-duration 60s`.",
    ),
    ("live traffic", "Move traffic with `switchyard online-endpoint update --traffic \"NAME=100\"`."),
    ("failed to load", "Replace it with `switchyard online-deployment update -f DEPLOYMENT.yml`, or delete it."),
    ("current operation finishes", "Follow it with `switchyard online-deployment show -n NAME`."),
    ("register the model first", "Register it with `switchyard model create --name NAME --path FOLDER`."),
    ("register the environment first", "Register it with `switchyard environment create -f env.yml`."),
];

fn cli_hint(message: &str) -> Option<&'static str> {
    HINTS.iter().find(|(phrase, _)| message.contains(phrase)).map(|(_, hint)| *hint)
}

/// The error code `az` shows for an HTTP status (Azure Resource Manager's names where it has
/// one, the status's own name otherwise).
pub(super) fn error_code(status: u16) -> String {
    match status {
        400 => "BadRequest".into(),
        401 => "Unauthorized".into(),
        403 => "Forbidden".into(),
        404 => "ResourceNotFound".into(),
        408 => "RequestTimeout".into(),
        409 => "Conflict".into(),
        413 => "RequestEntityTooLarge".into(),
        424 => "FailedDependency".into(),
        429 => "TooManyRequests".into(),
        500 => "InternalServerError".into(),
        503 => "ServiceUnavailable".into(),
        other => format!("HttpStatus{other}"),
    }
}

/// An error as `az` prints a service's (`(Code) message`, `Code: ...`, `Message: ...`), plus
/// the HTTP status, which scripts written against this CLI read.
pub(super) fn az_error(status: u16, message: &str) -> String {
    let code = error_code(status);
    format!("({code}) {message}\nCode: {code}\nMessage: {message}\nStatus: {status}")
}

/// Talks to one server's admin API.
pub(super) struct AdminClient {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
    /// `--verbose`: one stderr line per request; `--debug`: also the answer's status and size.
    verbose: bool,
    debug: bool,
}

impl AdminClient {
    /// A client for `--server` / `SWITCHYARD_ADMIN_URL`.
    pub(super) fn new(global: &GlobalArgs) -> Self {
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
    pub(super) fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
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

    /// Sends a file's bytes as the body (`application/octet-stream`), streamed from disk.
    pub(super) fn send_file(&self, method: &str, path: &str, file: std::fs::File) -> Result<Reply, String> {
        let url = format!("{}{path}", self.base);
        let mut builder =
            ureq::http::Request::builder().method(method).uri(&url).header("Content-Type", "application/octet-stream");
        if let Some(t) = &self.token {
            builder = builder.header("Authorization", format!("Bearer {t}"));
        }
        let request = builder.body(ureq::SendBody::from_owned_reader(file)).map_err(|e| e.to_string())?;
        if self.verbose || self.debug {
            eprintln!("INFO: {method} {url}");
        }
        let mut response = self
            .agent
            .run(request)
            .map_err(|e| format!("cannot reach the Switchyard admin API at {}: {e}", self.base))?;
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().map_err(|e| e.to_string())?;
        Ok(Reply { status, body })
    }

    /// Any HTTP request (used by `invoke` for the scoring plane).
    pub(super) fn send(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hint_phrase_is_in_a_message_the_admin_api_sends() {
        let sources = [
            include_str!("../control/endpoint.rs"),
            include_str!("../control/deployments.rs"),
            include_str!("../control/rollout.rs"),
            include_str!("../assets/mod.rs"),
        ]
        .concat();
        for (phrase, _) in HINTS {
            assert!(sources.contains(phrase), "no admin API message says {phrase:?}: reword the hint");
        }
    }

    #[test]
    fn errors_read_as_az_prints_them_with_the_clis_hint() {
        let reply =
            Reply { status: 404, body: r#"{"message": "this server hosts no endpoint: create one first"}"#.into() };
        assert_eq!(
            reply.error_text(),
            "(ResourceNotFound) this server hosts no endpoint: create one first\nCode: ResourceNotFound\n\
             Message: this server hosts no endpoint: create one first\nStatus: 404\n\
             Create one with `switchyard online-endpoint create -f endpoint.yml`."
        );
        let reply = Reply { status: 418, body: "teapot".into() };
        assert_eq!(reply.error_text(), "(HttpStatus418) teapot\nCode: HttpStatus418\nMessage: teapot\nStatus: 418");
    }
}
