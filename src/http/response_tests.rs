use super::*;
use crate::http::{EMPTY_HEADER, MAX_HEAD, MAX_REQUEST_LINE};

fn parse(buf: &[u8], method: Method) -> Result<Option<ResponseHead>, HttpError> {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    parse_response(buf, method, false, &mut headers).map(|r| r.map(|r| r.head))
}

fn rewrite(buf: &str, client_close: bool, client_minor: u8) -> String {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(resp)) = parse_response(buf.as_bytes(), Method::Get, false, &mut headers) else {
        panic!("not a complete response: {buf:?}");
    };
    let mut out = b"previous".to_vec();
    let (opts, id) = (ForwardOpts::off(), RequestId::EMPTY);
    resp.write_head(client_close, client_minor, &opts, &id, &mut out);
    let out = String::from_utf8_lossy(&out).into_owned();
    out.strip_prefix("previous")
        .unwrap_or("appended nothing")
        .to_string()
}

#[test]
fn framing_matrix() {
    use BodyKind::{Chunked, CloseDelimited, Length, None as NoBody};
    let get = Method::Get;
    let head = Method::Head;
    let cases: [(&str, Method, &str, BodyKind, bool); 20] = [
        ("200 OK", get, "Content-Length: 5\r\n", Length(5), true),
        ("200 OK", get, "Content-Length: 5, 5\r\n", Length(5), true),
        (
            "200 OK",
            get,
            "Transfer-Encoding: chunked\r\n",
            Chunked,
            true,
        ),
        (
            "200 OK",
            get,
            "Transfer-Encoding: gzip, chunked\r\n",
            Chunked,
            true,
        ),
        (
            "200 OK",
            get,
            "Transfer-Encoding: gzip\r\n",
            CloseDelimited,
            false,
        ),
        (
            "200 OK",
            get,
            "Transfer-Encoding: chunked, gzip\r\n",
            CloseDelimited,
            false,
        ),
        ("200 OK", get, "", CloseDelimited, false),
        ("200 OK", head, "Content-Length: 5\r\n", NoBody, true),
        (
            "200 OK",
            head,
            "Transfer-Encoding: chunked\r\n",
            NoBody,
            true,
        ),
        ("200 OK", head, "", NoBody, true),
        ("100 Continue", get, "", NoBody, true),
        ("103 Early Hints", get, "Link: </s.css>\r\n", NoBody, true),
        ("204 No Content", get, "Content-Length: 5\r\n", NoBody, true),
        ("204 No Content", get, "", NoBody, true),
        (
            "304 Not Modified",
            get,
            "Content-Length: 5\r\n",
            NoBody,
            true,
        ),
        (
            "304 Not Modified",
            get,
            "Transfer-Encoding: chunked\r\n",
            NoBody,
            true,
        ),
        (
            "404 Not Found",
            get,
            "Content-Length: 0\r\n",
            Length(0),
            true,
        ),
        (
            "500 Oops",
            get,
            "Content-Length: 3\r\nConnection: close\r\n",
            Length(3),
            false,
        ),
        (
            "200 OK",
            get,
            "Connection: close\r\nTransfer-Encoding: chunked\r\n",
            Chunked,
            false,
        ),
        ("599 Max", get, "Content-Length: 1\r\n", Length(1), true),
    ];
    for (status_line, method, fields, body, keep_alive) in cases {
        let resp = format!("HTTP/1.1 {status_line}\r\n{fields}\r\n");
        let got = parse(resp.as_bytes(), method).ok().flatten();
        let got = got.map(|h| (h.head_len, h.body, h.keep_alive));
        assert_eq!(
            got,
            Some((resp.len(), body, keep_alive)),
            "{resp:?} to {method:?}"
        );
    }
}

#[test]
fn interim_and_status() {
    let cases = [
        ("HTTP/1.1 100 Continue\r\n\r\n", 100, true),
        ("HTTP/1.1 199 Whatever\r\n\r\n", 199, true),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200, false),
        ("HTTP/1.1 204\r\n\r\n", 204, false),
    ];
    for (resp, status, interim) in cases {
        let head = parse(resp.as_bytes(), Method::Get).ok().flatten();
        assert_eq!(
            head.map(|h| (h.status, h.is_interim)),
            Some((status, interim)),
            "{resp:?}"
        );
    }
}

#[test]
fn keep_alive_matrix() {
    let cases = [
        ("1.1", "", true),
        ("1.1", "Connection: close\r\n", false),
        ("1.1", "Connection: keep-alive\r\n", true),
        ("1.0", "", false),
        ("1.0", "Connection: close\r\n", false),
        ("1.0", "Connection: keep-alive\r\n", true),
        ("1.0", "Connection: keep-alive, close\r\n", false),
    ];
    for (version, field, want) in cases {
        let resp = format!("HTTP/{version} 200 OK\r\nContent-Length: 0\r\n{field}\r\n");
        let head = parse(resp.as_bytes(), Method::Get).ok().flatten();
        assert_eq!(
            head.map(|h| (h.minor, h.keep_alive)),
            Some((u8::from(version == "1.1"), want))
        );
    }
}

#[test]
fn rejections() {
    let big_line = format!("HTTP/1.1 200 {}\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
    let big_head = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
    let cases: [(&str, &str); 22] = [
        (
            "CL and TE",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "CL differ",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        ),
        (
            "CL invalid",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n",
        ),
        (
            "CL invalid on 304",
            "HTTP/1.1 304 Not Modified\r\nContent-Length: -1\r\n\r\n",
        ),
        (
            "CL overflow",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ),
        (
            "chunked twice",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        ),
        (
            "TE in 1.0",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "101",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
        ),
        ("status < 100", "HTTP/1.1 099 Low\r\n\r\n"),
        ("status > 599", "HTTP/1.1 600 High\r\n\r\n"),
        ("status not 3 digits", "HTTP/1.1 20 OK\r\n\r\n"),
        ("HTTP/2", "HTTP/2 200 OK\r\n\r\n"),
        ("HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n"),
        (
            "obs-fold",
            "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "space before colon",
            "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        ),
        ("NUL in value", "HTTP/1.1 200 OK\r\nX-A: a\0b\r\n\r\n"),
        ("CR in value", "HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n"),
        ("LF in value", "HTTP/1.1 200 OK\r\nX-A: a\nb\r\n\r\n"),
        ("garbage", "<html>\r\n\r\n"),
        ("status line too long", &big_line),
        ("head too large", &big_head),
        ("too many fields", &many),
    ];
    for (what, resp) in cases {
        let got = parse(resp.as_bytes(), Method::Get);
        assert!(
            matches!(got, Err(HttpError::BadResponse(_))),
            "{what}: {got:?}"
        );
        assert_eq!(got.map_err(|e| e.status()), Err(502), "{what}");
    }
}

#[test]
fn rewrite_for_client() {
    let cases = [
        (
            "plain 1.1 client stays open",
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: b\r\n\r\n",
            false,
            1,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nServer: b\r\n\r\n",
        ),
        (
            "HTTP/1.0 backend, hop-by-hop removed, client closes",
            "HTTP/1.0 404 Not Found\r\nConnection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\
             Content-Length: 3, 3\r\nTrailer: X\r\nUpgrade: h2c\r\nProxy-Connection: x\r\nTE: y\r\n\r\n",
            true,
            1,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\n",
        ),
        (
            "HTTP/1.0 client stays open",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            0,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
        ),
        (
            "close wins for an HTTP/1.0 client",
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            true,
            0,
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        (
            "chunked kept, empty and obs-text reason kept",
            "HTTP/1.1 200 été\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
            1,
            "HTTP/1.1 200 été\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ),
        (
            "no reason phrase",
            "HTTP/1.1 204\r\nX: y\r\n\r\n",
            false,
            1,
            "HTTP/1.1 204 \r\nX: y\r\n\r\n",
        ),
        (
            "interim: no Connection field added",
            "HTTP/1.1 100 Continue\r\nConnection: foo\r\nFoo: 1\r\n\r\n",
            true,
            1,
            "HTTP/1.1 100 Continue\r\n\r\n",
        ),
    ];
    for (what, resp, close, minor, want) in cases {
        assert_eq!(rewrite(resp, close, minor), want, "{what}");
    }
}

#[test]
fn every_split_point() {
    let responses = [
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "\r\nHTTP/1.0 302 Found\nLocation: /x\n\n",
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n",
    ];
    for resp in responses {
        let bytes = resp.as_bytes();
        let whole = parse(bytes, Method::Get);
        let end = match whole {
            Ok(Some(head)) => head.head_len,
            _ => bytes.len(),
        };
        for cut in 0..bytes.len() {
            let prefix = parse(bytes.get(..cut).unwrap_or_default(), Method::Get);
            if cut < end {
                assert!(
                    prefix == Ok(None) || prefix == whole,
                    "{resp:?} at {cut}: {prefix:?}"
                );
            } else {
                assert_eq!(prefix, whole, "{resp:?} at {cut}");
            }
        }
    }
}

#[test]
fn a_switch_is_accepted_only_when_asked_for() {
    let buf = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nframes";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(p)) = parse_response(buf, Method::Get, true, &mut headers) else {
        panic!("a 101 to an upgrade request must parse");
    };
    assert!(p.head.switching && !p.head.is_interim && !p.head.keep_alive);
    assert_eq!(p.head.body, BodyKind::None);
    assert_eq!(&buf[p.head.head_len..], b"frames");
    let mut out = Vec::new();
    p.write_head(false, 1, &ForwardOpts::off(), &RequestId::EMPTY, &mut out);
    assert_eq!(
        out,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
    );
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(parse_response(buf, Method::Get, false, &mut headers).is_err());
}

#[test]
fn retry_after_is_noticed() {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let buf = b"HTTP/1.1 503 Busy\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n";
    let Ok(Some(p)) = parse_response(buf, Method::Get, false, &mut headers) else {
        panic!("must parse");
    };
    assert!(p.head.retry_after);
}
