//! The ZooKeeper source's log lines: a malformed child is named in a warning, and the others stay.
//!
//! Its own test binary, with the subscriber installed as the *global* default once, before any
//! event (a thread-local subscriber races the callsite interest cache when other tests register
//! the same callsites first; see `tests/breaker_tracing.rs`).
#![cfg(feature = "zookeeper")]

mod support {
    pub mod zookeeper;
}

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use meshwork::discover::Update;
use meshwork::discover::zookeeper::{Format, ZkDiscover};
use support::zookeeper::ZkServer;
use zookeeper_client as zk;

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_malformed_child_is_logged_by_name_and_skipped() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let server = ZkServer::start().await;
    let client = server.client().await;
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    client.mkdir("/svc/logs", &open).await.unwrap();
    client
        .create(
            "/svc/logs/member_0000000001",
            br#"{"serviceEndpoint":{"host":"127.0.0.1","port":9601},"status":"ALIVE"}"#,
            &open,
        )
        .await
        .unwrap();
    client
        .create(
            "/svc/logs/member_0000000002",
            br#"{"serviceEndpoint":{"host":"127.0.0.1","port":"http"},"status":"ALIVE"}"#,
            &open,
        )
        .await
        .unwrap();

    let mut source = ZkDiscover::new(
        server.ensemble(Duration::from_secs(10)),
        "/svc/logs",
        Format::default(),
    )
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(1), source.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Update::Reset(set) = first else {
        panic!("a complete set first: {first:?}")
    };
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].addr().port(), 9601);

    let logs = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("malformed child"))
        .unwrap_or_else(|| panic!("no warning about the malformed child in:\n{logs}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("member_0000000002"),
        "names the child: {line}"
    );
    assert!(
        line.contains("serviceEndpoint.port"),
        "names the field: {line}"
    );
    assert!(line.contains("/svc/logs"), "names the path: {line}");
    assert!(!logs.contains("member_0000000001"), "{logs}");
}
