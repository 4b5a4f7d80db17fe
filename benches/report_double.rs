//! The cluster for the `report` scale benchmark (`make bench`, scripts/bench_report.py):
//! the tests' HTTP-level Kubernetes API double (tests/common/kube_api.rs) holding
//! 50,000 running pods in 5,000 Deployments over 50 namespaces, an HPA on every other
//! Deployment, and a history file for half the workloads. Prints `URL <url>` and
//! `HISTORY <file>`, then serves until stdin closes.
//!
//! cargo run --release --example report_double -- [PODS] [WORKLOADS]

#[path = "../tests/common/kube_api.rs"]
mod kube_api;

use serde_json::json;
use std::io::{BufRead as _, Write as _};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let pods: usize = args.get(1).map_or(Ok(50_000), |a| a.parse())?;
    let workloads: usize = args.get(2).map_or(Ok(5_000), |a| a.parse())?;
    let namespaces = 50usize.min(workloads.max(1));
    let rt = tokio::runtime::Runtime::new()?;
    let dir = tempfile::tempdir()?;
    let history = dir.path().join("history.csv");
    let api = rt.block_on(kube_api::KubeApi::start(&[
        ("pods", "Pod"),
        ("namespaces", "Namespace"),
        (
            "autoscaling/v2/horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
        ),
    ]));
    let mut csv = String::from(
        "namespace,workload,container,cpu_p95_cores,memory_max_bytes,samples,hours,avg_replicas,oom_kills\n",
    );
    for n in 0..namespaces {
        let labels = match n % 3 {
            0 => json!({"sidecar-sizer.io/mode": "enforce"}),
            1 => json!({"sidecar-sizer.io/mode": "dry-run"}),
            _ => json!({}),
        };
        api.apply_unwatched(
            "namespaces",
            json!({"metadata": {"name": format!("team-{n:02}"), "labels": labels}}),
        );
    }
    let per = pods / workloads.max(1);
    for w in 0..workloads {
        let ns = format!("team-{:02}", w % namespaces);
        let name = format!("svc-{w:05}");
        let hash = format!("{:08x}", w * 2654435761 % 0xffff_ffff);
        if w % 2 == 0 {
            api.apply_unwatched(
                "autoscaling/v2/horizontalpodautoscalers",
                json!({"metadata": {"name": name, "namespace": ns},
                       "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                                "maxReplicas": 20,
                                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                    "target": {"type": "Utilization", "averageUtilization": 70}}}]}}),
            );
            csv.push_str(&format!(
                "{ns},{name},istio-proxy,0.0{},{},4032,336,{per},0\n{ns},{name},app,0.{},{},4032,336,{per},0\n",
                1 + w % 9,
                (40 + w % 60) << 20,
                1 + w % 9,
                (200 + w % 300) << 20
            ));
        }
        for p in 0..per {
            let cpu = if p == 0 && w % 7 == 0 { "200m" } else { "100m" };
            api.apply_unwatched(
                "pods",
                json!({
                    "metadata": {"name": format!("{name}-{hash}-{p:05}"), "namespace": ns,
                        "uid": format!("{w}-{p}"),
                        "creationTimestamp": "2024-05-01T10:00:00Z",
                        "labels": {"app": name, "pod-template-hash": hash},
                        "annotations": {"kubectl.kubernetes.io/restartedAt": "2024-05-01T10:00:00Z"},
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                            "name": format!("{name}-{hash}"), "uid": format!("rs-{w}"), "controller": true}]},
                    "spec": {"containers": [
                        {"name": "app", "image": "example/app:1",
                         "ports": [{"containerPort": 8080}],
                         "resources": {"requests": {"cpu": "250m", "memory": "256Mi"},
                                       "limits": {"memory": "512Mi"}}},
                        {"name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22.0",
                         "args": ["proxy", "sidecar", "--domain", "$(POD_NAMESPACE).svc.cluster.local"],
                         "resources": {"requests": {"cpu": cpu, "memory": "128Mi"},
                                       "limits": {"cpu": "2", "memory": "1Gi"}}}],
                        "nodeName": format!("node-{}", w % 40)},
                    "status": {"phase": "Running", "podIP": "10.0.0.1"}
                }),
            );
        }
    }
    std::fs::write(&history, csv)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "URL {}", api.url)?;
    writeln!(out, "HISTORY {}", history.display())?;
    out.flush()?;
    drop(out);
    // Serve until stdin closes.
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        if line.is_err() {
            break;
        }
    }
    drop(rt);
    Ok(())
}
