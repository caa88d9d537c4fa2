//! Shared helpers for the e2e tests.
#![allow(dead_code)]

use std::time::Duration;

pub use gatehouse_testkit::*;

/// A reqwest client that talks to loopback only, without proxies or retries.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(8)
        .build()
        .expect("client")
}

/// An h2c (prior knowledge) client.
pub fn h2c_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Minimal config: one listener on port 0, one upstream `app` at `upstream_url`, and the
/// given `routes:` YAML block (indented as a top-level key's value).
pub fn config_with_routes(upstream_url: &str, routes: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n      - url: {upstream_url}\nroutes:\n{routes}"
    )
}

/// One catch-all route `all` to the upstream.
pub fn simple_config(upstream_url: &str) -> String {
    config_with_routes(
        upstream_url,
        "  - name: all\n    match: { path: /* }\n    upstream: app\n",
    )
}

/// Parses the echo upstream's JSON body.
pub async fn echo_json(resp: reqwest::Response) -> serde_json::Value {
    let text = resp.text().await.expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Header value from the echo JSON (`headers: [[name, value], ...]`), first match.
pub fn echo_header<'a>(v: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    v["headers"].as_array()?.iter().find_map(|pair| {
        let p = pair.as_array()?;
        if p.first()?.as_str()?.eq_ignore_ascii_case(name) {
            p.get(1)?.as_str()
        } else {
            None
        }
    })
}

/// All values of a header from the echo JSON.
pub fn echo_headers_all(v: &serde_json::Value, name: &str) -> Vec<String> {
    v["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|pair| {
                    let p = pair.as_array()?;
                    if p.first()?.as_str()?.eq_ignore_ascii_case(name) {
                        Some(p.get(1)?.as_str()?.to_string())
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes `request` (exact bytes) on a new connection to `addr` and reads one response.
pub async fn raw_roundtrip(
    addr: std::net::SocketAddr,
    request: &[u8],
) -> anyhow::Result<RawResponse> {
    let mut c = RawConn::connect(addr).await?;
    c.write(request).await?;
    c.read_response(Duration::from_secs(10)).await
}

/// Parses a raw response body as JSON (echo upstream replies, gateway errors).
pub fn raw_json(r: &RawResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", r.body_str()))
}

/// Lowercase hex SHA-256, as consumers' `api_keys: ["sha256:<hex>"]` hold them.
pub fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
