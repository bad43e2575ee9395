//! `/v1/admin/scrub/*`: start the repair and scrub job of rep/ec objects and watch it
//! (docs/redundancy.md, "Repair and scrub"; docs/api.md). The coordinator's leader runs
//! the job; these routes only record a request and read its state. Like every `/v1`
//! route they require a signature when the gateway runs with authentication.

use axum::extract::State;
use proto::coordinator::{GetScrubStatusRequest, ScrubStatus, StartScrubRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ApiOk};
use crate::extract::{ApiJson, ApiQuery};
use crate::model::rfc3339_ms;
use crate::openapi::OkEnvelope;
use crate::state::AppState;

/// Body of `POST /v1/admin/scrub/start`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ScrubStartBody)]
pub(crate) struct StartBody {
    /// Only this package's objects; absent = every rep/ec object.
    #[serde(rename = "packageID")]
    #[schema(value_type = Option<u64>, minimum = 1)]
    package_id: Option<u64>,
    /// Re-hash every block on its agent instead of checking presence and size.
    #[serde(default)]
    deep: bool,
}

/// Query of `GET /v1/admin/scrub/status`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct StatusQuery {
    /// Most repair-log entries to return, newest first (default 20, 1 to 1000).
    #[param(minimum = 1, maximum = 1000)]
    recent: Option<u32>,
}

/// One repair attempt.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = RepairLogEntry)]
pub(crate) struct RepairJson {
    #[serde(rename = "objectID")]
    object_id: u64,
    /// Block indexes rebuilt (or attempted).
    blocks: Vec<u32>,
    /// User spaces the blocks were on.
    #[serde(rename = "fromUserSpaceIDs")]
    from_spaces: Vec<u64>,
    /// User spaces the blocks were rebuilt on.
    #[serde(rename = "toUserSpaceIDs")]
    to_spaces: Vec<u64>,
    /// Stored bytes written.
    bytes: u64,
    /// `repaired`, `superseded` (the object changed meanwhile) or `failed: …`.
    result: String,
    /// Why, per block: `missing`, `corrupt`, `wrong size`, `down`.
    reason: String,
    time: String,
}

/// A package's re-encode job (`package/update` changed its policy).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ReencodeJob)]
pub(crate) struct ReencodeJson {
    #[serde(rename = "packageID")]
    package_id: u64,
    /// The policy the package's objects are converted to.
    #[schema(value_type = Object)]
    redundancy: serde_json::Value,
    /// The job still walks the package.
    running: bool,
    /// Objects in the package when the walk started (0 until the leader counted them).
    total: u64,
    /// Objects looked at so far.
    checked: u64,
    reencoded: u64,
    failed: u64,
    /// Overwritten, moved or deleted while being re-encoded (the change won).
    superseded: u64,
    #[serde(rename = "lastError")]
    last_error: String,
    #[serde(rename = "startTime")]
    start_time: String,
    /// Empty while running.
    #[serde(rename = "finishedTime")]
    finished_time: String,
    /// Path of the last object looked at.
    cursor: String,
}

/// State of the scrub job: the current (or last) run and recent repairs. Also what
/// `jcs --json admin scrub status` prints (built from the coordinator's `ScrubStatus`).
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ScrubStatusData)]
pub struct StatusJson {
    /// A run is in progress or about to start.
    running: bool,
    deep: bool,
    /// 0 = every package.
    #[serde(rename = "packageID")]
    package_id: u64,
    /// Last object id the run checked.
    cursor: u64,
    #[serde(rename = "objectsChecked")]
    objects_checked: u64,
    damaged: u64,
    repaired: u64,
    failed: u64,
    /// Objects with a block on an agent down for less than `repair_after_down`.
    unavailable: u64,
    #[serde(rename = "lastError")]
    last_error: String,
    /// Start of the current (or last) run; empty if none ever ran.
    #[serde(rename = "startTime")]
    start_time: String,
    /// End of the last completed run; empty if none.
    #[serde(rename = "lastFinishedTime")]
    last_finished_time: String,
    /// Completed runs.
    runs: u64,
    /// Objects waiting in the repair queue (reported by degraded reads).
    queued: u64,
    /// Most recent repairs (and re-encodes), newest first.
    recent: Vec<RepairJson>,
    /// Re-encode jobs, one per package whose policy was changed.
    reencode: Vec<ReencodeJson>,
    /// Objects waiting to be converted to their package's policy (multipart completion,
    /// import).
    #[serde(rename = "reencodeQueued")]
    reencode_queued: u64,
}

fn time_or_empty(ms: i64) -> String {
    if ms > 0 {
        rfc3339_ms(ms)
    } else {
        String::new()
    }
}

impl From<ScrubStatus> for StatusJson {
    fn from(s: ScrubStatus) -> Self {
        StatusJson {
            running: s.running,
            deep: s.deep,
            package_id: s.package_id,
            cursor: s.cursor,
            objects_checked: s.objects_checked,
            damaged: s.damaged,
            repaired: s.repaired,
            failed: s.failed,
            unavailable: s.unavailable,
            last_error: s.last_error,
            start_time: time_or_empty(s.started_ms),
            last_finished_time: time_or_empty(s.last_finished_ms),
            runs: s.runs,
            queued: s.queued,
            recent: s
                .recent
                .into_iter()
                .map(|r| RepairJson {
                    object_id: r.object_id,
                    blocks: r.blocks,
                    from_spaces: r.from_spaces,
                    to_spaces: r.to_spaces,
                    bytes: r.bytes,
                    result: r.result,
                    reason: r.reason,
                    time: time_or_empty(r.time_ms),
                })
                .collect(),
            reencode: s
                .reencode
                .into_iter()
                .map(|j| ReencodeJson {
                    package_id: j.package_id,
                    redundancy: serde_json::from_str(&j.policy_json)
                        .unwrap_or(serde_json::Value::Null),
                    running: j.running,
                    total: j.total,
                    checked: j.checked,
                    reencoded: j.reencoded,
                    failed: j.failed,
                    superseded: j.superseded,
                    last_error: j.last_error,
                    start_time: time_or_empty(j.started_ms),
                    finished_time: time_or_empty(j.finished_ms),
                    cursor: j.cursor,
                })
                .collect(),
            reencode_queued: s.reencode_queued,
        }
    }
}

/// `POST /v1/admin/scrub/start`: ask the leader coordinator to start a scrub run now.
#[utoipa::path(post, path = "/v1/admin/scrub/start", tag = "admin", request_body = StartBody,
    responses((status = 200, description = "The job's state with the request recorded", body = OkEnvelope<StatusJson>)))]
pub(crate) async fn start(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<ApiOk<StatusJson>, ApiError> {
    let package_id = match body.package_id {
        None => 0,
        Some(id) => crate::routes::require_id("packageID", Some(id))?,
    };
    let deep = body.deep;
    let status = state
        .coordinator()
        .start_scrub(StartScrubRequest { package_id, deep })
        .await?
        .into_inner();
    tracing::info!(package_id, deep, "scrub requested");
    Ok(ApiOk(status.into()))
}

/// `GET /v1/admin/scrub/status`: progress of the scrub job and recent repairs.
#[utoipa::path(get, path = "/v1/admin/scrub/status", tag = "admin", params(StatusQuery),
    responses((status = 200, description = "The job's state", body = OkEnvelope<StatusJson>)))]
pub(crate) async fn status(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatusQuery>,
) -> Result<ApiOk<StatusJson>, ApiError> {
    // Absent = the coordinator's default (20); 0 would mean the same, so it is refused
    // like the schema says.
    let recent = query.recent.unwrap_or(0);
    if query.recent.is_some() && !(1..=1000).contains(&recent) {
        return Err(ApiError::bad_argument(
            "field `recent` must be between 1 and 1000",
        ));
    }
    let status = state
        .coordinator()
        .get_scrub_status(GetScrubStatusRequest { recent })
        .await?
        .into_inner();
    Ok(ApiOk(status.into()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::testing::*;

    #[tokio::test]
    async fn start_validates_its_body_and_passes_the_request_on() {
        let fx = Fixture::start().await;
        let (status, body) = json(
            call(
                fx.app(),
                post_json("/v1/admin/scrub/start", r#"{"packageID": 5, "deep": true}"#),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (
                &body["data"]["running"],
                &body["data"]["deep"],
                &body["data"]["packageID"]
            ),
            (&json!(true), &json!(true), &json!(5))
        );
        let (status, body) =
            json(call(fx.app(), post_json("/v1/admin/scrub/start", "{}")).await).await;
        assert_eq!((status, &body["data"]["deep"]), (200, &json!(false)));
        for bad in [
            r#"{"packageID": 0}"#,
            r#"{"packageID": -1}"#,
            r#"{"deep": "yes"}"#,
            r#"{"other": 1}"#,
            "[]",
        ] {
            let (status, body) =
                json(call(fx.app(), post_json("/v1/admin/scrub/start", bad)).await).await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("BadArgument")),
                "{bad}: {body}"
            );
        }
        let (status, body) = json(
            call(
                fx.app(),
                post_json("/v1/admin/scrub/start", r#"{"packageID": 999}"#),
            )
            .await,
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (404, Some("DataNotFound")));
    }

    #[tokio::test]
    async fn status_renders_counters_and_recent_repairs() {
        let fx = Fixture::start().await;
        let (status, body) =
            json(call(fx.app(), http_get("/v1/admin/scrub/status?recent=5")).await).await;
        assert_eq!(status, 200, "{body}");
        let d = &body["data"];
        assert_eq!(d["objectsChecked"], 5, "recent is passed on: {d}");
        assert_eq!(d["lastFinishedTime"], "2025-06-24T08:31:28.514Z");
        assert_eq!(
            d["recent"][0],
            json!({"objectID": 7, "blocks": [3], "fromUserSpaceIDs": [4], "toUserSpaceIDs": [8],
                   "bytes": 68, "result": "repaired", "reason": "corrupt",
                   "time": "2025-06-24T08:31:28.514Z"})
        );
        for bad in ["recent=0", "recent=1001", "recent=-1", "recent=x"] {
            let (status, body) =
                json(call(fx.app(), http_get(&format!("/v1/admin/scrub/status?{bad}"))).await)
                    .await;
            assert_eq!(
                (status, body["code"].as_str()),
                (400, Some("BadArgument")),
                "{bad}"
            );
        }
    }
}
