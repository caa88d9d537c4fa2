//! Verified-token cache: a JWT whose signature and claims were checked is remembered, so the
//! next request with the same token costs a hash and a compare instead of a signature
//! verification (RS256 is ~400k instructions; a proxied request is ~20k). Envoy's
//! `jwt_cache_config` does the same.
//!
//! What is re-checked on every hit: `exp` and `nbf` against the clock now (with the
//! provider's leeway), and, for a token verified with JWKS keys, that the key set it was
//! verified with is still the current one: after a JWKS refresh (rotation, removal) or once
//! the keys went stale (`max_stale`), the token is verified again from scratch (J11). The
//! issuer, audience and `iat` checks do not depend on time moving forward and hold for the
//! life of the entry; the cache lives as long as the provider's configuration is unchanged.
//!
//! Bounded: `cache_size` entries in shards, tokens longer than [`MAX_CACHED_TOKEN`] are not
//! kept. Only verified tokens are stored (a failure is never cached), and an entry is found
//! by a 64-bit hash of the token's length and tail (within its signature) plus a full
//! compare of the token. The hash is a fast seeded multiply-fold (SipHash over a ~700-byte
//! token was a tenth of a request's cost; the whole token folded, still ~500 instructions):
//! one entry per hash value, so a crafted collision can only evict an entry (its owner's
//! next request is verified again), and only verified tokens, whose signatures the client
//! cannot choose, are ever inserted. The map uses that value as its own hash (hashing it
//! again with SipHash cost as much as the token hash itself).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{Arc, Mutex};

use gatehouse_core::auth::JwtKey;

use super::jwt::Claims;
use crate::ratelimit::local::PassThrough;

/// Longer tokens are verified every time (they are rare and would dominate the memory).
pub const MAX_CACHED_TOKEN: usize = 4096;
const SHARDS: usize = 16;
/// Bytes of the token the cache hashes (the shortest signature, HS256's, is 43 characters).
const HASHED_TAIL: usize = 32;

pub struct VerifiedTokens {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    seed: u64,
}

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Entry, BuildHasherDefault<PassThrough>>,
}

struct Entry {
    token: Box<[u8]>,
    claims: Arc<Claims>,
    exp: Option<f64>,
    nbf: Option<f64>,
    /// The JWKS key set the signature was checked with (`None`: the provider's static keys,
    /// which cannot change without a new configuration and so a new cache).
    keys: Option<Arc<Vec<JwtKey>>>,
}

/// How a hit is checked against the present.
pub struct Now<'a> {
    pub secs: u64,
    pub leeway_secs: f64,
    /// The provider's current JWKS keys, when it has a JWKS endpoint.
    pub jwks_keys: Option<&'a Arc<Vec<JwtKey>>>,
}

impl VerifiedTokens {
    /// `None` when `size` is 0 (caching off).
    pub fn new(size: usize) -> Option<VerifiedTokens> {
        if size == 0 {
            return None;
        }
        Some(VerifiedTokens {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard: size.div_ceil(SHARDS),
            seed: {
                let mut h = RandomState::new().build_hasher();
                h.write_u64(0x5eed);
                h.finish() | 1
            },
        })
    }

    /// The token's last [`HASHED_TAIL`] bytes (inside its signature for every algorithm) and
    /// its length: only verified tokens are stored, and their signatures differ, so the rest
    /// adds nothing but cost (a 700-byte RS256 token hashed whole was ~500 instructions). A
    /// crafted token sharing a stored one's tail is told apart by the full compare.
    fn hash(&self, token: &[u8]) -> u64 {
        let tail = &token[token.len().saturating_sub(HASHED_TAIL)..];
        fold_hash(self.seed ^ token.len() as u64, tail)
    }

    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        // Middle bits pick the shard: the map inside uses the low bits and the top 7.
        let m = &self.shards[((hash >> 40) as usize) % SHARDS];
        match m.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The claims of `token` if it was verified before and is still valid now.
    pub fn get(&self, token: &[u8], now: &Now<'_>) -> Option<Arc<Claims>> {
        if token.len() > MAX_CACHED_TOKEN {
            return None;
        }
        let hash = self.hash(token);
        let mut shard = self.shard(hash);
        let e = shard.map.get(&hash)?;
        if &*e.token != token {
            return None;
        }
        let t = now.secs as f64;
        let fresh = e.exp.is_none_or(|exp| t <= exp + now.leeway_secs)
            && e.nbf.is_none_or(|nbf| t + now.leeway_secs >= nbf);
        let same_keys = match (&e.keys, now.jwks_keys) {
            (None, _) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (Some(_), None) => false,
        };
        if fresh && same_keys {
            Some(e.claims.clone())
        } else {
            shard.map.remove(&hash);
            None
        }
    }

    /// Remembers a token that was just verified with `keys` (`None`: static keys).
    pub fn insert(
        &self,
        token: &str,
        claims: Arc<Claims>,
        keys: Option<Arc<Vec<JwtKey>>>,
        now_secs: u64,
    ) {
        if token.len() > MAX_CACHED_TOKEN {
            return;
        }
        let number = |name: &str| claims.get(name).and_then(|v| v.as_f64());
        let entry = Entry {
            token: token.as_bytes().into(),
            exp: number("exp"),
            nbf: number("nbf"),
            claims: claims.clone(),
            keys,
        };
        let hash = self.hash(token.as_bytes());
        let mut shard = self.shard(hash);
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(&hash) {
            // Full: drop what has expired; if nothing has, drop an arbitrary entry.
            let t = now_secs as f64;
            shard.map.retain(|_, e| e.exp.is_none_or(|exp| exp >= t));
            if shard.map.len() >= self.per_shard {
                if let Some(k) = shard.map.keys().next().copied() {
                    shard.map.remove(&k);
                }
            }
        }
        shard.map.insert(hash, entry);
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| match s.lock() {
                Ok(g) => g.map.len(),
                Err(p) => p.into_inner().map.len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Eight bytes at a time: xor into the state, multiply by an odd constant, fold the high
/// half down. Not a cryptographic hash; see the module comment for why that is enough.
fn fold_hash(seed: u64, bytes: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(K);
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K);
        h ^= h >> 29;
    }
    h.wrapping_mul(K) ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<u64>, nbf: Option<u64>) -> Arc<Claims> {
        let mut c = Claims::new();
        if let Some(e) = exp {
            c.insert("exp".into(), e.into());
        }
        if let Some(n) = nbf {
            c.insert("nbf".into(), n.into());
        }
        Arc::new(c)
    }

    fn now(secs: u64) -> Now<'static> {
        Now {
            secs,
            leeway_secs: 30.0,
            jwks_keys: None,
        }
    }

    #[test]
    fn hit_only_for_the_same_token_while_fresh() {
        let c = VerifiedTokens::new(100).expect("on");
        c.insert("a.b.c", claims(Some(1000), None), None, 0);
        assert!(c.get(b"a.b.c", &now(500)).is_some());
        assert!(c.get(b"a.b.d", &now(500)).is_none());
        // exp + leeway still accepted, beyond not, and the entry is gone.
        assert!(c.get(b"a.b.c", &now(1030)).is_some());
        assert!(c.get(b"a.b.c", &now(1031)).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn a_token_sharing_a_stored_ones_tail_is_not_a_hit() {
        // Same length and same last 32 bytes (so the same hash), a different payload.
        let sig = "S".repeat(64);
        let stored = format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.{sig}");
        let forged = format!("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5.{sig}");
        assert_eq!(stored.len(), forged.len());
        let c = VerifiedTokens::new(100).expect("on");
        assert_eq!(c.hash(stored.as_bytes()), c.hash(forged.as_bytes()));
        c.insert(&stored, claims(Some(1000), None), None, 0);
        assert!(c.get(forged.as_bytes(), &now(500)).is_none());
        assert!(c.get(stored.as_bytes(), &now(500)).is_some());
    }

    #[test]
    fn nbf_is_checked_on_every_hit() {
        let c = VerifiedTokens::new(100).expect("on");
        c.insert("t", claims(None, Some(1000)), None, 0);
        assert!(c.get(b"t", &now(900)).is_none());
        c.insert("t", claims(None, Some(1000)), None, 0);
        assert!(c.get(b"t", &now(971)).is_some());
    }

    #[test]
    fn a_new_jwks_key_set_means_verifying_again() {
        let c = VerifiedTokens::new(100).expect("on");
        let k1 = Arc::new(Vec::new());
        let k2 = Arc::new(Vec::new());
        c.insert("t", claims(Some(10_000), None), Some(k1.clone()), 0);
        let with = |k: Option<&'static Arc<Vec<JwtKey>>>| Now {
            secs: 1,
            leeway_secs: 0.0,
            jwks_keys: k,
        };
        let k1: &'static Arc<Vec<JwtKey>> = Box::leak(Box::new(k1));
        let k2: &'static Arc<Vec<JwtKey>> = Box::leak(Box::new(k2));
        assert!(c.get(b"t", &with(Some(k1))).is_some());
        assert!(c.get(b"t", &with(Some(k2))).is_none());
        // Removed on the miss: the old key set does not bring it back.
        assert!(c.get(b"t", &with(Some(k1))).is_none());
        // Keys gone stale (no current keys): not accepted either.
        c.insert("t", claims(Some(10_000), None), Some(k1.clone()), 0);
        assert!(c.get(b"t", &with(None)).is_none());
    }

    #[test]
    fn fold_hash_spreads_and_depends_on_every_byte() {
        let base = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";
        let h0 = fold_hash(7, base.as_bytes());
        let mut seen = std::collections::HashSet::new();
        for i in 0..base.len() {
            let mut b = base.as_bytes().to_vec();
            b[i] ^= 1;
            let h = fold_hash(7, &b);
            assert_ne!(h, h0, "byte {i} does not change the hash");
            seen.insert(h);
        }
        assert_eq!(seen.len(), base.len());
        assert_ne!(
            fold_hash(7, b"ab"),
            fold_hash(7, b"ab\0"),
            "length is mixed in"
        );
        assert_ne!(fold_hash(7, base.as_bytes()), fold_hash(8, base.as_bytes()));
    }

    #[test]
    fn bounded_and_long_tokens_not_kept() {
        let c = VerifiedTokens::new(32).expect("on");
        for i in 0..10_000 {
            c.insert(&format!("token-{i}"), claims(Some(10_000), None), None, 0);
        }
        assert!(c.len() <= 32, "{}", c.len());
        let long = "x".repeat(MAX_CACHED_TOKEN + 1);
        c.insert(&long, claims(None, None), None, 0);
        assert!(c.get(long.as_bytes(), &now(0)).is_none());
        assert!(VerifiedTokens::new(0).is_none());
    }
}
