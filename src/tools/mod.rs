//! The tools beside the proxy: they reuse `http/` and `runtime/` and never
//! depend on `proxy/`.
//!
//! - `backend`: the simulated backend server (`tidegate backend`): profiles,
//!   capacity queue, fault modes, its own single-threaded event loop.
//! - `loadgen`: the event-driven echo load client behind `examples/echo_client.rs`.
//! - `report`: `tidegate report`: CSV request logs to the seed's Tables 1-3
//!   (markdown) and an SVG chart.

pub mod backend;
pub mod loadgen;
pub mod report;
