//! The defaults table in the client docs (`src/client/defaults.md`) matches the code.
#![cfg(feature = "http")]

use std::collections::BTreeMap;
use std::time::Duration;

use meshwork::backoff::Backoff;
use meshwork::balance::load::Load;
use meshwork::client::{ClientBuilder, HttpClientBuilder};
use meshwork::http::HttpVersion;

const TABLE: &str = include_str!("../src/client/defaults.md");

/// `15 s`, `250 ms`, `64 KiB`...
fn dur(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

fn documented() -> BTreeMap<String, String> {
    TABLE
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| setting"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].to_owned(), cells[2].to_owned())
        })
        .collect()
}

fn from_code() -> BTreeMap<String, String> {
    let http = HttpClientBuilder::new();
    let stack = ClientBuilder::new();
    let retry = stack.get_retry().expect("retries are on by default");
    let budget = retry
        .get_budget()
        .downcast_ref::<meshwork::retry::RetryBudget>()
        .expect("the default budget is a RetryBudget");
    let breaker = stack.get_breaker().expect("breakers are on by default");
    let Load::PeakEwma(ewma) = stack.get_balance().get_load() else {
        panic!("peak EWMA is the default load")
    };
    let backoff = retry.get_backoff();
    assert_eq!(
        *backoff,
        Backoff::full_jitter(backoff.base(), backoff.max()).unwrap(),
        "the retry backoff is full jitter"
    );
    let open = breaker.backoff();
    assert_eq!(
        *open,
        Backoff::equal_jitter(open.base(), open.max()).unwrap(),
        "the breaker backoff is equal jitter"
    );
    let (rate, window, min) = breaker.success_rate().expect("success rate is on");
    let total = stack.get_total_timeout().unwrap();
    let per_try = stack.get_per_try_timeout().unwrap();
    assert_eq!(
        per_try,
        total / 3,
        "the per-try default is a third of the total"
    );
    let version = match http.get_connect().get_version() {
        HttpVersion::Http1 => "HTTP/1.1",
        HttpVersion::Http2 => "HTTP/2",
    };
    [
        ("total timeout", dur(total)),
        (
            "per-try timeout",
            format!("{} (a third of the total timeout)", dur(per_try)),
        ),
        (
            "admission control",
            match stack.get_admission() {
                None => "off".to_owned(),
                Some(_) => "on".to_owned(),
            },
        ),
        ("max retries", retry.get_max_retries().to_string()),
        ("max requeues", retry.get_max_requeues().to_string()),
        (
            "retry budget ratio",
            format!("{} %", budget.retry_ratio() * 100.0),
        ),
        (
            "retry budget minimum",
            format!("{} per second", budget.min_retries_per_sec()),
        ),
        ("retry budget window", dur(budget.ttl())),
        (
            "retry backoff",
            format!(
                "full jitter, {} base, {} cap",
                dur(backoff.base()),
                dur(backoff.max())
            ),
        ),
        ("Retry-After cap", dur(retry.get_retry_after_cap())),
        (
            "body replay limit (HTTP)",
            format!("{} KiB", http.get_replay_limit() / 1024),
        ),
        (
            "breaker: consecutive failures",
            breaker.consecutive_failures().unwrap().to_string(),
        ),
        (
            "breaker: success rate",
            format!(
                "trip below {} % over {}, at least {min} requests",
                rate * 100.0,
                dur(window)
            ),
        ),
        (
            "breaker: open backoff",
            format!(
                "equal jitter, {} base, {} cap",
                dur(open.base()),
                dur(open.max())
            ),
        ),
        (
            "breaker: half-open probes",
            breaker.half_open_probes().to_string(),
        ),
        ("load", "peak EWMA".to_owned()),
        ("peak EWMA decay", dur(ewma.decay())),
        ("peak EWMA initial latency", dur(ewma.initial_latency())),
        ("failure penalty", dur(ewma.failure_penalty())),
        (
            "wait for an endpoint",
            dur(stack.get_balance().get_max_wait()),
        ),
        (
            "connect timeout (HTTP)",
            dur(http.get_connect().get_connect_timeout()),
        ),
        ("HTTP version", version.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[test]
fn the_documented_defaults_are_the_code_defaults() {
    let (docs, code) = (documented(), from_code());
    for (setting, value) in &code {
        assert_eq!(
            docs.get(setting),
            Some(value),
            "setting `{setting}`: the docs say {:?}, the code says {value:?}",
            docs.get(setting)
        );
    }
    let undocumented: Vec<_> = docs.keys().filter(|k| !code.contains_key(*k)).collect();
    assert!(
        undocumented.is_empty(),
        "rows with no check: {undocumented:?}"
    );
}

#[test]
fn invalid_combinations_are_rejected_naming_the_field() {
    use meshwork::breaker::{BreakerConfig, Mode};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let empty = meshwork::discover::Static::new(Vec::new());
    let err = HttpClientBuilder::with_stack(
        ClientBuilder::new()
            .total_timeout(Duration::from_secs(1))
            .per_try_timeout(Duration::from_secs(2)),
    )
    .build(empty)
    .unwrap_err();
    assert_eq!(err.field(), "per_try_timeout");

    let fail_fast = BreakerConfig::builder()
        .mode(Mode::FailFast)
        .build()
        .unwrap();
    let empty = meshwork::discover::Static::new(Vec::new());
    let err = HttpClientBuilder::with_stack(ClientBuilder::new().breaker(fail_fast))
        .build(empty)
        .unwrap_err();
    assert_eq!(err.field(), "breaker.mode");

    assert_eq!(
        ClientBuilder::new()
            .total_timeout(Duration::ZERO)
            .validate()
            .unwrap_err()
            .field(),
        "total_timeout"
    );
    assert_eq!(
        ClientBuilder::new()
            .per_try_timeout(Duration::ZERO)
            .validate()
            .unwrap_err()
            .field(),
        "per_try_timeout"
    );
}
