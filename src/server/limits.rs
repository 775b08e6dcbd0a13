//! Connection and file-descriptor limits.
//!
//! Every open connection holds a file descriptor. Without a cap, enough idle or trickling
//! clients use them all (measured: 20,000 trickling bodies), and then nothing can be accepted
//! or opened any more — not the admin plane, not a model file. So: the descriptor limit is
//! raised to the hard limit at start, the scoring plane's connections are capped below it
//! leaving a reserve for the admin plane and the process's own files, and the admin plane has
//! its own small cap. A client over the cap waits in the listen backlog until a connection
//! closes (slow ones are cut: headers after 5 s, bodies after `--body-timeout-ms`).

/// Open connections the admin plane (one worker) accepts at once.
pub(super) const ADMIN_MAX_CONNECTIONS: usize = 256;
/// Open connections the gRPC plane accepts at once (at most an eighth of the descriptor limit):
/// a gRPC client multiplexes its calls on one connection (up to 128 at once here), so far fewer
/// are needed than on HTTP/1.1.
pub(super) const GRPC_MAX_CONNECTIONS: usize = 1024;
/// Descriptors kept for everything but the HTTP scoring plane's connections: the admin and gRPC
/// planes' connections, model and state files, the config watcher, ONNX Runtime, logs.
pub(super) const RESERVED_FDS: u64 = ADMIN_MAX_CONNECTIONS as u64 + GRPC_MAX_CONNECTIONS as u64 + 768;

/// The gRPC plane's connection cap under descriptor limit `fd_limit`.
pub(super) fn grpc_connections(fd_limit: u64) -> usize {
    // An eighth: under a small limit, the half kept from the HTTP plane (see
    // `connections_per_worker`) holds the admin plane's and this, and leaves the process's own.
    GRPC_MAX_CONNECTIONS.min((fd_limit / 8) as usize).max(1)
}
/// actix's default listen backlog; the kernel caps it at `net.core.somaxconn`.
pub(super) const SCORING_BACKLOG: u32 = 2048;
/// The admin plane's listen backlog.
pub(super) const ADMIN_BACKLOG: u32 = 128;
/// actix's default per-worker cap, kept when descriptors allow more.
const ACTIX_DEFAULT_PER_WORKER: usize = 25_000;
pub(super) use crate::sys::{raise_fd_limit, set_backlog};

/// The per-worker connection cap: `requested` (total, over all workers) when given, and never
/// more than the descriptors left after [`RESERVED_FDS`] (or half the limit, if less).
pub(super) fn connections_per_worker(fd_limit: u64, workers: usize, requested: Option<usize>) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap_leaves_the_reserve() {
        assert_eq!(connections_per_worker(1024, 2, None), 256, "half of a small limit is kept");
        assert_eq!(grpc_connections(1024), 128, "an eighth of a small limit for gRPC");
        assert_eq!(grpc_connections(1 << 20), GRPC_MAX_CONNECTIONS);
        assert_eq!(connections_per_worker(4096 + RESERVED_FDS, 2, None), 2048);
        assert_eq!(connections_per_worker(1 << 20, 2, None), 25_000);
        assert_eq!(connections_per_worker(1 << 20, 2, Some(101)), 51);
        assert_eq!(connections_per_worker(2048 + RESERVED_FDS, 1, Some(1 << 20)), 2048);
    }
}
