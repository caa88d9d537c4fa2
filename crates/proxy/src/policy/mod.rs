//! One file per policy. Each is a small function the pipeline calls in SPEC.md order.

pub mod body_limit;
pub mod concurrency;
pub mod forwarded;
pub mod headers;
pub mod ratelimit;
pub mod rewrite;
