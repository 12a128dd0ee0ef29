//! One admin connection: read a request head (bounded in size and time),
//! check the bearer token if one is set, route it, write one response,
//! close.
//!
//! Blocking std sockets on a short-lived thread per connection: the admin
//! endpoint sees a dashboard and a scraper, not load. Every read and write
//! is bounded by [`DEADLINE`] in total, so a slow or silent client costs
//! one thread for at most that long and never blocks anyone else.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::Endpoint;
use super::api::{self, Action};
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Dashboard,
    Metrics,
    Stats,
    Health,
    Ready,
    Backends,
    Backend(String, Action),
    Reload,
}

/// The methods a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Methods {
    /// GET and HEAD: reads.
    Read,
    /// POST: changes.
    Change,
}

impl Methods {
    fn allow(self) -> &'static str {
        match self {
            Methods::Read => "Allow: GET, HEAD\r\n",
            Methods::Change => "Allow: POST\r\n",
        }
    }
}

/// A response ready to write.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// HEAD: send the head only.
    pub head_only: bool,
    /// Extra header lines, each ending in CRLF (`Allow`, `WWW-Authenticate`).
    pub extra: &'static str,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: String) -> Reply {
        Reply {
            status,
            content_type,
            body,
            head_only: false,
            extra: "",
        }
    }

    pub fn text(status: u16, body: &str) -> Reply {
        Reply::new(status, "text/plain; charset=utf-8", format!("{body}\n"))
    }
}

/// Serves one connection to the end; errors only mean the client went away.
pub fn serve(mut stream: TcpStream, endpoint: &Endpoint) -> io::Result<()> {
    let deadline = Instant::now() + DEADLINE;
    stream.set_nodelay(true)?;
    let Some(head) = read_head(&mut stream, deadline)? else {
        return Ok(());
    };
    let reply = respond(&head, endpoint);
    write_reply(&mut stream, &reply, deadline)?;
    if has_body(&head) {
        linger(&mut stream, deadline);
    }
    Ok(())
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

/// Whether the request announced a body (none is needed; it is ignored).
fn has_body(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines().any(|l| {
        l.starts_with("transfer-encoding:")
            || l.strip_prefix("content-length:")
                .is_some_and(|v| v.trim() != "0")
    })
}

/// Most request body bytes read and thrown away before closing.
const MAX_DISCARD: usize = 64 * 1024;

/// After answering a request that had a body we did not read: stop
/// writing and discard what the client still sends (bounded), so closing
/// does not reset the connection before the client has read the answer.
fn linger(stream: &mut TcpStream, deadline: Instant) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut chunk = [0u8; 2048];
    let mut discarded = 0;
    while discarded < MAX_DISCARD {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// The route for `path` and the methods it takes; `None`: not found.
fn route(path: &str) -> Option<(Route, Methods)> {
    let read = |r| Some((r, Methods::Read));
    match path {
        "/" | "/index.html" => read(Route::Dashboard),
        "/metrics" => read(Route::Metrics),
        "/stats" => read(Route::Stats),
        "/healthz" => read(Route::Health),
        "/readyz" => read(Route::Ready),
        "/api/backends" => read(Route::Backends),
        "/api/reload" => Some((Route::Reload, Methods::Change)),
        _ => {
            let rest = path.strip_prefix("/api/backends/")?;
            let (key, action) = rest.rsplit_once('/')?;
            let action = Action::parse(action)?;
            (!key.is_empty() && !key.contains('/'))
                .then(|| (Route::Backend(key.to_string(), action), Methods::Change))
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
    // The probes stay open: Kubernetes' httpGet probes cannot take a header
    // from a Secret, and they reveal nothing beyond up/ready.
    let path = target.split(['?', '#']).next().unwrap_or_default();
    let probe = matches!(path, "/healthz" | "/readyz") && method == "GET";
    if let Some(token) = endpoint.token.as_deref().filter(|_| !probe) {
        let given = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("authorization"))
            .and_then(|h| bearer(h.value));
        if !given.is_some_and(|g| same_token(g, token.as_bytes())) {
            let mut r = api::error(401, "missing or wrong Authorization: Bearer token");
            r.extra = "WWW-Authenticate: Bearer realm=\"tidegate admin\"\r\n";
            return r;
        }
    }
    let Some((route, methods)) = route(path) else {
        return Reply::text(
            404,
            "not found: try /, /metrics, /stats, /healthz, /readyz or /api/backends",
        );
    };
    let head_only = match (methods, method) {
        (Methods::Read, "GET") | (Methods::Change, "POST") => false,
        (Methods::Read, "HEAD") => true,
        _ => {
            let mut r = if path.starts_with("/api/") {
                api::error(
                    405,
                    &format!("method not allowed: {}", methods.allow().trim()),
                )
            } else {
                Reply::text(405, "method not allowed: use GET")
            };
            r.extra = methods.allow();
            return r;
        }
    };
    let shared = &endpoint.sources.current();
    let mut reply = match route {
        Route::Dashboard => Reply::new(200, "text/html; charset=utf-8", DASHBOARD.to_string()),
        Route::Metrics => Reply::new(200, prom::CONTENT_TYPE, prom::render(&endpoint.view(false))),
        Route::Stats => Reply::new(200, json::CONTENT_TYPE, json::render(&endpoint.view(true))),
        Route::Health => Reply::text(200, "ok"),
        Route::Ready => api::ready(shared),
        Route::Backends => api::backends(shared),
        Route::Backend(key, action) => api::act(shared, &key, action),
        Route::Reload => api::reload(&endpoint.reload),
    };
    reply.head_only = head_only;
    reply
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value.get(7..)?;
    let start = token.iter().position(|b| *b != b' ')?;
    let end = token.iter().rposition(|b| *b != b' ')?;
    token.get(start..=end)
}

/// Compares a given token with the expected one in time that depends only
/// on their lengths, never on where they differ.
pub fn same_token(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    // Bounded by the expected token's length; every byte is looked at.
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The response head for `reply`.
pub fn head(reply: &Reply) -> String {
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        reply.body.len(),
        reply.extra,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_and_compared_whole() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"abc"), None);
        assert!(same_token(b"abc", b"abc"));
        assert!(!same_token(b"abd", b"abc"));
        assert!(!same_token(b"ab", b"abc"));
        assert!(!same_token(b"abcd", b"abc"));
        assert!(!same_token(b"", b"abc"));
    }

    #[test]
    fn routes_and_their_methods() {
        assert_eq!(route("/readyz"), Some((Route::Ready, Methods::Read)));
        assert_eq!(
            route("/api/backends/127.0.0.1:8081/drain"),
            Some((
                Route::Backend("127.0.0.1:8081".into(), Action::Drain),
                Methods::Change
            ))
        );
        assert_eq!(route("/api/backends//drain"), None);
        assert_eq!(route("/api/backends/a/b/drain"), None);
        assert_eq!(route("/api/backends/a/stop"), None);
        assert_eq!(route("/api/reload"), Some((Route::Reload, Methods::Change)));
    }
}
