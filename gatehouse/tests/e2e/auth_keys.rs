//! API keys (SECURITY-TESTS 2.7 K1–K4): digests only, lookup by digest, identical failures,
//! no ambiguity, no leakage.

use std::time::Duration;

use crate::common::*;

const T: Duration = Duration::from_secs(10);
const KEY: &str = "k-acme-0123456789";
const REVOKED: &str = "k-revoked-0123456789";

async fn setup(up: &EchoUpstream, hide: bool) -> TestGateway {
    // `REVOKED` was removed from the consumer: only its digest's absence distinguishes it.
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {}\n\
         consumers:\n  - name: acme\n    groups: [gold]\n    api_keys: [\"sha256:{}\"]\n  - name: other\n    api_keys: [\"sha256:{}\"]\n\
         auth:\n  keys:\n    type: api_key\n    in: [header:x-api-key, query:api_key]\n    hide_credentials: {hide}\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [keys] }}\n",
        up.url(),
        sha256_hex(KEY),
        sha256_hex("another-key-000000")
    );
    TestGateway::start(&yaml).await.expect("gateway")
}

#[tokio::test]
async fn k1_key_admits_consumer_by_digest() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up, false).await;
    let resp = client()
        .get(gw.url("/x"))
        .header("x-api-key", KEY)
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(echo_header(&v, "x-consumer-username"), Some("acme"));
    // Not hidden: the key is forwarded.
    assert_eq!(echo_header(&v, "x-api-key"), Some(KEY));
    assert!(
        wait_for(T, || gw
            .access_logs()
            .iter()
            .any(|l| l["consumer"] == "acme"))
        .await
    );
}

#[test]
fn k1_no_secret_compared_with_eq() {
    // Grep check: the API key policy hashes and looks up; it never compares key bytes.
    let src = include_str!("../../../crates/proxy/src/policy/api_key.rs");
    let code: String = src.split("#[cfg(test)]").next().unwrap_or("").to_string();
    assert!(code.contains("api_keys.get(&digest("));
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        assert!(
            !(line.contains("key ==") || line.contains("== key")),
            "{line}"
        );
    }
}

#[tokio::test]
async fn k2_unknown_and_revoked_keys_fail_identically() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up, false).await;
    let mut shapes = Vec::new();
    for key in ["totally-unknown", REVOKED] {
        let r = raw_roundtrip(
            gw.addr(),
            format!("GET /x HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .expect("roundtrip");
        assert_eq!(r.status, 401);
        let mut v = raw_json(&r);
        v["request_id"] = serde_json::Value::Null;
        let mut names: Vec<String> = r
            .head
            .headers
            .iter()
            .map(|(n, val)| {
                if n.eq_ignore_ascii_case("x-request-id") || n.eq_ignore_ascii_case("date") {
                    n.to_ascii_lowercase()
                } else {
                    format!("{}: {}", n.to_ascii_lowercase(), val)
                }
            })
            .collect();
        names.sort();
        shapes.push((v, names));
    }
    assert_eq!(shapes[0], shapes[1]);
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn k3_ambiguous_keys_rejected() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up, false).await;
    let cases = [
        format!("GET /x HTTP/1.1\r\nHost: t\r\nx-api-key: {KEY}\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"),
        format!("GET /x?api_key={KEY} HTTP/1.1\r\nHost: t\r\nx-api-key: {KEY}\r\nConnection: close\r\n\r\n"),
        format!("GET /x?api_key={KEY}&api_key=zz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        "GET /x HTTP/1.1\r\nHost: t\r\nx-api-key: \r\nConnection: close\r\n\r\n".to_string(),
        format!("GET /x?api_key=%20{KEY} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
    ];
    for c in cases {
        let r = raw_roundtrip(gw.addr(), c.as_bytes())
            .await
            .expect("roundtrip");
        assert_eq!(r.status, 401, "{c:?}");
    }
    assert_eq!(up.hits(), 0);
}

#[tokio::test]
async fn k4_key_hidden_from_upstream_and_logs() {
    let up = EchoUpstream::start("app").await.expect("upstream");
    let gw = setup(&up, true).await;
    let resp = client()
        .get(gw.url("/x"))
        .header("x-api-key", KEY)
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    assert!(echo_header(&echo_json(resp).await, "x-api-key").is_none());
    let resp = client()
        .get(gw.url(&format!("/q?a=1&api_key={KEY}&b=2")))
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(v["path"], "/q?a=1&b=2");
    assert!(wait_for(T, || gw.access_logs().len() >= 2).await);
    for line in gw.access_logs() {
        assert!(!line.to_string().contains(KEY), "key in access log: {line}");
    }
    // Failed attempts are redacted too.
    let _ = client()
        .get(gw.url("/q?api_key=guess-123"))
        .send()
        .await
        .expect("req");
    assert!(wait_for(T, || gw.access_logs().len() >= 3).await);
    assert!(!gw
        .access_logs()
        .iter()
        .any(|l| l.to_string().contains("guess-123")));
}

/// Micro-benchmark, not a pass/fail timing test: hashing + lookup of 1e5 wrong keys sharing
/// 0 or 31 leading bytes with the real key. The printed figures are quoted in docs/auth.md;
/// the assertion only checks the classes are within 25 % (loaded CI machines are noisy).
#[test]
fn k1_timing_classes_are_indistinguishable() {
    use gatehouse_proxy::policy::api_key::digest;
    use std::collections::HashMap;
    let real = [b'k'; 32];
    let mut map: HashMap<[u8; 32], usize> = HashMap::new();
    map.insert(digest(&real), 0);
    let mut far = real;
    far[0] = b'x';
    let mut near = real;
    near[31] = b'x';
    let sample = |key: &[u8; 32]| {
        let t = std::time::Instant::now();
        for _ in 0..1_000 {
            std::hint::black_box(map.get(&digest(std::hint::black_box(key))));
        }
        t.elapsed().as_nanos() as f64 / 1_000.0
    };
    // The classes alternate sample by sample and each keeps its fastest sample: other work
    // on the machine only ever adds time, so the minimum is what the code itself costs.
    for _ in 0..20 {
        sample(&far);
        sample(&near);
    }
    let (mut a, mut b) = (f64::MAX, f64::MAX);
    for _ in 0..300 {
        a = a.min(sample(&far));
        b = b.min(sample(&near));
    }
    eprintln!("api key lookup: 0 shared bytes {a:.0} ns, 31 shared bytes {b:.0} ns");
    assert!((a - b).abs() / a.max(b) < 0.25, "{a} vs {b}");
}

#[tokio::test]
async fn k2_failed_attempts_are_rate_limited_per_ip() {
    // 3 failed attempts per 10 minutes per client IP. The test client is loopback, a trusted
    // proxy, so `X-Forwarded-For` stands for two different clients.
    let up = EchoUpstream::start("app").await.expect("upstream");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\ntrusted_proxies: [127.0.0.1/32]\n\
         limits:\n  auth_failures: {{ requests: 3, per: 10m }}\n\
         upstreams:\n  app:\n    targets:\n      - url: {}\n\
         consumers:\n  - name: acme\n    api_keys: [\"sha256:{}\"]\n\
         auth:\n  keys:\n    type: api_key\n\
         routes:\n  - name: r\n    match: {{ path: /* }}\n    upstream: app\n    auth: {{ any_of: [keys] }}\n",
        up.url(),
        sha256_hex(KEY),
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let send = |ip: &'static str, key: Option<&'static str>| {
        let mut req = client().get(gw.url("/x")).header("x-forwarded-for", ip);
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send()
    };
    // Requests without a credential are not failed attempts.
    for _ in 0..5 {
        assert_eq!(send("203.0.113.7", None).await.expect("req").status(), 401);
    }
    // A good key does not spend the budget either.
    assert_eq!(
        send("203.0.113.7", Some(KEY)).await.expect("req").status(),
        200
    );
    // Three wrong keys: ordinary 401s.
    for _ in 0..3 {
        assert_eq!(
            send("203.0.113.7", Some(REVOKED))
                .await
                .expect("req")
                .status(),
            401
        );
    }
    // From now on that IP gets 429 without its credentials being checked: even the right
    // key is refused, and nothing reaches the upstream.
    let hits = up.hits();
    for key in [Some(REVOKED), Some(KEY), None] {
        let resp = send("203.0.113.7", key).await.expect("req");
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("retry-after");
        // One attempt every 200 s refills the budget.
        assert!((1..=200).contains(&retry), "retry-after {retry}");
        let v: serde_json::Value = resp.json().await.expect("json");
        assert_eq!(v["error"], "rate_limited");
    }
    assert_eq!(up.hits(), hits);
    // Another client IP is unaffected: its wrong key is a 401, its right key a 200.
    assert_eq!(
        send("198.51.100.9", Some(REVOKED))
            .await
            .expect("req")
            .status(),
        401
    );
    assert_eq!(
        send("198.51.100.9", Some(KEY)).await.expect("req").status(),
        200
    );
    // So is the proxy's own address (no X-Forwarded-For).
    let resp = client()
        .get(gw.url("/x"))
        .header("x-api-key", KEY)
        .send()
        .await
        .expect("req");
    assert_eq!(resp.status(), 200);
}
