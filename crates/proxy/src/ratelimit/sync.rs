//! `sync` mode for very hot shared keys: a node reserves a batch of tokens from Redis (the
//! same GCRA script, taking several at once) and admits from that local share without I/O.
//! A share is only spent within `sync` of being reserved; leftovers are given back to Redis
//! with the next reservation for that key.
//!
//! Bound: everything admitted in a span [a, b] was reserved in [a − sync, b], and Redis grants
//! at most `burst + (b − a + sync) / T` there, so across all nodes the over-admission against
//! the exact limit is at most `requests × sync / per` per window (e.g. 100/s with
//! `sync: 100ms`: ≤ 10). Unused shares given back late can make the limit stricter for a
//! moment, never looser.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::local::PassThrough;

const SHARDS: usize = 16;
/// Leases one limiter holds per shard; beyond it expired leases are dropped first, then all.
const MAX_LEASES_PER_SHARD: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Lease {
    tokens: u64,
    used: u64,
    expires: Instant,
    /// Tokens to ask for next time (grows while shares run out before they expire).
    want: u64,
    /// Requests the limit would still admit, as Redis last reported (for the headers).
    remaining: u64,
    debt_us: u64,
    /// Redis said no: deny locally until then (when its GCRA has room again) instead of
    /// asking for every request of a hot limited key.
    denied_until: Instant,
}

type Table = HashMap<u64, Lease, BuildHasherDefault<PassThrough>>;

pub struct Leases {
    sync: Duration,
    max_want: u64,
    shards: Box<[Mutex<Table>]>,
}

/// What to do after looking at the local share.
#[derive(Debug, PartialEq, Eq)]
pub enum Local {
    /// Admitted from the share: (remaining estimate, debt in µs as last seen).
    Admitted { remaining: u64, debt_us: u64 },
    /// Ask Redis for `want` tokens, giving `giveback` back.
    Reserve { want: u64, giveback: u64 },
    /// Limited without asking Redis: it refused a moment ago and has no room before then.
    Denied { retry_after: Duration, debt_us: u64 },
}

impl Leases {
    /// `max_want`: the largest share one node reserves at once (`requests × sync / per`,
    /// at least 1, at most the burst).
    pub fn new(sync: Duration, max_want: u64) -> Leases {
        Leases {
            sync,
            max_want: max_want.max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(Table::default())).collect(),
        }
    }

    fn shard(&self, hash: u64) -> MutexGuard<'_, Table> {
        let i = ((hash >> 40) as usize) % self.shards.len();
        match self.shards[i].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn admit(&self, hash: u64) -> Local {
        let now = Instant::now();
        let mut shard = self.shard(hash);
        match shard.get_mut(&hash) {
            Some(l) if l.expires > now && l.tokens > 0 => {
                l.tokens -= 1;
                l.used += 1;
                l.remaining = l.remaining.saturating_sub(1);
                Local::Admitted {
                    remaining: l.remaining,
                    debt_us: l.debt_us,
                }
            }
            // A share granted concurrently is spent before trusting the refusal.
            Some(l) if l.denied_until > now => Local::Denied {
                retry_after: l.denied_until - now,
                debt_us: l.debt_us,
            },
            Some(l) => {
                let exhausted_early = l.expires > now;
                let want = if exhausted_early {
                    l.want.saturating_mul(2).min(self.max_want)
                } else {
                    l.used.clamp(1, self.max_want)
                };
                // Expired shares go back; a live but empty one has nothing to give.
                let giveback = if l.expires <= now { l.tokens } else { 0 };
                l.tokens = 0;
                l.used = 0;
                l.want = want;
                Local::Reserve { want, giveback }
            }
            None => Local::Reserve {
                want: 1,
                giveback: 0,
            },
        }
    }

    /// Records a reservation: `granted` tokens, one of which is spent on the current request
    /// when `granted > 0`; none means limited for `retry_after` (capped at the sync period,
    /// so a give-back by another node is noticed soon).
    pub fn granted(
        &self,
        hash: u64,
        granted: u64,
        remaining: u64,
        debt_us: u64,
        retry_after: Duration,
    ) {
        let now = Instant::now();
        let mut shard = self.shard(hash);
        if shard.len() >= MAX_LEASES_PER_SHARD && !shard.contains_key(&hash) {
            shard.retain(|_, l| l.expires > now);
            if shard.len() >= MAX_LEASES_PER_SHARD {
                // Dropping a share only under-admits (its tokens stay spent in Redis).
                shard.clear();
            }
        }
        let l = shard.entry(hash).or_insert(Lease {
            tokens: 0,
            used: 0,
            expires: now,
            want: 1,
            remaining: 0,
            debt_us: 0,
            denied_until: now,
        });
        if granted == 0 {
            l.denied_until = now + retry_after.min(self.sync);
        }
        let spare = granted.saturating_sub(1);
        if l.expires > now {
            // A concurrent reservation already refreshed the share: add to it.
            l.tokens += spare;
        } else {
            l.tokens = spare;
            l.expires = now + self.sync;
        }
        l.used += u64::from(granted > 0);
        l.remaining = remaining;
        l.debt_us = debt_us;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shares_grow_then_are_given_back() {
        let l = Leases::new(Duration::from_millis(100), 8);
        assert_eq!(
            l.admit(7),
            Local::Reserve {
                want: 1,
                giveback: 0
            }
        );
        l.granted(7, 1, 5, 0, Duration::ZERO);
        // The share of 1 was spent: ask for twice as much.
        assert_eq!(
            l.admit(7),
            Local::Reserve {
                want: 2,
                giveback: 0
            }
        );
        l.granted(7, 2, 5, 0, Duration::ZERO);
        assert!(matches!(l.admit(7), Local::Admitted { .. }));
        assert_eq!(
            l.admit(7),
            Local::Reserve {
                want: 4,
                giveback: 0
            }
        );
        l.granted(7, 4, 5, 0, Duration::ZERO);
        assert!(matches!(l.admit(7), Local::Admitted { .. }));
        // Expired with 2 unused: they go back, and the next share matches the use.
        tokio::time::advance(Duration::from_millis(100)).await;
        assert_eq!(
            l.admit(7),
            Local::Reserve {
                want: 2,
                giveback: 2
            }
        );
        // Never more than max_want.
        for _ in 0..10 {
            l.granted(7, 1, 0, 0, Duration::ZERO);
            let _ = l.admit(7);
        }
        match l.admit(7) {
            Local::Reserve { want, .. } => assert!(want <= 8),
            other => panic!("{other:?}"),
        }
        // Refused by Redis: limited locally until it has room (at most one sync period).
        l.granted(7, 0, 0, 0, Duration::from_millis(30));
        assert!(matches!(l.admit(7), Local::Denied { .. }));
        tokio::time::advance(Duration::from_millis(30)).await;
        assert!(matches!(l.admit(7), Local::Reserve { .. }));
    }
}
