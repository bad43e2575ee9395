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
pub(crate) struct DownloadQuery {
    #[serde(rename = "objectID")]
    object_id: Option<u64>,
    offset: Option<i64>,
    length: Option<i64>,
}

/// Query of `GET /v1/object/getPackageObjects`.
#[derive(Debug, Deserialize)]
pub(crate) struct PackageObjectsQuery {
    #[serde(rename = "packageID")]
    package_id: Option<u64>,
}

/// Body of `POST /v1/object/delete`.
#[derive(Debug, Deserialize)]
pub(crate) struct DeleteBody {
    #[serde(rename = "objectIDs")]
    object_ids: Vec<u64>,
}

/// `data` of upload.
#[derive(Debug, Serialize)]
pub(crate) struct UploadedData {
    uploadeds: Vec<ObjectJson>,
}

/// `data` of getPackageObjects.
#[derive(Debug, Serialize)]
pub(crate) struct ObjectsData {
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
        let begun: Vec<_> = coord
            .begins
            .iter()
            .map(|(p, path, a)| (*p, path.as_str(), *a))
            .collect();
        assert_eq!(
            begun,
            [(1, "test.txt", 0), (1, "a/b/test2.txt", 0), (1, "empty", 0)]
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
        assert!(coord.aborts.is_empty());
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
            [proto::CHUNK_SIZE, proto::CHUNK_SIZE, 12345]
        );
        assert!(agent.puts[2].chunk_sizes.is_empty());
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
        assert!(coord.commits.is_empty());
        assert_eq!(coord.aborts.len(), 1, "the streamed file is aborted");
        assert!(coord.pending.is_empty());
    }

    #[tokio::test]
    async fn a_bad_later_part_aborts_the_earlier_files() {
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
        assert_eq!(coord.aborts.len(), 1);
        assert!(coord.objects.is_empty() && coord.pending.is_empty());
    }

    #[tokio::test]
    async fn a_body_that_breaks_mid_file_is_never_finished() {
        let fx = fixture().await;
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
        let begun = common::testing::wait_until(wait, || async { !fx.coord().begins.is_empty() });
        assert!(begun.await, "the file part started streaming");
        tx.send(Ok(Bytes::from(vec![7u8; 300_000]))).await.unwrap();
        tx.send(Err(std::io::Error::other("client went away")))
            .await
            .unwrap();
        let (status, body) = json(response.await.unwrap()).await;
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
        assert_eq!(fx.coord().aborts.len(), 1);
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
    async fn a_failed_commit_aborts_the_rest() {
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
        let coord = fx.coord();
        assert_eq!(coord.commits.len(), 1);
        assert_eq!(coord.aborts.len(), 2);
        assert!(coord.pending.is_empty());
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

    #[tokio::test]
    async fn download_streams_the_requested_range() {
        let fx = fixture().await;
        let id = put(&fx, "dir%2Fh%C3%A9llo.txt", b"0123456789").await;
        fx.agent().get_chunk_size = 3;
        for (query, expected) in [
            (format!("objectID={id}"), &b"0123456789"[..]),
            (format!("objectID={id}&offset=3"), b"3456789"),
            (format!("objectID={id}&offset=3&length=4"), b"3456"),
            (format!("objectID={id}&offset=8&length=100"), b"89"),
            (format!("objectID={id}&offset=10"), b""),
            (format!("objectID={id}&length=0"), b""),
        ] {
            let resp = download(&fx, &query).await;
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
}
