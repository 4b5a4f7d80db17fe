//! Prometheus metrics (prometheus-client), served on the plain port at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub mode: &'static str,
    pub source: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

pub struct Metrics {
    registry: Registry,
    /// Pods not skipped but not sized, by reason (`pipeline::NotSized::metric_label`).
    pub not_sized: Family<ReasonLabel, Counter>,
    pub admission_duration: Histogram,
    pub decisions: Family<DecisionLabels, Counter>,
    pub warnings: Family<KindLabel, Counter>,
    pub bad_requests: Counter,
    pub spec_errors: Gauge,
    pub specs_loaded: Gauge,
    pub history_workloads: Gauge,
    pub history_age_seconds: Gauge<f64, AtomicU64>,
    pub tls_reloads: Counter,
    pub connections_refused: Counter,
    pub runtime_lag_seconds: Gauge<f64, AtomicU64>,
    /// Log lines dropped because stderr could not keep up (set from `logging` at scrape).
    pub log_lines_dropped: Counter,
    /// Background tasks restarted after a panic, by task.
    pub task_restarts: Family<TaskLabel, Counter>,
    pub reload_failures: Family<KindLabel, Counter>,
    pub history_stale: Gauge,
    pub history_refreshes: Family<KindLabel, Counter>,
    pub history_series: Gauge,
    pub history_last_refresh_timestamp_seconds: Gauge<f64, AtomicU64>,
    pub history_refresh_duration_seconds: Gauge<f64, AtomicU64>,
    pub mesh_services: Gauge,
    pub mesh_sidecars: Gauge,
    pub mesh_malformed_sidecars: Gauge,
    pub mesh_istio_crds: Gauge,
    pub mesh_model_base_bytes: Gauge<f64, AtomicU64>,
    pub mesh_model_per_service_bytes: Gauge<f64, AtomicU64>,
    pub mesh_model_workloads: Gauge,
    pub mesh_model_calibrated: Gauge,
    pub mesh_model_r_squared: Gauge<f64, AtomicU64>,
    /// `--metrics-api`: PodMetrics samples by outcome (accepted, or the drop reason).
    pub metrics_api_samples: Family<ReasonLabel, Counter>,
    /// `--metrics-api`: sampling rounds by outcome (ok, absent, unavailable, timeout, garbage, error).
    pub metrics_api_rounds: Family<ReasonLabel, Counter>,
    /// Checkpoint ConfigMap writes by outcome; checkpoint shards ignored on load by reason.
    pub checkpoint_writes: Family<ReasonLabel, Counter>,
    pub checkpoint_errors: Family<ReasonLabel, Counter>,
    /// 1 while this replica holds the history Lease (samples and writes checkpoints).
    pub history_leader: Gauge,
    /// Workloads in the history learned from the metrics API.
    pub metrics_api_workloads: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sidecar_sizer");
        // 50µs … ~1.6s
        let admission_duration = Histogram::new(exponential_buckets(50e-6, 2.0, 16));
        registry.register(
            "admission_duration_seconds",
            "Time to answer one AdmissionReview, from the start of reading its body to the encoded response",
            admission_duration.clone(),
        );
        let decisions = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "decisions",
            "Admission reviews answered, by mode, decision source and outcome",
            decisions.clone(),
        );
        let not_sized = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "not_sized",
            "Pods left as they were (allowed, no patch, a warning), by reason: identity, duplicate-proxy, bad-annotation, explicit-conflict, invalid-patch, limitrange, resourcequota, pod-resources",
            not_sized.clone(),
        );
        let warnings = Family::<KindLabel, Counter>::default();
        registry.register(
            "warnings",
            "Findings reported on admissions, by kind",
            warnings.clone(),
        );
        let bad_requests = Counter::default();
        registry.register(
            "bad_requests",
            "Requests rejected: 400 (not an AdmissionReview v1), 413 (body over 3 MiB), 408 (body too slow)",
            bad_requests.clone(),
        );
        let spec_errors = Gauge::default();
        registry.register(
            "spec_errors",
            "Spec files whose current version is invalid",
            spec_errors.clone(),
        );
        let specs_loaded = Gauge::default();
        registry.register(
            "specs_loaded",
            "Workload specs in force",
            specs_loaded.clone(),
        );
        let history_workloads = Gauge::default();
        registry.register(
            "history_workloads",
            "Workloads with usage history",
            history_workloads.clone(),
        );
        let history_age_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "history_age_seconds",
            "Age of the learned (Prometheus / store) history, in seconds",
            history_age_seconds.clone(),
        );
        let tls_reloads = Counter::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads after the files changed",
            tls_reloads.clone(),
        );
        let reload_failures = Family::<KindLabel, Counter>::default();
        registry.register(
            "reload_failures",
            "Background reloads that failed and kept the previous state, by what was reloaded",
            reload_failures.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at accept because --max-connections were open",
            connections_refused.clone(),
        );
        let runtime_lag_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "runtime_lag_seconds",
            "How late the async runtime runs a 5 ms timer (queueing); reviews are shed while it is above 1/8 of their budget",
            runtime_lag_seconds.clone(),
        );
        let log_lines_dropped = Counter::default();
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because the log buffer (--log-buffer-lines) was full: stderr did not keep up",
            log_lines_dropped.clone(),
        );
        let task_restarts = Family::<TaskLabel, Counter>::default();
        registry.register(
            "task_restarts",
            "Background tasks restarted after a panic, by task (reload, prometheus-refresh, configmaps, cluster, mesh, metrics-api, hpa, runtime-lag)",
            task_restarts.clone(),
        );
        let history_stale = Gauge::default();
        registry.register(
            "history_stale",
            "1 when the learned history is older than --history-max-age and not used",
            history_stale.clone(),
        );
        let history_refreshes = Family::<KindLabel, Counter>::default();
        registry.register(
            "history_refreshes",
            "Prometheus history refreshes, by outcome (ok or the failure reason)",
            history_refreshes.clone(),
        );
        let history_series = Gauge::default();
        registry.register(
            "history_series",
            "(namespace, pod, container) series in the last successful refresh",
            history_series.clone(),
        );
        let history_last_refresh_timestamp_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "history_last_refresh_timestamp_seconds",
            "Unix time of the last successful Prometheus refresh",
            history_last_refresh_timestamp_seconds.clone(),
        );
        let history_refresh_duration_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "history_refresh_duration_seconds",
            "Duration of the last Prometheus refresh attempt",
            history_refresh_duration_seconds.clone(),
        );
        let mesh_services = Gauge::default();
        registry.register(
            "mesh_services",
            "Services and ServiceEntry hosts in the mesh (--mesh-scope)",
            mesh_services.clone(),
        );
        let mesh_sidecars = Gauge::default();
        registry.register(
            "mesh_sidecars",
            "Istio Sidecar resources (--mesh-scope)",
            mesh_sidecars.clone(),
        );
        let mesh_malformed_sidecars = Gauge::default();
        registry.register("mesh_malformed_sidecars", "Sidecars whose egress hosts cannot be read; their workloads are taken to see everything", mesh_malformed_sidecars.clone());
        let mesh_istio_crds = Gauge::default();
        registry.register(
            "mesh_istio_crds",
            "1 when Istio's Sidecar CRD is served, 0 when scope is all Services",
            mesh_istio_crds.clone(),
        );
        let mesh_model_base_bytes = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mesh_model_base_bytes",
            "Mesh memory model: base bytes",
            mesh_model_base_bytes.clone(),
        );
        let mesh_model_per_service_bytes = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mesh_model_per_service_bytes",
            "Mesh memory model: bytes per visible service",
            mesh_model_per_service_bytes.clone(),
        );
        let mesh_model_workloads = Gauge::default();
        registry.register("mesh_model_workloads", "Workloads with confident proxy memory history and a known scope offered to the calibration", mesh_model_workloads.clone());
        let mesh_model_calibrated = Gauge::default();
        registry.register("mesh_model_calibrated", "1 when the mesh memory model is fitted from the cluster, 0 when it uses the flag defaults", mesh_model_calibrated.clone());
        let mesh_model_r_squared = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "mesh_model_r_squared",
            "R² of the mesh memory model's fit over its inliers (0: not fitted)",
            mesh_model_r_squared.clone(),
        );
        let metrics_api_samples = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "metrics_api_samples",
            "Container samples from the metrics API, by outcome: accepted, or dropped as invalid, repeated, clock, too_old, empty, unknown_pod, missing (a running pod without metrics)",
            metrics_api_samples.clone(),
        );
        let metrics_api_rounds = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "metrics_api_rounds",
            "Metrics API sampling rounds, by outcome: ok, absent (no metrics.k8s.io API), unavailable, timeout, garbage, error",
            metrics_api_rounds.clone(),
        );
        let checkpoint_writes = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "checkpoint_writes",
            "Checkpoint ConfigMap writes, by outcome: ok, conflict, not_leader, error",
            checkpoint_writes.clone(),
        );
        let checkpoint_errors = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "checkpoint_errors",
            "Checkpoint shards ignored on load, by reason: corrupt, future_version",
            checkpoint_errors.clone(),
        );
        let history_leader = Gauge::default();
        registry.register(
            "history_leader",
            "1 while this replica holds the history Lease and learns from the metrics API",
            history_leader.clone(),
        );
        let metrics_api_workloads = Gauge::default();
        registry.register(
            "metrics_api_workloads",
            "Workloads in the history learned from the metrics API",
            metrics_api_workloads.clone(),
        );
        Metrics {
            mesh_services,
            mesh_sidecars,
            mesh_malformed_sidecars,
            mesh_istio_crds,
            mesh_model_base_bytes,
            mesh_model_per_service_bytes,
            mesh_model_workloads,
            mesh_model_calibrated,
            mesh_model_r_squared,
            metrics_api_samples,
            metrics_api_rounds,
            checkpoint_writes,
            checkpoint_errors,
            history_leader,
            metrics_api_workloads,
            not_sized,
            connections_refused,
            runtime_lag_seconds,
            log_lines_dropped,
            task_restarts,
            history_stale,
            history_refreshes,
            history_series,
            history_last_refresh_timestamp_seconds,
            history_refresh_duration_seconds,
            registry,
            admission_duration,
            decisions,
            warnings,
            bad_requests,
            spec_errors,
            specs_loaded,
            history_workloads,
            history_age_seconds,
            tls_reloads,
            reload_failures,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
