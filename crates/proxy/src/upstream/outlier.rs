//! Passive outlier ejection: a target with `consecutive_failures` failed calls in a row (connect
//! error, reset, timeout, a 5xx, or a response body the upstream broke off; a good head counts
//! as a success only once its body ended) leaves rotation for `eject_for`, longer each time it is
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::registry::Registry;

    fn cfg() -> Passive {
        Passive {
            consecutive_failures: 3,
            eject_for: Duration::from_secs(10),
            max_ejected_pct: 50,
        }
    }

    #[test]
    fn consecutive_failures_eject_and_success_resets() {
        let reg = Registry::default();
        let all: Vec<Arc<TargetState>> = (0..4).map(|_| Arc::default()).collect();
        let t = &all[0];
        assert!(!record(&cfg(), &reg.clock, &all, t, true));
        assert!(!record(&cfg(), &reg.clock, &all, t, true));
        assert!(
            !record(&cfg(), &reg.clock, &all, t, false),
            "success resets the streak"
        );
        assert!(!record(&cfg(), &reg.clock, &all, t, true));
        assert!(!record(&cfg(), &reg.clock, &all, t, true));
        assert!(record(&cfg(), &reg.clock, &all, t, true));
        assert!(t.ejected(&reg.clock));
        assert!(!t.healthy(&reg.clock));
        let until = t.ejected_until_ms.load(Ordering::Relaxed) - reg.clock.now_ms();
        assert!((9_000..=10_001).contains(&until), "{until}");
    }

    #[test]
    fn max_ejected_caps_ejections() {
        let reg = Registry::default();
        let all: Vec<Arc<TargetState>> = (0..4).map(|_| Arc::default()).collect();
        for t in &all {
            for _ in 0..3 {
                record(&cfg(), &reg.clock, &all, t, true);
            }
        }
        // 50 % of 4 targets.
        assert_eq!(all.iter().filter(|t| t.ejected(&reg.clock)).count(), 2);
    }

    #[test]
    fn repeat_ejections_last_longer() {
        let reg = Registry::default();
        let all: Vec<Arc<TargetState>> = (0..2).map(|_| Arc::default()).collect();
        let t = &all[0];
        // Pretend a first ejection already happened and expired.
        t.ejections.store(1, Ordering::Relaxed);
        for _ in 0..3 {
            record(&cfg(), &reg.clock, &all, t, true);
        }
        let until = t.ejected_until_ms.load(Ordering::Relaxed) - reg.clock.now_ms();
        assert!((19_000..=20_001).contains(&until), "{until}");
    }
}
