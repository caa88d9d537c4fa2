//! Compiled router implementing the SPEC.md route precedence.
//!
//! # Precedence
//! A request is matched against candidates in this order; the first candidate whose
//! conditions (methods, headers) all hold wins:
//! 1. **Path kind**: exact > prefix (longest literal prefix first) > parameterised > regex.
//!    Among parameterised patterns that match the same path, a literal segment beats a
//!    `{param}` segment at the first position where they differ (`/users/me/{x}` beats
//!    `/users/{id}/{x}`). Among regexes, the pattern declared first wins.
//! 2. **Host**: exact host > longer wildcard suffix > shorter wildcard suffix > any host.
//!    (For regexes the host comes before the declaration order.)
//! 3. **Conditions**: routes with more match conditions (method list, header count) first;
//!    then declaration order.
//!
//! If a candidate fails its conditions the next one in this order is tried (e.g. a longer
//! prefix route that requires a header falls back to a shorter prefix).
//!
//! # Matching rules
//! - The path given to [`Router::find`] is the `route` form of
//!   [`normalize_path`](crate::normalize::normalize_path); patterns must be written in that
//!   canonical form (checked at build).
//! - Exact: byte-equal, so `/a` does not match `/a/`.
//! - Prefix `/api` (written `/api/*`) matches `/api`, `/api/` and `/api/...`, never `/apix`
//!   (segment boundaries, P8). `""`/`/` (written `/*`) matches every path starting with `/`.
//!   [`Params::rest`] is the remainder after the prefix (`""`, `/`, `/x/y`, ...).
//! - Params: every `{name}` is a whole segment and matches exactly one non-empty segment.
//! - Regex: matched against the path with `Regex::is_match` semantics (write `^...$` to
//!   anchor); named groups become params.
//! - Hosts: the request host without port, case-insensitive; `*.example.com` matches
//!   `a.example.com` and `a.b.example.com` but not `example.com`. A route without hosts (or
//!   with `*`) matches any host, including requests without a host.
//! - Methods: `None` = any. `HEAD` is allowed wherever `GET` is; a route that lists `HEAD`
//!   (or any method) explicitly is preferred over a `GET` route in the same bucket.
//! - Headers: every listed header must be present and every value of it must equal the
//!   configured value exactly (name case-insensitive, value byte-exact). Hence two routes that
//!   require different values for the same header are disjoint.
//! - 405: when no route matched but some candidate matched on path, host and headers and
//!   failed only on the method, [`RouteMatch::MethodNotAllowed`] carries the union of the
//!   allowed methods (with `HEAD` added wherever `GET` is allowed).
//!
//! # Cost
//! Exact and prefix lookups are hash-map lookups per applicable host table (prefixes walk the
//! path's segment boundaries longest first); parameterised patterns use one `matchit` tree per
//! host table keyed by shape, with a linear scan only when the best shape's routes all fail
//! their conditions. Regexes use one `RegexSet` per host table. The found path allocates
//! nothing for exact, prefix and parameterised routes (up to 4 params).

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};

/// The tables looked up per request. Fx hashing: their keys come from the configuration,
/// never from requests, so there is nothing to flood; SipHash of each path candidate was a
/// large part of a lookup.
type Lookup<V> = HashMap<Box<str>, V, rustc_hash::FxBuildHasher>;
use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::normalize::normalize_path;

/// Size limit for each compiled regex (and per pattern in a `RegexSet`).
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Parameters stored inline in [`Params`] before spilling to the heap.
/// Four: a route rarely has more, and the matched `Params` is moved several times per
/// request (each 64 bytes more in it was ~16 instructions a move).
const INLINE_PARAMS: usize = 4;

/// A route's path pattern, as compiled from the config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathPattern {
    /// Exact path, e.g. `/health`.
    Exact(String),
    /// Literal prefix on segment boundaries: `/api` for `/api/*`, `""` or `/` for `/*`.
    Prefix(String),
    /// Parameterised path, e.g. `/users/{id}/orders`.
    Params(String),
    /// Regex over the path, written without the `~ ` marker.
    Regex(String),
}

/// One route's match conditions.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    /// Empty = any host. `api.example.com` or `*.example.com`.
    pub hosts: Vec<String>,
    /// The path pattern.
    pub path: PathPattern,
    /// `None` = any method.
    pub methods: Option<Vec<Method>>,
    /// Required headers (all must be present with exactly this value).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl RouteSpec {
    /// A route matching `path` on any host, with any method and no header condition.
    pub fn new(path: PathPattern) -> Self {
        RouteSpec {
            hosts: Vec::new(),
            path,
            methods: None,
            headers: Vec::new(),
        }
    }
}

/// A build error; `route` (and `other` for collisions) index the input slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError {
    /// The offending route.
    pub route: usize,
    /// The route it collides with, if any.
    pub other: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RouterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.other {
            Some(o) => write!(
                f,
                "route #{} (collides with route #{}): {}",
                self.route, o, self.message
            ),
            None => write!(f, "route #{}: {}", self.route, self.message),
        }
    }
}

impl std::error::Error for RouterError {}

/// The outcome of [`Router::find`].
// `Found` is large on purpose: its params live inline so that a match does not allocate.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum RouteMatch<'p> {
    /// `route` indexes the slice given to [`Router::build`].
    Found {
        /// Index of the matched route.
        route: usize,
        /// Captured path parameters.
        params: Params<'p>,
    },
    /// Some route matched path, host and headers, but none allows the method.
    MethodNotAllowed {
        /// Allowed methods, deduplicated, in a stable order (standard methods first).
        allow: Vec<Method>,
    },
    /// No route matched.
    NotFound,
}

impl RouteMatch<'_> {
    /// The `Allow` header value for a 405 (`GET, HEAD, POST`), `None` otherwise.
    pub fn allow_header(&self) -> Option<String> {
        match self {
            RouteMatch::MethodNotAllowed { allow } => {
                let mut s = String::new();
                for (i, m) in allow.iter().enumerate() {
                    if i > 0 {
                        s.push_str(", ");
                    }
                    s.push_str(m.as_str());
                }
                Some(s)
            }
            _ => None,
        }
    }
}

/// Captured parameters: `{name}` segments, regex named groups, and the prefix remainder.
/// Names borrow from the router, values from the request path.
#[derive(Clone)]
pub struct Params<'p> {
    inline: [(&'p str, &'p str); INLINE_PARAMS],
    len: usize,
    spill: Vec<(&'p str, &'p str)>,
    rest: Option<&'p str>,
}

impl<'p> Params<'p> {
    fn new() -> Self {
        Params {
            inline: [("", ""); INLINE_PARAMS],
            len: 0,
            spill: Vec::new(),
            rest: None,
        }
    }

    fn push(&mut self, name: &'p str, value: &'p str) {
        if self.len < INLINE_PARAMS {
            self.inline[self.len] = (name, value);
            self.len += 1;
        } else {
            self.spill.push((name, value));
        }
    }

    /// The value of parameter `name`.
    pub fn get(&self, name: &str) -> Option<&'p str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// For prefix routes: the path after the prefix (`""`, `/`, `/x/y`). `None` otherwise.
    pub fn rest(&self) -> Option<&'p str> {
        self.rest
    }

    /// All `(name, value)` pairs in pattern order.
    pub fn iter(&self) -> impl Iterator<Item = (&'p str, &'p str)> + '_ {
        self.inline[..self.len]
            .iter()
            .chain(self.spill.iter())
            .copied()
    }

    /// Number of named parameters.
    pub fn len(&self) -> usize {
        self.len + self.spill.len()
    }

    /// True when there is no named parameter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Params")
            .field("params", &self.iter().collect::<Vec<_>>())
            .field("rest", &self.rest)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// compiled form

type RouteId = u32;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Lit(Box<str>),
    Param,
}

#[derive(Debug)]
enum Kind {
    Exact,
    Prefix,
    Params {
        segs: Box<[Seg]>,
        names: Box<[Box<str>]>,
    },
    Regex(Regex),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum HostPat {
    Exact(Box<str>),
    /// Stored as the suffix with its leading dot: `.example.com`.
    Wildcard(Box<str>),
}

#[derive(Debug)]
struct Route {
    kind: Kind,
    /// Canonical pattern text (prefix without `/*`, params as written, regex source).
    pattern: Box<str>,
    hosts: Box<[HostPat]>,
    methods: Option<Box<[Method]>>,
    headers: Box<[(HeaderName, HeaderValue)]>,
    conditions: usize,
}

enum MethodMatch {
    Yes,
    ImpliedHead,
    No,
}

impl Route {
    #[inline]
    fn method_match(&self, method: &Method) -> MethodMatch {
        match &self.methods {
            None => MethodMatch::Yes,
            Some(ms) => {
                if ms.contains(method) {
                    MethodMatch::Yes
                } else if method == Method::HEAD && ms.contains(&Method::GET) {
                    MethodMatch::ImpliedHead
                } else {
                    MethodMatch::No
                }
            }
        }
    }

    #[inline]
    fn headers_match(&self, headers: &HeaderMap) -> bool {
        self.headers.iter().all(|(name, value)| {
            let mut it = headers.get_all(name).iter();
            match it.next() {
                Some(first) => first == value && it.all(|v| v == value),
                None => false,
            }
        })
    }
}

#[derive(Debug)]
struct ParamBucket {
    /// `true` per param segment; compared lexicographically, smaller = more specific.
    shape: Box<[bool]>,
    segs: Box<[Seg]>,
    routes: Box<[RouteId]>,
}

#[derive(Debug)]
struct RegexBucket {
    regex: Regex,
    routes: Box<[RouteId]>,
}

#[derive(Debug, Default)]
struct HostTable {
    exact: Lookup<Box<[RouteId]>>,
    prefix: Lookup<Box<[RouteId]>>,
    params: matchit::Router<u32>,
    param_buckets: Vec<ParamBucket>,
    regex_set: Option<RegexSet>,
    regex_buckets: Vec<RegexBucket>,
}

/// The compiled, immutable router. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    exact_hosts: Lookup<HostTable>,
    wildcard_hosts: Lookup<HostTable>,
    any_host: HostTable,
    any_host_used: bool,
    has_exact: bool,
    has_prefix: bool,
    has_params: bool,
    has_regex: bool,
    max_prefix_len: usize,
}

/// The host tables that apply to one request, most specific first. Inline up to 6.
struct Tables<'r> {
    inline: [&'r HostTable; 6],
    len: usize,
    spill: Vec<&'r HostTable>,
}

impl<'r> Tables<'r> {
    fn new(filler: &'r HostTable) -> Self {
        Tables {
            inline: [filler; 6],
            len: 0,
            spill: Vec::new(),
        }
    }

    fn push(&mut self, t: &'r HostTable) {
        if self.len < self.inline.len() {
            self.inline[self.len] = t;
            self.len += 1;
        } else {
            self.spill.push(t);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &'r HostTable> + '_ {
        self.inline[..self.len]
            .iter()
            .chain(self.spill.iter())
            .copied()
    }
}

/// Strips a port and a trailing dot: `Example.com.:8080` → `Example.com`.
fn strip_port(host: &str) -> &str {
    let h = if host.starts_with('[') {
        match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        }
    } else {
        match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        }
    };
    h.strip_suffix('.').unwrap_or(h)
}

// ---------------------------------------------------------------------------------------------
// build

/// Per-table buckets while building.
#[derive(Default)]
struct TableBuilder {
    exact: HashMap<Box<str>, Vec<RouteId>>,
    prefix: HashMap<Box<str>, Vec<RouteId>>,
    /// shape string (`/users/{}`) → bucket index
    param_index: HashMap<String, usize>,
    params: Vec<(Box<[Seg]>, Vec<RouteId>)>,
    regex_index: HashMap<Box<str>, usize>,
    regexes: Vec<(Box<str>, Vec<RouteId>)>,
}

impl TableBuilder {
    fn add(&mut self, id: RouteId, route: &Route) {
        fn push_unique(v: &mut Vec<RouteId>, id: RouteId) {
            if v.last() != Some(&id) {
                v.push(id);
            }
        }
        match &route.kind {
            Kind::Exact => push_unique(self.exact.entry(route.pattern.clone()).or_default(), id),
            Kind::Prefix => push_unique(self.prefix.entry(route.pattern.clone()).or_default(), id),
            Kind::Params { segs, .. } => {
                let key = shape_key(segs);
                let idx = match self.param_index.get(&key) {
                    Some(&i) => i,
                    None => {
                        self.params.push((segs.clone(), Vec::new()));
                        self.param_index.insert(key, self.params.len() - 1);
                        self.params.len() - 1
                    }
                };
                push_unique(&mut self.params[idx].1, id);
            }
            Kind::Regex(_) => {
                let idx = match self.regex_index.get(&route.pattern) {
                    Some(&i) => i,
                    None => {
                        self.regexes.push((route.pattern.clone(), Vec::new()));
                        self.regex_index
                            .insert(route.pattern.clone(), self.regexes.len() - 1);
                        self.regexes.len() - 1
                    }
                };
                push_unique(&mut self.regexes[idx].1, id);
            }
        }
    }
}

fn shape_key(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        s.push('/');
        match seg {
            Seg::Lit(l) => s.push_str(l),
            Seg::Param => s.push_str("{}"),
        }
    }
    s
}

/// The matchit pattern for a shape: params named `p0`, `p1`, ...
fn matchit_pattern(segs: &[Seg]) -> String {
    let mut s = String::new();
    let mut n = 0;
    for seg in segs {
        s.push('/');
        match seg {
            Seg::Lit(l) => s.push_str(l),
            Seg::Param => {
                s.push_str(&format!("{{p{n}}}"));
                n += 1;
            }
        }
    }
    s
}

/// Checks that `s` is a canonical, parameter-free path (what `normalize_path` yields as
/// `route`); returns a message otherwise.
fn check_literal_path(s: &str) -> Result<(), String> {
    match normalize_path(s) {
        Ok(n) if n.forward == s && n.route == s => Ok(()),
        Ok(n) if n.route != n.forward => Err(format!(
            "path `{s}` contains `;` parameters, which are stripped before routing"
        )),
        Ok(n) => Err(format!(
            "path `{s}` is not in normalized form; write `{}`",
            n.forward
        )),
        Err(e) => Err(format!("path `{s}` is invalid: {e}")),
    }
}

fn is_param_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Compiled `{param}` pattern: segments and parameter names in order.
type ParamsPattern = (Box<[Seg]>, Box<[Box<str>]>);

fn compile_params(p: &str) -> Result<ParamsPattern, String> {
    let body = p
        .strip_prefix('/')
        .ok_or_else(|| format!("path `{p}` must start with '/'"))?;
    let mut segs = Vec::new();
    let mut names: Vec<Box<str>> = Vec::new();
    let mut literal = String::new();
    for seg in body.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_param_name(name) {
                return Err(format!("invalid parameter name `{{{name}}}` in `{p}`"));
            }
            if names.iter().any(|n| &**n == name) {
                return Err(format!("parameter `{name}` appears twice in `{p}`"));
            }
            names.push(name.into());
            segs.push(Seg::Param);
            literal.push_str("/x");
        } else if seg.contains('{') || seg.contains('}') {
            return Err(format!(
                "in `{p}`, a parameter must be a whole segment like `{{id}}`"
            ));
        } else {
            segs.push(Seg::Lit(seg.into()));
            literal.push('/');
            literal.push_str(seg);
        }
    }
    check_literal_path(&literal).map_err(|_| {
        format!("path `{p}` is not in normalized form (no `//`, dot segments, `;` or non-canonical escapes)")
    })?;
    Ok((segs.into_boxed_slice(), names.into_boxed_slice()))
}

fn compile_host(h: &str) -> Result<Option<HostPat>, String> {
    let h = h.trim().to_ascii_lowercase();
    if h == "*" {
        return Ok(None);
    }
    let h = match h.strip_suffix('.') {
        Some(s) if !s.ends_with('*') => s,
        _ => &h,
    };
    let bad = |c: char| c.is_whitespace() || c == '/' || c.is_control();
    if h.is_empty() || h.contains(bad) {
        return Err(format!("invalid host `{h}`"));
    }
    if let Some(suffix) = h.strip_prefix("*.") {
        if suffix.is_empty() || suffix.contains('*') || suffix.starts_with('.') {
            return Err(format!("invalid wildcard host `{h}`"));
        }
        return Ok(Some(HostPat::Wildcard(format!(".{suffix}").into())));
    }
    if h.contains('*') {
        return Err(format!(
            "invalid host `{h}`: `*` is only allowed as a leading `*.` label"
        ));
    }
    if !h.starts_with('[') && h.contains(':') {
        return Err(format!("host `{h}` must not contain a port"));
    }
    Ok(Some(HostPat::Exact(h.into())))
}

fn compile_route(spec: &RouteSpec) -> Result<Route, String> {
    let (kind, pattern): (Kind, Box<str>) = match &spec.path {
        PathPattern::Exact(p) => {
            check_literal_path(p)?;
            (Kind::Exact, p.as_str().into())
        }
        PathPattern::Prefix(p) => {
            let p = p.strip_suffix('*').unwrap_or(p);
            let p = p.strip_suffix('/').unwrap_or(p);
            if !p.is_empty() {
                check_literal_path(p)?;
            }
            (Kind::Prefix, p.into())
        }
        PathPattern::Params(p) => {
            let (segs, names) = compile_params(p)?;
            if names.is_empty() {
                check_literal_path(p)?;
                (Kind::Exact, p.as_str().into())
            } else {
                (Kind::Params { segs, names }, p.as_str().into())
            }
        }
        PathPattern::Regex(r) => {
            let re = RegexBuilder::new(r)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("invalid regex `{r}`: {e}"))?;
            (Kind::Regex(re), r.as_str().into())
        }
    };
    let mut hosts: Vec<HostPat> = Vec::new();
    let mut any = spec.hosts.is_empty();
    for h in &spec.hosts {
        match compile_host(h)? {
            None => any = true,
            Some(hp) => {
                if !hosts.contains(&hp) {
                    hosts.push(hp)
                }
            }
        }
    }
    if any {
        hosts.clear(); // `*` makes the route any-host
    }
    let methods = match &spec.methods {
        None => None,
        Some(ms) if ms.is_empty() => return Err("empty method list matches nothing".into()),
        Some(ms) => {
            let mut v: Vec<Method> = Vec::with_capacity(ms.len());
            for m in ms {
                if !v.contains(m) {
                    v.push(m.clone());
                }
            }
            Some(v.into_boxed_slice())
        }
    };
    for (i, (name, _)) in spec.headers.iter().enumerate() {
        if spec.headers[..i].iter().any(|(n, _)| n == name) {
            return Err(format!("header condition `{name}` is listed twice"));
        }
    }
    let conditions =
        usize::from(!hosts.is_empty()) + usize::from(methods.is_some()) + spec.headers.len();
    Ok(Route {
        kind,
        pattern,
        hosts: hosts.into_boxed_slice(),
        methods,
        headers: spec.headers.clone().into_boxed_slice(),
        conditions,
    })
}

fn methods_overlap(a: &Option<Box<[Method]>>, b: &Option<Box<[Method]>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a.iter().any(|m| b.contains(m)),
        _ => true,
    }
}

fn headers_disjoint(a: &[(HeaderName, HeaderValue)], b: &[(HeaderName, HeaderValue)]) -> bool {
    a.iter()
        .any(|(n, v)| b.iter().any(|(n2, v2)| n == n2 && v != v2))
}

fn method_rank(m: &Method) -> usize {
    const ORDER: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    ORDER.iter().position(|o| o == m).unwrap_or(ORDER.len())
}

impl Router {
    /// Compiles `routes`. Returns every error found (invalid patterns, hosts, regexes, and
    /// collisions: two routes that can match the same request with equal precedence).
    pub fn build(routes: &[RouteSpec]) -> Result<Router, Vec<RouterError>> {
        let mut errors = Vec::new();
        if routes.len() > u32::MAX as usize {
            errors.push(RouterError {
                route: 0,
                other: None,
                message: "too many routes".into(),
            });
            return Err(errors);
        }
        let mut compiled = Vec::with_capacity(routes.len());
        for (i, spec) in routes.iter().enumerate() {
            match compile_route(spec) {
                Ok(r) => compiled.push(r),
                Err(message) => errors.push(RouterError {
                    route: i,
                    other: None,
                    message,
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }

        let mut exact_b: HashMap<Box<str>, TableBuilder> = HashMap::new();
        let mut wild_b: HashMap<Box<str>, TableBuilder> = HashMap::new();
        let mut any_b = TableBuilder::default();
        for (i, r) in compiled.iter().enumerate() {
            let id = i as RouteId;
            if r.hosts.is_empty() {
                any_b.add(id, r);
            }
            for h in r.hosts.iter() {
                match h {
                    HostPat::Exact(h) => exact_b.entry(h.clone()).or_default().add(id, r),
                    HostPat::Wildcard(s) => wild_b.entry(s.clone()).or_default().add(id, r),
                }
            }
        }

        let mut reported = HashSet::new();
        let mut finish = |tb: TableBuilder, errors: &mut Vec<RouterError>| -> HostTable {
            finish_table(tb, &compiled, errors, &mut reported)
        };
        let any_host_used = !any_b.exact.is_empty()
            || !any_b.prefix.is_empty()
            || !any_b.params.is_empty()
            || !any_b.regexes.is_empty();
        let any_host = finish(any_b, &mut errors);
        let exact_hosts: Lookup<HostTable> = exact_b
            .into_iter()
            .map(|(k, tb)| (k, finish(tb, &mut errors)))
            .collect();
        let wildcard_hosts: Lookup<HostTable> = wild_b
            .into_iter()
            .map(|(k, tb)| (k, finish(tb, &mut errors)))
            .collect();
        if !errors.is_empty() {
            errors.sort_by_key(|e| (e.route, e.other));
            return Err(errors);
        }
        let kind_used = |f: fn(&Kind) -> bool| compiled.iter().any(|r| f(&r.kind));
        let has_exact = kind_used(|k| matches!(k, Kind::Exact));
        let has_prefix = kind_used(|k| matches!(k, Kind::Prefix));
        let has_params = kind_used(|k| matches!(k, Kind::Params { .. }));
        let has_regex = kind_used(|k| matches!(k, Kind::Regex(_)));
        let max_prefix_len = compiled
            .iter()
            .filter(|r| matches!(r.kind, Kind::Prefix))
            .map(|r| r.pattern.len())
            .max()
            .unwrap_or(0);
        Ok(Router {
            routes: compiled,
            exact_hosts,
            wildcard_hosts,
            any_host,
            any_host_used,
            has_exact,
            has_prefix,
            has_params,
            has_regex,
            max_prefix_len,
        })
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there is no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Finds the route for a request. `host` is the request host (port and case are
    /// tolerated), `path` the `route` form of the normalized path.
    pub fn find<'p>(
        &'p self,
        host: Option<&str>,
        path: &'p str,
        method: &Method,
        headers: &HeaderMap,
    ) -> RouteMatch<'p> {
        let tables = self.tables(host);
        let mut mismatch = false;
        if let Some(m) = self.search(&tables, path, method, headers, &mut mismatch, None) {
            return m;
        }
        if !mismatch {
            return RouteMatch::NotFound;
        }
        // Error path: run again, collecting the allowed methods.
        let mut allow = Vec::new();
        let _ = self.search(
            &tables,
            path,
            method,
            headers,
            &mut mismatch,
            Some(&mut allow),
        );
        if allow.contains(&Method::GET) && !allow.contains(&Method::HEAD) {
            allow.push(Method::HEAD);
        }
        allow.sort_by(|a, b| {
            method_rank(a)
                .cmp(&method_rank(b))
                .then_with(|| a.as_str().cmp(b.as_str()))
        });
        allow.dedup();
        if allow.is_empty() {
            RouteMatch::NotFound
        } else {
            RouteMatch::MethodNotAllowed { allow }
        }
    }

    /// Describes how route `route` is matched and where it sits in the precedence order
    /// (for `gatehouse explain`). `None` if the index is out of range.
    pub fn precedence_explain(&self, route: usize) -> Option<String> {
        let r = self.routes.get(route)?;
        let path = match &r.kind {
            Kind::Exact => format!("exact path `{}` (path rank 1 of 4: exact)", r.pattern),
            Kind::Prefix => format!(
                "prefix `{}/*` (path rank 2 of 4: prefix, literal length {}; longer prefixes first)",
                r.pattern,
                r.pattern.len()
            ),
            Kind::Params { names, .. } => format!(
                "parameterised path `{}` with {} parameter(s) (path rank 3 of 4: literal segments beat parameters)",
                r.pattern,
                names.len()
            ),
            Kind::Regex(_) => format!(
                "regex `{}` (path rank 4 of 4: regex, declaration order)",
                r.pattern
            ),
        };
        let hosts = if r.hosts.is_empty() {
            "any host (least specific)".to_string()
        } else {
            let list: Vec<String> = r
                .hosts
                .iter()
                .map(|h| match h {
                    HostPat::Exact(h) => format!("{h} (exact)"),
                    HostPat::Wildcard(s) => format!("*{s} (wildcard)"),
                })
                .collect();
            format!("hosts {}", list.join(", "))
        };
        let methods = match &r.methods {
            None => "any method".to_string(),
            Some(ms) => {
                let v: Vec<&str> = ms.iter().map(Method::as_str).collect();
                let implied = if ms.contains(&Method::GET) && !ms.contains(&Method::HEAD) {
                    " (+HEAD)"
                } else {
                    ""
                };
                format!("methods {}{implied}", v.join(","))
            }
        };
        let headers = if r.headers.is_empty() {
            "no header condition".to_string()
        } else {
            let v: Vec<String> = r
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            format!("headers {}", v.join("; "))
        };
        Some(format!(
            "{path}; {hosts}; {methods}; {headers}; {} match condition(s)",
            r.conditions
        ))
    }

    fn tables(&self, host: Option<&str>) -> Tables<'_> {
        let mut t = Tables::new(&self.any_host);
        if let Some(h) = host {
            if !self.exact_hosts.is_empty() || !self.wildcard_hosts.is_empty() {
                let h = strip_port(h);
                let mut buf = [0u8; 256];
                let h = if h.bytes().any(|b| b.is_ascii_uppercase()) {
                    match buf.get_mut(..h.len()) {
                        Some(dst) => {
                            dst.copy_from_slice(h.as_bytes());
                            dst.make_ascii_lowercase();
                            std::str::from_utf8(dst).unwrap_or("")
                        }
                        None => "", // longer than any valid host name
                    }
                } else {
                    h
                };
                if !h.is_empty() {
                    if let Some(table) = self.exact_hosts.get(h) {
                        t.push(table);
                    }
                    if !self.wildcard_hosts.is_empty() {
                        for (i, _) in h.match_indices('.') {
                            if i == 0 {
                                continue;
                            }
                            if let Some(table) = self.wildcard_hosts.get(&h[i..]) {
                                t.push(table);
                            }
                        }
                    }
                }
            }
        }
        if self.any_host_used {
            t.push(&self.any_host);
        }
        t
    }

    /// Picks the first route of `bucket` whose conditions hold.
    #[inline]
    fn pick(
        &self,
        bucket: &[RouteId],
        method: &Method,
        headers: &HeaderMap,
        mismatch: &mut bool,
        allow: &mut Option<&mut Vec<Method>>,
    ) -> Option<(usize, &Route)> {
        let mut implied = None;
        for &id in bucket {
            let id = id as usize;
            let Some(r) = self.routes.get(id) else {
                continue;
            };
            if !r.headers_match(headers) {
                continue;
            }
            match r.method_match(method) {
                MethodMatch::Yes => return Some((id, r)),
                MethodMatch::ImpliedHead => {
                    if implied.is_none() {
                        implied = Some((id, r));
                    }
                }
                MethodMatch::No => {
                    *mismatch = true;
                    if let (Some(allow), Some(ms)) = (allow.as_deref_mut(), &r.methods) {
                        allow.extend(ms.iter().cloned());
                    }
                }
            }
        }
        implied
    }

    fn search<'p>(
        &'p self,
        tables: &Tables<'p>,
        path: &'p str,
        method: &Method,
        headers: &HeaderMap,
        mismatch: &mut bool,
        mut allow: Option<&mut Vec<Method>>,
    ) -> Option<RouteMatch<'p>> {
        // 1. exact
        if self.has_exact {
            for t in tables.iter() {
                if let Some(b) = t.exact.get(path) {
                    if let Some((id, _)) = self.pick(b, method, headers, mismatch, &mut allow) {
                        return Some(RouteMatch::Found {
                            route: id,
                            params: Params::new(),
                        });
                    }
                }
            }
        }
        // 2. prefix, longest first, on segment boundaries
        if self.has_prefix {
            let whole = (!path.ends_with('/')).then_some(path);
            // `/` by byte from the end (a `str` char search cost more than the lookups).
            let bytes = path.as_bytes();
            let cands = whole.into_iter().chain(
                (0..bytes.len())
                    .rev()
                    .filter(|&i| bytes[i] == b'/')
                    .map(|i| &path[..i]),
            );
            for cand in cands {
                if cand.len() > self.max_prefix_len {
                    continue;
                }
                for t in tables.iter() {
                    if let Some(b) = t.prefix.get(cand) {
                        if let Some((id, _)) = self.pick(b, method, headers, mismatch, &mut allow) {
                            let mut params = Params::new();
                            params.rest = Some(&path[cand.len()..]);
                            return Some(RouteMatch::Found { route: id, params });
                        }
                    }
                }
            }
        }
        // 3. parameterised
        if self.has_params {
            if let Some(m) = self.search_params(tables, path, method, headers, mismatch, &mut allow)
            {
                return Some(m);
            }
        }
        // 4. regex
        if self.has_regex {
            for t in tables.iter() {
                if t.regex_buckets.is_empty() {
                    continue;
                }
                let found = match &t.regex_set {
                    Some(set) => {
                        let ms = set.matches(path);
                        let mut found = None;
                        for idx in ms.iter() {
                            if let Some(rb) = t.regex_buckets.get(idx) {
                                found =
                                    self.pick(&rb.routes, method, headers, mismatch, &mut allow);
                                if found.is_some() {
                                    break;
                                }
                            }
                        }
                        found
                    }
                    None => {
                        let mut found = None;
                        for rb in &t.regex_buckets {
                            if rb.regex.is_match(path) {
                                found =
                                    self.pick(&rb.routes, method, headers, mismatch, &mut allow);
                                if found.is_some() {
                                    break;
                                }
                            }
                        }
                        found
                    }
                };
                if let Some((id, r)) = found {
                    let mut params = Params::new();
                    if let Kind::Regex(re) = &r.kind {
                        if let Some(caps) = re.captures(path) {
                            for name in re.capture_names().flatten() {
                                if let Some(m) = caps.name(name) {
                                    params.push(name, m.as_str());
                                }
                            }
                        }
                    }
                    return Some(RouteMatch::Found { route: id, params });
                }
            }
        }
        None
    }

    fn search_params<'p>(
        &'p self,
        tables: &Tables<'p>,
        path: &'p str,
        method: &Method,
        headers: &HeaderMap,
        mismatch: &mut bool,
        allow: &mut Option<&mut Vec<Method>>,
    ) -> Option<RouteMatch<'p>> {
        // Best shape across host tables: most specific shape, then most specific host.
        let mut best: Option<(&'p ParamBucket, matchit::Params<'p, 'p>)> = None;
        for t in tables.iter() {
            if t.param_buckets.is_empty() {
                continue;
            }
            if let Ok(m) = t.params.at(path) {
                if let Some(pb) = t.param_buckets.get(*m.value as usize) {
                    if best.as_ref().is_none_or(|(b, _)| pb.shape < b.shape) {
                        best = Some((pb, m.params));
                    }
                }
            }
        }
        let (best_pb, best_params) = best?;
        if let Some((id, r)) = self.pick(&best_pb.routes, method, headers, mismatch, allow) {
            let mut params = Params::new();
            if let Kind::Params { names, .. } = &r.kind {
                for (name, (_, value)) in names.iter().zip(best_params.iter()) {
                    params.push(name, value);
                }
            }
            return Some(RouteMatch::Found { route: id, params });
        }
        // Rare fallback: the best shape's routes all failed their conditions. Scan every
        // parameterised bucket of the applicable tables in precedence order.
        let mut cands: Vec<(&'p ParamBucket, usize)> = Vec::new();
        for (ti, t) in tables.iter().enumerate() {
            for pb in &t.param_buckets {
                if !std::ptr::eq(pb, best_pb) && segs_match(&pb.segs, path) {
                    cands.push((pb, ti));
                }
            }
        }
        cands.sort_by(|a, b| a.0.shape.cmp(&b.0.shape).then(a.1.cmp(&b.1)));
        for (pb, _) in cands {
            if let Some((id, r)) = self.pick(&pb.routes, method, headers, mismatch, allow) {
                let mut params = Params::new();
                if let Kind::Params { segs, names } = &r.kind {
                    let values = segs
                        .iter()
                        .zip(path.get(1..).unwrap_or("").split('/'))
                        .filter(|(s, _)| matches!(s, Seg::Param))
                        .map(|(_, v)| v);
                    for (name, value) in names.iter().zip(values) {
                        params.push(name, value);
                    }
                }
                return Some(RouteMatch::Found { route: id, params });
            }
        }
        None
    }
}

fn segs_match(segs: &[Seg], path: &str) -> bool {
    let Some(body) = path.strip_prefix('/') else {
        return false;
    };
    let mut it = body.split('/');
    for seg in segs {
        match (seg, it.next()) {
            (Seg::Lit(l), Some(p)) if **l == *p => {}
            (Seg::Param, Some(p)) if !p.is_empty() => {}
            _ => return false,
        }
    }
    it.next().is_none()
}

fn finish_table(
    tb: TableBuilder,
    routes: &[Route],
    errors: &mut Vec<RouterError>,
    reported: &mut HashSet<(usize, usize)>,
) -> HostTable {
    let order = |v: &mut Vec<RouteId>| {
        v.sort_by_key(|&id| (Reverse(routes[id as usize].conditions), id));
    };
    let mut check = |v: &[RouteId], errors: &mut Vec<RouterError>| {
        for (i, &a) in v.iter().enumerate() {
            for &b in &v[i + 1..] {
                let (ra, rb) = (&routes[a as usize], &routes[b as usize]);
                if ra.conditions == rb.conditions
                    && methods_overlap(&ra.methods, &rb.methods)
                    && !headers_disjoint(&ra.headers, &rb.headers)
                {
                    let (lo, hi) = (a.min(b) as usize, a.max(b) as usize);
                    if reported.insert((lo, hi)) {
                        errors.push(RouterError {
                            route: hi,
                            other: Some(lo),
                            message: format!(
                                "two routes can match the same requests with equal precedence: same \
                                 path pattern `{}`, overlapping hosts and methods, the same number of \
                                 match conditions, and header conditions that can hold together",
                                routes[lo].pattern
                            ),
                        });
                    }
                }
            }
        }
    };
    let mut freeze = |m: HashMap<Box<str>, Vec<RouteId>>, errors: &mut Vec<RouterError>| {
        m.into_iter()
            .map(|(k, mut v)| {
                order(&mut v);
                check(&v, errors);
                (k, v.into_boxed_slice())
            })
            .collect::<Lookup<_>>()
    };
    let exact = freeze(tb.exact, errors);
    let prefix = freeze(tb.prefix, errors);

    let mut params = matchit::Router::new();
    let mut param_buckets = Vec::with_capacity(tb.params.len());
    for (idx, (segs, mut v)) in tb.params.into_iter().enumerate() {
        order(&mut v);
        check(&v, errors);
        if let Err(e) = params.insert(matchit_pattern(&segs), idx as u32) {
            if let Some(&first) = v.first() {
                errors.push(RouterError {
                    route: first as usize,
                    other: None,
                    message: format!("cannot compile path pattern: {e}"),
                });
            }
        }
        param_buckets.push(ParamBucket {
            shape: segs.iter().map(|s| matches!(s, Seg::Param)).collect(),
            segs,
            routes: v.into_boxed_slice(),
        });
    }

    let mut regex_buckets = Vec::with_capacity(tb.regexes.len());
    for (_pattern, mut v) in tb.regexes {
        order(&mut v);
        check(&v, errors);
        let Some(regex) = v.first().and_then(|&id| match &routes[id as usize].kind {
            Kind::Regex(re) => Some(re.clone()),
            _ => None,
        }) else {
            continue;
        };
        regex_buckets.push(RegexBucket {
            regex,
            routes: v.into_boxed_slice(),
        });
    }
    let regex_set = if regex_buckets.is_empty() {
        None
    } else {
        // If the combined set is too large, fall back to testing each regex in order.
        RegexSetBuilder::new(regex_buckets.iter().map(|b| b.regex.as_str()))
            .size_limit(REGEX_SIZE_LIMIT.saturating_mul(regex_buckets.len()))
            .build()
            .ok()
    };

    HostTable {
        exact,
        prefix,
        params,
        param_buckets,
        regex_set,
        regex_buckets,
    }
}

#[cfg(test)]
mod tests;
