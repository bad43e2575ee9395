//! Request ids across processes. The gateway takes `x-request-id` from the HTTP request (or
//! makes one) and runs the handler inside [`scope`]; `client` copies [`current`] into the
//! metadata of every gRPC call; the coordinator and agent servers read it back with
//! [`crate::grpc::RpcLayer`], which scopes the handler the same way, so calls they make in
//! turn carry it too. Every log line inside carries `request_id` in its span.

use std::future::Future;

/// HTTP header and gRPC metadata key of the request id.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request id of the running task, if it runs inside [`scope`].
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// Run `fut` with `id` as the current request id.
pub fn scope<F: Future>(id: String, fut: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, fut)
}

/// `fut` carrying the current request id (if any), for `tokio::spawn`: a spawned task does
/// not inherit the task-local of its spawner.
pub fn inherit<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let id = current();
    async move {
        match id {
            Some(id) => scope(id, fut).await,
            None => fut.await,
        }
    }
}

/// `value` when it is a usable id (1–128 visible ASCII characters), else `None`.
pub fn sanitize(value: &[u8]) -> Option<&str> {
    if value.is_empty() || value.len() > 128 || !value.iter().all(u8::is_ascii_graphic) {
        return None;
    }
    std::str::from_utf8(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scope_sets_and_clears_the_id() {
        assert_eq!(current(), None);
        let seen = scope("abc".to_owned(), async { current() }).await;
        assert_eq!(seen.as_deref(), Some("abc"));
        assert_eq!(current(), None);
        let spawned = scope("def".to_owned(), async {
            tokio::spawn(inherit(async { current() })).await.unwrap()
        })
        .await;
        assert_eq!(spawned.as_deref(), Some("def"));
    }

    #[test]
    fn only_sane_ids_are_kept() {
        assert_eq!(sanitize(b"req-1"), Some("req-1"));
        assert_eq!(sanitize(b""), None);
        assert_eq!(sanitize(b"a b"), None);
        assert_eq!(sanitize(&[b'x'; 129]), None);
    }
}
