//! Where a message body ends. The proxy forwards body bytes verbatim (chunked
//! stays chunked, trailers included); [`BodyFramer`] only counts and validates.

use super::HttpError;
use super::chunked::Chunked;

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding, up to and including the last chunk, trailers
    /// and the final CRLF.
    Chunked,
    /// Everything until the sender closes the connection (responses only).
    CloseDelimited,
}

/// Who sends the body, which decides how a framing error is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A request body: errors are [`HttpError::BadRequest`] (400).
    Client,
    /// A response body: errors are [`HttpError::BadResponse`] (502).
    Backend,
}

/// The result of [`BodyFramer::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advance {
    /// How many bytes from the front of the input belong to the body: forward
    /// them as they are. Equal to the input length unless `done`.
    pub used: usize,
    /// How many of the `used` bytes are payload: all of them for a
    /// Content-Length or close-delimited body, the chunk data (no sizes,
    /// extensions, CRLFs or trailers) for a chunked one.
    pub payload: u64,
    /// The body is complete; the bytes after `used` are the next message.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    CloseDelimited,
    Done,
    /// A framing error happened; it is reported again on every call.
    Failed(&'static str),
}

/// Finds the end of one body, fed the bytes as they arrive. Any split of the
/// input gives the same result as feeding it in one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyFramer {
    framing: Framing,
    peer: Peer,
}

impl BodyFramer {
    /// A framer for a body of `kind` sent by `peer`.
    pub fn new(kind: BodyKind, peer: Peer) -> BodyFramer {
        let framing = match kind {
            BodyKind::None | BodyKind::Length(0) => Framing::Done,
            BodyKind::Length(n) => Framing::Length(n),
            BodyKind::Chunked => Framing::Chunked(Chunked::new()),
            BodyKind::CloseDelimited => Framing::CloseDelimited,
        };
        BodyFramer { framing, peer }
    }

    /// Account for `input`, the next bytes from the peer. After an error the
    /// body cannot be trusted: stop forwarding and close both connections.
    pub fn advance(&mut self, input: &[u8]) -> Result<Advance, HttpError> {
        let peer = self.peer;
        let (used, payload) = match &mut self.framing {
            Framing::Done => (0, 0),
            Framing::Failed(why) => return Err(peer.error(why)),
            Framing::CloseDelimited => (input.len(), input.len() as u64),
            Framing::Length(left) => {
                let used = usize::try_from(*left).map_or(input.len(), |l| l.min(input.len()));
                // used <= left, so this cannot underflow.
                *left -= used as u64;
                if *left == 0 {
                    self.framing = Framing::Done;
                }
                (used, used as u64)
            }
            Framing::Chunked(chunked) => match chunked.advance(input) {
                Ok(progress) => {
                    if chunked.is_done() {
                        self.framing = Framing::Done;
                    }
                    progress
                }
                Err(why) => {
                    self.framing = Framing::Failed(why);
                    return Err(peer.error(why));
                }
            },
        };
        debug_assert!(used <= input.len() && payload <= used as u64);
        Ok(Advance {
            used,
            payload,
            done: self.is_done(),
        })
    }

    /// The whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The peer closed its side: fine if the body was complete or is
    /// close-delimited (then EOF is its end), an error if it was cut short.
    pub fn at_eof(&self) -> Result<(), HttpError> {
        match self.framing {
            Framing::Done | Framing::CloseDelimited => Ok(()),
            Framing::Failed(why) => Err(self.peer.error(why)),
            Framing::Length(_) | Framing::Chunked(_) => Err(self.peer.error("body cut short")),
        }
    }
}

impl Peer {
    fn error(self, why: &'static str) -> HttpError {
        match self {
            Peer::Client => HttpError::BadRequest(why),
            Peer::Backend => HttpError::BadResponse(why),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Total bytes used and whether the body is complete.
    type Outcome = Result<(usize, bool), HttpError>;

    /// Feed `pieces` in order, stopping at the end of the body.
    fn feed(kind: BodyKind, pieces: &[&[u8]]) -> Outcome {
        let mut framer = BodyFramer::new(kind, Peer::Backend);
        let mut total = 0;
        for piece in pieces {
            let adv = framer.advance(piece)?;
            total += adv.used;
            if adv.done {
                return Ok((total, true));
            }
        }
        Ok((total, framer.is_done()))
    }

    #[test]
    fn framing_kinds() {
        let cases: [(BodyKind, &[&[u8]], Outcome); 9] = [
            (BodyKind::None, &[b"GET"], Ok((0, true))),
            (BodyKind::Length(0), &[b"GET"], Ok((0, true))),
            (BodyKind::Length(5), &[b"hel", b"lo", b"GET"], Ok((5, true))),
            (BodyKind::Length(5), &[b"helloGET"], Ok((5, true))),
            (BodyKind::Length(5), &[b"hell"], Ok((4, false))),
            (BodyKind::CloseDelimited, &[b"abc", b"def"], Ok((6, false))),
            (
                BodyKind::Chunked,
                &[b"1\r\na\r\n", b"0\r\n\r\nX"],
                Ok((11, true)),
            ),
            (
                BodyKind::Chunked,
                &[b"1\r\na\r\n", b"0\r\n"],
                Ok((9, false)),
            ),
            (
                BodyKind::Chunked,
                &[b"z"],
                Err(HttpError::BadResponse("chunk size is not hex")),
            ),
        ];
        for (kind, pieces, want) in cases {
            assert_eq!(feed(kind, pieces), want, "{kind:?} {pieces:?}");
        }
    }

    #[test]
    fn errors_follow_the_peer_and_stick() {
        let mut framer = BodyFramer::new(BodyKind::Chunked, Peer::Client);
        let err = HttpError::BadRequest("chunk size is not hex");
        assert_eq!(framer.advance(b"x"), Err(err));
        assert_eq!(framer.advance(b"0\r\n\r\n"), Err(err));
        assert_eq!(framer.at_eof(), Err(err));
    }

    #[test]
    fn eof() {
        let cases = [
            (BodyKind::None, true),
            (BodyKind::CloseDelimited, true),
            (BodyKind::Length(1), false),
            (BodyKind::Chunked, false),
        ];
        for (kind, ok) in cases {
            let framer = BodyFramer::new(kind, Peer::Backend);
            assert_eq!(framer.at_eof().is_ok(), ok, "{kind:?}");
        }
        let mut done = BodyFramer::new(BodyKind::Length(2), Peer::Client);
        assert_eq!(
            done.advance(b"ab"),
            Ok(Advance {
                used: 2,
                payload: 2,
                done: true
            })
        );
        assert_eq!(
            done.advance(b"cd"),
            Ok(Advance {
                used: 0,
                payload: 0,
                done: true
            })
        );
        assert_eq!(done.at_eof(), Ok(()));
    }

    #[test]
    fn payload_excludes_chunked_framing() {
        let cases: [(BodyKind, &[u8], Advance); 4] = [
            (BodyKind::Length(3), b"abcd", adv(3, 3, true)),
            (BodyKind::CloseDelimited, b"abcd", adv(4, 4, false)),
            (
                BodyKind::Chunked,
                b"3;e\r\nabc\r\n0\r\nT: x\r\n\r\nGET",
                adv(21, 3, true),
            ),
            (BodyKind::Chunked, b"3\r\nab", adv(5, 2, false)),
        ];
        for (kind, input, want) in cases {
            let mut framer = BodyFramer::new(kind, Peer::Client);
            assert_eq!(framer.advance(input), Ok(want), "{kind:?}");
        }
    }

    fn adv(used: usize, payload: u64, done: bool) -> Advance {
        Advance {
            used,
            payload,
            done,
        }
    }

    #[test]
    fn every_split_of_a_chunked_body_gives_the_same_result() {
        let bodies: [&[u8]; 4] = [
            b"5\r\nhello\r\n0\r\n\r\nNEXT",
            b"3;a=b\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-Y: z\r\n\r\n",
            b"5\r\nhello\r\n0\r\nX: a\nb",
            b"2\r\nab\r\n",
        ];
        for body in bodies {
            let whole = feed(BodyKind::Chunked, &[body]);
            for i in 0..=body.len() {
                for j in i..=body.len() {
                    let (a, rest) = body.split_at(i);
                    let (b, c) = rest.split_at(j - i);
                    assert_eq!(feed(BodyKind::Chunked, &[a, b, c]), whole, "{i} {j}");
                }
            }
        }
    }
}
