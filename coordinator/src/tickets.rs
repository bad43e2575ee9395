//! Signing of the tickets agents verify locally.

use common::secret::Secret;
use common::{SpaceId, UploadId};
use prost::Message;
use proto::common::{Ticket, TicketBody, ticket_body::Kind};

#[derive(Clone)]
pub struct TicketSigner {
    secret: Secret,
}

impl TicketSigner {
    pub fn new(secret: Secret) -> Self {
        TicketSigner { secret }
    }

    fn sign(&self, body: TicketBody) -> Ticket {
        let body = body.encode_to_vec();
        Ticket {
            signature: common::ticket::sign(&self.secret, &body),
            body,
        }
    }

    /// Permission to write one shard of upload `upload` into `space`.
    pub fn put(
        &self,
        space: SpaceId,
        upload: UploadId,
        max_size: u64,
        expires_at_ms: i64,
    ) -> Ticket {
        self.sign(TicketBody {
            kind: Kind::Put as i32,
            space_id: space.0,
            upload_id: upload.0,
            shard_hash: String::new(),
            max_size,
            expires_at_ms,
        })
    }

    /// Permission to read shard `hash` from `space`.
    pub fn get(&self, space: SpaceId, hash: &str, expires_at_ms: i64) -> Ticket {
        self.sign(TicketBody {
            kind: Kind::Get as i32,
            space_id: space.0,
            upload_id: 0,
            shard_hash: hash.to_owned(),
            max_size: 0,
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_verify_with_the_cluster_secret() {
        let s = Secret::new("cluster");
        let t = TicketSigner::new(s.clone()).get(SpaceId(4), "ab", 99);
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
}
