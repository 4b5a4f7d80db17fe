//! Cluster constraints that judge the pod after every mutating webhook, ours included
//! (DESIGN §8): LimitRange validation, pod validation and ResourceQuota admission.
//! `sources::cluster` keeps a [`ClusterSnapshot`] fresh in the background.

use crate::engine::quantity::{format_cpu, format_memory, Cpu, Memory, Quantity};
use crate::engine::sizing::{Resources, PROXY};
use k8s_openapi::api::core::v1::{
    Container, LimitRange, LimitRangeItem, LimitRangeSpec, PodSpec, ResourceQuota,
    ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use std::collections::{BTreeMap, HashMap};

/// The LimitRanges and ResourceQuotas of one namespace, as the apiserver stores them.
#[derive(Debug, Clone, Default)]
pub struct NamespaceConstraints {
    pub limit_ranges: Vec<LimitRange>,
    pub quotas: Vec<ResourceQuota>,
}

/// Every namespace's constraints. Empty (and `synced == false`) when
/// `--cluster-constraints` is off.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    pub by_namespace: HashMap<String, NamespaceConstraints>,
    /// The background source has completed a full list at least once.
    pub synced: bool,
}

impl ClusterSnapshot {
    pub fn get(&self, namespace: &str) -> Option<&NamespaceConstraints> {
        self.by_namespace.get(namespace)
    }
}

// ---------------------------------------------------------------------------------------------
// The admission model (pure). Kubernetes v1.28 semantics, checked against
// `../shared/oracles/` (a real kube-apiserver's verdicts) by `tests/oracles.rs`.
// ---------------------------------------------------------------------------------------------

/// A resource list parsed into exact nano-units (`Quantity::nanos`), by resource name.
type Parsed = BTreeMap<String, u128>;
type RawList = BTreeMap<String, KQuantity>;

const CPU: &str = "cpu";
const MEMORY: &str = "memory";
/// The `Violation::object` of a pod validation (HTTP 422) refusal.
pub const POD_VALIDATION: &str = "pod validation";

/// One reason the apiserver refuses a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// `LimitRange NS/NAME`, `ResourceQuota NS/NAME` or [`POD_VALIDATION`].
    pub object: String,
    pub message: String,
}

impl Violation {
    /// The HTTP status the apiserver answers with: 422 Invalid for pod validation, 403
    /// Forbidden for LimitRanger and ResourceQuota admission.
    pub fn code(&self) -> u16 {
        if self.object == POD_VALIDATION {
            422
        } else {
            403
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.object, self.message)
    }
}

fn parse_list(list: Option<&RawList>) -> Parsed {
    list.map(|l| {
        l.iter()
            .filter_map(|(k, v)| Quantity::parse(&v.0).ok().map(|q| (k.clone(), q.nanos())))
            .collect()
    })
    .unwrap_or_default()
}

/// Render nano-units the way the apiserver prints the resource (millicores for CPU).
fn show(resource: &str, nanos: u128) -> String {
    let units = nanos.div_ceil(1_000_000_000);
    if resource == CPU || resource.ends_with(".cpu") {
        format_cpu(u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    } else {
        format_memory(u64::try_from(units).unwrap_or(u64::MAX))
    }
}

/// Go's `Quantity.MilliValue()` (rounded up), the unit LimitRanger compares in
/// (`requestLimitEnforcedValues` in plugin/pkg/admission/limitranger/admission.go).
fn milli(nanos: u128) -> u128 {
    nanos.div_ceil(1_000_000)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

fn object_name(
    kind: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> String {
    let name = meta.name.as_deref().unwrap_or("");
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

// ---- LimitRange objects ----------------------------------------------------------------------

/// The LimitRange spec as the apiserver stores it: for `Container` items, `default` falls back
/// to `max`, then `defaultRequest` to `default`, then to `min` (`SetDefaults_LimitRangeItem`,
/// pkg/apis/core/v1/defaults.go). Idempotent.
pub fn stored_limit_range(spec: &LimitRangeSpec) -> LimitRangeSpec {
    let mut out = spec.clone();
    for item in &mut out.limits {
        if item.type_ != "Container" {
            continue;
        }
        let mut default = item.default.clone().unwrap_or_default();
        let mut default_request = item.default_request.clone().unwrap_or_default();
        for (k, v) in item.max.iter().flatten() {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &default {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        for (k, v) in item.min.iter().flatten() {
            default_request
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        item.default = (!default.is_empty()).then_some(default);
        item.default_request = (!default_request.is_empty()).then_some(default_request);
    }
    out
}

/// `ValidateLimitRange` (pkg/apis/core/validation/validation.go), run by the apiserver on the
/// stored (defaulted) form: per resource min ≤ defaultRequest ≤ default ≤ max, min ≤ max,
/// maxLimitRequestRatio ≥ 1 and ≤ max/min, no defaults on `Pod` items.
pub fn validate_limit_range(spec: &LimitRangeSpec) -> Result<(), String> {
    let stored = stored_limit_range(spec);
    let mut errs = Vec::new();
    for (i, item) in stored.limits.iter().enumerate() {
        let at = format!("spec.limits[{i}]");
        let raw_lists = [
            ("min", item.min.as_ref()),
            ("max", item.max.as_ref()),
            ("default", item.default.as_ref()),
            ("defaultRequest", item.default_request.as_ref()),
            (
                "maxLimitRequestRatio",
                item.max_limit_request_ratio.as_ref(),
            ),
        ];
        for (field, list) in raw_lists {
            for (k, v) in list.into_iter().flatten() {
                if Quantity::parse(&v.0).is_err() {
                    errs.push(format!("{at}.{field}[{k}]: invalid quantity {:?}", v.0));
                }
            }
        }
        if item.type_ == "Pod" {
            if item.default.as_ref().is_some_and(|d| !d.is_empty()) {
                errs.push(format!(
                    "{at}.default: may not be specified when `type` is 'Pod'"
                ));
            }
            if item.default_request.as_ref().is_some_and(|d| !d.is_empty()) {
                errs.push(format!(
                    "{at}.defaultRequest: may not be specified when `type` is 'Pod'"
                ));
            }
        }
        let min = parse_list(item.min.as_ref());
        let max = parse_list(item.max.as_ref());
        let def = parse_list(item.default.as_ref());
        let def_req = parse_list(item.default_request.as_ref());
        let ratio = parse_list(item.max_limit_request_ratio.as_ref());
        let keys: std::collections::BTreeSet<&String> = min
            .keys()
            .chain(max.keys())
            .chain(def.keys())
            .chain(def_req.keys())
            .chain(ratio.keys())
            .collect();
        for k in keys {
            let (mn, mx, d, dr, r) = (
                min.get(k),
                max.get(k),
                def.get(k),
                def_req.get(k),
                ratio.get(k),
            );
            let s = |v: &u128| show(k, *v);
            if let (Some(a), Some(b)) = (mn, mx) {
                if a > b {
                    errs.push(format!(
                        "{at}.min[{k}]: min value {} is greater than max value {}",
                        s(a),
                        s(b)
                    ));
                }
            }
            if let (Some(a), Some(b)) = (mn, dr) {
                if a > b {
                    errs.push(format!("{at}.defaultRequest[{k}]: min value {} is greater than default request value {}", s(a), s(b)));
                }
            }
            if let (Some(a), Some(b)) = (dr, mx) {
                if a > b {
                    errs.push(format!("{at}.defaultRequest[{k}]: default request value {} is greater than max value {}", s(a), s(b)));
                }
            }
            if let (Some(a), Some(b)) = (dr, d) {
                if a > b {
                    errs.push(format!("{at}.defaultRequest[{k}]: default request value {} is greater than default limit value {}", s(a), s(b)));
                }
            }
            if let (Some(a), Some(b)) = (mn, d) {
                if a > b {
                    errs.push(format!(
                        "{at}.default[{k}]: min value {} is greater than default value {}",
                        s(a),
                        s(b)
                    ));
                }
            }
            if let (Some(a), Some(b)) = (d, mx) {
                if a > b {
                    errs.push(format!(
                        "{at}.default[{k}]: default value {} is greater than max value {}",
                        s(a),
                        s(b)
                    ));
                }
            }
            if let Some(r) = r {
                if *r < 1_000_000_000 {
                    errs.push(format!(
                        "{at}.maxLimitRequestRatio[{k}]: ratio {} is less than 1",
                        show(CPU, *r)
                    ));
                }
                // ratio ≤ max/min, compared exactly: ratio × min ≤ max.
                if let (Some(a), Some(b)) = (mn, mx) {
                    if *a > 0 && r.saturating_mul(*a) > b.saturating_mul(1_000_000_000) {
                        errs.push(format!(
                            "{at}.maxLimitRequestRatio[{k}]: ratio is greater than max/min"
                        ));
                    }
                }
            }
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join(", "))
    }
}

fn stored_items(lr: &LimitRange) -> Vec<LimitRangeItem> {
    lr.spec
        .as_ref()
        .map(|s| stored_limit_range(s).limits)
        .unwrap_or_default()
}

// ---- Defaulting --------------------------------------------------------------------------

fn all_containers_mut(pod: &mut PodSpec) -> impl Iterator<Item = &mut Container> {
    pod.containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

/// The apiserver's pod defaulting (`SetDefaults_Pod`, pkg/apis/core/v1/defaults.go): for every
/// container and init container, a resource with a limit and no request gets request = limit.
/// It runs when the pod is decoded, so before LimitRanger, and again on a webhook's patched pod.
pub fn default_requests_to_limits(pod: &PodSpec) -> PodSpec {
    let mut out = pod.clone();
    for c in all_containers_mut(&mut out) {
        let Some(res) = c.resources.as_mut() else {
            continue;
        };
        let Some(limits) = res.limits.clone() else {
            continue;
        };
        let requests = res.requests.get_or_insert_with(BTreeMap::new);
        for (k, v) in limits {
            requests.entry(k).or_insert(v);
        }
    }
    out
}

/// LimitRanger defaulting (`defaultContainerResourceRequirements` + `mergeContainerResources`,
/// plugin/pkg/admission/limitranger/admission.go): each `Container` item's `default` fills
/// missing limits and `defaultRequest` missing requests, per resource, in containers and init
/// containers alike — even when the filled request ends up above the container's own limit
/// (pod validation then refuses the pod with 422). LimitRanges apply in order; a resource set
/// by an earlier one is kept.
pub fn apply_defaults(pod: &PodSpec, lrs: &[LimitRange]) -> PodSpec {
    let mut out = pod.clone();
    for lr in lrs {
        let mut def_limits = RawList::new();
        let mut def_requests = RawList::new();
        for item in stored_items(lr).iter().filter(|i| i.type_ == "Container") {
            def_requests.extend(item.default_request.clone().unwrap_or_default());
            def_limits.extend(item.default.clone().unwrap_or_default());
        }
        if def_limits.is_empty() && def_requests.is_empty() {
            continue;
        }
        for c in all_containers_mut(&mut out) {
            let res = c
                .resources
                .get_or_insert_with(ResourceRequirements::default);
            for (target, defaults) in [
                (&mut res.limits, &def_limits),
                (&mut res.requests, &def_requests),
            ] {
                for (k, v) in defaults {
                    if !target.as_ref().is_some_and(|t| t.contains_key(k)) {
                        target
                            .get_or_insert_with(BTreeMap::new)
                            .insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    out
}

// ---- Pod validation (422) ------------------------------------------------------------------

/// `ValidateResourceRequirements` (pkg/apis/core/validation/validation.go), the part about
/// cpu and memory: quantities must parse and be ≥ 0, and a request may not exceed the limit of
/// the same resource. A request without a limit is fine.
pub fn check_pod_validation(pod: &PodSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let groups = [
        ("containers", &pod.containers[..]),
        (
            "initContainers",
            pod.init_containers.as_deref().unwrap_or(&[]),
        ),
    ];
    for (field, containers) in groups {
        for (i, c) in containers.iter().enumerate() {
            let Some(res) = c.resources.as_ref() else {
                continue;
            };
            let at = format!("spec.{field}[{i}].resources");
            for (kind, list) in [("limits", &res.limits), ("requests", &res.requests)] {
                for (k, v) in list.iter().flatten() {
                    if let Err(e) = Quantity::parse(&v.0) {
                        out.push(Violation {
                            object: POD_VALIDATION.into(),
                            message: format!("{at}.{kind}[{k}]: Invalid value: {:?}: {e}", v.0),
                        });
                    }
                }
            }
            let requests = parse_list(res.requests.as_ref());
            let limits = parse_list(res.limits.as_ref());
            for (k, req) in &requests {
                if let Some(lim) = limits.get(k) {
                    if req > lim {
                        out.push(Violation {
                            object: POD_VALIDATION.into(),
                            message: format!(
                                "{at}.requests: Invalid value: {:?}: must be less than or equal to {k} limit of {}",
                                show(k, *req),
                                show(k, *lim)
                            ),
                        });
                    }
                }
            }
        }
    }
    out
}

// ---- LimitRanger validation (403) ----------------------------------------------------------

fn add_into(total: &mut Parsed, list: &Parsed) {
    for (k, v) in list {
        *total.entry(k.clone()).or_insert(0) += *v;
    }
}

fn max_into(total: &mut Parsed, list: &Parsed) {
    for (k, v) in list {
        let e = total.entry(k.clone()).or_insert(0);
        *e = (*e).max(*v);
    }
}

/// The pod's effective requests (`limits == false`) or limits, as Kubernetes 1.28 computes
/// them both in LimitRanger (`podRequests`/`podLimits`, plugin/pkg/admission/limitranger/
/// admission.go) and in quota (`resourcehelper.PodRequests`/`PodLimits`,
/// staging/src/k8s.io/component-helpers/resource/helpers.go, KEP-753 sidecars):
/// sum(containers) + sum(native sidecars), then per resource the max with every init phase,
/// where the i-th regular init container runs next to the sidecars started before it.
/// A resource missing from a container contributes nothing (it is not "unset" for the pod).
fn pod_total(pod: &PodSpec, limits: bool) -> Parsed {
    let list_of = |c: &Container| {
        let res = c.resources.as_ref();
        parse_list(res.and_then(|r| {
            if limits {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        }))
    };
    let mut total = Parsed::new();
    for c in &pod.containers {
        add_into(&mut total, &list_of(c));
    }
    let mut sidecars = Parsed::new();
    let mut init_peak = Parsed::new();
    for c in pod.init_containers.iter().flatten() {
        let own = list_of(c);
        if is_sidecar(c) {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            max_into(&mut init_peak, &sidecars);
        } else {
            let mut phase = own;
            add_into(&mut phase, &sidecars);
            max_into(&mut init_peak, &phase);
        }
    }
    max_into(&mut total, &init_peak);
    total
}

fn min_constraint(
    kind: &str,
    k: &str,
    enforced: u128,
    req: &Parsed,
    lim: &Parsed,
) -> Option<String> {
    let e = show(k, enforced);
    let Some(r) = req.get(k) else {
        return Some(format!(
            "minimum {k} usage per {kind} is {e}.  No request is specified"
        ));
    };
    if milli(*r) < milli(enforced) {
        return Some(format!(
            "minimum {k} usage per {kind} is {e}, but request is {}",
            show(k, *r)
        ));
    }
    match lim.get(k) {
        Some(l) if milli(*l) < milli(enforced) => Some(format!(
            "minimum {k} usage per {kind} is {e}, but limit is {}",
            show(k, *l)
        )),
        _ => None,
    }
}

fn max_constraint(
    kind: &str,
    k: &str,
    enforced: u128,
    req: &Parsed,
    lim: &Parsed,
) -> Option<String> {
    let e = show(k, enforced);
    // A max needs a limit, even when the request alone is within it.
    let Some(l) = lim.get(k) else {
        return Some(format!(
            "maximum {k} usage per {kind} is {e}.  No limit is specified"
        ));
    };
    if milli(*l) > milli(enforced) {
        return Some(format!(
            "maximum {k} usage per {kind} is {e}, but limit is {}",
            show(k, *l)
        ));
    }
    match req.get(k) {
        Some(r) if milli(*r) > milli(enforced) => Some(format!(
            "maximum {k} usage per {kind} is {e}, but request is {}",
            show(k, *r)
        )),
        _ => None,
    }
}

fn ratio_constraint(
    kind: &str,
    k: &str,
    enforced: u128,
    req: &Parsed,
    lim: &Parsed,
) -> Option<String> {
    let e = show(CPU, enforced);
    let r = req.get(k).map(|v| milli(*v)).unwrap_or(0);
    if r == 0 {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {e}, but no request is specified or request is 0"
        ));
    }
    let l = lim.get(k).map(|v| milli(*v)).unwrap_or(0);
    if l == 0 {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {e}, but no limit is specified or limit is 0"
        ));
    }
    // Go compares limit/request × 1000 > ratio.MilliValue() in float64; exact here.
    if l.saturating_mul(1000) > milli(enforced).saturating_mul(r) {
        return Some(format!(
            "{k} max limit to request ratio per {kind} is {e}, but provided ratio is {:.6}",
            l as f64 / r as f64
        ));
    }
    None
}

fn check_item(
    kind: &str,
    item: &LimitRangeItem,
    req: &Parsed,
    lim: &Parsed,
    errs: &mut Vec<String>,
) {
    for (k, v) in parse_list(item.min.as_ref()) {
        errs.extend(min_constraint(kind, &k, v, req, lim));
    }
    for (k, v) in parse_list(item.max.as_ref()) {
        errs.extend(max_constraint(kind, &k, v, req, lim));
    }
    for (k, v) in parse_list(item.max_limit_request_ratio.as_ref()) {
        errs.extend(ratio_constraint(kind, &k, v, req, lim));
    }
}

/// LimitRanger validation (`PodValidateLimitFunc`, plugin/pkg/admission/limitranger/
/// admission.go, v1.28): `Container` items judge every container and init container; `Pod`
/// items judge the pod totals of [`pod_total`] (init containers and native sidecars included).
/// One [`Violation`] per LimitRange, listing every failed constraint like the apiserver does.
pub fn check_limit_ranges(pod: &PodSpec, lrs: &[LimitRange]) -> Vec<Violation> {
    let mut out = Vec::new();
    for lr in lrs {
        let mut errs = Vec::new();
        for item in stored_items(lr) {
            match item.type_.as_str() {
                "Container" => {
                    for c in all_containers(pod) {
                        let res = c.resources.as_ref();
                        let req = parse_list(res.and_then(|r| r.requests.as_ref()));
                        let lim = parse_list(res.and_then(|r| r.limits.as_ref()));
                        check_item("Container", &item, &req, &lim, &mut errs);
                    }
                }
                "Pod" => {
                    let (req, lim) = (pod_total(pod, false), pod_total(pod, true));
                    check_item("Pod", &item, &req, &lim, &mut errs);
                }
                _ => {}
            }
        }
        if !errs.is_empty() {
            out.push(Violation {
                object: object_name("LimitRange", &lr.metadata),
                message: format!("[{}]", errs.join(", ")),
            });
        }
    }
    out
}

// ---- ResourceQuota (403) -------------------------------------------------------------------

/// Quota names whose use makes every container state the resource
/// (`validationSet` in pkg/quota/v1/evaluator/core/pods.go — "a mistake" kept for
/// backward compatibility, says the source).
const MUST_SPECIFY: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// `podComputeUsageHelper` (pkg/quota/v1/evaluator/core/pods.go): quota names a container's or
/// a pod's requests/limits count against. `cpu`/`memory` alias `requests.cpu`/`requests.memory`.
fn usage_names(requests: &Parsed, limits: &Parsed) -> Parsed {
    let mut out = Parsed::new();
    out.insert("pods".into(), 1_000_000_000);
    out.insert("count/pods".into(), 1_000_000_000);
    for r in [CPU, MEMORY, "ephemeral-storage"] {
        if let Some(v) = requests.get(r) {
            out.insert(r.to_string(), *v);
            out.insert(format!("requests.{r}"), *v);
        }
        if let Some(v) = limits.get(r) {
            out.insert(format!("limits.{r}"), *v);
        }
    }
    out
}

/// Whether a quota's scopes select this pod (`podMatchesScopeFunc`). Scopes we do not model
/// (priority classes, cross-namespace affinity, scope selectors) count as matching, which can
/// only make the model stricter than the apiserver.
fn quota_matches(pod: &PodSpec, q: &ResourceQuota) -> bool {
    let Some(spec) = q.spec.as_ref() else {
        return true;
    };
    let best_effort = all_containers(pod).all(|c| {
        c.resources.as_ref().is_none_or(|r| {
            r.requests.as_ref().is_none_or(|m| m.is_empty())
                && r.limits.as_ref().is_none_or(|m| m.is_empty())
        })
    });
    let terminating = pod.active_deadline_seconds.is_some_and(|s| s >= 0);
    spec.scopes.iter().flatten().all(|s| match s.as_str() {
        "BestEffort" => best_effort,
        "NotBestEffort" => !best_effort,
        "Terminating" => terminating,
        "NotTerminating" => !terminating,
        _ => true,
    })
}

/// The quota's hard limits: `status.hard` (what admission reads), else `spec.hard`.
fn quota_hard(q: &ResourceQuota) -> Parsed {
    let status = q
        .status
        .as_ref()
        .and_then(|s| s.hard.as_ref())
        .filter(|h| !h.is_empty());
    parse_list(status.or_else(|| q.spec.as_ref().and_then(|s| s.hard.as_ref())))
}

fn quota_used(q: &ResourceQuota) -> Parsed {
    parse_list(q.status.as_ref().and_then(|s| s.used.as_ref()))
}

/// The pod's quota usage (`PodUsageFunc`, pkg/quota/v1/evaluator/core/pods.go): the
/// [`pod_total`] requests and limits (plus `overhead` on requests, and on limits already set).
fn pod_usage(pod: &PodSpec) -> Parsed {
    let mut requests = pod_total(pod, false);
    let mut limits = pod_total(pod, true);
    let overhead = parse_list(pod.overhead.as_ref());
    add_into(&mut requests, &overhead);
    for (k, v) in &overhead {
        if let Some(l) = limits.get_mut(k) {
            *l += *v;
        }
    }
    usage_names(&requests, &limits)
}

/// ResourceQuota admission (`checkRequest`, staging/src/k8s.io/apiserver/pkg/admission/plugin/
/// resourcequota/controller.go): per matching quota, "must specify" when a container lacks a
/// quota-constrained cpu/memory request or limit, "status unknown" when `status.used` lacks a
/// constrained resource, and "exceeded quota" when `used + pod usage > hard`.
pub fn check_quotas(pod: &PodSpec, quotas: &[ResourceQuota]) -> Vec<Violation> {
    let mut out = Vec::new();
    for q in quotas {
        if !quota_matches(pod, q) {
            continue;
        }
        let object = object_name("ResourceQuota", &q.metadata);
        let name = q.metadata.name.clone().unwrap_or_default();
        let hard = quota_hard(q);
        let used = quota_used(q);
        // Constraints: every container (and init container) must state each constrained name.
        let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for c in all_containers(pod) {
            let res = c.resources.as_ref();
            let have = usage_names(
                &parse_list(res.and_then(|r| r.requests.as_ref())),
                &parse_list(res.and_then(|r| r.limits.as_ref())),
            );
            for r in MUST_SPECIFY.iter().filter(|r| hard.contains_key(**r)) {
                if !have.contains_key(*r) {
                    missing.entry(r).or_default().push(c.name.clone());
                }
            }
        }
        if !missing.is_empty() {
            let parts: Vec<String> = missing
                .iter()
                .map(|(r, names)| {
                    let mut names = names.clone();
                    names.sort();
                    names.dedup();
                    format!("{r} for: {}", names.join(","))
                })
                .collect();
            out.push(Violation {
                object,
                message: format!("failed quota: {name}: must specify {}", parts.join("; ")),
            });
            continue;
        }
        let usage = pod_usage(pod);
        let constrained: Vec<&String> = hard.keys().filter(|k| usage.contains_key(*k)).collect();
        let unknown: Vec<&str> = constrained
            .iter()
            .filter(|k| !used.contains_key(**k))
            .map(|k| k.as_str())
            .collect();
        if !unknown.is_empty() {
            out.push(Violation {
                object,
                message: format!(
                    "status unknown for quota: {name}, resources: {}",
                    unknown.join(",")
                ),
            });
            continue;
        }
        let mut exceeded = Vec::new();
        for k in constrained {
            let add = usage.get(k).copied().unwrap_or(0);
            if add == 0 {
                continue; // quota.RemoveZeros
            }
            let now = used.get(k).copied().unwrap_or(0);
            let limit = hard.get(k).copied().unwrap_or(0);
            if now.saturating_add(add) > limit {
                exceeded.push(format!(
                    "{k} requested {}, used {}, limited {}",
                    show(k, add),
                    show(k, now),
                    show(k, limit)
                ));
            }
        }
        if !exceeded.is_empty() {
            out.push(Violation {
                object,
                message: format!("exceeded quota: {name}: {}", exceeded.join("; ")),
            });
        }
    }
    out
}

// ---- The whole chain -----------------------------------------------------------------------

/// What the apiserver does with a pod that arrives with all its containers: pod defaulting
/// (requests from limits), LimitRanger defaulting, then pod validation (422 — the registry
/// validates before the validating admission plugins run), LimitRanger validation and
/// ResourceQuota (403; the chain stops at the first plugin that refuses). `Ok` holds the pod
/// as stored.
pub fn admit(pod: &PodSpec, c: &NamespaceConstraints) -> Result<PodSpec, Vec<Violation>> {
    let pod = apply_defaults(&default_requests_to_limits(pod), &c.limit_ranges);
    judge(&pod, c)?;
    Ok(pod)
}

/// The validation half of [`admit`], for a pod already defaulted.
fn judge(pod: &PodSpec, c: &NamespaceConstraints) -> Result<(), Vec<Violation>> {
    let v = check_pod_validation(pod);
    if !v.is_empty() {
        return Err(v);
    }
    let v = check_limit_ranges(pod, &c.limit_ranges);
    if !v.is_empty() {
        return Err(v);
    }
    let v = check_quotas(pod, &c.quotas);
    if !v.is_empty() {
        return Err(v);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Fit: adjust our istio-proxy size so that nothing after us rejects the pod because of it.
// ---------------------------------------------------------------------------------------------

/// Requests and limits for istio-proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    pub requests: Resources,
    pub limits: Resources,
}

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fit {
    /// `size` (possibly adjusted from the proposal; `notes` say how and why) is admitted.
    Fits { size: Size, notes: Vec<String> },
    /// No size of ours fits: leave the pod as it is and warn, naming the object.
    NoFit { object: String, constraint: String },
}

/// Where Istio puts the proxy when the pod does not have it yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyPlacement {
    /// A regular container (Istio's classic injection).
    #[default]
    Container,
    /// A native sidecar: an init container with `restartPolicy: Always`. Istio moves it to the
    /// front of `initContainers`, so it counts in every init phase.
    NativeSidecar,
}

const RESOURCES: [&str; 2] = [CPU, MEMORY];
/// Nano-units per unit of our [`Size`] values: millicores and bytes.
const UNIT: [u128; 2] = [1_000_000, 1_000_000_000];

/// Our size as two (request, limit) pairs in millicores / bytes, index as [`RESOURCES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Work {
    req: [u64; 2],
    lim: [u64; 2],
}

impl Work {
    fn of(s: Size) -> Self {
        Work {
            req: [s.requests.cpu.0, s.requests.memory.0],
            lim: [s.limits.cpu.0, s.limits.memory.0],
        }
    }
    fn size(self) -> Size {
        Size {
            requests: Resources {
                cpu: Cpu(self.req[0]),
                memory: Memory(self.req[1]),
            },
            limits: Resources {
                cpu: Cpu(self.lim[0]),
                memory: Memory(self.lim[1]),
            },
        }
    }
}

fn fmt_units(i: usize, v: u64) -> String {
    if i == 0 {
        format_cpu(v)
    } else {
        format_memory(v)
    }
}

fn to_units_ceil(i: usize, nanos: u128) -> u64 {
    u64::try_from(nanos.div_ceil(UNIT[i])).unwrap_or(u64::MAX)
}

fn to_units_floor(i: usize, nanos: u128) -> u64 {
    u64::try_from(nanos / UNIT[i]).unwrap_or(u64::MAX)
}

fn proxy_resources(size: Size, existing: Option<&ResourceRequirements>) -> ResourceRequirements {
    let mut res = existing.cloned().unwrap_or_default();
    let requests = res.requests.get_or_insert_with(BTreeMap::new);
    requests.insert(CPU.into(), KQuantity(size.requests.cpu.to_string()));
    requests.insert(MEMORY.into(), KQuantity(size.requests.memory.to_string()));
    let limits = res.limits.get_or_insert_with(BTreeMap::new);
    limits.insert(CPU.into(), KQuantity(size.limits.cpu.to_string()));
    limits.insert(MEMORY.into(), KQuantity(size.limits.memory.to_string()));
    res
}

/// The pod after Istio's injection with the proxy sized `size`: an existing `istio-proxy`
/// (container, or native sidecar init container) gets the size; otherwise one is added where
/// `injected_as` says. Other resources of an existing proxy (e.g. ephemeral-storage) are kept.
pub fn pod_with_proxy(pod: &PodSpec, size: Size, injected_as: ProxyPlacement) -> PodSpec {
    let mut out = pod.clone();
    if let Some(c) = out.containers.iter_mut().find(|c| c.name == PROXY) {
        c.resources = Some(proxy_resources(size, c.resources.as_ref()));
        return out;
    }
    if let Some(c) = out
        .init_containers
        .iter_mut()
        .flatten()
        .find(|c| c.name == PROXY && is_sidecar(c))
    {
        c.resources = Some(proxy_resources(size, c.resources.as_ref()));
        return out;
    }
    let mut proxy = Container {
        name: PROXY.into(),
        resources: Some(proxy_resources(size, None)),
        ..Default::default()
    };
    match injected_as {
        ProxyPlacement::Container => out.containers.push(proxy),
        ProxyPlacement::NativeSidecar => {
            proxy.restart_policy = Some("Always".into());
            out.init_containers
                .get_or_insert_with(Vec::new)
                .insert(0, proxy);
        }
    }
    out
}

/// What runs after every mutating webhook: pod defaulting of the patched pod (requests from
/// limits; the apiserver re-applies defaults to a webhook's patched object), pod validation,
/// LimitRanger validation and ResourceQuota. No LimitRanger *defaulting*: it ran before the
/// webhooks (`AllOrderedPlugins`, pkg/kubeapiserver/options/plugins.go).
pub fn check_after_webhooks(pod: &PodSpec, c: &NamespaceConstraints) -> Result<(), Vec<Violation>> {
    judge(&default_requests_to_limits(pod), c)
}

struct Fitter<'a> {
    pod: &'a PodSpec,
    c: &'a NamespaceConstraints,
    placement: ProxyPlacement,
    whole_cores: bool,
    notes: Vec<String>,
}

type Step<T> = Result<T, Fit>;

fn no_fit(object: String, constraint: String) -> Fit {
    Fit::NoFit { object, constraint }
}

impl Fitter<'_> {
    fn build(&self, w: Work) -> PodSpec {
        default_requests_to_limits(&pod_with_proxy(self.pod, w.size(), self.placement))
    }

    fn note(&mut self, s: String) {
        if !self.notes.contains(&s) {
            self.notes.push(s);
        }
    }

    /// Pod request headroom for resource `i` under every Pod `max` (our request may not push
    /// the pod total over it), in units; `u64::MAX` when unbounded.
    fn pod_request_cap(&self, w: Work, i: usize) -> u64 {
        let total = pod_total(&self.build(w), false)
            .get(RESOURCES[i])
            .copied()
            .unwrap_or(0);
        let others = total.saturating_sub(u128::from(w.req[i]) * UNIT[i]);
        let mut cap = u64::MAX;
        for lr in &self.c.limit_ranges {
            for item in stored_items(lr).iter().filter(|it| it.type_ == "Pod") {
                if let Some(mx) = parse_list(item.max.as_ref()).get(RESOURCES[i]) {
                    cap = cap.min(to_units_floor(i, mx.saturating_sub(others)));
                }
            }
        }
        cap
    }

    /// The pod's (requests, limits) totals of resource `r` with our proxy at `w`.
    fn totals(&self, w: Work, r: &str) -> (u128, u128) {
        let pod = self.build(w);
        let get = |l: Parsed| l.get(r).copied().unwrap_or(0);
        (get(pod_total(&pod, false)), get(pod_total(&pod, true)))
    }

    /// Container min / max / maxLimitRequestRatio on the proxy.
    fn container_items(&mut self, w: &mut Work) -> Step<()> {
        for lr in &self.c.limit_ranges {
            let object = object_name("LimitRange", &lr.metadata);
            for item in stored_items(lr).iter().filter(|it| it.type_ == "Container") {
                let (min, max) = (parse_list(item.min.as_ref()), parse_list(item.max.as_ref()));
                let ratio = parse_list(item.max_limit_request_ratio.as_ref());
                for (i, r) in RESOURCES.iter().enumerate() {
                    let mn = min.get(*r).map(|v| to_units_ceil(i, *v));
                    let mx = max.get(*r).map(|v| to_units_floor(i, *v));
                    if let (Some(a), Some(b)) = (mn, mx) {
                        if a > b {
                            return Err(no_fit(
                                object,
                                format!(
                                    "Container min.{r} {} > max.{r} {}",
                                    fmt_units(i, a),
                                    fmt_units(i, b)
                                ),
                            ));
                        }
                    }
                    if let Some(mn) = mn {
                        if w.req[i] < mn {
                            self.note(format!(
                                "{object}: Container min.{r} {}: request raised from {}",
                                fmt_units(i, mn),
                                fmt_units(i, w.req[i])
                            ));
                            w.req[i] = mn;
                        }
                        w.lim[i] = w.lim[i].max(w.req[i]);
                    }
                    if let Some(mx) = mx {
                        if w.lim[i] > mx {
                            let fractional = i == 0 && self.whole_cores && mx % 1000 != 0;
                            self.note(format!(
                                "{object}: Container max.{r} {}: limit lowered from {}{}",
                                fmt_units(i, mx),
                                fmt_units(i, w.lim[i]),
                                if fractional {
                                    " (a fractional CPU limit: the LimitRange wins)"
                                } else {
                                    ""
                                }
                            ));
                            w.lim[i] = mx;
                        }
                        if w.req[i] > w.lim[i] {
                            self.note(format!(
                                "{object}: Container max.{r} {}: request lowered from {}",
                                fmt_units(i, mx),
                                fmt_units(i, w.req[i])
                            ));
                            w.req[i] = w.lim[i];
                        }
                    }
                    if let Some(rt) = ratio.get(*r).map(|v| milli(*v)) {
                        if rt == 0 || w.lim[i] == 0 {
                            return Err(no_fit(
                                object,
                                format!("Container maxLimitRequestRatio.{r}"),
                            ));
                        }
                        // LimitRanger: limit × 1000 ≤ ratio(milli) × request.
                        let need = u64::try_from((u128::from(w.lim[i]) * 1000).div_ceil(rt))
                            .unwrap_or(u64::MAX);
                        if w.req[i] < need {
                            let cap = self.pod_request_cap(*w, i);
                            if need <= cap {
                                self.note(format!(
                                    "{object}: Container maxLimitRequestRatio.{r} {}: request raised from {} to {} (limit {})",
                                    format_cpu(u64::try_from(rt).unwrap_or(u64::MAX)),
                                    fmt_units(i, w.req[i]),
                                    fmt_units(i, need),
                                    fmt_units(i, w.lim[i])
                                ));
                                w.req[i] = need;
                            } else {
                                // Raising the request would break a Pod max: lower the limit.
                                w.req[i] = w.req[i].max(cap.min(w.lim[i]));
                                let mut lim = u64::try_from(u128::from(w.req[i]) * rt / 1000)
                                    .unwrap_or(u64::MAX)
                                    .max(w.req[i]);
                                if i == 0
                                    && self.whole_cores
                                    && lim / 1000 * 1000 >= w.req[i]
                                    && lim >= 1000
                                {
                                    lim = lim / 1000 * 1000;
                                }
                                self.note(format!(
                                    "{object}: Container maxLimitRequestRatio.{r} {}: limit lowered from {} to {} (a larger request would break a Pod max)",
                                    format_cpu(u64::try_from(rt).unwrap_or(u64::MAX)),
                                    fmt_units(i, w.lim[i]),
                                    fmt_units(i, lim)
                                ));
                                w.lim[i] = lim;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Pod min / max / maxLimitRequestRatio on the pod totals, adjusting only the proxy.
    fn pod_items(&mut self, w: &mut Work) -> Step<()> {
        for lr in &self.c.limit_ranges {
            let object = object_name("LimitRange", &lr.metadata);
            for item in stored_items(lr).iter().filter(|it| it.type_ == "Pod") {
                let (min, max) = (parse_list(item.min.as_ref()), parse_list(item.max.as_ref()));
                let ratio = parse_list(item.max_limit_request_ratio.as_ref());
                for (i, r) in RESOURCES.iter().enumerate() {
                    if let (Some(a), Some(b)) = (min.get(*r), max.get(*r)) {
                        if a > b {
                            return Err(no_fit(object, format!("Pod min.{r} > max.{r}")));
                        }
                    }
                    if let Some(mx) = max.get(*r) {
                        let (_, tlim) = self.totals(*w, r);
                        if tlim > *mx {
                            let excess = to_units_ceil(i, tlim - mx);
                            if excess >= w.lim[i] {
                                return Err(no_fit(
                                    object,
                                    format!(
                                        "Pod max.{r} {}: the other containers leave no room",
                                        show(r, *mx)
                                    ),
                                ));
                            }
                            let lim = w.lim[i] - excess;
                            self.note(format!(
                                "{object}: Pod max.{r} {}: limit lowered from {} to {}",
                                show(r, *mx),
                                fmt_units(i, w.lim[i]),
                                fmt_units(i, lim)
                            ));
                            w.lim[i] = lim;
                            w.req[i] = w.req[i].min(lim);
                        }
                        let (treq, _) = self.totals(*w, r);
                        if treq > *mx {
                            let excess = to_units_ceil(i, treq - mx);
                            let req = w.req[i].saturating_sub(excess);
                            if req == 0 {
                                return Err(no_fit(
                                    object,
                                    format!(
                                        "Pod max.{r} {}: the other containers leave no room",
                                        show(r, *mx)
                                    ),
                                ));
                            }
                            w.req[i] = w.req[i].min(req);
                        }
                    }
                    if let Some(mn) = min.get(*r) {
                        let (treq, tlim) = self.totals(*w, r);
                        if treq < *mn {
                            let req = w.req[i].saturating_add(to_units_ceil(i, mn - treq));
                            self.note(format!(
                                "{object}: Pod min.{r} {}: request raised from {} to {}",
                                show(r, *mn),
                                fmt_units(i, w.req[i]),
                                fmt_units(i, req)
                            ));
                            w.req[i] = req;
                            w.lim[i] = w.lim[i].max(req);
                        }
                        if tlim < *mn {
                            w.lim[i] = w.lim[i].saturating_add(to_units_ceil(i, mn - tlim));
                        }
                    }
                    if let Some(rt) = ratio.get(*r).map(|v| milli(*v)).filter(|rt| *rt > 0) {
                        let (treq, tlim) = self.totals(*w, r);
                        // pod limit × 1000 ≤ ratio(milli) × pod request, in milli-units.
                        let need = (milli(tlim) * 1000).div_ceil(rt);
                        if milli(treq) < need {
                            let add = to_units_ceil(i, (need - milli(treq)) * 1_000_000);
                            let req = w.req[i].saturating_add(add).min(w.lim[i]);
                            self.note(format!(
                                "{object}: Pod maxLimitRequestRatio.{r} {}: request raised from {} to {}",
                                format_cpu(u64::try_from(rt).unwrap_or(u64::MAX)),
                                fmt_units(i, w.req[i]),
                                fmt_units(i, req)
                            ));
                            w.req[i] = req;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Quota headroom: a constrained value we raise above `without_us` must fit in
    /// `hard - used`; otherwise that one value goes back to `without_us`'s.
    fn quotas(&mut self, w: &mut Work, base: Work) {
        for q in &self.c.quotas {
            let object = object_name("ResourceQuota", &q.metadata);
            let hard = quota_hard(q);
            let used = quota_used(q);
            for name in MUST_SPECIFY {
                let Some(limit) = hard.get(name) else {
                    continue;
                };
                let (i, is_limit) = match name {
                    "cpu" | "requests.cpu" => (0, false),
                    "memory" | "requests.memory" => (1, false),
                    "limits.cpu" => (0, true),
                    _ => (1, true),
                };
                let ours = pod_usage(&self.build(*w)).get(name).copied().unwrap_or(0);
                let theirs = pod_usage(&self.build(base)).get(name).copied().unwrap_or(0);
                let now = used.get(name).copied().unwrap_or(0);
                if ours <= theirs || now.saturating_add(ours) <= *limit {
                    continue;
                }
                let (slot, back) = if is_limit {
                    (&mut w.lim[i], base.lim[i])
                } else {
                    (&mut w.req[i], base.req[i])
                };
                self.notes.push(format!(
                    "{object}: {name} used {} + this pod would exceed hard {}: kept {} (was {})",
                    show(name, now),
                    show(name, *limit),
                    fmt_units(i, back),
                    fmt_units(i, *slot)
                ));
                *slot = back;
                if w.req[i] > w.lim[i] {
                    if is_limit {
                        w.req[i] = w.lim[i];
                    } else {
                        w.lim[i] = w.req[i];
                    }
                }
            }
        }
    }

    /// Pod-level `spec.resources`: containers' requests sum within the pod's requests, each
    /// container's limit within the pod's limits.
    fn pod_level(&self, w: Work) -> Step<()> {
        let Some(res) = self.pod.resources.as_ref() else {
            return Ok(());
        };
        let pod_req = parse_list(res.requests.as_ref());
        let pod_lim = parse_list(res.limits.as_ref());
        let built = self.build(w);
        for (i, r) in RESOURCES.iter().enumerate() {
            if let Some(pr) = pod_req.get(*r) {
                // Pod requests must cover the *aggregate* container requests (init phases
                // as a maximum, sidecars added), not a plain sum: `validatePodResourceConsistency`
                // compares with `AggregateContainerRequests` (pkg/apis/core/validation).
                let sum: u128 = pod_total(&built, false).get(*r).copied().unwrap_or(0);
                if sum > *pr {
                    return Err(no_fit(
                        "pod-level resources".into(),
                        format!(
                            "requests.{r} {}: containers would request {}",
                            show(r, *pr),
                            show(r, sum)
                        ),
                    ));
                }
            }
            if let Some(pl) = pod_lim.get(*r) {
                if u128::from(w.lim[i]) * UNIT[i] > *pl {
                    return Err(no_fit(
                        "pod-level resources".into(),
                        format!(
                            "limits.{r} {}: proxy limit {}",
                            show(r, *pl),
                            fmt_units(i, w.lim[i])
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Fit our istio-proxy size into the namespace's constraints (DESIGN §8), the proxy injected as
/// a regular container when the pod does not have it yet. See [`fit_with`].
pub fn fit(
    proposed: Size,
    without_us: Size,
    pod: &PodSpec,
    c: &NamespaceConstraints,
    cpu_whole_cores: bool,
) -> Fit {
    fit_with(
        proposed,
        without_us,
        pod,
        c,
        cpu_whole_cores,
        ProxyPlacement::Container,
    )
}

/// `proposed`: our size for istio-proxy. `without_us`: the size the proxy gets if we do nothing
/// (Istio's defaults or the owner's annotations). `pod`: the pod as the webhook receives it
/// (already LimitRanger-defaulted), with or without an istio-proxy container. `injected_as`:
/// where the proxy will be when absent. Adjusts our size so that nothing after us rejects the
/// pod because of it: Container then Pod LimitRange items (raise requests to min, lower limits
/// to max, meet maxLimitRequestRatio by raising the request, lowering the limit only when a
/// larger request would break a Pod max), quota headroom (a value that does not fit goes back
/// to `without_us`'s), pod-level `spec.resources`, and finally the whole [`check_after_webhooks`]
/// model: a refusal with our size but not without it is a `NoFit`; a pod refused either way
/// keeps our size with a note.
pub fn fit_with(
    proposed: Size,
    without_us: Size,
    pod: &PodSpec,
    c: &NamespaceConstraints,
    cpu_whole_cores: bool,
    injected_as: ProxyPlacement,
) -> Fit {
    let mut f = Fitter {
        pod,
        c,
        placement: injected_as,
        whole_cores: cpu_whole_cores,
        notes: Vec::new(),
    };
    let mut w = Work::of(proposed);
    for i in 0..2 {
        w.lim[i] = w.lim[i].max(w.req[i]);
    }
    let run = |f: &mut Fitter, w: &mut Work| -> Step<()> {
        // Container and Pod items interact (a Pod max can lower what a Container min raised):
        // repeat until stable.
        for _ in 0..6 {
            let before = *w;
            f.container_items(w)?;
            f.pod_items(w)?;
            if *w == before {
                break;
            }
        }
        f.quotas(w, Work::of(without_us));
        f.pod_level(*w)
    };
    if let Err(no) = run(&mut f, &mut w) {
        return no;
    }
    let ours = check_after_webhooks(&f.build(w), c);
    let theirs = check_after_webhooks(&f.build(Work::of(without_us)), c);
    match (ours, theirs) {
        (Ok(()), _) => Fit::Fits {
            size: w.size(),
            notes: f.notes,
        },
        (Err(v), Ok(())) => match v.into_iter().next() {
            Some(v) => no_fit(v.object, v.message),
            None => no_fit(POD_VALIDATION.into(), "rejected".into()),
        },
        (Err(v), Err(_)) => {
            let mut notes = f.notes;
            let why: Vec<String> = v.iter().map(|v| v.to_string()).collect();
            notes.push(format!(
                "the pod is rejected with or without our size (not because of it): {}",
                why.join("; ")
            ));
            Fit::Fits {
                size: w.size(),
                notes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::quantity::MI;
    use k8s_openapi::api::core::v1::{ResourceQuotaSpec, ResourceQuotaStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("shop".into()),
            ..Default::default()
        }
    }

    fn lr(limits: serde_json::Value) -> LimitRange {
        LimitRange {
            metadata: meta("limits"),
            spec: Some(serde_json::from_value(json!({ "limits": limits })).unwrap()),
        }
    }

    fn quota(hard: serde_json::Value, used: serde_json::Value) -> ResourceQuota {
        let hard: RawList = serde_json::from_value(hard).unwrap();
        ResourceQuota {
            metadata: meta("q"),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard.clone()),
                ..Default::default()
            }),
            status: Some(ResourceQuotaStatus {
                hard: Some(hard),
                used: Some(serde_json::from_value(used).unwrap()),
            }),
        }
    }

    fn pod(app: serde_json::Value) -> PodSpec {
        serde_json::from_value(json!({ "containers": [{ "name": "app", "resources": app }] }))
            .unwrap()
    }

    fn size(rc: u64, rm: u64, lc: u64, lm: u64) -> Size {
        Size {
            requests: Resources {
                cpu: Cpu(rc),
                memory: Memory(rm * MI),
            },
            limits: Resources {
                cpu: Cpu(lc),
                memory: Memory(lm * MI),
            },
        }
    }

    fn istio() -> Size {
        size(100, 128, 2000, 1024)
    }

    fn only_lrs(lrs: Vec<LimitRange>) -> NamespaceConstraints {
        NamespaceConstraints {
            limit_ranges: lrs,
            quotas: vec![],
        }
    }

    fn fits(f: Fit) -> (Size, Vec<String>) {
        match f {
            Fit::Fits { size, notes } => (size, notes),
            Fit::NoFit { object, constraint } => panic!("NoFit {object}: {constraint}"),
        }
    }

    fn full_app() -> serde_json::Value {
        json!({"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}})
    }

    #[test]
    fn stored_limit_range_defaults() {
        let spec: LimitRangeSpec = serde_json::from_value(json!({"limits": [
            {"type": "Container", "min": {"cpu": "250m", "memory": "64Mi"}, "max": {"cpu": "1"}},
            {"type": "Pod", "max": {"memory": "2Gi"}}
        ]}))
        .unwrap();
        let s = stored_limit_range(&spec);
        let item = &s.limits[0];
        assert_eq!(item.default.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(item.default_request.as_ref().unwrap()["cpu"].0, "1");
        assert_eq!(item.default_request.as_ref().unwrap()["memory"].0, "64Mi");
        assert!(s.limits[1].default.is_none());
        assert_eq!(stored_limit_range(&s), s);
    }

    #[test]
    fn validate_limit_range_orders() {
        let bad: LimitRangeSpec = serde_json::from_value(json!({"limits": [
            {"type": "Container", "min": {"cpu": "2"}, "default": {"cpu": "500m"}}
        ]}))
        .unwrap();
        assert!(validate_limit_range(&bad)
            .unwrap_err()
            .contains("min value 2"));
        let ratio: LimitRangeSpec = serde_json::from_value(json!({"limits": [
            {"type": "Container", "maxLimitRequestRatio": {"cpu": "500m"}}
        ]}))
        .unwrap();
        assert!(validate_limit_range(&ratio).is_err());
    }

    #[test]
    fn sidecar_totals_include_init_phases() {
        let p: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "100m"}}}],
            "initContainers": [
                {"name": "istio-proxy", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "1"}}}
            ]
        }))
        .unwrap();
        // max(100m + 200m, 200m + 1) = 1200m
        assert_eq!(pod_total(&p, false)["cpu"], 1_200_000_000);
    }

    #[test]
    fn max_without_limit_is_refused() {
        let c = only_lrs(vec![lr(json!([{"type": "Pod", "max": {"memory": "2Gi"}}]))]);
        let v = admit(&pod(json!({"requests": {"memory": "1Gi"}})), &c).unwrap_err();
        assert_eq!(v[0].code(), 403);
        assert!(v[0].message.contains("No limit is specified"), "{v:?}");
    }

    #[test]
    fn default_request_above_own_limit_is_invalid() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "defaultRequest": {"cpu": "500m"}}]),
        )]);
        let p = pod(json!({"limits": {"memory": "64Mi"}, "requests": {"memory": "64Mi"}}));
        assert!(admit(&p, &c).is_ok());
        let p = pod(json!({"limits": {"cpu": "250m"}}));
        // requests.cpu defaults to the limit (250m) before LimitRanger: no 500m default.
        assert!(admit(&p, &c).is_ok());
        let p = pod(
            json!({"limits": {"memory": "64Mi", "cpu": "100m"}, "requests": {"memory": "64Mi"}}),
        );
        assert!(admit(&p, &c).is_ok());
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "default": {"cpu": "100m"}, "defaultRequest": {"cpu": "100m"}}]),
        )]);
        let p = pod(json!({"requests": {"cpu": "200m"}}));
        let v = admit(&p, &c).unwrap_err();
        assert_eq!(v[0].code(), 422, "{v:?}");
    }

    #[test]
    fn quota_must_specify_and_exceeded() {
        let c = NamespaceConstraints {
            limit_ranges: vec![],
            quotas: vec![quota(
                json!({"limits.cpu": "2"}),
                json!({"limits.cpu": "1500m"}),
            )],
        };
        let v = admit(&pod(json!({"requests": {"cpu": "1"}})), &c).unwrap_err();
        assert!(
            v[0].message.contains("must specify limits.cpu for: app"),
            "{v:?}"
        );
        let v = admit(&pod(json!({"limits": {"cpu": "1"}})), &c).unwrap_err();
        assert!(v[0].message.contains("exceeded quota"), "{v:?}");
        assert!(admit(&pod(json!({"limits": {"cpu": "500m"}})), &c).is_ok());
        // `cpu` aliases requests.cpu
        let c = NamespaceConstraints {
            limit_ranges: vec![],
            quotas: vec![quota(json!({"cpu": "1"}), json!({"cpu": "0"}))],
        };
        assert!(admit(&pod(json!({"requests": {"cpu": "2"}})), &c).is_err());
        assert!(admit(&pod(json!({"requests": {"cpu": "1"}})), &c).is_ok());
    }

    #[test]
    fn fit_ratio_raises_request() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "10"}}]),
        )]);
        let app = pod(json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}}));
        let (s, notes) = fits(fit(size(10, 64, 1000, 64), istio(), &app, &c, true));
        assert_eq!(s.requests.cpu, Cpu(100));
        assert_eq!(s.limits.cpu, Cpu(1000));
        assert!(notes[0].contains("maxLimitRequestRatio"), "{notes:?}");
    }

    #[test]
    fn fit_ratio_rounds_request_up() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "maxLimitRequestRatio": {"cpu": "3", "memory": "3"}}]),
        )]);
        let app = pod(
            json!({"requests": {"cpu": "500m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}}),
        );
        let (s, _) = fits(fit(size(10, 32, 1000, 100), istio(), &app, &c, true));
        assert_eq!(s.requests.cpu, Cpu(334));
        assert_eq!(s.requests.memory, Memory((100 * MI).div_ceil(3)));
        assert!(
            check_after_webhooks(&pod_with_proxy(&app, s, ProxyPlacement::Container), &c).is_ok()
        );
    }

    #[test]
    fn fit_max_lowers_limit_and_request() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "max": {"cpu": "2"}}]),
        )]);
        let app = pod(full_app());
        let (s, _) = fits(fit(size(2500, 64, 5000, 64), istio(), &app, &c, true));
        assert_eq!((s.requests.cpu, s.limits.cpu), (Cpu(2000), Cpu(2000)));
    }

    #[test]
    fn fit_fractional_max_wins_over_whole_cores() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "max": {"cpu": "1500m"}}]),
        )]);
        let (s, notes) = fits(fit(
            size(200, 64, 2000, 64),
            istio(),
            &pod(full_app()),
            &c,
            true,
        ));
        assert_eq!(s.limits.cpu, Cpu(1500));
        assert!(notes.iter().any(|n| n.contains("fractional")), "{notes:?}");
    }

    #[test]
    fn fit_min_raises_request() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "min": {"memory": "64Mi"}}]),
        )]);
        let (s, _) = fits(fit(
            size(100, 32, 1000, 32),
            istio(),
            &pod(full_app()),
            &c,
            true,
        ));
        assert_eq!(s.requests.memory, Memory(64 * MI));
        assert_eq!(s.limits.memory, Memory(64 * MI));
    }

    #[test]
    fn fit_min_above_max_is_no_fit() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}]),
        )]);
        match fit(size(100, 64, 1000, 64), istio(), &pod(full_app()), &c, true) {
            Fit::NoFit { object, constraint } => {
                assert_eq!(object, "LimitRange shop/limits");
                assert!(constraint.contains("min.cpu"), "{constraint}");
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn fit_quota_without_headroom_keeps_without_us() {
        let c = NamespaceConstraints {
            limit_ranges: vec![],
            quotas: vec![quota(
                json!({"requests.memory": "1Gi", "requests.cpu": "10"}),
                json!({"requests.memory": "700Mi", "requests.cpu": "0"}),
            )],
        };
        let app = pod(full_app());
        // 700Mi + 128Mi (app) + 256Mi (ours) > 1Gi; with Istio's 128Mi it fits.
        let (s, notes) = fits(fit(size(300, 256, 1000, 256), istio(), &app, &c, true));
        assert_eq!(s.requests.memory, Memory(128 * MI));
        assert_eq!(s.requests.cpu, Cpu(300));
        assert!(
            notes.iter().any(|n| n.contains("ResourceQuota shop/q")),
            "{notes:?}"
        );
    }

    #[test]
    fn fit_quota_full_either_way_is_not_ours() {
        let c = NamespaceConstraints {
            limit_ranges: vec![],
            quotas: vec![quota(
                json!({"requests.cpu": "1"}),
                json!({"requests.cpu": "1"}),
            )],
        };
        let (_, notes) = fits(fit(
            size(300, 64, 1000, 64),
            istio(),
            &pod(full_app()),
            &c,
            true,
        ));
        assert!(
            notes.last().unwrap().contains("with or without"),
            "{notes:?}"
        );
    }

    #[test]
    fn fit_pod_max_lowers_limit_under_ratio() {
        // Pod max cpu 1 with the app at 800m requests / 800m limits; ratio 2 per container.
        let c = only_lrs(vec![lr(json!([
            {"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}},
            {"type": "Pod", "max": {"cpu": "1"}}
        ]))]);
        let app = pod(
            json!({"requests": {"cpu": "800m", "memory": "64Mi"}, "limits": {"cpu": "800m", "memory": "64Mi"}}),
        );
        let (s, _) = fits(fit(size(50, 64, 1000, 64), istio(), &app, &c, true));
        let built = pod_with_proxy(&app, s, ProxyPlacement::Container);
        assert!(check_after_webhooks(&built, &c).is_ok(), "{s:?}");
        assert!(s.limits.cpu <= Cpu(200));
    }

    #[test]
    fn fit_pod_max_on_limit_then_request() {
        // The app has no CPU limit: the pod's CPU limit is ours alone.
        let c = only_lrs(vec![lr(json!([{"type": "Pod", "max": {"cpu": "2"}}]))]);
        let app = pod(
            json!({"requests": {"cpu": "1500m", "memory": "64Mi"}, "limits": {"memory": "64Mi"}}),
        );
        let (s, _) = fits(fit(size(2500, 64, 5000, 64), istio(), &app, &c, true));
        assert_eq!((s.requests.cpu, s.limits.cpu), (Cpu(500), Cpu(2000)));
    }

    #[test]
    fn fit_pod_min_raises_request() {
        let c = only_lrs(vec![lr(
            json!([{"type": "Pod", "min": {"memory": "512Mi"}}]),
        )]);
        let (s, _) = fits(fit(
            size(100, 64, 1000, 64),
            istio(),
            &pod(full_app()),
            &c,
            true,
        ));
        assert_eq!(s.requests.memory, Memory(384 * MI));
    }

    #[test]
    fn fit_native_sidecar_and_pod_level_resources() {
        let mut p = pod(full_app());
        p.resources = Some(
            serde_json::from_value(json!({"requests": {"cpu": "300m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "1Gi"}}))
                .unwrap(),
        );
        let c = NamespaceConstraints::default();
        let f = fit_with(
            size(100, 64, 1000, 64),
            istio(),
            &p,
            &c,
            true,
            ProxyPlacement::NativeSidecar,
        );
        assert!(matches!(f, Fit::Fits { .. }), "{f:?}");
        match fit(size(500, 64, 1000, 64), istio(), &p, &c, true) {
            Fit::NoFit { object, .. } => assert_eq!(object, "pod-level resources"),
            f => panic!("{f:?}"),
        }
        let built = pod_with_proxy(&p, istio(), ProxyPlacement::NativeSidecar);
        let init = built.init_containers.unwrap();
        assert_eq!(init[0].name, PROXY);
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn fit_without_constraints_is_identity() {
        let s = size(123, 77, 2000, 77);
        let (got, notes) = fits(fit(
            s,
            istio(),
            &pod(full_app()),
            &NamespaceConstraints::default(),
            true,
        ));
        assert_eq!(got, s);
        assert!(notes.is_empty());
    }
}
