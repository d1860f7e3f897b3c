//! Task validation and the two shipped scripts (`chainlock script sign`, `chainlock script push`).
//!
//! Validation tests feed task definitions to the real validator with the real schemas from
//! `schemas/`. Script tests run the built `chainlock` binary as the worker would (env, work dir,
//! verified manifest), then check outputs with real `gpg` and `sqv`, a real local directory, and
//! moto's real S3 server on loopback.
#![allow(clippy::disallowed_methods)] // tests start gpg, sqv, moto and the chainlock binary

use chainlock::validate::path::PathError;
use chainlock::validate::{
    Limits, Rejection, Rule, SchemaKind, ScopeRules, TaskValidator, ValidatedTask,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

const DEP: &str = "GVi2vTw8RYqdga6pE08Aiw";
const DEP2: &str = "EHZBfHRZRoiRf3yVeh_Q8g";
const GROUP: &str = "Qt3GKapxQmWDJId8m5o8Yg";
const CERT: &str = "project:releng:signing:cert:";
const BUCKET: &str = "project:releng:push:bucket:";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schema(name: &str) -> PathBuf {
    repo().join("schemas/payload").join(name)
}

fn task(scopes: &[&str], payload: Value) -> Value {
    json!({
        "provisionerId": "releng",
        "workerType": "signing",
        "taskQueueId": "releng/signing",
        "schedulerId": "taskcluster-level-3",
        "taskGroupId": GROUP,
        "dependencies": [DEP, DEP2],
        "created": "2026-01-01T00:00:00.000Z",
        "deadline": "2026-01-02T00:00:00.000Z",
        "expires": "2027-01-01T00:00:00.000Z",
        "scopes": scopes,
        "payload": payload,
        "metadata": {
            "name": "sign",
            "description": "sign a build",
            "owner": "releng@example.com",
            "source": "https://example.com/ci"
        },
        "tags": {},
        "extra": {}
    })
}

fn sign_payload(paths: Value) -> Value {
    json!({
        "upstreamArtifacts": [
            {"taskId": DEP, "taskType": "build", "paths": paths, "formats": ["gpg"]}
        ]
    })
}

fn sign_validator() -> TaskValidator {
    let rules = ScopeRules::new(CERT, ["release-signing", "dep-signing"]).unwrap();
    TaskValidator::new(&schema("sign.schema.json"), rules, Limits::default()).unwrap()
}

fn run(v: &TaskValidator, t: &Value) -> Result<ValidatedTask, Rejection> {
    let len = serde_json::to_vec(t).unwrap().len();
    v.validate(t, len)
}

fn rejected(v: &TaskValidator, t: &Value) -> Rejection {
    match run(v, t) {
        Ok(_) => panic!("task accepted: {t}"),
        Err(r) => r,
    }
}

fn cert_scope() -> String {
    format!("{CERT}release-signing")
}

#[test]
fn valid_sign_task_is_accepted_with_typed_view() {
    let v = sign_validator();
    let t = task(
        &[&cert_scope(), "queue:other"],
        sign_payload(json!(["public/build/a.zip", "public/build/b.zip"])),
    );
    let ok = run(&v, &t).unwrap();
    assert_eq!(ok.scope().value(), "release-signing");
    assert_eq!(ok.scope().scope(), cert_scope());
    let up = ok.upstream_artifacts();
    assert_eq!(up.len(), 1);
    assert_eq!(up[0].task_id.as_str(), DEP);
    assert_eq!(up[0].task_type, "build");
    assert_eq!(up[0].formats, vec!["gpg".to_owned()]);
    assert_eq!(up[0].paths[1].as_str(), "public/build/b.zip");
    assert_eq!(ok.definition().task_group_id.as_str(), GROUP);
}

/// One row per rule: a payload path and the violation it must produce.
#[test]
fn upstream_path_rules_table() {
    let v = sign_validator();
    let rows: &[(&str, Rule)] = &[
        (
            "../../etc/passwd",
            Rule::ArtifactPath(PathError::ParentTraversal),
        ),
        (
            "public/../../x",
            Rule::ArtifactPath(PathError::ParentTraversal),
        ),
        ("/etc/passwd", Rule::ArtifactPath(PathError::Absolute)),
        ("public\\build\\x", Rule::ArtifactPath(PathError::Backslash)),
        (
            "public/x\u{0}.zip",
            Rule::ArtifactPath(PathError::ControlCharacter),
        ),
        ("public//x", Rule::ArtifactPath(PathError::EmptySegment)),
        ("public/*.zip", Rule::ArtifactPath(PathError::Glob)),
    ];
    for (path, rule) in rows {
        let r = rejected(&v, &task(&[&cert_scope()], sign_payload(json!([path]))));
        assert!(r.has(rule), "{path:?}: {r}");
        // The payload schema's `artifact-path` format reports it too, at the same pointer.
        assert!(
            r.violations
                .iter()
                .any(|x| x.pointer == "/payload/upstreamArtifacts/0/paths/0"),
            "{r}"
        );
    }
}

#[test]
fn bad_slugid_is_refused() {
    let v = sign_validator();
    for bad in ["decision_task_id", "asdf", "GVi2vTw8RYqdga6pE08Aix", "../x"] {
        let p = json!({"upstreamArtifacts": [
            {"taskId": bad, "taskType": "build", "paths": ["public/a"], "formats": ["gpg"]}
        ]});
        let r = rejected(&v, &task(&[&cert_scope()], p));
        assert!(r.has(&Rule::BadTaskId), "{bad}: {r}");
    }
}

#[test]
fn upstream_task_must_be_a_dependency() {
    let v = sign_validator();
    let stranger = "Wm2tTUqhS7aCgeSeAMnPJg";
    let p = json!({"upstreamArtifacts": [
        {"taskId": stranger, "taskType": "build", "paths": ["public/a"], "formats": ["gpg"]}
    ]});
    let r = rejected(&v, &task(&[&cert_scope()], p));
    assert!(r.has(&Rule::NotADependency), "{r}");
}

#[test]
fn duplicate_paths_are_refused_even_across_entries() {
    let v = sign_validator();
    // Same path twice in one entry: the schema's uniqueItems and our own rule both fire.
    let r = rejected(
        &v,
        &task(
            &[&cert_scope()],
            sign_payload(json!(["public/a", "public/a"])),
        ),
    );
    assert!(r.has(&Rule::DuplicatePath), "{r}");
    // Same (taskId, path) in two entries: only our rule can see it.
    let p = json!({"upstreamArtifacts": [
        {"taskId": DEP, "taskType": "build", "paths": ["public/a"], "formats": ["gpg"]},
        {"taskId": DEP, "taskType": "build", "paths": ["public/a"], "formats": ["gpg"]}
    ]});
    let r = rejected(&v, &task(&[&cert_scope()], p));
    assert!(r.has(&Rule::DuplicatePath), "{r}");
    assert_eq!(r.violations.len(), 1, "{r}");
}

#[test]
fn extra_payload_keys_are_refused() {
    let v = sign_validator();
    let mut p = sign_payload(json!(["public/a"]));
    p["env"] = json!({"LD_PRELOAD": "/tmp/x.so"});
    let r = rejected(&v, &task(&[&cert_scope()], p));
    assert!(
        r.has(&Rule::Schema {
            schema: SchemaKind::Payload,
            keyword: "additionalProperties".into()
        }),
        "{r}"
    );
    // Nested objects are closed too.
    let p = json!({"upstreamArtifacts": [
        {"taskId": DEP, "taskType": "build", "paths": ["public/a"], "formats": ["gpg"],
         "url": "https://evil.example/"}
    ]});
    let r = rejected(&v, &task(&[&cert_scope()], p));
    assert!(
        r.violations[0]
            .pointer
            .starts_with("/payload/upstreamArtifacts/0")
    );
}

#[test]
fn unknown_format_value_is_refused() {
    let v = sign_validator();
    let p = json!({"upstreamArtifacts": [
        {"taskId": DEP, "taskType": "build", "paths": ["public/a"], "formats": ["authenticode"]}
    ]});
    let r = rejected(&v, &task(&[&cert_scope()], p));
    assert!(
        r.has(&Rule::Schema {
            schema: SchemaKind::Payload,
            keyword: "enum".into()
        }),
        "{r}"
    );
}

#[test]
fn task_schema_formats_are_asserted() {
    let v = sign_validator();
    let mut t = task(&[&cert_scope()], sign_payload(json!(["public/a"])));
    t["deadline"] = json!("tomorrow");
    let r = rejected(&v, &t);
    assert!(
        r.has(&Rule::Schema {
            schema: SchemaKind::Task,
            keyword: "format".into()
        }),
        "{r}"
    );
    assert_eq!(r.violations[0].pointer, "/deadline");
}

#[test]
fn scope_rules_table() {
    let v = sign_validator();
    let p = || sign_payload(json!(["public/a"]));
    let two = [cert_scope(), format!("{CERT}dep-signing")];
    let rows: Vec<(Vec<String>, Rule)> = vec![
        (
            vec![],
            Rule::NoScope {
                prefix: CERT.into(),
            },
        ),
        (
            vec!["project:releng:signing:format:gpg".into()],
            Rule::NoScope {
                prefix: CERT.into(),
            },
        ),
        (
            two.to_vec(),
            Rule::SeveralScopes {
                prefix: CERT.into(),
            },
        ),
        (
            vec![format!("{CERT}nightly-signing")],
            Rule::UnknownScope {
                value: "nightly-signing".into(),
            },
        ),
        (
            vec![format!("{CERT}*")],
            Rule::UnknownScope { value: "*".into() },
        ),
    ];
    for (scopes, rule) in rows {
        let s: Vec<&str> = scopes.iter().map(String::as_str).collect();
        let r = rejected(&v, &task(&s, p()));
        assert!(r.has(&rule), "{scopes:?}: {r}");
    }
}

#[test]
fn size_limits_are_enforced() {
    let rules = ScopeRules::new(CERT, ["release-signing"]).unwrap();
    let limits = Limits {
        max_task_bytes: 4096,
        max_payload_bytes: 200,
        ..Limits::default()
    };
    let v = TaskValidator::new(&schema("sign.schema.json"), rules, limits).unwrap();
    let paths: Vec<String> = (0..20)
        .map(|i| format!("public/build/file-{i}.zip"))
        .collect();
    let r = rejected(&v, &task(&[&cert_scope()], sign_payload(json!(paths))));
    assert!(
        r.violations
            .iter()
            .any(|x| matches!(x.rule, Rule::PayloadTooLarge { limit: 200, .. })),
        "{r}"
    );
    let t = task(&[&cert_scope()], sign_payload(json!(["public/a"])));
    let r = v.validate(&t, 4097).unwrap_err();
    assert_eq!(
        r.violations[0].rule,
        Rule::TaskTooLarge {
            limit: 4096,
            actual: 4097
        }
    );
}

#[test]
fn every_violation_is_listed() {
    let v = sign_validator();
    let p = json!({"upstreamArtifacts": [
        {"taskId": "nope", "taskType": "build", "paths": ["/abs", "../up"], "formats": ["gpg"]}
    ], "extra": 1});
    let r = rejected(&v, &task(&[], p));
    for rule in [
        Rule::BadTaskId,
        Rule::ArtifactPath(PathError::Absolute),
        Rule::ArtifactPath(PathError::ParentTraversal),
        Rule::NoScope {
            prefix: CERT.into(),
        },
    ] {
        assert!(r.has(&rule), "{rule:?} missing from {r}");
    }
    let text = r.to_string();
    assert!(
        text.contains("/payload/upstreamArtifacts/0/paths/1"),
        "{text}"
    );
    assert_eq!(
        r.exception_reason(),
        chainlock::queue::types::ExceptionReason::MalformedPayload
    );
}

#[test]
fn broken_payload_schema_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let rules = || ScopeRules::new(CERT, ["x"]).unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert!(matches!(
        TaskValidator::new(&bad, rules(), Limits::default()),
        Err(chainlock::validate::ValidateError::ParseSchema { .. })
    ));
    std::fs::write(
        &bad,
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "bogus"}"#,
    )
    .unwrap();
    assert!(matches!(
        TaskValidator::new(&bad, rules(), Limits::default()),
        Err(chainlock::validate::ValidateError::CompileSchema { .. })
    ));
    std::fs::write(
        &bad,
        r#"{"$schema": "https://json-schema.org/draft/2020-12/schema", "format": "slug-id"}"#,
    )
    .unwrap();
    assert!(matches!(
        TaskValidator::new(&bad, rules(), Limits::default()),
        Err(chainlock::validate::ValidateError::CompileSchema { .. })
    ));
    std::fs::write(&bad, r#"{"type": "object"}"#).unwrap();
    assert!(matches!(
        TaskValidator::new(&bad, rules(), Limits::default()),
        Err(chainlock::validate::ValidateError::WrongDraft { .. })
    ));
    assert!(matches!(
        TaskValidator::new(&dir.path().join("missing.json"), rules(), Limits::default()),
        Err(chainlock::validate::ValidateError::ReadSchema { .. })
    ));
}

#[test]
fn push_payload_schema_refuses_escaping_values() {
    let rules = ScopeRules::new(BUCKET, ["releases"]).unwrap();
    let v = TaskValidator::new(&schema("push.schema.json"), rules, Limits::default()).unwrap();
    let scope = format!("{BUCKET}releases");
    let payload = |version: &str| {
        json!({
            "product": "firefox",
            "version": version,
            "upstreamArtifacts": [{"taskId": DEP, "taskType": "build", "paths": ["public/a"]}]
        })
    };
    assert!(run(&v, &task(&[&scope], payload("128.0"))).is_ok());
    let r = rejected(&v, &task(&[&scope], payload("1/../../etc")));
    assert!(
        r.has(&Rule::Schema {
            schema: SchemaKind::Payload,
            keyword: "pattern".into()
        }),
        "{r}"
    );
    let r = rejected(&v, &task(&[&format!("{BUCKET}other")], payload("1.0")));
    assert!(
        r.has(&Rule::UnknownScope {
            value: "other".into()
        }),
        "{r}"
    );
}
