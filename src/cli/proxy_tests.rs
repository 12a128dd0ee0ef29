use super::*;

#[test]
fn the_demo_defaults_are_the_flag_defaults() -> Result<(), ConfigError> {
    let mut args = ProxyArgs::defaults()?;
    assert_eq!(args.listen, "127.0.0.1:9090");
    assert_eq!(
        (args.client_timeout.as_str(), args.tunnel_timeout.as_str()),
        ("30s", "1h")
    );
    args.backends = vec!["127.0.0.1:8081".into()];
    let cfg = args.config()?;
    assert_eq!(cfg.timeouts, Timeouts::default());
    // A file with only a backend means the same as the flags' defaults.
    let from_file = file::load("[[backend]]\naddress = \"127.0.0.1:8081\"\n");
    let from_file = from_file.map_err(|p| ConfigError::BadValue {
        flag: "file",
        value: String::new(),
        why: format!("{p:?}"),
    })?;
    assert_eq!(format!("{from_file:?}"), format!("{cfg:?}"));
    Ok(())
}

/// `tidegate proxy ARGS` with `text` as the --config file.
fn resolved(text: &str, args: &[&str]) -> Result<ProxyConfig, Vec<String>> {
    let dir = std::env::temp_dir().join(format!("tidegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| vec![e.to_string()])?;
    let path = dir.join(format!("{}.toml", args.len()));
    std::fs::write(&path, text).map_err(|e| vec![e.to_string()])?;
    let path = path.to_string_lossy().into_owned();
    let mut argv = vec!["proxy", "--config", path.as_str()];
    argv.extend_from_slice(args);
    let m = ProxyArgs::augment_args(clap::Command::new("proxy"))
        .try_get_matches_from(argv)
        .map_err(|e| vec![e.to_string()])?;
    let a = ProxyArgs::from_arg_matches(&m).map_err(|e| vec![e.to_string()])?;
    a.resolve(&m)
}

#[test]
fn flags_given_override_the_file_and_defaults_do_not() -> Result<(), Vec<String>> {
    let text = "listen = \"127.0.0.1:7000\"\npolicy = \"sma\"\nsma_window = 5\n\
                [timeouts]\nidle = \"5s\"\n\
                [[backend]]\naddress = \"127.0.0.1:8081\"\nweight = 3\n";
    // No flags: the file as written (not the flags' defaults).
    let cfg = resolved(text, &[])?;
    assert_eq!(cfg.server.listen.port(), 7000);
    assert_eq!(cfg.policy, balance::Policy::Sma { window: 5 });
    assert_eq!(cfg.timeouts.idle, Duration::from_secs(5));
    assert_eq!(cfg.backends[0].weight, 3);
    // Flags win; a policy flag keeps the file's parameters.
    let cfg = resolved(
        text,
        &[
            "--idle-timeout",
            "7s",
            "--listen",
            "127.0.0.1:7002",
            "--sma-window",
            "9",
        ],
    )?;
    assert_eq!(cfg.server.listen.port(), 7002);
    assert_eq!(cfg.timeouts.idle, Duration::from_secs(7));
    assert_eq!(cfg.policy, balance::Policy::Sma { window: 9 });
    let cfg = resolved(text, &["--resolve-interval", "200ms"])?;
    assert_eq!(cfg.resolve_interval, Duration::from_millis(200));
    let err = resolved(text, &["--resolve-interval", "10ms"]).map(|_| ());
    assert!(err.is_err_and(|e| e[0].contains("invalid --resolve-interval '10ms'")));
    let cfg = resolved(text, &["--policy", "round-robin"])?;
    assert_eq!(cfg.policy, balance::Policy::RoundRobin);
    // --backend replaces the file's list.
    let cfg = resolved(
        text,
        &["--backend", "127.0.0.1:9001", "--backend", "127.0.0.1:9002"],
    )?;
    let ports: Vec<_> = cfg
        .backends
        .iter()
        .map(|b| (b.addr.port(), b.weight))
        .collect();
    assert_eq!(ports, [(9001, 1), (9002, 1)]);
    // A bad flag is named as the flag; a bad key with its position.
    let err = resolved(text, &["--idle-timeout", "0"]).map(|_| ());
    assert!(err.is_err_and(|e| e[0].contains("invalid --idle-timeout '0'")));
    let err = resolved("workers = 0\n[[backend]]\naddress = \"127.0.0.1:1\"\n", &[]);
    assert!(err.is_err_and(|e| {
        e[0].ends_with("line 1, column 11: invalid workers 0: must be at least 1")
    }));
    Ok(())
}
