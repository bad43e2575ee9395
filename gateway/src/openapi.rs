//! The OpenAPI 3 description of `/v1`, generated from the code.
//!
//! Every `/v1` handler carries a `#[utoipa::path]` attribute and is registered in
//! [`crate::server`] through `utoipa_axum::routes!`, so the router and the document come
//! from the same place and cannot drift. This module holds what the handlers' attributes
//! share: the [`ApiDoc`] root (title, tags, the error responses added to every operation)
//! and the schemas of things that are not Rust types of the gateway: the `{code, message,
//! data}` envelope, the multipart upload forms, download bodies, and the JSON the
//! coordinator renders (user spaces, sync tasks) that the gateway embeds verbatim.
//!
//! The document is served at `GET /openapi.json`, with Swagger UI at `/docs`.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, Schema};
use utoipa::{Modify, PartialSchema, ToSchema};

/// Path of the served document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Path of Swagger UI.
pub const DOCS_PATH: &str = "/docs";

/// Root of the document: info, tags and the error envelope. The paths are added by the
/// router (see [`crate::server::api_routes`]), then [`ErrorResponses`] by [`finish`].
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "JCS gateway",
        description = "The `/v1` REST API of JCS, a JointCloud storage system. Every JSON \
            answer is an envelope `{code, message, data}`: `code` is `OK` on success, \
            otherwise one of `BadArgument`, `DataNotFound`, `DataExists`, \
            `OperationFailed`, `Unauthorized`, and `message` says what went wrong. \
            Downloads answer the object's bytes (`application/octet-stream`) on success \
            and an envelope on failure.",
        license(name = "Apache-2.0")
    ),
    tags(
        (name = "bucket", description = "Buckets of a user"),
        (name = "package", description = "Packages (folders of objects) of a bucket"),
        (name = "object", description = "Objects: upload, download, list, move, clone, delete, multipart uploads"),
        (name = "userSpace", description = "User spaces (storage the user brings), package import and export"),
        (name = "spaceSyncer", description = "Sync tasks between user spaces"),
        (name = "admin", description = "Operations: the repair and scrub job of replicated and erasure-coded objects"),
    ),
    components(schemas(ErrorEnvelope))
)]
pub struct ApiDoc;

/// The document with every `/v1` route (no server state needed).
pub fn openapi() -> OpenApi {
    let config = crate::GatewayConfig::default();
    let mut spec = crate::server::api_routes(config.request_timeout, config.max_parts_in_flight)
        .into_openapi();
    finish(&mut spec, config.auth.enabled);
    spec
}

/// Complete the document once the routes are in: the shared error responses, the
/// signature scheme (required by every operation when `auth_required`, i.e. the gateway
/// runs with `[auth] enabled = true`), and operation ids made unique from the path
/// (`/v1/bucket/create` → `bucket.create`; the handlers' names repeat across modules).
pub(crate) fn finish(spec: &mut OpenApi, auth_required: bool) {
    ErrorResponses.modify(spec);
    SignatureScheme { auth_required }.modify(spec);
    MultipartEncodings.modify(spec);
    for (path, item) in spec.paths.paths.iter_mut() {
        let id = path.trim_start_matches("/v1/").replace('/', ".");
        for op in operations_mut(item) {
            op.operation_id = Some(id.clone());
        }
    }
}

/// Every operation of a path item.
fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Name of the security scheme in the document.
pub const SECURITY_SCHEME: &str = "jcsSignature";

/// Declares the `JCS-HMAC-SHA256` signature (`Authorization` header) as a security scheme,
/// and, when `auth_required` (the gateway runs with `[auth] enabled = true`, as in the
/// cluster configs), requires it of every operation. A gateway without authentication
/// serves a document without the requirement, so that the document describes what it
/// accepts (schemathesis checks that). Swagger UI cannot compute signatures, so "Try it
/// out" works against gateways without authentication only.
struct SignatureScheme {
    auth_required: bool,
}

impl Modify for SignatureScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
        let scheme = SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "`JCS-HMAC-SHA256 Credential=<access key id>/<YYYYMMDD>/jcs, \
             SignedHeaders=host;x-jcs-content-sha256;x-jcs-date, Signature=<hex>`, with the \
             headers `x-jcs-date` (`YYYYMMDDTHHMMSSZ`, within 15 minutes of the gateway's \
             clock by default) and `x-jcs-content-sha256` (hex SHA-256 of the body, or \
             `UNSIGNED-PAYLOAD`). Required when the gateway runs with `[auth] enabled = \
             true`; missing, wrong, expired or unknown-key signatures are answered 401 \
             `Unauthorized`. The algorithm, with a worked example, is in docs/api.md \
             (\"Authentication\"). Access keys: `jcs admin key create`.",
        )));
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(SECURITY_SCHEME, scheme);
        if self.auth_required {
            openapi.security = Some(vec![SecurityRequirement::new(
                SECURITY_SCHEME,
                Vec::<String>::new(),
            )]);
        }
    }
}

/// Declares the content type of each part of the multipart forms (upload, uploadPart):
/// `info` is JSON, `files` are bytes (utoipa's attribute has no `encoding`).
struct MultipartEncodings;

impl Modify for MultipartEncodings {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::encoding::EncodingBuilder;
        for item in openapi.paths.paths.values_mut() {
            for op in operations_mut(item) {
                let Some(content) = op
                    .request_body
                    .as_mut()
                    .and_then(|b| b.content.get_mut("multipart/form-data"))
                else {
                    continue;
                };
                for (part, content_type) in [
                    ("info", "application/json"),
                    ("files", "application/octet-stream"),
                ] {
                    content.encoding.insert(
                        part.to_owned(),
                        EncodingBuilder::new()
                            .content_type(Some(content_type))
                            .build(),
                    );
                }
            }
        }
    }
}

/// Adds the error responses (`4XX` and `5XX`, an [`ErrorEnvelope`]) to every operation:
/// every handler can refuse its input and every handler can fail.
struct ErrorResponses;

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            operations_mut(item).for_each(add_error_responses);
        }
    }
}

fn add_error_responses(op: &mut Operation) {
    for (status, description) in [
        (
            "4XX",
            "The request was refused: `BadArgument` (400, 405) names the bad field, \
             `DataNotFound` (404), `DataExists` or `OperationFailed` (409 conflict), \
             `Unauthorized` (401), `OperationFailed` (403)",
        ),
        (
            "5XX",
            "The system failed: `OperationFailed` with HTTP 500 (`internal error`), \
             503 (coordinator or agent unavailable) or 504 (deadline exceeded)",
        ),
    ] {
        let response = ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(ErrorEnvelope::name())))
                    .build(),
            )
            .build();
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert(RefOr::T(response));
    }
}

/// JCS `code` of a success.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum OkCode {
    OK,
}

/// JCS `code` of a failure (see `docs/api.md` for the HTTP status of each).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum ErrorCodeName {
    BadArgument,
    DataNotFound,
    DataExists,
    OperationFailed,
    Unauthorized,
}

/// A successful answer: HTTP 200, `{"code": "OK", "message": "", "data": ...}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct OkEnvelope<T> {
    code: OkCode,
    /// Always empty on success.
    message: String,
    data: T,
}

/// A failed answer: `{"code": <JCS code>, "message": <what went wrong>, "data": null}`.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ErrorEnvelope {
    code: ErrorCodeName,
    /// Names the offending field for client errors; `internal error` for faults.
    message: String,
    data: Null,
}

/// JSON `null` (the `data` of answers that carry nothing).
#[derive(Serialize)]
pub struct Null;

impl PartialSchema for Null {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Null).into()
    }
}

impl ToSchema for Null {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Null")
    }
}

/// Raw bytes: an uploaded file, or a download's body.
#[derive(Serialize)]
pub struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Binary")
    }
}

/// The `info` part of an upload (JSON). Unknown fields (such as `userID`) are ignored.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct UploadInfo {
    /// Package that receives the files.
    #[schema(minimum = 1)]
    #[serde(rename = "packageID")]
    package_id: u64,
    /// User space preferred for the shards (for rep/ec: the first block); absent or 0 = no
    /// preference.
    #[schema(value_type = u64, required = false)]
    affinity: Option<u64>,
    /// Overrides the package's redundancy policy for this upload (same form and checks as in
    /// `package/create`).
    #[schema(value_type = crate::model::RedundancyJson, required = false)]
    redundancy: Option<crate::model::RedundancyJson>,
}

/// `multipart/form-data` body of `POST /v1/object/upload`: the `info` part first, then
/// one `files` part per file, whose (percent-encoded) filename is the object path.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    info: UploadInfo,
    /// The files; each part's filename is the object's path in the package.
    files: Vec<Binary>,
}

/// The `info` part of an uploadPart request (JSON). Unknown fields are ignored.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct PartInfo {
    /// The multipart upload's object (from newMultipartUpload).
    #[schema(minimum = 1)]
    #[serde(rename = "objectID")]
    object_id: u64,
    /// Part number, 1..=10000.
    #[schema(minimum = 1, maximum = 10000)]
    index: i64,
}

/// `multipart/form-data` body of `POST /v1/object/uploadPart`: the `info` part first, then
/// exactly one `files` part (its filename is ignored).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct UploadPartForm {
    info: PartInfo,
    /// The part's bytes.
    files: Binary,
}

/// A sync task as the coordinator renders it: its id, the spec it was created with
/// (defaults filled in) and its status.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TaskView {
    #[serde(rename = "taskID")]
    #[schema(minimum = 1)]
    task_id: u64,
    #[serde(flatten)]
    spec: common::sync::TaskSpec,
    status: TaskStatusView,
}

/// `status` of a sync task.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct TaskStatusView {
    state: common::sync::TaskState,
    /// The latest runs, oldest first.
    runs: Vec<RunView>,
    /// The latest errors, oldest first.
    #[serde(rename = "lastErrors")]
    last_errors: Vec<String>,
}

/// How a run of a sync task ended (`Running` while it runs).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub enum RunResult {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// One run of a sync task.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    #[serde(rename = "runID")]
    #[schema(minimum = 1)]
    run_id: u64,
    /// RFC 3339 (UTC, milliseconds).
    #[schema(format = DateTime)]
    start_time: String,
    /// RFC 3339; `null` while running.
    #[schema(format = DateTime)]
    end_time: Option<String>,
    result: RunResult,
    files_scanned: u64,
    files_copied: u64,
    files_skipped: u64,
    files_failed: u64,
    /// Decimal string.
    #[schema(pattern = "^[0-9]+$")]
    bytes_copied: String,
    files_deleted: u64,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Method, Request};

    use super::*;
    use crate::testing::*;

    /// Methods probed on every path (HEAD follows GET in axum, OPTIONS and TRACE are unused).
    const METHODS: [Method; 5] = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ];

    /// `(METHOD, path)` of every operation of a JSON document.
    fn operations(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if METHODS
                    .iter()
                    .any(|m| m.as_str().eq_ignore_ascii_case(method))
                {
                    ops.insert((method.to_ascii_uppercase(), path.clone()));
                }
            }
        }
        ops
    }

    /// The `/v1/...` paths the router registers, read from the router itself: axum's
    /// `Debug` prints its path table (`paths: {RouteId(0): "/v1/bucket/create", ...}`).
    fn routed_paths(router: &Router) -> BTreeSet<String> {
        let debug = format!("{router:?}");
        let paths: BTreeSet<String> = debug
            .split('"')
            .filter(|s| s.starts_with("/v1/"))
            .map(str::to_owned)
            .collect();
        assert!(
            debug.contains("paths") && !paths.is_empty(),
            "axum's Router Debug no longer prints its paths; update routed_paths"
        );
        paths
    }

    fn documented_paths(ops: &BTreeSet<(String, String)>) -> BTreeSet<String> {
        ops.iter().map(|(_, p)| p.clone()).collect()
    }

    /// Every path the router serves under `/v1` is in the document and vice versa, and on
    /// each path exactly the documented methods reach a handler (the others get the 405
    /// fallback). The route list comes from the router, not from a hand-kept list.
    #[tokio::test]
    async fn every_route_is_documented_and_every_operation_is_routed() {
        let app = crate::router(unreachable_state().await);
        let doc = serde_json::to_value(openapi()).unwrap();
        let ops = operations(&doc);
        assert!(ops.len() >= 29, "only {} operations documented", ops.len());
        assert_eq!(routed_paths(&app), documented_paths(&ops));

        for path in documented_paths(&ops) {
            for method in METHODS {
                let req = Request::builder()
                    .method(method.clone())
                    .uri(path.as_str())
                    .header("content-type", "application/json")
                    .body(Body::from("{}"))
                    .unwrap();
                let (status, body) = json(call(app.clone(), req).await).await;
                let message = body["message"].as_str().unwrap_or_default();
                let routed = status != 405 && !message.starts_with("no such endpoint");
                let documented = ops.contains(&(method.to_string(), path.clone()));
                assert_eq!(
                    routed, documented,
                    "{method} {path}: answered {status} {body}, documented: {documented}"
                );
            }
        }
    }

    /// The served document parses, is OpenAPI 3, and names every operation the router has;
    /// Swagger UI is served at `/docs/`.
    #[tokio::test]
    async fn served_document_names_every_path_and_method() {
        let app = crate::router(unreachable_state().await);
        let (status, served) = json(call(app.clone(), http_get(OPENAPI_PATH)).await).await;
        assert_eq!(status, 200);
        assert!(
            served["openapi"].as_str().unwrap().starts_with("3."),
            "{}",
            served["openapi"]
        );
        let ops = operations(&served);
        assert_eq!(documented_paths(&ops), routed_paths(&app));
        assert_eq!(ops, operations(&serde_json::to_value(openapi()).unwrap()));
        for (method, path) in [
            ("POST", "/v1/bucket/create"),
            ("GET", "/v1/object/download"),
            ("POST", "/v1/object/upload"),
            ("GET", "/v1/object/listByPath"),
            ("POST", "/v1/spaceSyncer/createTask"),
            ("POST", "/v1/userSpace/downloadPackage"),
        ] {
            assert!(
                ops.contains(&(method.to_owned(), path.to_owned())),
                "{method} {path} missing"
            );
        }

        let resp = call(app.clone(), http_get("/docs/")).await;
        assert_eq!(resp.status(), 200);
        let html = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
        assert!(html.contains("swagger-ui"), "{html:.200}");
        let resp = call(app, http_get("/docs/swagger-initializer.js")).await;
        assert_eq!(resp.status(), 200);
        let js = String::from_utf8(body_bytes(resp).await.to_vec()).unwrap();
        assert!(js.contains(OPENAPI_PATH), "{js}");
    }

    /// The shapes that matter to clients: the envelope on every operation, multipart
    /// upload bodies, query parameters and download byte streams.
    #[test]
    fn document_describes_envelopes_forms_queries_and_streams() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let paths = &doc["paths"];
        for (path, item) in paths.as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for range in ["4XX", "5XX"] {
                    assert_eq!(
                        op["responses"][range]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorEnvelope",
                        "{method} {path} {range}"
                    );
                }
                assert!(op["responses"]["200"].is_object(), "{method} {path}");
            }
        }
        let envelope = &doc["components"]["schemas"]["ErrorEnvelope"];
        let required: Vec<&str> = envelope["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(required, ["code", "message", "data"]);

        let op = &paths["/v1/bucket/create"]["post"];
        assert_eq!(op["operationId"], "bucket.create");
        let ok = &op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"];
        let ok = &doc["components"]["schemas"][ok.as_str().unwrap().rsplit('/').next().unwrap()];
        assert_eq!(
            ok["properties"]["code"]["$ref"],
            "#/components/schemas/OkCode"
        );
        assert_eq!(
            ok["properties"]["data"]["properties"]["bucket"]["$ref"],
            "#/components/schemas/BucketJson"
        );

        let upload = &paths["/v1/object/upload"]["post"]["requestBody"]["content"];
        assert_eq!(
            upload["multipart/form-data"]["schema"]["$ref"],
            "#/components/schemas/UploadForm"
        );
        let download = &paths["/v1/object/download"]["get"];
        let params: Vec<&str> = download["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(params, ["objectID", "offset", "length"]);
        assert!(download["parameters"][0]["required"].as_bool().unwrap());
        assert_eq!(
            download["responses"]["200"]["content"]["application/octet-stream"]["schema"]["$ref"],
            "#/components/schemas/Binary"
        );
        assert_eq!(doc["components"]["schemas"]["Binary"]["format"], "binary");
    }

    /// Tighter shapes: unsigned id formats, ids from 1, sizes as digit strings,
    /// enums for `type`, the parts of the multipart forms with their content types.
    #[test]
    fn document_pins_formats_ids_sizes_enums_and_form_parts() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let object = &schemas["ObjectJson"]["properties"];
        for id in ["objectID", "packageID"] {
            // Unsigned: `int64` would declare ids above 2^63 - 1 invalid, which the gateway
            // accepts (schemathesis' negative_data_rejection check caught that).
            assert_eq!(object[id]["format"], "u-int64", "{id}");
            assert_eq!(object[id]["minimum"], 1, "{id}");
        }
        assert_eq!(object["size"]["pattern"], "^[0-9]+$");
        assert_eq!(object["createTime"]["format"], "date-time");
        assert_eq!(
            schemas["RedundancyType"]["enum"],
            serde_json::json!(["none", "rep", "ec", "multipartUpload"])
        );
        let redundancy = &schemas["RedundancyJson"];
        assert_eq!(redundancy["required"], serde_json::json!(["type"]));
        assert_eq!(redundancy["properties"]["k"]["type"], "integer");
        assert_eq!(redundancy["properties"]["k"]["minimum"], 1);
        assert_eq!(
            schemas["RunResult"]["enum"],
            serde_json::json!(["Running", "Succeeded", "Failed", "Cancelled"])
        );
        for path in ["/v1/object/upload", "/v1/object/uploadPart"] {
            let form = &doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"];
            assert_eq!(
                form["encoding"]["info"]["contentType"], "application/json",
                "{path}"
            );
            assert_eq!(
                form["encoding"]["files"]["contentType"], "application/octet-stream",
                "{path}"
            );
        }
        let info = &schemas["UploadInfo"];
        assert_eq!(info["required"], serde_json::json!(["packageID"]));
        assert_eq!(
            info["properties"]["redundancy"]["$ref"],
            "#/components/schemas/RedundancyJson"
        );
    }
}
