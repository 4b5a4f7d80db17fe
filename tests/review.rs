//! `sidecar-sizer review` as a CI job runs it: golden output for every format on the
//! example manifests (multi-document YAML, a List in JSON, a CronJob, a pod with a native
//! sidecar, a workload without spec, one with low-confidence history), `--write` round trip,
//! exit codes, stdin, and bad input. `UPDATE_GOLDEN=1` rewrites the golden files.

mod common;

use common::*;
use std::process::{Command, Output, Stdio};

fn review(args: &[&str]) -> Output {
    review_cmd(args)
}

fn golden(name: &str, got: &str) {
    let path = repo().join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        got, want,
        "{name} changed; review and run with UPDATE_GOLDEN=1"
    );
}

#[test]
fn golden_formats() {
    for (format, file) in [
        ("table", "review.table.txt"),
        ("markdown", "review.md"),
        ("json", "review.json"),
        ("diff", "review.diff"),
    ] {
        let out = review(&["examples/manifests", "--format", format]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{format}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains('\x1b'), "no colour when not on a terminal");
        golden(file, &text);
    }
}

#[test]
fn json_is_one_document_with_every_workload() {
    let out = review(&["examples/manifests", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v.as_array().unwrap();
    let names: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}/{} {}",
                i["namespace"].as_str().unwrap(),
                i["workload"].as_str().unwrap(),
                i["kind"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "shop/cart Deployment",
        "shop/search Deployment",
        "payments/ledger StatefulSet",
        "shop/nightly-report CronJob",
        "shop/cart Pod",
    ] {
        assert!(
            names.contains(&want.to_string()),
            "{want} missing from {names:?}"
        );
    }
    let search = items.iter().find(|i| i["workload"] == "search").unwrap();
    assert_eq!(search["source"], "default");
    assert!(search["warnings"][0]
        .as_str()
        .unwrap()
        .contains("low confidence"));
    let pod = items.iter().find(|i| i["kind"] == "Pod").unwrap();
    // The native sidecar's own resources are the current size.
    assert_eq!(pod["current"]["cpu"], "100m");
    assert_eq!(pod["proposed"]["cpu"], "145m");
}

#[test]
fn write_round_trip_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(repo().join("examples/manifests")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let d = dir.path().to_str().unwrap();
    // Changes proposed: exit 2 with --fail-on-change; 2 wins over 3.
    assert_eq!(review(&[d, "--fail-on-change"]).status.code(), Some(2));
    assert_eq!(
        review(&[d, "--fail-on-change", "--fail-on-warning"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(review(&[d, "--fail-on-warning"]).status.code(), Some(3));

    let before = std::fs::read_to_string(dir.path().join("shop.yaml")).unwrap();
    let out = review(&[d, "--write"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = std::fs::read_to_string(dir.path().join("shop.yaml")).unwrap();
    assert_ne!(before, after);
    assert!(
        after.starts_with("# shop: the cart service"),
        "leading comment kept"
    );
    // The untouched Service document is kept byte for byte.
    let service = "apiVersion: v1\nkind: Service\nmetadata:\n  name: cart\n  namespace: shop\nspec:\n  selector:\n    app: cart\n  ports:\n    - port: 80\n";
    assert!(after.contains(service), "{after}");
    // Reviewed again: nothing more to change.
    let again = review(&[d, "--fail-on-change", "--format", "json"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(v.as_array().unwrap().iter().all(|i| i["changed"] == false));
    // The written manifest is what the webhook would produce for its pods.
    let docs: Vec<serde_yaml_ng::Value> = after
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect();
    let ann = &docs[0]["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["sidecar.istio.io/proxyCPU"], "145m");
    assert_eq!(ann["sidecar.istio.io/proxyMemoryLimit"], "92Mi");
    assert!(ann["sidecar-sizer.io/decision"]
        .as_str()
        .unwrap()
        .contains("\"source\":\"history\""));
}

#[test]
fn stdin_and_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ok-pod\n  namespace: shop\nspec:\n  containers: [{name: app}]\n---\nkind: Deployment\nmetadata: {name: [oops\n",
    )
    .unwrap();
    let out = review(&[
        bad.to_str().unwrap(),
        "/nonexistent/file.yaml",
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    // The second document starts on line 9; the parser stops at its end (line 10-11).
    let prefix = format!("{}:", bad.display());
    let line: usize = err
        .lines()
        .find_map(|l| l.strip_prefix("error: ")?.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(':').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no file:line in {err}"));
    assert!((9..=11).contains(&line), "line {line}: {err}");
    assert!(err.contains("/nonexistent/file.yaml: cannot read"), "{err}");
    // The good document was still reviewed.
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["name"], "ok-pod");

    // helm template . | sidecar-sizer review -
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidecar-sizer"))
        .current_dir(repo())
        .args([
            "review",
            "-",
            "--format",
            "json",
            "--spec-dir",
            "examples/specs",
            "--history",
            "examples/history.csv",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(
                std::fs::read_to_string(repo().join("examples/manifests/shop.yaml"))
                    .unwrap()
                    .as_bytes(),
            )
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["file"], "<stdin>");
}
