//! Team specs from ConfigMaps, against a test double of the Kubernetes API at the HTTP level:
//! list, watch, a watch that disconnects and resumes from its resourceVersion, a spec that
//! turns bad (last good version kept, warning on admission, metric).

mod common;

use common::*;
use serde_json::{json, Value};
use sidecar_sizer::sources::kube::KubeSource;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

fn cm(ns: &str, name: &str, rv: &str, key: &str, spec: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "resourceVersion": rv,
                     "labels": {"sidecar-sizer.io/spec": "true"}},
        "data": {key: spec}
    })
}

fn spec(cpu: &str) -> String {
    format!("deployment:\n  istio:\n    resources: {{cpu: {cpu}, memory: 64Mi}}\n")
}

struct FakeApi {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    step1: Arc<Notify>,
    step2: Arc<Notify>,
}

async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        let n = sock.read(&mut b).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(String::from_utf8_lossy(&buf).lines().next()?.to_string());
        }
    }
}

async fn chunk(sock: &mut tokio::net::TcpStream, v: &Value) -> bool {
    let line = format!("{v}\n");
    let c = format!("{:x}\r\n{line}\r\n", line.len());
    sock.write_all(c.as_bytes()).await.is_ok()
}

impl FakeApi {
    async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (step1, step2) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (r, s1, s2) = (requests.clone(), step1.clone(), step2.clone());
        tokio::spawn(async move {
            let mut watches = 0;
            while let Ok((mut sock, _)) = listener.accept().await {
                let Some(line) = read_head(&mut sock).await else {
                    continue;
                };
                r.lock().unwrap().push(line.clone());
                let (s1, s2) = (s1.clone(), s2.clone());
                if !line.contains("watch=true") {
                    // The list: one spec, for shop/cart.
                    let body = json!({"apiVersion": "v1", "kind": "ConfigMapList",
                        "metadata": {"resourceVersion": "10"},
                        "items": [cm("shop", "cart-sizing", "10", "cart.yaml", &spec("300m"))]})
                    .to_string();
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    tokio::spawn(async move {
                        let _ = sock.write_all(resp.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                    continue;
                }
                watches += 1;
                let n = watches;
                tokio::spawn(async move {
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n";
                    if sock.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    match n {
                        1 => {
                            s1.notified().await;
                            chunk(&mut sock, &json!({"type": "MODIFIED", "object": cm("shop", "cart-sizing", "11", "cart.yaml", &spec("400m"))})).await;
                            // Drop the connection mid-stream: the watcher must resume from "11".
                        }
                        _ => {
                            s2.notified().await;
                            chunk(&mut sock, &json!({"type": "ADDED", "object": cm("reinv", "cart-sizing", "12", "cart.yaml", &spec("250m"))})).await;
                            chunk(&mut sock, &json!({"type": "MODIFIED", "object": cm("shop", "cart-sizing", "13", "cart.yaml", "deployment:\n  istio:\n    resources: {cpu: fast}\n")})).await;
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                });
            }
        });
        FakeApi {
            url,
            requests,
            step1,
            step2,
        }
    }
}

async fn proxy_cpu(server: &TestServer, fixture_name: &str) -> (String, Value) {
    let (body, pod) = mutate_and_apply(server, &fixture(fixture_name)).await;
    let cpu = pod["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"]
        .as_str()
        .unwrap();
    (cpu.to_string(), body)
}

async fn wait_for(server: &TestServer, fixture_name: &str, want: &str) -> Value {
    for _ in 0..150 {
        let (cpu, body) = proxy_cpu(server, fixture_name).await;
        if cpu == want {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{fixture_name}: proxyCPU never became {want}; last {:?}",
        proxy_cpu(server, fixture_name).await.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_follow_configmaps_through_a_reconnect() {
    let api = FakeApi::start().await;
    let server = TestServer::start(Opts {
        spec_dir: None,
        history: None,
        spec_configmaps: Some(KubeSource::Url(api.url.clone())),
        ..Opts::default()
    })
    .await;
    // Listed before ready.
    assert_eq!(
        proxy_cpu(&server, "review-deployment-pod.json").await.0,
        "300m"
    );
    // A change on the watch.
    api.step1.notify_one();
    wait_for(&server, "review-deployment-pod.json", "400m").await;
    // The watch dropped; the watcher resumed from resourceVersion 11, then got more events:
    // a new spec in another namespace and a broken version of shop/cart.
    api.step2.notify_one();
    wait_for(&server, "review-reinvocation.json", "250m").await;
    let mut warned = false;
    for _ in 0..50 {
        let (cpu, body) = proxy_cpu(&server, "review-deployment-pod.json").await;
        assert_eq!(cpu, "400m", "last good version stays in force");
        if body["response"]["warnings"]
            .to_string()
            .contains("invalid (last good version in use)")
        {
            warned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(warned, "the broken spec is reported on admission");
    let requests = api.requests.lock().unwrap().clone();
    let watches: Vec<&String> = requests
        .iter()
        .filter(|r| r.contains("watch=true"))
        .collect();
    assert!(watches.len() >= 2, "{requests:?}");
    assert!(watches[0].contains("resourceVersion=10"), "{requests:?}");
    assert!(
        watches[1].contains("resourceVersion=11"),
        "resumed, not re-listed: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|r| r.contains("labelSelector=sidecar-sizer.io%2Fspec%3Dtrue")),
        "{requests:?}"
    );
    let lists = requests
        .iter()
        .filter(|r| !r.contains("watch=true"))
        .count();
    assert_eq!(lists, 1, "{requests:?}");
    let m = server.metrics().await;
    assert!(m.contains("sidecar_sizer_spec_errors 1"), "{m}");
    server.stop().await;
}
