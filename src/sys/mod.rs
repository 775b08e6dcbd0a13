//! The process's few calls into the operating system that Rust's standard library does not
//! wrap: thread priority, a thread's CPU clock, descriptor limits, the listen backlog, the
//! parent process. This is the only module where `unsafe` is allowed (every other module
//! forbids it); each call says why it is sound. (`yaml` holds the other exception: libyaml's
//! event parser, used to bound nesting depth before a document is parsed.)
#![allow(unsafe_code)]

pub mod yaml;

use std::time::Duration;

/// Sets the calling thread's nice value (Linux; elsewhere a no-op). Failure is ignored: a
/// thread that keeps its priority still works, only less politely.
pub fn set_nice(nice: i32) {
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
pub fn thread_cpu_time() -> Option<Duration> {
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

/// The parent process's id.
#[cfg(unix)]
pub fn parent_pid() -> i32 {
    // SAFETY: getppid(2) has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// A sane ceiling for a soft limit raised to an "unlimited" hard limit.
const FD_CEILING: u64 = 1 << 20;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (the default soft limit, often 1024, is
/// far below what a server facing clients needs); returns the soft limit in force.
// `rlim_t` is u64 on Linux but not everywhere: the casts are for the other platforms.
#[allow(clippy::unnecessary_cast)]
pub fn raise_fd_limit() -> u64 {
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
pub fn set_backlog(listener: &std::net::TcpListener, backlog: u32) {
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
