//! `sidecar-sizer history import|show`.

use crate::cli::{ImportArgs, ShowArgs, ShowFormat};
use crate::engine::quantity::{Cpu, Memory};
use crate::sources::history::{self, now_unix, prometheus, store, UsageSnapshot};
use anyhow::{anyhow, bail};
use std::fmt::Write as _;

/// Fill the store once; returns the line to print.
pub async fn import(args: &ImportArgs) -> anyhow::Result<String> {
    if args.from_metrics_api {
        return import_metrics_api(args).await;
    }
    let snap = if let Some(file) = &args.from_file {
        let (snap, errors) = history::load_history_file(file).map_err(|e| anyhow!(e))?;
        for e in &errors {
            eprintln!("{}: {e}", file.display());
        }
        snap
    } else if let Some(cfg) = args.prometheus.to_config() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = prometheus::client(&cfg).map_err(|e| anyhow!(e))?;
        let fetched = prometheus::fetch(&client, &cfg, now_unix()).await?;
        fetched.snapshot
    } else {
        bail!("history import needs --from-prometheus URL or --from-file FILE");
    };
    store::save(&args.state_dir, &snap).map_err(|e| anyhow!(e))?;
    Ok(format!(
        "imported {} workload(s) from {} into {}",
        snap.len(),
        snap.meta.source,
        store::path_in(&args.state_dir).display()
    ))
}

/// One metrics API sample folded into `--state-dir`'s metrics-API history.
async fn import_metrics_api(args: &ImportArgs) -> anyhow::Result<String> {
    use crate::sources::metrics_api;
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ApiResource, DynamicObject, ListParams};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let source = match &args.kube_api_url {
        Some(u) => crate::sources::kube::KubeSource::Url(u.clone()),
        None => crate::sources::kube::KubeSource::Default,
    };
    let client = crate::sources::kube::client(&source).await?;
    let namespaces: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default().labels(metrics_api::MODE_LABEL))
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let (store, mut writer) = kube::runtime::reflector::store::<Pod>();
    for pod in Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(pod));
    }
    let ar = ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    };
    let items = Api::<DynamicObject>::all_with(client, &ar)
        .list(&ListParams::default())
        .await
        .map_err(|e| anyhow!("metrics API (is metrics-server installed?): {e}"))?
        .items;
    let now = now_unix() as i64;
    let (samples, kills, dropped) = metrics_api::samples_from(
        &items,
        &store,
        &|ns| namespaces.iter().any(|n| n == ns),
        now,
    );
    let mut history = metrics_api::load_local(&args.state_dir)
        .map_err(|e| anyhow!(e))?
        .unwrap_or_default();
    let cfg = crate::engine::learn::LearnConfig::default();
    let stats = history.fold(now, &samples, &kills, &cfg);
    let text =
        crate::engine::learn::encode_checkpoints(&history, "history-import", now, usize::MAX)
            .pop()
            .unwrap_or_default();
    metrics_api::save_local(&args.state_dir, &text).map_err(|e| anyhow!(e))?;
    let mut skipped: Vec<String> = dropped
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .chain(stats.dropped.iter().map(|(r, n)| format!("{r} {n}")))
        .collect();
    if skipped.is_empty() {
        skipped.push("none".into());
    }
    Ok(format!(
        "sampled {} pod(s) in {} opted-in namespace(s): {} container sample(s) accepted (dropped: {}); {} workload(s) in {}",
        samples.len(),
        namespaces.len(),
        stats.accepted,
        skipped.join(", "),
        history.len(),
        args.state_dir.join(metrics_api::LOCAL_COPY).display()
    ))
}

/// What `serve` would read: the history file overlaid by the store.
pub fn load_for_show(args: &ShowArgs) -> anyhow::Result<UsageSnapshot> {
    if args.state_dir.is_none() && args.history.is_none() {
        bail!("history show needs --state-dir DIR and/or --history FILE");
    }
    let mut snap = UsageSnapshot::default();
    if let Some(file) = &args.history {
        let (s, errors) = history::load_history_file(file).map_err(|e| anyhow!(e))?;
        for e in &errors {
            eprintln!("{}: {e}", file.display());
        }
        snap = s;
    }
    if let Some(dir) = &args.state_dir {
        // As serve: the metrics-API history under the Prometheus/imported store.
        let learned = crate::sources::metrics_api::load_local(dir).map_err(|e| anyhow!(e))?;
        if let Some(h) = &learned {
            let api = h.to_snapshot(
                now_unix() as i64,
                &crate::engine::learn::LearnConfig::default(),
            );
            let source = [snap.meta.source.clone(), api.meta.source.clone()];
            snap = snap.overlaid(&api);
            snap.meta.source = source
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" + ");
        }
        match store::load(dir).map_err(|e| anyhow!(e))? {
            Some(s) => {
                let source = format!("{} + {}", snap.meta.source, s.meta.source);
                let both = learned.is_some() && !s.is_empty();
                snap = snap.overlaid(&s);
                if both {
                    snap.meta.source = source;
                }
            }
            None if learned.is_none() => {
                eprintln!("{}: no history store yet", store::path_in(dir).display())
            }
            None => {}
        }
    }
    Ok(snap)
}

pub fn show(args: &ShowArgs, snap: &UsageSnapshot) -> String {
    let rows: Vec<_> = snap
        .iter_sorted()
        .into_iter()
        .filter(|(ns, _, _)| args.namespace.as_deref().is_none_or(|n| n == *ns))
        .filter(|(_, wl, _)| args.workload.as_deref().is_none_or(|w| w == *wl))
        .collect();
    match args.format {
        ShowFormat::Json => {
            let list: Vec<serde_json::Value> = rows
                .iter()
                .map(|(ns, wl, u)| {
                    serde_json::json!({
                        "namespace": ns,
                        "workload": wl,
                        "source": u.source.as_deref().unwrap_or(&snap.meta.source),
                        "confident": u.containers.get(crate::engine::sizing::PROXY).is_some_and(confident),
                        "avg_replicas": u.avg_replicas,
                        "containers": u.containers,
                    })
                })
                .collect();
            let doc = serde_json::json!({
                "source": snap.meta.source,
                "fetched_at": snap.meta.fetched_at,
                "workloads": list,
            });
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        }
        ShowFormat::Table => {
            let mut out = String::new();
            let age = snap
                .age_seconds(now_unix())
                .map(|a| {
                    format!(
                        ", fetched {} ago",
                        humantime::format_duration(std::time::Duration::from_secs(a))
                    )
                })
                .unwrap_or_default();
            let _ = writeln!(out, "# source: {}{age}", snap.meta.source);
            let header = [
                "NAMESPACE",
                "WORKLOAD",
                "CONTAINER",
                "CPU_P95",
                "MEM_MAX",
                "SAMPLES",
                "HOURS",
                "REPLICAS",
                "OOM",
                "SOURCE",
                "CONFIDENCE",
            ];
            let mut table: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
            for (ns, wl, u) in &rows {
                for (c, cu) in &u.containers {
                    table.push(vec![
                        ns.to_string(),
                        wl.to_string(),
                        c.clone(),
                        Cpu((cu.cpu_p95_cores * 1000.0).ceil() as u64).to_string(),
                        Memory(cu.memory_max_bytes).to_string(),
                        cu.samples.to_string(),
                        format!("{:.1}", cu.hours),
                        u.avg_replicas.map_or("-".into(), |r| format!("{r:.1}")),
                        cu.oom_kills.to_string(),
                        u.source
                            .as_deref()
                            .unwrap_or(snap.meta.source.split(' ').next().unwrap_or(""))
                            .to_string(),
                        if confident(cu) { "confident" } else { "low" }.to_string(),
                    ]);
                }
            }
            let widths: Vec<usize> = (0..header.len())
                .map(|i| {
                    table
                        .iter()
                        .map(|r| r[i].chars().count())
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            for row in &table {
                let line: Vec<String> = row
                    .iter()
                    .zip(&widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                let _ = writeln!(out, "{}", line.join("  ").trim_end());
            }
            out
        }
    }
}

/// Whether the default policy would use this history (DESIGN §8: 24h and 100 samples).
fn confident(c: &crate::engine::usage::ContainerUsage) -> bool {
    let p = crate::engine::sizing::Policy::default();
    c.hours >= p.min_history_hours && c.samples >= p.min_history_samples
}
