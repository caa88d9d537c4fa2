//! Prometheus metric families. Labels are route/upstream names, methods and status classes
//! only (never raw paths or ids), so cardinality is bounded by the config.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: &'static str,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub upstream: String,
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub upstream_duration: Family<UpstreamLabels, Histogram>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub in_flight: Gauge,
    pub connections: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub target_healthy: Family<TargetLabels, Gauge>,
    pub ejections: Family<UpstreamLabels, Counter>,
    pub retries: Family<UpstreamLabels, Counter>,
    pub retries_budget_exhausted: Family<UpstreamLabels, Counter>,
    pub breaker_rejections: Family<UpstreamLabels, Counter>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method and status class",
            requests.clone(),
        );
        let request_duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "request_duration_seconds",
            "Time from request received to response complete, by route",
            request_duration.clone(),
        );
        let upstream_duration = Family::<UpstreamLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "upstream_duration_seconds",
            "Time from upstream request sent to response headers received, by upstream",
            upstream_duration.clone(),
        );
        let upstream_errors = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream calls that failed (connect, reset, timeout, bad response)",
            upstream_errors.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Requests being served",
            in_flight.clone(),
        );
        let connections = Gauge::default();
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by result (success | failure)",
            reloads.clone(),
        );
        let target_healthy = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "upstream_target_healthy",
            "1 when the target is in rotation (active check passing, not ejected), else 0",
            target_healthy.clone(),
        );
        let ejections = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_ejections",
            "Targets ejected by passive outlier detection, by upstream",
            ejections.clone(),
        );
        let retries = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_retries",
            "Upstream calls retried, by upstream",
            retries.clone(),
        );
        let retries_budget_exhausted = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_retry_budget_exhausted",
            "Retries refused because the retry budget was used up, by upstream",
            retries_budget_exhausted.clone(),
        );
        let breaker_rejections = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "upstream_breaker_rejections",
            "Requests refused with 503 by the circuit breaker (slots and queue full), by upstream",
            breaker_rejections.clone(),
        );
        // Both series exist from the start, so a failure rate can be computed before the
        // first failure.
        for result in ["success", "failure"] {
            let _ = reloads.get_or_create(&ResultLabels { result });
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            connections,
            reloads,
            target_healthy,
            ejections,
            retries,
            retries_budget_exhausted,
            breaker_rejections,
        }
    }

    pub fn reload_result(&self, ok: bool) {
        self.reloads
            .get_or_create(&ResultLabels {
                result: if ok { "success" } else { "failure" },
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Methods outside the standard set are counted as `OTHER`, so a client cannot grow the
/// label set without bound by inventing methods.
pub fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::HEAD => "HEAD",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::TRACE => "TRACE",
        http::Method::CONNECT => "CONNECT",
        _ => "OTHER",
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
