//! Request heads: parsed with httparse and reduced to what the backend needs
//! (keep-alive, HEAD, `Expect: 100-continue`, and how the body is framed).

use super::body::BodyReader;

/// Largest request head accepted: 16 KiB, the usual proxy default (nginx's
/// `large_client_header_buffers` is 8-32 KiB). Longer heads get a 400.
pub const HEAD_LIMIT: usize = 16 * 1024;

/// Most header fields in one request; more get a 400. 100 is what real
/// clients never reach and what httparse parses on the stack cheaply.
pub const MAX_HEADERS: usize = 100;

/// What a complete request head says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `HEAD`: the response carries headers only.
    pub head_only: bool,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// HTTP/1.0: a kept-alive response must say `Connection: keep-alive`.
    pub http10: bool,
    /// `Expect: 100-continue` with a body to come.
    pub expect_continue: bool,
    /// The body that follows the head.
    pub body: BodyReader,
}

/// Outcome of parsing the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A head of this many bytes.
    Complete(usize, Head),
    /// Need more bytes.
    Partial,
    /// Not a request we accept: answer 400 and close.
    Invalid(&'static str),
}

/// Parses a request head at the start of `buf` (at most [`HEAD_LIMIT`]
/// bytes of it are looked at).
pub fn parse(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(HEAD_LIMIT)];
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if window.len() < HEAD_LIMIT => return Parsed::Partial,
        Ok(httparse::Status::Partial) => return Parsed::Invalid("request head too large"),
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid("too many headers"),
        Err(_) => return Parsed::Invalid("malformed request head"),
    };
    let http10 = req.version == Some(0);
    let mut close = false;
    let mut keep_alive = false;
    let mut expect_continue = false;
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            for token in list(h.value) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let Some(n) = parse_length(h.value) else {
                return Parsed::Invalid("bad content-length");
            };
            if length.is_some_and(|m| m != n) {
                return Parsed::Invalid("conflicting content-length");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding decides whether the body is chunked.
            if let Some(last) = list(h.value).last() {
                chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
    }
    let body = match (chunked, length) {
        (Some(_), Some(_)) => return Parsed::Invalid("both content-length and transfer-encoding"),
        (Some(false), None) => return Parsed::Invalid("unsupported transfer-encoding"),
        (Some(true), None) => BodyReader::chunked(),
        (None, Some(n)) => BodyReader::length(n),
        (None, None) => BodyReader::length(0),
    };
    let head = Head {
        head_only: req.method == Some("HEAD"),
        keep_alive: !close && (!http10 || keep_alive),
        http10,
        expect_continue: expect_continue && !body.is_done(),
        body,
    };
    Parsed::Complete(len, head)
}

/// The non-empty, trimmed items of a comma-separated header value.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Digits only (no sign, no spaces inside), and it must fit in a u64.
fn parse_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse(raw.as_bytes()) {
            Parsed::Complete(n, h) => {
                assert_eq!(n, raw.len());
                h
            }
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn invalid(raw: &str) -> &'static str {
        match parse(raw.as_bytes()) {
            Parsed::Invalid(why) => why,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        assert!(head("GET / HTTP/1.1\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: foo, Close\r\n\r\n").keep_alive);
        let h10 = head("GET / HTTP/1.0\r\n\r\n");
        assert!(!h10.keep_alive && h10.http10);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
    }

    #[test]
    fn body_framing() {
        assert!(head("GET / HTTP/1.1\r\n\r\n").body.is_done());
        let h = head("POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        assert_eq!(h.body, BodyReader::length(5));
        assert!(h.expect_continue);
        let h = head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.body, BodyReader::chunked());
        let same = "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(head(same).body, BodyReader::length(3));
        assert!(head("HEAD / HTTP/1.1\r\n\r\n").head_only);
        assert!(!head("GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn bad_heads_are_invalid() {
        invalid("NOT HTTP AT ALL\r\n\r\n");
        invalid("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n");
        invalid("GET / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n");
        invalid("GET / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n");
        invalid("GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        invalid("GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n");
        invalid("GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            invalid(&format!("GET / HTTP/1.1\r\n{many}\r\n")),
            "too many headers"
        );
    }

    #[test]
    fn partial_until_the_limit() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(HEAD_LIMIT));
        assert_eq!(
            parse(big.as_bytes()),
            Parsed::Invalid("request head too large")
        );
    }
}
