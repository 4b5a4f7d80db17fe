//! Figures for `--metrics-api` (README "In-cluster, no Prometheus"): heap held per 1,000
//! workloads, checkpoint bytes per workload, measured with a counting allocator.
//!
//! `cargo run --release --example history_footprint`
//!
//! 1,000 workloads × 2 pods × 2 containers (istio-proxy, app), one sample every 10 minutes
//! for 14 days (2,016 rounds), CPU spread over a realistic range (a daily wave plus noise,
//! so each histogram fills 40–70 of its 285 buckets), memory peaks for 15 daily intervals.

use sidecar_sizer::engine::learn::{self, ContainerSample, History, LearnConfig, PodSample};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;
static HELD: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        HELD.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        HELD.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        HELD.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn main() {
    let workloads = 1_000;
    let cfg = LearnConfig::default();
    let start = 1_700_000_000i64;
    let rounds = 14 * 24 * 6;
    let before = HELD.load(Ordering::Relaxed);
    let mut h = History::default();
    let mut seed = 42u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1000) as f64 / 1000.0
    };
    for r in 0..rounds {
        let at = start + r * 600;
        let wave = 1.0 + 0.8 * ((r as f64) * std::f64::consts::TAU / 144.0).sin();
        let mut pods = Vec::with_capacity(workloads * 2);
        for w in 0..workloads {
            let scale = 0.02 + (w % 50) as f64 * 0.01;
            for p in 0..2 {
                pods.push(PodSample {
                    namespace: format!("team-{:03}", w / 10),
                    workload: format!("service-{w:04}"),
                    pod: format!("service-{w:04}-7d9f8c6b5-{p}x7k2"),
                    at,
                    containers: vec![
                        ContainerSample {
                            name: "istio-proxy".into(),
                            cpu_cores: scale * wave * (0.5 + noise()),
                            memory_bytes: 60e6 + 20e6 * noise(),
                        },
                        ContainerSample {
                            name: "app".into(),
                            cpu_cores: 4.0 * scale * wave * (0.5 + noise()),
                            memory_bytes: 300e6 + 100e6 * noise(),
                        },
                    ],
                });
            }
        }
        h.fold(at, &pods, &[], &cfg);
    }
    let held = HELD.load(Ordering::Relaxed) - before;
    let buckets: usize = h
        .workloads
        .values()
        .flat_map(|w| w.containers.values())
        .map(|c| c.cpu.buckets.len())
        .sum();
    let now = start + rounds * 600;
    let shards =
        learn::encode_checkpoints(&h, "sidecar-sizer-7d9f8c6b5-x2x7k-1a2b3c", now, 256 * 1024);
    let bytes: usize = shards.iter().map(String::len).sum();
    let snap_before = HELD.load(Ordering::Relaxed);
    let snap = h.to_snapshot(now, &cfg);
    let snap_bytes = HELD.load(Ordering::Relaxed) - snap_before;
    println!(
        "workloads: {} (2 pods, 2 containers each), {rounds} rounds",
        h.len()
    );
    println!(
        "history held: {} bytes = {:.0} KiB per 1,000 workloads ({} bytes per workload)",
        held,
        held as f64 / 1024.0 * 1000.0 / workloads as f64,
        held / workloads as isize
    );
    println!(
        "cpu buckets in use: {:.1} per container",
        buckets as f64 / (2 * workloads) as f64
    );
    println!(
        "usage snapshot (what admissions read): {} bytes per workload",
        snap_bytes / snap.len() as isize
    );
    println!(
        "checkpoints: {} shard(s), {} bytes, {} bytes per workload",
        shards.len(),
        bytes,
        bytes / workloads
    );
}
