//! TLS termination: certificates by SNI, HTTP/2 and HTTP/1.1 by ALPN, x-forwarded-proto.

use crate::common::*;

async fn tls_gateway() -> (TestGateway, TestCa, EchoUpstream) {
    let ca = TestCa::new().expect("ca");
    let dir = tempfile::tempdir().expect("dir");
    ca.write_pair_for(dir.path(), "a", &["a.test"]).expect("a");
    ca.write_pair_for(dir.path(), "b", &["b.test", "*.wild.test"])
        .expect("b");
    let up = EchoUpstream::start("u").await.expect("u");
    let yaml = format!(
        "listeners:\n  - name: tls\n    addr: 127.0.0.1:0\n    tls:\n      certificates:\n        - {{ cert: a.crt, key: a.key }}\n        - {{ cert: b.crt, key: b.key }}\nupstreams:\n  app:\n    targets: [{{ url: {} }}]\nroutes:\n  - {{ name: all, match: {{ path: /* }}, upstream: app }}\n",
        up.url()
    );
    let gw = TestGateway::start_in(dir, &yaml).await.expect("gw");
    (gw, ca, up)
}

#[tokio::test]
async fn sni_selects_the_certificate() {
    let (gw, ca, _up) = tls_gateway().await;
    let req = b"GET /x HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n";
    let a = ca
        .tls_get(gw.addr(), "a.test", &[b"http/1.1"], req)
        .await
        .expect("a");
    assert!(a.peer_cert_has_dns_name("a.test"));
    assert!(
        a.response_str().starts_with("HTTP/1.1 200"),
        "{}",
        a.response_str()
    );
    let b = ca
        .tls_get(
            gw.addr(),
            "b.test",
            &[b"http/1.1"],
            b"GET /x HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("b");
    assert!(b.peer_cert_has_dns_name("b.test"));
    let w = ca
        .tls_get(
            gw.addr(),
            "x.wild.test",
            &[b"http/1.1"],
            b"GET /x HTTP/1.1\r\nHost: x.wild.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("wild");
    assert!(w.peer_cert_has_dns_name("*.wild.test"));
}

#[tokio::test]
async fn alpn_h2_and_forwarded_proto_https() {
    let (gw, ca, _up) = tls_gateway().await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .use_preconfigured_tls((*ca.client_config(&[b"h2", b"http/1.1"])).clone())
        .resolve("a.test", gw.addr())
        .build()
        .expect("client");
    let resp = client
        .get(format!("https://a.test:{}/secure", gw.addr().port()))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let v = echo_json(resp).await;
    assert_eq!(echo_header(&v, "x-forwarded-proto"), Some("https"));
    assert_eq!(v["path"], "/secure");
}
