//! Introspection (RFC 7662) and forward auth against real in-test HTTP servers.

use std::time::Duration;

use gatehouse_testkit::jwt::{self as tk, Reply, ScriptedService};
use serde_json::json;

use crate::common::*;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn introspection_active_inactive_cached() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let idp = ScriptedService::start(|seen| {
        let body = String::from_utf8_lossy(&seen.body).into_owned();
        let auth_ok = seen.header("authorization") == Some("Basic Z2F0ZWhvdXNlOnMzY3JldCUyMQ==");
        if auth_ok && body.contains("token=good") {
            Reply::json(200, &json!({"active": true, "sub": "alice", "scope": "users:read", "exp": tk::now() + 600}))
        } else {
            Reply::json(200, &json!({"active": false}))
        }
    })
    .await
    .expect("idp");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {}\n\
         consumers:\n  - name: alice\n    groups: [gold]\n\
         auth:\n  oauth:\n    type: introspection\n    url: {}\n    client_id: gatehouse\n    client_secret: ${{INTROSPECT_SECRET}}\n    cache_for: 60s\n    consumer_claim: sub\n    forward_claims: {{ sub: x-user-id }}\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [oauth] }}\n    allow: {{ groups: [gold], scopes: [users:read] }}\n",
        up.url(),
        idp.url("/introspect")
    );
    // `${INTROSPECT_SECRET}` comes from the environment of the process.
    std::env::set_var("INTROSPECT_SECRET", "s3cret!");
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    for _ in 0..3 {
        let resp = client()
            .get(gw.url("/x"))
            .bearer_auth("good")
            .send()
            .await
            .expect("req");
        assert_eq!(resp.status(), 200);
        assert_eq!(
            echo_header(&echo_json(resp).await, "x-user-id"),
            Some("alice")
        );
    }
    assert_eq!(idp.hits(), 1, "introspection result not cached");
    let resp = client()
        .get(gw.url("/x"))
        .bearer_auth("bad")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 401);
    let _ = client()
        .get(gw.url("/x"))
        .bearer_auth("bad")
        .send()
        .await
        .expect("req");
    assert_eq!(idp.hits(), 2, "inactive result not cached");
    assert_eq!(
        client()
            .get(gw.url("/x"))
            .send()
            .await
            .expect("req")
            .status(),
        401
    );
    // The secret never shows on the admin API.
    let cfg = client()
        .get(gw.admin_url("/config"))
        .send()
        .await
        .expect("req")
        .text()
        .await
        .expect("body");
    assert!(!cfg.contains("s3cret"), "{cfg}");
    let seen = idp.seen();
    assert_eq!(seen[0].method, "POST");
    assert!(String::from_utf8_lossy(&seen[0].body).contains("token_type_hint=access_token"));
}

#[tokio::test]
async fn introspection_endpoint_down_is_503() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {}\n\
         auth:\n  oauth:\n    type: introspection\n    url: http://{}/introspect\n    timeout: 2s\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [oauth] }}\n",
        up.url(),
        closed_port()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let resp = client()
        .get(gw.url("/x"))
        .bearer_auth("t")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn forward_auth_admits_copies_headers_and_relays_denials() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let svc = ScriptedService::start(|seen| {
        if seen.header("cookie") == Some("session=ok") {
            Reply {
                status: 200,
                headers: vec![
                    ("x-user-id".into(), "u-42".into()),
                    ("x-other".into(), "no".into()),
                ],
                body: vec![],
            }
        } else {
            Reply {
                status: 302,
                headers: vec![("location".into(), "https://login.example/".into())],
                body: b"login".to_vec(),
            }
        }
    })
    .await
    .expect("svc");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {}\n\
         auth:\n  sso:\n    type: forward\n    url: {}\n    copy_headers: [x-user-id]\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [sso] }}\n",
        up.url(),
        svc.url("/check")
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let resp = client()
        .get(gw.url("/a/b?c=1"))
        .header("cookie", "session=ok")
        .header("x-user-id", "spoofed")
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(echo_headers_all(&v, "x-user-id"), vec!["u-42"]);
    assert!(echo_header(&v, "x-other").is_none());
    let seen = svc.seen();
    assert_eq!(seen[0].header("x-forwarded-uri"), Some("/a/b?c=1"));
    assert_eq!(seen[0].header("x-forwarded-method"), Some("GET"));

    let no_redirect = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let resp = no_redirect.get(gw.url("/a")).send().await.expect("req");
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], "https://login.example/");
    assert_eq!(resp.text().await.expect("body"), "login");
    assert!(wait_for(T, || up.hits() == 1).await);
}
