//! mTLS between gateway, coordinator and agents (`common::tls`, `client::tls`): a cluster on
//! mTLS moves bytes; peers without a certificate of the cluster CA, and servers whose
//! certificate names another host, are refused; plain TCP off loopback needs an explicit
//! opt-in.

use std::sync::Arc;
use std::time::Duration;

use common::tls::generate::Ca;
use common::tls::{TlsConfig, TlsMaterial};
use integration_tests::api::file_hash;
use integration_tests::{Api, TestCluster, issue_tls};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::data;

/// gRPC health of the server behind `channel`: `Ok(())` when it answers SERVING, else the
/// error (with its source chain, where TLS failures are named).
async fn health(channel: tonic::transport::Channel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    match client.check(HealthCheckRequest::default()).await {
        Ok(r) => {
            assert_eq!(r.into_inner().status, 1, "SERVING");
            Ok(())
        }
        Err(status) => Err(format!(
            "{:?}: {}",
            status.code(),
            common::error::ErrorChain(&status)
        )),
    }
}

fn options(tls: Option<Arc<TlsMaterial>>) -> client::ChannelOptions {
    client::ChannelOptions {
        connect_timeout: Duration::from_secs(3),
        request_timeout: Some(Duration::from_secs(5)),
        tls,
    }
}

async fn health_at(address: &str, tls: Option<Arc<TlsMaterial>>) -> Result<(), String> {
    health(client::channel(address, &options(tls)).unwrap()).await
}

#[tokio::test]
async fn cluster_on_mtls_uploads_downloads_and_copies_between_agents() {
    let c = TestCluster::builder()
        .mtls()
        .agents(2)
        .build()
        .await
        .unwrap();
    let api = c.api();
    let bucket = api.create_bucket("tls").await;
    let package = api.create_package(bucket, "p").await;
    let files: Vec<(String, Vec<u8>)> = (0..4u64)
        .map(|i| {
            (
                format!("f{i}.bin"),
                data(900 + i, 1024 * 1024 * (i as usize) + 17),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(p, d)| (p.as_str(), d.clone())).collect();
    let uploaded = api.upload(package, &refs).await;
    // Placement alternates: both agents hold shards, so the gateway dialled both.
    assert!(!c.shard_files(0).is_empty() && !c.shard_files(1).is_empty());
    for (o, (path, d)) in uploaded.iter().zip(&files) {
        let got = api.download_all(o["objectID"].as_u64().unwrap()).await;
        assert_eq!(file_hash(&got), file_hash(d), "{path}");
    }

    // Export the package into a Local space of agent 0: shards of agent 1 travel agent to
    // agent, on mTLS as well.
    let exchange = c.scratch("exchange");
    let space = Api::ok(
        api.post(
            "/v1/userSpace/create",
            json!({
                "name": "exchange",
                "storage": {"type": "Local", "location": "agent-0", "path": exchange.to_str().unwrap()},
                "credential": {"type": "Local"},
                "shardStore": null,
                "workingDir": ""
            }),
        )
        .await,
    )["userSpace"]["userSpaceID"]
        .as_u64()
        .unwrap();
    let ok = common::testing::wait_until(Duration::from_secs(20), || async {
        let (_, v) = api
            .post(
                "/v1/userSpace/downloadPackage",
                json!({"userSpaceID": space, "packageID": package, "rootPath": "out"}),
            )
            .await;
        v["code"] == "OK" && v["data"]["exported"] == files.len()
    })
    .await;
    assert!(ok, "export did not succeed");
    for (path, d) in &files {
        assert_eq!(&std::fs::read(exchange.join("out").join(path)).unwrap(), d);
    }
    c.shutdown().await;
}

#[tokio::test]
async fn peers_without_a_certificate_of_the_cluster_ca_are_refused() {
    let c = TestCluster::builder()
        .mtls()
        .agents(1)
        .build()
        .await
        .unwrap();
    let good = c.tls_config("probe").load().unwrap();
    let other_ca_dir = c.scratch("other").join("ca");
    Ca::new("another CA", 1)
        .unwrap()
        .write(&other_ca_dir)
        .unwrap();
    let foreign = issue_tls(&other_ca_dir, "intruder").load().unwrap();
    // Trusts the cluster CA (so the server is accepted) but presents no certificate.
    let ca_only = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&good.as_ref().unwrap().ca_pem));

    for address in [c.coordinator_addr(), c.agent_addr(0)] {
        let address = address.to_string();
        // A certificate of the cluster CA is served (the control: the probes work).
        health_at(&address, good.clone()).await.unwrap();

        // Plain TCP: the server speaks TLS only.
        let err = health_at(&address, None).await.unwrap_err();
        assert!(
            err.starts_with("Unavailable") || err.starts_with("Unknown"),
            "{err}"
        );

        // TLS without a client certificate: the server ends the handshake.
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .unwrap()
            .tls_config(ca_only.clone())
            .unwrap()
            .connect_lazy();
        let err = health(channel).await.unwrap_err();
        assert!(err.contains("CertificateRequired"), "{err}");

        // A client certificate from another CA, presented by a client that trusts the
        // server: the server refuses it.
        let mixed = TlsMaterial {
            ca_pem: good.as_ref().unwrap().ca_pem.clone(),
            ..foreign.as_deref().unwrap().clone()
        };
        let err = health_at(&address, Some(Arc::new(mixed)))
            .await
            .unwrap_err();
        assert!(err.contains("UnknownCA"), "{err}");

        // Wholly from another CA: the client does not trust the server either.
        let err = health_at(&address, foreign.clone()).await.unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
    // The cluster kept working through the refused handshakes.
    let bucket = c.api().create_bucket("still-up").await;
    assert!(bucket > 0);
    c.shutdown().await;
}

#[tokio::test]
async fn a_server_certificate_for_another_name_is_refused() {
    common::testing::init_logging();
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("name test CA", 1).unwrap();
    let (ca_pem, _) = ca.write(&dir.path().join("ca")).unwrap();
    // The server's certificate names 127.0.0.1 only.
    let (cert, key) = ca
        .issue("coordinator", &[], &["127.0.0.1".parse().unwrap()], 1)
        .unwrap()
        .write(dir.path(), "coordinator")
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = coordinator::CoordinatorConfig {
        listen: listener.local_addr().unwrap(),
        meta: coordinator::MetaConfig::Memory,
        cluster_secret: Some(common::secret::Secret::random()),
        tls: TlsConfig::files(&ca_pem, cert, key),
        ..Default::default()
    };
    let meta = coordinator::server::open_meta(&config).await.unwrap();
    let coord = coordinator::Coordinator::build(&config, meta).unwrap();
    let token = CancellationToken::new();
    let served = tokio::spawn(coord.serve(listener, token.clone()));

    let (client_cert, client_key) = ca
        .issue("gateway", &["localhost".into()], &[], 1)
        .unwrap()
        .write(dir.path(), "gateway")
        .unwrap();
    let client_tls = TlsConfig::files(&ca_pem, client_cert, client_key)
        .load()
        .unwrap();
    // Dialled by the name on its certificate: accepted.
    health_at(&format!("127.0.0.1:{port}"), client_tls.clone())
        .await
        .unwrap();
    // Dialled as `localhost`, a name the certificate does not carry: refused by the client.
    let err = health_at(&format!("localhost:{port}"), client_tls)
        .await
        .unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
    token.cancel();
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn plaintext_off_loopback_needs_insecure_plaintext() {
    let secret = Some(common::secret::Secret::random());
    let plain = TlsConfig::default();
    let opt_in = TlsConfig {
        insecure_plaintext: true,
        ..TlsConfig::default()
    };
    let coord = |tls: TlsConfig| coordinator::CoordinatorConfig {
        listen: "0.0.0.0:7900".parse().unwrap(),
        meta: coordinator::MetaConfig::Memory,
        cluster_secret: secret.clone(),
        tls,
        ..Default::default()
    };
    let meta = coordinator::server::open_meta(&coord(plain.clone()))
        .await
        .unwrap();
    let err = coordinator::Coordinator::build(&coord(plain.clone()), meta.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("0.0.0.0:7900") && err.contains("insecure_plaintext"),
        "{err}"
    );
    coordinator::Coordinator::build(&coord(opt_in.clone()), meta).unwrap();

    let agent = |tls: TlsConfig| agent::AgentConfig {
        coordinator: "10.1.2.3:7900".into(),
        cluster_secret: secret.clone(),
        tls,
        ..Default::default()
    };
    let err = agent::Agent::build(agent(plain.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("10.1.2.3:7900") && err.contains("insecure_plaintext"),
        "{err}"
    );
    agent::Agent::build(agent(opt_in.clone())).unwrap();

    let gateway = |tls: TlsConfig| gateway::GatewayConfig {
        coordinator: "127.0.0.1:7900,coordinator.internal:7900".into(),
        tls,
        ..Default::default()
    };
    let err = gateway::Gateway::build(gateway(plain))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("coordinator.internal:7900"), "{err}");
    gateway::Gateway::build(gateway(opt_in)).unwrap();
}
