//! The bytes a backend sends: its small text responses, the interim
//! `100 Continue`, and the garbage of `--fail garbage`.

use std::io::Write;
use std::time::Duration;

/// Interim response to `Expect: 100-continue`, so clients such as curl
/// send their body at once instead of after a 1 s wait.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What `--fail garbage` answers: no status line, yet it ends like a head,
/// so a proxy that waits for `\r\n\r\n` sees it complete and must reject it.
pub const GARBAGE: &[u8] = b"garbage\r\n\r\n";

/// One response to write.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The server's name (`X-Backend`).
    pub name: &'a str,
    pub status: u16,
    /// Reported in `X-Latency-Ms` and the body.
    pub latency: Duration,
    /// Request body payload bytes received (`X-Request-Body-Bytes`).
    pub body_bytes: u64,
    /// HEAD: headers only.
    pub head_only: bool,
    /// Last response on the connection: says `Connection: close`.
    pub close: bool,
    /// HTTP/1.0 keep-alive must be confirmed with `Connection: keep-alive`.
    pub http10: bool,
}

/// Appends the response to `out`.
pub fn write(out: &mut Vec<u8>, r: &Reply<'_>) {
    let ms = r.latency.as_millis();
    let body = match r.status {
        200 => format!("server {} latency {ms}ms\n", r.name),
        400 => format!("server {} bad request\n", r.name),
        code => format!("server {} injected {code} latency {ms}ms\n", r.name),
    };
    let connection = if r.close {
        "Connection: close\r\n"
    } else if r.http10 {
        "Connection: keep-alive\r\n"
    } else {
        ""
    };
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         X-Backend: {}\r\nX-Latency-Ms: {ms}\r\nX-Request-Body-Bytes: {}\r\n{connection}\r\n",
        r.status,
        reason(r.status),
        body.len(),
        r.name,
        r.body_bytes,
    );
    if !r.head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

/// Reason phrases for the statuses a backend sends; clients ignore them.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Injected",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> Reply<'static> {
        Reply {
            name: "A",
            status: 200,
            latency: Duration::from_millis(400),
            body_bytes: 7,
            head_only: false,
            close: false,
            http10: false,
        }
    }

    fn text(r: &Reply<'_>) -> String {
        let mut out = Vec::new();
        write(&mut out, r);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ok_response_names_server_and_latency() {
        let t = text(&reply());
        let body = "server A latency 400ms\n";
        assert!(t.starts_with("HTTP/1.1 200 OK\r\n"), "{t}");
        assert!(t.contains(&format!("Content-Length: {}\r\n", body.len())));
        assert!(t.contains("X-Backend: A\r\n"));
        assert!(t.contains("X-Latency-Ms: 400\r\n"));
        assert!(t.contains("X-Request-Body-Bytes: 7\r\n"));
        assert!(!t.contains("Connection"));
        assert!(t.ends_with(&format!("\r\n\r\n{body}")));
    }

    #[test]
    fn head_close_http10_and_injected() {
        let head = text(&Reply {
            head_only: true,
            close: true,
            ..reply()
        });
        assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
        let ten = text(&Reply {
            http10: true,
            ..reply()
        });
        assert!(ten.contains("Connection: keep-alive\r\n"));
        let injected = text(&Reply {
            status: 503,
            ..reply()
        });
        assert!(injected.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(injected.ends_with("server A injected 503 latency 400ms\n"));
    }
}
