//! Fault tolerance (SECURITY-TESTS section 4): F1 upstream down, F2 blackholed upstream,
//! F4 reset mid-response, F5 garbage / invalid responses, F18 a panic inside one request.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::common::*;

const T: Duration = Duration::from_secs(10);

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\n\r\n").into_bytes()
}

/// One catch-all route to `upstream_url`, with `timeouts` for the upstream and an optional
/// route `timeout`.
fn config(upstream_url: &str, timeouts: &str, route_timeout: Option<&str>) -> String {
    let route_timeout = route_timeout
        .map(|t| format!("    timeout: {t}\n"))
        .unwrap_or_default();
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n\
         upstreams:\n  app:\n    targets:\n      - url: {upstream_url}\n    timeouts: {{ {timeouts} }}\n\
         routes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n{route_timeout}"
    )
}

/// The SPEC.md error body, and nothing that tells a client about the inside.
fn assert_error_body(r: &RawResponse, code: &str, upstream: SocketAddr) {
    let v = raw_json(r);
    assert_eq!(v["error"], code, "{v}");
    let obj = v.as_object().expect("object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["error", "message", "request_id"]);
    assert_eq!(
        Some(v["request_id"].as_str().expect("id")),
        r.header("x-request-id")
    );
    let body = r.body_str().to_ascii_lowercase();
    for leak in [
        upstream.to_string(),
        upstream.port().to_string(),
        "127.0.0.1".to_string(),
        "refused".into(),
        "os error".into(),
        "hyper".into(),
        "tcp".into(),
        "connect".into(),
    ] {
        assert!(!body.contains(&leak), "error body leaks {leak:?}: {body}");
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---- F1 ---------------------------------------------------------------------------------

#[tokio::test]
async fn f1_upstream_refused_is_fast_503_without_internals() {
    let down = closed_port();
    let gw = TestGateway::start(&config(&http_url(down), "connect: 10s", None))
        .await
        .expect("gateway");
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    for req in [
        get("/a"),
        b"POST /b HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        get("/c"),
    ] {
        let started = Instant::now();
        c.write(&req).await.expect("write");
        let r = c.read_response(T).await.expect("response");
        let took = started.elapsed();
        assert_eq!(r.status, 503, "{}", r.body_str());
        assert_error_body(&r, "upstream_unavailable", down);
        // A refused connection is known at once: nowhere near the 10 s connect timeout.
        assert!(took < Duration::from_secs(2), "took {took:?}");
    }
    // The client connection stayed usable across the failures.
    assert!(!c.is_closed(Duration::from_millis(50)).await);
}

// ---- F2 ---------------------------------------------------------------------------------

/// A listener whose accept queue is full and never drained: further SYNs are dropped, so a
/// connect attempt hangs as it would against a blackholed address.
async fn syn_blackhole() -> (
    SocketAddr,
    tokio::net::TcpListener,
    Vec<tokio::net::TcpStream>,
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("addr"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    // Fill the accept queue; stop once a connect no longer completes quickly.
    for _ in 0..16 {
        match tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("connect failed: {e}"),
            Err(_) => return (addr, listener, held),
        }
    }
    panic!("the accept queue never filled; cannot emulate a SYN blackhole here");
}

#[tokio::test]
async fn f2_blackholed_connect_gives_503_at_connect_timeout() {
    let (addr, _listener, _held) = syn_blackhole().await;
    let gw = TestGateway::start(&config(&http_url(addr), "connect: 500ms", Some("8s")))
        .await
        .expect("gateway");
    let started = Instant::now();
    let r = raw_roundtrip(gw.addr(), &get("/hang"))
        .await
        .expect("response");
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{}", r.body_str());
    assert_error_body(&r, "upstream_unavailable", addr);
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_silent_upstream_gives_504_and_frees_sockets() {
    let up = BlackholeUpstream::start().await.expect("silent upstream");
    let gw = TestGateway::start(&config(&up.url(), "connect: 1s", Some("300ms")))
        .await
        .expect("gateway");
    // Warm-up: everything the gateway opens once (pools, timers) is in the baseline.
    let r = raw_roundtrip(gw.addr(), &get("/warm")).await.expect("resp");
    assert_eq!(r.status, 504);
    assert!(wait_for(T, || up.connections() >= 1).await);
    let settled = wait_for_async(T, || async {
        let a = open_fds();
        tokio::time::sleep(Duration::from_millis(100)).await;
        open_fds() == a
    })
    .await;
    assert!(settled);
    let baseline = open_fds();

    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    for i in 0..10 {
        let started = Instant::now();
        c.write(&get(&format!("/silent/{i}"))).await.expect("write");
        let r = c.read_response(T).await.expect("response");
        let took = started.elapsed();
        assert_eq!(r.status, 504, "{}", r.body_str());
        assert_error_body(&r, "upstream_timeout", up.addr());
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(5),
            "took {took:?}"
        );
    }
    assert_eq!(up.total_requests_seen(), 11);
    drop(c);
    // Upstream connections abandoned at the timeout are closed, not leaked: the fd count
    // (gateway and fake upstream live in this process) returns to the baseline.
    assert!(
        wait_for(T, || open_fds() <= baseline).await,
        "fds: baseline {baseline}, now {}",
        open_fds()
    );
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// F2 completeness: 50 requests that time out against a silent upstream leave nothing behind.
/// Gateway, fake upstream and client share this process and runtime, so the open fd count
/// (/proc/self/fd) and the runtime's live tasks (connection tasks of client, gateway and
/// upstream, hyper's upstream connection tasks, timers' owners) both return to the warm
/// baseline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f2_fds_and_tasks_return_to_baseline() {
    let up = BlackholeUpstream::start().await.expect("silent upstream");
    let gw = TestGateway::start(&config(&up.url(), "connect: 1s", Some("200ms")))
        .await
        .expect("gateway");
    // Warm-up: what the gateway opens once (pools, timers) is in the baseline.
    let r = raw_roundtrip(gw.addr(), &get("/warm")).await.expect("resp");
    assert_eq!(r.status, 504);
    let settled = wait_for_async(T, || async {
        let (f, t) = (open_fds(), alive_tasks());
        tokio::time::sleep(Duration::from_millis(200)).await;
        open_fds() == f && alive_tasks() == t
    })
    .await;
    assert!(settled, "baseline never settled");
    let (fds, tasks) = (open_fds(), alive_tasks());

    // 50 requests: 10 client connections at once, 5 requests each (keep-alive).
    let mut clients = Vec::new();
    for c in 0..10 {
        let addr = gw.addr();
        clients.push(tokio::spawn(async move {
            let mut conn = RawConn::connect(addr).await.expect("connect");
            for i in 0..5 {
                conn.write(&get(&format!("/silent/{c}/{i}")))
                    .await
                    .expect("write");
                let r = conn.read_response(T).await.expect("response");
                assert_eq!(r.status, 504, "{}", r.body_str());
            }
        }));
    }
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(up.total_requests_seen(), 51);
    let during = (open_fds(), alive_tasks());
    let back = wait_for(T, || open_fds() <= fds && alive_tasks() <= tasks).await;
    eprintln!(
        "f2: baseline fds {fds} tasks {tasks}; right after {during:?}; now {} {}",
        open_fds(),
        alive_tasks()
    );
    assert!(
        back,
        "fds {} (baseline {fds}), tasks {} (baseline {tasks})",
        open_fds(),
        alive_tasks()
    );
}

// ---- F4 ---------------------------------------------------------------------------------

#[tokio::test]
async fn f4_reset_mid_response_with_content_length_truncates_and_closes() {
    let up = RawUpstream::start(RawScript::ResetAfterBytes(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
    ))
    .await
    .expect("upstream");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    c.write(&get("/cl")).await.expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, 200);
    assert!(
        r.truncated,
        "the client must see a short body, not a clean one"
    );
    assert!(r.body.len() < 100);
    assert!(
        c.is_closed(T).await,
        "connection must close, never be reused"
    );
}

#[tokio::test]
async fn f4_reset_mid_chunked_response_has_no_terminating_chunk() {
    let up = RawUpstream::start(RawScript::ResetAfterBytes(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n7\r\npartial\r\n".to_vec(),
    ))
    .await
    .expect("upstream");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    c.write(&get("/chunked")).await.expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, 200);
    assert!(r.truncated, "a chunked body must not be terminated cleanly");
    assert!(c.is_closed(T).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f4_reset_mid_response_over_h2_resets_the_stream() {
    let up = RawUpstream::start(RawScript::ResetAfterBytes(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
    ))
    .await
    .expect("upstream");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let stream = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/h2", gw.addr()))
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = send.send_request(req).await.expect("response head");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(T, resp.into_body().collect())
        .await
        .expect("in time");
    assert!(body.is_err(), "the stream must be reset, not ended cleanly");
    // The h2 connection itself survives for other streams.
    let req = http::Request::get(format!("http://{}/h2-again", gw.addr()))
        .body(Empty::<Bytes>::new())
        .expect("req");
    let resp = send.send_request(req).await.expect("second stream");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn f4_reset_before_response_is_502() {
    let up = RawUpstream::start(RawScript::ResetAfterHead)
        .await
        .expect("upstream");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    for _ in 0..2 {
        c.write(&get("/reset")).await.expect("write");
        let r = c.read_response(T).await.expect("response");
        assert_eq!(r.status, 502, "{}", r.body_str());
        assert_error_body(&r, "bad_gateway", up.addr());
    }
}

// ---- F5 ---------------------------------------------------------------------------------

#[tokio::test]
async fn f5_garbage_response_is_502() {
    let up = RawUpstream::start(RawScript::Garbage)
        .await
        .expect("upstream");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let r = raw_roundtrip(gw.addr(), &get("/garbage"))
        .await
        .expect("resp");
    assert_eq!(r.status, 502);
    assert_error_body(&r, "bad_gateway", up.addr());
    assert!(!r.body_str().contains("SSH"));
}

#[tokio::test]
async fn f5_invalid_responses_are_502_and_the_connection_is_not_reused() {
    let cases: [&[u8]; 5] = [
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nX-Bad: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
    ];
    for bad in cases {
        // `Respond` keeps the upstream connection open: reuse would be possible.
        let up = RawUpstream::start(RawScript::Respond(bad.to_vec()))
            .await
            .expect("upstream");
        let gw = TestGateway::start(&simple_config(&up.url()))
            .await
            .expect("gateway");
        for _ in 0..2 {
            let r = raw_roundtrip(gw.addr(), &get("/bad")).await.expect("resp");
            assert_eq!(
                r.status,
                502,
                "{:?}: {}",
                String::from_utf8_lossy(bad),
                r.body_str()
            );
            assert_error_body(&r, "bad_gateway", up.addr());
        }
        assert!(wait_for(T, || up.total_requests_seen() == 2).await);
        assert_eq!(
            up.connections(),
            2,
            "{:?}: the upstream connection was reused after an invalid response",
            String::from_utf8_lossy(bad)
        );
    }
}

// ---- F18 --------------------------------------------------------------------------------

fn in_flight(gw: &TestGateway) -> Option<i64> {
    gw.metrics_text()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.split(' ')
                .next()
                .is_some_and(|n| n.ends_with("requests_in_flight"))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn panic_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: gw.test\r\nx-gatehouse-test-panic: 1\r\n\r\n")
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f18_panic_becomes_500_and_process_keeps_serving() {
    let up = EchoUpstream::start("app").await.expect("echo");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");

    // HTTP/1.1: the panicking request gets a 500; the same connection and new ones go on.
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    c.write(&panic_request("/boom")).await.expect("write");
    let r = c.read_response(T).await.expect("500");
    assert_eq!(r.status, 500);
    let v = raw_json(&r);
    assert_eq!(v["error"], "internal_error");
    assert!(!r.body_str().contains("panic"), "{}", r.body_str());
    let id = r.header("x-request-id").expect("x-request-id");
    assert!(
        id.len() >= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{id}"
    );
    assert_eq!(v["request_id"], id);
    c.write(&get("/after")).await.expect("write");
    let r = c.read_response(T).await.expect("same connection");
    assert_eq!(r.status, 200);
    let r = raw_roundtrip(gw.addr(), &get("/fresh"))
        .await
        .expect("new connection");
    assert_eq!(r.status, 200);

    // HTTP/2: one stream panics, the others on the same connection are served.
    let stream = tokio::net::TcpStream::connect(gw.addr())
        .await
        .expect("connect");
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2");
    tokio::spawn(conn);
    for (panic, want) in [(true, 500), (false, 200), (true, 500), (false, 200)] {
        let mut req = http::Request::get(format!("http://{}/h2", gw.addr()));
        if panic {
            req = req.header("x-gatehouse-test-panic", "1");
        }
        let resp = send
            .send_request(req.body(Empty::<Bytes>::new()).expect("req"))
            .await
            .expect("response");
        assert_eq!(resp.status(), want);
        resp.into_body().collect().await.expect("body");
    }

    // A burst of panics neither kills the process nor leaks in-flight accounting.
    let client = client();
    for _ in 0..20 {
        let r = client
            .get(gw.url("/burst"))
            .header("x-gatehouse-test-panic", "1")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 500);
    }
    let r = client.get(gw.url("/ok")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("body");
    assert!(
        wait_for(T, || in_flight(&gw) == Some(0)).await,
        "requests_in_flight stuck at {:?}",
        in_flight(&gw)
    );
    // Only the 5 non-panicking requests reached the upstream: /after, /fresh, 2 × h2, /ok.
    assert_eq!(up.hits(), 5);
}

/// X5: an upstream response head with a 1 MiB field, or 10,000 fields, is a 502 (the head
/// is bounded at 128 KiB and 200 fields: at most that much is buffered), its connection is not
/// reused, and a large but legal head still passes.
#[tokio::test]
async fn x5_oversized_upstream_response_heads_are_502() {
    let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1024 * 1024));
    big.extend_from_slice(b"\r\nContent-Length: 0\r\n\r\n");
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..10_000 {
        many.extend_from_slice(format!("X-H{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"Content-Length: 0\r\n\r\n");
    for (what, response) in [("1 MiB field", big), ("10,000 fields", many)] {
        let up = RawUpstream::start(RawScript::Respond(response))
            .await
            .expect("upstream");
        let gw = TestGateway::start(&simple_config(&up.url()))
            .await
            .expect("gateway");
        for _ in 0..2 {
            let r = raw_roundtrip(gw.addr(), &get("/x5")).await.expect("resp");
            assert_eq!(r.status, 502, "{what}: {}", r.body_str());
            assert_error_body(&r, "bad_gateway", up.addr());
        }
        assert!(wait_for(T, || up.total_requests_seen() == 2).await);
        assert_eq!(up.connections(), 2, "{what}: connection reused");
    }
    // 150 fields of ~100 bytes (15 KiB): within the bounds, passed on.
    let mut ok = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..150 {
        ok.extend_from_slice(format!("X-H{i}: {}\r\n", "v".repeat(90)).as_bytes());
    }
    ok.extend_from_slice(b"Content-Length: 2\r\n\r\nok");
    let up = RawUpstream::start(RawScript::Respond(ok))
        .await
        .expect("up");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gateway");
    let r = raw_roundtrip(gw.addr(), &get("/fine")).await.expect("resp");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-h149").map(str::len), Some(90));
}
