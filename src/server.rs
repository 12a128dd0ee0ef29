//! Starting, running and stopping a server: the acceptor on the calling
//! thread, N workers on their own threads, and an optional log writer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::{self, JoinHandle};
use std::time::Instant;

use log::{error, info};
use mio::net::UnixStream;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGXFSZ};

use crate::config::{ConfigError, EchoConfig, ProxyConfig, ServerConfig};
use crate::echo::{EchoCtx, EchoSession};
use crate::proxy::accesslog::LogTarget;
use crate::proxy::live::{self, Live};
use crate::proxy::resolver;
use crate::proxy::{ProxyCtx, ProxySession, Shared, csvlog};
use crate::runtime::acceptor::{
    self, Acceptor, ListenError, ReopenHook, ShutdownHandle, SignalFlags,
};
use crate::runtime::connlog;
use crate::runtime::reload::Reloader;
use crate::runtime::session::Session;
use crate::runtime::stats::{AcceptStats, Summary, WorkerStats};
use crate::runtime::upgrade::{self, UpgradeHandle};
use crate::runtime::worker;

mod error;

pub use error::StartError;
use error::io_err;

/// An inherited listener for the acceptor. Its address wins over `--listen`
/// (changing the listen address needs a restart, not an upgrade).
fn inherit(
    listener: std::net::TcpListener,
    wanted: SocketAddr,
) -> Result<mio::net::TcpListener, StartError> {
    let addr = listener
        .local_addr()
        .map_err(io_err("reading the inherited listener's address"))?;
    if addr != wanted {
        log::warn!(
            "--listen {wanted} differs from the inherited listener {addr}: keeping {addr} \
             (changing the listen address needs a restart)"
        );
    }
    listener
        .set_nonblocking(true)
        .map_err(io_err("setting up the inherited listener"))?;
    Ok(mio::net::TcpListener::from_std(listener))
}

/// Opens a listening socket on `addr` with `cfg`'s backlog and reuseport.
fn bind(addr: SocketAddr, cfg: &ServerConfig) -> Result<mio::net::TcpListener, StartError> {
    acceptor::listen_with(addr, cfg.backlog, cfg.reuseport).map_err(|e| match e {
        ListenError::InUse(addr) => StartError::AddrInUse(addr),
        ListenError::Io { addr, source } => StartError::Io {
            what: format!("cannot listen on {addr}"),
            source,
        },
    })
}

/// A bound, running server whose acceptor has not started yet.
#[derive(Debug)]
pub struct Server {
    acceptor: Acceptor,
    addr: SocketAddr,
    /// The bound addresses of `[[listener]]` tables, in order.
    listener_addrs: Vec<SocketAddr>,
    accept_stats: Arc<AcceptStats>,
    worker_stats: Vec<Arc<WorkerStats>>,
    /// Each worker's waker, in worker order (proxy mode hands them to the
    /// queues, see `proxy::board`).
    wakers: Vec<Arc<mio::Waker>>,
    /// Log writers, joined after the workers so no line is lost.
    writers: Vec<Writer>,
    /// The `--upgrade-socket` thread, stopped when accepting stops.
    upgrade: Option<UpgradeHandle>,
}

/// What a caller of [`Server::proxy`] can watch while it runs.
#[derive(Debug, Clone)]
pub struct ProxyHandles {
    /// The configuration the proxy started with: its request counters are
    /// the process's (shared by every later generation); for the current
    /// selector and backends, ask `live`.
    pub shared: Arc<Shared>,
    /// The current configuration, swapped on reload.
    pub live: Arc<Live>,
    /// The CSV log's counters (rows written, write errors, rows dropped),
    /// with `--log-csv`.
    pub csv: Option<Arc<csvlog::LogCounters>>,
}

/// The connection counters of a running server, for a reader on another
/// thread (the admin endpoint): clones of the `Arc`s the acceptor and the
/// workers update.
#[derive(Debug, Clone)]
pub struct LiveStats {
    pub accept: Arc<AcceptStats>,
    /// One per worker, in worker order.
    pub workers: Vec<Arc<WorkerStats>>,
}

/// A log-writer thread to join once the workers (its only senders) are gone.
/// Write errors are counted and warned about by the writer itself.
#[derive(Debug)]
enum Writer {
    ConnLog(JoinHandle<()>),
    Csv(JoinHandle<()>),
}

impl Writer {
    fn join(self) {
        let (name, t) = match self {
            Writer::ConnLog(t) => ("connection log", t),
            Writer::Csv(t) => ("CSV log", t),
        };
        if t.join().is_err() {
            error!("the {name} writer panicked");
        }
    }
}

impl Server {
    /// Binds and starts echo mode's workers.
    pub fn echo(cfg: &EchoConfig) -> Result<Server, StartError> {
        let (log, writer) = if cfg.log_connections {
            let (log, writer) =
                connlog::start(io::stdout()).map_err(io_err("starting the connection log"))?;
            (Some(log), Some(writer))
        } else {
            (None, None)
        };
        let mut server = Self::start::<EchoSession>(&cfg.server, |_| EchoCtx::new(log.clone()))?;
        server.writers.extend(writer.map(Writer::ConnLog));
        Ok(server)
    }

    /// Binds and starts proxy mode's workers. The returned [`Shared`] holds
    /// the selector and the request counters.
    pub fn proxy(cfg: &ProxyConfig) -> Result<(Server, ProxyHandles), StartError> {
        Self::proxy_on(cfg, None)
    }

    /// [`Server::proxy`] on `inherited`, a listening socket received from
    /// the process this one takes over from, instead of binding one.
    pub fn proxy_on(
        cfg: &ProxyConfig,
        inherited: Option<std::net::TcpListener>,
    ) -> Result<(Server, ProxyHandles), StartError> {
        Self::proxy_inheriting(cfg, inherited, Vec::new())
    }

    /// [`Server::proxy_on`], also inheriting `[[listener]]` sockets: each
    /// configured listener takes the inherited socket bound to its address,
    /// or binds its own.
    pub fn proxy_inheriting(
        cfg: &ProxyConfig,
        inherited: Option<std::net::TcpListener>,
        mut extra: Vec<std::net::TcpListener>,
    ) -> Result<(Server, ProxyHandles), StartError> {
        cfg.timeouts.validate()?;
        let shared = live::build(cfg, None, Instant::now()).map_err(|e| match e {
            live::BuildError::Policy { name, why } => StartError::Config(ConfigError::BadValue {
                flag: "--policy",
                value: name.into(),
                why,
            }),
            live::BuildError::HealthChecker(source) => StartError::Io {
                what: "starting the health checker".into(),
                source,
            },
        })?;
        let mode = shared.selector.name();
        let shared = Arc::new(shared);
        let live = Live::new(Arc::clone(&shared), cfg.clone());
        // Always, even with no host name yet: a reload may add one, and
        // each round reads the configuration running then. Detached: it
        // ends by itself once `live` is dropped.
        resolver::spawn(&live).map_err(io_err("starting the resolver"))?;
        let (csv, writer) = match &cfg.access_log {
            Some(log) => {
                let what = match &log.target {
                    LogTarget::File(path) => {
                        format!("cannot write the request log {}", path.display())
                    }
                    LogTarget::Stdout => "cannot start the request log".to_string(),
                };
                let (log, writer) =
                    csvlog::start(&log.target, log.format, mode).map_err(io_err(what))?;
                (Some(log), Some(writer))
            }
            None => (None, None),
        };
        let mut server = Self::start_on::<ProxySession>(&cfg.server, inherited, |id| {
            ProxyCtx::new(id, Arc::clone(&live), csv.clone())
        })?;
        server.acceptor.set_drain(cfg.timeouts.drain);
        for l in &cfg.listeners {
            let found = extra
                .iter()
                .position(|s| s.local_addr().is_ok_and(|a| a == l.address));
            let socket = match found {
                Some(i) => {
                    let s = extra.swap_remove(i);
                    s.set_nonblocking(true)
                        .map_err(io_err("setting up an inherited listener"))?;
                    mio::net::TcpListener::from_std(s)
                }
                None => bind(l.address, &cfg.server)?,
            };
            let addr = (server.acceptor.add_listener(socket))
                .map_err(io_err(format!("cannot listen on {}", l.address)))?;
            match &l.tls {
                Some(tls) => info!("listening on {addr} (https: {})", tls.summary),
                None => info!("listening on {addr}"),
            }
            server.listener_addrs.push(addr);
        }
        // A place freed on one worker can wake another worker's queue.
        shared.board.set_wakers(server.wakers.clone());
        if let Some(log) = csv {
            server
                .acceptor
                .on_reopen(ReopenHook(Box::new(move || log.reopen())));
        }
        let counters = writer.as_ref().map(|w| Arc::clone(&w.counters));
        server.writers.extend(writer.map(|w| Writer::Csv(w.thread)));
        Ok((
            server,
            ProxyHandles {
                shared,
                live,
                csv: counters,
            },
        ))
    }

    /// Binds the listener and starts `cfg.workers` workers running `S`.
    pub fn start<S: Session>(
        cfg: &ServerConfig,
        make_ctx: impl FnMut(usize) -> S::Ctx,
    ) -> Result<Server, StartError> {
        Self::start_on::<S>(cfg, None, make_ctx)
    }

    /// [`Server::start`], on an inherited listener when given one.
    fn start_on<S: Session>(
        cfg: &ServerConfig,
        inherited: Option<std::net::TcpListener>,
        mut make_ctx: impl FnMut(usize) -> S::Ctx,
    ) -> Result<Server, StartError> {
        if cfg.workers == 0 {
            return Err(ConfigError::ZeroWorkers.into());
        }
        let listener = match inherited {
            Some(l) => inherit(l, cfg.listen)?,
            None => bind(cfg.listen, cfg)?,
        };
        let accept_stats = Arc::new(AcceptStats::default());
        let mut workers = Vec::with_capacity(cfg.workers);
        for id in 0..cfg.workers {
            let handle = worker::spawn::<S>(id, make_ctx(id), Arc::clone(&accept_stats))
                .map_err(io_err(format!("starting worker {id}")))?;
            workers.push(handle);
        }
        let worker_stats = workers.iter().map(|w| Arc::clone(&w.stats)).collect();
        let wakers = workers.iter().map(|w| Arc::clone(&w.waker)).collect();
        let acceptor = Acceptor::new(listener, workers, Arc::clone(&accept_stats))
            .map_err(io_err("starting the acceptor"))?;
        let addr = acceptor
            .local_addr()
            .map_err(io_err("reading the listen address"))?;
        Ok(Server {
            acceptor,
            addr,
            listener_addrs: Vec::new(),
            accept_stats,
            worker_stats,
            wakers,
            writers: Vec::new(),
            upgrade: None,
        })
    }

    /// Serves `--upgrade-socket` on its own thread: a later process may
    /// take over this one's listener (and `admin`'s, when given): this one
    /// then stops accepting and drains, and [`Server::run`] returns.
    pub fn serve_upgrades(
        &mut self,
        start: upgrade::Start,
        admin: Option<(OwnedFd, SocketAddr)>,
    ) -> Result<(), StartError> {
        let listener = self
            .acceptor
            .listener_fd()
            .map_err(io_err("duplicating the listener for upgrades"))?;
        let mut fds = vec![("listen", listener, self.addr)];
        let extra = (self.acceptor.extra_fds())
            .map_err(io_err("duplicating the listeners for upgrades"))?;
        fds.extend(extra.into_iter().map(|(fd, addr)| ("listener", fd, addr)));
        fds.extend(admin.map(|(fd, addr)| ("admin", fd, addr)));
        let stop = self.acceptor.shutdown_handle();
        let on_handover = upgrade::OnHandover(Box::new(move || stop.shutdown()));
        let handle = upgrade::spawn(start, upgrade::Offer { fds }, on_handover)
            .map_err(io_err("starting the upgrade thread"))?;
        self.upgrade = Some(handle);
        Ok(())
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shared handles on the acceptor's and the workers' counters.
    pub fn live_stats(&self) -> LiveStats {
        LiveStats {
            accept: Arc::clone(&self.accept_stats),
            workers: self.worker_stats.clone(),
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.acceptor.shutdown_handle()
    }

    /// The reload path SIGHUP takes; give it to the admin endpoint so
    /// `POST /api/reload` takes the same one, and install the hook with
    /// [`Reloader::set`].
    pub fn reloader(&self) -> Reloader {
        self.acceptor.reloader()
    }

    /// Installs the signal handlers: SIGINT and SIGTERM stop the server
    /// gracefully; SIGUSR1 reopens the log files (for logrotate, as nginx
    /// does); SIGHUP runs the [`Reloader`] (with no reload hook installed it
    /// is logged as unsupported: it must not kill a daemon whose terminal
    /// went away); SIGXFSZ is ignored, so a
    /// log that reaches the file size limit fails its writes (counted)
    /// instead of killing the process.
    pub fn handle_signals(&mut self) -> Result<(), StartError> {
        let (read, write) =
            std::os::unix::net::UnixStream::pair().map_err(io_err("creating the signal pipe"))?;
        read.set_nonblocking(true)
            .map_err(io_err("creating the signal pipe"))?;
        write
            .set_nonblocking(true)
            .map_err(io_err("creating the signal pipe"))?;
        let flags = SignalFlags::default();
        let handled = [
            (SIGINT, "SIGINT", &flags.stop),
            (SIGTERM, "SIGTERM", &flags.stop),
            (SIGUSR1, "SIGUSR1", &flags.reopen),
            (SIGHUP, "SIGHUP", &flags.reload),
        ];
        for (sig, name, flag) in handled {
            let what = format!("installing the {name} handler");
            // The flag first: handlers run in registration order, so the
            // flag is set before the byte that wakes the acceptor.
            signal_hook::flag::register(sig, Arc::clone(flag)).map_err(io_err(what.clone()))?;
            let w = write.try_clone().map_err(io_err(what.clone()))?;
            signal_hook::low_level::pipe::register(sig, w).map_err(io_err(what))?;
        }
        let ignored = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(SIGXFSZ, ignored)
            .map_err(io_err("installing the SIGXFSZ handler"))?;
        self.acceptor
            .watch_signals(UnixStream::from_std(read), flags)
            .map_err(io_err("watching the signal pipe"))
    }

    /// Current counters.
    pub fn summary(&self) -> Summary {
        Summary::collect(
            &self.accept_stats,
            self.worker_stats.iter().map(Arc::as_ref),
        )
    }

    /// Accepts until shut down, then closes every connection, joins the
    /// workers and the log writer, and returns the final counters.
    pub fn run(self) -> Summary {
        let Server {
            acceptor,
            addr,
            listener_addrs: _,
            accept_stats,
            worker_stats,
            writers,
            upgrade,
            wakers: _,
        } = self;
        info!("accepting on {addr}");
        let workers = acceptor.run();
        // Closes this process's copy of the listener at once (the acceptor
        // closed its own), so that a stopping server refuses new clients.
        if let Some(u) = upgrade {
            u.stop();
        }
        for (i, w) in workers.into_iter().enumerate() {
            if w.thread.join().is_err() {
                error!("worker {i} panicked");
            }
        }
        // Workers (the only senders) are gone, so each writer drains and ends.
        for w in writers {
            w.join();
        }
        Summary::collect(&accept_stats, worker_stats.iter().map(Arc::as_ref))
    }

    /// The bound addresses of the `[[listener]]` tables, in order.
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.listener_addrs
    }

    /// Runs the server on a background thread (tests, embedding).
    pub fn spawn(self) -> io::Result<RunningServer> {
        let addr = self.addr;
        let listener_addrs = self.listener_addrs.clone();
        let handle = self.shutdown_handle();
        let accept_stats = Arc::clone(&self.accept_stats);
        let worker_stats = self.worker_stats.clone();
        let thread = thread::Builder::new()
            .name("tidegate-acceptor".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            addr,
            listener_addrs,
            handle,
            accept_stats,
            worker_stats,
            thread: Some(thread),
        })
    }
}

/// A server running on a background thread; stops when dropped.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    listener_addrs: Vec<SocketAddr>,
    handle: ShutdownHandle,
    accept_stats: Arc<AcceptStats>,
    worker_stats: Vec<Arc<WorkerStats>>,
    thread: Option<JoinHandle<Summary>>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound addresses of the `[[listener]]` tables, in order.
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.listener_addrs
    }

    /// Current counters, while running.
    pub fn summary(&self) -> Summary {
        Summary::collect(
            &self.accept_stats,
            self.worker_stats.iter().map(Arc::as_ref),
        )
    }

    /// Stops the server and returns its final counters.
    pub fn stop(mut self) -> Summary {
        self.stop_inner().unwrap_or_default()
    }

    fn stop_inner(&mut self) -> Option<Summary> {
        let thread = self.thread.take()?;
        self.handle.shutdown();
        thread.join().ok()
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
