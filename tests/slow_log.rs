//! `serve` (the real binary) with stderr connected to a pipe that nobody reads: once the
//! pipe and the log buffer are full, log lines are dropped and counted, and admissions are
//! answered as fast as before instead of waiting for stderr.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admissions_do_not_wait_for_a_stuck_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let bundle =
        sidecar_sizer::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
            .unwrap();
    sidecar_sizer::certs::write(dir.path(), &bundle).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .arg("--spec-dir")
        .arg(repo().join("examples/specs"))
        .arg("--history")
        .arg(repo().join("examples/history.csv"))
        .args(["--log-buffer-lines", "64"])
        .env("SIDECAR_SIZER_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stderr only up to the start-up line (for the ports), then never again: the
    // pipe (64 KiB) fills after ~150 admission lines, then the 64-line buffer.
    let stderr = child.stderr.take().unwrap();
    let (stuck_pipe, started) = tokio::task::spawn_blocking(move || {
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        loop {
            line.clear();
            assert!(r.read_line(&mut line).unwrap() > 0, "serve exited");
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["message"] == "sidecar-sizer serving" {
                return (r, v);
            }
        }
    })
    .await
    .unwrap();
    let listen: std::net::SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();
    let health: std::net::SocketAddr = started["health_listen"].as_str().unwrap().parse().unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client_trusting(&bundle.ca_pem, true);
    let url = format!("https://127.0.0.1:{}/mutate?timeout=10s", listen.port());
    let body = serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            for _ in 0..150 {
                let t = Instant::now();
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let v: serde_json::Value =
                    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
                assert_eq!(v["response"]["allowed"], true);
                assert!(v["response"].get("patch").is_some(), "{v}");
                slowest = slowest.max(t.elapsed());
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for t in tasks {
        slowest = slowest.max(t.await.unwrap());
    }
    let total = started.elapsed();
    let metrics = reqwest::get(format!("http://{health}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sidecar_sizer_log_lines_dropped_total "))
        .expect("dropped-lines metric")
        .trim()
        .parse()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    drop(stuck_pipe);
    // 1,200 admissions of ~400-byte log lines: far more than the pipe and the buffer hold.
    assert!(dropped > 0, "no log line dropped: {metrics}");
    assert!(
        slowest < Duration::from_secs(2),
        "an admission waited {slowest:?} (total {total:?})"
    );
    assert!(
        total < Duration::from_secs(60),
        "1,200 admissions took {total:?}"
    );
}
