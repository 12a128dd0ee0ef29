//! Helpers for admin-endpoint tests: a proxy with `--admin` on port 0,
//! plain GETs, the external tools (Python's `prometheus_client`, headless
//! Chromium) and the skip-or-fail rule for when they are missing.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use tidegate::proxy::accesslog::{AccessLog, LogFormat, LogTarget};

use tidegate::admin::{self, AdminHandle};
use tidegate::config::{BackendAddr, ProxyConfig, ServerConfig};
use tidegate::runtime::reload::Reloader;
use tidegate::server::{ProxyHandles, RunningServer, Server};

use super::client::{Client, Response};
use super::proxy::Opts;

/// Set to 1 (CI does) to turn a missing external tool into a failure.
pub const REQUIRE_ENV: &str = "TIDEGATE_REQUIRE_EXTERNAL";

/// Longest an external program (python, chromium) may run.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(90);

/// A proxy with its admin endpoint, both on 127.0.0.1:0; stops when dropped
/// (admin first, as `tidegate proxy` does).
pub struct AdminProxy {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub handles: ProxyHandles,
    /// The reload path shared by SIGHUP and `POST /api/reload`.
    pub reloader: Reloader,
    admin: Option<AdminHandle>,
    server: Option<RunningServer>,
}

/// Starts a proxy in front of `backends` (named, e.g. `("alpha", addr)`)
/// with the admin endpoint on an ephemeral port.
pub fn start(backends: &[(&str, SocketAddr)], opts: Opts) -> io::Result<AdminProxy> {
    let err = |e: tidegate::server::StartError| io::Error::other(e.to_string());
    let cfg = ProxyConfig {
        server: ServerConfig::new("127.0.0.1:0", Some(opts.workers), 1024)
            .map_err(|e| io::Error::other(e.to_string()))?,
        listeners: Vec::new(),
        backends: backends
            .iter()
            .map(|&(name, addr)| BackendAddr::new(name, addr))
            .collect(),
        policy: opts.policy,
        backend_conn: opts.conn,
        timeouts: opts.timeouts,
        access_log: opts.csv.map(|path| AccessLog {
            target: LogTarget::File(path),
            format: LogFormat::Csv,
        }),
        slo: Some(std::time::Duration::from_millis(200)),
        eject_5xx: false,
        health_check: None,
        eject_after: 0,
        forward: opts.forward,
        admin: None,
        admin_token: None,
        resolve_interval: tidegate::config::DEFAULT_RESOLVE_INTERVAL,
    };
    let listener = admin::AdminListener::bind(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        opts.admin_token.clone(),
    )
    .map_err(err)?;
    let (server, handles) = Server::proxy(&cfg).map_err(err)?;
    let sources = admin::Sources {
        config: Some(Arc::clone(&handles.live)),
        shared: Arc::clone(&handles.shared),
        live: server.live_stats(),
        csv: handles.csv.clone(),
    };
    let reloader = server.reloader();
    let admin = listener.serve(sources, reloader.clone()).map_err(err)?;
    let server = server.spawn()?;
    Ok(AdminProxy {
        addr: server.local_addr(),
        admin_addr: admin.local_addr(),
        handles,
        reloader,
        admin: Some(admin),
        server: Some(server),
    })
}

impl AdminProxy {
    /// `GET path` on the admin endpoint (a new connection each time).
    pub fn get(&self, path: &str) -> io::Result<Response> {
        Client::connect(self.admin_addr)?.get(path)
    }

    /// `METHOD path` on the admin endpoint with `extra` header lines (each
    /// ending in CRLF), on a new connection.
    pub fn call(&self, method: &str, path: &str, extra: &str) -> io::Result<Response> {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: admin\r\n{extra}\r\n");
        Client::connect(self.admin_addr)?.exchange(req.as_bytes())
    }

    /// `GET path` on the admin endpoint, expecting 200 and a UTF-8 body.
    pub fn body(&self, path: &str) -> io::Result<String> {
        let r = self.get(path)?;
        if r.status != 200 {
            return Err(io::Error::other(format!("GET {path}: status {}", r.status)));
        }
        Ok(r.body_str())
    }

    /// Stops the admin endpoint, then the proxy.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Some(a) = self.admin.take() {
            a.stop();
        }
        if let Some(s) = self.server.take() {
            s.stop();
        }
    }
}

impl Drop for AdminProxy {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Clients sending `GET /` to `addr` on keep-alive connections until
/// stopped (or `limit` passes), counting answers.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    /// Answers other than 200, and requests that failed on the socket.
    pub failed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(addr: SocketAddr, clients: usize, limit: Duration) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let end = Instant::now() + limit;
        let threads = (0..clients)
            .map(|_| {
                let (stop, sent, failed) =
                    (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&failed));
                thread::spawn(move || {
                    while !stop.load(Relaxed) && Instant::now() < end {
                        let Ok(mut c) = Client::connect(addr) else {
                            thread::sleep(Duration::from_millis(50));
                            continue;
                        };
                        while !stop.load(Relaxed) && Instant::now() < end {
                            match c.get("/") {
                                Ok(r) if r.status == 200 => sent.fetch_add(1, Relaxed),
                                _ => {
                                    failed.fetch_add(1, Relaxed);
                                    break;
                                }
                            };
                        }
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            sent,
            failed,
            threads,
        }
    }

    pub fn stop(self) -> u64 {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        self.sent.load(Relaxed)
    }
}

/// Whether a test needing `what` may go on: `true` if `available`;
/// otherwise it panics when [`REQUIRE_ENV`] is 1 and else prints a SKIP
/// line and returns `false`.
pub fn external(what: &str, available: bool, install: &str) -> bool {
    if available {
        return true;
    }
    let required = std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{what} is required ({REQUIRE_ENV}=1) but not installed: {install}"
    );
    eprintln!("SKIP: {what} not installed ({install}); set {REQUIRE_ENV}=1 to make this a failure");
    false
}

/// Runs `cmd` to completion, killing it after [`TOOL_TIMEOUT`].
pub fn run_bounded(cmd: &mut Command, stdin: &[u8]) -> io::Result<Output> {
    let mut child: Child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin)?;
    }
    let end = Instant::now() + TOOL_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!("{cmd:?} timed out")));
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output()
}

/// Python can import `prometheus_client`.
pub fn have_prometheus_client() -> bool {
    Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One sample as `prometheus_client` parsed it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family's name and type as the parser saw them.
    pub family: String,
    pub kind: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Prints one tab-separated line per sample: family, type, sample name,
/// value, then label name/value pairs (test label values have no tabs).
const PARSE_SCRIPT: &str = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
for f in text_string_to_metric_families(sys.stdin.read()):
    for s in f.samples:
        fields = [f.name, f.type, s.name, repr(float(s.value))]
        for k, v in sorted(s.labels.items()):
            fields += [k, v]
        print("\t".join(fields))
"#;

/// Parses an exposition with Python's `prometheus_client`; an error if
/// the parser rejects it.
pub fn parse_prometheus(text: &str) -> io::Result<Vec<Sample>> {
    let out = run_bounded(
        Command::new("python3").args(["-c", PARSE_SCRIPT]),
        text.as_bytes(),
    )?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "prometheus_client rejected /metrics: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let bad = |l: &str| io::Error::other(format!("unexpected parser line {l:?}"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let [family, kind, name, value, labels @ ..] = f.as_slice() else {
                return Err(bad(l));
            };
            Ok(Sample {
                family: family.to_string(),
                kind: kind.to_string(),
                name: name.to_string(),
                labels: labels
                    .chunks(2)
                    .filter_map(|kv| Some((kv.first()?.to_string(), kv.get(1)?.to_string())))
                    .collect(),
                value: value.parse().map_err(|_| bad(l))?,
            })
        })
        .collect()
}

/// Sum of the samples named `name` whose labels include all of `with`.
pub fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            with.iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
        .map(|s| s.value)
        .sum()
}

/// Validates `json` with Python's `json` module and returns its top-level
/// keys and the given dotted paths' values (as Python prints them).
pub fn json_probe(json: &str, paths: &[&str]) -> io::Result<(Vec<String>, Vec<String>)> {
    let script = r#"
import json, sys
doc = json.loads(sys.stdin.read())
print(",".join(sorted(doc.keys())))
for p in sys.argv[1:]:
    v = doc
    for k in p.split("."):
        v = v[int(k)] if isinstance(v, list) else v[k]
    print(json.dumps(v))
"#;
    let out = run_bounded(
        Command::new("python3").args(["-c", script]).args(paths),
        json.as_bytes(),
    )?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "/stats is not the expected JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines().map(str::to_string);
    let keys = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .map(str::to_string)
        .collect();
    Ok((keys, lines.collect()))
}

/// The Chromium binary (`CHROMIUM` overrides the name).
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

pub fn have_chromium() -> bool {
    Command::new(chromium())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs headless Chromium on `url` with `extra` flags (`--dump-dom`,
/// `--screenshot=...`), in a throw-away profile, bounded in time.
pub fn headless(url: &str, extra: &[&str]) -> io::Result<Output> {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let profile = std::env::temp_dir().join(format!(
        "tidegate-chromium-{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Relaxed)
    ));
    let out = run_bounded(
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--hide-scrollbars",
                "--virtual-time-budget=5000",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url),
        b"",
    );
    let _ = std::fs::remove_dir_all(&profile);
    out
}

/// The start tags named `tag` in `html` (`<path ...>`), as attribute maps.
pub fn tags(html: &str, tag: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{tag} ");
    html.match_indices(&open)
        .filter_map(|(i, _)| {
            let rest = html.get(i + open.len()..)?;
            let end = rest.find('>')?;
            Some(attributes(rest.get(..end)?))
        })
        .collect()
}

/// `name="value"` pairs of one start tag.
fn attributes(mut s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    while let Some(eq) = s.find("=\"") {
        let name = s.get(..eq).unwrap_or_default().trim().to_string();
        let Some(rest) = s.get(eq + 2..) else { break };
        let Some(close) = rest.find('"') else { break };
        out.insert(name, rest.get(..close).unwrap_or_default().to_string());
        s = rest.get(close + 1..).unwrap_or_default();
    }
    out
}

/// The inner HTML of the element whose start tag has `id="<id>"`, up to
/// the first `</end>` after it.
pub fn section<'a>(html: &'a str, id: &str, end: &str) -> Option<&'a str> {
    let start = html.find(&format!("id=\"{id}\""))?;
    let rest = html.get(start..)?;
    let stop = rest.find(&format!("</{end}>"))?;
    rest.get(..stop)
}
