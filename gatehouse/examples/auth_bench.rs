//! Micro-benchmark: JWT verification per algorithm (parse + key selection + signature +
//! claims) and API-key lookup (SHA-256 + map). `cargo run --release --example auth_bench`.

use std::time::{Duration, Instant};

use gatehouse_core::auth::{hmac_key, JwsAlg, JwtKey, JwtProvider};
use gatehouse_proxy::policy::{api_key, jwt};
use gatehouse_testkit::jwt::{self as tk, TestKey};
use serde_json::json;

fn provider(alg: JwsAlg) -> JwtProvider {
    JwtProvider {
        issuers: vec!["https://idp/".into()],
        audiences: vec!["orders".into()],
        algorithms: vec![alg],
        keys: vec![],
        jwks: None,
        leeway: Duration::from_secs(30),
        require_exp: true,
        max_token_bytes: 8192,
        cache_size: 0,
    }
}

fn bench(name: &str, mut f: impl FnMut()) {
    for _ in 0..200 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let n = 2_000;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64);
    }
    println!("{name:<28} {:>9.2} µs/op", best / 1000.0);
}

fn main() {
    let claims = json!({"sub": "alice", "iss": "https://idp/", "aud": "orders", "exp": tk::now() + 3600, "scope": "a b c"});
    let now = tk::now();
    let secret = [7u8; 32];
    let hs = tk::hs256(&secret, &json!({"alg": "HS256", "kid": "h"}), &claims);
    let hkeys = vec![hmac_key(&secret, Some("h".into())).expect("key")];
    bench("HS256", || {
        jwt::verify(&hs, &provider(JwsAlg::HS256), &hkeys, now).expect("ok");
    });
    let rkeys = vec![JwtKey::from_jwk(&tk::rsa_jwk("r")).expect("key")];
    for (name, alg) in [
        ("RS256 (2048)", JwsAlg::RS256),
        ("PS256 (2048)", JwsAlg::PS256),
    ] {
        let t = tk::rsa(alg.as_str(), json!({"kid": "r"}), &claims);
        let p = provider(alg);
        bench(name, || {
            jwt::verify(&t, &p, &rkeys, now).expect("ok");
        });
    }
    for key in [TestKey::es256("e"), TestKey::ed25519("e")] {
        let t = key.sign(&claims);
        let keys = vec![JwtKey::from_jwk(&key.jwk()).expect("key")];
        let p = provider(JwsAlg::parse(key.alg).expect("alg"));
        bench(key.alg, || {
            jwt::verify(&t, &p, &keys, now).expect("ok");
        });
    }
    // API keys: 10 000 consumers' digests in the map.
    let mut map = std::collections::HashMap::new();
    for i in 0..10_000u32 {
        map.insert(api_key::digest(format!("key-{i}").as_bytes()), i as usize);
    }
    bench("api_key lookup (hit)", || {
        std::hint::black_box(map.get(&api_key::digest(std::hint::black_box(b"key-4242"))));
    });
    bench("api_key lookup (miss)", || {
        std::hint::black_box(map.get(&api_key::digest(std::hint::black_box(b"key-nope"))));
    });
}
