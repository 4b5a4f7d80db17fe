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
    // An OpenSSL client (Python's ssl) trusting both CAs too, a new handshake per request.
    let both_file = vol.path().join("both-cas.pem");
    std::fs::write(&both_file, &both).unwrap();
    let body_file = vol.path().join("review.json");
    std::fs::write(&body_file, &body).unwrap();
    let stop_file = vol.path().join("stop");
    let mut python = std::process::Command::new("python3")
        .arg(repo().join("tests/support/ssl_client.py"))
        .args([
            &both_file,
            std::path::Path::new(&url),
            &body_file,
            &stop_file,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut python_out = std::io::BufReader::new(python.stdout.take().unwrap());
    let (python_out, first) = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut python_out, &mut line).unwrap();
        (python_out, line)
    })
    .await
    .unwrap();
    assert_eq!(first.trim(), "started", "python client did not get through");
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
    // Long enough for both clients to make many new connections to the new certificate.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    std::fs::write(&stop_file, "").unwrap();
    for p in posters {
        p.await.unwrap();
    }
    let (status, rest) = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut { python_out }, &mut rest).unwrap();
        (python.wait().unwrap(), rest)
    })
    .await
    .unwrap();
    assert!(status.success(), "python client: {status:?} {rest}");
    let openssl: serde_json::Value = serde_json::from_str(rest.trim()).unwrap();
    assert_eq!(
        openssl["failed"], 0,
        "OpenSSL client failed during rotation: {openssl}"
    );
    assert!(openssl["ok"].as_u64().unwrap() > 10, "{openssl}");
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

/// `openssl x509` of one PEM certificate: subject, issuer and the key identifiers.
fn openssl_x509(pem: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-issuer",
            "-ext",
            "subjectKeyIdentifier,authorityKeyIdentifier,basicConstraints",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pem.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

/// The hex key identifier on the line after `header` in `openssl x509 -text` output.
fn key_id(text: &str, header: &str) -> String {
    let mut lines = text.lines();
    lines
        .find(|l| l.contains(header))
        .unwrap_or_else(|| panic!("no {header}: {text}"));
    let id = lines.next().unwrap().trim();
    id.trim_start_matches("keyid:").to_string()
}

/// Read back by OpenSSL: every generated CA has a subject of its own, and each leaf names
/// its CA's key (AKI = the CA's SKI) and has a key identifier of its own.
#[test]
fn generated_cas_are_distinct_and_leaves_name_their_ca() {
    let ips = ["127.0.0.1".parse().unwrap()];
    let a = certs::generate(&["localhost".into()], &ips).unwrap();
    let b = certs::generate(&["localhost".into()], &ips).unwrap();
    let (ca_a, ca_b) = (openssl_x509(&a.ca_pem), openssl_x509(&b.ca_pem));
    let subject = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap()
            .to_string()
    };
    assert_ne!(subject(&ca_a), subject(&ca_b), "two CAs share a subject");
    for (ca, bundle) in [(&ca_a, &a), (&ca_b, &b)] {
        let leaf = openssl_x509(&bundle.cert_pem);
        assert_eq!(
            key_id(&leaf, "Authority Key Identifier"),
            key_id(ca, "Subject Key Identifier"),
            "leaf AKI is not its CA's SKI:\n{leaf}\n{ca}"
        );
        assert_ne!(
            key_id(&leaf, "Subject Key Identifier"),
            key_id(ca, "Subject Key Identifier")
        );
        assert!(leaf.contains("CA:FALSE"), "{leaf}");
        let issuer = leaf.lines().find(|l| l.starts_with("issuer=")).unwrap();
        assert_eq!(
            issuer.trim_start_matches("issuer="),
            subject(ca).trim_start_matches("subject=")
        );
    }
}
