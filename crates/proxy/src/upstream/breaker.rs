//! Circuit breaking (F15): at most `max_connections` requests in flight per upstream, at most
//! `max_pending` waiting for a slot (for at most `pending_timeout`); anything beyond gets an
//! immediate 503. With HTTP/1.1 a request in flight holds one connection, so the pool of busy
//! connections is bounded too (idle ones are capped separately).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

use gatehouse_core::upstream::Breaker as BreakerConfig;

/// The slots of one upstream: a count against a limit, both atomics, so that taking and
/// giving back a slot is one compare-and-swap and one subtraction. (A `tokio` semaphore
/// took its waiter list's mutex on every release, waiters or not: a lock on every
/// request's path.) Waiting, the rare case, is on a [`Notify`].
#[derive(Default)]
struct Slots {
    limit: AtomicUsize,
    in_flight: AtomicUsize,
    pending: AtomicUsize,
    freed: Notify,
}

#[derive(Default)]
pub struct Breaker {
    slots: Arc<Slots>,
}

/// One request's slot, given back when dropped (when the response body ends).
pub struct Permit(Arc<Slots>);

impl Drop for Permit {
    fn drop(&mut self) {
        // SeqCst with the waiter's `pending` increment and its retry: either this sees the
        // waiter and wakes one, or the waiter's retry sees the slot free.
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        if self.0.pending.load(Ordering::SeqCst) > 0 {
            // Stored when nobody waits yet; a woken waiter that times out passes it on.
            self.0.freed.notify_one();
        }
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    QueueFull,
    QueueTimeout,
}

impl Breaker {
    /// Changes the slot count (on reload). Requests holding slots keep them; below the new
    /// limit, no slot is given out until enough of them have ended.
    pub fn resize(&self, size: usize) {
        let old = self.slots.limit.swap(size, Ordering::SeqCst);
        if size > old {
            self.slots.freed.notify_waiters();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.slots.in_flight.load(Ordering::Relaxed)
    }

    pub fn pending(&self) -> usize {
        self.slots.pending.load(Ordering::Relaxed)
    }

    pub async fn acquire(&self, cfg: &BreakerConfig) -> Result<Permit, Rejected> {
        if let Some(p) = self.try_acquire() {
            return Ok(p);
        }
        // Boxed: waiting is rare, and its future would otherwise be part of every call's.
        Box::pin(self.wait(cfg)).await
    }

    fn try_acquire(&self) -> Option<Permit> {
        let s = &self.slots;
        let limit = s.limit.load(Ordering::SeqCst);
        let mut n = s.in_flight.load(Ordering::SeqCst);
        while n < limit {
            match s
                .in_flight
                .compare_exchange_weak(n, n + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return Some(Permit(s.clone())),
                Err(now) => n = now,
            }
        }
        None
    }

    /// Waits for a slot, in the queue of at most `max_pending`, for at most
    /// `pending_timeout`. Not strictly first come, first served: a request that arrives as
    /// a slot frees may take it before a waiter wakes (the waiter waits on).
    async fn wait(&self, cfg: &BreakerConfig) -> Result<Permit, Rejected> {
        let s = &self.slots;
        if s.pending.fetch_add(1, Ordering::SeqCst) >= cfg.max_pending as usize {
            s.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Rejected::QueueFull);
        }
        let waited = tokio::time::timeout(cfg.pending_timeout, async {
            loop {
                // Registered before the retry, so a slot freed in between still wakes it.
                let freed = s.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if let Some(p) = self.try_acquire() {
                    return p;
                }
                freed.await;
            }
        })
        .await;
        s.pending.fetch_sub(1, Ordering::SeqCst);
        waited.map_err(|_| Rejected::QueueTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn slots_queue_and_fast_reject() {
        let b = Breaker::default();
        b.resize(2);
        let cfg = BreakerConfig {
            max_connections: 2,
            max_pending: 1,
            pending_timeout: Duration::from_secs(1),
        };
        let p1 = b.acquire(&cfg).await.expect("slot 1");
        let _p2 = b.acquire(&cfg).await.expect("slot 2");
        assert_eq!(b.in_flight(), 2);
        let b = Arc::new(b);
        let b2 = b.clone();
        let cfg2 = cfg.clone();
        let waiter = tokio::spawn(async move { b2.acquire(&cfg2).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(b.pending(), 1);
        // Queue full: immediate rejection.
        assert_eq!(b.acquire(&cfg).await.err(), Some(Rejected::QueueFull));
        drop(p1);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        // Queue timeout.
        let _p3 = b.acquire(&cfg).await.expect("slot again");
        assert_eq!(b.acquire(&cfg).await.err(), Some(Rejected::QueueTimeout));
        b.resize(3);
        assert!(b.acquire(&cfg).await.is_ok());
    }

    fn cfg(max_pending: u32) -> BreakerConfig {
        BreakerConfig {
            max_connections: 0,
            max_pending,
            pending_timeout: Duration::from_secs(10),
        }
    }

    /// A breaker of one slot, and that slot.
    async fn one_slot_taken() -> (Arc<Breaker>, Permit) {
        let b = Arc::new(Breaker::default());
        b.resize(1);
        let held = b.acquire(&cfg(0)).await.expect("slot");
        (b, held)
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_below_in_flight_holds_the_new_limit() {
        let b = Breaker::default();
        b.resize(3);
        let c = cfg(0);
        let mut taken = Vec::new();
        for _ in 0..3 {
            taken.push(b.acquire(&c).await.expect("slot"));
        }
        b.resize(1);
        assert_eq!(b.acquire(&c).await.err(), Some(Rejected::QueueFull));
        let mut taken = taken.into_iter();
        drop(taken.next());
        drop(taken.next());
        assert_eq!(b.in_flight(), 1);
        assert_eq!(b.acquire(&c).await.err(), Some(Rejected::QueueFull));
        drop(taken.next());
        assert_eq!(b.in_flight(), 0);
        let _p = b.acquire(&c).await.expect("a slot under the new limit");
        assert_eq!(b.in_flight(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_gets_the_slot_a_resize_adds() {
        let (b, _held) = one_slot_taken().await;
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire(&cfg(1)).await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert_eq!(b.pending(), 1);
        b.resize(2);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!(b.pending(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_given_back_reach_every_waiter() {
        let (b, held) = one_slot_taken().await;
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                tokio::spawn(async move {
                    let p = b.acquire(&cfg(4)).await?;
                    tokio::task::yield_now().await;
                    drop(p);
                    Ok::<(), Rejected>(())
                })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(b.pending(), 4);
        drop(held);
        for w in waiters {
            assert_eq!(w.await.expect("join"), Ok(()));
        }
        assert_eq!((b.in_flight(), b.pending()), (0, 0));
    }
}
