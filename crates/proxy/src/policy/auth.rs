//! The authenticate phase: runs a route's providers (`any_of` / `all_of`) and produces the
//! request's [`Identity`]. Long-lived provider state (JWKS caches, introspection caches) is
//! held by [`AuthState`] in `Shared`, keyed by provider name and config fingerprint, so a
//! reload keeps warm caches when a provider is unchanged.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use gatehouse_core::auth::{
    AuthRequirement, JwtKey, JwtProvider, KeySource, Provider, ProviderKind,
};
use gatehouse_core::Snapshot;

use super::api_key;
use super::forward_auth;
use super::introspection::IntrospectionCache;
use super::jwks::JwksCache;
use super::jwt::{self, Claims};
use super::jwt_cache::{self, VerifiedTokens};
use crate::body::Body;
use crate::context::Ctx;

pub type AuthClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Longest identity header value the gateway forwards (X4).
pub const MAX_IDENTITY_VALUE: usize = 4096;

fn new_client() -> AuthClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let https = match builder
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
    {
        Ok(b) => b.https_or_http().enable_http1().wrap_connector(http),
        Err(e) => {
            tracing::error!(
                "TLS setup for auth clients failed: {e}; HTTPS auth services will fail"
            );
            hyper_rustls::HttpsConnector::from((
                http,
                Arc::new(
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .map(|b| {
                        b.with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| {
                        rustls::ClientConfig::builder()
                            .with_root_certificates(rustls::RootCertStore::empty())
                            .with_no_client_auth()
                    }),
                ),
            ))
        }
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// Per-provider runtime objects, resolved for each snapshot (index = provider index).
#[derive(Clone)]
pub enum ProviderRuntime {
    None,
    Jwt {
        /// The JWKS cache, when the provider has `jwks_url`.
        jwks: Option<Arc<JwksCache>>,
        /// Tokens already verified (`cache_size: 0` turns it off).
        verified: Option<Arc<VerifiedTokens>>,
    },
    Introspection(Arc<IntrospectionCache>),
}

/// A provider's verified-token cache (`None`: `cache_size: 0`).
type VerifiedSlot = Option<Arc<VerifiedTokens>>;

#[derive(Default)]
pub struct AuthState {
    client: OnceLock<AuthClient>,
    jwks: Mutex<HashMap<String, (String, Arc<JwksCache>)>>,
    verified: Mutex<HashMap<String, (String, VerifiedSlot)>>,
    introspection: Mutex<HashMap<String, (String, Arc<IntrospectionCache>)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl AuthState {
    pub fn client(&self) -> &AuthClient {
        self.client.get_or_init(new_client)
    }

    /// Runtime objects for `snap`'s providers. Unchanged providers keep their caches; caches
    /// of removed or changed providers are dropped (their refreshers stop).
    pub fn resolve(&self, snap: &Snapshot) -> Vec<ProviderRuntime> {
        let mut jwks = lock(&self.jwks);
        let mut verified = lock(&self.verified);
        let mut intro = lock(&self.introspection);
        let mut out = Vec::new();
        let mut keep = Vec::new();
        for p in &snap.auth.providers {
            keep.push(p.name.clone());
            let rt = match &p.kind {
                ProviderKind::Jwt(j) => {
                    let jwks_cache = j.jwks.as_ref().map(|src| match jwks.get(&p.name) {
                        Some((fp, c)) if *fp == p.fingerprint => c.clone(),
                        _ => {
                            let c = JwksCache::start(src.clone(), self.client().clone());
                            jwks.insert(p.name.clone(), (p.fingerprint.clone(), c.clone()));
                            c
                        }
                    });
                    // Verified tokens stay valid for as long as the provider's settings
                    // (keys, issuer, audiences, algorithms) are unchanged.
                    let tokens = match verified.get(&p.name) {
                        Some((fp, c)) if *fp == p.fingerprint => c.clone(),
                        _ => {
                            let c = VerifiedTokens::new(j.cache_size).map(Arc::new);
                            verified.insert(p.name.clone(), (p.fingerprint.clone(), c.clone()));
                            c
                        }
                    };
                    ProviderRuntime::Jwt {
                        jwks: jwks_cache,
                        verified: tokens,
                    }
                }
                ProviderKind::Introspection(_) => {
                    let cache = match intro.get(&p.name) {
                        Some((fp, c)) if *fp == p.fingerprint => c.clone(),
                        _ => {
                            let c = Arc::new(IntrospectionCache::default());
                            intro.insert(p.name.clone(), (p.fingerprint.clone(), c.clone()));
                            c
                        }
                    };
                    ProviderRuntime::Introspection(cache)
                }
                _ => ProviderRuntime::None,
            };
            out.push(rt);
        }
        jwks.retain(|k, _| keep.contains(k));
        verified.retain(|k, _| keep.contains(k));
        intro.retain(|k, _| keep.contains(k));
        out
    }
}

/// Who the request is, as far as the gateway knows.
#[derive(Default)]
pub struct Identity {
    pub consumer: Option<usize>,
    /// The consumer claim's value when it names no configured consumer (logged).
    pub subject: Option<String>,
    pub claims: Option<Arc<Claims>>,
    /// Headers to set on the upstream request (after client copies were stripped).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Credentials to remove before proxying (`hide_credentials`).
    pub hide: Vec<KeySource>,
}

impl Identity {
    fn merge(&mut self, other: Identity) {
        if self.consumer.is_none() {
            self.consumer = other.consumer;
        }
        if self.subject.is_none() {
            self.subject = other.subject;
        }
        if self.claims.is_none() {
            self.claims = other.claims;
        }
        self.headers.extend(other.headers);
        self.hide.extend(other.hide);
    }

    pub fn consumer_name<'a>(&'a self, snap: &'a Snapshot) -> Option<&'a str> {
        self.consumer
            .map(|c| snap.auth.consumers[c].name.as_str())
            .or(self.subject.as_deref())
    }
}

/// Why authentication did not admit the request. Ordered: the most specific wins when
/// several `any_of` providers fail.
pub enum AuthFailure {
    /// No credential for this provider was presented -> 401.
    Missing,
    /// A credential was presented and refused -> 401 `error="invalid_token"`.
    Invalid,
    /// The auth service (introspection, forward auth) could not be asked -> 503.
    Unavailable,
    /// Forward auth refused: its response goes to the client.
    Respond(Box<Response<Body>>),
}

impl AuthFailure {
    /// A credential was presented and refused (an invalid token or key, or a forward-auth
    /// 401/403): what `limits.auth_failures` counts. A missing credential or an unavailable
    /// auth service is not a failed attempt.
    pub fn is_refusal(&self) -> bool {
        match self {
            AuthFailure::Invalid => true,
            AuthFailure::Respond(r) => matches!(r.status().as_u16(), 401 | 403),
            AuthFailure::Missing | AuthFailure::Unavailable => false,
        }
    }

    fn rank(&self) -> u8 {
        match self {
            AuthFailure::Missing => 0,
            AuthFailure::Invalid => 1,
            AuthFailure::Unavailable => 2,
            AuthFailure::Respond(_) => 3,
        }
    }
}

/// What a provider sees of the request.
pub struct AuthRequest<'a> {
    pub method: &'a http::Method,
    pub uri: &'a http::Uri,
    pub headers: &'a HeaderMap,
    pub ctx: &'a Ctx,
}

pub async fn authenticate(
    req: &AuthRequest<'_>,
    requirement: &AuthRequirement,
    snap: &Snapshot,
    runtimes: &[ProviderRuntime],
    state: &AuthState,
) -> Result<Identity, AuthFailure> {
    match requirement {
        AuthRequirement::AnyOf(list) => {
            let mut worst = AuthFailure::Missing;
            for &i in list {
                match run_provider(req, i, snap, runtimes, state).await {
                    Ok(id) => return Ok(id),
                    Err(f) if f.rank() >= worst.rank() => worst = f,
                    Err(_) => {}
                }
            }
            Err(worst)
        }
        AuthRequirement::AllOf(list) => {
            let mut identity = Identity::default();
            for &i in list {
                identity.merge(run_provider(req, i, snap, runtimes, state).await?);
            }
            Ok(identity)
        }
    }
}

async fn run_provider(
    req: &AuthRequest<'_>,
    index: usize,
    snap: &Snapshot,
    runtimes: &[ProviderRuntime],
    state: &AuthState,
) -> Result<Identity, AuthFailure> {
    let p: &Provider = &snap.auth.providers[index];
    let rt = runtimes
        .get(index)
        .cloned()
        .unwrap_or(ProviderRuntime::None);
    let result = match &p.kind {
        ProviderKind::Jwt(j) => {
            let (raw, now, current) = match jwt_cached(req, p, j, &rt, snap)? {
                Cached::Hit(id) => return Ok(id),
                Cached::Miss { raw, now, current } => (raw, now, current),
            };
            let (jwks, verified) = match &rt {
                ProviderRuntime::Jwt { jwks, verified } => (jwks.as_deref(), verified.as_deref()),
                _ => (None, None),
            };
            let token = std::str::from_utf8(raw).map_err(|_| AuthFailure::Invalid)?;
            let parsed = jwt::parse(token, j).map_err(|e| refused(p, &e))?;
            let mut outcome = parsed.verify_with(&j.keys);
            let mut used_jwks = None;
            if outcome.is_err() {
                if let (Some(cache), Some(mut keys)) = (jwks, current) {
                    outcome = parsed.verify_with(&keys);
                    // Key rotation: an unknown kid (or no keys yet) asks for one refetch,
                    // rate-limited inside the cache (J4).
                    if outcome == Err(jwt::JwtError::UnknownKid) || keys.is_empty() {
                        keys = cache.refresh_for_unknown_kid().await;
                        outcome = parsed.verify_with(&keys);
                    }
                    used_jwks = Some(keys);
                }
            }
            outcome.map_err(|e| refused(p, &e))?;
            let claims = Arc::new(parsed.claims(j, now).map_err(|e| refused(p, &e))?);
            if let Some(cache) = verified {
                cache.insert(token, claims.clone(), used_jwks, now);
            }
            identity_from_claims(p, snap, claims)
        }
        ProviderKind::ApiKey(k) => api_key::authenticate(k, req, snap),
        ProviderKind::Introspection(x) => {
            let token = bearer(req.headers)?;
            let ProviderRuntime::Introspection(cache) = &rt else {
                return Err(AuthFailure::Unavailable);
            };
            let claims = super::introspection::introspect(x, cache, state.client(), token).await?;
            identity_from_claims(p, snap, claims)
        }
        ProviderKind::Forward(f) => forward_auth::check(f, req, state.client()).await,
    };
    result
}

/// The requirement decided without waiting, when it can be: one provider that is an API key
/// or a JWT the verified-token cache knows (the usual request). `None`: run
/// [`authenticate`] (its future is large and boxed; this path allocates nothing).
pub fn authenticate_now(
    req: &AuthRequest<'_>,
    requirement: &AuthRequirement,
    snap: &Snapshot,
    runtimes: &[ProviderRuntime],
) -> Option<Result<Identity, AuthFailure>> {
    let &[index] = requirement.providers() else {
        return None;
    };
    let p: &Provider = &snap.auth.providers[index];
    let result = match &p.kind {
        ProviderKind::ApiKey(k) => api_key::authenticate(k, req, snap),
        ProviderKind::Jwt(j) => {
            let rt = runtimes.get(index)?;
            match jwt_cached(req, p, j, rt, snap) {
                Ok(Cached::Hit(id)) => Ok(id),
                Ok(Cached::Miss { .. }) => return None,
                Err(e) => Err(e),
            }
        }
        _ => return None,
    };
    // As `authenticate` ends for one provider: any-of returns its outcome; all-of merges its
    // identity into an empty one.
    Some(match requirement {
        AuthRequirement::AnyOf(_) => result,
        AuthRequirement::AllOf(_) => result.map(|id| {
            let mut identity = Identity::default();
            identity.merge(id);
            identity
        }),
    })
}

enum Cached<'r> {
    Hit(Identity),
    /// Not in the cache: the token, the time and the JWKS keys it was looked up with.
    Miss {
        raw: &'r [u8],
        now: u64,
        current: Option<Arc<Vec<JwtKey>>>,
    },
}

/// The bearer token looked up in the provider's verified-token cache.
fn jwt_cached<'r>(
    req: &AuthRequest<'r>,
    p: &Provider,
    j: &JwtProvider,
    rt: &ProviderRuntime,
    snap: &Snapshot,
) -> Result<Cached<'r>, AuthFailure> {
    let raw = bearer_bytes(req.headers)?;
    let (jwks, verified) = match rt {
        ProviderRuntime::Jwt { jwks, verified } => (jwks.as_deref(), verified.as_deref()),
        _ => (None, None),
    };
    let now = jwt::now_secs();
    // The JWKS keys as they are now: a cached token verified with an older set is verified
    // again.
    let current = jwks.map(|c| c.keys());
    if let Some(cache) = verified {
        let check = jwt_cache::Now {
            secs: now,
            leeway_secs: j.leeway.as_secs_f64(),
            jwks_keys: current.as_ref(),
        };
        if let Some(claims) = cache.get(raw, &check) {
            return identity_from_claims(p, snap, claims).map(Cached::Hit);
        }
    }
    Ok(Cached::Miss { raw, now, current })
}

fn refused(p: &Provider, e: &jwt::JwtError) -> AuthFailure {
    tracing::debug!(provider = %p.name, reason = ?e, "token refused");
    AuthFailure::Invalid
}

/// The bearer token from the one `Authorization` header. Two headers are ambiguous (K3).
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    std::str::from_utf8(bearer_bytes(headers)?).map_err(|_| AuthFailure::Invalid)
}

/// The bearer token as bytes: the JWT path looks it up in the verified-token cache before
/// anything else, and only a token it has not seen is checked further (UTF-8, base64...).
pub fn bearer_bytes(headers: &HeaderMap) -> Result<&[u8], AuthFailure> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let Some(v) = all.next() else {
        return Err(AuthFailure::Missing);
    };
    if all.next().is_some() {
        return Err(AuthFailure::Invalid);
    }
    let v = v.as_bytes();
    let sp = v
        .iter()
        .position(|b| *b == b' ')
        .ok_or(AuthFailure::Missing)?;
    if !v[..sp].eq_ignore_ascii_case(b"bearer") {
        // Another scheme (Basic...) is not a credential for this provider.
        return Err(AuthFailure::Missing);
    }
    let token = v[sp + 1..].trim_ascii();
    if token.is_empty() {
        return Err(AuthFailure::Invalid);
    }
    Ok(token)
}

/// A claim as a header value: strings as-is, numbers and booleans printed, arrays of
/// strings joined with spaces, objects as JSON. CR/LF/NUL or oversized values fail (X4).
pub fn claim_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        serde_json::Value::Array(a) => Some(
            a.iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        serde_json::Value::Object(_) => Some(v.to_string()),
        serde_json::Value::Null => None,
    }
}

fn header_value(text: &str) -> Result<HeaderValue, AuthFailure> {
    if text.len() > MAX_IDENTITY_VALUE || text.bytes().any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(AuthFailure::Invalid);
    }
    HeaderValue::from_str(text).map_err(|_| AuthFailure::Invalid)
}

static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

pub(crate) fn consumer_headers(
    snap: &Snapshot,
    consumer: usize,
    out: &mut Vec<(HeaderName, HeaderValue)>,
) {
    let c = &snap.auth.consumers[consumer];
    out.push((X_CONSUMER_USERNAME.clone(), c.header_name.clone()));
    if let Some(g) = &c.header_groups {
        out.push((X_CONSUMER_GROUPS.clone(), g.clone()));
    }
}

pub(crate) fn identity_from_claims(
    p: &Provider,
    snap: &Snapshot,
    claims: Arc<Claims>,
) -> Result<Identity, AuthFailure> {
    let mut id = Identity::default();
    if let Some(name) = &p.consumer_claim {
        if let Some(v) = claims.get(name).and_then(|v| v.as_str()) {
            match snap.auth.consumer_index.get(v) {
                Some(&c) => {
                    id.consumer = Some(c);
                    consumer_headers(snap, c, &mut id.headers);
                }
                None => {
                    if v.len() <= 256 && !v.contains(|c: char| c.is_control()) {
                        id.subject = Some(v.to_string());
                    }
                }
            }
        }
    }
    for (claim, header) in &p.forward_claims {
        if let Some(text) = claims.get(claim).and_then(claim_text) {
            id.headers.push((header.clone(), header_value(&text)?));
        }
    }
    id.claims = Some(claims);
    Ok(id)
}
