//! The running process's side of an upgrade: the upgrade socket on its own
//! thread, and handing the listeners to a process that takes over.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{self, JoinHandle};

use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use super::takeover::Handshake;
use super::wire::{deadline, describe, peer_pid, read_line, write_line};
use super::{STEP_TIMEOUT, UpgradeError, VERSION};
use crate::runtime::fdpass;
use crate::runtime::io::{is_interrupted, is_nobody_listening, is_timeout};

/// Connections on the upgrade socket handled per wake-up before polling
/// again (for the stop flag).
const ACCEPT_BATCH: usize = 8;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

/// A checked, bound upgrade socket, before its thread runs.
#[derive(Debug)]
pub struct UpgradeSocket {
    listener: mio::net::UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file, so that only our own file is
    /// removed at exit (a successor may have replaced it).
    id: (u64, u64),
}

/// Binds `path` for a process started without `--takeover`: a file left by
/// a process that is gone is replaced; a live process there is an error.
pub fn bind(path: &Path) -> Result<UpgradeSocket, UpgradeError> {
    match UnixStream::connect(path) {
        Ok(_) => return Err(UpgradeError::InUse(path.to_path_buf())),
        Err(e) if is_nobody_listening(&e) => {}
        Err(source) => {
            return Err(UpgradeError::Bind {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    rebind(path)
}

/// Removes whatever socket file is at `path` and binds a new one.
pub(super) fn rebind(path: &Path) -> Result<UpgradeSocket, UpgradeError> {
    let fail = |source| UpgradeError::Bind {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path).map_err(fail)?,
        Ok(_) => return Err(UpgradeError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    listener.set_nonblocking(true).map_err(fail)?;
    let m = std::fs::symlink_metadata(path).map_err(fail)?;
    Ok(UpgradeSocket {
        listener: mio::net::UnixListener::from_std(listener),
        path: path.to_path_buf(),
        id: (m.dev(), m.ino()),
    })
}

/// How the upgrade thread begins.
#[derive(Debug)]
pub enum Start {
    /// Started normally: serve this socket.
    Bound(UpgradeSocket),
    /// Started with `--takeover`: finish the handshake, then bind the path.
    TakenOver(Handshake, PathBuf),
}

/// The listeners this process hands over, with their names and addresses
/// for the FDS line.
#[derive(Debug)]
pub struct Offer {
    pub fds: Vec<(&'static str, OwnedFd, SocketAddr)>,
}

/// Called once, on READY: stop accepting and drain.
pub struct OnHandover(pub Box<dyn FnOnce() + Send>);

impl fmt::Debug for OnHandover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnHandover")
    }
}

/// The upgrade thread; stopping it removes the socket file if it is still
/// this process's.
#[derive(Debug)]
pub struct UpgradeHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl UpgradeHandle {
    /// Stops the thread (after the step in progress, bounded by
    /// [`STEP_TIMEOUT`]) and waits for it.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stop.store(true, Relaxed);
        if let Err(e) = self.waker.wake() {
            error!("cannot wake the upgrade thread: {e}");
        }
        if thread.join().is_err() {
            error!("the upgrade thread panicked");
        }
    }
}

impl Drop for UpgradeHandle {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts the upgrade thread.
pub fn spawn(start: Start, offer: Offer, on_handover: OnHandover) -> io::Result<UpgradeHandle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name("tidegate-upgrade".into())
        .spawn(move || run(poll, start, &offer, on_handover, &flag))?;
    Ok(UpgradeHandle {
        stop,
        waker,
        thread: Some(thread),
    })
}

fn run(poll: Poll, start: Start, offer: &Offer, on_handover: OnHandover, stop: &AtomicBool) {
    let mut socket = match start {
        Start::Bound(s) => s,
        Start::TakenOver(handshake, path) => {
            let pid = handshake.pid.unwrap_or(0);
            match handshake.finish() {
                Ok(()) => info!("upgrade: took over from pid {pid}, which now drains and exits"),
                Err(e) => warn!("{e}; accepting anyway"),
            }
            match rebind(&path) {
                Ok(s) => s,
                Err(e) => {
                    error!("{e}: no later upgrade can take over from this process");
                    return;
                }
            }
        }
    };
    if let Err(e) = poll
        .registry()
        .register(&mut socket.listener, SOCKET, Interest::READABLE)
    {
        error!("upgrade socket {}: {e}", socket.path.display());
        return;
    }
    info!("upgrade socket listening on {}", socket.path.display());
    // None: handed over, and the successor binds the path next, so the
    // file is not ours to remove.
    let Some(socket) = serve(poll, socket, offer, on_handover, stop) else {
        return;
    };
    let still_ours =
        std::fs::symlink_metadata(&socket.path).is_ok_and(|m| (m.dev(), m.ino()) == socket.id);
    if still_ours && let Err(e) = std::fs::remove_file(&socket.path) {
        warn!(
            "cannot remove upgrade socket {}: {e}",
            socket.path.display()
        );
    }
}

/// Serves takeovers until stopped (returns the socket) or handed over
/// (returns None).
fn serve(
    mut poll: Poll,
    socket: UpgradeSocket,
    offer: &Offer,
    on_handover: OnHandover,
    stop: &AtomicBool,
) -> Option<UpgradeSocket> {
    let mut events = Events::with_capacity(4);
    while !stop.load(Relaxed) {
        if let Err(e) = poll.poll(&mut events, None) {
            if is_interrupted(&e) {
                continue;
            }
            error!("upgrade socket poll failed: {e}; no upgrade possible");
            return Some(socket);
        }
        for _ in 0..ACCEPT_BATCH {
            if stop.load(Relaxed) {
                break;
            }
            let conn = match socket.listener.accept() {
                Ok((conn, _)) => UnixStream::from(conn),
                Err(e) if is_timeout(&e) => break,
                Err(e) => {
                    warn!("upgrade socket accept: {e}");
                    break;
                }
            };
            let pid = peer_pid(&conn).unwrap_or(0);
            match hand_over(&conn, offer) {
                Ok(()) => {
                    info!(
                        "upgrade: pid {pid} accepts on the listener now; \
                         this process stops accepting, drains and exits"
                    );
                    (on_handover.0)();
                    // Close the upgrade socket before DONE: the successor
                    // replaces the path as soon as it reads DONE.
                    drop(socket);
                    if let Err(e) = write_line(&conn, deadline(), "DONE\n") {
                        warn!("upgrade: pid {pid} did not take DONE: {e}");
                    }
                    return None;
                }
                Err(Abort::Quiet) => debug!("upgrade socket: pid {pid} hung up without a word"),
                Err(Abort::Failed(why)) => {
                    warn!("upgrade: takeover by pid {pid} failed: {why}; still serving")
                }
            }
        }
    }
    Some(socket)
}

/// Why a takeover conversation ended without a handover.
enum Abort {
    /// Closed before saying anything (such as a probe by `bind`).
    Quiet,
    Failed(String),
}

/// The old side of one conversation; `Ok` once READY has arrived.
fn hand_over(conn: &UnixStream, offer: &Offer) -> Result<(), Abort> {
    let failed = |e: io::Error| Abort::Failed(describe(&e));
    conn.set_nonblocking(false).map_err(failed)?;
    let line = match read_line(conn, deadline(), Vec::new()) {
        Ok(line) => line,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(Abort::Quiet),
        Err(e) => return Err(failed(e)),
    };
    let version = line.strip_prefix("TAKEOVER ").map(str::parse::<u32>);
    let refusal = match version {
        Some(Ok(VERSION)) => None,
        Some(Ok(v)) => Some(format!(
            "protocol version {v} not supported (this process speaks {VERSION})"
        )),
        _ => Some(format!("expected TAKEOVER {VERSION}, got {line:?}")),
    };
    if let Some(why) = refusal {
        let _ = write_line(conn, deadline(), &format!("ERR {why}\n"));
        return Err(Abort::Failed(why));
    }
    let mut text = String::from("FDS");
    for (name, _, addr) in &offer.fds {
        text.push_str(&format!(" {name}={addr}"));
    }
    text.push('\n');
    let fds: Vec<_> = offer.fds.iter().map(|(_, fd, _)| fd.as_fd()).collect();
    conn.set_write_timeout(Some(STEP_TIMEOUT))
        .and_then(|()| fdpass::send(conn, text.as_bytes(), &fds))
        .map_err(failed)?;
    match read_line(conn, deadline(), Vec::new())
        .map_err(failed)?
        .as_str()
    {
        "READY" => Ok(()),
        other => Err(Abort::Failed(format!("expected READY, got {other:?}"))),
    }
}
