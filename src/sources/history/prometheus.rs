//! Usage history from Prometheus (cAdvisor + kube-state-metrics series).
//!
//! One refresh is a fixed set of instant queries, each aggregated
//! `by (namespace, pod, container)` over the whole window, whatever the number of
//! workloads. Pods are mapped to workloads in Rust ([`super::pods`]). A response that is
//! too large, not JSON, partial or holds NaN/Inf is rejected, and with it the whole refresh:
//! the caller keeps its previous snapshot.

use super::pods::{aggregate, PodFacts, PodKey, PodSeries, SeriesKey};
use super::{SnapshotMeta, UsageSnapshot};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PromConfig {
    /// Base URL, e.g. `http://prometheus.monitoring:9090`.
    pub url: String,
    /// Bearer token, re-read on every refresh (rotated tokens just work).
    pub bearer_token_file: Option<PathBuf>,
    /// Extra label matchers added to every selector, e.g. `cluster="prod"`.
    pub selector: Option<String>,
    pub window: Duration,
    pub step: Duration,
    /// Range of `rate()` over the CPU counter (≥ 2 scrape intervals).
    pub rate_window: Duration,
    /// Per-query timeout (sent to Prometheus and enforced here).
    pub timeout: Duration,
    /// Largest response body accepted, per query.
    pub max_bytes: usize,
    /// Most series accepted, per query.
    pub max_series: usize,
}

impl PromConfig {
    pub fn new(url: &str) -> Self {
        PromConfig {
            url: url.trim_end_matches('/').to_string(),
            bearer_token_file: None,
            selector: None,
            window: Duration::from_secs(14 * 86400),
            step: Duration::from_secs(300),
            rate_window: Duration::from_secs(300),
            timeout: Duration::from_secs(30),
            max_bytes: 256 * 1024 * 1024,
            max_series: 1_000_000,
        }
    }
}

/// Why a refresh failed; `reason()` is the metric label.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("prometheus unreachable: {0}")]
    Unreachable(String),
    #[error("prometheus query timed out after {0:?}")]
    Timeout(Duration),
    #[error("prometheus answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("prometheus answer is not JSON ({content_type}): {detail}")]
    NotJson {
        content_type: String,
        detail: String,
    },
    #[error("prometheus answer rejected: {0}")]
    Rejected(String),
    #[error("prometheus returned a non-finite or negative value {value:?} for {series}")]
    BadValue { value: String, series: String },
    #[error("prometheus answer too large: {0}")]
    TooLarge(String),
    #[error("prometheus answer cut short: {0}")]
    Truncated(String),
    #[error("cannot read bearer token file: {0}")]
    Token(String),
}

impl FetchError {
    pub fn reason(&self) -> &'static str {
        match self {
            FetchError::Unreachable(_) => "unreachable",
            FetchError::Timeout(_) => "timeout",
            FetchError::Status { .. } => "http_status",
            FetchError::NotJson { .. } => "not_json",
            FetchError::Rejected(_) => "rejected",
            FetchError::BadValue { .. } => "bad_value",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Truncated(_) => "truncated",
            FetchError::Token(_) => "token",
        }
    }
}

#[derive(Deserialize)]
struct Response {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: Labels,
    value: (f64, String),
}

/// Only the labels we aggregate by; everything else is skipped while parsing.
#[derive(Deserialize)]
struct Labels {
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    /// `kube_pod_owner`
    owner_kind: Option<String>,
    owner_name: Option<String>,
    /// `kube_pod_labels` (kube-state-metrics prefixes pod labels with `label_` and turns
    /// `.`, `/` and `-` into `_`).
    label_app_kubernetes_io_name: Option<String>,
    label_app: Option<String>,
    label_pod_template_hash: Option<String>,
    label_rollouts_pod_template_hash: Option<String>,
}

/// What one refresh produced.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub snapshot: UsageSnapshot,
    /// (namespace, pod, container) series seen.
    pub series: usize,
    pub queries: usize,
}

#[derive(Clone, Copy)]
enum Field {
    CpuP95,
    CpuSamples,
    MemoryMax,
    FirstSeen,
    LastSeen,
    OomKilled,
    /// kube-state-metrics: the pod's controller owner.
    Owner,
    /// kube-state-metrics: the pod labels that name workloads.
    PodLabels,
}

fn prom_duration(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The queries of one refresh: a fixed list, independent of the number of workloads.
fn queries(cfg: &PromConfig) -> Vec<(Field, String)> {
    let extra = cfg
        .selector
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!(",{s}"))
        .unwrap_or_default();
    let sel = format!(r#"{{container!="",container!="POD",pod!="",namespace!=""{extra}}}"#);
    let (w, s, r) = (
        prom_duration(cfg.window),
        prom_duration(cfg.step),
        prom_duration(cfg.rate_window),
    );
    let by = "by (namespace, pod, container)";
    let rate = format!("rate(container_cpu_usage_seconds_total{sel}[{r}])");
    let ts = format!("timestamp(container_memory_working_set_bytes{sel})");
    vec![
        (
            Field::CpuP95,
            format!("max {by} (quantile_over_time(0.95, {rate}[{w}:{s}]))"),
        ),
        (
            Field::CpuSamples,
            format!("max {by} (count_over_time({rate}[{w}:{s}]))"),
        ),
        (
            Field::MemoryMax,
            format!("max {by} (max_over_time(container_memory_working_set_bytes{sel}[{w}]))"),
        ),
        (
            Field::FirstSeen,
            format!("min {by} (min_over_time({ts}[{w}:{s}]))"),
        ),
        (
            Field::LastSeen,
            format!("max {by} (max_over_time({ts}[{w}:{s}]))"),
        ),
        (
            Field::OomKilled,
            format!(
                r#"max {by} (max_over_time(kube_pod_container_status_last_terminated_reason{{reason="OOMKilled",container!="",pod!="",namespace!=""{extra}}}[{w}]))"#
            ),
        ),
        // So that history names pods' workloads with the same function as admission (the
        // controller owner, then labels): kube-state-metrics' series, when Prometheus has
        // them; without them the pod name is all history knows.
        (
            Field::Owner,
            format!(
                r#"max by (namespace, pod, owner_kind, owner_name) (max_over_time(kube_pod_owner{{owner_is_controller="true",pod!="",namespace!=""{extra}}}[{w}]))"#
            ),
        ),
        (
            Field::PodLabels,
            format!(
                r#"max by (namespace, pod, label_app_kubernetes_io_name, label_app, label_pod_template_hash, label_rollouts_pod_template_hash) (max_over_time(kube_pod_labels{{pod!="",namespace!=""{extra}}}[{w}]))"#
            ),
        ),
    ]
}

/// A client for Prometheus: rustls (ring), timeouts from the config.
pub fn client(cfg: &PromConfig) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(cfg.timeout + Duration::from_secs(1))
        .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(|e| format!("cannot build the Prometheus client: {e}"))
}

/// One full refresh: all queries, evaluated at `at_unix`, folded into a snapshot.
pub async fn fetch(
    client: &reqwest::Client,
    cfg: &PromConfig,
    at_unix: u64,
) -> Result<Fetched, FetchError> {
    let token = match &cfg.bearer_token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| FetchError::Token(format!("{}: {e}", p.display())))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let mut series: HashMap<SeriesKey, PodSeries> = HashMap::new();
    let mut facts: HashMap<PodKey, PodFacts> = HashMap::new();
    let list = queries(cfg);
    for (field, query) in &list {
        let samples = query_once(client, cfg, token.as_deref(), query, at_unix).await?;
        for s in samples {
            if matches!(field, Field::Owner | Field::PodLabels) {
                let m = s.metric;
                let (Some(ns), Some(pod)) = (m.namespace, m.pod) else {
                    continue;
                };
                let f = facts.entry((ns, pod)).or_default();
                if let (Some(kind), Some(name)) = (m.owner_kind, m.owner_name) {
                    // kube-state-metrics reports `<none>` for pods without an owner.
                    if !kind.is_empty() && kind != "<none>" && !name.is_empty() {
                        f.owner = Some((kind, name));
                    }
                }
                for (key, v) in [
                    ("app.kubernetes.io/name", m.label_app_kubernetes_io_name),
                    ("app", m.label_app),
                    ("pod-template-hash", m.label_pod_template_hash),
                    (
                        "rollouts-pod-template-hash",
                        m.label_rollouts_pod_template_hash,
                    ),
                ] {
                    if let Some(v) = v.filter(|v| !v.is_empty()) {
                        f.labels.insert(key.to_string(), v);
                    }
                }
                continue;
            }
            let (Some(ns), Some(pod), Some(container)) =
                (s.metric.namespace, s.metric.pod, s.metric.container)
            else {
                continue;
            };
            let v: f64 = s.value.1.parse().map_err(|_| FetchError::BadValue {
                value: s.value.1.clone(),
                series: format!("{ns}/{pod}/{container}"),
            })?;
            if !v.is_finite() || v < 0.0 {
                return Err(FetchError::BadValue {
                    value: s.value.1,
                    series: format!("{ns}/{pod}/{container}"),
                });
            }
            let e = series.entry((ns, pod, container)).or_default();
            match field {
                Field::CpuP95 => e.cpu_p95_cores = Some(v),
                Field::CpuSamples => e.cpu_samples = Some(v as u64),
                Field::MemoryMax => e.memory_max_bytes = Some(v),
                Field::FirstSeen => e.first_seen = Some(v),
                Field::LastSeen => e.last_seen = Some(v),
                Field::OomKilled => e.oom_killed = v >= 1.0,
                Field::Owner | Field::PodLabels => {}
            }
        }
    }
    let meta = SnapshotMeta {
        source: format!("prometheus {}", cfg.url),
        fetched_at: Some(at_unix),
        window_seconds: Some(cfg.window.as_secs()),
    };
    let (step, n_series) = (cfg.step.as_secs_f64(), series.len());
    // Aggregating every series into workloads: off the async workers.
    let snapshot = tokio::task::spawn_blocking(move || aggregate(&series, &facts, step, meta))
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => FetchError::Truncated(format!("aggregate task: {e}")),
        })?;
    Ok(Fetched {
        snapshot,
        series: n_series,
        queries: list.len(),
    })
}

async fn query_once(
    client: &reqwest::Client,
    cfg: &PromConfig,
    token: Option<&str>,
    query: &str,
    at_unix: u64,
) -> Result<Vec<Sample>, FetchError> {
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("query", query)
        .append_pair("time", &at_unix.to_string())
        .append_pair("timeout", &prom_duration(cfg.timeout))
        .finish();
    let mut req = client
        .post(format!("{}/api/v1/query", cfg.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .timeout(cfg.timeout)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let net = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Timeout(cfg.timeout)
        } else {
            FetchError::Unreachable(e.to_string())
        }
    };
    let mut resp = req.send().await.map_err(net)?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if let Some(len) = resp.content_length() {
        if len as usize > cfg.max_bytes {
            return Err(FetchError::TooLarge(format!(
                "{len} bytes announced, limit {}",
                cfg.max_bytes
            )));
        }
    }
    // Read the body in chunks, bounded; never more than one copy of it.
    let mut bytes: Vec<u8> = Vec::new();
    let body_err = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Timeout(cfg.timeout)
        } else {
            FetchError::Truncated(e.to_string())
        }
    };
    while let Some(chunk) = resp.chunk().await.map_err(body_err)? {
        if bytes.len() + chunk.len() > cfg.max_bytes {
            return Err(FetchError::TooLarge(format!(
                "more than {} bytes",
                cfg.max_bytes
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
        return Err(FetchError::Status {
            status: status.as_u16(),
            body: text.replace(['\n', '\r'], " "),
        });
    }
    // Up to --prometheus-max-bytes of JSON: parsed off the async workers.
    let parsed = tokio::task::spawn_blocking(move || serde_json::from_slice::<Response>(&bytes))
        .await
        .map_err(|e| match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => FetchError::Truncated(format!("parse task: {e}")),
        })?
        .map_err(|e| FetchError::NotJson {
            content_type: if content_type.is_empty() {
                "no content-type".into()
            } else {
                content_type
            },
            detail: e.to_string(),
        })?;
    if parsed.status != "success" {
        return Err(FetchError::Rejected(format!(
            "status {:?}: {}",
            parsed.status,
            parsed.error.unwrap_or_default()
        )));
    }
    if !parsed.warnings.is_empty() {
        return Err(FetchError::Rejected(format!(
            "partial answer: {}",
            parsed.warnings.join("; ")
        )));
    }
    let data = parsed
        .data
        .ok_or_else(|| FetchError::Rejected("no data".into()))?;
    if data.result_type != "vector" {
        return Err(FetchError::Rejected(format!(
            "resultType {:?}, expected vector",
            data.result_type
        )));
    }
    if data.result.len() > cfg.max_series {
        return Err(FetchError::TooLarge(format!(
            "{} series, limit {}",
            data.result.len(),
            cfg.max_series
        )));
    }
    Ok(data.result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_query_set_with_selector() {
        let mut cfg = PromConfig::new("http://p:9090/");
        assert_eq!(cfg.url, "http://p:9090");
        cfg.selector = Some(r#"cluster="prod""#.into());
        let q = queries(&cfg);
        assert_eq!(q.len(), 8);
        assert!(q[0].1.starts_with("max by (namespace, pod, container) (quantile_over_time(0.95, rate(container_cpu_usage_seconds_total{"));
        assert!(
            q[0].1
                .contains(r#"namespace!="",cluster="prod"}[300s])[1209600s:300s]"#),
            "{}",
            q[0].1
        );
        assert!(q.iter().all(|(_, s)| s.contains(r#"cluster="prod""#)));
    }
}
