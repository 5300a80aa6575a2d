//! meshwork discovery sources feeding tower's own P2C balancer through `TowerDiscover`.

use std::collections::HashMap;
use std::future::ready;
use std::net::SocketAddr;

use meshwork::BoxError;
use meshwork::discover::{Endpoint, Manual, Static, TowerDiscover};
use tower::balance::p2c::Balance;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{Service, ServiceExt};

fn ep(port: u16) -> Endpoint {
    Endpoint::new(([127, 0, 0, 1], port).into())
}

type Svc = PendingRequests<tower::util::BoxService<(), SocketAddr, BoxError>>;

/// A service per endpoint that answers with the endpoint's address.
fn make(ep: &Endpoint) -> Svc {
    let addr = ep.addr();
    let svc = tower::service_fn(move |()| ready(Ok::<_, BoxError>(addr)));
    PendingRequests::new(
        tower::util::BoxService::new(svc),
        CompleteOnResponse::default(),
    )
}

async fn spread<S>(balance: &mut S, n: usize) -> HashMap<SocketAddr, usize>
where
    S: Service<(), Response = SocketAddr, Error = BoxError>,
{
    let mut hits = HashMap::new();
    for _ in 0..n {
        let addr = balance.ready().await.unwrap().call(()).await.unwrap();
        *hits.entry(addr).or_default() += 1;
    }
    hits
}

#[tokio::test]
async fn manual_source_drives_tower_balance() {
    let handle = Manual::with_endpoints([ep(1), ep(2), ep(3)]);
    let mut balance = Balance::new(TowerDiscover::new(handle.subscribe(), make));

    let hits = spread(&mut balance, 300).await;
    let mut seen: Vec<_> = hits.keys().copied().collect();
    seen.sort();
    assert_eq!(seen, [ep(1).addr(), ep(2).addr(), ep(3).addr()]);

    // Remove one, add one: the next requests only reach the new set.
    handle.set([ep(2), ep(3), ep(4)]);
    let hits = spread(&mut balance, 300).await;
    assert!(!hits.contains_key(&ep(1).addr()), "{hits:?}");
    assert!(hits.contains_key(&ep(4).addr()), "{hits:?}");
    assert_eq!(balance.len(), 3);

    // A failure of the source is not an error for tower: the balancer keeps serving.
    handle.fail("registry unreachable");
    let hits = spread(&mut balance, 30).await;
    assert_eq!(hits.values().sum::<usize>(), 30);
    assert_eq!(balance.len(), 3);
}

#[tokio::test]
async fn static_source_through_tower_balance_oneshot() {
    let balance = Balance::new(TowerDiscover::new(Static::new([ep(9)]), make));
    assert_eq!(balance.oneshot(()).await.unwrap(), ep(9).addr());
}
