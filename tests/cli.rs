//! The binary as users run it: `spec check`, `certs`, `serve` configured by environment
//! variables, and SIGTERM.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
}

#[test]
fn spec_check_reports_locations() {
    let out = bin()
        .args(["spec", "check"])
        .arg(repo().join("examples/specs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 spec file(s) OK"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("shop/web.yaml");
    write(
        &bad,
        "deployment:\n  istio:\n    resources:\n      memory: 12 parsecs\n",
    );
    write(
        &dir.path().join("shop/ok.yaml"),
        "deployment:\n  istio:\n    resources: {cpu: 1}\n",
    );
    let out = bin()
        .args(["spec", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: deployment.istio.resources.memory: quantity \"12 parsecs\"",
            bad.display()
        )),
        "{err}"
    );
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("1 error(s) in 2 spec file(s)"), "{err}");
}

#[test]
fn certs_writes_a_ca_and_a_serving_pair() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["certs", "--out"])
        .arg(dir.path())
        .args(["--dns", "example.test", "--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for f in ["ca.crt", "tls.crt", "tls.key"] {
        assert!(dir.path().join(f).is_file(), "{f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("tls.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "tls.key must not be readable by others");
    sidecar_sizer::certs::load_server_config(
        &dir.path().join("tls.crt"),
        &dir.path().join("tls.key"),
        None,
    )
    .unwrap();
}

#[test]
fn help_names_env_vars() {
    let out = bin().args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "SIDECAR_SIZER_LISTEN",
        "SIDECAR_SIZER_MODE",
        "SIDECAR_SIZER_TARGET_UTILIZATION",
        "--spec-dir",
    ] {
        assert!(help.contains(needle), "{needle} missing from help");
    }
}

#[test]
fn serve_fails_fast_on_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = sidecar_sizer::certs::generate(&["localhost".into()], &[]).unwrap();
    sidecar_sizer::certs::write(dir.path(), &bundle).unwrap();
    let out = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--health-listen",
            "127.0.0.1:0",
            "--history",
            "/nonexistent/history.csv",
        ])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/history.csv"));
    let out = bin()
        .args(["serve", "--tls-cert", "/nonexistent/tls.crt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert /nonexistent/tls.crt"));
    // Policies that would leave every pod unsized do not start; the error names the flag.
    for (flag, value) in [
        ("--cpu-limit-factor", "0.5"),
        ("--cpu-limit-min", "0"),
        ("--memory-headroom", "0.8"),
    ] {
        let out = bin()
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--health-listen",
                "127.0.0.1:0",
                flag,
                value,
            ])
            .arg("--tls-cert")
            .arg(dir.path().join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.path().join("tls.key"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
        // review refuses the same policy.
        let out = bin()
            .args(["review", "examples/manifests", flag, value])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "review {flag} {value}: {err}");
        assert!(err.contains(flag), "review {flag}: {err}");
    }
}

/// `serve` configured only by SIDECAR_SIZER_* variables, then SIGTERM: exit 0.
#[tokio::test]
async fn serve_from_env_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bundle =
        sidecar_sizer::certs::generate(&["localhost".into()], &["127.0.0.1".parse().unwrap()])
            .unwrap();
    sidecar_sizer::certs::write(dir.path(), &bundle).unwrap();
    let mut child = bin()
        .arg("serve")
        .env("SIDECAR_SIZER_LISTEN", "127.0.0.1:0")
        .env("SIDECAR_SIZER_HEALTH_LISTEN", "127.0.0.1:0")
        .env("SIDECAR_SIZER_TLS_CERT", dir.path().join("tls.crt"))
        .env("SIDECAR_SIZER_TLS_KEY", dir.path().join("tls.key"))
        .env("SIDECAR_SIZER_SPEC_DIR", repo().join("examples/specs"))
        .env("SIDECAR_SIZER_HISTORY", repo().join("examples/history.csv"))
        .env("SIDECAR_SIZER_MODE", "dry-run")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        }
    });
    let started = rx
        .iter()
        .find(|v| v["message"] == "sidecar-sizer serving")
        .expect("serving log line");
    let listen: std::net::SocketAddr = started["listen"].as_str().unwrap().parse().unwrap();

    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = client_trusting(&bundle.ca_pem, false);
    let review = fixture("review-deployment-pod.json");
    let (status, _, body) = post(
        &client,
        &format!("https://127.0.0.1:{}/mutate", listen.port()),
        serde_json::to_vec(&review).unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let out = body.unwrap();
    // SIDECAR_SIZER_MODE=dry-run: no patch even on /mutate.
    assert!(out["response"].get("patch").is_none(), "{out}");
    // One JSON log line per admission, with the workload and the decision.
    let line = rx
        .iter()
        .find(|v| v["message"] == "admission")
        .expect("admission log line");
    assert_eq!(line["uid"], review["request"]["uid"]);
    assert_eq!(line["workload"], "cart");
    assert_eq!(line["source"], "history");
    assert!(line["duration_us"].as_u64().is_some());
    assert!(
        !line.to_string().contains("kube-api-access"),
        "the pod is never logged"
    );

    // Secrets in the pod never reach the logs: a valid pod with an env value, and a pod
    // whose field has the wrong type holding a secret (serde would quote it).
    let secret = "s3cr3t-Value-9f8e7d";
    let mut with_env = fixture("review-deployment-pod.json");
    with_env["request"]["object"]["spec"]["containers"][0]["env"] =
        serde_json::json!([{"name": "DB_PASSWORD", "value": secret}]);
    let mut wrong_type = fixture("review-deployment-pod.json");
    wrong_type["request"]["object"]["spec"]["containers"][0]["env"] = serde_json::json!(secret);
    let mut answers = String::new();
    for review in [&with_env, &wrong_type] {
        let (status, _, body) = post(
            &client,
            &format!("https://127.0.0.1:{}/mutate", listen.port()),
            serde_json::to_vec(review).unwrap(),
        )
        .await;
        assert_eq!(status, 200);
        answers.push_str(&body.unwrap().to_string());
    }
    assert!(
        !answers.contains(secret),
        "a secret in a warning: {answers}"
    );
    let mut logged = Vec::new();
    while let Ok(v) = rx.recv_timeout(Duration::from_millis(500)) {
        logged.push(v.to_string());
    }
    assert!(
        logged
            .iter()
            .filter(|l| l.contains("\"admission\""))
            .count()
            >= 2,
        "{logged:?}"
    );
    assert!(
        !logged.iter().any(|l| l.contains(secret)),
        "a secret in the logs: {logged:?}"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
