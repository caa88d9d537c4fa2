//! Byte-exact recording upstream and raw client (SECURITY-TESTS §2 harness, §4 F1–F5).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::http1::{self, RawResponse};
use crate::task::{bind_loopback, spawn_accept_loop, AbortOnDrop};

/// How a [`RawUpstream`] answers each request on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawScript {
    /// After a full request (head + CL or chunked body) write these bytes, keep the
    /// connection open and repeat for the next request.
    Respond(Vec<u8>),
    /// Like `Respond`, then close the connection (FIN).
    RespondAndClose(Vec<u8>),
    /// Read the request head, then reset the connection (RST via zero linger).
    ResetAfterHead,
    /// Read the full request, write this response prefix, pause briefly so the peer can read
    /// it, then reset.
    ResetAfterBytes(Vec<u8>),
    /// Accept and keep reading (and recording), never answer.
    Silent,
    /// Answer a full request with bytes that are not HTTP, then close.
    Garbage,
    /// Wait, then answer like `Respond`.
    Delay(Duration, Vec<u8>),
    /// Answer like `Respond` but one byte per `every` (slow-body / slow-header tests).
    Trickle { response: Vec<u8>, every: Duration },
    /// Answer the first `keep` requests of each connection like `Respond`, then read the next
    /// request and close without answering: the keep-alive race where the upstream drops a
    /// pooled connection just as it is reused (F6).
    RespondThenDrop { response: Vec<u8>, keep: usize },
}

/// The non-HTTP bytes [`RawScript::Garbage`] writes.
pub const GARBAGE: &[u8] = b"\x00\xff\xfeSSH-2.0-garbage \x7f\r\n\r\nHTTP/9 what\r\n";

/// Pause before the RST of `ResetAfterBytes`, so the partial response reaches the peer's
/// receive buffer before the reset (an RST discards unsent data on our side).
const RESET_GRACE: Duration = Duration::from_millis(50);

impl RawScript {
    /// `Respond` with a `200 OK`, `Content-Length` framed plain-text body.
    pub fn ok(body: &str) -> Self {
        RawScript::Respond(http_response(200, &[], body.as_bytes()))
    }
}

/// Serialize a simple HTTP/1.1 response with `Content-Length`.
pub fn http_response(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[derive(Default)]
struct RawState {
    /// Every byte received, one entry per connection in accept order.
    received: Mutex<Vec<Vec<u8>>>,
    /// Each complete request as framed by the lenient splitter.
    requests: Mutex<Vec<Vec<u8>>>,
    heads: AtomicUsize,
    connections: AtomicUsize,
}

/// A raw TCP upstream that records exactly what it receives and answers per [`RawScript`].
pub struct RawUpstream {
    addr: SocketAddr,
    state: Arc<RawState>,
    _task: AbortOnDrop,
}

impl RawUpstream {
    pub async fn start(script: RawScript) -> anyhow::Result<Self> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(RawState::default());
        let st = state.clone();
        let task = spawn_accept_loop(listener, move |stream, _| {
            serve_raw(stream, script.clone(), st.clone())
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
    /// Bytes received per connection, in accept order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        lock(&self.state.received).clone()
    }
    /// Everything received on all connections, concatenated in accept order.
    pub fn received_all(&self) -> Vec<u8> {
        lock(&self.state.received).concat()
    }
    /// True if `needle` occurs in the bytes of any single connection.
    pub fn received_contains(&self, needle: &[u8]) -> bool {
        lock(&self.state.received)
            .iter()
            .any(|c| http1::find(c, needle).is_some())
    }
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
    /// Request heads seen (counted when the blank line after a head arrives). REJECT tests
    /// assert this is 0.
    pub fn total_requests_seen(&self) -> usize {
        self.state.heads.load(Ordering::SeqCst)
    }
    /// The complete requests received, each as exact bytes (CANON tests inspect these).
    pub fn requests(&self) -> Vec<Vec<u8>> {
        lock(&self.state.requests).clone()
    }
}

/// An upstream that answers after `delay` (F3). Alias for `RawScript::Delay`.
pub struct SlowUpstream;
impl SlowUpstream {
    pub async fn start(delay: Duration, response: Vec<u8>) -> anyhow::Result<RawUpstream> {
        RawUpstream::start(RawScript::Delay(delay, response)).await
    }
}

/// An upstream that accepts and never answers (F2 "accepted but silent").
pub struct BlackholeUpstream;
impl BlackholeUpstream {
    pub async fn start() -> anyhow::Result<RawUpstream> {
        RawUpstream::start(RawScript::Silent).await
    }
}

/// An address where nothing listens (F1): bind an OS-picked port, then release it.
pub fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not hide the recording from the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn serve_raw(mut stream: TcpStream, script: RawScript, state: Arc<RawState>) {
    state.connections.fetch_add(1, Ordering::SeqCst);
    let slot = {
        let mut rec = lock(&state.received);
        rec.push(Vec::new());
        rec.len() - 1
    };
    let mut buf: Vec<u8> = Vec::new();
    // How much of `buf` has already been counted as a head.
    let mut counted_head = false;
    let mut answered = 0usize;
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        // Count a head as soon as its blank line arrives, even if its body never does.
        if !counted_head && http1::find_head_end(&buf).is_some() {
            state.heads.fetch_add(1, Ordering::SeqCst);
            counted_head = true;
        }
        let ready = if script == RawScript::ResetAfterHead {
            http1::find_head_end(&buf)
        } else {
            http1::request_len(&buf)
        };
        let Some(len) = ready else {
            match stream.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.extend_from_slice(&tmp[..n]);
                    if let Some(conn) = lock(&state.received).get_mut(slot) {
                        conn.extend_from_slice(&tmp[..n]);
                    }
                    continue;
                }
            }
        };
        let request: Vec<u8> = buf.drain(..len).collect();
        lock(&state.requests).push(request);
        counted_head = false;
        let keep_going = match &script {
            RawScript::Respond(resp) => stream.write_all(resp).await.is_ok(),
            RawScript::RespondAndClose(resp) => {
                let _ = stream.write_all(resp).await;
                let _ = stream.shutdown().await;
                false
            }
            RawScript::ResetAfterHead => {
                reset(stream);
                return;
            }
            RawScript::ResetAfterBytes(prefix) => {
                let _ = stream.write_all(prefix).await;
                let _ = stream.flush().await;
                tokio::time::sleep(RESET_GRACE).await;
                reset(stream);
                return;
            }
            RawScript::Silent => true,
            RawScript::Garbage => {
                let _ = stream.write_all(GARBAGE).await;
                let _ = stream.shutdown().await;
                false
            }
            RawScript::Delay(d, resp) => {
                tokio::time::sleep(*d).await;
                stream.write_all(resp).await.is_ok()
            }
            RawScript::RespondThenDrop { response, keep } => {
                answered += 1;
                if answered > *keep {
                    reset(stream);
                    return;
                }
                stream.write_all(response).await.is_ok()
            }
            RawScript::Trickle { response, every } => {
                let mut ok = true;
                for b in response {
                    if stream.write_all(&[*b]).await.is_err() {
                        ok = false;
                        break;
                    }
                    tokio::time::sleep(*every).await;
                }
                ok
            }
        };
        if !keep_going {
            return;
        }
    }
}

/// Abortive close: the peer sees ECONNRESET instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Connect, write `bytes` exactly, half-close nothing, and read until EOF, reset or
/// `timeout` (overall). Returns whatever arrived.
pub async fn raw_request(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let mut conn = RawConn::connect(addr).await?;
    conn.write(bytes).await?;
    Ok(conn.read_until_timeout(timeout).await)
}

/// A raw client connection for multi-step exchanges.
pub struct RawConn {
    stream: TcpStream,
    /// Read but not yet handed out (by `read_response`/`read_until`).
    pending: Vec<u8>,
    eof: bool,
    reset: bool,
}

impl RawConn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            pending: Vec::new(),
            eof: false,
            reset: false,
        })
    }

    /// Write exact bytes.
    pub async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await.context("raw write")?;
        self.stream.flush().await.context("raw flush")
    }

    /// Send FIN (half-close our side).
    pub async fn shutdown_write(&mut self) -> anyhow::Result<()> {
        self.stream.shutdown().await.context("raw shutdown")
    }

    /// Read once into `pending`; false on EOF/reset/timeout.
    async fn fill(&mut self, until: tokio::time::Instant) -> bool {
        if self.eof {
            return false;
        }
        let mut tmp = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, self.stream.read(&mut tmp)).await {
            Ok(Ok(0)) => {
                self.eof = true;
                false
            }
            Ok(Ok(n)) => {
                self.pending.extend_from_slice(&tmp[..n]);
                true
            }
            Ok(Err(e)) => {
                self.eof = true;
                self.reset = matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                );
                false
            }
            Err(_elapsed) => false,
        }
    }

    /// Everything that arrives until EOF/reset or `timeout` elapses (plus anything already
    /// buffered).
    pub async fn read_until_timeout(&mut self, timeout: Duration) -> Vec<u8> {
        let until = tokio::time::Instant::now() + timeout;
        while self.fill(until).await {}
        std::mem::take(&mut self.pending)
    }

    /// Read until `needle` has arrived; returns bytes through the needle (the rest stays
    /// buffered). `None` on EOF/timeout without it.
    pub async fn read_until(&mut self, needle: &[u8], timeout: Duration) -> Option<Vec<u8>> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(i) = http1::find(&self.pending, needle) {
                return Some(self.pending.drain(..i + needle.len()).collect());
            }
            if !self.fill(until).await {
                return None;
            }
        }
    }

    /// Read exactly one framed HTTP/1.x response (interim 1xx responses count as one).
    /// Close-delimited bodies end at EOF. Errors on timeout or EOF before a full response.
    pub async fn read_response(&mut self, timeout: Duration) -> anyhow::Result<RawResponse> {
        self.read_response_to(false, timeout).await
    }

    /// [`Self::read_response`] for the answer to a HEAD request.
    pub async fn read_response_to(
        &mut self,
        head_request: bool,
        timeout: Duration,
    ) -> anyhow::Result<RawResponse> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let complete = http1::response_len(&self.pending, head_request).or_else(|| {
                // Close-delimited (or truncated) message: complete at EOF.
                (self.eof && http1::parse_head(&self.pending).is_some())
                    .then_some(self.pending.len())
            });
            if let Some(len) = complete {
                let bytes: Vec<u8> = self.pending.drain(..len).collect();
                return http1::parse_responses(&bytes, head_request)
                    .into_iter()
                    .next()
                    .context("bytes are not an HTTP response");
            }
            let progressed = self.fill(until).await;
            // At EOF a started response is complete (close-delimited or truncated): loop
            // once more so the check above returns it.
            let finishable = self.eof && http1::parse_head(&self.pending).is_some();
            if !progressed && !finishable {
                anyhow::bail!(
                    "no complete response (eof={}, reset={}); got {:?}",
                    self.eof,
                    self.reset,
                    String::from_utf8_lossy(&self.pending)
                );
            }
        }
    }

    /// True if the peer closed (FIN or RST) within `timeout`. Data arriving meanwhile is kept
    /// for later reads.
    pub async fn is_closed(&mut self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while self.fill(until).await {}
        self.eof
    }

    /// True once a read failed with ECONNRESET/ECONNABORTED.
    pub fn was_reset(&self) -> bool {
        self.reset
    }

    /// Bytes read but not yet returned.
    pub fn buffered(&self) -> &[u8] {
        &self.pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn respond_records_and_keeps_alive() -> anyhow::Result<()> {
        let up = RawUpstream::start(RawScript::ok("hi")).await?;
        let mut c = RawConn::connect(up.addr()).await?;
        // Two pipelined requests in one write, one with a chunked body.
        let reqs = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        c.write(reqs).await?;
        let r1 = c.read_response(T).await?;
        let r2 = c.read_response(T).await?;
        assert_eq!((r1.status, r1.body_str().as_str()), (200, "hi"));
        assert_eq!(r2.status, 200);
        assert!(!c.is_closed(Duration::from_millis(50)).await);
        assert_eq!(up.received(), vec![reqs.to_vec()]);
        assert_eq!(up.total_requests_seen(), 2);
        assert_eq!(up.requests().len(), 2);
        assert!(up.requests()[1].starts_with(b"GET /b "));
        assert_eq!(up.connections(), 1);
        assert!(up.received_contains(b"3\r\nabc"));
        Ok(())
    }

    #[tokio::test]
    async fn reset_after_head_is_a_reset() -> anyhow::Result<()> {
        let up = RawUpstream::start(RawScript::ResetAfterHead).await?;
        let mut c = RawConn::connect(up.addr()).await?;
        c.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        assert!(c.is_closed(T).await);
        assert!(c.was_reset());
        assert_eq!(up.total_requests_seen(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn reset_after_bytes_delivers_prefix() -> anyhow::Result<()> {
        let prefix = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec();
        let up = RawUpstream::start(RawScript::ResetAfterBytes(prefix)).await?;
        let mut c = RawConn::connect(up.addr()).await?;
        c.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        let r = c.read_response(T).await?;
        assert!(r.truncated);
        assert_eq!(r.body_str(), "partial");
        assert!(c.was_reset());
        Ok(())
    }

    #[tokio::test]
    async fn silent_garbage_delay_and_helpers() -> anyhow::Result<()> {
        let silent = BlackholeUpstream::start().await?;
        let got = raw_request(
            silent.addr(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Duration::from_millis(100),
        )
        .await?;
        assert!(got.is_empty());
        assert_eq!(silent.total_requests_seen(), 1);

        let garbage = RawUpstream::start(RawScript::Garbage).await?;
        let got = raw_request(garbage.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T).await?;
        assert_eq!(got, GARBAGE);

        let slow =
            SlowUpstream::start(Duration::from_millis(100), http_response(204, &[], b"")).await?;
        let start = std::time::Instant::now();
        let mut c = RawConn::connect(slow.addr()).await?;
        c.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        assert_eq!(c.read_response(T).await?.status, 204);
        assert!(start.elapsed() >= Duration::from_millis(100));

        let trickle = RawUpstream::start(RawScript::Trickle {
            response: http_response(200, &[], b"ab"),
            every: Duration::from_millis(1),
        })
        .await?;
        let mut c = RawConn::connect(trickle.addr()).await?;
        c.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
        assert_eq!(c.read_response(T).await?.body_str(), "ab");

        let closed = closed_port();
        assert!(TcpStream::connect(closed).await.is_err());
        Ok(())
    }

    #[tokio::test]
    async fn drop_stops_server() -> anyhow::Result<()> {
        let up = RawUpstream::start(RawScript::Silent).await?;
        let addr = up.addr();
        let mut c = RawConn::connect(addr).await?;
        drop(up);
        // The connection task is aborted with the accept loop, so the client sees a close.
        assert!(c.is_closed(T).await);
        assert!(
            crate::wait_for(T, || std::net::TcpStream::connect(addr).is_err()).await,
            "listener still accepting after drop"
        );
        Ok(())
    }
}
