//! Request mirroring: copies never delay or fail the real response.

use std::time::{Duration, Instant};

use crate::common::*;

fn config(primary: &str, shadow: &str, percent: u32) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app: {{ targets: [{{ url: \"{primary}\" }}] }}\n  shadow: {{ targets: [{{ url: \"{shadow}\" }}] }}\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n    mirror: {{ upstream: shadow, percent: {percent} }}\n"
    )
}

#[tokio::test]
async fn mirror_copies_without_delaying_the_real_response() {
    let primary = EchoUpstream::start("primary").await.expect("echo");
    let shadow = BlackholeUpstream::start().await.expect("silent shadow");
    let gw = TestGateway::start(&config(&primary.url(), &shadow.url(), 100))
        .await
        .expect("gateway");
    let c = client();
    let t = Instant::now();
    for i in 0..10 {
        let r = c
            .post(gw.url(&format!("/m/{i}")))
            .body("payload")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        wait_for(Duration::from_secs(10), || shadow.total_requests_seen()
            == 10)
        .await
    );
    let copy = String::from_utf8_lossy(&shadow.requests()[0]).to_string();
    assert!(copy.starts_with("POST /m/"), "{copy}");
    assert!(
        copy.to_ascii_lowercase().contains("x-gatehouse-mirror: 1"),
        "{copy}"
    );
    assert!(copy.ends_with("payload"), "{copy}");
    assert!(primary
        .requests()
        .iter()
        .all(|r| r.header("x-gatehouse-mirror").is_none()));
}

#[tokio::test]
async fn mirror_down_or_percent_zero_never_fails_requests() {
    let primary = EchoUpstream::start("primary").await.expect("echo");
    let gw = TestGateway::start(&config(&primary.url(), &http_url(closed_port()), 100))
        .await
        .expect("gateway");
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
    }
    let shadow = EchoUpstream::start("shadow").await.expect("echo");
    let gw = TestGateway::start(&config(&primary.url(), &shadow.url(), 0))
        .await
        .expect("gateway");
    for _ in 0..20 {
        assert_eq!(
            c.get(gw.url("/x")).send().await.expect("send").status(),
            200
        );
    }
    assert_eq!(shadow.hits(), 0);
}
