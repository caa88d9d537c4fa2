//! The first phase: strict checks of the request head and normalization of host and path,
//! so that every later decision (routing, auth) sees the same canonical request the
//! upstream will receive.

use std::borrow::Cow;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri, Version};

use gatehouse_core::normalize::normalize_path;
use gatehouse_core::snapshot::Limits;
use gatehouse_core::GatewayError;

/// What the rest of the pipeline routes and forwards on.
pub struct Target<'a> {
    /// Host for routing: lowercase, without port. Empty when the request has none (HTTP/1.0).
    pub host: Cow<'a, str>,
    /// The authority as the client gave it (for `Host` / `x-forwarded-host` upstream).
    pub authority: Cow<'a, str>,
    /// The `Host` field `authority` is the text of (none when it came from the URI): its
    /// value is passed on as it is, without another lookup.
    pub host_field: Option<&'a HeaderValue>,
    /// Normalized path sent upstream.
    pub forward: Cow<'a, str>,
    /// Path used for route matching (`;params` stripped).
    pub route: Cow<'a, str>,
    pub query: Option<&'a str>,
}

pub fn check_head(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    limits: &Limits,
) -> Result<(), GatewayError> {
    let target_len = uri.path_and_query().map(|p| p.as_str().len()).unwrap_or(1)
        + uri.authority().map_or(0, |a| a.as_str().len() + 8);
    // "METHOD SP target SP HTTP/1.1"
    if method.as_str().len() + target_len + 10 > limits.max_request_line {
        return Err(GatewayError::UriTooLong);
    }
    // One field line may be no longer than the request line limit (nginx's
    // large_client_header_buffers: the same buffer size bounds both; L2 "one 16 KiB header").
    // HTTP/1 heads were measured this way by the parser already (`http1::head`).
    let mut header_bytes = 0usize;
    let h1 = version == Version::HTTP_11 || version == Version::HTTP_10;
    for (k, v) in headers.iter().filter(|_| !h1) {
        let line = k.as_str().len() + v.len() + 4;
        if line > limits.max_request_line {
            return Err(GatewayError::HeaderFieldsTooLarge);
        }
        header_bytes += line;
    }
    if header_bytes > limits.max_header_bytes || headers.len() > limits.max_headers {
        return Err(GatewayError::HeaderFieldsTooLarge);
    }
    // HTTP/1 framing (Content-Length / Transfer-Encoding: S1–S4, S10) is decided and
    // refused where the bytes are parsed (`http1::head::parse_request`); HTTP/2 has no such
    // fields (h2 refuses `transfer-encoding` and checks `content-length` against the data).
    if *method == Method::CONNECT {
        return Err(GatewayError::BadRequest("CONNECT is not supported"));
    }
    Ok(())
}

pub fn target<'a>(
    uri: &'a Uri,
    version: Version,
    headers: &'a HeaderMap,
) -> Result<Target<'a>, GatewayError> {
    let mut host_field = None;
    let authority: &str = match uri.authority() {
        // Absolute-form (HTTP/1.1) or :authority (HTTP/2): the target authority wins over
        // any Host header (RFC 9112 §3.2.2, H10).
        Some(a) => a.as_str(),
        None => {
            let mut hosts = headers.get_all(header::HOST).iter();
            match (hosts.next(), hosts.next()) {
                (Some(h), None) => {
                    host_field = Some(h);
                    h.to_str()
                        .map_err(|_| GatewayError::BadRequest("invalid host header"))?
                }
                (Some(_), Some(_)) => return Err(GatewayError::BadRequest("repeated host header")),
                (None, _) if version == Version::HTTP_10 => "",
                (None, _) => return Err(GatewayError::BadRequest("missing host header")),
            }
        }
    };
    let host = if authority.is_empty() {
        Cow::Borrowed("")
    } else {
        validate_authority(authority)?
    };
    let path = uri.path();
    if !path.starts_with('/') {
        return Err(GatewayError::BadRequest("request target must be a path"));
    }
    let n = normalize_path(path).map_err(|_| GatewayError::BadRequest("invalid request path"))?;
    Ok(Target {
        host,
        authority: Cow::Borrowed(authority),
        host_field,
        forward: n.forward,
        route: n.route,
        query: uri.query(),
    })
}

/// Validates `host[:port]` (S14: no userinfo, no path, port in range) and returns the
/// lowercase host without the port.
fn validate_authority(a: &str) -> Result<Cow<'_, str>, GatewayError> {
    let bad = || GatewayError::BadRequest("invalid host");
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let end = rest.find(']').ok_or_else(bad)?;
        let host = &a[..end + 2];
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        host[1..host.len() - 1]
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad())?;
        (host, port)
    } else {
        // By byte (a `str` char search from the end cost more than the rest of the check).
        match a.bytes().rposition(|b| b == b':') {
            Some(i) => (&a[..i], Some(&a[i + 1..])),
            None => (a, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n > 65535)
        {
            return Err(bad());
        }
    }
    if host.is_empty() || host.len() > 253 {
        return Err(bad());
    }
    // One pass: every byte allowed (letters, digits, `-`, `.`, `_`; an IPv6 literal was
    // parsed above), and whether any is uppercase.
    let mut upper = false;
    if !host.starts_with('[') {
        for b in host.bytes() {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {}
                b'A'..=b'Z' => upper = true,
                _ => return Err(bad()),
            }
        }
    } else {
        upper = host.bytes().any(|b| b.is_ascii_uppercase());
    }
    if upper {
        Ok(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s14_host_validation() {
        assert_eq!(
            validate_authority("Api.Example.com:8080").expect("ok"),
            "api.example.com"
        );
        assert_eq!(validate_authority("[::1]:80").expect("ok"), "[::1]");
        for bad in [
            "a b", "a/b", "a@b", "a:99999", "a:", ":80", "a:8x", "[zz]:1",
        ] {
            assert!(validate_authority(bad).is_err(), "{bad}");
        }
    }
}
