//! Splitting an HTTP/1 head into its start line and fields in one pass: where each field's
//! name and value are, nothing copied, nothing allocated once `fields` has grown to the
//! usual size. Used for upstream responses and client requests alike.
//!
//! Why not httparse: for a proxied response it cost ~1,400 instructions of the ~24.5k a
//! request costs (~850 for the request), plus ~300 for the separate search for the head's
//! end it needs first, and the names and values it checked were checked again by
//! `HeaderName` and `HeaderValue` anyway. Here the end search *is* the split (one search
//! per line), and names and values are left to those second checks, which become the only
//! ones (`head::parse_request` / `parse_request_front` and `head::ResponseReader` make
//! them).
//!
//! What is accepted, together with those checks, is what httparse accepts with the gateway's
//! strict settings (the differential tests in `head.rs` hold the two against each other):
//! lines ending in CRLF or LF, empty lines before the start line skipped; for a request, a
//! method, one space, a non-empty target of visible ASCII / UTF-8, one space and `HTTP/1.0`
//! or `HTTP/1.1`; for a response, `HTTP/1.0` or `HTTP/1.1`, one space, three digits, then the
//! end of the line or one space and a reason of HTAB / SP / VCHAR / obs-text; a field name of
//! one or more token characters directly followed by the colon (no whitespace before it, no
//! obs-fold); the value without surrounding SP / HTAB.

use std::ops::Range;

use memchr::memchr;

use super::swar::{zero_bytes, REP};

/// Where one field's name and value are in the head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: Range<usize>,
    /// Without the whitespace around it; its bytes are not checked here.
    pub value: Range<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitError {
    Malformed,
    /// A request line whose version is not `HTTP/1.0` or `HTTP/1.1`.
    Version,
    TooManyFields,
}

/// A response's status line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusLine {
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Three digits, not yet checked to be a valid status (100..=999).
    pub code: u16,
}

/// Splits the response head at the front of `buf`: `Ok(None)` when it has not ended in
/// `buf`. On success: the status line and the head's length (up to and including the
/// empty line); `fields` (cleared first) holds at most `max_fields` fields.
pub fn response(
    buf: &[u8],
    max_fields: usize,
    fields: &mut Vec<Field>,
) -> Result<Option<(StatusLine, usize)>, SplitError> {
    fields.clear();
    let Some((line, pos)) = start_line(buf) else {
        return Ok(None);
    };
    let status = status_line(&buf[line])?;
    Ok(split_fields(buf, pos, max_fields, fields)?.map(|end| (status, end)))
}

/// A request's request line: where its method and target are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestLine {
    /// Not checked here (`Method::from_bytes` does).
    pub method: Range<usize>,
    /// Non-empty, visible ASCII or UTF-8 (`Uri` parsing checks it further).
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
}

/// Splits the request head at the front of `buf`, like [`response`]: the request line
/// (method, one space, target, one space, `HTTP/1.0` or `HTTP/1.1`) and the fields.
pub fn request(
    buf: &[u8],
    max_fields: usize,
    fields: &mut Vec<Field>,
) -> Result<Option<(RequestLine, usize)>, SplitError> {
    fields.clear();
    let Some((line, pos)) = start_line(buf) else {
        return Ok(None);
    };
    let line = request_line(&buf[line.clone()], line.start)?;
    Ok(split_fields(buf, pos, max_fields, fields)?.map(|end| (line, end)))
}

/// The first line that is not empty (empty lines before it are skipped), without its line
/// ending, and where the next line starts; `None` while it has not ended.
fn start_line(buf: &[u8]) -> Option<(Range<usize>, usize)> {
    let mut pos = 0;
    loop {
        let off = find(&buf[pos..], b'\n')?;
        let len = without_cr(&buf[pos..pos + off]).len();
        let line = pos..pos + len;
        pos += off + 1;
        if len > 0 {
            return Some((line, pos));
        }
    }
}

fn request_line(line: &[u8], start: usize) -> Result<RequestLine, SplitError> {
    let Some(sp) = find(line, b' ') else {
        return Err(SplitError::Malformed);
    };
    let rest = &line[sp + 1..];
    // The target: up to the next space, every byte visible ASCII or UTF-8 (checked here,
    // not left to `Uri`, which stops looking at a `#`).
    let mut n = 0;
    let mut high = 0;
    while n < rest.len() && URI[usize::from(rest[n])] {
        high |= rest[n];
        n += 1;
    }
    if n == 0 || rest.get(n) != Some(&b' ') {
        return Err(SplitError::Malformed);
    }
    if high >= 0x80 && std::str::from_utf8(&rest[..n]).is_err() {
        return Err(SplitError::Malformed);
    }
    let minor = match &rest[n + 1..] {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        _ => return Err(SplitError::Version),
    };
    Ok(RequestLine {
        method: start..start + sp,
        target: start + sp + 1..start + sp + 1 + n,
        minor,
    })
}

/// Bytes a request target may hold: visible ASCII (`!`..=`~`) and, if they form UTF-8,
/// bytes above it.
static URI: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0x21;
    while b < 256 {
        t[b] = b != 0x7f;
        b += 1;
    }
    t
};

fn without_cr(line: &[u8]) -> &[u8] {
    match line {
        [rest @ .., b'\r'] => rest,
        _ => line,
    }
}

fn status_line(line: &[u8]) -> Result<StatusLine, SplitError> {
    let minor = match line.get(..8) {
        Some(b"HTTP/1.1") => 1,
        Some(b"HTTP/1.0") => 0,
        _ => return Err(SplitError::Malformed),
    };
    let [b' ', h, t, o, rest @ ..] = &line[8..] else {
        return Err(SplitError::Malformed);
    };
    if ![h, t, o].iter().all(|d| d.is_ascii_digit()) {
        return Err(SplitError::Malformed);
    }
    let code = u16::from(h - b'0') * 100 + u16::from(t - b'0') * 10 + u16::from(o - b'0');
    match rest {
        [] => {}
        [b' ', reason @ ..] if reason.iter().all(|&b| is_reason_byte(b)) => {}
        _ => return Err(SplitError::Malformed),
    }
    Ok(StatusLine { minor, code })
}

fn is_reason_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

/// The field lines from `pos` to the empty line that ends the head: the index just past
/// that line, `None` when it is not in `buf`.
fn split_fields(
    buf: &[u8],
    mut pos: usize,
    max_fields: usize,
    fields: &mut Vec<Field>,
) -> Result<Option<usize>, SplitError> {
    loop {
        // The name is what precedes the first colon, so the line is searched once for the
        // first colon or LF, and from a colon on for the LF only (the name's bytes were
        // searched twice before, once per byte sought). The name is not checked here: the
        // one check is `names::parse` (exactly `HeaderName`'s, RFC 9110 tchar, so
        // whitespace before the colon, obs-fold and CR are refused there), as values are
        // left to `HeaderValue`.
        let Some(colon) = find_either(&buf[pos..], b':', b'\n') else {
            return Ok(None);
        };
        if buf[pos + colon] == b'\n' {
            // No colon before the line's end: the empty line ends the head, any other line
            // is refused.
            return match without_cr(&buf[pos..pos + colon]) {
                [] => Ok(Some(pos + colon + 1)),
                _ => Err(SplitError::Malformed),
            };
        }
        let Some(off) = find(&buf[pos + colon + 1..], b'\n') else {
            return Ok(None);
        };
        let next = pos + colon + 1 + off + 1;
        let line = without_cr(&buf[pos..next - 1]);
        let value = trim_ows(line, colon + 1);
        if fields.len() == max_fields {
            return Err(SplitError::TooManyFields);
        }
        fields.push(Field {
            name: pos..pos + colon,
            value: pos + value.start..pos + value.end,
        });
        pos = next;
    }
}

/// `line[from..]` without leading and trailing SP / HTAB, as a range of `line`.
fn trim_ows(line: &[u8], from: usize) -> Range<usize> {
    let ows = |b: u8| matches!(b, b' ' | b'\t');
    // The usual field: one space after the colon, none at the end.
    if let (Some(b' '), Some(&first), Some(&last)) =
        (line.get(from), line.get(from + 1), line.last())
    {
        if !ows(first) && !ows(last) {
            return from + 1..line.len();
        }
    }
    let (mut start, mut end) = (from, line.len());
    while start < end && matches!(line[start], b' ' | b'\t') {
        start += 1;
    }
    while end > start && matches!(line[end - 1], b' ' | b'\t') {
        end -= 1;
    }
    start..end
}

/// The first `byte` in `hay`. The first 32 bytes are searched 8 at a time: most lines and
/// names are shorter, and a call to `memchr`'s vector search costs ~50 instructions however
/// short the haystack (~15 calls a request). The rest (a token, a cookie) goes to `memchr`.
#[inline]
pub fn find(hay: &[u8], byte: u8) -> Option<usize> {
    let pattern = REP * u64::from(byte);
    let mut i = 0;
    while i < 32 {
        let Some(word) = hay.get(i..i + 8) else {
            return hay[i..].iter().position(|&b| b == byte).map(|p| i + p);
        };
        let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8])) ^ pattern;
        // A zero byte of `w` is a match; the lowest flagged byte is the first one (a flag
        // above a zero byte can be a false one, never below it).
        let zero = zero_bytes(w);
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr(byte, &hay[32..]).map(|p| p + 32)
}

/// The first `a` or `b` in `hay`, as [`find`] does for one byte (the first 32 bytes eight at
/// a time, the rest with `memchr2`).
#[inline]
fn find_either(hay: &[u8], a: u8, b: u8) -> Option<usize> {
    let (pa, pb) = (REP * u64::from(a), REP * u64::from(b));
    let mut i = 0;
    while i < 32 {
        let Some(word) = hay.get(i..i + 8) else {
            return hay[i..]
                .iter()
                .position(|&c| c == a || c == b)
                .map(|p| i + p);
        };
        let w = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
        // Each mask's lowest flag is exact (a false flag only ever sits above a true one),
        // so the lowest flag of both is the first match.
        let m = zero_bytes(w ^ pa) | zero_bytes(w ^ pb);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr::memchr2(a, b, &hay[32..]).map(|p| p + 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status line, the fields as text, and the head's length.
    type Split = (StatusLine, Vec<(String, String)>, usize);

    fn split(raw: &[u8]) -> Result<Option<Split>, SplitError> {
        let mut fields = Vec::new();
        Ok(response(raw, 100, &mut fields)?.map(|(s, end)| {
            let text = |r: &Range<usize>| String::from_utf8_lossy(&raw[r.clone()]).into_owned();
            let f = fields
                .iter()
                .map(|f| (text(&f.name), text(&f.value)))
                .collect();
            (s, f, end)
        }))
    }

    #[test]
    fn splits_status_line_and_fields() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: x\r\nX-A:\t a b \t\r\nEmpty:\r\n\r\nbody";
        let (s, f, end) = split(raw).expect("valid").expect("complete");
        assert_eq!(
            s,
            StatusLine {
                minor: 1,
                code: 200
            }
        );
        let f: Vec<(&str, &str)> = f.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(f, [("Server", "x"), ("X-A", "a b"), ("Empty", "")]);
        assert_eq!(&raw[end..], b"body");
        // LF endings, no reason phrase, HTTP/1.0, leading empty lines.
        let (s, f, end) = split(b"\r\n\nHTTP/1.0 404\nA: 1\n\nrest")
            .expect("ok")
            .expect("complete");
        assert_eq!(
            s,
            StatusLine {
                minor: 0,
                code: 404
            }
        );
        assert_eq!(f.len(), 1);
        assert_eq!(end, 22);
    }

    #[test]
    fn finds_the_first_byte_at_any_offset() {
        // Every position of the first match, in and past the 8-byte words and the 32 bytes
        // searched that way, with bytes around it one above and below (the subtraction's
        // borrow) and high bits set.
        for len in 0..80 {
            for at in 0..=len {
                let mut hay: Vec<u8> = (0..len).map(|i| [b';', b'9', 0x80, 0xba][i % 4]).collect();
                if at < len {
                    hay[at] = b':';
                    hay.extend_from_slice(b"::");
                }
                let want = hay.iter().position(|&b| b == b':');
                assert_eq!(find(&hay, b':'), want, "len {len} at {at}");
            }
        }
        assert_eq!(find(b"no colon here, none", b':'), None);
        assert_eq!(find(b"a\nb", b'\n'), Some(1));
    }

    #[test]
    fn finds_either_byte_at_any_offset() {
        for len in 0..80 {
            for at in 0..=len {
                for (first, later) in [(b':', b'\n'), (b'\n', b':')] {
                    let mut hay: Vec<u8> =
                        (0..len).map(|i| [b';', b'9', 0x80, 0x0b][i % 4]).collect();
                    if at < len {
                        hay[at] = first;
                        hay.extend_from_slice(&[later, first]);
                    }
                    let want = hay.iter().position(|&b| b == b':' || b == b'\n');
                    assert_eq!(find_either(&hay, b':', b'\n'), want, "len {len} at {at}");
                }
            }
        }
    }

    /// Where the head ends and its fields.
    type Split2 = (usize, Vec<Field>);

    /// The field split as first written: the line's LF, then the first colon within it.
    fn split_fields_plainly(buf: &[u8], mut pos: usize) -> Result<Option<Split2>, SplitError> {
        let mut fields = Vec::new();
        loop {
            let Some(off) = buf[pos..].iter().position(|&b| b == b'\n') else {
                return Ok(None);
            };
            let line = without_cr(&buf[pos..pos + off]);
            if line.is_empty() {
                return Ok(Some((pos + off + 1, fields)));
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(SplitError::Malformed);
            };
            let ows = |b: &u8| matches!(b, b' ' | b'\t');
            let rest = &line[colon + 1..];
            let start = colon + 1 + rest.iter().take_while(|b| ows(b)).count();
            let end = start.max(line.len() - rest.iter().rev().take_while(|b| ows(b)).count());
            fields.push(Field {
                name: pos..pos + colon,
                value: pos + start..pos + end,
            });
            pos += off + 1;
        }
    }

    #[test]
    fn fields_split_as_first_written() {
        // Every field block of up to seven bytes from the bytes that matter to the split.
        const BYTES: [u8; 6] = [b'a', b':', b'\r', b'\n', b' ', b'\t'];
        let mut block = Vec::new();
        for len in 0..=7u32 {
            for mut n in 0..BYTES.len().pow(len) {
                block.clear();
                block.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
                for _ in 0..len {
                    block.push(BYTES[n % BYTES.len()]);
                    n /= BYTES.len();
                }
                let start = 17;
                let mut fields = Vec::new();
                let ours = split_fields(&block, start, 100, &mut fields)
                    .map(|end| end.map(|e| (e, fields.clone())));
                let plain = split_fields_plainly(&block, start);
                assert_eq!(ours, plain, "{:?}", String::from_utf8_lossy(&block));
            }
        }
    }

    #[test]
    fn incomplete_heads_wait() {
        for raw in [
            &b""[..],
            b"HTTP/1.1 200 OK",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r",
        ] {
            assert_eq!(split(raw), Ok(None), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn refuses_bad_status_lines_and_lines_without_a_colon() {
        for raw in [
            &b"HTTP/1.2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1  200 OK\r\n\r\n",
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 200OK\r\n\r\n",
            b"HTTP/1.1 200 O\x01K\r\n\r\n",
            b"HTTP/1.1 200 O\rK\r\n\r\n",
            b"http/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA\r\n\r\n",
        ] {
            assert_eq!(
                split(raw),
                Err(SplitError::Malformed),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let mut fields = Vec::new();
        let many = b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            response(many, 2, &mut fields),
            Err(SplitError::TooManyFields)
        );
        assert!(response(many, 3, &mut fields).expect("3 fit").is_some());
    }
}
