//! Extractors whose rejections are JCS `BadArgument` envelopes naming the problem.

use std::error::Error as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Multipart, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON request body. Any (or no) `Content-Type` is accepted; the body must be one JSON
/// value matching `T`. Unknown fields are ignored unless `T` says otherwise.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            ApiError::bad_argument(format!(
                "failed to read the request body: {}",
                rej.body_text()
            ))
        })?;
        parse_json(&bytes, "request body").map(ApiJson)
    }
}

/// Parse JSON text, naming the problem (with the field path) on failure:
/// `invalid <what>: <field>: <serde message>`.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(ApiError::bad_argument(format!(
                "invalid {what}: it is empty; expected a JSON object"
            )));
        }
        // serde would also read a struct from an array of its field values in order
        // (`[[1,2]]` as `{"objectIDs": [1,2]}`): every body of this API is an object.
        Some(b'{') => {}
        Some(_) => {
            return Err(ApiError::bad_argument(format!(
                "invalid {what}: expected a JSON object (`{{...}}`)"
            )));
        }
    }
    Json::<T>::from_bytes(bytes)
        .map(|Json(value)| value)
        .map_err(|rej| {
            // The source is serde's message prefixed with the field path (`a.b: ...`).
            let detail = rej
                .source()
                .map(ToString::to_string)
                .unwrap_or_else(|| rej.body_text());
            ApiError::bad_argument(format!("invalid {what}: {detail}"))
        })
}

/// A query string deserialized into `T`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rej| {
                let detail = rej
                    .source()
                    .map(ToString::to_string)
                    .unwrap_or_else(|| rej.body_text());
                ApiError::bad_argument(format!("invalid query string: {detail}"))
            })
    }
}

/// A `multipart/form-data` body, read part by part (never buffered whole). The body is
/// read through [`Paced`], so the parser holds at most about [`READ_BUDGET`] bytes of it
/// at a time.
#[derive(Debug)]
pub struct ApiMultipart(pub Multipart);

impl<S> FromRequest<S> for ApiMultipart
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let req = req.map(|body| Body::from_stream(Paced::new(body.into_data_stream())));
        Multipart::from_request(req, state)
            .await
            .map(ApiMultipart)
            .map_err(|_| {
                ApiError::bad_argument(
                    "expected a multipart/form-data request body (Content-Type with a boundary)",
                )
            })
    }
}

/// Bytes of a request body [`Paced`] hands out per wake-up of its reader.
pub const READ_BUDGET: usize = 1024 * 1024;

/// A body stream that reports `Pending` (waking itself at once) after every
/// [`READ_BUDGET`] bytes. The multipart parser (multer) reads its body until the body
/// says `Pending` and appends everything to one buffer; from a fast client (loopback, a
/// full socket buffer) that was several MiB per field chunk asked for, on every upload
/// in flight. Paced, it reads about one budget, hands the field's bytes out, and is
/// polled again only when the upload asks for more.
pub struct Paced<St> {
    inner: St,
    since_pending: usize,
}

impl<St> Paced<St> {
    /// `inner`, paced.
    pub fn new(inner: St) -> Paced<St> {
        Paced {
            inner,
            since_pending: 0,
        }
    }
}

impl<St, E> futures::Stream for Paced<St>
where
    St: futures::Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.since_pending >= READ_BUDGET {
            self.since_pending = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(bytes))) => self.since_pending += bytes.len(),
            Poll::Pending => self.since_pending = 0,
            Poll::Ready(_) => {}
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use common::ErrorCode;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        #[serde(rename = "bucketID")]
        bucket_id: u64,
    }

    fn err(json: &str) -> String {
        let e = parse_json::<Body>(json.as_bytes(), "request body").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadArgument);
        e.message
    }

    #[tokio::test]
    async fn paced_body_says_pending_after_each_budget_and_loses_nothing() {
        use futures::StreamExt as _;
        let piece = Bytes::from(vec![7u8; READ_BUDGET / 4]);
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(piece.clone())).collect();
        let mut paced = Paced::new(futures::stream::iter(pieces));
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut ready_in_a_row = 0;
        let mut most_in_a_row = 0;
        let mut total = 0;
        let mut pendings = 0;
        loop {
            match paced.poll_next_unpin(&mut cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    total += bytes.len();
                    ready_in_a_row += bytes.len();
                    most_in_a_row = most_in_a_row.max(ready_in_a_row);
                }
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    pendings += 1;
                    ready_in_a_row = 0;
                }
            }
        }
        assert_eq!(total, 10 * piece.len());
        assert_eq!(most_in_a_row, READ_BUDGET);
        assert_eq!(pendings, 2);
    }

    #[test]
    fn json_errors_name_the_problem() {
        assert!(
            err(r#"{"bucketID": 1}"#).starts_with("invalid request body: missing field `name`")
        );
        let m = err(r#"{"name": "a", "bucketID": "1"}"#);
        assert!(m.contains("bucketID") && m.contains("invalid type"), "{m}");
        let m = err(r#"{"name": "a", "bucketID": -1}"#);
        assert!(m.contains("bucketID") && m.contains("-1"), "{m}");
        let m = err(r#"{"name": "a", "#);
        assert!(m.starts_with("invalid request body: EOF"), "{m}");
        assert!(err("  ").contains("empty"));
        let m = err(r#"{"name": "a", "bucketID": 1} x"#);
        assert!(m.contains("trailing characters"), "{m}");
        // serde alone would read the struct from an array of its fields.
        let m = err(r#"["a", 1]"#);
        assert!(m.contains("expected a JSON object"), "{m}");
        assert!(err(" null").contains("expected a JSON object"));
    }
}
