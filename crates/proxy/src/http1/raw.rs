//! An upstream response's fields passed on as the upstream wrote them.
//!
//! A proxied HTTP/1 response usually goes back to an HTTP/1 client unchanged apart from its
//! framing and hop-by-hop fields. Building a header map for it (a `HeaderName` and a checked
//! `HeaderValue` per field, a hash and a probe per insert) only for the encoder to walk the
//! map and write every field out again cost ~2k instructions a request. When nothing needs
//! the map, the fields the gateway passes on are kept here instead: spans of the upstream's
//! frozen head, checked as strictly as `http`'s types check them, and written to the client
//! as runs of whole lines (one copy for the usual contiguous block).
//!
//! Which responses qualify is decided by `head::response_head`, field by field: a response
//! with a body, every line ending in CRLF, no field that the pipeline would remove or
//! replace (hop-by-hop fields other than the framing ones the parser removes itself, by
//! `policy::headers`' own list; `Connection` nominating fields; the gateway's own
//! `x-request-id` / `RateLimit*`, by `body::GatewayFields`' list).
//! Anything else gets a header map as before. Whoever needs the fields as a map (response
//! header operations, CORS, a WebSocket handshake, the HTTP/2 server) calls
//! [`RawFields::move_into`] first: the HTTP/1 response encoder is the only reader of the raw
//! form.

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderValue};

use super::{names, swar};

/// Spans kept per connection are let go past this many lines (a rare head with many fields
/// should not pin memory in a pooled connection).
const KEEP_LINES: usize = 64;

/// The fields of the last response head read on one upstream connection, when they are
/// passed through (see the module doc). Empty otherwise.
#[derive(Default)]
pub struct RawFields {
    /// The frozen head the spans point into (empty when there are no fields here).
    head: Bytes,
    lines: Vec<Line>,
    has_date: bool,
}

/// One field line: `line` is the whole line with its CRLF, `name` and `value` (without the
/// whitespace around it) are within it.
#[derive(Clone, Debug)]
struct Line {
    line: Range<usize>,
    name: Range<usize>,
    value: Range<usize>,
}

impl RawFields {
    /// Drops the fields (and the head they point into: a pooled connection's read buffer
    /// can reuse its memory only once no slice of it is left).
    pub fn clear(&mut self) {
        self.head = Bytes::new();
        self.lines.clear();
        if self.lines.capacity() > KEEP_LINES {
            self.lines = Vec::new();
        }
        self.has_date = false;
    }

    /// Starts a new set of fields from `head`.
    pub(super) fn start(&mut self, head: &Bytes) {
        self.clear();
        self.head = head.clone();
    }

    /// Passes on the field line `line` (a whole line ending in CRLF, within the head given
    /// to [`RawFields::start`]), whose name and value are checked.
    pub(super) fn keep(&mut self, line: Range<usize>, name: Range<usize>, value: Range<usize>) {
        self.lines.push(Line { line, name, value });
    }

    pub(super) fn set_has_date(&mut self) {
        self.has_date = true;
    }

    /// The upstream sent a `Date` (the encoder adds one only when there is none).
    pub fn has_date(&self) -> bool {
        self.has_date
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Writes the lines, as they arrived: adjacent lines are one copy.
    pub fn put(&self, out: &mut BytesMut) {
        let mut lines = self.lines.iter();
        let Some(first) = lines.next() else {
            return;
        };
        let mut run = first.line.clone();
        for l in lines {
            if l.line.start == run.end {
                run.end = l.line.end;
            } else {
                out.put_slice(&self.head[run]);
                run = l.line.clone();
            }
        }
        out.put_slice(&self.head[run]);
    }

    /// Appends the fields to `headers` (in their order) and clears them here.
    pub fn move_into(&mut self, headers: &mut HeaderMap) {
        headers.reserve(self.lines.len());
        for l in &self.lines {
            // Both were checked when the head was read, by the same rules as these
            // constructors apply, so neither fails (a field is never dropped silently: the
            // equivalence proptest in `head` compares the two forms).
            let name = names::parse(&self.head[l.name.clone()]);
            let value = HeaderValue::from_maybe_shared(self.head.slice(l.value.clone()));
            debug_assert!(name.is_ok() && value.is_ok(), "raw field checked when read");
            if let (Ok(name), Ok(value)) = (name, value) {
                headers.append(name, value);
            }
        }
        self.clear();
    }
}

/// A field value `HeaderValue` accepts: visible ASCII, space, tab, obs-text (no other
/// control byte, no DEL). Eight bytes at a time (a byte loop cost ~9 instructions a byte);
/// every word is looked at (a valid value, the usual one, is read to its end either way).
#[inline]
pub fn valid_value(v: &[u8]) -> bool {
    swar::or_words(v, b' ', bad_in_word) == 0
}

/// The high bit set in each byte of `w` that is not a valid value byte; exact per byte (no
/// carry crosses a byte: every sum below stays under 0x100 within its byte).
#[inline(always)]
fn bad_in_word(w: u64) -> u64 {
    use swar::{HI, REP};
    const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    // Control bytes but tab: with tab turned into zero (and every byte below 0x20 kept
    // below it), the bytes from 1 to 0x1f.
    let x = w ^ (REP * u64::from(b'\t'));
    let x7 = x & LO7;
    let not_zero = x7 + LO7;
    let at_least_space = x7 + REP * 0x60;
    let control = not_zero & !(at_least_space | x);
    // DEL: the one byte below 0x80 whose low seven bits are all set.
    let del = ((w & LO7) + REP) & !w;
    (control | del) & HI
}

/// A field name `HeaderName` accepts: one or more RFC 9110 token characters (and no longer
/// than its limit).
pub fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n.len() < 1 << 16 && n.iter().all(|&b| TCHAR[usize::from(b)])
}

/// RFC 9110 `tchar`.
static TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    #[test]
    fn name_and_value_checks_agree_with_http() {
        for b in 0..=255u8 {
            let name = [b'x', b];
            assert_eq!(
                valid_name(&name),
                HeaderName::from_bytes(&name).is_ok(),
                "name byte {b:#x}"
            );
            let value = [b'v', b, b'v'];
            assert_eq!(
                valid_value(&value),
                HeaderValue::from_bytes(&value).is_ok(),
                "value byte {b:#x}"
            );
        }
        assert!(!valid_name(b""));
        assert!(valid_value(b""));
        // Every byte at every position of the 8-byte words and the tail, among good ones.
        let good = b"a \t~\x80\xff";
        for len in 0..20 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut v: Vec<u8> = (0..len).map(|i| good[i % good.len()]).collect();
                    v[at] = b;
                    assert_eq!(
                        valid_value(&v),
                        HeaderValue::from_bytes(&v).is_ok(),
                        "{v:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn values_of_boundary_bytes_agree_with_http() {
        // Many bad bytes in one word, in any mix: each byte's flag must stand on its own.
        let bytes = [0, 8, 9, 10, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff, b'a'];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..20_000 {
            let len = rng.usize(0..24);
            let v: Vec<u8> = (0..len).map(|_| bytes[rng.usize(..bytes.len())]).collect();
            assert_eq!(
                valid_value(&v),
                HeaderValue::from_bytes(&v).is_ok(),
                "{v:?}"
            );
        }
    }

    #[test]
    fn adjacent_lines_are_written_as_one_run() {
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nD:4\r\n\r\n");
        let mut raw = RawFields::default();
        raw.start(&head);
        // A, B adjacent; C skipped; D on its own.
        raw.keep(17..23, 17..18, 20..21);
        raw.keep(23..29, 23..24, 26..27);
        raw.keep(35..40, 35..36, 37..38);
        raw.set_has_date();
        let mut out = BytesMut::new();
        raw.put(&mut out);
        assert_eq!(&out[..], b"A: 1\r\nB: 2\r\nD:4\r\n");
        assert!(raw.has_date());
        let mut map = HeaderMap::new();
        raw.move_into(&mut map);
        assert_eq!(map.len(), 3);
        assert_eq!(map["a"], "1");
        assert_eq!(map["d"], "4");
        assert!(raw.is_empty() && !raw.has_date() && raw.head.is_empty());
    }

    /// A pooled connection does not keep the spans of a rare head with many fields.
    #[test]
    fn many_lines_are_let_go() {
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n");
        let mut raw = RawFields::default();
        raw.start(&head);
        for _ in 0..KEEP_LINES + 1 {
            raw.keep(17..23, 17..18, 20..21);
        }
        raw.clear();
        assert_eq!(raw.lines.capacity(), 0);
        raw.start(&head);
        raw.keep(17..23, 17..18, 20..21);
        raw.clear();
        assert!(raw.lines.capacity() > 0, "a usual head's room is kept");
    }
}
