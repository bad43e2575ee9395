//! Multipart uploads under `/v1/object/*`: `newMultipartUpload` creates the (visible, empty)
//! object, `uploadPart` streams one numbered part to an agent (see [`crate::data_path`]),
//! and `completeMultipartUpload` has the agent concatenate the chosen parts into the
//! object's content.

use axum::extract::State;
use proto::coordinator::NewMultipartUploadRequest;
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use utoipa::ToSchema;

use crate::data_path::{self, part_index};
use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiMultipart};
use crate::model::{ObjectJson, required};
use crate::openapi::{Null, OkEnvelope, UploadPartForm};
use crate::routes::require_id;
use crate::state::AppState;

/// Body of `POST /v1/object/newMultipartUpload`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct NewMultipartBody {
    #[serde(rename = "packageID")]
    #[schema(value_type = u64, minimum = 1)]
    package_id: Option<u64>,
    /// Path of the new object; must not be taken (object path rules: docs/api.md).
    #[schema(value_type = String, min_length = 1, max_length = 1024)]
    path: Option<String>,
}

/// Body of `POST /v1/object/completeMultipartUpload`. Indexes are read as `i64` so that an
/// out-of-range value gets the same message as in uploadPart.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CompleteBody {
    #[serde(rename = "objectID")]
    #[schema(value_type = u64, minimum = 1)]
    object_id: Option<u64>,
    /// Parts to concatenate, in this order (each 1..=10000, at least one).
    #[schema(min_items = 1)]
    indexes: Vec<i64>,
}

/// `data` of newMultipartUpload and completeMultipartUpload.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ObjectData {
    object: ObjectJson,
}

/// `POST /v1/object/newMultipartUpload`: the new object has size 0, a zero hash and
/// redundancy `multipartUpload` until it is completed. A taken path is refused
/// (`DataExists`) by the coordinator.
#[utoipa::path(post, path = "/v1/object/newMultipartUpload", tag = "object", request_body = NewMultipartBody,
    responses((status = 200, description = "The new (empty) object", body = OkEnvelope<ObjectData>)))]
pub(crate) async fn new_multipart_upload(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewMultipartBody>,
) -> Result<ApiOk<ObjectData>, ApiError> {
    let package_id = require_id("packageID", body.package_id)?;
    let path = body
        .path
        .ok_or_else(|| ApiError::bad_argument("missing field `path`"))?;
    common::path::validate_object_path(&path)
        .map_err(|e| ApiError::bad_argument(format!("invalid field `path`: {e}")))?;
    let resp = state
        .coordinator()
        .new_multipart_upload(NewMultipartUploadRequest { package_id, path })
        .await?
        .into_inner();
    let object = required(resp.object, "object")?;
    tracing::info!(
        package_id,
        object_id = object.object_id,
        "multipart upload created"
    );
    Ok(ApiOk(ObjectData {
        object: object.into(),
    }))
}

/// The uploadPart turns of one gateway, a route layer: `poll_ready` waits for one of
/// `permits` (the config's `max_parts_in_flight`, 4 by default) before the handler runs
/// (so before it reads the body), and the permit is held until the handler's response is
/// ready. Each streaming part holds a few MiB of bounded buffers (docs/architecture.md,
/// "Memory bounds"); a client that sends more parts in parallel (`jcs cp` sends up to
/// `--jobs`) gets them served in turn, and a waiting part costs no buffer.
pub(crate) fn part_turns(permits: usize) -> tower::limit::GlobalConcurrencyLimitLayer {
    tower::limit::GlobalConcurrencyLimitLayer::new(permits)
}

/// `POST /v1/object/uploadPart` (multipart/form-data). Like upload, it runs in its own task
/// so that a client that goes away cannot interrupt the commit.
#[utoipa::path(post, path = "/v1/object/uploadPart", tag = "object",
    request_body(content = UploadPartForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "The part is stored", body = OkEnvelope<Null>)))]
pub(crate) async fn upload_part(
    State(state): State<AppState>,
    ApiMultipart(multipart): ApiMultipart,
) -> Result<ApiOk<()>, ApiError> {
    let task = tokio::spawn(
        common::request_id::inherit(data_path::upload_part(state, multipart)).in_current_span(),
    );
    match task.await {
        Ok(result) => result.map(ApiOk),
        Err(err) => Err(ApiError::internal(format!("uploadPart task failed: {err}"))),
    }
}

/// `POST /v1/object/completeMultipartUpload`. The indexes are checked here (non-empty, each
/// 1..=10000); whether the object is a multipart upload and every part exists is the
/// coordinator's call. Runs in its own task: once the agent starts concatenating, the
/// completion finishes (or fails) even if the client goes away.
#[utoipa::path(post, path = "/v1/object/completeMultipartUpload", tag = "object", request_body = CompleteBody,
    responses((status = 200, description = "The completed object", body = OkEnvelope<ObjectData>)))]
pub(crate) async fn complete_multipart_upload(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<ApiOk<ObjectData>, ApiError> {
    let object_id = require_id("objectID", body.object_id)?;
    if body.indexes.is_empty() {
        return Err(ApiError::bad_argument(
            "field `indexes` must not be empty: list the parts to concatenate",
        ));
    }
    let indexes = body
        .indexes
        .iter()
        .enumerate()
        .map(|(i, index)| part_index(&format!("indexes[{i}]"), *index))
        .collect::<Result<Vec<u32>, String>>()
        .map_err(ApiError::bad_argument)?;
    let task = tokio::spawn(
        common::request_id::inherit(data_path::complete_multipart_upload(
            state, object_id, indexes,
        ))
        .in_current_span(),
    );
    match task.await {
        Ok(result) => result.map(|object| ApiOk(ObjectData { object })),
        Err(err) => Err(ApiError::internal(format!(
            "completeMultipartUpload task failed: {err}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde_json::json;

    use crate::testing::*;

    const ZERO_HASH: &str = "Full0000000000000000000000000000000000000000000000000000000000000000";

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

    #[tokio::test]
    async fn part_turns_let_only_their_permits_through_at_once() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use axum::routing::post as post_route;
        use tokio::sync::Semaphore;
        use tower::ServiceExt as _;

        use super::part_turns;

        // A handler that stays in flight until released, counting how many run at once.
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Semaphore::new(0));
        let handler = {
            let (running, peak, release) = (running.clone(), peak.clone(), release.clone());
            move || async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                release.acquire().await.unwrap().forget();
                running.fetch_sub(1, Ordering::SeqCst);
                "done"
            }
        };
        let app = axum::Router::new()
            .route("/part", post_route(handler))
            .route_layer(part_turns(2));
        let requests: Vec<_> = (0..5)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move {
                    let req = axum::http::Request::post("/part")
                        .body(Body::empty())
                        .unwrap();
                    app.oneshot(req).await.unwrap().status()
                })
            })
            .collect();
        let deadline = std::time::Duration::from_secs(10);
        common::testing::wait_until(deadline, || {
            let running = running.clone();
            async move { running.load(Ordering::SeqCst) == 2 }
        })
        .await;
        // Two in flight: the other three wait for a turn, whatever happens meanwhile.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(running.load(Ordering::SeqCst), 2);
        release.add_permits(5);
        for r in requests {
            assert_eq!(r.await.unwrap(), 200);
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);
    }

    /// Create a multipart object at `path` of package 1; returns its id.
    async fn new_upload(fx: &Fixture, path: &str) -> u64 {
        let body = format!(r#"{{"packageID": 1, "path": "{path}"}}"#);
        let (status, resp) = post(fx, "/v1/object/newMultipartUpload", &body).await;
        assert_eq!(status, 200, "{resp}");
        resp["data"]["object"]["objectID"].as_u64().unwrap()
    }

    async fn upload_part_parts(fx: &Fixture, parts: &[Part<'_>]) -> (u16, serde_json::Value) {
        let body = Body::from(multipart_body(parts));
        json(call(fx.app(), multipart_request("/v1/object/uploadPart", body)).await).await
    }

    async fn upload_part(
        fx: &Fixture,
        object_id: u64,
        index: u32,
        content: &[u8],
    ) -> (u16, serde_json::Value) {
        let info = format!(r#"{{"objectID": {object_id}, "index": {index}}}"#);
        upload_part_parts(
            fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", Some("ignored%zz"), content),
            ],
        )
        .await
    }

    async fn complete(fx: &Fixture, object_id: u64, indexes: &str) -> (u16, serde_json::Value) {
        let body = format!(r#"{{"objectID": {object_id}, "indexes": {indexes}}}"#);
        post(fx, "/v1/object/completeMultipartUpload", &body).await
    }

    #[tokio::test]
    async fn new_multipart_upload_golden() {
        let fx = Fixture::start().await;
        let (status, body) = post(
            &fx,
            "/v1/object/newMultipartUpload",
            r#"{"packageID": 3, "path": "dir/obj.txt", "userID": 1}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let id = body["data"]["object"]["objectID"].as_u64().unwrap();
        assert_eq!(
            body,
            json!({"code": "OK", "message": "", "data": {"object": {
                "objectID": id, "packageID": 3, "path": "dir/obj.txt", "size": "0",
                "fileHash": ZERO_HASH,
                "redundancy": {"type": "multipartUpload"},
                "createTime": "2025-06-24T08:31:28.514Z",
                "updateTime": "2025-06-24T08:31:28.514Z"
            }}})
        );
    }

    #[tokio::test]
    async fn new_multipart_upload_checks_its_input() {
        let fx = Fixture::start().await;
        fx.seed(1, "taken", b"x");
        for (body, needle) in [
            (r#"{"path": "a"}"#, "missing field `packageID`"),
            (
                r#"{"packageID": 0, "path": "a"}"#,
                "`packageID` must be a positive id",
            ),
            (r#"{"packageID": 1}"#, "missing field `path`"),
            (r#"{"packageID": 1, "path": 7}"#, "path: invalid type"),
            (
                r#"{"packageID": 1, "path": ""}"#,
                "invalid field `path`: path is empty",
            ),
            (r#"{"packageID": 1, "path": "a/../b"}"#, "'..' segment"),
            (r#"{"packageID": 1, "path": "dir/"}"#, "ends with '/'"),
        ] {
            let (status, resp) = post(&fx, "/v1/object/newMultipartUpload", body).await;
            assert_bad(status, &resp, needle);
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
        let (status, body) = post(
            &fx,
            "/v1/object/newMultipartUpload",
            r#"{"packageID": 1, "path": "taken"}"#,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("DataExists")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn parts_are_streamed_replaced_and_concatenated_in_order() {
        let fx = Fixture::start().await;
        let id = new_upload(&fx, "big.bin").await;
        let big: Vec<u8> = (0..(2 * proto::CHUNK_SIZE + 99))
            .map(|i| (i % 241) as u8)
            .collect();
        for (index, content) in [(2, &b"world"[..]), (1, b"hello "), (3, &big)] {
            let (status, body) = upload_part(&fx, id, index, content).await;
            assert_eq!(
                (status, body),
                (200, json!({"code": "OK", "message": "", "data": null})),
                "part {index}"
            );
        }
        // Re-uploading an index replaces that part.
        let (status, _) = upload_part(&fx, id, 2, b"WORLD").await;
        assert_eq!(status, 200);
        {
            let agent = fx.agent();
            assert_eq!(agent.puts.len(), 4);
            for put in &agent.puts {
                assert!(put.ticket_first && put.finished, "{put:?}");
                assert!(put.chunk_sizes.iter().all(|n| *n <= proto::CHUNK_SIZE));
            }
            assert_eq!(
                agent.puts[2].chunk_sizes,
                [
                    vec![
                        crate::data_path::PUT_PIECE_SIZE;
                        2 * proto::CHUNK_SIZE / crate::data_path::PUT_PIECE_SIZE
                    ],
                    vec![99]
                ]
                .concat()
            );
        }
        {
            let coord = fx.coord();
            assert_eq!(coord.parts.len(), 3);
            assert_eq!(coord.parts[&(id, 2)], sha256_hex(b"WORLD"));
            assert!(coord.reservations.is_empty(), "every part was committed");
            // Still the empty multipart object until completion.
            assert_eq!(coord.objects[&(1, "big.bin".to_owned())].size, 0);
        }

        let (status, body) = complete(&fx, id, "[1, 2, 1, 3]").await;
        assert_eq!(status, 200, "{body}");
        let mut expected = b"hello WORLDhello ".to_vec();
        expected.extend_from_slice(&big);
        assert_eq!(
            body,
            json!({"code": "OK", "message": "", "data": {"object": {
                "objectID": id, "packageID": 1, "path": "big.bin",
                "size": expected.len().to_string(),
                "fileHash": format!("Full{}", sha256_hex(&expected).to_uppercase()),
                "redundancy": {"type": "none"},
                "createTime": "2025-06-24T08:31:28.514Z",
                "updateTime": "2025-06-24T10:13:20.000Z"
            }}})
        );
        {
            let coord = fx.coord();
            assert_eq!(coord.completes, [(id, vec![1, 2, 1, 3])]);
            assert!(
                coord.reservations.is_empty(),
                "the completion was committed"
            );
            assert!(
                coord.parts.is_empty(),
                "unused and used parts are discarded"
            );
        }
        let hashes = |parts: &[&[u8]]| parts.iter().map(|p| sha256_hex(p)).collect::<Vec<_>>();
        assert_eq!(
            fx.agent().concats,
            [hashes(&[b"hello ", b"WORLD", b"hello ", &big])]
        );

        let resp = call(
            fx.app(),
            http_get(&format!(
                "/v1/object/download?objectID={id}&offset=6&length=5"
            )),
        )
        .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_bytes(resp).await, "WORLD");
        let resp = call(
            fx.app(),
            http_get("/v1/object/downloadByPath?packageID=1&path=big.bin"),
        )
        .await;
        assert_eq!(body_bytes(resp).await, expected);
    }

    #[tokio::test]
    async fn upload_part_rejects_bad_forms_before_the_coordinator() {
        let fx = Fixture::start().await;
        let info = br#"{"objectID": 5, "index": 1}"#;
        let cases: Vec<(Vec<Part<'_>>, &str)> = vec![
            (vec![], "missing the `info` part"),
            (
                vec![("files", Some("a"), b"x")],
                "must be named `info`, got `files`",
            ),
            (vec![("info", None, info)], "no `files` part"),
            (
                vec![("info", None, br#"{"index": 1}"#)],
                "invalid `info` part: missing field `objectID`",
            ),
            (
                vec![("info", None, br#"{"objectID": 0, "index": 1}"#)],
                "`objectID` must be a positive id",
            ),
            (
                vec![("info", None, br#"{"objectID": 5}"#)],
                "invalid `info` part: missing field `index`",
            ),
            (
                vec![("info", None, br#"{"objectID": 5, "index": 0}"#)],
                "field `index` must be an integer from 1 to 10000 (got 0)",
            ),
            (
                vec![("info", None, br#"{"objectID": 5, "index": 10001}"#)],
                "field `index` must be an integer from 1 to 10000 (got 10001)",
            ),
            (
                vec![("info", None, br#"{"objectID": 5, "index": -1}"#)],
                "field `index` must be an integer from 1 to 10000 (got -1)",
            ),
            (
                vec![("info", None, br#"{"objectID": 5, "index": "1"}"#)],
                "invalid `info` part: index: invalid type",
            ),
            (
                vec![("info", None, br#"{"objectID": 5, "index": 1.5}"#)],
                "invalid `info` part: index: invalid type",
            ),
            (
                vec![("info", None, info), ("file", Some("a"), b"x")],
                "unexpected part `file`",
            ),
            (
                vec![("info", None, info), ("info", None, info)],
                "appear only once",
            ),
        ];
        for (parts, needle) in cases {
            let (status, body) = upload_part_parts(&fx, &parts).await;
            assert_bad(status, &body, needle);
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
        let (status, body) =
            upload_part_parts(&fx, &[("info", None, info), ("files", Some("x"), b"")]).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("DataNotFound")),
            "{body}"
        );
    }

    #[tokio::test]
    async fn upload_part_with_two_files_is_not_committed() {
        let fx = Fixture::start().await;
        let id = new_upload(&fx, "two").await;
        let info = format!(r#"{{"objectID": {id}, "index": 4}}"#);
        let (status, body) = upload_part_parts(
            &fx,
            &[
                ("info", None, info.as_bytes()),
                ("files", None, b"first"),
                ("files", Some("b"), b"second"),
            ],
        )
        .await;
        assert_bad(
            status,
            &body,
            "uploadPart takes exactly one `files` part, but another part (`files`) follows it",
        );
        let coord = fx.coord();
        assert!(coord.commits.is_empty());
        assert_eq!(
            coord.reservations.values().collect::<Vec<_>>(),
            [&PendingKind::Part {
                object_id: id,
                index: 4
            }],
            "the streamed part stays uncommitted"
        );
        assert!(coord.parts.is_empty());
    }

    #[tokio::test]
    async fn upload_part_passes_coordinator_refusals_through() {
        let fx = Fixture::start().await;
        let plain = fx.seed(1, "plain", b"x");
        let (status, body) = upload_part(&fx, plain.object_id, 1, b"data").await;
        assert_bad(status, &body, "is not a multipart upload");
        let (status, body) = upload_part(&fx, 999, 1, b"data").await;
        assert_eq!((status, body["code"].as_str()), (404, Some("DataNotFound")));
        assert!(fx.coord().reservations.is_empty());
        assert!(fx.agent().puts.is_empty());
    }

    #[tokio::test]
    async fn complete_checks_indexes_before_the_coordinator() {
        let fx = Fixture::start().await;
        for (body, needle) in [
            (r#"{"indexes": [1]}"#, "missing field `objectID`"),
            (
                r#"{"objectID": 0, "indexes": [1]}"#,
                "`objectID` must be a positive id",
            ),
            (r#"{"objectID": 1}"#, "missing field `indexes`"),
            (
                r#"{"objectID": 1, "indexes": []}"#,
                "field `indexes` must not be empty",
            ),
            (
                r#"{"objectID": 1, "indexes": [1, 0]}"#,
                "field `indexes[1]` must be an integer from 1 to 10000 (got 0)",
            ),
            (
                r#"{"objectID": 1, "indexes": [10001]}"#,
                "field `indexes[0]` must be an integer from 1 to 10000 (got 10001)",
            ),
            (
                r#"{"objectID": 1, "indexes": [-3]}"#,
                "`indexes[0]` must be an integer from 1 to 10000 (got -3)",
            ),
            (
                r#"{"objectID": 1, "indexes": ["1"]}"#,
                "indexes[0]: invalid type",
            ),
            (r#"{"objectID": 1, "indexes": 1}"#, "indexes: invalid type"),
        ] {
            let (status, resp) = post(&fx, "/v1/object/completeMultipartUpload", body).await;
            assert_bad(status, &resp, needle);
        }
        assert!(fx.coord().calls.is_empty(), "{:?}", fx.coord().calls);
    }

    #[tokio::test]
    async fn complete_passes_coordinator_refusals_through() {
        let fx = Fixture::start().await;
        let id = new_upload(&fx, "obj").await;
        let (status, _) = upload_part(&fx, id, 1, b"one").await;
        assert_eq!(status, 200);
        let (status, body) = complete(&fx, id, "[1, 2]").await;
        assert_bad(
            status,
            &body,
            &format!("part 2 of object {id} was not uploaded"),
        );
        let (status, body) = complete(&fx, 999, "[1]").await;
        assert_eq!(
            (status, body),
            (
                404,
                json!({"code": "DataNotFound", "message": "object 999 not found", "data": null})
            )
        );
        let plain = fx.seed(1, "plain", b"x");
        let (status, body) = complete(&fx, plain.object_id, "[1]").await;
        assert_bad(status, &body, "is not a multipart upload");
        let coord = fx.coord();
        assert!(coord.reservations.is_empty(), "nothing was reserved");
        assert_eq!(coord.commits.len(), 1, "only the part");
        assert!(fx.agent().concats.is_empty());
    }

    #[tokio::test]
    async fn a_failed_concat_does_not_commit_the_completion() {
        let fx = Fixture::start().await;
        let id = new_upload(&fx, "obj").await;
        let (status, _) = upload_part(&fx, id, 1, b"one").await;
        assert_eq!(status, 200);
        fx.agent().fail_concat = true;
        let (status, body) = complete(&fx, id, "[1]").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("OperationFailed")),
            "{body}"
        );
        {
            let coord = fx.coord();
            assert_eq!(coord.commits.len(), 1, "only the part");
            assert_eq!(
                coord.reservations.values().collect::<Vec<_>>(),
                [&PendingKind::Complete { object_id: id }]
            );
            let object = &coord.objects[&(1, "obj".to_owned())];
            assert_eq!(object.redundancy, MULTIPART, "still in progress");
        }
        // The parts are still there: completing again works.
        fx.agent().fail_concat = false;
        let (status, body) = complete(&fx, id, "[1, 1]").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["object"]["size"], "6");
    }

    /// uploadPart over a real socket, with reqwest building the form.
    #[tokio::test]
    async fn upload_part_over_http() {
        let fx = Fixture::start().await;
        let id = new_upload(&fx, "net.bin").await;
        let gateway = crate::Gateway::build(fx.state.config().clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(gateway.serve(listener, shutdown.clone()));
        let content: Vec<u8> = (0..proto::CHUNK_SIZE + 5).map(|i| (i % 7) as u8).collect();
        let form = reqwest::multipart::Form::new()
            .text("info", format!(r#"{{"objectID": {id}, "index": 10000}}"#))
            .part(
                "files",
                reqwest::multipart::Part::bytes(content.clone()).file_name("whatever.bin"),
            );
        let resp = reqwest::Client::new()
            .post(format!("{base}/v1/object/uploadPart"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.text().await.unwrap(),
            r#"{"code":"OK","message":"","data":null}"#
        );
        assert_eq!(fx.coord().parts[&(id, 10000)], sha256_hex(&content));
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}
