//! `concurrency: N`: requests in flight on a route on this node. The slot is held until the
//! response is complete (the guard lives in the request context, dropped by the log phase).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

#[cfg(test)]
mod tests {
    use super::*;

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
