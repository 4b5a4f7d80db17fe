//! The pure engine (DESIGN §1): no IO, no clock, no async. Everything a sizing decision
//! depends on is an argument; background sources hand in snapshots.

pub mod constraints;
pub mod hpa;
pub mod istio;
pub mod learn;
pub mod mesh;
pub mod patch;
pub mod pipeline;
pub mod quantity;
pub mod sizing;
pub mod spec;
pub mod usage;
pub mod workload;
