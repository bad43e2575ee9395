//! S3-style listing by path: exact match, prefix, or one "directory" level with entries
//! below the next `/` folded into common prefixes. Pages are bounded by `max_keys`
//! (objects + prefixes) and continue from an opaque token that encodes the last entry
//! returned, so a page never repeats or skips an entry that exists across both calls, even
//! while other clients write.

use common::PackageId;

use super::object::MAX_LIST_LIMIT;
use super::rows::ObjectRow;
use super::{Catalog, decode, keys};
use crate::error::{Result, bad};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListByPath {
    pub path: String,
    pub is_prefix: bool,
    pub no_recursive: bool,
    pub max_keys: usize,
    pub continuation_token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<ObjectRow>,
    pub common_prefixes: Vec<String>,
    pub is_truncated: bool,
    pub next_continuation_token: String,
}

/// Where the previous page stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    /// After this object path.
    Object(String),
    /// After every path under this common prefix.
    Prefix(String),
}

const TOKEN_VERSION: &str = "v1";

fn encode_token(r: &Resume) -> String {
    let text = match r {
        Resume::Object(p) => format!("{TOKEN_VERSION}:o:{p}"),
        Resume::Prefix(p) => format!("{TOKEN_VERSION}:p:{p}"),
    };
    hex::encode(text)
}

fn decode_token(token: &str, prefix: &str) -> Result<Resume> {
    let invalid = || {
        bad(format!(
            "continuationToken {token:?} is not a token from a previous listing of this path"
        ))
    };
    let bytes = hex::decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let rest = text.strip_prefix("v1:").ok_or_else(invalid)?;
    let resume = if let Some(p) = rest.strip_prefix("o:") {
        Resume::Object(p.to_owned())
    } else if let Some(p) = rest.strip_prefix("p:") {
        Resume::Prefix(p.to_owned())
    } else {
        return Err(invalid());
    };
    let (Resume::Object(p) | Resume::Prefix(p)) = &resume;
    if !p.starts_with(prefix) {
        return Err(invalid());
    }
    Ok(resume)
}

impl Catalog {
    pub async fn list_by_path(&self, package: PackageId, req: &ListByPath) -> Result<ListPage> {
        self.get_package(package).await?;
        if !req.is_prefix {
            if req.path.is_empty() {
                return Err(bad("path is empty; give an object path, or set isPrefix"));
            }
            let obj = self
                .get_row::<ObjectRow>(&keys::object(package, &req.path))
                .await?;
            return Ok(ListPage {
                objects: obj.map(|o| o.row).into_iter().collect(),
                ..ListPage::default()
            });
        }
        let max = if req.max_keys == 0 {
            MAX_LIST_LIMIT
        } else {
            req.max_keys.min(MAX_LIST_LIMIT)
        };
        let prefix = req.path.as_str();
        let end = meta::prefix_end(&keys::object(package, prefix));
        let mut start = if req.continuation_token.is_empty() {
            keys::object(package, prefix)
        } else {
            match decode_token(&req.continuation_token, prefix)? {
                Resume::Object(p) => {
                    let mut k = keys::object(package, &p);
                    k.push(0);
                    k
                }
                Resume::Prefix(p) => meta::prefix_end(&keys::object(package, &p)),
            }
        };
        let mut page = ListPage::default();
        let mut last: Option<Resume> = None;
        let key_prefix_len = keys::object_prefix(package).len();
        'scan: while page.objects.len() + page.common_prefixes.len() < max {
            if !end.is_empty() && start >= end {
                break;
            }
            let want = max - page.objects.len() - page.common_prefixes.len();
            let range = self
                .meta
                .range(meta::Range {
                    start: start.clone(),
                    end: end.clone(),
                    limit: want,
                    keys_only: false,
                })
                .await?;
            for kv in &range.kvs {
                let path = std::str::from_utf8(&kv.key[key_prefix_len..]).unwrap_or_default();
                if req.no_recursive
                    && let Some(i) = path[prefix.len()..].find('/')
                {
                    let cp = path[..prefix.len() + i + 1].to_owned();
                    start = meta::prefix_end(&keys::object(package, &cp));
                    page.common_prefixes.push(cp.clone());
                    last = Some(Resume::Prefix(cp));
                    // Everything under this prefix is folded: continue after it.
                    continue 'scan;
                }
                let row: ObjectRow = decode(kv)?;
                last = Some(Resume::Object(row.path.clone()));
                page.objects.push(row);
                let mut next = kv.key.clone();
                next.push(0);
                start = next;
            }
            if !range.more {
                break;
            }
        }
        // Truncated when the page is full and at least one more entry follows.
        if page.objects.len() + page.common_prefixes.len() >= max && (end.is_empty() || start < end)
        {
            let probe = self
                .meta
                .range(meta::Range {
                    start: start.clone(),
                    end: end.clone(),
                    limit: 1,
                    keys_only: true,
                })
                .await?;
            if !probe.kvs.is_empty()
                && let Some(last) = &last
            {
                page.is_truncated = true;
                page.next_continuation_token = encode_token(last);
            }
        }
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::{SpaceId, UserId};

    use super::*;

    async fn setup(paths: &[&str]) -> (Catalog, PackageId) {
        let c = Catalog::new(Arc::new(meta::MemoryStore::new()));
        let b = c.create_bucket(UserId(1), "b").await.unwrap();
        let p = c.create_package(b.bucket_id, "p").await.unwrap().package_id;
        for path in paths {
            let up = c.begin_upload(p, path, SpaceId(1), i64::MAX).await.unwrap();
            c.commit_upload(&up, 1, &"a".repeat(64)).await.unwrap();
        }
        (c, p)
    }

    fn req(path: &str, no_recursive: bool, max_keys: usize, token: &str) -> ListByPath {
        ListByPath {
            path: path.into(),
            is_prefix: true,
            no_recursive,
            max_keys,
            continuation_token: token.into(),
        }
    }

    fn names(p: &ListPage) -> Vec<String> {
        let mut v: Vec<String> = p.common_prefixes.clone();
        v.extend(p.objects.iter().map(|o| o.path.clone()));
        v
    }

    const TREE: &[&str] = &[
        "a/1.txt", "a/2.txt", "a/b/x", "a/b/y", "a/c/z", "a/d", "b/1", "top",
    ];

    #[tokio::test]
    async fn exact_path_lists_one_or_nothing() {
        let (c, p) = setup(TREE).await;
        let exact = ListByPath {
            path: "a/d".into(),
            ..Default::default()
        };
        assert_eq!(names(&c.list_by_path(p, &exact).await.unwrap()), ["a/d"]);
        let missing = ListByPath {
            path: "a".into(),
            ..Default::default()
        };
        assert!(
            c.list_by_path(p, &missing)
                .await
                .unwrap()
                .objects
                .is_empty()
        );
    }

    #[tokio::test]
    async fn folding_produces_common_prefixes() {
        let (c, p) = setup(TREE).await;
        let page = c.list_by_path(p, &req("a/", true, 0, "")).await.unwrap();
        assert_eq!(page.common_prefixes, ["a/b/", "a/c/"]);
        assert_eq!(
            page.objects
                .iter()
                .map(|o| o.path.as_str())
                .collect::<Vec<_>>(),
            ["a/1.txt", "a/2.txt", "a/d"]
        );
        assert!(!page.is_truncated);
        let root = c.list_by_path(p, &req("", true, 0, "")).await.unwrap();
        assert_eq!(root.common_prefixes, ["a/", "b/"]);
        assert_eq!(root.objects.len(), 1);
    }

    #[tokio::test]
    async fn pages_of_every_size_walk_each_entry_once() {
        let (c, p) = setup(TREE).await;
        for no_recursive in [false, true] {
            let all = names(
                &c.list_by_path(p, &req("", no_recursive, 0, ""))
                    .await
                    .unwrap(),
            );
            for size in 1..=all.len() + 1 {
                let mut seen = Vec::new();
                let mut token = String::new();
                loop {
                    let page = c
                        .list_by_path(p, &req("", no_recursive, size, &token))
                        .await
                        .unwrap();
                    assert!(names(&page).len() <= size);
                    seen.extend(names(&page));
                    if !page.is_truncated {
                        break;
                    }
                    token = page.next_continuation_token;
                }
                let mut expected = all.clone();
                expected.sort();
                seen.sort();
                assert_eq!(seen, expected, "size {size} no_recursive {no_recursive}");
            }
        }
    }

    #[tokio::test]
    async fn writes_between_pages_never_cause_repeats_or_skips() {
        let initial: Vec<String> = (0..40).map(|i| format!("k{i:03}")).collect();
        let refs: Vec<&str> = initial.iter().map(String::as_str).collect();
        let (c, p) = setup(&refs).await;
        let mut seen: Vec<String> = Vec::new();
        let mut token = String::new();
        let mut round = 0;
        loop {
            let page = c.list_by_path(p, &req("", false, 7, &token)).await.unwrap();
            seen.extend(names(&page));
            if !page.is_truncated {
                break;
            }
            token = page.next_continuation_token;
            // Between pages: add entries before and after the cursor, replace one ahead.
            round += 1;
            for path in [
                format!("a-new-{round}"),
                format!("k{:03}-x{round}", 10 * round),
                format!("z-new-{round}"),
            ] {
                let up = c
                    .begin_upload(p, &path, SpaceId(1), i64::MAX)
                    .await
                    .unwrap();
                c.commit_upload(&up, 1, &"e".repeat(64)).await.unwrap();
            }
            let up = c
                .begin_upload(p, "k039", SpaceId(1), i64::MAX)
                .await
                .unwrap();
            c.commit_upload(&up, 2, &"f".repeat(64)).await.unwrap();
        }
        let mut dedup = seen.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(
            dedup.len(),
            seen.len(),
            "no entry is listed twice: {seen:?}"
        );
        for path in &initial {
            assert!(
                seen.contains(path),
                "{path} existed throughout but was skipped"
            );
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "pages continue in key order"
        );
        assert!(
            seen.iter().any(|s| s.starts_with("z-new")),
            "entries added ahead of the cursor appear"
        );
        assert!(
            !seen.iter().any(|s| s.starts_with("a-new")),
            "entries behind the cursor do not"
        );
    }

    #[tokio::test]
    async fn bad_tokens_are_bad_arguments() {
        let (c, p) = setup(TREE).await;
        for token in [
            "zz",
            "abcd",
            &hex::encode("v1:x:a"),
            &hex::encode("v1:o:b/1"),
        ] {
            let err = c
                .list_by_path(p, &req("a/", false, 0, token))
                .await
                .unwrap_err();
            assert!(
                matches!(err, crate::Error::InvalidArgument { .. }),
                "{token}: {err}"
            );
        }
    }
}
