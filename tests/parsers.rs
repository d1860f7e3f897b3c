//! Parser robustness: every untrusted parser, fed the seeds under `tests/data/seeds/` and
//! systematic mutations of them, through the same entry points the worker and the verifier use.
//!
//! Until the cargo-fuzz targets in `fuzz/` run somewhere, this keeps those entry points
//! exercised by `cargo test`. Everything here is deterministic: mutations are enumerated (every
//! truncation of a small input, single-bit flips at a fixed stride, duplicated keys, 10 000
//! levels of nesting, multi-megabyte strings), never drawn at random, so a failure reproduces.
//!
//! Two things are asserted for every input: the parser does not panic (a panic is caught and
//! the test fails naming the input), and inputs that must be refused (a proper prefix of a JSON
//! document, a duplicated key, a forged signature, a traversal path...) give `Err`.

use base64::Engine as _;
use chainlock::artifacts;
use chainlock::chain_policy::ChainPolicy;
use chainlock::cot;
use chainlock::ids::TaskId;
use chainlock::openpgp;
use chainlock::queue::types::{ClaimWorkResponse, TaskDefinition, TaskStatus};
use chainlock::trust::policy::{KeyType, Policy, PolicyFile, RootKey, RootRole, WorkerKey};
use chainlock::trust::{self, CotSignature, PolicyVersion, TrustPin, TrustStore};
use chainlock::validate::{Limits as ValidateLimits, ScopeRules, TaskValidator};
use chainlock::verify::bundle::Bundle;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Seeds and mutations

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/seeds")
}

/// Every file of `tests/data/seeds/<sub>`, sorted by name.
fn seeds(sub: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir().join(sub);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let path = e.unwrap().path();
            let name = format!("{sub}/{}", path.file_name().unwrap().to_string_lossy());
            (name, std::fs::read(&path).unwrap())
        })
        .filter(|(_, b)| !b.is_empty())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn seed(path: &str) -> Vec<u8> {
    std::fs::read(seeds_dir().join(path)).unwrap()
}

/// A printable, bounded rendering of an input for failure messages.
fn show(input: &[u8]) -> String {
    if input.len() <= 600 {
        input.escape_ascii().to_string()
    } else {
        format!(
            "{}... ({} bytes, sha256 {})",
            input[..300].escape_ascii(),
            input.len(),
            trust::sha256_hex(input)
        )
    }
}

/// Runs `f`, turning a panic into a test failure that names the input.
fn guard<T>(what: &str, label: &str, input: &[u8], f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what} panicked on {label}: {}", show(input)),
    }
}

/// One mutated input.
struct Mutant {
    label: String,
    bytes: Vec<u8>,
    /// For truncations: the cut length.
    cut: Option<usize>,
}

/// Every truncation length for inputs up to 1 KiB; for larger ones the first and last 64
/// lengths plus 400 evenly spaced ones.
fn truncations(seed: &[u8]) -> Vec<Mutant> {
    let n = seed.len();
    let cuts: Vec<usize> = if n <= 1024 {
        (0..n).collect()
    } else {
        let stride = n / 400;
        let mut c: Vec<usize> = (0..64).chain(n - 64..n).collect();
        c.extend((0..n).step_by(stride.max(1)));
        c.sort_unstable();
        c.dedup();
        c
    };
    cuts.into_iter()
        .map(|cut| Mutant {
            label: format!("truncated to {cut} of {n} bytes"),
            bytes: seed[..cut].to_vec(),
            cut: Some(cut),
        })
        .collect()
}

/// Single-bit flips at an odd stride (so every bit position within a byte gets hit), at most
/// about `max` of them.
fn bit_flips(seed: &[u8], max: usize) -> Vec<Mutant> {
    let bits = seed.len() * 8;
    let stride = (bits / max.max(1)) | 1;
    (0..bits)
        .step_by(stride)
        .map(|bit| {
            let mut b = seed.to_vec();
            b[bit / 8] ^= 1 << (bit % 8);
            Mutant {
                label: format!("bit {bit} flipped"),
                bytes: b,
                cut: None,
            }
        })
        .collect()
}

/// All truncations and bit flips of `seed`.
fn byte_mutants(seed: &[u8]) -> Vec<Mutant> {
    let mut m = truncations(seed);
    m.extend(bit_flips(seed, 512));
    m
}

/// `[[[...]]]` and `{"a":{"a":...}}`, 10 000 levels each.
fn deep_json() -> Vec<Mutant> {
    let depth = 10_000;
    let arrays = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let objects = format!("{}1{}", r#"{"a":"#.repeat(depth), "}".repeat(depth));
    let unclosed = "[{\"a\":".repeat(depth);
    [
        ("arrays", arrays),
        ("objects", objects),
        ("unclosed", unclosed),
    ]
    .into_iter()
    .map(|(k, s)| Mutant {
        label: format!("{depth} levels of nested {k}"),
        bytes: s.into_bytes(),
        cut: None,
    })
    .collect()
}

/// A JSON object seed with one of its top-level keys written twice (first occurrence
/// different from the second, so a parser keeping either one would mean something else).
fn duplicated_keys(seed: &[u8]) -> Vec<Mutant> {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(seed) else {
        return Vec::new();
    };
    let compact = serde_json::to_string(&Value::Object(map.clone())).unwrap();
    map.keys()
        .map(|k| {
            let key = serde_json::to_string(k).unwrap();
            let text = format!("{{{key}:\"shadow\",{}", &compact[1..]);
            Mutant {
                label: format!("duplicated key {key}"),
                bytes: text.into_bytes(),
                cut: None,
            }
        })
        .collect()
}

/// Multi-megabyte strings: alone, and in place of the first and last top-level strings of a
/// JSON seed (more would only repeat the same work).
fn huge_strings(seed: &[u8]) -> Vec<Mutant> {
    let huge = "A".repeat(4 << 20);
    let mut out = vec![Mutant {
        label: "a 4 MiB JSON string".into(),
        bytes: format!("\"{huge}\"").into_bytes(),
        cut: None,
    }];
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(seed) {
        let strings: Vec<&String> = map
            .iter()
            .filter(|(_, v)| v.is_string())
            .map(|(k, _)| k)
            .collect();
        let picked: Vec<&String> = strings
            .first()
            .into_iter()
            .chain(strings.last())
            .copied()
            .collect();
        for (k, v) in &map {
            if v.is_string() && picked.contains(&k) {
                let mut m = map.clone();
                m.insert(k.clone(), Value::String(huge.clone()));
                out.push(Mutant {
                    label: format!("4 MiB string as {k:?}"),
                    bytes: serde_json::to_vec(&Value::Object(m)).unwrap(),
                    cut: None,
                });
            }
        }
    }
    out
}

/// Every JSON mutation of `seed`, with whether the result must be refused by a strict JSON
/// document parser (a proper prefix, a duplicated key, deep nesting, a bare string).
fn json_mutants(seed: &[u8]) -> Vec<(Mutant, bool)> {
    let trimmed_len = seed.trim_ascii_end().len();
    let mut out: Vec<(Mutant, bool)> = byte_mutants(seed)
        .into_iter()
        .map(|m| {
            let must_fail = m.cut.is_some_and(|c| c < trimmed_len);
            (m, must_fail)
        })
        .collect();
    out.extend(duplicated_keys(seed).into_iter().map(|m| (m, true)));
    out.extend(deep_json().into_iter().map(|m| (m, true)));
    let mut huge = huge_strings(seed).into_iter();
    if let Some(bare) = huge.next() {
        out.push((bare, true));
    }
    out.extend(huge.map(|m| (m, false)));
    out
}

/// Runs `parse` over every mutant; fails on a panic or on `Ok` where refusal is required.
fn check_all<T, E>(
    what: &str,
    seed_name: &str,
    mutants: Vec<(Mutant, bool)>,
    parse: impl Fn(&[u8]) -> Result<T, E>,
) -> usize {
    let mut refused = 0;
    for (m, must_fail) in &mutants {
        let label = format!("{seed_name}, {}", m.label);
        let r = guard(what, &label, &m.bytes, || parse(&m.bytes).is_err());
        if *must_fail {
            assert!(r, "{what} accepted {label}: {}", show(&m.bytes));
        }
        refused += usize::from(r);
    }
    refused
}

// ---------------------------------------------------------------------------------------------
// chain-of-trust.json

/// A labelled edit of a parsed document.
type Edit = (&'static str, fn(&mut Value));

#[test]
fn cot_documents_survive_mutations() {
    for (name, bytes) in seeds("cot") {
        cot::parse_and_validate(&bytes).unwrap_or_else(|e| panic!("seed {name} refused: {e}"));
        let refused = check_all(
            "cot::parse_and_validate",
            &name,
            json_mutants(&bytes),
            cot::parse_and_validate,
        );
        assert!(refused > 0);
        // A taskId that is not a slugid, a negative or fractional runId, a missing field.
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        let edits: Vec<Edit> = vec![
            ("taskId not a slugid", |d| {
                d["taskId"] = json!("decision_task_id")
            }),
            ("runId negative", |d| d["runId"] = json!(-1)),
            ("runId fractional", |d| d["runId"] = json!(0.5)),
            ("runId beyond u32", |d| d["runId"] = json!(1u64 << 33)),
            ("version 2", |d| d["chainOfTrustVersion"] = json!(2)),
            ("artifacts a list", |d| d["artifacts"] = json!([])),
            ("no task", |d| {
                d.as_object_mut().unwrap().remove("task");
            }),
            ("artifact without sha256", |d| {
                d["artifacts"]["public/x"] = json!({"sha512": "00"})
            }),
        ];
        for (label, edit) in edits {
            let mut d = doc.clone();
            edit(&mut d);
            let b = serde_json::to_vec(&d).unwrap();
            let r = guard("cot::parse_and_validate", label, &b, || {
                cot::parse_and_validate(&b)
            });
            assert!(r.is_err(), "{name}: {label} accepted");
        }
    }
}

#[test]
fn canonical_json_of_mutated_documents_does_not_panic() {
    // Whatever the strict parser accepts must serialise canonically without panicking.
    for (name, bytes) in seeds("cot").into_iter().chain(seeds("task")) {
        for m in bit_flips(&bytes, 256) {
            let Ok(v) = serde_json::from_slice::<Value>(&m.bytes) else {
                continue;
            };
            guard("cot::to_canonical_json", &m.label, &m.bytes, || {
                cot::to_canonical_json(&v)
            })
            .unwrap_or_else(|e| panic!("{name}, {}: {e}", m.label));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Queue wire types

#[test]
fn queue_responses_survive_mutations() {
    let mut checked = 0;
    for (name, bytes) in seeds("queue") {
        let mutants = || json_mutants(&bytes);
        if name.ends_with("claim-work.json") {
            serde_json::from_slice::<ClaimWorkResponse>(&bytes).unwrap();
            check_all("ClaimWorkResponse", &name, mutants(), |b| {
                serde_json::from_slice::<ClaimWorkResponse>(b)
            });
        } else if name.ends_with("status.json") {
            serde_json::from_slice::<TaskStatus>(&bytes).unwrap();
            check_all("TaskStatus", &name, mutants(), |b| {
                serde_json::from_slice::<TaskStatus>(b)
            });
        } else {
            panic!("unexpected queue seed {name}: say which type it is");
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

/// The fields `TaskDefinition` reads (a duplicate of one of them must be refused).
const TASK_DEFINITION_FIELDS: [&str; 16] = [
    "provisionerId",
    "workerType",
    "taskQueueId",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "dependencies",
    "retries",
    "created",
    "deadline",
    "expires",
    "scopes",
    "payload",
    "metadata",
    "tags",
    "extra",
];

#[test]
fn task_definitions_survive_mutations() {
    for (name, bytes) in seeds("task") {
        // Seeds with a placeholder taskGroupId (not a slugid) must be refused by the typed view.
        let raw: Value = serde_json::from_slice(&bytes).unwrap();
        let group_ok = raw["taskGroupId"]
            .as_str()
            .is_some_and(|g| TaskId::parse(g).is_ok());
        let typed = serde_json::from_slice::<TaskDefinition>(&bytes);
        assert_eq!(typed.is_ok(), group_ok, "{name}: {typed:?}");
        // Duplicates of fields the typed view does not read are ignored, like any unknown field.
        let mutants = json_mutants(&bytes)
            .into_iter()
            .map(|(m, must_fail)| {
                let unread = TASK_DEFINITION_FIELDS
                    .iter()
                    .all(|f| m.label != format!("duplicated key \"{f}\""));
                let must_fail = must_fail && !(m.label.starts_with("duplicated") && unread);
                (m, must_fail)
            })
            .collect();
        check_all("TaskDefinition", &name, mutants, |b| {
            serde_json::from_slice::<TaskDefinition>(b)
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Task validation (the worker's restricted-input gate)

fn sign_validator() -> TaskValidator {
    let rules = ScopeRules::new(
        "project:releng:signing:cert:",
        ["release-signing", "dep-signing"],
    )
    .unwrap();
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/payload/sign.schema.json");
    TaskValidator::new(&schema, rules, ValidateLimits::default()).unwrap()
}

/// Every JSON leaf position of `v`, as a JSON pointer.
fn leaf_pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                let k = k.replace('~', "~0").replace('/', "~1");
                leaf_pointers(c, format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, c) in a.iter().enumerate() {
                leaf_pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

#[test]
fn task_validator_survives_mutations() {
    let v = sign_validator();
    let validate = |b: &[u8]| -> Result<(), String> {
        let value: Value = serde_json::from_slice(b).map_err(|e| e.to_string())?;
        v.validate(&value, b.len())
            .map(|_| ())
            .map_err(|r| r.to_string())
    };
    let good = seed("task/sign-task.json");
    validate(&good).unwrap();
    for (name, bytes) in seeds("task") {
        let is_sign = name.ends_with("sign-task.json");
        // FirefoxCI docker-worker tasks are not signing tasks: every one must be refused.
        assert_eq!(validate(&bytes).is_ok(), is_sign, "{name}");
        // The validator judges a parsed `Value`: duplicate keys were resolved by the JSON parser
        // before (the queue's own parser resolves them the same way), so only the other
        // mutations must fail.
        let mutants = json_mutants(&bytes)
            .into_iter()
            .map(|(m, must_fail)| {
                let dup = m.label.starts_with("duplicated");
                (m, (must_fail && !dup) || !is_sign)
            })
            .collect();
        check_all("TaskValidator::validate", &name, mutants, validate);
    }

    // Every leaf of the good task replaced by hostile values. Inside the payload the schema is
    // closed and typed, so a wrong type there must be refused.
    let task: Value = serde_json::from_slice(&good).unwrap();
    let mut leaves = Vec::new();
    leaf_pointers(&task, String::new(), &mut leaves);
    let deep = (0..100).fold(json!(1), |acc, _| json!({"a": acc}));
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e300),
        json!(""),
        json!("../../etc/passwd"),
        json!("x".repeat(300_000)),
        json!([]),
        json!({}),
        deep,
    ];
    for ptr in &leaves {
        for r in &replacements {
            let mut t = task.clone();
            *t.pointer_mut(ptr).unwrap() = r.clone();
            let b = serde_json::to_vec(&t).unwrap();
            let label = format!("{ptr} = {}", show(&serde_json::to_vec(r).unwrap()));
            let res = guard("TaskValidator::validate", &label, &b, || validate(&b));
            if ptr.starts_with("/payload/") {
                assert!(res.is_err(), "accepted {label}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Trust store and chain policy (TOML)

/// TOML mutations: byte mutations plus [`toml_structural`].
fn toml_mutants(seed: &[u8]) -> Vec<Mutant> {
    let mut m = byte_mutants(seed);
    m.extend(toml_structural(seed));
    m
}

/// A duplicated first key line, 10 000 levels of nesting, a huge string value: each must be
/// refused.
fn toml_structural(seed: &[u8]) -> Vec<Mutant> {
    let mut m = Vec::new();
    let text = String::from_utf8_lossy(seed);
    if let Some(line) = text
        .lines()
        .find(|l| l.contains(" = ") && !l.starts_with('#'))
    {
        m.push(Mutant {
            label: format!("duplicated line {line:?}"),
            bytes: format!("{line}\n{text}").into_bytes(),
            cut: None,
        });
    }
    for (what, s) in [
        (
            "arrays",
            format!("x = {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "tables",
            format!("x = {}1{}\n", "{a = ".repeat(10_000), "}".repeat(10_000)),
        ),
        (
            "dotted keys",
            format!("{} = 1\n", vec!["a"; 10_000].join(".")),
        ),
    ] {
        m.push(Mutant {
            label: format!("10 000 levels of nested {what}"),
            bytes: format!("{s}{text}").into_bytes(),
            cut: None,
        });
    }
    m.push(Mutant {
        label: "4 MiB string value".into(),
        bytes: format!("x = \"{}\"\n{text}", "A".repeat(4 << 20)).into_bytes(),
        cut: None,
    });
    m
}

#[test]
fn trust_policy_survives_mutations() {
    let bytes = seed("trust/trust.toml");
    Policy::parse(&bytes).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    // Cutting anywhere before the end of the root key's certificate leaves no usable root.
    let root_end = text.find("\"\"\"\n\n[workers]").unwrap() + 3;
    for m in toml_mutants(&bytes) {
        let r = guard("Policy::parse", &m.label, &m.bytes, || {
            Policy::parse(&m.bytes)
        });
        let must_fail = m.cut.is_some_and(|c| c < root_end)
            || m.label.starts_with("duplicated")
            || m.label.starts_with("10 000")
            || m.label.starts_with("4 MiB");
        if must_fail {
            assert!(r.is_err(), "accepted {}: {}", m.label, show(&m.bytes));
        }
    }
}

#[test]
fn chain_policy_survives_mutations() {
    let bytes = seed("chain-policy/example.toml");
    let parse = |b: &[u8]| {
        let text = String::from_utf8_lossy(b);
        ChainPolicy::from_toml(&text)
    };
    parse(&bytes).unwrap();
    // Keep this test cheap: the policy schema is compiled on every parse.
    let mut mutants = truncations(&bytes);
    mutants.retain(|m| m.cut.is_some_and(|c| c % 7 == 0));
    mutants.extend(bit_flips(&bytes, 200));
    mutants.extend(toml_structural(&bytes));
    let first_queue = String::from_utf8_lossy(&bytes).find("[[queues]]").unwrap();
    for m in mutants {
        let r = guard("ChainPolicy::from_toml", &m.label, &m.bytes, || {
            parse(&m.bytes)
        });
        let must_fail = m.cut.is_some_and(|c| c < first_queue)
            || m.label.starts_with("duplicated")
            || m.label.starts_with("10 000")
            || m.label.starts_with("4 MiB");
        if must_fail {
            assert!(r.is_err(), "accepted {}: {}", m.label, show(&m.bytes));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Identifiers and names

/// The queue's slugid pattern, written independently of `TaskId::parse`.
fn is_slugid(s: &str) -> bool {
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let c: Vec<char> = s.chars().collect();
    c.len() == 22
        && c.iter().all(|ch| alphabet.contains(*ch))
        && "QRST".contains(c[8])
        && "CGKOSWaeimquy26-".contains(c[10])
        && "AQgw".contains(c[21])
}

#[test]
fn task_ids_match_the_slugid_pattern_exactly() {
    let mut inputs: Vec<String> = vec![
        String::new(),
        "decision_task_id".into(),
        "asdf".into(),
        "GVi2vTw8RYqdga6pE08Aiw\n".into(),
        " GVi2vTw8RYqdga6pE08Aiw".into(),
        "GVi2vTw8RYqdga6pE08Aiw/".into(),
        "../../../../../../etc/p".into(),
        "GVi2vTw8RYqdga6pE08Ai\u{e9}".into(),
        "Ａ".repeat(22),
        "A".repeat(1 << 20),
    ];
    for id in [
        "GVi2vTw8RYqdga6pE08Aiw",
        "Qt3GKapxQmWDJId8m5o8Yg",
        "-t3GKapxQmWDJId8m5o8Yg",
    ] {
        inputs.extend(
            truncations(id.as_bytes())
                .into_iter()
                .map(|m| String::from_utf8(m.bytes).unwrap()),
        );
        // Every position replaced by every printable ASCII character and a multi-byte one.
        for i in 0..id.len() {
            for c in (b' '..=b'~')
                .map(char::from)
                .chain(['\u{e9}', '\u{2028}', '\0'])
            {
                let mut s: Vec<char> = id.chars().collect();
                s[i] = c;
                inputs.push(s.into_iter().collect());
            }
        }
    }
    for _ in 0..8 {
        inputs.push(TaskId::generate().to_string());
    }
    for s in &inputs {
        let r = guard("TaskId::parse", "input", s.as_bytes(), || TaskId::parse(s));
        assert_eq!(
            r.is_ok(),
            is_slugid(s),
            "TaskId::parse disagrees on {:?}",
            show(s.as_bytes())
        );
        if let Err(e) = r {
            assert!(
                e.value.chars().count() <= 64,
                "error echoes unbounded input"
            );
        }
    }
}

#[test]
fn artifact_names_refuse_hostile_forms() {
    let limits = artifacts::Limits::default();
    let hostile = [
        String::new(),
        "/".into(),
        "/etc/passwd".into(),
        "../x".into(),
        "public/../../x".into(),
        "public/./x".into(),
        "public//x".into(),
        "public/x/".into(),
        "public\\x".into(),
        "public/x\0".into(),
        "public/\u{7f}".into(),
        "public/\u{85}x".into(),
        "public/x\n".into(),
        "..".into(),
        "public/chain-of-trust.json".into(),
        "public/chain-of-trust.json.sig".into(),
        "public/chain-of-trust.json.asc".into(),
        format!("public/{}", "x".repeat(limits.max_name_bytes)),
        "a/".repeat(1 << 20),
    ];
    for name in &hostile {
        let r = guard("artifacts::check_name", "hostile", name.as_bytes(), || {
            artifacts::check_name(name, &limits)
        });
        assert!(r.is_err(), "accepted {:?}", show(name.as_bytes()));
        // The same names as upstream paths (payload and chain-of-trust documents), except the
        // reserved chain-of-trust names, which are legitimate upstream paths.
        if name.contains("chain-of-trust") || name.len() > limits.max_name_bytes {
            continue;
        }
        let r = guard(
            "verify::ArtifactPath::parse",
            "hostile",
            name.as_bytes(),
            || chainlock::verify::ArtifactPath::parse(name),
        );
        assert!(
            r.is_err(),
            "verify path accepted {:?}",
            show(name.as_bytes())
        );
        let r = guard(
            "validate::path::ArtifactPath::parse",
            "hostile",
            name.as_bytes(),
            || chainlock::validate::path::ArtifactPath::parse(name),
        );
        assert!(
            r.is_err(),
            "payload path accepted {:?}",
            show(name.as_bytes())
        );
    }
    for good in [
        "public/build/target.tar.gz",
        "public/logs/chainlock.log",
        "x",
    ] {
        artifacts::check_name(good, &limits).unwrap();
        for m in byte_mutants(good.as_bytes()) {
            let s = String::from_utf8_lossy(&m.bytes).into_owned();
            let r = guard("artifacts::check_name", &m.label, &m.bytes, || {
                artifacts::check_name(&s, &limits)
            });
            guard("artifact path parsers", &m.label, &m.bytes, || {
                let _ = chainlock::verify::ArtifactPath::parse(&s);
                let _ = chainlock::validate::path::ArtifactPath::parse(&s);
            });
            if s.is_empty() || s.ends_with('/') || s.contains('\\') {
                assert!(r.is_err(), "accepted {s:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys and signatures

#[test]
fn ed25519_public_keys_decode_strictly() {
    for (name, bytes) in seeds("ed25519") {
        if !name.ends_with("_public_key") {
            continue;
        }
        let text = String::from_utf8(bytes.clone()).unwrap();
        trust::decode_ed25519_public_key(&text).unwrap();
        for m in byte_mutants(&bytes) {
            let s = String::from_utf8_lossy(&m.bytes).into_owned();
            let r = guard("decode_ed25519_public_key", &m.label, &m.bytes, || {
                trust::decode_ed25519_public_key(&s)
            });
            if m.cut.is_some() {
                assert!(r.is_err(), "{name}: accepted {}", m.label);
            }
        }
        for bad in [
            format!("{text}x"),
            format!("{}\u{0}", text),
            text.replace('=', ""),
            format!("{text}{text}"),
            text.replace('+', "-").replace('/', "_"),
            "A".repeat(4 << 20),
        ] {
            if bad == text {
                continue;
            }
            let r = guard(
                "decode_ed25519_public_key",
                "edited",
                bad.as_bytes(),
                || trust::decode_ed25519_public_key(&bad),
            );
            assert!(r.is_err(), "{name}: accepted {:?}", show(bad.as_bytes()));
        }
    }
}

/// A trust store built at run time: a fresh root key, the scriptworker known-answer ed25519
/// public key for `scriptworker`, and a fresh OpenPGP key for `chainlock`.
fn trust_store(t0: DateTime<Utc>, worker: &openpgp::SigningKey) -> TrustStore {
    let root = openpgp::generate_key("root <root@example.invalid>", t0 - Duration::days(10), None)
        .unwrap();
    let pubkey = String::from_utf8(seed("ed25519/scriptworker_public_key")).unwrap();
    let window = |k: WorkerKey| WorkerKey {
        valid_from: t0 - Duration::days(5),
        valid_until: t0 + Duration::days(300),
        ..k
    };
    let mut workers = BTreeMap::new();
    workers.insert(
        "scriptworker".to_owned(),
        vec![window(WorkerKey {
            name: "sw".into(),
            key_type: KeyType::Ed25519,
            fingerprint: None,
            cert: None,
            public_key: Some(pubkey),
            valid_from: t0,
            valid_until: t0,
            revocation: None,
        })],
    );
    workers.insert(
        "chainlock".to_owned(),
        vec![window(WorkerKey {
            name: "cl".into(),
            key_type: KeyType::Openpgp,
            fingerprint: Some(worker.fingerprint()),
            cert: Some(String::from_utf8(worker.public_cert_armored().unwrap()).unwrap()),
            public_key: None,
            valid_from: t0,
            valid_until: t0,
            revocation: None,
        })],
    );
    let file = PolicyFile {
        version: 1,
        expires: t0 + Duration::days(365),
        root: RootRole {
            threshold: 1,
            keys: vec![RootKey {
                name: "root".into(),
                fingerprint: root.fingerprint(),
                cert: String::from_utf8(root.public_cert_armored().unwrap()).unwrap(),
            }],
        },
        workers,
    };
    let bytes = Policy::to_toml(&file).unwrap().into_bytes();
    let sig = openpgp::sign_detached_armored(&root, &bytes, t0 - Duration::days(1)).unwrap();
    let pin = TrustPin {
        version: 1,
        sha256: trust::sha256_hex(&bytes),
    };
    let v = PolicyVersion {
        source: "memory".into(),
        bytes,
        signatures: vec![sig],
    };
    TrustStore::from_versions(&pin, &[v], t0, &trust::Limits::default()).unwrap()
}

#[test]
fn cot_signatures_refuse_every_mutation() {
    // Whole seconds: OpenPGP stores seconds.
    let t0 = DateTime::from_timestamp(chainlock::clock::now().timestamp(), 0).unwrap();
    let worker =
        openpgp::generate_key("w <w@example.invalid>", t0 - Duration::days(10), None).unwrap();
    let store = trust_store(t0, &worker);
    let skew = Duration::minutes(5);
    let message =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/ed25519/foo.json"))
            .unwrap();
    let verify = |imp: &str, msg: &[u8], sig: CotSignature<'_>| {
        store.verify_cot_signature(imp, msg, sig, t0, skew)
    };

    // ed25519 (the scriptworker known answer): any change to signature or message is refused.
    let sig = seed("ed25519/foo.json.scriptworker.sig");
    verify("scriptworker", &message, CotSignature::Ed25519Raw(&sig)).unwrap();
    for m in byte_mutants(&sig).into_iter().chain([Mutant {
        label: "65 bytes".into(),
        bytes: [sig.as_slice(), &[0]].concat(),
        cut: None,
    }]) {
        let r = guard("verify_cot_signature(ed25519)", &m.label, &m.bytes, || {
            verify("scriptworker", &message, CotSignature::Ed25519Raw(&m.bytes))
        });
        assert!(r.is_err(), "forged signature accepted: {}", m.label);
    }
    for m in byte_mutants(&message) {
        let r = guard("verify_cot_signature(ed25519)", &m.label, &m.bytes, || {
            verify("scriptworker", &m.bytes, CotSignature::Ed25519Raw(&sig))
        });
        assert!(r.is_err(), "signature accepted over {}", m.label);
    }
    // The right signature for the wrong implementation (key isolation).
    assert!(verify("chainlock", &message, CotSignature::Ed25519Raw(&sig)).is_err());

    // OpenPGP: mutations of the armored signature must not panic; a changed message is refused.
    let asc = openpgp::sign_detached_armored(&worker, &message, t0 - Duration::minutes(1)).unwrap();
    verify("chainlock", &message, CotSignature::OpenPgpArmored(&asc)).unwrap();
    let mut asc_mutants = truncations(&asc);
    asc_mutants.retain(|m| m.cut.is_some_and(|c| c % 3 == 0));
    asc_mutants.extend(bit_flips(&asc, 400));
    for m in asc_mutants {
        guard("verify_cot_signature(openpgp)", &m.label, &m.bytes, || {
            let _ = verify(
                "chainlock",
                &message,
                CotSignature::OpenPgpArmored(&m.bytes),
            );
            let _ = openpgp::parse_detached_signature(&m.bytes);
        });
    }
    for m in bit_flips(&message, 128) {
        let r = guard("verify_cot_signature(openpgp)", &m.label, &m.bytes, || {
            verify("chainlock", &m.bytes, CotSignature::OpenPgpArmored(&asc))
        });
        assert!(r.is_err(), "signature accepted over {}", m.label);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let not_armored = b64.encode(&asc).into_bytes();
    assert!(
        verify(
            "chainlock",
            &message,
            CotSignature::OpenPgpArmored(&not_armored)
        )
        .is_err()
    );
}

#[test]
fn openpgp_certificates_and_signatures_survive_mutations() {
    for (name, bytes) in seeds("openpgp") {
        openpgp::parse_detached_signature(&bytes)
            .unwrap_or_else(|e| panic!("seed {name} refused: {e}"));
        for m in byte_mutants(&bytes) {
            guard("parse_detached_signature", &m.label, &m.bytes, || {
                let _ = openpgp::parse_detached_signature(&m.bytes);
            });
        }
    }
    // The root certificate embedded in the trust seed.
    let text = String::from_utf8(seed("trust/trust.toml")).unwrap();
    let file: PolicyFile = chainlock::toml_text::from_str(&text).unwrap();
    let cert = file.root.keys[0].cert.as_bytes().to_vec();
    openpgp::parse_public_cert(&cert).unwrap();
    let mut mutants = truncations(&cert);
    mutants.retain(|m| m.cut.is_some_and(|c| c % 5 == 0));
    mutants.extend(bit_flips(&cert, 300));
    for m in mutants {
        let r = guard("parse_public_cert", &m.label, &m.bytes, || {
            openpgp::parse_public_cert(&m.bytes)
        });
        if m.cut.is_some_and(|c| c < 40) {
            assert!(r.is_err(), "accepted {}", m.label);
        }
    }
    for deep in deep_json() {
        assert!(openpgp::parse_public_cert(&deep.bytes).is_err());
        assert!(openpgp::parse_detached_signature(&deep.bytes).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// The verifier's bundle reader

#[test]
fn bundle_reader_survives_mutated_files() {
    let limits = chainlock::verify::Limits::default();
    let src = seeds_dir().join("bundle");
    let dir = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        for entry in ["bundle.json"].into_iter().map(String::from).chain(
            ["GVi2vTw8RYqdga6pE08Aiw", "VQU9QMO4Teq7zr91FhBusg"]
                .into_iter()
                .flat_map(|t| ["task.json", "status.json"].map(|f| format!("{t}/{f}"))),
        ) {
            let from = src.join(&entry);
            if from.exists() {
                let dest = to.join(&entry);
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                std::fs::copy(from, dest).unwrap();
            }
        }
    };
    copy(dir.path());
    let bundle = Bundle::open(dir.path(), &limits).unwrap();
    assert_eq!(bundle.index().tasks.len(), 2);

    for file in [
        "bundle.json",
        "GVi2vTw8RYqdga6pE08Aiw/task.json",
        "GVi2vTw8RYqdga6pE08Aiw/status.json",
    ] {
        let original = std::fs::read(src.join(file)).unwrap();
        let mut mutants = json_mutants(&original);
        // Bundle::open reads files; keep the IO bounded.
        mutants.retain(|(m, _)| m.cut.is_none_or(|c| c % 5 == 0 || c + 8 > original.len()));
        let path = dir.path().join(file);
        for (m, must_fail) in mutants {
            std::fs::write(&path, &m.bytes).unwrap();
            let label = format!("{file}, {}", m.label);
            let r = guard("Bundle::open", &label, &m.bytes, || {
                Bundle::open(dir.path(), &limits)
            });
            // bundle.json must fail to open; a task file that is not strict JSON (or not a
            // status) is recorded as malformed evidence, which the verifier turns into a
            // finding, and is never used. A 4 MiB task definition is still JSON.
            let lenient = file.ends_with("task.json") && m.label.starts_with("a 4 MiB");
            if must_fail && !lenient {
                let refused = match &r {
                    Err(_) => true,
                    Ok(b) => {
                        use chainlock::verify::Evidence as _;
                        file != "bundle.json"
                            && b.unusable()
                                .iter()
                                .any(|u| format!("{}/{}", u.task_id, u.file) == file)
                    }
                };
                assert!(refused, "Bundle::open accepted {label}");
            }
        }
        std::fs::write(&path, &original).unwrap();
    }
    // A document over the size cap is refused before parsing.
    let small = chainlock::verify::Limits {
        max_document_bytes: 64,
        ..limits.clone()
    };
    assert!(Bundle::open(dir.path(), &small).is_err());
}

// ---------------------------------------------------------------------------------------------
// Source URLs (task metadata.source and *_HEAD_REPOSITORY come from task definitions)

#[test]
fn source_url_helpers_survive_mutations() {
    use chainlock::verify::source::{normalize_url, url_within};
    let base = "https://github.com/example/product";
    let seeds = [
        "https://github.com/example/product/raw/0123456789abcdef/.taskcluster.yml",
        "https://hg.mozilla.org/releases/mozilla-release",
        "ssh://hg@hg.mozilla.org/try",
    ];
    for seed in seeds {
        for m in byte_mutants(seed.as_bytes()) {
            let s = String::from_utf8_lossy(&m.bytes).into_owned();
            guard("normalize_url/url_within", &m.label, &m.bytes, || {
                let _ = normalize_url(&s);
                let _ = url_within(base, &s);
                let _ = url_within(&s, base);
            });
        }
    }
    // Look-alikes of the base are not within it.
    for evil in [
        "https://github.com/example/product-try",
        "https://github.com/example/productx/raw/x",
        "https://github.com.evil.example/example/product",
        "https://evil.example/github.com/example/product",
        "http://github.com@evil.example/example/product",
        "https://github.com/example/product/../product-try",
        "https://github.com/example/product/%2e%2e/product-try",
    ] {
        let r = guard("url_within", evil, evil.as_bytes(), || {
            url_within(base, evil)
        });
        assert!(!r, "{evil} treated as within {base}");
    }
    let huge = format!("{base}/{}", "a/".repeat(1 << 20));
    guard("normalize_url", "huge", huge.as_bytes(), || {
        normalize_url(&huge)
    });
}

// ---------------------------------------------------------------------------------------------
// task-graph comparison (check 5)

/// The fuzz target `graph_compare`'s harness: `{"child", "decision", "graph"}`, the child being
/// the graph's first key that is a taskId. Returns the finding codes (`None`: not JSON).
fn compare_graph_input(bytes: &[u8]) -> Option<Vec<&'static str>> {
    use chainlock::verify::graph;
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = graph::parse_offset(s);
    }
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let graph = match v.get("graph") {
        Some(Value::Object(m)) => m.clone(),
        _ => serde_json::Map::new(),
    };
    let child_id = graph
        .keys()
        .find_map(|k| TaskId::parse(k).ok())
        .unwrap_or_else(|| TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap());
    let decision_id = TaskId::parse("HxKtZrxRQpWx5wQ1Zp8VNg").unwrap();
    let child = v.get("child").cloned().unwrap_or(Value::Null);
    let decision = v.get("decision").cloned().unwrap_or(Value::Null);
    let errs = graph::compare(&child_id, &child, &decision_id, &decision, &graph);
    Some(errs.iter().map(|e| e.code()).collect())
}

/// Issue 9: a `{"relative-datestamp": "300000 years"}` in a signed graph panicked the verifier
/// (`DateTime + TimeDelta overflowed`, `TimeDelta::seconds out of bounds`). The seeds (and the
/// fuzz corpus they start) hold matching graphs, mixed units, absurd offsets and mismatches.
#[test]
fn graph_comparison_survives_seeds_and_mutations() {
    let expected: BTreeMap<&str, Vec<&str>> = BTreeMap::from([
        ("matching.json", vec![]),
        (
            "out-of-range-datestamps.json",
            vec!["datestamp-out-of-range"],
        ),
        ("mixed-units.json", vec!["graph-invalid"]),
    ]);
    for (name, bytes) in seeds("graph") {
        let codes = guard("graph::compare", &name, &bytes, || {
            compare_graph_input(&bytes)
        })
        .unwrap_or_else(|| panic!("{name} is not JSON"));
        let file = name.rsplit('/').next().unwrap_or(&name);
        if let Some(want) = expected.get(file) {
            assert_eq!(&codes, want, "{name}");
        } else {
            assert!(!codes.is_empty(), "{name}: expected mismatches");
        }
        for (m, _) in json_mutants(&bytes) {
            let label = format!("{name}, {}", m.label);
            guard("graph::compare", &label, &m.bytes, || {
                compare_graph_input(&m.bytes)
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Legacy Azure-queue poll answers (`[queue] protocol = "azure-poll"`)

/// Everything the poll loop does with an answer, on one input: parse, decode each message,
/// build its delete URL. `Err` when the answer as a whole is refused.
fn azure_answer(bytes: &[u8]) -> Result<usize, chainlock::queue::azure::XmlError> {
    use chainlock::queue::azure;
    let messages = azure::parse_messages(bytes, &azure::Limits::default())?;
    let template = chainlock::secret::Secret::new(
        "https://a.example/q/messages/{{messageId}}?popreceipt={{popReceipt}}&sig=s",
    );
    let mut good = 0;
    for m in &messages {
        good += usize::from(azure::decode_message(m).is_ok());
        if let Some((id, pop)) = m.delete_handle() {
            let url = azure::delete_url(&template, id, pop).unwrap();
            assert!(!url.expose().contains("{{"), "placeholder left");
        }
    }
    Ok(good)
}

#[test]
fn azure_poll_answers_survive_mutations() {
    use chainlock::queue::azure;
    for (name, bytes) in seeds("azure") {
        assert_eq!(
            guard("azure answer", &name, &bytes, || azure_answer(&bytes)),
            Ok(1),
            "{name}"
        );
        let trimmed_len = bytes.trim_ascii_end().len();
        let mut mutants: Vec<(Mutant, bool)> = byte_mutants(&bytes)
            .into_iter()
            .map(|m| {
                // Any proper prefix leaves the root element unclosed.
                let must_fail = m.cut.is_some_and(|c| c < trimmed_len);
                (m, must_fail)
            })
            .collect();
        let text = String::from_utf8(bytes.clone()).unwrap();
        let body_at = text.find("<QueueMessagesList>").unwrap();
        let (decl, body) = text.split_at(body_at);
        for (label, doc, must_fail) in [
            (
                "a DTD with a billion-laughs entity",
                format!(
                    "{decl}<!DOCTYPE l [<!ENTITY a \"aaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;\">]>{}",
                    body.replace("<MessageText>", "<MessageText>&b;")
                ),
                true,
            ),
            (
                "an external entity",
                format!("<!DOCTYPE l SYSTEM \"file:///etc/passwd\">{body}"),
                true,
            ),
            (
                "an undefined entity",
                body.replace("<MessageText>", "<MessageText>&undefined;"),
                true,
            ),
            (
                "a 4 MiB MessageText",
                body.replace(
                    "<MessageText>",
                    &format!("<MessageText>{}", "A".repeat(4 << 20)),
                ),
                true,
            ),
            (
                "10 000 levels of nesting",
                body.replace(
                    "<QueueMessage>",
                    &format!("<QueueMessage>{}", "<x>".repeat(10_000)),
                ),
                true,
            ),
            (
                "duplicated MessageText",
                body.replace(
                    "<MessageText>",
                    "<MessageText>AAAA</MessageText><MessageText>",
                ),
                false,
            ),
        ] {
            mutants.push((
                Mutant {
                    label: label.into(),
                    bytes: doc.into_bytes(),
                    cut: None,
                },
                must_fail,
            ));
        }
        check_all("azure answer", &name, mutants, azure_answer);
        // A duplicated field makes the message unusable, never the other copy's claim.
        let dup = body.replace(
            "<MessageText>",
            "<MessageText>AAAA</MessageText><MessageText>",
        );
        let msgs = azure::parse_messages(dup.as_bytes(), &azure::Limits::default()).unwrap();
        assert!(
            msgs.iter().all(|m| azure::decode_message(m).is_err()),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Check 9's inputs (decision-rebuild)

/// The policy of the `rebuild_inputs` fuzz target: hg and git rules for the seeds' repository.
fn rebuild_policy() -> ChainPolicy {
    ChainPolicy::from_toml(&String::from_utf8(seed("chain-policy/rebuild.toml")).unwrap()).unwrap()
}

/// Every rebuild seed plans and builds its context unchanged; truncated and bit-flipped
/// templates, pushlogs and actions never panic (they parse or are refused).
#[test]
#[allow(clippy::result_large_err)] // VerifyError is the verifier's own, large, type.
fn rebuild_inputs_survive_seeds_and_mutations() {
    use chainlock::verify::rebuild::{self, Inputs, NoRenderer, Planned};
    let policy = rebuild_policy();
    let id = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap();
    let did = TaskId::parse("HxKtZrxRQpWx5wQ1Zp8VNg").unwrap();
    for (name, bytes) in seeds("rebuild") {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let link = v["link"].clone();
        let decision = v.get("decision").cloned().unwrap_or_else(|| link.clone());
        let text = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(|s| s.as_bytes().to_vec())
        };
        let sources: Vec<Vec<u8>> = v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().as_bytes().to_vec())
            .collect();
        let Ok(Planned::Rebuild(plan)) = rebuild::plan(&policy, &id, &link, &did, &decision) else {
            panic!("{name}: does not plan");
        };
        let (actions, parameters) = (text("actions"), text("parameters"));
        let build = |sources: Vec<&[u8]>, actions: Option<&[u8]>| {
            let inputs = Inputs {
                link_raw: &link,
                decision_raw: &decision,
                sources,
                actions_json: actions,
                parameters_yml: parameters.as_deref(),
            };
            // The action's hook payload needs json-e: NoRenderer refuses it, after the
            // inputs parsed. Decision tasks build their whole context here.
            rebuild::context_and_template(&plan, &inputs, &NoRenderer)
        };
        let seeded = build(
            sources.iter().map(Vec::as_slice).collect(),
            actions.as_deref(),
        );
        match &seeded {
            Ok(_) => {}
            Err(e) => assert!(e.to_string().contains("no json-e renderer"), "{name}: {e}"),
        }
        // Mutate each source in turn (and actions.json).
        for i in 0..sources.len() {
            let mut mutants = truncations(&sources[i]);
            mutants.retain(|m| m.cut.is_some_and(|c| c % 97 == 0));
            mutants.extend(bit_flips(&sources[i], 60));
            for m in mutants {
                let mut s: Vec<&[u8]> = sources.iter().map(Vec::as_slice).collect();
                s[i] = &m.bytes;
                guard("rebuild::context_and_template", &m.label, &m.bytes, || {
                    let _ = rebuild::parse_yaml(&m.bytes);
                    let _ = build(s, actions.as_deref());
                });
            }
        }
        if let Some(a) = &actions {
            for m in bit_flips(a, 60) {
                guard("rebuild actions.json", &m.label, &m.bytes, || {
                    let _ = build(sources.iter().map(Vec::as_slice).collect(), Some(&m.bytes));
                });
            }
        }
    }
}
