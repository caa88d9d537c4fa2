//! The headers the gateway adds for the upstream: `x-forwarded-*`, `x-request-id`,
//! `x-real-ip` and W3C `traceparent`. Called after hop-by-hop stripping, so client copies
//! nominated in `Connection` can never survive (X1), and client values are believed only
//! from `trusted_proxies` (X3).

use std::net::IpAddr;
use std::sync::LazyLock;

use bytes::{BufMut, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};

use gatehouse_telemetry::IpText;

use crate::context::{hex_into, Ctx};
use crate::http1::names::Lengths;

// Names as statics: inserting or looking up by `&str` parses and hashes the name on every
// request; a static `HeaderName` is cloned for free (no allocation).
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The headers the gateway sets for the upstream, kept beside the request's header map (see
/// `http1::names::present`): the HTTP/1 encoder writes them after the map's fields.
/// Inserting the six custom names cost ~1.4k instructions per proxied request. Where a map
/// is needed (HTTP/2 upstreams, mirrors, routes with request header operations) they are
/// merged into it with [`Added::merge_into`].
#[derive(Clone, Default)]
pub struct Added {
    values: [Option<HeaderValue>; 5],
    /// `traceparent`, as its bytes: hex digits and dashes made here, a valid field value by
    /// construction, so it is neither checked nor copied into an allocation per request.
    traceparent: Option<Traceparent>,
}

/// A W3C `traceparent` value: `00-<trace id>-<span id>-<flags>`, lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Traceparent([u8; 55]);

impl Traceparent {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_value(self) -> HeaderValue {
        HeaderValue::from_bytes(&self.0).unwrap_or(HeaderValue::from_static(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
    }
}

/// The order of [`Added::values`], then `traceparent`.
static ADDED_NAMES: [&HeaderName; 6] = [
    &X_FORWARDED_FOR,
    &X_FORWARDED_PROTO,
    &X_FORWARDED_HOST,
    &X_REAL_IP,
    &X_REQUEST_ID,
    &TRACEPARENT,
];

/// The same names with the separator, as the encoder writes them (one copy, not two).
static ADDED_PREFIXES: [&[u8]; 5] = [
    b"x-forwarded-for: ",
    b"x-forwarded-proto: ",
    b"x-forwarded-host: ",
    b"x-real-ip: ",
    b"x-request-id: ",
];

impl Added {
    /// The fields other than `traceparent`, in order, as (name, value).
    fn values(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        crate::http1::names::present(&ADDED_NAMES[..5], &self.values)
    }

    /// The names of the fields set.
    fn names(&self) -> impl Iterator<Item = &HeaderName> {
        let tp = self.traceparent.is_some().then_some(&TRACEPARENT);
        self.values().map(|(n, _)| n).chain(tp)
    }

    /// Writes the fields as HTTP/1 field lines.
    pub fn put(&self, out: &mut BytesMut) {
        for (prefix, value) in ADDED_PREFIXES.iter().zip(&self.values) {
            if let Some(v) = value {
                out.put_slice(prefix);
                out.put_slice(v.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        if let Some(tp) = &self.traceparent {
            out.put_slice(b"traceparent: ");
            out.put_slice(&tp.0);
            out.put_slice(b"\r\n");
        }
    }

    /// Inserts the fields into `headers` (replacing any of the same name).
    pub fn merge_into(&self, headers: &mut HeaderMap) {
        crate::http1::names::insert_all(self.values(), headers);
        if let Some(tp) = self.traceparent {
            headers.insert(TRACEPARENT.clone(), tp.to_value());
        }
    }
}

/// Decides the `x-forwarded-*`, `x-real-ip`, `x-request-id` and `traceparent` values for the
/// upstream (into `added`, in place) and removes the client's copies of the ones set from
/// `headers`. `host` is the client's authority, already a valid header value (it became
/// `Host`).
pub fn add_forwarded(
    added: &mut Added,
    headers: &mut HeaderMap,
    ctx: &Ctx,
    host: &HeaderValue,
    tls: bool,
    peer: IpAddr,
) {
    // One pass over the names present: usually none of these is, and then nothing is
    // looked up or removed.
    static LENGTHS: LazyLock<Lengths> =
        LazyLock::new(|| Lengths::of(ADDED_NAMES.iter().map(|n| n.as_str())));
    let client_sent = headers
        .keys()
        .any(|k| LENGTHS.may_hold(k.as_str().len()) && ADDED_NAMES.contains(&k));
    // One value for the peer, shared (a reference count, not a copy) by x-forwarded-for
    // and x-real-ip when they are the same address.
    let peer_v = peer_value(peer);
    // X-Forwarded-For: a trusted proxy's chain is extended; an untrusted client's claim is
    // replaced by what we saw on the socket.
    let xff = if ctx.peer_trusted && client_sent {
        let prior: Vec<&str> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if prior.is_empty() {
            peer_v.clone()
        } else {
            let peer_s = IpText::new(peer);
            HeaderValue::from_str(&format!("{}, {}", prior.join(", "), peer_s.as_str())).ok()
        }
    } else {
        peer_v.clone()
    };
    let keep = |name: &HeaderName| ctx.peer_trusted && client_sent && headers.contains_key(name);
    let proto = (!keep(&X_FORWARDED_PROTO))
        .then(|| HeaderValue::from_static(if tls { "https" } else { "http" }));
    let fwd_host = (!keep(&X_FORWARDED_HOST)).then(|| host.clone());
    let real_ip = if ctx.client_ip == peer {
        peer_v
    } else {
        header_value(&IpText::new(ctx.client_ip))
    };
    let incoming = if client_sent {
        headers.get(&TRACEPARENT)
    } else {
        None
    };
    let own_id = ctx.own_request_id.then(|| ctx.request_id.as_bytes());
    added.traceparent = Some(traceparent(incoming, own_id));
    added.values = [xff, proto, fwd_host, real_ip, Some(ctx.request_id.clone())];
    if client_sent {
        // What the gateway sets replaces the client's copies (as an insert would).
        for name in added.names() {
            headers.remove(name);
        }
    }
}

/// The peer's address as a header value. The last one made on this thread is kept: a
/// worker sees the same peer again and again (keep-alive connections, a load balancer or
/// CDN in front), and then the value is a reference-count clone instead of text formatted
/// and allocated per request.
fn peer_value(peer: IpAddr) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((ip, v)) = last.as_ref() {
            if *ip == peer {
                return Some(v.clone());
            }
        }
        let v = header_value(&IpText::new(peer))?;
        *last = Some((peer, v.clone()));
        Some(v)
    })
}

/// The address as a header value whose clones share one allocation (a value copied from a
/// slice allocates again the first time it is cloned).
fn header_value(ip: &IpText) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(*ip)).ok()
}

/// Continues the caller's trace when it sent a valid `traceparent` (version 00), with a new
/// span id for the gateway hop; otherwise starts a new sampled trace whose id is
/// `own_id` when given (a request id the gateway made: 32 random lowercase hex digits, so
/// the trace is found by the id the client sees), else a random one.
pub fn traceparent(incoming: Option<&HeaderValue>, own_id: Option<&[u8]>) -> Traceparent {
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    let parsed = incoming.and_then(|v| parse_traceparent(v.as_bytes()));
    match (parsed, own_id) {
        (Some((trace, flags)), _) => {
            out[3..35].copy_from_slice(trace);
            out[53..55].copy_from_slice(flags);
        }
        (None, Some(id)) if id.len() == 32 => out[3..35].copy_from_slice(id),
        (None, _) => {
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
    Traceparent(out)
}

fn lower_hex(s: &[u8]) -> bool {
    s.iter()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

/// Lowercase hex and not all zeros (W3C trace context: an invalid trace id).
fn trace_id(s: &[u8]) -> bool {
    lower_hex(s) && s.iter().any(|b| *b != b'0')
}

fn parse_traceparent(v: &[u8]) -> Option<(&[u8], &[u8])> {
    if v.len() != 55 || &v[0..3] != b"00-" || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let trace = &v[3..35];
    let parent = &v[36..52];
    let flags = &v[53..55];
    if !trace_id(trace) || !trace_id(parent) || !lower_hex(flags) {
        return None;
    }
    Some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The encoder's lines and the merged map carry the same fields.
    #[test]
    fn added_fields_written_and_merged_alike() {
        let added = Added {
            values: [
                Some(HeaderValue::from_static("192.0.2.1")),
                Some(HeaderValue::from_static("https")),
                None,
                Some(HeaderValue::from_static("192.0.2.1")),
                Some(HeaderValue::from_static("id1")),
            ],
            traceparent: Some(traceparent(None, None)),
        };
        let mut out = BytesMut::new();
        added.put(&mut out);
        let tp = std::str::from_utf8(added.traceparent.as_ref().map_or(&[][..], |t| t.as_bytes()))
            .expect("ascii")
            .to_string();
        let want = format!(
            "x-forwarded-for: 192.0.2.1\r\nx-forwarded-proto: https\r\nx-real-ip: 192.0.2.1\r\n\
             x-request-id: id1\r\ntraceparent: {tp}\r\n"
        );
        assert_eq!(std::str::from_utf8(&out).expect("ascii"), want);
        let mut map = HeaderMap::new();
        map.insert(&X_FORWARDED_FOR, HeaderValue::from_static("client's"));
        added.merge_into(&mut map);
        let mut lines = String::new();
        for (n, v) in &map {
            lines.push_str(&format!("{n}: {}\r\n", v.to_str().expect("ascii")));
        }
        assert_eq!(lines, want);
        assert_eq!(added.names().count(), 5);
        for (prefix, name) in ADDED_PREFIXES.iter().zip(ADDED_NAMES) {
            assert_eq!(*prefix, format!("{name}: ").as_bytes());
        }
    }

    #[test]
    fn traceparent_continues_valid_trace() {
        let inc =
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let out = traceparent(Some(&inc), Some(b"0123456789abcdef0123456789abcdef"));
        let s = std::str::from_utf8(out.as_bytes()).expect("ascii");
        assert!(s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(&s[36..52], "00f067aa0ba902b7");
        assert!(s.ends_with("-01"));
    }

    #[test]
    fn traceparent_replaces_garbage() {
        let inc = HeaderValue::from_static("00-zz-yy-01");
        let out = traceparent(Some(&inc), None);
        assert_eq!(out.as_bytes().len(), 55);
        assert!(parse_traceparent(out.as_bytes()).is_some());
        assert_eq!(out.to_value().as_bytes(), out.as_bytes());
    }

    #[test]
    fn new_traces_take_the_gateways_own_request_id() {
        let id = crate::context::new_request_id();
        let out = traceparent(None, Some(id.as_bytes()));
        assert_eq!(&out.as_bytes()[3..35], id.as_bytes());
        assert!(parse_traceparent(out.as_bytes()).is_some());
        // A trusted proxy's id is not the gateway's own: a random trace id.
        let out = traceparent(None, None);
        assert!(parse_traceparent(out.as_bytes()).is_some());
        assert_ne!(&out.as_bytes()[3..35], id.as_bytes());
    }
}
