//! Pure HTTP/1.1 framing for the proxy (RFC 9112 / RFC 9110 as an intermediary),
//! also used by the simulated backend (`tools::backend`), which parses the
//! same heads and frames the same bodies but never calls `write_head`.
//!
//! No sockets, no clocks: plain functions over byte slices, so every split
//! point of the input can be tested.
//!
//! - [`parse_request`] / [`parse_response`]: parse a head from the start of a
//!   buffer (`Ok(None)` = need more bytes), validate the framing fields and
//!   return a [`ParsedRequest`] / [`ParsedResponse`] whose `head` is a small
//!   `Copy` summary ([`RequestHead`] / [`ResponseHead`]) and whose
//!   `write_head` rewrites the head for the next hop (hop-by-hop fields removed,
//!   `Connection`, and the proxy fields of [`ForwardOpts`]: `Via`,
//!   `X-Forwarded-For/-Proto/-Host`, the request id) into a caller-owned `Vec`.
//! - [`RequestId`] / [`IdGen`]: request ids kept from the client or generated,
//!   inline (no allocation per request).
//! - [`BodyFramer`]: finds where a body ends without copying or de-chunking it;
//!   the caller forwards the bytes verbatim. It also counts the payload
//!   (chunk data without framing) for callers that report body sizes.
//! - [`HttpError`] and [`error_response`]: what to answer when parsing fails.
//! - [`head_end`] / [`parse_due`]: find where a head that arrives in pieces
//!   ends, looking at each byte O(1) times, so the parser runs once per head
//!   and not once per read.
//!
//! Errors in requests map to 4xx/5xx for the client; errors in responses are
//! [`HttpError::BadResponse`] (502). Limits are checked on partial input too,
//! and only against bytes inside the limit, so the outcome never depends on
//! how the input was split into reads.
//!
//! # Choices where the RFCs leave room
//! - Heads may use bare LF line endings (RFC 9112 §2.2 MAY): we re-serialise
//!   them with CRLF. Chunked bodies are forwarded verbatim, so there a bare LF
//!   is an error (the next hop might read it differently).
//! - Requests: a transfer coding other than `chunked` is 501; `chunked` not
//!   last or twice is 400; Transfer-Encoding in HTTP/1.0 is 400; CONNECT is 501.
//! - Upgrade: forwarded only on an HTTP/1.1 GET that lists `upgrade` in
//!   `Connection` (RFC 9110 §7.8); a 101 to any other request is an error.
//! - Responses: Content-Length with Transfer-Encoding, or Transfer-Encoding in
//!   HTTP/1.0, is an error; Content-Length must be valid even where it does not
//!   frame the body (HEAD, 204, 304).
//! - Content-Length fields (and a request's Transfer-Encoding) are forwarded
//!   as one normalised field; a `Connection` option cannot remove
//!   Content-Length, Transfer-Encoding or Host.

mod body;
mod chunked;
mod error;
mod fields;
mod forward;
mod head;
mod request;
mod response;
mod scan;

pub use body::{Advance, BodyFramer, BodyKind, Peer};
pub use error::{HttpError, error_response};
pub use forward::{ForwardOpts, IdGen, MAX_REQUEST_ID, Proto, RequestId, check_token};
pub use request::{Method, ParsedRequest, RequestHead, parse_request};
pub use response::{ParsedResponse, ResponseHead, parse_response};
pub use scan::{head_end, parse_due};

/// The header slots a caller provides to [`parse_request`] / [`parse_response`].
pub use httparse::Header;

/// An empty header slot, to build `[EMPTY_HEADER; MAX_HEADERS]` on the stack.
pub use httparse::EMPTY_HEADER;

/// Longest request line (or status line), line ending included.
///
/// 8 KiB is the default of nginx (`large_client_header_buffers`) and Apache
/// (`LimitRequestLine`): long enough for any sane URI, short enough that a
/// client cannot make us buffer much before we answer 414.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Largest head (start line, fields and the blank line) we buffer.
///
/// 16 KiB fits real-world cookies and tokens (nginx allows 4 x 8 KiB buffers,
/// most backends 8-16 KiB) while bounding the memory a connection can pin
/// before any body byte is forwarded; larger heads get 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most header fields in one head; more gets 431.
///
/// Apache's `LimitRequestFields` default; also the size of the caller's
/// `httparse::Header` array (32 bytes each, 3.2 KiB on the stack).
pub const MAX_HEADERS: usize = 100;

/// Longest chunk-size line (size, extensions, CRLF) in a chunked body.
///
/// A size needs at most 16 hex digits; 4 KiB leaves generous room for
/// extensions while stopping a peer from streaming an endless size line.
pub const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Largest trailer section (all trailer fields plus the final CRLF).
///
/// The same budget as a head ([`MAX_HEAD`]): trailers are fields too.
pub const MAX_TRAILERS: usize = 16 * 1024;
