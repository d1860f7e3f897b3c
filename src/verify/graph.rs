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
use chrono::{DateTime, TimeDelta, Utc};
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
            key: "/dependencies".into(),
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
                Err(ValueError::Invalid(detail)) => {
                    errors.push(VerifyError::GraphInvalid {
                        task_id: decision_id.clone(),
                        detail: format!("{child_id}.{key}: {detail}"),
                    });
                    continue;
                }
                Err(ValueError::OutOfRange(spec)) => {
                    errors.push(VerifyError::DatestampOutOfRange {
                        task_id: child_id.clone(),
                        decision: decision_id.clone(),
                        key: key.clone(),
                        spec,
                    });
                    continue;
                }
            },
            (Some(r), None) => graph_value == r,
            (None, _) => false,
        };
        if !equal {
            let (pointer, g, r) = match (runtime_value, created) {
                (Some(r), Some(c)) => first_difference(graph_value, r, c, pointer_token(key)),
                (Some(r), None) => (pointer_token(key), Some(graph_value), Some(r)),
                (None, _) => (pointer_token(key), Some(graph_value), None),
            };
            errors.push(VerifyError::GraphMismatch {
                task_id: child_id.clone(),
                decision: decision_id.clone(),
                key: pointer,
                graph: shown_value(g),
                runtime: shown_value(r),
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

/// Why a graph value cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ValueError {
    /// The graph value is not something taskgraph would have written.
    Invalid(String),
    /// A `relative-datestamp` offset (or `created` plus it) is outside the representable range.
    OutOfRange(String),
}

/// JSON equality where graph-side `{"relative-datestamp": "..."}` objects equal the runtime
/// timestamp `created + offset` (to the millisecond, as the queue stores times).
/// `/key` as a JSON pointer token (RFC 6901 escaping).
fn pointer_token(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

/// Largest value quoted whole in a finding; longer ones say how much is left out.
const MAX_SHOWN_VALUE: usize = 4096;

/// A value as JSON for a finding: whole up to [`MAX_SHOWN_VALUE`] bytes, else its start and
/// its length; `absent` for a missing one.
fn shown_value(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "absent".into();
    };
    let text = v.to_string();
    if text.len() <= MAX_SHOWN_VALUE {
        return text;
    }
    let mut end = MAX_SHOWN_VALUE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// Where two values that [`values_equal`] found different first differ: the JSON pointer
/// (below `at`) and the two values there (`None` when one side lacks the key). Descends while
/// both sides are objects, or arrays of the same length; a relative datestamp is a leaf.
fn first_difference<'a>(
    graph: &'a Value,
    runtime: &'a Value,
    created: DateTime<Utc>,
    at: String,
) -> (String, Option<&'a Value>, Option<&'a Value>) {
    let differs = |g: &Value, r: &Value| !matches!(values_equal(g, r, created), Ok(true));
    match (graph, runtime) {
        (Value::Object(g), Value::Object(r)) if !g.contains_key("relative-datestamp") => {
            for (k, gv) in g {
                match r.get(k) {
                    Some(rv) if differs(gv, rv) => {
                        return first_difference(
                            gv,
                            rv,
                            created,
                            format!("{at}{}", pointer_token(k)),
                        );
                    }
                    Some(_) => {}
                    None => return (format!("{at}{}", pointer_token(k)), Some(gv), None),
                }
            }
            if let Some((k, rv)) = r.iter().find(|(k, _)| !g.contains_key(*k)) {
                return (format!("{at}{}", pointer_token(k)), None, Some(rv));
            }
            (at, Some(graph), Some(runtime))
        }
        (Value::Array(g), Value::Array(r)) if g.len() == r.len() => {
            for (i, (gv, rv)) in g.iter().zip(r).enumerate() {
                if differs(gv, rv) {
                    return first_difference(gv, rv, created, format!("{at}/{i}"));
                }
            }
            (at, Some(graph), Some(runtime))
        }
        _ => (at, Some(graph), Some(runtime)),
    }
}

fn values_equal(
    graph: &Value,
    runtime: &Value,
    created: DateTime<Utc>,
) -> Result<bool, ValueError> {
    match (graph, runtime) {
        (Value::Object(g), _) if g.len() == 1 && g.contains_key("relative-datestamp") => {
            let Some(spec) = g.get("relative-datestamp").and_then(Value::as_str) else {
                return Err(ValueError::Invalid(
                    "relative-datestamp is not a string".into(),
                ));
            };
            let offset = parse_offset(spec).map_err(|e| match e {
                OffsetError::Syntax => {
                    ValueError::Invalid(format!("cannot parse relative-datestamp {:?}", clip(spec)))
                }
                OffsetError::OutOfRange => ValueError::OutOfRange(clip(spec)),
            })?;
            // `created` comes from the task and the offset from the graph: both untrusted, so
            // the sum may leave chrono's range (about +-262 000 years).
            let expected = created
                .checked_add_signed(offset)
                .ok_or_else(|| ValueError::OutOfRange(clip(spec)))?;
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

/// Why a `relative-datestamp` offset was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetError {
    /// Not in the json-e `fromNow` syntax.
    Syntax,
    /// Well-formed, but too large to be a time offset.
    OutOfRange,
}

/// Parses json-e `fromNow` offsets (what taskgraph writes): an optional sign that applies to
/// the whole offset, then `<n> <unit>` components, e.g. `1 day`, `-2 hours 30 minutes`
/// (= -150 minutes), `1y 2mo`, `0 seconds`. A month is 30 days and a year 365, as in json-e.
/// Every step is checked: a huge count is [`OffsetError::OutOfRange`], never a panic.
pub fn parse_offset(spec: &str) -> Result<TimeDelta, OffsetError> {
    let mut rest = spec.trim();
    let neg = rest.starts_with('-');
    if neg || rest.starts_with('+') {
        rest = rest.get(1..).ok_or(OffsetError::Syntax)?.trim_start();
    }
    if rest.is_empty() {
        return Err(OffsetError::Syntax);
    }
    let mut total = TimeDelta::zero();
    while !rest.is_empty() {
        let n_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        if n_len == 0 {
            return Err(OffsetError::Syntax);
        }
        let (digits, after_num) = rest.split_at(n_len);
        // Only ASCII digits: a parse failure is an overflow of u64.
        let n: u64 = digits.parse().map_err(|_| OffsetError::OutOfRange)?;
        let after_num = after_num.trim_start();
        let u_len = after_num
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (unit, after_unit) = after_num.split_at(u_len);
        let seconds_per: u64 = match unit {
            "y" | "yr" | "yrs" | "year" | "years" => 365 * 86_400,
            "mo" | "month" | "months" => 30 * 86_400,
            "w" | "wk" | "wks" | "week" | "weeks" => 7 * 86_400,
            "d" | "day" | "days" => 86_400,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
            "m" | "min" | "mins" | "minute" | "minutes" => 60,
            "s" | "sec" | "secs" | "second" | "seconds" => 1,
            _ => return Err(OffsetError::Syntax),
        };
        let secs = n
            .checked_mul(seconds_per)
            .and_then(|s| i64::try_from(s).ok())
            .ok_or(OffsetError::OutOfRange)?;
        let d = TimeDelta::try_seconds(secs).ok_or(OffsetError::OutOfRange)?;
        total = total.checked_add(&d).ok_or(OffsetError::OutOfRange)?;
        rest = after_unit.trim_start();
    }
    if neg {
        total = TimeDelta::zero()
            .checked_sub(&total)
            .ok_or(OffsetError::OutOfRange)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offsets() {
        let ok = |s: &str| parse_offset(s).unwrap();
        assert_eq!(ok("1 day"), TimeDelta::days(1));
        assert_eq!(ok("0 seconds"), TimeDelta::zero());
        assert_eq!(ok("-0 s"), TimeDelta::zero());
        assert_eq!(
            ok("1 year 2 hours"),
            TimeDelta::days(365) + TimeDelta::hours(2)
        );
        assert_eq!(ok("-30 minutes"), -TimeDelta::minutes(30));
        assert_eq!(ok("2w"), TimeDelta::weeks(2));
        // Mixed units as json-e's fromNow: one sign for the whole offset.
        assert_eq!(ok("-2 hours 30 minutes"), -TimeDelta::minutes(150));
        assert_eq!(ok("+ 1 day"), TimeDelta::days(1));
        assert_eq!(
            ok("1y2mo3w4d5h6m7s"),
            TimeDelta::days(365 + 60 + 21 + 4)
                + TimeDelta::hours(5)
                + TimeDelta::minutes(6)
                + TimeDelta::seconds(7)
        );
        assert_eq!(ok("  3 days  "), TimeDelta::days(3));
        for bad in [
            "",
            "-",
            "+",
            "day",
            "1 fortnight",
            "1 day x",
            "1 day -2 hours",
            "1.5 days",
        ] {
            assert_eq!(parse_offset(bad), Err(OffsetError::Syntax), "{bad}");
        }
        // Absurd counts are refused, never a panic (TimeDelta::seconds would panic here).
        for huge in [
            "999999999 years",
            "-999999999 years",
            "999999999999 days",
            "18446744073709551615 seconds",
            "18446744073709551616 seconds",
            "99999999999999999999999999 s",
            "9223372036854775807 s",
            "200000000 years 200000000 years",
        ] {
            assert_eq!(parse_offset(huge), Err(OffsetError::OutOfRange), "{huge}");
        }
        // Representable offsets that only overflow once added to `created`.
        assert_eq!(ok("300000 years"), TimeDelta::days(365 * 300_000));
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn out_of_range_datestamps_are_findings_not_panics() {
        let child = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap();
        let decision = TaskId::parse("HxKtZrxRQpWx5wQ1Zp8VNg").unwrap();
        for spec in [
            "300000 years",
            "-300000 years",
            "999999999 years",
            "-999999999 years",
            "99999999999999999999 seconds",
        ] {
            let runtime = json!({"created": "2026-01-01T00:00:00.000Z",
                "expires": "2026-01-02T00:00:00.000Z",
                "payload": {"when": "2026-01-02T00:00:00.000Z"}});
            let graph: Map<String, Value> = serde_json::from_value(json!({
                child.as_str(): {"task": {
                    "payload": {"when": {"relative-datestamp": spec}}}}
            }))
            .unwrap();
            let errs = compare(&child, &runtime, &decision, &json!({}), &graph);
            assert_eq!(errs.len(), 1, "{spec}: {errs:?}");
            assert_eq!(errs[0].code(), "datestamp-out-of-range", "{spec}");
            assert_eq!(errs[0].check(), crate::verify::Check::TaskGraph);
            assert!(
                matches!(&errs[0], VerifyError::DatestampOutOfRange { key, .. } if key == "payload"),
                "{errs:?}"
            );
        }
        // An unparseable one stays graph-invalid.
        let runtime = json!({"created": "2026-01-01T00:00:00.000Z", "payload": "x"});
        let graph: Map<String, Value> = serde_json::from_value(json!({
            child.as_str(): {"task": {"payload": {"relative-datestamp": "soon"}}}
        }))
        .unwrap();
        let errs = compare(&child, &runtime, &decision, &json!({}), &graph);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].code(), "graph-invalid");
    }

    #[test]
    fn created_near_the_end_of_time() {
        // `created` is the task's own (RFC 3339: year 9999 at most); chrono ends near year
        // 262 143, so 260 000 years overflow only from there.
        let created = t("9999-12-31T00:00:00Z");
        let g = json!({"relative-datestamp": "260000 years"});
        assert!(matches!(
            values_equal(&g, &json!("2026-01-01T00:00:00Z"), created),
            Err(ValueError::OutOfRange(_))
        ));
        let g = json!({"relative-datestamp": "0 seconds"});
        assert_eq!(
            values_equal(&g, &json!("9999-12-31T00:00:00.000Z"), created),
            Ok(true)
        );
    }

    #[test]
    fn relative_datestamps_resolve_against_created() {
        let created = t("2026-01-01T00:00:00.000Z");
        let g = json!({"expires": {"relative-datestamp": "1 day"}});
        assert!(
            values_equal(&g, &json!({"expires": "2026-01-02T00:00:00.000Z"}), created).unwrap()
        );
        assert!(
            !values_equal(&g, &json!({"expires": "2026-01-03T00:00:00.000Z"}), created).unwrap()
        );
        let g = json!({"expires": {"relative-datestamp": "-1 day 12 hours"}});
        assert!(
            values_equal(&g, &json!({"expires": "2025-12-30T12:00:00.000Z"}), created).unwrap()
        );
        let g = json!({"expires": {"relative-datestamp": "0 seconds"}});
        assert!(values_equal(&g, &json!({"expires": "2026-01-01T00:00:00Z"}), created).unwrap());
    }
}
