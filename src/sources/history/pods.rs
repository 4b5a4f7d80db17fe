//! Per-pod series → per-workload usage, in Rust (DESIGN §7: Prometheus is asked for
//! `by (namespace, pod, container)` aggregates; the pod → workload mapping happens here).

use super::{ContainerUsage, SnapshotMeta, UsageSnapshot};
use std::collections::{BTreeMap, HashMap};

/// Characters Kubernetes uses for generated name suffixes and pod-template-hashes
/// (`rand.SafeEncodeString`: no vowels, no 0/1/3).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn is_safe(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| SAFE.contains(&b))
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// The workload a pod name belongs to, from the suffixes controllers add:
/// - `<deployment>-<pod-template-hash>-<5>` → the Deployment
/// - `<cronjob>-<scheduled minutes>-<5>` → the CronJob
/// - `<daemonset or job>-<5>` → the DaemonSet / Job
/// - `<statefulset>-<ordinal>` → the StatefulSet
/// - anything else → the pod name itself.
pub fn workload_of_pod(pod: &str) -> &str {
    if let Some((rest, suffix)) = pod.rsplit_once('-') {
        if suffix.len() == 5 && is_safe(suffix) && !rest.is_empty() {
            if let Some((base, mid)) = rest.rsplit_once('-') {
                if !base.is_empty() {
                    if all_digits(mid) && mid.len() >= 8 {
                        return base;
                    }
                    if (6..=10).contains(&mid.len()) && is_safe(mid) {
                        return base;
                    }
                }
            }
            return rest;
        }
        if all_digits(suffix) && !rest.is_empty() {
            return rest;
        }
    }
    pod
}

/// What Prometheus told us about one (namespace, pod, container).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSeries {
    pub cpu_p95_cores: Option<f64>,
    pub cpu_samples: Option<u64>,
    pub memory_max_bytes: Option<f64>,
    /// Unix seconds of the first and last sample in the window.
    pub first_seen: Option<f64>,
    pub last_seen: Option<f64>,
    pub oom_killed: bool,
}

pub type SeriesKey = (String, String, String);

/// One workload's series: container → [(pod, series)].
type ByContainer<'a> = BTreeMap<&'a str, Vec<(&'a str, &'a PodSeries)>>;

/// Pods with fewer samples than this (one hour at a 5m step) only count for the CPU P95
/// when a workload has nothing longer: a pod that lived minutes says little.
const MIN_POD_SAMPLES_FOR_P95: u64 = 12;

/// Fold per-pod series into per-workload usage. `step_seconds` is the query step.
pub fn aggregate(
    series: &HashMap<SeriesKey, PodSeries>,
    step_seconds: f64,
    meta: SnapshotMeta,
) -> UsageSnapshot {
    // (namespace, workload) → container → [(pod, series)]
    let mut grouped: BTreeMap<(&str, &str), ByContainer<'_>> = BTreeMap::new();
    for ((ns, pod, container), s) in series {
        grouped
            .entry((ns.as_str(), workload_of_pod(pod)))
            .or_default()
            .entry(container.as_str())
            .or_default()
            .push((pod.as_str(), s));
    }
    let mut snap = UsageSnapshot {
        meta,
        ..UsageSnapshot::default()
    };
    for ((ns, wl), containers) in grouped {
        let mut replicas = None;
        let mut out = BTreeMap::new();
        for (container, pods) in &containers {
            let Some(usage) = container_usage(pods) else {
                continue;
            };
            if replicas.is_none() || *container == crate::engine::sizing::PROXY {
                replicas = average_replicas(pods, step_seconds);
            }
            out.insert(container.to_string(), usage);
        }
        if out.is_empty() {
            continue;
        }
        let w = snap.entry(ns, wl);
        w.containers = out;
        w.avg_replicas = replicas;
    }
    snap
}

fn container_usage(pods: &[(&str, &PodSeries)]) -> Option<ContainerUsage> {
    let long: Vec<f64> = pods
        .iter()
        .filter(|(_, s)| s.cpu_samples.unwrap_or(0) >= MIN_POD_SAMPLES_FOR_P95)
        .filter_map(|(_, s)| s.cpu_p95_cores)
        .collect();
    let cpu = if long.is_empty() {
        pods.iter()
            .filter_map(|(_, s)| s.cpu_p95_cores)
            .fold(None, max_opt)
    } else {
        long.into_iter().fold(None, max_opt)
    };
    let mem = pods
        .iter()
        .filter_map(|(_, s)| s.memory_max_bytes)
        .fold(None, max_opt);
    if cpu.is_none() && mem.is_none() {
        return None;
    }
    let first = pods
        .iter()
        .filter_map(|(_, s)| s.first_seen)
        .fold(None, min_opt);
    let last = pods
        .iter()
        .filter_map(|(_, s)| s.last_seen)
        .fold(None, max_opt);
    let hours = match (first, last) {
        (Some(f), Some(l)) if l >= f => (l - f) / 3600.0,
        _ => 0.0,
    };
    Some(ContainerUsage {
        cpu_p95_cores: cpu.unwrap_or(0.0),
        memory_max_bytes: mem.map_or(0, |m| m.ceil() as u64),
        samples: pods.iter().filter_map(|(_, s)| s.cpu_samples).sum(),
        hours,
        oom_kills: pods.iter().filter(|(_, s)| s.oom_killed).count() as u32,
    })
}

/// Σ pod lifetimes ÷ the workload's span: 3 pods alive the whole window → 3.
fn average_replicas(pods: &[(&str, &PodSeries)], step: f64) -> Option<f64> {
    let spans: Vec<(f64, f64)> = pods
        .iter()
        .filter_map(|(_, s)| Some((s.first_seen?, s.last_seen?)))
        .filter(|(f, l)| l >= f)
        .collect();
    let first = spans.iter().map(|s| s.0).fold(None, min_opt)?;
    let last = spans.iter().map(|s| s.1).fold(None, max_opt)?;
    let total = last - first + step;
    if total <= 0.0 {
        return None;
    }
    let alive: f64 = spans.iter().map(|(f, l)| l - f + step).sum();
    Some(alive / total)
}

fn max_opt(acc: Option<f64>, v: f64) -> Option<f64> {
    Some(acc.map_or(v, |a| a.max(v)))
}

fn min_opt(acc: Option<f64>, v: f64) -> Option<f64> {
    Some(acc.map_or(v, |a| a.min(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names_to_workloads() {
        assert_eq!(workload_of_pod("cart-7d9f8c6b5-x2x7k"), "cart");
        assert_eq!(workload_of_pod("api-v2-5c8d7f9b64-zqw5t"), "api-v2");
        assert_eq!(workload_of_pod("db-0"), "db");
        assert_eq!(workload_of_pod("db-12"), "db");
        assert_eq!(workload_of_pod("node-agent-x7k2p"), "node-agent");
        assert_eq!(workload_of_pod("report-29012345-b9xkz"), "report");
        assert_eq!(workload_of_pod("migrate-4wz9c"), "migrate");
        assert_eq!(workload_of_pod("standalone"), "standalone");
        // `-aeiou` is not a generated suffix (vowels are never used).
        assert_eq!(workload_of_pod("web-aeiou"), "web-aeiou");
        assert_eq!(workload_of_pod("-0"), "-0");
    }

    fn s(cpu: f64, samples: u64, mem: f64, first: f64, last: f64) -> PodSeries {
        PodSeries {
            cpu_p95_cores: Some(cpu),
            cpu_samples: Some(samples),
            memory_max_bytes: Some(mem),
            first_seen: Some(first),
            last_seen: Some(last),
            oom_killed: false,
        }
    }

    fn key(ns: &str, pod: &str, c: &str) -> SeriesKey {
        (ns.into(), pod.into(), c.into())
    }

    #[test]
    fn churn_replicas_and_peaks() {
        let h = 3600.0;
        let mut m = HashMap::new();
        // Generation 1: two pods for 10h; generation 2: two pods for the next 10h.
        m.insert(
            key("shop", "cart-7d9f8c6b5-xxxxx", "istio-proxy"),
            s(0.1, 120, 50.0, 0.0, 10.0 * h - 300.0),
        );
        m.insert(
            key("shop", "cart-7d9f8c6b5-bbbbb", "istio-proxy"),
            s(0.2, 120, 60.0, 0.0, 10.0 * h - 300.0),
        );
        m.insert(
            key("shop", "cart-5c8d7f9b64-ccccc", "istio-proxy"),
            s(0.15, 120, 70.0, 10.0 * h, 20.0 * h - 300.0),
        );
        let mut oom = s(0.15, 120, 80.0, 10.0 * h, 20.0 * h - 300.0);
        oom.oom_killed = true;
        m.insert(key("shop", "cart-5c8d7f9b64-ddddd", "istio-proxy"), oom);
        // A pod that lived 5 minutes with a wild value does not set the P95.
        m.insert(
            key("shop", "cart-5c8d7f9b64-fffff", "istio-proxy"),
            s(9.0, 1, 10.0, 5.0 * h, 5.0 * h),
        );
        m.insert(
            key("shop", "db-0", "istio-proxy"),
            s(0.3, 2, 1.0, 0.0, 300.0),
        );
        let snap = aggregate(&m, 300.0, SnapshotMeta::default());
        let cart = snap.get("shop", "cart").unwrap();
        let p = &cart.containers["istio-proxy"];
        assert_eq!(p.cpu_p95_cores, 0.2);
        assert_eq!(p.memory_max_bytes, 80);
        assert_eq!(p.samples, 481);
        assert!((p.hours - (20.0 - 300.0 / h)).abs() < 1e-9);
        assert_eq!(p.oom_kills, 1);
        // 4 pods × 10h + a 5-minute pod over 20h ≈ 2.0
        let r = cart.avg_replicas.unwrap();
        assert!((r - 2.0).abs() < 0.01, "{r}");
        // Short-lived only: still used, confidence rules decide later.
        assert_eq!(
            snap.get("shop", "db").unwrap().containers["istio-proxy"].cpu_p95_cores,
            0.3
        );
    }
}
