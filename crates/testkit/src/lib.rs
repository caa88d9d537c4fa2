//! Dev-only helpers for Gatehouse integration tests.
//!
//! Every server here binds `127.0.0.1:0`, runs as tokio tasks and stops when its handle is
//! dropped (the accept task owns a `JoinSet` of connection tasks, so aborting it aborts them
//! all). Nothing uses fixed ports or the network beyond loopback.
//!
//! Kinds:
//! - [`echo::EchoUpstream`]: hyper HTTP/1.1 + h2c echo server with scriptable behaviour.
//! - [`raw::RawUpstream`] / [`raw::RawConn`] / [`raw::raw_request`]: byte-exact recording
//!   upstream and raw client for smuggling/framing tests (SECURITY-TESTS 2.1, 4 F1–F5).
//! - [`ws::WsEchoUpstream`]: WebSocket echo, or a failed upgrade (W1–W4).
//! - [`grpc::GrpcUpstream`] and [`grpc::grpc_say_hello`]: a real tonic peer (G1–G2).
//! - [`certs::TestCa`] and [`certs::tls_get`]: rcgen CA, rustls configs, SNI/ALPN probe.
//! - [`redis::RedisServer`]: a real `redis-server` on a free loopback port.
//! - [`wait::wait_for`]: poll a condition with a deadline instead of sleeping.

pub mod certs;
pub mod echo;
pub mod gateway;
pub mod grpc;
pub mod http1;
pub mod jwt;
pub mod raw;
pub mod redis;
mod task;
pub mod wait;
pub mod ws;

pub use certs::{insecure_client_config, tls_get, TestCa, TlsResponse, TlsUpstream};
pub use echo::{EchoUpstream, RecordedRequest};
pub use gateway::TestGateway;
pub use grpc::{grpc_say_hello, grpc_say_hello_with, GrpcUpstream, HelloReply, HelloRequest};
pub use http1::{parse_responses, RawResponse};
pub use raw::{
    closed_port, http_response, raw_request, BlackholeUpstream, RawConn, RawScript, RawUpstream,
    SlowUpstream,
};
pub use redis::{redis_available, redis_cli_available, RedisCluster, RedisServer};
pub use wait::{wait_for, wait_for_async};
pub use ws::{WsEchoUpstream, WsOptions};

/// Re-exported so tests drive WebSocket clients with the same version the fake uses.
pub use tokio_tungstenite;
/// Re-exported so tests can inspect `tonic::Status` / `tonic::Code` without their own dep.
pub use tonic;

/// `http://ADDR` for a loopback address.
pub fn http_url(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}
