//! tidegate: a TCP echo server and (later) HTTP/1.1 load balancer on mio.
//!
//! # Layout
//! - `loadgen`: the event-driven echo load client behind `examples/echo_client.rs`
//!   (config + `run`, `conn` state machine, `worker` event loop, `payload`, `report`).
#![forbid(unsafe_code)]
#![warn(rust_2018_idioms, missing_debug_implementations)]

pub mod loadgen;
