//! Circuit breaking and pool exhaustion (F15).

use std::time::{Duration, Instant};

use crate::common::*;

#[tokio::test]
async fn f15_pool_exhaustion_fast_503() {
    let up = SlowUpstream::start(Duration::from_millis(1500), http_response(200, &[], b"ok"))
        .await
        .expect("slow");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ url: \"{}\" }}]\n    circuit_breaker: {{ max_connections: 2, max_pending: 1, pending_timeout: 200ms }}\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n",
        up.url()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let url = gw.url("/x");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client().get(&url).send().await.expect("send");
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            (status, t.elapsed(), body)
        }));
    }
    let mut ok = 0;
    let mut rejected = 0;
    for t in tasks {
        let (status, elapsed, body) = t.await.expect("join");
        match status {
            200 => ok += 1,
            503 => {
                rejected += 1;
                assert!(
                    elapsed < Duration::from_millis(1200),
                    "503 took {elapsed:?}"
                );
                assert!(body.contains("upstream_unavailable"), "{body}");
            }
            s => panic!("unexpected {s}"),
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(rejected, 6);
    assert!(up.connections() <= 2, "pool grew to {}", up.connections());
    assert!(gw
        .metrics_text()
        .contains("gatehouse_upstream_breaker_rejections_total{upstream=\"app\"} 6"));
    // Slots are released when the responses end: the upstream serves again.
    let r = client().get(&url).send().await.expect("send");
    assert_eq!(r.status(), 200);
}
