//! Mesh scope (issue 14): how many Services an `istio-proxy` sees, following Istio's
//! `Sidecar` and `exportTo` rules, and the memory model that turns that count into an
//! expected proxy memory. Pure: the background source (`sources::mesh`) hands in the
//! objects and swaps in a [`MeshSnapshot`]; the pipeline only looks a pod's labels up.
//!
//! Istio's rules, as documented in the `Sidecar` and `Service`/`ServiceEntry` references
//! (istio.io/latest/docs/reference/config/networking/sidecar/,
//! .../service-entry/#ServiceEntry-export_to, and networking/v1alpha3/sidecar.proto,
//! `IstioEgressListener.hosts`):
//! - a `Sidecar` in the pod's namespace whose `workloadSelector.labels` select the pod wins
//!   over the namespace's selector-less one; with neither, the selector-less `Sidecar` of
//!   the root namespace (meshConfig.rootNamespace, `--istio-root-namespace`) applies;
//!   with none, the proxy sees every Service exported to its namespace. Selector `Sidecar`s
//!   of the root namespace apply only to pods of the root namespace. Two candidates at the
//!   same level are "undefined behaviour" in Istio; like istiod we take the oldest (then by
//!   name), which is the order the source hands them in.
//! - `egress[].hosts` are `namespace/dnsName`: namespace `*` (any), `.` (the workload's
//!   namespace; for the root-namespace default, the namespace it is applied to, as istiod
//!   converts it per namespace), `~` (none) or a name; dnsName `*`, an FQDN, or
//!   `*.suffix`. A `Sidecar` without egress listeners gets istiod's default `*/*`.
//! - `exportTo` (Service annotation `networking.istio.io/exportTo`, comma-separated;
//!   ServiceEntry `spec.exportTo`): `.` the object's own namespace, `*` every namespace,
//!   `~` none, or namespace names; absent means every namespace (meshConfig
//!   `defaultServiceExportTo` left at its default).
//! - a Kubernetes Service is one host `name.namespace.svc.cluster.local`; a ServiceEntry
//!   counts once per host.

use crate::engine::quantity::{Memory, MI};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The Service annotation Istio reads for a Service's `exportTo`.
pub const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";
/// The cluster domain in Service hosts.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";

/// Where a Service or ServiceEntry is visible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTo {
    All,
    /// Only these namespaces (empty: `~`, nowhere).
    Only(BTreeSet<String>),
}

impl ExportTo {
    /// From `exportTo` values of an object in namespace `own`. No value: every namespace.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>, own: &str) -> ExportTo {
        let mut set = BTreeSet::new();
        let mut any = false;
        for v in values.into_iter().map(str::trim).filter(|v| !v.is_empty()) {
            any = true;
            match v {
                "*" => return ExportTo::All,
                "." => {
                    set.insert(own.to_string());
                }
                "~" => {}
                ns => {
                    set.insert(ns.to_string());
                }
            }
        }
        if any {
            ExportTo::Only(set)
        } else {
            ExportTo::All
        }
    }

    /// From the Service annotation value (comma-separated).
    pub fn from_annotation(value: Option<&str>, own: &str) -> ExportTo {
        ExportTo::parse(value.unwrap_or_default().split(','), own)
    }

    pub fn visible_in(&self, namespace: &str) -> bool {
        match self {
            ExportTo::All => true,
            ExportTo::Only(set) => set.contains(namespace),
        }
    }
}

/// One host of the mesh: a Kubernetes Service or one host of a ServiceEntry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshService {
    /// The namespace of the Service / ServiceEntry object.
    pub namespace: String,
    /// `name.ns.svc.cluster.local`, or the ServiceEntry host (lower case).
    pub host: String,
    pub export_to: ExportTo,
}

impl MeshService {
    pub fn service(namespace: &str, name: &str, export_to: ExportTo) -> MeshService {
        MeshService {
            namespace: namespace.to_string(),
            host: format!("{name}.{namespace}.{CLUSTER_DOMAIN}"),
            export_to,
        }
    }

    pub fn entry_host(namespace: &str, host: &str, export_to: ExportTo) -> MeshService {
        MeshService {
            namespace: namespace.to_string(),
            host: host.to_ascii_lowercase(),
            export_to,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NsSel {
    /// `*`
    Any,
    /// `.`: the workload's namespace.
    Local,
    /// `~`: no namespace.
    Nothing,
    Named(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSel {
    /// `*`
    Any,
    Exact(String),
    /// `*.example.com` kept as `.example.com`.
    Suffix(String),
}

/// One `egress[].hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressHost {
    pub namespace: NsSel,
    pub name: NameSel,
}

impl EgressHost {
    /// Parse `namespace/dnsName`; the error names the value.
    pub fn parse(s: &str) -> Result<EgressHost, String> {
        let Some((ns, name)) = s.split_once('/') else {
            return Err(format!(
                "egress host {s:?} is not namespace/dnsName (e.g. \"./*\", \"istio-system/*\")"
            ));
        };
        let namespace = match ns {
            "*" => NsSel::Any,
            "." => NsSel::Local,
            "~" => NsSel::Nothing,
            "" => return Err(format!("egress host {s:?}: empty namespace")),
            n if n.contains('*') || n.contains('/') => {
                return Err(format!("egress host {s:?}: namespace {n:?} is not a name"))
            }
            n => NsSel::Named(n.to_string()),
        };
        let name = name.to_ascii_lowercase();
        let name = match name.as_str() {
            "*" => NameSel::Any,
            "" => return Err(format!("egress host {s:?}: empty dnsName")),
            n if n.contains('/') => return Err(format!("egress host {s:?}: more than one '/'")),
            n => match n.strip_prefix('*') {
                Some(rest) if rest.starts_with('.') && rest.len() > 1 && !rest.contains('*') => {
                    NameSel::Suffix(rest.to_string())
                }
                Some(_) => {
                    return Err(format!(
                        "egress host {s:?}: a wildcard is allowed only as the left-most label"
                    ))
                }
                None if n.contains('*') => {
                    return Err(format!(
                        "egress host {s:?}: a wildcard is allowed only as the left-most label"
                    ))
                }
                None => NameSel::Exact(n.to_string()),
            },
        };
        Ok(EgressHost { namespace, name })
    }

    pub fn is_everything(&self) -> bool {
        self.namespace == NsSel::Any && self.name == NameSel::Any
    }

    /// Does this host select `svc` for a workload in `pod_ns`?
    pub fn matches(&self, svc: &MeshService, pod_ns: &str) -> bool {
        let ns_ok = match &self.namespace {
            NsSel::Any => true,
            NsSel::Local => svc.namespace == pod_ns,
            NsSel::Nothing => false,
            NsSel::Named(n) => svc.namespace == *n,
        };
        ns_ok
            && match &self.name {
                NameSel::Any => true,
                NameSel::Exact(h) => {
                    svc.host == *h
                        // a wildcard ServiceEntry host covers an exact egress name
                        || svc
                            .host
                            .strip_prefix('*')
                            .is_some_and(|suffix| h.ends_with(suffix))
                }
                NameSel::Suffix(suffix) => svc.host.ends_with(suffix.as_str()),
            }
    }
}

/// A `Sidecar` as scoping sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SidecarConfig {
    pub namespace: String,
    pub name: String,
    /// `workloadSelector.labels`; None or empty: selector-less.
    pub selector: Option<BTreeMap<String, String>>,
    /// The egress hosts, or why they could not be read (the workloads it applies to are
    /// then taken as seeing everything).
    pub egress: Result<Vec<EgressHost>, String>,
}

impl SidecarConfig {
    /// From the Sidecar's `egress[].hosts` lists (None: no egress listener).
    pub fn new(
        namespace: &str,
        name: &str,
        selector: Option<BTreeMap<String, String>>,
        egress_hosts: Option<Vec<String>>,
    ) -> SidecarConfig {
        let egress = match egress_hosts {
            None => Ok(vec![EgressHost {
                namespace: NsSel::Any,
                name: NameSel::Any,
            }]),
            Some(hosts) => hosts.iter().map(|h| EgressHost::parse(h)).collect(),
        };
        SidecarConfig {
            namespace: namespace.to_string(),
            name: name.to_string(),
            selector: selector.filter(|s| !s.is_empty()),
            egress,
        }
    }

    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector
            .as_ref()
            .is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// The Sidecar that applies to a pod (see the module docs); `sidecars` in precedence order.
pub fn select_sidecar<'a>(
    sidecars: &'a [SidecarConfig],
    namespace: &str,
    labels: &BTreeMap<String, String>,
    root_namespace: &str,
) -> Option<&'a SidecarConfig> {
    let in_ns = || sidecars.iter().filter(move |s| s.namespace == namespace);
    in_ns()
        .find(|s| s.selects(labels))
        .or_else(|| in_ns().find(|s| s.selector.is_none()))
        .or_else(|| {
            sidecars
                .iter()
                .find(|s| s.namespace == root_namespace && s.selector.is_none())
        })
}

/// What a workload sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    pub services: usize,
    /// No Sidecar, a `*/*` egress host, or a malformed Sidecar: everything exported.
    pub unscoped: bool,
    /// The Sidecar's egress could not be read.
    pub error: Option<String>,
}

/// Count the services a workload in `pod_ns` sees under `sidecar`.
pub fn visible(services: &[MeshService], pod_ns: &str, sidecar: Option<&SidecarConfig>) -> Visible {
    let exported = services.iter().filter(|s| s.export_to.visible_in(pod_ns));
    match sidecar.map(|s| &s.egress) {
        None => Visible {
            services: exported.count(),
            unscoped: true,
            error: None,
        },
        Some(Err(e)) => Visible {
            services: exported.count(),
            unscoped: true,
            error: Some(e.clone()),
        },
        Some(Ok(hosts)) => Visible {
            services: exported
                .filter(|s| hosts.iter().any(|h| h.matches(s, pod_ns)))
                .count(),
            unscoped: hosts.iter().any(EgressHost::is_everything),
            error: None,
        },
    }
}

/// The namespace-local scope `mesh suggest` starts from: `./*` and `<root>/*`.
pub fn local_scope(pod_ns: &str, root_namespace: &str) -> SidecarConfig {
    SidecarConfig::new(
        pod_ns,
        "local",
        None,
        Some(vec!["./*".into(), format!("{root_namespace}/*")]),
    )
}

#[derive(Debug, Clone, PartialEq)]
struct ScopedSidecar {
    id: String,
    selector: BTreeMap<String, String>,
    visible: Visible,
}

/// Precomputed scope of one namespace.
#[derive(Debug, Clone, PartialEq, Default)]
struct NsScope {
    /// Everything exported to the namespace (no Sidecar).
    all: usize,
    /// Under `./*` + `<root>/*`.
    local: usize,
    /// Selector Sidecars of the namespace, in precedence order.
    selected: Vec<ScopedSidecar>,
    /// The namespace's selector-less Sidecar, else the root namespace's.
    default: Option<(String, Visible)>,
}

/// The scope of one pod, looked up in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope<'a> {
    /// `namespace/name` of the applying Sidecar.
    pub sidecar: Option<&'a str>,
    pub visible: usize,
    pub unscoped: bool,
    /// What a namespace-local Sidecar (`./*`, `<root>/*`) would leave visible.
    pub local: usize,
    pub error: Option<&'a str>,
}

/// Everything the pipeline needs about the mesh: per namespace, the visible-service count
/// under each Sidecar, so a pod's scope is a label match and a lookup.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MeshSnapshot {
    /// False until the first complete lists: the pipeline then ignores the snapshot.
    pub synced: bool,
    /// Istio's CRDs were found (else scope is "all Services").
    pub istio_crds: bool,
    pub root_namespace: String,
    pub services: usize,
    pub sidecars: usize,
    /// Sidecars whose egress could not be read.
    pub malformed_sidecars: usize,
    namespaces: HashMap<String, NsScope>,
    /// Any namespace not named anywhere.
    other: NsScope,
    pub model: MemoryModel,
}

impl MeshSnapshot {
    /// Precompute every namespace's scopes. `sidecars` in precedence order (oldest first).
    pub fn build(
        services: &[MeshService],
        sidecars: &[SidecarConfig],
        root_namespace: &str,
        istio_crds: bool,
        model: MemoryModel,
    ) -> MeshSnapshot {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        names.insert(root_namespace);
        for s in services {
            names.insert(&s.namespace);
            if let ExportTo::Only(set) = &s.export_to {
                names.extend(set.iter().map(String::as_str));
            }
        }
        for sc in sidecars {
            names.insert(&sc.namespace);
            for h in sc.egress.iter().flatten() {
                if let NsSel::Named(n) = &h.namespace {
                    names.insert(n);
                }
            }
        }
        let scope_of = |ns: &str| {
            let selected = sidecars
                .iter()
                .filter(|s| s.namespace == ns)
                .filter_map(|s| {
                    Some(ScopedSidecar {
                        id: s.id(),
                        selector: s.selector.clone()?,
                        visible: visible(services, ns, Some(s)),
                    })
                })
                .collect();
            let default = select_sidecar(sidecars, ns, &BTreeMap::new(), root_namespace)
                .map(|s| (s.id(), visible(services, ns, Some(s))));
            NsScope {
                all: visible(services, ns, None).services,
                local: visible(services, ns, Some(&local_scope(ns, root_namespace))).services,
                selected,
                default,
            }
        };
        let namespaces = names
            .iter()
            .map(|ns| (ns.to_string(), scope_of(ns)))
            .collect();
        MeshSnapshot {
            synced: true,
            istio_crds,
            root_namespace: root_namespace.to_string(),
            services: services.len(),
            sidecars: sidecars.len(),
            malformed_sidecars: sidecars.iter().filter(|s| s.egress.is_err()).count(),
            namespaces,
            // No real namespace is named "": it stands for every namespace named nowhere.
            other: scope_of(""),
            model,
        }
    }

    /// The scope of a pod in `namespace` with `labels`.
    pub fn scope(&self, namespace: &str, labels: &BTreeMap<String, String>) -> Scope<'_> {
        let ns = self.namespaces.get(namespace).unwrap_or(&self.other);
        let chosen = ns
            .selected
            .iter()
            .find(|s| s.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            .map(|s| (s.id.as_str(), &s.visible))
            .or(ns.default.as_ref().map(|(id, v)| (id.as_str(), v)));
        match chosen {
            Some((id, v)) => Scope {
                sidecar: Some(id),
                visible: v.services,
                unscoped: v.unscoped,
                local: ns.local,
                error: v.error.as_deref(),
            },
            None => Scope {
                sidecar: None,
                visible: ns.all,
                unscoped: true,
                local: ns.local,
                error: None,
            },
        }
    }

    /// The scope of a namespace's pods when no selector Sidecar is known to apply; None
    /// when the namespace has selector Sidecars (the pods' labels would decide).
    pub fn namespace_scope(&self, namespace: &str) -> Option<Scope<'_>> {
        let ns = self.namespaces.get(namespace).unwrap_or(&self.other);
        ns.selected
            .is_empty()
            .then(|| self.scope(namespace, &BTreeMap::new()))
    }
}

/// Expected proxy memory = base + per-service × visible services.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryModel {
    pub base_bytes: f64,
    pub per_service_bytes: f64,
    /// Relative error allowed for above a model-based request when setting its limit.
    pub error: f64,
    pub calibration: Calibration,
}

/// How the model's coefficients were obtained.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Calibration {
    /// True when fitted from the cluster; false: the flag defaults.
    pub calibrated: bool,
    /// Workloads with confident proxy memory history and a known scope.
    pub workloads: usize,
    /// R² of the fitted line over those workloads (None: not fitted).
    pub r_squared: Option<f64>,
    /// Median |residual| ÷ observed of the fit.
    pub median_relative_error: Option<f64>,
    /// Why the defaults are in use, or what was fitted.
    pub note: String,
}

/// Defaults from operators' reports: a proxy with 2–3 services in scope at ~25 MB, with 400
/// services at ~250 MB (issue 14).
pub const DEFAULT_BASE: Memory = Memory(24 * MI);
/// 0.56Mi per visible service.
pub const DEFAULT_PER_SERVICE: Memory = Memory(587_203);
/// The model's relative error when it is not calibrated.
pub const DEFAULT_ERROR: f64 = 0.5;
/// Bounds of a calibrated model's relative error.
const MIN_ERROR: f64 = 0.15;
const MAX_ERROR: f64 = 1.0;
/// A fit with a lower R² is not used.
pub const MIN_R_SQUARED: f64 = 0.5;
/// A per-service slope above this is not sane (Envoy keeps a few KiB to a few MiB per
/// cluster).
const MAX_SLOPE: f64 = 16.0 * MI as f64;
const MAX_BASE: f64 = 2.0 * 1024.0 * MI as f64;
/// Theil–Sen is quadratic: at most this many points (evenly sampled) enter the fit.
const MAX_FIT_POINTS: usize = 1500;

impl Default for MemoryModel {
    fn default() -> Self {
        MemoryModel::defaults(DEFAULT_BASE, DEFAULT_PER_SERVICE, "defaults")
    }
}

impl MemoryModel {
    pub fn defaults(base: Memory, per_service: Memory, note: &str) -> MemoryModel {
        MemoryModel {
            base_bytes: base.0 as f64,
            per_service_bytes: per_service.0 as f64,
            error: DEFAULT_ERROR,
            calibration: Calibration {
                note: note.to_string(),
                ..Calibration::default()
            },
        }
    }

    /// Expected memory for `services` visible, rounded up to a MiB.
    pub fn expected(&self, services: usize) -> Memory {
        let v = self.base_bytes + self.per_service_bytes * services as f64;
        let mib = (v / MI as f64 - 1e-9).ceil().max(0.0);
        Memory((mib as u64).saturating_mul(MI))
    }

    /// `24Mi + 0.56Mi × services`.
    pub fn describe(&self) -> String {
        let mib = |b: f64| {
            let s = format!("{:.2}", b / MI as f64);
            let s = s.trim_end_matches('0').trim_end_matches('.').to_string();
            format!("{s}Mi")
        };
        format!(
            "{} + {} × services",
            mib(self.base_bytes),
            mib(self.per_service_bytes)
        )
    }
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Fit the model to `(visible services, peak proxy memory bytes)` of workloads with
/// confident history: Theil–Sen (median of pairwise slopes, median intercept), robust to a
/// few outliers. The fit is used only with at least `min_workloads` points, two distinct
/// service counts, a positive slope below 16Mi per service, an intercept in [0, 2Gi] and
/// R² ≥ 0.5; otherwise `defaults` (with the reason in its note).
pub fn calibrate(
    points: &[(usize, u64)],
    defaults: &MemoryModel,
    min_workloads: usize,
) -> MemoryModel {
    let fallback = |why: String| {
        let mut m = defaults.clone();
        m.calibration = Calibration {
            calibrated: false,
            workloads: points.len(),
            r_squared: None,
            median_relative_error: None,
            note: why,
        };
        m
    };
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(_, y)| *y > 0)
        .map(|&(x, y)| (x as f64, y as f64))
        .collect();
    if pts.len() < min_workloads.max(2) {
        return fallback(format!(
            "defaults: {} workloads with confident history and a known scope (needs {})",
            pts.len(),
            min_workloads.max(2)
        ));
    }
    let sample: Vec<(f64, f64)> = if pts.len() > MAX_FIT_POINTS {
        let step = pts.len() as f64 / MAX_FIT_POINTS as f64;
        (0..MAX_FIT_POINTS)
            .filter_map(|i| pts.get((i as f64 * step) as usize).copied())
            .collect()
    } else {
        pts.clone()
    };
    let mut slopes = Vec::new();
    for (i, a) in sample.iter().enumerate() {
        for b in &sample[i + 1..] {
            if a.0 != b.0 {
                slopes.push((b.1 - a.1) / (b.0 - a.0));
            }
        }
    }
    let Some(slope) = median(&mut slopes) else {
        return fallback("defaults: every workload sees the same number of services".into());
    };
    let mut intercepts: Vec<f64> = pts.iter().map(|(x, y)| y - slope * x).collect();
    let intercept = median(&mut intercepts).unwrap_or(0.0);
    if !(slope > 0.0 && slope <= MAX_SLOPE) {
        return fallback(format!(
            "defaults: fitted slope {:.3}Mi per service is not positive and sane",
            slope / MI as f64
        ));
    }
    if !(0.0..=MAX_BASE).contains(&intercept) {
        return fallback(format!(
            "defaults: fitted base {:.1}Mi is outside [0, 2Gi]",
            intercept / MI as f64
        ));
    }
    // Fit quality over the inliers: residuals within 3 scaled MADs (outliers such as a
    // leaking or OOM-looping proxy are what Theil–Sen ignores; they must not sink R²).
    let resid: Vec<f64> = pts.iter().map(|p| p.1 - intercept - slope * p.0).collect();
    let mut abs: Vec<f64> = resid.iter().map(|r| r.abs()).collect();
    let mad = median(&mut abs).unwrap_or(0.0);
    let cut = (3.0 * 1.4826 * mad).max(MI as f64);
    let inliers: Vec<(f64, f64)> = pts
        .iter()
        .zip(&resid)
        .filter(|(_, r)| r.abs() <= cut)
        .map(|(p, _)| *p)
        .collect();
    let mean = inliers.iter().map(|p| p.1).sum::<f64>() / inliers.len().max(1) as f64;
    let ss_tot: f64 = inliers.iter().map(|p| (p.1 - mean).powi(2)).sum();
    let ss_res: f64 = inliers
        .iter()
        .map(|p| (p.1 - intercept - slope * p.0).powi(2))
        .sum();
    let r2 = if ss_tot > 0.0 && inliers.len() * 2 >= pts.len() {
        1.0 - ss_res / ss_tot
    } else {
        0.0
    };
    let mut rel: Vec<f64> = pts.iter().zip(&resid).map(|(p, r)| r.abs() / p.1).collect();
    let mdre = median(&mut rel).unwrap_or(0.0);
    let trimmed = pts.len() - inliers.len();
    if r2 < MIN_R_SQUARED {
        let mut m = fallback(format!(
            "defaults: fit R² {r2:.2} below {MIN_R_SQUARED} ({} workloads disagree)",
            pts.len()
        ));
        m.calibration.r_squared = Some(r2);
        return m;
    }
    MemoryModel {
        base_bytes: intercept,
        per_service_bytes: slope,
        error: (3.0 * mdre).clamp(MIN_ERROR, MAX_ERROR),
        calibration: Calibration {
            calibrated: true,
            workloads: pts.len(),
            r_squared: Some(r2),
            median_relative_error: Some(mdre),
            note: format!(
                "calibrated on {} workloads ({trimmed} outliers), R² {r2:.2}",
                pts.len()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn sc(ns: &str, name: &str, sel: &[(&str, &str)], hosts: &[&str]) -> SidecarConfig {
        SidecarConfig::new(
            ns,
            name,
            (!sel.is_empty()).then(|| labels(sel)),
            Some(hosts.iter().map(|h| h.to_string()).collect()),
        )
    }

    /// Sidecar selection: (pod namespace, pod labels, expected Sidecar id).
    #[test]
    fn sidecar_selection_table() {
        let sidecars = vec![
            sc("a", "for-web", &[("app", "web")], &["./*"]),
            sc("a", "default", &[], &["./*"]),
            sc("b", "for-db", &[("app", "db"), ("tier", "x")], &["./*"]),
            sc("istio-system", "default", &[], &["./*", "istio-system/*"]),
            sc("istio-system", "gw", &[("app", "gw")], &["*/*"]),
            sc("c", "other-labels", &[("app", "nope")], &["./*"]),
        ];
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>);
        let cases: &[Case] = &[
            // selector in the namespace wins over the namespace default
            ("a", &[("app", "web")], Some("a/for-web")),
            ("a", &[("app", "api")], Some("a/default")),
            ("a", &[], Some("a/default")),
            // every selector label must match; else the root default
            ("b", &[("app", "db"), ("tier", "x")], Some("b/for-db")),
            ("b", &[("app", "db")], Some("istio-system/default")),
            // a selector Sidecar of the root namespace selects only root-namespace pods
            ("d", &[("app", "gw")], Some("istio-system/default")),
            ("istio-system", &[("app", "gw")], Some("istio-system/gw")),
            // a selector that matches nothing falls through to the root default
            ("c", &[("app", "web")], Some("istio-system/default")),
        ];
        for (ns, l, want) in cases {
            let got = select_sidecar(&sidecars, ns, &labels(l), "istio-system").map(|s| s.id());
            assert_eq!(got.as_deref(), *want, "pod in {ns} with {l:?}");
        }
        // No root default: nothing applies.
        let no_root = &sidecars[..3];
        assert_eq!(
            select_sidecar(no_root, "d", &BTreeMap::new(), "istio-system"),
            None
        );
        // Another root namespace.
        assert_eq!(
            select_sidecar(&sidecars, "d", &BTreeMap::new(), "istio-config"),
            None
        );
    }

    fn svc(ns: &str, name: &str) -> MeshService {
        MeshService::service(ns, name, ExportTo::All)
    }

    /// Host matching: (egress host, service namespace, host, pod namespace, matches?).
    #[test]
    fn host_matching_table() {
        let cases = [
            ("./*", "a", "x.a.svc.cluster.local", "a", true),
            ("./*", "b", "x.b.svc.cluster.local", "a", false),
            ("*/*", "b", "x.b.svc.cluster.local", "a", true),
            ("~/*", "a", "x.a.svc.cluster.local", "a", false),
            ("b/*", "b", "x.b.svc.cluster.local", "a", true),
            ("b/*", "c", "x.c.svc.cluster.local", "a", false),
            (
                "b/x.b.svc.cluster.local",
                "b",
                "x.b.svc.cluster.local",
                "a",
                true,
            ),
            (
                "b/y.b.svc.cluster.local",
                "b",
                "x.b.svc.cluster.local",
                "a",
                false,
            ),
            ("*/*.example.com", "e", "api.example.com", "a", true),
            ("*/*.example.com", "e", "example.com", "a", false),
            ("*/*.example.com", "e", "api.example.org", "a", false),
            ("e/API.Example.com", "e", "api.example.com", "a", true),
            ("*/api.example.com", "e", "*.example.com", "a", true),
            (
                "*/x.b.svc.cluster.local",
                "b",
                "x.b.svc.cluster.local",
                "a",
                true,
            ),
        ];
        for (host, ns, h, pod_ns, want) in cases {
            let e = EgressHost::parse(host).unwrap();
            let s = MeshService::entry_host(ns, h, ExportTo::All);
            assert_eq!(
                e.matches(&s, pod_ns),
                want,
                "{host} vs {ns}/{h} from {pod_ns}"
            );
        }
        for bad in [
            "*",
            "x.example.com",
            "/x",
            "a/",
            "a/b/c",
            "a/foo.*.com",
            "a*/x",
            "a/*x.com",
        ] {
            assert!(EgressHost::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn export_to_rules() {
        let e = ExportTo::from_annotation(Some("."), "a");
        assert!(e.visible_in("a") && !e.visible_in("b"));
        let e = ExportTo::from_annotation(Some("b, c"), "a");
        assert!(!e.visible_in("a") && e.visible_in("b") && e.visible_in("c"));
        let e = ExportTo::from_annotation(Some(".,b"), "a");
        assert!(e.visible_in("a") && e.visible_in("b") && !e.visible_in("c"));
        assert_eq!(ExportTo::from_annotation(Some("*"), "a"), ExportTo::All);
        assert_eq!(ExportTo::from_annotation(None, "a"), ExportTo::All);
        assert_eq!(ExportTo::from_annotation(Some(""), "a"), ExportTo::All);
        let none = ExportTo::from_annotation(Some("~"), "a");
        assert!(!none.visible_in("a") && !none.visible_in("b"));
        assert_eq!(ExportTo::parse([".", "*"], "a"), ExportTo::All);
    }

    /// Visible counts worked by hand.
    #[test]
    fn visible_counts_and_snapshot() {
        let mut services = vec![
            svc("a", "s1"),
            svc("a", "s2"),
            svc("b", "s1"),
            MeshService::service("b", "private", ExportTo::parse(["."], "b")),
            MeshService::service("b", "to-a", ExportTo::parse(["a"], "b")),
            svc("istio-system", "istiod"),
            MeshService::entry_host("e", "api.example.com", ExportTo::All),
            MeshService::entry_host("e", "db.example.org", ExportTo::parse(["."], "e")),
        ];
        // From a: everything but b/private and e's db = 6.
        assert_eq!(visible(&services, "a", None).services, 6);
        // From c: also not b/to-a = 5.
        assert_eq!(visible(&services, "c", None).services, 5);
        let local = local_scope("a", "istio-system");
        // a/s1, a/s2, istiod
        assert_eq!(visible(&services, "a", Some(&local)).services, 3);
        let s = sc("a", "x", &[], &["b/*", "*/*.example.com"]);
        // b/s1, b/to-a, api.example.com
        assert_eq!(
            visible(&services, "a", Some(&s)),
            Visible {
                services: 3,
                unscoped: false,
                error: None
            }
        );
        let all = sc("a", "x", &[], &["./*", "*/*"]);
        assert!(visible(&services, "a", Some(&all)).unscoped);
        let bad = sc("a", "x", &[], &["nonsense"]);
        let v = visible(&services, "a", Some(&bad));
        assert_eq!((v.services, v.unscoped), (6, true));
        assert!(v.error.unwrap().contains("nonsense"));

        let sidecars = vec![
            sc("a", "web", &[("app", "web")], &["b/*"]),
            sc("istio-system", "default", &[], &["./*", "istio-system/*"]),
        ];
        services.push(svc("z", "only-z"));
        let snap = MeshSnapshot::build(
            &services,
            &sidecars,
            "istio-system",
            true,
            MemoryModel::default(),
        );
        let web = snap.scope("a", &labels(&[("app", "web")]));
        assert_eq!(
            (web.sidecar, web.visible, web.unscoped),
            (Some("a/web"), 2, false)
        );
        let other = snap.scope("a", &labels(&[("app", "api")]));
        // root default with "." = a: a/s1, a/s2, istiod
        assert_eq!(
            (other.sidecar, other.visible),
            (Some("istio-system/default"), 3)
        );
        // an unnamed namespace: only istiod
        let fresh = snap.scope("fresh", &BTreeMap::new());
        assert_eq!(
            (fresh.sidecar, fresh.visible, fresh.local),
            (Some("istio-system/default"), 1, 1)
        );
        assert!(snap.namespace_scope("a").is_none());
        assert_eq!(snap.namespace_scope("z").unwrap().visible, 2);
        let unscoped = MeshSnapshot::build(
            &services,
            &[],
            "istio-system",
            false,
            MemoryModel::default(),
        );
        let s = unscoped.scope("fresh", &BTreeMap::new());
        // everything exported everywhere: a/s1 a/s2 b/s1 istiod api z/only-z
        assert_eq!((s.sidecar, s.visible, s.unscoped), (None, 6, true));
    }

    #[test]
    fn model_defaults_match_the_reported_figures() {
        let m = MemoryModel::default();
        assert_eq!(m.expected(412), Memory(255 * MI));
        // ~25 MB with 2-3 services, ~250 MB with 400.
        assert_eq!(m.expected(3), Memory(26 * MI));
        assert_eq!(m.expected(400), Memory(249 * MI));
        assert_eq!(m.describe(), "24Mi + 0.56Mi × services");
    }

    fn line(base_mi: f64, per_mi: f64, xs: &[usize]) -> Vec<(usize, u64)> {
        xs.iter()
            .map(|&x| (x, ((base_mi + per_mi * x as f64) * MI as f64) as u64))
            .collect()
    }

    #[test]
    fn calibration_recovers_a_known_slope_despite_outliers() {
        let xs: Vec<usize> = (0..20).map(|i| 10 + i * 37).collect();
        let mut pts = line(40.0, 0.3, &xs);
        // ±3 % wobble, and two wild outliers (an OOM-ing proxy, a leak)
        for (i, p) in pts.iter_mut().enumerate() {
            let f = if i % 2 == 0 { 1.03 } else { 0.97 };
            p.1 = (p.1 as f64 * f) as u64;
        }
        pts[3].1 *= 6;
        pts[11].1 /= 5;
        let m = calibrate(&pts, &MemoryModel::default(), 10);
        assert!(m.calibration.calibrated, "{:?}", m.calibration);
        let per = m.per_service_bytes / MI as f64;
        let base = m.base_bytes / MI as f64;
        assert!((per - 0.3).abs() < 0.02, "slope {per}");
        assert!((base - 40.0).abs() < 6.0, "base {base}");
        assert_eq!(m.calibration.workloads, 20);
        assert!(m.error >= MIN_ERROR && m.error <= MAX_ERROR);
    }

    #[test]
    fn calibration_falls_back_on_too_few_or_contradictory() {
        let d = MemoryModel::default();
        let few = line(40.0, 0.3, &[10, 50, 90]);
        let m = calibrate(&few, &d, 10);
        assert!(!m.calibration.calibrated);
        assert_eq!(m.per_service_bytes, d.per_service_bytes);
        assert!(
            m.calibration.note.contains("needs 10"),
            "{}",
            m.calibration.note
        );
        // memory falling as services grow
        let falling = line(400.0, -0.3, &(1..=12).map(|i| i * 50).collect::<Vec<_>>());
        let m = calibrate(&falling, &d, 10);
        assert!(!m.calibration.calibrated);
        assert!(
            m.calibration.note.contains("not positive"),
            "{}",
            m.calibration.note
        );
        // all at the same count
        let same = line(40.0, 0.3, &[100; 12]);
        assert!(!calibrate(&same, &d, 10).calibration.calibrated);
        // no relation at all
        let noise: Vec<(usize, u64)> = (0..12)
            .map(|i| (i * 40, [100u64, 300, 120, 280, 90, 310][i % 6] * MI))
            .collect();
        let m = calibrate(&noise, &d, 10);
        assert!(!m.calibration.calibrated, "{:?}", m.calibration);
    }
}
