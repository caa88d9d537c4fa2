//! WebSocket pass-through. The handshake is proxied like any request (so routing, and later
//! auth and rate limits, apply to it); only when the upstream answers `101` do both sides
//! become a byte tunnel. Bytes the client sent early stay in the server connection's buffer
//! until the `101` has been written (W2); a non-101 answer leaves the client connection in
//! HTTP mode (W1).

use std::time::Duration;

use http::{header, HeaderMap, Method, Response, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use std::sync::Arc;

use gatehouse_core::GatewayError;

use crate::body::UpstreamBody;
use crate::gateway::Shared;
use crate::http1::Upgraded;
use crate::server::conn::ConnInfo;

/// W3: only HTTP/1.1 GET upgrades to `websocket`, without a body.
pub fn check_handshake(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    if version != Version::HTTP_11 {
        return Err(GatewayError::BadRequest("upgrade requires HTTP/1.1"));
    }
    if method != Method::GET {
        return Err(GatewayError::BadRequest("upgrade requires GET"));
    }
    let is_ws = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return Err(GatewayError::BadRequest(
            "only websocket upgrades are supported",
        ));
    }
    let has_body = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body {
        return Err(GatewayError::BadRequest("upgrade request with a body"));
    }
    Ok(())
}

/// Spawns the tunnel once both sides have upgraded: `client` resolves when the server has
/// written the `101` to the client. The tunnel closes both sides after `idle` without traffic
/// in either direction. `false` when the upstream side cannot be taken over.
pub fn tunnel(
    client: oneshot::Receiver<Upgraded>,
    upstream_resp: &mut Response<UpstreamBody>,
    idle: Duration,
    shared: &Arc<Shared>,
    conn: &ConnInfo,
) -> bool {
    let Some(mut upstream) = upstream_resp.body_mut().take_upgrade() else {
        return false;
    };
    let shared = shared.clone();
    let permit = conn.take_permit();
    // A tunnel outlives the HTTP connection it came from: it counts as an open connection
    // for graceful shutdown and is force-closed at the hard deadline (F11).
    let guard = crate::server::conn::ConnGuard::new(&shared);
    tokio::spawn(async move {
        tokio::select! {
            _ = async {
                match client.await {
                    Ok(mut c) => pump(&mut c, &mut upstream, idle).await,
                    Err(_) => tracing::debug!("client side of the upgrade went away"),
                }
            } => {}
            // The tunnels' stop signal: only the hard stop reaches it.
            _ = shared.tunnel_stop.stopped() => {}
        }
        drop(guard);
        drop(permit);
    });
    true
}

async fn pump<A, B>(a: &mut A, b: &mut B, idle: Duration)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let mut abuf = vec![0u8; 16 * 1024];
    let mut bbuf = vec![0u8; 16 * 1024];
    let (mut a_open, mut b_open) = (true, true);
    while a_open || b_open {
        tokio::select! {
            r = ar.read(&mut abuf), if a_open => match r {
                Ok(0) | Err(_) => { a_open = false; let _ = bw.shutdown().await; }
                Ok(n) => if bw.write_all(&abuf[..n]).await.is_err() { break },
            },
            r = br.read(&mut bbuf), if b_open => match r {
                Ok(0) | Err(_) => { b_open = false; let _ = aw.shutdown().await; }
                Ok(n) => if aw.write_all(&bbuf[..n]).await.is_err() { break },
            },
            _ = tokio::time::sleep(idle) => break,
        }
    }
}
