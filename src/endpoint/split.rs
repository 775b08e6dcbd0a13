//! Weighted choice of a live deployment.
//!
//! Built only from traffic maps the control plane validated (integers summing to 100), with
//! zero weights dropped, so picking needs no checks: one random number and a scan over at most
//! 20 entries.

use std::sync::Arc;

use crate::deployment::Deployment;

/// Deployments with live traffic and their cumulative percent bounds.
#[derive(Clone, Default)]
pub struct WeightedSplit {
    /// `(upper bound, deployment)` with increasing bounds; the last bound is the total.
    entries: Vec<(u32, Arc<Deployment>)>,
}

impl WeightedSplit {
    /// Builds the split from `(deployment, percent)` pairs; zero weights are left out so they
    /// can never be picked.
    pub fn new(weights: impl IntoIterator<Item = (Arc<Deployment>, u32)>) -> Self {
        let mut total = 0;
        let entries = weights
            .into_iter()
            .filter(|(_, w)| *w > 0)
            .map(|(d, w)| {
                total += w;
                (total, d)
            })
            .collect();
        Self { entries }
    }

    /// Picks a deployment in proportion to its weight; `None` when no deployment has traffic.
    pub fn pick(&self) -> Option<&Arc<Deployment>> {
        self.pick_with(|total| fastrand::u32(0..total))
    }

    /// [`pick`](Self::pick) with a given random source (for tests and benchmarks).
    pub fn pick_with(&self, random_below: impl FnOnce(u32) -> u32) -> Option<&Arc<Deployment>> {
        let total = self.entries.last()?.0;
        let r = random_below(total);
        self.entries.iter().find(|(bound, _)| r < *bound).map(|(_, d)| d)
    }

    /// The deployments that receive live traffic.
    pub fn deployments(&self) -> impl Iterator<Item = &Arc<Deployment>> {
        self.entries.iter().map(|(_, d)| d)
    }
}
