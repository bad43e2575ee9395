//! Authentication of `/v1` requests: the `JCS-HMAC-SHA256` signature of
//! [`common::signing`] (specified in docs/api.md, "Authentication"), checked by an axum
//! middleware in front of every `/v1` route when `[auth] enabled = true`.
//!
//! A request passes when its `Authorization` names a known access key, covers `host`,
//! `x-jcs-date` and `x-jcs-content-sha256`, its `x-jcs-date` is within `max_clock_skew` of
//! the gateway's clock, and the signature recomputed with the key's secret matches (compared
//! in constant time). Anything else is answered 401 `Unauthorized` before the handler runs,
//! so nothing is done. When the payload hash is not `UNSIGNED-PAYLOAD`, the body must match
//! it: a body of at most [`MAX_BUFFERED_BODY`] bytes is checked before the handler runs
//! (401 on mismatch); a longer one is checked as it streams and fails at its end, before any
//! upload commits.
//!
//! Secrets come from the coordinator (`LookupAccessKey`) and are cached for
//! `key_cache_ttl` (at most `key_cache_capacity` keys); absent keys are cached too, so
//! unknown ids do not reach the coordinator on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use client::CoordinatorClient;
use common::ErrorCode;
use common::secret::Secret;
use common::signing::{self, CONTENT_SHA256_HEADER, DATE_HEADER, UNSIGNED_PAYLOAD};
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::error::ApiError;

/// Bodies with a signed hash up to this size (one data chunk) are read and checked before
/// the handler runs; longer ones are checked while they stream.
pub const MAX_BUFFERED_BODY: u64 = 1 << 20;

/// The middleware's state: the settings, the coordinator and the key cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    config: AuthConfig,
    coordinator: CoordinatorClient,
    /// access key id → (when looked up, the key or `None` when it does not exist).
    cache: Mutex<HashMap<String, (Instant, Option<Key>)>>,
}

/// What the gateway needs of an access key.
#[derive(Clone)]
struct Key {
    secret: Secret,
    /// Only GET and HEAD requests are allowed.
    read_only: bool,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Unauthenticated, message)
}

impl Authenticator {
    pub fn new(config: AuthConfig, coordinator: CoordinatorClient) -> Self {
        Authenticator {
            inner: Arc::new(Inner {
                config,
                coordinator,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<Key>)>> {
        self.inner.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The key `id`: `Ok(None)` when it does not exist.
    async fn key(&self, id: &str) -> Result<Option<Key>, ApiError> {
        let ttl = self.inner.config.key_cache_ttl;
        if let Some((at, key)) = self.cache().get(id)
            && at.elapsed() < ttl
        {
            return Ok(key.clone());
        }
        let answer = self
            .inner
            .coordinator
            .clone()
            .lookup_access_key(proto::coordinator::LookupAccessKeyRequest {
                access_key_id: id.to_owned(),
            })
            .await;
        let key = match answer {
            Ok(resp) => {
                let resp = resp.into_inner();
                Some(Key {
                    read_only: resp.key.is_some_and(|k| k.read_only),
                    secret: Secret::new(resp.secret_key),
                })
            }
            Err(status) => {
                let err = ApiError::from(status);
                if err.code != ErrorCode::NotFound {
                    return Err(err);
                }
                None
            }
        };
        let mut cache = self.cache();
        if cache.len() >= self.inner.config.key_cache_capacity {
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
            if cache.len() >= self.inner.config.key_cache_capacity {
                cache.clear();
            }
        }
        cache.insert(id.to_owned(), (Instant::now(), key.clone()));
        Ok(key)
    }

    /// Check the signature of a request (not its body); on success, the payload hash the
    /// body must match (`None` for `UNSIGNED-PAYLOAD`).
    async fn check(&self, req: &Parts) -> Result<Option<String>, ApiError> {
        let headers = &req.headers;
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| {
                unauthorized(
                    "missing Authorization header: /v1 requests must be signed (JCS-HMAC-SHA256, see docs/api.md)",
                )
            })?
            .to_str()
            .map_err(|_| unauthorized("Authorization header is not ASCII"))?;
        let auth = signing::parse_authorization(value).map_err(unauthorized)?;
        let date = single_header(headers, DATE_HEADER)?
            .ok_or_else(|| unauthorized(format!("missing {DATE_HEADER} header")))?;
        let then = signing::parse_date_time(&date)
            .ok_or_else(|| unauthorized(format!("{DATE_HEADER} must be YYYYMMDDTHHMMSSZ (UTC)")))?;
        let now = common::time::now_ms().div_euclid(1000);
        let skew = self.inner.config.max_clock_skew;
        if then.abs_diff(now) > skew.as_secs() {
            return Err(unauthorized(format!(
                "{DATE_HEADER} {date} is more than {} away from the gateway's clock",
                humantime_secs(skew)
            )));
        }
        if auth.day != signing::day_of(&date) {
            return Err(unauthorized(format!(
                "the Credential date {} is not the day of {DATE_HEADER}",
                auth.day
            )));
        }
        for required in signing::REQUIRED_SIGNED_HEADERS {
            if !auth.signed_headers.iter().any(|h| h == required) {
                return Err(unauthorized(format!(
                    "SignedHeaders must include {required}"
                )));
            }
        }
        let payload_hash = single_header(headers, CONTENT_SHA256_HEADER)?
            .ok_or_else(|| unauthorized(format!("missing {CONTENT_SHA256_HEADER} header")))?;
        let hashed = if payload_hash == UNSIGNED_PAYLOAD {
            None
        } else if payload_hash.len() == 64
            && payload_hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Some(payload_hash.clone())
        } else {
            return Err(unauthorized(format!(
                "{CONTENT_SHA256_HEADER} must be 64 lower-case hex digits or {UNSIGNED_PAYLOAD}"
            )));
        };
        let mut signed = Vec::with_capacity(auth.signed_headers.len());
        for name in &auth.signed_headers {
            let value = if name == "host" {
                host(req)
            } else {
                joined_header(headers, name)?
            };
            let value = value.ok_or_else(|| {
                unauthorized(format!("signed header {name} is not in the request"))
            })?;
            signed.push((name.clone(), value));
        }
        let parts = signing::RequestParts {
            method: req.method.as_str(),
            path: req.uri.path(),
            query: req.uri.query().unwrap_or(""),
            headers: signed,
            payload_hash: &payload_hash,
        };
        let key = self
            .key(&auth.access_key_id)
            .await?
            .ok_or_else(|| unauthorized(format!("unknown access key {}", auth.access_key_id)))?;
        let (canonical, _) = signing::canonical_request(&parts);
        let sts = signing::string_to_sign(&date, &canonical);
        if !signing::verify(&key.secret, &auth.day, &sts, &auth.signature) {
            return Err(unauthorized(
                "signature does not match (see docs/api.md for the canonical request)",
            ));
        }
        // Every GET route only reads; every other method changes something.
        if key.read_only && !matches!(req.method, Method::GET | Method::HEAD) {
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "access key {} is read-only: {} {} needs a read-write key",
                    auth.access_key_id,
                    req.method,
                    req.uri.path()
                ),
            ));
        }
        tracing::debug!(access_key = %auth.access_key_id, "request authenticated");
        Ok(hashed)
    }
}

fn humantime_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// The one value of header `name` (401 when it is repeated or not text).
fn single_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(unauthorized(format!("header {name} is repeated")));
    }
    first
        .to_str()
        .map(|v| Some(v.trim().to_owned()))
        .map_err(|_| unauthorized(format!("header {name} is not ASCII")))
}

/// Every value of header `name` joined by `,` (`None` when absent).
fn joined_header(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let mut out: Option<String> = None;
    for v in headers.get_all(name) {
        let v = v
            .to_str()
            .map_err(|_| unauthorized(format!("header {name} is not ASCII")))?;
        match &mut out {
            None => out = Some(v.to_owned()),
            Some(o) => {
                o.push(',');
                o.push_str(v);
            }
        }
    }
    Ok(out)
}

/// `Host`, or the URI's authority (HTTP/2).
fn host(req: &Parts) -> Option<String> {
    req.headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri.authority().map(|a| a.as_str().to_owned()))
}

/// The middleware: answers 401 unless the request is correctly signed.
pub async fn layer(State(auth): State<Authenticator>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let hashed = match auth.check(&parts).await {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    let Some(expected) = hashed else {
        return next.run(Request::from_parts(parts, body)).await;
    };
    // The exact length when known (Content-Length, or a body built in process).
    let length = axum::body::HttpBody::size_hint(&body).upper();
    let body = match length {
        Some(n) if n <= MAX_BUFFERED_BODY => {
            let bytes = match axum::body::to_bytes(body, MAX_BUFFERED_BODY as usize).await {
                Ok(b) => b,
                Err(e) => {
                    return ApiError::bad_argument(format!("cannot read the request body: {e}"))
                        .into_response();
                }
            };
            if signing::sha256_hex(&bytes) != expected {
                return unauthorized(format!("the body does not match {CONTENT_SHA256_HEADER}"))
                    .into_response();
            }
            Body::from(bytes)
        }
        _ => verify_while_streaming(body, expected),
    };
    next.run(Request::from_parts(parts, body)).await
}

/// The body as it streams, hashed; at its end, an error instead of the end when the hash is
/// not `expected`, so the handler fails (an upload commits only after the whole body).
fn verify_while_streaming(body: Body, expected: String) -> Body {
    struct St {
        inner: axum::body::BodyDataStream,
        hasher: Sha256,
        expected: String,
        done: bool,
    }
    let st = St {
        inner: body.into_data_stream(),
        hasher: Sha256::new(),
        expected,
        done: false,
    };
    let stream = futures::stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        match st.inner.next().await {
            Some(Ok(chunk)) => {
                st.hasher.update(&chunk);
                Some((Ok::<Bytes, std::io::Error>(chunk), st))
            }
            Some(Err(e)) => {
                st.done = true;
                Some((Err(std::io::Error::other(e)), st))
            }
            None => {
                st.done = true;
                let got = hex::encode(std::mem::take(&mut st.hasher).finalize());
                if got == st.expected {
                    None
                } else {
                    Some((
                        Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("the body does not match {CONTENT_SHA256_HEADER}"),
                        )),
                        st,
                    ))
                }
            }
        }
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::http::Request as HttpRequest;
    use proto::coordinator as pb;

    use super::*;
    use crate::config::GatewayConfig;
    use crate::testing::{BOUNDARY, Fixture, call, json, multipart_body};

    const KEY: &str = "JCSKTEST0000000001";
    const SECRET: &str = "0123456789abcdef0123456789abcdef01234567";
    const HOST: &str = "gw.test:7890";

    async fn fixture() -> Fixture {
        let fx = Fixture::start_with(GatewayConfig {
            auth: AuthConfig {
                enabled: true,
                key_cache_ttl: Duration::from_millis(200),
                ..AuthConfig::default()
            },
            ..GatewayConfig::default()
        })
        .await;
        add_key(&fx, KEY, SECRET);
        fx
    }

    fn add_key(fx: &Fixture, id: &str, secret: &str) {
        add_key_with(fx, id, secret, false);
    }

    fn add_key_with(fx: &Fixture, id: &str, secret: &str, read_only: bool) {
        fx.coord().access_keys.insert(
            id.to_owned(),
            (
                pb::AccessKey {
                    access_key_id: id.to_owned(),
                    name: String::new(),
                    create_time_ms: 0,
                    read_only,
                },
                secret.to_owned(),
            ),
        );
    }

    /// What a client sends: method, path and query, body, and how to sign it.
    struct Signed<'a> {
        method: &'a str,
        uri: &'a str,
        body: Vec<u8>,
        content_type: Option<String>,
        key: &'a str,
        secret: &'a str,
        date: String,
        payload_hash: String,
    }

    impl<'a> Signed<'a> {
        fn new(method: &'a str, uri: &'a str, body: &[u8]) -> Self {
            Signed {
                method,
                uri,
                body: body.to_vec(),
                content_type: (!body.is_empty()).then(|| "application/json".to_owned()),
                key: KEY,
                secret: SECRET,
                date: signing::now_date_time(),
                payload_hash: signing::sha256_hex(body),
            }
        }

        /// The request with its `Authorization`, signed over `signed_uri` (normally `uri`).
        fn build_signed_over(&self, signed_uri: &str) -> HttpRequest<Body> {
            let (path, query) = signed_uri.split_once('?').unwrap_or((signed_uri, ""));
            let parts = signing::RequestParts {
                method: self.method,
                path,
                query,
                headers: vec![
                    ("host".into(), HOST.into()),
                    (DATE_HEADER.into(), self.date.clone()),
                    (CONTENT_SHA256_HEADER.into(), self.payload_hash.clone()),
                ],
                payload_hash: &self.payload_hash,
            };
            let auth = signing::sign(self.key, &Secret::new(self.secret), &self.date, &parts);
            let mut b = HttpRequest::builder()
                .method(self.method)
                .uri(self.uri)
                .header("host", HOST)
                .header(DATE_HEADER, &self.date)
                .header(CONTENT_SHA256_HEADER, &self.payload_hash)
                .header("authorization", auth);
            if let Some(ct) = &self.content_type {
                b = b.header("content-type", ct);
            }
            b.body(Body::from(self.body.clone())).unwrap()
        }

        fn build(&self) -> HttpRequest<Body> {
            self.build_signed_over(self.uri)
        }
    }

    async fn expect_401(app: &axum::Router, req: HttpRequest<Body>, why: &str) -> String {
        let (status, body) = json(call(app.clone(), req).await).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["code"], "Unauthorized", "{why}: {body}");
        assert!(body["data"].is_null(), "{why}: {body}");
        body["message"].as_str().unwrap().to_owned()
    }

    fn created_buckets(fx: &Fixture) -> usize {
        fx.coord()
            .calls
            .iter()
            .filter(|c| **c == "create_bucket")
            .count()
    }

    #[tokio::test]
    async fn signed_requests_pass() {
        let fx = fixture().await;
        let app = fx.app();
        let (status, body) = json(
            call(
                fx.app(),
                Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#).build(),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["bucket"]["name"], "b1");
        let req = Signed::new("GET", "/v1/bucket/getByName?name=b1", b"").build();
        let (status, body) = json(call(app.clone(), req).await).await;
        assert_eq!(status, 200, "{body}");
        // A query with characters that need encoding, signed as sent.
        let req = Signed::new("GET", "/v1/bucket/getByName?name=a%20b+c~d&userID=1", b"").build();
        let (status, body) = json(call(app.clone(), req).await).await;
        assert_eq!(status, 404, "{body}");
    }

    #[tokio::test]
    async fn missing_or_malformed_authorization_is_refused_and_nothing_happens() {
        let fx = fixture().await;
        let app = fx.app();
        let plain = HttpRequest::post("/v1/bucket/create")
            .header("host", HOST)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"name":"b1"}"#))
            .unwrap();
        let msg = expect_401(&app, plain, "no Authorization").await;
        assert!(msg.contains("missing Authorization"), "{msg}");

        let mut req = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#).build();
        req.headers_mut().remove(DATE_HEADER);
        expect_401(&app, req, "no date").await;

        let mut req = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#).build();
        req.headers_mut()
            .insert("authorization", "Bearer abc".parse().unwrap());
        expect_401(&app, req, "other scheme").await;
        assert_eq!(created_buckets(&fx), 0);
    }

    #[tokio::test]
    async fn wrong_secret_and_unknown_key_are_refused() {
        let fx = fixture().await;
        let app = fx.app();
        let mut s = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#);
        s.secret = "not-the-secret";
        let msg = expect_401(&app, s.build(), "wrong secret").await;
        assert!(msg.contains("signature does not match"), "{msg}");

        let mut s = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#);
        s.key = "JCSKUNKNOWN";
        let msg = expect_401(&app, s.build(), "unknown key").await;
        assert!(msg.contains("unknown access key"), "{msg}");
        // The absence is cached: a second try does not ask the coordinator again.
        expect_401(&app, s.build(), "unknown key again").await;
        let lookups = fx
            .coord()
            .calls
            .iter()
            .filter(|c| **c == "lookup_access_key")
            .count();
        assert_eq!(lookups, 2, "one lookup per key id");
        assert_eq!(created_buckets(&fx), 0);
    }

    #[tokio::test]
    async fn a_read_only_key_reads_and_is_refused_for_changes() {
        const RO: &str = "JCSKREADONLY0001";
        const RO_SECRET: &str = "read-only-secret";
        let fx = fixture().await;
        add_key_with(&fx, RO, RO_SECRET, true);
        let app = fx.app();
        let as_ro = |method, uri, body: &[u8]| {
            let mut s = Signed::new(method, uri, body);
            s.key = RO;
            s.secret = RO_SECRET;
            s.build()
        };
        // Changes: 403 envelope naming the key, nothing created.
        let req = as_ro("POST", "/v1/bucket/create", br#"{"name":"b1"}"#);
        let (status, body) = json(call(app.clone(), req).await).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["code"], "OperationFailed", "{body}");
        let msg = body["message"].as_str().unwrap();
        assert!(
            msg.contains(RO) && msg.contains("read-only") && msg.contains("/v1/bucket/create"),
            "{msg}"
        );
        assert_eq!(created_buckets(&fx), 0);
        // A wrong signature is still a 401, not a hint that the key is read-only.
        let mut s = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#);
        s.key = RO;
        s.secret = "not-the-secret";
        expect_401(&app, s.build(), "wrong secret of a read-only key").await;
        // Reads pass.
        let (status, body) =
            json(call(app.clone(), as_ro("GET", "/v1/bucket/listAll", b"")).await).await;
        assert_eq!(status, 200, "{body}");
        // The read-write key still changes things.
        let req = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#).build();
        let (status, body) = json(call(app, req).await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(created_buckets(&fx), 1);
    }

    #[tokio::test]
    async fn tampering_with_what_was_signed_is_refused() {
        let fx = fixture().await;
        let app = fx.app();
        // Path.
        let s = Signed::new("POST", "/v1/bucket/delete", br#"{"bucketID":1}"#);
        expect_401(&app, s.build_signed_over("/v1/bucket/create"), "path").await;
        // Query.
        let s = Signed::new("GET", "/v1/bucket/getByName?name=other", b"");
        expect_401(
            &app,
            s.build_signed_over("/v1/bucket/getByName?name=b1"),
            "query",
        )
        .await;
        // Method.
        let mut req = Signed::new("GET", "/v1/bucket/create", br#"{"name":"b1"}"#).build();
        *req.method_mut() = axum::http::Method::POST;
        expect_401(&app, req, "method").await;
        // The payload hash header changed after signing.
        let mut req = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#).build();
        req.headers_mut().insert(
            CONTENT_SHA256_HEADER,
            signing::sha256_hex(br#"{"name":"b2"}"#).parse().unwrap(),
        );
        expect_401(&app, req, "payload hash header").await;
        // The body does not match the signed hash.
        let mut s = Signed::new("POST", "/v1/bucket/create", br#"{"name":"b1"}"#);
        s.body = br#"{"name":"evil"}"#.to_vec();
        let msg = expect_401(&app, s.build(), "body").await;
        assert!(msg.contains("body does not match"), "{msg}");
        // The host.
        let mut req = Signed::new("GET", "/v1/bucket/listAll", b"").build();
        req.headers_mut()
            .insert("host", "elsewhere:1".parse().unwrap());
        expect_401(&app, req, "host").await;
        assert_eq!(created_buckets(&fx), 0);
        assert!(fx.coord().buckets.is_empty());
    }

    #[tokio::test]
    async fn clock_skew_beyond_the_limit_is_refused() {
        let fx = fixture().await;
        let app = fx.app();
        let now = common::time::now_ms() / 1000;
        for (offset, ok) in [
            (-16 * 60, false),
            (16 * 60, false),
            (-14 * 60, true),
            (14 * 60, true),
        ] {
            let mut s = Signed::new("GET", "/v1/bucket/listAll", b"");
            s.date = signing::format_date_time(now + offset);
            let (status, body) = json(call(app.clone(), s.build()).await).await;
            if ok {
                assert_eq!(status, 200, "offset {offset}: {body}");
            } else {
                assert_eq!(status, 401, "offset {offset}: {body}");
                assert!(body["message"].as_str().unwrap().contains("15m"), "{body}");
            }
        }
    }

    #[tokio::test]
    async fn a_deleted_key_stops_working_within_the_cache_ttl() {
        let fx = fixture().await;
        let app = fx.app();
        add_key(&fx, "JCSKSHORTLIVED", "s3cr3t");
        let req = || {
            let mut s = Signed::new("GET", "/v1/bucket/listAll", b"");
            s.key = "JCSKSHORTLIVED";
            s.secret = "s3cr3t";
            s.build()
        };
        assert_eq!(call(app.clone(), req()).await.status(), 200);
        fx.coord().access_keys.remove("JCSKSHORTLIVED");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let status = call(app.clone(), req()).await.status();
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                Instant::now() < deadline,
                "deleted key still accepted after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn upload_body(content: &[u8]) -> Vec<u8> {
        multipart_body(&[
            ("info", None, br#"{"packageID":1}"#),
            ("files", Some("f.bin"), content),
        ])
    }

    fn upload(body: Vec<u8>, payload_hash: Option<&str>) -> Signed<'static> {
        let mut s = Signed::new("POST", "/v1/object/upload", &body);
        s.content_type = Some(format!("multipart/form-data; boundary={BOUNDARY}"));
        if let Some(h) = payload_hash {
            s.payload_hash = h.to_owned();
        }
        s
    }

    #[tokio::test]
    async fn uploads_are_checked_and_a_refused_one_leaves_nothing() {
        let fx = fixture().await;
        let app = fx.app();
        // Wrong secret: refused before anything is reserved.
        let mut s = upload(upload_body(b"hello"), Some(UNSIGNED_PAYLOAD));
        s.secret = "wrong";
        expect_401(&app, s.build(), "bad upload signature").await;
        assert!(fx.coord().begins.is_empty() && fx.coord().objects.is_empty());

        // A streamed body whose signed hash is wrong (longer than what is checked up
        // front): the upload fails at the end of the body and commits nothing.
        let big = crate::testing::sha256_hex(b"x").repeat(40_000); // 2.5 MiB
        let s = upload(
            upload_body(big.as_bytes()),
            Some(&signing::sha256_hex(b"other")),
        );
        let resp = call(app.clone(), s.build()).await;
        assert_ne!(resp.status(), 200);
        assert!(fx.coord().commits.is_empty(), "nothing committed");
        assert!(fx.coord().objects.is_empty());

        // UNSIGNED-PAYLOAD and a hashed body both pass.
        let (status, body) = json(
            call(
                fx.app(),
                upload(upload_body(b"hello"), Some(UNSIGNED_PAYLOAD)).build(),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = json(
            call(
                app.clone(),
                upload(upload_body(big.as_bytes()), None).build(),
            )
            .await,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(fx.coord().objects.len(), 1, "both wrote f.bin");
    }

    #[tokio::test]
    async fn probes_and_documents_stay_open() {
        let fx = fixture().await;
        let app = fx.app();
        for path in ["/healthz", "/metrics", "/openapi.json", "/docs/"] {
            let resp = call(app.clone(), crate::testing::http_get(path)).await;
            assert_ne!(resp.status(), 401, "{path}");
            assert!(
                resp.status().is_success() || resp.status().is_redirection() || path == "/readyz",
                "{path}: {}",
                resp.status()
            );
        }
        let resp = call(app.clone(), crate::testing::http_get("/v1/bucket/listAll")).await;
        assert_eq!(resp.status(), 401);
    }

    /// The served document declares the scheme either way, and requires it of every
    /// operation only when authentication is on.
    #[tokio::test]
    async fn the_openapi_document_follows_the_setting() {
        for (fx, required) in [(fixture().await, true), (Fixture::start().await, false)] {
            let (status, doc) =
                json(call(fx.app(), crate::testing::http_get("/openapi.json")).await).await;
            assert_eq!(status, 200);
            let scheme = &doc["components"]["securitySchemes"][crate::openapi::SECURITY_SCHEME];
            assert_eq!(scheme["type"], "apiKey", "{scheme}");
            assert_eq!(scheme["in"], "header");
            assert_eq!(scheme["name"], "Authorization");
            if required {
                assert_eq!(
                    doc["security"],
                    serde_json::json!([{ crate::openapi::SECURITY_SCHEME: [] }])
                );
            } else {
                assert!(doc.get("security").is_none(), "{}", doc["security"]);
            }
        }
    }

    #[tokio::test]
    async fn without_auth_unsigned_requests_pass() {
        let fx = Fixture::start().await;
        let resp = call(fx.app(), crate::testing::http_get("/v1/bucket/listAll")).await;
        assert_eq!(resp.status(), 200);
    }
}
