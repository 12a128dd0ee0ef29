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

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::runtime::fdpass;
use crate::runtime::io::{is_interrupted, is_nobody_listening, is_timeout};

/// The protocol version this build speaks (`TAKEOVER 1`).
pub const VERSION: u32 = 1;

/// Bound on each step of the handshake, on both sides. Every step is a
/// few bytes on a local socket, or (READY) the new process registering
/// its listener after start-up, both far below a millisecond; 5 s leaves
/// room for a loaded machine while a stuck peer costs no more than that.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest protocol line; a longer one is a protocol error. The longest
/// legitimate line names two IPv6 socket addresses (~110 bytes).
const MAX_LINE: usize = 256;

/// Reads per line before giving up: one byte per read at worst, plus a few
/// interruptions by signals (a timed socket call is not restarted).
const MAX_READS: usize = MAX_LINE + 8;

/// Connections on the upgrade socket handled per wake-up before polling
/// again (for the stop flag).
const ACCEPT_BATCH: usize = 8;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);

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

/// What a new process received from the old one.
#[derive(Debug)]
pub struct Inherited {
    /// The proxy's listening socket.
    pub listener: TcpListener,
    /// The admin listener, when the old process had one.
    pub admin: Option<TcpListener>,
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
    let (mut listener, mut admin) = (None, None);
    for (name, fd) in names.into_iter().zip(fds) {
        match name {
            Some("listen") => listener = Some(tcp_listener(fd).map_err(refused)?),
            Some("admin") => admin = Some(tcp_listener(fd).map_err(refused)?),
            // A later version may pass more; this one closes them.
            other => debug!("upgrade: ignoring an inherited descriptor named {other:?}"),
        }
    }
    let listener = listener.ok_or_else(|| refused("no listener was passed".into()))?;
    let pid = peer_pid(&sock);
    Ok(Inherited {
        listener,
        admin,
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
fn rebind(path: &Path) -> Result<UpgradeSocket, UpgradeError> {
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

fn deadline() -> Instant {
    crate::runtime::timers::after(Instant::now(), STEP_TIMEOUT)
}

fn remaining(until: Instant) -> io::Result<Duration> {
    let left = until.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(left)
}

fn set_read_deadline(sock: &UnixStream, until: Instant) -> io::Result<()> {
    sock.set_read_timeout(Some(remaining(until)?))
}

fn eof_if_zero(n: usize) -> io::Result<usize> {
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(n)
}

/// Reads until a newline (appending to `line`), by `until`; returns the
/// line without its end.
fn read_line(mut sock: &UnixStream, until: Instant, mut line: Vec<u8>) -> io::Result<String> {
    let mut buf = [0u8; MAX_LINE];
    for _ in 0..MAX_READS {
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            let text = String::from_utf8_lossy(&line[..end]);
            return Ok(text.trim_end_matches('\r').to_string());
        }
        if line.len() > MAX_LINE {
            break;
        }
        set_read_deadline(sock, until)?;
        match sock.read(&mut buf) {
            Ok(n) => line.extend_from_slice(&buf[..eof_if_zero(n)?]),
            Err(e) if is_interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other(format!(
        "no line end within {MAX_LINE} bytes"
    )))
}

fn write_line(mut sock: &UnixStream, until: Instant, text: &str) -> io::Result<()> {
    sock.set_write_timeout(Some(remaining(until)?))?;
    sock.write_all(text.as_bytes())
}

/// One line for a failed step.
fn describe(e: &io::Error) -> String {
    if is_timeout(e) {
        format!("no answer within {STEP_TIMEOUT:?}")
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        "the other process closed the connection".into()
    } else {
        e.to_string()
    }
}

fn step_err(path: &Path, step: &'static str) -> impl FnOnce(io::Error) -> UpgradeError {
    let path = path.to_path_buf();
    move |e| UpgradeError::Step {
        path,
        step,
        why: describe(&e),
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

fn peer_pid(sock: &UnixStream) -> Option<i32> {
    nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|c| c.pid())
}

#[cfg(test)]
#[path = "upgrade_tests.rs"]
mod tests;
