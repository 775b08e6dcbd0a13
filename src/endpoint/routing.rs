//! The routing snapshot: everything the front door needs to route one request, immutable once
//! built. The control plane builds a new one after each accepted change and swaps it in
//! atomically, so a request sees one consistent table and takes no lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Credentials, WeightedSplit};
use crate::deployment::Deployment;
use crate::mirror::Shadow;

/// What the scoring plane serves right now: every endpoint of the process by name.
#[derive(Default)]
pub(crate) struct RoutingTable {
    /// The endpoints that serve, by name (`/endpoints/NAME/...`, `Host: NAME.localhost`).
    pub endpoints: HashMap<Box<str>, Arc<EndpointView>>,
    /// The endpoint, when the process holds exactly one and it serves: the bare `/score` and
    /// `/v2/...` routes go there (containers, manifests and scripts of the one-endpoint
    /// days). A separate field so that those requests make no lookup by name.
    pub only: Option<Arc<EndpointView>>,
    /// Endpoints whose saved state is being restored: they answer 503 until it is.
    pub restoring: Vec<String>,
    /// Why the scoring plane answers 503 to every request now, if it does.
    pub unavailable: Option<Unavailable>,
}
/// Why no request is routed right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unavailable {
    /// A saved state is being restored: traffic goes live once its deployments are loaded.
    Restoring,
    /// SIGTERM was received: requests in flight finish, new ones are refused.
    ShuttingDown,
}

impl Unavailable {
    /// What a refused client is told.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Unavailable::Restoring => "the server is restoring its saved state: retry shortly",
            Unavailable::ShuttingDown => "the server is shutting down: retry on another replica",
        }
    }
}

/// One endpoint's routing rules and deployments.
pub(crate) struct EndpointView {
    /// The endpoint's name.
    pub name: String,
    /// Who may call `/score`.
    pub credentials: Credentials,
    /// Every deployment by name, for pinned requests (they work at 0 traffic).
    pub deployments: HashMap<String, Arc<Deployment>>,
    /// Live traffic.
    pub split: WeightedSplit,
    /// The shadow deployment and the percent of unpinned requests copied to it.
    pub mirror: Option<(Arc<Shadow>, u32)>,
    /// The header (lower case) whose value routes a request by a stable hash
    /// (`traffic_affinity`), when set.
    pub affinity: Option<String>,
}

impl RoutingTable {
    /// Ready (`/health/ready`) when nothing is being restored and an endpoint has a
    /// deployment with live traffic and a loaded instance.
    pub(crate) fn ready(&self) -> bool {
        self.unavailable.is_none()
            && self.restoring.is_empty()
            && self.endpoints.values().any(|e| e.split.deployments().any(|d| d.pool().ready() > 0))
    }

    /// The names of every endpoint, sorted (for messages that list them).
    pub(crate) fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> =
            self.endpoints.keys().map(|k| &**k).chain(self.restoring.iter().map(String::as_str)).collect();
        names.sort_unstable();
        names
    }
}
