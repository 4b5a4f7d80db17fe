//! The persisted history store in `--state-dir`: one versioned JSON file, replaced
//! atomically (write a temp file, fsync, rename, fsync the directory), so a restart or a
//! Prometheus outage keeps the last known history and a crash never leaves half a file.

use super::{SnapshotMeta, UsageSnapshot, WorkloadUsage};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "history.json";
const FORMAT: &str = "sidecar-sizer-history";
pub const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    version: u32,
}

#[derive(Serialize, Deserialize)]
struct StoreFile {
    format: String,
    version: u32,
    meta: SnapshotMeta,
    workloads: Vec<StoredWorkload>,
}

#[derive(Serialize, Deserialize)]
struct StoredWorkload {
    namespace: String,
    workload: String,
    #[serde(flatten)]
    usage: WorkloadUsage,
}

pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

/// Write `snap` to `dir/history.json` atomically.
pub fn save(dir: &Path, snap: &UsageSnapshot) -> Result<(), String> {
    let file = StoreFile {
        format: FORMAT.into(),
        version: VERSION,
        meta: snap.meta.clone(),
        workloads: snap
            .iter_sorted()
            .into_iter()
            .map(|(ns, wl, u)| StoredWorkload {
                namespace: ns.to_string(),
                workload: wl.to_string(),
                usage: u.clone(),
            })
            .collect(),
    };
    let target = path_in(dir);
    let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        serde_json::to_writer(&mut f, &file)?;
        f.flush()?;
        f.get_ref().sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &target)?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", target.display())
    })
}

/// Load `dir/history.json`: `Ok(None)` when there is none yet; an error for a corrupt or
/// future-version file (the caller reports it and carries on without it).
pub fn load(dir: &Path) -> Result<Option<UsageSnapshot>, String> {
    let path = path_in(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let header: Header = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: not a history store (corrupt?): {e}", path.display()))?;
    if header.format != FORMAT {
        return Err(format!(
            "{}: format {:?} is not {FORMAT:?}",
            path.display(),
            header.format
        ));
    }
    if header.version > VERSION {
        return Err(format!(
            "{}: store version {} is newer than this sidecar-sizer understands ({VERSION}); ignored",
            path.display(),
            header.version
        ));
    }
    let file: StoreFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{}: corrupt history store: {e}", path.display()))?;
    let mut snap = UsageSnapshot {
        meta: file.meta,
        ..UsageSnapshot::default()
    };
    for w in file.workloads {
        snap.insert(&w.namespace, &w.workload, w.usage);
    }
    Ok(Some(snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::history::ContainerUsage;

    fn sample() -> UsageSnapshot {
        let mut s = UsageSnapshot::default();
        let mut w = WorkloadUsage {
            avg_replicas: Some(2.5),
            ..Default::default()
        };
        w.containers.insert(
            "istio-proxy".into(),
            ContainerUsage {
                cpu_p95_cores: 0.25,
                memory_max_bytes: 123456,
                samples: 4032,
                hours: 336.0,
                oom_kills: 1,
            },
        );
        s.insert("shop", "cart", w);
        s.meta = SnapshotMeta {
            source: "prometheus http://x".into(),
            fetched_at: Some(1_700_000_000),
            window_seconds: Some(14 * 86400),
        };
        s
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        save(dir.path(), &sample()).unwrap();
        assert_eq!(load(dir.path()).unwrap().unwrap(), sample());
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }

    #[test]
    fn corrupt_and_future_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            path_in(dir.path()),
            b"{\"format\":\"sidecar-sizer-history\",\"vers",
        )
        .unwrap();
        assert!(load(dir.path()).unwrap_err().contains("corrupt"));
        std::fs::write(
            path_in(dir.path()),
            br#"{"format":"sidecar-sizer-history","version":99}"#,
        )
        .unwrap();
        assert!(load(dir.path()).unwrap_err().contains("newer"));
        std::fs::write(path_in(dir.path()), br#"{"format":"other","version":1}"#).unwrap();
        assert!(load(dir.path()).unwrap_err().contains("format"));
        std::fs::write(path_in(dir.path()), br#"{"format":"sidecar-sizer-history","version":1,"meta":{},"workloads":[{"namespace":1}]}"#).unwrap();
        assert!(load(dir.path()).unwrap_err().contains("corrupt"));
    }

    #[test]
    fn unwritable_dir_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        assert!(save(&file, &sample()).unwrap_err().contains("cannot write"));
    }
}
