//! Request path normalizer (SECURITY-TESTS §2.4, P1–P10).
//!
//! [`normalize_path`] turns the raw path of a request target (no query) into:
//! - `forward`: the canonical path that is sent upstream, and
//! - `route`: `forward` with `;params` stripped from every segment, used for routing so that
//!   route matching is at least as broad as an upstream that ignores matrix parameters.
//!
//! The rules are applied exactly once, in this order:
//! 1. The path must start with `/`. Raw bytes outside RFC 3986 `pchar` / `/` are rejected,
//!    including raw `\`, control characters, non-ASCII bytes and `?`/`#`.
//! 2. Percent escapes of unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded
//!    (`%2e` → `.`, `%41` → `A`); every other escape is kept with its hex digits uppercased
//!    (`%3a` → `%3A`). The bytes after a kept escape are untouched, so `%252e` stays `%252e`
//!    (decoding happens once only, P3). Escapes of `/`, `\` and control characters, and
//!    malformed escapes, are rejected (P4, P9).
//! 3. Repeated slashes are merged and dot segments are removed (RFC 3986 §5.2.4, after the
//!    decoding of step 2, so `%2e%2e` is `..`). `..` above the root stays at the root; a
//!    trailing `/.` or `/..` leaves a trailing `/`. A `..` that follows an empty segment
//!    (`/admin/a//../../api`) is rejected: an upstream (or WAF) that removes dot segments
//!    before merging slashes would resolve it to a different path (`/admin/api`).
//! 4. A segment whose part before its first `;` (or `%3B`) is `.` or `..` (e.g. `..;`, `.;x`,
//!    `..%3Bx`) is rejected (Tomcat path-parameter traversal, P6). A segment that is *only*
//!    parameters (`/;x/`) is rejected unless it is the last segment, because upstreams
//!    disagree on whether the empty segment it leaves behind is merged before `..` is applied.
//!
//! `route` strips parameters at the first raw `;` **and** at the first `%3B` of each segment:
//! an upstream that percent-decodes before it strips matrix parameters must not see a
//! different resource than the one the gateway routed on.
//!
//! Allocation: when the input is already canonical (the common case) `forward` borrows the
//! input, and so does `route` when there is no parameter; nothing is allocated. A non-canonical
//! input allocates `forward`, and `route` is then a second owned string.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was rejected. Every variant maps to `400 Bad Request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A raw byte that is not allowed in a path (space, `"`, `<`, `>`, `?`, `#`, `{`, ...).
    InvalidByte,
    /// A raw `\`.
    RawBackslash,
    /// A raw control character (0x00–0x1F, 0x7F).
    ControlChar,
    /// A raw non-ASCII byte (must be percent-encoded).
    NonAscii,
    /// A `%` that is not followed by two hex digits.
    MalformedEscape,
    /// `%2F` (an encoded `/`).
    EncodedSlash,
    /// `%5C` (an encoded `\`).
    EncodedBackslash,
    /// An encoded control character (`%00`–`%1F`, `%7F`).
    EncodedControl,
    /// A segment such as `..;x` or `.;` whose name before the parameters is a dot segment.
    ParamDotSegment,
    /// A segment made only of parameters (`;x`) that is not the last segment.
    ParamEmptySegment,
    /// A `..` segment after an empty segment (`/a//../b`): upstreams that do not merge
    /// slashes resolve it differently.
    AmbiguousDotDot,
}

impl NormalizeError {
    /// A short static reason, safe to show to clients.
    pub const fn reason(self) -> &'static str {
        match self {
            NormalizeError::NotAbsolute => "path must start with '/'",
            NormalizeError::InvalidByte => "invalid character in path",
            NormalizeError::RawBackslash => "backslash in path",
            NormalizeError::ControlChar => "control character in path",
            NormalizeError::NonAscii => "non-ASCII byte in path",
            NormalizeError::MalformedEscape => "malformed percent-escape in path",
            NormalizeError::EncodedSlash => "encoded slash in path",
            NormalizeError::EncodedBackslash => "encoded backslash in path",
            NormalizeError::EncodedControl => "encoded control character in path",
            NormalizeError::ParamDotSegment => "dot segment with parameters in path",
            NormalizeError::ParamEmptySegment => "parameter-only segment in path",
            NormalizeError::AmbiguousDotDot => "'..' after an empty segment in path",
        }
    }

    /// The HTTP status the gateway answers with: always `400 Bad Request`.
    pub const fn status(self) -> http::StatusCode {
        http::StatusCode::BAD_REQUEST
    }
}

impl fmt::Display for NormalizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for NormalizeError {}

/// The result of [`normalize_path`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath<'a> {
    /// Canonical path sent upstream (parameters kept).
    pub forward: Cow<'a, str>,
    /// `forward` with `;params` (and `%3B`params) stripped from every segment; route on this.
    pub route: Cow<'a, str>,
}

// Byte classes.
const C_INVALID: u8 = 0;
const C_UNRESERVED: u8 = 1;
const C_SUBDELIM: u8 = 2; // sub-delims except ';', plus ':' and '@'
const C_SEMI: u8 = 3;
const C_SLASH: u8 = 4;
const C_PERCENT: u8 = 5;
const C_CONTROL: u8 = 6;
const C_BACKSLASH: u8 = 7;
const C_NONASCII: u8 = 8;

const fn build_classes() -> [u8; 256] {
    let mut t = [C_INVALID; 256];
    let mut i = 0usize;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
            C_UNRESERVED
        } else if matches!(
            c,
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b'=' | b':' | b'@'
        ) {
            C_SUBDELIM
        } else if c == b';' {
            C_SEMI
        } else if c == b'/' {
            C_SLASH
        } else if c == b'%' {
            C_PERCENT
        } else if c < 0x20 || c == 0x7f {
            C_CONTROL
        } else if c == b'\\' {
            C_BACKSLASH
        } else if c >= 0x80 {
            C_NONASCII
        } else {
            C_INVALID
        };
        i += 1;
    }
    t
}

static CLASS: [u8; 256] = build_classes();

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

#[inline]
fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[inline]
fn is_upper_hex(c: u8) -> bool {
    c.is_ascii_digit() || (b'A'..=b'F').contains(&c)
}

#[inline]
fn is_dot_seg(s: &[u8]) -> bool {
    s == b"." || s == b".."
}

/// Checks an escaped byte value; `Err` for values that must never be accepted.
#[inline]
fn check_escaped(v: u8) -> Result<(), NormalizeError> {
    match v {
        b'/' => Err(NormalizeError::EncodedSlash),
        b'\\' => Err(NormalizeError::EncodedBackslash),
        0x00..=0x1f | 0x7f => Err(NormalizeError::EncodedControl),
        _ => Ok(()),
    }
}

/// Fast scan: `Some(has_params)` when `b` is already canonical (a fixpoint of the slow path),
/// `None` when the slow path must run (it either rewrites the path or rejects it).
fn canonical_scan(b: &[u8]) -> Option<bool> {
    if b.first() != Some(&b'/') {
        return None;
    }
    let n = b.len();
    let mut i = 1;
    let mut has_params = false;
    let mut seg_start = 1;
    let mut core_end: Option<usize> = None;
    loop {
        if i == n || b[i] == b'/' {
            let last = i == n;
            let seg = &b[seg_start..i];
            let core = &b[seg_start..core_end.unwrap_or(i)];
            if seg.is_empty() {
                if !last {
                    return None; // `//`
                }
            } else if is_dot_seg(seg) || is_dot_seg(core) || (core.is_empty() && !last) {
                return None;
            }
            if last {
                return Some(has_params);
            }
            i += 1;
            seg_start = i;
            core_end = None;
            continue;
        }
        let c = b[i];
        match CLASS[c as usize] {
            C_UNRESERVED | C_SUBDELIM => i += 1,
            C_SEMI => {
                if core_end.is_none() {
                    core_end = Some(i);
                }
                has_params = true;
                i += 1;
            }
            C_PERCENT => {
                let (h, l) = (*b.get(i + 1)?, *b.get(i + 2)?);
                if !is_upper_hex(h) || !is_upper_hex(l) {
                    return None;
                }
                let v = (hex_val(h)? << 4) | hex_val(l)?;
                if CLASS[v as usize] == C_UNRESERVED || check_escaped(v).is_err() {
                    return None;
                }
                if v == b';' {
                    if core_end.is_none() {
                        core_end = Some(i);
                    }
                    has_params = true;
                }
                i += 3;
            }
            _ => return None,
        }
    }
}

/// The part of a canonical segment before its first `;` or `%3B`.
#[inline]
fn segment_core(seg: &str) -> &str {
    let b = seg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' => return &seg[..i],
            b'%' if b.get(i + 1) == Some(&b'3') && b.get(i + 2) == Some(&b'B') => return &seg[..i],
            _ => i += 1,
        }
    }
    seg
}

/// Strips `;params` from every segment of a canonical path.
fn strip_params(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for seg in path.get(1..).unwrap_or("").split('/') {
        out.push('/');
        out.push_str(segment_core(seg));
    }
    out
}

fn has_params(path: &str) -> bool {
    path.contains(';') || path.contains("%3B")
}

/// Slow path: decode, validate, merge slashes and remove dot segments.
fn normalize_slow(raw: &str) -> Result<String, NormalizeError> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(NormalizeError::NotAbsolute);
    }
    // Step 1: validate raw bytes, decode unreserved escapes, uppercase the others.
    let mut dec = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match CLASS[c as usize] {
            C_UNRESERVED | C_SUBDELIM | C_SEMI | C_SLASH => {
                dec.push(c as char);
                i += 1;
            }
            C_PERCENT => {
                let h = b.get(i + 1).copied().and_then(hex_val);
                let l = b.get(i + 2).copied().and_then(hex_val);
                let (Some(h), Some(l)) = (h, l) else {
                    return Err(NormalizeError::MalformedEscape);
                };
                let v = (h << 4) | l;
                check_escaped(v)?;
                if CLASS[v as usize] == C_UNRESERVED {
                    dec.push(v as char);
                } else {
                    dec.push('%');
                    dec.push(HEX_UPPER[(v >> 4) as usize] as char);
                    dec.push(HEX_UPPER[(v & 0xf) as usize] as char);
                }
                i += 3;
            }
            C_CONTROL => return Err(NormalizeError::ControlChar),
            C_BACKSLASH => return Err(NormalizeError::RawBackslash),
            C_NONASCII => return Err(NormalizeError::NonAscii),
            _ => return Err(NormalizeError::InvalidByte),
        }
    }
    // Step 2: merge slashes, check parameter segments, remove dot segments.
    let body = dec.get(1..).unwrap_or("");
    let count = body.split('/').count();
    let mut stack: Vec<&str> = Vec::with_capacity(count);
    let mut trailing = false;
    let mut seen_empty = false;
    for (idx, seg) in body.split('/').enumerate() {
        let last = idx + 1 == count;
        match seg {
            "" => {
                trailing = last;
                seen_empty = true;
            }
            "." => trailing = last,
            ".." => {
                if seen_empty {
                    return Err(NormalizeError::AmbiguousDotDot);
                }
                stack.pop();
                trailing = last;
            }
            _ => {
                let core = segment_core(seg);
                if core == "." || core == ".." {
                    return Err(NormalizeError::ParamDotSegment);
                }
                if core.is_empty() && !last {
                    return Err(NormalizeError::ParamEmptySegment);
                }
                stack.push(seg);
            }
        }
    }
    let mut out = String::with_capacity(dec.len());
    out.push('/');
    for (k, seg) in stack.iter().enumerate() {
        if k > 0 {
            out.push('/');
        }
        out.push_str(seg);
    }
    if trailing && !stack.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// Normalizes the path of a request target (no query). See the module documentation.
pub fn normalize_path(raw: &str) -> Result<NormalizedPath<'_>, NormalizeError> {
    match canonical_scan(raw.as_bytes()) {
        Some(false) => Ok(NormalizedPath {
            forward: Cow::Borrowed(raw),
            route: Cow::Borrowed(raw),
        }),
        Some(true) => Ok(NormalizedPath {
            forward: Cow::Borrowed(raw),
            route: Cow::Owned(strip_params(raw)),
        }),
        None => {
            let forward = normalize_slow(raw)?;
            let route = if has_params(&forward) {
                strip_params(&forward)
            } else {
                forward.clone()
            };
            Ok(NormalizedPath {
                forward: Cow::Owned(forward),
                route: Cow::Owned(route),
            })
        }
    }
}

/// A lenient upstream's view of a path, for the P-prop tests: percent-decode everything once,
/// remove dot segments, merge slashes, strip `;params`, lower-case.
#[cfg(test)]
pub fn upstream_view(path: &str) -> String {
    let decoded = tests::percent_decode_all(path);
    let s = tests::remove_dots(&decoded, false);
    let s = tests::merge_slashes(&s);
    let s = tests::strip_all_params(&s);
    s.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::{PathPattern, RouteMatch, RouteSpec, Router};
    use proptest::prelude::*;

    fn n(raw: &str) -> Result<(String, String), NormalizeError> {
        normalize_path(raw).map(|p| (p.forward.into_owned(), p.route.into_owned()))
    }

    fn fwd(raw: &str) -> String {
        match n(raw) {
            Ok((f, _)) => f,
            Err(e) => panic!("{raw:?} rejected: {e}"),
        }
    }

    fn route(raw: &str) -> String {
        match n(raw) {
            Ok((_, r)) => r,
            Err(e) => panic!("{raw:?} rejected: {e}"),
        }
    }

    // ---- lenient upstream model ------------------------------------------------------------

    pub(super) fn percent_decode_all(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if let (Some(h), Some(l)) = (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val),
                ) {
                    out.push((h << 4) | l);
                    i += 3;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// RFC 3986 §5.2.4 over '/'-separated segments; with `merge` empty segments are dropped.
    pub(super) fn remove_dots(s: &str, merge: bool) -> String {
        let body = s.strip_prefix('/').unwrap_or(s);
        let pieces: Vec<&str> = body.split('/').collect();
        let mut stack: Vec<&str> = Vec::new();
        let mut trailing = false;
        for (i, p) in pieces.iter().enumerate() {
            let last = i + 1 == pieces.len();
            match *p {
                "." => trailing = last,
                ".." => {
                    stack.pop();
                    trailing = last;
                }
                "" if merge => trailing = last,
                "" if last => trailing = true,
                other => {
                    stack.push(other);
                    trailing = false;
                }
            }
        }
        let mut out = String::from("/");
        out.push_str(&stack.join("/"));
        if trailing && !stack.is_empty() {
            out.push('/');
        }
        out
    }

    pub(super) fn merge_slashes(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut prev_slash = false;
        for c in s.chars() {
            if c == '/' && prev_slash {
                continue;
            }
            prev_slash = c == '/';
            out.push(c);
        }
        out
    }

    pub(super) fn strip_all_params(s: &str) -> String {
        s.split('/')
            .map(|seg| seg.split(';').next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Other plausible upstream pipelines (Tomcat strips parameters before normalizing, some
    /// servers merge slashes first). The gateway must be safe against all of them.
    fn upstream_views(path: &str) -> Vec<String> {
        let d = percent_decode_all(path);
        vec![
            upstream_view(path),
            // strip params, remove dots (no merge), merge
            merge_slashes(&remove_dots(&strip_all_params(&d), false)).to_ascii_lowercase(),
            // strip params, merge, remove dots
            remove_dots(&merge_slashes(&strip_all_params(&d)), true).to_ascii_lowercase(),
            // merge, strip params, remove dots
            remove_dots(&strip_all_params(&merge_slashes(&d)), true).to_ascii_lowercase(),
            // strip params on the raw path (before decoding), then decode and normalize
            remove_dots(
                &merge_slashes(&percent_decode_all(&strip_all_params(path))),
                true,
            )
            .to_ascii_lowercase(),
        ]
    }

    fn under_admin(v: &str) -> bool {
        v == "/admin" || v.starts_with("/admin/")
    }

    // ---- unit tests ------------------------------------------------------------------------

    #[test]
    fn canonical_inputs_borrow() {
        for p in [
            "/",
            "/a",
            "/a/",
            "/api/v1/users/42",
            "/a%3A",
            "/%252e",
            "/a:b@c!$&'()*+,=",
        ] {
            let r = normalize_path(p).expect("canonical");
            assert!(matches!(r.forward, Cow::Borrowed(_)), "{p}");
            assert!(matches!(r.route, Cow::Borrowed(_)), "{p}");
            assert_eq!(r.forward, p);
        }
        let r = normalize_path("/a;x=1/b").expect("canonical");
        assert!(matches!(r.forward, Cow::Borrowed(_)));
        assert_eq!(r.route, "/a/b");
    }

    #[test]
    fn decoding_rules() {
        assert_eq!(fwd("/%41%62c"), "/Abc");
        assert_eq!(fwd("/a%2db%5f%7e%2E"), "/a-b_~.");
        assert_eq!(fwd("/a%3ab"), "/a%3Ab");
        assert_eq!(fwd("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(fwd("/a%20b"), "/a%20b");
        // decoded once: `%25` kept, the following bytes untouched
        assert_eq!(fwd("/%252e%252E"), "/%252e%252E");
        assert_eq!(fwd("/%2525"), "/%2525");
    }

    #[test]
    fn rejections() {
        use NormalizeError::*;
        let cases: &[(&str, NormalizeError)] = &[
            ("", NotAbsolute),
            ("a/b", NotAbsolute),
            ("*", NotAbsolute),
            ("/a b", InvalidByte),
            ("/a?b", InvalidByte),
            ("/a#b", InvalidByte),
            ("/a{b}", InvalidByte),
            ("/a|b", InvalidByte),
            ("/a\\b", RawBackslash),
            ("/a\tb", ControlChar),
            ("/a\x7f", ControlChar),
            ("/é", NonAscii),
            ("/%G1", MalformedEscape),
            ("/%4", MalformedEscape),
            ("/%", MalformedEscape),
            ("/a%2fb", EncodedSlash),
            ("/a%2Fb", EncodedSlash),
            ("/a%5cb", EncodedBackslash),
            ("/a%00", EncodedControl),
            ("/a%1f", EncodedControl),
            ("/a%7F", EncodedControl),
            ("/..;/x", ParamDotSegment),
            ("/.;x", ParamDotSegment),
            ("/a/..;", ParamDotSegment),
            ("/a/%2e%2e;x/b", ParamDotSegment),
            ("/a/..%3bx/b", ParamDotSegment),
            ("/a/;x/b", ParamEmptySegment),
            ("/a/;x/", ParamEmptySegment),
            ("/a/%3Bx/b", ParamEmptySegment),
            ("/admin/a//../../api", AmbiguousDotDot),
            ("/a//..", AmbiguousDotDot),
            ("//%2e%2e/a", AmbiguousDotDot),
        ];
        for (p, e) in cases {
            assert_eq!(normalize_path(p).err(), Some(*e), "{p:?}");
        }
        // every error is a 400 with a short reason
        for (_, e) in cases {
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn dot_segments_and_slashes() {
        let cases = [
            ("/a/b/../c", "/a/c"),
            ("/a/./b", "/a/b"),
            ("/..", "/"),
            ("/../../a", "/a"),
            ("/a/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/.", "/"),
            ("//a///b//", "/a/b/"),
            ("//", "/"),
            ("/a/%2e%2e/b", "/b"),
            ("/a/.%2E/b", "/b"),
            ("/a/%2e./b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/a/...", "/a/..."),
            ("/a/..a", "/a/..a"),
        ];
        for (i, o) in cases {
            assert_eq!(fwd(i), o, "{i}");
        }
    }

    #[test]
    fn params_stripped_for_route() {
        assert_eq!(
            n("/admin;x=1/y").ok(),
            Some(("/admin;x=1/y".into(), "/admin/y".into()))
        );
        assert_eq!(
            n("/admin;/y").ok(),
            Some(("/admin;/y".into(), "/admin/y".into()))
        );
        assert_eq!(route("/a;b;c/d;e"), "/a/d");
        assert_eq!(route("/admin%3bx/y"), "/admin/y");
        assert_eq!(fwd("/admin%3bx/y"), "/admin%3Bx/y");
        assert_eq!(route("/;jsessionid=1"), "/");
        assert_eq!(route("/a/;jsessionid=1"), "/a/");
        assert_eq!(route("/a/b/../c;v=1"), "/a/c");
    }

    // ---- SECURITY-TESTS §2.4 -----------------------------------------------------------------

    #[test]
    fn p1_dotdot_is_normalized() {
        assert_eq!(route("/api/../admin/x"), "/admin/x");
    }

    #[test]
    fn p2_encoded_dots_are_normalized() {
        for p in [
            "/api/%2e%2e/admin/x",
            "/api/%2E%2E/admin/x",
            "/api/.%2e/admin/x",
            "/api/%2e./admin/x",
        ] {
            assert_eq!(route(p), "/admin/x", "{p}");
        }
    }

    #[test]
    fn p3_double_encoding_decoded_once() {
        let r = normalize_path("/api/%252e%252e/admin").expect("ok");
        assert_eq!(r.forward, "/api/%252e%252e/admin");
        assert!(matches!(r.forward, Cow::Borrowed(_)));
        assert_eq!(r.route, "/api/%252e%252e/admin");
    }

    #[test]
    fn p4_encoded_slash_and_backslash_rejected() {
        for p in [
            "/admin%2Fx",
            "/api%2F..%2Fadmin",
            "/api%5C..%5Cadmin",
            "/api\\..\\admin",
        ] {
            assert!(normalize_path(p).is_err(), "{p}");
        }
    }

    #[test]
    fn p5_slashes_merged() {
        assert_eq!(route("//admin/x"), "/admin/x");
        // `/api//../admin` is `/admin` when slashes are merged first (nginx, Envoy) but
        // `/api/admin` when dot segments are removed first (RFC 3986 on the raw path): the
        // ambiguity is rejected (400) rather than guessed.
        assert_eq!(
            normalize_path("/api//../admin").err(),
            Some(NormalizeError::AmbiguousDotDot)
        );
        assert_eq!(route("/api//./admin"), "/api/admin");
        assert_eq!(route("/./admin"), "/admin");
    }

    #[test]
    fn p6_tomcat_params() {
        assert_eq!(route("/admin;x=1/y"), "/admin/y");
        assert_eq!(route("/admin;/y"), "/admin/y");
        assert_eq!(
            normalize_path("/api/..;/admin").err(),
            Some(NormalizeError::ParamDotSegment)
        );
    }

    #[test]
    fn p6_upstream_order_regressions() {
        // Found by the P-prop test against mutated normalizers.
        assert_eq!(
            normalize_path("/api/;x/../admin;").err(),
            Some(NormalizeError::ParamEmptySegment)
        );
        assert_eq!(
            normalize_path("/api/..%3Bx/admin").err(),
            Some(NormalizeError::ParamDotSegment)
        );
        assert_eq!(
            normalize_path("/admin/a//../../api").err(),
            Some(NormalizeError::AmbiguousDotDot)
        );
    }

    #[test]
    fn p7_case_is_preserved() {
        // No case folding: routing is case-sensitive, so `/ADMIN/x` does not match `/api/*`
        // either; see the router tests.
        assert_eq!(route("/ADMIN/x"), "/ADMIN/x");
        assert_eq!(route("/Admin"), "/Admin");
    }

    #[test]
    fn p8_segment_boundaries_kept() {
        assert_eq!(route("/administrator"), "/administrator");
    }

    #[test]
    fn p9_nul_space_dot_fullwidth() {
        assert_eq!(
            normalize_path("/admin%00").err(),
            Some(NormalizeError::EncodedControl)
        );
        assert_eq!(route("/admin%20"), "/admin%20");
        assert_eq!(route("/admin."), "/admin.");
        assert_eq!(
            normalize_path("/ａdmin").err(),
            Some(NormalizeError::NonAscii)
        );
        // encoded full-width stays encoded: no Unicode folding
        assert_eq!(route("/%ef%bd%81dmin"), "/%EF%BD%81dmin");
    }

    #[test]
    fn p10_query_is_not_part_of_the_path() {
        // The caller passes only the path; a `?` reaching the normalizer is rejected.
        assert_eq!(
            normalize_path("/api?x=/admin").err(),
            Some(NormalizeError::InvalidByte)
        );
        assert_eq!(route("/api"), "/api");
    }

    #[test]
    fn upstream_model_sanity() {
        assert_eq!(upstream_view("/API/%2e%2e/Admin;x/y"), "/admin/y");
        assert_eq!(upstream_view("/api/%252e%252e/admin"), "/api/%2e%2e/admin");
        assert_eq!(upstream_view("//a//b"), "/a/b");
    }

    // ---- properties --------------------------------------------------------------------------

    /// Tokens that often survive normalization.
    const SEG_TOKENS: &[&str] = &[
        "", ".", "..", "%2e", "%2E", "%2e%2e", ".%2e", "%2E.", "a", "b", "admin", "admin", "admin",
        "api", "api", "ADMIN", "Admin", "%61dmin", "adm%69n", "%252e", "%25", ";", ";x=1", "%3b",
        "%3Bx", "..;", ".;x", "%20", "~", "x", ":", "@", "%c3%a9",
    ];
    /// Tokens that must be rejected wherever they appear.
    const HOSTILE_TOKENS: &[&str] = &[
        "%", "%4", "%G1", "%00", "%0a", "%7f", "%2f", "%5C", "\\", " ", "?", "#", "{", "é", "\t",
    ];
    const SEPARATORS: &[&str] = &["/", "/", "/", "/", "/", "/", "//", "%2f", "%5c", "\\"];

    /// Random mixes of the P1–P9 mutations: segments of 1–3 tokens joined by separators.
    fn path_strategy() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            12 => proptest::sample::select(SEG_TOKENS),
            1 => proptest::sample::select(HOSTILE_TOKENS),
        ];
        let seg = prop_oneof![
            3 => proptest::sample::select(&["api", "admin", "..", "..;", ".", "%2e%2e", ";x"][..])
                .prop_map(str::to_owned),
            4 => token.clone().prop_map(str::to_owned),
            2 => proptest::collection::vec(token, 2..4).prop_map(|t| t.concat()),
        ];
        (
            proptest::sample::select(&[true, true, true, true, true, false][..]),
            proptest::collection::vec((proptest::sample::select(SEPARATORS), seg), 0..7),
            any::<bool>(),
        )
            .prop_map(|(lead, parts, trailing)| {
                let mut s = String::new();
                for (i, (sep, seg)) in parts.iter().enumerate() {
                    if i > 0 || lead {
                        s.push_str(sep);
                    }
                    s.push_str(seg);
                }
                if trailing || s.is_empty() {
                    s.push('/');
                }
                s
            })
    }

    fn is_canonical_output(p: &str) -> bool {
        p.starts_with('/') && !p.contains("//") && p.split('/').all(|s| s != "." && s != "..")
    }

    fn test_router() -> Router {
        let specs = vec![
            RouteSpec::new(PathPattern::Prefix("/admin".into())),
            RouteSpec::new(PathPattern::Prefix("/api".into())),
        ];
        match Router::build(&specs) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn prop_idempotent_and_canonical(raw in path_strategy()) {
            if let Ok(p) = normalize_path(&raw) {
                prop_assert!(is_canonical_output(&p.forward), "forward {:?}", p.forward);
                prop_assert!(is_canonical_output(&p.route), "route {:?}", p.route);
                let again = normalize_path(&p.forward);
                prop_assert_eq!(again.as_ref().ok(), Some(&p));
                // canonical output is recognised by the zero-allocation fast path
                let again = again.map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(matches!(again.forward, Cow::Borrowed(_)));
                // the route form is itself canonical and parameter-free
                let r = normalize_path(&p.route).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&r.forward, &p.route);
                prop_assert_eq!(&r.route, &p.route);
            }
        }

        #[test]
        fn prop_fast_path_agrees_with_slow_path(raw in path_strategy()) {
            if canonical_scan(raw.as_bytes()).is_some() {
                prop_assert_eq!(normalize_slow(&raw).ok(), Some(raw.clone()));
            }
        }

    }

    proptest! {
        // SECURITY-TESTS P-prop: 0 counter-examples in 100k cases.
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        #[test]
        fn prop_upstream_admin_never_routes_to_api(raw in path_strategy()) {
            let router = test_router();
            let headers = http::HeaderMap::new();
            let Ok(p) = normalize_path(&raw) else { return Ok(()); };
            let mut views = upstream_views(&raw);
            views.extend(upstream_views(&p.forward));
            if views.iter().any(|v| under_admin(v)) {
                match router.find(None, &p.route, &http::Method::GET, &headers) {
                    RouteMatch::Found { route, .. } => prop_assert_eq!(
                        route, 0, "{:?} -> forward {:?} route {:?} views {:?}",
                        raw, p.forward, p.route, views
                    ),
                    RouteMatch::NotFound => {}
                    RouteMatch::MethodNotAllowed { .. } => prop_assert!(false),
                }
            }
        }
    }
}
