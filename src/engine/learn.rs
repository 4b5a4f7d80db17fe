//! Usage history learned from samples (the Kubernetes metrics API), VPA-style: pure math
//! and the checkpoint format, no IO and no clock (every time is an argument, Unix seconds).
//!
//! Per workload and container: a decaying CPU histogram (exponential buckets from 1m,
//! 5 % growth, each sample weight 1 × 2^(t/half-life)) for the P95, the memory peak of
//! each peak interval (the max of those within the window is the "max working set" of
//! DESIGN §8), sample counts, first/last sample, OOM kill times; per workload the average
//! number of pods seen per sample. [`History::to_snapshot`] turns it into the same
//! [`UsageSnapshot`] the Prometheus path produces.

use crate::engine::usage::{ContainerUsage, SnapshotMeta, UsageSnapshot, WorkloadUsage};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The `WorkloadUsage::source` of learned history.
pub const SOURCE: &str = "metrics-api";

/// Upper end of the first CPU bucket: 1m.
pub const CPU_FIRST_BUCKET_CORES: f64 = 0.001;
/// Each bucket is this much wider than the one before.
pub const CPU_GROWTH: f64 = 1.05;
/// Buckets cover up to 1000 cores (≈ 1m × 1.05^283); higher samples land in the last one.
pub const CPU_BUCKETS: u16 = 285;
/// Weights are rescaled when the newest sample's factor passes 2^this.
const RENORMALIZE_EXPONENT: f64 = 40.0;
/// At most this many OOM kill times are kept per container.
const MAX_OOMS: usize = 16;
/// Pods' last sample times are kept this long after the workload's newest sample (they
/// only serve to drop repeated samples of the same pod).
const POD_MEMORY_SECONDS: i64 = 3600;

/// The bucket a CPU usage (cores) falls in.
pub fn cpu_bucket(cores: f64) -> u16 {
    if cores.is_nan() || cores < CPU_FIRST_BUCKET_CORES {
        return 0;
    }
    let i = 1.0 + ((cores / CPU_FIRST_BUCKET_CORES).ln() / CPU_GROWTH.ln()).floor();
    if i >= f64::from(CPU_BUCKETS - 1) {
        CPU_BUCKETS - 1
    } else {
        i as u16
    }
}

/// Upper end of bucket `i` (cores): bucket 0 is [0, 1m), bucket i is [1m·g^(i-1), 1m·g^i).
pub fn cpu_bucket_end(i: u16) -> f64 {
    CPU_FIRST_BUCKET_CORES * CPU_GROWTH.powi(i32::from(i))
}

/// A decaying histogram of CPU usage. Weights are relative to `r` (a Unix time): a sample
/// at t weighs 2^((t - r) / half-life), so older samples count less without touching
/// every bucket at every sample.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DecayingHistogram {
    /// Reference time of the weights.
    #[serde(rename = "r")]
    pub reference: i64,
    /// (bucket, weight), sorted by bucket, no zero weights.
    #[serde(rename = "b")]
    pub buckets: Vec<(u16, f32)>,
}

impl DecayingHistogram {
    /// Add a sample of `cores` with `weight` at time `t`.
    pub fn add(&mut self, cores: f64, weight: f64, t: i64, half_life: f64) {
        if !(cores.is_finite() && cores >= 0.0 && weight.is_finite() && weight > 0.0) {
            return;
        }
        if self.buckets.is_empty() {
            self.reference = t;
        }
        let mut exponent = (t - self.reference) as f64 / half_life;
        if exponent > RENORMALIZE_EXPONENT {
            self.rescale(t, half_life);
            exponent = 0.0;
        }
        let w = (weight * exponent.exp2()) as f32;
        let b = cpu_bucket(cores);
        match self.buckets.binary_search_by_key(&b, |e| e.0) {
            Ok(i) => self.buckets[i].1 += w,
            Err(i) => self.buckets.insert(i, (b, w)),
        }
    }

    /// Move the reference to `t`, scaling every weight; drops weights that vanish.
    fn rescale(&mut self, t: i64, half_life: f64) {
        let factor = (-((t - self.reference) as f64) / half_life).exp2();
        for e in &mut self.buckets {
            e.1 = (f64::from(e.1) * factor) as f32;
        }
        self.buckets.retain(|e| e.1 > 0.0 && e.1.is_finite());
        self.reference = t;
    }

    fn total(&self) -> f64 {
        self.buckets.iter().map(|e| f64::from(e.1)).sum()
    }

    /// Total weight as seen at `now`: one sample of weight 1 at t weighs
    /// 2^(-(now - t) / half-life).
    pub fn weight_at(&self, now: i64, half_life: f64) -> f64 {
        self.total() * (-((now - self.reference) as f64) / half_life).exp2()
    }

    /// The `p` percentile (0..=1): the upper end of the bucket holding it, so at most one
    /// bucket (5 %) above the exact value. None when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 || !total.is_finite() {
            return None;
        }
        let target = p.clamp(0.0, 1.0) * total;
        let mut cumulative = 0.0;
        for (b, w) in &self.buckets {
            cumulative += f64::from(*w);
            if cumulative >= target {
                return Some(cpu_bucket_end(*b));
            }
        }
        self.buckets.last().map(|(b, _)| cpu_bucket_end(*b))
    }

    /// Fold another histogram (same half-life) into this one.
    pub fn merge(&mut self, other: &DecayingHistogram, half_life: f64) {
        if other.buckets.is_empty() {
            return;
        }
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        let reference = self.reference.max(other.reference);
        self.rescale(reference, half_life);
        let mut o = other.clone();
        o.rescale(reference, half_life);
        for (b, w) in o.buckets {
            match self.buckets.binary_search_by_key(&b, |e| e.0) {
                Ok(i) => self.buckets[i].1 += w,
                Err(i) => self.buckets.insert(i, (b, w)),
            }
        }
    }
}

/// The memory peak of each interval: (interval start, peak bytes), oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct MemoryPeaks(pub Vec<(i64, u64)>);

impl MemoryPeaks {
    pub fn add(&mut self, bytes: u64, t: i64, interval: i64) {
        let interval = interval.max(1);
        let start = t - t.rem_euclid(interval);
        match self.0.binary_search_by_key(&start, |e| e.0) {
            Ok(i) => self.0[i].1 = self.0[i].1.max(bytes),
            Err(i) => self.0.insert(i, (start, bytes)),
        }
    }

    /// Drop peaks of intervals that ended before `now - window`.
    pub fn prune(&mut self, now: i64, window: i64, interval: i64) {
        self.0
            .retain(|(start, _)| start + interval.max(1) > now - window);
    }

    /// The max of the peaks of intervals that overlap `[now - window, now]`.
    pub fn max_within(&self, now: i64, window: i64, interval: i64) -> Option<u64> {
        self.0
            .iter()
            .filter(|(start, _)| start + interval.max(1) > now - window)
            .map(|e| e.1)
            .max()
    }
}

/// One container of one workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerHistory {
    #[serde(rename = "h")]
    pub cpu: DecayingHistogram,
    #[serde(rename = "m")]
    pub memory: MemoryPeaks,
    #[serde(rename = "n")]
    pub samples: u64,
    /// First and last sample, Unix seconds (0: none yet).
    #[serde(rename = "f")]
    pub first: i64,
    #[serde(rename = "l")]
    pub last: i64,
    /// OOM kill times (the terminated state's finishedAt), oldest first.
    #[serde(rename = "o", default, skip_serializing_if = "Vec::is_empty")]
    pub ooms: Vec<i64>,
}

/// One workload.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkloadHistory {
    #[serde(rename = "c")]
    pub containers: BTreeMap<String, ContainerHistory>,
    /// Σ pods seen per sample round, and the number of rounds.
    #[serde(rename = "rs")]
    pub replica_sum: f64,
    #[serde(rename = "rn")]
    pub replica_rounds: u64,
    /// Pod → time of its last folded sample (drops repeated samples, also after a
    /// leader change).
    #[serde(rename = "p", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pods: BTreeMap<String, i64>,
}

impl WorkloadHistory {
    fn newest(&self) -> i64 {
        self.containers.values().map(|c| c.last).max().unwrap_or(0)
    }
}

/// How samples are weighed and kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LearnConfig {
    /// CPU sample weight halves every this many seconds.
    pub half_life_seconds: f64,
    /// One memory peak per interval of this many seconds.
    pub memory_peak_interval_seconds: i64,
    /// History older than this (seconds) is dropped.
    pub window_seconds: i64,
    /// Samples stamped more than this many seconds after the round's time are dropped
    /// (a clock jump).
    pub max_future_seconds: i64,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            half_life_seconds: 24.0 * 3600.0,
            memory_peak_interval_seconds: 24 * 3600,
            window_seconds: 14 * 86400,
            max_future_seconds: 300,
        }
    }
}

/// One container's usage in one pod's metrics sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    pub name: String,
    pub cpu_cores: f64,
    pub memory_bytes: f64,
}

/// One pod's metrics sample, already mapped to its workload.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSample {
    pub namespace: String,
    pub workload: String,
    pub pod: String,
    /// The sample's timestamp (Unix seconds).
    pub at: i64,
    pub containers: Vec<ContainerSample>,
}

/// An OOM kill a pod's status reports (`lastState.terminated.reason: OOMKilled`).
#[derive(Debug, Clone, PartialEq)]
pub struct OomKill {
    pub namespace: String,
    pub workload: String,
    pub container: String,
    /// `finishedAt` (Unix seconds).
    pub at: i64,
}

/// What one round of folding did: samples taken, and dropped ones by reason.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FoldStats {
    pub accepted: u64,
    pub dropped: BTreeMap<&'static str, u64>,
    pub new_ooms: u64,
}

impl FoldStats {
    fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_default() += 1;
    }
}

/// Everything learned, keyed by (namespace, workload).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    pub workloads: HashMap<(String, String), WorkloadHistory>,
}

impl History {
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    /// Fold one sampling round taken at `now`: every pod's containers, then the OOM kills
    /// seen. Invalid values (negative, NaN, infinite), repeated samples of a pod and
    /// samples from the future are dropped, counted by reason in the result.
    pub fn fold(
        &mut self,
        now: i64,
        pods: &[PodSample],
        ooms: &[OomKill],
        cfg: &LearnConfig,
    ) -> FoldStats {
        let mut stats = FoldStats::default();
        let mut seen: HashMap<(&str, &str), u64> = HashMap::new();
        for p in pods {
            if p.at > now + cfg.max_future_seconds {
                stats.drop("clock");
                continue;
            }
            if p.at < now - cfg.window_seconds {
                stats.drop("too_old");
                continue;
            }
            let key = (p.namespace.clone(), p.workload.clone());
            let last_of_pod = self
                .workloads
                .get(&key)
                .and_then(|w| w.pods.get(&p.pod))
                .copied();
            match last_of_pod {
                Some(l) if p.at == l => {
                    stats.drop("repeated");
                    continue;
                }
                Some(l) if p.at < l => {
                    stats.drop("clock");
                    continue;
                }
                _ => {}
            }
            let valid: Vec<&ContainerSample> = p
                .containers
                .iter()
                .filter(|c| {
                    let ok = c.cpu_cores.is_finite()
                        && c.cpu_cores >= 0.0
                        && c.memory_bytes.is_finite()
                        && c.memory_bytes >= 0.0;
                    if !ok {
                        stats.drop("invalid");
                    }
                    ok
                })
                .collect();
            if valid.is_empty() {
                if p.containers.is_empty() {
                    stats.drop("empty");
                }
                continue;
            }
            let w = self.workloads.entry(key).or_default();
            w.pods.insert(p.pod.clone(), p.at);
            for c in valid {
                let h = w.containers.entry(c.name.clone()).or_default();
                h.cpu.add(c.cpu_cores, 1.0, p.at, cfg.half_life_seconds);
                h.memory.add(
                    c.memory_bytes.ceil() as u64,
                    p.at,
                    cfg.memory_peak_interval_seconds,
                );
                h.samples += 1;
                if h.first == 0 || p.at < h.first {
                    h.first = p.at;
                }
                h.last = h.last.max(p.at);
                stats.accepted += 1;
            }
            *seen
                .entry((p.namespace.as_str(), p.workload.as_str()))
                .or_default() += 1;
        }
        for ((ns, wl), n) in seen {
            if let Some(w) = self.workloads.get_mut(&(ns.to_string(), wl.to_string())) {
                w.replica_sum += n as f64;
                w.replica_rounds += 1;
            }
        }
        for k in ooms {
            if k.at < now - cfg.window_seconds {
                continue;
            }
            let w = self
                .workloads
                .entry((k.namespace.clone(), k.workload.clone()))
                .or_default();
            let h = w.containers.entry(k.container.clone()).or_default();
            if let Err(i) = h.ooms.binary_search(&k.at) {
                h.ooms.insert(i, k.at);
                stats.new_ooms += 1;
                if h.ooms.len() > MAX_OOMS {
                    h.ooms.remove(0);
                }
            }
        }
        self.prune(now, cfg);
        stats
    }

    /// Drop what fell out of the window: peaks, OOM kills, containers and workloads with
    /// no sample in it, and forgotten pods.
    pub fn prune(&mut self, now: i64, cfg: &LearnConfig) {
        let horizon = now - cfg.window_seconds;
        self.workloads.retain(|_, w| {
            let newest = w.newest();
            w.pods.retain(|_, t| *t >= newest - POD_MEMORY_SECONDS);
            w.containers.retain(|_, c| {
                c.memory
                    .prune(now, cfg.window_seconds, cfg.memory_peak_interval_seconds);
                c.ooms.retain(|t| *t >= horizon);
                c.last >= horizon || !c.ooms.is_empty()
            });
            !w.containers.is_empty()
        });
    }

    /// The usage the sizer reads: per container the P95 of CPU, the max of the memory
    /// peaks in the window, samples, hours from first to last sample (at most the
    /// window), OOM kills in the window; per workload the average pods per round.
    pub fn to_snapshot(&self, now: i64, cfg: &LearnConfig) -> UsageSnapshot {
        let mut snap = UsageSnapshot {
            meta: SnapshotMeta {
                source: SOURCE.to_string(),
                fetched_at: u64::try_from(now).ok(),
                window_seconds: u64::try_from(cfg.window_seconds).ok(),
            },
            ..UsageSnapshot::default()
        };
        let horizon = now - cfg.window_seconds;
        for ((ns, wl), w) in &self.workloads {
            let mut containers = BTreeMap::new();
            for (name, c) in &w.containers {
                let hours = if c.samples > 0 && c.last >= c.first {
                    (c.last - c.first.max(horizon)).max(0) as f64 / 3600.0
                } else {
                    0.0
                };
                containers.insert(
                    name.clone(),
                    ContainerUsage {
                        cpu_p95_cores: c.cpu.percentile(0.95).unwrap_or(0.0),
                        memory_max_bytes: c
                            .memory
                            .max_within(now, cfg.window_seconds, cfg.memory_peak_interval_seconds)
                            .unwrap_or(0),
                        samples: c.samples,
                        hours,
                        oom_kills: c.ooms.iter().filter(|t| **t >= horizon).count() as u32,
                    },
                );
            }
            let usage = WorkloadUsage {
                containers,
                avg_replicas: (w.replica_rounds > 0)
                    .then(|| w.replica_sum / w.replica_rounds as f64),
                source: Some(SOURCE.to_string()),
            };
            snap.insert(ns, wl, usage);
        }
        snap
    }

    /// Lay `other` over this history: per container, the one with the later last sample.
    pub fn absorb(&mut self, other: History) {
        for (key, w) in other.workloads {
            match self.workloads.get_mut(&key) {
                None => {
                    self.workloads.insert(key, w);
                }
                Some(mine) => {
                    if w.newest() > mine.newest() {
                        mine.replica_sum = w.replica_sum;
                        mine.replica_rounds = w.replica_rounds;
                    }
                    for (pod, t) in w.pods {
                        let e = mine.pods.entry(pod).or_insert(t);
                        *e = (*e).max(t);
                    }
                    for (name, c) in w.containers {
                        match mine.containers.get(&name) {
                            Some(m) if m.last >= c.last => {}
                            _ => {
                                mine.containers.insert(name, c);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The format name and version written in every checkpoint.
pub const CHECKPOINT_FORMAT: &str = "sidecar-sizer-usage-checkpoint";
pub const CHECKPOINT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CheckpointHeader {
    format: String,
    version: u32,
}

/// One checkpoint shard: a part of the workloads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub format: String,
    pub version: u32,
    /// Who wrote it and when (Unix seconds).
    pub writer: String,
    pub written_at: i64,
    pub workloads: Vec<CheckpointWorkload>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointWorkload {
    #[serde(rename = "ns")]
    pub namespace: String,
    #[serde(rename = "w")]
    pub workload: String,
    #[serde(flatten)]
    pub history: WorkloadHistory,
}

/// Why a checkpoint was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a usage checkpoint (corrupt?): {0}")]
    Corrupt(String),
    #[error("format {0:?} is not {CHECKPOINT_FORMAT:?}")]
    Format(String),
    #[error("checkpoint version {0} is newer than this sidecar-sizer understands ({CHECKPOINT_VERSION}); ignored")]
    FutureVersion(u32),
}

impl CheckpointError {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            CheckpointError::Corrupt(_) | CheckpointError::Format(_) => "corrupt",
            CheckpointError::FutureVersion(_) => "future_version",
        }
    }
}

/// Encode `history` as shards of at most about `max_bytes` each (a single workload larger
/// than that gets a shard of its own), workloads sorted by namespace and name.
pub fn encode_checkpoints(
    history: &History,
    writer: &str,
    written_at: i64,
    max_bytes: usize,
) -> Vec<String> {
    let mut keys: Vec<&(String, String)> = history.workloads.keys().collect();
    keys.sort();
    let overhead = 160 + writer.len();
    let mut shards: Vec<Vec<CheckpointWorkload>> = vec![Vec::new()];
    let mut size = overhead;
    for key in keys {
        let w = CheckpointWorkload {
            namespace: key.0.clone(),
            workload: key.1.clone(),
            history: history.workloads[key].clone(),
        };
        let len = serde_json::to_string(&w).map_or(0, |s| s.len()) + 1;
        let current = shards.len() - 1;
        if size + len > max_bytes && !shards[current].is_empty() {
            shards.push(Vec::new());
            size = overhead;
        }
        size += len;
        let current = shards.len() - 1;
        shards[current].push(w);
    }
    shards
        .into_iter()
        .map(|workloads| {
            let doc = Checkpoint {
                format: CHECKPOINT_FORMAT.into(),
                version: CHECKPOINT_VERSION,
                writer: writer.into(),
                written_at,
                workloads,
            };
            serde_json::to_string(&doc).unwrap_or_default()
        })
        .collect()
}

/// Decode one shard.
pub fn decode_checkpoint(text: &str) -> Result<Checkpoint, CheckpointError> {
    let header: CheckpointHeader =
        serde_json::from_str(text).map_err(|e| CheckpointError::Corrupt(e.to_string()))?;
    if header.format != CHECKPOINT_FORMAT {
        return Err(CheckpointError::Format(header.format));
    }
    if header.version > CHECKPOINT_VERSION {
        return Err(CheckpointError::FutureVersion(header.version));
    }
    serde_json::from_str(text).map_err(|e| CheckpointError::Corrupt(e.to_string()))
}

/// Union of shards; a workload in several (moved between shards) keeps, per container,
/// the copy with the later last sample.
pub fn history_from_checkpoints(shards: impl IntoIterator<Item = Checkpoint>) -> History {
    let mut out = History::default();
    for shard in shards {
        let mut h = History::default();
        for w in shard.workloads {
            h.workloads.insert((w.namespace, w.workload), w.history);
        }
        out.absorb(h);
    }
    out
}

/// A Kubernetes quantity as a float ("250m", "12345n", "1.5", "64Mi", "1e3"): None when
/// it is not one, negative, or not finite.
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    // "1E" alone is an exa suffix, not an exponent.
    let (num, suffix) = if suffix.is_empty() && (num.ends_with('E')) {
        (&num[..num.len() - 1], "E")
    } else {
        (num, suffix)
    };
    if num.is_empty() || !num.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    let v = n * factor;
    (v.is_finite() && v >= 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: f64 = 3600.0;

    /// Exact P95 by sorting (nearest rank), the oracle for the histogram.
    fn exact_p95(values: &[f64]) -> f64 {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let rank = (0.95 * v.len() as f64).ceil() as usize;
        v[rank.max(1) - 1]
    }

    #[test]
    fn buckets_are_exponential_from_one_millicore() {
        assert_eq!(cpu_bucket(0.0), 0);
        assert_eq!(cpu_bucket(0.0009), 0);
        assert_eq!(cpu_bucket(0.001), 1);
        assert!((cpu_bucket_end(1) - 0.00105).abs() < 1e-12);
        for v in [0.001, 0.0123, 0.25, 1.0, 3.7, 999.0] {
            let b = cpu_bucket(v);
            let (lo, hi) = (cpu_bucket_end(b - 1), cpu_bucket_end(b));
            assert!(
                lo <= v * (1.0 + 1e-12) && v < hi * (1.0 + 1e-12),
                "{v}: [{lo}, {hi})"
            );
            assert!((hi / lo - CPU_GROWTH).abs() < 1e-9);
        }
        assert_eq!(cpu_bucket(1e9), CPU_BUCKETS - 1);
        assert!(cpu_bucket_end(CPU_BUCKETS - 1) > 1000.0);
    }

    #[test]
    fn p95_within_one_bucket_of_exact_for_known_distributions() {
        // Uniform 0..500m, a two-level bimodal, and a long-tailed (exponential by inverse CDF).
        let n = 10_000;
        let uniform: Vec<f64> = (0..n).map(|i| 0.5 * i as f64 / n as f64).collect();
        let bimodal: Vec<f64> = (0..n)
            .map(|i| if i % 10 == 0 { 0.8 } else { 0.05 })
            .collect();
        let tail: Vec<f64> = (0..n)
            .map(|i| -0.1 * (1.0 - (i as f64 + 0.5) / n as f64).ln())
            .collect();
        for values in [uniform, bimodal, tail] {
            let mut h = DecayingHistogram::default();
            for v in &values {
                // All at the same instant: no decay.
                h.add(*v, 1.0, 1_000, 86_400.0);
            }
            let exact = exact_p95(&values);
            let got = h.percentile(0.95).unwrap();
            assert!(got >= exact, "estimate {got} below exact {exact}");
            assert!(
                got <= exact * CPU_GROWTH * (1.0 + 1e-9) + CPU_FIRST_BUCKET_CORES,
                "estimate {got} more than one bucket above exact {exact}"
            );
        }
        assert_eq!(DecayingHistogram::default().percentile(0.95), None);
    }

    #[test]
    fn decay_halves_weight_at_one_half_life() {
        let hl = 24.0 * H;
        let mut h = DecayingHistogram::default();
        h.add(0.1, 1.0, 0, hl);
        assert!((h.weight_at(0, hl) - 1.0).abs() < 1e-6);
        assert!((h.weight_at(86_400, hl) - 0.5).abs() < 1e-6);
        assert!((h.weight_at(2 * 86_400, hl) - 0.25).abs() < 1e-6);
        // A sample one half-life later weighs twice an old one: 1 old at 1 core and 1 new
        // at 10m → the new one holds 2/3 of the weight, so the median is 10m.
        h.add(0.01, 1.0, 86_400, hl);
        assert!((h.weight_at(86_400, hl) - 1.5).abs() < 1e-6);
        let median = h.percentile(0.5).unwrap();
        assert!((0.01..0.0106).contains(&median), "{median}");
        // 64 half-lives later (past the renormalisation point) weights stay finite and
        // the newest sample dominates.
        let later = 64 * 86_400;
        h.add(2.0, 1.0, later, hl);
        assert!(h.buckets.iter().all(|b| b.1.is_finite()));
        assert!((h.weight_at(later, hl) - 1.0).abs() < 1e-3);
        let p = h.percentile(0.5).unwrap();
        assert!((2.0..2.11).contains(&p), "{p}");
    }

    #[test]
    fn memory_peaks_per_interval_and_window() {
        let day = 86_400;
        let mut m = MemoryPeaks::default();
        // Day 0: 100, 300, 200 → peak 300; day 1: 50; day 3: 120.
        for (t, b) in [
            (10, 100),
            (500, 300),
            (day - 1, 200),
            (day, 50),
            (3 * day + 5, 120),
        ] {
            m.add(b, t, day);
        }
        assert_eq!(m.0, vec![(0, 300), (day, 50), (3 * day, 120)]);
        // Window of 14 days at day 4: everything.
        assert_eq!(m.max_within(4 * day, 14 * day, day), Some(300));
        // Window of 2 days at day 3.5: intervals ending after day 1.5 → day 1 and day 3.
        assert_eq!(m.max_within(3 * day + day / 2, 2 * day, day), Some(120));
        m.prune(3 * day + day / 2, 2 * day, day);
        assert_eq!(m.0, vec![(day, 50), (3 * day, 120)]);
    }

    fn sample(pod: &str, at: i64, cpu: f64, mem: f64) -> PodSample {
        PodSample {
            namespace: "shop".into(),
            workload: "cart".into(),
            pod: pod.into(),
            at,
            containers: vec![ContainerSample {
                name: "istio-proxy".into(),
                cpu_cores: cpu,
                memory_bytes: mem,
            }],
        }
    }

    #[test]
    fn fold_counts_replicas_drops_bad_samples_and_builds_usage() {
        let cfg = LearnConfig::default();
        let mut h = History::default();
        let t0 = 1_700_000_000;
        // 30 rounds a minute apart, 2 pods, a third pod in rounds 10..20.
        for r in 0..30 {
            let at = t0 + r * 60;
            let mut pods = vec![
                sample("cart-a", at, 0.1, 100e6),
                sample("cart-b", at, 0.2, 150e6),
            ];
            if (10..20).contains(&r) {
                pods.push(sample("cart-c", at, 0.3, 120e6));
            }
            let stats = h.fold(at + 5, &pods, &[], &cfg);
            assert_eq!(stats.accepted, pods.len() as u64);
        }
        let now = t0 + 29 * 60 + 5;
        // Repeated, backwards, future and invalid samples are dropped by reason.
        let bad = vec![
            sample("cart-a", t0 + 29 * 60, 9.0, 1e12),
            sample("cart-b", t0, 9.0, 1e12),
            sample("cart-d", now + 3600, 9.0, 1e12),
            sample("cart-e", now, f64::NAN, 1.0),
            sample("cart-f", now, 0.1, -1.0),
        ];
        let stats = h.fold(now, &bad, &[], &cfg);
        assert_eq!(stats.accepted, 0);
        let want: BTreeMap<&str, u64> = [("repeated", 1), ("clock", 2), ("invalid", 2)].into();
        assert_eq!(stats.dropped, want);
        // OOM kill seen twice counts once.
        let oom = OomKill {
            namespace: "shop".into(),
            workload: "cart".into(),
            container: "istio-proxy".into(),
            at: t0 + 100,
        };
        assert_eq!(
            h.fold(now, &[], std::slice::from_ref(&oom), &cfg).new_ooms,
            1
        );
        assert_eq!(h.fold(now, &[], &[oom], &cfg).new_ooms, 0);

        let snap = h.to_snapshot(now, &cfg);
        let w = snap.get("shop", "cart").unwrap();
        assert_eq!(w.source.as_deref(), Some(SOURCE));
        let c = &w.containers["istio-proxy"];
        assert_eq!(c.samples, 70);
        assert!((c.hours - 29.0 / 60.0).abs() < 1e-9);
        assert_eq!(c.memory_max_bytes, 150_000_000);
        assert_eq!(c.oom_kills, 1);
        // 70 samples: 30 at 100m, 30 at 200m, 10 at 300m → P95 is 300m (in its bucket).
        assert!(
            (0.3..0.3 * CPU_GROWTH).contains(&c.cpu_p95_cores),
            "{}",
            c.cpu_p95_cores
        );
        // (20 rounds × 2 + 10 rounds × 3) / 30 rounds
        assert!((w.avg_replicas.unwrap() - 70.0 / 30.0).abs() < 1e-9);
    }

    #[test]
    fn window_forgets_old_workloads() {
        let cfg = LearnConfig {
            window_seconds: 3600,
            ..LearnConfig::default()
        };
        let mut h = History::default();
        h.fold(1000, &[sample("a", 1000, 0.1, 1.0)], &[], &cfg);
        assert_eq!(h.len(), 1);
        h.fold(1000 + 3601, &[], &[], &cfg);
        assert!(h.is_empty());
    }

    #[test]
    fn checkpoints_round_trip_in_shards() {
        let cfg = LearnConfig::default();
        let mut h = History::default();
        for i in 0..50 {
            let mut s = sample("p", 1_000_000, 0.01 * i as f64, 1e6 * i as f64);
            s.workload = format!("w{i:02}");
            h.fold(1_000_000, &[s], &[], &cfg);
        }
        let shards = encode_checkpoints(&h, "me", 1_000_001, 2_000);
        assert!(shards.len() > 1, "{}", shards.len());
        for s in &shards {
            assert!(s.len() <= 2_000, "{}", s.len());
        }
        let decoded: Vec<Checkpoint> = shards
            .iter()
            .map(|s| decode_checkpoint(s).unwrap())
            .collect();
        assert_eq!(decoded[0].writer, "me");
        let back = history_from_checkpoints(decoded);
        assert_eq!(
            back.to_snapshot(1_000_001, &cfg),
            h.to_snapshot(1_000_001, &cfg)
        );
        assert_eq!(back, h);
    }

    #[test]
    fn corrupt_and_future_checkpoints_are_errors() {
        assert!(matches!(
            decode_checkpoint("{\"format\": \"sidecar-sizer-usage-che"),
            Err(CheckpointError::Corrupt(_))
        ));
        assert!(matches!(
            decode_checkpoint(r#"{"format":"other","version":1}"#),
            Err(CheckpointError::Format(_))
        ));
        assert_eq!(
            decode_checkpoint(r#"{"format":"sidecar-sizer-usage-checkpoint","version":2}"#),
            Err(CheckpointError::FutureVersion(2))
        );
        assert!(matches!(
            decode_checkpoint(
                r#"{"format":"sidecar-sizer-usage-checkpoint","version":1,"writer":"x","written_at":1,"workloads":[{"ns":1}]}"#
            ),
            Err(CheckpointError::Corrupt(_))
        ));
    }

    #[test]
    fn absorb_keeps_the_later_copy() {
        let cfg = LearnConfig::default();
        let mut old = History::default();
        old.fold(100, &[sample("a", 100, 0.1, 1.0)], &[], &cfg);
        let mut new = History::default();
        new.fold(200, &[sample("a", 200, 0.5, 2.0)], &[], &cfg);
        let mut merged = old.clone();
        merged.absorb(new.clone());
        assert_eq!(merged, new);
        let mut merged = new.clone();
        merged.absorb(old);
        assert_eq!(merged, new);
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("250m"), Some(0.25));
        assert!((parse_quantity("12345678n").unwrap() - 0.012345678).abs() < 1e-15);
        assert_eq!(parse_quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("1.5"), Some(1.5));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("2k"), Some(2000.0));
        assert_eq!(parse_quantity("-1"), None);
        assert_eq!(parse_quantity("NaN"), None);
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("1Zi"), None);
        assert_eq!(parse_quantity(""), None);
    }
}
