//! Certificate reload: under load, new handshakes get the new certificate,
//! established connections carry on, no request fails; a bad certificate
//! file is a clear error and keeps the running one.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::thread;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use util::proxy::{self, TestProxy};
use util::tls::{self, Pki};
use util::{TestResult, wait_until};

/// A configuration file with one HTTPS listener for `cert`/`key`.
fn config_text(backend: std::net::SocketAddr, pki: &Pki) -> String {
    let d = pki.dir.display();
    format!(
        "listen = \"127.0.0.1:0\"\nworkers = 2\npolicy = \"round-robin\"\n\
         [timeouts]\nheader = \"5s\"\n\
         [[listener]]\naddress = \"127.0.0.1:0\"\n\
         tls = {{ cert = \"{d}/site.pem\", key = \"{d}/site.key\" }}\n\
         [[backend]]\naddress = \"{backend}\"\n"
    )
}

/// Loads the file's text as a reload would.
fn load(text: &str) -> Result<tidegate::config::ProxyConfig, String> {
    tidegate::config::file::load(text).map_err(|p| {
        p.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Installs `file` as site.pem/site.key (renamed into place).
fn install(pki: &Pki, file: &str) {
    for ext in ["pem", "key"] {
        let from = pki.dir.join(format!("{file}.{ext}"));
        let tmp = pki.dir.join(format!("site.{ext}.new"));
        std::fs::copy(&from, &tmp).expect("copy");
        std::fs::rename(&tmp, pki.dir.join(format!("site.{ext}"))).expect("rename");
    }
}

#[test]
fn certificate_reload_under_load_fails_no_request() -> TestResult {
    let pki = Pki::new("reload");
    let (_, old_der) = pki.cert("old", &["site.test"]);
    let (_, new_der) = pki.cert("new", &["site.test"]);
    install(&pki, "old");
    let b = proxy::backend("0", "a")?;
    let text = config_text(b.local_addr(), &pki);
    let p: TestProxy = proxy::start_config(load(&text)?)?;
    let https = p.listeners[0];
    let cfg = tls::client_config(&[&old_der, &new_der]);

    // An established connection from before the reload.
    let mut early = tls::connect(https, &cfg, "site.test")?;
    assert_eq!(tls::served(&early).as_ref(), Some(&old_der));
    assert_eq!(early.get("/")?.status, 200);

    // Load: threads opening a connection for every two requests.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_new) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (stop, ok, failed, saw_new, cfg) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failed),
            Arc::clone(&saw_new),
            Arc::clone(&cfg),
        );
        let new_der: CertificateDer<'static> = new_der.clone();
        threads.push(thread::spawn(move || {
            // Bounded: stopped by the test, at most 10,000 connections.
            for _ in 0..10_000 {
                if stop.load(Relaxed) {
                    break;
                }
                let result = tls::connect(https, &cfg, "site.test").and_then(|mut c| {
                    if tls::served(&c).as_ref() == Some(&new_der) {
                        saw_new.fetch_add(1, Relaxed);
                    }
                    let a = c.get("/")?.status;
                    let b = c.get("/")?.status;
                    Ok(a == 200 && b == 200)
                });
                match result {
                    Ok(true) => ok.fetch_add(2, Relaxed),
                    _ => failed.fetch_add(1, Relaxed),
                };
            }
        }));
    }
    assert!(wait_until(Duration::from_secs(10), || ok.load(Relaxed) >= 50));
    install(&pki, "new");
    let plan = p.handles.live.reload(load(&text)?)?;
    assert!(plan.needs_restart.is_empty(), "{:?}", plan.needs_restart);
    assert!(wait_until(Duration::from_secs(10), || saw_new
        .load(Relaxed)
        >= 20));

    // A bad file on reload: the error is clear and the new certificate stays.
    let (_, other_der) = pki.cert("other", &["site.test"]);
    std::fs::copy(pki.dir.join("other.key"), pki.dir.join("site.key"))?;
    let err = load(&text).err().unwrap_or_default();
    assert!(err.contains("do not match"), "{err}");
    thread::sleep(Duration::from_millis(200));
    stop.store(true, Relaxed);
    for t in threads {
        t.join().map_err(|_| "load thread panicked")?;
    }
    assert_eq!(
        failed.load(Relaxed),
        0,
        "no request failed across the reload"
    );
    let c = tls::connect(https, &cfg, "site.test")?;
    assert_eq!(tls::served(&c).as_ref(), Some(&new_der));
    assert_ne!(tls::served(&c).as_ref(), Some(&other_der));

    // The connection from before the reload still works, on the old certificate.
    assert_eq!(early.get("/")?.status, 200);
    assert_eq!(tls::served(&early).as_ref(), Some(&old_der));
    println!(
        "{} requests, {} connections on the new certificate, 0 failed",
        ok.load(Relaxed),
        saw_new.load(Relaxed)
    );
    Ok(())
}

#[test]
fn bad_certificate_files_are_clear_check_config_errors() -> TestResult {
    let pki = Pki::new("check");
    let (good, _) = pki.cert("good", &["site.test"]);
    let (other, _) = pki.cert("other", &["other.test"]);
    let (expired, _) = pki.cert_valid("expired", &["site.test"], (2019, 2021));
    let cases = [
        (good.cert.clone(), other.key.clone(), "do not match"),
        (
            expired.cert.clone(),
            expired.key.clone(),
            "expired on 2021-01-01",
        ),
        (
            pki.dir.join("missing.pem"),
            good.key.clone(),
            "missing.pem: cannot read",
        ),
    ];
    for (cert, key, want) in cases {
        let text = format!(
            "[[listener]]\naddress = \"127.0.0.1:0\"\n\
             tls = {{ cert = \"{}\", key = \"{}\" }}\n\
             [[backend]]\naddress = \"127.0.0.1:1\"\n",
            cert.display(),
            key.display()
        );
        let err = load(&text).err().unwrap_or_default();
        assert!(err.contains(want), "want {want}: {err}");
        assert!(err.contains("line 3"), "points at the tls line: {err}");
        // The binary's check-config says the same and fails.
        let path = pki.dir.join("check.toml");
        std::fs::write(&path, &text)?;
        let (code, out) = util::run_bin(&["check-config", &path.display().to_string()])?;
        assert_ne!(code, Some(0), "{out}");
        assert!(out.contains(want), "{out}");
    }
    Ok(())
}

#[test]
fn several_certificates_in_the_file_form() -> TestResult {
    let pki = Pki::new("form");
    let (a, a_der) = pki.cert("a", &["a.test"]);
    let (w, w_der) = pki.cert("w", &["ignored.test", "x.w.test"]);
    let text = format!(
        "[[listener]]\naddress = \"127.0.0.1:0\"\n\
         [[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\ndefault = true\n\
         [[listener.tls.certificate]]\ncert = \"{}\"\nkey = \"{}\"\nnames = [\"*.w.test\"]\n\
         [[backend]]\naddress = \"127.0.0.1:1\"\n",
        a.cert.display(),
        a.key.display(),
        w.cert.display(),
        w.key.display()
    );
    let cfg = load(&text)?;
    let summary = tidegate::config::file::summary(&cfg);
    assert!(
        summary.contains("[a.test (default); *.w.test]"),
        "{summary}"
    );
    let b = proxy::backend("0", "a")?;
    let mut cfg = cfg;
    cfg.backends = vec![tidegate::config::BackendAddr::new("a", b.local_addr())];
    let p = proxy::start_config(cfg)?;
    let roots = [&a_der, &w_der];
    // `names` replaces the certificate's own SANs: x.w.test gets it by the
    // wildcard, ignored.test (a SAN, not listed) gets the default, which
    // does not cover it, so the client refuses.
    let c = tls::connect(p.listeners[0], &tls::client_config(&roots), "x.w.test")?;
    assert_eq!(tls::served(&c).as_ref(), Some(&w_der));
    assert!(tls::connect(p.listeners[0], &tls::client_config(&roots), "ignored.test").is_err());
    let mut c = tls::connect(p.listeners[0], &tls::client_config(&roots), "a.test")?;
    assert_eq!(tls::served(&c).as_ref(), Some(&a_der));
    assert_eq!(c.get("/")?.status, 200);
    // An unknown key in the tls table is an error, as everywhere.
    let bad = text.replace("default = true", "defualt = true");
    assert!(load(&bad).is_err_and(|e| e.contains("defualt")));
    Ok(())
}
