//! `concurrency: N`: requests in flight on a route on this node. The slot is held until the
//! response is complete (the guard lives in the request context, dropped by the log phase).
//! `concurrency: {consumer: M}` does the same per authenticated consumer, in a sharded map
//! that only holds consumers with requests in flight.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub struct ConcurrencyLimit {
    max: AtomicUsize,
    current: AtomicUsize,
}

/// One in-flight slot; released on drop.
pub struct InFlight(Arc<ConcurrencyLimit>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConcurrencyLimit {
    pub fn new(max: usize) -> ConcurrencyLimit {
        ConcurrencyLimit {
            max: AtomicUsize::new(max),
            current: AtomicUsize::new(0),
        }
    }

    /// A reload may change the limit; requests already in flight keep their slots.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    pub fn in_flight(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }

    pub fn try_acquire(self: &Arc<Self>) -> Option<InFlight> {
        let max = self.max.load(Ordering::Acquire);
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlight(self.clone()))
    }
}

/// Shards of a [`ConsumerConcurrency`] map: requests of different consumers rarely contend.
const SHARDS: usize = 16;

/// In-flight requests per consumer on one route. An entry exists only while its consumer has
/// a request in flight (it is removed when the count returns to 0), so memory is bounded by
/// the requests in flight, not by the number of consumers ever seen.
pub struct ConsumerConcurrency {
    max: AtomicUsize,
    hasher: RandomState,
    shards: [Mutex<HashMap<Box<str>, usize>>; SHARDS],
}

/// One consumer's in-flight slot; released on drop.
pub struct ConsumerInFlight {
    limit: Arc<ConsumerConcurrency>,
    shard: usize,
    consumer: Box<str>,
}

impl Drop for ConsumerInFlight {
    fn drop(&mut self) {
        let mut shard = self.limit.lock(self.shard);
        if let Some(n) = shard.get_mut(&*self.consumer) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&*self.consumer);
            }
        }
    }
}

impl ConsumerConcurrency {
    pub fn new(max: usize) -> ConsumerConcurrency {
        ConsumerConcurrency {
            max: AtomicUsize::new(max),
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        }
    }

    /// A reload may change the limit; requests already in flight keep their slots.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Release);
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, HashMap<Box<str>, usize>> {
        match self.shards[shard].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Requests of `consumer` in flight.
    pub fn in_flight(&self, consumer: &str) -> usize {
        let shard = self.shard_of(consumer);
        self.lock(shard).get(consumer).copied().unwrap_or(0)
    }

    /// Consumers with a request in flight (entries in the map).
    pub fn consumers(&self) -> usize {
        (0..SHARDS).map(|i| self.lock(i).len()).sum()
    }

    fn shard_of(&self, consumer: &str) -> usize {
        (self.hasher.hash_one(consumer) as usize) % SHARDS
    }

    pub fn try_acquire(self: &Arc<Self>, consumer: &str) -> Option<ConsumerInFlight> {
        let max = self.max.load(Ordering::Acquire);
        let shard = self.shard_of(consumer);
        let mut map = self.lock(shard);
        match map.get_mut(consumer) {
            Some(n) if *n >= max => return None,
            Some(n) => *n += 1,
            None if max == 0 => return None,
            None => {
                map.insert(consumer.into(), 1);
            }
        }
        drop(map);
        Some(ConsumerInFlight {
            limit: self.clone(),
            shard,
            consumer: consumer.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_slots_are_per_consumer_and_entries_are_removed() {
        let c = Arc::new(ConsumerConcurrency::new(2));
        let a1 = c.try_acquire("alice");
        let a2 = c.try_acquire("alice");
        assert!(a1.is_some() && a2.is_some());
        assert!(c.try_acquire("alice").is_none());
        let b = c.try_acquire("bob");
        assert!(b.is_some());
        assert_eq!(c.in_flight("alice"), 2);
        assert_eq!(c.in_flight("bob"), 1);
        assert_eq!(c.consumers(), 2);
        drop(a1);
        assert_eq!(c.in_flight("alice"), 1);
        let a3 = c.try_acquire("alice");
        assert!(a3.is_some());
        drop((a2, a3, b));
        assert_eq!(c.in_flight("alice"), 0);
        assert_eq!(c.consumers(), 0, "idle consumers leave the map");
        c.set_max(1);
        let a = c.try_acquire("alice");
        assert!(a.is_some());
        assert!(c.try_acquire("alice").is_none());
        drop(a);
        assert_eq!(c.consumers(), 0);
    }

    #[test]
    fn many_consumers_do_not_accumulate() {
        let c = Arc::new(ConsumerConcurrency::new(1));
        for i in 0..1000 {
            let slot = c.try_acquire(&format!("c{i}"));
            assert!(slot.is_some());
        }
        assert_eq!(c.consumers(), 0);
    }

    #[test]
    fn slots_are_released_on_drop() {
        let c = Arc::new(ConcurrencyLimit::new(2));
        let a = c.try_acquire();
        let b = c.try_acquire();
        assert!(a.is_some() && b.is_some());
        assert!(c.try_acquire().is_none());
        drop(a);
        assert_eq!(c.in_flight(), 1);
        assert!(c.try_acquire().is_some());
        c.set_max(1);
        assert!(c.try_acquire().is_none());
    }
}
