//! Agents and the user spaces they serve, as persisted rows. Liveness is not stored here:
//! it lives in memory ([`crate::registry`]) and is rebuilt from heartbeats.

use common::{AgentId, SpaceId};
use meta::{Compare, Op, Txn};

use super::rows::{AgentRow, SpaceRow, VERSION};
use super::{Catalog, MAX_ATTEMPTS, decode, decode_id, encode, keys};
use crate::error::{Error, Result, bad};

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
            let row = SpaceRow {
                v: VERSION,
                space_id: id,
                name: decl.name.clone(),
                storage_type: decl.storage_type.clone(),
                path: decl.path.clone(),
                agent_id: agent,
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
