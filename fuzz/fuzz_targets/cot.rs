//! Upstream `chain-of-trust.json`: strict parse (duplicate keys), cot_v1 schema, typed view;
//! whatever is accepted must also serialise canonically.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = chainlock::cot::parse_and_validate(data) {
        let _ = chainlock::cot::to_canonical_json(&doc.task);
    }
});
