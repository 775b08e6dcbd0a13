//! The control plane's rules, in process: deployments made by [`FakeLoader`] (no file, no
//! process, no ONNX Runtime), loads awaited by their state (never by sleeping), and the
//! rollout's step windows under tokio's paused clock, so a step of a minute passes at once.
//! What these prove needed a started binary and real minutes before.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::loader::FakeLoader;
use super::store::StateDir;
use super::views::DeploymentView;
use super::{ControlError, ControlOptions, ControlPlane, RolloutSource, Workspace};
use crate::deployment::ProvisioningState;
use crate::spec::{DeploymentSpec, EndpointSpec, RolloutPlan};
use crate::telemetry::{Metrics, Role};

pub(super) fn options() -> ControlOptions {
    ControlOptions {
        token_lifetime: Duration::from_secs(3600),
        tolerance: Default::default(),
        key_grace: Duration::ZERO,
    }
}

pub(super) fn workspace(loader: &Arc<FakeLoader>, state_dir: Option<StateDir>) -> Arc<Workspace> {
    Workspace::with_loader(Metrics::new(), options(), state_dir, Arc::clone(loader) as Arc<dyn super::loader::Loader>)
}

/// The plane of endpoint `my-ep` (not created yet: see [`endpoint`]) in a workspace of its own.
pub(super) fn control(loader: &Arc<FakeLoader>, state_dir: Option<StateDir>) -> Arc<ControlPlane> {
    workspace(loader, state_dir).plane_for("my-ep").unwrap().0
}

pub(super) fn endpoint(cp: &ControlPlane) {
    let (spec, ignored) = EndpointSpec::from_value(json!({"name": "my-ep", "auth_mode": "key"})).unwrap();
    cp.put_endpoint(spec, ignored).unwrap();
}

pub(super) fn deployment(name: &str, model: &str, extra: Value) -> DeploymentSpec {
    let mut doc = json!({"name": name, "model": {"path": model}, "instance_count": 1});
    json_patch::merge(&mut doc, &extra);
    DeploymentSpec::from_value(doc).unwrap().0
}

/// Puts a deployment and waits until its load ends (by its state, not by time).
pub(super) async fn loaded(cp: &Arc<ControlPlane>, spec: DeploymentSpec) -> DeploymentView {
    let name = spec.name.clone();
    cp.put_deployment(spec, false).unwrap();
    settled(cp, &name).await
}

pub(super) async fn settled(cp: &Arc<ControlPlane>, name: &str) -> DeploymentView {
    cp.wait_settled(name, Duration::from_secs(30)).await.expect("the deployment exists")
}

pub(super) fn traffic(cp: &ControlPlane, split: Value) -> Result<(), ControlError> {
    cp.patch_endpoint(json!({ "traffic": split })).map(|_| ())
}

pub(super) fn split(cp: &ControlPlane) -> Value {
    json!(cp.get_endpoint().unwrap().spec.traffic)
}

/// `n` answers of `name` in its live role, `errors` of them 500s, as the front door counts them.
pub(super) fn answers(cp: &ControlPlane, name: &str, n: u64, errors: u64) {
    let state = cp.lock();
    let metrics = state.deployments[name].live.metrics();
    for i in 0..n {
        metrics.observe(Role::live, if i < errors { 500 } else { 200 }, 0.002);
    }
}

#[tokio::test]
async fn a_failed_init_fails_its_deployment_only_and_it_never_gets_traffic() {
    let loader = Arc::new(FakeLoader::default());
    loader.fail_model("models/broken");
    let cp = control(&loader, None);
    endpoint(&cp);
    let blue = loaded(&cp, deployment("blue", "models/ok", json!({}))).await;
    assert_eq!((blue.provisioning_state, blue.instances.counts.ready), (ProvisioningState::Succeeded, 1));
    let green = loaded(&cp, deployment("green", "models/broken", json!({}))).await;
    assert_eq!(green.provisioning_state, ProvisioningState::Failed);
    assert!(green.error.as_deref().unwrap_or_default().contains("broken"), "{:?}", green.error);
    assert_eq!(cp.get_deployment("blue").unwrap().provisioning_state, ProvisioningState::Succeeded);
    let refused = traffic(&cp, json!({"green": 100})).unwrap_err();
    assert!(matches!(&refused, ControlError::Conflict(m) if m.contains("failed")), "{refused}");
    traffic(&cp, json!({"blue": 100})).unwrap();
    assert_eq!(split(&cp), json!({"blue": 100, "green": 0}));
}

#[tokio::test]
async fn a_replacement_that_fails_leaves_the_old_version_serving_and_says_why() {
    let loader = Arc::new(FakeLoader::default());
    loader.fail_model("models/v2");
    let cp = control(&loader, None);
    endpoint(&cp);
    loaded(&cp, deployment("blue", "models/v1", json!({}))).await;
    traffic(&cp, json!({"blue": 100})).unwrap();
    let (shown, created) = cp.put_deployment(deployment("blue", "models/v2", json!({})), false).unwrap();
    assert!(!created);
    assert_eq!(shown.provisioning_state, ProvisioningState::Updating);
    assert_eq!(shown.spec.model.path.to_str(), Some("models/v2"), "show has the version being loaded");
    let after = settled(&cp, "blue").await;
    assert_eq!(after.provisioning_state, ProvisioningState::Failed, "the update failed");
    assert!(after.error.as_deref().unwrap_or_default().contains("previous version keeps serving"), "{:?}", after.error);
    assert_eq!(after.instances.counts.ready, 1, "v1's instance still serves");
    assert_eq!(after.spec.model.path.to_str(), Some("models/v1"), "show has the version that serves");
    let failed = after.last_failed_update.expect("the failed update is on record");
    assert!(failed.error.contains("broken"), "{}", failed.error);
    assert_eq!(split(&cp), json!({"blue": 100}));
}

#[tokio::test]
async fn scaling_changes_the_instances_in_place_and_files_that_are_not_there_change_nothing() {
    let loader = Arc::new(FakeLoader::default());
    loader.missing_model("models/gone");
    let cp = control(&loader, None);
    endpoint(&cp);
    loaded(&cp, deployment("blue", "models/v1", json!({}))).await;
    let scaling = cp.patch_deployment("blue", json!({"instance_count": 3})).unwrap();
    assert_eq!(scaling.provisioning_state, ProvisioningState::Updating);
    let scaled = settled(&cp, "blue").await;
    assert_eq!((scaled.provisioning_state, scaled.instances.counts.ready), (ProvisioningState::Succeeded, 3));
    let missing = cp.put_deployment(deployment("green", "models/gone", json!({})), false).unwrap_err();
    assert!(missing.to_string().contains("does not exist"), "{missing}");
    assert_eq!(cp.list_deployments().unwrap().len(), 1, "the refused create left nothing behind");
}

#[tokio::test]
async fn a_deployment_with_live_traffic_cannot_be_deleted_and_deleting_the_shadow_ends_the_mirror() {
    let loader = Arc::new(FakeLoader::default());
    let cp = control(&loader, None);
    endpoint(&cp);
    loaded(&cp, deployment("blue", "models/v1", json!({}))).await;
    loaded(&cp, deployment("green", "models/v2", json!({}))).await;
    cp.patch_endpoint(json!({"traffic": {"blue": 100}, "mirror_traffic": {"green": 10}})).unwrap();
    let refused = cp.delete_deployment("blue").unwrap_err();
    assert!(matches!(refused, ControlError::Conflict(_)), "{refused}");
    cp.delete_deployment("green").unwrap();
    let ep = cp.get_endpoint().unwrap();
    assert!(ep.spec.mirror_traffic.is_empty(), "{:?}", ep.spec.mirror_traffic);
    assert_eq!(split(&cp), json!({"blue": 100}));
}

/// Loads blue (all traffic) and green, then pauses the clock: what follows runs on tokio's
/// paused time, which jumps ahead whenever every task waits on a timer.
async fn two_deployments_paused() -> Arc<ControlPlane> {
    let loader = Arc::new(FakeLoader::default());
    let cp = control(&loader, None);
    endpoint(&cp);
    loaded(&cp, deployment("blue", "models/v1", json!({}))).await;
    loaded(&cp, deployment("green", "models/v2", json!({}))).await;
    traffic(&cp, json!({"blue": 100})).unwrap();
    tokio::time::pause();
    cp
}

fn rollout(cp: &Arc<ControlPlane>, doc: Value) {
    cp.start_rollout(RolloutPlan::from_value(&doc).unwrap(), RolloutSource::Api).unwrap();
}

#[tokio::test]
async fn a_rollout_steps_on_evidence_holds_without_it_and_succeeds() {
    let cp = two_deployments_paused().await;
    rollout(&cp, json!({"to": "green", "steps": "50,100", "step_duration": "60s", "min_requests": 20}));
    assert_eq!(split(&cp), json!({"blue": 50, "green": 50}));
    // A window over with too few answers is not judged: the step holds, traffic stays.
    answers(&cp, "green", 5, 0);
    tokio::time::sleep(Duration::from_secs(180)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!((view.step.index, view.passed.len()), (0, 0), "{:?}", view.events);
    assert_eq!(view.step.gates.as_ref().map(|g| g.requests), Some(5));
    // Enough answers, none an error: the step passes at its next tick, the next starts.
    answers(&cp, "green", 20, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.step.index, 1, "{:?}", view.events);
    assert_eq!(split(&cp), json!({"blue": 0, "green": 100}));
    // The last step's minute, with evidence: the rollout succeeds.
    answers(&cp, "green", 25, 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::Succeeded, "{:?}", view.events);
    assert_eq!(view.passed.len(), 2);
}

#[tokio::test]
async fn a_failing_gate_rolls_back_to_the_last_good_split_and_says_which() {
    let cp = two_deployments_paused().await;
    rollout(
        &cp,
        json!({"to": "green", "steps": "25,50,100", "step_duration": "60s", "min_requests": 20,
                        "max_error_rate": 0.05}),
    );
    answers(&cp, "green", 40, 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(split(&cp), json!({"blue": 50, "green": 50}), "the first step passed");
    answers(&cp, "green", 40, 10);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::RolledBack);
    let rollback = view.rollback.expect("why it rolled back");
    assert_eq!((rollback.gate.as_str(), rollback.step.as_str()), ("error_rate", "50"));
    assert_eq!(rollback.value, Some(0.25));
    assert_eq!(split(&cp), json!({"blue": 75, "green": 25}), "back to the split of the last step that passed");
    // Traffic is the user's again: the rollout no longer owns it.
    traffic(&cp, json!({"blue": 100})).unwrap();
}

#[tokio::test]
async fn a_paused_rollout_judges_nothing_and_an_abort_returns_to_where_it_started() {
    let cp = two_deployments_paused().await;
    rollout(&cp, json!({"to": "green", "steps": "mirror:10,50,100", "step_duration": "60s"}));
    assert_eq!(cp.get_endpoint().unwrap().spec.mirror_traffic.get("green"), Some(&10));
    let refused = cp.patch_endpoint(json!({"mirror_traffic": {}})).unwrap_err();
    assert!(refused.to_string().contains("owns the traffic"), "{refused}");
    cp.pause_rollout().unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(cp.rollout_view().unwrap().step.index, 0, "nothing is judged while paused");
    cp.abort_rollout().unwrap();
    let ep = cp.get_endpoint().unwrap();
    assert_eq!(json!(ep.spec.traffic), json!({"blue": 100, "green": 0}));
    assert!(ep.spec.mirror_traffic.values().all(|p| *p == 0), "{:?}", ep.spec.mirror_traffic);
}

#[tokio::test]
async fn a_restart_restores_the_endpoint_its_keys_traffic_and_deployments_from_the_state_folder() {
    let dir = tempfile::tempdir().unwrap();
    let loader = Arc::new(FakeLoader::default());
    let keys = {
        let (store, saved) = StateDir::open(dir.path()).unwrap();
        assert!(saved.is_empty());
        let cp = control(&loader, Some(store));
        endpoint(&cp);
        loaded(&cp, deployment("blue", "models/v1", json!({}))).await;
        loaded(&cp, deployment("green", "models/v2", json!({"instance_count": 2}))).await;
        traffic(&cp, json!({"blue": 70, "green": 30})).unwrap();
        serde_json::to_value(cp.credentials().unwrap()).unwrap()
    };
    // green's model is gone when the server comes back: its share goes to blue.
    loader.missing_model("models/v2");
    let (store, saved) = StateDir::open(dir.path()).unwrap();
    let ws = workspace(&loader, Some(store));
    for (plane, doc) in ws.begin_restore(saved) {
        plane.restore(doc).await;
    }
    let cp = ws.endpoint("my-ep").expect("the state was saved");
    assert_eq!(serde_json::to_value(cp.credentials().unwrap()).unwrap(), keys, "the same keys");
    let blue = settled(&cp, "blue").await;
    assert_eq!(blue.provisioning_state, ProvisioningState::Succeeded);
    let green = cp.get_deployment("green").unwrap();
    assert_eq!(green.provisioning_state, ProvisioningState::Failed);
    assert_eq!(green.spec.instance_count, 2, "the saved spec, as it was");
    assert_eq!(split(&cp), json!({"blue": 100, "green": 0}), "the share of what cannot load moved");
}

// ---- Many endpoints in one workspace ----

fn create(ws: &Workspace, name: &str) -> Arc<ControlPlane> {
    let (spec, ignored) = EndpointSpec::from_value(json!({"name": name, "auth_mode": "key"})).unwrap();
    ws.put_endpoint(spec, ignored).unwrap();
    ws.endpoint(name).unwrap()
}

fn primary_key(cp: &ControlPlane) -> String {
    match cp.credentials().unwrap() {
        super::views::CredentialsView::Keys(k) => k.primary_key,
        super::views::CredentialsView::Token(_) => panic!("key mode"),
    }
}

/// Two endpoints each own a deployment named blue, their traffic, keys and rollout; deleting
/// one leaves the other serving exactly as it was, in the state and in the routing table.
#[tokio::test]
async fn endpoints_side_by_side_own_their_deployments_keys_and_traffic_and_deleting_one_leaves_the_other() {
    let loader = Arc::new(FakeLoader::default());
    let ws = workspace(&loader, None);
    let (a, b) = (create(&ws, "ep-a"), create(&ws, "ep-b"));
    loaded(&a, deployment("blue", "models/a", json!({}))).await;
    loaded(&b, deployment("blue", "models/b", json!({"instance_count": 2}))).await;
    loaded(&b, deployment("green", "models/b2", json!({}))).await;
    traffic(&a, json!({"blue": 100})).unwrap();
    traffic(&b, json!({"blue": 60, "green": 40})).unwrap();
    assert_ne!(primary_key(&a), primary_key(&b), "each endpoint has its own keys");
    assert_eq!(a.list_deployments().unwrap().len(), 1, "a's deployments are a's only");
    assert_eq!(b.get_deployment("blue").unwrap().spec.instance_count, 2);
    assert_eq!(a.get_deployment("blue").unwrap().spec.model.path.to_str(), Some("models/a"));

    let table = ws.routing().load_full();
    assert_eq!(table.names(), ["ep-a", "ep-b"]);
    assert!(table.only.is_none(), "two endpoints: the bare routes name neither");
    let (ta, tb) = (&table.endpoints["ep-a"], &table.endpoints["ep-b"]);
    let bearer = |k: &str| format!("Bearer {k}");
    assert!(ta.credentials.allows(Some(bearer(&primary_key(&a)).as_bytes())));
    assert!(!ta.credentials.allows(Some(bearer(&primary_key(&b)).as_bytes())), "b's key does not open a");
    assert!(!tb.credentials.allows(Some(bearer(&primary_key(&a)).as_bytes())), "a's key does not open b");

    // A rollout on b leaves a's traffic the user's.
    b.start_rollout(
        RolloutPlan::from_value(&json!({"to": "green", "steps": "50,100", "step_duration": "60s"})).unwrap(),
        RolloutSource::Api,
    )
    .unwrap();
    traffic(&a, json!({"blue": 100})).unwrap();
    assert!(a.rollout_view().is_err(), "a has no rollout");

    ws.delete_endpoint("ep-a").unwrap();
    assert!(matches!(ws.endpoint("ep-a"), Err(ControlError::NotFound(m)) if m.contains("ep-b")), "404 names ep-b");
    assert_eq!(split(&b), json!({"blue": 50, "green": 50}), "b's rollout step stands");
    assert_eq!(b.get_deployment("blue").unwrap().instances.counts.ready, 2);
    let table = ws.routing().load_full();
    assert_eq!(table.names(), ["ep-b"]);
    assert!(table.only.as_ref().is_some_and(|e| e.name == "ep-b"), "one endpoint left: the bare routes serve it");
    // The old plane is retired: a change through it is refused and touches nothing.
    assert!(a.patch_endpoint(json!({"description": "late"})).is_err());
    assert!(ws.endpoint("ep-a").is_err());
}

/// The endpoint-level rules: the one-endpoint routes' meaning (none: 404, several: 409 naming
/// them), names unique regardless of case, and the limit on endpoints.
#[tokio::test]
async fn the_only_endpoint_names_unique_regardless_of_case_and_the_limit() {
    let loader = Arc::new(FakeLoader::default());
    let ws = workspace(&loader, None);
    assert!(matches!(ws.only(), Err(ControlError::NotFound(_))));
    create(&ws, "first");
    assert_eq!(ws.only().unwrap().name(), "first");
    create(&ws, "second");
    let several = ws.only().err().expect("two endpoints");
    assert!(matches!(&several, ControlError::Conflict(m) if m.contains("first, second")), "{several}");
    let (spec, _) = EndpointSpec::from_value(json!({"name": "FIRST"})).unwrap();
    let clash = ws.put_endpoint(spec, vec![]).unwrap_err();
    assert!(matches!(&clash, ControlError::Conflict(m) if m.contains("regardless of case")), "{clash}");
    for i in ws.names().len()..crate::spec::MAX_ENDPOINTS {
        create(&ws, &format!("ep-{i}"));
    }
    let (spec, _) = EndpointSpec::from_value(json!({"name": "one-too-many"})).unwrap();
    let full = ws.put_endpoint(spec, vec![]).unwrap_err();
    assert!(matches!(&full, ControlError::Conflict(m) if m.contains("50 endpoints")), "{full}");
    assert_eq!(ws.names().len(), crate::spec::MAX_ENDPOINTS, "the refused one left nothing behind");
}

/// A change that lost the race with a delete lands nowhere: the retired plane saves and
/// publishes nothing, so an endpoint created again under the same name is not disturbed.
#[tokio::test]
async fn a_retired_plane_never_touches_the_endpoint_that_took_its_name() {
    let loader = Arc::new(FakeLoader::default());
    let dir = tempfile::tempdir().unwrap();
    let (state_dir, _) = StateDir::open(dir.path()).unwrap();
    let ws = workspace(&loader, Some(state_dir));
    let old = create(&ws, "ep-a");
    ws.delete_endpoint("ep-a").unwrap();
    let new = create(&ws, "ep-a");
    old.commit_background(&old.lock());
    old.publish(&old.lock());
    assert!(ws.routing().load().endpoints.contains_key("ep-a"), "the new endpoint still routes");
    assert!(dir.path().join(super::store::STATE_FILE).is_file(), "the new endpoint's file is there");
    assert_eq!(primary_key(&ws.endpoint("ep-a").unwrap()), primary_key(&new));
}

/// `--state-dir` with several endpoints: the first in `state.json` (as a one-endpoint server
/// always wrote it), each other in `endpoints/NAME.json`; a deleted endpoint's file goes and
/// `state.json` passes to the next endpoint created; a restart brings every endpoint back
/// with its own keys and deployments.
#[tokio::test]
async fn every_endpoint_is_saved_in_its_own_file_and_restored() {
    let loader = Arc::new(FakeLoader::default());
    let dir = tempfile::tempdir().unwrap();
    let keys = {
        let (state_dir, saved) = StateDir::open(dir.path()).unwrap();
        assert!(saved.is_empty());
        let ws = workspace(&loader, Some(state_dir));
        let (a, b, c) = (create(&ws, "ep-a"), create(&ws, "ep-b"), create(&ws, "ep-c"));
        loaded(&b, deployment("blue", "models/b", json!({}))).await;
        traffic(&b, json!({"blue": 100})).unwrap();
        loaded(&c, deployment("blue", "models/c", json!({"instance_count": 2}))).await;
        assert!(dir.path().join("state.json").is_file() && dir.path().join("endpoints/ep-b.json").is_file());
        drop(a);
        ws.delete_endpoint("ep-a").unwrap();
        assert!(!dir.path().join("state.json").exists(), "a's file went with it");
        let d = create(&ws, "ep-d");
        assert!(dir.path().join("state.json").is_file(), "d took state.json");
        [primary_key(&b), primary_key(&c), primary_key(&d)]
    };
    let (state_dir, saved) = StateDir::open(dir.path()).unwrap();
    let ws = workspace(&loader, Some(state_dir));
    for (plane, doc) in ws.begin_restore(saved) {
        plane.restore(doc).await;
    }
    assert_eq!(ws.names(), ["ep-b", "ep-c", "ep-d"]);
    let restored: Vec<String> =
        ["ep-b", "ep-c", "ep-d"].iter().map(|n| primary_key(&ws.endpoint(n).unwrap())).collect();
    assert_eq!(restored, keys, "each endpoint's own keys");
    let c = ws.endpoint("ep-c").unwrap();
    assert_eq!(settled(&c, "blue").await.instances.counts.ready, 2);
    assert_eq!(split(&ws.endpoint("ep-b").unwrap()), json!({"blue": 100}));

    // A damaged file of one endpoint stops the start and is named; nothing is rewritten.
    std::fs::write(dir.path().join("endpoints/ep-c.json"), b"{").unwrap();
    let e = StateDir::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("ep-c.json") && e.contains("corrupt"), "{e}");
    // A file named for another endpoint than the one it holds is refused too.
    std::fs::copy(dir.path().join("endpoints/ep-b.json"), dir.path().join("endpoints/ep-c.json")).unwrap();
    let e = StateDir::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("another endpoint"), "{e}");
}

/// An endpoint deleted while it was still being restored leaves the routing table: before,
/// its "restoring" entry stayed for good (503 on its URI, the process never ready again, a
/// new endpoint of the name never routed).
#[tokio::test]
async fn an_endpoint_deleted_while_restoring_leaves_the_routing_table() {
    let loader = Arc::new(FakeLoader::default());
    let ws = workspace(&loader, None);
    let a = create(&ws, "ep-a");
    a.restoring.store(true, std::sync::atomic::Ordering::Release);
    a.publish(&a.lock());
    assert_eq!(ws.routing().load().restoring, ["ep-a"]);
    ws.delete_endpoint("ep-a").unwrap();
    let table = ws.routing().load_full();
    assert!(table.restoring.is_empty() && table.endpoints.is_empty(), "{:?}", table.names());
    create(&ws, "ep-a");
    assert!(ws.routing().load().endpoints.contains_key("ep-a"), "the new ep-a routes");
}

/// A merge patch that names another endpoint is refused as a PUT's document is: saved, it
/// stopped the next start ("deployment is for endpoint ...").
#[tokio::test]
async fn a_patch_cannot_move_a_deployment_to_another_endpoint() {
    let loader = Arc::new(FakeLoader::default());
    let ws = workspace(&loader, None);
    let a = create(&ws, "ep-a");
    create(&ws, "ep-b");
    loaded(&a, deployment("blue", "models/v1", json!({}))).await;
    let refused = a.patch_deployment("blue", json!({"endpoint_name": "ep-b", "instance_count": 2})).unwrap_err();
    assert!(matches!(refused, ControlError::Spec(_)) && refused.to_string().contains("ep-b"), "{refused}");
    assert_eq!(a.get_deployment("blue").unwrap().spec.instance_count, 1, "nothing changed");
}

/// A secrets edit that lands while a saved endpoint is not set up yet (its restore has not
/// run) rotates nothing and saves nothing: before, it saved a document without the endpoint,
/// which removed the endpoint's file.
#[tokio::test]
async fn a_secrets_edit_before_the_restore_keeps_the_saved_file() {
    let loader = Arc::new(FakeLoader::default());
    let dir = tempfile::tempdir().unwrap();
    {
        let (state_dir, _) = StateDir::open(dir.path()).unwrap();
        create(&workspace(&loader, Some(state_dir)), "ep-a");
    }
    let (state_dir, saved) = StateDir::open(dir.path()).unwrap();
    let ws = workspace(&loader, Some(state_dir));
    let secret = |s: &str| s.repeat(32);
    let files = super::secrets::SecretFiles {
        shared: crate::endpoint::auth::SharedSecrets {
            primary_key: secret("a"),
            secondary_key: secret("b"),
            token_signing_key: secret("c"),
            token_verify_key: None,
        },
        own: Default::default(),
        admin_token: None,
    };
    ws.set_secrets_source(dir.path().to_path_buf(), files.clone());
    let restores = ws.begin_restore(saved);
    ws.apply_secrets(files);
    assert!(dir.path().join("state.json").is_file(), "the saved endpoint is still on disk");
    for (plane, doc) in restores {
        plane.restore(doc).await;
    }
    assert_eq!(primary_key(&ws.endpoint("ep-a").unwrap()), secret("a"), "the restore took the folder's keys");
}

/// Registers `files` as a new version of model `name` in the workspace's store.
fn register(ws: &Workspace, name: &str, bytes: &[u8]) -> crate::assets::ModelView {
    let id = ws.begin_upload().unwrap().id;
    let mut f = ws.upload_file(&id, "model/w.bin").unwrap();
    f.write(bytes).unwrap();
    f.finish().unwrap();
    let input = serde_json::from_value(json!({"name": name, "upload": id})).unwrap();
    ws.register_model(input).unwrap().0
}

#[tokio::test]
async fn a_registered_model_resolves_once_and_cannot_be_archived_while_a_deployment_uses_it() {
    let loader = Arc::new(FakeLoader::default());
    let ws = workspace(&loader, None);
    ws.set_assets(crate::assets::AssetStore::temporary().unwrap());
    let v1 = register(&ws, "m", b"one");
    let v2 = register(&ws, "m", b"two");
    let cp = ws.plane_for("my-ep").unwrap().0;
    endpoint(&cp);
    let spec = DeploymentSpec::from_value(json!({"name": "blue", "model": "azureml:m@latest"})).unwrap().0;
    let shown = loaded(&cp, spec).await;
    assert_eq!(shown.spec.model.path.to_str(), Some(v2.path.as_str()));
    assert_eq!(shown.spec.model.version, Some(json!("2")));
    assert_eq!(shown.spec.model.reference.as_deref(), Some("azureml:m@latest"));
    // In use: archiving the version or the name is refused; another version is not.
    let e = ws.set_archived(crate::spec::AssetKind::Model, "m", Some("2"), true).unwrap_err();
    assert!(matches!(&e, ControlError::Conflict(m) if m.contains("my-ep/blue")), "{e}");
    assert!(ws.set_archived(crate::spec::AssetKind::Model, "m", None, true).is_err());
    assert_eq!(ws.set_archived(crate::spec::AssetKind::Model, "m", Some("1"), true).unwrap(), ["1"]);
    ws.set_archived(crate::spec::AssetKind::Model, "m", Some("1"), false).unwrap();
    // A newer version does not move a deployment that keeps its reference (a scale).
    register(&ws, "m", b"three");
    cp.patch_deployment("blue", json!({"instance_count": 2})).unwrap();
    let scaled = settled(&cp, "blue").await;
    assert_eq!((scaled.spec.model.version, scaled.spec.instance_count), (Some(json!("2")), 2));
    // The spec as shown, sent back with another change of the hook, keeps the version too.
    cp.patch_deployment("blue", json!({"environment_variables": {"A": "1"}})).unwrap();
    assert_eq!(settled(&cp, "blue").await.spec.model.version, Some(json!("2")));
    // A new reference resolves anew.
    cp.patch_deployment("blue", json!({"model": "azureml:m:1"})).unwrap();
    let moved = settled(&cp, "blue").await;
    assert_eq!((moved.spec.model.path.to_str(), moved.spec.model.name.as_deref()), (Some(v1.path.as_str()), Some("m")));
    // An unknown version is refused naming the versions, and changes nothing.
    let e = cp.patch_deployment("blue", json!({"model": "azureml:m:9"})).unwrap_err();
    assert!(e.to_string().contains("its versions are 1, 2, 3"), "{e}");
    assert_eq!(cp.get_deployment("blue").unwrap().spec.model.version, Some(json!("1")));
    // Once deleted, nothing uses version 2.
    cp.delete_deployment("blue").unwrap();
    assert_eq!(ws.set_archived(crate::spec::AssetKind::Model, "m", Some("2"), true).unwrap(), ["2"]);
}

#[tokio::test]
async fn a_new_source_in_a_patch_or_a_put_replaces_the_registered_one() {
    let loader = Arc::new(FakeLoader::default());
    let ws = workspace(&loader, None);
    ws.set_assets(crate::assets::AssetStore::temporary().unwrap());
    register(&ws, "m", b"one");
    let cp = ws.plane_for("my-ep").unwrap().0;
    endpoint(&cp);
    let spec = DeploymentSpec::from_value(json!({"name": "blue", "model": "azureml:m:1"})).unwrap().0;
    loaded(&cp, spec).await;
    // A path sent in a patch is the new model: the registered reference goes with the old.
    cp.patch_deployment("blue", json!({"model": {"path": "models/local"}})).unwrap();
    let local = settled(&cp, "blue").await.spec.model;
    assert_eq!((local.path.to_str(), local.reference, local.version), (Some("models/local"), None, None));
    // `show`'s spec sent back with another reference: resolved anew, not kept at version 1.
    cp.patch_deployment("blue", json!({"model": "azureml:m:1"})).unwrap();
    settled(&cp, "blue").await;
    let v2 = register(&ws, "m", b"two");
    let mut shown = cp.get_deployment("blue").unwrap().spec;
    shown.model.reference = Some("azureml:m@latest".into());
    cp.put_deployment(shown, false).unwrap();
    let moved = settled(&cp, "blue").await.spec.model;
    assert_eq!((moved.path.to_str(), moved.version), (Some(v2.path.as_str()), Some(json!("2"))));
    // An environment of a workspace whose name looks curated is still a registered one.
    let e = cp
        .patch_deployment(
            "blue",
            json!({"environment": "azureml://subscriptions/s/resourceGroups/g/workspaces/sklearn-1.5-ws/environments/my-env/versions/1"}),
        )
        .unwrap_err();
    assert!(e.to_string().contains("azureml:my-env:1 is not registered"), "{e}");
}

/// A rollout of green over blue with the evidence gates (issue 27): 1% more errors allowed.
async fn evidence_rollout(extra: Value) -> Arc<ControlPlane> {
    let mut p = json!({"to": "green", "steps": "50,100", "step_duration": "60s", "min_requests": 20,
                       "max_error_rate": 1.0, "confidence": 0.95, "max_error_increase": 0.01});
    json_patch::merge(&mut p, &extra);
    let cp = two_deployments_paused().await;
    rollout(&cp, p);
    cp
}

/// A twin (the same 1% errors on both sides, enough requests to tell) passes, with the
/// evidence on record, and the plan said upfront what a step needs.
#[tokio::test]
async fn evidence_gates_pass_a_twin_with_the_evidence_on_record() {
    let cp = evidence_rollout(json!({})).await;
    answers(&cp, "green", 4_000, 40);
    answers(&cp, "blue", 4_000, 40);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.step.index, 1, "{:?}", view.events);
    let gate = &view.passed[0].evidence[0];
    assert_eq!((gate.gate.as_str(), gate.judgement.outcome), ("error_increase", super::evidence::Outcome::Pass));
    let (lower, upper) = gate.judgement.interval.unwrap();
    assert!(lower < 0.0 && upper < 0.01, "{gate:?}");
    assert!(view.events.iter().any(|e| e.message.contains("evidence: a step needs about")), "{:?}", view.events);
}

/// 5% errors against the incumbent's 1%: rolled back on the evidence (the absolute gate
/// allows anything here).
#[tokio::test]
async fn evidence_gates_roll_back_a_target_worse_than_the_incumbent() {
    let cp = evidence_rollout(json!({})).await;
    answers(&cp, "green", 2_000, 100);
    answers(&cp, "blue", 2_000, 20);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::RolledBack, "{:?}", view.events);
    let rollback = view.rollback.unwrap();
    assert_eq!(rollback.gate, "error_increase");
    assert_eq!(rollback.evidence[0].judgement.outcome, super::evidence::Outcome::Fail);
    assert!(rollback.message.contains("error_increase fail"), "{}", rollback.message);
}

/// A trickle (1 error in 25 against none in 25) decides nothing: the step grows by a window
/// per extension, then rolls back as inconclusive, saying so.
#[tokio::test]
async fn evidence_gates_never_guess_on_a_trickle() {
    let cp = evidence_rollout(json!({"max_extensions": 2})).await;
    answers(&cp, "green", 25, 1);
    answers(&cp, "blue", 25, 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!((view.status, view.step.index), (super::rollout::RolloutStatus::Running, 0));
    assert!(view.events.iter().any(|e| e.message.contains("inconclusive at look 1")), "{:?}", view.events);
    tokio::time::sleep(Duration::from_secs(120)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::RolledBack, "{:?}", view.events);
    let rollback = view.rollback.unwrap();
    assert_eq!(rollback.gate, "inconclusive");
    assert!(rollback.message.contains("stayed inconclusive after 2 extension(s)"), "{}", rollback.message);
    assert_eq!(split(&cp), json!({"blue": 100, "green": 0}));
    let decisions: Vec<(u32, &str)> = view.judged.iter().map(|w| (w.look, w.decision.as_str())).collect();
    assert_eq!(decisions, [(1, "extended"), (2, "extended"), (3, "rolled_back_inconclusive")]);
}

/// `on_inconclusive: proceed` steps on, and the record says the step was undecided.
#[tokio::test]
async fn evidence_gates_may_proceed_undecided_when_the_plan_says_so() {
    let cp = evidence_rollout(json!({"max_extensions": 0, "on_inconclusive": "proceed"})).await;
    answers(&cp, "green", 25, 1);
    answers(&cp, "blue", 25, 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.step.index, 1, "{:?}", view.events);
    assert!(view.passed[0].inconclusive);
}

/// Answers of `name` in its live role, all 200, taking `latencies` seconds each.
fn timed_answers(cp: &ControlPlane, name: &str, latencies: impl Iterator<Item = f64>) {
    let state = cp.lock();
    let metrics = state.deployments[name].live.metrics();
    for s in latencies {
        metrics.observe(Role::live, 200, s);
    }
}

/// `n` log-normal latencies around `median` seconds (log spread 0.3), from a seeded generator.
fn lognormal(seed: u64, n: usize, median: f64) -> impl Iterator<Item = f64> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n).map(move |_| {
        let (u1, u2) = (rng.f64().max(f64::MIN_POSITIVE), rng.f64());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        median * (0.3 * z).exp()
    })
}

/// The latency gate (issue 27) on per-request latencies gathered while the step runs: a twin
/// passes it (and a target 50% slower against a 1.2 margin is rolled back on it, with both
/// sides' medians on record: the next test), and requests pay for the samples only while a
/// rollout watches.
#[tokio::test]
async fn evidence_latency_gate_passes_a_twin_and_stops_sampling_after() {
    let cp = evidence_rollout(json!({"max_latency_increase": 1.2})).await;
    timed_answers(&cp, "green", lognormal(1, 2_000, 0.002));
    timed_answers(&cp, "blue", lognormal(2, 2_000, 0.002));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.step.index, 1, "{:?}", view.events);
    let gate = view.passed[0].evidence.iter().find(|g| g.gate == "latency_increase").expect("judged on latency");
    assert_eq!(gate.judgement.outcome, super::evidence::Outcome::Pass, "{gate:?}");
    let (t, i) = (gate.target.clone().unwrap(), gate.incumbent.clone().unwrap());
    assert_eq!((t.n, i.n), (2_000, 2_000), "every latency of the window was sampled");
    assert!((t.median_ms.unwrap() / i.median_ms.unwrap() - 1.0).abs() < 0.1, "{t:?} {i:?}");
    // The last step has no incumbent: the rings are disarmed, requests record nothing.
    let ring_cursor = || cp.lock().deployments["blue"].live.metrics().latencies(Role::live).cursor();
    let before = ring_cursor();
    timed_answers(&cp, "blue", lognormal(3, 10, 0.002));
    assert_eq!(ring_cursor(), before, "no rollout watches blue's latencies now");
}

#[tokio::test]
async fn evidence_latency_gate_rolls_back_a_target_half_again_as_slow() {
    let cp = evidence_rollout(json!({"max_latency_increase": 1.2})).await;
    timed_answers(&cp, "green", lognormal(4, 2_000, 0.003));
    timed_answers(&cp, "blue", lognormal(5, 2_000, 0.002));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::RolledBack, "{:?}", view.events);
    let rollback = view.rollback.unwrap();
    assert_eq!((rollback.gate.as_str(), rollback.limit), ("latency_increase", Some(1.2)), "{}", rollback.message);
    let gate = rollback.evidence.iter().find(|g| g.gate == "latency_increase").unwrap();
    assert_eq!(gate.judgement.outcome, super::evidence::Outcome::Fail);
    assert!(gate.judgement.p_value.unwrap() < gate.judgement.alpha, "{gate:?}");
    let ratio = gate.target.as_ref().unwrap().median_ms.unwrap() / gate.incumbent.as_ref().unwrap().median_ms.unwrap();
    assert!((1.35..1.65).contains(&ratio), "medians on record: {ratio}");
    assert!(rollback.message.contains("latency_increase fail"), "{}", rollback.message);
}

/// Mirror steps judge the target against the live answers to the very requests copied: a
/// shadow failing 5% of the copies whose live answers were fine is rolled back on
/// `error_increase`, with the pairs as the incumbent's side.
#[tokio::test]
async fn evidence_gates_judge_a_mirror_step_on_the_pairs() {
    let cp = evidence_rollout(json!({"steps": "mirror:20,50,100", "max_latency_increase": 1.2})).await;
    assert_eq!(cp.get_endpoint().unwrap().spec.mirror_traffic, [("green".to_string(), 20)].into());
    {
        let state = cp.lock();
        let green = &state.deployments["green"];
        let report = &green.shadow.report;
        let answer = |status: u16, ms: u64| crate::mirror::report::Answer {
            status,
            body: bytes::Bytes::from_static(b"[1.0]"),
            latency: Duration::from_millis(ms),
        };
        for i in 0..2_000u32 {
            report.record(&i.to_string(), &answer(200, 2), &answer(if i % 20 == 0 { 500 } else { 200 }, 2));
            green.live.metrics().observe(Role::mirror, if i % 20 == 0 { 500 } else { 200 }, 0.002);
        }
    }
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::RolledBack, "{:?}", view.events);
    let rollback = view.rollback.unwrap();
    assert_eq!(
        (rollback.step.as_str(), rollback.gate.as_str()),
        ("mirror:20", "error_increase"),
        "{}",
        rollback.message
    );
    let gate = &rollback.evidence[0];
    let (t, i) = (gate.target.clone().unwrap(), gate.incumbent.clone().unwrap());
    assert_eq!((t.n, t.errors, i.n, i.errors), (2_000, Some(100), 2_000, Some(0)), "the pairs, both sides");
    let latency = rollback.evidence.iter().find(|g| g.gate == "latency_increase").unwrap();
    assert_eq!(latency.target.as_ref().map(|s| s.n), Some(2_000), "the pairs' latencies");
}

/// What a plan needs is said at the start, at the endpoint's measured rate: a trickle is
/// warned about (and the estimate kept in `show`), and `strict` refuses the same plan
/// without changing anything; with traffic enough it starts.
#[tokio::test]
async fn a_plan_that_cannot_gather_its_evidence_is_warned_about_and_refused_when_strict() {
    let cp = two_deployments_paused().await;
    let plan = json!({"to": "green", "steps": "50,100", "step_duration": "60s", "confidence": 0.95,
                      "max_error_increase": 0.01, "max_extensions": 1, "strict": true});
    let refused = cp.start_rollout(RolloutPlan::from_value(&plan).unwrap(), RolloutSource::Api).unwrap_err();
    assert!(refused.to_string().contains("not measured yet"), "{refused}");
    // One request per second for ten seconds.
    for _ in 0..=10 {
        cp.sample_rate();
        answers(&cp, "blue", 1, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let refused = cp.start_rollout(RolloutPlan::from_value(&plan).unwrap(), RolloutSource::Api).unwrap_err();
    assert!(matches!(&refused, ControlError::Spec(_)), "a 400: {refused:?}");
    assert!(refused.to_string().contains("step 50 cannot gather its evidence in time"), "{refused}");
    assert!(matches!(cp.rollout_view(), Err(ControlError::NotFound(_))), "a refused plan starts nothing");
    assert_eq!(split(&cp), json!({"blue": 100, "green": 0}));

    let mut lenient = plan.clone();
    lenient["strict"] = json!(false);
    let view = cp.start_rollout(RolloutPlan::from_value(&lenient).unwrap(), RolloutSource::Api).unwrap();
    let needs = view.needs.expect("the estimate is kept");
    assert!((needs.rate_per_second.unwrap() - 1.0).abs() < 0.2, "{needs:?}");
    assert_eq!(needs.steps[0].fits, Some(false));
    assert!(view.events.iter().any(|e| e.message.starts_with("warning: step 50 cannot gather")), "{:?}", view.events);
    cp.abort_rollout().unwrap();

    // 1,000 requests per second: the same strict plan fits and starts.
    for _ in 0..=10 {
        cp.sample_rate();
        answers(&cp, "blue", 1_000, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    let view = cp.start_rollout(RolloutPlan::from_value(&plan).unwrap(), RolloutSource::Api).unwrap();
    assert_eq!(view.needs.unwrap().steps[0].fits, Some(true));
}

/// A live step whose incumbent answered nothing in the window (all of a trickle went to the
/// target) is undecided, not passed on the target's numbers alone.
#[tokio::test]
async fn evidence_gates_do_not_pass_a_step_whose_incumbent_answered_nothing() {
    let cp = evidence_rollout(json!({"max_latency_increase": 1.2})).await;
    timed_answers(&cp, "green", lognormal(6, 2_000, 0.002));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!((view.status, view.step.index), (super::rollout::RolloutStatus::Running, 0), "{:?}", view.events);
    let window = &view.judged[0];
    assert_eq!(window.decision, "extended");
    assert!(window
        .gates
        .iter()
        .all(|g| g.note.is_none() && g.judgement.outcome == super::evidence::Outcome::Inconclusive));
}

/// A pause disarms the latency rings (requests pay nothing while nothing is judged), and a
/// step's looks are counted across a pause and resume: a resumed step does not get a fresh
/// set of looks, so the level split between them holds.
#[tokio::test]
async fn a_pause_disarms_the_latency_rings_and_keeps_the_steps_looks() {
    let cp = evidence_rollout(json!({"max_latency_increase": 1.2, "max_extensions": 1})).await;
    let cursor = |name: &str| cp.lock().deployments[name].live.metrics().latencies(Role::live).cursor();
    answers(&cp, "green", 25, 1);
    answers(&cp, "blue", 25, 0);
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.judged.iter().map(|w| w.decision.as_str()).collect::<Vec<_>>(), ["extended"]);
    cp.pause_rollout().unwrap();
    let before = cursor("blue");
    answers(&cp, "blue", 10, 0);
    assert_eq!(cursor("blue"), before, "paused: nothing recorded");
    cp.resume_rollout().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    answers(&cp, "green", 25, 0);
    answers(&cp, "blue", 25, 0);
    assert!(cursor("blue") > before, "resumed: recording again");
    tokio::time::sleep(Duration::from_secs(61)).await;
    let view = cp.rollout_view().unwrap();
    assert_eq!(view.status, super::rollout::RolloutStatus::RolledBack, "{:?}", view.events);
    let looks: Vec<(u32, &str)> = view.judged.iter().map(|w| (w.look, w.decision.as_str())).collect();
    assert_eq!(looks, [(1, "extended"), (2, "rolled_back_inconclusive")], "two looks in all, not two per window");
}
