//! Encryption of user-space credentials at rest: ChaCha20-Poly1305 with a key derived from
//! the cluster secret, a fresh random nonce per value, stored as hex(nonce ‖ ciphertext).

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use common::secret::Secret;
use sha2::{Digest, Sha256};

#[derive(Clone)]
pub struct CredentialCipher {
    cipher: ChaCha20Poly1305,
}

impl CredentialCipher {
    pub fn new(cluster_secret: &Secret) -> Self {
        let mut h = Sha256::new();
        h.update(b"jcs-credential-key-v1\0");
        h.update(cluster_secret.expose().as_bytes());
        let digest = h.finalize();
        CredentialCipher {
            cipher: ChaCha20Poly1305::new(Key::from_slice(digest.as_slice())),
        }
    }

    pub fn encrypt(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).expect("the OS random source is available");
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext)
            .expect("ChaCha20-Poly1305 encryption of an in-memory buffer cannot fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        hex::encode(out)
    }

    /// `None` when the value was not produced with this cluster secret or was altered.
    pub fn decrypt(&self, stored: &str) -> Option<Vec<u8>> {
        let bytes = hex::decode(stored).ok()?;
        if bytes.len() < 12 {
            return None;
        }
        let (nonce, ct) = bytes.split_at(12);
        self.cipher.decrypt(Nonce::from_slice(nonce), ct).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let c = CredentialCipher::new(&Secret::new("cluster"));
        let stored = c.encrypt(b"{\"secretAccessKey\":\"SK\"}");
        assert!(
            !stored.contains("SK") && !hex::decode(&stored).unwrap().windows(2).any(|w| w == b"SK")
        );
        assert_eq!(c.decrypt(&stored).unwrap(), b"{\"secretAccessKey\":\"SK\"}");
        assert_ne!(c.encrypt(b"x"), c.encrypt(b"x"), "fresh nonce per value");
        let mut tampered = hex::decode(&stored).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(c.decrypt(&hex::encode(tampered)).is_none());
        assert!(
            CredentialCipher::new(&Secret::new("other"))
                .decrypt(&stored)
                .is_none()
        );
    }
}
