//! Worker integration tests: the real `chainlock` binary against an in-process dev queue over
//! loopback, with a real test script (python3) whose behaviour each task's payload selects.

use chainlock::devqueue::{Client, DevQueueConfig, DevQueueHandle};
use chainlock::ids::TaskId;
use chainlock::queue::types::{ExceptionReason, TaskState};
use chainlock::queue::{Credentials, QueueClient, RetryPolicy};
use chainlock::secret::Secret;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

const QUEUE_ID: &str = "chainlock-test/signing";
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
if b == "longline":
    sys.stdout.buffer.write(b"A" * 100000 + b"\n" + b"bad \xff\xfe utf8\n" + b"no newline at end")
    sys.stdout.flush()
"#;

struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    queue: Option<DevQueueHandle>,
    root_url: String,
    client: QueueClient,
}

impl Env {
    async fn new(claim_timeout: Duration) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let mut cfg = DevQueueConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join("queue"),
            vec![Client {
                client_id: "test-worker".into(),
                access_token: Secret::new(TOKEN),
                scopes: vec!["*".into()],
            }],
        );
        cfg.claim_timeout = claim_timeout;
        cfg.claim_work_timeout = Duration::from_secs(2);
        let queue = chainlock::devqueue::start(cfg).await.unwrap();
        let root_url = queue.root_url().to_owned();
        let client = QueueClient::new(
            &root_url,
            Some(Credentials::permanent("test-worker", Secret::new(TOKEN))),
            RetryPolicy::fast_for_tests(),
        )
        .unwrap();
        let script = dir.join("script.py");
        std::fs::write(&script, SCRIPT).unwrap();
        set_exec(&script);
        let env = Env {
            _tmp: tmp,
            dir,
            queue: Some(queue),
            root_url,
            client,
        };
        env.write_config("worker.toml", "");
        env
    }

    fn write_config(&self, name: &str, extra_script: &str) -> PathBuf {
        let path = self.dir.join(name);
        let text = format!(
            "[queue]\nroot_url = \"{}\"\ntask_queue_id = \"{QUEUE_ID}\"\nworker_group = \"wg\"\n\
             worker_id = \"w1\"\n\n[paths]\nwork_dir = \"{}\"\nlog_dir = \"{}\"\n\n[script]\n\
             argv = [\"{}\"]\ntimeout_secs = 60\nkill_grace_secs = 1\n\
             env_allowlist = [\"PATH\"]\n{extra_script}\n[timing]\nreclaim_margin_secs = 1\n\
             poll_interval_secs = 0\nbackoff_min_secs = 0\nbackoff_max_secs = 1\n",
            self.root_url,
            self.dir.join("work").display(),
            self.dir.join("logs").display(),
            self.dir.join("script.py").display()
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn create(&self, payload: Value) -> TaskId {
        let id = TaskId::generate();
        let now = chainlock::clock::now();
        let fmt = chainlock::queue::types::format_time;
        let def = json!({
            "provisionerId": "chainlock-test", "workerType": "signing", "taskQueueId": QUEUE_ID,
            "taskGroupId": id.as_str(), "retries": 0,
            "created": fmt(now), "deadline": fmt(now + chrono::Duration::hours(1)),
            "expires": fmt(now + chrono::Duration::days(1)),
            "payload": payload,
            "metadata": {"name": "t", "description": "d", "owner": "o@example.com",
                         "source": "https://example.com/x"}
        });
        self.client.create_task(&id, &def).await.unwrap();
        id
    }

    fn spawn_worker(&self, args: &[&str]) -> Child {
        chainlock_bin()
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("worker.toml"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TASKCLUSTER_CLIENT_ID", "test-worker")
            .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    async fn run_worker(&self, max_tasks: u32) -> Output {
        let child = self.spawn_worker(&["--max-tasks", &max_tasks.to_string()]);
        wait_output(child).await
    }

    /// (state, reasonResolved) of the last run.
    async fn last_run(&self, id: &TaskId) -> (TaskState, Option<String>) {
        let s = self.client.status(id).await.unwrap();
        let r = s.runs.last().unwrap();
        (r.state, r.reason_resolved.clone())
    }

    async fn artifact_names(&self, id: &TaskId) -> Vec<String> {
        let mut names: Vec<String> = self
            .client
            .list_latest_artifacts(id)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        names.sort();
        names
    }

    async fn download(&self, id: &TaskId, name: &str) -> Vec<u8> {
        let dest = self.dir.join(format!("dl-{}", rand_suffix()));
        self.client
            .get_latest_artifact_to_file(id, name, &dest, 10 << 20)
            .await
            .unwrap();
        std::fs::read(dest).unwrap()
    }

    async fn stop(mut self) {
        if let Some(q) = self.queue.take() {
            q.shutdown().await;
        }
    }
}

/// The real binary under test (tests may start processes; the library may not).
#[allow(clippy::disallowed_methods)]
fn chainlock_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_chainlock"))
}

fn rand_suffix() -> String {
    TaskId::generate().to_string()
}

fn set_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

async fn wait_output(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn wait_for_file(p: &Path) {
    for _ in 0..600 {
        if p.exists() && std::fs::metadata(p).map(|m| m.len() > 0).unwrap_or(false) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", p.display());
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
async fn completed_task_uploads_artifacts_and_log_and_leaks_no_secret() {
    let env = Env::new(Duration::from_secs(1200)).await;
    let id = env
        .create(json!({"behaviour": "ok", "maxRunTime": 60}))
        .await;
    let out = env.run_worker(1).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into()))
    );
    assert_eq!(
        env.artifact_names(&id).await,
        [
            "public/env.json",
            "public/logs/live.log",
            "public/logs/live_backing.log",
            "public/result.txt"
        ]
    );
    let log = String::from_utf8(env.download(&id, "public/logs/live_backing.log").await).unwrap();
    assert!(log.contains("behaviour ok"), "{log}");
    assert!(log.contains("[chainlock] exit code: 0"), "{log}");
    let via_link = env.download(&id, "public/logs/live.log").await;
    assert_eq!(via_link, log.as_bytes());

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

    // Secret grep: worker log, task log, local log copy, uploaded artifacts.
    let mut haystacks = vec![
        stderr(&out),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        log,
    ];
    for name in ["public/env.json", "public/result.txt"] {
        haystacks.push(String::from_utf8_lossy(&env.download(&id, name).await).into_owned());
    }
    for entry in std::fs::read_dir(env.dir.join("logs")).unwrap() {
        haystacks.push(std::fs::read_to_string(entry.unwrap().path()).unwrap());
    }
    let status = env.client.status(&id).await.unwrap();
    assert_eq!(status.runs.len(), 1);
    for h in &haystacks {
        assert!(!h.contains(TOKEN), "permanent token leaked");
        assert!(!h.contains("accessToken"), "a credentials document leaked");
        assert!(
            !h.contains("putUrl") && !h.contains("token="),
            "a putUrl leaked"
        );
    }
    env.stop().await;
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
    let mut ids = Vec::new();
    for (payload, _, _) in &table {
        ids.push(env.create(payload.clone()).await);
    }
    let out = env.run_worker(table.len() as u32).await;
    assert!(out.status.success(), "{}", stderr(&out));
    for (id, (payload, state, reason)) in ids.iter().zip(&table) {
        let (s, r) = env.last_run(id).await;
        assert_eq!((s, r.as_deref()), (*state, Some(*reason)), "{payload}");
        // Artifacts and the log are uploaded whatever the outcome.
        assert!(
            env.artifact_names(id)
                .await
                .contains(&"public/logs/live_backing.log".to_owned())
        );
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

#[tokio::test(flavor = "multi_thread")]
async fn reclaim_conflict_kills_the_script_and_reports_nothing() {
    let env = Env::new(Duration::from_secs(3)).await;
    let marker = env.dir.join("started");
    let id = env
        .create(json!({"behaviour": "sleep", "secs": 60, "marker": marker}))
        .await;
    let child = env.spawn_worker(&["--max-tasks", "1"]);
    wait_for_file(&marker).await;
    // "Cancel" the run from outside: resolve it with the permanent (`*`) credentials.
    env.client.report_failed(&id, 0).await.unwrap();
    let out = wait_output(child).await;
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("reclaim refused (409)"), "{log}");
    let pid = std::fs::read_to_string(&marker).unwrap();
    assert!(!alive(&pid), "the script survived the lost claim");
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Failed, Some("failed".into()))
    );
    assert!(env.artifact_names(&id).await.is_empty());
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
    let bad = env.create(json!({"maxRunTime": "soon"})).await;
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
    assert_eq!(
        env.client.status(&id).await.unwrap().state,
        TaskState::Pending
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_runs_end_to_end() {
    let out = tokio::task::spawn_blocking(|| {
        chainlock_bin()
            .arg("demo")
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", stderr(&out));
    assert!(stdout.contains("resolved: Completed"), "{stdout}");
    assert!(
        stdout.contains("public/build/signing-summary.json"),
        "{stdout}"
    );
    assert!(stdout.contains("public/logs/live_backing.log"), "{stdout}");
}
