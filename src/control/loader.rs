//! How the control plane turns a spec into a deployment. In the server: the hooks the spec
//! names, found on disk (`spec.hook_kind()` reads the model folder and the scoring script).
//! In the control plane's unit tests: [`FakeLoader`], whose instances answer at once, or fail
//! their init, as a test sets; so every rule of create, replace, scale, delete, restore and
//! rollout runs in process, with no file, process or ONNX Runtime, and under tokio's paused
//! clock.

use std::sync::Arc;

use crate::collector::DeploymentCollector;
use crate::deployment::Deployment;
use crate::spec::{DeploymentSpec, HookKind, SpecError};
use crate::telemetry::Metrics;

/// Makes deployments from specs.
pub(crate) trait Loader: Send + Sync + 'static {
    /// Which hook serves `spec`; may read the disk (call it off the admin plane's workers).
    fn hook_kind(&self, spec: &DeploymentSpec) -> Result<HookKind, SpecError>;

    /// Checks what only a new deployment's files can tell (an ONNX model that `batching`
    /// cannot stack), off the control plane's lock: a create (`PUT`) calls it; a restore does
    /// not (each instance's load checks again), so a restart never loads a model twice under
    /// the lock. Nothing by default.
    fn check_new(&self, _spec: &DeploymentSpec, _kind: &HookKind) -> Result<(), SpecError> {
        Ok(())
    }

    /// A deployment of endpoint `endpoint` with an empty pool for `spec`: the control plane
    /// loads its instances. `collector`: its data collector, when the spec turns one on.
    fn deployment(
        &self,
        endpoint: &str,
        spec: &DeploymentSpec,
        kind: HookKind,
        metrics: &Arc<Metrics>,
        runtime: tokio::runtime::Handle,
        collector: Option<Arc<DeploymentCollector>>,
    ) -> Arc<Deployment>;
}

/// `spec` naming `endpoint`, which labels the deployment's metric series (the stored spec
/// keeps what its document said, so the config-dir reconciler compares like with like).
fn labelled(endpoint: &str, spec: &DeploymentSpec) -> DeploymentSpec {
    DeploymentSpec { endpoint_name: Some(endpoint.to_string()), ..spec.clone() }
}

/// The hooks on disk (the server's loader).
pub(crate) struct Hooks;

impl Loader for Hooks {
    fn hook_kind(&self, spec: &DeploymentSpec) -> Result<HookKind, SpecError> {
        spec.hook_kind()
    }

    fn check_new(&self, spec: &DeploymentSpec, kind: &HookKind) -> Result<(), SpecError> {
        // `batching:` needs a model that stacks along a free first dimension: refused here,
        // with the input named, rather than as a deployment that fails to load.
        if let (Some(_), HookKind::Onnx { model_file }) = (&spec.batching, kind) {
            crate::hooks::onnx::check_batchable(model_file)
                .map_err(|why| SpecError::invalid(format!("batching: {why}")))?;
        }
        Ok(())
    }

    fn deployment(
        &self,
        endpoint: &str,
        spec: &DeploymentSpec,
        kind: HookKind,
        metrics: &Arc<Metrics>,
        runtime: tokio::runtime::Handle,
        collector: Option<Arc<DeploymentCollector>>,
    ) -> Arc<Deployment> {
        Deployment::new_collecting(&labelled(endpoint, spec), kind, metrics, runtime, collector)
    }
}

#[cfg(test)]
pub(crate) use fake::FakeLoader;

#[cfg(test)]
mod fake {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;
    use crate::hooks::{HookError, HookRequest, HookResponse, InitError, ScoringHook};

    /// Instances that answer every request with its body; a model path named with
    /// [`FakeLoader::fail_model`] fails its init instead, and one named with
    /// [`FakeLoader::missing_model`] is refused as a spec whose files are not there.
    #[derive(Default)]
    pub(crate) struct FakeLoader {
        failing: Mutex<BTreeSet<String>>,
        missing: Mutex<BTreeSet<String>>,
    }

    impl FakeLoader {
        /// Instances of a deployment whose `model.path` is `path` fail their init from now on.
        pub(crate) fn fail_model(&self, path: &str) {
            self.failing.lock().unwrap().insert(path.to_string());
        }

        /// A spec whose `model.path` is `path` names files that are not there.
        pub(crate) fn missing_model(&self, path: &str) {
            self.missing.lock().unwrap().insert(path.to_string());
        }
    }

    struct Echo;

    impl ScoringHook for Echo {
        fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
            Ok(HookResponse::json(request.body.to_vec()))
        }
    }

    impl Loader for FakeLoader {
        fn hook_kind(&self, spec: &DeploymentSpec) -> Result<HookKind, SpecError> {
            let path = spec.model.path.display().to_string();
            if self.missing.lock().unwrap().contains(&path) {
                return Err(SpecError::invalid(format!("model.path {path} does not exist")));
            }
            Ok(HookKind::Onnx { model_file: spec.model.path.clone() })
        }

        fn deployment(
            &self,
            endpoint: &str,
            spec: &DeploymentSpec,
            _kind: HookKind,
            metrics: &Arc<Metrics>,
            runtime: tokio::runtime::Handle,
            _collector: Option<Arc<DeploymentCollector>>,
        ) -> Arc<Deployment> {
            let path = spec.model.path.display().to_string();
            let fails = self.failing.lock().unwrap().contains(&path);
            let factory: crate::deployment::pool::HookFactory = Arc::new(move || {
                if fails {
                    return Err(InitError(format!("init failed: {path} is broken")));
                }
                Ok(Box::new(Echo) as Box<dyn ScoringHook>)
            });
            Deployment::with_factory(&super::labelled(endpoint, spec), factory, metrics, runtime)
        }
    }
}
