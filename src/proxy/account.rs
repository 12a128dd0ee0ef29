//! Bookkeeping at the end of an attempt or a request: the metrics, the
//! selector, the ejector, the counters and the request log each hear about
//! it once, and only a backend's own fault is held against it.

use std::time::{Duration, SystemTime};

use super::accesslog::Detail;
use super::csvlog::{Outcome as LogOutcome, Row};
use super::exchange::Exchange;
use super::fault::{BackendFault, ClientFault, Fault};
use super::net::Net;
use super::{ProxyCtx, ProxyStats};
use crate::balance::Outcome;
use crate::metrics::End;
use crate::runtime::session::Env;
use crate::runtime::shard::Counter;

/// Ends the current attempt in the metrics and the ejector of the
/// generation it started in; later calls do nothing, so every exit path
/// may call it. The selector's ticket (`ex.ticket`) is not touched: its
/// `observe` consumes it, or dropping it releases the in-flight count.
pub fn end_attempt<N: Net>(
    ex: &mut Exchange,
    env: &mut Env<'_, ProxyCtx<N>>,
    status: u16,
    latency: Duration,
    end: End,
) {
    let at_send = ex.slot.as_ref().map_or(0, |s| s.at_send());
    if let Some(slot) = ex.slot.take() {
        env.ctx.released(slot, env.timers, env.now);
    }
    let Some(b) = ex.attempt.take() else { return };
    let shared = env.ctx.generation(ex.generation);
    // `adaptive`: an answer's latency against the load it was sent at
    // (a 5xx says nothing about capacity; failures are the ejector's).
    if let Some(learned) = &shared.learned
        && matches!(end, End::Answered)
        && status < 500
        && at_send > 0
    {
        learned.record(usize::from(env.ctx.worker), b, latency, at_send);
    }
    shared.metrics.finished(
        usize::from(env.ctx.worker),
        b,
        status,
        latency,
        end,
        SystemTime::now(),
    );
    match end {
        End::Answered => shared.ejector.record_answer(b, status, env.now),
        End::Failed => shared.ejector.record(b, false, env.now),
        End::Abandoned => shared.ejector.release(b),
    }
    let current = env.ctx.shared.generation;
    env.ctx.gens.ended(ex.generation, current);
}

/// A routing sample for the attempt, to the selector of its generation
/// (the one that issued its ticket); consumes the ticket.
pub fn observe<N: Net>(ex: &mut Exchange, outcome: Outcome, env: &Env<'_, ProxyCtx<N>>) {
    let Some(ticket) = ex.ticket.take() else {
        return;
    };
    env.ctx
        .generation(ex.generation)
        .selector
        .observe(ticket, outcome, env.now);
}

/// A backend's failed attempt as a sample for the selector, and a warning
/// (rate-limited per worker).
pub fn blame<N: Net>(ex: &mut Exchange, fault: BackendFault, env: &mut Env<'_, ProxyCtx<N>>) {
    let elapsed = env.now.saturating_duration_since(ex.conn_started);
    observe(ex, Outcome::Failure { elapsed }, env);
    if let Some(held) = env.ctx.warn.allow(env.now) {
        let name = env
            .ctx
            .generation(ex.generation)
            .backends
            .get(ex.backend)
            .map_or("?", |b| b.name.as_str());
        log::warn!(
            "backend {name}: {} ({held} similar warnings suppressed)",
            describe(fault)
        );
    }
}

/// Counts a failure under its side's counter.
pub fn count(fault: Fault, stats: &ProxyStats) {
    ProxyStats::bump(counter(fault, stats));
}

fn counter(fault: Fault, s: &ProxyStats) -> &Counter {
    match fault {
        Fault::Backend(BackendFault::ConnectFailed | BackendFault::ConnectTimeout) => {
            &s.connect_failures
        }
        Fault::Backend(BackendFault::Reset) => &s.backend_resets,
        Fault::Backend(BackendFault::BadResponse) => &s.bad_responses,
        Fault::Backend(BackendFault::Timeout) => &s.backend_timeouts,
        Fault::Backend(BackendFault::Unavailable) => &s.unavailable,
        Fault::Client(ClientFault::Timeout) => &s.client_timeouts,
        Fault::Client(ClientFault::Abort) => &s.client_aborts,
        Fault::Client(ClientFault::BadBody) => &s.bad_bodies,
    }
}

fn describe(fault: BackendFault) -> &'static str {
    match fault {
        BackendFault::ConnectFailed => "connect failed",
        BackendFault::ConnectTimeout => "connect timed out",
        BackendFault::Reset => "connection reset or closed before a whole response",
        BackendFault::Timeout => "no progress within --backend-timeout",
        BackendFault::BadResponse => "bad response",
        BackendFault::Unavailable => "503 with Retry-After",
    }
}

/// Counts a status the client received, by class.
pub fn count_status(status: u16, stats: &ProxyStats) {
    ProxyStats::bump(match status {
        500.. => &stats.status_5xx,
        400..=499 => &stats.status_4xx,
        300..=399 => &stats.status_3xx,
        200..=299 => &stats.ok,
        _ => &stats.status_1xx,
    });
}

/// One row of the request log, if it is on; `detail` only where the
/// log's format wants it (see [`wants_detail`]).
pub fn log_row<N: Net>(
    env: &Env<'_, ProxyCtx<N>>,
    ex: Option<&Exchange>,
    latency: Duration,
    status: u16,
    outcome: LogOutcome,
    detail: Option<Box<Detail>>,
) {
    if let Some(csv) = &env.ctx.csv {
        let backend = ex.and_then(|ex| {
            let shared = env.ctx.generation(ex.generation);
            shared.backends.get(ex.backend).map(|b| b.addr)
        });
        csv.send(Row {
            at: SystemTime::now(),
            backend,
            latency,
            status,
            outcome,
            worker: env.ctx.worker,
            queue_wait: ex.map_or(Duration::ZERO, |ex| ex.queue_wait),
            detail,
        });
    }
}

/// Whether log rows carry a [`Detail`] (json and combined formats).
pub fn wants_detail<N: Net>(ctx: &ProxyCtx<N>) -> bool {
    ctx.csv.as_ref().is_some_and(|l| l.detail)
}
