//! Coming back from a restart: the saved endpoint, credentials and deployments are recreated,
//! every deployment's instances are loaded, and only then is the saved traffic published. Until
//! that moment the scoring plane answers 503 and readiness is false, so no request sees a
//! half-restored endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::store::Durable;
use super::{ControlPlane, DeploymentRecord, EndpointRecord};
use crate::deployment::{Deployment, ProvisioningState};
use crate::spec::HookKind;

impl ControlPlane {
    /// Marks the control plane as restoring (the scoring plane answers 503 until
    /// [`restore`](Self::restore) finishes).
    pub fn begin_restore(&self) {
        self.restoring.store(true, Ordering::Release);
        self.publish(&self.lock());
    }

    /// Stops serving new scoring requests (503, readiness false) for a graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        self.publish(&self.lock());
    }

    /// Recreates the saved state and loads every deployment; returns when traffic is live.
    pub async fn restore(self: &Arc<Self>, saved: Durable) {
        self.begin_restore();
        let mut loads = Vec::new();
        {
            let mut state = self.lock();
            if let Some(ep) = saved.endpoint {
                state.endpoint = Some(EndpointRecord {
                    spec: ep.spec,
                    credentials: ep.credentials,
                    all_traffic_on_ready: ep.all_traffic_on_ready,
                });
            }
            for spec in saved.deployments {
                state.next_generation += 1;
                let generation = state.next_generation;
                let (kind, problem) = match spec.hook_kind() {
                    Ok(kind) => (kind, None),
                    Err(e) => (HookKind::Onnx { model_file: spec.model.path.clone() }, Some(e.message)),
                };
                let live = Deployment::new(&spec, kind, &self.metrics, self.options.tolerance, self.runtime.clone());
                match problem {
                    Some(error) => {
                        tracing::warn!(deployment = %spec.name, %error, "saved deployment cannot be loaded");
                        live.state.set(ProvisioningState::Failed, Some(error));
                    }
                    None => loads.push((spec.clone(), Arc::clone(&live), generation)),
                }
                state.deployments.insert(spec.name.clone(), DeploymentRecord { spec, live, generation });
            }
        }
        let tasks: Vec<_> = loads
            .into_iter()
            .map(|(spec, live, generation)| {
                let cp = Arc::clone(self);
                self.runtime.spawn(async move {
                    let count = spec.instance_count as usize;
                    live.logs.push(format!("restoring: loading {count} instance(s)"));
                    let outcome = live.pool.add(count).await;
                    cp.finish_load(spec, live, generation, outcome).await;
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        self.restoring.store(false, Ordering::Release);
        let state = self.lock();
        self.publish(&state);
        tracing::info!(deployments = state.deployments.len(), "saved state restored");
    }
}
