//! Proxy mode, responses and forwarding: Content-Length, chunked with
//! trailers, close-delimited, bodiless responses (HEAD, 1xx, 204, 304),
//! interim responses, hop-by-hop fields and X-Forwarded-For.

mod util;

use std::time::Duration;

use util::TestResult;
use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted, header};

/// A backend answering by target: `/name` gets `replies(name)`.
fn by_target(replies: fn(&str) -> Reply) -> std::io::Result<Scripted> {
    Scripted::start(move |seen| {
        let target = seen.head.split(' ').nth(1).unwrap_or("/");
        replies(target.trim_start_matches('/'))
    })
}

fn ok(body: &str) -> Reply {
    Reply::Send(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[test]
fn content_length_response_is_relayed() -> TestResult {
    let s =
        Scripted::always(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-App: 1\r\n\r\nhello")?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    for _ in 0..2 {
        let r = c.get("/")?;
        assert_eq!((r.status, r.body_str().as_str()), (201, "hello"));
        assert_eq!(r.header("content-length"), Some("5"));
        assert_eq!(r.header("x-app"), Some("1"));
    }
    Ok(())
}

#[test]
fn chunked_response_with_trailers_is_relayed_verbatim() -> TestResult {
    const BODY: &[u8] = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\nX-More: a b\r\n\r\n";
    let s = by_target(|t| match t {
        "chunked" => {
            let mut r =
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n".to_vec();
            r.extend_from_slice(BODY);
            Reply::Send(r)
        }
        _ => ok("next"),
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let r = c.get("/chunked")?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(
        r.raw_body == BODY,
        "{:?}",
        String::from_utf8_lossy(&r.raw_body)
    );
    assert_eq!(r.body_str(), "hello world");
    assert_eq!(
        r.trailers,
        vec![
            ("X-Sum".into(), "42".into()),
            ("X-More".into(), "a b".into())
        ]
    );
    // The framing stayed in sync: the next response is intact.
    assert_eq!(c.get("/next")?.body_str(), "next");
    Ok(())
}

#[test]
fn close_delimited_response_is_relayed_and_closes() -> TestResult {
    let body = util::pattern(5, 200_000);
    let mut resp = b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    resp.extend_from_slice(&body);
    let s = Scripted::start(move |_| Reply::SendClose(resp.clone()))?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    for version in ["1.1", "1.0"] {
        let mut c = p.client()?;
        let req = format!("GET / HTTP/{version}\r\nHost: t\r\n\r\n");
        let r = c.exchange(req.as_bytes())?;
        assert_eq!(r.status, 200, "{}", r.head);
        assert!(r.connection_has("close"), "{}", r.head);
        assert!(r.header("content-length").is_none(), "{}", r.head);
        // The client parser reads to EOF: every byte arrived, then the close.
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "body differs");
    }
    Ok(())
}

#[test]
fn head_response_has_no_body_even_with_content_length() -> TestResult {
    let s = by_target(|t| match t {
        "head" => Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_vec()),
        _ => ok("after"),
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n")?;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("10"));
    // Had the proxy waited for 10 body bytes, this would time out; had it
    // sent any, they would show up in front of the next response.
    let r = c.get("/after")?;
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "after"),
        "{}",
        r.head
    );
    Ok(())
}

#[test]
fn no_body_for_204_and_304() -> TestResult {
    let s = by_target(|t| match t {
        "204" => Reply::Send(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n".to_vec()),
        "304" => Reply::Send(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 20\r\nETag: \"x\"\r\n\r\n".to_vec(),
        ),
        _ => ok("after"),
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    for path in ["/204", "/304", "/204"] {
        let r = c.get(path)?;
        assert_eq!(format!("/{}", r.status), path);
        assert!(c.pending().is_empty(), "{path}: bytes after the head");
        let r = c.get("/after")?;
        assert_eq!(r.body_str(), "after", "{path}: {}", r.head);
    }
    Ok(())
}

#[test]
fn interim_responses_are_forwarded_before_the_final_one() -> TestResult {
    let s = Scripted::always(
        b"HTTP/1.1 100 Continue\r\n\r\n\
          HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine",
    )?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")?;
    let hints = {
        let first = c.message(false)?;
        assert_eq!(first.status, 100, "{}", first.head);
        c.message(false)?
    };
    assert_eq!(hints.status, 103, "{}", hints.head);
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"));
    let r = c.response(false)?;
    assert_eq!((r.status, r.body_str().as_str()), (200, "fine"));
    // Again on the same connection, as one final response with interims.
    let r = c.get("/")?;
    assert_eq!((r.status, r.interim.clone()), (200, vec![100, 103]));
    Ok(())
}

#[test]
fn interim_responses_are_not_sent_to_http10_clients() -> TestResult {
    let s = Scripted::always(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine",
    )?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.send(b"GET / HTTP/1.0\r\n\r\n")?;
    // RFC 9110 15.2: a server must not send a 1xx to an HTTP/1.0 client.
    let r = c.message(false)?;
    assert_eq!(
        (r.status, r.body_str().as_str()),
        (200, "fine"),
        "{}",
        r.head
    );
    Ok(())
}

#[test]
fn hop_by_hop_request_fields_are_removed() -> TestResult {
    let s = Scripted::always(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(
        b"GET /h HTTP/1.1\r\nHost: example.test\r\nConnection: keep-alive, X-Private\r\n\
          X-Private: secret\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
          TE: trailers\r\nTrailer: X-Sum\r\nUpgrade: websocket\r\nX-End: kept\r\n\r\n",
    )?;
    assert_eq!(r.status, 200);
    let seen = s.next().ok_or("backend saw nothing")?;
    let lower = seen.head.to_ascii_lowercase();
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        assert!(
            header(&lower, gone).is_none(),
            "{gone} forwarded:\n{}",
            seen.head
        );
    }
    assert!(!lower.contains("secret"), "{}", seen.head);
    assert_eq!(header(&lower, "host"), Some("example.test"));
    assert_eq!(header(&lower, "x-end"), Some("kept"));
    assert!(
        seen.head.starts_with("GET /h HTTP/1.1\r\n"),
        "{}",
        seen.head
    );
    Ok(())
}

#[test]
fn hop_by_hop_response_fields_are_removed() -> TestResult {
    let s = Scripted::always(
        b"HTTP/1.1 200 OK\r\nConnection: X-Internal\r\nX-Internal: 1\r\n\
          Keep-Alive: timeout=5\r\nX-Public: 2\r\nContent-Length: 0\r\n\r\n",
    )?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let r = p.client()?.get("/")?;
    assert_eq!(r.status, 200);
    assert!(r.header("x-internal").is_none(), "{}", r.head);
    assert!(r.header("keep-alive").is_none(), "{}", r.head);
    assert!(r.header("connection").is_none(), "{}", r.head);
    assert_eq!(r.header("x-public"), Some("2"));
    Ok(())
}

#[test]
fn x_forwarded_for_is_added_or_appended() -> TestResult {
    let s = Scripted::always(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    c.get("/")?;
    let seen = s.next().ok_or("backend saw nothing")?;
    let lower = seen.head.to_ascii_lowercase();
    assert_eq!(header(&lower, "x-forwarded-for"), Some("127.0.0.1"));
    c.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n")?;
    let seen = s.next().ok_or("backend saw nothing")?;
    let lower = seen.head.to_ascii_lowercase();
    assert_eq!(
        header(&lower, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(lower.matches("x-forwarded-for").count(), 1, "{}", seen.head);
    assert!(!c.closed_within(Duration::from_millis(50))?);
    Ok(())
}
