//! A thin client of the gateway's `/v1` API: JSON calls unwrap the envelope, byte calls
//! stream.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use snafu::ResultExt;

use common::secret::Secret;
use common::signing::{self, CONTENT_SHA256_HEADER, DATE_HEADER, UNSIGNED_PAYLOAD};

use super::error::{DecodeAnswerSnafu, Error, Result, SendRequestSnafu};

#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// Access key id and secret: every request is signed (`JCS-HMAC-SHA256`) when set.
    credentials: Option<(String, Secret)>,
}

#[derive(Deserialize)]
struct Envelope {
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Value,
}

/// One object as the API returns it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Object {
    #[serde(rename = "objectID")]
    pub object_id: u64,
    #[serde(rename = "packageID")]
    pub package_id: u64,
    pub path: String,
    pub size: String,
    pub file_hash: String,
    #[serde(default)]
    pub redundancy: Value,
    #[serde(default)]
    pub create_time: String,
    #[serde(default)]
    pub update_time: String,
}

impl Object {
    pub fn size(&self) -> u64 {
        self.size.parse().unwrap_or(0)
    }

    pub fn is_multipart_pending(&self) -> bool {
        self.redundancy.get("type").and_then(Value::as_str) == Some("multipartUpload")
    }
}

/// One page of `listByPath`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListPage {
    pub next_continuation_token: String,
    pub is_truncated: bool,
    pub common_prefixes: Vec<String>,
    pub objects: Vec<Object>,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct Bucket {
    #[serde(rename = "bucketID")]
    pub bucket_id: u64,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    #[serde(rename = "packageID")]
    pub package_id: u64,
    pub name: String,
    #[serde(rename = "bucketID")]
    pub bucket_id: u64,
    #[serde(default)]
    pub create_time: String,
}

impl Api {
    /// A client of the gateway at `base`; requests are signed with `credentials` (access
    /// key id, secret) when given.
    pub fn new(base: &str, credentials: Option<(String, Secret)>) -> Result<Api> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .context(SendRequestSnafu { url: base })?;
        Ok(Api {
            base: base.trim_end_matches('/').to_owned(),
            http,
            credentials,
        })
    }

    /// Sign (when credentials are set) and send a request.
    async fn send(&self, builder: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        let mut req = builder.build().context(SendRequestSnafu { url })?;
        if let Some((id, secret)) = &self.credentials {
            sign(&mut req, id, secret, &signing::now_date_time()).map_err(|message| {
                Error::usage(format!("cannot sign the request to {url}: {message}"))
            })?;
        }
        self.http
            .execute(req)
            .await
            .context(SendRequestSnafu { url })
    }

    pub fn url(&self, endpoint: &str) -> String {
        format!("{}/v1/{endpoint}", self.base)
    }

    /// Decode an envelope answer into `T`.
    async fn answer<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        resp: reqwest::Response,
    ) -> Result<T> {
        let status = resp.status().as_u16();
        let url = self.url(endpoint);
        let body = resp
            .bytes()
            .await
            .context(SendRequestSnafu { url: url.clone() })?;
        let env: Envelope = serde_json::from_slice(&body).map_err(|e| Error::DecodeAnswer {
            url: url.clone(),
            message: format!(
                "HTTP {status}, not a JSON envelope ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ),
        })?;
        if env.code != "OK" {
            return Err(Error::Api {
                endpoint: endpoint.to_owned(),
                status,
                code: env.code,
                message: env.message,
            });
        }
        serde_json::from_value(env.data).map_err(|e| Error::DecodeAnswer {
            url,
            message: e.to_string(),
        })
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let url = self.url(endpoint);
        let builder = self.http.get(&url).query(query);
        let resp = self.send(builder, &url).await?;
        self.answer(endpoint, resp).await
    }

    pub async fn post<T: DeserializeOwned>(&self, endpoint: &str, body: &Value) -> Result<T> {
        let url = self.url(endpoint);
        let builder = self.http.post(&url).json(body);
        let resp = self.send(builder, &url).await?;
        self.answer(endpoint, resp).await
    }

    pub async fn post_form<T: DeserializeOwned>(
        &self,
        endpoint: &str,
        form: reqwest::multipart::Form,
    ) -> Result<T> {
        let url = self.url(endpoint);
        let builder = self.http.post(&url).multipart(form);
        let resp = self.send(builder, &url).await?;
        self.answer(endpoint, resp).await
    }

    /// Start a download of `object_id` from `offset`; the error envelope (before the first
    /// byte) becomes an [`Error::Api`].
    pub async fn download(&self, object_id: u64, offset: u64) -> Result<reqwest::Response> {
        let endpoint = "object/download";
        let url = self.url(endpoint);
        let builder = self.http.get(&url).query(&[
            ("objectID", object_id.to_string()),
            ("offset", offset.to_string()),
        ]);
        let resp = self.send(builder, &url).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        match self.answer::<Value>(endpoint, resp).await {
            Err(e) => Err(e),
            Ok(_) => Err(Error::DecodeAnswer {
                url: self.url(endpoint),
                message: "error status with an OK envelope".into(),
            }),
        }
    }

    // ---- typed helpers ----

    pub async fn buckets(&self) -> Result<Vec<Bucket>> {
        #[derive(Deserialize)]
        struct D {
            buckets: Vec<Bucket>,
        }
        let d: D = self.get("bucket/listAll", &[]).await?;
        Ok(d.buckets)
    }

    pub async fn bucket(&self, name: &str) -> Result<Bucket> {
        #[derive(Deserialize)]
        struct D {
            bucket: Bucket,
        }
        let d: D = self
            .get("bucket/getByName", &[("name", name.to_owned())])
            .await
            .map_err(|e| not_found_as(e, format!("bucket {name}")))?;
        Ok(d.bucket)
    }

    pub async fn packages(&self, bucket_id: u64) -> Result<Vec<Package>> {
        #[derive(Deserialize)]
        struct D {
            packages: Vec<Package>,
        }
        let d: D = self
            .get(
                "package/listBucketPackages",
                &[("bucketID", bucket_id.to_string())],
            )
            .await?;
        Ok(d.packages)
    }

    pub async fn package(&self, bucket: &str, package: &str) -> Result<Package> {
        #[derive(Deserialize)]
        struct D {
            package: Package,
        }
        let d: D = self
            .get(
                "package/getByFullName",
                &[
                    ("bucketName", bucket.to_owned()),
                    ("packageName", package.to_owned()),
                ],
            )
            .await
            .map_err(|e| not_found_as(e, format!("package {bucket}/{package}")))?;
        Ok(d.package)
    }

    /// One page of a listing.
    pub async fn list_page(
        &self,
        package_id: u64,
        path: &str,
        is_prefix: bool,
        recursive: bool,
        max_keys: u32,
        token: &str,
    ) -> Result<ListPage> {
        self.get(
            "object/listByPath",
            &[
                ("packageID", package_id.to_string()),
                ("path", path.to_owned()),
                ("isPrefix", is_prefix.to_string()),
                ("noRecursive", (!recursive).to_string()),
                ("maxKeys", max_keys.to_string()),
                ("continuationToken", token.to_owned()),
            ],
        )
        .await
    }

    /// The object at exactly `path`, if any.
    pub async fn object_at(&self, package_id: u64, path: &str) -> Result<Option<Object>> {
        let page = self.list_page(package_id, path, false, true, 1, "").await?;
        Ok(page.objects.into_iter().find(|o| o.path == path))
    }

    pub async fn delete_objects(&self, ids: &[u64]) -> Result<()> {
        let _: Value = self
            .post("object/delete", &serde_json::json!({ "objectIDs": ids }))
            .await?;
        Ok(())
    }
}

/// Sign `req` at `date_time` (`YYYYMMDDTHHMMSSZ`): adds `host`, `x-jcs-date`,
/// `x-jcs-content-sha256` (the body's SHA-256 when the body is in memory, `UNSIGNED-PAYLOAD`
/// when it streams) and `Authorization` (docs/api.md, "Authentication").
pub fn sign(
    req: &mut reqwest::Request,
    access_key_id: &str,
    secret: &Secret,
    date_time: &str,
) -> std::result::Result<(), String> {
    let payload_hash = match req.body() {
        None => signing::EMPTY_SHA256.to_owned(),
        Some(body) => match body.as_bytes() {
            Some(bytes) => signing::sha256_hex(bytes),
            None => UNSIGNED_PAYLOAD.to_owned(),
        },
    };
    let url = req.url();
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        (None, _) => return Err("the URL has no host".to_owned()),
    };
    let parts = signing::RequestParts {
        method: req.method().as_str(),
        path: url.path(),
        query: url.query().unwrap_or(""),
        headers: vec![
            ("host".to_owned(), host.clone()),
            (DATE_HEADER.to_owned(), date_time.to_owned()),
            (CONTENT_SHA256_HEADER.to_owned(), payload_hash.clone()),
        ],
        payload_hash: &payload_hash,
    };
    let authorization = signing::sign(access_key_id, secret, date_time, &parts);
    let value = |v: &str| reqwest::header::HeaderValue::from_str(v).map_err(|e| e.to_string());
    let headers = req.headers_mut();
    headers.insert(reqwest::header::HOST, value(&host)?);
    headers.insert(DATE_HEADER, value(date_time)?);
    headers.insert(CONTENT_SHA256_HEADER, value(&payload_hash)?);
    let mut auth = value(&authorization)?;
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    Ok(())
}

/// Turn a 404 answer into a [`Error::NotFound`] naming `what`.
fn not_found_as(e: Error, what: String) -> Error {
    match e {
        Error::Api { status: 404, .. } => Error::NotFound { what },
        other => other,
    }
}

/// Fail unless `value` is a JSON object (for bodies read from files).
pub fn expect_object(value: Value, what: &str) -> Result<Value> {
    if value.is_object() {
        Ok(value)
    } else {
        Err(Error::usage(format!("{what} must be a JSON/TOML table")))
    }
}

/// Decode error helper for callers outside this module.
pub fn decode_error(url: &str, message: impl Into<String>) -> Error {
    DecodeAnswerSnafu {
        url,
        message: message.into(),
    }
    .build()
}
