//! Connection and file-descriptor limits.
//!
//! Every open connection holds a file descriptor. Without a cap, enough idle or trickling
//! clients use them all (measured: 20,000 trickling bodies), and then nothing can be accepted
//! or opened any more — not the admin plane, not a model file. So: the descriptor limit is
//! raised to the hard limit at start, the scoring plane's connections are capped below it
//! leaving a reserve for the admin plane and the process's own files, and the admin plane has
//! its own small cap. A client over the cap waits in the listen backlog until a connection
//! closes (slow ones are cut: headers after 5 s, bodies after `--body-timeout-ms`).

use std::net::TcpListener;

/// Open connections the admin plane (one worker) accepts at once.
pub const ADMIN_MAX_CONNECTIONS: usize = 256;
/// Descriptors kept for everything but scoring connections: the admin plane's connections,
/// model and state files, the config watcher, ONNX Runtime, logs.
pub const RESERVED_FDS: u64 = ADMIN_MAX_CONNECTIONS as u64 + 768;
/// actix's default listen backlog; the kernel caps it at `net.core.somaxconn`.
pub const SCORING_BACKLOG: u32 = 2048;
/// The admin plane's listen backlog.
pub const ADMIN_BACKLOG: u32 = 128;
/// actix's default per-worker cap, kept when descriptors allow more.
const ACTIX_DEFAULT_PER_WORKER: usize = 25_000;
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

/// The per-worker connection cap: `requested` (total, over all workers) when given, and never
/// more than the descriptors left after [`RESERVED_FDS`] (or half the limit, if less).
pub fn connections_per_worker(fd_limit: u64, workers: usize, requested: Option<usize>) -> usize {
    let workers = workers.max(1);
    // Under a small limit, half of it is kept instead.
    let reserve = RESERVED_FDS.min(fd_limit / 2);
    let budget = (fd_limit.saturating_sub(reserve) as usize / workers).max(1);
    let wanted = match requested {
        Some(total) => total.div_ceil(workers).max(1),
        None => ACTIX_DEFAULT_PER_WORKER,
    };
    if wanted > budget {
        if requested.is_some() {
            tracing::warn!(
                requested = wanted * workers,
                allowed = budget * workers,
                fd_limit,
                "--max-connections lowered to what the file descriptor limit allows"
            );
        }
        budget
    } else {
        wanted
    }
}

/// Sets the listen backlog of an already listening socket (std's `bind` uses 128): calling
/// `listen` again only changes the backlog.
pub fn set_backlog(listener: &TcpListener, backlog: u32) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_leaves_the_reserve() {
        assert_eq!(connections_per_worker(1024, 2, None), 256, "half of a small limit is kept");
        assert_eq!(connections_per_worker(4096 + RESERVED_FDS, 2, None), 2048);
        assert_eq!(connections_per_worker(1 << 20, 2, None), 25_000);
        assert_eq!(connections_per_worker(1 << 20, 2, Some(101)), 51);
        assert_eq!(connections_per_worker(2048 + RESERVED_FDS, 1, Some(1 << 20)), 2048);
    }
}
