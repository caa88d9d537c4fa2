//! Bodies stream both ways: large uploads and downloads pass through without being
//! buffered (RSS stays flat), chunked and HTTP/2 included.

use std::time::Duration;

use futures_util::StreamExt;

use crate::common::*;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}

const T: Duration = Duration::from_secs(10);

const BIG: u64 = 256 * 1024 * 1024;

#[tokio::test]
async fn large_download_streams_without_buffering() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gw");
    let before = rss_kib();
    let resp = client()
        .get(gw.url("/big"))
        .header("x-echo-body-bytes", BIG.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let mut total = 0u64;
    let mut stream = resp.bytes_stream();
    let mut peak = before;
    while let Some(chunk) = stream.next().await {
        total += chunk.expect("chunk").len() as u64;
        if total % (16 * 1024 * 1024) < 65536 {
            peak = peak.max(rss_kib());
        }
    }
    assert_eq!(total, BIG);
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 96 * 1024,
        "RSS grew by {grown} KiB for a {BIG}-byte download"
    );
}

#[tokio::test]
async fn large_upload_streams_without_buffering() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&config_with_routes(
        &up.url(),
        "  - name: upload\n    match: { path: /* }\n    upstream: app\n    max_body: 1GiB\n",
    ))
    .await
    .expect("gw");
    let before = rss_kib();
    let chunk = bytes::Bytes::from(vec![b'u'; 64 * 1024]);
    let n = (BIG / chunk.len() as u64) as usize;
    let body =
        futures_util::stream::iter((0..n).map(move |_| Ok::<_, std::io::Error>(chunk.clone())));
    let resp = client()
        .post(gw.url("/up"))
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let peak = rss_kib();
    let v = echo_json(resp).await;
    assert_eq!(v["body_len"], BIG);
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 96 * 1024,
        "RSS grew by {grown} KiB for a {BIG}-byte upload"
    );
}

#[tokio::test]
async fn h2_client_to_h1_upstream_streams_body_both_ways() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gw");
    let body = vec![7u8; 3 * 1024 * 1024 + 17];
    let resp = h2c_client()
        .post(gw.url("/h2up"))
        .body(body.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(v["body_len"], body.len() as u64);
    let resp = h2c_client()
        .get(gw.url("/h2down"))
        .header("x-echo-body-bytes", "5000000")
        .header("x-echo-chunked", "1")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.bytes().await.expect("body").len(), 5_000_000);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let up = RawUpstream::start(RawScript::ok("pooled"))
        .await
        .expect("raw");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gw");
    let c = client();
    for _ in 0..20 {
        let r = c.get(gw.url("/p")).send().await.expect("send");
        assert_eq!(r.text().await.expect("body"), "pooled");
    }
    assert_eq!(up.total_requests_seen(), 20);
    assert!(
        up.connections() <= 2,
        "{} upstream connections for 20 sequential requests",
        up.connections()
    );
}

/// A gateway whose one route goes to a listener the test accepts on and answers by hand;
/// `upstream_extra` is appended to the upstream's `targets` line (more of its settings).
async fn gateway_to_a_bare_listener(
    upstream_extra: &str,
) -> (tokio::net::TcpListener, TestGateway) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: http://{addr}{upstream_extra}\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n"
    );
    let gw = TestGateway::start(&yaml).await.expect("gw");
    (listener, gw)
}

/// A pooled upstream connection is closed by the gateway once idle for the upstream's
/// `timeouts.idle` (not left open until the upstream gives up), and the next request opens a
/// fresh one.
#[tokio::test]
async fn idle_pooled_upstream_connections_are_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, gw) = gateway_to_a_bare_listener("\n    timeouts: { idle: 300ms }").await;
    let c = client();
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    for round in 0..2 {
        let req = tokio::spawn(c.get(gw.url("/p")).send());
        let (mut conn, _) = tokio::time::timeout(T, listener.accept())
            .await
            .unwrap_or_else(|_| panic!("round {round}: no new upstream connection"))
            .expect("accept");
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.expect("read request");
            assert!(n > 0, "gateway closed before sending the request");
            got.extend_from_slice(&buf[..n]);
        }
        // Taken before the answer is sent: the connection goes back to the pool after it.
        let started = std::time::Instant::now();
        conn.write_all(answer).await.expect("answer");
        let resp = req.await.expect("task").expect("response");
        assert_eq!(resp.text().await.expect("body"), "ok");
        // Idle in the pool: closed by the gateway within about the idle timeout.
        let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("round {round}: idle pooled connection kept open"))
            .unwrap_or(0);
        assert_eq!(
            n, 0,
            "round {round}: unexpected bytes on an idle connection"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250),
            "round {round}: closed after {waited:?}, before the idle timeout"
        );
    }
}

/// A pooled connection the upstream has closed, or has sent stray bytes on, is not used
/// again: the next request (a POST, which is never retried on another connection) goes out
/// on a fresh connection and succeeds.
#[tokio::test]
async fn pooled_connections_closed_or_dirtied_by_the_upstream_are_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (listener, gw) = gateway_to_a_bare_listener("").await;
    let c = client();
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    // Round 0: the upstream closes its end after answering; round 1: it sends bytes no
    // request asked for (and keeps the connection open); round 2: it keeps the connection,
    // which round 3 finds reused.
    let mut kept = None;
    let mut dirty = None;
    for round in 0..4 {
        let req = tokio::spawn(c.post(gw.url("/p")).body("x").send());
        let mut conn = match (round, kept.take()) {
            (3, Some(conn)) => conn,
            _ => {
                tokio::time::timeout(T, listener.accept())
                    .await
                    .unwrap_or_else(|_| panic!("round {round}: no new upstream connection"))
                    .expect("accept")
                    .0
            }
        };
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"x")) {
            let n = tokio::time::timeout(T, conn.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("round {round}: no request on this connection"))
                .expect("read request");
            assert!(
                n > 0,
                "round {round}: gateway closed before sending the request"
            );
            got.extend_from_slice(&buf[..n]);
        }
        conn.write_all(answer).await.expect("answer");
        let resp = req.await.expect("task").expect("response");
        assert_eq!(resp.status(), 200, "round {round}");
        assert_eq!(resp.text().await.expect("body"), "ok");
        match round {
            0 => drop(conn),
            1 => {
                conn.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("stray");
                dirty = Some(conn);
            }
            _ => kept = Some(conn),
        }
        // Let the close or the stray bytes reach the gateway's side of the connection.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(dirty);
}
