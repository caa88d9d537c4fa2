//! Health checks and outlier ejection (F7).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;

fn config(urls: &[String], extra: &str) -> String {
    let targets: String = urls.iter().map(|u| format!("      - url: {u}\n")).collect();
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n{targets}{extra}routes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n"
    )
}

async fn target_health(gw: &TestGateway, url: &str) -> String {
    let v: serde_json::Value = client()
        .get(gw.admin_url("/upstreams"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    v["upstreams"][0]["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["url"] == url)
        .map(|t| t["health"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Kill one of three targets under steady load: a few errors while passive detection counts
/// failures, then zero client errors once the target is ejected.
#[tokio::test]
async fn f7_kill_one_of_three_zero_errors_after_ejection() {
    let a = EchoUpstream::start("a").await.expect("a");
    let b = EchoUpstream::start("b").await.expect("b");
    let victim = EchoUpstream::start("c").await.expect("c");
    let victim_url = victim.url();
    let urls = vec![a.url(), b.url(), victim_url.clone()];
    let gw = TestGateway::start(&config(
        &urls,
        "    health:\n      passive: { consecutive_failures: 3, eject_for: 30s }\n",
    ))
    .await
    .expect("gateway");
    let url = gw.url("/x");
    let errors = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (url, errors, ok, stop) = (url.clone(), errors.clone(), ok.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::SeqCst) {
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => errors.fetch_add(1, Ordering::SeqCst),
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    assert!(wait_for(Duration::from_secs(10), || ok.load(Ordering::SeqCst) >= 100).await);
    drop(victim);
    let ejected = wait_for_async(Duration::from_secs(10), || async {
        target_health(&gw, &victim_url).await == "ejected"
    })
    .await;
    assert!(ejected, "victim was not ejected");
    let during = errors.load(Ordering::SeqCst);
    let ok_at_ejection = ok.load(Ordering::SeqCst);
    assert!(
        wait_for(Duration::from_secs(15), || ok.load(Ordering::SeqCst)
            >= ok_at_ejection + 300)
        .await
    );
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    let after = errors.load(Ordering::SeqCst) - during;
    eprintln!("f7 passive: {during} client errors before ejection, {after} after");
    assert!(during <= 3 + 4, "errors during detection: {during}");
    assert_eq!(after, 0, "client errors after ejection");
    assert!(gw
        .metrics_text()
        .contains("gatehouse_upstream_ejections_total{upstream=\"app\"} 1"));
    let line =
        format!("gatehouse_upstream_target_healthy{{upstream=\"app\",target=\"{victim_url}\"}} 0");
    assert!(gw.metrics_text().contains(&line), "{}", gw.metrics_text());
}

/// Active checks take a dead target out after `unhealthy_after` probes and bring it back after
/// `healthy_after` good ones.
#[tokio::test]
async fn f7_active_check_ejects_and_recovers() {
    let a = EchoUpstream::start("a").await.expect("a");
    let victim = EchoUpstream::start("b").await.expect("b");
    let addr = victim.addr();
    let victim_url = victim.url();
    let urls = vec![a.url(), victim_url.clone()];
    let gw = TestGateway::start(&config(
        &urls,
        "    health:\n      active: { path: /healthz, interval: 100ms, timeout: 100ms, unhealthy_after: 2, healthy_after: 2 }\n",
    ))
    .await
    .expect("gateway");
    assert!(
        wait_for(Duration::from_secs(10), || victim.hits() >= 2).await,
        "probes arrive"
    );
    let probe = victim.last_request().expect("probe");
    assert_eq!(probe.path, "/healthz");
    assert_eq!(probe.header("user-agent"), Some("gatehouse-health-check"));
    drop(victim);
    assert!(
        wait_for_async(Duration::from_secs(10), || async {
            target_health(&gw, &victim_url).await == "unhealthy"
        })
        .await
    );
    let c = client();
    for _ in 0..50 {
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
    }
    let back = EchoUpstream::start_on("b", addr).await.expect("restart");
    assert!(
        wait_for_async(Duration::from_secs(10), || async {
            target_health(&gw, &victim_url).await == "healthy"
        })
        .await,
        "target recovers"
    );
    let before = back.hits();
    for _ in 0..20 {
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
    }
    assert!(
        back.hits() >= before + 8,
        "traffic returns to the recovered target"
    );
}

/// With every target down: a fast 503, no hang (panic mode tries them all; each refuses).
#[tokio::test]
async fn f7_all_targets_down_fast_503() {
    let urls: Vec<String> = (0..3).map(|_| http_url(closed_port())).collect();
    let gw = TestGateway::start(&config(
        &urls,
        "    health:\n      passive: { consecutive_failures: 1, eject_for: 10s }\n",
    ))
    .await
    .expect("gateway");
    let c = client();
    for _ in 0..10 {
        let t = Instant::now();
        let r = c.get(gw.url("/x")).send().await.expect("send");
        assert_eq!(r.status(), 503);
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
}

/// Health state survives a reload for targets that stay.
#[tokio::test]
async fn health_state_survives_reload() {
    let a = EchoUpstream::start("a").await.expect("a");
    let dead = http_url(closed_port());
    let extra = "    health:\n      passive: { consecutive_failures: 1, eject_for: 60s, max_ejected: 50% }\n";
    let gw = TestGateway::start(&config(&[a.url(), dead.clone()], extra))
        .await
        .expect("gateway");
    let c = client();
    for _ in 0..4 {
        let _ = c.get(gw.url("/x")).send().await.expect("send");
    }
    assert_eq!(target_health(&gw, &dead).await, "ejected");
    let b = EchoUpstream::start("b").await.expect("b");
    gw.reload_with(&config(&[a.url(), dead.clone(), b.url()], extra))
        .await
        .expect("reload");
    assert_eq!(target_health(&gw, &dead).await, "ejected");
    for _ in 0..20 {
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
    }
}

/// F4 + passive detection: an upstream that sends a good head and then resets in the middle of
/// a `Content-Length` body fails the call, even though the head looked fine. After
/// `consecutive_failures` such responses the target is ejected and every request goes to the
/// healthy target, complete.
#[tokio::test]
async fn f4_reset_mid_body_counts_for_outlier_detection() {
    let good = EchoUpstream::start("good").await.expect("good");
    let bad = RawUpstream::start(RawScript::ResetAfterBytes(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial".to_vec(),
    ))
    .await
    .expect("bad");
    let bad_url = bad.url();
    let gw = TestGateway::start(&config(
        &[good.url(), bad_url.clone()],
        "    health:\n      passive: { consecutive_failures: 3, eject_for: 30s }\n",
    ))
    .await
    .expect("gateway");
    let request = b"GET /x HTTP/1.1\r\nHost: gw.test\r\n\r\n";
    // Round robin over two targets: the bad one gets every other request until it is ejected.
    let mut truncated = 0;
    for _ in 0..12 {
        let r = raw_roundtrip(gw.addr(), request).await.expect("response");
        assert_eq!(r.status, 200);
        if r.truncated {
            truncated += 1;
        }
    }
    assert_eq!(truncated, 3, "exactly `consecutive_failures` short bodies");
    assert_eq!(bad.total_requests_seen(), 3);
    assert_eq!(target_health(&gw, &bad_url).await, "ejected");
    assert!(gw
        .metrics_text()
        .contains("gatehouse_upstream_ejections_total{upstream=\"app\"} 1"));
    let c = client();
    for _ in 0..20 {
        let r = c.get(gw.url("/y")).send().await.expect("send");
        assert_eq!(r.status(), 200);
        let v = echo_json(r).await;
        assert_eq!(v["upstream"], "good", "{v}");
    }
    assert_eq!(
        bad.total_requests_seen(),
        3,
        "no traffic to the ejected target"
    );
}

/// The other side of F4: a client that hangs up in the middle of a body says nothing about
/// the target. Disconnects far beyond `consecutive_failures` leave it in rotation with no
/// failure counted.
#[tokio::test]
async fn f4_client_disconnect_mid_body_does_not_count() {
    let body = vec![b'x'; 4000];
    let slow = RawUpstream::start(RawScript::Trickle {
        response: http_response(200, &[], &body),
        every: Duration::from_millis(2),
    })
    .await
    .expect("upstream");
    let url = slow.url();
    let gw = TestGateway::start(&config(
        std::slice::from_ref(&url),
        "    health:\n      passive: { consecutive_failures: 2, eject_for: 30s }\n",
    ))
    .await
    .expect("gateway");
    let in_flight_zero = || {
        gw.metrics_text()
            .lines()
            .any(|l| l == "gatehouse_requests_in_flight 0")
    };
    for i in 0..4 {
        let mut c = RawConn::connect(gw.addr()).await.expect("connect");
        c.write(format!("GET /slow/{i} HTTP/1.1\r\nHost: gw.test\r\n\r\n").as_bytes())
            .await
            .expect("write");
        assert!(
            c.read_until(b"xxxx", Duration::from_secs(10))
                .await
                .is_some(),
            "the body starts"
        );
        drop(c);
        // The gateway notices the hang-up and finishes the request (its completion ran).
        assert!(
            wait_for(Duration::from_secs(10), in_flight_zero).await,
            "request {i} never finished"
        );
    }
    let v: serde_json::Value = client()
        .get(gw.admin_url("/upstreams"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    let t = &v["upstreams"][0]["targets"][0];
    assert_eq!(t["health"], "healthy", "{t}");
    assert_eq!(t["consecutive_failures"], 0, "{t}");
}
