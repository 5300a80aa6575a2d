//! The watched-file discovery source against real files (paused tokio time: file reads run on the
//! blocking pool, which holds the paused clock until they finish, so the runs are deterministic).
#![cfg(feature = "file")]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use meshwork::discover::{Endpoint, FileError, Update, WatchFile};
use support::TempDir;
use tokio::time::timeout;

fn ep(port: u16) -> Endpoint {
    Endpoint::new(([127, 0, 0, 1], port).into())
}

fn json(ports: &[u16]) -> String {
    let items: Vec<String> = ports
        .iter()
        .map(|p| format!(r#"{{"addr": "127.0.0.1:{p}"}}"#))
        .collect();
    format!("[{}]", items.join(", "))
}

/// Watches `path`, polling every 100 ms.
fn fast_watch(path: &std::path::Path) -> WatchFile {
    WatchFile::builder(path)
        .interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

/// The next item, which must come within a second (of tokio time).
async fn next_within_a_second(source: &mut WatchFile) -> Result<Update, meshwork::BoxError> {
    timeout(Duration::from_secs(1), source.next())
        .await
        .expect("an item within a second")
        .expect("the source never ends")
}

/// The next item, which must come within a second and be the complete set `want`.
async fn expect_reset(source: &mut WatchFile, want: Vec<Endpoint>) {
    assert_eq!(
        next_within_a_second(source).await.unwrap(),
        Update::Reset(want)
    );
}

async fn assert_quiet_for(source: &mut WatchFile, d: Duration) {
    if let Ok(item) = timeout(d, source.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn initial_set_then_in_place_change_within_a_second() {
    let dir = TempDir::new("file-change");
    let path = dir.path().join("endpoints.json");
    std::fs::write(&path, json(&[1, 2])).unwrap();
    let mut source = WatchFile::new(&path);
    expect_reset(&mut source, vec![ep(1), ep(2)]).await;
    // Rewriting the same content is not a change.
    std::fs::write(&path, json(&[1, 2])).unwrap();
    assert_quiet_for(&mut source, Duration::from_secs(2)).await;
    // An in-place write (truncate + write).
    std::fs::write(&path, json(&[2, 3])).unwrap();
    expect_reset(&mut source, vec![ep(2), ep(3)]).await;
}

#[tokio::test(start_paused = true)]
async fn atomic_rename_is_picked_up() {
    let dir = TempDir::new("file-rename");
    let path = dir.write_atomic("endpoints.toml", "[[endpoints]]\naddr = \"127.0.0.1:1\"\n");
    let mut source = fast_watch(&path);
    expect_reset(&mut source, vec![ep(1)]).await;
    dir.write_atomic(
        "endpoints.toml",
        "[[endpoints]]\naddr = \"127.0.0.1:7\"\nweight = 3\nlabels = { zone = \"b\" }\n",
    );
    let want = ep(7).with_weight(3).unwrap().with_label("zone", "b");
    expect_reset(&mut source, vec![want]).await;
}

#[tokio::test(start_paused = true)]
async fn malformed_file_keeps_the_last_good_set_and_says_why() {
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let _guard = metrics::set_default_local_recorder(&recorder);
    let dir = TempDir::new("file-malformed");
    let path = dir.write_atomic("endpoints.json", &json(&[1]));
    let mut source = WatchFile::new(&path);
    expect_reset(&mut source, vec![ep(1)]).await;
    dir.write_atomic(
        "endpoints.json",
        r#"[{"addr": "127.0.0.1:2", "wieght": 5}]"#,
    );
    let err = next_within_a_second(&mut source).await.unwrap_err();
    let err = err.downcast_ref::<FileError>().expect("a FileError");
    assert!(err.is_malformed());
    let msg = err.to_string();
    assert!(msg.contains("wieght") && msg.contains("line 1"), "{msg}");
    // Reported once, and no update: the last good set stands.
    assert_quiet_for(&mut source, Duration::from_secs(3)).await;
    #[cfg(feature = "metrics")]
    {
        let errors = recorder
            .snapshotter()
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == "meshwork_discovery_errors_total")
            .map(|(.., value)| value)
            .expect("the failure is counted");
        assert_eq!(errors, metrics_util::debugging::DebugValue::Counter(1));
    }
    // Fixed: the new set arrives.
    dir.write_atomic("endpoints.json", &json(&[2]));
    expect_reset(&mut source, vec![ep(2)]).await;
}

#[tokio::test(start_paused = true)]
async fn missing_file_is_an_error_not_an_empty_set() {
    let dir = TempDir::new("file-missing");
    let path = dir.path().join("endpoints.json");
    let mut source = WatchFile::new(&path);
    let err = next_within_a_second(&mut source).await.unwrap_err();
    let err = err.downcast_ref::<FileError>().expect("a FileError");
    assert!(err.is_missing(), "{err}");
    assert_eq!(err.path(), path);
    assert_quiet_for(&mut source, Duration::from_secs(2)).await;
    // It appears: the set arrives.
    dir.write_atomic("endpoints.json", &json(&[4]));
    expect_reset(&mut source, vec![ep(4)]).await;
    // It vanishes (deleted): an error after confirmation, never an empty set.
    std::fs::remove_file(&path).unwrap();
    let err = next_within_a_second(&mut source).await.unwrap_err();
    assert!(err.downcast_ref::<FileError>().unwrap().is_missing());
    // An explicitly empty list is a positive empty set.
    dir.write_atomic("endpoints.json", "[]");
    expect_reset(&mut source, vec![]).await;
}

#[tokio::test(start_paused = true)]
async fn a_briefly_vanished_file_raises_no_alarm() {
    let dir = TempDir::new("file-vanish");
    let path = dir.write_atomic("endpoints.json", &json(&[1]));
    let mut source = fast_watch(&path);
    expect_reset(&mut source, vec![ep(1)]).await;
    // Gone for one poll (an editor's unlink-then-write), back with the same content.
    std::fs::remove_file(&path).unwrap();
    assert_quiet_for(&mut source, Duration::from_millis(150)).await;
    dir.write_atomic("endpoints.json", &json(&[1]));
    assert_quiet_for(&mut source, Duration::from_secs(1)).await;
}
