//! Header hygiene at the edge: hop-by-hop and `Connection`-nominated headers go first
//! (X1), before the gateway adds anything of its own; then the route's header ops.

use std::sync::LazyLock;

use http::header::{self, HeaderMap, HeaderName};

use crate::http1::names::Lengths;

/// RFC 9110 §7.6.1 hop-by-hop fields plus the legacy ones proxies also drop.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];
const HOP_BY_HOP_STR: &[&str] = &["keep-alive", "proxy-connection", "http2-settings"];

/// Headers a client may use to impersonate an identity or override the routed path;
/// the upstream must only ever see the gateway's values (X2, P10).
const SPOOFABLE: &[&str] = &[
    "x-original-url",
    "x-rewrite-url",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "x-auth-user",
    "x-auth-request-user",
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-userinfo",
    "x-user-id",
    "x-consumer-id",
    "x-consumer-username",
    "x-consumer-custom-id",
    "x-consumer-groups",
    "x-credential-identifier",
    "x-authenticated-userid",
    "x-authenticated-scope",
    "x-anonymous-consumer",
    "x-gatehouse-consumer",
];

/// Whether `name` is in [`SPOOFABLE`]: all but one start with `x-`, so most names a request
/// carries are told apart by their first bytes instead of 22 comparisons.
fn is_spoofable(name: &str) -> bool {
    (name.starts_with("x-") || name == "true-client-ip") && SPOOFABLE.contains(&name)
}

/// Whether the request asks for a protocol upgrade (`Connection: upgrade` + `Upgrade`).
pub fn is_upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

pub fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// Whether `name` is one of [`HOP_BY_HOP`] / [`HOP_BY_HOP_STR`]. Comparing the few names a
/// request actually has is far cheaper than removing each listed name by lookup (every
/// `HeaderMap::remove(&str)` parses and hashes the name; this ran twice per proxied request).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_LENGTHS.may_hold(n.len()) && (HOP_BY_HOP.contains(name) || HOP_BY_HOP_STR.contains(&n))
}

/// The lengths of the hop-by-hop names: most names a message has are none of them by length.
static HOP_LENGTHS: LazyLock<Lengths> = LazyLock::new(|| {
    Lengths::of(
        HOP_BY_HOP
            .iter()
            .map(HeaderName::as_str)
            .chain(HOP_BY_HOP_STR.iter().copied()),
    )
});

/// [`is_hop_by_hop`] for a name as it arrived (any case, not parsed): the test that keeps an
/// upstream response out of the raw form (`http1::raw`), so both forms drop the same fields.
pub fn is_hop_by_hop_bytes(name: &[u8]) -> bool {
    if !HOP_LENGTHS.may_hold(name.len()) {
        return false;
    }
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
        || HOP_BY_HOP_STR
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Removes `Connection`-nominated headers and hop-by-hop headers. `keep_te_trailers` keeps
/// `te: trailers` (gRPC needs it end to end); `keep_upgrade` keeps `Upgrade` and sets
/// `Connection: upgrade` again for a WebSocket handshake.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_te_trailers: bool, keep_upgrade: bool) {
    // Fast path: nominations live in `Connection`, itself hop-by-hop, so when no hop-by-hop
    // header is present there is nothing to remove, keep or re-add.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Tokens that name hop-by-hop headers anyway (`keep-alive`, `upgrade`...) or none at all
    // (`close`) need no lookup: the usual `Connection: keep-alive` allocates nothing.
    let nominated: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
                && !t.eq_ignore_ascii_case("upgrade")
        })
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    let upgrade = if keep_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    let te_trailers = keep_te_trailers
        && headers
            .get_all(header::TE)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // Nominating an end-to-end framing or the gateway's own headers cannot protect them:
    // they are removed here and re-added by the gateway afterwards.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_hop_by_hop(k) || nominated.contains(k))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
    if te_trailers {
        headers.insert(header::TE, http::HeaderValue::from_static("trailers"));
    }
    if let Some(up) = upgrade {
        headers.insert(header::UPGRADE, up);
        headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
    }
}

/// What a proxied request loses before the gateway adds its own fields, in this order:
/// hop-by-hop and `Connection`-nominated fields (X1, keeping `te: trailers` and, for a
/// WebSocket handshake, `Upgrade`), spoofable identity/override fields and names with `_`
/// ([`strip_spoofable`]), and the client's copies of the identity headers any auth provider
/// sets (`identity`). One look at the names present (usually a handful, none of these)
/// tells which of the three has anything to do; each walked the map on its own before.
pub fn strip_request(
    headers: &mut HeaderMap,
    peer_trusted: bool,
    keep_upgrade: bool,
    identity: &[HeaderName],
) {
    let (mut hop, mut spoofed, mut copied) = (false, false, false);
    for k in headers.keys() {
        hop |= is_hop_by_hop(k);
        spoofed |= is_spoofed(k, peer_trusted);
        copied |= identity.contains(k);
    }
    // A removal may make a later flag stale (a nominated field was also spoofable); the
    // later step then finds nothing to remove.
    if hop {
        strip_hop_by_hop(headers, true, keep_upgrade);
    }
    if spoofed {
        strip_spoofable(headers, peer_trusted);
    }
    if copied {
        remove_all(headers, identity);
    }
}

/// Drops identity/override headers and any header whose name has an underscore (nginx's
/// default; `X_Auth_User` must not reach an upstream that folds `_` into `-`).
pub fn strip_spoofable(headers: &mut HeaderMap, peer_trusted: bool) {
    // One pass over the names present (usually a handful) instead of one hashed lookup per
    // listed name (22 of them), which was the largest single cost of a proxied request.
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| is_spoofed(k, peer_trusted))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Whether [`strip_spoofable`] removes a field of this name.
fn is_spoofed(name: &HeaderName, peer_trusted: bool) -> bool {
    let n = name.as_str();
    is_spoofable(n) || (!peer_trusted && *name == header::FORWARDED) || has_underscore(n.as_bytes())
}

/// Whether `n` has an `_`, a word at a time: a byte loop was ~4 instructions a byte, for
/// every field of every request.
fn has_underscore(n: &[u8]) -> bool {
    use crate::http1::swar::{or_words, zero_bytes, REP};
    or_words(n, b'a', |w| zero_bytes(w ^ (REP * u64::from(b'_')))) != 0
}

/// Removes every field named in `names` (a removal per listed name hashes each one, so
/// [`strip_request`] asks first whether any is present).
fn remove_all(headers: &mut HeaderMap, names: &[HeaderName]) {
    for name in names {
        headers.remove(name);
    }
}

/// Response side: hop-by-hop headers from the upstream never reach the client. For a
/// `101 Switching Protocols` the upgrade headers are the point and are kept.
pub fn strip_response_hop_by_hop(headers: &mut HeaderMap, switching: bool) {
    if switching {
        headers.remove("keep-alive");
        headers.remove("proxy-connection");
        headers.remove(header::TRANSFER_ENCODING);
        return;
    }
    strip_hop_by_hop(headers, false, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_bytes_agree_with_the_lists() {
        // Every listed name in any case, names of the same lengths that are not listed, and
        // names of other lengths: the length prefilter must not change an answer.
        let listed = HOP_BY_HOP
            .iter()
            .map(HeaderName::as_str)
            .chain(HOP_BY_HOP_STR.iter().copied());
        for n in listed {
            assert!(is_hop_by_hop_bytes(n.as_bytes()), "{n}");
            assert!(
                is_hop_by_hop_bytes(n.to_ascii_uppercase().as_bytes()),
                "{n}"
            );
            let other = format!("x{}", &n[1..]);
            let name = HeaderName::from_bytes(other.as_bytes()).expect("a valid name");
            assert_eq!(is_hop_by_hop_bytes(other.as_bytes()), is_hop_by_hop(&name));
        }
        for n in [
            "server",
            "date",
            "content-type",
            "x-upstream",
            "set-cookie",
            "etag",
        ] {
            let name = HeaderName::from_bytes(n.as_bytes()).expect("a valid name");
            assert!(
                !is_hop_by_hop(&name) && !is_hop_by_hop_bytes(n.as_bytes()),
                "{n}"
            );
        }
    }

    #[test]
    fn strip_request_removes_what_each_step_would() {
        // Every subset of a pool of fields, for both trust and upgrade settings: one look at
        // the names must end where the three removals in turn end.
        let pool: [(&str, &str); 10] = [
            ("host", "h"),
            ("connection", "upgrade"),
            ("upgrade", "websocket"),
            ("te", "trailers"),
            ("x-auth-user", "admin"),
            ("x_custom", "1"),
            ("forwarded", "for=1.2.3.4"),
            ("x-user-email", "a@b"),
            ("keep-alive", "timeout=5"),
            ("connection", "x-user-email"),
        ];
        let identity = [HeaderName::from_static("x-user-email")];
        for set in 0u32..1 << pool.len() {
            let mut h = HeaderMap::new();
            for (i, (n, v)) in pool.iter().enumerate() {
                if set & 1 << i != 0 {
                    h.append(*n, HeaderValue::from_static(v));
                }
            }
            for (trusted, upgrade) in [(false, false), (true, false), (false, true)] {
                let mut one = h.clone();
                strip_request(&mut one, trusted, upgrade, &identity);
                let mut steps = h.clone();
                strip_hop_by_hop(&mut steps, true, upgrade);
                strip_spoofable(&mut steps, trusted);
                remove_all(&mut steps, &identity);
                assert_eq!(one, steps, "{set:b} trusted {trusted} upgrade {upgrade}");
            }
        }
    }

    #[test]
    fn underscore_found_at_every_position() {
        for len in 0..40 {
            let clean = vec![b'a'; len];
            assert!(!has_underscore(&clean), "{len}");
            // Neighbours of `_` (0x5f) and bytes whose difference could borrow.
            for other in [b'^', b'`', b'\x7f', b'\xdf', 0, b'-'] {
                assert!(!has_underscore(&vec![other; len]), "{len} {other}");
            }
            for at in 0..len {
                let mut n = clean.clone();
                n[at] = b'_';
                assert!(has_underscore(&n), "{len} at {at}");
            }
        }
    }

    #[test]
    fn every_spoofable_name_passes_the_prefilter() {
        // `is_spoofable` skips names by their first bytes: a name added to SPOOFABLE that
        // neither starts with `x-` nor is the listed exception would never be stripped.
        for n in SPOOFABLE {
            assert!(is_spoofable(n), "{n}");
        }
        assert!(!is_spoofable("x-not-listed"));
        assert!(!is_spoofable("host"));
    }

    #[test]
    fn x1_connection_nominated_headers_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static(
                "close, X-Forwarded-For, X-Real-IP, X-Request-Id, X-Auth-User",
            ),
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-request-id", HeaderValue::from_static("evil"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, false, false);
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("x-request-id").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::TE).is_none());
        assert_eq!(h["x-keep"], "1");
    }

    #[test]
    fn te_trailers_kept_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(h[header::TE], "trailers");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, true, false);
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn x2_identity_and_underscore_headers_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-auth-user", HeaderValue::from_static("admin"));
        h.insert("X-Consumer-ID", HeaderValue::from_static("1"));
        h.insert("x_auth_user", HeaderValue::from_static("admin"));
        h.insert("x-original-url", HeaderValue::from_static("/admin"));
        h.insert("accept", HeaderValue::from_static("*/*"));
        strip_spoofable(&mut h, false);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("accept"));
    }
}
