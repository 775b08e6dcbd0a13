//! The command line: `switchyard serve` and the `az ml`-style verbs, which talk to the admin
//! API of a running server (`--server URL` or `SWITCHYARD_ADMIN_URL`).

mod client;
mod deployment;
mod endpoint;
mod output;

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
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Flags every client verb accepts (and the Azure flags accepted and ignored).
#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Admin API of the server to talk to.
    #[arg(long, global = true, env = "SWITCHYARD_ADMIN_URL", default_value = "http://127.0.0.1:5002")]
    pub server: String,
    /// Admin token, when the server requires one.
    #[arg(long, global = true, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
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
    /// Accepted for Azure CLI compatibility; ignored.
    #[arg(long, global = true, hide = true)]
    pub local: bool,
}

/// How results are printed.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    Json,
    Jsonc,
    Tsv,
    Yaml,
    None,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server: the scoring plane and the admin API.
    Serve(ServeArgs),
    /// Manage the endpoint (create, show, update, list, delete, invoke, get-credentials, regenerate-keys).
    #[command(subcommand)]
    OnlineEndpoint(endpoint::EndpointVerb),
    /// Manage deployments (create, show, update, list, delete, get-logs, compare).
    #[command(subcommand)]
    OnlineDeployment(deployment::DeploymentVerb),
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address of the scoring plane (use 0.0.0.0 in a container).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the scoring plane; 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 5001)]
    pub port: u16,
    /// Address of the admin API; a non-loopback address needs --admin-token.
    #[arg(long, default_value = "127.0.0.1")]
    pub admin_host: String,
    /// Port of the admin API; 0 picks a free port (printed at start).
    #[arg(long, default_value_t = 5002)]
    pub admin_port: u16,
    /// Scoring-plane worker threads (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Largest accepted /score body, in bytes.
    #[arg(long, default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Lifetime of aml_token tokens, in seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
    /// Absolute tolerance when comparing mirrored answers with live ones.
    #[arg(long, default_value_t = 1e-6)]
    pub compare_atol: f64,
    /// Relative tolerance when comparing mirrored answers with live ones.
    #[arg(long, default_value_t = 1e-6)]
    pub compare_rtol: f64,
    /// CPU the shadow (mirror) copies may use, in percent of one core (0 = no limit); copies
    /// beyond it are dropped and counted.
    #[arg(long, default_value_t = crate::deployment::background::DEFAULT_SHADOW_CPU_PERCENT)]
    pub mirror_cpu_percent: f64,
    /// Save the control-plane state here after each change, and restore it at start.
    #[arg(long)]
    pub state_dir: Option<std::path::PathBuf>,
    /// Declarative mode: apply DIR/endpoint.yml and the deployment YAML files in DIR at start
    /// and whenever they change (the files then own the state; admin changes are refused).
    #[arg(long)]
    pub config_dir: Option<std::path::PathBuf>,
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
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve(args) => serve(args, cli.global.admin_token),
        Command::OnlineEndpoint(verb) => report(endpoint::run(verb, &cli.global)),
        Command::OnlineDeployment(verb) => report(deployment::run(verb, &cli.global)),
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
    crate::telemetry::init_tracing();
    crate::deployment::background::set_shadow_budget(args.mirror_cpu_percent);
    crate::hooks::python::configure(crate::hooks::python::PythonOptions {
        python: args.python.filter(|p| !p.as_os_str().is_empty()),
        env_cache_dir: args.env_cache_dir.filter(|p| !p.as_os_str().is_empty()),
    });
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let opts = ServeOptions {
        host: args.host,
        port: args.port,
        admin_host: args.admin_host,
        admin_port: args.admin_port,
        admin_token: admin_token.filter(|t| !t.is_empty()),
        workers,
        max_body_bytes: args.max_body_bytes,
        token_lifetime: Duration::from_secs(args.token_lifetime_secs.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        state_dir: args.state_dir,
        config_dir: args.config_dir,
        tolerance: crate::mirror::Tolerance { atol: args.compare_atol.max(0.0), rtol: args.compare_rtol.max(0.0) },
    };
    // The main runtime runs control-plane work (loads' bookkeeping, drains, the config
    // watcher): below the scoring workers in priority.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| crate::deployment::background::set_nice(crate::deployment::background::CONTROL_NICE))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: cannot start the async runtime: {e}");
            return 1;
        }
    };
    match runtime.block_on(crate::server::run(opts)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ERROR: {e}");
            1
        }
    }
}
