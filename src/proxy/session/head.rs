//! Idle: reading a request head, and the proxy's own answers to requests
//! no backend sees (bad heads, no backend to choose).

use super::*;

impl<N: Net> ProxySession<N> {
    /// Idle: parse a request head from the client's input and start its
    /// exchange.
    pub(super) fn parse_head(&mut self, env: &mut Ev<'_, '_, N>) -> Result<bool, CloseReason> {
        let State::Idle(idle) = &mut self.state else {
            return Ok(false);
        };
        if self.client.input.is_empty() {
            // Draining, an idle connection ends at its deadline (below).
            if self.client.eof {
                return Err(CloseReason::Done);
            }
            return Ok(false);
        }
        idle.head_started.get_or_insert(env.now);
        // httparse re-reads from the start: only call it when it can answer
        // (a head trickling in byte by byte is scanned once, not n times).
        let grew = self.client.input.len() > idle.scanned;
        if !self.client.eof && !http::parse_due(&self.client.input, &mut idle.scanned) {
            if !grew {
                return Ok(false);
            }
            idle.reads = idle.reads.saturating_add(1);
            let trickle = idle.reads >= TRICKLE_READS
                && self.client.input.len() < idle.reads as usize * TRICKLE_BYTES;
            if trickle && idle.paused_until.is_none() {
                let tok = token(self.key, Side::Client);
                if N::set_reading(&mut self.client.stream, env.registry, tok, false).is_ok() {
                    idle.paused_until = Some(after(env.now, TRICKLE_PAUSE));
                }
            }
            return Ok(false);
        }
        let close_backend = env.ctx.shared.backend_conn == crate::config::BackendConn::Close;
        let mut fields = [httparse::EMPTY_HEADER; http::MAX_HEADERS];
        let parsed = match http::parse_request(&self.client.input, &mut fields) {
            Ok(Some(p)) => {
                self.bufs.head.clear();
                let detail =
                    wants_detail(env.ctx).then(|| Box::new(detail_of(&p, self.client.peer)));
                let ctx = &mut *env.ctx;
                let mut head = p.head;
                let forward = if N::is_tls(&self.client.stream) {
                    &ctx.shared.forward_https
                } else {
                    &ctx.shared.forward
                };
                head.request_id = p.write_head(
                    self.client.peer.ip(),
                    close_backend,
                    forward,
                    &mut ctx.ids,
                    &mut self.bufs.head,
                );
                Ok(Some((head, detail)))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match parsed {
            // The client gave up mid-head.
            Ok(None) if self.client.eof => {
                self.reject(HttpError::BadRequest("incomplete request head"), env);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(e) => {
                self.reject(e, env);
                Ok(true)
            }
            Ok(Some((head, detail))) => {
                self.client.input.drain(..head.head_len);
                let shared = &env.ctx.shared;
                ProxyStats::bump(&shared.stats.requests);
                shared.retry_budget.request(env.now);
                let Some(b) = shared.choose(env.now, None) else {
                    // Every backend is drained: 503, and no backend blamed.
                    self.answer_chosen_none(env);
                    return Ok(true);
                };
                let mut ex = Exchange::new(head, env.now);
                ex.log = detail;
                ex.attach(b, self.key, &mut self.bufs, env);
                self.state = State::Exchange(ex);
                Ok(true)
            }
        }
    }

    /// Answers a bad request with its status and closes afterwards.
    pub(super) fn reject(&mut self, e: HttpError, env: &mut Ev<'_, '_, N>) {
        let status = e.status();
        log::debug!("{}: rejected request: {e} -> {status}", self.client.peer);
        self.answer_alone(status, LogOutcome::BadRequest, env);
    }

    /// The proxy's own answer to a request no backend saw, then close.
    pub(super) fn answer_alone(
        &mut self,
        status: u16,
        outcome: LogOutcome,
        env: &mut Ev<'_, '_, N>,
    ) {
        let answer = http::error_response(status);
        self.client.out.push(answer);
        let stats = &env.ctx.shared.stats;
        ProxyStats::bump(&stats.requests);
        count_status(status, stats);
        let detail = wants_detail(env.ctx).then(|| {
            let bytes_in = self.client.input.len() as u64;
            Box::new(Detail::unparsed(
                self.client.peer,
                bytes_in,
                answer.len() as u64,
            ))
        });
        log_row(env, None, Duration::ZERO, status, outcome, detail);
        self.begin_closing(env.now);
    }

    /// No backend may take the request (all drained): 503, then close.
    /// The request was counted already.
    pub(super) fn answer_chosen_none(&mut self, env: &mut Ev<'_, '_, N>) {
        self.client.out.push(http::error_response(503));
        count_status(503, &env.ctx.shared.stats);
        let detail = wants_detail(env.ctx).then(|| {
            let bytes_in = self.client.input.len() as u64;
            Box::new(Detail::unparsed(self.client.peer, bytes_in, 0))
        });
        log_row(
            env,
            None,
            Duration::ZERO,
            503,
            LogOutcome::ConnectFailed,
            detail,
        );
        self.begin_closing(env.now);
    }
}

/// The access log's copy of a parsed request's line and fields.
pub(super) fn detail_of(p: &http::ParsedRequest<'_, '_>, client: SocketAddr) -> Detail {
    let field = |name: &str| {
        p.headers()
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| accesslog::bounded_bytes(h.value))
    };
    let mut d = Detail::unparsed(client, 0, 0);
    d.method = accesslog::bounded(p.method_str());
    d.path = accesslog::bounded(p.target());
    d.minor = p.head.minor;
    d.user_agent = field("user-agent");
    d.referer = field("referer");
    d
}
