//! meshwork's per-try `Timeout` around an immediate service: one ready + call + response, which
//! arms (and drops) one `tokio::time::Sleep`.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use meshwork::timeout::TimeoutLayer;
use tower::Layer;

use super::{Immediate, one_call};

/// `meshwork/timeout`.
pub fn meshwork_timeout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let layer = TimeoutLayer::new(Duration::from_secs(1)).expect("valid timeout");
    let mut svc = layer.layer(Immediate);
    c.bench_function("meshwork/timeout", |b| {
        b.iter(|| one_call(&mut svc, black_box(0u64)).unwrap())
    });
}
