//! The [`crate::MetaStore`] conformance suite: every backend must pass the same cases.
//!
//! Instantiate it with [`crate::meta_store_test_suite!`], passing an expression that evaluates
//! to a future of `Option<MetaStoreRef>` (it is expanded, and so evaluated, once per case).
//! `None` means the fixture is unavailable: the case prints a skip line and passes. Factories
//! for shared fixtures must refuse to skip in CI, as [`etcd_from_env`] does.
//!
//! Each case runs on its own [`Prefixed`] namespace with a random root, so cases can share one
//! etcd and run in parallel. Cases therefore never assert on the absolute store revision, only
//! on revisions they observed themselves: other cases write concurrently.
//!
//! Semantics pinned here (checked against etcd 3.4):
//! - a branch runs its ops in order; a `Get` sees earlier writes of the same branch;
//! - a branch may not put one key twice, nor put and delete one key (`DuplicateTxnKey`);
//! - `ModRev(key, Revision(0))` holds for an absent key; `Value` never holds for one;
//! - ranges treat an empty `end` as "to the end", and `end <= start` as empty.

use std::future::Future;
use std::time::Duration;

use crate::error::Result;
use crate::{
    EtcdOptions, EtcdStore, KeyValue, MetaStore, MetaStoreRef, Page, Prefixed, Range, Revision,
    Txn, TxnResult,
};

/// Env var with comma-separated etcd endpoints for tests (`http://127.0.0.1:2379`).
pub const ETCD_ENDPOINTS_ENV: &str = "JCS_TEST_ETCD_ENDPOINTS";
/// Env var that, set to `1`/`true`, turns a missing etcd fixture into a failure.
pub const REQUIRE_ETCD_ENV: &str = "JCS_TEST_REQUIRE_ETCD";

/// Expands to one `#[tokio::test]` per conformance case, each running on the store produced
/// by `$factory` (a future of `Option<MetaStoreRef>`, evaluated once per case).
///
/// ```ignore
/// meta::meta_store_test_suite!(async { Some(Arc::new(MemoryStore::new()) as MetaStoreRef) });
/// ```
#[macro_export]
macro_rules! meta_store_test_suite {
    ($factory:expr) => {
        $crate::meta_store_test_suite!(@cases ($factory)
            get_missing_returns_none
            put_then_get_returns_value_and_revisions
            revisions_increase_strictly
            delete_reports_existence
            range_returns_keys_in_order
            range_with_limit_pages_with_more_flag
            range_end_is_exclusive
            scan_prefix_walks_all_pages
            keys_only_range_omits_values
            txn_absent_compare_creates_once
            txn_modrev_compare_detects_concurrent_write
            txn_value_compare
            txn_failure_runs_otherwise_branch_and_returns_gets
            txn_get_sees_earlier_writes_of_its_branch
            txn_rejects_duplicate_writes_to_one_key
            txn_too_large_is_rejected_and_writes_nothing
            put_if_absent_rejects_existing_key
            cas_with_stale_revision_fails
            concurrent_cas_increments_exactly
            prefixed_store_isolates_namespaces
            create_leased_elects_one_holder_until_revoked
            fenced_writes_fail_once_the_fence_moves
        );
    };
    (@cases ($factory:expr) $($case:ident)*) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $crate::testsuite::prepare(stringify!($case), $factory).await;
                if let Some(store) = store {
                    $crate::testsuite::cases::$case(store).await;
                }
            }
        )*
    };
}

/// Await the factory; wrap its store in a fresh random namespace, or print a skip line.
pub async fn prepare(
    case: &str,
    factory: impl Future<Output = Option<MetaStoreRef>>,
) -> Option<MetaStoreRef> {
    match factory.await {
        Some(store) => Some(isolate(store)),
        None => {
            skip(&format!("{case}: store fixture unavailable"));
            None
        }
    }
}

/// `store` confined to a random namespace `jcs-test/<uuid>/`.
pub fn isolate(store: MetaStoreRef) -> MetaStoreRef {
    let root = format!("jcs-test/{}/", uuid::Uuid::new_v4().simple());
    std::sync::Arc::new(Prefixed::new(root, store))
}

#[allow(clippy::print_stderr)] // the skip line is the point
fn skip(reason: &str) {
    eprintln!("skipped: {reason}");
}

fn env_flag(name: &str) -> bool {
    std::env::var(name)
        .is_ok_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true"))
}

/// Options for the shared test etcd from `JCS_TEST_ETCD_ENDPOINTS`. When the variable is
/// missing this prints `skipped: JCS_TEST_ETCD_ENDPOINTS not set` and returns `None`, unless
/// `CI=true` or `JCS_TEST_REQUIRE_ETCD=1`, where it panics: no silent skips in CI.
pub fn etcd_options_from_env() -> Option<EtcdOptions> {
    let endpoints: Vec<String> = std::env::var(ETCD_ENDPOINTS_ENV)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        if env_flag("CI") || env_flag(REQUIRE_ETCD_ENV) {
            panic!(
                "{ETCD_ENDPOINTS_ENV} is not set but etcd is required (CI=true or \
                 {REQUIRE_ETCD_ENV}=1): start etcd and export its endpoints"
            );
        }
        skip(&format!("{ETCD_ENDPOINTS_ENV} not set"));
        return None;
    }
    Some(EtcdOptions {
        endpoints,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(10),
    })
}

/// The shared test etcd (see [`etcd_options_from_env`] for when it skips or panics). A set
/// but unreachable endpoint always panics.
pub async fn etcd_from_env() -> Option<MetaStoreRef> {
    let opts = etcd_options_from_env()?;
    let endpoints = opts.endpoints.join(",");
    match EtcdStore::connect(opts).await {
        Ok(store) => Some(std::sync::Arc::new(store)),
        Err(e) => panic!(
            "{ETCD_ENDPOINTS_ENV}={endpoints} is set but etcd is unreachable: {}",
            common::error::ErrorChain(&e)
        ),
    }
}

/// A store that keeps `guard` (a temp dir, a child process) alive as long as itself.
pub struct Guarded<G> {
    inner: MetaStoreRef,
    _guard: G,
}

impl<G> Guarded<G> {
    /// Delegate to `inner`; drop `guard` after it.
    pub fn new(inner: MetaStoreRef, guard: G) -> Guarded<G> {
        Guarded {
            inner,
            _guard: guard,
        }
    }
}

#[async_trait::async_trait]
impl<G: Send + Sync + 'static> MetaStore for Guarded<G> {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }
    async fn range(&self, range: Range) -> Result<Page> {
        self.inner.range(range).await
    }
    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<Revision> {
        self.inner.put(key, value).await
    }
    async fn delete(&self, key: &[u8]) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        self.inner.txn(txn).await
    }
    fn max_txn_ops(&self) -> usize {
        self.inner.max_txn_ops()
    }

    async fn lease_grant(&self, ttl: std::time::Duration) -> Result<crate::LeaseId> {
        self.inner.lease_grant(ttl).await
    }

    async fn lease_keep_alive(&self, lease: crate::LeaseId) -> Result<bool> {
        self.inner.lease_keep_alive(lease).await
    }

    async fn lease_revoke(&self, lease: crate::LeaseId) -> Result<()> {
        self.inner.lease_revoke(lease).await
    }

    async fn create_leased(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        lease: crate::LeaseId,
    ) -> Result<Option<Revision>> {
        self.inner.create_leased(key, value, lease).await
    }
}

/// The cases, each named after the behaviour it checks. Each takes a store whose key space is
/// empty and its own. Add a case here *and* to the list in [`crate::meta_store_test_suite!`].
pub mod cases {
    use std::sync::Arc;

    use futures::TryStreamExt;

    use crate::{
        Compare, Error, KeyValue, MetaStoreRef, Op, Prefixed, Range, Revision, Txn, cas,
        put_if_absent, scan_prefix,
    };

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    async fn put(store: &MetaStoreRef, key: &[u8], value: &[u8]) -> Revision {
        store.put(key.to_vec(), value.to_vec()).await.expect("put")
    }

    async fn get(store: &MetaStoreRef, key: &[u8]) -> Option<KeyValue> {
        store.get(key).await.expect("get")
    }

    async fn all(store: &MetaStoreRef) -> Vec<KeyValue> {
        store
            .range(Range::default())
            .await
            .expect("range everything")
            .kvs
    }

    fn keys(kvs: &[KeyValue]) -> Vec<Vec<u8>> {
        kvs.iter().map(|kv| kv.key.clone()).collect()
    }

    fn range(start: &[u8], end: &[u8], limit: usize) -> Range {
        Range {
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
            keys_only: false,
        }
    }

    fn txn(when: Vec<Compare>, then: Vec<Op>, otherwise: Vec<Op>) -> Txn {
        Txn {
            when,
            then,
            otherwise,
        }
    }

    pub async fn get_missing_returns_none(store: MetaStoreRef) {
        assert_eq!(get(&store, b"missing").await, None);
        assert_eq!(get(&store, b"\xff").await, None);
    }

    pub async fn put_then_get_returns_value_and_revisions(store: MetaStoreRef) {
        let r1 = put(&store, b"k", b"v1").await;
        assert!(r1 > Revision(0), "{r1:?}");
        let kv = get(&store, b"k").await.expect("k exists");
        assert_eq!(
            kv,
            KeyValue {
                key: b("k"),
                value: b("v1"),
                create_rev: r1,
                mod_rev: r1
            }
        );

        let r2 = put(&store, b"k", b"v2").await;
        assert!(r2 > r1);
        let kv = get(&store, b"k").await.expect("k exists");
        assert_eq!(
            kv,
            KeyValue {
                key: b("k"),
                value: b("v2"),
                create_rev: r1,
                mod_rev: r2
            }
        );

        // Recreated after a delete: a new life, a new create revision.
        assert!(store.delete(b"k").await.expect("delete"));
        let r3 = put(&store, b"k", b"").await;
        assert!(r3 > r2);
        let kv = get(&store, b"k").await.expect("k exists");
        assert_eq!(
            kv,
            KeyValue {
                key: b("k"),
                value: vec![],
                create_rev: r3,
                mod_rev: r3
            }
        );
    }

    pub async fn revisions_increase_strictly(store: MetaStoreRef) {
        let mut last = Revision(0);
        for i in 0..10 {
            let rev = put(&store, format!("k{}", i % 3).as_bytes(), b"v").await;
            assert!(rev > last, "put {i} got {rev:?} after {last:?}");
            last = rev;
        }
        let result = store
            .txn(txn(
                vec![],
                vec![Op::Put(b("a"), b("1")), Op::Put(b("b"), b("2"))],
                vec![],
            ))
            .await
            .expect("txn");
        assert!(result.revision > last);
        // Every write of one txn carries the txn's single revision.
        let a = get(&store, b"a").await.expect("a exists");
        let b_kv = get(&store, b"b").await.expect("b exists");
        assert_eq!(
            (a.mod_rev, b_kv.mod_rev),
            (result.revision, result.revision)
        );
    }

    pub async fn delete_reports_existence(store: MetaStoreRef) {
        assert!(!store.delete(b"k").await.expect("delete missing"));
        put(&store, b"k", b"v").await;
        assert!(store.delete(b"k").await.expect("delete existing"));
        assert_eq!(get(&store, b"k").await, None);
        assert!(!store.delete(b"k").await.expect("delete again"));
    }

    pub async fn range_returns_keys_in_order(store: MetaStoreRef) {
        let sorted: Vec<Vec<u8>> = [
            &b"\x00"[..],
            b"\x00\x00",
            b"\x01",
            b"a",
            b"a\x00",
            b"ab",
            b"a\x7f",
            b"a\xff",
            b"\xfe",
            b"\xff",
            b"\xff\x00",
            b"\xff\xff",
        ]
        .iter()
        .map(|k| k.to_vec())
        .collect();
        // Insert in an order unrelated to the sorted one.
        for i in [7, 3, 11, 0, 9, 5, 1, 10, 2, 8, 4, 6] {
            put(&store, &sorted[i], &sorted[i]).await;
        }
        let kvs = all(&store).await;
        assert_eq!(keys(&kvs), sorted);
        assert!(kvs.iter().all(|kv| kv.key == kv.value));

        let a = store.range(Range::prefix(b("a"))).await.expect("range a");
        assert_eq!(keys(&a.kvs), sorted[3..8].to_vec());
        // The prefix end of `\xff` is "to the end", which stays inside the namespace.
        let ff = store
            .range(Range::prefix(b"\xff".to_vec()))
            .await
            .expect("range ff");
        assert_eq!(keys(&ff.kvs), sorted[9..].to_vec());
        assert!(!ff.more);
    }

    pub async fn range_with_limit_pages_with_more_flag(store: MetaStoreRef) {
        for i in 0..5 {
            put(&store, format!("k{i}").as_bytes(), b"v").await;
        }
        let page = store.range(range(b"k", b"l", 2)).await.expect("page 1");
        assert_eq!(keys(&page.kvs), vec![b("k0"), b("k1")]);
        assert!(page.more);
        let page = store
            .range(range(b"k1\x00", b"l", 2))
            .await
            .expect("page 2");
        assert_eq!(keys(&page.kvs), vec![b("k2"), b("k3")]);
        assert!(page.more);
        let page = store
            .range(range(b"k3\x00", b"l", 2))
            .await
            .expect("page 3");
        assert_eq!(keys(&page.kvs), vec![b("k4")]);
        assert!(!page.more);

        let exact = store.range(range(b"k", b"", 5)).await.expect("exact limit");
        assert_eq!(exact.kvs.len(), 5);
        assert!(!exact.more, "no key remains past an exactly full page");
        let unlimited = store.range(range(b"", b"", 0)).await.expect("no limit");
        assert_eq!(unlimited.kvs.len(), 5);
        assert!(!unlimited.more);
    }

    pub async fn range_end_is_exclusive(store: MetaStoreRef) {
        for k in ["a", "b", "c"] {
            put(&store, k.as_bytes(), b"v").await;
        }
        let cases = [
            ("a", "c", vec!["a", "b"]),
            ("a", "b", vec!["a"]),
            ("a", "b\0", vec!["a", "b"]),
            ("b", "", vec!["b", "c"]),
            ("b", "b", vec![]),
            ("c", "a", vec![]),
        ];
        for (start, end, expected) in cases {
            let page = store
                .range(range(start.as_bytes(), end.as_bytes(), 0))
                .await
                .expect("range");
            let expected: Vec<Vec<u8>> = expected.into_iter().map(b).collect();
            assert_eq!(keys(&page.kvs), expected, "[{start:?}, {end:?})");
            assert!(!page.more);
        }
    }

    pub async fn scan_prefix_walks_all_pages(store: MetaStoreRef) {
        const KEYS: usize = 2500;
        let batch = store.max_txn_ops();
        let all_keys: Vec<Vec<u8>> = (0..KEYS)
            .map(|i| format!("scan/{i:05}").into_bytes())
            .collect();
        for chunk in all_keys.chunks(batch) {
            let ops = chunk
                .iter()
                .map(|k| Op::Put(k.clone(), k.clone()))
                .collect();
            store
                .txn(txn(vec![], ops, vec![]))
                .await
                .expect("load batch");
        }
        // Neighbours just outside the prefix.
        put(&store, b"scan", b"").await;
        put(&store, b"scan0", b"").await;

        let scanned: Vec<KeyValue> = scan_prefix(store.clone(), b("scan/"), 1000)
            .try_collect()
            .await
            .expect("scan");
        assert_eq!(scanned.len(), KEYS);
        assert!(
            keys(&scanned) == all_keys,
            "scan returned the keys out of order"
        );
        assert!(scanned.iter().all(|kv| kv.key == kv.value));

        let unpaged: Vec<KeyValue> = scan_prefix(store.clone(), b("scan/01"), 0)
            .try_collect()
            .await
            .expect("scan");
        assert_eq!(unpaged.len(), 1000);
        assert!(
            keys(&unpaged) == all_keys[1000..2000],
            "unpaged scan returned other keys"
        );
        let none: Vec<KeyValue> = scan_prefix(store, b("nothing/"), 10)
            .try_collect()
            .await
            .expect("scan");
        assert!(none.is_empty());
    }

    pub async fn keys_only_range_omits_values(store: MetaStoreRef) {
        let r1 = put(&store, b"a", b"value a").await;
        let r2 = put(&store, b"b", b"value b").await;
        let page = store
            .range(Range {
                keys_only: true,
                ..Range::default()
            })
            .await
            .expect("keys only");
        let expected = vec![
            KeyValue {
                key: b("a"),
                value: vec![],
                create_rev: r1,
                mod_rev: r1,
            },
            KeyValue {
                key: b("b"),
                value: vec![],
                create_rev: r2,
                mod_rev: r2,
            },
        ];
        assert_eq!(page.kvs, expected);
    }

    pub async fn txn_absent_compare_creates_once(store: MetaStoreRef) {
        let create = |value: &str| {
            txn(
                vec![Compare::Absent(b("k"))],
                vec![Op::Put(b("k"), b(value))],
                vec![],
            )
        };
        let first = store.txn(create("first")).await.expect("txn 1");
        assert!(first.succeeded);
        let second = store.txn(create("second")).await.expect("txn 2");
        assert!(!second.succeeded);
        let kv = get(&store, b"k").await.expect("k exists");
        assert_eq!(kv.value, b("first"));
        assert_eq!(kv.mod_rev, first.revision);
    }

    pub async fn txn_modrev_compare_detects_concurrent_write(store: MetaStoreRef) {
        let seen = put(&store, b"k", b"v1").await;
        let theirs = put(&store, b"k", b"theirs").await;
        let mine = |rev| {
            txn(
                vec![Compare::ModRev(b("k"), rev)],
                vec![Op::Put(b("k"), b("mine"))],
                vec![],
            )
        };

        assert!(!store.txn(mine(seen)).await.expect("stale txn").succeeded);
        assert_eq!(get(&store, b"k").await.expect("k").value, b("theirs"));
        let result = store.txn(mine(theirs)).await.expect("fresh txn");
        assert!(result.succeeded);
        assert!(result.revision > theirs);
        assert_eq!(get(&store, b"k").await.expect("k").value, b("mine"));

        // As in etcd, an absent key compares as modified at revision 0.
        let absent = txn(
            vec![Compare::ModRev(b("missing"), Revision(0))],
            vec![],
            vec![],
        );
        assert!(store.txn(absent).await.expect("absent txn").succeeded);
        let absent = txn(vec![Compare::ModRev(b("missing"), theirs)], vec![], vec![]);
        assert!(!store.txn(absent).await.expect("absent txn").succeeded);
    }

    pub async fn txn_value_compare(store: MetaStoreRef) {
        put(&store, b"k", b"v").await;
        put(&store, b"empty", b"").await;
        let check =
            |key: &str, value: &str| txn(vec![Compare::Value(b(key), b(value))], vec![], vec![]);
        let cases = [
            (("k", "v"), true),
            (("k", "other"), false),
            (("k", ""), false),
            (("empty", ""), true),
            // A value compare on an absent key never holds, even against "".
            (("missing", ""), false),
        ];
        for ((key, value), expected) in cases {
            let result = store.txn(check(key, value)).await.expect("txn");
            assert_eq!(result.succeeded, expected, "{key} == {value:?}");
        }
        // All compares must hold.
        let both = txn(
            vec![Compare::Value(b("k"), b("v")), Compare::Absent(b("k"))],
            vec![Op::Put(b("k"), b("changed"))],
            vec![],
        );
        assert!(!store.txn(both).await.expect("txn").succeeded);
        assert_eq!(get(&store, b"k").await.expect("k").value, b("v"));
    }

    pub async fn txn_failure_runs_otherwise_branch_and_returns_gets(store: MetaStoreRef) {
        let created = put(&store, b"existing", b"e").await;
        let result = store
            .txn(txn(
                vec![Compare::Absent(b("existing"))],
                vec![Op::Put(b("then"), b("t")), Op::Get(b("existing"))],
                vec![
                    Op::Get(b("existing")),
                    Op::Put(b("otherwise"), b("o")),
                    Op::Get(b("missing")),
                ],
            ))
            .await
            .expect("txn");
        assert!(!result.succeeded);
        let existing = KeyValue {
            key: b("existing"),
            value: b("e"),
            create_rev: created,
            mod_rev: created,
        };
        assert_eq!(result.gets, vec![Some(existing), None]);
        assert_eq!(get(&store, b"then").await, None);
        let otherwise = get(&store, b"otherwise")
            .await
            .expect("otherwise branch wrote");
        assert_eq!(otherwise.mod_rev, result.revision);
    }

    pub async fn txn_get_sees_earlier_writes_of_its_branch(store: MetaStoreRef) {
        let created = put(&store, b"k", b"old").await;
        put(&store, b"gone", b"g").await;
        let result = store
            .txn(txn(
                vec![],
                vec![
                    Op::Get(b("k")),
                    Op::Put(b("k"), b("new")),
                    Op::Get(b("k")),
                    Op::Delete(b("gone")),
                    Op::Get(b("gone")),
                    Op::Put(b("fresh"), b("f")),
                    Op::Get(b("fresh")),
                ],
                vec![],
            ))
            .await
            .expect("txn");
        assert!(result.succeeded);
        let rev = result.revision;
        let kv = |key: &str, value: &str, create_rev, mod_rev| {
            Some(KeyValue {
                key: b(key),
                value: b(value),
                create_rev,
                mod_rev,
            })
        };
        assert_eq!(
            result.gets,
            vec![
                kv("k", "old", created, created),
                kv("k", "new", created, rev),
                None,
                kv("fresh", "f", rev, rev),
            ]
        );
    }

    pub async fn txn_rejects_duplicate_writes_to_one_key(store: MetaStoreRef) {
        put(&store, b"k", b"v").await;
        let rejected = [
            vec![Op::Put(b("k"), b("1")), Op::Put(b("k"), b("2"))],
            vec![Op::Put(b("k"), b("1")), Op::Delete(b("k"))],
            vec![
                Op::Delete(b("k")),
                Op::Put(b("other"), b("1")),
                Op::Put(b("k"), b("2")),
            ],
        ];
        for ops in rejected {
            let err = store
                .txn(txn(vec![], ops.clone(), vec![]))
                .await
                .expect_err("duplicate");
            assert!(
                matches!(err, Error::DuplicateTxnKey { .. }),
                "{ops:?}: {err:?}"
            );
            // The otherwise branch is checked too, even when it would not run.
            let err = store
                .txn(txn(vec![], vec![], ops))
                .await
                .expect_err("duplicate");
            assert!(matches!(err, Error::DuplicateTxnKey { .. }), "{err:?}");
        }
        assert_eq!(keys(&all(&store).await), vec![b("k")]);
        assert_eq!(get(&store, b"k").await.expect("k").value, b("v"));

        // Deleting one key twice is allowed.
        let ops = vec![Op::Delete(b("k")), Op::Delete(b("k"))];
        assert!(
            store
                .txn(txn(vec![], ops, vec![]))
                .await
                .expect("double delete")
                .succeeded
        );
        assert_eq!(get(&store, b"k").await, None);
    }

    pub async fn txn_too_large_is_rejected_and_writes_nothing(store: MetaStoreRef) {
        let max = store.max_txn_ops();
        assert!(max >= 1);
        let puts = |n: usize| -> Vec<Op> {
            (0..n)
                .map(|i| Op::Put(format!("k{i:04}").into_bytes(), b("v")))
                .collect()
        };
        let too_many_then = txn(vec![], puts(max + 1), vec![]);
        let err = store.txn(too_many_then).await.expect_err("too large");
        assert!(
            matches!(err, Error::TxnTooLarge { ops, max: m, .. } if ops == max + 1 && m == max),
            "{err:?}"
        );
        let too_many_otherwise = txn(vec![Compare::Absent(b("x"))], vec![], puts(max + 1));
        assert!(matches!(
            store.txn(too_many_otherwise).await,
            Err(Error::TxnTooLarge { .. })
        ));
        let compares = (0..=max)
            .map(|i| Compare::Absent(format!("c{i}").into_bytes()))
            .collect();
        let too_many_compares = txn(compares, puts(1), vec![]);
        assert!(matches!(
            store.txn(too_many_compares).await,
            Err(Error::TxnTooLarge { .. })
        ));
        assert!(
            all(&store).await.is_empty(),
            "a rejected txn wrote something"
        );

        let at_limit = store
            .txn(txn(vec![], puts(max), vec![]))
            .await
            .expect("max-sized txn");
        assert!(at_limit.succeeded);
        assert_eq!(all(&store).await.len(), max);
    }

    pub async fn put_if_absent_rejects_existing_key(store: MetaStoreRef) {
        assert!(
            put_if_absent(&*store, b("k"), b("first"))
                .await
                .expect("first")
        );
        assert!(
            !put_if_absent(&*store, b("k"), b("second"))
                .await
                .expect("second")
        );
        assert_eq!(get(&store, b"k").await.expect("k").value, b("first"));
        assert!(store.delete(b"k").await.expect("delete"));
        assert!(
            put_if_absent(&*store, b("k"), b("third"))
                .await
                .expect("after delete")
        );
    }

    pub async fn cas_with_stale_revision_fails(store: MetaStoreRef) {
        assert!(
            cas(&*store, b("k"), Revision(0), b("v1"))
                .await
                .expect("create")
        );
        assert!(
            !cas(&*store, b("k"), Revision(0), b("again"))
                .await
                .expect("create again")
        );
        let v1 = get(&store, b"k").await.expect("k");
        assert!(
            cas(&*store, b("k"), v1.mod_rev, b("v2"))
                .await
                .expect("swap")
        );
        assert!(
            !cas(&*store, b("k"), v1.mod_rev, b("v3"))
                .await
                .expect("stale swap")
        );
        let v2 = get(&store, b"k").await.expect("k");
        assert_eq!(v2.value, b("v2"));
        assert_eq!(v2.create_rev, v1.create_rev);
        assert!(
            !cas(&*store, b("missing"), v2.mod_rev, b("x"))
                .await
                .expect("missing key")
        );
        assert_eq!(get(&store, b"missing").await, None);
    }

    pub async fn concurrent_cas_increments_exactly(store: MetaStoreRef) {
        const TASKS: u64 = 8;
        const INCREMENTS: u64 = 10;
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    for _ in 0..INCREMENTS {
                        loop {
                            let (value, rev) = match get(&store, b"counter").await {
                                Some(kv) => {
                                    let text = String::from_utf8(kv.value).expect("utf-8 counter");
                                    (text.parse::<u64>().expect("numeric counter"), kv.mod_rev)
                                }
                                None => (0, Revision(0)),
                            };
                            let next = (value + 1).to_string().into_bytes();
                            if cas(&*store, b("counter"), rev, next).await.expect("cas") {
                                break;
                            }
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("increment task");
        }
        let counter = get(&store, b"counter").await.expect("counter exists");
        assert_eq!(counter.value, (TASKS * INCREMENTS).to_string().into_bytes());
    }

    pub async fn prefixed_store_isolates_namespaces(store: MetaStoreRef) {
        let one: MetaStoreRef = Arc::new(Prefixed::new("t1/", store.clone()));
        let ten: MetaStoreRef = Arc::new(Prefixed::new("t10/", store.clone()));
        assert_eq!(one.backend(), store.backend());
        assert_eq!(one.max_txn_ops(), store.max_txn_ops());
        put(&one, b"k", b"one").await;
        put(&ten, b"k", b"ten").await;
        put(&store, b"t1", b"just outside").await;
        put(&store, b"t2", b"after t1/").await;

        let k = get(&one, b"k").await.expect("k in t1/");
        assert_eq!((k.key, k.value), (b("k"), b("one")));
        assert_eq!(get(&ten, b"k").await.expect("k in t10/").value, b("ten"));
        assert_eq!(keys(&all(&one).await), vec![b("k")]);
        assert_eq!(keys(&all(&ten).await), vec![b("k")]);
        let tail = one
            .range(range(b"a", b"", 0))
            .await
            .expect("open-ended range");
        assert_eq!(keys(&tail.kvs), vec![b("k")]);
        assert_eq!(
            keys(&all(&store).await),
            vec![b("t1"), b("t1/k"), b("t10/k"), b("t2")],
            "the outer store sees full keys"
        );

        let result = one
            .txn(txn(
                vec![Compare::Value(b("k"), b("one"))],
                vec![
                    Op::Put(b("n"), b("new")),
                    Op::Get(b("n")),
                    Op::Delete(b("k")),
                ],
                vec![],
            ))
            .await
            .expect("txn in t1/");
        assert!(result.succeeded);
        assert_eq!(
            result.gets[0].as_ref().map(|kv| kv.key.clone()),
            Some(b("n"))
        );
        assert_eq!(
            get(&ten, b"k").await.expect("t10/k untouched").value,
            b("ten")
        );
        assert!(!one.delete(b"k").await.expect("delete"));
        assert_eq!(get(&store, b"t1/n").await.expect("t1/n").value, b("new"));
    }

    pub async fn create_leased_elects_one_holder_until_revoked(store: MetaStoreRef) {
        let ttl = std::time::Duration::from_secs(5);
        let la = store.lease_grant(ttl).await.expect("grant a");
        let lb = store.lease_grant(ttl).await.expect("grant b");
        assert_ne!(la, lb);
        let rev = store
            .create_leased(b("leader"), b("a"), la)
            .await
            .expect("create a");
        let rev = rev.expect("the first candidate creates the key");
        assert_eq!(
            store
                .create_leased(b("leader"), b("b"), lb)
                .await
                .expect("create b"),
            None,
            "a second candidate finds the key held"
        );
        let kv = get(&store, b"leader").await.expect("leader key");
        assert_eq!((kv.value, kv.mod_rev), (b("a"), rev));
        assert!(store.lease_keep_alive(la).await.expect("keep alive"));
        store.lease_revoke(la).await.expect("revoke a");
        assert_eq!(
            get(&store, b"leader").await,
            None,
            "revoking deletes the key"
        );
        assert!(
            !store
                .lease_keep_alive(la)
                .await
                .expect("keep alive revoked")
        );
        assert!(
            store
                .create_leased(b("leader"), b("b"), lb)
                .await
                .expect("create b again")
                .is_some(),
            "the next candidate takes over"
        );
        assert_eq!(get(&store, b"leader").await.expect("leader").value, b("b"));
        store.lease_revoke(lb).await.expect("revoke b");
        store
            .lease_revoke(lb)
            .await
            .expect("revoking twice is fine");
    }

    pub async fn fenced_writes_fail_once_the_fence_moves(store: MetaStoreRef) {
        let rev = put(&store, b"leader", b"me").await;
        let fenced: MetaStoreRef = Arc::new(crate::Fenced::new(
            store.clone(),
            crate::Fence {
                key: b("leader"),
                revision: rev,
            },
        ));
        fenced
            .put(b("x"), b("1"))
            .await
            .expect("fenced put while leading");
        let r = fenced
            .txn(txn(
                vec![Compare::Absent(b("x"))],
                vec![Op::Put(b("y"), b("1"))],
                vec![Op::Get(b("x"))],
            ))
            .await
            .expect("a txn whose own compare fails is no fence error");
        assert!(!r.succeeded);
        assert_eq!(r.gets.len(), 1, "the fence read is not returned");
        assert_eq!(r.gets[0].as_ref().map(|kv| kv.value.clone()), Some(b("1")));
        assert!(fenced.delete(b"x").await.expect("fenced delete"));

        // Another node takes the key over: every write of the old holder fails, atomically.
        put(&store, b"leader", b"other").await;
        let fence_err = |e: crate::Error| {
            assert!(matches!(e, crate::Error::Fenced { .. }), "{e:?}");
            assert_eq!(common::CodedError::code(&e), common::ErrorCode::NotLeader);
        };
        fence_err(fenced.put(b("x"), b("2")).await.expect_err("put fenced"));
        fence_err(fenced.delete(b"leader").await.expect_err("delete fenced"));
        fence_err(
            fenced
                .txn(txn(vec![], vec![Op::Put(b("z"), b("1"))], vec![]))
                .await
                .expect_err("txn fenced"),
        );
        assert_eq!(get(&store, b"x").await, None);
        assert_eq!(get(&store, b"z").await, None);
        assert_eq!(
            get(&store, b"leader").await.expect("leader").value,
            b("other")
        );
        assert!(
            fenced.get(b"leader").await.expect("reads pass").is_some(),
            "reads are not fenced"
        );
    }
}
