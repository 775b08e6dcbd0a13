//! OpenTelemetry traces (issue 30): the spans of target [`TARGET`] exported over OTLP, configured
//! the standard way, and off unless an OTLP endpoint is configured.
//!
//! Why this shape:
//! - **Off costs nothing measurable.** Without an endpoint no layer is installed, and the process
//!   log's filter turns [`TARGET`] off, so every span macro of that target has the callsite
//!   interest "never": a request pays a relaxed load per macro. The few places that would do
//!   more (the request span's future wrapper, copying a span handle into a queued run) test
//!   [`on`] first. Measured with `benches/callgrind_ir.py` (BENCHMARKS.md).
//! - **The standard variables, read by the SDK itself**: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`
//!   (default here `switchyard`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER(_ARG)`,
//!   `OTEL_BSP_*`. `OTEL_SDK_DISABLED=true` and `OTEL_TRACES_EXPORTER=none` keep traces off.
//! - **OTLP over HTTP/protobuf**, the protocol's default transport, with the exporter's own
//!   blocking client on the batch processor's own thread: nothing of the export runs on the
//!   scoring threads. `OTEL_EXPORTER_OTLP_PROTOCOL=grpc` (or `http/json`) is refused with a
//!   warning and traces stay off, rather than sending protobuf-over-HTTP to a gRPC port and
//!   losing every span silently.
//! - **Spans outlive threads.** A request's stages run on its task, on blocking threads (long
//!   runs), on a batch collector's thread and on the shadow's threads; a span is a handle that
//!   is created where a stage starts and dropped where it ends, and the exported times are
//!   those two moments, whichever threads they were on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry::Context;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of every span meant for export: no other span or event is exported, and the
/// process log never sees these.
pub(crate) const TARGET: &str = "switchyard::trace";

/// The process log's directive that keeps [`TARGET`] out of it, whatever `RUST_LOG` says.
pub(crate) const LOG_DIRECTIVE: &str = "switchyard::trace=off";

static ON: AtomicBool = AtomicBool::new(false);
static PROVIDER: OnceLock<Mutex<Option<SdkTracerProvider>>> = OnceLock::new();

/// Whether traces are exported (an OTLP endpoint was configured and the exporter was made).
#[inline]
pub(crate) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Why traces are off, or the settings they are on with.
#[derive(Debug, PartialEq)]
pub(crate) enum Config {
    Off,
    /// Configured but not usable here: said once in the log, traces stay off.
    Refused(String),
    /// Export to the endpoint the SDK reads from the environment.
    On {
        endpoint: String,
    },
}

/// Reads the standard variables (`get` is the environment; injected in tests).
pub(crate) fn config(get: impl Fn(&str) -> Option<String>) -> Config {
    let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    if set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
        return Config::Off;
    }
    if set("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none")) {
        return Config::Off;
    }
    let Some(endpoint) = set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| set("OTEL_EXPORTER_OTLP_ENDPOINT"))
    else {
        return Config::Off;
    };
    let protocol = set("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| set("OTEL_EXPORTER_OTLP_PROTOCOL"));
    if let Some(p) = protocol.filter(|p| p.trim() != "http/protobuf") {
        return Config::Refused(format!(
            "OTEL_EXPORTER_OTLP_PROTOCOL={p:?} is not supported: Switchyard exports traces over http/protobuf (the OTLP default; a collector listens for it on port 4318); traces are off"
        ));
    }
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        return Config::Refused(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?} is not an http:// or https:// URL (e.g. http://localhost:4318); traces are off"
        ));
    }
    if endpoint.starts_with("https://") {
        return Config::Refused(format!(
            "OTEL_EXPORTER_OTLP_ENDPOINT={endpoint:?}: this build exports over plain http only (run the collector beside it, e.g. http://localhost:4318); traces are off"
        ));
    }
    Config::On { endpoint }
}

/// The layer that exports [`TARGET`]'s spans, when the environment configures an endpoint;
/// called once, by the process log's setup. What to say of it once the log exists comes with
/// it: `Ok` to log as information, `Err` as a warning (configured, and refused).
#[allow(clippy::type_complexity)]
pub(crate) fn layer<S>() -> (Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>, Option<Result<String, String>>)
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a> + Send + Sync,
{
    use tracing_subscriber::Layer;
    let endpoint = match config(|name| std::env::var(name).ok()) {
        Config::Off => return (None, None),
        Config::Refused(why) => return (None, Some(Err(why))),
        Config::On { endpoint } => endpoint,
    };
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_http().build() {
        Ok(e) => e,
        Err(e) => {
            return (None, Some(Err(format!("cannot make the OTLP exporter for {endpoint}: {e}; traces are off"))))
        }
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named {
        resource = resource.with_service_name("switchyard");
    }
    let (sampling, said_of_sampler) = Sampling::from(|name| std::env::var(name).ok());
    if let Some(why) = said_of_sampler.as_ref().filter(|why| why.contains("OTEL_TRACES_SAMPLER_ARG")) {
        return (None, Some(Err(format!("{why}; traces are off until it is fixed"))));
    }
    let _ = SAMPLING.set(sampling);
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // Decided at the head ([`keep`]): the spans made are the ones to keep (a mirror copy
        // of a kept request, a rollout's events too).
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .with_id_generator(KeptIds::new(sampling.ratio()))
        .with_resource(
            resource.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build(),
        )
        .build();
    let tracer = provider.tracer("switchyard");
    let _ = PROVIDER.get_or_init(|| Mutex::new(Some(provider)));
    // INFO, the level of every span here: a lower one would raise the subscriber's max level
    // hint, and every debug and trace callsite of the dependencies would be filtered per call.
    let only_ours = tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::INFO);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Thread names and source locations on every span cost more than they tell here; and
        // busy/idle time would be measured on every enter and exit of the request's future.
        .with_threads(false)
        .with_location(false)
        // Every span here has the same target: a `target` attribute would repeat it in each.
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(only_ours);
    let mut said = format!("traces are exported over OTLP (http/protobuf) to {endpoint}");
    if let Some(why) = said_of_sampler {
        said.push_str(&format!("; {why}"));
    }
    (Some(Box::new(layer)), Some(Ok(said)))
}

/// Whether the code running now is part of a traced request: traces on, and the current span
/// is one of ours (the front door enters a request's span only when its trace is sampled, so an
/// unsampled request makes no stage spans at all).
pub(crate) fn traced_here() -> bool {
    on() && tracing::Span::current().metadata().is_some_and(|m| m.target() == TARGET)
}

/// A stage of the traced request running now (see [`traced_here`]): a child of its span, or
/// nothing.
macro_rules! stage {
    ($name:literal) => {
        if $crate::telemetry::traces::traced_here() {
            tracing::info_span!(target: $crate::telemetry::traces::TARGET, $name, otel.status_code = tracing::field::Empty)
        } else {
            tracing::Span::none()
        }
    };
}
pub(crate) use stage;

/// A request's stages that go on on another thread (a queued run, a batch): its wait, which
/// ends when its run starts, and the request's context, which the run's span is a child of.
/// The context, not the request's span itself: a handle on the span would keep it open (and
/// unexported) for as long as the run, and a run that outlives its request (a 408, a hung
/// plugin) would hold it back, or lose it.
pub(crate) struct Handoff {
    queue: Arc<Mutex<Option<tracing::Span>>>,
    parent: Context,
}

/// The request's hold on its wait: dropped (answered, timed out, gone), it ends the `queue`
/// span if the run has not started, so a wait never outlives its request.
pub(crate) struct Waiting(Arc<Mutex<Option<tracing::Span>>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        drop(self.0.lock().unwrap_or_else(|e| e.into_inner()).take());
    }
}

impl Handoff {
    /// With traces on: the wait starts now, under the current span (the request's). The
    /// hand-off goes with the run; the caller keeps the [`Waiting`] until it has its answer.
    pub(crate) fn begin() -> Option<(Box<Handoff>, Waiting)> {
        if !traced_here() {
            return None;
        }
        let queue = Arc::new(Mutex::new(Some(tracing::info_span!(target: TARGET, "queue"))));
        let parent = tracing::Span::current().context();
        Some((Box::new(Handoff { queue: Arc::clone(&queue), parent }), Waiting(queue)))
    }

    /// The wait ends and the run's span starts (it ends when dropped).
    pub(crate) fn run(self) -> tracing::Span {
        self.end_wait();
        self.parent_of(tracing::info_span!(target: TARGET, parent: None, "run"))
    }

    /// As [`run`](Self::run), for a run of `requests` stacked requests, `rows` rows in all.
    pub(crate) fn run_batch(self, requests: usize, rows: usize) -> tracing::Span {
        self.end_wait();
        // As i64: the OpenTelemetry layer writes a u64 as text.
        let (requests, rows) = (requests as i64, rows as i64);
        self.parent_of(
            tracing::info_span!(target: TARGET, parent: None, "run", batch_requests = requests, batch_rows = rows),
        )
    }

    fn end_wait(&self) {
        drop(self.queue.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    fn parent_of(self, span: tracing::Span) -> tracing::Span {
        let _ = span.set_parent(self.parent);
        span
    }
}

/// Traces are on from now: called once the layer is installed.
pub(crate) fn started() {
    ON.store(true, Ordering::Relaxed);
}

/// Sends the spans still queued, within `limit` (at the end of `serve`, after the drain), and
/// stops the exporter.
pub(crate) fn shutdown(limit: Duration) {
    let Some(slot) = PROVIDER.get() else { return };
    let Some(provider) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
    ON.store(false, Ordering::Relaxed);
    if let Err(e) = provider.shutdown_with_timeout(limit) {
        tracing::warn!(error = %e, "some spans could not be exported before the server stopped");
    }
}

/// The W3C `traceparent` of `span` (for a hook's request headers), when it belongs to a trace.
pub(crate) fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8()))
}

/// The W3C trace context a caller sent (`traceparent`, and `tracestate` with it), as a parent:
/// `None` when there is none or it is malformed (a new trace starts, as the W3C spec says).
/// Parsed here, by the spec's rules, rather than through the SDK's propagator, which wants its
/// own carrier type: the front door has the header values in hand.
pub(crate) fn remote_parent(traceparent: &[u8], tracestate: Option<&[u8]>) -> Option<SpanContext> {
    let text = std::str::from_utf8(traceparent).ok()?.trim();
    let mut parts = text.split('-');
    let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    // Version 00 has exactly four parts; a later version may add parts after these.
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !hex(version, 2) || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let sc = SpanContext::new(trace_id, span_id, TraceFlags::new(flags & 1), true, state);
    sc.is_valid().then_some(sc)
}

/// The `traceparent` a hook gets for a request that is not traced while traces are on: the
/// caller's trace id (or a new one) with the sampled flag clear, so a script's own tracer does
/// not start a trace of its own for a request this server dropped.
pub(crate) fn not_traced(caller: Option<SpanContext>) -> String {
    let trace = caller
        .map_or_else(|| format!("{:016x}{:016x}", fastrand::u64(1..), fastrand::u64(..)), |c| c.trace_id().to_string());
    format!("00-{trace}-{:016x}-00", fastrand::u64(1..))
}

/// How traces are sampled: `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`, read here and
/// decided at the front door before any span is made (the SDK itself then keeps every span it
/// is given). The same samplers and the same decisions as the SDK's: a parent-based sampler
/// follows the caller's sampled flag; a trace-id ratio keeps a caller's trace id by its last 8
/// bytes, as OpenTelemetry's `TraceIdRatioBased` does, so services sharing a trace agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampling {
    root: Root,
    parent_based: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Root {
    Always,
    Never,
    /// Keep this share (0 to 1).
    Ratio(f64),
}

static SAMPLING: OnceLock<Sampling> = OnceLock::new();

impl Sampling {
    /// From the standard variables. What cannot be used is said: a sampler this SDK does not
    /// have falls back to `parentbased_always_on` (as the SDK does); a ratio that is not one
    /// keeps traces off rather than keep a share nobody asked for.
    pub(crate) fn from(get: impl Fn(&str) -> Option<String>) -> (Sampling, Option<String>) {
        let default = Sampling { root: Root::Always, parent_based: true };
        let Some(name) = get("OTEL_TRACES_SAMPLER").map(|v| v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty())
        else {
            return (default, None);
        };
        // An empty value is as unset (the OpenTelemetry spec; Helm charts write them).
        let arg = get("OTEL_TRACES_SAMPLER_ARG").filter(|v| !v.trim().is_empty());
        let mut said = None;
        let mut ratio = || match arg.as_deref().map(str::trim).map(str::parse::<f64>) {
            Some(Ok(r)) if (0.0..=1.0).contains(&r) => Root::Ratio(r),
            // The spec's default ratio when none is given.
            None => Root::Always,
            Some(_) => {
                said = Some(format!(
                    "OTEL_TRACES_SAMPLER_ARG={:?} is not a ratio from 0 to 1 (e.g. 0.1)",
                    arg.clone().unwrap_or_default()
                ));
                Root::Always
            }
        };
        let sampling = match name.as_str() {
            "always_on" => Sampling { root: Root::Always, parent_based: false },
            "always_off" => Sampling { root: Root::Never, parent_based: false },
            "traceidratio" => Sampling { root: ratio(), parent_based: false },
            "parentbased_always_on" => default,
            "parentbased_always_off" => Sampling { root: Root::Never, parent_based: true },
            "parentbased_traceidratio" => Sampling { root: ratio(), parent_based: true },
            // As the SDK does: a sampler it does not have (jaeger_remote, xray, ...) falls back,
            // said once (a fleet-wide setting meant for other services keeps traces on here).
            other => {
                said = Some(format!(
                    "OTEL_TRACES_SAMPLER={other:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio: parentbased_always_on is used"
                ));
                default
            }
        };
        (sampling, said)
    }

    /// The share of new traces kept (1 when not a ratio).
    fn ratio(&self) -> f64 {
        match self.root {
            Root::Ratio(r) => r,
            Root::Always | Root::Never => 1.0,
        }
    }

    /// Whether a request continuing `parent` (or starting a trace) is traced.
    fn keep(&self, parent: Option<&SpanContext>) -> bool {
        match (parent, self.root) {
            (Some(p), _) if self.parent_based => p.is_sampled(),
            (_, Root::Always) => true,
            (_, Root::Never) => false,
            (Some(p), Root::Ratio(r)) => keeps_trace_id(r, p.trace_id()),
            (None, Root::Ratio(r)) => fastrand::f64() < r,
        }
    }
}

/// OpenTelemetry's `TraceIdRatioBased` bound: a trace id is kept when its last 8 bytes
/// (big-endian), shifted right once, are below it.
fn ratio_bound(ratio: f64) -> u64 {
    (ratio.max(0.0) * (1u64 << 63) as f64) as u64
}

/// OpenTelemetry's `TraceIdRatioBased` decision for `trace_id`.
fn keeps_trace_id(ratio: f64, trace_id: TraceId) -> bool {
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..16]);
    (u64::from_be_bytes(low) >> 1) < ratio_bound(ratio)
}

/// Trace ids a `traceidratio` sampler at the configured ratio keeps: a new trace is kept by a
/// draw at the front door, and its id is then made in the kept range, so a service further
/// on (a scoring script with the same `OTEL_TRACES_SAMPLER`) that judges the id by the ratio
/// keeps the same traces. Random otherwise.
#[derive(Debug)]
struct KeptIds {
    /// `2 × bound`: the last 8 bytes are drawn below it (the whole range at ratio 1).
    below: u64,
}

impl KeptIds {
    fn new(ratio: f64) -> Self {
        KeptIds { below: ratio_bound(ratio).saturating_mul(2) }
    }
}

impl opentelemetry_sdk::trace::IdGenerator for KeptIds {
    fn new_trace_id(&self) -> TraceId {
        let high = fastrand::u64(..);
        let low =
            if self.below == 0 || self.below == u64::MAX { fastrand::u64(..) } else { fastrand::u64(..self.below) };
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&high.to_be_bytes());
        id[8..].copy_from_slice(&low.to_be_bytes());
        // Never the invalid all-zero id.
        if id == [0u8; 16] {
            id[0] = 1;
        }
        TraceId::from_bytes(id)
    }

    fn new_span_id(&self) -> SpanId {
        SpanId::from_bytes(fastrand::u64(1..).to_be_bytes())
    }
}

/// Whether a request continuing `parent` (or starting a new trace) is traced: traces on, and
/// the sampler keeps it.
pub(crate) fn keep(parent: Option<&SpanContext>) -> bool {
    on() && SAMPLING.get().is_some_and(|s| s.keep(parent))
}

/// A rollout's events: each a span of the rollout's own trace (its id derived from what names
/// the rollout, so every event of one rollout is in one trace, across restarts), carrying the
/// event's words.
pub(crate) fn rollout_event(rollout: &str, to: &str, message: &str) {
    if !on() {
        return;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(rollout.as_bytes());
    let mut trace = [0u8; 16];
    trace.copy_from_slice(&digest[..16]);
    let mut root = [0u8; 8];
    root.copy_from_slice(&digest[16..24]);
    let parent = SpanContext::new(
        TraceId::from_bytes(trace),
        SpanId::from_bytes(root),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    );
    let span = tracing::info_span!(target: TARGET, parent: None, "rollout", to, event = message);
    let _ = span.set_parent(Context::new().with_remote_span_context(parent));
    tracing::info!(target: TARGET, parent: &span, "{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn off_unless_an_endpoint_is_set_and_usable() {
        assert_eq!(config(env(&[])), Config::Off);
        assert_eq!(config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])), Config::Off);
        let on = config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]));
        assert_eq!(on, Config::On { endpoint: "http://c:4318".into() });
        let traces_only = config(env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/v1/traces")]));
        assert!(matches!(traces_only, Config::On { .. }));
        for off in [("OTEL_SDK_DISABLED", "true"), ("OTEL_TRACES_EXPORTER", "none")] {
            assert_eq!(config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), off])), Config::Off);
        }
        let grpc =
            config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]));
        assert!(matches!(&grpc, Config::Refused(why) if why.contains("http/protobuf")), "{grpc:?}");
        let bare = config(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]));
        assert!(matches!(&bare, Config::Refused(why) if why.contains("http://")), "{bare:?}");
    }

    #[test]
    fn samplers_decide_as_the_sdks_do() {
        let of = |sampler: &str, arg: &str| {
            Sampling::from(env(&[("OTEL_TRACES_SAMPLER", sampler), ("OTEL_TRACES_SAMPLER_ARG", arg)]))
        };
        let parent = |sampled: bool, low: u64| {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low.to_be_bytes());
            let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
            SpanContext::new(TraceId::from_bytes(id), SpanId::from_bytes([1; 8]), flags, true, TraceState::default())
        };
        let (default, said) = Sampling::from(env(&[]));
        assert!(said.is_none());
        assert!(default.keep(None) && default.keep(Some(&parent(true, 0))) && !default.keep(Some(&parent(false, 0))));
        let (tenth, said) = of("parentbased_traceidratio", "0.1");
        assert!(said.is_none());
        assert!(tenth.keep(Some(&parent(true, u64::MAX))), "a sampled caller's trace is kept whatever its id");
        assert!(!tenth.keep(Some(&parent(false, 0))), "an unsampled caller's is not");
        let kept = (0..20_000).filter(|_| tenth.keep(None)).count();
        assert!((1_600..2_400).contains(&kept), "about one new trace in ten: {kept}");
        let (half, _) = of("traceidratio", "0.5");
        // The SDK's rule: the last 8 bytes, shifted right once, under ratio * 2^63.
        assert!(half.keep(Some(&parent(false, (1u64 << 63) - 4))), "under half of 2^63 once shifted");
        assert!(!half.keep(Some(&parent(true, u64::MAX))), "over it, whatever the caller's flag");
        let (off, _) = of("always_off", "");
        assert!(!off.keep(None) && !off.keep(Some(&parent(true, 0))));
        let (on, _) = of("always_on", "");
        assert!(on.keep(Some(&parent(false, 0))));
        let (_, said) = of("parentbased_traceidratio", "ten percent");
        assert!(said.is_some_and(|s| s.contains("OTEL_TRACES_SAMPLER_ARG")));
        let (fallback, said) = of("jaeger_remote", "");
        assert_eq!(fallback, default, "an unknown sampler falls back, as the SDK's does");
        assert!(said.is_some_and(|s| s.contains("parentbased_always_on is used")));
        let (empty, said) = of("parentbased_traceidratio", " ");
        assert!(said.is_none() && empty.keep(None), "an empty ratio is as unset: 1");
        // New trace ids at a ratio are ids a traceidratio sampler at that ratio keeps.
        use opentelemetry_sdk::trace::IdGenerator;
        let ids = KeptIds::new(0.1);
        assert!((0..1000).all(|_| keeps_trace_id(0.1, ids.new_trace_id())));
        let all = KeptIds::new(1.0);
        assert!((0..1000).any(|_| !keeps_trace_id(0.5, all.new_trace_id())), "at 1, the whole range");
    }

    #[test]
    fn a_callers_traceparent_is_parsed_by_the_w3c_rules() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sc = remote_parent(good, Some(b"congo=t61rcWkgMzE")).expect("a valid traceparent");
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
        assert!(sc.is_sampled() && sc.is_remote());
        assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));
        for bad in [
            &b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"[..], // all-zero trace id
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",      // all-zero span id
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",      // version ff
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",      // upper case
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",    // extra part in 00
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",         // no flags
            b"garbage",
            b"\xff\xfe",
        ] {
            assert!(remote_parent(bad, None).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
        let later = remote_parent(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future", None);
        assert!(later.is_some_and(|sc| !sc.is_sampled()), "a later version's extra parts are ignored");
    }
}
