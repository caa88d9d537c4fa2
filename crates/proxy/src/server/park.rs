//! Where idle plaintext HTTP/1 connections wait for their next request without a task of
//! their own. A connection task is ~0.7 KiB plus its timer and stop waiter; a parked
//! connection is its stream, its shared state and one small entry here, so 10,000 idle
//! keep-alive connections cost a fraction of what they would as tasks (`bench/`, idle
//! section). nginx keeps idle connections the same way: an fd in the event loop and a
//! small struct.
//!
//! One park per plaintext listener, one task per park. A connection is parked by its task
//! after [`super::h1::PARK_AFTER_FIRST`] or [`super::h1::PARK_AFTER`] without a request;
//! the park waits for its next bytes (read into a fresh buffer, as an idle task would) and
//! spawns a task that continues the connection, or closes it at its idle timeout (checked
//! by a sweep every [`SWEEP`]). When the listener stops (or at the hard stop), every parked
//! connection is closed at once: parked connections have no request in flight, which is
//! what a graceful drain waits for.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::gateway::Shared;
use crate::http1::Io;

use super::conn::{ConnInfo, Stopper};
use super::h1::{self, Env, Shared_};
use super::ConnLimits;

/// A connection waiting in the park.
pub struct Parked<I> {
    pub conn: Shared_<I>,
    pub info: Arc<ConnInfo>,
    /// When its last exchange ended; it closes `limits.idle_timeout` later (the timeout in
    /// force at each sweep, so a reload's new timeout applies to parked connections too, as
    /// it does to a resumed one) if no request comes.
    pub last_active: Instant,
}

pub struct Park<I> {
    tx: mpsc::UnboundedSender<Parked<I>>,
}

impl<I: Io> Park<I> {
    /// A park and its task; the task ends when the listener stops, or when the listener and
    /// every connection that could park are gone.
    pub fn start(shared: Arc<Shared>, stopper: Arc<Stopper>) -> Arc<Park<I>> {
        let (tx, rx) = mpsc::unbounded_channel();
        let park = Arc::new(Park { tx });
        tokio::spawn(run(rx, shared, stopper, Arc::downgrade(&park)));
        park
    }

    /// Hands over an idle connection; refused (and so closed by the caller dropping it)
    /// once the park has stopped.
    pub fn put(&self, parked: Parked<I>) -> Result<(), Parked<I>> {
        self.tx.send(parked).map_err(|e| e.0)
    }
}

/// How often parked connections are checked against their idle timeout. One sweep over
/// the entries replaces a timer per entry (112 bytes and a timer-wheel registration each);
/// a parked connection closes at most this much after its idle timeout.
const SWEEP: Duration = Duration::from_millis(250);

async fn run<I: Io>(
    mut rx: mpsc::UnboundedReceiver<Parked<I>>,
    shared: Arc<Shared>,
    stopper: Arc<Stopper>,
    park: Weak<Park<I>>,
) {
    let mut waiting: FuturesUnordered<Waiting<I>> = FuturesUnordered::new();
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopper.stopped() => break,
            p = rx.recv() => match p {
                Some(p) => {
                    shared.metrics.parked_connections.inc();
                    waiting.push(Waiting::new(p));
                }
                None => break,
            },
            Some((p, woke)) = waiting.next(), if !waiting.is_empty() => {
                shared.metrics.parked_connections.dec();
                if woke {
                    resume(p, shared.clone(), stopper.clone(), park.upgrade());
                }
            }
            _ = sweep.tick(), if !waiting.is_empty() => {
                let idle = shared.active.load().snapshot.limits.idle_timeout;
                let now = Instant::now();
                for w in waiting.iter_mut() {
                    w.expire_if_due(now, idle);
                }
            }
        }
    }
    // Dropping the entries closes the connections.
    shared
        .metrics
        .parked_connections
        .dec_by(waiting.len() as i64);
}

/// One parked connection: ready with `true` when its next bytes arrived, `false` when it
/// closed or its idle timeout passed (the sweep marks it and wakes it). Kept small: it is
/// most of what a parked connection costs beyond its stream.
struct Waiting<I> {
    /// `None` once handed back.
    parked: Option<Parked<I>>,
    expired: bool,
    waker: Option<Waker>,
}

impl<I: Io> Waiting<I> {
    fn new(p: Parked<I>) -> Self {
        Waiting {
            parked: Some(p),
            expired: false,
            waker: None,
        }
    }

    fn expire_if_due(&mut self, now: Instant, idle: Duration) {
        let due = self
            .parked
            .as_ref()
            .is_some_and(|p| now >= p.last_active + idle);
        if !self.expired && due {
            self.expired = true;
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }
}

impl<I: Io> Future for Waiting<I> {
    type Output = (Parked<I>, bool);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let Some(p) = this.parked.as_ref() else {
            return Poll::Pending;
        };
        let woke = if this.expired {
            false
        } else {
            match h1::read_idle(&p.conn, cx) {
                Poll::Ready(Ok(n)) => n > 0,
                Poll::Ready(Err(_)) => false,
                Poll::Pending => {
                    if !this.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        this.waker = Some(cx.waker().clone());
                    }
                    return Poll::Pending;
                }
            }
        };
        match this.parked.take() {
            Some(p) => Poll::Ready((p, woke)),
            None => Poll::Pending,
        }
    }
}

/// Continues a connection in a new task, its next request's first bytes buffered.
fn resume<I: Io>(
    p: Parked<I>,
    shared: Arc<Shared>,
    stopper: Arc<Stopper>,
    park: Option<Arc<Park<I>>>,
) {
    tokio::spawn(async move {
        let Parked {
            conn,
            info,
            last_active,
            ..
        } = p;
        // A resumed connection runs under the limits in force now (a reload may have
        // changed them while it was idle).
        let limits = ConnLimits::of(&shared.active.load().snapshot.limits);
        let env = Env {
            shared: &shared,
            info: &info,
            limits: &limits,
            stopper: &stopper,
            detect_h2: false,
        };
        h1::serve_conn(conn, env, park.as_ref(), Some(last_active)).await;
    });
}
