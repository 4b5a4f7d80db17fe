//! `sidecar-sizer report` as a real process against the HTTP-level Kubernetes API double
//! (paginated pods with an expired continue token, namespaces, HPAs, ReplicaSets,
//! Deployments, StatefulSets). Every expected number is worked out by hand below from the
//! policy in DESIGN §8 and the HPA formula of the issue, not by the code under test; the
//! sized values are also checked against what the real webhook (`serve --hpa-aware`)
//! patches for the same pods. The HTML is opened in Debian's headless chromium; the csv is
//! read back with Python's csv module; the markdown is rendered with Python-Markdown.
//!
//! Scenario (defaults: P95 ÷ 0.75 rounded up to 5m; max working set × 1.15 rounded up to
//! whole Mi, memory limit = request; CPU limit = max(2 × request, 1 core) in whole cores;
//! Istio's defaults 100m/128Mi, 2/1Gi without spec or history):
//! - shop (unlabelled → off):
//!   - Deployment cart, 3 pods (app requests 250m/256Mi), proxy 100m/128Mi 2/1Gi on two
//!     (cart-aaa-1, cart-aaa-2) and 200m/256Mi 2/1Gi on the newest (cart-bbb-1).
//!     History: proxy P95 0.015 cores, max 50Mi; app P95 0.2 cores. → 20m/58Mi, 1/58Mi.
//!     HPA cart-hpa (cpu, Utilization 70): u = 200 + 15 = 215m; before 215/(250+100) =
//!     61.43%; after 215/(250+20) = 79.63% → HpaShift (≥ 10 points).
//!   - StatefulSet ledger, 2 pods, 100m/128Mi 2/1Gi, no history → defaults (no change);
//!     HPA ledger-hpa (memory 80) cannot be judged: no history → a note.
//!   - Pod bad (no owner, app=bad): proxy cpu request "abc" (malformed → absent), memory
//!     64Mi, no limits → defaults.
//! - billing (mode enforce):
//!   - Deployment api, 1 pod, 500m/512Mi 2/1Gi; spec 300m/200Mi → 300m/200Mi, 1/200Mi.
//!   - Pod debug (no owner), proxy without resources → defaults.
//!   - a pod without istio-proxy (counted, no row) and a Succeeded pod (not counted).
//! - locked: pods may not be listed (403) → unreadable.

mod common;

use common::kube_api::{Fault, KubeApi, Verb};
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::sources::kube::KubeSource;
use std::path::{Path, PathBuf};
use std::process::Command;

const MI: u64 = 1024 * 1024;
const GI: u64 = 1024 * MI;

const PODS: &str = "pods";
const NAMESPACES: &str = "namespaces";
const HPAS: &str = "autoscaling/v2/horizontalpodautoscalers";

fn container(name: &str, req: Option<(&str, &str)>, lim: Option<(&str, &str)>) -> Value {
    let mut c = json!({"name": name, "image": format!("example/{name}")});
    if let Some((cpu, mem)) = req {
        c["resources"]["requests"] = json!({"cpu": cpu, "memory": mem});
    }
    if let Some((cpu, mem)) = lim {
        c["resources"]["limits"] = json!({"cpu": cpu, "memory": mem});
    }
    c
}

fn proxy(req: (&str, &str)) -> Value {
    container("istio-proxy", Some(req), Some(("2", "1Gi")))
}

#[allow(clippy::too_many_arguments)]
fn pod(
    ns: &str,
    name: &str,
    created: &str,
    owner: Option<(&str, &str)>,
    labels: Value,
    containers: Vec<Value>,
) -> Value {
    let mut p = json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                     "creationTimestamp": created, "labels": labels},
        "spec": {"containers": containers},
        "status": {"phase": "Running"}
    });
    if let Some((kind, owner)) = owner {
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": kind,
            "name": owner, "uid": format!("uid-{owner}"), "controller": true}]);
    }
    p
}

fn app() -> Value {
    container("app", Some(("250m", "256Mi")), None)
}

struct Fixture {
    api: KubeApi,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn specs(&self) -> PathBuf {
        self.dir.path().join("specs")
    }
    fn history(&self) -> PathBuf {
        self.dir.path().join("history.csv")
    }
}

async fn cluster() -> Fixture {
    let api = KubeApi::start(&[
        (PODS, "Pod"),
        (NAMESPACES, "Namespace"),
        ("apps/v1/replicasets", "ReplicaSet"),
        ("apps/v1/deployments", "Deployment"),
        ("apps/v1/statefulsets", "StatefulSet"),
        (HPAS, "HorizontalPodAutoscaler"),
    ])
    .await;
    // Namespaces (cluster-scoped: no namespace in the key).
    api.apply(NAMESPACES, json!({"metadata": {"name": "shop"}}));
    api.apply(
        NAMESPACES,
        json!({"metadata": {"name": "billing", "labels": {"sidecar-sizer.io/mode": "enforce"}}}),
    );
    api.apply(NAMESPACES, json!({"metadata": {"name": "locked"}}));
    // Workload objects, as a cluster has them.
    for (rs, hash, dep, ns) in [
        ("cart-aaa", "aaa", "cart", "shop"),
        ("cart-bbb", "bbb", "cart", "shop"),
        ("api-ccc", "ccc", "api", "billing"),
    ] {
        api.apply(
            "apps/v1/replicasets",
            json!({"metadata": {"name": rs, "namespace": ns, "labels": {"pod-template-hash": hash},
                   "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": dep, "uid": format!("uid-{dep}"), "controller": true}]}}),
        );
    }
    api.apply(
        "apps/v1/deployments",
        json!({"metadata": {"name": "cart", "namespace": "shop"}}),
    );
    api.apply(
        "apps/v1/deployments",
        json!({"metadata": {"name": "api", "namespace": "billing"}}),
    );
    api.apply(
        "apps/v1/statefulsets",
        json!({"metadata": {"name": "ledger", "namespace": "shop"}}),
    );
    api.apply(
        HPAS,
        json!({"metadata": {"name": "cart-hpa", "namespace": "shop"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "cart"},
                        "minReplicas": 2, "maxReplicas": 10,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": 70}}}]}}),
    );
    api.apply(
        HPAS,
        json!({"metadata": {"name": "ledger-hpa", "namespace": "shop"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "ledger"},
                        "maxReplicas": 4,
                        "metrics": [{"type": "Resource", "resource": {"name": "memory",
                            "target": {"type": "Utilization", "averageUtilization": 80}}}]}}),
    );
    let hash = |h: &str| json!({"app": "cart", "pod-template-hash": h});
    for (name, created, rs, h, req) in [
        (
            "cart-aaa-1",
            "2024-01-01T00:00:00Z",
            "cart-aaa",
            "aaa",
            ("100m", "128Mi"),
        ),
        (
            "cart-aaa-2",
            "2024-01-02T00:00:00Z",
            "cart-aaa",
            "aaa",
            ("100m", "128Mi"),
        ),
        (
            "cart-bbb-1",
            "2024-01-03T00:00:00Z",
            "cart-bbb",
            "bbb",
            ("200m", "256Mi"),
        ),
    ] {
        api.apply(
            PODS,
            pod(
                "shop",
                name,
                created,
                Some(("ReplicaSet", rs)),
                hash(h),
                vec![app(), proxy(req)],
            ),
        );
    }
    for name in ["ledger-0", "ledger-1"] {
        api.apply(
            PODS,
            pod(
                "shop",
                name,
                "2024-01-01T00:00:00Z",
                Some(("StatefulSet", "ledger")),
                json!({"app": "ledger"}),
                vec![
                    container("db", Some(("1", "1Gi")), None),
                    proxy(("100m", "128Mi")),
                ],
            ),
        );
    }
    api.apply(
        PODS,
        pod(
            "shop",
            "bad-x",
            "2024-01-01T00:00:00Z",
            None,
            json!({"app": "bad"}),
            vec![app(), container("istio-proxy", Some(("abc", "64Mi")), None)],
        ),
    );
    api.apply(
        PODS,
        pod(
            "billing",
            "api-ccc-1",
            "2024-01-01T00:00:00Z",
            Some(("ReplicaSet", "api-ccc")),
            json!({"app": "api", "pod-template-hash": "ccc"}),
            vec![app(), proxy(("500m", "512Mi"))],
        ),
    );
    api.apply(
        PODS,
        pod(
            "billing",
            "debug",
            "2024-01-01T00:00:00Z",
            None,
            json!({"app": "debug"}),
            vec![app(), container("istio-proxy", None, None)],
        ),
    );
    api.apply(
        PODS,
        pod(
            "billing",
            "batch-1",
            "2024-01-01T00:00:00Z",
            None,
            json!({"app": "batch"}),
            vec![app()],
        ),
    );
    let mut done = pod(
        "billing",
        "job-done",
        "2024-01-01T00:00:00Z",
        None,
        json!({"app": "job"}),
        vec![app(), proxy(("900m", "900Mi"))],
    );
    done["status"]["phase"] = json!("Succeeded");
    api.apply(PODS, done);
    api.apply(
        PODS,
        pod(
            "locked",
            "secret-1",
            "2024-01-01T00:00:00Z",
            None,
            json!({"app": "secret"}),
            vec![app(), proxy(("100m", "128Mi"))],
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    write(
        &dir.path().join("specs/billing/api.yaml"),
        "deployment:\n  istio:\n    resources:\n      cpu: 300m\n      memory: 200Mi\n",
    );
    write(
        &dir.path().join("history.csv"),
        &format!(
            "namespace,workload,container,cpu_p95_cores,memory_max_bytes,samples,hours,avg_replicas,oom_kills\n\
             shop,cart,istio-proxy,0.015,{},4032,336,3,0\n\
             shop,cart,app,0.2,{},4032,336,3,0\n",
            50 * MI,
            200 * MI
        ),
    );
    Fixture { api, dir }
}

/// Run the report (a real process) off the async workers; returns (exit code, stdout, stderr).
async fn report(f: &Fixture, extra: &[&str]) -> (i32, String, String) {
    let mut args: Vec<String> = vec![
        "report".into(),
        "--kube-api-url".into(),
        f.api.url.clone(),
        "--spec-dir".into(),
        f.specs().display().to_string(),
        "--history".into(),
        f.history().display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run(args).await
}

async fn run(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
            .args(&args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn q(v: &Value, k: &str) -> Option<String> {
    v[k].as_str().map(str::to_string)
}

fn four(v: &Value) -> [Option<String>; 4] {
    [
        q(v, "cpuRequest"),
        q(v, "memoryRequest"),
        q(v, "cpuLimit"),
        q(v, "memoryLimit"),
    ]
}

fn s(x: &str) -> Option<String> {
    Some(x.to_string())
}

fn sums(v: &Value) -> [u64; 4] {
    [
        v["cpuRequestMillicores"].as_u64().unwrap(),
        v["memoryRequestBytes"].as_u64().unwrap(),
        v["cpuLimitMillicores"].as_u64().unwrap(),
        v["memoryLimitBytes"].as_u64().unwrap(),
    ]
}

fn row<'a>(doc: &'a Value, ns: &str, name: &str) -> &'a Value {
    doc["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["namespace"] == ns && w["name"] == name)
        .unwrap_or_else(|| panic!("no row {ns}/{name}: {doc:#}"))
}

/// (namespace, kind, name, mode, pods, current, sized) by hand.
fn expected_rows() -> Vec<(&'static str, &'static str, &'static str, &'static str, u64)> {
    vec![
        ("billing", "Deployment", "api", "enforce", 1),
        ("billing", "Pod", "debug", "enforce", 1),
        ("shop", "Deployment", "cart", "off", 3),
        ("shop", "Pod", "bad", "off", 1),
        ("shop", "StatefulSet", "ledger", "off", 2),
    ]
}

// Hand totals (millicores, bytes): [cpu req, mem req, cpu lim, mem lim].
const SHOP_CURRENT: [u64; 4] = [
    100 + 100 + 200 + 100 + 100, // cart + ledger; bad's "abc" counts 0
    (128 + 128 + 256 + 128 + 128 + 64) * MI,
    2000 * 5,
    5 * GI,
];
const SHOP_SIZED: [u64; 4] = [
    3 * 20 + 2 * 100 + 100,
    (3 * 58 + 2 * 128 + 128) * MI,
    3 * 1000 + 2 * 2000 + 2000,
    3 * 58 * MI + 2 * GI + GI,
];
const BILLING_CURRENT: [u64; 4] = [500, 512 * MI, 2000, GI];
const BILLING_SIZED: [u64; 4] = [300 + 100, (200 + 128) * MI, 1000 + 2000, 200 * MI + GI];

fn add(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rows_totals_and_hpa_shift_by_hand_with_pagination_410_and_403() {
    let f = cluster().await;
    f.api.forbid(PODS, Some("locked"));
    // Pods may not be listed across all namespaces: namespace by namespace instead.
    f.api.forbid(PODS, None);
    // Small pages, and the first continuation of the pod list expires (410): re-list once.
    f.api.set_page_cap(2);
    f.api.fault(PODS, Verb::Continue, Fault::Status(410));
    let (code, out, err) = report(&f, &["--format", "json"]).await;
    assert_eq!(code, 0, "{err}\n{out}");
    let doc: Value = serde_json::from_str(&out).unwrap();

    // Lists are paged with limit=500 and followed by continue tokens; the 410 restarted one.
    let reqs = f.api.requests();
    let pod_lists: Vec<&String> = reqs.iter().filter(|r| r.contains("/pods")).collect();
    assert!(
        pod_lists.iter().all(|r| r.contains("limit=500")),
        "{pod_lists:#?}"
    );
    assert!(
        !f.api.requests_of(PODS, Verb::Continue).is_empty(),
        "{reqs:#?}"
    );
    assert!(
        !reqs.iter().any(|r| r.contains("watch=true")),
        "never a watch"
    );
    let shop_first_pages = reqs
        .iter()
        .filter(|r| r.contains("/namespaces/shop/pods") && !r.contains("continue="))
        .count();
    assert!(shop_first_pages >= 1);

    assert_eq!(doc["unreadable"], json!(["locked"]));
    let got: Vec<(String, String, String, String, u64)> = doc["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["namespace"].as_str().unwrap().to_string(),
                w["kind"].as_str().unwrap().to_string(),
                w["name"].as_str().unwrap().to_string(),
                w["mode"].as_str().unwrap().to_string(),
                w["pods"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, String, String, u64)> = expected_rows()
        .into_iter()
        .map(|(a, b, c, d, e)| (a.into(), b.into(), c.into(), d.into(), e))
        .collect();
    assert_eq!(got, want);

    // cart: most common current values (two pods) win; the newest pod differs.
    let cart = row(&doc, "shop", "cart");
    assert_eq!(
        four(&cart["current"]),
        [s("100m"), s("128Mi"), s("2"), s("1Gi")]
    );
    assert_eq!(cart["currentVaries"], true);
    assert_eq!(
        four(&cart["sized"]),
        [s("20m"), s("58Mi"), s("1"), s("58Mi")]
    );
    assert_eq!(cart["source"], "history");
    let shift: Vec<&Value> = cart["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "HpaShift")
        .collect();
    assert_eq!(shift.len(), 1, "{cart:#}");
    let h = shift[0];
    assert_eq!(h["hpa"], "cart-hpa");
    assert_eq!(h["resource"], "cpu");
    assert_eq!(h["targetUtilization"], 70);
    let before = 215.0 / 350.0 * 100.0;
    let after = 215.0 / 270.0 * 100.0;
    assert!((h["before"].as_f64().unwrap() - before).abs() < 1e-6, "{h}");
    assert!((h["after"].as_f64().unwrap() - after).abs() < 1e-6, "{h}");
    let msg = h["message"].as_str().unwrap();
    assert!(
        msg.starts_with("HpaShift") && msg.contains("ContainerResource") && msg.contains("app"),
        "{msg}"
    );

    let ledger = row(&doc, "shop", "ledger");
    assert_eq!(ledger["currentVaries"], false);
    assert_eq!(
        four(&ledger["sized"]),
        [s("100m"), s("128Mi"), s("2"), s("1Gi")]
    );
    assert!(
        ledger["findings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] != "HpaShift"),
        "{ledger:#}"
    );
    let notes = ledger["notes"].to_string();
    assert!(
        notes.contains("ledger-hpa") && notes.contains("no usage history"),
        "{notes}"
    );

    let bad = row(&doc, "shop", "bad");
    assert_eq!(four(&bad["current"]), [None, s("64Mi"), None, None]);
    assert!(bad["notes"].to_string().contains("\\\"abc\\\""), "{bad:#}");
    assert_eq!(
        four(&bad["sized"]),
        [s("100m"), s("128Mi"), s("2"), s("1Gi")]
    );

    let api = row(&doc, "billing", "api");
    assert_eq!(
        four(&api["current"]),
        [s("500m"), s("512Mi"), s("2"), s("1Gi")]
    );
    assert_eq!(
        four(&api["sized"]),
        [s("300m"), s("200Mi"), s("1"), s("200Mi")]
    );
    assert_eq!(api["source"], "spec");
    assert_eq!(api["notSized"], Value::Null);

    let debug = row(&doc, "billing", "debug");
    assert_eq!(four(&debug["current"]), [None, None, None, None]);
    assert_eq!(
        four(&debug["sized"]),
        [s("100m"), s("128Mi"), s("2"), s("1Gi")]
    );

    // Totals by hand.
    let ns: Vec<&Value> = doc["namespaces"].as_array().unwrap().iter().collect();
    assert_eq!(ns.len(), 2, "{:#}", doc["namespaces"]);
    assert_eq!(ns[0]["name"], "billing");
    assert_eq!(ns[0]["mode"], "enforce");
    assert_eq!(ns[0]["pods"], 2);
    assert_eq!(sums(&ns[0]["current"]), BILLING_CURRENT);
    assert_eq!(sums(&ns[0]["sized"]), BILLING_SIZED);
    assert_eq!(ns[1]["name"], "shop");
    assert_eq!(ns[1]["mode"], "off");
    assert_eq!(ns[1]["pods"], 6);
    assert_eq!(sums(&ns[1]["current"]), SHOP_CURRENT);
    assert_eq!(sums(&ns[1]["sized"]), SHOP_SIZED);
    assert_eq!(doc["totals"]["pods"], 8);
    assert_eq!(
        sums(&doc["totals"]["current"]),
        add(SHOP_CURRENT, BILLING_CURRENT)
    );
    assert_eq!(
        sums(&doc["totals"]["sized"]),
        add(SHOP_SIZED, BILLING_SIZED)
    );
    // 9 running or pending pods outside `locked`, one without the proxy.
    assert_eq!(doc["podsListed"], 9);
    assert_eq!(doc["podsWithoutProxy"], 1);

    // One pipeline: the webhook (serve --hpa-aware, same specs, history and HPAs) patches
    // each row's representative pod to the row's sized values, and warns HpaShift for cart.
    let server = TestServer::start(Opts {
        spec_dir: Some(f.specs()),
        history: Some(f.history()),
        hpa_aware: Some(KubeSource::Url(f.api.url.clone())),
        ..Opts::default()
    })
    .await;
    let objects = pods_by_name(&f.api).await;
    for (ns, rep) in [
        ("shop", "cart-aaa-2"),
        ("shop", "ledger-1"),
        ("shop", "bad-x"),
        ("billing", "api-ccc-1"),
        ("billing", "debug"),
    ] {
        let object = objects[rep].clone();
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut review = fixture("review-deployment-pod.json");
        review["request"]["object"] = object;
        review["request"]["namespace"] = json!(ns);
        review["request"]["name"] = json!(name);
        let (answer, patched) = mutate_and_apply(&server, &review).await;
        let a = &patched["metadata"]["annotations"];
        let got = [
            q(a, "sidecar.istio.io/proxyCPU"),
            q(a, "sidecar.istio.io/proxyMemory"),
            q(a, "sidecar.istio.io/proxyCPULimit"),
            q(a, "sidecar.istio.io/proxyMemoryLimit"),
        ];
        let wl = doc["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| {
                w["namespace"] == ns && {
                    let n = w["name"].as_str().unwrap();
                    rep.starts_with(n)
                }
            })
            .unwrap();
        assert_eq!(got, four(&wl["sized"]), "{rep}: {answer:#}");
        let warnings = answer["response"]["warnings"].to_string();
        assert_eq!(
            warnings.contains("HpaShift"),
            rep == "cart-aaa-2",
            "{rep}: {warnings}"
        );
        if rep == "cart-aaa-2" {
            // The same finding on the dry-run path, and counted.
            let (_, _, dry) = post(
                &server.client(false),
                &format!("{}/dry-run", server.base),
                serde_json::to_vec(&review).unwrap(),
            )
            .await;
            let dry = dry.unwrap();
            let w = dry["response"]["warnings"].to_string();
            assert!(w.contains("HpaShift: HPA cart-hpa cpu 61% -> 80%"), "{w}");
            assert!(patch_of(&dry).is_none());
        }
    }
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("sidecar_sizer_warnings_total{kind=\"HpaShift\"} 2"),
        "{metrics}"
    );
    server.stop().await;
}

/// The pods the double holds in shop and billing, by name (as the API serves them).
async fn pods_by_name(api: &KubeApi) -> std::collections::HashMap<String, Value> {
    let mut out = std::collections::HashMap::new();
    for ns in ["shop", "billing"] {
        let text = reqwest::get(format!("{}/api/v1/namespaces/{ns}/pods", api.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let body: Value = serde_json::from_str(&text).unwrap();
        for p in body["items"].as_array().unwrap() {
            out.insert(
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p.clone(),
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_reads_back_with_python_and_markdown_renders_one_table_row_per_workload() {
    let f = cluster().await;
    f.api.forbid(PODS, Some("locked"));
    f.api.forbid(PODS, None);
    let out_csv = f.dir.path().join("r.csv");
    let (code, _, err) = report(
        &f,
        &[
            "--format",
            "csv",
            "--output",
            &out_csv.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let script = r#"
import csv, json, sys
with open(sys.argv[1], newline="") as f:
    rows = list(csv.reader(f))
print(json.dumps(rows))
"#;
    let rows: Vec<Vec<String>> = serde_json::from_str(&python(script, &[&out_csv])).unwrap();
    assert_eq!(
        rows[0].join(","),
        "namespace,kind,name,mode,pods,current_cpu_request_m,current_memory_request_bytes,\
current_cpu_limit_m,current_memory_limit_bytes,sized_cpu_request_m,sized_memory_request_bytes,\
sized_cpu_limit_m,sized_memory_limit_bytes,source"
    );
    assert_eq!(
        rows.len(),
        1 + expected_rows().len(),
        "no totals row: {rows:?}"
    );
    let by = |name: &str| rows.iter().find(|r| r[2] == name).unwrap().clone();
    let mi = |n: u64| (n * MI).to_string();
    assert_eq!(
        by("cart")[3..],
        [
            "off".to_string(),
            "3".into(),
            "100".into(),
            mi(128),
            "2000".into(),
            GI.to_string(),
            "20".into(),
            mi(58),
            "1000".into(),
            mi(58),
            "history".into()
        ]
    );
    // An absent value is an empty cell.
    assert_eq!(
        by("bad")[5..9],
        ["".to_string(), mi(64), "".into(), "".into()]
    );
    assert_eq!(by("debug")[5..9], ["", "", "", ""]);

    // The default table: one line per workload after the header, then the totals.
    let (code, table, err) = report(&f, &[]).await;
    assert_eq!(code, 0, "{err}");
    let head: Vec<&str> = table.lines().take_while(|l| !l.is_empty()).collect();
    assert_eq!(head.len(), 1 + expected_rows().len(), "{table}");
    assert!(head[0].starts_with("NAMESPACE"), "{table}");
    assert!(
        table.contains("(cluster)") && table.contains("-340m"),
        "{table}"
    );
    let out_md = f.dir.path().join("r.md");
    let (code, _, err) = report(
        &f,
        &[
            "--format",
            "markdown",
            "--output",
            &out_md.display().to_string(),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let script = r#"
import json, sys, markdown
from html.parser import HTMLParser
html = markdown.markdown(open(sys.argv[1]).read(), extensions=["tables"])
class P(HTMLParser):
    def __init__(self):
        super().__init__(); self.tables = []; self.row = None; self.cell = None
    def handle_starttag(self, tag, attrs):
        if tag == "table": self.tables.append([])
        elif tag == "tr": self.row = []
        elif tag in ("td", "th"): self.cell = ""
    def handle_endtag(self, tag):
        if tag == "tr": self.tables[-1].append(self.row)
        elif tag in ("td", "th"): self.row.append(self.cell.strip()); self.cell = None
    def handle_data(self, d):
        if self.cell is not None: self.cell += d
p = P(); p.feed(html)
print(json.dumps(p.tables))
"#;
    let tables: Vec<Vec<Vec<String>>> = serde_json::from_str(&python(script, &[&out_md])).unwrap();
    // The workload table first: a header and one row per workload, 9 cells each.
    let w = &tables[0];
    assert_eq!(w[0][0], "Namespace");
    assert_eq!(w.len(), 1 + expected_rows().len(), "{w:?}");
    assert!(w.iter().all(|r| r.len() == 9), "{w:?}");
    let names: Vec<&str> = w[1..].iter().map(|r| r[2].as_str()).collect();
    assert_eq!(names, ["api", "debug", "cart", "bad", "ledger"]);
}

fn python(script: &str, args: &[&Path]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 (make test-deps installs Python-Markdown)");
    assert!(
        out.status.success(),
        "python3 failed (is Python-Markdown installed? `make test-deps`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_in_headless_chromium_one_row_per_workload_one_bar_pair_per_namespace() {
    let f = cluster().await;
    f.api.forbid(PODS, Some("locked"));
    f.api.forbid(PODS, None);
    let out = f.dir.path().join("r.html");
    let (code, _, err) = report(
        &f,
        &["--format", "html", "--output", &out.display().to_string()],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    // Self-contained: nothing is loaded from anywhere (the only URL is the SVG namespace).
    for needle in ["src=", "href=", "url(", "@import", "<link"] {
        assert!(!text.contains(needle), "{needle} in the HTML");
    }
    let out2 = out.clone();
    let dom = tokio::task::spawn_blocking(move || {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--dump-dom",
            ])
            .arg(format!("file://{}", out2.display()))
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| {
        panic!("cannot run Debian's chromium ({e}): `make test-deps` installs it (apt-get install chromium)")
    });
    assert!(
        dom.status.success(),
        "chromium --headless --dump-dom failed: {}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout).into_owned();
    // The workload table: one body row per workload.
    let tbody = between(&dom, "<table id=\"workloads\">", "</table>");
    let body = between(tbody, "<tbody>", "</tbody>");
    assert_eq!(
        body.matches("<tr>").count(),
        expected_rows().len(),
        "{body}"
    );
    // The chart: one bar pair per namespace with a row, heights in proportion to the
    // change of requests (hand numbers: cpu shop −240m, billing −100m; memory shop −274Mi,
    // billing −184Mi).
    let svg = between(&dom, "<svg id=\"chart\"", "</svg>");
    let groups: Vec<&str> = svg.split("<g class=\"ns\"").skip(1).collect();
    assert_eq!(groups.len(), 2, "{svg}");
    let height = |g: &str, class: &str| -> f64 {
        let rect = between(g, &format!("class=\"bar {class}\""), ">");
        let h = between(rect, "height=\"", "\"");
        h.parse().unwrap()
    };
    let (billing, shop) = (groups[0], groups[1]);
    assert!(billing.contains("data-ns=\"billing\"") && shop.contains("data-ns=\"shop\""));
    let cpu = (SHOP_SIZED[0] as f64 - SHOP_CURRENT[0] as f64).abs();
    let cpu_b = (BILLING_SIZED[0] as f64 - BILLING_CURRENT[0] as f64).abs();
    assert_eq!((cpu, cpu_b), (240.0, 100.0));
    let mem = (SHOP_SIZED[1] as f64 - SHOP_CURRENT[1] as f64).abs();
    let mem_b = (BILLING_SIZED[1] as f64 - BILLING_CURRENT[1] as f64).abs();
    assert_eq!((mem / MI as f64, mem_b / MI as f64), (274.0, 184.0));
    let ratio = |a: f64, b: f64| a / b;
    assert!(
        (ratio(height(billing, "cpu"), height(shop, "cpu")) - cpu_b / cpu).abs() < 1e-3,
        "{svg}"
    );
    assert!(
        (ratio(height(billing, "memory"), height(shop, "memory")) - mem_b / mem).abs() < 1e-3,
        "{svg}"
    );
    assert!(height(shop, "cpu") > 0.0);
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    let i = s
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found in {s}"))
        + start.len();
    let j = s[i..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not found after {start:?}"));
    &s[i..i + j]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_unreachable_apiserver_ends_with_exit_2_naming_it() {
    let f = cluster().await;
    f.api.fault(NAMESPACES, Verb::List, Fault::Status(500));
    let (code, _, err) = report(&f, &["--format", "json"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&f.api.url), "{err}");
    // A stalled apiserver: --kube-timeout ends it.
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    f.api
        .fault(NAMESPACES, Verb::List, Fault::Stall(release.clone()));
    let (code, _, err) = report(&f, &["--kube-timeout", "1s"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&f.api.url), "{err}");
    release.notify_one();
    // Nothing listens.
    let (code, _, err) = run(vec![
        "report".into(),
        "--kube-api-url".into(),
        "http://127.0.0.1:9".into(),
    ])
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
    // Bad flags and unreadable history: exit 1, before any listing.
    let (code, _, err) = report(&f, &["--format", "pdf"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = report(&f, &["--hpa-shift-threshold=-3"]).await;
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run(vec![
        "report".into(),
        "--kube-api-url".into(),
        f.api.url.clone(),
        "--history".into(),
        "/nonexistent/history.csv".into(),
    ])
    .await;
    assert_eq!(code, 1, "{err}");
}
