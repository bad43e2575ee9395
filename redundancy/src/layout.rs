//! Where the bytes of an `ec` object live in its blocks, and the checksummed frame format of a
//! stored block.
//!
//! An object of `size` bytes is cut into stripes of `k * chunk_size` bytes (the last one padded
//! with zeros). Stripe `s` gives data block `j < k` the piece `object[s*k*cs + j*cs ..][..cs]` and
//! parity block `k <= i < n` the Reed–Solomon recovery piece `i - k` of that stripe. A stored
//! block is the sequence of its frames, one per stripe:
//!
//! ```text
//! frame = piece (chunk_size bytes) ‖ crc32c (4 bytes, little endian)
//! crc32c = crc32c_append(crc32c("jcs-ec" ‖ block index u8 ‖ stripe index u64 LE), piece)
//! ```
//!
//! The checksum is seeded with the block and stripe index so that a piece read from the wrong
//! block or offset fails verification like a corrupt one. Every stored block therefore has
//! `stripes * (chunk_size + 4)` bytes, and a ranged read of stripes `a..b` reads the stored bytes
//! `a*(cs+4) .. b*(cs+4)` of the blocks it needs.

use std::ops::Range;

use crate::policy::Policy;

/// Bytes of the checksum trailer of every frame.
pub const CHECKSUM_LEN: usize = 4;

/// Stripe geometry of an `ec` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcLayout {
    pub k: usize,
    pub n: usize,
    pub chunk_size: usize,
}

impl EcLayout {
    /// The layout of an `ec` policy; `None` for `none` and `rep`. The policy must be valid.
    pub fn of(policy: &Policy) -> Option<EcLayout> {
        match *policy {
            Policy::Ec { k, n, chunk_size } => Some(EcLayout {
                k: k as usize,
                n: n as usize,
                chunk_size: chunk_size as usize,
            }),
            Policy::None | Policy::Rep { .. } => None,
        }
    }

    /// Object bytes per stripe (`k * chunk_size`).
    pub fn stripe_len(&self) -> u64 {
        (self.k * self.chunk_size) as u64
    }

    /// Stored bytes per stripe in each block (`chunk_size + 4`).
    pub fn frame_len(&self) -> u64 {
        (self.chunk_size + CHECKSUM_LEN) as u64
    }

    /// Number of stripes of an object of `size` bytes (0 for an empty object).
    pub fn stripe_count(&self, size: u64) -> u64 {
        size.div_ceil(self.stripe_len())
    }

    /// Stored size of every block of an object of `size` bytes.
    pub fn block_len(&self, size: u64) -> u64 {
        self.stripe_count(size) * self.frame_len()
    }

    /// Stored byte range of stripes `stripes` in any block.
    pub fn frames(&self, stripes: Range<u64>) -> Range<u64> {
        stripes.start * self.frame_len()..stripes.end * self.frame_len()
    }

    /// The data columns (`j0..=j1`) of stripe `stripe` that hold bytes of `[start, end)`;
    /// `None` when the stripe and the range do not meet. `start < end` is assumed.
    pub fn columns(&self, stripe: u64, start: u64, end: u64) -> Option<(usize, usize)> {
        let s0 = stripe * self.stripe_len();
        let s1 = s0 + self.stripe_len();
        let (a, b) = (start.max(s0), end.min(s1));
        if a >= b {
            return None;
        }
        let cs = self.chunk_size as u64;
        Some((((a - s0) / cs) as usize, ((b - 1 - s0) / cs) as usize))
    }

    /// For each of the `n` blocks, the stripes a healthy read of object bytes `[start, end)`
    /// needs from it: data blocks only, and only the stripes where their column meets the range.
    pub fn needed_stripes(&self, start: u64, end: u64) -> Vec<Option<Range<u64>>> {
        let mut out = vec![None; self.n];
        if start >= end {
            return out;
        }
        let first = start / self.stripe_len();
        let last = (end - 1) / self.stripe_len();
        for (j, slot) in out.iter_mut().enumerate().take(self.k) {
            let from = (first..=last).find(|&s| self.meets(s, j, start, end));
            let to = (first..=last).rev().find(|&s| self.meets(s, j, start, end));
            if let (Some(a), Some(b)) = (from, to) {
                *slot = Some(a..b + 1);
            }
        }
        out
    }

    /// For each of the `n` blocks, the stored byte range a healthy read of object bytes
    /// `[start, end)` fetches from it (`None`: the block is not touched).
    pub fn block_ranges(&self, start: u64, end: u64) -> Vec<Option<Range<u64>>> {
        self.needed_stripes(start, end)
            .into_iter()
            .map(|r| r.map(|r| self.frames(r)))
            .collect()
    }

    fn meets(&self, stripe: u64, column: usize, start: u64, end: u64) -> bool {
        self.columns(stripe, start, end)
            .is_some_and(|(a, b)| (a..=b).contains(&column))
    }
}

/// The checksum stored after the piece of `block` in stripe `stripe`.
pub fn piece_checksum(block: usize, stripe: u64, piece: &[u8]) -> u32 {
    let mut seed = [0u8; 15];
    seed[..6].copy_from_slice(b"jcs-ec");
    // n <= 255, so the block index fits a byte.
    seed[6] = block as u8;
    seed[7..].copy_from_slice(&stripe.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), piece)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(k: usize, n: usize, cs: usize) -> EcLayout {
        EcLayout {
            k,
            n,
            chunk_size: cs,
        }
    }

    #[test]
    fn sizes() {
        let l = layout(4, 6, 64);
        assert_eq!(l.stripe_count(0), 0);
        assert_eq!(l.stripe_count(1), 1);
        assert_eq!(l.stripe_count(256), 1);
        assert_eq!(l.stripe_count(257), 2);
        assert_eq!(l.block_len(257), 2 * 68);
        assert_eq!(l.frames(1..3), 68..204);
    }

    #[test]
    fn needed_stripes_match_a_brute_force_walk() {
        let l = layout(3, 5, 64);
        let size = 3 * 64 * 4 + 17;
        for start in (0..size).step_by(13) {
            for end in (start + 1..=size).step_by(29) {
                let got = l.needed_stripes(start, end);
                let mut want: Vec<Option<Range<u64>>> = vec![None; 5];
                for b in start..end {
                    let s = b / l.stripe_len();
                    let j = ((b % l.stripe_len()) / 64) as usize;
                    let w = want[j].get_or_insert(s..s + 1);
                    w.start = w.start.min(s);
                    w.end = w.end.max(s + 1);
                }
                assert_eq!(got, want, "range {start}..{end}");
            }
        }
        assert_eq!(l.needed_stripes(5, 5), vec![None; 5]);
    }

    #[test]
    fn checksums_depend_on_block_and_stripe() {
        let piece = [7u8; 64];
        let a = piece_checksum(0, 0, &piece);
        assert_ne!(a, piece_checksum(1, 0, &piece));
        assert_ne!(a, piece_checksum(0, 1, &piece));
        assert_eq!(a, piece_checksum(0, 0, &piece));
    }
}
