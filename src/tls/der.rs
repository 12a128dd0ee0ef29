//! The two facts tidegate reads from an X.509 certificate itself: its
//! validity period (to refuse an expired certificate in `check-config` and
//! on reload) and its DNS subject alternative names (the names SNI selects
//! it by, unless the configuration lists them). A minimal DER walk over
//! RFC 5280's `TBSCertificate`; anything unexpected is an error, never a
//! panic. Pure.

// DER tags (X.690), as RFC 5280's certificate syntax uses them.
/// SEQUENCE (constructed).
const SEQUENCE: u8 = 0x30;
/// INTEGER (the serial number).
const INTEGER: u8 = 0x02;
/// OBJECT IDENTIFIER (an extension's id).
const OID: u8 = 0x06;
/// BOOLEAN (an extension's `critical` flag).
const BOOLEAN: u8 = 0x01;
/// OCTET STRING (an extension's value).
const OCTET_STRING: u8 = 0x04;
/// UTCTime (validity dates through 2049).
const UTC_TIME: u8 = 0x17;
/// GeneralizedTime (validity dates from 2050).
const GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version`.
const VERSION: u8 = 0xA0;
/// `[3] EXPLICIT Extensions`.
const EXTENSIONS: u8 = 0xA3;
/// `dNSName [2] IA5String` inside a GeneralName.
const DNS_NAME: u8 = 0x82;
/// id-ce-subjectAltName, 2.5.29.17.
const SAN_OID: &[u8] = &[0x55, 0x1D, 0x11];

/// What tidegate needs of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// notBefore, in seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, in seconds since the Unix epoch.
    pub not_after: i64,
    /// The DNS names of its subjectAltName extension, lowercased.
    pub dns_names: Vec<String>,
}

/// One TLV: its tag, its contents, and what follows it.
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, rest) = input.split_first().ok_or("truncated")?;
    let (&first, rest) = rest.split_first().ok_or("truncated")?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 {
            return Err("unsupported length");
        }
        let bytes = rest.get(..n).ok_or("truncated")?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| acc << 8 | usize::from(b));
        (len, rest.get(n..).ok_or("truncated")?)
    };
    let body = rest.get(..len).ok_or("truncated")?;
    Ok((tag, body, rest.get(len..).ok_or("truncated")?))
}

/// The contents of a TLV that must carry `tag`, and what follows.
fn expect(input: &[u8], tag: u8) -> Result<(&[u8], &[u8]), &'static str> {
    match tlv(input)? {
        (t, body, rest) if t == tag => Ok((body, rest)),
        _ => Err("unexpected element"),
    }
}

/// Reads the validity and DNS names of a DER certificate.
pub fn facts(cert: &[u8]) -> Result<CertFacts, &'static str> {
    let (certificate, _) = expect(cert, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut rest = tbs;
    if rest.first() == Some(&VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_serial, rest) = expect(rest, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, rest) = expect(rest, SEQUENCE)?;
    let (not_before, after) = time(validity)?;
    let (not_after, _) = time(after)?;
    let (_subject, rest) = expect(rest, SEQUENCE)?;
    let (_spki, mut rest) = expect(rest, SEQUENCE)?;
    let mut dns_names = Vec::new();
    // Optional unique ids, then the extensions; bounded by the input.
    while !rest.is_empty() {
        let (tag, body, next) = tlv(rest)?;
        if tag == EXTENSIONS {
            dns_names = san_names(body)?;
        }
        rest = next;
    }
    Ok(CertFacts {
        not_before,
        not_after,
        dns_names,
    })
}

/// The dNSNames of the subjectAltName extension in `[3] Extensions`.
fn san_names(explicit: &[u8]) -> Result<Vec<String>, &'static str> {
    let (mut exts, _) = expect(explicit, SEQUENCE)?;
    while !exts.is_empty() {
        let (ext, next) = expect(exts, SEQUENCE)?;
        exts = next;
        let (oid, mut rest) = expect(ext, OID)?;
        if oid != SAN_OID {
            continue;
        }
        if rest.first() == Some(&BOOLEAN) {
            rest = tlv(rest)?.2;
        }
        let (value, _) = expect(rest, OCTET_STRING)?;
        let (mut names, _) = expect(value, SEQUENCE)?;
        let mut out = Vec::new();
        while !names.is_empty() {
            let (tag, body, next) = tlv(names)?;
            names = next;
            if tag == DNS_NAME {
                let name = std::str::from_utf8(body).map_err(|_| "bad dNSName")?;
                out.push(name.to_ascii_lowercase());
            }
        }
        return Ok(out);
    }
    Ok(Vec::new())
}

/// A UTCTime or GeneralizedTime ("...Z"), as Unix seconds, and what follows.
fn time(input: &[u8]) -> Result<(i64, &[u8]), &'static str> {
    let (tag, body, rest) = tlv(input)?;
    let text = std::str::from_utf8(body).map_err(|_| "bad time")?;
    let digits = text.strip_suffix('Z').ok_or("time not in UTC")?;
    let num = |s: Option<&str>| -> Result<i64, &'static str> {
        s.and_then(|s| s.parse::<i64>().ok()).ok_or("bad time")
    };
    let (year, tail) = match tag {
        UTC_TIME if digits.len() == 12 => {
            let yy = num(digits.get(..2))?;
            // RFC 5280 §4.1.2.5.1: 50..99 are 19xx, 00..49 are 20xx.
            (
                if yy >= 50 { 1900 + yy } else { 2000 + yy },
                digits.get(2..),
            )
        }
        GENERALIZED_TIME if digits.len() == 14 => (num(digits.get(..4))?, digits.get(4..)),
        _ => return Err("bad time"),
    };
    let tail = tail.ok_or("bad time")?;
    let field = |i: usize| num(tail.get(i..i + 2));
    let (month, day) = (field(0)?, field(2)?);
    let (h, m, s) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return Err("bad time");
    }
    let days = crate::civil::days_from_civil(year, month, day);
    Ok((days * 86_400 + h * 3600 + m * 60 + s, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::civil::days_from_civil;

    #[test]
    fn reads_an_rcgen_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["Example.com".into(), "*.example.com".into()])
                .unwrap();
        params.not_before = rcgen::date_time_ymd(2020, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 6, 30);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = facts(cert.der()).unwrap();
        assert_eq!(f.dns_names, vec!["example.com", "*.example.com"]);
        assert_eq!(f.not_before, days_from_civil(2020, 1, 2) * 86_400);
        // 2051: GeneralizedTime (UTCTime ends in 2049).
        assert_eq!(f.not_after, days_from_civil(2051, 6, 30) * 86_400);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01",
        ] {
            assert!(facts(bad).is_err());
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().to_vec();
        for cut in 0..der.len() {
            let _ = facts(&der[..cut]);
        }
    }
}
