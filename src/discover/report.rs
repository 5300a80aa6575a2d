//! Failure and update accounting shared by the built-in sources.

use std::error::Error;

use crate::telemetry::MetricLabels;

/// Logs and counts what a discovery source reports. Metric handles are created once, here.
#[derive(Clone)]
pub(crate) struct Reporter {
    source: &'static str,
    #[cfg(feature = "metrics")]
    errors: metrics::Counter,
    #[cfg(feature = "metrics")]
    updates: metrics::Counter,
    #[cfg(feature = "metrics")]
    endpoints: metrics::Gauge,
}

impl Reporter {
    pub(crate) fn new(source: &'static str, labels: &MetricLabels) -> Self {
        #[cfg(feature = "metrics")]
        {
            crate::telemetry::describe_prefix("meshwork_discovery_");
            let labels = labels.to_metrics(&[("source", source.to_owned())]);
            Self {
                source,
                errors: metrics::counter!("meshwork_discovery_errors_total", labels.iter()),
                updates: metrics::counter!("meshwork_discovery_updates_total", labels.iter()),
                endpoints: metrics::gauge!("meshwork_discovery_endpoints", labels.iter()),
            }
        }
        #[cfg(not(feature = "metrics"))]
        {
            let _ = labels;
            Self { source }
        }
    }

    /// A failure of the source: the consumer keeps its last good set.
    pub(crate) fn error(&self, err: &(dyn Error + 'static)) {
        tracing::warn!(
            source = self.source,
            error = %err,
            "discovery source failed; the last good endpoint set stays in place"
        );
        #[cfg(feature = "metrics")]
        self.errors.increment(1);
    }

    /// A single insert or removal.
    pub(crate) fn change(&self) {
        #[cfg(feature = "metrics")]
        self.updates.increment(1);
    }

    /// A new complete set of `len` endpoints.
    pub(crate) fn reset(&self, len: usize) {
        tracing::debug!(source = self.source, endpoints = len, "discovery update");
        #[cfg(feature = "metrics")]
        {
            self.updates.increment(1);
            self.endpoints.set(len as f64);
        }
    }
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("source", &self.source)
            .finish()
    }
}
