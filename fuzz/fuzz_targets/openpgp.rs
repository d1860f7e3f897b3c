//! OpenPGP input: detached signatures (`chain-of-trust.json.asc`) and public certificates.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = chainlock::openpgp::parse_detached_signature(data) {
        let _ = chainlock::openpgp::signature_issuers(&sig);
    }
    if let Ok(cert) = chainlock::openpgp::parse_public_cert(data) {
        let _ = chainlock::openpgp::verify_detached(&[&cert], b"message", data);
    }
});
