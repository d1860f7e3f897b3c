//! Check 5: a decision (or action) task's `task-graph.json` must describe every task it created.
//!
//! The graph is hash-verified against the decision task's signed document before it reaches
//! this module. A child's runtime definition must equal its graph entry (`graph[taskId].task`),
//! except for keys that legitimately change at submission time:
//! - `created`, `deadline`, `expires`, `priority` are ignored (the reference does the same;
//!   `priority` can be changed on the queue afterwards);
//! - runtime `dependencies` may only add the decision task to the graph's dependencies;
//! - `{"relative-datestamp": "1 day"}` values in the graph are resolved against the runtime
//!   `created`, as taskgraph does when it submits;
//! - keys present only at run time are flagged (the reference ignores them: a gap), unless the
//!   value is one the queue or the decision task fills in when submitting: the queue's default
//!   (`schedulerId` `-`, `projectId` `none`, `routes` `[]`, ...), the derived `taskQueueId`, or
//!   the decision task's own `taskGroupId` / `schedulerId` / `projectId`.

use super::error::{VerifyError, clip};
use crate::ids::TaskId;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

/// Keys never compared.
const IGNORED: [&str; 4] = ["created", "deadline", "expires", "priority"];

/// Compares `child` (runtime definition) with its entry in `graph`, the task graph of
/// `decision` (whose runtime definition is `decision_def`).
pub fn compare(
    child_id: &TaskId,
    child: &Value,
    decision_id: &TaskId,
    decision_def: &Value,
    graph: &Map<String, Value>,
) -> Vec<VerifyError> {
    let mut errors = Vec::new();
    let Some(entry) = graph.get(child_id.as_str()) else {
        return vec![VerifyError::TaskNotInGraph {
            task_id: child_id.clone(),
            decision: decision_id.clone(),
        }];
    };
    let (Some(graph_task), Some(runtime)) = (
        entry.get("task").and_then(Value::as_object),
        child.as_object(),
    ) else {
        return vec![VerifyError::GraphInvalid {
            task_id: decision_id.clone(),
            detail: format!("entry {child_id} has no task object"),
        }];
    };
    let created = runtime
        .get("created")
        .and_then(Value::as_str)
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));

    // Dependencies: runtime ⊆ graph ∪ {decision}.
    let graph_deps: std::collections::BTreeSet<&str> = graph_task
        .get("dependencies")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match runtime.get("dependencies").map(Value::as_array) {
        None => {}
        Some(Some(deps)) => {
            for dep in deps {
                let d = dep.as_str().unwrap_or("");
                if d != decision_id.as_str() && !graph_deps.contains(&d) {
                    errors.push(VerifyError::UnexpectedDependency {
                        task_id: child_id.clone(),
                        decision: decision_id.clone(),
                        dependency: clip(&dep.to_string()),
                    });
                }
            }
        }
        Some(None) => errors.push(VerifyError::GraphMismatch {
            task_id: child_id.clone(),
            decision: decision_id.clone(),
            key: "dependencies".into(),
            graph: clip(&Value::from(graph_deps.iter().copied().collect::<Vec<_>>()).to_string()),
            runtime: clip(
                &runtime
                    .get("dependencies")
                    .map(Value::to_string)
                    .unwrap_or_default(),
            ),
        }),
    }

    for (key, graph_value) in graph_task {
        if IGNORED.contains(&key.as_str()) || key == "dependencies" {
            continue;
        }
        let runtime_value = runtime.get(key);
        let equal = match (runtime_value, created) {
            (Some(r), Some(c)) => match values_equal(graph_value, r, c) {
                Ok(eq) => eq,
                Err(detail) => {
                    errors.push(VerifyError::GraphInvalid {
                        task_id: decision_id.clone(),
                        detail: format!("{child_id}.{key}: {detail}"),
                    });
                    continue;
                }
            },
            (Some(r), None) => graph_value == r,
            (None, _) => false,
        };
        if !equal {
            errors.push(VerifyError::GraphMismatch {
                task_id: child_id.clone(),
                decision: decision_id.clone(),
                key: key.clone(),
                graph: clip(&graph_value.to_string()),
                runtime: runtime_value
                    .map(|v| clip(&v.to_string()))
                    .unwrap_or_else(|| "absent".into()),
            });
        }
    }

    for (key, value) in runtime {
        if IGNORED.contains(&key.as_str()) || key == "dependencies" || graph_task.contains_key(key)
        {
            continue;
        }
        if !filled_at_submission(key, value, runtime, decision_id, decision_def) {
            errors.push(VerifyError::RuntimeOnlyKey {
                task_id: child_id.clone(),
                decision: decision_id.clone(),
                key: key.clone(),
            });
        }
    }
    errors
}

/// Whether a runtime-only key holds a value the queue or the decision task fills in.
fn filled_at_submission(
    key: &str,
    value: &Value,
    runtime: &Map<String, Value>,
    decision_id: &TaskId,
    decision_def: &Value,
) -> bool {
    let decision = |k: &str| decision_def.get(k);
    match key {
        "taskQueueId" => {
            let derived = match (
                runtime.get("provisionerId").and_then(Value::as_str),
                runtime.get("workerType").and_then(Value::as_str),
            ) {
                (Some(p), Some(w)) => format!("{p}/{w}"),
                _ => return false,
            };
            value.as_str() == Some(derived.as_str())
        }
        "schedulerId" => value == "-" || Some(value) == decision("schedulerId"),
        "projectId" => value == "none" || Some(value) == decision("projectId"),
        "taskGroupId" => {
            value.as_str() == Some(decision_id.as_str()) || Some(value) == decision("taskGroupId")
        }
        "requires" => value == "all-completed",
        "routes" | "scopes" => value.as_array().is_some_and(Vec::is_empty),
        "tags" | "extra" => value.as_object().is_some_and(Map::is_empty),
        "retries" => value == 5,
        _ => false,
    }
}

/// JSON equality where graph-side `{"relative-datestamp": "..."}` objects equal the runtime
/// timestamp `created + offset` (to the millisecond, as the queue stores times).
fn values_equal(graph: &Value, runtime: &Value, created: DateTime<Utc>) -> Result<bool, String> {
    match (graph, runtime) {
        (Value::Object(g), _) if g.len() == 1 && g.contains_key("relative-datestamp") => {
            let Some(spec) = g.get("relative-datestamp").and_then(Value::as_str) else {
                return Err("relative-datestamp is not a string".into());
            };
            let offset = parse_offset(spec)?;
            let expected = created + offset;
            Ok(runtime
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .is_some_and(|t| t.timestamp_millis() == expected.timestamp_millis()))
        }
        (Value::Object(g), Value::Object(r)) => {
            if g.len() != r.len() {
                return Ok(false);
            }
            for (k, gv) in g {
                match r.get(k) {
                    Some(rv) => {
                        if !values_equal(gv, rv, created)? {
                            return Ok(false);
                        }
                    }
                    None => return Ok(false),
                }
            }
            Ok(true)
        }
        (Value::Array(g), Value::Array(r)) => {
            if g.len() != r.len() {
                return Ok(false);
            }
            for (gv, rv) in g.iter().zip(r) {
                if !values_equal(gv, rv, created)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => Ok(graph == runtime),
    }
}

/// Parses taskgraph/json-e offsets such as `1 day`, `-2 hours 30 minutes`, `1y`.
pub fn parse_offset(spec: &str) -> Result<Duration, String> {
    let bad = || format!("cannot parse relative-datestamp {:?}", clip(spec));
    let mut total = Duration::zero();
    let mut rest = spec.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let neg = rest.starts_with('-');
        let digits_start = usize::from(neg || rest.starts_with('+'));
        let after_sign = rest.get(digits_start..).ok_or_else(bad)?;
        let n_len = after_sign.bytes().take_while(u8::is_ascii_digit).count();
        if n_len == 0 || n_len > 9 {
            return Err(bad());
        }
        let n: i64 = after_sign[..n_len].parse().map_err(|_| bad())?;
        let after_num = after_sign[n_len..].trim_start();
        let u_len = after_num
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let unit = &after_num[..u_len];
        let seconds_per: i64 = match unit {
            "y" | "yr" | "yrs" | "year" | "years" => 365 * 86_400,
            "mo" | "month" | "months" => 30 * 86_400,
            "w" | "wk" | "wks" | "week" | "weeks" => 7 * 86_400,
            "d" | "day" | "days" => 86_400,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            _ => return Err(bad()),
        };
        let d = Duration::seconds(n.checked_mul(seconds_per).ok_or_else(bad)?);
        total = if neg { total - d } else { total + d };
        rest = after_num[u_len..].trim_start();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("1 day").unwrap(), Duration::days(1));
        assert_eq!(
            parse_offset("1 year 2 hours").unwrap(),
            Duration::days(365) + Duration::hours(2)
        );
        assert_eq!(parse_offset("-30 minutes").unwrap(), -Duration::minutes(30));
        assert_eq!(parse_offset("2w").unwrap(), Duration::weeks(2));
        for bad in ["", "day", "1 fortnight", "1 day x", "99999999999 days"] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn relative_datestamps_resolve_against_created() {
        let created = DateTime::parse_from_rfc3339("2026-01-01T00:00:00.000Z")
            .unwrap()
            .with_timezone(&Utc);
        let g = json!({"expires": {"relative-datestamp": "1 day"}});
        assert!(
            values_equal(&g, &json!({"expires": "2026-01-02T00:00:00.000Z"}), created).unwrap()
        );
        assert!(
            !values_equal(&g, &json!({"expires": "2026-01-03T00:00:00.000Z"}), created).unwrap()
        );
    }
}
