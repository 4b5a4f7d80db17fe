//! The review CLI's manifest reader: never panics; what --write produces is reviewed again
//! without further changes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar_sizer::webhook::wire::Settings;
use sidecar_sizer::sources::history::UsageSnapshot;
use sidecar_sizer::review::{review, Context, Input};
use sidecar_sizer::engine::spec::SpecStore;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (settings, specs, usage) = (Settings::default(), SpecStore::default(), UsageSnapshot::default());
    let ctx = Context { settings: &settings, specs: &specs, usage: &usage, namespace: "default" };
    let input = |t: &str| vec![Input { name: "in.yaml".into(), path: None, text: t.to_string() }];
    let first = review(&input(text), &ctx, true);
    if let Some((_, written)) = first.rewritten.first() {
        let second = review(&input(written), &ctx, true);
        assert!(second.items.iter().all(|i| !i.changed), "written manifest still changes");
    }
});
