//! Signing of the tickets agents verify locally.

use common::secret::Secret;
use common::shard_hash::Algorithm;
use common::{SpaceId, UploadId};
use prost::Message;
use proto::common::{ShardHash, Ticket, TicketBody, ticket_body::Kind};

use crate::catalog::rows::UploadRow;

/// A space and the revision of its configuration the coordinator knows.
pub type SpaceRef = (SpaceId, u64);

#[derive(Clone)]
pub struct TicketSigner {
    secret: Secret,
}

impl TicketSigner {
    pub fn new(secret: Secret) -> Self {
        TicketSigner { secret }
    }

    fn sign(
        &self,
        kind: Kind,
        space: SpaceRef,
        expires_at_ms: i64,
        fill: impl FnOnce(&mut TicketBody),
    ) -> Ticket {
        let mut body = TicketBody {
            kind: kind as i32,
            space_id: space.0.0,
            space_revision: space.1,
            expires_at_ms,
            ..TicketBody::default()
        };
        fill(&mut body);
        let body = body.encode_to_vec();
        Ticket {
            signature: common::ticket::sign(&self.secret, &body),
            body,
        }
    }

    /// Permission to write one shard of upload `upload` into `space`, named by `hash`.
    pub fn put(
        &self,
        space: SpaceRef,
        upload: UploadId,
        max_size: u64,
        hash: Algorithm,
        expires_at_ms: i64,
    ) -> Ticket {
        self.sign(Kind::Put, space, expires_at_ms, |b| {
            b.upload_id = upload.0;
            b.max_size = max_size;
            b.shard_hash_algorithm = ShardHash::from(hash) as i32;
        })
    }

    /// Permission to read shard `hash` from `space`.
    pub fn get(&self, space: SpaceRef, hash: &str, expires_at_ms: i64) -> Ticket {
        self.sign(Kind::Get, space, expires_at_ms, |b| {
            b.shard_hash = hash.to_owned()
        })
    }

    /// Permission to write the concatenation of `sources` into `space` for upload `upload`.
    pub fn concat(
        &self,
        space: SpaceRef,
        upload: UploadId,
        sources: Vec<String>,
        expires_at_ms: i64,
    ) -> Ticket {
        self.sign(Kind::Concat, space, expires_at_ms, |b| {
            b.upload_id = upload.0;
            b.source_hashes = sources;
        })
    }

    /// The commit token of a pending upload: the row, signed so only this cluster's
    /// coordinators accept it back. Layout: 32-byte HMAC, then the row as JSON. A row with
    /// an upload id of the object sequence ([`UploadRow::object_seq`]) is signed in a domain
    /// of its own, which coordinators from before that sequence do not verify: during an
    /// upgrade they refuse such a token (a failed upload) instead of committing it with a
    /// marker key that an older upload's id may share.
    pub fn commit_token(&self, up: &UploadRow) -> Vec<u8> {
        let body = serde_json::to_vec(up).expect("rows are plain data and always serialize");
        let mut token = common::ticket::sign(&self.secret, &commit_domain(&body, up.object_seq));
        token.extend_from_slice(&body);
        token
    }

    /// The pending upload in a commit token, if the token is genuine; a token signed in
    /// the older domain always has an id of the `upload` sequence.
    pub fn open_commit_token(&self, token: &[u8]) -> Option<UploadRow> {
        if token.len() < 32 {
            return None;
        }
        let (sig, body) = token.split_at(32);
        let object_seq = if common::ticket::verify(&self.secret, &commit_domain(body, true), sig) {
            true
        } else if common::ticket::verify(&self.secret, &commit_domain(body, false), sig) {
            false
        } else {
            return None;
        };
        let row: UploadRow = serde_json::from_slice(body).ok()?;
        (row.object_seq == object_seq).then_some(row)
    }

    /// Permission to probe the configuration `spec` (`/v1/userSpace/test`).
    pub fn test(&self, spec: &proto::common::SpaceSpec, expires_at_ms: i64) -> Ticket {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(spec.encode_to_vec()));
        self.sign(
            Kind::Test,
            (SpaceId(spec.space_id), spec.revision),
            expires_at_ms,
            |b| {
                b.shard_hash = digest;
            },
        )
    }

    /// Permission to list the files below `path` of `space` (package import).
    pub fn list_files(&self, space: SpaceRef, path: &str, expires_at_ms: i64) -> Ticket {
        self.sign(Kind::ListFiles, space, expires_at_ms, |b| {
            b.file_path = path.to_owned()
        })
    }

    /// Permission to read the file `path` of `space` (package import).
    pub fn read_file(&self, space: SpaceRef, path: &str, expires_at_ms: i64) -> Ticket {
        self.sign(Kind::ReadFile, space, expires_at_ms, |b| {
            b.file_path = path.to_owned()
        })
    }

    /// Permission to write the file `path` of `space` (package export).
    pub fn write_file(&self, space: SpaceRef, path: &str, expires_at_ms: i64) -> Ticket {
        self.sign(Kind::WriteFile, space, expires_at_ms, |b| {
            b.file_path = path.to_owned()
        })
    }

    /// Permission to run the sync pass whose request hashes to `digest` (see KIND_SYNC).
    pub fn sync(&self, source: SpaceRef, digest: &str, expires_at_ms: i64) -> Ticket {
        self.sign(Kind::Sync, source, expires_at_ms, |b| {
            b.shard_hash = digest.to_owned()
        })
    }

    /// Permission to list the shards of `space`.
    pub fn list(&self, space: SpaceRef, expires_at_ms: i64) -> Ticket {
        self.sign(Kind::List, space, expires_at_ms, |_| {})
    }

    /// Permission to delete shard `hash` of `space` if untouched since `cutoff_ms`.
    pub fn delete(
        &self,
        space: SpaceRef,
        hash: &str,
        cutoff_ms: i64,
        expires_at_ms: i64,
    ) -> Ticket {
        self.sign(Kind::Delete, space, expires_at_ms, |b| {
            b.shard_hash = hash.to_owned();
            b.not_modified_since_ms = cutoff_ms;
        })
    }
}

/// Commit tokens are signed over a distinct prefix so no agent ticket can pass as one.
fn commit_domain(body: &[u8], object_seq: bool) -> Vec<u8> {
    let mut v = if object_seq {
        b"jcs-commit-token-v2\0".to_vec()
    } else {
        b"jcs-commit-token-v1\0".to_vec()
    };
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_verify_with_the_cluster_secret() {
        let s = Secret::new("cluster");
        let t = TicketSigner::new(s.clone()).get((SpaceId(4), 1), "ab", 99);
        assert!(common::ticket::verify(&s, &t.body, &t.signature));
        let body = TicketBody::decode(t.body.as_slice()).unwrap();
        assert_eq!(body.kind(), Kind::Get);
        assert_eq!(
            (body.space_id, body.shard_hash.as_str(), body.expires_at_ms),
            (4, "ab", 99)
        );
        assert!(!common::ticket::verify(
            &Secret::new("other"),
            &t.body,
            &t.signature
        ));
    }

    #[test]
    fn commit_tokens_round_trip_and_reject_tampering() {
        let signer = TicketSigner::new(Secret::new("k"));
        let row: UploadRow =
            serde_json::from_str(include_str!("../tests/golden/upload_v1.json")).unwrap();
        let token = signer.commit_token(&row);
        assert_eq!(signer.open_commit_token(&token), Some(row));
        let mut bad = token.clone();
        let last = bad.len() - 2;
        bad[last] ^= 1;
        assert_eq!(signer.open_commit_token(&bad), None);
        assert_eq!(signer.open_commit_token(&token[..10]), None);
        assert_eq!(
            TicketSigner::new(Secret::new("other")).open_commit_token(&token),
            None
        );
    }

    #[test]
    fn object_sequence_tokens_are_signed_apart_from_older_ones() {
        let signer = TicketSigner::new(Secret::new("k"));
        let old: UploadRow =
            serde_json::from_str(include_str!("../tests/golden/upload_v1.json")).unwrap();
        assert!(!old.object_seq);
        let new = UploadRow {
            object_seq: true,
            ..old.clone()
        };
        let token = signer.commit_token(&new);
        assert_eq!(signer.open_commit_token(&token), Some(new.clone()));
        // A coordinator from before the object sequence checks the v1 domain only: it
        // refuses the token instead of committing it with an `upload/` marker.
        let (sig, body) = token.split_at(32);
        assert!(!common::ticket::verify(
            &signer.secret,
            &commit_domain(body, false),
            sig
        ));
        // A v1 signature over a row that claims the object sequence is not accepted.
        let body = serde_json::to_vec(&new).unwrap();
        let mut forged = common::ticket::sign(&signer.secret, &commit_domain(&body, false));
        forged.extend_from_slice(&body);
        assert_eq!(signer.open_commit_token(&forged), None);
        // Older tokens keep opening.
        assert_eq!(
            signer.open_commit_token(&signer.commit_token(&old)),
            Some(old)
        );
    }

    #[test]
    fn concat_and_delete_tickets_carry_their_fields() {
        let signer = TicketSigner::new(Secret::new("k"));
        let t = signer.concat(
            (SpaceId(1), 1),
            UploadId(5),
            vec!["x".into(), "x".into()],
            9,
        );
        let body = TicketBody::decode(t.body.as_slice()).unwrap();
        assert_eq!(
            (body.kind(), body.upload_id, body.source_hashes.len()),
            (Kind::Concat, 5, 2)
        );
        let t = signer.delete((SpaceId(1), 1), "h", 1234, 9);
        let body = TicketBody::decode(t.body.as_slice()).unwrap();
        assert_eq!(
            (body.kind(), body.not_modified_since_ms),
            (Kind::Delete, 1234)
        );
    }
}
