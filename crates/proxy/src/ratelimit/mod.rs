//! Rate-limit state that outlives snapshots: local GCRA tables, sync-mode shares, in-flight
//! counters and the Redis connection. A reload resolves each route's limits against this
//! registry (keyed by route name and the full limit spec), so an unchanged limit keeps its
//! counters and a changed one starts fresh. The request path only touches the `Arc`s resolved
//! into [`crate::gateway::Active`]; the registry mutex is taken at reload time only.

pub mod breaker;
pub mod local;
pub mod redis;
pub mod sync;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gatehouse_core::snapshot::{LimitScope, RateLimitSpec};
use gatehouse_core::Snapshot;
use gatehouse_telemetry::metrics::DecisionLabels;
use gatehouse_telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;

use crate::policy::concurrency::{ConcurrencyLimit, ConsumerConcurrency};
use local::LocalLimiter;
use redis::RedisStore;
use sync::Leases;

/// One limit of one route, with its state.
pub struct LimitState {
    pub spec: RateLimitSpec,
    /// The limiter for `scope: local`; for `scope: shared`, the per-node limiter that takes
    /// over while Redis is unavailable (`on_error: allow`).
    pub local: LocalLimiter,
    /// `sync` mode shares (shared scope only).
    pub leases: Option<Leases>,
    /// `gatehouse:rl:{ROUTE|NAME|`: the Redis key up to the request's key value. The whole
    /// identity is the Redis Cluster hash tag, so keys spread over every slot.
    pub key_prefix: String,
    /// GCRA in microseconds for the Redis script.
    pub t_us: u64,
    pub cap_us: u64,
}

impl LimitState {
    fn new(route: &str, spec: &RateLimitSpec) -> LimitState {
        let local = LocalLimiter::new(spec);
        let t_us = (spec.emission_interval_ns() / 1000).max(1);
        let leases = match (spec.scope, spec.sync) {
            (LimitScope::Shared, Some(sync)) => {
                let per_sync = (u128::from(spec.requests) * sync.as_nanos()
                    / spec.per.as_nanos().max(1)) as u64;
                Some(Leases::new(sync, per_sync.min(spec.burst)))
            }
            _ => None,
        };
        LimitState {
            spec: spec.clone(),
            local,
            leases,
            key_prefix: format!("gatehouse:rl:{{{route}|{}|", spec.name),
            t_us,
            cap_us: t_us.saturating_mul(spec.burst),
        }
    }
}

/// Decision counters of one route, resolved once so the request path does not build labels.
pub struct Outcomes {
    pub allowed: Counter,
    pub limited: Counter,
    pub error_allowed: Counter,
    pub error_denied: Counter,
}

/// Everything the rate-limit phase needs for one route.
pub struct RouteLimits {
    pub limits: Vec<Arc<LimitState>>,
    pub concurrency: Option<Arc<ConcurrencyLimit>>,
    /// In-flight requests per authenticated consumer.
    pub consumer_concurrency: Option<Arc<ConsumerConcurrency>>,
    pub outcomes: Outcomes,
}

#[derive(Default)]
struct Registry {
    limits: HashMap<(String, RateLimitSpec), Arc<LimitState>>,
    concurrency: HashMap<String, Arc<ConcurrencyLimit>>,
    consumer_concurrency: HashMap<String, Arc<ConsumerConcurrency>>,
    redis: Option<Arc<RedisStore>>,
    /// `limits.auth_failures`, kept while its spec is unchanged.
    auth_failures: Option<(RateLimitSpec, Arc<LocalLimiter>)>,
}

pub struct RateLimiters {
    registry: Mutex<Registry>,
    metrics: Arc<Metrics>,
}

/// A snapshot's limits, resolved against the registry.
#[derive(Default)]
pub struct Resolved {
    /// By route index.
    pub routes: Vec<Option<Arc<RouteLimits>>>,
    pub redis: Option<Arc<RedisStore>>,
    /// Failed-authentication limiter by client IP (`limits.auth_failures`).
    pub auth_failures: Option<Arc<LocalLimiter>>,
}

impl RateLimiters {
    pub fn new(metrics: Arc<Metrics>) -> RateLimiters {
        RateLimiters {
            registry: Mutex::new(Registry::default()),
            metrics,
        }
    }

    /// Resolves `snap`'s limits, reusing the state of unchanged ones and dropping the rest.
    /// Must run inside a tokio runtime (the Redis connection manager spawns tasks).
    pub fn resolve(&self, snap: &Snapshot) -> Resolved {
        let mut reg = match self.registry.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let redis = match &snap.redis {
            None => None,
            Some(spec) => match &reg.redis {
                Some(store) if store.endpoint == spec.endpoint => Some(store.clone()),
                _ => match RedisStore::new(&spec.endpoint, spec.timeout, self.metrics.clone()) {
                    Ok(store) => Some(Arc::new(store)),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot set up redis; shared limits use on_error");
                        None
                    }
                },
            },
        };
        let mut limits = HashMap::new();
        let mut concurrency = HashMap::new();
        let mut consumer_concurrency = HashMap::new();
        let mut routes = Vec::with_capacity(snap.routes.len());
        for route in &snap.routes {
            if route.rate_limits.is_empty()
                && route.concurrency.is_none()
                && route.consumer_concurrency.is_none()
            {
                routes.push(None);
                continue;
            }
            let mut states = Vec::new();
            for spec in &route.rate_limits {
                let id = (route.name.clone(), spec.clone());
                let state = reg
                    .limits
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(LimitState::new(&route.name, spec)));
                limits.insert(id, state.clone());
                states.push(state);
            }
            let conc = route.concurrency.map(|max| {
                let c = reg
                    .concurrency
                    .get(&route.name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(ConcurrencyLimit::new(max as usize)));
                c.set_max(max as usize);
                concurrency.insert(route.name.clone(), c.clone());
                c
            });
            let consumer_conc = route.consumer_concurrency.map(|max| {
                let c = reg
                    .consumer_concurrency
                    .get(&route.name)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(ConsumerConcurrency::new(max as usize)));
                c.set_max(max as usize);
                consumer_concurrency.insert(route.name.clone(), c.clone());
                c
            });
            let counter = |outcome: &'static str| {
                self.metrics
                    .ratelimit_decisions
                    .get_or_create(&DecisionLabels {
                        route: route.name.clone(),
                        outcome,
                    })
                    .clone()
            };
            routes.push(Some(Arc::new(RouteLimits {
                limits: states,
                concurrency: conc,
                consumer_concurrency: consumer_conc,
                outcomes: Outcomes {
                    allowed: counter("allowed"),
                    limited: counter("limited"),
                    error_allowed: counter("error_allowed"),
                    error_denied: counter("error_denied"),
                },
            })));
        }
        reg.limits = limits;
        reg.concurrency = concurrency;
        reg.consumer_concurrency = consumer_concurrency;
        reg.redis = redis.clone();
        reg.auth_failures = match (&snap.limits.auth_failures, reg.auth_failures.take()) {
            (None, _) => None,
            (Some(spec), Some((old, l))) if old == *spec => Some((old, l)),
            (Some(spec), _) => Some((spec.clone(), Arc::new(LocalLimiter::new(spec)))),
        };
        let auth_failures = reg.auth_failures.as_ref().map(|(_, l)| l.clone());
        Resolved {
            routes,
            redis,
            auth_failures,
        }
    }
}
