//! The new process's side of an upgrade: `--takeover`.

use std::io;
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use log::debug;

use super::wire::{
    MAX_LINE, deadline, eof_if_zero, peer_pid, read_line, set_read_deadline, step_err, write_line,
};
use super::{UpgradeError, VERSION};
use crate::runtime::fdpass;
use crate::runtime::io::is_nobody_listening;

/// What a new process received from the old one.
#[derive(Debug)]
pub struct Inherited {
    /// The proxy's listening socket.
    pub listener: TcpListener,
    /// The admin listener, when the old process had one.
    pub admin: Option<TcpListener>,
    /// Its `[[listener]]` sockets (HTTPS ones among them), each matched by
    /// address to the configuration's.
    pub extra: Vec<TcpListener>,
    /// The rest of the conversation: READY once accepting.
    pub handshake: Handshake,
}

/// A takeover that has the listeners and still owes READY.
#[derive(Debug)]
pub struct Handshake {
    sock: UnixStream,
    path: PathBuf,
    /// The old process, for the logs.
    pub pid: Option<i32>,
}

/// Connects to the process at `path` and receives its listeners.
pub fn take_over(path: &Path) -> Result<Inherited, UpgradeError> {
    let sock = UnixStream::connect(path).map_err(|source| {
        if is_nobody_listening(&source) {
            UpgradeError::NobodyThere {
                path: path.to_path_buf(),
                source,
            }
        } else {
            step_err(path, "connecting")(source)
        }
    })?;
    let until = deadline();
    write_line(&sock, until, &format!("TAKEOVER {VERSION}\n"))
        .map_err(step_err(path, "sending TAKEOVER"))?;
    let until = deadline();
    let mut buf = [0u8; MAX_LINE];
    let (n, fds) = set_read_deadline(&sock, until)
        .and_then(|()| fdpass::recv(&sock, &mut buf))
        .and_then(|(n, fds)| eof_if_zero(n).map(|n| (n, fds)))
        .map_err(step_err(path, "receiving the listeners"))?;
    let line = read_line(&sock, until, buf[..n].to_vec())
        .map_err(step_err(path, "receiving the listeners"))?;
    let refused = |why: String| UpgradeError::Step {
        path: path.to_path_buf(),
        step: "takeover refused",
        why,
    };
    if let Some(why) = line.strip_prefix("ERR ") {
        return Err(refused(why.to_string()));
    }
    let names = line
        .strip_prefix("FDS ")
        .map(|rest| rest.split_whitespace().map(|t| t.split('=').next()))
        .ok_or_else(|| refused(format!("unexpected answer {line:?}")))?
        .collect::<Vec<_>>();
    if names.len() != fds.len() {
        return Err(refused(format!(
            "the answer names {} descriptors, {} arrived",
            names.len(),
            fds.len()
        )));
    }
    let (mut listener, mut admin, mut extra) = (None, None, Vec::new());
    for (name, fd) in names.into_iter().zip(fds) {
        match name {
            Some("listen") => listener = Some(tcp_listener(fd).map_err(refused)?),
            Some("admin") => admin = Some(tcp_listener(fd).map_err(refused)?),
            Some("listener") => extra.push(tcp_listener(fd).map_err(refused)?),
            // A later version may pass more; this one closes them.
            other => debug!("upgrade: ignoring an inherited descriptor named {other:?}"),
        }
    }
    let listener = listener.ok_or_else(|| refused("no listener was passed".into()))?;
    let pid = peer_pid(&sock);
    Ok(Inherited {
        listener,
        admin,
        extra,
        handshake: Handshake {
            sock,
            path: path.to_path_buf(),
            pid,
        },
    })
}

impl Handshake {
    /// Says READY (the new process accepts on the listener now) and waits
    /// for the old process's DONE: it has stopped accepting and released
    /// the path.
    pub fn finish(self) -> Result<(), UpgradeError> {
        let path = &self.path;
        write_line(&self.sock, deadline(), "READY\n").map_err(step_err(path, "sending READY"))?;
        let line = read_line(&self.sock, deadline(), Vec::new())
            .map_err(step_err(path, "waiting for DONE"))?;
        if line != "DONE" {
            return Err(step_err(path, "waiting for DONE")(io::Error::other(
                format!("unexpected answer {line:?}"),
            )));
        }
        Ok(())
    }
}

/// A received descriptor as a non-blocking listening TCP socket.
fn tcp_listener(fd: OwnedFd) -> Result<TcpListener, String> {
    let sock = socket2::Socket::from(fd);
    if !sock.is_listener().unwrap_or(false) {
        return Err("a passed descriptor is not a listening socket".into());
    }
    sock.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(sock.into())
}
