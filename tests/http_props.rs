//! Property tests for the HTTP framing layer: our fuzz target.
//!
//! Random bytes and random mutations of valid messages must never panic; a
//! parse of any prefix must agree with the parse of the whole input (need
//! more, or the same head, or the same error); rewritten heads must parse
//! back with the same framing; and the body framer must give the same result
//! however its input is split. Case counts are modest so the file runs in a
//! couple of seconds in a debug build.

use std::net::IpAddr;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use tidegate::http::{
    BodyFramer, BodyKind, EMPTY_HEADER, ForwardOpts, HttpError, IdGen, MAX_HEADERS, Method, Peer,
    RequestHead, RequestId, ResponseHead, parse_request, parse_response,
};

const CASES: u32 = 256;

/// Valid requests to mutate.
const REQUESTS: [&str; 6] = [
    "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /f?a=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\nhello",
    "PUT /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.1\r\nHost: y\r\n\r\n",
    "\r\nDELETE /d HTTP/1.1\nHost: x\nTE: trailers\nUpgrade: h2c\n\n",
    "HEAD / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\nKeep-Alive: 5\r\n\r\n",
];

/// Valid responses to mutate.
const RESPONSES: [&str; 6] = [
    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-B\r\nX-B: 2\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "HTTP/1.0 404 Not Found\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
    "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n",
    "HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbody until close",
];

/// Bytes that matter to HTTP framing, to make mutations interesting.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![any::<u8>(), select(b"\r\n :,;\t\0 0159aAfF-=\"".to_vec()),]
}

/// Replace (0), insert (1) or delete (2) a byte at an index.
fn mutations() -> impl Strategy<Value = Vec<(Index, u8, u8)>> {
    prop::collection::vec((any::<Index>(), 0u8..3, byte()), 0..4)
}

fn mutate(seed: &[u8], edits: &[(Index, u8, u8)]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for (at, op, b) in edits {
        let i = at.index(bytes.len() + 1);
        match op {
            0 if i < bytes.len() => bytes[i] = *b,
            1 => bytes.insert(i, *b),
            _ if i < bytes.len() => {
                bytes.remove(i);
            }
            _ => {}
        }
    }
    bytes
}

fn request(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    parse_request(buf, &mut headers).map(|r| r.map(|r| r.head))
}

fn response(buf: &[u8], method: Method) -> Result<Option<ResponseHead>, HttpError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    parse_response(buf, method, false, &mut headers).map(|r| r.map(|r| r.head))
}

/// A prefix either needs more bytes or already gives the whole input's answer.
fn prefix_agrees<T: PartialEq + std::fmt::Debug>(
    prefix: Result<Option<T>, HttpError>,
    whole: &Result<Option<T>, HttpError>,
) -> Result<(), TestCaseError> {
    if prefix != Ok(None) {
        prop_assert_eq!(&prefix, whole);
    }
    Ok(())
}

/// Feed `input` to a framer in pieces ending at `cuts` (sorted), stopping at
/// the end of the body: (bytes used, done) or the error.
fn frame(kind: BodyKind, input: &[u8], cuts: &[usize]) -> Result<(usize, bool), HttpError> {
    let mut framer = BodyFramer::new(kind, Peer::Client);
    let (mut used, mut start) = (0, 0);
    for end in cuts.iter().copied().chain([input.len()]) {
        let piece = input.get(start..end).unwrap_or_default();
        start = end;
        let adv = framer.advance(piece)?;
        assert!(adv.used <= piece.len(), "used more bytes than given");
        used += adv.used;
        if adv.done {
            return Ok((used, true));
        }
    }
    Ok((used, false))
}

fn cuts(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|p| p.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// A valid chunked body (chunks with optional extensions, trailers), then `tail`.
fn chunked_body() -> impl Strategy<Value = (Vec<u8>, usize)> {
    let chunk = (prop::collection::vec(any::<u8>(), 1..40), any::<bool>());
    let trailer = ("[A-Za-z-]{1,8}", "[ -~]{0,12}");
    (
        prop::collection::vec(chunk, 0..5),
        prop::collection::vec(trailer, 0..3),
        prop::collection::vec(byte(), 0..8),
    )
        .prop_map(|(chunks, trailers, tail)| {
            let mut body = Vec::new();
            for (data, ext) in chunks {
                let ext = if ext { "; name=\"v;\"" } else { "" };
                body.extend_from_slice(format!("{:X}{ext}\r\n", data.len()).as_bytes());
                body.extend_from_slice(&data);
                body.extend_from_slice(b"\r\n");
            }
            body.extend_from_slice(b"0\r\n");
            for (name, value) in trailers {
                body.extend_from_slice(format!("{name}:{value}\r\n").as_bytes());
            }
            body.extend_from_slice(b"\r\n");
            let len = body.len();
            body.extend_from_slice(&tail);
            (body, len)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(byte(), 0..600), picks in prop::collection::vec(any::<Index>(), 0..4)) {
        let _ = request(&bytes);
        let _ = response(&bytes, Method::Get);
        let _ = response(&bytes, Method::Head);
        let cuts = cuts(bytes.len(), &picks);
        for kind in [BodyKind::None, BodyKind::Length(100), BodyKind::Chunked, BodyKind::CloseDelimited] {
            prop_assert_eq!(frame(kind, &bytes, &cuts), frame(kind, &bytes, &[]));
        }
    }

    #[test]
    fn mutated_requests(seed in select(REQUESTS.to_vec()), edits in mutations(), picks in prop::collection::vec(any::<Index>(), 1..6)) {
        let bytes = mutate(seed.as_bytes(), &edits);
        let whole = request(&bytes);
        for cut in cuts(bytes.len(), &picks) {
            prefix_agrees(request(bytes.get(..cut).unwrap_or_default()), &whole)?;
        }
        // A forwarded head parses back with the same framing.
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(req)) = parse_request(&bytes, &mut headers) {
            let mut out = Vec::new();
            let mut ids = IdGen::new(1, 0);
            req.write_head(IpAddr::from([10, 0, 0, 1]), false, &ForwardOpts::default(), &mut ids, &mut out);
            let again = request(&out);
            let has_host = req.headers().iter().any(|h| h.name.eq_ignore_ascii_case("host"));
            if has_host {
                let again = again.map(|h| h.map(|h| (h.head_len, h.method, h.body, h.minor)));
                // HTTP/1.0 requests are forwarded as HTTP/1.0, the rest as 1.1.
                let minor = req.head.minor;
                prop_assert_eq!(again, Ok(Some((out.len(), req.head.method, req.head.body, minor))));
            }
        }
    }

    #[test]
    fn mutated_responses(seed in select(RESPONSES.to_vec()), edits in mutations(), picks in prop::collection::vec(any::<Index>(), 1..6), head in any::<bool>()) {
        let bytes = mutate(seed.as_bytes(), &edits);
        let method = if head { Method::Head } else { Method::Get };
        let whole = response(&bytes, method);
        for cut in cuts(bytes.len(), &picks) {
            prefix_agrees(response(bytes.get(..cut).unwrap_or_default(), method), &whole)?;
        }
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        if let Ok(Some(resp)) = parse_response(&bytes, method, false, &mut headers) {
            let mut out = Vec::new();
            let id = RequestId::from_client(b"id").unwrap_or_default();
            resp.write_head(false, 1, &ForwardOpts::default(), &id, &mut out);
            let again = response(&out, method).map(|h| h.map(|h| (h.head_len, h.status, h.body)));
            prop_assert_eq!(again, Ok(Some((out.len(), resp.head.status, resp.head.body))));
        }
    }

    #[test]
    fn chunked_split_independent((body, len) in chunked_body(), picks in prop::collection::vec(any::<Index>(), 0..6)) {
        let whole = frame(BodyKind::Chunked, &body, &[]);
        prop_assert_eq!(&whole, &Ok((len, true)));
        prop_assert_eq!(frame(BodyKind::Chunked, &body, &cuts(body.len(), &picks)), whole);
    }

    #[test]
    fn mutated_chunked_split_independent((body, _) in chunked_body(), edits in mutations(), picks in prop::collection::vec(any::<Index>(), 0..6)) {
        let body = mutate(&body, &edits);
        let whole = frame(BodyKind::Chunked, &body, &[]);
        prop_assert_eq!(frame(BodyKind::Chunked, &body, &cuts(body.len(), &picks)), whole);
    }
}
