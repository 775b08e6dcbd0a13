//! The process's few calls into the operating system that Rust's standard library does not
//! wrap: thread priority, a thread's CPU clock, descriptor limits, the listen backlog, the
//! parent process. This is the only module where `unsafe` is allowed (every other module
//! forbids it); each call says why it is sound. (`yaml` holds the other exception: libyaml's
//! event parser, used to bound nesting depth before a document is parsed; `native` holds the
//! other: loading native scoring plugins and calling through their C ABI; `scrub` overwrites the
//! admin token in the kernel-visible startup blocks and makes the server non-dumpable; `user` starts
//! workers as another user, `serve --worker-user`.)
#![allow(unsafe_code)]

pub(crate) mod files;
pub(crate) mod native;
pub(crate) mod scrub;
pub(crate) mod tmp;
pub(crate) mod user;
pub(crate) mod yaml;

use std::time::Duration;

/// Sets the calling thread's nice value (Linux; elsewhere a no-op). Failure is ignored: a
/// thread that keeps its priority still works, only less politely.
pub(crate) fn set_nice(nice: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: changes only the calling thread's nice value (by its tid); failure is ignored.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// The calling thread's CPU time (Linux `CLOCK_THREAD_CPUTIME_ID`; `None` elsewhere or on
/// error).
pub(crate) fn thread_cpu_time() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec through a valid pointer to a local.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 && ts.tv_sec >= 0 && ts.tv_nsec >= 0 {
            return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
        }
        None
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// This process's effective user id.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The parent process's id.
#[cfg(unix)]
pub(crate) fn parent_pid() -> i32 {
    // SAFETY: getppid(2) has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// A sane ceiling for a soft limit raised to an "unlimited" hard limit.
const FD_CEILING: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the default soft limit, often 1024, is
/// far below what a server facing clients needs); returns the soft limit in force.
// `rlim_t` is u64 on Linux but not everywhere: the casts are for the other platforms.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn raise_fd_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return 1024;
            }
            let target = if lim.rlim_max == libc::RLIM_INFINITY { FD_CEILING } else { lim.rlim_max as u64 };
            if (lim.rlim_cur as u64) < target {
                let raised = libc::rlimit { rlim_cur: target as libc::rlim_t, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    return target;
                }
                tracing::warn!(soft = lim.rlim_cur as u64, hard = target, "cannot raise the file descriptor limit");
            }
            lim.rlim_cur as u64
        }
    }
    #[cfg(not(unix))]
    {
        8192
    }
}

/// Sets the listen backlog of an already listening socket (std's `bind` uses 128): calling
/// `listen` again only changes the backlog.
pub(crate) fn set_backlog(listener: &std::net::TcpListener, backlog: u32) {
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        let backlog = backlog.min(i32::MAX as u32) as libc::c_int;
        // SAFETY: listen(2) on a socket this process owns and keeps open.
        if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot set the listen backlog");
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (listener, backlog);
    }
}

/// Takes an exclusive `flock` on `file`, waiting for it; released when the file is closed.
#[cfg(unix)]
pub(crate) fn lock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor the caller owns and keeps open while it holds the lock.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `fd` is readable (or hung up), at most `timeout_ms` (-1: no limit). `Ok(false)`
/// when the time ran out; an interrupted wait is reported as `Ok(false)` too, so callers
/// recompute their timeout and call again.
#[cfg(unix)]
pub(crate) fn poll_readable(fd: std::os::fd::RawFd, timeout_ms: i32) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call; `fd` is owned by the caller.
    let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    if n > 0 {
        return Ok(true);
    }
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(false)
}

/// Puts `fd` in non-blocking mode (a pipe end read through the async runtime's reactor: a
/// read when nothing is there must say so, not wait).
#[cfg(unix)]
pub(crate) fn set_nonblocking(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on a descriptor the caller owns; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for a pipe of `bytes` (rounded up by the kernel to a power of two pages; 0: as it
/// is) and returns what the pipe holds now: the asked size, or the default 64 KiB where the kernel refuses
/// (an unprivileged user past `/proc/sys/fs/pipe-user-pages-soft`, or above
/// `pipe-max-size`).
#[cfg(target_os = "linux")]
pub(crate) fn grow_pipe(fd: std::os::fd::BorrowedFd<'_>, bytes: usize) -> usize {
    use std::os::fd::AsRawFd;
    let fd = fd.as_raw_fd();
    let asked = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl F_SETPIPE_SZ/F_GETPIPE_SZ on a pipe descriptor the caller keeps open; no
    // memory is passed.
    unsafe {
        if asked > 0 {
            libc::fcntl(fd, libc::F_SETPIPE_SZ, asked);
        }
        usize::try_from(libc::fcntl(fd, libc::F_GETPIPE_SZ)).unwrap_or(0)
    }
}

/// See the Linux version: elsewhere pipes keep their size (at least 16 KiB is assumed).
#[cfg(not(target_os = "linux"))]
pub fn grow_pipe(_fd: std::os::fd::BorrowedFd<'_>, _bytes: usize) -> usize {
    16 * 1024
}

/// Registers a borrowed, non-blocking descriptor with the current tokio runtime's reactor, for
/// reading (a hook worker's answer pipe, awaited on the request's task). Must be called inside
/// a runtime with I/O enabled. The caller must not `mem::forget` the result.
#[cfg(unix)]
pub(crate) fn await_readable(
    fd: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::BorrowedFd<'_>>> {
    // SAFETY: tokio needs the descriptor open, and the same, for the AsyncFd's whole life; the
    // AsyncFd holds the BorrowedFd, so it cannot outlive the borrow of the open descriptor
    // (and it is never forgotten: it deregisters when dropped, before the borrow ends).
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Makes the child of `cmd` inherit `child_in` as fd 3 and `child_out` as fd 4 (the frame
/// pipes of a hook worker), and nothing else beyond stdio (every other pipe of ours is
/// close-on-exec).
#[cfg(unix)]
pub(crate) fn inherit_as_fd3_fd4(cmd: &mut std::process::Command, child_in: i32, child_out: i32) {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
    // Both ends are first moved to fds >= 10, so that placing one on 3 can never clobber
    // the other; the copies on 3 and 4 have no close-on-exec flag, so the worker inherits
    // exactly these two.
    unsafe {
        cmd.pre_exec(move || {
            let a = libc::fcntl(child_in, libc::F_DUPFD, 10);
            let b = libc::fcntl(child_out, libc::F_DUPFD, 10);
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(a);
            libc::close(b);
            Ok(())
        });
    }
}

/// SIGKILL to the process group led by `pid` (a worker and whatever it started).
#[cfg(unix)]
pub(crate) fn kill_process_group(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else { return };
    if pid > 0 {
        // SAFETY: kill(2) on the process group of a child we spawned (its own group).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

/// The worker side of the frame pipes a hook worker inherits ([`inherit_as_fd3_fd4`]): fd 3
/// (requests in) and fd 4 (answers out), made close-on-exec so that what the worker starts does
/// not inherit them. `None` when they are not open (the program was not started as a worker).
#[cfg(unix)]
pub(crate) fn worker_frame_pipes() -> Option<(std::io::PipeReader, std::io::PipeWriter)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    for fd in [3, 4] {
        // SAFETY: fcntl on a descriptor number: F_GETFD fails (EBADF) when it is not open.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
            return None;
        }
        // SAFETY: as above, on a descriptor that is open.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: fds 3 and 4 are open (checked above), were inherited for exactly this use, and
    // nothing else in this process owns them: they are taken once, at the worker's start.
    let (input, output) = unsafe { (OwnedFd::from_raw_fd(3), OwnedFd::from_raw_fd(4)) };
    Some((std::io::PipeReader::from(input), std::io::PipeWriter::from(output)))
}

/// What a hook worker's child sets on itself between fork and exec ([`worker_child_setup`]).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WorkerChildSetup {
    /// Written to `/proc/self/oom_score_adj` (Linux): the kernel's out-of-memory killer then
    /// picks a worker before the server. `None`: left as inherited.
    pub oom_score_adj: Option<i32>,
    /// `RLIMIT_DATA` in bytes (soft and hard): the worker's heap and other private writable
    /// memory; past it, allocations fail (Python raises `MemoryError`). `None`: no limit.
    pub max_data_bytes: Option<u64>,
}

/// Makes the child of `cmd`, before it runs the worker program: a child subreaper (Linux
/// `PR_SET_CHILD_SUBREAPER`: what its children start and orphan, even after a double fork and
/// `setsid`, is re-parented to the worker rather than to init, so the server can still find
/// and kill it as the worker's descendant); its `oom_score_adj`; its `RLIMIT_DATA`. A limit
/// that cannot be set fails the spawn (the user asked for it); the other two are best effort.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
pub(crate) fn worker_child_setup(cmd: &mut std::process::Command, setup: WorkerChildSetup) {
    use std::os::unix::process::CommandExt;
    // Formatted here: between fork and exec nothing may allocate.
    let adj: Option<Vec<u8>> = setup.oom_score_adj.map(|v| v.to_string().into_bytes());
    let limit = setup.max_data_bytes.map(|b| libc::rlimit { rlim_cur: b as libc::rlim_t, rlim_max: b as libc::rlim_t });
    // SAFETY: only async-signal-safe calls between fork and exec (prctl, open, write, close,
    // setrlimit), on memory prepared before the fork (the path literal, `adj`, `limit`).
    unsafe {
        cmd.pre_exec(move || {
            #[cfg(target_os = "linux")]
            {
                libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
                if let Some(adj) = &adj {
                    let fd = libc::open(c"/proc/self/oom_score_adj".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd >= 0 {
                        libc::write(fd, adj.as_ptr().cast(), adj.len());
                        libc::close(fd);
                    }
                }
            }
            #[cfg(not(target_os = "linux"))]
            let _ = &adj;
            if let Some(limit) = &limit {
                if libc::setrlimit(libc::RLIMIT_DATA, limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

/// This process's `oom_score_adj` (Linux; `None` elsewhere or when unreadable).
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
pub(crate) fn own_oom_score_adj() -> Option<i32> {
    std::fs::read_to_string("/proc/self/oom_score_adj").ok()?.trim().parse().ok()
}

/// The parent pid and state letter of process `pid`, from `/proc/<pid>/stat` (Linux; `None`
/// elsewhere, or when the process is gone).
#[allow(clippy::disallowed_methods, reason = "/proc is the kernel's, not a deployment's")]
pub(crate) fn process_parent(pid: u32) -> Option<(u32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// SIGKILL to `pid`, only if its parent is still `parent`: between reading `/proc` and the
/// kill the process may have exited and its pid been reused. The check and the signal go
/// through a pidfd (Linux 5.3+), which pins the process the check was made on; without pidfds
/// the check is made just before a plain `kill`. Returns whether the signal was sent.
#[cfg(unix)]
pub(crate) fn kill_if_child_of(pid: u32, parent: u32) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else { return false };
    if raw <= 1 {
        return false;
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: pidfd_open(2) takes a pid and flags and returns a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd >= 0 {
            let fd = fd as libc::c_int;
            let sent = process_parent(pid).is_some_and(|(p, _)| p == parent)
                // SAFETY: pidfd_send_signal(2) on the descriptor opened above; no siginfo.
                && unsafe {
                    libc::syscall(libc::SYS_pidfd_send_signal, fd, libc::SIGKILL, std::ptr::null::<u8>(), 0)
                } == 0;
            // SAFETY: closes the descriptor opened above, once.
            unsafe { libc::close(fd) };
            return sent;
        }
    }
    // SAFETY: kill(2) with a pid checked (just now) to be a child of the worker we started.
    process_parent(pid).is_some_and(|(p, _)| p == parent) && unsafe { libc::kill(raw, libc::SIGKILL) } == 0
}
