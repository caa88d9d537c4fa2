//! Rate-limit timing harness (no framework): added latency and CPU per request for local,
//! shared and shared+sync limits, plus the accuracy of shared and sync mode with three
//! gateways on one hot key. Needs `redis-server` on PATH.
//!
//!     cargo run --release -p gatehouse --example ratelimit_bench
//!
//! Everything runs in this process on loopback (client, gateways, upstream), so the CPU
//! numbers are whole-process CPU per request: compare the rows, not the absolute values.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_core::snapshot::{LimitKey, LimitScope, RateLimitSpec, RedisEndpoint};
use gatehouse_proxy::ratelimit::local::LocalLimiter;
use gatehouse_proxy::ratelimit::redis::RedisStore;
use gatehouse_testkit::{EchoUpstream, RedisServer, TestGateway};

const REQUESTS: usize = 5_000;

/// utime + stime of this process, from /proc/self/stat (clock ticks of 10 ms).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields after the name: state(skipped, not a number) ppid ... utime is field 14 overall.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn config(upstream: &str, redis: &str, keys: &str) -> String {
    format!(
        "listeners:\n  - name: public\n    addr: 127.0.0.1:0\n\
         redis:\n  url: {redis}\n  timeout: 1s\n  on_error: deny\n\
         upstreams:\n  app:\n    targets:\n      - url: {upstream}\n\
         routes:\n  - name: all\n    match: {{ path: /* }}\n    upstream: app\n{keys}"
    )
}

async fn run_sequential(url: &str) -> (Duration, Duration) {
    let c = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for _ in 0..200 {
        let _ = c.get(url).send().await.expect("warm").bytes().await;
    }
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    for _ in 0..REQUESTS {
        let r = c.get(url).send().await.expect("request");
        assert!(r.status() == 200, "status {}", r.status());
        let _ = r.bytes().await;
    }
    let wall = t0.elapsed() / REQUESTS as u32;
    let cpu = (cpu_time() - cpu0) / REQUESTS as u32;
    (wall, cpu)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = RedisServer::start().await?;
    let up = EchoUpstream::start("app").await?;

    println!("## micro");
    let spec = RateLimitSpec {
        name: "default".into(),
        requests: 1_000_000,
        per: Duration::from_secs(1),
        burst: 1_000_000,
        key: LimitKey::Ip,
        scope: LimitScope::Local,
        sync: None,
    };
    let local = LocalLimiter::new(&spec);
    let n = 2_000_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        std::hint::black_box(local.check(i % 10_000));
    }
    println!(
        "local GCRA decision (10k keys): {:.0} ns",
        t0.elapsed().as_nanos() as f64 / n as f64
    );
    let store = RedisStore::new(
        &RedisEndpoint::Standalone(redis.url()),
        Duration::from_secs(1),
        Arc::new(gatehouse_telemetry::Metrics::new()),
    )
    .map_err(anyhow::Error::msg)?;
    for _ in 0..100 {
        let _ = store
            .take("bench{k}", 1, 1_000_000_000, 1, 0, Duration::from_secs(1))
            .await;
    }
    let m = 5_000;
    let t0 = Instant::now();
    for _ in 0..m {
        store
            .take("bench{k}", 1, 1_000_000_000, 1, 0, Duration::from_secs(1))
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    println!(
        "shared decision (one EVALSHA round trip on loopback): {:.1} µs",
        t0.elapsed().as_secs_f64() * 1e6 / f64::from(m)
    );

    println!("\n## per request through the gateway ({REQUESTS} sequential keep-alive requests)");
    println!("| limits | latency per request | process CPU per request |");
    println!("|---|---|---|");
    let cases = [
        ("none", String::new()),
        (
            "local (ip)",
            "    rate_limit: [{ requests: 1000000, per: 1s, key: ip }]\n".to_string(),
        ),
        (
            "shared (ip)",
            "    rate_limit: [{ requests: 1000000, per: 1s, key: ip, scope: shared }]\n"
                .to_string(),
        ),
        (
            "shared, sync 100ms",
            "    rate_limit: [{ requests: 1000000, per: 1s, key: ip, scope: shared, sync: 100ms }]\n"
                .to_string(),
        ),
    ];
    let mut base = None;
    for (name, keys) in &cases {
        let gw = TestGateway::start(&config(&up.url(), &redis.url(), keys)).await?;
        let (wall, cpu) = run_sequential(&gw.url("/x")).await;
        let (bw, bc) = *base.get_or_insert((wall, cpu));
        println!(
            "| {name} | {:.1} µs (+{:.1}) | {:.1} µs (+{:.1}) |",
            wall.as_secs_f64() * 1e6,
            (wall.as_secs_f64() - bw.as_secs_f64()) * 1e6,
            cpu.as_secs_f64() * 1e6,
            (cpu.as_secs_f64() - bc.as_secs_f64()) * 1e6,
        );
        gw.shutdown().await;
    }

    println!("\n## accuracy: 3 gateways, one hot key, 1000 per 1s, 3 s of load from 12 clients");
    println!("| mode | admitted | exact GCRA bound | over | Redis calls |");
    println!("|---|---|---|---|---|");
    for (name, extra) in [("shared", ""), ("shared, sync 100ms", ", sync: 100ms")] {
        let _ = redis.command(&["FLUSHALL"]).await;
        let _ = redis.command(&["CONFIG", "RESETSTAT"]).await;
        let keys = format!(
            "    rate_limit: [{{ requests: 1000, per: 1s, key: route, scope: shared{extra} }}]\n"
        );
        let mut gws = Vec::new();
        for _ in 0..3 {
            gws.push(TestGateway::start(&config(&up.url(), &redis.url(), &keys)).await?);
        }
        let dur = Duration::from_secs(3);
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for gw in &gws {
            for _ in 0..4 {
                let url = gw.url("/x");
                tasks.spawn(async move {
                    let c = reqwest::Client::builder()
                        .no_proxy()
                        .build()
                        .expect("client");
                    let mut ok = 0u64;
                    while start.elapsed() < dur {
                        if let Ok(r) = c.get(&url).send().await {
                            if r.status() == 200 {
                                ok += 1;
                            }
                            let _ = r.bytes().await;
                        }
                    }
                    ok
                });
            }
        }
        let mut admitted = 0;
        while let Some(r) = tasks.join_next().await {
            admitted += r?;
        }
        let elapsed = start.elapsed();
        let bound = 1000 + (elapsed.as_secs_f64() * 1000.0) as u64;
        let info = redis.command(&["INFO", "commandstats"]).await?;
        let calls: u64 = info
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split(['=', ','])
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
            })
            .sum();
        println!(
            "| {name} | {admitted} | {bound} | {} | {calls} |",
            admitted.saturating_sub(bound)
        );
        for gw in gws {
            gw.shutdown().await;
        }
    }
    Ok(())
}
