//! Mesh scope end to end (issue 14): the server watches Services, ServiceEntries and
//! Sidecars on an HTTP-level Kubernetes API double; a new workload's proxy memory follows
//! the mesh model for what it sees. Expected sizes are worked out by hand below from the
//! model's defaults (24Mi + 0.56Mi × services, 0.56Mi = 587203 bytes), the 1.15 headroom
//! and the 50 % error margin of the limit.

mod common;

use common::kube_api::{KubeApi, Verb};
use common::{fixture, mutate_and_apply, Opts, TestServer};
use serde_json::{json, Value};
use sidecar_sizer::sources::kube::KubeSource;
use sidecar_sizer::sources::mesh::MeshConfig;
use std::time::{Duration, Instant};

const SVC: &str = "services";
const SC_V1: &str = "networking.istio.io/v1/sidecars";
const SE_V1: &str = "networking.istio.io/v1/serviceentries";

fn service(ns: &str, name: &str, export_to: Option<&str>) -> Value {
    let mut s =
        json!({"metadata": {"namespace": ns, "name": name}, "spec": {"ports": [{"port": 80}]}});
    if let Some(e) = export_to {
        s["metadata"]["annotations"] = json!({"networking.istio.io/exportTo": e});
    }
    s
}

fn entry(ns: &str, name: &str, hosts: &[&str], export_to: Option<&[&str]>) -> Value {
    let mut e = json!({"metadata": {"namespace": ns, "name": name},
        "spec": {"hosts": hosts, "resolution": "DNS", "ports": [{"number": 443, "name": "https", "protocol": "TLS"}]}});
    if let Some(x) = export_to {
        e["spec"]["exportTo"] = json!(x);
    }
    e
}

fn sidecar(ns: &str, name: &str, selector: Option<Value>, hosts: &[&str]) -> Value {
    let mut s = json!({"metadata": {"namespace": ns, "name": name,
        "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"egress": [{"hosts": hosts}]}});
    if let Some(sel) = selector {
        s["spec"]["workloadSelector"] = json!({"labels": sel});
    }
    s
}

/// From team-a without a Sidecar: team-a a1..a3 (3), team-b b1..b4 (4; b-private is
/// exported to "." only), istio-system istiod (1), big s0..s399 (400); with the
/// ServiceEntries also api.example.com and db.example.com (2; big's x.internal is exported
/// to "." only): 408 Services, 410 with ServiceEntries.
fn seed(api: &KubeApi, entries: Option<&str>) {
    for n in ["a1", "a2", "a3"] {
        api.apply(SVC, service("team-a", n, None));
    }
    for n in ["b1", "b2", "b3", "b4"] {
        api.apply(SVC, service("team-b", n, None));
    }
    api.apply(SVC, service("team-b", "b-private", Some(".")));
    api.apply(SVC, service("istio-system", "istiod", None));
    for i in 0..400 {
        api.apply(SVC, service("big", &format!("s{i}"), Some("*")));
    }
    if let Some(se) = entries {
        api.apply(
            se,
            entry(
                "team-b",
                "ext",
                &["api.example.com", "db.example.com"],
                None,
            ),
        );
        api.apply(se, entry("big", "hidden", &["x.internal"], Some(&["."])));
    }
}

fn mesh_config(api: &KubeApi) -> MeshConfig {
    MeshConfig {
        kube: KubeSource::Url(api.url.clone()),
        root_namespace: "istio-system".into(),
        base: sidecar_sizer::engine::mesh::DEFAULT_BASE,
        per_service: sidecar_sizer::engine::mesh::DEFAULT_PER_SERVICE,
        calibration_workloads: 10,
    }
}

async fn start(api: Option<&KubeApi>) -> TestServer {
    TestServer::start(Opts {
        spec_dir: None,
        history: None,
        mesh: api.map(mesh_config),
        sync_timeout: Duration::from_secs(20),
        ..Opts::default()
    })
    .await
}

/// A review of a new pod of Deployment `workload` in `ns` with `labels`.
fn review(ns: &str, workload: &str, labels: Value) -> Value {
    let mut r = fixture("review-deployment-pod.json");
    let rs = format!("{workload}-5f6d7c8b9");
    let name = format!("{rs}-abcde");
    r["request"]["namespace"] = json!(ns);
    r["request"]["name"] = json!(name);
    let o = &mut r["request"]["object"]["metadata"];
    o["namespace"] = json!(ns);
    o["name"] = json!(name);
    let mut labels = labels;
    // As the ReplicaSet controller labels its pods (identity strips the hash).
    labels["pod-template-hash"] = json!("5f6d7c8b9");
    o["labels"] = labels;
    o["ownerReferences"][0]["name"] = json!(rs);
    r
}

/// (memory request, memory limit, warnings) the server gives the pod.
async fn size(server: &TestServer, r: &Value) -> (String, String, Vec<String>) {
    let (out, pod) = mutate_and_apply(server, r).await;
    let ann = |k: &str| {
        pod["metadata"]["annotations"][k]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let warnings = out["response"]["warnings"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|v| v.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (
        ann("sidecar.istio.io/proxyMemory"),
        ann("sidecar.istio.io/proxyMemoryLimit"),
        warnings,
    )
}

async fn wait_size(server: &TestServer, r: &Value, want: (&str, &str)) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (req, lim, w) = size(server, r).await;
        if (req.as_str(), lim.as_str()) == want {
            return w;
        }
        assert!(
            Instant::now() < deadline,
            "still {req}/{lim}, want {want:?}: {w:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(server: &TestServer, name: &str) -> f64 {
    let m = server.metrics().await;
    m.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map_or(f64::NAN, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_workload_memory_follows_its_scope() {
    let api = KubeApi::start(&[
        (SVC, "Service"),
        (SC_V1, "Sidecar"),
        (SE_V1, "ServiceEntry"),
    ])
    .await;
    seed(&api, Some(SE_V1));
    let web = review("team-a", "web", json!({"app": "web"}));
    let api_pod = review("team-a", "api", json!({"app": "api"}));

    // Without --mesh-scope: Istio's default 128Mi / 1Gi.
    let plain = start(None).await;
    let (req, lim, _) = size(&plain, &web).await;
    assert_eq!((req.as_str(), lim.as_str()), ("128Mi", "1Gi"));
    plain.stop().await;

    let server = start(Some(&api)).await;
    // 410 visible, no Sidecar: 24Mi + 410 × 587203 B = 265919054 B = 253.6Mi → 254Mi;
    // × 1.15 = 292.1 → 293Mi; limit 293Mi × 1.5 = 439.5 → 440Mi.
    let (req, lim, warnings) = size(&server, &web).await;
    assert_eq!(
        (req.as_str(), lim.as_str()),
        ("293Mi", "440Mi"),
        "{warnings:#?}"
    );
    // MeshScope: a namespace-local scope (./*, istio-system/*) leaves a1..a3 + istiod = 4:
    // 24Mi + 4 × 587203 B = 26.24Mi → 27Mi.
    assert!(
        warnings.iter().any(|w| w == "sidecar-sizer: MeshScope: 410 services visible via no Sidecar: ~254Mi now, ~27Mi scoped to ./* + istio-system/*"),
        "{warnings:#?}"
    );
    // Every host of the mesh: 409 Services and 3 ServiceEntry hosts.
    assert_eq!(metric(&server, "sidecar_sizer_mesh_services").await, 412.0);
    assert_eq!(metric(&server, "sidecar_sizer_mesh_istio_crds").await, 1.0);

    // The team scopes its namespace: ./* (3) + istio-system/* (1) + team-b/*.example.com (2)
    // = 6: 24Mi + 6 × 587203 B = 27.4Mi → 28Mi; × 1.15 = 32.2 → 33Mi; limit 49.5 → 50Mi.
    api.apply(
        SC_V1,
        sidecar(
            "team-a",
            "default",
            None,
            &["./*", "istio-system/*", "team-b/*.example.com"],
        ),
    );
    let warnings = wait_size(&server, &web, ("33Mi", "50Mi")).await;
    assert!(
        !warnings.iter().any(|w| w.contains("MeshScope")),
        "{warnings:#?}"
    );

    // A selector Sidecar for app=web sees big/* only: 400 → 24Mi + 400 × 587203 B =
    // 248.00002Mi → 249Mi; × 1.15 = 286.35 → 287Mi; limit 430.5 → 431Mi. Other pods of the
    // namespace keep the namespace default.
    api.apply(
        SC_V1,
        sidecar(
            "team-a",
            "web-only",
            Some(json!({"app": "web"})),
            &["big/*"],
        ),
    );
    wait_size(&server, &web, ("287Mi", "431Mi")).await;
    let (req, lim, _) = size(&server, &api_pod).await;
    assert_eq!((req.as_str(), lim.as_str()), ("33Mi", "50Mi"));

    // A malformed Sidecar: its workloads are taken to see everything (410 again).
    api.apply(
        SC_V1,
        sidecar(
            "team-a",
            "web-only",
            Some(json!({"app": "web"})),
            &["no-namespace"],
        ),
    );
    wait_size(&server, &web, ("293Mi", "440Mi")).await;
    assert_eq!(
        metric(&server, "sidecar_sizer_mesh_malformed_sidecars").await,
        1.0
    );

    // Deleting the namespace Sidecar with a root default ./* + istio-system/* → 4 visible
    // for api: 27Mi × 1.15 = 31.05 → 32Mi (the --min-memory floor too); limit 32 × 1.5 = 48Mi.
    api.delete(SC_V1, "team-a", "default");
    api.apply(
        SC_V1,
        sidecar("istio-system", "default", None, &["./*", "istio-system/*"]),
    );
    wait_size(&server, &api_pod, ("32Mi", "48Mi")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_istio_versions_and_missing_crds() {
    // Sidecars served only at v1alpha3, ServiceEntries at v1beta1: probed v1 first (404).
    let api = KubeApi::start(&[
        (SVC, "Service"),
        ("networking.istio.io/v1alpha3/sidecars", "Sidecar"),
        ("networking.istio.io/v1beta1/serviceentries", "ServiceEntry"),
    ])
    .await;
    seed(&api, Some("networking.istio.io/v1beta1/serviceentries"));
    api.apply(
        "networking.istio.io/v1alpha3/sidecars",
        sidecar(
            "team-a",
            "default",
            None,
            &["./*", "istio-system/*", "team-b/*.example.com"],
        ),
    );
    let server = start(Some(&api)).await;
    let web = review("team-a", "web", json!({"app": "web"}));
    let (req, lim, _) = size(&server, &web).await;
    assert_eq!((req.as_str(), lim.as_str()), ("33Mi", "50Mi"));
    let probes = api.requests();
    assert!(
        probes
            .iter()
            .any(|r| r.contains("/apis/networking.istio.io/v1/sidecars?")),
        "{probes:#?}"
    );
    assert!(!api
        .requests_of("networking.istio.io/v1alpha3/sidecars", Verb::Watch)
        .is_empty());
    server.stop().await;

    // No Istio CRDs: every proxy sees all 408 Services: 24Mi + 408 × 587203 B = 252.5Mi →
    // 253Mi; × 1.15 = 290.95 → 291Mi; limit 436.5 → 437Mi.
    let bare = KubeApi::start(&[(SVC, "Service")]).await;
    seed(&bare, None);
    let server = start(Some(&bare)).await;
    let (req, lim, _) = size(&server, &web).await;
    assert_eq!((req.as_str(), lim.as_str()), ("291Mi", "437Mi"));
    assert_eq!(metric(&server, "sidecar_sizer_mesh_istio_crds").await, 0.0);
    server.stop().await;
}

/// Istio's standard telemetry as OpenMetrics: each (source, destination) pair with a counter
/// sampled every 5 minutes for two hours before `end`.
fn istio_telemetry(end: u64) -> String {
    use std::fmt::Write as _;
    let http = [
        ("team-a", "web", "team-b", "b1.team-b.svc.cluster.local"),
        (
            "team-a",
            "web",
            "istio-system",
            "istiod.istio-system.svc.cluster.local",
        ),
        ("team-c", "worker", "big", "s7.big.svc.cluster.local"),
    ];
    let tcp = [("team-a", "api", "team-b", "api.example.com")];
    let mut out = String::new();
    for (family, pairs) in [
        ("istio_requests", &http[..]),
        ("istio_tcp_connections_opened", &tcp[..]),
    ] {
        let _ = writeln!(out, "# TYPE {family} counter");
        for (sns, swl, dns, dsvc) in pairs {
            for k in 0..24u64 {
                let t = end - (23 - k) * 300;
                let _ = writeln!(
                    out,
                    "{family}_total{{reporter=\"source\",source_workload=\"{swl}\",source_workload_namespace=\"{sns}\",destination_service=\"{dsvc}\",destination_service_namespace=\"{dns}\"}} {} {t}",
                    k * 10
                );
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_suggest_writes_sidecars_from_real_prometheus() {
    let api = KubeApi::start(&[
        (SVC, "Service"),
        (SC_V1, "Sidecar"),
        (SE_V1, "ServiceEntry"),
    ])
    .await;
    seed(&api, Some(SE_V1));
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let end = (now - 120) / 300 * 300;
    let prom = common::prom::Prometheus::start(dir.path(), &istio_telemetry(end));
    let (url, kube) = (prom.url.clone(), api.url.clone());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
            .args([
                "mesh",
                "suggest",
                "--prometheus-url",
                &url,
                "--kube-api-url",
                &kube,
            ])
            .args(["--history-window", "1d"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = text
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect();
    let want = [
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "team-a"},
            "spec": {"egress": [{"hosts": ["istio-system/*", "team-b/api.example.com",
                "team-b/b1.team-b.svc.cluster.local"]}]}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": "team-c"},
            "spec": {"egress": [{"hosts": ["istio-system/*", "big/s7.big.svc.cluster.local"]}]}}),
    ];
    assert_eq!(docs, want, "{text}");
    // team-a sees 410 now (~254Mi), 3 after (istiod, api.example.com, b1): 24Mi + 3 ×
    // 587203 B = 25.7Mi → 26Mi; saves 228Mi per proxy. team-c: 410 now, 2 after → 26Mi.
    assert!(
        text.contains("# team-a: 2 workloads (api, web); 410 → 3 services visible; expected memory ~254Mi → ~26Mi per proxy, saves ~228Mi per proxy"),
        "{text}"
    );
    assert!(
        text.contains("# team-c: 1 workload (worker); 410 → 2 services visible"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_show_lists_workloads_with_their_scope() {
    let api = KubeApi::start(&[
        (SVC, "Service"),
        (SC_V1, "Sidecar"),
        (SE_V1, "ServiceEntry"),
        ("pods", "Pod"),
    ])
    .await;
    seed(&api, Some(SE_V1));
    api.apply(
        SC_V1,
        sidecar(
            "team-a",
            "web-only",
            Some(json!({"app": "web"})),
            &["big/*"],
        ),
    );
    for (wl, app) in [("web", "web"), ("api", "api")] {
        let pod = review("team-a", wl, json!({"app": app}))["request"]["object"].clone();
        api.apply("pods", pod);
    }
    let kube = api.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
            .args(["mesh", "show", "--format", "json", "--kube-api-url", &kube])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_str(&text).unwrap();
    // api: no Sidecar applies, 410 visible → 254Mi; web: big/* → 400 → 249Mi.
    assert_eq!(
        doc["workloads"],
        json!([
            {"namespace": "team-a", "workload": "api", "sidecar": null,
             "visibleServices": 410, "expectedMemory": "254Mi"},
            {"namespace": "team-a", "workload": "web", "sidecar": "team-a/web-only",
             "visibleServices": 400, "expectedMemory": "249Mi"},
        ])
    );
    assert_eq!(doc["calibration"]["calibrated"], false);
    assert_eq!(doc["calibration"]["perServiceBytes"], 587203);
}
