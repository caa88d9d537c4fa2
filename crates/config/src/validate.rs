//! Semantic checks on the deserialized model. Every problem is collected (not just the first),
//! each with the YAML path of the offending node; `lib.rs` attaches line numbers.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use http::{HeaderName, HeaderValue, Method};
use regex::RegexBuilder;

use crate::model::{Balance, Config, HeaderOps, RetryOn, Route, Scope, Upstream};
use crate::source_map::{push_index, push_key};
use crate::units::{Duration, Size};
use crate::ConfigError;

/// Longest accepted regex source, in bytes.
pub const MAX_REGEX_LEN: usize = 4096;
/// `regex` compile limits: a hostile pattern (`a{1000}{1000}`) fails at load instead of eating
/// memory.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;
pub const REGEX_DFA_SIZE_LIMIT: usize = 1 << 20;
pub const MAX_WEIGHT: u32 = 1000;

/// Header names a route may not set: they describe one hop (and `content-length` must describe
/// the body actually sent), so overriding them enables request smuggling or breaks framing.
pub const FORBIDDEN_SET_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
];

/// A parsed route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// `/a/b`: exactly this path.
    Exact(String),
    /// `/a/*`: this literal prefix (stored with its trailing `/`, e.g. `/a/`; `/*` is `/`).
    Prefix(String),
    /// `/users/{id}` (or `/users/{id}/*` when `prefix`): segments with named parameters.
    Params {
        pattern: String,
        params: Vec<String>,
        prefix: bool,
    },
    /// `~ ^/regex$`: the regex source (without `~ `) and its named groups.
    Regex {
        pattern: String,
        params: Vec<String>,
    },
}

impl PathPattern {
    /// Names captured by the pattern, usable in `rewrite.path`.
    pub fn params(&self) -> &[String] {
        match self {
            PathPattern::Exact(_) | PathPattern::Prefix(_) => &[],
            PathPattern::Params { params, .. } | PathPattern::Regex { params, .. } => params,
        }
    }
}

/// Builds a route regex with the limits that validation enforced. The runtime should use this
/// so the two never disagree.
pub fn build_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!(
            "regex is too long ({} bytes, at most {MAX_REGEX_LEN})",
            pattern.len()
        ));
    }
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            let detail = e.to_string().replace('\n', " ");
            format!("invalid regex `{pattern}`: {detail}")
        })
}

/// Parses and checks a `match.path` value.
pub fn parse_path_pattern(path: &str) -> Result<PathPattern, String> {
    if let Some(pattern) = path.strip_prefix("~ ") {
        if pattern.trim().is_empty() {
            return Err("empty regex after `~ `".into());
        }
        let re = build_regex(pattern)?;
        let params = re.capture_names().flatten().map(str::to_owned).collect();
        return Ok(PathPattern::Regex {
            pattern: pattern.to_owned(),
            params,
        });
    }
    if path.starts_with('~') {
        return Err(format!(
            "path `{path}`: a regex path is written `~ PATTERN` (tilde, then a space)"
        ));
    }
    check_literal_path(path)?;

    let mut params: Vec<String> = Vec::new();
    let mut prefix = false;
    let segments: Vec<&str> = path[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if *seg == "*" {
            if !last {
                return Err(format!(
                    "path `{path}`: `*` is only allowed as the last segment (`/prefix/*`)"
                ));
            }
            prefix = true;
        } else if seg.contains('*') {
            return Err(format!(
                "path `{path}`: `*` must be a whole last segment (`/prefix/*`)"
            ));
        } else if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_param_name(name) {
                return Err(format!(
                    "path `{path}`: invalid parameter name `{name}` (use [A-Za-z_][A-Za-z0-9_]*)"
                ));
            }
            if params.iter().any(|p| p == name) {
                return Err(format!("path `{path}`: parameter `{name}` is used twice"));
            }
            params.push(name.to_owned());
        } else if seg.contains(['{', '}']) {
            return Err(format!(
                "path `{path}`: a parameter must be a whole segment like `/{{id}}`"
            ));
        }
    }
    Ok(if !params.is_empty() {
        PathPattern::Params {
            pattern: path.to_owned(),
            params,
            prefix,
        }
    } else if prefix {
        PathPattern::Prefix(path[..path.len() - 1].to_owned())
    } else {
        PathPattern::Exact(path.to_owned())
    })
}

/// Rules shared by route paths and `rewrite.strip_prefix`: an absolute, already-normalized path,
/// so it can be compared with normalized request paths byte for byte.
fn check_literal_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path `{path}` must start with `/`"));
    }
    if let Some(c) = path.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "path `{}` contains {}: only visible ASCII is allowed",
            path.escape_debug(),
            describe_char(c)
        ));
    }
    for (c, why) in [
        ('?', "a query string cannot be matched"),
        ('#', "a fragment is never sent"),
        (
            '%',
            "percent-encoding is not allowed (paths are matched decoded)",
        ),
        ('\\', "backslashes are not allowed"),
        (';', "`;` path parameters are not allowed"),
    ] {
        if path.contains(c) {
            return Err(format!("path `{path}` contains `{c}`: {why}"));
        }
    }
    if path.contains("//") {
        return Err(format!("path `{path}` contains `//`"));
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(format!("path `{path}` contains a `.` or `..` segment"));
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c if c.is_control() => format!("control character {:?}", c),
        c => format!("`{c}`"),
    }
}

fn is_param_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Route, upstream and listener names: safe as metric labels and in logs.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Checks a `match.hosts` entry: a lowercase DNS name or `*.suffix`, without port.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.contains(':') {
        return Err(format!(
            "host `{host}` must not include a port: the port of the Host header is ignored when matching"
        ));
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("host `{host}` must be lowercase"));
    }
    let name = match host.strip_prefix("*.") {
        Some(rest) => rest,
        None => host,
    };
    if name.contains('*') {
        return Err(format!(
            "host `{host}`: a wildcard is only allowed as a whole first label (`*.example.com`)"
        ));
    }
    if name.is_empty() || name.len() > 253 {
        return Err(format!("host `{host}` is not a valid DNS name"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "host `{host}` is not a valid DNS name (labels of a-z, 0-9 and `-`)"
            ));
        }
    }
    Ok(())
}

/// Checks a header name (any case) and returns its lowercase form.
pub fn check_header_name(name: &str) -> Result<String, String> {
    HeaderName::from_bytes(name.as_bytes())
        .map(|n| n.as_str().to_owned())
        .map_err(|_| format!("invalid header name `{}`", name.escape_debug()))
}

pub fn check_header_value(value: &str) -> Result<(), String> {
    if value.contains(['\r', '\n', '\0']) {
        return Err(format!(
            "header value `{}` contains CR, LF or NUL",
            value.escape_debug()
        ));
    }
    HeaderValue::from_str(value).map(|_| ()).map_err(|_| {
        format!(
            "invalid header value `{}`: only visible ASCII, spaces and tabs are allowed",
            value.escape_debug()
        )
    })
}

/// Checks an upstream target URL: `http(s)://host[:port]` with no path, query or credentials.
pub fn check_target_url(url: &str) -> Result<http::Uri, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(format!(
                "URL `{url}` has scheme `{other}`: use `http://` or `https://`"
            ))
        }
        None => {
            return Err(format!(
                "URL `{url}` needs a scheme: `http://host:port` or `https://host:port`"
            ))
        }
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("URL `{url}` has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("URL `{url}` must not contain credentials"));
    }
    if authority.host().is_empty() {
        return Err(format!("URL `{url}` has no host"));
    }
    if uri.query().is_some() || !matches!(uri.path(), "" | "/") || url.contains('#') {
        return Err(format!(
            "URL `{url}` must not have a path or query: use `rewrite` on the route"
        ));
    }
    Ok(uri)
}

struct Ctx {
    errors: Vec<ConfigError>,
}

impl Ctx {
    fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError::at(path, message));
    }

    fn positive_duration(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.err(path, "must be greater than 0");
        }
    }

    fn positive_size(&mut self, path: &str, s: Size) {
        if s.0 == 0 {
            self.err(path, "must be greater than 0");
        }
    }

    fn positive(&mut self, path: &str, n: u32) {
        if n == 0 {
            self.err(path, "must be greater than 0");
        }
    }

    fn weight(&mut self, path: &str, w: u32) {
        if !(1..=MAX_WEIGHT).contains(&w) {
            self.err(path, format!("weight {w} is out of range 1..={MAX_WEIGHT}"));
        }
    }
}

/// Runs every check and returns all problems (locations not yet attached).
pub fn validate(config: &Config) -> Vec<ConfigError> {
    let mut cx = Ctx { errors: Vec::new() };
    listeners(&mut cx, config);
    admin(&mut cx, config);
    limits(&mut cx, config);
    for (name, upstream) in &config.upstreams {
        self::upstream(&mut cx, &push_key("upstreams", name), name, upstream);
    }
    redis(&mut cx, config);
    routes(&mut cx, config);
    crate::validate_auth::validate(config, &mut cx.errors);
    cx.errors
}

/// What a rate limit counts, parsed from its `key` string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitKey {
    Consumer,
    Ip,
    Route,
    /// A lowercase header name.
    Header(String),
}

/// Parses a rate-limit `key`: `consumer`, `ip`, `route` or `header:NAME`.
pub fn parse_limit_key(key: &str) -> Result<LimitKey, String> {
    match key {
        "consumer" => Ok(LimitKey::Consumer),
        "ip" => Ok(LimitKey::Ip),
        "route" => Ok(LimitKey::Route),
        _ => match key.strip_prefix("header:") {
            Some(name) if !name.is_empty() => check_header_name(name).map(LimitKey::Header),
            _ => Err(format!(
                "invalid rate-limit key `{}`: use `ip`, `route`, `header:NAME` or `consumer`",
                key.escape_debug()
            )),
        },
    }
}

/// Largest `requests` and `burst`; the rate itself is capped by [`MIN_EMISSION_INTERVAL_US`].
pub const MAX_LIMIT_REQUESTS: u64 = 1_000_000_000;
/// Longest `per` (a yearly quota).
pub const MAX_LIMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);
/// Redis time has microsecond resolution: one request may cost no less than 1 µs.
pub const MIN_EMISSION_INTERVAL_US: u128 = 1;

/// The policy names of a route's limits, as the `RateLimit-Policy` header shows them.
pub fn limit_names(route: &Route) -> Vec<String> {
    let single = route.rate_limit.len() == 1;
    route
        .rate_limit
        .iter()
        .map(|l| match &l.name {
            Some(n) => n.clone(),
            None if single => "default".to_owned(),
            None => format!("{}-{}", l.key, l.per),
        })
        .collect()
}

fn is_policy_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'))
}

/// Checks `redis.url`: `redis://[[user]:password@]host[:port][/db]`.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("redis://") else {
        if url.starts_with("rediss://") {
            return Err(format!(
                "`{}`: TLS to Redis (`rediss://`) is not supported yet; use `redis://`",
                redact_url_password(url)
            ));
        }
        return Err(format!(
            "redis URL `{}` must start with `redis://`",
            redact_url_password(url)
        ));
    };
    let (authority, db) = rest.split_once('/').unwrap_or((rest, ""));
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, Some(p)),
        _ => (hostport, None),
    };
    if host.is_empty() || host.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "redis URL `{}` has no valid host",
            redact_url_password(url)
        ));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(format!(
                "redis URL `{}` has an invalid port",
                redact_url_password(url)
            ));
        }
    }
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!(
            "redis URL `{}`: the path must be a database number",
            redact_url_password(url)
        ));
    }
    Ok(())
}

/// The database part of a `redis://` URL (`""` when absent).
fn redis_url_db(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split_once('/').map_or("", |(_, db)| db)
}

/// `redis://user:secret@host` -> `redis://user:<redacted>@host`.
pub fn redact_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:{}@{host}{path}", crate::REDACTED),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

fn redis(cx: &mut Ctx, config: &Config) {
    let Some(r) = &config.redis else {
        return;
    };
    match (&r.url, &r.cluster) {
        (None, None) => cx.err(
            "redis",
            "needs `url` (one Redis server) or `cluster` (Redis Cluster seed nodes)",
        ),
        (Some(_), Some(_)) => cx.err(
            "redis.cluster",
            "`url` and `cluster` are exclusive: `url` for one Redis server, `cluster` for the \
             seed nodes of a Redis Cluster",
        ),
        (Some(url), None) => {
            if let Err(e) = check_redis_url(url) {
                cx.err("redis.url", e);
            }
        }
        (None, Some(nodes)) => {
            if nodes.is_empty() {
                cx.err("redis.cluster", "needs at least one seed node URL");
            }
            for (i, url) in nodes.iter().enumerate() {
                let path = format!("redis.cluster[{i}]");
                if let Err(e) = check_redis_url(url) {
                    cx.err(&path, e);
                } else if !matches!(redis_url_db(url), "" | "0") {
                    cx.err(
                        &path,
                        format!(
                            "redis URL `{}`: Redis Cluster has only database 0",
                            redact_url_password(url)
                        ),
                    );
                } else if nodes[..i].contains(url) {
                    cx.err(&path, "duplicate seed node");
                }
            }
        }
    }
    cx.positive_duration("redis.timeout", r.timeout);
}

/// `requests`, `per` and `burst` of a rate limit (route `rate_limit` entries and
/// `limits.auth_failures`).
fn limit_rate(cx: &mut Ctx, p: &str, requests: u64, per: Duration, burst: Option<u64>) {
    if requests == 0 || requests > MAX_LIMIT_REQUESTS {
        cx.err(
            &push_key(p, "requests"),
            format!("must be between 1 and {MAX_LIMIT_REQUESTS}"),
        );
    }
    if per.is_zero() || per.0 > MAX_LIMIT_WINDOW {
        cx.err(
            &push_key(p, "per"),
            "must be greater than 0 and at most 366d",
        );
    } else if requests > 0 && per.0.as_micros() / u128::from(requests) < MIN_EMISSION_INTERVAL_US {
        cx.err(
            &push_key(p, "per"),
            format!("{requests} requests per {per} is more than one per microsecond"),
        );
    }
    if let Some(b) = burst {
        if b == 0 || b > MAX_LIMIT_REQUESTS {
            cx.err(
                &push_key(p, "burst"),
                format!("must be between 1 and {MAX_LIMIT_REQUESTS}"),
            );
        }
    }
}

fn route_limits(cx: &mut Ctx, path: &str, route: &Route, config: &Config) {
    let names = limit_names(route);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let lpath = push_key(path, "rate_limit");
    for (j, l) in route.rate_limit.iter().enumerate() {
        let p = push_index(&lpath, j);
        limit_rate(cx, &p, l.requests, l.per, l.burst);
        match parse_limit_key(&l.key) {
            Err(e) => cx.err(&push_key(&p, "key"), e),
            Ok(LimitKey::Consumer) if route.auth.is_none() => cx.err(
                &push_key(&p, "key"),
                "key `consumer` needs `auth` on this route (a public route has no consumer): use `ip`, `route` or `header:NAME`",
            ),
            Ok(_) => {}
        }
        if l.scope == Scope::Shared && config.redis.is_none() {
            cx.err(
                &push_key(&p, "scope"),
                "`scope: shared` needs a top-level `redis` section",
            );
        }
        if let Some(sync) = l.sync {
            let sp = push_key(&p, "sync");
            if l.scope != Scope::Shared {
                cx.err(&sp, "`sync` applies to `scope: shared` limits only");
            } else if sync.is_zero() || sync > l.per {
                cx.err(
                    &sp,
                    format!("must be greater than 0 and at most `per` ({})", l.per),
                );
            }
        }
        let name = names.get(j).map_or("", String::as_str);
        if !is_policy_name(name) {
            cx.err(
                &push_key(&p, "name"),
                format!(
                    "invalid policy name `{}`: use [A-Za-z0-9_.:-]{{1,64}}",
                    name.escape_debug()
                ),
            );
        } else if let Some(first) = seen.insert(name, j) {
            cx.err(
                &p,
                format!(
                    "policy name `{name}` is already used by rate_limit[{first}]; set a distinct `name`"
                ),
            );
        }
    }
    if let Some(c) = route.concurrency {
        let cpath = push_key(path, "concurrency");
        match (c.route, c.consumer) {
            (None, None) => cx.err(&cpath, "set `route`, `consumer` or both"),
            // The integer form.
            (Some(0), None) => cx.err(&cpath, "must be greater than 0"),
            (route_max, consumer_max) => {
                if route_max == Some(0) {
                    cx.err(&push_key(&cpath, "route"), "must be greater than 0");
                }
                if consumer_max == Some(0) {
                    cx.err(&push_key(&cpath, "consumer"), "must be greater than 0");
                } else if consumer_max.is_some() && route.auth.is_none() {
                    cx.err(
                        &push_key(&cpath, "consumer"),
                        "`consumer` needs `auth` on this route (a public route has no consumer): use `route`",
                    );
                }
            }
        }
    }
}

fn listeners(cx: &mut Ctx, config: &Config) {
    if config.listeners.is_empty() {
        cx.err("listeners", "at least one listener is required");
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addrs: HashMap<std::net::SocketAddr, usize> = HashMap::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let path = push_index("listeners", i);
        if !is_valid_name(&l.name) {
            cx.err(
                &push_key(&path, "name"),
                format!("invalid listener name `{}`: use [A-Za-z0-9_.-]+", l.name),
            );
        } else if let Some(first) = names.insert(&l.name, i) {
            cx.err(
                &push_key(&path, "name"),
                format!(
                    "duplicate listener name `{}` (first at listeners[{first}])",
                    l.name
                ),
            );
        }
        // Port 0 asks the OS for a free port, so two such listeners never clash.
        let first = if l.addr.port() == 0 {
            None
        } else {
            addrs.insert(l.addr, i)
        };
        if let Some(first) = first {
            cx.err(
                &push_key(&path, "addr"),
                format!("address {} is already used by listeners[{first}]", l.addr),
            );
        }
        if let Some(tls) = &l.tls {
            let tls_path = push_key(&path, "tls");
            if tls.certificates.is_empty() {
                cx.err(
                    &push_key(&tls_path, "certificates"),
                    "at least one certificate is required",
                );
            }
            for (j, c) in tls.certificates.iter().enumerate() {
                let cpath = push_index(&push_key(&tls_path, "certificates"), j);
                if c.cert.as_os_str().is_empty() {
                    cx.err(&push_key(&cpath, "cert"), "certificate path is empty");
                }
                if c.key.as_os_str().is_empty() {
                    cx.err(&push_key(&cpath, "key"), "key path is empty");
                }
            }
        }
    }
}

fn admin(cx: &mut Ctx, config: &Config) {
    let admin = &config.admin;
    if !admin.addr.ip().is_loopback() && admin.token().is_none() {
        cx.err(
            "admin.addr",
            format!(
                "the admin API on non-loopback address {} requires a non-empty `admin.token`",
                admin.addr
            ),
        );
    }
    for (i, l) in config.listeners.iter().enumerate() {
        let overlaps = l.addr.port() != 0
            && l.addr.port() == admin.addr.port()
            && l.addr.is_ipv4() == admin.addr.is_ipv4()
            && (l.addr.ip() == admin.addr.ip()
                || l.addr.ip().is_unspecified()
                || admin.addr.ip().is_unspecified());
        if overlaps {
            cx.err(
                "admin.addr",
                format!(
                    "admin address {} conflicts with listeners[{i}] ({})",
                    admin.addr, l.addr
                ),
            );
        }
    }
}

fn limits(cx: &mut Ctx, config: &Config) {
    let l = &config.limits;
    cx.positive_size("limits.max_request_line", l.max_request_line);
    cx.positive_size("limits.max_header_bytes", l.max_header_bytes);
    cx.positive("limits.max_headers", l.max_headers);
    cx.positive_size("limits.max_body", l.max_body);
    cx.positive_duration("limits.header_timeout", l.header_timeout);
    cx.positive_duration("limits.idle_timeout", l.idle_timeout);
    cx.positive("limits.max_connections", l.max_connections);
    cx.positive("limits.http2_max_streams", l.http2_max_streams);
    cx.positive_duration("limits.drain_timeout", l.drain_timeout);
    if let Some(f) = &l.auth_failures {
        let p = "limits.auth_failures";
        limit_rate(cx, p, f.requests, f.per, f.burst);
    }
}

fn upstream(cx: &mut Ctx, path: &str, name: &str, u: &Upstream) {
    if !is_valid_name(name) {
        cx.err(
            path,
            format!("invalid upstream name `{name}`: use [A-Za-z0-9_.-]+"),
        );
    }
    let targets_path = push_key(path, "targets");
    if u.targets.is_empty() {
        cx.err(&targets_path, "at least one target is required");
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, t) in u.targets.iter().enumerate() {
        let tpath = push_index(&targets_path, i);
        if let Err(e) = check_target_url(&t.url) {
            cx.err(&push_key(&tpath, "url"), e);
        } else if let Some(first) = seen.insert(t.url.trim_end_matches('/'), i) {
            cx.err(
                &push_key(&tpath, "url"),
                format!(
                    "duplicate target `{}` (first at targets[{first}]); use `weight` instead",
                    t.url
                ),
            );
        }
        cx.weight(&push_key(&tpath, "weight"), t.weight);
    }
    let tpath = push_key(path, "timeouts");
    cx.positive_duration(&push_key(&tpath, "connect"), u.timeouts.connect);
    cx.positive_duration(&push_key(&tpath, "request"), u.timeouts.request);
    cx.positive_duration(&push_key(&tpath, "idle"), u.timeouts.idle);
    if let Some(p) = u.timeouts.per_try {
        cx.positive_duration(&push_key(&tpath, "per_try"), p);
    }
    cx.positive_duration(&push_key(path, "dns_refresh"), u.dns_refresh);
    upstream_resilience(cx, path, u);
}

fn upstream_resilience(cx: &mut Ctx, path: &str, u: &Upstream) {
    match (&u.hash_on, u.balance) {
        (Some(h), Balance::ConsistentHash) => {
            if let Err(e) = gatehouse_core::upstream::HashOn::parse(h) {
                cx.err(&push_key(path, "hash_on"), e);
            }
        }
        (Some(_), _) => cx.err(
            &push_key(path, "hash_on"),
            "`hash_on` needs `balance: consistent_hash`",
        ),
        (None, _) => {}
    }
    let hpath = push_key(path, "health");
    if let Some(a) = &u.health.active {
        let apath = push_key(&hpath, "active");
        if !a.path.starts_with('/') {
            cx.err(
                &push_key(&apath, "path"),
                "the probe path must start with `/`",
            );
        }
        cx.positive_duration(&push_key(&apath, "interval"), a.interval);
        cx.positive_duration(&push_key(&apath, "timeout"), a.timeout);
        if a.timeout.0 > a.interval.0 {
            cx.err(
                &push_key(&apath, "timeout"),
                format!(
                    "timeout {} is longer than interval {}",
                    a.timeout, a.interval
                ),
            );
        }
        cx.positive(&push_key(&apath, "unhealthy_after"), a.unhealthy_after);
        cx.positive(&push_key(&apath, "healthy_after"), a.healthy_after);
        for (i, s) in a.statuses.iter().enumerate() {
            if !(100..=599).contains(s) {
                cx.err(
                    &push_index(&push_key(&apath, "statuses"), i),
                    format!("{s} is not an HTTP status"),
                );
            }
        }
    }
    if let Some(p) = &u.health.passive {
        let ppath = push_key(&hpath, "passive");
        cx.positive(
            &push_key(&ppath, "consecutive_failures"),
            p.consecutive_failures,
        );
        cx.positive_duration(&push_key(&ppath, "eject_for"), p.eject_for);
    }
    if let Some(r) = &u.retries {
        let rpath = push_key(path, "retries");
        if !(1..=10).contains(&r.attempts) {
            cx.err(
                &push_key(&rpath, "attempts"),
                format!("attempts {} is out of range 1..=10", r.attempts),
            );
        }
        for (i, on) in r.on.iter().enumerate() {
            if let RetryOn::Status(s) = on {
                if !(100..=599).contains(s) {
                    cx.err(
                        &push_index(&push_key(&rpath, "on"), i),
                        format!("{s} is not an HTTP status"),
                    );
                }
            }
        }
        let bpath = push_key(&rpath, "backoff");
        cx.positive_duration(&push_key(&bpath, "base"), r.backoff.base);
        if r.backoff.max.0 < r.backoff.base.0 {
            cx.err(
                &push_key(&bpath, "max"),
                format!(
                    "max {} is shorter than base {}",
                    r.backoff.max, r.backoff.base
                ),
            );
        }
    }
    let cpath = push_key(path, "circuit_breaker");
    cx.positive(
        &push_key(&cpath, "max_connections"),
        u.circuit_breaker.max_connections,
    );
    cx.positive_duration(
        &push_key(&cpath, "pending_timeout"),
        u.circuit_breaker.pending_timeout,
    );
    if let Some(t) = &u.tls {
        let tpath = push_key(path, "tls");
        if t.client_cert.is_some() != t.client_key.is_some() {
            cx.err(
                &tpath,
                "`client_cert` and `client_key` must be given together",
            );
        }
        if let Some(sni) = &t.sni {
            if rustls_pki_types::ServerName::try_from(sni.as_str()).is_err() {
                cx.err(
                    &push_key(&tpath, "sni"),
                    format!("`{sni}` is not a valid server name"),
                );
            }
        }
        if !u.targets.iter().any(|t| t.url.starts_with("https://")) {
            cx.err(&tpath, "`tls` is set but no target uses `https://`");
        }
    }
}

fn routes(cx: &mut Ctx, config: &Config) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    type MatchKey = (
        BTreeSet<String>,
        String,
        BTreeSet<String>,
        BTreeMap<String, String>,
    );
    let mut matches: HashMap<MatchKey, usize> = HashMap::new();
    for (i, route) in config.routes.iter().enumerate() {
        let path = push_index("routes", i);
        let name_path = push_key(&path, "name");
        if !is_valid_name(&route.name) {
            cx.err(
                &name_path,
                format!("invalid route name `{}`: use [A-Za-z0-9_.-]+", route.name),
            );
        } else if let Some(first) = names.insert(&route.name, i) {
            cx.err(
                &name_path,
                format!(
                    "duplicate route name `{}` (first at routes[{first}])",
                    route.name
                ),
            );
        }
        let match_ok = route_match(cx, &path, route);
        if match_ok {
            let m = &route.r#match;
            let key: MatchKey = (
                m.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
                m.path.clone(),
                m.methods.iter().map(|m| m.to_ascii_uppercase()).collect(),
                m.headers
                    .iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                    .collect(),
            );
            if let Some(first) = matches.insert(key, i) {
                let other = config.routes.get(first).map_or("", |r| r.name.as_str());
                cx.err(
                    &push_key(&path, "match"),
                    format!(
                        "route `{}` matches exactly the same requests as route `{other}` (routes[{first}])",
                        route.name
                    ),
                );
            }
        }
        route_target(cx, &path, route, config);
        route_rewrite(cx, &path, route);
        if let Some(st) = &route.sticky {
            let spath = push_key(&path, "sticky");
            if route.backends.is_none() {
                cx.err(&spath, "`sticky` applies to `backends` only");
            }
            if !(st.starts_with("header:") || st.starts_with("cookie:")) {
                cx.err(&spath, "use `header:NAME` or `cookie:NAME`");
            } else if let Err(e) = gatehouse_core::upstream::HashOn::parse(st) {
                cx.err(&spath, e);
            }
        }
        if let Some(m) = &route.mirror {
            if !config.upstreams.contains_key(&m.upstream) {
                cx.err(
                    &push_key(&push_key(&path, "mirror"), "upstream"),
                    format!("upstream `{}` is not defined", m.upstream),
                );
            }
        }
        let hpath = push_key(&path, "headers");
        header_ops(cx, &push_key(&hpath, "request"), &route.headers.request);
        header_ops(cx, &push_key(&hpath, "response"), &route.headers.response);
        if let Some(t) = route.timeout {
            cx.positive_duration(&push_key(&path, "timeout"), t);
        }
        if let Some(s) = route.max_body {
            cx.positive_size(&push_key(&path, "max_body"), s);
        }
        route_limits(cx, &path, route, config);
    }
}

/// Returns whether the match block is valid (so it can be compared with other routes).
fn route_match(cx: &mut Ctx, path: &str, route: &Route) -> bool {
    let before = cx.errors.len();
    let mpath = push_key(path, "match");
    let m = &route.r#match;
    if let Err(e) = parse_path_pattern(&m.path) {
        cx.err(&push_key(&mpath, "path"), e);
    }
    let hosts_path = push_key(&mpath, "hosts");
    let mut hosts = HashSet::new();
    for (i, host) in m.hosts.iter().enumerate() {
        let hpath = push_index(&hosts_path, i);
        match check_host(host) {
            Err(e) => cx.err(&hpath, e),
            Ok(()) if !hosts.insert(host) => cx.err(&hpath, format!("duplicate host `{host}`")),
            Ok(()) => {}
        }
    }
    let methods_path = push_key(&mpath, "methods");
    let mut methods = HashSet::new();
    for (i, method) in m.methods.iter().enumerate() {
        let mp = push_index(&methods_path, i);
        let upper = method.to_ascii_uppercase();
        if method.is_empty() || Method::from_bytes(upper.as_bytes()).is_err() {
            cx.err(
                &mp,
                format!("invalid HTTP method `{}`", method.escape_debug()),
            );
        } else if !methods.insert(upper) {
            cx.err(&mp, format!("duplicate method `{method}`"));
        }
    }
    let headers_path = push_key(&mpath, "headers");
    for (name, value) in &m.headers {
        let hp = push_key(&headers_path, name);
        if let Err(e) = check_header_name(name) {
            cx.err(&hp, e);
        }
        if let Err(e) = check_header_value(value) {
            cx.err(&hp, e);
        }
    }
    cx.errors.len() == before
}

fn route_target(cx: &mut Ctx, path: &str, route: &Route, config: &Config) {
    let defined = |name: &str| config.upstreams.contains_key(name);
    let undefined = |name: &str| {
        let known: Vec<&str> = config.upstreams.keys().map(String::as_str).collect();
        if known.is_empty() {
            format!("upstream `{name}` is not defined (no upstreams are configured)")
        } else if known.len() <= 10 {
            format!(
                "upstream `{name}` is not defined (defined: {})",
                known.join(", ")
            )
        } else {
            format!("upstream `{name}` is not defined")
        }
    };
    match (&route.upstream, &route.backends) {
        (Some(_), Some(_)) => cx.err(path, "set either `upstream` or `backends`, not both"),
        (None, None) => cx.err(
            path,
            format!(
                "route `{}` needs `upstream: NAME` or `backends: [...]`",
                route.name
            ),
        ),
        (Some(up), None) => {
            if !defined(up) {
                cx.err(&push_key(path, "upstream"), undefined(up));
            }
        }
        (None, Some(backends)) => {
            let bpath = push_key(path, "backends");
            if backends.is_empty() {
                cx.err(&bpath, "at least one backend is required");
            }
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, b) in backends.iter().enumerate() {
                let p = push_index(&bpath, i);
                if !defined(&b.upstream) {
                    cx.err(&push_key(&p, "upstream"), undefined(&b.upstream));
                } else if let Some(first) = seen.insert(&b.upstream, i) {
                    cx.err(
                        &push_key(&p, "upstream"),
                        format!(
                            "upstream `{}` is listed twice (first at backends[{first}])",
                            b.upstream
                        ),
                    );
                }
                cx.weight(&push_key(&p, "weight"), b.weight);
            }
        }
    }
}

fn route_rewrite(cx: &mut Ctx, path: &str, route: &Route) {
    let Some(rw) = &route.rewrite else {
        return;
    };
    let rpath = push_key(path, "rewrite");
    if rw.strip_prefix.is_none() && rw.path.is_none() {
        cx.err(&rpath, "set `strip_prefix` and/or `path`");
    }
    if let Some(prefix) = &rw.strip_prefix {
        let p = push_key(&rpath, "strip_prefix");
        if let Err(e) = check_literal_path(prefix) {
            cx.err(&p, e);
        } else if prefix.contains(['{', '}', '*']) {
            cx.err(
                &p,
                format!("strip_prefix `{prefix}` must be a literal path (no `{{param}}` or `*`)"),
            );
        }
    }
    if let Some(template) = &rw.path {
        let p = push_key(&rpath, "path");
        let params = parse_path_pattern(&route.r#match.path)
            .map(|pat| pat.params().to_vec())
            .unwrap_or_default();
        if let Err(e) = check_template(template, &params) {
            cx.err(&p, e);
        }
    }
}

/// Checks a `rewrite.path` template: an absolute path whose `{name}` references all name
/// parameters captured by the route's path.
fn check_template(template: &str, params: &[String]) -> Result<(), String> {
    if !template.starts_with('/') {
        return Err(format!("rewrite path `{template}` must start with `/`"));
    }
    if let Some(c) = template.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!(
            "rewrite path `{}` contains {}: only visible ASCII is allowed",
            template.escape_debug(),
            describe_char(c)
        ));
    }
    if template.contains(['#', '\\']) {
        return Err(format!(
            "rewrite path `{template}` must not contain `#` or `\\`"
        ));
    }
    let path_part = template.split('?').next().unwrap_or_default();
    if path_part.contains("//") || path_part.split('/').any(|s| s == "." || s == "..") {
        return Err(format!(
            "rewrite path `{template}` must not contain `//`, `.` or `..` segments"
        ));
    }
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err(format!("rewrite path `{template}` has an unmatched `}}`"));
        }
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(format!("rewrite path `{template}` has an unclosed `{{`"));
        };
        let name = &after[..close];
        if !is_param_name(name) {
            return Err(format!(
                "rewrite path `{template}`: invalid parameter reference `{{{name}}}`"
            ));
        }
        if !params.iter().any(|p| p == name) {
            let available = if params.is_empty() {
                "the route's path captures no parameters".to_owned()
            } else {
                format!("available: {}", params.join(", "))
            };
            return Err(format!(
                "rewrite path `{template}` uses `{{{name}}}`, which the route's path does not capture ({available})"
            ));
        }
        rest = &after[close + 1..];
    }
    Ok(())
}

fn header_ops(cx: &mut Ctx, path: &str, ops: &HeaderOps) {
    let set_path = push_key(path, "set");
    let mut set_names = HashSet::new();
    for (name, value) in &ops.set {
        let p = push_key(&set_path, name);
        match check_header_name(name) {
            Err(e) => cx.err(&p, e),
            Ok(lower) => {
                if FORBIDDEN_SET_HEADERS.contains(&lower.as_str()) {
                    cx.err(
                        &p,
                        format!("header `{lower}` is hop-by-hop or framing and cannot be set"),
                    );
                }
                set_names.insert(lower);
            }
        }
        if let Err(e) = check_header_value(value) {
            cx.err(&p, e);
        }
    }
    let remove_path = push_key(path, "remove");
    for (i, name) in ops.remove.iter().enumerate() {
        let p = push_index(&remove_path, i);
        match check_header_name(name) {
            Err(e) => cx.err(&p, e),
            Ok(lower) if set_names.contains(&lower) => {
                cx.err(&p, format!("header `{lower}` is both set and removed"))
            }
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn path_patterns() {
        assert_eq!(
            parse_path_pattern("/a/b").unwrap(),
            PathPattern::Exact("/a/b".into())
        );
        assert_eq!(
            parse_path_pattern("/").unwrap(),
            PathPattern::Exact("/".into())
        );
        assert_eq!(
            parse_path_pattern("/a/").unwrap(),
            PathPattern::Exact("/a/".into())
        );
        assert_eq!(
            parse_path_pattern("/a/*").unwrap(),
            PathPattern::Prefix("/a/".into())
        );
        assert_eq!(
            parse_path_pattern("/*").unwrap(),
            PathPattern::Prefix("/".into())
        );
        assert_eq!(
            parse_path_pattern("/users/{id}/posts/{post_id}")
                .unwrap()
                .params(),
            ["id", "post_id"]
        );
        assert!(matches!(
            parse_path_pattern("/users/{id}/*").unwrap(),
            PathPattern::Params { prefix: true, .. }
        ));
        assert_eq!(
            parse_path_pattern("~ ^/v(?P<ver>[0-9]+)/(?<rest>.*)$")
                .unwrap()
                .params(),
            ["ver", "rest"]
        );
    }

    #[test]
    fn bad_path_patterns() {
        for bad in [
            "a/b",
            "",
            "/a?b",
            "/a#b",
            "/a/../b",
            "/a/./b",
            "/..",
            "/a//b",
            "/a%20",
            "/a\\b",
            "/a;b",
            "/a b",
            "/a/*/b",
            "/a*",
            "/{id}/{id}",
            "/{1x}",
            "/x{id}",
            "/{id",
            "/é",
            "~^/x",
            "~ ",
            "~ (",
        ] {
            assert!(
                parse_path_pattern(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn regex_limits() {
        let err = parse_path_pattern("~ a{1000}{1000}").unwrap_err();
        assert!(err.contains("a{1000}{1000}"), "{err}");
        let long = format!("~ {}", "a".repeat(MAX_REGEX_LEN + 1));
        assert!(parse_path_pattern(&long).unwrap_err().contains("too long"));
    }

    #[test]
    fn hosts() {
        for ok in [
            "api.example.com",
            "*.example.com",
            "localhost",
            "a-b.c1",
            "127.0.0.1",
        ] {
            check_host(ok).unwrap();
        }
        for bad in [
            "api.example.com:8080",
            "*",
            "a.*.com",
            "*example.com",
            "API.example.com",
            "-a.com",
            "a..com",
            "a.com.",
            "",
            "a_b.com",
            "*.",
            "[::1]",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn target_urls() {
        for ok in [
            "http://10.0.0.1:9000",
            "https://api.internal:443",
            "http://a:1/",
            "http://[::1]:80",
            "http://svc",
        ] {
            check_target_url(ok).unwrap();
        }
        for bad in [
            "10.0.0.1:9000",
            "ftp://a:1",
            "http://a:1/x",
            "http://a:1?x=1",
            "http://u:p@a:1",
            "http://",
            "not a url",
            "/path",
        ] {
            assert!(check_target_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn templates() {
        let params = vec!["id".to_owned()];
        check_template("/v2/users/{id}", &params).unwrap();
        check_template("/v2/users?id={id}", &params).unwrap();
        assert!(check_template("/v2/{name}", &params)
            .unwrap_err()
            .contains("available: id"));
        assert!(check_template("v2", &params).is_err());
        assert!(check_template("/v2/{id", &params).is_err());
        assert!(check_template("/v2/id}", &params).is_err());
        assert!(check_template("/v2/../x", &params).is_err());
        assert!(check_template("/v2/{}", &params).is_err());
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header_name("X-Api-Version").unwrap(), "x-api-version");
        assert!(check_header_name("bad header").is_err());
        assert!(check_header_name("").is_err());
        check_header_value("public, max-age=30").unwrap();
        assert!(check_header_value("a\r\nb: c")
            .unwrap_err()
            .contains("CR, LF or NUL"));
        assert!(check_header_value("a\0").is_err());
    }
}
