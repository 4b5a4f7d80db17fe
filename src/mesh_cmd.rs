//! `sidecar-sizer mesh show` and `mesh suggest` (issue 14).

use crate::cli::{MeshShowArgs, MeshSuggestArgs, ShowFormat};
use crate::engine::mesh::{self, MemoryModel, MeshService, MeshSnapshot, SidecarConfig};
use crate::engine::sizing::Policy;
use crate::engine::usage::UsageSnapshot;
use crate::engine::workload;
use crate::sources::history::{self, store};
use crate::sources::kube::{self as kube_src, KubeSource};
use crate::sources::mesh as mesh_src;
use anyhow::{anyhow, Context};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::Api;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

fn kube_source(url: &Option<String>) -> KubeSource {
    url.clone().map_or(KubeSource::Default, KubeSource::Url)
}

/// The history `serve` would read, for calibration (none given: empty).
fn load_usage(
    history: Option<&std::path::Path>,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<UsageSnapshot> {
    let mut snap = UsageSnapshot::default();
    if let Some(file) = history {
        let (s, errors) = history::load_history_file(file).map_err(|e| anyhow!(e))?;
        for e in &errors {
            eprintln!("{}: {e}", file.display());
        }
        snap = s;
    }
    if let Some(dir) = state_dir {
        if let Some(s) = store::load(dir).map_err(|e| anyhow!(e))? {
            snap = snap.overlaid(&s);
        }
    }
    Ok(snap)
}

/// One workload row of `mesh show`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub namespace: String,
    pub workload: String,
    pub sidecar: Option<String>,
    pub visible: usize,
    pub expected: crate::engine::quantity::Memory,
}

fn calibration_json(m: &MemoryModel) -> Value {
    let c = &m.calibration;
    json!({
        "calibrated": c.calibrated,
        "workloads": c.workloads,
        "rSquared": c.r_squared,
        "medianRelativeError": c.median_relative_error,
        "baseBytes": m.base_bytes.round() as u64,
        "perServiceBytes": m.per_service_bytes.round() as u64,
        "model": m.describe(),
        "note": c.note,
    })
}

/// Render `mesh show`.
pub fn render_show(format: ShowFormat, model: &MemoryModel, rows: &[Row]) -> String {
    match format {
        ShowFormat::Json => {
            let workloads: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({"namespace": r.namespace, "workload": r.workload, "sidecar": r.sidecar,
                           "visibleServices": r.visible, "expectedMemory": r.expected.to_string()})
                })
                .collect();
            let doc = json!({"calibration": calibration_json(model), "workloads": workloads});
            format!(
                "{}\n",
                serde_json::to_string_pretty(&doc).unwrap_or_default()
            )
        }
        ShowFormat::Table => {
            let mut out = String::new();
            let _ = writeln!(
                out,
                "model: {} ({})",
                model.describe(),
                model.calibration.note
            );
            let head = ["NAMESPACE", "WORKLOAD", "SIDECAR", "VISIBLE", "EXPECTED"];
            let cells: Vec<[String; 5]> = rows
                .iter()
                .map(|r| {
                    [
                        r.namespace.clone(),
                        r.workload.clone(),
                        r.sidecar.clone().unwrap_or_else(|| "-".into()),
                        r.visible.to_string(),
                        r.expected.to_string(),
                    ]
                })
                .collect();
            let mut w = head.map(str::len);
            for c in &cells {
                for (i, v) in c.iter().enumerate() {
                    w[i] = w[i].max(v.chars().count());
                }
            }
            let line = |c: [&str; 5]| {
                format!(
                    "{:<a$}  {:<b$}  {:<c$}  {:>d$}  {:>e$}\n",
                    c[0],
                    c[1],
                    c[2],
                    c[3],
                    c[4],
                    a = w[0],
                    b = w[1],
                    c = w[2],
                    d = w[3],
                    e = w[4]
                )
            };
            out.push_str(&line(head));
            for c in &cells {
                out.push_str(&line([&c[0], &c[1], &c[2], &c[3], &c[4]]));
            }
            out
        }
    }
}

async fn mesh_state(
    client: &kube::Client,
    cfg: &mesh_src::MeshConfig,
    usage: &UsageSnapshot,
) -> anyhow::Result<(Vec<MeshService>, MeshSnapshot)> {
    let (services, sidecars, crds) = mesh_src::list_once(client)
        .await
        .context("listing services, serviceentries and sidecars")?;
    if !crds {
        eprintln!("Istio's Sidecar CRD is not served: every proxy is taken to see all Services");
    }
    let mut snap = MeshSnapshot::build(
        &services,
        &sidecars,
        &cfg.root_namespace,
        crds,
        cfg.default_model(),
    );
    mesh_src::calibrate_into(&mut snap, cfg, usage, &Policy::default());
    Ok((services, snap))
}

pub async fn show(args: &MeshShowArgs) -> anyhow::Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = kube_source(&args.kube_api_url);
    let cfg = args.model.to_config(source.clone());
    let usage = load_usage(args.history.as_deref(), args.state_dir.as_deref())?;
    let client = kube_src::client(&source)
        .await
        .context("cannot build a Kubernetes client")?;
    let (_, snap) = mesh_state(&client, &cfg, &usage).await?;
    let pods = Api::<Pod>::all(client)
        .list(&ListParams::default())
        .await
        .context("listing pods")?;
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for pod in &pods.items {
        let Ok(w) = workload::identify(pod, None) else {
            continue;
        };
        let key = (w.namespace.clone(), w.name.clone());
        if rows.contains_key(&key) {
            continue;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let scope = snap.scope(&w.namespace, &labels);
        rows.insert(
            key,
            Row {
                namespace: w.namespace,
                workload: w.name,
                sidecar: scope.sidecar.map(str::to_string),
                visible: scope.visible,
                expected: snap.model.expected(scope.visible),
            },
        );
    }
    let rows: Vec<Row> = rows.into_values().collect();
    Ok(render_show(args.format, &snap.model, &rows))
}

/// Who talked to what: (source namespace, source workload) → egress hosts
/// (`namespace/host`).
pub type Talks = BTreeMap<(String, String), BTreeSet<String>>;

/// The one query: every (source workload, destination service) pair with HTTP/gRPC requests
/// or TCP connections in the window.
pub fn suggest_query(window: std::time::Duration, selector: Option<&str>) -> String {
    let extra = selector.map(|s| format!(",{s}")).unwrap_or_default();
    let by = "source_workload, source_workload_namespace, destination_service, destination_service_namespace";
    let w = format!("{}s", window.as_secs());
    format!(
        "sum by ({by}) (count_over_time(istio_requests_total{{destination_service!=\"\"{extra}}}[{w}])) or sum by ({by}) (count_over_time(istio_tcp_connections_opened_total{{destination_service!=\"\"{extra}}}[{w}]))"
    )
}

/// Parse the query's answer into [`Talks`].
pub fn parse_talks(answer: &Value) -> anyhow::Result<Talks> {
    if answer["status"] != "success" {
        anyhow::bail!(
            "prometheus answer: status {} {}",
            answer["status"],
            answer["error"]
        );
    }
    let mut talks = Talks::new();
    let result = answer["data"]["result"]
        .as_array()
        .ok_or_else(|| anyhow!("prometheus answer has no data.result"))?;
    for r in result {
        let m = &r["metric"];
        let get = |k: &str| m[k].as_str().filter(|v| !v.is_empty() && *v != "unknown");
        let (Some(ns), Some(wl), Some(dest)) = (
            get("source_workload_namespace"),
            get("source_workload"),
            get("destination_service"),
        ) else {
            continue;
        };
        let dest_ns = get("destination_service_namespace").unwrap_or("*");
        talks
            .entry((ns.to_string(), wl.to_string()))
            .or_default()
            .insert(format!("{dest_ns}/{}", dest.to_ascii_lowercase()));
    }
    Ok(talks)
}

/// One suggested Sidecar: its namespace, egress hosts, and the scope before/after.
#[derive(Debug, Clone, PartialEq)]
pub struct Suggestion {
    pub namespace: String,
    pub workloads: Vec<String>,
    pub hosts: Vec<String>,
    pub visible_now: usize,
    pub visible_after: usize,
    pub expected_now: crate::engine::quantity::Memory,
    pub expected_after: crate::engine::quantity::Memory,
}

/// Per namespace: the hosts its workloads talked to plus `<root>/*` (hosts in the root
/// namespace are covered by it), and what the scope change would do to each proxy.
pub fn suggestions(
    talks: &Talks,
    services: &[MeshService],
    snap: &MeshSnapshot,
) -> Vec<Suggestion> {
    let root = snap.root_namespace.as_str();
    let mut by_ns: BTreeMap<&str, (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
    for ((ns, wl), hosts) in talks {
        let e = by_ns.entry(ns).or_default();
        e.0.push(wl.clone());
        e.1.extend(
            hosts
                .iter()
                .filter(|h| !h.starts_with(&format!("{root}/")))
                .cloned(),
        );
    }
    by_ns
        .into_iter()
        .map(|(ns, (workloads, hosts))| {
            let mut hosts: Vec<String> = hosts.into_iter().collect();
            hosts.insert(0, format!("{root}/*"));
            let sc = SidecarConfig::new(ns, "default", None, Some(hosts.clone()));
            let now = snap.scope(ns, &BTreeMap::new()).visible;
            let after = mesh::visible(services, ns, Some(&sc)).services;
            Suggestion {
                namespace: ns.to_string(),
                workloads,
                hosts,
                visible_now: now,
                visible_after: after,
                expected_now: snap.model.expected(now),
                expected_after: snap.model.expected(after),
            }
        })
        .collect()
}

/// The suggestions as YAML documents, each with a comment line on what it saves.
pub fn render_suggestions(s: &[Suggestion]) -> String {
    let mut out = String::new();
    for (i, g) in s.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        let saves =
            crate::engine::quantity::Memory(g.expected_now.0.saturating_sub(g.expected_after.0));
        let _ = writeln!(
            out,
            "# {}: {} ({}); {} → {} services visible; expected memory ~{} → ~{} per proxy, saves ~{} per proxy",
            g.namespace,
            if g.workloads.len() == 1 { "1 workload".to_string() } else { format!("{} workloads", g.workloads.len()) },
            g.workloads.join(", "),
            g.visible_now,
            g.visible_after,
            g.expected_now,
            g.expected_after,
            saves
        );
        let doc = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "Sidecar",
            "metadata": {"name": "default", "namespace": g.namespace},
            "spec": {"egress": [{"hosts": g.hosts}]},
        });
        out.push_str(&serde_yaml_ng::to_string(&doc).unwrap_or_default());
    }
    out
}

pub async fn suggest(args: &MeshSuggestArgs) -> anyhow::Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let prom = args
        .prometheus
        .to_config()
        .ok_or_else(|| anyhow!("mesh suggest needs --prometheus-url URL"))?;
    let query = suggest_query(prom.window, prom.selector.as_deref());
    let http = history::prometheus::client(&prom).map_err(|e| anyhow!(e))?;
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", &query)
        .append_pair("time", &history::now_unix().to_string())
        .finish();
    let mut req = http
        .post(format!("{}/api/v1/query", prom.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(f) = &prom.bearer_token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("--prometheus-token-file {}", f.display()))?;
        req = req.bearer_auth(t.trim());
    }
    let mut resp = req
        .send()
        .await
        .with_context(|| format!("prometheus {}", prom.url))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .context("reading the prometheus answer")?
    {
        if bytes.len() + chunk.len() > prom.max_bytes {
            anyhow::bail!(
                "prometheus answer over --prometheus-max-bytes ({} bytes)",
                prom.max_bytes
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    let answer: Value = serde_json::from_slice(&bytes).context("prometheus answer is not JSON")?;
    let talks = parse_talks(&answer)?;
    let source = kube_source(&args.kube_api_url);
    let cfg = args.model.to_config(source.clone());
    let client = kube_src::client(&source)
        .await
        .context("cannot build a Kubernetes client")?;
    let (services, snap) = mesh_state(&client, &cfg, &UsageSnapshot::default()).await?;
    Ok(render_suggestions(&suggestions(&talks, &services, &snap)))
}
