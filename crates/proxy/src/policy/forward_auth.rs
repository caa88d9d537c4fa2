//! Forward auth: the request's method, URI and headers (no body) are sent to an auth
//! service. A 2xx admits and may add headers (`copy_headers`); any other answer is returned
//! to the client as is (bounded), so the service can redirect to a login page or send its
//! own 401/403.

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, Limited};

use gatehouse_core::auth::ForwardProvider;

use super::auth::{AuthClient, AuthFailure, AuthRequest, Identity, MAX_IDENTITY_VALUE};
use crate::body;

/// Largest auth-service response body relayed to the client.
const MAX_DENY_BODY: usize = 64 * 1024;

/// Request headers never sent to the auth service: framing and hop-by-hop.
const SKIP: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "expect",
    "http2-settings",
];

pub async fn check(
    f: &ForwardProvider,
    req: &AuthRequest<'_>,
    client: &AuthClient,
) -> Result<Identity, AuthFailure> {
    let mut out = Request::get(f.url.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|_| AuthFailure::Unavailable)?;
    let h = out.headers_mut();
    for (name, value) in req.headers {
        if !SKIP.contains(&name.as_str()) {
            h.append(name.clone(), value.clone());
        }
    }
    h.insert(
        HeaderName::from_static("x-forwarded-method"),
        HeaderValue::from_str(req.method.as_str()).map_err(|_| AuthFailure::Invalid)?,
    );
    let uri = req.uri.path_and_query().map_or("/", |p| p.as_str());
    h.insert(
        HeaderName::from_static("x-forwarded-uri"),
        HeaderValue::from_str(uri).map_err(|_| AuthFailure::Invalid)?,
    );
    if let Ok(v) = HeaderValue::from_str(&req.ctx.client_ip.to_string()) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    let call = async {
        let resp = client
            .request(out)
            .await
            .map_err(|_| AuthFailure::Unavailable)?;
        let (parts, b) = resp.into_parts();
        if parts.status.is_success() {
            let mut id = Identity::default();
            for name in &f.copy_headers {
                if let Some(v) = parts.headers.get(name) {
                    if v.len() > MAX_IDENTITY_VALUE {
                        return Err(AuthFailure::Invalid);
                    }
                    id.headers.push((name.clone(), v.clone()));
                }
            }
            return Ok(id);
        }
        let bytes = Limited::new(b, MAX_DENY_BODY)
            .collect()
            .await
            .map_err(|_| AuthFailure::Unavailable)?
            .to_bytes();
        let mut resp = Response::new(body::full(bytes));
        *resp.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if !SKIP.contains(&name.as_str()) && name != header::CONTENT_LENGTH {
                resp.headers_mut().append(name.clone(), value.clone());
            }
        }
        Err(AuthFailure::Respond(Box::new(resp)))
    };
    tokio::time::timeout(f.timeout, call)
        .await
        .map_err(|_| AuthFailure::Unavailable)?
}
