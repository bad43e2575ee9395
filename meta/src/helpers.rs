//! Helpers built on [`MetaStore`] that every backend shares.

use futures::{Stream, TryStreamExt, stream};

use crate::error::Result;
use crate::{Compare, KeyValue, MetaStore, MetaStoreRef, Op, Range, Revision, Txn};

/// Page size [`scan_prefix`] callers should use unless they have a reason not to.
pub const DEFAULT_SCAN_PAGE_SIZE: usize = 1000;

/// The exclusive end of the range of keys starting with `prefix` (etcd's "range end"): the
/// prefix with trailing `0xff` bytes dropped and its last byte incremented. An empty prefix,
/// or one made only of `0xff` bytes, has no such key: the result is empty, which
/// [`Range::end`] reads as "to the end of the key space".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    end
}

/// Create `key` with `value` unless it exists. Returns whether it was created.
pub async fn put_if_absent(store: &dyn MetaStore, key: Vec<u8>, value: Vec<u8>) -> Result<bool> {
    let txn = Txn {
        when: vec![Compare::Absent(key.clone())],
        then: vec![Op::Put(key, value)],
        otherwise: vec![],
    };
    Ok(store.txn(txn).await?.succeeded)
}

/// Write `value` to `key` if the key was last modified at `expected`; `Revision(0)` means
/// "the key must not exist". Returns whether the write happened.
pub async fn cas(
    store: &dyn MetaStore,
    key: Vec<u8>,
    expected: Revision,
    value: Vec<u8>,
) -> Result<bool> {
    let compare = if expected == Revision(0) {
        Compare::Absent(key.clone())
    } else {
        Compare::ModRev(key.clone(), expected)
    };
    let txn = Txn {
        when: vec![compare],
        then: vec![Op::Put(key, value)],
        otherwise: vec![],
    };
    Ok(store.txn(txn).await?.succeeded)
}

/// Every key starting with `prefix`, in key order, fetched `page_size` keys per request
/// (0 means one unbounded request). Each page is a separate read, so the scan is not a
/// snapshot: keys written behind the cursor during the scan are missed, keys ahead are seen.
pub fn scan_prefix(
    store: MetaStoreRef,
    prefix: Vec<u8>,
    page_size: usize,
) -> impl Stream<Item = Result<KeyValue>> + Send + 'static {
    let end = prefix_end(&prefix);
    // `None` once the last page has been fetched.
    let first: Option<Vec<u8>> = Some(prefix);
    stream::try_unfold(first, move |next_start| {
        let store = store.clone();
        let end = end.clone();
        async move {
            let Some(start) = next_start else {
                return Ok(None);
            };
            let page = store
                .range(Range {
                    start,
                    end,
                    limit: page_size,
                    keys_only: false,
                })
                .await?;
            let next = match page.kvs.last() {
                Some(last) if page.more => {
                    let mut after = last.key.clone();
                    after.push(0);
                    Some(after)
                }
                _ => None,
            };
            Ok(Some((stream::iter(page.kvs.into_iter().map(Ok)), next)))
        }
    })
    .try_flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b"b"),
            (b"/jcs/v1/", b"/jcs/v10"),
            (b"a\xff", b"b"),
            (b"a\xfe\xff\xff", b"a\xff"),
            (b"\x00", b"\x01"),
            (b"\xff", b""),
            (b"\xff\xff\xff", b""),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end.to_vec(), "prefix {prefix:?}");
        }
    }

    #[test]
    fn range_prefix_uses_prefix_end() {
        let r = Range::prefix(b"k\xff".to_vec());
        assert_eq!(r.start, b"k\xff");
        assert_eq!(r.end, b"l");
        assert_eq!(r.limit, 0);
    }
}
