//! Listeners: accept loop with a connection cap, TLS by SNI, HTTP/1.1 + h2c + h2 on one port,
//! idle and header timeouts, and draining. HTTP/1.1 is the gateway's own (`h1`); HTTP/2
//! (by ALPN, or the h2c preface on plaintext) is hyper's, with every h2 limit set explicitly
//! (SECURITY-TESTS.md 1.7).

pub mod conn;
pub mod h1;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use gatehouse_core::snapshot::{Limits, ListenerSpec};
use gatehouse_core::GatewayError;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::body::{RequestBody, ResponseBody};
use crate::gateway::Shared;
use crate::pipeline;
use conn::{ConnCheck, ConnInfo, ConnState, TrackedIo};

pub struct ListenerHandle {
    pub spec: ListenerSpec,
    pub local_addr: SocketAddr,
    /// Sends the drain deadline; the accept loop stops and connections drain.
    stop: watch::Sender<Option<Duration>>,
}

impl ListenerHandle {
    pub fn stop(&self, grace: Duration) {
        let _ = self.stop.send(Some(grace));
    }
}

pub async fn bind(shared: Arc<Shared>, spec: ListenerSpec) -> std::io::Result<ListenerHandle> {
    let listener = TcpListener::bind(spec.addr).await?;
    let local_addr = listener.local_addr()?;
    let tls = match &spec.tls {
        Some(_) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            tls::server_config(shared.clone(), Arc::from(spec.name.as_str()))
                .map_err(std::io::Error::other)?,
        ))),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(None);
    let name: Arc<str> = Arc::from(spec.name.as_str());
    tracing::info!(listener = %name, addr = %local_addr, tls = tls.is_some(), "listening");
    tokio::spawn(accept_loop(
        shared, listener, local_addr, name, tls, stop_rx,
    ));
    Ok(ListenerHandle {
        spec,
        local_addr,
        stop,
    })
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
    name: Arc<str>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<Option<Duration>>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning (F13).
                tracing::warn!(error = %e, listener = %name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Connection cap (L7): over the limit, close at once rather than queue.
        let Ok(permit) = shared.conn_limit.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let name = name.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            shared.open_connections.fetch_add(1, Ordering::Relaxed);
            shared.metrics.connections.inc();
            let accepted = Accepted {
                stream,
                peer,
                permit,
            };
            serve_stream(&shared, accepted, local, name, tls, stop).await;
            shared.metrics.connections.dec();
            shared.open_connections.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tracing::info!(listener = %name, addr = %local, "stopped accepting");
}

/// A connection taken off the accept queue, with its slot under `max_connections`.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    permit: tokio::sync::OwnedSemaphorePermit,
}

async fn serve_stream(
    shared: &Arc<Shared>,
    accepted: Accepted,
    local: SocketAddr,
    listener: Arc<str>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: watch::Receiver<Option<Duration>>,
) {
    let Accepted {
        stream,
        peer,
        permit,
    } = accepted;
    let limits = shared.active.load().snapshot.limits.clone();
    let state = Arc::new(ConnState::new());
    let info = Arc::new(ConnInfo {
        peer,
        local,
        tls: tls.is_some(),
        listener,
        state: state.clone(),
        permit: std::sync::Mutex::new(Some(permit)),
    });
    match tls {
        Some(acceptor) => {
            let io = TrackedIo::new(stream, state.clone());
            let hs = tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await;
            match hs {
                Ok(Ok(tls_stream)) => {
                    if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        serve_h2(shared, tls_stream, info, &limits, stop).await;
                    } else {
                        let env = h1::Env {
                            shared,
                            info: &info,
                            limits: &limits,
                            stop,
                            detect_h2: false,
                        };
                        h1::serve(tls_stream, env).await;
                    }
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "tls handshake timed out"),
            }
        }
        None => {
            let env = h1::Env {
                shared,
                info: &info,
                limits: &limits,
                stop: stop.clone(),
                detect_h2: true,
            };
            if let h1::Served::Http2(io) = h1::serve(stream, env).await {
                let io = TrackedIo::new(io, state.clone());
                serve_h2(shared, io, info, &limits, stop).await;
            }
        }
    }
}

fn h2_builder(limits: &Limits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .initial_stream_window_size(64 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(1024)
        .max_send_buf_size(1024 * 1024)
        .keep_alive_interval(None);
    b
}

/// HTTP/2 on `io` (hyper), with the idle timeout and draining supervised here.
async fn serve_h2<I>(
    shared: &Arc<Shared>,
    io: I,
    info: Arc<ConnInfo>,
    limits: &Limits,
    mut stop: watch::Receiver<Option<Duration>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    info.state.track();
    let svc_shared = shared.clone();
    let svc_info = info.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let shared = svc_shared.clone();
        let info = svc_info.clone();
        async move {
            info.state.request_started();
            let req = req.map(RequestBody::H2);
            let fut = pipeline::handle(req, info.clone(), shared.clone());
            // A panic in one request becomes a 500; the process keeps serving (F18).
            let resp = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("request handler panicked");
                    info.state.request_finished();
                    // `pipeline::handle` counted the request in flight before running it; its
                    // completion hook, which undoes that, died with the panic (F18).
                    shared.metrics.in_flight.dec();
                    panic_response()
                }
            };
            Ok::<_, Infallible>(resp)
        }
    });
    let b = h2_builder(limits);
    let conn = b.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut hard_stop = shared.hard_stop.subscribe();
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let next_check = match info.state.check(limits.header_timeout, limits.idle_timeout) {
            ConnCheck::WaitUntil(t) => t,
            ConnCheck::HeaderTimeout => {
                tracing::debug!(peer = %info.peer, "request head not received in time; closing");
                return;
            }
            ConnCheck::Idle => {
                if draining.is_none() {
                    conn.as_mut().graceful_shutdown();
                    draining = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
                tokio::time::Instant::now() + Duration::from_secs(1)
            }
        };
        let wake = match draining {
            Some(d) => next_check.min(d),
            None => next_check,
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %info.peer, error = %e, "connection ended with error");
                }
                return;
            }
            changed = stop.changed(), if draining.is_none() => {
                let grace = match changed {
                    Ok(()) => (*stop.borrow()).unwrap_or(Duration::ZERO),
                    Err(_) => Duration::ZERO,
                };
                conn.as_mut().graceful_shutdown();
                draining = Some(tokio::time::Instant::now() + grace);
            }
            _ = hard_stop.changed() => return,
            _ = tokio::time::sleep_until(wake) => {
                if let Some(d) = draining {
                    if tokio::time::Instant::now() >= d {
                        return;
                    }
                }
            }
        }
    }
}

pub(crate) fn panic_response() -> hyper::Response<ResponseBody> {
    // The pipeline's context (and its request id) died with the panic; every response still
    // carries an id the client can quote (SPEC.md).
    let id = crate::context::new_request_id();
    let resp = GatewayError::Internal.to_response(id.to_str().unwrap_or("-"), false);
    resp.map(|b| ResponseBody::local(crate::body::full(b)))
}
