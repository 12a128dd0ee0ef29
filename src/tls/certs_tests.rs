//! Loading and selecting certificates, with rcgen certificates written to
//! a temporary directory.

use std::path::PathBuf;

use super::*;

/// A fresh directory under the system temp dir.
fn tmpdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tidegate-certs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a self-signed certificate for `names` valid from..until (years).
fn write_cert(dir: &Path, file: &str, names: &[&str], years: (i32, i32)) -> CertSpec {
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let spec = CertSpec {
        cert: dir.join(format!("{file}.pem")),
        key: dir.join(format!("{file}.key")),
        names: None,
        default: None,
    };
    std::fs::write(&spec.cert, cert.pem()).unwrap();
    std::fs::write(&spec.key, key.serialize_pem()).unwrap();
    spec
}

const NOW: i64 = 1_796_169_600; // 2026-12-02

fn leaf(k: &Arc<CertifiedKey>) -> Vec<u8> {
    k.cert[0].to_vec()
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let dir = tmpdir("sni");
    let a = write_cert(&dir, "a", &["a.example.com"], (2020, 2040));
    let w = write_cert(&dir, "w", &["*.example.com"], (2020, 2040));
    let mut d = write_cert(&dir, "d", &["fallback.test"], (2020, 2040));
    d.default = Some(true);
    let tls = load_listener(&[a.clone(), w.clone(), d.clone()], NOW).unwrap();
    assert!(
        tls.summary.contains("fallback.test (default)"),
        "{}",
        tls.summary
    );
    assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);

    let mut r = SniResolver::default();
    let p = rustls::crypto::ring::default_provider();
    for (spec, name) in [(&a, "a"), (&w, "w"), (&d, "d")] {
        let (key, _) = load_one(spec, &p, NOW).unwrap();
        let key = Arc::new(key);
        match name {
            "a" => r.exact.insert("a.example.com".into(), key),
            "w" => r.wildcard.insert("example.com".into(), key),
            _ => r.default.replace(key),
        };
    }
    let which = |n: Option<&str>| r.pick(n).map(|k| leaf(&k));
    let a_der = which(Some("a.example.com"));
    assert_eq!(which(Some("A.Example.COM.")), a_der, "case and final dot");
    let w_der = which(Some("b.example.com"));
    assert_ne!(w_der, a_der);
    let d_der = which(None);
    assert_ne!(d_der, w_der);
    assert_eq!(which(Some("x.y.example.com")), d_der, "one label only");
    assert_eq!(which(Some("example.com")), d_der);
    r.default = None;
    assert!(r.pick(Some("other.test")).is_none());
    assert!(r.pick(None).is_none());
}

#[test]
fn a_lone_certificate_is_the_default_unless_said_otherwise() {
    let dir = tmpdir("lone");
    let mut a = write_cert(&dir, "a", &["a.test"], (2020, 2040));
    assert!(
        load_listener(&[a.clone()], NOW)
            .unwrap()
            .summary
            .ends_with("(default)")
    );
    a.default = Some(false);
    assert_eq!(load_listener(&[a], NOW).unwrap().summary, "a.test");
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tmpdir("bad");
    let a = write_cert(&dir, "a", &["a.test"], (2020, 2040));
    let b = write_cert(&dir, "b", &["b.test"], (2020, 2040));
    let mismatched = CertSpec {
        key: b.key.clone(),
        ..a.clone()
    };
    let e = load_listener(&[mismatched], NOW).unwrap_err();
    assert!(e.contains("do not match"), "{e}");

    let old = write_cert(&dir, "old", &["old.test"], (2019, 2021));
    let e = load_listener(&[old], NOW).unwrap_err();
    assert!(e.contains("expired on 2021-01-01"), "{e}");

    let early = write_cert(&dir, "early", &["early.test"], (2030, 2040));
    let e = load_listener(&[early], NOW).unwrap_err();
    assert!(e.contains("not valid before 2030-01-01"), "{e}");

    let missing = CertSpec {
        cert: dir.join("nope.pem"),
        ..a.clone()
    };
    let e = load_listener(&[missing], NOW).unwrap_err();
    assert!(e.contains("nope.pem: cannot read"), "{e}");

    let swapped = CertSpec {
        cert: a.key.clone(),
        key: a.cert.clone(),
        ..a.clone()
    };
    let e = load_listener(&[swapped], NOW).unwrap_err();
    assert!(e.contains("no certificate"), "{e}");

    let two_defaults = [
        CertSpec {
            default: Some(true),
            ..a.clone()
        },
        CertSpec {
            default: Some(true),
            ..b.clone()
        },
    ];
    let e = load_listener(&two_defaults, NOW).unwrap_err();
    assert!(e.contains("more than one"), "{e}");
    let e = load_listener(&[a.clone(), a], NOW).unwrap_err();
    assert!(e.contains("already served"), "{e}");
}

#[test]
fn dates_round_trip() {
    assert_eq!(date(0), "1970-01-01");
    assert_eq!(date(NOW), "2026-12-02");
}
