//! Team specs from ConfigMaps, against a test double of the Kubernetes API at the HTTP level
//! (tests/common/kube_api.rs): list, watch, a watch that disconnects and resumes from its
//! resourceVersion, a spec that turns bad (last good version kept, warning on admission,
//! metric).

mod common;

use common::kube_api::{resource_version, KubeApi, Verb};
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::sources::kube::KubeSource;
use std::time::Duration;

const CM: &str = "configmaps";

fn cm(ns: &str, name: &str, key: &str, spec: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"sidecar-sizer.io/spec": "true"}},
        "data": {key: spec}
    })
}

fn spec(cpu: &str) -> String {
    format!("deployment:\n  istio:\n    resources: {{cpu: {cpu}, memory: 64Mi}}\n")
}

async fn proxy_cpu(server: &TestServer, fixture_name: &str) -> (String, Value) {
    let (body, pod) = mutate_and_apply(server, &fixture(fixture_name)).await;
    let cpu = pod["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"]
        .as_str()
        .unwrap();
    (cpu.to_string(), body)
}

async fn wait_for(server: &TestServer, fixture_name: &str, want: &str) -> Value {
    for _ in 0..150 {
        let (cpu, body) = proxy_cpu(server, fixture_name).await;
        if cpu == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{fixture_name}: proxyCPU never became {want}; last {:?}",
        proxy_cpu(server, fixture_name).await.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_follow_configmaps_through_a_reconnect() {
    let api = KubeApi::start(&[(CM, "ConfigMap")]).await;
    api.apply(CM, cm("shop", "cart-sizing", "cart.yaml", &spec("300m")));
    // Not labelled: the selector keeps it out of the list and the watch.
    api.apply(
        CM,
        json!({"metadata": {"name": "other", "namespace": "shop"},
               "data": {"cart.yaml": spec("900m")}}),
    );
    let server = TestServer::start(Opts {
        spec_dir: None,
        history: None,
        spec_configmaps: Some(KubeSource::Url(api.url.clone())),
        ..Opts::default()
    })
    .await;
    // Listed before ready.
    assert_eq!(
        proxy_cpu(&server, "review-deployment-pod.json").await.0,
        "300m"
    );
    let list_rv = api.rv();
    // A change on the watch.
    let modified = api.apply(CM, cm("shop", "cart-sizing", "cart.yaml", &spec("400m")));
    wait_for(&server, "review-deployment-pod.json", "400m").await;
    // The watch drops; the watcher resumes from the MODIFIED event's resourceVersion and
    // gets more events: a new spec in another namespace and a broken version of shop/cart.
    api.drop_watches();
    api.apply(CM, cm("reinv", "cart-sizing", "cart.yaml", &spec("250m")));
    api.apply(
        CM,
        cm(
            "shop",
            "cart-sizing",
            "cart.yaml",
            "deployment:\n  istio:\n    resources: {cpu: fast}\n",
        ),
    );
    wait_for(&server, "review-reinvocation.json", "250m").await;
    let mut warned = false;
    for _ in 0..50 {
        let (cpu, body) = proxy_cpu(&server, "review-deployment-pod.json").await;
        assert_eq!(cpu, "400m", "last good version stays in force");
        if body["response"]["warnings"]
            .to_string()
            .contains("invalid (last good version in use)")
        {
            warned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(warned, "the broken spec is reported on admission");
    let requests = api.requests();
    let watches = api.requests_of(CM, Verb::Watch);
    assert!(watches.len() >= 2, "{requests:#?}");
    assert_eq!(
        resource_version(&watches[0]),
        Some(list_rv),
        "{requests:#?}"
    );
    assert_eq!(
        resource_version(&watches[1]),
        Some(modified),
        "resumed, not re-listed: {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.contains("labelSelector=sidecar-sizer.io%2Fspec%3Dtrue")),
        "{requests:#?}"
    );
    assert_eq!(api.requests_of(CM, Verb::List).len(), 1, "{requests:#?}");
    let m = server.metrics().await;
    assert!(m.contains("sidecar_sizer_spec_errors 1"), "{m}");
    server.stop().await;
}
