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
    pub method: String,
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
    pub reloads: Family<ResultLabels, Counter>,
    pub ratelimit_decisions: Family<DecisionLabels, Counter>,
    pub redis_duration: Histogram,
    pub redis_errors: Family<RedisErrorLabels, Counter>,
    /// 0 closed, 1 open, 2 half-open.
    pub redis_breaker_state: Gauge,
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
            reloads,
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
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
