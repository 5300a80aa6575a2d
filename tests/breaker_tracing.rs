//! The breaker's `tracing` events: one per state transition, with its reason.
//!
//! Its own test binary, with the subscriber installed as the *global* default once, before any
//! event: a thread-local subscriber (`with_default`) races the callsite interest cache when other
//! tests on other threads register the breaker's callsites first (issue 12 item 14: 1 event seen
//! instead of 7 in about 3 runs of 5). With one global subscriber and one test, every callsite's
//! interest is computed with the subscriber in place.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork::BoxError;
use meshwork::backoff::Backoff;
use meshwork::breaker::{Breaker, BreakerConfig, Mode};
use meshwork::classify::Classification;
use meshwork::rng::SeedSource;
use tower::{Service, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

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

type Classifier = fn(Result<&bool, &BoxError>) -> Classification;

fn classify(out: Result<&bool, &BoxError>) -> Classification {
    match out {
        Ok(_) => Classification::success(),
        Err(_) => Classification::retryable(),
    }
}

/// Succeeds when asked `true`, fails when asked `false`.
fn scripted() -> impl Service<
    bool,
    Response = bool,
    Error = BoxError,
    Future = std::future::Ready<Result<bool, BoxError>>,
> + Clone {
    tower::service_fn(|ok: bool| {
        std::future::ready(if ok { Ok(true) } else { Err("failed".into()) })
    })
}

async fn call<S>(svc: &mut S, ok: bool)
where
    S: Service<bool>,
{
    if let Ok(svc) = svc.ready().await {
        let _ = svc.call(ok).await;
    }
}

#[test]
fn regression_12_14_every_transition_is_traced_with_its_reason() {
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(async {
            let config = BreakerConfig::builder()
                .consecutive_failures(2)
                .backoff(Backoff::constant(SEC).unwrap())
                .mode(Mode::FailFast)
                .seed(SeedSource::from_seed(1))
                .build()
                .unwrap();
            let mut svc = Breaker::with_classify(scripted(), config, classify as Classifier);
            for _ in 0..2 {
                call(&mut svc, false).await;
            }
            for _ in 0..50 {
                call(&mut svc, true).await; // rejected: no event per request
            }
            tokio::time::advance(SEC).await;
            call(&mut svc, false).await;
            tokio::time::advance(SEC).await;
            call(&mut svc, true).await;
            svc.handle().force_open();
            svc.handle().clear_force();
        });

    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<_> = out.lines().collect();
    let expected = [
        ("WARN", "2 consecutive failures"),
        ("INFO", "open backoff elapsed, probing"),
        ("WARN", "half-open probe failed"),
        ("INFO", "open backoff elapsed, probing"),
        ("INFO", "half-open probes succeeded"),
        ("WARN", "forced by the application"),
        ("INFO", "manual switch cleared"),
    ];
    assert_eq!(
        lines.len(),
        expected.len(),
        "one event per transition:\n{out}"
    );
    for (line, (level, reason)) in lines.iter().zip(expected) {
        assert!(line.contains(level) && line.contains(reason), "{line}");
    }
}
