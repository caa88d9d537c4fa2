//! Header names and maps for the HTTP/1 codec, without the general-purpose costs.
//!
//! `HeaderName::from_bytes` lowercases every name into a buffer and then matches it against
//! the ~90 standard names; most fields on the wire are one of a dozen. Those are matched here
//! by length and a case-insensitive compare (a name equal to a valid token is itself valid),
//! anything else goes through `from_bytes` as before.
//!
//! Header maps are recycled per thread: a parsed head's map is taken from a small pool and
//! given back (cleared, its allocation kept) when the head has been encoded, instead of two
//! allocations and two frees per map per request.

use std::cell::RefCell;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The standard name for `raw` (any bytes: only a name that is exactly one of them, in
/// any case, matches) when it is one of the common ones.
pub fn common(raw: &[u8]) -> Option<HeaderName> {
    // Written out as guards, not a table: a table of `HeaderName`s is built (and dropped)
    // on every call, since the type has drop glue and cannot be promoted to a static.
    let is = |name: &'static [u8]| eq_folded(raw, name);
    Some(match raw.len() {
        4 if is(b"host") => header::HOST,
        4 if is(b"date") => header::DATE,
        6 if is(b"accept") => header::ACCEPT,
        6 if is(b"server") => header::SERVER,
        6 if is(b"cookie") => header::COOKIE,
        6 if is(b"origin") => header::ORIGIN,
        6 if is(b"expect") => header::EXPECT,
        7 if is(b"upgrade") => header::UPGRADE,
        7 if is(b"referer") => header::REFERER,
        10 if is(b"connection") => header::CONNECTION,
        10 if is(b"user-agent") => header::USER_AGENT,
        10 if is(b"set-cookie") => header::SET_COOKIE,
        12 if is(b"content-type") => header::CONTENT_TYPE,
        13 if is(b"authorization") => header::AUTHORIZATION,
        13 if is(b"cache-control") => header::CACHE_CONTROL,
        13 if is(b"last-modified") => header::LAST_MODIFIED,
        14 if is(b"content-length") => header::CONTENT_LENGTH,
        15 if is(b"accept-encoding") => header::ACCEPT_ENCODING,
        15 if is(b"accept-language") => header::ACCEPT_LANGUAGE,
        16 if is(b"content-encoding") => header::CONTENT_ENCODING,
        17 if is(b"transfer-encoding") => header::TRANSFER_ENCODING,
        _ => return None,
    })
}

/// The lengths of a list of names, one bit each (64 bytes and longer share the top bit): a
/// name whose length has no bit is none of them, told by a shift and a mask instead of a
/// compare per listed name (the raw response pass asks this for every field it keeps).
#[derive(Debug, Clone, Copy)]
pub struct Lengths(u64);

impl Lengths {
    pub fn of<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Lengths(names.into_iter().fold(0, |m, n| m | Self::bit(n.len())))
    }

    /// Whether a name of `len` bytes may be one of the list.
    #[inline]
    pub fn may_hold(self, len: usize) -> bool {
        self.0 & Self::bit(len) != 0
    }

    #[inline]
    fn bit(len: usize) -> u64 {
        1 << len.min(63)
    }
}

/// `raw == name` ignoring ASCII case, for any bytes `raw` and a `name` of lowercase letters
/// and `-`. Compares 8 (or 4) bytes at a time with the case bit set on `raw`'s bytes only
/// where `name` has a letter (a letter's 0x40 bit shifted down to 0x20): so only `A`-`Z`
/// fold onto `a`-`z`, and where `name` has `-`, `raw` must have `-` (not CR, which is `-`
/// without that bit).
#[inline(always)]
fn eq_folded(raw: &[u8], name: &'static [u8]) -> bool {
    let n = raw.len();
    if n != name.len() {
        return false;
    }
    let w8 = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let w4 = |b: &[u8], i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
    if n >= 8 {
        let mut i = 0;
        let eq8 = |i: usize| {
            let want = w8(name, i);
            w8(raw, i) | (want & 0x4040_4040_4040_4040) >> 1 == want
        };
        while i + 8 < n {
            if !eq8(i) {
                return false;
            }
            i += 8;
        }
        eq8(n - 8)
    } else if n >= 4 {
        let eq4 = |i: usize| {
            let want = w4(name, i);
            w4(raw, i) | (want & 0x4040_4040) >> 1 == want
        };
        eq4(0) && eq4(n - 4)
    } else {
        raw.eq_ignore_ascii_case(name)
    }
}

/// A header name from the wire: the common ones without parsing, others validated.
pub fn parse(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match common(raw) {
        Some(n) => Ok(n),
        None => HeaderName::from_bytes(raw),
    }
}

/// The set ones of a fixed list of fields, as (name, value): how the gateway's own fields are
/// kept beside a header map instead of inserted into it (the request's forwarding fields,
/// `forwarded::Added`; the response's, `body::GatewayFields`). An insert hashes a custom
/// name byte by byte and probes for it; fields kept here cost nothing until written.
pub fn present<'a>(
    names: &'a [&'static HeaderName],
    values: &'a [Option<HeaderValue>],
) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> + 'a {
    names
        .iter()
        .zip(values)
        .filter_map(|(n, v)| Some((*n, v.as_ref()?)))
}

/// Inserts `fields` into `headers`, each replacing any of its name: what inserting them in
/// the first place would have done (for HTTP/2, mirrors, header operations).
pub fn insert_all<'a>(
    fields: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    headers: &mut HeaderMap,
) {
    for (name, value) in fields {
        headers.insert(name.clone(), value.clone());
    }
}

/// Maps larger than this are not kept: a rare head with many fields should not pin memory.
const KEEP_CAPACITY: usize = 32;
/// Maps kept per thread (a few heads are in flight per thread at a time).
const POOL: usize = 16;

thread_local! {
    static MAPS: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map with room for `n` fields, recycled when one is available.
pub fn map(n: usize) -> HeaderMap {
    let reused = MAPS.with(|m| m.borrow_mut().pop());
    match reused {
        Some(mut map) => {
            map.reserve(n);
            map
        }
        None => HeaderMap::with_capacity(n),
    }
}

/// Gives a map back for reuse (its fields are dropped now).
pub fn recycle(mut map: HeaderMap) {
    if map.capacity() > KEEP_CAPACITY || map.capacity() == 0 {
        return;
    }
    map.clear();
    MAPS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() < POOL {
            m.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn lengths_hold_exactly_the_listed_lengths() {
        let long = "x".repeat(70);
        let l = Lengths::of(["te", "connection", long.as_str()]);
        for len in 0..200 {
            let expect = len == 2 || len == 10 || len >= 63;
            assert_eq!(l.may_hold(len), expect, "{len}");
        }
        assert!(!Lengths::of([]).may_hold(0));
    }

    #[test]
    fn common_names_agree_with_the_general_parser() {
        let names = [
            "host",
            "Host",
            "DATE",
            "Content-Length",
            "content-type",
            "Authorization",
            "transfer-encoding",
            "Connection",
            "user-agent",
            "Accept-Encoding",
            "set-cookie",
            "Upgrade",
        ];
        for n in names {
            let fast = common(n.as_bytes()).unwrap_or_else(|| panic!("{n} is common"));
            assert_eq!(
                fast,
                HeaderName::from_bytes(n.as_bytes()).expect("valid"),
                "{n}"
            );
        }
        // Same length as a common name, not one of them: the general parser decides.
        for n in ["hosts", "hostx", "x-id", "content-lengtx", "content_length"] {
            assert!(common(n.as_bytes()).is_none(), "{n}");
        }
        // Token characters one case bit away from a name's own are not mistaken for them.
        for n in [
            "hos^",
            "Host~",
            "content-lengt~",
            "content-lengtH",
            "x-forwarded-fo",
        ] {
            assert_eq!(
                common(n.as_bytes()).map(|h| h.to_string()),
                (n.eq_ignore_ascii_case("content-lengtH")).then(|| "content-length".into()),
                "{n}"
            );
        }
        // Any bytes, not only tokens (the response splitter leaves names unchecked): a byte
        // one case bit away from a name's `-` or letters is not taken for it, and every
        // common name matches only itself.
        for n in [
            &b"content\rlength"[..],
            b"Content\rLength",
            b"user\rAgent",
            b"hos\x14",
            b"HOS\x14",
            b"\x08ost",
        ] {
            assert!(common(n).is_none(), "{:?}", String::from_utf8_lossy(n));
            assert!(parse(n).is_err(), "{:?}", String::from_utf8_lossy(n));
        }
        for n in names {
            let mut b = n.as_bytes().to_vec();
            for i in 0..b.len() {
                for flip in [0x20u8, 0x40, 0x80, 0x01] {
                    b[i] ^= flip;
                    let want = HeaderName::from_bytes(&b)
                        .ok()
                        .filter(|h| h.as_str().eq_ignore_ascii_case(n));
                    assert_eq!(common(&b), want, "{:?}", String::from_utf8_lossy(&b));
                    b[i] ^= flip;
                }
            }
        }
        assert_eq!(parse(b"X-Custom").expect("valid").as_str(), "x-custom");
        assert!(parse(b"bad name").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn recycled_maps_come_back_empty_and_large_ones_are_dropped() {
        let mut m = map(4);
        m.insert(header::HOST, HeaderValue::from_static("a"));
        let cap = m.capacity();
        recycle(m);
        let again = map(2);
        assert!(again.is_empty());
        assert!(again.capacity() >= cap.min(KEEP_CAPACITY));
        let mut big = HeaderMap::with_capacity(KEEP_CAPACITY * 4);
        big.insert(header::HOST, HeaderValue::from_static("a"));
        recycle(big);
        // Only the small map may come back.
        let next = map(1);
        assert!(next.capacity() <= KEEP_CAPACITY);
        recycle(again);
        recycle(next);
    }
}
