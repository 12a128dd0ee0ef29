//! HTTPS through the real binary: `curl --cacert` and `openssl s_client`
//! (skipped with a message when missing, unless
//! `TIDEGATE_REQUIRE_EXTERNAL=1`), SIGHUP certificate reload, the TLS
//! metrics, and a large download over TLS with flat proxy memory.

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use util::admin::{external, run_bounded};
use util::tls::{self, Pki};
use util::{Proc, TestResult, wait_until};

/// Starts the binary on `config`; its HTTPS listener's address.
fn start(pki: &Pki, config: &str) -> Result<(Proc, SocketAddr), Box<dyn std::error::Error>> {
    let path = pki.dir.join("tidegate.toml");
    std::fs::write(&path, config)?;
    let p = Proc::spawn("", &["proxy", "--config", &path.display().to_string()])?;
    p.addr()?;
    let https = p
        .stderr
        .iter()
        .find_map(|l| {
            l.split("listening on ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .ok_or_else(|| format!("no https listener logged: {:?}", p.stderr))?;
    Ok((p, https))
}

fn config(pki: &Pki, backend: SocketAddr, admin: bool) -> String {
    let d = pki.dir.display();
    let admin = if admin {
        "[admin]\naddress = \"127.0.0.1:0\"\n"
    } else {
        ""
    };
    format!(
        "listen = \"127.0.0.1:0\"\nworkers = 1\n{admin}\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{d}/site.pem\", key = \"{d}/site.key\" }}\n\
         [[backend]]\naddress = \"{backend}\"\n"
    )
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        || Command::new(tool)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
}

fn curl(https: SocketAddr, ca: &std::path::Path) -> std::io::Result<String> {
    let url = format!("https://localhost:{}/", https.port());
    let out = run_bounded(
        Command::new("curl").args([
            "-sS",
            "--cacert",
            &ca.display().to_string(),
            "--resolve",
            &format!("localhost:{}:127.0.0.1", https.port()),
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{ssl_verify_result}",
            &url,
        ]),
        b"",
    )?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn curl_and_openssl_speak_https_and_sighup_reloads_the_certificate() -> TestResult {
    if !external("curl", have("curl"), "apt-get install curl")
        || !external("openssl", have("openssl"), "apt-get install openssl")
    {
        return Ok(());
    }
    let pki = Pki::new("ext");
    let (old, _) = pki.cert("site", &["localhost"]);
    let old_ca = pki.dir.join("old-ca.pem");
    std::fs::copy(&old.cert, &old_ca)?;
    let b = util::proxy::backend("0", "a")?;
    let (p, https) = start(&pki, &config(&pki, b.local_addr(), true))?;
    let admin = p
        .stderr
        .iter()
        .find_map(|l| {
            l.split("admin endpoint on http://")
                .nth(1)?
                .split('/')
                .next()
        })
        .ok_or("no admin address logged")?
        .to_string();

    assert_eq!(curl(https, &old_ca)?, "200 0");

    let s_client = |extra: &[&str], ca: &std::path::Path| {
        let mut cmd = Command::new("openssl");
        cmd.args([
            "s_client",
            "-connect",
            &https.to_string(),
            "-servername",
            "localhost",
        ])
        .args([
            "-alpn",
            "http/1.1",
            "-CAfile",
            &ca.display().to_string(),
            "-quiet",
        ])
        .args(["-verify_return_error", "-ign_eof"])
        .args(extra);
        run_bounded(
            &mut cmd,
            b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        )
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
    };
    for version in ["-tls1_3", "-tls1_2"] {
        let out = s_client(&[version], &old_ca)?;
        assert!(out.contains("HTTP/1.1 200 OK"), "{version}: {out}");
        assert!(out.contains("verify return:1"), "{version}: {out}");
    }
    // A client offering only h2 is refused (ALPN http/1.1 only).
    let mut cmd = Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &https.to_string(),
        "-alpn",
        "h2",
        "-brief",
    ]);
    let out = run_bounded(&mut cmd, b"")?;
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("no application protocol") || text.contains("alert"),
        "{text}"
    );

    // The metrics count the handshakes by version and the refusal by reason.
    let get = |path: &str| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", &format!("http://{admin}{path}")]);
        run_bounded(&mut cmd, b"").map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let metrics = get("/metrics")?;
    for line in [
        "tidegate_tls_handshakes_total{version=\"TLSv1.3\"} 2",
        "tidegate_tls_handshakes_total{version=\"TLSv1.2\"} 1",
        "tidegate_tls_handshake_errors_total{reason=\"bad_handshake\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
    let stats = get("/stats")?;
    assert!(
        stats.contains("\"tls\":{\"handshakes\":{\"TLSv1.2\":1,\"TLSv1.3\":2}"),
        "{stats}"
    );

    // SIGHUP with a new certificate: curl trusting only the new one works.
    let new = pki.cert("next", &["localhost"]);
    std::fs::copy(&new.0.cert, pki.dir.join("site.pem.new"))?;
    std::fs::copy(&new.0.key, pki.dir.join("site.key.new"))?;
    std::fs::rename(pki.dir.join("site.pem.new"), &old.cert)?;
    std::fs::rename(pki.dir.join("site.key.new"), &old.key)?;
    p.signal("HUP")?;
    assert!(wait_until(Duration::from_secs(10), || {
        curl(https, &new.0.cert).is_ok_and(|o| o == "200 0")
    }));
    assert_ne!(
        curl(https, &old_ca)?,
        "200 0",
        "the old certificate is gone"
    );
    Ok(())
}

/// Bytes of the download: `TIDEGATE_TLS_DOWNLOAD_MB` MiB, default 1024.
fn download_size() -> u64 {
    let mb = std::env::var("TIDEGATE_TLS_DOWNLOAD_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1024);
    mb << 20
}

/// A backend answering every request with `size` bytes (from one buffer).
fn big_backend(size: u64) -> std::io::Result<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    thread::spawn(move || {
        // One connection is all the test makes (bounded).
        for conn in l.incoming().take(4) {
            let Ok(mut s) = conn else { continue };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let chunk = vec![b'x'; 256 * 1024];
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n");
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                if s.write_all(&chunk[..n]).is_err() {
                    break;
                }
                left -= n as u64;
            }
        }
    });
    Ok(addr)
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> std::io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

#[test]
fn a_large_download_over_tls_keeps_proxy_memory_flat() -> TestResult {
    let size = download_size();
    let pki = Pki::new("big");
    let (_, der) = pki.cert("site", &["localhost"]);
    let backend = big_backend(size)?;
    let (p, https) = start(&pki, &config(&pki, backend, false))?;
    let cfg = tls::client_config(&[&der]);
    let mut c = tls::connect(https, &cfg, "localhost")?;
    c.send(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    // Read the head, then stream the body through a fixed buffer.
    let mut got = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.stream.read(&mut buf[..1])?;
        if n == 0 {
            return Err("closed before the head".into());
        }
        head.push(buf[0]);
    }
    let mut baseline = None;
    while got < size {
        let n = c.stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        if baseline.is_none() && got >= (size / 16).max(8 << 20) {
            baseline = Some(memory(p.child.id())?.0);
        }
    }
    let took = started.elapsed();
    let (rss, hwm) = memory(p.child.id())?;
    let baseline = baseline.unwrap_or(rss);
    println!(
        "{} MiB over TLS in {took:.1?} ({:.0} MiB/s); proxy RSS {baseline} KiB after \
         {}, {rss} KiB at the end, peak {hwm} KiB",
        size >> 20,
        (size >> 20) as f64 / took.as_secs_f64(),
        (size / 16).max(8 << 20) >> 20,
    );
    assert_eq!(got, size);
    // Flat: the whole transfer moves through a few records per side.
    assert!(
        hwm < baseline + 8 * 1024,
        "peak {hwm} KiB vs {baseline} KiB"
    );
    Ok(())
}

#[test]
fn the_example_https_config_checks_with_the_readme_openssl_certificate() -> TestResult {
    if !external("openssl", have("openssl"), "apt-get install openssl") {
        return Ok(());
    }
    let pki = Pki::new("example");
    let (key, pem) = (pki.dir.join("site.key"), pki.dir.join("site.pem"));
    // The command README.md and examples/tidegate-tls.toml give.
    let mut cmd = Command::new("openssl");
    cmd.args([
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
    ])
    .args(["-nodes", "-days", "365", "-subj", "/CN=localhost"])
    .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
    .args([
        "-keyout",
        &key.display().to_string(),
        "-out",
        &pem.display().to_string(),
    ]);
    let out = run_bounded(&mut cmd, b"")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/tidegate-tls.toml"
    ))?;
    let text = example.replace("examples/tls/", &format!("{}/", pki.dir.display()));
    let path = pki.dir.join("tidegate-tls.toml");
    std::fs::write(&path, text)?;
    let out = Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(["check-config", &path.display().to_string()])
        .output()?;
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("https 127.0.0.1:9443 [localhost (default)]"),
        "{said}"
    );
    Ok(())
}

#[test]
fn an_upgrade_hands_the_https_listener_over() -> TestResult {
    let pki = Pki::new("upgrade");
    let (_, der) = pki.cert("site", &["localhost"]);
    let b = util::proxy::backend("0", "a")?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let text = config(&pki, b.local_addr(), false).replace(
        "[[listener]]\naddress = \"127.0.0.1:0\"",
        &format!("[[listener]]\naddress = \"127.0.0.1:{port}\""),
    );
    let path = pki.dir.join("tidegate.toml");
    std::fs::write(&path, text)?;
    let sock = pki.dir.join("upgrade.sock");
    let args = [
        "proxy",
        "--config",
        &path.display().to_string(),
        "--upgrade-socket",
        &sock.display().to_string(),
    ]
    .map(String::from);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let old = Proc::spawn("", &args)?;
    old.addr()?;
    let https = SocketAddr::from(([127, 0, 0, 1], port));
    let cfg = tls::client_config(&[&der]);
    // A connection to the old process, kept open across the handover.
    let mut early = tls::connect(https, &cfg, "localhost")?;
    assert_eq!(early.get("/")?.status, 200);

    let mut takeover = args.clone();
    takeover.push("--takeover");
    let mut new = Proc::spawn("", &takeover)?;
    new.addr()?;
    let took = new
        .drain_stderr()
        .iter()
        .any(|l| l.contains("took the listeners over"));
    assert!(took, "{:?}", new.stderr);
    // The same socket, not a new bind: the old process's backlog carries
    // over, and the new one serves HTTPS on it.
    assert!(
        !new.stderr.iter().any(|l| l.contains("in use")),
        "{:?}",
        new.stderr
    );
    let mut c = tls::connect(https, &cfg, "localhost")?;
    assert_eq!(c.get("/")?.status, 200);
    // The early connection finishes on the old process (drained: its next
    // answer says close).
    assert_eq!(early.get("/")?.status, 200);
    let (code, _, err) = old.wait()?;
    assert_eq!(code, Some(0), "{err:?}");
    Ok(())
}
