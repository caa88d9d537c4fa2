//! The rate-limit / concurrency phase: runs after authorize, before the request transform.
//!
//! Local limits are decided in memory; shared ones by one Redis script call each (or from
//! the node's reserved share in `sync` mode). Limits run in order (local first) and stop at
//! the first that denies, so a request denied by one limit does not spend the others. Every
//! response of a limited route carries `RateLimit-Policy` and `RateLimit`
//! (draft-ietf-httpapi-ratelimit-headers, structured fields); a denied one is a 429 with
//! `Retry-After`, or a 503 when Redis is unavailable and `on_error: deny`.

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};

use gatehouse_core::snapshot::{LimitKey, LimitScope, OnError, RedisSpec};
use gatehouse_core::GatewayError;

use crate::context::Ctx;
use crate::ratelimit::local::Decision;
use crate::ratelimit::redis::{RedisStore, StoreError};
use crate::ratelimit::sync::Local;
use crate::ratelimit::{LimitState, RouteLimits};

/// What one request is counted under. Hashed for local limiters (no allocation); rendered
/// into a Redis key for shared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef<'a> {
    Ip(IpAddr),
    Route,
    Header(&'a [u8]),
    Consumer(&'a str),
}

/// A first byte per kind keeps the key spaces apart (an address's is its family, 4 or 6).
/// An address is one 17-byte write (the derived hash made three SipHash writes of it, ~250
/// instructions per limited request).
impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            KeyRef::Ip(ip) => state.write(&crate::ratelimit::local::ip_key(*ip)),
            KeyRef::Route => state.write_u8(1),
            KeyRef::Header(h) => {
                state.write_u8(2);
                h.hash(state);
            }
            KeyRef::Consumer(c) => {
                state.write_u8(3);
                c.hash(state);
            }
        }
    }
}

/// The key of `limit` for this request. A `header:NAME` limit counts requests without the
/// header by client IP (a distinct key space, so a header value equal to an IP is not the IP).
pub fn key_ref<'a>(
    key: &LimitKey,
    client_ip: IpAddr,
    headers: &'a HeaderMap,
    consumer: Option<&'a str>,
) -> KeyRef<'a> {
    match key {
        LimitKey::Ip => KeyRef::Ip(client_ip),
        LimitKey::Route => KeyRef::Route,
        LimitKey::Header(name) => match headers.get(name) {
            Some(v) => KeyRef::Header(v.as_bytes()),
            None => KeyRef::Ip(client_ip),
        },
        // Rate limiting runs after authentication, so a consumer is known here whenever the
        // route authenticated the request.
        LimitKey::Consumer => match consumer {
            Some(c) => KeyRef::Consumer(c),
            None => KeyRef::Ip(client_ip),
        },
    }
}

/// Longest header value used verbatim in a Redis key; longer ones are hashed.
const MAX_VERBATIM: usize = 128;

/// `PREFIX` + key + `}`. Header values that could break the `{...}` hash tag or bloat Redis
/// are replaced by a SHA-256 prefix (the same on every node).
pub fn redis_key(prefix: &str, key: &KeyRef<'_>) -> String {
    let mut k = String::with_capacity(prefix.len() + 48);
    k.push_str(prefix);
    match key {
        KeyRef::Ip(ip) => {
            let _ = write!(k, "ip:{ip}");
        }
        KeyRef::Route => k.push_str("route"),
        KeyRef::Consumer(c) => push_value(&mut k, "c:", "cs:", c.as_bytes()),
        KeyRef::Header(v) => push_value(&mut k, "h:", "hs:", v),
    }
    k.push('}');
    k
}

/// Appends `verbatim_tag` + the value, or `hashed_tag` + a SHA-256 prefix when the value
/// could break the `{...}` hash tag or bloat Redis.
fn push_value(k: &mut String, verbatim_tag: &str, hashed_tag: &str, v: &[u8]) {
    let verbatim = v.len() <= MAX_VERBATIM
        && v.iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'{' | b'}' | b'%'));
    if verbatim {
        k.push_str(verbatim_tag);
        k.extend(v.iter().map(|b| char::from(*b)));
    } else {
        k.push_str(hashed_tag);
        for b in &Sha256::digest(v)[..16] {
            let _ = write!(k, "{b:02x}");
        }
    }
}

/// Whole seconds for `Retry-After` / `t=`: rounded up, so a client that waits that long is
/// admitted.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_nanos().div_ceil(1_000_000_000) as u64
}

enum Outcome {
    Decided(Decision),
    /// Redis failed and `on_error: deny`.
    Unavailable,
}

/// Runs the phase. On success the `RateLimit` header value is left in `ctx` for the
/// response; on denial the error to answer with.
pub async fn check(
    rl: &RouteLimits,
    store: Option<&RedisStore>,
    redis: Option<&RedisSpec>,
    ctx: &mut Ctx,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    if let Some(c) = &rl.concurrency {
        match c.try_acquire() {
            Some(slot) => ctx.in_flight = Some(slot),
            None => {
                rl.outcomes.limited.inc();
                ctx.close |= has_body(headers);
                return Err(GatewayError::RateLimited { retry_after: 1 });
            }
        }
    }
    // Authentication has run, so an authenticated request has its consumer here. Validation
    // requires `auth` on the route; a request without a consumer is not limited per consumer.
    if let (Some(c), Some(consumer)) = (&rl.consumer_concurrency, ctx.consumer.as_deref()) {
        match c.try_acquire(consumer) {
            Some(slot) => ctx.consumer_in_flight = Some(slot),
            None => {
                // Give back the route slot at once: this request will not run.
                ctx.in_flight = None;
                rl.outcomes.limited.inc();
                ctx.close |= has_body(headers);
                return Err(GatewayError::RateLimited { retry_after: 1 });
            }
        }
    }
    if rl.limits.is_empty() {
        return Ok(());
    }
    let mut header = String::with_capacity(32 * rl.limits.len());
    let mut errored = false;
    for l in &rl.limits {
        let key = key_ref(&l.spec.key, ctx.client_ip, headers, ctx.consumer.as_deref());
        let outcome = match l.spec.scope {
            LimitScope::Local => Outcome::Decided(l.local.check(key)),
            // Boxed: the Redis round trip's future is large, and the local path needs none.
            LimitScope::Shared => match Box::pin(shared(l, key, store, redis)).await {
                Ok(d) => Outcome::Decided(d),
                Err(_) => {
                    errored = true;
                    match redis.map_or(OnError::Allow, |r| r.on_error) {
                        OnError::Allow => Outcome::Decided(l.local.check(key)),
                        OnError::Deny => Outcome::Unavailable,
                    }
                }
            },
        };
        let d = match outcome {
            Outcome::Decided(d) => d,
            Outcome::Unavailable => {
                rl.outcomes.error_denied.inc();
                ctx.close |= has_body(headers);
                return Err(GatewayError::Unavailable);
            }
        };
        if !header.is_empty() {
            header.push_str(", ");
        }
        // `"name";r=REMAINING;t=RESET`, without the formatting machinery.
        header.push('"');
        header.push_str(&l.spec.name);
        header.push_str("\";r=");
        header.push_str(itoa::Buffer::new().format(d.remaining));
        header.push_str(";t=");
        header.push_str(itoa::Buffer::new().format(ceil_secs(d.reset)));
        if !d.allowed {
            rl.outcomes.limited.inc();
            ctx.ratelimit = HeaderValue::from_str(&header).ok();
            ctx.close |= has_body(headers);
            return Err(GatewayError::RateLimited {
                retry_after: ceil_secs(d.retry_after).max(1),
            });
        }
    }
    if errored {
        rl.outcomes.error_allowed.inc();
    } else {
        rl.outcomes.allowed.inc();
    }
    ctx.ratelimit = HeaderValue::from_str(&header).ok();
    Ok(())
}

/// A shared decision: from the node's share in `sync` mode, else one script call.
async fn shared(
    l: &LimitState,
    key: KeyRef<'_>,
    store: Option<&RedisStore>,
    redis: Option<&RedisSpec>,
) -> Result<Decision, StoreError> {
    let (Some(store), Some(redis)) = (store, redis) else {
        return Err(StoreError::Redis);
    };
    let gcra = l.local.gcra();
    let Some(leases) = &l.leases else {
        let rk = redis_key(&l.key_prefix, &key);
        let (granted, debt_us) = store
            .take(&rk, l.t_us, l.cap_us, 1, 0, redis.timeout)
            .await?;
        return Ok(gcra.decision(granted > 0, debt_us.saturating_mul(1000)));
    };
    let hash = l.local.hash_key(key);
    match leases.admit(hash) {
        Local::Admitted { remaining, debt_us } => Ok(Decision {
            allowed: true,
            remaining,
            reset: Duration::from_micros(debt_us),
            retry_after: Duration::ZERO,
        }),
        Local::Denied {
            retry_after,
            debt_us,
        } => Ok(Decision {
            allowed: false,
            remaining: 0,
            reset: Duration::from_micros(debt_us),
            retry_after,
        }),
        Local::Reserve { want, giveback } => {
            let rk = redis_key(&l.key_prefix, &key);
            let (granted, debt_us) = store
                .take(&rk, l.t_us, l.cap_us, want, giveback, redis.timeout)
                .await?;
            let d = gcra.decision(granted > 0, debt_us.saturating_mul(1000));
            leases.granted(hash, granted, d.remaining, debt_us, d.retry_after);
            Ok(d)
        }
    }
}

/// A request whose body the gateway will not read: the connection cannot be reused safely.
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_spaces_hash_apart() {
        use std::hash::BuildHasher;
        let h = std::hash::RandomState::new();
        let v4: IpAddr = "203.0.113.7".parse().expect("ip");
        let mapped: IpAddr = "::ffff:203.0.113.7".parse().expect("ip");
        let other: IpAddr = "203.0.113.8".parse().expect("ip");
        let ip = h.hash_one(KeyRef::Ip(v4));
        // IPv4 and its IPv4-mapped IPv6 form are two keys (as in the Redis key); another
        // address is another key.
        assert_ne!(ip, h.hash_one(KeyRef::Ip(mapped)));
        assert_ne!(ip, h.hash_one(KeyRef::Ip(other)));
        let text = "203.0.113.7";
        let all = [
            ip,
            h.hash_one(KeyRef::Ip(mapped)),
            h.hash_one(KeyRef::Route),
            h.hash_one(KeyRef::Header(text.as_bytes())),
            h.hash_one(KeyRef::Consumer(text)),
            h.hash_one(KeyRef::Header(b"")),
            h.hash_one(KeyRef::Consumer("")),
        ];
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
    }

    #[test]
    fn keys() {
        let mut h = HeaderMap::new();
        let ip: IpAddr = "203.0.113.7".parse().expect("ip");
        let name = http::HeaderName::from_static("x-api-key");
        assert_eq!(
            key_ref(&LimitKey::Header(name.clone()), ip, &h, None),
            KeyRef::Ip(ip)
        );
        h.insert("x-api-key", HeaderValue::from_static("abc"));
        let k = key_ref(&LimitKey::Header(name.clone()), ip, &h, None);
        assert_eq!(k, KeyRef::Header(b"abc"));
        assert_eq!(
            redis_key("gatehouse:rl:{r|default|", &k),
            "gatehouse:rl:{r|default|h:abc}"
        );
        assert_eq!(
            redis_key("p{", &key_ref(&LimitKey::Ip, ip, &h, None)),
            "p{ip:203.0.113.7}"
        );
        assert_eq!(redis_key("p{", &KeyRef::Route), "p{route}");
        // Consumers: by name, anonymous requests by IP, in their own key space.
        assert_eq!(
            key_ref(&LimitKey::Consumer, ip, &h, Some("acme")),
            KeyRef::Consumer("acme")
        );
        assert_eq!(key_ref(&LimitKey::Consumer, ip, &h, None), KeyRef::Ip(ip));
        assert_eq!(redis_key("p{", &KeyRef::Consumer("acme")), "p{c:acme}");
        assert!(redis_key("p{", &KeyRef::Consumer("a{b")).starts_with("p{cs:"));
        // Braces would move the cluster hash tag; long values would bloat Redis.
        let braces = redis_key("p{", &KeyRef::Header(b"a}b"));
        assert!(braces.starts_with("p{hs:") && braces.ends_with('}'));
        assert_eq!(braces.matches('}').count(), 1);
        let long = vec![b'a'; 1000];
        assert_eq!(
            redis_key("p{", &KeyRef::Header(&long)).len(),
            2 + 3 + 32 + 1
        );
        // Distinct key spaces.
        assert_ne!(
            redis_key("p{", &KeyRef::Header(b"ip:1.2.3.4")),
            redis_key("p{", &KeyRef::Ip("1.2.3.4".parse().expect("ip")))
        );
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
