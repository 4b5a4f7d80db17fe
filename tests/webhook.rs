//! End to end over real TLS: certs from the project's own code, the server on 127.0.0.1:0,
//! the captured kube-apiserver reviews posted over HTTP/1.1 and HTTP/2 by a client that
//! trusts only the generated CA, and the returned patch applied to the exact object.

mod common;

use common::*;
use serde_json::{json, Value};
use sidecar_sizer::webhook::wire::Settings;

/// examples/: shop/cart spec asks 500m/80Mi for 6 replicas; history saw p95 212m and
/// max 80Mi at 3 replicas over 14d → 212/0.75 × 3/6 = 141.3 → 145m; 80Mi × 1.15 = 92Mi;
/// cpu limit max(2×145m, 1) → 1 core; memory limit = request.
const CART: [&str; 4] = ["145m", "1", "92Mi", "92Mi"];
/// No spec, no history: Istio's defaults.
const DEFAULTS: [&str; 4] = ["100m", "2", "128Mi", "1Gi"];

fn annotations(pod: &Value) -> &serde_json::Map<String, Value> {
    pod["metadata"]["annotations"]
        .as_object()
        .expect("annotations")
}

fn assert_sized(pod: &Value, want: [&str; 4], source: &str) {
    let a = annotations(pod);
    assert_eq!(a["sidecar.istio.io/proxyCPU"], want[0]);
    assert_eq!(a["sidecar.istio.io/proxyCPULimit"], want[1]);
    assert_eq!(a["sidecar.istio.io/proxyMemory"], want[2]);
    assert_eq!(a["sidecar.istio.io/proxyMemoryLimit"], want[3]);
    let d: Value = serde_json::from_str(a["sidecar-sizer.io/decision"].as_str().unwrap()).unwrap();
    assert_eq!(d["source"], source);
    assert_eq!(d["cpu"], want[0]);
    assert!(!d["reasons"].as_array().unwrap().is_empty());
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {list} {name}"))
}

fn assert_proxy_resources(c: &Value, want: [&str; 4]) {
    assert_eq!(c["resources"]["requests"]["cpu"], want[0]);
    assert_eq!(c["resources"]["limits"]["cpu"], want[1]);
    assert_eq!(c["resources"]["requests"]["memory"], want[2]);
    assert_eq!(c["resources"]["limits"]["memory"], want[3]);
}

/// Post every fixture, check the final pod, then check idempotence.
async fn round_trip(http2: bool) {
    let server = TestServer::start(Opts::default()).await;
    let client = server.client(http2);
    let url = format!("{}/mutate?timeout=10s", server.base);
    for name in FIXTURES {
        let review = fixture(name);
        let (status, version, body) =
            post(&client, &url, serde_json::to_vec(&review).unwrap()).await;
        assert_eq!(status, 200, "{name}");
        let want_version = if http2 {
            reqwest::Version::HTTP_2
        } else {
            reqwest::Version::HTTP_11
        };
        assert_eq!(version, want_version);
        let out = body.unwrap();
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(
            out["response"]["uid"], review["request"]["uid"],
            "{name}: uid echo"
        );
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch", "{name}");
        let patch = patch_of(&out).expect("a patch");
        let object = &review["request"]["object"];
        let pod = apply(object, &patch);

        match name {
            "review-reinvocation.json" => {
                // Namespace reinv has no spec and no history.
                assert_sized(&pod, DEFAULTS, "default");
                assert_eq!(annotations(&pod)["k8slab.example/reinv-z"], "added");
                assert!(pod["metadata"]["labels"]
                    .get("sidecar.istio.io/inject")
                    .is_none());
            }
            _ => {
                assert_sized(&pod, CART, "history");
                assert_eq!(
                    pod["metadata"]["labels"]["sidecar.istio.io/inject"], "true",
                    "{name}"
                );
                assert_eq!(pod["metadata"]["labels"]["app"], "cart");
            }
        }
        // The app container is never touched.
        assert_eq!(
            container(&pod, "containers", "master")["resources"],
            container(object, "containers", "master")["resources"]
        );
        match name {
            "review-istio-already-injected.json" => {
                assert_proxy_resources(container(&pod, "containers", "istio-proxy"), CART);
                // istio-init keeps its own resources.
                assert_eq!(
                    container(&pod, "initContainers", "istio-init")["resources"],
                    container(object, "initContainers", "istio-init")["resources"]
                );
                assert!(annotations(&pod).contains_key("sidecar.istio.io/status"));
            }
            "review-native-sidecar.json" => {
                let proxy = container(&pod, "initContainers", "istio-proxy");
                assert_eq!(proxy["restartPolicy"], "Always");
                assert_proxy_resources(proxy, CART);
            }
            _ => {
                assert!(pod["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|c| c["name"] != "istio-proxy"));
            }
        }

        // Applying the patch twice equals applying it once.
        assert_eq!(apply(&pod, &patch), pod, "{name}: patch applied twice");
        // Reviewing the patched pod again yields no patch at all.
        let mut again = review.clone();
        again["request"]["object"] = pod.clone();
        again["request"]["uid"] = json!("second-look");
        let (status, _, body) = post(&client, &url, serde_json::to_vec(&again).unwrap()).await;
        assert_eq!(status, 200);
        let out2 = body.unwrap();
        assert_eq!(out2["response"]["uid"], "second-look");
        assert!(out2["response"].get("patch").is_none(), "{name}: {out2}");
        assert!(
            out2["response"].get("patchType").is_none(),
            "{name}: {out2}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn fixtures_over_http1() {
    round_trip(false).await;
}

#[tokio::test]
async fn fixtures_over_http2() {
    round_trip(true).await;
}

/// The wire format we emit: `patch` is a base64 string (not kube-core's array of
/// numbers), `patchType` only with a patch, the op list exactly as pinned.
/// `UPDATE_GOLDEN=1 cargo test --test webhook golden` rewrites the file after a reviewed change.
#[tokio::test]
async fn golden_wire_format() {
    let server = TestServer::start(Opts::default()).await;
    let client = server.client(false);
    let review = fixture("review-deployment-pod.json");
    let (_, _, body) = post(
        &client,
        &format!("{}/mutate", server.base),
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    let out = body.unwrap();
    assert!(
        out["response"]["patch"].is_string(),
        "patch must be base64: {out}"
    );
    let patch = serde_json::to_value(patch_of(&out).unwrap()).unwrap();
    let got = json!({"response": out, "decodedPatch": patch});
    let path = repo().join("tests/golden/deployment-pod.json");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        got, want,
        "wire format changed; review and run with UPDATE_GOLDEN=1"
    );
    server.stop().await;
}

#[tokio::test]
async fn dry_run_path_explains_without_patching() {
    let server = TestServer::start(Opts::default()).await;
    let client = server.client(true);
    let review = fixture("review-deployment-pod.json");
    let (status, _, body) = post(
        &client,
        &format!("{}/dry-run?timeout=10s", server.base),
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let out = body.unwrap();
    let r = &out["response"];
    assert_eq!(r["allowed"], true);
    assert!(r.get("patch").is_none() && r.get("patchType").is_none());
    let warnings: Vec<&str> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(
        warnings[0],
        "sidecar-sizer dry-run: istio-proxy cpu 100m→145m (limit 2→1), memory 128Mi→92Mi (limit 1Gi→92Mi); source history"
    );
    assert!(warnings
        .iter()
        .all(|w| w.chars().count() <= 120 && !w.chars().any(char::is_control)));
    let decision: Value =
        serde_json::from_str(r["auditAnnotations"]["decision"].as_str().unwrap()).unwrap();
    assert_eq!(decision["source"], "history");
    assert_eq!(decision["cpu"], "145m");

    // The pod annotation turns one workload to review-only on /mutate too.
    let mut review = fixture("review-deployment-pod.json");
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"sidecar-sizer.io/mode": "dry-run"});
    let (_, _, body) = post(
        &client,
        &format!("{}/mutate", server.base),
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    let out = body.unwrap();
    assert!(out["response"].get("patch").is_none(), "{out}");
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("sidecar-sizer dry-run:"));
    server.stop().await;
}

#[tokio::test]
async fn serve_mode_dry_run_never_patches() {
    let server = TestServer::start(Opts {
        settings: Settings {
            dry_run_everywhere: true,
            ..Settings::default()
        },
        ..Opts::default()
    })
    .await;
    let client = server.client(false);
    for name in FIXTURES {
        let (_, _, body) = post(
            &client,
            &format!("{}/mutate", server.base),
            serde_json::to_vec(&fixture(name)).unwrap(),
        )
        .await;
        let out = body.unwrap();
        assert!(out["response"].get("patch").is_none(), "{name}");
        assert!(
            out["response"]["auditAnnotations"]["decision"].is_string(),
            "{name}"
        );
    }
    server.stop().await;
}

fn with_object(edit: impl FnOnce(&mut Value)) -> Value {
    let mut review = fixture("review-istio-already-injected.json");
    edit(&mut review["request"]["object"]);
    review
}

#[tokio::test]
async fn skip_rules() {
    let server = TestServer::start(Opts::default()).await;
    let cases = [
        with_object(|o| o["metadata"]["labels"]["sidecar.istio.io/inject"] = json!("false")),
        with_object(|o| o["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("false")),
        with_object(|o| o["metadata"]["annotations"]["sidecar-sizer.io/skip"] = json!("true")),
        with_object(|o| o["spec"]["hostNetwork"] = json!(true)),
        {
            let mut r = fixture("review-deployment-pod.json");
            r["request"]["operation"] = json!("UPDATE");
            r
        },
    ];
    for (i, review) in cases.iter().enumerate() {
        let out = mutate(&server, review).await;
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["uid"], review["request"]["uid"]);
        assert!(out["response"].get("patch").is_none(), "case {i}: {out}");
    }
    server.stop().await;
}

#[tokio::test]
async fn explicit_annotations_are_kept_with_a_warning() {
    let server = TestServer::start(Opts::default()).await;
    let review =
        with_object(|o| o["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"] = json!("1500m"));
    let out = mutate(&server, &review).await;
    let pod = apply(&review["request"]["object"], &patch_of(&out).unwrap());
    let a = annotations(&pod);
    assert_eq!(a["sidecar.istio.io/proxyCPU"], "1500m");
    // Filled limit kept ≥ the explicit request; the container follows the annotations.
    assert_eq!(a["sidecar.istio.io/proxyCPULimit"], "1500m");
    assert_eq!(a["sidecar.istio.io/proxyMemory"], "92Mi");
    let proxy = container(&pod, "containers", "istio-proxy");
    assert_eq!(proxy["resources"]["requests"]["cpu"], "1500m");
    assert_eq!(proxy["resources"]["limits"]["cpu"], "1500m");
    let w = out["response"]["warnings"].to_string();
    assert!(
        w.contains("kept explicit istio annotations proxyCPU"),
        "{w}"
    );
    server.stop().await;
}

#[tokio::test]
async fn invalid_results_are_never_returned() {
    let server = TestServer::start(Opts::default()).await;
    // The proxy's ephemeral-storage request is already above its limit: any patch touching
    // that container would make the apiserver reject the pod.
    let review = with_object(|o| {
        for c in o["spec"]["containers"].as_array_mut().unwrap() {
            if c["name"] == "istio-proxy" {
                c["resources"]["requests"]["ephemeral-storage"] = json!("2Gi");
                c["resources"]["limits"]["ephemeral-storage"] = json!("1Gi");
            }
        }
    });
    let out = mutate(&server, &review).await;
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none(), "{out}");
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("ephemeral-storage"),
        "{out}"
    );

    // Two istio-proxy containers: not sized.
    let review = with_object(|o| {
        let proxy = container(o, "containers", "istio-proxy").clone();
        o["spec"]["containers"].as_array_mut().unwrap().push(proxy);
    });
    let out = mutate(&server, &review).await;
    assert!(out["response"].get("patch").is_none());
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("2 istio-proxy"));

    // Explicit annotations that contradict each other.
    let review = with_object(|o| {
        o["metadata"]["annotations"]["sidecar.istio.io/proxyMemory"] = json!("2Gi");
        o["metadata"]["annotations"]["sidecar.istio.io/proxyMemoryLimit"] = json!("1Gi");
    });
    let out = mutate(&server, &review).await;
    assert!(out["response"].get("patch").is_none());
    server.stop().await;
}

#[tokio::test]
async fn bad_input() {
    let server = TestServer::start(Opts::default()).await;
    let client = server.client(false);
    let url = format!("{}/mutate", server.base);
    for (body, needle) in [
        (b"hello".to_vec(), "not JSON"),
        (b"{\"kind\":\"Pod\"}".to_vec(), "AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}"#.to_vec(),
            "v1beta1",
        ),
    ] {
        let (status, _, text) = post(&client, &url, body).await;
        assert_eq!(status, 400);
        let text = text.unwrap_err();
        assert!(text.contains(needle), "{text}");
        assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    }
    // Over 3 MiB: refused.
    let mut big = fixture("review-deployment-pod.json");
    big["request"]["object"]["metadata"]["annotations"] =
        json!({"pad": "x".repeat(3 * 1024 * 1024)});
    let (status, _, _) = post(&client, &url, serde_json::to_vec(&big).unwrap()).await;
    assert_eq!(status, 413);
    // A review whose object is not a Pod: allowed, no patch, a warning.
    let mut review = fixture("review-deployment-pod.json");
    review["request"]["object"]["spec"]["containers"] = json!("not a list");
    let (status, _, body) = post(&client, &url, serde_json::to_vec(&review).unwrap()).await;
    assert_eq!(status, 200);
    let out = body.unwrap();
    assert_eq!(out["response"]["uid"], review["request"]["uid"]);
    assert_eq!(out["response"]["allowed"], true);
    assert!(out["response"].get("patch").is_none());
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("cannot decode"));
    // The server is unaffected.
    let (status, _, body) = post(
        &client,
        &url,
        serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(patch_of(&body.unwrap()).is_some());

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("sidecar_sizer_bad_requests_total 4"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_spec_falls_down_the_chain_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("shop/cart.yaml"),
        "deployment:\n  istio:\n    resources:\n      cpu: fast\n",
    );
    write(
        &dir.path().join("reinv/cart.yaml"),
        "deployment:\n  istio:\n    resources: {cpu: 300m, memory: 64Mi}\n",
    );
    let server = TestServer::start(Opts {
        spec_dir: Some(dir.path().to_path_buf()),
        history: None,
        ..Opts::default()
    })
    .await;
    let out = mutate(&server, &fixture("review-deployment-pod.json")).await;
    let pod = apply(
        &fixture("review-deployment-pod.json")["request"]["object"],
        &patch_of(&out).unwrap(),
    );
    assert_sized(&pod, DEFAULTS, "default");
    let w = out["response"]["warnings"][0].as_str().unwrap();
    assert!(
        w.contains("spec shop/cart.yaml invalid (spec ignored)"),
        "{w}"
    );
    // Another workload's spec is unaffected.
    let review = fixture("review-reinvocation.json");
    let out = mutate(&server, &review).await;
    let pod = apply(&review["request"]["object"], &patch_of(&out).unwrap());
    assert_sized(&pod, ["300m", "1", "64Mi", "64Mi"], "spec");

    // Fix the file: picked up by the background reload.
    write(
        &dir.path().join("shop/cart.yaml"),
        "deployment:\n  istio:\n    resources: {cpu: 700m, memory: 100Mi}\n",
    );
    let mut fixed = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let out = mutate(&server, &fixture("review-deployment-pod.json")).await;
        let pod = apply(
            &fixture("review-deployment-pod.json")["request"]["object"],
            &patch_of(&out).unwrap(),
        );
        if annotations(&pod)["sidecar.istio.io/proxyCPU"] == "700m" {
            fixed = true;
            break;
        }
    }
    assert!(fixed, "spec change not picked up");
    let metrics = server.metrics().await;
    assert!(metrics.contains("sidecar_sizer_spec_errors 0"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let server = TestServer::start(Opts::default()).await;
    let get = |p: &str| reqwest::get(format!("{}{p}", server.health));
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    mutate(&server, &fixture("review-deployment-pod.json")).await;
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "sidecar_sizer_admission_duration_seconds_bucket{le=\"0.00005\"}",
        "sidecar_sizer_decisions_total{mode=\"enforce\",source=\"history\",outcome=\"patched\"} 1",
        "sidecar_sizer_history_workloads 3",
        "sidecar_sizer_specs_loaded 2",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    // The admission port speaks TLS only.
    let plain = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{}/mutate",
            server.running.as_ref().unwrap().tls_addr.port()
        ))
        .body("{}")
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    server.stop().await;
}
