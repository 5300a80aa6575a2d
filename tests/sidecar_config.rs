//! The sidecar's configuration checks, through the real process: every mistake fails at start
//! with a message naming the field, and `--check` validates without starting.

// The sidecar example needs these features (see its `required-features`).
#![cfg(all(feature = "http", feature = "metrics"))]

mod sidecar_support;

use std::process::Output;
use std::time::Duration;

use sidecar_support::{sidecar_bin, temp_file};

const GOOD: &str = r#"
admin = "127.0.0.1:0"
shutdown_drain_timeout = "5s"

[listener]
address = "127.0.0.1:0"
max_header_bytes = 16384
header_read_timeout = "2s"

[[routes]]
host = "users.local"
path_prefix = "/"
upstream = "users"

[upstreams.users]
http_version = "http1"
discovery = { kind = "static", endpoints = ["127.0.0.1:9"] }
timeouts = { per_try = "1s", total = "3s" }
balancer = { load = "least_in_flight" }
breaker = { consecutive_failures = 3 }
retry = { max_retries = 1, budget_percent = 20 }
"#;

async fn run(args: &[&str]) -> Output {
    let out = tokio::process::Command::new(sidecar_bin())
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("a bad configuration stops the process at once")
        .expect("run the sidecar")
}

fn with(find: &str, replace: &str) -> String {
    assert!(GOOD.contains(find), "{find}");
    GOOD.replacen(find, replace, 1)
}

#[tokio::test]
async fn check_accepts_a_valid_file() {
    let path = temp_file("good.toml", GOOD);
    let out = run(&["--config", path.to_str().unwrap(), "--check"]).await;
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "configuration ok\n");
}

#[tokio::test]
async fn every_mistake_fails_at_start_naming_the_field() {
    let cases = [
        // An unknown field (a typo).
        (
            with("max_header_bytes = 16384", "max_header_byte = 16384"),
            "max_header_byte",
        ),
        // A percentage out of range.
        (
            with("budget_percent = 20", "budget_percent = 120"),
            "upstreams.users.retry.budget_percent: must be between 0 and 100",
        ),
        // A route to an upstream that does not exist.
        (
            with("upstream = \"users\"", "upstream = \"orders\""),
            "routes[0].upstream",
        ),
        // A duration without a unit.
        (with("total = \"3s\"", "total = \"3\""), "total"),
        // A per-try timeout longer than the total.
        (
            with("per_try = \"1s\"", "per_try = \"10s\""),
            "upstreams.users.timeouts.per_try: must not exceed timeouts.total",
        ),
        // A header limit below hyper's minimum.
        (
            with("max_header_bytes = 16384", "max_header_bytes = 100"),
            "listener.max_header_bytes: must be at least 8192",
        ),
        // An unknown discovery kind.
        (with("kind = \"static\"", "kind = \"consul\""), "consul"),
        // An empty endpoint list.
        (
            with("endpoints = [\"127.0.0.1:9\"]", "endpoints = []"),
            "upstreams.users.discovery.endpoints",
        ),
        // A breaker that could never close.
        (
            with("consecutive_failures = 3", "consecutive_failures = 0"),
            "upstreams.users.breaker.consecutive_failures",
        ),
        // A duration so large that `Instant` arithmetic would overflow (issue 13): the field path.
        (
            with("total = \"3s\"", "total = \"9999999999999999h\""),
            "upstreams.users.timeouts.total: `9999999999999999h` is too large (at most 365 days)",
        ),
        (
            with(
                "max_header_bytes = 16384",
                "max_header_bytes = 16384\nidle_timeout = \"9999999999999999h\"",
            ),
            "listener.idle_timeout: `9999999999999999h` is too large",
        ),
        // A per-upstream limit of zero, an h2 stream cap of zero.
        (
            with(
                "consecutive_failures = 3",
                "consecutive_failures = 3 }\nlimits = { max_pending = 0",
            ),
            "upstreams.users.limits.max_pending: must be at least 1",
        ),
        (
            with(
                "max_header_bytes = 16384",
                "max_header_bytes = 16384\nh2_max_concurrent_streams = 0",
            ),
            "listener.h2_max_concurrent_streams: must be at least 1",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let path = temp_file("bad.toml", text);
        // Half the cases through `--check`, half through a real start: both must refuse.
        let args: &[&str] = if i % 2 == 0 {
            &["--config", path.to_str().unwrap(), "--check"]
        } else {
            &["--config", path.to_str().unwrap()]
        };
        let out = run(args).await;
        let _ = std::fs::remove_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} started: {text}");
        assert!(
            stderr.contains(field),
            "case {i}: `{field}` not in: {stderr}"
        );
        assert!(
            out.stdout.is_empty(),
            "case {i} printed on stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[tokio::test]
async fn usage_errors_fail_with_a_message() {
    let out = run(&[]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));

    let out = run(&["--upstream", "not-an-address"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--upstream"));

    let path = temp_file("good.toml", GOOD);
    let out = run(&[
        "--config",
        path.to_str().unwrap(),
        "--upstream",
        "127.0.0.1:1",
    ])
    .await;
    let _ = std::fs::remove_file(&path);
    assert!(!out.status.success(), "--config and --upstream together");

    let out = run(&["--config", "/nonexistent/meshwork.toml"]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/meshwork.toml"));
}
