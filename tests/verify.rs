//! Chain-of-trust verification: a good chain built at run time (decision task with a signed
//! task-graph.json, docker-image task, build task, target signing task), then one mutation per
//! security check, each asserting the check and the error code it fails with. Bundle form
//! (pure verifier) here; the online path runs against the dev queue at the end of the file.
//! Documents, signatures, task graphs and publishing on the dev queue come from the shared
//! seeding module (`chainlock::demo::seed`); this file owns the fixture's shape and mutations.

mod common;

use base64::Engine as _;
use chainlock::chain_policy::ChainPolicy;
use chainlock::demo::seed::{self, DocumentKey, RunIdentity, Signer};
use chainlock::ids::TaskId;
use chainlock::openpgp::{self, SigningKey};
use chainlock::queue::types::{RunStatus, TaskState, TaskStatus, format_time};
use chainlock::trust::policy::{
    KeyType, Policy, PolicyFile, Revocation, RevocationReason, RootKey, RootRole, WorkerKey,
};
use chainlock::trust::{self, CotSignature, PolicyVersion, TrustPin, TrustStore};
use chainlock::verify::bundle::Bundle;
use chainlock::verify::rebuild::NoRenderer;
use chainlock::verify::{self, Check, Limits, Mode, Report, VerifiedChain};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const REPO: &str = "https://github.com/example/product";
const RESTRICTED: &str = "project:example:releng:signing:cert:release-signing";

/// One reference instant for the whole test process: an hour ago, in whole seconds (OpenPGP
/// stores seconds). Relative to the real clock so the dev queue accepts the tasks; every pure
/// check only depends on offsets from it.
fn t0() -> DateTime<Utc> {
    static T0: std::sync::OnceLock<DateTime<Utc>> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let t = chainlock::clock::now() - Duration::hours(1);
        DateTime::from_timestamp(t.timestamp(), 0).unwrap()
    })
}

fn now() -> DateTime<Utc> {
    t0() + Duration::hours(2)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn ed25519_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// Keys generated at run time, never committed.
struct Keys {
    root: SigningKey,
    chainlock: SigningKey,
    generic_worker: ed25519_dalek::SigningKey,
    docker_worker: ed25519_dalek::SigningKey,
}

impl Keys {
    fn new() -> Keys {
        let created = t0() - Duration::days(10);
        Keys {
            root: openpgp::generate_key("root <root@example.invalid>", created, None).unwrap(),
            chainlock: openpgp::generate_key("chainlock <w@example.invalid>", created, None)
                .unwrap(),
            generic_worker: ed25519_key(),
            docker_worker: ed25519_key(),
        }
    }
}

/// How the generic-worker key is listed in the trust store.
#[derive(Clone, PartialEq)]
struct GwKeyWindow {
    valid_from: DateTime<Utc>,
    valid_until: DateTime<Utc>,
    revocation: Option<Revocation>,
}

impl Default for GwKeyWindow {
    fn default() -> Self {
        GwKeyWindow {
            valid_from: t0() - Duration::days(5),
            valid_until: t0() + Duration::days(300),
            revocation: None,
        }
    }
}

fn trust_policy_file(keys: &Keys, gw: &GwKeyWindow) -> PolicyFile {
    let mut workers = BTreeMap::new();
    workers.insert(
        "chainlock".to_owned(),
        vec![WorkerKey {
            name: "chainlock-test".into(),
            key_type: KeyType::Openpgp,
            fingerprint: Some(keys.chainlock.fingerprint()),
            cert: Some(String::from_utf8(keys.chainlock.public_cert_armored().unwrap()).unwrap()),
            public_key: None,
            valid_from: t0() - Duration::days(5),
            valid_until: t0() + Duration::days(300),
            revocation: None,
        }],
    );
    workers.insert(
        "generic-worker".to_owned(),
        vec![WorkerKey {
            name: "gw-test".into(),
            key_type: KeyType::Ed25519,
            fingerprint: None,
            cert: None,
            public_key: Some(b64(&keys.generic_worker.verifying_key().to_bytes())),
            valid_from: gw.valid_from,
            valid_until: gw.valid_until,
            revocation: gw.revocation,
        }],
    );
    workers.insert(
        "docker-worker".to_owned(),
        vec![WorkerKey {
            name: "dw-test".into(),
            key_type: KeyType::Ed25519,
            fingerprint: None,
            cert: None,
            public_key: Some(b64(&keys.docker_worker.verifying_key().to_bytes())),
            valid_from: t0() - Duration::days(5),
            valid_until: t0() + Duration::days(300),
            revocation: None,
        }],
    );
    PolicyFile {
        version: 1,
        expires: t0() + Duration::days(365),
        root: RootRole {
            threshold: 1,
            keys: vec![RootKey {
                name: "root".into(),
                fingerprint: keys.root.fingerprint(),
                cert: String::from_utf8(keys.root.public_cert_armored().unwrap()).unwrap(),
            }],
        },
        workers,
    }
}

fn trust_store(keys: &Keys, gw: &GwKeyWindow) -> TrustStore {
    let bytes = Policy::to_toml(&trust_policy_file(keys, gw))
        .unwrap()
        .into_bytes();
    let sig = openpgp::sign_detached_armored(&keys.root, &bytes, t0() - Duration::days(1)).unwrap();
    let pin = TrustPin {
        version: 1,
        sha256: trust::sha256_hex(&bytes),
    };
    let v = PolicyVersion {
        source: "memory".into(),
        bytes,
        signatures: vec![sig],
    };
    TrustStore::from_versions(&pin, &[v], now(), &trust::Limits::default()).unwrap()
}

/// Writes the trust store as a `keys/` directory (for the CLI).
fn write_keys_dir(keys: &Keys, dir: &Path) {
    let bytes = Policy::to_toml(&trust_policy_file(keys, &GwKeyWindow::default()))
        .unwrap()
        .into_bytes();
    let sig = openpgp::sign_detached_armored(&keys.root, &bytes, t0() - Duration::days(1)).unwrap();
    std::fs::create_dir_all(dir.join("sigs")).unwrap();
    std::fs::write(dir.join("trust.toml"), &bytes).unwrap();
    std::fs::write(dir.join("sigs/root.asc"), sig).unwrap();
}

/// The example policy without its rebuild rule and with `decision-rebuild` optional: these
/// fixtures forge chains whose decision tasks have no in-tree template (check 9 is attacked in
/// tests/rebuild.rs); every other rule is the example's.
fn policy_text() -> String {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/chain-policy.example.toml"
    ))
    .unwrap();
    let start = text.find("[repositories.rebuild]").unwrap();
    let end = start + text[start..].find("\n\n").unwrap();
    let text = format!("{}{}", &text[..start], &text[end..]);
    assert!(text.contains("[rebuild]\nrequired = true\n"));
    text.replace(
        "[rebuild]\nrequired = true\n",
        "[rebuild]\nrequired = false\n",
    )
}

/// [`policy_text`] as a file, for the CLI.
fn policy_file() -> String {
    static FILE: std::sync::OnceLock<tempfile::NamedTempFile> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, policy_text().as_bytes()).unwrap();
        f
    })
    .path()
    .display()
    .to_string()
}

fn policy() -> ChainPolicy {
    ChainPolicy::from_toml(&policy_text()).unwrap()
}

/// The run every fixture document claims (matches [`status`]).
const RUN: RunIdentity<'static> = RunIdentity {
    run_id: 0,
    worker_group: "wg",
    worker_id: "worker-1",
};

/// One task of the chain: the shared seeding link plus the state its run resolved to.
#[derive(Clone)]
struct Link {
    link: seed::Link,
    state: TaskState,
}

impl std::ops::Deref for Link {
    type Target = seed::Link;
    fn deref(&self) -> &seed::Link {
        &self.link
    }
}

impl std::ops::DerefMut for Link {
    fn deref_mut(&mut self) -> &mut seed::Link {
        &mut self.link
    }
}

fn link(
    id: TaskId,
    def: Value,
    signer: Signer,
    outputs: BTreeMap<String, Vec<u8>>,
    environment: Value,
) -> Link {
    Link {
        link: seed::Link {
            id,
            def,
            signer,
            outputs,
            environment,
        },
        state: TaskState::Completed,
    }
}

/// A good chain: decision D -> docker-image I -> build B -> target signing task S.
#[derive(Clone)]
struct Fixture {
    d: Link,
    i: Link,
    b: Link,
    s: Link,
}

fn task_def(
    group: &TaskId,
    worker_type: &str,
    name: &str,
    scopes: Vec<&str>,
    payload: Value,
) -> Value {
    json!({
        "provisionerId": "example-3",
        "workerType": worker_type,
        "taskQueueId": format!("example-3/{worker_type}"),
        "schedulerId": "example-level-3",
        "projectId": "none",
        "taskGroupId": group.as_str(),
        "dependencies": [],
        "requires": "all-completed",
        "routes": [],
        "priority": "lowest",
        "retries": 5,
        "created": format_time(t0()),
        "deadline": format_time(t0() + Duration::days(1)),
        "expires": format_time(t0() + Duration::days(365)),
        "scopes": scopes,
        "payload": payload,
        "metadata": {
            "name": name,
            "description": name,
            "owner": "release@example.invalid",
            "source": format!("{REPO}/raw/0123456789abcdef0123456789abcdef01234567/.taskcluster.yml"),
        },
        "tags": {},
        "extra": {"tasks_for": "github-push"},
    })
}

fn repo_env() -> Value {
    json!({
        "PRODUCT_HEAD_REPOSITORY": REPO,
        "PRODUCT_HEAD_BRANCH": "release/1.0",
        "PRODUCT_HEAD_REV": "0123456789abcdef0123456789abcdef01234567",
    })
}

impl Fixture {
    fn new() -> Fixture {
        let d_id = TaskId::generate();
        let (i_id, b_id, s_id) = (TaskId::generate(), TaskId::generate(), TaskId::generate());
        let image = b"docker image layers".to_vec();
        let target = b"the build output".to_vec();
        let d = link(
            d_id.clone(),
            task_def(
                &d_id,
                "decision",
                "Decision Task",
                vec![],
                json!({"image": format!("example/decision@sha256:{}", "ab".repeat(32)), "env": repo_env()}),
            ),
            Signer::GenericWorker,
            BTreeMap::new(),
            json!({"instanceType": "test"}),
        );
        let i = link(
            i_id.clone(),
            task_def(
                &d_id,
                "images",
                "build docker image",
                vec![],
                json!({"env": repo_env()}),
            ),
            Signer::GenericWorker,
            BTreeMap::from([("public/image.tar.zst".to_owned(), image.clone())]),
            json!({}),
        );
        let mut b_def = task_def(
            &d_id,
            "b-linux",
            "build linux",
            vec![],
            json!({
                "image": {"type": "task-image", "taskId": i_id.as_str(), "path": "public/image.tar.zst"},
                "env": repo_env(),
                "features": {"chainOfTrust": true},
            }),
        );
        b_def["dependencies"] = json!([i_id.as_str()]);
        b_def["extra"]["chainOfTrust"] = json!({"inputs": {"docker-image": i_id.as_str()}});
        b_def["payload"]["artifacts"] =
            json!([{"expires": format_time(t0() + Duration::days(365)), "path": "x"}]);
        let b = link(
            b_id.clone(),
            b_def,
            Signer::GenericWorker,
            BTreeMap::from([("public/build/target.tar.gz".to_owned(), target)]),
            json!({"imageArtifactHash": format!("sha256:{}", sha256(&image))}),
        );
        let mut s_def = task_def(
            &d_id,
            "signing",
            "sign the build",
            vec![RESTRICTED],
            json!({
                "upstreamArtifacts": [
                    {"taskId": b_id.as_str(), "taskType": "build", "paths": ["public/build/target.tar.gz"]}
                ],
                "env": repo_env(),
            }),
        );
        s_def["dependencies"] = json!([b_id.as_str()]);
        let s = link(
            s_id,
            s_def,
            Signer::Chainlock,
            BTreeMap::from([("public/build/target.tar.gz.sig".to_owned(), b"sig".to_vec())]),
            json!({}),
        );
        Fixture { d, i, b, s }
    }

    fn links(&self) -> [&Link; 4] {
        [&self.d, &self.i, &self.b, &self.s]
    }

    fn links_mut(&mut self) -> [&mut Link; 4] {
        [&mut self.d, &mut self.i, &mut self.b, &mut self.s]
    }

    /// The decision task's graph: its children's definitions, expiries written as relative
    /// datestamps the way taskgraph writes them (shared with the demo seeding).
    fn graph(&self) -> serde_json::Map<String, Value> {
        let children: Vec<&seed::Link> = [&self.i, &self.b, &self.s]
            .into_iter()
            .map(|l| &l.link)
            .collect();
        match seed::task_graph(&children) {
            Value::Object(g) => g,
            other => panic!("task graph is not an object: {other}"),
        }
    }

    fn build(&self, keys: &Keys) -> Built {
        self.build_with_graph(keys, |_| {})
    }

    fn build_with_graph(
        &self,
        keys: &Keys,
        edit: impl FnOnce(&mut serde_json::Map<String, Value>),
    ) -> Built {
        let mut graph = self.graph();
        edit(&mut graph);
        let mut built = Built {
            target: self.s.id.clone(),
            tasks: BTreeMap::new(),
            statuses: BTreeMap::new(),
            files: BTreeMap::new(),
            raw: BTreeMap::new(),
            other: BTreeMap::new(),
        };
        for l in self.links() {
            let mut extra = BTreeMap::new();
            if l.id == self.d.id {
                extra.insert(
                    "public/task-graph.json".to_owned(),
                    serde_json::to_vec_pretty(&Value::Object(graph.clone())).unwrap(),
                );
            }
            let key = match l.signer {
                Signer::GenericWorker => DocumentKey::Ed25519(&keys.generic_worker),
                Signer::Chainlock => {
                    DocumentKey::OpenPgp(&keys.chainlock, t0() + Duration::minutes(59))
                }
            };
            for (name, bytes) in seed::evidence_files(l, extra, RUN, key).unwrap() {
                built.files.insert((l.id.clone(), name), bytes);
            }
            built.tasks.insert(l.id.clone(), l.def.clone());
            built
                .statuses
                .insert(l.id.clone(), status(&l.id, &l.def, l.state));
        }
        built
    }
}

fn status(id: &TaskId, def: &Value, state: TaskState) -> TaskStatus {
    TaskStatus {
        task_id: id.clone(),
        provisioner_id: "example-3".into(),
        worker_type: def["workerType"].as_str().unwrap().into(),
        task_queue_id: None,
        scheduler_id: None,
        project_id: None,
        task_group_id: TaskId::parse(def["taskGroupId"].as_str().unwrap()).unwrap(),
        priority: None,
        deadline: t0() + Duration::days(1),
        expires: t0() + Duration::days(365),
        retries_left: 5,
        state,
        runs: vec![RunStatus {
            run_id: 0,
            state,
            reason_created: "scheduled".into(),
            reason_resolved: Some("completed".into()),
            worker_group: Some("wg".into()),
            worker_id: Some("worker-1".into()),
            taken_until: None,
            scheduled: t0(),
            started: Some(t0() + Duration::minutes(1)),
            resolved: Some(t0() + Duration::hours(1)),
        }],
    }
}

/// The evidence of a chain, before it is written as a bundle.
struct Built {
    target: TaskId,
    tasks: BTreeMap<TaskId, Value>,
    statuses: BTreeMap<TaskId, TaskStatus>,
    files: BTreeMap<(TaskId, String), Vec<u8>>,
    /// Exact bytes written instead of `tasks[id]` / `statuses[id]` (parser differentials).
    raw: BTreeMap<(TaskId, &'static str), String>,
    /// Further files, by path relative to the bundle (fetcher records, structure attacks).
    other: BTreeMap<String, Vec<u8>>,
}

impl Built {
    fn file(&mut self, id: &TaskId, name: &str) -> &mut Vec<u8> {
        self.files.get_mut(&(id.clone(), name.to_owned())).unwrap()
    }

    fn write(&self, dir: &Path) {
        let index = json!({
            "bundleVersion": 1,
            "target": self.target.as_str(),
            "tasks": self.tasks.keys().map(TaskId::as_str).collect::<Vec<_>>(),
        });
        std::fs::write(dir.join("bundle.json"), index.to_string()).unwrap();
        for (id, def) in &self.tasks {
            std::fs::create_dir_all(dir.join(id.as_str())).unwrap();
            std::fs::write(dir.join(id.as_str()).join("task.json"), def.to_string()).unwrap();
        }
        for (id, st) in &self.statuses {
            std::fs::create_dir_all(dir.join(id.as_str())).unwrap();
            std::fs::write(
                dir.join(id.as_str()).join("status.json"),
                serde_json::to_vec(st).unwrap(),
            )
            .unwrap();
        }
        for ((id, name), text) in &self.raw {
            std::fs::write(dir.join(id.as_str()).join(name), text).unwrap();
        }
        for ((id, name), bytes) in &self.files {
            let p = dir.join(id.as_str()).join("artifacts").join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        for (rel, bytes) in &self.other {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }

    fn verify_with(
        &self,
        trust: &TrustStore,
        limits: &Limits,
        mode: Mode,
    ) -> Result<VerifiedChain, Box<Report>> {
        let dir = tempfile::tempdir().unwrap();
        self.write(dir.path());
        let bundle = Bundle::open(dir.path(), limits).unwrap();
        verify::verify(&bundle, &self.target, &policy(), trust, now(), limits, mode)
    }
}

const WORKER: Mode = Mode {
    check_target: false,
    renderer: &NoRenderer,
};

#[test]
fn good_chain_verifies() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let fx = Fixture::new();
    let built = fx.build(&keys);
    let verified = match built.verify_with(&trust, &Limits::default(), WORKER) {
        Ok(v) => v,
        Err(r) => panic!("good chain failed:\n{}", r.to_text()),
    };
    let report = verified.report();
    assert!(report.verified);
    assert_eq!(report.links.len(), 4);
    // The script gets the build output and the task graph, both hash-verified.
    let mut names: Vec<_> = verified
        .files()
        .iter()
        .map(|f| (f.task_id.clone(), f.path.to_string()))
        .collect();
    names.sort();
    let mut want = vec![
        (fx.b.id.clone(), "public/build/target.tar.gz".to_owned()),
        (fx.d.id.clone(), "public/task-graph.json".to_owned()),
    ];
    want.sort();
    assert_eq!(names, want);
    let text = report.to_text();
    assert!(text.contains("VERIFIED"), "{text}");
    assert!(!text.contains("[FAIL]"), "{text}");

    // The target's own document (OpenPGP, chainlock) verifies too when auditing it.
    let audited = built
        .verify_with(
            &trust,
            &Limits::default(),
            Mode {
                check_target: true,
                renderer: &NoRenderer,
            },
        )
        .unwrap_or_else(|r| panic!("{}", r.to_text()));
    let target = &audited.report().links[0];
    assert!(target.signer.as_deref().unwrap().contains("chainlock-test"));
}

/// Builds the evidence of a mutated chain.
type Mutation = Box<dyn Fn(&mut Fixture, &Keys) -> Built>;

/// A mutation of the good chain and the check + code it must fail with.
struct Row {
    name: &'static str,
    check: Check,
    code: &'static str,
    mode: Mode<'static>,
    limits: Limits,
    gw: GwKeyWindow,
    mutate: Mutation,
}

fn row(
    name: &'static str,
    check: Check,
    code: &'static str,
    mutate: impl Fn(&mut Fixture, &Keys) -> Built + 'static,
) -> Row {
    Row {
        name,
        check,
        code,
        mode: WORKER,
        limits: Limits::default(),
        gw: GwKeyWindow::default(),
        mutate: Box::new(mutate),
    }
}

fn resign_gw(built: &mut Built, id: &TaskId, key: &ed25519_dalek::SigningKey) {
    let doc = built.file(id, "public/chain-of-trust.json").clone();
    let (_, sig) = seed::sign_document(&doc, DocumentKey::Ed25519(key)).unwrap();
    *built.file(id, "public/chain-of-trust.json.sig") = sig;
}

/// Edits the doc of `id` as JSON and re-signs it with the generic-worker key.
fn edit_doc(built: &mut Built, keys: &Keys, id: &TaskId, edit: impl FnOnce(&mut Value)) {
    let mut doc: Value =
        serde_json::from_slice(built.file(id, "public/chain-of-trust.json")).unwrap();
    edit(&mut doc);
    *built.file(id, "public/chain-of-trust.json") = serde_json::to_vec_pretty(&doc).unwrap();
    resign_gw(built, id, &keys.generic_worker);
}

fn rows() -> Vec<Row> {
    let gw_window = |valid_until: DateTime<Utc>, revocation: Option<Revocation>| GwKeyWindow {
        valid_until,
        revocation,
        ..GwKeyWindow::default()
    };
    vec![
        row(
            "tampered artifact byte",
            Check::Artifacts,
            "hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, "public/build/target.tar.gz")[0] ^= 1;
                b
            },
        ),
        row(
            "tampered document",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                let doc = b.file(&fx.b.id, "public/chain-of-trust.json");
                let pos = doc.len() / 2;
                doc[pos] ^= 0x20;
                b
            },
        ),
        row(
            "signature by an untrusted key",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                resign_gw(&mut b, &fx.b.id, &ed25519_key());
                b
            },
        ),
        row(
            "signature by another worker implementation's key",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                resign_gw(&mut b, &fx.b.id, &k.docker_worker);
                b
            },
        ),
        Row {
            gw: gw_window(t0() + Duration::minutes(30), None),
            ..row(
                "expired key",
                Check::Signature,
                "signature-rejected",
                |fx, k| fx.build(k),
            )
        },
        Row {
            gw: gw_window(
                t0() + Duration::days(300),
                Some(Revocation {
                    at: t0() + Duration::minutes(30),
                    reason: RevocationReason::Retired,
                }),
            ),
            ..row(
                "retired key",
                Check::Signature,
                "signature-rejected",
                |fx, k| fx.build(k),
            )
        },
        Row {
            gw: gw_window(
                t0() + Duration::days(300),
                Some(Revocation {
                    at: t0() + Duration::hours(1) + Duration::minutes(30),
                    reason: RevocationReason::Compromised,
                }),
            ),
            ..row(
                "revoked (compromised) key, revoked after signing",
                Check::Signature,
                "signature-rejected",
                |fx, k| fx.build(k),
            )
        },
        row(
            "task definition differs from the graph",
            Check::TaskGraph,
            "graph-mismatch",
            |fx, k| {
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| {
                    g[&id]["task"]["payload"]["env"]["EXTRA"] = json!("injected");
                })
            },
        ),
        row(
            "task missing from the graph",
            Check::TaskGraph,
            "task-not-in-graph",
            |fx, k| {
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| {
                    g.remove(&id);
                })
            },
        ),
        row(
            "key present only at run time",
            Check::TaskGraph,
            "runtime-only-key",
            |fx, k| {
                fx.b.def["routes"] = json!(["index.project.example.latest"]);
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| {
                    g[&id]["task"].as_object_mut().unwrap().remove("routes");
                })
            },
        ),
        row(
            "dependency absent from the graph",
            Check::TaskGraph,
            "unexpected-dependency",
            |fx, k| {
                let graph = fx.graph();
                fx.b.def["dependencies"] = json!([fx.i.id.as_str(), TaskId::generate().as_str()]);
                fx.build_with_graph(k, |g| *g = graph)
            },
        ),
        row(
            "decision task on a build queue",
            Check::TaskGraph,
            "not-decision-queue",
            |fx, k| {
                fx.d.def["workerType"] = json!("b-linux");
                fx.d.def["taskQueueId"] = json!("example-3/b-linux");
                fx.build(k)
            },
        ),
        row("wrong queue", Check::Chain, "unknown-queue", |fx, k| {
            fx.b.def["workerType"] = json!("b-unknown");
            fx.b.def["taskQueueId"] = json!("example-3/b-unknown");
            fx.build(k)
        }),
        row(
            "interactive task",
            Check::Interactive,
            "interactive",
            |fx, k| {
                fx.b.def["payload"]["features"]["interactive"] = json!(true);
                fx.build(k)
            },
        ),
        row("rdp scope", Check::Interactive, "interactive", |fx, k| {
            fx.i.def["scopes"] = json!(["generic-worker:allow-rdp:example-3/images"]);
            fx.build(k)
        }),
        row(
            "unpinned (indexed) image",
            Check::DockerImage,
            "unpinned-image",
            |fx, k| {
                fx.b.def["payload"]["image"] = json!({"type": "indexed-image", "namespace": "x.y", "path": "public/image.tar"});
                fx.build(k)
            },
        ),
        row(
            "image hash not the one built",
            Check::DockerImage,
            "image-hash-mismatch",
            |fx, k| {
                fx.b.environment =
                    json!({"imageArtifactHash": format!("sha256:{}", "0".repeat(64))});
                fx.build(k)
            },
        ),
        row(
            "image from a non docker-image task",
            Check::DockerImage,
            "image-task-not-docker-image",
            |fx, k| {
                fx.i.def["workerType"] = json!("b-linux");
                fx.i.def["taskQueueId"] = json!("example-3/b-linux");
                fx.build(k)
            },
        ),
        from_repository(
            "restricted scope from a disallowed repository",
            "restricted-scope-repository",
            "https://github.com/evil/product",
        ),
        row(
            "restricted scope from a disallowed branch",
            Check::SourceAndScopes,
            "restricted-scope-branch",
            |fx, k| {
                fx.d.def["payload"]["env"]["PRODUCT_HEAD_BRANCH"] = json!("main");
                fx.build(k)
            },
        ),
        row(
            "restricted scope from a pull request",
            Check::SourceAndScopes,
            "restricted-scope-untrusted",
            |fx, k| {
                fx.d.def["extra"]["tasks_for"] = json!("github-pull-request");
                fx.build(k)
            },
        ),
        row(
            "link from another repository than its decision",
            Check::SourceAndScopes,
            "decision-repository-mismatch",
            |fx, k| {
                fx.i.def["metadata"]["source"] =
                    json!("https://github.com/example/other/raw/x/.taskcluster.yml");
                fx.i.def["payload"]["env"]["PRODUCT_HEAD_REPOSITORY"] =
                    json!("https://github.com/example/other");
                fx.build(k)
            },
        ),
        row(
            "head repository disagrees with metadata.source",
            Check::SourceAndScopes,
            "repository-env-mismatch",
            |fx, k| {
                fx.b.def["payload"]["env"]["PRODUCT_HEAD_REPOSITORY"] =
                    json!("https://github.com/example/product-try");
                fx.build(k)
            },
        ),
        row("cycle", Check::Chain, "cycle", |fx, k| {
            fx.b.def["payload"]["upstreamArtifacts"] = json!([
                {"taskId": fx.s.id.as_str(), "paths": ["public/build/target.tar.gz.sig"]}
            ]);
            fx.build(k)
        }),
        Row {
            limits: Limits {
                max_depth: 1,
                ..Limits::default()
            },
            ..row("depth over the limit", Check::Chain, "too-deep", |fx, k| {
                fx.build(k)
            })
        },
        row(
            "run not completed",
            Check::Run,
            "run-not-completed",
            |fx, k| {
                fx.b.state = TaskState::Failed;
                fx.build(k)
            },
        ),
        row(
            "document for another run",
            Check::Run,
            "document-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                edit_doc(&mut b, k, &fx.b.id, |d| d["runId"] = json!(1));
                b
            },
        ),
        row(
            "document embeds another task definition",
            Check::Run,
            "document-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                edit_doc(&mut b, k, &fx.b.id, |d| {
                    d["task"]["payload"]["env"]["X"] = json!("y")
                });
                b
            },
        ),
        row(
            "document breaks the schema",
            Check::Schema,
            "document-invalid",
            |fx, k| {
                let mut b = fx.build(k);
                edit_doc(&mut b, k, &fx.b.id, |d| {
                    d.as_object_mut().unwrap().remove("environment");
                });
                b
            },
        ),
        row(
            "consumed artifact not in the document",
            Check::Artifacts,
            "artifact-not-in-document",
            |fx, k| {
                let mut b = fx.build(k);
                edit_doc(&mut b, k, &fx.b.id, |d| {
                    d["artifacts"]
                        .as_object_mut()
                        .unwrap()
                        .remove("public/build/target.tar.gz");
                });
                b
            },
        ),
        row(
            "path traversal in upstreamArtifacts",
            Check::Artifacts,
            "unsafe-path",
            |fx, k| {
                fx.s.def["payload"]["upstreamArtifacts"][0]["paths"] =
                    json!(["public/../../../etc/passwd"]);
                fx.build(k)
            },
        ),
        row(
            "absolute path in upstreamArtifacts",
            Check::Artifacts,
            "unsafe-path",
            |fx, k| {
                fx.s.def["payload"]["upstreamArtifacts"][0]["paths"] = json!(["/etc/passwd"]);
                fx.build(k)
            },
        ),
        row(
            "404 document",
            Check::Schema,
            "document-missing",
            |fx, k| {
                let mut b = fx.build(k);
                b.files
                    .remove(&(fx.b.id.clone(), "public/chain-of-trust.json".into()));
                b
            },
        ),
        row(
            "404 signature",
            Check::Signature,
            "signature-missing",
            |fx, k| {
                let mut b = fx.build(k);
                b.files
                    .remove(&(fx.b.id.clone(), "public/chain-of-trust.json.sig".into()));
                b
            },
        ),
        row(
            "404 consumed artifact",
            Check::Artifacts,
            "artifact-missing",
            |fx, k| {
                let mut b = fx.build(k);
                b.files
                    .remove(&(fx.b.id.clone(), "public/build/target.tar.gz".into()));
                b
            },
        ),
        row(
            "404 task definition",
            Check::Chain,
            "missing-task",
            |fx, k| {
                let mut b = fx.build(k);
                b.tasks.remove(&fx.i.id);
                b
            },
        ),
        row(
            "task without a decision task",
            Check::Chain,
            "no-decision-root",
            |fx, k| {
                fx.i.def["taskGroupId"] = json!(fx.i.id.as_str());
                fx.build(k)
            },
        ),
        Row {
            mode: Mode {
                check_target: true,
                renderer: &NoRenderer,
            },
            ..row(
                "audited target signed by a generic-worker key",
                Check::Signature,
                "signature-missing",
                |fx, k| {
                    fx.s.signer = Signer::GenericWorker;
                    fx.build(k)
                },
            )
        },
    ]
}

#[test]
fn every_check_rejects_its_mutation() {
    run_rows(rows());
}

/// Each row's mutated chain must be refused with its check and finding code, and the text
/// report must show that check failed.
fn run_rows(rows: Vec<Row>) {
    let keys = Keys::new();
    let good_trust = trust_store(&keys, &GwKeyWindow::default());
    let base = Fixture::new();
    let mut failures = Vec::new();
    for r in rows {
        let mut fx = base.clone();
        let built = (r.mutate)(&mut fx, &keys);
        let trust;
        let trust = if r.gw == GwKeyWindow::default() {
            &good_trust
        } else {
            trust = trust_store(&keys, &r.gw);
            &trust
        };
        match built.verify_with(trust, &r.limits, r.mode) {
            Ok(_) => failures.push(format!(
                "{}: verified, expected {} {}",
                r.name, r.check, r.code
            )),
            Err(report) => {
                let hit = report
                    .errors
                    .iter()
                    .any(|e| e.check() == r.check && e.code() == r.code);
                let text = report.to_text();
                // One finding per fact.
                let mut seen = BTreeSet::new();
                for e in &report.errors {
                    if !seen.insert((e.code(), e.to_string())) {
                        failures.push(format!("{}: duplicate finding {e}", r.name));
                    }
                }
                if !hit || !text.contains(&format!("[FAIL] {}", r.check)) {
                    failures.push(format!(
                        "{}: expected {} {}, got:\n{text}",
                        r.name, r.check, r.code
                    ));
                }
                assert!(!report.verified);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Issue 9's forgery classes: queue identity, status cross-checks, wildcard and `assume:`
/// scopes, signatures dated too early, parser differentials, try-repository case. Documents
/// are re-signed with the genuine keys (the fixture signs what it builds), so only the rule
/// under test can refuse them.
#[test]
fn forged_chains_of_every_class_are_refused() {
    run_rows(forgery_rows());
}

fn status_row(
    name: &'static str,
    check: Check,
    code: &'static str,
    edit: impl Fn(&mut TaskStatus) + 'static,
) -> Row {
    row(name, check, code, move |fx, k| {
        let mut b = fx.build(k);
        let id = fx.b.id.clone();
        edit(b.statuses.get_mut(&id).unwrap());
        b
    })
}

fn pull_request_with_scopes(
    name: &'static str,
    link: fn(&mut Fixture) -> &mut Link,
    scopes: &'static [&'static str],
) -> Row {
    row(
        name,
        Check::SourceAndScopes,
        "restricted-scope-untrusted",
        move |fx, k| {
            fx.s.def["scopes"] = json!([]);
            link(fx).def["scopes"] = json!(scopes);
            fx.d.def["extra"]["tasks_for"] = json!("github-pull-request");
            fx.build(k)
        },
    )
}

/// Every link of the chain claims to come from `repo`.
fn from_repository(name: &'static str, code: &'static str, repo: &'static str) -> Row {
    row(name, Check::SourceAndScopes, code, move |fx, k| {
        for l in fx.links_mut() {
            l.def["metadata"]["source"] = json!(format!("{repo}/raw/x/.taskcluster.yml"));
            l.def["payload"]["env"]["PRODUCT_HEAD_REPOSITORY"] = json!(repo);
        }
        fx.build(k)
    })
}

fn forgery_rows() -> Vec<Row> {
    let mut rows = vec![
        // Queue identity is one fact.
        row(
            "taskQueueId relabelled to the decision queue",
            Check::Chain,
            "queue-identity-mismatch",
            |fx, k| {
                let graph = fx.graph();
                fx.b.def["taskQueueId"] = json!("example-3/decision");
                fx.build_with_graph(k, |g| *g = graph)
            },
        ),
        row(
            "a relabelled child is still compared with its graph entry",
            Check::TaskGraph,
            "graph-mismatch",
            |fx, k| {
                let graph = fx.graph();
                fx.b.def["taskQueueId"] = json!("example-3/decision");
                fx.b.def["payload"]["env"]["EXTRA"] = json!("injected");
                fx.build_with_graph(k, |g| *g = graph)
            },
        ),
        row(
            "a child on the decision queue that names a parent",
            Check::TaskGraph,
            "graph-creator-not-root",
            |fx, k| {
                fx.b.def["workerType"] = json!("decision");
                fx.b.def["taskQueueId"] = json!("example-3/decision");
                fx.build(k)
            },
        ),
        row(
            "graph entry with two queue identities",
            Check::Chain,
            "queue-identity-mismatch",
            |fx, k| {
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| {
                    g[&id]["task"]["taskQueueId"] = json!("example-3/decision");
                })
            },
        ),
        row(
            "decision taskQueueId names another queue",
            Check::Chain,
            "queue-identity-mismatch",
            |fx, k| {
                fx.d.def["taskQueueId"] = json!("example-3/b-linux");
                fx.build(k)
            },
        ),
        row(
            "image builder relabelled in its graph entry",
            Check::Chain,
            "queue-identity-mismatch",
            |fx, k| {
                let id = fx.i.id.to_string();
                fx.build_with_graph(k, |g| {
                    g[&id]["task"]["taskQueueId"] = json!("example-3/decision");
                })
            },
        ),
        status_row(
            "status with two queue identities",
            Check::Chain,
            "queue-identity-mismatch",
            |s| s.task_queue_id = Some("example-3/decision".into()),
        ),
        // status.json agrees with the definition and is a consistent history.
        status_row(
            "status of another worker type",
            Check::Run,
            "status-mismatch",
            |s| s.worker_type = "decision".into(),
        ),
        status_row(
            "status of another task group",
            Check::Run,
            "status-mismatch",
            |s| s.task_group_id = TaskId::generate(),
        ),
        status_row(
            "status of another task",
            Check::Run,
            "status-mismatch",
            |s| s.task_id = TaskId::generate(),
        ),
        status_row(
            "status of another scheduler",
            Check::Run,
            "status-mismatch",
            |s| s.scheduler_id = Some("example-level-1".into()),
        ),
        status_row(
            "status of another project",
            Check::Run,
            "status-mismatch",
            |s| s.project_id = Some("other".into()),
        ),
        status_row(
            "task state not completed",
            Check::Run,
            "run-not-completed",
            |s| s.state = TaskState::Exception,
        ),
        status_row(
            "a failed later run hidden before the completed one",
            Check::Run,
            "run-not-completed",
            |s| {
                let mut later = s.runs[0].clone();
                later.run_id = 1;
                later.state = TaskState::Failed;
                s.runs.insert(0, later);
            },
        ),
        status_row("runs out of order", Check::Run, "runs-invalid", |s| {
            let mut later = s.runs[0].clone();
            later.run_id = 1;
            s.runs.insert(0, later);
        }),
        status_row("a gap in the run ids", Check::Run, "runs-invalid", |s| {
            s.runs[0].run_id = 1;
        }),
        status_row(
            "run started before it was scheduled",
            Check::Run,
            "runs-invalid",
            |s| s.runs[0].scheduled = s.runs[0].started.unwrap() + Duration::minutes(1),
        ),
        status_row(
            "run resolved before it started",
            Check::Run,
            "runs-invalid",
            |s| s.runs[0].resolved = Some(s.runs[0].scheduled),
        ),
        status_row(
            "completed run without a start",
            Check::Run,
            "runs-invalid",
            |s| s.runs[0].started = None,
        ),
        // Try repositories are recognised whatever the case of scheme, host and GitHub path.
        from_repository(
            "try repository in upper case",
            "restricted-scope-untrusted",
            "HTTPS://GITHUB.COM/EXAMPLE/PRODUCT-TRY",
        ),
        from_repository(
            "try repository over ssh in mixed case",
            "restricted-scope-untrusted",
            "git@GitHub.com:Example/Product-Try.git",
        ),
        from_repository(
            "try repository with a mixed-case path",
            "restricted-scope-untrusted",
            "https://github.com/Example/Product-Try",
        ),
        // Signatures are never dated before what they sign.
        Row {
            mode: Mode {
                check_target: true,
                renderer: &NoRenderer,
            },
            ..row(
                "OpenPGP signature dated before the task was created",
                Check::Signature,
                "signature-too-early",
                |fx, k| {
                    fx.s.def["created"] = json!(format_time(t0() + Duration::hours(2)));
                    fx.build(k)
                },
            )
        },
        Row {
            mode: Mode {
                check_target: true,
                renderer: &NoRenderer,
            },
            ..row(
                "OpenPGP signature dated before the run started",
                Check::Signature,
                "signature-too-early",
                |fx, k| {
                    let mut b = fx.build(k);
                    let run = &mut b.statuses.get_mut(&fx.s.id).unwrap().runs[0];
                    run.started = Some(t0() + Duration::minutes(70));
                    run.resolved = Some(t0() + Duration::minutes(80));
                    b
                },
            )
        },
        status_row(
            "ed25519 run resolved before its task was created",
            Check::Signature,
            "signature-too-early",
            |s| {
                let run = &mut s.runs[0];
                run.scheduled = t0() - Duration::hours(3);
                run.started = Some(t0() - Duration::hours(2));
                run.resolved = Some(t0() - Duration::hours(1));
            },
        ),
    ];
    // Wildcards and roles reach restricted scopes, from any link.
    type Pick = fn(&mut Fixture) -> &mut Link;
    let target: Pick = |fx| &mut fx.s;
    let build: Pick = |fx| &mut fx.b;
    let decision: Pick = |fx| &mut fx.d;
    let image: Pick = |fx| &mut fx.i;
    for (name, link, scopes) in [
        (
            "family wildcard from a pull request",
            target,
            &["project:example:releng:signing:cert:*"][..],
        ),
        (
            "prefix wildcard from a pull request",
            target,
            &["project:example:releng:push:bucket*"],
        ),
        (
            "project wildcard from a pull request",
            target,
            &["project:*"],
        ),
        ("star from a pull request", target, &["*"]),
        (
            "a restricted scope on an upstream link, not the target",
            build,
            &["project:example:releng:push:bucket-release"],
        ),
        (
            "an undeclared assume: role from a pull request",
            target,
            &["assume:repo:github.com/example/product:branch:main"],
        ),
        ("assume wildcard from a pull request", target, &["assume:*"]),
        (
            "star on the decision task of a pull request",
            decision,
            &["*"],
        ),
        (
            "assume wildcard on the image builder of a pull request",
            image,
            &["assume:*"],
        ),
        (
            "a scope that can satisfy assume: (assum*)",
            build,
            &["assum*"],
        ),
        (
            "releng wildcard on an upstream build",
            build,
            &["project:example:releng:*"],
        ),
    ] {
        rows.push(pull_request_with_scopes(name, link, scopes));
    }
    // More ways in for families the first table covers once.
    rows.extend([
        row(
            "interactive via env",
            Check::Interactive,
            "interactive",
            |fx, k| {
                fx.b.def["payload"]["env"]["TASKCLUSTER_INTERACTIVE"] = json!("1");
                fx.build(k)
            },
        ),
        row(
            "interactive via rdpInfo",
            Check::Interactive,
            "interactive",
            |fx, k| {
                fx.i.def["payload"]["rdpInfo"] = json!("public/rdp.json");
                fx.build(k)
            },
        ),
        row(
            "interactive decision task (truthy string)",
            Check::Interactive,
            "interactive",
            |fx, k| {
                fx.d.def["payload"]["features"]["interactive"] = json!("yes");
                fx.build(k)
            },
        ),
        row(
            "rdp scope on the decision task",
            Check::Interactive,
            "interactive",
            |fx, k| {
                fx.d.def["scopes"] = json!(["generic-worker:allow-rdp:example-3/decision"]);
                fx.build(k)
            },
        ),
        row(
            "tampered task graph byte",
            Check::Artifacts,
            "hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.d.id, "public/task-graph.json")[1] ^= 1;
                b
            },
        ),
    ]);
    for (name, edit) in [
        (
            "pull request number in the decision's environment",
            (|d: &mut Value| d["payload"]["env"]["PRODUCT_PULL_REQUEST_NUMBER"] = json!("42"))
                as fn(&mut Value),
        ),
        ("pr-action decision", |d: &mut Value| {
            d["extra"]["tasks_for"] = json!("pr-action")
        }),
        ("untrusted pull request decision", |d: &mut Value| {
            d["extra"]["tasks_for"] = json!("github-pull-request-untrusted")
        }),
    ] {
        rows.push(row(
            name,
            Check::SourceAndScopes,
            "restricted-scope-untrusted",
            move |fx, k| {
                edit(&mut fx.d.def);
                fx.build(k)
            },
        ));
    }
    rows.push(row(
        "untrusted scheduler id on every link",
        Check::SourceAndScopes,
        "restricted-scope-untrusted",
        |fx, k| {
            for l in fx.links_mut() {
                l.def["schedulerId"] = json!("example-level-1");
            }
            fx.build(k)
        },
    ));
    // Parser differentials: the unsigned files are read with the signed documents' parser.
    for (name, file, edit) in [
        (
            "duplicate scopes key in task.json (evil first)",
            "task.json",
            (|t: &str| t.replacen("{", "{\"scopes\":[\"project:*\"],", 1)) as fn(&str) -> String,
        ),
        (
            "integer beyond 64 bits in task.json",
            "task.json",
            |t: &str| t.replacen("{", "{\"big\":18446744073709551617,", 1),
        ),
        (
            "duplicate state key in status.json",
            "status.json",
            |t: &str| t.replacen("{", "{\"state\":\"failed\",", 1),
        ),
    ] {
        let check = if file == "task.json" {
            Check::Chain
        } else {
            Check::Run
        };
        rows.push(row(name, check, "evidence-malformed", move |fx, k| {
            let mut b = fx.build(k);
            let id = fx.b.id.clone();
            let genuine = if file == "task.json" {
                b.tasks[&id].to_string()
            } else {
                serde_json::to_string(&b.statuses[&id]).unwrap()
            };
            b.raw.insert((id, file), edit(&genuine));
            b
        }));
    }
    rows
}

/// Replaces artifact `name` of `id` and re-signs its document with the genuine key, listing
/// the new bytes: only a rule about the content itself can refuse it.
fn replace_signed_artifact(b: &mut Built, k: &Keys, id: &TaskId, name: &str, bytes: Vec<u8>) {
    let hash = sha256(&bytes);
    *b.file(id, name) = bytes;
    edit_doc(b, k, id, |d| d["artifacts"][name]["sha256"] = json!(hash));
}

/// Replaces the document of `id` with `text` (exact bytes) and re-signs it.
fn raw_signed_doc(b: &mut Built, k: &Keys, id: &TaskId, text: impl FnOnce(&str) -> String) {
    let doc = String::from_utf8(b.file(id, "public/chain-of-trust.json").clone()).unwrap();
    *b.file(id, "public/chain-of-trust.json") = text(&doc).into_bytes();
    resign_gw(b, id, &k.generic_worker);
}

/// The third table: more ways into every family, bundle structure and the fetcher's records.
fn more_rows() -> Vec<Row> {
    const TARGET: &str = "public/build/target.tar.gz";
    const DOC: &str = "public/chain-of-trust.json";
    const SIG: &str = "public/chain-of-trust.json.sig";
    const GRAPH: &str = "public/task-graph.json";
    let mut rows = vec![
        // Integrity.
        row(
            "consumed artifact cut by one byte",
            Check::Artifacts,
            "hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, TARGET).pop();
                b
            },
        ),
        row(
            "consumed artifact with a byte appended",
            Check::Artifacts,
            "hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, TARGET).push(b'\n');
                b
            },
        ),
        row(
            "consumed artifact emptied",
            Check::Artifacts,
            "hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, TARGET).clear();
                b
            },
        ),
        row(
            "image task's document lists other layers (re-signed)",
            Check::DockerImage,
            "image-hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                let layers = b"other layers".to_vec();
                replace_signed_artifact(&mut b, k, &fx.i.id, "public/image.tar.zst", layers);
                b
            },
        ),
        row(
            "document lists another hash for the consumed artifact (re-signed)",
            Check::Artifacts,
            "hash-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                edit_doc(&mut b, k, &fx.b.id, |d| {
                    d["artifacts"][TARGET]["sha256"] = json!("0".repeat(64))
                });
                b
            },
        ),
        row(
            "document hash in upper case (re-signed)",
            Check::Schema,
            "document-invalid",
            |fx, k| {
                let mut b = fx.build(k);
                let upper = sha256(b"the build output").to_uppercase();
                edit_doc(&mut b, k, &fx.b.id, |d| {
                    d["artifacts"][TARGET]["sha256"] = json!(upper)
                });
                b
            },
        ),
        // Forged signers.
        row(
            "signature cut to 63 bytes",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, SIG).truncate(63);
                b
            },
        ),
        row(
            "empty signature file",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, SIG).clear();
                b
            },
        ),
        row(
            "another link's genuine signature",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                let other = b.file(&fx.i.id, SIG).clone();
                *b.file(&fx.b.id, SIG) = other;
                b
            },
        ),
        row(
            "a newline appended to a signed document",
            Check::Signature,
            "signature-rejected",
            |fx, k| {
                let mut b = fx.build(k);
                b.file(&fx.b.id, DOC).push(b'\n');
                b
            },
        ),
        row(
            "another link's genuine document and signature",
            Check::Run,
            "document-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                for name in [DOC, SIG] {
                    let other = b.file(&fx.i.id, name).clone();
                    *b.file(&fx.b.id, name) = other;
                }
                b
            },
        ),
        // The signed document describes this task and run, and is strict JSON.
        row(
            "document names another task (re-signed)",
            Check::Run,
            "document-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                let other = fx.i.id.to_string();
                edit_doc(&mut b, k, &fx.b.id, |d| d["taskId"] = json!(other));
                b
            },
        ),
        row(
            "document names another worker group (re-signed)",
            Check::Run,
            "document-mismatch",
            |fx, k| {
                let mut b = fx.build(k);
                edit_doc(&mut b, k, &fx.b.id, |d| {
                    d["workerGroup"] = json!("elsewhere")
                });
                b
            },
        ),
        row(
            "document with a duplicate key (re-signed)",
            Check::Schema,
            "document-invalid",
            |fx, k| {
                let mut b = fx.build(k);
                raw_signed_doc(&mut b, k, &fx.b.id, |t| {
                    t.replacen('{', "{\"runId\": 7,", 1)
                });
                b
            },
        ),
        row(
            "document with an integer beyond 64 bits (re-signed)",
            Check::Schema,
            "document-invalid",
            |fx, k| {
                let mut b = fx.build(k);
                raw_signed_doc(&mut b, k, &fx.b.id, |t| {
                    t.replacen('{', "{\"x\": 18446744073709551617,", 1)
                });
                b
            },
        ),
        // Graph.
        row(
            "scopes added at run time",
            Check::TaskGraph,
            "graph-mismatch",
            |fx, k| {
                let graph = fx.graph();
                fx.b.def["scopes"] = json!(["queue:route:index.project.example.*"]);
                fx.build_with_graph(k, |g| *g = graph)
            },
        ),
        row(
            "retries raised at run time",
            Check::TaskGraph,
            "graph-mismatch",
            |fx, k| {
                let graph = fx.graph();
                fx.b.def["retries"] = json!(7);
                fx.build_with_graph(k, |g| *g = graph)
            },
        ),
        row(
            "a graph key dropped at run time",
            Check::TaskGraph,
            "graph-mismatch",
            |fx, k| {
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| g[&id]["task"]["extra"]["graphOnly"] = json!(1))
            },
        ),
        row(
            "graph entry filed under another taskId",
            Check::TaskGraph,
            "task-not-in-graph",
            |fx, k| {
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| {
                    let entry = g.remove(&id).unwrap();
                    g.insert(TaskId::generate().to_string(), entry);
                })
            },
        ),
        row(
            "graph datestamp 300000 years out",
            Check::TaskGraph,
            "datestamp-out-of-range",
            |fx, k| {
                let id = fx.b.id.to_string();
                fx.build_with_graph(k, |g| {
                    g[&id]["task"]["payload"]["artifacts"][0]["expires"] =
                        json!({"relative-datestamp": "300000 years"})
                })
            },
        ),
        row(
            "task graph is an array (re-signed)",
            Check::TaskGraph,
            "graph-invalid",
            |fx, k| {
                let mut b = fx.build(k);
                replace_signed_artifact(&mut b, k, &fx.d.id, GRAPH, b"[]".to_vec());
                b
            },
        ),
        row(
            "task graph with a duplicate taskId (re-signed)",
            Check::TaskGraph,
            "graph-invalid",
            |fx, k| {
                let mut b = fx.build(k);
                let text = String::from_utf8(b.file(&fx.d.id, GRAPH).clone()).unwrap();
                let id = fx.b.id.to_string();
                let forged = text.replacen('{', &format!("{{\"{id}\": {{\"task\": {{}}}},"), 1);
                replace_signed_artifact(&mut b, k, &fx.d.id, GRAPH, forged.into_bytes());
                b
            },
        ),
        // Queue identity.
        row(
            "provisionerId changed at run time only",
            Check::Chain,
            "queue-identity-mismatch",
            |fx, k| {
                fx.b.def["provisionerId"] = json!("example-1");
                fx.build(k)
            },
        ),
        // Status.
        status_row("no runs at all", Check::Run, "run-not-completed", |s| {
            s.runs.clear()
        }),
        status_row(
            "a later exception after a completed run",
            Check::Run,
            "run-not-completed",
            |s| {
                let mut later = s.runs[0].clone();
                later.run_id = 1;
                later.state = TaskState::Exception;
                s.runs.push(later);
            },
        ),
        status_row(
            "two runs with the same id",
            Check::Run,
            "runs-invalid",
            |s| {
                let again = s.runs[0].clone();
                s.runs.push(again);
            },
        ),
        status_row(
            "status of another provisioner",
            Check::Run,
            "status-mismatch",
            |s| s.provisioner_id = "example-1".into(),
        ),
        status_row(
            "completed run without a resolution time",
            Check::Run,
            "runs-invalid",
            |s| s.runs[0].resolved = None,
        ),
        row(
            "status.json absent",
            Check::Run,
            "status-missing",
            |fx, k| {
                let mut b = fx.build(k);
                b.statuses.remove(&fx.b.id);
                b
            },
        ),
        // Sources and scopes.
        from_repository(
            "restricted scope from a look-alike host",
            "restricted-scope-repository",
            "https://github.com.evil.example/example/product",
        ),
        from_repository(
            "restricted scope from a repository sharing the allowed prefix",
            "restricted-scope-repository",
            "https://github.com/example/product-evil",
        ),
        // Docker images.
        row(
            "image taken from another task than the declared input",
            Check::DockerImage,
            "image-input-mismatch",
            |fx, k| {
                fx.b.def["payload"]["image"]["taskId"] = json!(fx.d.id.as_str());
                fx.build(k)
            },
        ),
        row(
            "image hash missing from the document",
            Check::DockerImage,
            "image-hash-missing",
            |fx, k| {
                fx.b.environment = json!({});
                fx.build(k)
            },
        ),
        row(
            "image by tag, without a digest",
            Check::DockerImage,
            "unpinned-image",
            |fx, k| {
                fx.b.def["payload"]["image"] = json!("ubuntu:latest");
                fx.build(k)
            },
        ),
        row(
            "image digest that is not sha256 hex",
            Check::DockerImage,
            "unpinned-image",
            |fx, k| {
                fx.b.def["payload"]["image"] =
                    json!({"type": "docker-image", "name": "ubuntu@sha256:xyz"});
                fx.build(k)
            },
        ),
        row(
            "task-image without a path",
            Check::DockerImage,
            "bad-image",
            |fx, k| {
                fx.b.def["payload"]["image"] =
                    json!({"type": "task-image", "taskId": fx.i.id.as_str()});
                fx.build(k)
            },
        ),
        row(
            "image of an unknown type",
            Check::DockerImage,
            "bad-image",
            |fx, k| {
                fx.b.def["payload"]["image"] = json!({"type": "magic-image"});
                fx.build(k)
            },
        ),
        // Interactive.
        row(
            "interactive decision task via env",
            Check::Interactive,
            "interactive",
            |fx, k| {
                fx.d.def["payload"]["env"]["TASKCLUSTER_INTERACTIVE"] = json!("true");
                fx.build(k)
            },
        ),
        // Bundle structure and the fetcher's records.
        Row {
            limits: Limits {
                max_task_bytes: 256,
                ..Limits::default()
            },
            ..row(
                "task.json over max_task_bytes",
                Check::Chain,
                "evidence-too-large",
                |fx, k| fx.build(k),
            )
        },
        row(
            "a too-large record for a definition",
            Check::Chain,
            "evidence-too-large",
            |fx, k| {
                let mut b = fx.build(k);
                // The record wins over a task.json beside it.
                b.other.insert(
                    format!("{}/task.json.too-large", fx.i.id),
                    b"4194304".to_vec(),
                );
                b
            },
        ),
        row(
            "a too-large record for a status",
            Check::Run,
            "evidence-too-large",
            |fx, k| {
                let mut b = fx.build(k);
                b.statuses.remove(&fx.b.id);
                b.other.insert(
                    format!("{}/status.json.too-large", fx.b.id),
                    b"4194304".to_vec(),
                );
                b
            },
        ),
        row(
            "a too-large record for a consumed artifact",
            Check::Artifacts,
            "evidence-too-large",
            |fx, k| {
                let mut b = fx.build(k);
                b.other
                    .insert(format!("{}/too-large/{TARGET}", fx.b.id), b"1024".to_vec());
                b
            },
        ),
        row(
            "an undecodable record for a consumed artifact",
            Check::Artifacts,
            "artifact-unreadable",
            |fx, k| {
                let mut b = fx.build(k);
                b.files.remove(&(fx.b.id.clone(), TARGET.to_owned()));
                b.other.insert(
                    format!("{}/undecodable/{TARGET}", fx.b.id),
                    b"invalid gzip header".to_vec(),
                );
                b
            },
        ),
        row(
            "task.json that is not JSON",
            Check::Chain,
            "evidence-malformed",
            |fx, k| {
                let mut b = fx.build(k);
                b.raw
                    .insert((fx.i.id.clone(), "task.json"), "{\"taskGroupId\":".into());
                b
            },
        ),
        row(
            "status.json that is not a status",
            Check::Run,
            "evidence-malformed",
            |fx, k| {
                let mut b = fx.build(k);
                b.raw.insert((fx.b.id.clone(), "status.json"), "[]".into());
                b
            },
        ),
        row(
            "task.json with a byte-order mark",
            Check::Chain,
            "evidence-malformed",
            |fx, k| {
                let mut b = fx.build(k);
                let genuine = b.tasks[&fx.b.id].to_string();
                b.raw
                    .insert((fx.b.id.clone(), "task.json"), format!("\u{feff}{genuine}"));
                b
            },
        ),
        row(
            "task.json with trailing data",
            Check::Chain,
            "evidence-malformed",
            |fx, k| {
                let mut b = fx.build(k);
                let genuine = b.tasks[&fx.b.id].to_string();
                b.raw
                    .insert((fx.b.id.clone(), "task.json"), format!("{genuine} {{}}"));
                b
            },
        ),
        // Keys and time.
        Row {
            gw: GwKeyWindow {
                valid_from: t0() + Duration::days(1),
                ..GwKeyWindow::default()
            },
            ..row(
                "ed25519 key not yet valid when the runs resolved",
                Check::Signature,
                "signature-rejected",
                |fx, k| fx.build(k),
            )
        },
        Row {
            mode: Mode {
                check_target: true,
                renderer: &NoRenderer,
            },
            ..row(
                "OpenPGP signature dated long after the run resolved",
                Check::Signature,
                "signature-rejected",
                |fx, k| {
                    let mut b = fx.build(k);
                    let run = &mut b.statuses.get_mut(&fx.s.id).unwrap().runs[0];
                    run.resolved = Some(t0() + Duration::minutes(30));
                    b
                },
            )
        },
    ];
    rows.shrink_to_fit();
    rows
}

#[test]
fn more_ways_into_every_family_are_refused() {
    run_rows(more_rows());
}

/// Issue 9 asks for at least 120 rows across the families.
#[test]
fn the_corpus_has_at_least_120_rows() {
    let n = rows().len() + forgery_rows().len() + more_rows().len();
    assert!(n >= 120, "{n} rows");
}

#[test]
fn soft_revocation_after_signing_keeps_old_signatures() {
    let keys = Keys::new();
    let trust = trust_store(
        &keys,
        &GwKeyWindow {
            revocation: Some(Revocation {
                at: t0() + Duration::hours(1) + Duration::minutes(30),
                reason: RevocationReason::Superseded,
            }),
            ..GwKeyWindow::default()
        },
    );
    let built = Fixture::new().build(&keys);
    let verified = match built.verify_with(&trust, &Limits::default(), WORKER) {
        Ok(v) => v,
        Err(r) => panic!("{}", r.to_text()),
    };
    // Accepted, with the caveat an offline auditor must see: the retired key dated it.
    let text = verified.report().to_text();
    assert!(
        text.contains("[caveat] key gw-test was retired") && text.contains("backdated"),
        "{text}"
    );
    let json: Value = serde_json::from_str(&verified.report().to_json()).unwrap();
    assert!(
        json["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["caveats"].as_array().is_some_and(|c| !c.is_empty())),
        "{json}"
    );
}

#[test]
fn bundle_symlinks_are_refused() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let fx = Fixture::new();
    let built = fx.build(&keys);
    let dir = tempfile::tempdir().unwrap();
    built.write(dir.path());
    let artifact = dir
        .path()
        .join(fx.b.id.as_str())
        .join("artifacts/public/build/target.tar.gz");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::rename(&artifact, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &artifact).unwrap();
    let bundle = Bundle::open(dir.path(), &Limits::default()).unwrap();
    let report = verify::verify(
        &bundle,
        &fx.s.id,
        &policy(),
        &trust,
        now(),
        &Limits::default(),
        WORKER,
    )
    .unwrap_err();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.code() == "artifact-unreadable"),
        "{}",
        report.to_text()
    );
}

#[test]
fn report_renders_json_and_dot() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let fx = Fixture::new();
    let mut built = fx.build(&keys);
    built.file(&fx.b.id, "public/build/target.tar.gz")[0] ^= 1;
    let report = built
        .verify_with(&trust, &Limits::default(), WORKER)
        .unwrap_err();
    let json: Value = serde_json::from_str(&report.to_json()).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/verify-report.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    assert!(validator.is_valid(&json), "{json}");
    assert_eq!(json["verified"], json!(false));
    let dot = report.to_dot();
    assert!(dot.starts_with("digraph"));
    assert!(dot.contains(&format!("\"{}\" [label=", fx.b.id)));
    assert!(dot.contains("color=red"));
}

/// The scriptworker ed25519 known-answer vectors go through the same acceptance path the
/// verifier uses (`TrustStore::verify_cot_signature`), with per-implementation isolation.
#[test]
fn ed25519_known_answers_verify_through_the_trust_store() {
    let data = Path::new("/work/shared/testdata/scriptworker/tests/data/ed25519");
    let msg = std::fs::read(data.join("foo.json")).unwrap();
    let sig = std::fs::read(data.join("foo.json.scriptworker.sig")).unwrap();
    let key_of = |name: &str| std::fs::read_to_string(data.join(name)).unwrap();
    let keys = Keys::new();
    let mut file = trust_policy_file(&keys, &GwKeyWindow::default());
    for (imp, key) in [
        ("scriptworker", "scriptworker_public_key"),
        ("docker-worker", "docker-worker_public_key"),
    ] {
        file.workers.insert(
            imp.into(),
            vec![WorkerKey {
                name: format!("{imp}-kat"),
                key_type: KeyType::Ed25519,
                fingerprint: None,
                cert: None,
                public_key: Some(key_of(key).trim().to_owned()),
                valid_from: t0() - Duration::days(5),
                valid_until: t0() + Duration::days(5),
                revocation: None,
            }],
        );
    }
    let bytes = Policy::to_toml(&file).unwrap().into_bytes();
    let root_sig = openpgp::sign_detached_armored(&keys.root, &bytes, t0()).unwrap();
    let pin = TrustPin {
        version: 1,
        sha256: trust::sha256_hex(&bytes),
    };
    let store = TrustStore::from_versions(
        &pin,
        &[PolicyVersion {
            source: "memory".into(),
            bytes,
            signatures: vec![root_sig],
        }],
        now(),
        &trust::Limits::default(),
    )
    .unwrap();
    let check = |imp: &str, m: &[u8], s: &[u8]| {
        store.verify_cot_signature(
            imp,
            m,
            CotSignature::Ed25519Raw(s),
            t0(),
            Duration::minutes(5),
        )
    };
    assert!(check("scriptworker", &msg, &sig).is_ok());
    assert!(check("docker-worker", &msg, &sig).is_err());
    assert!(check("generic-worker", &msg, &sig).is_err());
    let mut flipped = sig.clone();
    flipped[0] ^= 1;
    assert!(check("scriptworker", &msg, &flipped).is_err());
    assert!(check("scriptworker", &msg, &sig[..63]).is_err());
    assert!(check("scriptworker", &msg[..msg.len() - 1], &sig).is_err());
}

// ---------------------------------------------------------------------------------------------
// Online: the same chain published on the dev queue, verified by the worker API and the CLI.

mod online {
    use super::*;
    use chainlock::devqueue::DevQueueHandle;
    use chainlock::evidence::{self, ChainFailure};
    use chainlock::queue::types::ExceptionReason;
    use chainlock::queue::{QueueClient, RetryPolicy};

    const TOKEN: &str = "verify-test-admin-token";

    async fn start_queue(dir: &Path) -> DevQueueHandle {
        let timeout = std::time::Duration::from_millis(200);
        crate::common::start_dev_queue(dir, vec![crate::common::admin_client(TOKEN)], None, timeout)
            .await
    }

    fn admin(h: &DevQueueHandle) -> QueueClient {
        crate::common::client_for(h, "admin", TOKEN)
    }

    /// Creates the fixture's tasks on the dev queue, takes their stored definitions back into
    /// the fixture (documents embed exactly what the queue stores), then runs each link as a
    /// worker would: claim, upload outputs + signed document, complete. `skip` names artifacts
    /// not uploaded.
    async fn publish(h: &DevQueueHandle, fx: &mut Fixture, keys: &Keys, skip: &[(TaskId, &str)]) {
        let q = admin(h);
        for l in fx.links_mut() {
            q.create_task(&l.id, &l.def).await.unwrap();
            l.def = q.task(&l.id).await.unwrap();
        }
        let built = fx.build(keys);
        let tmp = tempfile::tempdir().unwrap();
        for l in fx.links() {
            let files: BTreeMap<String, Vec<u8>> = built
                .files
                .iter()
                .filter(|((id, name), _)| {
                    id == &l.id && !skip.iter().any(|(s, n)| s == id && n == name)
                })
                .map(|((_, name), bytes)| (name.clone(), bytes.clone()))
                .collect();
            seed::run_as_worker(&q, l, &files, RUN, tmp.path())
                .await
                .unwrap();
        }
    }

    /// `chainlock verify TASK --root-url .. --policy <example> --keys DIR --format json`.
    fn online_json_args(h: &DevQueueHandle, task: &TaskId, keys_dir: &Path) -> Vec<String> {
        vec![
            "verify".to_owned(),
            task.to_string(),
            "--root-url".into(),
            h.root_url().to_owned(),
            "--policy".into(),
            super::policy_file(),
            "--keys".into(),
            s(keys_dir),
            "--format".into(),
            "json".into(),
        ]
    }

    async fn cli(args: Vec<String>) -> (i32, String, String) {
        tokio::task::spawn_blocking(move || super::common::run_cli(&args))
            .await
            .unwrap()
    }

    fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
        x.as_ref().to_string_lossy().into_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn online_worker_api_cli_and_bundle_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let h = start_queue(&dir.path().join("queue")).await;
        let keys = Keys::new();
        let keys_dir = dir.path().join("keys");
        write_keys_dir(&keys, &keys_dir);
        let policy_file = super::policy_file();
        let mut fx = Fixture::new();
        publish(&h, &mut fx, &keys, &[]).await;

        // Worker API: verified files land in cot/ with a manifest.
        let trust = trust_store(&keys, &GwKeyWindow::default());
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let cot = work.join("cot");
        let anon = admin(&h).anonymous();
        let verified = evidence::fetch_and_verify(
            &anon,
            &fx.s.id,
            &fx.s.def,
            &cot,
            &policy(),
            &trust,
            chainlock::clock::now(),
            &Limits::default(),
            &chainlock::verify::rebuild::NoRenderer,
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.log_text()));
        assert_eq!(verified.target(), &fx.s.id);
        let staged = cot
            .join(fx.b.id.as_str())
            .join("public/build/target.tar.gz");
        assert_eq!(std::fs::read(&staged).unwrap(), b"the build output");
        let manifest: chainlock::manifest::VerifiedManifest =
            serde_json::from_slice(&std::fs::read(cot.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest.artifacts.len(), 2);
        // Each entry carries the kind the policy verified for its task.
        for a in &manifest.artifacts {
            let expected = if a.task_id == fx.b.id {
                chainlock::chain_policy::LinkKind::Build
            } else {
                chainlock::chain_policy::LinkKind::Decision
            };
            assert_eq!(a.task_kind, expected, "{}/{}", a.task_id, a.path);
        }
        // Only cot/ is left in the work dir: the evidence staging area is gone.
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 1);

        // CLI online, auditing the target's own OpenPGP-signed document as well.
        let base = vec![
            "verify".to_owned(),
            fx.s.id.to_string(),
            "--root-url".into(),
            h.root_url().to_owned(),
            "--policy".into(),
            policy_file.clone(),
            "--keys".into(),
            s(&keys_dir),
        ];
        let mut args = base.clone();
        args.extend(["--check-task".into(), "--format".into(), "json".into()]);
        let (code, out, err) = cli(args).await;
        assert_eq!(code, 0, "{out}\n{err}");
        let json: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["verified"], json!(true));

        // Export, then verify offline; then tamper with the bundle.
        let bundle = dir.path().join("bundle");
        let mut args = base.clone();
        args.extend(["--export-bundle".into(), s(&bundle)]);
        let (code, out, err) = cli(args).await;
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(out.contains("VERIFIED"), "{out}");
        let offline = |fmt: &str| {
            vec![
                "verify".to_owned(),
                "--bundle".into(),
                s(&bundle),
                "--policy".into(),
                policy_file.clone(),
                "--keys".into(),
                s(&keys_dir),
                "--format".into(),
                fmt.into(),
            ]
        };
        let (code, out, err) = cli(offline("text")).await;
        assert_eq!(code, 0, "{out}\n{err}");
        let artifact = bundle
            .join(fx.b.id.as_str())
            .join("artifacts/public/build/target.tar.gz");
        std::fs::write(&artifact, b"the build outpuT").unwrap();
        let (code, out, _) = cli(offline("dot")).await;
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("color=red"), "{out}");
        let (code, out, _) = cli(offline("text")).await;
        assert_eq!(code, 1);
        assert!(out.contains("[FAIL] artifacts"), "{out}");

        // Unreadable bundle: infrastructure (2). Missing flags: usage (64).
        let mut args = offline("text");
        args[2] = s(dir.path().join("no-such-bundle"));
        assert_eq!(cli(args).await.0, 2);
        assert_eq!(cli(vec!["verify".into()]).await.0, 64);
        assert_eq!(cli(base[..4].to_vec()).await.0, 64);

        // A 404 for a document that must exist is a verification failure (malformed-payload).
        let mut fx404 = Fixture::new();
        let b_id = fx404.b.id.clone();
        publish(
            &h,
            &mut fx404,
            &keys,
            &[(b_id, "public/chain-of-trust.json")],
        )
        .await;
        let cot404 = work.join("cot404");
        let failure = evidence::fetch_and_verify(
            &anon,
            &fx404.s.id,
            &fx404.s.def,
            &cot404,
            &policy(),
            &trust,
            chainlock::clock::now(),
            &Limits::default(),
            &chainlock::verify::rebuild::NoRenderer,
        )
        .await
        .unwrap_err();
        assert_eq!(
            failure.exception_reason(),
            ExceptionReason::MalformedPayload
        );
        let ChainFailure::Verification(report) = &failure else {
            panic!("{failure}")
        };
        assert!(report.errors.iter().any(|e| e.code() == "document-missing"));
        assert!(failure.log_text().contains("[FAIL] schema"));
        assert!(!cot404.exists(), "nothing handed to the script on failure");
        let mut args = base.clone();
        args[1] = fx404.s.id.to_string();
        assert_eq!(cli(args).await.0, 1);

        // Queue down: infrastructure, never malformed-payload.
        let root_url = h.root_url().to_owned();
        h.shutdown().await;
        let down = QueueClient::new(
            &root_url,
            None,
            RetryPolicy {
                max_attempts: 2,
                ..RetryPolicy::fast_for_tests()
            },
        )
        .unwrap();
        let failure = evidence::fetch_and_verify(
            &down,
            &fx.s.id,
            &fx.s.def,
            &work.join("cot-down"),
            &policy(),
            &trust,
            chainlock::clock::now(),
            &Limits::default(),
            &chainlock::verify::rebuild::NoRenderer,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(failure, ChainFailure::Infrastructure(_)),
            "{failure}"
        );
        assert_eq!(
            failure.exception_reason(),
            ExceptionReason::ResourceUnavailable
        );
        let mut args = base.clone();
        args.extend(["--retries".into(), "0".into()]);
        let (code, out, err) = cli(args).await;
        assert_eq!(code, 2, "{out}\n{err}");
    }

    /// Issue 11: evidence is fetched in as few sequential round trips as the chain allows,
    /// and no signature format a link's worker implementation does not use is requested. The
    /// queue answers every request 20 ms late so the order of requests is what the fetcher
    /// chose, not scheduling noise. The fixture's deepest path is target -> build -> image:
    /// the build's definition (1), then the image's definition and, because every docker-image
    /// queue of the policy signs with ed25519, its signature at the same time, through the
    /// artifact redirect (2, 3).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn evidence_is_fetched_in_as_few_round_trips_as_the_chain_allows() {
        let (rounds, early) = fetch_round_trips(policy()).await;
        assert!(rounds <= 3, "{rounds} sequential round trips");
        assert!(early, "the image's signature waited for its definition");
    }

    /// The signature is requested ahead of the definition only when the policy fixes it: with
    /// a second docker-image queue whose implementation signs with OpenPGP, the image's format
    /// is unknown until its definition names its queue, and nothing is guessed.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signature_format_the_policy_does_not_fix_waits_for_the_definition() {
        let text = policy_text()
            + "\n[[queues]]\ntask_queue_id = \"example-3/images-openpgp\"\n\
               worker_implementation = \"chainlock\"\nkind = \"docker-image\"\n";
        let (rounds, early) = fetch_round_trips(ChainPolicy::from_toml(&text).unwrap()).await;
        assert!(
            !early,
            "a signature requested before its link's queue was known"
        );
        assert!(rounds <= 4, "{rounds} sequential round trips");
    }

    /// Fetches and verifies the fixture chain under `policy` from a queue answering 20 ms late;
    /// returns the sequential round trips and whether the image's signature was asked for
    /// before its definition was answered. Asserts that no OpenPGP signature (which no link of
    /// the fixture uses) and no definition twice was requested.
    async fn fetch_round_trips(policy: ChainPolicy) -> (usize, bool) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = chainlock::devqueue::DevQueueConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("queue"),
            vec![crate::common::admin_client(TOKEN)],
        );
        cfg.claim_work_timeout = std::time::Duration::from_millis(200);
        cfg.injected_latency = std::time::Duration::from_millis(20);
        cfg.record_requests = true;
        let h = chainlock::devqueue::start(cfg).await.unwrap();
        let keys = Keys::new();
        let mut fx = Fixture::new();
        publish(&h, &mut fx, &keys, &[]).await;
        h.clear_requests();
        let trust = trust_store(&keys, &GwKeyWindow::default());
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        evidence::fetch_and_verify(
            &admin(&h).anonymous(),
            &fx.s.id,
            &fx.s.def,
            &dir.path().join("work/cot"),
            &policy,
            &trust,
            chainlock::clock::now(),
            &Limits::default(),
            &chainlock::verify::rebuild::NoRenderer,
        )
        .await
        .unwrap_or_else(|e| panic!("{}", e.log_text()));
        let log = h.requests();
        let shown: Vec<String> = log
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        // Every upstream link is generic-worker (ed25519): no OpenPGP signature is asked for.
        assert!(
            !shown.iter().any(|p| p.contains("chain-of-trust.json.asc")),
            "{shown:#?}"
        );
        // Each link's definition exactly once.
        for l in [&fx.d, &fx.i, &fx.b] {
            let path = format!("GET /api/queue/v1/task/{}", l.id);
            assert_eq!(
                shown.iter().filter(|p| **p == path).count(),
                1,
                "{shown:#?}"
            );
        }
        let image_def = format!("/api/queue/v1/task/{}", fx.i.id);
        let image_sig = format!("{image_def}/artifacts/public%2Fchain-of-trust.json.sig");
        let def_answered = log.iter().find(|r| r.path == image_def).unwrap().finished;
        let sig_asked = log.iter().find(|r| r.path == image_sig).unwrap().started;
        let rounds = chainlock::devqueue::sequential_round_trips(&log);
        h.shutdown().await;
        (rounds, sig_asked < def_answered)
    }

    /// Why a corpus row cannot be replayed on a queue, or `None` when it can: the queue
    /// computes statuses and stores definitions itself, so rows that forge those (or files only
    /// a bundle can hold, or the audited target's own run) are offline-only.
    fn offline_only(r: &Row, fx: &Fixture, built: &Built) -> Option<&'static str> {
        if r.mode.check_target {
            return Some("audits the target's own run");
        }
        if !built.raw.is_empty() || !built.other.is_empty() {
            return Some("bytes only a bundle can hold");
        }
        for l in fx.links() {
            if l.state != TaskState::Completed {
                return Some("a run state the fixture worker does not report");
            }
            let Some(def) = built.tasks.get(&l.id) else {
                continue;
            };
            match built.statuses.get(&l.id) {
                Some(st) if *st == status(&l.id, def, l.state) => {}
                _ => return Some("a forged status"),
            }
        }
        None
    }

    /// Replays one row on a fresh dev queue: creates its (mutated) definitions, runs every
    /// link as a worker uploading the row's (forged) files, then verifies the target exactly as
    /// the worker does before running its script. `Err` says why the row does not apply.
    async fn replay_online(r: &Row, keys: &Keys) -> Result<Result<(), String>, String> {
        let mut fx = Fixture::new();
        let built = (r.mutate)(&mut fx, keys);
        if let Some(why) = offline_only(r, &fx, &built) {
            return Err(why.into());
        }
        let dir = tempfile::tempdir().unwrap();
        let h = start_queue(&dir.path().join("queue")).await;
        let q = admin(&h);
        // In the fixture's order: dependencies exist before their dependents.
        for id in fx.links().map(|l| l.id.clone()) {
            let Some(def) = built.tasks.get(&id) else {
                continue;
            };
            if let Err(e) = q.create_task(&id, def).await {
                h.shutdown().await;
                return Err(format!("the queue refuses the forged definition ({e})"));
            }
            if q.task(&id).await.unwrap() != *def {
                h.shutdown().await;
                return Err("the queue normalises the forged definition".into());
            }
        }
        let tmp = tempfile::tempdir().unwrap();
        for l in fx.links() {
            let Some(def) = built.tasks.get(&l.id) else {
                continue;
            };
            let mut link = l.link.clone();
            link.def = def.clone();
            let files: BTreeMap<String, Vec<u8>> = built
                .files
                .iter()
                .filter(|((id, _), _)| id == &l.id)
                .map(|((_, name), bytes)| (name.clone(), bytes.clone()))
                .collect();
            if seed::run_as_worker(&q, &link, &files, RUN, tmp.path())
                .await
                .is_err()
            {
                h.shutdown().await;
                return Err("the forged link cannot be run on the queue".into());
            }
        }
        let trust = trust_store(keys, &r.gw);
        let cot = dir.path().join("work/cot");
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        let result = evidence::fetch_and_verify(
            &admin(&h).anonymous(),
            &fx.s.id,
            &built.tasks[&fx.s.id],
            &cot,
            &policy(),
            &trust,
            chainlock::clock::now(),
            &r.limits,
            &chainlock::verify::rebuild::NoRenderer,
        )
        .await;
        h.shutdown().await;
        Ok(match result {
            Ok(_) => Err(format!("{}: verified online", r.name)),
            Err(ChainFailure::Verification(report)) => {
                let hit = report
                    .errors
                    .iter()
                    .any(|e| e.check() == r.check && e.code() == r.code);
                if hit {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: online, expected {} {}, got:\n{}",
                        r.name,
                        r.check,
                        r.code,
                        report.to_text()
                    ))
                }
            }
            Err(other) => Err(format!(
                "{}: online, expected a verification failure, got {}",
                r.name,
                other.log_text()
            )),
        })
    }

    /// The whole adversarial corpus, replayed on the dev queue wherever a queue can carry the
    /// forgery: the worker's own fetch-and-verify must refuse each row with the same check
    /// and finding code as the offline bundle.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_corpus_is_refused_online_too() {
        let keys = Keys::new();
        let mut failures = Vec::new();
        let mut online = 0usize;
        let mut offline = Vec::new();
        let all: Vec<Row> = rows()
            .into_iter()
            .chain(forgery_rows())
            .chain(more_rows())
            .collect();
        for r in &all {
            match replay_online(r, &keys).await {
                Ok(Ok(())) => online += 1,
                Ok(Err(f)) => failures.push(f),
                Err(why) => offline.push(format!("{}: {why}", r.name)),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        // Most of the corpus applies online; a change that silently skips it fails here.
        assert!(
            online >= 80,
            "only {online} of {} rows ran online; offline-only:\n{}",
            all.len(),
            offline.join("\n")
        );
        eprintln!(
            "{online} rows refused online; offline-only:\n{}",
            offline.join("\n")
        );
    }

    /// As [`publish`], with `edit` applied to the built evidence before it is uploaded.
    async fn publish_edited(
        h: &DevQueueHandle,
        fx: &mut Fixture,
        keys: &Keys,
        edit: impl FnOnce(&mut BTreeMap<(TaskId, String), Vec<u8>>),
    ) {
        let q = admin(h);
        for l in fx.links_mut() {
            q.create_task(&l.id, &l.def).await.unwrap();
            l.def = q.task(&l.id).await.unwrap();
        }
        let mut built = fx.build(keys);
        edit(&mut built.files);
        let tmp = tempfile::tempdir().unwrap();
        for l in fx.links() {
            let files: BTreeMap<String, Vec<u8>> = built
                .files
                .iter()
                .filter(|((id, _), _)| id == &l.id)
                .map(|((_, name), bytes)| (name.clone(), bytes.clone()))
                .collect();
            seed::run_as_worker(&q, l, &files, RUN, tmp.path())
                .await
                .unwrap();
        }
    }

    /// Issue 9: evidence over a size limit was "evidence unavailable" (exit 2,
    /// `resource-unavailable`). It is the task's evidence at fault: a verification failure
    /// naming the limit (exit 1, `malformed-payload`), for a plainly oversized signature and
    /// for a gzip bomb (a 12 MiB chain-of-trust.json sent as a few KiB of gzip, decoded past
    /// the 8 MiB document limit).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_and_gzip_bomb_evidence_fail_verification() {
        let dir = tempfile::tempdir().unwrap();
        let h = start_queue(&dir.path().join("queue")).await;
        let keys = Keys::new();
        let keys_dir = dir.path().join("keys");
        write_keys_dir(&keys, &keys_dir);
        let mut fx = Fixture::new();
        let (b_id, d_id) = (fx.b.id.clone(), fx.d.id.clone());
        let limits = Limits::default();
        let mut bomb_wire = 0;
        publish_edited(&h, &mut fx, &keys, |files| {
            // JSON goes gzip-encoded on the wire (seed::run_as_worker, as workers do).
            let doc = (b_id.clone(), "public/chain-of-trust.json".to_owned());
            let mut big = b"{\"padding\": \"".to_vec();
            big.resize(12 << 20, b' ');
            big.extend_from_slice(b"\"}");
            bomb_wire = {
                use std::io::Write as _;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(&big).unwrap();
                enc.finish().unwrap().len()
            };
            files.insert(doc, big);
            let sig = files
                .keys()
                .find(|(id, name)| id == &d_id && name.starts_with("public/chain-of-trust.json."))
                .cloned()
                .unwrap();
            files.insert(sig, vec![b'A'; 100 << 10]);
        })
        .await;
        assert!(bomb_wire < 256 << 10, "{bomb_wire}");

        let trust = trust_store(&keys, &GwKeyWindow::default());
        let work = dir.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        let anon = admin(&h).anonymous();
        let failure = evidence::fetch_and_verify(
            &anon,
            &fx.s.id,
            &fx.s.def,
            &work.join("cot"),
            &policy(),
            &trust,
            chainlock::clock::now(),
            &limits,
            &chainlock::verify::rebuild::NoRenderer,
        )
        .await
        .unwrap_err();
        assert_eq!(
            failure.exception_reason(),
            ExceptionReason::MalformedPayload,
            "{}",
            failure.log_text()
        );
        let ChainFailure::Verification(report) = &failure else {
            panic!("{}", failure.log_text())
        };
        let too_large: Vec<(String, &str, u64, Check)> = report
            .errors
            .iter()
            .filter_map(|e| match e {
                verify::VerifyError::EvidenceTooLarge {
                    task_id,
                    artifact,
                    limit,
                    max_bytes,
                    check,
                } => Some((format!("{task_id}/{artifact}"), *limit, *max_bytes, *check)),
                _ => None,
            })
            .collect();
        let d_sig = too_large
            .iter()
            .find(|t| t.0.starts_with(d_id.as_str()))
            .unwrap_or_else(|| panic!("{too_large:?}\n{}", failure.log_text()));
        assert_eq!(
            (d_sig.1, d_sig.2, d_sig.3),
            (
                "max_signature_bytes",
                limits.max_signature_bytes,
                Check::Signature
            )
        );
        assert!(
            too_large.contains(&(
                format!("{b_id}/public/chain-of-trust.json"),
                "max_document_bytes",
                limits.max_document_bytes,
                Check::Schema
            )),
            "{too_large:?}"
        );
        assert!(report.errors.iter().all(|e| e.code() != "document-missing"));
        let text = failure.log_text();
        assert!(
            text.contains("evidence-too-large") || text.contains("larger than"),
            "{text}"
        );
        assert!(!text.contains("evidence unavailable"), "{text}");

        // The CLI: exit 1 (verification failed), not 2 (infrastructure).
        let (code, out, err) = cli(online_json_args(&h, &fx.s.id, &keys_dir)).await;
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(out.contains("evidence-too-large"), "{out}");
        h.shutdown().await;
    }

    /// Issue 9: an artifact stored with `Content-Encoding: gzip` that does not decode, and
    /// definitions larger than `max_task_bytes`, are the evidence's fault: verification
    /// failures naming the file (and the limit), never "evidence unavailable".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn undecodable_and_oversized_evidence_online_fail_verification() {
        let dir = tempfile::tempdir().unwrap();
        let queue_dir = dir.path().join("queue");
        let h = start_queue(&queue_dir).await;
        let keys = Keys::new();
        let keys_dir = dir.path().join("keys");
        write_keys_dir(&keys, &keys_dir);
        let mut fx = Fixture::new();
        publish(&h, &mut fx, &keys, &[]).await;
        // The decision's task graph went up gzip-encoded (it is JSON); its stored bytes are
        // replaced by something that is not gzip.
        let graph = "public/task-graph.json";
        let blob = queue_dir
            .join("blobs")
            .join(fx.d.id.as_str())
            .join("0")
            .join(sha256(graph.as_bytes()));
        assert!(blob.exists(), "{}", blob.display());
        std::fs::write(&blob, b"this is not gzip").unwrap();

        let trust = trust_store(&keys, &GwKeyWindow::default());
        let verify_with = |limits: Limits, cot: PathBuf| {
            let (anon, def, id) = (admin(&h).anonymous(), fx.s.def.clone(), fx.s.id.clone());
            let trust = &trust;
            async move {
                evidence::fetch_and_verify(
                    &anon,
                    &id,
                    &def,
                    &cot,
                    &policy(),
                    trust,
                    chainlock::clock::now(),
                    &limits,
                    &chainlock::verify::rebuild::NoRenderer,
                )
                .await
            }
        };
        std::fs::create_dir_all(dir.path().join("w1")).unwrap();
        std::fs::create_dir_all(dir.path().join("w2")).unwrap();
        let failure = verify_with(Limits::default(), dir.path().join("w1/cot"))
            .await
            .unwrap_err();
        let ChainFailure::Verification(report) = &failure else {
            panic!("{}", failure.log_text())
        };
        let finding = report
            .errors
            .iter()
            .find(|e| e.check() == Check::Artifacts)
            .unwrap_or_else(|| panic!("{}", report.to_text()));
        assert_eq!(
            finding.code(),
            "artifact-unreadable",
            "{}",
            report.to_text()
        );
        assert!(finding.to_string().contains("invalid gzip"), "{finding}");

        // Definitions over the limit: each upstream link's definition is refused once, naming
        // the limit, and none is also reported missing.
        let small = Limits {
            max_task_bytes: 600,
            ..Limits::default()
        };
        let failure = verify_with(small.clone(), dir.path().join("w2/cot"))
            .await
            .unwrap_err();
        let ChainFailure::Verification(report) = &failure else {
            panic!("{}", failure.log_text())
        };
        let too_large: Vec<String> = report
            .errors
            .iter()
            .filter_map(|e| match e {
                verify::VerifyError::EvidenceTooLarge {
                    task_id,
                    artifact,
                    limit: "max_task_bytes",
                    max_bytes: 600,
                    check: Check::Chain,
                } => Some(format!("{task_id}/{artifact}")),
                _ => None,
            })
            .collect();
        assert!(
            too_large.contains(&format!("{}/task.json", fx.d.id)),
            "{}",
            report.to_text()
        );
        assert!(
            report.errors.iter().all(|e| e.code() != "missing-task"),
            "{}",
            report.to_text()
        );

        // The CLI: exit 1, the finding in the JSON report.
        let (code, out, err) = cli(online_json_args(&h, &fx.s.id, &keys_dir)).await;
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(out.contains("invalid gzip"), "{out}");
        h.shutdown().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 9: the auditor's contract (exit codes, one JSON document, escaped evidence), bundles that
// cannot retarget themselves, signature files that are exactly one armored block.

use common::run_cli;

fn report_schema() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/verify-report.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

/// `stdout` is exactly one JSON document, valid against the report schema.
fn one_valid_document(stdout: &str) -> Value {
    let json: Value = serde_json::from_str(stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {stdout}"));
    let validator = report_schema();
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{json}\n{}", errors.join("\n"));
    json
}

/// A genuine chain written as a bundle, with the auditor's keys directory and policy file.
struct Audit {
    _dir: tempfile::TempDir,
    fx: Fixture,
    bundle: std::path::PathBuf,
    keys: std::path::PathBuf,
    policy: String,
}

impl Audit {
    fn new() -> Audit {
        let dir = tempfile::tempdir().unwrap();
        let keys = Keys::new();
        let keys_dir = dir.path().join("keys");
        write_keys_dir(&keys, &keys_dir);
        let fx = Fixture::new();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(&bundle).unwrap();
        fx.build(&keys).write(&bundle);
        Audit {
            _dir: dir,
            fx,
            bundle,
            keys: keys_dir,
            policy: policy_file(),
        }
    }

    /// `chainlock verify [TASK_ID] --bundle B --policy P --keys K --format FMT`.
    fn verify(&self, task_id: Option<&TaskId>, format: &str) -> (i32, String, String) {
        let mut args: Vec<String> = vec!["verify".into()];
        args.extend(task_id.map(|t| t.to_string()));
        args.extend([
            "--bundle".into(),
            self.bundle.display().to_string(),
            "--policy".into(),
            self.policy.clone(),
            "--keys".into(),
            self.keys.display().to_string(),
            "--format".into(),
            format.into(),
        ]);
        run_cli(&args)
    }

    fn retarget(&self, target: &TaskId) {
        let path = self.bundle.join("bundle.json");
        let mut index: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index["target"] = json!(target.as_str());
        std::fs::write(&path, index.to_string()).unwrap();
    }
}

#[test]
fn bundle_cannot_retarget_itself() {
    let audit = Audit::new();
    let (s, b) = (&audit.fx.s.id, &audit.fx.b.id);

    // The genuine bundle, with the right TASK_ID: verified.
    let (code, out, err) = audit.verify(Some(s), "text");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.starts_with(&format!("chain of trust for task {s}: VERIFIED")),
        "{out}"
    );

    // bundle.json retargeted to another genuine task of the chain.
    audit.retarget(b);
    // With TASK_ID: refused, naming the check and the code, in every format.
    let (code, out, err) = audit.verify(Some(s), "text");
    assert_eq!(code, 1, "{out}\n{err}");
    let first = out.lines().next().unwrap_or_default();
    assert!(first.contains(&format!("task {s}: FAILED")), "{out}");
    assert!(
        out.contains(&format!(
            "[FAIL] chain: the bundle is evidence for task {b}"
        )),
        "{out}"
    );
    let (code, out, _) = audit.verify(Some(s), "json");
    assert_eq!(code, 1, "{out}");
    let json = one_valid_document(&out);
    assert_eq!(json["verified"], json!(false));
    assert_eq!(json["target"], json!(s.as_str()));
    assert_eq!(
        json["chainFindings"][0]["code"],
        json!("bundle-target-mismatch")
    );
    let (code, out, _) = audit.verify(Some(s), "dot");
    assert_eq!(code, 1, "{out}");
    assert!(out.starts_with("digraph"), "{out}");
    // Without TASK_ID: the first line says which task was judged, and who named it.
    let (_, out, err) = audit.verify(None, "text");
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("target {b}: named by ")) && first.contains("bundle.json"),
        "{out}\n{err}"
    );
    assert!(!out.contains(&format!("task {s}:")), "{out}");
    let (_, out, _) = audit.verify(None, "json");
    assert_eq!(one_valid_document(&out)["target"], json!(b.as_str()));
    // A TASK_ID that is not a taskId is a usage error.
    let (code, out, _) = run_cli(&[
        "verify",
        "not-a-task",
        "--bundle",
        &audit.bundle.display().to_string(),
        "--policy",
        &audit.policy,
        "--keys",
        &audit.keys.display().to_string(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 64, "{out}");
    assert_eq!(one_valid_document(&out)["error"]["kind"], json!("usage"));
}

#[test]
fn asc_with_trailing_data_is_refused() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let fx = Fixture::new();
    let audit_mode = Mode {
        check_target: true,
        renderer: &NoRenderer,
    };
    let asc = "public/chain-of-trust.json.asc";
    let genuine = fx.build(&keys);
    if let Err(r) = genuine.verify_with(&trust, &Limits::default(), audit_mode) {
        panic!("{}", r.to_text());
    }
    let original = genuine.files[&(fx.s.id.clone(), asc.to_owned())].clone();
    let mut failures = Vec::new();
    for (name, tail, found) in [
        (
            "second block (the genuine one again)",
            original.clone(),
            "a second armored block",
        ),
        (
            "garbage",
            b"\nnot a signature\n".to_vec(),
            "data other than whitespace",
        ),
        ("NUL", b"\0".to_vec(), "data other than whitespace"),
    ] {
        let mut built = fx.build(&keys);
        built.file(&fx.s.id, asc).extend_from_slice(&tail);
        match built.verify_with(&trust, &Limits::default(), audit_mode) {
            Ok(_) => failures.push(format!("{name}: verified")),
            Err(r) => {
                let text = r.to_text();
                let hit = r.errors.iter().any(|e| {
                    e.check() == Check::Signature
                        && e.code() == "signature-rejected"
                        && e.to_string().contains(found)
                });
                if !hit || !text.contains("[FAIL] signature") {
                    failures.push(format!(
                        "{name}: expected signature-rejected ({found}):\n{text}"
                    ));
                }
            }
        }
    }
    // Leading garbage too; trailing whitespace is fine.
    let mut built = fx.build(&keys);
    built
        .file(&fx.s.id, asc)
        .splice(0..0, b"junk\n".iter().copied());
    if built
        .verify_with(&trust, &Limits::default(), audit_mode)
        .is_ok()
    {
        failures.push("leading garbage: verified".into());
    }
    let mut built = fx.build(&keys);
    built.file(&fx.s.id, asc).extend_from_slice(b"\n\r\n \t\n");
    if let Err(r) = built.verify_with(&trust, &Limits::default(), audit_mode) {
        failures.push(format!("trailing whitespace refused:\n{}", r.to_text()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn usage_errors_exit_64_with_a_json_error_document() {
    let audit = Audit::new();
    let bundle = audit.bundle.display().to_string();
    let keys = audit.keys.display().to_string();
    let json_rows: Vec<(&str, Vec<&str>)> = vec![
        (
            "unknown flag",
            vec!["verify", "--bogus", "--format", "json"],
        ),
        (
            "unknown flag, = form",
            vec!["verify", "--format=json", "--bogus"],
        ),
        (
            "conflicting arguments",
            vec![
                "verify",
                "--bundle",
                &bundle,
                "--export-bundle",
                "x",
                "--format",
                "json",
            ],
        ),
        (
            "missing value",
            vec!["verify", "--format", "json", "--trust-pin"],
        ),
        (
            "bad value",
            vec!["verify", "--format", "json", "--retries", "many"],
        ),
        ("nothing to verify", vec!["verify", "--format", "json"]),
        (
            "policy without keys",
            vec![
                "verify",
                "--bundle",
                &bundle,
                "--policy",
                &audit.policy,
                "--format",
                "json",
            ],
        ),
        (
            "bad trust pin",
            vec![
                "verify",
                "--bundle",
                &bundle,
                "--policy",
                &audit.policy,
                "--keys",
                &keys,
                "--trust-pin",
                "1:00",
                "--format",
                "json",
            ],
        ),
    ];
    for (name, args) in json_rows {
        let (code, out, err) = run_cli(&args);
        assert_eq!(code, 64, "{name}: {out}\n{err}");
        let json = one_valid_document(&out);
        assert_eq!(json["error"]["kind"], json!("usage"), "{name}: {json}");
        assert!(!err.is_empty(), "{name}: nothing on stderr");
    }
    // Without --format json: still 64, nothing on stdout.
    for args in [
        vec!["verify", "--format", "xml"],
        vec!["verify", "--bogus"],
        vec!["verify"],
        vec![],
        vec!["no-such-command"],
        vec!["keys", "--bogus"],
        vec!["config", "check"],
    ] {
        let (code, out, err) = run_cli(&args);
        assert_eq!(code, 64, "{args:?}: {out}\n{err}");
    }
    // Help and version are not errors.
    for args in [vec!["--help"], vec!["--version"], vec!["verify", "--help"]] {
        let (code, out, err) = run_cli(&args);
        assert_eq!(code, 0, "{args:?}: {out}\n{err}");
        assert!(!out.is_empty());
    }
}

#[test]
fn evidence_unavailable_prints_a_json_error_document() {
    let audit = Audit::new();
    // No bundle at all.
    let missing = Audit {
        bundle: audit.bundle.join("no-such-bundle"),
        ..Audit::new()
    };
    let (code, out, err) = missing.verify(None, "json");
    assert_eq!(code, 2, "{out}\n{err}");
    let json = one_valid_document(&out);
    assert_eq!(json["error"]["kind"], json!("evidence-unavailable"));
    // A malformed index: there is nothing to judge, named relative to the bundle.
    let genuine_index = std::fs::read(audit.bundle.join("bundle.json")).unwrap();
    std::fs::write(audit.bundle.join("bundle.json"), b"{").unwrap();
    let (code, out, err) = audit.verify(None, "json");
    assert_eq!(code, 2, "{out}\n{err}");
    let json = one_valid_document(&out);
    let message = json["error"]["message"].as_str().unwrap();
    assert!(message.contains("bundle.json is malformed"), "{message}");
    let (code, out, _) = audit.verify(None, "text");
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    std::fs::write(audit.bundle.join("bundle.json"), genuine_index).unwrap();
    // A malformed task file is forged or broken evidence: a verification failure (exit 1)
    // whose finding names the file relative to the bundle.
    let status = Path::new(audit.fx.b.id.as_str()).join("status.json");
    std::fs::write(audit.bundle.join(&status), b"{").unwrap();
    let (code, out, err) = audit.verify(None, "json");
    assert_eq!(code, 1, "{out}\n{err}");
    let json = one_valid_document(&out);
    // A status belongs to its link's run check.
    let link = json["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["taskId"] == audit.fx.b.id.as_str())
        .unwrap();
    let run = link["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "run")
        .unwrap();
    assert_eq!(run["status"], json!("fail"), "{json}");
    assert!(
        run["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["code"] == "evidence-malformed"
                && f["message"]
                    .as_str()
                    .unwrap()
                    .starts_with(&status.display().to_string())),
        "{json}"
    );

    // The export-only document (online `--export-bundle` without --policy/--keys) is in the
    // schema too.
    let export = chainlock::verify::report::ExportReport {
        report_version: 1,
        exported: chainlock::verify::report::ExportDetail {
            target: audit.fx.s.id.clone(),
            bundle: "evidence/".into(),
        },
    };
    one_valid_document(&export.to_json());
}

#[test]
fn evidence_text_is_escaped_in_text_and_dot() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let fx = Fixture::new();
    let mut built = fx.build(&keys);
    let forged = "worker-1\n    [pass] signature\u{2028}\u{202E}x\0";
    built.statuses.get_mut(&fx.b.id).unwrap().runs[0].worker_id = Some(forged.into());
    let report = built
        .verify_with(&trust, &Limits::default(), WORKER)
        .unwrap_err();
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.code() == "document-mismatch")
    );
    let text = report.to_text();
    assert!(
        text.contains(r"worker-1\n    [pass] signature\u{2028}\u{202E}x\u{0000}"),
        "{text}"
    );
    assert!(!text.contains(['\u{2028}', '\u{202E}', '\0']), "{text}");
    assert!(
        !text.lines().any(|l| l == "    [pass] signature"),
        "a forged line:\n{text}"
    );
    let dot = report.to_dot();
    assert!(!dot.contains(['\u{2028}', '\u{202E}', '\0']), "{dot}");
    // Inside a dot string the evidence's newline stays visible text (`\\n`), never dot's `\n`.
    assert!(
        dot.contains(r"worker-1\\n    [pass] signature\\u{2028}\\u{202E}x\\u{0000}"),
        "{dot}"
    );
    for line in dot.lines() {
        assert!(
            line == "digraph chain_of_trust {" || line == "}" || line.starts_with("  "),
            "a line outside the graph's statements: {line:?}\n{dot}"
        );
    }
    // The JSON keeps the data as it was found.
    let json: Value = serde_json::from_str(&report.to_json()).unwrap();
    assert!(json.to_string().contains("signature\u{2028}"));
}

/// Fields of `status.json` a single change of which the verifier does not (and need not)
/// catch: bookkeeping the chain of trust does not rest on, and times moved within the bounds
/// the checks allow (a second later is still after the start and within the key window).
const STATUS_NOT_COVERED: &[&str] = &[
    "/deadline",
    "/expires",
    "/retriesLeft",
    "/runs/0/reasonCreated",
    "/runs/0/reasonResolved",
    "/runs/0/scheduled",
    "/runs/0/started",
    "/runs/0/resolved",
];

/// Every leaf of a JSON value, as a JSON pointer.
fn leaves(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                leaves(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// One plausible change of a leaf: a time a second later, a number plus one, a flipped
/// boolean, a string with one more character.
fn changed(v: &Value) -> Value {
    match v {
        Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => json!(format_time(t.with_timezone(&Utc) + Duration::seconds(1))),
            Err(_) => json!(format!("{s}x")),
        },
        Value::Number(n) => json!(n.as_i64().map_or(1, |i| i.saturating_add(1))),
        Value::Bool(b) => json!(!b),
        _ => json!("x"),
    }
}

/// The property: any single change to one field of a genuine chain's unsigned evidence
/// (`task.json` and `status.json` of every link) is refused, unless the field is listed in
/// [`STATUS_NOT_COVERED`]. Systematic over every leaf, not sampled.
#[test]
fn every_single_field_change_is_refused_unless_documented() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let fx = Fixture::new();
    let genuine = fx.build(&keys);
    let mut accepted = Vec::new();
    let mut tried = 0;
    for link in fx.links() {
        let id = link.id.clone();
        for file in ["task.json", "status.json"] {
            let value = if file == "task.json" {
                genuine.tasks[&id].clone()
            } else {
                serde_json::to_value(&genuine.statuses[&id]).unwrap()
            };
            let mut pointers = Vec::new();
            leaves(&value, String::new(), &mut pointers);
            for pointer in pointers {
                let mut v = value.clone();
                let leaf = v.pointer_mut(&pointer).unwrap();
                *leaf = changed(leaf);
                let mut b = Built {
                    target: genuine.target.clone(),
                    tasks: genuine.tasks.clone(),
                    statuses: genuine.statuses.clone(),
                    files: genuine.files.clone(),
                    raw: BTreeMap::new(),
                    other: BTreeMap::new(),
                };
                b.raw.insert((id.clone(), file), v.to_string());
                tried += 1;
                // Audit mode: the target's own run and document are judged too.
                let mode = Mode {
                    check_target: true,
                    renderer: &NoRenderer,
                };
                if b.verify_with(&trust, &Limits::default(), mode).is_ok()
                    && !(file == "status.json" && STATUS_NOT_COVERED.contains(&pointer.as_str()))
                {
                    accepted.push(format!(
                        "{} {file} {pointer}",
                        link.link.def["metadata"]["name"]
                    ));
                }
            }
        }
    }
    assert!(tried > 100, "only {tried} changes tried");
    assert!(
        accepted.is_empty(),
        "accepted single-field changes:\n{}",
        accepted.join("\n")
    );
}

/// A graph mismatch names the first differing value by JSON pointer, with both values whole
/// (not cut at 200 characters).
#[test]
fn graph_mismatch_names_the_field_by_pointer_with_both_values() {
    let keys = Keys::new();
    let trust = trust_store(&keys, &GwKeyWindow::default());
    let mut fx = Fixture::new();
    let long = "v".repeat(500);
    let id = fx.b.id.to_string();
    let graph = fx.graph();
    fx.b.def["payload"]["env"]["EXTRA"] = json!("injected");
    let built = fx.build_with_graph(&keys, |g| *g = graph);
    let report = built
        .verify_with(&trust, &Limits::default(), WORKER)
        .expect_err("a changed definition must not verify");
    let mismatch: Vec<String> = report
        .errors
        .iter()
        .filter(|e| e.code() == "graph-mismatch")
        .map(ToString::to_string)
        .collect();
    assert_eq!(mismatch.len(), 1, "one finding per fact: {mismatch:?}");
    let m = &mismatch[0];
    assert!(m.contains(&format!("task {id}: /payload/env/")), "{m}");
    // A key the graph lacks: the graph side is absent.
    assert!(
        m.contains("/payload/env/EXTRA differs") && m.contains("graph absent, task \"injected\""),
        "{m}"
    );
    // A long value is quoted whole.
    let mut fx = Fixture::new();
    let graph = fx.graph();
    fx.b.def["payload"]["env"]["PRODUCT_HEAD_BRANCH"] = json!(long);
    let built = fx.build_with_graph(&keys, |g| *g = graph);
    let report = built
        .verify_with(&trust, &Limits::default(), WORKER)
        .expect_err("a changed definition must not verify");
    let text = report
        .errors
        .iter()
        .find(|e| e.code() == "graph-mismatch")
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(
        text.contains("/payload/env/PRODUCT_HEAD_BRANCH differs")
            && text.contains(&format!("task \"{long}\""))
            && text.contains("graph \"release/1.0\""),
        "{text}"
    );
}
