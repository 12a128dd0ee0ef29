//! One connection's life: a non-blocking connect, an idle wait until the
//! run-wide barrier (plus the hold) releases it, then `requests` strictly
//! sequential echo round trips, each verified byte-for-byte, then a polite
//! close (shutdown write, then close).
//!
//! Nothing here blocks: the worker calls in on readiness events, phase
//! changes and deadline scans, and each call does what the socket allows
//! right now and returns a [`Step`].

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::LoadConfig;
use super::payload::Pattern;
use super::report::{ConnResult, FailureKind};

/// errno of a non-blocking connect still in progress. std names its
/// `ErrorKind` only on nightly and the crate has no libc dependency, so the
/// value is spelled out: Linux's, and the BSDs' and macOS's elsewhere.
#[cfg(any(target_os = "linux", target_os = "android"))]
const EINPROGRESS: i32 = 115;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const EINPROGRESS: i32 = 36;

/// What the worker lends a connection for one call.
pub(crate) struct Ctx<'a> {
    pub registry: &'a Registry,
    /// Shared per-thread buffer for generating outgoing and receiving
    /// incoming bytes, so connections own no buffers of their own.
    pub scratch: &'a mut [u8],
    /// Round trips in microseconds.
    pub hist: &'a mut Histogram<u64>,
    pub cfg: &'a LoadConfig,
}

/// Which directions an event reported (errors and hang-ups count as both,
/// so the next read or write surfaces them).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Readiness {
    pub readable: bool,
    pub writable: bool,
}

impl From<&mio::event::Event> for Readiness {
    fn from(ev: &mio::event::Event) -> Self {
        Readiness {
            readable: ev.is_readable() || ev.is_read_closed() || ev.is_error(),
            writable: ev.is_writable() || ev.is_write_closed() || ev.is_error(),
        }
    }
}

/// A failure and a human-readable account of it.
#[derive(Debug)]
pub(crate) struct Failure {
    pub kind: FailureKind,
    pub detail: String,
}

impl Failure {
    fn new(kind: FailureKind, detail: String) -> Self {
        Failure { kind, detail }
    }

    pub(crate) fn io(context: &str, err: &io::Error) -> Self {
        Failure::new(classify(err), format!("{context}: {err}"))
    }
}

/// Maps an I/O error to the reason reported for the connection.
pub(crate) fn classify(err: &io::Error) -> FailureKind {
    match err.kind() {
        ErrorKind::ConnectionRefused => FailureKind::Refused,
        ErrorKind::TimedOut => FailureKind::Timeout,
        ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::BrokenPipe
        | ErrorKind::UnexpectedEof => FailureKind::Reset,
        _ => FailureKind::Other,
    }
}

/// Result of one call into a connection.
#[derive(Debug)]
pub(crate) enum Step {
    /// Nothing to report; wait for the next event.
    Pending,
    /// The connect just completed; the connection is now idle.
    Established,
    /// Every message was verified and the connection shut down.
    Done,
    /// The connection failed and must be closed.
    Failed(Failure),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Connecting,
    /// Established, waiting for the request phase.
    Idle,
    /// Exchanging messages.
    Active,
}

#[derive(Debug)]
pub(crate) struct Conn {
    id: usize,
    token: Token,
    stream: TcpStream,
    state: State,
    opened: Instant,
    connect_time: Duration,
    first_write: Option<Instant>,
    finished: Option<Instant>,
    /// Messages echoed and verified; also the index of the current message.
    completed: u64,
    /// Bytes of the current message written / echoed back so far.
    written: usize,
    read: usize,
    msg_start: Instant,
    rtt_sum: Duration,
    deadline: Option<Instant>,
    /// Whether WRITABLE is in the registered interest: only while output is
    /// pending, so idle and waiting connections get no writable wakeups.
    want_write: bool,
}

impl Conn {
    /// Starts a non-blocking connect to `cfg.target`, bound to `source` if
    /// given, and registers it with `token`.
    pub(crate) fn open(
        id: usize,
        token: Token,
        source: Option<IpAddr>,
        registry: &Registry,
        cfg: &LoadConfig,
    ) -> Result<Conn, Failure> {
        let opened = Instant::now();
        let socket = Socket::new(
            Domain::for_address(cfg.target),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(|e| Failure::io("socket", &e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| Failure::io("set_nonblocking", &e))?;
        socket
            .set_tcp_nodelay(true)
            .map_err(|e| Failure::io("set TCP_NODELAY", &e))?;
        if let Some(ip) = source {
            socket
                .bind(&SocketAddr::new(ip, 0).into())
                .map_err(|e| Failure::io(&format!("bind {ip}"), &e))?;
        }
        match socket.connect(&cfg.target.into()) {
            Ok(()) => {}
            Err(e)
                if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(Failure::io("connect", &e)),
        }
        let mut stream = TcpStream::from_std(socket.into());
        registry
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Failure::io("register", &e))?;
        Ok(Conn {
            id,
            token,
            stream,
            state: State::Connecting,
            opened,
            connect_time: Duration::ZERO,
            first_write: None,
            finished: None,
            completed: 0,
            written: 0,
            read: 0,
            msg_start: opened,
            rtt_sum: Duration::ZERO,
            deadline: Some(opened + cfg.connect_timeout),
            want_write: true,
        })
    }

    pub(crate) fn id(&self) -> usize {
        self.id
    }

    pub(crate) fn is_connecting(&self) -> bool {
        self.state == State::Connecting
    }

    /// When this connection times out, if it is waiting on anything.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The timeout failure if the deadline has passed at `now`.
    pub(crate) fn expired(&self, now: Instant, cfg: &LoadConfig) -> Option<Failure> {
        if self.deadline? > now {
            return None;
        }
        let detail = match self.state {
            State::Connecting => format!("connect not done within {:?}", cfg.connect_timeout),
            State::Idle | State::Active => format!(
                "message {} not echoed within {:?} ({} of {} bytes back)",
                self.completed, cfg.timeout, self.read, cfg.size
            ),
        };
        Some(Failure::new(FailureKind::Timeout, detail))
    }

    /// Handles a readiness event (possibly spurious).
    pub(crate) fn on_event(&mut self, ctx: &mut Ctx<'_>, ready: Readiness) -> Step {
        let result = match self.state {
            State::Connecting => self.finish_connect(ctx, ready),
            State::Idle if ready.readable => self.check_idle(ctx).map(|()| Step::Pending),
            State::Idle => Ok(Step::Pending),
            State::Active => self.pump(ctx, ready),
        };
        result.unwrap_or_else(Step::Failed)
    }

    /// Begins the request phase on an idle connection.
    pub(crate) fn start(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.state != State::Idle {
            return Step::Pending;
        }
        self.state = State::Active;
        if ctx.cfg.requests == 0 {
            return self.finish();
        }
        self.send_next(ctx).unwrap_or_else(Step::Failed)
    }

    /// Deregisters and closes the socket, summarising the connection;
    /// `size` is the run's message size.
    pub(crate) fn close(
        mut self,
        registry: &Registry,
        size: usize,
        failure: Option<FailureKind>,
    ) -> ConnResult {
        if let Err(e) = registry.deregister(&mut self.stream) {
            log::debug!("conn {}: deregister: {e}", self.id);
        }
        let end = self.finished.unwrap_or_else(Instant::now);
        ConnResult {
            id: self.id,
            requests: self.completed,
            bytes: self.completed.saturating_mul(size as u64),
            total_duration: self.first_write.map_or(Duration::ZERO, |s| end - s),
            avg_response: match u32::try_from(self.completed) {
                Ok(0) => Duration::ZERO,
                Ok(n) => self.rtt_sum / n,
                Err(_) => {
                    Duration::from_secs_f64(self.rtt_sum.as_secs_f64() / self.completed as f64)
                }
            },
            connect_time: self.connect_time,
            failure,
        }
    }

    /// Connecting: checks whether the connect finished (the event may be
    /// spurious), and if so goes idle.
    fn finish_connect(&mut self, ctx: &mut Ctx<'_>, ready: Readiness) -> Result<Step, Failure> {
        match self.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return Err(Failure::io("connect", &e)),
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotConnected => return Ok(Step::Pending),
            Err(e) => return Err(Failure::io("connect", &e)),
        }
        self.connect_time = self.opened.elapsed();
        self.state = State::Idle;
        self.deadline = None;
        self.set_write_interest(ctx.registry, false)?;
        if ready.readable {
            self.check_idle(ctx)?;
        }
        Ok(Step::Established)
    }

    /// Idle: nothing may arrive before the first request, so any byte is a
    /// mismatch and EOF is the server giving up on us.
    fn check_idle(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        loop {
            // Every arm but EINTR returns; EINTR does not repeat forever.
            match self.stream.read(ctx.scratch) {
                Ok(0) => {
                    return Err(Failure::new(
                        FailureKind::Reset,
                        "closed by peer before the first request".into(),
                    ));
                }
                Ok(n) => {
                    return Err(Failure::new(
                        FailureKind::Mismatch,
                        format!("{n} unsolicited bytes before the first request"),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::io("read", &e)),
            }
        }
    }

    /// Active: writes pending output, reads and verifies the echo, and on a
    /// complete echo moves on to the next message. The next message's echo
    /// cannot have arrived yet, so it is left to a later event.
    fn pump(&mut self, ctx: &mut Ctx<'_>, ready: Readiness) -> Result<Step, Failure> {
        if ready.writable && self.written < ctx.cfg.size {
            self.write_pending(ctx)?;
        }
        if !ready.readable || !self.read_echo(ctx)? {
            return Ok(Step::Pending);
        }
        let rtt = self.msg_start.elapsed();
        self.rtt_sum += rtt;
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        ctx.hist.saturating_record(micros.max(1));
        self.completed += 1;
        if self.completed >= ctx.cfg.requests as u64 {
            return Ok(self.finish());
        }
        self.send_next(ctx)
    }

    /// Starts message number `completed` and writes what the socket takes.
    fn send_next(&mut self, ctx: &mut Ctx<'_>) -> Result<Step, Failure> {
        self.written = 0;
        self.read = 0;
        self.msg_start = Instant::now();
        self.first_write.get_or_insert(self.msg_start);
        self.deadline = Some(self.msg_start + ctx.cfg.timeout);
        self.write_pending(ctx)?;
        Ok(Step::Pending)
    }

    /// Writes the rest of the current message until done or WouldBlock,
    /// keeping WRITABLE interest exactly while bytes remain.
    fn write_pending(&mut self, ctx: &mut Ctx<'_>) -> Result<(), Failure> {
        let pattern = Pattern::new(self.id, self.completed);
        let size = ctx.cfg.size;
        // Bounded: every arm but EINTR returns or advances `written`.
        while self.written < size {
            let chunk_len = (size - self.written).min(ctx.scratch.len());
            let chunk = &mut ctx.scratch[..chunk_len];
            pattern.fill(self.written, chunk);
            match self.stream.write(chunk) {
                Ok(0) => {
                    return Err(Failure::new(FailureKind::Reset, "write returned 0".into()));
                }
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    return self.set_write_interest(ctx.registry, true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::io("write", &e)),
            }
        }
        self.set_write_interest(ctx.registry, false)
    }

    /// Reads and verifies the current message's echo until it is complete
    /// (`Ok(true)`) or the socket is drained (`Ok(false)`).
    fn read_echo(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, Failure> {
        let pattern = Pattern::new(self.id, self.completed);
        let size = ctx.cfg.size;
        // Bounded: every arm but EINTR returns or advances `read`. Reading
        // into the whole scratch buffer (not just the bytes still due)
        // catches a server that echoes more than was sent.
        while self.read < size {
            match self.stream.read(ctx.scratch) {
                Ok(0) => {
                    return Err(Failure::new(
                        FailureKind::Reset,
                        format!(
                            "closed by peer with {} of {size} bytes of message {} echoed",
                            self.read, self.completed
                        ),
                    ));
                }
                Ok(n) => {
                    let due = size - self.read;
                    let got = &ctx.scratch[..n.min(due)];
                    if let Some(at) = pattern.first_mismatch(self.read, got) {
                        return Err(Failure::new(
                            FailureKind::Mismatch,
                            format!(
                                "message {} byte {} differs from what was sent",
                                self.completed,
                                self.read + at
                            ),
                        ));
                    }
                    if n > due {
                        return Err(Failure::new(
                            FailureKind::Mismatch,
                            format!(
                                "message {}: {} bytes more than sent",
                                self.completed,
                                n - due
                            ),
                        ));
                    }
                    self.read += n;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::io("read", &e)),
            }
        }
        Ok(true)
    }

    /// All messages verified: half-close so the server sees a clean EOF.
    fn finish(&mut self) -> Step {
        self.finished = Some(Instant::now());
        self.deadline = None;
        if let Err(e) = self.stream.shutdown(Shutdown::Write) {
            // Every echo was already verified; a late reset changes nothing.
            log::debug!("conn {}: shutdown: {e}", self.id);
        }
        Step::Done
    }

    fn set_write_interest(&mut self, registry: &Registry, want: bool) -> Result<(), Failure> {
        if self.want_write == want {
            return Ok(());
        }
        let interest = if want {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry
            .reregister(&mut self.stream, self.token, interest)
            .map_err(|e| Failure::io("reregister", &e))?;
        self.want_write = want;
        Ok(())
    }
}
