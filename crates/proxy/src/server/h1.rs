//! HTTP/1.1 server connections: read a head (within `header_timeout`), hand the request to
//! the pipeline, write the response, and keep the connection for the next request while the
//! client wants it (idle up to `idle_timeout`).
//!
//! One task per connection does everything for its requests, including the upstream call:
//! the request body is read from this connection's buffer by whoever polls it (the
//! upstream client), through [`ConnIo`] shared behind a mutex that is never contended
//! (reading the head, the body and writing the response happen one after another).
//!
//! An idle connection keeps no buffer: between requests the read buffer is released, and
//! the next bytes are first read into a stack buffer (`IDLE_READ`) and copied into a fresh
//! one.
//!
//! A connection is closed after: a head or framing error (answered first: 400/414/431,
//! JSON, `Connection: close`), `Connection: close` from either side, an HTTP/1.0 client
//! without keep-alive, a body the pipeline did not read to the end (S12; the rest is read
//! and discarded for a moment first, so the answer is not lost to a reset), a response body
//! that failed midway (the client sees it truncated, F4), and at the header or idle timeout.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::header;
use http::{Method, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::ReadBuf;
use tokio::sync::oneshot;
use tokio::time::Instant;

use gatehouse_core::GatewayError;

use crate::body::{BoxError, ClientBodyError, RequestBody, ResponseBody};
use crate::gateway::Shared;
use crate::http1::decode::{Decoded, Decoder};
use crate::http1::encode::{self, BodyFraming};
use crate::http1::head::{self, Framing, HeadError, RequestHead};
use crate::http1::names;
use crate::http1::write::{write_body, Sink, WriteBodyError};
use crate::http1::{poll_read_buf, poll_write_all, Io, Prefixed, Upgraded};
use crate::pipeline;
use crate::server::conn::{ConnGuard, ConnInfo, Stopper};
use crate::server::park::{Park, Parked};
use crate::server::ConnLimits;

/// Stack buffer for the first read of a request on an idle connection (and for discarding).
const IDLE_READ: usize = 4096;
/// A plaintext connection idle this long after a request is parked (no task of its own)
/// until its next request: busy connections never are, idle ones cost a fraction of a task.
/// This is for a connection that has served more than one request (it is likely to be used
/// again soon: parking and resuming it costs ~7k instructions, a third of a request).
pub const PARK_AFTER: Duration = Duration::from_secs(1);
/// The same for a connection that has served one request so far: most such connections stay
/// quiet (a client that made its call), and a burst of them (10,000 clients reconnecting)
/// holding their tasks for a full second left ~0.2 KiB more per connection behind in the
/// allocator once they were parked (`bench/`, idle section: 1.13–1.18 → 0.89–0.99 KiB).
pub const PARK_AFTER_FIRST: Duration = Duration::from_millis(100);
/// Read-buffer growth while a head or body is being read.
const READ_CHUNK: usize = 16 * 1024;
/// Largest data frame handed to the pipeline at once.
const MAX_FRAME: usize = 64 * 1024;
/// After an answer that left a request body unread: how long, and how much, of the rest is
/// read and discarded before closing (so the client is not reset before it reads the answer).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;
/// An unread request body up to this size is read and discarded to keep the connection.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(1);

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection ended, for the caller.
pub enum Served<I> {
    /// Closed, or handed to the listener's park (idle).
    Closed,
    /// The client opened with the HTTP/2 preface: serve HTTP/2 on this stream (the guard
    /// that counts the connection goes with it).
    Http2(Prefixed<I>, Option<ConnGuard>),
}

/// The connection's stream and read state, shared with the body of the request in flight.
pub struct ConnIo<I> {
    io: Option<I>,
    rbuf: BytesMut,
    /// Where response heads are encoded; kept between requests, like `rbuf`.
    wbuf: BytesMut,
    /// Decoding state of the current request's body (`Done` when there is none).
    body: Decoder,
    /// Bytes of `100 Continue` still to write before the body is read.
    continue_left: usize,
    /// The body failed (bad framing, client gone): the connection is unusable.
    broken: bool,
    eof: bool,
    /// Counts the connection as open while it lives (in a task or parked).
    guard: Option<ConnGuard>,
}

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

pub(super) type Shared_<I> = Arc<Mutex<ConnIo<I>>>;

fn lock<I>(c: &Mutex<ConnIo<I>>) -> std::sync::MutexGuard<'_, ConnIo<I>> {
    match c.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The request body as the pipeline sees it: frames decoded from the connection.
pub struct H1Body {
    src: Arc<dyn ReadBody>,
    hint: Option<u64>,
    done: bool,
}

/// Reading a request body from a connection of any stream type.
pub trait ReadBody: Send + Sync {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>>;
}

impl<I: Io> ReadBody for Mutex<ConnIo<I>> {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        let mut g = lock(self);
        let s = &mut *g;
        let Some(io) = s.io.as_mut() else {
            return Poll::Ready(None);
        };
        while s.continue_left > 0 {
            let start = CONTINUE.len() - s.continue_left;
            match Pin::new(&mut *io).poll_write(cx, &CONTINUE[start..]) {
                Poll::Ready(Ok(n)) if n > 0 => s.continue_left -= n,
                Poll::Ready(Ok(_)) | Poll::Ready(Err(_)) => {
                    s.broken = true;
                    return Poll::Ready(Some(Err(client_gone())));
                }
                Poll::Pending => return Poll::Pending,
            }
            if s.continue_left == 0 {
                if let Poll::Ready(Err(_)) = Pin::new(&mut *io).poll_flush(cx) {
                    s.broken = true;
                    return Poll::Ready(Some(Err(client_gone())));
                }
            }
        }
        loop {
            match s.body.decode(&mut s.rbuf, MAX_FRAME) {
                Ok(Decoded::Data(b)) => return Poll::Ready(Some(Ok(b))),
                Ok(Decoded::Done) => return Poll::Ready(None),
                Ok(Decoded::NeedMore) => {}
                Err(e) => {
                    s.broken = true;
                    return Poll::Ready(Some(Err(Box::new(ClientBodyError(Box::new(e))))));
                }
            }
            if s.eof {
                s.broken = true;
                return Poll::Ready(Some(Err(Box::new(ClientBodyError(Box::new(
                    crate::http1::decode::DecodeError::Truncated,
                ))))));
            }
            match poll_read_buf(io, cx, &mut s.rbuf, READ_CHUNK) {
                Poll::Ready(Ok(0)) => s.eof = true,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    s.broken = true;
                    return Poll::Ready(Some(Err(Box::new(ClientBodyError(Box::new(e))))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn client_gone() -> BoxError {
    Box::new(ClientBodyError(Box::new(io::Error::from(
        io::ErrorKind::ConnectionReset,
    ))))
}

impl HttpBody for H1Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.src.poll_body(cx) {
            Poll::Ready(Some(Ok(b))) => {
                if let Some(h) = self.hint.as_mut() {
                    *h = h.saturating_sub(b.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.hint == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.hint {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The client side of a WebSocket upgrade: resolves with the connection once the `101` has
/// been written to the client. Put in the request's extensions by the server.
#[derive(Clone)]
pub struct ServerUpgrade(Arc<Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl ServerUpgrade {
    pub fn take(&self) -> Option<oneshot::Receiver<Upgraded>> {
        match self.0.lock() {
            Ok(mut g) => g.take(),
            Err(p) => p.into_inner().take(),
        }
    }
}

/// What the connection task needs for every request.
pub struct Env<'a> {
    pub shared: &'a Arc<Shared>,
    pub info: &'a Arc<ConnInfo>,
    pub limits: &'a ConnLimits,
    /// The listener's stop signal (graceful drain; also poked at the hard stop).
    pub stopper: &'a Stopper,
    /// First read on this stream: look for the HTTP/2 preface (plaintext h2c).
    pub detect_h2: bool,
}

/// Serves HTTP/1.1 on `io` until the connection ends or is parked. Plaintext connections
/// idle for [`PARK_AFTER`] are handed to `park`, which holds them without a task and
/// resumes them in a new one when the next request arrives.
pub async fn serve<I: Io>(
    io: I,
    env: Env<'_>,
    guard: Option<ConnGuard>,
    park: Option<&Arc<Park<I>>>,
) -> Served<I> {
    let conn: Shared_<I> = Arc::new(Mutex::new(ConnIo {
        io: Some(io),
        rbuf: BytesMut::new(),
        wbuf: BytesMut::new(),
        body: Decoder::Done,
        continue_left: 0,
        broken: false,
        eof: false,
        guard,
    }));
    serve_conn(conn, env, park, None).await
}

/// The connection loop. `resumed`: when the connection comes back from the park (its next
/// request's first bytes are buffered), the time of its last exchange.
///
/// This future is the connection task, so its size is what every connection in a task
/// costs: everything a request needs lives in one boxed request loop ([`run_requests`]),
/// made for a connection's first requests and kept once it is busy (until it is parked),
/// and rare paths are boxed too.
pub(super) async fn serve_conn<I: Io>(
    conn: Shared_<I>,
    env: Env<'_>,
    park: Option<&Arc<Park<I>>>,
    resumed: Option<Instant>,
) -> Served<I> {
    let Env {
        shared,
        info,
        limits,
        stopper,
        detect_h2,
    } = env;
    let mut signals = Signals::new(stopper);
    // One timer for the connection's idle periods, re-armed lazily: it fires at the old
    // deadline and is pushed to the real one if the connection was busy in between.
    let idle = limits.idle_timeout;
    let was_parked = resumed.is_some();
    let mut last_active = resumed.unwrap_or_else(Instant::now);
    let idle_timer = tokio::time::sleep_until(last_active + idle);
    tokio::pin!(idle_timer);
    let mut first = resumed.is_none();
    // Requests served since this task took the connection: a connection that has shown itself
    // busy keeps its buffers between requests (until parked).
    let mut served: u32 = 0;
    // Set once the listener is stopping: in-flight requests finish by then.
    let mut drain_deadline: Option<Instant> = None;
    // The connection's requests are served by one boxed loop ([`run_requests`]), kept
    // between requests by a busy connection (see below).
    let turns = Turns::default();
    let mut runner = None;

    loop {
        // Wait for the first bytes of the next request.
        if lock(&conn).rbuf.is_empty() {
            let outcome = tokio::select! {
                biased;
                // Hard stop, or the listener stopping: an idle connection just closes.
                _ = std::future::poll_fn(|cx| signals.poll(cx)) => return Served::Closed,
                // Before the timer: woken by the next request's bytes, the connection reads
                // them without polling the timer again (a `Sleep` poll is ~150 instructions).
                r = std::future::poll_fn(|cx| read_idle(&conn, cx)) => r,
                _ = &mut idle_timer => {
                    let now = Instant::now();
                    if now >= last_active + idle {
                        return Served::Closed;
                    }
                    // Idle for a while after a request: wait in the park, without a task.
                    let parkable = park.filter(|_| !first);
                    if let Some(park) = parkable {
                        if now >= last_active + park_delay(was_parked, served, idle) {
                            // A parked connection holds no buffer.
                            release_buffers(&conn);
                            drop(runner);
                            let parked = Parked {
                                conn,
                                info: info.clone(),
                                last_active,
                            };
                            // Refused only when the listener is stopping: then just close.
                            let _ = park.put(parked);
                            return Served::Closed;
                        }
                    }
                    let next = match parkable {
                        Some(_) => last_active + park_delay(was_parked, served, idle),
                        None => last_active + idle,
                    };
                    idle_timer.as_mut().reset(next);
                    continue;
                }
            };
            match outcome {
                Ok(0) | Err(_) => return Served::Closed,
                Ok(_) => {}
            }
        }
        if std::mem::take(&mut first) && detect_h2 {
            match Box::pin(h2_preface(&conn)).await {
                Preface::H2 => {
                    let mut g = lock(&conn);
                    let prefix = std::mem::take(&mut g.rbuf).freeze();
                    let guard = g.guard.take();
                    return match g.io.take() {
                        Some(io) => Served::Http2(Prefixed::new(prefix, io), guard),
                        None => Served::Closed,
                    };
                }
                Preface::Closed => return Served::Closed,
                Preface::Http1 => {}
            }
        }

        // Read the head and answer it in the boxed request loop. A busy connection keeps
        // the loop between requests: building the ~2.6 KiB request future for every
        // request was an allocation and a copy of all of it (~300 instructions) each time.
        turns.give(drain_deadline.is_some());
        let run = runner.get_or_insert_with(|| {
            Box::pin(run_requests(&conn, shared, info, limits, stopper, &turns))
        });
        // Grace period end once the listener is stopping (boxed: rarely needed).
        let mut grace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let outcome = loop {
            tokio::select! {
                biased;
                // The request first: its last wake-up (the response written) then ends the
                // wait without polling the signals; while it is pending they are polled
                // after it, so a stop is seen as soon as before.
                o = std::future::poll_fn(|cx| turns.poll(run.as_mut(), cx)) => break o,
                signal = std::future::poll_fn(|cx| signals.poll(cx)) => match signal {
                    Signal::Hard => return Served::Closed,
                    Signal::Stop(g) => {
                        let end = Instant::now() + g;
                        drain_deadline = Some(end);
                        grace = Some(Box::pin(tokio::time::sleep_until(end)));
                    }
                },
                _ = std::future::poll_fn(|cx| match grace.as_mut() {
                    Some(s) => s.as_mut().poll(cx),
                    None => Poll::Pending,
                }) => return Served::Closed,
            }
        };
        let outcome = match outcome {
            Next::Exchange(o) => o,
            Next::Empty => continue,
            Next::Closed => return Served::Closed,
        };
        last_active = Instant::now();
        served = served.saturating_add(1);
        if served < BUSY_AFTER {
            runner = None;
        }
        match outcome {
            Exchange::KeepAlive if drain_deadline.is_none() => {
                // After its first request a connection gives its buffers back while it waits
                // (10,000 connections each holding theirs until parked left ~0.4 KiB per idle
                // connection more in the allocator); one that keeps sending requests keeps
                // them, and saves two allocations per request, until it is parked.
                if served < BUSY_AFTER {
                    release_buffers(&conn);
                }
                // Parking is due `park_delay` from now; the timer only ever moves later on
                // its own, so bring it forward once if it is set further out (the first
                // request's full idle timeout).
                let park_at = last_active + park_delay(was_parked, served, idle);
                if park.is_some() && idle_timer.deadline() > park_at {
                    idle_timer.as_mut().reset(park_at);
                }
            }
            Exchange::KeepAlive | Exchange::Close => return Served::Closed,
            Exchange::Linger => {
                Box::pin(linger(&conn)).await;
                return Served::Closed;
            }
            Exchange::Upgraded => return Served::Closed,
        }
    }
}

/// How long a connection stays idle before it is parked: [`PARK_AFTER_FIRST`] while it has
/// served only one request and was never parked, [`PARK_AFTER`] once it has shown itself
/// reused; never past its idle timeout.
fn park_delay(was_parked: bool, served: u32, idle: Duration) -> Duration {
    let delay = if was_parked || served >= 2 {
        PARK_AFTER
    } else {
        PARK_AFTER_FIRST
    };
    delay.min(idle)
}

/// Requests after which a connection counts as busy and keeps its buffers between requests.
const BUSY_AFTER: u32 = 2;

/// Drops the connection's buffers (their memory goes back to the allocator) when nothing is
/// buffered.
fn release_buffers<I>(conn: &Mutex<ConnIo<I>>) {
    let mut g = lock(conn);
    if g.rbuf.is_empty() {
        g.rbuf = BytesMut::new();
    }
    g.wbuf = BytesMut::new();
}

/// The listener's stop signal as the connection task sees it: one `Notify` waiter, polled
/// only after it woke the task (polling a registered waiter takes the waiter list's lock,
/// ~1.4k instructions per request when it was done on every wake-up).
struct Signals<'a> {
    stopper: &'a Stopper,
    waiter: Pin<Box<tokio::sync::futures::Notified<'a>>>,
    stop_seen: bool,
    woken: Arc<Woken>,
    waker: std::task::Waker,
}

enum Signal {
    Hard,
    /// The listener is stopping; requests in flight have this long.
    Stop(Duration),
}

struct Woken {
    flag: std::sync::atomic::AtomicBool,
    task: futures_util::task::AtomicWaker,
}

impl std::task::Wake for Woken {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.flag.store(true, std::sync::atomic::Ordering::Release);
        self.task.wake();
    }
}

impl<'a> Signals<'a> {
    fn new(stopper: &'a Stopper) -> Self {
        let woken = Arc::new(Woken {
            // Set, so the first poll looks at the flags and registers the waiter.
            flag: std::sync::atomic::AtomicBool::new(true),
            task: futures_util::task::AtomicWaker::new(),
        });
        let mut waiter = Box::pin(stopper.notified());
        waiter.as_mut().enable();
        Signals {
            stopper,
            waiter,
            stop_seen: false,
            waker: std::task::Waker::from(woken.clone()),
            woken,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Signal> {
        self.woken.task.register(cx.waker());
        if !self
            .woken
            .flag
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            return Poll::Pending;
        }
        let mut own = Context::from_waker(&self.waker);
        loop {
            if self.stopper.hard_stopped() {
                return Poll::Ready(Signal::Hard);
            }
            if !self.stop_seen {
                if let Some(grace) = self.stopper.grace() {
                    self.stop_seen = true;
                    return Poll::Ready(Signal::Stop(grace));
                }
            }
            match self.waiter.as_mut().poll(&mut own) {
                Poll::Ready(()) => {
                    // Fired: wait again (enabled before the flags are read on the next turn).
                    self.waiter.set(self.stopper.notified());
                    self.waiter.as_mut().enable();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Hands the connection's requests to [`run_requests`] one at a time and takes back what
/// each came to. Both sides run in the connection task, one after the other; atomics only
/// because the task must be `Send` (relaxed: nothing else is ordered by them).
#[derive(Default)]
struct Turns {
    /// [`Turns::GO`] (or [`Turns::GO_DRAINING`]) lets the next request start.
    go: AtomicU8,
    /// What the request came to, as [`Next::code`]; 0 while it runs.
    done: AtomicU8,
}

impl Turns {
    const GO: u8 = 1;
    const GO_DRAINING: u8 = 2;

    /// Lets the next request start.
    fn give(&self, draining: bool) {
        let go = if draining {
            Self::GO_DRAINING
        } else {
            Self::GO
        };
        self.go.store(go, Ordering::Relaxed);
    }

    /// Polls the request loop; ready with what the current request came to.
    fn poll(&self, run: Pin<&mut impl Future<Output = ()>>, cx: &mut Context<'_>) -> Poll<Next> {
        let _ = run.poll(cx);
        match Next::from_code(self.done.swap(0, Ordering::Relaxed)) {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }
}

/// The connection's requests, one per turn: a loop that waits for its turn (`go`), serves one
/// request and leaves what it came to in `done`. Waiting for a turn registers no waker: only
/// the connection loop gives a turn, and it polls this future right after.
async fn run_requests<I: Io>(
    conn: &Shared_<I>,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    limits: &ConnLimits,
    stopper: &Stopper,
    turns: &Turns,
) {
    loop {
        let draining = std::future::poll_fn(|_| match turns.go.swap(0, Ordering::Relaxed) {
            0 => Poll::Pending,
            go => Poll::Ready(go == Turns::GO_DRAINING),
        })
        .await;
        let next = request(conn, shared, info, limits, draining, stopper).await;
        turns.done.store(next.code(), Ordering::Relaxed);
    }
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Exchange(Exchange),
    /// Only empty lines: wait for the next request.
    Empty,
    Closed,
}

impl Next {
    /// As a byte for [`Turns`] (never 0, which is "not yet").
    fn code(self) -> u8 {
        match self {
            Next::Exchange(Exchange::KeepAlive) => 1,
            Next::Exchange(Exchange::Close) => 2,
            Next::Exchange(Exchange::Linger) => 3,
            Next::Exchange(Exchange::Upgraded) => 4,
            Next::Empty => 5,
            Next::Closed => 6,
        }
    }

    fn from_code(code: u8) -> Option<Next> {
        Some(match code {
            1 => Next::Exchange(Exchange::KeepAlive),
            2 => Next::Exchange(Exchange::Close),
            3 => Next::Exchange(Exchange::Linger),
            4 => Next::Exchange(Exchange::Upgraded),
            5 => Next::Empty,
            6 => Next::Closed,
            _ => return None,
        })
    }
}

async fn request<I: Io>(
    conn: &Shared_<I>,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    limits: &ConnLimits,
    draining: bool,
    stopper: &Stopper,
) -> Next {
    let idle = limits.idle_timeout;
    // Within header_timeout of its first byte.
    let head = match read_head(conn, limits).await {
        ReadHead::Head(h) => h,
        ReadHead::Empty => return Next::Empty,
        ReadHead::Closed => return Next::Closed,
        ReadHead::Refused(e) => {
            let resp = pipeline::reject(e.error, e.parts, info, shared);
            let _ = write_response(conn, resp, false, Version::HTTP_11, true, idle).await;
            linger(conn).await;
            return Next::Closed;
        }
    };
    Next::Exchange(exchange(conn, head, shared, info, idle, draining, stopper).await)
}

/// First bytes on an idle connection, into a stack buffer (no heap buffer while idle).
pub(super) fn read_idle<I: Io>(
    conn: &Mutex<ConnIo<I>>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    read_stack(conn, cx, true)
}

/// Reads into a stack buffer; the bytes are appended to the read buffer when `keep`, else
/// discarded. `Ok(0)`: end of stream (or the stream is gone).
fn read_stack<I: Io>(
    conn: &Mutex<ConnIo<I>>,
    cx: &mut Context<'_>,
    keep: bool,
) -> Poll<io::Result<usize>> {
    let mut g = lock(conn);
    let s = &mut *g;
    let Some(io) = s.io.as_mut() else {
        return Poll::Ready(Ok(0));
    };
    // Uninitialised: zeroing 4 KiB on every poll cost as much as parsing the request.
    let mut tmp = [const { std::mem::MaybeUninit::<u8>::uninit() }; IDLE_READ];
    let mut rb = ReadBuf::uninit(&mut tmp);
    match Pin::new(io).poll_read(cx, &mut rb) {
        Poll::Ready(Ok(())) => {
            let n = rb.filled().len();
            if keep && n > 0 {
                s.rbuf.reserve(n.max(1024));
                s.rbuf.extend_from_slice(rb.filled());
            }
            Poll::Ready(Ok(n))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// Reads what is available into the connection's read buffer. `Ok(0)`: end of stream.
fn poll_fill<I: Io>(
    conn: &Mutex<ConnIo<I>>,
    cx: &mut Context<'_>,
    reserve: usize,
) -> Poll<io::Result<usize>> {
    let mut g = lock(conn);
    let s = &mut *g;
    match s.io.as_mut() {
        Some(io) => poll_read_buf(io, cx, &mut s.rbuf, reserve),
        None => Poll::Ready(Ok(0)),
    }
}

enum Preface {
    H2,
    Http1,
    Closed,
}

/// Whether the buffered bytes are (the start of) the HTTP/2 connection preface; reads until
/// they are decisive.
async fn h2_preface<I: Io>(conn: &Mutex<ConnIo<I>>) -> Preface {
    loop {
        {
            let g = lock(conn);
            let n = g.rbuf.len().min(HTTP2_PREFACE.len());
            if g.rbuf[..n] != HTTP2_PREFACE[..n] {
                return Preface::Http1;
            }
            if n == HTTP2_PREFACE.len() {
                return Preface::H2;
            }
        }
        let r = std::future::poll_fn(|cx| poll_fill(conn, cx, 1024));
        match tokio::time::timeout(Duration::from_secs(10), r).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Preface::Closed,
        }
    }
}

enum ReadHead {
    Head(Box<RequestHead>),
    /// Only empty lines: wait for the next request.
    Empty,
    Closed,
    Refused(HeadError),
}

async fn read_head<I: Io>(conn: &Mutex<ConnIo<I>>, limits: &ConnLimits) -> ReadHead {
    let head_limits = &limits.head;
    let max = head::max_head(head_limits.max_request_line, head_limits.max_header_bytes);
    let mut scanned = 0;
    let mut deadline: Option<Instant> = None;
    loop {
        {
            let mut g = lock(conn);
            let s = &mut *g;
            // Usually the whole head is there with the first bytes: parsed in one pass.
            if scanned == 0 {
                match head::parse_request_front(&mut s.rbuf, max, head_limits) {
                    Ok(Some(h)) => return ReadHead::Head(Box::new(h)),
                    Err(e) => return ReadHead::Refused(e),
                    Ok(None) => {}
                }
            }
            if let Some(end) = head::find_head_end(&s.rbuf, scanned) {
                if end > max {
                    return refused(head::head_too_large(&s.rbuf, head_limits.max_request_line));
                }
                return match head::parse_request(&mut s.rbuf, end, head_limits) {
                    Ok(Some(h)) => ReadHead::Head(Box::new(h)),
                    Ok(None) if s.rbuf.is_empty() => ReadHead::Empty,
                    Ok(None) => {
                        scanned = 0;
                        continue;
                    }
                    Err(e) => ReadHead::Refused(e),
                };
            }
            let no_line_end = memchr::memchr(b'\n', &s.rbuf).is_none();
            if s.rbuf.len() > max
                || (no_line_end && s.rbuf.len() > head_limits.max_request_line + 2)
            {
                return refused(head::head_too_large(&s.rbuf, head_limits.max_request_line));
            }
            scanned = s.rbuf.len();
        }
        let due = *deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout);
        let read = std::future::poll_fn(|cx| poll_fill(conn, cx, READ_CHUNK));
        match tokio::time::timeout_at(due, read).await {
            Ok(Ok(n)) if n > 0 => {}
            // Closed mid-head, or the head took longer than header_timeout (slowloris, L4):
            // close without an answer.
            _ => return ReadHead::Closed,
        }
    }
}

fn refused(error: GatewayError) -> ReadHead {
    ReadHead::Refused(HeadError { error, parts: None })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    KeepAlive,
    Close,
    /// Close after reading and discarding what the client still sends.
    Linger,
    Upgraded,
}

async fn exchange<I: Io>(
    conn: &Shared_<I>,
    mut head: Box<RequestHead>,
    shared: &Arc<Shared>,
    info: &Arc<ConnInfo>,
    idle: Duration,
    draining: bool,
    stopper: &Stopper,
) -> Exchange {
    // The head stays in its box and is lent to the pipeline: moved out, it would be stored
    // in this future and again in the pipeline's.
    let RequestHead {
        ref mut parts,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    } = *head;
    let head_request = parts.method == Method::HEAD;
    let version = parts.version;
    let body = match framing {
        Framing::None => RequestBody::Empty,
        Framing::Length(_) | Framing::Chunked => {
            let hint = match framing {
                Framing::Length(n) => Some(n),
                _ => None,
            };
            {
                let mut g = lock(conn);
                g.body = match framing {
                    Framing::Length(n) => Decoder::length(n),
                    _ => Decoder::chunked(),
                };
                g.continue_left = if expect_continue { CONTINUE.len() } else { 0 };
            }
            let src: Arc<dyn ReadBody> = conn.clone();
            RequestBody::H1(H1Body {
                src,
                hint,
                done: false,
            })
        }
    };
    let upgrade_tx = if upgrade && version == Version::HTTP_11 {
        let (tx, rx) = oneshot::channel();
        parts
            .extensions
            .insert(ServerUpgrade(Arc::new(Mutex::new(Some(rx)))));
        Some(tx)
    } else {
        None
    };
    // Blocks of their own: the pipeline's future (the largest part of a request's) is dead
    // while the response is written, and the response while the rest is drained, so each
    // state shares its room with the others (a local that outlives one await is given room
    // of its own in every state).
    let (written, switching, keep) = {
        let resp = {
            let fut = pipeline::handle(parts, body, info.clone(), shared.clone());
            // Pinned where it is: wrapped by value it would be copied into each wrapper.
            tokio::pin!(fut);
            // A panic in one request becomes a 500; the process keeps serving (F18).
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("request handler panicked");
                    shared.metrics.in_flight.dec();
                    super::panic_response()
                }
            }
        };
        // The request's map is done with (whatever answered it); the next head reuses it.
        names::recycle(std::mem::take(&mut parts.headers));
        let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
        // A stop that arrived while the request was in flight makes this response the last.
        let draining = draining || stopper.grace().is_some();
        let keep = keep_alive && !draining && !switching;
        let written = write_response(conn, resp, head_request, version, !keep, idle).await;
        (written, switching, keep)
    };
    let close_requested = match written {
        Ok(close) => close,
        Err(_) => return Exchange::Close,
    };
    // What the body's state says, decided under the lock; the drain (if any) awaits after.
    let unread = {
        let mut g = lock(conn);
        if switching {
            if let Some(tx) = upgrade_tx {
                if let Some(io) = g.io.take() {
                    let rest = std::mem::take(&mut g.rbuf).freeze();
                    let io: Box<dyn Io> = Box::new(io);
                    let _ = tx.send(Prefixed::new(rest, io));
                    return Exchange::Upgraded;
                }
            }
            return Exchange::Close;
        }
        if g.broken {
            return Exchange::Linger;
        }
        if g.body.is_done() {
            None
        } else {
            let waiting = g.continue_left > 0;
            g.continue_left = 0;
            Some(waiting)
        }
    };
    if let Some(waiting) = unread {
        // The answer came without the body being read (a local 401/404/503...): its bytes
        // must never be parsed as the next request (S12). A small rest is read and
        // discarded by its framing, keeping the connection; anything else closes it. A
        // client waiting for `100 Continue` has sent nothing to discard.
        if close_requested || !keep || waiting || !drain_body(conn).await {
            lock(conn).body = Decoder::Done;
            return Exchange::Linger;
        }
        return Exchange::KeepAlive;
    }
    if close_requested || !keep {
        return Exchange::Close;
    }
    Exchange::KeepAlive
}

/// Reads the rest of an unread request body and throws it away: `true` when it ended within
/// [`DRAIN_LIMIT`] bytes and [`DRAIN_TIME`].
async fn drain_body<I: Io>(conn: &Mutex<ConnIo<I>>) -> bool {
    let mut total = 0usize;
    let drain = std::future::poll_fn(|cx| loop {
        match conn.poll_body(cx) {
            Poll::Ready(Some(Ok(b))) => {
                total += b.len();
                if total > DRAIN_LIMIT {
                    return Poll::Ready(false);
                }
            }
            Poll::Ready(Some(Err(_))) => return Poll::Ready(false),
            Poll::Ready(None) => return Poll::Ready(true),
            Poll::Pending => return Poll::Pending,
        }
    });
    tokio::time::timeout(DRAIN_TIME, drain)
        .await
        .unwrap_or(false)
}

/// Writes `resp`; `Ok(true)` when the connection must close afterwards (the response said
/// so, or the body length was unknown to an HTTP/1.0 client). `Err`: the client went away or
/// the body failed midway (the client sees a truncated response).
async fn write_response<I: Io>(
    conn: &Mutex<ConnIo<I>>,
    resp: Response<ResponseBody>,
    head_request: bool,
    version: Version,
    mut close: bool,
    idle: Duration,
) -> io::Result<bool> {
    let (mut parts, mut body) = resp.into_parts();
    // The pipeline asks for a close beside the head; the encoder writes the field.
    close |= body.fields().close;
    let status = parts.status;
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let exact = body.size_hint().exact();
    let framing = if bodiless {
        BodyFraming::None
    } else if let Some(n) = exact {
        BodyFraming::Length(n)
    } else if version == Version::HTTP_11 {
        BodyFraming::Chunked
    } else {
        close = true;
        BodyFraming::Close
    };
    // A HEAD answer carries the length the GET would have had.
    let declared_for_head = if head_request {
        parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| head::parse_content_length(v.as_bytes()))
            .or(exact.filter(|n| *n > 0))
    } else {
        None
    };
    let connection: Option<&'static [u8]> = if status == StatusCode::SWITCHING_PROTOCOLS {
        Some(b"upgrade")
    } else if close {
        Some(b"close")
    } else if version == Version::HTTP_10 {
        Some(b"keep-alive")
    } else {
        None
    };
    let mut out = std::mem::take(&mut lock(conn).wbuf);
    out.reserve(512);
    close |= encode::encode_response(
        &mut out,
        status,
        encode::ResponseFields {
            raw: body.raw_fields(),
            map: &parts.headers,
            gateway: body.fields(),
        },
        framing,
        declared_for_head,
        connection,
    );
    body.raw_written();
    names::recycle(std::mem::take(&mut parts.headers));
    let mut sink = ClientSink { conn, idle };
    match write_body(&mut body, &mut out, framing, &mut sink).await {
        Ok(()) => {
            lock(conn).wbuf = out;
            Ok(close)
        }
        // The client went away, or the body failed midway: what arrived was sent, without
        // the terminating chunk or short of its length, so the client sees the truncation
        // (F4); the connection closes.
        Err(WriteBodyError::Io(e)) => Err(e),
        Err(e) => {
            if !out.is_empty() {
                let _ = write_timed(conn, out.freeze(), idle).await;
            }
            Err(io::Error::other(e.to_string()))
        }
    }
}

/// The client connection as the body writer's sink.
struct ClientSink<'a, I> {
    conn: &'a Mutex<ConnIo<I>>,
    idle: Duration,
}

impl<I: Io> Sink for ClientSink<'_, I> {
    async fn send(&mut self, bytes: Bytes) -> io::Result<()> {
        write_timed(self.conn, bytes, self.idle).await
    }
}

/// Writes `bytes`; a client that takes no bytes for `idle` is cut off (slow read, L6).
async fn write_timed<I: Io>(
    conn: &Mutex<ConnIo<I>>,
    bytes: Bytes,
    idle: Duration,
) -> io::Result<()> {
    let mut bytes = bytes;
    let mut write = std::future::poll_fn(|cx| {
        let mut g = lock(conn);
        match g.io.as_mut() {
            Some(io) => poll_write_all(io, cx, &mut bytes),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    });
    // Most writes complete at once; only a blocked one pays for a timer.
    let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut write).poll(cx))).await;
    match first {
        Poll::Ready(r) => r,
        Poll::Pending => match tokio::time::timeout(idle, write).await {
            Ok(r) => r,
            Err(_) => Err(io::ErrorKind::TimedOut.into()),
        },
    }
}

/// Half-closes, then reads and discards for a moment before the connection is dropped.
async fn linger<I: Io>(conn: &Mutex<ConnIo<I>>) {
    let shutdown = std::future::poll_fn(|cx| {
        let mut g = lock(conn);
        match g.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    });
    if tokio::time::timeout(Duration::from_secs(1), shutdown)
        .await
        .is_err()
    {
        return;
    }
    let mut total = 0usize;
    let drain = async {
        loop {
            let n = std::future::poll_fn(|cx| read_stack(conn, cx, false))
                .await
                .unwrap_or(0);
            total += n;
            if n == 0 || total >= LINGER_BYTES {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_request_came_to_survives_its_code() {
        let all = [
            Next::Exchange(Exchange::KeepAlive),
            Next::Exchange(Exchange::Close),
            Next::Exchange(Exchange::Linger),
            Next::Exchange(Exchange::Upgraded),
            Next::Empty,
            Next::Closed,
        ];
        for n in all {
            assert_ne!(n.code(), 0, "0 is \"not yet\"");
            assert_eq!(Next::from_code(n.code()), Some(n));
        }
        assert_eq!(Next::from_code(0), None);
    }

    #[test]
    fn parking_is_sooner_for_a_connection_used_once_and_never_past_its_idle_timeout() {
        let idle = Duration::from_secs(60);
        assert_eq!(park_delay(false, 0, idle), PARK_AFTER_FIRST);
        assert_eq!(park_delay(false, 1, idle), PARK_AFTER_FIRST);
        assert_eq!(park_delay(false, 2, idle), PARK_AFTER);
        assert_eq!(park_delay(true, 0, idle), PARK_AFTER);
        // An idle timeout shorter than either delay: the connection closes, never parks late.
        let short = Duration::from_millis(50);
        assert_eq!(park_delay(false, 1, short), short);
        assert_eq!(park_delay(true, 5, short), short);
    }
}
