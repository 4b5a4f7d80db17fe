//! The one pipeline every front end calls (DESIGN §1): pod (or pod template + owner
//! context) + snapshots + policy → skip | not sized | sized. The webhook, `review` and
//! `report` differ only in how they get the pod and what they do with the answer.

use crate::engine::constraints::ClusterSnapshot;
use crate::engine::hpa::{self, HpaSnapshot};
use crate::engine::mesh::MeshSnapshot;
use crate::engine::patch::{self, Planned, ANN_CPU, ANN_CPU_LIMIT, ANN_MEMORY, ANN_MEMORY_LIMIT};
use crate::engine::quantity::{Cpu, Memory};
use crate::engine::sizing::{self, Decision, Finding, Inputs, MeshInput, Policy, Resources, PROXY};
use crate::engine::spec::{Declared, SpecStore};
use crate::engine::usage::UsageSnapshot;
use crate::engine::workload::{Workload, WorkloadError};
use crate::engine::{constraints, istio, workload};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

pub const ANN_MODE: &str = "sidecar-sizer.io/mode";
pub const ANN_SKIP: &str = "sidecar-sizer.io/skip";

/// The snapshots a decision reads, swapped in by the background sources.
#[derive(Debug, Clone, Copy)]
pub struct Snapshots<'a> {
    pub specs: &'a SpecStore,
    pub usage: &'a UsageSnapshot,
    pub cluster: &'a ClusterSnapshot,
    /// Mesh scope and memory model (`--mesh-scope`); None or not yet listed: unused.
    pub mesh: Option<&'a MeshSnapshot>,
    /// HPAs (`serve --hpa-aware`, `report`): `None` means HPAs are not looked at.
    pub hpas: Option<&'a HpaSnapshot>,
}

/// The static part of the context (flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub policy: Policy,
    pub patch: patch::PatchOptions,
    /// `serve --mode dry-run`: every path review-only.
    pub dry_run_everywhere: bool,
}

pub(crate) fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// DESIGN §4 skip rules: our own `sidecar-sizer.io/skip` (case-insensitive booleans; a
/// value that is not a boolean skips too: the owner meant something), then Istio's own rule
/// (label over annotation, Istio's value set, hostNetwork) via [`istio::injection`].
pub fn skip_reason(pod: &Pod) -> Option<String> {
    if let Some(v) = annotation(pod, ANN_SKIP) {
        match istio::parse_bool(v) {
            Some(true) => return Some(format!("{ANN_SKIP}: {v:?}")),
            Some(false) => {}
            None => return Some(format!("{ANN_SKIP}: {v:?} is not a boolean; skipped")),
        }
    }
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
    istio::injection(
        pod.metadata.labels.as_ref(),
        pod.metadata.annotations.as_ref(),
        host_network,
    )
    .skip_reason()
}

/// First non-proxy container and its requests as written in the pod.
fn app_container(pod: &Pod) -> (Option<&str>, Declared) {
    let Some(c) = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name != PROXY))
    else {
        return (None, Declared::default());
    };
    let req = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let get = |k: &str| req.and_then(|m| m.get(k)).map(|q| q.0.as_str());
    (
        Some(c.name.as_str()),
        Declared {
            cpu: get("cpu").and_then(|v| Cpu::parse(v).ok()),
            memory: get("memory").and_then(|v| Memory::parse(v).ok()),
        },
    )
}

/// How the caller knows the pod.
#[derive(Debug, Clone, Default)]
pub struct PodContext<'a> {
    /// `request.namespace` (the pod's own `metadata.namespace` may be empty on CREATE).
    pub namespace: Option<&'a str>,
}

/// Why a pod that is not skipped is not sized. One variant per reason; `metric_label`
/// names it in `sidecar_sizer_not_sized_total{reason}` and logs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NotSized {
    #[error("{0}")]
    Identity(#[from] WorkloadError),
    #[error("{0}")]
    Patch(#[from] patch::PatchError),
    #[error("{object}: {constraint}")]
    Constraint { object: String, constraint: String },
}

impl NotSized {
    pub fn metric_label(&self) -> &'static str {
        match self {
            NotSized::Identity(_) => "identity",
            NotSized::Patch(patch::PatchError::DuplicateProxy(_)) => "duplicate-proxy",
            NotSized::Patch(patch::PatchError::BadAnnotation { .. }) => "bad-annotation",
            NotSized::Patch(patch::PatchError::ExplicitConflict { .. }) => "explicit-conflict",
            NotSized::Patch(_) => "invalid-patch",
            NotSized::Constraint { object, .. } if object.starts_with("ResourceQuota") => {
                "resourcequota"
            }
            NotSized::Constraint { object, .. } if object.starts_with("LimitRange") => "limitrange",
            NotSized::Constraint { .. } => "pod-resources",
        }
    }
}

/// A pod we size: the decision, the patch (validated on the pod) and what to tell.
#[derive(Debug, Clone)]
pub struct Sized {
    pub workload: Workload,
    pub decision: Decision,
    pub planned: Planned,
    /// The touched parts of the patched pod.
    pub patched: patch::Patched,
    /// Spec errors, constraint adjustments, findings, explicit annotations kept.
    pub warnings: Vec<String>,
    /// The pod asks for review only (`sidecar-sizer.io/mode: dry-run`).
    pub dry_run: bool,
    /// What each HPA scaling the workload says of the change (with `Snapshots::hpas`).
    pub hpa: Vec<hpa::Judgement>,
}

/// What the pipeline says of one pod.
#[derive(Debug, Clone)]
pub enum Verdict {
    /// A skip rule matched: allowed, no patch; the reason is logged and counted.
    Skip {
        reason: String,
    },
    /// Not sized: allowed, no patch, a warning.
    NotSized {
        workload: Option<Workload>,
        error: NotSized,
        /// The decision, when one was made before the failure.
        decision: Option<Box<Decision>>,
        warnings: Vec<String>,
    },
    Sized(Box<Sized>),
}

/// THE pipeline (DESIGN §1): skip rules (ours, Istio's) → workload identity → decide() per
/// resource → fit into the namespace's LimitRanges, quotas and pod-level resources →
/// patch, validated on the pod. Pure: the snapshots are arguments.
pub fn run(pod: &Pod, ctx: &PodContext<'_>, settings: &Settings, snaps: &Snapshots<'_>) -> Verdict {
    if let Some(reason) = skip_reason(pod) {
        return Verdict::Skip { reason };
    }
    let dry_run = annotation(pod, ANN_MODE).is_some_and(|m| m.eq_ignore_ascii_case("dry-run"));
    let workload = match workload::identify(pod, ctx.namespace) {
        Ok(w) => w,
        Err(e) => {
            return Verdict::NotSized {
                workload: None,
                error: e.into(),
                decision: None,
                warnings: Vec::new(),
            }
        }
    };
    let mut warnings = Vec::new();
    let entry = snaps.specs.get(&workload.namespace, &workload.name);
    if let Some(e) = entry {
        if let Some(err) = &e.error {
            let kept = if e.spec.is_some() {
                "last good version in use"
            } else {
                "spec ignored"
            };
            warnings.push(format!(
                "sidecar-sizer: spec {}/{}.yaml invalid ({kept}): {err}",
                workload.namespace, workload.name
            ));
        }
    }
    let spec = entry.and_then(|e| e.spec.as_deref());
    let (app, app_requests_in_pod) = app_container(pod);
    let no_labels = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
    let mesh = snaps.mesh.filter(|m| m.synced).map(|m| MeshInput {
        scope: m.scope(&workload.namespace, labels),
        model: &m.model,
        root_namespace: &m.root_namespace,
    });
    let mut decision = sizing::decide(
        &Inputs {
            spec,
            usage: snaps.usage.get(&workload.namespace, &workload.name),
            app_container: app,
            app_requests_in_pod,
            mesh,
        },
        &settings.policy,
    );
    // Never replace the owner's injection labels: an `istio.io/rev` or
    // `sidecar.istio.io/inject` already on the pod chooses the control plane (or opts out,
    // which the skip rule handled); a spec's `enabled`/`revision` only adds what is missing.
    if let Some((key, value)) = &decision.inject {
        let labels = pod.metadata.labels.as_ref();
        let has = |k: &str| labels.and_then(|l| l.get(k));
        let owner = has(istio::LABEL_REV)
            .map(|v| (istio::LABEL_REV, v))
            .or_else(|| has(istio::LABEL_INJECT).map(|v| (istio::LABEL_INJECT, v)));
        if let Some((k, v)) = owner {
            if !(k == *key && v == value) {
                warnings.push(format!(
                    "sidecar-sizer: kept the pod's label {k}={v:?} (the spec asks {key}={value:?})"
                ));
            }
            decision.inject = None;
        }
    }
    let not_sized =
        |workload: Workload, error: NotSized, decision: Decision, warnings| Verdict::NotSized {
            workload: Some(workload),
            error,
            decision: Some(Box::new(decision)),
            warnings,
        };
    let mut planned = match patch::plan(pod, &decision, settings.patch) {
        Ok(p) => p,
        Err(e) => return not_sized(workload, e.into(), decision, warnings),
    };
    // Fit into what judges the pod after us: the namespace's LimitRanges and quotas
    // (`--cluster-constraints`) and the pod's own pod-level `spec.resources` (always).
    let no_constraints = constraints::NamespaceConstraints::default();
    let ns_constraints = snaps.cluster.get(&workload.namespace);
    let pod_level = pod.spec.as_ref().is_some_and(|s| s.resources.is_some());
    if ns_constraints.is_some() || pod_level {
        let c = ns_constraints.unwrap_or(&no_constraints);
        let (without_req, without_lim) = current_size(pod, &settings.policy);
        // Borrowed, not cloned: this runs on every admission in a constrained namespace.
        let no_spec = k8s_openapi::api::core::v1::PodSpec::default();
        let spec_of_pod = pod.spec.as_ref().unwrap_or(&no_spec);
        let without_us = constraints::Size {
            requests: without_req,
            limits: without_lim,
        };
        let proposed = constraints::Size {
            requests: planned.requests,
            limits: planned.limits,
        };
        match fit_placements(proposed, without_us, spec_of_pod, c, pod) {
            constraints::Fit::Fits { size, notes } => {
                if size.requests != planned.requests || size.limits != planned.limits {
                    decision.requests = size.requests;
                    decision.limits = size.limits;
                    decision.reasons.extend(notes.iter().cloned());
                    planned = match patch::plan(pod, &decision, settings.patch) {
                        Ok(p) => p,
                        Err(e) => return not_sized(workload, e.into(), decision, warnings),
                    };
                    if planned.requests != size.requests || planned.limits != size.limits {
                        // The owner's explicit annotations override what the constraints
                        // need: leave the pod as the owner wrote it.
                        let error = NotSized::Constraint {
                            object: "explicit annotations".into(),
                            constraint: "the owner's values do not fit the namespace's constraints"
                                .into(),
                        };
                        return not_sized(workload, error, decision, warnings);
                    }
                }
                warnings.extend(notes.into_iter().map(|n| format!("sidecar-sizer: {n}")));
            }
            constraints::Fit::NoFit { object, constraint } => {
                let error = NotSized::Constraint { object, constraint };
                return not_sized(workload, error, decision, warnings);
            }
        }
    }
    let patched = match patch::validate(pod, &planned.ops) {
        Ok(p) => p,
        Err(e) => return not_sized(workload, e.into(), decision, warnings),
    };
    let mut judgements = Vec::new();
    if let Some(hpas) = snaps.hpas {
        let usage = snaps.usage.get(&workload.namespace, &workload.name);
        let (current, _) = current_size(pod, &settings.policy);
        for h in hpas.targeting(&workload) {
            judgements.extend(hpa::judge(
                h,
                pod,
                usage,
                current,
                planned.requests,
                settings.policy.hpa_shift_threshold,
            ));
        }
        for j in &judgements {
            if let Some(message) = j.message(app) {
                decision.findings.push(Finding {
                    kind: sizing::FindingKind::HpaShift,
                    message,
                });
            }
        }
    }
    warnings.extend(finding_warnings(&decision.findings, &planned));
    Verdict::Sized(Box::new(Sized {
        workload,
        decision,
        planned,
        patched,
        warnings,
        dry_run,
        hpa: judgements,
    }))
}

/// Where Istio will put a proxy it has not injected yet: the pod's
/// `sidecar.istio.io/nativeSidecar` annotation decides; without it, the mesh-wide
/// `ENABLE_NATIVE_SIDECARS` (on by default in recent Istio where Kubernetes has native
/// sidecars) is not visible to us, so the size must fit either way: fit as a regular
/// container, then fit that result again as a native sidecar (init phases then run beside
/// the proxy: the more demanding case).
fn fit_placements(
    proposed: constraints::Size,
    without_us: constraints::Size,
    spec: &k8s_openapi::api::core::v1::PodSpec,
    c: &constraints::NamespaceConstraints,
    pod: &Pod,
) -> constraints::Fit {
    use constraints::{fit_with, Fit, ProxyPlacement};
    let native = annotation(pod, "sidecar.istio.io/nativeSidecar").and_then(istio::parse_bool);
    match native {
        Some(true) => fit_with(
            proposed,
            without_us,
            spec,
            c,
            true,
            ProxyPlacement::NativeSidecar,
        ),
        Some(false) => fit_with(
            proposed,
            without_us,
            spec,
            c,
            true,
            ProxyPlacement::Container,
        ),
        None => match fit_with(
            proposed,
            without_us,
            spec,
            c,
            true,
            ProxyPlacement::Container,
        ) {
            Fit::Fits { size, mut notes } => {
                match fit_with(
                    size,
                    without_us,
                    spec,
                    c,
                    true,
                    ProxyPlacement::NativeSidecar,
                ) {
                    Fit::Fits { size, notes: more } => {
                        for n in more {
                            if !notes.contains(&n) {
                                notes.push(n);
                            }
                        }
                        Fit::Fits { size, notes }
                    }
                    no => no,
                }
            }
            no => no,
        },
    }
}

pub fn finding_warnings(findings: &[Finding], planned: &Planned) -> Vec<String> {
    let mut out: Vec<String> = findings
        .iter()
        .map(|f| format!("sidecar-sizer: {}", f.message))
        .collect();
    if !planned.explicit.is_empty() {
        out.push(format!(
            "sidecar-sizer: kept explicit istio annotations {} (--override-explicit replaces them)",
            planned.explicit.join(",")
        ));
    }
    out
}

/// What the proxy would get without us: its container's resources if present, else the
/// pod's Istio annotations, else Istio's defaults.
pub fn current_size(pod: &Pod, policy: &Policy) -> (Resources, Resources) {
    let mut req = policy.default_requests;
    let mut lim = policy.default_limits;
    let ann = |k: &str| annotation(pod, k);
    if let Some(v) = ann(ANN_CPU).and_then(|v| Cpu::parse(v).ok()) {
        req.cpu = v;
    }
    if let Some(v) = ann(ANN_CPU_LIMIT).and_then(|v| Cpu::parse(v).ok()) {
        lim.cpu = v;
    }
    if let Some(v) = ann(ANN_MEMORY).and_then(|v| Memory::parse(v).ok()) {
        req.memory = v;
    }
    if let Some(v) = ann(ANN_MEMORY_LIMIT).and_then(|v| Memory::parse(v).ok()) {
        lim.memory = v;
    }
    if let Ok(Some((_, c))) = patch::find_proxy(pod) {
        if let Some(r) = c.resources.as_ref() {
            let q = |m: Option<
                &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
                     k: &str| { m.and_then(|m| m.get(k)).map(|q| q.0.clone()) };
            if let Some(v) = q(r.requests.as_ref(), "cpu").and_then(|v| Cpu::parse(&v).ok()) {
                req.cpu = v;
            }
            if let Some(v) = q(r.requests.as_ref(), "memory").and_then(|v| Memory::parse(&v).ok()) {
                req.memory = v;
            }
            if let Some(v) = q(r.limits.as_ref(), "cpu").and_then(|v| Cpu::parse(&v).ok()) {
                lim.cpu = v;
            }
            if let Some(v) = q(r.limits.as_ref(), "memory").and_then(|v| Memory::parse(&v).ok()) {
                lim.memory = v;
            }
        }
    }
    (req, lim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(labels: serde_json::Value, annotations: serde_json::Value, host_network: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": labels, "annotations": annotations},
            "spec": {"hostNetwork": host_network, "containers": [{"name": "app"}]}
        }))
        .unwrap()
    }

    /// The skip rule on top of Istio's: (labels, annotations, hostNetwork, skipped?).
    #[test]
    fn skip_rule_table() {
        let cases = [
            (json!({}), json!({}), false, false),
            (json!({}), json!({ANN_SKIP: "true"}), false, true),
            (json!({}), json!({ANN_SKIP: "True"}), false, true),
            (json!({}), json!({ANN_SKIP: "yes"}), false, true),
            (json!({}), json!({ANN_SKIP: "false"}), false, false),
            (json!({}), json!({ANN_SKIP: "FALSE"}), false, false),
            (json!({}), json!({ANN_SKIP: "sometimes"}), false, true),
            (
                json!({"sidecar.istio.io/inject": "False"}),
                json!({}),
                false,
                true,
            ),
            (
                json!({"sidecar.istio.io/inject": "true"}),
                json!({"sidecar.istio.io/inject": "false"}),
                false,
                false,
            ),
            (
                json!({}),
                json!({"sidecar.istio.io/inject": "off"}),
                false,
                true,
            ),
            (
                json!({"sidecar.istio.io/inject": "true"}),
                json!({}),
                true,
                true,
            ),
            // our skip is read before Istio's rule; "false" does not re-enable an opt-out
            (
                json!({"sidecar.istio.io/inject": "no"}),
                json!({ANN_SKIP: "false"}),
                false,
                true,
            ),
        ];
        for (labels, anns, host, skipped) in cases {
            let p = pod(labels.clone(), anns.clone(), host);
            assert_eq!(
                skip_reason(&p).is_some(),
                skipped,
                "labels {labels} annotations {anns} hostNetwork {host}: {:?}",
                skip_reason(&p)
            );
        }
    }
}
