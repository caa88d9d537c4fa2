//! Logs, metrics and tracing setup. Everything here is owned by an `Arc` handed to the
//! gateway: no process-wide registries, so one test process can run many gateways.

pub mod access_log;
pub mod iptext;
pub mod metrics;

pub use access_log::{AccessLog, AccessRecord};
pub use iptext::IpText;
pub use metrics::Metrics;

/// Operational logs: `tracing` to stderr, filtered by `RUST_LOG` (default `info`).
/// Access logs go to stdout separately (see [`AccessLog`]), so the two never interleave.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .json()
        .try_init();
}
