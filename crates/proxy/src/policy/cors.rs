//! CORS. A preflight (`OPTIONS` + `Origin` + `Access-Control-Request-Method`) is routed with
//! the method it asks about and answered here, before IP rules and authentication (browsers
//! never send credentials on a preflight). Actual responses get `Access-Control-Allow-Origin`
//! for allowed origins, and always `Vary: Origin` so caches keep origins apart.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

use gatehouse_core::auth::Cors;
use gatehouse_core::GatewayError;

use crate::body::{self, Body};

/// The method a preflight asks about, if this request is a CORS preflight.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let v = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(v.as_bytes()).ok()
}

const PREFLIGHT_VARY: &str =
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers";

/// Answers a preflight: 204 with the allow headers, or 403 when the origin, method or a
/// requested header is not allowed.
pub fn preflight(
    c: &Cors,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Response<Body>, GatewayError> {
    let origin = headers.get(header::ORIGIN).ok_or(GatewayError::Forbidden)?;
    let origin_str = origin.to_str().map_err(|_| GatewayError::Forbidden)?;
    if !c.origin_allowed(origin_str) || !c.methods.contains(method) {
        return Err(GatewayError::Forbidden);
    }
    let requested = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>();
    let allow_headers = match &c.headers {
        Some(allowed) => {
            if requested.iter().any(|h| !allowed.contains(h)) {
                return Err(GatewayError::Forbidden);
            }
            c.headers_header.clone()
        }
        None if requested.is_empty() => None,
        None => HeaderValue::from_str(&requested.join(", ")).ok(),
    };
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(c, origin));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        c.methods_header.clone(),
    );
    if let Some(v) = allow_headers {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if c.credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(m) = &c.max_age {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, m.clone());
    }
    h.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    Ok(resp)
}

fn allow_origin(c: &Cors, origin: &HeaderValue) -> HeaderValue {
    if c.any_origin && !c.credentials {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    }
}

/// Adds CORS headers to an actual (non-preflight) response, including gateway errors, so a
/// browser script can read a 401.
pub fn apply(c: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    let Some(origin) = origin else { return };
    let Ok(o) = origin.to_str() else { return };
    if !c.origin_allowed(o) {
        return;
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin(c, origin));
    if c.credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    if let Some(e) = &c.expose_headers {
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
    }
}
