//! Extractors whose rejections are JCS `BadArgument` envelopes naming the problem.

use std::error::Error as _;

use axum::Json;
use axum::body::Bytes;
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

/// A `multipart/form-data` body, read part by part (never buffered whole).
#[derive(Debug)]
pub struct ApiMultipart(pub Multipart);

impl<S> FromRequest<S> for ApiMultipart
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
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
