//! Small string parsers: task ids, artifact names, ed25519 public key files.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = chainlock::ids::TaskId::parse(&text);
    let _ = chainlock::artifacts::check_name(&text, &chainlock::artifacts::Limits::default());
    let _ = chainlock::trust::decode_ed25519_public_key(&text);
});
