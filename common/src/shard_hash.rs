//! Shard names: every shard is stored under a content address computed by the agent that
//! writes it (docs/architecture.md, "Shard names"). Two algorithms, told apart by the name:
//!
//! - SHA-256: the 64 lower-case hex digits of the digest. Whole-object shards (`none`, `rep`
//!   copies, multipart parts and their concatenation) use it: their name is then the
//!   object's `fileHash` in another case, and one stored copy serves every object with the
//!   same content.
//! - BLAKE3: [`BLAKE3_PREFIX`] followed by the 64 lower-case hex digits of the 32-byte
//!   digest. ec blocks use it: a block's name means nothing outside its object, and with
//!   SIMD BLAKE3 hashes about four times as fast as SHA-256 with the SHA extensions on one
//!   core (an ec(4,6) upload hashes 1.5 times the object's bytes as blocks;
//!   docs/performance.md).
//!
//! Whoever checks a shard (deep scrub, repair) re-hashes it with the algorithm its name
//! says, so both kinds of names live side by side in one store.

use sha2::Digest as _;

/// Start of a BLAKE3 shard name.
pub const BLAKE3_PREFIX: &str = "b3-";

/// How a shard is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    #[default]
    Sha256,
    Blake3,
}

impl Algorithm {
    /// The algorithm of a valid shard name; `None` for anything else.
    pub fn of(name: &str) -> Option<Algorithm> {
        let (algorithm, digest) = match name.strip_prefix(BLAKE3_PREFIX) {
            Some(digest) => (Algorithm::Blake3, digest),
            None => (Algorithm::Sha256, name),
        };
        (digest.len() == 64 && is_lower_hex(digest)).then_some(algorithm)
    }

    /// Its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Blake3 => "BLAKE3",
        }
    }
}

/// Whether `name` is a shard name of either kind.
pub fn is_valid(name: &str) -> bool {
    Algorithm::of(name).is_some()
}

/// Whether `s` is 64 lower-case hex digits: a SHA-256 as metadata stores it (an object's
/// hash, a whole copy's shard name).
pub fn is_sha256_hex(s: &str) -> bool {
    Algorithm::of(s) == Some(Algorithm::Sha256)
}

/// The hex digits of a shard name (its prefix, if any, removed): the first two pick the
/// shard's directory.
pub fn digest_hex(name: &str) -> &str {
    name.strip_prefix(BLAKE3_PREFIX).unwrap_or(name)
}

/// Whether every byte of `s` is a lower-case hex digit.
pub fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Computes a shard's name while its bytes stream by.
pub enum Hasher {
    Sha256(sha2::Sha256),
    // Boxed: BLAKE3's state (~1.9 KiB) moves between threads with every chunk.
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The shard name of everything fed so far.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Blake3(h) => format!("{BLAKE3_PREFIX}{}", h.finalize().to_hex()),
        }
    }
}

/// The shard name of `data`.
pub fn name_of(algorithm: Algorithm, data: &[u8]) -> String {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(data);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_published_digests() {
        // FIPS 180-2 and the BLAKE3 reference vectors for "abc".
        assert_eq!(
            name_of(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            name_of(Algorithm::Blake3, b"abc"),
            "b3-6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        let mut split = Hasher::new(Algorithm::Blake3);
        split.update(b"a");
        split.update(b"bc");
        assert_eq!(split.finish(), name_of(Algorithm::Blake3, b"abc"));
    }

    #[test]
    fn a_name_says_its_algorithm() {
        for algorithm in [Algorithm::Sha256, Algorithm::Blake3] {
            let name = name_of(algorithm, b"x");
            assert_eq!(Algorithm::of(&name), Some(algorithm), "{name}");
            assert!(is_valid(&name));
            assert_eq!(is_sha256_hex(&name), algorithm == Algorithm::Sha256);
            assert_eq!(digest_hex(&name).len(), 64);
        }
        let hex = "ab".repeat(32);
        assert_eq!(digest_hex(&format!("b3-{hex}")), hex);
        assert_eq!(digest_hex(&hex), hex);
        for bad in [
            String::new(),
            "b3-".into(),
            "A".repeat(64),
            "g".repeat(64),
            "a".repeat(65),
            format!("b3-{}", "a".repeat(63)),
            format!("B3-{hex}"),
            format!("b3_{hex}"),
            format!("b3-b3-{}", "a".repeat(58)),
        ] {
            assert_eq!(Algorithm::of(&bad), None, "{bad:?}");
        }
    }
}
