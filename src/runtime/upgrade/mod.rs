//! Zero-downtime binary upgrade: a running process hands its listening
//! sockets to a new one over a unix socket (`--upgrade-socket PATH`), as
//! HAProxy (`-x`), nginx, Envoy and Pingora do. The kernel's accept queue
//! belongs to the socket, not to a process, so while both hold it no
//! connection is refused, and none waiting in the queue is lost.
//!
//! ```text
//!  new process (--takeover)                old process (its upgrade thread)
//!  connect PATH ──────────────────────────▶ accept
//!  "TAKEOVER 1\n" ────────────────────────▶ version checked ("ERR why\n" if not)
//!                 ◀──────────────────────── "FDS listen=ADDR admin=ADDR\n"
//!                                           + the listeners (SCM_RIGHTS)
//!  registers them with its acceptor: from here both processes accept
//!  "READY\n" ─────────────────────────────▶ its acceptor stops accepting
//!                                           (deregisters and drops its copy);
//!                                           closes its upgrade socket
//!                 ◀──────────────────────── "DONE\n"; drains in-flight
//!                                           requests, prints its summary, exit 0
//!  replaces PATH with its own upgrade socket: the next upgrade is the same command
//! ```
//!
//! Every step is bounded by [`STEP_TIMEOUT`]. The old process stops
//! accepting only on READY, so a takeover that fails half-way (the new
//! process exits, hangs or speaks another version) leaves it serving as
//! before. The handshake runs on its own thread, never on the acceptor or
//! a worker.
//!
//! - `serve`: the running process's side: the upgrade socket, its thread,
//!   handing the listeners over.
//! - `takeover`: the new process's side (`--takeover`).
//! - `wire`: time-bound line I/O shared by both.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

mod serve;
mod takeover;
mod wire;

pub use serve::{Offer, OnHandover, Start, UpgradeHandle, UpgradeSocket, bind, spawn};
pub use takeover::{Handshake, Inherited, take_over};

/// The protocol version this build speaks (`TAKEOVER 1`).
pub const VERSION: u32 = 1;

/// Bound on each step of the handshake, on both sides. Every step is a
/// few bytes on a local socket, or (READY) the new process registering
/// its listener after start-up, both far below a millisecond; 5 s leaves
/// room for a loaded machine while a stuck peer costs no more than that.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upgrade could not be set up or taken.
#[derive(Debug)]
pub enum UpgradeError {
    /// `--takeover`, but no process listens at the path.
    NobodyThere { path: PathBuf, source: io::Error },
    /// Starting without `--takeover` while a process answers at the path.
    InUse(PathBuf),
    /// The path exists and is not a socket: it is left alone.
    NotASocket(PathBuf),
    /// Binding the upgrade socket failed.
    Bind { path: PathBuf, source: io::Error },
    /// A step of the handshake failed.
    Step {
        path: PathBuf,
        step: &'static str,
        why: String,
    },
}

impl fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpgradeError::NobodyThere { path, source } => write!(
                f,
                "--takeover: no tidegate process is listening on upgrade socket {} ({source}); \
                 start without --takeover",
                path.display()
            ),
            UpgradeError::InUse(path) => write!(
                f,
                "upgrade socket {} belongs to a running process: add --takeover to take over \
                 from it, or choose another --upgrade-socket",
                path.display()
            ),
            UpgradeError::NotASocket(path) => write!(
                f,
                "--upgrade-socket {} exists and is not a socket; not replacing it",
                path.display()
            ),
            UpgradeError::Bind { path, source } => write!(
                f,
                "cannot listen on upgrade socket {}: {source}",
                path.display()
            ),
            UpgradeError::Step { path, step, why } => {
                write!(f, "upgrade over {}: {step}: {why}", path.display())
            }
        }
    }
}

impl std::error::Error for UpgradeError {}

#[cfg(test)]
mod tests;
