//! The API's content hash (`fileHash`): `Full` followed by the upper-case hex of the
//! content's SHA-256 (docs/api.md). Every crate that writes or checks one calls these.

/// `fileHash` of content whose SHA-256 digest is `sha256`.
pub fn file_hash(sha256: impl AsRef<[u8]>) -> String {
    format!("Full{}", hex::encode_upper(sha256))
}

/// `fileHash` of content whose SHA-256 is `sha256_hex` (hex, either case).
pub fn file_hash_of_hex(sha256_hex: &str) -> String {
    format!("Full{}", sha256_hex.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn both_forms_agree_and_match_the_api() {
        let digest = Sha256::digest(b"abc");
        let want = "FullBA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(file_hash(digest), want);
        assert_eq!(file_hash_of_hex(&hex::encode(digest)), want);
    }
}
