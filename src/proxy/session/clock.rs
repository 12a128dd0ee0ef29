//! Deadlines: which timeout is next, and which side it blames when it fires.

use super::*;

impl<N: Net> ProxySession<N> {
    /// The next moment something times out.
    pub(super) fn deadline(&self, env: &Ev<'_, '_, N>) -> Instant {
        let t = &env.ctx.shared.timeouts;
        match &self.state {
            State::Idle(i) => match (i.head_started, i.paused_until) {
                (Some(started), Some(resume)) => resume.min(after(started, t.header)),
                (Some(started), None) => after(started, t.header),
                // A TLS handshake is part of the head: the header timeout.
                (None, _) if N::handshaking(&self.client.stream) => after(i.since, t.header),
                (None, _) if self.draining => after(i.since, t.idle.min(DRAIN_IDLE_GRACE)),
                (None, _) => after(i.since, t.idle),
            },
            State::Exchange(ex) if ex.connecting(env.ctx) => after(ex.conn_started, t.connect),
            State::Exchange(ex) if ex.waits_on_client(&self.client, &self.bufs) => {
                after(ex.last_progress, t.client)
            }
            State::Exchange(ex) => after(ex.last_progress, t.backend),
            State::Tunnel(tu) => after(tu.last_progress, t.tunnel),
            State::Closing(l) => after(l.started, LINGER),
        }
    }

    pub(super) fn schedule(&mut self, env: &mut Ev<'_, '_, N>) {
        let at = self.deadline(env);
        if self.timer_at.is_none_or(|t| at < t) {
            env.timers.schedule(at, self.key);
            self.timer_at = Some(at);
        }
    }

    /// A deadline passed: the side being waited on is at fault.
    pub(super) fn timed_out(&mut self, env: &mut Ev<'_, '_, N>) -> Result<(), CloseReason> {
        // Whatever was scheduled has fired (or was overtaken); re-arm later.
        self.timer_at = None;
        if let State::Idle(i) = &mut self.state
            && i.paused_until.is_some_and(|at| at <= env.now)
        {
            // The pause of a trickling head is over: read what piled up.
            i.paused_until = None;
            let tok = token(self.key, Side::Client);
            N::set_reading(&mut self.client.stream, env.registry, tok, true)
                .map_err(|_| CloseReason::Error)?;
            self.client.read_ready = true;
        }
        if self.deadline(env) > env.now {
            return Ok(());
        }
        let fault = match &self.state {
            State::Idle(i) if i.head_started.is_some() => {
                count(Fault::Client(ClientFault::Timeout), &env.ctx.shared.stats);
                self.answer_alone(408, LogOutcome::ClientTimeout, env);
                return Ok(());
            }
            State::Idle(_) if N::handshaking(&self.client.stream) => {
                N::handshake_timed_out(&mut self.client.stream);
                return Err(CloseReason::Done);
            }
            State::Idle(_) | State::Tunnel(_) | State::Closing(_) => {
                return Err(CloseReason::Done);
            }
            State::Exchange(ex) if ex.connecting(env.ctx) => {
                Fault::Backend(BackendFault::ConnectTimeout)
            }
            State::Exchange(ex) if ex.waits_on_client(&self.client, &self.bufs) => {
                Fault::Client(ClientFault::Timeout)
            }
            State::Exchange(_) => Fault::Backend(BackendFault::Timeout),
        };
        self.on_flow(Flow::Failed(fault), env).map(|_| ())
    }
}
