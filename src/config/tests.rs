use super::*;

#[test]
fn addresses_parse_or_fail_clearly() {
    assert_eq!(
        resolve("--listen", "127.0.0.1:80").map(|a| a.port()),
        Ok(80)
    );
    assert_eq!(resolve("--listen", "[::1]:81").map(|a| a.port()), Ok(81));
    assert_eq!(
        resolve("--listen", "localhost:82").map(|a| a.port()),
        Ok(82)
    );
    let err = resolve("--listen", "nonsense").map_err(|e| e.to_string());
    assert_eq!(
        err,
        Err(
            "invalid --listen address 'nonsense': missing port (expected ip:port or host:port)"
                .into()
        )
    );
    assert!(resolve("--listen", "127.0.0.1:99999").is_err());
}

#[test]
fn durations_parse_with_units() {
    let d = |v| parse_duration("--x", v);
    assert_eq!(d("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(d("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(d("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(d("1.5"), Ok(Duration::from_millis(1500)));
    assert!(d("soon").is_err());
    assert!(d("10 parsecs").is_err());
    assert!(d("-1s").is_err());
}

#[test]
fn timeouts_must_be_between_1ms_and_24h() {
    let msg = |flag, v| parse_timeout(flag, v).map_err(|e| e.to_string());
    for flag in ["--idle-timeout", "--backend-timeout", "--tunnel-timeout"] {
        assert_eq!(
            msg(flag, "0"),
            Err(format!(
                "invalid {flag} '0': must be at least 1ms (0 would expire at once)"
            ))
        );
        assert!(msg(flag, "0.5ms").is_err());
        assert_eq!(
            msg(flag, "25h"),
            Err(format!("invalid {flag} '25h': must be at most 24h"))
        );
        assert_eq!(parse_timeout(flag, "1ms"), Ok(MIN_TIMEOUT));
        assert_eq!(parse_timeout(flag, "24h"), Ok(MAX_TIMEOUT));
    }
    assert_eq!(parse_timeout("--drain-timeout", "0"), Ok(Duration::ZERO));
    assert!(parse_timeout("--drain-timeout", "1000h").is_err());
    assert_eq!(Timeouts::default().validate(), Ok(()));
    let zero_idle = Timeouts {
        idle: Duration::ZERO,
        ..Timeouts::default()
    };
    assert!(
        zero_idle
            .validate()
            .is_err_and(|e| e.to_string().contains("--idle-timeout"))
    );
    let no_drain = Timeouts {
        drain: Duration::ZERO,
        ..Timeouts::default()
    };
    assert_eq!(no_drain.validate(), Ok(()));
}

#[test]
fn backends_are_required_and_resolved() {
    assert_eq!(resolve_backends(&[]), Err(ConfigError::NoBackends));
    let ok = resolve_backends(&["127.0.0.1:8081".into(), "localhost:8082".into()]);
    // localhost: 127.0.0.1, and ::1 where /etc/hosts says so.
    assert!(ok.is_ok_and(|b| (2..=3).contains(&b.len())
        && b[1].addr.port() == 8082
        && b[1].configured_name() == "localhost:8082"
        && b[1].host.as_deref() == Some("localhost:8082")));
    assert!(resolve_backends(&["nope".into()]).is_err());
}

#[test]
fn forward_flags() {
    assert_eq!(
        forward_opts("tidegate", "X-Request-Id"),
        Ok(ForwardOpts::default())
    );
    assert_eq!(forward_opts("off", "off"), Ok(ForwardOpts::off()));
    let custom = forward_opts("edge.1", "X-Trace-Id");
    assert!(custom.is_ok_and(
        |o| o.via.as_deref() == Some("edge.1") && o.request_id.as_deref() == Some("X-Trace-Id")
    ));
    let err = forward_opts("a b", "off").map_err(|e| e.to_string());
    assert!(err.is_err_and(|e| e.starts_with("invalid --via 'a b'")));
    let err = forward_opts("off", "Host").map_err(|e| e.to_string());
    assert!(err.is_err_and(|e| e.starts_with("invalid --request-id 'Host'")));
}

#[test]
fn zero_workers_and_backlog_are_rejected() {
    assert_eq!(
        ServerConfig::new("127.0.0.1:0", Some(0), 10),
        Err(ConfigError::ZeroWorkers)
    );
    assert_eq!(
        ServerConfig::new("127.0.0.1:0", Some(1), 0),
        Err(ConfigError::BadBacklog(0))
    );
    let ok = ServerConfig::new("127.0.0.1:0", None, DEFAULT_BACKLOG);
    assert!(ok.is_ok_and(|c| c.workers >= 1));
}
