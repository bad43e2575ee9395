//! HMAC-SHA256 signatures for placement tickets. The coordinator signs the encoded ticket
//! body with the cluster secret; an agent verifies it locally, with no call back.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::secret::Secret;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &Secret) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.expose().as_bytes()).expect("HMAC accepts keys of any length")
}

/// Signature of `body` under `secret`.
pub fn sign(secret: &Secret, body: &[u8]) -> Vec<u8> {
    let mut m = mac(secret);
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Constant-time check of `signature` over `body`.
pub fn verify(secret: &Secret, body: &[u8], signature: &[u8]) -> bool {
    let mut m = mac(secret);
    m.update(body);
    m.verify_slice(signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_with_same_secret_and_body() {
        let s = Secret::new("k1");
        let sig = sign(&s, b"body");
        assert!(verify(&s, b"body", &sig));
        assert!(!verify(&s, b"bodY", &sig));
        assert!(!verify(&Secret::new("k2"), b"body", &sig));
        assert!(!verify(&s, b"body", &sig[..31]));
    }
}
