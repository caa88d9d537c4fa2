//! Circuit breaking (F15): at most `max_connections` requests in flight per upstream, at most
//! `max_pending` waiting for a slot (for at most `pending_timeout`); anything beyond gets an
//! immediate 503. With HTTP/1.1 a request in flight holds one connection, so the pool of busy
//! connections is bounded too (idle ones are capped separately).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use gatehouse_core::upstream::Breaker as BreakerConfig;

pub struct Breaker {
    slots: Arc<Semaphore>,
    size: AtomicUsize,
    pending: AtomicUsize,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            slots: Arc::new(Semaphore::new(0)),
            size: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
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
    /// Changes the slot count (on reload); requests holding slots keep them.
    pub fn resize(&self, size: usize) {
        let old = self.size.swap(size, Ordering::Relaxed);
        if size > old {
            self.slots.add_permits(size - old);
        } else if old > size {
            self.slots.forget_permits(old - size);
        }
    }

    pub fn in_flight(&self) -> usize {
        self.size
            .load(Ordering::Relaxed)
            .saturating_sub(self.slots.available_permits())
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    pub async fn acquire(&self, cfg: &BreakerConfig) -> Result<OwnedSemaphorePermit, Rejected> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Ok(p);
        }
        // Boxed: waiting is rare, and its future would otherwise be part of every call's.
        Box::pin(self.wait(cfg)).await
    }

    async fn wait(&self, cfg: &BreakerConfig) -> Result<OwnedSemaphorePermit, Rejected> {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= cfg.max_pending as usize {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return Err(Rejected::QueueFull);
        }
        let waited =
            tokio::time::timeout(cfg.pending_timeout, self.slots.clone().acquire_owned()).await;
        self.pending.fetch_sub(1, Ordering::Relaxed);
        match waited {
            Ok(Ok(p)) => Ok(p),
            _ => Err(Rejected::QueueTimeout),
        }
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
}
