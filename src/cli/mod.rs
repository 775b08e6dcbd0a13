//! The command line: `switchyard serve` and the `az ml`-style verbs, which talk to the admin
//! API of a running server (`--server URL` or `SWITCHYARD_ADMIN_URL`).
#![forbid(unsafe_code)]

mod answers;
mod asset;
mod client;
mod deployment;
mod endpoint;
mod env;
mod output;
mod probe;

use std::io::Write as _;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::server::ServeOptions;

/// Switchyard: Azure-ML-style online endpoints — blue/green deployments, traffic split,
/// mirror traffic — on any machine, as one binary.
#[derive(Parser, Debug)]
#[command(name = "switchyard", version, infer_long_args = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// The client flags written before the verb (`switchyard --server URL online-endpoint
    /// show`, as docs/KUBERNETES.md does). Hidden: each client verb lists them itself, and
    /// `serve` refuses them, so `serve --help` shows only what `serve` uses.
    #[command(flatten)]
    pub leading: LeadingClientFlags,
}

/// The admin API's address when neither `--server` nor `SWITCHYARD_ADMIN_URL` gives one.
pub(crate) const DEFAULT_SERVER: &str = "http://127.0.0.1:5002";

/// Flags of the client verbs (`online-endpoint`, `online-deployment`), accepted anywhere after
/// the verb's group; Azure's own flags are accepted and ignored. `--server` and
/// `--admin-token` fall back to their environment variables in [`ClientFlags::resolve`], not
/// through clap, so that a flag written before the verb still wins over the environment.
#[derive(Args, Debug, Clone, Default)]
pub struct ClientFlags {
    /// Admin API of the server to talk to [env: SWITCHYARD_ADMIN_URL] [default: http://127.0.0.1:5002]
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// Admin token, when the server requires one [env: SWITCHYARD_ADMIN_TOKEN]
    #[arg(long, global = true)]
    pub admin_token: Option<String>,
    /// JMESPath query applied to the output (as in the Azure CLI).
    #[arg(long, global = true)]
    pub query: Option<String>,
    /// Output format (json unless a verb prints a table on a terminal).
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<OutputFormat>,
    /// Accepted for Azure CLI compatibility; ignored.
    #[arg(short = 'g', long, global = true, hide = true)]
    pub resource_group: Option<String>,
    /// Accepted for Azure CLI compatibility; ignored.
    #[arg(short = 'w', long, global = true, hide = true)]
    pub workspace_name: Option<String>,
    /// Accepted for Azure CLI compatibility; ignored.
    #[arg(long, global = true, hide = true)]
    pub subscription: Option<String>,
    /// Azure's `--local` (run in a local Docker container): not done by this CLI; a verb given
    /// it is refused with the `docker run` line that does it (see LOCAL_REFUSAL).
    #[arg(long, global = true, hide = true)]
    pub local: bool,
    /// Print only errors (as in the Azure CLI); warnings and progress are suppressed.
    #[arg(long, global = true)]
    pub only_show_errors: bool,
    /// Print each admin request and its answer status on stderr.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Print a line on stderr for each admin request.
    #[arg(long, global = true)]
    pub verbose: bool,
}

/// [`ClientFlags`] written before the verb: the same flags, hidden and not inherited by the
/// subcommands (a global flag would be listed, and accepted, by `serve` too).
#[derive(Args, Debug, Clone, Default)]
pub struct LeadingClientFlags {
    #[arg(long, hide = true)]
    pub server: Option<String>,
    #[arg(long, hide = true)]
    pub admin_token: Option<String>,
    #[arg(long, hide = true)]
    pub query: Option<String>,
    #[arg(short = 'o', long, hide = true, value_enum)]
    pub output: Option<OutputFormat>,
    #[arg(short = 'g', long, hide = true)]
    pub resource_group: Option<String>,
    #[arg(short = 'w', long, hide = true)]
    pub workspace_name: Option<String>,
    #[arg(long, hide = true)]
    pub subscription: Option<String>,
    #[arg(long, hide = true)]
    pub local: bool,
    #[arg(long, hide = true)]
    pub only_show_errors: bool,
    #[arg(long, hide = true)]
    pub debug: bool,
    #[arg(long, hide = true)]
    pub verbose: bool,
}

impl LeadingClientFlags {
    /// The client-only flags given, by name (what `serve` refuses).
    fn client_only(&self) -> Vec<&'static str> {
        let given = [
            ("--server", self.server.is_some()),
            ("--query", self.query.is_some()),
            ("--output", self.output.is_some()),
            ("--resource-group", self.resource_group.is_some()),
            ("--workspace-name", self.workspace_name.is_some()),
            ("--subscription", self.subscription.is_some()),
            ("--only-show-errors", self.only_show_errors),
            ("--debug", self.debug),
            ("--verbose", self.verbose),
        ];
        given.iter().filter(|(_, on)| *on).map(|(name, _)| *name).collect()
    }
}

impl ClientFlags {
    /// The flags after the verb, else those before it, else the environment, else defaults.
    pub fn resolve(&self, leading: &LeadingClientFlags) -> GlobalArgs {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        GlobalArgs {
            server: self
                .server
                .clone()
                .or_else(|| leading.server.clone())
                .or_else(|| env("SWITCHYARD_ADMIN_URL"))
                .unwrap_or_else(|| DEFAULT_SERVER.to_string()),
            admin_token: self
                .admin_token
                .clone()
                .or_else(|| leading.admin_token.clone())
                .or_else(|| env("SWITCHYARD_ADMIN_TOKEN"))
                .filter(|t| !t.is_empty()),
            query: self.query.clone().or_else(|| leading.query.clone()),
            output: self.output.or(leading.output),
            only_show_errors: self.only_show_errors || leading.only_show_errors,
            debug: self.debug || leading.debug,
            verbose: self.verbose || leading.verbose,
        }
    }
}

/// What a client verb runs with: [`ClientFlags`] resolved.
#[derive(Debug, Clone)]
pub struct GlobalArgs {
    pub server: String,
    pub admin_token: Option<String>,
    pub query: Option<String>,
    pub output: Option<OutputFormat>,
    pub only_show_errors: bool,
    pub debug: bool,
    pub verbose: bool,
}

/// Asks before a destructive operation, as `az` does: `--yes` skips the question; without it a
/// terminal gets a y/n prompt, and anything else (a script, CI) is refused rather than
/// deleting what nobody confirmed.
pub(crate) fn confirm(what: &str, yes: bool) -> Result<(), String> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!("{what}: unable to prompt for confirmation as no tty available. Use --yes."));
    }
    eprint!("{what}\nAre you sure you want to perform this operation? (y/n): ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).map_err(|e| format!("cannot read the answer: {e}"))?;
    match answer.trim() {
        "y" | "Y" | "yes" | "Yes" => Ok(()),
        _ => Err("operation cancelled".to_string()),
    }
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Jsonc,
    Table,
    Tsv,
    Yaml,
    Yamlc,
    None,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: the scoring plane and the admin API.
    Serve(ServeArgs),
    /// Manage the endpoint (create, show, update, list, delete, invoke, get-credentials, regenerate-keys).
    OnlineEndpoint(EndpointCommand),
    /// Manage deployments (create, show, update, list, delete, get-logs, compare).
    OnlineDeployment(DeploymentCommand),
    /// Registered models (create, list, show, archive, restore), as `az ml model`.
    Model(ModelCommand),
    /// Registered environments (create, list, show, archive, restore), as `az ml environment`.
    Environment(EnvironmentCommand),
    /// Check a server's readiness (GET /health/ready): exit 0 when ready, 1 otherwise. The
    /// container image's HEALTHCHECK (no shell tools needed).
    Probe(probe::ProbeArgs),
    /// Python environments: `env build -f conda.yaml` builds a deployment's venv into the
    /// cache ahead of time (at image build), so `serve` starts it without pip.
    #[command(subcommand)]
    Env(env::EnvVerb),
    /// The worker process of a native plugin deployed with `isolation: process` (started by
    /// `serve`, speaking frames on fds 3 and 4; not for use by hand).
    #[command(hide = true)]
    NativeWorker(NativeWorkerArgs),
}

/// `online-endpoint VERB`, with the client flags.
#[derive(Args, Debug)]
pub struct EndpointCommand {
    #[command(subcommand)]
    pub verb: endpoint::EndpointVerb,
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `online-deployment VERB`, with the client flags.
#[derive(Args, Debug)]
pub struct DeploymentCommand {
    #[command(subcommand)]
    pub verb: deployment::DeploymentVerb,
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `model VERB`, with the client flags.
#[derive(Args, Debug)]
pub struct ModelCommand {
    #[command(subcommand)]
    pub verb: asset::ModelVerb,
    #[command(flatten)]
    pub flags: ClientFlags,
}

/// `environment VERB`, with the client flags.
#[derive(Args, Debug)]
pub struct EnvironmentCommand {
    #[command(subcommand)]
    pub verb: asset::EnvironmentVerb,
    #[command(flatten)]
    pub flags: ClientFlags,
}

#[derive(Args, Debug)]
pub struct NativeWorkerArgs {
    /// The plugin's shared library.
    #[arg(long)]
    pub library: std::path::PathBuf,
    /// What the plugin's init receives as its model folder.
    #[arg(long)]
    pub model_dir: std::path::PathBuf,
}

/// Why `--local` is refused, and what to run instead: the README's one `docker run` line. The
/// server in the container is the same one the CLI talks to, so every verb then works against it
/// without `--local`.
pub(crate) const LOCAL_REFUSAL: &str = "--local is not supported: this CLI does not start Docker for you. \
Run the endpoint in a local container yourself (README, \"Local debugging in Docker\"), from the folder \
holding endpoint.yml, the deployment YAML files and what they point at:\n  \
docker run --rm -p 5001:5001 -p 127.0.0.1:5002:5002 -e SWITCHYARD_ADMIN_TOKEN=dev \
-v \"$PWD\":/var/azureml-app:ro switchyard serve --host 0.0.0.0 --admin-host 0.0.0.0 \
--config-dir /var/azureml-app\n(podman run takes the same arguments); then run this command again \
without --local, with --server http://127.0.0.1:5002 --admin-token dev.";

/// `--grpc-port`: a port, or `off` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcPort(pub Option<u16>);

fn parse_grpc_port(value: &str) -> Result<GrpcPort, String> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(GrpcPort(None));
    }
    value
        .parse::<u16>()
        .map(|p| GrpcPort(Some(p)))
        .map_err(|_| format!("expected a port (0 to 65535, 0 picks a free one) or `off`, got {value:?}"))
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Admin token: the admin API then requires `Authorization: Bearer TOKEN`.
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Address of the scoring plane (use 0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the scoring plane; 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 5001)]
    pub port: u16,
    /// Port of the Open Inference Protocol's gRPC plane (on --host), or `off`. Default: the
    /// scoring port + 2 (5003), a free port when --port is 0 (printed at start).
    #[arg(long, value_parser = parse_grpc_port)]
    pub grpc_port: Option<GrpcPort>,
    /// Address of the admin API; a non-loopback address needs --admin-token.
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_host: String,
    /// Port of the admin API; 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 5002)]
    pub admin_port: u16,
    /// Read the admin token from this file (a token given by --admin-token or
    /// SWITCHYARD_ADMIN_TOKEN is visible to the user's other processes until the server has
    /// started and overwritten it).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<std::path::PathBuf>,
    /// Host names (comma-separated) a token-less admin API also answers to, besides
    /// localhost, loopback addresses and --admin-host: requests naming any other Host are
    /// refused (DNS rebinding). Not needed with an admin token.
    #[arg(long, env = "SWITCHYARD_ADMIN_ALLOWED_HOSTS", value_delimiter = ',')]
    pub admin_allowed_hosts: Vec<String>,
    /// Scoring-plane worker threads (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest accepted /score body, in bytes (after decoding a gzip body).
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Milliseconds a /score body may take to arrive in full; a slower one gets 408 and its
    /// connection is closed (a trickling client would otherwise hold it forever).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub body_timeout_ms: u64,
    /// Most scoring-plane connections open at once (default: 25000 per worker, lowered to fit
    /// the file descriptor limit, which is raised to its hard limit at start); more wait in
    /// the listen backlog.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Lifetime of aml_token tokens, in seconds (1 to 31536000, one year).
    #[arg(long, default_value_t = 3600, value_parser = parse_token_lifetime)]
    pub token_lifetime_secs: u64,
    /// Absolute tolerance when comparing mirrored answers with live ones.
    #[arg(long, default_value_t = 1e-6)]
    pub compare_atol: f64,
    /// Relative tolerance when comparing mirrored answers with live ones.
    #[arg(long, default_value_t = 1e-6)]
    pub compare_rtol: f64,
    /// CPU the shadow (mirror) copies may use, in percent of one core (0 = no limit); copies
    /// beyond it are dropped and counted.
    #[arg(long, default_value_t = crate::server::DEFAULT_MIRROR_CPU_PERCENT)]
    pub mirror_cpu_percent: f64,
    /// Save the control-plane state here after each change, and restore it at start.
    #[arg(long)]
    pub state_dir: Option<std::path::PathBuf>,
    /// Registered models and environments (`switchyard model create`) are stored here
    /// [default: STATE_DIR/assets, or a temporary folder removed at exit without --state-dir].
    #[arg(long)]
    pub assets_dir: Option<std::path::PathBuf>,
    /// Where the data collector writes the records of deployments with `data_collector`
    /// [default: STATE_DIR/data, or $TMPDIR/switchyard-data without --state-dir].
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
    /// The most the data folder holds, in MiB; past it the oldest files are removed.
    #[arg(long, default_value_t = 1024)]
    pub data_max_mb: u64,
    /// Declarative mode: apply DIR/endpoint.yml and the deployment YAML files in DIR at start
    /// and whenever they change (the files then own the state; admin changes are refused).
    #[arg(long)]
    pub config_dir: Option<std::path::PathBuf>,
    /// Take the endpoint's keys and aml_token signing secret from files in DIR (a mounted
    /// Kubernetes Secret): primary-key, secondary-key, token-signing-key, optionally
    /// token-verify-key and admin-token. Watched: an edit rotates them with no restart, and
    /// regenerate-keys is refused.
    #[arg(long)]
    pub secrets_dir: Option<std::path::PathBuf>,
    /// Seconds a key (or signing key) that left --secrets-dir stays accepted (0 revokes at once).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub key_grace_secs: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Python interpreter for every score.py deployment; no environment is built from their
    /// conda files (for offline machines, or a venv made beforehand).
    #[arg(long, env = "SWITCHYARD_PYTHON")]
    pub python: Option<std::path::PathBuf>,
    /// Where venvs built from conda files are cached (default: ~/.cache/switchyard/envs).
    #[arg(long, env = "SWITCHYARD_ENV_CACHE_DIR")]
    pub env_cache_dir: Option<std::path::PathBuf>,
    /// Start scoring workers (score.py, process-isolated plugins) as USER[:GROUP] (names or
    /// numbers), so they cannot read the server's secrets: the admin token file, --secrets-dir,
    /// --state-dir. Needs a server started as root (CAP_SETUID, CAP_SETGID, CAP_CHOWN,
    /// CAP_KILL); the user must be able to read the code, model and Python environment.
    #[arg(long, env = "SWITCHYARD_WORKER_USER")]
    pub worker_user: Option<String>,
}

/// `--token-lifetime-secs`: refused outside 1 s ..= one year at parse time, because a lifetime
/// that overflows the clock (1e12 s) made every token request fail; a year is already far
/// beyond Azure's hour.
fn parse_token_lifetime(text: &str) -> Result<u64, String> {
    let max = crate::endpoint::auth::MAX_TOKEN_LIFETIME.as_secs();
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected a whole number of seconds from 1 to {max} (one year), got {text:?}")),
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let local = match &cli.command {
        Command::OnlineEndpoint(c) => c.flags.local,
        Command::OnlineDeployment(c) => c.flags.local,
        Command::Model(c) => c.flags.local,
        Command::Environment(c) => c.flags.local,
        _ => false,
    };
    if local || cli.leading.local {
        eprintln!("ERROR: {LOCAL_REFUSAL}");
        return 2;
    }
    match cli.command {
        Command::Serve(args) => {
            let client_only = cli.leading.client_only();
            if !client_only.is_empty() {
                eprintln!(
                    "ERROR: {} is a flag of the client verbs (online-endpoint, online-deployment), not of serve; see `switchyard serve --help`",
                    client_only.join(", ")
                );
                return 2;
            }
            // A token written before `serve` beats one `serve` only took from the environment.
            let from_env = args.admin_token.is_some()
                && args.admin_token.as_deref() == std::env::var("SWITCHYARD_ADMIN_TOKEN").ok().as_deref();
            let token = match cli.leading.admin_token {
                Some(t) if from_env || args.admin_token.is_none() => Some(t),
                _ => args.admin_token.clone(),
            };
            serve(args, token)
        }
        Command::OnlineEndpoint(c) => report(endpoint::run(c.verb, &c.flags.resolve(&cli.leading))),
        Command::OnlineDeployment(c) => report(deployment::run(c.verb, &c.flags.resolve(&cli.leading))),
        Command::Model(c) => report(asset::run_model(c.verb, &c.flags.resolve(&cli.leading))),
        Command::Environment(c) => report(asset::run_environment(c.verb, &c.flags.resolve(&cli.leading))),
        Command::Env(verb) => match env::run(verb) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(message) => report(Err(message)),
        },
        Command::Probe(args) => match probe::run(&args) {
            Ok(line) => {
                println!("{line}");
                0
            }
            Err(message) => report(Err(message)),
        },
        Command::NativeWorker(args) => crate::hooks::native::worker_main(&args.library, &args.model_dir),
    }
}

fn report(result: Result<(), String>) -> i32 {
    match result {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("ERROR: {message}");
            1
        }
    }
}

fn serve(args: ServeArgs, admin_token: Option<String>) -> i32 {
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let opts = ServeOptions {
        host: args.host,
        port: args.port,
        grpc_port_given: args.grpc_port.is_some(),
        grpc_port: match args.grpc_port {
            Some(GrpcPort(port)) => port,
            None if args.port == 0 => Some(0),
            None => Some(args.port.saturating_add(2)),
        },
        admin_host: args.admin_host,
        admin_port: args.admin_port,
        admin_token: admin_token.filter(|t| !t.is_empty()),
        admin_token_file: args.admin_token_file.filter(|p| !p.as_os_str().is_empty()),
        admin_allowed_hosts: args.admin_allowed_hosts,
        workers,
        max_body_bytes: args.max_body_bytes,
        body_timeout: Duration::from_millis(args.body_timeout_ms),
        max_connections: args.max_connections.map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        token_lifetime: Duration::from_secs(args.token_lifetime_secs),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        state_dir: args.state_dir,
        assets_dir: args.assets_dir.filter(|p| !p.as_os_str().is_empty()),
        data_dir: args.data_dir.filter(|p| !p.as_os_str().is_empty()),
        data_max_mb: args.data_max_mb.max(1),
        config_dir: args.config_dir,
        secrets_dir: args.secrets_dir.filter(|p| !p.as_os_str().is_empty()),
        key_grace: Duration::from_secs(args.key_grace_secs),
        tolerance: crate::mirror::Tolerance { atol: args.compare_atol.max(0.0), rtol: args.compare_rtol.max(0.0) },
        mirror_cpu_percent: args.mirror_cpu_percent,
        python: crate::hooks::python::PythonOptions {
            python: args.python.filter(|p| !p.as_os_str().is_empty()),
            env_cache_dir: args.env_cache_dir.filter(|p| !p.as_os_str().is_empty()),
        },
        worker_user: args.worker_user,
    };
    let served = crate::server::serve(opts);
    // The server's private copies of native plugins go with it (SIGTERM included).
    crate::hooks::native::remove_plugin_copies();
    match served {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "ERROR: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// A `serve` option read from the environment that holds a secret, or says where one is,
    /// must be kept from the workers (`sys::scrub::SECRET_VARIABLES`, removed in
    /// `hooks::worker::Worker::spawn`): a scoring script inherits the rest.
    #[test]
    fn every_secret_variable_of_serve_is_kept_from_workers() {
        let cli = super::Cli::command();
        let serve = cli.find_subcommand("serve").expect("serve");
        let mut secret = Vec::new();
        for arg in serve.get_arguments() {
            let Some(env) = arg.get_env().and_then(|e| e.to_str()) else { continue };
            let id = arg.get_id().as_str();
            if ["token", "secret", "key"].iter().any(|w| id.contains(w)) {
                secret.push(env.to_string());
            }
        }
        assert!(secret.contains(&"SWITCHYARD_ADMIN_TOKEN_FILE".to_string()), "{secret:?}");
        for env in &secret {
            assert!(crate::sys::scrub::SECRET_VARIABLES.contains(&env.as_str()), "{env} reaches the workers");
        }
    }
}
