//! Request bodies, consumed and counted as they stream past, never buffered:
//! a `Content-Length` countdown or a small chunked decoder that keeps only
//! its position in the grammar.
//!
//! ```text
//! chunked = *( size [ ";" ext ] CRLF data CRLF ) "0" [ ";" ext ] CRLF *( trailer CRLF ) CRLF
//! ```

/// Hex digits in a chunk size: 16 fill a u64; more is an attack or a bug.
const MAX_SIZE_DIGITS: u32 = 16;

/// Where a body reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyReader {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `Content-Length` body with this many bytes left.
    Length(u64),
    /// Chunk size: the value so far and how many hex digits it had.
    Size { value: u64, digits: u32 },
    /// Chunk extension or whitespace after the size: skipped to CR.
    Ext { value: u64 },
    /// CR seen after the size line; LF must follow.
    SizeLf { value: u64 },
    /// Chunk data with this many bytes left.
    Data(u64),
    /// Chunk data done; CR must follow.
    DataCr,
    /// CR after the data; LF must follow.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// CR at the end of a trailer line; LF must follow.
    TrailerLf,
    /// CR of the final empty line; LF must follow.
    EndLf,
    /// The body is complete.
    Done,
}

/// The body's framing is broken: answer 400 and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadChunk;

impl BodyReader {
    /// A body of exactly `n` bytes.
    pub fn length(n: u64) -> Self {
        let state = if n == 0 {
            State::Done
        } else {
            State::Length(n)
        };
        BodyReader { state }
    }

    /// A chunked body.
    pub fn chunked() -> Self {
        BodyReader {
            state: State::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes body bytes from the front of `data`. Returns how many bytes
    /// of `data` belonged to the body and how many of those were payload
    /// (chunk data, not framing). Stops at the end of the body: the rest of
    /// `data` is the next request.
    pub fn consume(&mut self, data: &[u8]) -> Result<(usize, u64), BadChunk> {
        let mut pos = 0;
        let mut payload = 0u64;
        // Bounded: every turn consumes at least one byte or ends the loop.
        while pos < data.len() && self.state != State::Done {
            let rest = &data[pos..];
            match self.state {
                State::Length(left) | State::Data(left) => {
                    let n = take(left, rest.len());
                    pos += n;
                    payload += n as u64;
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), _) => State::Length(left),
                        (_, 0) => State::DataCr,
                        _ => State::Data(left),
                    };
                }
                _ => {
                    self.state = step(self.state, rest[0])?;
                    pos += 1;
                }
            }
        }
        Ok((pos, payload))
    }
}

/// How many of `avail` bytes a countdown of `left` takes.
fn take(left: u64, avail: usize) -> usize {
    usize::try_from(left).map_or(avail, |l| l.min(avail))
}

/// One framing byte of a chunked body.
fn step(state: State, b: u8) -> Result<State, BadChunk> {
    let next = match (state, b) {
        (State::Size { value, digits }, _) if b.is_ascii_hexdigit() => {
            if digits >= MAX_SIZE_DIGITS {
                return Err(BadChunk);
            }
            let d = u64::from(hex(b));
            State::Size {
                value: (value << 4) | d,
                digits: digits + 1,
            }
        }
        (State::Size { digits: 0, .. }, _) => return Err(BadChunk),
        (State::Size { value, .. }, b';' | b' ' | b'\t') => State::Ext { value },
        (State::Size { value, .. } | State::Ext { value }, b'\r') => State::SizeLf { value },
        (State::Ext { .. }, b'\n') => return Err(BadChunk),
        (State::Ext { value }, _) => State::Ext { value },
        (State::SizeLf { value: 0 }, b'\n') => State::TrailerStart,
        (State::SizeLf { value }, b'\n') => State::Data(value),
        (State::DataCr, b'\r') => State::DataLf,
        (State::DataLf, b'\n') => State::Size {
            value: 0,
            digits: 0,
        },
        (State::TrailerStart, b'\r') => State::EndLf,
        (State::TrailerStart | State::Trailer, b'\n') => return Err(BadChunk),
        (State::Trailer, b'\r') => State::TrailerLf,
        (State::TrailerStart | State::Trailer, _) => State::Trailer,
        (State::TrailerLf, b'\n') => State::TrailerStart,
        (State::EndLf, b'\n') => State::Done,
        _ => return Err(BadChunk),
    };
    Ok(next)
}

/// The value of an ASCII hex digit (callers check `is_ascii_hexdigit`).
fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `data` in pieces of `step` bytes; returns (consumed, payload).
    fn feed(mut r: BodyReader, data: &[u8], step: usize) -> Result<(usize, u64), BadChunk> {
        let (mut used, mut payload) = (0, 0);
        for piece in data.chunks(step) {
            let (n, p) = r.consume(piece)?;
            used += n;
            payload += p;
            if r.is_done() {
                break;
            }
        }
        assert!(r.is_done(), "body complete");
        Ok((used, payload))
    }

    #[test]
    fn content_length_stops_at_the_end() {
        let mut r = BodyReader::length(5);
        assert_eq!(r.consume(b"abc"), Ok((3, 3)));
        assert_eq!(r.consume(b"deGET"), Ok((2, 2)));
        assert!(r.is_done());
        assert!(BodyReader::length(0).is_done());
    }

    #[test]
    fn chunked_in_any_split() {
        let body: &[u8] = b"5;name=val\r\nhello\r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let framed = body.len() - 4;
        for step in 1..=body.len() {
            assert_eq!(
                feed(BodyReader::chunked(), body, step),
                Ok((framed, 15)),
                "step {step}"
            );
        }
    }

    #[test]
    fn minimal_chunked_body() {
        assert_eq!(feed(BodyReader::chunked(), b"0\r\n\r\n", 64), Ok((5, 0)));
    }

    #[test]
    fn broken_chunking_is_rejected() {
        let bad: [&[u8]; 7] = [
            b"\r\n",
            b"x\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b"0\r\nbad\n",
            b"3\r\nabc\r\n0\r\n\n",
        ];
        for b in bad {
            let mut r = BodyReader::chunked();
            assert_eq!(
                r.consume(b),
                Err(BadChunk),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }
}
