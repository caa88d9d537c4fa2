//! Runtime IR shared by every crate: the compiled snapshot, the router, the path normalizer,
//! and the one error type the gateway answers with.

pub mod auth;
pub mod error;
pub mod normalize;
pub mod router;
pub mod snapshot;
pub mod upstream;

pub use error::{Cause, GatewayError};
pub use snapshot::Snapshot;
