//! The verifier's bundle reader: `bundle.json` and the per-task status files it parses (the
//! directory walk itself is covered by tests/parsers.rs).
#![no_main]
use chainlock::queue::types::TaskStatus;
use chainlock::verify::bundle::BundleIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<BundleIndex>(data);
    let _ = serde_json::from_slice::<TaskStatus>(data);
});
