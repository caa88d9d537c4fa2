//! JWT authentication end to end (SECURITY-TESTS 2.6 J1–J12 over HTTP, X2 identity headers,
//! P1–P10 against a JWT-protected `/admin/*`), and JWKS rotation against an in-test JWKS
//! server (hyper).

use std::time::Duration;

use gatehouse_testkit::jwt::{self as tk, Reply, ScriptedService, TestKey};
use serde_json::json;

use crate::common::*;

const T: Duration = Duration::from_secs(10);
const SECRET: &str = "0123456789abcdef0123456789abcdef-hs";

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"sub": "alice", "exp": tk::now() + 300, "iss": "https://idp.test/", "aud": "orders"});
    if let (Some(a), serde_json::Value::Object(b)) = (c.as_object_mut(), extra) {
        a.extend(b);
    }
    c
}

/// `/admin/*` behind RS256 (file key), `/hs/*` behind HS256, `/api/*` public.
async fn setup(upstream: &EchoUpstream) -> TestGateway {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("rsa.pem"), tk::RSA_PUBLIC_PEM).expect("key");
    let yaml = format!(
        r#"listeners:
  - name: public
    addr: 127.0.0.1:0
upstreams:
  app:
    targets:
      - url: {url}
consumers:
  - name: alice
    groups: [gold]
auth:
  corp:
    type: jwt
    issuer: https://idp.test/
    audiences: [orders]
    keys: [{{ file: rsa.pem, kid: k1 }}]
    algorithms: [RS256]
    consumer_claim: sub
    forward_claims: {{ sub: x-user-id, scope: x-user-scopes }}
  shared:
    type: jwt
    keys: [{{ secret: "{SECRET}" }}]
    algorithms: [HS256]
routes:
  - name: admin
    match: {{ path: /admin/* }}
    upstream: app
    auth: {{ any_of: [corp] }}
  - name: hs
    match: {{ path: /hs/* }}
    upstream: app
    auth: {{ any_of: [shared] }}
  - name: api
    match: {{ path: /api/* }}
    upstream: app
"#,
        url = upstream.url()
    );
    TestGateway::start_in(dir, &yaml).await.expect("gateway")
}

async fn get(gw: &TestGateway, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut r = client().get(gw.url(path));
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.send().await.expect("request")
}

#[tokio::test]
async fn jwt_valid_token_admits_and_forwards_identity() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let token = tk::rsa(
        "RS256",
        json!({"kid": "k1"}),
        &claims(json!({"scope": "users:read users:write"})),
    );
    let resp = client()
        .get(gw.url("/admin/x"))
        .header("authorization", format!("Bearer {token}"))
        // X2: spoofed identity headers never reach the upstream.
        .header("x-user-id", "mallory")
        .header("x-consumer-username", "root")
        .header("x-user-scopes", "admin")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(echo_headers_all(&v, "x-user-id"), vec!["alice"]);
    assert_eq!(
        echo_headers_all(&v, "x-user-scopes"),
        vec!["users:read users:write"]
    );
    assert_eq!(echo_headers_all(&v, "x-consumer-username"), vec!["alice"]);
    assert_eq!(echo_headers_all(&v, "x-consumer-groups"), vec!["gold"]);
    assert!(
        wait_for(T, || gw
            .access_logs()
            .iter()
            .any(|l| l["consumer"] == "alice"))
        .await
    );
}

#[tokio::test]
async fn x2_identity_headers_stripped_on_public_routes() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let resp = client()
        .get(gw.url("/api/x"))
        .header("x-user-id", "admin")
        .header("X-User-Scopes", "admin")
        .header("x-consumer-username", "root")
        .header("x_auth_user", "admin")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    for h in [
        "x-user-id",
        "x-user-scopes",
        "x-consumer-username",
        "x_auth_user",
    ] {
        assert!(echo_header(&v, h).is_none(), "{h} reached the upstream");
    }
}

#[tokio::test]
async fn j_missing_and_invalid_tokens_get_401_with_www_authenticate() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let resp = get(&gw, "/admin/x", None).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"gatehouse\""
    );
    let resp = get(&gw, "/admin/x", Some("not.a.jwt")).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"gatehouse\", error=\"invalid_token\""
    );
    let v: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(v["error"], "unauthorized");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn j1_alg_none_rejected_over_http() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    for alg in ["none", "None", "nOnE"] {
        let input = tk::signing_input(&json!({"alg": alg, "kid": "k1"}), &claims(json!({})));
        for t in [format!("{input}."), format!("{input}.c2ln")] {
            assert_eq!(get(&gw, "/admin/x", Some(&t)).await.status(), 401, "{t}");
        }
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn j2_hs_rs_confusion_rejected() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let input = tk::signing_input(&json!({"alg": "HS256", "kid": "k1"}), &claims(json!({})));
    // PEM bytes and DER bytes of the configured RSA public key as the HMAC secret.
    let der: Vec<u8> = {
        use base64::Engine;
        let body: String = tk::RSA_PUBLIC_PEM
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("der")
    };
    for secret in [tk::RSA_PUBLIC_PEM.as_bytes(), der.as_slice()] {
        let t = format!("{input}.{}", tk::hmac256_raw(secret, &input));
        assert_eq!(get(&gw, "/admin/x", Some(&t)).await.status(), 401);
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn j3_j5_algorithm_and_embedded_keys() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    // J3: algorithms outside the allow-list, even correctly signed.
    for alg in ["RS512", "PS256"] {
        let t = tk::rsa(alg, json!({"kid": "k1"}), &claims(json!({})));
        assert_eq!(get(&gw, "/admin/x", Some(&t)).await.status(), 401, "{alg}");
    }
    let ec = TestKey::es256("k1");
    assert_eq!(
        get(&gw, "/admin/x", Some(&ec.sign(&claims(json!({})))))
            .await
            .status(),
        401
    );
    // J5: a token carrying its own key (`jwk`) or a `jku` is judged by configured keys only.
    let t = ec.sign_with_header(
        json!({"alg": "ES256", "kid": "k1", "jwk": ec.jwk(), "jku": "http://127.0.0.1:1/jwks"}),
        &claims(json!({})),
    );
    assert_eq!(get(&gw, "/admin/x", Some(&t)).await.status(), 401);
    // The HS route admits a token signed with its secret.
    let t = tk::hs256(
        SECRET.as_bytes(),
        &json!({"alg": "HS256"}),
        &claims(json!({})),
    );
    assert_eq!(get(&gw, "/hs/x", Some(&t)).await.status(), 200);
    assert_eq!(up.hits(), 1);
}

#[tokio::test]
async fn j6_j7_time_issuer_audience_over_http() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let now = tk::now();
    let cases = [
        (json!({"exp": now - 120}), 401),
        (json!({"exp": now - 5}), 200),
        (json!({"exp": null}), 401),
        (json!({"nbf": now + 600}), 401),
        (json!({"aud": "other"}), 401),
        (json!({"aud": ["x", "orders"]}), 200),
        (json!({"iss": "https://evil.test/"}), 401),
        (json!({"exp": "never"}), 401),
    ];
    for (extra, want) in cases {
        let mut c = claims(json!({}));
        let obj = c.as_object_mut().expect("object");
        for (k, v) in extra.as_object().expect("object") {
            if v.is_null() {
                obj.remove(k);
            } else {
                obj.insert(k.clone(), v.clone());
            }
        }
        let t = tk::rsa("RS256", json!({"kid": "k1"}), &c);
        assert_eq!(
            get(&gw, "/admin/x", Some(&t)).await.status(),
            want,
            "{extra}"
        );
    }
}

#[tokio::test]
async fn j8_integrity_over_http() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let t = tk::rsa("RS256", json!({"kid": "k1"}), &claims(json!({})));
    let parts: Vec<&str> = t.split('.').collect();
    let flipped_payload = tk::signing_input(
        &json!({"alg": "RS256", "kid": "k1"}),
        &claims(json!({"sub": "root"})),
    );
    let cases = vec![
        format!("{flipped_payload}.{}", parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            &parts[2][..parts[2].len() - 8]
        ),
        format!("{t}.x"),
        format!("{t}.x.y"),
        format!("{t}=="),
    ];
    for c in cases {
        assert_eq!(get(&gw, "/admin/x", Some(&c)).await.status(), 401, "{c}");
    }
    // A 64 KiB token: 401 (or 431 for the header size), never a crash.
    let big = "a".repeat(64 * 1024);
    let status = get(&gw, "/admin/x", Some(&big)).await.status().as_u16();
    assert!(status == 401 || status == 431, "{status}");
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn j9_ecdsa_zero_signature_rejected() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let key = TestKey::es256("e1");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {}\n\
         auth:\n  ec:\n    type: jwt\n    keys: [{{ jwk: {} }}]\n    algorithms: [ES256]\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [ec] }}\n",
        up.url(),
        key.jwk()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let good = key.sign(&claims(json!({})));
    assert_eq!(get(&gw, "/x", Some(&good)).await.status(), 200);
    let input = good.rsplit_once('.').expect("token").0;
    let zero = format!("{input}.{}", tk::b64(&[0u8; 64]));
    assert_eq!(get(&gw, "/x", Some(&zero)).await.status(), 401);
    assert_eq!(up.hits(), 1);
}

/// A rotating JWKS server: `keys` is what it serves now.
fn serve(keys: Vec<serde_json::Value>, max_age: u64) -> impl Fn(&tk::Seen) -> Reply + Send + Sync {
    move |_| {
        let mut r = Reply::json(200, &tk::jwks(&keys));
        r.headers
            .push(("cache-control".into(), format!("max-age={max_age}")));
        r
    }
}

fn jwks_config(upstream: &str, jwks_url: &str, min_refresh: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {upstream}\n\
         auth:\n  idp:\n    type: jwt\n    jwks_url: {jwks_url}\n    jwks: {{ min_refresh: {min_refresh}, ttl: 1h }}\n    algorithms: [ES256, EdDSA, RS256]\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [idp] }}\n"
    )
}

#[tokio::test]
async fn j4_j11_jwks_rotation_flood_and_outage() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let k1 = TestKey::es256("k1");
    let k2 = TestKey::ed25519("k2");
    let jwks = ScriptedService::start(serve(vec![k1.jwk()], 3600))
        .await
        .expect("jwks");
    let gw = TestGateway::start(&jwks_config(&up.url(), &jwks.url("/jwks.json"), "2s"))
        .await
        .expect("gateway");
    // The first fetch happens in the background (or on the first request).
    assert_eq!(
        get(&gw, "/x", Some(&k1.sign(&claims(json!({})))))
            .await
            .status(),
        200
    );
    let after_start = jwks.hits();
    assert!(after_start >= 1);

    // Rotation: the IdP adds k2; a token with the new kid is accepted after one refetch
    // (once min_refresh since the last fetch has passed).
    jwks.set(serve(vec![k1.jwk(), k2.jwk(), tk::rsa_jwk("r1")], 3600));
    let t2 = k2.sign(&claims(json!({})));
    let ok = wait_for_async(T, || {
        let gw = &gw;
        let t2 = t2.clone();
        async move { get(gw, "/x", Some(&t2)).await.status() == 200 }
    })
    .await;
    assert!(ok, "rotated-in kid never accepted");
    let rsa = tk::rsa("RS256", json!({"kid": "r1"}), &claims(json!({})));
    assert_eq!(get(&gw, "/x", Some(&rsa)).await.status(), 200);

    // J4: a flood of unknown kids causes at most one fetch per min_refresh interval.
    let before = jwks.hits();
    let started = std::time::Instant::now();
    let mut futs = Vec::new();
    for i in 0..200 {
        let t = TestKey::es256(&format!("evil-{i}")).sign(&claims(json!({})));
        futs.push(async move { t });
    }
    let tokens: Vec<String> = futures_util::future::join_all(futs).await;
    let results =
        futures_util::future::join_all(tokens.iter().map(|t| get(&gw, "/x", Some(t)))).await;
    assert!(results.iter().all(|r| r.status() == 401));
    let elapsed = started.elapsed().as_secs();
    let fetched = jwks.hits() - before;
    assert!(
        fetched <= 1 + elapsed / 2,
        "{fetched} fetches in {elapsed}s"
    );
    // A kid of 10 KB or path/SQL-looking kids: 401, no file or network access.
    for kid in [
        "../../dev/null".to_string(),
        "' OR 1=1--".into(),
        "http://evil/".into(),
        "k".repeat(10_000),
    ] {
        let t = k1.sign_with_header(
            json!({"alg": "ES256", "kid": kid.clone()}),
            &claims(json!({})),
        );
        let status = get(&gw, "/x", Some(&t)).await.status().as_u16();
        assert!(status == 401 || status == 431, "kid {:.20}: {status}", kid);
    }

    // J11: the endpoint fails (500, invalid JSON, oversize): the last good keys keep working.
    jwks.set(|_| Reply {
        status: 500,
        headers: vec![],
        body: b"oops".to_vec(),
    });
    assert_eq!(
        get(&gw, "/x", Some(&k1.sign(&claims(json!({})))))
            .await
            .status(),
        200
    );
    jwks.set(|_| Reply {
        status: 200,
        headers: vec![],
        body: b"{not json".to_vec(),
    });
    let unknown = TestKey::es256("k9").sign(&claims(json!({})));
    assert_eq!(get(&gw, "/x", Some(&unknown)).await.status(), 401);
    jwks.set(|_| Reply {
        status: 200,
        headers: vec![],
        body: vec![b' '; 2 * 1024 * 1024],
    });
    assert_eq!(
        get(&gw, "/x", Some(&k1.sign(&claims(json!({})))))
            .await
            .status(),
        200
    );
    assert_eq!(get(&gw, "/x", Some(&t2)).await.status(), 200);
}

/// A JWKS provider with short cache times (seconds), for the J11 expiry tests.
fn short_jwks_config(upstream: &str, jwks_url: &str, max_stale: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {upstream}\n\
         auth:\n  idp:\n    type: jwt\n    jwks_url: {jwks_url}\n    jwks: {{ min_refresh: 1s, ttl: 1s, max_stale: {max_stale}, timeout: 1s }}\n    algorithms: [ES256, EdDSA]\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [idp] }}\n"
    )
}

#[tokio::test]
async fn j11_removed_kid_rejected_after_ttl() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let k1 = TestKey::es256("k1");
    let k2 = TestKey::ed25519("k2");
    let jwks = ScriptedService::start(serve(vec![k1.jwk(), k2.jwk()], 1))
        .await
        .expect("jwks");
    let gw = TestGateway::start(&short_jwks_config(&up.url(), &jwks.url("/jwks.json"), "1h"))
        .await
        .expect("gateway");
    let t1 = k1.sign(&claims(json!({})));
    let t2 = k2.sign(&claims(json!({})));
    assert_eq!(get(&gw, "/x", Some(&t1)).await.status(), 200);
    assert_eq!(get(&gw, "/x", Some(&t2)).await.status(), 200);

    // The IdP retires k2. Once the cached set has expired (max-age 1s) and been refetched,
    // k2's tokens are refused; k1's still work.
    let before = jwks.hits();
    jwks.set(serve(vec![k1.jwk()], 1));
    let started = std::time::Instant::now();
    let dropped = wait_for_async(T, || {
        let gw = &gw;
        let t2 = t2.clone();
        async move { get(gw, "/x", Some(&t2)).await.status() == 401 }
    })
    .await;
    assert!(
        dropped,
        "removed kid still accepted after {:?}",
        started.elapsed()
    );
    assert!(jwks.hits() > before, "rejected without a refetch");
    assert_eq!(get(&gw, "/x", Some(&t1)).await.status(), 200);
    // And it stays rejected (the unknown kid's refetch brings nothing back).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&gw, "/x", Some(&t2)).await.status(), 401);
}

#[tokio::test]
async fn j11_keys_dropped_after_max_stale() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let k1 = TestKey::es256("k1");
    let jwks = ScriptedService::start(serve(vec![k1.jwk()], 1))
        .await
        .expect("jwks");
    let gw = TestGateway::start(&short_jwks_config(&up.url(), &jwks.url("/jwks.json"), "3s"))
        .await
        .expect("gateway");
    let t1 = k1.sign(&claims(json!({})));
    assert_eq!(get(&gw, "/x", Some(&t1)).await.status(), 200);

    // The endpoint goes down. The last good keys keep working for now (the last success
    // was at most ttl = 1s ago, max_stale is 3s)...
    jwks.set(|_| Reply {
        status: 503,
        headers: vec![],
        body: b"down".to_vec(),
    });
    let down = std::time::Instant::now();
    assert_eq!(get(&gw, "/x", Some(&t1)).await.status(), 200);
    // ...but not past max_stale after the last successful fetch: then 401.
    let refused = wait_for_async(T, || {
        let gw = &gw;
        let t1 = t1.clone();
        async move { get(gw, "/x", Some(&t1)).await.status() == 401 }
    })
    .await;
    assert!(
        refused,
        "stale keys still used {:?} after the outage began",
        down.elapsed()
    );
    assert!(
        down.elapsed() >= Duration::from_millis(1500),
        "keys dropped after only {:?}",
        down.elapsed()
    );
    let hits = up.hits();
    assert_eq!(get(&gw, "/x", Some(&t1)).await.status(), 401);
    assert_eq!(up.hits(), hits);

    // The endpoint recovers: keys are fetched again and the token works.
    jwks.set(serve(vec![k1.jwk()], 1));
    let back = wait_for_async(T, || {
        let gw = &gw;
        let t1 = t1.clone();
        async move { get(gw, "/x", Some(&t1)).await.status() == 200 }
    })
    .await;
    assert!(back, "keys not restored after the endpoint recovered");
}

#[tokio::test]
async fn j10_weak_jwks_keys_never_used() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let k1 = TestKey::es256("k1");
    // A 512-bit RSA key and an EC key labelled RS256 are skipped at load.
    let weak = json!({"kty": "RSA", "kid": "weak", "n": tk::b64(&[0xC3; 64]), "e": "AQAB"});
    let mut mislabelled = k1.jwk();
    mislabelled["alg"] = json!("RS256");
    mislabelled["kid"] = json!("mis");
    let jwks = ScriptedService::start(serve(vec![weak, mislabelled, k1.jwk()], 60))
        .await
        .expect("jwks");
    let gw = TestGateway::start(&jwks_config(&up.url(), &jwks.url("/"), "30s"))
        .await
        .expect("gateway");
    assert_eq!(
        get(&gw, "/x", Some(&k1.sign(&claims(json!({})))))
            .await
            .status(),
        200
    );
    let mis = k1.sign_with_header(json!({"alg": "ES256", "kid": "mis"}), &claims(json!({})));
    assert_eq!(get(&gw, "/x", Some(&mis)).await.status(), 401);
}

#[tokio::test]
async fn jwks_cache_survives_unchanged_reload() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let k1 = TestKey::es256("k1");
    let jwks = ScriptedService::start(serve(vec![k1.jwk()], 3600))
        .await
        .expect("jwks");
    let yaml = jwks_config(&up.url(), &jwks.url("/"), "30s");
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    assert_eq!(
        get(&gw, "/x", Some(&k1.sign(&claims(json!({})))))
            .await
            .status(),
        200
    );
    let hits = jwks.hits();
    // The JWKS endpoint goes down; a reload that keeps the provider keeps its keys.
    jwks.set(|_| Reply {
        status: 503,
        headers: vec![],
        body: vec![],
    });
    gw.reload_with(&format!("{yaml}# touched\n"))
        .await
        .expect("reload");
    assert_eq!(
        get(&gw, "/x", Some(&k1.sign(&claims(json!({})))))
            .await
            .status(),
        200
    );
    assert_eq!(jwks.hits(), hits);
}

/// P1–P10 against a JWT-protected `/admin/*`: every attack path gets 401 or 400 (or a 404 /
/// a public-route answer whose upstream view is not under /admin); the admin upstream is
/// never reached without a token.
#[tokio::test]
async fn p1_p10_admin_attack_paths_with_auth() {
    let admin = EchoUpstream::start("admin").await.expect("upstream");
    let api = EchoUpstream::start("api").await.expect("upstream");
    let key = TestKey::es256("k1");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n\
         upstreams:\n  admin:\n    targets:\n      - url: {}\n  api:\n    targets:\n      - url: {}\n\
         auth:\n  corp:\n    type: jwt\n    keys: [{{ jwk: {} }}]\n    algorithms: [ES256]\n\
         routes:\n\
         \x20 - name: admin\n    match: {{ path: /admin/* }}\n    upstream: admin\n    auth: {{ any_of: [corp] }}\n\
         \x20 - name: api\n    match: {{ path: /api/* }}\n    upstream: api\n",
        admin.url(),
        api.url(),
        key.jwk()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let must_401 = [
        "/admin/x",
        "/api/../admin/x",
        "/api/%2e%2e/admin/x",
        "/api/%2E%2E/admin/x",
        "/api/.%2e/admin/x",
        "/api/%2e./admin/x",
        "//admin/x",
        "/api//../admin/x",
        "/./admin/x",
        "/admin;x=1/y",
        "/admin;/y",
        "/admin",
        "/admin?x=1",
    ];
    for p in must_401 {
        let r = raw_roundtrip(
            gw.addr(),
            format!("GET {p} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("roundtrip");
        assert!(r.status == 401 || r.status == 400, "{p}: {}", r.status);
    }
    let others = [
        "/api/%252e%252e/admin",
        "/admin%2Fx",
        "/api%2F..%2Fadmin",
        "/api/..%5Cadmin",
        "/ADMIN/x",
        "/Admin",
        "/administrator",
        "/admin%00",
        "/admin%20",
        "/admin.",
        "/%EF%BD%81dmin",
        "/api/..;/admin",
        "/api?x=/admin",
    ];
    for p in others {
        let r = raw_roundtrip(
            gw.addr(),
            format!("GET {p} HTTP/1.1\r\nHost: t\r\nX-Original-URL: /admin/x\r\nX-Rewrite-URL: /admin/x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("roundtrip");
        assert!(
            matches!(r.status, 400 | 401 | 404 | 200),
            "{p}: {}",
            r.status
        );
        if r.status == 200 {
            let v = raw_json(&r);
            let seen = v["path"].as_str().unwrap_or("").to_ascii_lowercase();
            assert!(!seen.starts_with("/admin"), "{p} reached {seen}");
            assert!(echo_header(&v, "x-original-url").is_none());
        }
    }
    assert_eq!(
        admin.hits(),
        0,
        "the admin upstream was reached without a token"
    );
    // With a token the same route works.
    let t = key.sign(&claims(json!({})));
    assert_eq!(get(&gw, "/admin/x", Some(&t)).await.status(), 200);
}

#[tokio::test]
async fn s12_local_401_with_unread_body_closes_connection() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let smuggled = "GET /api/x HTTP/1.1\r\nHost: a\r\n\r\n";
    let req = format!(
        "POST /admin/x HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut c = RawConn::connect(gw.addr()).await.expect("connect");
    c.write(req.as_bytes()).await.expect("write");
    let r = c.read_response(T).await.expect("response");
    assert_eq!(r.status, 401);
    assert!(
        c.is_closed(T).await,
        "connection stayed open after a 401 with an unread body"
    );
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn g2_grpc_unauthenticated_is_trailers_only_16() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up).await;
    let resp = h2c_client()
        .post(gw.url("/admin/svc/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "16");
}

/// The verified-token cache (`cache_size`) re-checks `exp` on every use: a token admitted
/// from the cache is refused as soon as it expires, and a tampered copy of a cached token is
/// a different token (verified, and refused).
#[tokio::test]
async fn jwt_cache_rechecks_expiry_and_never_admits_a_tampered_copy() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("rsa.pem"), tk::RSA_PUBLIC_PEM).expect("key");
    let yaml = format!(
        r#"listeners:
  - name: public
    addr: 127.0.0.1:0
upstreams:
  app:
    targets:
      - url: {url}
auth:
  corp:
    type: jwt
    keys: [{{ file: rsa.pem, kid: k1 }}]
    algorithms: [RS256]
    leeway: 0s
    cache_size: 100
routes:
  - name: admin
    match: {{ path: /admin/* }}
    upstream: app
    auth: {{ any_of: [corp] }}
"#,
        url = up.url()
    );
    let gw = TestGateway::start_in(dir, &yaml).await.expect("gateway");
    let exp = tk::now() + 2;
    let token = tk::rsa(
        "RS256",
        json!({"kid": "k1"}),
        &json!({"sub": "a", "exp": exp}),
    );
    for _ in 0..3 {
        assert_eq!(get(&gw, "/admin/x", Some(&token)).await.status(), 200);
    }
    let (head, sig) = token.rsplit_once('.').expect("jws");
    let mut flipped: Vec<char> = sig.chars().collect();
    flipped[10] = if flipped[10] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{head}.{}", flipped.into_iter().collect::<String>());
    assert_eq!(get(&gw, "/admin/x", Some(&tampered)).await.status(), 401);

    let refused = wait_for_async(Duration::from_secs(6), || {
        let gw = &gw;
        let token = token.clone();
        async move { get(gw, "/admin/x", Some(&token)).await.status() == 401 }
    })
    .await;
    assert!(refused, "cached token still admitted after exp");
    assert!(tk::now() > exp, "refused before it expired");
}
