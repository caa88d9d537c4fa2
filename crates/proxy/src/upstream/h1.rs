//! The HTTP/1.1 upstream client: one connection pool per target, and the exchange driven by
//! the request's own task (no per-connection task, no channels between tasks).
//!
//! A call checks out the most recently used idle connection (LIFO: fewer connections stay
//! warm) after checking it is still open, or connects (DNS cache, connect timeout, TLS).
//! It writes the head (and the first body bytes, when ready, in the same write), streams
//! the rest of the body, then reads the response head. The response body reads straight
//! from the connection; when it ends cleanly the connection goes back to the pool, otherwise
//! it is closed. A connection whose response framing was doubtful (S13), that had bytes
//! left over after a response, or whose response said `close` is never reused.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::body::{Body, BoxError};
use crate::http1::decode::{Decoded, Decoder};
use crate::http1::encode::{self, BodyFraming};
use crate::http1::head::{self, Framing, ResponseError, ResponseFraming};
use crate::http1::raw::RawFields;
use crate::http1::write::{write_body, Sink, WriteBodyError};
use crate::http1::{poll_read_buf, poll_write_all, Io, Prefixed, Upgraded};
use crate::policy::forwarded::Added;

use super::dns::DnsCache;

/// Largest upstream response head, and most header fields in it (X5: beyond, 502).
pub const MAX_RESPONSE_HEAD: usize = 128 * 1024;
pub const MAX_RESPONSE_HEADERS: usize = 200;
/// Most idle connections kept per target; bounded so a burst cannot pin fds forever.
pub const MAX_IDLE: usize = 256;
const READ_CHUNK: usize = 16 * 1024;
const MAX_FRAME: usize = 64 * 1024;

/// TCP or TLS over TCP.
pub enum Stream {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One upstream connection. Always boxed (`Box<ClientConn>`, from connect to close): it is
/// moved from the pool to the call, into the response body and back several times per
/// request, and moving a pointer is free where moving these ~100 bytes was a `memcpy` each
/// (it also keeps every response that carries one that much smaller).
pub struct ClientConn {
    stream: Stream,
    rbuf: BytesMut,
    /// Where request heads are encoded; reused by the connection's next request.
    wbuf: BytesMut,
    /// Where a response head that arrives in pieces has been searched to.
    reader: head::ResponseReader,
    /// Bounds each exchange (re-armed per request; made on the first).
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

struct Idle {
    conn: Box<ClientConn>,
    since: Instant,
}

/// How to reach one target.
pub struct Endpoint {
    /// Host name for DNS (no brackets), when the target is not an IP literal.
    pub host: String,
    pub ip: Option<IpAddr>,
    pub port: u16,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// TLS for `https://` targets: the connector and the name sent as SNI and verified.
    pub tls: Option<(TlsConnector, ServerName<'static>)>,
}

pub struct Pool {
    endpoint: Endpoint,
    dns: DnsCache,
    idle: Mutex<Vec<Idle>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Pool {
    /// A pool for `endpoint`, with a background reaper that closes connections idle past
    /// `idle_timeout` (it stops when the pool is dropped).
    pub fn new(endpoint: Endpoint, dns: DnsCache) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            endpoint,
            dns,
            idle: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&pool);
        let every = (pool.endpoint.idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(10));
        tokio::spawn(reaper(weak, every));
        pool
    }

    /// A live idle connection, or `None`.
    fn checkout_idle(&self, now: Instant) -> Option<Box<ClientConn>> {
        loop {
            let idle = lock(&self.idle).pop()?;
            if now.saturating_duration_since(idle.since) >= self.endpoint.idle_timeout {
                // Everything under it is older still.
                lock(&self.idle).clear();
                return None;
            }
            let mut conn = idle.conn;
            if still_open(&mut conn.stream) {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: Box<ClientConn>) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self) -> io::Result<Box<ClientConn>> {
        let e = &self.endpoint;
        let addrs: Vec<SocketAddr> = match e.ip {
            Some(ip) => vec![SocketAddr::new(ip, e.port)],
            None => {
                let ips = tokio::time::timeout(e.connect_timeout, self.dns.resolve(&e.host))
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
                ips.iter().map(|ip| SocketAddr::new(*ip, e.port)).collect()
            }
        };
        let mut last = io::Error::other("no addresses");
        for addr in addrs {
            match tokio::time::timeout(e.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    let _ = tcp.set_nodelay(true);
                    let stream = match &e.tls {
                        None => Stream::Tcp(tcp),
                        Some((connector, name)) => {
                            let hs = connector.connect(name.clone(), tcp);
                            match tokio::time::timeout(e.connect_timeout, hs).await {
                                Ok(Ok(tls)) => Stream::Tls(Box::new(tls)),
                                Ok(Err(err)) => {
                                    last = err;
                                    continue;
                                }
                                Err(_) => {
                                    last = io::ErrorKind::TimedOut.into();
                                    continue;
                                }
                            }
                        }
                    };
                    return Ok(Box::new(ClientConn {
                        stream,
                        rbuf: BytesMut::new(),
                        wbuf: BytesMut::new(),
                        reader: head::ResponseReader::default(),
                        timer: None,
                    }));
                }
                Ok(Err(err)) => last = err,
                Err(_) => last = io::ErrorKind::TimedOut.into(),
            }
        }
        Err(last)
    }
}

async fn reaper(pool: Weak<Pool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let timeout = pool.endpoint.idle_timeout;
        lock(&pool.idle).retain(|i| i.since.elapsed() < timeout);
    }
}

/// An idle connection is usable if reading would block: no EOF, no reset, no stray bytes.
/// Plain TCP asks the socket's readiness (`try_read`: no system call while the last read
/// left it not readable, and no waker stored; a noop waker polled in its place cost ~160
/// instructions a request). TLS reads through the session (a close_notify is an EOF).
fn still_open(stream: &mut Stream) -> bool {
    let mut one = [0u8; 1];
    match stream {
        Stream::Tcp(s) => {
            matches!(s.try_read(&mut one), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        }
        Stream::Tls(s) => {
            let mut cx = Context::from_waker(Waker::noop());
            let mut rb = ReadBuf::new(&mut one);
            matches!(
                Pin::new(s.as_mut()).poll_read(&mut cx, &mut rb),
                Poll::Pending
            )
        }
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum SendError {
    /// No connection could be made: nothing was sent.
    Connect(io::Error),
    /// The connection failed after (part of) the request may have been sent.
    Io(io::Error),
    /// The upstream's response head was invalid or oversized.
    Response(ResponseError),
    /// The client's request body failed (too large, malformed, client gone).
    Body(BoxError),
    /// No response head by the deadline.
    Timeout,
}

/// What is sent: the head (borrowed: a retry sends it again) and the body.
pub struct Outgoing<'a> {
    pub method: &'a Method,
    /// Origin form.
    pub path_and_query: &'a str,
    pub headers: &'a HeaderMap,
    pub added: &'a Added,
    pub body: Body,
}

/// Sends a request to the pool's target and returns the response once its head has arrived,
/// or [`SendError::Timeout`] at `deadline`. `now` is the attempt's start (read once per
/// attempt by the caller).
pub async fn send(
    pool: &Arc<Pool>,
    now: Instant,
    deadline: Instant,
    req: Outgoing<'_>,
) -> Result<Response<ResponseBody>, SendError> {
    let mut conn = match pool.checkout_idle(now) {
        Some(c) => c,
        // Boxed: DNS, TCP and TLS handshake futures are large, and inline they would make
        // every call's future (moved at each await) that much larger.
        None => Box::pin(tokio::time::timeout_at(deadline, pool.connect()))
            .await
            .map_err(|_| SendError::Timeout)?
            .map_err(SendError::Connect)?,
    };
    // The connection's own timer, re-armed: moving a registered timer to a later deadline
    // only stores the new expiry (the wheel is touched about once per timeout period),
    // where a timer per call was inserted into and removed from the wheel every time
    // (~600 instructions a request). A pooled connection's timer may still fire once at its
    // last deadline: a spurious wake-up of the task that used it last, which finds nothing
    // to do; the next request re-arms it.
    let mut timer = match conn.timer.take() {
        Some(mut t) => {
            t.as_mut().reset(deadline);
            t
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    let head = {
        let exchange = exchange(&mut conn, req);
        tokio::pin!(exchange);
        std::future::poll_fn(|cx| match exchange.as_mut().poll(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| Err(SendError::Timeout)),
        })
        .await
    };
    conn.timer = Some(timer);
    let h = head?;
    let status = h.parts.status;
    let decoder = match h.framing {
        ResponseFraming::None => Decoder::Done,
        ResponseFraming::Length(n) => Decoder::length(n),
        ResponseFraming::Chunked => Decoder::chunked(),
        ResponseFraming::Eof => Decoder::Eof,
    };
    let reusable = h.reusable && status != StatusCode::SWITCHING_PROTOCOLS;
    let body = ResponseBody {
        conn: Some(conn),
        decoder,
        pool: Arc::downgrade(pool),
        reusable,
    };
    Ok(Response::from_parts(h.parts, body))
}

/// Writes the request and reads until the response head (1xx other than 101 skipped).
async fn exchange(
    conn: &mut ClientConn,
    req: Outgoing<'_>,
) -> Result<head::ResponseHead, SendError> {
    let Outgoing {
        method,
        path_and_query,
        headers,
        added,
        mut body,
    } = req;
    let framing = match body.size_hint().exact() {
        Some(0) if body.is_end_stream() => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };
    let mut out = std::mem::take(&mut conn.wbuf);
    encode::encode_request(&mut out, method, path_and_query, headers, added, framing);
    send_body(conn, &mut body, &mut out, framing).await?;
    drop(body);
    conn.wbuf = out;

    let head_request = *method == Method::HEAD;
    loop {
        let parsed = conn
            .reader
            .parse(
                &mut conn.rbuf,
                MAX_RESPONSE_HEAD,
                MAX_RESPONSE_HEADERS,
                head_request,
            )
            .map_err(SendError::Response)?;
        let Some(h) = parsed else {
            let n = std::future::poll_fn(|cx| {
                poll_read_buf(&mut conn.stream, cx, &mut conn.rbuf, READ_CHUNK)
            })
            .await
            .map_err(SendError::Io)?;
            if n == 0 {
                return Err(SendError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            continue;
        };
        let status = h.parts.status;
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            // 100 Continue, 102, 103: not the response.
            continue;
        }
        return Ok(h);
    }
}

/// Writes the head and the body (small ready bodies in the head's write; no body: the head).
async fn send_body(
    conn: &mut ClientConn,
    body: &mut Body,
    out: &mut BytesMut,
    framing: Framing,
) -> Result<(), SendError> {
    let framing = match framing {
        Framing::None => BodyFraming::None,
        Framing::Length(n) => BodyFraming::Length(n),
        Framing::Chunked => BodyFraming::Chunked,
    };
    write_body(body, out, framing, &mut conn.stream)
        .await
        .map_err(|e| match e {
            WriteBodyError::Io(e) => SendError::Io(e),
            WriteBodyError::Body(e) => SendError::Body(e),
            e @ WriteBodyError::Length { .. } => SendError::Body(e.to_string().into()),
        })
}

impl Sink for Stream {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        write(self, bytes).await
    }
}

async fn write(stream: &mut Stream, bytes: Bytes) -> io::Result<()> {
    let mut bytes = bytes;
    std::future::poll_fn(|cx| poll_write_all(stream, cx, &mut bytes)).await
}

/// A response body read from the upstream connection. The connection returns to its pool
/// when the body has ended cleanly (also when dropped after its end).
pub struct ResponseBody {
    conn: Option<Box<ClientConn>>,
    decoder: Decoder,
    pool: Weak<Pool>,
    reusable: bool,
}

impl ResponseBody {
    /// The connection after `101 Switching Protocols`, with what the upstream already sent.
    pub fn take_upgrade(&mut self) -> Option<Upgraded> {
        let conn = self.conn.take()?;
        let rest = conn.rbuf.freeze();
        let io: Box<dyn Io> = Box::new(conn.stream);
        Some(Prefixed::new(rest, io))
    }

    /// The response's fields when they are passed on raw (its header map is then empty):
    /// read by the HTTP/1 response encoder, before the body (the connection goes back to
    /// the pool at the body's end).
    pub fn raw_fields(&self) -> Option<&RawFields> {
        self.conn.as_ref().map(|c| c.reader.raw())
    }

    /// Moves fields passed on raw into `headers`, for whoever needs the map.
    pub fn move_raw_into(&mut self, headers: &mut HeaderMap) {
        if let Some(c) = &mut self.conn {
            c.reader.raw_mut().move_into(headers);
        }
    }

    /// The raw fields were written: the head they point into is let go.
    pub fn raw_written(&mut self) {
        if let Some(c) = &mut self.conn {
            c.reader.raw_mut().clear();
        }
    }

    fn release(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.reader.raw_mut().clear();
            // Bytes after the end of the response belong to no request: never reuse.
            if self.reusable && conn.rbuf.is_empty() {
                if let Some(pool) = self.pool.upgrade() {
                    pool.put(conn);
                }
            }
        }
    }
}

impl HttpBody for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.rbuf, MAX_FRAME) {
                Ok(Decoded::Data(b)) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Ok(Decoded::Done) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
            match poll_read_buf(&mut conn.stream, cx, &mut conn.rbuf, READ_CHUNK) {
                Poll::Ready(Ok(0)) => {
                    return match this.decoder.eof() {
                        Ok(()) => {
                            this.conn = None;
                            Poll::Ready(None)
                        }
                        Err(e) => {
                            this.conn = None;
                            Poll::Ready(Some(Err(Box::new(e))))
                        }
                    };
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if self.decoder.is_done() {
            self.release();
        }
    }
}
