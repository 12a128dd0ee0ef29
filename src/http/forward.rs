//! Proxy headers added while forwarding (RFC 9110 §7.6.3 `Via`, the de facto
//! `X-Forwarded-*`, and a request id): the settings, the request id value and
//! its generator. No I/O: the caller seeds the generator.

use httparse::Header;

use super::fields::{self, is, is_tchar};

/// Longest request id kept from a client; a longer (or non-token) one is
/// replaced by a generated id.
///
/// 128 bytes holds the common formats (a UUID is 36, a W3C trace id 32, a
/// `traceparent` 55) while keeping the inline buffer that carries the id
/// through an exchange small.
pub const MAX_REQUEST_ID: usize = 128;

/// Hex digits of a generated id: 16 for the process prefix, 4 for the
/// worker, 12 for the counter. 32 hex digits is also the size of a W3C
/// trace id, so tracing tools take our ids as they are.
const GENERATED_LEN: usize = 32;

/// The per-worker counter of generated ids has 48 bits (12 hex digits): at
/// a million requests per second per worker it wraps after 8.9 years.
const COUNTER_MASK: u64 = (1 << 48) - 1;

/// The scheme the client used, for `X-Forwarded-Proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http,
    /// For a TLS listener (none yet).
    Https,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http => "http",
            Proto::Https => "https",
        }
    }
}

/// What the proxy adds to the heads it forwards; fixed at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardOpts {
    /// The `received-by` pseudonym in `Via` (a token); `None`: no `Via`.
    pub via: Option<String>,
    /// Written as `X-Forwarded-Proto` on requests.
    pub proto: Proto,
    /// The field carrying the request id (a token); `None`: ids off, any
    /// such field passes through untouched.
    pub request_id: Option<String>,
}

impl Default for ForwardOpts {
    /// The product's defaults: `Via: 1.1 tidegate`, `X-Request-Id`, http.
    fn default() -> Self {
        ForwardOpts {
            via: Some("tidegate".into()),
            proto: Proto::Http,
            request_id: Some("X-Request-Id".into()),
        }
    }
}

impl ForwardOpts {
    /// No `Via` and no request id (`X-Forwarded-*` are always written).
    pub fn off() -> Self {
        ForwardOpts {
            via: None,
            proto: Proto::Http,
            request_id: None,
        }
    }
}

/// A request id, inline (no allocation): only token bytes, at most
/// [`MAX_REQUEST_ID`] of them; empty when ids are off.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId {
    len: u8,
    bytes: [u8; MAX_REQUEST_ID],
}

impl RequestId {
    /// No id.
    pub const EMPTY: RequestId = RequestId {
        len: 0,
        bytes: [0; MAX_REQUEST_ID],
    };

    /// A client-sent id, if it is 1..=[`MAX_REQUEST_ID`] token bytes.
    pub fn from_client(value: &[u8]) -> Option<RequestId> {
        if value.is_empty() || value.len() > MAX_REQUEST_ID || !value.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        let mut id = RequestId::EMPTY;
        id.bytes.get_mut(..value.len())?.copy_from_slice(value);
        id.len = u8::try_from(value.len()).ok()?;
        Some(id)
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The id as text (token bytes are ASCII).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequestId({:?})", self.as_str())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::EMPTY
    }
}

/// Generates request ids unique within one process run: a random process
/// prefix (the caller's), the worker, and a per-worker counter, as 32 hex
/// digits. One per worker: no sharing, no atomics.
#[derive(Debug, Clone)]
pub struct IdGen {
    /// The prefix and worker digits, rendered once.
    head: [u8; HEAD_DIGITS],
    next: u64,
}

/// Hex digits of a generated id that do not change: 16 of the process
/// prefix, 4 of the worker; the other 12 are the counter.
const HEAD_DIGITS: usize = 20;

impl IdGen {
    pub fn new(prefix: u64, worker: u16) -> IdGen {
        let mut head = [0; HEAD_DIGITS];
        let (p, w) = head.split_at_mut(16);
        hex(prefix, p);
        hex(u64::from(worker), w);
        IdGen { head, next: 0 }
    }

    /// The next id.
    pub fn next_id(&mut self) -> RequestId {
        let count = self.next;
        self.next = self.next.wrapping_add(1) & COUNTER_MASK;
        let mut id = RequestId::EMPTY;
        if let Some(digits) = id.bytes.get_mut(..GENERATED_LEN) {
            let (head, counter) = digits.split_at_mut(HEAD_DIGITS);
            head.copy_from_slice(&self.head);
            hex(count, counter);
        }
        id.len = GENERATED_LEN as u8;
        id
    }
}

/// Writes the low `out.len()` nibbles of `n` as lower-case hex.
fn hex(mut n: u64, out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = DIGITS[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// Index of the last forwarded (not hop-by-hop) field named `name`: list
/// fields are extended there, since fields of one name form one list in
/// order (RFC 9110 §5.3).
pub(crate) fn last_forwarded(headers: &[Header<'_>], name: &str) -> Option<usize> {
    headers
        .iter()
        .rposition(|h| is(h, name) && !fields::is_hop_by_hop(h.name, headers))
}

/// Writes field `h` with `, <item>` appended to its value (just `<item>`
/// if the value is empty); `item` writes the new element.
pub(crate) fn write_appended(out: &mut Vec<u8>, h: &Header<'_>, item: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(h.name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(h.value);
    if !h.value.is_empty() {
        out.extend_from_slice(b", ");
    }
    item(out);
    out.extend_from_slice(b"\r\n");
}

/// Writes a `Via` element for a message of HTTP/1.`minor` received by
/// `pseudonym` (RFC 9110 §7.6.3: the protocol name is omitted for HTTP).
pub(crate) fn via_item(out: &mut Vec<u8>, minor: u8, pseudonym: &str) {
    // By hand rather than `write!`: this runs twice per request.
    out.extend_from_slice(if minor == 0 { b"1.0 " } else { b"1.1 " });
    out.extend_from_slice(pseudonym.as_bytes());
}

/// Writes a new `Via` field (no received one to extend).
pub(crate) fn write_via(out: &mut Vec<u8>, minor: u8, pseudonym: &str) {
    out.extend_from_slice(b"Via: ");
    via_item(out, minor, pseudonym);
    out.extend_from_slice(b"\r\n");
}

/// The client's request id under `name`: exactly one forwarded field with a
/// valid value; several fields, or an invalid one, mean none.
pub(crate) fn client_id(headers: &[Header<'_>], name: &str) -> Option<RequestId> {
    let mut found = headers
        .iter()
        .filter(|h| is(h, name) && !fields::is_hop_by_hop(h.name, headers));
    let first = found.next()?;
    if found.next().is_some() {
        return None;
    }
    RequestId::from_client(first.value)
}

/// Fields a request id may not be carried in: ones the proxy removes,
/// rewrites or frames by.
const RESERVED: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
    "content-length",
    "transfer-encoding",
    "via",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];

/// Checks a `Via` pseudonym or a request-id field name: a token of at most
/// 64 bytes (and a request id field name not one of [`RESERVED`]).
pub fn check_token(value: &str, is_field_name: bool) -> Result<(), &'static str> {
    /// Long enough for any real name; a pseudonym is written into every
    /// message, so keep it short.
    const MAX_TOKEN: usize = 64;
    if value.is_empty() || value.len() > MAX_TOKEN || !value.bytes().all(is_tchar) {
        return Err("expected a token of 1 to 64 letters, digits or !#$%&'*+-.^_`|~");
    }
    if is_field_name && RESERVED.iter().any(|r| value.eq_ignore_ascii_case(r)) {
        return Err("that field is hop-by-hop, framing or written by the proxy itself");
    }
    Ok(())
}

#[cfg(test)]
#[path = "forward_tests.rs"]
mod tests;
