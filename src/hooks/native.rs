//! The native hook: a scoring plugin in a shared library (`scoring_script: something.so`),
//! speaking the C ABI of `runtime/include/switchyard_plugin.h` (loading and calling through it
//! is `sys::native`, the only unsafe part).
//!
//! Two ways to run it, chosen by the deployment's `isolation`:
//! - in process (the default): each instance holds one plugin handle and calls `run` directly
//!   (~a few hundred ns of ABI cost). A panic the plugin catches (the Rust SDK catches every
//!   one) is a 424 and the instance is replaced; a segfault kills the server, every deployment
//!   with it. Nothing can stop a call in process: a `run` past `request_timeout_ms` takes its
//!   instance out of service (the pool's `watch_runs`), and an `init` past the init deadline
//!   fails the load ([`init_with_deadline`]); either thread stays blocked in the plugin.
//! - `process`: each instance is a `switchyard native-worker` child holding the handle, spoken
//!   to in the frame protocol of the Python hook, and supervised by the same code
//!   ([`super::worker`]): a crash costs the request it was serving (424) and one instance
//!   restart, at the price of a frame each way per request.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use bytes::Bytes;
use switchyard_plugin::code;

use super::worker::{frame, intern_content_type, Flavor, Worker};
use super::{HookError, HookRequest, HookResponse, InitContext, InitError, ScoringHook};
use crate::spec::{resolve_scoring_script, Isolation, NativePlugin};
use crate::sys::native::{Instance, Library, Reply};
use crate::telemetry::LogRing;

/// The environment variable that carries the deployment's `environment_variables` (as a JSON
/// object) to a native worker, which hands them to the plugin's `init`.
const PLUGIN_ENV: &str = "SWITCHYARD_PLUGIN_ENV";

/// Creates one instance of a native deployment, in process or in a worker.
pub(crate) fn start(plugin: &NativePlugin, ctx: &InitContext) -> Result<Box<dyn ScoringHook>, InitError> {
    match plugin.isolation {
        Isolation::InProcess => NativeHook::load(plugin, ctx).map(|h| Box::new(h) as _),
        Isolation::Process => WorkerHook::start(plugin, ctx).map(|h| Box::new(h) as _),
    }
}

/// `scoring_script` as written: the plugin's path relative to its code folder (the spec
/// joined them; the lexical rule keeps it inside).
fn script_name(plugin: &NativePlugin) -> String {
    let relative = plugin.library.strip_prefix(&plugin.code_dir).unwrap_or(&plugin.library);
    relative.to_string_lossy().into_owned()
}

/// What a deployment's log and `describe` say about a native deployment.
pub(crate) fn describe_plugin(plugin: &NativePlugin) -> String {
    let isolation = match plugin.isolation {
        Isolation::InProcess => "in process",
        Isolation::Process => "in a worker process",
    };
    format!("native plugin {} ({isolation})", plugin.library.display())
}

/// The server's private copies of in-process plugins (see [`copy_for_load`]).
#[derive(Default)]
struct Copies {
    /// `$TMPDIR/switchyard-plugins-XXXXXX`, made on first use: a fresh, randomly named folder
    /// created by this process with mode 0700 (`mkdir` fails if the name exists, so a folder
    /// another user made beforehand is never used).
    dir: Option<tempfile::TempDir>,
    /// Each library's copy by the hash of its bytes, while an instance holds it.
    by_hash: HashMap<String, Weak<PluginCopy>>,
    /// Numbers the partial files copies are written to.
    next: u64,
}

fn copies() -> std::sync::MutexGuard<'static, Copies> {
    static COPIES: OnceLock<Mutex<Copies>> = OnceLock::new();
    COPIES.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner())
}

/// One copy of a plugin in the private folder, `HASH-NAME`; the file is removed when the last
/// instance loaded from it is dropped.
pub(crate) struct PluginCopy {
    path: PathBuf,
    hash: String,
}

impl Drop for PluginCopy {
    fn drop(&mut self) {
        // Under the lock: a load of the same bytes that came after the last instance went may
        // have written a new copy at the same path already, which must stay.
        let mut c = copies();
        if c.by_hash.get(&self.hash).is_some_and(|w| w.strong_count() > 0) {
            return;
        }
        c.by_hash.remove(&self.hash);
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes the folder of plugin copies and everything in it: called once the server has
/// stopped (after SIGTERM's drain too). After `kill -9` the folder stays in `$TMPDIR` until the
/// next server starts ([`remove_dead_servers_copies`]); that one makes a new, randomly named
/// folder and never loads from the old.
pub(crate) fn remove_plugin_copies() {
    let dir = {
        let mut c = copies();
        c.by_hash.clear();
        c.dir.take()
    };
    if let Some(dir) = dir {
        let _ = dir.close();
    }
}

/// The start of the name of every folder of plugin copies.
const COPIES_PREFIX: &str = "switchyard-plugins-";

/// Removes the folders of plugin copies left by servers that are no longer running (`kill -9`,
/// a crash: nothing else removes them, and a crash loop added one set of copies per restart).
/// A folder is removed only if it is ours in every way: named `switchyard-plugins-PID-START-…`
/// by [`copy_for_load`], a real folder (not a link), owned by this user, mode 0700, and its
/// owner (that pid with that start time) is not running. Called once at the server's start.
pub(crate) fn remove_dead_servers_copies() {
    crate::sys::tmp::remove_dead_owners(COPIES_PREFIX, "plugin copies");
}

/// SHA-256 (first 12 bytes, hex) of everything `reader` yields, copied into `sink` on the way.
fn hash_copy(mut reader: impl Read, mut sink: impl Write) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        sink.write_all(&buf[..n])?;
    }
    Ok(hex::encode(&hasher.finalize()[..12]))
}

/// The copy of `library` (a path [`resolve_scoring_script`] returned) that the server's process
/// loads, shared by every instance loaded from the same bytes.
///
/// Why a copy: the dynamic loader returns the already loaded library for a path it has loaded
/// before, so a plugin rebuilt in place and deployed again (a replacement loads beside the old
/// version, which is still loaded) would silently run the old code. Identical bytes share one
/// copy (and one load); changed bytes get a new copy and are loaded fresh.
///
/// Why this way: the copies live in a private folder this process made (0700, random name),
/// each written to a file created here (`O_EXCL`, mode 0600), so no other local user can put a
/// library where the server will load it or read the copy; the file is removed when the last
/// instance holding it is dropped, the folder when the server stops. The file is read once for
/// its hash, and copied (hashed again on the way, so the name always matches the bytes written)
/// only when no instance holds that version. A version loaded again after its copy was removed
/// gets the same name, so a library the loader never unloaded (a Rust plugin with thread-local
/// destructors) is found by name instead of being mapped a second time.
fn copy_for_load(library: &Path) -> Result<Arc<PluginCopy>, InitError> {
    let read_failed =
        |e: std::io::Error| InitError(format!("cannot read the native plugin {}: {e}", library.display()));
    // The lock is held only to look up and register copies, never while a file is read or
    // written: streaming a large library under it held every other in-process native
    // deployment's load, scale and copy removal (`PluginCopy::drop` takes it) until it ended.
    let hash = hash_copy(std::fs::File::open(library).map_err(read_failed)?, std::io::sink()).map_err(read_failed)?;
    let (dir, partial) = {
        let mut c = copies();
        if let Some(copy) = c.by_hash.get(&hash).and_then(Weak::upgrade) {
            return Ok(copy);
        }
        if c.dir.is_none() {
            let prefix = crate::sys::tmp::own_prefix(COPIES_PREFIX);
            let dir = tempfile::Builder::new()
                .prefix(&prefix)
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| {
                    InitError(format!("cannot create a private folder for native plugin copies in $TMPDIR: {e}"))
                })?;
            c.dir = Some(dir);
        }
        let dir = c.dir.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default();
        c.next += 1;
        let partial = dir.join(format!(".partial-{}", c.next));
        (dir, partial)
    };
    let copy_failed =
        |e: std::io::Error| InitError(format!("cannot copy the native plugin into {}: {e}", dir.display()));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .and_then(|file| {
            let source = std::fs::File::open(library)?;
            let mut writer = std::io::BufWriter::new(file);
            let hash = hash_copy(source, &mut writer)?;
            writer.flush()?;
            Ok(hash)
        });
    let hash = match written {
        Ok(hash) => hash,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(copy_failed(e));
        }
    };
    // Under the lock again: the rename and the registration happen together, as the removal
    // in `PluginCopy::drop` does, so a copy being dropped never removes the file just named.
    let mut c = copies();
    // The bytes may have changed since the first read (the name is the hash of these), and
    // another load of the same bytes may have registered its copy meanwhile.
    if let Some(copy) = c.by_hash.get(&hash).and_then(Weak::upgrade) {
        let _ = std::fs::remove_file(&partial);
        return Ok(copy);
    }
    let name = library.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "plugin.so".into());
    let path = dir.join(format!("{hash}-{name}"));
    // Only this process writes in the folder: a file already at `path` is a copy of ours whose
    // removal failed, with the same bytes.
    if let Err(e) = std::fs::rename(&partial, &path) {
        let _ = std::fs::remove_file(&partial);
        return Err(copy_failed(e));
    }
    let copy = Arc::new(PluginCopy { path, hash: hash.clone() });
    c.by_hash.insert(hash, Arc::downgrade(&copy));
    Ok(copy)
}

/// Added to a missing-dependency error of an in-process load: the loader resolved the
/// plugin's `$ORIGIN` (RPATH/RUNPATH) in the private copy's folder, not beside the original,
/// so a library shipped next to the plugin is not found there even though it exists.
const COPY_AND_ORIGIN: &str = " (an in-process plugin is loaded from a private copy of the file, so an RPATH of \
    $ORIGIN points at the copy's folder, not the plugin's: a library beside the plugin is not found there; \
    use isolation: process, which loads the plugin where it is, or link the dependency statically, or put \
    its folder in LD_LIBRARY_PATH when the server starts)";

/// Loads the library and creates one plugin instance; the message names the plugin.
fn init_instance(library: &Path, model_dir: &Path, env: &[(String, String)]) -> Result<Instance, InitError> {
    init_from(library, library, model_dir, env)
}

/// As [`init_instance`], loading `load` (a copy of `library`, which messages name).
fn init_from(library: &Path, load: &Path, model_dir: &Path, env: &[(String, String)]) -> Result<Instance, InitError> {
    let lib = Library::open(load).map_err(|e| {
        let e = e.0.replace(&load.display().to_string(), &library.display().to_string());
        InitError(if load != library && e.contains("cannot open shared object file") {
            format!("{e}{COPY_AND_ORIGIN}")
        } else {
            e
        })
    })?;
    lib.init(model_dir, env).map_err(|(rc, message)| {
        let file = library.display();
        InitError(match rc {
            code::PANIC => format!("init of the native plugin {file} failed: {message}"),
            _ if message.is_empty() => format!("init of the native plugin {file} failed (return code {rc})"),
            _ => format!("init of the native plugin {file} failed: {message}"),
        })
    })
}

/// Calls into in-process plugins (`run` or `init`) that have not returned yet.
static CALLS_IN_PROGRESS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many in-process plugin calls (`run` or `init`) have not returned: what a stop cut short
/// after the grace period leaves behind (said in its log line).
pub(crate) fn calls_in_progress() -> usize {
    CALLS_IN_PROGRESS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one call into a plugin while it lasts.
struct InPlugin;

impl InPlugin {
    fn enter() -> Self {
        CALLS_IN_PROGRESS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self
    }
}

impl Drop for InPlugin {
    fn drop(&mut self) {
        CALLS_IN_PROGRESS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs the plugin's `init` on a thread of its own and waits for it at most `deadline`.
///
/// An in-process call cannot be stopped: an init that never returns would hold the load (and
/// the process-wide load slot it took) for good. Past the deadline the load fails with a message
/// saying so; the thread is left blocked in the plugin (it holds its copy of the library, which
/// is removed at exit), and if `init` ever returns, that instance is destroyed at once.
fn init_with_deadline(
    plugin: &NativePlugin,
    copy: &Arc<PluginCopy>,
    env: Vec<(String, String)>,
    deadline: std::time::Duration,
) -> Result<Instance, InitError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let (library, model, held) = (plugin.library.clone(), plugin.model_path.clone(), Arc::clone(copy));
    std::thread::Builder::new()
        .name("switchyard-native-init".into())
        .spawn(move || {
            let made = {
                let _call = InPlugin::enter();
                init_from(&library, &held.path, &model, &env)
            };
            // Nobody waits after the deadline: the instance is then dropped (destroyed) here.
            let _ = tx.send(made);
        })
        .map_err(|e| InitError(format!("cannot start a thread for the native plugin's init: {e}")))?;
    match rx.recv_timeout(deadline) {
        Ok(made) => made,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(InitError(format!(
            "init of the native plugin {} did not return within {} ms (the init deadline, \
             SWITCHYARD_INIT_TIMEOUT_MS, default 600 s); a call in process cannot be stopped, so its thread is \
             left blocked in the plugin (with isolation: process the worker would be stopped)",
            plugin.library.display(),
            deadline.as_millis()
        ))),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            Err(InitError(format!("init of the native plugin {} ended without a result", plugin.library.display())))
        }
    }
}

/// What one run came to, from the return code and what the plugin handed to `respond`.
enum Outcome {
    Answer {
        status: u16,
        content_type: &'static str,
        body: Bytes,
    },
    BadInput(String),
    ModelError(String),
    /// The plugin's state is suspect: the instance is replaced.
    Panicked(String),
}

fn outcome(rc: i32, reply: &mut Reply) -> Outcome {
    let message = |reply: &Reply, default: &str| {
        if reply.called && !reply.body.is_empty() {
            String::from_utf8_lossy(&reply.body).into_owned()
        } else {
            default.to_string()
        }
    };
    if let (code::OK, Some(size)) = (rc, reply.too_large) {
        return Outcome::ModelError(format!(
            "the native plugin answered too much: {}",
            super::answer_over_cap(Some(size))
        ));
    }
    match rc {
        code::OK if reply.called => Outcome::Answer {
            status: if (100..=999).contains(&reply.status) { reply.status } else { 500 },
            content_type: intern_content_type(&reply.content_type),
            body: Bytes::from(std::mem::take(&mut reply.body)),
        },
        code::OK => Outcome::ModelError("the native plugin's run returned OK without calling respond".into()),
        code::BAD_INPUT => Outcome::BadInput(message(reply, "the native plugin refused the input")),
        code::MODEL_ERROR => Outcome::ModelError(message(reply, "the native plugin's run failed")),
        code::PANIC => Outcome::Panicked(message(reply, "the native plugin panicked")),
        other => Outcome::ModelError(format!(
            "the native plugin's run returned the unknown code {other}: {}",
            message(reply, "no message")
        )),
    }
}

/// An in-process instance: one plugin handle.
pub struct NativeHook {
    instance: Instance,
    /// The callback's buffers, reused from run to run.
    reply: Reply,
    /// False after a panic: the pool replaces the instance.
    healthy: bool,
    about: String,
    logs: Arc<LogRing>,
    /// The file the library was loaded from; declared after `instance`, so the handle is
    /// destroyed (and the library unloaded, if this was its last) before the file is removed.
    _copy: Arc<PluginCopy>,
}

impl NativeHook {
    /// Loads the plugin (blocking: its init may load a model).
    pub fn load(plugin: &NativePlugin, ctx: &InitContext) -> Result<Self, InitError> {
        let env: Vec<(String, String)> =
            ctx.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let real = resolve_scoring_script(&plugin.code_dir, &script_name(plugin))?;
        let copy = copy_for_load(&real)?;
        let instance = init_with_deadline(plugin, &copy, env, super::init_timeout())?;
        let n = ctx.next_instance.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let about = format!("{}/instance-{n}: {}", ctx.deployment, describe_plugin(plugin));
        Ok(Self {
            instance,
            reply: Reply::with_limit(super::MAX_ANSWER_BYTES),
            healthy: true,
            about,
            logs: Arc::clone(&ctx.logs),
            _copy: copy,
        })
    }
}

impl ScoringHook for NativeHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        if !self.healthy {
            return Err(HookError::Failed("the instance's plugin panicked; it is being replaced".into()));
        }
        let rc = {
            let _call = InPlugin::enter();
            self.instance.run(request.body, request.content_type.unwrap_or(""), &mut self.reply)
        };
        match outcome(rc, &mut self.reply) {
            Outcome::Answer { status, content_type, body } => {
                Ok(HookResponse { status, content_type, body, headers: Vec::new() })
            }
            Outcome::BadInput(m) => Err(HookError::BadInput(m)),
            Outcome::ModelError(m) => Err(HookError::Failed(m)),
            Outcome::Panicked(m) => {
                self.healthy = false;
                let line = format!("{}: the plugin panicked ({m}); a new instance replaces it", self.about);
                self.logs.push(&line);
                tracing::warn!(target: "switchyard::native", "{line}");
                Err(HookError::Failed(m))
            }
        }
    }

    fn describe(&self) -> String {
        self.about.clone()
    }

    fn is_healthy(&self) -> bool {
        self.healthy
    }
}

/// A process-isolated instance: a `switchyard native-worker` child holding the handle.
pub(crate) struct WorkerHook {
    worker: Worker,
    about: String,
}

impl WorkerHook {
    /// Starts a worker and waits for the plugin's init (blocking).
    pub(crate) fn start(plugin: &NativePlugin, ctx: &InitContext) -> Result<Self, InitError> {
        let real = resolve_scoring_script(&plugin.code_dir, &script_name(plugin))?;
        let exe = std::env::current_exe()
            .map_err(|e| InitError(format!("cannot find the switchyard binary to start a worker: {e}")))?;
        let env = serde_json::to_string(&ctx.environment_variables).unwrap_or_else(|_| "{}".into());
        let mut cmd = Command::new(exe);
        cmd.arg("native-worker")
            .arg("--library")
            .arg(&real)
            .arg("--model-dir")
            .arg(&plugin.model_path)
            .current_dir(&plugin.code_dir)
            .envs(&ctx.environment_variables)
            .env(PLUGIN_ENV, env);
        let n = ctx.next_instance.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut worker = Worker::spawn(cmd, ctx, n, Flavor::Native)
            .map_err(|e| InitError(format!("cannot start a native plugin worker: {e}")))?;
        match worker.read_init() {
            Ok((frame::kind::INIT_OK, _)) => {
                let about = format!("{}: {}", worker.tag(), describe_plugin(plugin));
                Ok(Self { worker, about })
            }
            Ok((frame::kind::INIT_FAILED, payload)) => {
                worker.finish_output();
                Err(InitError(String::from_utf8_lossy(&payload).into_owned()))
            }
            Ok((other, _)) => {
                Err(InitError(format!("the native plugin worker sent frame type {other} instead of its init result")))
            }
            Err(frame::ReadError::TimedOut) => Err(InitError(format!(
                "init of the native plugin {} did not finish within {} ms (the init deadline); the worker was stopped",
                plugin.library.display(),
                super::init_timeout().as_millis()
            ))),
            Err(_) => {
                let status = worker.finish_output();
                Err(InitError(format!(
                    "the native plugin worker exited while loading {} ({status}); its output is in get-logs",
                    plugin.library.display()
                )))
            }
        }
    }
}

impl ScoringHook for WorkerHook {
    fn run(&mut self, request: HookRequest<'_>) -> Result<HookResponse, HookError> {
        self.worker.run(request)
    }

    fn describe(&self) -> String {
        self.about.clone()
    }

    fn is_healthy(&self) -> bool {
        self.worker.is_healthy()
    }
}

/// `switchyard native-worker`: the child side of `isolation: process`. Loads the plugin,
/// reports its init, then answers run frames until the pipe closes. Returns the exit code.
pub(crate) fn worker_main(library: &Path, model_dir: &Path) -> i32 {
    let Some((mut input, mut output)) = crate::sys::worker_frame_pipes() else {
        eprintln!(
            "ERROR: switchyard native-worker runs a native plugin for `switchyard serve` (isolation: process); \
             it needs the frame pipes on fds 3 and 4 and is not meant to be run by hand"
        );
        return 2;
    };
    let env: Vec<(String, String)> = std::env::var(PLUGIN_ENV)
        .ok()
        .and_then(|text| serde_json::from_str::<BTreeMap<String, String>>(&text).ok())
        .map(|m| m.into_iter().collect())
        .unwrap_or_default();
    let mut scratch = Vec::new();
    let mut instance = match init_instance(library, model_dir, &env) {
        Ok(i) => i,
        Err(message) => {
            let _ = frame::write_frame(&mut output, &mut scratch, frame::kind::INIT_FAILED, &[message.0.as_bytes()]);
            return 3;
        }
    };
    let info = serde_json::json!({"pid": std::process::id(), "library": library.display().to_string()}).to_string();
    if frame::write_frame(&mut output, &mut scratch, frame::kind::INIT_OK, &[info.as_bytes()]).is_err() {
        return 0;
    }
    // The answer frame must fit the frame limit, which is the answer cap: an answer over it is
    // reported as such, not as a broken protocol.
    let mut reply = Reply::with_limit(super::MAX_ANSWER_BYTES - 2048);
    loop {
        let payload = match frame::read_frame(&mut input, None) {
            Ok((frame::kind::RUN, payload)) => payload,
            Ok((other, _)) => {
                eprintln!("ERROR: unexpected frame type {other} from the server");
                return 2;
            }
            Err(_) => return 0, // the server closed the pipe: the instance is gone
        };
        let written = match frame::parse_run(&payload) {
            None => frame::write_frame(&mut output, &mut scratch, frame::kind::RAISED, &[b"a malformed run frame"]),
            Some((ct, _headers, body)) => {
                let rc = instance.run(body, ct, &mut reply);
                match outcome(rc, &mut reply) {
                    Outcome::Answer { status, content_type, body } => {
                        frame::write_answer(&mut output, &mut scratch, status, content_type, &body)
                    }
                    Outcome::BadInput(m) => {
                        frame::write_frame(&mut output, &mut scratch, frame::kind::BAD_INPUT, &[m.as_bytes()])
                    }
                    Outcome::ModelError(m) => {
                        frame::write_frame(&mut output, &mut scratch, frame::kind::RAISED, &[m.as_bytes()])
                    }
                    Outcome::Panicked(m) => {
                        let _ = frame::write_frame(&mut output, &mut scratch, frame::kind::PANICKED, &[m.as_bytes()]);
                        return 4;
                    }
                }
            }
        };
        if written.is_err() {
            return 0;
        }
        if scratch.capacity() > 1 << 20 {
            scratch = Vec::new();
        }
    }
}
