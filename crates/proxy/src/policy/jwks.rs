//! JWKS cache for one JWT provider: fetched in the background with a TTL (honouring
//! `Cache-Control: max-age`, clamped to `[min_refresh, 1d]`), single-flight, one rate-limited
//! refetch when an unknown `kid` arrives (key rotation), last good keys kept when the endpoint
//! fails (until `max_stale`), bounded response size. Lives in `Shared` (not in the snapshot)
//! so a reload that keeps the provider unchanged keeps its warm keys.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full, Limited};
use tokio::time::Instant;

use gatehouse_core::auth::{parse_jwks, JwksSource, JwtKey};

use super::auth::AuthClient;

pub struct JwksCache {
    source: JwksSource,
    client: AuthClient,
    state: Mutex<State>,
    /// Held for the duration of a fetch: concurrent refreshes wait and reuse the result.
    fetch_lock: tokio::sync::Mutex<()>,
    /// Number of HTTP fetches made (tests: flood of unknown kids -> bounded fetches).
    pub fetches: std::sync::atomic::AtomicU64,
}

struct State {
    keys: Arc<Vec<JwtKey>>,
    /// Last successful fetch.
    fetched: Option<Instant>,
    /// Last fetch attempt (success or not): the unknown-kid rate limit.
    attempted: Option<Instant>,
    next_refresh: Instant,
}

impl JwksCache {
    /// Creates the cache and starts its background refresher (which ends when the cache is
    /// dropped, e.g. after a reload that changed the provider).
    pub fn start(source: JwksSource, client: AuthClient) -> Arc<JwksCache> {
        let cache = Arc::new(JwksCache {
            source,
            client,
            state: Mutex::new(State {
                keys: Arc::new(Vec::new()),
                fetched: None,
                attempted: None,
                next_refresh: Instant::now(),
            }),
            fetch_lock: tokio::sync::Mutex::new(()),
            fetches: std::sync::atomic::AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&cache);
        tokio::spawn(refresher(weak));
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The current keys, or none once they are older than `max_stale`.
    pub fn keys(&self) -> Arc<Vec<JwtKey>> {
        let s = self.lock();
        match s.fetched {
            Some(t) if t.elapsed() <= self.source.max_stale => s.keys.clone(),
            _ => Arc::new(Vec::new()),
        }
    }

    /// Called when a token names a `kid` the cache does not hold (or when there are no keys
    /// yet). Fetches at most once per `min_refresh` however many requests ask (J4); callers
    /// arriving during a fetch wait for it. Returns the keys afterwards.
    pub async fn refresh_for_unknown_kid(&self) -> Arc<Vec<JwtKey>> {
        let allowed = |s: &State| {
            s.attempted
                .is_none_or(|t| t.elapsed() >= self.source.min_refresh)
        };
        if !allowed(&self.lock()) {
            // A fetch may be running right now (the first one, at startup): wait for it
            // rather than answer with no keys; never start another.
            let _guard = self.fetch_lock.lock().await;
            return self.keys();
        }
        let _guard = self.fetch_lock.lock().await;
        // Someone else may have fetched while we waited.
        if allowed(&self.lock()) {
            self.fetch_once().await;
        }
        self.keys()
    }

    async fn fetch_once(&self) {
        self.lock().attempted = Some(Instant::now());
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let result = tokio::time::timeout(self.source.timeout, self.fetch()).await;
        let now = Instant::now();
        let mut s = self.lock();
        match result {
            Ok(Ok((keys, ttl))) => {
                s.keys = Arc::new(keys);
                s.fetched = Some(now);
                s.next_refresh = now + ttl;
            }
            Ok(Err(e)) => {
                tracing::warn!(url = %self.source.url, error = %e, "JWKS fetch failed; keeping the last good keys");
                s.next_refresh = now + self.source.min_refresh;
            }
            Err(_) => {
                tracing::warn!(url = %self.source.url, "JWKS fetch timed out; keeping the last good keys");
                s.next_refresh = now + self.source.min_refresh;
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<JwtKey>, Duration), String> {
        let req = Request::get(self.source.url.clone())
            .header(header::ACCEPT, "application/jwk-set+json, application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_max_age);
        let body = Limited::new(resp.into_body(), self.source.max_bytes)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("invalid JSON: {e}"))?;
        let (keys, errors) = parse_jwks(&doc);
        for e in &errors {
            tracing::warn!(url = %self.source.url, "JWKS key skipped: {e}");
        }
        if keys.is_empty() {
            return Err("no usable keys".into());
        }
        let ttl = max_age
            .unwrap_or(self.source.ttl)
            .clamp(self.source.min_refresh, Duration::from_secs(86_400));
        Ok((keys, ttl))
    }
}

fn parse_max_age(v: &str) -> Option<Duration> {
    let mut max_age = None;
    for d in v.split(',') {
        let d = d.trim();
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Some(Duration::ZERO);
        }
        if let Some(n) = d
            .split_once('=')
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("max-age"))
        {
            max_age = n.1.trim().trim_matches('"').parse::<u64>().ok();
        }
    }
    max_age.map(Duration::from_secs)
}

async fn refresher(weak: Weak<JwksCache>) {
    loop {
        let wait = {
            let Some(cache) = weak.upgrade() else { return };
            let due = cache.lock().next_refresh;
            if due <= Instant::now() {
                let _guard = cache.fetch_lock.lock().await;
                cache.fetch_once().await;
                continue;
            }
            due
        };
        // Wake at least every few seconds to notice a dropped cache.
        let cap = Instant::now() + Duration::from_secs(5);
        tokio::time::sleep_until(wait.min(cap)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_parsing() {
        assert_eq!(
            parse_max_age("public, max-age=600"),
            Some(Duration::from_secs(600))
        );
        assert_eq!(parse_max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(parse_max_age("public"), None);
    }
}
