//! History faults against a local HTTP server we control (speaking just enough HTTP/1.1):
//! Prometheus down, slow, 5xx, HTML, truncated, NaN/Inf, partial, huge. Each time the
//! previous snapshot stays, a metric says why, and admissions keep answering at once.
//! Plus the state dir: unwritable, corrupt or future-version store, stale history.

mod common;

use common::*;
use serde_json::json;
use sidecar_sizer::sources::history::prometheus::PromConfig;
use sidecar_sizer::sources::history::{now_unix, store};
use sidecar_sizer::webhook::serve::refresh_once;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Mode {
    Ok,
    Status500,
    Html,
    TruncatedJson,
    CutConnection,
    NaN,
    Inf,
    Partial,
    ErrorStatus,
    Slow,
    HugeChunked,
    HugeAnnounced,
}

const MODES: [Mode; 12] = [
    Mode::Ok,
    Mode::Status500,
    Mode::Html,
    Mode::TruncatedJson,
    Mode::CutConnection,
    Mode::NaN,
    Mode::Inf,
    Mode::Partial,
    Mode::ErrorStatus,
    Mode::Slow,
    Mode::HugeChunked,
    Mode::HugeAnnounced,
];

fn vector(value: &str) -> String {
    json!({"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"namespace": "shop", "pod": "cart-7d9f8c6b5-x2x7k", "container": "istio-proxy", "id": "/x"},
         "value": [1.7e9, value]}
    ]}})
    .to_string()
}

/// A plausible answer for each of the refresher's queries.
fn ok_answer(query: &str) -> String {
    let now = now_unix() as f64;
    if query.contains("quantile_over_time") {
        vector("0.3")
    } else if query.contains("count_over_time") {
        vector("4000")
    } else if query.contains("min_over_time(timestamp") {
        vector(&(now - 14.0 * 86400.0).to_string())
    } else if query.contains("max_over_time(timestamp") {
        vector(&now.to_string())
    } else if query.contains("working_set_bytes") {
        vector("83886080")
    } else {
        json!({"status": "success", "data": {"resultType": "vector", "result": []}}).to_string()
    }
}

async fn respond(mut sock: tokio::net::TcpStream, mode: Mode) {
    // Read the request head and body.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let Ok(n) = sock.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let query = form_urlencoded::parse(&buf[head_end..])
        .find(|(k, _)| k == "query")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    let reply = |status: &str, ctype: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let json_ct = "application/json";
    let out = match mode {
        Mode::Ok => reply("200 OK", json_ct, &ok_answer(&query)),
        Mode::Status500 => reply("500 Internal Server Error", "text/plain", "internal error"),
        Mode::Html => reply("200 OK", "text/html", "<html><body>Sign in</body></html>"),
        Mode::TruncatedJson => {
            let full = ok_answer(&query);
            reply("200 OK", json_ct, &full[..full.len() / 2])
        }
        Mode::CutConnection => {
            let full = ok_answer(&query);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {json_ct}\r\ncontent-length: {}\r\n\r\n",
                full.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(&full.as_bytes()[..full.len() / 2]).await;
            return; // connection dropped mid-body
        }
        Mode::NaN => reply("200 OK", json_ct, &vector("NaN")),
        Mode::Inf => reply("200 OK", json_ct, &vector("+Inf")),
        Mode::Partial => {
            let mut v: serde_json::Value = serde_json::from_str(&ok_answer(&query)).unwrap();
            v["warnings"] = json!(["some store was unreachable, results may be partial"]);
            reply("200 OK", json_ct, &v.to_string())
        }
        Mode::ErrorStatus => reply(
            "422 Unprocessable Entity",
            json_ct,
            r#"{"status":"error","errorType":"execution","error":"query timed out"}"#,
        ),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            reply("200 OK", json_ct, &ok_answer(&query))
        }
        Mode::HugeChunked => {
            let _ = sock
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
                .await;
            let piece = vec![b' '; 64 * 1024];
            // Up to 200 MiB, chunk by chunk, until the client gives up.
            for _ in 0..3200 {
                let mut c = format!("{:x}\r\n", piece.len()).into_bytes();
                c.extend_from_slice(&piece);
                c.extend_from_slice(b"\r\n");
                if sock.write_all(&c).await.is_err() {
                    return;
                }
            }
            return;
        }
        Mode::HugeAnnounced => {
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {json_ct}\r\ncontent-length: {}\r\n\r\n",
                200u64 << 20
            );
            let _ = sock.write_all(head.as_bytes()).await;
            return;
        }
    };
    let _ = sock.write_all(out.as_bytes()).await;
    let _ = sock.shutdown().await;
}

struct FakeProm {
    url: String,
    mode: Arc<AtomicU8>,
}

impl FakeProm {
    async fn start() -> FakeProm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mode = Arc::new(AtomicU8::new(Mode::Ok as u8));
        let m = mode.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let mode = MODES[m.load(Ordering::SeqCst) as usize];
                tokio::spawn(respond(sock, mode));
            }
        });
        FakeProm { url, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

fn config(url: &str) -> PromConfig {
    let mut c = PromConfig::new(url);
    c.timeout = Duration::from_millis(1500);
    c.max_bytes = 1024 * 1024;
    c
}

async fn metric(server: &TestServer, needle: &str) -> bool {
    server.metrics().await.contains(needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_faults_keep_the_previous_snapshot() {
    let fake = FakeProm::start().await;
    let state = tempfile::tempdir().unwrap();
    let server = TestServer::start(Opts {
        history: None,
        ..Opts::default()
    })
    .await;
    let shared = server.running.as_ref().unwrap().shared.clone();
    let cfg = config(&fake.url);
    let client = sidecar_sizer::sources::history::prometheus::client(&cfg).unwrap();

    refresh_once(&shared, &client, &cfg, Some(state.path()))
        .await
        .unwrap();
    let good = shared.usage.load_full();
    let cart = good.get("shop", "cart").expect("cart learned");
    assert_eq!(cart.containers["istio-proxy"].cpu_p95_cores, 0.3);
    assert!(store::load(state.path()).unwrap().is_some(), "persisted");

    let cases = [
        (Mode::Status500, "http_status"),
        (Mode::Html, "not_json"),
        (Mode::TruncatedJson, "not_json"),
        (Mode::CutConnection, "truncated"),
        (Mode::NaN, "bad_value"),
        (Mode::Inf, "bad_value"),
        (Mode::Partial, "rejected"),
        (Mode::ErrorStatus, "http_status"),
        (Mode::Slow, "timeout"),
        (Mode::HugeChunked, "too_large"),
        (Mode::HugeAnnounced, "too_large"),
    ];
    for (mode, reason) in cases {
        fake.set(mode);
        let err = refresh_once(&shared, &client, &cfg, Some(state.path()))
            .await
            .unwrap_err();
        assert_eq!(err.reason(), reason, "{mode:?}: {err}");
        assert!(
            Arc::ptr_eq(&good, &shared.usage.load_full()),
            "{mode:?}: snapshot replaced"
        );
        assert!(
            metric(
                &server,
                &format!("sidecar_sizer_history_refreshes_total{{kind=\"{reason}\"}}")
            )
            .await,
            "{mode:?}: no metric"
        );
    }

    // Prometheus down.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let dead_cfg = config(&dead);
    let err = refresh_once(&shared, &client, &dead_cfg, Some(state.path()))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "unreachable", "{err}");
    assert!(Arc::ptr_eq(&good, &shared.usage.load_full()));

    // While a refresh hangs on a slow Prometheus, admissions answer at once.
    fake.set(Mode::Slow);
    let (s2, c2, cfg2) = (shared.clone(), client.clone(), cfg.clone());
    let hanging = tokio::spawn(async move { refresh_once(&s2, &c2, &cfg2, None).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let review = fixture("review-deployment-pod.json");
    let (status, _, body) = post(
        &server.client(true),
        &format!("{}/mutate", server.base),
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    let took = t.elapsed();
    assert_eq!(status, 200);
    assert!(patch_of(&body.unwrap()).is_some());
    assert!(
        !hanging.is_finished(),
        "the refresh should still be waiting on Prometheus"
    );
    assert!(
        took < Duration::from_millis(1000),
        "admission waited on the refresh: {took:?}"
    );
    assert_eq!(hanging.await.unwrap().unwrap_err().reason(), "timeout");

    // The last good store on disk is untouched by all of the above.
    let on_disk = store::load(state.path()).unwrap().unwrap();
    assert_eq!(on_disk.get("shop", "cart"), good.get("shop", "cart"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_state_dir_keeps_history_in_memory() {
    let fake = FakeProm::start().await;
    let server = TestServer::start(Opts {
        history: None,
        ..Opts::default()
    })
    .await;
    let shared = server.running.as_ref().unwrap().shared.clone();
    let cfg = config(&fake.url);
    let client = sidecar_sizer::sources::history::prometheus::client(&cfg).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, b"x").unwrap();
    refresh_once(&shared, &client, &cfg, Some(&not_a_dir))
        .await
        .unwrap();
    assert!(
        shared.usage.load().get("shop", "cart").is_some(),
        "used from memory"
    );
    assert!(
        metric(
            &server,
            "sidecar_sizer_reload_failures_total{kind=\"state_dir\"} 1"
        )
        .await
    );
    server.stop().await;
}

#[tokio::test]
async fn corrupt_or_future_store_is_ignored_at_start() {
    for content in [
        &b"{\"format\":\"sidecar-sizer-history\",\"version\":1,\"meta\":"[..],
        br#"{"format":"sidecar-sizer-history","version":7}"#,
    ] {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(store::path_in(state.path()), content).unwrap();
        let server = TestServer::start(Opts {
            state_dir: Some(state.path().to_path_buf()),
            ..Opts::default()
        })
        .await;
        let shared = server.running.as_ref().unwrap().shared.clone();
        // The history file still loads; the store is reported, not fatal.
        assert_eq!(shared.usage.load().len(), 3);
        assert!(
            metric(
                &server,
                "sidecar_sizer_reload_failures_total{kind=\"state_dir\"} 1"
            )
            .await
        );
        server.stop().await;
    }
}

#[tokio::test]
async fn stale_learned_history_is_not_used() {
    let state = tempfile::tempdir().unwrap();
    // A store with a confident but 10-day-old history for shop/cart.
    let (mut snap, _) = sidecar_sizer::sources::history::parse_history(
        "shop,cart,istio-proxy,3.0,1073741824,4032,336,6,0\n",
    );
    snap.meta.source = "prometheus http://old".into();
    snap.meta.fetched_at = Some(now_unix() - 10 * 86400);
    store::save(state.path(), &snap).unwrap();
    let server = TestServer::start(Opts {
        history: None,
        state_dir: Some(state.path().to_path_buf()),
        ..Opts::default()
    })
    .await;
    assert!(metric(&server, "sidecar_sizer_history_stale 1").await);
    let review = fixture("review-deployment-pod.json");
    let (_, pod) = mutate_and_apply(&server, &review).await;
    // The spec (500m/80Mi) decides, not the stale 3-core history.
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"],
        "500m"
    );
    server.stop().await;

    // Fresh enough with a longer max age: used.
    let server = TestServer::start(Opts {
        history: None,
        state_dir: Some(state.path().to_path_buf()),
        history_max_age: Duration::from_secs(30 * 86400),
        ..Opts::default()
    })
    .await;
    let (_, pod) = mutate_and_apply(&server, &review).await;
    // 3 cores ÷ 0.75 = 4 cores (the max bound), history replicas 6 = spec replicas.
    assert_eq!(
        pod["metadata"]["annotations"]["sidecar.istio.io/proxyCPU"],
        "4"
    );
    server.stop().await;
}
