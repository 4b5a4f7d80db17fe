//! Usage history as the engine sees it: what each workload's containers used over the
//! window (DESIGN §7). The request path only reads a [`UsageSnapshot`]; background sources
//! (`sources::history`: Prometheus, the history file, the persisted store) build new
//! snapshots and swap them in.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Usage of one container of one workload over the history window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerUsage {
    /// 95th percentile of the CPU usage rate, in cores.
    pub cpu_p95_cores: f64,
    /// Maximum working set, in bytes.
    pub memory_max_bytes: u64,
    /// Number of samples behind the figures.
    pub samples: u64,
    /// Hours of data the samples cover.
    pub hours: f64,
    /// OOM kills of this container in the window.
    #[serde(default)]
    pub oom_kills: u32,
}

/// Usage of one workload: per container, plus its average replica count.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkloadUsage {
    pub containers: BTreeMap<String, ContainerUsage>,
    #[serde(default)]
    pub avg_replicas: Option<f64>,
    /// Which source learned these figures when several are merged (`metrics-api` under
    /// Prometheus); None: the snapshot's own source. Decisions name it in their reasons.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// Where a snapshot came from and when.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SnapshotMeta {
    /// `prometheus <url>`, `file <path>`, ...
    pub source: String,
    /// Unix seconds when the data was fetched (None: the history file, taken as current).
    pub fetched_at: Option<u64>,
    /// The window the figures cover, in seconds.
    pub window_seconds: Option<u64>,
}

/// Everything the sizer knows about usage, keyed by namespace then workload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageSnapshot {
    pub(crate) by_namespace: HashMap<String, HashMap<String, WorkloadUsage>>,
    pub meta: SnapshotMeta,
}

impl UsageSnapshot {
    pub fn get(&self, namespace: &str, workload: &str) -> Option<&WorkloadUsage> {
        self.by_namespace.get(namespace)?.get(workload)
    }

    /// The entry for a workload, created empty if absent.
    pub fn entry(&mut self, namespace: &str, workload: &str) -> &mut WorkloadUsage {
        self.by_namespace
            .entry(namespace.to_string())
            .or_default()
            .entry(workload.to_string())
            .or_default()
    }

    pub fn insert(&mut self, namespace: &str, workload: &str, usage: WorkloadUsage) {
        *self.entry(namespace, workload) = usage;
    }

    /// Number of workloads.
    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All workloads, sorted by namespace then name.
    pub fn iter_sorted(&self) -> Vec<(&str, &str, &WorkloadUsage)> {
        let mut out: Vec<_> = self
            .by_namespace
            .iter()
            .flat_map(|(ns, m)| m.iter().map(move |(w, u)| (ns.as_str(), w.as_str(), u)))
            .collect();
        out.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        out
    }

    /// `self` with every workload of `over` laid on top (whole workloads replaced).
    pub fn overlaid(&self, over: &UsageSnapshot) -> UsageSnapshot {
        let mut out = self.clone();
        for (ns, wl, usage) in over.iter_sorted() {
            out.insert(ns, wl, usage.clone());
        }
        if !over.is_empty() || out.meta.source.is_empty() {
            out.meta = over.meta.clone();
        }
        out
    }

    /// Seconds since the data was fetched, if known.
    pub fn age_seconds(&self, now_unix: u64) -> Option<u64> {
        self.meta.fetched_at.map(|t| now_unix.saturating_sub(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(cpu: f64) -> WorkloadUsage {
        let mut w = WorkloadUsage::default();
        w.containers.insert(
            "istio-proxy".into(),
            ContainerUsage {
                cpu_p95_cores: cpu,
                memory_max_bytes: 1,
                samples: 1,
                hours: 1.0,
                oom_kills: 0,
            },
        );
        w
    }

    #[test]
    fn overlay_replaces_whole_workloads() {
        let mut base = UsageSnapshot::default();
        base.insert("a", "x", usage(1.0));
        base.insert("a", "y", usage(2.0));
        let mut top = UsageSnapshot::default();
        top.insert("a", "y", usage(3.0));
        top.meta.source = "prometheus".into();
        let m = base.overlaid(&top);
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a", "x").unwrap(), &usage(1.0));
        assert_eq!(m.get("a", "y").unwrap(), &usage(3.0));
        assert_eq!(m.meta.source, "prometheus");
        let names: Vec<_> = m
            .iter_sorted()
            .iter()
            .map(|(_, w, _)| w.to_string())
            .collect();
        assert_eq!(names, vec!["x", "y"]);
    }
}
