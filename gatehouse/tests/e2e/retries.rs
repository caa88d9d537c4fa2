//! Retries (F6, F1): only when safe, with a budget.

use std::time::{Duration, Instant};

use crate::common::*;

fn config(urls: &[String], extra: &str) -> String {
    let targets: String = urls.iter().map(|u| format!("      - url: {u}\n")).collect();
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n{targets}{extra}routes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n"
    )
}

fn count_method(up: &RawUpstream, method: &str) -> usize {
    up.requests()
        .iter()
        .filter(|r| r.starts_with(format!("{method} ").as_bytes()))
        .count()
}

/// The upstream drops every pooled connection on its second request (the keep-alive race).
/// GETs are retried transparently: zero client errors. A POST that reached the upstream is
/// never sent again: 502, and the upstream saw it exactly once.
#[tokio::test]
async fn f6_keepalive_race_get_retried_post_not() {
    let up = RawUpstream::start(RawScript::RespondThenDrop {
        response: http_response(200, &[], b"ok"),
        keep: 1,
    })
    .await
    .expect("upstream");
    let gw = TestGateway::start(&config(
        &[up.url()],
        "    retries: { attempts: 2, on: [connect_failure, reset] }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    for i in 0..300 {
        let r = c
            .get(gw.url(&format!("/get/{i}")))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200, "GET {i}");
    }
    assert!(up.connections() >= 150, "connections were really dropped");
    let logs = gw.access_logs();
    assert!(
        logs.iter().any(|l| l["attempts"] == 2),
        "retries are logged"
    );

    // A fresh pair: one GET leaves exactly one pooled connection, whose next request drops.
    let up = RawUpstream::start(RawScript::RespondThenDrop {
        response: http_response(200, &[], b"ok"),
        keep: 1,
    })
    .await
    .expect("upstream");
    let gw = TestGateway::start(&config(
        &[up.url()],
        "    retries: { attempts: 3, on: [connect_failure, reset, 502] }\n",
    ))
    .await
    .expect("gateway");
    assert_eq!(
        c.get(gw.url("/warm")).send().await.expect("send").status(),
        200
    );
    let r = c
        .post(gw.url("/order"))
        .body("pay once")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 502);
    assert_eq!(
        count_method(&up, "POST"),
        1,
        "the POST was sent exactly once"
    );
}

/// A refused connection means the request was never sent: even a POST is retried, on another
/// target, with its (buffered) body.
#[tokio::test]
async fn f1_connect_failure_retried_on_another_target_even_for_post() {
    let good = EchoUpstream::start("good").await.expect("echo");
    let gw = TestGateway::start(&config(
        &[http_url(closed_port()), good.url()],
        "    retries: { attempts: 2, on: [connect_failure] }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    for _ in 0..10 {
        let r = c
            .post(gw.url("/orders"))
            .body("x".repeat(1000))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        let v = echo_json(r).await;
        assert_eq!(v["body_len"], 1000);
    }
    assert_eq!(good.hits(), 10);
    assert!(gw
        .metrics_text()
        .contains("gatehouse_upstream_retries_total{upstream=\"app\"}"));
}

/// Status retries apply to idempotent methods only.
#[tokio::test]
async fn retry_on_503_for_get_not_for_post() {
    let bad = RawUpstream::start(RawScript::Respond(http_response(503, &[], b"busy")))
        .await
        .expect("raw");
    let good = EchoUpstream::start("good").await.expect("echo");
    let gw = TestGateway::start(&config(
        &[bad.url(), good.url()],
        "    retries: { attempts: 2, on: [503], backoff: { base: 1ms, max: 5ms } }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    for _ in 0..10 {
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
    }
    let mut posts_503 = 0;
    for _ in 0..10 {
        let r = c.post(gw.url("/x")).body("b").send().await.expect("send");
        if r.status() == 503 {
            posts_503 += 1;
        }
    }
    assert_eq!(
        posts_503, 5,
        "round robin sends half the POSTs to the 503 target, unretried"
    );
}

/// A per-try timeout on a silent target is retried on the other one within the request
/// timeout.
#[tokio::test]
async fn per_try_timeout_is_retried() {
    let silent = BlackholeUpstream::start().await.expect("silent");
    let good = EchoUpstream::start("good").await.expect("echo");
    let gw = TestGateway::start(&config(
        &[silent.url(), good.url()],
        "    timeouts: { per_try: 300ms, request: 5s }\n    retries: { attempts: 2, on: [timeout] }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    for _ in 0..4 {
        let t = Instant::now();
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
        assert!(t.elapsed() < Duration::from_secs(3));
    }
}

/// The per-try deadline is kept by each pooled upstream connection's own timer, re-armed per
/// request: a pooled connection's next request still times out at its own deadline (not the
/// previous one's), and one that answers in time is not cut short by an earlier deadline.
#[tokio::test]
async fn per_try_timeout_holds_on_reused_upstream_connections() {
    let up = EchoUpstream::start("app").await.expect("echo");
    let gw = TestGateway::start(&config(
        &[up.url()],
        "    timeouts: { per_try: 400ms, request: 5s }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    let get = |delay_ms: u64| {
        c.get(gw.url("/x"))
            .header("x-echo-delay-ms", delay_ms.to_string())
            .send()
    };
    // Fast, then (on the same pooled connection) slower than the deadline: 504 at ~400 ms.
    assert_eq!(get(0).await.expect("send").status(), 200);
    let t = Instant::now();
    assert_eq!(get(2_000).await.expect("send").status(), 504);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(390) && took < Duration::from_millis(1_500),
        "took {took:?}"
    );
    // Then, on pooled connections again: answers within the deadline are not cut short,
    // though the deadlines before theirs have long passed.
    for _ in 0..3 {
        assert_eq!(get(0).await.expect("send").status(), 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        assert_eq!(get(250).await.expect("send").status(), 200);
    }
}

/// With every try failing, the budget caps retries in flight at a share of live requests.
#[tokio::test]
async fn retry_budget_exhaustion_stops_retries() {
    let up = SlowUpstream::start(Duration::from_millis(600), http_response(503, &[], b"no"))
        .await
        .expect("slow");
    let gw = TestGateway::start(&config(
        &[up.url()],
        "    retries: { attempts: 3, on: [503], budget: 10%, budget_min: 1, backoff: { base: 1ms, max: 2ms } }\n",
    ))
    .await
    .expect("gateway");
    let url = gw.url("/x");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            client().get(&url).send().await.expect("send").status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("join"), 503);
    }
    let seen = up.total_requests_seen();
    eprintln!("retry budget: 20 requests made {seen} upstream calls (60 without a budget)");
    assert!(seen <= 30, "{seen} upstream calls");
    assert!(gw
        .metrics_text()
        .contains("gatehouse_upstream_retry_budget_exhausted_total{upstream=\"app\"}"));
}

/// Bodies of unknown length are streamed, never buffered, and tried once.
#[tokio::test]
async fn streamed_body_is_not_retried() {
    let good = EchoUpstream::start("good").await.expect("echo");
    let gw = TestGateway::start(&config(
        &[http_url(closed_port()), good.url()],
        "    balance: round_robin\n    retries: { attempts: 2, on: [connect_failure] }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let stream =
            futures_util::stream::iter(vec![Ok::<_, std::io::Error>(bytes::Bytes::from("chunk"))]);
        let r = c
            .post(gw.url("/x"))
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .expect("send");
        statuses.push(r.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![200, 200, 503, 503]);
}
