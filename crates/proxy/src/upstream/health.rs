//! Active health checks: one task per (upstream, target) probing every `interval` with an HTTP
//! `GET path` (healthy if the status is expected) or a TCP (+TLS) connect. `unhealthy_after`
//! failures in a row take the target out of rotation, `healthy_after` successes bring it back.
//! Tasks are started and stopped when a snapshot is installed (unchanged checks keep running
//! with their streaks) and all stop when the gateway shuts down.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use http::{header, HeaderValue, Request, Uri};
use tokio::task::JoinHandle;

use gatehouse_core::upstream::{ActiveCheck, Target, Upstream};

use super::client::{Connector, HttpClient};
use super::registry::TargetState;

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
    pub fn sync(&self, specs: &[CheckSpec<'_>]) {
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
    upstream: String,
    target: String,
) {
    let mut ok_streak = 0u32;
    let mut fail_streak = 0u32;
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
        let healthy = state.active_ok.load(Ordering::Relaxed);
        if ok {
            fail_streak = 0;
            ok_streak = ok_streak.saturating_add(1);
            if !healthy && ok_streak >= check.healthy_after {
                state.active_ok.store(true, Ordering::Relaxed);
                tracing::info!(%upstream, %target, "health check: target healthy again");
            }
        } else {
            ok_streak = 0;
            fail_streak = fail_streak.saturating_add(1);
            if healthy && fail_streak >= check.unhealthy_after {
                state.active_ok.store(false, Ordering::Relaxed);
                tracing::warn!(%upstream, %target, "health check: target unhealthy");
            }
        }
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
