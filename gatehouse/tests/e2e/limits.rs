//! SECURITY-TESTS.md 2.3: size limits and slow clients (L1–L3, L7, L8). Timers are set small
//! in each test's config so they run in seconds; conditions are polled with deadlines.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::smuggling::{Rig, T};

/// `limits:` YAML lines (each `  key: value\n`) in front of the simple catch-all config.
fn limited(limits: &'static str) -> impl FnOnce(&str) -> String {
    move |url: &str| format!("limits:\n{limits}{}", simple_config(url))
}

#[tokio::test]
async fn l1_request_line_too_long() {
    let rig = Rig::start().await;
    // "GET " + target + " HTTP/1.1" is exactly 8 KiB + 1.
    let target = format!("/{}", "a".repeat(8192 + 1 - "GET  HTTP/1.1".len() - 1));
    let line = format!("GET {target} HTTP/1.1");
    assert_eq!(line.len(), 8193);
    rig.expect_reject(
        format!("{line}\r\nHost: a\r\n\r\n").as_bytes(),
        &[414],
        "L1",
    )
    .await;
    // Exactly at the limit is fine.
    let target = &target[..target.len() - 1];
    let ok_line = format!("GET {target} HTTP/1.1");
    assert_eq!(ok_line.len(), 8192);
    let (r, _c) = rig
        .send(
            format!("{ok_line}\r\nHost: a\r\n\r\n").as_bytes(),
            "L1 at limit",
        )
        .await;
    assert_eq!(r.status, 200);
    // Through the query string too.
    let q = format!("/?q={}", "b".repeat(9000));
    rig.expect_reject(
        format!("GET {q} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes(),
        &[414],
        "L1 query",
    )
    .await;
}

#[tokio::test]
async fn l2_header_limits() {
    let rig = Rig::start().await;
    // One 16 KiB header.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(16 * 1024)
    );
    rig.expect_reject(big.as_bytes(), &[431, 400], "L2 one 16 KiB header")
        .await;
    // A header block over 64 KiB made of fields that are each small.
    let mut block = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..70 {
        block.push_str(&format!("X-F{i}: {}\r\n", "w".repeat(1000)));
    }
    block.push_str("\r\n");
    assert!(block.len() > 64 * 1024);
    rig.expect_reject(block.as_bytes(), &[431, 400], "L2 block > 64 KiB")
        .await;
    // 101 header fields (Host + 100).
    let mut many = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..100 {
        many.push_str(&format!("X-H{i}: 1\r\n"));
    }
    many.push_str("\r\n");
    rig.expect_reject(many.as_bytes(), &[431, 400], "L2 101 headers")
        .await;
    // 100 fields and a 4 KiB field are fine.
    let mut ok = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
    for i in 0..99 {
        ok.push_str(&format!("X-H{i}: 1\r\n"));
    }
    ok.push_str("\r\n");
    let (r, _c) = rig.send(ok.as_bytes(), "L2 100 headers").await;
    assert_eq!(r.status, 200, "L2 100 headers");
    let four = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(4 * 1024)
    );
    let (r, _c) = rig.send(four.as_bytes(), "L2 4 KiB header").await;
    assert_eq!(r.status, 200, "L2 4 KiB header");
}

fn l3_config(url: &str) -> String {
    config_with_routes(
        url,
        "  - name: small\n    match: { path: /small/* }\n    upstream: app\n    max_body: 1KiB\n  - name: all\n    match: { path: /* }\n    upstream: app\n",
    )
}

#[tokio::test]
async fn l3_body_over_route_limit_declared() {
    let rig = Rig::with(RawScript::ok("ok"), l3_config).await;
    let body = "x".repeat(1025);
    let req = format!("POST /small/up HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n{body}");
    rig.expect_reject(req.as_bytes(), &[413], "L3 CL over limit")
        .await;
    // At the limit: forwarded.
    let body = "y".repeat(1024);
    let req = format!("POST /small/up HTTP/1.1\r\nHost: a\r\nContent-Length: 1024\r\n\r\n{body}");
    let (r, _c) = rig.send(req.as_bytes(), "L3 at limit").await;
    assert_eq!(r.status, 200);
    assert_eq!(rig.up.requests().len(), 1);
}

#[tokio::test]
async fn l3_chunked_body_crossing_limit_midway() {
    let rig = Rig::with(RawScript::ok("ok"), l3_config).await;
    let mut c = rig.connect().await;
    // Head and a first chunk under the limit: the request goes upstream and streams.
    c.write(b"POST /small/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n")
        .await
        .expect("write");
    c.write(&[b'a'; 0x200]).await.expect("write");
    c.write(b"\r\n").await.expect("write");
    assert!(
        wait_for(T, || rig.up.total_requests_seen() == 1).await,
        "the head was not streamed upstream"
    );
    // Then chunks that cross 1 KiB.
    let mut rest = Vec::new();
    for fill in [b'b', b'Z'] {
        rest.extend_from_slice(b"200\r\n");
        rest.extend_from_slice(&[fill; 0x200]);
        rest.extend_from_slice(b"\r\n");
    }
    rest.extend_from_slice(b"0\r\n\r\n");
    let _ = c.write(&rest).await;
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, 413, "{:?}", r.body_str());
    assert!(c.is_closed(T).await, "connection left open after 413");
    // The upstream request was aborted: never complete, never past the limit.
    assert!(
        rig.up.requests().is_empty(),
        "upstream got a complete request"
    );
    assert!(
        !rig.up.received_contains(&[b'Z'; 16]),
        "bytes past the limit reached the upstream"
    );
}

#[tokio::test]
async fn l3_no_unlimited_default() {
    // Without any max_body the SPEC default (10 MiB) applies: a larger declared body is 413.
    let rig = Rig::start().await;
    rig.expect_reject(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10485761\r\n\r\n",
        &[413],
        "L3 default limit",
    )
    .await;
}

async fn get_ok(c: &mut RawConn) -> bool {
    if c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.is_err() {
        return false;
    }
    matches!(c.read_response(T).await, Ok(r) if r.status == 200)
}

#[tokio::test]
async fn l7_connection_cap() {
    let rig = Rig::with(RawScript::ok("ok"), limited("  max_connections: 5\n")).await;
    let addr = rig.gw.addr();
    let mut held = Vec::new();
    for i in 0..5 {
        let mut c = RawConn::connect(addr).await.expect("connect");
        assert!(
            get_ok(&mut c).await,
            "L7: connection {i} under the cap not served"
        );
        held.push(c);
    }
    // limit + 100: each extra connection is closed without being served.
    let extras = futures_util::future::join_all((0..100).map(|_| async move {
        let started = Instant::now();
        let Ok(mut c) = RawConn::connect(addr).await else {
            return (true, Duration::ZERO, Vec::new()); // refused outright
        };
        let _ = c.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        let closed = c.is_closed(T).await;
        (closed, started.elapsed(), c.buffered().to_vec())
    }))
    .await;
    let slowest = extras.iter().map(|e| e.1).max().unwrap_or_default();
    for (closed, _, got) in &extras {
        assert!(closed, "L7: an extra connection stayed open");
        assert!(
            got.is_empty(),
            "L7: an extra connection was served: {got:?}"
        );
    }
    // 100 ms in the catalogue; allow for a loaded CI machine.
    assert!(
        slowest < Duration::from_secs(2),
        "L7: extra connections closed only after {slowest:?}"
    );
    assert_eq!(rig.up.total_requests_seen(), 5);
    // Established connections are still served.
    for (i, c) in held.iter_mut().enumerate() {
        assert!(get_ok(c).await, "L7: established connection {i} not served");
    }
    // Release two: new connections are served again.
    held.truncate(3);
    assert!(
        wait_for_async(T, || async {
            match RawConn::connect(addr).await {
                Ok(mut c) => get_ok(&mut c).await,
                Err(_) => false,
            }
        })
        .await,
        "L7: no recovery after connections were released"
    );
}

#[tokio::test]
async fn l8_idle_keepalive_closed() {
    let rig = Rig::with(
        RawScript::ok("ok"),
        limited("  idle_timeout: 1s\n  header_timeout: 5s\n"),
    )
    .await;
    let mut c = rig.connect().await;
    assert!(get_ok(&mut c).await);
    let idle_since = Instant::now();
    // Not before the idle timeout...
    assert!(
        !c.is_closed(Duration::from_millis(300)).await,
        "L8: closed long before the idle timeout"
    );
    // ... but soon after it.
    assert!(
        c.is_closed(T).await,
        "L8: idle keep-alive connection never closed"
    );
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(5),
        "L8: closed after {idle:?} for a 1 s idle timeout"
    );
    assert!(
        c.buffered().is_empty(),
        "L8: unexpected bytes {:?}",
        c.buffered()
    );
}

#[tokio::test]
async fn l8_idle_fresh_connection_closed() {
    // A connection that never sends a byte is closed at the idle timeout too.
    let rig = Rig::with(
        RawScript::ok("ok"),
        limited("  idle_timeout: 1s\n  header_timeout: 5s\n"),
    )
    .await;
    let started = Instant::now();
    let mut c = rig.connect().await;
    assert!(c.is_closed(T).await, "L8: silent connection never closed");
    let t = started.elapsed();
    assert!(
        t >= Duration::from_millis(900) && t < Duration::from_secs(5),
        "L8: silent connection closed after {t:?}"
    );
}

#[tokio::test]
async fn l8_active_connection_not_idle() {
    // Requests every 400 ms keep a 1 s idle timeout from firing.
    let rig = Rig::with(
        RawScript::ok("ok"),
        limited("  idle_timeout: 1s\n  header_timeout: 5s\n"),
    )
    .await;
    let mut c = rig.connect().await;
    for i in 0..6 {
        assert!(
            get_ok(&mut c).await,
            "L8: request {i} on an active connection failed"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert_eq!(rig.up.requests().len(), 6);
    assert_eq!(rig.up.connections(), 1);
}

fn parked_gauge(gw: &TestGateway) -> Option<i64> {
    gw.metrics_text()
        .lines()
        .find(|l| l.starts_with("gatehouse_connections_parked "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// An idle keep-alive connection is parked (no task of its own) soon after its last
/// request: its next request is served as before, it still closes at the idle timeout,
/// counted from its last request, and the gauge shows it while it waits.
#[tokio::test]
async fn idle_connection_is_parked_then_served_and_still_times_out() {
    let rig = Rig::with(
        RawScript::ok("ok"),
        limited("  idle_timeout: 3s\n  header_timeout: 5s\n"),
    )
    .await;
    let mut c = rig.connect().await;
    assert!(get_ok(&mut c).await);
    assert!(
        wait_for(T, || parked_gauge(&rig.gw) == Some(1)).await,
        "never parked: {:?}",
        parked_gauge(&rig.gw)
    );
    // Pipelined requests on a parked connection: all answered, in order.
    c.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    for _ in 0..2 {
        assert_eq!(c.read_response(T).await.expect("response").status, 200);
    }
    let last = Instant::now();
    assert_eq!(rig.up.requests().len(), 3);
    assert_eq!(
        rig.up.connections(),
        1,
        "the client connection was not kept"
    );
    // Parked again, and closed at the idle timeout after the last request.
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(1)).await);
    assert!(c.is_closed(T).await, "parked connection never timed out");
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_secs(6),
        "closed after {idle:?} for a 3 s idle timeout"
    );
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(0)).await);
}

/// A connection that has served one request is parked soon after it (most such clients
/// are done); one that has served more keeps its task for a while (it is likely to be used
/// again, and parking and resuming it costs a third of a request).
#[tokio::test]
async fn connections_served_once_park_sooner_than_reused_ones() {
    let rig = Rig::start().await;
    let mut once = rig.connect().await;
    assert!(get_ok(&mut once).await);
    let t0 = Instant::now();
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(1)).await);
    assert!(
        t0.elapsed() < Duration::from_millis(800),
        "a connection served once parked after {:?}",
        t0.elapsed()
    );
    let mut reused = rig.connect().await;
    assert!(get_ok(&mut reused).await);
    assert!(get_ok(&mut reused).await);
    let t1 = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        parked_gauge(&rig.gw),
        Some(1),
        "a reused connection parked within 500 ms"
    );
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(2)).await);
    assert!(
        t1.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t1.elapsed()
    );
    // Both still serve.
    assert!(get_ok(&mut once).await);
    assert!(get_ok(&mut reused).await);
}

/// A parked connection closes at the idle timeout in force, not the one it was parked
/// under: a reload that shortens `idle_timeout` closes it at the new one.
#[tokio::test]
async fn reload_shortening_idle_timeout_applies_to_parked_connections() {
    let rig = Rig::with(RawScript::ok("ok"), limited("  idle_timeout: 60s\n")).await;
    let mut c = rig.connect().await;
    assert!(get_ok(&mut c).await);
    let last = Instant::now();
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(1)).await);
    rig.gw
        .reload_with(&limited("  idle_timeout: 2s\n")(&rig.up.url()))
        .await
        .expect("reload");
    assert!(
        c.is_closed(T).await,
        "parked connection kept its old timeout"
    );
    let idle = last.elapsed();
    assert!(
        idle >= Duration::from_millis(1900) && idle < Duration::from_secs(5),
        "closed after {idle:?} for a 2 s idle timeout"
    );
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(0)).await);
}

/// Graceful shutdown closes parked connections at once (they have nothing in flight), and
/// a listener removed by a reload closes its parked connections too.
#[tokio::test]
async fn parked_connections_close_on_shutdown_and_listener_removal() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    assert!(get_ok(&mut c).await);
    assert!(wait_for(T, || parked_gauge(&rig.gw) == Some(1)).await);
    let started = Instant::now();
    rig.gw.shutdown().await;
    assert!(c.is_closed(T).await, "parked connection survived shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for an idle connection",
        started.elapsed()
    );

    let up = RawUpstream::start(RawScript::ok("ok")).await.expect("up");
    let two = |extra: &str| {
        format!(
            "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n{extra}upstreams:\n  app:\n    targets:\n      - url: {}\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n",
            up.url()
        )
    };
    let gw = TestGateway::start(&two("  - name: extra\n    addr: 127.0.0.1:0\n"))
        .await
        .expect("gateway");
    let mut c = RawConn::connect(gw.listener("extra"))
        .await
        .expect("connect");
    assert!(get_ok(&mut c).await);
    assert!(wait_for(T, || parked_gauge(&gw) == Some(1)).await);
    gw.reload_with(&two("")).await.expect("reload");
    assert!(
        c.is_closed(T).await,
        "parked connection of a removed listener survived"
    );
}
