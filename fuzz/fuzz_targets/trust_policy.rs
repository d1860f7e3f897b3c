//! `keys/trust.toml`: TOML, structure, key material (OpenPGP certificates, ed25519 keys).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = chainlock::trust::policy::Policy::parse(data);
});
