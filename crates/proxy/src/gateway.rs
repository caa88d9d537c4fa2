//! The running gateway: the active snapshot, its listeners, shared clients and telemetry.
//! `apply` swaps in a new snapshot atomically; requests already running keep the `Arc` of
//! the snapshot they started with.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use gatehouse_core::Snapshot;
use gatehouse_telemetry::{AccessLog, Metrics};
use tokio::sync::{watch, Semaphore};

use crate::server::{self, ListenerHandle};
use crate::upstream::{ClientCache, HttpClient};

/// A snapshot plus the runtime objects resolved for it (one client per upstream index).
pub struct Active {
    pub snapshot: Arc<Snapshot>,
    pub clients: Vec<HttpClient>,
    /// Per auth provider: its JWKS or introspection cache (kept across reloads).
    pub auth: Vec<crate::policy::auth::ProviderRuntime>,
}

pub struct Shared {
    pub active: ArcSwap<Active>,
    pub metrics: Arc<Metrics>,
    pub access_log: Arc<AccessLog>,
    pub(crate) clients: ClientCache,
    /// Long-lived auth state (JWKS and introspection caches, the auth HTTP client).
    pub auth: crate::policy::auth::AuthState,
    pub(crate) conn_limit: Arc<Semaphore>,
    conn_limit_size: AtomicUsize,
    /// Flipped to true when every connection and tunnel must close now (hard deadline).
    pub(crate) hard_stop: watch::Sender<bool>,
    pub(crate) open_connections: AtomicUsize,
}

impl Shared {
    fn resolve(&self, snapshot: Arc<Snapshot>) -> Active {
        let clients = snapshot
            .upstreams
            .iter()
            .map(|u| self.clients.for_upstream(u))
            .collect();
        let auth = self.auth.resolve(&snapshot);
        Active {
            snapshot,
            clients,
            auth,
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
}

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            metrics: Arc::new(Metrics::new()),
            access_log: Arc::new(AccessLog::off()),
        }
    }
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
        let (hard_stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            active: ArcSwap::from_pointee(Active {
                snapshot: snapshot.clone(),
                clients: Vec::new(),
                auth: Vec::new(),
            }),
            metrics: opts.metrics,
            access_log: opts.access_log,
            clients: ClientCache::default(),
            auth: Default::default(),
            conn_limit: Arc::new(Semaphore::new(max_conns)),
            conn_limit_size: AtomicUsize::new(max_conns),
            hard_stop,
            open_connections: AtomicUsize::new(0),
        });
        shared
            .active
            .store(Arc::new(shared.resolve(snapshot.clone())));
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
        self.shared
            .active
            .store(Arc::new(self.shared.resolve(snapshot.clone())));
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
        let _ = self.shared.hard_stop.send(true);
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
