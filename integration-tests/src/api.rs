//! A minimal `/v1` client for tests: raw envelopes plus a few typed shortcuts.

use std::net::SocketAddr;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

#[derive(Clone)]
pub struct Api {
    addr: SocketAddr,
    http: reqwest::Client,
}

/// URL-encode an object path the way the upload API expects filenames.
pub fn encode_path(path: &str) -> String {
    utf8_percent_encode(path, NON_ALPHANUMERIC).to_string()
}

/// `Full` + upper-case hex SHA-256, as the API reports `fileHash`.
pub fn file_hash(data: &[u8]) -> String {
    use sha2::Digest;
    common::hash::file_hash(sha2::Sha256::digest(data))
}

impl Api {
    pub fn new(addr: SocketAddr) -> Self {
        Api {
            addr,
            http: reqwest::Client::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn envelope(resp: reqwest::Response) -> (StatusCode, Value) {
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("response is not a JSON envelope ({e}): {status} {text:?}"));
        assert!(
            v.get("code").is_some() && v.get("message").is_some(),
            "not an envelope: {v}"
        );
        (status, v)
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        Self::envelope(
            self.http
                .post(self.url(path))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> (StatusCode, Value) {
        let req = self
            .http
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        Self::envelope(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        Self::envelope(
            self.http
                .get(self.url(path_and_query))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_form(&self, path: &str, form: Form) -> (StatusCode, Value) {
        Self::envelope(
            self.http
                .post(self.url(path))
                .multipart(form)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Expect an OK envelope and return its `data`.
    pub fn ok(res: (StatusCode, Value)) -> Value {
        let (status, v) = res;
        assert_eq!(v["code"], "OK", "expected OK, got {status}: {v}");
        assert_eq!(status, StatusCode::OK, "{v}");
        v["data"].clone()
    }

    pub async fn create_bucket(&self, name: &str) -> u64 {
        let d = Self::ok(
            self.post("/v1/bucket/create", json!({"userID": 1, "name": name}))
                .await,
        );
        d["bucket"]["bucketID"].as_u64().unwrap()
    }

    pub async fn create_package(&self, bucket: u64, name: &str) -> u64 {
        let d = Self::ok(
            self.post(
                "/v1/package/create",
                json!({"bucketID": bucket, "name": name}),
            )
            .await,
        );
        d["package"]["packageID"].as_u64().unwrap()
    }

    pub fn upload_form(package: u64, files: &[(&str, Vec<u8>)]) -> Form {
        let mut form = Form::new().part(
            "info",
            Part::text(json!({"packageID": package}).to_string())
                .mime_str("application/json")
                .unwrap(),
        );
        for (path, data) in files {
            form = form.part(
                "files",
                Part::bytes(data.clone()).file_name(encode_path(path)),
            );
        }
        form
    }

    /// Upload files and return the `uploadeds` array.
    pub async fn upload(&self, package: u64, files: &[(&str, Vec<u8>)]) -> Vec<Value> {
        let d = Self::ok(
            self.post_form("/v1/object/upload", Self::upload_form(package, files))
                .await,
        );
        d["uploadeds"].as_array().unwrap().clone()
    }

    /// Raw download; the body is bytes on success and an envelope on error.
    pub async fn download(&self, query: &str) -> (StatusCode, bytes::Bytes) {
        let resp = self
            .http
            .get(self.url(&format!("/v1/object/download?{query}")))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.bytes().await.unwrap())
    }

    /// Download a whole object, expecting success.
    pub async fn download_all(&self, object_id: u64) -> bytes::Bytes {
        let (status, body) = self.download(&format!("objectID={object_id}")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        body
    }

    pub async fn package_objects(&self, package: u64) -> Vec<Value> {
        let d = Self::ok(
            self.get(&format!("/v1/object/getPackageObjects?packageID={package}"))
                .await,
        );
        d["objects"].as_array().unwrap().clone()
    }
}
