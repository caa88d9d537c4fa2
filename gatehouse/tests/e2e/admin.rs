//! Admin API: health, readiness, metrics, config (redacted), validate, routes, upstreams,
//! audit, dashboard, bearer token.

use crate::common::*;

async fn get_json(url: String) -> (u16, serde_json::Value) {
    let r = client().get(url).send().await.expect("send");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn health_ready_routes_upstreams_config() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gw");
    assert_eq!(get_json(gw.admin_url("/healthz")).await.0, 200);
    let (s, v) = get_json(gw.admin_url("/readyz")).await;
    assert_eq!(s, 200);
    assert_eq!(v["version"], gw.version().as_str());
    let (_, v) = get_json(gw.admin_url("/routes")).await;
    assert_eq!(v["routes"][0]["name"], "all");
    assert_eq!(v["routes"][0]["backends"][0]["upstream"], "app");
    let (_, v) = get_json(gw.admin_url("/upstreams")).await;
    assert_eq!(v["upstreams"][0]["name"], "app");
    assert_eq!(v["upstreams"][0]["targets"][0]["url"], up.url().as_str());
    let (_, v) = get_json(gw.admin_url("/config")).await;
    assert_eq!(v["version"], gw.version().as_str());
    assert_eq!(v["config"]["routes"][0]["name"], "all");
    // Also reachable under /admin/…
    assert_eq!(get_json(gw.admin_url("/admin/healthz")).await.0, 200);
    let page = client().get(gw.admin_url("/")).send().await.expect("send");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("Gatehouse"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_method_and_class() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&config_with_routes(
        &up.url(),
        "  - { name: api, match: { path: /api/* }, upstream: app }\n",
    ))
    .await
    .expect("gw");
    let c = client();
    for _ in 0..3 {
        c.get(gw.url("/api/x"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
    }
    c.get(gw.url("/nope"))
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("body");
    let ok = wait_for(std::time::Duration::from_secs(5), || {
        let t = gw.metrics_text();
        t.contains("gatehouse_requests_total{route=\"api\",method=\"GET\",status_class=\"2xx\"} 3")
            && t.contains("status_class=\"4xx\"} 1")
    })
    .await;
    let text = client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(ok, "{text}");
    assert!(
        text.contains("gatehouse_request_duration_seconds_count{route=\"api\"}"),
        "{text}"
    );
    assert!(
        text.contains("gatehouse_upstream_duration_seconds_count{upstream=\"app\"}"),
        "{text}"
    );
    assert!(text.contains("status_class=\"4xx\""), "{text}");
    assert!(text.contains("gatehouse_requests_in_flight"), "{text}");
    assert!(
        text.contains("gatehouse_config_reloads_total{result=\"failure\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn validate_endpoint_does_not_apply() {
    let up = EchoUpstream::start("u").await.expect("u");
    let gw = TestGateway::start(&simple_config(&up.url()))
        .await
        .expect("gw");
    let version = gw.version();
    let good = config_with_routes(
        &up.url(),
        "  - { name: other, match: { path: /other }, upstream: app }\n",
    );
    let r = client()
        .post(gw.admin_url("/config/validate"))
        .body(good)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.expect("json");
    assert_eq!(v["valid"], true);
    let bad = config_with_routes(
        &up.url(),
        "  - { name: other, match: { path: /other }, upstream: nope }\n",
    );
    let r = client()
        .post(gw.admin_url("/config/validate"))
        .body(bad)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.expect("json");
    assert!(
        v["errors"][0].as_str().expect("error").contains("line"),
        "{v}"
    );
    assert_eq!(gw.version(), version);
}

#[tokio::test]
async fn token_protects_every_endpoint_and_is_redacted() {
    let up = EchoUpstream::start("u").await.expect("u");
    let yaml = format!(
        "{}admin:\n  addr: 127.0.0.1:0\n  token: sekret-admin-token\n",
        simple_config(&up.url())
    );
    let gw = TestGateway::start(&yaml).await.expect("gw");
    for path in [
        "/metrics",
        "/config",
        "/routes",
        "/upstreams",
        "/audit",
        "/status",
        "/admin/config",
    ] {
        let r = client().get(gw.admin_url(path)).send().await.expect("send");
        assert_eq!(r.status(), 401, "{path}");
        let r = client()
            .get(gw.admin_url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = client()
        .post(gw.admin_url("/reload"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let r = client()
        .post(gw.admin_url("/config/validate"))
        .body("listeners: []")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    // Probes and the dashboard's static page stay reachable without the token.
    for path in ["/healthz", "/readyz", "/", "/admin/healthz"] {
        let r = client().get(gw.admin_url(path)).send().await.expect("send");
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = client()
        .get(gw.admin_url("/config"))
        .bearer_auth("sekret-admin-token")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    assert!(!text.contains("sekret-admin-token"), "{text}");
}

#[tokio::test]
async fn upstream_failures_are_counted_per_upstream() {
    let down = closed_port();
    let gw = TestGateway::start(&simple_config(&format!("http://{down}")))
        .await
        .expect("gw");
    let r = client().get(gw.url("/x")).send().await.expect("send");
    assert_eq!(r.status(), 503);
    r.bytes().await.expect("body");
    let ok = wait_for(std::time::Duration::from_secs(5), || {
        gw.metrics_text()
            .contains("gatehouse_upstream_errors_total{upstream=\"app\"} 1")
    })
    .await;
    assert!(ok, "{}", gw.metrics_text());
}
