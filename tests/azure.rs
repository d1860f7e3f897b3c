//! The legacy Azure-queue protocol (`[queue] protocol = "azure-poll"`) end to end: the real
//! `chainlock` binary, an in-process dev queue started with `azure_queue_endpoint`, and a real
//! Azure Storage queue service, Azurite (`azurite-queue` from npm, installed by
//! `scripts/setup-azurite`), all over loopback.
//!
//! Azurite is found at `tools/azurite/node_modules/.bin/azurite-queue` or `$CHAINLOCK_TEST_AZURITE`.
//! When it is missing the tests say so and pass, except under `CI`, where they fail.
//!
//! XML bombs, DTDs and oversized answers cannot travel through a real queue service (it escapes
//! message text): the pure parser's unit tests in `src/queue/azure.rs` cover them.

mod common;

use base64::Engine as _;
use chainlock::demo::seed::SIGNING_QUEUE;
use chainlock::devqueue::azure::{AzureEndpoint, queue_name};
use chainlock::ids::TaskId;
use chainlock::queue::types::{ClaimTaskRequest, TaskState};
use common::worker_env::{
    MAX_RUN_TIME, Options, UPSTREAM_ARTIFACTS, Watched, WorkerEnv, payload_schema,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

const TOKEN: &str = "permanent-TOKEN-do-not-leak-4242";

const SCRIPT: &str = r#"#!/usr/bin/env python3
import os
out = os.environ["CHAINLOCK_ARTIFACT_DIR"]
os.makedirs(os.path.join(out, "public"), exist_ok=True)
open(os.path.join(out, "public", "result.txt"), "w").write("result of " + os.environ["TASK_ID"] + "\n")
print("ran", os.environ["TASK_ID"], flush=True)
"#;

// ---- Azurite ----

/// The azurite-queue binary, or `None` (with a message) when it is not installed. Under `CI`
/// a missing Azurite is a failure.
fn azurite_bin() -> Option<PathBuf> {
    let path = std::env::var_os("CHAINLOCK_TEST_AZURITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tools/azurite/node_modules/.bin/azurite-queue")
        });
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set and Azurite is missing at {}: run scripts/setup-azurite",
        path.display()
    );
    eprintln!(
        "SKIPPED: Azurite is not installed at {} (run scripts/setup-azurite, or set \
         CHAINLOCK_TEST_AZURITE)",
        path.display()
    );
    None
}

/// A running `azurite-queue` on a loopback port, its data in `location`.
struct Azurite {
    bin: PathBuf,
    port: u16,
    location: PathBuf,
    child: Option<Child>,
}

impl Azurite {
    async fn start(bin: PathBuf, location: PathBuf) -> Azurite {
        std::fs::create_dir_all(&location).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut a = Azurite {
            bin,
            port,
            location,
            child: None,
        };
        a.restart().await;
        a
    }

    /// Starts (again) on the same port and location: queues and messages persist.
    #[allow(clippy::disallowed_methods)] // tests start real processes
    async fn restart(&mut self) {
        let child = std::process::Command::new(&self.bin)
            .arg("--queueHost")
            .arg("127.0.0.1")
            .arg("--queuePort")
            .arg(self.port.to_string())
            .arg("--location")
            .arg(&self.location)
            .arg("--silent")
            .arg("--skipApiVersionCheck")
            .arg("--disableTelemetry")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        for _ in 0..300 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("azurite-queue did not listen on port {}", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/devstoreaccount1", self.port)
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- the environment: dev queue + Azurite + seeded chains + the worker binary ----

struct Env {
    h: WorkerEnv,
    azurite: Azurite,
    azure: AzureEndpoint,
    http: reqwest::Client,
}

impl std::ops::Deref for Env {
    type Target = WorkerEnv;
    fn deref(&self) -> &WorkerEnv {
        &self.h
    }
}

impl Env {
    /// `None` when Azurite is not installed (outside CI).
    async fn new(poll_url_validity: Duration, extra: Value) -> Option<Env> {
        let bin = azurite_bin()?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let azurite = Azurite::start(bin, dir.join("azurite")).await;
        let options = Options {
            token: TOKEN,
            script: SCRIPT,
            payload_schema: payload_schema(&[MAX_RUN_TIME, UPSTREAM_ARTIFACTS]),
            claim_timeout: None,
            claim_work_timeout: Duration::from_secs(2),
            queue_extra: "protocol = \"azure-poll\"\n",
            timing: (1, 1, 2),
            config_tail: String::new(),
        };
        let h = WorkerEnv::start_in(tmp, options, |cfg| {
            cfg.azure_queue_endpoint = Some(azurite.endpoint());
            cfg.poll_url_validity = poll_url_validity;
            cfg.azure_message_extra = extra.as_object().cloned().unwrap_or_default();
        })
        .await;
        let azure = AzureEndpoint::parse(&azurite.endpoint()).unwrap();
        Some(Env {
            h,
            azurite,
            azure,
            http: reqwest::Client::new(),
        })
    }

    /// One signing task with a verifiable chain (a decision and a build task, published).
    async fn create(&self) -> TaskId {
        self.h.create(json!({"maxRunTime": 60})).await
    }

    /// A task that is pending at once (no chain: it could not verify, and need not).
    async fn create_bare(&self) -> TaskId {
        self.create_unchained_named("bare", json!({"maxRunTime": 60}))
            .await
    }

    fn queue_url(&self) -> String {
        self.azure.queue_url(&queue_name(SIGNING_QUEUE))
    }

    fn sas(&self, permissions: &str) -> String {
        let expiry = chainlock::clock::now() + chrono::Duration::minutes(30);
        self.azure
            .queue_sas(&queue_name(SIGNING_QUEUE), permissions, expiry)
            .expose()
            .to_owned()
    }

    /// Puts a message with `text` (already base64 or deliberately not) on our queue.
    async fn put_raw(&self, text: &str) {
        let body = format!("<QueueMessage><MessageText>{text}</MessageText></QueueMessage>");
        let resp = self
            .http
            .post(format!("{}/messages?{}", self.queue_url(), self.sas("a")))
            .header("content-type", "application/xml")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    async fn put_json(&self, v: Value) {
        self.put_raw(&base64::engine::general_purpose::STANDARD.encode(v.to_string()))
            .await;
    }

    /// Messages on the queue, visible or not (Azure's approximate count: exact on Azurite).
    async fn message_count(&self) -> Option<u64> {
        let resp = self
            .http
            .get(format!(
                "{}?comp=metadata&{}",
                self.queue_url(),
                self.sas("r")
            ))
            .send()
            .await
            .ok()?;
        if !resp.status().is_success() {
            return None;
        }
        resp.headers()
            .get("x-ms-approximate-messages-count")?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }

    /// Waits until the queue holds `n` messages.
    async fn wait_count(&self, n: u64) {
        for _ in 0..300 {
            if self.message_count().await == Some(n) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the Azure queue never held {n} messages (now {:?})",
            self.message_count().await
        );
    }

    /// The messages on the queue, peeked (not dequeued), decoded to JSON.
    async fn peek(&self) -> Vec<Value> {
        let resp = self
            .http
            .get(format!(
                "{}/messages?peekonly=true&numofmessages=32&{}",
                self.queue_url(),
                self.sas("r")
            ))
            .send()
            .await
            .unwrap();
        let body = resp.bytes().await.unwrap();
        let msgs = chainlock::queue::azure::parse_messages(&body, &Default::default()).unwrap();
        msgs.iter()
            .map(|m| {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(m.message_text.as_deref().unwrap())
                    .unwrap();
                serde_json::from_slice(&raw).unwrap()
            })
            .collect()
    }

    /// Waits for `w` to exit by itself after `id`; `id` completed. The log.
    async fn completed(&self, id: &TaskId, w: Watched) -> String {
        let (status, log) = w.wait_or_kill().await;
        assert!(status.success(), "{log}");
        assert_eq!(
            self.last_run(id).await,
            (TaskState::Completed, Some("completed".into())),
            "{log}"
        );
        log
    }

    async fn stop(self) {
        let Env { h, mut azurite, .. } = self;
        h.stop().await;
        azurite.stop();
    }
}

/// No SAS signature or credential reached the worker's log.
fn assert_no_secret(log: &str) {
    for needle in ["sig=", "&se=", "sp=p", TOKEN] {
        assert!(
            !log.contains(needle),
            "{needle:?} in the worker log:\n{log}"
        );
    }
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_found_and_completed_through_azurite_with_hint_id_and_extra_fields() {
    let extra = json!({"future": {"nested": [1, 2]}, "priority": "high"});
    let Some(env) = Env::new(Duration::from_secs(1800), extra).await else {
        return;
    };
    let id = env.create().await;
    env.wait_count(1).await;
    // The message as the legacy queue wrote it: taskId, runId, hintId, and newer fields.
    let msgs = env.peek().await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["taskId"], id.as_str());
    assert_eq!(msgs[0]["runId"], 0);
    assert!(msgs[0]["hintId"].is_string(), "{msgs:?}");
    assert_eq!(msgs[0]["future"]["nested"], json!([1, 2]));

    let w = env.spawn_watched(&["--max-tasks", "1"]);
    let log = env.completed(&id, w).await;
    let names = env.artifact_names(&id).await;
    for expected in [
        "public/result.txt",
        "public/chain-of-trust.json",
        "public/chain-of-trust.json.asc",
        "public/logs/chain_of_trust.log",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected}: {names:?}");
    }
    assert!(log.contains("azure-poll: poll URLs refreshed"), "{log}");
    assert!(log.contains("azure-poll: message deleted"), "{log}");
    assert!(log.contains("claimed"), "{log}");
    assert_no_secret(&log);
    env.wait_count(0).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_for_a_task_already_claimed_is_deleted_and_nothing_runs() {
    let Some(env) = Env::new(Duration::from_secs(1800), json!({})).await else {
        return;
    };
    let id = env.create_bare().await;
    env.wait_count(1).await;
    // Another worker claims the run first.
    let other = ClaimTaskRequest {
        worker_group: "wg".into(),
        worker_id: "other".into(),
    };
    env.client.claim_task(&id, 0, &other).await.unwrap();
    // And a message for a task that does not exist (claimTask 404): deleted too.
    env.put_json(json!({"taskId": TaskId::generate().as_str(), "runId": 0}))
        .await;
    let w = env.spawn_watched(&[]);
    w.wait_for("already claimed, resolved or cancelled (409)", 1)
        .await;
    env.wait_count(0).await;
    w.wait_for("azure-poll: message deleted", 2).await;
    let (status, log) = w.terminate().await;
    assert!(status.success(), "{log}");
    assert!(!log.contains("claimed trust_policy_version"), "{log}");
    let s = env.client.status(&id).await.unwrap();
    assert_eq!(s.runs.len(), 1);
    assert_eq!(s.runs[0].state, TaskState::Running);
    assert_eq!(s.runs[0].worker_id.as_deref(), Some("other"));
    assert!(!env.dir.join("logs").join(format!("{id}-0.log")).exists());
    assert_no_secret(&log);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn poll_urls_are_refreshed_before_they_expire() {
    // Valid 303 s: under the 300 s margin after 3 s, so the worker must refresh while the old
    // signatures still work.
    let Some(env) = Env::new(Duration::from_secs(303), json!({})).await else {
        return;
    };
    let w = env.spawn_watched(&["--max-tasks", "1"]);
    w.wait_for("azure-poll: poll URLs refreshed", 3).await;
    let id = env.create().await;
    env.wait_resolved_watched(&id, &w).await;
    let log = env.completed(&id, w).await;
    assert!(!log.contains("poll failed"), "{log}");
    assert_no_secret(&log);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azurite_stopped_mid_run_means_backoff_then_recovery() {
    let Some(mut env) = Env::new(Duration::from_secs(1800), json!({})).await else {
        return;
    };
    let mut w = env.spawn_watched(&["--max-tasks", "1"]);
    w.wait_for("azure-poll: poll URLs refreshed", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.azurite.stop();
    w.wait_for("azure-poll: poll failed", 3).await;
    w.wait_for("backing off", 3).await;
    assert!(w.alive(), "{}", w.log());
    env.azurite.restart().await;
    let id = env.create().await;
    env.wait_resolved_watched(&id, &w).await;
    let log = env.completed(&id, w).await;
    assert!(log.contains("retry_in_secs"), "{log}");
    assert_no_secret(&log);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_messages_are_each_deleted_and_the_worker_keeps_serving() {
    let Some(env) = Env::new(Duration::from_secs(1800), json!({})).await else {
        return;
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let slug = TaskId::generate();
    let table: Vec<(&str, String)> = vec![
        ("bad base64", "!!!not base64!!!".into()),
        ("not JSON", b64("{not json")),
        ("not an object", b64("[1, 2]")),
        ("no taskId", b64(r#"{"runId": 0}"#)),
        ("bad slugid", b64(r#"{"taskId": "asdf", "runId": 0}"#)),
        (
            "negative runId",
            b64(&format!(r#"{{"taskId": "{slug}", "runId": -1}}"#)),
        ),
        (
            "string runId",
            b64(&format!(r#"{{"taskId": "{slug}", "runId": "0"}}"#)),
        ),
        (
            "fractional runId",
            b64(&format!(r#"{{"taskId": "{slug}", "runId": 0.5}}"#)),
        ),
        (
            "duplicate keys",
            b64(&format!(
                r#"{{"taskId": "{slug}", "runId": 0, "taskId": "{slug}"}}"#
            )),
        ),
        ("empty text", String::new()),
        (
            "markup in text",
            "&lt;!DOCTYPE x [&lt;!ENTITY a 'b'&gt;]&gt;&amp;a;".into(),
        ),
        ("huge text", "A".repeat(60 * 1024)),
    ];
    // pollTaskUrls creates the Azure queue, as the worker's first call would.
    let (p, w) = SIGNING_QUEUE.split_once('/').unwrap();
    env.client.poll_task_urls(p, w).await.unwrap();
    for (_, text) in &table {
        env.put_raw(text).await;
    }
    env.wait_count(table.len() as u64).await;
    let w = env.spawn_watched(&["--max-tasks", "1"]);
    w.wait_for("malformed message, deleting it", table.len())
        .await;
    env.wait_count(0).await;
    // Still serving: a good task after all that is found and completed.
    let id = env.create().await;
    env.wait_resolved_watched(&id, &w).await;
    let log = env.completed(&id, w).await;
    assert_eq!(
        log.matches("malformed message, deleting it").count(),
        table.len(),
        "{log}"
    );
    // Nothing was claimed for any of them: the only claim is the good task's.
    assert!(!log.contains("claimTask failed"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_no_secret(&log);
    env.wait_count(0).await;
    env.stop().await;
}
