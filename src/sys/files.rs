//! Reading a small file the user named (a conda file, a YAML document, a secret, the saved
//! state) without letting the file decide how long the server waits or how much it reads.
//!
//! Why: a path can name a FIFO (opening one for reading waits for a writer, for ever), a
//! device, or a file on a hung network mount. Read on an async thread, such a file stalled the
//! admin workers and the graceful stop (a `conda_file` FIFO), and wedged the secrets watcher
//! and the start past SIGTERM (a key-file FIFO). So: the file is opened without waiting
//! (`O_NONBLOCK`, which also keeps a FIFO from blocking the open), refused unless it is a
//! regular file, refused when larger than the caller's cap before anything is read, and the
//! whole read runs on its own thread, waited for at most a deadline.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a read of a small file may take before it is given up (a hung network mount).
pub(crate) const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Why a file was not read. The messages name the path and say what was expected.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0} does not exist")]
    NotFound(PathBuf),
    #[error("{0} is not a regular file (a FIFO, device, socket or folder): name a plain file")]
    NotRegular(PathBuf),
    #[error("{path} is {size} bytes, more than the {max} bytes allowed here")]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    #[error("{path} could not be read within {} s (a hung network mount?)", .limit.as_secs())]
    TimedOut { path: PathBuf, limit: Duration },
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl ReadError {
    /// Whether the file is simply absent (callers for which absence is normal).
    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound(_))
    }
}

/// Reads `path` whole, if it is a regular file of at most `max` bytes, on a helper thread
/// waited for at most `limit`. A read still stuck then is left to its thread (it holds only
/// that thread and a descriptor) and the caller gets [`ReadError::TimedOut`].
pub(crate) fn read_bounded(path: &Path, max: u64, limit: Duration) -> Result<Vec<u8>, ReadError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new().name("switchyard-read".into()).spawn(move || {
        let _ = tx.send(read_now(&owned, max));
    });
    if let Err(source) = spawned {
        return Err(ReadError::Io { path: path.to_path_buf(), source });
    }
    rx.recv_timeout(limit).unwrap_or_else(|_| Err(ReadError::TimedOut { path: path.to_path_buf(), limit }))
}

/// As [`read_bounded`], for text: not UTF-8 is an `InvalidData` error naming the path.
pub(crate) fn read_text_bounded(path: &Path, max: u64, limit: Duration) -> Result<String, ReadError> {
    let bytes = read_bounded(path, max, limit)?;
    String::from_utf8(bytes).map_err(|_| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
    })
}

/// The read itself, on the calling thread: open without blocking, check what was opened (not
/// the path, which could be swapped in between), then read at most `max` bytes.
fn read_now(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(
            |e| if e.kind() == std::io::ErrorKind::NotFound { ReadError::NotFound(path.to_path_buf()) } else { io(e) },
        )?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular(path.to_path_buf()));
    }
    if meta.len() > max {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: meta.len(), max });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded again: the file may grow between the check and the read.
    file.take(max + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), size: bytes.len() as u64, max });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_and_a_plain_file_is_read() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let err = read_bounded(&fifo, 100, Duration::from_secs(30)).unwrap_err();
        assert!(matches!(err, ReadError::NotRegular(_)), "{err}");
        assert!(err.to_string().contains("not a regular file"), "{err}");

        let file = d.path().join("f");
        std::fs::write(&file, "hello").unwrap();
        assert_eq!(read_bounded(&file, 5, READ_DEADLINE).unwrap(), b"hello");
        let err = read_bounded(&file, 4, READ_DEADLINE).unwrap_err();
        assert!(err.to_string().contains("5 bytes, more than the 4"), "{err}");
        assert!(read_bounded(&d.path().join("none"), 4, READ_DEADLINE).unwrap_err().is_not_found());
        assert!(matches!(read_bounded(d.path(), 4, READ_DEADLINE).unwrap_err(), ReadError::NotRegular(_)));
    }
}
