//! Switchyard native scoring plugins in safe Rust.
//!
//! A plugin is a shared library (`crate-type = ["cdylib"]`) that Switchyard loads when a
//! deployment's `code_configuration.scoring_script` names a `.so`. It speaks the C ABI written
//! down in `runtime/include/switchyard_plugin.h`; this crate holds the same definitions for Rust
//! ([`PluginTable`] and the function types) and a macro, [`export_plugin!`], that exports a
//! plugin from a type implementing [`Plugin`]:
//!
//! ```ignore
//! use switchyard_plugin::{export_plugin, Env, Plugin, Request, Response, RunError};
//!
//! struct Echo;
//! impl Plugin for Echo {
//!     fn init(_model_dir: &std::path::Path, _env: &Env) -> Result<Self, String> { Ok(Echo) }
//!     fn run(&mut self, request: Request<'_>) -> Result<Response, RunError> {
//!         Ok(Response::new(200, "application/octet-stream", request.body.to_vec()))
//!     }
//! }
//! export_plugin!(Echo);
//! ```
//!
//! Why the glue lives here and not in each plugin: every `extern "C"` function must catch
//! panics (one that unwinds out of it aborts the process, server and all), must not let memory
//! cross allocators, and must turn raw pointers into slices correctly. Written once here, a
//! plugin author writes no `unsafe` and cannot get it wrong. A panic becomes return code
//! [`code::PANIC`]: the request gets a 424 and Switchyard replaces the instance (its state may
//! be half-updated). A plugin built with `panic = "abort"` cannot be contained this way: keep
//! the default `unwind` (or use `isolation: process`).
//!
//! The one `unsafe` of this crate is in [`glue`], the functions the macro points the table at.

// The compiler holds the crate to that: `unsafe` anywhere else is an error.
#![deny(unsafe_code)]

use std::borrow::Cow;
use std::ffi::c_void;
use std::path::Path;

/// The ABI's major version: a host refuses a plugin whose major version differs.
pub const ABI_MAJOR: u16 = 1;
/// The ABI's minor version: additions that keep every older field where it was.
pub const ABI_MINOR: u16 = 0;
/// `(major << 16) | minor`, as [`PluginTable::abi_version`] carries it.
pub const ABI_VERSION: u32 = ((ABI_MAJOR as u32) << 16) | ABI_MINOR as u32;
/// The one symbol a plugin exports (NUL-terminated, as `dlsym` takes it).
pub const ENTRY_SYMBOL: &[u8] = b"switchyard_plugin\0";

/// Return codes of `init` and `run`.
pub mod code {
    /// Done: `run` handed its answer to the respond callback.
    pub const OK: i32 = 0;
    /// The request is not what the plugin takes (HTTP 400); the message was handed to the
    /// callback as the body.
    pub const BAD_INPUT: i32 = 1;
    /// The model failed (HTTP 424); the message was handed to the callback as the body. The
    /// instance keeps serving.
    pub const MODEL_ERROR: i32 = 2;
    /// The plugin panicked (HTTP 424); its state is suspect, so the host replaces the instance.
    pub const PANIC: i32 = 3;
}

/// One environment variable of the deployment (`environment_variables`), as UTF-8 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct EnvPair {
    pub key: *const u8,
    pub key_len: usize,
    pub value: *const u8,
    pub value_len: usize,
}

/// Hands an init error message (UTF-8 bytes) to the host; the host copies it.
pub type ErrorFn = unsafe extern "C" fn(ctx: *mut c_void, message: *const u8, len: usize);
/// Hands an answer to the host: status, content type and body; the host copies them before
/// returning, so the plugin may free or reuse its buffers right after.
pub type RespondFn = unsafe extern "C" fn(
    ctx: *mut c_void,
    status: u16,
    content_type: *const u8,
    content_type_len: usize,
    body: *const u8,
    body_len: usize,
);
/// Creates one instance.
pub type InitFn = unsafe extern "C" fn(
    model_dir: *const u8,
    model_dir_len: usize,
    env: *const EnvPair,
    env_len: usize,
    handle: *mut *mut c_void,
    error: ErrorFn,
    error_ctx: *mut c_void,
) -> i32;
/// Scores one request on one instance.
pub type RunFn = unsafe extern "C" fn(
    handle: *mut c_void,
    body: *const u8,
    body_len: usize,
    content_type: *const u8,
    content_type_len: usize,
    respond: RespondFn,
    respond_ctx: *mut c_void,
) -> i32;
/// Frees one instance.
pub type DestroyFn = unsafe extern "C" fn(handle: *mut c_void);
/// The exported entry point: returns the plugin's static table.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginTable;

/// The first two fields of every version of the table: a host reads these before anything
/// else, so a table shorter than its own is never read past its end.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TableHead {
    pub abi_version: u32,
    pub struct_size: u32,
}

/// The table a plugin's entry point returns (`switchyard_plugin_t` in the header).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PluginTable {
    /// [`ABI_VERSION`] as the plugin was built.
    pub abi_version: u32,
    /// `size_of::<PluginTable>()` as the plugin was built.
    pub struct_size: u32,
    pub init: Option<InitFn>,
    pub run: Option<RunFn>,
    pub destroy: Option<DestroyFn>,
}

/// The deployment's environment variables, as `init` receives them.
pub type Env = [(String, String)];

/// One request as [`Plugin::run`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The body, as the client sent it (gzip already decoded).
    pub body: &'a [u8],
    /// The `Content-Type` header, empty when there was none.
    pub content_type: &'a str,
}

/// An answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: Cow<'static, str>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: impl Into<Cow<'static, str>>, body: Vec<u8>) -> Self {
        Self { status, content_type: content_type.into(), body }
    }

    /// A 200 `application/json` answer.
    pub fn json(body: Vec<u8>) -> Self {
        Self::new(200, "application/json", body)
    }
}

/// Why a run has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunError {
    /// The caller's input is wrong (HTTP 400); say what is expected.
    BadInput(String),
    /// The model failed (HTTP 424, the message in `ms-azureml-model-error-reason`).
    Model(String),
}

/// A scoring plugin: one value per instance, created by `init`, then `run` for one request at
/// a time (never two at once on one value; different instances may run on different threads
/// at the same time, hence `Send`).
pub trait Plugin: Sized + Send + 'static {
    /// Loads the model from `model_dir` (the deployment's `model.path`). An `Err` fails the
    /// deployment with this message.
    fn init(model_dir: &Path, env: &Env) -> Result<Self, String>;
    /// Scores one request.
    fn run(&mut self, request: Request<'_>) -> Result<Response, RunError>;
}

/// Exports `$ty` (a [`Plugin`]) as this library's Switchyard plugin: defines the
/// `switchyard_plugin` symbol returning a static [`PluginTable`] whose functions are
/// [`glue`]'s, instantiated for `$ty`. Use it once per library.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        /// Switchyard's entry point (see runtime/include/switchyard_plugin.h).
        #[unsafe(no_mangle)]
        pub extern "C" fn switchyard_plugin() -> *const $crate::PluginTable {
            static TABLE: $crate::PluginTable = $crate::PluginTable {
                abi_version: $crate::ABI_VERSION,
                struct_size: ::core::mem::size_of::<$crate::PluginTable>() as u32,
                init: Some($crate::glue::init::<$ty>),
                run: Some($crate::glue::run::<$ty>),
                destroy: Some($crate::glue::destroy::<$ty>),
            };
            &TABLE
        }
    };
}

/// The `extern "C"` functions behind [`export_plugin!`]. Each catches panics (nothing unwinds
/// into the host) and copies nothing it does not have to: the body is borrowed for the run,
/// the answer is lent to the host's callback, which copies it.
pub mod glue {
    #![allow(unsafe_code)]

    use std::ffi::c_void;
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::{code, EnvPair, ErrorFn, Plugin, Request, RespondFn, RunError};

    /// A slice from the host's pointer and length; empty for a null pointer.
    ///
    /// SAFETY (caller): a non-null `ptr` points at `len` readable bytes that outlive `'a`.
    unsafe fn bytes<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
        if ptr.is_null() || len == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract above, which the header states for every pointer
            // the host passes.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }

    fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "a panic with a non-string payload".to_string()
        }
    }

    /// `init` for `P`.
    ///
    /// # Safety
    /// Called by the host as the header says: `model_dir` and every `env` pair point at valid
    /// bytes for the call, `handle` at a writable pointer.
    pub unsafe extern "C" fn init<P: Plugin>(
        model_dir: *const u8,
        model_dir_len: usize,
        env: *const EnvPair,
        env_len: usize,
        handle: *mut *mut c_void,
        error: ErrorFn,
        error_ctx: *mut c_void,
    ) -> i32 {
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the host's pointers, valid for the call (header contract).
            let dir = String::from_utf8_lossy(unsafe { bytes(model_dir, model_dir_len) }).into_owned();
            let pairs: &[EnvPair] = if env.is_null() || env_len == 0 {
                &[]
            } else {
                // SAFETY: a non-null array of `env_len` pairs, valid for the call (header contract).
                unsafe { std::slice::from_raw_parts(env, env_len) }
            };
            let env: Vec<(String, String)> = pairs
                .iter()
                .map(|p| {
                    // SAFETY: as above.
                    let (k, v) = unsafe { (bytes(p.key, p.key_len), bytes(p.value, p.value_len)) };
                    (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())
                })
                .collect();
            P::init(std::path::Path::new(&dir), &env)
        }));
        let (rc, message) = match result {
            Ok(Ok(plugin)) => {
                // SAFETY: `handle` is writable (header contract); the box is freed by `destroy`.
                unsafe { *handle = Box::into_raw(Box::new(plugin)).cast() };
                return code::OK;
            }
            Ok(Err(message)) => (code::MODEL_ERROR, message),
            Err(payload) => (code::PANIC, format!("init panicked: {}", panic_message(&*payload))),
        };
        // SAFETY: the host's callback, given the bytes of a live String.
        unsafe { error(error_ctx, message.as_ptr(), message.len()) };
        rc
    }

    /// `run` for `P`.
    ///
    /// # Safety
    /// `handle` came from this library's `init::<P>` and is used by one thread at a time;
    /// `body` and `content_type` point at valid bytes for the call.
    pub unsafe extern "C" fn run<P: Plugin>(
        handle: *mut c_void,
        body: *const u8,
        body_len: usize,
        content_type: *const u8,
        content_type_len: usize,
        respond: RespondFn,
        respond_ctx: *mut c_void,
    ) -> i32 {
        if handle.is_null() {
            return code::MODEL_ERROR;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: `handle` is a `Box<P>` from `init::<P>`, used by one thread at a time.
            let plugin = unsafe { &mut *handle.cast::<P>() };
            // SAFETY: the host's pointers, valid for the call.
            let (body, ct) = unsafe { (bytes(body, body_len), bytes(content_type, content_type_len)) };
            plugin.run(Request { body, content_type: std::str::from_utf8(ct).unwrap_or("") })
        }));
        let (rc, status, ct, out): (i32, u16, &str, Vec<u8>) = match result {
            Ok(Ok(r)) => {
                // SAFETY: the host's callback, given live buffers; it copies them.
                unsafe {
                    respond(
                        respond_ctx,
                        r.status,
                        r.content_type.as_ptr(),
                        r.content_type.len(),
                        r.body.as_ptr(),
                        r.body.len(),
                    );
                };
                return code::OK;
            }
            Ok(Err(RunError::BadInput(m))) => (code::BAD_INPUT, 400, "text/plain", m.into_bytes()),
            Ok(Err(RunError::Model(m))) => (code::MODEL_ERROR, 424, "text/plain", m.into_bytes()),
            Err(payload) => {
                (code::PANIC, 424, "text/plain", format!("run panicked: {}", panic_message(&*payload)).into_bytes())
            }
        };
        // SAFETY: as above.
        unsafe { respond(respond_ctx, status, ct.as_ptr(), ct.len(), out.as_ptr(), out.len()) };
        rc
    }

    /// `destroy` for `P`.
    ///
    /// # Safety
    /// `handle` came from this library's `init::<P>` and is not used again.
    pub unsafe extern "C" fn destroy<P: Plugin>(handle: *mut c_void) {
        if handle.is_null() {
            return;
        }
        // A panicking Drop must not unwind into the host either; the memory is then leaked.
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the box `init::<P>` made, freed exactly once (header contract).
            drop(unsafe { Box::from_raw(handle.cast::<P>()) });
        }));
    }
}
