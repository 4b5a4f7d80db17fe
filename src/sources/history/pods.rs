//! Per-pod series → per-workload usage, in Rust (DESIGN §7: Prometheus is asked for
//! `by (namespace, pod, container)` aggregates; the pod → workload mapping happens here).

use super::{ContainerUsage, SnapshotMeta, UsageSnapshot};
use crate::engine::workload;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
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

/// What kube-state-metrics says of a pod (`kube_pod_owner{owner_is_controller="true"}`,
/// `kube_pod_labels`), when Prometheus has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodFacts {
    /// The controller owner: (kind, name).
    pub owner: Option<(String, String)>,
    /// The pod labels that name workloads (`app.kubernetes.io/name`, `app`,
    /// `pod-template-hash`, `rollouts-pod-template-hash`).
    pub labels: BTreeMap<String, String>,
}

pub type PodKey = (String, String);

/// The workload of pod `pod` in `namespace`, by the SAME function admission uses
/// ([`workload::identify`]), on the pod's metadata as far as history knows it: the
/// controller owner and labels from kube-state-metrics when present, else what the pod name
/// tells (controllers name pods `<replicaset>-<5>`, `<job>-<5>`, `<daemonset>-<5>`,
/// `<statefulset>-<ordinal>`; a ReplicaSet is `<deployment>-<pod-template-hash>`, a
/// CronJob's Job `<cronjob>-<minutes>`). A name ending in `-<5 generated chars>` came from a
/// `generateName`.
pub fn workload_of(namespace: &str, pod: &str, facts: Option<&PodFacts>) -> String {
    let meta = synthetic_meta(pod, facts);
    let p = Pod {
        metadata: meta,
        ..Pod::default()
    };
    match workload::identify(&p, Some(namespace)) {
        Ok(w) => w.name,
        Err(_) => pod.to_string(),
    }
}

fn synthetic_meta(pod: &str, facts: Option<&PodFacts>) -> ObjectMeta {
    let mut meta = ObjectMeta {
        name: Some(pod.to_string()),
        ..ObjectMeta::default()
    };
    let generated = pod
        .rsplit_once('-')
        .filter(|(rest, suffix)| !rest.is_empty() && suffix.len() == 5 && is_safe(suffix))
        .map(|(rest, _)| rest);
    if let Some(rest) = generated {
        meta.generate_name = Some(format!("{rest}-"));
    }
    let owner = |kind: &str, name: &str| OwnerReference {
        api_version: String::new(),
        kind: kind.to_string(),
        name: name.to_string(),
        uid: String::new(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    if let Some(f) = facts {
        let mut labels = f.labels.clone();
        // kube-state-metrics v2 exports no pod labels unless `--metric-labels-allowlist`
        // names them: a ReplicaSet owner without its hash label would name the ReplicaSet,
        // not the Deployment. The hash is the owner name's generated last segment.
        if let Some((kind, name)) = &f.owner {
            let hashed = labels.contains_key("pod-template-hash")
                || labels.contains_key("rollouts-pod-template-hash");
            if kind == "ReplicaSet" && !hashed {
                if let Some((_, hash)) = name
                    .rsplit_once('-')
                    .filter(|(b, h)| !b.is_empty() && (6..=10).contains(&h.len()) && is_safe(h))
                {
                    labels.insert("pod-template-hash".to_string(), hash.to_string());
                }
            }
        }
        if !labels.is_empty() {
            meta.labels = Some(labels);
        }
        if let Some((kind, name)) = &f.owner {
            meta.owner_references = Some(vec![owner(kind, name)]);
        }
        return meta;
    }
    // Name only: infer the owner the way controllers name their pods.
    let mut labels = BTreeMap::new();
    let inferred = if let Some(rest) = generated {
        match rest.rsplit_once('-') {
            Some((base, mid)) if !base.is_empty() && all_digits(mid) && mid.len() >= 8 => {
                Some(owner("Job", rest))
            }
            Some((base, mid))
                if !base.is_empty() && (6..=10).contains(&mid.len()) && is_safe(mid) =>
            {
                labels.insert("pod-template-hash".to_string(), mid.to_string());
                Some(owner("ReplicaSet", rest))
            }
            _ => Some(owner("DaemonSet", rest)),
        }
    } else {
        match pod.rsplit_once('-') {
            Some((base, ordinal)) if !base.is_empty() && all_digits(ordinal) => {
                Some(owner("StatefulSet", base))
            }
            _ => None,
        }
    };
    if !labels.is_empty() {
        meta.labels = Some(labels);
    }
    meta.owner_references = inferred.map(|o| vec![o]);
    meta
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

/// Fold per-pod series into per-workload usage. `step_seconds` is the query step; `facts`
/// what kube-state-metrics told of each pod (may be empty).
pub fn aggregate(
    series: &HashMap<SeriesKey, PodSeries>,
    facts: &HashMap<PodKey, PodFacts>,
    step_seconds: f64,
    meta: SnapshotMeta,
) -> UsageSnapshot {
    // One identity per pod, computed once.
    let mut names: HashMap<(&str, &str), String> = HashMap::new();
    for (ns, pod, _) in series.keys() {
        names
            .entry((ns.as_str(), pod.as_str()))
            .or_insert_with(|| workload_of(ns, pod, facts.get(&(ns.clone(), pod.clone()))));
    }
    // (namespace, workload) → container → [(pod, series)]
    let mut grouped: BTreeMap<(&str, &str), ByContainer<'_>> = BTreeMap::new();
    for ((ns, pod, container), s) in series {
        let Some(wl) = names.get(&(ns.as_str(), pod.as_str())) else {
            continue;
        };
        grouped
            .entry((ns.as_str(), wl.as_str()))
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

    fn name_only(pod: &str) -> String {
        workload_of("ns", pod, None)
    }

    #[test]
    fn pod_names_to_workloads() {
        assert_eq!(name_only("cart-7d9f8c6b5-x2x7k"), "cart");
        assert_eq!(name_only("api-v2-5c8d7f9b64-zqw5t"), "api-v2");
        assert_eq!(name_only("db-0"), "db");
        assert_eq!(name_only("db-12"), "db");
        assert_eq!(name_only("node-agent-x7k2p"), "node-agent");
        assert_eq!(name_only("report-29012345-b9xkz"), "report");
        assert_eq!(name_only("migrate-4wz9c"), "migrate");
        // A Job named with a few digits is not a CronJob's (admission agrees).
        assert_eq!(name_only("backup-42-b9xkz"), "backup-42");
        assert_eq!(name_only("standalone"), "standalone");
        // `-aeiou` is not a generated suffix (vowels are never used).
        assert_eq!(name_only("web-aeiou"), "web-aeiou");
        assert_eq!(name_only("-0"), "-0");
    }

    #[test]
    fn kube_state_metrics_facts_win_over_the_name() {
        // A bare pod labelled app=cart: admission names it `cart`, so does history.
        let facts = PodFacts {
            owner: None,
            labels: [("app".to_string(), "cart".to_string())].into(),
        };
        assert_eq!(workload_of("ns", "cart-debug", Some(&facts)), "cart");
        // An Argo Rollout's pod.
        let facts = PodFacts {
            owner: Some(("ReplicaSet".into(), "checkout-6c9f7d8b4".into())),
            labels: [(
                "rollouts-pod-template-hash".to_string(),
                "6c9f7d8b4".to_string(),
            )]
            .into(),
        };
        assert_eq!(
            workload_of("ns", "checkout-6c9f7d8b4-x2x7k", Some(&facts)),
            "checkout"
        );
        // A default kube-state-metrics (no label allowlist): owner only, no labels.
        let facts = PodFacts {
            owner: Some(("ReplicaSet".into(), "cart-7d9f8c6b5".into())),
            labels: BTreeMap::new(),
        };
        assert_eq!(
            workload_of("ns", "cart-7d9f8c6b5-x2x7k", Some(&facts)),
            "cart"
        );
        let facts = PodFacts {
            owner: Some(("StatefulSet".into(), "db".into())),
            labels: BTreeMap::new(),
        };
        assert_eq!(workload_of("ns", "db-0", Some(&facts)), "db");
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
        let snap = aggregate(&m, &HashMap::new(), 300.0, SnapshotMeta::default());
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
