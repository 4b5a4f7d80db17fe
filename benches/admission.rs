//! Micro benchmarks: the whole review (parse → decide → patch → validate → serialize),
//! decide + patch alone, the lean parse the request path does and the typed parse it
//! replaced, for a small, a typical (~10 KB, Istio injected) and a large
//! (~100 KB) pod. Payloads come from `scripts/gen_payloads.py` (run by `make bench`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use sidecar_sizer::engine::pipeline::{run, PodContext, Settings, Snapshots};
use sidecar_sizer::engine::spec::SpecStore;
use sidecar_sizer::sources::history::load_history_file;
use sidecar_sizer::webhook::wire::{decode_pod, review, Mode};
use std::hint::black_box;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn payload(name: &str) -> Vec<u8> {
    let dir = std::env::var_os("SIDECAR_SIZER_PAYLOADS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/bench/payloads"));
    let path = dir.join(format!("{name}.json"));
    if !path.is_file() {
        // `cargo test --all-targets` runs this bench once as a smoke test: make the payloads.
        let status = std::process::Command::new("python3")
            .arg(root().join("scripts/gen_payloads.py"))
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "scripts/gen_payloads.py failed"
        );
    }
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `python3 scripts/gen_payloads.py` or `make bench`)",
            path.display()
        )
    })
}

fn benches(c: &mut Criterion) {
    let settings = Settings::default();
    let specs = SpecStore::load_dir(&root().join("examples/specs"), &SpecStore::default());
    let (usage, _) = load_history_file(&root().join("examples/history.csv")).unwrap();
    let cluster = Default::default();
    let snaps = Snapshots {
        specs: &specs,
        usage: &usage,
        cluster: &cluster,
        mesh: None,
        hpas: None,
    };

    let mut full = c.benchmark_group("review");
    for name in ["small", "typical", "large"] {
        let body = payload(name);
        // Sanity: this payload is sized and patched.
        let a = review(&body, Mode::Enforce, &settings, &snaps).unwrap();
        assert!(
            String::from_utf8_lossy(&a.body).contains("\"patch\""),
            "{name} not patched"
        );
        full.throughput(Throughput::Bytes(body.len() as u64));
        full.bench_with_input(BenchmarkId::from_parameter(name), &body, |b, body| {
            b.iter(|| review(black_box(body), Mode::Enforce, &settings, &snaps).unwrap())
        });
    }
    full.finish();

    let mut dp = c.benchmark_group("pipeline");
    for name in ["small", "typical", "large"] {
        let body = payload(name);
        let ar: AdmissionReview<Pod> = serde_json::from_slice(&body).unwrap();
        let req = ar.request.unwrap();
        let pod = req.object.unwrap();
        let ctx = PodContext {
            namespace: req.namespace.as_deref(),
        };
        dp.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| run(black_box(&pod), &ctx, &settings, &snaps))
        });
    }
    dp.finish();

    // What the request path parses now: the lean view, rebuilt into the minimal Pod.
    let mut lean = c.benchmark_group("parse-lean");
    for name in ["small", "typical", "large"] {
        let body = payload(name);
        assert!(decode_pod(&body).unwrap().is_some());
        lean.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| decode_pod(black_box(&body)).unwrap())
        });
    }
    lean.finish();

    // The typed decode of the whole review (the request path before the lean view).
    let mut parse = c.benchmark_group("parse");
    for name in ["small", "typical", "large"] {
        let body = payload(name);
        parse.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| serde_json::from_slice::<AdmissionReview<Pod>>(black_box(&body)).unwrap())
        });
    }
    parse.finish();
}

criterion_group!(admission, benches);
criterion_main!(admission);
