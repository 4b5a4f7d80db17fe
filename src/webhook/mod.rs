//! Front end 1: the admission webhook. `wire` decodes and encodes AdmissionReviews,
//! `serve` runs the TLS and health servers and the background sources, `limits` protects
//! them from slow and abusive clients.

pub mod limits;
pub mod serve;
pub mod wire;
