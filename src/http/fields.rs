//! Header field rules shared by requests and responses: framing fields
//! (Content-Length, Transfer-Encoding), Connection options, hop-by-hop removal.
//! Everything compares bytes case-insensitively in place; nothing allocates.

use httparse::Header;

/// Fields that apply to one connection only and are never forwarded
/// (RFC 9110 §7.6.1, plus the legacy `Proxy-Connection` and `Keep-Alive`).
const HOP_BY_HOP: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
];

/// Fields a `Connection` option may not remove: dropping them would change
/// how the next hop frames the message (or routes it) while we forward the
/// body as we framed it, so we keep them and ignore such an option.
const PROTECTED: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// RFC 9110 `tchar`: the bytes of a token (field names, codings, methods).
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 field-value bytes: HTAB, visible ASCII, SP and obs-text
/// (the same set httparse accepts in header values).
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// Is this field named `name` (ASCII case-insensitive)?
pub(crate) fn is(h: &Header<'_>, name: &str) -> bool {
    h.name.eq_ignore_ascii_case(name)
}

/// The non-empty elements of a comma-separated list value, trimmed of OWS.
/// Empty elements are ignored as RFC 9110 §5.6.1 allows.
pub(crate) fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// Does any `name` field list `token` (case-insensitive)?
pub(crate) fn has_token(headers: &[Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| is(h, name))
        .any(|h| elements(h.value).any(|e| e.eq_ignore_ascii_case(token.as_bytes())))
}

/// Should this field be dropped when forwarding: a fixed hop-by-hop field or one
/// named as an option in any `Connection` field (except [`PROTECTED`] ones).
pub(crate) fn is_hop_by_hop(name: &str, headers: &[Header<'_>]) -> bool {
    if HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        return true;
    }
    if PROTECTED.iter().any(|p| name.eq_ignore_ascii_case(p)) {
        return false;
    }
    has_token(headers, "connection", name)
}

/// Parse one Content-Length element: 1*DIGIT fitting in u64 (no sign, no spaces).
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        // `to_digit(10)` accepts ASCII digits only.
        let d = char::from(b).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// The message's Content-Length, if any: every element of every
/// Content-Length field must be a valid length and all must be equal
/// (RFC 9110 §8.6 lets "5, 5" stand for 5). Empty elements are invalid here,
/// unlike other lists, because a bare "," is a known smuggling variant.
pub(crate) fn content_length(headers: &[Header<'_>]) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    for h in headers.iter().filter(|h| is(h, "content-length")) {
        for element in h.value.split(|&b| b == b',') {
            let n = parse_length(element.trim_ascii()).ok_or("invalid content-length")?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting content-length values");
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// What the Transfer-Encoding fields (all of them, as one list) say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TransferEncoding {
    /// At least one Transfer-Encoding field is present.
    pub present: bool,
    /// The last coding is `chunked`.
    pub chunked_final: bool,
    /// `chunked` appears more than once (RFC 9112 §6.1 forbids it).
    pub chunked_twice: bool,
    /// A coding other than `chunked` appears.
    pub other: bool,
}

/// Read all Transfer-Encoding fields as one list of codings, in order.
pub(crate) fn transfer_encoding(headers: &[Header<'_>]) -> TransferEncoding {
    let mut te = TransferEncoding::default();
    let mut chunked = 0u32;
    for h in headers.iter().filter(|h| is(h, "transfer-encoding")) {
        te.present = true;
        for coding in elements(h.value) {
            let is_chunked = coding.eq_ignore_ascii_case(b"chunked");
            chunked = chunked.saturating_add(u32::from(is_chunked));
            te.other |= !is_chunked;
            te.chunked_final = is_chunked;
        }
    }
    te.chunked_twice = chunked > 1;
    te
}

/// How many fields named `name` there are.
pub(crate) fn count(headers: &[Header<'_>], name: &str) -> usize {
    headers.iter().filter(|h| is(h, name)).count()
}

/// RFC 9112 §9.3 persistence for a message of HTTP/1.`minor`: `close` always
/// wins; HTTP/1.1 defaults to persistent, HTTP/1.0 needs `keep-alive`.
pub(crate) fn persistent(headers: &[Header<'_>], minor: u8) -> bool {
    if has_token(headers, "connection", "close") {
        return false;
    }
    minor >= 1 || has_token(headers, "connection", "keep-alive")
}

/// Append `name: value\r\n`.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Append the end-to-end fields of `headers` in order, dropping hop-by-hop
/// ones. All Content-Length fields become one normalised
/// `Content-Length: <length>` where the first one was: the value was
/// validated, but "5, 5" or repeated fields could confuse the next hop.
/// `special(index, field, out)` may write a field its own way (or drop it) and
/// then returns true; otherwise the field is copied as received.
pub(crate) fn write_end_to_end(
    out: &mut Vec<u8>,
    headers: &[Header<'_>],
    length: Option<u64>,
    mut special: impl FnMut(usize, &Header<'_>, &mut Vec<u8>) -> bool,
) {
    let mut length = length;
    for (i, h) in headers.iter().enumerate() {
        if is_hop_by_hop(h.name, headers) {
            continue;
        }
        if is(h, "content-length") {
            // `take`: only the first Content-Length field is written.
            if let Some(n) = length.take() {
                use std::io::Write as _;
                // Writing to a Vec cannot fail.
                let _ = write!(out, "{}: {n}\r\n", h.name);
            }
            continue;
        }
        if !special(i, h, out) {
            write_field(out, h.name, h.value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    #[test]
    fn content_length_cases() {
        let ok: [(&[Header<'_>], Option<u64>); 6] = [
            (&[], None),
            (&[h("Content-Length", "5")], Some(5)),
            (&[h("content-length", "0")], Some(0)),
            (&[h("Content-Length", "5, 5")], Some(5)),
            (
                &[h("Content-Length", "5"), h("Content-Length", "5")],
                Some(5),
            ),
            (
                &[h("Content-Length", "18446744073709551615")],
                Some(u64::MAX),
            ),
        ];
        for (headers, want) in ok {
            assert_eq!(content_length(headers), Ok(want), "{headers:?}");
        }
        let bad = [
            "",
            "+5",
            "-5",
            "5a",
            "0x5",
            "5 5",
            "5,",
            ",5",
            "5,,5",
            "5, 6",
            "18446744073709551616",
            "1e3",
            "٣",
        ];
        for value in bad {
            let headers = [h("Content-Length", value)];
            assert!(content_length(&headers).is_err(), "{value:?}");
        }
        let differ = [h("Content-Length", "5"), h("Content-Length", "6")];
        assert!(content_length(&differ).is_err());
    }

    #[test]
    fn transfer_encoding_cases() {
        let te = |v: &str| transfer_encoding(&[h("Transfer-Encoding", v)]);
        assert!(!transfer_encoding(&[]).present);
        let chunked = te("chunked");
        assert!(chunked.present && chunked.chunked_final && !chunked.other);
        assert!(te("gzip, chunked").chunked_final && te("gzip, chunked").other);
        assert!(!te("chunked, gzip").chunked_final);
        assert!(te("chunked, chunked").chunked_twice);
        assert!(te("CHUNKED").chunked_final);
        assert!(!te("").chunked_final && te("").present);
        let split = [
            h("Transfer-Encoding", "chunked"),
            h("transfer-encoding", "chunked"),
        ];
        assert!(transfer_encoding(&split).chunked_twice);
    }

    #[test]
    fn hop_by_hop_cases() {
        let headers = [
            h("Connection", "close, X-Foo"),
            h("connection", "content-length"),
        ];
        for name in [
            "Connection",
            "KEEP-ALIVE",
            "TE",
            "Trailer",
            "Upgrade",
            "x-foo",
        ] {
            assert!(is_hop_by_hop(name, &headers), "{name}");
        }
        for name in ["Content-Length", "Host", "X-Bar", "Transfer-Encoding"] {
            assert!(!is_hop_by_hop(name, &headers), "{name}");
        }
    }

    #[test]
    fn persistence_matrix() {
        let cases = [
            (1, None, true),
            (1, Some("close"), false),
            (1, Some("keep-alive"), true),
            (0, None, false),
            (0, Some("close"), false),
            (0, Some("Keep-Alive"), true),
            (0, Some("keep-alive, close"), false),
        ];
        for (minor, conn, want) in cases {
            let headers: Vec<Header<'_>> = conn.map(|v| h("Connection", v)).into_iter().collect();
            assert_eq!(persistent(&headers, minor), want, "1.{minor} {conn:?}");
        }
    }
}
