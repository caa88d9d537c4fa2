//! Per-connection bookkeeping: activity and in-flight tracking for the idle and header
//! timeouts. hyper's own `header_read_timeout` also runs between keep-alive requests, which
//! would make every idle connection close at the header timeout; we need both limits
//! separately (10 s to send a head, 60 s idle between requests), so we track them here.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// What the pipeline knows about the connection a request came on.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    pub listener: Arc<str>,
    pub state: Arc<ConnState>,
    /// This connection's slot under `limits.max_connections`. A WebSocket tunnel takes it
    /// over when the HTTP connection turns into a tunnel, so tunnels stay under the cap.
    pub permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl ConnInfo {
    pub fn take_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.permit.lock() {
            Ok(mut p) => p.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

pub struct ConnState {
    /// Only HTTP/2 connections are supervised through this state (hyper runs them); the
    /// HTTP/1 server keeps its own timers, and skips the bookkeeping (a clock read per I/O).
    tracked: std::sync::atomic::AtomicBool,
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` of the last byte read or written.
    last_activity: AtomicU64,
    /// Milliseconds since `epoch` (+1, 0 = none) when bytes of a not-yet-dispatched request
    /// head first arrived.
    head_started: AtomicU64,
}

impl ConnState {
    pub fn new() -> ConnState {
        ConnState {
            tracked: std::sync::atomic::AtomicBool::new(false),
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    /// From now on, reads, writes and requests are tracked (the connection speaks HTTP/2).
    pub fn track(&self) {
        self.tracked.store(true, Ordering::Relaxed);
        self.touch_now();
    }

    fn tracked(&self) -> bool {
        self.tracked.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        if self.tracked() {
            self.touch_now();
        }
    }

    fn touch_now(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    fn on_read(&self) {
        if !self.tracked() {
            return;
        }
        let now = self.now_ms();
        self.last_activity.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            let _ = self.head_started.compare_exchange(
                0,
                now + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    pub fn request_started(&self) {
        if !self.tracked() {
            return;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        self.touch();
    }

    pub fn request_finished(&self) {
        if !self.tracked() {
            return;
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// What the connection supervisor should do now.
    pub fn check(&self, header_timeout: Duration, idle_timeout: Duration) -> ConnCheck {
        // Bytes arriving do not wake the supervisor (that would cost a task wake-up per
        // request), so while nothing is pending it re-checks at this period: a slow head is
        // cut within header_timeout + period (L4: "≤ header timeout + 1 s").
        let period = (header_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        if self.in_flight() > 0 {
            // Requests in flight are governed by their own timeouts.
            return ConnCheck::WaitUntil(Instant::now() + period);
        }
        let now = self.now_ms();
        let head = self.head_started.load(Ordering::Relaxed);
        if head != 0 {
            let started = head - 1;
            let deadline = started + header_timeout.as_millis() as u64;
            if now >= deadline {
                return ConnCheck::HeaderTimeout;
            }
            return ConnCheck::WaitUntil(self.epoch + Duration::from_millis(deadline));
        }
        let last = self.last_activity.load(Ordering::Relaxed);
        let deadline = last + idle_timeout.as_millis() as u64;
        if now >= deadline {
            return ConnCheck::Idle;
        }
        let idle_at = self.epoch + Duration::from_millis(deadline);
        ConnCheck::WaitUntil(idle_at.min(Instant::now() + period))
    }
}

impl Default for ConnState {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum ConnCheck {
    WaitUntil(Instant),
    HeaderTimeout,
    Idle,
}

/// An I/O wrapper that reports activity to [`ConnState`].
pub struct TrackedIo<T> {
    inner: T,
    state: Arc<ConnState>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        TrackedIo { inner, state }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.on_read();
        }
        res
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            self.state.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_and_header_timeouts_are_separate() {
        let s = ConnState::new();
        s.track();
        let ht = Duration::from_secs(10);
        let it = Duration::from_secs(60);
        assert!(matches!(s.check(ht, it), ConnCheck::WaitUntil(_)));
        // Idle, no bytes: closes at the idle timeout, not the header timeout.
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(matches!(s.check(ht, it), ConnCheck::WaitUntil(_)));
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(s.check(ht, it), ConnCheck::Idle);

        // A partial head starts the header timer, and the supervisor looks again soon
        // enough to cut it within a second of the header timeout.
        let s = ConnState::new();
        s.track();
        match s.check(ht, it) {
            ConnCheck::WaitUntil(t) => assert!(t <= Instant::now() + Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        s.on_read();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(s.check(ht, it), ConnCheck::HeaderTimeout);

        // Once dispatched, neither applies until the request finishes.
        let s = ConnState::new();
        s.track();
        s.on_read();
        s.request_started();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(matches!(s.check(ht, it), ConnCheck::WaitUntil(_)));
        s.request_finished();
        assert!(matches!(s.check(ht, it), ConnCheck::WaitUntil(_)));
    }
}
