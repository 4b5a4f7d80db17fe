//! Usage history sources (DESIGN §7): Prometheus, the history file and the persisted
//! store. Each builds an [`UsageSnapshot`](crate::engine::usage::UsageSnapshot) in the
//! background; the request path only reads the current one.

pub mod file;
pub mod pods;
pub mod prometheus;
pub mod store;

pub use crate::engine::usage::{ContainerUsage, SnapshotMeta, UsageSnapshot, WorkloadUsage};
pub use file::{load_history_file, parse_history, HistoryError};

/// Current time as Unix seconds (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
