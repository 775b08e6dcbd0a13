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
        let percent = self
            .published()
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
        {
            let state = self.lock();
            let record =
                state.deployments.get(name).ok_or_else(|| super::deployments::unknown_deployment(name, &state))?;
            for (key, value) in [("atol", input.atol), ("rtol", input.rtol)] {
                if let Some(v) = value.filter(|x| !(x.is_finite() && *x >= 0.0)) {
                    return Err(ControlError::invalid(format!("{key} must be a non-negative number, got {v}")));
                }
            }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::super::loader::FakeLoader;
    use super::super::tests::{control, deployment, endpoint, loaded};
    use super::*;

    #[tokio::test]
    async fn a_reset_keeps_the_tolerance_left_out_and_refuses_a_negative_one() {
        let cp = control(&Arc::new(FakeLoader::default()), None);
        endpoint(&cp);
        loaded(&cp, deployment("green", "models/v2", json!({}))).await;
        let before = cp.comparison("green").unwrap().report.tolerance;
        let after = cp.reset_comparison("green", ToleranceInput { atol: Some(0.5), rtol: None }).unwrap();
        assert_eq!((after.report.tolerance.atol, after.report.tolerance.rtol), (0.5, before.rtol));
        for bad in
            [ToleranceInput { atol: Some(-1.0), rtol: None }, ToleranceInput { atol: None, rtol: Some(f64::NAN) }]
        {
            let e = cp.reset_comparison("green", bad).unwrap_err();
            assert!(e.to_string().contains("non-negative number"), "{e}");
        }
        assert_eq!(cp.comparison("green").unwrap().report.tolerance.atol, 0.5, "a refused reset changed nothing");
        let e = cp.reset_comparison("blue", ToleranceInput::default()).unwrap_err();
        assert!(matches!(e, ControlError::NotFound(_)), "{e}");
    }

    #[tokio::test]
    async fn the_report_names_the_rule_and_the_live_side() {
        let cp = control(&Arc::new(FakeLoader::default()), None);
        endpoint(&cp);
        loaded(&cp, deployment("blue", "models/v1", json!({}))).await;
        loaded(&cp, deployment("green", "models/v2", json!({}))).await;
        cp.patch_endpoint(json!({"traffic": {"blue": 100}, "mirror_traffic": {"green": 20}})).unwrap();
        let c = cp.comparison("green").unwrap();
        assert_eq!((c.deployment.as_str(), c.mirror_percent), ("green", 20));
        assert_eq!(c.live_deployments, ["blue"]);
        assert_eq!(c.mirror.percent, 20);
        assert!(cp.get_deployment("green").unwrap().mirror.is_some(), "show carries the share while it is the shadow");
        assert!(cp.get_deployment("blue").unwrap().mirror.is_none());
    }
}
