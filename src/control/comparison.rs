//! The mirror comparison report of a deployment: read, reset, and reset when the mirror rule
//! changes (a report always describes one rule); and the effective mirror share (wanted /
//! copied / dropped by reason) shown with the shadow deployment.

use super::views::{ComparisonView, ToleranceInput};
use super::ControlError;
use super::{ControlPlane, DeploymentRecord, State};
use crate::mirror::{ShareView, Tolerance};
use crate::spec::Traffic;

impl ControlPlane {
    /// `GET /v1/deployments/{name}/comparison`.
    pub(crate) fn comparison(&self, name: &str) -> Result<ComparisonView, ControlError> {
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| super::deployments::unknown_deployment(name, &state))?;
        let ep = state.endpoint.as_ref();
        let percent = ep.and_then(|e| e.spec.mirror_traffic.get(name)).copied().unwrap_or(0);
        let live_deployments = ep
            .map(|e| e.spec.traffic.iter().filter(|(_, w)| **w > 0).map(|(n, _)| n.clone()).collect())
            .unwrap_or_default();
        Ok(ComparisonView {
            report: record.shadow.report.view(),
            deployment: name.to_string(),
            queued: record.shadow.queued_copies(),
            mirror_percent: percent,
            mirror: record.shadow.report.share().view(percent),
            live_deployments,
        })
    }

    /// The `mirror` object of a deployment's view (`online-deployment show`): the effective
    /// share since the mirror rule was set, so that a user who asked for 10% sees whether the
    /// shadow got 10%. Present while the deployment is the mirror target, or while copies it
    /// was sent are still counted; `None` otherwise. Reads the routing snapshot, not the state,
    /// so it may be called with the state lock held.
    pub(super) fn mirror_view(&self, record: &DeploymentRecord) -> Option<ShareView> {
        let routing = self.routing.load();
        let percent = routing
            .endpoint
            .as_ref()
            .and_then(|e| e.mirror.as_ref())
            .filter(|(d, _)| d.deployment.name() == record.spec.name)
            .map_or(0, |(_, p)| *p);
        let share = record.shadow.report.share();
        (percent > 0 || share.wanted > 0).then(|| share.view(percent))
    }

    /// `POST /v1/deployments/{name}/comparison/reset`, optionally with a new `atol`/`rtol`
    /// (a field left out keeps its current value).
    pub(crate) fn reset_comparison(&self, name: &str, input: ToleranceInput) -> Result<ComparisonView, ControlError> {
        for (key, value) in [("atol", input.atol), ("rtol", input.rtol)] {
            if let Some(v) = value.filter(|x| !(x.is_finite() && *x >= 0.0)) {
                return Err(ControlError::invalid(format!("{key} must be a non-negative number, got {v}")));
            }
        }
        {
            let state = self.lock();
            let record =
                state.deployments.get(name).ok_or_else(|| super::deployments::unknown_deployment(name, &state))?;
            let current = record.shadow.report.tolerance();
            let tolerance =
                Tolerance { atol: input.atol.unwrap_or(current.atol), rtol: input.rtol.unwrap_or(current.rtol) };
            record.shadow.report.reset(Some(tolerance));
        }
        self.comparison(name)
    }

    /// Resets the reports of the shadows whose rule changes between `old` and `new`.
    pub(super) fn reset_comparisons(&self, state: &State, old: &Traffic, new: &Traffic) {
        if old == new {
            return;
        }
        for name in old.keys().chain(new.keys()) {
            if let Some(record) = state.deployments.get(name) {
                record.shadow.report.reset(None);
            }
        }
    }
}
