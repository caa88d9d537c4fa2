//! Request body size limit (L3): a declared `Content-Length` over the route's `max_body` is
//! refused before anything reaches the upstream; a chunked body is counted as it streams
//! and the upstream request is aborted when it crosses the limit.

use http::{header, HeaderMap};

use gatehouse_core::GatewayError;

pub fn check_declared(headers: &HeaderMap, max_body: u64) -> Result<(), GatewayError> {
    if let Some(cl) = headers.get(header::CONTENT_LENGTH) {
        let n = crate::http1::head::parse_content_length(cl.as_bytes())
            .ok_or(GatewayError::BadRequest("invalid content-length"))?;
        if n > max_body {
            return Err(GatewayError::PayloadTooLarge);
        }
    }
    Ok(())
}
