//! `/v1/package/*`.

use axum::extract::State;
use proto::coordinator::{
    CreatePackageRequest, DeletePackageRequest, GetPackageByFullNameRequest,
    ListBucketPackagesRequest, UpdatePackageRequest,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiQuery};
use crate::model::{PackageJson, required};
use crate::openapi::{Null, OkEnvelope};
use crate::routes::{require_id, require_name};
use crate::state::AppState;

/// Body of `POST /v1/package/create`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PackageCreateBody)]
pub(crate) struct CreateBody {
    #[serde(rename = "bucketID")]
    #[schema(value_type = u64, minimum = 1)]
    bucket_id: Option<u64>,
    /// Package name (see `docs/api.md` for the naming rules).
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    name: String,
    /// Redundancy policy of the package; absent = the cluster's `default_redundancy`.
    #[schema(value_type = Option<crate::model::RedundancyJson>)]
    redundancy: Option<serde_json::Value>,
}

/// Body of `POST /v1/package/update`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PackageUpdateBody)]
pub(crate) struct UpdateBody {
    #[serde(rename = "packageID")]
    #[schema(value_type = u64, minimum = 1)]
    package_id: Option<u64>,
    /// The new redundancy policy (new uploads use it; existing objects keep theirs).
    #[schema(value_type = crate::model::RedundancyJson)]
    redundancy: Option<serde_json::Value>,
}

/// A `redundancy` field of a request as the coordinator's policy JSON; `BadArgument`
/// naming the field when it is not a valid policy.
pub(crate) fn policy_json(value: Option<serde_json::Value>) -> Result<String, ApiError> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(String::new()),
        Some(v) => serde_json::from_value::<redundancy::Policy>(v)
            .map(|p| serde_json::to_string(&p).unwrap_or_default())
            .map_err(|e| ApiError::bad_argument(format!("redundancy: {e}"))),
    }
}

/// Query of `GET /v1/package/getByFullName`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetByFullNameQuery {
    /// Owner; absent = the gateway's `default_user_id`.
    #[serde(rename = "userID")]
    #[param(minimum = 1)]
    user_id: Option<u64>,
    #[serde(rename = "bucketName")]
    #[param(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    bucket_name: String,
    #[serde(rename = "packageName")]
    #[param(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    package_name: String,
}

/// Query of `GET /v1/package/listBucketPackages`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListBucketPackagesQuery {
    #[serde(rename = "bucketID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    bucket_id: Option<u64>,
}

/// Body of `POST /v1/package/delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = PackageDeleteBody)]
pub(crate) struct DeleteBody {
    #[serde(rename = "packageID")]
    #[schema(value_type = u64, minimum = 1)]
    package_id: Option<u64>,
}

/// `data` of create and getByFullName.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PackageData {
    package: PackageJson,
}

/// `data` of listBucketPackages.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PackagesData {
    packages: Vec<PackageJson>,
}

/// `POST /v1/package/create`.
#[utoipa::path(post, path = "/v1/package/create", tag = "package", request_body = CreateBody,
    responses((status = 200, description = "The new package", body = OkEnvelope<PackageData>)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<ApiOk<PackageData>, ApiError> {
    let bucket_id = require_id("bucketID", body.bucket_id)?;
    require_name("package", &body.name)?;
    let redundancy_json = policy_json(body.redundancy)?;
    let resp = state
        .coordinator()
        .create_package(CreatePackageRequest {
            bucket_id,
            name: body.name,
            redundancy_json,
        })
        .await?
        .into_inner();
    let package = required(resp.package, "package")?;
    tracing::info!(
        bucket_id,
        package_id = package.package_id,
        "package created"
    );
    Ok(ApiOk(PackageData {
        package: package.into(),
    }))
}

/// `POST /v1/package/update`: change the package's redundancy policy.
#[utoipa::path(post, path = "/v1/package/update", tag = "package", request_body = UpdateBody,
    responses((status = 200, description = "The package with its new policy", body = OkEnvelope<PackageData>)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<ApiOk<PackageData>, ApiError> {
    let package_id = require_id("packageID", body.package_id)?;
    let redundancy_json = policy_json(body.redundancy)?;
    if redundancy_json.is_empty() {
        return Err(ApiError::bad_argument("missing field `redundancy`"));
    }
    let resp = state
        .coordinator()
        .update_package(UpdatePackageRequest {
            package_id,
            redundancy_json,
        })
        .await?
        .into_inner();
    let package = required(resp.package, "package")?;
    tracing::info!(package_id, "package redundancy updated");
    Ok(ApiOk(PackageData {
        package: package.into(),
    }))
}

/// `GET /v1/package/getByFullName`.
#[utoipa::path(get, path = "/v1/package/getByFullName", tag = "package", params(GetByFullNameQuery),
    responses((status = 200, description = "The package", body = OkEnvelope<PackageData>)))]
pub(crate) async fn get_by_full_name(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<GetByFullNameQuery>,
) -> Result<ApiOk<PackageData>, ApiError> {
    let user_id = state.user_id(query.user_id)?;
    require_name("bucket", &query.bucket_name)?;
    require_name("package", &query.package_name)?;
    let resp = state
        .coordinator()
        .get_package_by_full_name(GetPackageByFullNameRequest {
            user_id,
            bucket_name: query.bucket_name,
            package_name: query.package_name,
        })
        .await?
        .into_inner();
    Ok(ApiOk(PackageData {
        package: required(resp.package, "package")?.into(),
    }))
}

/// `GET /v1/package/listBucketPackages`.
#[utoipa::path(get, path = "/v1/package/listBucketPackages", tag = "package", params(ListBucketPackagesQuery),
    responses((status = 200, description = "The bucket's packages", body = OkEnvelope<PackagesData>)))]
pub(crate) async fn list_bucket_packages(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListBucketPackagesQuery>,
) -> Result<ApiOk<PackagesData>, ApiError> {
    let bucket_id = require_id("bucketID", query.bucket_id)?;
    let resp = state
        .coordinator()
        .list_bucket_packages(ListBucketPackagesRequest { bucket_id })
        .await?
        .into_inner();
    Ok(ApiOk(PackagesData {
        packages: resp.packages.into_iter().map(PackageJson::from).collect(),
    }))
}

/// `POST /v1/package/delete`.
#[utoipa::path(post, path = "/v1/package/delete", tag = "package", request_body = DeleteBody,
    responses((status = 200, description = "Deleted", body = OkEnvelope<Null>)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<ApiOk<()>, ApiError> {
    let package_id = require_id("packageID", body.package_id)?;
    state
        .coordinator()
        .delete_package(DeletePackageRequest { package_id })
        .await?;
    tracing::info!(package_id, "package deleted");
    Ok(ApiOk(()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::*;

    #[tokio::test]
    async fn create_find_list_delete() {
        let fx = Fixture::start().await;
        let (_, body) = json(
            call(
                fx.app(),
                post_json("/v1/bucket/create", r#"{"name": "b1"}"#),
            )
            .await,
        )
        .await;
        let bucket_id = body["data"]["bucket"]["bucketID"].as_u64().unwrap();

        let req = post_json(
            "/v1/package/create",
            &format!(r#"{{"bucketID": {bucket_id}, "name": "t1"}}"#),
        );
        let (status, body) = json(call(fx.app(), req).await).await;
        assert_eq!(status, 200, "{body}");
        let package = body["data"]["package"].clone();
        let package_id = package["packageID"].as_u64().unwrap();
        assert_eq!(
            package,
            json!({"packageID": package_id, "name": "t1", "bucketID": bucket_id,
                   "createTime": "2025-06-24T08:31:28.514Z", "redundancy": {"type": "none"}})
        );

        let uri = "/v1/package/getByFullName?bucketName=b1&packageName=t1";
        let (status, body) = json(call(fx.app(), http_get(uri)).await).await;
        assert_eq!((status, &body["data"]["package"]), (200, &package));

        let uri = format!("/v1/package/listBucketPackages?bucketID={bucket_id}");
        let (_, body) = json(call(fx.app(), http_get(&uri)).await).await;
        assert_eq!(body["data"]["packages"], json!([package]));

        let req = post_json(
            "/v1/package/delete",
            &format!(r#"{{"packageID": {package_id}}}"#),
        );
        let (status, body) = json(call(fx.app(), req).await).await;
        assert_eq!(
            (status, body["data"].clone()),
            (200, serde_json::Value::Null)
        );
        assert!(fx.coord().packages.is_empty());
    }

    #[tokio::test]
    async fn bad_input_is_rejected_before_the_coordinator() {
        let fx = Fixture::start().await;
        for (req, needle) in [
            (
                post_json("/v1/package/create", r#"{"name": "p"}"#),
                "missing field `bucketID`",
            ),
            (
                post_json("/v1/package/create", r#"{"bucketID": 1}"#),
                "missing field `name`",
            ),
            (
                post_json("/v1/package/create", r#"{"bucketID": 1, "name": " "}"#),
                "package name is empty",
            ),
            (
                post_json("/v1/package/delete", r#"{"packageID": 0}"#),
                "`packageID`",
            ),
            (
                post_json(
                    "/v1/package/create",
                    r#"{"bucketID": 1, "name": "p", "redundancy": {"type": "ec", "k": 6, "n": 4}}"#,
                ),
                "redundancy: invalid redundancy policy: n must be greater than k",
            ),
            (
                post_json(
                    "/v1/package/create",
                    r#"{"bucketID": 1, "name": "p", "redundancy": {"type": "raid"}}"#,
                ),
                "redundancy: unknown variant `raid`",
            ),
            (
                post_json("/v1/package/update", r#"{"packageID": 1}"#),
                "missing field `redundancy`",
            ),
            (
                post_json(
                    "/v1/package/update",
                    r#"{"packageID": 1, "redundancy": {"type": "rep", "repCount": 0}}"#,
                ),
                "redundancy: invalid redundancy policy: repCount",
            ),
            (
                http_get("/v1/package/getByFullName?bucketName=b"),
                "missing field `packageName`",
            ),
            (
                http_get("/v1/package/listBucketPackages"),
                "missing field `bucketID`",
            ),
            (
                http_get("/v1/package/listBucketPackages?bucketID=-1"),
                "bucketID: invalid digit",
            ),
        ] {
            let (status, body) = json(call(fx.app(), req).await).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("BadArgument")),
                "{body}"
            );
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} does not contain {needle:?}"
            );
        }
        assert!(fx.coord().calls.is_empty());
    }
}
