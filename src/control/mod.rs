//! The control plane: the one owner of the endpoint's state. Every change is validated here
//! completely before anything is touched; an accepted change updates the state and publishes a
//! new routing snapshot in one step, so the front door never sees a half-applied change.

pub mod api;
mod comparison;
mod deployments;
mod endpoint;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::deployment::Deployment;
use crate::endpoint::{Credentials, EndpointView, RoutingTable, WeightedSplit};
use crate::mirror::Tolerance;
use crate::spec::{DeploymentSpec, EndpointSpec};
use crate::telemetry::Metrics;

/// The control plane's state: the endpoint and its deployments.
#[derive(Default)]
struct State {
    endpoint: Option<EndpointRecord>,
    deployments: BTreeMap<String, DeploymentRecord>,
    /// Increases with each deployment created or replaced, so a finished background load can
    /// tell whether its deployment is still the current one.
    next_generation: u64,
}

/// The endpoint as accepted: its spec holds the normalised traffic (every deployment listed)
/// and mirror rule (only a non-zero entry).
struct EndpointRecord {
    spec: EndpointSpec,
    credentials: Credentials,
}

/// One deployment: the spec the user gave and the live pool serving it.
struct DeploymentRecord {
    spec: DeploymentSpec,
    live: Arc<Deployment>,
    generation: u64,
}

/// The control plane, shared by the admin API (and later the config-dir watcher).
pub struct ControlPlane {
    state: Mutex<State>,
    routing: Arc<ArcSwap<RoutingTable>>,
    metrics: Arc<Metrics>,
    /// Where background work (model loads, drains) runs.
    runtime: tokio::runtime::Handle,
    /// The scoring plane's base URL, known once it is bound.
    scoring_base: OnceLock<String>,
    /// Settings given at start.
    options: ControlOptions,
}

/// Settings of the control plane that come from `switchyard serve`'s flags.
#[derive(Debug, Clone, Copy)]
pub struct ControlOptions {
    /// Lifetime of `aml_token` tokens.
    pub token_lifetime: Duration,
    /// Default tolerance of mirror comparisons.
    pub tolerance: Tolerance,
}

impl ControlPlane {
    /// A control plane with no endpoint. Call from inside a tokio runtime.
    pub fn new(metrics: Arc<Metrics>, options: ControlOptions) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            routing: Arc::new(ArcSwap::from_pointee(RoutingTable::default())),
            metrics,
            runtime: tokio::runtime::Handle::current(),
            scoring_base: OnceLock::new(),
            options,
        })
    }

    /// The routing snapshot the front door reads.
    pub fn routing(&self) -> Arc<ArcSwap<RoutingTable>> {
        Arc::clone(&self.routing)
    }

    /// Records the scoring plane's address (for `scoring_uri`).
    pub fn set_scoring_base(&self, base: String) {
        let _ = self.scoring_base.set(base);
    }

    /// Prometheus text, with the gauges that are read rather than counted (instances, mirror
    /// comparison, process) refreshed first.
    pub fn metrics_text(&self) -> String {
        {
            let state = self.lock();
            for record in state.deployments.values() {
                let c = record.live.pool.counts();
                record.live.metrics.set_instances(c.ready, c.loading, c.draining, c.failed);
                record.live.metrics.set_mirror(&record.live.mirror_report.gauges());
            }
        }
        self.metrics.refresh_process();
        self.metrics.render()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-changed: every change is
        // computed first and applied with plain assignments. So a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Builds the routing snapshot from `state` and swaps it in.
    fn publish(&self, state: &State) {
        let table = match &state.endpoint {
            None => RoutingTable::default(),
            Some(ep) => {
                let live = |name: &String| state.deployments.get(name).map(|r| Arc::clone(&r.live));
                RoutingTable {
                    endpoint: Some(EndpointView {
                        name: ep.spec.name.clone(),
                        credentials: ep.credentials.clone(),
                        deployments: state.deployments.iter().map(|(n, r)| (n.clone(), Arc::clone(&r.live))).collect(),
                        split: WeightedSplit::new(ep.spec.traffic.iter().filter_map(|(n, w)| live(n).map(|d| (d, *w)))),
                        mirror: ep.spec.mirror_traffic.iter().find_map(|(n, p)| live(n).map(|d| (d, *p))),
                    }),
                }
            }
        };
        self.routing.store(Arc::new(table));
    }
}
