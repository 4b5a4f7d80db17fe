//! `sidecar-sizer history import|show`.

use crate::cli::{ImportArgs, ShowArgs, ShowFormat};
use crate::engine::quantity::{Cpu, Memory};
use crate::sources::history::{self, now_unix, prometheus, store, UsageSnapshot};
use anyhow::{anyhow, bail};
use std::fmt::Write as _;

/// Fill the store once; returns the line to print.
pub async fn import(args: &ImportArgs) -> anyhow::Result<String> {
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
        match store::load(dir).map_err(|e| anyhow!(e))? {
            Some(s) => snap = snap.overlaid(&s),
            None => eprintln!("{}: no history store yet", store::path_in(dir).display()),
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
