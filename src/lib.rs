//! Switchyard: Azure ML managed-online-endpoint semantics (blue/green deployments, traffic split,
//! mirror traffic, direct invocation, scaling, key auth, logs) in one process.
//!
//! Module map (see docs/ARCHITECTURE.md): `spec` parses and validates the Azure YAML;
//! `control` owns the state and publishes routing snapshots; `endpoint` is the front door that
//! reads them; `deployment` holds the worker pools; `hooks` score requests; `server` wires the
//! HTTP planes; `telemetry` logs and counts; `cli` is the `az ml`-style client.

pub mod cli;
pub mod control;
pub mod deployment;
pub mod endpoint;
pub mod hooks;
pub mod mirror;
pub mod server;
pub mod spec;
mod sys;
pub mod telemetry;
mod threads;
