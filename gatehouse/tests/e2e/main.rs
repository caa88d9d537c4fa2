//! End-to-end tests: real gateways (in-process, the same runtime the binary uses) in front of
//! real fake upstreams, all on loopback ports the OS picks. One test binary; one module per
//! area. Tests named after SECURITY-TESTS.md IDs carry the ID as a prefix (`s1_…`, `p3_…`).

mod common;

mod admin;
mod auth_external;
mod auth_jwt;
mod auth_keys;
mod authz;
mod balance;
mod breaker;
mod cli;
mod cors;
mod dns;
mod examples;
mod faults;
mod grpc;
mod h2;
mod headers;
mod health;
mod limits;
mod mirror;
mod paths;
mod ratelimit;
mod reload;
mod retries;
mod routing;
mod smuggling;
mod streaming;
mod tls;
mod upstream_tls;
mod websocket;
