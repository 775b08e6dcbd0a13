//! Keeping the admin token from the server's scoring scripts and other local processes.
//!
//! A scoring script runs as the server's user, so by default it may read everything that user
//! may read of the server: `/proc/<server>/environ` (the environment block as it was at exec,
//! not what `std::env` shows now), `/proc/<server>/cmdline`, and, through `ptrace` or
//! `/proc/<server>/mem`, its memory. Two things close that:
//! - [`scrub_startup_secret`] overwrites the token where the kernel shows it: the variable's
//!   value in the original environment block (removing it from `environ` alone leaves the
//!   bytes, and `/proc/<pid>/environ` reads the bytes) and an argument equal to the token in
//!   the original argument block (`--admin-token TOKEN` or `--admin-token=TOKEN`).
//! - [`forbid_dumping`] makes the process non-dumpable: a process of the same user (a scoring
//!   script) can then neither `ptrace` it nor open its `/proc/<pid>/{environ,mem,maps,...}`
//!   (they become root's), and the process leaves no core dump. Root with `CAP_SYS_PTRACE`
//!   is not stopped by this; against it the scrub is what holds, for the environment and the
//!   arguments (not for the token in the heap, which root can read).

/// The server's environment variables that hold a secret or say where one is: never passed to
/// a worker (a scoring script would read the token, or open the file the variable names). Every
/// `serve` option read from the environment that names a secret must be listed here (checked by
/// a test in `cli`).
pub(crate) const SECRET_VARIABLES: &[&str] = &["SWITCHYARD_ADMIN_TOKEN", "SWITCHYARD_ADMIN_TOKEN_FILE"];

/// Where the token was overwritten.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Scrubbed {
    /// Arguments overwritten in the original argument block.
    pub arguments: usize,
    /// Variables overwritten in the original environment block.
    pub variables: usize,
}

/// Why the startup blocks were left as they are (more than one thread, no `/proc`, a block
/// not where the kernel said); the server logs it and goes on.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ScrubError(String);

/// Removes `variable` from the environment and overwrites, in the kernel-visible argument and
/// environment blocks, `variable`'s value and every argument whose value is `secret`.
///
/// Works only while the process has one thread (checked: an `Err`, and nothing changed, when
/// it has more): the environment is changed and the startup blocks are written without a
/// lock, which is sound only while nothing else runs. Errors also say why the blocks could not
/// be found (no `/proc`, say).
pub(crate) fn scrub_startup_secret(variable: &str, secret: Option<&str>) -> Result<Scrubbed, ScrubError> {
    // With one thread, no other can appear meanwhile: only this one could start it.
    match thread_count() {
        Some(1) => {}
        Some(n) => {
            return Err(ScrubError(format!(
                "the process already runs {n} threads; the startup blocks are left as they are"
            )))
        }
        None => return Err(ScrubError("cannot count this process's threads (/proc/self/status)".into())),
    }
    let set = std::env::var_os(variable).is_some();
    if set {
        // Sound: no other thread exists to read the environment meanwhile (checked above).
        std::env::remove_var(variable);
    }
    let mut done = Scrubbed::default();
    let secret = secret.filter(|s| !s.is_empty());
    if !set && secret.is_none() {
        return Ok(done);
    }
    let [args, env] = startup_blocks()?;
    let prefix = format!("{variable}=").into_bytes();
    done.variables =
        overwrite(env, "/proc/self/environ", |entry| entry.starts_with(&prefix).then_some(prefix.len()..entry.len()))?;
    if let Some(secret) = secret {
        let secret = secret.as_bytes();
        done.arguments = overwrite(args, "/proc/self/cmdline", |entry| {
            if entry == secret {
                return Some(0..entry.len());
            }
            // `--flag=SECRET` (a long option with its value attached).
            let at = entry.len().checked_sub(secret.len() + 1)?;
            (entry.starts_with(b"--") && entry[at] == b'=' && &entry[at + 1..] == secret).then(|| at + 1..entry.len())
        })?;
    }
    Ok(done)
}

/// Makes the process non-dumpable (`PR_SET_DUMPABLE 0`, Linux): no `ptrace` attach and no
/// reading of `/proc/<pid>/{environ,mem}` by processes of the same user without
/// `CAP_SYS_PTRACE`, and no core dump. Programs it starts get their own dumpable flag back at
/// `exec`, so a scoring script can still be debugged. Elsewhere a no-op.
pub(crate) fn forbid_dumping() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes only this process's dumpable flag; the
        // unused arguments are zero, as the call requires.
        if unsafe {
            libc::prctl(
                libc::PR_SET_DUMPABLE,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The process's thread count (`Threads:` of `/proc/self/status`).
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok())
}

/// The original argument and environment blocks, `[arg_start..arg_end, env_start..env_end]`,
/// from fields 48 to 51 of `/proc/self/stat` (Linux 3.5 and later).
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
fn startup_blocks() -> Result<[std::ops::Range<usize>; 2], ScrubError> {
    let stat = std::fs::read_to_string("/proc/self/stat")
        .map_err(|e| ScrubError(format!("cannot read /proc/self/stat: {e}")))?;
    // Field 2 (the command name) may hold spaces and parentheses: count from its closing one.
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| ScrubError("/proc/self/stat has no command name".into()))?;
    let fields: Vec<&str> = after.split_ascii_whitespace().collect();
    // `after` starts at field 3.
    let field = |n: usize| -> Result<usize, ScrubError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| ScrubError(format!("/proc/self/stat has no field {n}")))
    };
    let (arg_start, arg_end, env_start, env_end) = (field(48)?, field(49)?, field(50)?, field(51)?);
    for (start, end) in [(arg_start, arg_end), (env_start, env_end)] {
        // The blocks are bounded by the kernel's argument limit (a quarter of the stack limit).
        if start == 0 || end < start || end - start > 64 << 20 {
            return Err(ScrubError(format!("/proc/self/stat gives an unusable block {start:#x}..{end:#x}")));
        }
    }
    Ok([arg_start..arg_end, env_start..env_end])
}

/// Zeroes, in the block at `range` (NUL-separated entries), the part `pick` returns of each
/// entry. The block is first compared with `shown` (the `/proc/self` file the kernel reads it
/// through): a mismatch means the block is not where `/proc/self/stat` said, and nothing is
/// written. Returns how many entries were changed.
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
fn overwrite(
    range: std::ops::Range<usize>,
    shown: &str,
    pick: impl Fn(&[u8]) -> Option<std::ops::Range<usize>>,
) -> Result<usize, ScrubError> {
    let expected = std::fs::read(shown).map_err(|e| ScrubError(format!("cannot read {shown}: {e}")))?;
    let len = range.end - range.start;
    // SAFETY: `range` is this process's original argument or environment block, as the kernel
    // reports it: memory of the initial stack, mapped readable and writable for the process's
    // whole life (checked against what the kernel shows through `shown` before any write).
    // Nothing else reads or writes it meanwhile: the process has one thread (checked by the
    // caller, `scrub_startup_secret`), and no Rust reference to it exists (std and libc hold raw pointers to its strings, and
    // read them only when asked, which nothing does during this call).
    let block = unsafe { std::slice::from_raw_parts_mut(range.start as *mut u8, len) };
    if block != expected.as_slice() {
        return Err(ScrubError(format!("the block at {:#x} does not match {shown}; left as it is", range.start)));
    }
    let mut changed = 0;
    let mut offset = 0;
    for entry_len in block.split(|b| *b == 0).map(<[u8]>::len).collect::<Vec<_>>() {
        let entry = &block[offset..offset + entry_len];
        if let Some(part) = pick(entry) {
            block[offset + part.start..offset + part.end].fill(0);
            changed += 1;
        }
        offset += entry_len + 1;
        if offset >= len {
            break;
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test harness runs tests on threads of their own: the scrub must refuse, and leave
    /// the environment as it was (writing it now could race with another thread's read).
    #[test]
    fn with_more_than_one_thread_nothing_is_changed() {
        let e = scrub_startup_secret("PATH", None).unwrap_err();
        assert!(e.0.contains("threads"), "{e}");
        assert!(std::env::var_os("PATH").is_some());
    }
}
