//! The `report` command: load specs and history as `serve` does, list the cluster (pages,
//! never a watch), fold pods into workloads, print one format.

use super::list::{is_forbidden, list_paged, Step};
use super::{mode_of, Aggregator, Context, Report};
use crate::cli::{ReportArgs, ReportFormat};
use crate::engine::constraints::ClusterSnapshot;
use crate::engine::hpa::HpaSnapshot;
use crate::engine::pipeline::Settings;
use crate::engine::spec::SpecStore;
use crate::sources::kube::KubeSource;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, ListParams};
use kube::Client;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;

/// Pods that ended are not listed (the field selector; also filtered client-side).
const RUNNING: &str = "status.phase!=Succeeded,status.phase!=Failed";

/// A failure that ends the report with exit 2.
struct ListFailure(String);

fn fail(what: &str, e: &kube::Error) -> ListFailure {
    ListFailure(format!("cannot list {what}: {e}"))
}

/// The whole command; returns the exit code (0 done, 1 bad flags or inputs, 2 the cluster
/// could not be listed).
pub async fn run(args: &ReportArgs, progress: bool) -> u8 {
    let policy = args.policy.to_policy();
    if let Err(e) = policy.validate() {
        eprintln!("error: invalid policy flags: {e}");
        return 1;
    }
    let mut errors = Vec::new();
    let (mut specs, usage) = crate::sources::oneshot::load(
        args.spec_dir.as_deref(),
        args.history.as_deref(),
        args.state_dir.as_deref(),
        &args.prometheus,
        &mut errors,
    )
    .await;
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        return 1;
    }
    let settings = Settings {
        policy,
        patch: crate::engine::patch::PatchOptions {
            override_explicit: args.override_explicit,
        },
        dry_run_everywhere: false,
    };
    let source = match &args.kube_api_url {
        Some(url) => KubeSource::Url(url.clone()),
        None => KubeSource::Default,
    };
    let mut config = match crate::sources::kube::config(&source).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: no Kubernetes API to list (in cluster, --kube-api-url or kubeconfig): {e:#}");
            return 2;
        }
    };
    config.read_timeout = Some(args.kube_timeout);
    config.connect_timeout = Some(args.kube_timeout);
    let server = config.cluster_url.to_string();
    let client = match Client::try_from(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: Kubernetes API {server}: {e}");
            return 2;
        }
    };
    let report = match collect(&client, args, &settings, &mut specs, &usage, progress).await {
        Ok(r) => r,
        Err(ListFailure(msg)) => {
            eprintln!("error: Kubernetes API {server}: {msg}");
            return 2;
        }
    };
    for n in &report.notes {
        eprintln!("note: {n}");
    }
    if !report.unreadable.is_empty() {
        eprintln!(
            "note: not allowed to list pods in {} namespace(s): {}",
            report.unreadable.len(),
            report.unreadable.join(", ")
        );
    }
    let text = match args.format {
        ReportFormat::Table => super::format::table(&report),
        ReportFormat::Markdown => super::format::markdown(&report),
        ReportFormat::Csv => super::format::csv(&report),
        ReportFormat::Json => super::format::json(&report),
        ReportFormat::Html => super::format::html(&report),
    };
    let written = match &args.output {
        Some(path) => std::fs::write(path, text.as_bytes())
            .map_err(|e| format!("--output {}: {e}", path.display())),
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|e| format!("stdout: {e}")),
    };
    if let Err(e) = written {
        eprintln!("error: {e}");
        return 1;
    }
    0
}

async fn collect(
    client: &Client,
    args: &ReportArgs,
    settings: &Settings,
    specs: &mut SpecStore,
    usage: &crate::engine::usage::UsageSnapshot,
    progress: bool,
) -> Result<Report, ListFailure> {
    let mut notes = Vec::new();
    // Namespaces: their mode label, and the list to walk when pods cannot be listed at once.
    let mut modes: HashMap<String, String> = HashMap::new();
    let mut namespaces_known = true;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let listed = list_paged(&ns_api, &ListParams::default(), |s| {
        if let Step::Item(ns) = s {
            let mode = mode_of(ns.metadata.labels.as_ref());
            modes.insert(ns.metadata.name.unwrap_or_default(), mode.to_string());
        }
    })
    .await;
    match listed {
        Ok(()) => {}
        Err(e) if is_forbidden(&e) => {
            namespaces_known = false;
            modes.clear();
            for ns in &args.namespace {
                match ns_api.get(ns).await {
                    Ok(n) => {
                        modes.insert(ns.clone(), mode_of(n.metadata.labels.as_ref()).into());
                    }
                    Err(e) if is_forbidden(&e) => {}
                    Err(e) => return Err(fail("namespaces", &e)),
                }
            }
            notes.push(
                "namespaces may not be listed: modes of unreadable namespaces are shown as unknown"
                    .to_string(),
            );
        }
        Err(e) => return Err(fail("namespaces", &e)),
    }
    let scopes: Option<Vec<String>> = if args.namespace.is_empty() {
        None
    } else {
        let mut v = args.namespace.clone();
        v.sort();
        v.dedup();
        Some(v)
    };
    // Team specs from ConfigMaps, as `serve --spec-configmaps` reads them.
    if args.spec_configmaps {
        let api: Api<ConfigMap> = Api::all(client.clone());
        let lp = ListParams::default().labels(crate::sources::configmaps::SPEC_LABEL);
        let mut entries: Vec<(String, String, String, BTreeMap<String, String>)> = Vec::new();
        list_paged(&api, &lp, |s| match s {
            Step::Item(cm) => entries.push((
                cm.metadata.namespace.unwrap_or_default(),
                cm.metadata.name.unwrap_or_default(),
                cm.metadata.resource_version.unwrap_or_default(),
                cm.data.unwrap_or_default(),
            )),
            Step::Restart => entries.clear(),
            Step::PageDone(_) => {}
        })
        .await
        .map_err(|e| fail("spec configmaps", &e))?;
        let cm = SpecStore::from_configmaps(
            entries
                .iter()
                .map(|(ns, n, v, d)| (ns.as_str(), n.as_str(), v.as_str(), d)),
            &SpecStore::default(),
        );
        for e in &cm.errors {
            notes.push(format!("spec: {e}"));
        }
        *specs = specs.overlaid(&cm);
    }
    // HPAs: all at once, else namespace by namespace where allowed.
    let hpa_api: Api<HorizontalPodAutoscaler> = Api::all(client.clone());
    let mut hpas: Vec<HorizontalPodAutoscaler> = Vec::new();
    let all = match &scopes {
        None => {
            let r = list_paged(&hpa_api, &ListParams::default(), |s| match s {
                Step::Item(h) => hpas.push(h),
                Step::Restart => hpas.clear(),
                Step::PageDone(_) => {}
            })
            .await;
            match r {
                Ok(()) => true,
                Err(e) if is_forbidden(&e) => {
                    hpas.clear();
                    false
                }
                Err(e) => return Err(fail("horizontalpodautoscalers", &e)),
            }
        }
        Some(_) => false,
    };
    if !all {
        let walk: Vec<String> = match &scopes {
            Some(v) => v.clone(),
            None => sorted_keys(&modes),
        };
        let mut denied = Vec::new();
        for ns in walk {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
            let mut page: Vec<HorizontalPodAutoscaler> = Vec::new();
            let r = list_paged(&api, &ListParams::default(), |s| match s {
                Step::Item(h) => page.push(h),
                Step::Restart => page.clear(),
                Step::PageDone(_) => {}
            })
            .await;
            match r {
                Ok(()) => hpas.extend(page),
                Err(e) if is_forbidden(&e) => denied.push(ns),
                Err(e) => return Err(fail("horizontalpodautoscalers", &e)),
            }
        }
        if !denied.is_empty() {
            notes.push(format!(
                "HPAs may not be listed in {}: no HpaShift findings there",
                denied.join(", ")
            ));
        }
    }
    let hpa_snapshot = HpaSnapshot::build(hpas.iter());
    drop(hpas);
    let cluster = ClusterSnapshot::default();
    let ctx = Context {
        settings,
        specs,
        usage,
        cluster: &cluster,
        hpas: &hpa_snapshot,
    };
    let base = match &args.selector {
        Some(sel) => ListParams::default().labels(sel).fields(RUNNING),
        None => ListParams::default().fields(RUNNING),
    };
    let mut total = Aggregator::default();
    let mut unreadable = Vec::new();
    let mut listed_before = 0u64;
    let scoped = match &scopes {
        Some(v) => v.clone(),
        None => {
            let api: Api<Pod> = Api::all(client.clone());
            let mut agg = Aggregator::default();
            let r = list_pods(&api, &base, &ctx, &mut agg, progress, 0).await;
            match r {
                Ok(()) => {
                    total = agg;
                    Vec::new()
                }
                Err(e) if is_forbidden(&e) => {
                    if !namespaces_known {
                        return Err(ListFailure(format!(
                            "listing pods in all namespaces is forbidden and namespaces may not be listed either: {e}"
                        )));
                    }
                    notes.push(
                        "listing pods in all namespaces is forbidden: listed namespace by namespace"
                            .into(),
                    );
                    sorted_keys(&modes)
                }
                Err(e) => return Err(fail("pods", &e)),
            }
        }
    };
    for ns in scoped {
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let mut agg = Aggregator::default();
        match list_pods(&api, &base, &ctx, &mut agg, progress, listed_before).await {
            Ok(()) => {
                listed_before += agg.pods_listed;
                total.merge(agg);
            }
            Err(e) if is_forbidden(&e) => unreadable.push(ns),
            Err(e) => return Err(fail(&format!("pods in {ns}"), &e)),
        }
    }
    if progress {
        eprintln!();
    }
    let mut report = total.finish(&modes, unreadable);
    report.notes = notes;
    Ok(report)
}

fn sorted_keys(m: &HashMap<String, String>) -> Vec<String> {
    let mut v: Vec<String> = m.keys().cloned().collect();
    v.sort();
    v
}

async fn list_pods(
    api: &Api<Pod>,
    base: &ListParams,
    ctx: &Context<'_>,
    agg: &mut Aggregator,
    progress: bool,
    before: u64,
) -> Result<(), kube::Error> {
    list_paged(api, base, |s| match s {
        Step::Item(pod) => agg.add(&pod, ctx),
        Step::Restart => *agg = Aggregator::default(),
        Step::PageDone(n) => {
            if progress {
                eprint!("\rlisting pods: {} ", before + n);
            }
        }
    })
    .await
}
