//! CORS: preflight answered before authentication, actual responses get the allow headers
//! and `Vary: Origin`, disallowed origins get nothing.

use crate::common::*;

async fn setup(up: &EchoUpstream) -> TestGateway {
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {}\n\
         consumers:\n  - name: acme\n    api_keys: [\"sha256:{}\"]\n\
         auth:\n  keys:\n    type: api_key\n\
         routes:\n  - name: r\n    match: {{ path: /api/*, methods: [GET, PUT] }}\n    upstream: app\n    auth: {{ any_of: [keys] }}\n\
         \x20   cors: {{ origins: [\"https://app.example.com\"], methods: [GET, PUT], headers: [x-api-key, content-type], expose_headers: [x-request-id], credentials: true, max_age: 10m }}\n\
         \x20 - name: open\n    match: {{ path: /open/* }}\n    upstream: app\n    cors: {{ origins: [\"*\"] }}\n",
        up.url(),
        "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
    );
    TestGateway::start(&yaml).await.expect("gateway")
}

#[tokio::test]
async fn cors_preflight_answered_before_auth() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let resp = client()
        .request(reqwest::Method::OPTIONS, gw.url("/api/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "X-API-Key, Content-Type")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, PUT");
    assert_eq!(h["access-control-allow-headers"], "x-api-key, content-type");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-max-age"], "600");
    assert!(h["vary"].to_str().expect("vary").contains("Origin"));
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn cors_preflight_refused_for_other_origins_methods_headers() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", ""),
        ("https://app.example.com", "DELETE", ""),
        ("https://app.example.com", "GET", "x-admin"),
        ("null", "GET", ""),
    ] {
        let mut r = client()
            .request(reqwest::Method::OPTIONS, gw.url("/api/x"))
            .header("origin", origin)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            r = r.header("access-control-request-headers", headers);
        }
        let resp = r.send().await.expect("req");
        assert!(
            resp.status() == 403 || resp.status() == 405,
            "{origin} {method} {headers}: {}",
            resp.status()
        );
        assert!(resp.headers().get("access-control-allow-origin").is_none());
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn cors_actual_response_headers_and_vary() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    // An unauthenticated actual request still gets CORS headers, so the script can read 401.
    let resp = client()
        .get(gw.url("/api/x"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(
        resp.headers()["access-control-expose-headers"],
        "x-request-id"
    );
    assert_eq!(resp.headers()["vary"], "Origin");
    let resp = client()
        .get(gw.url("/api/x"))
        .header("origin", "https://app.example.com")
        .header("x-api-key", "password")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let resp = client()
        .get(gw.url("/api/x"))
        .header("origin", "https://evil.example.com")
        .header("x-api-key", "password")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    assert_eq!(resp.headers()["vary"], "Origin");
    // Wildcard without credentials.
    let resp = client()
        .get(gw.url("/open/x"))
        .header("origin", "https://anyone.example")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}
