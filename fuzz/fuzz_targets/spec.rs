//! Spec file parser: never panics; an accepted spec is internally consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = sidecar_sizer::engine::spec::parse(text) {
        let (r, l) = (spec.proxy_requests, spec.proxy_limits);
        if let (Some(r), Some(l)) = (r.cpu, l.cpu) {
            assert!(r <= l);
        }
        if let (Some(r), Some(l)) = (r.memory, l.memory) {
            assert!(r <= l);
        }
        assert!(!spec.pin || !r.is_empty());
    }
});
