//! The routing phase: the compiled router, with SPEC.md precedence, on the normalized host
//! and path.

use http::{HeaderMap, Method};

use gatehouse_core::router::{Params, RouteMatch, Router};
use gatehouse_core::GatewayError;

pub fn find<'p>(
    router: &'p Router,
    host: &str,
    path: &'p str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(usize, Params<'p>), GatewayError> {
    let host = if host.is_empty() { None } else { Some(host) };
    match router.find(host, path, method, headers) {
        RouteMatch::Found { route, params } => Ok((route, params)),
        RouteMatch::MethodNotAllowed { allow } => {
            let list = allow
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            Err(GatewayError::MethodNotAllowed(
                http::HeaderValue::from_str(&list).unwrap_or(http::HeaderValue::from_static("")),
            ))
        }
        RouteMatch::NotFound => Err(GatewayError::NoRoute),
    }
}
