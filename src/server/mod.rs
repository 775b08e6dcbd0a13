//! Process wiring: binds the scoring plane and the admin plane, runs both until a signal.
//!
//! The two planes are separate HTTP servers so the admin API can stay on loopback while the
//! scoring plane faces clients, and so a flood of scoring traffic cannot starve control calls.
#![forbid(unsafe_code)]

mod admin;
mod admin_guard;
mod body;
mod capped;
mod errors;
pub(crate) mod front_door;
mod grpc;
mod limits;
mod modeldata;
mod oip;
pub(crate) mod openapi;
mod scoring;
mod studio;

use std::io::Write as _;
use std::net::{IpAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::{HttpService, Request, Response};
use actix_service::{fn_service, map_config};
use actix_web::body::BoxBody;
use actix_web::dev::AppConfig;
use actix_web::{web, App, HttpServer};

use crate::control::store::StateDir;
use crate::control::{ControlOptions, Workspace};
use crate::mirror::Tolerance;
use crate::telemetry::Metrics;
use admin::AdminState;
use front_door::{Drain, ScoringState};

/// Admin-plane worker threads (see where the admin server is built).
const ADMIN_WORKERS: usize = 2;

/// Everything `switchyard serve` is told.
#[derive(Debug, Clone)]
pub(crate) struct ServeOptions {
    pub host: String,
    pub port: u16,
    pub admin_host: String,
    pub admin_port: u16,
    /// `--grpc-port`: the Open Inference Protocol's gRPC plane, on `host`; `None`: off.
    pub grpc_port: Option<u16>,
    /// Whether `--grpc-port` was given: a defaulted port that cannot be bound (taken, or the
    /// admin port) leaves the gRPC plane off with a warning instead of stopping the start.
    pub grpc_port_given: bool,
    /// Required when the admin plane binds a non-loopback address.
    pub admin_token: Option<String>,
    /// `--admin-token-file`: a file holding the admin token (in place of `admin_token`, which
    /// other processes of the user can read from the command line or environment at start).
    pub admin_token_file: Option<PathBuf>,
    /// `--admin-allowed-hosts`: names a token-less admin plane answers to besides loopback
    /// ones and its own address (DNS rebinding guard, see `admin_guard`).
    pub admin_allowed_hosts: Vec<String>,
    /// Scoring-plane worker threads.
    pub workers: usize,
    /// Largest accepted `/score` body.
    pub max_body_bytes: usize,
    /// How long a `/score` body may take to arrive (408 beyond).
    pub body_timeout: Duration,
    /// Most scoring-plane connections open at once (`None`: as many as the file descriptor
    /// limit allows after the admin plane's share).
    pub max_connections: Option<usize>,
    /// Lifetime of `aml_token` tokens.
    pub token_lifetime: Duration,
    /// Default tolerance of mirror comparisons.
    pub tolerance: Tolerance,
    /// `--state-dir`: where accepted changes are saved and restored from.
    pub state_dir: Option<PathBuf>,
    /// `--assets-dir`: the asset store (registered models and environments); else
    /// `--state-dir/assets`, else a private temporary folder.
    pub assets_dir: Option<PathBuf>,
    /// `--data-dir`: where the data collector writes its records (issue 28); else
    /// `--state-dir/data`, else `$TMPDIR/switchyard-data`.
    pub data_dir: Option<PathBuf>,
    /// `--data-max-mb`: the most the data folder holds (the oldest files go first).
    pub data_max_mb: u64,
    /// `--config-dir`: the endpoint and deployment YAML files that own the state.
    pub config_dir: Option<PathBuf>,
    /// `--secrets-dir`: the endpoint's keys and token signing secret (and optionally the admin
    /// token), one file each, shared by every replica and watched.
    pub secrets_dir: Option<PathBuf>,
    /// `--key-grace-secs`: how long a secret that left `--secrets-dir` stays accepted.
    pub key_grace: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// The shadow threads' CPU budget, percent of one core (0 = no limit). Process-wide: it
    /// bounds what all shadows together take from live work.
    pub mirror_cpu_percent: f64,
    /// `--python` / `--env-cache-dir`: how score.py deployments get their interpreter.
    pub python: crate::hooks::python::PythonOptions,
    /// `--worker-user USER[:GROUP]`: the user hook workers run as (see `crate::sys::user`), so
    /// that scoring scripts cannot read the server's secrets. `None`: the server's own user.
    pub worker_user: Option<String>,
}

/// Why the server could not start or stopped with an error; the message is for the operator.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServeError {
    #[error("--admin-host must be an IP address, got {0:?}")]
    AdminHost(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to expose the admin API on {0} without a token: set --admin-token (or SWITCHYARD_ADMIN_TOKEN, or an admin-token file in --secrets-dir), or keep --admin-host on loopback"
    )]
    AdminExposed(IpAddr),
    /// `--state-dir` cannot be used as given, or its saved state cannot be trusted.
    #[error(transparent)]
    State(#[from] crate::control::store::OpenError),
    /// `--config-dir` cannot be used as given.
    #[error("{0}")]
    Setup(String),
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("the HTTP server failed: {0}")]
    Http(#[from] std::io::Error),
}

/// Default of `serve --mirror-cpu-percent`: the shadow's CPU budget, percent of one core.
pub(crate) const DEFAULT_MIRROR_CPU_PERCENT: f64 = crate::mirror::executor::DEFAULT_SHADOW_CPU_PERCENT;

/// `switchyard serve`: sets up the process (tracing, the shadow budget, the runtime that runs
/// control-plane work) and runs the server until SIGTERM/SIGINT.
pub(crate) fn serve(mut opts: ServeOptions) -> Result<(), ServeError> {
    crate::telemetry::init_tracing();
    // Before any thread exists (the scrub writes the environment and the startup blocks).
    hide_admin_token(&mut opts)?;
    set_worker_user(opts.worker_user.as_deref())?;
    // From the main thread, at nice 0: worker processes are started there (live priority).
    crate::threads::start_live_spawner();
    crate::mirror::executor::set_shadow_budget(opts.mirror_cpu_percent);
    crate::hooks::python::configure(opts.python.clone());
    // What a server killed with -9 left in $TMPDIR (before anything is bound: a test or a
    // supervisor that sees the addresses sees it done).
    crate::hooks::native::remove_dead_servers_copies();
    crate::assets::remove_dead_temporaries();
    // The main runtime runs control-plane work (loads' bookkeeping, drains, the config
    // watcher): below the scoring workers in priority.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| crate::threads::set_nice(crate::threads::CONTROL_NICE))
        .enable_all()
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(async {
        // First: a SIGHUP from the moment the process exists must not kill it.
        ignore_hangup();
        // Then SIGTERM/SIGINT, before anything is bound or printed (see `shutdown_signal`).
        let shutdown = shutdown_signal();
        let grace = opts.shutdown_grace;
        let shutdown = async move {
            shutdown.await;
            exit_after_grace(grace);
        };
        exit_with_parent();
        let listeners = bind(&opts)?;
        run(opts, listeners, shutdown).await
    });
    // The spans of the last requests are sent before the process ends (traces on): a second
    // at most, so an unreachable collector cannot take the stop past the exit watchdog
    // (`exit_after_grace`). Export runs on its own thread: spans of a reachable collector are
    // mostly sent already.
    crate::telemetry::traces::shutdown(Duration::from_secs(1));
    // Whatever instances were not dropped by now leave no worker and no folder behind.
    crate::hooks::worker::stop_all();
    crate::hooks::python::remove_instance_folders();
    result
}

/// How long after the grace period a stop that has not finished is cut short: the normal
/// stop (closing connections, dropping instances, removing folders) has time to end first.
pub(crate) const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// After SIGTERM: if the process is still running `grace` + [`EXIT_MARGIN`] later, says so
/// and exits (code 1) without waiting any longer. A thread stuck in an in-process native
/// plugin's `run` or `init` can never be taken back, and the runtimes wait for their blocking
/// threads when they stop: without this the process never exited (still running 60 s after
/// SIGTERM). Only for `serve`: a server run in process by a test is not exited under it.
fn exit_after_grace(grace: Duration) {
    let limit = grace + EXIT_MARGIN;
    let watchdog = std::thread::Builder::new().name("switchyard-exit".into()).spawn(move || {
        std::thread::sleep(limit);
        tracing::error!(
            after_secs = limit.as_secs(),
            plugin_calls_left = crate::hooks::native::calls_in_progress(),
            "the server has not stopped within the shutdown grace period (a thread is still held, e.g. by an in-process native plugin's run or init that never returned); exiting without waiting for it"
        );
        crate::hooks::worker::stop_all();
        crate::hooks::python::remove_instance_folders();
        crate::hooks::native::remove_plugin_copies();
        std::process::exit(1);
    });
    if let Err(e) = watchdog {
        tracing::warn!(error = %e, "cannot start the shutdown watchdog; a run stuck in a plugin may keep the process alive");
    }
}

/// The environment variable that may carry the admin token (clap's `env` for `--admin-token`).
pub(crate) const ADMIN_TOKEN_ENV: &str = "SWITCHYARD_ADMIN_TOKEN";

/// Keeps the admin token from scoring scripts and other processes of the user: reads
/// `--admin-token-file`, overwrites the token where `/proc/<pid>/{environ,cmdline}` show it,
/// and makes the process non-dumpable (no `ptrace`, no `/proc/<pid>/mem` for same-user
/// processes). Runs before any thread is started, as the scrub requires.
fn hide_admin_token(opts: &mut ServeOptions) -> Result<(), ServeError> {
    if let Some(path) = &opts.admin_token_file {
        if opts.admin_token.is_some() {
            return Err(ServeError::Setup(format!(
                "the admin token is given twice: by --admin-token (or {ADMIN_TOKEN_ENV}) and by --admin-token-file {}; keep one",
                path.display()
            )));
        }
        opts.admin_token = Some(read_admin_token_file(path)?);
    }
    match crate::sys::scrub::scrub_startup_secret(ADMIN_TOKEN_ENV, opts.admin_token.as_deref()) {
        Ok(done) if done != Default::default() => {
            tracing::info!(
                arguments = done.arguments,
                variables = done.variables,
                "admin token removed from /proc/self/cmdline and /proc/self/environ"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot overwrite the admin token in the startup environment and arguments; other processes of this user may read it there (use --admin-token-file or --secrets-dir)");
        }
    }
    if let Err(e) = crate::sys::scrub::forbid_dumping() {
        tracing::warn!(error = %e, "cannot make the process non-dumpable; processes of this user may read its memory");
    }
    Ok(())
}

/// `--worker-user`: resolved and checked (refused when the server may not switch users), then
/// in force for every worker. Without it, a server running as root warns: its scripts run as
/// root too, and read whatever it reads.
fn set_worker_user(spec: Option<&str>) -> Result<(), ServeError> {
    let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
        if crate::sys::user::is_root() {
            tracing::warn!("the server runs as root, and so do its scoring scripts: they can read its secrets (--admin-token-file, --secrets-dir, --state-dir); start them as another user with --worker-user");
        }
        return Ok(());
    };
    match crate::sys::user::resolve(spec).map_err(|e| ServeError::Setup(e.to_string()))? {
        Some(user) => {
            crate::sys::user::set_worker_user(user.clone()).map_err(|e| ServeError::Setup(e.to_string()))?;
            tracing::info!(worker_user = %user, "hook workers run as another user");
        }
        None => tracing::info!(worker_user = spec, "--worker-user is the server's own user: workers run as it"),
    }
    Ok(())
}

/// The longest admin token file read (the token travels in a header).
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// The token in `path`: its text without surrounding whitespace. The file must be a regular
/// file (a FIFO would hold the start), at most 4 KiB, of visible ASCII characters.
fn read_admin_token_file(path: &std::path::Path) -> Result<String, ServeError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| ServeError::Setup(format!("cannot read --admin-token-file {shown}: {e}")))?;
    if !meta.is_file() {
        return Err(ServeError::Setup(format!(
            "--admin-token-file {shown} is not a regular file: expected a file holding the token"
        )));
    }
    // Non-blocking: a file swapped for a FIFO after the check must not hold the start.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| ServeError::Setup(format!("cannot read --admin-token-file {shown}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ServeError::Setup(format!("cannot read --admin-token-file {shown}: {e}")))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
        return Err(ServeError::Setup(format!(
            "--admin-token-file {shown} is larger than {MAX_TOKEN_FILE_BYTES} bytes: expected one token"
        )));
    }
    let token = bytes.trim_ascii();
    if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return Err(ServeError::Setup(format!(
            "--admin-token-file {shown} must hold one token of visible ASCII characters (no spaces or line breaks inside; surrounding whitespace is dropped)"
        )));
    }
    Ok(String::from_utf8_lossy(token).into_owned())
}

/// The two planes' sockets, bound by the caller (so tests can bind ephemeral ports and run
/// the server in process).
pub(crate) struct Listeners {
    pub scoring: TcpListener,
    pub admin: TcpListener,
    /// The gRPC plane's, unless `--grpc-port off`.
    pub grpc: Option<TcpListener>,
}

/// Binds `--host`/`--port` and `--admin-host`/`--admin-port`.
pub(crate) fn bind(opts: &ServeOptions) -> Result<Listeners, ServeError> {
    let admin_ip: IpAddr = opts.admin_host.parse().map_err(|_| ServeError::AdminHost(opts.admin_host.clone()))?;
    let scoring = TcpListener::bind((opts.host.as_str(), opts.port))
        .map_err(|source| ServeError::Listen { addr: format!("{}:{}", opts.host, opts.port), source })?;
    let admin = TcpListener::bind((admin_ip, opts.admin_port))
        .map_err(|source| ServeError::Listen { addr: format!("{}:{}", opts.admin_host, opts.admin_port), source })?;
    let grpc = match opts.grpc_port {
        None => None,
        Some(port) => match TcpListener::bind((opts.host.as_str(), port)) {
            Ok(listener) => Some(listener),
            Err(source) if opts.grpc_port_given => {
                return Err(ServeError::Listen {
                    addr: format!("{}:{port} (--grpc-port; `--grpc-port off` turns the gRPC plane off)", opts.host),
                    source,
                })
            }
            Err(e) => {
                tracing::warn!(
                    "the gRPC plane's default port {port} (the scoring port + 2) cannot be bound ({e}): it is off; \
                     give --grpc-port PORT to serve it"
                );
                None
            }
        },
    };
    Ok(Listeners { scoring, admin, grpc })
}

/// Runs the server on `listeners` until `shutdown` resolves (SIGTERM/SIGINT for `serve`), then
/// drains and stops gracefully. Prints the two bound addresses on stdout first, one per line,
/// so scripts and tests started with `--port 0` can read them.
pub(crate) async fn run(
    opts: ServeOptions,
    listeners: Listeners,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let Listeners { scoring: scoring_listener, admin: admin_listener, grpc: grpc_listener } = listeners;
    let admin_ip = admin_listener.local_addr()?.ip();
    let scoring_addr = scoring_listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let (state_dir, saved) = match &opts.state_dir {
        Some(dir) => {
            let (state_dir, saved) = StateDir::open(dir)?;
            (Some(state_dir), saved)
        }
        None => (None, Vec::new()),
    };
    let metrics = Metrics::new();
    let options =
        ControlOptions { token_lifetime: opts.token_lifetime, tolerance: opts.tolerance, key_grace: opts.key_grace };
    let control = Workspace::new(metrics, options, state_dir);
    // Before the restore: saved deployments may name registered assets.
    let assets = match opts.assets_dir.clone().or_else(|| opts.state_dir.as_ref().map(|d| d.join("assets"))) {
        Some(dir) => crate::assets::AssetStore::open(&dir),
        None => crate::assets::AssetStore::temporary(),
    };
    control.set_assets(assets.map_err(|e| ServeError::Setup(format!("--assets-dir: {e}")))?);
    // The data collector, before the restore too: saved deployments may collect.
    let data_dir = opts
        .data_dir
        .clone()
        .or_else(|| opts.state_dir.as_ref().map(|d| d.join("data")))
        .unwrap_or_else(|| std::env::temp_dir().join("switchyard-data"));
    let data_dir = std::path::absolute(&data_dir).unwrap_or(data_dir);
    crate::sys::tmp::remove_dead_owners(MDC_CONFIG_PREFIX, "data collector configuration");
    let mdc_config = tempfile::Builder::new()
        .prefix(&crate::sys::tmp::own_prefix(MDC_CONFIG_PREFIX))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o711))
        .tempdir()
        .map_err(|e| ServeError::Setup(format!("the data collector's configuration folder: {e}")))?;
    let hub = crate::collector::Hub::new(
        crate::collector::Sink::new(data_dir, opts.data_max_mb.saturating_mul(1 << 20)),
        mdc_config,
    );
    let custom_logging = modeldata::start(Arc::clone(&hub))
        .map_err(|e| ServeError::Setup(format!("the data collector's loopback listener: {e}")))?;
    let custom_logging_handle = custom_logging.handle();
    tokio::spawn(custom_logging);
    control.set_collector(Arc::clone(&hub));
    // The secrets first: the endpoint (restored or from --config-dir) is created with them.
    let file_admin_token = match &opts.secrets_dir {
        Some(dir) => crate::control::secrets::start(&control, dir.clone(), opts.admin_token.is_some())
            .map_err(|e| ServeError::Setup(e.to_string()))?,
        None => None,
    };
    control.set_admin_token(opts.admin_token.clone().or(file_admin_token));
    if !admin_ip.is_loopback() && control.admin_token().is_none() {
        return Err(ServeError::AdminExposed(admin_ip));
    }
    let allowed_hosts = admin_guard::AllowedHosts::new(admin_ip, &opts.admin_allowed_hosts)?;
    // In declarative mode, a saved endpoint that no folder defines any more is not restored.
    let saved = match &opts.config_dir {
        Some(dir) => crate::control::watch::keep_defined(dir, saved),
        None => saved,
    };
    // Each saved endpoint answers 503 until it is restored (the restores start once the
    // planes listen).
    let restores = control.begin_restore(saved);
    let shown_host =
        if scoring_addr.ip().is_unspecified() { "localhost".to_string() } else { scoring_addr.ip().to_string() };
    control.set_scoring_base(format!("http://{shown_host}:{}", scoring_addr.port()));

    let fd_limit = limits::raise_fd_limit();
    let workers = opts.workers.max(1);
    let per_worker = limits::connections_per_worker(fd_limit, workers, opts.max_connections);
    tracing::info!(fd_limit, workers, per_worker, "scoring-plane connection cap");
    limits::set_backlog(&scoring_listener, limits::SCORING_BACKLOG);
    limits::set_backlog(&admin_listener, limits::ADMIN_BACKLOG);

    let drain = Arc::new(Drain::default());
    let scoring_state = web::Data::new(ScoringState {
        routing: control.routing(),
        publish_count: control.publish_count(),
        max_body_bytes: opts.max_body_bytes,
        body_timeout: opts.body_timeout,
        drain: Arc::clone(&drain),
    });
    let grpc_state = scoring_state.clone();
    // Built from actix-http's service builder rather than actix-web's HttpServer (which does
    // the same with the defaults below) for one reason: only it takes an `Expect:
    // 100-continue` handler, and a request whose declared body will be refused must get its
    // 413/415 at once instead of `100 Continue` first.
    let max_body = opts.max_body_bytes;
    let builder = actix_server::Server::build();
    // As HttpServer does: on a graceful stop, idle keep-alive connections are closed at once
    // instead of holding the stop until their keep-alive timer ends.
    let stopping = builder.graceful_shutdown_signal();
    let scoring = builder
        .workers(workers)
        .max_concurrent_connections(per_worker)
        .disable_signals()
        .shutdown_timeout(opts.shutdown_grace.as_secs())
        .listen("switchyard-scoring", scoring_listener, move || {
            let state = scoring_state.clone();
            let app = App::new().app_data(state).configure(scoring::configure);
            let stopping = stopping.clone();
            HttpService::build()
                .graceful_shutdown_signal(move || {
                    let stopping = stopping.clone();
                    async move { stopping.notified().await }
                })
                .client_request_timeout(Duration::from_secs(5))
                .client_disconnect_timeout(Duration::from_secs(1))
                .local_addr(scoring_addr)
                .expect(fn_service(move |req: Request| {
                    // Refused in the style of the route asked for: the v2 protocol's `{"error"}`
                    // under /v2, Azure's `{"message"}` elsewhere.
                    let style =
                        if oip::is_v2(req.path()) { errors::ErrorStyle::Error } else { errors::ErrorStyle::Message };
                    let checked = body::check_head(&req.head().headers, max_body)
                        .map(|_| req)
                        .map_err(|e| Response::<BoxBody>::from(e.response(style)));
                    std::future::ready(checked)
                }))
                .finish(map_config(app, |_| AppConfig::default()))
                .tcp()
        })?
        .run();

    let admin_state = web::Data::new(AdminState { control: Arc::clone(&control), allowed_hosts });
    let admin = HttpServer::new(move || {
        // Runs on the admin worker thread as it starts: control calls yield to scoring.
        crate::threads::set_nice(crate::threads::CONTROL_NICE);
        App::new()
            .app_data(admin_state.clone())
            // Admin documents are small; a larger body is refused before it is read whole.
            .app_data(web::PayloadConfig::new(crate::spec::limits::MAX_DOCUMENT_BYTES))
            // In front of every route: refuses cross-site and rebinding requests, and puts
            // nosniff and a CSP on every answer (see `admin_guard`).
            .wrap(actix_web::middleware::from_fn(admin_guard::gate))
            .configure(admin::configure)
    })
    // Two workers: a call that takes long (a large body, a save to a slow disk) does not
    // stop `show`, `list` or `/metrics` from answering.
    .workers(ADMIN_WORKERS)
    // Its own, small cap: the scoring plane's cap leaves it this many descriptors.
    .max_connections(limits::ADMIN_MAX_CONNECTIONS)
    .disable_signals()
    .shutdown_timeout(opts.shutdown_grace.as_secs())
    .listen(admin_listener)?
    .run();

    // The gRPC plane: its calls go through the scoring plane's own routes (see `grpc`). It
    // stops accepting when the other planes do, after the drain.
    let (grpc_stop, grpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let grpc = match grpc_listener {
        Some(listener) => {
            let grpc_addr = listener.local_addr()?;
            // Clients over the connection cap wait here (std's default is 128).
            limits::set_backlog(&listener, limits::SCORING_BACKLOG);
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let incoming = capped::Capped::new(incoming, limits::grpc_connections(fd_limit));
            let service = grpc::Plane::new(scoring_addr, grpc_state.clone()).service(opts.max_body_bytes);
            // A client that holds a connection open, never sends or never reads, is found
            // out by keepalive pings; each connection has a bound on its streams at once; a
            // `ModelInfer` without the key is refused before its message is read (`KeyGate`).
            let server = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                .max_concurrent_streams(Some(grpc::MAX_STREAMS))
                // Connections are recycled (GOAWAY: calls in flight finish, clients reconnect at
                // once, as gRPC clients do): idle connections cannot hold the capped slots for
                // good, and a slot freed goes to the longest-waiting client in the backlog.
                .max_connection_age(grpc::MAX_CONNECTION_AGE)
                .max_connection_age_grace(grpc::MAX_CONNECTION_AGE_GRACE)
                .concurrency_limit_per_connection(grpc::MAX_STREAMS as usize)
                .layer(tower::util::MapRequestLayer::new(grpc::authority_as_host))
                .layer(grpc::KeyGateLayer(grpc_state.clone()))
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = grpc_stopped.await;
                });
            Some((grpc_addr, tokio::spawn(server)))
        }
        None => None,
    };
    // Not `println!`: a closed stdout (`serve | head -1`) must not panic a running server.
    // The admin line last: scripts and tests read up to it, the gRPC line (when on) before it.
    let grpc_line = grpc.as_ref().map(|(addr, _)| format!("gRPC plane: {addr}\n")).unwrap_or_default();
    let _ = writeln!(
        std::io::stdout(),
        "Scoring plane: http://{scoring_addr}\n{grpc_line}Admin plane: http://{admin_addr}"
    );
    tracing::info!(%scoring_addr, %admin_addr, "switchyard serving");

    for (plane, saved) in restores {
        tokio::spawn(async move { plane.restore(saved).await });
    }
    if let Some(dir) = opts.config_dir.clone() {
        crate::control::watch::start(Arc::clone(&control), dir).map_err(|e| ServeError::Setup(e.to_string()))?;
    }
    // Each endpoint's request rate, for the upfront estimate of a rollout's evidence gates.
    let meter = Arc::clone(&control);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(crate::telemetry::rate::RATE_EVERY);
        loop {
            every.tick().await;
            for plane in meter.all() {
                plane.sample_rate();
            }
        }
    });
    let (scoring_handle, admin_handle) = (scoring.handle(), admin.handle());
    let grace = opts.shutdown_grace;
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: answering 503 (not ready) to new requests, finishing the ones in flight");
        drain.begin();
        control.begin_shutdown();
        wait_for_drain(&drain, grace).await;
        // Both planes stop accepting only now; what is still connected gets the rest of the
        // grace period (actix's shutdown timeout) to finish.
        let _ = grpc_stop.send(());
        tokio::join!(scoring_handle.stop(true), admin_handle.stop(true), custom_logging_handle.stop(true));
    });
    tokio::try_join!(scoring, admin)?;
    if let Some((_, server)) = grpc {
        // tonic's graceful stop waits for every connection to close, however long a client
        // holds one open: bounded here (its calls in flight were counted in the drain, which
        // has waited for them), so the records below are always flushed.
        match tokio::time::timeout(DRAIN_TAIL, server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the gRPC plane stopped with an error"),
            Err(_) => tracing::warn!("gRPC connections still open at the end of the grace period are dropped"),
            _ => {}
        }
    }
    // Every record of an answered request is on disk before the process ends (SIGTERM).
    if !hub.sink().flush(Duration::from_secs(5)) {
        tracing::warn!("the data collector could not write every record within 5 s of stopping");
    }
    tracing::info!("switchyard stopped");
    Ok(())
}

/// The data collector's per-process configuration folders in `$TMPDIR` (removed at exit; a
/// killed server's by the next start).
const MDC_CONFIG_PREFIX: &str = "switchyard-mdc-";

/// After SIGTERM, how long the listeners stay open once nothing is in flight: a load balancer
/// or a Kubernetes readiness probe that polls now sees the 503 instead of a refused connection.
pub(crate) const DRAIN_TAIL: Duration = Duration::from_secs(1);

/// Waits until no `/score` request is in flight, then [`DRAIN_TAIL`], all within `grace`.
async fn wait_for_drain(drain: &Drain, grace: Duration) {
    let deadline = Instant::now() + grace;
    while drain.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::sleep(DRAIN_TAIL.min(left)).await;
    if drain.active() > 0 {
        tracing::warn!(in_flight = drain.active(), "grace period over with requests still in flight");
    }
}

/// SIGHUP's default action kills the process (exit 129), which a terminal closing or a
/// process manager's "reload" should not do: it is logged and ignored. (Nothing needs
/// reloading by signal: `--config-dir` is watched, logs are not files.)
fn ignore_hangup() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        tracing::info!("SIGHUP received and ignored (SIGTERM stops the server)");
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGHUP; it will stop the server"),
        }
    }
}

/// Names the process that started this server; the server exits when that process is gone.
/// Internal, for test harnesses: a test process that exits (or is killed) without dropping its
/// servers, such as the `static` fixtures of a test binary, which are never dropped, must not
/// leave them running. `PR_SET_PDEATHSIG` would not do: it fires when the spawning *thread*
/// ends, and a shared fixture is started by whichever test thread asks first.
pub(crate) const PARENT_PID_ENV: &str = "SWITCHYARD_PARENT_PID";

/// How often the parent is checked: a leaked server lives at most this long.
const PARENT_POLL: Duration = Duration::from_millis(200);

/// With [`PARENT_PID_ENV`] set, watches the parent: when this process has been handed to
/// another parent (the named one exited), exits at once (code 1), without a graceful
/// shutdown: nobody is left to talk to.
fn exit_with_parent() {
    let Some(parent) = std::env::var(PARENT_PID_ENV).ok().and_then(|v| v.trim().parse::<libc::pid_t>().ok()) else {
        return;
    };
    let orphaned = move || crate::sys::parent_pid() != parent;
    // Not `eprintln!`: it panics when stderr is a closed pipe, which would end this thread and
    // leave the server running, the one thing this watch is for.
    let leave = move || {
        let _ =
            writeln!(std::io::stderr(), "switchyard: the process that started this server ({parent}) is gone; exiting");
        crate::hooks::worker::stop_all();
        crate::hooks::python::remove_instance_folders();
        std::process::exit(1);
    };
    if orphaned() {
        leave();
    }
    let watch = std::thread::Builder::new().name("parent-watch".into()).spawn(move || loop {
        std::thread::sleep(PARENT_POLL);
        if orphaned() {
            leave();
        }
    });
    if let Err(e) = watch {
        tracing::warn!(error = %e, "cannot watch the parent process");
    }
}

/// Registers SIGTERM and SIGINT now and returns a future that resolves on either. The
/// handlers are installed when this is called, not when the future is first polled: that
/// happens in a spawned task after the address lines are printed, and a SIGTERM sent by whoever
/// saw those lines (a supervisor, a test) would otherwise meet the default action and kill the
/// process without the drain.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn received(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                // Not installed: the signal keeps its default action, which stops the process.
                None => std::future::pending().await,
            }
        }
        let term = signal(SignalKind::terminate())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGTERM; it will stop the server at once"))
            .ok();
        let interrupt = signal(SignalKind::interrupt())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot handle SIGINT; it will stop the server at once"))
            .ok();
        async move {
            tokio::select! {
                _ = received(term) => {}
                _ = received(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ServeOptions {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 0,
            admin_host: "127.0.0.1".into(),
            admin_port: 0,
            grpc_port: Some(0),
            grpc_port_given: true,
            admin_token: None,
            admin_token_file: None,
            admin_allowed_hosts: Vec::new(),
            workers: 1,
            max_body_bytes: 1 << 20,
            body_timeout: Duration::from_secs(5),
            max_connections: None,
            token_lifetime: Duration::from_secs(60),
            tolerance: Tolerance::default(),
            state_dir: None,
            assets_dir: None,
            data_dir: None,
            data_max_mb: 1024,
            config_dir: None,
            secrets_dir: None,
            key_grace: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            mirror_cpu_percent: DEFAULT_MIRROR_CPU_PERCENT,
            python: Default::default(),
            worker_user: None,
        }
    }

    fn get(url: String) -> u16 {
        let agent = ureq::Agent::new_with_config(ureq::Agent::config_builder().http_status_as_error(false).build());
        agent.get(&url).call().map(|r| r.status().as_u16()).unwrap_or(0)
    }

    /// The server runs in this process on listeners the test bound, and stops when the
    /// shutdown future resolves: no child process, no signal.
    #[test]
    fn runs_in_process_and_stops_on_its_shutdown_future() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let opts = options();
            let listeners = bind(&opts).unwrap();
            let scoring = listeners.scoring.local_addr().unwrap();
            let admin = listeners.admin.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(run(opts, listeners, async move {
                let _ = stopped.await;
            }));
            let live = tokio::task::spawn_blocking(move || get(format!("http://{scoring}/health/live"))).await.unwrap();
            assert_eq!(live, 200);
            let endpoint =
                tokio::task::spawn_blocking(move || get(format!("http://{admin}/v1/endpoint"))).await.unwrap();
            assert_eq!(endpoint, 404, "no endpoint yet");
            stop.send(()).unwrap();
            assert!(server.await.unwrap().is_ok());
        });
    }

    #[test]
    fn a_public_admin_address_needs_a_token() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listeners = Listeners {
            scoring: TcpListener::bind("127.0.0.1:0").unwrap(),
            admin: TcpListener::bind("0.0.0.0:0").unwrap(),
            grpc: None,
        };
        let err = runtime.block_on(run(options(), listeners, std::future::pending())).unwrap_err().to_string();
        assert!(err.contains("--admin-token"), "{err}");
    }
}
