//! The sizing policy (DESIGN §8): a pure function from spec + usage to a decision.
//!
//! No IO and no clock here: the same inputs always give the same decision, so two replicas
//! of the sizer produce byte-identical patches.

use crate::engine::mesh::{MemoryModel, Scope};
use crate::engine::quantity::{Cpu, Memory, GI, MI};
use crate::engine::spec::{Declared, Spec};
use crate::sources::history::{ContainerUsage, WorkloadUsage};

pub const PROXY: &str = "istio-proxy";

/// Every number of the policy; each is a `serve`/`review` flag.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Target utilisation at P95: CPU request = P95 ÷ this.
    pub target_utilization: f64,
    /// CPU requests are rounded up to a multiple of this many millicores.
    pub cpu_step_millis: u64,
    /// Memory request = max working set × this.
    pub memory_headroom: f64,
    /// After an OOM kill: memory request ≥ peak + this many bytes ...
    pub oom_extra_bytes: u64,
    /// ... and ≥ peak × this.
    pub oom_factor: f64,
    /// CPU limit = max(this × CPU request, `cpu_limit_min`), rounded up to whole cores.
    pub cpu_limit_factor: f64,
    pub cpu_limit_min: Cpu,
    /// Bounds on requests.
    pub min_cpu: Cpu,
    pub max_cpu: Cpu,
    pub min_memory: Memory,
    pub max_memory: Memory,
    /// History is used only with at least this much data.
    pub min_history_hours: f64,
    pub min_history_samples: u64,
    /// Warn when app and proxy utilisation differ by more than this (relative to the larger).
    pub imbalance_threshold: f64,
    /// Warn when the spec's declared proxy requests differ from what history gives by more
    /// than this (relative to the larger).
    pub drift_threshold: f64,
    /// MeshScope finding above this many visible services with no scope (`*/*` or none).
    pub scope_warn_services: usize,
    /// HpaShift when an HPA's utilisation moves by at least this (percentage points).
    pub hpa_shift_threshold: f64,
    /// Istio's own defaults, used when nothing else applies.
    pub default_requests: Resources,
    pub default_limits: Resources,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target_utilization: 0.75,
            cpu_step_millis: 5,
            memory_headroom: 1.15,
            oom_extra_bytes: 100 * MI,
            oom_factor: 1.2,
            cpu_limit_factor: 2.0,
            cpu_limit_min: Cpu(1000),
            min_cpu: Cpu(10),
            max_cpu: Cpu(4000),
            min_memory: Memory(32 * MI),
            max_memory: Memory(4 * GI),
            min_history_hours: 24.0,
            min_history_samples: 100,
            imbalance_threshold: 0.30,
            drift_threshold: 0.30,
            scope_warn_services: 50,
            hpa_shift_threshold: 10.0,
            default_requests: Resources {
                cpu: Cpu(100),
                memory: Memory(128 * MI),
            },
            default_limits: Resources {
                cpu: Cpu(2000),
                memory: Memory(GI),
            },
        }
    }
}

impl Policy {
    /// Reject policies that cannot produce valid pods; the message names the flag.
    pub fn validate(&self) -> Result<(), String> {
        let fin_pos = |flag: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("--{flag} must be a positive number, got {v}"))
            }
        };
        fin_pos("target-utilization", self.target_utilization)?;
        if !(self.hpa_shift_threshold.is_finite() && self.hpa_shift_threshold >= 0.0) {
            return Err(format!(
                "--hpa-shift-threshold must be a number of percentage points >= 0, got {}",
                self.hpa_shift_threshold
            ));
        }
        if self.target_utilization > 1.0 {
            return Err(format!(
                "--target-utilization must be at most 1, got {}",
                self.target_utilization
            ));
        }
        fin_pos("memory-headroom", self.memory_headroom)?;
        if self.memory_headroom < 1.0 {
            return Err(format!(
                "--memory-headroom must be at least 1 (a request below the peak working set invites OOM kills), got {}",
                self.memory_headroom
            ));
        }
        fin_pos("oom-factor", self.oom_factor)?;
        if self.oom_factor < 1.0 {
            return Err(format!(
                "--oom-factor must be at least 1, got {}",
                self.oom_factor
            ));
        }
        fin_pos("cpu-limit-factor", self.cpu_limit_factor)?;
        if self.cpu_limit_factor < 1.0 {
            return Err(format!(
                "--cpu-limit-factor must be at least 1 (a cpu limit below the request makes every pod invalid), got {}",
                self.cpu_limit_factor
            ));
        }
        if self.cpu_limit_min.0 == 0 {
            return Err("--cpu-limit-min must be greater than 0".into());
        }
        fin_pos("imbalance-threshold", self.imbalance_threshold)?;
        fin_pos("drift-threshold", self.drift_threshold)?;
        if !self.min_history_hours.is_finite() || self.min_history_hours < 0.0 {
            return Err(format!(
                "--min-history-hours must be >= 0, got {}",
                self.min_history_hours
            ));
        }
        if self.cpu_step_millis == 0 {
            return Err("--cpu-step must be at least 1m".into());
        }
        if self.min_cpu.0 == 0 {
            return Err("--min-cpu must be greater than 0".into());
        }
        if self.min_cpu > self.max_cpu {
            return Err(format!(
                "--min-cpu {} is above --max-cpu {}",
                self.min_cpu, self.max_cpu
            ));
        }
        if self.min_memory.0 == 0 {
            return Err("--min-memory must be greater than 0".into());
        }
        if self.min_memory > self.max_memory {
            return Err(format!(
                "--min-memory {} is above --max-memory {}",
                self.min_memory, self.max_memory
            ));
        }
        let (r, l) = (&self.default_requests, &self.default_limits);
        if r.cpu.0 == 0 || r.memory.0 == 0 {
            return Err("--default-cpu and --default-memory must be greater than 0".into());
        }
        if r.cpu > l.cpu {
            return Err(format!(
                "--default-cpu {} is above --default-cpu-limit {}",
                r.cpu, l.cpu
            ));
        }
        if r.memory > l.memory {
            return Err(format!(
                "--default-memory {} is above --default-memory-limit {}",
                r.memory, l.memory
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu: Cpu,
    pub memory: Memory,
}

/// Where one resource's numbers came from: the first source with evidence for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `pin: true` in the team spec, which declares this resource.
    PinnedSpec,
    /// Confident usage history with a non-zero figure for this resource.
    History,
    /// The team spec's declared resources.
    Spec,
    /// Istio's defaults (request and limit).
    Default,
    /// Memory only: the mesh memory model for the services the proxy sees (`--mesh-scope`).
    MeshModel,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::PinnedSpec => "spec-pinned",
            Source::History => "history",
            Source::Spec => "spec",
            Source::Default => "default",
            Source::MeshModel => "mesh-model",
        }
    }

    fn index(self) -> usize {
        match self {
            Source::PinnedSpec => 0,
            Source::History => 1,
            Source::Spec => 2,
            Source::Default => 3,
            Source::MeshModel => 4,
        }
    }
}

/// The source of each resource of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sources {
    pub cpu: Source,
    pub memory: Source,
}

impl Sources {
    /// One label for both: `history` when cpu and memory agree, else `<cpu>/<memory>`
    /// (`history/default`). A fixed set of strings, so it can be a metric label.
    pub fn as_str(self) -> &'static str {
        const NAMES: [[&str; 5]; 5] = [
            [
                "spec-pinned",
                "spec-pinned/history",
                "spec-pinned/spec",
                "spec-pinned/default",
                "spec-pinned/mesh-model",
            ],
            [
                "history/spec-pinned",
                "history",
                "history/spec",
                "history/default",
                "history/mesh-model",
            ],
            [
                "spec/spec-pinned",
                "spec/history",
                "spec",
                "spec/default",
                "spec/mesh-model",
            ],
            [
                "default/spec-pinned",
                "default/history",
                "default/spec",
                "default",
                "default/mesh-model",
            ],
            [
                "mesh-model/spec-pinned",
                "mesh-model/history",
                "mesh-model/spec",
                "mesh-model/default",
                "mesh-model",
            ],
        ];
        NAMES[self.cpu.index()][self.memory.index()]
    }

    pub fn both(source: Source) -> Sources {
        Sources {
            cpu: source,
            memory: source,
        }
    }
}

/// Kinds of findings, used as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FindingKind {
    ProxyMasterImbalance,
    SpecDrift,
    LowConfidence,
    SpecError,
    ExplicitKept,
    Unsizable,
    MeshScope,
    /// The proxy change moves an HPA's `Resource` utilisation (engine::hpa).
    HpaShift,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::ProxyMasterImbalance => "ProxyMasterImbalance",
            FindingKind::SpecDrift => "SpecDrift",
            FindingKind::LowConfidence => "LowConfidence",
            FindingKind::SpecError => "SpecError",
            FindingKind::ExplicitKept => "ExplicitKept",
            FindingKind::Unsizable => "Unsizable",
            FindingKind::MeshScope => "MeshScope",
            FindingKind::HpaShift => "HpaShift",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub kind: FindingKind,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub requests: Resources,
    pub limits: Resources,
    /// Which source decided each resource.
    pub source: Sources,
    /// Human explanation, one step each.
    pub reasons: Vec<String>,
    pub findings: Vec<Finding>,
    /// The label that asks Istio to inject (`deployment.istio.enabled: true`):
    /// `sidecar.istio.io/inject=true`, or `istio.io/rev=<rev>` with a revision.
    pub inject: Option<(&'static str, String)>,
}

/// What decide() looks at. Built by the caller from the pod, the spec and the snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inputs<'a> {
    pub spec: Option<&'a Spec>,
    pub usage: Option<&'a WorkloadUsage>,
    /// The app container's name (first non-proxy container of the pod).
    pub app_container: Option<&'a str>,
    /// The app container's requests as written in the pod, when the spec declares none.
    pub app_requests_in_pod: Declared,
    /// The proxy's mesh scope and the memory model (`--mesh-scope`, once listed).
    pub mesh: Option<MeshInput<'a>>,
}

/// What decide() knows of the mesh for this pod.
#[derive(Debug, Clone, Copy)]
pub struct MeshInput<'a> {
    pub scope: Scope<'a>,
    pub model: &'a MemoryModel,
    /// Istio's root namespace, named in the namespace-local scope.
    pub root_namespace: &'a str,
}

/// What confident history gives, per resource; `None` where it has no evidence (a zero or
/// missing figure is no evidence).
struct FromHistory {
    cpu: Option<(Cpu, String)>,
    memory: Option<(Memory, String)>,
}

/// Decide the istio-proxy requests and limits, each resource from the first source that
/// has evidence for it: pinned spec → confident history → declared spec → Istio default.
pub fn decide(inputs: &Inputs<'_>, policy: &Policy) -> Decision {
    let spec = inputs.spec;
    let mut reasons = Vec::new();
    let mut findings = Vec::new();
    let declared = spec.map(|s| s.proxy_requests).unwrap_or_default();
    let explicit = spec.map(|s| s.proxy_limits).unwrap_or_default();
    let pinned = spec.is_some_and(|s| s.pin);

    let proxy_usage = inputs.usage.and_then(|u| u.containers.get(PROXY));
    let confident = proxy_usage.filter(|c| is_confident(c, policy));
    if let Some(c) = proxy_usage.filter(|c| !is_confident(c, policy)) {
        findings.push(Finding {
            kind: FindingKind::LowConfidence,
            message: format!(
                "low confidence: istio-proxy history has {} over {} (needs {} and {} samples)",
                plural(c.samples, "sample"),
                span(c.hours),
                span(policy.min_history_hours),
                policy.min_history_samples
            ),
        });
    }
    let hist = confident.map(|c| {
        history_requests(
            c,
            inputs.usage.and_then(|u| u.avg_replicas),
            spec.and_then(|s| s.replicas),
            inputs.usage.and_then(|u| u.source.as_deref()),
            policy,
        )
    });
    if let Some(h) = &hist {
        findings.extend(drift(&declared, h, policy));
    }
    let hist_cpu = hist.as_ref().and_then(|h| h.cpu.clone());
    let hist_mem = hist.as_ref().and_then(|h| h.memory.clone());

    let (cpu_source, cpu) = choose(
        "cpu",
        pinned,
        declared.cpu,
        hist_cpu,
        policy.default_requests.cpu,
        &mut reasons,
    );
    let (mem_source, memory) = match inputs.mesh {
        Some(mesh) if declared.memory.is_none() && hist_mem.is_none() => {
            (Source::MeshModel, model_memory(&mesh, policy, &mut reasons))
        }
        _ => choose(
            "memory",
            pinned,
            declared.memory,
            hist_mem,
            policy.default_requests.memory,
            &mut reasons,
        ),
    };
    let source = Sources {
        cpu: cpu_source,
        memory: mem_source,
    };

    let mut requests = Resources { cpu, memory };
    // Bounds apply to the requests of the spec and history sources; Istio's defaults are
    // taken as they are.
    let bounded = clamp(requests, policy, &mut reasons);
    if cpu_source != Source::Default {
        requests.cpu = bounded.cpu;
    }
    if mem_source != Source::Default {
        requests.memory = bounded.memory;
    }
    let model_error = inputs.mesh.map_or(0.0, |m| m.model.error);
    let limits = limits_for(
        &mut requests,
        source,
        &explicit,
        policy,
        model_error,
        &mut reasons,
    );
    if let Some(mesh) = &inputs.mesh {
        findings.extend(mesh_scope(mesh, mem_source, requests.memory, policy));
    }

    if let Some(f) = imbalance(inputs, &declared, policy) {
        findings.extend(f);
    }

    Decision {
        requests,
        limits,
        source,
        reasons,
        findings,
        inject: spec
            .filter(|s| s.inject == Some(true))
            .map(|s| crate::engine::istio::injection_label(s.revision.as_deref())),
    }
}

/// One resource through the chain; the reason names the resource and its source.
fn choose<Q: Copy + std::fmt::Display>(
    what: &str,
    pinned: bool,
    declared: Option<Q>,
    history: Option<(Q, String)>,
    default: Q,
    reasons: &mut Vec<String>,
) -> (Source, Q) {
    match (declared, history) {
        (Some(d), h) if pinned => {
            reasons.push(format!("{what}: spec pins {d}"));
            if let Some((v, why)) = h {
                reasons.push(format!(
                    "{what}: history would give {v} ({why}); spec is pinned"
                ));
            }
            (Source::PinnedSpec, d)
        }
        (d, Some((v, why))) => {
            reasons.push(format!("{what}: {why}"));
            if let Some(d) = d {
                reasons.push(format!("{what}: spec asked {d}"));
            }
            (Source::History, v)
        }
        (Some(d), None) => {
            reasons.push(format!("{what}: spec asks {d}"));
            (Source::Spec, d)
        }
        (None, None) => {
            reasons.push(format!(
                "{what}: no spec value and no confident history: Istio default {default}"
            ));
            (Source::Default, default)
        }
    }
}

fn is_confident(c: &ContainerUsage, policy: &Policy) -> bool {
    c.hours >= policy.min_history_hours && c.samples >= policy.min_history_samples
}

/// Requests from confident history, per resource, with the reason text.
fn history_requests(
    c: &ContainerUsage,
    history_replicas: Option<f64>,
    spec_replicas: Option<u32>,
    history_source: Option<&str>,
    policy: &Policy,
) -> FromHistory {
    let label = history_source.map_or_else(|| "history".to_string(), |s| format!("history ({s})"));
    let cpu = (c.cpu_p95_cores.is_finite() && c.cpu_p95_cores > 0.0).then(|| {
        let p95_m = c.cpu_p95_cores * 1000.0;
        let mut cpu_m = p95_m / policy.target_utilization;
        let mut why = format!(
            "{label} p95 {} over {} ÷ {} → {}",
            Cpu(p95_m.ceil() as u64),
            span(c.hours),
            policy.target_utilization,
            Cpu(round_up(cpu_m, policy.cpu_step_millis))
        );
        if let (Some(h), Some(s)) = (history_replicas, spec_replicas) {
            let s = f64::from(s);
            if h > 0.0 && (h - s).abs() > 1e-9 {
                let factor = h / s;
                cpu_m *= factor;
                why.push_str(&format!(
                    "; replicas {} in history vs {} in spec ×{:.2} → {}",
                    trim_float(h),
                    s,
                    factor,
                    Cpu(round_up(cpu_m, policy.cpu_step_millis))
                ));
            }
        }
        (Cpu(round_up(cpu_m, policy.cpu_step_millis)), why)
    });

    let memory = (c.memory_max_bytes > 0).then(|| {
        let peak = c.memory_max_bytes as f64;
        let mut mem = round_up(peak * policy.memory_headroom, MI);
        let mut why = format!(
            "{label} max {} over {} × {} → {}",
            Memory(c.memory_max_bytes),
            span(c.hours),
            policy.memory_headroom,
            Memory(mem)
        );
        if c.oom_kills > 0 {
            let bumped = round_up(
                (peak + policy.oom_extra_bytes as f64).max(peak * policy.oom_factor),
                MI,
            );
            if bumped > mem {
                mem = bumped;
            }
            why.push_str(&format!(
                "; {} in window → at least {}",
                plural(u64::from(c.oom_kills), "OOM kill"),
                Memory(mem)
            ));
        }
        (Memory(mem), why)
    });
    FromHistory { cpu, memory }
}

fn clamp(r: Resources, policy: &Policy, reasons: &mut Vec<String>) -> Resources {
    let cpu = r.cpu.clamp(policy.min_cpu, policy.max_cpu);
    let memory = r.memory.clamp(policy.min_memory, policy.max_memory);
    if cpu != r.cpu {
        reasons.push(format!(
            "cpu {} outside [{}, {}] → {cpu}",
            r.cpu, policy.min_cpu, policy.max_cpu
        ));
    }
    if memory != r.memory {
        reasons.push(format!(
            "memory {} outside [{}, {}] → {memory}",
            r.memory, policy.min_memory, policy.max_memory
        ));
    }
    Resources { cpu, memory }
}

/// Limits per resource: the spec's explicit limit when it has one (below a history or spec
/// request it is raised to the request; Istio's default request above it is lowered to it,
/// so the team's limit holds); else Istio's default limit for a default request; else the
/// policy's rule (cpu: whole cores; memory: = request).
///
/// Memory from the mesh model (no explicit limit): limit = request × (1 + the model's
/// relative error), rounded up to a MiB. The model predicts from configuration alone, so the
/// limit leaves room for how far real proxies stray from it: 50 % with the default
/// coefficients, 3 × the calibrated fit's median relative error (15 %…100 %) otherwise.
fn limits_for(
    requests: &mut Resources,
    source: Sources,
    explicit: &Declared,
    policy: &Policy,
    model_error: f64,
    reasons: &mut Vec<String>,
) -> Resources {
    let cpu = match explicit.cpu {
        Some(l) if l >= requests.cpu => {
            reasons.push(format!("cpu limit: spec sets {l}"));
            l
        }
        Some(l) if source.cpu == Source::Default => {
            reasons.push(format!(
                "cpu limit: spec sets {l}; Istio's default request {} lowered to it",
                requests.cpu
            ));
            requests.cpu = l;
            l
        }
        Some(l) => {
            reasons.push(format!(
                "cpu limit: spec sets {l}, below the request → {}",
                requests.cpu
            ));
            requests.cpu
        }
        None if source.cpu == Source::Default => {
            reasons.push(format!(
                "cpu limit: Istio default {}",
                policy.default_limits.cpu
            ));
            policy.default_limits.cpu.max(requests.cpu)
        }
        None => {
            let want = (requests.cpu.0 as f64 * policy.cpu_limit_factor)
                .max(policy.cpu_limit_min.0 as f64);
            let cores = round_up(want, 1000);
            reasons.push(format!(
                "cpu limit max({}×{}, {}) → {} (whole cores: Envoy runs ceil(limit) workers)",
                policy.cpu_limit_factor,
                requests.cpu,
                policy.cpu_limit_min,
                plural(cores / 1000, "core")
            ));
            Cpu(cores)
        }
    };
    let memory = match explicit.memory {
        Some(l) if l >= requests.memory => {
            reasons.push(format!("memory limit: spec sets {l}"));
            l
        }
        Some(l) if source.memory == Source::Default => {
            reasons.push(format!(
                "memory limit: spec sets {l}; Istio's default request {} lowered to it",
                requests.memory
            ));
            requests.memory = l;
            l
        }
        Some(l) => {
            reasons.push(format!(
                "memory limit: spec sets {l}, below the request → {}",
                requests.memory
            ));
            requests.memory
        }
        None if source.memory == Source::Default => {
            reasons.push(format!(
                "memory limit: Istio default {}",
                policy.default_limits.memory
            ));
            policy.default_limits.memory.max(requests.memory)
        }
        None if source.memory == Source::MeshModel => {
            let err = if model_error.is_finite() {
                model_error.max(0.0)
            } else {
                0.0
            };
            let l = Memory(round_up(requests.memory.0 as f64 * (1.0 + err), MI));
            reasons.push(format!(
                "memory limit: {} × (1 + model error {err:.2}) → {l} (room for the model's error)",
                requests.memory
            ));
            l.max(requests.memory)
        }
        None => requests.memory,
    };
    Resources { cpu, memory }
}

/// Memory from the mesh model: expected (rounded up to a MiB) × headroom.
fn model_memory(mesh: &MeshInput<'_>, policy: &Policy, reasons: &mut Vec<String>) -> Memory {
    let s = &mesh.scope;
    let expected = mesh.model.expected(s.visible);
    let mem = Memory(round_up(expected.0 as f64 * policy.memory_headroom, MI));
    let scope = match (s.sidecar, s.unscoped) {
        (None, _) => "no Sidecar scope".to_string(),
        (Some(id), true) => format!("Sidecar {id}, unscoped"),
        (Some(id), false) => format!("Sidecar {id}"),
    };
    reasons.push(format!(
        "memory: {} visible ({scope}) → ~{expected} × {} → {mem}",
        plural(s.visible as u64, "service"),
        policy.memory_headroom
    ));
    reasons.push(format!(
        "memory: mesh model {} ({})",
        mesh.model.describe(),
        mesh.model.calibration.note
    ));
    mem
}

/// MeshScope: a proxy that sees too much, or memory set below what the mesh now needs.
fn mesh_scope(
    mesh: &MeshInput<'_>,
    source: Source,
    memory: Memory,
    policy: &Policy,
) -> Vec<Finding> {
    let s = &mesh.scope;
    let mut out = Vec::new();
    let expected = mesh.model.expected(s.visible);
    if s.unscoped && s.visible > policy.scope_warn_services {
        let how = match s.sidecar {
            None => "no Sidecar".to_string(),
            Some(id) => format!("{id} (*/*)"),
        };
        // Short: Kubernetes cuts warnings at 120 characters.
        out.push(Finding {
            kind: FindingKind::MeshScope,
            message: format!(
                "MeshScope: {} visible via {how}: ~{expected} now, ~{} scoped to ./* + {}/*",
                plural(s.visible as u64, "service"),
                mesh.model.expected(s.local),
                mesh.root_namespace
            ),
        });
    }
    if matches!(source, Source::Spec | Source::PinnedSpec | Source::History) && memory < expected {
        out.push(Finding {
            kind: FindingKind::MeshScope,
            message: format!(
                "MeshScope: memory {memory} ({}) below ~{expected} expected for {} visible (the mesh grew)",
                source.as_str(),
                plural(s.visible as u64, "service")
            ),
        });
    }
    out
}

/// SpecDrift: the team's declared proxy requests vs what history gives.
fn drift(declared: &Declared, history: &FromHistory, policy: &Policy) -> Vec<Finding> {
    let mut out = Vec::new();
    let pairs = [
        (
            "cpu",
            declared.cpu.map(|c| (c.0, c.to_string())),
            history.cpu.as_ref().map(|(c, _)| (c.0, c.to_string())),
        ),
        (
            "memory",
            declared.memory.map(|m| (m.0, m.to_string())),
            history.memory.as_ref().map(|(m, _)| (m.0, m.to_string())),
        ),
    ];
    for (what, spec, hist) in pairs {
        let (Some((spec, spec_text)), Some((hist, hist_text))) = (spec, hist) else {
            continue;
        };
        let larger = spec.max(hist) as f64;
        if larger > 0.0 && (spec as f64 - hist as f64).abs() / larger > policy.drift_threshold {
            let change = (hist as f64 - spec as f64) / spec as f64 * 100.0;
            out.push(Finding {
                kind: FindingKind::SpecDrift,
                message: format!(
                    "SpecDrift: istio-proxy {what} spec {spec_text} vs history {hist_text} ({change:+.0}%)"
                ),
            });
        }
    }
    out
}

/// ProxyMasterImbalance: utilisation (usage ÷ declared request) of proxy vs app container.
fn imbalance(inputs: &Inputs<'_>, declared: &Declared, policy: &Policy) -> Option<Vec<Finding>> {
    let usage = inputs.usage?;
    let app_name = inputs.app_container?;
    let proxy = usage
        .containers
        .get(PROXY)
        .filter(|c| is_confident(c, policy))?;
    let app = usage
        .containers
        .get(app_name)
        .filter(|c| is_confident(c, policy))?;
    let app_declared = match inputs.spec.map(|s| s.app_requests) {
        Some(d) if !d.is_empty() => d,
        _ => inputs.app_requests_in_pod,
    };
    let mut out = Vec::new();
    let mut check = |what: &str, p_use: f64, p_req: Option<f64>, a_use: f64, a_req: Option<f64>| {
        let (Some(p_req), Some(a_req)) = (p_req, a_req) else {
            return;
        };
        if p_req <= 0.0 || a_req <= 0.0 {
            return;
        }
        let (up, ua) = (p_use / p_req, a_use / a_req);
        let larger = up.max(ua);
        if larger > 0.0 && (up - ua).abs() / larger > policy.imbalance_threshold {
            out.push(Finding {
                kind: FindingKind::ProxyMasterImbalance,
                message: format!(
                    "ProxyMasterImbalance: {what} utilisation istio-proxy {:.0}% vs {app_name} {:.0}%",
                    up * 100.0,
                    ua * 100.0
                ),
            });
        }
    };
    check(
        "cpu",
        proxy.cpu_p95_cores * 1000.0,
        declared.cpu.map(|c| c.0 as f64),
        app.cpu_p95_cores * 1000.0,
        app_declared.cpu.map(|c| c.0 as f64),
    );
    check(
        "memory",
        proxy.memory_max_bytes as f64,
        declared.memory.map(|m| m.0 as f64),
        app.memory_max_bytes as f64,
        app_declared.memory.map(|m| m.0 as f64),
    );
    Some(out)
}

/// Round `v` up to a multiple of `step` (v ≥ 0; NaN and negatives give 0).
fn round_up(v: f64, step: u64) -> u64 {
    if v.is_nan() || v <= 0.0 {
        return 0;
    }
    let steps = (v / step as f64 - 1e-9).ceil();
    if steps >= (u64::MAX / step) as f64 {
        return u64::MAX / step * step;
    }
    steps as u64 * step
}

fn span(hours: f64) -> String {
    if hours >= 24.0 && (hours / 24.0).fract() == 0.0 {
        format!("{}d", hours / 24.0)
    } else {
        format!("{}h", trim_float(hours))
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::spec;

    fn usage(
        proxy: ContainerUsage,
        app: Option<ContainerUsage>,
        replicas: Option<f64>,
    ) -> WorkloadUsage {
        let mut w = WorkloadUsage {
            avg_replicas: replicas,
            ..Default::default()
        };
        w.containers.insert(PROXY.into(), proxy);
        if let Some(a) = app {
            w.containers.insert("master".into(), a);
        }
        w
    }

    fn cu(cpu: f64, mem_mi: u64) -> ContainerUsage {
        ContainerUsage {
            cpu_p95_cores: cpu,
            memory_max_bytes: mem_mi * MI,
            samples: 4032,
            hours: 336.0,
            oom_kills: 0,
        }
    }

    fn spec(text: &str) -> Spec {
        spec::parse(text).unwrap()
    }

    fn run(spec: Option<&Spec>, usage: Option<&WorkloadUsage>) -> Decision {
        decide(
            &Inputs {
                spec,
                usage,
                app_container: Some("master"),
                app_requests_in_pod: Declared::default(),
                mesh: None,
            },
            &Policy::default(),
        )
    }

    fn run_mesh(spec: Option<&Spec>, usage: Option<&WorkloadUsage>, scope: Scope<'_>) -> Decision {
        let model = MemoryModel::default();
        decide(
            &Inputs {
                spec,
                usage,
                app_container: Some("master"),
                app_requests_in_pod: Declared::default(),
                mesh: Some(MeshInput {
                    scope,
                    model: &model,
                    root_namespace: "istio-system",
                }),
            },
            &Policy::default(),
        )
    }

    fn scope(sidecar: Option<&str>, visible: usize, unscoped: bool, local: usize) -> Scope<'_> {
        Scope {
            sidecar,
            visible,
            unscoped,
            local,
            error: None,
        }
    }

    /// The example worked by hand: 24Mi + 0.56Mi × 412 = 254.7Mi → ~255Mi;
    /// × 1.15 = 293.25 → 294Mi; limit 294Mi × 1.5 = 441Mi.
    #[test]
    fn mesh_model_sizes_memory_without_history_or_spec() {
        let d = run_mesh(None, None, scope(None, 412, true, 9));
        assert_eq!(d.source.memory, Source::MeshModel);
        assert_eq!(d.source.cpu, Source::Default);
        assert_eq!(d.source.as_str(), "default/mesh-model");
        assert_eq!(d.requests.memory, Memory(294 * MI));
        assert_eq!(d.limits.memory, Memory(441 * MI));
        assert!(d.reasons.iter().any(
            |r| r == "memory: 412 services visible (no Sidecar scope) → ~255Mi × 1.15 → 294Mi"
        ));
        let f: Vec<_> = d
            .findings
            .iter()
            .filter(|f| f.kind == FindingKind::MeshScope)
            .collect();
        assert_eq!(f.len(), 1);
        // 24 + 0.56 × 9 = 29.04 → 30Mi
        assert!(
            f[0].message
                .contains("412 services visible via no Sidecar: ~255Mi now, ~30Mi scoped to ./* + istio-system/*"),
            "{}",
            f[0].message
        );
        // scoped below the threshold: no finding; 24 + 0.56 × 12 = 30.72 → 31Mi × 1.15 → 36Mi
        let d = run_mesh(None, None, scope(Some("a/default"), 12, false, 9));
        assert_eq!(d.requests.memory, Memory(36 * MI));
        assert!(d.findings.is_empty(), "{:?}", d.findings);
        // */* egress above the threshold warns, naming the Sidecar
        let d = run_mesh(None, None, scope(Some("a/default"), 60, true, 9));
        assert!(d.findings[0].message.contains("via a/default (*/*)"));
    }

    #[test]
    fn history_and_declared_memory_win_over_the_model_and_are_checked_against_it() {
        let u = usage(cu(0.1, 100), None, None);
        let d = run_mesh(None, Some(&u), scope(Some("a/x"), 412, false, 9));
        assert_eq!(d.source.memory, Source::History);
        assert_eq!(d.requests.memory, Memory(115 * MI));
        assert!(d.findings.iter().any(|f| f.kind == FindingKind::MeshScope
            && f.message
                .contains("memory 115Mi (history) below ~255Mi expected")));
        let s = spec("deployment:\n  istio:\n    resources: {memory: 300Mi}\n");
        let d = run_mesh(Some(&s), None, scope(Some("a/x"), 412, false, 9));
        assert_eq!(d.source.memory, Source::Spec);
        assert_eq!(d.requests.memory, Memory(300 * MI));
        assert!(d.findings.is_empty(), "{:?}", d.findings);
    }

    #[test]
    fn source_labels_are_a_fixed_table() {
        let all = [
            Source::PinnedSpec,
            Source::History,
            Source::Spec,
            Source::Default,
            Source::MeshModel,
        ];
        let mut seen = std::collections::HashSet::new();
        for cpu in all {
            for memory in all {
                let label = Sources { cpu, memory }.as_str();
                let want = if cpu == memory {
                    cpu.as_str().to_string()
                } else {
                    format!("{}/{}", cpu.as_str(), memory.as_str())
                };
                assert_eq!(label, want);
                assert!(seen.insert(label));
            }
        }
    }

    const SPEC: &str = "deployment:\n  istio:\n    resources: {cpu: 500m, memory: 80Mi}\n  container:\n    replicas: 6\n    resources: {cpu: 1000m, memory: 956Mi}\n";

    #[test]
    fn defaults_when_nothing_known() {
        let d = run(None, None);
        assert_eq!(d.source, Sources::both(Source::Default));
        assert_eq!(
            d.requests,
            Resources {
                cpu: Cpu(100),
                memory: Memory(128 * MI)
            }
        );
        assert_eq!(
            d.limits,
            Resources {
                cpu: Cpu(2000),
                memory: Memory(GI)
            }
        );
        assert!(d.findings.is_empty());
        assert!(d.inject.is_none());
    }

    #[test]
    fn declared_spec() {
        let s = spec(SPEC);
        let d = run(Some(&s), None);
        assert_eq!(d.source, Sources::both(Source::Spec));
        assert_eq!(
            d.requests,
            Resources {
                cpu: Cpu(500),
                memory: Memory(80 * MI)
            }
        );
        // cpu limit max(2×500m, 1) = 1 core; memory limit = request
        assert_eq!(
            d.limits,
            Resources {
                cpu: Cpu(1000),
                memory: Memory(80 * MI)
            }
        );
        assert!(
            d.reasons[0] == "cpu: spec asks 500m" && d.reasons[1] == "memory: spec asks 80Mi",
            "{:?}",
            d.reasons
        );
    }

    #[test]
    fn spec_explicit_limits_and_partial_declaration() {
        let s = spec("deployment:\n  istio:\n    enabled: true\n    resources: {cpu: 300m}\n    limits: {cpu: 3, memory: 512Mi}\n");
        let d = run(Some(&s), None);
        assert_eq!(
            d.requests,
            Resources {
                cpu: Cpu(300),
                memory: Memory(128 * MI)
            }
        );
        assert_eq!(
            d.limits,
            Resources {
                cpu: Cpu(3000),
                memory: Memory(512 * MI)
            }
        );
        assert_eq!(
            d.inject,
            Some(("sidecar.istio.io/inject", "true".to_string()))
        );
        assert!(d
            .reasons
            .iter()
            .any(|r| r.starts_with("memory: no spec value and no confident history")));
    }

    #[test]
    fn confident_history_beats_declared_spec() {
        let s = spec(SPEC);
        let u = usage(cu(0.212, 80), None, Some(6.0));
        let d = run(Some(&s), Some(&u));
        assert_eq!(d.source, Sources::both(Source::History));
        // 212m / 0.75 = 282.67 → 285m (multiple of 5m)
        assert_eq!(d.requests.cpu, Cpu(285));
        // 80Mi × 1.15 = 92Mi
        assert_eq!(d.requests.memory, Memory(92 * MI));
        assert_eq!(d.limits.cpu, Cpu(1000));
        assert_eq!(d.limits.memory, Memory(92 * MI));
        assert!(
            d.reasons[0] == "cpu: history p95 212m over 14d ÷ 0.75 → 285m",
            "{:?}",
            d.reasons
        );
        assert_eq!(d.reasons[1], "cpu: spec asked 500m");
        assert_eq!(
            d.reasons[2],
            "memory: history max 80Mi over 14d × 1.15 → 92Mi"
        );
        // 500m declared vs 285m from history: 43% apart → SpecDrift; memory 80Mi vs 92Mi is 13%.
        assert_eq!(d.findings.len(), 1, "{:?}", d.findings);
        assert_eq!(d.findings[0].kind, FindingKind::SpecDrift);
        assert_eq!(
            d.findings[0].message,
            "SpecDrift: istio-proxy cpu spec 500m vs history 285m (-43%)"
        );
    }

    #[test]
    fn rounding_is_up_and_exact_multiples_stay() {
        let u = usage(cu(0.075, 100), None, None); // 75m/0.75 = 100m exactly
        let d = run(None, Some(&u));
        assert_eq!(d.requests.cpu, Cpu(100));
        // 100Mi × 1.15 = 115Mi exactly
        assert_eq!(d.requests.memory, Memory(115 * MI));
        let mut c = cu(0.0751, 100);
        c.memory_max_bytes = 100 * MI + 1;
        let d = run(None, Some(&usage(c, None, None)));
        assert_eq!(d.requests.cpu, Cpu(105));
        assert_eq!(d.requests.memory, Memory(116 * MI));
    }

    #[test]
    fn bounds_apply_to_requests_and_limits_follow() {
        let d = run(None, Some(&usage(cu(0.001, 1), None, None)));
        assert_eq!(
            d.requests,
            Resources {
                cpu: Cpu(10),
                memory: Memory(32 * MI)
            }
        );
        assert_eq!(d.limits.cpu, Cpu(1000));
        let d = run(None, Some(&usage(cu(9.0, 8192), None, None)));
        assert_eq!(
            d.requests,
            Resources {
                cpu: Cpu(4000),
                memory: Memory(4 * GI)
            }
        );
        assert_eq!(
            d.limits,
            Resources {
                cpu: Cpu(8000),
                memory: Memory(4 * GI)
            }
        );
        assert!(d.reasons.iter().any(|r| r.contains("outside")));
    }

    #[test]
    fn cpu_limit_is_whole_cores() {
        // 1875m/0.75 = 2500m → limit 5 cores
        let d = run(None, Some(&usage(cu(1.875, 100), None, None)));
        assert_eq!(d.requests.cpu, Cpu(2500));
        assert_eq!(d.limits.cpu, Cpu(5000));
        // 600m → 2×600m = 1200m → 2 cores
        let d = run(None, Some(&usage(cu(0.45, 100), None, None)));
        assert_eq!(d.requests.cpu, Cpu(600));
        assert_eq!(d.limits.cpu, Cpu(2000));
        assert_eq!(d.limits.cpu.0 % 1000, 0);
    }

    #[test]
    fn replica_scaling() {
        // History saw 3 replicas on average, spec asks 6: each pod takes half the load.
        let s = spec(SPEC);
        let d = run(Some(&s), Some(&usage(cu(0.3, 100), None, Some(3.0))));
        // 300m/0.75 = 400m × 3/6 = 200m
        assert_eq!(d.requests.cpu, Cpu(200));
        assert!(d.reasons[0].contains("×0.50"), "{:?}", d.reasons);
        // Same replicas: no scaling.
        let d = run(Some(&s), Some(&usage(cu(0.3, 100), None, Some(6.0))));
        assert_eq!(d.requests.cpu, Cpu(400));
        // Spec scales down to 2 from 6: ×3.
        let s2 = spec("deployment:\n  container:\n    replicas: 2\n");
        let d = run(Some(&s2), Some(&usage(cu(0.3, 100), None, Some(6.0))));
        assert_eq!(d.requests.cpu, Cpu(1200));
    }

    #[test]
    fn oom_bump() {
        let mut c = cu(0.1, 200);
        c.oom_kills = 1;
        // 200Mi×1.15 = 230Mi; OOM: max(300Mi, 240Mi) = 300Mi
        let d = run(None, Some(&usage(c.clone(), None, None)));
        assert_eq!(d.requests.memory, Memory(300 * MI));
        assert_eq!(d.limits.memory, Memory(300 * MI));
        assert!(d.reasons[1].contains("1 OOM kill"), "{:?}", d.reasons);
        // Large peak: ×1.2 wins over +100Mi. 1000Mi → 1200Mi
        c.memory_max_bytes = 1000 * MI;
        let d = run(None, Some(&usage(c, None, None)));
        assert_eq!(d.requests.memory, Memory(1200 * MI));
    }

    #[test]
    fn low_confidence_history_is_not_used() {
        let s = spec(SPEC);
        let mut c = cu(0.9, 500);
        c.hours = 6.0;
        let d = run(Some(&s), Some(&usage(c.clone(), None, None)));
        assert_eq!(d.source, Sources::both(Source::Spec));
        assert_eq!(d.requests.cpu, Cpu(500));
        assert_eq!(d.findings.len(), 1);
        assert_eq!(d.findings[0].kind, FindingKind::LowConfidence);
        assert!(
            d.findings[0].message.contains("6h"),
            "{}",
            d.findings[0].message
        );
        c.hours = 48.0;
        c.samples = 99;
        let d = run(None, Some(&usage(c, None, None)));
        assert_eq!(d.source, Sources::both(Source::Default));
        assert_eq!(d.findings[0].kind, FindingKind::LowConfidence);
    }

    #[test]
    fn pinned_spec_wins_and_history_advises() {
        let s = spec(
            "deployment:\n  istio:\n    pin: true\n    resources: {cpu: 700m, memory: 200Mi}\n",
        );
        let d = run(Some(&s), Some(&usage(cu(0.1, 50), None, None)));
        assert_eq!(d.source, Sources::both(Source::PinnedSpec));
        assert_eq!(
            d.requests,
            Resources {
                cpu: Cpu(700),
                memory: Memory(200 * MI)
            }
        );
        assert_eq!(
            d.limits,
            Resources {
                cpu: Cpu(2000),
                memory: Memory(200 * MI)
            }
        );
        assert!(
            d.reasons
                .iter()
                .any(|r| r.contains("history would give 135m")),
            "{:?}",
            d.reasons
        );
    }

    #[test]
    fn imbalance_warning() {
        let s = spec(SPEC);
        // proxy 450m of 500m = 90%; app 400m of 1000m = 40% → differ by 56% > 30%
        let u = usage(cu(0.45, 40), Some(cu(0.4, 478)), Some(6.0));
        let imbalanced = |d: &Decision| -> Vec<(FindingKind, String)> {
            d.findings
                .iter()
                .filter(|f| f.kind == FindingKind::ProxyMasterImbalance)
                .map(|f| (f.kind, f.message.clone()))
                .collect()
        };
        let kinds = imbalanced(&run(Some(&s), Some(&u)));
        assert_eq!(kinds.len(), 1, "{kinds:?}");
        assert_eq!(kinds[0].0, FindingKind::ProxyMasterImbalance);
        assert!(
            kinds[0]
                .1
                .contains("cpu utilisation istio-proxy 90% vs master 40%"),
            "{}",
            kinds[0].1
        );
        // 40Mi/80Mi = 50% vs 478Mi/956Mi = 50%: balanced memory, no warning for it.
        // Balanced cpu: proxy 400m/500m=80%, app 700m/1000m=70% → 12.5% apart.
        let u = usage(cu(0.4, 40), Some(cu(0.7, 478)), Some(6.0));
        assert!(imbalanced(&run(Some(&s), Some(&u))).is_empty());
        // Without declared requests there is no utilisation to compare.
        let u = usage(cu(0.45, 40), Some(cu(0.4, 478)), Some(6.0));
        assert!(imbalanced(&run(None, Some(&u))).is_empty());
    }

    fn d(cpu: u64, mem_mi: u64) -> Resources {
        Resources {
            cpu: Cpu(cpu),
            memory: Memory(mem_mi * MI),
        }
    }

    #[test]
    fn cpu_only_spec_leaves_memory_at_istio_default_request_and_limit() {
        let s = spec("deployment:\n  istio:\n    resources: {cpu: 300m}\n");
        let dd = run(Some(&s), None);
        assert_eq!(dd.source.cpu, Source::Spec);
        assert_eq!(dd.source.memory, Source::Default);
        assert_eq!(dd.source.as_str(), "spec/default");
        assert_eq!(dd.requests, d(300, 128));
        // Never a 128Mi memory LIMIT without evidence: Istio's own default limit is 1Gi.
        assert_eq!(dd.limits, d(1000, 1024));
    }

    #[test]
    fn memory_only_spec_leaves_cpu_at_istio_default() {
        let s = spec("deployment:\n  istio:\n    resources: {memory: 200Mi}\n");
        let dd = run(Some(&s), None);
        assert_eq!(dd.source.as_str(), "default/spec");
        assert_eq!(dd.requests, d(100, 200));
        assert_eq!(dd.limits, d(2000, 200));
    }

    #[test]
    fn limits_only_spec_is_honoured() {
        let s = spec("deployment:\n  istio:\n    limits: {cpu: 3, memory: 512Mi}\n");
        let dd = run(Some(&s), None);
        assert_eq!(dd.source, Sources::both(Source::Default));
        assert_eq!(dd.requests, d(100, 128));
        assert_eq!(dd.limits, d(3000, 512));
        // A limit below Istio's default request lowers the request to it (valid pod).
        let s = spec("deployment:\n  istio:\n    limits: {cpu: 50m, memory: 64Mi}\n");
        let dd = run(Some(&s), None);
        assert_eq!(dd.requests, d(50, 64));
        assert_eq!(dd.limits, d(50, 64));
        // With history for cpu only: cpu from history, limits as the spec says.
        let mut c = cu(0.3, 0);
        c.memory_max_bytes = 0;
        let s = spec("deployment:\n  istio:\n    limits: {cpu: 3, memory: 512Mi}\n");
        let dd = run(Some(&s), Some(&usage(c, None, None)));
        assert_eq!(dd.source.as_str(), "history/default");
        assert_eq!(dd.requests, d(400, 128));
        assert_eq!(dd.limits, d(3000, 512));
    }

    #[test]
    fn zero_or_missing_memory_history_is_no_evidence() {
        // Confident cpu history, memory 0 (missing series): memory falls through the chain.
        let mut c = cu(0.15, 0);
        c.memory_max_bytes = 0;
        let dd = run(None, Some(&usage(c.clone(), None, None)));
        assert_eq!(dd.source.as_str(), "history/default");
        assert_eq!(dd.requests, d(200, 128));
        assert_eq!(dd.limits, d(1000, 1024), "not 32Mi/32Mi");
        // With a declared memory, the spec decides memory.
        let s = spec("deployment:\n  istio:\n    resources: {cpu: 500m, memory: 90Mi}\n");
        let dd = run(Some(&s), Some(&usage(c, None, None)));
        assert_eq!(dd.source.as_str(), "history/spec");
        assert_eq!(dd.requests, d(200, 90));
        assert_eq!(dd.limits, d(1000, 90));
        // No SpecDrift for a resource history has no figure for.
        assert!(
            dd.findings.iter().all(|f| !f.message.contains("memory")),
            "{:?}",
            dd.findings
        );
        // Zero cpu history: cpu is not evidence either.
        let dd = run(None, Some(&usage(cu(0.0, 100), None, None)));
        assert_eq!(dd.source.as_str(), "default/history");
        assert_eq!(dd.requests, d(100, 115));
        assert_eq!(dd.limits, d(2000, 115));
    }

    #[test]
    fn pinned_spec_pins_only_what_it_declares() {
        let s = spec("deployment:\n  istio:\n    pin: true\n    resources: {cpu: 700m}\n");
        let dd = run(Some(&s), Some(&usage(cu(0.1, 50), None, None)));
        assert_eq!(dd.source.as_str(), "spec-pinned/history");
        assert_eq!(dd.requests, d(700, 58));
    }

    #[test]
    fn revision_label_from_spec() {
        let s = spec("deployment:\n  istio:\n    enabled: true\n    revision: canary\n");
        assert_eq!(
            run(Some(&s), None).inject,
            Some(("istio.io/rev", "canary".to_string()))
        );
    }

    #[test]
    fn deterministic() {
        let s = spec(SPEC);
        let u = usage(cu(0.33, 77), Some(cu(0.4, 478)), Some(4.5));
        assert_eq!(run(Some(&s), Some(&u)), run(Some(&s), Some(&u)));
    }

    #[test]
    fn round_up_edges() {
        assert_eq!(round_up(0.0, 5), 0);
        assert_eq!(round_up(f64::NAN, 5), 0);
        assert_eq!(round_up(1.0, 5), 5);
        assert_eq!(round_up(5.0, 5), 5);
        assert_eq!(round_up(f64::INFINITY, 5) % 5, 0);
    }

    #[test]
    fn policy_validation() {
        assert!(Policy::default().validate().is_ok());
        let p = Policy {
            target_utilization: 0.0,
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        let p = Policy {
            min_cpu: Cpu(5000),
            ..Policy::default()
        };
        assert!(p.validate().is_err());
        // Policies that would leave every pod unsized do not start; the flag is named.
        let cases: Vec<(Policy, &str)> = vec![
            (
                Policy {
                    cpu_limit_factor: 0.5,
                    ..Policy::default()
                },
                "--cpu-limit-factor",
            ),
            (
                Policy {
                    cpu_limit_min: Cpu(0),
                    ..Policy::default()
                },
                "--cpu-limit-min",
            ),
            (
                Policy {
                    memory_headroom: 0.9,
                    ..Policy::default()
                },
                "--memory-headroom",
            ),
            (
                Policy {
                    min_memory: Memory(8 * GI),
                    ..Policy::default()
                },
                "--min-memory",
            ),
            (
                Policy {
                    cpu_step_millis: 0,
                    ..Policy::default()
                },
                "--cpu-step",
            ),
            (
                Policy {
                    default_requests: Resources {
                        cpu: Cpu(3000),
                        memory: Memory(128 * MI),
                    },
                    ..Policy::default()
                },
                "--default-cpu",
            ),
        ];
        for (p, flag) in cases {
            let e = p.validate().unwrap_err();
            assert!(e.contains(flag), "{e}");
        }
    }
}
