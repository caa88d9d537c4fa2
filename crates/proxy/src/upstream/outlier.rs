//! Passive outlier ejection: a target with `consecutive_failures` failed calls in a row (connect
//! error, reset, timeout or a 5xx) leaves rotation for `eject_for`, longer each time it is
//! ejected again (n × `eject_for`, at most 10×). At most `max_ejected` percent of an
//! upstream's targets are ejected at once (one always may be).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::upstream::Passive;

use super::registry::{Clock, TargetState};

/// Records one call's result. Returns true when this call ejected the target.
pub fn record(
    cfg: &Passive,
    clock: &Clock,
    all: &[Arc<TargetState>],
    t: &TargetState,
    failed: bool,
) -> bool {
    if !failed {
        if t.failures.load(Ordering::Relaxed) != 0 {
            t.failures.store(0, Ordering::Relaxed);
        }
        // A target that has served well for a full base ejection time since it came back
        // starts over with the base ejection time.
        let until = t.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 && clock.now_ms() > until + cfg.eject_for.as_millis() as u64 {
            t.ejections.store(0, Ordering::Relaxed);
            t.ejected_until_ms.store(0, Ordering::Relaxed);
        }
        return false;
    }
    let n = t.failures.fetch_add(1, Ordering::Relaxed) + 1;
    if n < cfg.consecutive_failures || t.ejected(clock) {
        return false;
    }
    let ejected_now = all.iter().filter(|s| s.ejected(clock)).count();
    let cap = (all.len() * cfg.max_ejected_pct as usize / 100).max(1);
    if ejected_now >= cap {
        return false;
    }
    let times = t.ejections.fetch_add(1, Ordering::Relaxed).min(9) + 1;
    let for_ms = (cfg.eject_for * times).as_millis() as u64;
    t.ejected_until_ms
        .store(clock.now_ms() + for_ms, Ordering::Relaxed);
    t.failures.store(0, Ordering::Relaxed);
    tracing::warn!(ejected_for = ?Duration::from_millis(for_ms), "upstream target ejected after consecutive failures");
    true
}
