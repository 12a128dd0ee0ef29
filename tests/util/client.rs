//! A tiny raw HTTP/1.1 client for proxy tests: write any bytes, read one
//! response with a simple parser (status line, headers, Content-Length,
//! chunked with trailers, or close-delimited body). Every read is bounded
//! by the socket's read timeout.
#![allow(dead_code)]

use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Read timeout of a test client: far above any healthy response.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One response as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The head as received, up to and including the blank line.
    pub head: String,
    pub headers: Vec<(String, String)>,
    /// The body payload (de-chunked).
    pub body: Vec<u8>,
    /// The body bytes as received (chunk framing and trailers included).
    pub raw_body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
    /// Statuses of interim (1xx) responses read before this one.
    pub interim: Vec<u16>,
}

impl Response {
    /// The first field named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Connection` field lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A blocking client connection that keeps bytes read past a response.
pub struct Client<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::new(),
        })
    }

    /// Waits up to `within` for the peer to close. True on EOF or reset
    /// with nothing else left unread; false if the connection is still
    /// open (read timed out) or more bytes arrived (kept for later).
    pub fn closed_within(&mut self, within: Duration) -> io::Result<bool> {
        self.stream.set_read_timeout(Some(within))?;
        let result = self.fill_or_eof();
        self.stream.set_read_timeout(Some(READ_TIMEOUT))?;
        match result {
            Ok(false) => Ok(self.buf.is_empty()),
            Ok(true) => Ok(false),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(false),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(self.buf.is_empty()),
            Err(e) => Err(e),
        }
    }
}

impl<S: Read + Write> Client<S> {
    /// A client over an already connected stream (e.g. TLS).
    pub fn over(stream: S) -> Self {
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// `GET path` with a Host field; returns the final response.
    pub fn get(&mut self, path: &str) -> io::Result<Response> {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())?;
        self.response(false)
    }

    /// Sends `request` and reads the final response to it.
    pub fn exchange(&mut self, request: &[u8]) -> io::Result<Response> {
        self.send(request)?;
        self.response(request.starts_with(b"HEAD "))
    }

    /// The final response, skipping (and recording) interim 1xx ones.
    /// `head_request`: the response has no body whatever it says.
    pub fn response(&mut self, head_request: bool) -> io::Result<Response> {
        let mut interim = Vec::new();
        loop {
            let mut r = self.message(head_request)?;
            if (100..200).contains(&r.status) {
                interim.push(r.status);
                continue;
            }
            r.interim = interim;
            return Ok(r);
        }
    }

    /// Exactly one message, interim responses included.
    pub fn message(&mut self, head_request: bool) -> io::Result<Response> {
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let mut r = parse_head(self.buf.get(..head_len).unwrap_or_default())?;
        self.buf.drain(..head_len);
        let no_body = head_request || r.status < 200 || r.status == 204 || r.status == 304;
        let chunked = r
            .header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"));
        if no_body {
        } else if chunked {
            self.chunked_body(&mut r)?;
        } else if let Some(len) = r.header("content-length") {
            let len: usize = len.trim().parse().map_err(|_| bad("content-length"))?;
            while self.buf.len() < len {
                self.fill()?;
            }
            r.body = self.buf.drain(..len).collect();
            r.raw_body = r.body.clone();
        } else {
            // Close-delimited: everything until EOF.
            while self.fill_or_eof()? {}
            r.body = std::mem::take(&mut self.buf);
            r.raw_body = r.body.clone();
        }
        Ok(r)
    }

    fn chunked_body(&mut self, r: &mut Response) -> io::Result<()> {
        loop {
            let line = self.line()?;
            r.raw_body.extend_from_slice(&line);
            let text = String::from_utf8_lossy(&line);
            let size = text.trim_end().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size.trim(), 16).map_err(|_| bad("chunk size"))?;
            if size == 0 {
                break;
            }
            while self.buf.len() < size + 2 {
                self.fill()?;
            }
            r.body
                .extend_from_slice(self.buf.get(..size).unwrap_or_default());
            r.raw_body.extend(self.buf.drain(..size + 2));
        }
        loop {
            let line = self.line()?;
            r.raw_body.extend_from_slice(&line);
            if line == b"\r\n" {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&line);
            let (k, v) = text.split_once(':').ok_or_else(|| bad("trailer"))?;
            r.trailers.push((k.to_string(), v.trim().to_string()));
        }
    }

    /// One CRLF-terminated line, terminator included.
    fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                return Ok(self.buf.drain(..i + 2).collect());
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.fill_or_eof()? {
            Ok(())
        } else {
            Err(ErrorKind::UnexpectedEof.into())
        }
    }

    /// Reads more bytes; false at EOF.
    fn fill_or_eof(&mut self) -> io::Result<bool> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf
            .extend_from_slice(chunk.get(..n).unwrap_or_default());
        Ok(n > 0)
    }

    /// Bytes received but not consumed by a response yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf
    }

    /// Reads everything until EOF (bounded by the read timeout).
    pub fn read_to_end(&mut self) -> io::Result<Vec<u8>> {
        while self.fill_or_eof()? {}
        Ok(std::mem::take(&mut self.buf))
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, format!("bad {what} in response"))
}

fn parse_head(head: &[u8]) -> io::Result<Response> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut p = httparse::Response::new(&mut fields);
    match p.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        other => {
            let text = String::from_utf8_lossy(head);
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("unparsable response head ({other:?}): {text:?}"),
            ));
        }
    }
    Ok(Response {
        status: p.code.unwrap_or(0),
        minor: p.version.unwrap_or(1),
        head: String::from_utf8_lossy(head).into_owned(),
        headers: p
            .headers
            .iter()
            .map(|h| {
                let v = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_string(), v)
            })
            .collect(),
        ..Response::default()
    })
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
