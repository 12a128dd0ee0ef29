use super::*;
use crate::http::{EMPTY_HEADER, MAX_HEAD, MAX_REQUEST_LINE};

fn parse(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    parse_request(buf, &mut headers).map(|r| r.map(|r| r.head))
}

fn status(buf: &[u8]) -> u16 {
    match parse(buf) {
        Ok(Some(_)) => 200,
        Ok(None) => 0,
        Err(e) => e.status(),
    }
}

#[test]
fn valid_requests() {
    let get = "GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n";
    let head = parse(get.as_bytes());
    let want = RequestHead {
        head_len: get.len(),
        method: Method::Get,
        minor: 1,
        body: BodyKind::None,
        keep_alive: true,
        expect_continue: false,
        upgrade: false,
        request_id: RequestId::EMPTY,
    };
    assert_eq!(head, Ok(Some(want)));

    let cases: [(&str, Method, u8, BodyKind); 9] = [
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
            Method::Post,
            1,
            BodyKind::Length(5),
        ),
        (
            "PUT / HTTP/1.1\r\nHost: x\r\ncontent-length: 5, 5\r\n\r\n",
            Method::Put,
            1,
            BodyKind::Length(5),
        ),
        (
            "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            Method::Put,
            1,
            BodyKind::Length(5),
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            Method::Post,
            1,
            BodyKind::Chunked,
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            Method::Post,
            1,
            BodyKind::Chunked,
        ),
        ("GET / HTTP/1.0\r\n\r\n", Method::Get, 0, BodyKind::None),
        (
            "HEAD / HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
            Method::Head,
            0,
            BodyKind::Length(0),
        ),
        (
            "\r\n\nOPTIONS * HTTP/1.1\nHost: x\n\n",
            Method::Options,
            1,
            BodyKind::None,
        ),
        (
            "get / HTTP/1.1\r\nHost:\r\n\r\n",
            Method::Other,
            1,
            BodyKind::None,
        ),
    ];
    for (req, method, minor, body) in cases {
        let head = parse(req.as_bytes()).ok().flatten();
        let got = head.map(|h| (h.head_len, h.method, h.minor, h.body));
        assert_eq!(got, Some((req.len(), method, minor, body)), "{req:?}");
    }
}

#[test]
fn rejections() {
    let cases: [(&str, &str, u16); 38] = [
        (
            "CL and TE",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "CL and unknown TE",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
        (
            "CL differ",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (
            "CL list differs",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
            400,
        ),
        (
            "CL non-digit",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5a\r\n\r\n",
            400,
        ),
        (
            "CL sign +",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n",
            400,
        ),
        (
            "CL sign -",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            400,
        ),
        (
            "CL empty",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n",
            400,
        ),
        (
            "CL empty element",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\n",
            400,
        ),
        (
            "CL overflow",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n",
            400,
        ),
        (
            "TE not chunked",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,
        ),
        (
            "TE chunked not final",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            "TE other coding",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            "TE other coding, 2 fields",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
            501,
        ),
        (
            "TE chunked twice",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            400,
        ),
        (
            "TE chunked twice, 2 fields",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "TE empty",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n",
            400,
        ),
        (
            "TE with parameter",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
            400,
        ),
        (
            "TE in HTTP/1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "obs-fold",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
            400,
        ),
        (
            "obs-fold tab",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tb\r\n\r\n",
            400,
        ),
        (
            "space before colon",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            400,
        ),
        (
            "tab before colon",
            "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n",
            400,
        ),
        (
            "NUL in value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
            400,
        ),
        (
            "CR in value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
            400,
        ),
        (
            "LF in value",
            "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nb\r\n\r\n",
            400,
        ),
        (
            "empty name",
            "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n",
            400,
        ),
        ("no Host in 1.1", "GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
        (
            "two Hosts",
            "GET / HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
            400,
        ),
        (
            "two Hosts in 1.0",
            "GET / HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n",
            400,
        ),
        ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
        ("HTTP/0.9 style", "GET / HTTP/0.9\r\n\r\n", 505),
        (
            "lower-case version",
            "GET / http/1.1\r\nHost: x\r\n\r\n",
            400,
        ),
        ("no version", "GET /\r\n\r\n", 400),
        ("bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("double space", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            "CONNECT",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
            501,
        ),
    ];
    for (what, req, want) in cases {
        assert_eq!(status(req.as_bytes()), want, "{what}");
    }
}

#[test]
fn limits() {
    // Request line: exactly MAX_REQUEST_LINE bytes with its CRLF is fine.
    let line = |len: usize| {
        let mut req = b"GET /".to_vec();
        req.resize(len - " HTTP/1.1\r\n".len(), b'a');
        req.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\n\r\n");
        req
    };
    assert_eq!(status(&line(MAX_REQUEST_LINE)), 200);
    assert_eq!(status(&line(MAX_REQUEST_LINE + 1)), 414);
    // ...and the error comes as soon as the limit is passed, without a CRLF.
    let partial = line(MAX_REQUEST_LINE + 1000);
    assert_eq!(
        status(partial.get(..MAX_REQUEST_LINE).unwrap_or_default()),
        0
    );
    assert_eq!(
        status(partial.get(..=MAX_REQUEST_LINE).unwrap_or_default()),
        414
    );

    // Head: exactly MAX_HEAD bytes is fine.
    let head = |len: usize| {
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
        req.resize(len - 4, b'a');
        req.extend_from_slice(b"\r\n\r\n");
        req
    };
    assert_eq!(status(&head(MAX_HEAD)), 200);
    assert_eq!(status(&head(MAX_HEAD + 1)), 431);
    let partial = head(MAX_HEAD + 1000);
    assert_eq!(status(partial.get(..MAX_HEAD).unwrap_or_default()), 0);
    assert_eq!(status(partial.get(..=MAX_HEAD).unwrap_or_default()), 431);

    // Fields: MAX_HEADERS is fine, one more is not (even before the head ends).
    let fields = |n: usize| {
        let mut req = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..n {
            req.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        req
    };
    let mut max = fields(MAX_HEADERS);
    max.extend_from_slice(b"\r\n");
    assert_eq!(status(&max), 200);
    assert_eq!(status(&fields(MAX_HEADERS + 1)), 431);
    // A smaller slot array lowers the limit instead of panicking.
    let mut few = [EMPTY_HEADER; 2];
    let err = parse_request(
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\nC: d\r\n\r\n",
        &mut few,
    );
    assert_eq!(err.map(|r| r.is_some()), Err(HttpError::HeadersTooLarge));
}

#[test]
fn keep_alive_matrix() {
    let cases = [
        ("1.1", "", true),
        ("1.1", "Connection: close\r\n", false),
        ("1.1", "Connection: keep-alive\r\n", true),
        ("1.1", "Connection: Keep-Alive, CLOSE\r\n", false),
        ("1.0", "", false),
        ("1.0", "Connection: close\r\n", false),
        ("1.0", "Connection: keep-alive\r\n", true),
        ("1.0", "Connection: foo\r\nConnection: keep-alive\r\n", true),
    ];
    for (version, field, want) in cases {
        let req = format!("GET / HTTP/{version}\r\nHost: x\r\n{field}\r\n");
        let head = parse(req.as_bytes()).ok().flatten();
        assert_eq!(head.map(|h| h.keep_alive), Some(want), "{req:?}");
    }
}

#[test]
fn expect_continue() {
    let cases = [
        ("1.1", "Expect: 100-continue\r\n", true),
        ("1.1", "Expect: 100-Continue\r\n", true),
        ("1.1", "Expect: something\r\n", false),
        ("1.1", "", false),
        ("1.0", "Expect: 100-continue\r\n", false),
    ];
    for (version, field, want) in cases {
        let req = format!("PUT / HTTP/{version}\r\nHost: x\r\nContent-Length: 1\r\n{field}\r\n");
        let head = parse(req.as_bytes()).ok().flatten();
        assert_eq!(head.map(|h| h.expect_continue), Some(want), "{req:?}");
    }
}

#[test]
fn methods() {
    let cases = [
        ("GET", Method::Get, true),
        ("HEAD", Method::Head, true),
        ("OPTIONS", Method::Options, true),
        ("TRACE", Method::Trace, true),
        ("PUT", Method::Put, true),
        ("DELETE", Method::Delete, true),
        ("POST", Method::Post, false),
        ("PATCH", Method::Patch, false),
        ("PURGE", Method::Other, false),
        ("head", Method::Other, false),
    ];
    for (text, method, idempotent) in cases {
        assert_eq!(Method::from_bytes(text.as_bytes()), method, "{text}");
        assert_eq!(method.is_idempotent(), idempotent, "{text}");
        assert_eq!(method.is_head(), method == Method::Head, "{text}");
    }
}

#[test]
fn pipelined_requests() {
    let first = "POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc";
    let second = "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n";
    let buf = format!("{first}{second}");
    let buf = buf.as_bytes();
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(req)) = parse_request(buf, &mut headers) else {
        panic!("first request");
    };
    assert_eq!((req.target(), req.head.body), ("/1", BodyKind::Length(3)));
    let rest = buf.get(req.head.head_len + 3..).unwrap_or_default();
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(req)) = parse_request(rest, &mut headers) else {
        panic!("second request");
    };
    assert_eq!((req.method_str(), req.target()), ("GET", "/2"));
    assert_eq!(req.head.head_len, second.len());
}

#[test]
fn every_split_point() {
    let requests = [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "\r\nPOST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nX-A: a b\r\n\r\nhello",
        "PUT /x HTTP/1.0\nTransfer-Encoding: chunked\n\n",
        "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
        "GET / HTTP/3.0\r\n\r\n",
    ];
    for req in requests {
        let bytes = req.as_bytes();
        let whole = parse(bytes);
        let end = match whole {
            Ok(Some(head)) => head.head_len,
            _ => bytes.len(),
        };
        for cut in 0..bytes.len() {
            let prefix = parse(bytes.get(..cut).unwrap_or_default());
            if cut < end {
                // Incomplete, or the same error the whole input gives.
                assert!(
                    prefix == Ok(None) || prefix == whole,
                    "{req:?} at {cut}: {prefix:?}"
                );
            } else {
                assert_eq!(prefix, whole, "{req:?} at {cut}");
            }
        }
    }
}

#[test]
fn upgrade_is_forwarded_only_when_asked_for_on_a_get() {
    let ip: std::net::IpAddr = [10, 0, 0, 1].into();
    let rewrite = |req: &[u8]| {
        let mut headers = [EMPTY_HEADER; MAX_HEADERS];
        let Ok(Some(p)) = parse_request(req, &mut headers) else {
            panic!("must parse: {req:?}");
        };
        let mut out = Vec::new();
        let mut ids = IdGen::new(1, 0);
        p.write_head(ip, true, &ForwardOpts::off(), &mut ids, &mut out);
        (p.head.upgrade, String::from_utf8_lossy(&out).into_owned())
    };
    let (up, head) = rewrite(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert!(up);
    assert_eq!(
        head,
        "GET /ws HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    );
    // Not listed in Connection, not a GET, or HTTP/1.0: stripped as hop-by-hop.
    for req in [
        &b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"[..],
        b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        b"GET /ws HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let (up, head) = rewrite(req);
        assert!(!up, "{head}");
        assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
    }
}
