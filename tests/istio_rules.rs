//! Faithful to the real cluster: Istio's injection rules, the ordering with Istio's
//! injector (reinvocation), and one workload identity for admission and history. The pods
//! are the AdmissionReviews captured from a real kube-apiserver (tests/fixtures); expected
//! values are written out by hand from Istio's and Kubernetes' rules.

mod common;

use common::*;
use serde_json::{json, Value};
use sidecar_sizer::engine::workload::{identify, WorkloadKind};
use sidecar_sizer::sources::history::pods::{workload_of, PodFacts};

fn pod_of(review: &Value) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(review["request"]["object"].clone()).unwrap()
}

/// The name the pod gets once created: `metadata.name`, or the apiserver's
/// `generateName` + 5 characters of its safe alphabet.
fn created_name(review: &Value) -> String {
    let m = &review["request"]["object"]["metadata"];
    match m["name"].as_str() {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("{}x7k2p", m["generateName"].as_str().unwrap()),
    }
}

/// What kube-state-metrics reports for the pod: its controller owner and labels.
fn facts_of(pod: &k8s_openapi::api::core::v1::Pod) -> PodFacts {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()));
    PodFacts {
        owner,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
    }
}

#[test]
fn identity_of_every_captured_pod_and_history_agrees() {
    // (fixture, kind, workload) — from the fixtures' README: who created each pod.
    // already-injected, native-sidecar and server-dry-run were made with `kubectl create`
    // from a manifest: bare pods labelled app=cart.
    let want: [(&str, WorkloadKind, &str); 10] = [
        (
            "review-deployment-pod.json",
            WorkloadKind::Deployment,
            "cart",
        ),
        (
            "review-generate-name.json",
            WorkloadKind::Deployment,
            "cart",
        ),
        (
            "review-istio-already-injected.json",
            WorkloadKind::Pod,
            "cart",
        ),
        ("review-native-sidecar.json", WorkloadKind::Pod, "cart"),
        // A bare pod labelled app=cart in namespace reinv.
        ("review-reinvocation.json", WorkloadKind::Pod, "cart"),
        ("review-server-dry-run.json", WorkloadKind::Pod, "cart"),
        (
            "review-statefulset-pod.json",
            WorkloadKind::StatefulSet,
            "ledger",
        ),
        // `kubectl create job nightly-manual --from=cronjob/nightly`: the Job's name has no
        // scheduled-minutes suffix, so it is its own workload (the CronJob is not visible).
        (
            "review-job-from-cronjob-pod.json",
            WorkloadKind::Job,
            "nightly-manual",
        ),
        (
            "review-rollout-replicaset-pod.json",
            WorkloadKind::Rollout,
            "checkout",
        ),
        // Only a ConfigMap owns it (not as controller): named by its `app` label.
        (
            "review-non-controller-owner-pod.json",
            WorkloadKind::Pod,
            "runner",
        ),
    ];
    // Every captured pod is in the table.
    let mut on_disk: Vec<String> = std::fs::read_dir(repo().join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("review-") && n.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = want.iter().map(|w| w.0.to_string()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for (file, kind, name) in want {
        let review = fixture(file);
        let pod = pod_of(&review);
        let ns = review["request"]["namespace"].as_str();
        let w = identify(&pod, ns).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!((w.kind.clone(), w.name.as_str()), (kind, name), "{file}");
        assert_eq!(Some(w.namespace.as_str()), ns, "{file}");
        // History with kube-state-metrics' owner and labels names the pod the same way.
        let pod_name = created_name(&review);
        let facts = facts_of(&pod);
        assert_eq!(
            workload_of(&w.namespace, &pod_name, Some(&facts)),
            name,
            "{file}: history ({pod_name}) disagrees with admission"
        );
    }
}

#[test]
fn history_from_pod_names_alone_agrees_for_controller_pods() {
    // Without kube-state-metrics only the name is known; controllers name their pods in a
    // way that gives the workload back.
    for (pod_name, want) in [
        ("cart-7d9f8c6b5-x7k2p", "cart"),           // Deployment
        ("checkout-6c8f9d7b4-x7k2p", "checkout"),   // Argo Rollout (same naming)
        ("ledger-0", "ledger"),                     // StatefulSet
        ("nightly-29012345-x7k2p", "nightly"),      // CronJob's Job
        ("nightly-manual-x7k2p", "nightly-manual"), // Job
        ("backup-42-x7k2p", "backup-42"),           // Job with digits: not a CronJob's
        ("node-agent-x7k2p", "node-agent"),         // DaemonSet
    ] {
        assert_eq!(workload_of("shop", pod_name, None), want, "{pod_name}");
    }
}

fn with_meta(mut review: Value, labels: Value, annotations: Value) -> Value {
    let m = &mut review["request"]["object"]["metadata"];
    if let Value::Object(l) = labels {
        for (k, v) in l {
            m["labels"][k] = v;
        }
    }
    if let Value::Object(a) = annotations {
        if m.get("annotations").is_none_or(Value::is_null) {
            m["annotations"] = json!({});
        }
        for (k, v) in a {
            m["annotations"][k] = v;
        }
    }
    review
}

/// Post `review`; return (patched?, warnings).
async fn outcome(server: &TestServer, review: &Value) -> (bool, Vec<String>) {
    let out = mutate(server, review).await;
    let warnings = out["response"]["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (patch_of(&out).is_some(), warnings)
}

#[tokio::test]
async fn opt_outs_are_respected_exactly_as_istio_reads_them() {
    let server = TestServer::start(Opts::default()).await;
    let base = fixture("review-deployment-pod.json");
    // (label, annotation, sized?) — Istio injects only y/yes/true/on (any case), the label
    // wins over the annotation; an opted-out pod is never touched.
    let cases: &[(Option<&str>, Option<&str>, bool)] = &[
        (None, None, true),
        (Some("False"), None, false),
        (Some("no"), None, false),
        (Some("off"), None, false),
        (Some("disabled"), None, false),
        (None, Some("False"), false),
        (None, Some("NO"), false),
        (Some("true"), Some("false"), true),
        (Some("false"), Some("true"), false),
        (Some("Yes"), None, true),
        (Some("ON"), None, true),
    ];
    for (label, ann, sized) in cases {
        let labels = label.map_or(json!({}), |v| json!({"sidecar.istio.io/inject": v}));
        let anns = ann.map_or(json!({}), |v| json!({"sidecar.istio.io/inject": v}));
        let review = with_meta(base.clone(), labels, anns);
        let out = mutate(&server, &review).await;
        assert_eq!(
            patch_of(&out).is_some(),
            *sized,
            "label {label:?} annotation {ann:?}: {out}"
        );
        if !sized {
            // The owner's label is never rewritten: no patch at all.
            assert!(out["response"].get("patchType").is_none());
        }
    }
    for (value, sized) in [
        ("True", false),
        ("YES", false),
        ("false", true),
        ("maybe", false),
    ] {
        let review = with_meta(
            base.clone(),
            json!({}),
            json!({"sidecar-sizer.io/skip": value}),
        );
        assert_eq!(outcome(&server, &review).await.0, sized, "skip {value:?}");
    }
    // hostNetwork: Istio never injects it.
    let mut review = base.clone();
    review["request"]["object"]["spec"]["hostNetwork"] = json!(true);
    assert!(!outcome(&server, &review).await.0);
    server.stop().await;
}

/// What Istio's injector does with our annotations when it runs after us: it adds
/// `istio-proxy` with requests/limits taken from the four annotations, `istio-init`, and
/// `sidecar.istio.io/status` (Istio's injection template, `resources` from
/// `sidecar.istio.io/proxyCPU` etc.).
fn istio_injects(pod: &Value) -> Value {
    let mut pod = pod.clone();
    let a = pod["metadata"]["annotations"].clone();
    let res = json!({
        "requests": {"cpu": a["sidecar.istio.io/proxyCPU"], "memory": a["sidecar.istio.io/proxyMemory"]},
        "limits": {"cpu": a["sidecar.istio.io/proxyCPULimit"], "memory": a["sidecar.istio.io/proxyMemoryLimit"]},
    });
    pod["spec"]["containers"].as_array_mut().unwrap().push(
        json!({"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.24.0", "resources": res}),
    );
    pod["spec"]["initContainers"] = json!([{"name": "istio-init", "image": "docker.io/istio/proxyv2:1.24.0",
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"cpu": "2", "memory": "1Gi"}}}]);
    pod["metadata"]["annotations"]["sidecar.istio.io/status"] =
        json!("{\"initContainers\":[\"istio-init\"],\"containers\":[\"istio-proxy\"]}");
    pod
}

#[tokio::test]
async fn reinvocation_after_istio_injects_with_our_annotations_is_an_empty_patch() {
    let server = TestServer::start(Opts::default()).await;
    let review = fixture("review-deployment-pod.json");
    // 1. We run first (our configuration sorts before Istio's).
    let (first, pod) = mutate_and_apply(&server, &review).await;
    assert!(patch_of(&first).is_some());
    // 2. Istio injects using our annotations.
    let injected = istio_injects(&pod);
    let proxy = injected["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "istio-proxy")
        .unwrap();
    assert_eq!(proxy["resources"]["requests"]["cpu"], "145m");
    // 3. The apiserver calls us again (IfNeeded), with a new uid.
    let mut again = review.clone();
    again["request"]["uid"] = json!("0f0e0d0c-reinvoked");
    again["request"]["object"] = injected;
    let out = mutate(&server, &again).await;
    assert_eq!(out["response"]["uid"], "0f0e0d0c-reinvoked");
    assert!(
        patch_of(&out).is_none() && out["response"].get("patchType").is_none(),
        "reinvocation must not patch: {out}"
    );
    server.stop().await;
}

#[tokio::test]
async fn spec_revision_sets_istio_rev_label_and_plain_enabled_sets_inject_label() {
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("shop");
    std::fs::create_dir(&ns).unwrap();
    write(
        &ns.join("cart.yaml"),
        "deployment:\n  istio:\n    enabled: true\n    revision: canary\n    resources: {cpu: 300m, memory: 100Mi}\n",
    );
    write(
        &ns.join("ledger.yaml"),
        "deployment:\n  istio:\n    enabled: true\n    resources: {cpu: 300m, memory: 100Mi}\n",
    );
    let server = TestServer::start(Opts {
        spec_dir: Some(dir.path().to_path_buf()),
        history: None,
        ..Opts::default()
    })
    .await;
    let (_, pod) = mutate_and_apply(&server, &fixture("review-deployment-pod.json")).await;
    assert_eq!(pod["metadata"]["labels"]["istio.io/rev"], "canary");
    assert!(pod["metadata"]["labels"]
        .get("sidecar.istio.io/inject")
        .is_none());
    let (_, pod) = mutate_and_apply(&server, &fixture("review-statefulset-pod.json")).await;
    assert_eq!(pod["metadata"]["labels"]["sidecar.istio.io/inject"], "true");
    // A spec asking for injection never overrides the owner's opt-out.
    let review = with_meta(
        fixture("review-deployment-pod.json"),
        json!({"sidecar.istio.io/inject": "false"}),
        json!({}),
    );
    let out = mutate(&server, &review).await;
    assert!(patch_of(&out).is_none());
    server.stop().await;
}
