//! Observability: the process log (`tracing`), per-deployment log rings and Prometheus metrics.
#![forbid(unsafe_code)]

pub(crate) mod logs;
pub(crate) mod metrics;
pub(crate) mod rate;
pub(crate) mod samples;
pub(crate) mod sharded;
pub(crate) mod traces;
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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,ort=warn,switchyard::access=off"));
    // The spans meant for export never reach the process log, whatever target `RUST_LOG`
    // enables (a span-name directive, `[run]=debug`, is checked before targets and can still
    // show them).
    let filter = match traces::LOG_DIRECTIVE.parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    // A log line that cannot be written (stderr closed or a pipe nobody reads) is dropped:
    // `log_internal_errors` would report it with `eprintln!`, which panics on that same stderr
    // and took the whole server down at its first log line.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .log_internal_errors(false);
    let log: Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync> =
        if std::env::var("SWITCHYARD_LOG_FORMAT").is_ok_and(|v| v == "json") {
            fmt.json().with_filter(filter).boxed()
        } else {
            fmt.with_filter(filter).boxed()
        };
    let (export, said) = traces::layer();
    // Without the export layer, the log layer alone over the registry: an absent layer
    // (`Option::None`) in the stack would turn the log filter's "never" for the callsites it
    // switches off (the trace spans, the access lines) into "sometimes", and each of them would
    // be filtered again on every request (measured: +2,600 instructions per request).
    let installed = match export {
        Some(export) => tracing_subscriber::registry().with(log).with(export).try_init().is_ok(),
        None => tracing_subscriber::registry().with(log).try_init().is_ok(),
    };
    // A second init (tests, embedding) keeps the first subscriber: nothing to report, and the
    // exporter made for nothing is stopped.
    if !installed {
        traces::shutdown(std::time::Duration::ZERO);
        return;
    }
    match said {
        Some(Ok(said)) => {
            traces::started();
            tracing::info!("{said}");
        }
        Some(Err(why)) => tracing::warn!("{why}"),
        None => {}
    }
}
