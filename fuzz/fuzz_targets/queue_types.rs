//! Queue responses: claimWork answers, task statuses, task definitions.
#![no_main]
use chainlock::queue::types::{ClaimWorkResponse, TaskDefinition, TaskStatus};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ClaimWorkResponse>(data);
    let _ = serde_json::from_slice::<TaskStatus>(data);
    if let Ok(def) = serde_json::from_slice::<TaskDefinition>(data) {
        let _ = def.task_queue_id();
    }
});
