//! The running gateway: the active snapshot, its listeners, shared clients and telemetry.
//! `apply` swaps in a new snapshot atomically; requests already running keep the `Arc` of
//! the snapshot they started with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_core::Snapshot;
use gatehouse_telemetry::metrics::{RouteMetrics, UpstreamMetrics};
use gatehouse_telemetry::{AccessLog, Metrics};
use tokio::sync::Semaphore;

use crate::ratelimit::redis::RedisStore;
use crate::ratelimit::{RateLimiters, RouteLimits};
use crate::server::conn::Stopper;
use crate::server::{self, ListenerHandle};
use crate::upstream::dns::{self, DnsCache, Lookup};
use crate::upstream::health::{CheckSpec, HealthChecks};
use crate::upstream::mirror::Mirrors;
use crate::upstream::registry::{Registry, TargetState, UpstreamState};
use crate::upstream::{ClientCache, Connector, HttpClient};

/// A snapshot plus the runtime objects resolved for it: per upstream index its client and
/// long-lived state, per route index its metrics handles and rate-limit state.
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub upstreams: Vec<ResolvedUpstream>,
    pub route_metrics: Vec<RouteMetrics>,
    /// Requests that matched no route (`route=""`).
    pub no_route_metrics: RouteMetrics,
    pub upstream_metrics: Vec<UpstreamMetrics>,
    /// Rate-limit state per route index, resolved against `Shared::ratelimiters`.
    pub limits: Vec<Option<Arc<RouteLimits>>>,
    pub redis: Option<Arc<RedisStore>>,
    /// Per auth provider: its JWKS or introspection cache (kept across reloads).
    pub auth: Vec<crate::policy::auth::ProviderRuntime>,
    /// `limits.auth_failures`: failed authentication attempts by client IP.
    pub auth_failures: Option<Arc<crate::ratelimit::local::LocalLimiter>>,
}

impl Active {
    fn new(
        snapshot: Arc<Snapshot>,
        upstreams: Vec<ResolvedUpstream>,
        limits: Vec<Option<Arc<RouteLimits>>>,
        redis: Option<Arc<RedisStore>>,
        auth: Vec<crate::policy::auth::ProviderRuntime>,
    ) -> Active {
        Active {
            route_metrics: snapshot
                .routes
                .iter()
                .map(|r| RouteMetrics::new(&r.name))
                .collect(),
            no_route_metrics: RouteMetrics::new(""),
            upstream_metrics: snapshot
                .upstreams
                .iter()
                .map(|u| UpstreamMetrics::new(&u.name))
                .collect(),
            snapshot,
            upstreams,
            limits,
            redis,
            auth,
            auth_failures: None,
        }
    }
}

/// One upstream's client and its long-lived state (from the registry, so it survives reloads).
pub struct ResolvedUpstream {
    /// HTTP/1.1 pools, index-aligned with the targets (empty for HTTP/2 upstreams).
    pub pools: Vec<Arc<crate::upstream::h1::Pool>>,
    /// hyper-util client: HTTP/2 upstreams, health checks, mirrored copies.
    pub client: HttpClient,
    pub connector: Connector,
    pub state: Arc<UpstreamState>,
    /// Index-aligned with the upstream's targets.
    pub targets: Vec<Arc<TargetState>>,
}

pub struct Shared {
    pub active: ArcSwap<Active>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    /// Limiter state that survives reloads.
    pub ratelimiters: RateLimiters,
    pub(crate) clients: ClientCache,
    /// Health, ejection, breaker and retry-budget state by upstream name and target URL.
    pub registry: Registry,
    pub(crate) health: HealthChecks,
    pub dns: DnsCache,
    dns_refresher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    pub mirrors: Mirrors,
    /// Long-lived auth state (JWKS and introspection caches, the auth HTTP client).
    pub auth: crate::policy::auth::AuthState,
    pub(crate) conn_limit: Arc<Semaphore>,
    conn_limit_size: AtomicUsize,
    /// Set when every connection and tunnel must close now (hard deadline). HTTP
    /// connections wait on their listener's [`Stopper`], WebSocket tunnels on `tunnel_stop`;
    /// [`Shared::stop_hard`] sets this and pokes them all.
    hard_stopped: Arc<std::sync::atomic::AtomicBool>,
    /// The tunnels' stop signal (never stopped gracefully: only the hard stop reaches it).
    pub(crate) tunnel_stop: Arc<Stopper>,
    stoppers: Mutex<Vec<std::sync::Weak<Stopper>>>,
    pub(crate) open_connections: AtomicUsize,
}

impl Shared {
    fn resolve(&self, snapshot: Arc<Snapshot>) -> Active {
        let upstreams = snapshot
            .upstreams
            .iter()
            .map(|u| {
                let (client, connector) = self.clients.for_upstream(u);
                let (state, targets) = self.registry.resolve(u);
                ResolvedUpstream {
                    pools: self.clients.pools_for(u),
                    client,
                    connector,
                    state,
                    targets,
                }
            })
            .collect();
        let resolved = self.ratelimiters.resolve(&snapshot);
        let auth = self.auth.resolve(&snapshot);
        let mut active = Active::new(snapshot, upstreams, resolved.routes, resolved.redis, auth);
        active.auth_failures = resolved.auth_failures;
        active
    }

    /// Makes `active` live, then brings the background work in line with it: health checks
    /// started/stopped, DNS refresh for host-name targets, state of removed targets dropped.
    fn install(&self, active: Active) {
        let active = Arc::new(active);
        self.active.store(active.clone());
        let snap = &active.snapshot;
        self.registry.retain(&snap.upstreams);
        let specs: Vec<CheckSpec<'_>> = snap
            .upstreams
            .iter()
            .zip(&active.upstreams)
            .map(|(u, r)| CheckSpec {
                upstream: u,
                client: &r.client,
                connector: &r.connector,
                states: &r.targets,
            })
            .collect();
        self.health.sync(&specs, self.registry.clock);
        self.metrics.target_healthy.clear();

        let mut hosts: Vec<String> = Vec::new();
        let mut every = Duration::MAX;
        for u in &snap.upstreams {
            for t in &u.targets {
                let host = t.host();
                if host.parse::<std::net::IpAddr>().is_err() && !hosts.iter().any(|h| h == host) {
                    hosts.push(host.to_string());
                    every = every.min(u.dns_refresh);
                }
            }
        }
        self.dns.retain(&hosts);
        let mut refresher = lock(&self.dns_refresher);
        if let Some(h) = refresher.take() {
            h.abort();
        }
        if !hosts.is_empty() {
            *refresher = Some(self.dns.spawn_refresher(hosts, every));
        }
    }

    fn stop_background(&self) {
        self.health.stop_all();
        if let Some(h) = lock(&self.dns_refresher).take() {
            h.abort();
        }
    }

    /// Updates the per-target health gauges (they are derived from state that changes with
    /// time, like ejection expiry) and encodes every metric.
    pub fn metrics_text(&self) -> String {
        let active = self.active.load();
        let clock = &self.registry.clock;
        for (u, r) in active.snapshot.upstreams.iter().zip(&active.upstreams) {
            for (t, s) in u.targets.iter().zip(&r.targets) {
                self.metrics
                    .target_healthy
                    .get_or_create(&gatehouse_telemetry::metrics::TargetLabels {
                        upstream: u.name.clone(),
                        target: t.url.clone(),
                    })
                    .set(s.healthy(clock) as i64);
            }
        }
        self.metrics.encode()
    }

    /// A stop signal for a new listener, reached by the hard stop too.
    pub(crate) fn new_stopper(&self) -> Arc<Stopper> {
        let s = Arc::new(Stopper::new(self.hard_stopped.clone()));
        let mut all = lock(&self.stoppers);
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&s));
        s
    }

    /// Every connection and tunnel closes now.
    pub(crate) fn stop_hard(&self) {
        self.hard_stopped.store(true, Ordering::Release);
        for s in lock(&self.stoppers)
            .iter()
            .filter_map(std::sync::Weak::upgrade)
        {
            s.poke();
        }
    }

    fn resize_conn_limit(&self, size: usize) {
        let old = self.conn_limit_size.swap(size, Ordering::Relaxed);
        if size > old {
            self.conn_limit.add_permits(size - old);
        } else if old > size {
            self.conn_limit.forget_permits(old - size);
        }
    }
}

pub struct GatewayOptions {
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    /// Host-name lookups for upstream targets; the system resolver when `None` (tests
    /// install a scripted one).
    pub dns_lookup: Option<Lookup>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            metrics: Arc::new(Metrics::new()),
            access_log: Arc::new(AccessLog::off()),
            dns_lookup: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Gateway {
    shared: Arc<Shared>,
    listeners: tokio::sync::Mutex<Vec<ListenerHandle>>,
    bound: Mutex<Vec<(String, SocketAddr)>>,
}

impl Gateway {
    /// Binds every listener of `snapshot` and starts serving. Fails if any bind fails.
    pub async fn start(snapshot: Snapshot, opts: GatewayOptions) -> std::io::Result<Arc<Gateway>> {
        let snapshot = Arc::new(snapshot);
        let max_conns = snapshot.limits.max_connections;
        let hard_stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tunnel_stop = Arc::new(Stopper::new(hard_stopped.clone()));
        let dns = DnsCache::new(opts.dns_lookup.unwrap_or_else(dns::system_lookup));
        let shared = Arc::new(Shared {
            active: ArcSwap::from_pointee(Active::new(
                snapshot.clone(),
                Vec::new(),
                Vec::new(),
                None,
                Vec::new(),
            )),
            ratelimiters: RateLimiters::new(opts.metrics.clone()),
            metrics: opts.metrics,
            access_log: opts.access_log,
            clients: ClientCache::new(dns.clone()),
            registry: Registry::default(),
            health: HealthChecks::default(),
            dns,
            dns_refresher: Mutex::new(None),
            mirrors: Mirrors::default(),
            auth: Default::default(),
            conn_limit: Arc::new(Semaphore::new(max_conns)),
            conn_limit_size: AtomicUsize::new(max_conns),
            hard_stopped,
            stoppers: Mutex::new(vec![Arc::downgrade(&tunnel_stop)]),
            tunnel_stop,
            open_connections: AtomicUsize::new(0),
        });
        shared.install(shared.resolve(snapshot.clone()));
        let mut handles = Vec::new();
        for spec in &snapshot.listeners {
            handles.push(server::bind(shared.clone(), spec.clone()).await?);
        }
        let gw = Gateway {
            shared,
            listeners: tokio::sync::Mutex::new(Vec::new()),
            bound: Mutex::new(Vec::new()),
        };
        gw.set_listeners(handles, &mut *gw.listeners.lock().await);
        Ok(Arc::new(gw))
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.active.load().snapshot.clone()
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Prometheus text, with the per-target health gauges brought up to date.
    pub fn metrics_text(&self) -> String {
        self.shared.metrics_text()
    }

    /// Bound addresses by listener name (a configured port 0 shows the real port).
    pub fn listener_addrs(&self) -> Vec<(String, SocketAddr)> {
        match self.bound.lock() {
            Ok(b) => b.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listener_addrs()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| a)
    }

    fn set_listeners(&self, handles: Vec<ListenerHandle>, slot: &mut Vec<ListenerHandle>) {
        *slot = handles;
        let addrs = slot
            .iter()
            .map(|h| (h.spec.name.clone(), h.local_addr))
            .collect();
        match self.bound.lock() {
            Ok(mut b) => *b = addrs,
            Err(p) => *p.into_inner() = addrs,
        }
    }

    /// Swaps in a compiled snapshot. New listeners are bound first: if one cannot be bound,
    /// nothing changes and the error is returned. Removed listeners are drained in the
    /// background after the swap.
    pub async fn apply(&self, snapshot: Snapshot) -> std::io::Result<()> {
        let snapshot = Arc::new(snapshot);
        let mut current = self.listeners.lock().await;
        let mut added = Vec::new();
        for spec in &snapshot.listeners {
            if !current.iter().any(|h| h.spec.same_socket(spec)) {
                match server::bind(self.shared.clone(), spec.clone()).await {
                    Ok(h) => added.push(h),
                    Err(e) => {
                        for h in added {
                            h.stop(Duration::ZERO);
                        }
                        return Err(e);
                    }
                }
            }
        }
        self.shared
            .resize_conn_limit(snapshot.limits.max_connections);
        let drain = snapshot.limits.drain_timeout;
        self.shared.install(self.shared.resolve(snapshot.clone()));
        let mut keep = Vec::new();
        for h in current.drain(..) {
            if snapshot.listeners.iter().any(|s| h.spec.same_socket(s)) {
                keep.push(h);
            } else {
                tracing::info!(listener = %h.spec.name, addr = %h.local_addr, "listener removed by reload; draining");
                h.stop(drain);
            }
        }
        keep.extend(added);
        self.set_listeners(keep, &mut current);
        Ok(())
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish (H1 responses get
    /// `Connection: close`, H2 gets GOAWAY), close idle connections, and force-close whatever
    /// remains after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.shared.stop_background();
        let handles: Vec<ListenerHandle> = self.listeners.lock().await.drain(..).collect();
        for h in handles {
            h.stop(grace);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while self.shared.open_connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.stop_hard();
        // Give force-closed tasks a moment to unwind.
        let settle = tokio::time::Instant::now() + Duration::from_millis(500);
        while self.shared.open_connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < settle
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }
}
