//! Request keys for consistent hashing and canary stickiness. The balancers themselves live
//! with the compiled upstream (`gatehouse_core::upstream`), where the ring is built.

use std::net::IpAddr;

use http::{header, HeaderMap};

use gatehouse_core::upstream::{hash_bytes, HashOn};

/// The hash of the request's key, or `None` when the request has no such key (a missing
/// header or cookie). `consumer` is the authenticated consumer; an anonymous request
/// hashes its client IP.
pub fn request_hash(
    on: &HashOn,
    headers: &HeaderMap,
    client_ip: IpAddr,
    consumer: Option<&str>,
    path: &str,
) -> Option<u64> {
    match on {
        HashOn::Ip => Some(hash_ip(client_ip)),
        HashOn::Consumer => Some(match consumer {
            Some(c) => hash_bytes(c.as_bytes()),
            None => hash_ip(client_ip),
        }),
        HashOn::Path => Some(hash_bytes(path.as_bytes())),
        HashOn::Header(name) => headers.get(name).map(|v| hash_bytes(v.as_bytes())),
        HashOn::Cookie(name) => cookie(headers, name).map(hash_bytes),
    }
}

pub fn hash_ip(ip: IpAddr) -> u64 {
    match gatehouse_core::snapshot::canonical_ip(ip) {
        IpAddr::V4(v4) => hash_bytes(&v4.octets()),
        IpAddr::V6(v6) => hash_bytes(&v6.octets()),
    }
}

/// The value of cookie `name` from the `Cookie` header(s), without allocating.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    for value in headers.get_all(header::COOKIE) {
        for pair in value.as_bytes().split(|b| *b == b';') {
            let pair = pair.trim_ascii();
            if let Some(eq) = pair.iter().position(|b| *b == b'=') {
                if &pair[..eq] == name.as_bytes() {
                    return Some(&pair[eq + 1..]);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, "a=1; sid=abc".parse().expect("v"));
        h.append(header::COOKIE, "x=2".parse().expect("v"));
        assert_eq!(cookie(&h, "sid"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "x"), Some(&b"2"[..]));
        assert_eq!(cookie(&h, "si"), None);
        let ip: IpAddr = "10.1.2.3".parse().expect("ip");
        assert!(request_hash(
            &HashOn::Header("x-user".parse().expect("h")),
            &h,
            ip,
            None,
            "/"
        )
        .is_none());
        assert_eq!(
            request_hash(&HashOn::Consumer, &h, ip, None, "/"),
            Some(hash_ip(ip))
        );
        assert_eq!(
            request_hash(&HashOn::Consumer, &h, ip, Some("acme"), "/"),
            Some(hash_bytes(b"acme"))
        );
    }
}
