//! The HTTP client stack against real hyper servers on 127.0.0.1.
#![cfg(feature = "http")]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use meshwork::balance::{self, NoEndpoints};
use meshwork::client::{ClientBuilder, HttpClient, HttpClientBuilder};
use meshwork::discover::{Endpoint, Manual, Static};
use meshwork::rng::SeedSource;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
enum Behaviour {
    Ok,
    Unavailable,
    Slow(Duration),
    BlackHole,
}

/// A loopback backend that counts what it receives: requests per method, and POST bodies.
struct Backend {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    posts: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Backend {
    async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(Mutex::new(HashMap::new()));
        let (h, p) = (hits.clone(), posts.clone());
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the backend aborts them all.
            let mut conns = JoinSet::new();
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let (h, p) = (h.clone(), p.clone());
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (h, p) = (h.clone(), p.clone());
                        async move {
                            let post = req.method() == http::Method::POST;
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            h.fetch_add(1, Ordering::SeqCst);
                            if post {
                                let id =
                                    String::from_utf8_lossy(&body.unwrap_or_default()).into_owned();
                                *p.lock().unwrap().entry(id).or_insert(0) += 1;
                            }
                            let status = match behaviour {
                                Behaviour::Ok => StatusCode::OK,
                                Behaviour::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                                Behaviour::Slow(d) => {
                                    tokio::time::sleep(d).await;
                                    StatusCode::OK
                                }
                                Behaviour::BlackHole => {
                                    std::future::pending::<()>().await;
                                    unreachable!()
                                }
                            };
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(addr.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            posts,
            task,
        }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint::new(self.addr)
    }

    /// Closes the listener and every connection.
    fn kill(&self) {
        self.task.abort();
    }
}

fn client(endpoints: Vec<Endpoint>, stack: ClientBuilder) -> HttpClient {
    HttpClientBuilder::with_stack(stack.seed(SeedSource::from_seed(7)))
        .build(Static::new(endpoints))
        .unwrap()
}

async fn get_ok(client: &HttpClient) -> Result<StatusCode, meshwork::BoxError> {
    let res = client.get("http://backends/".parse().unwrap()).await?;
    let status = res.status();
    res.into_body().collect().await?;
    Ok(status)
}

async fn breaker_state_of(
    client: &HttpClient,
    addr: SocketAddr,
) -> Option<meshwork::breaker::State> {
    client
        .endpoints()
        .into_iter()
        .find(|e| e.endpoint.as_ref().map(|e| e.addr()) == Some(addr))
        .and_then(|e| e.breaker)
}

/// Three backends, one answering 503 to everything. With least-in-flight load (blind to failures),
/// the breaker is what takes the bad backend out; with the default failure-aware peak EWMA, the
/// balancer stops picking it even before the breaker would trip. Either way every GET succeeds
/// (the 503s are retried elsewhere) and the bad backend gets < 2% after warm-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_answering_503_is_broken_out_and_every_get_succeeds() {
    for load in ["least_in_flight", "peak_ewma"] {
        let (a, b, bad) = (
            Backend::start(Behaviour::Ok).await,
            Backend::start(Behaviour::Ok).await,
            Backend::start(Behaviour::Unavailable).await,
        );
        let balance = match load {
            "least_in_flight" => balance::Builder::new().load(balance::load::LeastInFlight),
            _ => balance::Builder::new(),
        };
        // Least-in-flight picks blindly, so a request may meet the bad backend on several tries
        // before its breaker opens (after 5 failures): 6 tries always end elsewhere.
        let retries = if load == "least_in_flight" { 5 } else { 2 };
        let client = client(
            vec![a.endpoint(), b.endpoint(), bad.endpoint()],
            ClientBuilder::new()
                .balance(balance)
                .retry(meshwork::retry::RetryPolicy::new().max_retries(retries)),
        );
        for _ in 0..100 {
            assert_eq!(get_ok(&client).await.unwrap(), StatusCode::OK);
        }
        if load == "least_in_flight" {
            assert!(
                matches!(
                    breaker_state_of(&client, bad.addr).await,
                    Some(meshwork::breaker::State::Open)
                ),
                "the 503 backend's breaker is open"
            );
        }
        let before = bad.hits();
        for _ in 0..500 {
            assert_eq!(get_ok(&client).await.unwrap(), StatusCode::OK);
        }
        let share = (bad.hits() - before) as f64 / 500.0;
        assert!(
            share < 0.02,
            "{load}: the 503 backend got {:.1}%",
            share * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_killed_mid_run_every_get_succeeds_and_no_post_is_duplicated() {
    let (a, b) = (
        Backend::start(Behaviour::Ok).await,
        Backend::start(Behaviour::Ok).await,
    );
    let client = client(vec![a.endpoint(), b.endpoint()], ClientBuilder::new());
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for worker in 0..4 {
        let (client, done) = (client.clone(), done.clone());
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..100 {
                if i % 2 == 0 {
                    get_ok(&client).await.expect("every GET succeeds");
                } else {
                    let id = format!("{worker}-{i}");
                    let ok = match client
                        .post("http://backends/".parse().unwrap(), id.clone())
                        .await
                    {
                        Ok(res) => res.into_body().collect().await.is_ok(),
                        Err(_) => false,
                    };
                    outcomes.push((id, ok));
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
            outcomes
        });
    }
    while done.load(Ordering::SeqCst) < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    b.kill();
    let mut outcomes = Vec::new();
    while let Some(r) = tasks.join_next().await {
        outcomes.extend(r.unwrap());
    }
    let mut received: HashMap<String, usize> = a.posts.lock().unwrap().clone();
    for (id, n) in b.posts.lock().unwrap().iter() {
        *received.entry(id.clone()).or_insert(0) += n;
    }
    for (id, ok) in &outcomes {
        let n = received.get(id).copied().unwrap_or(0);
        assert!(n <= 1, "POST {id} was received {n} times");
        if *ok {
            assert_eq!(n, 1, "POST {id} succeeded but was received {n} times");
        }
    }
    assert!(received.values().all(|n| *n == 1));
    assert_eq!(outcomes.len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_200ms_slower_gets_under_10_percent() {
    let (a, b, slow) = (
        Backend::start(Behaviour::Ok).await,
        Backend::start(Behaviour::Ok).await,
        Backend::start(Behaviour::Slow(Duration::from_millis(200))).await,
    );
    let client = client(
        vec![a.endpoint(), b.endpoint(), slow.endpoint()],
        ClientBuilder::new(),
    );
    // Warm-up: every endpoint has been measured.
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.spawn(async move {
            for _ in 0..10 {
                get_ok(&client).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let before = (a.hits() + b.hits(), slow.hits());
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let client = client.clone();
        tasks.spawn(async move {
            for _ in 0..50 {
                get_ok(&client).await.unwrap();
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let fast = (a.hits() + b.hits() - before.0) as f64;
    let slow_n = (slow.hits() - before.1) as f64;
    let share = slow_n / (fast + slow_n);
    assert!(share < 0.10, "the slow backend got {:.1}%", share * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_backend_costs_a_try_not_the_request() {
    let (a, b, hole) = (
        Backend::start(Behaviour::Ok).await,
        Backend::start(Behaviour::Ok).await,
        Backend::start(Behaviour::BlackHole).await,
    );
    let total = Duration::from_millis(1000);
    let stack = ClientBuilder::new()
        .total_timeout(total)
        .per_try_timeout(Duration::from_millis(150));
    let client = client(vec![a.endpoint(), b.endpoint(), hole.endpoint()], stack);
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut worst = Duration::ZERO;
            for _ in 0..25 {
                let start = Instant::now();
                let status = get_ok(&client)
                    .await
                    .expect("the request finishes elsewhere");
                assert_eq!(status, StatusCode::OK);
                worst = worst.max(start.elapsed());
            }
            worst
        });
    }
    let mut worst = Duration::ZERO;
    while let Some(w) = tasks.join_next().await {
        worst = worst.max(w.unwrap());
    }
    assert!(hole.hits() > 0, "the black hole was tried");
    // Scheduling slack on a shared 2-core machine.
    assert!(worst <= total + Duration::from_millis(100), "{worst:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_endpoints_gone_fails_with_no_endpoints_within_the_wait() {
    let a = Backend::start(Behaviour::Ok).await;
    let manual = Manual::with_endpoints([a.endpoint()]);
    let wait = Duration::from_millis(300);
    let client: HttpClient = HttpClientBuilder::with_stack(
        ClientBuilder::new()
            .balance(balance::Builder::new().max_wait(wait))
            .seed(SeedSource::from_seed(1)),
    )
    .build(manual.subscribe())
    .unwrap();
    assert_eq!(get_ok(&client).await.unwrap(), StatusCode::OK);

    // Discovery says the set is empty: NoEndpoints at once.
    manual.set([]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let err = get_ok(&client).await.unwrap_err();
    assert!(err.is::<NoEndpoints>(), "{err}");
    assert!(start.elapsed() < wait);

    // Every endpoint unavailable (breakers open): NoEndpoints within the configured wait.
    manual.set([a.endpoint()]);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(get_ok(&client).await.unwrap(), StatusCode::OK);
    a.kill();
    let mut saw = None;
    for _ in 0..20 {
        let start = Instant::now();
        match get_ok(&client).await {
            Err(e) if e.is::<NoEndpoints>() => {
                saw = Some(start.elapsed());
                break;
            }
            _ => {}
        }
    }
    let took = saw.expect("NoEndpoints once the breaker opened");
    assert!(
        took >= wait && took < wait + Duration::from_millis(200),
        "{took:?}"
    );
}
