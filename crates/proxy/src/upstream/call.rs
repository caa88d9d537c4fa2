//! One upstream call: send, wait for the response head within the timeout, map failures to
//! the SPEC.md statuses without leaking upstream detail.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{header, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::capture_connection;

use gatehouse_core::upstream::Target;
use gatehouse_core::GatewayError;

use crate::body::{Body, ClientBodyError};
use crate::context::Ctx;
use crate::upstream::HttpClient;

pub async fn call(
    client: &HttpClient,
    target: &Target,
    mut req: Request<Body>,
    timeout: Duration,
    ctx: &Ctx,
) -> Result<Response<Incoming>, GatewayError> {
    // S13: hyper drains a small unread body and pools the connection again; a connection
    // that sent an ambiguous response must be poisoned instead, which needs this handle.
    let conn = capture_connection(&mut req);
    target.in_flight.fetch_add(1, Ordering::Relaxed);
    let res = tokio::time::timeout(timeout, client.request(req)).await;
    target.in_flight.fetch_sub(1, Ordering::Relaxed);
    match res {
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
            if ctx.body_too_large.load(Ordering::Relaxed) {
                return Err(GatewayError::PayloadTooLarge);
            }
            if is_client_body_error(&e) {
                // The client's own body was malformed (bad chunk framing): its fault, 400.
                return Err(GatewayError::BadRequest("malformed request body"));
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

fn is_client_body_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<ClientBodyError>() {
            return true;
        }
        cur = err.source();
    }
    false
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
