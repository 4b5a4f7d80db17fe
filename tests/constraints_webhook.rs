//! Nothing after us rejects the pod because of us: the webhook over real TLS with
//! `--cluster-constraints` against the HTTP-level Kubernetes API double. Expected sizes are
//! worked out by hand from the LimitRange / quota rules, not by the model under test.
//!
//! The cart pod (tests/fixtures/review-deployment-pod.json, app container `master`
//! 250m/256Mi requests, 1/512Mi limits) is sized from examples/: 145m / 1 core, 92Mi / 92Mi.

mod common;

use common::kube_api::KubeApi;
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::sources::kube::KubeSource;

const LR: &str = "limitranges";
const RQ: &str = "resourcequotas";

async fn server_with(api: &KubeApi) -> TestServer {
    TestServer::start(Opts {
        cluster_constraints: Some(KubeSource::Url(api.url.clone())),
        ..Opts::default()
    })
    .await
}

fn ann<'a>(pod: &'a Value, key: &str) -> &'a str {
    pod["metadata"]["annotations"][key].as_str().unwrap_or("")
}

fn sizes(pod: &Value) -> [&str; 4] {
    [
        ann(pod, "sidecar.istio.io/proxyCPU"),
        ann(pod, "sidecar.istio.io/proxyCPULimit"),
        ann(pod, "sidecar.istio.io/proxyMemory"),
        ann(pod, "sidecar.istio.io/proxyMemoryLimit"),
    ]
}

fn warnings(out: &Value) -> Vec<String> {
    out["response"]["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn limitrange_min_and_ratio_are_met_by_raising_requests() {
    let api = KubeApi::start(&[(LR, "LimitRange"), (RQ, "ResourceQuota")]).await;
    // Container: memory at least 128Mi; limit/request at most 2 for cpu.
    api.apply(
        LR,
        json!({"metadata": {"name": "container-limits", "namespace": "shop"},
               "spec": {"limits": [{"type": "Container",
                   "min": {"memory": "128Mi"},
                   "maxLimitRequestRatio": {"cpu": "2"}}]}}),
    );
    let server = server_with(&api).await;
    let (out, pod) = mutate_and_apply(&server, &fixture("review-deployment-pod.json")).await;
    // cpu: limit 1 core (whole cores) ÷ ratio 2 → request raised from 145m to 500m (a
    // fractional limit is not an option); memory: 92Mi below min 128Mi → 128Mi, and the
    // limit follows (limit = request).
    assert_eq!(sizes(&pod), ["500m", "1", "128Mi", "128Mi"], "{out}");
    // The decision explains the adjustment.
    let d: Value = serde_json::from_str(ann(&pod, "sidecar-sizer.io/decision")).unwrap();
    let reasons = d["reasons"].to_string();
    assert!(reasons.contains("shop/container-limits"), "{reasons}");
    server.stop().await;
}

#[tokio::test]
async fn limitrange_max_lowers_the_limit() {
    let api = KubeApi::start(&[(LR, "LimitRange"), (RQ, "ResourceQuota")]).await;
    api.apply(
        LR,
        json!({"metadata": {"name": "small", "namespace": "shop"},
               "spec": {"limits": [{"type": "Container", "max": {"cpu": "800m", "memory": "1Gi"}}]}}),
    );
    let server = server_with(&api).await;
    let (_, pod) = mutate_and_apply(&server, &fixture("review-deployment-pod.json")).await;
    // 1 core limit > max 800m → the LimitRange wins: 800m (request 145m stays below it).
    assert_eq!(sizes(&pod), ["145m", "800m", "92Mi", "92Mi"]);
    server.stop().await;
}

#[tokio::test]
async fn quota_without_headroom_keeps_the_pods_own_value() {
    let api = KubeApi::start(&[(LR, "LimitRange"), (RQ, "ResourceQuota")]).await;
    // Without us the proxy gets Istio's 100m request; we want 145m. The pod's other
    // container asks 250m: used 3600m + 250m + 145m = 3995m > 3950m hard, but with Istio's
    // 100m: 3950m ≤ 3950m. So our increase does not fit: the request stays 100m.
    api.apply(
        RQ,
        json!({"metadata": {"name": "compute", "namespace": "shop"},
               "spec": {"hard": {"requests.cpu": "3950m"}},
               "status": {"hard": {"requests.cpu": "3950m"}, "used": {"requests.cpu": "3600m"}}}),
    );
    let server = server_with(&api).await;
    let (out, pod) = mutate_and_apply(&server, &fixture("review-deployment-pod.json")).await;
    assert_eq!(sizes(&pod), ["100m", "1", "92Mi", "92Mi"], "{out}");
    let w = warnings(&out).join("\n");
    assert!(w.contains("shop/compute"), "{w}");
    server.stop().await;
}

#[tokio::test]
async fn no_size_fits_pod_level_resources_leaves_the_pod_alone() {
    // No cluster constraints needed: pod-level resources are in the pod itself.
    let server = TestServer::start(Opts::default()).await;
    let mut review = fixture("review-deployment-pod.json");
    // Pod-level requests cpu 380m must hold the sum of the containers' requests: the app's
    // 250m + Istio's 100m = 350m fits, but + our 145m = 395m does not.
    review["request"]["object"]["spec"]["resources"] = json!({"requests": {"cpu": "380m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}});
    let out = mutate(&server, &review).await;
    assert!(patch_of(&out).is_none(), "{out}");
    assert_eq!(out["response"]["allowed"], true);
    let w = warnings(&out).join("\n");
    assert!(
        w.contains("pod not sized") && w.contains("pod-level resources"),
        "{w}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("sidecar_sizer_not_sized_total{reason=\"pod-resources\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}
