//! Authorization: `allow` by groups, scopes, claims; `ips`/`deny_ips` before authentication
//! on the trusted client IP (X3); 401 vs 403.

use gatehouse_testkit::jwt::{self as tk, TestKey};
use serde_json::json;

use crate::common::*;

async fn setup(up: &EchoUpstream, key: &TestKey, extra_top: &str) -> TestGateway {
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n{extra_top}upstreams:\n  app:\n    targets:\n      - url: {}\n\
         consumers:\n  - name: alice\n    groups: [gold]\n  - name: bob\n    groups: [silver]\n\
         auth:\n  corp:\n    type: jwt\n    keys: [{{ jwk: {} }}]\n    algorithms: [ES256]\n    consumer_claim: sub\n\
         routes:\n\
         \x20 - name: gold\n    match: {{ path: /gold/* }}\n    upstream: app\n    auth: {{ any_of: [corp] }}\n    allow: {{ groups: [gold] }}\n\
         \x20 - name: scoped\n    match: {{ path: /scoped/* }}\n    upstream: app\n    auth: {{ any_of: [corp] }}\n    allow: {{ scopes: [users:read, users:write], claims: {{ tenant: acme }} }}\n\
         \x20 - name: internal\n    match: {{ path: /internal/* }}\n    upstream: app\n    allow: {{ ips: [10.0.0.0/8] }}\n\
         \x20 - name: denied\n    match: {{ path: /denied/* }}\n    upstream: app\n    auth: {{ any_of: [corp] }}\n    allow: {{ deny_ips: [127.0.0.0/8] }}\n",
        up.url(),
        key.jwk()
    );
    TestGateway::start(&yaml).await.expect("gateway")
}

fn token(key: &TestKey, c: serde_json::Value) -> String {
    let mut claims = json!({"exp": tk::now() + 300});
    if let (Some(a), serde_json::Value::Object(b)) = (claims.as_object_mut(), c) {
        a.extend(b);
    }
    key.sign(&claims)
}

async fn status(gw: &TestGateway, path: &str, t: Option<&str>) -> u16 {
    let mut r = client().get(gw.url(path));
    if let Some(t) = t {
        r = r.bearer_auth(t);
    }
    r.send().await.expect("req").status().as_u16()
}

#[tokio::test]
async fn authz_groups_401_vs_403() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let key = TestKey::es256("k");
    let gw = setup(&up, &key, "").await;
    assert_eq!(status(&gw, "/gold/x", None).await, 401);
    assert_eq!(
        status(&gw, "/gold/x", Some(&token(&key, json!({"sub": "alice"})))).await,
        200
    );
    assert_eq!(
        status(&gw, "/gold/x", Some(&token(&key, json!({"sub": "bob"})))).await,
        403
    );
    assert_eq!(
        status(&gw, "/gold/x", Some(&token(&key, json!({"sub": "nobody"})))).await,
        403
    );
}

#[tokio::test]
async fn authz_scopes_and_claims() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let key = TestKey::es256("k");
    let gw = setup(&up, &key, "").await;
    let ok = token(
        &key,
        json!({"scope": "users:read users:write", "tenant": "acme"}),
    );
    assert_eq!(status(&gw, "/scoped/x", Some(&ok)).await, 200);
    let scp = token(
        &key,
        json!({"scp": ["users:read", "users:write"], "tenant": ["x", "acme"]}),
    );
    assert_eq!(status(&gw, "/scoped/x", Some(&scp)).await, 200);
    let missing = token(&key, json!({"scope": "users:read", "tenant": "acme"}));
    assert_eq!(status(&gw, "/scoped/x", Some(&missing)).await, 403);
    let tenant = token(
        &key,
        json!({"scope": "users:read users:write", "tenant": "evil"}),
    );
    assert_eq!(status(&gw, "/scoped/x", Some(&tenant)).await, 403);
}

#[tokio::test]
async fn x3_ip_rules_use_trusted_client_ip() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let key = TestKey::es256("k");
    let gw = setup(&up, &key, "").await;
    // No trusted proxies: a spoofed XFF inside the allowed range does not help.
    let resp = client()
        .get(gw.url("/internal/x"))
        .header("x-forwarded-for", "10.1.2.3")
        .header("x-real-ip", "10.1.2.3")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 403);
    // deny_ips is checked before authentication: 403 even without credentials.
    assert_eq!(status(&gw, "/denied/x", None).await, 403);
    assert_eq!(up.hits(), 0);

    // With loopback trusted, the right-most untrusted XFF entry is the client.
    let gw = setup(&up, &key, "trusted_proxies: [127.0.0.1/32]\n").await;
    let resp = client()
        .get(gw.url("/internal/x"))
        .header("x-forwarded-for", "10.1.2.3")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(gw.url("/internal/x"))
        .header("x-forwarded-for", "10.1.2.3, 8.8.8.8")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 403);
}
