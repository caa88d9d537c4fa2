//! Upstream side of the data plane, one file per concern: pooled clients (`client`), the
//! HTTP/1.1 client and its per-target pools (`h1`), the call
//! and its error mapping (`call`), the retrying, health-aware call the pipeline uses
//! (`forward`), request keys for hashing (`balance`), long-lived state (`registry`), active
//! checks (`health`), passive ejection (`outlier`), retries and their budget (`retry`), the
//! circuit breaker (`breaker`), TLS (`tls`), DNS caching (`dns`) and mirroring (`mirror`).

pub mod balance;
pub mod breaker;
pub mod call;
pub mod client;
pub mod dns;
pub mod forward;
pub mod h1;
pub mod health;
pub mod mirror;
pub mod outlier;
pub mod registry;
pub mod retry;
pub mod tls;

pub use call::call;
pub use client::{ClientCache, Connector, HttpClient};
pub use forward::{forward, Outbound};
