//! One file per policy. Each is a small function the pipeline calls in SPEC.md order.

pub mod api_key;
pub mod auth;
pub mod authz;
pub mod body_limit;
pub mod concurrency;
pub mod cors;
pub mod forward_auth;
pub mod forwarded;
pub mod headers;
pub mod introspection;
pub mod ip;
pub mod jwks;
pub mod jwt;
pub mod jwt_cache;
pub mod ratelimit;
pub mod rewrite;
