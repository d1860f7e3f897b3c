//! Check 9's inputs: everything `decision-rebuild` parses from a repository host or a task,
//! before json-e. Input: `{"link": <task>, "decision": <task>, "sources": [<text>...],
//! "actions": <text>, "parameters": <text>}` (a JSON object), or raw bytes parsed as a YAML
//! template. Covers `rebuild::parse_yaml` (serde-saphyr with its budgets), `plan` (revision and
//! tasks_for checks, URL filling), `context_and_template` (pushlog, commit, release and
//! pull-request answers, actions.json, parameters.yml, extra.cron) and the comparison helpers.
//! json-e itself is not run here: it has no budget, which is why chainlock runs it in a
//! budgeted child process (`crate::jsone`).
#![no_main]
use chainlock::chain_policy::ChainPolicy;
use chainlock::ids::TaskId;
use chainlock::verify::rebuild::{self, Inputs, NoRenderer, Planned};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::sync::OnceLock;

fn policy() -> &'static ChainPolicy {
    static P: OnceLock<ChainPolicy> = OnceLock::new();
    P.get_or_init(|| {
        ChainPolicy::from_toml(include_str!(
            "../../tests/data/seeds/chain-policy/rebuild.toml"
        ))
        .expect("a valid constant policy")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = rebuild::parse_yaml(data);
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let link = v.get("link").cloned().unwrap_or(Value::Null);
    let decision = v.get("decision").cloned().unwrap_or_else(|| link.clone());
    let text = |k: &str| v.get(k).and_then(Value::as_str).map(|s| s.as_bytes().to_vec());
    let sources: Vec<Vec<u8>> = v
        .get("sources")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(|s| s.as_bytes().to_vec()).collect())
        .unwrap_or_default();
    let (actions, parameters) = (text("actions"), text("parameters"));
    let id = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").expect("a valid constant taskId");
    let did = TaskId::parse("HxKtZrxRQpWx5wQ1Zp8VNg").expect("a valid constant taskId");
    let _ = rebuild::differences(&rebuild::remove_empty(&link), &decision);
    if let Ok(Planned::Rebuild(plan)) = rebuild::plan(policy(), &id, &link, &did, &decision) {
        let inputs = Inputs {
            link_raw: &link,
            decision_raw: &decision,
            sources: sources.iter().map(Vec::as_slice).collect(),
            actions_json: actions.as_deref(),
            parameters_yml: parameters.as_deref(),
        };
        let _ = rebuild::context_and_template(&plan, &inputs, &NoRenderer);
    }
});
