//! Proxy mode, the fields a proxy adds: `Via` both ways, `X-Forwarded-Proto`
//! and `X-Forwarded-Host` to the backend, the request id (generated or the
//! client's) to the backend and back, `--via off` / `--request-id off`, and
//! fields a response's `Connection` names not reaching the client.

mod util;

use tidegate::http::ForwardOpts;
use util::client::{Client, Response};
use util::proxy::{self, Opts};
use util::scripted::{Reply, Scripted, Seen, header};
use util::{Proc, TestResult, run_bin};

const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The lower-cased head the backend saw for the next request.
fn next_head(s: &Scripted) -> Result<String, String> {
    s.next()
        .map(|seen: Seen| seen.head.to_ascii_lowercase())
        .ok_or_else(|| "backend saw nothing".to_string())
}

/// How many fields named `name` (lower case) a lower-cased head has.
fn count(lower_head: &str, name: &str) -> usize {
    lower_head
        .lines()
        .filter(|l| l.split_once(':').is_some_and(|(k, _)| k.trim() == name))
        .count()
}

/// A generated id: 32 lower-case hex digits.
fn is_generated(id: &str) -> bool {
    id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn fields_in(r: &Response, name: &str) -> usize {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .count()
}

#[test]
fn backend_and_client_see_the_proxy_fields() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(b"GET /a HTTP/1.1\r\nHost: shop.example:8443\r\n\r\n")?;
    assert_eq!(r.status, 200, "{}", r.head);
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "via"), Some("1.1 tidegate"), "{seen}");
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"), "{seen}");
    assert_eq!(
        header(&seen, "x-forwarded-host"),
        Some("shop.example:8443"),
        "{seen}"
    );
    assert_eq!(
        header(&seen, "x-forwarded-for"),
        Some("127.0.0.1"),
        "{seen}"
    );
    let id = header(&seen, "x-request-id").ok_or("no request id")?;
    assert!(is_generated(id), "{id}");
    // The client gets Via and the same id, once each.
    assert_eq!(r.header("via"), Some("1.1 tidegate"), "{}", r.head);
    assert_eq!(r.header("x-request-id"), Some(id), "{}", r.head);
    assert_eq!(fields_in(&r, "x-request-id"), 1, "{}", r.head);

    // The next request on the connection gets another id.
    let r2 = c.get("/b")?;
    let seen2 = next_head(&s)?;
    let id2 = header(&seen2, "x-request-id").ok_or("no request id")?;
    assert!(is_generated(id2) && id2 != id, "{id} {id2}");
    assert_eq!(r2.header("x-request-id"), Some(id2));
    Ok(())
}

#[test]
fn a_client_request_id_is_kept_and_a_bad_one_replaced() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let mut c = p.client()?;
    let r = c.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: req-42.a_b\r\n\r\n")?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "x-request-id"), Some("req-42.a_b"), "{seen}");
    assert_eq!(count(&seen, "x-request-id"), 1, "{seen}");
    assert_eq!(r.header("x-request-id"), Some("req-42.a_b"), "{}", r.head);

    // Too long (129 bytes): replaced by a generated id, both ways.
    let long = "a".repeat(129);
    let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: {long}\r\n\r\n");
    let r = c.exchange(req.as_bytes())?;
    let seen = next_head(&s)?;
    let id = header(&seen, "x-request-id").ok_or("no request id")?;
    assert!(is_generated(id), "{seen}");
    assert_eq!(count(&seen, "x-request-id"), 1, "{seen}");
    assert_eq!(r.header("x-request-id"), Some(id), "{}", r.head);
    Ok(())
}

#[test]
fn existing_via_is_appended_to_with_the_received_version() -> TestResult {
    // The backend answers in HTTP/1.0 with its own Via and echoes a
    // different request id, which the proxy replaces with the real one.
    let s = Scripted::start(|_| {
        Reply::SendClose(
            b"HTTP/1.0 200 OK\r\nVia: 1.1 cache\r\nX-Request-Id: wrong\r\nContent-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let r = p
        .client()?
        .exchange(b"GET / HTTP/1.1\r\nHost: t\r\nVia: 1.0 edge\r\nX-Request-Id: r1\r\n\r\n")?;
    let seen = next_head(&s)?;
    assert_eq!(
        header(&seen, "via"),
        Some("1.0 edge, 1.1 tidegate"),
        "{seen}"
    );
    assert_eq!(count(&seen, "via"), 1, "{seen}");
    assert_eq!(
        r.header("via"),
        Some("1.1 cache, 1.0 tidegate"),
        "{}",
        r.head
    );
    assert_eq!(r.header("x-request-id"), Some("r1"), "{}", r.head);
    assert_eq!(fields_in(&r, "x-request-id"), 1, "{}", r.head);

    // An HTTP/1.0 request is received as 1.0.
    let r = p.client()?.exchange(b"GET / HTTP/1.0\r\n\r\n")?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "via"), Some("1.0 tidegate"), "{seen}");
    // No Host, no X-Forwarded-Host.
    assert_eq!(header(&seen, "x-forwarded-host"), None, "{seen}");
    assert_eq!(r.status, 200, "{}", r.head);
    Ok(())
}

#[test]
fn spoofed_forwarded_proto_and_host_are_replaced() -> TestResult {
    let s = Scripted::always(OK)?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    p.client()?.exchange(
        b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nHost: real\r\nX-Forwarded-Host: evil\r\n\r\n",
    )?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"), "{seen}");
    assert_eq!(header(&seen, "x-forwarded-host"), Some("real"), "{seen}");
    assert_eq!(count(&seen, "x-forwarded-proto"), 1, "{seen}");
    assert_eq!(count(&seen, "x-forwarded-host"), 1, "{seen}");
    Ok(())
}

#[test]
fn via_and_request_id_off_pass_fields_through() -> TestResult {
    let s = Scripted::always(
        b"HTTP/1.1 200 OK\r\nX-Request-Id: from-backend\r\nContent-Length: 2\r\n\r\nok",
    )?;
    let opts = Opts {
        forward: ForwardOpts::off(),
        ..Opts::default()
    };
    let p = proxy::start(&[s.addr], opts)?;
    let mut c = p.client()?;
    let r = c.get("/")?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "via"), None, "{seen}");
    assert_eq!(header(&seen, "x-request-id"), None, "{seen}");
    // X-Forwarded-* stay.
    assert_eq!(header(&seen, "x-forwarded-proto"), Some("http"), "{seen}");
    assert_eq!(r.header("via"), None, "{}", r.head);
    assert_eq!(r.header("x-request-id"), Some("from-backend"), "{}", r.head);

    // The client's fields are forwarded as they are.
    c.exchange(b"GET / HTTP/1.1\r\nHost: t\r\nVia: 1.1 a\r\nX-Request-Id: not a token\r\n\r\n")?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "via"), Some("1.1 a"), "{seen}");
    assert_eq!(header(&seen, "x-request-id"), Some("not a token"), "{seen}");
    Ok(())
}

#[test]
fn fields_named_in_a_response_connection_do_not_reach_the_client() -> TestResult {
    let s = Scripted::start(|_| {
        Reply::SendClose(
            b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s3cr3t\r\nX-Public: p\r\n\
              Content-Length: 2\r\n\r\nok"
                .to_vec(),
        )
    })?;
    let p = proxy::start(&[s.addr], Opts::default())?;
    let r = p.client()?.get("/")?;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body_str(), "ok");
    assert_eq!(r.header("x-secret"), None, "{}", r.head);
    assert!(!r.head.contains("s3cr3t"), "{}", r.head);
    assert_eq!(r.header("x-public"), Some("p"), "{}", r.head);
    // The client connection stays open: the backend's close was hop-by-hop.
    assert!(!r.connection_has("close"), "{}", r.head);
    Ok(())
}

#[test]
fn flags_name_the_fields_or_turn_them_off() -> TestResult {
    let s = Scripted::always(OK)?;
    let backend = s.addr.to_string();
    let base = ["proxy", "--listen", "127.0.0.1:0", "--workers", "1"];
    // A custom pseudonym and id field.
    let mut args = base.to_vec();
    args.extend([
        "--backend",
        &backend,
        "--via",
        "edge-1",
        "--request-id",
        "X-Trace",
    ]);
    let proc = Proc::spawn("", &args)?;
    let r = Client::connect(proc.addr()?)?.get("/")?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "via"), Some("1.1 edge-1"), "{seen}");
    let id = header(&seen, "x-trace").ok_or("no X-Trace")?;
    assert!(is_generated(id), "{seen}");
    assert_eq!(header(&seen, "x-request-id"), None, "{seen}");
    assert_eq!(r.header("x-trace"), Some(id), "{}", r.head);
    drop(proc);

    // Both off.
    let mut args = base.to_vec();
    args.extend(["--backend", &backend, "--via", "off", "--request-id", "off"]);
    let proc = Proc::spawn("", &args)?;
    let r = Client::connect(proc.addr()?)?.get("/")?;
    let seen = next_head(&s)?;
    assert_eq!(header(&seen, "via"), None, "{seen}");
    assert_eq!(header(&seen, "x-request-id"), None, "{seen}");
    assert_eq!((r.header("via"), r.header("x-request-id")), (None, None));
    drop(proc);

    // Bad values end with one clear line.
    for (flag, value) in [("--via", "two words"), ("--request-id", "Content-Length")] {
        let mut args = base.to_vec();
        args.extend(["--backend", &backend, flag, value]);
        let (code, err) = run_bin(&args)?;
        assert_eq!(code, Some(1), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&format!("invalid {flag} '{value}'")), "{err}");
    }
    Ok(())
}
