use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use pin_project_lite::pin_project;

use super::Update;
use super::report::Reporter;
use crate::BoxError;
use crate::telemetry::MetricLabels;

pin_project! {
    /// Gives any discovery source the failure accounting of meshwork's own sources: every `Err`
    /// item is logged at warn (with `source = name`) and counted in
    /// `meshwork_discovery_errors_total{source = name}`, and every update is counted (see the
    /// [module docs](super) for the metrics). Items pass through unchanged, errors boxed.
    ///
    /// Use it for sources written elsewhere (a registry client, a stream adapted from another
    /// library); the built-in sources already account for themselves.
    ///
    /// ```
    /// use futures_util::{stream, StreamExt};
    /// use meshwork::discover::{Instrumented, Update};
    /// use meshwork::telemetry::MetricLabels;
    ///
    /// # tokio_test::block_on(async {
    /// let items = vec![Ok(Update::Reset(vec![])), Err(std::io::Error::other("registry down"))];
    /// let mut source = Instrumented::new(stream::iter(items), "registry", &MetricLabels::new());
    /// assert!(source.next().await.unwrap().is_ok());
    /// assert!(source.next().await.unwrap().is_err()); // logged and counted on the way
    /// # });
    /// ```
    pub struct Instrumented<D> {
        #[pin]
        source: D,
        reporter: Reporter,
    }
}

impl<D> Instrumented<D> {
    /// Wraps `source`, reporting under the `source` label `name` plus `labels`.
    pub fn new(source: D, name: &'static str, labels: &MetricLabels) -> Self {
        Self {
            source,
            reporter: Reporter::new(name, labels),
        }
    }

    /// The wrapped source.
    pub fn get_ref(&self) -> &D {
        &self.source
    }

    /// The wrapped source, mutably.
    pub fn get_mut(&mut self) -> &mut D {
        &mut self.source
    }

    /// The wrapped source.
    pub fn into_inner(self) -> D {
        self.source
    }
}

impl<D, E> Stream for Instrumented<D>
where
    D: Stream<Item = Result<Update, E>>,
    E: Into<BoxError>,
{
    type Item = Result<Update, BoxError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.project();
        let item = ready!(this.source.poll_next(cx)).map(|item| match item {
            Ok(update) => {
                match &update {
                    Update::Reset(set) => this.reporter.reset(set.len()),
                    Update::Insert(_) | Update::Remove(_) => this.reporter.change(),
                }
                Ok(update)
            }
            Err(err) => {
                let err = err.into();
                this.reporter.error(&*err);
                Err(err)
            }
        });
        Poll::Ready(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.source.size_hint()
    }
}

impl<D: fmt::Debug> fmt::Debug for Instrumented<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instrumented")
            .field("source", &self.source)
            .field("reporter", &self.reporter)
            .finish()
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;
    use crate::discover::Endpoint;
    use futures_util::{StreamExt, stream};
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[tokio::test]
    async fn counts_errors_and_updates_with_labels() {
        let recorder = DebuggingRecorder::new();
        let _guard = metrics::set_default_local_recorder(&recorder);
        let ep = Endpoint::new(([127, 0, 0, 1], 1).into());
        let items: Vec<Result<Update, std::io::Error>> = vec![
            Ok(Update::Reset(vec![ep.clone()])),
            Err(std::io::Error::other("down")),
            Ok(Update::Remove(ep.addr())),
            Err(std::io::Error::other("still down")),
        ];
        let labels = MetricLabels::new().with("upstream", "users");
        let source = Instrumented::new(stream::iter(items), "registry", &labels);
        let out: Vec<_> = source.collect().await;
        assert_eq!(out.iter().filter(|i| i.is_err()).count(), 2);
        assert_eq!(out[1].as_ref().unwrap_err().to_string(), "down");

        let mut seen = Vec::new();
        for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
            let labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            assert_eq!(labels, ["upstream=users", "source=registry"]);
            seen.push((key.key().name().to_owned(), value));
        }
        let get = |name: &str| seen.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        assert_eq!(
            get("meshwork_discovery_errors_total"),
            Some(&DebugValue::Counter(2))
        );
        assert_eq!(
            get("meshwork_discovery_updates_total"),
            Some(&DebugValue::Counter(2))
        );
    }
}
