//! Retry policy: which failures may be retried, when it is safe, the budget that keeps retries
//! from multiplying an outage, and the backoff between tries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Method;

use gatehouse_core::upstream::RetryPolicy;
use gatehouse_core::GatewayError;

/// Request bodies up to this size are buffered so they can be sent again; larger or
/// unknown-length bodies stream and their requests are tried once.
pub const REPLAY_LIMIT: u64 = 64 * 1024;

/// The outcome of one try, as retry and outlier logic see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Connection (TCP/TLS) failed: the request was provably not sent.
    ConnectFailure,
    /// The connection broke or the answer was invalid after the request was (maybe) sent.
    Reset,
    Timeout,
    Status(u16),
    /// The client's side failed (body too large, malformed): never retried, not an upstream
    /// failure.
    Client,
}

impl Outcome {
    pub fn of(result: &Result<u16, GatewayError>) -> Outcome {
        match result {
            Ok(s) => Outcome::Status(*s),
            Err(GatewayError::UpstreamUnavailable) => Outcome::ConnectFailure,
            Err(GatewayError::UpstreamTimeout) => Outcome::Timeout,
            Err(GatewayError::BadGateway) => Outcome::Reset,
            Err(_) => Outcome::Client,
        }
    }

    /// Counts against the target for outlier detection.
    pub fn is_failure(self) -> bool {
        match self {
            Outcome::ConnectFailure | Outcome::Reset | Outcome::Timeout => true,
            Outcome::Status(s) => s >= 500,
            Outcome::Client => false,
        }
    }
}

/// RFC 9110 §9.2.2 idempotent methods.
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `outcome` may be retried under `policy`. A connect failure is always safe (nothing
/// was sent); anything after the request may have reached the upstream is retried only for an
/// idempotent method. The caller has already made sure the body can be replayed.
pub fn should_retry(policy: &RetryPolicy, outcome: Outcome, method: &Method) -> bool {
    match outcome {
        Outcome::ConnectFailure => policy.on_connect_failure,
        Outcome::Reset => policy.on_reset && idempotent(method),
        Outcome::Timeout => policy.on_timeout && idempotent(method),
        Outcome::Status(s) => policy.on_statuses.contains(&s) && idempotent(method),
        Outcome::Client => false,
    }
}

/// Full-jitter exponential backoff before retry `n` (1-based): uniform in
/// `0..min(max, base × 2^(n-1))`.
pub fn backoff(policy: &RetryPolicy, n: u32, roll: impl FnOnce(u64) -> u64) -> Duration {
    let base = policy.backoff_base.as_millis() as u64;
    let cap = policy.backoff_max.as_millis() as u64;
    let ceiling = base
        .saturating_mul(1u64 << n.saturating_sub(1).min(20))
        .min(cap);
    Duration::from_millis(roll(ceiling.max(1)))
}

/// Envoy-style retry budget: retries in flight may be at most `pct` of the requests in flight
/// to the upstream (but `min` are always allowed). When an upstream fails everything, the
/// retries stay a fraction of the load instead of multiplying it.
#[derive(Default)]
pub struct RetryBudget {
    requests: AtomicUsize,
    retries: AtomicUsize,
}

pub struct BudgetGuard<'a> {
    counter: &'a AtomicUsize,
}

impl Drop for BudgetGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RetryBudget {
    pub fn request(&self) -> BudgetGuard<'_> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        BudgetGuard {
            counter: &self.requests,
        }
    }

    pub fn try_retry(&self, pct: u32, min: u32) -> Option<BudgetGuard<'_>> {
        let allowed =
            (self.requests.load(Ordering::Relaxed) * pct as usize / 100).max(min as usize);
        let prev = self.retries.fetch_add(1, Ordering::Relaxed);
        let guard = BudgetGuard {
            counter: &self.retries,
        };
        if prev >= allowed {
            return None; // the guard gives the slot back
        }
        Some(guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on_connect_failure: true,
            on_reset: true,
            on_timeout: false,
            on_statuses: vec![503],
            budget_pct: 20,
            budget_min: 1,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
        }
    }

    #[test]
    fn only_safe_retries() {
        let p = policy();
        assert!(should_retry(&p, Outcome::ConnectFailure, &Method::POST));
        assert!(!should_retry(&p, Outcome::Reset, &Method::POST));
        assert!(should_retry(&p, Outcome::Reset, &Method::GET));
        assert!(should_retry(&p, Outcome::Status(503), &Method::PUT));
        assert!(!should_retry(&p, Outcome::Status(503), &Method::PATCH));
        assert!(!should_retry(&p, Outcome::Status(502), &Method::GET));
        assert!(!should_retry(&p, Outcome::Timeout, &Method::GET));
        assert!(!should_retry(&p, Outcome::Client, &Method::GET));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        assert_eq!(backoff(&p, 1, |c| c), Duration::from_millis(25));
        assert_eq!(backoff(&p, 2, |c| c), Duration::from_millis(50));
        assert_eq!(backoff(&p, 10, |c| c), Duration::from_millis(250));
        assert_eq!(backoff(&p, 3, |_| 0), Duration::ZERO);
    }

    #[test]
    fn budget_exhaustion_stops_retries() {
        let b = RetryBudget::default();
        let _reqs: Vec<_> = (0..10).map(|_| b.request()).collect();
        // 20 % of 10 = 2 retries in flight.
        let r1 = b.try_retry(20, 1).expect("1");
        let _r2 = b.try_retry(20, 1).expect("2");
        assert!(b.try_retry(20, 1).is_none());
        drop(r1);
        assert!(b.try_retry(20, 1).is_some());
        // The minimum applies with little traffic.
        let quiet = RetryBudget::default();
        let _one = quiet.request();
        assert!(quiet.try_retry(20, 1).is_some());
    }
}
