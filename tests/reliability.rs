//! The fault suite: every case runs the real server and a real client, and checks that
//! every review is answered within its budget, every answer is allowed, every patch applies
//! and leaves a valid pod, and the server is still alive — plus the case's own expectation.

mod common;

use common::*;
use serde_json::{json, Value};
use sidecar_sizer::webhook::limits::Limits;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Request ≤ limit for every resource of every container, and for the Istio annotation
/// pairs: the checks the apiserver applies to what we return.
fn assert_valid_pod(pod: &Value, case: &str) {
    let parse =
        |q: &Value| sidecar_sizer::engine::quantity::Quantity::parse(q.as_str().unwrap_or("")).ok();
    for list in ["containers", "initContainers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
            for (name, l) in lim.as_object().into_iter().flatten() {
                if let (Some(r), Some(l)) = (req.get(name).and_then(parse), parse(l)) {
                    assert!(r <= l, "{case}: {} {name} request above limit", c["name"]);
                }
            }
        }
    }
    let a = &pod["metadata"]["annotations"];
    for (r, l) in [
        ("proxyCPU", "proxyCPULimit"),
        ("proxyMemory", "proxyMemoryLimit"),
    ] {
        let get = |k: &str| a.get(format!("sidecar.istio.io/{k}")).and_then(parse);
        if let (Some(r), Some(l)) = (get(r), get(l)) {
            assert!(r <= l, "{case}: annotations {r:?} > {l:?}");
        }
    }
}

/// Post `review`; the answer must be allowed, echo the uid, and its patch (if any) must
/// apply and leave a valid pod, which is returned.
async fn check(server: &TestServer, review: &Value, case: &str) -> (Value, Value) {
    let (status, _, body) = post(
        &server.client(false),
        &format!("{}/mutate?timeout=2s", server.base),
        serde_json::to_vec(review).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{case}");
    let out = body.unwrap_or_else(|t| panic!("{case}: {t}"));
    assert_eq!(out["response"]["allowed"], true, "{case}");
    assert_eq!(out["response"]["uid"], review["request"]["uid"], "{case}");
    let object = &review["request"]["object"];
    let pod = match patch_of(&out) {
        Some(p) => {
            let mut doc = object.clone();
            json_patch::patch(&mut doc, &p)
                .unwrap_or_else(|e| panic!("{case}: patch does not apply: {e}"));
            assert_valid_pod(&doc, case);
            doc
        }
        None => object.clone(),
    };
    for w in out["response"]["warnings"].as_array().into_iter().flatten() {
        let w = w.as_str().unwrap();
        assert!(
            w.chars().count() <= 120 && !w.chars().any(char::is_control),
            "{case}: {w:?}"
        );
    }
    (out, pod)
}

fn base() -> Value {
    fixture("review-istio-already-injected.json")
}

fn with(edit: impl FnOnce(&mut Value)) -> Value {
    let mut r = base();
    edit(&mut r["request"]["object"]);
    r
}

fn proxy(o: &mut Value) -> &mut Value {
    o["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "istio-proxy")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_pods_are_answered_safely() {
    let server = TestServer::start(Opts::default()).await;
    let long = "a".repeat(253);
    let cases: Vec<(&str, Value)> = vec![
        (
            "no containers",
            with(|o| o["spec"]["containers"] = json!([])),
        ),
        (
            "100 containers",
            with(|o| {
                let c: Vec<Value> = (0..100)
                    .map(|i| json!({"name": format!("c{i}"), "image": "x"}))
                    .collect();
                o["spec"]["containers"] = json!(c);
            }),
        ),
        (
            "duplicate istio-proxy",
            with(|o| {
                let p = proxy(o).clone();
                o["spec"]["containers"].as_array_mut().unwrap().push(p);
            }),
        ),
        (
            "proxy with only limits",
            with(|o| proxy(o)["resources"] = json!({"limits": {"cpu": "500m", "memory": "256Mi"}})),
        ),
        (
            "proxy with only requests",
            with(|o| proxy(o)["resources"] = json!({"requests": {"cpu": "3", "memory": "2Gi"}})),
        ),
        (
            "extended resources",
            with(|o| {
                proxy(o)["resources"] =
                    json!({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}})
            }),
        ),
        (
            "ephemeral-storage",
            with(
                |o| proxy(o)["resources"] = json!({"requests": {"ephemeral-storage": "1Gi"}, "limits": {"ephemeral-storage": "2Gi"}}),
            ),
        ),
        (
            "hugepages",
            with(
                |o| proxy(o)["resources"] = json!({"requests": {"hugepages-2Mi": "64Mi"}, "limits": {"hugepages-2Mi": "64Mi"}}),
            ),
        ),
        (
            "requests above limits already",
            with(
                |o| proxy(o)["resources"] = json!({"requests": {"memory": "2Gi", "ephemeral-storage": "3Gi"}, "limits": {"memory": "1Gi", "ephemeral-storage": "1Gi"}}),
            ),
        ),
        (
            "garbage quantity on proxy",
            with(|o| proxy(o)["resources"] = json!({"limits": {"ephemeral-storage": "lots"}})),
        ),
        (
            "253-char names",
            with(|o| {
                o["metadata"]["name"] = json!(long.clone());
                o["metadata"]["labels"]["app"] = json!(long.clone());
            }),
        ),
        (
            "unicode labels",
            with(|o| o["metadata"]["labels"]["app"] = json!("wärenkorb-日本")),
        ),
        (
            "empty annotations map",
            with(|o| o["metadata"]["annotations"] = json!({})),
        ),
        (
            "null labels",
            with(|o| o["metadata"]["labels"] = Value::Null),
        ),
    ];
    let owners = [
        "ReplicaSet",
        "StatefulSet",
        "DaemonSet",
        "Job",
        "CronJob",
        "ReplicationController",
        "Rollout",
        "Node",
        "",
    ];
    let mut cases = cases;
    for kind in owners {
        cases.push((kind, with(|o| {
            o["metadata"]["ownerReferences"] = json!([{"apiVersion": "x/v1", "kind": kind, "name": "owner-12345678", "uid": "u", "controller": true}]);
        })));
    }
    for (case, review) in &cases {
        let (out, pod) = check(&server, review, case).await;
        match *case {
            "duplicate istio-proxy"
            | "requests above limits already"
            | "garbage quantity on proxy" => {
                assert!(
                    out["response"].get("patch").is_none(),
                    "{case}: must not patch"
                );
                assert!(
                    out["response"]["warnings"][0]
                        .as_str()
                        .unwrap()
                        .contains("not sized"),
                    "{case}"
                );
            }
            "proxy with only limits"
            | "proxy with only requests"
            | "extended resources"
            | "ephemeral-storage"
            | "hugepages" => {
                let c = pod["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == "istio-proxy")
                    .unwrap();
                assert_eq!(c["resources"]["requests"]["cpu"], "145m", "{case}");
                assert_eq!(c["resources"]["limits"]["memory"], "92Mi", "{case}");
                // Other resources are kept as they were.
                let orig = &review["request"]["object"];
                let oc = orig["spec"]["containers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|c| c["name"] == "istio-proxy")
                    .unwrap();
                for section in ["requests", "limits"] {
                    for (k, v) in oc["resources"][section].as_object().into_iter().flatten() {
                        if k != "cpu" && k != "memory" {
                            assert_eq!(&c["resources"][section][k], v, "{case}: {section}.{k}");
                        }
                    }
                }
            }
            _ => assert!(patch_of(&out).is_some(), "{case}: expected a patch: {out}"),
        }
    }
    // Still alive and healthy.
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.health))
            .await
            .unwrap()
            .status(),
        200
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinvocation_and_replicas_agree() {
    let a = TestServer::start(Opts::default()).await;
    let b = TestServer::start(Opts::default()).await;
    for name in FIXTURES {
        let review = fixture(name);
        let (out_a, pod) = check(&a, &review, name).await;
        let (out_b, _) = check(&b, &review, name).await;
        assert_eq!(
            out_a["response"]["patch"], out_b["response"]["patch"],
            "{name}: replicas differ"
        );
        // Another webhook changes the pod after us; we are called again.
        let mut again = review.clone();
        let mut changed = pod.clone();
        changed["metadata"]["annotations"]["other-webhook.example/touched"] = json!("yes");
        changed["metadata"]["labels"]["team"] = json!("checkout");
        again["request"]["object"] = changed;
        again["request"]["uid"] = json!(format!("{name}-reinvocation"));
        let (out, _) = check(&a, &again, name).await;
        assert!(
            out["response"].get("patch").is_none(),
            "{name}: re-sized differently: {out}"
        );
    }
    a.stop().await;
    b.stop().await;
}

async fn tls_connect(
    server: &TestServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut cfg = tls_trusting(&server.ca_pem).with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let addr = server.running.as_ref().unwrap().tls_addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Send the head and half of a review's body, then stall.
async fn stalled_review(
    server: &TestServer,
    path: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let body = serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap();
    let mut s = tls_connect(server).await;
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body[..body.len() / 2]).await.unwrap();
    s.flush().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_quickly() {
    let server = TestServer::start(Opts {
        limits: Limits {
            max_inflight: 2,
            ..Limits::default()
        },
        ..Opts::default()
    })
    .await;
    // Two reviews whose bodies never finish hold no review slot: a slot is taken only
    // once the body is in, so the next review is sized.
    let _slow1 = stalled_review(&server, "/mutate?timeout=10s").await;
    let _slow2 = stalled_review(&server, "/mutate?timeout=10s").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let review = fixture("review-deployment-pod.json");
    let (out, _) = check(&server, &review, "slow bodies pending").await;
    assert!(
        patch_of(&out).is_some(),
        "stalled bodies held review slots: {out}"
    );
    drop((_slow1, _slow2));

    // Both slots taken (held here, as two reviews being sized would): the next review is
    // answered at once, allowed, unsized.
    let held = server.shared().inflight.try_acquire_many(2).unwrap();
    let t = Instant::now();
    let (out, _) = check(&server, &review, "overloaded").await;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shed answer took {:?}",
        t.elapsed()
    );
    assert!(out["response"].get("patch").is_none());
    assert!(
        out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("overloaded (all 2 review slots busy)"),
        "{out}"
    );
    let m = server.metrics().await;
    assert!(m.contains("outcome=\"shed\""), "{m}");
    drop(held);
    let (out, _) = check(&server, &review, "after overload").await;
    assert!(
        patch_of(&out).is_some(),
        "sizing resumes once slots free up"
    );

    // A flood far above the limit: every review answered, allowed, in time.
    let client = server.client(true);
    let url = format!("{}/mutate?timeout=2s", server.base);
    let body = serde_json::to_vec(&review).unwrap();
    let mut tasks = Vec::new();
    for _ in 0..300 {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.post(&url).body(body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            let v: Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
            assert_eq!(v["response"]["allowed"], true);
            (t.elapsed(), v["response"].get("patch").is_some())
        }));
    }
    let mut patched = 0;
    for t in tasks {
        let (took, p) = t.await.unwrap();
        assert!(
            took < Duration::from_secs(2),
            "a review waited {took:?}, past the apiserver's timeout"
        );
        patched += usize::from(p);
    }
    assert!(patched > 0, "some reviews still sized");
    server.stop().await;
}

/// The runtime-lag shed, with a real lag: the server runs on a runtime of its own (one
/// worker) that a task blocks 400 ms at a time, as a saturated core would. Reviews
/// (budget 1.6 s: lag above 200 ms sheds) are answered allowed, unsized, with the lag in
/// the warning; once the blocking stops, the lag decays and reviews are sized again.
#[test]
fn runtime_lag_is_shed() {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = server_rt.block_on(TestServer::start(Opts::default()));
    let review = fixture("review-deployment-pod.json");
    client_rt.block_on(async {
        let (out, _) = check(&server, &review, "idle").await;
        assert!(patch_of(&out).is_some(), "sized while idle: {out}");
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hog_stop = stop.clone();
    server_rt.spawn(async move {
        while !hog_stop.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(400));
            tokio::task::yield_now().await;
        }
    });
    std::thread::sleep(Duration::from_millis(900));
    let mut shed = 0;
    client_rt.block_on(async {
        for i in 0..3 {
            let (out, _) = check(&server, &review, &format!("lagging {i}")).await;
            let w = out["response"]["warnings"][0].as_str().unwrap_or("");
            if w.contains("overloaded (runtime lag") {
                assert!(out["response"].get("patch").is_none(), "{out}");
                shed += 1;
            }
        }
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        shed >= 2,
        "only {shed} of 3 reviews shed under a 400 ms runtime lag"
    );
    std::thread::sleep(Duration::from_millis(700));
    client_rt.block_on(async {
        let (out, _) = check(&server, &review, "recovered").await;
        assert!(
            patch_of(&out).is_some(),
            "sized once the lag is gone: {out}"
        );
        let m = server.metrics().await;
        assert!(m.contains("outcome=\"shed\""), "{m}");
    });
    server_rt.block_on(server.stop());
    client_rt.shutdown_background();
    server_rt.shutdown_background();
}

/// A panic in the reload task: counted, `/readyz` 503 while it is down, restarted after
/// 1 s, and then it still rotates the TLS certificate (new connections get the new one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_task_panic_is_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let ips = ["127.0.0.1".parse().unwrap()];
    let old = sidecar_sizer::certs::generate(&["localhost".into()], &ips).unwrap();
    sidecar_sizer::certs::write(dir.path(), &old).unwrap();
    let server = TestServer::start(Opts {
        tls: Some((
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            old.ca_pem.clone(),
        )),
        ..Opts::default()
    })
    .await;
    let readyz = || async {
        reqwest::get(format!("{}/readyz", server.health))
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(readyz().await, 200);
    server.shared().inject_reload_panic();
    // The reload interval is 200 ms and the restart delay 1 s: 503 is seen in between.
    let t = Instant::now();
    let mut seen_down = false;
    while t.elapsed() < Duration::from_secs(3) {
        if readyz().await == 503 {
            seen_down = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        seen_down,
        "/readyz never went 503 with the reload task down"
    );
    let m = server.metrics().await;
    assert!(
        m.contains("sidecar_sizer_task_restarts_total{task=\"reload\"} 1"),
        "{m}"
    );
    let t = Instant::now();
    while readyz().await != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "reload task not restarted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The restarted task still reloads: rotate the certificate.
    let new = sidecar_sizer::certs::generate(&["localhost".into()], &ips).unwrap();
    sidecar_sizer::certs::write(dir.path(), &new).unwrap();
    let only_new = client_trusting(&new.ca_pem, false);
    let body = serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap();
    let t = Instant::now();
    loop {
        let r = only_new
            .post(format!("{}/mutate", server.base))
            .body(body.clone())
            .send()
            .await;
        if r.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "certificate not reloaded after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let server = TestServer::start(Opts {
        limits: Limits {
            max_connections: 3,
            handshake_timeout: Duration::from_millis(500),
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        },
        ..Opts::default()
    })
    .await;
    let addr = server.running.as_ref().unwrap().tls_addr;
    // A body slower than the budget (80 % of ?timeout=1s): 408 at the deadline.
    let mut s = stalled_review(&server, "/mutate?timeout=1s").await;
    let t = Instant::now();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    drop(s);

    // Connections that never start TLS are closed after the handshake timeout.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    let t = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // Headers never finished: closed after the header timeout.
    let mut s = tls_connect(&server).await;
    s.write_all(b"POST /mutate HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let t = Instant::now();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut resp)).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(s);

    // At most 3 connections: a 4th is closed at accept while 3 are held.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let held: Vec<_> = futures_hold(&server, 3).await;
    let review = serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap();
    let refused = server
        .client(false)
        .post(format!("{}/mutate", server.base))
        .body(review.clone())
        .send()
        .await;
    assert!(refused.is_err(), "4th connection accepted");
    drop(held);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ok = server
        .client(false)
        .post(format!("{}/mutate", server.base))
        .body(review)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let m = server.metrics().await;
    assert!(
        m.contains("sidecar_sizer_connections_refused_total 1"),
        "{m}"
    );
    server.stop().await;
}

async fn futures_hold(
    server: &TestServer,
    n: usize,
) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(tls_connect(server).await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_when_configured() {
    let client_pki = sidecar_sizer::certs::generate_client("kube-apiserver").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("client-ca.crt");
    std::fs::write(&ca, &client_pki.ca_pem).unwrap();
    let server = TestServer::start(Opts {
        client_ca: Some(ca),
        ..Opts::default()
    })
    .await;
    let body = serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap();
    let url = format!("{}/mutate", server.base);
    // Without a client certificate: refused.
    assert!(server
        .client(false)
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .is_err());
    // With one signed by the configured CA: served.
    use rustls::pki_types::pem::PemObject;
    let chain: Vec<_> =
        rustls::pki_types::CertificateDer::pem_slice_iter(client_pki.cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
    let key =
        rustls::pki_types::PrivateKeyDer::from_pem_slice(client_pki.key_pem.as_bytes()).unwrap();
    let mut cfg = tls_trusting(&server.ca_pem)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(cfg)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = client.post(&url).body(body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    server.stop().await;
}

#[test]
fn thousands_of_spec_files_load() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3000 {
        write(
            &dir.path().join(format!("ns{}/w{i}.yaml", i % 50)),
            &format!(
                "deployment:\n  istio:\n    resources: {{cpu: {}m, memory: 64Mi}}\n",
                10 + i
            ),
        );
    }
    write(&dir.path().join("ns0/bad.yaml"), "deployment: [");
    let store = sidecar_sizer::engine::spec::SpecStore::load_dir(dir.path(), &Default::default());
    assert_eq!(store.len(), 3001);
    assert_eq!(store.errors.len(), 1);
    let e = store.get("ns7", "w7").unwrap().spec.as_ref().unwrap();
    assert_eq!(
        e.proxy_requests.cpu,
        Some(sidecar_sizer::engine::quantity::Cpu(17))
    );
    // An unchanged tree is not parsed again: the reload reuses every entry.
    let again = sidecar_sizer::engine::spec::SpecStore::load_dir(dir.path(), &store);
    assert!(Arc::ptr_eq(
        again.get("ns7", "w7").unwrap().spec.as_ref().unwrap(),
        store.get("ns7", "w7").unwrap().spec.as_ref().unwrap()
    ));
}
