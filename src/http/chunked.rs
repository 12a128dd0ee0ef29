//! A byte-at-a-time validator for the chunked transfer coding (RFC 9112 §7.1).
//!
//! It never copies or decodes: it only says how many bytes belong to the body
//! and whether the body is complete. Because every decision is made one byte at
//! a time (data is skipped in bulk but only by count), any split of the input
//! gives the same result.
//!
//! Strictness, chosen against request smuggling (a lenient parser here and a
//! strict one at the next hop, or vice versa, must never disagree on where the
//! body ends): every line ends in CRLF (a bare LF is an error), whitespace is
//! only allowed before a `;` extension, and trailer fields follow the same
//! rules as head fields (token name, no space before the colon, no obs-fold,
//! no control bytes in the value).

use super::fields::{is_field_byte, is_tchar};
use super::{MAX_CHUNK_LINE, MAX_TRAILERS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size; `digits` is false before the first.
    Size {
        digits: bool,
    },
    /// Whitespace after the size: only more whitespace or `;` may follow.
    SizeSpace,
    /// Inside chunk extensions, until CR.
    Extension,
    /// Expecting the LF that ends the size line.
    SizeLf,
    /// Inside chunk data with this many bytes left.
    Data {
        left: u64,
    },
    /// Expecting the CRLF after chunk data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    /// Expecting the LF of the final empty line.
    EndLf,
    Done,
}

/// The chunked-body state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chunked {
    state: State,
    /// The size being read from the current size line.
    size: u64,
    /// Bytes of the current size line so far.
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl Chunked {
    pub(crate) fn new() -> Chunked {
        Chunked {
            state: State::Size { digits: false },
            size: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consume body bytes from the front of `input`: returns how many belong
    /// to the body (all of them unless the body ended inside `input`) and how
    /// many of those were chunk data (the payload, without the framing).
    pub(crate) fn advance(&mut self, input: &[u8]) -> Result<(usize, u64), &'static str> {
        let mut at = 0;
        let mut data = 0u64;
        // Bounded: every turn consumes at least one byte or breaks.
        while at < input.len() {
            if let State::Data { left } = self.state {
                // Skip data in bulk; only its length matters.
                let avail = input.len() - at;
                let take = usize::try_from(left).map_or(avail, |l| l.min(avail));
                at += take;
                data += take as u64;
                // take <= left, so this cannot underflow.
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data { left }
                };
                continue;
            }
            let Some(&b) = input.get(at) else { break };
            at += 1;
            self.step(b)?;
            if self.state == State::Done {
                break;
            }
        }
        Ok((at, data))
    }

    /// One byte of framing (anything but chunk data).
    fn step(&mut self, b: u8) -> Result<(), &'static str> {
        self.state = match self.state {
            State::Size { .. } | State::SizeSpace | State::Extension | State::SizeLf => {
                self.line_len += 1;
                if self.line_len > MAX_CHUNK_LINE {
                    return Err("chunk size line too long");
                }
                self.size_line(b)?
            }
            State::Data { .. } => return Err("internal: data is not stepped"),
            State::DataCr => expect(b, b'\r', State::DataLf, "missing CRLF after chunk data")?,
            State::DataLf => {
                self.line_len = 0;
                self.size = 0;
                let next = State::Size { digits: false };
                expect(b, b'\n', next, "missing CRLF after chunk data")?
            }
            State::Done => return Err("internal: byte after the body"),
            _ => {
                self.trailer_len += 1;
                if self.trailer_len > MAX_TRAILERS {
                    return Err("trailer section too large");
                }
                self.trailer(b)?
            }
        };
        Ok(())
    }

    fn size_line(&mut self, b: u8) -> Result<State, &'static str> {
        Ok(match (self.state, b) {
            (State::Size { .. }, _) if b.is_ascii_hexdigit() => {
                let digit = char::from(b).to_digit(16).map_or(0, u64::from);
                self.size = self
                    .size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or("chunk size overflows")?;
                State::Size { digits: true }
            }
            (State::Size { digits: false }, _) => return Err("chunk size is not hex"),
            (State::Size { .. } | State::SizeSpace, b' ' | b'\t') => State::SizeSpace,
            (State::Size { .. } | State::SizeSpace, b';') => State::Extension,
            (State::Size { .. } | State::Extension, b'\r') => State::SizeLf,
            (State::Size { .. } | State::SizeSpace, _) => return Err("invalid chunk size"),
            (State::Extension, _) if is_field_byte(b) => State::Extension,
            (State::Extension, _) => return Err("invalid chunk extension"),
            (State::SizeLf, b'\n') if self.size == 0 => State::TrailerStart,
            (State::SizeLf, b'\n') => State::Data { left: self.size },
            _ => return Err("chunk size line not ended by CRLF"),
        })
    }

    fn trailer(&mut self, b: u8) -> Result<State, &'static str> {
        Ok(match (self.state, b) {
            (State::TrailerStart, b'\r') => State::EndLf,
            (State::TrailerStart | State::TrailerName, _) if is_tchar(b) => State::TrailerName,
            (State::TrailerStart, _) => return Err("invalid trailer field name"),
            (State::TrailerName, b':') => State::TrailerValue,
            (State::TrailerName, _) => return Err("invalid trailer field name"),
            (State::TrailerValue, b'\r') => State::TrailerLf,
            (State::TrailerValue, _) if is_field_byte(b) => State::TrailerValue,
            (State::TrailerValue, _) => return Err("invalid trailer field value"),
            (State::TrailerLf, b'\n') => State::TrailerStart,
            (State::EndLf, b'\n') => State::Done,
            _ => return Err("trailer line not ended by CRLF"),
        })
    }
}

fn expect(b: u8, want: u8, next: State, why: &'static str) -> Result<State, &'static str> {
    if b == want { Ok(next) } else { Err(why) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `input` in one piece: (bytes used, done) or the error.
    fn run(input: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut c = Chunked::new();
        let (used, _) = c.advance(input)?;
        Ok((used, c.is_done()))
    }

    #[test]
    fn valid_bodies() {
        let cases: [&[u8]; 8] = [
            b"0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\r\n",
            b"5;ext=1\r\nhello\r\n0\r\n\r\n",
            b"5 ; ext=\"q;\" \r\nhello\r\n0;last\r\n\r\n",
            b"A\r\n0123456789\r\n0\r\n\r\n",
            b"a\r\n0123456789\r\n00\r\n\r\n",
            b"1\r\nx\r\n0\r\nExpires: never\r\nX-Sum:\r\nX-T:  a\tb \r\n\r\n",
            b"0000000000000000000000001\r\nx\r\n0\r\n\r\n",
        ];
        for body in cases {
            assert_eq!(
                run(body),
                Ok((body.len(), true)),
                "{:?}",
                String::from_utf8_lossy(body)
            );
            // Bytes after the body are not consumed.
            let mut more = body.to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n");
            assert_eq!(run(&more), Ok((body.len(), true)));
        }
    }

    #[test]
    fn incomplete_bodies() {
        let cases: [&[u8]; 6] = [
            b"",
            b"5",
            b"5\r\nhel",
            b"5\r\nhello\r\n",
            b"0\r\n",
            b"0\r\nX: y\r\n",
        ];
        for body in cases {
            assert_eq!(run(body), Ok((body.len(), false)));
        }
    }

    #[test]
    fn invalid_bodies() {
        let cases: [&[u8]; 22] = [
            b"\r\n",
            b"x\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x5\r\n",
            b"5\nhello\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\r\r",
            b"1 2\r\n",
            b"1 \r\n",
            b" 1\r\n",
            b"10000000000000000\r\n",
            b"FFFFFFFFFFFFFFFFF\r\n",
            b"1;a\0b\r\n",
            b"1;a\nb\r\n",
            b"0\r\n\n",
            b"0\r\n X: y\r\n\r\n",
            b"0\r\nX : y\r\n\r\n",
            b"0\r\n: y\r\n\r\n",
            b"0\r\nX: a\0b\r\n\r\n",
            b"0\r\nX: y\n\r\n",
        ];
        for body in cases {
            assert!(run(body).is_err(), "{:?}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn data_bytes_are_counted_at_every_split() {
        let body: &[u8] = b"5;x=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\nNEXT";
        let framed = body.len() - 4;
        for step in 1..=body.len() {
            let mut c = Chunked::new();
            let (mut used, mut data) = (0, 0);
            for piece in body.chunks(step) {
                let (u, d) = c.advance(piece).unwrap_or_else(|e| panic!("{step}: {e}"));
                used += u;
                data += d;
                if c.is_done() {
                    break;
                }
            }
            assert_eq!((used, data, c.is_done()), (framed, 15, true), "step {step}");
        }
    }

    #[test]
    fn limits() {
        let mut line = vec![b'0'; MAX_CHUNK_LINE - 2];
        line.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&line), Ok((line.len(), true)));
        let mut long = vec![b'0'; MAX_CHUNK_LINE - 1];
        long.extend_from_slice(b"\r\n");
        assert!(run(&long).is_err());

        let mut trailers = b"0\r\n".to_vec();
        let mut long_trailer = trailers.clone();
        trailers.extend_from_slice(b"X: ");
        trailers.resize(3 + MAX_TRAILERS - 4, b'a');
        trailers.extend_from_slice(b"\r\n\r\n");
        assert_eq!(run(&trailers), Ok((trailers.len(), true)));
        long_trailer.extend_from_slice(b"X: ");
        long_trailer.resize(3 + MAX_TRAILERS + 1, b'a');
        assert!(run(&long_trailer).is_err());
    }

    #[test]
    fn huge_chunk_is_counted_not_buffered() {
        let mut c = Chunked::new();
        assert_eq!(c.advance(b"FFFFFFFFFFFFFFFF\r\n"), Ok((18, 0)));
        assert_eq!(c.advance(&[0; 4096]), Ok((4096, 4096)));
        assert_eq!(
            c.state,
            State::Data {
                left: u64::MAX - 4096
            }
        );
    }
}
