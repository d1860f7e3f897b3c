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

// ---------------------------------------------------------------------------------------------
// Script harness: a work directory laid out exactly as the worker leaves it for a script.

use sha2::Digest;
use std::process::{Command, Output};

const SELF_TASK: &str = "Wm2tTUqhS7aCgeSeAMnPJg";

struct Scenario {
    dir: tempfile::TempDir,
    manifest: Vec<Value>,
}

impl Scenario {
    fn new() -> Scenario {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("work/cot")).unwrap();
        std::fs::create_dir_all(dir.path().join("artifacts")).unwrap();
        Scenario {
            dir,
            manifest: Vec::new(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn work(&self) -> PathBuf {
        self.path("work")
    }

    fn artifacts(&self) -> PathBuf {
        self.path("artifacts")
    }

    /// Places a verified upstream file and lists it in the manifest with the kind the chain
    /// policy verified for its task (`build`, `signing`, `decision`...).
    fn upstream(&mut self, task_id: &str, kind: &str, path: &str, bytes: &[u8]) {
        let file = self.work().join("cot").join(task_id).join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, bytes).unwrap();
        self.manifest.push(json!({
            "taskId": task_id,
            "taskKind": kind,
            "path": path,
            "sha256": hex::encode(sha2::Sha256::digest(bytes)),
            "size": bytes.len(),
        }));
        self.write_manifest();
    }

    fn write_manifest(&self) {
        let m = json!({"version": 2, "artifacts": self.manifest});
        std::fs::write(
            self.work().join("cot/manifest.json"),
            serde_json::to_vec_pretty(&m).unwrap(),
        )
        .unwrap();
    }

    fn task(&self, t: &Value) {
        std::fs::write(
            self.work().join("task.json"),
            serde_json::to_vec_pretty(t).unwrap(),
        )
        .unwrap();
    }

    fn config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Fresh artifact directory (as the worker gives each run).
    fn reset_artifacts(&self) {
        std::fs::remove_dir_all(self.artifacts()).unwrap();
        std::fs::create_dir_all(self.artifacts()).unwrap();
    }

    /// Runs `chainlock script <args>` with only the contract's environment.
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_chainlock"))
            .arg("script")
            .args(args)
            .env_clear()
            .env("TASK_ID", SELF_TASK)
            .env("RUN_ID", "0")
            .env("TASKCLUSTER_ROOT_URL", "http://127.0.0.1:1")
            .env("CHAINLOCK_WORK_DIR", self.work())
            .env("CHAINLOCK_ARTIFACT_DIR", self.artifacts())
            .current_dir(self.work())
            .output()
            .unwrap();
        eprintln!(
            "--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("the script exited, not killed")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

// ---------------------------------------------------------------------------------------------
// push

const SIGNING_DEP: &str = DEP2;

fn push_task(scope: &str, version: &str) -> Value {
    task(
        &[scope],
        json!({
            "product": "firefox",
            "version": version,
            "platform": "linux64",
            "upstreamArtifacts": [
                {"taskId": DEP, "taskType": "build",
                 "paths": ["public/build/target.tar.gz", "public/build/target.checksums"]},
                {"taskId": SIGNING_DEP, "taskType": "signing",
                 "paths": ["public/build/target.tar.gz.asc"]}
            ]
        }),
    )
}

fn push_scenario() -> Scenario {
    let mut s = Scenario::new();
    s.upstream(
        DEP,
        "build",
        "public/build/target.tar.gz",
        &vec![7u8; 300_000],
    );
    s.upstream(
        DEP,
        "build",
        "public/build/target.checksums",
        b"checksums\n",
    );
    s.upstream(
        SIGNING_DEP,
        "signing",
        "public/build/target.tar.gz.asc",
        b"-----BEGIN PGP SIGNATURE-----\n",
    );
    s.task(&push_task(&format!("{BUCKET}releases"), "128.0"));
    s
}

fn push_config(s: &Scenario, destination: &str) -> PathBuf {
    push_config_allowing(s, destination, r#"["build", "signing"]"#)
}

fn push_config_allowing(s: &Scenario, destination: &str, allowed: &str) -> PathBuf {
    let text = format!(
        r#"
payload_schema = {schema:?}
scope_prefix = "{BUCKET}"
path_template = "pub/{{product}}/{{version}}/{{platform}}/{{name}}"
allowed_task_types = {allowed}
parallelism = 2

[destinations.releases]
{destination}
"#,
        schema = schema("push.schema.json")
    );
    s.config("push.toml", &text)
}

fn file_destination(dir: &Path, overwrite: bool) -> String {
    format!(
        "url = \"{}\"\noverwrite = {overwrite}\npublic_url = \"https://archive.example/\"",
        url::Url::from_directory_path(dir).unwrap()
    )
}

fn read_push_manifest(s: &Scenario) -> chainlock::scripts::push::PushManifest {
    let bytes = std::fs::read(s.artifacts().join("public/manifest.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn push_to_directory_publishes_writes_manifest_and_reruns_idempotently() {
    let s = push_scenario();
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    let base = dest.join("pub/firefox/128.0/linux64");
    assert_eq!(
        std::fs::read(base.join("target.tar.gz")).unwrap(),
        vec![7u8; 300_000]
    );
    assert_eq!(
        std::fs::read(base.join("target.checksums")).unwrap(),
        b"checksums\n"
    );
    assert!(base.join("target.tar.gz.asc").is_file());

    let m = read_push_manifest(&s);
    assert_eq!(m.version, 1);
    assert_eq!(m.scope, format!("{BUCKET}releases"));
    let urls: Vec<&str> = m.files.iter().map(|f| f.url.as_str()).collect();
    assert_eq!(
        urls,
        [
            "https://archive.example/pub/firefox/128.0/linux64/target.checksums",
            "https://archive.example/pub/firefox/128.0/linux64/target.tar.gz",
            "https://archive.example/pub/firefox/128.0/linux64/target.tar.gz.asc",
        ]
    );
    let big = &m.files[1];
    assert_eq!(big.size, 300_000);
    assert_eq!(big.sha256, sha256_hex(&vec![7u8; 300_000]));
    assert_eq!(big.task_id, DEP);
    assert_eq!(big.path, "public/build/target.tar.gz");
    assert_eq!(m.files[2].task_id, SIGNING_DEP);

    // A re-run (e.g. after a partial failure) finds identical objects and succeeds.
    s.reset_artifacts();
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out).matches("unchanged:").count(), 3);
    assert_eq!(read_push_manifest(&s), m);
}

#[test]
fn push_refuses_existing_object_with_different_content_unless_overwrite() {
    let s = push_scenario();
    let dest = s.path("dest");
    let existing = dest.join("pub/firefox/128.0/linux64/target.checksums");
    std::fs::create_dir_all(existing.parent().unwrap()).unwrap();
    std::fs::write(&existing, b"something else\n").unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("different content"),
        "{}",
        stderr(&out)
    );
    // Nothing was published, nothing was overwritten, no manifest.
    assert_eq!(std::fs::read(&existing).unwrap(), b"something else\n");
    assert!(!existing.with_file_name("target.tar.gz").exists());
    assert!(!s.artifacts().join("public/manifest.json").exists());

    let cfg = push_config(&s, &file_destination(&dest, true));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert_eq!(std::fs::read(&existing).unwrap(), b"checksums\n");
}

#[test]
fn push_dry_run_changes_nothing() {
    let s = push_scenario();
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap(), "--dry-run"]);
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    assert_eq!(text.matches("would upload:").count(), 3, "{text}");
    assert!(text.contains("https://archive.example/pub/firefox/128.0/linux64/target.tar.gz "));
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
    assert!(!s.artifacts().join("public/manifest.json").exists());
}

#[test]
fn push_refuses_file_changed_after_verification() {
    let s = push_scenario();
    std::fs::write(
        s.work()
            .join("cot")
            .join(DEP)
            .join("public/build/target.checksums"),
        b"checksumz\n",
    )
    .unwrap();
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("integrity failure"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
}

#[test]
fn push_refuses_unknown_bucket_and_unlisted_task_type() {
    let s = push_scenario();
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    s.task(&push_task(&format!("{BUCKET}nightly"), "128.0"));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert!(stderr(&out).contains("scope-unknown"), "{}", stderr(&out));

    // The signing task's files, with the signing kind no longer allowed.
    s.task(&push_task(&format!("{BUCKET}releases"), "128.0"));
    let cfg = push_config_allowing(&s, &file_destination(&dest, false), r#"["build"]"#);
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains(&format!("{SIGNING_DEP} is a verified signing task"))
            && stderr(&out).contains("may not be published"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
}

/// Issue 8, point 7: a `file://` push never writes through a symlink, whether it is planted as
/// an intermediate directory, as the object itself, or is the configured directory.
#[test]
fn push_refuses_symlinks_in_a_local_destination() {
    use std::os::unix::fs::symlink;
    let s = push_scenario();
    let elsewhere = s.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let victim = elsewhere.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let refused = |out: &Output, what: &Path| {
        assert_eq!(code(out), 1, "{}", stderr(out));
        assert!(
            stderr(out).contains(&format!("destination path {}", what.display()))
                && stderr(out).contains("symlink"),
            "{}",
            stderr(out)
        );
        assert!(!s.artifacts().join("public/manifest.json").exists());
    };

    // An intermediate directory: <dest>/pub/firefox/128.0 -> elsewhere.
    let dest = s.path("dest1");
    std::fs::create_dir_all(dest.join("pub/firefox")).unwrap();
    symlink(&elsewhere, dest.join("pub/firefox/128.0")).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    refused(&out, &dest.join("pub/firefox/128.0"));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);

    // The object itself: <dest>/.../target.checksums -> elsewhere/victim, even with overwrite.
    let dest = s.path("dest2");
    let base = dest.join("pub/firefox/128.0/linux64");
    std::fs::create_dir_all(&base).unwrap();
    symlink(&victim, base.join("target.checksums")).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, true));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    refused(&out, &base.join("target.checksums"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert!(
        std::fs::symlink_metadata(base.join("target.checksums"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read_dir(&base).unwrap().count(), 1);

    // The configured directory itself.
    let real = s.path("dest3");
    std::fs::create_dir_all(&real).unwrap();
    let link = s.path("dest3-link");
    symlink(&real, &link).unwrap();
    let cfg = push_config(&s, &file_destination(&link, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    refused(&out, &link);
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 1);
}

/// Issue 8, point 6: the kind that decides what may be published is the one the chain of trust
/// verified (`taskKind` in `cot/manifest.json`), not the payload's `taskType` label.
#[test]
fn push_trusts_the_verified_kind_not_the_payload_task_type() {
    let mut s = Scenario::new();
    // DEP is a decision task: its verified file is the task graph.
    s.upstream(DEP, "decision", "public/task-graph.json", b"{}\n");
    s.upstream(DEP2, "build", "public/build/target.tar.gz", b"build bytes");
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config_allowing(&s, &file_destination(&dest, false), r#"["build"]"#);
    let task_with = |dep_type: &str| {
        task(
            &[&format!("{BUCKET}releases")],
            json!({
                "product": "firefox", "version": "128.0", "platform": "linux64",
                "upstreamArtifacts": [
                    {"taskId": DEP, "taskType": dep_type, "paths": ["public/task-graph.json"]},
                    {"taskId": DEP2, "taskType": "build", "paths": ["public/build/target.tar.gz"]}
                ]
            }),
        )
    };

    // The payload calls the decision task a build: refused, nothing published.
    s.task(&task_with("build"));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "upstream task {DEP} is labelled taskType \"build\" in the payload, but the chain of \
             trust verified it as decision"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);

    // Labelled honestly, the decision task's file is still not publishable (only build is).
    s.task(&task_with("decision"));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{DEP} is a verified decision task")),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);

    // The genuine case: a verified build task labelled build is published.
    s.task(&task(
        &[&format!("{BUCKET}releases")],
        json!({
            "product": "firefox", "version": "128.0", "platform": "linux64",
            "upstreamArtifacts": [
                {"taskId": DEP2, "taskType": "build", "paths": ["public/build/target.tar.gz"]}
            ]
        }),
    ));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(dest.join("pub/firefox/128.0/linux64/target.tar.gz")).unwrap(),
        b"build bytes"
    );
}

#[test]
fn push_refuses_manifest_of_another_version() {
    let s = push_scenario();
    let manifest = s.work().join("cot/manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    // What a version-1 worker wrote: no verified kinds.
    m["version"] = json!(1);
    for a in m["artifacts"].as_array_mut().unwrap() {
        a.as_object_mut().unwrap().remove("taskKind");
    }
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 5, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("unknown version 1"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
}

#[test]
fn push_template_values_cannot_escape_the_prefix() {
    use chainlock::scripts::push::{PathTemplate, TemplateError, TemplateValues, Var};
    let t = PathTemplate::parse("{product}/{version}/{name}").unwrap();
    let ok = TemplateValues {
        product: Some("firefox"),
        version: Some("128.0"),
        name: Some("x.zip"),
        ..TemplateValues::default()
    };
    assert_eq!(t.render(&ok).unwrap(), "firefox/128.0/x.zip");
    let rows: &[(&str, TemplateError)] = &[
        (
            "/..",
            TemplateError::BadValue {
                var: Var::Version,
                reason: PathError::Absolute,
            },
        ),
        (
            "1/..",
            TemplateError::BadValue {
                var: Var::Version,
                reason: PathError::ParentTraversal,
            },
        ),
        (
            "..",
            TemplateError::BadValue {
                var: Var::Version,
                reason: PathError::ParentTraversal,
            },
        ),
        (
            "",
            TemplateError::BadValue {
                var: Var::Version,
                reason: PathError::Empty,
            },
        ),
        (
            "a\\b",
            TemplateError::BadValue {
                var: Var::Version,
                reason: PathError::Backslash,
            },
        ),
        ("1/2", TemplateError::Separator { var: Var::Version }),
    ];
    for (value, expected) in rows {
        let v = TemplateValues {
            version: Some(value),
            ..ok.clone()
        };
        assert_eq!(&t.render(&v).unwrap_err(), expected, "{value:?}");
    }
    let v = TemplateValues {
        version: None,
        ..ok.clone()
    };
    assert_eq!(
        t.render(&v).unwrap_err(),
        TemplateError::Missing { var: Var::Version }
    );

    assert_eq!(
        PathTemplate::parse("{product}/x").unwrap_err(),
        TemplateError::NoName
    );
    assert!(matches!(
        PathTemplate::parse("/{name}"),
        Err(TemplateError::Literal(PathError::Absolute))
    ));
    assert!(matches!(
        PathTemplate::parse("../{name}"),
        Err(TemplateError::Literal(_))
    ));
    assert!(matches!(
        PathTemplate::parse("{product}//{name}"),
        Err(TemplateError::Literal(_))
    ));
    assert!(matches!(
        PathTemplate::parse("{nme}"),
        Err(TemplateError::Syntax(_))
    ));
    assert!(matches!(
        PathTemplate::parse("{name"),
        Err(TemplateError::Syntax(_))
    ));
}

#[test]
fn push_refuses_template_value_with_parent_traversal_end_to_end() {
    // A looser payload schema (an operator's own) must not open a hole: the template check
    // still refuses the value.
    let mut s = push_scenario();
    let mut loose: Value =
        serde_json::from_slice(&std::fs::read(schema("push.schema.json")).unwrap()).unwrap();
    loose["properties"]["version"] = json!({"type": "string"});
    let loose_path = s.path("loose.schema.json");
    std::fs::write(&loose_path, serde_json::to_vec(&loose).unwrap()).unwrap();
    s.task(&push_task(&format!("{BUCKET}releases"), "1/../../../etc"));
    s.upstream(DEP, "build", "public/extra", b"x");
    let dest = s.path("dest");
    std::fs::create_dir_all(&dest).unwrap();
    let cfg = push_config(&s, &file_destination(&dest, false));
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("{:?}", schema("push.schema.json")),
        &format!("{loose_path:?}"),
    );
    std::fs::write(&cfg, text).unwrap();
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("value for {version} is refused"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
}

/// moto's S3-compatible server on a loopback port; killed (by its pid) when dropped.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> PathBuf {
    std::env::var_os("CHAINLOCK_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"))
}

fn start_moto() -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(python())
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto server (set CHAINLOCK_TEST_PYTHON or create .venv, see scripts/test)");
    let moto = Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return moto;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("moto did not start on port {port}");
}

/// Runs boto3 (an independent S3 client) against moto; prints JSON.
fn boto3(endpoint: &str, code: &str) -> Value {
    let prelude = format!(
        "import boto3, json, hashlib\n\
         s3 = boto3.client('s3', endpoint_url='{endpoint}', region_name='us-east-1', \
         aws_access_key_id='testing', aws_secret_access_key='testing')\n"
    );
    let out = Command::new(python())
        .args(["-c", &(prelude + code)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn push_to_s3_compatible_bucket_via_moto() {
    let moto = start_moto();
    boto3(
        &moto.endpoint,
        "s3.create_bucket(Bucket='releases'); print('null')",
    );
    let s = push_scenario();
    let creds = s.path("s3.toml");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&creds)
            .unwrap();
        f.write_all(b"access_key_id = \"testing\"\nsecret_access_key = \"testing\"\n")
            .unwrap();
    }
    let destination = format!(
        "url = \"s3://releases/candidates\"\noverwrite = false\nendpoint = \"{}\"\n\
         allow_http = true\ncredentials_file = {creds:?}",
        moto.endpoint
    );
    let cfg = push_config(&s, &destination);
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert!(!stdout(&out).contains("testing") && !stderr(&out).contains("testing"));

    let listed = boto3(
        &moto.endpoint,
        "r = s3.list_objects_v2(Bucket='releases')\n\
         out = {o['Key']: hashlib.sha256(s3.get_object(Bucket='releases', Key=o['Key'])['Body']\
         .read()).hexdigest() for o in r['Contents']}\n\
         print(json.dumps(out))",
    );
    let prefix = "candidates/pub/firefox/128.0/linux64";
    assert_eq!(
        listed,
        json!({
            format!("{prefix}/target.tar.gz"): sha256_hex(&vec![7u8; 300_000]),
            format!("{prefix}/target.checksums"): sha256_hex(b"checksums\n"),
            format!("{prefix}/target.tar.gz.asc"): sha256_hex(b"-----BEGIN PGP SIGNATURE-----\n"),
        })
    );
    let m = read_push_manifest(&s);
    assert_eq!(
        m.files[1].url,
        format!(
            "s3://releases/candidates/{}/target.tar.gz",
            &prefix["candidates/".len()..]
        )
    );

    // Idempotent re-run, then a conflict once someone changed an object.
    s.reset_artifacts();
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out).matches("unchanged:").count(), 3);
    boto3(
        &moto.endpoint,
        &format!(
            "s3.put_object(Bucket='releases', Key='{prefix}/target.checksums', Body=b'x'); print('null')"
        ),
    );
    s.reset_artifacts();
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("different content"));

    // A credentials file others can read is refused before any request.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o644)).unwrap();
    s.reset_artifacts();
    let out = s.run(&["push", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------------------------
// sign

struct ReleaseKey {
    private: PathBuf,
    public: PathBuf,
    fingerprint: String,
}

fn release_key(dir: &Path, name: &str) -> ReleaseKey {
    let key = chainlock::openpgp::generate_key(
        &format!("{name} <releng@example.com>"),
        chainlock::clock::now() - chrono::Duration::hours(1),
        None,
    )
    .unwrap();
    let private = dir.join(format!("{name}.key"));
    let public = dir.join(format!("{name}.asc"));
    chainlock::openpgp::write_new_key(&key, &private, &public).unwrap();
    ReleaseKey {
        private,
        public,
        fingerprint: key.fingerprint(),
    }
}

fn sign_scenario() -> (Scenario, ReleaseKey, PathBuf) {
    let mut s = Scenario::new();
    // Big enough to need many read chunks (streamed), small enough to keep the test fast.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    s.upstream(DEP, "build", "public/build/target.tar.gz", &big);
    s.upstream(DEP, "build", "public/build/target.zip", b"zip bytes");
    s.upstream(DEP2, "build", "public/build/langpack.xpi", b"xpi bytes");
    s.task(&task(
        &[&cert_scope()],
        json!({"upstreamArtifacts": [
            {"taskId": DEP, "taskType": "build",
             "paths": ["public/build/target.tar.gz", "public/build/target.zip"],
             "formats": ["gpg"]},
            {"taskId": DEP2, "taskType": "build", "paths": ["public/build/langpack.xpi"],
             "formats": ["gpg"]}
        ]}),
    ));
    let key = release_key(s.dir.path(), "release-signing");
    let other = release_key(s.dir.path(), "dep-signing");
    let cfg = s.config(
        "sign.toml",
        &format!(
            "payload_schema = {:?}\nscope_prefix = \"{CERT}\"\nparallelism = 2\n\
             [keys]\nrelease-signing = {:?}\ndep-signing = {:?}\n",
            schema("sign.schema.json"),
            key.private,
            other.private
        ),
    );
    (s, key, cfg)
}

fn gpg_verify(home: &Path, sig: &Path, data: &Path) -> Output {
    Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--status-fd", "1", "--verify"])
        .arg(sig)
        .arg(data)
        .output()
        .unwrap()
}

fn sqv_verify(keyring: &Path, sig: &Path, data: &Path) -> Output {
    Command::new("sqv")
        .arg("--keyring")
        .arg(keyring)
        .arg(sig)
        .arg(data)
        .output()
        .unwrap()
}

#[test]
fn sign_produces_signatures_and_checksums_that_gpg_and_sqv_verify() {
    let (s, key, cfg) = sign_scenario();
    let out = s.run(&["sign", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains(&key.fingerprint));

    let home = s.path("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let import = Command::new("gpg")
        .arg("--homedir")
        .arg(&home)
        .args(["--batch", "--import"])
        .arg(&key.public)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let a = s.artifacts();
    let cot = s.work().join("cot");
    let signed = [
        (
            a.join("public/build/target.tar.gz.asc"),
            cot.join(DEP).join("public/build/target.tar.gz"),
        ),
        (
            a.join("public/build/target.zip.asc"),
            cot.join(DEP).join("public/build/target.zip"),
        ),
        (
            a.join("public/build/langpack.xpi.asc"),
            cot.join(DEP2).join("public/build/langpack.xpi"),
        ),
        (a.join("public/SHA256SUMS.asc"), a.join("public/SHA256SUMS")),
        (a.join("public/SHA512SUMS.asc"), a.join("public/SHA512SUMS")),
    ];
    for (sig, data) in &signed {
        assert!(
            std::fs::read_to_string(sig)
                .unwrap()
                .starts_with("-----BEGIN PGP SIGNATURE-----")
        );
        let g = gpg_verify(&home, sig, data);
        assert!(
            g.status.success(),
            "gpg: {}",
            String::from_utf8_lossy(&g.stderr)
        );
        assert!(stdout(&g).contains("[GNUPG:] VALIDSIG"), "{}", stdout(&g));
        let q = sqv_verify(&key.public, sig, data);
        assert!(
            q.status.success(),
            "sqv: {}",
            String::from_utf8_lossy(&q.stderr)
        );
        assert!(
            stdout(&q).to_uppercase().contains(&key.fingerprint),
            "{}",
            stdout(&q)
        );
    }

    // A signature does not verify over other bytes.
    let tampered = s.path("tampered");
    std::fs::write(&tampered, b"zip bytez").unwrap();
    assert!(!gpg_verify(&home, &signed[1].0, &tampered).status.success());
    assert!(
        !sqv_verify(&key.public, &signed[1].0, &tampered)
            .status
            .success()
    );

    // Checksum files: sha256sum format, sorted by artifact path, correct digests.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let sums = std::fs::read_to_string(a.join("public/SHA256SUMS")).unwrap();
    assert_eq!(
        sums,
        format!(
            "{}  public/build/langpack.xpi\n{}  public/build/target.tar.gz\n{}  public/build/target.zip\n",
            sha256_hex(b"xpi bytes"),
            sha256_hex(&big),
            sha256_hex(b"zip bytes")
        )
    );
    let sums512 = std::fs::read_to_string(a.join("public/SHA512SUMS")).unwrap();
    assert!(sums512.starts_with(&format!(
        "{}  public/build/langpack.xpi\n",
        hex::encode(sha2::Sha512::digest(b"xpi bytes"))
    )));
}

#[test]
fn sign_refuses_tampered_file_and_signs_nothing() {
    let (s, _key, cfg) = sign_scenario();
    std::fs::write(
        s.work()
            .join("cot")
            .join(DEP2)
            .join("public/build/langpack.xpi"),
        b"evil bytes",
    )
    .unwrap();
    let out = s.run(&["sign", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("integrity failure"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read_dir(s.artifacts()).unwrap().count(), 0);
}

#[test]
fn sign_refuses_symlinked_input() {
    let (s, _key, cfg) = sign_scenario();
    let target = s
        .work()
        .join("cot")
        .join(DEP)
        .join("public/build/target.zip");
    let outside = s.path("outside.zip");
    std::fs::write(&outside, b"zip bytes").unwrap();
    std::fs::remove_file(&target).unwrap();
    std::os::unix::fs::symlink(&outside, &target).unwrap();
    let out = s.run(&["sign", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sign_refuses_wrong_scopes() {
    let (s, _key, cfg) = sign_scenario();
    let payload = sign_payload(json!(["public/build/target.zip"]));
    for (scopes, expect) in [
        (vec![format!("{CERT}nightly-signing")], "scope-unknown"),
        (
            vec![cert_scope(), format!("{CERT}dep-signing")],
            "scope-ambiguous",
        ),
        (vec![], "scope-missing"),
    ] {
        let sc: Vec<&str> = scopes.iter().map(String::as_str).collect();
        s.task(&task(&sc, payload.clone()));
        let out = s.run(&["sign", "--config", cfg.to_str().unwrap()]);
        assert_eq!(code(&out), 3, "{scopes:?}");
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
        assert_eq!(std::fs::read_dir(s.artifacts()).unwrap().count(), 0);
    }
}

#[test]
fn sign_refuses_key_readable_by_others_and_unverified_inputs() {
    use std::os::unix::fs::PermissionsExt;
    let (s, key, cfg) = sign_scenario();
    std::fs::set_permissions(&key.private, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = s.run(&["sign", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 5);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("PRIVATE KEY"));
    std::fs::set_permissions(&key.private, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A path the verified chain did not provide.
    s.task(&task(
        &[&cert_scope()],
        sign_payload(json!(["public/build/missing.zip"])),
    ));
    let out = s.run(&["sign", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code(&out), 3);
    assert!(
        stderr(&out).contains("not in the verified manifest"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn example_configs_parse() {
    let sign: chainlock::scripts::sign::SignConfig = chainlock::toml_text::from_str(
        &std::fs::read_to_string(repo().join("etc/sign.example.toml")).unwrap(),
    )
    .unwrap();
    assert_eq!(sign.keys.len(), 2);
    assert_eq!(sign.limits, Limits::default());
    let push: chainlock::scripts::push::PushConfig = chainlock::toml_text::from_str(
        &std::fs::read_to_string(repo().join("etc/push.example.toml")).unwrap(),
    )
    .unwrap();
    chainlock::scripts::push::PathTemplate::parse(&push.path_template).unwrap();
    assert_eq!(push.destinations.len(), 2);
}
