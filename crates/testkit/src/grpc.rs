//! A real gRPC peer (tonic codec and client) for G1–G4, without protoc or build scripts:
//! the messages are hand-written prost structs and the service is dispatched the way
//! tonic-generated code does it (`tonic::server::Grpc::unary` + `UnaryService`), served by
//! hyper-util's auto builder (h2c prior knowledge, like a real gRPC server).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::server::UnaryService;
use tonic::Status;
use tonic_prost::ProstCodec;

use crate::echo::RecordedRequest;
use crate::raw::lock;
use crate::task::{bind_loopback, spawn_accept_loop, AbortOnDrop};

/// `helloworld.HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `helloworld.HelloReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// The one method served.
pub const SAY_HELLO_PATH: &str = "/helloworld.Greeter/SayHello";

#[derive(Default)]
struct GrpcState {
    hits: AtomicUsize,
    requests: Mutex<Vec<RecordedRequest>>,
}

/// `helloworld.Greeter` server. `SayHello{name}` → `"Hello {name}"`; name `"fail"` →
/// `PERMISSION_DENIED "nope"` (grpc-status 7 and grpc-message in trailers). Metadata
/// `x-echo-delay-ms: N` delays the answer (G4 timeouts). Unknown methods → UNIMPLEMENTED.
pub struct GrpcUpstream {
    addr: SocketAddr,
    state: Arc<GrpcState>,
    _task: AbortOnDrop,
}

impl GrpcUpstream {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = bind_loopback().await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(GrpcState::default());
        let st = state.clone();
        let task = spawn_accept_loop(listener, move |stream, _| {
            let st = st.clone();
            async move {
                let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
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
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
    /// Heads of the requests received (G1 checks `te: trailers` and `content-type`).
    /// `body_len` is not tracked here (tonic consumes the body).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }
}

async fn handle(
    req: http::Request<Incoming>,
    st: Arc<GrpcState>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    lock(&st.requests).push(RecordedRequest {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
        uri: req.uri().to_string(),
        version: format!("{:?}", req.version()),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: None,
        trailers: Vec::new(),
    });
    if req.uri().path() == SAY_HELLO_PATH {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<HelloReply, HelloRequest>::default());
        Ok(grpc.unary(SayHello, req).await)
    } else {
        Ok(Status::unimplemented("unknown method").into_http())
    }
}

struct SayHello;

type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl UnaryService<HelloRequest> for SayHello {
    type Response = HelloReply;
    type Future = BoxFut<Result<tonic::Response<HelloReply>, Status>>;

    fn call(&mut self, request: tonic::Request<HelloRequest>) -> Self::Future {
        Box::pin(async move {
            let delay = request
                .metadata()
                .get("x-echo-delay-ms")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(ms) = delay {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let name = request.into_inner().name;
            if name == "fail" {
                return Err(Status::permission_denied("nope"));
            }
            Ok(tonic::Response::new(HelloReply {
                message: format!("Hello {name}"),
            }))
        })
    }
}

/// Call `SayHello` on `url` (`http://host:port`, h2c) with a real tonic client and return
/// the reply message. Connection failures come back as `UNAVAILABLE`.
pub async fn grpc_say_hello(url: &str, name: &str) -> Result<String, Status> {
    grpc_say_hello_with(url, name, &[], None)
        .await
        .map(|r| r.into_inner().message)
}

/// [`grpc_say_hello`] with request metadata (e.g. `authorization`) and an optional deadline
/// (sent as `grpc-timeout`). Returns the whole response so tests can read its metadata.
pub async fn grpc_say_hello_with(
    url: &str,
    name: &str,
    metadata: &[(&str, &str)],
    timeout: Option<Duration>,
) -> Result<tonic::Response<HelloReply>, Status> {
    let endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| Status::invalid_argument(format!("bad url {url}: {e}")))?
        .connect_timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("connect {url}: {e}")))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let mut request = tonic::Request::new(HelloRequest {
        name: name.to_string(),
    });
    for (k, v) in metadata {
        let key = MetadataKey::from_bytes(k.as_bytes())
            .map_err(|e| Status::invalid_argument(format!("metadata key {k}: {e}")))?;
        let value = MetadataValue::try_from(*v)
            .map_err(|e| Status::invalid_argument(format!("metadata value for {k}: {e}")))?;
        request.metadata_mut().append(key, value);
    }
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    client
        .unary(
            request,
            PathAndQuery::from_static(SAY_HELLO_PATH),
            ProstCodec::<HelloRequest, HelloReply>::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grpc_round_trip_direct() -> anyhow::Result<()> {
        let up = GrpcUpstream::start().await?;
        assert_eq!(grpc_say_hello(&up.url(), "world").await?, "Hello world");

        let err = grpc_say_hello(&up.url(), "fail")
            .await
            .expect_err("fail must be an error");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(err.message(), "nope");

        // grpc-timeout is only sent (our fake does not enforce it; the gateway should).
        let reply = grpc_say_hello_with(
            &up.url(),
            "slow",
            &[("x-echo-delay-ms", "20"), ("authorization", "Bearer t")],
            Some(Duration::from_secs(3)),
        )
        .await?;
        assert_eq!(reply.into_inner().message, "Hello slow");

        let reqs = up.requests();
        assert_eq!(reqs[0].header("te"), Some("trailers"));
        assert_eq!(reqs[0].header("content-type"), Some("application/grpc"));
        assert_eq!(reqs[0].version, "HTTP/2.0");
        assert_eq!(reqs[0].path, SAY_HELLO_PATH);
        assert!(reqs[2].header("grpc-timeout").is_some());
        assert_eq!(reqs[2].header("authorization"), Some("Bearer t"));

        let err = grpc_say_hello(&crate::http_url(crate::closed_port()), "x")
            .await
            .expect_err("nothing listens");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        Ok(())
    }
}
