//! Circuit breaker around Redis: after `threshold` consecutive failures it stops calling
//! Redis for `open_for`, then lets exactly one probe through (half-open). A successful probe
//! closes it; a failed one opens it again. Lock-free: the request path only reads atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

pub const CLOSED: u8 = 0;
pub const OPEN: u8 = 1;
pub const HALF_OPEN: u8 = 2;

/// Consecutive failures that open the breaker.
pub const FAILURE_THRESHOLD: u32 = 5;
/// How long an open breaker keeps Redis uncalled before probing it.
pub const OPEN_FOR: Duration = Duration::from_millis(500);

pub struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    opened_at: AtomicU64,
    probing: AtomicBool,
    epoch: Instant,
    threshold: u32,
    open_for: Duration,
    gauge: Gauge,
    /// For logs: which store this breaker guards.
    name: String,
}

/// What the caller may do now.
#[derive(Debug, PartialEq, Eq)]
pub enum Permit {
    /// Call Redis (closed).
    Call,
    /// Call Redis as the one half-open probe; report the result.
    Probe,
    /// Do not call Redis (open, or half-open with a probe already in flight).
    Reject,
}

impl Breaker {
    pub fn new(name: &str, threshold: u32, open_for: Duration, gauge: Gauge) -> Breaker {
        gauge.set(i64::from(CLOSED));
        Breaker {
            state: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            epoch: Instant::now(),
            threshold,
            open_for,
            gauge,
            name: name.to_owned(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    pub fn permit(&self) -> Permit {
        match self.state() {
            CLOSED => Permit::Call,
            OPEN => {
                let since = self
                    .now()
                    .saturating_sub(self.opened_at.load(Ordering::Acquire));
                if since >= self.open_for.as_nanos() as u64
                    && self
                        .state
                        .compare_exchange(OPEN, HALF_OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.transition(HALF_OPEN);
                    self.probing.store(true, Ordering::Release);
                    Permit::Probe
                } else {
                    Permit::Reject
                }
            }
            _ => {
                // Half-open: a new probe only if the previous one was abandoned (its
                // request cancelled before reporting).
                if self
                    .probing
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    Permit::Probe
                } else {
                    Permit::Reject
                }
            }
        }
    }

    pub fn on_success(&self, permit: &Permit) {
        self.failures.store(0, Ordering::Release);
        if *permit == Permit::Probe {
            self.probing.store(false, Ordering::Release);
            if self
                .state
                .compare_exchange(HALF_OPEN, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.transition(CLOSED);
            }
        }
    }

    pub fn on_failure(&self, permit: &Permit) {
        match permit {
            Permit::Probe => {
                self.opened_at.store(self.now(), Ordering::Release);
                self.probing.store(false, Ordering::Release);
                if self
                    .state
                    .compare_exchange(HALF_OPEN, OPEN, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    self.transition(OPEN);
                }
            }
            Permit::Call => {
                let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
                if n >= self.threshold {
                    self.opened_at.store(self.now(), Ordering::Release);
                    if self
                        .state
                        .compare_exchange(CLOSED, OPEN, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        self.failures.store(0, Ordering::Release);
                        self.transition(OPEN);
                    }
                }
            }
            Permit::Reject => {}
        }
    }

    /// A probe whose request went away before an answer: let the next caller probe.
    pub fn abandon(&self, permit: &Permit) {
        if *permit == Permit::Probe {
            self.probing.store(false, Ordering::Release);
        }
    }

    fn transition(&self, to: u8) {
        self.gauge.set(i64::from(to));
        match to {
            OPEN => tracing::warn!(
                redis = %self.name,
                open_for_ms = self.open_for.as_millis() as u64,
                "redis circuit breaker opened: rate limits fall back to on_error"
            ),
            HALF_OPEN => {
                tracing::info!(redis = %self.name, "redis circuit breaker half-open: probing")
            }
            _ => {
                tracing::info!(redis = %self.name, "redis circuit breaker closed: shared rate limits resumed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_probes_and_closes() {
        let g = Gauge::default();
        let b = Breaker::new("t", 3, Duration::from_millis(500), g.clone());
        for _ in 0..2 {
            let p = b.permit();
            assert_eq!(p, Permit::Call);
            b.on_failure(&p);
        }
        assert_eq!(b.state(), CLOSED);
        // A success resets the count.
        b.on_success(&Permit::Call);
        for _ in 0..3 {
            let p = b.permit();
            b.on_failure(&p);
        }
        assert_eq!(b.state(), OPEN);
        assert_eq!(g.get(), 1);
        assert_eq!(b.permit(), Permit::Reject);
        tokio::time::advance(Duration::from_millis(499)).await;
        assert_eq!(b.permit(), Permit::Reject);
        tokio::time::advance(Duration::from_millis(1)).await;
        let probe = b.permit();
        assert_eq!(probe, Permit::Probe);
        assert_eq!(g.get(), 2);
        // Only one probe at a time.
        assert_eq!(b.permit(), Permit::Reject);
        // Failed probe: open again for another period.
        b.on_failure(&probe);
        assert_eq!(b.state(), OPEN);
        assert_eq!(b.permit(), Permit::Reject);
        tokio::time::advance(Duration::from_millis(500)).await;
        let probe = b.permit();
        assert_eq!(probe, Permit::Probe);
        b.on_success(&probe);
        assert_eq!(b.state(), CLOSED);
        assert_eq!(g.get(), 0);
        assert_eq!(b.permit(), Permit::Call);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_probe_lets_another_probe() {
        let b = Breaker::new("t", 1, Duration::from_millis(10), Gauge::default());
        b.on_failure(&b.permit());
        tokio::time::advance(Duration::from_millis(10)).await;
        let p = b.permit();
        assert_eq!(p, Permit::Probe);
        b.abandon(&p);
        assert_eq!(b.permit(), Permit::Probe);
    }
}
