//! Response heads from the backend: parse, frame (RFC 9112 §6.3), and rewrite
//! for the client. Every error is [`HttpError::BadResponse`]: the proxy answers 502.

use std::io::Write as _;

use httparse::Header;

use super::fields::{self, write_field};
use super::forward::{self, ForwardOpts, RequestId};
use super::head::{self, Overflow};
use super::{BodyKind, HttpError, MAX_HEADERS, Method};

/// What the proxy needs to know about a response head; `Copy`, borrows nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Bytes of the buffer taken by the head; the body starts here.
    pub head_len: usize,
    /// 100..=599. A 101 is only accepted when the request asked to switch.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// A 1xx response: the final response still follows.
    pub is_interim: bool,
    pub body: BodyKind,
    /// The backend connection can carry another request after this body:
    /// persistent per RFC 9112 §9.3 and not close-delimited.
    pub keep_alive: bool,
    /// `101 Switching Protocols`: after this head the connection carries
    /// another protocol, in both directions.
    pub switching: bool,
    /// A `Retry-After` field is present (on a 503: try elsewhere).
    pub retry_after: bool,
}

/// A valid response head, borrowing the caller's buffer and header slots.
#[derive(Debug)]
pub struct ParsedResponse<'h, 'b> {
    pub head: ResponseHead,
    reason: &'b [u8],
    /// The validated Content-Length, kept even when there is no body (HEAD, 304).
    length: Option<u64>,
    headers: &'h [Header<'b>],
}

impl<'h, 'b> ParsedResponse<'h, 'b> {
    /// The reason phrase as received (may be empty or contain obs-text).
    pub fn reason(&self) -> &'b [u8] {
        self.reason
    }

    /// All fields as received (hop-by-hop ones included).
    pub fn headers(&self) -> &'h [Header<'b>] {
        self.headers
    }

    /// Append the head to send to the client: the status line as HTTP/1.1 with
    /// the same code and reason, end-to-end fields in order (Content-Length
    /// normalised, Transfer-Encoding as received; fields named in the
    /// response's `Connection` are removed like the fixed hop-by-hop ones),
    /// `Via` extended with `1.x <opts.via>` (x: the version the backend
    /// spoke) on every response, then for a final response the request id
    /// `id` in `opts.request_id`'s field (replacing the backend's, if it
    /// echoed one) when ids are on and `id` is not empty, and
    /// `Connection: close` if `client_close`, else `Connection: keep-alive` if
    /// the client speaks HTTP/1.0 (`client_minor == 0`).
    ///
    /// The caller must close the client connection after a close-delimited
    /// body, and must not forward 1xx responses to HTTP/1.0 clients (RFC 9110
    /// §15.2). HTTP/1.0 clients cannot decode a chunked body either; this layer
    /// does not de-chunk.
    pub fn write_head(
        &self,
        client_close: bool,
        client_minor: u8,
        opts: &ForwardOpts,
        id: &RequestId,
        out: &mut Vec<u8>,
    ) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} ", self.head.status);
        out.extend_from_slice(self.reason);
        out.extend_from_slice(b"\r\n");
        let headers = self.headers;
        let via = opts.via.as_deref();
        let last_via = via.and_then(|_| forward::last_forwarded(headers, "via"));
        let id_name = opts
            .request_id
            .as_deref()
            .filter(|_| !id.is_empty() && !self.head.is_interim);
        let minor = self.head.minor;
        fields::write_end_to_end(out, headers, self.length, |i, h, out| {
            if Some(i) == last_via {
                let pseudonym = via.unwrap_or_default();
                forward::write_appended(out, h, |out| forward::via_item(out, minor, pseudonym));
                true
            } else {
                id_name.is_some_and(|name| fields::is(h, name))
            }
        });
        if let (Some(pseudonym), None) = (via, last_via) {
            forward::write_via(out, minor, pseudonym);
        }
        if let Some(name) = id_name {
            write_field(out, name, id.as_bytes());
        }
        if self.head.switching {
            for h in headers.iter().filter(|h| fields::is(h, "upgrade")) {
                write_field(out, h.name, h.value);
            }
            write_field(out, "Connection", b"upgrade");
        } else if !self.head.is_interim {
            if client_close {
                write_field(out, "Connection", b"close");
            } else if client_minor == 0 {
                write_field(out, "Connection", b"keep-alive");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Parse and validate the response head at the start of `buf`, sent in answer
/// to a `request_method` request (`upgrade_asked`: one that may be answered
/// with 101).
///
/// `Ok(None)`: incomplete (and within limits); call again with more bytes.
/// Pass `[EMPTY_HEADER; MAX_HEADERS]` as `headers`.
pub fn parse_response<'h, 'b>(
    buf: &'b [u8],
    request_method: Method,
    upgrade_asked: bool,
    headers: &'h mut [Header<'b>],
) -> Result<Option<ParsedResponse<'h, 'b>>, HttpError> {
    let window = head::window(buf);
    let visible = buf.get(..window.len).unwrap_or_default();
    let slots = headers.len().min(MAX_HEADERS);
    // In bounds: slots <= headers.len().
    let mut resp = httparse::Response::new(&mut headers[..slots]);
    let head_len = match resp.parse(visible) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return match window.overflow {
                None => Ok(None),
                Some(Overflow::Line) => Err(HttpError::BadResponse("status line too long")),
                Some(Overflow::Head) => Err(HttpError::BadResponse("head too large")),
            };
        }
        Err(e) => return Err(HttpError::BadResponse(describe(e))),
    };
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HttpError::BadResponse("incomplete status line"));
    };
    let headers: &'h [Header<'b>] = resp.headers;

    if !(100..=599).contains(&status) {
        return Err(HttpError::BadResponse("status code out of range"));
    }
    let switching = status == 101;
    if switching && !upgrade_asked {
        // Upgrade is stripped unless asked for, so this switch is a backend bug.
        return Err(HttpError::BadResponse("protocol switch nobody asked for"));
    }
    let length = fields::content_length(headers).map_err(HttpError::BadResponse)?;
    let te = fields::transfer_encoding(headers);
    if te.present {
        if minor == 0 {
            // RFC 9112 §6.1: the framing of such a message is faulty.
            return Err(HttpError::BadResponse("Transfer-Encoding in HTTP/1.0"));
        }
        if length.is_some() {
            // §6.3: "ought to be handled as an error" (response splitting).
            return Err(HttpError::BadResponse(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if te.chunked_twice {
            return Err(HttpError::BadResponse("chunked applied more than once"));
        }
    }

    let is_interim = status < 200 && !switching;
    let body =
        if request_method.is_head() || is_interim || switching || status == 204 || status == 304 {
            BodyKind::None
        } else if te.present && te.chunked_final {
            BodyKind::Chunked
        } else if te.present {
            // §6.3 rule 4: another coding last means read until close.
            BodyKind::CloseDelimited
        } else {
            length.map_or(BodyKind::CloseDelimited, BodyKind::Length)
        };
    let head = ResponseHead {
        head_len,
        status,
        minor,
        is_interim,
        body,
        keep_alive: !switching
            && fields::persistent(headers, minor)
            && body != BodyKind::CloseDelimited,
        switching,
        retry_after: fields::count(headers, "retry-after") > 0,
    };
    // httparse checked the line: "HTTP/1.x NNN" then SP and the reason, or the end.
    let reason = head::start_line(visible).get(13..).unwrap_or_default();
    Ok(Some(ParsedResponse {
        head,
        reason,
        length,
        headers,
    }))
}

fn describe(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "unsupported or malformed HTTP version",
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status | httparse::Error::Token => "malformed status line",
    }
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
