//! Cluster constraints that judge the pod after every mutating webhook, ours included
//! (DESIGN §8): LimitRange validation, pod validation and ResourceQuota admission.
//! `sources::cluster` keeps a [`ClusterSnapshot`] fresh in the background.

use crate::engine::quantity::{format_cpu, format_memory, Quantity};
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
                        show("", *r)
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
    let e = show("", enforced);
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
