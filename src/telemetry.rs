//! Labels and descriptions of the metrics that layers emit (feature `metrics`).
//!
//! Every layer that emits metrics takes a [`MetricLabels`] (for example `upstream="users"`), so that
//! one application can run many stacks and tell their metrics apart. Layers turn the labels into
//! metric *handles* once, when an endpoint or a layer is built, and never allocate per request.
//!
//! Every metric the library emits is listed once, in [`METRICS`], with its type, unit and a
//! one-line help text. A layer describes its own metrics to the installed recorder (the `metrics`
//! facade's `describe_*!`) when it creates its handles, so a Prometheus exporter's `/metrics` has a
//! `# HELP` line for each family. An application that installs its recorder after building its
//! stacks calls [`describe`] once the recorder is in place:
//!
//! ```
//! # #[cfg(feature = "metrics")] {
//! // After `metrics::set_global_recorder(..)` (or an exporter's `install`):
//! meshwork::telemetry::describe();
//!
//! let breaker = meshwork::telemetry::METRICS
//!     .iter()
//!     .find(|m| m.name() == "meshwork_breaker_trips_total")
//!     .unwrap();
//! assert_eq!(breaker.kind(), meshwork::telemetry::MetricKind::Counter);
//! # }
//! ```

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

/// The type of a metric.
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricKind {
    /// A monotonic count (`counter!`); its name ends in `_total`.
    Counter,
    /// A value that goes up and down (`gauge!`).
    Gauge,
    /// A distribution of observations (`histogram!`).
    Histogram,
}

/// One metric the library emits: its name, type, unit and help text.
///
/// ```
/// use meshwork::telemetry::{METRICS, MetricKind};
///
/// let rejected = METRICS.iter().find(|m| m.name() == "meshwork_limit_rejected_total").unwrap();
/// assert_eq!(rejected.kind(), MetricKind::Counter);
/// assert_eq!(rejected.unit(), Some(metrics::Unit::Count));
/// assert!(!rejected.help().is_empty());
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricDescription {
    name: &'static str,
    kind: MetricKind,
    unit: Option<metrics::Unit>,
    help: &'static str,
}

#[cfg(feature = "metrics")]
impl MetricDescription {
    const fn new(
        name: &'static str,
        kind: MetricKind,
        unit: Option<metrics::Unit>,
        help: &'static str,
    ) -> Self {
        Self {
            name,
            kind,
            unit,
            help,
        }
    }

    /// The metric family's name, for example `meshwork_breaker_trips_total`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Counter, gauge or histogram.
    pub fn kind(&self) -> MetricKind {
        self.kind
    }

    /// The unit of its values, where one applies (`None` for an enumeration such as the breaker
    /// state).
    pub fn unit(&self) -> Option<metrics::Unit> {
        self.unit
    }

    /// The one-line help text (Prometheus' `# HELP`).
    pub fn help(&self) -> &'static str {
        self.help
    }

    /// Describes this metric to the current recorder (`describe_counter!` and friends).
    pub fn describe(&self) {
        let (name, help) = (self.name, self.help);
        match (self.kind, self.unit) {
            (MetricKind::Counter, Some(unit)) => metrics::describe_counter!(name, unit, help),
            (MetricKind::Counter, None) => metrics::describe_counter!(name, help),
            (MetricKind::Gauge, Some(unit)) => metrics::describe_gauge!(name, unit, help),
            (MetricKind::Gauge, None) => metrics::describe_gauge!(name, help),
            (MetricKind::Histogram, Some(unit)) => metrics::describe_histogram!(name, unit, help),
            (MetricKind::Histogram, None) => metrics::describe_histogram!(name, help),
        }
    }
}

#[cfg(feature = "metrics")]
const fn counter(name: &'static str, help: &'static str) -> MetricDescription {
    MetricDescription::new(name, MetricKind::Counter, Some(metrics::Unit::Count), help)
}

#[cfg(feature = "metrics")]
const fn gauge(name: &'static str, help: &'static str) -> MetricDescription {
    MetricDescription::new(name, MetricKind::Gauge, Some(metrics::Unit::Count), help)
}

/// Every metric the library emits, grouped by layer (the module docs of each layer explain the
/// labels).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub const METRICS: &[MetricDescription] = &[
    // admission
    counter(
        "meshwork_admission_rejected_total",
        "Requests rejected locally by client-side admission control.",
    ),
    // balance
    gauge(
        "meshwork_balance_endpoints",
        "Endpoints in the balancer's current set.",
    ),
    counter(
        "meshwork_balance_no_endpoints_total",
        "Requests failed because no endpoint was available (NoEndpoints).",
    ),
    counter(
        "meshwork_balance_discovery_errors_total",
        "Errors reported to the balancer by its discovery source (the last good set stays).",
    ),
    counter(
        "meshwork_balance_ready_errors_total",
        "Endpoints skipped by the balancer because their poll_ready failed.",
    ),
    // breaker
    counter(
        "meshwork_breaker_trips_total",
        "Times a circuit breaker opened, by reason.",
    ),
    counter(
        "meshwork_breaker_probes_total",
        "Half-open probes that completed, by outcome.",
    ),
    counter(
        "meshwork_breaker_rejected_total",
        "Calls refused by an open circuit breaker (fail-fast mode).",
    ),
    MetricDescription::new(
        "meshwork_breaker_state",
        MetricKind::Gauge,
        None,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 forced closed.",
    ),
    gauge(
        "meshwork_breaker_open",
        "Circuit breakers (of these labels) that are not closed.",
    ),
    // discover
    counter(
        "meshwork_discovery_errors_total",
        "Failures reported by a discovery source (the last good set stays).",
    ),
    counter(
        "meshwork_discovery_updates_total",
        "Updates published by a discovery source.",
    ),
    gauge(
        "meshwork_discovery_endpoints",
        "Endpoints in the last complete set a discovery source published.",
    ),
    // discover::etcd
    counter(
        "meshwork_etcd_reloads_total",
        "Full etcd range reads that produced a reset, by reason.",
    ),
    counter(
        "meshwork_etcd_errors_total",
        "etcd discovery failures (the last good set stays).",
    ),
    counter(
        "meshwork_etcd_malformed_values_total",
        "etcd endpoint values skipped as malformed.",
    ),
    gauge(
        "meshwork_etcd_endpoints",
        "Endpoints in the current etcd discovery set.",
    ),
    // discover::zookeeper
    counter(
        "meshwork_zookeeper_reloads_total",
        "Full reads of a ZooKeeper path, by reason (initial, session, reconnect).",
    ),
    counter(
        "meshwork_zookeeper_errors_total",
        "ZooKeeper discovery failures (the last good set stays).",
    ),
    counter(
        "meshwork_zookeeper_malformed_children_total",
        "ZooKeeper children skipped as malformed.",
    ),
    gauge(
        "meshwork_zookeeper_endpoints",
        "Endpoints in the current ZooKeeper discovery set.",
    ),
    // limit
    gauge(
        "meshwork_limit_limit",
        "The adaptive concurrency limit (requests).",
    ),
    gauge(
        "meshwork_limit_in_flight",
        "Requests admitted by the concurrency limit and not yet answered, at the last update.",
    ),
    counter(
        "meshwork_limit_rejected_total",
        "Requests rejected (nacked) by the concurrency limit.",
    ),
    // retry
    counter(
        "meshwork_retry_retries_total",
        "Retries sent after a failure that may have reached the server.",
    ),
    counter(
        "meshwork_retry_requeues_total",
        "Requeues sent after a failure that proves the request was never processed.",
    ),
    counter(
        "meshwork_retry_budget_exhausted_total",
        "Retries or requeues refused because the retry budget was empty.",
    ),
    counter(
        "meshwork_retry_body_too_large_total",
        "Retries refused because the request body exceeded the replay limit.",
    ),
    // tls
    counter(
        "meshwork_tls_handshake_failures_total",
        "TLS handshakes that failed, by side (server, client) and reason.",
    ),
    counter(
        "meshwork_tls_reloads_total",
        "New certificate and key pairs taken into use after their files changed.",
    ),
    counter(
        "meshwork_tls_reload_errors_total",
        "New certificate and key pairs refused (the last good pair stays), by reason.",
    ),
];

/// Describes every metric in [`METRICS`] to the current recorder, so that an exporter can print
/// their help texts and units (Prometheus' `# HELP`).
///
/// Layers describe their own metrics when they create their handles; call this after installing a
/// recorder when stacks were built before it, or to describe everything up front. Describing
/// twice is harmless.
///
/// ```
/// let recorder = metrics_util::debugging::DebuggingRecorder::new();
/// metrics::with_local_recorder(&recorder, meshwork::telemetry::describe);
/// ```
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub fn describe() {
    METRICS.iter().for_each(MetricDescription::describe);
}

/// Describes the metrics whose names start with `prefix` (one layer's family, for example
/// `meshwork_breaker_`). Layers call it when they create their metric handles.
#[cfg(feature = "metrics")]
pub(crate) fn describe_prefix(prefix: &str) {
    METRICS
        .iter()
        .filter(|m| m.name.starts_with(prefix))
        .for_each(MetricDescription::describe);
}
