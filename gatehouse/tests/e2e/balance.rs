//! Load balancing (F8), consistent hashing and canary stickiness.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;

fn targets_yaml(urls: &[String]) -> String {
    urls.iter()
        .map(|u| format!("      - url: {u}\n"))
        .collect::<String>()
}

fn config(urls: &[String], extra: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  app:\n    targets:\n{}{extra}routes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n",
        targets_yaml(urls)
    )
}

#[tokio::test]
async fn f8_round_robin_spread_within_ten_percent() {
    let ups = [
        EchoUpstream::start("a").await.expect("a"),
        EchoUpstream::start("b").await.expect("b"),
        EchoUpstream::start("c").await.expect("c"),
    ];
    let urls: Vec<String> = ups.iter().map(|u| u.url()).collect();
    let gw = TestGateway::start(&config(&urls, "    balance: round_robin\n"))
        .await
        .expect("gateway");
    let c = client();
    for _ in 0..300 {
        let r = c.get(gw.url("/x")).send().await.expect("send");
        assert_eq!(r.status(), 200);
    }
    for u in &ups {
        assert!(
            (90..=110).contains(&u.hits()),
            "{} got {}",
            u.name(),
            u.hits()
        );
    }
}

/// One target answers 500 ms late; with least_request it gets under 20 % of the traffic.
#[tokio::test]
async fn f8_least_request_avoids_slow_target() {
    let fast1 = EchoUpstream::start("a").await.expect("a");
    let fast2 = EchoUpstream::start("b").await.expect("b");
    let slow = SlowUpstream::start(Duration::from_millis(500), http_response(200, &[], b"slow"))
        .await
        .expect("slow");
    let urls = vec![fast1.url(), fast2.url(), slow.url()];
    let gw = TestGateway::start(&config(&urls, "    balance: least_request\n"))
        .await
        .expect("gateway");
    let url = gw.url("/x");
    let mut workers = Vec::new();
    for _ in 0..16 {
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..25 {
                let r = c.get(&url).send().await.expect("send");
                assert_eq!(r.status(), 200);
                let _ = r.bytes().await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let total = fast1.hits() + fast2.hits() + slow.total_requests_seen();
    let share = slow.total_requests_seen() as f64 / total as f64;
    eprintln!("least_request: slow target got {share:.3} of {total}");
    assert_eq!(total, 400);
    assert!(share < 0.20, "slow target got {share:.3}");
}

async fn upstream_of(c: &reqwest::Client, url: &str, header: (&str, &str)) -> String {
    let r = c
        .get(url)
        .header(header.0, header.1)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    r.headers()["x-upstream"]
        .to_str()
        .expect("ascii")
        .to_string()
}

/// Same key → same target; adding a fourth target moves about a quarter of the keys, all of
/// them to the new target.
#[tokio::test]
async fn consistent_hash_moves_about_one_nth() {
    let ups = [
        EchoUpstream::start("a").await.expect("a"),
        EchoUpstream::start("b").await.expect("b"),
        EchoUpstream::start("c").await.expect("c"),
        EchoUpstream::start("d").await.expect("d"),
    ];
    let urls: Vec<String> = ups.iter().map(|u| u.url()).collect();
    let extra = "    balance: consistent_hash\n    hash_on: header:x-user\n";
    let gw = TestGateway::start(&config(&urls[..3], extra))
        .await
        .expect("gateway");
    let c = client();
    let url = gw.url("/x");
    let mut before = HashMap::new();
    for k in 0..200 {
        let user = format!("user-{k}");
        let first = upstream_of(&c, &url, ("x-user", &user)).await;
        assert_eq!(upstream_of(&c, &url, ("x-user", &user)).await, first);
        before.insert(user, first);
    }
    let spread: std::collections::HashSet<_> = before.values().collect();
    assert_eq!(spread.len(), 3, "keys spread over all targets");
    gw.reload_with(&config(&urls, extra)).await.expect("reload");
    let mut moved = 0;
    for (user, was) in &before {
        let now = upstream_of(&c, &url, ("x-user", user)).await;
        if &now != was {
            assert_eq!(now, "d", "a key moved between old targets");
            moved += 1;
        }
    }
    eprintln!("consistent_hash e2e: {moved}/200 keys moved after adding a 4th target (ideal 50)");
    assert!((20..=85).contains(&moved), "{moved} of 200 moved");
}

#[tokio::test]
async fn canary_backends_sticky_by_cookie() {
    let stable = EchoUpstream::start("stable").await.expect("stable");
    let canary = EchoUpstream::start("canary").await.expect("canary");
    let yaml = format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\nupstreams:\n  stable: {{ targets: [{{ url: \"{}\" }}] }}\n  canary: {{ targets: [{{ url: \"{}\" }}] }}\nroutes:\n  - name: all\n    match: {{ path: /* }}\n    backends:\n      - {{ upstream: stable, weight: 50 }}\n      - {{ upstream: canary, weight: 50 }}\n    sticky: cookie:sid\n",
        stable.url(),
        canary.url()
    );
    let gw = TestGateway::start(&yaml).await.expect("gateway");
    let c = client();
    let url = gw.url("/x");
    let mut seen = std::collections::HashSet::new();
    for k in 0..40 {
        let cookie = format!("theme=dark; sid=session-{k}");
        let first = upstream_of(&c, &url, ("cookie", &cookie)).await;
        for _ in 0..5 {
            assert_eq!(upstream_of(&c, &url, ("cookie", &cookie)).await, first);
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "sessions land on both sides");
}
