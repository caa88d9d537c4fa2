//! WebSocket echo upstream on a plain TCP listener (SECURITY-TESTS W1–W4).
//!
//! The handshake is done by hand (not by tungstenite's acceptor) so the fake can record the
//! exact bytes that arrive after the upgrade request, tell apart bytes that arrived *before*
//! its 101 was written (W2 optimistic bytes), and answer with a non-101 status while keeping
//! the connection as plain HTTP/1.1 (W1 failed-upgrade smuggling).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::http1;
use crate::raw::lock;
use crate::task::{bind_loopback, spawn_accept_loop, AbortOnDrop};

/// Behaviour of a [`WsEchoUpstream`].
#[derive(Debug, Clone, Default)]
pub struct WsOptions {
    /// Answer every upgrade request with `(status, body)` instead of 101 (e.g. 426, 200, 404),
    /// keep the connection open and answer later plain requests with 200 whose body is their
    /// request line: a gateway that wrongly entered tunnel mode lets `GET /admin` reach us.
    pub reject: Option<(u16, Vec<u8>)>,
    /// Wait this long after the upgrade request before writing the 101 (W2: bytes the client
    /// sends meanwhile must not be forwarded yet).
    pub handshake_delay: Duration,
}

#[derive(Default)]
struct WsState {
    heads: Mutex<Vec<String>>,
    /// Per upgraded connection: bytes read after the upgrade request head, raw (frames).
    post_handshake: Mutex<Vec<Vec<u8>>>,
    /// Per upgraded connection: the subset that had arrived before the 101 was written.
    pre_101: Mutex<Vec<Vec<u8>>>,
    connections: AtomicUsize,
    upgrades: AtomicUsize,
    messages: AtomicUsize,
}

/// WebSocket echo upstream: echoes text/binary, answers pings (tungstenite auto-pong),
/// echoes close. Stops when dropped.
pub struct WsEchoUpstream {
    addr: SocketAddr,
    state: Arc<WsState>,
    _task: AbortOnDrop,
}

impl WsEchoUpstream {
    /// Accepting echo server.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(WsOptions::default()).await
    }

    pub async fn start_with(options: WsOptions) -> anyhow::Result<Self> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(WsState::default());
        let st = state.clone();
        let options = Arc::new(options);
        let task = spawn_accept_loop(listener, move |stream, _| {
            serve_ws(stream, options.clone(), st.clone())
        });
        Ok(Self {
            addr,
            state,
            _task: task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        crate::http_url(self.addr)
    }
    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }
    /// Every request head received (upgrade or plain), raw text, in order.
    pub fn request_heads(&self) -> Vec<String> {
        lock(&self.state.heads).clone()
    }
    /// Just the request lines of [`Self::request_heads`].
    pub fn request_lines(&self) -> Vec<String> {
        self.request_heads()
            .iter()
            .map(|h| h.lines().next().unwrap_or_default().to_string())
            .collect()
    }
    /// Raw bytes received after each successful handshake's request head.
    pub fn post_handshake_bytes(&self) -> Vec<Vec<u8>> {
        lock(&self.state.post_handshake).clone()
    }
    /// Bytes that had arrived before the 101 was written, per upgraded connection.
    pub fn pre_101_bytes(&self) -> Vec<Vec<u8>> {
        lock(&self.state.pre_101).clone()
    }
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    /// Completed 101 handshakes.
    pub fn upgrades(&self) -> usize {
        self.state.upgrades.load(Ordering::SeqCst)
    }
    /// Text/binary messages echoed.
    pub fn messages(&self) -> usize {
        self.state.messages.load(Ordering::SeqCst)
    }
}

async fn serve_ws(mut stream: TcpStream, options: Arc<WsOptions>, st: Arc<WsState>) {
    st.connections.fetch_add(1, Ordering::SeqCst);
    let mut buf = Vec::new();
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        let head = loop {
            if let Some(h) = http1::parse_head(&buf) {
                break h;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        lock(&st.heads).push(String::from_utf8_lossy(&buf[..head.len]).into_owned());
        let is_upgrade = head
            .header("upgrade")
            .is_some_and(|v| v.to_ascii_lowercase().contains("websocket"));

        if is_upgrade && options.reject.is_none() {
            let Some(key) = head.header("sec-websocket-key").map(str::to_owned) else {
                let _ = stream
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
                return;
            };
            let mut early: Vec<u8> = buf.split_off(head.len);
            if !options.handshake_delay.is_zero() {
                let until = tokio::time::Instant::now() + options.handshake_delay;
                while let Ok(r) = tokio::time::timeout_at(until, stream.read(&mut tmp)).await {
                    match r {
                        Ok(0) | Err(_) => return,
                        Ok(n) => early.extend_from_slice(&tmp[..n]),
                    }
                }
            }
            let slot = {
                let mut post = lock(&st.post_handshake);
                post.push(early.clone());
                lock(&st.pre_101).push(early.clone());
                post.len() - 1
            };
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                derive_accept_key(key.as_bytes())
            );
            if let Some(proto) = head.header("sec-websocket-protocol") {
                let first = proto.split(',').next().unwrap_or_default().trim();
                resp.push_str(&format!("Sec-WebSocket-Protocol: {first}\r\n"));
            }
            resp.push_str("\r\n");
            if stream.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            st.upgrades.fetch_add(1, Ordering::SeqCst);
            let recording = Recording {
                inner: stream,
                state: st.clone(),
                slot,
            };
            let ws =
                WebSocketStream::from_partially_read(recording, early, Role::Server, None).await;
            echo(ws, &st).await;
            return;
        }

        // Plain HTTP (or a refused upgrade): consume the whole request, answer, keep going.
        let len = loop {
            if let Some(len) = http1::request_len(&buf) {
                break len;
            }
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        buf.drain(..len);
        let (status, body) = match (&options.reject, is_upgrade) {
            (Some((status, body)), true) => (*status, body.clone()),
            _ => (200, head.start_line.clone().into_bytes()),
        };
        let resp = crate::raw::http_response(status, &[], &body);
        if stream.write_all(&resp).await.is_err() {
            return;
        }
    }
}

async fn echo(mut ws: WebSocketStream<Recording>, st: &WsState) {
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                st.messages.fetch_add(1, Ordering::SeqCst);
                if ws.send(m).await.is_err() {
                    return;
                }
            }
            // Pongs and the close reply are queued by tungstenite; flush them now.
            Ok(Message::Ping(_) | Message::Close(_)) => {
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Tees every byte read into the per-connection recording.
struct Recording {
    inner: TcpStream,
    state: Arc<WsState>,
    slot: usize,
}

impl AsyncRead for Recording {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            if let Some(rec) = lock(&this.state.post_handshake).get_mut(this.slot) {
                rec.extend_from_slice(&buf.filled()[before..]);
            }
        }
        res
    }
}

impl AsyncWrite for Recording {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawConn;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn ws_echo_round_trip() -> anyhow::Result<()> {
        let up = WsEchoUpstream::start().await?;
        let (mut ws, resp) =
            tokio_tungstenite::connect_async(format!("{}/chat", up.ws_url())).await?;
        assert_eq!(resp.status(), 101);
        ws.send(Message::text("hello")).await?;
        assert_eq!(ws.next().await.transpose()?, Some(Message::text("hello")));
        let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(big.clone())).await?;
        assert_eq!(ws.next().await.transpose()?, Some(Message::binary(big)));
        ws.send(Message::Ping(b"p".to_vec().into())).await?;
        assert_eq!(
            ws.next().await.transpose()?,
            Some(Message::Pong(b"p".to_vec().into()))
        );
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        }))
        .await?;
        match ws.next().await.transpose()? {
            Some(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Normal),
            other => anyhow::bail!("expected close echo, got {other:?}"),
        }
        assert_eq!(up.upgrades(), 1);
        assert_eq!(up.messages(), 2);
        assert!(up.request_lines()[0].starts_with("GET /chat HTTP/1.1"));
        assert!(up.post_handshake_bytes()[0].len() > 1 << 20);
        Ok(())
    }

    #[tokio::test]
    async fn ws_refused_upgrade_stays_http() -> anyhow::Result<()> {
        let up = WsEchoUpstream::start_with(WsOptions {
            reject: Some((426, b"upgrade required".to_vec())),
            ..WsOptions::default()
        })
        .await?;
        let mut c = RawConn::connect(up.addr()).await?;
        c.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 1337\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await?;
        let r = c.read_response(T).await?;
        assert_eq!((r.status, r.body_str().as_str()), (426, "upgrade required"));
        c.write(b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let r = c.read_response(T).await?;
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "GET /admin HTTP/1.1")
        );
        assert_eq!(up.upgrades(), 0);
        assert_eq!(
            up.request_lines(),
            vec!["GET /ws HTTP/1.1", "GET /admin HTTP/1.1"]
        );
        Ok(())
    }

    #[tokio::test]
    async fn ws_records_optimistic_bytes() -> anyhow::Result<()> {
        let up = WsEchoUpstream::start_with(WsOptions {
            handshake_delay: Duration::from_millis(100),
            ..WsOptions::default()
        })
        .await?;
        let mut c = RawConn::connect(up.addr()).await?;
        c.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nEARLY").await?;
        let r = c.read_response(T).await?;
        assert_eq!(r.status, 101);
        assert_eq!(
            r.header("sec-websocket-accept"),
            Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
        assert_eq!(up.pre_101_bytes(), vec![b"EARLY".to_vec()]);
        Ok(())
    }
}
