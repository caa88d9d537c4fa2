//! The one error type the gateway answers with. Every variant knows its HTTP status, its
//! SPEC.md `error` code, its gRPC status and who caused it; none carries upstream or internal
//! text, so nothing can leak into a response body.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

/// Who caused an error: used for logs and metrics, never shown to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Client,
    Upstream,
    Gateway,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// Malformed request; the reason is a fixed, safe string.
    BadRequest(&'static str),
    NoRoute,
    /// Path matched but not the method; carries the `Allow` header value.
    MethodNotAllowed(HeaderValue),
    PayloadTooLarge,
    UriTooLong,
    HeaderFieldsTooLarge,
    RequestTimeout,
    /// No credential was presented.
    Unauthorized,
    /// A credential was presented and refused (`error="invalid_token"`, RFC 6750 §3.1).
    /// Same status, code and message as `Unauthorized`: unknown, revoked, expired and
    /// forged credentials are indistinguishable (K2).
    InvalidToken,
    Forbidden,
    /// Over a rate or concurrency limit; `retry_after` is whole seconds (rounded up, at
    /// least 1) for the `Retry-After` header.
    RateLimited {
        retry_after: u64,
    },
    /// A dependency of the gateway itself (the rate-limit store with `on_error: deny`) is
    /// unavailable.
    Unavailable,
    UpstreamUnavailable,
    BadGateway,
    UpstreamTimeout,
    Internal,
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeaderFieldsTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Unauthorized | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::UpstreamUnavailable | Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The SPEC.md `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::NoRoute => "no_route",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::HeaderFieldsTooLarge => "header_fields_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Unauthorized | Self::InvalidToken => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::BadGateway => "bad_gateway",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Internal => "internal_error",
        }
    }

    pub fn message(&self) -> &'static str {
        match self {
            Self::BadRequest(reason) => reason,
            Self::NoRoute => "no route matches this request",
            Self::MethodNotAllowed(_) => "method not allowed on this path",
            Self::PayloadTooLarge => "request body is too large",
            Self::UriTooLong => "request line is too long",
            Self::HeaderFieldsTooLarge => "request headers are too large",
            Self::RequestTimeout => "request was not received in time",
            Self::Unauthorized | Self::InvalidToken => "missing or invalid credentials",
            Self::Forbidden => "not allowed",
            Self::RateLimited { .. } => "too many requests",
            Self::Unavailable => "the service is temporarily unavailable",
            Self::UpstreamUnavailable => "no upstream is available",
            Self::BadGateway => "the upstream failed to answer correctly",
            Self::UpstreamTimeout => "the upstream did not answer in time",
            Self::Internal => "internal error",
        }
    }

    /// gRPC status code for the Trailers-Only form (grpc/doc/statuscodes.md, http-grpc mapping).
    pub fn grpc_status(&self) -> u32 {
        match self {
            Self::BadRequest(_) => 13, // INTERNAL: the request could not be framed
            Self::NoRoute | Self::MethodNotAllowed(_) => 12, // UNIMPLEMENTED
            Self::PayloadTooLarge | Self::RateLimited { .. } => 8, // RESOURCE_EXHAUSTED
            Self::UriTooLong | Self::HeaderFieldsTooLarge => 8,
            Self::RequestTimeout | Self::UpstreamTimeout => 4, // DEADLINE_EXCEEDED
            Self::Unauthorized | Self::InvalidToken => 16,     // UNAUTHENTICATED
            Self::Forbidden => 7,                              // PERMISSION_DENIED
            Self::UpstreamUnavailable | Self::BadGateway | Self::Unavailable => 14, // UNAVAILABLE
            Self::Internal => 13,
        }
    }

    pub fn cause(&self) -> Cause {
        match self {
            Self::BadRequest(_)
            | Self::NoRoute
            | Self::MethodNotAllowed(_)
            | Self::PayloadTooLarge
            | Self::UriTooLong
            | Self::HeaderFieldsTooLarge
            | Self::RequestTimeout
            | Self::Unauthorized
            | Self::InvalidToken
            | Self::Forbidden
            | Self::RateLimited { .. } => Cause::Client,
            Self::UpstreamUnavailable | Self::BadGateway | Self::UpstreamTimeout => Cause::Upstream,
            Self::Internal | Self::Unavailable => Cause::Gateway,
        }
    }

    /// Builds the response the gateway sends for this error: SPEC.md JSON, or a gRPC
    /// Trailers-Only response (HTTP 200, `grpc-status` in the header block) for gRPC requests.
    pub fn to_response(&self, request_id: &str, grpc: bool) -> Response<Bytes> {
        let mut resp = if grpc {
            let mut r = Response::new(Bytes::new());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(self.grpc_status()));
            h.insert(
                "grpc-message",
                HeaderValue::from_static(self.grpc_message()),
            );
            r
        } else {
            let body = serde_json::json!({
                "error": self.code(),
                "message": self.message(),
                "request_id": request_id,
            });
            let mut r = Response::new(Bytes::from(body.to_string()));
            *r.status_mut() = self.status();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            if let Self::MethodNotAllowed(allow) = self {
                r.headers_mut().insert(header::ALLOW, allow.clone());
            }
            if let Self::RateLimited { retry_after } = self {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            match self {
                Self::Unauthorized => {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"gatehouse\""),
                    );
                }
                Self::InvalidToken => {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static(
                            "Bearer realm=\"gatehouse\", error=\"invalid_token\"",
                        ),
                    );
                }
                _ => {}
            }
            r
        };
        if let Ok(v) = HeaderValue::from_str(request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        resp
    }

    /// `grpc-message` is percent-encoded on the wire; our messages are plain ASCII with
    /// spaces, so they are written pre-encoded.
    fn grpc_message(&self) -> &'static str {
        match self.grpc_status() {
            4 => "upstream%20timeout",
            7 => "forbidden",
            8 => "resource%20exhausted",
            12 => "no%20route",
            14 => "upstream%20unavailable",
            16 => "unauthenticated",
            _ => "internal",
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for GatewayError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_shape() {
        let r = GatewayError::NoRoute.to_response("abc", false);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(v["error"], "no_route");
        assert_eq!(v["request_id"], "abc");
        assert_eq!(r.headers()["x-request-id"], "abc");
    }

    #[test]
    fn grpc_trailers_only() {
        let r = GatewayError::UpstreamTimeout.to_response("abc", true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "4");
        assert!(r.body().is_empty());
        assert_eq!(
            GatewayError::UpstreamUnavailable
                .to_response("x", true)
                .headers()["grpc-status"],
            "14"
        );
        assert_eq!(GatewayError::Unauthorized.grpc_status(), 16);
        assert_eq!(
            GatewayError::RateLimited { retry_after: 1 }.grpc_status(),
            8
        );
        let r = GatewayError::RateLimited { retry_after: 7 }.to_response("x", true);
        assert_eq!(r.headers()["grpc-status"], "8");
        assert_eq!(GatewayError::Unavailable.grpc_status(), 14);
    }

    #[test]
    fn rate_limited_carries_retry_after() {
        let r = GatewayError::RateLimited { retry_after: 3 }.to_response("abc", false);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        let v: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(v["error"], "rate_limited");
    }
}
