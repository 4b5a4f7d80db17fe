//! Mesh scope (`serve --mesh-scope`, issue 14): Services, Istio ServiceEntries and Sidecars
//! in all namespaces, kept current by kube-runtime reflectors, turned into a
//! [`MeshSnapshot`] (per namespace the visible-service count under each Sidecar) and swapped
//! into `Shared::mesh`. The memory model is re-calibrated against the current usage
//! history on every rebuild and once a minute. Nothing here runs per admission.
//!
//! Istio's kinds are read as `DynamicObject`s at the first served version of
//! networking.istio.io among v1, v1beta1, v1alpha3 (probed with a one-item list; 404 →
//! next). No version served: Istio's CRDs are absent, scope is "all Services", a log line
//! says so and `sidecar_sizer_mesh_istio_crds` is 0.

use crate::engine::mesh::{self, ExportTo, MemoryModel, MeshService, MeshSnapshot, SidecarConfig};
use crate::engine::quantity::Memory;
use crate::engine::sizing::Policy;
use crate::engine::usage::UsageSnapshot;
use crate::metrics::KindLabel;
use crate::sources::kube::reflect_all;
use crate::webhook::serve::Shared;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

pub const GROUP: &str = "networking.istio.io";
/// Versions tried, newest first.
pub const VERSIONS: [&str; 3] = ["v1", "v1beta1", "v1alpha3"];
pub const SERVICES: &str = "services";
pub const SIDECARS: &str = "sidecars";
pub const SERVICE_ENTRIES: &str = "serviceentries";

/// Events handled in one batch at most before the snapshot is rebuilt.
const BATCH: usize = 512;
/// How often the model is re-calibrated against fresh history without a mesh change.
const RECALIBRATE: Duration = Duration::from_secs(60);

/// `--mesh-scope` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    pub kube: crate::sources::kube::KubeSource,
    /// `--istio-root-namespace`.
    pub root_namespace: String,
    /// `--mesh-base-memory`, `--mesh-memory-per-service`.
    pub base: Memory,
    pub per_service: Memory,
    /// `--mesh-calibration-workloads`: fit only with at least this many workloads.
    pub calibration_workloads: usize,
}

impl MeshConfig {
    pub fn default_model(&self) -> MemoryModel {
        MemoryModel::defaults(self.base, self.per_service, "defaults")
    }
}

/// A Service as scoping sees it.
pub fn from_service(s: &Service) -> Option<MeshService> {
    let ns = s.metadata.namespace.as_deref()?;
    let name = s.metadata.name.as_deref()?;
    let ann = s
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(mesh::EXPORT_TO_ANNOTATION))
        .map(String::as_str);
    Some(MeshService::service(
        ns,
        name,
        ExportTo::from_annotation(ann, ns),
    ))
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x.as_str() {
                    Some(s) => s.to_string(),
                    None => x.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The hosts of a ServiceEntry, each one service.
pub fn from_service_entry(o: &DynamicObject) -> Vec<MeshService> {
    let Some(ns) = o.metadata.namespace.as_deref() else {
        return Vec::new();
    };
    let spec = &o.data["spec"];
    let export = strings(&spec["exportTo"]);
    let export_to = ExportTo::parse(export.iter().map(String::as_str), ns);
    strings(&spec["hosts"])
        .iter()
        .map(|h| MeshService::entry_host(ns, h, export_to.clone()))
        .collect()
}

/// A Sidecar's selector and egress hosts.
pub fn from_sidecar(o: &DynamicObject) -> Option<SidecarConfig> {
    let ns = o.metadata.namespace.as_deref()?;
    let name = o.metadata.name.as_deref()?;
    let spec = &o.data["spec"];
    let selector: Option<BTreeMap<String, String>> =
        spec["workloadSelector"]["labels"].as_object().map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        });
    let egress = match spec["egress"].as_array() {
        None => None,
        Some(listeners) if listeners.is_empty() => None,
        Some(listeners) => Some(
            listeners
                .iter()
                .flat_map(|l| strings(&l["hosts"]))
                .collect(),
        ),
    };
    Some(SidecarConfig::new(ns, name, selector, egress))
}

/// Sidecars in istiod's precedence order: oldest first, then by namespace/name.
pub fn sidecars_in_order(objects: &[Arc<DynamicObject>]) -> Vec<SidecarConfig> {
    let mut v: Vec<(String, SidecarConfig)> = objects
        .iter()
        .filter_map(|o| {
            let created = o
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            Some((created, from_sidecar(o)?))
        })
        .collect();
    v.sort_by(|a, b| (&a.0, &a.1.namespace, &a.1.name).cmp(&(&b.0, &b.1.namespace, &b.1.name)));
    v.into_iter().map(|(_, s)| s).collect()
}

/// The first served version of an Istio kind, or None when no version is served.
pub async fn probe(
    client: &Client,
    kind: &str,
    plural: &str,
) -> Result<Option<ApiResource>, kube::Error> {
    for version in VERSIONS {
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, version, kind), plural);
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        match api.list(&ListParams::default().limit(1)).await {
            Ok(_) => return Ok(Some(ar)),
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Probe until the API answers (a 404 for every version is an answer). After about 30 s of
/// errors (API down, RBAC denied) the kind is treated as absent, so Services still scope.
async fn probe_retrying(
    client: &Client,
    shared: &Shared,
    kind: &str,
    plural: &'static str,
) -> Option<ApiResource> {
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        match probe(client, kind, plural).await {
            Ok(ar) => return ar,
            Err(e) => {
                shared
                    .metrics
                    .reload_failures
                    .get_or_create(&KindLabel { kind: plural })
                    .inc();
                if attempt >= 6 {
                    tracing::warn!(kind = plural, error = %e, "cannot read Istio's API; taken as absent");
                    return None;
                }
                tracing::warn!(kind = plural, error = %e, "cannot probe Istio's API; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
    None
}

/// (visible services, peak proxy memory) of every workload with confident proxy memory
/// history whose scope does not depend on pod labels (see [`MeshSnapshot::namespace_scope`]).
pub fn calibration_points(
    snap: &MeshSnapshot,
    usage: &UsageSnapshot,
    policy: &Policy,
) -> Vec<(usize, u64)> {
    usage
        .iter_sorted()
        .into_iter()
        .filter_map(|(ns, _, w)| {
            let c = w.containers.get(crate::engine::sizing::PROXY)?;
            let confident = c.hours >= policy.min_history_hours
                && c.samples >= policy.min_history_samples
                && c.memory_max_bytes > 0;
            if !confident {
                return None;
            }
            Some((snap.namespace_scope(ns)?.visible, c.memory_max_bytes))
        })
        .collect()
}

/// Rebuild the snapshot from the stores and calibrate it.
fn rebuild(
    services: &[Arc<Service>],
    entries: &[Arc<DynamicObject>],
    sidecars: &[Arc<DynamicObject>],
    crds: bool,
    cfg: &MeshConfig,
    usage: &UsageSnapshot,
    policy: &Policy,
) -> MeshSnapshot {
    let mut all: Vec<MeshService> = services.iter().filter_map(|s| from_service(s)).collect();
    all.extend(entries.iter().flat_map(|e| from_service_entry(e)));
    let scs = sidecars_in_order(sidecars);
    let mut snap = MeshSnapshot::build(&all, &scs, &cfg.root_namespace, crds, cfg.default_model());
    calibrate_into(&mut snap, cfg, usage, policy);
    snap
}

pub fn calibrate_into(
    snap: &mut MeshSnapshot,
    cfg: &MeshConfig,
    usage: &UsageSnapshot,
    policy: &Policy,
) {
    let points = calibration_points(snap, usage, policy);
    snap.model = mesh::calibrate(&points, &cfg.default_model(), cfg.calibration_workloads);
}

fn publish(shared: &Shared, snap: MeshSnapshot) {
    let m = &shared.metrics;
    m.mesh_services.set(snap.services as i64);
    m.mesh_sidecars.set(snap.sidecars as i64);
    m.mesh_malformed_sidecars
        .set(snap.malformed_sidecars as i64);
    m.mesh_istio_crds.set(i64::from(snap.istio_crds));
    let model = &snap.model;
    m.mesh_model_base_bytes.set(model.base_bytes);
    m.mesh_model_per_service_bytes.set(model.per_service_bytes);
    m.mesh_model_workloads
        .set(model.calibration.workloads as i64);
    m.mesh_model_calibrated
        .set(i64::from(model.calibration.calibrated));
    m.mesh_model_r_squared
        .set(model.calibration.r_squared.unwrap_or(0.0));
    shared.mesh.store(Arc::new(snap));
}

enum Step {
    Listing,
    Listed,
    Changed,
    Failed,
}

fn step<K>(
    kind: &'static str,
    shared: &Shared,
    event: Result<watcher::Event<K>, watcher::Error>,
) -> Step {
    match event {
        Ok(watcher::Event::Init) | Ok(watcher::Event::InitApply(_)) => Step::Listing,
        Ok(watcher::Event::InitDone) => Step::Listed,
        Ok(watcher::Event::Apply(_)) | Ok(watcher::Event::Delete(_)) => Step::Changed,
        Err(e) => {
            shared
                .metrics
                .reload_failures
                .get_or_create(&KindLabel { kind })
                .inc();
            tracing::warn!(kind, error = %e, "mesh watch error; last good snapshot kept, retrying with backoff");
            Step::Failed
        }
    }
}

fn dynamic_store(
    ar: &ApiResource,
) -> (
    Store<DynamicObject>,
    reflector::store::Writer<DynamicObject>,
) {
    let writer = reflector::store::Writer::new(ar.clone());
    (writer.as_reader(), writer)
}

/// Watch Services, ServiceEntries and Sidecars in all namespaces and keep `shared.mesh`
/// current. `synced` is notified after the first complete lists.
pub async fn watch(
    client: Client,
    shared: Arc<Shared>,
    cfg: MeshConfig,
    synced: Arc<tokio::sync::Notify>,
) {
    let se_ar = probe_retrying(&client, &shared, "ServiceEntry", SERVICE_ENTRIES).await;
    let sc_ar = probe_retrying(&client, &shared, "Sidecar", SIDECARS).await;
    let crds = sc_ar.is_some();
    if sc_ar.is_none() {
        tracing::warn!(
            group = GROUP,
            "Istio's Sidecar CRD is not served (tried v1, v1beta1, v1alpha3): every proxy is taken to see all Services"
        );
    } else {
        tracing::info!(
            sidecars = sc_ar.as_ref().map_or("", |a| a.api_version.as_str()),
            serviceentries = se_ar.as_ref().map_or("absent", |a| a.api_version.as_str()),
            "mesh scope: Istio API found"
        );
    }
    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let services =
        reflect_all(client.clone(), svc_writer).map(|e| (SERVICES, step(SERVICES, &shared, e)));
    let mut streams = vec![services.boxed()];
    let mut readers: BTreeMap<&'static str, Store<DynamicObject>> = BTreeMap::new();
    for (plural, ar) in [(SERVICE_ENTRIES, &se_ar), (SIDECARS, &sc_ar)] {
        let Some(ar) = ar else { continue };
        let (reader, writer) = dynamic_store(ar);
        readers.insert(plural, reader);
        let s = reflector(
            writer,
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), ar),
                watcher::Config::default(),
            )
            .modify(|o| o.managed_fields_mut().clear()),
        )
        .default_backoff()
        .map({
            let shared = shared.clone();
            move |e| (plural, step(plural, &shared, e))
        });
        streams.push(s.boxed());
    }
    let mut listed: BTreeMap<&'static str, bool> = std::iter::once(SERVICES)
        .chain(readers.keys().copied())
        .map(|k| (k, false))
        .collect();
    let mut events = futures::stream::select_all(streams).ready_chunks(BATCH);
    let mut tick = tokio::time::interval(RECALIBRATE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let policy = shared.settings.policy.clone();
    loop {
        let rebuild_now = tokio::select! {
            batch = events.next() => {
                let Some(batch) = batch else { return };
                let mut changed = false;
                for (kind, s) in batch {
                    match s {
                        Step::Listed => {
                            listed.insert(kind, true);
                            changed = true;
                        }
                        Step::Changed => changed = true,
                        Step::Listing | Step::Failed => {}
                    }
                }
                changed
            }
            _ = tick.tick() => true,
        };
        if !rebuild_now || !listed.values().all(|v| *v) {
            continue;
        }
        let first = !shared.mesh.load().synced;
        let svcs = svc_reader.state();
        let entries = readers
            .get(SERVICE_ENTRIES)
            .map(|r| r.state())
            .unwrap_or_default();
        let scs = readers.get(SIDECARS).map(|r| r.state()).unwrap_or_default();
        let usage = shared.usage.load_full();
        let (cfg2, policy2) = (cfg.clone(), policy.clone());
        let built = tokio::task::spawn_blocking(move || {
            rebuild(&svcs, &entries, &scs, crds, &cfg2, &usage, &policy2)
        })
        .await;
        let snap = match built {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "mesh snapshot build failed; last good snapshot kept");
                continue;
            }
        };
        let log = |msg: &str| {
            tracing::info!(
                services = snap.services,
                sidecars = snap.sidecars,
                malformed_sidecars = snap.malformed_sidecars,
                istio_crds = snap.istio_crds,
                model = %snap.model.describe(),
                calibration = %snap.model.calibration.note,
                "{msg}"
            )
        };
        if first {
            log("mesh scope listed");
        } else {
            tracing::debug!(
                services = snap.services,
                sidecars = snap.sidecars,
                "mesh scope updated"
            );
        }
        if snap.malformed_sidecars > 0 && first {
            tracing::warn!(
                malformed_sidecars = snap.malformed_sidecars,
                "some Sidecars have unreadable egress hosts; their workloads are taken to see everything"
            );
        }
        publish(&shared, snap);
        synced.notify_one();
    }
}

/// One-shot read for `mesh show`: Services, ServiceEntries and Sidecars (listed once).
pub async fn list_once(
    client: &Client,
) -> anyhow::Result<(Vec<MeshService>, Vec<SidecarConfig>, bool)> {
    let lp = ListParams::default();
    let svcs = Api::<Service>::all(client.clone()).list(&lp).await?;
    let mut all: Vec<MeshService> = svcs.items.iter().filter_map(from_service).collect();
    if let Some(ar) = probe(client, "ServiceEntry", SERVICE_ENTRIES).await? {
        let list = Api::<DynamicObject>::all_with(client.clone(), &ar)
            .list(&lp)
            .await?;
        all.extend(list.items.iter().flat_map(from_service_entry));
    }
    let Some(ar) = probe(client, "Sidecar", SIDECARS).await? else {
        return Ok((all, Vec::new(), false));
    };
    let list = Api::<DynamicObject>::all_with(client.clone(), &ar)
        .list(&lp)
        .await?;
    let items: Vec<Arc<DynamicObject>> = list.items.into_iter().map(Arc::new).collect();
    Ok((all, sidecars_in_order(&items), true))
}
