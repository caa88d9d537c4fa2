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
    pub tls: bool,
    /// Activity tracking, for HTTP/2 connections only (hyper runs them and the supervisor
    /// in `serve_h2` needs it; the HTTP/1 server keeps its own timers). Boxed on first use,
    /// so an HTTP/1 connection does not carry it.
    h2: std::sync::OnceLock<Box<ConnState>>,
    /// This connection's slot under `limits.max_connections`. A WebSocket tunnel takes it
    /// over when the HTTP connection turns into a tunnel, so tunnels stay under the cap.
    pub permit: std::sync::Mutex<Option<tokio::sync::OwnedSemaphorePermit>>,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, tls: bool, permit: tokio::sync::OwnedSemaphorePermit) -> ConnInfo {
        ConnInfo {
            peer,
            tls,
            h2: std::sync::OnceLock::new(),
            permit: std::sync::Mutex::new(Some(permit)),
        }
    }

    /// The connection speaks HTTP/2 from now on: its activity is tracked.
    pub fn track_h2(&self) -> &ConnState {
        self.h2.get_or_init(|| Box::new(ConnState::new()))
    }

    /// The activity state, when the connection speaks HTTP/2.
    pub fn h2_state(&self) -> Option<&ConnState> {
        self.h2.get().map(|b| &**b)
    }

    pub fn take_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match self.permit.lock() {
            Ok(mut p) => p.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

/// How a listener tells its connections to stop (graceful: with a grace period for the
/// requests in flight), and how the gateway's hard stop reaches them: one `Notify` per
/// listener, so a connection waits on a single waiter for both.
pub struct Stopper {
    notify: tokio::sync::Notify,
    /// The grace period in milliseconds + 1 once the listener stops (0: running).
    grace_ms: AtomicU64,
    /// The gateway's hard stop (shared by every listener).
    hard: Arc<std::sync::atomic::AtomicBool>,
}

impl Stopper {
    pub fn new(hard: Arc<std::sync::atomic::AtomicBool>) -> Stopper {
        Stopper {
            notify: tokio::sync::Notify::new(),
            grace_ms: AtomicU64::new(0),
            hard,
        }
    }

    /// Stop accepting; connections finish their requests within `grace`, idle ones close.
    pub fn stop(&self, grace: Duration) {
        let ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX - 1);
        self.grace_ms.store(ms + 1, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Wakes every connection to look at the hard-stop flag (already set).
    pub fn poke(&self) {
        self.notify.notify_waiters();
    }

    /// `Some(grace)` once the listener is stopping.
    pub fn grace(&self) -> Option<Duration> {
        match self.grace_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(Duration::from_millis(ms - 1)),
        }
    }

    pub fn hard_stopped(&self) -> bool {
        self.hard.load(Ordering::Acquire)
    }

    /// Stopping gracefully or hard: no new connections or requests.
    pub fn stopping(&self) -> bool {
        self.grace().is_some() || self.hard_stopped()
    }

    /// Resolves once stopping (gracefully or hard). For loops that only need to end.
    pub async fn stopped(&self) {
        loop {
            let next = self.notify.notified();
            tokio::pin!(next);
            // Registered before the flags are read, so a signal in between is not missed.
            next.as_mut().enable();
            if self.stopping() {
                return;
            }
            next.await;
        }
    }

    /// A waiter for the next stop or poke. Call `enable()` on it, then look at the flags,
    /// so a signal sent in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }
}

/// Counts a connection as open (the `gatehouse_connections` gauge, and what graceful
/// shutdown waits for) for as long as it lives, including while it is parked.
pub struct ConnGuard(Arc<crate::gateway::Shared>);

impl ConnGuard {
    pub fn new(shared: &Arc<crate::gateway::Shared>) -> ConnGuard {
        shared.open_connections.fetch_add(1, Ordering::Relaxed);
        shared.metrics.connections.inc();
        ConnGuard(shared.clone())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.metrics.connections.dec();
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

pub struct ConnState {
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
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_activity: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_activity.store(self.now_ms(), Ordering::Relaxed);
    }

    fn on_read(&self) {
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
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        self.touch();
    }

    pub fn request_finished(&self) {
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

/// An I/O wrapper that reports activity to the connection's [`ConnState`].
pub struct TrackedIo<T> {
    inner: T,
    info: Arc<ConnInfo>,
}

impl<T> TrackedIo<T> {
    pub fn new(inner: T, info: Arc<ConnInfo>) -> Self {
        TrackedIo { inner, info }
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
            if let Some(s) = self.info.h2_state() {
                s.on_read();
            }
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
            if let Some(s) = self.info.h2_state() {
                s.touch();
            }
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
            if let Some(s) = self.info.h2_state() {
                s.touch();
            }
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
        match s.check(ht, it) {
            ConnCheck::WaitUntil(t) => assert!(t <= Instant::now() + Duration::from_secs(1)),
            other => panic!("{other:?}"),
        }
        s.on_read();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(s.check(ht, it), ConnCheck::HeaderTimeout);

        // Once dispatched, neither applies until the request finishes.
        let s = ConnState::new();
        s.on_read();
        s.request_started();
        tokio::time::advance(Duration::from_secs(100)).await;
        assert!(matches!(s.check(ht, it), ConnCheck::WaitUntil(_)));
        s.request_finished();
        assert!(matches!(s.check(ht, it), ConnCheck::WaitUntil(_)));
    }
}
