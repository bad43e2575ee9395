//! `/v1/userSpace/*`: create, get, update, delete and test user spaces, and import a
//! space's files as a package (`createPackage`) or export a package to a space
//! (`downloadPackage`).
//!
//! Bodies are parsed into the shared [`common::space`] types first, so a missing or unknown
//! field, an unknown storage type or a wrong value is a 400 naming the field, and the
//! coordinator is only called with input that passed the same checks it applies. Responses
//! embed the coordinator's `user_space_json` verbatim (its secret is already masked).
//!
//! Import and export are one coordinator RPC each, which has agents copy every file
//! agent to agent: they run on the coordinator client without a per-call deadline and are
//! routed outside the metadata deadline. Per-file failures are reported in `data`.

use axum::extract::State;
use common::space::{Credential, MASK, ShardStore, Storage, validate_pair, validate_working_dir};
use proto::coordinator::{
    CreateUserSpaceRequest, DeleteUserSpaceRequest, ExportPackageRequest, FileFailure,
    GetUserSpaceRequest, ImportPackageRequest, TestUserSpaceRequest, UpdateUserSpaceRequest,
    UserSpaceResponse,
};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiQuery};
use crate::model::{PackageJson, required};
use crate::openapi::{Null, OkEnvelope};
use crate::routes::{require_id, require_name};
use crate::state::AppState;

/// Body of `POST /v1/userSpace/create`; re-serialized as the coordinator's `spec_json`
/// (unknown top-level fields dropped, defaults filled in).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[schema(as = UserSpaceCreateBody)]
pub(crate) struct CreateBody {
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    name: String,
    storage: Storage,
    credential: Credential,
    /// `null` (or absent): the space stores no shards.
    #[serde(rename = "shardStore")]
    shard_store: Option<ShardStore>,
    /// `[]` when absent or `null` (Go clients send `null` for an empty slice).
    #[serde(default, deserialize_with = "null_as_default")]
    #[schema(nullable)]
    features: Vec<serde_json::Value>,
    #[serde(rename = "workingDir", default, deserialize_with = "null_as_default")]
    working_dir: String,
}

/// Query of `GET /v1/userSpace/get`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetQuery {
    #[serde(rename = "userSpaceID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    user_space_id: Option<u64>,
}

/// Body of `POST /v1/userSpace/update`. Only the name and the credential can change; other
/// fields (`storage`, `shardStore`, ...) are ignored like any unknown field.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct UpdateBody {
    #[serde(rename = "userSpaceID")]
    #[schema(value_type = u64, minimum = 1)]
    user_space_id: Option<u64>,
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    name: String,
    credential: Credential,
}

/// Body of `POST /v1/userSpace/delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = UserSpaceDeleteBody)]
pub(crate) struct DeleteBody {
    #[serde(rename = "userSpaceID")]
    #[schema(value_type = u64, minimum = 1)]
    user_space_id: Option<u64>,
}

/// Body of `POST /v1/userSpace/test`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct TestBody {
    storage: Storage,
    credential: Credential,
    #[serde(rename = "workingDir", default, deserialize_with = "null_as_default")]
    working_dir: String,
}

/// Body of `POST /v1/userSpace/createPackage`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CreatePackageBody {
    #[serde(rename = "userSpaceID")]
    #[schema(value_type = u64, minimum = 1)]
    user_space_id: Option<u64>,
    /// File or folder inside the space ("" = its root); the working dir is not prepended.
    path: String,
    #[serde(rename = "bucketID")]
    #[schema(value_type = u64, minimum = 1)]
    bucket_id: Option<u64>,
    #[schema(min_length = 1, max_length = 255, pattern = r"^[^/]*\S[^/]*$")]
    name: String,
    /// Space that receives the shards; absent, `null` or 0 = no preference.
    #[serde(rename = "spaceAffinity")]
    space_affinity: Option<u64>,
}

/// Body of `POST /v1/userSpace/downloadPackage`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct DownloadPackageBody {
    #[serde(rename = "userSpaceID")]
    #[schema(value_type = u64, minimum = 1)]
    user_space_id: Option<u64>,
    #[serde(rename = "packageID")]
    #[schema(value_type = u64, minimum = 1)]
    package_id: Option<u64>,
    /// Folder of the space that receives the files ("" = its root).
    #[serde(rename = "rootPath")]
    root_path: String,
}

/// One file that could not be imported or exported.
#[derive(Debug, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct FailureJson {
    path: String,
    message: String,
}

impl From<FileFailure> for FailureJson {
    fn from(f: FileFailure) -> Self {
        FailureJson {
            path: f.path,
            message: f.message,
        }
    }
}

/// `data` of createPackage: the new package (as in the API document) plus the per-file
/// results (our extension).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatePackageData {
    package: PackageJson,
    imported: u64,
    failures: Vec<FailureJson>,
}

/// `data` of downloadPackage (the API document shows `null`; the counts are our extension).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DownloadPackageData {
    exported: u64,
    failures: Vec<FailureJson>,
}

/// `data` of create, get and update: the coordinator's JSON as it is.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UserSpaceData {
    /// The space; the credential's secret is masked (`******`).
    #[serde(rename = "userSpace")]
    #[schema(value_type = common::space::UserSpace)]
    user_space: Box<RawValue>,
}

/// `null` reads as the type's default.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Check a storage + credential + working dir as create and test receive them.
fn check_config(
    storage: &Storage,
    credential: &Credential,
    working_dir: &str,
) -> Result<(), ApiError> {
    validate_pair(storage, credential).map_err(ApiError::bad_argument)?;
    check_credential(credential)?;
    validate_working_dir(working_dir).map_err(ApiError::bad_argument)
}

/// Check a credential on its own: the keys of the cloud types must be given, and the secret
/// must not be the mask (a credential copied from a `get` answer would otherwise be stored
/// with the literal secret `******`).
fn check_credential(credential: &Credential) -> Result<(), ApiError> {
    let Some((id, secret)) = credential.keys() else {
        return Ok(());
    };
    if id.trim().is_empty() {
        return Err(ApiError::bad_argument("credential.accessKeyId is empty"));
    }
    if secret.is_empty() {
        return Err(ApiError::bad_argument(
            "credential.secretAccessKey is empty",
        ));
    }
    if secret == MASK {
        return Err(ApiError::bad_argument(format!(
            "credential.secretAccessKey is the mask {MASK:?}; send the secret itself"
        )));
    }
    Ok(())
}

/// The `userSpace` of a coordinator answer: any JSON object, embedded verbatim.
fn user_space_data(resp: UserSpaceResponse) -> Result<UserSpaceData, ApiError> {
    let raw = RawValue::from_string(resp.user_space_json).map_err(|e| {
        ApiError::internal(format!("coordinator sent invalid user space JSON: {e}"))
    })?;
    if !raw.get().starts_with('{') {
        return Err(ApiError::internal(format!(
            "coordinator sent a user space that is not a JSON object: {:.64}",
            raw.get()
        )));
    }
    Ok(UserSpaceData { user_space: raw })
}

/// A path inside a space's storage, checked as the coordinator checks it: relative, no
/// `.` or `..` segment, no `//`, no backslash; leading and trailing `/` are allowed ("" =
/// the root). The error names `field`.
fn check_space_path(field: &str, path: &str) -> Result<(), ApiError> {
    let trimmed = path.trim_matches('/');
    if trimmed.split('/').any(|s| s == "." || s == "..")
        || trimmed.contains("//")
        || path.contains('\\')
    {
        return Err(ApiError::bad_argument(format!(
            "{field} {path:?} must not contain '.' or '..' segments, '//' or '\\'"
        )));
    }
    if path.chars().any(char::is_control) {
        return Err(ApiError::bad_argument(format!(
            "{field} {path:?} contains a control character"
        )));
    }
    Ok(())
}

/// Serialize a request part for the coordinator.
fn to_json<T: Serialize>(value: &T, what: &str) -> Result<String, ApiError> {
    serde_json::to_string(value)
        .map_err(|e| ApiError::internal(format!("failed to serialize the {what}: {e}")))
}

/// `POST /v1/userSpace/create`.
#[utoipa::path(post, path = "/v1/userSpace/create", tag = "userSpace", request_body = CreateBody,
    responses((status = 200, description = "The new user space", body = OkEnvelope<UserSpaceData>)))]
pub(crate) async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<ApiOk<UserSpaceData>, ApiError> {
    require_name("user space", &body.name)?;
    check_config(&body.storage, &body.credential, &body.working_dir)?;
    let spec_json = to_json(&body, "user space spec")?;
    let resp = state
        .coordinator()
        .create_user_space(CreateUserSpaceRequest { spec_json })
        .await?
        .into_inner();
    let data = user_space_data(resp)?;
    tracing::info!(
        name = %body.name,
        storage = body.storage.type_name(),
        "user space created"
    );
    Ok(ApiOk(data))
}

/// `GET /v1/userSpace/get`.
#[utoipa::path(get, path = "/v1/userSpace/get", tag = "userSpace", params(GetQuery),
    responses((status = 200, description = "The user space", body = OkEnvelope<UserSpaceData>)))]
pub(crate) async fn get(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<GetQuery>,
) -> Result<ApiOk<UserSpaceData>, ApiError> {
    let user_space_id = require_id("userSpaceID", query.user_space_id)?;
    let resp = state
        .coordinator()
        .get_user_space(GetUserSpaceRequest { user_space_id })
        .await?
        .into_inner();
    Ok(ApiOk(user_space_data(resp)?))
}

/// `POST /v1/userSpace/update`: new name and credential; the coordinator checks that the
/// credential's type matches the space's storage and increments `revision`.
#[utoipa::path(post, path = "/v1/userSpace/update", tag = "userSpace", request_body = UpdateBody,
    responses((status = 200, description = "The updated user space", body = OkEnvelope<UserSpaceData>)))]
pub(crate) async fn update(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<ApiOk<UserSpaceData>, ApiError> {
    let user_space_id = require_id("userSpaceID", body.user_space_id)?;
    require_name("user space", &body.name)?;
    check_credential(&body.credential)?;
    let credential_json = to_json(&body.credential, "credential")?;
    let resp = state
        .coordinator()
        .update_user_space(UpdateUserSpaceRequest {
            user_space_id,
            name: body.name,
            credential_json,
        })
        .await?
        .into_inner();
    let data = user_space_data(resp)?;
    tracing::info!(user_space_id, "user space updated");
    Ok(ApiOk(data))
}

/// `POST /v1/userSpace/delete`: OK when the space does not exist; the coordinator refuses
/// while the space holds shards.
#[utoipa::path(post, path = "/v1/userSpace/delete", tag = "userSpace", request_body = DeleteBody,
    responses((status = 200, description = "Deleted (or did not exist)", body = OkEnvelope<Null>)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<ApiOk<()>, ApiError> {
    let user_space_id = require_id("userSpaceID", body.user_space_id)?;
    state
        .coordinator()
        .delete_user_space(DeleteUserSpaceRequest { user_space_id })
        .await?;
    tracing::info!(user_space_id, "user space deleted");
    Ok(ApiOk(()))
}

/// `POST /v1/userSpace/test`: the coordinator has an agent write, read and delete a probe;
/// its error (with the reason) passes through.
#[utoipa::path(post, path = "/v1/userSpace/test", tag = "userSpace", request_body = TestBody,
    responses((status = 200, description = "The storage works with this credential", body = OkEnvelope<Null>)))]
pub(crate) async fn test(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TestBody>,
) -> Result<ApiOk<()>, ApiError> {
    check_config(&body.storage, &body.credential, &body.working_dir)?;
    state
        .coordinator()
        .test_user_space(TestUserSpaceRequest {
            storage_json: to_json(&body.storage, "storage")?,
            credential_json: to_json(&body.credential, "credential")?,
            working_dir: body.working_dir,
        })
        .await?;
    Ok(ApiOk(()))
}

/// `POST /v1/userSpace/createPackage`: import the file or folder at `path` of the space
/// into a new package of `bucketID`. Per-file failures do not fail the request.
#[utoipa::path(post, path = "/v1/userSpace/createPackage", tag = "userSpace", request_body = CreatePackageBody,
    responses((status = 200, description = "The new package and the per-file results", body = OkEnvelope<CreatePackageData>)))]
pub(crate) async fn create_package(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreatePackageBody>,
) -> Result<ApiOk<CreatePackageData>, ApiError> {
    let user_space_id = require_id("userSpaceID", body.user_space_id)?;
    let bucket_id = require_id("bucketID", body.bucket_id)?;
    require_name("package", &body.name)?;
    check_space_path("path", &body.path)?;
    let resp = state
        .bulk_coordinator()
        .import_package(ImportPackageRequest {
            user_space_id,
            path: body.path,
            bucket_id,
            name: body.name,
            space_affinity: body.space_affinity.unwrap_or(0),
        })
        .await?
        .into_inner();
    let package = required(resp.package, "package")?;
    tracing::info!(
        user_space_id,
        bucket_id,
        package_id = package.package_id,
        imported = resp.imported,
        failed = resp.failures.len(),
        "package imported from user space"
    );
    Ok(ApiOk(CreatePackageData {
        package: package.into(),
        imported: resp.imported,
        failures: resp.failures.into_iter().map(FailureJson::from).collect(),
    }))
}

/// `POST /v1/userSpace/downloadPackage`: write every object of the package to
/// `rootPath/<object path>` in the space. Per-file failures do not fail the request.
#[utoipa::path(post, path = "/v1/userSpace/downloadPackage", tag = "userSpace", request_body = DownloadPackageBody,
    responses((status = 200, description = "The per-file results", body = OkEnvelope<DownloadPackageData>)))]
pub(crate) async fn download_package(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DownloadPackageBody>,
) -> Result<ApiOk<DownloadPackageData>, ApiError> {
    let user_space_id = require_id("userSpaceID", body.user_space_id)?;
    let package_id = require_id("packageID", body.package_id)?;
    check_space_path("rootPath", &body.root_path)?;
    let resp = state
        .bulk_coordinator()
        .export_package(ExportPackageRequest {
            user_space_id,
            package_id,
            root_path: body.root_path,
        })
        .await?
        .into_inner();
    tracing::info!(
        user_space_id,
        package_id,
        exported = resp.exported,
        failed = resp.failures.len(),
        "package exported to user space"
    );
    Ok(ApiOk(DownloadPackageData {
        exported: resp.exported,
        failures: resp.failures.into_iter().map(FailureJson::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use common::ErrorCode;
    use proto::coordinator as pb;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::*;

    /// The OBS example of the API document, with real values.
    const OBS_CREATE: &str = r#"{
        "name": "test1",
        "storage": {"type": "OBS", "region": "cn-north-4",
                    "endpoint": "https://obs.cn-north-4.myhuaweicloud.com",
                    "bucket": "jcs-data", "projectID": "p-123"},
        "credential": {"type": "OBS", "accessKeyId": "AK1", "secretAccessKey": "SK-one"},
        "shardStore": {"maxSize": 1024},
        "features": [],
        "workingDir": ""
    }"#;

    fn obs_space(id: u64, name: &str, key: &str, revision: u64) -> Value {
        json!({
            "userSpaceID": id,
            "name": name,
            "storage": {"type": "OBS", "region": "cn-north-4",
                        "endpoint": "https://obs.cn-north-4.myhuaweicloud.com",
                        "bucket": "jcs-data", "projectID": "p-123"},
            "credential": {"type": "OBS", "accessKeyId": key, "secretAccessKey": "******"},
            "shardStore": {"maxSize": 1024},
            "features": [],
            "workingDir": "",
            "revision": revision
        })
    }

    async fn send(fx: &Fixture, req: axum::http::Request<axum::body::Body>) -> (u16, String) {
        let resp = call(fx.app(), req).await;
        let status = resp.status().as_u16();
        let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
        (status, text)
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    #[tokio::test]
    async fn obs_create_get_update_delete_round_trip() {
        let fx = Fixture::start().await;
        let (status, text) = send(&fx, post_json("/v1/userSpace/create", OBS_CREATE)).await;
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains("SK-one"), "secret leaked: {text}");
        let id = parse(&text)["data"]["userSpace"]["userSpaceID"]
            .as_u64()
            .unwrap();
        // The coordinator's JSON is embedded verbatim: the keys in the order of the API
        // document (a `serde_json::Value` would have sorted them).
        let golden = concat!(
            r#"{"code":"OK","message":"","data":{"userSpace":{"userSpaceID":@ID@,"name":"test1","#,
            r#""storage":{"type":"OBS","region":"cn-north-4","#,
            r#""endpoint":"https://obs.cn-north-4.myhuaweicloud.com","bucket":"jcs-data","#,
            r#""projectID":"p-123"},"#,
            r#""credential":{"type":"OBS","accessKeyId":"AK1","secretAccessKey":"******"},"#,
            r#""shardStore":{"maxSize":1024},"features":[],"workingDir":"","revision":1}}}"#,
        );
        assert_eq!(text, golden.replace("@ID@", &id.to_string()));
        // The coordinator received the secret in clear.
        let spec = parse(&fx.coord().space_specs[0]);
        assert_eq!(spec["credential"]["secretAccessKey"], "SK-one");

        let (status, text) = send(
            &fx,
            http_get(&format!("/v1/userSpace/get?userSpaceID={id}")),
        )
        .await;
        assert_eq!(
            (status, parse(&text)),
            (
                200,
                json!({"code": "OK", "message": "", "data": {"userSpace": obs_space(id, "test1", "AK1", 1)}})
            )
        );

        let update = format!(
            r#"{{"userSpaceID": {id}, "name": "renamed",
                "credential": {{"type": "OBS", "accessKeyId": "AK2", "secretAccessKey": "SK-two"}}}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/update", &update)).await;
        assert_eq!(status, 200, "{text}");
        assert!(!text.contains("SK-two"), "secret leaked: {text}");
        assert_eq!(
            parse(&text)["data"]["userSpace"],
            obs_space(id, "renamed", "AK2", 2)
        );
        let forwarded = fx.coord().space_updates[0].clone();
        assert_eq!(
            (forwarded.user_space_id, forwarded.name.as_str()),
            (id, "renamed")
        );
        assert_eq!(
            parse(&forwarded.credential_json),
            json!({"type": "OBS", "accessKeyId": "AK2", "secretAccessKey": "SK-two"})
        );
        let (_, text) = send(
            &fx,
            http_get(&format!("/v1/userSpace/get?userSpaceID={id}")),
        )
        .await;
        assert_eq!(parse(&text)["data"]["userSpace"]["revision"], 2);

        let delete = format!(r#"{{"userSpaceID": {id}}}"#);
        for _ in 0..2 {
            // The second delete finds nothing: still OK.
            let (status, text) = send(&fx, post_json("/v1/userSpace/delete", &delete)).await;
            assert_eq!(
                (status, parse(&text)),
                (200, json!({"code": "OK", "message": "", "data": null}))
            );
        }
        assert!(fx.coord().user_spaces.is_empty());
        let (status, text) = send(
            &fx,
            http_get(&format!("/v1/userSpace/get?userSpaceID={id}")),
        )
        .await;
        assert_eq!(
            (status, parse(&text)),
            (
                404,
                json!({"code": "DataNotFound", "message": format!("user space {id} not found"), "data": null})
            )
        );
    }

    #[tokio::test]
    async fn s3_and_local_spaces_get_their_defaults() {
        let fx = Fixture::start().await;
        let s3 = r#"{"name": "s3", "extra": true,
            "storage": {"type": "S3", "endpoint": "http://127.0.0.1:9000", "bucket": "b"},
            "credential": {"type": "S3", "accessKeyId": "minio", "secretAccessKey": "minio123"},
            "shardStore": {"maxSize": 0}, "features": null, "workingDir": "jcs/work"}"#;
        let (status, text) = send(&fx, post_json("/v1/userSpace/create", s3)).await;
        assert_eq!(status, 200, "{text}");
        let space = &parse(&text)["data"]["userSpace"];
        assert_eq!(
            space["storage"],
            json!({"type": "S3", "region": "", "endpoint": "http://127.0.0.1:9000", "bucket": "b", "pathStyle": true})
        );
        assert_eq!(
            space["credential"],
            json!({"type": "S3", "accessKeyId": "minio", "secretAccessKey": "******"})
        );
        assert_eq!(
            (
                &space["shardStore"],
                &space["features"],
                &space["workingDir"]
            ),
            (&json!({"maxSize": 0}), &json!([]), &json!("jcs/work"))
        );
        // Re-serialized for the coordinator: defaults filled in, unknown fields dropped.
        assert_eq!(
            parse(&fx.coord().space_specs[0]),
            json!({
                "name": "s3",
                "storage": {"type": "S3", "region": "", "endpoint": "http://127.0.0.1:9000", "bucket": "b", "pathStyle": true},
                "credential": {"type": "S3", "accessKeyId": "minio", "secretAccessKey": "minio123"},
                "shardStore": {"maxSize": 0},
                "features": [],
                "workingDir": "jcs/work"
            })
        );

        let virtual_hosted = r#"{"name": "s3v",
            "storage": {"type": "S3", "region": "us-east-1", "endpoint": "https://s3.amazonaws.com", "bucket": "b", "pathStyle": false},
            "credential": {"type": "S3", "accessKeyId": "AK", "secretAccessKey": "SK"},
            "shardStore": null}"#;
        let (status, text) = send(&fx, post_json("/v1/userSpace/create", virtual_hosted)).await;
        assert_eq!(status, 200, "{text}");
        let space = &parse(&text)["data"]["userSpace"];
        assert_eq!(space["storage"]["pathStyle"], false);
        assert_eq!(space["shardStore"], Value::Null);

        let local = r#"{"name": "disk", "storage": {"type": "Local", "location": "agent-1", "path": "/srv/jcs"},
            "credential": {"type": "Local"}, "shardStore": {"maxSize": 1073741824}}"#;
        let (status, text) = send(&fx, post_json("/v1/userSpace/create", local)).await;
        assert_eq!(status, 200, "{text}");
        let space = &parse(&text)["data"]["userSpace"];
        assert_eq!(
            (
                &space["storage"],
                &space["credential"],
                &space["shardStore"]
            ),
            (
                &json!({"type": "Local", "location": "agent-1", "path": "/srv/jcs"}),
                &json!({"type": "Local"}),
                &json!({"maxSize": 1073741824_u64})
            )
        );
        // `location` may be omitted (one agent, e.g. `jcs standalone`); shardStore too.
        let local = r#"{"name": "disk2", "storage": {"type": "Local", "path": "/srv/jcs2"},
            "credential": {"type": "Local"}}"#;
        let (status, text) = send(&fx, post_json("/v1/userSpace/create", local)).await;
        assert_eq!(status, 200, "{text}");
        let space = &parse(&text)["data"]["userSpace"];
        assert_eq!(space["storage"]["location"], "");
        assert_eq!(space["shardStore"], Value::Null);
    }

    #[tokio::test]
    async fn update_changes_only_name_and_credential() {
        let fx = Fixture::start().await;
        let (_, text) = send(&fx, post_json("/v1/userSpace/create", OBS_CREATE)).await;
        let id = parse(&text)["data"]["userSpace"]["userSpaceID"]
            .as_u64()
            .unwrap();
        // `storage` and the rest are ignored like any unknown field.
        let update = format!(
            r#"{{"userSpaceID": {id}, "name": "n2", "workingDir": "elsewhere",
                "storage": {{"type": "OBS", "endpoint": "https://other", "bucket": "other"}},
                "credential": {{"type": "OBS", "accessKeyId": "AK2", "secretAccessKey": "SK2"}}}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/update", &update)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            parse(&text)["data"]["userSpace"],
            obs_space(id, "n2", "AK2", 2)
        );

        // The coordinator's refusals pass through: a taken name, a credential that does not
        // fit the storage, an unknown id.
        assert_eq!(
            send(&fx, post_json("/v1/userSpace/create", OBS_CREATE))
                .await
                .0,
            200
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/create", OBS_CREATE)).await;
        assert_eq!(
            (status, parse(&text)),
            (
                409,
                json!({"code": "DataExists", "message": "user space \"test1\" already exists", "data": null})
            )
        );
        let rename = update.replace("\"n2\"", "\"test1\"");
        let (status, text) = send(&fx, post_json("/v1/userSpace/update", &rename)).await;
        assert_eq!((status, &parse(&text)["code"]), (409, &json!("DataExists")));
        let mismatch = format!(
            r#"{{"userSpaceID": {id}, "name": "n3",
                "credential": {{"type": "S3", "accessKeyId": "AK", "secretAccessKey": "SK"}}}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/update", &mismatch)).await;
        let body = parse(&text);
        assert_eq!((status, &body["code"]), (400, &json!("BadArgument")));
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("credential.type"),
            "{body}"
        );
        let unknown = r#"{"userSpaceID": 999, "name": "x",
            "credential": {"type": "OBS", "accessKeyId": "AK", "secretAccessKey": "SK"}}"#;
        let (status, text) = send(&fx, post_json("/v1/userSpace/update", unknown)).await;
        assert_eq!(
            (status, parse(&text)["code"].clone()),
            (404, json!("DataNotFound"))
        );
        assert_eq!(fx.coord().user_spaces[&id].revision, 2);
    }

    #[tokio::test]
    async fn test_forwards_the_config_and_passes_errors_through() {
        let fx = Fixture::start().await;
        let body = r#"{"storage": {"type": "S3", "endpoint": "http://127.0.0.1:9000", "bucket": "b"},
            "credential": {"type": "S3", "accessKeyId": "AK", "secretAccessKey": "SK"},
            "workingDir": "jcs"}"#;
        let (status, text) = send(&fx, post_json("/v1/userSpace/test", body)).await;
        assert_eq!(
            (status, parse(&text)),
            (200, json!({"code": "OK", "message": "", "data": null}))
        );
        let sent = fx.coord().space_tests[0].clone();
        assert_eq!(
            parse(&sent.storage_json),
            json!({"type": "S3", "region": "", "endpoint": "http://127.0.0.1:9000", "bucket": "b", "pathStyle": true})
        );
        assert_eq!(
            parse(&sent.credential_json),
            json!({"type": "S3", "accessKeyId": "AK", "secretAccessKey": "SK"})
        );
        assert_eq!(sent.working_dir, "jcs");

        for (code, status, jcs, message) in [
            (
                ErrorCode::Unavailable,
                503,
                "OperationFailed",
                "no agent can reach http://127.0.0.1:9000: connection refused",
            ),
            (
                ErrorCode::PermissionDenied,
                403,
                "OperationFailed",
                "write of jcs/.jcs-probe-1 failed: AccessDenied",
            ),
            (
                ErrorCode::NotFound,
                404,
                "DataNotFound",
                "bucket \"b\" does not exist",
            ),
            (
                ErrorCode::BadArgument,
                400,
                "BadArgument",
                "storage.location \"x\" names no agent",
            ),
            (
                ErrorCode::Timeout,
                504,
                "OperationFailed",
                "probe did not finish within 10s",
            ),
        ] {
            fx.coord().space_test_error = Some((code, message.to_owned()));
            let (got, text) = send(&fx, post_json("/v1/userSpace/test", body)).await;
            assert_eq!(
                (got, parse(&text)),
                (
                    status,
                    json!({"code": jcs, "message": message, "data": null})
                ),
                "{code:?}"
            );
        }
    }

    #[tokio::test]
    async fn delete_refusal_passes_through() {
        let fx = Fixture::start().await;
        let (_, text) = send(&fx, post_json("/v1/userSpace/create", OBS_CREATE)).await;
        let id = parse(&text)["data"]["userSpace"]["userSpaceID"]
            .as_u64()
            .unwrap();
        fx.coord().busy_spaces.insert(id);
        let delete = format!(r#"{{"userSpaceID": {id}}}"#);
        let (status, text) = send(&fx, post_json("/v1/userSpace/delete", &delete)).await;
        assert_eq!(
            (status, parse(&text)),
            (
                409,
                json!({"code": "OperationFailed", "message": format!("user space {id} still holds shards of objects"), "data": null})
            )
        );
        assert!(fx.coord().user_spaces.contains_key(&id));
        fx.coord()
            .fail_rpc
            .insert("delete_user_space", ErrorCode::Unavailable);
        let (status, _) = send(&fx, post_json("/v1/userSpace/delete", &delete)).await;
        assert_eq!(status, 503);
    }

    #[tokio::test]
    async fn bad_input_is_rejected_before_the_coordinator() {
        let fx = Fixture::start().await;
        let create = |edit: &dyn Fn(&mut Value)| {
            let mut body: Value = serde_json::from_str(OBS_CREATE).unwrap();
            edit(&mut body);
            post_json("/v1/userSpace/create", &body.to_string())
        };
        let s3_test = |edit: &dyn Fn(&mut Value)| {
            let mut body = json!({
                "storage": {"type": "S3", "endpoint": "http://h", "bucket": "b"},
                "credential": {"type": "S3", "accessKeyId": "AK", "secretAccessKey": "SK"},
            });
            edit(&mut body);
            post_json("/v1/userSpace/test", &body.to_string())
        };
        let update = |body: &str| post_json("/v1/userSpace/update", body);
        let obs_credential =
            r#""credential": {"type": "OBS", "accessKeyId": "AK", "secretAccessKey": "SK"}"#;
        let cases = [
            (
                post_json("/v1/userSpace/create", "{not json"),
                "invalid request body: key must be a string",
            ),
            (
                post_json("/v1/userSpace/create", ""),
                "invalid request body: it is empty",
            ),
            (
                create(&|b| {
                    b.as_object_mut().unwrap().remove("storage");
                }),
                "invalid request body: missing field `storage`",
            ),
            (
                create(&|b| {
                    b.as_object_mut().unwrap().remove("credential");
                }),
                "invalid request body: missing field `credential`",
            ),
            (
                create(&|b| {
                    b.as_object_mut().unwrap().remove("name");
                }),
                "invalid request body: missing field `name`",
            ),
            (
                create(&|b| {
                    b["storage"].as_object_mut().unwrap().remove("bucket");
                }),
                "storage: missing field `bucket`",
            ),
            (
                create(&|b| {
                    b["storage"].as_object_mut().unwrap().remove("type");
                }),
                "storage: missing field `type`",
            ),
            (
                create(&|b| b["storage"]["type"] = json!("FTP")),
                "invalid request body: storage.type: unknown variant `FTP`, expected one of `Local`, `S3`, `OBS`, `OSS`, `COS`",
            ),
            (
                create(&|b| b["storage"]["buckt"] = json!("x")),
                "storage: unknown field `buckt`",
            ),
            (
                create(&|b| b["credential"]["type"] = json!("S3")),
                "credential.type \"S3\" does not match storage.type \"OBS\"",
            ),
            (
                create(&|b| b["credential"]["secretAccessKey"] = json!("")),
                "credential.secretAccessKey is empty",
            ),
            (
                create(&|b| b["credential"]["secretAccessKey"] = json!("******")),
                "credential.secretAccessKey is the mask",
            ),
            (
                create(&|b| b["credential"] = json!({"type": "OBS", "accessKeyId": "AK"})),
                "credential: missing field `secretAccessKey`",
            ),
            (
                create(&|b| b["storage"]["endpoint"] = json!("")),
                "storage.endpoint is empty",
            ),
            (
                create(&|b| b["storage"]["endpoint"] = json!("obs.example.com")),
                "storage.endpoint \"obs.example.com\" must start with http:// or https://",
            ),
            (
                create(&|b| b["name"] = json!("")),
                "user space name is empty",
            ),
            (
                create(&|b| b["name"] = json!("a/b")),
                "user space name \"a/b\" contains '/'",
            ),
            (
                create(&|b| b["workingDir"] = json!("a/../b")),
                "workingDir \"a/../b\" must not contain",
            ),
            (
                create(&|b| b["name"] = json!(1)),
                "name: invalid type: integer `1`, expected a string",
            ),
            (
                create(&|b| b["shardStore"] = json!({"maxSize": "1024"})),
                "shardStore.maxSize: invalid type: string \"1024\"",
            ),
            (
                create(&|b| b["shardStore"] = json!({"maxSize": -1})),
                "shardStore.maxSize: invalid value: integer `-1`",
            ),
            (
                create(&|b| b["shardStore"] = json!({"maxSiz": 1})),
                "shardStore.maxSiz: unknown field `maxSiz`, expected `maxSize`",
            ),
            (
                create(&|b| b["features"] = json!({})),
                "features: invalid type: map, expected a sequence",
            ),
            (
                create(&|b| b["workingDir"] = json!(5)),
                "workingDir: invalid type: integer `5`",
            ),
            (
                create(&|b| b["storage"] = json!({"type": "Local", "path": "rel"})),
                "storage.path \"rel\" must be an absolute directory",
            ),
            (http_get("/v1/userSpace/get"), "missing field `userSpaceID`"),
            (
                http_get("/v1/userSpace/get?userSpaceID=0"),
                "field `userSpaceID` must be a positive id (got 0)",
            ),
            (
                http_get("/v1/userSpace/get?userSpaceID=abc"),
                "invalid query string: userSpaceID: invalid digit",
            ),
            (
                update(&format!(r#"{{"name": "n", {obs_credential}}}"#)),
                "missing field `userSpaceID`",
            ),
            (
                update(&format!(
                    r#"{{"userSpaceID": 0, "name": "n", {obs_credential}}}"#
                )),
                "`userSpaceID` must be a positive id",
            ),
            (
                update(&format!(
                    r#"{{"userSpaceID": "1", "name": "n", {obs_credential}}}"#
                )),
                "userSpaceID: invalid type: string \"1\"",
            ),
            (
                update(&format!(r#"{{"userSpaceID": 1, {obs_credential}}}"#)),
                "missing field `name`",
            ),
            (
                update(&format!(
                    r#"{{"userSpaceID": 1, "name": " ", {obs_credential}}}"#
                )),
                "user space name is empty",
            ),
            (
                update(r#"{"userSpaceID": 1, "name": "n"}"#),
                "missing field `credential`",
            ),
            (
                update(
                    r#"{"userSpaceID": 1, "name": "n", "credential": {"type": "OBS", "accessKeyId": "", "secretAccessKey": "SK"}}"#,
                ),
                "credential.accessKeyId is empty",
            ),
            (
                update(
                    r#"{"userSpaceID": 1, "name": "n", "credential": {"type": "OBS", "accessKeyId": "AK", "secretAccessKey": "******"}}"#,
                ),
                "credential.secretAccessKey is the mask \"******\"",
            ),
            (
                update(r#"{"userSpaceID": 1, "name": "n", "credential": {"type": "NFS"}}"#),
                "credential.type: unknown variant `NFS`",
            ),
            (
                post_json("/v1/userSpace/delete", "{}"),
                "missing field `userSpaceID`",
            ),
            (
                post_json("/v1/userSpace/delete", r#"{"userSpaceID": 0}"#),
                "`userSpaceID` must be a positive id",
            ),
            (
                post_json("/v1/userSpace/delete", r#"{"userSpaceID": 1.5}"#),
                "userSpaceID: invalid type: floating point",
            ),
            (
                s3_test(&|b| {
                    b.as_object_mut().unwrap().remove("storage");
                }),
                "missing field `storage`",
            ),
            (
                s3_test(&|b| {
                    b["storage"].as_object_mut().unwrap().remove("bucket");
                }),
                "storage: missing field `bucket`",
            ),
            (
                s3_test(&|b| b["credential"]["type"] = json!("COS")),
                "credential.type \"COS\" does not match storage.type \"S3\"",
            ),
            (
                s3_test(&|b| b["workingDir"] = json!("a/../b")),
                "workingDir \"a/../b\" must not contain",
            ),
            (
                s3_test(&|b| b["storage"]["pathStyle"] = json!("yes")),
                "storage: invalid type: string \"yes\", expected a boolean",
            ),
        ];
        for (req, needle) in cases {
            let (status, text) = send(&fx, req).await;
            let body = parse(&text);
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["code"], "BadArgument");
            assert_eq!(body["data"], Value::Null);
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} does not contain {needle:?}"
            );
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
    }

    /// A Local user space and a bucket, created through the API; returns their ids.
    async fn space_and_bucket(fx: &Fixture) -> (u64, u64) {
        let local = r#"{"name": "disk", "storage": {"type": "Local", "path": "/srv/jcs"},
            "credential": {"type": "Local"}}"#;
        let (status, text) = send(fx, post_json("/v1/userSpace/create", local)).await;
        assert_eq!(status, 200, "{text}");
        let space = parse(&text)["data"]["userSpace"]["userSpaceID"]
            .as_u64()
            .unwrap();
        let (status, text) = send(fx, post_json("/v1/bucket/create", r#"{"name": "b"}"#)).await;
        assert_eq!(status, 200, "{text}");
        let bucket = parse(&text)["data"]["bucket"]["bucketID"].as_u64().unwrap();
        (space, bucket)
    }

    fn object_paths(fx: &Fixture, package_id: u64) -> Vec<String> {
        fx.coord()
            .objects
            .values()
            .filter(|o| o.package_id == package_id)
            .map(|o| o.path.clone())
            .collect()
    }

    #[tokio::test]
    async fn create_package_imports_a_folder_or_a_file() {
        let fx = Fixture::start().await;
        let (space, bucket) = space_and_bucket(&fx).await;
        fx.put_space_file(space, "data/a.txt", b"alpha");
        fx.put_space_file(space, "data/sub/b.bin", b"beta");
        fx.put_space_file(space, "data/bad\\name", b"x");
        fx.put_space_file(space, "other/c.txt", b"gamma");

        let body = format!(
            r#"{{"userSpaceID": {space}, "path": "/data/", "bucketID": {bucket},
                "name": "imported", "spaceAffinity": 5}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/createPackage", &body)).await;
        assert_eq!(status, 200, "{text}");
        let package_id = parse(&text)["data"]["package"]["packageID"]
            .as_u64()
            .unwrap();
        let golden = json!({"code": "OK", "message": "", "data": {
            "package": {"packageID": package_id, "name": "imported", "bucketID": bucket,
                        "createTime": "2025-06-24T08:31:28.514Z", "redundancy": {"type": "none"}},
            "imported": 2,
            "failures": [{"path": "bad\\name",
                          "message": "path \"bad\\\\name\" contains a backslash; use '/' as separator"}],
        }});
        assert_eq!(parse(&text), golden);
        // Keys in the documented order.
        assert!(
            text.starts_with(r#"{"code":"OK","message":"","data":{"package":{"packageID":"#),
            "{text}"
        );
        assert!(
            text.contains(r#""imported":2,"failures":[{"path":"#),
            "{text}"
        );
        assert_eq!(object_paths(&fx, package_id), ["a.txt", "sub/b.bin"]);
        let sent = fx.coord().imports[0].clone();
        assert_eq!(
            sent,
            pb::ImportPackageRequest {
                user_space_id: space,
                path: "/data/".into(),
                bucket_id: bucket,
                name: "imported".into(),
                space_affinity: 5,
            }
        );

        // A single file: the object is named by the file's name; no affinity = 0.
        for (name, affinity) in [("single", ""), ("single2", r#", "spaceAffinity": null"#)] {
            let body = format!(
                r#"{{"userSpaceID": {space}, "path": "data/sub/b.bin", "bucketID": {bucket},
                    "name": "{name}"{affinity}}}"#
            );
            let (status, text) = send(&fx, post_json("/v1/userSpace/createPackage", &body)).await;
            assert_eq!(status, 200, "{text}");
            let data = &parse(&text)["data"];
            assert_eq!(
                (&data["imported"], &data["failures"]),
                (&json!(1), &json!([]))
            );
            let id = data["package"]["packageID"].as_u64().unwrap();
            assert_eq!(object_paths(&fx, id), ["b.bin"]);
            assert_eq!(fx.coord().imports.last().unwrap().space_affinity, 0);
        }

        // The whole space ("" = its root).
        let body = format!(
            r#"{{"userSpaceID": {space}, "path": "", "bucketID": {bucket}, "name": "all"}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/createPackage", &body)).await;
        assert_eq!(status, 200, "{text}");
        let data = &parse(&text)["data"];
        assert_eq!(data["imported"], 3);
        let id = data["package"]["packageID"].as_u64().unwrap();
        assert_eq!(
            object_paths(&fx, id),
            ["data/a.txt", "data/sub/b.bin", "other/c.txt"]
        );
    }

    #[tokio::test]
    async fn create_package_errors_pass_through() {
        let fx = Fixture::start().await;
        let (space, bucket) = space_and_bucket(&fx).await;
        fx.put_space_file(space, "d/a.txt", b"alpha");
        let create = |space: u64, path: &str, bucket: u64, name: &str| {
            post_json(
                "/v1/userSpace/createPackage",
                &format!(
                    r#"{{"userSpaceID": {space}, "path": "{path}", "bucketID": {bucket}, "name": "{name}"}}"#
                ),
            )
        };
        let (status, _) = send(&fx, create(space, "d", bucket, "p")).await;
        assert_eq!(status, 200);
        let packages = fx.coord().packages.len();

        let (status, text) = send(&fx, create(space, "d", bucket, "p")).await;
        assert_eq!(
            (status, parse(&text)),
            (
                409,
                json!({"code": "DataExists", "message": "package \"p\" already exists", "data": null})
            )
        );
        let (status, text) = send(&fx, create(space, "missing", bucket, "q")).await;
        assert_eq!(
            (status, parse(&text)),
            (
                404,
                json!({"code": "DataNotFound", "message": format!("\"missing\" not found in user space {space}"), "data": null})
            )
        );
        let (status, text) = send(&fx, create(space + 1000, "d", bucket, "q")).await;
        assert_eq!(
            (status, &parse(&text)["code"]),
            (404, &json!("DataNotFound"))
        );
        let (status, text) = send(&fx, create(space, "d", bucket + 1000, "q")).await;
        assert_eq!(
            (status, &parse(&text)["code"]),
            (404, &json!("DataNotFound"))
        );
        // Nothing was created by the refused imports.
        assert_eq!(fx.coord().packages.len(), packages);

        fx.coord()
            .fail_rpc
            .insert("import_package", ErrorCode::Unavailable);
        let (status, text) = send(&fx, create(space, "d", bucket, "q")).await;
        assert_eq!(
            (status, parse(&text)),
            (
                503,
                json!({"code": "OperationFailed", "message": "import_package failed by the test", "data": null})
            )
        );
    }

    #[tokio::test]
    async fn download_package_exports_every_object() {
        let fx = Fixture::start().await;
        let (space, bucket) = space_and_bucket(&fx).await;
        let (_, text) = send(
            &fx,
            post_json(
                "/v1/package/create",
                &format!(r#"{{"bucketID": {bucket}, "name": "p"}}"#),
            ),
        )
        .await;
        let package_id = parse(&text)["data"]["package"]["packageID"]
            .as_u64()
            .unwrap();
        fx.seed(package_id, "a.txt", b"alpha");
        fx.seed(package_id, "dir/b.bin", b"beta");
        let mut unfinished = fx.seed(package_id, "mp.bin", b"");
        unfinished.redundancy = MULTIPART.into();
        fx.coord()
            .objects
            .insert((package_id, "mp.bin".into()), unfinished);

        let body = format!(
            r#"{{"userSpaceID": {space}, "packageID": {package_id}, "rootPath": "/out/"}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/downloadPackage", &body)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            text,
            concat!(
                r#"{"code":"OK","message":"","data":{"exported":2,"failures":[{"path":"mp.bin","#,
                r#""message":"unfinished multipart upload: nothing to export"}]}}"#
            )
        );
        assert_eq!(
            fx.coord().exports[0],
            pb::ExportPackageRequest {
                user_space_id: space,
                package_id,
                root_path: "/out/".into(),
            }
        );
        let files: Vec<(String, Vec<u8>)> = fx
            .coord()
            .space_files
            .iter()
            .map(|((_, path), content)| (path.clone(), content.clone()))
            .collect();
        assert_eq!(
            files,
            [
                ("out/a.txt".to_owned(), b"alpha".to_vec()),
                ("out/dir/b.bin".to_owned(), b"beta".to_vec()),
            ]
        );

        // Round trip: import what was exported, then export it again at the root.
        let import = format!(
            r#"{{"userSpaceID": {space}, "path": "out", "bucketID": {bucket}, "name": "copy"}}"#
        );
        let (status, text) = send(&fx, post_json("/v1/userSpace/createPackage", &import)).await;
        assert_eq!(status, 200, "{text}");
        let copy = parse(&text)["data"]["package"]["packageID"]
            .as_u64()
            .unwrap();
        let body = format!(r#"{{"userSpaceID": {space}, "packageID": {copy}, "rootPath": ""}}"#);
        let (status, text) = send(&fx, post_json("/v1/userSpace/downloadPackage", &body)).await;
        assert_eq!(
            (status, parse(&text)["data"].clone()),
            (200, json!({"exported": 2, "failures": []}))
        );
        assert_eq!(
            fx.coord().space_files[&(space, "dir/b.bin".to_owned())],
            b"beta"
        );

        let (status, text) = send(
            &fx,
            post_json(
                "/v1/userSpace/downloadPackage",
                &format!(r#"{{"userSpaceID": {space}, "packageID": 99999, "rootPath": ""}}"#),
            ),
        )
        .await;
        assert_eq!(
            (status, parse(&text)),
            (
                404,
                json!({"code": "DataNotFound", "message": "package 99999 not found", "data": null})
            )
        );
        let (status, text) = send(
            &fx,
            post_json(
                "/v1/userSpace/downloadPackage",
                &format!(r#"{{"userSpaceID": 99999, "packageID": {package_id}, "rootPath": ""}}"#),
            ),
        )
        .await;
        assert_eq!(
            (status, parse(&text)),
            (
                404,
                json!({"code": "DataNotFound", "message": "user space 99999 not found", "data": null})
            )
        );
        fx.coord()
            .fail_rpc
            .insert("export_package", ErrorCode::PermissionDenied);
        let (status, text) = send(&fx, post_json("/v1/userSpace/downloadPackage", &body)).await;
        assert_eq!(
            (status, &parse(&text)["code"]),
            (403, &json!("OperationFailed"))
        );
    }

    #[tokio::test]
    async fn package_transfer_input_is_checked_before_the_coordinator() {
        let fx = Fixture::start().await;
        let import = |edit: &dyn Fn(&mut Value)| {
            let mut body = json!({"userSpaceID": 1, "path": "data", "bucketID": 2,
                                  "name": "p", "spaceAffinity": 0});
            edit(&mut body);
            post_json("/v1/userSpace/createPackage", &body.to_string())
        };
        let export = |edit: &dyn Fn(&mut Value)| {
            let mut body = json!({"userSpaceID": 1, "packageID": 2, "rootPath": "out"});
            edit(&mut body);
            post_json("/v1/userSpace/downloadPackage", &body.to_string())
        };
        let remove = |field: &'static str| {
            move |b: &mut Value| {
                b.as_object_mut().unwrap().remove(field);
            }
        };
        let cases = [
            (
                import(&remove("userSpaceID")),
                "missing field `userSpaceID`",
            ),
            (
                import(&|b| b["userSpaceID"] = json!(0)),
                "field `userSpaceID` must be a positive id (got 0)",
            ),
            (import(&remove("bucketID")), "missing field `bucketID`"),
            (
                import(&|b| b["bucketID"] = json!(0)),
                "field `bucketID` must be a positive id (got 0)",
            ),
            (
                import(&|b| b["bucketID"] = json!("2")),
                "bucketID: invalid type: string \"2\"",
            ),
            (import(&remove("name")), "missing field `name`"),
            (import(&|b| b["name"] = json!(" ")), "package name is empty"),
            (
                import(&|b| b["name"] = json!("a/b")),
                "package name \"a/b\" contains '/'",
            ),
            (import(&remove("path")), "missing field `path`"),
            (
                import(&|b| b["path"] = json!("a/../b")),
                "path \"a/../b\" must not contain",
            ),
            (
                import(&|b| b["path"] = json!("..")),
                "path \"..\" must not contain",
            ),
            (
                import(&|b| b["path"] = json!("/./x")),
                "path \"/./x\" must not contain",
            ),
            (
                import(&|b| b["path"] = json!("a\\b")),
                "path \"a\\\\b\" must not contain",
            ),
            (
                import(&|b| b["path"] = json!("a//b")),
                "path \"a//b\" must not contain",
            ),
            (
                import(&|b| b["path"] = json!("a\nb")),
                "path \"a\\nb\" contains a control character",
            ),
            (
                import(&|b| b["spaceAffinity"] = json!(-1)),
                "spaceAffinity: invalid value: integer `-1`",
            ),
            (
                export(&remove("userSpaceID")),
                "missing field `userSpaceID`",
            ),
            (
                export(&|b| b["userSpaceID"] = json!(0)),
                "field `userSpaceID` must be a positive id (got 0)",
            ),
            (export(&remove("packageID")), "missing field `packageID`"),
            (
                export(&|b| b["packageID"] = json!(0)),
                "field `packageID` must be a positive id (got 0)",
            ),
            (export(&remove("rootPath")), "missing field `rootPath`"),
            (
                export(&|b| b["rootPath"] = json!("out/..")),
                "rootPath \"out/..\" must not contain",
            ),
            (
                export(&|b| b["rootPath"] = json!("C:\\out")),
                "rootPath \"C:\\\\out\" must not contain",
            ),
            (
                post_json("/v1/userSpace/downloadPackage", ""),
                "invalid request body: it is empty",
            ),
        ];
        for (req, needle) in cases {
            let (status, text) = send(&fx, req).await;
            let body = parse(&text);
            assert_eq!(status, 400, "{body}");
            assert_eq!(body["code"], "BadArgument");
            assert_eq!(body["data"], Value::Null);
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} does not contain {needle:?}"
            );
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
        // Leading and trailing '/' and names with dots are fine.
        for path in ["/", "/a/b/", "a/.hidden/x..y"] {
            assert_eq!(check_space_path("path", path), Ok(()), "{path}");
        }
    }

    /// Import and export copy whole packages: neither the metadata deadline nor the
    /// coordinator channel's per-call deadline applies to them.
    #[tokio::test]
    async fn package_transfers_outlive_the_request_timeout() {
        let fx = Fixture::start().await;
        let (space, bucket) = space_and_bucket(&fx).await;
        fx.put_space_file(space, "d/a.txt", b"alpha");
        let gateway = crate::Gateway::build(crate::GatewayConfig {
            request_timeout: std::time::Duration::from_millis(50),
            ..fx.state.config().clone()
        })
        .unwrap();
        fx.coord().transfer_delay = Some(std::time::Duration::from_millis(300));
        let import = format!(
            r#"{{"userSpaceID": {space}, "path": "d", "bucketID": {bucket}, "name": "slow"}}"#
        );
        let (status, body) = json(
            call(
                gateway.router(),
                post_json("/v1/userSpace/createPackage", &import),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let package_id = body["data"]["package"]["packageID"].as_u64().unwrap();
        let export =
            format!(r#"{{"userSpaceID": {space}, "packageID": {package_id}, "rootPath": "e"}}"#);
        let (status, body) = json(
            call(
                gateway.router(),
                post_json("/v1/userSpace/downloadPackage", &export),
            )
            .await,
        )
        .await;
        assert_eq!(
            (status, &body["data"]),
            (200, &json!({"exported": 1, "failures": []}))
        );
    }

    #[test]
    fn coordinator_json_is_embedded_verbatim_or_refused() {
        let resp = |json: &str| UserSpaceResponse {
            user_space_json: json.to_owned(),
        };
        let data = user_space_data(resp(r#"{"z": 1, "a": {"y": 2, "b": 3}}"#)).unwrap();
        assert_eq!(
            serde_json::to_string(&data).unwrap(),
            r#"{"userSpace":{"z": 1, "a": {"y": 2, "b": 3}}}"#
        );
        for bad in ["", "{", "[1]", "null", "\"x\""] {
            let err = user_space_data(resp(bad)).unwrap_err();
            assert_eq!(err.code, ErrorCode::Internal, "{bad:?}");
        }
    }
}
