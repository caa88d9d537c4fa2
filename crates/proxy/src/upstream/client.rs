//! Pooled upstream clients. One hyper-util client per distinct (connect timeout, idle timeout,
//! protocol, TLS settings), shared by every upstream with those settings and kept across
//! reloads, so a reload does not throw away warm keep-alive connections. Every client resolves
//! host names through the gateway's DNS cache and speaks TLS to `https://` targets.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gatehouse_core::upstream::Upstream;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;

use super::dns::DnsCache;

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
const MAX_IDLE_PER_HOST: usize = 256;

pub struct ClientCache {
    dns: DnsCache,
    clients: Mutex<HashMap<ClientKey, (HttpClient, Connector)>>,
}

impl ClientCache {
    pub fn new(dns: DnsCache) -> ClientCache {
        ClientCache {
            dns,
            clients: Mutex::new(HashMap::new()),
        }
    }

    /// The client and its connector (used alone by TCP health checks).
    pub fn for_upstream(&self, u: &Upstream) -> (HttpClient, Connector) {
        let key = ClientKey {
            connect_ms: u.timeouts.connect.as_millis() as u64,
            idle_ms: u.timeouts.idle.as_millis() as u64,
            http2: u.http2,
            tls: u
                .tls
                .as_ref()
                .map(|t| t.fingerprint.clone())
                .unwrap_or_default(),
        };
        let mut map = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| build(u, self.dns.clone()))
            .clone()
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
