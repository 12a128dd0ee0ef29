//! `RequestHead::write_head`: the head a backend receives.

use std::net::IpAddr;

use super::*;
use crate::http::EMPTY_HEADER;

fn rewrite(buf: &str, ip: &str, backend_close: bool) -> String {
    let mut headers = [EMPTY_HEADER; MAX_HEADERS];
    let Ok(Some(req)) = parse_request(buf.as_bytes(), &mut headers) else {
        panic!("not a complete request: {buf:?}");
    };
    let ip: IpAddr = ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let mut out = b"previous".to_vec();
    let mut ids = IdGen::new(1, 0);
    let id = req.write_head(ip, backend_close, &ForwardOpts::off(), &mut ids, &mut out);
    assert!(id.is_empty(), "ids are off");
    let out = String::from_utf8_lossy(&out).into_owned();
    out.strip_prefix("previous")
        .unwrap_or("appended nothing")
        .to_string()
}

#[test]
fn rewrite_for_backend() {
    let cases = [
        (
            "plain",
            "GET /p?q HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
            "10.0.0.1",
            false,
            "GET /p?q HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "hop-by-hop removed, backend close",
            "GET / HTTP/1.1\r\nConnection: keep-alive, X-Foo\r\nHost: x\r\nKeep-Alive: 5\r\nX-Foo: 1\r\n\
             Proxy-Connection: x\r\nTE: trailers\r\nTrailer: X\r\nUpgrade: websocket\r\nx-foo: 2\r\nX-Bar: 3\r\n\r\n",
            "10.0.0.1",
            true,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Bar: 3\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\nConnection: close\r\n\r\n",
        ),
        (
            "Connection: close, X-Foo",
            "GET / HTTP/1.1\r\nHost: x\r\nX-Foo: 1\r\nConnection: close, X-Foo\r\n\r\n",
            "10.0.0.1",
            false,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "framing fields are not Connection options",
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: Content-Length, Host\r\n\r\n",
            "10.0.0.1",
            false,
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "XFF appended",
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: x\r\n\r\n",
            "10.0.0.1",
            false,
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 10.0.0.1\r\nHost: x\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "XFF appended to the last field",
            "GET / HTTP/1.1\r\nx-forwarded-for: 1.1.1.1\r\nHost: x\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3\r\n\r\n",
            "::1",
            false,
            "GET / HTTP/1.1\r\nx-forwarded-for: 1.1.1.1\r\nHost: x\r\nX-Forwarded-For: 2.2.2.2, 3.3.3.3, ::1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "empty XFF",
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For:\r\n\r\n",
            "10.0.0.1",
            false,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "XFF named in Connection is replaced",
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 6.6.6.6\r\nConnection: x-forwarded-for\r\n\r\n",
            "::ffff:10.0.0.1",
            false,
            "GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
        (
            "HTTP/1.0 kept (no chunked reply), framing normalised, Expect kept",
            "PUT /u HTTP/1.0\r\nContent-Length: 5, 5\r\nExpect: 100-continue\r\ncontent-length: 5\r\n\r\n",
            "2001:db8::1",
            false,
            "PUT /u HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\nX-Forwarded-For: 2001:db8::1\r\nX-Forwarded-Proto: http\r\n\r\n",
        ),
        (
            "chunked",
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: ,\r\n\r\n",
            "10.0.0.1",
            false,
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: x\r\n\r\n",
        ),
    ];
    for (what, req, ip, close, want) in cases {
        assert_eq!(rewrite(req, ip, close), want, "{what}");
    }
}
