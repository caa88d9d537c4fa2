//! Per-request cost of target selection and health bookkeeping (divan micro-benchmarks).
//! Run: `cargo bench -p gatehouse-proxy --bench upstream`.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use gatehouse_core::upstream::{hash_bytes, Balance, Passive, Target, Upstream, UpstreamTimeouts};
use gatehouse_proxy::upstream::outlier;
use gatehouse_proxy::upstream::registry::{Registry, TargetState};
use gatehouse_proxy::upstream::retry::RetryBudget;

fn main() {
    divan::main();
}

fn upstream(n: usize, balance: Balance) -> Upstream {
    let targets = (0..n)
        .map(|i| Target {
            url: format!("http://10.0.0.{i}:8080"),
            scheme: http::uri::Scheme::HTTP,
            authority: format!("10.0.0.{i}:8080").parse().expect("authority"),
            weight: 1,
            in_flight: AtomicUsize::new(0),
        })
        .collect();
    let t = Duration::from_secs(1);
    Upstream::new(
        "bench".into(),
        targets,
        balance,
        false,
        UpstreamTimeouts {
            connect: t,
            request: t,
            per_try: None,
            idle: t,
        },
    )
}

const BALANCERS: &[Balance] = &[
    Balance::RoundRobin,
    Balance::Random,
    Balance::LeastRequest,
    Balance::ConsistentHash,
];

/// One pick among 10 healthy targets, health checked through the registry state.
#[divan::bench(args = BALANCERS)]
fn pick_healthy(bencher: divan::Bencher, balance: Balance) {
    let u = upstream(10, balance);
    let reg = Registry::default();
    let states: Vec<Arc<TargetState>> = (0..10).map(|_| Arc::default()).collect();
    let mut k = 0u64;
    bencher.bench_local(|| {
        k += 1;
        let h = (balance == Balance::ConsistentHash).then(|| hash_bytes(&k.to_le_bytes()));
        u.pick_healthy(h, &mut |n| fastrand::u32(0..n), &|i| {
            states[i].healthy(&reg.clock)
        })
    });
}

/// The same with 3 of 10 targets ejected (the slow path finds another target).
#[divan::bench(args = BALANCERS)]
fn pick_with_three_ejected(bencher: divan::Bencher, balance: Balance) {
    let u = upstream(10, balance);
    let reg = Registry::default();
    let states: Vec<Arc<TargetState>> = (0..10).map(|_| Arc::default()).collect();
    for s in &states[..3] {
        s.ejected_until_ms
            .store(u64::MAX / 2, std::sync::atomic::Ordering::Relaxed);
    }
    let mut k = 0u64;
    bencher.bench_local(|| {
        k += 1;
        let h = (balance == Balance::ConsistentHash).then(|| hash_bytes(&k.to_le_bytes()));
        u.pick_healthy(h, &mut |n| fastrand::u32(0..n), &|i| {
            states[i].healthy(&reg.clock)
        })
    });
}

/// Bookkeeping after a successful call: outlier record plus the retry budget's live count.
#[divan::bench]
fn bookkeeping_success(bencher: divan::Bencher) {
    let reg = Registry::default();
    let states: Vec<Arc<TargetState>> = (0..10).map(|_| Arc::default()).collect();
    let budget = RetryBudget::default();
    let cfg = Passive {
        consecutive_failures: 5,
        eject_for: Duration::from_secs(30),
        max_ejected_pct: 50,
    };
    bencher.bench_local(|| {
        let _live = budget.request();
        outlier::record(&cfg, &reg.clock, &states, &states[3], false)
    });
}

/// Key hashing for `hash_on: header:...` (a 36-byte value).
#[divan::bench]
fn hash_key(bencher: divan::Bencher) {
    let key = b"3f1c2a9e-5b7d-4e21-9c3a-0d6f8b2e4a17";
    bencher.bench_local(|| hash_bytes(divan::black_box(key)));
}
