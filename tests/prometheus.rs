//! Usage history learned from a real Prometheus (Debian's package), backfilled with 14 days
//! of synthetic cAdvisor / kube-state-metrics data whose P95s and peaks are known by
//! construction; then the sizing decisions it leads to, and a restart with Prometheus gone.
//!
//! Tolerance: CPU P95 within 3 % of the constructed value (the `rate()` window smooths
//! adjacent steps); memory peaks, OOM kills and replica counts exact (replicas within 2 %).

mod common;

use common::prom::{openmetrics, Container, Pod, Prometheus, MI, STEP};
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::sources::history::now_unix;
use sidecar_sizer::sources::history::prometheus::{self, PromConfig};
use std::time::Duration;

const DAY: u64 = 86400 / STEP; // steps per day

// Constructed usage: a saw-tooth over 100 steps, so P95 = base + 0.95 × span.
fn proxy_cpu(k: u64) -> f64 {
    0.1 + 0.1 * (k % 100) as f64 / 100.0
}
fn app_cpu(k: u64) -> f64 {
    0.4 + 0.4 * (k % 100) as f64 / 100.0
}
fn small_cpu(k: u64) -> f64 {
    0.02 + 0.02 * (k % 100) as f64 / 100.0
}
fn proxy_mem(k: u64) -> f64 {
    50.0 * MI + (k % 100) as f64 * 0.3 * MI // max 79.7Mi
}
fn app_mem(k: u64) -> f64 {
    400.0 * MI + (k % 100) as f64 * MI // max 499Mi
}
fn batch_mem(k: u64) -> f64 {
    150.0 * MI + (k % 100) as f64 * 0.5 * MI // max 199.5Mi
}
fn flat_mem(_: u64) -> f64 {
    40.0 * MI
}

const CART_P95: f64 = 0.1 + 0.1 * 0.95;
const SMALL_P95: f64 = 0.02 + 0.02 * 0.95;

fn proxy_and_app() -> Vec<Container> {
    vec![
        Container {
            name: "istio-proxy",
            cpu: proxy_cpu,
            mem: proxy_mem,
        },
        Container {
            name: "master",
            cpu: app_cpu,
            mem: app_mem,
        },
    ]
}

/// The cluster we pretend to have observed for 14 days.
fn scenario(last: u64) -> Vec<Pod> {
    let mut pods = Vec::new();
    // shop/cart: a Deployment rolled out 4 times, 3 pods per ReplicaSet (pod churn).
    let hashes = ["7d9f8c6b5x", "5c8d7f9b64", "6b7c8d9f2z", "58f9b7c6d4"];
    let span = 14 * DAY / 4;
    for (g, hash) in hashes.iter().enumerate() {
        for (i, suffix) in ["x2x7k", "b9xkz", "q4wzp"].iter().enumerate() {
            let _ = i;
            pods.push(Pod {
                namespace: "shop",
                name: format!("cart-{hash}-{suffix}"),
                from: g as u64 * span,
                to: (g as u64 + 1) * span - 1,
                containers: proxy_and_app(),
                oom_from: None,
            });
        }
    }
    // shop/db: a StatefulSet with two pods the whole time.
    for ord in 0..2 {
        pods.push(Pod {
            namespace: "shop",
            name: format!("db-{ord}"),
            from: 0,
            to: last,
            containers: vec![Container {
                name: "istio-proxy",
                cpu: small_cpu,
                mem: flat_mem,
            }],
            oom_from: None,
        });
    }
    // shop/batch: one pod whose proxy was OOM-killed on day 7.
    pods.push(Pod {
        namespace: "shop",
        name: "batch-7d9f8c6b5x-zq2wd".into(),
        from: 0,
        to: last,
        containers: vec![Container {
            name: "istio-proxy",
            cpu: small_cpu,
            mem: batch_mem,
        }],
        oom_from: Some(7 * DAY),
    });
    // shop/fresh: deployed 12 hours ago.
    pods.push(Pod {
        namespace: "shop",
        name: "fresh-7d9f8c6b5x-kd8wz".into(),
        from: last - DAY / 2,
        to: last,
        containers: vec![Container {
            name: "istio-proxy",
            cpu: proxy_cpu,
            mem: proxy_mem,
        }],
        oom_from: None,
    });
    // infra/agent: a DaemonSet on two nodes.
    for suffix in ["x7k2p", "m4vz9"] {
        pods.push(Pod {
            namespace: "infra",
            name: format!("agent-{suffix}"),
            from: 0,
            to: last,
            containers: vec![Container {
                name: "istio-proxy",
                cpu: small_cpu,
                mem: flat_mem,
            }],
            oom_from: None,
        });
    }
    pods
}

fn within(got: f64, want: f64, tol: f64) -> bool {
    (got - want).abs() <= want * tol
}

/// A review of a pod of Deployment `namespace/name`, built from the captured fixture.
fn review_for(namespace: &str, name: &str, uid: &str) -> Value {
    let mut r = fixture("review-deployment-pod.json");
    r["request"]["uid"] = json!(uid);
    r["request"]["namespace"] = json!(namespace);
    let o = &mut r["request"]["object"];
    o["metadata"]["namespace"] = json!(namespace);
    o["metadata"]["ownerReferences"][0]["name"] = json!(format!("{name}-7d9f8c6b5"));
    o["metadata"]["labels"]["app"] = json!(name);
    r
}

async fn decisions(server: &TestServer) -> Vec<(String, Value, String)> {
    let client = server.client(false);
    let mut out = Vec::new();
    for (i, wl) in ["cart", "db", "batch", "fresh"].iter().enumerate() {
        let review = review_for("shop", wl, &format!("uid-{i}"));
        let (status, _, body) = post(
            &client,
            &format!("{}/mutate", server.base),
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        let body = body.unwrap();
        let pod = apply(
            &review["request"]["object"],
            &patch_of(&body).expect("patch"),
        );
        let decision: Value = serde_json::from_str(
            pod["metadata"]["annotations"]["sidecar-sizer.io/decision"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        out.push((
            wl.to_string(),
            decision,
            body["response"]["patch"].as_str().unwrap().to_string(),
        ));
    }
    out
}

fn millis(q: &Value) -> f64 {
    let s = q.as_str().unwrap();
    s.strip_suffix('m').map_or_else(
        || s.parse::<f64>().unwrap() * 1000.0,
        |m| m.parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_from_real_prometheus_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let end = (now_unix() - 120) / STEP * STEP;
    let last = 14 * DAY - 1;
    let start = end - last * STEP;
    let mut prom = Prometheus::start(dir.path(), &openmetrics(start, &scenario(last)));

    let mut cfg = PromConfig::new(&prom.url);
    // Synthetic scrapes every 5m: rate() needs two samples, so a 10m range.
    cfg.rate_window = Duration::from_secs(600);
    cfg.timeout = Duration::from_secs(20);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = prometheus::client(&cfg).unwrap();
    let fetched = prometheus::fetch(&client, &cfg, now_unix()).await.unwrap();
    assert_eq!(fetched.queries, 8, "bounded, independent of workloads");
    let snap = &fetched.snapshot;

    let cart = snap
        .get("shop", "cart")
        .expect("cart mapped from ReplicaSet pod names");
    let p = &cart.containers["istio-proxy"];
    assert!(
        within(p.cpu_p95_cores, CART_P95, 0.03),
        "cart proxy p95 {}",
        p.cpu_p95_cores
    );
    assert!(within(
        cart.containers["master"].cpu_p95_cores,
        0.4 + 0.4 * 0.95,
        0.03
    ));
    assert_eq!(p.memory_max_bytes, (79.7 * MI).ceil() as u64);
    assert_eq!(
        cart.containers["master"].memory_max_bytes,
        (499.0 * MI) as u64
    );
    assert!(p.hours > 335.0 && p.hours <= 336.0, "hours {}", p.hours);
    assert!(p.samples > 12 * 1000, "samples {}", p.samples);
    let r = cart.avg_replicas.unwrap();
    assert!(within(r, 3.0, 0.02), "cart replicas {r}");
    assert_eq!(p.oom_kills, 0);

    let db = snap.get("shop", "db").expect("StatefulSet ordinals mapped");
    assert!(within(db.avg_replicas.unwrap(), 2.0, 0.02));
    assert!(within(
        db.containers["istio-proxy"].cpu_p95_cores,
        SMALL_P95,
        0.03
    ));
    let batch = &snap.get("shop", "batch").unwrap().containers["istio-proxy"];
    assert_eq!(batch.oom_kills, 1);
    assert_eq!(batch.memory_max_bytes, (199.5 * MI) as u64);
    let fresh = &snap.get("shop", "fresh").unwrap().containers["istio-proxy"];
    assert!(
        fresh.hours < 24.0 && fresh.hours > 11.0,
        "fresh hours {}",
        fresh.hours
    );
    assert!(
        snap.get("infra", "agent").is_some(),
        "DaemonSet pods mapped"
    );
    assert_eq!(snap.len(), 5);

    // The webhook, learning in the background and persisting to its state dir.
    let state = tempfile::tempdir().unwrap();
    let specs = tempfile::tempdir().unwrap();
    // cart's team plans 6 replicas; history saw 3 → half the CPU per pod.
    write(&specs.path().join("shop/cart.yaml"), "deployment:\n  istio:\n    resources: {cpu: 500m, memory: 80Mi}\n  container:\n    replicas: 6\n");
    let opts = || Opts {
        spec_dir: Some(specs.path().to_path_buf()),
        history: None,
        state_dir: Some(state.path().to_path_buf()),
        prometheus: Some(cfg.clone()),
        prometheus_refresh: Duration::from_millis(300),
        ..Opts::default()
    };
    let server = TestServer::start(opts()).await;
    let shared = server.running.as_ref().unwrap().shared.clone();
    for _ in 0..200 {
        if shared.usage.load().len() == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shared.usage.load().len(),
        5,
        "background refresh did not land"
    );
    let first = decisions(&server).await;
    let by = |wl: &str| first.iter().find(|d| d.0 == wl).unwrap().1.clone();

    let cart = by("cart");
    assert_eq!(cart["source"], "history");
    // P95 0.195 ÷ 0.75 = 260m × 3/6 = 130m (± tolerance, rounded to 5m)
    assert!(
        within(millis(&cart["cpu"]), 130.0, 0.05),
        "cart cpu {}",
        cart["cpu"]
    );
    assert_eq!(cart["memory"], "92Mi"); // 79.7Mi × 1.15 = 91.7 → 92Mi
    assert_eq!(cart["cpuLimit"], "1");
    let db = by("db");
    assert_eq!(db["source"], "history");
    assert!(
        within(millis(&db["cpu"]), 55.0, 0.1),
        "db cpu {}",
        db["cpu"]
    ); // 39m ÷ 0.75 = 52 → 55m
    assert_eq!(db["memory"], "46Mi"); // 40Mi × 1.15 = 46Mi
    let batch = by("batch");
    assert_eq!(
        batch["memory"], "300Mi",
        "OOM: max(199.5Mi + 100Mi, ×1.2) → 300Mi"
    );
    assert_eq!(
        by("fresh")["source"],
        "default",
        "12h of history is not confident"
    );

    // The CLI sees the same store.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
        .args([
            "history",
            "show",
            "--format",
            "json",
            "--namespace",
            "shop",
            "--workload",
            "cart",
            "--state-dir",
        ])
        .arg(state.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["workloads"].as_array().unwrap().len(), 1);
    assert!(shown["source"]
        .as_str()
        .unwrap()
        .starts_with("prometheus http://127.0.0.1:"));
    // One-shot import into another store.
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
        .args([
            "history",
            "import",
            "--prometheus-rate-window",
            "10m",
            "--from-prometheus",
            &prom.url,
            "--state-dir",
        ])
        .arg(other.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 5 workload(s)"));
    server.stop().await;

    // Restart with Prometheus gone: the store makes the restart warm, same decisions.
    prom.stop();
    let server = TestServer::start(opts()).await;
    let shared = server.running.as_ref().unwrap().shared.clone();
    assert_eq!(
        shared.usage.load().len(),
        5,
        "warm from the store before serving"
    );
    // Let a refresh against the dead Prometheus fail.
    let metrics_url = format!("{}/metrics", server.health);
    let mut failed = false;
    for _ in 0..100 {
        let m = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if m.contains("sidecar_sizer_history_refreshes_total{kind=\"unreachable\"}") {
            failed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        failed,
        "refresh against a dead Prometheus should be counted"
    );
    let second = decisions(&server).await;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.2, b.2, "{}: same patch bytes after restart", a.0);
    }
    server.stop().await;
}
