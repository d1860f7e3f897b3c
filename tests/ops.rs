//! Operations tests (issue 13, "Metrics" and "systemd and health"): the real `chainlock`
//! binary runs real tasks against the in-process dev queue over loopback; the tests scrape its
//! `[metrics] listen` endpoint with an HTTP client, check the scrape with the real
//! `promtool check metrics`, ask `/healthz` and `/readyz`, and receive its `sd_notify`
//! messages on a unix datagram socket they bind and pass as `NOTIFY_SOCKET`.
//!
//! The chains are seeded by the harness shared with `tests/worker.rs` and `tests/azure.rs`
//! (`tests/common/worker_env.rs`: run-time keys, a root-signed trust store, a decision task
//! and a build task whose signed documents cover what the task consumes).

mod common;

use chainlock::demo::seed;
use chainlock::queue::types::TaskState;
use common::worker_env::{Options, WorkerEnv, payload_schema, stderr, wait_output};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "permanent-TOKEN-do-not-leak-1313";

/// The test script: `ok` writes one artifact; `sleep` writes its marker, then sleeps.
const SCRIPT: &str = r#"#!/usr/bin/env python3
import json, os, time
work = os.environ["CHAINLOCK_WORK_DIR"]; out = os.environ["CHAINLOCK_ARTIFACT_DIR"]
p = json.load(open(os.path.join(work, "task.json")))["payload"]
os.makedirs(os.path.join(out, "public"), exist_ok=True)
open(os.path.join(out, "public", "result.txt"), "w").write("result " * 1000)
if "marker" in p: open(p["marker"], "w").write(str(os.getpid()))
if p.get("behaviour") == "sleep": time.sleep(p["secs"])
"#;

/// The payload properties of the test script (`upstreamArtifacts` only as an array).
const PAYLOAD_PROPERTIES: &[&str] = &[
    r#""behaviour": {"enum": ["ok", "sleep"]}"#,
    r#""secs": {"type": "number"}"#,
    r#""marker": {"type": "string"}"#,
    r#""upstreamArtifacts": {"type": "array"}"#,
];

struct Env {
    h: WorkerEnv,
    /// `[metrics] listen`.
    listen: String,
}

impl std::ops::Deref for Env {
    type Target = WorkerEnv;
    fn deref(&self) -> &WorkerEnv {
        &self.h
    }
}

impl Env {
    async fn new() -> Env {
        // A free loopback port (released again for the worker to bind).
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let h = WorkerEnv::start(Options {
            token: TOKEN,
            script: SCRIPT,
            payload_schema: payload_schema(PAYLOAD_PROPERTIES),
            claim_timeout: None,
            claim_work_timeout: Duration::from_secs(1),
            queue_extra: "",
            timing: (0, 0, 1),
            config_tail: format!("\n[metrics]\nlisten = \"{listen}\"\n"),
        })
        .await;
        Env { h, listen }
    }

    fn config_text(&self) -> String {
        self.h.config_text("")
    }

    /// The worker with `config`, its stdout and stderr piped, plus `env`.
    fn spawn(&self, config: &str, env: &[(&str, &str)]) -> Child {
        self.command(config, &[])
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.listen)
    }

    async fn stop(self) {
        self.h.stop().await
    }
}

/// SIGTERM, then the worker's exit, which must be a success.
async fn terminate(child: Child) -> Output {
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let out = wait_output(child).await;
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

async fn wait_for_file(p: &Path) {
    common::worker_env::wait_for_file(p, Duration::from_secs(60)).await
}

/// (status, content type, body) of a GET; `None` while nothing listens.
async fn get(url: &str, accept: Option<&str>) -> Option<(u16, String, String)> {
    let http = reqwest::Client::new();
    let mut req = http.get(url).timeout(Duration::from_secs(10));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.ok()?;
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Some((status, ct, resp.text().await.ok()?))
}

/// Polls `url` until it answers `status`.
async fn wait_status(url: &str, status: u16) -> String {
    let mut last = None;
    for _ in 0..1200 {
        if let Some((s, _, body)) = get(url, None).await {
            if s == status {
                return body;
            }
            last = Some((s, body));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered {status}; last: {last:?}");
}

/// The value of the sample `name{labels}` (exact text up to the value) in a scrape.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn must(scrape: &str, series: &str) -> f64 {
    sample(scrape, series).unwrap_or_else(|| panic!("no {series} in:\n{scrape}"))
}

/// `promtool check metrics` on `scrape`: the real linter of the exposition format. Without
/// promtool the check is skipped with a message, except under CI, where it fails.
#[allow(clippy::disallowed_methods)] // tests run real tools
fn promtool_check(scrape: &str) {
    use std::io::Write as _;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "promtool is missing under CI: scripts/setup test installs it (Debian package \
                 prometheus)"
            );
            eprintln!(
                "SKIPPED promtool check metrics: promtool not installed (scripts/setup test)"
            );
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- scrape:\n{scrape}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_tasks_pass_promtool_and_health_follows_draining() {
    let env = Env::new().await;
    let ok = env.seed(vec![json!({"behaviour": "ok"})], |_, _| {}).await;
    let tampered = env
        .seed(vec![json!({"behaviour": "ok"})], |ev, chain| {
            ev.tamper_byte(&chain.build.id, seed::BUILD_ARTIFACT)
                .unwrap()
        })
        .await;
    let child = env.spawn("worker.toml", &[]);

    wait_status(&env.url("/readyz"), 200).await;
    env.wait_resolved(&ok[0]).await;
    env.wait_resolved(&tampered[0]).await;
    assert_eq!(env.last_run(&ok[0]).await.0, TaskState::Completed);
    assert_eq!(
        env.last_run(&tampered[0]).await,
        (TaskState::Exception, Some("malformed-payload".into()))
    );

    // A third task keeps the worker busy while it drains.
    let marker = env.dir.join("running");
    let busy = env
        .seed(
            vec![json!({"behaviour": "sleep", "secs": 20, "marker": marker})],
            |_, _| {},
        )
        .await;
    wait_for_file(&marker).await;
    assert_eq!(
        get(&env.url("/healthz"), None).await.map(|r| (r.0, r.2)),
        Some((200, "ok\n".to_owned())),
        "alive while a task runs"
    );
    assert_eq!(wait_status(&env.url("/readyz"), 200).await, "ready\n");
    signal(&child, nix::sys::signal::Signal::SIGUSR1);
    let why = wait_status(&env.url("/readyz"), 503).await;
    assert!(why.contains("draining"), "{why}");
    assert_eq!(wait_status(&env.url("/healthz"), 200).await, "ok\n");

    let (status, content_type, scrape) = get(&env.url("/metrics"), None).await.unwrap();
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    promtool_check(&scrape);

    assert_eq!(must(&scrape, "chainlock_tasks_claimed_total"), 3.0);
    assert_eq!(
        must(
            &scrape,
            "chainlock_tasks_resolved_total{outcome=\"completed\",reason=\"none\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &scrape,
            "chainlock_tasks_resolved_total{outcome=\"exception\",reason=\"malformed-payload\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &scrape,
            "chainlock_cot_verifications_total{result=\"pass\"}"
        ),
        2.0
    );
    assert_eq!(
        must(
            &scrape,
            "chainlock_cot_verifications_total{result=\"fail\"}"
        ),
        1.0
    );
    assert_eq!(
        must(
            &scrape,
            "chainlock_cot_failed_checks_total{check=\"artifacts\"}"
        ),
        1.0
    );
    assert!(must(&scrape, "chainlock_uploaded_bytes_total") > 0.0);
    assert!(must(&scrape, "chainlock_downloaded_bytes_total") > 0.0);
    assert_eq!(
        must(&scrape, "chainlock_trust_policy_version"),
        env.material.pin.version as f64
    );
    assert_eq!(must(&scrape, "chainlock_trust_policy_usable"), 1.0);
    assert!(must(&scrape, "chainlock_worker_key_expiry_remaining_seconds") > 0.0);
    assert!(must(&scrape, "chainlock_trust_policy_expiry_remaining_seconds") > 0.0);
    assert!(
        scrape.lines().any(|l| l.starts_with(
            "chainlock_trusted_key_expiry_remaining_seconds{worker_impl=\"chainlock\","
        )),
        "{scrape}"
    );
    assert_eq!(must(&scrape, "chainlock_draining"), 1.0);
    let build = format!(
        "chainlock_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(scrape.contains(&build), "{scrape}");
    // Each stage observed once per run that went through it: the completed task all of them,
    // the refused one up to verification and then its logs (sign, upload, report), the busy
    // one up to its script, which is still running.
    for (stage, runs) in [
        ("validate", 3.0),
        ("verify", 3.0),
        ("script", 1.0),
        ("collect", 1.0),
        ("sign", 2.0),
        ("upload", 2.0),
        ("report", 2.0),
    ] {
        let series = format!("chainlock_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(must(&scrape, &series), runs, "{stage}");
    }
    assert!(
        must(
            &scrape,
            "chainlock_stage_duration_seconds_count{stage=\"claim\"}"
        ) >= 3.0
    );
    // No label carries task data or a secret.
    for id in ok.iter().chain(&tampered).chain(&busy) {
        assert!(!scrape.contains(id.as_str()), "{id} in the scrape");
    }
    assert!(!scrape.contains(TOKEN));

    // Prometheus itself asks for OpenMetrics.
    let (status, content_type, open) = get(
        &env.url("/metrics"),
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(open.contains("# TYPE chainlock_tasks_claimed counter\n"));

    // SIGTERM ends the drained worker's task now (worker-shutdown) instead of in 20 s.
    terminate(child).await;
    assert_eq!(
        env.last_run(&busy[0]).await,
        (TaskState::Exception, Some("worker-shutdown".into()))
    );
    env.stop().await;
}

/// Every `sd_notify` line the worker sent, in arrival order.
struct NotifySocket {
    path: PathBuf,
    lines: Arc<Mutex<Vec<String>>>,
    _reader: std::thread::JoinHandle<()>,
}

impl NotifySocket {
    fn bind(path: PathBuf) -> NotifySocket {
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        // The thread ends with the test binary; the socket file goes with the temp dir.
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let mut lines = sink.lock().unwrap();
                lines.extend(text.lines().map(str::to_owned));
            }
        });
        NotifySocket {
            path,
            lines,
            _reader: reader,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn position(&self, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines().iter().position(|l| pred(l))
    }

    async fn wait_for(&self, pred: impl Fn(&[String]) -> bool, what: &str) {
        for _ in 0..1200 {
            if pred(&self.lines()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what} never arrived: {:#?}", self.lines());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sd_notify_ready_after_start_up_status_per_stage_watchdog_and_stopping() {
    let env = Env::new().await;
    let notify = NotifySocket::bind(env.dir.join("notify.sock"));
    let socket = notify.path.display().to_string();
    // The watchdog interval systemd would pass: pings every half of it.
    let sd_env = [
        ("NOTIFY_SOCKET", socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];

    // Start-up fails (the trust store does not match its pin): exit 64, never READY=1.
    let bad = env
        .config_text()
        .replace(&env.material.pin.sha256, &"0".repeat(64));
    std::fs::write(env.dir.join("bad.toml"), bad).unwrap();
    let out = wait_output(env.spawn("bad.toml", &sd_env)).await;
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        notify.position(|l| l == "READY=1").is_none(),
        "READY=1 after a failed start-up: {:#?}",
        notify.lines()
    );
    let before = notify.lines().len();

    let ok = env.seed(vec![json!({"behaviour": "ok"})], |_, _| {}).await;
    let marker = env.dir.join("running");
    let busy = env
        .seed(
            vec![json!({"behaviour": "sleep", "secs": 30, "marker": marker})],
            |_, _| {},
        )
        .await;
    let child = env.spawn("worker.toml", &sd_env);
    env.wait_resolved(&ok[0]).await;
    wait_for_file(&marker).await;
    let script_status = format!("STATUS=script task {} run 0", busy[0]);
    notify
        .wait_for(|l| l.contains(&script_status), "the script stage's STATUS")
        .await;
    // The watchdog keeps being fed while the script runs.
    let at_script = notify.position(|l| l == script_status).unwrap();
    notify
        .wait_for(
            |l| {
                l.iter()
                    .skip(at_script)
                    .filter(|x| x.as_str() == "WATCHDOG=1")
                    .count()
                    >= 3
            },
            "WATCHDOG=1 while the script runs",
        )
        .await;
    terminate(child).await;

    let lines: Vec<String> = notify.lines().split_off(before);
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| l == want)
            .unwrap_or_else(|| panic!("no {want:?} in {lines:#?}"))
    };
    let ready = at("READY=1");
    // Nothing about claiming or tasks before READY=1: it comes when start-up is done.
    assert!(
        lines[..ready].iter().all(|l| !l.starts_with("STATUS=")),
        "{lines:#?}"
    );
    let first_claim = at("STATUS=claim: waiting for a task");
    assert!(ready < first_claim, "{lines:#?}");
    // Every stage of the finished task, in order, naming the task.
    let mut last = first_claim;
    for stage in [
        "validate", "verify", "script", "collect", "sign", "upload", "report",
    ] {
        let i = at(&format!("STATUS={stage} task {} run 0", ok[0]));
        assert!(i > last, "{stage} out of order: {lines:#?}");
        last = i;
    }
    let watchdogs = lines.iter().filter(|l| l.as_str() == "WATCHDOG=1").count();
    assert!(watchdogs >= 3, "{lines:#?}");
    let stopping = at("STOPPING=1");
    assert!(stopping > at(&script_status), "{lines:#?}");
    assert!(
        lines
            .iter()
            .skip(stopping)
            .any(|l| l.starts_with("STATUS=stopping: SIGTERM")),
        "{lines:#?}"
    );
    // Nothing secret or task-controlled beyond stage names and task ids.
    assert!(lines.iter().all(|l| !l.contains(TOKEN)));
    assert_eq!(
        env.last_run(&busy[0]).await,
        (TaskState::Exception, Some("worker-shutdown".into()))
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_retries_are_counted_by_api_method() {
    let env = Env::new().await;
    // The worker reaches the queue through a proxy that is down when it starts.
    let proxy = common::FaultProxy::start(&env.root_url).await;
    proxy.set_down(true);
    let config = env.config_text().replace(&env.root_url, &proxy.url);
    std::fs::write(env.dir.join("proxied.toml"), config).unwrap();
    let child = env.spawn("proxied.toml", &[]);
    let series = "chainlock_queue_retries_total{endpoint=\"claimWork\"}";
    let mut retried = false;
    for _ in 0..1200 {
        if let Some((200, _, scrape)) = get(&env.url("/metrics"), None).await
            && sample(&scrape, series).is_some_and(|n| n >= 1.0)
        {
            retried = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        retried,
        "no claimWork retry counted while the queue was down"
    );
    proxy.set_down(false);
    let ok = env.seed(vec![json!({"behaviour": "ok"})], |_, _| {}).await;
    env.wait_resolved(&ok[0]).await;
    assert_eq!(env.last_run(&ok[0]).await.0, TaskState::Completed);

    let (_, _, scrape) = get(&env.url("/metrics"), None).await.unwrap();
    promtool_check(&scrape);
    assert!(must(&scrape, series) >= 1.0);
    // Every endpoint label is an API method name, never a path or a task id.
    for line in scrape
        .lines()
        .filter(|l| l.starts_with("chainlock_queue_retries_total{"))
    {
        let endpoint = line.split('"').nth(1).unwrap_or_else(|| panic!("{line}"));
        assert!(endpoint.chars().all(|c| c.is_ascii_alphabetic()), "{line}");
    }
    terminate(child).await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_fails_while_the_trust_policy_on_disk_is_unusable() {
    let env = Env::new().await;
    let trust_toml = env.material.keys_dir.join("trust.toml");
    let good = std::fs::read(&trust_toml).unwrap();
    let child = env.spawn("worker.toml", &[]);
    assert_eq!(wait_status(&env.url("/readyz"), 200).await, "ready\n");
    // Tampered bytes: the root signatures no longer match, so nothing is claimed.
    let mut bad = good.clone();
    bad.extend_from_slice(b"\n# tampered\n");
    std::fs::write(&trust_toml, &bad).unwrap();
    let why = wait_status(&env.url("/readyz"), 503).await;
    assert!(why.contains("no usable trust policy"), "{why}");
    assert_eq!(wait_status(&env.url("/healthz"), 200).await, "ok\n");
    let (_, _, scrape) = get(&env.url("/metrics"), None).await.unwrap();
    assert_eq!(must(&scrape, "chainlock_trust_policy_usable"), 0.0);
    assert_eq!(must(&scrape, "chainlock_trust_policy_version"), 0.0);
    // The valid policy back: ready again, its version in force.
    std::fs::write(&trust_toml, &good).unwrap();
    assert_eq!(wait_status(&env.url("/readyz"), 200).await, "ready\n");
    let (_, _, scrape) = get(&env.url("/metrics"), None).await.unwrap();
    assert_eq!(must(&scrape, "chainlock_trust_policy_usable"), 1.0);
    assert_eq!(
        must(&scrape, "chainlock_trust_policy_version"),
        env.material.pin.version as f64
    );
    terminate(child).await;
    env.stop().await;
}
