//! ISO-8601 timestamps as the CSV logs write them: tidegate's
//! `2026-11-22T15:54:52.241846Z` and the seed's `2025-05-09T20:04:04.679379`
//! (Python's `datetime.isoformat()`, no zone).
//!
//! Only differences between timestamps matter to the report, so a time
//! without a zone is taken as UTC; an explicit `+HH:MM` / `-HH:MM` offset is
//! applied. The result is microseconds since the Unix epoch: finer digits
//! are dropped, which is far below anything a run duration can show.

/// Microseconds per second.
const US_PER_SEC: i64 = 1_000_000;
/// Digits of a fraction the result keeps (microseconds); extra digits
/// (e.g. nanoseconds) are accepted and truncated.
const KEPT_FRACTION_DIGITS: usize = 6;

/// Parses `YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]` into
/// microseconds since 1970-01-01T00:00:00Z; `None` if it is not one.
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    // The fixed part: "YYYY-MM-DDTHH:MM:SS" is 19 bytes.
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut micros = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        let kept = &frac[..n.min(KEPT_FRACTION_DIGITS)];
        micros = digits(kept)? * 10_i64.pow((KEPT_FRACTION_DIGITS - kept.len()) as u32);
        rest = &frac[n..];
    }
    let offset_secs = match rest {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let days = crate::civil::days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some(secs * US_PER_SEC + micros)
}

/// The value of a run of ASCII digits (at most 6 here, so no overflow).
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, &c| n * 10 + i64::from(c - b'0')))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_instants() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.000000Z"), Some(0));
        // The seed's first log row, also written by tidegate's csvlog test.
        let seed = 1_746_821_044_679_379;
        assert_eq!(parse_timestamp("2025-05-09T20:04:04.679379Z"), Some(seed));
        assert_eq!(parse_timestamp("2025-05-09T20:04:04.679379"), Some(seed));
        assert_eq!(parse_timestamp("2025-05-09 20:04:04.679379"), Some(seed));
        // Leap day 2000-02-29.
        assert_eq!(
            parse_timestamp("2000-02-29T00:00:00Z"),
            Some(951_782_400 * US_PER_SEC)
        );
    }

    #[test]
    fn fractions_of_any_precision() {
        let base = parse_timestamp("2025-05-09T20:04:04").unwrap();
        let at = |s: &str| parse_timestamp(s).map(|t| t - base);
        assert_eq!(at("2025-05-09T20:04:04.679"), Some(679_000));
        assert_eq!(at("2025-05-09T20:04:04.6"), Some(600_000));
        assert_eq!(at("2025-05-09T20:04:04.679379123Z"), Some(679_379));
        assert_eq!(at("2025-05-09T20:04:04.679Z"), Some(679_000));
    }

    #[test]
    fn offsets_are_applied() {
        let utc = parse_timestamp("2026-11-22T15:54:52Z").unwrap();
        assert_eq!(parse_timestamp("2026-11-22T16:54:52+01:00"), Some(utc));
        assert_eq!(parse_timestamp("2026-11-22T10:24:52-05:30"), Some(utc));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "2025-05-09",
            "2025-05-09T20:04",
            "2025-13-09T20:04:04",
            "2025-02-29T20:04:04",
            "2025-05-09T24:00:00",
            "2025-05-09T20:60:00",
            "2025-05-09T20:04:04.",
            "2025-05-09T20:04:04.5x",
            "2025-05-09T20:04:04 Z",
            "2025-05-09X20:04:04",
            "2025-05-09T20:04:04+0100",
            "20a5-05-09T20:04:04",
            "2025-05-09T20:04:04.679379ZZ",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad:?}");
        }
    }
}
