//! THE request path. Phases run top to bottom in the order SPEC.md fixes:
//!
//! normalize → route → CORS preflight → IP allow/deny → authenticate → authorize →
//! rate limit / concurrency → request transform → cache lookup → upstream call
//! (proxy | aggregate | grpc | websocket) → response transform → cache store → log and metrics
//!
//! Each phase is a function that either lets the request continue or answers it. The
//! snapshot is loaded once per request and used to the end, so a reload never changes
//! the rules under a running request. Phases not built yet (cache lookup/store,
//! aggregation, REST→gRPC transcoding) slot in where marked.

use std::borrow::Cow;
use std::sync::Arc;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, HeaderValue, Response, StatusCode, Version};
use tokio::time::Instant;

use gatehouse_core::snapshot::Route;
use gatehouse_core::upstream::Balance;
use gatehouse_core::GatewayError;
use gatehouse_telemetry::access_log::LogTime;
use gatehouse_telemetry::metrics::UpstreamLabels;
use gatehouse_telemetry::AccessRecord;

use crate::body::{
    self, Body, BodyEnd, GatewayFields, LimitedBody, OnComplete, RequestBody, ResponseBody,
    ResponseInner,
};
use crate::context::{BodyStats, Ctx};
use crate::gateway::{Active, Shared};
use gatehouse_core::auth::{AuthRequirement, KeySource, ProviderKind};
use gatehouse_core::Snapshot;

use crate::policy::{
    api_key, auth, authz, body_limit, cors, forwarded, headers as header_policy, ip, ratelimit,
    rewrite,
};
use crate::server::conn::ConnInfo;
use crate::{normalize, route, upgrade, upstream};

/// Runs the pipeline for one request. The head is lent by the caller, and lent on to each
/// stage: an async fn keeps its arguments for its whole life (a by-value argument is stored
/// twice: as passed and as the local it becomes), so every layer that took the request by
/// value added more copies of it to the per-request future, moved in memory at every layer.
pub async fn handle(
    parts: &mut Parts,
    body: RequestBody,
    conn: Arc<ConnInfo>,
    shared: Arc<Shared>,
) -> Response<ResponseBody> {
    let active = shared.active.load_full();
    // The completion hook (log and metrics when the body ends) is made first and the
    // request's context lives in it: this future holds a pointer instead of the context, and
    // the context is never moved (~400 bytes copied at each step otherwise).
    let mut done = Completion::boxed(
        |active, shared, conn| {
            Ctx::new(
                &parts.method,
                &parts.uri,
                &parts.headers,
                conn,
                &active.snapshot,
                shared.access_log.enabled(),
            )
        },
        active,
        shared,
        conn,
    );
    let Completion {
        ctx,
        active,
        shared,
        conn,
        ..
    } = &mut *done;
    shared.metrics.in_flight.inc();
    let mut resp = match run(parts, body, ctx, active, conn, shared).await {
        Ok(r) => r,
        Err(e) => {
            // The upstream answered, but the answer was refused after `forward` (a framing
            // the gateway will not pass on, an unasked-for 101): the target's failure.
            if let (Some(u), Some(t)) = (ctx.upstream, ctx.outlier_target.take()) {
                if e == GatewayError::BadGateway {
                    upstream::forward::report_outcome(shared, active, u, t, true);
                }
            }
            local_response(&e, ctx).map(ResponseInner::Local)
        }
    };
    if ctx.cors_actual {
        if let Some(c) = ctx
            .route
            .and_then(|i| active.snapshot.routes[i].cors.as_ref())
        {
            cors::apply(c, ctx.cors_origin.as_ref(), resp.headers_mut());
        }
    }
    finish(resp, done)
}

/// The phases before the upstream call ([`admit`]), then the call and the response
/// transform.
async fn run(
    parts: &mut Parts,
    body: RequestBody,
    ctx: &mut Ctx,
    active: &Arc<Active>,
    conn: &ConnInfo,
    shared: &Arc<Shared>,
) -> Result<Response<ResponseInner>, GatewayError> {
    let mut outbound = upstream::Outbound::default();
    let on_upgrade = match admit(parts, body, &mut outbound, ctx, active, conn, shared).await? {
        Admission::Answer(r) => return Ok(*r),
        Admission::Forward(u) => u,
    };
    let snap = &active.snapshot;
    let (Some(route_idx), Some(up_idx)) = (ctx.route, ctx.upstream) else {
        return Err(GatewayError::Internal);
    };
    let route: &Route = &snap.routes[route_idx];
    let ups = &snap.upstreams[up_idx];
    let websocket = outbound.upgrade;

    // upstream call: `forward` picks a healthy target, calls it and retries when safe.
    let started = Instant::now();
    let result = upstream::forward(shared, active, route, parts, &mut outbound, started, ctx).await;
    drop(outbound);
    ctx.upstream_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    if let Err(e) = &result {
        if e.cause() == gatehouse_core::Cause::Upstream {
            shared
                .metrics
                .upstream_errors
                .get_or_create(&UpstreamLabels {
                    upstream: ups.name.clone(),
                })
                .inc();
        }
    }
    let mut resp = result?;

    // response transform (framing was already checked by `upstream::call`, which also
    // poisons the pooled connection when it is ambiguous, S13). An HTTP/1 upstream's fields
    // may have been kept raw for the HTTP/1 encoder (`http1::raw`); whatever reads or
    // changes them here needs them in the map.
    if websocket || route.cors.is_some() || !route.response_headers.is_empty() {
        body::with_all_fields(&mut resp);
    }
    if websocket && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let tunnelled = match on_upgrade {
            Some(client_side) => {
                upgrade::tunnel(client_side, &mut resp, ups.timeouts.idle, shared, conn)
            }
            None => false,
        };
        if !tunnelled {
            return Err(GatewayError::BadGateway);
        }
        header_policy::strip_response_hop_by_hop(resp.headers_mut(), true);
    } else if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // An upstream may not switch protocols on a request that did not ask for it.
        return Err(GatewayError::BadGateway);
    } else {
        header_policy::strip_response_hop_by_hop(resp.headers_mut(), false);
    }
    route.response_headers.apply(resp.headers_mut());

    // cache store: caching is not built yet; it slots in here (after
    // `body::with_all_fields`: the fields may still be raw here).
    ctx.body_idle = Some(ups.timeouts.idle);
    Ok(resp.map(ResponseInner::Upstream))
}

/// What the phases before the upstream call decided: the request is ready for `forward`
/// (with the client side of a WebSocket handshake, to tunnel once the upstream agrees), or
/// they answered it themselves (a CORS preflight, an authentication provider's response).
enum Admission {
    Answer(Box<Response<ResponseInner>>),
    Forward(Option<tokio::sync::oneshot::Receiver<crate::http1::Upgraded>>),
}

/// normalize → route → CORS preflight → IP allow/deny → authenticate → authorize → rate
/// limit / concurrency → request transform, leaving the request for the upstream in `parts`
/// and `out` (filled in place; `ctx.route` and `ctx.upstream` say where it goes). A function
/// of its own so that its locals (the route parameters, the target, the identity: ~800
/// bytes) are not kept in the request's future while the upstream call runs.
async fn admit(
    parts: &mut Parts,
    body: RequestBody,
    out: &mut upstream::Outbound,
    ctx: &mut Ctx,
    active: &Arc<Active>,
    conn: &ConnInfo,
    shared: &Arc<Shared>,
) -> Result<Admission, GatewayError> {
    let snap = &active.snapshot;

    // normalize
    normalize::check_head(
        &parts.method,
        &parts.uri,
        parts.version,
        &parts.headers,
        &snap.limits,
    )
    .inspect_err(|_| ctx.close = true)?;
    let target = normalize::target(&parts.uri, parts.version, &parts.headers)
        .inspect_err(|_| ctx.close = true)?;

    // route; a CORS preflight is routed with the method it asks about, and answered here
    // (CORS preflight phase) when that route has CORS: before IP rules and authentication,
    // since browsers never send credentials on a preflight.
    if let Some(asked) = cors::preflight_method(&parts.method, &parts.headers) {
        if let Ok((idx, _)) = route::find(
            &snap.router,
            &target.host,
            &target.route,
            &asked,
            &parts.headers,
        ) {
            if let Some(c) = &snap.routes[idx].cors {
                ctx.route = Some(idx);
                return cors::preflight(c, &asked, &parts.headers)
                    .map(|r| Admission::Answer(Box::new(r.map(ResponseInner::from))));
            }
        }
    }
    let (route_idx, params) = route::find(
        &snap.router,
        &target.host,
        &target.route,
        &parts.method,
        &parts.headers,
    )?;
    ctx.route = Some(route_idx);
    let route: &Route = &snap.routes[route_idx];
    #[cfg(feature = "test-hooks")]
    if parts.headers.contains_key("x-gatehouse-test-panic") {
        panic!("test hook: panic inside the pipeline");
    }

    if route.cors.is_some() {
        ctx.cors_actual = true;
        ctx.cors_origin = parts.headers.get(header::ORIGIN).cloned();
    }

    // IP allow/deny
    if route.allow.has_ip_rules() {
        ip::check(&route.allow, ctx.client_ip)
            .inspect_err(|_| close_if_unread_body(ctx, &parts.headers))?;
    }

    // authenticate
    let identity = match &route.auth {
        None => None,
        Some(requirement) => {
            redact_key_params(ctx, requirement, snap);
            let areq = auth::AuthRequest {
                method: &parts.method,
                uri: &parts.uri,
                headers: &parts.headers,
                ctx,
            };
            // K2: a client IP over its failed-attempt budget gets 429 before any
            // credential is looked at; only failures spend the budget.
            let failures = active
                .auth_failures
                .as_deref()
                .map(|l| (l, l.hash_ip(ctx.client_ip)));
            if let Some((limiter, key)) = failures {
                let d = limiter.peek_hashed(key);
                if !d.allowed {
                    close_if_unread_body(ctx, &parts.headers);
                    return Err(GatewayError::RateLimited {
                        retry_after: ratelimit::ceil_secs(d.retry_after).max(1),
                    });
                }
            }
            // An API key or a cached JWT is decided at once; anything else runs the provider
            // chain, boxed: its future (JWKS refetch, introspection, forward auth) is large,
            // and inline it would make every request's future larger, authenticated or not.
            let authenticated = match auth::authenticate_now(&areq, requirement, snap, &active.auth)
            {
                Some(r) => r,
                None => {
                    Box::pin(auth::authenticate(
                        &areq,
                        requirement,
                        snap,
                        &active.auth,
                        &shared.auth,
                    ))
                    .await
                }
            };
            match authenticated {
                Ok(id) => Some(id),
                Err(failure) => {
                    if let Some((limiter, key)) = failures {
                        if failure.is_refusal() {
                            limiter.check_hashed(key);
                        }
                    }
                    // A local answer leaves the request body unread (S12).
                    close_if_unread_body(ctx, &parts.headers);
                    return match failure {
                        auth::AuthFailure::Missing => Err(GatewayError::Unauthorized),
                        auth::AuthFailure::Invalid => Err(GatewayError::InvalidToken),
                        auth::AuthFailure::Unavailable => Err(GatewayError::UpstreamUnavailable),
                        auth::AuthFailure::Respond(r) => {
                            Ok(Admission::Answer(Box::new(r.map(ResponseInner::from))))
                        }
                    };
                }
            }
        }
    };
    if let Some(id) = &identity {
        ctx.consumer = id.consumer_name(snap).map(str::to_string);
    }

    // authorize
    authz::check(&route.allow, identity.as_ref(), snap)
        .inspect_err(|_| close_if_unread_body(ctx, &parts.headers))?;

    // rate limit / concurrency
    if let Some(limits) = active.limits.get(route_idx).and_then(Option::as_ref) {
        // Not boxed: only its Redis round trip (boxed inside) has a large future.
        ratelimit::check(
            limits,
            active.redis.as_deref(),
            snap.redis.as_ref(),
            ctx,
            &parts.headers,
        )
        .await?;
    }

    // request transform
    let websocket = route.websocket && header_policy::is_upgrade_request(&parts.headers);
    if websocket {
        upgrade::check_handshake(&parts.method, parts.version, &parts.headers)?;
    }
    body_limit::check_declared(&parts.headers, route.max_body).inspect_err(|_| ctx.close = true)?;
    // hide_credentials: a query-string API key never reaches the upstream.
    let mut query: Option<Cow<'_, str>> = target.query.map(Cow::Borrowed);
    for src in identity.iter().flat_map(|id| id.hide.iter()) {
        if let KeySource::Query(name) = src {
            query = query.and_then(|q| api_key::remove_query_param(&q, name).map(Cow::Owned));
        }
    }
    // The client's own target when nothing changes it (a clone of the parsed one); a
    // rewritten one is checked by the same parser.
    let path_and_query = match parts.uri.path_and_query() {
        Some(original)
            if route.rewrite.is_empty()
                && matches!(query, None | Some(Cow::Borrowed(_)))
                && original.path() == target.forward =>
        {
            original.clone()
        }
        _ => {
            let rewritten =
                rewrite::upstream_path(&route.rewrite, &target.forward, query.as_deref(), &params);
            PathAndQuery::from_maybe_shared(bytes::Bytes::from(rewritten))
                .map_err(|_| GatewayError::BadRequest("invalid rewritten path"))?
        }
    };
    drop(query);
    // The client's `Host` value itself when the authority came from it (a slice of the
    // request head: its clones cost no allocation), else a copy of the URI's authority.
    let authority = match target.host_field {
        Some(h) => h.clone(),
        None => HeaderValue::from_str(&target.authority)
            .map_err(|_| GatewayError::BadRequest("invalid host"))?,
    };
    drop(params);
    drop(target);

    // Upstream choice, from the request as the client sent it (before header transforms can
    // remove a cookie used as key): the canary split (sticky by a header or cookie), then the
    // consistent-hash key. Target choice happens in `forward`.
    let sticky = route.sticky.as_ref().and_then(|on| {
        upstream::balance::request_hash(
            on,
            &parts.headers,
            ctx.client_ip,
            ctx.consumer.as_deref(),
            path_and_query.as_str(),
        )
    });
    let up_idx = route.target.pick(sticky, |n| fastrand::u32(0..n));
    ctx.upstream = Some(up_idx);
    let ups = &snap.upstreams[up_idx];
    let hash = if ups.balance == Balance::ConsistentHash {
        let path = path_and_query.path();
        upstream::balance::request_hash(
            &ups.hash_on,
            &parts.headers,
            ctx.client_ip,
            ctx.consumer.as_deref(),
            path,
        )
        .or_else(|| Some(upstream::balance::hash_ip(ctx.client_ip)))
    } else {
        None
    };

    // Hop-by-hop and spoofable fields go, and the client's copies of every identity header
    // any provider sets are gone before the gateway sets its own (X2), on public routes too.
    header_policy::strip_request(
        &mut parts.headers,
        ctx.peer_trusted,
        websocket,
        &snap.auth.identity_headers,
    );
    if let Some(id) = &identity {
        for src in &id.hide {
            if let KeySource::Header(name) = src {
                parts.headers.remove(name);
            }
        }
        for (name, value) in &id.headers {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    forwarded::add_forwarded(
        &mut out.added,
        &mut parts.headers,
        ctx,
        &authority,
        conn.tls,
        conn.peer.ip(),
    );
    // Usually the map's own `Host`, untouched by the removals above: then there is nothing
    // to insert (a lookup is ~85 instructions, an insert that replaces ~190).
    if !authority.is_empty() && parts.headers.get(header::HOST) != Some(&authority) {
        parts.headers.insert(header::HOST, authority);
    }
    if !route.request_headers.is_empty() {
        // The route's operations see (and may replace or remove) the gateway's fields.
        out.added.merge_into(&mut parts.headers);
        out.added = forwarded::Added::default();
        route.request_headers.apply(&mut parts.headers);
    }

    // cache lookup: caching is not built yet; it slots in here.

    let on_upgrade = if websocket {
        parts
            .extensions
            .remove::<crate::server::h1::ServerUpgrade>()
            .and_then(|u| u.take())
    } else {
        None
    };
    parts.version = if ups.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    parts.extensions = http::Extensions::new();
    // No body, nothing to count or box (`out.body` starts empty: a box of nothing is no
    // allocation).
    if !matches!(body, RequestBody::Empty) {
        let stats = Arc::new(BodyStats::default());
        ctx.body = Some(stats.clone());
        let body = LimitedBody::new(body, route.max_body, stats);
        out.body = http_body_util::BodyExt::boxed_unsync(body);
    }
    out.upstream = up_idx;
    out.path_and_query = path_and_query;
    out.hash = hash;
    out.upgrade = websocket;
    Ok(Admission::Forward(on_upgrade))
}

/// A request refused before the pipeline could run (its head or framing was invalid): the
/// error response, logged and counted like any other. `parts` is the head when it parsed.
pub fn reject(
    e: GatewayError,
    parts: Option<Box<http::request::Parts>>,
    conn: &Arc<ConnInfo>,
    shared: &Arc<Shared>,
) -> Response<ResponseBody> {
    let active = shared.active.load_full();
    let (method, uri, headers) = match &parts {
        Some(p) => (p.method.clone(), p.uri.clone(), Some(&p.headers)),
        None => (
            http::Method::from_bytes(b"-").unwrap_or_default(),
            http::Uri::from_static("/"),
            None,
        ),
    };
    let empty = http::HeaderMap::new();
    let mut ctx = Ctx::new(
        &method,
        &uri,
        headers.unwrap_or(&empty),
        conn,
        &active.snapshot,
        shared.access_log.enabled(),
    );
    if parts.is_none() {
        ctx.log_path = "-".into();
    }
    ctx.close = true;
    shared.metrics.in_flight.inc();
    let resp = local_response(&e, &mut ctx).map(ResponseInner::Local);
    finish(
        resp,
        Completion::boxed(|_, _, _| ctx, active, shared.clone(), conn.clone()),
    )
}

/// A request whose body the gateway will not read cannot leave its connection reusable.
fn close_if_unread_body(ctx: &mut Ctx, headers: &http::HeaderMap) {
    if headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
    {
        ctx.close = true;
    }
}

/// API keys given in the query are never written to the access log (K4).
fn redact_key_params(ctx: &mut Ctx, requirement: &AuthRequirement, snap: &Snapshot) {
    // A byte search: `str::contains(char)` sets up a pattern searcher (~85 instructions on
    // every authenticated request, for a path that is usually a few bytes).
    if !ctx.log_path.as_bytes().contains(&b'?') {
        return;
    }
    for &p in requirement.providers() {
        if let ProviderKind::ApiKey(k) = &snap.auth.providers[p].kind {
            for src in &k.sources {
                if let KeySource::Query(name) = src {
                    ctx.log_path = api_key::redact_log_param(&ctx.log_path, name);
                }
            }
        }
    }
}

fn local_response(e: &GatewayError, ctx: &mut Ctx) -> Response<Body> {
    ctx.error = Some(e.code());
    if e == &GatewayError::PayloadTooLarge || ctx.body_too_large() {
        // The rest of the body was not read; the connection cannot be reused (S12).
        ctx.close = true;
    }
    e.to_response(ctx.request_id_str(), ctx.grpc)
        .map(body::full)
}

/// log and metrics: runs when the response body is complete (or the client went away).
struct Completion {
    ctx: Ctx,
    status: u16,
    fields: GatewayFields,
    active: Arc<Active>,
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
}

impl Completion {
    /// The hook for a request whose response is not made yet (`finish` sets its status and
    /// fields).
    /// The context (`make_ctx`) is made after the box is allocated, so that it is written
    /// straight into the box (made first and then boxed, its ~400 bytes were copied twice:
    /// 960 bytes of `memcpy` per request).
    fn boxed(
        make_ctx: impl FnOnce(&Active, &Shared, &ConnInfo) -> Ctx,
        active: Arc<Active>,
        shared: Arc<Shared>,
        conn: Arc<ConnInfo>,
    ) -> Box<Self> {
        let slot = Box::new_uninit();
        let ctx = make_ctx(&active, &shared, &conn);
        Box::write(
            slot,
            Completion {
                ctx,
                status: 0,
                fields: GatewayFields::default(),
                active,
                shared,
                conn,
            },
        )
    }
}

impl OnComplete for Completion {
    fn fields(&self) -> &GatewayFields {
        &self.fields
    }

    fn complete(self: Box<Self>, bytes_out: u64, end: BodyEnd) {
        // Read in place: moved out of the box, the context (~400 bytes) would be copied.
        let Completion {
            ctx,
            status,
            active,
            shared,
            conn,
            ..
        } = &*self;
        let status = *status;
        // Passive outlier detection for a call whose head was fine: a body sent to the end is
        // a success, one the upstream broke off is a failure (F4); a client that went away
        // says nothing about the target.
        if let (Some(u), Some(t)) = (ctx.upstream, ctx.outlier_target) {
            match end {
                BodyEnd::Complete => upstream::forward::report_outcome(shared, active, u, t, false),
                BodyEnd::UpstreamFailed => {
                    upstream::forward::report_outcome(shared, active, u, t, true)
                }
                BodyEnd::Abandoned => {}
            }
        }
        let snap = &active.snapshot;
        let elapsed = ctx.start.elapsed();
        let route_name = ctx.route.map(|i| snap.routes[i].name.as_str());
        let upstream_name = ctx.upstream.map(|i| snap.upstreams[i].name.as_str());
        let m = &shared.metrics;
        m.in_flight.dec();
        // Handles resolved with the snapshot (gateway.rs): no label strings, hashing or
        // family lock per request.
        let route_metrics = match ctx.route {
            Some(i) => &active.route_metrics[i],
            None => &active.no_route_metrics,
        };
        route_metrics.record(m, ctx.method.as_str(), status, elapsed.as_secs_f64());
        if let (Some(u), Some(ms)) = (ctx.upstream, ctx.upstream_ms) {
            active.upstream_metrics[u].observe(m, ms / 1000.0);
        }
        if shared.access_log.enabled() {
            shared.access_log.write(&AccessRecord {
                time: LogTime::now(),
                request_id: ctx.request_id_str(),
                route: route_name,
                method: ctx.method.as_str(),
                path: &ctx.log_path,
                status,
                duration_ms: elapsed.as_secs_f64() * 1000.0,
                upstream: upstream_name,
                upstream_ms: ctx.upstream_ms,
                attempts: (ctx.attempts > 0).then_some(ctx.attempts),
                consumer: ctx.consumer.as_deref(),
                client_ip: ctx.client_ip,
                bytes_in: ctx.body_bytes_in(),
                bytes_out,
                cache: None,
                error: ctx.error,
            });
        }
        if let Some(s) = conn.h2_state() {
            s.request_finished();
        }
    }
}

/// The response as the servers take it: the gateway's own fields beside the head (see
/// [`GatewayFields`]), log and metrics run when its body ends.
fn finish(resp: Response<ResponseInner>, mut done: Box<Completion>) -> Response<ResponseBody> {
    let (parts, b) = resp.into_parts();
    let Completion { ctx, active, .. } = &mut *done;
    let (policy, ratelimit) = match ctx.route.and_then(|i| active.snapshot.routes.get(i)) {
        Some(route) if route.rate_limit_policy.is_some() => {
            (route.rate_limit_policy.clone(), ctx.ratelimit.take())
        }
        _ => (None, None),
    };
    let mut fields = GatewayFields::new(ctx.request_id.clone(), policy, ratelimit);
    fields.close = ctx.close;
    let idle = ctx.body_idle;
    done.fields = fields;
    done.status = parts.status.as_u16();
    // Not boxed: the HTTP/1 server and hyper's HTTP/2 both take the concrete type.
    Response::from_parts(parts, ResponseBody::new(b, idle, done))
}
