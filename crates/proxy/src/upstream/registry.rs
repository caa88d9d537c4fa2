//! Long-lived upstream state, kept outside the snapshot so a reload keeps the health,
//! ejections, breaker slots and retry budget of unchanged targets and upstreams. Keyed by
//! upstream name (and target URL); resolved once per snapshot into index-aligned vectors, so
//! the request path never touches the maps or their locks.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use gatehouse_core::upstream::Upstream;

use super::breaker::Breaker;
use super::retry::RetryBudget;

/// Health of one target: the active checker's verdict and the passive ejection state.
pub struct TargetState {
    /// Set by the active checker; `true` until a check says otherwise.
    pub active_ok: AtomicBool,
    /// Consecutive failed calls seen by passive outlier detection.
    pub failures: AtomicU32,
    /// Ejected until this many ms after the registry epoch; 0 = not ejected.
    pub ejected_until_ms: AtomicU64,
    /// Ejections in a row (the next one lasts `eject_for × (n + 1)`).
    pub ejections: AtomicU32,
}

impl Default for TargetState {
    fn default() -> Self {
        TargetState {
            active_ok: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

impl TargetState {
    /// In rotation: the active check passes and no ejection is running. Reads the clock only
    /// when an ejection was recorded.
    pub fn healthy(&self, clock: &Clock) -> bool {
        if !self.active_ok.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until == 0 || clock.now_ms() >= until
    }

    /// The active check brings the target back into rotation. A passive ejection still
    /// running is cleared with it (and the failure streak forgotten): the target has just
    /// proven itself with `healthy_after` good probes in a row, and an ejection recorded
    /// while it was down (or before it went down) says nothing about the restarted target.
    /// Returns true when an ejection was cleared. A good probe of a target that is already
    /// active-healthy does not clear an ejection: a target can answer its health path while
    /// failing real traffic, and passive detection is what sees that.
    pub fn active_recovered(&self, clock: &Clock) -> bool {
        self.active_ok.store(true, Ordering::Relaxed);
        self.failures.store(0, Ordering::Relaxed);
        if !self.ejected(clock) {
            return false;
        }
        // The ejection ends now rather than being forgotten: `ejections` stays, so a relapse
        // still escalates until the target has served well for a full `eject_for` after this
        // moment (see `outlier::record`).
        self.ejected_until_ms
            .store(clock.now_ms(), Ordering::Relaxed);
        true
    }

    pub fn ejected(&self, clock: &Clock) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && clock.now_ms() < until
    }

    /// `healthy`, `ejected` or `unhealthy` (active check failing), for the admin API.
    pub fn describe(&self, clock: &Clock) -> &'static str {
        if !self.active_ok.load(Ordering::Relaxed) {
            "unhealthy"
        } else if self.ejected(clock) {
            "ejected"
        } else {
            "healthy"
        }
    }
}

/// Milliseconds since the registry was created (monotonic, cheap to compare in atomics).
#[derive(Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        // +1 so that 0 keeps meaning "never ejected".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// Per-upstream runtime state: breaker slots and the retry budget.
#[derive(Default)]
pub struct UpstreamState {
    pub breaker: Breaker,
    pub budget: RetryBudget,
}

pub struct Registry {
    pub clock: Clock,
    targets: Mutex<HashMap<(String, String), Arc<TargetState>>>,
    upstreams: Mutex<HashMap<String, Arc<UpstreamState>>>,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            clock: Clock {
                epoch: Instant::now(),
            },
            targets: Mutex::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// The state objects for one upstream of a snapshot, creating what is new. The breaker is
    /// resized to the upstream's current `max_connections`.
    pub fn resolve(&self, u: &Upstream) -> (Arc<UpstreamState>, Vec<Arc<TargetState>>) {
        let state = lock(&self.upstreams)
            .entry(u.name.clone())
            .or_default()
            .clone();
        state.breaker.resize(u.breaker.max_connections as usize);
        let mut targets = lock(&self.targets);
        let ts = u
            .targets
            .iter()
            .map(|t| {
                targets
                    .entry((u.name.clone(), t.url.clone()))
                    .or_default()
                    .clone()
            })
            .collect();
        (state, ts)
    }

    /// Forgets state of upstreams and targets no longer configured (after a reload), so a
    /// target removed and added back later starts fresh.
    pub fn retain(&self, upstreams: &[Arc<Upstream>]) {
        let names: HashSet<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        let keys: HashSet<(&str, &str)> = upstreams
            .iter()
            .flat_map(|u| {
                u.targets
                    .iter()
                    .map(move |t| (u.name.as_str(), t.url.as_str()))
            })
            .collect();
        lock(&self.upstreams).retain(|k, _| names.contains(k.as_str()));
        lock(&self.targets).retain(|(u, t), _| keys.contains(&(u.as_str(), t.as_str())));
    }
}
