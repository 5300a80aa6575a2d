use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{MeasureFuture, Tracker};
use super::load::{EndpointLoad, Load};
use crate::BoxError;
use crate::classify::{Classify, DefaultClassify};

/// Measures a service's load (latency and requests in flight, failures penalised), for a balancer
/// or a dashboard.
///
/// The [`Balance`](super::Balance) measures its endpoints itself; this layer exposes the same
/// measurement for use with plain tower (for example under tower's own balancer, or to export an
/// endpoint's load).
///
/// ```
/// use meshwork::balance::{MeasureLayer, load::Load};
/// use tower::{Layer, Service, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), meshwork::BoxError> {
/// let svc = tower::service_fn(|x: u32| async move { Ok::<_, meshwork::BoxError>(x) });
/// let mut svc = MeasureLayer::new(Load::default()).layer(svc);
/// let load = svc.load().clone();
/// assert_eq!(svc.ready().await?.call(7).await?, 7);
/// assert_eq!(load.in_flight(), 0);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MeasureLayer<C = DefaultClassify> {
    load: Load,
    classify: C,
}

impl MeasureLayer {
    /// Measures with `load`, classifying outcomes with [`DefaultClassify`].
    #[must_use]
    pub const fn new(load: Load) -> Self {
        Self {
            load,
            classify: DefaultClassify,
        }
    }
}

impl<C> MeasureLayer<C> {
    /// Classifies outcomes with `classify` (failures are penalised).
    pub fn with_classify<C2>(self, classify: C2) -> MeasureLayer<C2> {
        MeasureLayer {
            load: self.load,
            classify,
        }
    }
}

impl<S, C: Clone> Layer<S> for MeasureLayer<C> {
    type Service = Measure<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Measure {
            inner,
            load: Arc::new(EndpointLoad::new(self.load)),
            classify: self.classify.clone(),
        }
    }
}

/// A service whose load is measured: see [`MeasureLayer`]. Clones share one [`EndpointLoad`].
#[derive(Clone, Debug)]
pub struct Measure<S, C = DefaultClassify> {
    inner: S,
    load: Arc<EndpointLoad>,
    classify: C,
}

impl<S, C> Measure<S, C> {
    /// The measured load.
    pub fn load(&self) -> &Arc<EndpointLoad> {
        &self.load
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped service, unwrapped.
    ///
    /// ```
    /// use meshwork::balance::MeasureLayer;
    /// use meshwork::balance::load::Load;
    /// use tower::Layer;
    ///
    /// let mut svc = MeasureLayer::new(Load::default()).layer(vec![1, 2]);
    /// assert_eq!(svc.get_ref().len(), 2);
    /// svc.get_mut().push(3);
    /// assert_eq!(svc.into_inner(), [1, 2, 3]);
    /// ```
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, C, Req> Service<Req> for Measure<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = MeasureFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let start = self.load.uses_clock().then(Instant::now);
        let tracker = Tracker::begin(self.load.clone(), start);
        MeasureFuture::new(self.inner.call(req), tracker, self.classify.clone())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::ServiceExt;

    use super::*;
    use crate::BoxError;

    #[tokio::test(start_paused = true)]
    async fn measures_latency_in_flight_and_cancellation() {
        let svc = tower::service_fn(|ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if ms == 0 {
                Err::<u64, BoxError>("fast failure".into())
            } else {
                Ok(ms)
            }
        });
        let mut svc = MeasureLayer::new(Load::default()).layer(svc);
        let load = svc.load().clone();
        svc.ready().await.unwrap().call(300).await.unwrap();
        let est = load.latency_estimate(Instant::now()).unwrap();
        assert_eq!(est, Duration::from_millis(300));

        // A fast failure counts as the penalty (1 s), not as 0 ms.
        svc.ready().await.unwrap().call(0).await.unwrap_err();
        assert_eq!(
            load.latency_estimate(Instant::now()).unwrap(),
            Duration::from_secs(1)
        );

        // A cancelled request leaves the in-flight count.
        let fut = svc.ready().await.unwrap().call(5_000);
        assert_eq!(load.in_flight(), 1);
        drop(fut);
        assert_eq!(load.in_flight(), 0);
    }
}
