//! Worker integration tests: the real `chainlock` binary against an in-process dev queue over
//! loopback, with a real test script (python3) whose behaviour each task's payload selects.
//!
//! Every task the script should run gets a real, verifiable chain, seeded at run time with
//! `chainlock::demo::seed`: run-time keys and a root-signed trust store, a decision task whose
//! signed `task-graph.json` lists the tasks, and a build task whose signed document lists the
//! artifact the task consumes. Failing cases mutate that evidence.

mod common;

use chainlock::demo::seed::{self, CERT_NAME, Chain, Evidence, Link, Material, SEED_RUN};
use chainlock::ids::TaskId;
use chainlock::queue::types::{
    ClaimWorkRequest, CreateArtifactRequest, CreateArtifactResponse, ExceptionReason, TaskState,
};
use chainlock::queue::{Credentials, RetryPolicy};
use chainlock::secret::Secret;
use chainlock::trust::CotSignature;
use common::worker_env::{
    MAX_RUN_TIME, Options, UPSTREAM_ARTIFACTS, WorkerEnv, chainlock_bin, now, payload_schema,
    set_exec, stderr, wait_output,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "permanent-TOKEN-do-not-leak-4242";

/// The test script: behaviour chosen by `payload.behaviour`.
const SCRIPT: &str = r#"#!/usr/bin/env python3
import json, os, signal, subprocess, sys, time
work = os.environ["CHAINLOCK_WORK_DIR"]; out = os.environ["CHAINLOCK_ARTIFACT_DIR"]
task = json.load(open(os.path.join(work, "task.json")))
p = task["payload"]; b = p.get("behaviour", "ok")
os.makedirs(os.path.join(out, "public"), exist_ok=True)
def art(name, text):
    path = os.path.join(out, name); os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(text)
art("public/result.txt", "result of " + os.environ["TASK_ID"] + "\n")
art("public/env.json", json.dumps(dict(os.environ), sort_keys=True))
print("behaviour", b, flush=True)
if "marker" in p: open(p["marker"], "w").write(str(os.getpid()))
if b == "identity":
    def probe(path):
        try:
            open(path, "rb").read(1); return "readable"
        except OSError:
            return "denied"
    manifest = json.load(open(os.path.join(work, "cot", "manifest.json")))
    art("public/identity.json", json.dumps({"uid": os.getuid(), "gid": os.getgid(),
        "groups": os.getgroups(), "probe": probe(p["probe"]),
        "verified": [a["path"] for a in manifest["artifacts"]]}))
if b == "exit": sys.exit(p["code"])
if b == "kill": os.kill(os.getpid(), signal.SIGKILL)
if b == "sleep": time.sleep(p["secs"])
if b == "tree":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kids = [subprocess.Popen(["sh", "-c", "trap '' TERM; sleep 120 & echo $!; wait"], stdout=subprocess.PIPE) for _ in range(2)]
    pids = [str(k.pid) for k in kids] + [k.stdout.readline().decode().strip() for k in kids]
    open(p["pids"], "w").write("\n".join(pids))
    time.sleep(120)
if b == "symlink":
    os.symlink("/etc/passwd", os.path.join(out, "public", "passwd"))
if b == "shell":
    r = subprocess.run(["sh", "-c", p["sh"]])
    sys.exit(p.get("code", r.returncode))
if b == "probes":
    def state(path):
        try:
            if os.path.isdir(path): os.listdir(path)
            else: open(path, "rb").read(1)
            return "readable"
        except FileNotFoundError:
            return "absent"
        except OSError:
            return "denied"
    art("public/probes.json", json.dumps({path: state(path) for path in p["paths"]}))
if b == "longline":
    sys.stdout.buffer.write(b"A" * 100000 + b"\n" + b"bad \xff\xfe utf8\n" + b"no newline at end")
    sys.stdout.flush()
"#;

/// The test script's own payload properties (its schema is strict, like the shipped ones).
const PAYLOAD_PROPERTIES: &str = r#""behaviour": {"enum": ["ok", "exit", "kill", "sleep", "tree", "symlink", "longline", "identity", "shell", "probes"]},
    "sh": {"type": "string"},
    "paths": {"type": "array", "items": {"type": "string"}},
    "code": {"type": "integer"},
    "secs": {"type": "number"},
    "marker": {"type": "string"},
    "pids": {"type": "string"},
    "probe": {"type": "string"}"#;

fn sha256(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

type Env = WorkerEnv;

impl Env {
    async fn new(claim_timeout: Duration) -> Env {
        Env::with_queue(claim_timeout, |_| {}).await
    }

    /// Creates one `ok` task, runs the worker for one task and checks that it completed;
    /// returns the task and the worker's output.
    async fn run_one_completed(&self) -> (TaskId, std::process::Output) {
        let id = self.create(json!({"behaviour": "ok"})).await;
        let out = self.run_worker(1).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(
            self.last_run(&id).await.0,
            TaskState::Completed,
            "{}",
            stderr(&out)
        );
        (id, out)
    }

    /// As [`Env::new`], with the dev queue's config changed by `configure`.
    async fn with_queue(
        claim_timeout: Duration,
        configure: impl FnOnce(&mut chainlock::devqueue::DevQueueConfig),
    ) -> Env {
        WorkerEnv::start_in(
            tempfile::tempdir().unwrap(),
            Options {
                token: TOKEN,
                script: SCRIPT,
                payload_schema: payload_schema(&[
                    PAYLOAD_PROPERTIES,
                    MAX_RUN_TIME,
                    UPSTREAM_ARTIFACTS,
                ]),
                claim_timeout: Some(claim_timeout),
                claim_work_timeout: Duration::from_secs(2),
                queue_extra: "",
                timing: (0, 0, 1),
                config_tail: String::new(),
            },
            configure,
        )
        .await
    }

    /// One task with a chain whose decision task's `public/task-graph.json` is a reference
    /// artifact to `url` (a dead port, a trickling server): everything else verifies.
    async fn seed_with_graph_at(&self, payload: Value, url: &str) -> TaskId {
        let (chain, tasks, mut evidence) = self.prepare_chain(vec![payload], |_, _| {}).await;
        evidence
            .remove(&chain.decision.id, seed::TASK_GRAPH)
            .unwrap();
        publish_with_graph_at(
            self,
            &chain.decision,
            &evidence.files[&chain.decision.id],
            url,
        )
        .await;
        seed::run_as_worker(
            &self.client,
            &chain.build,
            &evidence.files[&chain.build.id],
            SEED_RUN,
            &self.dir.join("scratch"),
        )
        .await
        .unwrap();
        tasks[0].id.clone()
    }

    async fn download(&self, id: &TaskId, name: &str) -> Vec<u8> {
        let dest = self.dir.join(format!("dl-{}", rand_suffix()));
        self.client
            .get_latest_artifact_to_file(id, name, &dest, 10 << 20)
            .await
            .unwrap();
        std::fs::read(dest).unwrap()
    }

    /// The trust store's verdict on a chainlock document signature (key name, key id).
    fn accept_cot_signature(&self, doc: &[u8], sig: CotSignature<'_>) -> (String, String) {
        let accepted = self
            .material
            .trust_store(now())
            .unwrap()
            .verify_cot_signature("chainlock", doc, sig, now(), chrono::Duration::minutes(5))
            .unwrap();
        (accepted.key_name, accepted.key_id)
    }

    async fn task_log(&self, id: &TaskId) -> String {
        String::from_utf8(self.download(id, "public/logs/live_backing.log").await).unwrap()
    }
}

fn rand_suffix() -> String {
    TaskId::generate().to_string()
}

async fn wait_for_file(p: &Path) {
    common::worker_env::wait_for_file(p, Duration::from_secs(30)).await
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_task_is_signed_uploads_everything_and_leaks_no_secret() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let id = env
        .create(json!({"behaviour": "ok", "maxRunTime": 60}))
        .await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        env.artifact_names(&id).await,
        [
            "public/chain-of-trust.json",
            "public/chain-of-trust.json.asc",
            "public/env.json",
            "public/logs/chain_of_trust.log",
            "public/logs/live.log",
            "public/logs/live_backing.log",
            "public/result.txt"
        ]
    );
    let log = env.task_log(&id).await;
    assert!(log.contains("behaviour ok"), "{log}");
    assert!(log.contains("[chainlock] exit code: 0"), "{log}");
    assert!(log.contains("trust policy version 1 in force"), "{log}");
    assert!(log.contains("chain of trust verified"), "{log}");
    let via_link = env.download(&id, "public/logs/live.log").await;
    assert_eq!(via_link, log.as_bytes());
    let chain_log =
        String::from_utf8(env.download(&id, "public/logs/chain_of_trust.log").await).unwrap();
    assert!(chain_log.contains("VERIFIED"), "{chain_log}");

    // chain-of-trust.json: canonical, schema-valid, describing this run, listing every artifact
    // and both logs with the sha256 of the bytes a downloader gets.
    let doc_bytes = env.download(&id, "public/chain-of-trust.json").await;
    let doc_value: Value = serde_json::from_slice(&doc_bytes).unwrap();
    assert_eq!(
        chainlock::cot::to_canonical_json(&doc_value).unwrap(),
        doc_bytes,
        "not canonical"
    );
    let doc = chainlock::cot::parse_and_validate(&doc_bytes).unwrap();
    assert_eq!(doc.task_id, id);
    assert_eq!(doc.run_id, 0);
    assert_eq!(doc.worker_type.as_deref(), Some("signing"));
    assert_eq!(
        (doc.worker_group.as_str(), doc.worker_id.as_str()),
        ("wg", "w1")
    );
    assert_eq!(doc.task, env.client.task(&id).await.unwrap());
    let listed: Vec<&str> = doc.artifacts.keys().map(String::as_str).collect();
    assert_eq!(
        listed,
        [
            "public/env.json",
            "public/logs/chain_of_trust.log",
            "public/logs/live_backing.log",
            "public/result.txt"
        ]
    );
    for (name, digest) in &doc.artifacts {
        assert_eq!(&sha256(&env.download(&id, name).await), digest, "{name}");
    }

    // The signature verifies through the trust store for our worker implementation, and with
    // GnuPG against the exported certificate.
    let asc = env.download(&id, "public/chain-of-trust.json.asc").await;
    let (_, key_id) = env.accept_cot_signature(&doc_bytes, CotSignature::OpenPgpArmored(&asc));
    assert_eq!(key_id, env.material.worker_fingerprint);
    gpg_verify(&env, &doc_bytes, &asc);

    // The script's environment: nothing but the allowlist and the task variables.
    let script_env: Value =
        serde_json::from_slice(&env.download(&id, "public/env.json").await).unwrap();
    let names: Vec<&str> = script_env
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for n in &names {
        assert!(
            [
                "PATH",
                "TASK_ID",
                "RUN_ID",
                "TASKCLUSTER_ROOT_URL",
                "CHAINLOCK_WORK_DIR",
                "CHAINLOCK_ARTIFACT_DIR",
                "PWD",
                "LC_CTYPE"
            ]
            .contains(n),
            "unexpected variable {n} in the script's environment"
        );
    }
    assert_eq!(script_env["TASK_ID"], id.as_str());

    // Secret grep: worker log, task log, local log copy, every uploaded artifact. Secrets: the
    // permanent token, credential documents, putUrls and the signing key's armored secret.
    let mut haystacks = vec![
        stderr(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ];
    for name in env.artifact_names(&id).await {
        haystacks.push(String::from_utf8_lossy(&env.download(&id, &name).await).into_owned());
    }
    for entry in std::fs::read_dir(env.dir.join("logs")).unwrap() {
        haystacks.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let secret_key = std::fs::read_to_string(&env.material.worker_key).unwrap();
    let secret_lines: Vec<&str> = secret_key
        .lines()
        .filter(|l| l.len() >= 40 && !l.starts_with("-----") && !l.contains(':'))
        .collect();
    assert!(secret_lines.len() >= 3, "{secret_key}");
    let status = env.client.status(&id).await.unwrap();
    assert_eq!(status.runs.len(), 1);
    for h in &haystacks {
        assert!(!h.contains(TOKEN), "permanent token leaked");
        assert!(!h.contains("accessToken"), "a credentials document leaked");
        assert!(
            !h.contains("putUrl") && !h.contains("token="),
            "a putUrl leaked"
        );
        assert!(!h.contains("PRIVATE KEY BLOCK"), "a private key leaked");
        for line in &secret_lines {
            assert!(!h.contains(line), "signing key material leaked");
        }
    }
    env.stop().await;
}

/// `gpg --verify` of our detached signature with the worker's exported certificate.
#[allow(clippy::disallowed_methods)]
fn gpg_verify(env: &Env, doc: &[u8], asc: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    let home = env.dir.join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(home.join("doc.json"), doc).unwrap();
    std::fs::write(home.join("doc.json.asc"), asc).unwrap();
    let gpg = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--no-tty"])
            .args(args)
            .output()
            .unwrap()
    };
    let import = gpg(&["--import".as_ref(), env.material.worker_cert.as_os_str()]);
    assert!(import.status.success(), "{}", stderr(&import));
    let verify = gpg(&[
        "--verify".as_ref(),
        home.join("doc.json.asc").as_os_str(),
        home.join("doc.json").as_os_str(),
    ]);
    assert!(verify.status.success(), "{}", stderr(&verify));
    assert!(
        stderr(&verify).contains("Good signature"),
        "{}",
        stderr(&verify)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_codes_and_signal_deaths_map_to_outcomes() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let table: Vec<(Value, TaskState, &str)> = vec![
        (
            json!({"behaviour": "exit", "code": 1}),
            TaskState::Failed,
            "failed",
        ),
        (
            json!({"behaviour": "exit", "code": 2}),
            TaskState::Exception,
            ExceptionReason::WorkerShutdown.as_str(),
        ),
        (
            json!({"behaviour": "exit", "code": 3}),
            TaskState::Exception,
            "malformed-payload",
        ),
        (
            json!({"behaviour": "exit", "code": 4}),
            TaskState::Exception,
            "resource-unavailable",
        ),
        (
            json!({"behaviour": "exit", "code": 5}),
            TaskState::Exception,
            "internal-error",
        ),
        (
            json!({"behaviour": "exit", "code": 6}),
            TaskState::Failed,
            "failed",
        ),
        (
            json!({"behaviour": "exit", "code": 7}),
            TaskState::Exception,
            "intermittent-task",
        ),
        (
            json!({"behaviour": "exit", "code": 42}),
            TaskState::Failed,
            "failed",
        ),
        (json!({"behaviour": "kill"}), TaskState::Failed, "failed"),
    ];
    let ids = env
        .seed(table.iter().map(|(p, _, _)| p.clone()).collect(), |_, _| {})
        .await;
    let out = env.run_worker(table.len() as u32).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for (id, (payload, state, reason)) in ids.iter().zip(&table) {
        let (s, r) = env.last_run(id).await;
        assert_eq!((s, r.as_deref()), (*state, Some(*reason)), "{payload}");
        // Artifacts, the logs and the signed document whatever the exit code.
        let names = env.artifact_names(id).await;
        for name in [
            "public/logs/live_backing.log",
            "public/chain-of-trust.json",
            "public/chain-of-trust.json.asc",
        ] {
            assert!(names.contains(&name.to_owned()), "{payload}: {names:?}");
        }
    }
    let log6 =
        String::from_utf8(env.download(&ids[5], "public/logs/live_backing.log").await).unwrap();
    assert!(log6.contains("superseded"), "{log6}");
    let log_kill =
        String::from_utf8(env.download(&ids[8], "public/logs/live_backing.log").await).unwrap();
    assert!(log_kill.contains("killed by signal SIGKILL"), "{log_kill}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeout_kills_the_whole_tree() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let pids = env.dir.join("pids");
    let id = env
        .create(json!({"behaviour": "tree", "maxRunTime": 2, "pids": pids}))
        .await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Failed, Some("failed".into()))
    );
    let pids = std::fs::read_to_string(&pids).unwrap();
    assert_eq!(pids.lines().count(), 4, "{pids}");
    for pid in pids.lines() {
        assert!(!alive(pid), "process {pid} survived the timeout");
    }
    let log = String::from_utf8(env.download(&id, "public/logs/live_backing.log").await).unwrap();
    assert!(log.contains("exceeded max run time of 2 seconds"), "{log}");
    // No chain-of-trust document after a timeout (as the reference).
    let names = env.artifact_names(&id).await;
    assert!(
        !names.contains(&"public/chain-of-trust.json".to_owned()),
        "{names:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reclaim_keeps_a_short_claim_alive() {
    let env = Env::new(Duration::from_secs(3)).await;
    let id = env.create(json!({"behaviour": "sleep", "secs": 7})).await;
    let out = env.run_worker(1).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    // Without reclaims the 3 s claim would have expired (claim-expired, report refused).
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into()))
    );
    assert!(
        log.matches("reclaimed; task credentials replaced").count() >= 2,
        "{log}"
    );
    env.stop().await;
}

/// Issue 11: reclaim retried on the client's general backoff (delays growing to 30 s), so a
/// queue that came back shortly before `takenUntil` was tried again only after the claim had
/// expired. Reclaim attempts now follow the time the claim has left. The queue is unreachable
/// from the first reclaim until 1.5 s before expiry; the task must still complete.
#[tokio::test(flavor = "multi_thread")]
async fn reclaim_retries_follow_the_claim_not_the_backoff() {
    let env = Env::new(Duration::from_secs(10)).await;
    let proxy = common::FaultProxy::start(&env.root_url).await;
    let text = env
        .config_text("")
        .replace(&env.root_url, &proxy.url)
        .replace("reclaim_margin_secs = 1", "reclaim_margin_secs = 7");
    std::fs::write(env.dir.join("worker.toml"), text).unwrap();
    let marker = env.dir.join("started");
    let id = env
        .create(json!({"behaviour": "sleep", "secs": 12, "marker": marker}))
        .await;
    let child = env.spawn_worker(&["--max-tasks", "1"]);
    wait_for_file(&marker).await;
    proxy.set_down(true);
    let taken_until = env.client.status(&id).await.unwrap().runs[0]
        .taken_until
        .unwrap();
    let back = (taken_until - now() - chrono::Duration::milliseconds(1500))
        .to_std()
        .unwrap();
    tokio::time::sleep(back).await;
    proxy.set_down(false);
    let out = wait_output(child).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{log}"
    );
    assert!(
        log.contains("reclaim failing and the claim is at risk"),
        "{log}"
    );
    env.stop().await;
}

/// How a running task is taken away from the worker from outside.
#[derive(Clone, Copy)]
enum TakenAway {
    /// Resolved with the permanent (`*`) credentials.
    ReportedFailed,
    /// The production path: someone cancels the task.
    Cancelled,
}

/// The run is taken away while its script sleeps: the worker's next reclaim gets 409, the
/// script dies, nothing is uploaded or reported, and the run keeps the outsider's resolution.
async fn a_lost_run_kills_the_script(how: TakenAway, expected: (TaskState, &str)) {
    let env = Env::new(Duration::from_secs(3)).await;
    let marker = env.dir.join("started");
    let id = env
        .create(json!({"behaviour": "sleep", "secs": 60, "marker": marker}))
        .await;
    let child = env.spawn_worker(&["--max-tasks", "1"]);
    wait_for_file(&marker).await;
    match how {
        TakenAway::ReportedFailed => {
            env.client.report_failed(&id, 0).await.unwrap();
        }
        TakenAway::Cancelled => {
            env.client.cancel_task(&id).await.unwrap();
        }
    }
    let out = wait_output(child).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("reclaim refused (409)"), "{log}");
    let pid = std::fs::read_to_string(&marker).unwrap();
    assert!(!alive(&pid), "the script survived the lost claim");
    assert_eq!(
        env.last_run(&id).await,
        (expected.0, Some(expected.1.into()))
    );
    assert!(env.artifact_names(&id).await.is_empty());
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reclaim_conflict_kills_the_script_and_reports_nothing() {
    a_lost_run_kills_the_script(TakenAway::ReportedFailed, (TaskState::Failed, "failed")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_task_kills_the_script_and_reports_nothing() {
    a_lost_run_kills_the_script(TakenAway::Cancelled, (TaskState::Exception, "canceled")).await;
}

/// Issue 11: after a claim is lost, nothing more goes to that run. Someone resolves the run
/// while its script finishes, long before the worker's next reclaim (a 20-minute claim), so
/// the worker learns of it only from the queue's 409 on the first wave's createArtifact. The
/// second wave (live.log, the chain-of-trust document's and signatures' bytes) and the report
/// must not reach the queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_lost_before_the_uploads_gets_no_second_wave_and_no_report() {
    let env = Env::with_queue(Duration::from_secs(1200), |cfg| cfg.record_requests = true).await;
    let marker = env.dir.join("started");
    let id = env
        .create(json!({"behaviour": "sleep", "secs": 2, "marker": marker}))
        .await;
    let child = env.spawn_worker(&["--max-tasks", "1"]);
    wait_for_file(&marker).await;
    env.client.report_failed(&id, 0).await.unwrap();
    let out = wait_output(child).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("createArtifact refused (409)"), "{log}");
    assert!(log.contains("run lost"), "{log}");
    assert!(
        !log.contains("reclaim refused"),
        "no reclaim was due: {log}"
    );
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Failed, Some("failed".into()))
    );
    let requests = env.queue.as_ref().unwrap().requests();
    let run_path = format!("/api/queue/v1/task/{id}/runs/0/");
    let to_run: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "POST" && r.path.starts_with(&run_path))
        .map(|r| r.path[run_path.len()..].to_owned())
        .collect();
    // The first wave's createArtifact calls (the listed files, and our document's and
    // signatures' reservations) were all refused; no bytes went to the run.
    let uploads = format!("/dev-queue/upload/{id}/0/");
    assert!(
        !requests.iter().any(|r| r.path.starts_with(&uploads)),
        "bytes uploaded to a lost run: {requests:?}"
    );
    // Our own reportFailed, and the first wave's createArtifact calls (all started together,
    // each refused); nothing of the second wave and no report from the worker.
    assert_eq!(
        to_run.iter().filter(|p| *p == "failed").count(),
        1,
        "{to_run:?}"
    );
    for path in &to_run {
        assert!(
            path == "failed" || path.starts_with("artifacts/"),
            "{to_run:?}"
        );
        assert!(
            !path.contains("live.log"),
            "{path} after the loss: {to_run:?}"
        );
    }
    assert!(
        to_run.iter().any(|p| p.starts_with("artifacts/")),
        "the first wave was tried: {to_run:?}"
    );
    assert!(env.artifact_names(&id).await.is_empty());
    env.stop().await;
}

/// Our chain-of-trust document and its signature are created alongside the files they list
/// (one round trip saved), but their bytes go up only once every listed file is up, and never
/// when one of them failed: a reader who finds the document finds everything it lists.
#[tokio::test(flavor = "multi_thread")]
async fn the_document_goes_up_after_everything_it_lists_and_never_without_them() {
    let env = Env::with_queue(Duration::from_secs(1200), |cfg| cfg.record_requests = true).await;
    let (id, _) = env.run_one_completed().await;
    let requests = env.queue.as_ref().unwrap().requests();
    let uploads = format!("/dev-queue/upload/{id}/0/");
    let puts: Vec<_> = requests
        .iter()
        .filter(|r| r.method == "PUT" && r.path.starts_with(&uploads))
        .map(|r| {
            (
                r.path[uploads.len()..].replace("%2F", "/"),
                r.started,
                r.finished,
            )
        })
        .collect();
    let is_document = |n: &str| n.starts_with("public/chain-of-trust.json");
    let listed_done = puts
        .iter()
        .filter(|(n, ..)| !is_document(n))
        .map(|(_, _, finished)| *finished)
        .max()
        .unwrap();
    let documents: Vec<_> = puts.iter().filter(|(n, ..)| is_document(n)).collect();
    assert_eq!(documents.len(), 2, "{puts:?}");
    for (name, started, _) in &documents {
        assert!(
            *started >= listed_done,
            "{name} went up before a file it lists: {puts:?}"
        );
    }
    let listed: Vec<_> = puts.iter().filter(|(n, ..)| !is_document(n)).collect();
    for name in [
        "public/result.txt",
        "public/logs/chain_of_trust.log",
        "public/logs/live_backing.log",
    ] {
        assert!(listed.iter().any(|(n, ..)| n == name), "{name}: {puts:?}");
    }
    env.stop().await;

    // One listed file refused by the store: the run is not completed and the document is
    // neither uploaded nor left behind as a readable artifact.
    let env = Env::with_queue(Duration::from_secs(1200), |cfg| {
        cfg.refuse_uploads_of = Some("public/result.txt".into());
    })
    .await;
    let id = env.create(json!({"behaviour": "ok"})).await;
    let out = env.run_worker(1).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert_ne!(env.last_run(&id).await.0, TaskState::Completed, "{log}");
    assert!(log.contains("not publishing chain-of-trust.json"), "{log}");
    for name in [
        "public/chain-of-trust.json",
        "public/chain-of-trust.json.asc",
    ] {
        let got = env
            .client
            .get_artifact_to_file(&id, 0, name, &env.dir.join("fetched"), 1 << 20)
            .await;
        assert!(
            got.is_err(),
            "{name} readable from a run missing a file it lists"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_uploads_and_reports_worker_shutdown() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let marker = env.dir.join("started");
    let id = env
        .create(json!({"behaviour": "sleep", "secs": 60, "marker": marker}))
        .await;
    let child = env.spawn_worker(&[]);
    wait_for_file(&marker).await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = wait_output(child).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Exception, Some("worker-shutdown".into()))
    );
    let names = env.artifact_names(&id).await;
    assert!(names.contains(&"public/result.txt".to_owned()), "{names:?}");
    assert!(
        names.contains(&"public/logs/live_backing.log".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"public/chain-of-trust.json".to_owned()),
        "signed after a shutdown: {names:?}"
    );
    let script_pid = std::fs::read_to_string(&marker).unwrap();
    assert!(!alive(&script_pid));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_finishes_the_current_task_then_exits() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let marker = env.dir.join("started");
    let first = env
        .create(json!({"behaviour": "sleep", "secs": 2, "marker": marker}))
        .await;
    let child = env.spawn_worker(&[]);
    wait_for_file(&marker).await;
    let second = env.create(json!({"behaviour": "ok"})).await;
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
    let out = wait_output(child).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.last_run(&first).await.0, TaskState::Completed);
    let s = env.client.status(&second).await.unwrap();
    assert_eq!(
        s.state,
        TaskState::Pending,
        "the worker claimed after SIGUSR1"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_claim_is_reported_and_the_worker_keeps_serving() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let bad = env.create_unchained(json!({"maxRunTime": "soon"})).await;
    let good = env.create(json!({"behaviour": "ok"})).await;
    let out = env.run_worker(2).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&bad).await,
        (TaskState::Exception, Some("malformed-payload".into()))
    );
    let log = String::from_utf8(env.download(&bad, "public/logs/live_backing.log").await).unwrap();
    assert!(log.contains("maxRunTime"), "{log}");
    assert!(
        !log.contains("running"),
        "the script ran for a malformed task: {log}"
    );
    assert_eq!(env.last_run(&good).await.0, TaskState::Completed);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn symlink_escape_is_refused_and_fails_the_task() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let id = env.create(json!({"behaviour": "symlink"})).await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Failed, Some("failed".into()))
    );
    let names = env.artifact_names(&id).await;
    assert!(!names.contains(&"public/passwd".to_owned()), "{names:?}");
    assert!(names.contains(&"public/result.txt".to_owned()), "{names:?}");
    let log = String::from_utf8(env.download(&id, "public/logs/live_backing.log").await).unwrap();
    assert!(log.contains("\"public/passwd\" is a symlink"), "{log}");
    assert!(!log.contains("root:x:0:0"), "symlink target was read");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn long_lines_and_invalid_utf8_are_logged() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let id = env.create(json!({"behaviour": "longline"})).await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let log = String::from_utf8(env.download(&id, "public/logs/live_backing.log").await).unwrap();
    let a_lines: Vec<&str> = log.lines().filter(|l| l.starts_with("AAAA")).collect();
    assert_eq!(
        a_lines.iter().map(|l| l.len()).collect::<Vec<_>>(),
        [65536, 100000 - 65536]
    );
    assert!(log.contains("bad \u{FFFD}\u{FFFD} utf8\n"), "{log}");
    assert!(log.contains("\nno newline at end\n"), "{log}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_errors_exit_64_naming_the_key_and_claim_nothing() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let id = env.create(json!({"behaviour": "ok"})).await;
    let good = std::fs::read_to_string(env.dir.join("worker.toml")).unwrap();
    let table = [
        (
            good.replace("worker_id = \"w1\"", "worker_id = \"w1\"\nworker_idd = 1"),
            "/queue/worker_idd",
        ),
        (
            good.replace("timeout_secs = 60", "timeout_secs = \"60\""),
            "/script/timeout_secs",
        ),
        (
            good.replace("worker_group = \"wg\"\n", ""),
            "/queue/worker_group",
        ),
        (
            good.replace(&env.material.pin.sha256, &"0".repeat(64)),
            "/chain_of_trust/keys_dir",
        ),
        (
            good.replace("payload.schema.json", "missing.schema.json"),
            "/task",
        ),
        (
            good.replace(
                &env.material.chain_policy.display().to_string(),
                "/nonexistent/policy.toml",
            ),
            "/verify/policy",
        ),
        (
            good.replace(
                "worker_impl = \"chainlock\"",
                "worker_impl = \"generic-worker\"",
            ),
            "/chain_of_trust/worker_impl",
        ),
    ];
    for (text, key) in table {
        std::fs::write(env.dir.join("worker.toml"), text).unwrap();
        let out = env.run_worker(1).await;
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(key),
            "{} does not name {key}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("worker.toml"));
    }
    // A signing key that group or others can read is refused.
    std::fs::write(env.dir.join("worker.toml"), &good).unwrap();
    set_mode(&env.material.worker_key, 0o640);
    let out = env.run_worker(1).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/chain_of_trust/signing_key") && stderr(&out).contains("0640"),
        "{}",
        stderr(&out)
    );
    set_mode(&env.material.worker_key, 0o600);
    assert_eq!(
        env.client.status(&id).await.unwrap().state,
        TaskState::Pending
    );
    env.stop().await;
}

/// `chainlock config check` runs the worker's start-up checks, read-only: with the queue down
/// and no trust state file yet, a good config passes every check and writes nothing; a
/// world-readable key and a wrong pin each fail their check, every other check still runs.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_runs_the_startup_checks_read_only() {
    let mut env = Env::new(Duration::from_secs(1200)).await;
    if let Some(q) = env.queue.take() {
        q.shutdown().await;
    }
    let state = env.dir.join("trust-state.json");
    let check = |env: &Env, config: &str| {
        let out = chainlock_bin()
            .arg("config")
            .arg("check")
            .arg(env.dir.join(config))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TASKCLUSTER_CLIENT_ID", "test-worker")
            .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!stdout.contains(TOKEN) && !stderr(&out).contains(TOKEN));
        (out.status.code(), stdout, stderr(&out))
    };
    let (code, stdout, err) = check(&env, "worker.toml");
    assert_eq!(code, Some(0), "{stdout}\n{err}");
    for name in [
        "payload schema",
        "chain policy",
        "signing key",
        "ed25519 key",
        "credentials file",
        "run_as",
        "trust store",
        "own key trusted",
        "isolation",
        "sandbox uid",
    ] {
        assert!(
            stdout.contains(&format!("\nok    {name}: ")),
            "{name}:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(!state.exists(), "config check wrote the trust state file");

    set_mode(&env.material.worker_key, 0o644);
    let (code, stdout, err) = check(&env, "worker.toml");
    set_mode(&env.material.worker_key, 0o600);
    assert_eq!(code, Some(64), "{stdout}\n{err}");
    assert!(
        stdout.contains("\nFAIL  signing key: ") && stdout.contains("mode 0644"),
        "{stdout}"
    );
    assert!(stdout.contains("\nok    trust store: "), "{stdout}");
    assert!(
        stdout.contains("\nFAIL  own key trusted: not checked"),
        "{stdout}"
    );
    assert!(err.contains("2 of 10 start-up checks failed"), "{err}");

    // Issue 8: a credentials file group or others can read is refused by `config check` and by
    // the worker's start-up, with no other setting involved (no run_as); 0600 passes.
    let creds = env.dir.join("creds.json");
    std::fs::write(
        &creds,
        format!("{{\"clientId\": \"test-worker\", \"accessToken\": \"{TOKEN}\"}}"),
    )
    .unwrap();
    let with_creds = format!(
        "{}\n[credentials]\nfile = \"creds.json\"\n",
        std::fs::read_to_string(env.dir.join("worker.toml")).unwrap()
    );
    std::fs::write(env.dir.join("creds.toml"), with_creds).unwrap();
    set_mode(&creds, 0o644);
    let (code, stdout, err) = check(&env, "creds.toml");
    assert_eq!(code, Some(64), "{stdout}\n{err}");
    assert!(
        err.contains(&format!("credentials file {}", creds.display()))
            && err.contains("mode 0644 grants group or other access")
            && err.contains("chmod 600"),
        "{err}"
    );
    let out = env
        .command("creds.toml", &["--max-tasks", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("mode 0644 grants group or other access"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains(TOKEN));
    set_mode(&creds, 0o600);
    let (code, stdout, err) = check(&env, "creds.toml");
    assert_eq!(code, Some(0), "{stdout}\n{err}");
    assert!(
        stdout.contains(&format!(
            "\nok    credentials file: {}: not accessible by group or others",
            creds.display()
        )),
        "{stdout}"
    );

    let wrong_pin = std::fs::read_to_string(env.dir.join("worker.toml"))
        .unwrap()
        .replace(&env.material.pin.sha256, &"0".repeat(64));
    std::fs::write(env.dir.join("wrong-pin.toml"), wrong_pin).unwrap();
    let (code, stdout, err) = check(&env, "wrong-pin.toml");
    assert_eq!(code, Some(64), "{stdout}\n{err}");
    assert!(
        stdout.contains("\nFAIL  trust store: ") && stdout.contains("is pinned"),
        "{stdout}"
    );
    assert!(stdout.contains("\nok    signing key: "), "{stdout}");
    assert!(!state.exists(), "config check wrote the trust state file");

    // Control: the worker's own loader does write the state file from these inputs.
    chainlock::trust::TrustStore::load_with_state(
        &env.material.keys_dir,
        &env.material.pin,
        &state,
        now(),
        &chainlock::trust::Limits::default(),
    )
    .unwrap();
    assert!(state.exists());
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

// `chainlock demo` end to end (real binary, output, exit code, --data-dir) is tested in
// tests/demo.rs, the demo area's one test binary.

#[tokio::test(flavor = "multi_thread")]
async fn invalid_input_is_malformed_payload_before_any_download_or_script() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let marker = env.dir.join("ran");
    let id = env
        .create_unchained(json!({
            "behaviour": "ok",
            "marker": marker,
            "surprise": 1,
            "upstreamArtifacts": [{
                "taskId": TaskId::generate().as_str(), "taskType": "build",
                "paths": ["public/../../etc/passwd"]
            }]
        }))
        .await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Exception, Some("malformed-payload".into()))
    );
    assert!(!marker.exists(), "the script ran for an invalid task");
    let log = env.task_log(&id).await;
    // Every violation, with its pointer and rule.
    for expected in [
        "/payload: [payload-schema/additionalProperties]",
        "/payload/upstreamArtifacts/0/paths/0",
        "upstream-not-a-dependency",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from:\n{log}");
    }
    assert!(!log.contains("verifying the chain of trust"), "{log}");
    assert!(!log.contains("running"), "{log}");
    // No evidence fetched, nothing signed: only the task log (and its link).
    assert_eq!(
        env.artifact_names(&id).await,
        ["public/logs/live.log", "public/logs/live_backing.log"]
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unverifiable_chains_are_malformed_payload_and_the_script_never_starts() {
    let env = Env::new(Duration::from_secs(1200)).await;
    // (mutation of the upstream evidence, the check the report must name)
    type Mutation = fn(&mut Evidence, &Chain);
    let table: [(Mutation, &str); 2] = [
        (
            |ev, chain| {
                ev.tamper_byte(&chain.build.id, seed::BUILD_ARTIFACT)
                    .unwrap()
            },
            "[FAIL] artifacts",
        ),
        (
            |ev, chain| ev.sign_with_unknown_key(&chain.build.id).unwrap(),
            "[FAIL] signature",
        ),
    ];
    let mut cases = Vec::new();
    for (i, (mutation, check)) in table.into_iter().enumerate() {
        let marker = env.dir.join(format!("ran-{i}"));
        let id = env
            .seed(vec![json!({"behaviour": "ok", "marker": marker})], mutation)
            .await
            .remove(0);
        cases.push((id, marker, check));
    }
    let out = env.run_worker(cases.len() as u32).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for (id, marker, check) in cases {
        assert_eq!(
            env.last_run(&id).await,
            (TaskState::Exception, Some("malformed-payload".into())),
            "{check}"
        );
        assert!(!marker.exists(), "{check}: the script ran");
        let report =
            String::from_utf8(env.download(&id, "public/logs/chain_of_trust.log").await).unwrap();
        assert!(report.contains(check), "{check} not in:\n{report}");
        assert!(report.contains("FAILED"), "{report}");
        let log = env.task_log(&id).await;
        assert!(log.contains("failed verification"), "{log}");
        assert!(log.contains("the script is not started"), "{log}");
        assert!(log.contains(check), "summary lacks {check}:\n{log}");
        let names = env.artifact_names(&id).await;
        assert!(
            !names.contains(&"public/chain-of-trust.json".to_owned()),
            "{names:?}"
        );
        // live.log, what Treeherder shows, resolves to the verification report (scriptworker
        // 63.2.0); the task log is still there as live_backing.log.
        assert!(
            names.contains(&"public/logs/live.log".to_owned())
                && names.contains(&"public/logs/live_backing.log".to_owned()),
            "{names:?}"
        );
        let via_link = env.download(&id, "public/logs/live.log").await;
        assert_eq!(
            String::from_utf8(via_link).unwrap(),
            report,
            "{check}: live.log"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_evidence_is_resource_unavailable_not_malformed_payload() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let marker = env.dir.join("ran");
    // The decision task's graph lives behind a reference artifact on a dead port: every
    // download attempt is refused at the TCP level, as when the storage is down.
    let id = env
        .seed_with_graph_at(
            json!({"behaviour": "ok", "marker": marker}),
            "http://127.0.0.1:1/task-graph.json",
        )
        .await;

    // In-process worker: same code as the binary, with the test retry policy (fast backoff).
    let config =
        chainlock::config::Config::load(&env.dir.join("worker.toml"), &path_env()).unwrap();
    let options = chainlock::worker::RunOptions {
        max_tasks: Some(1),
        retry: RetryPolicy::fast_for_tests(),
        ..Default::default()
    };
    let summary = chainlock::worker::run(
        config,
        Credentials::permanent("test-worker", Secret::new(TOKEN)),
        &path_env(),
        options,
        chainlock::worker::Shutdown::new(),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            summary.tasks.first(),
            Some(chainlock::worker::task::TaskReport::Resolved {
                resolution: chainlock::worker::outcome::Resolution::Exception(
                    ExceptionReason::ResourceUnavailable
                ),
                ..
            })
        ),
        "{:?}",
        summary.tasks
    );
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Exception, Some("resource-unavailable".into()))
    );
    assert!(!marker.exists(), "the script ran without a verified chain");
    let report =
        String::from_utf8(env.download(&id, "public/logs/chain_of_trust.log").await).unwrap();
    assert!(report.contains("evidence unavailable"), "{report}");
    assert!(report.contains(seed::TASK_GRAPH), "{report}");
    env.stop().await;
}

/// The worker's log without terminal colour codes.
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn path_env() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([(
        "PATH".to_owned(),
        "/usr/local/bin:/usr/bin:/bin".to_owned(),
    )])
}

/// Publishes trust policy version 2 (one more chainlock key), signed by both root keys, the
/// way `chainlock keys` lays it out: version 1 moves to `history/v1/`.
fn publish_policy_v2(material: &Material) {
    use chainlock::trust::policy::{KeyType, WorkerKey};
    let rotated = chainlock::openpgp::generate_key(
        "rotated <rotated@test.invalid>",
        material.valid_from,
        None,
    )
    .unwrap();
    publish_policy_v2_with(
        material,
        WorkerKey {
            name: "chainlock-rotated".into(),
            key_type: KeyType::Openpgp,
            fingerprint: Some(rotated.fingerprint()),
            cert: Some(String::from_utf8(rotated.public_cert_armored().unwrap()).unwrap()),
            public_key: None,
            valid_from: material.valid_from,
            valid_until: material.valid_until,
            revocation: None,
        },
    );
}

/// Publishes trust policy version 2 listing `key` under chainlock, signed by both root keys.
fn publish_policy_v2_with(material: &Material, key: chainlock::trust::policy::WorkerKey) {
    publish_policy_v2_edited(material, |file| {
        file.workers.get_mut("chainlock").unwrap().push(key);
    });
}

/// Publishes trust policy version 2: version 1 changed by `edit`, signed by both root keys.
fn publish_policy_v2_edited(
    material: &Material,
    edit: impl FnOnce(&mut chainlock::trust::policy::PolicyFile),
) {
    use chainlock::trust::policy::Policy;
    let keys = &material.keys_dir;
    let v1 = std::fs::read(keys.join("trust.toml")).unwrap();
    let mut file = Policy::parse(&v1).unwrap().file;
    file.version = 2;
    edit(&mut file);
    let v2 = Policy::to_toml(&file).unwrap().into_bytes();
    let history = chainlock::trust::history_dir(keys, 1);
    std::fs::create_dir_all(history.join("sigs")).unwrap();
    std::fs::write(history.join("trust.toml"), &v1).unwrap();
    for entry in std::fs::read_dir(keys.join("sigs")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), history.join("sigs").join(entry.file_name())).unwrap();
    }
    for i in 1..=seed::ROOT_KEYS {
        let root = chainlock::openpgp::load_signing_key(
            &material.dir.join(format!("private/root-{i}.key.asc")),
            now(),
        )
        .unwrap();
        let sig = chainlock::openpgp::sign_detached_armored(&root, &v2, now()).unwrap();
        std::fs::write(
            keys.join("sigs")
                .join(format!("{}.asc", root.fingerprint())),
            sig,
        )
        .unwrap();
    }
    // trust.toml last, atomically: the worker reloads when its bytes change.
    std::fs::write(keys.join("trust.toml.new"), &v2).unwrap();
    std::fs::rename(keys.join("trust.toml.new"), keys.join("trust.toml")).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_policy_is_reloaded_between_tasks_and_logged_per_task() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let worker = env.spawn_watched(&["--max-tasks", "2"]);
    let first = env.create(json!({"behaviour": "ok"})).await;
    env.wait_resolved(&first).await;
    publish_policy_v2(&env.material);
    worker.wait_for("trust policy reloaded", 1).await;
    let second = env.create(json!({"behaviour": "ok"})).await;
    let (status, log) = worker.wait().await;
    assert!(status.success(), "{log}");
    assert!(
        plain(&log).contains("trust policy reloaded previous_version=Some(1) version=2"),
        "{log}"
    );
    assert_eq!(env.last_run(&first).await.0, TaskState::Completed);
    assert_eq!(env.last_run(&second).await.0, TaskState::Completed);
    assert!(
        env.task_log(&first)
            .await
            .contains("trust policy version 1 in force")
    );
    assert!(
        env.task_log(&second)
            .await
            .contains("trust policy version 2 in force")
    );
    let report = String::from_utf8(
        env.download(&second, "public/logs/chain_of_trust.log")
            .await,
    )
    .unwrap();
    assert!(report.contains("trust policy version 2"), "{report}");
    // The newest verified version is persisted: a restart cannot roll back to version 1.
    let state: Value =
        serde_json::from_slice(&std::fs::read(env.dir.join("trust-state.json")).unwrap()).unwrap();
    assert_eq!(state["version"], 2);
    env.stop().await;
}

/// The own-key probe is not repeated per claim, but its answer stands only until something it
/// depends on ends by itself: here the worker key's window in the policy, with no change on
/// disk after the reload. A cache keyed on "policy or key changed" alone would keep claiming.
#[tokio::test(flavor = "multi_thread")]
async fn own_key_window_ending_stops_claims_without_a_policy_change() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let worker = env.spawn_watched(&["--max-tasks", "1"]);
    worker.wait_for("worker started", 1).await;
    let window_end = now() + chrono::Duration::seconds(6);
    publish_policy_v2_edited(&env.material, |file| {
        for key in file.workers.get_mut("chainlock").unwrap() {
            key.valid_until = window_end;
        }
    });
    worker.wait_for("trust policy reloaded", 1).await;
    assert_eq!(
        worker.count("NOT CLAIMING"),
        0,
        "the new policy accepts our key until its end"
    );
    worker.wait_for("NOT CLAIMING", 1).await;
    assert!(now() >= window_end, "refused before the window ended");
    let id = env.create(json!({"behaviour": "ok"})).await;
    let seen = worker.count("NOT CLAIMING");
    worker.wait_for("NOT CLAIMING", seen + 2).await;
    assert_eq!(
        env.client.status(&id).await.unwrap().state,
        TaskState::Pending,
        "claimed after our key's window ended"
    );
    let log = plain(&worker.log());
    assert!(
        log.contains("is not trusted") || log.contains("window"),
        "{log}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_policy_on_disk_stops_claims_until_a_valid_one_is_back() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let trust_toml = env.material.keys_dir.join("trust.toml");
    let good = std::fs::read(&trust_toml).unwrap();
    let worker = env.spawn_watched(&["--max-tasks", "1"]);
    worker.wait_for("worker started", 1).await;
    // Tampered bytes: the root signatures no longer match. Never fall back to the old policy.
    let mut bad = good.clone();
    bad.extend_from_slice(b"\n# tampered\n");
    std::fs::write(&trust_toml, &bad).unwrap();
    worker.wait_for("NOT CLAIMING", 1).await;
    let id = env.create(json!({"behaviour": "ok"})).await;
    // Two more refusals after the task became pending: a full cycle in which it was not claimed.
    let seen = worker.count("NOT CLAIMING");
    worker.wait_for("NOT CLAIMING", seen + 2).await;
    assert_eq!(
        env.client.status(&id).await.unwrap().state,
        TaskState::Pending,
        "claimed under an invalid trust policy"
    );
    std::fs::write(&trust_toml, &good).unwrap();
    let (status, log) = worker.wait().await;
    assert!(status.success(), "{log}");
    // Refused for the tampered bytes (they no longer hash to the pinned version), then the
    // restored policy was loaded again.
    let log = plain(&log);
    assert!(log.contains("is pinned"), "{log}");
    assert!(
        log.contains("trust policy reloaded previous_version=None version=1"),
        "{log}"
    );
    assert_eq!(env.last_run(&id).await.0, TaskState::Completed);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn run_as_isolates_the_script_from_the_worker_secrets() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let nobody = "isolation = \"uid\"\nrun_as = { uid = 65534, gid = 65534 }\n";
    env.write_config("worker.toml", nobody);
    // A directory this process created is owned by its effective uid.
    let euid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&env.dir).unwrap());
    if euid != 0 {
        // Not root: start-up must refuse (it cannot hand the work area to another uid).
        let out = env.run_worker(1).await;
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(stderr(&out).contains("/script/run_as"), "{}", stderr(&out));
        eprintln!("not root: only the start-up refusal of run_as was tested");
        env.stop().await;
        return;
    }
    set_mode(&env.dir, 0o755);
    let id = env
        .create(json!({"behaviour": "identity", "probe": env.material.worker_key}))
        .await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{}",
        stderr(&out)
    );
    let identity: Value =
        serde_json::from_slice(&env.download(&id, "public/identity.json").await).unwrap();
    assert_eq!(identity["uid"], 65534);
    assert_eq!(identity["gid"], 65534);
    assert!(
        !identity["groups"].as_array().unwrap().contains(&json!(0)),
        "root's supplementary groups kept: {identity}"
    );
    assert_eq!(
        identity["probe"], "denied",
        "the script read the signing key"
    );
    assert!(
        identity["verified"]
            .as_array()
            .unwrap()
            .contains(&json!(seed::BUILD_ARTIFACT)),
        "{identity}"
    );
    assert!(
        env.artifact_names(&id)
            .await
            .contains(&"public/chain-of-trust.json.asc".to_owned())
    );

    // Start-up refuses secrets the script's uid could read.
    let key = &env.material.worker_key;
    std::os::unix::fs::chown(key, Some(65534), None).unwrap();
    let out = env.run_worker(1).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/script/run_as") && stderr(&out).contains("owned by that uid"),
        "{}",
        stderr(&out)
    );
    std::os::unix::fs::chown(key, Some(0), None).unwrap();
    let creds = env.dir.join("creds.json");
    std::fs::write(
        &creds,
        format!("{{\"clientId\": \"test-worker\", \"accessToken\": \"{TOKEN}\"}}"),
    )
    .unwrap();
    set_mode(&creds, 0o644);
    std::fs::write(
        env.dir.join("worker.toml"),
        format!(
            "{}\n[credentials]\nfile = \"creds.json\"\n",
            env.config_text(nobody)
        ),
    )
    .unwrap();
    let out = env.run_worker(1).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    // Refused whatever the run_as settings (the loader's private-file rule comes first).
    assert!(
        stderr(&out).contains("credentials file") && stderr(&out).contains("0644"),
        "{}",
        stderr(&out)
    );
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Isolation (issue 8): escapes, races and visibility at every level, with real namespaces.
// ---------------------------------------------------------------------------------------------

/// Whether this host runs the strong levels (root, bubblewrap, setpriv). Under CI they must:
/// `scripts/test` installs bubblewrap and CI runs as root, so a skip there is a failure.
fn strong_levels_available() -> bool {
    let ok = nix::unistd::geteuid().is_root()
        && Path::new("/usr/bin/bwrap").exists()
        && Path::new("/usr/bin/setpriv").exists();
    assert!(
        ok || std::env::var_os("CI").is_none(),
        "CI must run the isolation tests: they need root, bubblewrap and setpriv"
    );
    if !ok {
        eprintln!("SKIPPED: needs root, /usr/bin/bwrap and /usr/bin/setpriv");
    }
    ok
}

/// An environment whose directory the scripts' uids can traverse, or `None` when the strong
/// levels cannot run here (outside CI only).
async fn strong_env(claim_timeout: Duration) -> Option<Env> {
    if !strong_levels_available() {
        return None;
    }
    let env = Env::new(claim_timeout).await;
    set_mode(&env.dir, 0o755);
    Some(env)
}

static RUN_AS_SLOT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(8);

/// A uid/gid no other test (or worker) uses.
fn fresh_run_as() -> chainlock::config::RunAs {
    chainlock::sandbox::dev_run_as(RUN_AS_SLOT.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
}

/// The `[script]` lines of one isolation level.
fn level_lines(level: &str, run_as: chainlock::config::RunAs) -> String {
    match level {
        "none" => "isolation = \"none\"\n".into(),
        l => format!(
            "isolation = \"{l}\"\nrun_as = {{ uid = {}, gid = {} }}\n",
            run_as.uid, run_as.gid
        ),
    }
}

/// Live processes whose command line contains `token`.
fn procs_with(token: &str) -> Vec<i32> {
    chainlock::sandbox::procs::scan()
        .into_iter()
        .filter(|p| !p.zombie)
        .filter(|p| {
            std::fs::read(format!("/proc/{}/cmdline", p.pid))
                .map(|c| String::from_utf8_lossy(&c).contains(token))
                .unwrap_or(false)
        })
        .map(|p| p.pid)
        .collect()
}

/// Every way a script can try to leave something behind, each a `sleep TOKEN`: a new session,
/// a double fork, a child ignoring SIGTERM, a new process group, and one that keeps the
/// script's stdout open.
fn escapes(token: &str) -> String {
    format!(
        "setsid sleep {token} & \
         (sh -c 'sleep {token} &' &) ; \
         (trap '' TERM; exec sleep {token}) & \
         python3 -c 'import os,sys,time; os.setpgid(0,0); time.sleep(int(sys.argv[1]))' {token} & \
         sleep {token} & "
    )
}

fn token() -> String {
    format!("{}", 7_000_000 + rand::random::<u32>() % 1_000_000)
}

async fn wait_for_procs(token: &str, n: usize) {
    for _ in 0..400 {
        if procs_with(token).len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the script's {n} processes never appeared");
}

async fn assert_nothing_left(token: &str, run_as: Option<chainlock::config::RunAs>, what: &str) {
    // SIGKILL is delivered asynchronously; give the kernel a moment.
    for _ in 0..80 {
        let uid_left =
            run_as.is_some_and(|r| !chainlock::sandbox::procs::alive_with_uid(r.uid).is_empty());
        if procs_with(token).is_empty() && !uid_left {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{what}: survivors {:?}, uid processes {:?}",
        procs_with(token),
        run_as.map(|r| chainlock::sandbox::procs::alive_with_uid(r.uid))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_the_script_starts_outlives_its_run() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    for level in ["namespaces", "uid", "none"] {
        let run_as = fresh_run_as();
        env.write_config("worker.toml", &level_lines(level, run_as));
        let strong = (level != "none").then_some(run_as);
        for outcome in ["exit 0", "exit 3", "timeout", "sigterm"] {
            let t = token();
            let tail = match outcome {
                "exit 0" => "exit 0",
                "exit 3" => "exit 3",
                _ => "sleep 60",
            };
            let mut payload = json!({"behaviour": "shell", "sh": format!("{}{tail}", escapes(&t))});
            if outcome == "timeout" {
                payload["maxRunTime"] = json!(2);
            }
            let id = env.create(payload).await;
            if outcome == "sigterm" {
                let worker = env.spawn_watched(&["--max-tasks", "1"]);
                wait_for_procs(&t, 5).await;
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(worker.pid() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                )
                .unwrap();
                let (status, log) = worker.wait().await;
                assert!(status.success(), "{level}/{outcome}: {log}");
            } else {
                let out = env.run_worker(1).await;
                assert!(out.status.success(), "{level}/{outcome}: {}", stderr(&out));
            }
            assert_nothing_left(&t, strong, &format!("{level}/{outcome}")).await;
            let expected = match outcome {
                "exit 0" => (TaskState::Completed, Some("completed".to_owned())),
                "exit 3" => (TaskState::Exception, Some("malformed-payload".to_owned())),
                "timeout" => (TaskState::Failed, Some("failed".to_owned())),
                _ => (TaskState::Exception, Some("worker-shutdown".to_owned())),
            };
            assert_eq!(env.last_run(&id).await, expected, "{level}/{outcome}");
            let log = env.task_log(&id).await;
            assert!(
                !log.contains("output pipes still open"),
                "{level}/{outcome}: an escapee held stdout open:\n{log}"
            );
            assert!(log.contains(&format!("(isolation: {level})")), "{log}");
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_with_sigkill_leaves_no_script_behind() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    for level in ["namespaces", "uid"] {
        let run_as = fresh_run_as();
        env.write_config("worker.toml", &level_lines(level, run_as));
        let t = token();
        env.create(json!({"behaviour": "shell", "sh": format!("{}sleep 60", escapes(&t))}))
            .await;
        let mut worker = env.spawn_worker(&["--max-tasks", "1"]);
        wait_for_procs(&t, 5).await;
        worker.kill().unwrap();
        let _ = worker.wait();
        if level == "namespaces" {
            // --die-with-parent and the PID namespace: gone with the worker.
            assert_nothing_left(&t, Some(run_as), "namespaces after SIGKILL").await;
        }
        // The next worker on the same work area kills whatever is left before it claims.
        let out = env.run_worker(0).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_nothing_left(
            &t,
            Some(run_as),
            &format!("{level}: next worker's start-up"),
        )
        .await;
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leftover_cannot_write_into_the_next_run() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    let area = env.dir.join("work");
    for level in ["namespaces", "uid"] {
        env.write_config("worker.toml", &level_lines(level, fresh_run_as()));
        // As an attacker would: find the next run's script through /proc/<pid>/environ (same
        // uid) or the work area, and drop a file into its artifact directory.
        let tamper = format!(
            "setsid python3 -c '
import glob, os, time
while True:
    dirs = glob.glob(\"{area}/*/artifacts\")
    for e in glob.glob(\"/proc/[0-9]*/environ\"):
        try:
            env = open(e, \"rb\").read().split(bytes(1))
        except OSError:
            continue
        dirs += [kv.split(b\"=\", 1)[1].decode() for kv in env
                 if kv.startswith(b\"CHAINLOCK_ARTIFACT_DIR=\")]
    for d in dirs:
        try:
            os.makedirs(d + \"/public\", exist_ok=True)
            open(d + \"/public/evil.txt\", \"w\").write(\"evil\")
        except OSError:
            pass
    time.sleep(0.005)
' > /dev/null 2>&1 & sleep 0.3; exit 0",
            area = area.display()
        );
        let first = env
            .create(json!({"behaviour": "shell", "sh": tamper}))
            .await;
        let second = env.create(json!({"behaviour": "sleep", "secs": 1})).await;
        let out = env.run_worker(2).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_ne!(env.last_run(&first).await.0, TaskState::Pending);
        assert_eq!(
            env.last_run(&second).await.0,
            TaskState::Completed,
            "{level}"
        );
        let doc: Value =
            serde_json::from_slice(&env.download(&second, "public/chain-of-trust.json").await)
                .unwrap();
        let listed: Vec<&String> = doc["artifacts"].as_object().unwrap().keys().collect();
        assert!(
            !listed.iter().any(|n| n.contains("evil")),
            "{level}: the next run's document lists a leftover's file: {listed:?}"
        );
        assert!(
            !env.artifact_names(&second)
                .await
                .iter()
                .any(|n| n.contains("evil"))
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn swapped_artifacts_never_upload_the_key_and_never_hang() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    let key = env.material.worker_key.clone();
    let key_bytes = std::fs::read(&key).unwrap();
    for level in ["namespaces", "uid", "none"] {
        env.write_config("worker.toml", &level_lines(level, fresh_run_as()));
        for round in 0..4 {
            // A leftover that keeps swapping already-written files for symlinks to the worker's
            // key and to /etc/shadow, for FIFOs, and a directory for a symlink, while the
            // script exits at once.
            let swapper = format!(
                "A=$CHAINLOCK_ARTIFACT_DIR/public; mkdir -p $A/dir; echo x > $A/dir/inner; \
                 for i in $(seq 1 50); do echo harmless > $A/f$i; done; \
                 (while true; do for i in $(seq 1 50); do \
                    ln -sf {key} $A/.t && mv -f $A/.t $A/f$i; \
                    ln -sf /etc/shadow $A/.s && mv -f $A/.s $A/f$((i % 7 + 1)); \
                    rm -f $A/.p; mkfifo $A/.p && mv -f $A/.p $A/f$((i % 5 + 1)); \
                    rm -rf $A/dir && ln -sfn / $A/dir; \
                 done; done) > /dev/null 2>&1 & \
                 sleep 0.{round}; exit 0",
                key = key.display()
            );
            let id = env
                .create(json!({"behaviour": "shell", "sh": swapper}))
                .await;
            let out = tokio::time::timeout(Duration::from_secs(60), env.run_worker(1))
                .await
                .unwrap_or_else(|_| panic!("{level}/{round}: the worker hung"));
            assert!(
                out.status.success(),
                "{level}/{round}: {:?}\n{}",
                out.status,
                stderr(&out)
            );
            let (state, reason) = env.last_run(&id).await;
            assert!(
                reason.is_some(),
                "{level}/{round}: not resolved ({state:?})"
            );
            for name in env.artifact_names(&id).await {
                if name == "public/logs/live.log" {
                    continue;
                }
                let blob = env.download(&id, &name).await;
                assert!(
                    !blob
                        .windows(key_bytes.len())
                        .any(|w| w == key_bytes.as_slice()),
                    "{level}/{round}: {name} carries the worker's private key"
                );
                assert!(
                    !String::from_utf8_lossy(&blob).contains("root:"),
                    "{level}/{round}: {name} carries /etc/shadow"
                );
            }
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn each_level_shows_the_script_exactly_what_it_promises() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    let creds = env.dir.join("creds.json");
    std::fs::write(
        &creds,
        format!("{{\"clientId\": \"test-worker\", \"accessToken\": \"{TOKEN}\"}}"),
    )
    .unwrap();
    set_mode(&creds, 0o600);
    let keys = env.dir.join("release-keys");
    std::fs::create_dir(&keys).unwrap();
    let (selected, other) = (keys.join("selected.key"), keys.join("other.key"));
    std::fs::write(&selected, b"selected release key").unwrap();
    std::fs::write(&other, b"other release key").unwrap();
    set_mode(&selected, 0o600);
    set_mode(&other, 0o600);
    let paths = |config: &Path| {
        vec![
            env.material.worker_key.clone(),
            creds.clone(),
            config.to_owned(),
            env.dir.join("trust-state.json"),
            env.dir.join("logs"),
            env.dir.join("work"),
            env.dir.join("work").join(".chainlock-work-area"),
            selected.clone(),
            other.clone(),
        ]
    };
    for (level, expected) in [
        (
            "namespaces",
            // The work area shows only this run's own directory (the marker next to the other
            // runs is not there).
            [
                "absent", "absent", "absent", "absent", "absent", "readable", "absent", "readable",
                "absent",
            ],
        ),
        (
            "uid",
            // The config is not secret (credentials live in their own 0600 file); the trust
            // state is written 0600.
            [
                "denied", "denied", "readable", "denied", "denied", "denied", "readable", "denied",
                "denied",
            ],
        ),
        ("none", ["readable"; 9]),
    ] {
        let mut lines = level_lines(level, fresh_run_as());
        if level == "namespaces" {
            lines.push_str(&format!(
                "scope_files = {{ \"{CERT_NAME}\" = [\"{}\"], \"other-signing\" = [\"{}\"] }}\n",
                selected.display(),
                other.display()
            ));
        }
        let text = env.config_text(&lines).replace(
            &format!("allowed_scopes = [\"{CERT_NAME}\"]"),
            &format!("allowed_scopes = [\"{CERT_NAME}\", \"other-signing\"]"),
        );
        let config = env.dir.join("worker.toml");
        std::fs::write(
            &config,
            format!("{text}\n[credentials]\nfile = \"creds.json\"\n"),
        )
        .unwrap();
        set_mode(&config, 0o644);
        let probe_paths = paths(&config);
        let id = env
            .create(json!({"behaviour": "probes", "paths": probe_paths}))
            .await;
        let out = env.run_worker(1).await;
        assert!(out.status.success(), "{level}: {}", stderr(&out));
        assert_eq!(
            env.last_run(&id).await.0,
            TaskState::Completed,
            "{level}: {}",
            stderr(&out)
        );
        let seen: Value =
            serde_json::from_slice(&env.download(&id, "public/probes.json").await).unwrap();
        for (path, want) in probe_paths.iter().zip(expected) {
            assert_eq!(
                seen[path.to_string_lossy().as_ref()],
                want,
                "{level}: {}: {seen}",
                path.display()
            );
        }
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_and_start_up_refuse_a_level_the_host_cannot_provide() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    let check = |config: &str| {
        let out = chainlock_bin()
            .arg("config")
            .arg("check")
            .arg(env.dir.join(config))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TASKCLUSTER_CLIENT_ID", "test-worker")
            .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr(&out),
        )
    };
    env.write_config("worker.toml", &level_lines("namespaces", fresh_run_as()));
    let (code, stdout, err) = check("worker.toml");
    assert_eq!(code, Some(0), "{stdout}\n{err}");
    for line in [
        "ok    isolation: level \"namespaces\" requested",
        "ok    sandbox pid namespace: own PID namespace",
        "ok    sandbox mount namespace: own mount namespace",
        "ok    sandbox privileges: no_new_privs true, effective capabilities 0x0",
        "ok    sandbox network: own network namespace",
        "ok    hidden: signing key: ",
        "ok    hidden: config file: ",
    ] {
        assert!(stdout.contains(line), "{line}:\n{stdout}");
    }
    // A "bubblewrap" that does nothing: the probe never answers, so the level is refused.
    let fake = env.dir.join("fake-bwrap");
    std::fs::write(&fake, "#!/bin/sh\nexit 0\n").unwrap();
    set_exec(&fake);
    env.write_config(
        "worker.toml",
        &format!(
            "{}bwrap = \"{}\"\n",
            level_lines("namespaces", fresh_run_as()),
            fake.display()
        ),
    );
    let (code, stdout, err) = check("worker.toml");
    assert_eq!(code, Some(64), "{stdout}\n{err}");
    assert!(stdout.contains("FAIL  isolation: "), "{stdout}");
    let out = env.run_worker(1).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("/script/isolation"),
        "{}",
        stderr(&out)
    );
    // A level that hides nothing it promises to hide: uid, with the signing key readable by all.
    env.write_config("worker.toml", &level_lines("uid", fresh_run_as()));
    let private = env.material.worker_key.parent().unwrap().to_owned();
    set_mode(&private, 0o755);
    set_mode(&env.material.worker_key, 0o644);
    let (code, stdout, _) = check("worker.toml");
    set_mode(&env.material.worker_key, 0o600);
    set_mode(&private, 0o700);
    assert_eq!(code, Some(64), "{stdout}");
    // The probe itself read it from inside the sandbox, besides the static mode check.
    assert!(
        stdout.contains("FAIL  hidden: signing key: ")
            && stdout.contains(": readable (must be not readable)"),
        "{stdout}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_claim_leaves_nothing_behind() {
    // Short claims: the worker reclaims within a second or two and learns of the loss (409).
    let Some(env) = strong_env(Duration::from_secs(3)).await else {
        return;
    };
    for level in ["namespaces", "uid", "none"] {
        let run_as = fresh_run_as();
        env.write_config("worker.toml", &level_lines(level, run_as));
        let t = token();
        let id = env
            .create(json!({"behaviour": "shell", "sh": format!("{}sleep 60", escapes(&t))}))
            .await;
        let child = env.spawn_worker(&["--max-tasks", "1"]);
        wait_for_procs(&t, 5).await;
        env.client.report_failed(&id, 0).await.unwrap();
        let out = wait_output(child).await;
        assert!(out.status.success(), "{level}: {}", stderr(&out));
        assert!(stderr(&out).contains("reclaim refused (409)"), "{level}");
        let strong = (level != "none").then_some(run_as);
        assert_nothing_left(&t, strong, &format!("{level}/reclaim 409")).await;
    }
    env.stop().await;
}

/// A server whose every answer is a body that trickles a byte every 100 ms, forever; counts
/// the requests.
async fn trickle_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let app = axum::Router::new().fallback(move || {
        h2.fetch_add(1, Ordering::SeqCst);
        async {
            let s = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")), ()))
            });
            axum::body::Body::from_stream(s)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/task-graph.json"), hits)
}

/// Runs the decision task as its worker would, with `public/task-graph.json` a reference
/// artifact to `url`.
async fn publish_with_graph_at(
    env: &Env,
    link: &Link,
    files: &BTreeMap<String, Vec<u8>>,
    url: &str,
) {
    let claim = env
        .client
        .claim_work(
            &link.task_queue_id().unwrap(),
            &ClaimWorkRequest {
                worker_group: SEED_RUN.worker_group.into(),
                worker_id: SEED_RUN.worker_id.into(),
                tasks: 1,
            },
        )
        .await
        .unwrap()
        .tasks
        .pop()
        .unwrap();
    assert_eq!(claim.status.task_id, link.id);
    let tq = env
        .client
        .with_credentials(Credentials::from(&claim.credentials));
    let src = env.dir.join("upload");
    for (name, bytes) in files {
        std::fs::write(&src, bytes).unwrap();
        let resp = tq
            .create_artifact(
                &link.id,
                claim.run_id,
                name,
                &CreateArtifactRequest::S3 {
                    expires: claim.status.expires,
                    content_type: "application/octet-stream".into(),
                    content_length: Some(bytes.len() as u64),
                },
            )
            .await
            .unwrap();
        let CreateArtifactResponse::S3 { put_url, .. } = resp else {
            panic!("no putUrl")
        };
        tq.upload_file(&put_url, &src, "application/octet-stream", false)
            .await
            .unwrap();
    }
    tq.create_artifact(
        &link.id,
        claim.run_id,
        seed::TASK_GRAPH,
        &CreateArtifactRequest::Reference {
            expires: claim.status.expires,
            url: url.into(),
            content_type: "application/json".into(),
        },
    )
    .await
    .unwrap();
    tq.report_completed(&link.id, claim.run_id).await.unwrap();
}

/// Issue 9: stage 3 (fetching the evidence) stops on SIGTERM and on a lost claim. The
/// decision task's graph trickles forever (slower than any useful download, faster than any
/// read timeout): the worker must still shut down promptly, reporting `worker-shutdown`, or
/// give the run up without reporting anything once the queue took it away.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_a_lost_claim_stop_a_hanging_evidence_download() {
    use chainlock::worker::outcome::Resolution;
    use chainlock::worker::task::TaskReport;
    use std::sync::atomic::Ordering;
    // Short claims: the worker reclaims every second or so and learns of a loss quickly.
    let env = Env::new(Duration::from_secs(3)).await;
    let (url, hits) = trickle_server().await;
    for case in ["sigterm", "lost"] {
        let marker = env.dir.join(format!("ran-{case}"));
        let id = env
            .seed_with_graph_at(json!({"behaviour": "ok", "marker": marker}), &url)
            .await;

        let config =
            chainlock::config::Config::load(&env.dir.join("worker.toml"), &path_env()).unwrap();
        let options = chainlock::worker::RunOptions {
            max_tasks: Some(1),
            retry: RetryPolicy::fast_for_tests(),
            ..Default::default()
        };
        let shutdown = chainlock::worker::Shutdown::new();
        let before = hits.load(Ordering::SeqCst);
        let worker = tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                chainlock::worker::run(
                    config,
                    Credentials::permanent("test-worker", Secret::new(TOKEN)),
                    &path_env(),
                    options,
                    shutdown,
                )
                .await
            }
        });
        for _ in 0..600 {
            if hits.load(Ordering::SeqCst) > before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            hits.load(Ordering::SeqCst) > before,
            "{case}: graph never requested"
        );
        // Let the trickle run a little: the download is in its body now.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t0 = std::time::Instant::now();
        match case {
            "sigterm" => shutdown.terminate(),
            _ => {
                env.client.report_failed(&id, 0).await.unwrap();
            }
        }
        let summary = tokio::time::timeout(Duration::from_secs(15), worker)
            .await
            .unwrap_or_else(|_| panic!("{case}: the worker kept fetching"))
            .unwrap()
            .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(15), "{case}");
        assert!(!marker.exists(), "{case}: the script ran");
        match case {
            "sigterm" => {
                assert!(
                    matches!(
                        summary.tasks.first(),
                        Some(TaskReport::Resolved {
                            resolution: Resolution::Exception(ExceptionReason::WorkerShutdown),
                            ..
                        })
                    ),
                    "{:?}",
                    summary.tasks
                );
                assert_eq!(
                    env.last_run(&id).await,
                    (TaskState::Exception, Some("worker-shutdown".into()))
                );
                let log = env.task_log(&id).await;
                assert!(
                    log.contains("cancelled: the worker is shutting down"),
                    "{log}"
                );
            }
            _ => {
                assert!(
                    matches!(summary.tasks.first(), Some(TaskReport::Lost { .. })),
                    "{:?}",
                    summary.tasks
                );
                assert_eq!(
                    env.last_run(&id).await,
                    (TaskState::Failed, Some("failed".into()))
                );
                assert!(env.artifact_names(&id).await.is_empty());
            }
        }
    }
    env.stop().await;
}

/// Unmounts a test mount when dropped.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    #[allow(clippy::disallowed_methods)] // the test mounts a real tmpfs
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Issue 11: a full disk became `resource-unavailable` in one place and `internal-error` with a
/// misleading message in another. It is one outcome: the run is `exception/worker-shutdown`
/// (the queue reruns the task elsewhere), the task log still goes up, the worker says DISK FULL
/// and claims nothing more. The work area is a real 3 MiB tmpfs; the script writes a 2 MB
/// artifact, which fits, and the worker's staging copy of it does not.
#[tokio::test(flavor = "multi_thread")]
#[allow(clippy::disallowed_methods)] // the test mounts a real tmpfs
async fn a_full_disk_gives_the_task_back_and_stops_claiming() {
    if !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run the disk-full test: it needs root to mount a tmpfs"
        );
        eprintln!("SKIPPED: needs root to mount a tmpfs");
        return;
    }
    let env = Env::new(Duration::from_secs(1200)).await;
    let work = env.dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs"])
        .arg(&work)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    let _mounted = Mounted(work.clone());
    let big = env
        .create(json!({
            "behaviour": "shell",
            "sh": "head -c 2000000 /dev/zero > \"$CHAINLOCK_ARTIFACT_DIR/public/big.bin\"",
        }))
        .await;
    let next = env.create(json!({"behaviour": "ok"})).await;
    let out = env.run_worker(2).await;
    let log = stderr(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("DISK FULL"), "{log}");
    let s = env.client.status(&big).await.unwrap();
    assert_eq!(
        (s.runs[0].state, s.runs[0].reason_resolved.as_deref()),
        (TaskState::Exception, Some("worker-shutdown")),
        "{log}"
    );
    let names = env.artifact_names(&big).await;
    assert!(
        names.iter().any(|n| n == "public/logs/live_backing.log"),
        "{names:?}\n{log}"
    );
    assert!(!names.iter().any(|n| n == "public/big.bin"), "{names:?}");
    // Nothing more was claimed.
    assert!(
        env.client.status(&next).await.unwrap().runs[0]
            .started
            .is_none()
    );
    env.stop().await;
}

/// With `[chain_of_trust] ed25519_key` the worker also uploads `public/chain-of-trust.json.sig`
/// (raw ed25519 over the same bytes as the `.asc`), and `chainlock verify` (online, against the
/// dev queue) verifies the task by either signature as the chain policy says; a tampered `.sig`
/// fails even when the policy would also accept the (good) `.asc`.
#[tokio::test(flavor = "multi_thread")]
async fn dual_signatures_verify_either_way_and_a_tampered_sig_fails() {
    use chainlock::trust::policy::{KeyType, WorkerKey};
    let env = Env::new(Duration::from_secs(1200)).await;
    let key_path = env.dir.join("private-ed25519.key");
    let key = chainlock::ed25519_key::Ed25519Key::generate();
    key.write_new(&key_path).unwrap();
    publish_policy_v2_with(
        &env.material,
        WorkerKey {
            name: "chainlock-ed25519".into(),
            key_type: KeyType::Ed25519,
            fingerprint: None,
            cert: None,
            public_key: Some(key.public_key_base64()),
            valid_from: env.material.valid_from,
            valid_until: env.material.valid_until,
            revocation: None,
        },
    );
    let config = env.config_text("").replace(
        "worker_impl = \"chainlock\"",
        &format!(
            "ed25519_key = \"{}\"\nworker_impl = \"chainlock\"",
            key_path.display()
        ),
    );
    std::fs::write(env.dir.join("worker.toml"), config).unwrap();
    let check = chainlock_bin()
        .args(["config", "check"])
        .arg(env.dir.join("worker.toml"))
        .env("TASKCLUSTER_CLIENT_ID", "test-worker")
        .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
        .output()
        .unwrap();
    let check_out = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "{check_out}{}", stderr(&check));
    assert!(check_out.contains("\nok    ed25519 key: "), "{check_out}");
    assert!(
        check_out.contains("\nok    own ed25519 key trusted: "),
        "{check_out}"
    );
    let (id, out) = env.run_one_completed().await;
    let names = env.artifact_names(&id).await;
    assert!(
        names.iter().any(|n| n == "public/chain-of-trust.json.sig"),
        "{names:?}"
    );
    let doc = env.download(&id, "public/chain-of-trust.json").await;
    let sig = env.download(&id, "public/chain-of-trust.json.sig").await;
    assert_eq!(sig.len(), 64);
    let (key_name, _) = env.accept_cot_signature(&doc, CotSignature::Ed25519Raw(&sig));
    assert_eq!(key_name, "chainlock-ed25519");
    // The key never shows anywhere the worker writes.
    let seed_text = std::fs::read_to_string(&key_path).unwrap();
    let log = stderr(&out);
    assert!(!log.contains(seed_text.trim()), "ed25519 key leaked");
    for name in &names {
        let bytes = String::from_utf8_lossy(&env.download(&id, name).await).into_owned();
        assert!(
            !bytes.contains(seed_text.trim()),
            "ed25519 key leaked in {name}"
        );
    }

    let policy_text = std::fs::read_to_string(&env.material.chain_policy).unwrap();
    let chainlock_line = "[worker_implementations.chainlock]\nsignature = \"openpgp\"";
    assert!(policy_text.contains(chainlock_line), "{policy_text}");
    let policy_with = |name: &str, sig: &str| {
        let path = env.dir.join(name);
        let text = policy_text.replace(
            chainlock_line,
            &format!("[worker_implementations.chainlock]\nsignature = {sig}"),
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let verify = |policy: &Path, source: &[&str]| {
        let mut args = vec!["verify".to_owned()];
        args.extend(source.iter().map(|s| s.to_string()));
        args.extend([
            "--policy".into(),
            policy.display().to_string(),
            "--keys".into(),
            env.material.keys_dir.display().to_string(),
            "--format".into(),
            "json".into(),
        ]);
        common::run_cli(&args)
    };
    let root = env.root_url.clone();
    let online = [id.as_str(), "--root-url", root.as_str(), "--check-task"];
    let target_artifact = |out: &str| -> Option<String> {
        let report: Value = serde_json::from_str(out).unwrap();
        report["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["taskId"] == json!(id.as_str()))
            .and_then(|l| l["signatureArtifact"].as_str().map(str::to_owned))
    };
    for (sig, want) in [
        ("\"openpgp\"", "public/chain-of-trust.json.asc"),
        ("[\"ed25519\"]", "public/chain-of-trust.json.sig"),
        (
            "[\"ed25519\", \"openpgp\"]",
            "public/chain-of-trust.json.sig",
        ),
        (
            "[\"openpgp\", \"ed25519\"]",
            "public/chain-of-trust.json.asc",
        ),
    ] {
        let policy = policy_with("policy-check.toml", sig);
        let (code, out, err) = verify(&policy, &online);
        assert_eq!(code, 0, "{sig}: {out}{err}");
        assert_eq!(target_artifact(&out).as_deref(), Some(want), "{sig}: {out}");
    }

    // Tampered .sig, in an exported bundle: refused; never a silent fall back to the .asc.
    let bundle = env.dir.join("bundle");
    let policy = policy_with("policy-either.toml", "[\"ed25519\", \"openpgp\"]");
    let mut export = online.to_vec();
    let bundle_arg = bundle.display().to_string();
    export.extend(["--export-bundle", bundle_arg.as_str()]);
    let (code, out, err) = verify(&policy, &export);
    assert_eq!(code, 0, "{out}{err}");
    let sig_file = bundle
        .join(id.as_str())
        .join("artifacts/public/chain-of-trust.json.sig");
    let mut bad = std::fs::read(&sig_file).unwrap();
    bad[10] ^= 1;
    std::fs::write(&sig_file, &bad).unwrap();
    let offline = ["--bundle", bundle_arg.as_str(), "--check-task"];
    let (code, out, err) = verify(&policy, &offline);
    assert_ne!(code, 0, "{out}{err}");
    assert!(out.contains("signature refused"), "{out}");
    // The .asc alone still verifies the same bundle.
    let policy = policy_with("policy-asc.toml", "\"openpgp\"");
    let (code, out, err) = verify(&policy, &offline);
    assert_eq!(code, 0, "{out}{err}");

    // The reference's own code: scriptworker.ed25519 accepts the .sig over the document as
    // uploaded, and refuses a flipped bit in either the document or the signature.
    let public = key.public_key_base64();
    let files = env.dir.join("interop");
    std::fs::create_dir_all(&files).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = files.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let (doc_path, sig_path) = (write("doc", &doc), write("sig", &sig));
    let mut flipped = doc.clone();
    flipped[0] ^= 1;
    let bad_doc = write("bad-doc", &flipped);
    let mut flipped = sig.clone();
    flipped[63] ^= 1;
    let bad_sig = write("bad-sig", &flipped);
    if let Some(ok) = scriptworker_verify(&public, &doc_path, &sig_path) {
        assert!(ok, "scriptworker refused chainlock's .sig");
        assert_eq!(
            scriptworker_verify(&public, &bad_doc, &sig_path),
            Some(false)
        );
        assert_eq!(
            scriptworker_verify(&public, &doc_path, &bad_sig),
            Some(false)
        );
    }
    env.stop().await;
}

/// Runs `tests/interop/scriptworker_ed25519.py` (scriptworker's `ed25519_public_key_from_string`
/// and `verify_ed25519_signature`) with `CHAINLOCK_TEST_PYTHON` (default: the repository's
/// `.venv`, built by `scripts/setup test`). `Some(accepted)`, or `None` (skipped with a message)
/// when scriptworker is not installed; under `CI` a missing scriptworker fails the test.
#[allow(clippy::disallowed_methods)] // tests run real tools
fn scriptworker_verify(public_key: &str, doc: &Path, sig: &Path) -> Option<bool> {
    let python = std::env::var_os("CHAINLOCK_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/scriptworker_ed25519.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(public_key)
        .arg(doc)
        .arg(sig)
        .output();
    let missing = |why: String| {
        assert!(
            std::env::var_os("CI").is_none(),
            "scriptworker is missing under CI ({why}): scripts/setup test installs it from \
             scripts/requirements-test.txt"
        );
        eprintln!("SKIPPED scriptworker interop: {why} (scripts/setup test)");
        None
    };
    let out = match out {
        Ok(out) => out,
        Err(e) => return missing(format!("cannot run {}: {e}", python.display())),
    };
    match out.status.code() {
        Some(0) => Some(true),
        Some(1) => Some(false),
        Some(2) => missing(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        _ => panic!(
            "scriptworker check crashed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The ed25519 key is one of the worker's secrets the isolation probe must find hidden from the
/// script, at `uid` and at `namespaces`: `config check` proves it.
#[tokio::test(flavor = "multi_thread")]
async fn config_check_proves_the_ed25519_key_hidden_from_the_script() {
    let Some(env) = strong_env(Duration::from_secs(1200)).await else {
        return;
    };
    let key_path = env.dir.join("private-ed25519.key");
    chainlock::ed25519_key::Ed25519Key::generate()
        .write_new(&key_path)
        .unwrap();
    for level in ["uid", "namespaces"] {
        let config = env
            .config_text(&level_lines(level, fresh_run_as()))
            .replace(
                "worker_impl = \"chainlock\"",
                &format!(
                    "ed25519_key = \"{}\"\nworker_impl = \"chainlock\"",
                    key_path.display()
                ),
            );
        std::fs::write(env.dir.join("worker.toml"), config).unwrap();
        let out = chainlock_bin()
            .args(["config", "check"])
            .arg(env.dir.join("worker.toml"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("TASKCLUSTER_CLIENT_ID", "test-worker")
            .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            stdout.contains("\nok    hidden: ed25519 key: "),
            "{level}:\n{stdout}{}",
            stderr(&out)
        );
        // Not listed in the trust policy: start-up would refuse, and config check says so.
        assert!(
            stdout.contains("\nFAIL  own ed25519 key trusted: "),
            "{level}:\n{stdout}"
        );
    }
    env.stop().await;
}

/// Check 9 in the worker: every seeded chain's decision task rebuilds from the template the
/// dev queue serves (the other tests pass through it). Here the template changes one field,
/// then disappears, then its host is unreachable: the first two are the task's input at fault
/// (`malformed-payload`, with the check named), the last an outage (`resource-unavailable`).
#[tokio::test(flavor = "multi_thread")]
async fn a_decision_task_its_template_does_not_render_is_refused() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let template = env
        .material
        .sources_dir
        .join("github.com/example/product/raw")
        .join(seed::REVISION)
        .join(".taskcluster.yml");

    // One changed field: the decision task was not what the tree asked for.
    let id = env.create(json!({"behaviour": "ok"})).await;
    let mut t: Value = serde_json::from_slice(&std::fs::read(&template).unwrap()).unwrap();
    t["tasks"][0]["payload"]["image"] = json!("example/other@sha256:00");
    std::fs::write(&template, serde_json::to_vec(&t).unwrap()).unwrap();
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Exception, Some("malformed-payload".into()))
    );
    let cot = String::from_utf8(env.download(&id, "public/logs/chain_of_trust.log").await).unwrap();
    assert!(
        cot.contains("[FAIL] decision-rebuild") && cot.contains("/payload/image"),
        "{cot}"
    );

    // No template at the revision.
    let id = env.create(json!({"behaviour": "ok"})).await;
    std::fs::remove_file(&template).unwrap();
    let _ = env.run_worker(1).await;
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Exception, Some("malformed-payload".into()))
    );
    let cot = String::from_utf8(env.download(&id, "public/logs/chain_of_trust.log").await).unwrap();
    assert!(cot.contains("is not in the evidence"), "{cot}");

    // The source host cannot be reached: an outage, not a verdict.
    let id = env.create(json!({"behaviour": "ok"})).await;
    let policy = std::fs::read_to_string(&env.material.chain_policy).unwrap();
    let dead = policy.replace(
        &format!("{}/sources/", env.root_url),
        "http://127.0.0.1:9/sources/",
    );
    assert_ne!(dead, policy);
    std::fs::write(&env.material.chain_policy, dead).unwrap();
    let _ = env.run_worker(1).await;
    assert_eq!(
        env.last_run(&id).await.1,
        Some("resource-unavailable".into())
    );
    env.stop().await;
}

/// `[queue] artifact_storage = "object"`: every artifact the run uploads goes through the
/// object service (the `live.log` link stays a link), and each reads back with the sha256 the
/// signed chain-of-trust document lists.
#[tokio::test(flavor = "multi_thread")]
async fn object_storage_uploads_every_artifact_through_the_object_service() {
    let env = WorkerEnv::start(Options {
        token: TOKEN,
        script: SCRIPT,
        payload_schema: payload_schema(&[PAYLOAD_PROPERTIES, MAX_RUN_TIME, UPSTREAM_ARTIFACTS]),
        claim_timeout: Some(Duration::from_secs(1200)),
        claim_work_timeout: Duration::from_secs(2),
        queue_extra: "artifact_storage = \"object\"\n",
        timing: (0, 0, 1),
        config_tail: String::new(),
    })
    .await;
    let id = env
        .create(json!({"behaviour": "ok", "maxRunTime": 60}))
        .await;
    let out = env.run_worker(1).await;
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{}",
        stderr(&out)
    );
    let listed = env.client.list_latest_artifacts(&id).await.unwrap();
    let storage: Vec<(&str, &str)> = listed
        .iter()
        .map(|a| (a.name.as_str(), a.storage_type.as_str()))
        .collect();
    for (name, kind) in &storage {
        let expected = if *name == "public/logs/live.log" {
            "link"
        } else {
            "object"
        };
        assert_eq!(*kind, expected, "{name}: {storage:?}");
    }
    assert!(
        storage
            .iter()
            .any(|(n, _)| *n == "public/chain-of-trust.json.asc"),
        "{storage:?}"
    );
    let doc_bytes = env.download(&id, "public/chain-of-trust.json").await;
    let doc = chainlock::cot::parse_and_validate(&doc_bytes).unwrap();
    assert!(!doc.artifacts.is_empty());
    for (name, entry) in &doc.artifacts {
        let bytes = env.download(&id, name).await;
        assert_eq!(&sha256(&bytes), entry, "{name}");
    }
}

/// `git -c … args` in `dir` (test fixtures only; chainlock itself reads git with gix).
#[allow(clippy::disallowed_methods)] // tests build fixtures with the real git
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Offline auditors: an exported bundle stores the sources with URL and sha256. Verified alone,
/// its template is unbound (a caveat); with `--source` the template comes from the auditor's
/// own clone at the decision's commit, and a bundle whose template differs from the clone's at
/// that commit (an attacker's doctored copy) fails.
#[tokio::test(flavor = "multi_thread")]
async fn offline_rebuild_binds_the_template_to_a_local_clone() {
    let env = Env::new(Duration::from_secs(1200)).await;
    // The repository: commit 1 holds the template every seeded decision task renders from;
    // commit 2 changes one field of it.
    let repo = env.dir.join("product");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    // The template as the repository host serves it (seeding any chain writes it; it renders
    // the same decision task at every revision).
    env.create(json!({"behaviour": "ok"})).await;
    let template = std::fs::read(
        env.material
            .sources_dir
            .join("github.com/example/product/raw")
            .join(seed::REVISION)
            .join(".taskcluster.yml"),
    )
    .unwrap();
    std::fs::write(repo.join(".taskcluster.yml"), &template).unwrap();
    git(&repo, &["add", ".taskcluster.yml"]);
    git(&repo, &["commit", "-q", "-m", "good"]);
    let good = git(&repo, &["rev-parse", "HEAD"]);
    let mut t: Value = serde_json::from_slice(&template).unwrap();
    t["tasks"][0]["payload"]["image"] = json!("example/evil@sha256:00");
    std::fs::write(
        repo.join(".taskcluster.yml"),
        serde_json::to_vec_pretty(&t).unwrap(),
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "changed"]);
    let changed = git(&repo, &["rev-parse", "HEAD"]);
    // An uncommitted work-tree edit is never read.
    std::fs::write(repo.join(".taskcluster.yml"), b"not: [valid").unwrap();

    let root = env.root_url.clone();
    let policy = env.material.chain_policy.display().to_string();
    let keys = env.material.keys_dir.display().to_string();
    let cli = |args: Vec<String>| common::run_cli(&args);
    let export = |id: &TaskId, dir: &Path| {
        let (code, out, err) = cli(vec![
            "verify".into(),
            id.to_string(),
            "--root-url".into(),
            root.clone(),
            "--policy".into(),
            policy.clone(),
            "--keys".into(),
            keys.clone(),
            "--export-bundle".into(),
            dir.display().to_string(),
        ]);
        assert_eq!(code, 0, "{out}\n{err}");
        let index: Value =
            serde_json::from_slice(&std::fs::read(dir.join("bundle.json")).unwrap()).unwrap();
        let sources = index["sources"].as_array().unwrap().clone();
        assert_eq!(sources.len(), 2, "{index}");
        for s in &sources {
            let bytes = std::fs::read(dir.join(s["file"].as_str().unwrap())).unwrap();
            assert_eq!(
                s["sha256"],
                json!(hex::encode(sha2::Sha256::digest(&bytes)))
            );
        }
    };
    let offline = |id: &TaskId, dir: &Path, source: Option<&Path>| {
        let mut args: Vec<String> = vec![
            "verify".into(),
            id.to_string(),
            "--bundle".into(),
            dir.display().to_string(),
            "--policy".into(),
            policy.clone(),
            "--keys".into(),
            keys.clone(),
        ];
        if let Some(s) = source {
            args.extend(["--source".into(), s.display().to_string()]);
        }
        cli(args)
    };

    // Decision task at the good commit.
    let id = env
        .seed_at(vec![json!({"behaviour": "ok"})], |_, _| {}, Some(&good))
        .await
        .remove(0);
    let bundle = env.dir.join("bundle-good");
    export(&id, &bundle);
    let (code, out, err) = offline(&id, &bundle, None);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "[caveat] decision-rebuild: template taken from the bundle, not bound to the revision"
        ),
        "{out}"
    );
    let (code, out, err) = offline(&id, &bundle, Some(&repo));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("[pass] decision-rebuild") && !out.contains("[caveat] decision-rebuild"),
        "{out}"
    );

    // Decision task at the changed commit, served (and bundled) with the good template: the
    // bundle alone passes with its caveat; the clone shows the template at that commit differs.
    let id = env
        .seed_at(vec![json!({"behaviour": "ok"})], |_, _| {}, Some(&changed))
        .await
        .remove(0);
    let bundle = env.dir.join("bundle-changed");
    export(&id, &bundle);
    let (code, out, _) = offline(&id, &bundle, None);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = offline(&id, &bundle, Some(&repo));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] decision-rebuild") && out.contains("/payload/image"),
        "{out}"
    );

    // A bundle whose stored source does not match its recorded sha256 is refused.
    let index: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let file = bundle.join(index["sources"][0]["file"].as_str().unwrap());
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.push(b' ');
    std::fs::write(&file, bytes).unwrap();
    let (code, out, _) = offline(&id, &bundle, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not match its sha256"), "{out}");
    env.stop().await;
}

/// `chainlock keys status --config` judges the worker's own signing key (and ed25519 key,
/// when set) and the trust store named by the worker's config. The test policy expires in 30 days: within
/// the default horizon that is a warning on every line (exit 0: nothing is broken yet);
/// with a 7-day horizon every line is fine.
#[tokio::test(flavor = "multi_thread")]
async fn keys_status_reads_the_worker_config() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let status = |horizon: &str| {
        let out = chainlock_bin()
            .args(["keys", "status", "--horizon-days", horizon, "--config"])
            .arg(env.dir.join("worker.toml"))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr(&out));
        stdout
    };
    for (horizon, label) in [("30", "WARN "), ("7", "ok ")] {
        let stdout = status(horizon);
        for needle in ["own signing key", "policy version"] {
            let line = stdout
                .lines()
                .find(|l| l.contains(needle))
                .unwrap_or_else(|| panic!("no {needle:?} line:\n{stdout}"));
            assert!(line.starts_with(label), "{horizon}: {line}");
        }
    }
    // The flags that --config replaces cannot be given with it (usage error).
    let out = chainlock_bin()
        .args(["keys", "status", "--signing-key", "x", "--config"])
        .arg(env.dir.join("worker.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
