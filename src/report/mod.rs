//! `sidecar-sizer report` (front end 3, DESIGN §1): live pods listed from the cluster,
//! each through the one pipeline as if its namespace were in `enforce`, grouped by
//! workload with the admission identity; current vs sized per workload, totals per
//! namespace and for the cluster, HpaShift findings.
//!
//! Streaming: pods are read one page at a time and folded into per-workload accumulators
//! at once; no pod is kept after its page.

pub mod format;
pub mod list;

use crate::engine::constraints::ClusterSnapshot;
use crate::engine::hpa::{HpaSnapshot, Judgement};
use crate::engine::pipeline::{self, PodContext, Settings, Snapshots, Verdict, ANN_MODE};
use crate::engine::quantity::{format_cpu, format_memory, Cpu, Memory};
use crate::engine::sizing::{FindingKind, PROXY};
use crate::engine::spec::SpecStore;
use crate::engine::usage::UsageSnapshot;
use crate::engine::workload;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Notes kept per workload at most (the rest are counted).
const MAX_NOTES: usize = 20;

/// The proxy's four values: millicores and bytes; `None` = absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Values {
    pub cpu_request: Option<u64>,
    pub memory_request: Option<u64>,
    pub cpu_limit: Option<u64>,
    pub memory_limit: Option<u64>,
}

impl Values {
    pub fn quantities(&self) -> [Option<String>; 4] {
        [
            self.cpu_request.map(format_cpu),
            self.memory_request.map(format_memory),
            self.cpu_limit.map(format_cpu),
            self.memory_limit.map(format_memory),
        ]
    }
}

/// Sums over pods (an absent value counts 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sums {
    pub cpu_request_millicores: u64,
    pub memory_request_bytes: u64,
    pub cpu_limit_millicores: u64,
    pub memory_limit_bytes: u64,
}

impl Sums {
    fn add(&mut self, v: &Values) {
        self.cpu_request_millicores += v.cpu_request.unwrap_or(0);
        self.memory_request_bytes += v.memory_request.unwrap_or(0);
        self.cpu_limit_millicores += v.cpu_limit.unwrap_or(0);
        self.memory_limit_bytes += v.memory_limit.unwrap_or(0);
    }

    fn merge(&mut self, o: &Sums) {
        self.cpu_request_millicores += o.cpu_request_millicores;
        self.memory_request_bytes += o.memory_request_bytes;
        self.cpu_limit_millicores += o.cpu_limit_millicores;
        self.memory_limit_bytes += o.memory_limit_bytes;
    }
}

/// An HpaShift finding's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaShift {
    pub hpa: String,
    pub resource: &'static str,
    pub target_utilization: i32,
    pub before: f64,
    pub after: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FindingOut {
    pub kind: &'static str,
    pub message: String,
    pub hpa: Option<HpaShift>,
}

/// One workload.
#[derive(Debug, Clone)]
pub struct Row {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub mode: String,
    pub pods: u64,
    pub current: Values,
    pub current_varies: bool,
    pub sized: Option<Values>,
    pub not_sized: Option<String>,
    pub source: String,
    pub reasons: Vec<String>,
    pub notes: Vec<String>,
    pub findings: Vec<FindingOut>,
    /// Summed over the workload's pods (for totals).
    pub sum_current: Sums,
    pub sum_sized: Sums,
}

#[derive(Debug, Clone)]
pub struct NamespaceTotals {
    pub name: String,
    pub mode: String,
    pub pods: u64,
    pub current: Sums,
    pub sized: Sums,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub workloads: Vec<Row>,
    pub pods: u64,
    pub current: Sums,
    pub sized: Sums,
    pub namespaces: Vec<NamespaceTotals>,
    pub unreadable: Vec<String>,
    /// Pods listed (running or pending), and those of them without an istio-proxy.
    pub pods_listed: u64,
    pub pods_without_proxy: u64,
    /// Report-wide notes (what could not be read and what that means).
    pub notes: Vec<String>,
}

/// A namespace's mode from its `sidecar-sizer.io/mode` label.
pub fn mode_of(labels: Option<&BTreeMap<String, String>>) -> &'static str {
    match labels.and_then(|l| l.get(ANN_MODE)).map(String::as_str) {
        Some("enforce") => "enforce",
        Some("dry-run") => "dry-run",
        _ => "off",
    }
}

/// The snapshots and flags every pod is judged with.
pub struct Context<'a> {
    pub settings: &'a Settings,
    pub specs: &'a SpecStore,
    pub usage: &'a UsageSnapshot,
    pub cluster: &'a ClusterSnapshot,
    pub hpas: &'a HpaSnapshot,
}

/// What the newest pod of one current-values variant said.
#[derive(Debug, Clone)]
struct Summary {
    sized: Option<Values>,
    not_sized: Option<String>,
    source: String,
    reasons: Vec<String>,
    notes: Vec<String>,
    findings: Vec<FindingOut>,
}

#[derive(Debug, Clone)]
struct Variant {
    current: Values,
    count: u64,
    newest: (Option<Time>, String),
    summary: Summary,
}

#[derive(Debug, Clone, Default)]
struct Acc {
    pods: u64,
    variants: Vec<Variant>,
    notes: BTreeSet<String>,
    dropped_notes: u64,
    sum_current: Sums,
    sum_sized: Sums,
}

impl Acc {
    fn note(&mut self, n: String) {
        if self.notes.len() < MAX_NOTES || self.notes.contains(&n) {
            self.notes.insert(n);
        } else {
            self.dropped_notes += 1;
        }
    }
}

/// Pods folded into workloads, one page at a time.
#[derive(Debug, Default)]
pub struct Aggregator {
    /// (namespace, kind, name) → accumulator.
    workloads: HashMap<(String, String, String), Acc>,
    pub pods_listed: u64,
    pub pods_without_proxy: u64,
}

fn proxy_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .find(|c| c.name == PROXY)
        .or_else(|| {
            spec.init_containers
                .iter()
                .flatten()
                .find(|c| c.name == PROXY && c.restart_policy.as_deref() == Some("Always"))
        })
}

/// The proxy container's four values; malformed quantities are absent, with a note each.
fn current_values(c: &Container, notes: &mut Vec<String>) -> Values {
    let r = c.resources.as_ref();
    let get =
        |m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         key: &str,
         what: &str,
         notes: &mut Vec<String>| {
            let q = m?.get(key)?;
            let parsed = if key == "cpu" {
                Cpu::parse(&q.0).map(|v| v.0)
            } else {
                Memory::parse(&q.0).map(|v| v.0)
            };
            match parsed {
                Ok(v) => Some(v),
                Err(e) => {
                    notes.push(format!(
                        "istio-proxy {what} {:?} is not a quantity ({e}); counted as absent",
                        q.0
                    ));
                    None
                }
            }
        };
    let req = r.and_then(|r| r.requests.as_ref());
    let lim = r.and_then(|r| r.limits.as_ref());
    Values {
        cpu_request: get(req, "cpu", "cpu request", notes),
        memory_request: get(req, "memory", "memory request", notes),
        cpu_limit: get(lim, "cpu", "cpu limit", notes),
        memory_limit: get(lim, "memory", "memory limit", notes),
    }
}

fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl Aggregator {
    /// Fold one listed pod in.
    pub fn add(&mut self, pod: &Pod, ctx: &Context<'_>) {
        if finished(pod) {
            return;
        }
        self.pods_listed += 1;
        let Some(proxy) = proxy_container(pod) else {
            self.pods_without_proxy += 1;
            return;
        };
        let mut notes = Vec::new();
        let current = current_values(proxy, &mut notes);
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let snaps = Snapshots {
            specs: ctx.specs,
            usage: ctx.usage,
            cluster: ctx.cluster,
            mesh: None,
            hpas: Some(ctx.hpas),
        };
        let pctx = PodContext {
            namespace: Some(&namespace),
        };
        let verdict = pipeline::run(pod, &pctx, ctx.settings, &snaps);
        let mut wl = match &verdict {
            Verdict::Sized(s) => Some(s.workload.clone()),
            Verdict::NotSized { workload, .. } => workload.clone(),
            Verdict::Skip { .. } => workload::identify(pod, Some(&namespace)).ok(),
        }
        .map(|w| (w.kind.as_str().to_string(), w.name));
        if wl.is_none() {
            notes.push("workload could not be identified: counted under the pod's name".into());
            let name = pod
                .metadata
                .name
                .clone()
                .unwrap_or_else(|| "(unnamed)".into());
            wl = Some(("Pod".into(), name));
        }
        let (kind, name) = wl.unwrap_or_default();
        let summary = summarize(verdict, notes);
        let sized_side = summary.sized.unwrap_or(current);
        let acc = self.workloads.entry((namespace, kind, name)).or_default();
        acc.pods += 1;
        acc.sum_current.add(&current);
        acc.sum_sized.add(&sized_side);
        for n in &summary.notes {
            acc.note(n.clone());
        }
        let key = (
            pod.metadata.creation_timestamp.clone(),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        match acc.variants.iter_mut().find(|v| v.current == current) {
            Some(v) => {
                v.count += 1;
                if key > v.newest {
                    v.newest = key;
                    v.summary = summary;
                }
            }
            None => acc.variants.push(Variant {
                current,
                count: 1,
                newest: key,
                summary,
            }),
        }
    }

    /// Another scope's pods (disjoint namespaces).
    pub fn merge(&mut self, other: Aggregator) {
        self.workloads.extend(other.workloads);
        self.pods_listed += other.pods_listed;
        self.pods_without_proxy += other.pods_without_proxy;
    }

    /// Rows, namespace and cluster totals. `modes`: namespace → mode (absent: unknown).
    pub fn finish(self, modes: &HashMap<String, String>, unreadable: Vec<String>) -> Report {
        let mut rows: Vec<Row> = Vec::with_capacity(self.workloads.len());
        for ((namespace, kind, name), acc) in self.workloads {
            let Some(best) = acc
                .variants
                .iter()
                .max_by(|a, b| a.count.cmp(&b.count).then_with(|| a.newest.cmp(&b.newest)))
            else {
                continue;
            };
            let s = best.summary.clone();
            let mut notes: Vec<String> = acc.notes.iter().cloned().collect();
            if acc.dropped_notes > 0 {
                notes.push(format!("{} more notes not shown", acc.dropped_notes));
            }
            rows.push(Row {
                mode: modes
                    .get(&namespace)
                    .cloned()
                    .unwrap_or_else(|| "unknown".into()),
                namespace,
                kind,
                name,
                pods: acc.pods,
                current: best.current,
                current_varies: acc.variants.len() > 1,
                sized: s.sized,
                not_sized: s.not_sized,
                source: s.source,
                reasons: s.reasons,
                notes,
                findings: s.findings,
                sum_current: acc.sum_current,
                sum_sized: acc.sum_sized,
            });
        }
        rows.sort_by(|a, b| {
            (&a.namespace, &a.kind, &a.name).cmp(&(&b.namespace, &b.kind, &b.name))
        });
        let mut namespaces: Vec<NamespaceTotals> = Vec::new();
        let mut report = Report {
            pods_listed: self.pods_listed,
            pods_without_proxy: self.pods_without_proxy,
            unreadable,
            ..Report::default()
        };
        for r in &rows {
            if namespaces.last().map(|n| &n.name) != Some(&r.namespace) {
                namespaces.push(NamespaceTotals {
                    name: r.namespace.clone(),
                    mode: r.mode.clone(),
                    pods: 0,
                    current: Sums::default(),
                    sized: Sums::default(),
                });
            }
            if let Some(n) = namespaces.last_mut() {
                n.pods += r.pods;
                n.current.merge(&r.sum_current);
                n.sized.merge(&r.sum_sized);
            }
            report.pods += r.pods;
            report.current.merge(&r.sum_current);
            report.sized.merge(&r.sum_sized);
        }
        report.workloads = rows;
        report.namespaces = namespaces;
        report
    }
}

fn summarize(verdict: Verdict, mut notes: Vec<String>) -> Summary {
    match verdict {
        Verdict::Skip { reason } => Summary {
            sized: None,
            not_sized: Some(format!("skipped: {reason}")),
            source: String::new(),
            reasons: Vec::new(),
            notes,
            findings: Vec::new(),
        },
        Verdict::NotSized {
            error,
            decision,
            warnings,
            ..
        } => {
            notes.extend(warnings.iter().map(|w| strip(w).to_string()));
            let (source, reasons, findings) = match decision {
                Some(d) => (
                    d.source.as_str().to_string(),
                    d.reasons,
                    d.findings
                        .into_iter()
                        .map(|f| FindingOut {
                            kind: f.kind.as_str(),
                            message: f.message,
                            hpa: None,
                        })
                        .collect(),
                ),
                None => (String::new(), Vec::new(), Vec::new()),
            };
            Summary {
                sized: None,
                not_sized: Some(error.to_string()),
                source,
                reasons,
                notes,
                findings,
            }
        }
        Verdict::Sized(s) => {
            let s = *s;
            let mut findings: Vec<FindingOut> = s
                .decision
                .findings
                .iter()
                .filter(|f| f.kind != FindingKind::HpaShift)
                .map(|f| FindingOut {
                    kind: f.kind.as_str(),
                    message: f.message.clone(),
                    hpa: None,
                })
                .collect();
            let mut shifts = s
                .decision
                .findings
                .iter()
                .filter(|f| f.kind == FindingKind::HpaShift);
            for j in &s.hpa {
                match j {
                    Judgement::Judged {
                        hpa,
                        resource,
                        target_utilization,
                        before,
                        after,
                        shift: true,
                    } => {
                        let message = shifts.next().map(|f| f.message.clone()).unwrap_or_default();
                        findings.push(FindingOut {
                            kind: FindingKind::HpaShift.as_str(),
                            message,
                            hpa: Some(HpaShift {
                                hpa: hpa.clone(),
                                resource: resource.as_str(),
                                target_utilization: *target_utilization,
                                before: *before,
                                after: *after,
                            }),
                        });
                    }
                    Judgement::Unjudged { .. } => notes.extend(j.note()),
                    Judgement::Judged { .. } => {}
                }
            }
            // Warnings that are not findings (spec errors, constraint adjustments, kept
            // explicit annotations) are notes.
            for w in &s.warnings {
                let w = strip(w);
                if !s.decision.findings.iter().any(|f| f.message == w) {
                    notes.push(w.to_string());
                }
            }
            let (req, lim) = (s.planned.requests, s.planned.limits);
            Summary {
                sized: Some(Values {
                    cpu_request: Some(req.cpu.0),
                    memory_request: Some(req.memory.0),
                    cpu_limit: Some(lim.cpu.0),
                    memory_limit: Some(lim.memory.0),
                }),
                not_sized: None,
                source: s.decision.source.as_str().to_string(),
                reasons: s.decision.reasons,
                notes,
                findings,
            }
        }
    }
}

fn strip(w: &str) -> &str {
    w.strip_prefix("sidecar-sizer: ").unwrap_or(w)
}

pub use run::run;

mod run;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, created: &str, cpu: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "creationTimestamp": created,
                         "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "app"},
                {"name": "istio-proxy", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn most_common_values_win_and_ties_go_to_the_newest_pod() {
        let (settings, specs, usage, cluster, hpas) = (
            Settings::default(),
            SpecStore::default(),
            UsageSnapshot::default(),
            ClusterSnapshot::default(),
            HpaSnapshot::default(),
        );
        let ctx = Context {
            settings: &settings,
            specs: &specs,
            usage: &usage,
            cluster: &cluster,
            hpas: &hpas,
        };
        let mut agg = Aggregator::default();
        agg.add(&pod("a", "2024-01-02T00:00:00Z", "300m"), &ctx);
        agg.add(&pod("b", "2024-01-03T00:00:00Z", "200m"), &ctx);
        let r = Aggregator {
            workloads: agg.workloads.clone(),
            ..Aggregator::default()
        }
        .finish(&HashMap::new(), vec![]);
        assert_eq!(r.workloads[0].current.cpu_request, Some(200), "tie: newest");
        assert!(r.workloads[0].current_varies);
        assert_eq!(r.workloads[0].mode, "unknown");
        agg.add(&pod("c", "2024-01-01T00:00:00Z", "300m"), &ctx);
        let r = agg.finish(&HashMap::new(), vec![]);
        assert_eq!(r.workloads[0].current.cpu_request, Some(300), "most common");
        assert_eq!(r.workloads[0].pods, 3);
        assert_eq!(r.current.cpu_request_millicores, 800);
        // Pods that ended are not listed.
        let mut done = pod("d", "2024-01-04T00:00:00Z", "1");
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut agg = Aggregator::default();
        agg.add(&done, &ctx);
        assert_eq!(agg.pods_listed, 0);
    }
}
