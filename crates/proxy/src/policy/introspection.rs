//! OAuth2 token introspection (RFC 7662): the token is POSTed to the provider's endpoint with
//! client credentials; an `active: true` answer admits. Results (active or not) are cached by
//! the token's SHA-256 until the token's `exp` or `cache_for`, whichever is sooner, so each
//! token costs one round trip per `cache_for`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full, Limited};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use gatehouse_core::auth::IntrospectionProvider;

use super::auth::{AuthClient, AuthFailure};
use super::jwt::{now_secs, Claims};

/// Largest accepted introspection response.
const MAX_RESPONSE: usize = 64 * 1024;

/// Token digest -> (claims if active, cached until).
type Entries = HashMap<[u8; 32], (Option<Arc<Claims>>, Instant)>;

#[derive(Default)]
pub struct IntrospectionCache {
    entries: Mutex<Entries>,
    /// Calls made to the endpoint (tests: caching works).
    pub calls: std::sync::atomic::AtomicU64,
}

impl IntrospectionCache {
    fn get(&self, key: &[u8; 32]) -> Option<Option<Arc<Claims>>> {
        let map = match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(c, _)| c.clone())
    }

    fn put(&self, key: [u8; 32], value: Option<Arc<Claims>>, until: Instant, max: usize) {
        let mut map = match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if map.len() >= max {
            let now = Instant::now();
            map.retain(|_, (_, u)| *u > now);
            if map.len() >= max {
                map.clear();
            }
        }
        map.insert(key, (value, until));
    }
}

fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn introspect(
    x: &IntrospectionProvider,
    cache: &IntrospectionCache,
    client: &AuthClient,
    token: &str,
) -> Result<Arc<Claims>, AuthFailure> {
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(hit) = cache.get(&key) {
        return hit.ok_or(AuthFailure::Invalid);
    }
    cache
        .calls
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = format!("token={}&token_type_hint=access_token", form_encode(token));
    let mut req = Request::post(x.url.clone())
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header(header::ACCEPT, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| AuthFailure::Unavailable)?;
    if let Some(a) = &x.authorization {
        req.headers_mut().insert(header::AUTHORIZATION, a.clone());
    }
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|_| AuthFailure::Unavailable)?;
        if !resp.status().is_success() {
            tracing::warn!(url = %x.url, status = %resp.status(), "introspection endpoint refused the gateway");
            return Err(AuthFailure::Unavailable);
        }
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE)
            .collect()
            .await
            .map_err(|_| AuthFailure::Unavailable)?
            .to_bytes();
        serde_json::from_slice::<Claims>(&bytes).map_err(|_| AuthFailure::Unavailable)
    };
    let claims = tokio::time::timeout(x.timeout, call)
        .await
        .map_err(|_| AuthFailure::Unavailable)??;
    let now = now_secs();
    let exp = claims.get("exp").and_then(|v| v.as_u64());
    let active =
        claims.get("active") == Some(&serde_json::Value::Bool(true)) && exp.is_none_or(|e| e > now);
    let mut ttl = x.cache_for;
    if let Some(e) = exp.filter(|_| active) {
        ttl = ttl.min(std::time::Duration::from_secs(e.saturating_sub(now)));
    }
    let value = active.then(|| Arc::new(claims));
    cache.put(key, value.clone(), Instant::now() + ttl, x.max_entries);
    value.ok_or(AuthFailure::Invalid)
}
