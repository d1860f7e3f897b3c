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

use base64::Engine as _;
use chainlock::demo::seed::{
    self, CERT_NAME, CERT_SCOPE_PREFIX, Chain, ChainOptions, DocumentKey, Evidence, Link, Material,
    SEED_RUN, SIGNING_QUEUE,
};
use chainlock::devqueue::azure::{AzureEndpoint, queue_name};
use chainlock::devqueue::{Client, DevQueueConfig, DevQueueHandle};
use chainlock::ids::TaskId;
use chainlock::queue::types::{ClaimTaskRequest, TaskState};
use chainlock::queue::{Credentials, QueueClient, RetryPolicy};
use chainlock::secret::Secret;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "permanent-TOKEN-do-not-leak-4242";

const SCRIPT: &str = r#"#!/usr/bin/env python3
import os
out = os.environ["CHAINLOCK_ARTIFACT_DIR"]
os.makedirs(os.path.join(out, "public"), exist_ok=True)
open(os.path.join(out, "public", "result.txt"), "w").write("result of " + os.environ["TASK_ID"] + "\n")
print("ran", os.environ["TASK_ID"], flush=True)
"#;

const PAYLOAD_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "maxRunTime": {"type": "integer", "minimum": 1},
    "upstreamArtifacts": {
      "type": "array",
      "items": {
        "type": "object",
        "additionalProperties": false,
        "required": ["taskId", "taskType", "paths"],
        "properties": {
          "taskId": {"type": "string", "format": "slugid"},
          "taskType": {"type": "string"},
          "paths": {"type": "array", "items": {"type": "string", "format": "artifact-path"}},
          "formats": {"type": "array", "items": {"type": "string"}}
        }
      }
    }
  }
}"#;

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
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    queue: Option<DevQueueHandle>,
    client: QueueClient,
    material: Material,
    azurite: Azurite,
    azure: AzureEndpoint,
    http: reqwest::Client,
}

impl Env {
    /// `None` when Azurite is not installed (outside CI).
    async fn new(poll_url_validity: Duration, extra: Value) -> Option<Env> {
        let bin = azurite_bin()?;
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let azurite = Azurite::start(bin, dir.join("azurite")).await;
        let mut cfg = DevQueueConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join("queue"),
            vec![Client {
                client_id: "test-worker".into(),
                access_token: Secret::new(TOKEN),
                scopes: vec!["*".into()],
            }],
        );
        cfg.claim_work_timeout = Duration::from_secs(2);
        cfg.azure_queue_endpoint = Some(azurite.endpoint());
        cfg.poll_url_validity = poll_url_validity;
        cfg.azure_message_extra = extra.as_object().cloned().unwrap_or_default();
        let queue = chainlock::devqueue::start(cfg).await.unwrap();
        let client = QueueClient::new(
            queue.root_url(),
            Some(Credentials::permanent("test-worker", Secret::new(TOKEN))),
            RetryPolicy::fast_for_tests(),
        )
        .unwrap();
        let script = dir.join("script.py");
        std::fs::write(&script, SCRIPT).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("payload.schema.json"), PAYLOAD_SCHEMA).unwrap();
        let material = Material::generate(&dir.join("material"), chainlock::clock::now()).unwrap();
        let azure = AzureEndpoint::parse(&azurite.endpoint()).unwrap();
        let env = Env {
            _tmp: tmp,
            dir,
            queue: Some(queue),
            client,
            material,
            azurite,
            azure,
            http: reqwest::Client::new(),
        };
        std::fs::write(env.dir.join("worker.toml"), env.config_text()).unwrap();
        Some(env)
    }

    fn root_url(&self) -> String {
        self.queue.as_ref().unwrap().root_url().to_owned()
    }

    fn config_text(&self) -> String {
        let m = &self.material;
        format!(
            "[queue]\nroot_url = \"{}\"\ntask_queue_id = \"{SIGNING_QUEUE}\"\nworker_group = \"wg\"\n\
             worker_id = \"w1\"\nprotocol = \"azure-poll\"\n\n[paths]\nwork_dir = \"{}\"\n\
             log_dir = \"{}\"\n\n[script]\nargv = [\"{}\"]\ntimeout_secs = 60\nkill_grace_secs = 1\n\
             env_allowlist = [\"PATH\"]\nisolation = \"none\"\n\n[timing]\nreclaim_margin_secs = 1\n\
             poll_interval_secs = 1\nbackoff_min_secs = 1\nbackoff_max_secs = 2\n\n\
             [task]\npayload_schema = \"payload.schema.json\"\nscope_prefix = \"{CERT_SCOPE_PREFIX}\"\n\
             allowed_scopes = [\"{CERT_NAME}\"]\n\n\
             [chain_of_trust]\nsigning_key = \"{}\"\nworker_impl = \"chainlock\"\nkeys_dir = \"{}\"\n\
             pinned_version = {}\npinned_sha256 = \"{}\"\nstate_file = \"trust-state.json\"\n\
             max_clock_skew_seconds = 300\n\n[verify]\npolicy = \"{}\"\n",
            self.root_url(),
            self.dir.join("work").display(),
            self.dir.join("logs").display(),
            self.dir.join("script.py").display(),
            m.worker_key.display(),
            m.keys_dir.display(),
            m.pin.version,
            m.pin.sha256,
            m.chain_policy.display(),
        )
    }

    /// One signing task with a verifiable chain (a decision and a build task, published).
    async fn create(&self) -> TaskId {
        let now = chainlock::clock::now();
        let mut chain = Chain::new(
            now,
            ChainOptions {
                docker_image: false,
                push: false,
            },
        );
        let mut task: Link = chain.signing.clone();
        task.id = TaskId::generate();
        task.def["payload"] = json!({"maxRunTime": 60, "upstreamArtifacts": [{
            "taskId": chain.build.id.as_str(), "taskType": "build",
            "paths": [seed::BUILD_ARTIFACT], "formats": ["gpg"]
        }]});
        // The upstream tasks first: the signing task becomes pending (and gets its Azure
        // message) only once its chain is published, so nothing claims it too early.
        for link in [&mut chain.decision, &mut chain.build] {
            self.client.create_task(&link.id, &link.def).await.unwrap();
            link.def = self.client.task(&link.id).await.unwrap();
        }
        self.client.create_task(&task.id, &task.def).await.unwrap();
        task.def = self.client.task(&task.id).await.unwrap();
        let children: Vec<&Link> = vec![&chain.build, &task];
        let graph = serde_json::to_vec_pretty(&seed::task_graph(&children)).unwrap();
        let key = DocumentKey::Ed25519(self.material.generic_worker_key());
        let evidence = Evidence {
            files: BTreeMap::from([
                (
                    chain.decision.id.clone(),
                    seed::evidence_files(
                        &chain.decision,
                        BTreeMap::from([(seed::TASK_GRAPH.to_owned(), graph)]),
                        SEED_RUN,
                        key,
                    )
                    .unwrap(),
                ),
                (
                    chain.build.id.clone(),
                    seed::evidence_files(&chain.build, BTreeMap::new(), SEED_RUN, key).unwrap(),
                ),
            ]),
        };
        for link in [&chain.decision, &chain.build] {
            seed::run_as_worker(
                &self.client,
                link,
                &evidence.files[&link.id],
                SEED_RUN,
                &self.dir.join("scratch"),
            )
            .await
            .unwrap();
        }
        task.id
    }

    /// A task that is pending at once (no chain: it could not verify, and need not).
    async fn create_bare(&self) -> TaskId {
        let id = TaskId::generate();
        let mut def = seed::task_definition(
            &id,
            "signing",
            "bare",
            chainlock::clock::now(),
            &[format!("{CERT_SCOPE_PREFIX}{CERT_NAME}")],
            json!({"maxRunTime": 60}),
        );
        def["retries"] = json!(0);
        self.client.create_task(&id, &def).await.unwrap();
        id
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

    #[allow(clippy::disallowed_methods)] // tests run the real binary
    fn spawn_worker(&self, args: &[&str]) -> Watched {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_chainlock"))
            .arg("run")
            .arg("--config")
            .arg(self.dir.join("worker.toml"))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TASKCLUSTER_CLIENT_ID", "test-worker")
            .env("TASKCLUSTER_ACCESS_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Watched {
            child: Some(child),
            log,
            reader: Some(reader),
        }
    }

    async fn last_run(&self, id: &TaskId) -> (TaskState, Option<String>) {
        let s = self.client.status(id).await.unwrap();
        let r = s.runs.last().unwrap();
        (r.state, r.reason_resolved.clone())
    }

    async fn wait_resolved(&self, id: &TaskId, w: &Watched) {
        for _ in 0..1200 {
            let s = self.client.status(id).await.unwrap();
            if s.runs.last().is_some_and(|r| r.reason_resolved.is_some()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("task {id} never resolved:\n{}", w.log());
    }

    async fn stop(mut self) {
        if let Some(q) = self.queue.take() {
            q.shutdown().await;
        }
        self.azurite.stop();
    }
}

/// A running worker whose stderr is collected as it comes.
struct Watched {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    async fn wait_for(&self, needle: &str, n: usize) {
        for _ in 0..1200 {
            if self.count(needle) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{needle:?} never appeared {n} time(s):\n{}", self.log());
    }

    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM (stop claiming), then the exit status and the whole log.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait_child(&mut child).await
    }

    /// Waits for the worker to exit by itself (`--max-tasks`).
    async fn wait(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        self.wait_child(&mut child).await
    }

    async fn wait_child(&mut self, child: &mut Child) -> (std::process::ExitStatus, String) {
        let mut status = None;
        for _ in 0..1200 {
            if let Some(s) = child.try_wait().unwrap() {
                status = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let Some(status) = status else {
            let _ = child.kill();
            panic!("the worker did not exit:\n{}", self.log());
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.log())
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
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

    let w = env.spawn_worker(&["--max-tasks", "1"]);
    let (status, log) = w.wait().await;
    assert!(status.success(), "{log}");
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{log}"
    );
    let names: Vec<String> = env
        .client
        .list_latest_artifacts(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
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
    let w = env.spawn_worker(&[]);
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
    let w = env.spawn_worker(&["--max-tasks", "1"]);
    w.wait_for("azure-poll: poll URLs refreshed", 3).await;
    let id = env.create().await;
    env.wait_resolved(&id, &w).await;
    let (status, log) = w.wait().await;
    assert!(status.success(), "{log}");
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{log}"
    );
    assert!(!log.contains("poll failed"), "{log}");
    assert_no_secret(&log);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn azurite_stopped_mid_run_means_backoff_then_recovery() {
    let Some(mut env) = Env::new(Duration::from_secs(1800), json!({})).await else {
        return;
    };
    let mut w = env.spawn_worker(&["--max-tasks", "1"]);
    w.wait_for("azure-poll: poll URLs refreshed", 1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    env.azurite.stop();
    w.wait_for("azure-poll: poll failed", 3).await;
    w.wait_for("backing off", 3).await;
    assert!(w.alive(), "{}", w.log());
    env.azurite.restart().await;
    let id = env.create().await;
    env.wait_resolved(&id, &w).await;
    let (status, log) = w.wait().await;
    assert!(status.success(), "{log}");
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{log}"
    );
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
    let w = env.spawn_worker(&["--max-tasks", "1"]);
    w.wait_for("malformed message, deleting it", table.len())
        .await;
    env.wait_count(0).await;
    // Still serving: a good task after all that is found and completed.
    let id = env.create().await;
    env.wait_resolved(&id, &w).await;
    let (status, log) = w.wait().await;
    assert!(status.success(), "{log}");
    assert_eq!(
        env.last_run(&id).await,
        (TaskState::Completed, Some("completed".into())),
        "{log}"
    );
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
