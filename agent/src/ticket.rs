//! Verification of coordinator-signed tickets, done locally with the cluster secret (no call
//! back to the coordinator). Pure functions of the ticket, the secret and the clock.
//!
//! Kinds by RPC: PutShard `PUT`, GetShard `GET`, ConcatShards `CONCAT`, ListShards `LIST`,
//! DeleteShard `DELETE`, TestStorage `TEST`, ListFiles `LIST_FILES`, ImportFile
//! `READ_FILE` (+ the destination's `PUT`), ExportFile `WRITE_FILE` (+ the source's `GET`),
//! RunSync `SYNC`.
//! A ticket is good for exactly its own kind.

use common::secret::Secret;
use common::shard_hash::Algorithm;
use prost::Message;
use proto::common::ticket_body::Kind;
use proto::common::{ShardHash, Ticket, TicketBody};
use snafu::ensure;

use crate::error::{BadTicketSnafu, Result, TicketExpiredSnafu, WrongTicketKindSnafu};

/// Check `ticket` is signed with `secret`, decodes, is of kind `expected` and has not
/// expired at `now_ms`; returns its body.
///
/// A bad signature, an undecodable body and an expired ticket are `Unauthenticated`; a
/// valid ticket for another operation is `PermissionDenied`.
pub fn verify(
    secret: &Secret,
    ticket: Option<&Ticket>,
    expected: Kind,
    now_ms: i64,
) -> Result<TicketBody> {
    let Some(ticket) = ticket else {
        return BadTicketSnafu {
            reason: "ticket is missing",
        }
        .fail();
    };
    ensure!(
        common::ticket::verify(secret, &ticket.body, &ticket.signature),
        BadTicketSnafu {
            reason: "signature does not verify",
        }
    );
    let body = TicketBody::decode(ticket.body.as_slice()).map_err(|e| {
        BadTicketSnafu {
            reason: format!("body does not decode: {e}"),
        }
        .build()
    })?;
    ensure!(
        body.kind == expected as i32,
        WrongTicketKindSnafu {
            expected: expected.as_str_name(),
            actual: Kind::try_from(body.kind)
                .map(|k| k.as_str_name().to_owned())
                .unwrap_or_else(|_| body.kind.to_string()),
        }
    );
    ensure!(
        body.expires_at_ms > now_ms,
        TicketExpiredSnafu {
            expires_at_ms: body.expires_at_ms,
        }
    );
    Ok(body)
}

/// How a put ticket says to name the new shard. A value this agent does not know (a newer
/// coordinator) is a bad ticket, not a silent fallback: the coordinator records the name
/// the agent answers, and it must be what the ticket asked for.
pub fn shard_algorithm(body: &TicketBody) -> Result<Algorithm> {
    match ShardHash::try_from(body.shard_hash_algorithm) {
        Ok(hash) => Ok(hash.into()),
        Err(_) => BadTicketSnafu {
            reason: format!("unknown shard_hash_algorithm {}", body.shard_hash_algorithm),
        }
        .fail(),
    }
}

#[cfg(test)]
mod tests {
    use common::{CodedError, ErrorCode};

    use super::*;
    use crate::Error;

    fn sign(secret: &Secret, body: &TicketBody) -> Ticket {
        let body = body.encode_to_vec();
        Ticket {
            signature: common::ticket::sign(secret, &body),
            body,
        }
    }

    fn body(kind: Kind, expires_at_ms: i64) -> TicketBody {
        TicketBody {
            kind: kind as i32,
            space_id: 3,
            upload_id: 9,
            shard_hash: String::new(),
            max_size: 100,
            expires_at_ms,
            source_hashes: vec![],
            not_modified_since_ms: 0,
            space_revision: 1,
            file_path: String::new(),
            shard_hash_algorithm: ShardHash::Sha256 as i32,
        }
    }

    #[test]
    fn the_put_ticket_names_the_shard_algorithm() {
        let mut b = body(Kind::Put, 2000);
        assert_eq!(shard_algorithm(&b).unwrap(), Algorithm::Sha256);
        b.shard_hash_algorithm = ShardHash::Blake3 as i32;
        assert_eq!(shard_algorithm(&b).unwrap(), Algorithm::Blake3);
        b.shard_hash_algorithm = 7;
        let err = shard_algorithm(&b).unwrap_err();
        assert!(err.to_string().contains("shard_hash_algorithm 7"), "{err}");
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }

    #[test]
    fn valid_ticket_yields_its_body() {
        let s = Secret::new("k");
        let t = sign(&s, &body(Kind::Put, 2000));
        let b = verify(&s, Some(&t), Kind::Put, 1000).unwrap();
        assert_eq!(b, body(Kind::Put, 2000));
    }

    #[test]
    fn invalid_tickets_are_refused_with_their_code() {
        let s = Secret::new("k");
        let good = sign(&s, &body(Kind::Get, 2000));
        let mut tampered = good.clone();
        tampered.body[0] ^= 1;
        let mut bad_sig = good.clone();
        bad_sig.signature[0] ^= 1;
        let garbage = Ticket {
            signature: common::ticket::sign(&s, &[0xff, 0xff]),
            body: vec![0xff, 0xff],
        };
        let other_secret = sign(&Secret::new("other"), &body(Kind::Get, 2000));

        let cases: [(Option<&Ticket>, Kind, i64, ErrorCode); 8] = [
            (None, Kind::Get, 1000, ErrorCode::Unauthenticated),
            (Some(&tampered), Kind::Get, 1000, ErrorCode::Unauthenticated),
            (Some(&bad_sig), Kind::Get, 1000, ErrorCode::Unauthenticated),
            (Some(&garbage), Kind::Get, 1000, ErrorCode::Unauthenticated),
            (
                Some(&other_secret),
                Kind::Get,
                1000,
                ErrorCode::Unauthenticated,
            ),
            (Some(&good), Kind::Put, 1000, ErrorCode::PermissionDenied),
            (Some(&good), Kind::Get, 2000, ErrorCode::Unauthenticated),
            (Some(&good), Kind::Get, 3000, ErrorCode::Unauthenticated),
        ];
        for (i, (ticket, kind, now, code)) in cases.into_iter().enumerate() {
            let err = verify(&s, ticket, kind, now).unwrap_err();
            assert_eq!(err.code(), code, "case {i}: {err}");
        }
        let err = verify(&s, Some(&good), Kind::Get, 2000).unwrap_err();
        assert!(matches!(
            err,
            Error::TicketExpired {
                expires_at_ms: 2000
            }
        ));
    }

    #[test]
    fn each_kind_is_good_only_for_itself() {
        let s = Secret::new("k");
        let kinds = [
            Kind::Unspecified,
            Kind::Put,
            Kind::Get,
            Kind::Concat,
            Kind::List,
            Kind::Delete,
            Kind::Test,
            Kind::ListFiles,
            Kind::ReadFile,
            Kind::WriteFile,
            Kind::Sync,
        ];
        for ticket_kind in kinds {
            let t = sign(&s, &body(ticket_kind, 2000));
            for expected in &kinds[1..] {
                let got = verify(&s, Some(&t), *expected, 1000);
                if ticket_kind == *expected {
                    assert_eq!(got.unwrap().kind, ticket_kind as i32);
                } else {
                    let err = got.unwrap_err();
                    assert_eq!(err.code(), ErrorCode::PermissionDenied, "{err}");
                    assert!(err.to_string().contains(expected.as_str_name()), "{err}");
                }
            }
        }
        // An unknown kind number is refused too, and named by its number.
        let mut unknown = body(Kind::Put, 2000);
        unknown.kind = 42;
        let err = verify(&s, Some(&sign(&s, &unknown)), Kind::Delete, 1000).unwrap_err();
        assert_eq!(err.code(), ErrorCode::PermissionDenied);
        assert!(err.to_string().contains("42"), "{err}");
    }
}
