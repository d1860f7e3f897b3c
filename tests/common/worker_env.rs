//! The worker-test harness shared by `tests/worker.rs`, `tests/azure.rs` and `tests/ops.rs`:
//! a dev queue on loopback with one client, run-time `Material`, a test script and its payload
//! schema, a worker config, verifiable chains seeded with `chainlock::demo::seed`, and the real
//! `chainlock` binary (plain, or with its stderr readable while it runs). Each binary passes
//! its own script, token and config differences as [`Options`].

use chainlock::demo::seed::{
    self, CERT_NAME, CERT_SCOPE_PREFIX, Chain, ChainOptions, DocumentKey, Evidence, Link, Material,
    SEED_RUN, SIGNING_QUEUE,
};
use chainlock::devqueue::{Client, DevQueueConfig, DevQueueHandle};
use chainlock::ids::TaskId;
use chainlock::queue::QueueClient;
use chainlock::queue::types::TaskState;
use chainlock::secret::Secret;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The queue client (and the worker's credentials) of every harness.
pub const CLIENT_ID: &str = "test-worker";

/// What differs between the binaries that use the harness.
pub struct Options {
    /// The access token of [`CLIENT_ID`].
    pub token: &'static str,
    /// The test script (written to `script.py`, executable).
    pub script: &'static str,
    /// Its payload schema (written to `payload.schema.json`), e.g. from [`payload_schema`].
    pub payload_schema: String,
    /// The dev queue's claim timeout (its default when `None`).
    pub claim_timeout: Option<Duration>,
    /// How long the dev queue's `claimWork` long polls last.
    pub claim_work_timeout: Duration,
    /// Lines added to the config's `[queue]` table.
    pub queue_extra: &'static str,
    /// `[timing]`: (poll_interval_secs, backoff_min_secs, backoff_max_secs).
    pub timing: (u64, u64, u64),
    /// Text appended to the config (more tables).
    pub config_tail: String,
}

/// A temp dir with a dev queue, material, the test script and `worker.toml`.
pub struct WorkerEnv {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub queue: Option<DevQueueHandle>,
    pub root_url: String,
    pub client: QueueClient,
    pub material: Material,
    opts: Options,
}

/// A strict payload schema (no other properties) whose `properties` are the members given
/// (`"name": {schema}` each), e.g. [`MAX_RUN_TIME`] and [`UPSTREAM_ARTIFACTS`].
pub fn payload_schema(members: &[&str]) -> String {
    format!(
        r#"{{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "properties": {{
    {}
  }}
}}"#,
        members.join(",\n    ")
    )
}

pub const MAX_RUN_TIME: &str = r#""maxRunTime": {"type": "integer", "minimum": 1}"#;

/// `upstreamArtifacts` as the shipped schemas have it.
pub const UPSTREAM_ARTIFACTS: &str = r#""upstreamArtifacts": {
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
    }"#;

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chainlock::clock::now()
}

impl WorkerEnv {
    /// In a fresh temp dir.
    pub async fn start(opts: Options) -> WorkerEnv {
        WorkerEnv::start_in(tempfile::tempdir().unwrap(), opts, |_| {}).await
    }

    /// In `tmp` (which may already hold other services' state); `configure` may change the
    /// dev queue's config before it starts.
    pub async fn start_in(
        tmp: tempfile::TempDir,
        opts: Options,
        configure: impl FnOnce(&mut DevQueueConfig),
    ) -> WorkerEnv {
        let dir = std::fs::canonicalize(tmp.path()).unwrap();
        let mut cfg = DevQueueConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.join("queue"),
            vec![Client {
                client_id: CLIENT_ID.into(),
                access_token: Secret::new(opts.token),
                scopes: vec!["*".into()],
            }],
        );
        if let Some(t) = opts.claim_timeout {
            cfg.claim_timeout = t;
        }
        cfg.claim_work_timeout = opts.claim_work_timeout;
        cfg.sources_dir = Some(dir.join("material").join("sources"));
        configure(&mut cfg);
        let queue = chainlock::devqueue::start(cfg).await.unwrap();
        let root_url = queue.root_url().to_owned();
        let client = super::client_for(&queue, CLIENT_ID, opts.token);
        let script = dir.join("script.py");
        std::fs::write(&script, opts.script).unwrap();
        set_exec(&script);
        std::fs::write(dir.join("payload.schema.json"), &opts.payload_schema).unwrap();
        let material = Material::generate(&dir.join("material"), now()).unwrap();
        // Every seeded decision task must rebuild from the template the dev queue serves.
        material.serve_sources_from(&root_url).unwrap();
        let env = WorkerEnv {
            _tmp: tmp,
            dir,
            queue: Some(queue),
            root_url,
            client,
            material,
            opts,
        };
        env.write_config("worker.toml", "");
        env
    }

    /// The worker config; `extra_script` goes into `[script]` (with `isolation = "none"`
    /// unless it sets an isolation).
    pub fn config_text(&self, extra_script: &str) -> String {
        let m = &self.material;
        let o = &self.opts;
        let extra_script = if extra_script.contains("isolation") {
            extra_script.to_owned()
        } else {
            format!("isolation = \"none\"\n{extra_script}")
        };
        let (poll, backoff_min, backoff_max) = o.timing;
        format!(
            "[queue]\nroot_url = \"{}\"\ntask_queue_id = \"{SIGNING_QUEUE}\"\nworker_group = \"wg\"\n\
             worker_id = \"w1\"\n{}\n[paths]\nwork_dir = \"{}\"\nlog_dir = \"{}\"\n\n[script]\n\
             argv = [\"{}\"]\ntimeout_secs = 60\nkill_grace_secs = 1\n\
             env_allowlist = [\"PATH\"]\n{}\n[timing]\nreclaim_margin_secs = 1\n\
             poll_interval_secs = {poll}\nbackoff_min_secs = {backoff_min}\n\
             backoff_max_secs = {backoff_max}\n\n\
             [task]\npayload_schema = \"payload.schema.json\"\nscope_prefix = \"{CERT_SCOPE_PREFIX}\"\n\
             allowed_scopes = [\"{CERT_NAME}\"]\n\n\
             [chain_of_trust]\nsigning_key = \"{}\"\nworker_impl = \"chainlock\"\nkeys_dir = \"{}\"\n\
             pinned_version = {}\npinned_sha256 = \"{}\"\nstate_file = \"trust-state.json\"\n\
             max_clock_skew_seconds = 300\n\n[verify]\npolicy = \"{}\"\n{}",
            self.root_url,
            o.queue_extra,
            self.dir.join("work").display(),
            self.dir.join("logs").display(),
            self.dir.join("script.py").display(),
            extra_script,
            m.worker_key.display(),
            m.keys_dir.display(),
            m.pin.version,
            m.pin.sha256,
            m.chain_policy.display(),
            o.config_tail,
        )
    }

    pub fn write_config(&self, name: &str, extra_script: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, self.config_text(extra_script)).unwrap();
        path
    }

    /// One task with a verifiable chain.
    pub async fn create(&self, payload: Value) -> TaskId {
        self.seed(vec![payload], |_, _| {}).await.remove(0)
    }

    /// Tasks for our queue, all children of one seeded decision task and consuming the
    /// artifact of one seeded build task (an `upstreamArtifacts` entry is added unless the
    /// payload has one). `mutate` may change the upstream evidence before it is published.
    pub async fn seed(
        &self,
        payloads: Vec<Value>,
        mutate: impl FnOnce(&mut Evidence, &Chain),
    ) -> Vec<TaskId> {
        self.seed_at(payloads, mutate, None).await
    }

    /// [`WorkerEnv::seed`] with the decision task at `revision`.
    pub async fn seed_at(
        &self,
        payloads: Vec<Value>,
        mutate: impl FnOnce(&mut Evidence, &Chain),
        revision: Option<&str>,
    ) -> Vec<TaskId> {
        let (chain, tasks, evidence) = self.prepare_chain_at(payloads, mutate, revision).await;
        let scratch = self.dir.join("scratch");
        for link in [&chain.decision, &chain.build] {
            seed::run_as_worker(
                &self.client,
                link,
                &evidence.files[&link.id],
                SEED_RUN,
                &scratch,
            )
            .await
            .unwrap();
        }
        tasks.into_iter().map(|l| l.id).collect()
    }

    /// Creates the chain's tasks (the upstream ones first: a task becomes pending only once
    /// its chain is published) and returns the evidence its upstream links would publish.
    pub async fn prepare_chain(
        &self,
        payloads: Vec<Value>,
        mutate: impl FnOnce(&mut Evidence, &Chain),
    ) -> (Chain, Vec<Link>, Evidence) {
        self.prepare_chain_at(payloads, mutate, None).await
    }

    /// [`WorkerEnv::prepare_chain`] with the decision task at `revision` (default
    /// `seed::REVISION`).
    pub async fn prepare_chain_at(
        &self,
        payloads: Vec<Value>,
        mutate: impl FnOnce(&mut Evidence, &Chain),
        revision: Option<&str>,
    ) -> (Chain, Vec<Link>, Evidence) {
        let mut chain = Chain::new(
            now(),
            ChainOptions {
                docker_image: false,
                push: false,
            },
        );
        if let Some(rev) = revision {
            chain.set_revision(rev);
        }
        let mut tasks = Vec::new();
        for mut payload in payloads {
            if payload.get("upstreamArtifacts").is_none() {
                payload["upstreamArtifacts"] = json!([{
                    "taskId": chain.build.id.as_str(), "taskType": "build",
                    "paths": [seed::BUILD_ARTIFACT], "formats": ["gpg"]
                }]);
            }
            let mut link = chain.signing.clone();
            link.id = TaskId::generate();
            link.def["payload"] = payload;
            tasks.push(link);
        }
        for link in [&mut chain.decision, &mut chain.build]
            .into_iter()
            .chain(tasks.iter_mut())
        {
            self.client.create_task(&link.id, &link.def).await.unwrap();
            link.def = self.client.task(&link.id).await.unwrap();
        }
        // What the repository host serves for this decision task (check decision-rebuild).
        chain.write_sources(&self.material.sources_dir).unwrap();
        let children: Vec<&Link> = std::iter::once(&chain.build).chain(&tasks).collect();
        let graph = serde_json::to_vec_pretty(&seed::task_graph(&children)).unwrap();
        let key = DocumentKey::Ed25519(self.material.generic_worker_key());
        let mut evidence = Evidence {
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
        mutate(&mut evidence, &chain);
        (chain, tasks, evidence)
    }

    /// A task without a chain (pending at once; it never verifies), named `name`.
    pub async fn create_unchained_named(&self, name: &str, payload: Value) -> TaskId {
        let id = TaskId::generate();
        let mut def = seed::task_definition(
            &id,
            "signing",
            name,
            now(),
            &[format!("{CERT_SCOPE_PREFIX}{CERT_NAME}")],
            payload,
        );
        def["retries"] = json!(0);
        self.client.create_task(&id, &def).await.unwrap();
        id
    }

    /// A task that never reaches verification (its chain does not matter).
    pub async fn create_unchained(&self, payload: Value) -> TaskId {
        self.create_unchained_named("unchained", payload).await
    }

    /// `chainlock run --config DIR/config ARGS` with only PATH, the worker's credentials and
    /// `RUST_LOG` in its environment.
    pub fn command(&self, config: &str, args: &[&str]) -> std::process::Command {
        let mut cmd = chainlock_bin();
        cmd.arg("run")
            .arg("--config")
            .arg(self.dir.join(config))
            .args(args)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TASKCLUSTER_CLIENT_ID", CLIENT_ID)
            .env("TASKCLUSTER_ACCESS_TOKEN", self.opts.token)
            .env("RUST_LOG", "info");
        cmd
    }

    /// The worker with `worker.toml`, its stdout and stderr piped.
    pub fn spawn_worker(&self, args: &[&str]) -> Child {
        self.command("worker.toml", args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A worker whose stderr is readable while it runs.
    pub fn spawn_watched(&self, args: &[&str]) -> Watched {
        let mut child = self
            .command("worker.toml", args)
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

    pub async fn run_worker(&self, max_tasks: u32) -> Output {
        let child = self.spawn_worker(&["--max-tasks", &max_tasks.to_string()]);
        wait_output(child).await
    }

    /// The names of the task's latest artifacts, sorted.
    pub async fn artifact_names(&self, id: &TaskId) -> Vec<String> {
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

    /// (state, reasonResolved) of the last run.
    pub async fn last_run(&self, id: &TaskId) -> (TaskState, Option<String>) {
        let s = self.client.status(id).await.unwrap();
        let r = s.runs.last().unwrap();
        (r.state, r.reason_resolved.clone())
    }

    pub async fn wait_resolved(&self, id: &TaskId) {
        self.wait_resolved_or_show(id, None).await
    }

    /// [`Self::wait_resolved`], showing `w`'s log when the task never resolves.
    pub async fn wait_resolved_watched(&self, id: &TaskId, w: &Watched) {
        self.wait_resolved_or_show(id, Some(w)).await
    }

    async fn wait_resolved_or_show(&self, id: &TaskId, w: Option<&Watched>) {
        for _ in 0..1200 {
            let s = self.client.status(id).await.unwrap();
            if s.runs.last().is_some_and(|r| r.reason_resolved.is_some()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match w {
            Some(w) => panic!("task {id} never resolved:\n{}", w.log()),
            None => panic!("task {id} never resolved"),
        }
    }

    pub async fn stop(mut self) {
        if let Some(q) = self.queue.take() {
            q.shutdown().await;
        }
    }
}

/// A running worker whose stderr is collected as it comes; killed if dropped still running.
pub struct Watched {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Watched {
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until `needle` occurs at least `n` times in the worker's log.
    pub async fn wait_for(&self, needle: &str, n: usize) {
        for _ in 0..1200 {
            if self.count(needle) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{needle:?} never appeared {n} time(s):\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits (as long as it takes) for the worker to exit; the exit status and the whole log.
    pub async fn wait(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let reader = self.reader.take().unwrap();
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let status = child.wait().unwrap();
            reader.join().unwrap();
            let text = log.lock().unwrap().clone();
            (status, text)
        })
        .await
        .unwrap()
    }

    /// SIGTERM (stop claiming), then [`Self::wait_or_kill`].
    pub async fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait_child(&mut child).await
    }

    /// Waits up to 60 s for the worker to exit by itself (`--max-tasks`); kills it and panics
    /// if it does not.
    pub async fn wait_or_kill(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        self.wait_child(&mut child).await
    }

    async fn wait_child(&mut self, child: &mut Child) -> (ExitStatus, String) {
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

/// The real binary under test (tests may start processes; the library may not).
#[allow(clippy::disallowed_methods)]
pub fn chainlock_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_chainlock"))
}

pub fn set_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

pub async fn wait_output(child: Child) -> Output {
    tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Waits up to `limit` for `p` to exist and not be empty.
pub async fn wait_for_file(p: &Path, limit: Duration) {
    for _ in 0..limit.as_millis() / 50 {
        if std::fs::metadata(p).is_ok_and(|m| m.len() > 0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never appeared", p.display());
}
