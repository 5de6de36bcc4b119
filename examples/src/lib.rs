//! Services to copy into a new project.
//!
//! - [`gateway`]: an axum service with an inbound server stack, an outbound HTTP client stack
//!   with a fallback, Prometheus metrics and health endpoints. Run it with
//!   `cargo run -p seawall-examples --bin gateway` (it starts the flaky [`inventory`] it calls).
//! - [`grpc`]: a tonic server behind the server stack with tonic-health, and a tonic client
//!   over a layered channel. Run it with `cargo run -p seawall-examples --bin grpc`.
//! - [`shop`]: the architecture's e-commerce system on PostgreSQL — a gateway, products,
//!   orders and users services, live configuration. Run it with
//!   `cargo run -p seawall-examples --bin shop -- postgres://postgres@127.0.0.1:5432/postgres`.
//! - [`logging`]: `RUST_LOG`, JSON lines and request ids for the examples' logs.
//! - `observability/`: a Grafana dashboard and Prometheus alert rules for seawall's metrics.

pub mod gateway;
pub mod grpc;
pub mod inventory;
pub mod logging;
pub mod shop;
