//! JSON shapes of the `/v1` API, rendered from coordinator messages.

use chrono::{DateTime, SecondsFormat};
use proto::coordinator as pb;
use serde::Serialize;

use crate::error::ApiError;

/// `{bucketID, name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct BucketJson {
    #[serde(rename = "bucketID")]
    #[schema(minimum = 1)]
    pub bucket_id: u64,
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
}

impl From<pb::Bucket> for BucketJson {
    fn from(b: pb::Bucket) -> Self {
        BucketJson {
            bucket_id: b.bucket_id,
            name: b.name,
        }
    }
}

/// `{packageID, name, bucketID, createTime, redundancy}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PackageJson {
    #[serde(rename = "packageID")]
    #[schema(minimum = 1)]
    pub package_id: u64,
    #[schema(min_length = 1, max_length = 255)]
    pub name: String,
    #[serde(rename = "bucketID")]
    #[schema(minimum = 1)]
    pub bucket_id: u64,
    /// RFC 3339, UTC, milliseconds.
    #[serde(rename = "createTime")]
    #[schema(format = DateTime)]
    pub create_time: String,
    /// The policy new uploads into the package get (docs/redundancy.md).
    pub redundancy: RedundancyJson,
}

impl From<pb::Package> for PackageJson {
    fn from(p: pb::Package) -> Self {
        PackageJson {
            package_id: p.package_id,
            name: p.name,
            bucket_id: p.bucket_id,
            create_time: rfc3339_ms(p.create_time_ms),
            redundancy: RedundancyJson::from_coordinator(&p.redundancy_json),
        }
    }
}

/// The `redundancy` object: `{"type":"none"}`, `{"type":"rep","repCount":2}`,
/// `{"type":"ec","k":4,"n":6,"chunkSize":1048576}`, or `{"type":"multipartUpload"}` for a
/// multipart upload that is not completed yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RedundancyJson {
    /// `none`, `rep`, `ec` or (objects only) `multipartUpload`.
    #[serde(rename = "type")]
    #[schema(value_type = RedundancyType)]
    pub kind: String,
    /// rep: number of full copies, each in a distinct user space.
    #[serde(rename = "repCount", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32, required = false, minimum = 1)]
    pub rep_count: Option<u32>,
    /// ec: data blocks.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32, required = false, minimum = 1)]
    pub k: Option<u32>,
    /// ec: data + parity blocks, each in a distinct user space.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32, required = false, minimum = 1)]
    pub n: Option<u32>,
    /// ec: bytes per stripe piece.
    #[serde(rename = "chunkSize", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32, required = false, minimum = 1)]
    pub chunk_size: Option<u32>,
}

/// `type` of a redundancy object (schema only: `RedundancyJson::kind` keeps the string the
/// coordinator sent).
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub enum RedundancyType {
    None,
    Rep,
    Ec,
    /// Objects only: a multipart upload that is not completed yet.
    MultipartUpload,
}

impl RedundancyJson {
    /// A bare `{"type": kind}`.
    pub fn kind(kind: impl Into<String>) -> Self {
        RedundancyJson {
            kind: kind.into(),
            rep_count: None,
            k: None,
            n: None,
            chunk_size: None,
        }
    }

    /// From the coordinator's string: a JSON policy object, or a bare kind (empty → `none`).
    pub fn from_coordinator(s: &str) -> Self {
        if s.is_empty() {
            return RedundancyJson::kind("none");
        }
        if s.starts_with('{')
            && let Ok(r) = serde_json::from_str::<redundancy::ObjectRedundancy>(s)
        {
            return match r {
                redundancy::ObjectRedundancy::Stored(p) => p.into(),
                redundancy::ObjectRedundancy::MultipartUpload => {
                    RedundancyJson::kind("multipartUpload")
                }
            };
        }
        RedundancyJson::kind(s)
    }
}

impl From<redundancy::Policy> for RedundancyJson {
    fn from(p: redundancy::Policy) -> Self {
        match p {
            redundancy::Policy::None => RedundancyJson::kind("none"),
            redundancy::Policy::Rep { rep_count } => RedundancyJson {
                rep_count: Some(rep_count),
                ..RedundancyJson::kind("rep")
            },
            redundancy::Policy::Ec { k, n, chunk_size } => RedundancyJson {
                k: Some(k),
                n: Some(n),
                chunk_size: Some(chunk_size),
                ..RedundancyJson::kind("ec")
            },
        }
    }
}

/// `{objectID, packageID, path, size, fileHash, redundancy, createTime, updateTime}`;
/// `size` is a decimal string and `fileHash` is `Full` + upper-case hex SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ObjectJson {
    #[serde(rename = "objectID")]
    #[schema(minimum = 1)]
    pub object_id: u64,
    #[serde(rename = "packageID")]
    #[schema(minimum = 1)]
    pub package_id: u64,
    /// `/`-separated path inside the package.
    #[schema(min_length = 1, max_length = 1024)]
    pub path: String,
    /// Bytes, as a decimal string.
    #[schema(pattern = "^[0-9]+$")]
    pub size: String,
    /// `Full` + upper-case hex SHA-256 (all zeros for an unfinished multipart upload).
    #[serde(rename = "fileHash")]
    #[schema(pattern = "^Full[0-9A-F]{64}$")]
    pub file_hash: String,
    pub redundancy: RedundancyJson,
    /// RFC 3339, UTC, milliseconds.
    #[serde(rename = "createTime")]
    #[schema(format = DateTime)]
    pub create_time: String,
    /// RFC 3339, UTC, milliseconds.
    #[serde(rename = "updateTime")]
    #[schema(format = DateTime)]
    pub update_time: String,
}

impl From<pb::Object> for ObjectJson {
    /// Renders any redundancy string as `{"type": <string>}` (empty → `none`), and the
    /// hash as is (a multipart object's 64 zeros become `Full000…0`).
    fn from(o: pb::Object) -> Self {
        let redundancy = RedundancyJson::from_coordinator(&o.redundancy);
        ObjectJson {
            object_id: o.object_id,
            package_id: o.package_id,
            path: o.path,
            size: o.size.to_string(),
            file_hash: common::hash::file_hash_of_hex(&o.sha256),
            redundancy,
            create_time: rfc3339_ms(o.create_time_ms),
            update_time: rfc3339_ms(o.update_time_ms),
        }
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2025-06-24T08:31:28.514Z`. Out-of-range values
/// (which the coordinator never produces) render as the epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Unwrap a message the coordinator must always set.
pub(crate) fn required<T>(value: Option<T>, what: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::internal(format!("coordinator response has no {what}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_json_golden() {
        let o = pb::Object {
            object_id: 617,
            package_id: 12,
            path: "a/1.txt".into(),
            size: 1293,
            sha256: "4e69a8b8cd9f42ede371da94458badfb2308afca736aa393784a3d81f4746377".into(),
            redundancy: "none".into(),
            create_time_ms: 1_750_753_888_514,
            update_time_ms: 1_750_753_888_000,
            space_id: 3,
        };
        let json = serde_json::to_string(&ObjectJson::from(o)).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"{"objectID":617,"packageID":12,"path":"a/1.txt","size":"1293","#,
                r#""fileHash":"Full4E69A8B8CD9F42EDE371DA94458BADFB2308AFCA736AA393784A3D81F4746377","#,
                r#""redundancy":{"type":"none"},"createTime":"2025-06-24T08:31:28.514Z","#,
                r#""updateTime":"2025-06-24T08:31:28.000Z"}"#
            )
        );
    }

    #[test]
    fn empty_redundancy_renders_as_none() {
        let json = ObjectJson::from(pb::Object::default());
        assert_eq!(json.redundancy.kind, "none");
        assert_eq!(json.size, "0");
        assert_eq!(json.create_time, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn multipart_objects_render_their_redundancy_and_zero_hash() {
        let o = pb::Object {
            object_id: 1039,
            package_id: 3,
            path: "obj.txt".into(),
            size: 0,
            sha256: "0".repeat(64),
            redundancy: "multipartUpload".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(ObjectJson::from(o)).unwrap();
        assert_eq!(
            json["redundancy"],
            serde_json::json!({"type": "multipartUpload"})
        );
        assert_eq!(json["fileHash"], format!("Full{}", "0".repeat(64)));
        assert_eq!(json["size"], "0");
    }

    #[test]
    fn bucket_and_package_golden() {
        let b = pb::Bucket {
            bucket_id: 1,
            name: "bkt1".into(),
            user_id: 1,
            create_time_ms: 5,
        };
        assert_eq!(
            serde_json::to_string(&BucketJson::from(b)).unwrap(),
            r#"{"bucketID":1,"name":"bkt1"}"#
        );
        let p = pb::Package {
            package_id: 32,
            name: "t1".into(),
            bucket_id: 1,
            create_time_ms: 1_750_753_888_514,
            redundancy_json: r#"{"type":"rep","repCount":2}"#.into(),
        };
        assert_eq!(
            serde_json::to_string(&PackageJson::from(p)).unwrap(),
            r#"{"packageID":32,"name":"t1","bucketID":1,"createTime":"2025-06-24T08:31:28.514Z","redundancy":{"type":"rep","repCount":2}}"#
        );
    }

    #[test]
    fn ec_objects_render_their_policy() {
        let o = pb::Object {
            redundancy: r#"{"type":"ec","k":4,"n":6,"chunkSize":1048576}"#.into(),
            ..Default::default()
        };
        let json = serde_json::to_value(ObjectJson::from(o)).unwrap();
        assert_eq!(
            json["redundancy"],
            serde_json::json!({"type": "ec", "k": 4, "n": 6, "chunkSize": 1048576})
        );
    }

    #[test]
    fn times_are_valid_rfc3339() {
        for ms in [0, 1, 999, 1_000, -1, 253_402_300_799_999, i64::MAX] {
            let s = rfc3339_ms(ms);
            assert!(DateTime::parse_from_rfc3339(&s).is_ok(), "{ms} → {s}");
        }
    }
}
