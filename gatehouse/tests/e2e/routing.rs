//! Routing: every match kind, SPEC.md precedence, hosts, rewrites, header transforms,
//! weighted backends, 404/405.

use crate::common::*;

async fn two_upstreams(routes: &str) -> (TestGateway, EchoUpstream, EchoUpstream) {
    let a = EchoUpstream::start("a").await.expect("a");
    let b = EchoUpstream::start("b").await.expect("b");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  a:\n    targets: [{{ url: {} }}]\n  b:\n    targets: [{{ url: {} }}]\nroutes:\n{routes}",
        a.url(),
        b.url()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    (gw, a, b)
}

async fn hit(
    gw: &TestGateway,
    method: &str,
    host: Option<&str>,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<String>, serde_json::Value) {
    let mut req = client().request(method.parse().expect("method"), gw.url(path));
    if let Some(h) = host {
        req = req.header("host", h);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("send");
    let status = resp.status().as_u16();
    let upstream = resp
        .headers()
        .get("x-upstream")
        .map(|v| v.to_str().expect("ascii").to_string());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, upstream, body)
}

#[tokio::test]
async fn exact_beats_prefix_beats_params_beats_regex() {
    let (gw, _a, _b) = two_upstreams(
        "  - { name: exact, match: { path: /x/y }, upstream: a }\n  - { name: prefix, match: { path: /x/* }, upstream: b }\n  - { name: params, match: { path: \"/p/{id}\" }, upstream: a }\n  - { name: regex, match: { path: \"~ ^/p/[0-9]+$\" }, upstream: b }\n  - { name: rx-only, match: { path: \"~ ^/r/[a-z]+$\" }, upstream: b }\n",
    )
    .await;
    assert_eq!(
        hit(&gw, "GET", None, "/x/y", &[]).await.1.as_deref(),
        Some("a")
    );
    assert_eq!(
        hit(&gw, "GET", None, "/x/z", &[]).await.1.as_deref(),
        Some("b")
    );
    assert_eq!(
        hit(&gw, "GET", None, "/x", &[]).await.1.as_deref(),
        Some("b")
    );
    // /p/7 matches both the params route and the regex: params wins.
    assert_eq!(
        hit(&gw, "GET", None, "/p/7", &[]).await.1.as_deref(),
        Some("a")
    );
    assert_eq!(
        hit(&gw, "GET", None, "/r/abc", &[]).await.1.as_deref(),
        Some("b")
    );
    assert_eq!(hit(&gw, "GET", None, "/r/ABC", &[]).await.0, 404);
}

#[tokio::test]
async fn longest_prefix_wins_on_segment_boundaries() {
    let (gw, _a, _b) = two_upstreams(
        "  - { name: api, match: { path: /api/* }, upstream: a }\n  - { name: api-v2, match: { path: /api/v2/* }, upstream: b }\n",
    )
    .await;
    assert_eq!(
        hit(&gw, "GET", None, "/api/v2/users", &[])
            .await
            .1
            .as_deref(),
        Some("b")
    );
    assert_eq!(
        hit(&gw, "GET", None, "/api/v2", &[]).await.1.as_deref(),
        Some("b")
    );
    assert_eq!(
        hit(&gw, "GET", None, "/api/v20", &[]).await.1.as_deref(),
        Some("a")
    );
    assert_eq!(hit(&gw, "GET", None, "/apix", &[]).await.0, 404);
}

#[tokio::test]
async fn hosts_exact_beats_wildcard_beats_any() {
    let (gw, _a, _b) = two_upstreams(
        "  - { name: exact-host, match: { hosts: [api.example.com], path: /* }, upstream: a }\n  - { name: wildcard, match: { hosts: [\"*.example.com\"], path: /* }, upstream: b }\n",
    )
    .await;
    assert_eq!(
        hit(&gw, "GET", Some("api.example.com"), "/", &[])
            .await
            .1
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        hit(&gw, "GET", Some("API.Example.COM:8080"), "/", &[])
            .await
            .1
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        hit(&gw, "GET", Some("www.example.com"), "/", &[])
            .await
            .1
            .as_deref(),
        Some("b")
    );
    assert_eq!(
        hit(&gw, "GET", Some("a.b.example.com"), "/", &[])
            .await
            .1
            .as_deref(),
        Some("b")
    );
    let (status, _, body) = hit(&gw, "GET", Some("example.com"), "/", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "no_route");
}

#[tokio::test]
async fn method_and_header_conditions_and_405() {
    let (gw, _a, _b) = two_upstreams(
        "  - { name: v2, match: { path: /items/*, methods: [GET, POST], headers: { x-api-version: \"2\" } }, upstream: b }\n  - { name: read, match: { path: /items/*, methods: [GET] }, upstream: a }\n",
    )
    .await;
    assert_eq!(
        hit(&gw, "GET", None, "/items/1", &[]).await.1.as_deref(),
        Some("a")
    );
    assert_eq!(
        hit(&gw, "POST", None, "/items/1", &[("x-api-version", "2")])
            .await
            .1
            .as_deref(),
        Some("b")
    );
    // Header condition fails → falls back to the method route.
    assert_eq!(
        hit(&gw, "GET", None, "/items/1", &[("x-api-version", "3")])
            .await
            .1
            .as_deref(),
        Some("a")
    );
    let resp = client()
        .post(gw.url("/items/1"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 405);
    let allow = resp.headers()["allow"].to_str().expect("ascii").to_string();
    assert!(allow.contains("GET"), "{allow}");
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "method_not_allowed");
    assert!(v["request_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[tokio::test]
async fn params_and_rewrites() {
    let (gw, _a, _b) = two_upstreams(
        "  - name: users\n    match: { path: \"/api/users/{id}\" }\n    upstream: a\n    rewrite: { path: \"/v2/users/{id}\" }\n  - name: strip\n    match: { path: /svc/* }\n    upstream: a\n    rewrite: { strip_prefix: /svc }\n  - name: rx\n    match: { path: \"~ ^/files/(?P<name>[a-z]+)\\\\.txt$\" }\n    upstream: a\n    rewrite: { path: \"/blob/{name}\" }\n",
    )
    .await;
    let (_, _, v) = hit(&gw, "GET", None, "/api/users/42?x=1", &[]).await;
    assert_eq!(v["path"], "/v2/users/42?x=1");
    let (_, _, v) = hit(&gw, "GET", None, "/svc/a/b?q=%20", &[]).await;
    assert_eq!(v["path"], "/a/b?q=%20");
    let (_, _, v) = hit(&gw, "GET", None, "/svc", &[]).await;
    assert_eq!(v["path"], "/");
    let (_, _, v) = hit(&gw, "GET", None, "/files/report.txt", &[]).await;
    assert_eq!(v["path"], "/blob/report");
}

#[tokio::test]
async fn request_and_response_header_transforms() {
    let a = EchoUpstream::start("a").await.expect("a");
    let gw = TestGateway::start(&config_with_routes(
        &a.url(),
        "  - name: t\n    match: { path: /* }\n    upstream: app\n    headers:\n      request: { set: { x-gateway: gatehouse }, remove: [cookie] }\n      response: { set: { cache-control: \"public, max-age=30\" }, remove: [x-upstream] }\n",
    ))
    .await
    .expect("gw");
    let resp = client()
        .get(gw.url("/t"))
        .header("cookie", "session=secret")
        .header("x-echo-set-header", "x-extra=1")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.headers()["cache-control"], "public, max-age=30");
    assert!(resp.headers().get("x-upstream").is_none());
    assert_eq!(resp.headers()["x-extra"], "1");
    let v = echo_json(resp).await;
    assert_eq!(echo_header(&v, "x-gateway"), Some("gatehouse"));
    assert_eq!(echo_header(&v, "cookie"), None);
}

#[tokio::test]
async fn weighted_backends_split_traffic() {
    let (gw, a, b) = two_upstreams(
        "  - name: canary\n    match: { path: /* }\n    backends: [{ upstream: a, weight: 80 }, { upstream: b, weight: 20 }]\n",
    )
    .await;
    let c = client();
    for _ in 0..500 {
        let r = c.get(gw.url("/")).send().await.expect("send");
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("body");
    }
    let (ha, hb) = (a.hits(), b.hits());
    assert_eq!(ha + hb, 500);
    // 80/20 split: b's share within a wide binomial band (σ≈9 at n=500).
    assert!((60..=140).contains(&hb), "a={ha} b={hb}");
}

#[tokio::test]
async fn weighted_round_robin_across_targets() {
    let t1 = EchoUpstream::start("t1").await.expect("t1");
    let t2 = EchoUpstream::start("t2").await.expect("t2");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - {{ url: {}, weight: 3 }}\n      - {{ url: {}, weight: 1 }}\nroutes:\n  - {{ name: all, match: {{ path: /* }}, upstream: app }}\n",
        t1.url(),
        t2.url()
    );
    let gw = TestGateway::start(&yaml).await.expect("gw");
    let c = client();
    for _ in 0..400 {
        c.get(gw.url("/"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
    }
    assert_eq!((t1.hits(), t2.hits()), (300, 100));
}

#[tokio::test]
async fn no_route_is_json_404_with_request_id() {
    let a = EchoUpstream::start("a").await.expect("a");
    let gw = TestGateway::start(&config_with_routes(
        &a.url(),
        "  - { name: only, match: { path: /only }, upstream: app }\n",
    ))
    .await
    .expect("gw");
    let resp = client().get(gw.url("/other")).send().await.expect("send");
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let rid = resp.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_string();
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "no_route");
    assert_eq!(v["request_id"], rid.as_str());
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn http2_prior_knowledge_is_routed_like_http1() {
    let a = EchoUpstream::start("a").await.expect("a");
    let gw = TestGateway::start(&simple_config(&a.url()))
        .await
        .expect("gw");
    let resp = h2c_client()
        .get(gw.url("/h2?x=1"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(v["path"], "/h2?x=1");
    // The upstream is HTTP/1.1 and still receives a Host header.
    assert!(echo_header(&v, "host").is_some());
}
