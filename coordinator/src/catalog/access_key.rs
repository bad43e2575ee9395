//! API access keys (`v1/access-keys/{id}`): the credentials the gateway verifies request
//! signatures with (docs/api.md, "Authentication").
//!
//! The gateway must recompute an HMAC, so the secret is stored recoverably, not hashed; it
//! is encrypted at rest with the [`CredentialCipher`] (ChaCha20-Poly1305 under a key derived
//! from the cluster secret), like the credentials of user spaces. Anyone who reads the
//! metadata store without the cluster secret learns ids and names only.

use common::secret::Secret;
use meta::{Compare, Op, Txn};
use serde::{Deserialize, Serialize};

use super::rows::VERSION;
use super::{Catalog, decode, encode, keys};
use crate::crypto::CredentialCipher;
use crate::error::{Error, Result, bad, not_found};

/// Longest accepted key name.
pub const MAX_NAME_LEN: usize = 128;
/// Prefix of every generated access key id.
pub const ID_PREFIX: &str = "JCSK";

fn v1() -> u32 {
    VERSION
}

/// One access key as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKeyRow {
    #[serde(default = "v1")]
    pub v: u32,
    pub access_key_id: String,
    /// Free text for the operator.
    #[serde(default)]
    pub name: String,
    /// hex(nonce ‖ ChaCha20-Poly1305(secret)), see [`CredentialCipher`].
    pub secret_enc: String,
    pub create_time_ms: i64,
    /// The key may only read (GET and HEAD requests); absent in rows written before
    /// read-only keys existed (read-write).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// Whether `id` could be an access key id: 1 to 64 of `A-Z 0-9`. Checked before any
/// lookup, so an id never reaches a key path it could escape.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn random_hex(bytes: usize, upper: bool) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the OS random source is available");
    if upper {
        hex::encode_upper(buf)
    } else {
        hex::encode(buf)
    }
}

impl Catalog {
    /// A new key: id `JCSK` + 16 upper-case hex digits, secret 40 lower-case hex digits
    /// (160 random bits). The secret is returned here and never listed.
    pub async fn create_access_key(
        &self,
        name: &str,
        read_only: bool,
        cipher: &CredentialCipher,
    ) -> Result<(AccessKeyRow, Secret)> {
        if name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control) {
            return Err(bad(format!(
                "access key name must be at most {MAX_NAME_LEN} characters without control characters"
            )));
        }
        for _ in 0..super::MAX_ATTEMPTS {
            let id = format!("{ID_PREFIX}{}", random_hex(8, true));
            let secret = Secret::new(random_hex(20, false));
            let row = AccessKeyRow {
                v: VERSION,
                access_key_id: id.clone(),
                name: name.to_owned(),
                secret_enc: cipher.encrypt(secret.expose().as_bytes()),
                create_time_ms: common::time::now_ms(),
                read_only,
            };
            let key = keys::access_key(&id);
            let res = self
                .meta
                .txn(Txn {
                    when: vec![Compare::Absent(key.clone())],
                    then: vec![Op::Put(key, encode(&row))],
                    otherwise: vec![],
                })
                .await?;
            if res.succeeded {
                return Ok((row, secret));
            }
        }
        Err(Error::Contention {
            what: "access key id".to_owned(),
            attempts: super::MAX_ATTEMPTS,
        })
    }

    /// Every key, by id (secrets stay encrypted in the rows).
    pub async fn list_access_keys(&self) -> Result<Vec<AccessKeyRow>> {
        let mut out = Vec::new();
        for kv in self.scan(keys::access_key_prefix()).await? {
            out.push(decode::<AccessKeyRow>(&kv)?);
        }
        Ok(out)
    }

    /// NotFound when there is no such key.
    pub async fn delete_access_key(&self, id: &str) -> Result<()> {
        if !valid_id(id) {
            return Err(not_found(format!("access key {id:?}")));
        }
        let key = keys::access_key(id);
        let current = self
            .get_row::<AccessKeyRow>(&key)
            .await?
            .ok_or_else(|| not_found(format!("access key {id}")))?;
        // Rows never change after creation: a failed compare means it was deleted meanwhile.
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(key.clone(), current.rev)],
                then: vec![Op::Delete(key)],
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            return Err(not_found(format!("access key {id}")));
        }
        Ok(())
    }

    /// The key and its secret in clear; NotFound when there is no such key.
    pub async fn lookup_access_key(
        &self,
        id: &str,
        cipher: &CredentialCipher,
    ) -> Result<(AccessKeyRow, Secret)> {
        if !valid_id(id) {
            return Err(not_found(format!("access key {id:?}")));
        }
        let row = self
            .get_row::<AccessKeyRow>(&keys::access_key(id))
            .await?
            .ok_or_else(|| not_found(format!("access key {id}")))?
            .row;
        let plain = cipher
            .decrypt(&row.secret_enc)
            .and_then(|p| String::from_utf8(p).ok())
            .ok_or_else(|| Error::Startup {
                message: format!(
                    "the secret of access key {id} cannot be decrypted (was the cluster secret changed?)"
                ),
            })?;
        Ok((row, Secret::new(plain)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn catalog() -> (Catalog, CredentialCipher) {
        (
            Catalog::new(Arc::new(meta::MemoryStore::new())),
            CredentialCipher::new(&Secret::new("cluster")),
        )
    }

    #[tokio::test]
    async fn create_lookup_list_delete() {
        let (cat, cipher) = catalog();
        let (a, secret_a) = cat.create_access_key("ci", false, &cipher).await.unwrap();
        let (b, _) = cat.create_access_key("", true, &cipher).await.unwrap();
        assert!(!a.read_only && b.read_only);
        assert!(a.access_key_id.starts_with(ID_PREFIX) && valid_id(&a.access_key_id));
        assert_eq!(a.access_key_id.len(), 20);
        assert_eq!(secret_a.expose().len(), 40);
        assert_ne!(a.access_key_id, b.access_key_id);
        // The stored row does not carry the secret in clear.
        let raw = cat
            .meta
            .get(&keys::access_key(&a.access_key_id))
            .await
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw.value).contains(secret_a.expose()));

        let (row, secret) = cat
            .lookup_access_key(&a.access_key_id, &cipher)
            .await
            .unwrap();
        assert_eq!(row, a);
        assert_eq!(secret, secret_a);

        let mut ids: Vec<_> = cat
            .list_access_keys()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.access_key_id)
            .collect();
        ids.sort();
        let mut want = vec![a.access_key_id.clone(), b.access_key_id.clone()];
        want.sort();
        assert_eq!(ids, want);

        cat.delete_access_key(&a.access_key_id).await.unwrap();
        let gone = cat.lookup_access_key(&a.access_key_id, &cipher).await;
        assert!(matches!(gone, Err(Error::NotFound { .. })));
        assert!(matches!(
            cat.delete_access_key(&a.access_key_id).await,
            Err(Error::NotFound { .. })
        ));
        assert_eq!(cat.list_access_keys().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn bad_ids_and_names_are_refused() {
        let (cat, cipher) = catalog();
        for id in ["", "../x", "jcsk1", "A/B"] {
            assert!(!valid_id(id));
            assert!(matches!(
                cat.lookup_access_key(id, &cipher).await,
                Err(Error::NotFound { .. })
            ));
        }
        assert!(
            cat.create_access_key(&"n".repeat(129), false, &cipher)
                .await
                .is_err()
        );
        assert!(cat.create_access_key("a\nb", false, &cipher).await.is_err());
    }

    #[tokio::test]
    async fn another_cluster_secret_cannot_read_the_secret() {
        let (cat, cipher) = catalog();
        let (a, _) = cat.create_access_key("k", false, &cipher).await.unwrap();
        let other = CredentialCipher::new(&Secret::new("other"));
        assert!(
            cat.lookup_access_key(&a.access_key_id, &other)
                .await
                .is_err()
        );
    }

    #[test]
    fn golden_row_decodes() {
        let row: AccessKeyRow =
            serde_json::from_str(include_str!("../../tests/golden/access_key_v1.json")).unwrap();
        assert_eq!(row.v, 1);
        assert_eq!(row.access_key_id, "JCSK0123456789ABCDEF");
        assert_eq!(row.name, "ci");
        assert_eq!(row.create_time_ms, 1_769_774_400_000);
        assert!(
            !row.read_only,
            "keys from before read-only keys are read-write"
        );
        let cipher = CredentialCipher::new(&Secret::new("golden-cluster-secret"));
        assert_eq!(
            cipher.decrypt(&row.secret_enc).unwrap(),
            b"0123456789abcdef0123456789abcdef01234567"
        );
    }
}
