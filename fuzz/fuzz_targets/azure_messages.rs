//! Legacy Azure-queue poll answers: the QueueMessagesList XML, each message's base64 JSON, the
//! delete-URL substitution and the signed-URL check.
#![no_main]
use chainlock::queue::azure::{self, Limits};
use chainlock::secret::Secret;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = azure::parse_messages(data, &Limits::default()) {
        for m in &messages {
            let _ = azure::decode_message(m);
            if let Some((id, pop)) = m.delete_handle() {
                let template = Secret::new(
                    "https://a.example/q/messages/{{messageId}}?popreceipt={{popReceipt}}&sig=s",
                );
                let _ = azure::delete_url(&template, id, pop);
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = azure::decode_message_text(text);
        let _ = azure::check_signed_url(&Secret::new(text));
    }
});
