//! Our admission model (`engine::constraints`) against verdicts recorded from a real
//! kube-apiserver v1.28.7 (`../shared/oracles/`, see its README): every line must agree.
//! Files: `../shared/oracles/limitrange.jsonl` and `../shared/oracles/resourcequota.jsonl`.

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeSpec, PodSpec, ResourceQuota, ResourceQuotaSpec, ResourceQuotaStatus,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;
use sidecar_sizer::engine::constraints::{
    admit, apply_defaults, check_after_webhooks, default_requests_to_limits, fit_with,
    pod_with_proxy, stored_limit_range, validate_limit_range, Fit, NamespaceConstraints,
    ProxyPlacement, Size, Violation,
};
use sidecar_sizer::engine::quantity::{Cpu, Memory, Quantity, MI};
use sidecar_sizer::engine::sizing::Resources;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn oracle_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/oracles");
    assert!(
        dir.join("limitrange.jsonl").is_file() && dir.join("resourcequota.jsonl").is_file(),
        "oracle corpus missing: expected {}/limitrange.jsonl and resourcequota.jsonl \
         (the shared oracles directory next to the repository; CI provides it)",
        dir.display()
    );
    dir
}

fn lines(file: &str) -> Vec<(usize, Value)> {
    let path = oracle_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{file}:{}: bad JSON: {e}", i + 1));
            (i + 1, v)
        })
        .collect()
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("case".into()),
        ..Default::default()
    }
}

fn list(v: &Value) -> Option<BTreeMap<String, KQuantity>> {
    serde_json::from_value(v.clone()).ok()
}

/// Resources of every container as `name -> (requests, limits)`, quantities parsed.
type Stored = BTreeMap<String, (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>)>;

fn parsed(m: Option<&BTreeMap<String, KQuantity>>) -> BTreeMap<String, Quantity> {
    m.into_iter()
        .flatten()
        .map(|(k, v)| {
            let q = Quantity::parse(&v.0).unwrap_or_else(|e| panic!("{k}={}: {e}", v.0));
            (k.clone(), q)
        })
        .collect()
}

fn stored_of_pod(pod: &PodSpec) -> (Stored, Stored) {
    let conv = |cs: &[k8s_openapi::api::core::v1::Container]| -> Stored {
        cs.iter()
            .map(|c| {
                let r = c.resources.as_ref();
                (
                    c.name.clone(),
                    (
                        parsed(r.and_then(|r| r.requests.as_ref())),
                        parsed(r.and_then(|r| r.limits.as_ref())),
                    ),
                )
            })
            .collect()
    };
    (
        conv(&pod.containers),
        conv(pod.init_containers.as_deref().unwrap_or(&[])),
    )
}

fn stored_of_json(v: &Value) -> (Stored, Stored) {
    let pod: PodSpec = serde_json::from_value(serde_json::json!({
        "containers": v["containers"],
        "initContainers": v.get("initContainers").cloned().unwrap_or(Value::Array(vec![])),
    }))
    .expect("stored is a pod spec fragment");
    stored_of_pod(&pod)
}

fn verdict(r: &Result<PodSpec, Vec<Violation>>) -> String {
    match r {
        Ok(_) => "admitted".into(),
        Err(v) => {
            let codes: Vec<String> = v.iter().map(|v| v.code().to_string()).collect();
            format!("rejected {} ({})", codes.join("/"), v[0])
        }
    }
}

/// Compare one admission line; `None` when we agree.
fn judge_line(d: &Value, c: &NamespaceConstraints) -> Option<String> {
    let pod: PodSpec = match serde_json::from_value(d["pod"].clone()) {
        Ok(p) => p,
        Err(e) => return Some(format!("pod does not parse: {e}")),
    };
    let got = admit(&pod, c);
    let admitted = d["admitted"].as_bool().unwrap_or(false);
    match (&got, admitted) {
        (Ok(stored), true) => {
            let want = stored_of_json(&d["stored"]);
            let have = stored_of_pod(stored);
            (want != have).then(|| format!("stored {want:?}, got {have:?}"))
        }
        (Err(v), false) => {
            let code = d["code"].as_u64().unwrap_or(0);
            let ours: Vec<u64> = v.iter().map(|v| u64::from(v.code())).collect();
            (!ours.iter().all(|c| *c == code))
                .then(|| format!("expected {code} ({}), got {}", d["message"], verdict(&got)))
        }
        (_, true) => Some(format!("expected admitted, got {}", verdict(&got))),
        (_, false) => Some(format!(
            "expected {} ({}), got admitted",
            d["code"], d["message"]
        )),
    }
}

fn report(file: &str, total: usize, bad: &[String]) {
    assert!(
        bad.is_empty(),
        "{file}: {} of {total} lines disagree with the apiserver:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!("{file}: all {total} lines agree");
}

#[test]
fn limitrange_oracle() {
    let all = lines("limitrange.jsonl");
    let mut bad = Vec::new();
    for (n, d) in &all {
        let spec: LimitRangeSpec = match serde_json::from_value(d["limitRange"].clone()) {
            Ok(s) => s,
            Err(e) => {
                bad.push(format!("line {n}: limitRange does not parse: {e}"));
                continue;
            }
        };
        let accepted = d["limitRangeAccepted"].as_bool().unwrap_or(true);
        match (validate_limit_range(&spec), accepted) {
            (Ok(()), true) => {}
            (Err(_), false) => continue,
            (Ok(()), false) => {
                bad.push(format!(
                    "line {n}: expected LimitRange refused ({}), got accepted",
                    d["message"]
                ));
                continue;
            }
            (Err(e), true) => {
                bad.push(format!(
                    "line {n}: expected LimitRange accepted, got refused: {e}"
                ));
                continue;
            }
        }
        // The apiserver's stored form.
        let want: LimitRangeSpec = match serde_json::from_value(d["limitRangeStored"].clone()) {
            Ok(s) => s,
            Err(e) => {
                bad.push(format!("line {n}: limitRangeStored does not parse: {e}"));
                continue;
            }
        };
        let ours = stored_limit_range(&spec);
        if !same_limit_range(&ours, &want) {
            bad.push(format!(
                "line {n}: limitRangeStored {want:?}, ours {ours:?}"
            ));
        }
        let c = NamespaceConstraints {
            limit_ranges: vec![LimitRange {
                metadata: meta("limits"),
                spec: Some(want),
            }],
            quotas: vec![],
        };
        if let Some(msg) = judge_line(d, &c) {
            bad.push(format!("line {n}: {msg}"));
        }
    }
    report("limitrange.jsonl", all.len(), &bad);
}

fn same_limit_range(a: &LimitRangeSpec, b: &LimitRangeSpec) -> bool {
    a.limits.len() == b.limits.len()
        && a.limits.iter().zip(&b.limits).all(|(x, y)| {
            x.type_ == y.type_
                && parsed(x.min.as_ref()) == parsed(y.min.as_ref())
                && parsed(x.max.as_ref()) == parsed(y.max.as_ref())
                && parsed(x.default.as_ref()) == parsed(y.default.as_ref())
                && parsed(x.default_request.as_ref()) == parsed(y.default_request.as_ref())
                && parsed(x.max_limit_request_ratio.as_ref())
                    == parsed(y.max_limit_request_ratio.as_ref())
        })
}

#[test]
fn resourcequota_oracle() {
    let all = lines("resourcequota.jsonl");
    let mut bad = Vec::new();
    for (n, d) in &all {
        let hard = list(&d["quota"]["hard"]);
        let used = list(&d["quota"]["used"]);
        let c = NamespaceConstraints {
            limit_ranges: vec![],
            quotas: vec![ResourceQuota {
                metadata: meta("quota"),
                spec: Some(ResourceQuotaSpec {
                    hard: hard.clone(),
                    ..Default::default()
                }),
                status: Some(ResourceQuotaStatus { hard, used }),
            }],
        };
        if let Some(msg) = judge_line(d, &c) {
            bad.push(format!("line {n}: {msg}"));
        }
    }
    report("resourcequota.jsonl", all.len(), &bad);
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

/// Every recorded LimitRange and quota, with its recorded pod (minus the proxy, or with it).
fn fit_cases() -> Vec<(String, NamespaceConstraints, PodSpec)> {
    let mut out = Vec::new();
    for (n, d) in lines("limitrange.jsonl") {
        if d["limitRangeAccepted"].as_bool() == Some(false) {
            continue;
        }
        let (Ok(spec), Ok(pod)) = (
            serde_json::from_value::<LimitRangeSpec>(d["limitRangeStored"].clone()),
            serde_json::from_value::<PodSpec>(d["pod"].clone()),
        ) else {
            panic!("limitrange.jsonl:{n}: does not parse");
        };
        let c = NamespaceConstraints {
            limit_ranges: vec![LimitRange {
                metadata: meta("limits"),
                spec: Some(spec),
            }],
            quotas: vec![],
        };
        out.push((format!("limitrange.jsonl:{n}"), c, pod));
    }
    for (n, d) in lines("resourcequota.jsonl") {
        let hard = list(&d["quota"]["hard"]);
        let c = NamespaceConstraints {
            limit_ranges: vec![],
            quotas: vec![ResourceQuota {
                metadata: meta("quota"),
                spec: Some(ResourceQuotaSpec {
                    hard: hard.clone(),
                    ..Default::default()
                }),
                status: Some(ResourceQuotaStatus {
                    hard,
                    used: list(&d["quota"]["used"]),
                }),
            }],
        };
        let pod: PodSpec = serde_json::from_value(d["pod"].clone())
            .unwrap_or_else(|e| panic!("resourcequota.jsonl:{n}: {e}"));
        out.push((format!("resourcequota.jsonl:{n}"), c, pod));
    }
    out
}

/// `fit` never hands back a size that gets a pod refused which would be admitted without us.
#[test]
fn fit_never_breaks_an_admissible_pod() {
    let proposals = [
        size(10, 32, 1000, 32),
        size(100, 128, 2000, 1024),
        size(285, 200, 1000, 200),
        size(2500, 4096, 5000, 4096),
        size(5, 16, 3000, 2048),
    ];
    let without_us = size(100, 128, 2000, 1024);
    let (mut fits, mut no_fits, mut checked) = (0, 0, 0);
    let mut bad = Vec::new();
    for (at, c, recorded) in fit_cases() {
        // The webhook sees the pod after pod defaulting and LimitRanger defaulting; try it with
        // the recorded proxy, and without it (injected later, as a container or native sidecar).
        let mut bare = recorded.clone();
        bare.containers.retain(|c| c.name != "istio-proxy");
        if let Some(init) = bare.init_containers.as_mut() {
            init.retain(|c| c.name != "istio-proxy");
        }
        for (pod, placement) in [
            (recorded.clone(), ProxyPlacement::Container),
            (bare.clone(), ProxyPlacement::Container),
            (bare, ProxyPlacement::NativeSidecar),
        ] {
            let pod = apply_defaults(&default_requests_to_limits(&pod), &c.limit_ranges);
            let base_ok =
                check_after_webhooks(&pod_with_proxy(&pod, without_us, placement), &c).is_ok();
            for p in proposals {
                match fit_with(p, without_us, &pod, &c, true, placement) {
                    Fit::NoFit { object, constraint } => {
                        no_fits += 1;
                        // Proposing exactly what the pod gets without us must always fit.
                        if base_ok && p == without_us {
                            bad.push(format!(
                                "{at} {placement:?}: the without-us size itself does not fit: {object}: {constraint}"
                            ));
                        }
                    }
                    Fit::Fits { size, notes } => {
                        fits += 1;
                        let final_pod = pod_with_proxy(&pod, size, placement);
                        if base_ok {
                            checked += 1;
                            if let Err(v) = check_after_webhooks(&final_pod, &c) {
                                bad.push(format!(
                                    "{at} {placement:?} proposed {p:?}: fitted {size:?} refused: {} (notes {notes:?})",
                                    v[0]
                                ));
                            }
                        }
                        if size.requests.cpu > size.limits.cpu
                            || size.requests.memory > size.limits.memory
                        {
                            bad.push(format!("{at}: fitted request above limit: {size:?}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        checked > 1000,
        "too few admissible cases checked: {checked}"
    );
    assert!(
        bad.is_empty(),
        "{} fitted sizes break admissible pods:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!("fit: {fits} fits ({checked} checked against an admissible without-us pod), {no_fits} no-fits");
}
