//! The mirror comparison report of a deployment: read, reset, and reset when the mirror rule
//! changes (a report always describes one rule); and the effective mirror share (wanted /
//! copied / dropped by reason) shown with the shadow deployment.

use serde_json::{json, Value};

use super::ControlError;
use super::{ControlPlane, DeploymentRecord, State};
use crate::mirror::Tolerance;
use crate::spec::Traffic;

impl ControlPlane {
    /// `GET /v1/deployments/{name}/comparison`.
    pub(crate) fn comparison(&self, name: &str) -> Result<Value, ControlError> {
        let state = self.lock();
        let record = state.deployments.get(name).ok_or_else(|| super::deployments::unknown_deployment(name, &state))?;
        let mut report = record.shadow.report.to_json();
        let ep = state.endpoint.as_ref();
        let percent = ep.and_then(|e| e.spec.mirror_traffic.get(name)).copied().unwrap_or(0);
        let live: Vec<&String> =
            ep.map(|e| e.spec.traffic.iter().filter(|(_, w)| **w > 0).map(|(n, _)| n).collect()).unwrap_or_default();
        report["deployment"] = json!(name);
        report["queued"] = json!(record.shadow.queued_copies());
        report["mirror_percent"] = json!(percent);
        report["mirror"] = record.shadow.report.share().to_json(percent);
        report["live_deployments"] = json!(live);
        Ok(report)
    }

    /// The `mirror` object of a deployment's view (`online-deployment show`): the effective
    /// share since the mirror rule was set, so that a user who asked for 10% sees whether the
    /// shadow got 10%. Present while the deployment is the mirror target, or while copies it
    /// was sent are still counted; `None` otherwise. Reads the routing snapshot, not the state,
    /// so it may be called with the state lock held.
    pub(super) fn mirror_view(&self, record: &DeploymentRecord) -> Option<Value> {
        let routing = self.routing.load();
        let percent = routing
            .endpoint
            .as_ref()
            .and_then(|e| e.mirror.as_ref())
            .filter(|(d, _)| d.deployment.name() == record.spec.name)
            .map_or(0, |(_, p)| *p);
        let share = record.shadow.report.share();
        (percent > 0 || share.wanted > 0).then(|| share.to_json(percent))
    }

    /// `POST /v1/deployments/{name}/comparison/reset`, optionally with a new `atol`/`rtol`.
    pub(crate) fn reset_comparison(&self, name: &str, body: Option<Value>) -> Result<Value, ControlError> {
        let tolerance = {
            let state = self.lock();
            let record =
                state.deployments.get(name).ok_or_else(|| super::deployments::unknown_deployment(name, &state))?;
            let current = record.shadow.report.tolerance();
            let field = |key: &str, default: f64| -> Result<f64, ControlError> {
                match body.as_ref().and_then(|b| b.get(key)) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v
                        .as_f64()
                        .filter(|x| x.is_finite() && *x >= 0.0)
                        .ok_or_else(|| ControlError::invalid(format!("{key} must be a non-negative number, got {v}"))),
                }
            };
            if let Some(b) = &body {
                if !b.is_object() && !b.is_null() {
                    return Err(ControlError::invalid("expected {\"atol\": number, \"rtol\": number} (both optional)"));
                }
            }
            Tolerance { atol: field("atol", current.atol)?, rtol: field("rtol", current.rtol)? }
        };
        {
            let state = self.lock();
            if let Some(record) = state.deployments.get(name) {
                record.shadow.report.reset(Some(tolerance));
            }
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
