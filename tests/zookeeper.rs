//! ZooKeeper discovery and registration against a real ZooKeeper server (Debian package
//! `zookeeper`, installed by `scripts/install-deps.sh`). Every test starts its own standalone
//! server on 127.0.0.1 with a free port and a temporary data directory. ZooKeeper is a real
//! server, so these tests use real time; each one is bounded and short.
#![cfg(feature = "zookeeper")]

mod support {
    pub mod zookeeper;
}

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use meshwork::BoxError;
use meshwork::backoff::Backoff;
use meshwork::discover::zookeeper::{
    Disconnected, Ensemble, Format, Registration, SessionLost, ZkDiscover,
};
use meshwork::discover::{Endpoint, Update};
use meshwork::rng::SeedSource;
use support::zookeeper::{Relay, ZkServer, ensemble_at};
use zookeeper_client as zk;

const SECOND: Duration = Duration::from_secs(1);

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Consumes a discovery stream and keeps the endpoint set it describes, as a balancer would.
struct Follower {
    source: ZkDiscover,
    set: BTreeMap<SocketAddr, Endpoint>,
    /// Every item seen, for assertions and failure messages.
    log: Vec<Result<Update, String>>,
    errors: Vec<BoxError>,
}

impl Follower {
    fn new(source: ZkDiscover) -> Self {
        Self {
            source,
            set: BTreeMap::new(),
            log: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Follows `path` in `format` through a source with a short backoff.
    fn follow(zk: Ensemble, path: &str, format: Format) -> Self {
        let source = ZkDiscover::builder(path, format)
            .unwrap()
            .backoff(
                Backoff::full_jitter(Duration::from_millis(50), Duration::from_millis(300))
                    .unwrap(),
            )
            .request_timeout(SECOND)
            .seed(SeedSource::from_seed(21))
            .build(zk)
            .unwrap();
        Self::new(source)
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
            Err(e) => {
                self.log.push(Err(e.to_string()));
                self.errors.push(e);
            }
        }
    }

    /// Consumes items until the set satisfies `done`; fails if that takes longer than `within`.
    /// Returns how long it took.
    async fn until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&BTreeMap<SocketAddr, Endpoint>) -> bool,
    ) -> Duration {
        let start = Instant::now();
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
        let took = start.elapsed();
        eprintln!("{what}: {took:?}");
        took
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

fn open() -> zk::CreateOptions<'static> {
    zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all())
}

fn member_mode() -> zk::CreateOptions<'static> {
    zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all())
}

/// Server-set JSON for a member at `service` (plus an `http` endpoint when given).
fn member(service: &str, http: Option<&str>, status: &str) -> String {
    let ep = |a: &str| {
        let a = addr(a);
        format!(r#"{{"host":"{}","port":{}}}"#, a.ip(), a.port())
    };
    let extra = http.map_or(String::new(), |h| format!(r#""http":{}"#, ep(h)));
    format!(
        r#"{{"serviceEndpoint":{},"additionalEndpoints":{{{extra}}},"status":"{status}","shard":0}}"#,
        ep(service)
    )
}

/// Creates a server-set member (ephemeral sequential, in `client`'s session); returns its path.
async fn add_member(client: &zk::Client, path: &str, data: &str) -> String {
    let prefix = format!("{path}/member_");
    let (_, seq) = client
        .create(&prefix, data.as_bytes(), &member_mode())
        .await
        .unwrap();
    format!("{prefix}{seq}")
}

#[tokio::test]
async fn server_set_changes_arrive_within_a_second_dead_and_malformed_are_skipped() {
    let server = ZkServer::start().await;
    let zk = server.client().await;
    zk.mkdir("/svc/users", &open()).await.unwrap();
    let a = add_member(&zk, "/svc/users", &member("127.0.0.1:9001", None, "ALIVE")).await;
    // A DEAD member, a malformed member, and a child that is not a member at all.
    add_member(&zk, "/svc/users", &member("127.0.0.1:9002", None, "DEAD")).await;
    let bad = add_member(&zk, "/svc/users", r#"{"serviceEndpoint":"nope""#).await;
    zk.create(
        "/svc/users/vector_0",
        br#"{"serviceEndpoint":{"host":"127.0.0.1","port":9999},"status":"ALIVE"}"#,
        &open(),
    )
    .await
    .unwrap();

    let mut f = Follower::follow(
        server.ensemble(10 * SECOND),
        "/svc/users",
        Format::default(),
    );
    let first = tokio::time::timeout(SECOND, f.source.next())
        .await
        .expect("the first set within a second")
        .unwrap()
        .unwrap();
    let Update::Reset(initial) = &first else {
        panic!("first item must be the complete set: {first:?}")
    };
    assert_eq!(
        initial,
        &[Endpoint::new(addr("127.0.0.1:9001")).with_label("shard", "0")]
    );
    f.apply(Ok(first));
    assert!(f.errors.is_empty());

    // Add: seen within a second.
    let c = add_member(&zk, "/svc/users", &member("127.0.0.1:9003", None, "ALIVE")).await;
    let took = f
        .until(SECOND, "member added", |s| {
            s.contains_key(&addr("127.0.0.1:9003"))
        })
        .await;
    assert!(took < SECOND);
    // The malformed member is fixed in place: its data watch brings it in.
    zk.set_data(
        &bad,
        member("127.0.0.1:9004", None, "ALIVE").as_bytes(),
        None,
    )
    .await
    .unwrap();
    f.until(SECOND, "malformed member fixed", |s| {
        s.contains_key(&addr("127.0.0.1:9004"))
    })
    .await;
    // A member turning DEAD leaves the set, like one that is deleted.
    zk.set_data(&c, member("127.0.0.1:9003", None, "DEAD").as_bytes(), None)
        .await
        .unwrap();
    f.until(SECOND, "member went DEAD", |s| {
        !s.contains_key(&addr("127.0.0.1:9003"))
    })
    .await;
    zk.delete(&a, None).await.unwrap();
    f.until(SECOND, "member removed", |s| {
        !s.contains_key(&addr("127.0.0.1:9001"))
    })
    .await;
    assert_eq!(f.addrs(), [addr("127.0.0.1:9004")]);
    assert!(f.errors.is_empty(), "{:?}", f.log);
    // Nothing else arrives: every update above was a real change.
    assert!(f.drain_for(Duration::from_millis(300)).await.is_empty());

    // Dropping the source ends its session (and with it, its watches).
    let session = f.source.session().expect("a session");
    drop(f);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reuse = zk::Client::connector()
        .with_session(session)
        .with_session_timeout(10 * SECOND)
        .connect(&server.addr().to_string())
        .await;
    assert!(
        matches!(reuse, Err(zk::Error::SessionExpired)),
        "the dropped source's session is closed: {:?}",
        reuse.map(|c| c.session_id())
    );
}

#[tokio::test]
async fn a_named_additional_endpoint_is_picked_and_a_missing_path_is_empty() {
    let server = ZkServer::start().await;
    let zk = server.client().await;
    let http = Format::server_set_endpoint("http").unwrap();
    // The path does not exist yet: an empty set, and its creation is watched.
    let mut f = Follower::follow(server.ensemble(10 * SECOND), "/svc/web", http);
    let first = tokio::time::timeout(SECOND, f.source.next()).await.unwrap();
    f.apply(first.unwrap());
    assert_eq!(f.log, [Ok(Update::Reset(vec![]))]);

    zk.mkdir("/svc/web", &open()).await.unwrap();
    add_member(
        &zk,
        "/svc/web",
        &member("127.0.0.1:9101", Some("127.0.0.1:8101"), "ALIVE"),
    )
    .await;
    // No `http` endpoint: skipped as malformed.
    add_member(&zk, "/svc/web", &member("127.0.0.1:9102", None, "ALIVE")).await;
    f.until(SECOND, "named endpoint", |s| {
        s.contains_key(&addr("127.0.0.1:8101"))
    })
    .await;
    assert_eq!(f.addrs(), [addr("127.0.0.1:8101")]);
    assert!(f.errors.is_empty(), "{:?}", f.log);
}

#[tokio::test]
async fn nerve_registrations_with_weights_and_names() {
    let server = ZkServer::start().await;
    let zk = server.client().await;
    zk.mkdir("/nerve/services/users/services", &open())
        .await
        .unwrap();
    let path = "/nerve/services/users/services";
    let mode = member_mode();
    for data in [
        r#"{"host":"127.0.0.1","port":9201,"name":"i-1","weight":3}"#,
        r#"{"host":"127.0.0.1","port":9202,"name":"i-2","weight":0}"#,
        r#"{"host":"web-3.internal","port":9203,"name":"i-3"}"#,
        r#"{"host":"127.0.0.1","port":9204,"name":"i-4","labels":{"az":"b"}}"#,
    ] {
        zk.create(&format!("{path}/i_"), data.as_bytes(), &mode)
            .await
            .unwrap();
    }
    let mut f = Follower::follow(server.ensemble(10 * SECOND), path, Format::Nerve);
    f.until(SECOND, "nerve set", |s| s.len() == 2).await;
    let one = &f.set[&addr("127.0.0.1:9201")];
    assert_eq!((one.weight(), one.label("name")), (3, Some("i-1")));
    assert_eq!(f.set[&addr("127.0.0.1:9204")].label("az"), Some("b"));
    // The malformed one (a host name) and the drained one (weight 0) are not used.
    assert_eq!(f.addrs(), [addr("127.0.0.1:9201"), addr("127.0.0.1:9204")]);
}

#[tokio::test]
async fn server_down_for_3s_keeps_the_last_set_then_changes_arrive() {
    let mut server = ZkServer::start().await;
    {
        let zk = server.client().await;
        zk.mkdir("/svc/db", &open()).await.unwrap();
        for (i, port) in [9301, 9302].into_iter().enumerate() {
            let data = member(&format!("127.0.0.1:{port}"), None, "ALIVE");
            zk.create(&format!("/svc/db/member_{i:010}"), data.as_bytes(), &open())
                .await
                .unwrap();
        }
    }
    let mut f = Follower::follow(server.ensemble(10 * SECOND), "/svc/db", Format::default());
    f.until(SECOND, "initial set", |s| s.len() == 2).await;
    let before = f.addrs();

    server.stop();
    let during = f.drain_for(3 * SECOND).await;
    assert!(
        during.iter().all(Result::is_err),
        "nothing but errors while ZooKeeper is down: {during:?}"
    );
    assert!(
        f.errors.iter().any(|e| e.is::<Disconnected>()),
        "the lost connection is reported: {during:?}"
    );
    assert_eq!(f.addrs(), before, "the last set is kept");

    server.restart().await;
    let zk = server.client().await;
    add_member(&zk, "/svc/db", &member("127.0.0.1:9303", None, "ALIVE")).await;
    // The client reconnects with its own exponential backoff (100 ms doubling, up to the
    // session's deadline): after a 3 s outage its next attempt may be ~3 s away.
    f.until(6 * SECOND, "change after restart", |s| s.len() == 3)
        .await;
    zk.delete("/svc/db/member_0000000000", None).await.unwrap();
    f.until(SECOND, "removal after restart", |s| {
        !s.contains_key(&addr("127.0.0.1:9301"))
    })
    .await;
}

#[tokio::test]
async fn session_expiry_re_registers_and_nothing_is_missed() {
    let server = ZkServer::start().await;
    let zk = server.client().await;
    // The source and the registration reach ZooKeeper through a relay that the test cuts for
    // longer than their 1 s session timeout: ZooKeeper expires both sessions.
    let relay = Relay::to(server.addr()).await;
    let via_relay = ensemble_at(relay.addr(), SECOND);
    let registration = Registration::builder("/svc/api", addr("127.0.0.1:9401"))
        .unwrap()
        .backoff(
            Backoff::full_jitter(Duration::from_millis(50), Duration::from_millis(300)).unwrap(),
        )
        .register(&via_relay)
        .await
        .unwrap();
    let first_znode = registration.znode();
    assert!(first_znode.starts_with("/svc/api/member_"), "{first_znode}");
    let stays = add_member(&zk, "/svc/api", &member("127.0.0.1:9402", None, "ALIVE")).await;
    let goes = add_member(&zk, "/svc/api", &member("127.0.0.1:9403", None, "ALIVE")).await;

    let mut f = Follower::follow(via_relay, "/svc/api", Format::default());
    f.until(SECOND, "initial set", |s| s.len() == 3).await;
    let old_session = f.source.session().unwrap().id();

    relay.cut();
    // Changes while the source has no usable session: its watches can never report them.
    let comes = add_member(&zk, "/svc/api", &member("127.0.0.1:9404", None, "ALIVE")).await;
    zk.delete(&goes, None).await.unwrap();
    let during = f.drain_for(Duration::from_millis(2500)).await;
    assert!(during.iter().all(Result::is_err), "{during:?}");
    // ZooKeeper expired the registration's session: its member is gone.
    assert_eq!(zk.check_stat(&first_znode).await.unwrap(), None);
    relay.heal();

    f.until(3 * SECOND, "resynced after expiry", |s| {
        s.contains_key(&addr("127.0.0.1:9404"))
            && !s.contains_key(&addr("127.0.0.1:9403"))
            && s.contains_key(&addr("127.0.0.1:9401"))
    })
    .await;
    assert!(
        f.errors.iter().any(|e| e.is::<SessionLost>()),
        "the expiry is reported: {:?}",
        f.log
    );
    assert_ne!(
        f.source.session().unwrap().id(),
        old_session,
        "a new session"
    );

    // Re-registered, under a new member, in a new session.
    let deadline = Instant::now() + 3 * SECOND;
    while registration.registrations() < 2 {
        assert!(Instant::now() < deadline, "not registered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = registration.znode();
    assert_ne!(second, first_znode);
    assert!(zk.check_stat(&second).await.unwrap().is_some());

    // The new watches work: later changes arrive.
    zk.delete(&comes, None).await.unwrap();
    zk.delete(&stays, None).await.unwrap();
    f.until(SECOND, "change after expiry", |s| {
        s.keys().copied().collect::<Vec<_>>() == [addr("127.0.0.1:9401")]
    })
    .await;
    registration.deregister().await.unwrap();
    f.until(SECOND, "deregistered", BTreeMap::is_empty).await;
    assert_eq!(zk.check_stat(&second).await.unwrap(), None);
}

/// Not a test of its own: the registering process that
/// `a_killed_registering_process_disappears` starts and kills.
#[tokio::test]
#[ignore = "run by a_killed_registering_process_disappears as a child process"]
async fn registering_child_process() {
    let spec = std::env::var("MESHWORK_ZK_CHILD").expect("MESHWORK_ZK_CHILD=server|path|addr");
    let mut parts = spec.split('|');
    let (server, path, me) = (
        addr(parts.next().unwrap()),
        parts.next().unwrap().to_owned(),
        addr(parts.next().unwrap()),
    );
    let registration = Registration::register(&ensemble_at(server, SECOND), &path, me)
        .await
        .unwrap();
    println!("ZNODE {}", registration.znode());
    // Killed by the parent long before this ends.
    tokio::time::sleep(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_killed_registering_process_disappears() {
    use std::io::BufRead;

    let server = ZkServer::start().await;
    let mut f = Follower::follow(server.ensemble(10 * SECOND), "/svc/jobs", Format::default());
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "registering_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "MESHWORK_ZK_CHILD",
            format!("{}|/svc/jobs|127.0.0.1:9501", server.addr()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let znode = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("ZNODE ").map(str::to_owned))
    })
    .await
    .unwrap()
    .expect("the child registered");
    assert!(znode.starts_with("/svc/jobs/member_"), "{znode}");
    f.until(2 * SECOND, "child registered", |s| {
        s.contains_key(&addr("127.0.0.1:9501"))
    })
    .await;

    child.kill().unwrap(); // SIGKILL: no deregistration, no session close
    child.wait().unwrap();
    let killed = Instant::now();
    f.until(3 * SECOND, "killed child's member expired", |s| {
        s.is_empty()
    })
    .await;
    // Only ZooKeeper's session expiry (1 s) removes it.
    assert!(
        killed.elapsed() >= Duration::from_millis(500),
        "{:?}",
        killed.elapsed()
    );
}

#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_count_reads_malformed_children_and_endpoints() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The source's handles are registered when it is built, here, with this recorder.
    let _guard = metrics::set_default_local_recorder(&recorder);
    let server = ZkServer::start().await;
    let zk = server.client().await;
    zk.mkdir("/svc/metered", &open()).await.unwrap();
    add_member(
        &zk,
        "/svc/metered",
        &member("127.0.0.1:9701", None, "ALIVE"),
    )
    .await;
    add_member(&zk, "/svc/metered", "not json").await;
    let source = ZkDiscover::builder("/svc/metered", Format::default())
        .unwrap()
        .labels(meshwork::telemetry::MetricLabels::new().with("upstream", "metered"))
        .build(server.ensemble(10 * SECOND))
        .unwrap();
    let mut f = Follower::new(source);
    f.until(SECOND, "first set", |s| s.len() == 1).await;
    add_member(&zk, "/svc/metered", r#"{"status":"ALIVE"}"#).await;
    add_member(
        &zk,
        "/svc/metered",
        &member("127.0.0.1:9702", None, "ALIVE"),
    )
    .await;
    f.until(SECOND, "second member", |s| s.len() == 2).await;

    let mut seen = BTreeMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        assert!(
            labels.contains(&"upstream=metered".to_owned()),
            "{labels:?}"
        );
        assert!(
            labels.contains(&"path=/svc/metered".to_owned()),
            "{labels:?}"
        );
        assert!(
            labels.contains(&"format=serverset".to_owned()),
            "{labels:?}"
        );
        let reason = labels.iter().find_map(|l| l.strip_prefix("reason="));
        let name = match reason {
            Some(r) => format!("{}:{r}", key.key().name()),
            None => key.key().name().to_owned(),
        };
        seen.insert(name, value);
    }
    let get = |name: &str| seen.get(name);
    assert_eq!(
        get("meshwork_zookeeper_reloads_total:initial"),
        Some(&DebugValue::Counter(1))
    );
    assert_eq!(
        get("meshwork_zookeeper_malformed_children_total"),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        get("meshwork_zookeeper_errors_total"),
        Some(&DebugValue::Counter(0))
    );
    assert_eq!(
        get("meshwork_zookeeper_endpoints"),
        Some(&DebugValue::Gauge(2.0.into()))
    );
}
