//! Quantity parser: never panics; what it accepts formats back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar_sizer::engine::quantity::{Cpu, Memory, Quantity};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(q) = Quantity::parse(text) {
        let cpu = Cpu(q.millis());
        assert_eq!(Cpu::parse(&cpu.to_string()), Ok(cpu));
        let mem = Memory(q.units());
        assert_eq!(Memory::parse(&mem.to_string()), Ok(mem));
    }
});
