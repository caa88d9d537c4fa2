//! The compiled, immutable configuration every request reads. Built by
//! `gatehouse_config::compile`, swapped atomically on reload, never mutated.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use rustls::sign::CertifiedKey;

use crate::router::{Params, Router};
use crate::upstream::{HashOn, Upstream};

pub struct Snapshot {
    /// Short hash of the source text; shown on the admin API and in the audit trail.
    pub version: String,
    /// The active config as JSON with secrets redacted (admin `GET /config`).
    pub redacted: serde_json::Value,
    pub listeners: Vec<ListenerSpec>,
    pub admin: AdminSpec,
    pub limits: Limits,
    pub trusted_proxies: Vec<IpNet>,
    pub upstreams: Vec<Arc<Upstream>>,
    pub routes: Vec<Route>,
    pub router: Router,
    /// The shared store for `scope: shared` limits, if configured.
    pub redis: Option<RedisSpec>,
    /// Consumers, auth providers and API key digests.
    pub auth: crate::auth::AuthConfig,
}

impl Snapshot {
    pub fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    pub fn listener(&self, name: &str) -> Option<&ListenerSpec> {
        self.listeners.iter().find(|l| l.name == name)
    }

    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) are treated as the IPv4 address they carry,
/// so a `10.0.0.0/8` trust entry applies to them too.
pub fn canonical_ip(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

#[derive(Clone, Debug)]
pub struct AdminSpec {
    pub addr: SocketAddr,
    pub token: Option<String>,
}

#[derive(Clone)]
pub struct ListenerSpec {
    pub name: String,
    pub addr: SocketAddr,
    pub tls: Option<TlsSpec>,
}

impl ListenerSpec {
    /// Two specs with the same identity can keep the same socket across a reload; TLS
    /// certificates are read from the live snapshot, so a certificate change needs no rebind.
    pub fn same_socket(&self, other: &ListenerSpec) -> bool {
        self.name == other.name
            && self.addr == other.addr
            && self.tls.is_some() == other.tls.is_some()
    }
}

#[derive(Clone)]
pub struct TlsSpec {
    pub certs: Vec<TlsCert>,
}

#[derive(Clone)]
pub struct TlsCert {
    pub key: Arc<CertifiedKey>,
}

impl TlsCert {
    /// Whether the certificate's SANs cover `name` (webpki's own matching rules, wildcards
    /// included).
    pub fn valid_for(&self, name: &str) -> bool {
        let Some(der) = self.key.end_entity_cert().ok() else {
            return false;
        };
        let Ok(server_name) = rustls_pki_types::ServerName::try_from(name) else {
            return false;
        };
        webpki::EndEntityCert::try_from(der)
            .and_then(|c| c.verify_is_valid_for_subject_name(&server_name))
            .is_ok()
    }
}

impl TlsSpec {
    /// SNI selection: the first certificate valid for the name, else the first one.
    pub fn resolve(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = sni {
            if let Some(c) = self.certs.iter().find(|c| c.valid_for(sni)) {
                return Some(c.key.clone());
            }
        }
        self.certs.first().map(|c| c.key.clone())
    }
}

#[derive(Clone, Debug)]
pub struct Limits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body: u64,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub http2_max_streams: u32,
    pub drain_timeout: Duration,
    /// `limits.auth_failures`: failed authentication attempts per client IP (local GCRA,
    /// `key: ip`). `None`: not limited.
    pub auth_failures: Option<RateLimitSpec>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_line: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: 10 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            http2_max_streams: 100,
            drain_timeout: Duration::from_secs(30),
            auth_failures: None,
        }
    }
}

pub struct Route {
    pub name: String,
    /// Human-readable match description for `explain` and `GET /routes`.
    pub match_desc: String,
    pub target: RouteTarget,
    pub rewrite: Rewrite,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    pub timeout: Option<Duration>,
    pub max_body: u64,
    pub websocket: bool,
    /// Every limit a request must pass, local ones first (cheap) then shared ones.
    pub rate_limits: Vec<RateLimitSpec>,
    /// `RateLimit-Policy` header for this route's responses, built once at compile time.
    pub rate_limit_policy: Option<HeaderValue>,
    /// Requests in flight on the route (this node).
    pub concurrency: Option<u32>,
    /// Requests in flight per authenticated consumer (this node).
    pub consumer_concurrency: Option<u32>,
    /// Canary stickiness for `backends`: the same header or cookie value always lands on the
    /// same upstream (for fixed weights).
    pub sticky: Option<HashOn>,
    pub mirror: Option<MirrorSpec>,
    /// `None`: a public route.
    pub auth: Option<crate::auth::AuthRequirement>,
    pub allow: crate::auth::AllowRules,
    pub cors: Option<crate::auth::Cors>,
}

pub struct MirrorSpec {
    /// Upstream index.
    pub upstream: usize,
    /// 0..=100.
    pub percent: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisSpec {
    pub endpoint: RedisEndpoint,
    pub timeout: Duration,
    pub on_error: OnError,
}

/// Where the shared rate-limit store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One Redis server (or a proxy in front of a cluster): its URL.
    Standalone(String),
    /// A Redis Cluster: the URLs of its seed nodes.
    Cluster(Vec<String>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    Allow,
    Deny,
}

/// A compiled limit. Limiter *state* lives outside the snapshot (proxy `RateLimiters`),
/// keyed by route name and [`RateLimitSpec::state_key`], so a reload that leaves a limit
/// unchanged keeps its counters.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitSpec {
    /// Policy name in the RateLimit headers.
    pub name: String,
    pub requests: u64,
    pub per: Duration,
    /// Requests that may arrive at once.
    pub burst: u64,
    pub key: LimitKey,
    pub scope: LimitScope,
    /// Shared scope with local reservations reconciled at most this often.
    pub sync: Option<Duration>,
}

impl RateLimitSpec {
    /// Time one request costs (GCRA emission interval), in nanoseconds; at least 1.
    pub fn emission_interval_ns(&self) -> u64 {
        let ns = self.per.as_nanos() / u128::from(self.requests.max(1));
        u64::try_from(ns).unwrap_or(u64::MAX).max(1)
    }

    /// `w` in the RateLimit headers: the window in whole seconds (at least 1).
    pub fn window_secs(&self) -> u64 {
        self.per.as_millis().div_ceil(1000).max(1) as u64
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The trusted client IP (never a spoofable header).
    Ip,
    /// One counter for the whole route.
    Route,
    /// The first value of this request header; requests without it are counted by IP.
    Header(HeaderName),
    /// The authenticated consumer (its name, or the token subject when it names no
    /// configured consumer); a request without one is counted by IP.
    Consumer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitScope {
    Local,
    Shared,
}

pub enum RouteTarget {
    Upstream(usize),
    /// Canary split: (upstream index, weight), weights summing to `total`.
    Weighted {
        backends: Vec<(usize, u32)>,
        total: u32,
    },
}

impl RouteTarget {
    /// Picks the upstream for one request; `roll` is uniform in `0..total`. With a sticky
    /// key's hash, the hash decides instead of the roll.
    pub fn pick(&self, sticky: Option<u64>, roll: impl FnOnce(u32) -> u32) -> usize {
        match self {
            RouteTarget::Upstream(i) => *i,
            RouteTarget::Weighted { backends, total } => {
                let mut r = match sticky {
                    Some(h) => (h % (*total).max(1) as u64) as u32,
                    None => roll(*total),
                };
                for (u, w) in backends {
                    if r < *w {
                        return *u;
                    }
                    r -= w;
                }
                backends.last().map(|b| b.0).unwrap_or(0)
            }
        }
    }
}

#[derive(Default)]
pub struct HeaderOps {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

#[derive(Default)]
pub struct Rewrite {
    pub strip_prefix: Option<String>,
    pub path: Option<Template>,
}

impl Rewrite {
    pub fn is_empty(&self) -> bool {
        self.strip_prefix.is_none() && self.path.is_none()
    }
}

/// A path template such as `/v2/users/{id}`, split at compile time.
pub struct Template {
    pub parts: Vec<TemplatePart>,
}

pub enum TemplatePart {
    Literal(String),
    Param(String),
}

impl Template {
    pub fn parse(s: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(TemplatePart::Literal(rest[..open].to_string()));
            }
            match rest[open..].find('}') {
                Some(close) => {
                    parts.push(TemplatePart::Param(
                        rest[open + 1..open + close].to_string(),
                    ));
                    rest = &rest[open + close + 1..];
                }
                None => {
                    parts.push(TemplatePart::Literal(rest[open..].to_string()));
                    rest = "";
                }
            }
        }
        if !rest.is_empty() {
            parts.push(TemplatePart::Literal(rest.to_string()));
        }
        Template { parts }
    }

    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Param(n) => Some(n.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Renders with captured params. Captured values are already-normalized path text, so
    /// they carry no raw CR/LF, `?` or `#`; the result is validated again as a URI by the caller.
    pub fn render(&self, params: &Params<'_>, out: &mut String) {
        for p in &self.parts {
            match p {
                TemplatePart::Literal(l) => out.push_str(l),
                TemplatePart::Param(n) => out.push_str(params.get(n).unwrap_or("")),
            }
        }
    }
}
