//! Agents and the user spaces they serve, as persisted rows. Liveness is not stored here:
//! it lives in memory ([`crate::registry`]) and is rebuilt from heartbeats.

use common::{AgentId, SpaceId};
use meta::{Compare, Op, Txn};

use super::rows::{AgentRow, SpaceRow, VERSION};
use super::{Catalog, MAX_ATTEMPTS, decode, decode_id, encode, keys};
use common::space::{Credential, ShardStore, Storage};

use crate::crypto::CredentialCipher;
use crate::error::{Error, Result, bad, exists, not_found};

/// What an agent declares about one space it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceDecl {
    pub name: String,
    pub storage_type: String,
    pub path: String,
}

impl Catalog {
    /// Create or update the agent named `name`; returns its row.
    pub async fn upsert_agent(&self, name: &str, address: &str) -> Result<AgentRow> {
        common::path::validate_name("agent", name).map_err(bad)?;
        if address.is_empty() {
            return Err(bad("agent address is empty"));
        }
        for _ in 0..MAX_ATTEMPTS {
            let name_key = keys::agent_name(name);
            match self.meta.get(&name_key).await? {
                Some(kv) => {
                    let id = AgentId(decode_id(&kv)?);
                    let key = keys::agent(id);
                    let current = self.get_row::<AgentRow>(&key).await?;
                    let row = AgentRow {
                        v: VERSION,
                        agent_id: id,
                        name: name.to_owned(),
                        address: address.to_owned(),
                    };
                    match current {
                        Some(c) if c.row == row => return Ok(row),
                        Some(c) => {
                            let res = self
                                .meta
                                .txn(Txn {
                                    when: vec![Compare::ModRev(key.clone(), c.rev)],
                                    then: vec![Op::Put(key, encode(&row))],
                                    otherwise: vec![],
                                })
                                .await?;
                            if res.succeeded {
                                return Ok(row);
                            }
                        }
                        None => {
                            self.meta.put(key, encode(&row)).await?;
                            return Ok(row);
                        }
                    }
                }
                None => {
                    let id = AgentId(self.ids.next("agent").await?);
                    let row = AgentRow {
                        v: VERSION,
                        agent_id: id,
                        name: name.to_owned(),
                        address: address.to_owned(),
                    };
                    let res = self
                        .meta
                        .txn(Txn {
                            when: vec![Compare::Absent(name_key.clone())],
                            then: vec![
                                Op::Put(keys::agent(id), encode(&row)),
                                Op::Put(name_key, encode(&id.0)),
                            ],
                            otherwise: vec![],
                        })
                        .await?;
                    if res.succeeded {
                        return Ok(row);
                    }
                }
            }
        }
        Err(Error::Contention {
            what: format!("agent {name}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Create or update the user space `decl.name`, served by `agent`.
    pub async fn upsert_space(&self, agent: AgentId, decl: &SpaceDecl) -> Result<SpaceRow> {
        common::path::validate_name("user space", &decl.name).map_err(bad)?;
        if decl.storage_type != "Local" {
            return Err(bad(format!(
                "storage type {:?} of space {:?} is not supported by agents yet (only Local)",
                decl.storage_type, decl.name
            )));
        }
        for _ in 0..MAX_ATTEMPTS {
            let name_key = keys::space_name(&decl.name);
            let (id, current) = match self.meta.get(&name_key).await? {
                Some(kv) => {
                    let id = SpaceId(decode_id(&kv)?);
                    (id, self.get_row::<SpaceRow>(&keys::space(id)).await?)
                }
                None => (SpaceId(self.ids.next("space").await?), None),
            };
            if let Some(c) = current.as_ref().filter(|c| !c.row.declared) {
                return Err(bad(format!(
                    "user space name {:?} is taken by user space {} created through the API",
                    decl.name, c.row.space_id
                )));
            }
            let row = SpaceRow {
                v: VERSION,
                space_id: id,
                name: decl.name.clone(),
                storage_type: decl.storage_type.clone(),
                path: decl.path.clone(),
                agent_id: agent,
                declared: true,
                storage: None,
                credential_enc: String::new(),
                working_dir: String::new(),
                shard_store: Some(ShardStore { max_size: 0 }),
                features: Vec::new(),
                revision: current.as_ref().map_or(1, |c| c.row.revision),
            };
            let txn = match &current {
                Some(c) if c.row == row => return Ok(row),
                Some(c) => {
                    if c.row.agent_id != agent {
                        tracing::warn!(space = %decl.name, from = %c.row.agent_id, to = %agent, "user space moves to another agent");
                    }
                    Txn {
                        when: vec![Compare::ModRev(keys::space(id), c.rev)],
                        then: vec![Op::Put(keys::space(id), encode(&row))],
                        otherwise: vec![],
                    }
                }
                None => Txn {
                    when: vec![Compare::Absent(name_key.clone())],
                    then: vec![
                        Op::Put(keys::space(id), encode(&row)),
                        Op::Put(name_key, encode(&id.0)),
                    ],
                    otherwise: vec![],
                },
            };
            if self.meta.txn(txn).await?.succeeded {
                return Ok(row);
            }
        }
        Err(Error::Contention {
            what: format!("user space {}", decl.name),
            attempts: MAX_ATTEMPTS,
        })
    }

    pub async fn get_space(&self, id: SpaceId) -> Result<Option<SpaceRow>> {
        Ok(self
            .get_row::<SpaceRow>(&keys::space(id))
            .await?
            .map(|v| v.row))
    }

    pub async fn get_agent(&self, id: AgentId) -> Result<Option<AgentRow>> {
        Ok(self
            .get_row::<AgentRow>(&keys::agent(id))
            .await?
            .map(|v| v.row))
    }

    pub async fn list_spaces(&self) -> Result<Vec<SpaceRow>> {
        self.scan(keys::space_prefix())
            .await?
            .iter()
            .map(decode)
            .collect()
    }

    pub async fn list_agents(&self) -> Result<Vec<AgentRow>> {
        self.scan(keys::agent_prefix())
            .await?
            .iter()
            .map(decode)
            .collect()
    }
}

/// What `/v1/userSpace/create` asks for (the API's JSON).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct CreateSpec {
    pub name: String,
    pub storage: Storage,
    pub credential: Credential,
    #[serde(rename = "shardStore", default)]
    pub shard_store: Option<ShardStore>,
    #[serde(default)]
    pub features: Vec<serde_json::Value>,
    #[serde(rename = "workingDir", default)]
    pub working_dir: String,
}

impl CreateSpec {
    pub fn validate(&self) -> Result<()> {
        common::path::validate_name("user space", &self.name).map_err(bad)?;
        common::space::validate_pair(&self.storage, &self.credential).map_err(bad)?;
        common::space::validate_working_dir(&self.working_dir).map_err(bad)
    }
}

impl SpaceRow {
    /// The storage of this space (declared spaces are Local directories).
    pub fn storage(&self, agent_name: &str) -> Storage {
        self.storage.clone().unwrap_or_else(|| Storage::Local {
            location: agent_name.to_owned(),
            path: self.path.clone(),
        })
    }

    pub fn credential(&self, cipher: &CredentialCipher) -> Result<Credential> {
        if self.declared {
            return Ok(Credential::Local {});
        }
        let plain = cipher.decrypt(&self.credential_enc).ok_or_else(|| Error::Startup {
            message: format!(
                "the credential of user space {} cannot be decrypted (was the cluster secret changed?)",
                self.space_id
            ),
        })?;
        serde_json::from_slice(&plain).map_err(|e| Error::Startup {
            message: format!(
                "the credential of user space {} is corrupt: {e}",
                self.space_id
            ),
        })
    }

    /// The API's view, secret masked.
    pub fn to_api(
        &self,
        agent_name: &str,
        cipher: &CredentialCipher,
    ) -> Result<common::space::UserSpace> {
        Ok(common::space::UserSpace {
            user_space_id: self.space_id.0,
            name: self.name.clone(),
            storage: self.storage(agent_name),
            credential: self.credential(cipher)?.masked(),
            shard_store: self.shard_store,
            features: self.features.clone(),
            working_dir: self.working_dir.clone(),
            revision: self.revision,
        })
    }

    /// Whether new shards may be placed here.
    pub fn stores_shards(&self) -> bool {
        self.shard_store.is_some()
    }
}

impl Catalog {
    /// Create a user space served by `agent`.
    pub async fn create_user_space(
        &self,
        spec: &CreateSpec,
        agent: AgentId,
        cipher: &CredentialCipher,
    ) -> Result<SpaceRow> {
        spec.validate()?;
        let id = SpaceId(self.ids.next("space").await?);
        let credential = serde_json::to_vec(&spec.credential).map_err(|e| bad(e.to_string()))?;
        let row = SpaceRow {
            v: VERSION,
            space_id: id,
            name: spec.name.clone(),
            storage_type: spec.storage.type_name().to_owned(),
            path: String::new(),
            agent_id: agent,
            declared: false,
            storage: Some(spec.storage.clone()),
            credential_enc: cipher.encrypt(&credential),
            working_dir: spec.working_dir.clone(),
            shard_store: spec.shard_store,
            features: spec.features.clone(),
            revision: 1,
        };
        let name_key = keys::space_name(&spec.name);
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::Absent(name_key.clone())],
                then: vec![
                    Op::Put(keys::space(id), encode(&row)),
                    Op::Put(name_key, encode(&id.0)),
                ],
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            return Err(exists(format!("user space {:?}", spec.name)));
        }
        Ok(row)
    }

    /// Change the name and/or credential of an API-created space; revision + 1.
    pub async fn update_user_space(
        &self,
        id: SpaceId,
        name: &str,
        credential: &Credential,
        cipher: &CredentialCipher,
    ) -> Result<SpaceRow> {
        common::path::validate_name("user space", name).map_err(bad)?;
        for _ in 0..MAX_ATTEMPTS {
            let cur = self
                .get_row::<SpaceRow>(&keys::space(id))
                .await?
                .ok_or_else(|| not_found(format!("user space {id}")))?;
            if cur.row.declared {
                return Err(bad(format!(
                    "user space {id} is declared in an agent's config; change it there"
                )));
            }
            if let Some(storage) = &cur.row.storage {
                common::space::validate_pair(storage, credential).map_err(bad)?;
            }
            let plain = serde_json::to_vec(credential).map_err(|e| bad(e.to_string()))?;
            let row = SpaceRow {
                name: name.to_owned(),
                credential_enc: cipher.encrypt(&plain),
                revision: cur.row.revision + 1,
                ..cur.row.clone()
            };
            let mut when = vec![Compare::ModRev(keys::space(id), cur.rev)];
            let mut then = vec![Op::Put(keys::space(id), encode(&row))];
            if name != cur.row.name {
                when.push(Compare::Absent(keys::space_name(name)));
                then.push(Op::Delete(keys::space_name(&cur.row.name)));
                then.push(Op::Put(keys::space_name(name), encode(&id.0)));
            }
            let res = self
                .meta
                .txn(Txn {
                    when,
                    then,
                    otherwise: vec![Op::Get(keys::space_name(name))],
                })
                .await?;
            if res.succeeded {
                return Ok(row);
            }
            if name != cur.row.name && matches!(res.gets.first(), Some(Some(_))) {
                return Err(exists(format!("user space {name:?}")));
            }
        }
        Err(Error::Contention {
            what: format!("user space {id}"),
            attempts: MAX_ATTEMPTS,
        })
    }

    /// Delete an API-created space. OK when it does not exist; refused while any object or
    /// part still references a shard in it, and for spaces declared by agents.
    pub async fn delete_user_space(&self, id: SpaceId) -> Result<()> {
        let Some(cur) = self.get_row::<SpaceRow>(&keys::space(id)).await? else {
            return Ok(());
        };
        if cur.row.declared {
            return Err(bad(format!(
                "user space {id} is declared in an agent's config; remove it there"
            )));
        }
        let refs = self
            .meta
            .range(meta::Range {
                limit: 1,
                keys_only: true,
                ..meta::Range::prefix(format!("v1/shard-ref/{}/", id.key()).into_bytes())
            })
            .await?;
        if !refs.kvs.is_empty() {
            return Err(Error::InUse {
                what: format!("user space {id}"),
                reason: "it still holds shards of objects; delete or move those objects first"
                    .into(),
            });
        }
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(keys::space(id), cur.rev)],
                then: vec![
                    Op::Delete(keys::space(id)),
                    Op::Delete(keys::space_name(&cur.row.name)),
                ],
                otherwise: vec![],
            })
            .await?;
        if !res.succeeded {
            return Err(Error::Contention {
                what: format!("user space {id}"),
                attempts: 1,
            });
        }
        Ok(())
    }

    /// Move an API-created space to another agent (its agent is down).
    pub async fn reassign_space(
        &self,
        id: SpaceId,
        from: AgentId,
        to: AgentId,
    ) -> Result<SpaceRow> {
        let cur = self
            .get_row::<SpaceRow>(&keys::space(id))
            .await?
            .ok_or_else(|| not_found(format!("user space {id}")))?;
        if cur.row.agent_id != from {
            return Ok(cur.row);
        }
        let row = SpaceRow {
            agent_id: to,
            ..cur.row.clone()
        };
        let res = self
            .meta
            .txn(Txn {
                when: vec![Compare::ModRev(keys::space(id), cur.rev)],
                then: vec![Op::Put(keys::space(id), encode(&row))],
                otherwise: vec![],
            })
            .await?;
        if res.succeeded {
            Ok(row)
        } else {
            self.get_space(id)
                .await?
                .ok_or_else(|| not_found(format!("user space {id}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::secret::Secret;

    use super::*;

    fn s3_spec(name: &str) -> CreateSpec {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "storage": {"type": "S3", "region": "r", "endpoint": "http://127.0.0.1:9", "bucket": "b"},
            "credential": {"type": "S3", "accessKeyId": "AK", "secretAccessKey": "TOPSECRET"},
            "shardStore": {"maxSize": 1024},
            "features": [],
            "workingDir": "jcs"
        }))
        .unwrap()
    }

    fn setup() -> (Catalog, CredentialCipher) {
        (
            Catalog::new(Arc::new(meta::MemoryStore::new())),
            CredentialCipher::new(&Secret::new("cluster")),
        )
    }

    #[tokio::test]
    async fn credentials_are_encrypted_at_rest_and_masked_in_the_api() {
        let (c, cipher) = setup();
        let row = c
            .create_user_space(&s3_spec("s3"), AgentId(1), &cipher)
            .await
            .unwrap();
        assert_eq!(row.revision, 1);
        let raw = c
            .meta
            .get(&keys::space(row.space_id))
            .await
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&raw.value).contains("TOPSECRET"));
        let api = serde_json::to_string(&row.to_api("a", &cipher).unwrap()).unwrap();
        assert!(
            !api.contains("TOPSECRET") && api.contains(common::space::MASK),
            "{api}"
        );
        assert_eq!(
            row.credential(&cipher).unwrap().keys(),
            Some(("AK", "TOPSECRET"))
        );
        assert!(matches!(
            c.create_user_space(&s3_spec("s3"), AgentId(1), &cipher)
                .await
                .unwrap_err(),
            Error::AlreadyExists { .. }
        ));
    }

    #[tokio::test]
    async fn update_renames_and_bumps_the_revision() {
        let (c, cipher) = setup();
        let row = c
            .create_user_space(&s3_spec("one"), AgentId(1), &cipher)
            .await
            .unwrap();
        c.create_user_space(&s3_spec("taken"), AgentId(1), &cipher)
            .await
            .unwrap();
        let cred: Credential = serde_json::from_value(
            serde_json::json!({"type": "S3", "accessKeyId": "AK2", "secretAccessKey": "S2"}),
        )
        .unwrap();
        let up = c
            .update_user_space(row.space_id, "two", &cred, &cipher)
            .await
            .unwrap();
        assert_eq!((up.revision, up.name.as_str()), (2, "two"));
        assert_eq!(up.credential(&cipher).unwrap().keys(), Some(("AK2", "S2")));
        assert!(
            c.meta
                .get(&keys::space_name("one"))
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            c.update_user_space(row.space_id, "taken", &cred, &cipher)
                .await
                .unwrap_err(),
            Error::AlreadyExists { .. }
        ));
        let wrong: Credential = serde_json::from_value(
            serde_json::json!({"type": "OSS", "accessKeyId": "a", "secretAccessKey": "s"}),
        )
        .unwrap();
        assert!(
            c.update_user_space(row.space_id, "two", &wrong, &cipher)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn delete_is_refused_while_shards_are_referenced() {
        let (c, cipher) = setup();
        let row = c
            .create_user_space(&s3_spec("s"), AgentId(1), &cipher)
            .await
            .unwrap();
        let r = keys::object_ref(row.space_id, &"a".repeat(64), common::ObjectId(9));
        c.meta.put(r.clone(), Vec::new()).await.unwrap();
        assert!(matches!(
            c.delete_user_space(row.space_id).await.unwrap_err(),
            Error::InUse { .. }
        ));
        c.meta.delete(&r).await.unwrap();
        c.delete_user_space(row.space_id).await.unwrap();
        assert!(c.get_space(row.space_id).await.unwrap().is_none());
        // Deleting again (or an id that never existed) is fine.
        c.delete_user_space(row.space_id).await.unwrap();
        c.delete_user_space(SpaceId(12345)).await.unwrap();
    }

    #[tokio::test]
    async fn declared_spaces_cannot_be_changed_through_the_api() {
        let (c, cipher) = setup();
        let decl = SpaceDecl {
            name: "local".into(),
            storage_type: "Local".into(),
            path: "/data".into(),
        };
        let row = c.upsert_space(AgentId(1), &decl).await.unwrap();
        assert!(row.declared && row.stores_shards());
        assert!(c.delete_user_space(row.space_id).await.is_err());
        assert!(
            c.update_user_space(row.space_id, "x", &Credential::Local {}, &cipher)
                .await
                .is_err()
        );
        // An API space's name cannot be claimed by an agent's declaration.
        c.create_user_space(&s3_spec("api"), AgentId(1), &cipher)
            .await
            .unwrap();
        let clash = SpaceDecl {
            name: "api".into(),
            ..decl
        };
        assert!(c.upsert_space(AgentId(1), &clash).await.is_err());
    }
}
