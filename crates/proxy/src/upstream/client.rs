//! Pooled upstream clients, kept across reloads so a reload does not throw away warm
//! keep-alive connections:
//! - per target, an HTTP/1.1 connection pool of the gateway's own client (`h1`), used for
//!   proxied requests to HTTP/1.1 upstreams;
//! - one hyper-util client per distinct (connect timeout, idle timeout, protocol, TLS
//!   settings), used for HTTP/2 upstreams (gRPC), health checks and mirrored copies.
//!
//! Both resolve host names through the gateway's DNS cache and speak TLS to `https://`
//! targets with the same rustls configuration.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use gatehouse_core::upstream::{Target, Upstream};
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::body::Body;

use super::dns::DnsCache;
use super::h1::{Endpoint, Pool};

pub type Connector = HttpsConnector<HttpConnector<DnsCache>>;
pub type HttpClient = Client<Connector, Body>;

#[derive(Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    connect_ms: u64,
    idle_ms: u64,
    http2: bool,
    tls: String,
}

/// Most idle connections kept per upstream host; bounded so a burst cannot pin fds forever.
const MAX_IDLE_PER_HOST: usize = super::h1::MAX_IDLE;

pub struct ClientCache {
    dns: DnsCache,
    clients: Mutex<HashMap<ClientKey, (HttpClient, Connector)>>,
    /// HTTP/1.1 pools by client settings and target URL; weak, so pools of targets no
    /// snapshot uses any more close their connections.
    pools: Mutex<HashMap<(ClientKey, String), Weak<Pool>>>,
}

fn key_of(u: &Upstream) -> ClientKey {
    ClientKey {
        connect_ms: u.timeouts.connect.as_millis() as u64,
        idle_ms: u.timeouts.idle.as_millis() as u64,
        http2: u.http2,
        tls: u
            .tls
            .as_ref()
            .map(|t| t.fingerprint.clone())
            .unwrap_or_default(),
    }
}

impl ClientCache {
    pub fn new(dns: DnsCache) -> ClientCache {
        ClientCache {
            dns,
            clients: Mutex::new(HashMap::new()),
            pools: Mutex::new(HashMap::new()),
        }
    }

    /// The HTTP/1.1 pool of each of `u`'s targets (index-aligned); none for HTTP/2
    /// upstreams.
    pub fn pools_for(&self, u: &Upstream) -> Vec<Arc<Pool>> {
        if u.http2 {
            return Vec::new();
        }
        let key = key_of(u);
        let mut map = match self.pools.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.retain(|_, p| p.strong_count() > 0);
        let mut tls = None;
        u.targets
            .iter()
            .map(|t| {
                let k = (key.clone(), t.url.clone());
                if let Some(p) = map.get(&k).and_then(Weak::upgrade) {
                    return p;
                }
                let tls = tls.get_or_insert_with(|| {
                    let mut cfg = super::tls::client_config(u.tls.as_deref());
                    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                    TlsConnector::from(Arc::new(cfg))
                });
                let pool = Pool::new(endpoint(u, t, tls), self.dns.clone());
                map.insert(k, Arc::downgrade(&pool));
                pool
            })
            .collect()
    }

    /// The client and its connector (used alone by TCP health checks).
    pub fn for_upstream(&self, u: &Upstream) -> (HttpClient, Connector) {
        let key = key_of(u);
        let mut map = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| build(u, self.dns.clone()))
            .clone()
    }
}

fn endpoint(u: &Upstream, t: &Target, tls: &TlsConnector) -> Endpoint {
    let host = t.host().to_string();
    let https = t.scheme == http::uri::Scheme::HTTPS;
    let port = t
        .authority
        .port_u16()
        .unwrap_or(if https { 443 } else { 80 });
    let ip = host.parse::<IpAddr>().ok();
    let tls = https.then(|| {
        let sni = u.tls.as_ref().and_then(|t| t.sni.clone());
        let name = sni
            .and_then(|s| ServerName::try_from(s).ok())
            .or_else(|| ServerName::try_from(host.clone()).ok())
            .unwrap_or_else(|| ServerName::try_from("invalid.invalid").expect("valid name"));
        (tls.clone(), name)
    });
    Endpoint {
        host,
        ip,
        port,
        connect_timeout: u.timeouts.connect,
        idle_timeout: u.timeouts.idle,
        tls,
    }
}

fn build(u: &Upstream, dns: DnsCache) -> (HttpClient, Connector) {
    let mut http = HttpConnector::new_with_resolver(dns);
    http.set_connect_timeout(Some(u.timeouts.connect));
    http.set_nodelay(true);
    http.enforce_http(false);
    let tls = super::tls::client_config(u.tls.as_deref());
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match u.tls.as_ref().and_then(|t| t.sni.clone()) {
        Some(sni) => match rustls::pki_types::ServerName::try_from(sni) {
            Ok(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
            Err(_) => builder,
        },
        None => builder,
    };
    let connector = if u.http2 {
        builder.enable_http2().wrap_connector(http)
    } else {
        builder.enable_http1().wrap_connector(http)
    };
    let mut client = Client::builder(TokioExecutor::new());
    client
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(u.timeouts.idle)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        // Upstream response heads are bounded like client request heads (X5).
        .http1_max_buf_size(128 * 1024)
        .http1_max_headers(200)
        .set_host(false);
    if u.http2 {
        client
            .http2_only(true)
            .http2_max_header_list_size(64 * 1024)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10));
    }
    (client.build(connector.clone()), connector)
}
