//! Verification scaling: `verify::verify` over synthetic bundles.
//!
//! The chain is wide, as real release graphs are: a decision task D (generic-worker, signed
//! ed25519, with a task-graph.json describing every child), N-2 build tasks in D's group each
//! producing M artifacts, and the target signing task consuming all of them through
//! `upstreamArtifacts`. Everything is built at run time (fresh keys, nothing committed) and
//! written as a bundle directory, then verified in the worker's mode (target not yet run).
//! The per-link and per-artifact times must stay flat as N grows; the harness prints the
//! scaling exponent k (time ~ items^k) between consecutive sizes and flags k > 1.25.

use super::{Row, Settings, best_of};
use base64::Engine as _;
use chainlock::chain_policy::ChainPolicy;
use chainlock::ids::TaskId;
use chainlock::openpgp;
use chainlock::queue::types::{RunStatus, TaskState, TaskStatus, format_time};
use chainlock::trust::policy::{KeyType, Policy, PolicyFile, RootKey, RootRole, WorkerKey};
use chainlock::trust::{self, PolicyVersion, TrustPin, TrustStore};
use chainlock::verify::bundle::Bundle;
use chainlock::verify::rebuild::NoRenderer;
use chainlock::verify::{self, Limits, Mode};
use chrono::{DateTime, Duration, Utc};
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const REPO: &str = "https://github.com/example/product";

struct Env {
    t0: DateTime<Utc>,
    gw: ed25519_dalek::SigningKey,
    trust: TrustStore,
    policy: ChainPolicy,
}

impl Env {
    fn new() -> Env {
        let t = chainlock::clock::now() - Duration::hours(1);
        let t0 = DateTime::from_timestamp(t.timestamp(), 0).expect("whole seconds are in range");
        let gw = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let root =
            openpgp::generate_key("root <root@example.invalid>", t0 - Duration::days(10), None)
                .expect("root key");
        let mut workers = BTreeMap::new();
        workers.insert(
            "generic-worker".to_owned(),
            vec![WorkerKey {
                name: "gw-bench".into(),
                key_type: KeyType::Ed25519,
                fingerprint: None,
                cert: None,
                public_key: Some(
                    base64::engine::general_purpose::STANDARD.encode(gw.verifying_key().to_bytes()),
                ),
                valid_from: t0 - Duration::days(5),
                valid_until: t0 + Duration::days(300),
                revocation: None,
            }],
        );
        let file = PolicyFile {
            version: 1,
            expires: t0 + Duration::days(365),
            root: RootRole {
                threshold: 1,
                keys: vec![RootKey {
                    name: "root".into(),
                    fingerprint: root.fingerprint(),
                    cert: String::from_utf8(root.public_cert_armored().expect("armor"))
                        .expect("armor is ASCII"),
                }],
            },
            workers,
        };
        let bytes = Policy::to_toml(&file).expect("policy toml").into_bytes();
        let sig = openpgp::sign_detached_armored(&root, &bytes, t0 - Duration::days(1))
            .expect("root signature");
        let pin = TrustPin {
            version: 1,
            sha256: trust::sha256_hex(&bytes),
        };
        let version = PolicyVersion {
            source: "bench".into(),
            bytes,
            signatures: vec![sig],
        };
        let trust = TrustStore::from_versions(&pin, &[version], now(t0), &trust::Limits::default())
            .expect("trust store");
        let policy_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/chain-policy.example.toml");
        let policy = ChainPolicy::load(&policy_path).expect("example chain policy");
        Env {
            t0,
            gw,
            trust,
            policy,
        }
    }
}

fn now(t0: DateTime<Utc>) -> DateTime<Utc> {
    t0 + Duration::hours(2)
}

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

fn task_def(
    t0: DateTime<Utc>,
    group: &TaskId,
    worker_type: &str,
    name: &str,
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
        "created": format_time(t0),
        "deadline": format_time(t0 + Duration::days(1)),
        "expires": format_time(t0 + Duration::days(365)),
        "scopes": [],
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

fn status(t0: DateTime<Utc>, id: &TaskId, group: &TaskId, worker_type: &str) -> TaskStatus {
    TaskStatus {
        task_id: id.clone(),
        provisioner_id: "example-3".into(),
        worker_type: worker_type.into(),
        task_queue_id: None,
        scheduler_id: None,
        project_id: None,
        task_group_id: group.clone(),
        priority: None,
        deadline: t0 + Duration::days(1),
        expires: t0 + Duration::days(365),
        retries_left: 5,
        state: TaskState::Completed,
        runs: vec![RunStatus {
            run_id: 0,
            state: TaskState::Completed,
            reason_created: "scheduled".into(),
            reason_resolved: Some("completed".into()),
            worker_group: Some("wg".into()),
            worker_id: Some("worker-1".into()),
            taken_until: None,
            scheduled: t0,
            started: Some(t0 + Duration::minutes(1)),
            resolved: Some(t0 + Duration::hours(1)),
        }],
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir in bundle");
    }
    std::fs::write(path, bytes).expect("write bundle file");
}

/// Writes a completed, signed generic-worker link (task, status, artifacts, document).
fn write_link(
    env: &Env,
    dir: &Path,
    id: &TaskId,
    def: &Value,
    outputs: &BTreeMap<String, Vec<u8>>,
) {
    let t0 = env.t0;
    let group = TaskId::parse(def["taskGroupId"].as_str().expect("built with a group"))
        .expect("built with a slugid");
    let worker_type = def["workerType"].as_str().expect("built with a workerType");
    let base = dir.join(id.as_str());
    write(&base.join("task.json"), def.to_string().as_bytes());
    let st = serde_json::to_vec(&status(t0, id, &group, worker_type)).expect("status json");
    write(&base.join("status.json"), &st);
    let artifacts: serde_json::Map<String, Value> = outputs
        .iter()
        .map(|(k, v)| (k.clone(), json!({"sha256": sha256(v)})))
        .collect();
    let doc = json!({
        "chainOfTrustVersion": 1,
        "artifacts": artifacts,
        "task": def,
        "taskId": id.as_str(),
        "runId": 0,
        "workerGroup": "wg",
        "workerId": "worker-1",
        "workerType": worker_type,
        "environment": {},
    });
    let doc_bytes = serde_json::to_vec_pretty(&doc).expect("doc json");
    for (name, bytes) in outputs {
        write(&base.join("artifacts").join(name), bytes);
    }
    let sig = env.gw.sign(&doc_bytes).to_bytes();
    write(&base.join("artifacts/public/chain-of-trust.json.sig"), &sig);
    write(
        &base.join("artifacts/public/chain-of-trust.json"),
        &doc_bytes,
    );
}

/// Writes a bundle of `links` tasks (decision + builds + target), each build with `per_link`
/// artifacts. Returns the target.
fn write_bundle(env: &Env, dir: &Path, links: usize, per_link: usize) -> TaskId {
    let t0 = env.t0;
    let d = TaskId::generate();
    let s = TaskId::generate();
    let builds: Vec<TaskId> = (0..links.saturating_sub(2))
        .map(|_| TaskId::generate())
        .collect();
    let mut graph = serde_json::Map::new();
    let mut in_graph = |id: &TaskId, def: &Value| {
        let mut task = def.clone();
        if let Some(o) = task.as_object_mut() {
            o.remove("taskGroupId");
            o.remove("schedulerId");
            o.remove("taskQueueId");
        }
        graph.insert(
            id.to_string(),
            json!({"label": def["metadata"]["name"], "task": task}),
        );
    };

    let mut upstream = Vec::new();
    for (i, b) in builds.iter().enumerate() {
        let def = task_def(
            t0,
            &d,
            "b-linux",
            &format!("build {i}"),
            json!({"env": repo_env(), "features": {"chainOfTrust": true}}),
        );
        let outputs: BTreeMap<String, Vec<u8>> = (0..per_link)
            .map(|j| {
                (
                    format!("public/build/part-{j}.bin"),
                    format!("build {i} part {j}").into_bytes(),
                )
            })
            .collect();
        upstream.push(json!({
            "taskId": b.as_str(),
            "taskType": "build",
            "paths": outputs.keys().collect::<Vec<_>>(),
        }));
        write_link(env, dir, b, &def, &outputs);
        in_graph(b, &def);
    }
    let mut s_def = task_def(
        t0,
        &d,
        "signing",
        "sign the builds",
        json!({"upstreamArtifacts": upstream, "env": repo_env()}),
    );
    s_def["dependencies"] = json!(builds.iter().map(TaskId::as_str).collect::<Vec<_>>());
    write(
        &dir.join(s.as_str()).join("task.json"),
        s_def.to_string().as_bytes(),
    );
    in_graph(&s, &s_def);

    let d_def = task_def(
        t0,
        &d,
        "decision",
        "Decision Task",
        json!({"image": format!("example/decision@sha256:{}", "ab".repeat(32)), "env": repo_env()}),
    );
    let outputs = BTreeMap::from([(
        "public/task-graph.json".to_owned(),
        serde_json::to_vec_pretty(&Value::Object(graph)).expect("graph json"),
    )]);
    write_link(env, dir, &d, &d_def, &outputs);

    let mut tasks = vec![d.as_str(), s.as_str()];
    tasks.extend(builds.iter().map(TaskId::as_str));
    let index = json!({"bundleVersion": 1, "target": s.as_str(), "tasks": tasks});
    write(&dir.join("bundle.json"), index.to_string().as_bytes());
    s
}

/// Verifies bundles of growing size; prints time per link and per artifact.
pub fn scaling(s: &Settings) -> Vec<Row> {
    let env = Env::new();
    let cases: &[(usize, usize)] = if s.quick {
        &[(10, 1), (100, 1), (300, 1), (10, 20)]
    } else {
        &[
            (10, 1),
            (100, 1),
            (1000, 1),
            (3000, 1),
            (10, 100),
            (100, 10),
        ]
    };
    let limits = Limits {
        max_links: 5000,
        max_upstream_artifacts: 10_000,
        ..Limits::default()
    };
    let mut rows = Vec::new();
    let mut previous: BTreeMap<usize, (usize, f64)> = BTreeMap::new();
    for &(links, per_link) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = write_bundle(&env, dir.path(), links, per_link);
        let open_start = Instant::now();
        let bundle = Bundle::open(dir.path(), &limits).expect("bundle opens");
        let open_took = open_start.elapsed();
        let reps = if links >= 1000 { 1 } else { 3 };
        let (took, result) = best_of(reps, || {
            verify::verify(
                &bundle,
                &target,
                &env.policy,
                &env.trust,
                now(env.t0),
                &limits,
                Mode {
                    check_target: false,
                    renderer: &NoRenderer,
                },
            )
        });
        let verified = match &result {
            Ok(chain) => chain.files().len(),
            Err(report) => {
                let findings: Vec<String> = report
                    .chain_findings
                    .iter()
                    .map(|f| format!("{}: {}", f.code, f.message))
                    .chain(report.links.iter().flat_map(|l| {
                        l.checks
                            .iter()
                            .flat_map(|c| c.findings.iter())
                            .map(|f| format!("{}: {}", f.code, f.message))
                    }))
                    .take(5)
                    .collect();
                panic!("the synthetic chain must verify: {findings:#?}");
            }
        };
        let artifacts = (links - 2) * per_link;
        // Work items: every link is hashed and signature-checked, every artifact hashed.
        let items = links + artifacts;
        let per_item = took.as_secs_f64() / items as f64;
        // Scaling exponent against the previous case with the same artifacts per link:
        // time ~ N^k; k near 1 is linear, k near 2 quadratic.
        let exponent = previous.get(&per_link).map(|&(n0, t0): &(usize, f64)| {
            (took.as_secs_f64() / t0).ln() / (items as f64 / n0 as f64).ln()
        });
        previous.insert(per_link, (items, took.as_secs_f64()));
        let scaling = match exponent {
            Some(k) if k > 1.25 => format!("time ~ items^{k:.2} SUPERLINEAR"),
            Some(k) => format!("time ~ items^{k:.2}"),
            None => "baseline".into(),
        };
        rows.push(Row {
            name: format!("verify N={links} links M={per_link}/link"),
            time: took,
            rate: format!("{:.1} µs/link", took.as_secs_f64() * 1e6 / links as f64),
            rss: None,
            note: format!(
                "{verified} files; {:.1} µs/(link+artifact); {scaling}; open {:.1} ms",
                per_item * 1e6,
                open_took.as_secs_f64() * 1e3
            ),
        });
    }
    rows
}
