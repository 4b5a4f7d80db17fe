//! `--metrics-api`: usage history learned in cluster from `metrics.k8s.io/v1beta1`
//! PodMetrics, with no Prometheus (issue 13).
//!
//! Every replica: reflects pods (metadata and container statuses only) and the opted-in
//! namespaces (label `sidecar-sizer.io/mode` present), follows the checkpoint ConfigMaps in
//! its own namespace by watch (loaded before ready), and serves the history they hold.
//! The replica holding the Lease ([`checkpoints::Elector`]) also samples PodMetrics every
//! `--metrics-interval` (one cluster-wide list), maps each pod to its workload with the
//! admission identity function, folds the samples ([`learn::History::fold`]) and writes
//! checkpoints at most every `--checkpoint-interval`. Any failure drops the round with a
//! metric by reason and a log line; the last history stays. Nothing here is on the
//! request path: admissions read the swapped-in snapshot.

use crate::engine::learn::{self, History, LearnConfig, OomKill, PodSample};
use crate::engine::workload;
use crate::metrics::ReasonLabel;
use crate::sources::checkpoints::{self, Elector, Writer, CHECKPOINT_LABEL};
use crate::sources::history::now_unix;
use crate::webhook::serve::Shared;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Api, Client};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The namespace label that opts a namespace in (any value).
pub const MODE_LABEL: &str = "sidecar-sizer.io/mode";
/// The local copy of the history in `--state-dir`.
pub const LOCAL_COPY: &str = "metrics-api-history.json";

#[derive(Debug, Clone)]
pub struct MetricsApiConfig {
    /// The sizer's own namespace (Lease and checkpoint ConfigMaps).
    pub namespace: String,
    /// This replica's name in the Lease.
    pub identity: String,
    pub interval: Duration,
    pub checkpoint_interval: Duration,
    pub lease_duration: Duration,
    /// Timeout of each metrics API list.
    pub timeout: Duration,
    pub learn: LearnConfig,
    pub state_dir: Option<PathBuf>,
}

/// A replica identity: the pod name (`POD_NAME`, else `HOSTNAME`) and a per-process suffix.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "sidecar-sizer".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{:x}", nanos ^ std::process::id())
}

fn metrics_resource() -> ApiResource {
    ApiResource {
        group: "metrics.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "metrics.k8s.io/v1beta1".into(),
        kind: "PodMetrics".into(),
        plural: "pods".into(),
    }
}

/// Why a sampling round produced nothing (metric label).
fn list_failure(e: &kube::Error) -> &'static str {
    match e {
        kube::Error::Api(s) if s.code == 404 => "absent",
        kube::Error::Api(s) if s.code == 503 => "unavailable",
        kube::Error::SerdeError(_) => "garbage",
        _ => "error",
    }
}

fn unix(t: &Time) -> i64 {
    t.0.as_second()
}

/// One round's input: the PodMetrics list and the reflected pods/namespaces, turned into
/// samples and OOM kills. Returns (samples, kills, dropped-by-reason counts).
pub fn samples_from(
    items: &[DynamicObject],
    pods: &Store<Pod>,
    opted: &dyn Fn(&str) -> bool,
    now: i64,
) -> (Vec<PodSample>, Vec<OomKill>, Vec<(&'static str, u64)>) {
    let mut samples = Vec::new();
    let mut dropped = Vec::new();
    let mut with_metrics = std::collections::HashSet::new();
    for item in items {
        let (Some(ns), Some(name)) = (
            item.metadata.namespace.as_deref(),
            item.metadata.name.as_deref(),
        ) else {
            dropped.push(("invalid", 1));
            continue;
        };
        if !opted(ns) {
            continue;
        }
        with_metrics.insert((ns.to_string(), name.to_string()));
        let Some(pod) = pods.get(&ObjectRef::new(name).within(ns)) else {
            dropped.push(("unknown_pod", 1));
            continue;
        };
        let Ok(w) = workload::identify(&pod, Some(ns)) else {
            dropped.push(("unknown_pod", 1));
            continue;
        };
        let at = item
            .data
            .get("timestamp")
            .and_then(|t| serde_json::from_value::<Time>(t.clone()).ok())
            .map_or(now, |t| unix(&t));
        let containers: Vec<learn::ContainerSample> = item
            .data
            .get("containers")
            .and_then(Value::as_array)
            .map(|cs| {
                cs.iter()
                    .map(|c| {
                        let q = |k: &str| {
                            c["usage"][k]
                                .as_str()
                                .and_then(learn::parse_quantity)
                                .unwrap_or(f64::NAN)
                        };
                        learn::ContainerSample {
                            name: c["name"].as_str().unwrap_or_default().to_string(),
                            cpu_cores: q("cpu"),
                            memory_bytes: q("memory"),
                        }
                    })
                    .filter(|c| !c.name.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        samples.push(PodSample {
            namespace: ns.to_string(),
            workload: w.name,
            pod: name.to_string(),
            at,
            containers,
        });
    }
    let mut kills = Vec::new();
    let mut missing = 0;
    for pod in pods.state() {
        let (Some(ns), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            continue;
        };
        if !opted(ns) {
            continue;
        }
        let status = pod.status.as_ref();
        let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
        if running && !with_metrics.contains(&(ns.to_string(), name.to_string())) {
            missing += 1;
        }
        for cs in status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
        {
            let Some(t) = cs.last_state.as_ref().and_then(|l| l.terminated.as_ref()) else {
                continue;
            };
            if t.reason.as_deref() != Some("OOMKilled") {
                continue;
            }
            let Ok(w) = workload::identify(&pod, Some(ns)) else {
                continue;
            };
            kills.push(OomKill {
                namespace: ns.to_string(),
                workload: w.name,
                container: cs.name.clone(),
                at: t.finished_at.as_ref().map_or(now, unix),
            });
        }
    }
    if missing > 0 {
        dropped.push(("missing", missing));
    }
    (samples, kills, dropped)
}

/// Keep only what identity and OOM detection need of a pod.
fn strip(pod: &mut Pod) {
    pod.spec = None;
    pod.metadata.managed_fields = None;
    pod.metadata.annotations = None;
    if let Some(s) = pod.status.as_mut() {
        s.conditions = None;
        s.init_container_statuses = None;
        s.ephemeral_container_statuses = None;
        s.pod_ips = None;
        s.host_ips = None;
    }
}

/// Start the pod and namespace reflectors; returns their stores.
fn reflect(client: &Client) -> (Store<Pod>, Store<Namespace>) {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_stream = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).modify(strip),
    )
    .default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(pod_stream);
        while let Some(e) = pod_stream.next().await {
            if let Err(e) = e {
                tracing::warn!(error = %e, "pod watch error; retrying with backoff");
            }
        }
    });
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let ns_stream = reflector(
        ns_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default().labels(MODE_LABEL),
        ),
    )
    .default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(ns_stream);
        while let Some(e) = ns_stream.next().await {
            if let Err(e) = e {
                tracing::warn!(error = %e, "namespace watch error; retrying with backoff");
            }
        }
    });
    (pods, namespaces)
}

struct Learner {
    shared: Arc<Shared>,
    cfg: MetricsApiConfig,
    client: Client,
    history: History,
    pods: Store<Pod>,
    namespaces: Store<Namespace>,
    elector: Elector,
    writer: Writer,
    leading: bool,
    /// Sampled since the last checkpoint.
    dirty: bool,
    last_checkpoint: Option<Instant>,
    /// Bad checkpoint (name, resourceVersion)s already reported.
    reported: std::collections::HashSet<(String, String)>,
    /// The reason the last round failed, if it did (logs once per reason).
    last_failure: Option<&'static str>,
}

impl Learner {
    fn publish(&self) {
        let now = now_unix() as i64;
        let snap = self.history.to_snapshot(now, &self.cfg.learn);
        self.shared
            .metrics
            .metrics_api_workloads
            .set(snap.len() as i64);
        self.shared.metrics_usage.store(Arc::new(snap));
        self.shared.recombine(true);
    }

    fn count(&self, reason: &'static str, n: u64) {
        self.shared
            .metrics
            .metrics_api_samples
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    fn round(&self, outcome: &'static str) {
        self.shared
            .metrics
            .metrics_api_rounds
            .get_or_create(&ReasonLabel { reason: outcome })
            .inc();
    }

    /// A failed round: counted every time, logged as a warning when the reason changes.
    fn fail(&mut self, reason: &'static str, error: &str) {
        self.round(reason);
        if self.last_failure != Some(reason) {
            tracing::warn!(
                reason,
                error,
                "metrics API list failed (is metrics-server installed?); sample dropped, history kept"
            );
        } else {
            tracing::debug!(reason, error, "metrics API list failed again");
        }
        self.last_failure = Some(reason);
    }

    /// One sampling round (leader only).
    async fn sample(&mut self) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &metrics_resource());
        let listed = tokio::time::timeout(self.cfg.timeout, api.list(&ListParams::default())).await;
        let list = match listed {
            Err(_) => {
                self.fail("timeout", "no answer within the timeout");
                return;
            }
            Ok(Err(e)) => {
                self.fail(list_failure(&e), &e.to_string());
                return;
            }
            Ok(Ok(l)) => l,
        };
        if self.last_failure.take().is_some() {
            tracing::info!("metrics API answers again");
        }
        let opted: std::collections::HashSet<String> = self
            .namespaces
            .state()
            .iter()
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let now = now_unix() as i64;
        let (samples, kills, dropped) =
            samples_from(&list.items, &self.pods, &|ns| opted.contains(ns), now);
        for (reason, n) in dropped {
            self.count(reason, n);
        }
        let stats = self.history.fold(now, &samples, &kills, &self.cfg.learn);
        self.count("accepted", stats.accepted);
        for (reason, n) in &stats.dropped {
            self.count(reason, *n);
        }
        self.round("ok");
        if stats.accepted > 0 || stats.new_ooms > 0 {
            self.dirty = true;
        }
        tracing::debug!(
            pods = samples.len(),
            accepted = stats.accepted,
            dropped = ?stats.dropped,
            workloads = self.history.len(),
            "metrics API sampled"
        );
        self.publish();
    }

    /// Write checkpoints if there is something new and it is time (or `force`).
    async fn checkpoint(&mut self, force: bool) {
        if !self.dirty {
            return;
        }
        if !force
            && self
                .last_checkpoint
                .is_some_and(|t| t.elapsed() < self.cfg.checkpoint_interval)
        {
            return;
        }
        let now = now_unix() as i64;
        let id = self.elector.identity().to_string();
        let shards = learn::encode_checkpoints(&self.history, &id, now, checkpoints::SHARD_BYTES);
        let empty = learn::encode_checkpoints(&History::default(), &id, now, usize::MAX)
            .pop()
            .unwrap_or_default();
        let outcome = match self.writer.write(&shards, &empty, &self.elector).await {
            Ok(bytes) => {
                self.dirty = false;
                self.last_checkpoint = Some(Instant::now());
                tracing::info!(
                    shards = shards.len(),
                    bytes,
                    workloads = self.history.len(),
                    "history checkpoint written"
                );
                "ok"
            }
            Err(e) => {
                tracing::warn!(error = %e, "history checkpoint not written; kept in memory");
                e.reason()
            }
        };
        self.shared
            .metrics
            .checkpoint_writes
            .get_or_create(&ReasonLabel { reason: outcome })
            .inc();
        if let Some(dir) = self.cfg.state_dir.clone() {
            let text = learn::encode_checkpoints(&self.history, &id, now, usize::MAX)
                .pop()
                .unwrap_or_default();
            let saved = tokio::task::spawn_blocking(move || save_local(&dir, &text))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(e) = saved {
                self.shared
                    .metrics
                    .reload_failures
                    .get_or_create(&crate::metrics::KindLabel { kind: "state_dir" })
                    .inc();
                tracing::warn!(error = %e, "local history copy not written");
            }
        }
    }

    /// Replace the history with the checkpoints' (followers).
    fn load_checkpoints(&mut self, cms: &[Arc<ConfigMap>]) -> History {
        let list: Vec<ConfigMap> = cms.iter().map(|c| (**c).clone()).collect();
        let (h, errors) = checkpoints::load(&list);
        for (name, e) in errors {
            let version = list
                .iter()
                .find(|c| c.metadata.name.as_deref() == Some(name.as_str()))
                .and_then(|c| c.metadata.resource_version.clone())
                .unwrap_or_default();
            // Each bad version is reported once, however often the shards are read.
            if !self.reported.insert((name.clone(), version)) {
                continue;
            }
            self.shared
                .metrics
                .checkpoint_errors
                .get_or_create(&ReasonLabel { reason: e.reason() })
                .inc();
            tracing::warn!(configmap = %name, error = %e, "history checkpoint ignored");
        }
        h
    }
}

/// Write the local copy atomically (temp file, rename).
pub fn save_local(dir: &std::path::Path, text: &str) -> Result<(), String> {
    let target = dir.join(LOCAL_COPY);
    let tmp = dir.join(format!(".{LOCAL_COPY}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(&tmp, text)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &target)
    };
    write().map_err(|e| format!("cannot write {}: {e}", target.display()))
}

/// The local copy in `dir`, if any.
pub fn load_local(dir: &std::path::Path) -> Result<Option<History>, String> {
    let path = dir.join(LOCAL_COPY);
    match std::fs::read_to_string(&path) {
        Ok(text) => learn::decode_checkpoint(&text)
            .map(|c| Some(learn::history_from_checkpoints([c])))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Run until `stop` turns true: follow checkpoints, compete for the Lease, sample while
/// leading. `synced` is notified once the checkpoints are loaded (start-up waits for it).
pub async fn run(
    client: Client,
    shared: Arc<Shared>,
    cfg: MetricsApiConfig,
    synced: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let (pods, namespaces) = reflect(&client);
    let elector = Elector::new(
        Api::namespaced(client.clone(), &cfg.namespace),
        checkpoints::LEASE_NAME,
        &cfg.identity,
        cfg.lease_duration,
    );
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), &cfg.namespace);
    let mut learner = Learner {
        shared,
        client,
        history: History::default(),
        pods,
        namespaces,
        elector,
        writer: Writer {
            api: cm_api.clone(),
            versions: Default::default(),
            calls: 0,
        },
        leading: false,
        dirty: false,
        last_checkpoint: None,
        reported: Default::default(),
        last_failure: None,
        cfg,
    };
    if let Some(dir) = &learner.cfg.state_dir {
        match load_local(dir) {
            Ok(Some(h)) => {
                tracing::info!(workloads = h.len(), "local history copy loaded");
                learner.history = h;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "local history copy ignored"),
        }
    }
    let (cms, cm_writer) = reflector::store::<ConfigMap>();
    let cm_stream = reflector(
        cm_writer,
        watcher(cm_api, watcher::Config::default().labels(CHECKPOINT_LABEL)),
    )
    .default_backoff();
    futures::pin_mut!(cm_stream);
    let mut initialised = false;
    let mut lease_tick = tokio::time::interval(learner.elector.retry_period());
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sample_tick = tokio::time::interval(learner.cfg.interval);
    sample_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if learner.elector.is_leader() {
                    learner.checkpoint(true).await;
                    learner.elector.release().await;
                }
                learner.shared.metrics.history_leader.set(0);
                return;
            }
            event = cm_stream.next() => {
                match event {
                    Some(Ok(watcher::Event::InitDone)) => {}
                    Some(Ok(watcher::Event::Init)) | Some(Ok(watcher::Event::InitApply(_))) => continue,
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "checkpoint watch error; retrying with backoff");
                        continue;
                    }
                    None => return,
                }
                let loaded = learner.load_checkpoints(&cms.state());
                if !initialised {
                    initialised = true;
                    learner.history.absorb(loaded);
                    tracing::info!(workloads = learner.history.len(), "history checkpoints loaded");
                    learner.publish();
                    synced.notify_one();
                } else if !learner.leading {
                    learner.history = loaded;
                    learner.publish();
                }
            }
            _ = lease_tick.tick(), if initialised => {
                let leads = learner.elector.step().await;
                if leads && !learner.leading {
                    // Continue from the newest checkpoints; keep their versions to replace.
                    let loaded = learner.load_checkpoints(&cms.state());
                    learner.history.absorb(loaded);
                    learner.writer.versions = cms
                        .state()
                        .iter()
                        .filter_map(|c| Some((c.metadata.name.clone()?, c.metadata.resource_version.clone()?)))
                        .collect();
                    learner.dirty = false;
                    learner.last_checkpoint = None;
                    sample_tick.reset_immediately();
                } else if !leads && learner.leading {
                    tracing::warn!("history lease lost; following checkpoints");
                }
                learner.leading = leads;
                learner.shared.metrics.history_leader.set(i64::from(leads));
            }
            _ = sample_tick.tick(), if initialised && learner.leading => {
                if !learner.elector.is_leader() {
                    continue;
                }
                learner.sample().await;
                learner.checkpoint(false).await;
            }
        }
    }
}
