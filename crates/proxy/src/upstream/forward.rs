//! The upstream call as the pipeline sees it: one function that takes a breaker slot, buffers a
//! small body when it may need to be sent again, starts the mirror copy, picks a healthy
//! target, calls it, feeds outlier detection, and retries when the policy, the method, the
//! budget and the deadline all allow.

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::Response;
use http_body::Body as _;
use tokio::time::Instant;

use gatehouse_core::snapshot::Route;
use gatehouse_core::GatewayError;
use gatehouse_telemetry::metrics::UpstreamLabels;

use crate::body::{self, Body, UpstreamBody};
use crate::context::Ctx;
use crate::gateway::{Active, Shared};
use crate::policy::forwarded::Added;

use super::retry::{backoff, should_retry, Outcome, REPLAY_LIMIT};
use super::{mirror, outlier};

/// What the pipeline hands over beside the request head (lent separately, headers
/// transformed and version set): the upstream chosen, the path it goes to, the body.
pub struct Outbound {
    /// Index of the upstream in the snapshot.
    pub upstream: usize,
    /// The gateway's forwarding headers, sent after the head's.
    pub added: Added,
    /// The origin-form target for the upstream, validated.
    pub path_and_query: PathAndQuery,
    pub body: Body,
    /// The consistent-hash key of the request, if the upstream hashes.
    pub hash: Option<u64>,
    /// WebSocket handshakes are tried once.
    pub upgrade: bool,
}

impl Default for Outbound {
    /// Filled in place by the pipeline (moved, it is ~300 bytes copied at each step).
    fn default() -> Self {
        Outbound {
            upstream: 0,
            added: Added::default(),
            path_and_query: PathAndQuery::from_static("/"),
            body: body::empty(),
            hash: None,
            upgrade: false,
        }
    }
}

/// Calls the upstream for `parts` (emptied when the last attempt goes to an HTTP/2 upstream,
/// which takes the head).
pub async fn forward(
    shared: &Arc<Shared>,
    active: &Active,
    route: &Route,
    parts: &mut Parts,
    out: &mut Outbound,
    started: Instant,
    ctx: &mut Ctx,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let up_idx = out.upstream;
    let ups = &active.snapshot.upstreams[up_idx];
    let res = &active.upstreams[up_idx];
    let labels = || UpstreamLabels {
        upstream: ups.name.clone(),
    };

    // circuit breaker: a slot for the whole exchange (released when the response body ends)
    match res.state.breaker.acquire(&ups.breaker).await {
        Ok(permit) => ctx.upstream_permit = Some(permit),
        Err(_) => {
            shared
                .metrics
                .breaker_rejections
                .get_or_create(&labels())
                .inc();
            return Err(GatewayError::UpstreamUnavailable);
        }
    }
    let _live = res.state.budget.request();

    // `out` is lent and used in place, not taken apart: an async fn keeps its arguments for
    // its whole life (by value, twice), and moving the fields out would store them again.
    let (hash, upgrade) = (out.hash, out.upgrade);
    let body = std::mem::replace(&mut out.body, body::empty());
    let policy = ups.retries.as_ref().filter(|p| p.attempts > 1 && !upgrade);
    let mirror_to = route
        .mirror
        .as_ref()
        .filter(|m| m.percent > 0 && fastrand::u32(0..100) < m.percent);

    // A body is buffered only when it may be sent twice and is small and of known length;
    // anything else streams and is tried once.
    let replay = (policy.is_some() || mirror_to.is_some())
        && body.size_hint().exact().is_some_and(|n| n <= REPLAY_LIMIT);
    let (mut stream, bytes) = if replay {
        (None, Some(Box::pin(collect(body, ctx)).await?))
    } else {
        (Some(body), None)
    };

    if let Some(m) = mirror_to {
        match &bytes {
            Some(b) => mirror::spawn(
                shared,
                active.snapshot.upstreams[m.upstream].clone(),
                &active.upstreams[m.upstream],
                &parts.method,
                out.path_and_query.as_str(),
                &{
                    let mut h = parts.headers.clone();
                    out.added.merge_into(&mut h);
                    h
                },
                b.clone(),
            ),
            None => {
                shared
                    .mirrors
                    .skipped
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }

    let max_attempts = match (&bytes, policy) {
        (Some(_), Some(p)) => p.attempts,
        _ => 1,
    };
    // The route's timeout runs from when the pipeline handed the request over (`started`,
    // also the first attempt's start: the clock is read once per attempt).
    let deadline = started + route.timeout.unwrap_or(ups.timeouts.request);
    let clock = &shared.registry.clock;
    let method = parts.method.clone();
    let mut previous: Option<usize> = None;
    let mut _retry_slot = None;
    let mut attempt = 0;
    loop {
        attempt += 1;
        ctx.attempts = attempt;
        let t_idx = ups.pick_healthy(hash, &mut |n| fastrand::u32(0..n), &|i| {
            Some(i) != previous && res.targets[i].healthy(clock)
        });
        let t = &ups.targets[t_idx];
        let body = match (&bytes, stream.take()) {
            (_, Some(s)) => s,
            (Some(b), None) => body::full(b.clone()),
            (None, None) => body::empty(),
        };
        let now = if attempt == 1 {
            started
        } else {
            Instant::now()
        };
        let try_deadline = ups
            .timeouts
            .per_try
            .map_or(deadline, |p| (now + p).min(deadline));
        let req = super::call::Attempt {
            head: &mut *parts,
            added: &out.added,
            pq: &out.path_and_query,
            last: attempt >= max_attempts,
            started: now,
            deadline: try_deadline,
        };

        let result = super::call(res, t_idx, t, req, body, ctx).await;
        let outcome = Outcome::of(
            &result
                .as_ref()
                .map(|r| r.status().as_u16())
                .map_err(Clone::clone),
        );

        // Outlier detection: a failure counts now; a response head that looks good counts as a
        // success only once its body has ended well (the pipeline reports it then, F4), so an
        // upstream that resets mid-body is not forgiven by its own good head.
        let counts = ups.passive.is_some() && outcome != Outcome::Client;
        let failed = outcome.is_failure();
        if counts && failed {
            report_outcome(shared, active, up_idx, t_idx, true);
        }

        if let Some(p) = policy {
            if attempt < max_attempts && should_retry(p, outcome, &method) {
                match res.state.budget.try_retry(p.budget_pct, p.budget_min) {
                    Some(slot) => {
                        let wait = backoff(p, attempt, |c| fastrand::u64(0..c));
                        if Instant::now() + wait < deadline {
                            shared.metrics.retries.get_or_create(&labels()).inc();
                            if counts && !failed {
                                // A status retried by policy but not a failure (e.g. 404).
                                report_outcome(shared, active, up_idx, t_idx, false);
                            }
                            drop(result);
                            Box::pin(tokio::time::sleep(wait)).await;
                            _retry_slot = Some(slot);
                            previous = Some(t_idx);
                            continue;
                        }
                    }
                    None => {
                        shared
                            .metrics
                            .retries_budget_exhausted
                            .get_or_create(&labels())
                            .inc();
                    }
                }
            }
        }
        if counts && !failed {
            ctx.outlier_target = Some(t_idx);
        }
        return result;
    }
}

/// Feeds one finished call to passive outlier detection (nothing without `health.passive`).
/// Called by [`forward`] for failures up to the response head and by the pipeline when a
/// response body ends: completed (success) or failed on the upstream side (failure).
pub fn report_outcome(shared: &Shared, active: &Active, up_idx: usize, t_idx: usize, failed: bool) {
    let ups = &active.snapshot.upstreams[up_idx];
    let Some(p) = &ups.passive else {
        return;
    };
    let res = &active.upstreams[up_idx];
    let Some(t) = res.targets.get(t_idx) else {
        return;
    };
    if outlier::record(p, &shared.registry.clock, &res.targets, t, failed) {
        shared
            .metrics
            .ejections
            .get_or_create(&UpstreamLabels {
                upstream: ups.name.clone(),
            })
            .inc();
    }
}

async fn collect(body: Body, ctx: &Ctx) -> Result<Bytes, GatewayError> {
    match http_body_util::BodyExt::collect(body).await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            if ctx.body_too_large() {
                Err(GatewayError::PayloadTooLarge)
            } else if e.is::<crate::body::ClientBodyError>() {
                Err(GatewayError::BadRequest("malformed request body"))
            } else {
                Err(GatewayError::BadRequest("request body was not received"))
            }
        }
    }
}
