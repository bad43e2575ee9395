//! Redundancy policies and their JSON form, the `redundancy` object of the `/v1` API:
//! `{"type":"none"}`, `{"type":"rep","repCount":2}`, `{"type":"ec","k":4,"n":6,"chunkSize":1048576}`,
//! and, for objects only, `{"type":"multipartUpload"}` (an object whose parts are still arriving).

use serde::{Deserialize, Serialize};
use snafu::ensure;

use crate::error::{Error, NotAPolicySnafu, Result, ValidatePolicySnafu};

/// Largest `chunkSize`: a stripe piece is sent as one stream chunk, and chunks are ≤ 1 MiB.
pub const MAX_CHUNK_SIZE: u32 = 1 << 20;
/// `chunkSize` must be a multiple of this (the SIMD codec works on 64-byte lanes).
pub const CHUNK_ALIGN: u32 = 64;
/// Largest `n` (and `repCount`): one block per user space, at most 255 spaces per object.
pub const MAX_BLOCKS: u32 = 255;
/// `chunkSize` used when an `ec` policy omits it.
pub const DEFAULT_CHUNK_SIZE: u32 = MAX_CHUNK_SIZE;

/// How an object's bytes are spread over user spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub enum Policy {
    /// One plain shard in one space (today's behaviour).
    #[default]
    None,
    /// `rep_count` identical plain shards in distinct spaces.
    Rep { rep_count: u32 },
    /// Reed–Solomon: `k` data blocks and `n - k` parity blocks in `n` distinct spaces, striped
    /// in pieces of `chunk_size` bytes; any `k` blocks rebuild the object.
    Ec { k: u32, n: u32, chunk_size: u32 },
}

impl Policy {
    /// A validated `rep` policy.
    pub fn rep(rep_count: u32) -> Result<Policy> {
        let p = Policy::Rep { rep_count };
        p.validate()?;
        Ok(p)
    }

    /// A validated `ec` policy.
    pub fn ec(k: u32, n: u32, chunk_size: u32) -> Result<Policy> {
        let p = Policy::Ec { k, n, chunk_size };
        p.validate()?;
        Ok(p)
    }

    /// The `type` string of the JSON form.
    pub fn kind(&self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Rep { .. } => "rep",
            Policy::Ec { .. } => "ec",
        }
    }

    /// Checks the limits: `repCount ≥ 1`; `1 ≤ k < n ≤ 255` and a pair the codec supports;
    /// `chunkSize` a positive multiple of 64 and ≤ 1 MiB.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Policy::None => Ok(()),
            Policy::Rep { rep_count } => {
                ensure!(
                    (1..=MAX_BLOCKS).contains(&rep_count),
                    ValidatePolicySnafu {
                        reason: format!(
                            "repCount must be between 1 and {MAX_BLOCKS}, got {rep_count}"
                        )
                    }
                );
                Ok(())
            }
            Policy::Ec { k, n, chunk_size } => {
                ensure!(
                    k >= 1,
                    ValidatePolicySnafu {
                        reason: "k must be at least 1".to_owned()
                    }
                );
                ensure!(
                    n > k,
                    ValidatePolicySnafu {
                        reason: format!("n must be greater than k, got k={k} n={n}")
                    }
                );
                ensure!(
                    n <= MAX_BLOCKS,
                    ValidatePolicySnafu {
                        reason: format!("n must be at most {MAX_BLOCKS}, got {n}")
                    }
                );
                ensure!(
                    reed_solomon_simd::ReedSolomonEncoder::supports(k as usize, (n - k) as usize),
                    ValidatePolicySnafu {
                        reason: format!("the codec does not support k={k} n={n}")
                    }
                );
                ensure!(
                    chunk_size > 0 && chunk_size % CHUNK_ALIGN == 0 && chunk_size <= MAX_CHUNK_SIZE,
                    ValidatePolicySnafu {
                        reason: format!(
                            "chunkSize must be a positive multiple of {CHUNK_ALIGN} and at most {MAX_CHUNK_SIZE}, got {chunk_size}"
                        )
                    }
                );
                Ok(())
            }
        }
    }

    /// How many blocks (one per user space) an object stored under this policy has.
    pub fn block_count(&self) -> usize {
        match *self {
            Policy::None => 1,
            Policy::Rep { rep_count } => rep_count as usize,
            Policy::Ec { n, .. } => n as usize,
        }
    }

    /// How the blocks of this policy are named (common::shard_hash): a `none` or `rep` block
    /// is a whole copy of the object, named by its SHA-256 like the object's `fileHash`; an
    /// ec block means nothing outside its object and is named by the faster BLAKE3.
    pub fn block_hash(&self) -> common::shard_hash::Algorithm {
        match self {
            Policy::None | Policy::Rep { .. } => common::shard_hash::Algorithm::Sha256,
            Policy::Ec { .. } => common::shard_hash::Algorithm::Blake3,
        }
    }

    /// How many healthy blocks a full read needs at least.
    pub fn min_blocks(&self) -> usize {
        match *self {
            Policy::None | Policy::Rep { .. } => 1,
            Policy::Ec { k, .. } => k as usize,
        }
    }
}

/// What an object reports as its `redundancy`: the policy it is stored under, or
/// `multipartUpload` while its parts are still arriving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub enum ObjectRedundancy {
    Stored(Policy),
    MultipartUpload,
}

impl ObjectRedundancy {
    /// The `type` string of the JSON form (`none`, `rep`, `ec`, `multipartUpload`).
    pub fn kind(&self) -> &'static str {
        match self {
            ObjectRedundancy::Stored(p) => p.kind(),
            ObjectRedundancy::MultipartUpload => "multipartUpload",
        }
    }

    /// The policy, or an error for an object that is not stored yet.
    pub fn policy(&self) -> Result<Policy> {
        match *self {
            ObjectRedundancy::Stored(p) => Ok(p),
            ObjectRedundancy::MultipartUpload => NotAPolicySnafu {
                kind: "multipartUpload",
            }
            .fail(),
        }
    }
}

impl From<Policy> for ObjectRedundancy {
    fn from(p: Policy) -> Self {
        ObjectRedundancy::Stored(p)
    }
}

/// The JSON shape shared by [`Policy`] and [`ObjectRedundancy`]; unknown fields are ignored so
/// newer writers stay readable.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type")]
enum Wire {
    #[serde(rename = "none")]
    None,
    #[serde(rename = "rep")]
    Rep {
        #[serde(rename = "repCount")]
        rep_count: u32,
    },
    #[serde(rename = "ec")]
    Ec {
        k: u32,
        n: u32,
        #[serde(rename = "chunkSize", default = "default_chunk_size")]
        chunk_size: u32,
    },
    #[serde(rename = "multipartUpload")]
    MultipartUpload,
}

fn default_chunk_size() -> u32 {
    DEFAULT_CHUNK_SIZE
}

impl TryFrom<Wire> for Policy {
    type Error = Error;
    fn try_from(w: Wire) -> Result<Policy> {
        let p = match w {
            Wire::None => Policy::None,
            Wire::Rep { rep_count } => Policy::Rep { rep_count },
            Wire::Ec { k, n, chunk_size } => Policy::Ec { k, n, chunk_size },
            Wire::MultipartUpload => {
                return NotAPolicySnafu {
                    kind: "multipartUpload",
                }
                .fail();
            }
        };
        p.validate()?;
        Ok(p)
    }
}

impl From<Policy> for Wire {
    fn from(p: Policy) -> Wire {
        match p {
            Policy::None => Wire::None,
            Policy::Rep { rep_count } => Wire::Rep { rep_count },
            Policy::Ec { k, n, chunk_size } => Wire::Ec { k, n, chunk_size },
        }
    }
}

impl TryFrom<Wire> for ObjectRedundancy {
    type Error = Error;
    fn try_from(w: Wire) -> Result<ObjectRedundancy> {
        match w {
            Wire::MultipartUpload => Ok(ObjectRedundancy::MultipartUpload),
            other => Policy::try_from(other).map(ObjectRedundancy::Stored),
        }
    }
}

impl From<ObjectRedundancy> for Wire {
    fn from(r: ObjectRedundancy) -> Wire {
        match r {
            ObjectRedundancy::Stored(p) => p.into(),
            ObjectRedundancy::MultipartUpload => Wire::MultipartUpload,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_form_matches_the_api() {
        let cases = [
            (Policy::None, json!({"type": "none"})),
            (
                Policy::Rep { rep_count: 2 },
                json!({"type": "rep", "repCount": 2}),
            ),
            (
                Policy::Ec {
                    k: 4,
                    n: 6,
                    chunk_size: 65536,
                },
                json!({"type": "ec", "k": 4, "n": 6, "chunkSize": 65536}),
            ),
        ];
        for (policy, expected) in cases {
            assert_eq!(serde_json::to_value(policy).unwrap(), expected);
            let back: Policy = serde_json::from_value(expected.clone()).unwrap();
            assert_eq!(back, policy);
            let obj: ObjectRedundancy = serde_json::from_value(expected.clone()).unwrap();
            assert_eq!(obj, ObjectRedundancy::Stored(policy));
            assert_eq!(serde_json::to_value(obj).unwrap(), expected);
            assert_eq!(obj.kind(), expected["type"].as_str().unwrap());
        }
    }

    #[test]
    fn multipart_upload_is_an_object_state_not_a_policy() {
        let j = json!({"type": "multipartUpload"});
        let obj: ObjectRedundancy = serde_json::from_value(j.clone()).unwrap();
        assert_eq!(obj, ObjectRedundancy::MultipartUpload);
        assert_eq!(serde_json::to_value(obj).unwrap(), j);
        assert!(obj.policy().is_err());
        let err = serde_json::from_value::<Policy>(j).unwrap_err().to_string();
        assert!(err.contains("multipartUpload"), "{err}");
    }

    #[test]
    fn ec_chunk_size_defaults_and_unknown_fields_are_ignored() {
        let p: Policy = serde_json::from_str(r#"{"type":"ec","k":2,"n":3,"extra":true}"#).unwrap();
        assert_eq!(
            p,
            Policy::Ec {
                k: 2,
                n: 3,
                chunk_size: DEFAULT_CHUNK_SIZE
            }
        );
    }

    #[test]
    fn invalid_policies_are_rejected_with_the_field_named() {
        let bad = [
            (r#"{"type":"ec","k":0,"n":2,"chunkSize":64}"#, "k must be"),
            (
                r#"{"type":"ec","k":4,"n":4,"chunkSize":64}"#,
                "n must be greater",
            ),
            (
                r#"{"type":"ec","k":4,"n":256,"chunkSize":64}"#,
                "at most 255",
            ),
            (r#"{"type":"ec","k":4,"n":6,"chunkSize":0}"#, "chunkSize"),
            (r#"{"type":"ec","k":4,"n":6,"chunkSize":100}"#, "chunkSize"),
            (
                r#"{"type":"ec","k":4,"n":6,"chunkSize":2097152}"#,
                "chunkSize",
            ),
            (r#"{"type":"rep","repCount":0}"#, "repCount"),
            (r#"{"type":"rep"}"#, "repCount"),
            (r#"{"type":"lrc"}"#, "lrc"),
        ];
        for (text, needle) in bad {
            let err = serde_json::from_str::<Policy>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
        assert!(Policy::ec(1, 2, 64).is_ok());
        assert!(Policy::ec(4, 6, MAX_CHUNK_SIZE).is_ok());
        assert!(Policy::ec(200, 255, 64).is_ok());
        assert!(Policy::rep(1).is_ok());
    }

    #[test]
    fn block_counts() {
        assert_eq!(Policy::None.block_count(), 1);
        assert_eq!(Policy::rep(3).unwrap().block_count(), 3);
        let ec = Policy::ec(4, 6, 64).unwrap();
        assert_eq!((ec.block_count(), ec.min_blocks()), (6, 4));
    }
}
