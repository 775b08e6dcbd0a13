//! Observability: the process log (`tracing`), per-deployment log rings and Prometheus metrics.
#![forbid(unsafe_code)]

pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod rate;
pub(crate) mod samples;
pub(crate) mod sharded;
pub(crate) mod window;

pub(crate) use logs::LogRing;
pub(crate) use metrics::BatchMetrics;
pub use metrics::Metrics;
pub(crate) use metrics::{DeploymentMetrics, MirrorGauges, Role};
pub(crate) use window::Reading;

/// Sets up the process log on stderr: text by default, JSON with `SWITCHYARD_LOG_FORMAT=json`;
/// the filter comes from `RUST_LOG`. By default lifecycle events are logged at `info` and the
/// per-request access lines (target `switchyard::access`) are off, since writing a line per
/// request to stderr costs more than scoring model-1; `RUST_LOG=info` turns them on. The
/// per-deployment log ring (`get-logs`) always has them. Colour codes are written only when
/// stderr is a terminal: a container runtime, a Kubernetes log collector or a file would store
/// them as literal `ESC[..m` noise in every line.
pub(crate) fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn,switchyard::access=off"));
    // A log line that cannot be written (stderr closed or a pipe nobody reads) is dropped:
    // `log_internal_errors` would report it with `eprintln!`, which panics on that same stderr
    // and took the whole server down at its first log line.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    let result = if std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A second init (tests, embedding) keeps the first subscriber: nothing to report.
    let _ = result;
}
