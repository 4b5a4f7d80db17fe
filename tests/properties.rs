//! Properties of decide() and the patch over generated specs and histories: bounds,
//! limits ≥ requests, CPU limits in whole cores, monotonic in usage, idempotent patches.

use proptest::prelude::*;
use sidecar_sizer::engine::patch::{self, PatchOptions};
use sidecar_sizer::engine::quantity::{Cpu, Memory, MI};
use sidecar_sizer::engine::sizing::{decide, Inputs, Policy, Source, PROXY};
use sidecar_sizer::engine::spec::{Declared, Spec};
use sidecar_sizer::sources::history::{ContainerUsage, WorkloadUsage};

fn usage(cpu: f64, mem: u64, samples: u64, hours: f64, replicas: f64, oom: u32) -> WorkloadUsage {
    let mut w = WorkloadUsage {
        avg_replicas: Some(replicas),
        ..Default::default()
    };
    w.containers.insert(
        PROXY.into(),
        ContainerUsage {
            cpu_p95_cores: cpu,
            memory_max_bytes: mem,
            samples,
            hours,
            oom_kills: oom,
        },
    );
    w
}

prop_compose! {
    fn arb_spec()(cpu in proptest::option::of(1u64..8000), mem in proptest::option::of(1u64..8192),
                  lim_cpu in proptest::option::of(1u64..16000), lim_mem in proptest::option::of(1u64..16384),
                  pin in any::<bool>(), replicas in proptest::option::of(1u32..50)) -> Spec {
        let req = Declared { cpu: cpu.map(Cpu), memory: mem.map(|m| Memory(m * MI)) };
        // Valid specs only (parse() rejects limits below requests).
        let lim = Declared {
            cpu: lim_cpu.map(|l| Cpu(l.max(cpu.unwrap_or(0)))),
            memory: lim_mem.map(|l| Memory(l.max(mem.unwrap_or(0)) * MI)),
        };
        Spec { inject: Some(true), proxy_requests: req, proxy_limits: lim, pin: pin && !req.is_empty(),
               replicas, app_requests: Declared::default(), revision: None }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decisions_are_valid(spec in proptest::option::of(arb_spec()),
                           cpu in 0.0f64..20.0, mem in 0u64..(16 * 1024 * MI),
                           samples in 0u64..10_000, hours in 0.0f64..400.0,
                           replicas in 0.1f64..40.0, oom in 0u32..3) {
        let p = Policy::default();
        let u = usage(cpu, mem, samples, hours, replicas, oom);
        let d = decide(&Inputs { spec: spec.as_ref(), usage: Some(&u), app_container: None, app_requests_in_pod: Declared::default(), mesh: None }, &p);
        prop_assert!(d.limits.cpu >= d.requests.cpu);
        prop_assert!(d.limits.memory >= d.requests.memory);
        let explicit_cpu_limit = spec.as_ref().and_then(|s| s.proxy_limits.cpu).is_some();
        let explicit_mem_limit = spec.as_ref().and_then(|s| s.proxy_limits.memory).is_some();
        if d.source.cpu != Source::Default {
            prop_assert!(d.requests.cpu >= p.min_cpu && d.requests.cpu <= p.max_cpu);
            if !explicit_cpu_limit {
                prop_assert_eq!(d.limits.cpu.0 % 1000, 0, "cpu limit in whole cores");
            }
        } else if !explicit_cpu_limit {
            // Istio's default, request AND limit.
            prop_assert_eq!((d.requests.cpu, d.limits.cpu), (p.default_requests.cpu, p.default_limits.cpu));
        }
        if d.source.memory != Source::Default {
            prop_assert!(d.requests.memory >= p.min_memory && d.requests.memory <= p.max_memory);
        } else if !explicit_mem_limit {
            prop_assert_eq!((d.requests.memory, d.limits.memory), (p.default_requests.memory, p.default_limits.memory));
        }
        if d.source.cpu == Source::History {
            prop_assert_eq!(d.requests.cpu.0 % p.cpu_step_millis, 0);
        }
        // A memory limit below the request is never produced, and never below 32Mi from
        // missing evidence: zero memory history is no evidence.
        if mem == 0 && spec.as_ref().and_then(|s| s.proxy_requests.memory).is_none() {
            prop_assert_eq!(d.source.memory, Source::Default);
        }
        prop_assert!(!d.reasons.is_empty());
    }

    #[test]
    fn more_usage_never_means_less(cpu in 0.0f64..6.0, extra in 0.0f64..2.0,
                                   mem in 1u64..(4 * 1024 * MI), extra_mem in 0u64..(1024 * MI)) {
        let p = Policy::default();
        let run = |c: f64, m: u64| {
            let u = usage(c, m, 4032, 336.0, 3.0, 0);
            decide(&Inputs { spec: None, usage: Some(&u), app_container: None, app_requests_in_pod: Declared::default(), mesh: None }, &p)
        };
        let (a, b) = (run(cpu, mem), run(cpu + extra, mem + extra_mem));
        prop_assert!(b.requests.cpu >= a.requests.cpu);
        prop_assert!(b.requests.memory >= a.requests.memory);
        prop_assert!(b.limits.cpu >= a.limits.cpu);
    }

    #[test]
    fn patches_are_valid_and_idempotent(spec in proptest::option::of(arb_spec()),
                                        cpu in 0.0f64..10.0, mem in 0u64..(8 * 1024 * MI),
                                        explicit in proptest::option::of(1u64..5000),
                                        with_proxy in any::<bool>()) {
        let p = Policy::default();
        let u = usage(cpu, mem, 4032, 336.0, 3.0, 0);
        let d = decide(&Inputs { spec: spec.as_ref(), usage: Some(&u), app_container: None, app_requests_in_pod: Declared::default(), mesh: None }, &p);
        let mut pod = serde_json::json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "app"}]}});
        if with_proxy {
            pod["spec"]["containers"].as_array_mut().unwrap().push(serde_json::json!({"name": "istio-proxy"}));
        }
        if let Some(e) = explicit {
            pod["metadata"]["annotations"] = serde_json::json!({"sidecar.istio.io/proxyCPU": format!("{e}m")});
        }
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod).unwrap();
        let planned = patch::plan(&pod, &d, PatchOptions::default()).unwrap();
        patch::validate(&pod, &planned.ops).unwrap();
        let mut doc = serde_json::to_value(&pod).unwrap();
        json_patch::patch(&mut doc, &planned.ops).unwrap();
        let patched: k8s_openapi::api::core::v1::Pod = serde_json::from_value(doc).unwrap();
        patch::validate(&patched, &[]).unwrap();
        let again = patch::plan(&patched, &d, PatchOptions::default()).unwrap();
        prop_assert!(again.ops.is_empty(), "second pass not empty: {:?}", again.ops);
        prop_assert!(planned.limits.cpu >= planned.requests.cpu);
        prop_assert!(planned.limits.memory >= planned.requests.memory);
    }
}
