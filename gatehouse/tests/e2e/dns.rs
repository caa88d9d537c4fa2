//! Host-name targets and DNS failure (F16).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;

#[tokio::test]
async fn f16_dns_failure_serves_last_good() {
    // Every response closes its connection, so each request needs a new connect (and a
    // resolution through the cache).
    let up = RawUpstream::start(RawScript::RespondAndClose(http_response(200, &[], b"ok")))
        .await
        .expect("upstream");
    let failing = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicUsize::new(0));
    let (f, n) = (failing.clone(), lookups.clone());
    let lookup: gatehouse_proxy::upstream::dns::Lookup = Arc::new(move |host: String| {
        let fail = f.load(Ordering::SeqCst);
        n.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if fail || host != "svc.test" {
                Err(std::io::Error::other("SERVFAIL"))
            } else {
                Ok(vec![std::net::IpAddr::from([127, 0, 0, 1])])
            }
        })
    });
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets: [{{ url: \"http://svc.test:{}\" }}]\n    dns_refresh: 50ms\n  never:\n    targets: [{{ url: \"http://nowhere.test:80\" }}]\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n  - name: never\n    match: {{ path: /never }}\n    upstream: never\n",
        up.addr().port()
    );
    let gw = TestGateway::start_with(tempfile::tempdir().expect("dir"), &yaml, Some(lookup))
        .await
        .expect("gateway");
    let c = client();
    assert_eq!(
        c.get(gw.url("/a")).send().await.expect("send").status(),
        200
    );
    failing.store(true, Ordering::SeqCst);
    let seen = lookups.load(Ordering::SeqCst);
    // The refresher keeps trying (and failing) in the background...
    assert!(
        wait_for(Duration::from_secs(10), || lookups.load(Ordering::SeqCst)
            >= seen + 3)
        .await
    );
    // ...while new connections use the last good address.
    for _ in 0..10 {
        assert_eq!(
            c.get(gw.url("/a")).send().await.expect("send").status(),
            200
        );
    }
    // A name that never resolved: 503.
    let r = c.get(gw.url("/never")).send().await.expect("send");
    assert_eq!(r.status(), 503);
    assert!(up.connections() >= 11);
}
