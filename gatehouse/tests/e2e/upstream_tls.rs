//! Upstream TLS: verification on by default, custom CA, SNI, client certificates.

use crate::common::*;

fn config(target: &str, tls: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ url: \"{target}\" }}]\n{tls}routes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n"
    )
}

async fn get(gw: &TestGateway) -> (u16, serde_json::Value) {
    let r = client().get(gw.url("/tls")).send().await.expect("send");
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn upstream_tls_verifies_with_custom_ca() {
    let ca = TestCa::new().expect("ca");
    let up = TlsUpstream::start(
        ca.server_config(&["localhost"], &[b"http/1.1"])
            .expect("cfg"),
    )
    .await
    .expect("tls upstream");
    let target = format!("https://localhost:{}", up.addr().port());

    // Trusting the test CA: verified, SNI is the target host.
    let dir = tempfile::tempdir().expect("dir");
    ca.write_ca(dir.path()).expect("ca file");
    let gw = TestGateway::start_in(dir, &config(&target, "    tls: { ca: ca.crt }\n"))
        .await
        .expect("gateway");
    let (status, v) = get(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(v["sni"], "localhost");
    assert_eq!(v["client_cert"], false);

    // Default trust (Mozilla roots) does not know the test CA: refused, 503, nothing leaks.
    let gw = TestGateway::start(&config(&target, ""))
        .await
        .expect("gateway");
    let r = client().get(gw.url("/tls")).send().await.expect("send");
    assert_eq!(r.status(), 503);
    let body = r.text().await.expect("body");
    assert!(
        !body.contains("certificate") && !body.contains("localhost"),
        "{body}"
    );

    // verify: false (tests only) accepts it.
    let gw = TestGateway::start(&config(&target, "    tls: { verify: false }\n"))
        .await
        .expect("gateway");
    assert_eq!(get(&gw).await.0, 200);
}

#[tokio::test]
async fn upstream_tls_sni_override_for_ip_target() {
    let ca = TestCa::new().expect("ca");
    let up = TlsUpstream::start(
        ca.server_config(&["api.internal"], &[b"http/1.1"])
            .expect("cfg"),
    )
    .await
    .expect("tls upstream");
    let target = format!("https://127.0.0.1:{}", up.addr().port());
    let dir = tempfile::tempdir().expect("dir");
    ca.write_ca(dir.path()).expect("ca file");
    let gw = TestGateway::start_in(
        dir,
        &config(&target, "    tls: { ca: ca.crt, sni: api.internal }\n"),
    )
    .await
    .expect("gateway");
    let (status, v) = get(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(v["sni"], "api.internal");
}

#[tokio::test]
async fn upstream_mtls_client_certificate() {
    let ca = TestCa::new().expect("ca");
    let up = TlsUpstream::start(ca.server_config_mtls(&["localhost"]).expect("cfg"))
        .await
        .expect("tls upstream");
    let target = format!("https://localhost:{}", up.addr().port());
    let dir = tempfile::tempdir().expect("dir");
    ca.write_ca(dir.path()).expect("ca file");
    ca.write_pair(dir.path(), "gateway").expect("client pair");
    let gw = TestGateway::start_in(dir, &config(&target, "    tls: { ca: ca.crt }\n"))
        .await
        .expect("gateway");
    // TLS 1.3 finishes the client's side of the handshake before the server checks for a
    // certificate, so the refusal arrives as an alert after the request: 502 (or 503).
    let status = get(&gw).await.0;
    assert!(
        matches!(status, 502 | 503),
        "no client certificate: got {status}"
    );
    assert_eq!(up.hits(), 0);

    let dir = tempfile::tempdir().expect("dir");
    ca.write_ca(dir.path()).expect("ca file");
    ca.write_pair(dir.path(), "gateway").expect("client pair");
    let gw = TestGateway::start_in(
        dir,
        &config(
            &target,
            "    tls: { ca: ca.crt, client_cert: gateway.crt, client_key: gateway.key }\n",
        ),
    )
    .await
    .expect("gateway");
    let (status, v) = get(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(v["client_cert"], true);
}
