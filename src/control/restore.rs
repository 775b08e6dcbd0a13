//! Coming back from a restart: the saved endpoint, credentials and deployments are recreated,
//! every deployment's instances are loaded, and only then is the saved traffic published. Until
//! that moment the scoring plane answers 503 and readiness is false, so no request sees a
//! half-restored endpoint.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::rollout::RolloutRecord;
use super::store::Durable;
use super::{ControlPlane, DeploymentRecord, EndpointRecord};
use crate::deployment::{Deployment, ProvisioningState};
use crate::spec::{DeploymentSpec, HookKind};

impl ControlPlane {
    /// Marks the control plane as restoring (the scoring plane answers 503 until
    /// [`restore`](Self::restore) finishes).
    pub(crate) fn begin_restore(&self) {
        self.restoring.store(true, Ordering::Release);
        self.publish(&self.lock());
    }

    /// Part of a graceful shutdown (the workspace has made the scoring plane answer 503):
    /// every version stops growing: workers still in `init` are killed now, since nothing
    /// would stop them after the server exits (a worker notices its server is gone only when
    /// it next reads its pipe, after init), and no load or replacement starts. Instances that
    /// serve keep serving the requests in flight.
    pub(crate) fn begin_shutdown(&self) {
        let state = self.lock();
        for record in state.deployments.values() {
            record.live.pool().close();
            if let Some(pending) = &record.pending {
                pending.pool.pool().close();
            }
        }
    }

    /// Recreates the saved state and loads every deployment; returns when traffic is live.
    /// Traffic is published as soon as the deployments that carry it are ready: one without
    /// traffic (a green at 0%, a shadow) keeps loading after, so a slow model that serves
    /// nobody does not hold the endpoint at 503. A replacement that was still loading when the
    /// process stopped starts again once the version that serves is back.
    pub(crate) async fn restore(self: &Arc<Self>, saved: Durable) {
        self.begin_restore();
        let (mut carrying, mut others) = (Vec::new(), Vec::new());
        {
            let mut state = self.lock();
            let tolerance = self.options.tolerance;
            let live_traffic =
                |name: &str| saved.endpoint.as_ref().and_then(|e| e.spec.traffic.get(name)).copied().unwrap_or(0) > 0;
            for spec in saved.deployments {
                state.next_load_id += 1;
                let load_id = state.next_load_id;
                let (kind, problem) = match self.loader.hook_kind(&spec) {
                    Ok(kind) => (kind, None),
                    Err(e) => (HookKind::Onnx { model_file: spec.model.path.clone() }, Some(e.message)),
                };
                let live = self.new_version(&spec, kind);
                let name = spec.name.clone();
                let replacement = saved.pending.iter().find(|p| p.name == name).cloned();
                match problem {
                    Some(error) => {
                        tracing::warn!(deployment = %name, %error, "saved deployment cannot be loaded");
                        live.state().set(ProvisioningState::Failed, Some(error));
                    }
                    None => {
                        let load = (spec.clone(), Arc::clone(&live), load_id, replacement);
                        if live_traffic(&name) {
                            carrying.push(load);
                        } else {
                            others.push(load);
                        }
                    }
                }
                let last_failure = saved.failed_updates.iter().find(|f| f.spec.name == name).cloned();
                state.deployments.insert(
                    name,
                    DeploymentRecord { last_failure, ..DeploymentRecord::new(spec, live, load_id, tolerance) },
                );
            }
            state.rollout = saved.rollout.map(RolloutRecord::restored);
            if let Some(ep) = saved.endpoint {
                // In --secrets-dir mode the folder owns the secrets: what was saved is replaced.
                let credentials = match self.secrets_dir() {
                    Some(_) => self.new_credentials(ep.credentials.auth_mode()),
                    None => ep.credentials,
                };
                state.endpoint =
                    Some(EndpointRecord { spec: ep.spec, credentials, all_traffic_on_ready: ep.all_traffic_on_ready });
            }
        }
        // The loads of deployments that carry traffic go first: model loads share a bounded
        // number of slots, and a big 0% deployment must not hold them.
        let carrying: Vec<_> = carrying.into_iter().map(|(s, l, g, r)| self.restore_one(s, l, g, r)).collect();
        for task in carrying {
            let _ = task.await;
        }
        {
            // Deployments that cannot load (their hook or model is gone) get no traffic, and a
            // rollout to one of them does not resume: both decided before traffic is live.
            let mut state = self.lock();
            let stopping = self.shared.shutting_down.load(Ordering::Acquire);
            let failed: Vec<(String, String)> = state
                .deployments
                .iter()
                .filter(|(_, r)| {
                    !stopping && r.live.state().get() == ProvisioningState::Failed && r.live.pool().ready() == 0
                })
                .map(|(n, r)| (n.clone(), r.live.state().error().unwrap_or_default()))
                .collect();
            for (name, error) in &failed {
                self.roll_back_if_target_failed(&mut state, name, error);
                self.end_rollout_if_source_failed(&mut state, name, error);
            }
            if !stopping && self.drop_failed_traffic(&mut state) {
                self.commit_background(&state);
            }
        }
        self.restoring.store(false, Ordering::Release);
        {
            let state = self.lock();
            self.publish(&state);
            tracing::info!(deployments = state.deployments.len(), "saved state restored: traffic is live");
        }
        // A rollout that was running goes on from its current step, whose window starts again.
        self.resume_restored_rollout();
        for (spec, live, load_id, replacement) in others {
            drop(self.restore_one(spec, live, load_id, replacement));
        }
    }

    /// Loads one saved deployment in the background, then starts its saved replacement.
    fn restore_one(
        self: &Arc<Self>,
        spec: DeploymentSpec,
        live: Arc<Deployment>,
        load_id: u64,
        replacement: Option<DeploymentSpec>,
    ) -> tokio::task::JoinHandle<()> {
        let cp = Arc::clone(self);
        self.runtime.spawn(async move {
            let count = spec.instance_count as usize;
            live.logs().push(format!("restoring: loading {count} instance(s)"));
            let outcome = live.pool().add(count).await;
            cp.finish_load(&spec.name, live, load_id, outcome).await;
            if let Some(next) = replacement {
                let name = next.name.clone();
                if let Err(e) = cp.put_deployment(next, false) {
                    tracing::warn!(deployment = %name, error = %e, "the saved replacement cannot start again");
                }
            }
        })
    }
}
