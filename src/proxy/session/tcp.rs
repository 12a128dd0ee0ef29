//! The session on real TCP sockets: what the worker loop calls.

use std::sync::Arc;

use super::*;
use crate::proxy::net::Stream;
use crate::tls::server::ServerTls;

impl Session for ProxySession<Tcp> {
    type Ctx = ProxyCtx<Tcp>;

    fn open(conn: Accepted, key: usize, env: &mut Env<'_, ProxyCtx<Tcp>>) -> std::io::Result<Self> {
        let mut stream = conn.stream;
        env.registry.register(
            &mut stream,
            token(key, Side::Client),
            mio::Interest::READABLE | mio::Interest::WRITABLE,
        )?;
        env.ctx.refresh();
        // An HTTPS listener's connections start with a TLS handshake, under
        // the certificates of the current configuration generation.
        let stream = match env.ctx.shared.tls.get(conn.listener) {
            Some(Some(config)) => {
                let stats = Arc::clone(&env.ctx.shared.stats.tls);
                let tls = ServerTls::new(stream, Arc::clone(config), stats)
                    .map_err(std::io::Error::other)?;
                Stream::Tls(Box::new(tls))
            }
            _ => Stream::Plain(stream),
        };
        Ok(ProxySession::start(stream, conn.peer, key, env))
    }

    fn ready(&mut self, ev: Ready, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Step {
        self.on_ready(ev, env)
    }

    fn timeout(&mut self, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Step {
        self.on_timeout(env)
    }

    fn drain(&mut self, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Step {
        self.on_drain(env)
    }

    fn housekeep(ctx: &mut ProxyCtx<Tcp>, _now: Instant) {
        ctx.upstreams.sweep();
    }

    fn route(key: usize, side: Side, ready: Ready, env: &mut Env<'_, ProxyCtx<Tcp>>) -> Route {
        route(key, side, ready, env)
    }

    fn close(self, reason: CloseReason, env: &mut Env<'_, ProxyCtx<Tcp>>) {
        self.on_close(reason, env);
    }
}

/// Backend tokens belong to the worker's pool: readiness goes to the
/// session owning the connection, or to the pool for an idle one.
pub fn route<N: Net>(key: usize, side: Side, ready: Ready, env: &mut Ev<'_, '_, N>) -> Route {
    if side == Side::Client {
        return Route::To(key, side);
    }
    match env.ctx.upstreams.get(key).map(|u| u.owner) {
        Some(Some(owner)) => Route::To(owner, Side::Backend),
        Some(None) => {
            if ready.readable {
                let ctx = &mut *env.ctx;
                ctx.upstreams.on_idle_event(key, &mut ctx.scratch);
            }
            Route::Handled
        }
        None => Route::Handled,
    }
}
