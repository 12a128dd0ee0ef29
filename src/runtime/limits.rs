//! RLIMIT_NOFILE: raised to the hard limit at start, since every connection
//! is a file descriptor. See ulimit.md for raising the hard limit itself.

use std::io;

use rlimit::Resource;

/// Descriptors the process needs besides connections: stdio, the epoll and
/// eventfd of each worker, the listener, the signal pipe, the reserve fd and
/// log files, with room to spare.
pub const RESERVED_FDS: u64 = 64;

/// The descriptor limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimits {
    pub before: u64,
    pub soft: u64,
    pub hard: u64,
}

impl FdLimits {
    /// Connections that fit when each one costs `fds_per_conn` descriptors.
    pub fn connections(&self, fds_per_conn: u64) -> u64 {
        self.soft.saturating_sub(RESERVED_FDS) / fds_per_conn.max(1)
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit.
pub fn raise_nofile() -> io::Result<FdLimits> {
    let (before, hard) = Resource::NOFILE.get()?;
    if before < hard {
        Resource::NOFILE.set(hard, hard)?;
    }
    let (soft, hard) = Resource::NOFILE.get()?;
    Ok(FdLimits { before, soft, hard })
}
