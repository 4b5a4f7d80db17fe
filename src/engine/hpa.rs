//! HPA awareness (pure): an `autoscaling/v2` HorizontalPodAutoscaler with a `Resource`
//! metric of target type `Utilization` computes utilisation over the sum of ALL the pod's
//! container requests — the istio-proxy's included — so changing the proxy request moves
//! the point where it scales. This module says by how much, for one pod.
//!
//! The HPA controller's rule (`calculateRequests` in Kubernetes'
//! pkg/controller/podautoscaler/replica_calculator.go): requests of every regular container
//! and every restartable init container (`restartPolicy: Always`) are summed; a container
//! without a request for the resource makes the metric fail; with pod-level
//! `spec.resources.requests` the pod is judged on those. Usage is the pod's total, so
//! `utilisation = (uApp + uProxy) / (rApp + rProxy)`, with `u` the usage statistic the
//! sizer uses for requests (P95 CPU, max working set) per container from history.
//! `ContainerResource` metrics name one container: the proxy does not move them.

use crate::engine::quantity::{Cpu, Memory};
use crate::engine::sizing::{Resources, PROXY};
use crate::engine::usage::WorkloadUsage;
use crate::engine::workload::Workload;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashMap;

/// The two resources an HPA `Resource` metric can target that the proxy moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HpaResource {
    Cpu,
    Memory,
}

impl HpaResource {
    pub fn as_str(self) -> &'static str {
        match self {
            HpaResource::Cpu => "cpu",
            HpaResource::Memory => "memory",
        }
    }
}

/// What of an HPA matters here.
#[derive(Debug, Clone, PartialEq)]
pub struct Hpa {
    pub namespace: String,
    pub name: String,
    /// `scaleTargetRef.kind` and `.name`.
    pub target_kind: String,
    pub target_name: String,
    /// `Resource` metrics with a `Utilization` target: (resource, averageUtilization).
    pub utilization: Vec<(HpaResource, i32)>,
}

impl Hpa {
    /// The lean view of an `autoscaling/v2` HPA; `None` without a namespace or a name.
    pub fn from_api(h: &HorizontalPodAutoscaler) -> Option<Hpa> {
        let spec = &h.spec;
        let mut utilization = Vec::new();
        for m in spec.metrics.iter().flatten() {
            if m.type_ != "Resource" {
                continue;
            }
            let Some(r) = m.resource.as_ref() else {
                continue;
            };
            let res = match r.name.as_str() {
                "cpu" => HpaResource::Cpu,
                "memory" => HpaResource::Memory,
                _ => continue,
            };
            if r.target.type_ != "Utilization" {
                continue;
            }
            if let Some(u) = r.target.average_utilization.filter(|u| *u > 0) {
                utilization.push((res, u));
            }
        }
        Some(Hpa {
            namespace: h.metadata.namespace.clone()?,
            name: h.metadata.name.clone()?,
            target_kind: spec.scale_target_ref.kind.clone(),
            target_name: spec.scale_target_ref.name.clone(),
            utilization,
        })
    }

    /// Does this HPA scale `workload` (by `scaleTargetRef`, through the workload identity)?
    pub fn targets(&self, workload: &Workload) -> bool {
        self.namespace == workload.namespace
            && self.target_name == workload.name
            && self.target_kind == workload.kind.as_str()
    }
}

/// Every namespace's HPAs, as the pipeline reads them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HpaSnapshot {
    pub by_namespace: HashMap<String, Vec<Hpa>>,
    /// A complete list landed.
    pub synced: bool,
}

impl HpaSnapshot {
    pub fn build<'a>(hpas: impl IntoIterator<Item = &'a HorizontalPodAutoscaler>) -> Self {
        let mut by_namespace: HashMap<String, Vec<Hpa>> = HashMap::new();
        for h in hpas.into_iter().filter_map(Hpa::from_api) {
            by_namespace.entry(h.namespace.clone()).or_default().push(h);
        }
        for v in by_namespace.values_mut() {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        HpaSnapshot {
            by_namespace,
            synced: true,
        }
    }

    /// The HPAs that scale `workload`, by name.
    pub fn targeting<'a>(&'a self, workload: &'a Workload) -> impl Iterator<Item = &'a Hpa> {
        self.by_namespace
            .get(&workload.namespace)
            .into_iter()
            .flatten()
            .filter(move |h| h.targets(workload))
    }
}

/// What one HPA metric says of one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Utilisation before and after the proxy change, in percent.
    Judged {
        hpa: String,
        resource: HpaResource,
        target_utilization: i32,
        before: f64,
        after: f64,
        /// |after − before| ≥ the threshold (percentage points).
        shift: bool,
    },
    /// No verdict: why (no history for a container, a container without a request, ...).
    Unjudged {
        hpa: String,
        resource: HpaResource,
        why: String,
    },
}

impl Judgement {
    /// The `HpaShift` finding text (starts with `HpaShift`), for a shift.
    pub fn message(&self, app: Option<&str>) -> Option<String> {
        match self {
            Judgement::Judged {
                hpa,
                resource,
                target_utilization,
                before,
                after,
                shift: true,
            } => Some(format!(
                "HpaShift: HPA {hpa} {} {before:.0}% -> {after:.0}% of requests (target {target_utilization}%): use a ContainerResource metric on {}",
                resource.as_str(),
                app.unwrap_or("the app container")
            )),
            _ => None,
        }
    }

    /// The note for an HPA that could not be judged.
    pub fn note(&self) -> Option<String> {
        match self {
            Judgement::Unjudged { hpa, resource, why } => Some(format!(
                "HPA {hpa} ({} utilization) not judged: {why}",
                resource.as_str()
            )),
            _ => None,
        }
    }
}

/// The containers the HPA controller sums: regular ones and restartable init containers.
fn counted(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let mut out: Vec<&Container> = spec.containers.iter().collect();
    out.extend(
        spec.init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always")),
    );
    out
}

fn request_of(c: &Container, res: HpaResource) -> Result<Option<f64>, ()> {
    let Some(q) = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(res.as_str()))
    else {
        return Ok(None);
    };
    match res {
        HpaResource::Cpu => Cpu::parse(&q.0).map(|v| Some(v.0 as f64)).map_err(|_| ()),
        HpaResource::Memory => Memory::parse(&q.0)
            .map(|v| Some(v.0 as f64))
            .map_err(|_| ()),
    }
}

fn proxy_value(r: Resources, res: HpaResource) -> f64 {
    match res {
        HpaResource::Cpu => r.cpu.0 as f64,
        HpaResource::Memory => r.memory.0 as f64,
    }
}

/// Judge every `Resource`/`Utilization` metric of `hpa` for `pod`: `current` is the proxy
/// request the pod gets without us, `sized` ours; `usage` the workload's history. Units:
/// millicores and bytes (usage in cores is converted). `threshold` in percentage points.
pub fn judge(
    hpa: &Hpa,
    pod: &Pod,
    usage: Option<&WorkloadUsage>,
    current: Resources,
    sized: Resources,
    threshold: f64,
) -> Vec<Judgement> {
    hpa.utilization
        .iter()
        .map(|&(res, target)| judge_one(hpa, res, target, pod, usage, current, sized, threshold))
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn judge_one(
    hpa: &Hpa,
    res: HpaResource,
    target: i32,
    pod: &Pod,
    usage: Option<&WorkloadUsage>,
    current: Resources,
    sized: Resources,
    threshold: f64,
) -> Judgement {
    let unjudged = |why: String| Judgement::Unjudged {
        hpa: hpa.name.clone(),
        resource: res,
        why,
    };
    let containers = counted(pod);
    let mut names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    if !names.contains(&PROXY) {
        // Istio injects the proxy after admission: it will count too.
        names.push(PROXY);
    }
    // Usage: every counted container's statistic from history.
    let Some(usage) = usage else {
        return unjudged("no usage history for the workload".into());
    };
    let mut u = 0.0;
    for name in &names {
        let Some(c) = usage.containers.get(*name) else {
            return unjudged(format!("no usage history for container {name}"));
        };
        u += match res {
            HpaResource::Cpu => c.cpu_p95_cores * 1000.0,
            HpaResource::Memory => c.memory_max_bytes as f64,
        };
    }
    // Pod-level requests: the HPA divides by those, which the proxy does not change.
    let pod_level = pod
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|m| m.get(res.as_str()));
    let (r_before, r_after) = if let Some(q) = pod_level {
        let v = match res {
            HpaResource::Cpu => Cpu::parse(&q.0).map(|v| v.0 as f64),
            HpaResource::Memory => Memory::parse(&q.0).map(|v| v.0 as f64),
        };
        match v {
            Ok(v) => (v, v),
            Err(_) => {
                return unjudged(format!(
                    "pod-level {} request {:?} is malformed",
                    res.as_str(),
                    q.0
                ))
            }
        }
    } else {
        let mut r_app = 0.0;
        for c in containers.iter().filter(|c| c.name != PROXY) {
            match request_of(c, res) {
                Ok(Some(v)) => r_app += v,
                Ok(None) => {
                    return unjudged(format!(
                        "container {} has no {} request (the HPA cannot compute utilisation)",
                        c.name,
                        res.as_str()
                    ))
                }
                Err(()) => {
                    return unjudged(format!(
                        "container {} has a malformed {} request",
                        c.name,
                        res.as_str()
                    ))
                }
            }
        }
        (
            r_app + proxy_value(current, res),
            r_app + proxy_value(sized, res),
        )
    };
    if r_before <= 0.0 || r_after <= 0.0 {
        return unjudged(format!("the pod's {} requests sum to zero", res.as_str()));
    }
    let before = u / r_before * 100.0;
    let after = u / r_after * 100.0;
    Judgement::Judged {
        hpa: hpa.name.clone(),
        resource: res,
        target_utilization: target,
        before,
        after,
        shift: (after - before).abs() >= threshold,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantity::MI;
    use crate::engine::usage::ContainerUsage;
    use crate::engine::workload::WorkloadKind;
    use serde_json::json;

    fn hpa(metrics: serde_json::Value) -> Hpa {
        let h: HorizontalPodAutoscaler = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"},
                     "maxReplicas": 10, "metrics": metrics}
        }))
        .unwrap();
        Hpa::from_api(&h).unwrap()
    }

    fn usage(entries: &[(&str, f64, u64)]) -> WorkloadUsage {
        let mut w = WorkloadUsage::default();
        for (n, cpu, mem) in entries {
            w.containers.insert(
                n.to_string(),
                ContainerUsage {
                    cpu_p95_cores: *cpu,
                    memory_max_bytes: *mem,
                    samples: 500,
                    hours: 48.0,
                    oom_kills: 0,
                },
            );
        }
        w
    }

    fn pod(extra: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {"name": "cart-1", "namespace": "shop"},
            "spec": {"containers": [
                {"name": "app", "resources": {"requests": {"cpu": "400m", "memory": "256Mi"}}},
                {"name": "istio-proxy", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}
            ]}
        });
        if let Some(o) = extra.as_object() {
            for (k, v) in o {
                p["spec"][k] = v.clone();
            }
        }
        serde_json::from_value(p).unwrap()
    }

    fn res(cpu: u64, mem_mi: u64) -> Resources {
        Resources {
            cpu: Cpu(cpu),
            memory: Memory(mem_mi * MI),
        }
    }

    const CPU70: &str = r#"[{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]"#;

    #[test]
    fn smaller_proxy_request_raises_utilisation() {
        let h = hpa(serde_json::from_str(CPU70).unwrap());
        let u = usage(&[("app", 0.3, 0), ("istio-proxy", 0.05, 0)]);
        // u = 300 + 50 = 350m; before r = 400 + 100 = 500m → 70%; after 400 + 25 → 82.35%.
        let j = judge(
            &h,
            &pod(json!({})),
            Some(&u),
            res(100, 128),
            res(25, 40),
            10.0,
        );
        let Judgement::Judged {
            before,
            after,
            shift,
            target_utilization,
            ..
        } = &j[0]
        else {
            panic!("{j:?}")
        };
        assert!((before - 70.0).abs() < 1e-9);
        assert!((after - 350.0 / 425.0 * 100.0).abs() < 1e-9);
        assert!(*shift);
        assert_eq!(*target_utilization, 70);
        assert!(j[0].message(Some("app")).unwrap().starts_with("HpaShift"));
        // Under the threshold: judged, no shift.
        let j = judge(
            &h,
            &pod(json!({})),
            Some(&u),
            res(100, 128),
            res(90, 40),
            10.0,
        );
        assert!(matches!(j[0], Judgement::Judged { shift: false, .. }));
    }

    #[test]
    fn restartable_init_containers_count_and_others_do_not() {
        let h = hpa(serde_json::from_str(CPU70).unwrap());
        let extra = json!({"initContainers": [
            {"name": "log", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "setup", "resources": {"requests": {"cpu": "900m"}}}
        ]});
        let u = usage(&[("app", 0.3, 0), ("istio-proxy", 0.05, 0), ("log", 0.05, 0)]);
        // u = 400m; before 400+100+100 = 600 → 66.67%; after 400+100+20 = 520 → 76.92%.
        let j = judge(&h, &pod(extra), Some(&u), res(100, 1), res(20, 1), 10.0);
        let Judgement::Judged { before, after, .. } = j[0] else {
            panic!("{j:?}")
        };
        assert!((before - 400.0 / 600.0 * 100.0).abs() < 1e-9);
        assert!((after - 400.0 / 520.0 * 100.0).abs() < 1e-9);
    }

    #[test]
    fn pod_level_requests_are_not_moved() {
        let h = hpa(serde_json::from_str(CPU70).unwrap());
        let u = usage(&[("app", 0.3, 0), ("istio-proxy", 0.05, 0)]);
        let extra = json!({"resources": {"requests": {"cpu": "1"}}});
        let j = judge(&h, &pod(extra), Some(&u), res(100, 1), res(25, 1), 10.0);
        assert_eq!(
            j[0],
            Judgement::Judged {
                hpa: "web".into(),
                resource: HpaResource::Cpu,
                target_utilization: 70,
                before: 35.0,
                after: 35.0,
                shift: false
            }
        );
    }

    #[test]
    fn missing_usage_or_request_is_unjudged_with_why() {
        let h = hpa(serde_json::from_str(CPU70).unwrap());
        let u = usage(&[("istio-proxy", 0.05, 0)]);
        let j = judge(&h, &pod(json!({})), Some(&u), res(100, 1), res(25, 1), 10.0);
        assert!(j[0].note().unwrap().contains("container app"), "{j:?}");
        let j = judge(&h, &pod(json!({})), None, res(100, 1), res(25, 1), 10.0);
        assert!(j[0].note().unwrap().contains("no usage history"), "{j:?}");
        let p: Pod =
            serde_json::from_value(json!({"spec": {"containers": [{"name": "app"}]}})).unwrap();
        let u = usage(&[("app", 0.3, 0), ("istio-proxy", 0.05, 0)]);
        let j = judge(&h, &p, Some(&u), res(100, 1), res(25, 1), 10.0);
        assert!(j[0].note().unwrap().contains("no cpu request"), "{j:?}");
    }

    #[test]
    fn only_resource_utilization_metrics_count() {
        let h = hpa(json!([
            {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                "target": {"type": "Utilization", "averageUtilization": 60}}},
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "1Gi"}}},
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 80}}}
        ]));
        assert_eq!(h.utilization, vec![(HpaResource::Memory, 80)]);
        let w = Workload {
            namespace: "shop".into(),
            kind: WorkloadKind::Deployment,
            name: "cart".into(),
        };
        assert!(h.targets(&w));
        let other = Workload {
            kind: WorkloadKind::StatefulSet,
            ..w.clone()
        };
        assert!(!h.targets(&other));
    }
}
