//! AdmissionReview body → response. Invariants: no panic; a response is always allowed and
//! echoes the uid; a patch applies to the object as received and leaves request ≤ limit.
#![no_main]

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sidecar_sizer::engine::pipeline::Snapshots;
use sidecar_sizer::webhook::wire::{review, Mode, Settings};
use sidecar_sizer::sources::history::UsageSnapshot;
use sidecar_sizer::engine::quantity::Quantity;
use sidecar_sizer::engine::spec::SpecStore;
use std::sync::OnceLock;

fn context() -> &'static (SpecStore, UsageSnapshot) {
    static CTX: OnceLock<(SpecStore, UsageSnapshot)> = OnceLock::new();
    CTX.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let specs = SpecStore::load_dir(&root.join("examples/specs"), &SpecStore::default());
        let (usage, _) = sidecar_sizer::sources::history::load_history_file(&root.join("examples/history.csv"))
            .unwrap_or_default();
        (specs, usage)
    })
}

fn le(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_str().map(Quantity::parse), b.as_str().map(Quantity::parse)) {
        (Some(Ok(a)), Some(Ok(b))) => a <= b,
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let (specs, usage) = context();
    for mode in [Mode::Enforce, Mode::DryRun] {
        let cluster = Default::default();
        let snaps = Snapshots { specs, usage, cluster: &cluster, mesh: None, hpas: None };
        let Ok(answer) = review(data, mode, &Settings::default(), &snaps) else {
            continue;
        };
        let out: serde_json::Value = serde_json::from_slice(&answer.body).expect("response is JSON");
        let r = &out["response"];
        assert_eq!(r["allowed"], true);
        let input: serde_json::Value = serde_json::from_slice(data).expect("a review we answered is JSON");
        assert_eq!(r["uid"], input["request"]["uid"]);
        assert_eq!(r.get("patch").is_some(), r.get("patchType").is_some());
        let Some(p) = r.get("patch") else { continue };
        assert_eq!(mode, Mode::Enforce, "dry-run never patches");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(p.as_str().expect("base64 string"))
            .expect("valid base64");
        let ops: json_patch::Patch = serde_json::from_slice(&bytes).expect("patch is JSON");
        let mut object = input["request"]["object"].clone();
        json_patch::patch(&mut object, &ops).expect("patch applies to the object as received");
        for list in ["containers", "initContainers"] {
            for c in object["spec"][list].as_array().into_iter().flatten() {
                let (req, lim) = (&c["resources"]["requests"], &c["resources"]["limits"]);
                if c["name"] != "istio-proxy" {
                    continue;
                }
                for (k, l) in lim.as_object().into_iter().flatten() {
                    if let Some(rq) = req.get(k) {
                        assert!(le(rq, l), "request above limit for {k}");
                    }
                }
            }
        }
    }
});
