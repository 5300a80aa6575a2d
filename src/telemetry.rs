//! Labels for the metrics that layers emit (feature `metrics`).
//!
//! Every layer that emits metrics takes a [`MetricLabels`] (for example `upstream="users"`), so that
//! one application can run many stacks and tell their metrics apart. Layers turn the labels into
//! metric *handles* once, when an endpoint or a layer is built, and never allocate per request.

use std::sync::Arc;

/// Static labels attached to every metric a layer emits.
///
/// ```
/// use meshwork::telemetry::MetricLabels;
///
/// let labels = MetricLabels::new().with("upstream", "users");
/// assert_eq!(labels.iter().collect::<Vec<_>>(), [("upstream", "users")]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricLabels(Arc<[(&'static str, String)]>);

impl MetricLabels {
    /// No labels.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a label.
    #[must_use]
    pub fn with(self, key: &'static str, value: impl Into<String>) -> Self {
        let value = value.into();
        let mut v: Vec<_> = self.0.iter().filter(|(k, _)| *k != key).cloned().collect();
        v.push((key, value));
        Self(v.into())
    }

    /// The labels, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// The labels as `metrics` labels, plus `extra` (for example the endpoint address).
    #[cfg(feature = "metrics")]
    #[must_use]
    pub fn to_metrics(&self, extra: &[(&'static str, String)]) -> Vec<metrics::Label> {
        self.0
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| metrics::Label::new(*k, v.clone()))
            .collect()
    }
}
