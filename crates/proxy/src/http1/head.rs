//! Message heads: parsing (lines split by `split`, names and values checked once by `http`'s
//! own types) into `http` types without copying header values (they are slices of the
//! frozen head), and framing decisions. Encoding is in `encode`.
//!
//! Request framing is decided here and is never ambiguous: `Transfer-Encoding` must be
//! exactly `chunked` (one field, any case, OWS allowed), is refused on HTTP/1.0 and together
//! with `Content-Length` (S1/S2/S3/S10); `Content-Length` must be one field of plain digits
//! (S4). Whitespace before a colon, obs-fold, bare CR, and malformed request lines are
//! refused while parsing, as strict httparse refused them (S5/S6/S7/S9; the differential
//! tests below hold the two against each other).

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use memchr::memchr;

use super::raw::{self, RawFields};
use super::{names, split};

use gatehouse_core::GatewayError;

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    Length(u64),
    Chunked,
}

pub struct RequestHead {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` (removed from the headers: the gateway answers it).
    pub expect_continue: bool,
    /// An `Upgrade` header is present (the pipeline decides whether it is honoured).
    pub upgrade: bool,
}

/// Why a request head was refused: the status to answer with, after which the connection
/// closes. `parts` is set when the head parsed but its framing was refused, so the refusal
/// can be logged with the method and path.
pub struct HeadError {
    pub error: GatewayError,
    pub parts: Option<Box<http::request::Parts>>,
}

impl HeadError {
    fn new(error: GatewayError) -> HeadError {
        HeadError { error, parts: None }
    }
}

/// Where the head ends (the index just past the empty line), searching from `from`.
/// Accepts CRLF and bare-LF line endings (a bare-LF request is forwarded with CRLF).
pub fn find_head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from.saturating_sub(2);
    while let Some(off) = split::find(&buf[i..], b'\n') {
        let lf = i + off;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') => match buf.get(lf + 2) {
                Some(b'\n') => return Some(lf + 3),
                Some(_) => {}
                None => return None,
            },
            Some(_) => {}
            None => return None,
        }
        i = lf + 1;
    }
    None
}

/// The largest head accepted: the request line plus the header block.
pub fn max_head(max_request_line: usize, max_header_bytes: usize) -> usize {
    max_request_line + max_header_bytes + 4
}

/// A head that has not ended within the limits: 414 when even the request line has no end
/// in sight, else 431.
pub fn head_too_large(buf: &[u8], max_request_line: usize) -> GatewayError {
    let line_end = memchr(b'\n', &buf[..buf.len().min(max_request_line + 2)]);
    if line_end.is_none() {
        GatewayError::UriTooLong
    } else {
        GatewayError::HeaderFieldsTooLarge
    }
}

/// The limits a request head is held to (`limits:` in the config).
#[derive(Clone, Copy, Debug)]
pub struct HeadLimits {
    pub max_request_line: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        let l = gatehouse_core::snapshot::Limits::default();
        HeadLimits {
            max_request_line: l.max_request_line,
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers,
        }
    }
}

/// Parses the complete head in `buf[..end]` (from [`find_head_end`]) and removes it from
/// `buf`. `Ok(None)`: the bytes held only empty lines, which are skipped (RFC 9112 §2.2).
/// The head is frozen first and parsed in place: header values are slices of it.
pub fn parse_request(
    buf: &mut BytesMut,
    end: usize,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    let head = buf.split_to(end).freeze();
    with_fields(|fields| {
        let split = split::request(&head, field_slots(limits), fields).map_err(split_error)?;
        match split {
            Some((line, n)) if n == end => request_head(&head, line, fields, limits).map(Some),
            // Only line endings so far: skipped; wait for a request line.
            None if head.iter().all(|b| *b == b'\r' || *b == b'\n') => Ok(None),
            _ => Err(HeadError::new(GatewayError::BadRequest(
                "malformed request head",
            ))),
        }
    })
}

/// Parses the request head at the front of `buf` in one pass when it is complete within the
/// first `max` bytes, removing it: the search for its end and the split are the same scan
/// (with [`find_head_end`] first, each line was searched for twice, ~200 instructions).
/// `Ok(None)`: no complete head there yet; the caller searches for the end as more bytes
/// arrive ([`find_head_end`], then [`parse_request`], which also applies the size limits).
pub fn parse_request_front(
    buf: &mut BytesMut,
    max: usize,
    limits: &HeadLimits,
) -> Result<Option<RequestHead>, HeadError> {
    with_fields(|fields| {
        let window = &buf[..buf.len().min(max)];
        let split = split::request(window, field_slots(limits), fields).map_err(split_error)?;
        let Some((line, end)) = split else {
            return Ok(None);
        };
        let head = buf.split_to(end).freeze();
        request_head(&head, line, fields, limits).map(Some)
    })
}

/// One more than the limit, so that exceeding it is told apart (431, by `request_head` and
/// `normalize::check_head`) from a malformed head.
fn field_slots(limits: &HeadLimits) -> usize {
    limits.max_headers + 1
}

fn split_error(e: split::SplitError) -> HeadError {
    HeadError::new(match e {
        split::SplitError::TooManyFields => GatewayError::HeaderFieldsTooLarge,
        split::SplitError::Version => GatewayError::BadRequest("unsupported HTTP version"),
        split::SplitError::Malformed => GatewayError::BadRequest("malformed request head"),
    })
}

thread_local! {
    /// The field spans of the head being parsed on this thread (request or response), kept
    /// from one head to the next: no allocation once grown. Not in the connections: an
    /// upstream connection is moved several times per request, and 24 more bytes made each
    /// move a `memcpy` call.
    static FIELDS: std::cell::RefCell<Vec<split::Field>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spans kept for a head with more fields than this are let go after it.
const KEEP_FIELDS: usize = 64;

fn with_fields<R>(f: impl FnOnce(&mut Vec<split::Field>) -> R) -> R {
    FIELDS.with_borrow_mut(|fields| {
        let r = f(fields);
        if fields.capacity() > KEEP_FIELDS {
            *fields = Vec::new();
        }
        r
    })
}

/// The request head from a split one: the limits applied, the framing decided, the fields
/// in a (recycled) header map.
fn request_head(
    head: &Bytes,
    line: split::RequestLine,
    fields: &[split::Field],
    limits: &HeadLimits,
) -> Result<RequestHead, HeadError> {
    // The header limits (`normalize::check_head` applies them to HTTP/2 requests): one field
    // line may be no longer than the request-line limit (nginx's large_client_header_buffers:
    // one buffer size bounds both), and the block as a whole is bounded.
    let mut header_bytes = 0usize;
    for f in fields {
        let line = f.name.len() + f.value.len() + 4;
        if line > limits.max_request_line {
            return Err(HeadError::new(GatewayError::HeaderFieldsTooLarge));
        }
        header_bytes += line;
    }
    if header_bytes > limits.max_header_bytes {
        return Err(HeadError::new(GatewayError::HeaderFieldsTooLarge));
    }
    let bad = |why: &'static str| HeadError::new(GatewayError::BadRequest(why));
    let method = Method::from_bytes(&head[line.method]).map_err(|_| bad("invalid method"))?;
    let uri = Uri::from_maybe_shared(head.slice(line.target))
        .map_err(|_| bad("invalid request target"))?;
    let version = if line.minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // A little room for what the pipeline may add (identity headers); the forwarding fields
    // are kept beside the map.
    let mut headers = names::map(fields.len() + 2);
    let mut framing = Framing::None;
    let mut te_seen = false;
    let mut cl_seen = false;
    let mut bad_framing: Option<&'static str> = None;
    let mut keep_alive = version == Version::HTTP_11;
    let mut expect_continue = false;
    let mut upgrade = false;
    for f in fields {
        let name = names::parse(&head[f.name.clone()]).map_err(|_| bad("invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(f.value.clone()))
            .map_err(|_| bad("invalid header value"))?;
        if name == header::TRANSFER_ENCODING {
            if te_seen
                || !value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"chunked")
            {
                bad_framing = Some("unsupported transfer-encoding");
            }
            te_seen = true;
            framing = Framing::Chunked;
        } else if name == header::CONTENT_LENGTH {
            match parse_content_length(value.as_bytes()) {
                Some(n) if !cl_seen => framing = Framing::Length(n),
                Some(_) => bad_framing = Some("repeated content-length"),
                None => bad_framing = Some("invalid content-length"),
            }
            cl_seen = true;
        } else if name == header::CONNECTION {
            // `close` / `keep-alive` only: understood here, and hop-by-hop, so the pipeline
            // would only remove it again. A field naming other headers stays for it (X1).
            if !connection_tokens(value.as_bytes(), version, &mut keep_alive) {
                continue;
            }
        } else if name == KEEP_ALIVE {
            continue;
        } else if name == header::EXPECT {
            if version == Version::HTTP_11
                && value
                    .as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"100-continue")
            {
                expect_continue = true;
                continue;
            }
        } else if name == header::UPGRADE {
            upgrade = true;
        }
        headers.append(name, value);
    }
    if te_seen && cl_seen {
        bad_framing = Some("both content-length and transfer-encoding");
    } else if te_seen && version == Version::HTTP_10 {
        bad_framing = Some("transfer-encoding on HTTP/1.0");
    }
    if framing == Framing::Length(0) {
        framing = Framing::None;
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    if let Some(why) = bad_framing {
        return Err(HeadError {
            error: GatewayError::BadRequest(why),
            parts: Some(Box::new(parts)),
        });
    }
    if framing == Framing::None {
        expect_continue = false;
    }
    Ok(RequestHead {
        parts,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

/// Reads a `Connection` field: `close` clears `keep_alive`, `keep-alive` sets it on
/// HTTP/1.0 (1.1 keeps alive by default). `true` when it also names other fields (which
/// are hop-by-hop for this message and must be removed by the pipeline, X1).
fn connection_tokens(value: &[u8], version: Version, keep_alive: &mut bool) -> bool {
    // The usual field is one of the two words alone.
    if value.eq_ignore_ascii_case(b"keep-alive") {
        *keep_alive |= version == Version::HTTP_10;
        return false;
    }
    if value.eq_ignore_ascii_case(b"close") {
        *keep_alive = false;
        return false;
    }
    let mut nominates = false;
    for token in value.split(|b| *b == b',') {
        let t = token.trim_ascii();
        if t.eq_ignore_ascii_case(b"close") {
            *keep_alive = false;
        } else if t.eq_ignore_ascii_case(b"keep-alive") {
            if version == Version::HTTP_10 {
                *keep_alive = true;
            }
        } else {
            nominates = true;
        }
    }
    nominates
}

/// `Content-Length`: 1 to 19 ASCII digits, nothing else (no sign, list, space or hex; S4).
pub fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body by definition (1xx, 204, 304, a response to HEAD).
    None,
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Eof,
}

pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: ResponseFraming,
    /// The connection may carry another request after this response's body.
    pub reusable: bool,
}

/// Why an upstream response head was refused (the client gets 502; the connection is
/// closed, never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Malformed,
    TooLarge,
    /// Conflicting or invalid `Content-Length` / `Transfer-Encoding` (S13).
    Framing,
}

/// Reads response heads off one upstream connection: a head that arrives in pieces is split
/// again only once its end may be there (a resumed end search per read, not a new split of
/// everything read so far).
#[derive(Default)]
pub struct ResponseReader {
    /// The front of the buffer known to hold no complete head.
    scanned: usize,
    /// The last head's fields when they are passed on raw.
    raw: RawFields,
}

impl ResponseReader {
    /// Parses the upstream response head at the front of `buf`, removing it. `Ok(None)`: not
    /// complete yet. 1xx responses other than 101 are returned like any other; the caller
    /// skips them. More than `max_headers` fields, or a head longer than `max_head`, is
    /// `TooLarge`.
    pub fn parse(
        &mut self,
        buf: &mut BytesMut,
        max_head: usize,
        max_headers: usize,
        head_request: bool,
    ) -> Result<Option<ResponseHead>, ResponseError> {
        self.read(buf, max_head, max_headers, head_request, true)
    }

    /// [`ResponseReader::parse`]; with `pass_raw` false every head's fields go into its map
    /// (the tests hold the two forms against each other).
    fn read(
        &mut self,
        buf: &mut BytesMut,
        max_head: usize,
        max_headers: usize,
        head_request: bool,
        pass_raw: bool,
    ) -> Result<Option<ResponseHead>, ResponseError> {
        if buf.is_empty() || (self.scanned > 0 && find_head_end(buf, self.scanned).is_none()) {
            return self.incomplete(buf, max_head);
        }
        with_fields(|fields| {
            let window = &buf[..buf.len().min(max_head)];
            let split = split::response(window, max_headers, fields).map_err(|e| match e {
                split::SplitError::TooManyFields => ResponseError::TooLarge,
                split::SplitError::Malformed | split::SplitError::Version => {
                    ResponseError::Malformed
                }
            })?;
            let Some((status_line, end)) = split else {
                return self.incomplete(buf, max_head);
            };
            self.scanned = 0;
            // Frozen first: header values are slices of it.
            let head = buf.split_to(end).freeze();
            let raw = pass_raw.then_some(&mut self.raw);
            response_head(&head, status_line, fields, head_request, raw).map(Some)
        })
    }

    /// The fields of the head last returned when they are passed on raw (its header map is
    /// then empty); empty otherwise.
    pub fn raw(&self) -> &RawFields {
        &self.raw
    }

    pub fn raw_mut(&mut self) -> &mut RawFields {
        &mut self.raw
    }

    fn incomplete(
        &mut self,
        buf: &BytesMut,
        max_head: usize,
    ) -> Result<Option<ResponseHead>, ResponseError> {
        if buf.len() > max_head {
            return Err(ResponseError::TooLarge);
        }
        self.scanned = buf.len();
        Ok(None)
    }
}

/// The response head from a split one: the framing decided, the fields a proxy passes on
/// kept raw in `raw` when they qualify (see `raw`), else in a (recycled) header map.
fn response_head(
    head: &Bytes,
    status_line: split::StatusLine,
    fields: &[split::Field],
    head_request: bool,
    mut raw: Option<&mut RawFields>,
) -> Result<ResponseHead, ResponseError> {
    let code = status_line.code;
    let version = if status_line.minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let status = StatusCode::from_u16(code).map_err(|_| ResponseError::Malformed)?;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;

    let mut framing = FramingFields::new(version, bodiless);
    let passed_raw = match raw.as_deref_mut() {
        Some(raw) if !bodiless => raw_fields(head, fields, &mut framing, raw)?,
        _ => false,
    };
    let headers = if passed_raw {
        HeaderMap::new()
    } else {
        if let Some(raw) = raw {
            raw.clear();
        }
        framing = FramingFields::new(version, bodiless);
        let mut headers = names::map(fields.len() + 4);
        for f in fields {
            let name = names::parse(&head[f.name.clone()]).map_err(|_| ResponseError::Malformed)?;
            let value = HeaderValue::from_maybe_shared(head.slice(f.value.clone()))
                .map_err(|_| ResponseError::Malformed)?;
            if framing.field(&name, value.as_bytes()) != Role::Drop {
                headers.append(name, value);
            }
        }
        headers
    };
    let (framing, reusable) = framing.decide(status)?;
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(ResponseHead {
        parts,
        framing,
        reusable,
    })
}

/// The fields into `raw` when they qualify: `Ok(false)` at the first one that does not (the
/// caller starts again with a map). Names and values are checked here as `HeaderName` and
/// `HeaderValue` would check them, and the framing fields are read into `framing` as the map
/// pass reads them.
fn raw_fields(
    head: &Bytes,
    fields: &[split::Field],
    framing: &mut FramingFields,
    raw: &mut RawFields,
) -> Result<bool, ResponseError> {
    raw.start(head);
    // Where the empty line starts: the end of the last field's line.
    let end = head.len();
    let fields_end = if end >= 2 && head[end - 2] == b'\r' {
        end - 2
    } else {
        end - 1
    };
    for (i, f) in fields.iter().enumerate() {
        let line_end = fields.get(i + 1).map_or(fields_end, |n| n.name.start);
        let name = &head[f.name.clone()];
        let value = &head[f.value.clone()];
        if !raw::valid_value(value) {
            return Err(ResponseError::Malformed);
        }
        match names::common(name) {
            Some(n) => match framing.field(&n, value) {
                Role::Drop => continue,
                Role::Nominates => return Ok(false),
                Role::Pass => {
                    if n == header::DATE {
                        raw.set_has_date();
                    }
                }
            },
            None => {
                if !raw::valid_name(name) {
                    return Err(ResponseError::Malformed);
                }
                if framing.uncommon(name) == Role::Drop {
                    continue;
                }
            }
        }
        // What the pipeline would remove (the other hop-by-hop fields) or replace (the
        // gateway's own fields) needs the map; the lists are theirs.
        if crate::policy::headers::is_hop_by_hop_bytes(name)
            || crate::body::GatewayFields::is_gateway_name(name)
        {
            return Ok(false);
        }
        // A line ending in a bare LF is written with CRLF by the map's encoder.
        if head[line_end - 2] != b'\r' {
            return Ok(false);
        }
        raw.keep(f.name.start..line_end, f.name.clone(), f.value.clone());
    }
    Ok(true)
}

/// What a field is to the framing: removed (the codec writes framing again), passed on, or a
/// `Connection` that names other fields (kept for the pipeline to remove them, X1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Drop,
    Pass,
    Nominates,
}

/// The framing fields of a response head, read field by field.
struct FramingFields {
    version: Version,
    bodiless: bool,
    length: Option<u64>,
    cl_seen: bool,
    te: Option<bool>,
    reusable: bool,
    error: bool,
}

impl FramingFields {
    fn new(version: Version, bodiless: bool) -> Self {
        FramingFields {
            version,
            bodiless,
            length: None,
            cl_seen: false,
            te: None,
            reusable: version == Version::HTTP_11,
            error: false,
        }
    }

    fn field(&mut self, name: &HeaderName, value: &[u8]) -> Role {
        // The framing fields are the codec's: a body's length travels as the body's exact
        // size (written again by whichever encoder sends it on), `chunked` as its absence.
        // Only a bodiless response keeps its `Content-Length` (a HEAD answer's is the GET's).
        if name == header::CONTENT_LENGTH {
            match parse_content_length(value) {
                Some(n) if !self.cl_seen => self.length = Some(n),
                _ => self.error = true,
            }
            self.cl_seen = true;
            if self.bodiless {
                Role::Pass
            } else {
                Role::Drop
            }
        } else if name == header::TRANSFER_ENCODING {
            let chunked = value.trim_ascii().eq_ignore_ascii_case(b"chunked");
            self.te = Some(self.te.is_none() && chunked);
            Role::Drop
        } else if name == header::CONNECTION {
            if connection_tokens(value, self.version, &mut self.reusable) {
                Role::Nominates
            } else {
                Role::Drop
            }
        } else if name == KEEP_ALIVE {
            Role::Drop
        } else {
            Role::Pass
        }
    }

    /// [`FramingFields::field`] for a name `names::common` does not know (kept as bytes: a
    /// `HeaderName` made for it would be a custom one, with its allocation): of those only
    /// `Keep-Alive` is dropped, the rest pass.
    fn uncommon(&self, name: &[u8]) -> Role {
        if name.eq_ignore_ascii_case(KEEP_ALIVE.as_str().as_bytes()) {
            Role::Drop
        } else {
            Role::Pass
        }
    }

    /// The framing and whether the connection may be reused after the body.
    fn decide(self, status: StatusCode) -> Result<(ResponseFraming, bool), ResponseError> {
        let mut reusable = self.reusable;
        if self.error || (self.cl_seen && self.te.is_some()) {
            return Err(ResponseError::Framing);
        }
        let framing = if self.bodiless {
            // A body-framing header on a bodiless response says the upstream may send bytes
            // that belong to no response: never reuse that connection (S13).
            if (status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED)
                && (self.te.is_some() || self.length.is_some_and(|n| n > 0))
            {
                reusable = false;
            }
            ResponseFraming::None
        } else {
            match (self.te, self.length) {
                (Some(true), _) => ResponseFraming::Chunked,
                // A coding other than exactly `chunked` (gzip, chunked; two TE fields):
                // refused, the gateway would otherwise pass on a body it cannot frame.
                (Some(false), _) => return Err(ResponseError::Framing),
                (None, Some(n)) => ResponseFraming::Length(n),
                (None, None) => {
                    reusable = false;
                    ResponseFraming::Eof
                }
            }
        };
        Ok((framing, reusable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &[u8]) -> Result<RequestHead, GatewayError> {
        let mut buf = BytesMut::from(raw);
        let end = find_head_end(&buf, 0).expect("complete head");
        match parse_request(&mut buf, end, &HeadLimits::default()) {
            Ok(Some(h)) => Ok(h),
            Ok(None) => panic!("empty"),
            Err(e) => Err(e.error),
        }
    }

    #[test]
    fn head_end_with_crlf_and_bare_lf() {
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody", 0),
            Some(27)
        );
        assert_eq!(
            find_head_end(b"GET / HTTP/1.1\nHost: a\n\nbody", 0),
            Some(24)
        );
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0), None);
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r", 0), None);
        // Resuming the search near where the last one stopped finds a split terminator.
        let b = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(find_head_end(b, 25), Some(27));
        // Mixed endings: whichever empty line comes first ends the head.
        assert_eq!(find_head_end(b"A\r\nB\n\r\nC\r\n\r\n", 0), Some(7));
        assert_eq!(find_head_end(b"A\nB\r\n\nC\n\r\n", 0), Some(6));
        // Against the line-by-line definition, on soups of the bytes that matter.
        let reference = |buf: &[u8]| {
            (0..buf.len()).find_map(|i| match (buf[i], buf.get(i + 1), buf.get(i + 2)) {
                (b'\n', Some(b'\n'), _) => Some(i + 2),
                (b'\n', Some(b'\r'), Some(b'\n')) => Some(i + 3),
                _ => None,
            })
        };
        for _ in 0..20_000 {
            let len = fastrand::usize(0..24);
            let soup: Vec<u8> = (0..len)
                .map(|_| [b'a', b'\r', b'\n'][fastrand::usize(0..3)])
                .collect();
            assert_eq!(find_head_end(&soup, 0), reference(&soup), "{soup:?}");
            let from = fastrand::usize(0..=len);
            // Resuming is only ever done past bytes that held no end.
            if reference(&soup[..from]).is_none() {
                assert_eq!(
                    find_head_end(&soup, from),
                    reference(&soup),
                    "{soup:?} from {from}"
                );
            }
        }
    }

    #[test]
    fn framing_is_decided_strictly() {
        let r = req(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").expect("ok");
        assert_eq!(r.framing, Framing::Length(5));
        let r =
            req(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED \r\n\r\n").expect("ok");
        assert_eq!(r.framing, Framing::Chunked);
        for bad in [
            &b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
        ] {
            assert!(
                matches!(req(bad), Err(GatewayError::BadRequest(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(parse_content_length(b"18446744073709551615"), None);
        assert_eq!(
            parse_content_length(b"1844674407370955161"),
            Some(1_844_674_407_370_955_161)
        );
    }

    #[test]
    fn keep_alive_expect_and_upgrade() {
        let r = req(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n").expect("ok");
        assert!(!r.keep_alive);
        let r = req(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("ok");
        assert!(r.keep_alive);
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n").expect("ok");
        assert!(!r.keep_alive);
        let r =
            req(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect("ok");
        assert!(r.expect_continue);
        assert!(!r.parts.headers.contains_key(header::EXPECT));
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").expect("ok");
        assert!(r.upgrade);
        // `close` / `keep-alive` are consumed here; a Connection naming headers stays (X1).
        let r =
            req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\r\n")
                .expect("ok");
        assert!(r.keep_alive);
        assert!(!r.parts.headers.contains_key(header::CONNECTION));
        assert!(!r.parts.headers.contains_key("keep-alive"));
        let r = req(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-a\r\n\r\n").expect("ok");
        assert_eq!(r.parts.headers[header::CONNECTION], "close, x-a");
    }

    /// The one-pass parse of a head at the front of the buffer: a complete head is taken and
    /// the rest stays; anything else leaves the buffer as it was for the end search.
    #[test]
    fn request_heads_at_the_front_in_one_pass() {
        let limits = HeadLimits::default();
        let mut buf = BytesMut::from(&b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b"[..]);
        let h = parse_request_front(&mut buf, 1024, &limits)
            .map_err(|e| e.error)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.parts.uri.path(), "/a");
        assert_eq!(h.parts.headers["host"], "h");
        assert_eq!(&buf[..], b"GET /b");
        for partial in [
            &b"GET /a HTTP/1.1\r\nHost: h\r\n"[..],
            b"\r\n\r\n",
            b"",
            // Complete, but longer than the window: the end search decides (431/414).
            b"GET /a HTTP/1.1\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(partial);
            let r = parse_request_front(&mut buf, 40, &limits).map_err(|e| e.error);
            assert!(
                matches!(r, Ok(None)),
                "{:?}",
                String::from_utf8_lossy(partial)
            );
            assert_eq!(&buf[..], partial);
        }
        let mut buf = BytesMut::from(&b"GET / HTTP/2.0\r\n\r\n"[..]);
        assert!(parse_request_front(&mut buf, 1024, &limits).is_err());
    }

    #[test]
    fn header_values_are_slices_of_the_head() {
        let mut buf =
            BytesMut::from(&b"GET /p?q HTTP/1.1\r\nHost: example\r\nX-A: 1\r\n\r\nNEXT"[..]);
        let end = find_head_end(&buf, 0).expect("end");
        let h = parse_request(&mut buf, end, &HeadLimits::default())
            .ok()
            .flatten()
            .expect("head");
        assert_eq!(h.parts.uri.path(), "/p");
        assert_eq!(h.parts.uri.query(), Some("q"));
        assert_eq!(h.parts.headers["host"], "example");
        assert_eq!(&buf[..], b"NEXT");
    }

    /// The response head with all its fields in the map (those passed on raw moved there).
    fn resp(raw: &[u8], head: bool) -> Result<ResponseHead, ResponseError> {
        let mut buf = BytesMut::from(raw);
        let mut reader = ResponseReader::default();
        let mut h = reader
            .parse(&mut buf, 64 * 1024, 100, head)?
            .expect("complete");
        reader.raw_mut().move_into(&mut h.parts.headers);
        Ok(h)
    }

    /// A response head that arrives in pieces: complete once its last byte is there (also
    /// when the empty line is split across reads), the body's first bytes left in the buffer,
    /// and one longer than the limit refused even though it never ends.
    #[test]
    fn response_heads_arriving_in_pieces() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Length: 4\r\n\r\nbody";
        let head_len = raw.len() - 4;
        for step in [1, 2, 3, 7] {
            let mut reader = ResponseReader::default();
            let mut buf = BytesMut::new();
            let mut got = None;
            for chunk in raw.chunks(step) {
                buf.extend_from_slice(chunk);
                if let Some(h) = reader.parse(&mut buf, 1024, 10, false).expect("valid") {
                    got = Some(h);
                    break;
                }
            }
            let mut h = got.expect("complete");
            assert_eq!(h.framing, ResponseFraming::Length(4), "step {step}");
            assert_eq!(reader.raw().len(), 1, "passed on raw");
            reader.raw_mut().move_into(&mut h.parts.headers);
            assert_eq!(h.parts.headers["server"], "s");
            let rest = &raw[head_len..];
            assert!(
                rest.starts_with(&buf[..]),
                "step {step}: left {:?}",
                &buf[..]
            );
        }
        let mut reader = ResponseReader::default();
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
        assert!(reader
            .parse(&mut buf, 64, 10, false)
            .expect("so far")
            .is_none());
        buf.extend_from_slice(format!("X-Long: {}", "v".repeat(60)).as_bytes());
        assert_eq!(
            reader.parse(&mut buf, 64, 10, false).err(),
            Some(ResponseError::TooLarge)
        );
    }

    /// The per-thread field spans grow with a large head and are let go after it.
    #[test]
    fn field_spans_of_a_large_head_are_let_go() {
        let mut raw = String::from("HTTP/1.1 204 No Content\r\n");
        for i in 0..150 {
            raw.push_str(&format!("X-F{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        let mut buf = BytesMut::from(raw.as_bytes());
        let h = ResponseReader::default()
            .parse(&mut buf, 64 * 1024, 200, false)
            .expect("valid")
            .expect("complete");
        assert_eq!(h.parts.headers.len(), 150);
        assert!(FIELDS.with_borrow(|f| f.capacity()) <= KEEP_FIELDS);
        let _ = resp(b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n", false).expect("small");
        let kept = FIELDS.with_borrow(|f| f.capacity());
        assert!((2..=KEEP_FIELDS).contains(&kept), "{kept}");
    }

    /// Heads with many fields, up to the limit and past it, for responses and requests
    /// alike (httparse had a fixed number of slots on the stack; the spans grow as needed).
    #[test]
    fn field_counts_up_to_the_limit_and_past_it() {
        let with_fields = |start: &str, n: usize| {
            let mut raw = start.to_string();
            for i in 0..n {
                raw.push_str(&format!("X-F{i}: v\r\n"));
            }
            raw.push_str("\r\n");
            BytesMut::from(raw.as_bytes())
        };
        let mut buf = with_fields("HTTP/1.1 204 No Content\r\n", 180);
        let r = ResponseReader::default()
            .parse(&mut buf, 64 * 1024, 200, false)
            .expect("180 fields")
            .expect("complete");
        assert_eq!(r.parts.headers.len(), 180);
        let mut buf = with_fields("HTTP/1.1 204 No Content\r\n", 250);
        assert_eq!(
            ResponseReader::default()
                .parse(&mut buf, 64 * 1024, 200, false)
                .err(),
            Some(ResponseError::TooLarge)
        );

        let limits = HeadLimits {
            max_request_line: 8192,
            max_header_bytes: 64 * 1024,
            max_headers: 300,
        };
        let mut buf = with_fields("GET / HTTP/1.1\r\nHost: a\r\n", 250);
        let end = buf.len();
        let h = parse_request(&mut buf, end, &limits)
            .map_err(|e| e.error)
            .expect("250 fields")
            .expect("complete");
        assert_eq!(h.parts.headers.len(), 251);
        let mut buf = with_fields("GET / HTTP/1.1\r\nHost: a\r\n", 350);
        let end = buf.len();
        assert!(parse_request(&mut buf, end, &limits).is_err());
    }

    /// Which responses keep their fields raw (the usual one does), which go to a map, and
    /// what the client is sent for a raw one: the upstream's lines as they were (case and
    /// order kept), the framing written again, no second `Date`.
    #[test]
    fn fields_passed_on_raw_and_when_not() {
        let read = |raw: &[u8], head: bool| {
            let mut buf = BytesMut::from(raw);
            let mut reader = ResponseReader::default();
            let h = reader
                .parse(&mut buf, 64 * 1024, 100, head)
                .expect("valid")
                .expect("complete");
            (h, reader)
        };
        let nginx =
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
            Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\
            X-After:  a b \r\n\r\nhello";
        let (h, reader) = read(nginx, false);
        assert!(h.parts.headers.is_empty());
        assert_eq!(reader.raw().len(), 4);
        assert!(reader.raw().has_date());
        assert_eq!(h.framing, ResponseFraming::Length(5));
        assert!(h.reusable);
        let mut out = BytesMut::new();
        let fields = crate::body::GatewayFields::new(HeaderValue::from_static("id1"), None, None);
        let asked = super::super::encode::encode_response(
            &mut out,
            h.parts.status,
            super::super::encode::ResponseFields {
                raw: Some(reader.raw()),
                map: &h.parts.headers,
                gateway: &fields,
            },
            super::super::encode::BodyFraming::Length(5),
            None,
            None,
        );
        assert!(!asked);
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 00:00:00 GMT\r\n\
               Content-Type: text/plain\r\nX-After:  a b \r\nx-request-id: id1\r\n\
               content-length: 5\r\n\r\n"[..]
        );

        // Each of these needs the map: a field the pipeline removes or replaces, a line
        // ending in a bare LF, a bodiless answer (its `Content-Length` stays).
        for (why, extra, head) in [
            ("upgrade", &b"Upgrade: h2c\r\n"[..], false),
            ("te", b"TE: trailers\r\n", false),
            ("proxy-connection", b"Proxy-Connection: x\r\n", false),
            (
                "nominated",
                b"Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\n",
                false,
            ),
            ("request id", b"X-Request-Id: upstream\r\n", false),
            ("rate limit", b"RateLimit: limit=1\r\n", false),
            ("bare LF", b"X-A: 1\n", false),
            ("HEAD", b"X-A: 1\r\n", true),
        ] {
            let raw = [
                &b"HTTP/1.1 200 OK\r\nServer: s\r\n"[..],
                extra,
                b"Content-Length: 0\r\n\r\n",
            ]
            .concat();
            let (h, reader) = read(&raw, head);
            assert!(reader.raw().is_empty(), "{why}");
            assert_eq!(h.parts.headers["server"], "s", "{why}");
        }
        // `Keep-Alive` is dropped in either form.
        let (h, reader) = read(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(h.parts.headers.is_empty() && reader.raw().is_empty());
        // A malformed value is refused in the raw pass as in the map one.
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nA: 1\r\nX: a\x01b\r\n\r\n", false).err(),
            Some(ResponseError::Malformed)
        );
    }

    #[test]
    fn response_framing() {
        let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).expect("ok");
        assert_eq!(r.framing, ResponseFraming::Length(3));
        assert!(r.reusable);
        // Framing fields are the codec's, not headers to pass on; a bodiless answer keeps
        // its length (a HEAD's is the GET's).
        assert!(r.parts.headers.is_empty());
        let r = resp(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .expect("ok");
        assert_eq!(r.framing, ResponseFraming::Chunked);
        assert!(r.parts.headers.is_empty());
        let r = resp(b"HTTP/1.1 200 OK\r\n\r\n", false).expect("ok");
        assert_eq!(r.framing, ResponseFraming::Eof);
        assert!(!r.reusable);
        let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).expect("ok");
        assert_eq!(r.framing, ResponseFraming::None);
        assert_eq!(r.parts.headers[header::CONTENT_LENGTH], "3");
        let r = resp(
            b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n",
            false,
        )
        .expect("ok");
        assert_eq!(r.framing, ResponseFraming::None);
        assert!(!r.reusable);
        let r = resp(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).expect("ok");
        assert!(!r.reusable);
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        ] {
            assert_eq!(
                resp(bad, false).err(),
                Some(ResponseError::Framing),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            resp(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n", false).err(),
            Some(ResponseError::Malformed)
        );
        // Names and values are checked once, by `HeaderName` / `HeaderValue` (the splitter
        // leaves them): whitespace before the colon, an empty name, CR or a non-token
        // byte in a name, control bytes in a value.
        for bad in [
            &b"HTTP/1.1 200 OK\r\nA : b\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nA\t: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n x: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA\rB: c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\rA: b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA(b): c\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent\rLength: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\x7f\r\n\r\n",
            b"HTTP/1.1 99 Low\r\n\r\n",
        ] {
            assert_eq!(
                resp(bad, false).err(),
                Some(ResponseError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let r = resp(
            b"HTTP/1.1 200 OK\r\nX-Odd!#$%&'*+.^_`|~: \x80\xff\r\n\r\n",
            false,
        )
        .expect("tchar, obs-text");
        assert_eq!(
            r.parts.headers["x-odd!#$%&'*+.^_`|~"].as_bytes(),
            b"\x80\xff"
        );
    }
}

#[cfg(test)]
mod prop {
    use super::*;
    use proptest::prelude::*;

    fn byte_soup() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"POST /a HTTP/1.0\r\n".to_vec()),
            Just(b"Host: a\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Connection: close, x\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b" ".to_vec()),
            Just(b":".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
        ];
        proptest::collection::vec(piece, 0..16).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever the bytes: no panic; a head that parses has exactly one framing, never
        /// a bare CR in any header value, and the head is removed from the buffer.
        #[test]
        fn request_heads_parse_or_fail_cleanly(input in byte_soup()) {
            let mut buf = BytesMut::from(&input[..]);
            if let Some(end) = find_head_end(&buf, 0) {
                let before = buf.len();
                if let Ok(Some(h)) = parse_request(&mut buf, end, &HeadLimits::default()) {
                    prop_assert_eq!(buf.len(), before - end);
                    let cl = h.parts.headers.get_all(header::CONTENT_LENGTH).iter().count();
                    let te = h.parts.headers.get_all(header::TRANSFER_ENCODING).iter().count();
                    prop_assert!(cl + te <= 1);
                    match h.framing {
                        Framing::Chunked => prop_assert_eq!(te, 1),
                        Framing::Length(_) => prop_assert_eq!(cl, 1),
                        Framing::None => prop_assert_eq!(te, 0),
                    }
                    for v in h.parts.headers.values() {
                        prop_assert!(!v.as_bytes().contains(&b'\r'));
                        prop_assert!(!v.as_bytes().contains(&b'\n'));
                    }
                }
            }
            let mut resp = BytesMut::from(&input[..]);
            let _ = ResponseReader::default().parse(&mut resp, 64 * 1024, 100, false);
        }

        /// The response splitter accepts exactly what httparse (strict, as before it) does:
        /// the same end, status, version and fields, with names and values checked by
        /// `names::parse` and `HeaderValue` as httparse checked them. It may refuse a malformed line before the head's end
        /// has arrived (httparse was only asked once it had).
        #[test]
        fn response_split_agrees_with_httparse(input in response_soup()) {
            let skip = leading_empty_lines(&input);
            let input = &input[skip..];
            let mut fields = Vec::new();
            let ours = split::response(input, 100, &mut fields);
            let values_ok = fields.iter().all(|f| {
                names::parse(&input[f.name.clone()]).is_ok()
                    && HeaderValue::from_bytes(&input[f.value.clone()]).is_ok()
            });
            match (httparse_response(input), ours) {
                (Oracle::Incomplete, Ok(None) | Err(_)) => {}
                (Oracle::Refused, Err(_)) => {}
                (Oracle::Refused, Ok(Some(_))) => prop_assert!(!values_ok),
                (Oracle::Parsed { end, minor, code, fields: want }, Ok(Some((status, n)))) => {
                    prop_assert!(values_ok);
                    prop_assert_eq!(n, end);
                    prop_assert_eq!((status.minor, status.code), (minor, code));
                    let got: Vec<(&[u8], &[u8])> = fields
                        .iter()
                        .map(|f| (&input[f.name.clone()], &input[f.value.clone()]))
                        .collect();
                    let want: Vec<(&[u8], &[u8])> =
                        want.iter().map(|(n, v)| (&n[..], &v[..])).collect();
                    prop_assert_eq!(got, want);
                }
                (oracle, ours) => prop_assert!(false, "httparse {:?}, split {:?}", oracle, ours),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Requests likewise: the splitter with the checks `parse_request` makes after it
        /// (`Method`, `names::parse`, `HeaderValue`) accepts exactly what strict httparse
        /// did, with the same method, target, version and fields.
        #[test]
        fn request_split_agrees_with_httparse(input in request_soup()) {
            let Some(end) = find_head_end(&input, 0) else { return Ok(()) };
            let head = &input[..end];
            let mut slots = [httparse::EMPTY_HEADER; 101];
            let mut req = httparse::Request::new(&mut slots);
            let theirs = match req.parse(head) {
                Ok(httparse::Status::Complete(n)) if n == end => Some(req),
                _ => None,
            };
            let mut fields = Vec::new();
            let ours = match split::request(head, 101, &mut fields) {
                Ok(Some((line, n))) if n == end => Some(line),
                _ => None,
            };
            let ours = ours.filter(|line| {
                Method::from_bytes(&head[line.method.clone()]).is_ok()
                    && fields.iter().all(|f| {
                        names::parse(&head[f.name.clone()]).is_ok()
                            && HeaderValue::from_bytes(&head[f.value.clone()]).is_ok()
                    })
            });
            match (theirs, ours) {
                (None, None) => {}
                (Some(req), Some(line)) => {
                    prop_assert_eq!(req.method.map(str::as_bytes), Some(&head[line.method]));
                    prop_assert_eq!(req.path.map(str::as_bytes), Some(&head[line.target]));
                    prop_assert_eq!(req.version, Some(line.minor));
                    let got: Vec<(&[u8], &[u8])> = fields
                        .iter()
                        .map(|f| (&head[f.name.clone()], &head[f.value.clone()]))
                        .collect();
                    let want: Vec<(&[u8], &[u8])> =
                        req.headers.iter().map(|h| (h.name.as_bytes(), h.value)).collect();
                    prop_assert_eq!(got, want);
                }
                (theirs, ours) => prop_assert!(
                    false,
                    "httparse {:?}, split {:?}",
                    theirs.is_some(),
                    ours
                ),
            }
        }
    }

    fn request_soup() -> impl Strategy<Value = Vec<u8>> {
        let line = prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"POST /a?b=c#frag HTTP/1.0\n".to_vec()),
            Just(b"M-SEARCH * HTTP/1.1\r\n".to_vec()),
            Just(b"GET http://h:1/p HTTP/1.1\r\n".to_vec()),
            Just(b"GET /\xc3\xa9\xff HTTP/1.1\r\n".to_vec()),
            Just(b"GET  / HTTP/1.1\r\n".to_vec()),
            Just(b"GET /  HTTP/1.1\r\n".to_vec()),
            Just(b"GET / HTTP/1.1 \r\n".to_vec()),
            Just(b"GET /a b HTTP/1.1\r\n".to_vec()),
            Just(b"GET / HTTP/2.0\r\n".to_vec()),
            Just(b"GET / http/1.1\r\n".to_vec()),
            Just(b"G(T / HTTP/1.1\r\n".to_vec()),
            Just(b" / HTTP/1.1\r\n".to_vec()),
            Just(b"GET /#\x01 HTTP/1.1\r\n".to_vec()),
            Just(b"GET /\x7f HTTP/1.1\r\n".to_vec()),
            Just(b"GET\t/ HTTP/1.1\r\n".to_vec()),
        ];
        let piece = prop_oneof![
            Just(b"Host: a\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\n".to_vec()),
            Just(b"X-A:  \t v a l \t \r\n".to_vec()),
            Just(b"Empty:\r\n".to_vec()),
            Just(b"Cookie: a=b; \x80\xfe\r\n".to_vec()),
            Just(b"A : b\r\n".to_vec()),
            Just(b" folded\r\n".to_vec()),
            Just(b"X-Nul: a\x00b\r\n".to_vec()),
            Just(b"Content\rLength: 1\r\n".to_vec()),
            Just(b"X-!#$%&'*+-.^_`|~09: z\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b" ".to_vec()),
            Just(b":".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        (line, proptest::collection::vec(piece, 0..10), any::<bool>()).prop_map(|(l, rest, end)| {
            [
                l,
                rest.concat(),
                if end { b"\r\n".to_vec() } else { vec![] },
            ]
            .concat()
        })
    }

    /// Complete CRLF / LF lines at the start (httparse skips them; before the splitter, the
    /// end search could stop at two of them, a difference that is not the parser's).
    fn leading_empty_lines(b: &[u8]) -> usize {
        let mut i = 0;
        loop {
            match &b[i..] {
                [b'\r', b'\n', ..] => i += 2,
                [b'\n', ..] => i += 1,
                _ => return i,
            }
        }
    }

    #[derive(Debug)]
    enum Oracle {
        Incomplete,
        Refused,
        Parsed {
            end: usize,
            minor: u8,
            code: u16,
            fields: Vec<(Vec<u8>, Vec<u8>)>,
        },
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Fields passed on raw are the fields the map would have held: the same accept or
        /// refuse, framing and reuse, the same fields in the same order once moved into a
        /// map, and the lines written to the client read back as those fields.
        #[test]
        fn raw_fields_agree_with_the_map(input in field_soup(), head_request in any::<bool>()) {
            let read = |pass_raw: bool| {
                let mut buf = BytesMut::from(&input[..]);
                let mut reader = ResponseReader::default();
                let r = reader.read(&mut buf, 64 * 1024, 100, head_request, pass_raw);
                (r, reader)
            };
            let (ours, mut reader) = read(true);
            let (theirs, _) = read(false);
            let list = |h: &HeaderMap| -> Vec<(String, Vec<u8>)> {
                h.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect()
            };
            match (ours, theirs) {
                (Ok(Some(mut a)), Ok(Some(b))) => {
                    prop_assert_eq!(a.parts.status, b.parts.status);
                    prop_assert_eq!(a.parts.version, b.parts.version);
                    prop_assert_eq!(a.framing, b.framing);
                    prop_assert_eq!(a.reusable, b.reusable);
                    let mut written = BytesMut::new();
                    reader.raw().put(&mut written);
                    let has_date = reader.raw().has_date();
                    // One form or the other, never both.
                    let passed_raw = a.parts.headers.is_empty();
                    prop_assert!(passed_raw || reader.raw().is_empty());
                    reader.raw_mut().move_into(&mut a.parts.headers);
                    prop_assert_eq!(list(&a.parts.headers), list(&b.parts.headers));
                    prop_assert_eq!(has_date, passed_raw && b.parts.headers.contains_key(header::DATE));
                    if passed_raw {
                        // Not moved into a map, the lines go to the client as they are: they
                        // must be what the pipeline leaves of the map (hop-by-hop fields
                        // removed), with no field the gateway's own would replace.
                        // Every line ends in CRLF, as a sender's must.
                        let lf = written.iter().enumerate().filter(|(_, b)| **b == b'\n');
                        prop_assert!(lf.clone().all(|(i, _)| i > 0 && written[i - 1] == b'\r'));
                        let again = [&b"HTTP/1.1 200 OK\r\n"[..], &written, b"\r\n"].concat();
                        let back = resp(&again, false).expect("written lines read back");
                        let mut stripped = b.parts.headers.clone();
                        crate::policy::headers::strip_response_hop_by_hop(&mut stripped, false);
                        prop_assert_eq!(list(&back.parts.headers), list(&stripped));
                        prop_assert_eq!(list(&stripped), list(&b.parts.headers));
                        let fields = crate::body::GatewayFields::new(
                            HeaderValue::from_static("id"),
                            Some(HeaderValue::from_static("p")),
                            Some(HeaderValue::from_static("r")),
                        );
                        prop_assert!(b.parts.headers.keys().all(|n| !fields.replaces(n)));
                    }
                }
                (Ok(None), Ok(None)) => {}
                (Err(x), Err(y)) => prop_assert_eq!(x, y),
                (x, y) => prop_assert!(false, "raw {:?} vs map {:?}", x.map(|h| h.map(|h| h.framing)), y.map(|h| h.map(|h| h.framing))),
            }
        }
    }

    /// Response heads that reach the field checks: valid status lines, fields the raw form
    /// passes, fields that keep it out, framing fields, and bytes that break a field.
    fn field_soup() -> impl Strategy<Value = Vec<u8>> {
        let status = prop_oneof![
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.0 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.1 404 Not Found\r\n".to_vec()),
            Just(b"HTTP/1.1 204 No Content\r\n".to_vec()),
        ];
        let piece = prop_oneof![
            Just(b"Server: nginx\r\n".to_vec()),
            Just(b"date: Tue, 01 Dec 2026 00:00:00 GMT\r\n".to_vec()),
            Just(b"Content-Type: text/plain\r\n".to_vec()),
            Just(b"X-A:  \t v a l \t \r\n".to_vec()),
            Just(b"Set-Cookie: a=b; \x80\xfe\r\n".to_vec()),
            Just(b"Empty:\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"content-length: 7\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"Connection: keep-alive\r\n".to_vec()),
            Just(b"Connection: close, X-A\r\n".to_vec()),
            Just(b"Keep-Alive: timeout=5\r\n".to_vec()),
            Just(b"Upgrade: h2c\r\n".to_vec()),
            Just(b"TE: trailers\r\n".to_vec()),
            Just(b"Proxy-Authenticate: Basic\r\n".to_vec()),
            Just(b"X-Request-Id: up\r\n".to_vec()),
            Just(b"ratelimit-policy: 1;w=1\r\n".to_vec()),
            Just(b"X-Bare: lf\n".to_vec()),
            Just(b"X-Nul: a\x00b\r\n".to_vec()),
            Just(b"X-Del: a\x7fb\r\n".to_vec()),
            Just(b"Bad(name): z\r\n".to_vec()),
            (
                proptest::collection::vec(any::<u8>(), 1..4),
                proptest::collection::vec(any::<u8>(), 0..4)
            )
                .prop_map(|(n, v)| [&n[..], b": ", &v, b"\r\n"].concat()),
        ];
        (
            status,
            proptest::collection::vec(piece, 0..10),
            any::<bool>(),
        )
            .prop_map(|(s, rest, crlf)| {
                let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
                [s, rest.concat(), end.to_vec()].concat()
            })
    }

    fn resp(raw: &[u8], head: bool) -> Result<ResponseHead, ResponseError> {
        let mut buf = BytesMut::from(raw);
        ResponseReader::default()
            .read(&mut buf, 64 * 1024, 100, head, false)
            .map(|r| r.expect("complete"))
    }

    /// How the gateway parsed responses before the splitter: the end search, then strict
    /// httparse over the head.
    fn httparse_response(input: &[u8]) -> Oracle {
        let Some(end) = find_head_end(input, 0) else {
            return Oracle::Incomplete;
        };
        let mut slots = [httparse::EMPTY_HEADER; 101];
        let mut resp = httparse::Response::new(&mut slots);
        match httparse::ParserConfig::default().parse_response(&mut resp, &input[..end]) {
            Ok(httparse::Status::Complete(n)) if n == end => Oracle::Parsed {
                end,
                minor: resp.version.unwrap_or(9),
                code: resp.code.unwrap_or(0),
                fields: resp
                    .headers
                    .iter()
                    .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                    .collect(),
            },
            _ => Oracle::Refused,
        }
    }

    fn response_soup() -> impl Strategy<Value = Vec<u8>> {
        let status = prop_oneof![
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.0 204\n".to_vec()),
            Just(b"HTTP/1.1 404 Not \tFound \xff\r\n".to_vec()),
            Just(b"HTTP/1.1 200 \r\n".to_vec()),
            Just(b"HTTP/1.1 20x OK\r\n".to_vec()),
            Just(b"HTTP/1.1  200 OK\r\n".to_vec()),
            Just(b"HTTP/2.0 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.1 200 O\rK\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
        ];
        let piece = prop_oneof![
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"X-A:  \t v a l \t \r\n".to_vec()),
            Just(b"Empty:\r\n".to_vec()),
            Just(b"Ws: \r\n".to_vec()),
            Just(b"Server: nginx/1.22.1\n".to_vec()),
            Just(b"Set-Cookie: a=b; \x80\xfe\r\n".to_vec()),
            Just(b"A : b\r\n".to_vec()),
            Just(b" folded\r\n".to_vec()),
            Just(b"X-Nul: a\x00b\r\n".to_vec()),
            Just(b"X-Del: a\x7fb\r\n".to_vec()),
            Just(b"X-!#$%&'*+-.^_`|~09: z\r\n".to_vec()),
            Just(b"Bad(name): z\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b" ".to_vec()),
            Just(b"\t".to_vec()),
            Just(b":".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..6),
        ];
        // Half of them ended, so most cases reach a decision.
        (
            status,
            proptest::collection::vec(piece, 0..12),
            any::<bool>(),
        )
            .prop_map(|(s, rest, end)| {
                [
                    s,
                    rest.concat(),
                    if end { b"\r\n".to_vec() } else { vec![] },
                ]
                .concat()
            })
    }
}
