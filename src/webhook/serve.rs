//! The HTTPS admission server, the plain health/metrics server, and the background
//! reloads of specs, history and TLS files (DESIGN §3, §10).

use crate::certs;
use crate::engine::constraints::ClusterSnapshot;
use crate::engine::hpa::HpaSnapshot;
use crate::engine::mesh::MeshSnapshot;
use crate::engine::pipeline::Snapshots;
use crate::engine::spec::SpecStore;
use crate::metrics::{DecisionLabels, KindLabel, Metrics, ReasonLabel, TaskLabel};
use crate::sources::history::prometheus::{self, PromConfig};
use crate::sources::history::{self, now_unix, store, UsageSnapshot};
use crate::webhook::wire::{self, Answer, Mode, Settings};
use anyhow::Context;
use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use axum_server::tls_rustls::RustlsConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::task::JoinHandle;

/// Request bodies above this are refused (HTTP 413).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub health_listen: SocketAddr,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub spec_dir: Option<PathBuf>,
    pub history: Option<PathBuf>,
    /// Where learned history is persisted (None: memory only).
    pub state_dir: Option<PathBuf>,
    /// Learn history from Prometheus in the background.
    pub prometheus: Option<PromConfig>,
    pub prometheus_refresh: Duration,
    /// Also read specs from ConfigMaps labelled `sidecar-sizer.io/spec=true`.
    pub spec_configmaps: Option<crate::sources::kube::KubeSource>,
    /// Also keep every namespace's LimitRanges and ResourceQuotas (`sources::cluster`).
    pub cluster_constraints: Option<crate::sources::kube::KubeSource>,
    /// Mesh scope: Services, ServiceEntries, Sidecars and the memory model (`sources::mesh`).
    pub mesh: Option<crate::sources::mesh::MeshConfig>,
    /// Learn history from the metrics API, checkpointed in the cluster (`sources::metrics_api`).
    pub metrics_api: Option<(
        crate::sources::kube::KubeSource,
        crate::sources::metrics_api::MetricsApiConfig,
    )>,
    /// Watch HorizontalPodAutoscalers (autoscaling/v2) for HpaShift findings (`sources::hpa`).
    pub hpa_aware: Option<crate::sources::kube::KubeSource>,
    /// How long start-up waits for the first lists (ConfigMap specs, cluster constraints)
    /// before turning ready anyway.
    pub spec_sync_timeout: Duration,
    /// Learned history older than this is treated as absent.
    pub history_max_age: Duration,
    pub settings: Settings,
    /// How often spec dir, history file and TLS files are checked for changes.
    pub reload_interval: Duration,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// After SIGTERM, readiness is off for this long before the listener stops accepting,
    /// so endpoints stop sending new reviews first.
    pub shutdown_delay: Duration,
    /// Require client certificates signed by this CA (the apiserver's).
    pub client_ca: Option<PathBuf>,
    pub limits: crate::webhook::limits::Limits,
}

/// State shared by the handlers and the background tasks.
pub struct Shared {
    pub settings: Settings,
    /// What admissions read: `--spec-dir` overlaid by ConfigMap specs.
    pub specs: ArcSwap<SpecStore>,
    pub dir_specs: ArcSwap<SpecStore>,
    pub cm_specs: ArcSwap<SpecStore>,
    /// What admissions read: the history file overlaid with fresh learned history.
    pub usage: ArcSwap<UsageSnapshot>,
    /// From `--history FILE`.
    pub file_usage: ArcSwap<UsageSnapshot>,
    /// From Prometheus or the persisted store.
    pub learned: ArcSwap<UsageSnapshot>,
    /// From the metrics API (`--metrics-api`); Prometheus wins where both have a workload.
    pub metrics_usage: ArcSwap<UsageSnapshot>,
    /// LimitRanges and ResourceQuotas (`--cluster-constraints`), from `sources::cluster`.
    pub cluster: ArcSwap<ClusterSnapshot>,
    /// Mesh scope and memory model (`--mesh-scope`), from `sources::mesh`.
    pub mesh: ArcSwap<MeshSnapshot>,
    /// HPAs (`--hpa-aware`), from `sources::hpa`; `None` when off.
    pub hpas: Option<ArcSwap<HpaSnapshot>>,
    pub metrics: Metrics,
    pub ready: AtomicBool,
    /// False while the reload task (spec dir, history file, TLS files) is down after a
    /// panic, until it is restarted: `/readyz` answers 503 meanwhile.
    pub reloader_alive: AtomicBool,
    /// Review slots (`--max-inflight`): one is taken after the body is read, for sizing.
    pub inflight: tokio::sync::Semaphore,
    max_inflight: usize,
    /// Fault injection for tests: the next reload pass panics.
    reload_panic: AtomicBool,
    lag: Arc<crate::webhook::limits::Lag>,
    max_budget: Duration,
    history_max_age: Duration,
    /// Serializes `recombine`; holds whether learned history was stale last time.
    combine: Mutex<Option<bool>>,
}

impl Shared {
    /// Rebuild `specs` from the spec dir and the ConfigMaps (a ConfigMap spec wins over a
    /// file for the same workload).
    pub fn recombine_specs(&self) {
        let _guard = self.combine.lock().unwrap_or_else(|p| p.into_inner());
        let dir = self.dir_specs.load();
        let cm = self.cm_specs.load();
        let combined = if cm.is_empty() && cm.errors.is_empty() {
            (**dir).clone()
        } else {
            dir.overlaid(&cm)
        };
        self.metrics.spec_errors.set(combined.errors.len() as i64);
        self.metrics.specs_loaded.set(combined.len() as i64);
        self.specs.store(Arc::new(combined));
    }

    /// Rebuild `usage` from the file and the learned history. With `force == false` only
    /// when the learned history crossed the max age since the last call.
    pub fn recombine(&self, force: bool) {
        let mut last = self.combine.lock().unwrap_or_else(|p| p.into_inner());
        let learned = self.learned.load();
        let age = learned.age_seconds(now_unix());
        let stale = age.is_some_and(|a| a > self.history_max_age.as_secs());
        if let Some(a) = age {
            self.metrics.history_age_seconds.set(a as f64);
        }
        self.metrics.history_stale.set(i64::from(stale));
        if !force && *last == Some(stale) {
            return;
        }
        if stale && *last != Some(true) {
            tracing::warn!(
                age_seconds = age.unwrap_or(0),
                max_age_seconds = self.history_max_age.as_secs(),
                source = %learned.meta.source,
                "learned history is stale and no longer used; sizing falls back to specs and defaults"
            );
        } else if !stale && *last == Some(true) {
            tracing::info!(source = %learned.meta.source, "learned history is fresh again");
        }
        *last = Some(stale);
        let file = self.file_usage.load();
        let mut combined = (**file).clone();
        let from_api = self.metrics_usage.load();
        let api_stale = from_api
            .age_seconds(now_unix())
            .is_some_and(|a| a > self.history_max_age.as_secs());
        let mut sources = Vec::new();
        if !file.meta.source.is_empty() {
            sources.push(file.meta.source.clone());
        }
        if !api_stale && !from_api.is_empty() {
            combined = combined.overlaid(&from_api);
            sources.push(from_api.meta.source.clone());
        }
        if !stale && !learned.is_empty() {
            if from_api.is_empty() {
                combined = combined.overlaid(&learned);
            } else {
                // Both learned: Prometheus wins where it has a workload, and says so.
                let mut prom = (**learned).clone();
                let label = learned
                    .meta
                    .source
                    .split(' ')
                    .next()
                    .unwrap_or("prometheus");
                for (ns, wl, u) in learned.iter_sorted() {
                    let mut u = u.clone();
                    u.source.get_or_insert_with(|| label.to_string());
                    prom.insert(ns, wl, u);
                }
                combined = combined.overlaid(&prom);
                sources.push(learned.meta.source.clone());
            }
        }
        let api_used = !api_stale && !from_api.is_empty();
        if api_used && sources.len() > 1 {
            combined.meta.source = sources.join(" + ");
        }
        self.metrics.history_workloads.set(combined.len() as i64);
        self.usage.store(Arc::new(combined));
    }

    /// Make the next reload pass panic (tests of the reload task's recovery).
    pub fn inject_reload_panic(&self) {
        self.reload_panic.store(true, Ordering::SeqCst);
    }

    /// One review: read the body within the budget, then size it or shed it, answer.
    ///
    /// Shedding (answer allowed, no patch, a warning, `outcome="shed"`), checked in this
    /// order once the body is in, with no lock: the runtime lag (an atomic the lag monitor
    /// keeps) above 1/8 of the budget; no free review slot (`--max-inflight`); the budget
    /// already spent. A slot is taken only after the body is read, so slow clients cannot
    /// hold them.
    async fn handle(&self, req: Request, path_mode: Mode) -> Response {
        // Count time spent queued before this handler ran against the budget.
        let start = req
            .extensions()
            .get::<crate::webhook::limits::Arrival>()
            .map_or_else(Instant::now, |a| a.0);
        let budget = crate::webhook::limits::budget(req.uri().query(), self.max_budget);
        let body = match tokio::time::timeout(
            budget.saturating_sub(start.elapsed()),
            axum::body::to_bytes(req.into_body(), MAX_BODY_BYTES),
        )
        .await
        {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                self.metrics.bad_requests.inc();
                let too_big = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                return if too_big {
                    (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("request body over {MAX_BODY_BYTES} bytes\n"),
                    )
                        .into_response()
                } else {
                    (StatusCode::BAD_REQUEST, "cannot read the request body\n").into_response()
                };
            }
            Err(_) => {
                self.metrics.bad_requests.inc();
                return (
                    StatusCode::REQUEST_TIMEOUT,
                    format!("request body not received within {budget:?}\n"),
                )
                    .into_response();
            }
        };
        let lag = self.lag.get();
        let permit = self.inflight.try_acquire();
        let why = if lag > budget / 8 {
            Some(format!(
                "overloaded (runtime lag {} ms, over 1/8 of the {} ms budget)",
                lag.as_millis(),
                budget.as_millis()
            ))
        } else if permit.is_err() {
            Some(format!(
                "overloaded (all {} review slots busy)",
                self.max_inflight
            ))
        } else if start.elapsed() >= budget {
            Some(format!(
                "out of time ({budget:?} budget spent reading the request)"
            ))
        } else {
            None
        };
        let result = match &why {
            Some(why) => wire::shed(&body, path_mode, why),
            None => {
                let specs = self.specs.load();
                let usage = self.usage.load();
                let cluster = self.cluster.load();
                let mesh = self.mesh.load();
                let hpas = self.hpas.as_ref().map(ArcSwap::load);
                let snaps = Snapshots {
                    specs: &specs,
                    usage: &usage,
                    cluster: &cluster,
                    mesh: Some(&mesh),
                    hpas: hpas.as_deref().map(|h| &**h),
                };
                wire::review(&body, path_mode, &self.settings, &snaps)
            }
        };
        drop(permit);
        let elapsed = start.elapsed();
        self.metrics
            .admission_duration
            .observe(elapsed.as_secs_f64());
        match result {
            Ok(answer) => {
                self.record(&answer, elapsed);
                ([(header::CONTENT_TYPE, "application/json")], answer.body).into_response()
            }
            Err(bad) => {
                self.metrics.bad_requests.inc();
                tracing::warn!(reason = %bad, bytes = body.len(), "bad request");
                (StatusCode::BAD_REQUEST, format!("{bad}\n")).into_response()
            }
        }
    }

    fn record(&self, a: &Answer, elapsed: Duration) {
        self.metrics
            .decisions
            .get_or_create(&DecisionLabels {
                mode: a.mode.as_str(),
                source: a.source.map_or("none", |s| s.as_str()),
                outcome: a.outcome.as_str(),
            })
            .inc();
        if let Some(reason) = a.not_sized {
            self.metrics
                .not_sized
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        for k in &a.finding_kinds {
            self.metrics
                .warnings
                .get_or_create(&KindLabel { kind: k.as_str() })
                .inc();
        }
        let (ns, wl, kind) = a.workload.as_ref().map_or(("", "", ""), |w| {
            (w.namespace.as_str(), w.name.as_str(), w.kind.as_str())
        });
        let show = |r: Option<crate::engine::sizing::Resources>| {
            r.map(|r| format!("{}/{}", r.cpu, r.memory))
                .unwrap_or_default()
        };
        tracing::info!(
            uid = %a.uid,
            namespace = ns,
            workload = wl,
            kind,
            mode = a.mode.as_str(),
            source = a.source.map_or("", |s| s.as_str()),
            outcome = a.outcome.as_str(),
            requests = %show(a.requests),
            limits = %show(a.limits),
            findings = ?a.finding_kinds.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
            detail = a.detail.as_deref().unwrap_or(""),
            not_sized = a.not_sized.unwrap_or(""),
            duration_us = elapsed.as_micros() as u64,
            "admission"
        );
    }
}

async fn mutate(State(s): State<Arc<Shared>>, req: Request) -> Response {
    s.handle(req, Mode::Enforce).await
}

async fn dry_run(State(s): State<Arc<Shared>>, req: Request) -> Response {
    s.handle(req, Mode::DryRun).await
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if s.ready.load(Ordering::SeqCst) && s.reloader_alive.load(Ordering::SeqCst) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    s.metrics
        .log_lines_dropped
        .inner()
        .store(crate::logging::dropped_lines(), Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// The TLS router: `POST /mutate`, `POST /dry-run`.
pub fn admission_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/dry-run", post(dry_run))
        .layer(crate::webhook::limits::ArrivalLayer)
        .with_state(shared)
}

/// The plain router: `/healthz`, `/readyz`, `/metrics`.
pub fn health_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// File change detection by size + mtime + (for TLS) content.
fn stamp(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

struct Reloader {
    shared: Arc<Shared>,
    spec_dir: Option<PathBuf>,
    history: Option<PathBuf>,
    history_stamp: Option<(SystemTime, u64)>,
    tls_cert: PathBuf,
    tls_key: PathBuf,
    client_ca: Option<PathBuf>,
    tls_fingerprint: Vec<u8>,
    tls: RustlsConfig,
}

impl Reloader {
    /// One periodic pass: spec dir, history file, TLS files, history age.
    fn pass(&mut self) {
        if self.shared.reload_panic.swap(false, Ordering::SeqCst) {
            panic!("injected reload panic");
        }
        self.reload_specs();
        let _ = self.reload_history();
        self.reload_tls();
        self.shared.recombine(false);
    }

    fn reload_specs(&mut self) {
        let Some(dir) = &self.spec_dir else { return };
        let prev = self.shared.dir_specs.load_full();
        let next = SpecStore::load_dir(dir, &prev);
        for e in &next.errors {
            if !prev.errors.contains(e) {
                tracing::warn!(path = %e.path.display(), error = %e.message, "spec error");
            }
        }
        self.shared.dir_specs.store(Arc::new(next));
        self.shared.recombine_specs();
    }

    /// Reload the history file when it changed. Returns an error only at start-up use.
    fn reload_history(&mut self) -> Result<(), String> {
        let Some(path) = &self.history else {
            return Ok(());
        };
        let st = stamp(path);
        if st.is_some() && st == self.history_stamp {
            return Ok(());
        }
        match history::load_history_file(path) {
            Ok((snap, errors)) => {
                for e in &errors {
                    tracing::warn!(path = %path.display(), line = e.line, error = %e.message, "history row ignored");
                }
                tracing::info!(path = %path.display(), workloads = snap.len(), "history file loaded");
                self.shared.file_usage.store(Arc::new(snap));
                self.shared.recombine(true);
                self.history_stamp = st;
                Ok(())
            }
            Err(e) => {
                self.shared
                    .metrics
                    .reload_failures
                    .get_or_create(&KindLabel { kind: "history" })
                    .inc();
                tracing::warn!(error = %e, "history reload failed; previous history kept");
                Err(e)
            }
        }
    }

    fn reload_tls(&mut self) {
        match certs::load_server_config(&self.tls_cert, &self.tls_key, self.client_ca.as_deref()) {
            Ok((config, fp)) => {
                if fp != self.tls_fingerprint {
                    self.tls.reload_from_config(config);
                    self.tls_fingerprint = fp;
                    self.shared.metrics.tls_reloads.inc();
                    tracing::info!(cert = %self.tls_cert.display(), "serving certificate reloaded");
                }
            }
            Err(e) => {
                // Mid-rotation the cert and key may briefly disagree: keep serving the old pair.
                self.shared
                    .metrics
                    .reload_failures
                    .get_or_create(&KindLabel { kind: "tls" })
                    .inc();
                tracing::warn!(
                    error = format!("{e:#}"),
                    "TLS reload failed; previous certificate kept"
                );
            }
        }
    }
}

/// A started server: its bound addresses and the means to stop it.
pub struct Running {
    pub tls_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub shared: Arc<Shared>,
    handle: axum_server::Handle<SocketAddr>,
    health_stop: tokio::sync::watch::Sender<bool>,
    tls_task: JoinHandle<std::io::Result<()>>,
    health_task: JoinHandle<std::io::Result<()>>,
    reload_task: JoinHandle<()>,
    delay: Duration,
    refresh_task: Option<JoinHandle<()>>,
    cm_task: Option<JoinHandle<()>>,
    cluster_task: Option<JoinHandle<()>>,
    mesh_task: Option<JoinHandle<()>>,
    metrics_api_task: Option<JoinHandle<()>>,
    metrics_api_stop: tokio::sync::watch::Sender<bool>,
    hpa_task: Option<JoinHandle<()>>,
    lag_task: JoinHandle<()>,
    grace: Duration,
}

impl Running {
    /// Stop accepting, let in-flight requests finish (bounded by the grace period), stop.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shared.ready.store(false, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.handle.graceful_shutdown(Some(self.grace));
        let tls = self.tls_task.await;
        let _ = self.health_stop.send(true);
        let health = self.health_task.await;
        // The metrics-API learner writes a last checkpoint and releases its Lease.
        let _ = self.metrics_api_stop.send(true);
        if let Some(t) = self.metrics_api_task {
            let _ = tokio::time::timeout(self.grace, t).await;
        }
        self.reload_task.abort();
        for t in [
            &self.refresh_task,
            &self.cm_task,
            &self.cluster_task,
            &self.mesh_task,
            &self.hpa_task,
        ]
        .into_iter()
        .flatten()
        {
            t.abort();
        }
        self.lag_task.abort();
        tls.context("admission server task")?
            .context("admission server")?;
        health
            .context("health server task")?
            .context("health server")?;
        Ok(())
    }
}

/// Load everything, bind both ports and start serving. Config errors fail here, before
/// anything listens.
pub async fn start(config: ServeConfig) -> anyhow::Result<Running> {
    // reqwest (Prometheus) and rustls use the ring provider process-wide.
    let _ = rustls::crypto::ring::default_provider().install_default();
    for (flag, every) in [
        ("--reload-interval", Some(config.reload_interval)),
        (
            "--prometheus-refresh",
            config
                .prometheus
                .as_ref()
                .map(|_| config.prometheus_refresh),
        ),
    ] {
        if every.is_some_and(|d| d < crate::cli::MIN_INTERVAL) {
            anyhow::bail!(
                "{flag} {every:?}: shorter than the minimum of {:?}",
                crate::cli::MIN_INTERVAL
            );
        }
    }
    config
        .settings
        .policy
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid policy flags: {e}"))?;
    let (tls_config, fingerprint) = certs::load_server_config(
        &config.tls_cert,
        &config.tls_key,
        config.client_ca.as_deref(),
    )?;
    let tls = RustlsConfig::from_config(tls_config);
    if let Some(dir) = &config.spec_dir {
        if !dir.is_dir() {
            anyhow::bail!("--spec-dir {}: not a directory", dir.display());
        }
    }
    let shared = Arc::new(Shared {
        settings: config.settings.clone(),
        specs: ArcSwap::from_pointee(SpecStore::default()),
        dir_specs: ArcSwap::from_pointee(SpecStore::default()),
        cm_specs: ArcSwap::from_pointee(SpecStore::default()),
        usage: ArcSwap::from_pointee(UsageSnapshot::default()),
        file_usage: ArcSwap::from_pointee(UsageSnapshot::default()),
        learned: ArcSwap::from_pointee(UsageSnapshot::default()),
        metrics_usage: ArcSwap::from_pointee(UsageSnapshot::default()),
        cluster: ArcSwap::from_pointee(ClusterSnapshot::default()),
        mesh: ArcSwap::from_pointee(MeshSnapshot::default()),
        hpas: config
            .hpa_aware
            .as_ref()
            .map(|_| ArcSwap::from_pointee(HpaSnapshot::default())),
        metrics: Metrics::new(),
        ready: AtomicBool::new(false),
        reloader_alive: AtomicBool::new(true),
        reload_panic: AtomicBool::new(false),
        inflight: tokio::sync::Semaphore::new(config.limits.max_inflight.max(1)),
        max_inflight: config.limits.max_inflight.max(1),
        lag: Arc::new(crate::webhook::limits::Lag::default()),
        max_budget: config.limits.max_budget,
        history_max_age: config.history_max_age,
        combine: Mutex::new(None),
    });
    // Warm start: the last learned history, before anything listens.
    if let Some(dir) = &config.state_dir {
        match store::load(dir) {
            Ok(Some(snap)) => {
                tracing::info!(
                    path = %store::path_in(dir).display(),
                    workloads = snap.len(),
                    source = %snap.meta.source,
                    fetched_at = snap.meta.fetched_at.unwrap_or(0),
                    "history store loaded"
                );
                shared.learned.store(Arc::new(snap));
            }
            Ok(None) => {}
            Err(e) => {
                shared
                    .metrics
                    .reload_failures
                    .get_or_create(&KindLabel { kind: "state_dir" })
                    .inc();
                tracing::warn!(error = %e, "history store ignored");
            }
        }
    }
    let mut reloader = Reloader {
        shared: shared.clone(),
        spec_dir: config.spec_dir.clone(),
        history: config.history.clone(),
        history_stamp: None,
        tls_cert: config.tls_cert.clone(),
        tls_key: config.tls_key.clone(),
        client_ca: config.client_ca.clone(),
        tls_fingerprint: fingerprint,
        tls: tls.clone(),
    };
    reloader.reload_specs();
    reloader
        .reload_history()
        .map_err(|e| anyhow::anyhow!("--history: {e}"))?;
    shared.recombine(true);

    let tls_listener = std::net::TcpListener::bind(config.listen)
        .with_context(|| format!("binding --listen {}", config.listen))?;
    tls_listener.set_nonblocking(true)?;
    let tls_addr = tls_listener.local_addr()?;
    let health_listener = tokio::net::TcpListener::bind(config.health_listen)
        .await
        .with_context(|| format!("binding --health-listen {}", config.health_listen))?;
    let health_addr = health_listener.local_addr()?;

    let handle = axum_server::Handle::new();
    let lim = &config.limits;
    let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(tls)
        .handshake_timeout(lim.handshake_timeout)
        .acceptor(crate::webhook::limits::LimitAcceptor::new(
            lim.max_connections,
            shared.metrics.connections_refused.clone(),
        ));
    let mut server = axum_server::from_tcp(tls_listener)?
        .acceptor(acceptor)
        .handle(handle.clone());
    let http = server.http_builder();
    http.http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(lim.header_read_timeout)
        .keep_alive(true);
    http.http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(lim.max_streams)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let app = admission_router(shared.clone());
    let tls_task = tokio::spawn(async move { server.serve(app.into_make_service()).await });

    let (health_stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let health_app = health_router(shared.clone());
    let health_task = tokio::spawn(async move {
        axum::serve(health_listener, health_app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|v| *v).await;
            })
            .await
    });

    let interval = config.reload_interval;
    let reloader = Arc::new(Mutex::new(reloader));
    let reload_task = supervise(shared.clone(), RELOAD_TASK, move || {
        reload_loop(reloader.clone(), interval)
    });

    // Cluster sources share one client; start-up waits for their first lists together,
    // up to --spec-sync-timeout, then turns ready anyway.
    let mut kube = KubeClients::default();
    let mut waits: Vec<(Arc<tokio::sync::Notify>, &'static str)> = Vec::new();
    let cm_task = match &config.spec_configmaps {
        Some(source) => {
            let sh = shared.clone();
            Some(
                start_source(
                    &mut kube,
                    &mut waits,
                    &shared,
                    source,
                    ("--spec-configmaps", "configmaps"),
                    "configmap specs not listed yet; serving with the spec dir only until they are",
                    move |client, synced| {
                        crate::sources::configmaps::watch(client, sh.clone(), synced)
                    },
                )
                .await?,
            )
        }
        None => None,
    };
    let cluster_task = match &config.cluster_constraints {
        Some(source) => {
            let sh = shared.clone();
            Some(
                start_source(
                    &mut kube,
                    &mut waits,
                    &shared,
                    source,
                    ("--cluster-constraints", "cluster"),
                    "limitranges/resourcequotas not listed yet; sizing without cluster constraints until they are",
                    move |client, synced| crate::sources::cluster::watch(client, sh.clone(), synced),
                )
                .await?,
            )
        }
        None => None,
    };
    let mesh_task = match &config.mesh {
        Some(mesh) => {
            let (sh, cfg) = (shared.clone(), mesh.clone());
            Some(
                start_source(
                    &mut kube,
                    &mut waits,
                    &shared,
                    &mesh.kube,
                    ("--mesh-scope", "mesh"),
                    "services/sidecars/serviceentries not listed yet; sizing without mesh scope until they are",
                    move |client, synced| {
                        crate::sources::mesh::watch(client, sh.clone(), cfg.clone(), synced)
                    },
                )
                .await?,
            )
        }
        None => None,
    };
    let (metrics_api_stop, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_api_task = match &config.metrics_api {
        Some((source, cfg)) => {
            let (sh, cfg) = (shared.clone(), cfg.clone());
            Some(
                start_source(
                    &mut kube,
                    &mut waits,
                    &shared,
                    source,
                    ("--metrics-api", "metrics-api"),
                    "history checkpoints not loaded yet; serving without metrics-API history until they are",
                    move |client, synced| {
                        crate::sources::metrics_api::run(
                            client,
                            sh.clone(),
                            cfg.clone(),
                            synced,
                            stop_rx.clone(),
                        )
                    },
                )
                .await?,
            )
        }
        None => None,
    };
    let hpa_task = match &config.hpa_aware {
        Some(source) => {
            let sh = shared.clone();
            Some(
                start_source(
                    &mut kube,
                    &mut waits,
                    &shared,
                    source,
                    ("--hpa-aware", "hpa"),
                    "horizontalpodautoscalers not listed yet; no HpaShift findings until they are",
                    move |client, synced| crate::sources::hpa::watch(client, sh.clone(), synced),
                )
                .await?,
            )
        }
        None => None,
    };
    let deadline = tokio::time::Instant::now() + config.spec_sync_timeout;
    for (synced, warning) in waits {
        if tokio::time::timeout_at(deadline, synced.notified())
            .await
            .is_err()
        {
            tracing::warn!(
                timeout_ms = config.spec_sync_timeout.as_millis() as u64,
                "{warning}"
            );
        }
    }
    let (lag, gauge) = (
        shared.lag.clone(),
        shared.metrics.runtime_lag_seconds.clone(),
    );
    let lag_task = supervise(shared.clone(), "runtime-lag", move || {
        lag.clone().monitor(gauge.clone())
    });
    let refresh_task = config.prometheus.clone().map(|cfg| {
        let (sh, every, dir) = (
            shared.clone(),
            config.prometheus_refresh,
            config.state_dir.clone(),
        );
        supervise(shared.clone(), "prometheus-refresh", move || {
            refresh_loop(sh.clone(), cfg.clone(), every, dir.clone())
        })
    });

    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!(
        listen = %tls_addr,
        health_listen = %health_addr,
        specs = shared.specs.load().len(),
        history_workloads = shared.usage.load().len(),
        dry_run_everywhere = config.settings.dry_run_everywhere,
        "sidecar-sizer serving"
    );
    Ok(Running {
        tls_addr,
        health_addr,
        shared,
        handle,
        health_stop,
        tls_task,
        health_task,
        reload_task,
        refresh_task,
        cm_task,
        cluster_task,
        mesh_task,
        metrics_api_task,
        metrics_api_stop,
        hpa_task,
        lag_task,
        delay: config.shutdown_delay,
        grace: config.shutdown_grace,
    })
}

/// One Kubernetes client per distinct [`KubeSource`](crate::sources::kube::KubeSource),
/// built on first use.
#[derive(Default)]
struct KubeClients(Vec<(crate::sources::kube::KubeSource, kube::Client)>);

impl KubeClients {
    async fn get(
        &mut self,
        source: &crate::sources::kube::KubeSource,
    ) -> anyhow::Result<kube::Client> {
        if let Some((_, c)) = self.0.iter().find(|(s, _)| s == source) {
            return Ok(c.clone());
        }
        let client = crate::sources::kube::client(source).await?;
        self.0.push((source.clone(), client.clone()));
        Ok(client)
    }
}

/// Start one cluster source under [`supervise`] (restarted if it panics): its client from
/// the shared cache, a `synced` notifier whose first notification start-up waits for (with
/// `pending` logged if it does not come in time). `names` is (the flag, the task's metric
/// label).
async fn start_source<F, Fut>(
    kube: &mut KubeClients,
    waits: &mut Vec<(Arc<tokio::sync::Notify>, &'static str)>,
    shared: &Arc<Shared>,
    source: &crate::sources::kube::KubeSource,
    names: (&str, &'static str),
    pending: &'static str,
    run: F,
) -> anyhow::Result<JoinHandle<()>>
where
    F: Fn(kube::Client, Arc<tokio::sync::Notify>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let client = kube
        .get(source)
        .await
        .with_context(|| format!("{}: cannot build a Kubernetes client", names.0))?;
    let synced = Arc::new(tokio::sync::Notify::new());
    let sy = synced.clone();
    let task = supervise(shared.clone(), names.1, move || {
        run(client.clone(), sy.clone())
    });
    waits.push((synced, pending));
    Ok(task)
}

/// Name of the reload task (`task_restarts{task}`); `/readyz` follows its health.
pub const RELOAD_TASK: &str = "reload";

/// How long a panicked background task stays down before it is started again.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Aborts the task when dropped (so aborting a supervisor stops its child too).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run the task `make` builds; when it panics, count it in `task_restarts{task}`, log
/// it, wait [`RESTART_DELAY`] and start a new one. For the reload task `/readyz` is 503
/// while it is down. A task that returns is not restarted.
fn supervise<F, Fut>(shared: Arc<Shared>, task: &'static str, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let mut child = AbortOnDrop(tokio::spawn(make()));
            match (&mut child.0).await {
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    if task == RELOAD_TASK {
                        shared.reloader_alive.store(false, Ordering::SeqCst);
                    }
                    shared
                        .metrics
                        .task_restarts
                        .get_or_create(&TaskLabel { task })
                        .inc();
                    tracing::error!(
                        task,
                        panic = message,
                        restart_in_ms = RESTART_DELAY.as_millis() as u64,
                        "background task panicked; restarting it"
                    );
                    tokio::time::sleep(RESTART_DELAY).await;
                    if task == RELOAD_TASK {
                        shared.reloader_alive.store(true, Ordering::SeqCst);
                    }
                }
                // Returned on its own, or cancelled at shutdown.
                _ => return,
            }
        }
    })
}

/// Every `interval`: one reload pass, on the blocking pool (disk IO, parsing). A panic in
/// the pass ends this loop with that panic, for [`supervise`] to restart it; the
/// reloader's state survives in the mutex.
async fn reload_loop(reloader: Arc<Mutex<Reloader>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let r = reloader.clone();
        let pass = tokio::task::spawn_blocking(move || {
            r.lock().unwrap_or_else(|p| p.into_inner()).pass();
        });
        match pass.await {
            Ok(()) => {}
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => return,
        }
    }
}

/// One Prometheus refresh: fetch, persist, swap in. On failure the previous snapshot stays.
pub async fn refresh_once(
    shared: &Arc<Shared>,
    client: &reqwest::Client,
    cfg: &PromConfig,
    state_dir: Option<&std::path::Path>,
) -> Result<(), prometheus::FetchError> {
    let start = Instant::now();
    let result = prometheus::fetch(client, cfg, now_unix()).await;
    let m = &shared.metrics;
    m.history_refresh_duration_seconds
        .set(start.elapsed().as_secs_f64());
    let fetched = match result {
        Ok(f) => f,
        Err(e) => {
            m.history_refreshes
                .get_or_create(&KindLabel { kind: e.reason() })
                .inc();
            tracing::warn!(
                reason = e.reason(),
                error = %e,
                "history refresh failed; previous history kept"
            );
            return Err(e);
        }
    };
    m.history_refreshes
        .get_or_create(&KindLabel { kind: "ok" })
        .inc();
    m.history_series.set(fetched.series as i64);
    m.history_last_refresh_timestamp_seconds
        .set(fetched.snapshot.meta.fetched_at.unwrap_or(0) as f64);
    let snap = Arc::new(fetched.snapshot);
    if let Some(dir) = state_dir {
        let (dir, to_save) = (dir.to_path_buf(), snap.clone());
        let saved = tokio::task::spawn_blocking(move || store::save(&dir, &to_save))
            .await
            .unwrap_or_else(|e| Err(format!("store task failed: {e}")));
        if let Err(e) = saved {
            m.reload_failures
                .get_or_create(&KindLabel { kind: "state_dir" })
                .inc();
            tracing::warn!(error = %e, "history not persisted; kept in memory");
        }
    }
    tracing::info!(
        workloads = snap.len(),
        series = fetched.series,
        queries = fetched.queries,
        duration_ms = start.elapsed().as_millis() as u64,
        "history refreshed from prometheus"
    );
    shared.learned.store(snap);
    // Recombining copies the whole snapshot: off the async workers.
    let sh = shared.clone();
    if let Err(e) = tokio::task::spawn_blocking(move || sh.recombine(true)).await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    Ok(())
}

async fn refresh_loop(
    shared: Arc<Shared>,
    cfg: PromConfig,
    interval: Duration,
    state_dir: Option<PathBuf>,
) {
    let client = match prometheus::client(&cfg) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "history refresh disabled");
            return;
        }
    };
    loop {
        let _ = refresh_once(&shared, &client, &cfg, state_dir.as_deref()).await;
        tokio::time::sleep(interval).await;
    }
}

/// Serve until SIGTERM or Ctrl-C, then drain and exit.
pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let running = start(config).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: readiness off, draining in-flight requests");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
