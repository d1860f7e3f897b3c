//! Chain-of-trust documents (`public/chain-of-trust.json`), version 1.
//!
//! Why this module exists: the chain-of-trust document is what downstream verifiers (our own
//! `verify`, scriptworker, auditors) read to learn which artifacts an upstream task produced and
//! from which task definition. It is an **API boundary**: its shape and its bytes must stay what
//! scriptworker produces, so [`generate`] writes the body exactly as scriptworker does, in
//! Python's `json.dumps(body, indent=2, sort_keys=True)` form with no trailing newline, and
//! validates it against `schemas/cot-v1.schema.json` before returning it.
//!
//! [`parse_and_validate`] is the reading side for upstream documents: strict JSON (duplicate
//! keys are refused, so two parsers can never disagree about what was signed), schema-validated,
//! then turned into a typed [`CotDocument`].
//!
//! What it must not do: sign or verify signatures (that is [`crate::openpgp`] and
//! [`crate::trust`]), touch files or the network, or re-serialise an upstream document to check
//! a signature: signatures are always checked over the downloaded bytes.

use crate::ids::TaskId;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The JSON Schema every chain-of-trust document must satisfy (draft 2020-12).
pub const COT_V1_SCHEMA: &str = include_str!("../schemas/cot-v1.schema.json");

/// Why a chain-of-trust document could not be built or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CotError {
    /// The bytes are not JSON (or contain a duplicate object key).
    #[error("chain-of-trust document is not valid JSON: {reason}")]
    Json {
        /// The parser's explanation.
        reason: String,
    },
    /// The document does not satisfy `schemas/cot-v1.schema.json`.
    #[error("chain-of-trust document fails the cot-v1 schema at {path}: {reason}")]
    Schema {
        /// JSON pointer of the first failing value.
        path: String,
        /// What is wrong there.
        reason: String,
    },
    /// `chainOfTrustVersion` is not 1.
    #[error("unsupported chainOfTrustVersion {found}")]
    UnsupportedVersion {
        /// The version found.
        found: String,
    },
    /// The document's `taskId` is not a valid slugid.
    #[error("chain-of-trust taskId: {0}")]
    TaskId(#[from] crate::ids::InvalidTaskId),
    /// `runId` does not fit a run number.
    #[error("chain-of-trust runId {found} is out of range")]
    RunId {
        /// The value found.
        found: String,
    },
    /// An artifact digest given to [`generate`] is not 64 lowercase hex digits.
    #[error("artifact {name:?}: sha256 {digest:?} is not 64 lowercase hex digits")]
    BadDigest {
        /// The artifact name.
        name: String,
        /// The rejected digest.
        digest: String,
    },
    /// A value cannot be written in the canonical form (a non-finite number).
    #[error("value cannot be serialised canonically: {reason}")]
    NotSerialisable {
        /// Why.
        reason: String,
    },
    /// The embedded schema failed to compile (a build defect, caught by the tests).
    #[error("internal: the embedded cot-v1 schema does not compile: {reason}")]
    BrokenSchema {
        /// Why.
        reason: String,
    },
}

/// A parsed, schema-valid chain-of-trust document (typed view over the raw JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct CotDocument {
    /// The task the document describes.
    pub task_id: TaskId,
    /// The run of that task.
    pub run_id: u32,
    /// The worker group that ran it.
    pub worker_group: String,
    /// The worker that ran it.
    pub worker_id: String,
    /// The top-level `workerType`, if the producer wrote one (generic-worker does not; use
    /// [`CotDocument::task_worker_type`] for the task's own).
    pub worker_type: Option<String>,
    /// The full task definition, as the producing worker saw it in its claim.
    pub task: Value,
    /// Artifact name -> lowercase hex sha256, as listed by the producer.
    pub artifacts: BTreeMap<String, String>,
    /// The producer's `environment` object.
    pub environment: Map<String, Value>,
}

impl CotDocument {
    /// `task.workerType` (required by the schema).
    pub fn task_worker_type(&self) -> Option<&str> {
        self.task.get("workerType").and_then(Value::as_str)
    }
}

static VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(COT_V1_SCHEMA).map_err(|e| e.to_string())?;
    jsonschema::draft202012::new(&schema).map_err(|e| e.to_string())
});

fn schema_validate(doc: &Value) -> Result<(), CotError> {
    let validator = VALIDATOR
        .as_ref()
        .map_err(|reason| CotError::BrokenSchema {
            reason: reason.clone(),
        })?;
    match validator.iter_errors(doc).next() {
        None => Ok(()),
        Some(e) => Err(CotError::Schema {
            path: e.instance_path().to_string(),
            reason: e.to_string().chars().take(300).collect(),
        }),
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Builds this worker's chain-of-trust document, exactly as scriptworker does:
/// `chainOfTrustVersion` 1, `artifacts` `{name: {"sha256": hex}}`, `task` (the full raw
/// definition from the claim), `taskId`, `runId`, `workerGroup`, `workerId`, `workerType`, and
/// an empty `environment`. The result is schema-validated and in canonical form (see
/// [`to_canonical_json`]); sign these exact bytes.
pub fn generate(
    task: &Value,
    task_id: &TaskId,
    run_id: u32,
    worker_group: &str,
    worker_id: &str,
    worker_type: &str,
    artifacts: &BTreeMap<String, String>,
) -> Result<Vec<u8>, CotError> {
    let mut arts = Map::new();
    for (name, digest) in artifacts {
        if !is_sha256_hex(digest) {
            return Err(CotError::BadDigest {
                name: name.clone(),
                digest: digest.chars().take(80).collect(),
            });
        }
        let mut entry = Map::new();
        entry.insert("sha256".into(), Value::String(digest.clone()));
        arts.insert(name.clone(), Value::Object(entry));
    }
    let mut body = Map::new();
    body.insert("artifacts".into(), Value::Object(arts));
    body.insert("chainOfTrustVersion".into(), Value::from(1u8));
    body.insert("environment".into(), Value::Object(Map::new()));
    body.insert("runId".into(), Value::from(run_id));
    body.insert("task".into(), task.clone());
    body.insert("taskId".into(), Value::String(task_id.as_str().to_owned()));
    body.insert("workerGroup".into(), Value::String(worker_group.to_owned()));
    body.insert("workerId".into(), Value::String(worker_id.to_owned()));
    body.insert("workerType".into(), Value::String(worker_type.to_owned()));
    let body = Value::Object(body);
    schema_validate(&body)?;
    to_canonical_json(&body)
}

/// Parses and validates an upstream chain-of-trust document.
///
/// The caller must already have verified the signature over these exact bytes and capped their
/// size. Duplicate object keys anywhere are refused ([`CotError::Json`]).
pub fn parse_and_validate(bytes: &[u8]) -> Result<CotDocument, CotError> {
    let doc = crate::strict_json::from_slice(bytes).map_err(|e| CotError::Json {
        reason: e.to_string(),
    })?;
    schema_validate(&doc)?;
    // The schema guarantees the shapes below; a mismatch still fails closed.
    let shape = |field: &str| CotError::Schema {
        path: format!("/{field}"),
        reason: "unexpected type".into(),
    };
    let version = doc
        .get("chainOfTrustVersion")
        .ok_or_else(|| shape("chainOfTrustVersion"))?;
    if version.as_u64() != Some(1) && version.as_f64() != Some(1.0) {
        return Err(CotError::UnsupportedVersion {
            found: version.to_string(),
        });
    }
    let str_field = |field: &str| -> Result<String, CotError> {
        doc.get(field)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| shape(field))
    };
    let task_id = TaskId::parse(&str_field("taskId")?)?;
    let run = doc.get("runId").ok_or_else(|| shape("runId"))?;
    let run_id = run
        .as_u64()
        .and_then(|r| u32::try_from(r).ok())
        .ok_or_else(|| CotError::RunId {
            found: run.to_string(),
        })?;
    let worker_type = match doc.get("workerType") {
        None => None,
        Some(v) => Some(v.as_str().ok_or_else(|| shape("workerType"))?.to_owned()),
    };
    let mut artifacts = BTreeMap::new();
    for (name, entry) in doc
        .get("artifacts")
        .and_then(Value::as_object)
        .ok_or_else(|| shape("artifacts"))?
    {
        let digest = entry
            .get("sha256")
            .and_then(Value::as_str)
            .ok_or_else(|| shape("artifacts"))?;
        artifacts.insert(name.clone(), digest.to_owned());
    }
    let environment = doc
        .get("environment")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| shape("environment"))?;
    Ok(CotDocument {
        task_id,
        run_id,
        worker_group: str_field("workerGroup")?,
        worker_id: str_field("workerId")?,
        worker_type,
        task: doc.get("task").cloned().ok_or_else(|| shape("task"))?,
        artifacts,
        environment,
    })
}

/// Serialises `value` as Python's `json.dumps(value, indent=2, sort_keys=True)` does (Python 3,
/// `ensure_ascii=True`): keys sorted by code point at every level, two-space indentation, `,`
/// at line ends and `": "` between key and value, empty containers as `{}`/`[]`, every
/// character outside printable ASCII escaped as `\uXXXX` (surrogate pairs above U+FFFF),
/// integers exact, floats as Python's `repr`, no trailing newline.
pub fn to_canonical_json(value: &Value) -> Result<Vec<u8>, CotError> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out.into_bytes())
}

fn indent(out: &mut String, level: usize) {
    out.push('\n');
    for _ in 0..level {
        out.push_str("  ");
    }
}

fn write_value(out: &mut String, value: &Value, level: usize) -> Result<(), CotError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write_value(out, item, level + 1)?;
            }
            indent(out, level);
            out.push(']');
        }
        Value::Object(map) => {
            if map.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            // Sort explicitly (Rust `str` order is code point order, as Python's): do not rely
            // on serde_json's map type, whose order depends on a cargo feature.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                indent(out, level + 1);
                write_string(out, k);
                out.push_str(": ");
                write_value(out, v, level + 1)?;
            }
            indent(out, level);
            out.push('}');
        }
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    use std::fmt::Write as _;
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

fn write_number(out: &mut String, n: &serde_json::Number) -> Result<(), CotError> {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&python_float_repr(f)?);
    } else {
        return Err(CotError::NotSerialisable {
            reason: format!("number {n}"),
        });
    }
    Ok(())
}

/// Python's `repr(float)`: the shortest round-tripping digits, in positional notation when the
/// decimal exponent is in -4..=15, otherwise `d.ddde+XX`; integral values get `.0`.
fn python_float_repr(f: f64) -> Result<String, CotError> {
    if !f.is_finite() {
        return Err(CotError::NotSerialisable {
            reason: format!("non-finite float {f}"),
        });
    }
    // Rust's `{:e}` prints the shortest round-tripping digits: "-1.2345e-7".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci
        .split_once('e')
        .ok_or_else(|| CotError::NotSerialisable {
            reason: format!("unexpected float form {sci}"),
        })?;
    let exp: i32 = exp.parse().map_err(|_| CotError::NotSerialisable {
        reason: format!("unexpected float form {sci}"),
    })?;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::from(sign);
    if (-4..=15).contains(&exp) {
        let point = exp + 1; // digits before the decimal point
        if point <= 0 {
            out.push_str("0.");
            for _ in 0..(-point) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let point = usize::try_from(point).unwrap_or(0);
            if digits.len() <= point {
                out.push_str(&digits);
                for _ in digits.len()..point {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..point]);
                out.push('.');
                out.push_str(&digits[point..]);
            }
        }
    } else {
        out.push_str(mantissa);
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOLDEN: &[u8] = include_bytes!("../tests/data/chain-of-trust.golden.json");

    #[test]
    fn golden_file_reserialises_byte_for_byte() {
        let v: Value = serde_json::from_slice(GOLDEN).expect("golden parses");
        let out = to_canonical_json(&v).expect("serialise");
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(GOLDEN)
        );
        let doc = parse_and_validate(GOLDEN).expect("golden validates");
        assert_eq!(doc.task_id.as_str(), "Qt3GKapxQmWDJId8m5o8Yg");
        assert_eq!(doc.worker_type.as_deref(), Some("signing-linux-v1"));
        assert_eq!(doc.worker_id, "signing-linux-12");
        assert_eq!(doc.run_id, 0);
        assert_eq!(doc.artifacts.len(), 5);
    }

    #[test]
    fn python_escapes_and_numbers() {
        // Expected strings are Python 3 `json.dumps(v, indent=2, sort_keys=True)` output.
        let v = json!({"d": "\u{e9}\u{7f}\u{1F600}\u{2028}\"\\\n\u{1}", "a": [1, 2.5, 1e16, 1e-5,
            0.0001, -0.0, {}, 123456789012345678u64, -7, 1.0, 100.0, 1.5e300], "c": [], "b": {}});
        let out = String::from_utf8(to_canonical_json(&v).expect("ok")).expect("ascii");
        let expected = "{\n  \"a\": [\n    1,\n    2.5,\n    1e+16,\n    1e-05,\n    0.0001,\n    \
            -0.0,\n    {},\n    123456789012345678,\n    -7,\n    1.0,\n    100.0,\n    1.5e+300\n  \
            ],\n  \"b\": {},\n  \"c\": [],\n  \"d\": \"\\u00e9\\u007f\\ud83d\\ude00\\u2028\\\"\\\\\\n\
            \\u0001\"\n}";
        assert_eq!(out, expected);
    }

    fn sample_task() -> Value {
        json!({"dependencies": ["EHZBfHRZRoiRf3yVeh_Q8g"], "scopes": ["a:b"], "payload": {},
               "taskGroupId": "EHZBfHRZRoiRf3yVeh_Q8g", "workerType": "signing"})
    }

    #[test]
    fn generate_then_parse() {
        let id = TaskId::parse("Qt3GKapxQmWDJId8m5o8Yg").expect("id");
        let mut arts = BTreeMap::new();
        arts.insert(
            "public/foo".to_owned(),
            "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c".to_owned(),
        );
        let bytes = generate(&sample_task(), &id, 2, "wg", "wid", "signing", &arts).expect("gen");
        assert!(!bytes.ends_with(b"\n"));
        let doc = parse_and_validate(&bytes).expect("parse");
        assert_eq!(doc.run_id, 2);
        assert_eq!(doc.artifacts, arts);
        assert_eq!(doc.task, sample_task());
        assert_eq!(doc.task_worker_type(), Some("signing"));
        assert!(doc.environment.is_empty());
        let mut bad = arts.clone();
        bad.insert("x".into(), "ABC".into());
        let err = generate(&sample_task(), &id, 0, "wg", "wid", "w", &bad).expect_err("digest");
        assert!(matches!(err, CotError::BadDigest { .. }), "{err:?}");
        let err = generate(&json!({"payload": {}}), &id, 0, "wg", "wid", "w", &arts)
            .expect_err("task missing fields");
        assert!(matches!(err, CotError::Schema { .. }), "{err:?}");
    }

    #[test]
    fn parse_refusals() {
        let base = |extra: &str| {
            format!(
                "{{\"artifacts\": {{}}, \"chainOfTrustVersion\": 1, \"environment\": {{}}, \
                 \"runId\": 0, \"task\": {}, \"taskId\": \"Qt3GKapxQmWDJId8m5o8Yg\", \
                 \"workerGroup\": \"g\", \"workerId\": \"i\"{extra}}}",
                sample_task()
            )
        };
        parse_and_validate(base("").as_bytes()).expect("minimal document is valid");
        let err = parse_and_validate(base(", \"workerId\": \"evil\"").as_bytes()).expect_err("dup");
        assert!(matches!(err, CotError::Json { .. }), "{err:?}");
        let err = parse_and_validate(b"not json").expect_err("json");
        assert!(matches!(err, CotError::Json { .. }), "{err:?}");
        let s = base("").replace("\"chainOfTrustVersion\": 1", "\"chainOfTrustVersion\": 2");
        let err = parse_and_validate(s.as_bytes()).expect_err("version");
        assert!(
            matches!(err, CotError::UnsupportedVersion { .. }),
            "{err:?}"
        );
        let s = base("").replace("Qt3GKapxQmWDJId8m5o8Yg", "decision_task_id");
        let err = parse_and_validate(s.as_bytes()).expect_err("taskId");
        assert!(matches!(err, CotError::TaskId(_)), "{err:?}");
        let s = base("").replace("\"runId\": 0", "\"runId\": 99999999999");
        let err = parse_and_validate(s.as_bytes()).expect_err("runId");
        assert!(matches!(err, CotError::RunId { .. }), "{err:?}");
        let s = base("").replace(
            "\"artifacts\": {}",
            "\"artifacts\": {\"a\": {\"sha256\": \"x\"}}",
        );
        let err = parse_and_validate(s.as_bytes()).expect_err("digest");
        assert!(matches!(err, CotError::Schema { .. }), "{err:?}");
        let s = base("").replace("\"workerGroup\": \"g\", ", "");
        let err = parse_and_validate(s.as_bytes()).expect_err("missing");
        assert!(matches!(err, CotError::Schema { .. }), "{err:?}");
    }
}
