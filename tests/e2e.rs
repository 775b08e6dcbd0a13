//! The end-to-end tests, in one test binary: one link instead of one per file, and one copy
//! of the shared helpers (`common`). Each area keeps its own file, tests/AREA.rs, as a
//! module here; run one area with `cargo test --test e2e AREA::`.

mod common;

#[path = "admin_hardening.rs"]
mod admin_hardening;
#[path = "azure_script.rs"]
mod azure_script;
#[path = "batching.rs"]
mod batching;
#[path = "blocking_files.rs"]
mod blocking_files;
#[path = "cli_parity.rs"]
mod cli_parity;
#[path = "cluster.rs"]
mod cluster;
#[path = "config_dir.rs"]
mod config_dir;
#[path = "container.rs"]
mod container;
#[path = "contract.rs"]
mod contract;
#[path = "crash.rs"]
mod crash;
#[path = "cross_site.rs"]
mod cross_site;
#[path = "data_collector.rs"]
mod data_collector;
#[path = "debugger.rs"]
mod debugger;
#[path = "failures.rs"]
mod failures;
#[path = "fuzz_http.rs"]
mod fuzz_http;
#[path = "grpc.rs"]
mod grpc;
#[path = "guarded_rollout.rs"]
mod guarded_rollout;
#[path = "hardening.rs"]
mod hardening;
#[path = "many_endpoints.rs"]
mod many_endpoints;
#[path = "mirror.rs"]
mod mirror;
#[path = "mirror_busy.rs"]
mod mirror_busy;
#[path = "native.rs"]
mod native;
#[path = "oip.rs"]
mod oip;
#[path = "python_hook.rs"]
mod python_hook;
#[path = "python_worker.rs"]
mod python_worker;
#[path = "python_workers.rs"]
mod python_workers;
#[path = "registered_assets.rs"]
mod registered_assets;
#[path = "reliability.rs"]
mod reliability;
#[path = "rollout.rs"]
mod rollout;
#[path = "scaling.rs"]
mod scaling;
#[path = "scoring_api.rs"]
mod scoring_api;
#[path = "sdk.rs"]
mod sdk;
#[path = "secrets_dir.rs"]
mod secrets_dir;
#[path = "slow_init.rs"]
mod slow_init;
#[path = "studio.rs"]
mod studio;
#[path = "token_exposure.rs"]
mod token_exposure;
#[path = "traces.rs"]
mod traces;
#[path = "validation.rs"]
mod validation;
#[path = "walkthrough.rs"]
mod walkthrough;
