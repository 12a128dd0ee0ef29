//! Finding the end of a head that arrives in pieces, without re-reading
//! what was already looked at.
//!
//! httparse parses from the start of the buffer every time, so calling it
//! after each read costs O(n²) for a head that trickles in one byte per
//! segment (16 KiB: ~130 M byte visits). [`head_end`] remembers how far it
//! got and only looks at new bytes (plus the two before them, where a split
//! terminator may start); [`parse_due`] says when calling the parser can
//! give an answer other than "need more bytes".

use super::head;
use super::{MAX_HEAD, MAX_REQUEST_LINE};

/// Bytes before the resume point that are looked at again: a terminator
/// `\n\r?\n` is at most 3 bytes, so up to 2 of them may have arrived in an
/// earlier read.
const OVERLAP: usize = 2;

/// Finds the end of a head: the first `\n\r?\n` (CRLF CRLF, or the bare-LF
/// forms httparse accepts: `\n\n`, `\r\n\n`, `\n\r\n`) that ends past
/// `*scanned`, and returns the index just past it.
///
/// `*scanned` is how many bytes earlier calls have seen: start with 0 for a
/// new head (and reset it when the buffer's head is consumed). The search
/// resumes [`OVERLAP`] bytes before it, so a terminator split across reads
/// is found, and a terminator that ended within the seen bytes is never
/// returned twice. Each byte is examined at most three times over all calls.
pub fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let seen = (*scanned).min(buf.len());
    let mut at = seen.saturating_sub(OVERLAP);
    // Bounded: every round moves `at` forward by at least one byte.
    while let Some(i) = buf.get(at..).and_then(memchr_lf) {
        let lf = at + i;
        let end = match (buf.get(lf + 1), buf.get(lf + 2)) {
            (Some(b'\n'), _) => Some(lf + 2),
            (Some(b'\r'), Some(b'\n')) => Some(lf + 3),
            _ => None,
        };
        match end {
            Some(end) if end > seen => {
                *scanned = end;
                return Some(end);
            }
            _ => at = lf + 1,
        }
    }
    *scanned = buf.len();
    None
}

fn memchr_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

/// Whether a request head arriving in `buf` is worth handing to the parser
/// now, i.e. whether [`super::parse_request`] could answer anything but
/// "need more bytes": the first bytes of a head (most heads arrive whole,
/// and garbage such as a TLS hello is answered at once), the start line
/// just ended, the head is complete ([`head_end`]), or a size limit is
/// exceeded (414/431 as soon as it is). An error inside the header fields
/// of a head that trickles in is answered once the head ends.
///
/// Costs O(new bytes) plus a look for the first line feed, which stops at
/// the start line's end (or at [`MAX_REQUEST_LINE`], past which the line
/// limit decides).
pub fn parse_due(buf: &[u8], scanned: &mut usize) -> bool {
    let before = (*scanned).min(buf.len());
    if head_end(buf, scanned).is_some() || before == 0 {
        return true;
    }
    let line = buf
        .get(..buf.len().min(MAX_REQUEST_LINE))
        .unwrap_or_default();
    if memchr_lf(line).is_some_and(|i| i >= before) {
        return true;
    }
    buf.len() > MAX_HEAD || (buf.len() > MAX_REQUEST_LINE && head::window(buf).overflow.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in two reads split at every point, and one byte at a
    /// time; the end must be the same as when it arrives whole.
    fn end_at_every_split(input: &[u8]) -> Option<usize> {
        let whole = head_end(input, &mut 0);
        for split in 0..=input.len() {
            let mut scanned = 0;
            let first = head_end(&input[..split], &mut scanned);
            let got = first.or_else(|| head_end(input, &mut scanned));
            assert_eq!(
                got,
                whole,
                "split at {split} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        let mut scanned = 0;
        let mut got = None;
        for n in 0..=input.len() {
            if let Some(end) = head_end(&input[..n], &mut scanned) {
                got = Some(end);
                break;
            }
        }
        assert_eq!(got, whole, "byte by byte");
        whole
    }

    #[test]
    fn terminators_are_found_at_every_split_point() {
        let cases: [(&[u8], Option<usize>); 9] = [
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Some(27)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", Some(27)),
            (b"GET / HTTP/1.1\nHost: a\n\n", Some(24)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", Some(26)),
            (b"GET / HTTP/1.1\nHost: a\n\r\n", Some(25)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", None),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", None),
            (b"GET / HTTP/1.1\r\nX: a\r\r\n", None),
            (b"", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                end_at_every_split(input),
                want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn a_found_end_is_not_found_again() {
        let buf = b"\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let mut scanned = 0;
        assert_eq!(head_end(buf, &mut scanned), Some(2));
        assert_eq!(head_end(buf, &mut scanned), Some(buf.len()));
        assert_eq!(head_end(buf, &mut scanned), None);
    }

    #[test]
    fn each_byte_is_scanned_a_bounded_number_of_times() {
        // One byte per call over a 16 KiB head: every call starts at most
        // OVERLAP bytes before the new one.
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        while head.len() < MAX_HEAD - 4 {
            head.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let mut scanned = 0;
        for n in 1..=head.len() {
            assert_eq!(head_end(&head[..n], &mut scanned), None);
            assert_eq!(scanned, n);
        }
        head.extend_from_slice(b"\r\n");
        assert_eq!(head_end(&head, &mut scanned), Some(head.len()));
    }

    #[test]
    fn parsing_is_due_at_the_end_the_start_line_and_the_limits() {
        let mut scanned = 0;
        assert!(parse_due(b"GET", &mut scanned));
        assert!(!parse_due(b"GET / HT", &mut scanned));
        assert!(parse_due(b"GET / HTTP/1.1\r\n", &mut scanned));
        assert!(!parse_due(b"GET / HTTP/1.1\r\nHost: a\r\n", &mut scanned));
        assert!(!parse_due(b"GET / HTTP/1.1\r\nHost: a\r\n\r", &mut scanned));
        assert!(parse_due(
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            &mut scanned
        ));

        // Garbage is handed over as soon as its first line ends.
        assert!(parse_due(b"\x16\x03\x01\x02\x00\r\n", &mut 0));

        // Over the line limit without a line end: due (414).
        let long = vec![b'a'; MAX_REQUEST_LINE + 1];
        let mut scanned = 1;
        assert!(!parse_due(&long[..MAX_REQUEST_LINE], &mut scanned));
        assert!(parse_due(&long, &mut scanned));

        // Over the head limit: due (431), however it was scanned before.
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.resize(MAX_HEAD, b'a');
        let mut scanned = 0;
        assert!(parse_due(&head[..20], &mut scanned));
        assert!(!parse_due(&head, &mut scanned));
        head.push(b'a');
        assert!(parse_due(&head, &mut scanned));
    }
}
