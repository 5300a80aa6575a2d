//! The balancer beside tower's p2c + `PeakEwma`, on immediate endpoints: one request is
//! ready + call + response, on the current thread.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use criterion::Criterion;
use meshwork::available::Always;
use meshwork::balance::Balance;
use meshwork::discover::{Endpoint, Update};
use meshwork::rng::SeedSource;

use super::{Immediate, one_call};

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::from(0x7f00_0000 | (i >> 8)),
        10_000 + (i & 0xff) as u16,
    ))
}

/// meshwork's balancer (peak EWMA) over 10, 1,000 and 10,000 endpoints: the pick must stay flat.
pub fn meshwork_balance(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let mut group = c.benchmark_group("meshwork/balance");
    for n in [10u32, 1_000, 10_000] {
        let update = Update::Reset((0..n).map(|i| Endpoint::new(addr(i))).collect());
        let source = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(update)]);
        let mut svc = Balance::builder()
            .seed(SeedSource::from_seed(1))
            .build(source, |_: &Endpoint| Always::new(Immediate))
            .unwrap();
        rt.block_on(async {
            while svc.len() != n as usize {
                tokio::task::yield_now().await;
            }
        });
        group.bench_function(n.to_string(), |b| {
            b.iter(|| one_call(&mut svc, black_box(0u64)).unwrap())
        });
    }
    group.finish();
}

/// tower's `Balance` over `PeakEwma`-wrapped immediate services, from a `ServiceList`.
pub fn tower_p2c(c: &mut Criterion) {
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PeakEwmaDiscover};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _enter = rt.enter();
    let mut group = c.benchmark_group("tower/p2c_peak_ewma");
    for n in [10usize, 1_000] {
        let list = ServiceList::new::<u64>(vec![Immediate; n]);
        let discover = PeakEwmaDiscover::new::<u64>(
            list,
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        let mut svc: Balance<_, u64> = Balance::new(discover);
        group.bench_function(n.to_string(), |b| {
            b.iter(|| one_call(&mut svc, black_box(0u64)).unwrap())
        });
    }
    group.finish();
}
