//! Property tests of the configuration parser (issue 12): whatever the file holds, parsing never
//! panics; a bad value is rejected with a message naming its field path; a valid configuration
//! parses to exactly the values written.
//!
//! Documents are generated as tables of `key = literal` lines, so that one literal can be broken
//! and the path of the broken field is known.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

/// One TOML table: its header (`""` for the root), whether it is an `[[array]]` entry, its lines.
#[derive(Debug, Clone)]
struct Table {
    header: String,
    array: bool,
    lines: Vec<(String, String)>,
}

impl Table {
    fn new(header: impl Into<String>, array: bool) -> Self {
        Self {
            header: header.into(),
            array,
            lines: Vec::new(),
        }
    }

    fn set(mut self, key: &str, literal: impl Into<String>) -> Self {
        self.lines.push((key.to_owned(), literal.into()));
        self
    }
}

/// A whole document.
#[derive(Debug, Clone)]
struct Doc(Vec<Table>);

impl Doc {
    fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.0 {
            if !t.header.is_empty() {
                if t.array {
                    out.push_str(&format!("[[{}]]\n", t.header));
                } else {
                    out.push_str(&format!("[{}]\n", t.header));
                }
            }
            for (k, v) in &t.lines {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out
    }

    /// The field path of line `key` in the `n`th table called `header` (routes are numbered).
    fn path(&self, header: &str, n: usize, key: &str) -> String {
        if self.0.iter().any(|t| t.header == header && t.array) {
            format!("{header}[{n}].{key}")
        } else if header.is_empty() {
            key.to_owned()
        } else {
            format!("{header}.{key}")
        }
    }

    /// Sets `key` in the `n`th table called `header` to `literal` (added when absent).
    fn replace(&mut self, header: &str, n: usize, key: &str, literal: String) {
        let table = self
            .0
            .iter_mut()
            .filter(|t| t.header == header)
            .nth(n)
            .expect("the table exists");
        match table.lines.iter_mut().find(|(k, _)| k == key) {
            Some(line) => line.1 = literal,
            None => table.lines.push((key.to_owned(), literal)),
        }
    }
}

fn ms(n: u64) -> String {
    format!("\"{n}ms\"")
}

fn quoted(s: &str) -> String {
    format!("\"{s}\"")
}

#[derive(Debug, Clone)]
struct GenListener {
    port: u16,
    max_header_bytes: usize,
    max_headers: usize,
    max_body_bytes: u64,
    header_read_timeout: u64,
    idle_timeout: u64,
    max_connections: usize,
    h2_streams: u32,
}

#[derive(Debug, Clone)]
struct GenRoute {
    host: Option<String>,
    path_prefix: String,
    upstream: usize,
}

#[derive(Debug, Clone)]
struct GenUpstream {
    name: String,
    endpoints: Vec<u16>,
    http2: bool,
    total: u64,
    per_try: Option<u64>,
    least_in_flight: bool,
    decay: u64,
    max_wait: u64,
    breaker: (bool, u32, u32, u64, u32, (u64, u64)),
    retry: (bool, u32, u32, u32, u64, (u64, u64), u64),
    limits: (usize, usize),
    count_429: bool,
}

#[derive(Debug, Clone)]
struct GenConfig {
    admin: u16,
    drain: u64,
    access_log: bool,
    seed: Option<u64>,
    listener: GenListener,
    routes: Vec<GenRoute>,
    upstreams: Vec<GenUpstream>,
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl GenConfig {
    fn doc(&self) -> Doc {
        let mut tables = vec![
            Table::new("", false)
                .set("admin", quoted(&addr(self.admin).to_string()))
                .set("shutdown_drain_timeout", ms(self.drain))
                .set("drain_delay", ms(self.drain / 2))
                .set("access_log", self.access_log.to_string()),
        ];
        if let Some(seed) = self.seed {
            tables[0].lines.push(("seed".into(), seed.to_string()));
        }
        tables.push(
            Table::new("admin_limits", false)
                .set("header_read_timeout", ms(self.drain / 3 + 1))
                .set("idle_timeout", ms(self.drain + 1))
                .set("max_connections", (self.drain % 10_000 + 1).to_string()),
        );
        let l = &self.listener;
        tables.push(
            Table::new("listener", false)
                .set("address", quoted(&addr(l.port).to_string()))
                .set("max_header_bytes", l.max_header_bytes.to_string())
                .set("max_headers", l.max_headers.to_string())
                .set("max_body_bytes", l.max_body_bytes.to_string())
                .set("header_read_timeout", ms(l.header_read_timeout))
                .set("idle_timeout", ms(l.idle_timeout))
                .set("max_connections", l.max_connections.to_string())
                .set("h2_max_concurrent_streams", l.h2_streams.to_string()),
        );
        for r in &self.routes {
            let mut t = Table::new("routes", true)
                .set("path_prefix", quoted(&r.path_prefix))
                .set("upstream", quoted(&self.upstreams[r.upstream].name));
            if let Some(h) = &r.host {
                t = t.set("host", quoted(h));
            }
            tables.push(t);
        }
        for u in &self.upstreams {
            let p = format!("upstreams.{}", u.name);
            let endpoints: Vec<String> = u
                .endpoints
                .iter()
                .map(|port| quoted(&addr(*port).to_string()))
                .collect();
            tables.push(
                Table::new(p.clone(), false)
                    .set(
                        "http_version",
                        quoted(if u.http2 { "http2" } else { "http1" }),
                    )
                    .set("count_429_as_failure", u.count_429.to_string()),
            );
            tables.push(
                Table::new(format!("{p}.discovery"), false)
                    .set("kind", quoted("static"))
                    .set("endpoints", format!("[{}]", endpoints.join(", "))),
            );
            let mut t = Table::new(format!("{p}.timeouts"), false).set("total", ms(u.total));
            if let Some(per_try) = u.per_try {
                t = t.set("per_try", ms(per_try));
            }
            tables.push(t);
            tables.push(
                Table::new(format!("{p}.balancer"), false)
                    .set(
                        "load",
                        quoted(if u.least_in_flight {
                            "least_in_flight"
                        } else {
                            "peak_ewma"
                        }),
                    )
                    .set("decay", ms(u.decay))
                    .set("max_wait", ms(u.max_wait)),
            );
            let (enabled, consecutive, rate, window, min_requests, (base, max)) = u.breaker;
            tables.push(
                Table::new(format!("{p}.breaker"), false)
                    .set("enabled", enabled.to_string())
                    .set("consecutive_failures", consecutive.to_string())
                    .set("min_success_rate", format!("{:?}", f64::from(rate) / 100.0))
                    .set("window", ms(window))
                    .set("min_requests", min_requests.to_string())
                    .set("backoff_base", ms(base))
                    .set("backoff_max", ms(max)),
            );
            let (enabled, max_retries, percent, per_second, window, (base, max), replay) = u.retry;
            tables.push(
                Table::new(format!("{p}.retry"), false)
                    .set("enabled", enabled.to_string())
                    .set("max_retries", max_retries.to_string())
                    .set("budget_percent", format!("{:?}", f64::from(percent)))
                    .set("min_per_second", per_second.to_string())
                    .set("budget_window", format!("\"{window}s\""))
                    .set("backoff_base", ms(base))
                    .set("backoff_max", ms(max))
                    .set("replay_limit_bytes", replay.to_string()),
            );
            tables.push(
                Table::new(format!("{p}.limits"), false)
                    .set("max_requests", u.limits.0.to_string())
                    .set("max_pending", u.limits.1.to_string()),
            );
        }
        Doc(tables)
    }

    /// Asserts that `c` holds exactly the generated values.
    fn check(&self, c: &Config) {
        let d = |n: u64| Dur(Duration::from_millis(n));
        assert_eq!(c.admin, addr(self.admin));
        assert_eq!(c.shutdown_drain_timeout, d(self.drain));
        assert_eq!(c.drain_delay, d(self.drain / 2));
        let a = &c.admin_limits;
        assert_eq!(a.header_read_timeout, d(self.drain / 3 + 1));
        assert_eq!(a.idle_timeout, d(self.drain + 1));
        assert_eq!(a.max_connections as u64, self.drain % 10_000 + 1);
        assert_eq!(c.access_log, self.access_log);
        assert_eq!(c.seed, self.seed);
        let (l, g) = (&c.listener, &self.listener);
        assert_eq!(l.address, addr(g.port));
        assert_eq!(l.max_header_bytes, g.max_header_bytes);
        assert_eq!(l.max_headers, g.max_headers);
        assert_eq!(l.max_body_bytes, g.max_body_bytes);
        assert_eq!(l.header_read_timeout, d(g.header_read_timeout));
        assert_eq!(l.idle_timeout, d(g.idle_timeout));
        assert_eq!(l.max_connections, g.max_connections);
        assert_eq!(l.h2_max_concurrent_streams, g.h2_streams);
        assert_eq!(c.routes.len(), self.routes.len());
        for (r, g) in c.routes.iter().zip(&self.routes) {
            assert_eq!(r.host, g.host);
            assert_eq!(r.path_prefix, g.path_prefix);
            assert_eq!(r.upstream, self.upstreams[g.upstream].name);
        }
        assert_eq!(c.upstreams.len(), self.upstreams.len());
        for g in &self.upstreams {
            let u = &c.upstreams[&g.name];
            match &u.discovery {
                Discovery::Static { endpoints } => {
                    let want: Vec<SocketAddr> = g.endpoints.iter().map(|p| addr(*p)).collect();
                    assert_eq!(endpoints, &want);
                }
                other => panic!("not static: {other:?}"),
            }
            let version = if g.http2 {
                HttpVersion::Http2
            } else {
                HttpVersion::Http1
            };
            assert_eq!(u.http_version, version);
            assert_eq!(u.count_429_as_failure, g.count_429);
            assert_eq!(u.timeouts.total, Bound::Of(d(g.total)));
            assert_eq!(u.timeouts.per_try, g.per_try.map(|p| Bound::Of(d(p))));
            let load = if g.least_in_flight {
                LoadMetric::LeastInFlight
            } else {
                LoadMetric::PeakEwma
            };
            assert_eq!(u.balancer.load, load);
            assert_eq!(u.balancer.decay, d(g.decay));
            assert_eq!(u.balancer.max_wait, d(g.max_wait));
            let (enabled, consecutive, rate, window, min_requests, (base, max)) = g.breaker;
            let b = &u.breaker;
            assert_eq!(b.enabled, enabled);
            assert_eq!(b.consecutive_failures, consecutive);
            assert_eq!(b.min_success_rate, f64::from(rate) / 100.0);
            assert_eq!(b.window, d(window));
            assert_eq!(b.min_requests, min_requests);
            assert_eq!((b.backoff_base, b.backoff_max), (d(base), d(max)));
            let (enabled, max_retries, percent, per_second, window, (base, max), replay) = g.retry;
            let r = &u.retry;
            assert_eq!(r.enabled, enabled);
            assert_eq!(r.max_retries, max_retries);
            assert_eq!(r.budget_percent, f64::from(percent));
            assert_eq!(r.min_per_second, per_second);
            assert_eq!(r.budget_window, secs(window));
            assert_eq!((r.backoff_base, r.backoff_max), (d(base), d(max)));
            assert_eq!(r.replay_limit_bytes, replay);
            let l = &u.limits;
            assert_eq!((l.max_requests, l.max_pending), g.limits);
        }
    }
}

/// A backoff pair `base <= max`, in milliseconds.
fn backoff() -> impl Strategy<Value = (u64, u64)> {
    (1u64..10_000).prop_flat_map(|base| (Just(base), base..=base * 100))
}

fn upstream(name: String) -> impl Strategy<Value = GenUpstream> {
    let timeouts =
        (1u64..100_000).prop_flat_map(|total| (Just(total), prop::option::of(1..=total)));
    let balancer = (any::<bool>(), 1u64..100_000, 0u64..10_000);
    let breaker = (
        any::<bool>(),
        1u32..1000,
        1u32..=100,
        1u64..100_000,
        1u32..1000,
        backoff(),
    );
    let retry = (
        any::<bool>(),
        0u32..10,
        0u32..=100,
        0u32..1000,
        1u64..=60,
        backoff(),
        0u64..10_000_000,
    );
    (
        prop::collection::vec(1u16.., 1..4),
        any::<bool>(),
        timeouts,
        balancer,
        breaker,
        retry,
        (1usize..100_000, 1usize..100_000),
        any::<bool>(),
    )
        .prop_map(
            move |(
                endpoints,
                http2,
                (total, per_try),
                (lif, decay, max_wait),
                breaker,
                retry,
                limits,
                c429,
            )| {
                GenUpstream {
                    name: name.clone(),
                    endpoints,
                    http2,
                    total,
                    per_try,
                    least_in_flight: lif,
                    decay,
                    max_wait,
                    breaker,
                    retry,
                    limits,
                    count_429: c429,
                }
            },
        )
}

fn config() -> impl Strategy<Value = GenConfig> {
    let names = prop::collection::btree_set("[a-z][a-z0-9_]{0,7}", 1..4);
    let upstreams =
        names.prop_flat_map(|names| names.into_iter().map(upstream).collect::<Vec<_>>());
    let listener = (
        1u16..,
        8192usize..(1 << 20),
        1usize..1000,
        1u64..(1 << 40),
        1u64..100_000,
        1u64..1_000_000,
        1usize..100_000,
        1u32..10_000,
    )
        .prop_map(|(port, mhb, mh, mbb, hrt, idle, mc, h2)| GenListener {
            port,
            max_header_bytes: mhb,
            max_headers: mh,
            max_body_bytes: mbb,
            header_read_timeout: hrt,
            idle_timeout: idle,
            max_connections: mc,
            h2_streams: h2,
        });
    let route = (
        prop::option::of("[a-z][a-z0-9-]{0,10}(\\.[a-z]{1,5})?"),
        "/[a-zA-Z0-9_/.-]{0,10}",
        any::<prop::sample::Index>(),
    );
    (
        1u16..,
        1u64..1_000_000,
        any::<bool>(),
        prop::option::of(0..=i64::MAX as u64),
        listener,
        prop::collection::vec(route, 1..4),
        upstreams,
    )
        .prop_map(
            |(admin, drain, access_log, seed, listener, routes, upstreams)| {
                let routes = routes
                    .into_iter()
                    .map(|(host, path_prefix, i)| GenRoute {
                        host,
                        path_prefix,
                        upstream: i.index(upstreams.len()),
                    })
                    .collect();
                GenConfig {
                    admin,
                    drain,
                    access_log,
                    seed,
                    listener,
                    routes,
                    upstreams,
                }
            },
        )
}

/// One bad value: the table (header and index among tables of that header), the key, the literal.
#[derive(Debug, Clone)]
enum Breakage {
    /// A value the checks reject (the literal is well-formed).
    Checked(&'static str, &'static str, String),
    /// A value of the wrong type or form, rejected while parsing.
    Malformed(&'static str, &'static str, String),
    /// An unknown key.
    Unknown(&'static str, String),
    /// A route naming no upstream, or a bad path prefix (route index chosen at random).
    Route(&'static str, String),
    /// A listener value the checks reject.
    Listener(&'static str, String),
    /// An admin listener value that is rejected.
    Admin(&'static str, String),
}

fn breakage() -> impl Strategy<Value = Breakage> {
    use Breakage::*;
    let bad_duration = prop_oneof![
        "[0-9]{1,5}".prop_map(|n| quoted(&n)),
        "[0-9]{1,5}(d|w|y|sec|MS)".prop_map(|n| quoted(&n)),
        "[0-9]{17,19}h".prop_map(|n| quoted(&n)),
        (366u64 * 24..100_000_000).prop_map(|h| quoted(&format!("{h}h"))),
        Just("\"\"".to_owned()),
        Just("5".to_owned()),
        Just("-1".to_owned()),
    ];
    prop_oneof![
        (100.001f64..1e9).prop_map(|p| Checked("retry", "budget_percent", format!("{p:?}"))),
        (-1e9f64..-0.001).prop_map(|p| Checked("retry", "budget_percent", format!("{p:?}"))),
        (1.001f64..1e6).prop_map(|r| Checked("breaker", "min_success_rate", format!("{r:?}"))),
        (-1e6f64..=0.0).prop_map(|r| Checked("breaker", "min_success_rate", format!("{r:?}"))),
        Just(Checked("breaker", "consecutive_failures", "0".into())),
        Just(Checked("limits", "max_requests", "0".into())),
        Just(Checked("limits", "max_pending", "0".into())),
        Just(Malformed("limits", "max_pending", "-5".into())),
        Just(Checked("breaker", "min_requests", "0".into())),
        Just(Checked("breaker", "window", ms(0))),
        Just(Checked("timeouts", "total", "\"0s\"".into())),
        Just(Checked("balancer", "decay", "\"0us\"".into())),
        (100_001u64..10_000_000).prop_map(|n| Checked("timeouts", "per_try", ms(n))),
        // Every generated base is at least 1 ms.
        Just(Checked("breaker", "backoff_max", ms(0))),
        Just(Checked("retry", "backoff_max", "\"0us\"".into())),
        bad_duration
            .clone()
            .prop_map(|d| Malformed("balancer", "max_wait", d)),
        bad_duration
            .clone()
            .prop_map(|d| Malformed("timeouts", "total", d)),
        bad_duration.prop_map(|d| Malformed("retry", "backoff_max", d)),
        "\"[a-z]{0,5}\"".prop_map(|s| Malformed("retry", "max_retries", s)),
        Just(Malformed("retry", "max_retries", "-1".into())),
        Just(Malformed("breaker", "enabled", "\"yes\"".into())),
        "[a-z]{1,3}".prop_map(|s| Malformed("balancer", "load", quoted(&s))),
        "[a-z]{1,3}".prop_map(|s| Malformed("", "http_version", quoted(&s))),
        "x[a-z_]{1,10}".prop_map(|k| Unknown("retry", k)),
        "x[a-z_]{1,10}".prop_map(|k| Unknown("breaker", k)),
        "x[a-z_]{1,10}".prop_map(|k| Unknown("", k)),
        "[A-Z]{1,8}".prop_map(|u| Route("upstream", quoted(&u))),
        "[a-z]{1,8}".prop_map(|p| Route("path_prefix", quoted(&p))),
        (0usize..8192).prop_map(|n| Listener("max_header_bytes", n.to_string())),
        Just(Listener("max_headers", "0".into())),
        Just(Listener("max_body_bytes", "0".into())),
        Just(Listener("max_connections", "0".into())),
        Just(Listener("h2_max_concurrent_streams", "0".into())),
        Just(Admin("max_connections", "0".into())),
        (10_001usize..1_000_000).prop_map(|n| Admin("max_connections", n.to_string())),
        Just(Admin("idle_timeout", ms(0))),
        "[0-9]{1,4}".prop_map(|n| Admin("header_read_timeout", quoted(&n))),
        Just(Listener("idle_timeout", ms(0))),
    ]
}

/// Applies `b` to the document; returns the field path the error must name.
fn apply(g: &GenConfig, doc: &mut Doc, b: &Breakage, pick: prop::sample::Index) -> String {
    let upstream = &g.upstreams[pick.index(g.upstreams.len())].name;
    let table = |t: &str| {
        if t.is_empty() {
            format!("upstreams.{upstream}")
        } else {
            format!("upstreams.{upstream}.{t}")
        }
    };
    match b {
        Breakage::Checked(t, key, lit) | Breakage::Malformed(t, key, lit) => {
            let header = table(t);
            doc.replace(&header, 0, key, lit.clone());
            doc.path(&header, 0, key)
        }
        Breakage::Unknown(t, key) => {
            let header = table(t);
            doc.replace(&header, 0, key, "1".into());
            doc.path(&header, 0, key)
        }
        Breakage::Route(key, lit) => {
            let n = pick.index(g.routes.len());
            doc.replace("routes", n, key, lit.clone());
            doc.path("routes", n, key)
        }
        Breakage::Listener(key, lit) => {
            doc.replace("listener", 0, key, lit.clone());
            doc.path("listener", 0, key)
        }
        Breakage::Admin(key, lit) => {
            doc.replace("admin_limits", 0, key, lit.clone());
            doc.path("admin_limits", 0, key)
        }
    }
}

/// Mutations of a valid document: whole bytes cut, inserted or swapped.
fn garble(text: &str, edits: &[(prop::sample::Index, u8, u8)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    for (at, op, byte) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at.index(bytes.len());
        match op % 4 {
            0 => {
                bytes.remove(i);
            }
            1 => bytes.insert(i, *byte),
            2 => bytes[i] = *byte,
            _ => bytes.truncate(i),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_c0f1),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        let _ = Config::from_toml(&text);
    }

    #[test]
    fn garbled_documents_never_panic(
        g in config(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<u8>()), 1..8),
    ) {
        let _ = Config::from_toml(&garble(&g.doc().render(), &edits));
    }

    #[test]
    fn arbitrary_durations_never_panic(s in "\\PC{0,24}", n in any::<u64>(), unit in "(us|ms|s|m|h)") {
        let _ = Dur::parse(&s);
        match Dur::parse(&format!("{n}{unit}")) {
            Ok(d) => prop_assert!(d.0 <= Dur::MAX),
            Err(e) => prop_assert!(e.contains("too large"), "{e}"),
        }
    }

    #[test]
    fn a_valid_config_round_trips(g in config()) {
        let text = g.doc().render();
        let c = Config::from_toml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        g.check(&c);
    }

    #[test]
    fn an_invalid_value_is_rejected_naming_its_field(
        g in config(),
        b in breakage(),
        pick in any::<prop::sample::Index>(),
    ) {
        let mut doc = g.doc();
        let path = apply(&g, &mut doc, &b, pick);
        let text = doc.render();
        match Config::from_toml(&text) {
            Ok(_) => prop_assert!(false, "accepted {b:?}:\n{text}"),
            Err(e) => prop_assert!(e.starts_with(&format!("{path}: ")), "{path} not named by: {e}\n{text}"),
        }
    }
}
