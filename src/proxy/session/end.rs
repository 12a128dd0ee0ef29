//! How an exchange ends: relayed in full, switched to a tunnel, or failed
//! with a fault owned by one side (retry, answer, or close).

use super::*;

impl<N: Net> ProxySession<N> {
    /// The response was relayed in full.
    pub(super) fn complete(&mut self, env: &mut Ev<'_, '_, N>) {
        let now = env.now;
        let Some(mut ex) = self.take_exchange(now) else {
            return;
        };
        let (latency, status) = (ex.latency(now), ex.status);
        end_attempt(&mut ex, env, status, latency, End::Answered);
        env.ctx.record_latency(latency, now);
        // A 5xx is a failed attempt for routing, however fast it came.
        let outcome = if status >= 500 {
            Outcome::Failure { elapsed: latency }
        } else {
            Outcome::Success { latency }
        };
        observe(&mut ex, outcome, env);
        let shared = &env.ctx.shared;
        count_status(status, &shared.stats);
        let detail = ex.take_detail(now);
        log_row(env, Some(&ex), latency, status, LogOutcome::Ok, detail);
        let reuse = shared.backend_conn == crate::config::BackendConn::Persistent
            && ex.resp_keep_alive
            && ex.req_done
            && !ex.backend_eof
            && self.bufs.bin.is_empty();
        release(&mut ex.upstream, env, reuse);
        self.bufs.bin.clear();
        if !ex.close_after && ex.req_done && !self.draining {
            self.state = State::Idle(Idle::new(now));
        } else {
            self.begin_closing(now);
        }
    }

    /// 101 relayed: the connection becomes a tunnel.
    pub(super) fn switch(&mut self, env: &mut Ev<'_, '_, N>) {
        let now = env.now;
        let Some(mut ex) = self.take_exchange(now) else {
            return;
        };
        let (latency, status) = (ex.latency(now), ex.status);
        end_attempt(&mut ex, env, status, latency, End::Answered);
        observe(&mut ex, Outcome::Success { latency }, env);
        let shared = &env.ctx.shared;
        count_status(status, &shared.stats);
        ProxyStats::bump(&shared.stats.tunnels);
        ProxyStats::bump(&shared.stats.tunnels_open);
        let detail = ex.take_detail(now);
        log_row(
            env,
            Some(&ex),
            latency,
            status,
            LogOutcome::Upgraded,
            detail,
        );
        let Some(upstream) = ex.upstream.take() else {
            self.begin_closing(now);
            return;
        };
        self.client.input.shrink_to(http::MAX_HEAD);
        let t = Tunnel::open(upstream, ex.backend, &mut self.client, &mut self.bufs, now);
        self.state = State::Tunnel(t);
    }

    /// The backend failed this attempt: retry where RFC 9110 allows, else
    /// answer or cut the response short. The backend is blamed, except for
    /// a pooled connection it had closed before we wrote to it.
    pub(super) fn backend_failed(
        &mut self,
        f: BackendFault,
        env: &mut Ev<'_, '_, N>,
    ) -> Result<bool, CloseReason> {
        let now = env.now;
        let Some(mut ex) = self.take_exchange(now) else {
            return Ok(false);
        };
        let progress = ex.progress();
        // A stale pooled connection says nothing about the backend.
        let stale = ex.reused(env.ctx) && f == BackendFault::Reset && !ex.relayed;
        release(&mut ex.upstream, env, false);
        if !stale {
            blame(&mut ex, f, env);
        }
        count(Fault::Backend(f), &env.ctx.shared.stats);
        let end = if stale { End::Abandoned } else { End::Failed };
        let elapsed = ex.latency(now);
        // The failed backend as the current configuration knows it (a
        // reload may have moved or removed it since the attempt began).
        let failed = env.ctx.current_index(ex.generation, ex.backend);
        let shared = &env.ctx.shared;
        // A stale pooled connection is not a backend failure: its retry does
        // not spend the retry budget (still at most one per request).
        if fault::may_retry(ex.req.method, f, progress, ex.retried, ex.body_sent > 0)
            && (stale || shared.retry_budget.try_retry(now))
        {
            // Prefer another backend even after a stale pooled connection:
            // when a backend dies, all its pooled connections fail at once.
            // With no other, a stale one is retried on a fresh connection.
            let other = match failed {
                Some(b) => shared.choose(now, Some(b)),
                None => shared.choose(now, None),
            };
            // The retry needs a place under its backend's limit (the
            // failed one keeps its place for a retry on itself).
            if let Some(next) = other.or(failed.filter(|_| stale))
                && let Some(slot) = if Some(next) == failed {
                    ex.slot.take()
                } else {
                    shared.slots.try_acquire(next)
                }
            {
                ProxyStats::bump(&shared.stats.retries);
                end_attempt(&mut ex, env, 0, elapsed, end);
                ex.slot = Some(slot);
                ex.retried = true;
                ex.relayed = false;
                ex.resp = Resp::AwaitHead;
                ex.attach(next, self.key, &mut self.bufs, env);
                self.state = State::Exchange(ex);
                return Ok(true);
            }
        }
        self.give_up(ex, Fault::Backend(f), end, env)
    }

    /// The client failed: nothing is held against the backend, whose
    /// connection is closed (its state mid-request is unknown).
    pub(super) fn client_failed(
        &mut self,
        f: ClientFault,
        env: &mut Ev<'_, '_, N>,
    ) -> Result<bool, CloseReason> {
        let Some(mut ex) = self.take_exchange(env.now) else {
            return Ok(false);
        };
        if f == ClientFault::Abort {
            abandon(ex, env);
            return Err(CloseReason::Done);
        }
        release(&mut ex.upstream, env, false);
        count(Fault::Client(f), &env.ctx.shared.stats);
        self.give_up(ex, Fault::Client(f), End::Abandoned, env)
    }

    /// No retry: answer with the fault's status if no byte of a final
    /// response reached the client yet (unqueueing what was queued), else
    /// close, the only way left to say the response is incomplete.
    pub(super) fn give_up(
        &mut self,
        mut ex: Exchange,
        f: Fault,
        end: End,
        env: &mut Ev<'_, '_, N>,
    ) -> Result<bool, CloseReason> {
        let head_queued = matches!(ex.resp, Resp::Body(_));
        let unsent = !head_queued || self.client.bytes_out <= ex.resp_at;
        let progress = if unsent {
            Progress::Sent
        } else {
            Progress::Answered
        };
        let elapsed = ex.latency(env.now);
        match fault::recovery(f, progress) {
            Recovery::Answer(status) => {
                if head_queued {
                    // Unqueue the head and body bytes relayed so far.
                    let queued = self.client.bytes_out + self.client.out.owed() as u64 - ex.resp_at;
                    let tail = self.client.out.tail();
                    tail.truncate(tail.len().saturating_sub(queued as usize));
                }
                end_attempt(&mut ex, env, status, elapsed, end);
                count_status(status, &env.ctx.shared.stats);
                let answer = http::error_response(status);
                ex.bytes_out = answer.len() as u64;
                let detail = ex.take_detail(env.now);
                log_row(env, Some(&ex), elapsed, status, f.outcome(), detail);
                self.client.out.push(answer);
                self.begin_closing(env.now);
                Ok(true)
            }
            Recovery::Close => {
                let status = ex.status;
                end_attempt(&mut ex, env, status, elapsed, end);
                let outcome = match f {
                    Fault::Backend(_) => LogOutcome::Truncated,
                    Fault::Client(_) => f.outcome(),
                };
                let detail = ex.take_detail(env.now);
                log_row(env, Some(&ex), elapsed, status, outcome, detail);
                Err(match f {
                    Fault::Backend(_) => CloseReason::Error,
                    Fault::Client(_) => CloseReason::Done,
                })
            }
        }
    }
}

/// The client left mid-exchange: counted and logged as its abort (499),
/// nothing held against the backend, whose connection is closed.
pub(super) fn abandon<N: Net>(mut ex: Exchange, env: &mut Ev<'_, '_, N>) {
    let elapsed = ex.latency(env.now);
    count(Fault::Client(ClientFault::Abort), &env.ctx.shared.stats);
    let detail = ex.take_detail(env.now);
    log_row(
        env,
        Some(&ex),
        elapsed,
        499,
        LogOutcome::ClientAbort,
        detail,
    );
    end_attempt(&mut ex, env, 499, elapsed, End::Abandoned);
    release(&mut ex.upstream, env, false);
}
