//! etcd discovery and registration against a real etcd server (Debian package `etcd-server`,
//! installed by `scripts/install-deps.sh`). Every test starts its own server on 127.0.0.1 with free
//! ports and a temporary data directory. etcd is a real server, so these tests use real time; each
//! one is bounded and short.
#![cfg(feature = "etcd")]

mod support {
    pub mod etcd;
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use meshwork::BoxError;
use meshwork::backoff::Backoff;
use meshwork::discover::etcd::{EtcdDiscover, Registration};
use meshwork::discover::{Endpoint, Update};
use meshwork::rng::SeedSource;
use support::etcd::EtcdServer;

const SECOND: Duration = Duration::from_secs(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Consumes a discovery stream and keeps the endpoint set it describes, as a balancer would.
struct Follower {
    source: EtcdDiscover,
    set: BTreeMap<SocketAddr, Endpoint>,
    /// Every item seen, for assertions and failure messages.
    log: Vec<Result<Update, String>>,
}

impl Follower {
    fn new(source: EtcdDiscover) -> Self {
        Self {
            source,
            set: BTreeMap::new(),
            log: Vec::new(),
        }
    }

    /// Follows `prefix` on `etcd` through a [`fast_source`].
    async fn follow(etcd: &EtcdServer, prefix: &str) -> Self {
        Self::new(fast_source(prefix).build(etcd.client().await).unwrap())
    }

    fn apply(&mut self, item: Result<Update, BoxError>) {
        match item {
            Ok(update) => {
                match &update {
                    Update::Reset(all) => {
                        self.set = all.iter().map(|e| (e.addr(), e.clone())).collect();
                    }
                    Update::Insert(e) => {
                        self.set.insert(e.addr(), e.clone());
                    }
                    Update::Remove(a) => {
                        self.set.remove(a);
                    }
                }
                self.log.push(Ok(update));
            }
            Err(e) => self.log.push(Err(e.to_string())),
        }
    }

    /// Consumes items until the set satisfies `done`; fails if that takes longer than `within`.
    async fn until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<SocketAddr, Endpoint>) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.set) {
            match tokio::time::timeout_at(deadline, self.source.next()).await {
                Ok(Some(item)) => self.apply(item),
                Ok(None) => panic!("the discovery stream ended; log: {:?}", self.log),
                Err(_) => panic!(
                    "{what}: not reached within {within:?}; set: {:?}; log: {:?}",
                    self.set.keys(),
                    self.log
                ),
            }
        }
    }

    /// Consumes everything that arrives during `period`.
    async fn drain_for(&mut self, period: Duration) -> Vec<Result<Update, String>> {
        let start = self.log.len();
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.source.next()).await {
            self.apply(item);
        }
        self.log[start..].to_vec()
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.set.keys().copied().collect()
    }
}

/// Writes `value` at `key`, without a lease.
async fn put(kv: &mut etcd_client::Client, key: &str, value: &str) -> etcd_client::PutResponse {
    kv.put(key, value, None).await.unwrap()
}

fn fast_source(prefix: &str) -> meshwork::discover::etcd::EtcdDiscoverBuilder {
    EtcdDiscover::builder(prefix)
        .unwrap()
        .backoff(
            Backoff::full_jitter(Duration::from_millis(50), Duration::from_millis(400)).unwrap(),
        )
        .request_timeout(SECOND)
        .seed(SeedSource::from_seed(9))
}

#[tokio::test]
async fn adds_changes_and_removes_arrive_within_a_second() {
    let etcd = EtcdServer::start().await;
    let mut kv = etcd.client().await;
    // One endpoint in the Go endpoint-manager form, one in meshwork's form; a key of another
    // service that shares the prefix's first characters must not be seen.
    put(
        &mut kv,
        "svc/users/127.0.0.1:9001",
        r#"{"Addr":"127.0.0.1:9001","Metadata":null}"#,
    )
    .await;
    put(
        &mut kv,
        "svc/users/b",
        r#"{"addr":"127.0.0.1:9002","weight":2,"labels":{"zone":"a"}}"#,
    )
    .await;
    put(&mut kv, "svc/users-admin/x", r#"{"Addr":"127.0.0.1:9999"}"#).await;

    let mut f = Follower::follow(&etcd, "svc/users").await;
    let first = tokio::time::timeout(SECOND, f.source.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let Update::Reset(initial) = &first else {
        panic!("first item must be the complete set: {first:?}")
    };
    assert_eq!(
        initial,
        &vec![
            Endpoint::new(addr("127.0.0.1:9001")),
            Endpoint::new(addr("127.0.0.1:9002"))
                .with_weight(2)
                .unwrap()
                .with_label("zone", "a"),
        ]
    );
    f.apply(Ok(first));

    // Added.
    put(
        &mut kv,
        "svc/users/127.0.0.1:9003",
        r#"{"Addr":"127.0.0.1:9003","Metadata":{"weight":4,"zone":"b"}}"#,
    )
    .await;
    f.until(SECOND, "insert of 9003", |s| {
        s.contains_key(&addr("127.0.0.1:9003"))
    })
    .await;
    assert_eq!(f.set[&addr("127.0.0.1:9003")].weight(), 4);
    assert_eq!(f.set[&addr("127.0.0.1:9003")].label("zone"), Some("b"));

    // Changed (weight), then moved to another address under the same key.
    put(
        &mut kv,
        "svc/users/b",
        r#"{"addr":"127.0.0.1:9002","weight":7}"#,
    )
    .await;
    f.until(SECOND, "weight change of 9002", |s| {
        s[&addr("127.0.0.1:9002")].weight() == 7
    })
    .await;
    put(&mut kv, "svc/users/b", r#"{"addr":"127.0.0.1:9004"}"#).await;
    f.until(SECOND, "9002 moved to 9004", |s| {
        !s.contains_key(&addr("127.0.0.1:9002")) && s.contains_key(&addr("127.0.0.1:9004"))
    })
    .await;

    // Removed.
    kv.delete("svc/users/127.0.0.1:9001", None).await.unwrap();
    f.until(SECOND, "removal of 9001", |s| {
        !s.contains_key(&addr("127.0.0.1:9001"))
    })
    .await;

    assert_eq!(f.addrs(), [addr("127.0.0.1:9003"), addr("127.0.0.1:9004")]);
    assert!(
        f.log.iter().all(Result::is_ok),
        "no errors expected: {:?}",
        f.log
    );
    assert!(
        !f.log
            .iter()
            .any(|u| matches!(u, Ok(Update::Insert(e)) if e.addr().port() == 9999)),
        "a sibling prefix leaked in: {:?}",
        f.log
    );
}

#[tokio::test]
async fn etcd_restart_keeps_the_last_good_set_and_changes_after_it_arrive() {
    let mut etcd = EtcdServer::start().await;
    let mut kv = etcd.client().await;
    put(&mut kv, "svc/a/1", r#"{"Addr":"127.0.0.1:9101"}"#).await;
    put(&mut kv, "svc/a/2", r#"{"Addr":"127.0.0.1:9102"}"#).await;

    let mut f = Follower::follow(&etcd, "svc/a").await;
    f.until(SECOND, "initial set", |s| s.len() == 2).await;
    // Let the watch be established before the outage.
    assert!(f.drain_for(Duration::from_millis(200)).await.is_empty());

    etcd.stop();
    let during = f.drain_for(Duration::from_secs(3)).await;
    assert!(
        during.iter().all(Result::is_err),
        "while etcd is down the source reports failures and nothing else: {during:?}"
    );
    assert!(!during.is_empty(), "the outage must be reported");
    // Bounded retrying: the backoff (max 400 ms) allows at most a few attempts per second.
    assert!(
        during.len() < 40,
        "retries must back off: {} errors in 3 s",
        during.len()
    );
    assert_eq!(
        f.addrs(),
        [addr("127.0.0.1:9101"), addr("127.0.0.1:9102")],
        "the last good set stays"
    );

    etcd.restart().await;
    let mut kv = etcd.client().await;
    put(&mut kv, "svc/a/3", r#"{"Addr":"127.0.0.1:9103"}"#).await;
    kv.delete("svc/a/1", None).await.unwrap();
    f.until(Duration::from_secs(5), "changes after the restart", |s| {
        s.contains_key(&addr("127.0.0.1:9103")) && !s.contains_key(&addr("127.0.0.1:9101"))
    })
    .await;
    assert_eq!(f.addrs(), [addr("127.0.0.1:9102"), addr("127.0.0.1:9103")]);

    // And the watch works again afterwards.
    put(&mut kv, "svc/a/4", r#"{"Addr":"127.0.0.1:9104"}"#).await;
    f.until(SECOND, "a change after recovery", |s| {
        s.contains_key(&addr("127.0.0.1:9104"))
    })
    .await;
}

#[tokio::test]
async fn compaction_past_the_watched_revision_is_recovered_by_a_reread() {
    let etcd = EtcdServer::start().await;
    let mut kv = etcd.client().await;
    put(&mut kv, "svc/c/1", r#"{"Addr":"127.0.0.1:9201"}"#).await;
    put(&mut kv, "svc/c/2", r#"{"Addr":"127.0.0.1:9202"}"#).await;

    #[cfg(feature = "metrics")]
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    #[cfg(feature = "metrics")]
    let snapshotter = recorder.snapshotter();
    let builder = fast_source("svc/c");
    let client = etcd.client().await;
    // The source creates its metric handles when built: record them locally.
    #[cfg(feature = "metrics")]
    let source = metrics::with_local_recorder(&recorder, || builder.build(client)).unwrap();
    #[cfg(not(feature = "metrics"))]
    let source = builder.build(client).unwrap();
    let mut f = Follower::new(source);

    // The consumer takes the complete set (read at revision R) and then stays away: the watch from
    // R+1 is only created when it comes back.
    f.until(SECOND, "initial set", |s| s.len() == 2).await;

    // Meanwhile: changes, and a compaction of the history past R+1.
    put(&mut kv, "svc/c/3", r#"{"Addr":"127.0.0.1:9203"}"#).await;
    kv.delete("svc/c/1", None).await.unwrap();
    put(
        &mut kv,
        "svc/c/2",
        r#"{"Addr":"127.0.0.1:9202","Metadata":{"weight":5}}"#,
    )
    .await;
    let rev = put(&mut kv, "svc/c/4", r#"{"Addr":"127.0.0.1:9204"}"#).await;
    let rev = rev.header().unwrap().revision();
    kv.compact(rev, None).await.unwrap();

    // Coming back: the watch finds R+1 compacted; a re-read brings every change.
    f.until(SECOND, "every change made before the compaction", |s| {
        s.keys().copied().collect::<Vec<_>>()
            == [
                addr("127.0.0.1:9202"),
                addr("127.0.0.1:9203"),
                addr("127.0.0.1:9204"),
            ]
            && s[&addr("127.0.0.1:9202")].weight() == 5
    })
    .await;
    assert!(
        f.log.iter().all(Result::is_ok),
        "a compaction is not a failure: {:?}",
        f.log
    );

    // It was the compaction path, and the watch works after it.
    #[cfg(feature = "metrics")]
    let reloads: Vec<_> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| k.key().name() == "meshwork_etcd_reloads_total")
        .filter_map(|(k, _, _, v)| {
            let reason = k
                .key()
                .labels()
                .find(|l| l.key() == "reason")?
                .value()
                .to_owned();
            match v {
                metrics_util::debugging::DebugValue::Counter(n) if n > 0 => Some((reason, n)),
                _ => None,
            }
        })
        .collect();
    #[cfg(feature = "metrics")]
    assert!(
        reloads.contains(&("compacted".to_owned(), 1)),
        "reloads: {reloads:?}"
    );
    put(&mut kv, "svc/c/5", r#"{"Addr":"127.0.0.1:9205"}"#).await;
    f.until(SECOND, "a change after the re-read", |s| {
        s.contains_key(&addr("127.0.0.1:9205"))
    })
    .await;
}

#[tokio::test]
async fn a_malformed_value_leaves_the_other_endpoints_in_place() {
    let etcd = EtcdServer::start().await;
    let mut kv = etcd.client().await;
    put(&mut kv, "svc/m/1", r#"{"Addr":"127.0.0.1:9301"}"#).await;
    put(&mut kv, "svc/m/2", r#"{"Addr":"127.0.0.1:9302"}"#).await;
    put(&mut kv, "svc/m/bad", "not json at all").await;

    let mut f = Follower::follow(&etcd, "svc/m").await;
    let first = tokio::time::timeout(SECOND, f.source.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first,
        Update::Reset(vec![
            Endpoint::new(addr("127.0.0.1:9301")),
            Endpoint::new(addr("127.0.0.1:9302"))
        ]),
        "the malformed key is skipped, the others are read"
    );
    f.apply(Ok(first));

    // Malformed writes while watching: a new bad key, and a bad value over a good key. Then a good
    // write, which proves the bad ones were processed before it.
    put(&mut kv, "svc/m/bad2", r#"{"Addr":"no-port"}"#).await;
    put(
        &mut kv,
        "svc/m/2",
        r#"{"Addr":"127.0.0.1:9302","Metadata":{"weight":0}}"#,
    )
    .await;
    put(&mut kv, "svc/m/3", r#"{"Addr":"127.0.0.1:9303"}"#).await;
    f.until(SECOND, "the good write after the bad ones", |s| {
        s.contains_key(&addr("127.0.0.1:9303"))
    })
    .await;
    assert_eq!(
        f.addrs(),
        [
            addr("127.0.0.1:9301"),
            addr("127.0.0.1:9302"),
            addr("127.0.0.1:9303")
        ],
        "no endpoint was dropped by a malformed value"
    );
    assert!(
        f.log
            .iter()
            .all(|u| matches!(u, Ok(Update::Reset(_) | Update::Insert(_)))),
        "no removal, no error: {:?}",
        f.log
    );

    // Repairing the bad value takes effect; deleting a key whose value is bad removes it.
    put(
        &mut kv,
        "svc/m/2",
        r#"{"Addr":"127.0.0.1:9302","Metadata":{"weight":3}}"#,
    )
    .await;
    f.until(SECOND, "the repaired value", |s| {
        s[&addr("127.0.0.1:9302")].weight() == 3
    })
    .await;
}

#[tokio::test]
async fn a_registered_service_is_discovered_and_disappears_after_its_lease_when_killed() {
    let etcd = EtcdServer::start().await;
    let me = Endpoint::new(addr("127.0.0.1:9401"))
        .with_weight(2)
        .unwrap()
        .with_label("zone", "z");
    let registration = Registration::builder("svc/r", me.clone())
        .unwrap()
        .ttl(Duration::from_secs(2))
        .register(etcd.client().await)
        .await
        .unwrap();
    assert_eq!(registration.key(), "svc/r/127.0.0.1:9401");

    // The value is etcd's endpoint-manager JSON, so Go resolvers understand it too.
    let mut kv = etcd.client().await;
    let got = kv.get("svc/r/127.0.0.1:9401", None).await.unwrap();
    let value: serde_json::Value = serde_json::from_slice(got.kvs()[0].value()).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"Addr": "127.0.0.1:9401", "Metadata": {"weight": 2, "zone": "z"}})
    );
    assert_eq!(got.kvs()[0].lease(), registration.lease_id());

    let mut f = Follower::follow(&etcd, "svc/r").await;
    f.until(SECOND, "the registered endpoint", |s| {
        s.get(&me.addr()) == Some(&me)
    })
    .await;

    // Kept alive well past its TTL.
    let kept = f.drain_for(Duration::from_secs(5)).await;
    assert!(
        kept.is_empty(),
        "nothing changes while the lease is kept alive: {kept:?}"
    );
    assert_eq!(f.addrs(), [me.addr()]);

    // "Killed": the keep-alive stops, nothing revokes the lease.
    registration.abandon();
    let still = kv.get("svc/r/127.0.0.1:9401", None).await.unwrap();
    assert_eq!(
        still.kvs().len(),
        1,
        "the key outlives the process until the lease expires"
    );
    f.until(
        Duration::from_secs(5),
        "removal after the lease expired",
        |s| s.is_empty(),
    )
    .await;
    assert_eq!(f.log.last(), Some(&Ok(Update::Remove(me.addr()))));
}

#[tokio::test]
async fn deregistering_removes_the_endpoint_at_once() {
    let etcd = EtcdServer::start().await;
    let me = Endpoint::new(addr("127.0.0.1:9501"));
    let registration = Registration::builder("svc/d", me.clone())
        .unwrap()
        .ttl(Duration::from_secs(30))
        .register(etcd.client().await)
        .await
        .unwrap();
    let mut f = Follower::follow(&etcd, "svc/d").await;
    f.until(SECOND, "the registered endpoint", |s| {
        s.contains_key(&me.addr())
    })
    .await;
    registration.deregister().await.unwrap();
    f.until(SECOND, "removal after deregistration", |s| s.is_empty())
        .await;
}

#[tokio::test]
async fn a_registration_survives_an_etcd_outage_longer_than_its_ttl() {
    let mut etcd = EtcdServer::start().await;
    let me = Endpoint::new(addr("127.0.0.1:9601"));
    let registration = Registration::builder("svc/o", me.clone())
        .unwrap()
        .ttl(Duration::from_secs(2))
        .backoff(
            Backoff::full_jitter(Duration::from_millis(50), Duration::from_millis(300)).unwrap(),
        )
        .register(etcd.client().await)
        .await
        .unwrap();
    let first_lease = registration.lease_id();

    // etcd is down longer than the TTL; after the restart, etcd expires the lease (it restarts the
    // lease clocks, so it expires one TTL later unless renewed). The keep-alive must renew it or,
    // if it was lost, register again.
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.restart().await;

    let mut f = Follower::follow(&etcd, "svc/o").await;
    f.until(SECOND, "the endpoint after the restart", |s| {
        s.contains_key(&me.addr())
    })
    .await;
    // Still there several TTLs later.
    let later = f.drain_for(Duration::from_secs(5)).await;
    assert!(
        later.iter().all(|u| !matches!(u, Ok(Update::Remove(_)))) && f.set.contains_key(&me.addr()),
        "the registration survived the outage: {later:?} (lease {first_lease} -> {})",
        registration.lease_id()
    );
    registration.deregister().await.unwrap();
}

#[tokio::test]
async fn a_registration_whose_lease_was_lost_registers_again() {
    let etcd = EtcdServer::start().await;
    let me = Endpoint::new(addr("127.0.0.1:9701"));
    let registration = Registration::builder("svc/l", me.clone())
        .unwrap()
        .ttl(Duration::from_secs(3))
        .backoff(
            Backoff::full_jitter(Duration::from_millis(50), Duration::from_millis(300)).unwrap(),
        )
        .register(etcd.client().await)
        .await
        .unwrap();
    let mut f = Follower::follow(&etcd, "svc/l").await;
    f.until(SECOND, "the registered endpoint", |s| {
        s.contains_key(&me.addr())
    })
    .await;

    // Someone (an operator, or etcd after a long partition) revokes the lease: the key goes.
    let lost = registration.lease_id();
    etcd.client().await.lease_revoke(lost).await.unwrap();
    f.until(SECOND, "removal with the revoked lease", |s| s.is_empty())
        .await;
    // The next keep-alive (every TTL/3) learns the lease is gone and registers again.
    f.until(
        Duration::from_secs(3),
        "registration under a new lease",
        |s| s.contains_key(&me.addr()),
    )
    .await;
    assert_ne!(registration.lease_id(), lost);
    registration.deregister().await.unwrap();
    f.until(SECOND, "removal after deregistration", |s| s.is_empty())
        .await;
}
