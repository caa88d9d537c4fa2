//! One upstream call: send, wait for the response head within the timeout, map failures to
//! the SPEC.md statuses without leaking upstream detail. HTTP/1.1 upstreams go through the
//! gateway's own client (`h1`), HTTP/2 upstreams through hyper-util's.

use std::sync::atomic::Ordering;

use http::request::Parts;
use http::uri::PathAndQuery;
use http::{header, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::capture_connection;
use tokio::time::Instant;

use gatehouse_core::upstream::Target;
use gatehouse_core::GatewayError;

use crate::body::{Body, BodyTooLarge, ClientBodyError, UpstreamBody};
use crate::context::Ctx;
use crate::gateway::ResolvedUpstream;
use crate::policy::forwarded::Added;
use crate::upstream::h1::{self, SendError};
use crate::upstream::HttpClient;

/// The request as each attempt sends it. HTTP/1.1 borrows the head, so a retry sends it again
/// without a copy; HTTP/2 (hyper) needs an owned request: the head is cloned, or taken on the
/// last attempt.
pub struct Attempt<'a> {
    /// Taken (left empty) by the last attempt to an HTTP/2 upstream.
    pub head: &'a mut Parts,
    /// The gateway's forwarding fields, sent after the head's.
    pub added: &'a Added,
    pub pq: &'a PathAndQuery,
    pub last: bool,
    /// When the attempt began.
    pub started: Instant,
    /// When it times out.
    pub deadline: Instant,
}

/// Calls one target.
pub async fn call(
    res: &ResolvedUpstream,
    t_idx: usize,
    target: &Target,
    req: Attempt<'_>,
    body: Body,
    ctx: &Ctx,
) -> Result<Response<UpstreamBody>, GatewayError> {
    target.in_flight.fetch_add(1, Ordering::Relaxed);
    let Attempt {
        head,
        added,
        pq,
        last,
        started,
        deadline,
    } = req;
    let result = match res.pools.get(t_idx) {
        Some(pool) => {
            let parts = &*head;
            let out = h1::Outgoing {
                method: &parts.method,
                path_and_query: pq.as_str(),
                headers: &parts.headers,
                added,
                body,
            };
            // The deadline is kept by the connection's own timer (see `h1::send`).
            match h1::send(pool, started, deadline, out).await {
                Ok(resp) => Ok(resp.map(UpstreamBody::H1)),
                Err(e) => Err(h1_error(e, target, ctx)),
            }
        }
        None => match h2_request(target, head, added, last, pq, body) {
            Err(e) => Err(e),
            // Boxed: hyper's request future is large; the HTTP/1 path should not carry it.
            Ok(req) => Box::pin(call_h2(&res.client, target, req, deadline, ctx))
                .await
                .map(|r| r.map(UpstreamBody::H2)),
        },
    };
    target.in_flight.fetch_sub(1, Ordering::Relaxed);
    result
}

/// An owned request for hyper, with the absolute URI its client needs.
fn h2_request(
    target: &Target,
    head: &mut Parts,
    added: &Added,
    last: bool,
    pq: &PathAndQuery,
    body: Body,
) -> Result<Request<Body>, GatewayError> {
    let uri = Uri::builder()
        .scheme(target.scheme.clone())
        .authority(target.authority.clone())
        .path_and_query(pq.clone())
        .build()
        .map_err(|_| GatewayError::BadRequest("invalid rewritten path"))?;
    let mut req = if last {
        let (empty, ()) = Request::new(()).into_parts();
        Request::from_parts(std::mem::replace(head, empty), body)
    } else {
        let parts = &*head;
        let mut r = Request::new(body);
        *r.method_mut() = parts.method.clone();
        *r.version_mut() = parts.version;
        *r.headers_mut() = parts.headers.clone();
        r
    };
    *req.uri_mut() = uri;
    added.merge_into(req.headers_mut());
    Ok(req)
}

fn h1_error(e: SendError, target: &Target, ctx: &Ctx) -> GatewayError {
    match e {
        SendError::Body(b) => client_body_error(&*b, ctx),
        SendError::Connect(err) => {
            tracing::debug!(upstream = %target.url, error = %err, "upstream connect failed");
            GatewayError::UpstreamUnavailable
        }
        SendError::Io(err) => {
            tracing::debug!(upstream = %target.url, error = %err, "upstream request failed");
            GatewayError::BadGateway
        }
        SendError::Response(err) => {
            tracing::debug!(upstream = %target.url, error = ?err, "invalid upstream response");
            GatewayError::BadGateway
        }
        SendError::Timeout => GatewayError::UpstreamTimeout,
    }
}

/// The client's body failed while it was being sent: too large (413) or malformed (400).
fn client_body_error(e: &(dyn std::error::Error + 'static), ctx: &Ctx) -> GatewayError {
    if ctx.body_too_large() || has::<BodyTooLarge>(e) {
        GatewayError::PayloadTooLarge
    } else {
        GatewayError::BadRequest("malformed request body")
    }
}

fn has<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<T>() {
            return true;
        }
        cur = err.source();
    }
    false
}

async fn call_h2(
    client: &HttpClient,
    target: &Target,
    mut req: Request<Body>,
    deadline: Instant,
    ctx: &Ctx,
) -> Result<Response<Incoming>, GatewayError> {
    // S13: hyper drains a small unread body and pools the connection again; a connection
    // that sent an ambiguous response must be poisoned instead, which needs this handle.
    let conn = capture_connection(&mut req);
    match tokio::time::timeout_at(deadline, client.request(req)).await {
        Err(_) => Err(GatewayError::UpstreamTimeout),
        Ok(Ok(resp)) => {
            if let Err(e) = check_response_framing(&resp) {
                if let Some(c) = conn.connection_metadata().as_ref() {
                    c.poison();
                }
                return Err(e);
            }
            Ok(resp)
        }
        Ok(Err(e)) => {
            if ctx.body_too_large() || has::<ClientBodyError>(&e) {
                // The client's own body was too large or malformed: its fault, not the
                // upstream's.
                return Err(client_body_error(&e, ctx));
            }
            tracing::debug!(upstream = %target.url, error = %e, connect = e.is_connect(), "upstream request failed");
            if e.is_connect() {
                Err(GatewayError::UpstreamUnavailable)
            } else {
                Err(GatewayError::BadGateway)
            }
        }
    }
}

/// S13: a response whose framing the upstream could have meant two ways is refused; the
/// upstream connection is dropped with the unread body, so it is never reused.
pub fn check_response_framing(resp: &Response<Incoming>) -> Result<(), GatewayError> {
    let h = resp.headers();
    if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        return Err(GatewayError::BadGateway);
    }
    if h.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return Err(GatewayError::BadGateway);
    }
    Ok(())
}
