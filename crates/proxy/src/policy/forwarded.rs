//! The headers the gateway adds for the upstream: `x-forwarded-*`, `x-request-id`,
//! `x-real-ip` and W3C `traceparent`. Called after hop-by-hop stripping, so client copies
//! nominated in `Connection` can never survive (X1), and client values are believed only
//! from `trusted_proxies` (X3).

use http::header::{HeaderMap, HeaderValue};

use crate::context::{hex_into, Ctx};

pub fn add_forwarded(
    headers: &mut HeaderMap,
    ctx: &Ctx,
    host: &str,
    tls: bool,
    peer: std::net::IpAddr,
) {
    let peer_s = peer.to_string();
    // X-Forwarded-For: a trusted proxy's chain is extended; an untrusted client's claim is
    // replaced by what we saw on the socket.
    let xff = if ctx.peer_trusted {
        let prior: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            peer_s.clone()
        } else {
            format!("{}, {}", prior.join(", "), peer_s)
        }
    } else {
        peer_s.clone()
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if !ctx.peer_trusted || !headers.contains_key("x-forwarded-proto") {
        headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
    }
    if !ctx.peer_trusted || !headers.contains_key("x-forwarded-host") {
        match HeaderValue::from_str(host) {
            Ok(v) => {
                headers.insert("x-forwarded-host", v);
            }
            Err(_) => {
                headers.remove("x-forwarded-host");
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&ctx.client_ip.to_string()) {
        headers.insert("x-real-ip", v);
    }
    headers.insert("x-request-id", ctx.request_id.clone());
    let tp = traceparent(headers.get("traceparent"));
    headers.insert("traceparent", tp);
}

/// Continues the caller's trace when it sent a valid `traceparent` (version 00), with a new
/// span id for the gateway hop; otherwise starts a new sampled trace.
pub fn traceparent(incoming: Option<&HeaderValue>) -> HeaderValue {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let parsed = incoming.and_then(|v| parse_traceparent(v.as_bytes()));
    match parsed {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace);
            out[53..55].copy_from_slice(flags);
        }
        None => {
            let mut id = fastrand::u128(..);
            if id == 0 {
                id = 1;
            }
            hex_into(id, &mut out[3..35]);
        }
    }
    let mut span = fastrand::u64(..);
    if span == 0 {
        span = 1;
    }
    hex_into(span as u128, &mut out[36..52]);
    HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ))
}

fn parse_traceparent(v: &[u8]) -> Option<(&[u8], &[u8])> {
    if v.len() != 55 || &v[0..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let lower_hex = |s: &[u8]| {
        s.iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    let trace = &v[3..35];
    let parent = &v[36..52];
    let flags = &v[53..55];
    if !lower_hex(trace) || !lower_hex(parent) || !lower_hex(flags) {
        return None;
    }
    if trace.iter().all(|b| *b == b'0') || parent.iter().all(|b| *b == b'0') {
        return None;
    }
    Some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_valid_trace() {
        let inc =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let out = traceparent(Some(&inc));
        let s = out.to_str().expect("ascii");
        assert!(s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(&s[36..52], "00f067aa0ba902b7");
        assert!(s.ends_with("-01"));
    }

    #[test]
    fn traceparent_replaces_garbage() {
        let inc = HeaderValue::from_static("00-zz-yy-01");
        let out = traceparent(Some(&inc));
        assert_eq!(out.len(), 55);
        assert!(parse_traceparent(out.as_bytes()).is_some());
    }
}
