//! Every metric the library emits is described (issue 22): a Prometheus exporter's `/metrics` has a
//! `# HELP` line for each family, and the catalogue (`telemetry::METRICS`) matches the metric tables
//! in the module docs.
#![cfg(feature = "metrics")]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meshwork::BoxError;
use meshwork::admission::AdmissionConfig;
use meshwork::client::ClientBuilder;
use meshwork::discover::{Endpoint, Manual};
use meshwork::limit::{LimitConfig, LimitLayer};
use meshwork::telemetry::{METRICS, MetricKind};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tower::{Layer, Service, ServiceExt};

/// The module docs that list metric families in a table (`| `name` | type | ... |`).
const DOCS: &[(&str, &str)] = &[
    (
        "src/admission/mod.rs",
        include_str!("../src/admission/mod.rs"),
    ),
    ("src/balance/mod.rs", include_str!("../src/balance/mod.rs")),
    ("src/breaker/mod.rs", include_str!("../src/breaker/mod.rs")),
    (
        "src/discover/mod.rs",
        include_str!("../src/discover/mod.rs"),
    ),
    (
        "src/discover/etcd/mod.rs",
        include_str!("../src/discover/etcd/mod.rs"),
    ),
    (
        "src/discover/zookeeper/mod.rs",
        include_str!("../src/discover/zookeeper/mod.rs"),
    ),
    ("src/limit/mod.rs", include_str!("../src/limit/mod.rs")),
    ("src/retry/mod.rs", include_str!("../src/retry/mod.rs")),
    ("src/tls/mod.rs", include_str!("../src/tls/mod.rs")),
];

/// Prometheus `# TYPE` word of a kind.
fn type_word(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Counter => "counter",
        MetricKind::Gauge => "gauge",
        MetricKind::Histogram => "histogram",
        _ => unreachable!("a kind this test does not know"),
    }
}

/// `# HELP` texts and `# TYPE` words by family, from a rendered exposition.
struct Exposition {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
}

fn parse(text: &str) -> Exposition {
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_owned(), text.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    Exposition { help, types }
}

fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

/// The client stack of the crate, built while a real Prometheus recorder is installed, emits only
/// described families: every `# TYPE` has its `# HELP`, with the catalogue's text and type.
#[tokio::test(start_paused = true)]
async fn every_family_a_client_stack_emits_has_help() {
    let recorder = recorder();
    let handle = recorder.handle();
    // The test runs on one thread (current-thread runtime): the balancer's spawned discovery task
    // records through the same thread-local recorder.
    let _guard = metrics::set_default_local_recorder(&recorder);

    let discovery = Manual::with_endpoints([
        Endpoint::new("127.0.0.1:7001".parse().unwrap()),
        Endpoint::new("127.0.0.1:7002".parse().unwrap()),
    ]);
    // Every endpoint is behind a server-side concurrency limit, and always fails: the breakers
    // trip, the retry layer retries, and the balancer ends with no endpoint available.
    let limiter = LimitConfig::new().build().unwrap();
    let mut client = ClientBuilder::new()
        .admission(AdmissionConfig::new())
        .build(discovery.subscribe(), move |_: &Endpoint| {
            LimitLayer::new(limiter.clone()).layer(tower::service_fn(|_: u32| async {
                Err::<(), BoxError>("connection refused".into())
            }))
        })
        .unwrap();
    for i in 0..20 {
        let _ = client.ready().await.unwrap().call(i).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    discovery.fail("the source is down");
    tokio::time::sleep(Duration::from_millis(10)).await;

    let text = handle.render();
    let exposed = parse(&text);
    let catalogue: BTreeMap<&str, _> = METRICS.iter().map(|m| (m.name(), m)).collect();
    for (name, kind) in &exposed.types {
        let Some(help) = exposed.help.get(name) else {
            panic!("family {name} has no # HELP line:\n{text}")
        };
        let described = catalogue
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{name} is emitted but not in telemetry::METRICS"));
        assert_eq!(help, described.help(), "{name}");
        assert_eq!(kind, type_word(described.kind()), "{name}");
    }
    // The stack emitted the families of each layer it contains (so the loop above checked them).
    let emitted: BTreeSet<&str> = exposed.types.keys().map(String::as_str).collect();
    for prefix in [
        "meshwork_admission_",
        "meshwork_balance_",
        "meshwork_breaker_",
        "meshwork_discovery_",
        "meshwork_limit_",
        "meshwork_retry_",
    ] {
        let expected: BTreeSet<&str> = catalogue
            .keys()
            .copied()
            .filter(|n| n.starts_with(prefix))
            .collect();
        let missing: Vec<_> = expected.difference(&emitted).collect();
        assert!(missing.is_empty(), "not emitted: {missing:?}\n{text}");
    }
}

/// `telemetry::describe()` gives every catalogued family its help text and unit, whatever emits it
/// (etcd and TLS included, which need a server to run).
#[test]
fn describe_covers_the_whole_catalogue() {
    let recorder = recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        meshwork::telemetry::describe();
        for m in METRICS {
            match m.kind() {
                MetricKind::Counter => metrics::counter!(m.name()).increment(1),
                MetricKind::Gauge => metrics::gauge!(m.name()).set(1.0),
                MetricKind::Histogram => metrics::histogram!(m.name()).record(1.0),
                _ => unreachable!(),
            }
        }
    });
    let text = handle.render();
    let exposed = parse(&text);
    for m in METRICS {
        assert_eq!(
            exposed.help.get(m.name()).map(String::as_str),
            Some(m.help()),
            "{}:\n{text}",
            m.name()
        );
        assert_eq!(
            exposed.types.get(m.name()).map(String::as_str),
            Some(type_word(m.kind())),
            "{}",
            m.name()
        );
        assert!(!m.help().contains('\n'), "{}: one line", m.name());
        assert!(
            m.kind() != MetricKind::Counter || m.name().ends_with("_total"),
            "{}: a counter's name ends in _total",
            m.name()
        );
    }
    let names: BTreeSet<&str> = METRICS.iter().map(|m| m.name()).collect();
    assert_eq!(names.len(), METRICS.len(), "a name is catalogued twice");
}

/// The metric tables in the module docs name exactly the catalogued families, with their types.
#[test]
fn module_docs_list_the_catalogued_families() {
    let mut documented: BTreeMap<String, (String, &str)> = BTreeMap::new();
    for (file, text) in DOCS {
        for line in text.lines() {
            let Some(row) = line.strip_prefix("//! | `meshwork_") else {
                continue;
            };
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let name = format!("meshwork_{}", cells[0].trim_end_matches('`'));
            let previous = documented.insert(name.clone(), (cells[1].to_owned(), file));
            assert!(previous.is_none(), "{name} documented twice");
        }
    }
    for m in METRICS {
        let Some((kind, file)) = documented.get(m.name()) else {
            panic!("{} is emitted but in no module's metric table", m.name())
        };
        assert_eq!(kind, type_word(m.kind()), "{} in {file}", m.name());
    }
    let catalogued: BTreeSet<&str> = METRICS.iter().map(|m| m.name()).collect();
    for (name, (_, file)) in &documented {
        assert!(
            catalogued.contains(name.as_str()),
            "{file} documents {name}, which the library does not emit"
        );
    }
    assert_eq!(documented.len(), METRICS.len());
}
