//! The session's transitions, faults and timeouts, case by case.

use super::*;

/// (case, request, per-attempt behaviour, status, attempts, outcomes heard)
type Case = (
    &'static str,
    &'static [u8],
    &'static [Backend],
    u16,
    usize,
    &'static [(usize, bool)],
);

#[test]
fn every_fault_is_blamed_on_its_side() {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n";
    use Backend::*;
    let table: [Case; 9] = [
        ("answered", get, &[Answer], 200, 1, &[(0, true)]),
        (
            "GET reset: retried",
            get,
            &[Reset, Answer],
            200,
            2,
            &[(0, false), (1, true)],
        ),
        (
            "POST reset: not replayed",
            post,
            &[Reset],
            502,
            1,
            &[(0, false)],
        ),
        (
            "POST refused: retried",
            post,
            &[Refuse, Answer],
            200,
            2,
            &[(0, false), (1, true)],
        ),
        ("silent backend: 504", get, &[Silent], 504, 1, &[(0, false)]),
        (
            "garbage: 502, no retry",
            get,
            &[Garbage],
            502,
            1,
            &[(0, false)],
        ),
        (
            "GET 503+Retry-After: retried",
            get,
            &[Busy, Answer],
            200,
            2,
            &[(0, false), (1, true)],
        ),
        ("POST 503: relayed", post, &[Busy], 503, 1, &[(0, false)]),
        (
            "two resets: 502",
            get,
            &[Reset, Reset],
            502,
            2,
            &[(0, false), (1, false)],
        ),
    ];
    for (case, request, script, status, attempts, heard) in table {
        let h = run(request, script);
        assert_eq!(
            h.status_to_client(),
            Some(status),
            "{case}: {}",
            h.client.written()
        );
        assert_eq!(h.conns().len(), attempts, "{case}");
        assert_eq!(h.observed(), heard, "{case}");
        // One ticket per attempt, each released (observed or dropped).
        assert_eq!(h.selector.sent.load(Relaxed), attempts, "{case}");
        assert_eq!(h.in_flight(), [0; BACKENDS], "{case}");
        // The backend's own answers keep the connection; the proxy's close it.
        let relayed = status == 200 || case == "POST 503: relayed";
        let want = if relayed { "idle" } else { "closing" };
        assert_eq!(h.state(), want, "{case}");
    }
}

#[test]
fn a_client_stalling_mid_body_gets_408_and_the_backend_is_not_blamed() {
    let mut h = Harness::new();
    h.client
        .send(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    assert!(h.last_conn().written().ends_with("abc"));
    assert_eq!(h.state(), "exchange");
    // Before --client-timeout (30 s) nothing happens...
    h.wait(Duration::from_secs(29));
    assert_eq!(h.state(), "exchange");
    assert_eq!(h.in_flight(), [1, 0], "the exchange holds its ticket");
    // ...after it, the client's fault: 408, and no sample against the backend.
    h.wait(Duration::from_secs(2));
    assert_eq!(h.status_to_client(), Some(408));
    assert_eq!(h.observed(), []);
    assert_eq!(h.in_flight(), [0; BACKENDS], "the ticket went with the 408");
    assert_eq!(h.shared.stats.client_timeouts.load(Relaxed), 1);
    assert_eq!(h.shared.stats.backend_timeouts.load(Relaxed), 0);
    assert_eq!(h.state(), "closing");
}

#[test]
fn a_client_leaving_mid_body_is_an_abort_not_a_backend_failure() {
    let mut h = Harness::new();
    h.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    h.client.with(|p| p.eof = true);
    h.ready(Side::Client);
    assert_eq!(h.state(), "closed");
    assert_eq!(h.observed(), []);
    // Abandoned: no sample, but the ticket's count is released.
    assert_eq!(h.selector.sent.load(Relaxed), 1);
    assert_eq!(h.in_flight(), [0; BACKENDS]);
    assert_eq!(h.shared.stats.client_aborts.load(Relaxed), 1);
    assert_eq!(h.ctx.upstreams.len(), 0, "the backend connection is closed");
}

#[test]
fn a_switch_becomes_a_tunnel_both_ways_with_half_close() {
    let mut h = Harness::new();
    h.client
        .send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    let b = h.last_conn();
    assert!(
        b.written()
            .contains("Upgrade: websocket\r\nConnection: upgrade\r\n")
    );
    b.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello");
    h.ready(Side::Backend);
    assert_eq!(h.state(), "tunnel");
    assert!(
        h.client
            .written()
            .ends_with("Connection: upgrade\r\n\r\nhello")
    );
    h.client.send(b"ping");
    h.ready(Side::Client);
    assert!(b.written().ends_with("ping"));
    // The client's FIN reaches the backend; the backend still talks.
    h.client.with(|p| p.eof = true);
    h.ready(Side::Client);
    assert!(b.with(|p| p.shut));
    b.send(b"bye");
    h.ready(Side::Backend);
    assert_eq!(h.state(), "tunnel");
    b.with(|p| p.eof = true);
    h.ready(Side::Backend);
    assert!(h.client.written().ends_with("bye"));
    assert_eq!(h.state(), "closed");
    assert_eq!(h.shared.stats.tunnels.load(Relaxed), 1);
    assert_eq!(h.shared.stats.tunnels_open.load(Relaxed), 0);
}

#[test]
fn a_quiet_tunnel_closes_after_the_tunnel_timeout() {
    let mut h = Harness::new();
    h.client
        .send(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
    h.ready(Side::Client);
    h.last_conn()
        .send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    h.ready(Side::Backend);
    h.wait(Duration::from_secs(3599));
    assert_eq!(h.state(), "tunnel");
    h.wait(Duration::from_secs(2));
    assert_eq!(h.state(), "closed");
}

#[test]
fn an_unasked_switch_is_a_bad_response() {
    let h = {
        let mut h = Harness::new();
        h.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        h.ready(Side::Client);
        h.last_conn()
            .send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
        h.ready(Side::Backend);
        h
    };
    assert_eq!(h.status_to_client(), Some(502));
    assert_eq!(h.observed(), [(0, false)]);
}

#[test]
fn keep_alive_returns_to_idle_and_the_idle_timeout_closes() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.state(), "idle");
    assert_eq!(h.ctx.upstreams.idle_count(0), 1, "pooled");
    h.wait(Duration::from_secs(61));
    assert_eq!(h.state(), "closed");
}

#[test]
fn a_head_trickling_in_pauses_reading_between_batches() {
    let mut h = Harness::new();
    let head = b"GET /slow HTTP/1.1\r\nHost: a\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    // One byte per wake-up: after a few, the session stops reading.
    let mut sent = 0;
    while sent < head.len() && !h.client.with(|p| p.paused) {
        h.client.send(&head[sent..sent + 1]);
        sent += 1;
        h.ready(Side::Client);
    }
    assert!(
        h.client.with(|p| p.paused),
        "never paused after {sent} bytes"
    );
    assert!(sent <= 12, "paused only after {sent} single bytes");
    // Bytes piling up meanwhile are not read...
    h.client.send(&head[sent..]);
    h.ready(Side::Client);
    assert_eq!(h.state(), "idle");
    // ...until the pause ends: then all at once, and the request goes out.
    h.wait(Duration::from_millis(4));
    assert!(h.client.with(|p| p.paused));
    h.wait(Duration::from_millis(1));
    assert!(!h.client.with(|p| p.paused));
    assert_eq!(h.state(), "exchange");
    h.ready(Side::Backend);
    assert!(
        h.last_conn()
            .written()
            .starts_with("GET /slow HTTP/1.1\r\n")
    );
}

#[test]
fn a_head_sent_in_two_segments_is_never_paused() {
    let mut h = Harness::new();
    h.client.send(b"GET / HTTP/1.1\r\n");
    h.ready(Side::Client);
    h.client.send(b"Host: a\r\n\r\n");
    h.ready(Side::Client);
    assert!(!h.client.with(|p| p.paused));
    assert_eq!(h.state(), "exchange");
}

#[test]
fn draining_keeps_a_just_idle_connection_for_its_next_request() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.state(), "idle");
    // A takeover or a stop begins right after the answer: the client's
    // next request may be on its way, so the connection is kept...
    h.call(|s, env| s.on_drain(env));
    assert_eq!(h.state(), "idle");
    h.client.send(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
    h.ready(Side::Client);
    h.ready(Side::Backend);
    h.last_conn().send(OK);
    h.ready(Side::Backend);
    // ...and that request is answered, with Connection: close.
    let out = h.client.written();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    let last = out.rsplit("HTTP/1.1 200").next().unwrap_or_default();
    assert!(
        last.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(matches!(h.state(), "closing" | "closed"), "{}", h.state());
}

#[test]
fn draining_closes_an_idle_connection_after_the_grace_or_at_once_if_long_idle() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    h.call(|s, env| s.on_drain(env));
    h.wait(Duration::from_millis(999));
    assert_eq!(h.state(), "idle");
    h.wait(Duration::from_millis(1));
    assert_eq!(h.state(), "closed");
    // Idle for longer than the grace: closed as soon as draining starts.
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    h.now += Duration::from_secs(2);
    h.call(|s, env| s.on_drain(env));
    assert_eq!(h.state(), "closed");
}

#[test]
fn a_drained_backend_is_never_chosen_not_even_failing_open() {
    let h = Harness::new();
    let now = h.now;
    h.shared.drained.set(1, true);
    for _ in 0..6 {
        assert_eq!(h.shared.choose(now, None), Some(0));
    }
    // Excluding the only other one (a retry): never the drained one, and
    // not the excluded one either (no retry onto the backend that failed).
    assert_eq!(h.shared.choose(now, Some(0)), None);
    h.shared.drained.set(0, true);
    assert_eq!(h.shared.choose(now, None), None);
    assert!(!h.shared.ready());
    h.shared.drained.set(1, false);
    assert_eq!(h.shared.choose(now, None), Some(1));
    assert!(h.shared.ready());
}

#[test]
fn with_every_backend_drained_a_request_gets_503_and_no_backend_is_blamed() {
    let mut h = Harness::new();
    h.shared.drained.set(0, true);
    h.shared.drained.set(1, true);
    h.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    h.ready(Side::Client);
    assert_eq!(h.status_to_client(), Some(503));
    assert!(h.conns().is_empty(), "no backend connection");
    assert!(h.observed().is_empty(), "nobody blamed");
    assert_eq!(h.shared.stats.status_5xx.load(Relaxed), 1);
}

#[test]
fn a_request_in_flight_at_the_drain_finishes_and_its_connection_closes() {
    let mut h = Harness::new();
    h.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    h.ready(Side::Client);
    assert_eq!(h.state(), "exchange");
    h.shared.drained.set(0, true);
    h.last_conn()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    h.ready(Side::Backend);
    assert_eq!(h.status_to_client(), Some(200));
    assert_eq!(h.state(), "idle");
    assert_eq!(h.ctx.upstreams.idle_count(0), 0, "closed, not pooled");
    assert!(h.ctx.upstreams.is_empty());
}

#[test]
fn pooled_connections_to_a_drained_backend_are_closed_not_reused() {
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.ctx.upstreams.idle_count(0), 1, "pooled");
    h.shared.drained.set(0, true);
    // Check-out refuses it (and closes it)...
    assert_eq!(h.ctx.upstreams.checkout(0, 5, h.now), None);
    assert!(h.ctx.upstreams.is_empty());
    // ...and the worker's sweep closes one idling when the drain came.
    h.shared.drained.set(0, false);
    let mut h = run(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &[Backend::Answer]);
    assert_eq!(h.ctx.upstreams.idle_count(0), 1);
    h.ctx.upstreams.sweep();
    assert_eq!(h.ctx.upstreams.idle_count(0), 1, "not drained: kept");
    h.shared.drained.set(0, true);
    h.ctx.upstreams.sweep();
    assert_eq!(h.ctx.upstreams.idle_count(0), 0);
    assert!(h.ctx.upstreams.is_empty());
}
