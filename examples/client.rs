//! The meshwork HTTP client against three loopback backends it starts itself: two healthy, one
//! answering 503 to everything. Every request succeeds; the broken backend is skipped.
//!
//! Run with `cargo run --example client`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshwork::BoxError;
use meshwork::client::{ClientBuilder, HttpClientBuilder};
use meshwork::discover::{Endpoint, Static};
use tokio::net::TcpListener;

/// Starts a backend that answers `status` with its own address as the body.
async fn backend(status: StatusCode) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let body = Full::new(Bytes::from(addr.to_string()));
                    Ok::<_, Infallible>(Response::builder().status(status).body(body).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let healthy = [
        backend(StatusCode::OK).await?,
        backend(StatusCode::OK).await?,
    ];
    let broken = backend(StatusCode::SERVICE_UNAVAILABLE).await?;
    println!(
        "backends: {} and {} (healthy), {broken} (503)",
        healthy[0], healthy[1]
    );

    let endpoints = Static::new(
        healthy
            .iter()
            .chain([&broken])
            .map(|addr| Endpoint::new(*addr)),
    );
    let client = HttpClientBuilder::with_stack(
        ClientBuilder::new()
            .total_timeout(Duration::from_secs(2))
            .per_try_timeout(Duration::from_millis(500)),
    )
    .build(endpoints)?;

    let (mut ok, mut failed) = (0, 0);
    let mut served_by = std::collections::BTreeMap::<String, u32>::new();
    for _ in 0..200 {
        match client.get("http://backends/".parse()?).await {
            Ok(res) if res.status().is_success() => {
                ok += 1;
                let body = res.into_body().collect().await?.to_bytes();
                *served_by
                    .entry(String::from_utf8_lossy(&body).into_owned())
                    .or_default() += 1;
            }
            _ => failed += 1,
        }
    }
    println!("200 GETs: {ok} succeeded, {failed} failed");
    for (addr, n) in &served_by {
        println!("  served by {addr}: {n}");
    }
    for e in client.endpoints() {
        println!(
            "  endpoint {}: breaker {:?}, latency estimate {:?}",
            e.endpoint.map(|e| e.to_string()).unwrap_or_default(),
            e.breaker,
            e.latency
        );
    }
    Ok(())
}
