//! The reference implementation for comparison: mozilla-releng's Python scriptworker run as a
//! Taskcluster worker against the same in-process dev queue as the `task` section, at the same
//! injected latencies, with the same per-task wall and round-trip definitions, so that the
//! README can put chainlock's per-task wall next to scriptworker's.
//!
//! Scriptworker is configured as lightly as it goes: chain-of-trust verification and signing
//! off, and a task script (`sh -c`) that writes 6 small text artifacts. It still writes and
//! uploads `public/chain-of-trust.json` (unsigned) and `public/logs/live_backing.log`, as it
//! always does. It comes from a Python virtualenv: `$CHAINLOCK_BENCH_PYTHON_VENV`, or `.venv`
//! in the repository (`scripts/setup test` installs it); without `bin/scriptworker` there the
//! section prints one row saying it was skipped.
//!
//! Scriptworker has no task limit, so the bench watches the dev queue's request log and kills
//! the process once N tasks have been resolved; the measurement is taken from that log, so
//! neither its start-up (Python imports) nor the kill count.

use super::fetch::{self, BENCH_CLIENT};
use super::{Row, Settings};
use chainlock::devqueue::{DevQueueHandle, RequestRecord};
use chainlock::ids::TaskId;
use chainlock::queue::types::{TaskState, format_time};
use chainlock::queue::{QueueClient, RetryPolicy};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `provisionerId/workerType` of the benchmark tasks.
const PROVISIONER: &str = "chainlock-bench";
const WORKER_TYPE: &str = "scriptworker";
/// Artifacts the task script writes.
const ARTIFACTS: u32 = 6;
/// Longest a whole latency step may take before the bench gives up (scriptworker is stuck).
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

/// The virtualenv holding scriptworker, if it has `bin/scriptworker` and `bin/python`.
fn venv() -> Result<PathBuf, PathBuf> {
    let dir = std::env::var_os("CHAINLOCK_BENCH_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv"));
    if dir.join("bin/scriptworker").is_file() && dir.join("bin/python").exists() {
        Ok(dir)
    } else {
        Err(dir)
    }
}

/// Whole tasks through scriptworker against a dev queue answering every request `L` ms late:
/// per-task wall, requests and sequential round trips per task, and the slope (as `task`).
#[allow(clippy::disallowed_methods)] // the benchmark runs the real scriptworker
pub fn tasks(settings: &Settings) -> Vec<Row> {
    let venv = match venv() {
        Ok(v) => v,
        Err(dir) => {
            return vec![Row {
                name: "scriptworker task".into(),
                time: Duration::ZERO,
                rate: "-".into(),
                rss: None,
                note: format!(
                    "no scriptworker in {} (set CHAINLOCK_BENCH_PYTHON_VENV): skipped",
                    dir.display()
                ),
            }];
        }
    };
    let version = std::process::Command::new(venv.join("bin/python"))
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('scriptworker'))",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into());
    fetch::runtime().block_on(run(settings, &venv, &version))
}

async fn run(settings: &Settings, venv: &Path, version: &str) -> Vec<Row> {
    let n: u32 = if settings.quick { 2 } else { 5 };
    let mut rows = Vec::new();
    let mut walls: Vec<(u64, Duration)> = Vec::new();
    for &ms in fetch::latencies(settings) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (h, creds) = fetch::plain_latency_queue(tmp.path(), ms).await;
        let client =
            QueueClient::new(h.root_url(), Some(creds), RetryPolicy::standard()).expect("client");
        let mut ids = Vec::new();
        for i in 0..n {
            let id = TaskId::generate();
            client
                .create_task(&id, &task_definition(i))
                .await
                .expect("createTask");
            ids.push(id);
        }
        let config = write_config(tmp.path(), h.root_url());
        h.clear_requests();
        let log = run_scriptworker(&h, venv, &config, tmp.path(), n).await;
        let mut completed = 0;
        for id in &ids {
            let status = client.status(id).await.expect("task status");
            if status.state == TaskState::Completed {
                completed += 1;
            }
        }
        h.shutdown().await;
        assert_eq!(completed, n as usize, "every benchmark task completes");
        let (per_task, log) = fetch::window(&log, n);
        walls.push((ms, per_task));
        rows.push(fetch::task_row(
            format!("scriptworker task +{ms} ms"),
            per_task,
            &log,
            n,
            &format!(", scriptworker {version}"),
        ));
    }
    rows.extend(fetch::slope_row(
        "scriptworker task slope",
        &walls,
        "per-task wall",
    ));
    rows
}

/// A task scriptworker accepts (its schema only wants a `payload` object, `maxRunTime` an
/// integer when present).
fn task_definition(i: u32) -> serde_json::Value {
    let now = chainlock::clock::now();
    serde_json::json!({
        "taskQueueId": format!("{PROVISIONER}/{WORKER_TYPE}"),
        "created": format_time(now),
        "deadline": format_time(now + chrono::Duration::hours(1)),
        "expires": format_time(now + chrono::Duration::days(1)),
        "scopes": [],
        "payload": {"maxRunTime": 600},
        "metadata": {
            "name": format!("scriptworker bench task {i}"),
            "description": "chainlock benchmark: a task script writing small artifacts",
            "owner": "bench@example.com",
            "source": "https://example.com/chainlock/bench"
        }
    })
}

/// Writes scriptworker's config (JSON is YAML) under `dir` and returns its path.
fn write_config(dir: &Path, root_url: &str) -> PathBuf {
    let sw = dir.join("scriptworker");
    let artifact_dir = sw.join("artifacts");
    // `$1` is the artifact directory (scriptworker recreates it empty before every task).
    let script = format!(
        "mkdir -p \"$1/public\" && for i in $(seq 1 {ARTIFACTS}); do \
         echo \"artifact $i of task $TASK_ID run $RUN_ID\" > \"$1/public/file-$i.txt\"; done"
    );
    let config = serde_json::json!({
        "taskcluster_root_url": root_url,
        "credentials": {"clientId": BENCH_CLIENT.0, "accessToken": BENCH_CLIENT.1},
        "provisioner_id": PROVISIONER,
        "worker_type": WORKER_TYPE,
        "worker_group": "bench",
        "worker_id": "scriptworker-1",
        "work_dir": sw.join("work"),
        "log_dir": sw.join("logs"),
        "artifact_dir": artifact_dir,
        "task_log_dir": artifact_dir.join("public/logs"),
        // Unused with signing off, but "..." (the default) fails the config check.
        "ed25519_private_key_path": sw.join("unused-ed25519.key"),
        "verify_chain_of_trust": false,
        "sign_chain_of_trust": false,
        // Whole seconds (the config check wants an int). Only waited after an empty
        // claimWork, which does not happen while the benchmark's tasks are pending.
        "poll_interval": 1,
        "task_script": ["sh", "-c", script, "sh", artifact_dir],
        // Not DEBUG on stderr: its log file (INFO) is enough.
        "verbose": false
    });
    std::fs::create_dir_all(&sw).expect("scriptworker dir");
    let path = sw.join("scriptworker.yaml");
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("config");
    path
}

/// Kills the child when dropped (a failed assertion must not leave scriptworker running).
struct Killer(std::process::Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs scriptworker until `n` tasks have been resolved (as the request log shows), kills it,
/// and returns the request log.
#[allow(clippy::disallowed_methods)] // the benchmark runs the real scriptworker
async fn run_scriptworker(
    h: &DevQueueHandle,
    venv: &Path,
    config: &Path,
    dir: &Path,
    n: u32,
) -> Vec<RequestRecord> {
    let out_path = dir.join("scriptworker.out");
    let out = std::fs::File::create(&out_path).expect("scriptworker output file");
    let child = std::process::Command::new(venv.join("bin/scriptworker"))
        .arg(config)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().expect("output file"))
        .stderr(out)
        .spawn()
        .expect("start scriptworker");
    let mut child = Killer(child);
    let started = Instant::now();
    loop {
        let resolved = h
            .requests()
            .iter()
            .filter(|r| fetch::is_resolution(r))
            .count();
        if resolved >= n as usize {
            break;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "{}",
                failure(&out_path, dir, &format!("exited early ({status})"))
            );
        }
        if started.elapsed() > STEP_TIMEOUT {
            let why = format!("resolved {resolved} of {n} tasks in {STEP_TIMEOUT:?}");
            panic!("{}", failure(&out_path, dir, &why));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(child);
    h.requests()
}

/// What to say when scriptworker fails: `why` and the tails of its output and its log.
fn failure(out_path: &Path, dir: &Path, why: &str) -> String {
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    format!(
        "scriptworker {why}\n--- output ---\n{}\n--- worker.log ---\n{}",
        tail(out_path),
        tail(&dir.join("scriptworker/logs/worker.log"))
    )
}
