//! The sidecar with an upstream discovered from a real ZooKeeper server (Debian package
//! `zookeeper`, installed by `scripts/install-deps.sh`; the server runs on 127.0.0.1 with a free
//! port).
//!
//! Run with `cargo test --all-features --test sidecar_zookeeper` after building the sidecar
//! example (`cargo build --all-features --example sidecar`).
#![cfg(all(feature = "http", feature = "metrics", feature = "zookeeper"))]

mod sidecar_support;
mod support {
    pub mod zookeeper;
}

use std::time::Duration;

use http::StatusCode;
use meshwork::discover::zookeeper::Registration;
use sidecar_support::*;
use support::zookeeper::ZkServer;
use zookeeper_client as zk;

const PATH: &str = "/services/web";

/// Sends GETs until one answers `want` (200 and that body), within `within`.
async fn until_answered_by(sidecar: &Sidecar, want: &str, within: Duration) {
    let found = tokio::time::timeout(within, async {
        loop {
            let (status, body) = get(&sidecar.url("/")).await;
            if status == StatusCode::OK && body == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(found.is_ok(), "no answer `{want}` within {within:?}");
}

/// The sidecar starts while ZooKeeper is down (the upstream answers 503) and follows a server-set
/// path once it is up, reading the `http` additional endpoint: a member written as Finagle writes
/// it gets the traffic; removed and replaced by one registered with meshwork's `Registration`, the
/// traffic moves to the new one; deregistered, the upstream is empty again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_follows_a_server_set() {
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    let mut server = ZkServer::start().await;
    server.stop();

    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "web"
        [upstreams.web]
        discovery = {{ kind = "zookeeper", servers = ["{}"], path = "{PATH}", format = "serverset", endpoint_name = "http", session_timeout = "2s", request_timeout = "1s" }}
        balancer = {{ max_wait = "100ms" }}
        "#,
        server.addr()
    ))
    .await;
    // Up without its registry: nothing to send to yet.
    let (status, body) = get(&sidecar.url("/")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "no endpoint available for this upstream\n");
    assert_eq!(
        get(&sidecar.admin_url("/ready")).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );

    server.restart().await;
    let client = server.client().await;
    client
        .mkdir(
            PATH,
            &zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all()),
        )
        .await
        .unwrap();
    // The service endpoint is a port nobody listens on: only the `http` endpoint is right.
    let data = format!(
        r#"{{"serviceEndpoint":{{"host":"127.0.0.1","port":1}},"additionalEndpoints":{{"http":{{"host":"{}","port":{}}}}},"status":"ALIVE","shard":0}}"#,
        one.addr.ip(),
        one.addr.port()
    );
    let (_, seq) = client
        .create(
            &format!("{PATH}/member_"),
            data.as_bytes(),
            &zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all()),
        )
        .await
        .unwrap();
    // The source retries with a backoff of at most 5 s after the failed connections.
    until_answered_by(&sidecar, "hello from one", Duration::from_secs(15)).await;
    assert_eq!(get(&sidecar.admin_url("/ready")).await.0, StatusCode::OK);

    // Replace `one` by `two`, registered by meshwork itself.
    client
        .delete(&format!("{PATH}/member_{seq}"), None)
        .await
        .unwrap();
    let ensemble = server.ensemble(Duration::from_secs(2));
    let registration = Registration::builder(PATH, "127.0.0.1:1".parse().unwrap())
        .unwrap()
        .additional_endpoint("http", two.addr)
        .register(&ensemble)
        .await
        .unwrap();
    until_answered_by(&sidecar, "hello from two", Duration::from_secs(5)).await;
    let one_hits = one.hits();
    for _ in 0..20 {
        let (status, body) = get(&sidecar.url("/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello from two");
    }
    assert_eq!(one.hits(), one_hits);
    let (_, json) = get(&sidecar.admin_url("/endpoints")).await;
    let json = String::from_utf8(json.to_vec()).unwrap();
    assert!(
        json.contains(&format!("\"address\":\"{}\"", two.addr)),
        "{json}"
    );
    assert!(!json.contains(&one.addr.to_string()), "{json}");

    registration.deregister().await.unwrap();
    let gone = tokio::time::timeout(Duration::from_secs(5), async {
        while get(&sidecar.url("/")).await.0 != StatusCode::SERVICE_UNAVAILABLE {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the deregistered endpoint still gets traffic");
}
