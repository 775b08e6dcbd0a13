//! Native scoring plugins (CONTRACT §2, "native hook"; runtime/README.md): the Rust example
//! (model-1's linear model) and the C example built here, and the failure cases: a segfault
//! in process (kills a throwaway server) and in a worker (`isolation: process`: one request,
//! one restart), a panic, a failing init, an ABI version mismatch, a short table, bad input, a
//! missing dependency, a run or init that never returns, an answer over the cap, and where the
//! server keeps its copies of in-process plugins.
//!
//! The plugins are built by the test itself: the Rust ones with cargo (workspace members), the
//! C ones with `cc` against runtime/include/switchyard_plugin.h.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{assert_model_1, eventually, repo, sample_request, try_http, Server};
use serde_json::{json, Value};

/// The built plugins.
struct Plugins {
    linear: PathBuf,
    faults_rs: PathBuf,
    faults_c: PathBuf,
    row_sums: PathBuf,
    abi_2: PathBuf,
    short_table: PathBuf,
}

/// `target/debug` (or whichever profile built this test).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn cc(source: &Path, out: &Path, defines: &[&str]) {
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-O2", "-I"])
        .arg(repo().join("runtime/include"))
        .args(defines)
        .arg(source)
        .arg("-o")
        .arg(out)
        .arg("-lm")
        .status()
        .expect("run cc (a C compiler is needed for the C plugin tests)");
    assert!(status.success(), "cc {} failed", source.display());
}

fn plugins() -> &'static Plugins {
    static BUILT: OnceLock<Plugins> = OnceLock::new();
    BUILT.get_or_init(|| {
        let profile = profile_dir();
        let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cargo.current_dir(repo()).args(["build", "-p", "switchyard-example-linear", "-p", "switchyard-test-faults"]);
        if profile.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo build for the plugins");
        assert!(status.success(), "building the Rust plugins failed");
        let c_dir = profile.join("native-test-plugins");
        std::fs::create_dir_all(&c_dir).unwrap();
        let faults = repo().join("tests/fixtures/native/faults.c");
        let plugins = Plugins {
            linear: profile.join("libswitchyard_example_linear.so"),
            faults_rs: profile.join("libswitchyard_test_faults.so"),
            faults_c: c_dir.join("faults.so"),
            row_sums: c_dir.join("row_sums.so"),
            abi_2: c_dir.join("faults_abi2.so"),
            short_table: c_dir.join("faults_short.so"),
        };
        cc(&faults, &plugins.faults_c, &[]);
        cc(&repo().join("runtime/examples/c/row_sums.c"), &plugins.row_sums, &[]);
        cc(&faults, &plugins.abi_2, &["-DFAULT_ABI_MAJOR=2"]);
        cc(&faults, &plugins.short_table, &["-DFAULT_SHORT_TABLE"]);
        plugins
    })
}

/// A code folder holding a copy of `library` as `plugin.so` (what a user deploys).
fn code_dir(library: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(library, dir.path().join("plugin.so")).unwrap();
    dir
}

/// The deployment document of a native plugin in `code` (model: models/model-1).
fn native_doc(name: &str, code: &Path, extra: Value) -> Value {
    let mut doc = json!({
        "name": name,
        "model": {"path": repo().join("models/model-1")},
        "code_configuration": {"code": code, "scoring_script": "plugin.so"},
    });
    for (k, v) in extra.as_object().unwrap() {
        doc[k] = v.clone();
    }
    doc
}

fn put(server: &Server, name: &str, doc: &Value) {
    let r = server.admin("PUT", &format!("/v1/deployments/{name}"), Some(doc));
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
}

fn deploy_native(server: &Server, name: &str, code: &Path, extra: Value) -> Value {
    put(server, name, &native_doc(name, code, extra));
    server.wait_state(name, "Succeeded")
}

fn score(server: &Server, pin: &str, body: &[u8]) -> common::Reply {
    server.score_authed(&server.primary_key(), body, Some(pin))
}

fn server() -> Server {
    // A panic's backtrace (RUST_BACKTRACE set for the tests) takes seconds to symbolise in a
    // debug build, past the run's deadline: the panic tests want the panic, not the timeout.
    let s = Server::start_with_env(&[], &[("RUST_BACKTRACE", "0")]);
    s.create_endpoint();
    s
}

#[test]
fn the_rust_plugin_answers_like_model_1_in_process_and_isolated() {
    let p = plugins();
    let s = server();
    let code = code_dir(&p.linear);
    s.deploy("onnx", "model-1", json!({}));
    deploy_native(&s, "native", code.path(), json!({}));
    deploy_native(&s, "isolated", code.path(), json!({"isolation": "process"}));
    let onnx = score(&s, "onnx", &sample_request());
    assert_eq!(onnx.status, 200, "{}", onnx.body);
    for name in ["native", "isolated"] {
        let r = score(&s, name, &sample_request());
        assert_eq!(r.status, 200, "{name}: {}", r.body);
        assert_eq!(r.header("content-type"), Some("application/json"), "{name}");
        assert_eq!(r.header("azureml-model-deployment"), Some(name));
        assert_model_1(&r.body);
        assert_model_1(&onnx.body);

        // Bad input is the caller's error and says what is expected.
        let bad = score(&s, name, br#"{"data": [[1, 2, 3]]}"#);
        assert_eq!(bad.status, 400, "{name}: {}", bad.body);
        assert!(bad.message().contains(r#"expected {"data": [[10 numbers], ...]}"#), "{}", bad.body);
        assert!(bad.message().contains("row 0 has 3 numbers"), "{}", bad.body);
        let not_json = score(&s, name, b"hello");
        assert_eq!(not_json.status, 400, "{}", not_json.body);

        // A model error (a prediction JSON cannot carry) is a 424 with the reason, and the
        // instance keeps serving.
        let inf =
            score(&s, name, br#"{"data": [[1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308, 1e308]]}"#);
        assert_eq!(inf.status, 424, "{name}: {}", inf.body);
        let reason = inf.header("ms-azureml-model-error-reason").unwrap_or_default().to_string();
        assert!(reason.contains("not a finite number"), "{reason}");
        assert_eq!(score(&s, name, &sample_request()).status, 200);
    }
    let shown = s.admin("GET", "/v1/deployments/isolated", None).json();
    assert_eq!(shown["isolation"], "process", "{shown}");
}

#[test]
fn the_c_plugin_gets_its_environment_and_refuses_bad_input() {
    let p = plugins();
    let s = server();
    let code = code_dir(&p.row_sums);
    deploy_native(&s, "rows", code.path(), json!({"environment_variables": {"SCALE": 2}}));
    let auth = format!("Bearer {}", s.primary_key());
    let r = s.score(
        b"1,2,3\n4,5,6\n",
        &[("azureml-model-deployment", "rows"), ("Content-Type", "text/csv"), ("Authorization", &auth)],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(common::numbers(&r.body), [12.0, 30.0]);
    let bad = score(&s, "rows", b"1,x");
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.message().contains("comma-separated numbers"), "{}", bad.body);

    // A failing init fails that deployment only, with the plugin's message.
    put(&s, "rows-bad", &native_doc("rows-bad", code.path(), json!({"environment_variables": {"SCALE": "lots"}})));
    let failed = s.wait_state("rows-bad", "Failed");
    assert!(failed["error"].as_str().unwrap_or_default().contains("SCALE must be a number"), "{failed}");
    assert_eq!(score(&s, "rows", b"1").status, 200);
}

#[test]
#[allow(unsafe_code)] // its libc call is explained at the call (SAFETY)
fn a_segfault_in_process_kills_the_server() {
    let p = plugins();
    // A throwaway server: this is the failure `isolation: process` exists for. No core file:
    // the limit is inherited by the server this test process starts.
    let no_core = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit(2) with a valid resource and a pointer to a local; lowers this test
    // process's core size limit, nothing else.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) };
    let mut s = server();
    let code = code_dir(&p.faults_c);
    deploy_native(&s, "crashy", code.path(), json!({}));
    assert_eq!(score(&s, "crashy", b"{}").status, 200);
    let agent = common::agent();
    let url = format!("{}/score", s.scoring);
    let auth = format!("Bearer {}", s.primary_key());
    let headers = [("azureml-model-deployment", "crashy"), ("Authorization", auth.as_str())];
    let r = try_http(&agent, "POST", &url, &headers, Some(b"segv"));
    assert!(r.is_err(), "the server answered a segfaulting plugin: {r:?}");
    let status = s.wait_exit();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "the server ended with {status:?}");
}

#[test]
fn a_segfault_in_a_worker_costs_one_request_and_one_instance_restart() {
    let p = plugins();
    let mut s = server();
    let code = code_dir(&p.faults_c);
    s.deploy("onnx", "model-1", json!({}));
    deploy_native(&s, "crashy", code.path(), json!({"isolation": "process"}));
    assert_eq!(score(&s, "crashy", b"{}").status, 200);

    let r = score(&s, "crashy", b"segv");
    assert_eq!(r.status, 424, "{}", r.body);
    let reason = r.header("ms-azureml-model-error-reason").unwrap_or_default().to_string();
    assert!(reason.contains("died during the run") && reason.contains("SIGSEGV"), "{reason}");
    // The server lives, the other deployment never noticed, and the instance comes back.
    assert!(s.wait_exit_within(Duration::from_millis(0)).is_none(), "the server died");
    assert_model_1(&score(&s, "onnx", &sample_request()).body);
    eventually("the crashed instance is replaced", Duration::from_secs(30), || {
        let r = score(&s, "crashy", b"{}");
        if r.status == 200 {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
    let logs = s.cli_ok(&["online-deployment", "get-logs", "-n", "crashy", "-e", "my-endpoint", "--lines", "5000"]);
    assert!(logs.contains("a new worker replaces it"), "{logs}");
    // Bad input and model errors cross the worker's frames as 400 and 424.
    assert_eq!(score(&s, "crashy", b"bad").status, 400);
    let fail = score(&s, "crashy", b"fail");
    assert_eq!(fail.status, 424);
    assert_eq!(fail.header("ms-azureml-model-error-reason"), Some("the body said fail"));
}

/// The instance number the faults plugin answers with.
fn instance_of(r: &common::Reply) -> u64 {
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["instance"].as_u64().unwrap()
}

#[test]
fn a_panic_is_a_424_and_the_instance_is_replaced_both_ways() {
    let p = plugins();
    let s = server();
    let code = code_dir(&p.faults_rs);
    deploy_native(&s, "inproc", code.path(), json!({}));
    deploy_native(&s, "isolated", code.path(), json!({"isolation": "process"}));
    for name in ["inproc", "isolated"] {
        let before = instance_of(&score(&s, name, b"{}"));
        // A model error keeps the instance.
        let fail = score(&s, name, b"fail");
        assert_eq!(fail.status, 424, "{}", fail.body);
        assert_eq!(instance_of(&score(&s, name, b"{}")), before, "{name}: a model error replaced the instance");
        let logs = s.cli_ok(&["online-deployment", "get-logs", "-n", name, "-e", "my-endpoint", "--lines", "5000"]);
        assert!(!logs.contains("replaces it"), "{name}: a model error replaced the instance: {logs}");
        let bad = score(&s, name, b"bad");
        assert_eq!(bad.status, 400);
        assert_eq!(bad.message(), "expected anything but `bad`");

        let r = score(&s, name, b"panic");
        assert_eq!(r.status, 424, "{name}: {}", r.body);
        let reason = r.header("ms-azureml-model-error-reason").unwrap_or_default().to_string();
        assert!(reason.contains("run panicked: the body said panic"), "{name}: {reason}");
        eventually("the panicked instance is replaced", Duration::from_secs(30), || {
            let r = score(&s, name, b"{}");
            if r.status == 200 {
                Ok(())
            } else {
                Err(format!("{} {}", r.status, r.body))
            }
        });
        let logs = s.cli_ok(&["online-deployment", "get-logs", "-n", name, "-e", "my-endpoint", "--lines", "5000"]);
        let said = if name == "inproc" { "the plugin panicked" } else { "worker panicked" };
        assert!(logs.contains(said) && logs.contains("replaces it"), "{name}: {logs}");
    }

    // A panic in init fails that deployment, with the panic's message; the others serve on.
    for (name, isolation) in [("init-panic", "in_process"), ("init-panic-isolated", "process")] {
        put(
            &s,
            name,
            &native_doc(
                name,
                code.path(),
                json!({"isolation": isolation, "environment_variables": {"FAULT_INIT": "panic"}}),
            ),
        );
        let failed = s.wait_state(name, "Failed");
        assert!(failed["error"].as_str().unwrap_or_default().contains("init panicked: FAULT_INIT=panic"), "{failed}");
    }
    assert_eq!(score(&s, "inproc", b"{}").status, 200);
}

#[test]
fn version_mismatch_and_short_table_are_refused_naming_the_versions() {
    let p = plugins();
    let s = server();
    let abi_2 = code_dir(&p.abi_2);
    let short = code_dir(&p.short_table);
    put(&s, "abi2", &native_doc("abi2", abi_2.path(), json!({})));
    let failed = s.wait_state("abi2", "Failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("built for plugin ABI 2.0") && error.contains("speaks ABI 1.0"), "{error}");

    put(&s, "short", &native_doc("short", short.path(), json!({"isolation": "process"})));
    let failed = s.wait_state("short", "Failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("table is 16 bytes") && error.contains("needs 32"), "{error}");
    assert!(error.contains("ABI 1.0"), "{error}");

    // Not a plugin at all: a clear message, not a crash.
    let not_plugin = tempfile::tempdir().unwrap();
    std::fs::write(not_plugin.path().join("plugin.so"), b"not an ELF file").unwrap();
    put(&s, "junk", &native_doc("junk", not_plugin.path(), json!({})));
    let failed = s.wait_state("junk", "Failed");
    assert!(failed["error"].as_str().unwrap_or_default().contains("cannot load the native plugin"), "{failed}");
}

#[test]
fn isolation_is_checked_at_the_edge() {
    let s = server();
    let doc = json!({"name": "xyz", "model": {"path": repo().join("models/model-1")}, "isolation": "process"});
    let r = s.admin("PUT", "/v1/deployments/xyz", Some(&doc));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("isolation: process applies to native plugins only"), "{}", r.body);
    let code = code_dir(&plugins().faults_c);
    let r =
        s.admin("PUT", "/v1/deployments/xyz", Some(&native_doc("xyz", code.path(), json!({"isolation": "sandbox"}))));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("isolation") && r.message().contains("process"), "{}", r.body);
    let mut doc = native_doc("xyz", code.path(), json!({}));
    doc["code_configuration"]["scoring_script"] = json!("missing.so");
    let r = s.admin("PUT", "/v1/deployments/xyz", Some(&doc));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.message().contains("missing.so is not a file"), "{}", r.body);
    assert_eq!(s.admin("GET", "/v1/deployments/xyz", None).status, 404);
}

#[test]
fn the_readme_path_deploys_the_example_yaml_files_and_scores_them() {
    // runtime/README.md, "Deploy it" and "Score it": the example YAML files, the CLI, the
    // plugins copied where the YAML files point (examples/native/ ignores *.so).
    let p = plugins();
    let native = repo().join("examples/native");
    std::fs::copy(&p.linear, native.join("libswitchyard_example_linear.so")).unwrap();
    std::fs::copy(&p.row_sums, native.join("row_sums.so")).unwrap();
    let s = Server::start();
    s.cli_ok(&["online-endpoint", "create", "-n", "my-endpoint", "-f", "examples/endpoint.yml"]);
    s.cli_ok(&[
        "online-deployment",
        "create",
        "-n",
        "native",
        "-e",
        "my-endpoint",
        "-f",
        "examples/native-deployment.yml",
        "--all-traffic",
    ]);
    s.cli_ok(&[
        "online-deployment",
        "create",
        "-n",
        "rowsums",
        "-e",
        "my-endpoint",
        "-f",
        "examples/native-c-deployment.yml",
    ]);
    let shown = s.cli_json(&["online-deployment", "show", "-n", "rowsums", "-e", "my-endpoint"]);
    assert_eq!(shown["provisioning_state"], "Succeeded", "{shown}");
    assert_eq!(shown["isolation"], "process", "{shown}");
    let out =
        s.cli_ok(&["online-endpoint", "invoke", "-n", "my-endpoint", "--request-file", "sample-requests/model-1.json"]);
    assert_model_1(out.trim());
    let rows = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rows.path(), "1,2,3\n4,5,6\n").unwrap();
    let file = rows.path().display().to_string();
    let out = s.cli_ok(&[
        "online-endpoint",
        "invoke",
        "-n",
        "my-endpoint",
        "--deployment-name",
        "rowsums",
        "--request-file",
        &file,
    ]);
    assert_eq!(common::numbers(out.trim()), [12.0, 30.0], "{out}");
}

#[test]
fn a_plugin_rebuilt_in_place_and_deployed_again_runs_the_new_code() {
    // The loader hands back an already loaded library for a path it knows: a replacement loads
    // beside the old version, so without care the new deployment would run the old code.
    let p = plugins();
    let s = server();
    let code = code_dir(&p.faults_c);
    deploy_native(&s, "swap", code.path(), json!({}));
    assert_eq!(score(&s, "swap", b"1,2").body, r#"{"ok": true}"#);
    std::fs::copy(&p.row_sums, code.path().join("plugin.so")).unwrap();
    let r = s.admin(
        "PUT",
        "/v1/deployments/swap",
        Some(&native_doc("swap", code.path(), json!({"environment_variables": {"V": "2"}}))),
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.body);
    eventually("the rebuilt plugin answers", Duration::from_secs(30), || {
        let r = score(&s, "swap", b"1,2");
        if r.status == 200 && r.body == "[3]" {
            Ok(())
        } else {
            Err(format!("{} {}", r.status, r.body))
        }
    });
}

/// The `switchyard-plugins-*` folders under `tmp`.
fn plugin_dirs(tmp: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("switchyard-plugins-"))
        .collect();
    dirs.sort();
    dirs
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect()
}

#[test]
fn plugin_copies_live_in_a_private_folder_of_our_own_and_are_removed_when_unused_and_at_exit() {
    use sha2::{Digest, Sha256};
    let p = plugins();
    let tmp = tempfile::tempdir().unwrap();
    let tmp_path = tmp.path().to_str().unwrap();
    let mut s = Server::start_with_env(&[], &[("TMPDIR", tmp_path)]);
    s.create_endpoint();
    // Another local user plants a folder named as the server's copies were
    // (`$TMPDIR/switchyard-plugins-PID`) holding their library under the name the copy of the
    // deployed plugin would have had (`HASH-plugin.so`).
    let planted = tmp.path().join(format!("switchyard-plugins-{}", s.pid()));
    std::fs::create_dir(&planted).unwrap();
    let hash = hex::encode(&Sha256::digest(std::fs::read(&p.faults_c).unwrap())[..12]);
    std::fs::copy(&p.row_sums, planted.join(format!("{hash}-plugin.so"))).unwrap();

    // The code folder's plugin is reached through a link (inside the folder), readable by all.
    let code = tempfile::tempdir().unwrap();
    std::fs::create_dir(code.path().join("build")).unwrap();
    std::fs::copy(&p.faults_c, code.path().join("build/faults.so")).unwrap();
    std::os::unix::fs::symlink("build/faults.so", code.path().join("plugin.so")).unwrap();
    deploy_native(&s, "victim", code.path(), json!({"instance_count": 2}));
    let r = score(&s, "victim", b"1,2");
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"ok": true}"#), "the planted library was loaded");

    let ours: Vec<PathBuf> = plugin_dirs(tmp.path()).into_iter().filter(|d| *d != planted).collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    let private = &ours[0];
    assert_eq!(mode(private), 0o700, "the copies' folder is private");
    let copies = files_in(private);
    assert_eq!(copies.len(), 1, "two instances of the same bytes share one copy: {copies:?}");
    assert_eq!(mode(&copies[0]), 0o600, "the copy is readable by the server's user only");

    // Another version beside it; deleting it removes its copy, the other stays in use.
    let other = code_dir(&p.row_sums);
    deploy_native(&s, "other", other.path(), json!({}));
    assert_eq!(files_in(private).len(), 2);
    assert_eq!(s.admin("DELETE", "/v1/deployments/other", None).status, 200);
    eventually("the unused copy is removed", Duration::from_secs(30), || match files_in(private).len() {
        1 => Ok(()),
        n => Err(format!("{n} copies")),
    });
    assert_eq!(files_in(private), copies, "the copy in use stays");
    assert_eq!(score(&s, "victim", b"1,2").status, 200);
    // Deployed again, that version gets its copy back.
    deploy_native(&s, "other", other.path(), json!({}));
    assert_eq!(score(&s, "other", b"1,2").body, "[3]");
    assert_eq!(files_in(private).len(), 2);
    assert!(files_in(private).iter().all(|f| mode(f) == 0o600));

    // SIGTERM: the folder goes with the server; the planted one is not ours and stays.
    assert!(s.terminate().success());
    assert_eq!(plugin_dirs(tmp.path()), vec![planted.clone()]);
}

#[test]
fn a_large_plugin_being_copied_holds_up_no_other_plugin_deployment() {
    // The copy of a large library (512 MiB, sparse: all zeros, so it then fails as not a
    // library) was streamed and hashed under the process-wide lock of the copies, which every
    // other in-process plugin's load (and each copy's removal) takes: nothing else deployed
    // until it ended.
    let p = plugins();
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(&[], &[("TMPDIR", tmp.path().to_str().unwrap())]);
    s.create_endpoint();
    let big = tempfile::tempdir().unwrap();
    std::fs::File::create(big.path().join("plugin.so")).unwrap().set_len(512 << 20).unwrap();
    put(&s, "big", &native_doc("big", big.path(), json!({})));
    let partial = eventually("the big plugin is being copied", Duration::from_secs(120), || {
        let dirs = plugin_dirs(tmp.path());
        let partial = dirs
            .iter()
            .flat_map(|d| files_in(d))
            .find(|f| f.file_name().unwrap().to_string_lossy().starts_with(".partial-"));
        partial.ok_or_else(|| format!("no copy in progress in {dirs:?}"))
    });
    let small = code_dir(&p.row_sums);
    deploy_native(&s, "small", small.path(), json!({}));
    assert!(partial.exists(), "the small plugin deployed only after the big copy ended");
    assert_eq!(score(&s, "small", b"1,2").body, "[3]");
    // The big copy is not waited for (it then fails as not a library): the server is killed
    // when the test ends, and its folder goes with `tmp`.
}

#[test]
fn a_dead_servers_plugin_copies_are_removed_by_the_next_start_and_a_live_ones_stay() {
    let p = plugins();
    let tmp = tempfile::tempdir().unwrap();
    let env = [("TMPDIR", tmp.path().to_str().unwrap())];
    let code = code_dir(&p.faults_c);
    let start = |name: &str| {
        let s = Server::start_with_env(&[], &env);
        s.create_endpoint();
        deploy_native(&s, name, code.path(), json!({}));
        s
    };
    let live = start("live");
    let live_dir = plugin_dirs(tmp.path());
    assert_eq!(live_dir.len(), 1);
    let mut dead = start("dead");
    let both = plugin_dirs(tmp.path());
    assert_eq!(both.len(), 2);
    dead.kill9();
    // A look-alike of a dead server's folder that is not private (mode 0755) is not ours.
    let dead_dir: Vec<PathBuf> = both.iter().filter(|d| !live_dir.contains(d)).cloned().collect();
    let name = dead_dir[0].file_name().unwrap().to_string_lossy().into_owned();
    let look_alike =
        tmp.path().join(format!("{}-open", name.trim_end_matches(|c: char| c != '-').trim_end_matches('-')));
    std::fs::create_dir(&look_alike).unwrap();
    assert_eq!(plugin_dirs(tmp.path()).len(), 3, "kill -9 leaves the folder behind");

    let _next = Server::start_with_env(&[], &env);
    let mut left = plugin_dirs(tmp.path());
    left.retain(|d| *d != look_alike);
    assert_eq!(left, live_dir, "the dead server's folder is removed, the live one's stays");
    assert!(look_alike.exists());
    assert_eq!(score(&live, "live", b"{}").status, 200);
}

#[test]
fn a_plugin_that_does_not_load_says_why() {
    // A plugin linked against a library that is not there: the loader's reason is the answer.
    let p = plugins();
    let build = tempfile::tempdir().unwrap();
    let dep = build.path().join("dep.c");
    std::fs::write(&dep, "int missing_dep(void) { return 1; }\n").unwrap();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(build.path().join("libmissingdep.so"))
        .arg(&dep)
        .status()
        .unwrap();
    assert!(status.success());
    let code = tempfile::tempdir().unwrap();
    let lib_dir = format!("-L{}", build.path().display());
    cc(
        &repo().join("tests/fixtures/native/faults.c"),
        &code.path().join("plugin.so"),
        &["-Wl,--no-as-needed", &lib_dir, "-lmissingdep"],
    );
    std::fs::remove_file(build.path().join("libmissingdep.so")).unwrap();
    let _ = p;
    let s = server();
    for (name, isolation) in [("missing", "in_process"), ("missing-isolated", "process")] {
        put(&s, name, &native_doc(name, code.path(), json!({"isolation": isolation})));
        let failed = s.wait_state(name, "Failed");
        let error = failed["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("libmissingdep.so: cannot open shared object file"),
            "{name}: the loader's reason is missing: {error}"
        );
        assert!(error.contains(&code.path().join("plugin.so").display().to_string()), "{name}: {error}");
    }
}

#[test]
fn a_plugin_whose_libraries_sit_beside_it_says_why_it_does_not_load_in_process() {
    // RPATH $ORIGIN, libmissingdep.so right beside the plugin: found with isolation: process
    // (loaded where it is); in process the loader looks beside the private copy instead.
    let _ = plugins();
    let code = tempfile::tempdir().unwrap();
    let dep = code.path().join("dep.c");
    std::fs::write(&dep, "int missing_dep(void) { return 1; }\n").unwrap();
    let status = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
        .args(["-shared", "-fPIC", "-o"])
        .arg(code.path().join("libmissingdep.so"))
        .arg(&dep)
        .status()
        .unwrap();
    assert!(status.success());
    let lib_dir = format!("-L{}", code.path().display());
    cc(
        &repo().join("tests/fixtures/native/faults.c"),
        &code.path().join("plugin.so"),
        &["-Wl,--no-as-needed", "-Wl,-rpath,$ORIGIN", &lib_dir, "-lmissingdep"],
    );
    let s = server();
    deploy_native(&s, "beside-isolated", code.path(), json!({"isolation": "process"}));
    assert_eq!(score(&s, "beside-isolated", b"{}").status, 200);
    put(&s, "beside", &native_doc("beside", code.path(), json!({})));
    let failed = s.wait_state("beside", "Failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("libmissingdep.so: cannot open shared object file"), "{error}");
    assert!(error.contains("private copy") && error.contains("$ORIGIN"), "the copy is not explained: {error}");
    assert!(error.contains("isolation: process"), "no way out is given: {error}");
}

#[test]
fn a_hung_run_takes_its_instance_out_of_service_and_a_hung_init_fails_at_the_deadline() {
    let p = plugins();
    let s = Server::start_with_env(&[], &[("RUST_BACKTRACE", "0"), ("SWITCHYARD_INIT_TIMEOUT_MS", "1500")]);
    s.create_endpoint();
    let code = code_dir(&p.faults_c);
    let settings = json!({"request_settings": {"request_timeout_ms": 500}});
    deploy_native(&s, "hangs", code.path(), settings.clone());
    // The plugin's run never returns: the request times out, and the instance, whose thread is
    // stuck in the plugin, must not be handed out again.
    assert_eq!(score(&s, "hangs", b"hang").status, 408);
    eventually("the hung instance is out of service and replaced", Duration::from_secs(30), || {
        let show = s.admin("GET", "/v1/deployments/hangs", None).json();
        let r = score(&s, "hangs", b"{}");
        if show["instances"]["hung"] == 1 && show["instances"]["ready"] == 1 && r.status == 200 {
            Ok(())
        } else {
            Err(format!("{show} / {} {}", r.status, r.body))
        }
    });
    let show = s.admin("GET", "/v1/deployments/hangs", None).json();
    let reason = show["hung_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("500 ms") && reason.contains("taken out of service"), "{show}");
    let logs = s.cli_ok(&["online-deployment", "get-logs", "-n", "hangs", "-e", "my-endpoint", "--lines", "5000"]);
    assert!(logs.contains("taken out of service"), "{logs}");
    for _ in 0..5 {
        assert_eq!(score(&s, "hangs", b"{}").status, 200, "the replacement serves");
    }

    // An init that never returns fails the load at the deadline instead of leaving the
    // deployment Creating for good; the others are unaffected.
    let doc = native_doc("init-hangs", code.path(), json!({"environment_variables": {"FAULT_INIT": "hang"}}));
    put(&s, "init-hangs", &doc);
    let failed = s.wait_state("init-hangs", "Failed");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("did not return within 1500 ms") && error.contains("cannot be stopped"), "{error}");
    assert_eq!(score(&s, "hangs", b"{}").status, 200);
}

/// POST /score pinned to `pin`, with a client that gives up after 20 s (the shared one waits
/// 60 s): a connection held by a stalled I/O thread is an error here, not a hung test.
fn score_or_error(s: &Server, pin: &str, body: &[u8]) -> Result<u16, String> {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(20))).build(),
    );
    let auth = format!("Bearer {}", s.primary_key());
    let headers =
        [("Authorization", auth.as_str()), ("azureml-model-deployment", pin), ("Content-Type", "application/json")];
    try_http(&agent, "POST", &format!("{}/score", s.scoring), &headers, Some(body)).map(|r| r.status)
}

#[test]
fn a_run_that_hangs_after_fast_ones_is_a_408_stalls_no_other_request_and_sigterm_still_exits() {
    // Fast runs first: the pool's measured cost is then far under the inline limit, where a
    // run used to execute on the scoring plane's I/O thread, which a hang then held for good
    // (no 408, every later connection on that thread stalled, SIGTERM never finished).
    let p = plugins();
    let mut s = Server::start_with_env(&["--shutdown-grace-secs", "2"], &[("RUST_BACKTRACE", "0")]);
    s.create_endpoint();
    let code = code_dir(&p.faults_c);
    deploy_native(&s, "hangs", code.path(), json!({"request_settings": {"request_timeout_ms": 1000}}));
    s.deploy("onx", "model-1", json!({}));
    for _ in 0..5 {
        assert_eq!(score_or_error(&s, "hangs", b"ok"), Ok(200));
    }
    assert_eq!(score_or_error(&s, "hangs", b"hang"), Ok(408), "the hung run is answered at its deadline");
    for i in 0..8 {
        assert_eq!(score_or_error(&s, "onx", &sample_request()), Ok(200), "request {i} to another deployment");
    }
    for _ in 0..4 {
        // No traffic is set, so 503 (not ready), but answered: the probe is not stalled.
        assert_eq!(s.get("/health/ready").status, 503);
    }
    // SIGTERM: the blocking thread stuck in the plugin does not keep the process alive past
    // the grace period (it exits then, saying what was left).
    let killed = Command::new("kill").arg(s.pid().to_string()).status().unwrap();
    assert!(killed.success());
    assert!(s.wait_exit_within(Duration::from_secs(60)).is_some(), "still running 60 s after SIGTERM");
}

#[test]
fn an_answer_over_the_cap_is_a_424_naming_the_cap_in_process_and_isolated() {
    // The plugin answers 300 MiB (mapped, never touched): in process it was copied whole.
    let p = plugins();
    let s = server();
    let code = code_dir(&p.faults_c);
    deploy_native(&s, "inproc", code.path(), json!({}));
    deploy_native(&s, "isolated", code.path(), json!({"isolation": "process"}));
    for name in ["inproc", "isolated"] {
        let r = score(&s, name, b"huge");
        assert_eq!(r.status, 424, "{name}: {} bytes", r.body.len());
        let reason = r.header("ms-azureml-model-error-reason").unwrap_or_default().to_string();
        assert!(reason.contains("answer cap of 256 MiB") && reason.contains("314572800 bytes"), "{name}: {reason}");
        assert_eq!(score(&s, name, b"{}").status, 200, "{name}: the instance serves on");
    }
}
