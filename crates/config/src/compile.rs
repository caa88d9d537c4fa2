//! Compiles a validated config into the runtime snapshot (`gatehouse_core::Snapshot`): the
//! router, upstream sets, header operations, templates and TLS keys are all built here, so
//! the request path never parses, validates or compiles anything.

use std::path::Path;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Method};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use gatehouse_core::router::{PathPattern as RouterPattern, RouteSpec, Router};
use gatehouse_core::snapshot::{
    AdminSpec, HeaderOps, LimitKey, LimitScope, Limits, ListenerSpec, MirrorSpec, OnError,
    RateLimitSpec, RedisEndpoint, RedisSpec, Rewrite, Route, RouteTarget, Template, TlsCert,
    TlsSpec,
};
use gatehouse_core::upstream::{
    ActiveCheck, Balance, Breaker, HashOn, Passive, RetryPolicy, Target, Upstream,
    UpstreamTimeouts, UpstreamTls,
};
use gatehouse_core::Snapshot;

use crate::model::{self, Config};
use crate::validate::PathPattern;
use crate::{load_str, ConfigError, ConfigErrors, Loaded};

/// Parse, validate and compile in one step. `base_dir` resolves relative file paths.
pub fn compile_str(
    text: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Snapshot, ConfigErrors> {
    let loaded = load_str(text, env)?;
    compile(&loaded, text, base_dir)
}

pub fn compile(loaded: &Loaded, text: &str, base_dir: &Path) -> Result<Snapshot, ConfigErrors> {
    let cfg: &Config = &loaded.config;
    // The version covers the file and every file it references (certificates), so replacing
    // a certificate in place and reloading is a real change, not a no-op.
    let mut hasher = Sha256::new();
    hasher.update(text.as_bytes());
    let mut errors = Vec::new();
    let mut err = |path: String, message: String| {
        let location = loaded.source_map.locate(&path);
        errors.push(ConfigError {
            path,
            location,
            message,
        });
    };

    // listeners
    let mut listeners = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let tls = match &l.tls {
            None => None,
            Some(t) => {
                let mut certs = Vec::new();
                for (j, c) in t.certificates.iter().enumerate() {
                    match load_cert(base_dir, &c.cert, &c.key, &mut hasher) {
                        Ok(key) => certs.push(TlsCert { key }),
                        Err(m) => err(format!("listeners[{i}].tls.certificates[{j}]"), m),
                    }
                }
                if t.certificates.is_empty() {
                    err(
                        format!("listeners[{i}].tls.certificates"),
                        "at least one certificate is required".into(),
                    );
                }
                Some(TlsSpec { certs })
            }
        };
        listeners.push(ListenerSpec {
            name: l.name.clone(),
            addr: l.addr,
            tls,
        });
    }

    let limits = Limits {
        max_request_line: cfg.limits.max_request_line.0 as usize,
        max_header_bytes: cfg.limits.max_header_bytes.0 as usize,
        max_headers: cfg.limits.max_headers as usize,
        max_body: cfg.limits.max_body.0,
        header_timeout: cfg.limits.header_timeout.0,
        idle_timeout: cfg.limits.idle_timeout.0,
        max_connections: cfg.limits.max_connections as usize,
        http2_max_streams: cfg.limits.http2_max_streams,
        drain_timeout: cfg.limits.drain_timeout.0,
        auth_failures: cfg.limits.auth_failures.as_ref().map(|f| RateLimitSpec {
            name: "auth_failures".into(),
            requests: f.requests,
            per: f.per.0,
            burst: f.burst.unwrap_or(f.requests),
            key: LimitKey::Ip,
            scope: LimitScope::Local,
            sync: None,
        }),
    };

    // upstreams, in name order (BTreeMap) so indices are stable for equal files
    let mut upstreams = Vec::new();
    let mut upstream_index = std::collections::HashMap::new();
    for (name, u) in &cfg.upstreams {
        let mut targets = Vec::new();
        for (j, t) in u.targets.iter().enumerate() {
            let path = format!("upstreams.{name}.targets[{j}].url");
            let Some(uri) = t.uri() else {
                err(path, "invalid target url".into());
                continue;
            };
            let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
            else {
                err(path, "target url needs a scheme and host:port".into());
                continue;
            };
            targets.push(Target {
                url: t.url.clone(),
                scheme,
                authority,
                weight: t.weight,
                in_flight: AtomicUsize::new(0),
            });
        }
        let balance = match u.balance {
            model::Balance::RoundRobin => Balance::RoundRobin,
            model::Balance::Random => Balance::Random,
            model::Balance::LeastRequest => Balance::LeastRequest,
            model::Balance::ConsistentHash => Balance::ConsistentHash,
        };
        upstream_index.insert(name.clone(), upstreams.len());
        let mut up = Upstream::new(
            name.clone(),
            targets,
            balance,
            u.http2,
            UpstreamTimeouts {
                connect: u.timeouts.connect.0,
                request: u.timeouts.request.0,
                per_try: u.timeouts.per_try.map(|d| d.0),
                idle: u.timeouts.idle.0,
            },
        );
        up.hash_on = u
            .hash_on
            .as_deref()
            .and_then(|h| HashOn::parse(h).ok())
            .unwrap_or(HashOn::Ip);
        up.active = u.health.active.as_ref().map(|a| ActiveCheck {
            tcp: a.kind == model::CheckKind::Tcp,
            path: a.path.clone(),
            interval: a.interval.0,
            timeout: a.timeout.0,
            unhealthy_after: a.unhealthy_after,
            healthy_after: a.healthy_after,
            statuses: a.statuses.clone(),
        });
        if let Some(p) = &u.health.passive {
            up.passive = Some(Passive {
                consecutive_failures: p.consecutive_failures,
                eject_for: p.eject_for.0,
                max_ejected_pct: p.max_ejected.0,
            });
            up.panic_below_pct = p.panic_below.0;
        }
        up.retries = u.retries.as_ref().map(|r| {
            let has = |w: model::RetryWord| r.on.contains(&model::RetryOn::Word(w));
            RetryPolicy {
                attempts: r.attempts,
                on_connect_failure: has(model::RetryWord::ConnectFailure),
                on_reset: has(model::RetryWord::Reset),
                on_timeout: has(model::RetryWord::Timeout),
                on_statuses: r
                    .on
                    .iter()
                    .filter_map(|o| match o {
                        model::RetryOn::Status(s) => Some(*s),
                        model::RetryOn::Word(_) => None,
                    })
                    .collect(),
                budget_pct: r.budget.0,
                budget_min: r.budget_min,
                backoff_base: r.backoff.base.0,
                backoff_max: r.backoff.max.0,
            }
        });
        up.breaker = Breaker {
            max_connections: u.circuit_breaker.max_connections,
            max_pending: u.circuit_breaker.max_pending,
            pending_timeout: u.circuit_breaker.pending_timeout.0,
        };
        up.dns_refresh = u.dns_refresh.0;
        if let Some(t) = &u.tls {
            match load_upstream_tls(base_dir, t, &mut hasher) {
                Ok(tls) => up.tls = Some(Arc::new(tls)),
                Err((field, m)) => err(format!("upstreams.{name}.tls.{field}"), m),
            }
        }
        upstreams.push(Arc::new(up));
    }

    let auth = crate::compile_auth::compile_auth(cfg, base_dir, &mut hasher, &mut err);

    // routes
    let mut specs = Vec::new();
    let mut routes = Vec::new();
    for (i, r) in cfg.routes.iter().enumerate() {
        let base = format!("routes[{i}]");
        let pattern = match r.r#match.pattern() {
            Ok(p) => p,
            Err(m) => {
                err(format!("{base}.match.path"), m);
                continue;
            }
        };
        let (router_pattern, desc) = match &pattern {
            PathPattern::Exact(p) => (RouterPattern::Exact(p.clone()), format!("exact {p}")),
            PathPattern::Prefix(p) => {
                let trimmed = p.trim_end_matches('/');
                let prefix = if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                };
                (
                    RouterPattern::Prefix(prefix),
                    format!("prefix {}", r.r#match.path),
                )
            }
            PathPattern::Params {
                pattern, prefix, ..
            } => {
                if *prefix {
                    err(
                        format!("{base}.match.path"),
                        "a parameterised path cannot end in `/*`; use a regex route".into(),
                    );
                    continue;
                }
                (
                    RouterPattern::Params(pattern.clone()),
                    format!("params {pattern}"),
                )
            }
            PathPattern::Regex { pattern, .. } => (
                RouterPattern::Regex(pattern.clone()),
                format!("regex {pattern}"),
            ),
        };
        let methods = if r.r#match.methods.is_empty() {
            None
        } else {
            let mut ms = Vec::new();
            for (j, m) in r.r#match.methods.iter().enumerate() {
                match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => ms.push(m),
                    Err(_) => err(
                        format!("{base}.match.methods[{j}]"),
                        format!("invalid method `{m}`"),
                    ),
                }
            }
            Some(ms)
        };
        let mut header_conds = Vec::new();
        for (name, value) in &r.r#match.headers {
            match (
                HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                HeaderValue::from_str(value),
            ) {
                (Ok(n), Ok(v)) => header_conds.push((n, v)),
                _ => err(
                    format!("{base}.match.headers.{name}"),
                    "invalid header condition".into(),
                ),
            }
        }
        let mut desc = desc;
        if !r.r#match.hosts.is_empty() {
            desc.push_str(&format!(" hosts={}", r.r#match.hosts.join(",")));
        }
        if let Some(ms) = &methods {
            desc.push_str(&format!(
                " methods={}",
                ms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(",")
            ));
        }
        if !header_conds.is_empty() {
            desc.push_str(&format!(" headers={}", header_conds.len()));
        }
        specs.push(RouteSpec {
            hosts: r
                .r#match
                .hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            path: router_pattern,
            methods,
            headers: header_conds,
        });

        let target = match (&r.upstream, &r.backends) {
            (Some(u), _) => match upstream_index.get(u) {
                Some(i) => RouteTarget::Upstream(*i),
                None => {
                    err(
                        format!("{base}.upstream"),
                        format!("upstream `{u}` is not defined"),
                    );
                    RouteTarget::Upstream(0)
                }
            },
            (None, Some(backends)) => {
                let mut list = Vec::new();
                for (j, b) in backends.iter().enumerate() {
                    match upstream_index.get(&b.upstream) {
                        Some(i) => list.push((*i, b.weight)),
                        None => err(
                            format!("{base}.backends[{j}].upstream"),
                            format!("upstream `{}` is not defined", b.upstream),
                        ),
                    }
                }
                let total = list.iter().map(|(_, w)| *w).sum();
                RouteTarget::Weighted {
                    backends: list,
                    total,
                }
            }
            (None, None) => {
                err(
                    base.clone(),
                    "a route needs `upstream` or `backends`".into(),
                );
                RouteTarget::Upstream(0)
            }
        };
        let rewrite = match &r.rewrite {
            None => Rewrite::default(),
            Some(rw) => Rewrite {
                strip_prefix: rw.strip_prefix.clone(),
                path: rw.path.as_deref().map(Template::parse),
            },
        };
        let request_headers = header_ops(
            &r.headers.request,
            &format!("{base}.headers.request"),
            &mut err,
        );
        let response_headers = header_ops(
            &r.headers.response,
            &format!("{base}.headers.response"),
            &mut err,
        );
        let (rate_limits, rate_limit_policy) = rate_limits(r, &base, &mut err);
        let (auth_req, allow, cors) = crate::compile_auth::route_auth(r, &base, &auth, &mut err);
        routes.push(Route {
            auth: auth_req,
            allow,
            cors,
            name: r.name.clone(),
            match_desc: desc,
            target,
            rewrite,
            request_headers,
            response_headers,
            timeout: r.timeout.map(|d| d.0),
            max_body: r.max_body.map(|s| s.0).unwrap_or(limits.max_body),
            websocket: r.websocket,
            rate_limits,
            rate_limit_policy,
            concurrency: r.concurrency.and_then(|c| c.route),
            consumer_concurrency: r.concurrency.and_then(|c| c.consumer),
            sticky: r.sticky.as_deref().and_then(|s| HashOn::parse(s).ok()),
            mirror: r.mirror.as_ref().and_then(|m| {
                upstream_index.get(&m.upstream).map(|i| MirrorSpec {
                    upstream: *i,
                    percent: m.percent.0,
                })
            }),
        });
    }

    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let router = match Router::build(&specs) {
        Ok(r) => r,
        Err(router_errors) => {
            let mut errors = Vec::new();
            for e in router_errors {
                let path = format!("routes[{}].match", e.route);
                let location = loaded
                    .source_map
                    .locate(&format!("{path}.path"))
                    .or_else(|| loaded.source_map.locate(&path));
                let message = match e.other {
                    Some(o) => format!(
                        "{} (conflicts with routes[{o}] `{}`)",
                        e.message,
                        cfg.routes.get(o).map(|r| r.name.as_str()).unwrap_or("?")
                    ),
                    None => e.message,
                };
                errors.push(ConfigError {
                    path,
                    location,
                    message,
                });
            }
            return Err(ConfigErrors(errors));
        }
    };

    let digest = hasher.finalize();
    Ok(Snapshot {
        version: digest.iter().take(6).map(|b| format!("{b:02x}")).collect(),
        redacted: cfg.redacted(),
        listeners,
        admin: AdminSpec {
            addr: cfg.admin.addr,
            token: cfg.admin.token().map(str::to_string),
        },
        limits,
        trusted_proxies: cfg.trusted_proxies.iter().map(|c| c.0).collect(),
        upstreams,
        routes,
        router,
        redis: cfg.redis.as_ref().map(|r| RedisSpec {
            endpoint: match (&r.cluster, &r.url) {
                (Some(nodes), _) => RedisEndpoint::Cluster(nodes.clone()),
                (None, url) => RedisEndpoint::Standalone(url.clone().unwrap_or_default()),
            },
            timeout: r.timeout.0,
            on_error: match r.on_error {
                model::OnError::Allow => OnError::Allow,
                model::OnError::Deny => OnError::Deny,
            },
        }),
        auth,
    })
}

/// Compiles a route's limits (local ones first: they cost no I/O, and a request they deny
/// never reaches Redis) and its `RateLimit-Policy` header value.
fn rate_limits(
    r: &model::Route,
    base: &str,
    err: &mut impl FnMut(String, String),
) -> (Vec<RateLimitSpec>, Option<http::HeaderValue>) {
    let names = crate::validate::limit_names(r);
    let mut out = Vec::new();
    for (j, (l, name)) in r.rate_limit.iter().zip(names).enumerate() {
        let key = match crate::validate::parse_limit_key(&l.key) {
            Ok(crate::validate::LimitKey::Ip) => LimitKey::Ip,
            Ok(crate::validate::LimitKey::Route) => LimitKey::Route,
            Ok(crate::validate::LimitKey::Header(h)) => {
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(h) => LimitKey::Header(h),
                    Err(_) => {
                        err(
                            format!("{base}.rate_limit[{j}].key"),
                            "invalid header".into(),
                        );
                        continue;
                    }
                }
            }
            Ok(crate::validate::LimitKey::Consumer) => LimitKey::Consumer,
            Err(_) => {
                err(
                    format!("{base}.rate_limit[{j}].key"),
                    "unsupported rate-limit key".into(),
                );
                continue;
            }
        };
        out.push(RateLimitSpec {
            name,
            requests: l.requests,
            per: l.per.0,
            burst: l.burst.unwrap_or(l.requests),
            key,
            scope: match l.scope {
                model::Scope::Local => LimitScope::Local,
                model::Scope::Shared => LimitScope::Shared,
            },
            sync: l.sync.map(|d| d.0),
        });
    }
    // Header order follows the config; evaluation order puts local limits first.
    let policy = if out.is_empty() {
        None
    } else {
        let text = out
            .iter()
            .map(|l| format!("\"{}\";q={};w={}", l.name, l.requests, l.window_secs()))
            .collect::<Vec<_>>()
            .join(", ");
        http::HeaderValue::from_str(&text).ok()
    };
    out.sort_by_key(|l| l.scope == LimitScope::Shared);
    (out, policy)
}

fn header_ops(
    ops: &model::HeaderOps,
    base: &str,
    err: &mut impl FnMut(String, String),
) -> HeaderOps {
    let mut out = HeaderOps::default();
    for (name, value) in &ops.set {
        match (
            HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), Ok(v)) => out.set.push((n, v)),
            _ => err(
                format!("{base}.set.{name}"),
                "invalid header name or value".into(),
            ),
        }
    }
    for (j, name) in ops.remove.iter().enumerate() {
        match HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(n) => out.remove.push(n),
            Err(_) => err(format!("{base}.remove[{j}]"), "invalid header name".into()),
        }
    }
    out
}

/// Reads the CA bundle and client certificate of an upstream's `tls` block. The fingerprint
/// covers the settings and file contents, so changing a file and reloading builds a new client.
fn load_upstream_tls(
    base_dir: &Path,
    t: &model::UpstreamTls,
    hasher: &mut Sha256,
) -> Result<UpstreamTls, (&'static str, String)> {
    let mut fp = Sha256::new();
    fp.update([t.verify as u8]);
    fp.update(t.sni.as_deref().unwrap_or("").as_bytes());
    let roots = match &t.ca {
        None => None,
        Some(ca) => {
            let path = base_dir.join(ca);
            let pem = std::fs::read(&path)
                .map_err(|e| ("ca", format!("cannot read CA {}: {e}", path.display())))?;
            hasher.update(&pem);
            fp.update(b"ca");
            fp.update(&pem);
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| ("ca", format!("invalid CA PEM {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(("ca", format!("no certificate found in {}", path.display())));
            }
            let mut store = rustls::RootCertStore::empty();
            for c in &certs {
                store.add(c.clone()).map_err(|e| {
                    (
                        "ca",
                        format!("unusable CA certificate in {}: {e}", path.display()),
                    )
                })?;
            }
            Some(certs)
        }
    };
    let client = match (&t.client_cert, &t.client_key) {
        (Some(c), Some(k)) => {
            let mut h = Sha256::new();
            let key = load_cert(base_dir, c, k, &mut h).map_err(|m| ("client_cert", m))?;
            let d = h.finalize();
            hasher.update(d);
            fp.update(b"client");
            fp.update(d);
            Some(key)
        }
        _ => None,
    };
    Ok(UpstreamTls {
        verify: t.verify,
        roots,
        client,
        sni: t.sni.clone(),
        fingerprint: fp
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

fn load_cert(
    base_dir: &Path,
    cert: &Path,
    key: &Path,
    hasher: &mut Sha256,
) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let cert_path = base_dir.join(cert);
    let key_path = base_dir.join(key);
    let cert_pem = std::fs::read(&cert_path)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert_path.display()))?;
    let key_pem = std::fs::read(&key_path)
        .map_err(|e| format!("cannot read private key {}: {e}", key_path.display()))?;
    hasher.update(&cert_pem);
    hasher.update(&key_pem);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate PEM {}: {e}", cert_path.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate found in {}", cert_path.display()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("invalid private key PEM {}: {e}", key_path.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| format!("unsupported private key {}: {e}", key_path.display()))?;
    let ck = rustls::sign::CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "certificate and key do not match ({}): {e}",
            cert_path.display()
        )
    })?;
    Ok(Arc::new(ck))
}
