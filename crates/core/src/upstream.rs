//! Compiled upstream sets and their target selection: smooth weighted round robin, weighted
//! random, weighted least-request (power of two choices) and a consistent-hash ring. Health
//! *state* lives outside the snapshot (in the proxy's registry, so it survives reloads); a
//! pick only asks a `healthy(i)` callback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::HeaderName;
use rustls::sign::CertifiedKey;
use rustls_pki_types::CertificateDer;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastRequest,
    ConsistentHash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::Random => "random",
            Balance::LeastRequest => "least_request",
            Balance::ConsistentHash => "consistent_hash",
        }
    }
}

/// What `consistent_hash` hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HashOn {
    Ip,
    /// The authenticated consumer's name; an anonymous request hashes its client IP.
    Consumer,
    Header(HeaderName),
    Cookie(String),
    Path,
}

impl HashOn {
    /// Parses `ip | consumer | header:NAME | cookie:NAME | path` (also used for route
    /// stickiness, which allows only `header:` and `cookie:`).
    pub fn parse(s: &str) -> Result<HashOn, String> {
        match s {
            "ip" => return Ok(HashOn::Ip),
            "consumer" => return Ok(HashOn::Consumer),
            "path" => return Ok(HashOn::Path),
            _ => {}
        }
        if let Some(name) = s.strip_prefix("header:") {
            return HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("invalid header name in `{s}`"));
        }
        if let Some(name) = s.strip_prefix("cookie:") {
            let name = name.trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                return Err(format!("invalid cookie name in `{s}`"));
            }
            return Ok(HashOn::Cookie(name.to_string()));
        }
        Err(format!(
            "`{s}` is not a hash key: use ip, consumer, header:NAME, cookie:NAME or path"
        ))
    }
}

#[derive(Clone, Debug)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    /// Whole request, across every try.
    pub request: Duration,
    /// One try; `None` means `request`.
    pub per_try: Option<Duration>,
    pub idle: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCheck {
    /// TCP connect only (no HTTP request).
    pub tcp: bool,
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
    /// Empty: 200..=399.
    pub statuses: Vec<u16>,
}

impl ActiveCheck {
    pub fn status_ok(&self, status: u16) -> bool {
        if self.statuses.is_empty() {
            (200..400).contains(&status)
        } else {
            self.statuses.contains(&status)
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passive {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
    /// Percent of targets that may be ejected at once (at least one).
    pub max_ejected_pct: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_reset: bool,
    pub on_timeout: bool,
    pub on_statuses: Vec<u16>,
    pub budget_pct: u32,
    pub budget_min: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breaker {
    pub max_connections: u32,
    pub max_pending: u32,
    pub pending_timeout: Duration,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            max_connections: 1024,
            max_pending: 1024,
            pending_timeout: Duration::from_secs(1),
        }
    }
}

/// Upstream TLS, with files already read at compile time.
pub struct UpstreamTls {
    pub verify: bool,
    /// Trust anchors instead of the built-in Mozilla roots.
    pub roots: Option<Vec<CertificateDer<'static>>>,
    /// mTLS client certificate.
    pub client: Option<Arc<CertifiedKey>>,
    pub sni: Option<String>,
    /// Digest of the settings and file contents: equal fingerprints share one client.
    pub fingerprint: String,
}

pub struct Target {
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    pub weight: u32,
    /// Requests in flight to this target (least_request).
    pub in_flight: AtomicUsize,
}

impl Target {
    /// The host to connect to or resolve: a name, or an IP literal without its brackets.
    pub fn host(&self) -> &str {
        self.authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
    }
}

pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub http2: bool,
    pub timeouts: UpstreamTimeouts,
    pub hash_on: HashOn,
    pub active: Option<ActiveCheck>,
    pub passive: Option<Passive>,
    /// Below this percentage of healthy targets, health is ignored (panic mode); 0 = never.
    pub panic_below_pct: u32,
    pub retries: Option<RetryPolicy>,
    pub breaker: Breaker,
    pub tls: Option<Arc<UpstreamTls>>,
    pub dns_refresh: Duration,
    /// Smooth weighted round-robin order precomputed at compile time (nginx's algorithm),
    /// so a pick is one atomic increment and an index.
    schedule: Vec<u16>,
    cursor: AtomicUsize,
    total_weight: u32,
    /// Consistent-hash ring: sorted (point, target index).
    ring: Vec<(u64, u16)>,
}

/// Virtual nodes per target on average; each target gets a share proportional to its weight.
const RING_POINTS_PER_TARGET: u64 = 160;

impl Upstream {
    pub fn new(
        name: String,
        targets: Vec<Target>,
        balance: Balance,
        http2: bool,
        timeouts: UpstreamTimeouts,
    ) -> Upstream {
        let schedule = smooth_schedule(&targets.iter().map(|t| t.weight).collect::<Vec<_>>());
        let total_weight = targets.iter().map(|t| t.weight).sum();
        let ring = if balance == Balance::ConsistentHash {
            build_ring(&targets)
        } else {
            Vec::new()
        };
        Upstream {
            name,
            targets,
            balance,
            http2,
            timeouts,
            hash_on: HashOn::Ip,
            active: None,
            passive: None,
            panic_below_pct: 50,
            retries: None,
            breaker: Breaker::default(),
            tls: None,
            dns_refresh: Duration::from_secs(30),
            schedule,
            cursor: AtomicUsize::new(0),
            total_weight,
            ring,
        }
    }

    /// Whether health state matters for this upstream at all.
    pub fn health_checked(&self) -> bool {
        self.active.is_some() || self.passive.is_some()
    }

    /// Picks a target index without health information.
    pub fn pick(&self, roll: &mut dyn FnMut(u32) -> u32) -> usize {
        self.pick_healthy(None, roll, &|_| true)
    }

    /// Picks a target index. `hash` is the request's key for `consistent_hash`; `roll(n)`
    /// must return a uniform value in `0..n`; `healthy(i)` says whether target `i` may be
    /// used. The balancer's choice is checked first, so with every target healthy this costs
    /// one callback. When too few targets are healthy (`panic_below_pct`), health is ignored
    /// and the balancer's choice stands (spreading over all targets rather than overloading
    /// the few healthy ones).
    pub fn pick_healthy(
        &self,
        hash: Option<u64>,
        roll: &mut dyn FnMut(u32) -> u32,
        healthy: &dyn Fn(usize) -> bool,
    ) -> usize {
        let n = self.targets.len();
        if n <= 1 {
            return 0;
        }
        let first = match self.balance {
            Balance::RoundRobin => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
                self.schedule[i] as usize
            }
            Balance::Random => self.weighted_index(roll(self.total_weight)),
            Balance::LeastRequest => {
                // Power of two choices, weighted: compare in_flight / weight.
                let a = self.weighted_index(roll(self.total_weight));
                let b = self.weighted_index(roll(self.total_weight));
                self.less_loaded(a, b)
            }
            Balance::ConsistentHash => match hash {
                Some(h) => self.ring_lookup(h).0,
                None => self.weighted_index(roll(self.total_weight)),
            },
        };
        if healthy(first) {
            return first;
        }
        // Slow path: the first choice is out of rotation.
        let healthy_count = (0..n).filter(|&i| healthy(i)).count();
        if healthy_count == 0 || (healthy_count * 100) < n * self.panic_below_pct as usize {
            return first;
        }
        match self.balance {
            Balance::RoundRobin => {
                for _ in 0..self.schedule.len() {
                    let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
                    let t = self.schedule[i] as usize;
                    if healthy(t) {
                        return t;
                    }
                }
                first
            }
            Balance::ConsistentHash if hash.is_some() => {
                // Walk the ring clockwise to the next healthy target: keys of a healthy
                // target never move when another one is ejected.
                let (_, pos) = self.ring_lookup(hash.unwrap_or(0));
                for k in 1..=self.ring.len() {
                    let t = self.ring[(pos + k) % self.ring.len()].1 as usize;
                    if healthy(t) {
                        return t;
                    }
                }
                first
            }
            _ => {
                let total: u32 = (0..n)
                    .filter(|&i| healthy(i))
                    .map(|i| self.targets[i].weight)
                    .sum();
                let mut r = roll(total.max(1));
                let pick = |r: &mut u32| {
                    for i in (0..n).filter(|&i| healthy(i)) {
                        let w = self.targets[i].weight;
                        if *r < w {
                            return i;
                        }
                        *r -= w;
                    }
                    first
                };
                let a = pick(&mut r);
                if self.balance == Balance::LeastRequest {
                    let mut r2 = roll(total.max(1));
                    let b = pick(&mut r2);
                    self.less_loaded(a, b)
                } else {
                    a
                }
            }
        }
    }

    fn less_loaded(&self, a: usize, b: usize) -> usize {
        let load = |i: usize| {
            let t = &self.targets[i];
            (t.in_flight.load(Ordering::Relaxed) as u64 + 1) * 1000 / t.weight.max(1) as u64
        };
        if load(b) < load(a) {
            b
        } else {
            a
        }
    }

    fn weighted_index(&self, mut r: u32) -> usize {
        for (i, t) in self.targets.iter().enumerate() {
            if r < t.weight {
                return i;
            }
            r -= t.weight;
        }
        self.targets.len() - 1
    }

    /// The first ring point at or after `h` (wrapping): (target, position in the ring).
    fn ring_lookup(&self, h: u64) -> (usize, usize) {
        if self.ring.is_empty() {
            return (0, 0);
        }
        let pos = self.ring.partition_point(|(p, _)| *p < h) % self.ring.len();
        (self.ring[pos].1 as usize, pos)
    }
}

/// Ketama-style ring: each target gets points derived from its URL (not its position), so
/// adding or removing a target moves only the keys on that target's arcs (~1/N of them).
fn build_ring(targets: &[Target]) -> Vec<(u64, u16)> {
    let total: u64 = targets.iter().map(|t| t.weight as u64).sum::<u64>().max(1);
    let n = targets.len() as u64;
    let mut ring = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let points = (RING_POINTS_PER_TARGET * n * t.weight as u64 / total).max(1);
        for p in 0..points {
            let mut key = Vec::with_capacity(t.url.len() + 8);
            key.extend_from_slice(t.url.as_bytes());
            key.push(b'#');
            key.extend_from_slice(&p.to_le_bytes());
            ring.push((hash_bytes(&key), i as u16));
        }
    }
    ring.sort_unstable();
    ring
}

/// A stable 64-bit hash (FNV-1a, then the splitmix64 finalizer for avalanche), the same on
/// every build and machine, so several gateways map a key to the same target.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// nginx's smooth weighted round robin, unrolled over one full cycle of `sum(weights)` picks.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    if weights.is_empty() || total == 0 {
        return vec![0];
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(weights: &[u32], balance: Balance) -> Upstream {
        ups_ports(
            &weights
                .iter()
                .enumerate()
                .map(|(i, w)| (1000 + i as u16, *w))
                .collect::<Vec<_>>(),
            balance,
        )
    }

    fn ups_ports(targets: &[(u16, u32)], balance: Balance) -> Upstream {
        let targets = targets
            .iter()
            .map(|(port, w)| Target {
                url: format!("http://10.0.0.1:{port}"),
                scheme: Scheme::HTTP,
                authority: format!("10.0.0.1:{port}").parse().expect("authority"),
                weight: *w,
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        let t = Duration::from_secs(1);
        Upstream::new(
            "u".into(),
            targets,
            balance,
            false,
            UpstreamTimeouts {
                connect: t,
                request: t,
                per_try: None,
                idle: t,
            },
        )
    }

    #[test]
    fn smooth_round_robin_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let u = ups(&[3, 1], Balance::RoundRobin);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[u.pick(&mut |n| fastrand::u32(0..n))] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn least_request_avoids_busy_target() {
        let u = ups(&[1, 1], Balance::LeastRequest);
        u.targets[0].in_flight.store(50, Ordering::Relaxed);
        let mut counts = [0; 2];
        for _ in 0..1000 {
            counts[u.pick(&mut |n| fastrand::u32(0..n))] += 1;
        }
        assert!(counts[1] > 700, "{counts:?}");
    }

    #[test]
    fn unhealthy_targets_are_skipped_until_panic() {
        for balance in [
            Balance::RoundRobin,
            Balance::Random,
            Balance::LeastRequest,
            Balance::ConsistentHash,
        ] {
            let u = ups(&[1, 1, 1], balance);
            let mut counts = [0; 3];
            for k in 0..3000u64 {
                let i = u.pick_healthy(
                    Some(hash_bytes(&k.to_le_bytes())),
                    &mut |n| fastrand::u32(0..n),
                    &|i| i != 1,
                );
                counts[i] += 1;
            }
            assert_eq!(counts[1], 0, "{balance:?} {counts:?}");
            assert!(
                counts[0] > 1000 && counts[2] > 1000,
                "{balance:?} {counts:?}"
            );
            // Two of three down: below 50 % healthy, panic mode spreads over all.
            let mut counts = [0; 3];
            for k in 0..3000u64 {
                let i = u.pick_healthy(
                    Some(hash_bytes(&k.to_le_bytes())),
                    &mut |n| fastrand::u32(0..n),
                    &|i| i == 0,
                );
                counts[i] += 1;
            }
            assert!(
                counts.iter().all(|c| *c > 500),
                "{balance:?} panic {counts:?}"
            );
        }
    }

    #[test]
    fn round_robin_spread_within_ten_percent() {
        let u = ups(&[1, 1, 1], Balance::RoundRobin);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[u.pick(&mut |n| fastrand::u32(0..n))] += 1;
        }
        assert_eq!(counts, [1000, 1000, 1000]);
        let u = ups(&[1, 1, 1], Balance::LeastRequest);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[u.pick(&mut |n| fastrand::u32(0..n))] += 1;
        }
        assert!(
            counts.iter().all(|c| (900..=1100).contains(c)),
            "{counts:?}"
        );
    }

    /// Adding an 11th target moves about 1/11 of the keys, all of them to the new target;
    /// removing one moves only that target's keys.
    #[test]
    fn consistent_hash_moves_about_one_nth() {
        let ports: Vec<(u16, u32)> = (0..10).map(|i| (8000 + i, 1)).collect();
        let ten = ups_ports(&ports, Balance::ConsistentHash);
        let mut more = ports.clone();
        more.push((8010, 1));
        let eleven = ups_ports(&more, Balance::ConsistentHash);
        let nine = ups_ports(&ports[1..], Balance::ConsistentHash);
        let keys = 100_000u64;
        let url = |u: &Upstream, i: usize| u.targets[i].url.clone();
        let (mut moved_add, mut moved_remove) = (0, 0);
        let mut per_target = [0u32; 10];
        for k in 0..keys {
            let h = hash_bytes(format!("user-{k}").as_bytes());
            let a = url(&ten, ten.ring_lookup(h).0);
            per_target[ten.ring_lookup(h).0] += 1;
            let b = url(&eleven, eleven.ring_lookup(h).0);
            if a != b {
                moved_add += 1;
                assert_eq!(b, "http://10.0.0.1:8010", "a key moved between old targets");
            }
            let c = url(&nine, nine.ring_lookup(h).0);
            if a != c {
                moved_remove += 1;
                assert_eq!(a, "http://10.0.0.1:8000", "a key of a kept target moved");
            }
        }
        let add = moved_add as f64 / keys as f64;
        let remove = moved_remove as f64 / keys as f64;
        eprintln!("consistent hash: add 11th moved {add:.4} (ideal 0.0909), remove 1 of 10 moved {remove:.4} (ideal 0.1000), per-target {per_target:?}");
        assert!((0.06..0.13).contains(&add), "{add}");
        assert!((0.06..0.14).contains(&remove), "{remove}");
        assert!(
            per_target.iter().all(|c| (6_000..14_000).contains(c)),
            "{per_target:?}"
        );
    }

    #[test]
    fn hash_on_parses() {
        assert_eq!(HashOn::parse("ip"), Ok(HashOn::Ip));
        assert_eq!(
            HashOn::parse("cookie:sid"),
            Ok(HashOn::Cookie("sid".into()))
        );
        assert!(matches!(HashOn::parse("header:X-User"), Ok(HashOn::Header(h)) if h == "x-user"));
        assert!(HashOn::parse("header:bad name").is_err());
        assert!(HashOn::parse("query:x").is_err());
    }
}
