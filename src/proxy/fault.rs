//! Who broke an exchange, and what follows from it. Pure: no sockets, no
//! clocks, so every rule here is table-tested.
//!
//! Every failure of a proxied request is a [`Fault`] owned by one side.
//! Only [`Fault::Backend`] feeds the selector, the ejector and the
//! backend's failure metrics; a client's fault (a stall, an abort, a bad
//! body) says nothing about the backend and is never blamed on it.
//!
//! Retries follow RFC 9110 §9.2.2: an idempotent request may be sent again
//! (once, elsewhere) if it failed before any response byte reached the
//! client; any other request only if not one byte of it was written to a
//! backend, so it cannot have been processed.

use super::csvlog::Outcome;
use crate::http::Method;

/// A failure on the client's side of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// No progress for `--client-timeout` mid-body or while its response
    /// waits to be read: 408 if nothing was answered yet, else a close.
    Timeout,
    /// The client closed or reset before its response was complete.
    Abort,
    /// The request body broke its own framing (bad chunk, early EOF): 400.
    BadBody,
}

/// A failure on the backend's side of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendFault {
    /// The connect was refused or failed.
    ConnectFailed,
    /// The connect did not finish within `--connect-timeout`.
    ConnectTimeout,
    /// The connection was reset, or closed before a whole response.
    Reset,
    /// No progress on the backend side for `--backend-timeout`.
    Timeout,
    /// The backend sent something that is not a valid HTTP response.
    BadResponse,
    /// 503 with `Retry-After`: the backend asks for the request elsewhere.
    Unavailable,
}

/// A failure, owned by the side that caused it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Client(ClientFault),
    Backend(BackendFault),
}

/// How far an attempt got; decides whether it may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Not one request byte was written to this backend connection.
    Unsent,
    /// Request bytes were written; no response byte reached the client.
    Sent,
    /// Part of a response reached (or is queued for) the client.
    Answered,
}

/// What the session does about a backend fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Answer the client with this status and close.
    Answer(u16),
    /// A response is already under way: the only signal left is a close.
    Close,
}

impl Fault {
    /// The side that owns the failure, as logged (`client` / `backend`).
    pub fn side(self) -> &'static str {
        match self {
            Fault::Client(_) => "client",
            Fault::Backend(_) => "backend",
        }
    }

    /// Whether the backend is blamed: fed to the selector and the ejector
    /// as a failed attempt and counted in its failure metrics.
    pub fn blames_backend(self) -> bool {
        matches!(self, Fault::Backend(_))
    }

    /// The `outcome` column of the request logs.
    pub fn outcome(self) -> Outcome {
        match self {
            Fault::Client(ClientFault::Timeout) => Outcome::ClientTimeout,
            Fault::Client(ClientFault::Abort) => Outcome::ClientAbort,
            Fault::Client(ClientFault::BadBody) => Outcome::BadRequest,
            Fault::Backend(BackendFault::ConnectFailed | BackendFault::ConnectTimeout) => {
                Outcome::ConnectFailed
            }
            Fault::Backend(BackendFault::Reset) => Outcome::BackendReset,
            Fault::Backend(BackendFault::Timeout) => Outcome::BackendTimeout,
            Fault::Backend(BackendFault::BadResponse) => Outcome::BadResponse,
            Fault::Backend(BackendFault::Unavailable) => Outcome::Ok,
        }
    }

    /// The status the proxy answers with when nothing was relayed yet.
    pub fn status(self) -> u16 {
        match self {
            Fault::Client(ClientFault::Timeout) => 408,
            // nginx's "client closed request": nobody reads it, but the
            // logs and the metrics need a code.
            Fault::Client(ClientFault::Abort) => 499,
            Fault::Client(ClientFault::BadBody) => 400,
            Fault::Backend(BackendFault::Timeout) => 504,
            Fault::Backend(BackendFault::Unavailable) => 503,
            Fault::Backend(_) => 502,
        }
    }
}

impl BackendFault {
    /// Whether a fresh attempt elsewhere could succeed at all: a backend
    /// that timed out may still be processing the request, so it is never
    /// repeated (nginx's `proxy_next_upstream` leaves `timeout` to a connect).
    fn retryable(self) -> bool {
        !matches!(self, BackendFault::Timeout | BackendFault::BadResponse)
    }
}

/// May a request that failed this way be sent again? RFC 9110 §9.2.2.
///
/// - never twice (`retried`), never once a response byte went out, never
///   once request body bytes were consumed (they are not kept for a replay);
/// - an idempotent method, if the fault is one a retry can fix;
/// - any other method only if not one byte reached the backend.
pub fn may_retry(
    method: Method,
    fault: BackendFault,
    progress: Progress,
    retried: bool,
    body_forwarded: bool,
) -> bool {
    if retried || body_forwarded || !fault.retryable() {
        return false;
    }
    match progress {
        Progress::Answered => false,
        Progress::Unsent => true,
        Progress::Sent => method.is_idempotent(),
    }
}

/// What to do about `fault` once no retry is possible.
pub fn recovery(fault: Fault, progress: Progress) -> Recovery {
    match progress {
        Progress::Answered => Recovery::Close,
        Progress::Unsent | Progress::Sent => Recovery::Answer(fault.status()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BackendFault::*;
    use Method::*;
    use Progress::*;

    #[test]
    fn retries_follow_rfc_9110_9_2_2() {
        // (method, fault, progress, retried, body forwarded, may retry)
        let table = [
            // Idempotent: once, before any response byte.
            (Get, Reset, Sent, false, false, true),
            (Put, Reset, Sent, false, false, true),
            (Delete, Reset, Sent, false, false, true),
            (Head, ConnectFailed, Unsent, false, false, true),
            (Options, Unavailable, Sent, false, false, true),
            (Trace, Reset, Sent, false, false, true),
            (Get, Reset, Sent, true, false, false),
            (Get, Reset, Answered, false, false, false),
            (Put, Reset, Sent, false, true, false),
            // Non-idempotent: only when nothing reached the backend.
            (Post, Reset, Sent, false, false, false),
            (Patch, Reset, Sent, false, false, false),
            (Other, Reset, Sent, false, false, false),
            (Post, Unavailable, Sent, false, false, false),
            (Post, ConnectFailed, Unsent, false, false, true),
            (Post, ConnectTimeout, Unsent, false, false, true),
            (Patch, Reset, Unsent, false, false, true),
            (Post, ConnectFailed, Unsent, true, false, false),
            // A silent or babbling backend may still be working on it.
            (Get, Timeout, Sent, false, false, false),
            (Get, BadResponse, Sent, false, false, false),
        ];
        for (method, fault, progress, retried, body, want) in table {
            assert_eq!(
                may_retry(method, fault, progress, retried, body),
                want,
                "{method:?} {fault:?} {progress:?} retried={retried} body={body}"
            );
        }
    }

    #[test]
    fn each_fault_has_one_owner_status_and_outcome() {
        // (fault, blames backend, status, outcome)
        let table = [
            (
                Fault::Client(ClientFault::Timeout),
                false,
                408,
                "client_timeout",
            ),
            (
                Fault::Client(ClientFault::Abort),
                false,
                499,
                "client_abort",
            ),
            (
                Fault::Client(ClientFault::BadBody),
                false,
                400,
                "bad_request",
            ),
            (Fault::Backend(ConnectFailed), true, 502, "connect_failed"),
            (Fault::Backend(ConnectTimeout), true, 502, "connect_failed"),
            (Fault::Backend(Reset), true, 502, "backend_reset"),
            (Fault::Backend(Timeout), true, 504, "backend_timeout"),
            (Fault::Backend(BadResponse), true, 502, "bad_response"),
            (Fault::Backend(Unavailable), true, 503, "ok"),
        ];
        for (fault, blamed, status, outcome) in table {
            assert_eq!(fault.blames_backend(), blamed, "{fault:?}");
            assert_eq!(fault.status(), status, "{fault:?}");
            assert_eq!(fault.outcome().as_str(), outcome, "{fault:?}");
            assert_eq!(fault.side(), if blamed { "backend" } else { "client" });
        }
    }

    #[test]
    fn an_answer_under_way_can_only_be_cut() {
        let f = Fault::Backend(Reset);
        assert_eq!(recovery(f, Answered), Recovery::Close);
        assert_eq!(recovery(f, Sent), Recovery::Answer(502));
        let t = Fault::Client(ClientFault::Timeout);
        assert_eq!(recovery(t, Unsent), Recovery::Answer(408));
        assert_eq!(recovery(t, Answered), Recovery::Close);
    }
}
