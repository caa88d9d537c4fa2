//! The data plane: listeners, the request pipeline, policies and the upstream side.

pub mod body;
pub mod context;
pub mod gateway;
pub mod http1;
pub mod normalize;
pub mod pipeline;
pub mod policy;
pub mod ratelimit;
pub mod route;
pub mod runtime;
pub mod server;
pub mod upgrade;
pub mod upstream;
pub mod watch;

pub use gateway::{Gateway, GatewayOptions, Shared};
pub use runtime::{ReloadSource, Runtime};
