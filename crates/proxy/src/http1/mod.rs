//! The gateway's own HTTP/1.1 codec, used on both sides of the data plane: the client-facing
//! server connection (`server::h1`) and the upstream client (`upstream::h1`). HTTP/2 stays on
//! hyper/h2.
//!
//! Why not hyper's HTTP/1 here (ENGINEERING.md allows replacing foundations with
//! measurements): with hyper on both sides a proxied request cost ~57k instructions, 2.9x
//! nginx's, of which hyper + hyper-util + tokio scheduling was ~40k: every upstream request
//! crossed to hyper-util's per-connection task and back through channels, the pool hashed its
//! key twice, and response heads were parsed into freshly allocated header maps. hyper also
//! keeps 16 KiB of buffers per idle connection for the connection's life with no knob to
//! release them. Here the upstream connection is driven inline by the request's own task,
//! header values are slices of the frozen head (no copy), and an idle client connection
//! holds no buffer at all (`bench/RESULTS.md` has the before/after figures).
//!
//! What is here: head parsing (`head`, lines split by `split`), head encoding (`encode`),
//! header names and recycled header maps (`names`), upstream response fields passed on as
//! they arrived (`raw`), word-at-a-time byte tests (`swar`), body decoding (`decode`), body writing (`write`), and the I/O
//! helpers both sides share.

pub mod decode;
pub mod encode;
pub mod head;
pub mod names;
pub mod raw;
pub mod split;
pub mod swar;
pub mod write;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A byte stream either side can run HTTP/1.1 over (TCP, TLS over TCP, ...).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Bytes read before the stream is handed on (the start of an HTTP/2 preface, or tunnel
/// bytes that arrived with an upgrade), replayed before reading from `io`.
pub struct Prefixed<I> {
    prefix: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    pub fn new(prefix: Bytes, io: I) -> Self {
        Prefixed { prefix, io }
    }
}

/// A connection handed over after `101 Switching Protocols`, with whatever the peer had
/// already sent.
pub type Upgraded = Prefixed<Box<dyn Io>>;

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Reads what is available into `buf`, growing it by `reserve` when it has little room.
/// `Ready(Ok(0))` is end of stream.
pub fn poll_read_buf<I: AsyncRead + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
    reserve: usize,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(reserve);
    }
    let before = buf.len();
    let fut = tokio::io::AsyncReadExt::read_buf(io, buf);
    let fut = std::pin::pin!(fut);
    match std::future::Future::poll(fut, cx) {
        Poll::Ready(Ok(_)) => Poll::Ready(Ok(buf.len() - before)),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Writes all of `buf` (advancing it as bytes are taken).
pub fn poll_write_all<I: AsyncWrite + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
    buf: &mut Bytes,
) -> Poll<io::Result<()>> {
    while !buf.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, buf) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => buf.advance(n),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Pin::new(&mut *io).poll_flush(cx)
}
