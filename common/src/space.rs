//! User spaces as the `/v1/userSpace` API describes them: where the data lives
//! (`storage`), how to get in (`credential`), whether the space stores shards
//! (`shardStore`), and the root inside it (`workingDir`). Shared by the gateway (JSON),
//! the coordinator (validation, persistence) and the agent (building the backend).
//!
//! JSON field names follow the API document: `{"type": "S3", "region": …, "endpoint": …,
//! "bucket": …}`, credentials `{"type": "S3", "accessKeyId": …, "secretAccessKey": …}`.

use serde::{Deserialize, Serialize};

/// Where a user space's data lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Storage {
    /// A directory on the machine of the agent named `location`.
    Local {
        /// Name of the agent whose machine holds `path`. May be omitted when exactly one
        /// agent is registered.
        #[serde(default)]
        location: String,
        /// Absolute directory path on that machine.
        path: String,
    },
    /// Any S3-compatible service.
    S3 {
        #[serde(default)]
        region: String,
        endpoint: String,
        bucket: String,
        /// Address buckets as `https://host/bucket` (path style, the default) rather than
        /// `https://bucket.host`.
        #[serde(default = "yes", rename = "pathStyle")]
        path_style: bool,
    },
    /// Huawei Cloud OBS.
    OBS {
        #[serde(default)]
        region: String,
        endpoint: String,
        bucket: String,
        #[serde(default, rename = "projectID")]
        project_id: String,
    },
    /// Alibaba Cloud OSS.
    OSS {
        #[serde(default)]
        region: String,
        endpoint: String,
        bucket: String,
    },
    /// Tencent Cloud COS.
    COS {
        #[serde(default)]
        region: String,
        endpoint: String,
        bucket: String,
    },
}

fn yes() -> bool {
    true
}

/// How to authenticate to a [`Storage`]; the type must match the storage's.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Credential {
    Local {},
    S3 {
        #[serde(rename = "accessKeyId")]
        access_key_id: String,
        #[serde(rename = "secretAccessKey")]
        secret_access_key: String,
    },
    OBS {
        #[serde(rename = "accessKeyId")]
        access_key_id: String,
        #[serde(rename = "secretAccessKey")]
        secret_access_key: String,
    },
    OSS {
        #[serde(rename = "accessKeyId")]
        access_key_id: String,
        #[serde(rename = "secretAccessKey")]
        secret_access_key: String,
    },
    COS {
        #[serde(rename = "accessKeyId")]
        access_key_id: String,
        #[serde(rename = "secretAccessKey")]
        secret_access_key: String,
    },
}

/// Never prints secrets.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(&self.masked()).unwrap_or_default())
    }
}

/// What API responses show instead of a secret.
pub const MASK: &str = "******";

impl Credential {
    pub fn type_name(&self) -> &'static str {
        match self {
            Credential::Local {} => "Local",
            Credential::S3 { .. } => "S3",
            Credential::OBS { .. } => "OBS",
            Credential::OSS { .. } => "OSS",
            Credential::COS { .. } => "COS",
        }
    }

    /// The access key id and secret, for the cloud types.
    pub fn keys(&self) -> Option<(&str, &str)> {
        match self {
            Credential::Local {} => None,
            Credential::S3 {
                access_key_id,
                secret_access_key,
            }
            | Credential::OBS {
                access_key_id,
                secret_access_key,
            }
            | Credential::OSS {
                access_key_id,
                secret_access_key,
            }
            | Credential::COS {
                access_key_id,
                secret_access_key,
            } => Some((access_key_id, secret_access_key)),
        }
    }

    /// The same credential with the secret replaced by [`MASK`] (the access key id stays,
    /// so users can tell credentials apart).
    pub fn masked(&self) -> Credential {
        let mut c = self.clone();
        match &mut c {
            Credential::Local {} => {}
            Credential::S3 {
                secret_access_key, ..
            }
            | Credential::OBS {
                secret_access_key, ..
            }
            | Credential::OSS {
                secret_access_key, ..
            }
            | Credential::COS {
                secret_access_key, ..
            } => {
                if !secret_access_key.is_empty() {
                    *secret_access_key = MASK.to_owned();
                }
            }
        }
        c
    }
}

impl Storage {
    pub fn type_name(&self) -> &'static str {
        match self {
            Storage::Local { .. } => "Local",
            Storage::S3 { .. } => "S3",
            Storage::OBS { .. } => "OBS",
            Storage::OSS { .. } => "OSS",
            Storage::COS { .. } => "COS",
        }
    }

    /// Check required values; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        let require = |field: &str, value: &str| {
            if value.trim().is_empty() {
                Err(format!("storage.{field} is empty"))
            } else {
                Ok(())
            }
        };
        match self {
            Storage::Local { path, .. } => {
                require("path", path)?;
                if !path.starts_with('/') {
                    return Err(format!(
                        "storage.path {path:?} must be an absolute directory"
                    ));
                }
                Ok(())
            }
            Storage::S3 {
                endpoint, bucket, ..
            }
            | Storage::OBS {
                endpoint, bucket, ..
            }
            | Storage::OSS {
                endpoint, bucket, ..
            }
            | Storage::COS {
                endpoint, bucket, ..
            } => {
                require("endpoint", endpoint)?;
                require("bucket", bucket)?;
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(format!(
                        "storage.endpoint {endpoint:?} must start with http:// or https://"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// Check that `credential` fits `storage` and has its values.
pub fn validate_pair(storage: &Storage, credential: &Credential) -> Result<(), String> {
    storage.validate()?;
    if storage.type_name() != credential.type_name() {
        return Err(format!(
            "credential.type {:?} does not match storage.type {:?}",
            credential.type_name(),
            storage.type_name()
        ));
    }
    if let Some((id, secret)) = credential.keys() {
        if id.trim().is_empty() {
            return Err("credential.accessKeyId is empty".into());
        }
        if secret.is_empty() {
            return Err("credential.secretAccessKey is empty".into());
        }
    }
    Ok(())
}

/// Check a `workingDir`: relative, `/`-separated, no `..` (empty = the storage's root).
pub fn validate_working_dir(dir: &str) -> Result<(), String> {
    if dir.is_empty() {
        return Ok(());
    }
    let trimmed = dir.trim_matches('/');
    if trimmed.split('/').any(|s| s == ".." || s == ".") || dir.contains("//") || dir.contains('\\')
    {
        return Err(format!(
            "workingDir {dir:?} must not contain '.', '..', '//' or '\\'"
        ));
    }
    Ok(())
}

/// `shardStore`: present when the space stores objects' shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ShardStore {
    /// Most bytes of shards the space may hold; 0 = unlimited.
    #[serde(rename = "maxSize", default)]
    pub max_size: u64,
}

/// A user space as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserSpace {
    #[serde(rename = "userSpaceID")]
    pub user_space_id: u64,
    pub name: String,
    pub storage: Storage,
    pub credential: Credential,
    #[serde(rename = "shardStore")]
    pub shard_store: Option<ShardStore>,
    #[serde(default)]
    pub features: Vec<serde_json::Value>,
    #[serde(rename = "workingDir", default)]
    pub working_dir: String,
    pub revision: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(json: &str) -> Result<Storage, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn unknown_type_and_missing_fields_name_the_problem() {
        let e = storage(r#"{"type":"FTP","endpoint":"x"}"#).unwrap_err();
        assert!(e.contains("FTP"), "{e}");
        let e = storage(r#"{"type":"S3","endpoint":"http://h"}"#).unwrap_err();
        assert!(e.contains("bucket"), "{e}");
        let e =
            storage(r#"{"type":"S3","endpoint":"http://h","bucket":"b","buckt":"x"}"#).unwrap_err();
        assert!(e.contains("buckt"), "{e}");
    }

    #[test]
    fn obs_example_of_the_api_document_parses() {
        let s = storage(r#"{"type":"OBS","region":"cn-north-4","endpoint":"https://obs.example","bucket":"b","projectID":"p"}"#).unwrap();
        assert_eq!(s.type_name(), "OBS");
        assert!(s.validate().is_ok());
        let c: Credential =
            serde_json::from_str(r#"{"type":"OBS","accessKeyId":"AK","secretAccessKey":"SK"}"#)
                .unwrap();
        assert!(validate_pair(&s, &c).is_ok());
    }

    #[test]
    fn validation_names_the_field() {
        let s = storage(r#"{"type":"S3","endpoint":"","bucket":"b"}"#).unwrap();
        assert!(s.validate().unwrap_err().contains("storage.endpoint"));
        let s = storage(r#"{"type":"Local","path":"relative"}"#).unwrap();
        assert!(s.validate().unwrap_err().contains("storage.path"));
        let s = storage(r#"{"type":"S3","endpoint":"http://h","bucket":"b"}"#).unwrap();
        let c: Credential =
            serde_json::from_str(r#"{"type":"OSS","accessKeyId":"a","secretAccessKey":"s"}"#)
                .unwrap();
        assert!(
            validate_pair(&s, &c)
                .unwrap_err()
                .contains("credential.type")
        );
        let c: Credential =
            serde_json::from_str(r#"{"type":"S3","accessKeyId":"a","secretAccessKey":""}"#)
                .unwrap();
        assert!(
            validate_pair(&s, &c)
                .unwrap_err()
                .contains("secretAccessKey")
        );
        assert!(validate_working_dir("a/../b").is_err());
        assert!(validate_working_dir("jcs/work").is_ok());
    }

    #[test]
    fn masking_hides_only_the_secret() {
        let c: Credential =
            serde_json::from_str(r#"{"type":"S3","accessKeyId":"AK","secretAccessKey":"SK"}"#)
                .unwrap();
        let json = serde_json::to_string(&c.masked()).unwrap();
        assert_eq!(
            json,
            r#"{"type":"S3","accessKeyId":"AK","secretAccessKey":"******"}"#
        );
        assert!(!format!("{c:?}").contains("SK"));
    }
}
