//! API authentication end to end: access keys created through the real coordinator (memory,
//! redb or etcd metadata), a gateway with `[auth] enabled = true` in front of it, signed
//! requests accepted, bad ones refused with a 401 envelope and no effect, a deleted key
//! refused once the gateway's key cache expires.

use std::time::Duration;

use common::secret::Secret;
use common::signing::{self, CONTENT_SHA256_HEADER, DATE_HEADER, UNSIGNED_PAYLOAD};
use integration_tests::{Api, Meta, TestCluster};
use proto::coordinator as pb;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::data;

/// Sign `req` as a client does (docs/api.md): in-memory bodies hashed, streams unsigned.
fn sign(req: &mut reqwest::Request, id: &str, secret: &str) {
    let date = signing::now_date_time();
    let payload_hash = match req.body() {
        None => signing::EMPTY_SHA256.to_owned(),
        Some(b) => b
            .as_bytes()
            .map_or_else(|| UNSIGNED_PAYLOAD.to_owned(), signing::sha256_hex),
    };
    let url = req.url().clone();
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let parts = signing::RequestParts {
        method: req.method().as_str(),
        path: url.path(),
        query: url.query().unwrap_or(""),
        headers: vec![
            ("host".into(), host.clone()),
            (DATE_HEADER.into(), date.clone()),
            (CONTENT_SHA256_HEADER.into(), payload_hash.clone()),
        ],
        payload_hash: &payload_hash,
    };
    let auth = signing::sign(id, &Secret::new(secret), &date, &parts);
    let h = req.headers_mut();
    h.insert("host", host.parse().unwrap());
    h.insert(DATE_HEADER, date.parse().unwrap());
    h.insert(CONTENT_SHA256_HEADER, payload_hash.parse().unwrap());
    h.insert("authorization", auth.parse().unwrap());
}

struct Signed {
    base: String,
    http: reqwest::Client,
}

impl Signed {
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        key: Option<(&str, &str)>,
    ) -> (StatusCode, Value) {
        let mut req = req.build().unwrap();
        if let Some((id, secret)) = key {
            sign(&mut req, id, secret);
        }
        let resp = self.http.execute(req).await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Download `object` signed with `(id, secret)`: the status and the body.
    async fn download(&self, object: u64, (id, secret): (&str, &str)) -> (StatusCode, Vec<u8>) {
        let url = self.url(&format!("/v1/object/download?objectID={object}"));
        let mut req = self.http.get(url).build().unwrap();
        sign(&mut req, id, secret);
        let resp = self.http.execute(req).await.unwrap();
        (resp.status(), resp.bytes().await.unwrap().to_vec())
    }
}

/// A new access key from the coordinator: its id, secret and read-only flag as listed.
async fn create_key(
    coord: &mut client::CoordinatorClient,
    name: &str,
    read_only: bool,
) -> (String, String, bool) {
    let created = coord
        .create_access_key(pb::CreateAccessKeyRequest {
            name: name.into(),
            read_only,
        })
        .await
        .unwrap()
        .into_inner();
    let key = created.key.unwrap();
    (key.access_key_id, created.secret_key, key.read_only)
}

async fn signed_requests_against_the_real_coordinator(meta: Meta) {
    let Some(cluster) = TestCluster::builder().meta(meta).agents(1).build().await else {
        return;
    };
    let mut coord = client::coordinator(
        &cluster.coordinator_addr().to_string(),
        &client::ChannelOptions::default(),
    )
    .unwrap();
    let (id, secret, read_only) = create_key(&mut coord, "it", false).await;
    assert!(!read_only);
    // At rest, the secret is encrypted.
    let row = cluster
        .meta()
        .get(format!("v1/access-keys/{id}").as_bytes())
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&row.value).contains(&secret));
    let listed = coord
        .list_access_keys(pb::ListAccessKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].access_key_id.as_str(), listed[0].name.as_str()),
        (id.as_str(), "it")
    );

    // A gateway with authentication on, in front of the same coordinator.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let gateway = gateway::Gateway::build(gateway::GatewayConfig {
        listen: addr,
        coordinator: cluster.coordinator_addr().to_string(),
        auth: gateway::AuthConfig {
            enabled: true,
            key_cache_ttl: Duration::from_millis(300),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(gateway.serve(listener, stop.clone()));
    let gw = Signed {
        base: format!("http://{addr}"),
        http: reqwest::Client::new(),
    };
    let me = Some((id.as_str(), secret.as_str()));

    // Unsigned and wrongly signed: 401 envelopes, nothing created.
    let create = || {
        gw.http
            .post(gw.url("/v1/bucket/create"))
            .json(&json!({"name": "authb"}))
    };
    let (status, body) = gw.send(create(), None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "Unauthorized");
    let (status, body) = gw.send(create(), Some((id.as_str(), "wrong"))).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (401, Some("Unauthorized")),
        "{body}"
    );
    let (status, body) = gw.send(create(), Some(("JCSKNOSUCHKEY", "x"))).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown access key"),
        "{body}"
    );
    let open = cluster.api();
    let buckets = Api::ok(open.get("/v1/bucket/listAll").await);
    assert_eq!(
        buckets["buckets"],
        json!([]),
        "a refused request created nothing"
    );

    // Signed: works.
    let (status, body) = gw.send(create(), me).await;
    assert_eq!(status, 200, "{body}");
    let bucket = body["data"]["bucket"]["bucketID"].as_u64().unwrap();
    let (status, body) = gw
        .send(
            gw.http
                .post(gw.url("/v1/package/create"))
                .json(&json!({"bucketID": bucket, "name": "p"})),
            me,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let package = body["data"]["package"]["packageID"].as_u64().unwrap();

    // A badly signed upload leaves no object; a signed one (streamed) is stored.
    let content = data(11, 3 << 20);
    let upload = || {
        gw.http
            .post(gw.url("/v1/object/upload"))
            .multipart(Api::upload_form(package, &[("dir/x.bin", content.clone())]))
    };
    let (status, body) = gw.send(upload(), Some((id.as_str(), "wrong"))).await;
    assert_eq!(status, 401, "{body}");
    assert!(open.package_objects(package).await.is_empty());
    let (status, body) = gw.send(upload(), me).await;
    assert_eq!(status, 200, "{body}");
    let object = body["data"]["uploadeds"][0]["objectID"].as_u64().unwrap();
    let (status, got) = gw.download(object, (&id, &secret)).await;
    assert_eq!(status, 200);
    assert!(got == content);

    // Probes stay open.
    let resp = gw.http.get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // A read-only key lists and downloads, and is refused (403) for any change.
    let (ro_id, ro_secret, read_only) = create_key(&mut coord, "reader", true).await;
    assert!(read_only);
    let reader = Some((ro_id.as_str(), ro_secret.as_str()));
    let (status, body) = gw
        .send(gw.http.get(gw.url("/v1/bucket/listAll")), reader)
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, got) = gw.download(object, (&ro_id, &ro_secret)).await;
    assert_eq!(status, 200);
    assert!(got == content);
    let (status, body) = gw.send(upload(), reader).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("read-only"),
        "{body}"
    );
    let (status, body) = gw
        .send(
            gw.http
                .post(gw.url("/v1/object/delete"))
                .json(&json!({"objectIDs": [object]})),
            reader,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        open.package_objects(package).await.len(),
        1,
        "nothing changed"
    );
    let listed = coord
        .list_access_keys(pb::ListAccessKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let flags: Vec<(String, bool)> = listed
        .into_iter()
        .map(|k| (k.access_key_id, k.read_only))
        .collect();
    assert!(
        flags.contains(&(ro_id.clone(), true)) && flags.contains(&(id.clone(), false)),
        "{flags:?}"
    );

    // Delete the key: refused once the gateway's cache (300 ms) has expired.
    coord
        .delete_access_key(pb::DeleteAccessKeyRequest {
            access_key_id: id.clone(),
        })
        .await
        .unwrap();
    let list = || gw.http.get(gw.url("/v1/bucket/listAll"));
    let refused = common::testing::wait_until(Duration::from_secs(10), || async {
        gw.send(list(), me).await.0 == 401
    })
    .await;
    assert!(refused, "a deleted key was still accepted after 10 s");
    let gone = coord
        .lookup_access_key(pb::LookupAccessKeyRequest {
            access_key_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(common::error::code_of(&gone), common::ErrorCode::NotFound);

    stop.cancel();
    served.await.unwrap().unwrap();
    cluster.shutdown().await;
}

#[tokio::test]
async fn memory_signed_requests_against_the_real_coordinator() {
    signed_requests_against_the_real_coordinator(Meta::Memory).await;
}

#[tokio::test]
async fn etcd_signed_requests_against_the_real_coordinator() {
    signed_requests_against_the_real_coordinator(Meta::Etcd).await;
}
