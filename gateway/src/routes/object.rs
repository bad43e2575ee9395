//! `/v1/object/*`: upload and download (streaming, see [`crate::data_path`]), listing,
//! move, clone and deletion. Multipart uploads are in [`crate::routes::multipart`].

use axum::extract::State;
use axum::response::Response;
use proto::coordinator::{
    CloneObjectsRequest, Cloning, DeleteObjectsRequest, ListByPathRequest, ListObjectsRequest,
    MoveObjectsRequest, Moving,
};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::{IntoParams, ToSchema};

use crate::data_path::{self, ObjectRef};
use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiMultipart, ApiQuery};
use crate::model::ObjectJson;
use crate::openapi::{Binary, Null, OkEnvelope, UploadForm};
use crate::routes::require_id;
use crate::state::AppState;

/// Page size used to walk a package's objects.
const LIST_PAGE: u32 = 1000;

/// Query of `GET /v1/object/download`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadQuery {
    #[serde(rename = "objectID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    object_id: Option<u64>,
    /// First byte to send; default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Bytes to send from `offset`; absent = to the end.
    #[param(minimum = 0)]
    length: Option<i64>,
}

/// Query of `GET /v1/object/downloadByPath`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct DownloadByPathQuery {
    #[serde(rename = "packageID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    package_id: Option<u64>,
    /// Object path in the package.
    #[param(value_type = String, required = true, min_length = 1, max_length = 1024)]
    path: Option<String>,
    /// First byte to send; default 0.
    #[param(minimum = 0)]
    offset: Option<i64>,
    /// Bytes to send from `offset`; absent = to the end.
    #[param(minimum = 0)]
    length: Option<i64>,
}

/// Query of `GET /v1/object/listByPath`. The flags and `maxKeys` are taken as text so that
/// their errors can name the field and say what is accepted.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListByPathQuery {
    #[serde(rename = "packageID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    package_id: Option<u64>,
    /// The object path, or with `isPrefix=true` a prefix (may then be empty or absent).
    path: Option<String>,
    /// `path` is a prefix. Go booleans: `true`/`false`, `1`/`0`, `t`/`f`, `TRUE`, `True`...
    #[serde(rename = "isPrefix")]
    #[param(value_type = Option<bool>)]
    is_prefix: Option<String>,
    /// With a prefix: list one level, folding deeper paths into `commonPrefixes`.
    #[serde(rename = "noRecursive")]
    #[param(value_type = Option<bool>)]
    no_recursive: Option<String>,
    /// Page size; absent or 0 = the default (1000, also the maximum).
    #[serde(rename = "maxKeys")]
    #[param(value_type = Option<u32>, minimum = 0)]
    max_keys: Option<String>,
    /// `nextContinuationToken` of the previous page.
    #[serde(rename = "continuationToken")]
    continuation_token: Option<String>,
}

/// Query of `GET /v1/object/getPackageObjects`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PackageObjectsQuery {
    #[serde(rename = "packageID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    package_id: Option<u64>,
}

/// Body of `POST /v1/object/delete`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = ObjectDeleteBody)]
pub(crate) struct DeleteBody {
    /// Objects to delete; unknown ids are ignored.
    #[serde(rename = "objectIDs")]
    object_ids: Vec<u64>,
}

/// One entry of `POST /v1/object/move`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct MovingJson {
    #[serde(rename = "objectID")]
    #[schema(value_type = u64, minimum = 1)]
    object_id: Option<u64>,
    /// Target package.
    #[serde(rename = "packageID")]
    #[schema(value_type = u64, minimum = 1)]
    package_id: Option<u64>,
    /// Target path.
    #[schema(value_type = String)]
    path: Option<String>,
}

/// Body of `POST /v1/object/move`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct MoveBody {
    movings: Vec<MovingJson>,
}

/// One entry of `POST /v1/object/clone`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CloningJson {
    /// Source object.
    #[serde(rename = "objectID")]
    #[schema(value_type = u64, minimum = 1)]
    object_id: Option<u64>,
    #[serde(rename = "newPath")]
    #[schema(value_type = String)]
    new_path: Option<String>,
    #[serde(rename = "newPackageID")]
    #[schema(value_type = u64, minimum = 1)]
    new_package_id: Option<u64>,
}

/// Body of `POST /v1/object/clone`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CloneBody {
    clonings: Vec<CloningJson>,
}

/// `data` of listByPath: all four fields are always present.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ListByPathData {
    #[serde(rename = "nextContinuationToken")]
    next_continuation_token: String,
    #[serde(rename = "isTruncated")]
    is_truncated: bool,
    #[serde(rename = "commonPrefixes")]
    common_prefixes: Vec<String>,
    objects: Vec<ObjectJson>,
}

/// `data` of move: the ids that were moved.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MoveData {
    successes: Vec<u64>,
}

/// `data` of clone: one entry per request entry, in order; `null` where it failed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CloneData {
    objects: Vec<Option<ObjectJson>>,
}

/// `data` of upload.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UploadedData {
    uploadeds: Vec<ObjectJson>,
}

/// `data` of getPackageObjects.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ObjectsData {
    objects: Vec<ObjectJson>,
}

/// `POST /v1/object/upload` (multipart). Runs in its own task so that a client that goes
/// away cannot cancel the pipeline halfway through its commits.
#[utoipa::path(post, path = "/v1/object/upload", tag = "object",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The uploaded objects, in request order", body = OkEnvelope<UploadedData>)))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    ApiMultipart(multipart): ApiMultipart,
) -> Result<ApiOk<UploadedData>, ApiError> {
    let task = tokio::spawn(
        common::request_id::inherit(data_path::upload(state, multipart)).in_current_span(),
    );
    match task.await {
        Ok(result) => result.map(|uploadeds| ApiOk(UploadedData { uploadeds })),
        Err(err) => Err(ApiError::internal(format!("upload task failed: {err}"))),
    }
}

/// `GET /v1/object/download?objectID=&offset=&length=`.
#[utoipa::path(get, path = "/v1/object/download", tag = "object", params(DownloadQuery),
    responses((status = 200, description = "The object's bytes (or the requested range)",
        content_type = "application/octet-stream", body = Binary,
        headers(("Content-Disposition" = String, description = "`attachment` with the object's file name"),
            ("Content-Length" = u64, description = "Bytes in the body")))))]
pub(crate) async fn download(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    let object_id = require_id("objectID", query.object_id)?;
    data_path::download(&state, ObjectRef::Id(object_id), query.offset, query.length).await
}

/// `GET /v1/object/downloadByPath?packageID=&path=&offset=&length=`: like download, with the
/// object named by its package and path.
#[utoipa::path(get, path = "/v1/object/downloadByPath", tag = "object", params(DownloadByPathQuery),
    responses((status = 200, description = "The object's bytes (or the requested range)",
        content_type = "application/octet-stream", body = Binary,
        headers(("Content-Disposition" = String, description = "`attachment` with the object's file name"),
            ("Content-Length" = u64, description = "Bytes in the body")))))]
pub(crate) async fn download_by_path(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DownloadByPathQuery>,
) -> Result<Response, ApiError> {
    let package_id = require_id("packageID", query.package_id)?;
    let path = query
        .path
        .ok_or_else(|| ApiError::bad_argument("missing field `path`"))?;
    common::path::validate_object_path(&path)
        .map_err(|e| ApiError::bad_argument(format!("invalid field `path`: {e}")))?;
    data_path::download(
        &state,
        ObjectRef::Path { package_id, path },
        query.offset,
        query.length,
    )
    .await
}

/// A boolean query parameter, read like Go's `strconv.ParseBool` (`true`/`false`, `1`/`0`,
/// `t`/`f`, `TRUE`/`FALSE`, `True`/`False`); absent or empty is `false`.
pub(crate) fn parse_bool(field: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value.unwrap_or("") {
        "" | "false" | "0" | "f" | "F" | "FALSE" | "False" => Ok(false),
        "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
        other => Err(ApiError::bad_argument(format!(
            "invalid query string: `{field}` must be `true` or `false` (got {other:?})"
        ))),
    }
}

/// `maxKeys`: a non-negative integer; absent, empty and `0` mean the default (sent as 0).
/// Values beyond `u32` saturate; the coordinator caps every page at 1000 anyway.
pub(crate) fn parse_max_keys(value: Option<&str>) -> Result<u32, ApiError> {
    let text = value.unwrap_or("");
    if text.is_empty() {
        return Ok(0);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_argument(format!(
            "invalid query string: `maxKeys` must be a non-negative integer (got {text:?})"
        )));
    }
    // All digits: only overflow can fail, and it saturates.
    let n: u64 = text.parse().unwrap_or(u64::MAX);
    Ok(u32::try_from(n).unwrap_or(u32::MAX))
}

/// `GET /v1/object/listByPath`: one page of an S3-style listing (see `ListByPath`).
#[utoipa::path(get, path = "/v1/object/listByPath", tag = "object", params(ListByPathQuery),
    responses((status = 200, description = "One page of the listing", body = OkEnvelope<ListByPathData>)))]
pub(crate) async fn list_by_path(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListByPathQuery>,
) -> Result<ApiOk<ListByPathData>, ApiError> {
    let package_id = require_id("packageID", query.package_id)?;
    let is_prefix = parse_bool("isPrefix", query.is_prefix.as_deref())?;
    let no_recursive = parse_bool("noRecursive", query.no_recursive.as_deref())?;
    let max_keys = parse_max_keys(query.max_keys.as_deref())?;
    let path = match query.path {
        Some(path) if !path.is_empty() || is_prefix => path,
        None if is_prefix => String::new(),
        Some(_) => {
            return Err(ApiError::bad_argument(
                "field `path` must not be empty unless isPrefix=true",
            ));
        }
        None => return Err(ApiError::bad_argument("missing field `path`")),
    };
    let page = state
        .coordinator()
        .list_by_path(ListByPathRequest {
            package_id,
            path,
            is_prefix,
            no_recursive,
            max_keys,
            continuation_token: query.continuation_token.unwrap_or_default(),
        })
        .await?
        .into_inner();
    if page.is_truncated && page.next_continuation_token.is_empty() {
        return Err(ApiError::internal(
            "coordinator returned a truncated listing without a continuation token",
        ));
    }
    Ok(ApiOk(ListByPathData {
        next_continuation_token: if page.is_truncated {
            page.next_continuation_token
        } else {
            String::new()
        },
        is_truncated: page.is_truncated,
        common_prefixes: page.common_prefixes,
        objects: page.objects.into_iter().map(ObjectJson::from).collect(),
    }))
}

/// `POST /v1/object/move`: metadata only. Each entry succeeds or fails on its own (a bad
/// path, an unknown object or a taken target fails just that entry); failures are logged
/// and left out of `successes`. Malformed entries (a missing field, an id of 0) reject the
/// whole request before the coordinator is called.
#[utoipa::path(post, path = "/v1/object/move", tag = "object", request_body = MoveBody,
    responses((status = 200, description = "The ids that were moved", body = OkEnvelope<MoveData>)))]
pub(crate) async fn move_objects(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<MoveBody>,
) -> Result<ApiOk<MoveData>, ApiError> {
    let movings = body
        .movings
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(Moving {
                object_id: require_id(&format!("movings[{i}].objectID"), m.object_id)?,
                package_id: require_id(&format!("movings[{i}].packageID"), m.package_id)?,
                path: m.path.ok_or_else(|| {
                    ApiError::bad_argument(format!("missing field `movings[{i}].path`"))
                })?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if movings.is_empty() {
        return Ok(ApiOk(MoveData {
            successes: Vec::new(),
        }));
    }
    let requested = movings.len();
    let resp = state
        .coordinator()
        .move_objects(MoveObjectsRequest { movings })
        .await?
        .into_inner();
    for failure in &resp.failures {
        tracing::info!(
            object_id = failure.object_id,
            reason = %failure.message,
            "object not moved"
        );
    }
    tracing::info!(
        requested,
        moved = resp.successes.len(),
        failed = resp.failures.len(),
        "objects moved"
    );
    Ok(ApiOk(MoveData {
        successes: resp.successes,
    }))
}

/// `POST /v1/object/clone`: new objects sharing the sources' bytes. The answer has one
/// entry per request entry, in order; an entry that failed is `null` (the reason is
/// logged). Malformed entries reject the whole request.
#[utoipa::path(post, path = "/v1/object/clone", tag = "object", request_body = CloneBody,
    responses((status = 200, description = "One entry per request entry, `null` where it failed", body = OkEnvelope<CloneData>)))]
pub(crate) async fn clone_objects(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CloneBody>,
) -> Result<ApiOk<CloneData>, ApiError> {
    let clonings = body
        .clonings
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            Ok(Cloning {
                object_id: require_id(&format!("clonings[{i}].objectID"), c.object_id)?,
                new_path: c.new_path.ok_or_else(|| {
                    ApiError::bad_argument(format!("missing field `clonings[{i}].newPath`"))
                })?,
                new_package_id: require_id(
                    &format!("clonings[{i}].newPackageID"),
                    c.new_package_id,
                )?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if clonings.is_empty() {
        return Ok(ApiOk(CloneData {
            objects: Vec::new(),
        }));
    }
    let requested = clonings.len();
    let sources: Vec<u64> = clonings.iter().map(|c| c.object_id).collect();
    let resp = state
        .coordinator()
        .clone_objects(CloneObjectsRequest { clonings })
        .await?
        .into_inner();
    if resp.results.len() != requested {
        return Err(ApiError::internal(format!(
            "coordinator answered {} clone results for {requested} entries",
            resp.results.len()
        )));
    }
    let objects: Vec<Option<ObjectJson>> = resp
        .results
        .into_iter()
        .zip(sources)
        .map(|(result, source)| match result.object {
            Some(object) => Some(ObjectJson::from(object)),
            None => {
                tracing::info!(object_id = source, reason = %result.error, "object not cloned");
                None
            }
        })
        .collect();
    let cloned = objects.iter().filter(|o| o.is_some()).count();
    tracing::info!(requested, cloned, "objects cloned");
    Ok(ApiOk(CloneData { objects }))
}

/// `GET /v1/object/getPackageObjects?packageID=`: every object of the package, by path.
#[utoipa::path(get, path = "/v1/object/getPackageObjects", tag = "object", params(PackageObjectsQuery),
    responses((status = 200, description = "Every object of the package, by path", body = OkEnvelope<ObjectsData>)))]
pub(crate) async fn get_package_objects(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PackageObjectsQuery>,
) -> Result<ApiOk<ObjectsData>, ApiError> {
    let package_id = require_id("packageID", query.package_id)?;
    let mut coordinator = state.coordinator();
    let mut objects = Vec::new();
    let mut start_after = String::new();
    loop {
        let page = coordinator
            .list_objects(ListObjectsRequest {
                package_id,
                prefix: String::new(),
                start_after: start_after.clone(),
                limit: LIST_PAGE,
            })
            .await?
            .into_inner();
        let last = page.objects.last().map(|o| o.path.clone());
        objects.extend(page.objects.into_iter().map(ObjectJson::from));
        match last {
            Some(path) if page.more => start_after = path,
            None if page.more => {
                return Err(ApiError::internal(
                    "coordinator returned an empty page with more = true",
                ));
            }
            _ => break,
        }
    }
    Ok(ApiOk(ObjectsData { objects }))
}

/// `POST /v1/object/delete`: OK even for ids that do not exist, and for an empty list.
#[utoipa::path(post, path = "/v1/object/delete", tag = "object", request_body = DeleteBody,
    responses((status = 200, description = "Deleted", body = OkEnvelope<Null>)))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<DeleteBody>,
) -> Result<ApiOk<()>, ApiError> {
    if let Some(i) = body.object_ids.iter().position(|id| *id == 0) {
        return Err(ApiError::bad_argument(format!(
            "field `objectIDs[{i}]` must be a positive id (got 0)"
        )));
    }
    if body.object_ids.is_empty() {
        return Ok(ApiOk(()));
    }
    let count = body.object_ids.len();
    state
        .coordinator()
        .delete_objects(DeleteObjectsRequest {
            object_ids: body.object_ids,
        })
        .await?;
    tracing::info!(count, "objects deleted");
    Ok(ApiOk(()))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use bytes::Bytes;
    use futures::StreamExt;
    use serde_json::json;

    use crate::testing::*;

    /// A fixture with package 1 (objects are uploaded into it).
    async fn fixture() -> Fixture {
        Fixture::start().await
    }

    fn info(package_id: u64) -> String {
        format!(r#"{{"userID": 1, "packageID": {package_id}}}"#)
    }

    async fn upload(fx: &Fixture, parts: &[Part<'_>]) -> (u16, serde_json::Value) {
        let body = Body::from(multipart_body(parts));
        json(call(fx.app(), upload_request(body)).await).await
    }

    #[tokio::test]
    async fn upload_streams_every_file_then_commits_in_order() {
        let fx = fixture().await;
        let big: Vec<u8> = (0..(2 * proto::CHUNK_SIZE + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let info = info(1);
        let (status, body) = upload(
            &fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some("test.txt"), b"testdata"),
                ("files", Some("a%2Fb%2Ftest2.txt"), &big),
                ("files", Some("empty"), b""),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let uploadeds = body["data"]["uploadeds"].as_array().unwrap();
        let paths: Vec<_> = uploadeds
            .iter()
            .map(|o| o["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["test.txt", "a/b/test2.txt", "empty"]);
        let first = &uploadeds[0];
        assert_eq!(first["size"], "8");
        assert_eq!(first["packageID"], 1);
        assert_eq!(first["redundancy"], json!({"type": "none"}));
        assert_eq!(
            first["fileHash"],
            format!("Full{}", sha256_hex(b"testdata").to_uppercase())
        );
        assert_eq!(uploadeds[1]["size"], big.len().to_string());
        assert_eq!(uploadeds[2]["size"], "0");

        let coord = fx.coord();
        // Small files are reserved and stored concurrently: any order.
        let mut begun: Vec<_> = coord
            .begins
            .iter()
            .map(|(p, path, a)| (*p, path.as_str(), *a))
            .collect();
        begun.sort_unstable();
        assert_eq!(
            begun,
            [(1, "a/b/test2.txt", 0), (1, "empty", 0), (1, "test.txt", 0)]
        );
        // Every commit happens after every file was streamed.
        let first_commit = coord
            .calls
            .iter()
            .position(|c| *c == "commit_upload")
            .unwrap();
        let last_begin = coord
            .calls
            .iter()
            .rposition(|c| *c == "begin_upload")
            .unwrap();
        assert!(last_begin < first_commit, "{:?}", coord.calls);
        assert_eq!(coord.commits.len(), 3);
        assert!(coord.reservations.is_empty(), "every upload was committed");
        drop(coord);

        let agent = fx.agent();
        assert_eq!(agent.puts.len(), 3);
        for put in &agent.puts {
            assert!(put.ticket_first && put.finished, "{put:?}");
            assert!(
                put.chunk_sizes.iter().all(|n| *n <= proto::CHUNK_SIZE),
                "{put:?}"
            );
        }
        assert_eq!(
            agent.puts[1].chunk_sizes,
            [
                vec![
                    crate::data_path::PUT_PIECE_SIZE;
                    2 * proto::CHUNK_SIZE / crate::data_path::PUT_PIECE_SIZE
                ],
                vec![12345]
            ]
            .concat()
        );
        assert!(agent.puts[2].chunk_sizes.is_empty());
        // Files that end within their first chunk go in one PutSmallShard call.
        let unary: Vec<bool> = agent.puts.iter().map(|p| p.unary).collect();
        assert_eq!(unary, [true, false, true]);
        assert_eq!(agent.shards[&sha256_hex(&big)], big);
    }

    #[tokio::test]
    async fn upload_passes_affinity_and_ignores_unknown_info_fields() {
        let fx = fixture().await;
        let info = r#"{"packageID": 4, "affinity": 9, "whatever": [1]}"#;
        let (status, body) = upload(
            &fx,
            &[("info", None, info.as_bytes()), ("files", Some("x"), b"1")],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(fx.coord().begins, [(4, "x".to_owned(), 9)]);
    }

    #[tokio::test]
    async fn malformed_uploads_are_rejected_before_the_coordinator() {
        let fx = fixture().await;
        let info = info(1);
        let info = info.as_bytes();
        let cases: Vec<(Vec<Part<'_>>, &str)> = vec![
            (vec![], "missing the `info` part"),
            (
                vec![("files", Some("a"), b"x")],
                "must be named `info`, got `files`",
            ),
            (
                vec![("files", Some("a"), b"x"), ("info", None, info)],
                "must be named `info`, got `files`",
            ),
            (vec![("info", None, info)], "no `files` part"),
            (
                vec![("info", None, b"{not json")],
                "invalid `info` part: key must be a string",
            ),
            (
                vec![("info", None, b"")],
                "invalid `info` part: it is empty",
            ),
            (
                vec![("info", None, b"{}")],
                "invalid `info` part: missing field `packageID`",
            ),
            (
                vec![("info", None, br#"{"packageID": 0}"#)],
                "`packageID` must be a positive id",
            ),
            (
                vec![("info", None, br#"{"packageID": "1"}"#)],
                "invalid `info` part: packageID: invalid type",
            ),
            (
                vec![("info", None, info), ("file", Some("a"), b"x")],
                "unexpected part `file`",
            ),
            (
                vec![("info", None, info), ("info", None, info)],
                "appear only once",
            ),
            (
                vec![("info", None, info), ("files", None, b"x")],
                "has no (UTF-8) filename",
            ),
            (
                vec![("info", None, info), ("files", Some("%zz"), b"x")],
                "invalid filename \"%zz\"",
            ),
            (
                vec![("info", None, info), ("files", Some("%FF"), b"x")],
                "not valid UTF-8",
            ),
            (
                vec![("info", None, info), ("files", Some("..%2Fx"), b"x")],
                "'..' segment",
            ),
            (
                vec![("info", None, info), ("files", Some("%2Fabs"), b"x")],
                "absolute",
            ),
            (
                vec![("info", None, info), ("files", Some("a%2F%2Fb"), b"x")],
                "empty segment",
            ),
            (
                vec![("info", None, info), ("files", Some(""), b"x")],
                "path is empty",
            ),
        ];
        for (parts, needle) in cases {
            let (status, body) = upload(&fx, &parts).await;
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
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
    }

    #[tokio::test]
    async fn upload_needs_a_multipart_body() {
        let fx = fixture().await;
        let req = post_json("/v1/object/upload", r#"{"packageID": 1}"#);
        let (status, body) = json(call(fx.app(), req).await).await;
        assert_eq!(status, 400);
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("multipart/form-data")
        );
        let req = axum::http::Request::get("/v1/object/upload")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(fx.app(), req).await.status(), 405);
    }

    #[tokio::test]
    async fn too_many_files_are_refused() {
        let fx = Fixture::start_with(crate::GatewayConfig {
            max_upload_files: 1,
            ..Default::default()
        })
        .await;
        let info = info(1);
        let (status, body) = upload(
            &fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some("a"), b"1"),
                ("files", Some("b"), b"2"),
            ],
        )
        .await;
        assert_eq!(status, 400);
        assert!(body["message"].as_str().unwrap().contains("at most 1"));
        let coord = fx.coord();
        assert!(
            coord.commits.is_empty(),
            "the streamed file is not committed"
        );
        assert!(coord.objects.is_empty());
        // The first (small) file's task may have reserved before the request failed.
        assert!(coord.begins.len() <= 1);
        assert!(coord.reservations.len() <= 1, "a reservation is left alone");
    }

    #[tokio::test]
    async fn a_bad_later_part_commits_none_of_the_earlier_files() {
        let fx = fixture().await;
        let info = info(1);
        let (status, body) = upload(
            &fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some("good.txt"), b"good"),
                ("files", Some("..%2Fevil"), b"bad"),
            ],
        )
        .await;
        assert_eq!(status, 400, "{body}");
        let coord = fx.coord();
        assert!(coord.commits.is_empty(), "nothing becomes visible");
        assert!(coord.objects.is_empty());
        // The small file's task may or may not have reserved before it was aborted.
        for kind in coord.reservations.values() {
            assert_eq!(
                kind,
                &PendingKind::Object {
                    package_id: 1,
                    path: "good.txt".into()
                },
                "the stored file stays uncommitted"
            );
        }
    }

    /// Upload a file part `a` whose body sends `bytes` bytes, then fails; returns the
    /// (status, envelope) answered. With `streams`, the failure comes only once the agent
    /// has seen the PutShard stream open.
    async fn upload_breaking_after(
        fx: &Fixture,
        bytes: usize,
        streams: bool,
    ) -> (u16, serde_json::Value) {
        let info = info(1);
        let mut head =
            multipart_body(&[("info", None, info.as_bytes()), ("files", Some("a"), b"")]);
        // Cut the closing of the file part off and stream some bytes, then fail.
        let tail = format!("\r\n--{BOUNDARY}--\r\n");
        head.truncate(head.len() - tail.len());
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let response = tokio::spawn(call(fx.app(), upload_request(body)));
        tx.send(Ok(Bytes::from(head))).await.unwrap();
        let wait = std::time::Duration::from_secs(5);
        tx.send(Ok(Bytes::from(vec![7u8; bytes]))).await.unwrap();
        if streams {
            let begun =
                common::testing::wait_until(wait, || async { !fx.coord().begins.is_empty() });
            assert!(begun.await, "the file part started streaming");
            let opened =
                common::testing::wait_until(wait, || async { fx.agent().put_streams_opened > 0 });
            assert!(opened.await, "the PutShard stream opened");
        }
        tx.send(Err(std::io::Error::other("client went away")))
            .await
            .unwrap();
        json(response.await.unwrap()).await
    }

    #[tokio::test]
    async fn a_small_body_that_breaks_mid_file_reaches_no_agent() {
        let fx = fixture().await;
        let (status, body) = upload_breaking_after(&fx, 300_000, false).await;
        assert_eq!(status, 400, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("failed to read the body of file \"a\""),
            "{message}"
        );
        assert!(fx.coord().commits.is_empty());
        // Less than one chunk was read before the failure: the part never got as far as a
        // reservation, and nothing was sent to the agent.
        assert!(fx.coord().reservations.is_empty());
        assert_eq!(fx.agent().put_streams_opened, 0);
        assert!(fx.agent().puts.is_empty(), "{:?}", fx.agent().puts);
        assert!(fx.agent().shards.is_empty());
    }

    #[tokio::test]
    async fn a_body_that_breaks_mid_file_is_never_finished() {
        let fx = fixture().await;
        // More than one chunk: the bytes are already streaming to the agent.
        let (status, body) = upload_breaking_after(&fx, proto::CHUNK_SIZE + 300_000, true).await;
        assert_eq!(status, 400, "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("failed to read the body of file \"a\""),
            "{message}"
        );
        assert!(
            message.ends_with("failed to read stream: client went away"),
            "{message}"
        );

        assert!(fx.coord().commits.is_empty());
        assert_eq!(fx.coord().reservations.len(), 1, "never committed");
        // The agent saw the stream cancelled without `finish` (possibly after the response).
        let done = common::testing::wait_until(std::time::Duration::from_secs(5), || async {
            !fx.agent().puts.is_empty()
        })
        .await;
        assert!(done);
        let agent = fx.agent();
        assert!(!agent.puts[0].finished, "{:?}", agent.puts[0]);
        assert!(agent.shards.is_empty());
    }

    #[tokio::test]
    async fn a_failed_commit_fails_the_request_and_leaves_the_other_files_committed() {
        let fx = fixture().await;
        fx.coord().fail_commit_path = Some("b".into());
        let info = info(1);
        let (status, body) = upload(
            &fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some("a"), b"1"),
                ("files", Some("b"), b"2"),
                ("files", Some("c"), b"3"),
            ],
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("OperationFailed"))
        );
        // The files commit together, each on its own: the failed one stays reserved.
        let coord = fx.coord();
        assert_eq!(coord.commits.len(), 2);
        let mut visible: Vec<_> = coord.objects.keys().map(|(_, p)| p.as_str()).collect();
        visible.sort_unstable();
        assert_eq!(visible, ["a", "c"]);
        let uncommitted: Vec<_> = coord
            .reservations
            .values()
            .map(|kind| match kind {
                PendingKind::Object { path, .. } => path.as_str(),
                other => panic!("unexpected reservation {other:?}"),
            })
            .collect();
        assert_eq!(uncommitted, ["b"]);
    }

    /// Upload `content` as `path` and return its object id.
    async fn put(fx: &Fixture, path: &str, content: &[u8]) -> u64 {
        let info = info(1);
        let (status, body) = upload(
            fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some(path), content),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["data"]["uploadeds"][0]["objectID"].as_u64().unwrap()
    }

    async fn download(fx: &Fixture, query: &str) -> axum::response::Response {
        call(fx.app(), http_get(&format!("/v1/object/download?{query}"))).await
    }

    /// Check the range table of `/v1/object/<endpoint>?<target>&...` on an object holding
    /// `0123456789` at `dir/héllo.txt`.
    async fn check_ranges(fx: &Fixture, endpoint: &str, target: &str) {
        fx.agent().get_chunk_size = 3;
        for (range, expected) in [
            ("", &b"0123456789"[..]),
            ("&offset=3", b"3456789"),
            ("&offset=3&length=4", b"3456"),
            ("&offset=8&length=100", b"89"),
            ("&offset=10", b""),
            ("&length=0", b""),
        ] {
            let query = format!("{target}{range}");
            let uri = format!("/v1/object/{endpoint}?{query}");
            let resp = call(fx.app(), http_get(&uri)).await;
            assert_eq!(resp.status(), 200, "{query}");
            let headers = resp.headers().clone();
            assert_eq!(headers["content-type"], "application/octet-stream");
            assert_eq!(
                headers["content-length"],
                expected.len().to_string(),
                "{query}"
            );
            assert_eq!(
                headers["content-disposition"],
                "attachment; filename*=UTF-8''h%C3%A9llo.txt"
            );
            assert_eq!(body_bytes(resp).await, expected, "{query}");
        }
    }

    #[tokio::test]
    async fn download_streams_the_requested_range() {
        let fx = fixture().await;
        let id = put(&fx, "dir%2Fh%C3%A9llo.txt", b"0123456789").await;
        check_ranges(&fx, "download", &format!("objectID={id}")).await;
    }

    #[tokio::test]
    async fn download_errors_before_the_first_byte_are_envelopes() {
        let fx = fixture().await;
        let id = put(&fx, "f", b"0123456789").await;
        let calls_before = fx.coord().calls.len();
        for (query, needle) in [
            (String::new(), "missing field `objectID`"),
            ("objectID=0".to_owned(), "`objectID` must be a positive id"),
            (
                format!("objectID={id}&offset=-1"),
                "offset must not be negative (got -1)",
            ),
            (
                format!("objectID={id}&length=-2"),
                "length must not be negative (got -2)",
            ),
            (
                format!("objectID={id}&offset=x"),
                "invalid query string: offset",
            ),
        ] {
            let (status, body) = json(download(&fx, &query).await).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("BadArgument")),
                "{query}"
            );
            let message = body["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} does not contain {needle:?}"
            );
        }
        assert_eq!(
            fx.coord().calls.len(),
            calls_before,
            "rejected before the coordinator"
        );

        let (status, body) = json(download(&fx, &format!("objectID={id}&offset=11")).await).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["message"],
            "offset 11 is past the end of the object (size 10)"
        );

        let (status, body) = json(download(&fx, "objectID=999").await).await;
        assert_eq!((status, body["code"].as_str()), (404, Some("DataNotFound")));

        // The agent fails before sending anything: still an envelope.
        fx.agent().fail_get_after_chunks = Some(0);
        let (status, body) = json(download(&fx, &format!("objectID={id}")).await).await;
        assert_eq!(status, 500, "{body}");
        fx.agent().shards.clear();
        fx.agent().fail_get_after_chunks = None;
        let (status, _) = json(download(&fx, &format!("objectID={id}")).await).await;
        assert_eq!(status, 404);
    }

    #[tokio::test]
    async fn a_mid_stream_failure_aborts_the_body() {
        let fx = fixture().await;
        let id = put(&fx, "f", b"0123456789").await;
        fx.agent().get_chunk_size = 3;
        fx.agent().fail_get_after_chunks = Some(2);
        let resp = download(&fx, &format!("objectID={id}")).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-length"], "10");
        let items: Vec<_> = resp.into_body().into_data_stream().collect().await;
        assert!(items.iter().take(2).all(Result::is_ok));
        assert!(items.last().unwrap().is_err(), "{items:?}");
    }

    #[tokio::test]
    async fn package_objects_are_listed_across_pages() {
        let fx = fixture().await;
        fx.coord().page_cap = 2;
        let info = info(1);
        let (status, _) = upload(
            &fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some("e"), b"5"),
                ("files", Some("a"), b"1"),
                ("files", Some("c"), b"3"),
                ("files", Some("b"), b"2"),
                ("files", Some("d"), b"4"),
            ],
        )
        .await;
        assert_eq!(status, 200);
        let (status, body) = json(
            call(
                fx.app(),
                http_get("/v1/object/getPackageObjects?packageID=1"),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let paths: Vec<_> = body["data"]["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["path"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(paths, ["a", "b", "c", "d", "e"]);
        assert_eq!(fx.coord().list_requests, ["", "b", "d"]);

        let (_, body) = json(
            call(
                fx.app(),
                http_get("/v1/object/getPackageObjects?packageID=2"),
            )
            .await,
        )
        .await;
        assert_eq!(body["data"], json!({"objects": []}));
    }

    #[tokio::test]
    async fn delete_is_ok_for_missing_and_empty_lists() {
        let fx = fixture().await;
        let id = put(&fx, "f", b"x").await;
        let req = post_json(
            "/v1/object/delete",
            &format!(r#"{{"objectIDs": [{id}, 424242]}}"#),
        );
        let (status, body) = json(call(fx.app(), req).await).await;
        assert_eq!(
            (status, body),
            (200, json!({"code": "OK", "message": "", "data": null}))
        );
        assert!(fx.coord().objects.is_empty());

        let calls = fx.coord().calls.len();
        let (status, _) = json(
            call(
                fx.app(),
                post_json("/v1/object/delete", r#"{"objectIDs": []}"#),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            fx.coord().calls.len(),
            calls,
            "empty list needs no coordinator call"
        );

        for (body, needle) in [
            ("{}", "missing field `objectIDs`"),
            (r#"{"objectIDs": [1, 0]}"#, "`objectIDs[1]`"),
            (r#"{"objectIDs": ["1"]}"#, "objectIDs[0]: invalid type"),
        ] {
            let (status, resp) =
                json(call(fx.app(), post_json("/v1/object/delete", body)).await).await;
            assert_eq!(status, 400);
            let message = resp["message"].as_str().unwrap();
            assert!(
                message.contains(needle),
                "{message:?} does not contain {needle:?}"
            );
        }
    }

    async fn get_json(fx: &Fixture, uri: &str) -> (u16, serde_json::Value) {
        json(call(fx.app(), http_get(uri)).await).await
    }

    async fn post(fx: &Fixture, uri: &str, body: &str) -> (u16, serde_json::Value) {
        json(call(fx.app(), post_json(uri, body)).await).await
    }

    /// A 400 `BadArgument` envelope whose message contains `needle`.
    fn assert_bad(status: u16, body: &serde_json::Value, needle: &str) {
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

    #[test]
    fn bools_and_max_keys_parse_like_go() {
        use super::{parse_bool, parse_max_keys};
        for t in ["true", "1", "t", "T", "TRUE", "True"] {
            assert_eq!(parse_bool("isPrefix", Some(t)), Ok(true), "{t}");
        }
        for f in ["false", "0", "f", "F", "FALSE", "False", ""] {
            assert_eq!(parse_bool("isPrefix", Some(f)), Ok(false), "{f}");
        }
        assert_eq!(parse_bool("isPrefix", None), Ok(false));
        for bad in ["yes", "2", "tRuE", " true"] {
            let err = parse_bool("noRecursive", Some(bad)).unwrap_err();
            assert!(err.message.contains("`noRecursive`"), "{}", err.message);
        }
        assert_eq!(parse_max_keys(None), Ok(0));
        assert_eq!(parse_max_keys(Some("")), Ok(0));
        assert_eq!(parse_max_keys(Some("0")), Ok(0));
        assert_eq!(parse_max_keys(Some("17")), Ok(17));
        assert_eq!(parse_max_keys(Some("4294967296")), Ok(u32::MAX));
        assert_eq!(
            parse_max_keys(Some("99999999999999999999999")),
            Ok(u32::MAX)
        );
        for bad in ["-1", "1.5", "abc", "+3", " 3"] {
            let err = parse_max_keys(Some(bad)).unwrap_err();
            assert!(err.message.contains("`maxKeys`"), "{}", err.message);
        }
    }

    /// Package 1: `a/1.txt`, `a/2.txt`, `a/b/x`, `a/b/y`, `a/c/z`, `b.txt`; package 2: `a/q`.
    fn seed_tree(fx: &Fixture) -> Vec<proto::coordinator::Object> {
        ["a/1.txt", "a/2.txt", "a/b/x", "a/b/y", "a/c/z", "b.txt"]
            .iter()
            .map(|path| fx.seed(1, path, path.as_bytes()))
            .chain(std::iter::once(fx.seed(2, "a/q", b"q")))
            .collect()
    }

    #[tokio::test]
    async fn list_by_path_folds_directories_golden() {
        let fx = fixture().await;
        let objects = seed_tree(&fx);
        let (status, body) = get_json(
            &fx,
            "/v1/object/listByPath?packageID=1&path=a%2F&isPrefix=true&noRecursive=true",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let hash = |s: &str| format!("Full{}", sha256_hex(s.as_bytes()).to_uppercase());
        let object = |o: &proto::coordinator::Object| {
            json!({
                "objectID": o.object_id, "packageID": 1, "path": o.path,
                "size": o.size.to_string(), "fileHash": hash(&o.path),
                "redundancy": {"type": "none"},
                "createTime": "2025-06-24T08:31:28.514Z",
                "updateTime": "2025-06-24T08:31:28.514Z"
            })
        };
        assert_eq!(
            body,
            json!({"code": "OK", "message": "", "data": {
                "nextContinuationToken": "",
                "isTruncated": false,
                "commonPrefixes": ["a/b/", "a/c/"],
                "objects": [object(&objects[0]), object(&objects[1])],
            }})
        );
        assert_eq!(
            fx.coord().list_by_path_requests,
            [proto::coordinator::ListByPathRequest {
                package_id: 1,
                path: "a/".into(),
                is_prefix: true,
                no_recursive: true,
                max_keys: 0,
                continuation_token: String::new(),
            }]
        );
    }

    #[tokio::test]
    async fn list_by_path_exact_and_empty_results_keep_every_field() {
        let fx = fixture().await;
        seed_tree(&fx);
        let (status, body) = get_json(&fx, "/v1/object/listByPath?packageID=1&path=b.txt").await;
        assert_eq!(status, 200, "{body}");
        let data = &body["data"];
        assert_eq!(data["objects"].as_array().unwrap().len(), 1);
        assert_eq!(data["objects"][0]["path"], "b.txt");
        assert_eq!(data["commonPrefixes"], json!([]));
        // An exact path that names a "directory" matches nothing: all four fields remain.
        for query in [
            "packageID=1&path=a&isPrefix=false",
            "packageID=1&path=zzz&isPrefix=1",
            "packageID=9&isPrefix=true",
        ] {
            let (status, body) = get_json(&fx, &format!("/v1/object/listByPath?{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            assert_eq!(
                body["data"],
                json!({"nextContinuationToken": "", "isTruncated": false,
                       "commonPrefixes": [], "objects": []}),
                "{query}"
            );
        }
        let requests = fx.coord().list_by_path_requests.clone();
        assert!(!requests[1].is_prefix && requests[2].is_prefix);
        assert_eq!(
            requests[3].path, "",
            "isPrefix without path = whole package"
        );
    }

    #[tokio::test]
    async fn list_by_path_pages_with_opaque_tokens() {
        let fx = fixture().await;
        seed_tree(&fx);
        let mut token = String::new();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let uri = format!(
                "/v1/object/listByPath?packageID=1&isPrefix=True&noRecursive=1&maxKeys=1&continuationToken={}",
                percent_encoding::utf8_percent_encode(&token, percent_encoding::NON_ALPHANUMERIC)
            );
            let (status, body) = get_json(&fx, &uri).await;
            assert_eq!(status, 200, "{body}");
            let data = &body["data"];
            let entries = data["commonPrefixes"].as_array().unwrap().len()
                + data["objects"].as_array().unwrap().len();
            assert_eq!(entries, 1, "{data}");
            for p in data["commonPrefixes"].as_array().unwrap() {
                seen.push(p.as_str().unwrap().to_owned());
            }
            for o in data["objects"].as_array().unwrap() {
                seen.push(o["path"].as_str().unwrap().to_owned());
            }
            pages += 1;
            if !data["isTruncated"].as_bool().unwrap() {
                assert_eq!(data["nextContinuationToken"], "");
                break;
            }
            token = data["nextContinuationToken"].as_str().unwrap().to_owned();
            assert!(!token.is_empty());
        }
        seen.sort();
        assert_eq!(seen, ["a/", "b.txt"], "no entry repeated or skipped");
        assert_eq!(pages, 2, "the folded prefix ends the first page");

        // Recursive, 2 per page: 6 objects in 3 pages, the tokens passed back verbatim.
        let mut token = String::new();
        let mut paths = Vec::new();
        loop {
            let uri = format!(
                "/v1/object/listByPath?packageID=1&path=&isPrefix=true&maxKeys=2&continuationToken={token}"
            );
            let (_, body) = get_json(&fx, &uri).await;
            let data = &body["data"];
            for o in data["objects"].as_array().unwrap() {
                paths.push(o["path"].as_str().unwrap().to_owned());
            }
            if data["isTruncated"] == false {
                break;
            }
            token = percent_encoding::utf8_percent_encode(
                data["nextContinuationToken"].as_str().unwrap(),
                percent_encoding::NON_ALPHANUMERIC,
            )
            .to_string();
        }
        assert_eq!(
            paths,
            ["a/1.txt", "a/2.txt", "a/b/x", "a/b/y", "a/c/z", "b.txt"]
        );
        let tokens: Vec<_> = fx
            .coord()
            .list_by_path_requests
            .iter()
            .map(|r| (r.continuation_token.clone(), r.max_keys))
            .collect();
        assert_eq!(
            tokens,
            [
                (String::new(), 1),
                ("after:a/".to_owned(), 1),
                (String::new(), 2),
                ("after:a/2.txt".to_owned(), 2),
                ("after:a/b/y".to_owned(), 2)
            ]
        );
    }

    #[tokio::test]
    async fn list_by_path_rejects_bad_queries_before_the_coordinator() {
        let fx = fixture().await;
        for (query, needle) in [
            ("path=a", "missing field `packageID`"),
            ("packageID=0&path=a", "`packageID` must be a positive id"),
            ("packageID=x&path=a", "invalid query string: packageID"),
            ("packageID=1", "missing field `path`"),
            (
                "packageID=1&path=",
                "`path` must not be empty unless isPrefix=true",
            ),
            (
                "packageID=1&path=a&isPrefix=yes",
                "`isPrefix` must be `true` or `false`",
            ),
            (
                "packageID=1&path=a&noRecursive=2",
                "`noRecursive` must be `true` or `false`",
            ),
            (
                "packageID=1&path=a&maxKeys=-1",
                "`maxKeys` must be a non-negative integer",
            ),
            (
                "packageID=1&path=a&maxKeys=ten",
                "`maxKeys` must be a non-negative integer",
            ),
        ] {
            let (status, body) = get_json(&fx, &format!("/v1/object/listByPath?{query}")).await;
            assert_bad(status, &body, needle);
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
    }

    #[tokio::test]
    async fn list_by_path_passes_coordinator_errors_through() {
        let fx = fixture().await;
        // The fake refuses tokens it did not issue, as BadArgument.
        let (status, body) = get_json(
            &fx,
            "/v1/object/listByPath?packageID=1&isPrefix=true&continuationToken=forged",
        )
        .await;
        assert_bad(status, &body, "invalid continuation token \"forged\"");
        fx.coord()
            .fail_rpc
            .insert("list_by_path", common::ErrorCode::NotFound);
        let (status, body) = get_json(&fx, "/v1/object/listByPath?packageID=7&path=a").await;
        assert_eq!(
            (status, body),
            (
                404,
                json!({"code": "DataNotFound", "message": "list_by_path failed by the test", "data": null})
            )
        );
    }

    #[tokio::test]
    async fn download_by_path_shares_the_range_logic() {
        let fx = fixture().await;
        put(&fx, "dir%2Fh%C3%A9llo.txt", b"0123456789").await;
        check_ranges(
            &fx,
            "downloadByPath",
            "packageID=1&path=dir%2Fh%C3%A9llo.txt",
        )
        .await;
        let resolves = fx.coord().resolves.clone();
        assert!(
            resolves
                .iter()
                .all(|r| r.object_id == 0 && r.package_id == 1 && r.path == "dir/héllo.txt"),
            "{resolves:?}"
        );
    }

    #[tokio::test]
    async fn download_by_path_errors_are_envelopes() {
        let fx = fixture().await;
        put(&fx, "f", b"0123456789").await;
        let calls_before = fx.coord().calls.len();
        for (query, needle) in [
            ("path=f", "missing field `packageID`"),
            ("packageID=0&path=f", "`packageID` must be a positive id"),
            ("packageID=1", "missing field `path`"),
            ("packageID=1&path=", "invalid field `path`: path is empty"),
            ("packageID=1&path=a%2F..%2Ff", "'..' segment"),
            (
                "packageID=1&path=f&offset=-1",
                "offset must not be negative",
            ),
            (
                "packageID=1&path=f&length=x",
                "invalid query string: length",
            ),
        ] {
            let (status, body) = get_json(&fx, &format!("/v1/object/downloadByPath?{query}")).await;
            assert_bad(status, &body, needle);
        }
        assert_eq!(fx.coord().calls.len(), calls_before);

        let (status, body) = get_json(
            &fx,
            "/v1/object/downloadByPath?packageID=1&path=f&offset=11",
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(
            body["message"],
            "offset 11 is past the end of the object (size 10)"
        );
        for query in ["packageID=1&path=nope", "packageID=2&path=f"] {
            let (status, body) = get_json(&fx, &format!("/v1/object/downloadByPath?{query}")).await;
            assert_eq!((status, body["code"].as_str()), (404, Some("DataNotFound")));
        }
    }

    #[tokio::test]
    async fn move_keeps_identity_and_reports_only_successes() {
        let fx = fixture().await;
        let a = fx.seed(1, "m/a", b"a");
        let b = fx.seed(1, "m/b", b"b");
        let taken = fx.seed(2, "taken", b"t");
        let body = format!(
            r#"{{"movings": [
                {{"objectID": {}, "packageID": 2, "path": "n/a2"}},
                {{"objectID": {}, "packageID": 1, "path": "../bad"}},
                {{"objectID": 424242, "packageID": 1, "path": "x"}},
                {{"objectID": {}, "packageID": 2, "path": "taken"}}
            ]}}"#,
            a.object_id, b.object_id, b.object_id
        );
        let (status, resp) = post(&fx, "/v1/object/move", &body).await;
        assert_eq!(
            (status, resp),
            (
                200,
                json!({"code": "OK", "message": "", "data": {"successes": [a.object_id]}})
            )
        );
        let coord = fx.coord();
        let moved = &coord.objects[&(2, "n/a2".to_owned())];
        assert_eq!(moved.object_id, a.object_id);
        assert_eq!(moved.create_time_ms, a.create_time_ms);
        assert_eq!(moved.update_time_ms, a.update_time_ms);
        assert!(!coord.objects.contains_key(&(1, "m/a".to_owned())));
        assert_eq!(coord.objects[&(1, "m/b".to_owned())].object_id, b.object_id);
        assert_eq!(
            coord.objects[&(2, "taken".to_owned())].object_id,
            taken.object_id
        );
    }

    #[tokio::test]
    async fn move_validates_entries_and_passes_errors_through() {
        let fx = fixture().await;
        let (status, body) = post(&fx, "/v1/object/move", r#"{"movings": []}"#).await;
        assert_eq!(
            (status, body["data"].clone()),
            (200, json!({"successes": []}))
        );
        for (body, needle) in [
            ("{}", "missing field `movings`"),
            (r#"{"movings": {}}"#, "movings: invalid type"),
            (
                r#"{"movings": [{"packageID": 1, "path": "a"}]}"#,
                "missing field `movings[0].objectID`",
            ),
            (
                r#"{"movings": [{"objectID": 1, "packageID": 1, "path": "a"}, {"objectID": 0, "packageID": 1, "path": "a"}]}"#,
                "`movings[1].objectID` must be a positive id",
            ),
            (
                r#"{"movings": [{"objectID": 1, "path": "a"}]}"#,
                "missing field `movings[0].packageID`",
            ),
            (
                r#"{"movings": [{"objectID": 1, "packageID": 1}]}"#,
                "missing field `movings[0].path`",
            ),
            (
                r#"{"movings": [{"objectID": "1", "packageID": 1, "path": "a"}]}"#,
                "movings[0].objectID: invalid type",
            ),
        ] {
            let (status, resp) = post(&fx, "/v1/object/move", body).await;
            assert_bad(status, &resp, needle);
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
        fx.coord()
            .fail_rpc
            .insert("move_objects", common::ErrorCode::Unavailable);
        let (status, body) = post(
            &fx,
            "/v1/object/move",
            r#"{"movings": [{"objectID": 1, "packageID": 1, "path": "a"}]}"#,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("OperationFailed"))
        );
    }

    #[tokio::test]
    async fn clone_answers_one_entry_per_request_with_nulls() {
        let fx = fixture().await;
        let src = fx.seed(1, "src.txt", b"cloned bytes");
        let body = format!(
            r#"{{"clonings": [
                {{"objectID": {id}, "newPath": "c/1.txt", "newPackageID": 3}},
                {{"objectID": 424242, "newPath": "c/2.txt", "newPackageID": 3}},
                {{"objectID": {id}, "newPath": "c/1.txt", "newPackageID": 3}},
                {{"objectID": {id}, "newPath": "c//bad", "newPackageID": 3}},
                {{"objectID": {id}, "newPath": "c/3.txt", "newPackageID": 1}}
            ]}}"#,
            id = src.object_id
        );
        let (status, resp) = post(&fx, "/v1/object/clone", &body).await;
        assert_eq!(status, 200, "{resp}");
        let objects = resp["data"]["objects"].as_array().unwrap();
        assert_eq!(objects.len(), 5);
        assert!(objects[1].is_null() && objects[2].is_null() && objects[3].is_null());
        let first = &objects[0];
        let new_id = first["objectID"].as_u64().unwrap();
        assert_ne!(new_id, src.object_id);
        assert_eq!(
            first,
            &json!({
                "objectID": new_id, "packageID": 3, "path": "c/1.txt", "size": "12",
                "fileHash": format!("Full{}", sha256_hex(b"cloned bytes").to_uppercase()),
                "redundancy": {"type": "none"},
                "createTime": "2025-06-24T10:13:20.000Z",
                "updateTime": "2025-06-24T10:13:20.000Z"
            })
        );
        assert_eq!(objects[4]["path"], "c/3.txt");
        assert_eq!(objects[4]["packageID"], 1);
        // The source is untouched.
        assert_eq!(
            fx.coord().objects[&(1, "src.txt".to_owned())].object_id,
            src.object_id
        );
    }

    #[tokio::test]
    async fn clone_validates_entries_and_passes_errors_through() {
        let fx = fixture().await;
        let (status, body) = post(&fx, "/v1/object/clone", r#"{"clonings": []}"#).await;
        assert_eq!(
            (status, body["data"].clone()),
            (200, json!({"objects": []}))
        );
        for (body, needle) in [
            ("{}", "missing field `clonings`"),
            (
                r#"{"clonings": [{"newPath": "a", "newPackageID": 1}]}"#,
                "missing field `clonings[0].objectID`",
            ),
            (
                r#"{"clonings": [{"objectID": 1, "newPackageID": 1}]}"#,
                "missing field `clonings[0].newPath`",
            ),
            (
                r#"{"clonings": [{"objectID": 1, "newPath": "a", "newPackageID": 0}]}"#,
                "`clonings[0].newPackageID` must be a positive id",
            ),
            (
                r#"{"clonings": [{"objectID": 1, "newPath": 5, "newPackageID": 1}]}"#,
                "clonings[0].newPath: invalid type",
            ),
        ] {
            let (status, resp) = post(&fx, "/v1/object/clone", body).await;
            assert_bad(status, &resp, needle);
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
        fx.coord()
            .fail_rpc
            .insert("clone_objects", common::ErrorCode::NotFound);
        let (status, body) = post(
            &fx,
            "/v1/object/clone",
            r#"{"clonings": [{"objectID": 1, "newPath": "a", "newPackageID": 1}]}"#,
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (404, Some("DataNotFound")));
    }
}
