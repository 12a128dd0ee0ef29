//! The takeover handshake between two threads of one process, over a real
//! unix socket, handing over a real TCP listener.

use super::serve::rebind;
use super::wire::{deadline, read_line, write_line};
use super::*;
use std::io::{self, Read};
use std::net::TcpListener;
use std::net::TcpStream;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tidegate-ut-{}-{name}.sock", std::process::id()))
}

/// An "old process": a TCP listener and an upgrade thread offering it;
/// the receiver gets a message when the handover callback runs.
fn old(path: &Path) -> io::Result<(TcpListener, UpgradeHandle, mpsc::Receiver<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let socket = bind(path).map_err(io::Error::other)?;
    let (tx, rx) = mpsc::channel();
    let offer = Offer {
        fds: vec![("listen", listener.as_fd().try_clone_to_owned()?, addr)],
    };
    let on = OnHandover(Box::new(move || {
        let _ = tx.send(());
    }));
    let handle = spawn(Start::Bound(socket), offer, on)?;
    Ok((listener, handle, rx))
}

#[test]
fn the_new_process_accepts_on_the_inherited_listener() -> Result<(), Box<dyn std::error::Error>> {
    let path = temp_path("handover");
    let (listener, old_thread, handed) = old(&path)?;
    let inherited = take_over(&path)?;
    assert_eq!(inherited.listener.local_addr()?, listener.local_addr()?);
    assert!(inherited.admin.is_none());
    assert_eq!(inherited.handshake.pid, Some(std::process::id() as i32));
    // Not handed over before READY.
    assert!(handed.try_recv().is_err());
    // A connection made now may be taken from either copy: one queue.
    let _c = TcpStream::connect(listener.local_addr()?)?;
    inherited.listener.set_nonblocking(false)?;
    let (_s, _) = inherited.listener.accept()?;
    inherited.handshake.finish()?;
    handed.recv_timeout(STEP_TIMEOUT)?;
    old_thread.stop();
    // The old thread released the path without removing a successor's
    // file; the successor's `rebind` replaces it.
    let next = rebind(&path)?;
    drop(next);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn takeover_without_a_process_is_a_clear_error() {
    let path = temp_path("nobody");
    let _ = std::fs::remove_file(&path);
    let err = take_over(&path).map(|_| ()).unwrap_err();
    assert!(matches!(err, UpgradeError::NobodyThere { .. }), "{err}");
    assert!(err.to_string().contains("no tidegate process is listening"));
}

#[test]
fn a_second_process_without_takeover_is_refused_and_a_stale_file_replaced()
-> Result<(), Box<dyn std::error::Error>> {
    let path = temp_path("inuse");
    let (_listener, old_thread, _handed) = old(&path)?;
    assert!(matches!(bind(&path), Err(UpgradeError::InUse(_))));
    old_thread.stop();
    // Stopping removed the file; a file left by a dead process (a bound
    // socket nobody listens on) is replaced.
    assert!(!path.exists());
    let stale = UnixListener::bind(&path)?;
    drop(stale);
    let fresh = bind(&path)?;
    drop(fresh);
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn a_regular_file_is_never_replaced() -> Result<(), Box<dyn std::error::Error>> {
    let path = temp_path("regular");
    std::fs::write(&path, b"keep me")?;
    assert!(matches!(bind(&path), Err(UpgradeError::NotASocket(_))));
    assert_eq!(std::fs::read(&path)?, b"keep me");
    std::fs::remove_file(&path)?;
    Ok(())
}

#[test]
fn another_version_is_refused_and_the_old_process_keeps_serving()
-> Result<(), Box<dyn std::error::Error>> {
    let path = temp_path("version");
    let (_listener, old_thread, handed) = old(&path)?;
    let sock = UnixStream::connect(&path)?;
    write_line(&sock, deadline(), "TAKEOVER 9\n")?;
    let answer = read_line(&sock, deadline(), Vec::new())?;
    assert!(answer.starts_with("ERR protocol version 9"), "{answer}");
    // An aborted takeover (listeners received, no READY) changes nothing.
    let inherited = take_over(&path)?;
    drop(inherited);
    // A real one still works afterwards.
    take_over(&path)?.handshake.finish()?;
    handed.recv_timeout(STEP_TIMEOUT)?;
    assert!(handed.try_recv().is_err(), "handed over once");
    old_thread.stop();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[test]
fn a_silent_peer_is_dropped_after_the_step_timeout() -> Result<(), Box<dyn std::error::Error>> {
    let path = temp_path("silent");
    let (_listener, old_thread, handed) = old(&path)?;
    let started = Instant::now();
    let mut silent = UnixStream::connect(&path)?;
    silent.set_read_timeout(Some(STEP_TIMEOUT * 3))?;
    let mut buf = [0u8; 8];
    // The old side gives up on it and closes: EOF here.
    assert_eq!(silent.read(&mut buf)?, 0);
    let took = started.elapsed();
    assert!(took >= STEP_TIMEOUT, "{took:?}");
    assert!(took < STEP_TIMEOUT * 2, "{took:?}");
    assert!(handed.try_recv().is_err());
    // And it serves the next one.
    take_over(&path)?.handshake.finish()?;
    handed.recv_timeout(STEP_TIMEOUT)?;
    old_thread.stop();
    let _ = std::fs::remove_file(&path);
    Ok(())
}
