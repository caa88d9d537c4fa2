//! hyper echo upstream: HTTP/1.1 and h2c (prior knowledge) on one port.
//!
//! Behaviour is steered by request headers the test sends (they travel through the gateway):
//! - `x-echo-status: 503`: response status;
//! - `x-echo-delay-ms: 200`: delay before the response head (after the body was read);
//! - `x-echo-body-bytes: N`: N bytes of `b'x'` streamed in 64 KiB chunks instead of JSON;
//! - `x-echo-set-header: name=value` (repeatable): extra response header;
//! - `x-echo-chunked: 1`: no `Content-Length` (chunked on HTTP/1.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest as _, Sha256};

use crate::raw::lock;
use crate::task::{bind_loopback, spawn_accept_loop, AbortOnDrop};

const CHUNK: usize = 64 * 1024;

/// What the echo upstream saw of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query exactly as received in the request target (`:path` on h2).
    pub path: String,
    /// The full request target as hyper parsed it (absolute-form keeps scheme/authority).
    pub uri: String,
    /// `HTTP/1.0`, `HTTP/1.1`, `HTTP/2.0`.
    pub version: String,
    /// All header fields, duplicates kept. Order: hyper's `HeaderMap` order (first
    /// appearance of each name, then that name's repeated values).
    pub headers: Vec<(String, String)>,
    /// Body bytes counted as they streamed; `None` until the body ended.
    pub body_len: Option<u64>,
    /// Request trailers (h2, or chunked h1 when hyper surfaces them).
    pub trailers: Vec<(String, String)>,
}

impl RecordedRequest {
    /// First value of `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    /// Every value of `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct EchoState {
    name: String,
    hits: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// The echo upstream; stops when dropped.
pub struct EchoUpstream {
    addr: SocketAddr,
    state: Arc<EchoState>,
    _task: AbortOnDrop,
}

impl EchoUpstream {
    /// Start on `127.0.0.1:0`. `name` is sent back in `x-upstream` (load-balancing tests).
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = bind_loopback().await?;
        Self::serve(name, listener)
    }

    /// Start on a given address: brings a stopped upstream back on its old port (health
    /// recovery tests). Retries briefly while the port is still in TIME_WAIT or held.
    pub async fn start_on(name: &str, addr: SocketAddr) -> anyhow::Result<Self> {
        let mut last = None;
        for _ in 0..200 {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.set_reuseaddr(true)?;
            match sock.bind(addr).and_then(|_| sock.listen(1024)) {
                Ok(l) => return Self::serve(name, l),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(anyhow::anyhow!("cannot bind {addr}: {last:?}"))
    }

    fn serve(name: &str, listener: tokio::net::TcpListener) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(EchoState {
            name: name.to_string(),
            ..EchoState::default()
        });
        let st = state.clone();
        let task = spawn_accept_loop(listener, move |stream, _| {
            let st = st.clone();
            async move {
                let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            }
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
    pub fn name(&self) -> &str {
        &self.state.name
    }
    /// Requests whose head arrived (counted before the body is read).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.state.requests).last().cloned()
    }
}

type EchoBody = BoxBody<Bytes, Infallible>;

fn header_str<'a>(req: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn handle(
    req: Request<Incoming>,
    st: Arc<EchoState>,
) -> Result<Response<EchoBody>, Infallible> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.to_string());
    let record = RecordedRequest {
        method: parts.method.to_string(),
        path,
        uri: parts.uri.to_string(),
        version: format!("{:?}", parts.version),
        headers: pairs(&parts.headers),
        body_len: None,
        trailers: Vec::new(),
    };
    let index = {
        let mut reqs = lock(&st.requests);
        reqs.push(record.clone());
        reqs.len() - 1
    };

    // Stream the body: count and hash, never buffer (F14 uploads of 100 MB+).
    let mut body_len = 0u64;
    let mut sha = Sha256::new();
    let mut trailers = Vec::new();
    let mut body_error = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body_len += d.len() as u64;
                    sha.update(d);
                } else if let Some(t) = f.trailers_ref() {
                    trailers = pairs(t);
                }
            }
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(r) = lock(&st.requests).get_mut(index) {
        r.body_len = Some(body_len);
        r.trailers = trailers.clone();
    }

    if let Some(ms) = header_str(&parts, "x-echo-delay-ms").and_then(|v| v.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let status = header_str(&parts, "x-echo-status")
        .and_then(|v| v.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let chunked = header_str(&parts, "x-echo-chunked").is_some_and(|v| v != "0");

    let (body, len, content_type): (EchoBody, u64, &str) =
        match header_str(&parts, "x-echo-body-bytes").and_then(|v| v.parse::<u64>().ok()) {
            Some(n) => (bytes_body(n), n, "application/octet-stream"),
            None => {
                let json = serde_json::json!({
                    "upstream": st.name,
                    "method": record.method,
                    "path": record.path,
                    "uri": record.uri,
                    "version": record.version,
                    "headers": record.headers,
                    "trailers": trailers,
                    "body_len": body_len,
                    "body_sha256": hex(&sha.finalize()),
                    "body_error": body_error,
                });
                let bytes = Bytes::from(json.to_string());
                let len = bytes.len() as u64;
                let body = if chunked {
                    StreamBody::new(futures_util::stream::iter([Ok::<_, Infallible>(
                        Frame::data(bytes),
                    )]))
                    .boxed()
                } else {
                    Full::new(bytes).boxed()
                };
                (body, len, "application/json")
            }
        };

    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    if !chunked {
        h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if let Ok(v) = HeaderValue::from_str(&st.name) {
        h.insert("x-upstream", v);
    }
    for spec in parts.headers.get_all("x-echo-set-header") {
        let Some((n, v)) = spec.to_str().ok().and_then(|s| s.split_once('=')) else {
            continue;
        };
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(n.trim().as_bytes()),
            HeaderValue::from_str(v.trim()),
        ) {
            h.append(n, v);
        }
    }
    Ok(resp)
}

/// `n` bytes of `b'x'` as a stream of 64 KiB frames sharing one buffer.
fn bytes_body(n: u64) -> EchoBody {
    let chunk = Bytes::from(vec![b'x'; CHUNK]);
    let frames = futures_util::stream::unfold(n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK as u64);
            // take <= CHUNK, so the cast cannot truncate.
            let frame = Frame::data(chunk.slice(..take as usize));
            Some((Ok::<_, Infallible>(frame), left - take))
        }
    });
    StreamBody::new(frames).boxed()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawConn;

    const T: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn echo_h1_json_and_knobs() -> anyhow::Result<()> {
        let up = EchoUpstream::start("a").await?;
        let mut c = RawConn::connect(up.addr()).await?;
        c.write(b"POST /p%2Fq/../x?a=1&a=2 HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nX-Dup: 2\r\nContent-Length: 3\r\nx-echo-status: 503\r\nx-echo-set-header: x-foo=bar\r\n\r\nabc").await?;
        let r = c.read_response(T).await?;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-upstream"), Some("a"));
        assert_eq!(r.header("x-foo"), Some("bar"));
        let v: serde_json::Value = serde_json::from_slice(&r.body)?;
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/p%2Fq/../x?a=1&a=2");
        assert_eq!(v["version"], "HTTP/1.1");
        assert_eq!(v["body_len"], 3);
        assert_eq!(
            v["body_sha256"],
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let rec = up.last_request().expect("recorded");
        assert_eq!(rec.header_all("x-dup"), vec!["1", "2"]);
        assert_eq!(rec.body_len, Some(3));

        // Large streamed response, chunked, and a delay; same keep-alive connection.
        c.write(b"GET /big HTTP/1.1\r\nHost: h\r\nx-echo-body-bytes: 200000\r\nx-echo-chunked: 1\r\nx-echo-delay-ms: 50\r\n\r\n").await?;
        let r = c.read_response(T).await?;
        assert_eq!(r.body.len(), 200_000);
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(up.hits(), 2);
        Ok(())
    }

    #[tokio::test]
    async fn echo_h2c_and_streaming_upload() -> anyhow::Result<()> {
        use http_body_util::BodyExt as _;
        let up = EchoUpstream::start("h2").await?;
        let stream = tokio::net::TcpStream::connect(up.addr()).await?;
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(conn);
        // 32 MiB upload in 1 MiB frames; the server counts without buffering.
        let mib = Bytes::from(vec![7u8; 1 << 20]);
        let frames = futures_util::stream::iter(
            (0..32).map(move |_| Ok::<_, Infallible>(Frame::data(mib.clone()))),
        );
        let req = Request::post(format!("{}/up?x=1", up.url())).body(StreamBody::new(frames))?;
        let resp = send.send_request(req).await?;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream"], "h2");
        let body = resp.into_body().collect().await?.to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        assert_eq!(v["version"], "HTTP/2.0");
        assert_eq!(v["path"], "/up?x=1");
        assert_eq!(v["body_len"], 32 << 20);
        Ok(())
    }
}
