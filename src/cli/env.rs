//! `switchyard env build`: bakes a deployment's conda environment into the cache at image build
//! time. It builds (or finds) the venv exactly as a deployment's create does — the same cache
//! key, folder and progress lines — so a later `serve` with the same `--env-cache-dir` finds it
//! and starts the deployment without running pip.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::hooks::python::env::{self, Stderr};

#[derive(Subcommand, Debug)]
pub enum EnvVerb {
    /// Build (or find) the venv of a conda file in the environment cache; prints its folder.
    Build(BuildArgs),
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The conda file (a deployment's `environment.conda_file`).
    #[arg(short = 'f', long)]
    pub file: PathBuf,
    /// Where venvs are cached: give `serve` the same folder (default: ~/.cache/switchyard/envs).
    #[arg(long, env = "SWITCHYARD_ENV_CACHE_DIR")]
    pub env_cache_dir: Option<PathBuf>,
    /// The interpreter to make the venv from, instead of the one the file's `python=X.Y`
    /// picks (an image's own Python); the cache key stays the file's, so `serve` finds it.
    #[arg(long)]
    pub python: Option<PathBuf>,
}

/// Runs the verb: progress on stderr, the venv's folder as the last line on stdout.
pub(super) fn run(verb: EnvVerb) -> Result<String, String> {
    match verb {
        EnvVerb::Build(args) => {
            let build = crate::spec::python::conda_file(&args.file).map_err(|e| e.message)?;
            env::configure(env::PythonOptions {
                python: None,
                env_cache_dir: args.env_cache_dir.filter(|p| !p.as_os_str().is_empty()),
            });
            let base = args.python.filter(|p| !p.as_os_str().is_empty());
            let venv = env::prebuild(&build, base.as_deref(), Arc::new(Stderr)).map_err(|e| e.to_string())?;
            Ok(venv.display().to_string())
        }
    }
}
