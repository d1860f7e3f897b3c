//! Check 5's graph comparison: `verify::graph::compare` of a runtime definition against an
//! arbitrary task graph (relative-datestamps included), and `graph::parse_offset` on the raw
//! input. Input: `{"child": <task>, "decision": <task>, "graph": {<taskId>: {"task": ...}}}`;
//! the child is the graph's first key that is a taskId.
#![no_main]
use chainlock::ids::TaskId;
use chainlock::verify::graph;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = graph::parse_offset(s);
    }
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let graph = match v.get("graph") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let fallback = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").expect("a valid constant taskId");
    let child_id = graph
        .keys()
        .find_map(|k| TaskId::parse(k).ok())
        .unwrap_or(fallback);
    let decision_id = TaskId::parse("HxKtZrxRQpWx5wQ1Zp8VNg").expect("a valid constant taskId");
    let child = v.get("child").cloned().unwrap_or(Value::Null);
    let decision = v.get("decision").cloned().unwrap_or(Value::Null);
    let _ = graph::compare(&child_id, &child, &decision_id, &decision, &graph);
});
