//! Serving certificate rotated the way kubelet updates a Secret volume (the `..data`
//! symlink swapped to a new timestamped directory) while a client keeps posting: zero
//! failed requests, and new connections get the new certificate.

mod common;

use common::*;
use sidecar_sizer::certs;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn secret_volume_version(dir: &Path, version: &str, bundle: &certs::CertBundle) {
    let v = dir.join(version);
    std::fs::create_dir_all(&v).unwrap();
    std::fs::write(v.join("tls.crt"), &bundle.cert_pem).unwrap();
    std::fs::write(v.join("tls.key"), &bundle.key_pem).unwrap();
    // Atomic swap of ..data, as kubelet's AtomicWriter does.
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotate_while_posting() {
    let vol = tempfile::tempdir().unwrap();
    let ips = ["127.0.0.1".parse().unwrap()];
    let old = certs::generate(&["localhost".into()], &ips).unwrap();
    let new = certs::generate(&["localhost".into()], &ips).unwrap();
    secret_volume_version(vol.path(), "..2026_11_22_00_00_00.1", &old);
    std::os::unix::fs::symlink("..data/tls.crt", vol.path().join("tls.crt")).unwrap();
    std::os::unix::fs::symlink("..data/tls.key", vol.path().join("tls.key")).unwrap();

    let server = TestServer::start(Opts {
        tls: Some((
            vol.path().join("tls.crt"),
            vol.path().join("tls.key"),
            old.ca_pem.clone(),
        )),
        ..Opts::default()
    })
    .await;
    let url = format!("{}/mutate", server.base);
    let body = serde_json::to_vec(&fixture("review-deployment-pod.json")).unwrap();
    // A client that trusts both CAs keeps posting; new connections now and then.
    let both = format!("{}{}", old.ca_pem, new.ca_pem);
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut posters = Vec::new();
    for http2 in [false, true] {
        let (ok, failed, stop, url, body, both) = (
            ok.clone(),
            failed.clone(),
            stop.clone(),
            url.clone(),
            body.clone(),
            both.clone(),
        );
        posters.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 20_000 {
                let client = client_trusting(&both, http2);
                for _ in 0..20 {
                    let good = match client.post(&url).body(body.clone()).send().await {
                        Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if good {
                        ok.fetch_add(1, Ordering::SeqCst);
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    i += 1;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    secret_volume_version(vol.path(), "..2026_11_22_01_00_00.2", &new);

    // New connections are served the new certificate: a client trusting only the new CA
    // gets through.
    let only_new = client_trusting(&new.ca_pem, false);
    let mut rotated = false;
    for _ in 0..100 {
        if only_new
            .post(&url)
            .body(body.clone())
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for p in posters {
        p.await.unwrap();
    }
    assert!(rotated, "new certificate never served");
    // And the old CA no longer works for new connections.
    let only_old = client_trusting(&old.ca_pem, false);
    assert!(only_old.post(&url).body(body.clone()).send().await.is_err());
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during rotation"
    );
    assert!(
        ok.load(Ordering::SeqCst) > 50,
        "too few requests: {}",
        ok.load(Ordering::SeqCst)
    );
    let m = server.metrics().await;
    assert!(m.contains("sidecar_sizer_tls_reloads_total 1"), "{m}");
    server.stop().await;
}
