//! Active health checks: one task per (upstream, target) probing every `interval` with an HTTP
//! `GET path` (healthy if the status is expected) or a TCP (+TLS) connect. `unhealthy_after`
//! failures in a row take the target out of rotation, `healthy_after` successes bring it back
//! (and end a passive ejection still running, see [`TargetState::active_recovered`]).
//! Tasks are started and stopped when a snapshot is installed (unchanged checks keep running
//! with their streaks) and all stop when the gateway shuts down.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use http::{header, HeaderValue, Request, Uri};
use tokio::task::JoinHandle;

use gatehouse_core::upstream::{ActiveCheck, Target, Upstream};

use super::client::{Connector, HttpClient};
use super::registry::{Clock, TargetState};

/// (upstream, target URL) → (fingerprint of the check settings, task).
type Running = HashMap<(String, String), (String, JoinHandle<()>)>;

/// Running checks by (upstream, target URL), with what they were started with.
#[derive(Default)]
pub struct HealthChecks {
    running: Mutex<Running>,
}

pub struct CheckSpec<'a> {
    pub upstream: &'a Upstream,
    pub client: &'a HttpClient,
    pub connector: &'a Connector,
    pub states: &'a [Arc<TargetState>],
}

impl HealthChecks {
    /// Makes the running set match `specs`: new or changed checks (re)start, removed ones
    /// stop (and their target counts as healthy again for active checks).
    pub fn sync(&self, specs: &[CheckSpec<'_>], clock: Clock) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep = HashMap::new();
        for spec in specs {
            let u = spec.upstream;
            let Some(check) = &u.active else {
                for s in spec.states {
                    s.active_ok.store(true, Ordering::Relaxed);
                }
                continue;
            };
            // Everything the probe depends on; a change restarts the task.
            let fingerprint = format!(
                "{check:?}|{:?}|{}|{}",
                u.timeouts.connect,
                u.http2,
                u.tls.as_ref().map(|t| t.fingerprint.as_str()).unwrap_or("")
            );
            for (t, state) in u.targets.iter().zip(spec.states) {
                let key = (u.name.clone(), t.url.clone());
                match running.remove(&key) {
                    Some((fp, handle)) if fp == fingerprint && !handle.is_finished() => {
                        keep.insert(key, (fp, handle));
                    }
                    old => {
                        if let Some((_, h)) = old {
                            h.abort();
                        }
                        let handle = tokio::spawn(run(
                            check.clone(),
                            probe_uri(t, &check.path),
                            t.authority.to_string(),
                            spec.client.clone(),
                            spec.connector.clone(),
                            state.clone(),
                            clock,
                            u.name.clone(),
                            t.url.clone(),
                        ));
                        keep.insert(key, (fingerprint.clone(), handle));
                    }
                }
            }
        }
        for (_, (_, h)) in running.drain() {
            h.abort();
        }
        *running = keep;
    }

    pub fn stop_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (_, (_, h)) in running.drain() {
            h.abort();
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn probe_uri(t: &Target, path: &str) -> Option<Uri> {
    Uri::builder()
        .scheme(t.scheme.clone())
        .authority(t.authority.clone())
        .path_and_query(path)
        .build()
        .ok()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    check: ActiveCheck,
    uri: Option<Uri>,
    host: String,
    client: HttpClient,
    connector: Connector,
    state: Arc<TargetState>,
    clock: Clock,
    upstream: String,
    target: String,
) {
    let mut streaks = Streaks::default();
    let mut tick = tokio::time::interval(check.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let ok = match &uri {
            Some(uri) => tokio::time::timeout(
                check.timeout,
                probe(&check, uri, &host, &client, &connector),
            )
            .await
            .unwrap_or(false),
            None => false,
        };
        match streaks.observe(ok, &check, &state, &clock) {
            Change::None => {}
            Change::Healthy { ejection_cleared } => {
                tracing::info!(%upstream, %target, ejection_cleared, "health check: target healthy again");
            }
            Change::Unhealthy => {
                tracing::warn!(%upstream, %target, "health check: target unhealthy");
            }
        }
    }
}

/// Good and bad probes in a row of one target.
#[derive(Default)]
struct Streaks {
    ok: u32,
    fail: u32,
}

#[derive(Debug, PartialEq, Eq)]
enum Change {
    None,
    /// Back in rotation; `ejection_cleared`: a passive ejection was running and ended.
    Healthy {
        ejection_cleared: bool,
    },
    Unhealthy,
}

impl Streaks {
    /// Counts one probe result and moves the target in or out of rotation.
    fn observe(
        &mut self,
        ok: bool,
        check: &ActiveCheck,
        state: &TargetState,
        clock: &Clock,
    ) -> Change {
        let healthy = state.active_ok.load(Ordering::Relaxed);
        if ok {
            self.fail = 0;
            self.ok = self.ok.saturating_add(1);
            if !healthy && self.ok >= check.healthy_after {
                let ejection_cleared = state.active_recovered(clock);
                return Change::Healthy { ejection_cleared };
            }
        } else {
            self.ok = 0;
            self.fail = self.fail.saturating_add(1);
            if healthy && self.fail >= check.unhealthy_after {
                state.active_ok.store(false, Ordering::Relaxed);
                return Change::Unhealthy;
            }
        }
        Change::None
    }
}

async fn probe(
    check: &ActiveCheck,
    uri: &Uri,
    host: &str,
    client: &HttpClient,
    connector: &Connector,
) -> bool {
    if check.tcp {
        let mut c = connector.clone();
        return tower_service::Service::call(&mut c, uri.clone())
            .await
            .is_ok();
    }
    let mut req = Request::new(crate::body::empty());
    *req.uri_mut() = uri.clone();
    if let Ok(h) = HeaderValue::from_str(host) {
        req.headers_mut().insert(header::HOST, h);
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("gatehouse-health-check"),
    );
    match client.request(req).await {
        Ok(resp) => {
            let ok = check.status_ok(resp.status().as_u16());
            // Read (a bounded amount of) the body so the connection can be reused.
            let body = resp.into_body();
            let _ = http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 64 * 1024))
                .await;
            ok
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gatehouse_core::upstream::Passive;

    use super::*;
    use crate::upstream::outlier;
    use crate::upstream::registry::Registry;

    fn check() -> ActiveCheck {
        ActiveCheck {
            tcp: false,
            path: "/healthz".into(),
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            unhealthy_after: 2,
            healthy_after: 2,
            statuses: Vec::new(),
        }
    }

    /// Ejects `all[0]` by passive detection (3 failures, 30 s).
    fn eject(reg: &Registry, all: &[Arc<TargetState>]) {
        let p = Passive {
            consecutive_failures: 3,
            eject_for: Duration::from_secs(30),
            max_ejected_pct: 50,
        };
        for _ in 0..3 {
            outlier::record(&p, &reg.clock, all, &all[0], true);
        }
        assert!(all[0].ejected(&reg.clock));
    }

    #[test]
    fn active_recovery_clears_a_running_passive_ejection() {
        let reg = Registry::default();
        let all: Vec<Arc<TargetState>> = (0..2).map(|_| Arc::default()).collect();
        let t = &all[0];
        let (c, clock) = (check(), &reg.clock);
        let mut s = Streaks::default();
        // Passive detection ejects the target, then the active check sees it down.
        eject(&reg, &all);
        assert_eq!(s.observe(false, &c, t, clock), Change::None);
        assert_eq!(s.observe(false, &c, t, clock), Change::Unhealthy);
        assert_eq!(t.describe(clock), "unhealthy");
        // It comes back: `healthy_after` good probes end the ejection with the active verdict.
        assert_eq!(s.observe(true, &c, t, clock), Change::None);
        assert!(!t.healthy(clock), "one good probe is not enough");
        assert_eq!(
            s.observe(true, &c, t, clock),
            Change::Healthy {
                ejection_cleared: true
            }
        );
        assert!(!t.ejected(clock));
        assert!(t.healthy(clock), "back in rotation at once, not after 30 s");
        assert_eq!(t.describe(clock), "healthy");
        assert_eq!(t.failures.load(Ordering::Relaxed), 0);
        // The ejection count stays, so a relapse soon after still escalates (2 × 30 s).
        assert_eq!(t.ejections.load(Ordering::Relaxed), 1);
        eject(&reg, &all);
        let left = t.ejected_until_ms.load(Ordering::Relaxed) - clock.now_ms();
        assert!((59_000..=60_001).contains(&left), "{left}");
    }

    #[test]
    fn good_probes_of_a_healthy_target_keep_its_ejection() {
        let reg = Registry::default();
        let all: Vec<Arc<TargetState>> = (0..2).map(|_| Arc::default()).collect();
        let t = &all[0];
        let (c, clock) = (check(), &reg.clock);
        let mut s = Streaks::default();
        eject(&reg, &all);
        // The health path answers while real traffic fails: passive detection decides.
        for _ in 0..5 {
            assert_eq!(s.observe(true, &c, t, clock), Change::None);
        }
        assert!(t.ejected(clock));
        assert_eq!(t.describe(clock), "ejected");
    }

    #[test]
    fn recovery_without_an_ejection_changes_only_the_verdict() {
        let reg = Registry::default();
        let t = TargetState::default();
        let (c, clock) = (check(), &reg.clock);
        let mut s = Streaks::default();
        s.observe(false, &c, &t, clock);
        assert_eq!(s.observe(false, &c, &t, clock), Change::Unhealthy);
        s.observe(true, &c, &t, clock);
        assert_eq!(
            s.observe(true, &c, &t, clock),
            Change::Healthy {
                ejection_cleared: false
            }
        );
        assert_eq!(t.ejected_until_ms.load(Ordering::Relaxed), 0);
        assert!(t.healthy(clock));
    }
}
