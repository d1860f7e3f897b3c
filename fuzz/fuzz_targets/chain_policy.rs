//! The chain-of-trust policy (operator input, but parsed from a file an attacker may have
//! touched on a shared host): TOML, schema, cross-references.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = chainlock::chain_policy::ChainPolicy::from_toml(text);
    }
});
