//! sidecar-sizer: a mutating admission webhook that sizes Istio's `istio-proxy` sidecar
//! from the team's spec and the workload's usage history.
//!
//! The sizing decision ([`sizing::decide`]) is pure; IO (HTTP, disk) lives at the edges
//! ([`server`]), which swap fresh spec and usage snapshots in the background.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod configmaps;
pub mod history;
pub mod history_cmd;
pub mod limits;
pub mod metrics;
pub mod patch;
pub mod quantity;
pub mod review;
pub mod server;
pub mod sizing;
pub mod spec;
pub mod workload;
