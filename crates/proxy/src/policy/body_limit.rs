//! Request body size limit (L3): a declared `Content-Length` over the route's `max_body` is
//! refused before anything reaches the upstream; a chunked body is counted as it streams
//! and the upstream request is aborted when it crosses the limit.

use http::{header, HeaderMap};

use gatehouse_core::GatewayError;

pub fn check_declared(headers: &HeaderMap, max_body: u64) -> Result<(), GatewayError> {
    if let Some(cl) = headers.get(header::CONTENT_LENGTH) {
        let n: u64 = cl
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(GatewayError::BadRequest("invalid content-length"))?;
        if n > max_body {
            return Err(GatewayError::PayloadTooLarge);
        }
    }
    Ok(())
}
