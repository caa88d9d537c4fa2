//! Per-request context: what every phase and the access log need to know about a request.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Method};

use gatehouse_core::snapshot::canonical_ip;
use gatehouse_core::Snapshot;

use crate::server::conn::ConnInfo;

#[derive(Default)]
pub struct BodyStats {
    pub bytes_in: AtomicU64,
    pub too_large: AtomicBool,
}

impl BodyStats {
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn too_large(&self) -> bool {
        self.too_large.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub struct Ctx {
    pub start: Instant,
    pub request_id: HeaderValue,
    /// `request_id` was made here (32 random hex digits: also a valid trace id), not taken
    /// from a trusted proxy.
    pub own_request_id: bool,
    pub client_ip: IpAddr,
    pub peer_trusted: bool,
    pub grpc: bool,
    pub method: Method,
    /// Path and query for the access log, with secret-looking query values redacted (empty
    /// when the access log is off: nothing else reads it).
    pub log_path: String,
    pub route: Option<usize>,
    pub upstream: Option<usize>,
    pub upstream_ms: Option<f64>,
    /// Request body bytes read, and whether it crossed the route's limit (shared with the
    /// body wrapper that counts them); made only for a request that has a body.
    pub body: Option<Arc<BodyStats>>,
    /// Close the client connection after this response (framing errors, unread bodies).
    pub close: bool,
    /// Idle timeout between body frames of a proxied response (streams keep flowing while
    /// bytes arrive; F3).
    pub body_idle: Option<std::time::Duration>,
    pub error: Option<&'static str>,
    /// `RateLimit` response header from the rate-limit phase.
    pub ratelimit: Option<HeaderValue>,
    /// The route's concurrency slot, held until the response is complete.
    pub in_flight: Option<crate::policy::concurrency::InFlight>,
    /// The consumer's concurrency slot on the route, held (and dropped) like `in_flight`.
    pub consumer_in_flight: Option<crate::policy::concurrency::ConsumerInFlight>,
    /// Upstream tries made for this request (0: none).
    pub attempts: u32,
    /// The upstream circuit-breaker slot, held until the response body ends.
    pub upstream_permit: Option<crate::upstream::breaker::Permit>,
    /// The target whose response head was a success: passive outlier detection hears about
    /// this call when the response body ends (a reset mid-body is a failure, F4).
    pub outlier_target: Option<usize>,
    /// The authenticated consumer's name (or the token subject), for logs and later phases.
    pub consumer: Option<String>,
    /// The request's `Origin`, on a route with CORS.
    pub cors_origin: Option<HeaderValue>,
    /// The matched route has CORS and this is not a preflight: add CORS response headers.
    pub cors_actual: bool,
}

impl Ctx {
    pub fn new(
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        conn: &ConnInfo,
        snap: &Snapshot,
        access_log: bool,
    ) -> Ctx {
        let peer = canonical_ip(conn.peer.ip());
        let peer_trusted = snap.is_trusted(peer);
        // A header nominated in `Connection` is hop-by-hop: it is stripped before forwarding
        // (X1), so it must not be believed either, or the upstream would see the gateway's
        // XFF next to an `x-real-ip` / request id taken from the stripped client copy.
        let nominated = |name: &str| crate::policy::headers::connection_has(headers, name);
        let client_ip = if peer_trusted && !nominated("x-forwarded-for") {
            client_ip_from_xff(headers, snap).unwrap_or(peer)
        } else {
            peer
        };
        // Only a trusted proxy's id is taken (looked up only then).
        let trusted_id = match peer_trusted {
            true => headers.get(&crate::policy::forwarded::X_REQUEST_ID),
            false => None,
        };
        let (request_id, own_request_id) = match trusted_id {
            Some(v) if !nominated("x-request-id") && valid_request_id(v.as_bytes()) => {
                (v.clone(), false)
            }
            _ => (new_request_id(), true),
        };
        let grpc = headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Ctx {
            start: Instant::now(),
            request_id,
            own_request_id,
            client_ip,
            peer_trusted,
            grpc,
            method: method.clone(),
            log_path: if access_log {
                redact_query(uri)
            } else {
                String::new()
            },
            route: None,
            upstream: None,
            upstream_ms: None,
            body: None,
            close: false,
            body_idle: None,
            error: None,
            ratelimit: None,
            in_flight: None,
            consumer_in_flight: None,
            attempts: 0,
            upstream_permit: None,
            outlier_target: None,
            consumer: None,
            cors_origin: None,
            cors_actual: false,
        }
    }

    /// The request body crossed the route's `max_body`.
    pub fn body_too_large(&self) -> bool {
        self.body.as_ref().is_some_and(|b| b.too_large())
    }

    /// Request body bytes read so far.
    pub fn body_bytes_in(&self) -> u64 {
        self.body.as_ref().map_or(0, |b| b.bytes_in())
    }

    pub fn request_id_str(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// The right-most address in `X-Forwarded-For` that is not a trusted proxy (X3). Entries
/// that do not parse end the walk: everything left of garbage is attacker-controlled.
fn client_ip_from_xff(headers: &HeaderMap, snap: &Snapshot) -> Option<IpAddr> {
    let mut last_trusted = None;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let s = value.to_str().ok()?;
        for part in s.rsplit(',') {
            let ip: IpAddr = part.trim().parse().ok()?;
            let ip = canonical_ip(ip);
            if !snap.is_trusted(ip) {
                return Some(ip);
            }
            last_trusted = Some(ip);
        }
    }
    last_trusted
}

fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

pub fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; 32];
    hex_into(fastrand::u128(..), &mut buf);
    // Only hex digits: always a valid header value. Owned by its `Bytes`, so the clones for
    // the upstream request and the response share it (a copied value allocates again on its
    // first clone).
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or(HeaderValue::from_static("0"))
}

/// The low `out.len()` hex digits of `v`, lowercase, most significant first.
pub fn hex_into(v: u128, out: &mut [u8]) {
    // Eight digits per step, all in one register (a per-digit loop cost ~250 instructions
    // per 32-digit id).
    let n = out.len().min(32);
    for (word, chunk) in out[..n].rchunks_mut(8).enumerate() {
        let digits = hex8((v >> (32 * word)) as u32);
        if let Ok(full) = <&mut [u8; 8]>::try_from(&mut *chunk) {
            *full = digits;
        } else {
            chunk.copy_from_slice(&digits[8 - chunk.len()..]);
        }
    }
}

/// The eight hex digits of `x`: each nibble spread to its own byte, then mapped to ASCII
/// (`'0' + n`, plus 39 more for `a`-`f`).
fn hex8(x: u32) -> [u8; 8] {
    let mut v = u64::from(x);
    v = (v | (v << 16)) & 0x0000_ffff_0000_ffff;
    v = (v | (v << 8)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v << 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    let letters = ((v + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    (v + 0x3030_3030_3030_3030 + letters * 0x27).to_be_bytes()
}

/// Query parameter names whose values never reach the access log.
const SECRET_PARAMS: &[&str] = &[
    "key",
    "apikey",
    "api_key",
    "api-key",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "signature",
    "sig",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "session_id",
    "code",
    "jwt",
];

fn is_secret_param(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&lower.as_str())
        || [
            "_key", "-key", "_token", "-token", "_secret", "-secret", "password",
        ]
        .iter()
        .any(|suffix| lower.ends_with(suffix))
}

/// Path plus query, with the values of query parameters whose names look secret replaced,
/// so access logs never hold API keys or tokens given in the URL.
pub fn redact_query(uri: &http::Uri) -> String {
    let path = uri.path();
    let Some(q) = uri.query() else {
        return path.to_string();
    };
    let mut out = String::with_capacity(path.len() + q.len() + 1);
    out.push_str(path);
    out.push('?');
    for (i, pair) in q.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !value.is_empty() && is_secret_param(name) {
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_secrets_are_redacted() {
        let uri: http::Uri =
            "/a?api_key=s3cret&x=1&access_token=t&page=2&author=me&monkey=1&X-Api-Key=k"
                .parse()
                .expect("uri");
        assert_eq!(
            redact_query(&uri),
            "/a?api_key=REDACTED&x=1&access_token=REDACTED&page=2&author=me&monkey=1&X-Api-Key=REDACTED"
        );
    }

    #[test]
    fn hex_digits() {
        let mut out = [0u8; 5];
        hex_into(0xabc12, &mut out);
        assert_eq!(&out, b"abc12");
        let mut out = [0u8; 32];
        hex_into(u128::MAX - 1, &mut out);
        assert_eq!(&out, b"fffffffffffffffffffffffffffffffe");
        let mut out = [0u8; 16];
        hex_into(0x0123_4567_89ab_cdef, &mut out);
        assert_eq!(&out, b"0123456789abcdef");
        for _ in 0..1000 {
            let v = fastrand::u128(..);
            let mut out = [0u8; 32];
            hex_into(v, &mut out);
            assert_eq!(
                std::str::from_utf8(&out).expect("ascii"),
                format!("{v:032x}")
            );
            let mut low = [0u8; 16];
            hex_into(v, &mut low);
            assert_eq!(&low, &out[16..]);
        }
    }

    #[test]
    fn request_ids() {
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(valid_request_id(id.as_bytes()));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a\r\nb"));
    }
}
