//! WebSocket pass-through (SECURITY-TESTS 2.9 W1–W4): failed upgrades stay HTTP, early bytes
//! wait for the 101, upgrade policy, and a byte-exact tunnel with an idle timeout.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

const T: Duration = Duration::from_secs(10);
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Routes: `ws` (`/ws/*`, websocket: true) and `plain` (`/plain/*`, no websocket) to the
/// WebSocket upstream; `app` (`/app/*`) to an echo upstream. `idle` is the WebSocket
/// upstream's `timeouts.idle` (the tunnel idle timeout).
fn ws_config(ws_url: &str, app_url: &str, idle: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n\
         upstreams:\n  ws:\n    targets:\n      - url: {ws_url}\n    timeouts: {{ idle: {idle} }}\n\
         \x20 app:\n    targets:\n      - url: {app_url}\n\
         routes:\n\
         \x20 - name: ws\n    match: {{ path: /ws/* }}\n    upstream: ws\n    websocket: true\n\
         \x20 - name: plain\n    match: {{ path: /plain/* }}\n    upstream: ws\n\
         \x20 - name: app\n    match: {{ path: /app/* }}\n    upstream: app\n"
    )
}

struct Setup {
    ws: WsEchoUpstream,
    app: EchoUpstream,
    gw: TestGateway,
}

async fn setup(opts: WsOptions) -> Setup {
    let ws = WsEchoUpstream::start_with(opts).await.expect("ws upstream");
    let app = EchoUpstream::start("app").await.expect("app upstream");
    let gw = TestGateway::start(&ws_config(&ws.url(), &app.url(), "60s"))
        .await
        .expect("gateway");
    Setup { ws, app, gw }
}

fn upgrade_request(path: &str, version: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: {version}\r\nSec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    )
    .into_bytes()
}

// ---- raw WebSocket framing (client side) --------------------------------------------------

/// A client frame: always masked (RFC 6455 §5.3).
fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// A raw client connection after the handshake: reads server frames byte by byte.
struct WsRaw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl WsRaw {
    /// Connects, writes `request` and reads the response head. Returns the head text.
    async fn handshake(addr: SocketAddr, request: &[u8]) -> (WsRaw, String) {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.write_all(request).await.expect("write");
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(T, stream.read(&mut tmp))
                .await
                .expect("head in time")
                .expect("read");
            assert!(n > 0, "closed before the response head: {buf:?}");
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        (WsRaw { stream, buf }, head)
    }

    async fn fill(&mut self, want: usize) {
        let mut tmp = vec![0u8; 64 * 1024];
        while self.buf.len() < want {
            let n = tokio::time::timeout(T, self.stream.read(&mut tmp))
                .await
                .expect("frame in time")
                .expect("read");
            assert!(n > 0, "tunnel closed mid-frame");
            self.buf.extend_from_slice(&tmp[..n]);
        }
    }

    /// One server frame: (fin, opcode, payload). Server frames are never masked.
    async fn frame(&mut self) -> (bool, u8, Vec<u8>) {
        self.fill(2).await;
        let (b0, b1) = (self.buf[0], self.buf[1]);
        assert_eq!(b1 & 0x80, 0, "server frames must not be masked");
        let (len, hdr) = match b1 & 0x7f {
            126 => {
                self.fill(4).await;
                (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
            }
            127 => {
                self.fill(10).await;
                let mut l = [0u8; 8];
                l.copy_from_slice(&self.buf[2..10]);
                (u64::from_be_bytes(l) as usize, 10)
            }
            n => (n as usize, 2),
        };
        self.fill(hdr + len).await;
        let payload = self.buf[hdr..hdr + len].to_vec();
        self.buf.drain(..hdr + len);
        (b0 & 0x80 != 0, b0 & 0x0f, payload)
    }

    /// One message: data frames reassembled; control frames come back on their own.
    async fn message(&mut self) -> (u8, Vec<u8>) {
        let (mut fin, opcode, mut payload) = self.frame().await;
        while !fin {
            let (f, op, more) = self.frame().await;
            assert_eq!(op, 0, "expected a continuation frame");
            payload.extend_from_slice(&more);
            fin = f;
        }
        (opcode, payload)
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// True if the peer closes (EOF or reset) within `within`.
    async fn closed_within(&mut self, within: Duration) -> bool {
        let mut tmp = [0u8; 1024];
        let until = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(until, self.stream.read(&mut tmp)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.buf.extend_from_slice(&tmp[..n]),
            }
        }
    }
}

fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

// ---- W1 ---------------------------------------------------------------------------------

async fn w1_case(status: u16) {
    let s = setup(WsOptions {
        reject: Some((status, b"refused".to_vec())),
        ..WsOptions::default()
    })
    .await;
    let mut c = RawConn::connect(s.gw.addr()).await.expect("connect");
    c.write(&upgrade_request("/ws/chat", "1337", ""))
        .await
        .expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, status);
    assert_eq!(r.body_str(), "refused");

    // The connection is still HTTP: the smuggled request is parsed and routed (no route for
    // /admin here), or the connection is closed. It never reaches the upstream as raw bytes.
    let mut still_open = false;
    if c.write(b"GET /admin HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .is_ok()
    {
        match c.read_response(T).await {
            Ok(r) => {
                assert_eq!(r.status, 404, "{}", r.body_str());
                still_open = true;
            }
            Err(_) => assert!(c.is_closed(T).await),
        }
    }
    if still_open {
        c.write(b"GET /app/after HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
            .expect("write");
        let r = c.read_response(T).await.expect("response");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-upstream"), Some("app"));
        // The upstream side is plain HTTP too.
        c.write(b"GET /ws/next HTTP/1.1\r\nHost: gw.test\r\n\r\n")
            .await
            .expect("write");
        let r = c.read_response(T).await.expect("response");
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "GET /ws/next HTTP/1.1")
        );
    }
    assert_eq!(s.ws.upgrades(), 0);
    let lines = s.ws.request_lines();
    assert!(
        lines.iter().all(|l| !l.contains("/admin")),
        "status {status}: the smuggled request reached the upstream: {lines:?}"
    );
    assert_eq!(lines[0], "GET /ws/chat HTTP/1.1");
    assert_eq!(s.app.hits(), usize::from(still_open));
}

#[tokio::test]
async fn w1_failed_upgrade_does_not_tunnel() {
    w1_case(426).await;
}

#[tokio::test]
async fn w1_failed_upgrade_with_200_does_not_tunnel() {
    w1_case(200).await;
}

#[tokio::test]
async fn w1_failed_upgrade_with_404_does_not_tunnel() {
    w1_case(404).await;
}

// ---- W2 ---------------------------------------------------------------------------------

#[tokio::test]
async fn w2_optimistic_bytes_wait_for_the_101() {
    let s = setup(WsOptions {
        handshake_delay: Duration::from_millis(300),
        ..WsOptions::default()
    })
    .await;
    let early = client_frame(true, 1, b"early");
    let mut req = upgrade_request("/ws/chat", "13", "");
    req.extend_from_slice(&early);
    let (mut c, head) = WsRaw::handshake(s.gw.addr(), &req).await;
    assert_eq!(status_of(&head), 101, "{head}");
    // Nothing of the early frame was forwarded before the upstream's 101 ...
    assert_eq!(s.ws.pre_101_bytes(), vec![Vec::<u8>::new()]);
    // ... and it is delivered, intact, once the tunnel exists.
    assert_eq!(c.message().await, (1, b"early".to_vec()));
    assert!(
        wait_for(T, || s.ws.post_handshake_bytes().first() == Some(&early)).await,
        "{:?}",
        s.ws.post_handshake_bytes()
    );
}

#[tokio::test]
async fn w2_upgrade_request_with_body_rejected() {
    let s = setup(WsOptions::default()).await;
    for extra in ["Content-Length: 5\r\n", "Transfer-Encoding: chunked\r\n"] {
        let mut req = upgrade_request("/ws/chat", "13", extra);
        req.extend_from_slice(if extra.starts_with("Content") {
            b"hello"
        } else {
            b"5\r\nhello\r\n0\r\n\r\n"
        });
        let mut c = RawConn::connect(s.gw.addr()).await.expect("connect");
        c.write(&req).await.expect("write");
        let r = c.read_response(T).await.expect("response");
        assert_eq!(r.status, 400, "{extra}: {}", r.body_str());
    }
    assert!(
        s.ws.request_heads().is_empty(),
        "{:?}",
        s.ws.request_heads()
    );
    assert_eq!(s.ws.upgrades(), 0);
}

// ---- W3 ---------------------------------------------------------------------------------

fn head_has(head: &str, name: &str) -> bool {
    head.lines()
        .any(|l| l.to_ascii_lowercase().starts_with(&format!("{name}:")))
}

#[tokio::test]
async fn w3_upgrade_only_on_websocket_routes() {
    let s = setup(WsOptions::default()).await;
    let mut c = RawConn::connect(s.gw.addr()).await.expect("connect");
    c.write(&upgrade_request("/plain/chat", "13", ""))
        .await
        .expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.body_str(), "GET /plain/chat HTTP/1.1");
    // Still HTTP afterwards, on both sides.
    c.write(b"GET /plain/again HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.body_str(), "GET /plain/again HTTP/1.1");
    assert_eq!(s.ws.upgrades(), 0);
    let heads = s.ws.request_heads();
    assert!(!head_has(&heads[0], "upgrade"), "{}", heads[0]);
    assert!(
        !heads[0]
            .to_ascii_lowercase()
            .contains("connection: upgrade"),
        "{}",
        heads[0]
    );
}

#[tokio::test]
async fn w3_upgrade_needs_connection_upgrade() {
    let s = setup(WsOptions::default()).await;
    let req = format!(
        "GET /ws/chat HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    let r = raw_roundtrip(s.gw.addr(), req.as_bytes())
        .await
        .expect("response");
    assert_ne!(r.status, 101);
    assert_eq!(s.ws.upgrades(), 0);
    for h in s.ws.request_heads() {
        assert!(!head_has(&h, "upgrade"), "{h}");
    }
}

#[tokio::test]
async fn w3_http10_and_non_get_upgrades_rejected() {
    let s = setup(WsOptions::default()).await;
    let http10 = format!(
        "GET /ws/chat HTTP/1.0\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\n\r\n"
    );
    let r = raw_roundtrip(s.gw.addr(), http10.as_bytes())
        .await
        .expect("response");
    assert_eq!(r.status, 400, "{}", r.body_str());
    let post = format!(
        "POST /ws/chat HTTP/1.1\r\nHost: gw.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {KEY}\r\nContent-Length: 0\r\n\r\n"
    );
    let r = raw_roundtrip(s.gw.addr(), post.as_bytes())
        .await
        .expect("response");
    assert_eq!(r.status, 400, "{}", r.body_str());
    // An upgrade to something other than websocket on a websocket route.
    let other = "GET /ws/chat HTTP/1.1\r\nHost: gw.test\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    let r = raw_roundtrip(s.gw.addr(), other.as_bytes())
        .await
        .expect("response");
    assert_eq!(r.status, 400, "{}", r.body_str());
    // No route, no upgrade.
    let r = raw_roundtrip(s.gw.addr(), &upgrade_request("/nowhere", "13", ""))
        .await
        .expect("response");
    assert_eq!(r.status, 404);
    assert!(
        s.ws.request_heads().is_empty(),
        "{:?}",
        s.ws.request_heads()
    );
}

#[tokio::test]
async fn w3_h2c_upgrade_is_stripped_and_served_as_http1() {
    let s = setup(WsOptions::default()).await;
    let mut c = RawConn::connect(s.gw.addr()).await.expect("connect");
    c.write(b"GET /app/h2c HTTP/1.1\r\nHost: gw.test\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
        .await
        .expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, 200);
    assert!(r.head.start_line.starts_with("HTTP/1.1 200"));
    let rec = s.app.last_request().expect("request");
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(rec.header(gone).is_none(), "{gone}: {:?}", rec.headers);
    }
    c.write(b"GET /app/next HTTP/1.1\r\nHost: gw.test\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(c.read_response(T).await.expect("response").status, 200);
    assert_eq!(s.app.hits(), 2);
}

// ---- W4 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_tunnel_is_byte_exact() {
    let s = setup(WsOptions::default()).await;
    let (mut c, head) = WsRaw::handshake(s.gw.addr(), &upgrade_request("/ws/chat", "13", "")).await;
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        head.contains(&format!(
            "sec-websocket-accept: {}",
            derive_accept_key(KEY.as_bytes())
        )) || head.contains(&format!(
            "Sec-WebSocket-Accept: {}",
            derive_accept_key(KEY.as_bytes())
        )),
        "{head}"
    );

    let big: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(31) >> 3) as u8)
        .collect();
    let mut sent = Vec::new();
    sent.extend(client_frame(true, 2, &big));
    // A fragmented text message with a ping interleaved between fragments (RFC 6455 §5.4).
    sent.extend(client_frame(false, 1, b"hel"));
    sent.extend(client_frame(false, 0, b"lo wo"));
    sent.extend(client_frame(true, 9, b"ping-1"));
    sent.extend(client_frame(true, 0, b"rld"));
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    sent.extend(client_frame(true, 8, &close));
    c.write(&sent).await;

    assert_eq!(c.message().await, (2, big));
    assert_eq!(c.message().await, (10, b"ping-1".to_vec()));
    assert_eq!(c.message().await, (1, b"hello world".to_vec()));
    assert_eq!(c.message().await, (8, close));
    // The upstream closes after the close handshake; the tunnel passes that on.
    assert!(c.closed_within(T).await, "client side not closed");
    // Every byte the client wrote reached the upstream unchanged and in order.
    assert!(
        wait_for(T, || s.ws.post_handshake_bytes().first().map(Vec::len)
            == Some(sent.len()))
        .await
    );
    assert!(
        s.ws.post_handshake_bytes()[0] == sent,
        "tunnel altered bytes"
    );
    assert_eq!(s.ws.upgrades(), 1);
    assert_eq!(s.ws.messages(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_tungstenite_client_round_trip() {
    let s = setup(WsOptions::default()).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws/chat", s.gw.addr()))
        .await
        .expect("handshake through the gateway");
    assert_eq!(resp.status(), 101);
    assert!(resp.headers().contains_key("x-request-id"));
    ws.send(Message::text("hello")).await.expect("send");
    assert_eq!(
        ws.next().await.transpose().expect("recv"),
        Some(Message::text("hello"))
    );
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.expect("send");
    assert_eq!(
        ws.next().await.transpose().expect("recv"),
        Some(Message::binary(big))
    );
    ws.send(Message::Ping(b"p".to_vec().into()))
        .await
        .expect("ping");
    assert_eq!(
        ws.next().await.transpose().expect("recv"),
        Some(Message::Pong(b"p".to_vec().into()))
    );
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    match ws.next().await.transpose().expect("recv") {
        Some(Message::Close(Some(f))) => {
            assert_eq!(f.code, CloseCode::Normal);
            assert_eq!(f.reason.as_str(), "bye");
        }
        other => panic!("expected the close echo, got {other:?}"),
    }
    let req = s.ws.request_heads();
    assert!(req[0]
        .to_ascii_lowercase()
        .contains("x-forwarded-for: 127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_half_close_is_propagated() {
    let s = setup(WsOptions::default()).await;
    let (mut c, head) = WsRaw::handshake(s.gw.addr(), &upgrade_request("/ws/chat", "13", "")).await;
    assert_eq!(status_of(&head), 101);
    c.write(&client_frame(true, 1, b"before fin")).await;
    assert_eq!(c.message().await, (1, b"before fin".to_vec()));
    // FIN from the client: the upstream sees EOF, closes, and that comes back to us.
    c.stream.shutdown().await.expect("shutdown");
    assert!(c.closed_within(T).await, "close not propagated back");
}

/// An upstream that completes the WebSocket handshake, then echoes raw bytes and records
/// when it sees EOF: enough to observe the tunnel from the upstream side.
struct RawWsUpstream {
    addr: SocketAddr,
    eof: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Drop for RawWsUpstream {
    fn drop(&mut self) {
        self._task.abort();
    }
}

async fn raw_ws_upstream() -> RawWsUpstream {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let eof = Arc::new(AtomicBool::new(false));
    let flag = eof.clone();
    let task = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = Vec::new();
        let mut tmp = vec![0u8; 16 * 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            derive_accept_key(KEY.as_bytes())
        );
        if s.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
        loop {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&tmp[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        flag.store(true, Ordering::SeqCst);
    });
    RawWsUpstream {
        addr,
        eof,
        _task: task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn w4_tunnel_idle_timeout_closes_both_sides() {
    let up = raw_ws_upstream().await;
    let app = EchoUpstream::start("app").await.expect("app");
    let idle = Duration::from_millis(800);
    let gw = TestGateway::start(&ws_config(&http_url(up.addr), &app.url(), "800ms"))
        .await
        .expect("gateway");
    let (mut c, head) = WsRaw::handshake(gw.addr(), &upgrade_request("/ws/idle", "13", "")).await;
    assert_eq!(status_of(&head), 101, "{head}");

    // Traffic every 150 ms for well over twice the idle timeout keeps the tunnel open.
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    let started = Instant::now();
    let mut n = 0u8;
    while started.elapsed() < idle * 2 + Duration::from_millis(300) {
        tick.tick().await;
        let payload = [b'a' + n % 26; 8];
        c.write(&payload).await;
        c.fill(payload.len()).await;
        assert_eq!(&c.buf[..], &payload[..], "echo through the tunnel");
        c.buf.clear();
        n += 1;
    }
    assert!(!up.eof.load(Ordering::SeqCst), "tunnel closed while active");

    // Then silence: both sides are closed at the idle timeout.
    let quiet = Instant::now();
    assert!(c.closed_within(T).await, "client side still open");
    assert!(
        quiet.elapsed() >= idle - Duration::from_millis(100),
        "closed after {:?}, before the idle timeout",
        quiet.elapsed()
    );
    assert!(
        wait_for(T, || up.eof.load(Ordering::SeqCst)).await,
        "upstream side still open"
    );
}
