//! Running hook workers as another user (`serve --worker-user USER[:GROUP]`).
//!
//! Why: a scoring script run as the server's user may read every file that user may read: the
//! admin token file, `--secrets-dir`, the saved state (the endpoint's keys). Hiding the token's
//! *path* does not help (`/proc/<server>/cmdline` is world-readable, and a Kubernetes Secret sits
//! at a known place). Only another user makes those files unreadable to the script. So a server
//! started as root (or with the capabilities below) starts its workers as the user given here,
//! with that user's group and no supplementary groups, while it keeps root's rights itself.
//!
//! What the server needs for it (checked at start, [`resolve`]): `CAP_SETUID` and `CAP_SETGID`
//! (to start the worker as the user), `CAP_CHOWN` (to hand the instance's folder to it) and
//! `CAP_KILL` (to kill a worker of another user: delete, deadline, shutdown). Root has them,
//! unless a container dropped them.
//!
//! The switch happens in the child between fork and exec, as the last step ([`run_as`]): the
//! steps before it (`oom_score_adj`, `RLIMIT_DATA`, the frame pipes) still run with the server's
//! rights, and the program is then executed as the worker user (its `/proc/<pid>` files become
//! that user's again at `exec`, so the server still reads and kills it as before).

use std::path::Path;
use std::sync::OnceLock;

/// The user (and group) workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerUser {
    /// As given (`nobody`, `10002:10002`), for messages.
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Display for WorkerUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (uid {}, gid {})", self.name, self.uid, self.gid)
    }
}

/// Capabilities (bit numbers, `linux/capability.h`) the server needs to run workers as another
/// user: CHOWN, KILL, SETGID, SETUID.
const NEEDED_CAPS: [(u32, &str); 4] = [(0, "CHOWN"), (5, "KILL"), (6, "SETGID"), (7, "SETUID")];

/// Why `--worker-user` cannot be used as given; the message says what is expected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct WorkerUserError(String);

/// Resolves `USER[:GROUP]` (names or numbers) and checks the server may start workers as that
/// user. `Ok(None)`: the user and group are the server's own, nothing to switch. The group
/// defaults to the user's primary group; a numeric user with no passwd entry (common in
/// container images) gets the same number as its group.
pub(crate) fn resolve(spec: &str) -> Result<Option<WorkerUser>, WorkerUserError> {
    let spec = spec.trim();
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() || group.is_some_and(str::is_empty) {
        return Err(WorkerUserError(format!(
            "--worker-user expects USER or USER:GROUP (names or numeric ids), got {spec:?}"
        )));
    }
    let entry = match user.parse::<u32>() {
        Ok(uid) => Some(passwd_by_uid(uid).unwrap_or((uid, uid))),
        Err(_) => passwd_by_name(user),
    };
    let Some((uid, primary_gid)) = entry else {
        return Err(WorkerUserError(format!(
            "--worker-user {spec}: no user named {user:?} on this system (give a numeric uid)"
        )));
    };
    let gid = match group {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_by_name(g).ok_or_else(|| {
                WorkerUserError(format!(
                    "--worker-user {spec}: no group named {g:?} on this system (give a numeric gid)"
                ))
            })?,
        },
    };
    let chosen = WorkerUser { name: spec.to_string(), uid, gid };
    // SAFETY: geteuid(2) and getegid(2) have no preconditions and cannot fail.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == euid && gid == egid {
        return Ok(None);
    }
    let missing = missing_capabilities();
    if !missing.is_empty() {
        return Err(WorkerUserError(format!(
            "--worker-user {chosen}: the server runs as uid {euid} without {}, so it cannot start workers as \
             another user. Start the server as root (in Kubernetes: runAsUser 0 with capabilities CHOWN, KILL, \
             SETGID and SETUID), or leave --worker-user out: the scripts then run as the server's user and can \
             read what it reads (docs/CONTRACT.md §9, \"What a scoring script can and cannot reach\")",
            missing.iter().map(|c| format!("CAP_{c}")).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(Some(chosen))
}

/// Whether the process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The capabilities of [`NEEDED_CAPS`] this process lacks (`CapEff` of `/proc/self/status`
/// on Linux; elsewhere, all of them unless the effective uid is root).
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
fn missing_capabilities() -> Vec<&'static str> {
    let effective = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
        s.lines().find_map(|l| l.strip_prefix("CapEff:")).and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    });
    let effective = effective.unwrap_or_else(|| if is_root() { u64::MAX } else { 0 });
    NEEDED_CAPS.iter().filter(|(bit, _)| effective & (1 << bit) == 0).map(|(_, name)| *name).collect()
}

/// `(uid, primary gid)` of the passwd entry named `name`.
fn passwd_by_name(name: &str) -> Option<(u32, u32)> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam_r reads the NUL-terminated `name` and writes the entry into `pwd`, its
    // strings into `buf` (of the length given), and `result`; all are locals that outlive the call.
    passwd_lookup(|pwd, buf, len, result| unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf, len, result) })
}

/// `(uid, primary gid)` of the passwd entry of `uid`.
fn passwd_by_uid(uid: u32) -> Option<(u32, u32)> {
    // SAFETY: as in `passwd_by_name`, with a uid for a key.
    passwd_lookup(|pwd, buf, len, result| unsafe { libc::getpwuid_r(uid, pwd, buf, len, result) })
}

fn passwd_lookup(
    call: impl Fn(*mut libc::passwd, *mut libc::c_char, usize, *mut *mut libc::passwd) -> libc::c_int,
) -> Option<(u32, u32)> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is plain old data; all-zero is a valid value to be overwritten.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pwd, buf.as_mut_ptr(), buf.len(), &mut result);
    (rc == 0 && !result.is_null()).then_some((pwd.pw_uid, pwd.pw_gid))
}

/// The gid of the group named `name`.
fn group_by_name(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 64 * 1024];
    // SAFETY: `group` is plain old data; all-zero is a valid value to be overwritten.
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r reads the NUL-terminated `name` and writes into `grp`, `buf` (of the
    // length given) and `result`, all locals that outlive the call.
    let rc = unsafe { libc::getgrnam_r(name.as_ptr(), &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
    (rc == 0 && !result.is_null()).then_some(grp.gr_gid)
}

/// The user workers run as, once the server has set it ([`set_worker_user`]).
static WORKER_USER: OnceLock<WorkerUser> = OnceLock::new();

/// Sets the user every worker of this process runs as (once, at the server's start; a second,
/// different user is refused).
pub(crate) fn set_worker_user(user: WorkerUser) -> Result<(), UserSwitchRefused> {
    let set = WORKER_USER.get_or_init(|| user.clone());
    if *set != user {
        return Err(UserSwitchRefused { set: set.clone(), asked: user });
    }
    Ok(())
}

/// A second, different worker user for the same process.
#[derive(Debug, thiserror::Error)]
#[error("workers already run as {set}; cannot switch to {asked}")]
pub(crate) struct UserSwitchRefused {
    set: WorkerUser,
    asked: WorkerUser,
}

/// The user workers run as, when not the server's own.
pub(crate) fn worker_user() -> Option<&'static WorkerUser> {
    WORKER_USER.get()
}

/// Makes the child of `cmd` drop to the worker user (when one is set) right before it runs the
/// program: no supplementary groups, then the group, then the user. Any of them failing fails
/// the spawn: a worker must never run with the server's rights by accident. Register it after
/// the child's other `pre_exec` steps, which need the server's rights.
#[cfg(unix)]
pub(crate) fn run_as_worker_user(cmd: &mut std::process::Command) {
    if let Some(user) = worker_user() {
        run_as(cmd, user.uid, user.gid);
    }
}

#[cfg(unix)]
fn run_as(cmd: &mut std::process::Command, uid: u32, gid: u32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls between fork and exec (setgroups, setgid, setuid),
    // on plain integers copied into the closure; no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Hands `dir` and everything in it to the worker user (when one is set), without following
/// links: the instance's folder, which the server made, must be readable and usable by the
/// worker whatever the server's umask.
#[cfg(unix)]
pub(crate) fn hand_over(dir: &Path) -> std::io::Result<()> {
    let Some(user) = worker_user() else { return Ok(()) };
    chown_tree(dir, user.uid, user.gid)
}

#[cfg(unix)]
fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_user_is_a_user_and_an_optional_group_by_name_or_number() {
        for bad in ["", ":", "nobody:", ":nobody"] {
            assert!(resolve(bad).unwrap_err().0.contains("USER or USER:GROUP"), "{bad:?}");
        }
        let e = resolve("no-such-user-x9").unwrap_err().to_string();
        assert!(e.contains("no user named \"no-such-user-x9\""), "{e}");
        let e = resolve("0:no-such-group-x9").unwrap_err().to_string();
        assert!(e.contains("no group named \"no-such-group-x9\""), "{e}");
        // SAFETY: geteuid(2)/getegid(2) have no preconditions.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        // The server's own user and group: nothing to switch.
        assert_eq!(resolve(&format!("{euid}:{egid}")), Ok(None));
        // A number with no passwd entry: the same number for its group.
        let other = if euid == 0 { 4_000_123 } else { 0 };
        match resolve(&other.to_string()) {
            Ok(Some(u)) => assert_eq!((u.uid, u.gid), (other, other)),
            Err(e) => assert!(euid != 0 && e.0.contains("cannot start workers as another user"), "{e}"),
            Ok(None) => panic!("{other} is not this process's user"),
        }
    }
}
