//! Proxy fields at the byte level: exact heads out of the request and
//! response writers, and the rules for ids and names.

use std::net::IpAddr;

use super::*;
use crate::http::{EMPTY_HEADER, MAX_HEADERS, Method, parse_request, parse_response};

/// Rewrites `buf` with `opts` and ids from a generator with prefix
/// 0x1122334455667788 on worker 2; returns the head and the id.
fn rewrite_request(
    buf: &str,
    ip: &str,
    backend_close: bool,
    opts: &ForwardOpts,
) -> (String, String) {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(req)) = parse_request(buf.as_bytes(), &mut headers) else {
        panic!("not a complete request: {buf:?}");
    };
    let ip: IpAddr = ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut out = b"previous".to_vec();
    let mut ids = IdGen::new(0x1122_3344_5566_7788, 2);
    let id = req.write_head(ip, backend_close, opts, &mut ids, &mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    let head = out
        .strip_prefix("previous")
        .unwrap_or("appended nothing")
        .to_string();
    (head, id.as_str().to_string())
}

fn rewrite_response(
    buf: &str,
    client_close: bool,
    client_minor: u8,
    opts: &ForwardOpts,
    id: &str,
) -> String {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(resp)) = parse_response(buf.as_bytes(), Method::Get, false, &mut headers) else {
        panic!("not a complete response: {buf:?}");
    };
    let id = RequestId::from_client(id.as_bytes()).unwrap_or(RequestId::EMPTY);
    let mut out = b"previous".to_vec();
    resp.write_head(client_close, client_minor, opts, &id, &mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    out.strip_prefix("previous")
        .unwrap_or("appended nothing")
        .to_string()
}

#[test]
fn generated_ids_are_hex_and_distinct() {
    let mut g = IdGen::new(0x0123_4567_89ab_cdef, 3);
    let a = g.next_id();
    let b = g.next_id();
    assert_eq!(a.as_str(), "0123456789abcdef0003000000000000");
    assert_eq!(b.as_str(), "0123456789abcdef0003000000000001");
    let mut g = IdGen::new(u64::MAX, u16::MAX);
    g.next = COUNTER_MASK;
    assert_eq!(g.next_id().as_str(), "ffffffffffffffffffffffffffffffff");
    assert_eq!(g.next_id().as_str(), "ffffffffffffffffffff000000000000");
}

#[test]
fn client_ids_are_bounded_tokens() {
    let max = "a".repeat(MAX_REQUEST_ID);
    assert_eq!(
        RequestId::from_client(max.as_bytes()).map(|i| i.as_str().len()),
        Some(MAX_REQUEST_ID)
    );
    let long = "a".repeat(MAX_REQUEST_ID + 1);
    for bad in ["", "a b", "a,b", "é", "a\t", long.as_str()] {
        assert_eq!(RequestId::from_client(bad.as_bytes()), None, "{bad:?}");
    }
    let ok = RequestId::from_client(b"4bf92f35-77b3.x_y~1");
    assert_eq!(
        ok.map(|i| i.as_str().to_string()).as_deref(),
        Some("4bf92f35-77b3.x_y~1")
    );
    assert!(RequestId::EMPTY.is_empty() && RequestId::EMPTY.as_bytes().is_empty());
}

#[test]
fn names_and_pseudonyms() {
    assert!(check_token("tidegate", false).is_ok());
    assert!(check_token("X-Trace-Id", true).is_ok());
    assert!(check_token("Via", false).is_ok());
    for bad in ["", "a b", "x:y", &"a".repeat(65)] {
        assert!(check_token(bad, false).is_err(), "{bad:?}");
    }
    for reserved in ["Host", "connection", "X-Forwarded-Host", "via"] {
        assert!(check_token(reserved, true).is_err(), "{reserved}");
    }
}

/// The first id `rewrite_request`'s generator hands out.
const GENERATED: &str = "11223344556677880002000000000000";

#[test]
fn proxy_fields_for_backend() {
    let on = ForwardOpts::default();
    let cases = [
        (
            "all added, in this order, before Connection: close",
            "GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
            true,
            "GET / HTTP/1.1\r\nHost: example.com:8080\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 tidegate\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com:8080\r\n\
             X-Request-Id: 11223344556677880002000000000000\r\nConnection: close\r\n\r\n",
            GENERATED,
        ),
        (
            "Via appended to the last Via field, received version 1.0, no Host",
            "GET / HTTP/1.0\r\nVia: 1.1 a\r\nVia: HTTP/2 b,\r\nX: y\r\n\r\n",
            false,
            "GET / HTTP/1.0\r\nVia: 1.1 a\r\nVia: HTTP/2 b,, 1.0 tidegate\r\nX: y\r\nX-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Request-Id: 11223344556677880002000000000000\r\n\r\n",
            GENERATED,
        ),
        (
            "an empty Via gets just our element",
            "GET / HTTP/1.1\r\nHost: h\r\nVia:\r\n\r\n",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 tidegate\r\nX-Forwarded-For: 10.0.0.1\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-Id: 11223344556677880002000000000000\r\n\r\n",
            GENERATED,
        ),
        (
            "client's id kept (moved to the end); X-Forwarded-Proto/Host replaced",
            "GET / HTTP/1.1\r\nx-request-id: abc-123\r\nX-Forwarded-Proto: https\r\nHost: h\r\n\
             X-Forwarded-Host: evil\r\n\r\n",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 tidegate\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-Id: abc-123\r\n\r\n",
            "abc-123",
        ),
        (
            "invalid client id replaced",
            "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: a b\r\n\r\n",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 tidegate\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-Id: 11223344556677880002000000000000\r\n\r\n",
            GENERATED,
        ),
        (
            "two client ids: both replaced",
            "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n\r\n",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 tidegate\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-Id: 11223344556677880002000000000000\r\n\r\n",
            GENERATED,
        ),
        (
            "client id named in Connection is hop-by-hop: not kept",
            "GET / HTTP/1.1\r\nHost: h\r\nX-Request-Id: a\r\nConnection: X-Request-Id\r\n\r\n",
            false,
            "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 10.0.0.1\r\nVia: 1.1 tidegate\r\n\
             X-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\nX-Request-Id: 11223344556677880002000000000000\r\n\r\n",
            GENERATED,
        ),
    ];
    for (what, req, close, want, id) in cases {
        let (head, got_id) = rewrite_request(req, "10.0.0.1", close, &on);
        assert_eq!(head, want, "{what}");
        assert_eq!(got_id, id, "{what}");
    }
}

#[test]
fn proxy_fields_configured() {
    let req =
        "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 a\r\nX-Request-Id: kept\r\nX-Trace: t1\r\n\r\n";
    // Off: Via and the id field pass through untouched.
    let (head, id) = rewrite_request(req, "10.0.0.1", false, &ForwardOpts::off());
    assert_eq!(
        head,
        "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 a\r\nX-Request-Id: kept\r\nX-Trace: t1\r\n\
         X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: h\r\n\r\n"
    );
    assert_eq!(id, "");
    // Another pseudonym, id field and scheme.
    let opts = ForwardOpts {
        via: Some("edge-1".into()),
        proto: Proto::Https,
        request_id: Some("X-Trace".into()),
    };
    let (head, id) = rewrite_request(req, "10.0.0.1", false, &opts);
    assert_eq!(
        head,
        "GET / HTTP/1.1\r\nHost: h\r\nVia: 1.1 a, 1.1 edge-1\r\nX-Request-Id: kept\r\n\
         X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\nX-Trace: t1\r\n\r\n"
    );
    assert_eq!(id, "t1");
}

#[test]
fn proxy_fields_for_client() {
    let on = ForwardOpts::default();
    let cases = [
        (
            "Via and the id added before Connection",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            true,
            "id-1",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVia: 1.1 tidegate\r\nX-Request-Id: id-1\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.0 backend: 1.0 in Via; existing Via extended; echoed id replaced",
            "HTTP/1.0 200 OK\r\nVia: 1.1 cache\r\nx-request-id: other\r\nContent-Length: 0\r\n\r\n",
            true,
            "id-1",
            "HTTP/1.1 200 OK\r\nVia: 1.1 cache, 1.0 tidegate\r\nContent-Length: 0\r\nX-Request-Id: id-1\r\nConnection: close\r\n\r\n",
        ),
        (
            "fields named in Connection do not reach the client",
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s3cr3t\r\nContent-Length: 0\r\n\r\n",
            false,
            "id-1",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVia: 1.1 tidegate\r\nX-Request-Id: id-1\r\n\r\n",
        ),
        (
            "interim: Via only",
            "HTTP/1.1 100 Continue\r\n\r\n",
            false,
            "id-1",
            "HTTP/1.1 100 Continue\r\nVia: 1.1 tidegate\r\n\r\n",
        ),
        (
            "no id (ids were off for the request): the backend's field passes",
            "HTTP/1.1 204 No Content\r\nX-Request-Id: b\r\n\r\n",
            false,
            "",
            "HTTP/1.1 204 No Content\r\nX-Request-Id: b\r\nVia: 1.1 tidegate\r\n\r\n",
        ),
    ];
    for (what, resp, close, id, want) in cases {
        assert_eq!(rewrite_response(resp, close, 1, &on, id), want, "{what}");
    }
    let off = "HTTP/1.1 200 OK\r\nVia: 1.1 a\r\nX-Request-Id: b\r\nContent-Length: 0\r\n\r\n";
    assert_eq!(
        rewrite_response(off, false, 1, &ForwardOpts::off(), "id-1"),
        off
    );
}
