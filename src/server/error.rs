//! Why a server could not start, and the small adapter that turns an
//! `io::Error` into one.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::config::ConfigError;
use crate::runtime::upgrade::UpgradeError;

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    Config(ConfigError),
    /// The listen port is taken by another socket.
    AddrInUse(SocketAddr),
    /// `--upgrade-socket` / `--takeover` could not be set up.
    Upgrade(UpgradeError),
    /// Any other failure to set up a socket, poll or thread.
    Io {
        what: String,
        source: io::Error,
    },
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::AddrInUse(addr) => write!(
                f,
                "cannot listen on {addr}: port {} is already in use (choose another with --listen)",
                addr.port()
            ),
            StartError::Upgrade(e) => e.fmt(f),
            StartError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<ConfigError> for StartError {
    fn from(e: ConfigError) -> Self {
        StartError::Config(e)
    }
}

impl From<UpgradeError> for StartError {
    fn from(e: UpgradeError) -> Self {
        StartError::Upgrade(e)
    }
}

/// Wraps an `io::Error` from setting up `what` as [`StartError::Io`].
pub(super) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StartError {
    let what = what.into();
    move |source| StartError::Io { what, source }
}
