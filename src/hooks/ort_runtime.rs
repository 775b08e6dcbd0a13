//! Finding and loading the ONNX Runtime shared library at run time.
//!
//! The build never links ONNX Runtime (`ort`'s `load-dynamic`), so the binary must find
//! `libonnxruntime.so` itself: a user should never have to export anything. The library comes
//! from the pinned PyPI wheel that `scripts/setup.sh` unpacks into the project's `.ort/`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The environment variable that overrides the search (`ORT_DYLIB_PATH`, ort's own, also works).
pub(crate) const ENV_OVERRIDE: &str = "SWITCHYARD_ORT_DYLIB";

/// The library file name inside each searched folder.
const LIB_NAME: &str = "libonnxruntime.so";

/// The process-wide ONNX Runtime environment, or why it could not be created. `ort` keeps only
/// a weak reference to the environment, so it is held here for the life of the process.
static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, RuntimeError>> = OnceLock::new();

/// Why ONNX Runtime is not available. Cloned into every ONNX deployment that fails for it, so
/// each `show` says what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (looked in: {looked}). Run `scripts/setup.sh` in the Switchyard \
         checkout to fetch it, or set {ENV_OVERRIDE}=/path/to/libonnxruntime.so (version >= 1.31)"
    )]
    NotFound { looked: String },
    #[error(
        "cannot load ONNX Runtime from {}: {reason}. Run `scripts/setup.sh` to fetch the pinned version, \
         or point {ENV_OVERRIDE} at a libonnxruntime.so >= 1.31",
        path.display()
    )]
    Load { path: PathBuf, reason: String },
}

/// Loads ONNX Runtime once and returns its environment; later calls return the first outcome.
pub(crate) fn environment() -> Result<&'static ort::environment::Environment, RuntimeError> {
    ENVIRONMENT.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<ort::environment::Environment, RuntimeError> {
    let candidates = candidates();
    let Some(path) = candidates.iter().find(|p| p.is_file()) else {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        return Err(RuntimeError::NotFound { looked: looked.join(", ") });
    };
    // `ort` panics in a few load paths (e.g. a library of the wrong architecture); a panic here
    // must become a Failed deployment, never a dead process.
    let path_for_load = path.clone();
    let built = std::panic::catch_unwind(move || {
        ort::init_from(&path_for_load)
            .map_err(|e| e.to_string())?
            .with_name("switchyard")
            .build()
            .map_err(|e| e.to_string())
    })
    .map_err(|_| "ONNX Runtime panicked while loading".to_string())
    .and_then(|r| r);
    built.map_err(|reason| RuntimeError::Load { path: path.clone(), reason })
}

/// The search order: explicit override, beside the binary, the project's `.ort/` above the
/// binary (target/release/switchyard → .ort/), the current folder's `.ort/`, and the `.ort/` of
/// the checkout this binary was built from.
fn candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for var in [ENV_OVERRIDE, "ORT_DYLIB_PATH"] {
        if let Some(p) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            out.push(PathBuf::from(p));
        }
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            out.push(dir.join(LIB_NAME));
            for ancestor in dir.ancestors() {
                out.push(ancestor.join(".ort").join(LIB_NAME));
            }
        }
    }
    if let Ok(cwd) = std::env::current_dir() {
        out.push(cwd.join(".ort").join(LIB_NAME));
    }
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort").join(LIB_NAME));
    let mut seen = std::collections::HashSet::new();
    out.retain(|p| seen.insert(p.clone()));
    out
}
