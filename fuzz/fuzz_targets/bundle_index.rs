//! The verifier's bundle reader: `bundle.json` and the per-task status files it parses (the
//! directory walk itself is covered by tests/parsers.rs).
#![no_main]
use chainlock::queue::types::TaskStatus;
use chainlock::verify::bundle::BundleIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Through the verifier's one strict parser, as `Bundle::open` and the fetcher read them.
    let _ = chainlock::strict_json::from_slice_to::<BundleIndex>(data);
    let _ = chainlock::strict_json::from_slice_to::<TaskStatus>(data);
    let _ = chainlock::strict_json::from_slice(data);
});
