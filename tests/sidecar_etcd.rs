//! The sidecar with an upstream discovered from a real etcd server (Debian package `etcd-server`,
//! installed by `scripts/install-deps.sh`; the server runs on 127.0.0.1 with free ports).
//!
//! Run with `cargo test --all-features --test sidecar_etcd` after building the sidecar example
//! (`cargo build --all-features --example sidecar`).
#![cfg(all(feature = "http", feature = "metrics", feature = "etcd"))]

mod sidecar_support;
mod support {
    pub mod etcd;
}

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use meshwork::discover::Endpoint;
use meshwork::discover::etcd::Registration;
use sidecar_support::*;
use support::etcd::EtcdServer;

const PREFIX: &str = "services/web/";

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

fn key(addr: SocketAddr) -> String {
    format!("{PREFIX}{addr}")
}

/// The sidecar starts while etcd is down (the upstream answers 503), follows the prefix once etcd
/// is up: an endpoint registered with etcd's Go endpoint-manager layout gets the traffic; removed
/// and replaced by one registered with meshwork's `Registration`, the traffic moves to the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_follows_an_etcd_prefix() {
    let one = Backend::start("one").await;
    let two = Backend::start("two").await;
    let mut etcd = EtcdServer::start().await;
    etcd.stop();

    let sidecar = Sidecar::with_config(&format!(
        r#"
        [[routes]]
        upstream = "web"
        [upstreams.web]
        discovery = {{ kind = "etcd", endpoints = ["{}"], prefix = "{PREFIX}", request_timeout = "1s" }}
        balancer = {{ max_wait = "100ms" }}
        "#,
        etcd.url()
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

    etcd.restart().await;
    let mut client = etcd.client().await;
    client
        .put(
            key(one.addr),
            format!(r#"{{"Op":0,"Addr":"{}","Metadata":null}}"#, one.addr),
            None,
        )
        .await
        .unwrap();
    // The source retries with a backoff of at most 5 s after the failed reads.
    until_answered_by(&sidecar, "hello from one", Duration::from_secs(15)).await;
    assert_eq!(get(&sidecar.admin_url("/ready")).await.0, StatusCode::OK);

    // Replace `one` by `two`, registered under a lease by meshwork itself.
    client.delete(key(one.addr), None).await.unwrap();
    let registration = Registration::register(client.clone(), PREFIX, Endpoint::new(two.addr))
        .await
        .unwrap();
    until_answered_by(&sidecar, "hello from two", Duration::from_secs(5)).await;
    // `one` is gone from the set: every request now goes to `two`.
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
