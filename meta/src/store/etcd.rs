//! [`EtcdStore`]: the clustered backend, over `etcd_client` (etcd 3.4+).
//!
//! Revisions are etcd's own (taken from response headers), so on a fresh cluster the first
//! write gets revision 2, not 1. Ranges page with `limit`/`more`; `get_stream` would need
//! etcd 3.7.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, KvClient, PutOptions,
    ResponseHeader, Txn as EtcdTxn, TxnOp, TxnOpResponse,
};
use snafu::{OptionExt, ResultExt};

use crate::error::{ConnectEtcdSnafu, DecodeEtcdResponseSnafu, EtcdRequestSnafu, Result};
use crate::store::{DEFAULT_MAX_TXN_OPS, check_txn};
use crate::{Compare, KeyValue, MetaStore, Op, Page, Range, Revision, Txn, TxnResult};

/// Largest gRPC response the client decodes: a 1000-key page of values in the small-KiB range
/// fits with room to spare (tonic's default is 4 MiB).
pub const ETCD_MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// How to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http://host:port` URLs of the cluster members.
    pub endpoints: Vec<String>,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on each request.
    pub request_timeout: Duration,
}

impl Default for EtcdOptions {
    fn default() -> EtcdOptions {
        EtcdOptions {
            endpoints: vec!["http://127.0.0.1:2379".to_owned()],
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
        }
    }
}

/// A [`MetaStore`] on etcd. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    /// Owns the endpoint set of the balanced channel `kv` uses; also serves leases.
    client: Client,
    kv: KvClient,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connect to etcd and make one read, so an unreachable cluster fails here rather than at
    /// the first real request.
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdStore> {
        let endpoints = opts.endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(opts.connect_timeout)
            .with_timeout(opts.request_timeout);
        let client = Client::connect(&opts.endpoints, Some(options))
            .await
            .context(ConnectEtcdSnafu {
                endpoints: endpoints.clone(),
            })?;
        let kv = client
            .kv_client()
            .max_decoding_message_size(ETCD_MAX_DECODING_MESSAGE_SIZE);
        kv.clone()
            .get(
                vec![0],
                Some(GetOptions::new().with_keys_only().with_limit(1)),
            )
            .await
            .context(ConnectEtcdSnafu {
                endpoints: endpoints.clone(),
            })?;
        tracing::info!(%endpoints, "connected to etcd");
        Ok(EtcdStore { client, kv })
    }
}

fn revision_of(action: &'static str, header: Option<&ResponseHeader>) -> Result<Revision> {
    let header = header.context(DecodeEtcdResponseSnafu {
        action,
        reason: "missing header",
    })?;
    Ok(Revision(header.revision()))
}

fn key_value(kv: etcd_client::KeyValue, keys_only: bool) -> KeyValue {
    let create_rev = Revision(kv.create_revision());
    let mod_rev = Revision(kv.mod_revision());
    let (key, value) = kv.into_key_value();
    let value = if keys_only { Vec::new() } else { value };
    KeyValue {
        key,
        value,
        create_rev,
        mod_rev,
    }
}

fn txn_op(op: Op) -> TxnOp {
    match op {
        Op::Get(key) => TxnOp::get(key, None),
        Op::Put(key, value) => TxnOp::put(key, value, None),
        Op::Delete(key) => TxnOp::delete(key, None),
    }
}

fn compare(compare: Compare) -> EtcdCompare {
    match compare {
        Compare::Absent(key) => EtcdCompare::create_revision(key, CompareOp::Equal, 0),
        Compare::ModRev(key, rev) => EtcdCompare::mod_revision(key, CompareOp::Equal, rev.0),
        Compare::Value(key, value) => EtcdCompare::value(key, CompareOp::Equal, value),
    }
}

#[async_trait::async_trait]
impl MetaStore for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let mut resp = self
            .kv
            .clone()
            .get(key, None)
            .await
            .context(EtcdRequestSnafu { action: "get" })?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .next()
            .map(|kv| key_value(kv, false)))
    }

    async fn range(&self, range: Range) -> Result<Page> {
        let mut options =
            GetOptions::new().with_limit(i64::try_from(range.limit).unwrap_or(i64::MAX));
        options = if range.end.is_empty() {
            options.with_from_key()
        } else {
            options.with_range(range.end)
        };
        if range.keys_only {
            options = options.with_keys_only();
        }
        // etcd has no empty key and rejects an empty range start; `[0]` selects the same keys.
        let start = if range.start.is_empty() {
            vec![0]
        } else {
            range.start
        };
        let mut resp = self
            .kv
            .clone()
            .get(start, Some(options))
            .await
            .context(EtcdRequestSnafu { action: "range" })?;
        let more = resp.more();
        let kvs = resp
            .take_kvs()
            .into_iter()
            .map(|kv| key_value(kv, range.keys_only))
            .collect();
        Ok(Page { kvs, more })
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision> {
        let resp = self
            .kv
            .clone()
            .put(key, value, None)
            .await
            .context(EtcdRequestSnafu { action: "put" })?;
        revision_of("put", resp.header())
    }

    async fn delete(&self, key: &[u8]) -> Result<bool> {
        let resp = self
            .kv
            .clone()
            .delete(key, None)
            .await
            .context(EtcdRequestSnafu { action: "delete" })?;
        Ok(resp.deleted() > 0)
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        check_txn(&txn, self.max_txn_ops())?;
        let request = EtcdTxn::new()
            .when(txn.when.into_iter().map(compare).collect::<Vec<_>>())
            .and_then(txn.then.into_iter().map(txn_op).collect::<Vec<_>>())
            .or_else(txn.otherwise.into_iter().map(txn_op).collect::<Vec<_>>());
        let resp = self
            .kv
            .clone()
            .txn(request)
            .await
            .context(EtcdRequestSnafu { action: "txn" })?;
        let revision = revision_of("txn", resp.header())?;
        let gets = resp
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(mut get) => Some(
                    get.take_kvs()
                        .into_iter()
                        .next()
                        .map(|kv| key_value(kv, false)),
                ),
                TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) | TxnOpResponse::Txn(_) => None,
            })
            .collect();
        Ok(TxnResult {
            succeeded: resp.succeeded(),
            revision,
            gets,
        })
    }

    fn max_txn_ops(&self) -> usize {
        DEFAULT_MAX_TXN_OPS
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<crate::LeaseId> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX).max(1)
            + i64::from(ttl.subsec_nanos() > 0);
        let resp =
            self.client
                .lease_client()
                .grant(secs, None)
                .await
                .context(EtcdRequestSnafu {
                    action: "lease grant",
                })?;
        Ok(crate::LeaseId(resp.id()))
    }

    async fn lease_keep_alive(&self, lease: crate::LeaseId) -> Result<bool> {
        match self.client.lease_client().keep_alive(lease.0).await {
            Ok((_keeper, _stream)) => Ok(true),
            // etcd-client reports an expired lease (TTL <= 0 in the answer) this way.
            Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
            Err(source) => Err(source).context(EtcdRequestSnafu {
                action: "lease keep-alive",
            }),
        }
    }

    async fn lease_revoke(&self, lease: crate::LeaseId) -> Result<()> {
        match self.client.lease_client().revoke(lease.0).await {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::GRpcStatus(status))
                if common::ErrorCode::from_grpc_code(status.code())
                    == common::ErrorCode::NotFound =>
            {
                Ok(())
            }
            Err(source) => Err(source).context(EtcdRequestSnafu {
                action: "lease revoke",
            }),
        }
    }

    async fn create_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: crate::LeaseId,
    ) -> Result<Option<Revision>> {
        let request = EtcdTxn::new()
            .when(vec![EtcdCompare::create_revision(
                key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then(vec![TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease.0)),
            )]);
        let resp = self
            .kv
            .clone()
            .txn(request)
            .await
            .context(EtcdRequestSnafu {
                action: "create leased",
            })?;
        let revision = revision_of("create leased", resp.header())?;
        Ok(resp.succeeded().then_some(revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::meta_store_test_suite!(crate::testsuite::etcd_from_env());

    /// `check_txn` rejects locally what etcd would reject; make sure the server agrees, so the
    /// local check neither hides nor invents a limit.
    #[tokio::test]
    async fn server_rejects_what_check_txn_rejects() {
        let Some(opts) = crate::testsuite::etcd_options_from_env() else {
            return;
        };
        let store = EtcdStore::connect(opts).await.unwrap();
        let root = format!("jcs-test/{}/", uuid::Uuid::new_v4().simple());
        let key = |k: &str| format!("{root}{k}").into_bytes();
        let raw = |ops: Vec<TxnOp>| {
            let mut kv = store.kv.clone();
            async move { kv.txn(EtcdTxn::new().and_then(ops)).await }
        };
        let put = |k: &str| TxnOp::put(key(k), "v", None);
        let delete = |k: &str| TxnOp::delete(key(k), None);

        assert!(raw(vec![put("a"), put("a")]).await.is_err(), "put twice");
        assert!(
            raw(vec![put("a"), delete("a")]).await.is_err(),
            "put and delete"
        );
        assert!(
            raw(vec![delete("a"), put("a")]).await.is_err(),
            "delete and put"
        );
        assert!(
            raw(vec![delete("a"), delete("a")]).await.is_ok(),
            "delete twice"
        );

        let puts = |n: usize| (0..n).map(|i| put(&format!("k{i}"))).collect::<Vec<_>>();
        let too_many = raw(puts(DEFAULT_MAX_TXN_OPS + 1)).await;
        assert!(too_many.is_err(), "etcd accepted more than --max-txn-ops");
        assert!(raw(puts(DEFAULT_MAX_TXN_OPS)).await.is_ok());
        let mut kv = store.kv.clone();
        kv.delete(
            key(""),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn connect_to_nothing_fails_as_unavailable() {
        use common::CodedError;
        // Port 1 on loopback: nothing listens there, so the probe read fails fast.
        let opts = EtcdOptions {
            endpoints: vec!["http://127.0.0.1:1".to_owned()],
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(500),
        };
        let err = EtcdStore::connect(opts).await.unwrap_err();
        assert!(matches!(err, crate::Error::ConnectEtcd { .. }), "{err:?}");
        assert!(err.code().is_retryable(), "{err:?} has code {}", err.code());
    }
}
