//! Pooled upstream clients. One hyper-util client per distinct (connect timeout, idle
//! timeout, protocol) triple, shared by every upstream with those settings and kept across
//! reloads, so a reload does not throw away warm keep-alive connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gatehouse_core::upstream::Upstream;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::body::Body;

pub type HttpClient = Client<HttpConnector, Body>;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ClientKey {
    connect_ms: u64,
    idle_ms: u64,
    http2: bool,
}

/// Most idle connections kept per upstream host; bounded so a burst cannot pin fds forever.
const MAX_IDLE_PER_HOST: usize = 256;

#[derive(Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<ClientKey, HttpClient>>,
}

impl ClientCache {
    pub fn for_upstream(&self, u: &Upstream) -> HttpClient {
        let key = ClientKey {
            connect_ms: u.timeouts.connect.as_millis() as u64,
            idle_ms: u.timeouts.idle.as_millis() as u64,
            http2: u.http2,
        };
        let mut map = match self.clients.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(key)
            .or_insert_with(|| build(u.timeouts.connect, u.timeouts.idle, u.http2))
            .clone()
    }
}

fn build(connect: Duration, idle: Duration, http2: bool) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect));
    connector.set_nodelay(true);
    connector.enforce_http(true);
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(idle)
        .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
        // Upstream response heads are bounded like client request heads (X5).
        .http1_max_buf_size(128 * 1024)
        .http1_max_headers(200)
        .set_host(false);
    if http2 {
        builder
            .http2_only(true)
            .http2_max_header_list_size(64 * 1024)
            .http2_keep_alive_interval(Some(Duration::from_secs(30)))
            .http2_keep_alive_timeout(Duration::from_secs(10));
    }
    builder.build(connector)
}
