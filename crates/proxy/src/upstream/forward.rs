//! The upstream call as the pipeline sees it: one function that takes a breaker slot, buffers a
//! small body when it may need to be sent again, starts the mirror copy, picks a healthy
//! target, calls it, feeds outlier detection, and retries when the policy, the method, the
//! budget and the deadline all allow.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::Response;
use http_body::Body as _;

use gatehouse_core::snapshot::Route;
use gatehouse_core::GatewayError;
use gatehouse_telemetry::metrics::UpstreamLabels;

use crate::body::{self, Body, UpstreamBody};
use crate::context::Ctx;
use crate::gateway::{Active, Shared};
use crate::policy::forwarded::Added;

use super::retry::{backoff, should_retry, Outcome, REPLAY_LIMIT};
use super::{mirror, outlier};

/// What the pipeline hands over: the request head ready for the upstream (headers transformed,
/// version set) and the path it goes to.
pub struct Outbound {
    /// Always `Some` when handed over; taken by the last attempt to an HTTP/2 upstream.
    pub parts: Option<Parts>,
    /// The gateway's forwarding headers, sent after `parts.headers`.
    pub added: Added,
    pub path_and_query: String,
    pub body: Body,
    /// The consistent-hash key of the request, if the upstream hashes.
    pub hash: Option<u64>,
    /// WebSocket handshakes are tried once.
    pub upgrade: bool,
}

pub async fn forward(
    shared: &Arc<Shared>,
    active: &Active,
    up_idx: usize,
    route: &Route,
    mut out: Outbound,
    ctx: &mut Ctx,
) -> Result<Response<UpstreamBody>, GatewayError> {
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

    // `out` is used in place, not taken apart: an async fn keeps its arguments for its whole
    // life, and moving the fields out would store them twice in this future.
    let Some(parts) = out.parts.as_ref() else {
        return Err(GatewayError::Internal);
    };
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
                &out.path_and_query,
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
    let started = Instant::now();
    let deadline = started + route.timeout.unwrap_or(ups.timeouts.request);
    let clock = &shared.registry.clock;
    let method = parts.method.clone();
    // Validated once (the same parser a `Uri` uses), shared by every attempt without a copy.
    let pq = PathAndQuery::from_maybe_shared(Bytes::from(std::mem::take(&mut out.path_and_query)))
        .map_err(|_| GatewayError::BadRequest("invalid rewritten path"))?;
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
        let req = super::call::Attempt {
            head: &mut out.parts,
            added: &out.added,
            pq: &pq,
            last: attempt >= max_attempts,
        };

        let now = Instant::now();
        let left = deadline.saturating_duration_since(now);
        let try_timeout = ups.timeouts.per_try.map_or(left, |p| p.min(left));
        let result = super::call(res, t_idx, t, req, body, try_timeout, ctx).await;
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
            if ctx.body.too_large() {
                Err(GatewayError::PayloadTooLarge)
            } else if e.is::<crate::body::ClientBodyError>() {
                Err(GatewayError::BadRequest("malformed request body"))
            } else {
                Err(GatewayError::BadRequest("request body was not received"))
            }
        }
    }
}
