//! `/v1/spaceSyncer/*`: create, inspect and cancel sync tasks (copy a tree of one user
//! space to others when a trigger fires; see `docs/sync.md`).
//!
//! The createTask body is parsed into the shared [`common::sync::TaskSpec`] (strictly: an
//! unknown trigger, mode or filter type, an unknown option or a missing field is a 400
//! naming it) and checked with [`TaskSpec::validate`], the same checks the coordinator
//! applies, before the coordinator is called with the re-serialized spec (defaults filled
//! in, unknown top-level fields dropped). Responses embed the coordinator's task JSON
//! verbatim. The coordinator schedules and runs the tasks; the gateway keeps nothing.

use axum::extract::State;
use common::sync::TaskSpec;
use proto::coordinator::{
    CancelSyncTaskRequest, CreateSyncTaskRequest, GetSyncTaskRequest, SyncTaskResponse,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiQuery};
use crate::openapi::{Null, OkEnvelope, TaskView};
use crate::routes::require_id;
use crate::state::AppState;

/// Query of `GET /v1/spaceSyncer/getTask`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct GetTaskQuery {
    #[serde(rename = "taskID")]
    #[param(value_type = u64, required = true, minimum = 1)]
    task_id: Option<u64>,
    /// Long poll: while the task is `Pending` or `Running`, wait up to this many
    /// milliseconds for it to settle before answering (shortened to the gateway's
    /// `max_wait`, 20 s by default). Absent or 0: answer at once.
    #[serde(rename = "waitMs")]
    #[param(value_type = u64, required = false, minimum = 0)]
    wait_ms: Option<u64>,
}

/// Body of `POST /v1/spaceSyncer/cancelTask`.
#[derive(Debug, Deserialize, ToSchema)]
pub(crate) struct CancelTaskBody {
    #[serde(rename = "taskID")]
    #[schema(value_type = u64, minimum = 1)]
    task_id: Option<u64>,
}

/// `data` of createTask and getTask: the coordinator's task JSON as it is (`taskID`, the
/// spec's fields and `status`).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskData {
    #[schema(value_type = TaskView)]
    task: Box<RawValue>,
}

/// The `task` of a coordinator answer: any JSON object, embedded verbatim.
fn task_data(resp: SyncTaskResponse) -> Result<TaskData, ApiError> {
    let raw = RawValue::from_string(resp.task_json)
        .map_err(|e| ApiError::internal(format!("coordinator sent invalid task JSON: {e}")))?;
    if !raw.get().starts_with('{') {
        return Err(ApiError::internal(format!(
            "coordinator sent a task that is not a JSON object: {:.64}",
            raw.get()
        )));
    }
    Ok(TaskData { task: raw })
}

/// `POST /v1/spaceSyncer/createTask`: the coordinator checks what needs metadata (the
/// spaces exist, no destination is the source or inside it, a Local destination is served
/// by the source's agent) and schedules the task.
#[utoipa::path(post, path = "/v1/spaceSyncer/createTask", tag = "spaceSyncer", request_body = TaskSpec,
    responses((status = 200, description = "The new task", body = OkEnvelope<TaskData>)))]
pub(crate) async fn create_task(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<TaskSpec>,
) -> Result<ApiOk<TaskData>, ApiError> {
    spec.validate().map_err(ApiError::bad_argument)?;
    let task_json = serde_json::to_string(&spec)
        .map_err(|e| ApiError::internal(format!("failed to serialize the task spec: {e}")))?;
    let resp = state
        .coordinator()
        .create_sync_task(CreateSyncTaskRequest { task_json })
        .await?
        .into_inner();
    let data = task_data(resp)?;
    tracing::info!(
        src_user_space_id = spec.src_user_space_id,
        destinations = spec.dest_user_space_ids.len(),
        "sync task created"
    );
    Ok(ApiOk(data))
}

/// `GET /v1/spaceSyncer/getTask`: the task and its status; with `waitMs`, a long poll that
/// answers as soon as the task is no longer `Pending` or `Running`.
#[utoipa::path(get, path = "/v1/spaceSyncer/getTask", tag = "spaceSyncer", params(GetTaskQuery),
    responses((status = 200, description = "The task and its status", body = OkEnvelope<TaskData>)))]
pub(crate) async fn get_task(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<GetTaskQuery>,
) -> Result<ApiOk<TaskData>, ApiError> {
    let task_id = require_id("taskID", query.task_id)?;
    let config = state.config();
    let max_wait = config.max_wait.min(config.request_timeout / 2);
    let max_wait = u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX);
    let wait_ms = u32::try_from(query.wait_ms.unwrap_or(0).min(max_wait)).unwrap_or(u32::MAX);
    let resp = state
        .coordinator()
        .get_sync_task(GetSyncTaskRequest { task_id, wait_ms })
        .await?
        .into_inner();
    Ok(ApiOk(task_data(resp)?))
}

/// `POST /v1/spaceSyncer/cancelTask`: stops future runs and the running one; cancelling
/// twice is OK.
#[utoipa::path(post, path = "/v1/spaceSyncer/cancelTask", tag = "spaceSyncer", request_body = CancelTaskBody,
    responses((status = 200, description = "Cancelled", body = OkEnvelope<Null>)))]
pub(crate) async fn cancel_task(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CancelTaskBody>,
) -> Result<ApiOk<()>, ApiError> {
    let task_id = require_id("taskID", body.task_id)?;
    state
        .coordinator()
        .cancel_sync_task(CancelSyncTaskRequest { task_id })
        .await?;
    tracing::info!(task_id, "sync task cancelled");
    Ok(ApiOk(()))
}

#[cfg(test)]
mod tests {
    use common::ErrorCode;
    use serde_json::{Value, json};

    use super::*;
    use crate::testing::*;

    /// The createTask example of the API document (comments removed).
    const EXAMPLE: &str = r#"{
        "trigger": {"type": "Interval", "interval": 30},
        "mode": {"type": "Diff", "includeSize": false, "includeModTime": true},
        "filters": [{"type": "Size", "minSize": 10, "maxSize": 20000}],
        "options": {"noEmptyDirectories": false},
        "srcUserSpaceID": 1,
        "srcPath": "space1/cli",
        "destUserSpaceIDs": [2],
        "destPathes": ["space2/svr"]
    }"#;

    async fn send(fx: &Fixture, req: axum::http::Request<axum::body::Body>) -> (u16, String) {
        let resp = call(fx.app(), req).await;
        let status = resp.status().as_u16();
        let text = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
        (status, text)
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).unwrap()
    }

    /// A fixture whose coordinator holds two Local spaces, ids 1 and 2 (as in the example).
    async fn with_two_spaces() -> Fixture {
        let fx = Fixture::start().await;
        for (i, name) in [(1, "src"), (2, "dst")] {
            let body = format!(
                r#"{{"name": "{name}", "storage": {{"type": "Local", "path": "/srv/{name}"}},
                    "credential": {{"type": "Local"}}}}"#
            );
            let (status, text) = send(&fx, post_json("/v1/userSpace/create", &body)).await;
            assert_eq!(status, 200, "{text}");
            assert_eq!(parse(&text)["data"]["userSpace"]["userSpaceID"], i);
        }
        fx
    }

    /// Every field of `expected` is in `actual` with the same value (objects recursively).
    fn assert_contains(expected: &Value, actual: &Value, at: &str) {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                for (k, v) in e {
                    let field = format!("{at}.{k}");
                    let got = a.get(k).unwrap_or_else(|| panic!("{field} is missing"));
                    assert_contains(v, got, &field);
                }
            }
            (Value::Array(e), Value::Array(a)) => {
                assert_eq!(e.len(), a.len(), "{at}");
                for (i, (e, a)) in e.iter().zip(a).enumerate() {
                    assert_contains(e, a, &format!("{at}[{i}]"));
                }
            }
            _ => assert_eq!(expected, actual, "{at}"),
        }
    }

    #[tokio::test]
    async fn the_api_document_example_round_trips() {
        let fx = with_two_spaces().await;
        let (status, text) = send(&fx, post_json("/v1/spaceSyncer/createTask", EXAMPLE)).await;
        assert_eq!(status, 200, "{text}");
        let body = parse(&text);
        assert_eq!(
            (&body["code"], &body["message"]),
            (&json!("OK"), &json!(""))
        );
        let task = &body["data"]["task"];
        assert_contains(&parse(EXAMPLE), task, "task");
        let id = task["taskID"].as_u64().unwrap();
        assert!(id > 0);
        assert_eq!(
            task["status"],
            json!({"state": "Pending", "runs": [], "lastErrors": []})
        );
        // Verbatim: the coordinator's key order (taskID first, status last) is kept.
        let data = text.split_once(r#""data":{"task":"#).unwrap().1;
        assert!(
            data.starts_with(&format!(r#"{{"taskID":{id},"trigger":"#)),
            "{text}"
        );
        assert!(
            data.ends_with(r#""status":{"state":"Pending","runs":[],"lastErrors":[]}}}}"#),
            "{text}"
        );

        // The coordinator received the spec re-serialized, with the defaults filled in.
        assert_eq!(
            parse(&fx.coord().sync_task_specs[0]),
            json!({
                "trigger": {"type": "Interval", "interval": 30},
                "mode": {"type": "Diff", "includeSize": false, "includeModTime": true},
                "filters": [{"type": "Size", "minSize": 10, "maxSize": 20000}],
                "options": {"noEmptyDirectories": false, "deleteSource": false,
                            "deleteExtraneous": false, "maxDelete": 1000, "copyLinks": false},
                "srcUserSpaceID": 1, "srcPath": "space1/cli",
                "destUserSpaceIDs": [2], "destPathes": ["space2/svr"]
            })
        );

        let get = format!("/v1/spaceSyncer/getTask?taskID={id}");
        let (status, text) = send(&fx, http_get(&get)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(parse(&text)["data"]["task"], *task);

        let cancel = format!(r#"{{"taskID": {id}}}"#);
        for _ in 0..2 {
            // Cancelling a cancelled task is OK.
            let (status, text) = send(&fx, post_json("/v1/spaceSyncer/cancelTask", &cancel)).await;
            assert_eq!(
                (status, parse(&text)),
                (200, json!({"code": "OK", "message": "", "data": null}))
            );
        }
        assert_eq!(fx.coord().sync_cancels, vec![id, id]);
        let (_, text) = send(&fx, http_get(&get)).await;
        assert_eq!(parse(&text)["data"]["task"]["status"]["state"], "Cancelled");
    }

    #[tokio::test]
    async fn every_trigger_mode_and_filter_is_forwarded() {
        let fx = with_two_spaces().await;
        let body = json!({
            "trigger": {"type": "Schedule", "start": "23:30", "end": "01:00"},
            "mode": {"type": "Full"},
            "filters": [
                {"type": "Size", "maxSize": 1024},
                {"type": "Extension", "include": ["txt", "CSV"], "exclude": ["tmp"]},
                {"type": "Path", "include": ["logs/**"], "exclude": ["**/*.bak"]},
                {"type": "ModTime", "after": "2025-01-01T00:00:00Z", "before": "2025-12-31T23:59:59+08:00"}
            ],
            "options": {"noEmptyDirectories": true, "deleteSource": false,
                        "deleteExtraneous": true, "maxDelete": 50},
            "srcUserSpaceID": 1, "srcPath": "",
            "destUserSpaceIDs": [2, 2], "destPathes": ["copy/a", "/copy/b/"],
            "unknownTopLevel": "ignored"
        });
        let (status, text) = send(
            &fx,
            post_json("/v1/spaceSyncer/createTask", &body.to_string()),
        )
        .await;
        assert_eq!(status, 200, "{text}");
        let task = &parse(&text)["data"]["task"];
        let mut expected = body.clone();
        expected.as_object_mut().unwrap().remove("unknownTopLevel");
        expected["filters"][0]["minSize"] = Value::Null;
        assert_contains(&expected, task, "task");
        assert!(task.get("unknownTopLevel").is_none());

        let once = EXAMPLE.replace(r#""type": "Interval", "interval": 30"#, r#""type": "Once""#);
        let (status, text) = send(&fx, post_json("/v1/spaceSyncer/createTask", &once)).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(
            parse(&text)["data"]["task"]["trigger"],
            json!({"type": "Once"})
        );
    }

    #[tokio::test]
    async fn bad_specs_are_refused_naming_the_field_before_the_coordinator() {
        let fx = with_two_spaces().await;
        let cases: Vec<(&str, Value, &str)> = vec![
            ("/trigger/interval", json!(0), "trigger.interval"),
            (
                "/trigger",
                json!({"type": "Hourly"}),
                "trigger.type: unknown variant `Hourly`",
            ),
            (
                "/trigger",
                json!({"type": "Interval"}),
                "trigger: missing field `interval`",
            ),
            (
                "/trigger",
                json!({"type": "Schedule", "start": "25:00", "end": "01:00"}),
                "trigger.start \"25:00\"",
            ),
            (
                "/trigger",
                json!({"type": "Schedule", "start": "01:00", "end": "1:00"}),
                "trigger.end \"1:00\"",
            ),
            (
                "/mode",
                json!({"type": "Mirror"}),
                "mode.type: unknown variant `Mirror`",
            ),
            (
                "/mode",
                json!({"type": "Diff", "includeHash": true}),
                "mode: unknown field `includeHash`",
            ),
            (
                "/filters",
                json!([{"type": "Color"}]),
                "filters[0].type: unknown variant `Color`",
            ),
            (
                "/filters",
                json!([{"type": "Size", "minSize": 5, "maxSize": 1}]),
                "filters[0].minSize 5 is greater than maxSize 1",
            ),
            (
                "/filters",
                json!([{"type": "Size"}, {"type": "ModTime", "after": "yesterday"}]),
                "filters[1].after \"yesterday\"",
            ),
            (
                "/filters",
                json!([{"type": "ModTime", "after": "2025-02-01T00:00:00Z",
                        "before": "2025-01-01T00:00:00Z"}]),
                "filters[0].after is later than before",
            ),
            ("/destPathes", json!(["a", "b"]), "destPathes has 2"),
            ("/destUserSpaceIDs", json!([]), "destUserSpaceIDs is empty"),
            ("/destUserSpaceIDs", json!([0]), "destUserSpaceIDs[0] is 0"),
            ("/destPathes", json!(["x/./y"]), "destPathes[0]"),
            ("/srcPath", json!("a/../b"), "srcPath \"a/../b\""),
            ("/srcUserSpaceID", json!(0), "srcUserSpaceID"),
            (
                "/srcUserSpaceID",
                json!(-1),
                "srcUserSpaceID: invalid value",
            ),
            (
                "/options",
                json!({"deleteEverything": true}),
                "options.deleteEverything: unknown field `deleteEverything`",
            ),
            (
                "/options",
                json!({"maxDelete": "many"}),
                "options.maxDelete: invalid type",
            ),
        ];
        for (pointer, value, needle) in cases {
            let mut body = parse(EXAMPLE);
            *body.pointer_mut(pointer).unwrap() = value;
            let (status, text) = send(
                &fx,
                post_json("/v1/spaceSyncer/createTask", &body.to_string()),
            )
            .await;
            let reply = parse(&text);
            assert_eq!(
                (status, &reply["code"]),
                (400, &json!("BadArgument")),
                "{text}"
            );
            let message = reply["message"].as_str().unwrap();
            assert!(message.contains(needle), "{pointer}: {message}");
        }
        for field in [
            "trigger",
            "mode",
            "srcUserSpaceID",
            "destUserSpaceIDs",
            "destPathes",
        ] {
            let mut body = parse(EXAMPLE);
            body.as_object_mut().unwrap().remove(field);
            let (status, text) = send(
                &fx,
                post_json("/v1/spaceSyncer/createTask", &body.to_string()),
            )
            .await;
            assert_eq!(status, 400, "{text}");
            assert!(
                parse(&text)["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("invalid request body: missing field `{field}`")),
                "{text}"
            );
        }
        for body in ["", "[]", "{\"trigger\": "] {
            let (status, _) = send(&fx, post_json("/v1/spaceSyncer/createTask", body)).await;
            assert_eq!(status, 400, "{body:?}");
        }

        // Task ids of getTask and cancelTask: missing, 0 or not a number.
        for (req, needle) in [
            (
                http_get("/v1/spaceSyncer/getTask"),
                "missing field `taskID`",
            ),
            (http_get("/v1/spaceSyncer/getTask?taskID=0"), "`taskID`"),
            (http_get("/v1/spaceSyncer/getTask?taskID=x"), "taskID"),
            (
                post_json("/v1/spaceSyncer/cancelTask", "{}"),
                "missing field `taskID`",
            ),
            (
                post_json("/v1/spaceSyncer/cancelTask", r#"{"taskID": 0}"#),
                "`taskID`",
            ),
            (
                post_json("/v1/spaceSyncer/cancelTask", r#"{"taskID": "1"}"#),
                "taskID",
            ),
        ] {
            let (status, text) = send(&fx, req).await;
            let reply = parse(&text);
            assert_eq!(
                (status, &reply["code"]),
                (400, &json!("BadArgument")),
                "{text}"
            );
            assert!(
                reply["message"].as_str().unwrap().contains(needle),
                "{text}"
            );
        }
        // Only the two user space creations reached the coordinator.
        assert_eq!(
            fx.coord().calls,
            vec!["create_user_space", "create_user_space"]
        );
    }

    #[tokio::test]
    async fn coordinator_errors_pass_through() {
        let fx = with_two_spaces().await;
        // A destination inside the source (same space).
        let inside = EXAMPLE
            .replace(r#""destUserSpaceIDs": [2]"#, r#""destUserSpaceIDs": [1]"#)
            .replace("space2/svr", "space1/cli/backup");
        let (status, text) = send(&fx, post_json("/v1/spaceSyncer/createTask", &inside)).await;
        let reply = parse(&text);
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("BadArgument")),
            "{text}"
        );
        assert_eq!(
            reply["message"],
            r#"destPathes[0] "space1/cli/backup" is the source or inside it (srcPath "space1/cli" of the same user space)"#
        );
        // A space that does not exist.
        let unknown = EXAMPLE.replace(r#""destUserSpaceIDs": [2]"#, r#""destUserSpaceIDs": [7]"#);
        let (status, text) = send(&fx, post_json("/v1/spaceSyncer/createTask", &unknown)).await;
        assert_eq!(
            (status, parse(&text)),
            (
                400,
                json!({"code": "BadArgument", "message": "destUserSpaceIDs[0] 7 is not a user space", "data": null})
            )
        );
        // Unknown task ids.
        let (status, text) = send(&fx, http_get("/v1/spaceSyncer/getTask?taskID=99")).await;
        assert_eq!(
            (status, parse(&text)),
            (
                404,
                json!({"code": "DataNotFound", "message": "sync task 99 not found", "data": null})
            )
        );
        let (status, text) = send(
            &fx,
            post_json("/v1/spaceSyncer/cancelTask", r#"{"taskID": 99}"#),
        )
        .await;
        assert_eq!(
            (status, &parse(&text)["code"]),
            (404, &json!("DataNotFound"))
        );
        assert!(fx.coord().sync_tasks.is_empty());

        // Other failures keep their code.
        for (rpc, code, status) in [
            ("create_sync_task", ErrorCode::Unavailable, 503),
            ("get_sync_task", ErrorCode::Timeout, 504),
            ("cancel_sync_task", ErrorCode::Conflict, 409),
        ] {
            fx.coord().fail_rpc.insert(rpc, code);
            let req = match rpc {
                "create_sync_task" => post_json("/v1/spaceSyncer/createTask", EXAMPLE),
                "get_sync_task" => http_get("/v1/spaceSyncer/getTask?taskID=1"),
                _ => post_json("/v1/spaceSyncer/cancelTask", r#"{"taskID": 1}"#),
            };
            let (got, text) = send(&fx, req).await;
            let reply = parse(&text);
            assert_eq!(
                (got, &reply["code"]),
                (status, &json!("OperationFailed")),
                "{text}"
            );
            assert_eq!(reply["message"], format!("{rpc} failed by the test"));
        }
    }

    #[test]
    fn task_data_embeds_objects_only() {
        let ok = task_data(SyncTaskResponse {
            task_json: r#"{"taskID":1}"#.into(),
        })
        .unwrap();
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"task":{"taskID":1}}"#
        );
        for bad in ["", "[1]", "{", "null"] {
            let err = task_data(SyncTaskResponse {
                task_json: bad.into(),
            })
            .unwrap_err();
            assert_eq!(err.code, ErrorCode::Internal, "{bad:?}");
        }
    }
}
