//! Upstream side of the data plane: pooled HTTP clients and the call itself.

pub mod call;
pub mod client;

pub use call::{call, check_response_framing};
pub use client::{ClientCache, HttpClient};
