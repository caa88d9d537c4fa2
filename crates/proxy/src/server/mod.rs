//! Listeners: accept loop with a connection cap, TLS by SNI, HTTP/1.1 + h2c + h2 on one port,
//! idle and header timeouts, and draining. HTTP/1.1 is the gateway's own (`h1`); HTTP/2
//! (by ALPN, or the h2c preface on plaintext) is hyper's, with every h2 limit set explicitly
//! (SECURITY-TESTS.md 1.7).

pub mod conn;
pub mod h1;
pub mod park;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

pub use crate::http1::head::HeadLimits;
use futures_util::FutureExt;
use gatehouse_core::snapshot::{Limits, ListenerSpec};
use gatehouse_core::GatewayError;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::body::{RequestBody, ResponseBody};
use crate::gateway::Shared;
use crate::pipeline;
use conn::{ConnCheck, ConnGuard, ConnInfo, Stopper, TrackedIo};
use park::Park;

pub struct ListenerHandle {
    pub spec: ListenerSpec,
    pub local_addr: SocketAddr,
    /// The accept loop and every connection of this listener watch it.
    stopper: Arc<Stopper>,
}

impl ListenerHandle {
    /// Stop accepting; connections drain within `grace`, then are closed.
    pub fn stop(&self, grace: Duration) {
        self.stopper.stop(grace);
    }
}

/// The limits a connection needs, copied out of the snapshot it was accepted under (a
/// connection keeps them for its life; holding the snapshot would keep old ones alive).
#[derive(Clone, Copy)]
pub struct ConnLimits {
    pub head: HeadLimits,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_max_streams: u32,
}

impl ConnLimits {
    pub fn of(l: &Limits) -> ConnLimits {
        ConnLimits {
            head: HeadLimits {
                max_request_line: l.max_request_line,
                max_header_bytes: l.max_header_bytes,
                max_headers: l.max_headers,
            },
            header_timeout: l.header_timeout,
            idle_timeout: l.idle_timeout,
            http2_max_streams: l.http2_max_streams,
        }
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
    let stopper = shared.new_stopper();
    // Idle plaintext HTTP/1 connections wait here instead of in a task of their own.
    let park = match tls {
        None => Some(Park::start(shared.clone(), stopper.clone())),
        Some(_) => None,
    };
    let name: Arc<str> = Arc::from(spec.name.as_str());
    tracing::info!(listener = %name, addr = %local_addr, tls = tls.is_some(), "listening");
    tokio::spawn(accept_loop(
        shared,
        listener,
        local_addr,
        name,
        tls,
        park,
        stopper.clone(),
    ));
    Ok(ListenerHandle {
        spec,
        local_addr,
        stopper,
    })
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    local: SocketAddr,
    name: Arc<str>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    park: Option<Arc<Park<TcpStream>>>,
    stopper: Arc<Stopper>,
) {
    loop {
        let accepted = tokio::select! {
            _ = stopper.stopped() => break,
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
        let info = Arc::new(ConnInfo::new(peer, tls.is_some(), permit));
        let limits = ConnLimits::of(&shared.active.load().snapshot.limits);
        tokio::spawn(connection(
            shared.clone(),
            stream,
            info,
            limits,
            tls.clone(),
            park.clone(),
            stopper.clone(),
        ));
    }
    tracing::info!(listener = %name, addr = %local, "stopped accepting");
}

/// One accepted connection, for its whole life. Its future is the connection task's size,
/// which is what an idle connection costs: the TLS and HTTP/2 paths are boxed so a plaintext
/// HTTP/1 connection does not carry a TLS handshake's or an HTTP/2 connection's state.
async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    info: Arc<ConnInfo>,
    limits: ConnLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    park: Option<Arc<Park<TcpStream>>>,
    stopper: Arc<Stopper>,
) {
    let guard = ConnGuard::new(&shared);
    match tls {
        Some(acceptor) => {
            Box::pin(serve_tls(
                &shared, acceptor, stream, &info, limits, &stopper,
            ))
            .await;
            drop(guard);
        }
        None => {
            let env = h1::Env {
                shared: &shared,
                info: &info,
                limits: &limits,
                stopper: &stopper,
                detect_h2: true,
            };
            // The guard goes with the connection's state (which may be parked).
            let served = h1::serve(stream, env, Some(guard), park.as_ref()).await;
            if let h1::Served::Http2(io, guard) = served {
                let io = TrackedIo::new(io, info.clone());
                Box::pin(serve_h2(&shared, io, &info, &limits, &stopper)).await;
                drop(guard);
            }
        }
    }
}

async fn serve_tls(
    shared: &Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    info: &Arc<ConnInfo>,
    limits: ConnLimits,
    stopper: &Arc<Stopper>,
) {
    let io = TrackedIo::new(stream, info.clone());
    let hs = tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await;
    let no_park: Option<&Arc<Park<_>>> = None;
    match hs {
        Ok(Ok(tls_stream)) => {
            if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                serve_h2(shared, tls_stream, info, &limits, stopper).await;
            } else {
                let env = h1::Env {
                    shared,
                    info,
                    limits: &limits,
                    stopper,
                    detect_h2: false,
                };
                // TLS connections are not parked: rustls holds its buffers anyway. The
                // caller keeps the connection's guard.
                h1::serve(tls_stream, env, None, no_park).await;
            }
        }
        Ok(Err(e)) => tracing::debug!(peer = %info.peer, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(peer = %info.peer, "tls handshake timed out"),
    }
}

fn h2_builder(limits: &ConnLimits) -> http2::Builder<TokioExecutor> {
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(limits.head.max_header_bytes as u32)
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
    info: &Arc<ConnInfo>,
    limits: &ConnLimits,
    stopper: &Stopper,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = info.track_h2();
    let svc_shared = shared.clone();
    let svc_info = info.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let shared = svc_shared.clone();
        let info = svc_info.clone();
        async move {
            info.track_h2().request_started();
            let (mut parts, body) = req.into_parts();
            let fut = pipeline::handle(
                &mut parts,
                RequestBody::H2(body),
                info.clone(),
                shared.clone(),
            );
            // A panic in one request becomes a 500; the process keeps serving (F18).
            let resp = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(r) => r,
                Err(_) => {
                    tracing::error!("request handler panicked");
                    info.track_h2().request_finished();
                    // `pipeline::handle` counted the request in flight before running it; its
                    // completion hook, which undoes that, died with the panic (F18).
                    shared.metrics.in_flight.dec();
                    panic_response()
                }
            };
            let (mut parts, mut body) = resp.into_parts();
            // The HTTP/1 encoder is the only reader of fields passed on raw.
            body.move_raw_into(&mut parts.headers);
            body.fields().merge_into(&mut parts.headers);
            Ok::<_, Infallible>(hyper::Response::from_parts(parts, body))
        }
    });
    let b = h2_builder(limits);
    let conn = b.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        let next_check = match state.check(limits.header_timeout, limits.idle_timeout) {
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
        let stopped = stopper.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if stopper.hard_stopped() {
            return;
        }
        if draining.is_none() {
            if let Some(grace) = stopper.grace() {
                conn.as_mut().graceful_shutdown();
                draining = Some(tokio::time::Instant::now() + grace);
                continue;
            }
        }
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(peer = %info.peer, error = %e, "connection ended with error");
                }
                return;
            }
            // A stop or the hard stop: looked at on the next turn.
            _ = stopped => {}
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
