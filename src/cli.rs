//! Command line (clap derive; every flag also reads `SIDECAR_SIZER_<FLAG>`), turned into
//! plain config structs that tests can build directly.

use crate::engine::patch::PatchOptions;
use crate::engine::quantity::{Cpu, Memory, QuantityError};
use crate::engine::sizing::{Policy, Resources};
use crate::sources::history::prometheus::PromConfig;
use crate::webhook::serve::ServeConfig;
use crate::webhook::wire::Settings;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "sidecar-sizer",
    version,
    about = "Mutating admission webhook that sizes Istio sidecars (istio-proxy) from team specs and usage history",
    long_about = None
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "SIDECAR_SIZER_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the admission webhook (HTTPS) and the health/metrics port (HTTP).
    Serve(Box<ServeArgs>),
    /// Write a dev CA and a CA-signed serving certificate: DIR/ca.crt, DIR/tls.crt, DIR/tls.key.
    Certs(CertsArgs),
    /// Team spec files.
    #[command(subcommand)]
    Spec(SpecCommand),
    /// Review manifests (files, directories or - for stdin): what the webhook would do.
    Review(Box<ReviewArgs>),
    /// The usage history store: import once, or show what the sizer knows.
    #[command(subcommand)]
    History(HistoryCommand),
    /// Mesh scope: what each proxy sees and what a Sidecar resource would save.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// What enforcing would change in the cluster: live pods with an istio-proxy, grouped
    /// by workload, current vs sized, totals per namespace and cluster, HpaShift findings.
    Report(Box<ReportArgs>),
}

#[derive(Subcommand, Debug)]
pub enum MeshCommand {
    /// Per workload (from the cluster's pods): the applying Sidecar, visible services,
    /// expected proxy memory; and the memory model's calibration.
    Show(MeshShowArgs),
    /// From Istio's telemetry in Prometheus: a Sidecar per namespace listing exactly what its
    /// workloads talked to plus <root namespace>/*, as YAML, with the memory it would save.
    Suggest(MeshSuggestArgs),
}

/// The mesh memory model and Istio's root namespace (serve, mesh show, mesh suggest).
#[derive(Args, Debug, Clone)]
pub struct MeshModelArgs {
    /// Istio's root namespace (meshConfig.rootNamespace): its selector-less Sidecar is the
    /// mesh-wide default.
    #[arg(
        long,
        default_value = "istio-system",
        env = "SIDECAR_SIZER_ISTIO_ROOT_NAMESPACE"
    )]
    pub istio_root_namespace: String,
    /// Mesh memory model: proxy memory with no service visible.
    #[arg(long, default_value = "24Mi", value_parser = memory_arg, env = "SIDECAR_SIZER_MESH_BASE_MEMORY")]
    pub mesh_base_memory: Memory,
    /// Mesh memory model: proxy memory per visible service.
    #[arg(long, default_value = "0.56Mi", value_parser = memory_arg, env = "SIDECAR_SIZER_MESH_MEMORY_PER_SERVICE")]
    pub mesh_memory_per_service: Memory,
    /// Fit the model from the cluster only with at least this many workloads with confident
    /// proxy memory history (else the two defaults above).
    #[arg(
        long,
        default_value_t = 10,
        env = "SIDECAR_SIZER_MESH_CALIBRATION_WORKLOADS"
    )]
    pub mesh_calibration_workloads: usize,
}

impl MeshModelArgs {
    pub fn to_config(
        &self,
        kube: crate::sources::kube::KubeSource,
    ) -> crate::sources::mesh::MeshConfig {
        crate::sources::mesh::MeshConfig {
            kube,
            root_namespace: self.istio_root_namespace.clone(),
            base: self.mesh_base_memory,
            per_service: self.mesh_memory_per_service,
            calibration_workloads: self.mesh_calibration_workloads,
        }
    }
}

#[derive(Args, Debug)]
pub struct MeshShowArgs {
    #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
    pub format: ShowFormat,
    /// Kubernetes API URL (default: in-cluster, else kubeconfig).
    #[arg(long, env = "SIDECAR_SIZER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// Usage history file, for the model's calibration.
    #[arg(long, env = "SIDECAR_SIZER_HISTORY")]
    pub history: Option<PathBuf>,
    /// History store (history.json), for the model's calibration.
    #[arg(long, env = "SIDECAR_SIZER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub model: MeshModelArgs,
}

#[derive(Args, Debug)]
pub struct MeshSuggestArgs {
    /// Kubernetes API URL, to count what each namespace sees now (default: in-cluster, else
    /// kubeconfig).
    #[arg(long, env = "SIDECAR_SIZER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub model: MeshModelArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns, human units.
    Table,
    /// Markdown tables (totals, namespaces, workloads).
    Markdown,
    /// One row per workload, a header row, raw numbers (millicores, bytes).
    Csv,
    /// One JSON document (README "report JSON").
    Json,
    /// One self-contained HTML file: totals, a sortable table, an SVG chart.
    Html,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 done (namespaces the sizer may not list are reported as unreadable), \
1 bad flags or unreadable specs/history, 2 the cluster could not be listed."
)]
pub struct ReportArgs {
    /// Only this namespace (repeatable); default: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespace: Vec<String>,
    /// Only pods matching this label selector (e.g. app=cart,tier!=batch).
    #[arg(long, short = 'l', env = "SIDECAR_SIZER_SELECTOR")]
    pub selector: Option<String>,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table, env = "SIDECAR_SIZER_REPORT_FORMAT")]
    pub format: ReportFormat,
    /// Write the report here instead of stdout.
    #[arg(long, short = 'o', env = "SIDECAR_SIZER_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Kubernetes API URL (default: in-cluster, else kubeconfig).
    #[arg(long, env = "SIDECAR_SIZER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// Give up on an API call that has not answered (or connected) within this long: exit 2.
    #[arg(long, default_value = "30s", value_parser = duration_arg, env = "SIDECAR_SIZER_KUBE_TIMEOUT")]
    pub kube_timeout: Duration,
    /// Team specs: DIR/<namespace>/<workload>.yaml.
    #[arg(long, env = "SIDECAR_SIZER_SPEC_DIR")]
    pub spec_dir: Option<PathBuf>,
    /// Also read team specs from ConfigMaps labelled sidecar-sizer.io/spec=true (listed
    /// once); they win over --spec-dir for the same workload, as in serve.
    #[arg(long, env = "SIDECAR_SIZER_SPEC_CONFIGMAPS")]
    pub spec_configmaps: bool,
    /// Usage history file (CSV).
    #[arg(long, env = "SIDECAR_SIZER_HISTORY")]
    pub history: Option<PathBuf>,
    /// History store to read (history.json).
    #[arg(long, env = "SIDECAR_SIZER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Replace explicit sidecar.istio.io/proxy* annotations instead of keeping them.
    #[arg(long, env = "SIDECAR_SIZER_OVERRIDE_EXPLICIT")]
    pub override_explicit: bool,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReviewFormat {
    /// Aligned columns (colour only on a terminal).
    Table,
    /// A pull-request comment.
    Markdown,
    /// One JSON document: an array of decisions.
    Json,
    /// Unified diff of the manifests with the pod-template changes.
    Diff,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Exit codes: 0 fine, 1 error (an input unreadable; the rest is still reviewed), \
2 changes proposed (with --fail-on-change), 3 warnings (with --fail-on-warning); 2 wins over 3."
)]
pub struct ReviewArgs {
    /// Manifest files or directories (*.yaml, *.yml, *.json), or - for stdin.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = ReviewFormat::Table)]
    pub format: ReviewFormat,
    /// Write the proposed pod-template annotations (and istio-proxy resources) into the files.
    #[arg(long)]
    pub write: bool,
    /// Exit 2 when a change is proposed.
    #[arg(long)]
    pub fail_on_change: bool,
    /// Exit 3 when any warning is reported.
    #[arg(long)]
    pub fail_on_warning: bool,
    /// Namespace of objects that have none.
    #[arg(long, default_value = "default", env = "SIDECAR_SIZER_NAMESPACE")]
    pub namespace: String,
    /// Team specs: DIR/<namespace>/<workload>.yaml.
    #[arg(long, env = "SIDECAR_SIZER_SPEC_DIR")]
    pub spec_dir: Option<PathBuf>,
    /// Usage history file (CSV).
    #[arg(long, env = "SIDECAR_SIZER_HISTORY")]
    pub history: Option<PathBuf>,
    /// History store to read (history.json).
    #[arg(long, env = "SIDECAR_SIZER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Replace explicit sidecar.istio.io/proxy* annotations instead of keeping them.
    #[arg(long, env = "SIDECAR_SIZER_OVERRIDE_EXPLICIT")]
    pub override_explicit: bool,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// Fill the store in --state-dir once, from Prometheus (--from-prometheus URL), from a
    /// history file (--from-file FILE) or from one metrics API sample (--from-metrics-api).
    Import(ImportArgs),
    /// Print the history the sizer would use (from --state-dir and/or --history).
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Store directory to write (history.json).
    #[arg(long, env = "SIDECAR_SIZER_STATE_DIR")]
    pub state_dir: PathBuf,
    /// Import a history file (CSV, README "History file") instead of querying Prometheus.
    #[arg(long, conflicts_with = "prometheus_url")]
    pub from_file: Option<PathBuf>,
    /// Take one sample of the Kubernetes metrics API (opted-in namespaces) and fold it into
    /// the store's metrics-API history (a quick look; `serve --metrics-api` learns over time).
    #[arg(long, conflicts_with_all = ["prometheus_url", "from_file"])]
    pub from_metrics_api: bool,
    /// Kubernetes API URL for --from-metrics-api (default: in-cluster, else kubeconfig).
    #[arg(long, env = "SIDECAR_SIZER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ShowFormat {
    Table,
    Json,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// Store directory (history.json) to read.
    #[arg(long, env = "SIDECAR_SIZER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// History file to read (overlaid by the store, as `serve` does).
    #[arg(long, env = "SIDECAR_SIZER_HISTORY")]
    pub history: Option<PathBuf>,
    /// Only this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this workload.
    #[arg(long)]
    pub workload: Option<String>,
    #[arg(long, value_enum, default_value_t = ShowFormat::Table)]
    pub format: ShowFormat,
}

/// Where usage history comes from when it is learned from Prometheus.
#[derive(Args, Debug, Clone)]
pub struct PrometheusArgs {
    /// Learn usage history from this Prometheus, e.g. http://prometheus.monitoring:9090.
    #[arg(
        long,
        visible_alias = "from-prometheus",
        env = "SIDECAR_SIZER_PROMETHEUS_URL"
    )]
    pub prometheus_url: Option<String>,
    /// File holding a bearer token for Prometheus (re-read on every refresh).
    #[arg(long, env = "SIDECAR_SIZER_PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,
    /// Extra label matchers for every query, e.g. 'cluster="prod"'.
    #[arg(long, env = "SIDECAR_SIZER_PROMETHEUS_SELECTOR")]
    pub prometheus_selector: Option<String>,
    /// History window.
    #[arg(long, default_value = "14d", value_parser = duration_arg, env = "SIDECAR_SIZER_HISTORY_WINDOW")]
    pub history_window: Duration,
    /// Query resolution inside the window (one sample per step).
    #[arg(long, default_value = "5m", value_parser = duration_arg, env = "SIDECAR_SIZER_HISTORY_STEP")]
    pub history_step: Duration,
    /// Range of rate() over the CPU counter; at least two scrape intervals.
    #[arg(long, default_value = "5m", value_parser = duration_arg, env = "SIDECAR_SIZER_PROMETHEUS_RATE_WINDOW")]
    pub prometheus_rate_window: Duration,
    /// Timeout of each Prometheus query.
    #[arg(long, default_value = "30s", value_parser = duration_arg, env = "SIDECAR_SIZER_PROMETHEUS_TIMEOUT")]
    pub prometheus_timeout: Duration,
    /// Time between refreshes (serve; at least 100ms).
    #[arg(long, default_value = "5m", value_parser = interval_arg, env = "SIDECAR_SIZER_PROMETHEUS_REFRESH")]
    pub prometheus_refresh: Duration,
    /// Largest Prometheus answer accepted per query; larger ones fail the refresh.
    #[arg(long, default_value = "256Mi", value_parser = memory_arg, env = "SIDECAR_SIZER_PROMETHEUS_MAX_BYTES")]
    pub prometheus_max_bytes: Memory,
    /// Learned history older than this is treated as absent (serve).
    #[arg(long, default_value = "72h", value_parser = duration_arg, env = "SIDECAR_SIZER_HISTORY_MAX_AGE")]
    pub history_max_age: Duration,
}

impl PrometheusArgs {
    pub fn to_config(&self) -> Option<PromConfig> {
        let url = self.prometheus_url.as_deref()?;
        let mut c = PromConfig::new(url);
        c.bearer_token_file = self.prometheus_token_file.clone();
        c.selector = self.prometheus_selector.clone();
        c.window = self.history_window;
        c.step = self.history_step;
        c.rate_window = self.prometheus_rate_window;
        c.timeout = self.prometheus_timeout;
        c.max_bytes = usize::try_from(self.prometheus_max_bytes.0).unwrap_or(usize::MAX);
        Some(c)
    }
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{s:?} is not a duration like 30s, 5m, 72h, 14d: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?} must be longer than zero"));
    }
    Ok(d)
}

/// A duration that is the period of a background loop: at least [`MIN_INTERVAL`].
fn interval_arg(s: &str) -> Result<Duration, String> {
    let d = duration_arg(s)?;
    if d < MIN_INTERVAL {
        return Err(format!(
            "{s:?} is shorter than the minimum of {MIN_INTERVAL:?}"
        ));
    }
    Ok(d)
}

#[derive(Subcommand, Debug)]
pub enum SpecCommand {
    /// Validate spec files or directories; prints each error with its location.
    Check {
        /// Spec files or directories (searched recursively for *.yaml / *.yml).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum ServeMode {
    /// Patch pods on /mutate; /dry-run only reviews.
    Enforce,
    /// Never patch: every path answers with warnings and audit annotations only.
    DryRun,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// HTTPS address for POST /mutate and POST /dry-run.
    #[arg(long, default_value = "0.0.0.0:8443", env = "SIDECAR_SIZER_LISTEN")]
    pub listen: SocketAddr,
    /// Plain HTTP address for /healthz, /readyz and /metrics.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "SIDECAR_SIZER_HEALTH_LISTEN"
    )]
    pub health_listen: SocketAddr,
    /// PEM certificate (chain) served on --listen; reloaded when it changes.
    #[arg(long, default_value = "certs/tls.crt", env = "SIDECAR_SIZER_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key for --tls-cert.
    #[arg(long, default_value = "certs/tls.key", env = "SIDECAR_SIZER_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Team specs: DIR/<namespace>/<workload>.yaml (re-read every --reload-interval).
    #[arg(long, env = "SIDECAR_SIZER_SPEC_DIR")]
    pub spec_dir: Option<PathBuf>,
    /// Usage history file (CSV, see README "History file"); re-read when it changes.
    #[arg(long, env = "SIDECAR_SIZER_HISTORY")]
    pub history: Option<PathBuf>,
    /// Also read team specs from ConfigMaps labelled sidecar-sizer.io/spec=true (all
    /// namespaces, key <workload>.yaml); they win over --spec-dir for the same workload.
    #[arg(long, env = "SIDECAR_SIZER_SPEC_CONFIGMAPS")]
    pub spec_configmaps: bool,
    /// Fit sizes into each namespace's LimitRanges and ResourceQuotas: watch them in all
    /// namespaces in the background (needs get/list/watch on limitranges and
    /// resourcequotas). Never queried per admission; until listed, or while the API is
    /// unreachable, sizing uses the last good list (none: no constraints).
    #[arg(long, env = "SIDECAR_SIZER_CLUSTER_CONSTRAINTS")]
    pub cluster_constraints: bool,
    /// Size proxy memory from the mesh configuration it carries: watch Services, Istio
    /// ServiceEntries and Sidecars in all namespaces (needs get/list/watch on services and
    /// networking.istio.io sidecars, serviceentries). A new workload without history or
    /// declared memory gets base + per-service × visible services (source mesh-model).
    #[arg(long, env = "SIDECAR_SIZER_MESH_SCOPE")]
    pub mesh_scope: bool,
    #[command(flatten)]
    pub mesh: MeshModelArgs,
    /// Learn usage history in cluster from the Kubernetes metrics API (metrics.k8s.io
    /// PodMetrics, i.e. metrics-server), no Prometheus needed: one replica at a time (a Lease
    /// in --namespace) samples opted-in namespaces every --metrics-interval and writes
    /// checkpoints to ConfigMaps in --namespace; every replica loads them before ready.
    /// Without a metrics API it logs, counts and keeps the last history.
    #[arg(long, env = "SIDECAR_SIZER_METRICS_API")]
    pub metrics_api: bool,
    #[command(flatten)]
    pub metrics_api_args: MetricsApiArgs,
    /// Warn (HpaShift, in dry-run and enforce) when the proxy request change moves an
    /// autoscaling/v2 HPA's Resource utilisation by --hpa-shift-threshold or more: watch
    /// HorizontalPodAutoscalers in all namespaces in the background (needs get/list/watch
    /// on horizontalpodautoscalers.autoscaling).
    #[arg(long, env = "SIDECAR_SIZER_HPA_AWARE")]
    pub hpa_aware: bool,
    /// Kubernetes API URL for --spec-configmaps, --cluster-constraints, --mesh-scope,
    /// --metrics-api and --hpa-aware (default: in-cluster, else kubeconfig).
    #[arg(long, env = "SIDECAR_SIZER_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// Seconds start-up waits for the first lists of --spec-configmaps and
    /// --cluster-constraints before turning ready anyway.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds, env = "SIDECAR_SIZER_SPEC_SYNC_TIMEOUT")]
    pub spec_sync_timeout: f64,
    /// Persist learned history here (history.json) and load it at start; none: memory only.
    #[arg(long, env = "SIDECAR_SIZER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub prometheus: PrometheusArgs,
    /// enforce: /mutate patches pods. dry-run: nothing is patched anywhere.
    #[arg(long, value_enum, default_value_t = ServeMode::Enforce, env = "SIDECAR_SIZER_MODE")]
    pub mode: ServeMode,
    /// Replace explicit sidecar.istio.io/proxy* annotations instead of keeping them.
    #[arg(long, env = "SIDECAR_SIZER_OVERRIDE_EXPLICIT")]
    pub override_explicit: bool,
    /// Seconds between checks of the spec dir, history file and TLS files (at least 0.1).
    #[arg(long, default_value_t = 10.0, value_parser = interval_seconds, env = "SIDECAR_SIZER_RELOAD_INTERVAL")]
    pub reload_interval: f64,
    /// Log lines buffered for the writer thread; when stderr cannot keep up and the buffer
    /// is full, lines are dropped (sidecar_sizer_log_lines_dropped_total), never waited for.
    #[arg(long, default_value_t = crate::logging::DEFAULT_BUFFER_LINES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000), env = "SIDECAR_SIZER_LOG_BUFFER_LINES")]
    pub log_buffer_lines: usize,
    /// Seconds readiness is off after SIGTERM before the listener stops accepting.
    #[arg(long, default_value_t = 2.0, value_parser = non_negative_seconds, env = "SIDECAR_SIZER_SHUTDOWN_DELAY")]
    pub shutdown_delay: f64,
    /// Require TLS client certificates signed by this CA (PEM), i.e. only the apiserver
    /// (configured with a client certificate in its admission kubeconfig) may call.
    #[arg(long, env = "SIDECAR_SIZER_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Open TLS connections at most; more are closed at accept.
    #[arg(long, default_value_t = 1024, env = "SIDECAR_SIZER_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Reviews being sized at once (a slot is taken once the body is read); more are
    /// answered allowed, unsized, at once.
    #[arg(long, default_value_t = 256, env = "SIDECAR_SIZER_MAX_INFLIGHT")]
    pub max_inflight: usize,
    /// Seconds a client has to send its request headers, and to finish the TLS handshake.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds, env = "SIDECAR_SIZER_HEADER_TIMEOUT")]
    pub header_timeout: f64,
    /// Upper bound on the time spent per review (the apiserver's ?timeout= lowers it to 80 %).
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds, env = "SIDECAR_SIZER_MAX_BUDGET")]
    pub max_budget: f64,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds, env = "SIDECAR_SIZER_SHUTDOWN_GRACE")]
    pub shutdown_grace: f64,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// How `--metrics-api` learns and checkpoints.
#[derive(Args, Debug, Clone)]
pub struct MetricsApiArgs {
    /// Time between samples of the metrics API (at least 10s).
    #[arg(long, default_value = "60s", value_parser = metrics_interval_arg, env = "SIDECAR_SIZER_METRICS_INTERVAL")]
    pub metrics_interval: Duration,
    /// CPU samples lose half their weight after this long (as VPA's recommender).
    #[arg(long, default_value = "24h", value_parser = duration_arg, env = "SIDECAR_SIZER_HISTORY_HALF_LIFE")]
    pub history_half_life: Duration,
    /// Memory keeps one peak per interval this long; the max of the peaks in
    /// --history-window is the max working set.
    #[arg(long, default_value = "24h", value_parser = duration_arg, env = "SIDECAR_SIZER_MEMORY_PEAK_INTERVAL")]
    pub memory_peak_interval: Duration,
    /// Checkpoints are written at most this often (and at shutdown).
    #[arg(long, default_value = "5m", value_parser = duration_arg, env = "SIDECAR_SIZER_CHECKPOINT_INTERVAL")]
    pub checkpoint_interval: Duration,
    /// The history Lease is taken over when its holder has not renewed it for this long.
    #[arg(long, default_value = "15s", value_parser = lease_duration_arg, env = "SIDECAR_SIZER_LEASE_DURATION")]
    pub lease_duration: Duration,
    /// The sizer's own namespace: the Lease and the checkpoint ConfigMaps live here.
    #[arg(
        long = "namespace",
        default_value = "sidecar-sizer",
        env = "POD_NAMESPACE"
    )]
    pub own_namespace: String,
}

fn metrics_interval_arg(s: &str) -> Result<Duration, String> {
    let d = duration_arg(s)?;
    if d < Duration::from_secs(10) {
        return Err(format!("{s:?} is shorter than the minimum of 10s"));
    }
    Ok(d)
}

fn lease_duration_arg(s: &str) -> Result<Duration, String> {
    let d = duration_arg(s)?;
    if d < Duration::from_secs(1) || d.subsec_nanos() != 0 {
        return Err(format!("{s:?} must be whole seconds, at least 1s"));
    }
    Ok(d)
}

impl MetricsApiArgs {
    pub fn to_config(
        &self,
        window: Duration,
        state_dir: Option<PathBuf>,
    ) -> crate::sources::metrics_api::MetricsApiConfig {
        crate::sources::metrics_api::MetricsApiConfig {
            namespace: self.own_namespace.clone(),
            identity: crate::sources::metrics_api::default_identity(),
            interval: self.metrics_interval,
            checkpoint_interval: self.checkpoint_interval,
            lease_duration: self.lease_duration,
            timeout: (self.metrics_interval / 2).min(Duration::from_secs(30)),
            learn: crate::engine::learn::LearnConfig {
                half_life_seconds: self.history_half_life.as_secs_f64(),
                memory_peak_interval_seconds: self.memory_peak_interval.as_secs().max(1) as i64,
                window_seconds: window.as_secs().max(1) as i64,
                max_future_seconds: 300,
            },
            state_dir,
        }
    }
}

/// Every number of the sizing policy (README "Policy").
#[derive(Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Target utilisation at P95: CPU request = P95 ÷ this.
    #[arg(long, default_value_t = 0.75, env = "SIDECAR_SIZER_TARGET_UTILIZATION")]
    pub target_utilization: f64,
    /// CPU requests are rounded up to a multiple of this.
    #[arg(long, default_value = "5m", value_parser = cpu_arg, env = "SIDECAR_SIZER_CPU_STEP")]
    pub cpu_step: Cpu,
    /// Memory request = max working set × this.
    #[arg(long, default_value_t = 1.15, env = "SIDECAR_SIZER_MEMORY_HEADROOM")]
    pub memory_headroom: f64,
    /// After an OOM kill, memory request ≥ peak + this ...
    #[arg(long, default_value = "100Mi", value_parser = memory_arg, env = "SIDECAR_SIZER_OOM_EXTRA")]
    pub oom_extra: Memory,
    /// ... and ≥ peak × this.
    #[arg(long, default_value_t = 1.2, env = "SIDECAR_SIZER_OOM_FACTOR")]
    pub oom_factor: f64,
    /// CPU limit = max(this × request, --cpu-limit-min), rounded up to whole cores.
    #[arg(long, default_value_t = 2.0, env = "SIDECAR_SIZER_CPU_LIMIT_FACTOR")]
    pub cpu_limit_factor: f64,
    #[arg(long, default_value = "1", value_parser = cpu_arg, env = "SIDECAR_SIZER_CPU_LIMIT_MIN")]
    pub cpu_limit_min: Cpu,
    /// Lower bound on the CPU request.
    #[arg(long, default_value = "10m", value_parser = cpu_arg, env = "SIDECAR_SIZER_MIN_CPU")]
    pub min_cpu: Cpu,
    /// Upper bound on the CPU request.
    #[arg(long, default_value = "4", value_parser = cpu_arg, env = "SIDECAR_SIZER_MAX_CPU")]
    pub max_cpu: Cpu,
    /// Lower bound on the memory request.
    #[arg(long, default_value = "32Mi", value_parser = memory_arg, env = "SIDECAR_SIZER_MIN_MEMORY")]
    pub min_memory: Memory,
    /// Upper bound on the memory request.
    #[arg(long, default_value = "4Gi", value_parser = memory_arg, env = "SIDECAR_SIZER_MAX_MEMORY")]
    pub max_memory: Memory,
    /// History is used only when it covers at least this many hours ...
    #[arg(long, default_value_t = 24.0, env = "SIDECAR_SIZER_MIN_HISTORY_HOURS")]
    pub min_history_hours: f64,
    /// ... and has at least this many samples.
    #[arg(long, default_value_t = 100, env = "SIDECAR_SIZER_MIN_HISTORY_SAMPLES")]
    pub min_history_samples: u64,
    /// Warn (ProxyMasterImbalance) when app and proxy utilisation differ by more than this.
    #[arg(
        long,
        default_value_t = 0.30,
        env = "SIDECAR_SIZER_IMBALANCE_THRESHOLD"
    )]
    pub imbalance_threshold: f64,
    /// Warn (SpecDrift) when the spec's proxy requests differ from history by more than this.
    #[arg(long, default_value_t = 0.30, env = "SIDECAR_SIZER_DRIFT_THRESHOLD")]
    pub drift_threshold: f64,
    /// Warn (MeshScope) when a proxy sees more than this many services with no Sidecar
    /// scope (none, or a */* egress host).
    #[arg(long, default_value_t = 50, env = "SIDECAR_SIZER_SCOPE_WARN_SERVICES")]
    pub scope_warn_services: usize,
    /// Warn (HpaShift) when the proxy change moves an HPA's Resource utilisation by at
    /// least this many percentage points (serve --hpa-aware, report).
    #[arg(
        long,
        default_value_t = 10.0,
        env = "SIDECAR_SIZER_HPA_SHIFT_THRESHOLD"
    )]
    pub hpa_shift_threshold: f64,
    /// Istio's default CPU request (used when nothing else applies).
    #[arg(long, default_value = "100m", value_parser = cpu_arg, env = "SIDECAR_SIZER_DEFAULT_CPU")]
    pub default_cpu: Cpu,
    #[arg(long, default_value = "128Mi", value_parser = memory_arg, env = "SIDECAR_SIZER_DEFAULT_MEMORY")]
    pub default_memory: Memory,
    #[arg(long, default_value = "2", value_parser = cpu_arg, env = "SIDECAR_SIZER_DEFAULT_CPU_LIMIT")]
    pub default_cpu_limit: Cpu,
    #[arg(long, default_value = "1Gi", value_parser = memory_arg, env = "SIDECAR_SIZER_DEFAULT_MEMORY_LIMIT")]
    pub default_memory_limit: Memory,
}

#[derive(Args, Debug)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long, env = "SIDECAR_SIZER_CERTS_OUT")]
    pub out: PathBuf,
    /// DNS names for the serving certificate (repeatable). Default: localhost and the
    /// in-cluster names of service sidecar-sizer in namespace sidecar-sizer.
    #[arg(long = "dns", value_name = "NAME")]
    pub dns: Vec<String>,
    /// IP addresses for the serving certificate (repeatable). Default: 127.0.0.1.
    #[arg(long = "ip", value_name = "IP")]
    pub ip: Vec<IpAddr>,
}

fn cpu_arg(s: &str) -> Result<Cpu, QuantityError> {
    Cpu::parse(s)
}

fn memory_arg(s: &str) -> Result<Memory, QuantityError> {
    Memory::parse(s)
}

fn non_negative_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds >= 0")),
    }
}

/// Seconds, at least 1 ms (so the duration is never rounded to zero).
fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.001..1e9).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.001 and 1e9"
        )),
    }
}

/// A period of a background loop: at least 0.1 s.
fn interval_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (MIN_INTERVAL.as_secs_f64()..1e9).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between {} and 1e9",
            MIN_INTERVAL.as_secs_f64()
        )),
    }
}

/// The shortest period of a background loop (`--reload-interval`, `--prometheus-refresh`).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

impl PolicyArgs {
    pub fn to_policy(&self) -> Policy {
        Policy {
            target_utilization: self.target_utilization,
            cpu_step_millis: self.cpu_step.0,
            memory_headroom: self.memory_headroom,
            oom_extra_bytes: self.oom_extra.0,
            oom_factor: self.oom_factor,
            cpu_limit_factor: self.cpu_limit_factor,
            cpu_limit_min: self.cpu_limit_min,
            min_cpu: self.min_cpu,
            max_cpu: self.max_cpu,
            min_memory: self.min_memory,
            max_memory: self.max_memory,
            min_history_hours: self.min_history_hours,
            min_history_samples: self.min_history_samples,
            imbalance_threshold: self.imbalance_threshold,
            drift_threshold: self.drift_threshold,
            scope_warn_services: self.scope_warn_services,
            hpa_shift_threshold: self.hpa_shift_threshold,
            default_requests: Resources {
                cpu: self.default_cpu,
                memory: self.default_memory,
            },
            default_limits: Resources {
                cpu: self.default_cpu_limit,
                memory: self.default_memory_limit,
            },
        }
    }
}

impl ServeArgs {
    fn kube_source(&self) -> crate::sources::kube::KubeSource {
        match &self.kube_api_url {
            Some(url) => crate::sources::kube::KubeSource::Url(url.clone()),
            None => crate::sources::kube::KubeSource::Default,
        }
    }

    pub fn to_config(&self) -> ServeConfig {
        ServeConfig {
            listen: self.listen,
            health_listen: self.health_listen,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            spec_dir: self.spec_dir.clone(),
            history: self.history.clone(),
            state_dir: self.state_dir.clone(),
            prometheus: self.prometheus.to_config(),
            prometheus_refresh: self.prometheus.prometheus_refresh,
            spec_configmaps: self.spec_configmaps.then(|| self.kube_source()),
            cluster_constraints: self.cluster_constraints.then(|| self.kube_source()),
            mesh: self
                .mesh_scope
                .then(|| self.mesh.to_config(self.kube_source())),
            metrics_api: self.metrics_api.then(|| {
                (
                    self.kube_source(),
                    self.metrics_api_args
                        .to_config(self.prometheus.history_window, self.state_dir.clone()),
                )
            }),
            hpa_aware: self.hpa_aware.then(|| self.kube_source()),
            spec_sync_timeout: Duration::from_secs_f64(self.spec_sync_timeout),
            history_max_age: self.prometheus.history_max_age,
            settings: Settings {
                policy: self.policy.to_policy(),
                patch: PatchOptions {
                    override_explicit: self.override_explicit,
                },
                dry_run_everywhere: self.mode == ServeMode::DryRun,
            },
            reload_interval: Duration::from_secs_f64(self.reload_interval),
            shutdown_grace: Duration::from_secs_f64(self.shutdown_grace),
            shutdown_delay: Duration::from_secs_f64(self.shutdown_delay),
            client_ca: self.client_ca.clone(),
            limits: crate::webhook::limits::Limits {
                max_connections: self.max_connections,
                max_inflight: self.max_inflight,
                handshake_timeout: Duration::from_secs_f64(self.header_timeout),
                header_read_timeout: Duration::from_secs_f64(self.header_timeout),
                max_budget: Duration::from_secs_f64(self.max_budget),
                ..crate::webhook::limits::Limits::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_match_the_design_policy() {
        let cli = Cli::try_parse_from(["sidecar-sizer", "serve"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.policy.to_policy(), Policy::default());
        let c = s.to_config();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(c.health_listen.to_string(), "0.0.0.0:8080");
        assert!(!c.settings.dry_run_everywhere);
        assert!(c.prometheus.is_none());
        assert!(c.spec_configmaps.is_none());
        assert!(c.cluster_constraints.is_none());
        assert!(c.mesh.is_none());
        assert!(c.metrics_api.is_none());
        assert_eq!(c.history_max_age, Duration::from_secs(72 * 3600));
    }

    #[test]
    fn prometheus_flags() {
        let cli = Cli::try_parse_from([
            "sidecar-sizer",
            "serve",
            "--prometheus-url",
            "http://p:9090",
            "--history-window",
            "7d",
            "--history-step",
            "1m",
            "--prometheus-timeout",
            "5s",
            "--prometheus-selector",
            "cluster=\"a\"",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        let p = s.to_config().prometheus.unwrap();
        assert_eq!(p.url, "http://p:9090");
        assert_eq!(p.window, Duration::from_secs(7 * 86400));
        assert_eq!(p.step, Duration::from_secs(60));
        assert_eq!(p.timeout, Duration::from_secs(5));
        assert_eq!(p.selector.as_deref(), Some("cluster=\"a\""));
        assert!(Cli::try_parse_from(["sidecar-sizer", "serve", "--history-window", "0s"]).is_err());
        let err =
            Cli::try_parse_from(["sidecar-sizer", "serve", "--history-step", "soon"]).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn cluster_constraints_flag_shares_the_kube_source() {
        use crate::sources::kube::KubeSource;
        let cli = Cli::try_parse_from([
            "sidecar-sizer",
            "serve",
            "--cluster-constraints",
            "--spec-configmaps",
            "--kube-api-url",
            "http://127.0.0.1:8001",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        let c = s.to_config();
        let url = KubeSource::Url("http://127.0.0.1:8001".into());
        assert_eq!(c.cluster_constraints, Some(url.clone()));
        assert_eq!(c.spec_configmaps, Some(url));
        let cli = Cli::try_parse_from(["sidecar-sizer", "serve", "--cluster-constraints"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(s.to_config().cluster_constraints, Some(KubeSource::Default));
    }

    #[test]
    fn mesh_flags() {
        use crate::engine::mesh::{DEFAULT_BASE, DEFAULT_PER_SERVICE};
        let cli = Cli::try_parse_from(["sidecar-sizer", "serve", "--mesh-scope"]).unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        let m = s.to_config().mesh.unwrap();
        assert_eq!(m.root_namespace, "istio-system");
        assert_eq!((m.base, m.per_service), (DEFAULT_BASE, DEFAULT_PER_SERVICE));
        assert_eq!(m.calibration_workloads, 10);
        assert_eq!(s.policy.to_policy().scope_warn_services, 50);
        let err = Cli::try_parse_from(["sidecar-sizer", "serve", "--mesh-base-memory", "big"])
            .unwrap_err();
        assert!(err.to_string().contains("big"), "{err}");
    }

    #[test]
    fn metrics_api_flags() {
        let cli = Cli::try_parse_from([
            "sidecar-sizer",
            "serve",
            "--metrics-api",
            "--metrics-interval",
            "30s",
            "--history-half-life",
            "12h",
            "--checkpoint-interval",
            "2m",
            "--namespace",
            "sizer",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        let (_, m) = s.to_config().metrics_api.unwrap();
        assert_eq!(m.interval, Duration::from_secs(30));
        assert_eq!(m.timeout, Duration::from_secs(15));
        assert_eq!(m.checkpoint_interval, Duration::from_secs(120));
        assert_eq!(m.lease_duration, Duration::from_secs(15));
        assert_eq!(m.namespace, "sizer");
        assert_eq!(m.learn.half_life_seconds, 12.0 * 3600.0);
        assert_eq!(m.learn.memory_peak_interval_seconds, 86_400);
        assert_eq!(m.learn.window_seconds, 14 * 86_400);
        let err = Cli::try_parse_from(["sidecar-sizer", "serve", "--metrics-interval", "5s"])
            .unwrap_err();
        assert!(err.to_string().contains("minimum of 10s"), "{err}");
    }

    #[test]
    fn flags_parse_quantities_and_modes() {
        let cli = Cli::try_parse_from([
            "sidecar-sizer",
            "serve",
            "--mode",
            "dry-run",
            "--max-cpu",
            "2500m",
            "--min-memory",
            "64Mi",
        ])
        .unwrap();
        let Command::Serve(s) = cli.command else {
            panic!("not serve")
        };
        let c = s.to_config();
        assert!(c.settings.dry_run_everywhere);
        assert_eq!(c.settings.policy.max_cpu, Cpu(2500));
        assert_eq!(
            c.settings.policy.min_memory,
            Memory(64 * crate::engine::quantity::MI)
        );
        let err = Cli::try_parse_from(["sidecar-sizer", "serve", "--max-cpu", "lots"]).unwrap_err();
        assert!(err.to_string().contains("lots"), "{err}");
    }

    #[test]
    fn intervals_and_timeouts_are_validated() {
        for (flag, value) in [
            ("--reload-interval", "0"),
            ("--reload-interval", "0.0000001"),
            ("--reload-interval", "0.05"),
            ("--reload-interval", "nan"),
            ("--header-timeout", "1e-12"),
            ("--max-budget", "0"),
            ("--spec-sync-timeout", "0.0001"),
            ("--prometheus-refresh", "1ms"),
            ("--prometheus-refresh", "0s"),
            ("--log-buffer-lines", "0"),
        ] {
            let err = Cli::try_parse_from(["sidecar-sizer", "serve", flag, value]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(flag), "{flag} {value}: {text}");
            assert!(text.contains(value), "{flag} {value}: {text}");
        }
        let cli = Cli::try_parse_from([
            "sidecar-sizer",
            "serve",
            "--reload-interval",
            "0.1",
            "--prometheus-refresh",
            "100ms",
            "--log-buffer-lines",
            "1",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        assert_eq!(args.to_config().reload_interval, Duration::from_millis(100));
        assert_eq!(args.log_buffer_lines, 1);
    }
}
