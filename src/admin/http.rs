//! One admin connection: read a request head (bounded in size and time),
//! route it, write one response, close.
//!
//! Blocking std sockets on a short-lived thread per connection: the admin
//! endpoint sees a dashboard and a scraper, not load. Every read and write
//! is bounded by [`DEADLINE`] in total, so a slow or silent client costs
//! one thread for at most that long and never blocks anyone else.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Endpoint;
use super::{json, prom};

/// Longest a connection may take from accept to the last byte written.
/// Generous for loopback and a scraper, short enough that abandoned
/// connections free their thread quickly.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Largest request head accepted: admin requests are a line and a few
/// browser fields; anything bigger is refused with 431.
const MAX_HEAD: usize = 16 * 1024;

/// Most header fields parsed (browsers send about 20).
const MAX_FIELDS: usize = 64;

/// The dashboard page, compiled into the binary so it works offline.
const DASHBOARD: &str = include_str!("dashboard.html");

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Dashboard,
    Metrics,
    Stats,
    Health,
}

/// A response ready to write.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// HEAD: send the head only.
    pub head_only: bool,
}

impl Reply {
    fn text(status: u16, body: &str) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{body}\n"),
            head_only: false,
        }
    }
}

/// Serves one connection to the end; errors only mean the client went away.
pub fn serve(mut stream: TcpStream, endpoint: &Endpoint) -> io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    stream.set_nodelay(true)?;
    let reply = match read_head(&mut stream, deadline)? {
        Some(head) => respond(&head, endpoint),
        None => return Ok(()),
    };
    write_reply(&mut stream, &reply, deadline)
}

/// Reads until the blank line ending the head. `Ok(None)`: the client
/// closed first (nothing to answer); a head that is too large yields a
/// marker the router answers with 431.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(Some(Vec::new()));
        }
    }
}

/// Parses `head` and answers it.
pub fn respond(head: &[u8], endpoint: &Endpoint) -> Reply {
    if head.is_empty() {
        return Reply::text(431, "request head too large");
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let (Ok(httparse::Status::Complete(_)), Some(method), Some(target)) =
        (req.parse(head), req.method, req.path)
    else {
        return Reply::text(400, "bad request");
    };
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => return Reply::text(405, "method not allowed: use GET"),
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let route = match path {
        "/" | "/index.html" => Route::Dashboard,
        "/metrics" => Route::Metrics,
        "/stats" => Route::Stats,
        "/healthz" => Route::Health,
        _ => return Reply::text(404, "not found: try /, /metrics, /stats or /healthz"),
    };
    let mut reply = match route {
        Route::Dashboard => Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: DASHBOARD.to_string(),
            head_only: false,
        },
        Route::Metrics => Reply {
            status: 200,
            content_type: prom::CONTENT_TYPE,
            body: prom::render(&endpoint.view(false)),
            head_only: false,
        },
        Route::Stats => Reply {
            status: 200,
            content_type: json::CONTENT_TYPE,
            body: json::render(&endpoint.view(true)),
            head_only: false,
        },
        Route::Health => Reply::text(200, "ok"),
    };
    reply.head_only = head_only;
    reply
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The response head for `reply`.
pub fn head(reply: &Reply) -> String {
    let allow = if reply.status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len()
    )
}

fn write_reply(stream: &mut TcpStream, reply: &Reply, deadline: Instant) -> io::Result<()> {
    let head = head(reply);
    let body = if reply.head_only { "" } else { &reply.body };
    for part in [head.as_bytes(), body.as_bytes()] {
        let mut rest = part;
        while !rest.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            stream.set_write_timeout(Some(left))?;
            let n = stream.write(rest)?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            rest = rest.get(n..).unwrap_or_default();
        }
    }
    stream.flush()
}

/// A quick 503 for a connection over the limit, written without reading
/// (a few bytes into an empty socket buffer never block for long).
pub fn busy(mut stream: TcpStream) {
    let reply = Reply::text(503, "admin endpoint busy");
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = stream.write_all(format!("{}{}", head(&reply), reply.body).as_bytes());
}
