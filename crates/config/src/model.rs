//! The config file as users write it (the foundation subset of SPEC.md).
//!
//! These types mirror the YAML one to one; they are checked by `validate` and then compiled into
//! the runtime snapshot elsewhere. Every struct denies unknown fields so a typo is an error with a
//! line number instead of a silently ignored setting.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::{Cidr, Duration, Size};

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses the gateway serves traffic on. At least one is required.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The admin API. Defaults to 127.0.0.1:9901 without a token.
    #[serde(default)]
    pub admin: Admin,
    /// Connection and request limits. Every limit is finite.
    #[serde(default)]
    pub limits: Limits,
    /// Peers whose `X-Forwarded-For` is believed (CIDR or single address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<Cidr>,
    /// Redis shared by every node: enables `scope: shared` rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<Redis>,
    /// Named groups of backend targets.
    #[serde(default)]
    pub upstreams: BTreeMap<String, Upstream>,
    /// API clients: named, with groups and API key digests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<Consumer>,
    /// Named authentication providers, referred to by routes' `auth`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth: BTreeMap<String, AuthProvider>,
    /// Routes, each matching requests and sending them to an upstream.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One address the gateway accepts connections on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Unique name, used in logs and metrics.
    pub name: String,
    /// `IP:PORT` to bind, e.g. `0.0.0.0:8080`. Without `tls` this port speaks HTTP/1.1 and h2c.
    #[serde(deserialize_with = "crate::units::deserialize_socket_addr")]
    #[schemars(with = "String")]
    pub addr: SocketAddr,
    /// Serve TLS (HTTP/1.1 and HTTP/2 by ALPN) with these certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerTls {
    /// Certificate chains, picked by SNI. The first one is the default.
    pub certificates: Vec<CertificateFiles>,
}

/// A PEM certificate chain and its private key. Relative paths are kept as written and resolved
/// against the config file's directory by the loader of the runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The admin API listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// Address of the admin API. Must be loopback unless a token is set.
    #[serde(
        default = "default_admin_addr",
        deserialize_with = "crate::units::deserialize_socket_addr"
    )]
    #[schemars(with = "String")]
    pub addr: SocketAddr,
    /// Bearer token required on admin requests. Empty means none (normalized to `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Admin {
    pub const DEFAULT_ADDR: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9901);

    /// The token, if one is set and non-empty.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref().filter(|t| !t.is_empty())
    }
}

fn default_admin_addr() -> SocketAddr {
    Admin::DEFAULT_ADDR
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            addr: Admin::DEFAULT_ADDR,
            token: None,
        }
    }
}

/// Global limits. All must be greater than zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest request line (method, target, version); longer is 414.
    pub max_request_line: Size,
    /// Total size of the request header block; larger is 431.
    pub max_header_bytes: Size,
    /// Number of request header fields; more is 431.
    pub max_headers: u32,
    /// Request body size, overridable per route; larger is 413.
    pub max_body: Size,
    /// Time allowed to receive the full request head (slowloris protection).
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    pub idle_timeout: Duration,
    /// Concurrent client connections across all listeners.
    pub max_connections: u32,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Grace period for in-flight requests on shutdown before connections are closed.
    pub drain_timeout: Duration,
    /// Failed authentication attempts allowed per client IP (all routes and providers
    /// together); beyond it, requests to routes with `auth` get 429 before any credential
    /// is checked. Off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_failures: Option<AuthFailureLimit>,
}

/// `limits.auth_failures`: `requests` failed attempts per `per` per client IP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthFailureLimit {
    /// Failed attempts admitted per `per` (the sustained rate).
    pub requests: u64,
    /// The window: `1m`, `1h`...
    pub per: Duration,
    /// Failed attempts that may happen at once (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_line: Size(8 * Size::KIB),
            max_header_bytes: Size(64 * Size::KIB),
            max_headers: 100,
            max_body: Size(10 * Size::MIB),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            http2_max_streams: 100,
            drain_timeout: Duration::from_secs(30),
            auth_failures: None,
        }
    }
}

/// A named group of backend targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Backends, `http://host:port` or `https://host:port`. At least one.
    #[serde(default)]
    pub targets: Vec<Target>,
    /// How a target is picked for each request.
    #[serde(default)]
    pub balance: Balance,
    /// Speak HTTP/2 to the targets (h2c for `http://`, ALPN h2 for `https://`). Needed for gRPC.
    #[serde(default)]
    pub http2: bool,
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    /// For `balance: consistent_hash`: `ip` | `consumer` | `header:NAME` | `cookie:NAME` |
    /// `path`. A request without the key (missing header or cookie) hashes its client IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<String>,
    /// Active health checks and passive outlier ejection. Omitted: every target is always in
    /// rotation.
    #[serde(default, skip_serializing_if = "Health::is_empty")]
    pub health: Health,
    /// Retry policy. Omitted: each request is tried once (hyper still retries a request that
    /// provably never left on a pooled connection closed by the upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Concurrency caps for this upstream; beyond them requests get a fast 503.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// TLS settings for `https://` targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// How often targets given as host names are resolved again. The last good addresses keep
    /// serving while DNS fails.
    #[serde(default = "default_dns_refresh")]
    pub dns_refresh: Duration,
}

fn default_dns_refresh() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<ActiveHealth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive: Option<PassiveHealth>,
}

impl Health {
    pub fn is_empty(&self) -> bool {
        self.active.is_none() && self.passive.is_none()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// `GET path`; healthy if the status is in `statuses`.
    #[default]
    Http,
    /// A TCP (and TLS for `https://`) connect; healthy if it succeeds.
    Tcp,
}

/// Periodic probes of every target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealth {
    #[serde(rename = "type")]
    pub kind: CheckKind,
    /// Path probed by `type: http`.
    pub path: String,
    pub interval: Duration,
    /// Per-probe timeout; must be shorter than `interval`.
    pub timeout: Duration,
    /// Consecutive failed probes that take a healthy target out of rotation.
    pub unhealthy_after: u32,
    /// Consecutive good probes that bring it back.
    pub healthy_after: u32,
    /// Statuses that count as healthy. Empty: any 2xx or 3xx.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<u16>,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        Self {
            kind: CheckKind::Http,
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 3,
            healthy_after: 2,
            statuses: Vec::new(),
        }
    }
}

/// Outlier ejection from live traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// Consecutive failures (connect error, reset, timeout, 5xx) that eject a target.
    pub consecutive_failures: u32,
    /// First ejection time; the n-th ejection in a row lasts n times as long (at most 10x).
    pub eject_for: Duration,
    /// Most targets ejected at once, `N%` of the targets (at least one target may always be
    /// ejected).
    pub max_ejected: Percent,
    /// Below this share of healthy targets, health is ignored and requests spread over all
    /// targets (panic mode). `0%` turns panic mode off.
    pub panic_below: Percent,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            eject_for: Duration::from_secs(30),
            max_ejected: Percent(50),
            panic_below: Percent(50),
        }
    }
}

/// `concurrency`: an integer (route-wide) or `{route: N, consumer: M}` (both optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, JsonSchema)]
#[schemars(with = "ConcurrencyForm")]
pub struct Concurrency {
    /// Requests in flight on the route.
    pub route: Option<u32>,
    /// Requests in flight per authenticated consumer (needs `auth` on the route).
    pub consumer: Option<u32>,
}

impl Concurrency {
    pub fn route(n: u32) -> Concurrency {
        Concurrency {
            route: Some(n),
            consumer: None,
        }
    }
}

/// The schema of [`Concurrency`]: what a user may write.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ConcurrencyForm {
    /// Requests in flight on the route.
    Route(u32),
    Split(ConcurrencySplit),
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ConcurrencySplit {
    /// Requests in flight on the route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    route: Option<u32>,
    /// Requests in flight per authenticated consumer (needs `auth` on the route).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    consumer: Option<u32>,
}

impl Serialize for Concurrency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (self.route, self.consumer) {
            (Some(n), None) => s.serialize_u32(n),
            (route, consumer) => ConcurrencySplit { route, consumer }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Concurrency;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an integer or a mapping `{route: N, consumer: M}`")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Concurrency, E> {
                u32::try_from(v)
                    .map(Concurrency::route)
                    .map_err(|_| E::custom(format!("concurrency `{v}` is too large")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Concurrency, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "invalid concurrency `{v}`: must be greater than 0"
                    ))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Concurrency, A::Error> {
                let split = ConcurrencySplit::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(Concurrency {
                    route: split.route,
                    consumer: split.consumer,
                })
            }
        }
        d.deserialize_any(V)
    }
}

/// A percentage written `N%` (0..=100).
#[derive(Debug, Clone, Copy, PartialEq, Eq, JsonSchema)]
#[schemars(with = "String")]
pub struct Percent(pub u32);

impl Serialize for Percent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}%", self.0))
    }
}

impl<'de> Deserialize<'de> for Percent {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Percent;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a percentage such as `20%`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Percent, E> {
                let n = v.trim().strip_suffix('%').unwrap_or(v.trim());
                match n.trim().parse::<u32>() {
                    Ok(n) if n <= 100 => Ok(Percent(n)),
                    _ => Err(E::custom(format!(
                        "invalid percentage `{v}`: use 0% to 100%"
                    ))),
                }
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Percent, E> {
                if v <= 100 {
                    Ok(Percent(v as u32))
                } else {
                    Err(E::custom(format!(
                        "invalid percentage `{v}`: use 0% to 100%"
                    )))
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Percent, E> {
                self.visit_u64(u64::try_from(v).unwrap_or(u64::MAX))
            }
        }
        d.deserialize_any(V)
    }
}

/// When and how often a failed upstream call is tried again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Tries in total, the first one included (`2` = one retry), 1..=10.
    pub attempts: u32,
    /// `connect_failure` | `reset` | `timeout` | a status such as `503`.
    pub on: Vec<RetryOn>,
    /// Retries in flight may be at most this share of the requests in flight to the upstream.
    pub budget: Percent,
    /// Retries always allowed in flight, whatever the budget says.
    pub budget_min: u32,
    /// Backoff before retry n: random in `0..min(max, base * 2^(n-1))` (full jitter).
    pub backoff: Backoff,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 2,
            on: vec![
                RetryOn::Word(RetryWord::ConnectFailure),
                RetryOn::Word(RetryWord::Reset),
            ],
            budget: Percent(20),
            budget_min: 3,
            backoff: Backoff::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(25),
            max: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RetryOn {
    Status(u16),
    Word(RetryWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryWord {
    /// The connection (TCP or TLS) could not be made: the request was provably not sent.
    ConnectFailure,
    /// The connection failed after the request was (maybe) sent, before the response head.
    Reset,
    /// The per-try timeout fired before the response head.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    /// Requests in flight to the upstream (HTTP/1.1: busy connections).
    pub max_connections: u32,
    /// Requests waiting for a free slot; more get an immediate 503.
    pub max_pending: u32,
    /// Longest wait for a free slot before 503.
    pub pending_timeout: Duration,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending: 1024,
            pending_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// Verify the target's certificate chain and name. Turning this off is for tests only.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// PEM CA bundle to trust instead of the built-in Mozilla roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS; needs `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Server name sent in SNI and checked against the certificate. Default: the target host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

fn default_true() -> bool {
    true
}

/// One backend of an upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port` or `https://host:port`, without path or query. The port defaults to
    /// 80 / 443.
    pub url: String,
    /// Relative share of requests, 1..=1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

impl Target {
    /// The parsed URL (always `Some` for a validated config).
    pub fn uri(&self) -> Option<http::Uri> {
        self.url.parse().ok()
    }
}

fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Random,
    LeastRequest,
    ConsistentHash,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// TCP (and TLS) connect timeout.
    pub connect: Duration,
    /// Whole upstream request timeout across all tries, unless the route sets `timeout`.
    pub request: Duration,
    /// Timeout of one try (until its response head). Omitted: `request`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_try: Option<Duration>,
    /// Idle pooled connections are closed after this.
    pub idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            request: Duration::from_secs(15),
            per_try: None,
            idle: Duration::from_secs(60),
        }
    }
}

/// A route: what to match and where to send it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name (`[A-Za-z0-9_.-]+`), used in logs and metrics.
    pub name: String,
    #[serde(rename = "match")]
    pub r#match: RouteMatch,
    /// The upstream to proxy to. Exactly one of `upstream` and `backends` is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Weighted split between upstreams (canary, blue/green).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<Vec<Backend>>,
    /// Keep a client on the same backend: `header:NAME` or `cookie:NAME`. Requests without
    /// the key are split at random by weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<String>,
    /// Copy a share of requests to another upstream; the copy's response is discarded and
    /// never delays or fails the real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    #[serde(default, skip_serializing_if = "HeaderRules::is_empty")]
    pub headers: HeaderRules,
    /// Upstream request timeout for this route (overrides the upstream's `timeouts.request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Request body limit for this route (overrides `limits.max_body`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body: Option<Size>,
    /// Allow WebSocket upgrades on this route.
    #[serde(default)]
    pub websocket: bool,
    /// Rate limits; a request must pass every one of them (429 otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limit: Vec<RateLimit>,
    /// Maximum requests in flight (this node); more get 429. `N` limits the route;
    /// `{route: N, consumer: M}` also (or only) limits each authenticated consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Authentication: `{any_of: [provider, ...]}` or `{all_of: [...]}`. Omitted: public.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
    /// Authorization and IP rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Allow>,
    /// Cross-origin resource sharing for browsers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsConfig>,
}

/// The Redis shared by all gateway nodes: one server (`url`) or a Redis Cluster (`cluster`),
/// exactly one of the two.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redis {
    /// One Redis server (or a proxy in front of a cluster):
    /// `redis://[:password@]host:port[/db]` (a password is redacted on the admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Redis Cluster: seed nodes, `redis://[:password@]host:port` each; the client discovers
    /// the rest of the cluster from any of them and follows slot moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// Longest wait for one rate-limit decision; after it the request is handled per
    /// `on_error`.
    #[serde(default = "default_redis_timeout")]
    pub timeout: Duration,
    /// What happens to requests while Redis is down, hung or slow: `allow` (a per-node local
    /// limiter takes over) or `deny` (503).
    #[serde(default)]
    pub on_error: OnError,
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(50)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Allow,
    Deny,
}

/// One limit: `requests` per `per`, counted per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests admitted per `per` (the sustained rate).
    pub requests: u64,
    /// The window: `1s`, `1m`, `1d`...
    pub per: Duration,
    /// What is counted: `ip` (the trusted client IP), `route`, `header:NAME` or `consumer`.
    pub key: String,
    /// `local` (in this node's memory) or `shared` (in Redis, across all nodes).
    #[serde(default)]
    pub scope: Scope,
    /// Requests that may arrive at once (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u64>,
    /// Shared scope only: reserve from Redis in batches and admit locally, reconciling at
    /// most this often (for very hot keys; bounded over-admission, see docs/ratelimit.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<Duration>,
    /// Policy name in the `RateLimit-Policy` / `RateLimit` headers (default: `default` for a
    /// route's only limit, else `KEY-PER`, e.g. `ip-1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    Local,
    Shared,
}

/// Request conditions; all given conditions must hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Host names (`api.example.com`) or wildcards (`*.example.com`). Empty: any host. Ports are
    /// not written here: the port of the Host header is ignored when matching.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// `/exact`, `/prefix/*`, `/users/{id}` or `~ ^/regex$`.
    pub path: String,
    /// HTTP methods. Empty: any method.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Request headers that must be present with exactly this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl RouteMatch {
    /// The parsed path pattern (always `Ok` for a validated config).
    pub fn pattern(&self) -> Result<crate::validate::PathPattern, String> {
        crate::validate::parse_path_pattern(&self.path)
    }
}

/// One side of a weighted split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub upstream: String,
    /// Relative share of requests, 1..=1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    pub upstream: String,
    /// Share of requests copied, 0..=100 (`5` or `5%`).
    #[serde(default = "default_mirror_percent")]
    pub percent: Percent,
}

fn default_mirror_percent() -> Percent {
    Percent(100)
}

/// Path rewriting before the request goes upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Remove this prefix from the request path (`/api/users` -> `/users`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<String>,
    /// Replace the path with this template; `{name}` inserts a parameter captured by the route's
    /// path pattern (or a named group of its regex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    /// Changes to the request before it goes upstream.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request: HeaderOps,
    /// Changes to the response before it goes to the client.
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response: HeaderOps,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    /// Set (replace) these headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// Remove these headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// An API client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Consumer {
    /// Unique name (`[A-Za-z0-9_.-]+`); token claims map to consumers by this name.
    pub name: String,
    /// Groups, used by routes' `allow.groups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// API keys as SHA-256 digests: `sha256:<64 hex digits>` (`printf %s KEY | sha256sum`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_keys: Vec<String>,
}

/// One named authentication provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthProvider {
    /// Bearer JWT (JWS) verified with pinned algorithms.
    Jwt(JwtAuth),
    /// API keys of consumers, from a header or a query parameter.
    ApiKey(ApiKeyAuth),
    /// OAuth2 token introspection (RFC 7662).
    Introspection(IntrospectionAuth),
    /// Ask an auth service; 2xx admits.
    Forward(ForwardAuth),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// Required `iss` value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Accepted `aud` values; the token's `aud` (string or array) must contain one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// JWKS endpoint, fetched in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// JWKS cache tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<JwksSettings>,
    /// Static keys (files, inline PEM/JWK, HMAC secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<JwtKeyConfig>,
    /// Accepted `alg` values (RS256/384/512, PS256/384/512, ES256/384, EdDSA, HS256/384/512).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (at most 60s).
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
    /// Reject tokens without `exp`.
    #[serde(default = "default_true")]
    pub require_exp: bool,
    /// Longest accepted token.
    #[serde(default = "default_max_token")]
    pub max_token_size: Size,
    /// Verified tokens remembered, so a token seen again skips the signature check (`exp`,
    /// `nbf` and the JWKS key set are re-checked on every use); 0 turns the cache off.
    #[serde(default = "default_jwt_cache_size")]
    pub cache_size: usize,
    /// Claim whose value names a consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_claim: Option<String>,
    /// Claim -> upstream request header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwt_cache_size() -> usize {
    10_000
}
fn default_max_token() -> Size {
    Size(8 * Size::KIB)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JwksSettings {
    /// Refresh interval when the response carries no `Cache-Control: max-age`.
    pub ttl: Duration,
    /// Minimum time between fetches (also the unknown-`kid` refetch rate limit).
    pub min_refresh: Duration,
    /// Keys stop being used this long after the last successful fetch.
    pub max_stale: Duration,
    /// Fetch timeout.
    pub timeout: Duration,
    /// Largest accepted JWKS response.
    pub max_size: Size,
}

impl Default for JwksSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
            max_stale: Duration::from_secs(86_400),
            timeout: Duration::from_secs(5),
            max_size: Size(Size::MIB),
        }
    }
}

/// One static JWT verification key: exactly one of `file`, `pem`, `jwk`, `secret`, `secret_file`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtKeyConfig {
    /// Key id matched against the token's `kid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// A PEM public key, a JWK or a JWKS file (relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Inline PEM public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pem: Option<String>,
    /// Inline JWK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub jwk: Option<serde_json::Value>,
    /// HMAC secret (HS256/384/512), at least 32 bytes; use `${ENV}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// File holding the HMAC secret (trailing newline ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Where the key is read: `header:NAME` or `query:NAME`. Default `[header:x-api-key]`.
    #[serde(default = "default_key_in", rename = "in")]
    pub r#in: Vec<String>,
    /// Remove the key from the request before proxying.
    #[serde(default)]
    pub hide_credentials: bool,
}

fn default_key_in() -> Vec<String> {
    vec!["header:x-api-key".into()]
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionAuth {
    /// The RFC 7662 introspection endpoint.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Use `${ENV}`; never shown by `GET /config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// File holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<PathBuf>,
    /// Cache results this long at most (never past the token's `exp`).
    #[serde(default = "default_cache_for")]
    pub cache_for: Duration,
    #[serde(default = "default_auth_timeout")]
    pub timeout: Duration,
    /// Claim whose value names a consumer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_claim: Option<String>,
    /// Response member -> upstream request header.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
}

fn default_cache_for() -> Duration {
    Duration::from_secs(60)
}
fn default_auth_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    /// The auth service; it receives the request's method, URI and headers (no body).
    pub url: String,
    /// Headers copied from a 2xx auth response into the upstream request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_headers: Vec<String>,
    #[serde(default = "default_auth_timeout")]
    pub timeout: Duration,
}

/// A route's auth requirement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum RouteAuth {
    /// The first provider that accepts the request wins.
    AnyOf(Vec<String>),
    /// Every provider must accept the request.
    AllOf(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Allow {
    /// The consumer must be in one of these groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The token must carry all of these scopes (`scope` or `scp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Claims that must equal (or, for arrays, contain) these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, String>,
    /// Client IPs allowed (checked before authentication).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<Cidr>,
    /// Client IPs refused (checked before authentication).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_ips: Vec<Cidr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins (`https://app.example.com`) or `["*"]`.
    pub origins: Vec<String>,
    /// Allowed methods. Default: the route's methods, else GET, HEAD, POST.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed request headers. Omitted: the headers a preflight asks for are allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<Vec<String>>,
    /// Response headers exposed to scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// Allow credentials (cookies, Authorization). Not allowed with `*`.
    #[serde(default)]
    pub credentials: bool,
    /// How long browsers may cache a preflight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Duration>,
}
