//! `/v1/object/*`: upload and download (streaming, see [`crate::data_path`]), listing and
//! deletion.

use axum::extract::State;
use axum::response::Response;
use proto::coordinator::{DeleteObjectsRequest, ListObjectsRequest};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::data_path;
use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiMultipart, ApiQuery};
use crate::model::ObjectJson;
use crate::routes::require_id;
use crate::state::AppState;

/// Page size used to walk a package's objects.
const LIST_PAGE: u32 = 1000;

/// Query of `GET /v1/object/download`.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    #[serde(rename = "objectID")]
    object_id: Option<u64>,
    offset: Option<i64>,
    length: Option<i64>,
}

/// Query of `GET /v1/object/getPackageObjects`.
#[derive(Debug, Deserialize)]
pub struct PackageObjectsQuery {
    #[serde(rename = "packageID")]
    package_id: Option<u64>,
}

/// Body of `POST /v1/object/delete`.
#[derive(Debug, Deserialize)]
pub struct DeleteBody {
    #[serde(rename = "objectIDs")]
    object_ids: Vec<u64>,
}

/// `data` of upload.
#[derive(Debug, Serialize)]
pub struct UploadedData {
    uploadeds: Vec<ObjectJson>,
}

/// `data` of getPackageObjects.
#[derive(Debug, Serialize)]
pub struct ObjectsData {
    objects: Vec<ObjectJson>,
}

/// `POST /v1/object/upload` (multipart). Runs in its own task so that a client that goes
/// away cannot cancel the pipeline halfway through its commits or its cleanup.
pub(crate) async fn upload(
    State(state): State<AppState>,
    ApiMultipart(multipart): ApiMultipart,
) -> Result<ApiOk<UploadedData>, ApiError> {
    let task = tokio::spawn(data_path::upload(state, multipart).in_current_span());
    match task.await {
        Ok(result) => result.map(|uploadeds| ApiOk(UploadedData { uploadeds })),
        Err(err) => Err(ApiError::internal(format!("upload task failed: {err}"))),
    }
}

/// `GET /v1/object/download?objectID=&offset=&length=`.
pub(crate) async fn download(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    let object_id = require_id("objectID", query.object_id)?;
    data_path::download(&state, object_id, query.offset, query.length).await
}

/// `GET /v1/object/getPackageObjects?packageID=`: every object of the package, by path.
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
