//! gRPC through the gateway (SECURITY-TESTS 2.9 G1, G2): a real tonic client on the h2c
//! listener, a real tonic server behind an `http2: true` upstream.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::*;
use gatehouse_testkit::tonic::Code;

const SAY_HELLO: &str = "/helloworld.Greeter/SayHello";

/// One route `grpc` on `path` to the upstream `greeter` (`http2: true`) at `upstream_url`.
fn grpc_config(upstream_url: &str, path: &str, route_extra: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n\
         upstreams:\n  greeter:\n    http2: true\n    targets:\n      - url: {upstream_url}\n    timeouts: {{ connect: 2s }}\n\
         routes:\n\
         \x20 - name: grpc\n    match: {{ path: {path} }}\n    upstream: greeter\n{route_extra}"
    )
}

/// `helloworld.HelloRequest{name}` as one length-prefixed gRPC message.
fn grpc_frame(name: &str) -> Bytes {
    let mut msg = vec![0x0a, name.len() as u8];
    msg.extend_from_slice(name.as_bytes());
    let mut out = vec![0u8];
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(&msg);
    Bytes::from(out)
}

struct H2Reply {
    head: http::response::Parts,
    body: Bytes,
    trailers: Option<http::HeaderMap>,
}

/// A unary gRPC call made with a bare hyper h2c client, so the test sees exactly where
/// `grpc-status` travels (response headers for Trailers-Only, or trailers).
async fn h2_grpc_call(addr: SocketAddr, path: &str, name: &str, meta: &[(&str, &str)]) -> H2Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in meta {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(grpc_frame(name))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    let (head, body) = resp.into_parts();
    let collected = body.collect().await.expect("body");
    let trailers = collected.trailers().cloned();
    H2Reply {
        head,
        body: collected.to_bytes(),
        trailers,
    }
}

fn grpc_status_in(map: &http::HeaderMap) -> Option<&str> {
    map.get("grpc-status").and_then(|v| v.to_str().ok())
}

// ---- G1 ---------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_grpc_trailers_and_te_travel_end_to_end() {
    let up = GrpcUpstream::start().await.expect("grpc upstream");
    let gw = TestGateway::start(&grpc_config(&up.url(), "/helloworld.Greeter/*", ""))
        .await
        .expect("gateway");
    let url = http_url(gw.addr());

    assert_eq!(
        grpc_say_hello(&url, "world").await.expect("reply"),
        "Hello world"
    );
    let err = grpc_say_hello(&url, "fail")
        .await
        .expect_err("fail must be an error");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "nope");

    let reply = grpc_say_hello_with(
        &url,
        "meta",
        &[("x-tenant", "t1"), ("authorization", "Bearer abc")],
        Some(Duration::from_secs(5)),
    )
    .await
    .expect("reply");
    assert_eq!(reply.into_inner().message, "Hello meta");

    let reqs = up.requests();
    assert_eq!(reqs.len(), 3);
    for r in &reqs {
        assert_eq!(r.version, "HTTP/2.0");
        assert_eq!(r.path, SAY_HELLO);
        assert_eq!(r.header_all("te"), vec!["trailers"], "{:?}", r.headers);
        assert!(r
            .header("content-type")
            .is_some_and(|v| v.starts_with("application/grpc")));
        assert!(r.header("x-request-id").is_some());
        assert!(r.header("traceparent").is_some());
    }
    assert_eq!(reqs[2].header("x-tenant"), Some("t1"));
    assert_eq!(reqs[2].header("authorization"), Some("Bearer abc"));
    assert!(reqs[2].header("grpc-timeout").is_some());

    // On the wire: a normal reply keeps grpc-status in the trailers, and so does an error
    // the upstream generated (trailers are forwarded, not dropped or synthesized).
    let ok = h2_grpc_call(gw.addr(), SAY_HELLO, "raw", &[]).await;
    assert_eq!(ok.head.status, 200);
    assert!(ok.head.headers.contains_key("x-request-id"));
    assert!(ok.body.len() > 5 && ok.body.windows(9).any(|w| w == b"Hello raw"));
    let t = ok.trailers.expect("trailers");
    assert_eq!(grpc_status_in(&t), Some("0"));

    let fail = h2_grpc_call(gw.addr(), SAY_HELLO, "fail", &[]).await;
    assert_eq!(fail.head.status, 200);
    let status_at = fail
        .trailers
        .as_ref()
        .and_then(grpc_status_in)
        .or_else(|| grpc_status_in(&fail.head.headers));
    assert_eq!(status_at, Some("7"));
    let msg = fail
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-message"))
        .or_else(|| fail.head.headers.get("grpc-message"))
        .expect("grpc-message");
    assert_eq!(msg, "nope");
}

// ---- G2 ---------------------------------------------------------------------------------

/// The Trailers-Only shape: HTTP 200, `content-type: application/grpc`, `grpc-status` in the
/// one header block, no body and no separate trailers.
fn assert_trailers_only(r: &H2Reply, status: &str) {
    assert_eq!(r.head.status, 200, "{:?}", r.head);
    assert_eq!(
        grpc_status_in(&r.head.headers),
        Some(status),
        "{:?}",
        r.head
    );
    assert!(r
        .head
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc")));
    assert!(r.head.headers.contains_key("grpc-message"));
    assert!(r.head.headers.contains_key("x-request-id"));
    assert!(r.body.is_empty(), "{:?}", r.body);
    assert!(r.trailers.is_none(), "{:?}", r.trailers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g2_grpc_errors_are_trailers_only() {
    // Upstream down: 14 UNAVAILABLE.
    let down = http_url(closed_port());
    let gw = TestGateway::start(&grpc_config(&down, "/helloworld.Greeter/*", ""))
        .await
        .expect("gateway");
    let r = h2_grpc_call(gw.addr(), SAY_HELLO, "x", &[]).await;
    assert_trailers_only(&r, "14");
    let err = grpc_say_hello(&http_url(gw.addr()), "x")
        .await
        .expect_err("upstream is down");
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "upstream unavailable");
    // The same failure for a non-gRPC client stays the SPEC.md JSON error.
    let resp = client().get(gw.url(SAY_HELLO)).send().await.expect("send");
    assert_eq!(resp.status(), 503);
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "upstream_unavailable");

    // No route: 12 UNIMPLEMENTED (our mapping for 404).
    let up = GrpcUpstream::start().await.expect("grpc upstream");
    let gw = TestGateway::start(&grpc_config(&up.url(), "/other.Service/*", ""))
        .await
        .expect("gateway");
    let r = h2_grpc_call(gw.addr(), SAY_HELLO, "x", &[]).await;
    assert_trailers_only(&r, "12");
    let err = grpc_say_hello(&http_url(gw.addr()), "x")
        .await
        .expect_err("no route");
    assert_eq!(err.code(), Code::Unimplemented);
    assert_eq!(err.message(), "no route");
    assert_eq!(up.hits(), 0);

    // Timeout: 4 DEADLINE_EXCEEDED at the route timeout, long before the upstream answers.
    let gw = TestGateway::start(&grpc_config(
        &up.url(),
        "/helloworld.Greeter/*",
        "    timeout: 200ms\n",
    ))
    .await
    .expect("gateway");
    let started = Instant::now();
    let r = h2_grpc_call(gw.addr(), SAY_HELLO, "slow", &[("x-echo-delay-ms", "5000")]).await;
    assert_trailers_only(&r, "4");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let started = Instant::now();
    let err = grpc_say_hello_with(
        &http_url(gw.addr()),
        "slow",
        &[("x-echo-delay-ms", "5000")],
        None,
    )
    .await
    .expect_err("route timeout");
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(err.message(), "upstream timeout");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Fast calls on the same route still work.
    assert_eq!(
        grpc_say_hello(&http_url(gw.addr()), "fast")
            .await
            .expect("reply"),
        "Hello fast"
    );
}
