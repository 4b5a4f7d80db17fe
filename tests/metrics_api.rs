//! `--metrics-api` against the HTTP-level Kubernetes API double (tests/common/kube_api.rs):
//! PodMetrics that change over time, pods with owners and an OOMKilled lastState, the
//! history Lease and the checkpoint ConfigMaps. Expectations are computed here from the
//! constructed data (a weighted-percentile by sorting, the max of the memory values), not
//! by the sizer's own code.

mod common;

use common::kube_api::{Fault, KubeApi, Verb};
use common::*;
use serde_json::{json, Value};
use sidecar_sizer::engine::learn::LearnConfig;
use sidecar_sizer::sources::kube::KubeSource;
use sidecar_sizer::sources::metrics_api::MetricsApiConfig;
use sidecar_sizer::webhook::wire::Settings;
use std::time::Duration;

const PODS: &str = "pods";
const NAMESPACES: &str = "namespaces";
const CM: &str = "configmaps";
const LEASES: &str = "coordination.k8s.io/v1/leases";
const METRICS: &str = "metrics.k8s.io/v1beta1/pods";
const MI: f64 = 1024.0 * 1024.0;
const HALF_LIFE: f64 = 86_400.0;

async fn double(with_oom: bool) -> KubeApi {
    let api = KubeApi::start(&[
        (PODS, "Pod"),
        (NAMESPACES, "Namespace"),
        (CM, "ConfigMap"),
        (LEASES, "Lease"),
        (METRICS, "PodMetrics"),
    ])
    .await;
    api.apply(
        NAMESPACES,
        json!({"metadata": {"name": "shop", "labels": {"sidecar-sizer.io/mode": "enforce"}}}),
    );
    api.apply(NAMESPACES, json!({"metadata": {"name": "other"}}));
    for (ns, name, oom) in [
        ("shop", "cart-7d9f8c6b5-aaaaa", false),
        ("shop", "cart-7d9f8c6b5-bbbbb", true),
        ("other", "cart-7d9f8c6b5-ccccc", false),
    ] {
        let mut status = json!({"phase": "Running", "containerStatuses": [
            {"name": "istio-proxy", "ready": true, "restartCount": 0, "image": "proxyv2", "imageID": ""},
            {"name": "master", "ready": true, "restartCount": 0, "image": "app", "imageID": ""}
        ]});
        if oom && with_oom {
            status["containerStatuses"][0]["restartCount"] = json!(1);
            status["containerStatuses"][0]["lastState"] = json!({"terminated": {
                "exitCode": 137, "reason": "OOMKilled",
                "finishedAt": rfc3339(now() - 3600)}});
        }
        api.apply(
            PODS,
            json!({"metadata": {"name": name, "namespace": ns,
                "labels": {"app": "cart", "pod-template-hash": "7d9f8c6b5"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "cart-7d9f8c6b5", "uid": "u1", "controller": true}]},
                "status": status}),
        );
    }
    api
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn rfc3339(t: i64) -> String {
    // Days-from-civil (Howard Hinnant), independent of the code under test.
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// The constructed usage of step k: (pod, proxy cores, proxy bytes, app cores).
fn usage_at(k: i64) -> [(&'static str, f64, f64, f64); 2] {
    [
        (
            "cart-7d9f8c6b5-aaaaa",
            0.010 * (k + 1) as f64,
            (60.0 + k as f64) * MI,
            0.5,
        ),
        (
            "cart-7d9f8c6b5-bbbbb",
            0.005,
            (40.0 + (k % 7) as f64) * MI,
            0.4,
        ),
    ]
}

/// Publish step k's PodMetrics (timestamps an hour apart, from `base`).
fn publish(api: &KubeApi, base: i64, k: i64) {
    let mut all: Vec<Value> = usage_at(k)
        .iter()
        .map(|(pod, cpu, mem, app)| metrics_of("shop", pod, base + k * 3600, *cpu, *mem, *app))
        .collect();
    // Not opted in: never learned.
    all.push(metrics_of(
        "other",
        "cart-7d9f8c6b5-ccccc",
        base + k * 3600,
        3.0,
        1e9,
        1.0,
    ));
    // One metrics-server scrape: all pods change at once.
    api.apply_all(METRICS, all);
}

fn metrics_of(ns: &str, pod: &str, at: i64, cpu: f64, mem: f64, app: f64) -> Value {
    json!({"metadata": {"name": pod, "namespace": ns},
    "timestamp": rfc3339(at), "window": "30s",
    "containers": [
        {"name": "istio-proxy", "usage": {"cpu": format!("{}n", (cpu * 1e9).round()),
                                           "memory": format!("{}Ki", (mem / 1024.0).round())}},
        {"name": "master", "usage": {"cpu": format!("{}m", (app * 1e3).round()), "memory": "100Mi"}}
    ]})
}

/// Exact sample-weighted P95 of the constructed proxy CPU over steps 0..n (weights
/// 2^(t / half-life)), by sorting.
fn exact_p95(n: i64) -> f64 {
    let mut v: Vec<(f64, f64)> = (0..n)
        .flat_map(|k| {
            let w = ((k * 3600) as f64 / HALF_LIFE).exp2();
            usage_at(k).map(|(_, c, _, _)| (c, w))
        })
        .collect();
    v.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total: f64 = v.iter().map(|e| e.1).sum();
    let mut cum = 0.0;
    for (c, w) in &v {
        cum += w;
        if cum >= 0.95 * total - 1e-9 {
            return *c;
        }
    }
    unreachable!()
}

fn max_mem(n: i64) -> f64 {
    (0..n)
        .flat_map(|k| usage_at(k).map(|u| (u.2 / 1024.0).round() * 1024.0))
        .fold(0.0, f64::max)
}

fn config(dir: &std::path::Path, name: &str) -> MetricsApiConfig {
    MetricsApiConfig {
        namespace: "sidecar-sizer".into(),
        identity: name.into(),
        interval: Duration::from_millis(100),
        checkpoint_interval: Duration::from_millis(100),
        lease_duration: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        learn: LearnConfig {
            half_life_seconds: HALF_LIFE,
            ..LearnConfig::default()
        },
        state_dir: Some(dir.join(name)),
    }
}

async fn sizer(api: &KubeApi, dir: &std::path::Path, name: &str) -> TestServer {
    let mut settings = Settings::default();
    settings.policy.min_history_samples = 40;
    TestServer::start(Opts {
        spec_dir: None,
        history: None,
        metrics_api: Some((KubeSource::Url(api.url.clone()), config(dir, name))),
        settings,
        ..Opts::default()
    })
    .await
}

/// The learned proxy usage of shop/cart as admissions see it.
fn proxy(server: &TestServer) -> Option<sidecar_sizer::engine::usage::ContainerUsage> {
    let usage = server.shared().usage.load();
    usage
        .get("shop", "cart")?
        .containers
        .get("istio-proxy")
        .cloned()
}

async fn wait_samples(server: &TestServer, want: u64) {
    for _ in 0..300 {
        if proxy(server).is_some_and(|p| p.samples >= want) {
            assert_eq!(
                proxy(server).unwrap().samples,
                want,
                "more samples than published"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never {want} samples: {:?}", proxy(server));
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..300 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never: {what}");
}

fn holder(api: &KubeApi) -> Option<String> {
    api.get(LEASES, "sidecar-sizer", "sidecar-sizer-history")
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_string))
}

/// (proxyCPU, proxyMemory) the sizer patches into the fixture pod.
async fn proxy_size(server: &TestServer) -> (String, String) {
    let (_, pod) = mutate_and_apply(server, &fixture("review-deployment-pod.json")).await;
    let a = &pod["metadata"]["annotations"];
    (
        a["sidecar.istio.io/proxyCPU"]
            .as_str()
            .unwrap_or("")
            .to_string(),
        a["sidecar.istio.io/proxyMemory"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

/// The value of a counter line in a metrics exposition (0 when absent).
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn millis(cpu: &str) -> f64 {
    match cpu.strip_suffix('m') {
        Some(m) => m.parse().unwrap(),
        None => cpu.parse::<f64>().unwrap() * 1000.0,
    }
}

fn mebibytes(mem: &str) -> f64 {
    match mem.strip_suffix("Gi") {
        Some(g) => g.parse::<f64>().unwrap() * 1024.0,
        None => mem.strip_suffix("Mi").unwrap().parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_checkpoints_and_hands_over_without_losing_samples() {
    let api = double(true).await;
    let dir = tempfile::tempdir().unwrap();
    let base = now() - 3 * 86_400;
    let a = sizer(&api, dir.path(), "sizer-a").await;
    wait_until("sizer-a leads", || {
        holder(&api).as_deref() == Some("sizer-a")
    })
    .await;
    let n = 30;
    for k in 0..n {
        publish(&api, base, k);
        wait_samples(&a, 2 * (k as u64 + 1)).await;
    }
    let p = proxy(&a).unwrap();
    let exact = exact_p95(n);
    assert!(
        p.cpu_p95_cores >= exact - 1e-12 && p.cpu_p95_cores <= exact * 1.05 + 1e-9,
        "p95 {} vs exact {exact}",
        p.cpu_p95_cores
    );
    assert_eq!(p.memory_max_bytes as f64, max_mem(n));
    assert_eq!(p.hours, (n - 1) as f64);
    assert_eq!(p.oom_kills, 1);
    let usage = a.shared().usage.load();
    let cart = usage.get("shop", "cart").unwrap();
    assert_eq!(cart.avg_replicas, Some(2.0));
    assert_eq!(cart.source.as_deref(), Some("metrics-api"));
    let app = cart.containers["master"].cpu_p95_cores;
    assert!((0.5..=0.525).contains(&app), "{app}");
    assert_eq!(usage.len(), 1, "namespace other is not opted in");

    // Admission sizes from it: P95 ÷ 0.75 rounded up to 5m; OOM → max(peak + 100Mi, peak × 1.2).
    let (cpu, mem) = proxy_size(&a).await;
    let lo = (exact * 1000.0 / 0.75 / 5.0).ceil() * 5.0;
    let hi = (exact * 1.05 * 1000.0 / 0.75 / 5.0).ceil() * 5.0;
    assert!(
        (lo..=hi).contains(&millis(&cpu)),
        "{cpu} not in [{lo}, {hi}]"
    );
    let peak = max_mem(n);
    let want_mem = ((peak + 100.0 * MI).max(peak * 1.2) / MI).ceil();
    assert_eq!(mebibytes(&mem), want_mem, "{mem}");

    // Checkpoints are in the cluster; a second replica loads them before ready and
    // answers the same, without leading.
    wait_until("checkpoint written", || {
        api.objects(CM).iter().any(|c| {
            c["data"]["checkpoint.json"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("\"n\":{}", 2 * n)))
        })
    })
    .await;
    let b = sizer(&api, dir.path(), "sizer-b").await;
    assert_eq!(proxy(&b), proxy(&a));
    assert_eq!(proxy_size(&b).await, (cpu.clone(), mem.clone()));
    assert_eq!(holder(&api).as_deref(), Some("sizer-a"));

    // Hand-over: a stops (last checkpoint, Lease released); b takes over and continues
    // from the same history: after m more steps it holds every sample.
    a.stop().await;
    wait_until("sizer-b leads", || {
        holder(&api).as_deref() == Some("sizer-b")
    })
    .await;
    let m = 5;
    for k in n..n + m {
        publish(&api, base, k);
        wait_samples(&b, 2 * (k as u64 + 1)).await;
    }
    let lease = api
        .get(LEASES, "sidecar-sizer", "sidecar-sizer-history")
        .unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    let metrics = b.metrics().await;
    assert!(
        metrics.contains("sidecar_sizer_history_leader 1"),
        "{metrics}"
    );

    // A restart of every replica: c starts from the checkpoints alone (no state dir copy
    // of its own) and gives the same answer as b.
    let size_b = proxy_size(&b).await;
    wait_until("b's checkpoint written", || {
        api.objects(CM).iter().any(|c| {
            c["data"]["checkpoint.json"]
                .as_str()
                .is_some_and(|t| t.contains(&format!("\"n\":{}", 2 * (n + m))))
        })
    })
    .await;
    b.stop().await;
    let c = sizer(&api, dir.path(), "sizer-c").await;
    assert_eq!(proxy(&c).unwrap().samples, 2 * (n + m) as u64);
    assert_eq!(proxy_size(&c).await, size_b);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_api_and_checkpoint_faults_keep_the_history() {
    // No OOM kill: the first data is the first sample.
    let api = double(false).await;
    // A corrupt and a future-version checkpoint: reported, ignored, not overwritten
    // before there is data.
    for (name, text) in [
        ("sidecar-sizer-usage-7", "{not json".to_string()),
        (
            "sidecar-sizer-usage-8",
            json!({"format": "sidecar-sizer-usage-checkpoint", "version": 99}).to_string(),
        ),
    ] {
        api.apply(
            CM,
            json!({"metadata": {"name": name, "namespace": "sidecar-sizer",
                "labels": {"sidecar-sizer.io/usage-checkpoint": "true"}},
                "data": {"checkpoint.json": text}}),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let base = now() - 3 * 86_400;
    let a = sizer(&api, dir.path(), "sizer-a").await;
    let m = a.metrics().await;
    assert!(
        m.contains("sidecar_sizer_checkpoint_errors_total{reason=\"corrupt\"} 1")
            && m.contains("sidecar_sizer_checkpoint_errors_total{reason=\"future_version\"} 1"),
        "{m}"
    );
    wait_until("sizer-a leads", || {
        holder(&api).as_deref() == Some("sizer-a")
    })
    .await;
    // No data yet: nothing written over them.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        api.get(CM, "sidecar-sizer", "sidecar-sizer-usage-7")
            .unwrap()["data"]["checkpoint.json"],
        "{not json"
    );
    for k in 0..3 {
        publish(&api, base, k);
        wait_samples(&a, 2 * (k as u64 + 1)).await;
    }
    let before = proxy(&a).unwrap();
    let size = proxy_size(&a).await;

    // Every way a round can fail: each drops the round, counts it, keeps the history.
    let stall = std::sync::Arc::new(tokio::sync::Notify::new());
    // A 503 (metrics-server down behind its APIService) is retried by kube's client with
    // backoff until the round's timeout.
    let faults = [
        (Fault::Status(404), 1, "absent"),
        (Fault::Status(503), 40, "timeout"),
        (Fault::Body("<html>oops</html>".into()), 1, "garbage"),
        (Fault::Stall(stall.clone()), 1, "timeout"),
    ];
    publish(&api, base, 3);
    for (fault, times, reason) in faults {
        let name = format!("sidecar_sizer_metrics_api_rounds_total{{reason=\"{reason}\"}}");
        let before = counter(&a.metrics().await, &name);
        for _ in 0..times {
            api.fault(METRICS, Verb::List, fault.clone());
        }
        for _ in 0..200 {
            if counter(&a.metrics().await, &name) > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let m = a.metrics().await;
        assert!(counter(&m, &name) > before, "{name}: {m}");
        api.clear_faults();
    }
    stall.notify_waiters();
    // Garbage values: negative, NaN-like, a missing pod, a pod unknown to the reflector.
    wait_samples(&a, 8).await;
    let after_faults = proxy(&a).unwrap();
    assert_eq!(after_faults.samples, 8);
    api.apply(
        METRICS,
        json!({"metadata": {"name": "cart-7d9f8c6b5-aaaaa", "namespace": "shop"},
            "timestamp": rfc3339(base + 4 * 3600), "window": "30s",
            "containers": [{"name": "istio-proxy", "usage": {"cpu": "-5m", "memory": "NaN"}}]}),
    );
    api.delete(METRICS, "shop", "cart-7d9f8c6b5-bbbbb");
    api.apply(
        METRICS,
        metrics_of(
            "shop",
            "ghost-7d9f8c6b5-zzzzz",
            base + 4 * 3600,
            9.0,
            9e9,
            1.0,
        ),
    );
    let want = [
        "sidecar_sizer_metrics_api_samples_total{reason=\"invalid\"}",
        "sidecar_sizer_metrics_api_samples_total{reason=\"missing\"}",
        "sidecar_sizer_metrics_api_samples_total{reason=\"unknown_pod\"}",
    ];
    for _ in 0..200 {
        let m = a.metrics().await;
        if want.iter().all(|w| m.contains(w)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let m = a.metrics().await;
    for w in want {
        assert!(m.contains(w), "{w}: {m}");
    }
    assert_eq!(proxy(&a).unwrap(), after_faults);
    assert!(before.samples < after_faults.samples);

    // Checkpoint writes failing: history stays in memory, counted, retried later.
    api.fault(CM, Verb::Replace, Fault::Status(500));
    api.fault(CM, Verb::Replace, Fault::Status(500));
    publish(&api, base, 5);
    wait_samples(&a, 10).await;
    for _ in 0..200 {
        if a.metrics()
            .await
            .contains("sidecar_sizer_checkpoint_writes_total{reason=\"error\"}")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a
        .metrics()
        .await
        .contains("sidecar_sizer_checkpoint_writes_total{reason=\"error\"}"));
    assert_eq!(proxy(&a).unwrap().samples, 10);
    // Admission was never affected: the same answer as before the faults (not confident
    // either way, so Istio's defaults), and every review answered.
    assert_eq!(proxy_size(&a).await, size);
    // Once there is data the corrupt shards are overwritten with valid (empty) ones.
    wait_until("corrupt shard replaced", || {
        api.get(CM, "sidecar-sizer", "sidecar-sizer-usage-7")
            .is_some_and(|c| c["data"]["checkpoint.json"] != "{not json")
    })
    .await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_never_has_two_holders() {
    use k8s_openapi::api::coordination::v1::Lease;
    use sidecar_sizer::sources::checkpoints::Elector;
    let api = KubeApi::start(&[(LEASES, "Lease")]).await;
    let client = sidecar_sizer::sources::kube::client(&KubeSource::Url(api.url.clone()))
        .await
        .unwrap();
    let lease_api = || kube::Api::<Lease>::namespaced(client.clone(), "ns");
    let d = Duration::from_secs(1);
    let mut x = Elector::new(lease_api(), "l", "x", d);
    let mut y = Elector::new(lease_api(), "l", "y", d);
    let mut z = Elector::new(lease_api(), "l", "z", d);
    // Three race for a fresh Lease: exactly one wins (create, then 409 for the others).
    let (a, b, c) = tokio::join!(x.step(), y.step(), z.step());
    assert_eq!([a, b, c].iter().filter(|v| **v).count(), 1);
    let first = api.get(LEASES, "ns", "l").unwrap()["spec"]["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut leader, mut others) = match first.as_str() {
        "x" => (x, vec![y, z]),
        "y" => (y, vec![x, z]),
        _ => (z, vec![x, y]),
    };
    // While the leader renews, nobody else leads.
    let mut last_renewal = tokio::time::Instant::now();
    for _ in 0..6 {
        last_renewal = tokio::time::Instant::now();
        assert!(leader.step().await);
        for o in &mut others {
            assert!(!o.step().await);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The leader stops renewing (a hard stop): its own view ends before anyone else's
    // begins, and exactly one of the others takes over after the lease duration.
    let mut winner = None;
    while winner.is_none() {
        let results: Vec<bool> =
            futures::future::join_all(others.iter_mut().map(|o| o.step())).await;
        let leading: Vec<usize> = (0..results.len()).filter(|i| results[*i]).collect();
        assert!(leading.len() <= 1, "two new leaders");
        if let Some(i) = leading.first() {
            assert!(!leader.is_leader(), "old leader still counts itself leader");
            assert!(
                last_renewal.elapsed() >= d,
                "taken over before the lease expired"
            );
            winner = Some(*i);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(last_renewal.elapsed() < Duration::from_secs(10));
    }
    let lease = api.get(LEASES, "ns", "l").unwrap();
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // The old leader comes back: it sees another holder and follows.
    assert!(!leader.step().await);
    assert!(!leader.is_leader());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_wins_where_it_has_data_and_decisions_say_which() {
    use sidecar_sizer::engine::sizing::{decide, Inputs, Policy};
    use sidecar_sizer::engine::usage::{ContainerUsage, UsageSnapshot, WorkloadUsage};
    use std::sync::Arc;
    let usage = |cpu: f64, source: Option<&str>| {
        let mut w = WorkloadUsage {
            avg_replicas: Some(1.0),
            source: source.map(str::to_string),
            ..WorkloadUsage::default()
        };
        w.containers.insert(
            "istio-proxy".into(),
            ContainerUsage {
                cpu_p95_cores: cpu,
                memory_max_bytes: 64 << 20,
                samples: 1000,
                hours: 48.0,
                oom_kills: 0,
            },
        );
        w
    };
    let server = TestServer::start(Opts {
        spec_dir: None,
        history: None,
        ..Opts::default()
    })
    .await;
    let fresh = now() as u64;
    let mut prom = UsageSnapshot::default();
    prom.insert("shop", "cart", usage(0.3, None));
    prom.meta.source = "prometheus http://p:9090".into();
    prom.meta.fetched_at = Some(fresh);
    let mut api = UsageSnapshot::default();
    api.insert("shop", "cart", usage(0.9, Some("metrics-api")));
    api.insert("shop", "search", usage(0.15, Some("metrics-api")));
    api.meta.source = "metrics-api".into();
    api.meta.fetched_at = Some(fresh);
    let shared = server.shared();
    shared.learned.store(Arc::new(prom));
    shared.metrics_usage.store(Arc::new(api));
    shared.recombine(true);
    let combined = shared.usage.load();
    let cart = combined.get("shop", "cart").unwrap();
    assert_eq!(cart.containers["istio-proxy"].cpu_p95_cores, 0.3);
    assert_eq!(cart.source.as_deref(), Some("prometheus"));
    let search = combined.get("shop", "search").unwrap();
    assert_eq!(search.source.as_deref(), Some("metrics-api"));
    assert_eq!(
        combined.meta.source,
        "metrics-api + prometheus http://p:9090"
    );
    // The decision's reasons name the source: 300m ÷ 0.75 = 400m; 150m ÷ 0.75 = 200m.
    for (w, want) in [
        (
            cart,
            "cpu: history (prometheus) p95 300m over 2d ÷ 0.75 → 400m",
        ),
        (
            search,
            "cpu: history (metrics-api) p95 150m over 2d ÷ 0.75 → 200m",
        ),
    ] {
        let d = decide(
            &Inputs {
                usage: Some(w),
                ..Inputs::default()
            },
            &Policy::default(),
        );
        assert_eq!(d.source.cpu.as_str(), "history");
        assert!(d.reasons.iter().any(|r| r == want), "{:?}", d.reasons);
    }
    server.stop().await;
}
