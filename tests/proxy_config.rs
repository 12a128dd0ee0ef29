//! The configuration file: `tidegate check-config` on the shipped example
//! and on broken files, and `tidegate proxy --config` over real sockets:
//! backend weights and a backup backend.

mod util;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use util::proxy;
use util::{Proc, TestResult, run_bin};

/// A file in the temp dir holding `text`.
fn temp_toml(name: &str, text: &str) -> std::io::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "tidegate-config-{}-{name}.toml",
        std::process::id()
    ));
    std::fs::write(&path, text)?;
    Ok(path)
}

fn check(path: &std::path::Path) -> std::io::Result<(Option<i32>, String, String)> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("check-config")
        .arg(path)
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn the_shipped_example_is_valid() -> TestResult {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/tidegate.toml");
    let (code, out, err) = check(&example)?;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.trim_end().ends_with(
            "tidegate.toml: OK: 3 backends (1 backup), policy adaptive, listen 127.0.0.1:9090"
        ),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1);
    Ok(())
}

const BACKEND: &str = "[[backend]]\naddress = \"127.0.0.1:8081\"\n";

/// Broken files and the line each gives (after `FILE: `).
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "unknown-key",
        "listen = \"127.0.0.1:9090\"\nworkerz = 2\n",
        "line 2, column 1: unknown field `workerz`, expected one of `listen`",
    ),
    (
        "bad-type",
        "workers = \"two\"\n",
        "line 1, column 11: workers: invalid type: string \"two\", expected usize",
    ),
    (
        "bad-duration",
        "[timeouts]\nbackend = \"30 secs\"\n",
        "line 2, column 11: invalid timeouts.backend '30 secs': expected a duration like 30s",
    ),
    (
        "no-backend",
        "policy = \"p2c\"\n",
        "no backends: add a [[backend]] table with an address (or give --backend)",
    ),
    (
        "weight-zero",
        "[[backend]]\naddress = \"127.0.0.1:1\"\nweight = 0\n",
        "line 3, column 10: invalid backend.weight 0: out of range (1..=256)",
    ),
    (
        "unknown-policy",
        "policy = \"fastest\"\n",
        "line 1, column 10: invalid policy 'fastest': unknown routing policy 'fastest'",
    ),
    (
        "duplicate-name",
        "[[backend]]\naddress = \"127.0.0.1:1\"\nname = \"a\"\n\
         [[backend]]\naddress = \"127.0.0.1:2\"\nname = \"a\"\n",
        "line 6, column 8: duplicate backend.name 'a'",
    ),
    (
        "unresolvable",
        "[[backend]]\naddress = \"no-such-host.invalid:80\"\n",
        "line 2, column 11: invalid backend.address 'no-such-host.invalid:80'",
    ),
    (
        "syntax",
        "listen = 127.0.0.1:9090\n",
        "line 1, column 15: listen: invalid float",
    ),
];

#[test]
fn broken_files_give_one_line_per_problem_and_exit_1() -> TestResult {
    for &(name, text, want) in BROKEN {
        // A backend is added where the problem is not about backends.
        let text = if text.contains("[[backend]]") || name == "no-backend" {
            text.to_string()
        } else {
            format!("{text}{BACKEND}")
        };
        let path = temp_toml(name, &text)?;
        let (code, out, err) = check(&path)?;
        let _ = std::fs::remove_file(&path);
        assert_eq!(code, Some(1), "{name}: {out}{err}");
        assert!(out.is_empty(), "{name}: {out}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        let line = err.trim_end();
        let shown = path.display().to_string();
        assert!(
            line.starts_with(&format!("{shown}: {want}")),
            "{name}:\n  got  {line}\n  want {shown}: {want}"
        );
    }
    // Several problems: one line each.
    let path = temp_toml(
        "several",
        "[timeouts]\nidle = \"0\"\nclient = \"forever\"\n[[backend]]\naddress = \"x\"\n",
    )?;
    let (code, _, err) = check(&path)?;
    let _ = std::fs::remove_file(&path);
    assert_eq!(code, Some(1));
    assert_eq!(err.lines().count(), 3, "{err}");
    // A missing file is one line too.
    let (code, err) = run_bin(&["check-config", "/nonexistent/tidegate.toml"])?;
    assert_eq!((code, err.lines().count()), (Some(1), 1), "{err}");
    Ok(())
}

/// `X-Backend` of one GET through the proxy (`None`: no answer or no 200).
fn served_by(addr: std::net::SocketAddr) -> Option<String> {
    let mut c = util::client::Client::connect(addr).ok()?;
    let r = c.get("/").ok()?;
    (r.status == 200).then(|| r.header("X-Backend").map(str::to_string))?
}

#[test]
fn weights_3_to_1_under_round_robin_split_3_to_1() -> TestResult {
    let heavy = proxy::backend("0", "heavy")?;
    let light = proxy::backend("0", "light")?;
    let text = format!(
        "policy = \"round-robin\"\nworkers = 2\n\
         [[backend]]\naddress = \"{}\"\nweight = 3\n\
         [[backend]]\naddress = \"{}\"\n",
        heavy.local_addr(),
        light.local_addr()
    );
    let path = temp_toml("weights", &text)?;
    let shown = path.display().to_string();
    // --listen on the command line overrides the file's default.
    let p = Proc::spawn(
        "",
        &["proxy", "--config", &shown, "--listen", "127.0.0.1:0"],
    )?;
    let addr = p.addr()?;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        let who = served_by(addr).unwrap_or_else(|| "failed".into());
        *counts.entry(who).or_default() += 1;
    }
    let _ = std::fs::remove_file(&path);
    p.signal("INT")?;
    p.wait()?;
    // Sequential requests: exactly 3 of every 4 to the weight-3 backend.
    assert_eq!(counts.get("heavy"), Some(&30), "{counts:?}");
    assert_eq!(counts.get("light"), Some(&10), "{counts:?}");
    Ok(())
}

#[test]
fn a_backup_takes_traffic_only_once_every_primary_is_down() -> TestResult {
    let a = proxy::backend("0", "a")?;
    let b = proxy::backend("0", "b")?;
    let spare = proxy::backend("0", "spare")?;
    let text = format!(
        "policy = \"round-robin\"\nworkers = 1\n[timeouts]\nconnect = \"500ms\"\n\
         [[backend]]\naddress = \"{}\"\nname = \"a\"\n\
         [[backend]]\naddress = \"{}\"\nname = \"b\"\n\
         [[backend]]\naddress = \"{}\"\nname = \"spare\"\nbackup = true\n",
        a.local_addr(),
        b.local_addr(),
        spare.local_addr()
    );
    let path = temp_toml("backup", &text)?;
    let shown = path.display().to_string();
    let p = Proc::spawn(
        "",
        &["proxy", "--config", &shown, "--listen", "127.0.0.1:0"],
    )?;
    let addr = p.addr()?;
    let before: Vec<Option<String>> = (0..30).map(|_| served_by(addr)).collect();
    assert!(
        before
            .iter()
            .all(|w| matches!(w.as_deref(), Some("a" | "b"))),
        "{before:?}"
    );
    // One primary down: the other takes over, the backup stays idle.
    a.stop()?;
    let one_down: Vec<Option<String>> = (0..30).map(|_| served_by(addr)).collect();
    assert!(
        !one_down.iter().any(|w| w.as_deref() == Some("spare")),
        "{one_down:?}"
    );
    assert!(
        one_down[20..].iter().all(|w| w.as_deref() == Some("b")),
        "{one_down:?}"
    );
    // Both down: once b is ejected too, the backup answers everything.
    b.stop()?;
    let start = Instant::now();
    let mut switched = false;
    while start.elapsed() < Duration::from_secs(10) {
        if served_by(addr).as_deref() == Some("spare") {
            switched = true;
            break;
        }
    }
    assert!(switched, "the backup never took over");
    let after: Vec<Option<String>> = (0..20).map(|_| served_by(addr)).collect();
    assert!(
        after.iter().all(|w| w.as_deref() == Some("spare")),
        "{after:?}"
    );
    let _ = std::fs::remove_file(&path);
    p.signal("INT")?;
    p.wait()?;
    Ok(())
}
