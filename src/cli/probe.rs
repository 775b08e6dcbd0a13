//! `switchyard probe`: a health check that needs no shell tools (the container image's
//! `HEALTHCHECK`, or an exec probe): GET the scoring plane's `/health/ready` and exit 0 when it
//! answers 200, 1 otherwise, with one line saying why.

use std::time::Duration;

use clap::Args;

/// The scoring plane's default address inside the container.
pub(super) const DEFAULT_URL: &str = "http://127.0.0.1:5001";

#[derive(Args, Debug)]
pub struct ProbeArgs {
    /// Scoring plane to check (its `/health/ready` is requested), or a full URL ending in a
    /// `/health/...` path.
    #[arg(long, default_value = DEFAULT_URL)]
    pub url: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout_secs: u64,
}

/// The URL that is requested: `--url` as given when it already names a `/health/` path,
/// otherwise its `/health/ready`; `host:port` alone means `http://host:port`.
pub(super) fn target(url: &str) -> String {
    let base = url.trim_end_matches('/');
    let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
    if base.contains("/health/") {
        base
    } else {
        format!("{base}/health/ready")
    }
}

/// Runs the probe; `Ok` carries the line printed on success.
pub(super) fn run(args: &ProbeArgs) -> Result<String, String> {
    let url = target(&args.url);
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(args.timeout_secs)))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent.get(&url).call().map_err(|e| format!("{url}: not reachable: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    let body = body.trim();
    let shown: String = body.chars().take(200).collect();
    if status == 200 {
        Ok(format!("{url}: {status} {shown}"))
    } else {
        Err(format!("{url}: not ready ({status}) {shown}"))
    }
}

#[cfg(test)]
mod tests {
    use super::target;

    #[test]
    fn target_appends_the_readiness_path_unless_one_is_given() {
        assert_eq!(target("http://127.0.0.1:5001"), "http://127.0.0.1:5001/health/ready");
        assert_eq!(target("http://h:1/"), "http://h:1/health/ready");
        assert_eq!(target("http://h:1/health/live"), "http://h:1/health/live");
        assert_eq!(target("127.0.0.1:5001"), "http://127.0.0.1:5001/health/ready");
    }
}
