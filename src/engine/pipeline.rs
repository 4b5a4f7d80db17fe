//! The one pipeline every front end calls (DESIGN §1): pod (or pod template + owner
//! context) + snapshots + policy → skip | not sized | sized. The webhook, `review` and
//! `report` differ only in how they get the pod and what they do with the answer.

use crate::engine::constraints::ClusterSnapshot;
use crate::engine::patch::{
    self, Planned, ANN_CPU, ANN_CPU_LIMIT, ANN_MEMORY, ANN_MEMORY_LIMIT, LABEL_INJECT,
};
use crate::engine::quantity::{Cpu, Memory};
use crate::engine::sizing::{self, Decision, Finding, Inputs, Policy, Resources, PROXY};
use crate::engine::spec::{Declared, SpecStore};
use crate::engine::usage::UsageSnapshot;
use crate::engine::workload::Workload;
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

pub(crate) fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// DESIGN §4 skip rules.
pub fn skip_reason(pod: &Pod) -> Option<String> {
    if annotation(pod, ANN_SKIP) == Some("true") {
        return Some(format!("{ANN_SKIP}: \"true\""));
    }
    if label(pod, LABEL_INJECT) == Some("false") || annotation(pod, LABEL_INJECT) == Some("false") {
        return Some(format!("{LABEL_INJECT}: \"false\""));
    }
    if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
        return Some("hostNetwork: true".into());
    }
    None
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

/// Everything decided for one pod, shared by the webhook and `review`.
pub struct Evaluation {
    pub decision: Decision,
    /// The patch, validated against the pod; or why the pod cannot be sized.
    pub planned: Result<Planned, patch::PatchError>,
    /// Warning about the workload's spec file, if its current version is invalid.
    pub spec_warning: Option<String>,
    /// The touched parts of the patched pod, when the patch validated.
    pub patched: Option<patch::Patched>,
}

/// Spec + usage + policy → decision → validated patch, for `pod` of `workload`.
pub fn evaluate(
    pod: &Pod,
    workload: &Workload,
    settings: &Settings,
    specs: &SpecStore,
    usage: &UsageSnapshot,
) -> Evaluation {
    let entry = specs.get(&workload.namespace, &workload.name);
    let spec_warning = entry.and_then(|e| {
        let err = e.error.as_ref()?;
        let kept = if e.spec.is_some() {
            "last good version in use"
        } else {
            "spec ignored"
        };
        Some(format!(
            "sidecar-sizer: spec {}/{}.yaml invalid ({kept}): {err}",
            workload.namespace, workload.name
        ))
    });
    let spec = entry.and_then(|e| e.spec.as_deref());
    let (app, app_requests_in_pod) = app_container(pod);
    let decision = sizing::decide(
        &Inputs {
            spec,
            usage: usage.get(&workload.namespace, &workload.name),
            app_container: app,
            app_requests_in_pod,
        },
        &settings.policy,
    );
    let mut patched = None;
    let planned = patch::plan(pod, &decision, settings.patch).and_then(|p| {
        patched = Some(patch::validate(pod, &p.ops)?);
        Ok(p)
    });
    Evaluation {
        decision,
        planned,
        spec_warning,
        patched,
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
