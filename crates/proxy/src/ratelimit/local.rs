//! In-memory GCRA (generic cell rate algorithm) per key, with bounded memory.
//!
//! State per key is one number, the theoretical arrival time (TAT). A key whose TAT is in the
//! past is indistinguishable from a key never seen, so such keys can be dropped at any time
//! without changing a single decision: that is how idle keys are evicted. Only when a shard
//! is full of *active* keys (a flood of distinct keys) are the keys closest to expiry evicted
//! early, which can only make those keys more lenient, never lock anyone out.
//!
//! Keys are stored as 64-bit hashes from a per-limiter random `RandomState` (SipHash with a
//! secret key), so the hot path allocates nothing and an attacker cannot aim collisions at
//! someone else's bucket (a collision would only make two keys share one budget).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use gatehouse_core::snapshot::RateLimitSpec;
use tokio::time::Instant;

/// Shards per limiter: requests for different keys rarely contend on one mutex.
pub const SHARDS: usize = 64;
/// Keys one shard holds before evicting: 3584 fills a 4096-bucket hash table exactly, so a
/// shard's table never grows past 4096 buckets of 17 bytes (key, TAT, control byte).
pub const MAX_KEYS_PER_SHARD: usize = 3584;
/// Keys one limiter holds at most (229 376).
pub const MAX_KEYS: usize = SHARDS * MAX_KEYS_PER_SHARD;
/// Memory bound of one limiter's tables: 64 shards × 4096 buckets × 17 bytes ≈ 4.25 MiB.
pub const MAX_TABLE_BYTES: usize = SHARDS * 4096 * 17;

/// GCRA parameters in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcra {
    /// Emission interval: what one request costs.
    pub t: u64,
    /// Burst tolerance: `burst × t`, the most debt a key may carry.
    pub cap: u64,
}

/// One decision and what the RateLimit headers report about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Requests that would be admitted right now, after this one.
    pub remaining: u64,
    /// Until the key is back to a full burst.
    pub reset: Duration,
    /// Until the next request would be admitted (zero when allowed).
    pub retry_after: Duration,
}

impl Gcra {
    pub fn new(spec: &RateLimitSpec) -> Gcra {
        let t = spec.emission_interval_ns();
        Gcra {
            t,
            cap: t.saturating_mul(spec.burst),
        }
    }

    /// Decides one request at `now` for a key with `tat` (0 = never seen). Returns the TAT
    /// to store and the decision.
    pub fn decide(&self, tat: u64, now: u64) -> (u64, Decision) {
        let base = tat.max(now);
        let next = base.saturating_add(self.t);
        if next - now <= self.cap {
            (next, self.decision(true, next - now))
        } else {
            (tat, self.decision(false, base - now))
        }
    }

    /// The decision for `debt` = stored TAT − now after the request (as Redis reports it).
    pub fn decision(&self, allowed: bool, debt: u64) -> Decision {
        let remaining = self.cap.saturating_sub(debt) / self.t.max(1);
        let retry_after = if allowed {
            0
        } else {
            (debt + self.t).saturating_sub(self.cap)
        };
        Decision {
            allowed,
            remaining,
            reset: Duration::from_nanos(debt),
            retry_after: Duration::from_nanos(retry_after),
        }
    }
}

/// Hash values are already uniformly distributed (SipHash output here, the seeded token hash
/// of `jwt_cache`): the table uses them as-is.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table = HashMap<u64, u64, BuildHasherDefault<PassThrough>>;

/// A client address as the bytes its limit key hashes: the family (4 or 6), then the address
/// as 16 bytes (IPv4 in the low four), one write instead of the derived hash's discriminant,
/// length and bytes. An IPv4 client and its IPv4-mapped IPv6 form stay two keys, as in a
/// shared limit's Redis key.
pub fn ip_key(ip: IpAddr) -> [u8; 17] {
    let (family, bits) = match ip {
        IpAddr::V4(a) => (4, u128::from(a.to_bits())),
        IpAddr::V6(a) => (6, a.to_bits()),
    };
    let mut b = [family; 17];
    b[1..].copy_from_slice(&bits.to_le_bytes());
    b
}

/// Hashes as one write of [`ip_key`].
struct IpKey(IpAddr);

impl Hash for IpKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&ip_key(self.0));
    }
}

pub struct LocalLimiter {
    gcra: Gcra,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Table>]>,
}

impl LocalLimiter {
    pub fn new(spec: &RateLimitSpec) -> LocalLimiter {
        LocalLimiter {
            gcra: Gcra::new(spec),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
        }
    }

    pub fn gcra(&self) -> Gcra {
        self.gcra
    }

    /// Nanoseconds since this limiter was created (tokio time: paused in tests). Starts at 1
    /// so that 0 can mean "never seen".
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    pub fn hash_key(&self, key: impl Hash) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The key of a client address: one write of its bytes ([`ip_key`]).
    pub fn hash_ip(&self, ip: IpAddr) -> u64 {
        self.hasher.hash_one(IpKey(ip))
    }

    pub fn check(&self, key: impl Hash) -> Decision {
        self.check_hashed(self.hash_key(key))
    }

    pub fn check_hashed(&self, hash: u64) -> Decision {
        let now = self.now();
        let mut shard = self.shard(hash);
        // A key seen before is updated where it is (one probe, not a lookup and an insert).
        if let Some(tat) = shard.get_mut(&hash) {
            let (next, decision) = self.gcra.decide(*tat, now);
            if decision.allowed {
                *tat = next;
            }
            return decision;
        }
        let (tat, decision) = self.gcra.decide(0, now);
        if decision.allowed {
            if shard.len() >= MAX_KEYS_PER_SHARD {
                evict(&mut shard, now);
            }
            shard.insert(hash, tat);
        }
        decision
    }

    /// The decision `check_hashed` would make now, without spending anything (the
    /// auth-failure limit asks before authenticating and spends only on a failure).
    pub fn peek_hashed(&self, hash: u64) -> Decision {
        let now = self.now();
        let tat = self.shard(hash).get(&hash).copied().unwrap_or(0);
        self.gcra.decide(tat, now).1
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Table> {
        // High bits pick the shard; hashbrown uses the low bits and the top 7 inside it.
        let i = ((hash >> 40) as usize) % self.shards.len();
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Keys held now (for tests and the memory bound).
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| match self.shards[i].lock() {
                Ok(g) => g.len(),
                Err(p) => p.into_inner().len(),
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held by the hash tables (buckets × (key + TAT + control byte)).
    pub fn table_bytes(&self) -> usize {
        (0..self.shards.len())
            .map(|i| {
                let cap = match self.shards[i].lock() {
                    Ok(g) => g.capacity(),
                    Err(p) => p.into_inner().capacity(),
                };
                // hashbrown keeps capacity = 7/8 of a power-of-two bucket count.
                let buckets = if cap == 0 {
                    0
                } else {
                    (cap * 8 / 7).next_power_of_two()
                };
                buckets * 17
            })
            .sum()
    }
}

/// Makes room in a full shard: first every expired key (exactly equivalent to absent), then,
/// if the shard is still full of active keys, the eighth closest to expiry. The survivors go
/// into a fresh table of the maximum size: removing in place would leave tombstones that make
/// the table grow past its bound on the next inserts.
fn evict(shard: &mut Table, now: u64) {
    let mut cut = now;
    let active = shard.values().filter(|tat| **tat > now).count();
    if active >= MAX_KEYS_PER_SHARD - MAX_KEYS_PER_SHARD / 16 {
        let mut tats: Vec<u64> = shard.values().copied().collect();
        let nth = tats.len() / 8;
        let (_, c, _) = tats.select_nth_unstable(nth);
        cut = cut.max(*c);
    }
    let mut fresh = Table::with_capacity_and_hasher(MAX_KEYS_PER_SHARD, Default::default());
    fresh.extend(shard.drain().filter(|(_, tat)| *tat > cut));
    *shard = fresh;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use gatehouse_core::snapshot::{LimitKey, LimitScope};

    fn spec(requests: u64, per: Duration, burst: u64) -> RateLimitSpec {
        RateLimitSpec {
            name: "default".into(),
            requests,
            per,
            burst,
            key: LimitKey::Ip,
            scope: LimitScope::Local,
            sync: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gcra_burst_then_exact_rate() {
        // 10 per second: T = 100 ms, burst 10.
        let l = LocalLimiter::new(&spec(10, Duration::from_secs(1), 10));
        for i in 0..10 {
            let d = l.check("k");
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 9 - i);
        }
        let d = l.check("k");
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        assert_eq!(d.reset, Duration::from_secs(1));
        // One nanosecond early: still limited. Exactly on time: admitted, and only one.
        tokio::time::advance(Duration::from_millis(100) - Duration::from_nanos(1)).await;
        assert!(!l.check("k").allowed);
        tokio::time::advance(Duration::from_nanos(1)).await;
        assert!(l.check("k").allowed);
        assert!(!l.check("k").allowed);
        // Other keys are independent.
        assert!(l.check("other").allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn no_double_burst_at_a_window_edge() {
        // A fixed window would admit 10 just before and 10 just after t = 1 s; GCRA admits
        // 10 + elapsed / T over any span.
        let l = LocalLimiter::new(&spec(10, Duration::from_secs(1), 10));
        tokio::time::advance(Duration::from_millis(990)).await;
        let before = (0..20).filter(|_| l.check("k").allowed).count();
        tokio::time::advance(Duration::from_millis(20)).await;
        let after = (0..20).filter(|_| l.check("k").allowed).count();
        assert_eq!(before, 10);
        assert_eq!(after, 0, "20 ms is not enough for one more request");
        // Over one full window from the burst: exactly 10 more, evenly spaced.
        let mut admitted = 0;
        for _ in 0..100 {
            tokio::time::advance(Duration::from_millis(10)).await;
            admitted += (0..5).filter(|_| l.check("k").allowed).count();
        }
        assert_eq!(admitted, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_smaller_than_requests() {
        let l = LocalLimiter::new(&spec(100, Duration::from_secs(60), 5));
        assert_eq!((0..10).filter(|_| l.check(1u8).allowed).count(), 5);
        let d = l.check(1u8);
        assert_eq!(d.retry_after, Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_evicted_first() {
        let l = LocalLimiter::new(&spec(1, Duration::from_secs(1), 1));
        for k in 0..MAX_KEYS as u64 {
            l.check(k);
        }
        assert!(l.len() <= MAX_KEYS);
        // Every key is idle a second later: a new key makes its shard drop them all.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(l.check("fresh").allowed);
        assert!(l.len() < MAX_KEYS - MAX_KEYS_PER_SHARD / 2);
    }

    #[test]
    fn a_million_distinct_keys_stay_within_the_memory_bound() {
        // Long window: no key expires during the test, so eviction of active keys is used.
        let l = LocalLimiter::new(&spec(10, Duration::from_secs(3600), 10));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _g = rt.enter();
        for k in 0..1_000_000u64 {
            assert!(l.check(k).allowed);
        }
        assert!(l.len() <= MAX_KEYS, "{} keys", l.len());
        let bytes = l.table_bytes();
        assert!(
            bytes <= MAX_TABLE_BYTES,
            "{bytes} bytes > bound {MAX_TABLE_BYTES}"
        );
        // A recent key is still limited (eviction takes the keys closest to expiry).
        let recent = 999_999u64;
        for _ in 0..9 {
            l.check(recent);
        }
        assert!(!l.check(recent).allowed);
    }

    #[tokio::test(start_paused = true)]
    async fn peek_spends_nothing() {
        let l = LocalLimiter::new(&spec(2, Duration::from_secs(60), 2));
        let k = l.hash_key("k");
        for _ in 0..10 {
            assert!(l.peek_hashed(k).allowed);
        }
        assert!(l.check_hashed(k).allowed);
        assert!(l.check_hashed(k).allowed);
        let d = l.peek_hashed(k);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_secs(30));
        assert!(l.peek_hashed(l.hash_key("other")).allowed);
    }

    #[test]
    fn decision_from_redis_debt() {
        let g = Gcra { t: 100, cap: 1000 };
        let d = g.decision(true, 1000);
        assert_eq!(d.remaining, 0);
        let d = g.decision(false, 1000);
        assert_eq!(d.retry_after, Duration::from_nanos(100));
        assert_eq!(g.decision(true, 300).remaining, 7);
    }
}
