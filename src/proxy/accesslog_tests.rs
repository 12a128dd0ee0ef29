use super::*;

fn row(detail: Option<Detail>, outcome: Outcome, status: u16) -> Row {
    Row {
        // 2026-12-02T01:02:03.456Z
        at: UNIX_EPOCH + Duration::from_millis(1_764_637_323_456),
        backend: Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
        latency: Duration::from_micros(1500),
        status,
        outcome,
        worker: 1,
        queue_wait: Duration::from_micros(750),
        detail: detail.map(Box::new),
    }
}

fn detail() -> Detail {
    Detail {
        client: SocketAddr::from(([127, 0, 0, 9], 5555)),
        method: "GET".into(),
        path: "/a\"b\\c\u{1}".into(),
        minor: 1,
        user_agent: Some("curl/8 \"x\"".into()),
        referer: None,
        request_id: RequestId::from_client(b"abc-123").unwrap_or(RequestId::EMPTY),
        bytes_in: 40,
        bytes_out: 120,
        duration: Duration::from_micros(2250),
        attempts: 2,
    }
}

#[test]
fn json_lines_hold_every_field_escaped() {
    let mut line = String::new();
    format_json(
        &mut line,
        &row(Some(detail()), Outcome::BackendReset, 502),
        "tail-budget",
    );
    assert_eq!(
        line,
        "{\"time\":\"2025-12-02T01:02:03.456Z\",\"client\":\"127.0.0.9:5555\",\"method\":\"GET\",\
         \"path\":\"/a\\\"b\\\\c\\u0001\",\"protocol\":\"HTTP/1.1\",\"status\":502,\"bytes_in\":40,\
         \"bytes_out\":120,\"duration_ms\":2.250,\"upstream\":\"127.0.0.1:8081\",\"attempts\":2,\
         \"latency_ms\":1.500,\"queue_wait_ms\":0.750,\"outcome\":\"backend_reset\",\"side\":\"backend\",\
         \"request_id\":\"abc-123\",\"policy\":\"tail-budget\",\"worker\":1}\n"
    );
}

#[test]
fn combined_lines_follow_nginx() {
    let mut line = String::new();
    format_combined(&mut line, &row(Some(detail()), Outcome::Ok, 200));
    assert_eq!(
        line,
        "127.0.0.9 - - [02/Dec/2025:01:02:03 +0000] \"GET /a\\\"b\\\\c\\x01 HTTP/1.1\" 200 120 \
         \"-\" \"curl/8 \\\"x\\\"\" queue_wait=0.001\n"
    );
    let mut line = String::new();
    let d = Detail::unparsed(SocketAddr::from(([10, 0, 0, 1], 1)), 7, 30);
    let mut r = row(Some(d), Outcome::BadRequest, 400);
    r.queue_wait = Duration::ZERO;
    format_combined(&mut line, &r);
    assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
    // No wait, no tail: the standard combined line.
    assert!(line.ends_with("] \"-\" 400 30 \"-\" \"-\"\n"), "{line}");
}

#[test]
fn each_outcome_names_its_side() {
    assert_eq!(Outcome::ClientTimeout.side(), Some("client"));
    assert_eq!(Outcome::BackendTimeout.side(), Some("backend"));
    assert_eq!(Outcome::Ok.side(), None);
    assert_eq!(Outcome::QueueTimeout.side(), Some("proxy"));
    assert_eq!(Outcome::QueueFull.as_str(), "queue_full");
    assert_eq!("json".parse(), Ok(LogFormat::Json));
    assert!("xml".parse::<LogFormat>().is_err());
    assert_eq!(LogTarget::parse("stdout"), LogTarget::Stdout);
}

#[test]
fn long_text_is_cut_on_a_char_boundary() {
    let long = "é".repeat(MAX_LOGGED);
    let cut = bounded(&long);
    assert!(cut.len() <= MAX_LOGGED && cut.chars().all(|c| c == 'é'));
}
