//! How an exchange ends when something goes wrong: fail over once to
//! another backend, answer 502/504 ourselves, cut a broken response short,
//! or drop the request because the client left. Every failure is counted
//! and logged at warn, rate-limited per worker.

use std::sync::atomic::AtomicU64;

use super::ProxyStats;
use super::csvlog::Outcome as LogOutcome;
use super::exchange::{Exchange, Resp};
use super::session::{Env2, ProxySession};
use crate::balance::Outcome;
use crate::http;
use crate::metrics::End;
use crate::runtime::session::CloseReason;

impl Exchange {
    /// The backend failed before any response byte was relayed: retry once
    /// on another backend if nothing of the body is lost, else 502.
    pub(super) fn fail_over(s: &mut ProxySession, env: &mut Env2<'_, '_>, why: LogOutcome) {
        let Some(ex) = s.exchange.as_mut() else {
            return;
        };
        let now = env.now;
        let reused = ex
            .upstream
            .and_then(|k| env.ctx.upstreams.get(k))
            .is_some_and(|u| u.uses > 1);
        let elapsed = now.saturating_duration_since(ex.conn_started);
        Self::release(s, env, false);
        let Some(ex) = s.exchange.as_mut() else {
            return;
        };
        let shared = &env.ctx.shared;
        // A stale pooled connection is not the backend's fault.
        if !reused {
            shared
                .selector
                .observe(ex.backend, Outcome::Failure { elapsed }, now);
        }
        ProxyStats::bump(match why {
            LogOutcome::ConnectFailed => &shared.stats.connect_failures,
            _ => &shared.stats.backend_resets,
        });
        // A stale pooled connection says nothing about the backend.
        let end = if reused { End::Abandoned } else { End::Failed };
        let can_retry = !ex.retried && !ex.relayed && ex.body_sent == 0;
        if can_retry && shared.retry_budget.try_retry(now) {
            // Prefer another backend even after a stale pooled connection:
            // when a backend dies, all its pooled connections fail at once
            // and it would fail the retry too. With no other backend, a
            // stale pooled connection is retried on a fresh one to the same.
            let other = shared.choose(now, Some(ex.backend));
            if let Some(next) = other.or(reused.then_some(ex.backend)) {
                ProxyStats::bump(&shared.stats.retries);
                ex.end_attempt(env, 0, elapsed, end);
                ex.retried = true;
                ex.first_write = None;
                ex.backend_eof = false;
                s.bufs.bout.clear();
                s.bufs.bout.push(&s.bufs.head);
                s.bufs.bin.clear();
                ex.attach(Some(next), s.key, env);
                return;
            }
        }
        Self::answer_error(s, env, 502, why);
    }

    /// The backend answered with something that is not HTTP.
    pub(super) fn bad_response(s: &mut ProxySession, env: &mut Env2<'_, '_>, why: &str) {
        let what = format!("bad response: {why}");
        Self::give_up(
            s,
            env,
            &what,
            |st| &st.bad_responses,
            502,
            LogOutcome::BadResponse,
        );
    }

    /// The deadline passed: connect timeout fails over, a silent backend 504s.
    pub(super) fn timed_out(
        s: &mut ProxySession,
        env: &mut Env2<'_, '_>,
    ) -> Result<(), CloseReason> {
        let Some(ex) = s.exchange.as_ref() else {
            return Ok(());
        };
        let connecting = ex
            .upstream
            .and_then(|k| env.ctx.upstreams.get(k))
            .is_some_and(|u| u.connecting);
        if connecting {
            warn_backend(env, ex.backend, "connect timed out");
            Self::fail_over(s, env, LogOutcome::ConnectFailed);
            return Ok(());
        }
        if matches!(ex.resp, Resp::Body(_)) {
            return Self::truncated(s, env, LogOutcome::BackendReset).map(|_| ());
        }
        let what = "no response within --backend-timeout";
        Self::give_up(s, env, what, |st| &st.timeouts, 504, LogOutcome::Timeout);
        Ok(())
    }

    /// The backend failed in a way a retry cannot fix: blame it, count it,
    /// drop its connection and answer `status` ourselves.
    fn give_up(
        s: &mut ProxySession,
        env: &mut Env2<'_, '_>,
        what: &str,
        counter: fn(&ProxyStats) -> &AtomicU64,
        status: u16,
        why: LogOutcome,
    ) {
        let Some(ex) = s.exchange.as_ref() else {
            return;
        };
        let (backend, elapsed) = (
            ex.backend,
            env.now.saturating_duration_since(ex.conn_started),
        );
        warn_backend(env, backend, what);
        env.ctx
            .shared
            .selector
            .observe(backend, Outcome::Failure { elapsed }, env.now);
        ProxyStats::bump(counter(&env.ctx.shared.stats));
        Self::release(s, env, false);
        Self::answer_error(s, env, status, why);
    }

    /// Sends the proxy's own error response and closes afterwards.
    pub(super) fn answer_error(
        s: &mut ProxySession,
        env: &mut Env2<'_, '_>,
        status: u16,
        why: LogOutcome,
    ) {
        let Some(mut ex) = s.exchange.take() else {
            return;
        };
        let latency = env
            .now
            .saturating_duration_since(ex.first_write.unwrap_or(ex.conn_started));
        ex.end_attempt(env, status, latency, End::Failed);
        ProxyStats::bump(&env.ctx.shared.stats.status_5xx);
        s.log_row(env, Some(ex.backend), latency, status, why);
        s.cout.push(http::error_response(status));
        s.begin_closing();
    }

    /// The response broke (cut short, or a bad body: `why`). If no byte of
    /// its final head has reached the client yet, that head is dropped and
    /// the client gets a 502 instead; otherwise the client can only be told
    /// by closing its connection.
    pub(super) fn truncated(
        s: &mut ProxySession,
        env: &mut Env2<'_, '_>,
        why: LogOutcome,
    ) -> Result<bool, CloseReason> {
        if let Some(ex) = s.exchange.as_ref() {
            let (backend, status) = (ex.backend, ex.status);
            let elapsed = env.now.saturating_duration_since(ex.conn_started);
            warn_backend(env, backend, "response cut short");
            env.ctx
                .shared
                .selector
                .observe(backend, Outcome::Failure { elapsed }, env.now);
            let stats = &env.ctx.shared.stats;
            ProxyStats::bump(match why {
                LogOutcome::BadResponse => &stats.bad_responses,
                _ => &stats.backend_resets,
            });
            let head_queued = matches!(ex.resp, Resp::Body(_));
            if !head_queued || s.bytes_out <= ex.resp_at {
                if head_queued {
                    // Unqueue the head and body bytes relayed so far.
                    let queued = s.bytes_out + s.cout.owed() as u64 - ex.resp_at;
                    let tail = s.cout.tail();
                    tail.truncate(tail.len().saturating_sub(queued as usize));
                }
                Self::release(s, env, false);
                Self::answer_error(s, env, 502, why);
                return Ok(true);
            }
            s.log_row(env, Some(backend), elapsed, status, LogOutcome::Truncated);
            if let Some(ex) = s.exchange.as_mut() {
                ex.end_attempt(env, status, elapsed, End::Failed);
            }
        }
        Self::release(s, env, false);
        s.exchange = None;
        Err(CloseReason::Error)
    }

    /// The client left before its response was complete.
    pub(super) fn client_gone(s: &mut ProxySession, env: &mut Env2<'_, '_>) -> CloseReason {
        Self::abort(s, env);
        CloseReason::Done
    }

    /// Ends an unfinished exchange because its client connection closes.
    pub(super) fn abort(s: &mut ProxySession, env: &mut Env2<'_, '_>) {
        let Some(ex) = s.exchange.as_ref() else {
            return;
        };
        let elapsed = env
            .now
            .saturating_duration_since(ex.first_write.unwrap_or(ex.conn_started));
        // Not the backend's doing: no sample (an unanswered probe slot is
        // re-claimable after balance::PROBE_TIMEOUT).
        ProxyStats::bump(&env.ctx.shared.stats.client_aborts);
        // 499: nginx's code for "client closed request".
        s.log_row(
            env,
            Some(ex.backend),
            elapsed,
            499,
            LogOutcome::ClientAborted,
        );
        if let Some(ex) = s.exchange.as_mut() {
            ex.end_attempt(env, 499, elapsed, End::Abandoned);
        }
        Self::release(s, env, false);
        s.exchange = None;
    }
}

/// Logs backend trouble at warn, at most once per interval per worker.
pub(super) fn warn_backend(env: &mut Env2<'_, '_>, backend: usize, what: &str) {
    if let Some(held) = env.ctx.warn.allow(env.now) {
        let name = env
            .ctx
            .shared
            .backends
            .get(backend)
            .map_or("?", |b| b.name.as_str());
        log::warn!("backend {name}: {what} ({held} similar warnings suppressed)");
    }
}
