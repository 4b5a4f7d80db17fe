//! Shared test helpers: a real server on 127.0.0.1:0 with certs made by the project's own
//! code, and HTTPS clients that trust only the generated CA.
#![allow(dead_code)]

pub mod kube_api;
pub mod prom;

use base64::Engine as _;
use serde_json::Value;
use sidecar_sizer::certs;
use sidecar_sizer::webhook::serve::{self as server, Running, ServeConfig};
use sidecar_sizer::webhook::wire::Settings;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `sidecar-sizer review ARGS… --spec-dir examples/specs --history examples/history.csv`,
/// run from the repository root.
pub fn review_cmd<I, S>(args: I) -> std::process::Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    std::process::Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
        .current_dir(repo())
        .arg("review")
        .args(args)
        .args([
            "--spec-dir",
            "examples/specs",
            "--history",
            "examples/history.csv",
        ])
        .output()
        .unwrap()
}

pub fn fixture(name: &str) -> Value {
    let path = repo().join("tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

pub const FIXTURES: [&str; 6] = [
    "review-deployment-pod.json",
    "review-generate-name.json",
    "review-istio-already-injected.json",
    "review-native-sidecar.json",
    "review-reinvocation.json",
    "review-server-dry-run.json",
];

pub struct TestServer {
    pub running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub base: String,
    pub health: String,
}

pub struct Opts {
    pub spec_dir: Option<PathBuf>,
    pub history: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub prometheus: Option<sidecar_sizer::sources::history::prometheus::PromConfig>,
    pub prometheus_refresh: Duration,
    pub history_max_age: Duration,
    pub spec_configmaps: Option<sidecar_sizer::sources::kube::KubeSource>,
    pub cluster_constraints: Option<sidecar_sizer::sources::kube::KubeSource>,
    pub mesh: Option<sidecar_sizer::sources::mesh::MeshConfig>,
    pub metrics_api: Option<(
        sidecar_sizer::sources::kube::KubeSource,
        sidecar_sizer::sources::metrics_api::MetricsApiConfig,
    )>,
    pub hpa_aware: Option<sidecar_sizer::sources::kube::KubeSource>,
    /// How long `start` waits for the first lists of the cluster sources.
    pub sync_timeout: Duration,
    /// Serve these TLS files (cert, key, CA PEM) instead of a fresh pair.
    pub tls: Option<(PathBuf, PathBuf, String)>,
    pub client_ca: Option<PathBuf>,
    pub limits: sidecar_sizer::webhook::limits::Limits,
    pub settings: Settings,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            spec_dir: Some(repo().join("examples/specs")),
            history: Some(repo().join("examples/history.csv")),
            state_dir: None,
            prometheus: None,
            prometheus_refresh: Duration::from_secs(3600),
            history_max_age: Duration::from_secs(72 * 3600),
            spec_configmaps: None,
            cluster_constraints: None,
            mesh: None,
            metrics_api: None,
            hpa_aware: None,
            sync_timeout: Duration::from_secs(10),
            tls: None,
            client_ca: None,
            limits: sidecar_sizer::webhook::limits::Limits::default(),
            settings: Settings::default(),
        }
    }
}

impl TestServer {
    pub async fn start(opts: Opts) -> TestServer {
        // reqwest is built without a default crypto provider: use ring, like the server.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let (tls_cert, tls_key, ca_pem) = match opts.tls {
            Some(t) => t,
            None => {
                let bundle =
                    certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
                        .unwrap();
                certs::write(dir.path(), &bundle).unwrap();
                (
                    dir.path().join("tls.crt"),
                    dir.path().join("tls.key"),
                    bundle.ca_pem,
                )
            }
        };
        let config = ServeConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            health_listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert,
            tls_key,
            spec_dir: opts.spec_dir,
            history: opts.history,
            state_dir: opts.state_dir,
            prometheus: opts.prometheus,
            prometheus_refresh: opts.prometheus_refresh,
            history_max_age: opts.history_max_age,
            spec_configmaps: opts.spec_configmaps,
            cluster_constraints: opts.cluster_constraints,
            mesh: opts.mesh,
            metrics_api: opts.metrics_api,
            hpa_aware: opts.hpa_aware,
            spec_sync_timeout: opts.sync_timeout,
            settings: opts.settings,
            reload_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(5),
            shutdown_delay: Duration::ZERO,
            client_ca: opts.client_ca,
            limits: opts.limits,
        };
        let running = server::start(config).await.unwrap();
        let base = format!("https://127.0.0.1:{}", running.tls_addr.port());
        let health = format!("http://127.0.0.1:{}", running.health_addr.port());
        TestServer {
            running: Some(running),
            dir,
            ca_pem,
            base,
            health,
        }
    }

    /// The state the handlers read (snapshots, metrics, readiness).
    pub fn shared(&self) -> &Arc<sidecar_sizer::webhook::serve::Shared> {
        &self.running.as_ref().expect("server running").shared
    }

    pub fn client(&self, http2: bool) -> reqwest::Client {
        client_trusting(&self.ca_pem, http2)
    }

    /// The Prometheus text from `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.health))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown().await.unwrap();
        }
    }
}

/// A rustls client config builder (ring) trusting only the CAs in `ca_pem`.
pub fn tls_trusting(
    ca_pem: &str,
) -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
}

/// An HTTPS client that trusts only `ca_pem`, speaking HTTP/1.1 or HTTP/2 (ALPN).
pub fn client_trusting(ca_pem: &str, http2: bool) -> reqwest::Client {
    let mut tls = tls_trusting(ca_pem).with_no_client_auth();
    tls.alpn_protocols = if http2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10));
    let builder = if http2 {
        builder.http2_prior_knowledge()
    } else {
        builder.http1_only()
    };
    builder.build().unwrap()
}

/// POST a review; returns the HTTP status, version and the body as JSON (or text).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> (reqwest::StatusCode, reqwest::Version, Result<Value, String>) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let version = resp.version();
    let bytes = resp.bytes().await.unwrap();
    let parsed =
        serde_json::from_slice(&bytes).map_err(|_| String::from_utf8_lossy(&bytes).to_string());
    (status, version, parsed)
}

/// POST `review` to `/mutate` (HTTP/1.1); the answer must be a 200 with JSON.
pub async fn mutate(server: &TestServer, review: &Value) -> Value {
    let (status, _, body) = post(
        &server.client(false),
        &format!("{}/mutate", server.base),
        serde_json::to_vec(review).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    body.unwrap()
}

/// POST `review` to `/mutate`; returns the answer and the pod with its patch applied.
pub async fn mutate_and_apply(server: &TestServer, review: &Value) -> (Value, Value) {
    let body = mutate(server, review).await;
    let pod = apply(
        &review["request"]["object"],
        &patch_of(&body).expect("a patch"),
    );
    (body, pod)
}

/// Decode `response.patch` (base64 JSONPatch), if any.
pub fn patch_of(review: &Value) -> Option<json_patch::Patch> {
    let p = review["response"].get("patch")?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(p.as_str().expect("patch is a base64 string"))
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// Apply `patch` to a copy of `object`.
pub fn apply(object: &Value, patch: &json_patch::Patch) -> Value {
    let mut doc = object.clone();
    json_patch::patch(&mut doc, patch).unwrap();
    doc
}

pub fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}
