//! A scripted backend for proxy tests: a thread-per-connection server that
//! reads one request per turn (head plus a Content-Length or chunked body),
//! records the raw bytes it received, and answers with the next canned
//! response, or with whatever a handler closure decides.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

/// What a handler does with one received request.
pub enum Reply {
    /// Write these bytes, keep the connection for the next request.
    Send(Vec<u8>),
    /// Write these bytes, then close.
    SendClose(Vec<u8>),
    /// Close without answering.
    Close,
    /// Never answer (hold the connection until the test ends).
    Hang,
}

/// A request as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub conn: usize,
    pub head: String,
    pub body: Vec<u8>,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

pub struct Scripted {
    pub addr: SocketAddr,
    pub seen: mpsc::Receiver<Seen>,
    pub connections: Arc<AtomicUsize>,
    /// Connections open now (accepted and not yet closed by the peer).
    pub open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

impl Scripted {
    /// Starts a backend that answers every request through `handler`.
    pub fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> io::Result<Scripted> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), handler)
    }

    /// [`Scripted::start`] on `bind` (another loopback address or port).
    pub fn start_on(
        bind: SocketAddr,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> io::Result<Scripted> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let (tx, seen) = mpsc::channel();
        let connections = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let held = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let (connections, open, stop, held) = (
                Arc::clone(&connections),
                Arc::clone(&open),
                Arc::clone(&stop),
                Arc::clone(&held),
            );
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let id = connections.fetch_add(1, Ordering::Relaxed);
                            open.fetch_add(1, Ordering::Relaxed);
                            let (tx, handler, held, open) = (
                                tx.clone(),
                                Arc::clone(&handler),
                                Arc::clone(&held),
                                Arc::clone(&open),
                            );
                            thread::spawn(move || {
                                serve(s, id, &tx, &*handler, &held);
                                open.fetch_sub(1, Ordering::Relaxed);
                            });
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        Ok(Scripted {
            addr,
            seen,
            connections,
            open,
            stop,
            held,
        })
    }

    /// A backend on `bind` answering every request 200 with `X-Backend:
    /// name`, and the count of requests it answered.
    pub fn counting(
        bind: SocketAddr,
        name: &'static str,
    ) -> io::Result<(Scripted, Arc<std::sync::atomic::AtomicU64>)> {
        let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let n2 = Arc::clone(&n);
        let s = Scripted::start_on(bind, move |_| {
            n2.fetch_add(1, Ordering::Relaxed);
            let body =
                format!("HTTP/1.1 200 OK\r\nX-Backend: {name}\r\nContent-Length: 2\r\n\r\nok");
            Reply::Send(body.into_bytes())
        })?;
        Ok((s, n))
    }

    /// A backend that answers every request with `response`.
    pub fn always(response: &'static [u8]) -> io::Result<Scripted> {
        Scripted::start(move |_| Reply::Send(response.to_vec()))
    }

    /// The next request the backend received (waits up to 10 s).
    pub fn next(&self) -> Option<Seen> {
        self.seen.recv_timeout(Duration::from_secs(10)).ok()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut held) = self.held.lock() {
            held.clear();
        }
    }
}

fn serve(
    mut s: TcpStream,
    id: usize,
    tx: &mpsc::Sender<Seen>,
    handler: &Handler,
    held: &Mutex<Vec<TcpStream>>,
) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut buf = Vec::new();
    loop {
        let Some(seen) = read_request(&mut s, &mut buf, id) else {
            return;
        };
        let _ = tx.send(seen.clone());
        match handler(&seen) {
            Reply::Send(bytes) => {
                if s.write_all(&bytes).is_err() {
                    return;
                }
            }
            Reply::SendClose(bytes) => {
                let _ = s.write_all(&bytes);
                return;
            }
            Reply::Close => return,
            Reply::Hang => {
                if let (Ok(mut h), Ok(c)) = (held.lock(), s.try_clone()) {
                    h.push(c);
                }
                return;
            }
        }
    }
}

/// Reads one request (head and body) from `s`, keeping leftovers in `buf`.
fn read_request(s: &mut TcpStream, buf: &mut Vec<u8>, conn: usize) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(s, buf)?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if let Some(len) = header(&lower, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        while buf.len() < len {
            fill(s, buf)?;
        }
        body = buf.drain(..len).collect();
    } else if header(&lower, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        // Keep the raw chunked bytes up to and including the final CRLFCRLF.
        loop {
            if let Some(i) = find(buf, b"0\r\n\r\n") {
                body = buf.drain(..i + 5).collect();
                break;
            }
            fill(s, buf)?;
        }
    }
    Some(Seen { conn, head, body })
}

fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match s.read(&mut chunk) {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The value of `name` in a lower-cased head.
pub fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim())
    })
}
