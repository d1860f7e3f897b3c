//! The worker's restricted-input gate: a claimed task definition against the task schema, the
//! signing payload schema and the cert-scope rule.
#![no_main]
use chainlock::validate::{Limits, ScopeRules, TaskValidator};
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;

fn validator() -> &'static TaskValidator {
    static V: OnceLock<TaskValidator> = OnceLock::new();
    V.get_or_init(|| {
        let rules = ScopeRules::new("project:releng:signing:cert:", ["release-signing"])
            .expect("valid scope rule");
        let schema =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/payload/sign.schema.json");
        TaskValidator::new(&schema, rules, Limits::default()).expect("the sign schema compiles")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(task) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = validator().validate(&task, data.len());
    }
});
