//! Encoding heads: a request head for an upstream, a response head for a client, and the
//! chunk-size line of a chunked body.
//!
//! Each piece goes in with `BytesMut::put_slice`. Measured and not kept (round 6): making
//! room for a bound of the head's length first and copying each piece into it with one
//! bounds check instead of `put_slice`'s capacity check and length update cost ~300
//! instructions a request *more* (summing the fields' lengths is one more pass over the
//! map, and the zeroing is a `memset`).

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode};

use super::head::Framing;
use super::raw::RawFields;
use crate::body::GatewayFields;
use crate::policy::forwarded::Added;

fn put_headers(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        // Framing is the encoder's own decision; hop-by-hop headers were removed earlier.
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        put_field(out, name, value);
    }
}

fn put_field(out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

fn put_content_length(out: &mut BytesMut, n: u64) {
    out.put_slice(b"content-length: ");
    out.put_slice(itoa::Buffer::new().format(n).as_bytes());
    out.put_slice(b"\r\n");
}

/// A request head for an upstream: origin-form target, the headers as the pipeline left
/// them, and one framing header chosen from the body.
pub fn encode_request(
    out: &mut BytesMut,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    added: &Added,
    framing: Framing,
) {
    // The buffer is reused per connection, so this rarely allocates; a longer head grows it.
    out.reserve(512 + path_and_query.len() + headers.len() * 64);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(path_and_query.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    put_headers(out, headers);
    added.put(out);
    match framing {
        Framing::None => {
            // A method that normally has a body says so explicitly.
            if matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
                out.put_slice(b"content-length: 0\r\n");
            }
        }
        Framing::Length(n) => put_content_length(out, n),
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.put_slice(b"\r\n");
}

/// How a body is framed on the wire: a response to a client, or a request to an upstream
/// (never `Close` there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body is written (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// HTTP/1.0 client, unknown length: the body ends when the connection closes.
    Close,
}

/// A response's fields, in the order they are written: the upstream's passed on raw
/// (`http1::raw`; none of them is a framing, `Connection` or gateway field), the map's, then
/// the gateway's (replacing any of the same name in the map).
pub struct ResponseFields<'a> {
    pub raw: Option<&'a RawFields>,
    pub map: &'a HeaderMap,
    pub gateway: &'a GatewayFields,
}

/// A response head for a client: its `fields`, the framing header chosen by `framing` (for a
/// HEAD answer, `declared_length`: the length a GET would have had), a `Date` when the
/// fields have none, and `connection` (`close`, `keep-alive` for HTTP/1.0, `upgrade`) when
/// given. A `Connection` field in the map is not written: `close` there (a route's header
/// operation) turns `connection` into `close`. Returns whether it did.
pub fn encode_response(
    out: &mut BytesMut,
    status: StatusCode,
    fields: ResponseFields<'_>,
    framing: BodyFraming,
    declared_length: Option<u64>,
    connection: Option<&'static [u8]>,
) -> bool {
    let ResponseFields {
        raw,
        map: headers,
        gateway: fields,
    } = fields;
    out.reserve(256 + (headers.len() + raw.map_or(0, RawFields::len)) * 64);
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.put_slice(b"\r\n");
    let mut has_date = false;
    if let Some(raw) = raw {
        raw.put(out);
        has_date = raw.has_date();
    }
    // One pass over the map decides what a lookup per name would have.
    let mut asked_close = false;
    for (name, value) in headers {
        if *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING {
            continue;
        }
        if *name == header::CONNECTION {
            asked_close |= value.as_bytes().eq_ignore_ascii_case(b"close");
            continue;
        }
        has_date |= *name == header::DATE;
        if fields.replaces(name) {
            continue;
        }
        put_field(out, name, value);
    }
    for (name, value) in fields.iter() {
        put_field(out, name, value);
    }
    // Proxied responses carry the upstream's `Date`; only the gateway's own need one.
    if !has_date {
        date_now(|date| {
            out.put_slice(b"date: ");
            out.put_slice(date);
            out.put_slice(b"\r\n");
        });
    }
    match framing {
        BodyFraming::Length(n) => put_content_length(out, n),
        BodyFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        BodyFraming::None => {
            // HEAD answers carry the length a GET would have had.
            if let Some(n) = declared_length {
                put_content_length(out, n);
            }
        }
        BodyFraming::Close => {}
    }
    let connection = match connection {
        Some(b"upgrade") => connection,
        _ if asked_close => Some(&b"close"[..]),
        c => c,
    };
    if let Some(c) = connection {
        out.put_slice(b"connection: ");
        out.put_slice(c);
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    asked_close
}

/// The chunk-size line of a data chunk.
pub fn chunk_header(out: &mut BytesMut, len: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = HEX[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
    out.put_slice(b"\r\n");
}

/// Cached `Date` value, formatted once per second per thread.
pub fn date_now(f: impl FnOnce(&[u8])) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHE: RefCell<(u64, Bytes)> = const { RefCell::new((0, Bytes::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, Bytes::from(httpdate::fmt_http_date(now)));
        }
        f(&c.1);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoders() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("up"));
        h.insert("content-length", HeaderValue::from_static("99"));
        let mut out = BytesMut::new();
        encode_request(
            &mut out,
            &Method::POST,
            "/a?b",
            &h,
            &Added::default(),
            Framing::Length(5),
        );
        assert_eq!(
            &out[..],
            b"POST /a?b HTTP/1.1\r\nhost: up\r\ncontent-length: 5\r\n\r\n"
        );
        let mut out = BytesMut::new();
        let asked = encode_response(
            &mut out,
            StatusCode::NOT_FOUND,
            ResponseFields {
                raw: None,
                map: &HeaderMap::new(),
                gateway: &GatewayFields::default(),
            },
            BodyFraming::Chunked,
            None,
            Some(b"close"),
        );
        assert!(!asked);
        let text = String::from_utf8(out.to_vec()).expect("ascii");
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\ndate: "),
            "{text}"
        );
        assert!(
            text.ends_with(" GMT\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{text}"
        );

        // The map's framing and `Connection` fields are not written (`close` there closes);
        // the gateway's fields replace the map's of the same name.
        let mut h = HeaderMap::new();
        h.insert(
            "date",
            HeaderValue::from_static("Tue, 01 Dec 2026 00:00:00 GMT"),
        );
        h.insert("x-request-id", HeaderValue::from_static("upstream's"));
        h.insert("content-length", HeaderValue::from_static("99"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("connection", HeaderValue::from_static("Close"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let fields = GatewayFields::new(HeaderValue::from_static("abc"), None, None);
        let mut out = BytesMut::new();
        let asked = encode_response(
            &mut out,
            StatusCode::OK,
            ResponseFields {
                raw: None,
                map: &h,
                gateway: &fields,
            },
            BodyFraming::Length(2),
            None,
            None,
        );
        assert!(asked);
        assert_eq!(
            &out[..],
            &b"HTTP/1.1 200 OK\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\nx-kept: 1\r\n\
               x-request-id: abc\r\ncontent-length: 2\r\nconnection: close\r\n\r\n"[..]
        );

        let mut out = BytesMut::new();
        chunk_header(&mut out, 0x1a2);
        assert_eq!(&out[..], b"1a2\r\n");
    }
}
