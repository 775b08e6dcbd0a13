//! Switchyard: Azure ML managed-online-endpoint semantics (blue/green deployments, traffic split,
//! mirror traffic, direct invocation, scaling, key auth, logs) in one process.
//!
//! Module map (see docs/ARCHITECTURE.md), each layer using only the ones below it:
//! `server` (the HTTP planes, the front door, process wiring) → `control` (the one owner of
//! the state, publishing routing snapshots) and `endpoint` (the snapshot, split, credentials)
//! and `mirror` (shadow copies and their comparison) → `deployment` (worker pools) → `hooks`
//! (scoring) → `spec` (the Azure YAML and its rules). `telemetry`, `threads` and `sys` are
//! leaves; `cli` is the `az ml`-style client on top.
//!
//! The public surface is what the binary, the benchmarks and the property tests use: the CLI
//! entry, the spec types, and the hot-path pieces the micro benchmarks measure.
#![deny(unsafe_code)]
// Files are read through sys::files::read_bounded (clippy.toml says why).
#![warn(clippy::disallowed_methods)]

mod assets;
mod cli;
mod collector;
mod control;
mod deployment;
mod endpoint;
mod hooks;
mod mirror;
mod server;
pub mod spec;
mod sys;
mod telemetry;
mod threads;

pub use cli::{run, Cli};
pub use deployment::Deployment;
pub use endpoint::split::{affinity_hash, affinity_point};
pub use endpoint::{Credentials, WeightedSplit};
pub use hooks::native::NativeHook;
pub use hooks::onnx::OnnxHook;
pub use hooks::{
    tensor_json, Headers, HookError, HookRequest, HookResponse, InitContext, Protocol, Request, ScoringHook,
};
pub use telemetry::Metrics;
