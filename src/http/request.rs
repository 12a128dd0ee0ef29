//! Request heads: parse, validate the framing fields (RFC 9112 §6), and
//! rewrite for the backend.

use std::io::Write as _;
use std::net::IpAddr;

use httparse::Header;

use super::fields::{self, is, write_field};
use super::forward::{self, ForwardOpts, IdGen, RequestId};
use super::head::{self, Overflow};
use super::{BodyKind, HttpError, MAX_HEADERS};

/// The request method. Methods are case-sensitive (RFC 9110 §9.1): `get` is `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Options,
    Trace,
    Patch,
    /// Any other token (the text is in [`ParsedRequest::method_str`]).
    Other,
}

impl Method {
    /// Classify a method token.
    pub fn from_bytes(method: &[u8]) -> Method {
        match method {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"OPTIONS" => Method::Options,
            b"TRACE" => Method::Trace,
            b"PATCH" => Method::Patch,
            _ => Method::Other,
        }
    }

    /// HEAD: the response has no body whatever its framing fields say.
    pub fn is_head(self) -> bool {
        self == Method::Head
    }

    /// RFC 9110 §9.2.2: safe to retry on another backend if the first failed
    /// before answering.
    pub fn is_idempotent(self) -> bool {
        matches!(
            self,
            Method::Get
                | Method::Head
                | Method::Options
                | Method::Trace
                | Method::Put
                | Method::Delete
        )
    }
}

/// What the proxy needs to know about a request head; `Copy`, borrows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the buffer taken by the head (including empty lines before
    /// it); the body, or the next pipelined request, starts here.
    pub head_len: usize,
    pub method: Method,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// `None`, `Length` or `Chunked`; never `CloseDelimited`.
    pub body: BodyKind,
    /// The client wants the connection kept open after this exchange (RFC 9112 §9.3).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored on 1.0, RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// A protocol switch is asked for (RFC 9110 §7.8): an HTTP/1.1 GET
    /// with `Upgrade` listed in `Connection`. Only then are `Upgrade` and
    /// `Connection: upgrade` forwarded, and only then may a 101 come back.
    pub upgrade: bool,
    /// The request id sent to the backend, to return to the client and log.
    /// Empty from [`parse_request`]; the caller stores what
    /// [`ParsedRequest::write_head`] returned.
    pub request_id: RequestId,
}

/// A valid request head, borrowing the caller's buffer and header slots.
#[derive(Debug)]
pub struct ParsedRequest<'h, 'b> {
    pub head: RequestHead,
    method: &'b str,
    target: &'b str,
    headers: &'h [Header<'b>],
}

impl<'h, 'b> ParsedRequest<'h, 'b> {
    /// The method as received.
    pub fn method_str(&self) -> &'b str {
        self.method
    }

    /// The request target as received.
    pub fn target(&self) -> &'b str {
        self.target
    }

    /// All fields as received (hop-by-hop ones included).
    pub fn headers(&self) -> &'h [Header<'b>] {
        self.headers
    }

    /// Append the head to send to the backend and return the request id
    /// (empty when ids are off): the request line as received
    /// (HTTP/1.1, or HTTP/1.0 for a 1.0 client: a backend must then not
    /// answer chunked, which a 1.0 client could not read, and we relay bodies
    /// verbatim; nginx speaks 1.0 upstream by default for the same reason),
    /// end-to-end fields in order (hop-by-hop ones removed,
    /// framing fields normalised), then the proxy fields:
    /// - `X-Forwarded-For` extended with `client_ip` (the last such field);
    /// - `Via` extended with `1.x <opts.via>` (the last such field), x being
    ///   the version received;
    /// - `X-Forwarded-Proto` and `X-Forwarded-Host` (the Host received, if
    ///   any and not empty) written by us, any received ones dropped: a client
    ///   could otherwise claim any scheme or host;
    /// - the request id field: the client's if it sent exactly one valid id,
    ///   else one from `ids` (received fields of that name are dropped);
    /// - `Connection: close` if `backend_close`, or for an upgrade request
    ///   its `Upgrade` field and `Connection: upgrade`.
    ///
    /// An HTTP/1.0 request without Host is forwarded without one. Allocates
    /// nothing beyond `out`'s growth.
    pub fn write_head(
        &self,
        client_ip: IpAddr,
        backend_close: bool,
        opts: &ForwardOpts,
        ids: &mut IdGen,
        out: &mut Vec<u8>,
    ) -> RequestId {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(if self.head.minor == 0 {
            b" HTTP/1.0\r\n"
        } else {
            b" HTTP/1.1\r\n"
        });

        let headers = self.headers;
        // Mapped IPv4 addresses print as plain IPv4, as backends expect.
        let ip = client_ip.to_canonical();
        let last_xff = forward::last_forwarded(headers, "x-forwarded-for");
        let via = opts.via.as_deref();
        let last_via = via.and_then(|_| forward::last_forwarded(headers, "via"));
        let id_name = opts.request_id.as_deref();
        let length = match self.head.body {
            BodyKind::Length(n) => Some(n),
            _ => None,
        };
        let mut chunked_written = false;
        // At most one Host (validated); never hop-by-hop.
        let host = headers.iter().find(|h| is(h, "host")).map(|h| h.value);
        fields::write_end_to_end(out, headers, length, |i, h, out| {
            if is(h, "transfer-encoding") {
                // Validated to be exactly `chunked`; one field says it all.
                if !chunked_written {
                    write_field(out, h.name, b"chunked");
                    chunked_written = true;
                }
                true
            } else if Some(i) == last_xff {
                forward::write_appended(out, h, |out| {
                    let _ = write!(out, "{ip}");
                });
                true
            } else if Some(i) == last_via {
                let pseudonym = via.unwrap_or_default();
                let minor = self.head.minor;
                forward::write_appended(out, h, |out| forward::via_item(out, minor, pseudonym));
                true
            } else {
                is(h, "x-forwarded-proto")
                    || is(h, "x-forwarded-host")
                    || id_name.is_some_and(|name| is(h, name))
            }
        });
        if last_xff.is_none() {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "X-Forwarded-For: {ip}\r\n");
        }
        if let (Some(pseudonym), None) = (via, last_via) {
            forward::write_via(out, self.head.minor, pseudonym);
        }
        write_field(out, "X-Forwarded-Proto", opts.proto.as_str().as_bytes());
        if let Some(host) = host.filter(|h| !h.is_empty()) {
            write_field(out, "X-Forwarded-Host", host);
        }
        let id = match id_name {
            Some(name) => {
                let id = forward::client_id(headers, name).unwrap_or_else(|| ids.next_id());
                write_field(out, name, id.as_bytes());
                id
            }
            None => RequestId::EMPTY,
        };
        if self.head.upgrade {
            // Hop-by-hop, so dropped above; a switch forwards them as asked.
            for h in headers.iter().filter(|h| is(h, "upgrade")) {
                write_field(out, h.name, h.value);
            }
            out.extend_from_slice(b"Connection: upgrade\r\n");
        } else if backend_close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        id
    }
}

/// Parse and validate the request head at the start of `buf`.
///
/// `Ok(None)`: the head is incomplete (and within limits); call again with
/// more bytes. Pass `[EMPTY_HEADER; MAX_HEADERS]` as `headers`; at most
/// [`MAX_HEADERS`] slots are used and more fields mean 431.
pub fn parse_request<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [Header<'b>],
) -> Result<Option<ParsedRequest<'h, 'b>>, HttpError> {
    let window = head::window(buf);
    let visible = buf.get(..window.len).unwrap_or_default();
    let slots = headers.len().min(MAX_HEADERS);
    // In bounds: slots <= headers.len().
    let mut req = httparse::Request::new(&mut headers[..slots]);
    let head_len = match req.parse(visible) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return match window.overflow {
                None => Ok(None),
                Some(Overflow::Line) => Err(HttpError::UriTooLong),
                Some(Overflow::Head) => Err(HttpError::HeadersTooLarge),
            };
        }
        Err(e) => return Err(map_error(e, visible)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadRequest("incomplete request line"));
    };
    let headers: &'h [Header<'b>] = req.headers;

    if method == "CONNECT" {
        // Tunnels are not supported (RFC 9110 §9.3.6 makes it optional).
        return Err(HttpError::NotImplemented("CONNECT"));
    }
    let hosts = fields::count(headers, "host");
    if hosts > 1 {
        return Err(HttpError::BadRequest("more than one Host field"));
    }
    if hosts == 0 && minor == 1 {
        return Err(HttpError::BadRequest("HTTP/1.1 request without Host"));
    }
    let head = RequestHead {
        head_len,
        method: Method::from_bytes(method.as_bytes()),
        minor,
        body: body_kind(headers, minor)?,
        keep_alive: fields::persistent(headers, minor),
        expect_continue: minor == 1 && fields::has_token(headers, "expect", "100-continue"),
        upgrade: minor == 1
            && method == "GET"
            && fields::count(headers, "upgrade") > 0
            && fields::has_token(headers, "connection", "upgrade"),
        request_id: RequestId::EMPTY,
    };
    Ok(Some(ParsedRequest {
        head,
        method,
        target,
        headers,
    }))
}

/// RFC 9112 §6.1-6.3 for requests: chunked, a valid Content-Length, or no body.
fn body_kind(headers: &[Header<'_>], minor: u8) -> Result<BodyKind, HttpError> {
    let length = fields::content_length(headers).map_err(HttpError::BadRequest)?;
    let te = fields::transfer_encoding(headers);
    if !te.present {
        return Ok(length.map_or(BodyKind::None, BodyKind::Length));
    }
    if minor == 0 {
        // §6.1: HTTP/1.0 has no Transfer-Encoding; the framing is faulty.
        return Err(HttpError::BadRequest("Transfer-Encoding in HTTP/1.0"));
    }
    if length.is_some() {
        return Err(HttpError::BadRequest(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if te.chunked_twice {
        return Err(HttpError::BadRequest("chunked applied more than once"));
    }
    if !te.chunked_final {
        return Err(HttpError::BadRequest(
            "chunked is not the final transfer coding",
        ));
    }
    if te.other {
        // §6.1: a coding we don't understand is 501, not 400.
        return Err(HttpError::NotImplemented(
            "transfer coding other than chunked",
        ));
    }
    Ok(BodyKind::Chunked)
}

fn map_error(e: httparse::Error, visible: &[u8]) -> HttpError {
    match e {
        httparse::Error::TooManyHeaders => HttpError::HeadersTooLarge,
        httparse::Error::Version if head::is_unsupported_version(head::start_line(visible)) => {
            HttpError::VersionNotSupported
        }
        httparse::Error::Version => HttpError::BadRequest("malformed HTTP version"),
        // Also obs-fold and whitespace before the colon: httparse's name rules.
        httparse::Error::HeaderName => HttpError::BadRequest("invalid header name"),
        httparse::Error::HeaderValue => HttpError::BadRequest("invalid header value"),
        httparse::Error::NewLine => HttpError::BadRequest("invalid line ending"),
        httparse::Error::Token | httparse::Error::Status => {
            HttpError::BadRequest("malformed request line")
        }
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "request_rewrite_tests.rs"]
mod rewrite_tests;
