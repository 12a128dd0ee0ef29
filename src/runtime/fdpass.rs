//! Passing file descriptors over a unix socket (SCM_RIGHTS), for the
//! zero-downtime upgrade (`runtime::upgrade`).
//!
//! This is the crate's one module with `unsafe` code, and it has one
//! `unsafe` expression: the kernel hands the receiver new descriptor
//! numbers in the control message, and nix (0.32) returns them as plain
//! `RawFd`s; turning one into an [`OwnedFd`] needs
//! `OwnedFd::from_raw_fd`, which is `unsafe` because the caller promises
//! that nothing else owns the number. That holds here: the descriptors
//! were created for this process by this `recvmsg` call (installed by the
//! kernel with `MSG_CMSG_CLOEXEC`) and nothing else has seen them, so each
//! is owned exactly once, and closed on drop even on an error path.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags, UnixAddr};

/// Most descriptors one message carries: the proxy listener, the admin
/// listener and up to 14 `[[listener]]` ones (HTTPS among them); a few
/// hundred bytes of control buffer. A sender offering more is refused,
/// and the receiver's control buffer is sized for it.
pub const MAX_FDS: usize = 16;

/// Sends `data` with `fds` attached (SCM_RIGHTS) in one `sendmsg`. The
/// socket's write timeout (if any) bounds the call.
pub fn send(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::other(format!(
            "{} descriptors to pass, at most {MAX_FDS}",
            fds.len()
        )));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let iov = [IoSlice::new(data)];
    let sent =
        socket::sendmsg::<UnixAddr>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
            .map_err(io::Error::from)?;
    if sent != data.len() {
        // The descriptors went with the first byte; the rest of a message
        // this small never needs a second write on a unix socket.
        return Err(io::Error::other(format!(
            "short sendmsg: {sent} of {} bytes",
            data.len()
        )));
    }
    Ok(())
}

/// Receives bytes into `buf` and the descriptors attached to them. The
/// socket's read timeout (if any) bounds the call. Returns `(0, [])` at
/// end of stream.
pub fn recv(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: see the module doc: `fd` was just installed in
                // this process by this recvmsg and has no other owner.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    // Checked after taking ownership, so what did arrive is closed.
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other(format!(
            "more than {MAX_FDS} descriptors sent (control data truncated)"
        )));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn a_passed_descriptor_refers_to_the_same_open_file() -> io::Result<()> {
        let (a, b) = UnixStream::pair()?;
        // Pass one end of another pair: what is written through the
        // received descriptor arrives at the other end.
        let (mut x, y) = UnixStream::pair()?;
        send(&a, b"FDS 1\n", &[y.as_fd()])?;
        drop(y);
        let mut buf = [0u8; 16];
        let (n, fds) = recv(&b, &mut buf)?;
        assert_eq!(&buf[..n], b"FDS 1\n");
        assert_eq!(fds.len(), 1);
        let mut y2 = UnixStream::from(fds.into_iter().next().ok_or(io::ErrorKind::NotFound)?);
        y2.write_all(b"hi")?;
        let mut got = [0u8; 2];
        x.read_exact(&mut got)?;
        assert_eq!(&got, b"hi");
        Ok(())
    }

    #[test]
    fn plain_bytes_come_without_descriptors_and_eof_is_zero() -> io::Result<()> {
        let (mut a, b) = UnixStream::pair()?;
        a.write_all(b"ERR x\n")?;
        let mut buf = [0u8; 16];
        let (n, fds) = recv(&b, &mut buf)?;
        assert_eq!((&buf[..n], fds.len()), (&b"ERR x\n"[..], 0));
        drop(a);
        assert_eq!(recv(&b, &mut buf)?.0, 0);
        Ok(())
    }

    #[test]
    fn too_many_descriptors_are_refused_by_the_sender() -> io::Result<()> {
        let (a, _b) = UnixStream::pair()?;
        let fd = a.as_fd();
        let many = vec![fd; MAX_FDS + 1];
        assert!(send(&a, b"x", &many).is_err());
        Ok(())
    }
}
