//! Deterministic message contents.
//!
//! Every byte is a pure function of (connection id, message index, offset),
//! so nothing per connection has to be stored to verify an echo, and an echo
//! that carries another connection's or another message's bytes (a server
//! mixing up buffers) fails verification instead of passing by coincidence.

/// The splitmix64 finaliser: cheap, and every input bit affects every output
/// bit, so neighbouring ids and message indices give unrelated bytes.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes in one generated word; each `mix` call yields this many message bytes.
const WORD: usize = 8;

/// The contents of one message of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pattern {
    seed: u64,
}

impl Pattern {
    /// The pattern of message `msg` of connection `conn`.
    pub(crate) fn new(conn: usize, msg: u64) -> Self {
        Pattern {
            seed: mix(mix(conn as u64) ^ msg),
        }
    }

    fn word(self, index: usize) -> u64 {
        mix(self.seed ^ index as u64)
    }

    /// The message bytes at `offset..offset + len`, generating one word per
    /// eight bytes rather than one per byte.
    fn bytes(self, offset: usize, len: usize) -> impl Iterator<Item = u8> {
        let mut word = self.word(offset / WORD);
        (offset..offset + len).map(move |pos| {
            if pos % WORD == 0 {
                word = self.word(pos / WORD);
            }
            (word >> ((pos % WORD) * 8)) as u8
        })
    }

    /// Writes the message bytes at `offset..offset + out.len()` into `out`.
    pub(crate) fn fill(self, offset: usize, out: &mut [u8]) {
        let len = out.len();
        for (slot, byte) in out.iter_mut().zip(self.bytes(offset, len)) {
            *slot = byte;
        }
    }

    /// Position (within `got`) of the first byte that differs from the
    /// message at `offset`, if any.
    pub(crate) fn first_mismatch(self, offset: usize, got: &[u8]) -> Option<usize> {
        got.iter()
            .zip(self.bytes(offset, got.len()))
            .position(|(a, b)| *a != b)
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    #[test]
    fn fill_is_consistent_at_any_offset() {
        let p = Pattern::new(7, 3);
        let mut whole = [0u8; 100];
        p.fill(0, &mut whole);
        let mut part = [0u8; 37];
        p.fill(13, &mut part);
        assert_eq!(&whole[13..50], &part[..]);
        assert_eq!(p.first_mismatch(13, &part), None);
        part[5] ^= 1;
        assert_eq!(p.first_mismatch(13, &part), Some(5));
    }

    #[test]
    fn messages_differ_per_connection_and_index() {
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        Pattern::new(1, 0).fill(0, &mut a);
        Pattern::new(2, 0).fill(0, &mut b);
        assert_ne!(a, b);
        Pattern::new(1, 1).fill(0, &mut b);
        assert_ne!(a, b);
        assert!(Pattern::new(1, 1).first_mismatch(0, &a).is_some());
    }
}
