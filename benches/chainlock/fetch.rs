//! The evidence stage as production pays for it: fetching and verifying the demo chain
//! (decision -> docker image -> build -> signing task) from a dev queue that answers every
//! request `L` ms late, as a queue across the internet would. What matters is the number of
//! sequential round trips, so the table shows the wall time at each latency, the slope (ms of
//! wall per ms of latency: the round trips on the critical path as the client experiences them),
//! the requests made and the sequential round trips counted from the queue's own request log.

use super::{Row, Settings};
use chainlock::demo::seed::{self, ChainOptions, Material};
use chainlock::devqueue::{self, Client, DevQueueConfig, DevQueueHandle, RequestRecord};
use chainlock::queue::{Credentials, QueueClient, RetryPolicy};
use chainlock::secret::Secret;
use chainlock::verify::Limits;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-fetch-token";

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

pub(crate) fn latencies(settings: &Settings) -> &'static [u64] {
    if settings.quick {
        &[0, 25]
    } else {
        &[0, 10, 25, 50]
    }
}

/// A dev queue in `dir` answering every request `ms` late and logging requests, with a
/// permanent client for seeding, and demo material (keys, trust policy, chain policy).
async fn latency_queue(dir: &std::path::Path, ms: u64) -> (DevQueueHandle, Credentials, Material) {
    let (h, creds) = plain_latency_queue(dir, ms).await;
    let material =
        Material::generate(&dir.join("material"), chainlock::clock::now()).expect("material");
    (h, creds, material)
}

/// A dev queue in `dir` answering every request `ms` late and logging requests, with one
/// permanent client (`bench`, scopes `*`).
pub(crate) async fn plain_latency_queue(
    dir: &std::path::Path,
    ms: u64,
) -> (DevQueueHandle, Credentials) {
    let mut cfg = DevQueueConfig::new(
        "127.0.0.1:0".parse().expect("loopback address"),
        dir.join("queue"),
        vec![Client {
            client_id: BENCH_CLIENT.0.into(),
            access_token: Secret::new(TOKEN),
            scopes: vec!["*".into()],
        }],
    );
    cfg.claim_work_timeout = Duration::from_millis(500);
    // The stand-in for the hosts the rebuild rule names (the material's `sources/`).
    cfg.sources_dir = Some(dir.join("material").join("sources"));
    cfg.injected_latency = Duration::from_millis(ms);
    cfg.record_requests = true;
    let h = devqueue::start(cfg).await.expect("dev queue");
    (
        h,
        Credentials::permanent(BENCH_CLIENT.0, Secret::new(TOKEN)),
    )
}

/// The permanent client of [`plain_latency_queue`]: (clientId, accessToken).
pub(crate) const BENCH_CLIENT: (&str, &str) = ("bench", TOKEN);

/// Seeds one demo chain (decision -> docker image -> build -> pending signing task).
async fn seed_one(
    h: &DevQueueHandle,
    creds: &Credentials,
    material: &Material,
    scratch: &std::path::Path,
) -> seed::Chain {
    seed_graph(h, creds, material, scratch, 1).await
}

/// Seeds one demo graph whose decision task, docker image and build feed `signing` pending
/// signing tasks.
async fn seed_graph(
    h: &DevQueueHandle,
    creds: &Credentials,
    material: &Material,
    scratch: &std::path::Path,
    signing: usize,
) -> seed::Chain {
    let client = QueueClient::new(h.root_url(), Some(creds.clone()), RetryPolicy::standard())
        .expect("client");
    let mut chain = seed::Chain::new(
        chainlock::clock::now(),
        ChainOptions {
            docker_image: true,
            push: false,
        },
    );
    chain.add_signing_tasks(signing.saturating_sub(1));
    chain.create(&client).await.expect("create the graph");
    let evidence = chain.evidence(material).expect("evidence");
    chain
        .publish(&client, &evidence, scratch)
        .await
        .expect("publish the upstream links");
    chain
}

/// The slope row: ms of wall per ms of added latency between the first and last latency.
pub(crate) fn slope_row(name: &str, walls: &[(u64, Duration)], what: &str) -> Option<Row> {
    let ((l0, w0), (l1, w1)) = (walls.first()?, walls.last()?);
    if l1 <= l0 {
        return None;
    }
    let slope = (w1.as_secs_f64() - w0.as_secs_f64()) * 1e3 / (l1 - l0) as f64;
    Some(Row {
        name: name.into(),
        time: *w1,
        rate: format!("{slope:.1} ms/ms"),
        rss: None,
        note: format!("{what} per ms of added latency, +{l0} to +{l1} ms"),
    })
}

pub fn evidence(settings: &Settings) -> Vec<Row> {
    runtime().block_on(run(settings))
}

async fn run(settings: &Settings) -> Vec<Row> {
    let reps = if settings.quick { 2 } else { 5 };
    let mut rows = Vec::new();
    let mut walls: Vec<(u64, Duration)> = Vec::new();
    for &ms in latencies(settings) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (h, creds, material) = latency_queue(tmp.path(), ms).await;
        let chain = seed_one(&h, &creds, &material, &tmp.path().join("scratch")).await;
        let policy = material.chain_policy().expect("chain policy");
        let trust = material
            .trust_store(chainlock::clock::now())
            .expect("trust store");
        let anon =
            QueueClient::new(h.root_url(), None, RetryPolicy::fast_for_tests()).expect("client");
        let mut best = Duration::MAX;
        let mut log = Vec::new();
        for i in 0..reps {
            h.clear_requests();
            let work = tmp.path().join(format!("work-{i}"));
            std::fs::create_dir_all(&work).expect("work dir");
            let start = Instant::now();
            chainlock::evidence::fetch_and_verify(
                &anon,
                &chain.signing.id,
                &chain.signing.def,
                &work.join("cot"),
                &policy,
                &trust,
                chainlock::clock::now(),
                &Limits::default(),
                &chainlock::verify::rebuild::NoRenderer,
            )
            .await
            .expect("the demo chain verifies");
            let took = start.elapsed();
            if took < best {
                best = took;
                log = h.requests();
            }
        }
        h.shutdown().await;
        let rounds = devqueue::sequential_round_trips(&log);
        walls.push((ms, best));
        rows.push(Row {
            name: format!("fetch+verify demo chain +{ms} ms"),
            time: best,
            rate: format!("{} requests", log.len()),
            rss: None,
            note: format!("{rounds} sequential round trips"),
        });
    }
    rows.extend(slope_row("fetch+verify slope", &walls, "wall"));
    rows
}

/// Whole tasks through the worker (the release binary `chainlock run`, `chainlock script sign`,
/// isolation none) against a dev queue answering every request `L` ms late: claim, validate,
/// the evidence of the demo chain (check 9 included: the decision task is re-rendered from the
/// template the dev queue serves, in json-e's child process, as in production), the script,
/// collect, sign, upload, report. Per-task wall, requests and sequential round trips per task,
/// and the slope.
///
/// Two scenarios: every task in its own graph (each its own decision task, image and build:
/// nothing is shared), and every task in one graph (the same decision task, image and build, as
/// the signing tasks of a release are: what the worker remembers across tasks, the decision
/// task's json-e rebuild, then applies).
pub fn tasks(settings: &Settings) -> Vec<Row> {
    let mut rows = runtime().block_on(run_tasks(settings, false));
    rows.extend(runtime().block_on(run_tasks(settings, true)));
    rows
}

#[allow(clippy::disallowed_methods)] // the benchmark starts the real worker binary
async fn run_tasks(settings: &Settings, one_graph: bool) -> Vec<Row> {
    let n: u32 = if settings.quick { 2 } else { 5 };
    let label = if one_graph {
        "worker task, one graph"
    } else {
        "worker task (sign)"
    };
    let mut rows = Vec::new();
    let mut walls: Vec<(u64, Duration)> = Vec::new();
    for &ms in latencies(settings) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let (h, creds, material) = latency_queue(tmp.path(), ms).await;
        material
            .serve_sources_from(h.root_url())
            .expect("rebuild rule for the dev queue's source host");
        let mut targets = Vec::new();
        if one_graph {
            let chain = seed_graph(
                &h,
                &creds,
                &material,
                &tmp.path().join("scratch"),
                n as usize,
            )
            .await;
            targets.push(chain.signing.id);
            targets.extend(chain.more_signing.into_iter().map(|l| l.id));
        } else {
            for i in 0..n {
                let chain = seed_one(
                    &h,
                    &creds,
                    &material,
                    &tmp.path().join(format!("scratch-{i}")),
                )
                .await;
                targets.push(chain.signing.id);
            }
        }
        let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_chainlock"));
        let files = material
            .write_worker_config(&seed::WorkerSpec {
                name: "signing",
                root_url: h.root_url(),
                task_queue_id: seed::SIGNING_QUEUE,
                credentials: &creds,
                chainlock_exe: &exe,
                script: seed::Script::Sign,
                isolation: seed::SeedIsolation::None,
            })
            .expect("worker config");
        h.clear_requests();
        let mut worker = tokio::process::Command::new(&exe);
        worker
            .args(["run", "--config"])
            .arg(&files.config)
            .args(["--max-tasks", &n.to_string()])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // CHAINLOCK_BENCH_LOG=<anything>: the worker's own log on stderr.
        if std::env::var_os("CHAINLOCK_BENCH_LOG").is_none() {
            worker.stderr(std::process::Stdio::null());
        }
        let status = worker.status().await.expect("start chainlock run");
        assert!(status.success(), "chainlock run failed: {status}");
        let log = h.requests();
        let client = QueueClient::new(h.root_url(), Some(creds.clone()), RetryPolicy::standard())
            .expect("client");
        for id in &targets {
            let state = client.status(id).await.expect("status").state;
            assert_eq!(
                state,
                chainlock::queue::types::TaskState::Completed,
                "every benchmark task completes"
            );
        }
        h.shutdown().await;
        // CHAINLOCK_BENCH_REQUESTS=1: the request log, to see where a task's wall goes.
        if std::env::var_os("CHAINLOCK_BENCH_REQUESTS").is_some() {
            for r in &log {
                eprintln!(
                    "+{ms} ms {:>9.3} {:>9.3} {} {}",
                    r.started.as_secs_f64() * 1e3,
                    r.finished.as_secs_f64() * 1e3,
                    r.method,
                    r.path
                );
            }
        }

        // Steady state: from the first claimWork to the last answer, so the worker's start-up
        // (loading keys, policy, schemas; once per process) is not charged to the tasks.
        let (per_task, log) = window(&log, n);
        walls.push((ms, per_task));
        rows.push(task_row(format!("{label} +{ms} ms"), per_task, &log, n, ""));
    }
    rows.extend(slope_row(
        &format!("{label} slope"),
        &walls,
        "per-task wall",
    ));
    rows
}

/// A resolution: reportCompleted, reportFailed or reportException.
pub(crate) fn is_resolution(r: &RequestRecord) -> bool {
    r.method == "POST"
        && r.path.contains("/runs/")
        && ["/completed", "/failed", "/exception"]
            .iter()
            .any(|end| r.path.ends_with(end))
}

/// The requests of a whole-task run's measured window, from the first claimWork's start to the
/// answer of the last resolution, and the per-task wall over it (`n` tasks): the worker's
/// start-up before, and what it did after (scriptworker's next claimWork, until it is killed),
/// are left out.
pub(crate) fn window(log: &[RequestRecord], n: u32) -> (Duration, Vec<RequestRecord>) {
    let start = log
        .iter()
        .filter(|r| r.path.contains("/claim-work/"))
        .map(|r| r.started)
        .min()
        .expect("the worker called claimWork");
    let end = log
        .iter()
        .filter(|r| is_resolution(r))
        .map(|r| r.finished)
        .max()
        .expect("the worker resolved tasks");
    let inside: Vec<RequestRecord> = log
        .iter()
        .filter(|r| r.started >= start && r.started < end)
        .cloned()
        .collect();
    (end.saturating_sub(start) / n, inside)
}

/// The row of a whole-task scenario: per-task wall, requests and sequential round trips per
/// task over the measured window (`note` is appended to the count of tasks).
pub(crate) fn task_row(
    name: String,
    per_task: Duration,
    log: &[RequestRecord],
    n: u32,
    note: &str,
) -> Row {
    let rounds = devqueue::sequential_round_trips(log);
    Row {
        name,
        time: per_task,
        rate: format!("{} req/task", log.len() / n as usize),
        rss: None,
        note: format!(
            "{:.1} sequential round trips per task ({n} tasks{note})",
            rounds as f64 / f64::from(n)
        ),
    }
}
