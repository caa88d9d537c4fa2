//! SECURITY-TESTS.md 2.2 H9–H11: HTTP/2 pseudo-headers and connection headers, the H2→H1
//! downgrade, and h2c upgrades.
//!
//! HTTP/2 clients (the `h2` crate, reqwest) refuse to send malformed requests, so these tests
//! hand-build frames over a raw TCP stream (h2c prior knowledge). HPACK is encoded as
//! "literal without indexing, new name, no Huffman", which any decoder must accept. Only the
//! response `:status` is decoded (the first field of a response block on a fresh connection).

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::*;
use crate::smuggling::{assert_canonical, Rig, T};
use gatehouse_testkit::http1::parse_head;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, n: u32, flags: u8, v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = v - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header block of "literal without indexing, new name" fields, raw bytes (no Huffman).
fn hpack_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(&mut out, 7, 0, name.len());
        out.extend_from_slice(name);
        hpack_int(&mut out, 7, 0, value.len());
        out.extend_from_slice(value);
    }
    out
}

fn read_int(buf: &[u8], pos: &mut usize, n: u32) -> Option<usize> {
    let max = (1usize << n) - 1;
    let mut v = (*buf.get(*pos)? as usize) & max;
    *pos += 1;
    if v < max {
        return Some(v);
    }
    let mut shift = 0;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v += ((b & 0x7f) as usize) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
}

/// Huffman-decodes a string of digits (all a `:status` can hold): '0'-'2' are 5-bit codes
/// 0..=2, '3'-'9' are 6-bit codes 0x19..=0x1f (RFC 7541 Appendix B); padding is all ones.
fn huffman_digits(bytes: &[u8]) -> Option<String> {
    let mut bits: Vec<u8> = Vec::new();
    for b in bytes {
        for i in (0..8).rev() {
            bits.push((b >> i) & 1);
        }
    }
    let mut out = String::new();
    let mut pos = 0;
    while pos < bits.len() {
        let rest = &bits[pos..];
        if rest.len() < 8 && rest.iter().all(|b| *b == 1) {
            break;
        }
        let val = |n: usize| -> Option<u8> {
            (rest.len() >= n).then(|| rest[..n].iter().fold(0u8, |a, b| (a << 1) | b))
        };
        match val(5) {
            Some(c @ 0..=2) => {
                out.push((b'0' + c) as char);
                pos += 5;
            }
            _ => match val(6) {
                Some(c @ 0x19..=0x1f) => {
                    out.push((b'3' + (c - 0x19)) as char);
                    pos += 6;
                }
                _ => return None,
            },
        }
    }
    Some(out)
}

/// `:status` from a response header block (first field, empty dynamic table).
fn decode_status(block: &[u8]) -> Option<u16> {
    let mut pos = 0;
    loop {
        let b = *block.get(pos)?;
        if b & 0xe0 == 0x20 {
            // Dynamic table size update.
            read_int(block, &mut pos, 5)?;
            continue;
        }
        if b & 0x80 != 0 {
            let idx = read_int(block, &mut pos, 7)?;
            return match idx {
                8 => Some(200),
                9 => Some(204),
                10 => Some(206),
                11 => Some(304),
                12 => Some(400),
                13 => Some(404),
                14 => Some(500),
                _ => None,
            };
        }
        let name_idx = if b & 0xc0 == 0x40 {
            read_int(block, &mut pos, 6)?
        } else {
            read_int(block, &mut pos, 4)?
        };
        if name_idx != 8 {
            return None;
        }
        let huff = block.get(pos)? & 0x80 != 0;
        let len = read_int(block, &mut pos, 7)?;
        let raw = block.get(pos..pos + len)?;
        let text = if huff {
            huffman_digits(raw)?
        } else {
            String::from_utf8(raw.to_vec()).ok()?
        };
        return text.parse().ok();
    }
}

struct Frame {
    ty: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// How the gateway answered one stream.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Status(u16),
    Reset(u32),
    GoAway(u32),
    Closed,
}

impl Answer {
    /// 400 or a stream/connection error (RFC 9113 §8.2).
    fn is_refusal(&self) -> bool {
        match self {
            Answer::Status(s) => (400..500).contains(s),
            Answer::Reset(_) | Answer::GoAway(_) | Answer::Closed => true,
        }
    }
}

struct H2Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl H2Conn {
    async fn connect(addr: std::net::SocketAddr) -> H2Conn {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut hello = PREFACE.to_vec();
        hello.extend_from_slice(&frame_bytes(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.expect("preface");
        H2Conn {
            stream,
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
        // The server may already have closed; the answer tells.
        let _ = self
            .stream
            .write_all(&frame_bytes(ty, flags, stream, payload))
            .await;
    }

    async fn headers(&mut self, stream: u32, fields: &[(&[u8], &[u8])], end_stream: bool) {
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        self.send(HEADERS, flags, stream, &hpack_block(fields))
            .await;
    }

    async fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        let flags = if end_stream { END_STREAM } else { 0 };
        self.send(DATA, flags, stream, data).await;
    }

    /// Next frame, or `None` at EOF/reset/deadline. Answers SETTINGS and PING.
    async fn frame(&mut self, until: tokio::time::Instant) -> Option<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        ty: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    if f.ty == SETTINGS && f.flags & ACK == 0 {
                        self.send(SETTINGS, ACK, 0, &[]).await;
                    }
                    if f.ty == PING && f.flags & ACK == 0 {
                        let p = f.payload.clone();
                        self.send(PING, ACK, 0, &p).await;
                    }
                    return Some(f);
                }
            }
            let mut tmp = [0u8; 16 * 1024];
            match tokio::time::timeout_at(until, self.stream.read(&mut tmp)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&tmp[..n]),
                _ => return None,
            }
        }
    }

    /// Reads until stream `id` gets a response head, a reset, or the connection ends.
    async fn answer(&mut self, id: u32) -> Answer {
        let until = tokio::time::Instant::now() + T;
        let mut block: Option<Vec<u8>> = None;
        while let Some(f) = self.frame(until).await {
            match f.ty {
                HEADERS if f.stream == id => {
                    let mut p = f.payload.as_slice();
                    // Strip padding / priority fields if flagged.
                    let mut pad = 0usize;
                    if f.flags & 0x8 != 0 {
                        pad = usize::from(p[0]);
                        p = &p[1..];
                    }
                    if f.flags & 0x20 != 0 {
                        p = &p[5..];
                    }
                    let p = &p[..p.len() - pad];
                    if f.flags & END_HEADERS != 0 {
                        return decode_status(p).map_or(Answer::Closed, Answer::Status);
                    }
                    block = Some(p.to_vec());
                }
                CONTINUATION if f.stream == id => {
                    if let Some(b) = block.as_mut() {
                        b.extend_from_slice(&f.payload);
                        if f.flags & END_HEADERS != 0 {
                            return decode_status(b).map_or(Answer::Closed, Answer::Status);
                        }
                    }
                }
                RST_STREAM if f.stream == id => {
                    return Answer::Reset(u32::from_be_bytes([
                        f.payload[0],
                        f.payload[1],
                        f.payload[2],
                        f.payload[3],
                    ]));
                }
                GOAWAY => {
                    return Answer::GoAway(u32::from_be_bytes([
                        f.payload[4],
                        f.payload[5],
                        f.payload[6],
                        f.payload[7],
                    ]));
                }
                _ => {}
            }
        }
        Answer::Closed
    }
}

fn frame_bytes(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A valid GET's pseudo-headers.
fn get_fields(path: &[u8]) -> Vec<(&[u8], &[u8])> {
    vec![
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"a.test"),
        (b":path", path),
    ]
}

/// Sends one request on a fresh connection and returns the answer for stream 1.
async fn one_request(rig: &Rig, fields: &[(&[u8], &[u8])]) -> Answer {
    let mut c = H2Conn::connect(rig.gw.addr()).await;
    c.headers(1, fields, true).await;
    c.answer(1).await
}

#[tokio::test]
async fn h9_frame_client_sanity() {
    // The hand-built client must get a 200 for a valid request, or the refusals below
    // prove nothing.
    let rig = Rig::start().await;
    let a = one_request(&rig, &get_fields(b"/ok")).await;
    assert_eq!(a, Answer::Status(200));
    let reqs = rig.up.requests();
    assert_eq!(reqs.len(), 1);
    let head = assert_canonical(&reqs[0], "H9 sanity");
    assert_eq!(head.start_line, "GET /ok HTTP/1.1");
    assert_eq!(head.header_all("host"), vec!["a.test"]);
    // Statuses outside the static table come as (usually Huffman) literals: "502", "413".
    assert_eq!(huffman_digits(&[0x6c, 0x02]).as_deref(), Some("502"));
    assert_eq!(huffman_digits(&[0x68, 0x2c, 0xff]).as_deref(), Some("413"));
}

#[tokio::test]
async fn h9_pseudo_and_connection_headers_refused() {
    let rig = Rig::start().await;
    let m: &[u8] = b":method";
    let s: &[u8] = b":scheme";
    let a: &[u8] = b":authority";
    let p: &[u8] = b":path";
    type Fields = Vec<(&'static [u8], &'static [u8])>;
    let with = |extra: (&'static [u8], &'static [u8])| -> Fields {
        let mut f: Fields = vec![
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"a.test"),
            (b":path", b"/x"),
        ];
        f.push(extra);
        f
    };
    let cases: Vec<(&str, Fields)> = vec![
        (
            "missing :method",
            vec![(s, b"http"), (a, b"a.test"), (p, b"/x")],
        ),
        (
            "missing :path",
            vec![(m, b"GET"), (s, b"http"), (a, b"a.test")],
        ),
        (
            "missing :scheme",
            vec![(m, b"GET"), (a, b"a.test"), (p, b"/x")],
        ),
        (
            "empty :path",
            vec![(m, b"GET"), (s, b"http"), (a, b"a.test"), (p, b"")],
        ),
        (
            "path without slash",
            vec![(m, b"GET"), (s, b"http"), (a, b"a.test"), (p, b"hello")],
        ),
        (
            "bad :scheme",
            vec![(m, b"GET"), (s, b"http://x/?"), (a, b"a.test"), (p, b"/x")],
        ),
        (
            "method GET?",
            vec![(m, b"GET?"), (s, b"http"), (a, b"a.test"), (p, b"/x")],
        ),
        (
            "method with space",
            vec![(m, b"GET /"), (s, b"http"), (a, b"a.test"), (p, b"/x")],
        ),
        (
            "duplicate :path",
            vec![
                (m, b"GET"),
                (s, b"http"),
                (a, b"a.test"),
                (p, b"/x"),
                (p, b"/y"),
            ],
        ),
        ("unknown pseudo", with((b":foo", b"bar"))),
        ("pseudo after regular", {
            let mut f: Fields = vec![(m, b"GET"), (s, b"http"), (b"x-a", b"1")];
            f.push((a, b"a.test"));
            f.push((p, b"/x"));
            f
        }),
        ("uppercase name", with((b"X-Upper", b"1"))),
        ("connection", with((b"connection", b"close"))),
        ("keep-alive", with((b"keep-alive", b"timeout=5"))),
        (
            "proxy-connection",
            with((b"proxy-connection", b"keep-alive")),
        ),
        (
            "transfer-encoding",
            with((b"transfer-encoding", b"chunked")),
        ),
        ("upgrade", with((b"upgrade", b"websocket"))),
        ("te gzip", with((b"te", b"gzip"))),
        ("CR in value", with((b"x-inject", b"a\rX-Admin: 1"))),
        ("LF in value", with((b"x-inject", b"a\nX-Admin: 1"))),
        ("CRLF in value", with((b"x-inject", b"a\r\nX-Admin: 1"))),
        ("NUL in value", with((b"x-inject", b"a\0X-Admin: 1"))),
        (
            "CRLF in :path",
            vec![
                (m, b"GET"),
                (s, b"http"),
                (a, b"a.test"),
                (p, b"/x\r\nX-Admin: 1"),
            ],
        ),
        (
            "CRLF in :authority",
            vec![
                (m, b"GET"),
                (s, b"http"),
                (a, b"a.test\r\nX-Admin: 1"),
                (p, b"/x"),
            ],
        ),
        (
            "CRLF in :method",
            vec![
                (m, b"GET\r\nX-Admin: 1"),
                (s, b"http"),
                (a, b"a.test"),
                (p, b"/x"),
            ],
        ),
        (
            "SP in :path",
            vec![
                (m, b"GET"),
                (s, b"http"),
                (a, b"a.test"),
                (p, b"/x HTTP/1.1\r\nX-Admin: 1"),
            ],
        ),
        ("colon in name", with((b"x:admin", b"1"))),
        ("CRLF in name", with((b"x-a\r\nx-admin", b"1"))),
    ];
    for (name, fields) in &cases {
        let answer = one_request(&rig, fields).await;
        assert!(
            answer.is_refusal(),
            "H9 {name}: expected 400 or a stream error, got {answer:?}"
        );
        assert_eq!(
            rig.up.total_requests_seen(),
            0,
            "H9 {name}: reached the upstream: {:?}",
            String::from_utf8_lossy(&rig.up.received_all())
        );
    }
    assert!(!rig.up.received_contains(b"X-Admin"));
    // `te: trailers` is the one allowed value.
    let answer = one_request(&rig, &with((b"te", b"trailers"))).await;
    assert_eq!(answer, Answer::Status(200), "H9 te: trailers");
    // The connection survives a stream error: a refused stream, then a valid one.
    let mut c = H2Conn::connect(rig.gw.addr()).await;
    c.headers(1, &with((b"connection", b"close")), true).await;
    let first = c.answer(1).await;
    assert!(first.is_refusal(), "{first:?}");
    if !matches!(first, Answer::GoAway(_) | Answer::Closed) {
        c.headers(3, &get_fields(b"/after"), true).await;
        assert_eq!(c.answer(3).await, Answer::Status(200));
        assert!(rig.up.received_contains(b"GET /after HTTP/1.1\r\n"));
    }
}

/// Every request the upstream received declares exactly the body it carries.
fn assert_framing_honest(up: &RawUpstream, what: &str) {
    for req in up.requests() {
        let head = parse_head(&req).expect("head");
        let body = &req[head.len..];
        if let Some(cl) = head.header("content-length") {
            let cl: usize = cl.parse().expect("numeric CL");
            assert_eq!(cl, body.len(), "{what}: upstream CL != body: {req:?}");
        }
    }
}

#[tokio::test]
async fn h10_content_length_zero_with_smuggled_data() {
    let rig = Rig::start().await;
    let smuggled: &[u8] = b"GET /admin HTTP/1.1\r\nHost: a.test\r\n\r\n";
    let mut c = H2Conn::connect(rig.gw.addr()).await;
    c.headers(
        1,
        &[
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"a.test"),
            (b":path", b"/upload"),
            (b"content-length", b"0"),
        ],
        false,
    )
    .await;
    c.data(1, smuggled, true).await;
    let answer = c.answer(1).await;
    // Whatever the client hears, the upstream never sees the second request...
    assert!(
        !rig.up.received_contains(b"/admin"),
        "H10: smuggled request reached the upstream: {:?}",
        String::from_utf8_lossy(&rig.up.received_all())
    );
    // ... and the upstream CL equals the real body length.
    assert_framing_honest(&rig.up, "H10 cl:0");
    assert!(rig.up.total_requests_seen() <= 1);
    assert!(
        matches!(
            answer,
            Answer::Reset(_) | Answer::GoAway(_) | Answer::Status(_)
        ),
        "{answer:?}"
    );
}

#[tokio::test]
async fn h10_content_length_mismatch() {
    for (name, cl, data) in [
        ("CL larger than DATA", "10", &b"hello"[..]),
        ("CL smaller than DATA", "3", b"hello world, more than three"),
    ] {
        let rig = Rig::start().await;
        let mut c = H2Conn::connect(rig.gw.addr()).await;
        c.headers(
            1,
            &[
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":authority", b"a.test"),
                (b":path", b"/m"),
                (b"content-length", cl.as_bytes()),
            ],
            false,
        )
        .await;
        c.data(1, data, true).await;
        let answer = c.answer(1).await;
        // Either REJECT (stream error / 400), or the upstream got an honest request. A
        // request whose body the client cut short must not complete upstream.
        assert_framing_honest(&rig.up, name);
        if let Answer::Status(s) = answer {
            assert!(
                (400..500).contains(&s) || s == 502,
                "H10 {name}: status {s} for a lying content-length"
            );
        }
        assert!(
            rig.up.requests().is_empty(),
            "H10 {name}: a complete request went upstream: {:?}",
            rig.up.requests()
        );
    }
    // An honest CL works, and arrives as that CL.
    let rig = Rig::start().await;
    let mut c = H2Conn::connect(rig.gw.addr()).await;
    c.headers(
        1,
        &[
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":authority", b"a.test"),
            (b":path", b"/m"),
            (b"content-length", b"5"),
        ],
        false,
    )
    .await;
    c.data(1, b"hello", true).await;
    assert_eq!(c.answer(1).await, Answer::Status(200));
    let reqs = rig.up.requests();
    assert_eq!(reqs.len(), 1);
    let head = assert_canonical(&reqs[0], "H10 honest");
    assert_eq!(head.header("content-length"), Some("5"));
    assert!(reqs[0].ends_with(b"\r\n\r\nhello"));
}

#[tokio::test]
async fn h10_authority_wins_over_host() {
    let rig = Rig::start().await;
    let answer = one_request(
        &rig,
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"a.test"),
            (b":path", b"/h"),
            (b"host", b"evil.test"),
        ],
    )
    .await;
    if let Answer::Status(s) = answer {
        if s == 200 {
            let reqs = rig.up.requests();
            assert_eq!(reqs.len(), 1);
            let head = assert_canonical(&reqs[0], "H10 authority");
            assert_eq!(
                head.header_all("host"),
                vec!["a.test"],
                ":authority must win"
            );
            assert!(!rig.up.received_contains(b"evil.test"));
            return;
        }
        assert_eq!(s, 400, "H10 authority != host");
    }
    assert_eq!(rig.up.total_requests_seen(), 0);
}

#[tokio::test]
async fn h10_authority_routes() {
    // Routing follows :authority, not a host header.
    let good = RawUpstream::start(RawScript::ok("good")).await.expect("up");
    let evil = RawUpstream::start(RawScript::ok("evil")).await.expect("up");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  good:\n    targets:\n      - url: {}\n  evil:\n    targets:\n      - url: {}\nroutes:\n  - name: good\n    match: {{ hosts: [a.test], path: /* }}\n    upstream: good\n  - name: evil\n    match: {{ hosts: [evil.test], path: /* }}\n    upstream: evil\n",
        good.url(),
        evil.url()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let mut c = H2Conn::connect(gw.addr()).await;
    c.headers(
        1,
        &[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"a.test"),
            (b":path", b"/h"),
            (b"host", b"evil.test"),
        ],
        true,
    )
    .await;
    let answer = c.answer(1).await;
    assert_eq!(evil.total_requests_seen(), 0, "routed on the host header");
    if answer == Answer::Status(200) {
        assert_eq!(good.total_requests_seen(), 1);
    } else {
        assert!(answer.is_refusal(), "{answer:?}");
    }
}

#[tokio::test]
async fn h11_h2c_upgrade_not_tunnelled() {
    let h2c = "GET /u HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    // A plain route: served as HTTP/1.1 with the upgrade headers stripped.
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.write(h2c.as_bytes()).await.expect("write");
    let r = c.read_response(T).await.expect("response");
    assert!(
        r.status == 200 || r.status == 400,
        "H11: status {} (101 would be a tunnel)",
        r.status
    );
    assert!(r.header("upgrade").is_none(), "H11: upgrade answered");
    if r.status == 200 {
        let reqs = rig.up.requests();
        assert_eq!(reqs.len(), 1);
        let head = assert_canonical(&reqs[0], "H11");
        assert!(head.header("http2-settings").is_none());
        assert!(head.header("upgrade").is_none());
        // Still HTTP/1.1 on the client side: a second request is answered as HTTP/1.1, and
        // an HTTP/2 preface on this connection is not accepted as h2.
        c.write(b"GET /second HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("write");
        let r2 = c.read_response(T).await.expect("second response");
        assert!(r2.head.start_line.starts_with("HTTP/1.1 200"));
        c.write(PREFACE).await.expect("write");
        let rest = c.read_until_timeout(Duration::from_secs(2)).await;
        assert!(
            rest.is_empty() || rest.starts_with(b"HTTP/1.1 4"),
            "H11: h2 preface after h1 got {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert_eq!(rig.up.requests().len(), 2);
        for req in rig.up.requests() {
            assert!(!req.starts_with(b"PRI"));
        }
    }

    // A WebSocket route: an `h2c` upgrade is not a WebSocket upgrade; never a tunnel.
    let ws_cfg = |url: &str| {
        config_with_routes(
            url,
            "  - name: ws\n    match: { path: /* }\n    upstream: app\n    websocket: true\n",
        )
    };
    let rig = Rig::with(
        RawScript::Respond(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
                .to_vec(),
        ),
        ws_cfg,
    )
    .await;
    let (r, mut c) = rig.send(h2c.as_bytes(), "H11 ws route").await;
    assert_ne!(r.status, 101, "H11: h2c tunnelled on a websocket route");
    if r.status == 400 {
        assert_eq!(rig.up.total_requests_seen(), 0);
    } else {
        assert_eq!(r.status, 502, "H11 ws route: {}", r.status);
        let reqs = rig.up.requests();
        let head = parse_head(&reqs[0]).expect("head");
        assert!(head.header("upgrade").is_none(), "h2c upgrade forwarded");
    }
    let _ = c.is_closed(Duration::from_millis(100)).await;
}
