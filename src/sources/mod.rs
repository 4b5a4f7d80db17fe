//! Background IO (DESIGN §1): each source keeps a snapshot fresh and swaps it in; nothing
//! here runs on the request path.

pub mod checkpoints;
pub mod cluster;
pub mod configmaps;
pub mod history;
pub mod hpa;
pub mod kube;
pub mod mesh;
pub mod metrics_api;
pub mod oneshot;
pub mod specs;
