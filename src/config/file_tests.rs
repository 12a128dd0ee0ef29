use super::*;

const ONE: &str = "[[backend]]\naddress = \"127.0.0.1:8081\"\n";

fn problems(text: &str) -> Vec<String> {
    match load(text) {
        Ok(cfg) => panic!("expected problems, got {cfg:?}"),
        Err(p) => p.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn absent_keys_take_the_flag_defaults() {
    let cfg = load(ONE).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(cfg.server.listen.to_string(), DEFAULT_PROXY_LISTEN);
    assert_eq!(cfg.server.backlog, DEFAULT_BACKLOG);
    assert_eq!(cfg.timeouts, Timeouts::default());
    assert_eq!(cfg.policy, Policy::Adaptive { slo: None });
    assert_eq!(cfg.forward, ForwardOpts::default());
    assert_eq!(cfg.eject_after, crate::health::EJECT_AFTER);
    assert_eq!(
        (cfg.admin, cfg.admin_token, cfg.health_check),
        (None, None, None)
    );
    let b = &cfg.backends[0];
    assert_eq!(
        (b.name.as_str(), b.weight, b.backup),
        ("127.0.0.1:8081", 1, false)
    );
}

#[test]
fn every_key_is_read() {
    let text = r#"
listen = "127.0.0.1:7000"
workers = 3
backlog = 128
policy = "peak-ewma"
decay = "5s"
default_rtt = "10ms"
slo_ms = 250
backend_conn = "close"
log_csv = "/tmp/x.csv"
via = "edge"
request_id = "off"
resolve_interval = "250ms"
[timeouts]
connect = "1s"
drain = "0"
[health]
check = "/healthz"
interval = "500ms"
eject_after = 0
eject_5xx = true
[admin]
address = "127.0.0.1:7001"
token = "s3cret"
[[backend]]
address = "127.0.0.1:8081"
name = "a"
weight = 3
[[backend]]
address = "127.0.0.1:8082"
backup = true
"#;
    let cfg = load(text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(cfg.resolve_interval, Duration::from_millis(250));
    assert_eq!(cfg.server.listen.port(), 7000);
    assert_eq!((cfg.server.workers, cfg.server.backlog), (3, 128));
    let policy = Policy::PeakEwma {
        decay: Duration::from_secs(5),
        default_rtt: Duration::from_millis(10),
    };
    assert_eq!(cfg.policy, policy);
    assert_eq!(cfg.slo, Some(Duration::from_millis(250)));
    assert_eq!(cfg.backend_conn, super::super::BackendConn::Close);
    assert_eq!(
        cfg.access_log,
        Some(crate::proxy::accesslog::AccessLog {
            target: crate::proxy::accesslog::LogTarget::File(std::path::PathBuf::from(
                "/tmp/x.csv"
            )),
            format: crate::proxy::accesslog::LogFormat::Csv,
        })
    );
    assert_eq!(cfg.forward.via.as_deref(), Some("edge"));
    assert_eq!(cfg.forward.request_id, None);
    assert_eq!(cfg.timeouts.connect, Duration::from_secs(1));
    assert_eq!(cfg.timeouts.drain, Duration::ZERO);
    assert_eq!(cfg.timeouts.idle, Timeouts::default().idle);
    let check = Some(("/healthz".to_string(), Duration::from_millis(500)));
    assert_eq!(cfg.health_check, check);
    assert_eq!((cfg.eject_after, cfg.eject_5xx), (0, true));
    assert_eq!(cfg.admin.map(|a| a.port()), Some(7001));
    assert_eq!(cfg.admin_token.as_deref(), Some("s3cret"));
    let names: Vec<_> = cfg.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["a", "127.0.0.1:8082"]);
    assert_eq!((cfg.backends[0].weight, cfg.backends[0].backup), (3, false));
    assert_eq!((cfg.backends[1].weight, cfg.backends[1].backup), (1, true));
    assert_eq!(
        summary(&cfg),
        "2 backends (1 backup), policy peak-ewma, listen 127.0.0.1:7000"
    );
}

#[test]
fn a_host_name_is_one_backend_per_address_and_resolve_interval_is_checked() {
    let text = "[[backend]]\naddress = \"localhost:8082\"\nname = \"api\"\nweight = 2\n";
    let cfg = load(text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        cfg.resolve_interval,
        crate::config::DEFAULT_RESOLVE_INTERVAL
    );
    // localhost is 127.0.0.1, and ::1 where /etc/hosts says so.
    assert!(!cfg.backends.is_empty() && cfg.backends.len() <= 2);
    for b in &cfg.backends {
        assert_eq!((b.configured_name(), b.weight), ("api", 2));
        assert_eq!(b.host.as_deref(), Some("localhost:8082"));
        assert!(b.addr.ip().is_loopback());
    }
    let literal = load(ONE).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(literal.backends[0].host, None);
    let bad = problems(&format!("resolve_interval = \"50ms\"\n{ONE}"));
    assert_eq!(
        bad,
        ["line 1, column 20: invalid resolve_interval '50ms': must be between 100ms and 24h"]
    );
    let unknown = problems("[[backend]]\naddress = \"no-such-host.invalid:80\"\n");
    assert!(
        unknown[0]
            .starts_with("line 2, column 11: invalid backend.address 'no-such-host.invalid:80'"),
        "{unknown:?}"
    );
}

#[test]
fn structural_errors_name_the_key_with_line_and_column() {
    let unknown = problems(&format!("listen = \"127.0.0.1:1\"\ntiemouts = 3\n{ONE}"));
    assert_eq!(unknown.len(), 1);
    assert!(
        unknown[0].starts_with("line 2, column 1: unknown field `tiemouts`"),
        "{unknown:?}"
    );
    let nested = problems(&format!("[timeouts]\nconect = \"1s\"\n{ONE}"));
    assert!(
        nested[0].starts_with("line 2, column 1: unknown field `conect`"),
        "{nested:?}"
    );
    let in_backend = problems("[[backend]]\naddress = \"127.0.0.1:1\"\nmaxcon = 5\n");
    assert!(
        in_backend[0].contains("unknown field `maxcon`"),
        "{in_backend:?}"
    );
    let ty = problems(&format!("[timeouts]\nconnect = 5\n{ONE}"));
    assert_eq!(
        ty,
        ["line 2, column 11: timeouts.connect: invalid type: integer `5`, expected a string"]
    );
    let missing = problems("[[backend]]\nname = \"x\"\n");
    assert_eq!(
        missing,
        ["line 1, column 1: backend: missing field `address`"]
    );
    let syntax = problems("listen = \n");
    assert!(
        syntax[0].starts_with("line 1, column 10: listen: "),
        "{syntax:?}"
    );
}

#[test]
fn every_semantic_problem_is_reported_at_its_value() {
    let text = r#"policy = "fast"
[timeouts]
connect = "3 parsecs"
idle = "0"
[health]
check = "healthz"
[[backend]]
address = "127.0.0.1:1"
weight = 0
[[backend]]
address = "127.0.0.1:1"
[[backend]]
address = "no-port"
"#;
    let p = problems(text);
    let want = [
        "line 1, column 10: invalid policy 'fast': unknown routing policy 'fast'",
        "line 3, column 11: invalid timeouts.connect '3 parsecs': expected a duration",
        "line 4, column 8: invalid timeouts.idle '0': must be at least 1ms",
        "line 6, column 9: invalid health.check \"healthz\": expected an absolute path",
        "line 9, column 10: invalid backend.weight 0: out of range (1..=256)",
        "line 11, column 11: duplicate backend.name '127.0.0.1:1'",
        "line 13, column 11: invalid backend.address 'no-port': missing port",
    ];
    assert_eq!(p.len(), want.len(), "{p:#?}");
    for (got, want) in p.iter().zip(want) {
        assert!(got.starts_with(want), "{got}\n  should start with\n{want}");
    }
}

#[test]
fn backends_are_required_and_one_must_be_primary() {
    assert_eq!(
        problems("listen = \"127.0.0.1:9\"\n"),
        ["no backends: add a [[backend]] table with an address (or give --backend)"]
    );
    let all_backup = problems("[[backend]]\naddress = \"127.0.0.1:1\"\nbackup = true\n");
    assert_eq!(
        all_backup,
        ["every backend is a backup: at least one must not be"]
    );
    let names = "[[backend]]\naddress = \"127.0.0.1:1\"\nname = \"a\"\n\
                 [[backend]]\naddress = \"127.0.0.1:2\"\nname = \"a\"\n";
    assert!(problems(names)[0].starts_with("line 6, column 8: duplicate backend.name 'a'"));
}

#[test]
fn values_set_from_flags_are_named_as_flags() {
    let text = format!("[timeouts]\nidle = \"5s\"\n{ONE}");
    let mut f = FileConfig::parse(&text).unwrap_or_else(|p| panic!("{p:?}"));
    f.timeouts.idle = Some(Spanned::new(0..0, "0".into()));
    f.from_cli.push(("timeouts.idle", "--idle-timeout"));
    let p = f.validate(&text).map_err(|p| p[0].to_string());
    assert_eq!(
        p.map(|_| ()),
        Err("invalid --idle-timeout '0': must be at least 1ms (0 would expire at once)".into())
    );
}

#[test]
fn line_col_and_key_at() {
    let text = "a = 1\n[t]\nb = \"x\"\n";
    assert_eq!(line_col(text, 0), (1, 1));
    assert_eq!(line_col(text, 14), (3, 5));
    assert_eq!(key_at(text, 14).as_deref(), Some("t.b"));
    assert_eq!(key_at(text, 4).as_deref(), Some("a"));
    assert_eq!(key_at(text, 6).as_deref(), Some("t"));
}

#[test]
fn queue_keys_and_maxconn_are_read_and_checked() {
    use crate::config::QueueConfig;
    let text = "queue_timeout = \"250ms\"\nmax_queue = 7\n[[backend]]\n\
                address = \"127.0.0.1:8081\"\nmaxconn = 2\n";
    let cfg = load(text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        cfg.queue,
        QueueConfig {
            timeout: Duration::from_millis(250),
            max: 7
        }
    );
    assert_eq!(cfg.backends[0].maxconn, Some(2));
    let plain = load(ONE).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(
        (plain.queue, plain.backends[0].maxconn),
        (QueueConfig::default(), None)
    );
    let bad = problems(
        "queue_timeout = \"0s\"\nmax_queue = 1000000\n[[backend]]\n\
         address = \"127.0.0.1:8081\"\nmaxconn = 0\n",
    );
    assert_eq!(bad.len(), 3, "{bad:?}");
    assert!(
        bad.iter().any(|p| p.contains("invalid queue_timeout '0s'")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|p| p.contains("invalid max_queue 1000000")),
        "{bad:?}"
    );
    assert!(
        bad.iter().any(|p| p.contains("invalid backend.maxconn 0")),
        "{bad:?}"
    );
}
