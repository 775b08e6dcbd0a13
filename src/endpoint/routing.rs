//! The routing snapshot: everything the front door needs to route one request, immutable once
//! built. The control plane builds a new one after each accepted change and swaps it in
//! atomically, so a request sees one consistent table and takes no lock.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Credentials, WeightedSplit};
use crate::deployment::Deployment;
use crate::mirror::Shadow;

/// What the scoring plane serves right now.
#[derive(Default)]
pub struct RoutingTable {
    /// The hosted endpoint, if one was created.
    pub endpoint: Option<EndpointView>,
    /// A saved state is being restored (or the server is stopping): answer 503.
    pub restoring: bool,
}

/// One endpoint's routing rules and deployments.
pub struct EndpointView {
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
}

impl RoutingTable {
    /// Ready when a deployment with live traffic has a loaded instance (`/health/ready`).
    pub fn ready(&self) -> bool {
        self.endpoint.as_ref().is_some_and(|e| e.split.deployments().any(|d| d.pool.ready() > 0))
    }
}
