//! `/v1/bucket/*`.

use axum::extract::State;
use proto::coordinator::{
    CreateBucketRequest, DeleteBucketRequest, GetBucketByNameRequest, ListBucketsRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiQuery};
use crate::model::{BucketJson, required};
use crate::openapi::{Null, OkEnvelope};
use crate::routes::{require_id, require_name};
use crate::state::AppState;

/// Body of `POST /v1/bucket/create`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = BucketCreateBody)]
pub(crate) struct CreateBody {
    /// Owner; absent = the gateway's `default_user_id`.
    #[serde(rename = "userID")]
    #[schema(minimum = 1)]
    user_id: Option<u64>,
    /// Bucket name (see `docs/api.md` for the naming rules).
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    name: String,
}

/// Query of `GET /v1/bucket/getByName`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetByNameQuery {
    /// Owner; absent = the gateway's `default_user_id`.
    #[serde(rename = "userID")]
    #[param(minimum = 1)]
    user_id: Option<u64>,
    /// Bucket name.
    #[param(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    name: String,
}

/// Query of `GET /v1/bucket/listAll`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListAllQuery {
    /// Owner; absent = the gateway's `default_user_id`.
    #[serde(rename = "userID")]
    #[param(minimum = 1)]
    user_id: Option<u64>,
}

/// Body of `POST /v1/bucket/delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = BucketDeleteBody)]
pub(crate) struct DeleteBody {
    #[serde(rename = "bucketID")]
    #[schema(value_type = u64, minimum = 1)]
    bucket_id: Option<u64>,
}

/// `data` of create and getByName.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BucketData {
    bucket: BucketJson,
}

/// `data` of listAll.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BucketsData {
    buckets: Vec<BucketJson>,
}

/// `POST /v1/bucket/create`.
#[utoipa::path(post, path = "/v1/bucket/create", tag = "bucket", request_body = CreateBody,
    responses((status = 200, description = "The new bucket", body = OkEnvelope<BucketData>)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<ApiOk<BucketData>, ApiError> {
    let user_id = state.user_id(body.user_id)?;
    require_name("bucket", &body.name)?;
    let resp = state
        .coordinator()
        .create_bucket(CreateBucketRequest {
            user_id,
            name: body.name,
        })
        .await?
        .into_inner();
    let bucket = required(resp.bucket, "bucket")?;
    tracing::info!(user_id, bucket_id = bucket.bucket_id, "bucket created");
    Ok(ApiOk(BucketData {
        bucket: bucket.into(),
    }))
}

/// `GET /v1/bucket/getByName`.
#[utoipa::path(get, path = "/v1/bucket/getByName", tag = "bucket", params(GetByNameQuery),
    responses((status = 200, description = "The bucket", body = OkEnvelope<BucketData>)))]
pub(crate) async fn get_by_name(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<GetByNameQuery>,
) -> Result<ApiOk<BucketData>, ApiError> {
    let user_id = state.user_id(query.user_id)?;
    require_name("bucket", &query.name)?;
    let resp = state
        .coordinator()
        .get_bucket_by_name(GetBucketByNameRequest {
            user_id,
            name: query.name,
        })
        .await?
        .into_inner();
    Ok(ApiOk(BucketData {
        bucket: required(resp.bucket, "bucket")?.into(),
    }))
}

/// `GET /v1/bucket/listAll`.
#[utoipa::path(get, path = "/v1/bucket/listAll", tag = "bucket", params(ListAllQuery),
    responses((status = 200, description = "The user's buckets", body = OkEnvelope<BucketsData>)))]
pub(crate) async fn list_all(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListAllQuery>,
) -> Result<ApiOk<BucketsData>, ApiError> {
    let user_id = state.user_id(query.user_id)?;
    let resp = state
        .coordinator()
        .list_buckets(ListBucketsRequest { user_id })
        .await?
        .into_inner();
    Ok(ApiOk(BucketsData {
        buckets: resp.buckets.into_iter().map(BucketJson::from).collect(),
    }))
}

/// `POST /v1/bucket/delete`.
#[utoipa::path(post, path = "/v1/bucket/delete", tag = "bucket", request_body = DeleteBody,
    responses((status = 200, description = "Deleted", body = OkEnvelope<Null>)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<ApiOk<()>, ApiError> {
    let bucket_id = require_id("bucketID", body.bucket_id)?;
    state
        .coordinator()
        .delete_bucket(DeleteBucketRequest { bucket_id })
        .await?;
    tracing::info!(bucket_id, "bucket deleted");
    Ok(ApiOk(()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::*;

    #[tokio::test]
    async fn create_get_list_delete_round_trip() {
        let fx = Fixture::start().await;
        let (status, body) = json(
            call(
                fx.app(),
                post_json("/v1/bucket/create", r#"{"name": "bkt1"}"#),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let id = body["data"]["bucket"]["bucketID"].as_u64().unwrap();
        assert_eq!(
            body,
            json!({"code": "OK", "message": "", "data": {"bucket": {"bucketID": id, "name": "bkt1"}}})
        );
        // userID defaults to the configured default user (1).
        assert_eq!(fx.coord().buckets[0].user_id, 1);

        let (status, body) =
            json(call(fx.app(), http_get("/v1/bucket/getByName?name=bkt1")).await).await;
        assert_eq!(
            (status, body["data"]["bucket"]["bucketID"].as_u64()),
            (200, Some(id))
        );

        let (_, body) = json(call(fx.app(), http_get("/v1/bucket/listAll")).await).await;
        assert_eq!(
            body["data"]["buckets"],
            json!([{"bucketID": id, "name": "bkt1"}])
        );
        let (_, body) = json(call(fx.app(), http_get("/v1/bucket/listAll?userID=2")).await).await;
        assert_eq!(body["data"]["buckets"], json!([]));

        let req = post_json("/v1/bucket/delete", &format!(r#"{{"bucketID": {id}}}"#));
        let (status, body) = json(call(fx.app(), req).await).await;
        assert_eq!(
            (status, body),
            (200, json!({"code": "OK", "message": "", "data": null}))
        );
        assert!(fx.coord().buckets.is_empty());
    }

    #[tokio::test]
    async fn coordinator_codes_map_to_envelopes() {
        let fx = Fixture::start().await;
        let create = || post_json("/v1/bucket/create", r#"{"userID": 5, "name": "b"}"#);
        assert_eq!(json(call(fx.app(), create()).await).await.0, 200);
        let (status, body) = json(call(fx.app(), create()).await).await;
        assert_eq!((status, body["code"].as_str()), (409, Some("DataExists")));
        let (status, body) =
            json(call(fx.app(), http_get("/v1/bucket/getByName?name=zz")).await).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("DataNotFound")));
        assert_eq!(body["message"], "bucket \"zz\" not found");
    }

    #[tokio::test]
    async fn bad_input_is_rejected_before_the_coordinator() {
        let fx = Fixture::start().await;
        for (req, needle) in [
            (
                post_json("/v1/bucket/create", "{not json"),
                "invalid request body: key must be a string",
            ),
            (
                post_json("/v1/bucket/create", "{}"),
                "invalid request body: missing field `name`",
            ),
            (
                post_json("/v1/bucket/create", r#"{"name": 7}"#),
                "name: invalid type: integer `7`",
            ),
            (
                post_json("/v1/bucket/create", r#"{"name": "a", "userID": "1"}"#),
                "userID: invalid type",
            ),
            (
                post_json("/v1/bucket/create", r#"{"name": "a", "userID": 0}"#),
                "`userID`",
            ),
            (
                post_json("/v1/bucket/create", r#"{"name": ""}"#),
                "bucket name is empty",
            ),
            (
                post_json("/v1/bucket/create", r#"{"name": "a/b"}"#),
                "contains '/'",
            ),
            (
                post_json("/v1/bucket/create", ""),
                "invalid request body: it is empty",
            ),
            (
                post_json("/v1/bucket/delete", "{}"),
                "missing field `bucketID`",
            ),
            (
                post_json("/v1/bucket/delete", r#"{"bucketID": 0}"#),
                "`bucketID` must be a positive id",
            ),
            (
                post_json("/v1/bucket/delete", r#"{"bucketID": -3}"#),
                "bucketID: invalid value: integer `-3`",
            ),
            (
                post_json("/v1/bucket/delete", r#"{"bucketID": 1.5}"#),
                "bucketID: invalid type: floating point",
            ),
            (
                http_get("/v1/bucket/getByName"),
                "invalid query string: missing field `name`",
            ),
            (
                http_get("/v1/bucket/listAll?userID=abc"),
                "invalid query string: userID: invalid digit",
            ),
        ] {
            let (status, body) = json(call(fx.app(), req).await).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["code"], "BadArgument");
            assert_eq!(body["data"], serde_json::Value::Null);
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} does not contain {needle:?}"
            );
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
    }

    #[tokio::test]
    async fn unreachable_coordinator_is_503() {
        let app = crate::server::router(unreachable_state().await);
        let (status, body) = json(call(app, http_get("/v1/bucket/listAll")).await).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("OperationFailed"))
        );
        assert!(!body["message"].as_str().unwrap().is_empty());
    }
}
