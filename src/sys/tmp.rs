//! Private folders in `$TMPDIR` that outlive a server killed without its cleanup (`kill -9`,
//! a crash, the watchdog's exit): each is named with its owner's `PID-STARTTIME`, and the next
//! server removes those whose owner no longer runs. Used for native plugin copies and for the
//! asset store a server without `--state-dir` keeps.

use std::os::unix::fs::MetadataExt;

/// `PID-STARTTIME` of a running process (its start time in clock ticks since boot, from
/// `/proc/PID/stat`): with the pid alone, a dead server's pid reused by another process would
/// look alive. `None` when the process is not running.
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
pub(crate) fn owner_tag(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces and parentheses): the start time
    // is field 22 of the line, the 20th after the name.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start = after_name.split_whitespace().nth(19)?;
    Some(format!("{pid}-{start}"))
}

/// The prefix of a private folder of this process: `PREFIX` then `PID-STARTTIME-`.
pub(crate) fn own_prefix(prefix: &str) -> String {
    format!("{prefix}{}-", owner_tag(std::process::id()).unwrap_or_default())
}

/// Removes the folders named `PREFIX PID-STARTTIME-…` in `$TMPDIR` whose owner is not running.
/// A folder is removed only if it is ours in every way: a real folder (not a link), owned by
/// this user, mode 0700, named as [`own_prefix`] names them. `what` names them in the log.
pub(crate) fn remove_dead_owners(prefix: &str, what: &str) {
    let tmp = std::env::temp_dir();
    let Ok(me) = std::fs::metadata("/proc/self").map(|m| m.uid()) else { return };
    let Ok(entries) = std::fs::read_dir(&tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(prefix)) else { continue };
        let mut parts = rest.splitn(3, '-');
        let (Some(pid), Some(start), Some(_random)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let (Ok(pid), true) = (pid.parse::<u32>(), !start.is_empty() && start.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o777 != 0o700 {
            continue;
        }
        if owner_tag(pid).is_some_and(|tag| tag == format!("{pid}-{start}")) {
            continue; // its server is running
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => {
                tracing::info!(folder = %entry.path().display(), "removed the {what} of a server that is no longer running");
            }
            Err(e) => {
                tracing::warn!(folder = %entry.path().display(), error = %e, "cannot remove the {what} of a server that is no longer running");
            }
        }
    }
}
