//! The DNS discovery source against a real dnsmasq on 127.0.0.1 (started by each test; real time,
//! because the resolver does real network IO; TTLs are 1 s so the tests stay short).
#![cfg(feature = "dns")]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use meshwork::discover::{Dns, DnsError, Endpoint, Update};
use meshwork::rng::SeedSource;
use support::dnsmasq::Dnsmasq;
use tokio::time::timeout;

fn ep(s: &str) -> Endpoint {
    Endpoint::new(s.parse::<SocketAddr>().unwrap())
}

async fn next(source: &mut Dns, within: Duration) -> Result<Update, meshwork::BoxError> {
    timeout(within, source.next())
        .await
        .expect("an item in time")
        .expect("the source never ends")
}

/// The next update, skipping error items (retries that were already under way).
async fn next_update(source: &mut Dns, within: Duration) -> Update {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let item = tokio::time::timeout_at(deadline, source.next())
            .await
            .expect("an update in time")
            .expect("the source never ends");
        if let Ok(update) = item {
            return update;
        }
    }
}

fn host_source(dns: &Dnsmasq, name: &str) -> Dns {
    Dns::host(name, 8080)
        .name_server(dns.addr())
        .min_refresh(Duration::from_millis(200))
        .max_refresh(Duration::from_secs(2))
        .timeout(Duration::from_millis(300))
        .seed(SeedSource::from_seed(1))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_and_aaaa_and_address_changes_arrive() {
    let dns = Dnsmasq::start(&[]);
    dns.set_hosts(&[("127.0.0.11", "users.test"), ("::1", "users.test")]);
    let mut source = host_source(&dns, "users.test");
    assert_eq!(
        next(&mut source, Duration::from_secs(5)).await.unwrap(),
        Update::Reset(vec![ep("127.0.0.11:8080"), ep("[::1]:8080")]),
        "dnsmasq log: {}",
        dns.log().display()
    );
    // Change the records: the new set arrives once the 1 s TTL has expired.
    dns.set_hosts(&[("127.0.0.12", "users.test"), ("127.0.0.13", "users.test")]);
    assert_eq!(
        next(&mut source, Duration::from_secs(5)).await.unwrap(),
        Update::Reset(vec![ep("127.0.0.12:8080"), ep("127.0.0.13:8080")])
    );
}

#[tokio::test]
async fn a_failing_resolver_keeps_the_last_good_set() {
    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let _guard = metrics::set_default_local_recorder(&recorder);

    let mut dns = Dnsmasq::start(&[]);
    dns.set_hosts(&[("127.0.0.21", "orders.test")]);
    let mut source = host_source(&dns, "orders.test");
    assert_eq!(
        next(&mut source, Duration::from_secs(5)).await.unwrap(),
        Update::Reset(vec![ep("127.0.0.21:8080")])
    );
    dns.stop();
    // Only errors from now on: no Reset (and so no removal), whatever the number of retries.
    let mut errors = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while let Ok(item) = tokio::time::timeout_at(deadline, source.next()).await {
        let err = item
            .expect("never ends")
            .expect_err("only errors while the server is down");
        let err = err.downcast_ref::<DnsError>().expect("a DnsError");
        assert!(
            !err.is_negative(),
            "a failure, not a negative answer: {err}"
        );
        assert!(err.name().starts_with("orders.test"));
        errors += 1;
    }
    assert!(errors >= 2, "retries continue while down: {errors} errors");
    #[cfg(feature = "metrics")]
    {
        let snapshot = recorder.snapshotter().snapshot().into_vec();
        let counted = snapshot
            .iter()
            .find(|(key, ..)| key.key().name() == "meshwork_discovery_errors_total")
            .map(|(key, _, _, value)| {
                let labels: Vec<_> = key.key().labels().map(|l| (l.key(), l.value())).collect();
                assert_eq!(labels, [("source", "dns")]);
                match value {
                    metrics_util::debugging::DebugValue::Counter(n) => *n,
                    other => panic!("not a counter: {other:?}"),
                }
            })
            .expect("errors are counted");
        assert_eq!(counted, errors as u64);
    }

    // Back up with new records: the new set arrives (the retry loop recovers by itself).
    dns.set_hosts(&[("127.0.0.22", "orders.test")]);
    dns.restart();
    assert_eq!(
        next_update(&mut source, Duration::from_secs(6)).await,
        Update::Reset(vec![ep("127.0.0.22:8080")])
    );
}

#[tokio::test]
async fn an_unreachable_name_server_is_skipped() {
    // The first name server never answers: the set still arrives, from the second one.
    let dns = Dnsmasq::start(&[]);
    dns.set_hosts(&[("127.0.0.31", "late.test")]);
    let mut source = Dns::host("late.test", 80)
        .name_server("127.0.0.1:9".parse().unwrap()) // discard port: nothing answers
        .name_server(dns.addr())
        .min_refresh(Duration::from_millis(200))
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert_eq!(
        next_update(&mut source, Duration::from_secs(8)).await,
        Update::Reset(vec![ep("127.0.0.31:80")])
    );
}

#[tokio::test]
async fn nxdomain_keeps_the_set_unless_told_it_means_empty() {
    let dns = Dnsmasq::start(&[]);
    dns.set_hosts(&[("127.0.0.41", "gone.test")]);
    let mut keep = host_source(&dns, "gone.test");
    let mut empty = Dns::host("gone.test", 8080)
        .name_server(dns.addr())
        .min_refresh(Duration::from_millis(200))
        .empty_on_negative(true)
        .build()
        .unwrap();
    let first = Update::Reset(vec![ep("127.0.0.41:8080")]);
    assert_eq!(
        next(&mut keep, Duration::from_secs(5)).await.unwrap(),
        first
    );
    assert_eq!(
        next(&mut empty, Duration::from_secs(5)).await.unwrap(),
        first
    );
    dns.set_hosts(&[]);
    let err = next(&mut keep, Duration::from_secs(5)).await.unwrap_err();
    assert!(
        err.downcast_ref::<DnsError>().unwrap().is_negative(),
        "{err}"
    );
    assert_eq!(
        next(&mut empty, Duration::from_secs(5)).await.unwrap(),
        Update::Reset(vec![])
    );
}

#[tokio::test]
async fn srv_records_give_ports_weights_and_the_best_priority() {
    let dns = Dnsmasq::start(&[
        "srv-host=_http._tcp.api.test,a.api.test,8001,0,3",
        "srv-host=_http._tcp.api.test,b.api.test,8002,0,1",
        "srv-host=_http._tcp.api.test,backup.api.test,8003,1,1",
    ]);
    dns.set_hosts(&[
        ("127.0.0.51", "a.api.test"),
        ("127.0.0.52", "b.api.test"),
        ("127.0.0.53", "backup.api.test"),
    ]);
    let mut source = Dns::srv("_http._tcp.api.test")
        .name_server(dns.addr())
        .build()
        .unwrap();
    let Update::Reset(set) = next(&mut source, Duration::from_secs(5)).await.unwrap() else {
        panic!("expected a reset")
    };
    let got: Vec<_> = set
        .iter()
        .map(|e| {
            (
                e.addr(),
                e.weight(),
                e.label("srv_target").unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "127.0.0.51:8001".parse().unwrap(),
                3,
                "a.api.test.".to_owned()
            ),
            (
                "127.0.0.52:8002".parse().unwrap(),
                1,
                "b.api.test.".to_owned()
            ),
        ]
    );
}
