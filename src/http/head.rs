//! Size limits for a head that is still arriving, and start-line helpers.
//!
//! httparse only sees the bytes inside the limits (the window), so a limit
//! error means "the window is full and still incomplete", and an error inside
//! the window is reported the same however the input was split.

use super::{MAX_HEAD, MAX_REQUEST_LINE};

/// Which limit a head ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// No line ending within [`MAX_REQUEST_LINE`] bytes of the start line.
    Line,
    /// The head is longer than [`MAX_HEAD`].
    Head,
}

/// The prefix of a buffer the parser may look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    /// How many bytes of the buffer to parse.
    pub len: usize,
    /// Set when the buffer extends past the window: if the window alone is an
    /// incomplete head, this limit was exceeded.
    pub overflow: Option<Overflow>,
}

/// Where the start line begins: RFC 9112 §2.2 lets a recipient skip empty
/// lines before it (httparse does, and counts them in the head length).
fn start_line_offset(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let rest = buf.get(at..).unwrap_or_default();
        if rest.starts_with(b"\r\n") {
            at += 2;
        } else if rest.starts_with(b"\n") {
            at += 1;
        } else {
            return at;
        }
    }
}

/// The window of `buf` for a head whose start line is limited to
/// [`MAX_REQUEST_LINE`] and whole head to [`MAX_HEAD`].
pub(crate) fn window(buf: &[u8]) -> Window {
    let start = start_line_offset(buf);
    let line_limit = start.saturating_add(MAX_REQUEST_LINE);
    let line = buf
        .get(start..buf.len().min(line_limit))
        .unwrap_or_default();
    let (cap, limit) = if !line.contains(&b'\n') && line_limit < MAX_HEAD {
        (line_limit, Overflow::Line)
    } else {
        (MAX_HEAD, Overflow::Head)
    };
    Window {
        len: buf.len().min(cap),
        overflow: (buf.len() > cap).then_some(limit),
    }
}

/// The start line (possibly incomplete), without empty lines before it and
/// without its line ending.
pub(crate) fn start_line(buf: &[u8]) -> &[u8] {
    let rest = buf.get(start_line_offset(buf)..).unwrap_or_default();
    let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// After httparse rejected a request's version: is it a well-formed-looking
/// `HTTP/<digit>...` we just don't speak (505) rather than garbage (400)?
/// Only the first six bytes of the version decide, because httparse stops at
/// the first byte that differs from `HTTP/1.0`/`HTTP/1.1`, and the answer must
/// not depend on how much of the line had arrived.
pub(crate) fn is_unsupported_version(request_line: &[u8]) -> bool {
    let version = request_line
        .split(|&b| b == b' ')
        .nth(2)
        .unwrap_or_default();
    version.starts_with(b"HTTP/") && version.get(5).is_some_and(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_limits() {
        let long_line = vec![b'a'; MAX_REQUEST_LINE + 1];
        let w = window(&long_line);
        assert_eq!(w.len, MAX_REQUEST_LINE);
        assert_eq!(w.overflow, Some(Overflow::Line));
        let exact = vec![b'a'; MAX_REQUEST_LINE];
        assert_eq!(window(&exact).overflow, None);

        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        head.resize(MAX_HEAD + 1, b'a');
        let w = window(&head);
        assert_eq!((w.len, w.overflow), (MAX_HEAD, Some(Overflow::Head)));

        // Leading empty lines move the start line.
        let mut lines = b"\r\n\n".to_vec();
        lines.extend_from_slice(&long_line);
        let w = window(&lines);
        assert_eq!(
            (w.len, w.overflow),
            (MAX_REQUEST_LINE + 3, Some(Overflow::Line))
        );
    }

    #[test]
    fn start_line_and_version() {
        assert_eq!(
            start_line(b"\r\nGET / HTTP/2.0\r\nHost: a"),
            b"GET / HTTP/2.0"
        );
        assert_eq!(start_line(b"GET / HT"), b"GET / HT");
        for v in ["HTTP/2.0", "HTTP/2", "HTTP/1.2", "HTTP/0.9", "HTTP/3"] {
            let line = format!("GET / {v}");
            assert!(is_unsupported_version(line.as_bytes()), "{v}");
        }
        for v in ["HTTX/1.1", "http/1.1", "HTTP/", "HTTP/x", ""] {
            let line = format!("GET / {v}");
            assert!(!is_unsupported_version(line.as_bytes()), "{v}");
        }
    }
}
