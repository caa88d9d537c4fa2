//! Compiled upstream sets and their target selection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    Random,
    LeastRequest,
}

#[derive(Clone, Debug)]
pub struct UpstreamTimeouts {
    pub connect: Duration,
    pub request: Duration,
    pub idle: Duration,
}

pub struct Target {
    pub url: String,
    pub scheme: Scheme,
    pub authority: Authority,
    pub weight: u32,
    /// Requests in flight to this target (least_request).
    pub in_flight: AtomicUsize,
}

pub struct Upstream {
    pub name: String,
    pub targets: Vec<Target>,
    pub balance: Balance,
    pub http2: bool,
    pub timeouts: UpstreamTimeouts,
    /// Smooth weighted round-robin order precomputed at compile time (nginx's algorithm),
    /// so a pick is one atomic increment and an index.
    schedule: Vec<u16>,
    cursor: AtomicUsize,
    total_weight: u32,
}

impl Upstream {
    pub fn new(
        name: String,
        targets: Vec<Target>,
        balance: Balance,
        http2: bool,
        timeouts: UpstreamTimeouts,
    ) -> Upstream {
        let schedule = smooth_schedule(&targets.iter().map(|t| t.weight).collect::<Vec<_>>());
        let total_weight = targets.iter().map(|t| t.weight).sum();
        Upstream {
            name,
            targets,
            balance,
            http2,
            timeouts,
            schedule,
            cursor: AtomicUsize::new(0),
            total_weight,
        }
    }

    /// Picks a target index. `roll(n)` must return a uniform value in `0..n`.
    pub fn pick(&self, roll: &mut dyn FnMut(u32) -> u32) -> usize {
        if self.targets.len() <= 1 {
            return 0;
        }
        match self.balance {
            Balance::RoundRobin => {
                let i = self.cursor.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
                self.schedule[i] as usize
            }
            Balance::Random => self.weighted_index(roll(self.total_weight)),
            Balance::LeastRequest => {
                // Power of two choices, weighted: compare in_flight / weight.
                let a = self.weighted_index(roll(self.total_weight));
                let b = self.weighted_index(roll(self.total_weight));
                let load = |i: usize| {
                    let t = &self.targets[i];
                    (t.in_flight.load(Ordering::Relaxed) as u64 + 1) * 1000 / t.weight as u64
                };
                if load(b) < load(a) {
                    b
                } else {
                    a
                }
            }
        }
    }

    fn weighted_index(&self, mut r: u32) -> usize {
        for (i, t) in self.targets.iter().enumerate() {
            if r < t.weight {
                return i;
            }
            r -= t.weight;
        }
        self.targets.len() - 1
    }
}

/// nginx's smooth weighted round robin, unrolled over one full cycle of `sum(weights)` picks.
fn smooth_schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|w| *w as i64).sum();
    if weights.is_empty() || total == 0 {
        return vec![0];
    }
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += *w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u16);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(weights: &[u32], balance: Balance) -> Upstream {
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, w)| Target {
                url: format!("http://127.0.0.1:{}", 1000 + i),
                scheme: Scheme::HTTP,
                authority: format!("127.0.0.1:{}", 1000 + i)
                    .parse()
                    .expect("authority"),
                weight: *w,
                in_flight: AtomicUsize::new(0),
            })
            .collect();
        let t = Duration::from_secs(1);
        Upstream::new(
            "u".into(),
            targets,
            balance,
            false,
            UpstreamTimeouts {
                connect: t,
                request: t,
                idle: t,
            },
        )
    }

    #[test]
    fn smooth_round_robin_interleaves() {
        assert_eq!(smooth_schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let u = ups(&[3, 1], Balance::RoundRobin);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[u.pick(&mut |n| fastrand::u32(0..n))] += 1;
        }
        assert_eq!(counts, [300, 100]);
    }

    #[test]
    fn least_request_avoids_busy_target() {
        let u = ups(&[1, 1], Balance::LeastRequest);
        u.targets[0].in_flight.store(50, Ordering::Relaxed);
        let mut counts = [0; 2];
        for _ in 0..1000 {
            counts[u.pick(&mut |n| fastrand::u32(0..n))] += 1;
        }
        assert!(counts[1] > 700, "{counts:?}");
    }
}
