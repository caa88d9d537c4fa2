//! Prometheus metric families. Labels are route/upstream names, methods and status classes
//! only (never raw paths or ids), so cardinality is bounded by the config.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    /// One of [`METHODS`] or `OTHER` (see [`method_label`]).
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub route: String,
    /// allowed | limited | error_allowed | error_denied
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedisErrorLabels {
    /// timeout | error | breaker_open
    pub kind: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram>,
    pub upstream_duration: Family<UpstreamLabels, Histogram>,
    pub upstream_errors: Family<UpstreamLabels, Counter>,
    pub in_flight: Gauge,
    pub connections: Gauge,
    /// Idle HTTP/1 connections waiting in a listener's park (included in `connections`).
    pub parked_connections: Gauge,
    pub reloads: Family<ResultLabels, Counter>,
    pub ratelimit_decisions: Family<DecisionLabels, Counter>,
    pub redis_duration: Histogram,
    pub redis_errors: Family<RedisErrorLabels, Counter>,
    /// 0 closed, 1 open, 2 half-open.
    pub redis_breaker_state: Gauge,
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
        let parked_connections = Gauge::default();
        registry.register(
            "connections_parked",
            "Idle HTTP/1 connections held without a task of their own (part of connections)",
            parked_connections.clone(),
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
        let ratelimit_decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "ratelimit_decisions",
            "Rate-limit decisions, by route and outcome (allowed | limited | error_allowed | error_denied)",
            ratelimit_decisions.clone(),
        );
        let redis_duration = Histogram::new(latency_buckets());
        registry.register(
            "redis_duration_seconds",
            "Time of one rate-limit call to Redis (successful calls)",
            redis_duration.clone(),
        );
        let redis_errors = Family::<RedisErrorLabels, Counter>::default();
        registry.register(
            "redis_errors",
            "Rate-limit calls to Redis that failed, by kind (timeout | error | breaker_open)",
            redis_errors.clone(),
        );
        let redis_breaker_state = Gauge::default();
        registry.register(
            "redis_breaker_state",
            "Circuit breaker around Redis: 0 closed, 1 open, 2 half-open",
            redis_breaker_state.clone(),
        );
        Metrics {
            registry,
            ratelimit_decisions,
            redis_duration,
            redis_errors,
            redis_breaker_state,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            in_flight,
            connections,
            parked_connections,
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

pub fn status_class(status: u16) -> &'static str {
    STATUS_CLASSES[status_class_index(status)]
}

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// The methods that get their own `method` label value. Any other method (extension methods
/// are legal HTTP) is counted as `OTHER`: a client must not be able to mint new series.
pub const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len())
}

/// The `method` label value for a request method.
pub fn method_label(method: &str) -> &'static str {
    METHODS
        .get(method_index(method))
        .copied()
        .unwrap_or("OTHER")
}

const REQUEST_CELLS: usize = (METHODS.len() + 1) * STATUS_CLASSES.len();

/// One route's metric handles, resolved once per snapshot instead of per request: a
/// `Family::get_or_create` builds an owned label set (two `String`s), SipHashes it and takes
/// the family's lock, on every request. Handles share their state with the family, so
/// `/metrics` shows the same series. Cells are created on a route's first request, so a
/// 10,000-route snapshot costs a few bytes per idle route and no empty series.
pub struct RouteMetrics {
    route: String,
    cells: OnceLock<Box<RouteCells>>,
}

struct RouteCells {
    duration: Histogram,
    requests: [OnceLock<Counter>; REQUEST_CELLS],
}

impl RouteMetrics {
    /// Handles for the route named `route` (`""` for requests that matched no route).
    pub fn new(route: &str) -> RouteMetrics {
        RouteMetrics {
            route: route.to_string(),
            cells: OnceLock::new(),
        }
    }

    /// Counts one answered request and observes its duration.
    pub fn record(&self, metrics: &Metrics, method: &str, status: u16, seconds: f64) {
        let cells = self.cells.get_or_init(|| {
            Box::new(RouteCells {
                duration: metrics
                    .request_duration
                    .get_or_create(&RouteLabels {
                        route: self.route.clone(),
                    })
                    .clone(),
                requests: std::array::from_fn(|_| OnceLock::new()),
            })
        });
        let m = method_index(method);
        let c = status_class_index(status);
        cells.requests[m * STATUS_CLASSES.len() + c]
            .get_or_init(|| {
                metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        route: self.route.clone(),
                        method: METHODS.get(m).copied().unwrap_or("OTHER"),
                        status_class: STATUS_CLASSES[c],
                    })
                    .clone()
            })
            .inc();
        cells.duration.observe(seconds);
    }
}

/// One upstream's latency histogram, resolved on first use (see [`RouteMetrics`]).
pub struct UpstreamMetrics {
    upstream: String,
    duration: OnceLock<Histogram>,
}

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            upstream: upstream.to_string(),
            duration: OnceLock::new(),
        }
    }

    pub fn observe(&self, metrics: &Metrics, seconds: f64) {
        self.duration
            .get_or_init(|| {
                metrics
                    .upstream_duration
                    .get_or_create(&UpstreamLabels {
                        upstream: self.upstream.clone(),
                    })
                    .clone()
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_feed_the_registry() {
        let m = Metrics::new();
        let r = RouteMetrics::new("api");
        r.record(&m, "GET", 200, 0.001);
        r.record(&m, "GET", 204, 0.001);
        r.record(&m, "BREW", 503, 0.001);
        UpstreamMetrics::new("app").observe(&m, 0.002);
        let text = m.encode();
        assert!(
            text.contains(
                r#"gatehouse_requests_total{route="api",method="GET",status_class="2xx"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gatehouse_requests_total{route="api",method="OTHER",status_class="5xx"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"gatehouse_request_duration_seconds_count{route="api"} 3"#));
        assert!(text.contains(r#"gatehouse_upstream_duration_seconds_count{upstream="app"} 1"#));
    }
}
