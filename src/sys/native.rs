//! Native scoring plugins: loading a shared library, checking its table, and calling through
//! it (the C ABI of `runtime/include/switchyard_plugin.h`, whose types come from the
//! `switchyard-plugin` crate). Every `unsafe` of native plugins is here; `hooks::native` sees a
//! safe API: [`Library::open`] → [`Library::init`] → [`Instance::run`].
//!
//! Soundness rests on the plugin keeping the header's contract (a plugin is code the operator
//! chose to run in this process; nothing can defend against one that breaks it, which is why
//! `isolation: process` exists). What this side guarantees: the table is read only up to its
//! declared size; every pointer handed over is valid for the call; the library outlives every
//! handle (each [`Instance`] holds an `Arc<Library>`); a handle is used by one thread at a time
//! (`run` takes `&mut self`); the callbacks never unwind (they only copy bytes).

use std::ffi::c_void;
use std::path::Path;
use std::sync::Arc;

/// Why a native plugin could not be loaded (the file, its symbol, its table's version or
/// layout); the message names the plugin and what was expected.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct PluginLoadError(pub String);

use switchyard_plugin::{code, EntryFn, EnvPair, PluginTable, TableHead, ABI_MAJOR, ABI_VERSION, ENTRY_SYMBOL};

/// A loaded plugin library and its checked table.
pub(crate) struct Library {
    /// Kept loaded for as long as this value lives, i.e. while any instance holds the `Arc`.
    _lib: libloading::Library,
    init: switchyard_plugin::InitFn,
    run: switchyard_plugin::RunFn,
    destroy: switchyard_plugin::DestroyFn,
}

/// A libloading error with its cause: libloading 0.9 displays only "dlopen failed", and the
/// loader's own reason (`libmissingdep.so: cannot open shared object file: No such file or
/// directory`, a wrong ELF class, a missing symbol) is the error's `source`, which is what the
/// user needs to fix the plugin.
fn with_reason(e: &libloading::Error) -> String {
    use std::error::Error as _;
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let reason = c.to_string();
        if !reason.is_empty() && !text.contains(&reason) {
            text.push_str(": ");
            text.push_str(&reason);
        }
        cause = c.source();
    }
    text
}

/// `major.minor` of an `abi_version`.
fn version_text(v: u32) -> String {
    format!("{}.{}", v >> 16, v & 0xffff)
}

impl Library {
    /// Loads `path` and checks its table: the entry symbol, the major version, the size.
    pub(crate) fn open(path: &Path) -> Result<Arc<Self>, PluginLoadError> {
        // SAFETY: loading runs the library's initialisers; the library is the plugin the
        // deployment names (code the operator chose to run), loaded by absolute path.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| {
            PluginLoadError(format!("cannot load the native plugin {}: {}", path.display(), with_reason(&e)))
        })?;
        // SAFETY: the symbol's type is the ABI's entry point (`switchyard_entry_fn`).
        let entry: EntryFn = match unsafe { lib.get::<EntryFn>(ENTRY_SYMBOL) } {
            Ok(symbol) => *symbol,
            Err(e) => {
                return Err(PluginLoadError(format!(
                    "{} is not a Switchyard plugin: it does not export `switchyard_plugin` \
                     (runtime/include/switchyard_plugin.h): {}",
                    path.display(),
                    with_reason(&e)
                )))
            }
        };
        // SAFETY: calling the plugin's entry point, which takes nothing and returns a pointer
        // to its static table.
        let table = unsafe { entry() };
        if table.is_null() {
            return Err(PluginLoadError(format!(
                "the native plugin {} returned no table from switchyard_plugin()",
                path.display()
            )));
        }
        // SAFETY: every version of the table starts with these two u32s; nothing further is
        // read until `struct_size` says it is there.
        let head = unsafe { *table.cast::<TableHead>() };
        if head.abi_version >> 16 != u32::from(ABI_MAJOR) {
            return Err(PluginLoadError(format!(
                "the native plugin {} was built for plugin ABI {}, and this Switchyard speaks ABI {}: \
                 rebuild it against runtime/include/switchyard_plugin.h (or the switchyard-plugin crate) \
                 of this version",
                path.display(),
                version_text(head.abi_version),
                version_text(ABI_VERSION)
            )));
        }
        let needed = std::mem::size_of::<PluginTable>();
        if (head.struct_size as usize) < needed {
            return Err(PluginLoadError(format!(
                "the native plugin {}'s table is {} bytes, and ABI {} (the plugin says {}) needs {needed} \
                 (abi_version, struct_size, init, run, destroy)",
                path.display(),
                head.struct_size,
                version_text(ABI_VERSION),
                version_text(head.abi_version),
            )));
        }
        // SAFETY: the plugin declares at least `needed` bytes: the whole table of this version.
        let t = unsafe { *table };
        let (Some(init), Some(run), Some(destroy)) = (t.init, t.run, t.destroy) else {
            return Err(PluginLoadError(format!(
                "the native plugin {}'s table has a null init, run or destroy",
                path.display()
            )));
        };
        // Any 1.x minor whose table covers ours is accepted: minor versions only append.
        Ok(Arc::new(Self { _lib: lib, init, run, destroy }))
    }

    /// Creates one instance (the plugin's `init`). `Err` carries the return code and message.
    pub(crate) fn init(
        self: &Arc<Self>,
        model_dir: &Path,
        env: &[(String, String)],
    ) -> Result<Instance, (i32, String)> {
        let dir = model_dir.as_os_str().as_encoded_bytes();
        let pairs: Vec<EnvPair> = env
            .iter()
            .map(|(k, v)| EnvPair { key: k.as_ptr(), key_len: k.len(), value: v.as_ptr(), value_len: v.len() })
            .collect();
        let mut handle: *mut c_void = std::ptr::null_mut();
        let mut message = Vec::new();
        // SAFETY: every pointer is valid for the call (locals and `env`, which outlive it);
        // `error_sink` copies into `message`, which `error_ctx` points at.
        let rc = unsafe {
            (self.init)(
                dir.as_ptr(),
                dir.len(),
                pairs.as_ptr(),
                pairs.len(),
                &mut handle,
                error_sink,
                (&mut message as *mut Vec<u8>).cast(),
            )
        };
        if rc != code::OK {
            return Err((rc, String::from_utf8_lossy(&message).into_owned()));
        }
        if handle.is_null() {
            return Err((code::MODEL_ERROR, "init returned OK without a handle".into()));
        }
        Ok(Instance { lib: Arc::clone(self), handle })
    }
}

/// What one `run` handed to the respond callback.
#[derive(Debug)]
pub(crate) struct Reply {
    /// Whether the plugin called `respond` (a second call replaces the first).
    pub called: bool,
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
    /// The largest body copied: a longer one is not copied at all (the copy is what would
    /// cost the memory) and its length is kept in `too_large` instead.
    pub body_limit: usize,
    /// The length of a body over `body_limit` (`body` is then empty).
    pub too_large: Option<usize>,
}

impl Default for Reply {
    fn default() -> Self {
        Self::with_limit(usize::MAX)
    }
}

impl Reply {
    /// A reply that copies bodies of at most `body_limit` bytes.
    pub(crate) fn with_limit(body_limit: usize) -> Self {
        Self { called: false, status: 0, content_type: String::new(), body: Vec::new(), body_limit, too_large: None }
    }
}

/// One plugin instance (a handle from `init`), destroyed on drop.
pub(crate) struct Instance {
    lib: Arc<Library>,
    handle: *mut c_void,
}

// SAFETY: the header allows a handle to be used from any thread, one thread at a time; an
// `Instance` is owned by one pool instance and `run` takes `&mut self`, so it is never used by
// two threads at once. It is not `Sync`.
unsafe impl Send for Instance {}

impl Instance {
    /// Scores one request; returns the plugin's return code. `reply` is cleared first, then
    /// filled by the callback.
    pub(crate) fn run(&mut self, body: &[u8], content_type: &str, reply: &mut Reply) -> i32 {
        reply.called = false;
        reply.status = 0;
        reply.content_type.clear();
        reply.body = Vec::new();
        reply.too_large = None;
        // SAFETY: `handle` came from this library's `init` and is used by this thread only for
        // the call (`&mut self`); `body` and `content_type` outlive the call; `respond_sink`
        // writes only into `reply`, which `respond_ctx` points at for the call.
        unsafe {
            (self.lib.run)(
                self.handle,
                body.as_ptr(),
                body.len(),
                content_type.as_ptr(),
                content_type.len(),
                respond_sink,
                (reply as *mut Reply).cast(),
            )
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // SAFETY: the handle came from `init`, is destroyed exactly once, and the library is
        // still loaded (`self.lib` is dropped after this).
        unsafe { (self.lib.destroy)(self.handle) };
    }
}

/// A slice of the plugin's bytes, empty for a null pointer.
///
/// SAFETY (caller): a non-null `ptr` points at `len` readable bytes for the call.
unsafe fn plugin_bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's contract (the header's, for the plugin's buffers).
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// The init error sink: copies the message into the `Vec<u8>` at `ctx`. Never unwinds.
unsafe extern "C" fn error_sink(ctx: *mut c_void, message: *const u8, len: usize) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `&mut Vec<u8>` `Library::init` passed for this call only; the
    // message is the plugin's buffer, valid for the call. Capped so a broken length cannot
    // make us copy a huge region.
    unsafe {
        let out = &mut *ctx.cast::<Vec<u8>>();
        out.clear();
        out.extend_from_slice(plugin_bytes(message, len.min(64 * 1024)));
    }
}

/// The respond callback: copies status, content type and body into the `Reply` at `ctx`.
/// Never unwinds.
unsafe extern "C" fn respond_sink(
    ctx: *mut c_void,
    status: u16,
    content_type: *const u8,
    content_type_len: usize,
    body: *const u8,
    body_len: usize,
) {
    if ctx.is_null() {
        return;
    }
    // SAFETY: `ctx` is the `&mut Reply` `Instance::run` passed for this call only; the
    // plugin's buffers are valid for the call.
    unsafe {
        let reply = &mut *ctx.cast::<Reply>();
        reply.called = true;
        reply.status = status;
        let ct = plugin_bytes(content_type.cast(), content_type_len.min(1024));
        reply.content_type.clear();
        reply.content_type.push_str(&String::from_utf8_lossy(ct));
        if body_len > reply.body_limit {
            reply.body = Vec::new();
            reply.too_large = Some(body_len);
        } else {
            reply.too_large = None;
            reply.body = plugin_bytes(body, body_len).to_vec();
        }
    }
}
