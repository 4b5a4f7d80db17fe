//! sidecar-sizer: a mutating admission webhook that sizes Istio's `istio-proxy` sidecar
//! from the team's spec and the workload's usage history.
//!
//! Layout (DESIGN §1): [`engine`] is pure (skip rules, identity, Istio's rules, sizing,
//! constraints, patch) and [`engine::pipeline`] is the one function every front end calls;
//! [`sources`] keep snapshots fresh in the background; [`webhook`], [`review`] and the
//! CLI are thin front ends.

pub mod certs;
pub mod cli;
pub mod engine;
pub mod history_cmd;
pub mod logging;
pub mod mesh_cmd;
pub mod metrics;
pub mod report;
pub mod review;
pub mod sources;
pub mod webhook;
