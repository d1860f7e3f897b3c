//! The worker loop: claim one task at a time, run it through the staged pipeline
//! ([`task`]), resolve it, repeat.
//!
//! Why it is shaped this way: claimWork is never cancelled once sent (a cancelled request can
//! orphan a task the queue did claim, scriptworker bug 1524069), so shutdown only takes effect
//! between calls; a claimed run is always resolved, or given up only when the queue says it is
//! no longer ours. Each run executes in its own tokio task so that a panic in any stage becomes
//! an `internal-error` report and the worker keeps serving.
//!
//! Before the first claim, [`startup::Startup::prepare`] loads everything the configuration
//! names (validator, chain policy, signing key, trust store); a failure is
//! [`WorkerError::Startup`] (exit 64). Before every claim, [`startup::TrustGuard::refresh`]
//! reloads the trust policy if it changed on disk; while it is unusable (invalid, rolled back,
//! expired, no longer trusting our key) the worker claims nothing and says so at error level
//! every poll interval.
//!
//! Signals ([`Shutdown`]): SIGTERM stops claiming and stops the running script, then uploads
//! what it produced plus the log and reports `worker-shutdown` (the queue reruns the task);
//! SIGUSR1 stops claiming after the current task. Either way the process then exits 0.

pub mod azure_poll;
pub mod outcome;
pub mod reclaim;
pub mod startup;
pub mod task;
pub mod workdir;

use crate::config::{Config, Protocol};
use crate::metrics::{Stage, Telemetry};
use crate::queue::types::{ClaimWorkRequest, ExceptionReason, TaskClaim};
use crate::queue::{Credentials, EnvSource, QueueClient, QueueError, RetryPolicy};
use outcome::Resolution;
use reclaim::{ClaimState, Reclaimer, TaskClient};
use std::sync::Arc;
use std::time::Duration;
use task::{RunCtx, TaskReport};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use workdir::{WorkArea, WorkDirError};

/// Arguments of `chainlock run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Worker configuration file (TOML).
    #[arg(long)]
    pub config: std::path::PathBuf,
    /// Stop after handling this many claimed tasks (used by the demo and tests).
    #[arg(long)]
    pub max_tasks: Option<u64>,
}

/// Options that are not part of the configuration file. The default: no task limit, the
/// standard retry policy and the documented default limits.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop after this many claimed tasks (`--max-tasks`); `None` runs until a signal.
    pub max_tasks: Option<u64>,
    /// Retry policy of the queue client.
    pub retry: RetryPolicy,
    /// Script output caps.
    pub launch_limits: crate::launch::Limits,
    /// Artifact caps.
    pub artifact_limits: crate::artifacts::Limits,
    /// Chain-of-trust verification caps; `max_signature_skew` is replaced by the config's
    /// `[chain_of_trust] max_clock_skew_seconds`.
    pub verify_limits: crate::verify::Limits,
    /// Trust store caps; `max_root_signature_skew` is replaced by the config's
    /// `[chain_of_trust] max_clock_skew_seconds`.
    pub trust_limits: crate::trust::Limits,
    /// Become a child subreaper and kill every child not spawned by the launcher after each
    /// run (`chainlock run` sets it; see [`crate::sandbox::Sandbox::adopt_orphans`]). Off for
    /// embedders such as the demo and tests, whose process has children of its own.
    pub adopt_orphans: bool,
}

/// How the worker is asked to stop. Cloning shares the tokens.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// No new claimWork after this fires (SIGUSR1 and SIGTERM).
    pub stop_claiming: CancellationToken,
    /// Stop the running script now and report `worker-shutdown` (SIGTERM).
    pub abort: CancellationToken,
}

impl Shutdown {
    /// Tokens that nothing fires (tests and the demo fire them by hand).
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// SIGTERM: stop claiming and stop the current script.
    pub fn terminate(&self) {
        self.stop_claiming.cancel();
        self.abort.cancel();
    }

    /// SIGUSR1: finish the current task, then stop.
    pub fn drain(&self) {
        self.stop_claiming.cancel();
    }

    /// Installs SIGTERM and SIGUSR1 handlers that fire these tokens.
    pub fn install_signal_handlers(&self) -> Result<(), WorkerError> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).map_err(WorkerError::Signals)?;
        let mut usr1 = signal(SignalKind::user_defined1()).map_err(WorkerError::Signals)?;
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some(()) = term.recv() => {
                        tracing::warn!("SIGTERM: stopping the current script, then exiting");
                        me.terminate();
                    }
                    Some(()) = usr1.recv() => {
                        tracing::warn!("SIGUSR1: no new tasks; exiting after the current one");
                        me.drain();
                    }
                    else => return,
                }
            }
        });
        Ok(())
    }
}

/// Why the worker could not start (per-task problems never end the worker).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// Something the configuration names is unusable (exit 64, nothing claimed).
    #[error(transparent)]
    Startup(Box<startup::StartupError>),
    /// The work area or log dir is unusable.
    #[error(transparent)]
    WorkDir(#[from] WorkDirError),
    /// The queue client could not be built.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// Something a script started survived its run: nothing more is claimed (non-zero exit).
    #[error("script containment failed, refusing to claim more tasks: {0}")]
    Containment(String),
    /// A run hit a full disk (or quota) on this worker: the task went back to the queue
    /// (`worker-shutdown`) and nothing more is claimed (non-zero exit).
    #[error("this worker's disk is full, refusing to claim more tasks: {0}")]
    DiskFull(String),
    /// `[metrics] listen` cannot be bound (in use, not an address of this host).
    #[error("cannot listen on {listen} ([metrics] listen): {source}")]
    Metrics {
        /// The configured address.
        listen: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<startup::StartupError> for WorkerError {
    fn from(e: startup::StartupError) -> Self {
        WorkerError::Startup(Box::new(e))
    }
}

/// State shared by the loop and the per-task jobs.
pub(crate) struct Shared {
    pub config: Config,
    pub options: RunOptions,
    /// Allowlisted variables captured from the worker's environment at start-up.
    pub script_env_base: Vec<(String, String)>,
    pub queue: QueueClient,
    pub validator: crate::validate::TaskValidator,
    pub policy: crate::chain_policy::ChainPolicy,
    pub signing_key: crate::openpgp::SigningKey,
    /// Our optional ed25519 key (`public/chain-of-trust.json.sig`).
    pub ed25519_key: Option<crate::ed25519_key::Ed25519Key>,
    /// The script's isolation, proved at start-up.
    pub sandbox: Arc<crate::sandbox::Sandbox>,
    /// Set when something of a run survived the kill: the worker claims nothing more.
    pub containment_broken: std::sync::Mutex<Option<String>>,
    /// Set when a run failed because this worker's disk is full: nothing more is claimed.
    pub disk_full: std::sync::Mutex<Option<String>>,
    /// Metrics, health and systemd notifications.
    pub telemetry: Arc<Telemetry>,
    /// json-e for check 9 (a budgeted child of this binary), remembering its answers across
    /// tasks: the tasks of one graph rebuild the same decision task. `None` (the binary cannot
    /// be located): every rebuild fails closed.
    pub renderer: Option<crate::jsone::Memo<crate::jsone::Sandboxed>>,
}

/// Summary of a worker run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// One entry per claimed run, in order.
    pub tasks: Vec<TaskReport>,
}

/// Runs the worker until `max_tasks` runs were handled or `shutdown` says stop.
pub async fn run(
    config: Config,
    credentials: Credentials,
    env: &impl EnvSource,
    mut options: RunOptions,
    shutdown: Shutdown,
) -> Result<RunSummary, WorkerError> {
    let skew = config.chain_of_trust.max_clock_skew();
    options.verify_limits.max_signature_skew = skew;
    options.trust_limits.max_root_signature_skew = skew;
    let telemetry = Arc::new(Telemetry::new(crate::metrics::Budgets::from_config(
        &config,
        &options.retry,
        &config.timing.client_limits(),
    )));
    // Background jobs of this run (the listener, the watchdog, the drain notice) end with it.
    let background = CancellationToken::new();
    let _stop_background = background.clone().drop_guard();
    // Listening before the start-up checks: /healthz and /readyz answer while they run.
    if let Some(listen) = config.metrics.addr {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| WorkerError::Metrics { listen, source })?;
        tracing::info!(%listen, "serving /metrics, /healthz and /readyz");
        let (t, stop) = (telemetry.clone(), background.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::server::serve(listener, t, stop).await {
                tracing::error!(error = %e, "the metrics listener stopped");
            }
        });
    }
    spawn_watchdog(&telemetry, &background);
    spawn_drain_notice(&telemetry, &shutdown, &background);
    let prepared = startup::Startup::prepare(&config, crate::clock::now(), &options.trust_limits)?;
    let mut trust = prepared.trust;
    let area = WorkArea::open(&config.paths.work_dir)?;
    if let Some(run_as) = config.script.run_as {
        startup::check_can_hand_over(&config.source, area.root(), run_as)?;
        area.allow_traverse()?;
    }
    workdir::create_private_dir(&config.paths.log_dir)?;
    let sandbox =
        Arc::new(startup::prepare_sandbox(&config, area.root(), options.adopt_orphans).await?);
    let queue = QueueClient::new(
        &config.queue.root_url,
        Some(credentials),
        options.retry.clone(),
    )?
    .with_limits(config.timing.client_limits())
    .with_metrics(telemetry.metrics.clone());
    let script_env_base = crate::launch::script_env(&config.script.env_allowlist, env, &[]);
    let shared = Arc::new(Shared {
        config,
        options,
        script_env_base,
        queue,
        validator: prepared.validator,
        policy: prepared.policy,
        signing_key: prepared.signing_key,
        ed25519_key: prepared.ed25519_key,
        sandbox,
        containment_broken: std::sync::Mutex::new(None),
        disk_full: std::sync::Mutex::new(None),
        telemetry: telemetry.clone(),
        renderer: crate::jsone::Sandboxed::current()
            .ok()
            .map(crate::jsone::Memo::new),
    });
    let timing = &shared.config.timing;
    let backoff_min = Duration::from_secs(timing.backoff_min_secs);
    let backoff_max = Duration::from_secs(timing.backoff_max_secs);
    let poll = Duration::from_secs(timing.poll_interval_secs);
    let request = ClaimWorkRequest {
        worker_group: shared.config.queue.worker_group.clone(),
        worker_id: shared.config.queue.worker_id.clone(),
        tasks: 1,
    };
    let mut poller = match shared.config.queue.protocol {
        Protocol::ClaimWork => None,
        Protocol::AzurePoll => {
            tracing::warn!(
                "[queue] protocol = \"azure-poll\": the legacy Azure-queue protocol, for queues \
                 of before Taskcluster v24 only"
            );
            Some(azure_poll::AzurePoller::new(
                &shared.config.queue.task_queue_id,
                &request.worker_group,
                &request.worker_id,
            ))
        }
    };
    tracing::info!(
        protocol = shared.config.queue.protocol.as_str(),
        task_queue_id = %shared.config.queue.task_queue_id,
        worker_group = %request.worker_group,
        worker_id = %request.worker_id,
        root_url = %shared.config.queue.root_url,
        "worker started"
    );
    // Everything above is the start-up checks: only now READY=1.
    telemetry.started();

    let mut summary = RunSummary::default();
    let mut backoff = backoff_min;
    loop {
        let handled = summary.tasks.len() as u64;
        if shutdown.stop_claiming.is_cancelled() {
            tracing::info!("stopping: no more claims");
            break;
        }
        if let Some(reason) = shared
            .containment_broken
            .lock()
            .ok()
            .and_then(|g| g.clone())
        {
            tracing::error!(%reason, "stopping: a script run was not contained");
            return Err(WorkerError::Containment(reason));
        }
        if let Some(reason) = shared.disk_full.lock().ok().and_then(|g| g.clone()) {
            tracing::error!(%reason, "stopping: this worker's disk is full");
            return Err(WorkerError::DiskFull(reason));
        }
        if shared.options.max_tasks.is_some_and(|max| handled >= max) {
            tracing::info!(handled, "stopping: task limit reached");
            break;
        }
        // Between tasks only: the trust policy every claimed task will be judged by.
        let checked_at = crate::clock::now();
        let store = match trust.refresh(&shared.signing_key, checked_at) {
            Ok(store) => {
                telemetry.metrics.trust_in_force(
                    &store,
                    &shared.config.chain_of_trust.worker_impl,
                    &shared.signing_key.fingerprint(),
                    checked_at,
                );
                telemetry.trust(true);
                store
            }
            Err(problem) => {
                telemetry.trust(false);
                telemetry.idle("not claiming: the trust policy is not usable");
                tracing::error!(error = %problem,
                    retry_in_secs = poll.as_secs_f64().max(1.0),
                    "NOT CLAIMING: the trust policy is not usable; fix keys_dir (or restore a \
                     valid policy) - nothing older is used instead");
                tokio::select! {
                    _ = shutdown.stop_claiming.cancelled() => {}
                    _ = tokio::time::sleep(poll.max(Duration::from_secs(1))) => {}
                }
                continue;
            }
        };
        // Never cancelled once sent: a claimed task must not be orphaned.
        let claimed = {
            let _timer = telemetry.stage(Stage::Claim, None);
            match poller.as_mut() {
                None => shared
                    .queue
                    .claim_work(&shared.config.queue.task_queue_id, &request)
                    .await
                    .map(|r| r.tasks)
                    .map_err(|e| e.to_string()),
                Some(p) => p
                    .poll(&shared.queue)
                    .await
                    .map(|c| c.into_iter().collect())
                    .map_err(|e| e.to_string()),
            }
        };
        let pause = match claimed {
            Ok(tasks) if tasks.is_empty() => {
                backoff = backoff_min;
                poll
            }
            Ok(tasks) => {
                backoff = backoff_min;
                for claim in tasks {
                    telemetry.metrics.claimed();
                    let report =
                        process_claim(&shared, &area, claim, store.clone(), &shutdown).await;
                    summary.tasks.push(report);
                }
                Duration::ZERO
            }
            Err(e) => {
                if poller.is_some() {
                    tracing::warn!(error = %e, retry_in_secs = backoff.as_secs_f64(),
                        "azure-poll: no work found because polling failed; backing off");
                } else {
                    tracing::warn!(error = %e, retry_in_secs = backoff.as_secs_f64(), "claimWork failed");
                }
                let pause = backoff;
                backoff = (backoff * 2).min(backoff_max).max(backoff_min);
                pause
            }
        };
        telemetry.idle("claim: between claims");
        tokio::select! {
            _ = shutdown.stop_claiming.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
    if !telemetry.health.is_draining() {
        crate::metrics::notify::stopping("stopping: task limit reached");
    }
    tracing::info!(tasks = summary.tasks.len(), "worker stopped");
    Ok(summary)
}

/// Handles one claimed run to the end. Never fails: every problem becomes a resolution.
async fn process_claim(
    shared: &Arc<Shared>,
    area: &WorkArea,
    claim: TaskClaim,
    trust: Arc<crate::trust::TrustStore>,
    shutdown: &Shutdown,
) -> TaskReport {
    let span = tracing::info_span!(
        "task",
        task_id = %claim.status.task_id,
        run_id = claim.run_id
    );
    process_claim_inner(shared, area, claim, trust, shutdown)
        .instrument(span)
        .await
}

async fn process_claim_inner(
    shared: &Arc<Shared>,
    area: &WorkArea,
    claim: TaskClaim,
    trust: Arc<crate::trust::TrustStore>,
    shutdown: &Shutdown,
) -> TaskReport {
    let task_id = claim.status.task_id.clone();
    let run_id = claim.run_id;
    // The one clock reading of this run: verification and our signature use it.
    let now = crate::clock::now();
    tracing::info!(trust_policy_version = trust.version(), "claimed");

    let client = TaskClient::new(
        shared
            .queue
            .with_credentials(Credentials::from(&claim.credentials)),
    );
    let claim_state = ClaimState::new(claim.taken_until);
    let done = CancellationToken::new();
    let reclaimer = Reclaimer {
        task_id: task_id.clone(),
        run_id,
        margin: Duration::from_secs(shared.config.timing.reclaim_margin_secs),
        retry_delay: Duration::from_secs(shared.config.timing.backoff_min_secs.max(1)),
    };
    tokio::spawn(
        reclaimer
            .run(
                client.clone(),
                claim.taken_until,
                claim_state.clone(),
                done.clone(),
            )
            .instrument(tracing::Span::current()),
    );
    let _stop_reclaiming = done.drop_guard();

    let log_path = shared
        .config
        .paths
        .log_dir
        .join(format!("{task_id}-{run_id}.log"));
    let (dirs, dirs_err) = match area.task_dirs(&task_id, run_id) {
        Ok(d) => (Some(d), None),
        Err(e) => (None, Some(e)),
    };
    let ctx = Arc::new(RunCtx {
        shared: shared.clone(),
        task_id: task_id.clone(),
        run_id,
        // Compact re-serialisation of a parsed `Value` cannot fail; the size is what the
        // validator's limit is about.
        raw_len: serde_json::to_vec(&claim.task).map_or(usize::MAX, |v| v.len()),
        raw_task: claim.task,
        expires: claim.status.expires,
        now,
        trust,
        dirs: dirs.unwrap_or_else(|| workdir::TaskDirs {
            root: area.root().join("unavailable"),
            work: area.root().join("unavailable"),
            artifacts: area.root().join("unavailable"),
            worker: area.root().join("unavailable"),
        }),
        client,
        claim: claim_state.clone(),
        abort: shutdown.abort.clone(),
    });

    // Stages 1-7a run in their own task: a panic there is reported, not fatal.
    let limits = shared.options.launch_limits;
    let job_ctx = ctx.clone();
    let job_log_path = log_path.clone();
    let job = tokio::spawn(
        async move {
            let mut log = match crate::launch::TaskLog::create(&job_log_path, &limits).await {
                Ok(l) => l,
                Err(e) => return (None, Err(task::TaskError::Launch(e))),
            };
            if let Some(e) = dirs_err {
                return (Some(log), Err(task::TaskError::WorkDir(e)));
            }
            let r = task::pipeline(&job_ctx, &mut log).await;
            (Some(log), r)
        }
        .instrument(tracing::Span::current()),
    );
    let (log, mut result) = match job.await {
        Ok(x) => x,
        Err(e) => (
            None,
            Err(task::TaskError::Internal(format!(
                "task pipeline panicked: {e}"
            ))),
        ),
    };
    // Whatever happened in the pipeline (a panic included): nothing of the run lives on.
    if let Err(e) = shared.sandbox.contain(None).await {
        result = Err(task::TaskError::Launch(
            crate::launch::LaunchError::Contain(e),
        ));
    }
    if let Err(task::TaskError::Launch(crate::launch::LaunchError::Contain(e))) = &result
        && let Ok(mut broken) = shared.containment_broken.lock()
    {
        *broken = Some(e.to_string());
    }
    if let Err(e) = &result
        && e.is_disk_full()
    {
        note_disk_full(shared, e);
    }
    let verification_failed = matches!(
        &result,
        Err(task::TaskError::Chain {
            failure: crate::evidence::ChainFailure::Verification(_),
            ..
        })
    );
    let mut error_note = None;
    let (mut resolution, artifacts, sign) = match result {
        Ok(staged) => (staged.resolution, staged.artifacts, staged.sign_cot),
        Err(e) => {
            tracing::error!(error = %e, "task error");
            error_note = Some(e.to_string());
            (e.resolution(), Vec::new(), false)
        }
    };

    if claim_state.is_lost(crate::clock::now()) {
        return give_up_run(&ctx, &log_path, shared, Vec::new());
    }

    let telemetry = &shared.telemetry;
    let sign_timer = telemetry.stage(Stage::Sign, Some((&task_id, run_id)));
    // Close the task log: after this nothing is written to it (its hash goes into our
    // chain-of-trust document). What happens later is in the worker's own log.
    let mut log = match log {
        Some(l) => Some(l),
        None => crate::launch::TaskLog::create_append(&log_path, &limits)
            .await
            .ok(),
    };
    if let Some(l) = log.as_mut() {
        if let Some(note) = &error_note {
            let _ = l.notice(note).await;
        }
        for a in &artifacts {
            let _ = l
                .notice(&format!(
                    "artifact {} ({} bytes, sha256 {})",
                    a.name, a.size, a.sha256
                ))
                .await;
        }
        let _ = l
            .notice(&format!("resolution: {}", resolution.label()))
            .await;
    }
    let log_ok = match log {
        Some(l) => l.finish().await.is_ok(),
        None => false,
    };
    if !log_ok {
        resolution = resolution.combine(Resolution::Exception(ExceptionReason::InternalError));
    }

    // Stage 6: our chain-of-trust document, over the final bytes of everything we upload.
    let signed = if sign && log_ok {
        match task::sign_cot(&ctx, &artifacts, &log_path).await {
            Ok(files) => Some(files),
            Err(e) => {
                if e.is_disk_full() {
                    note_disk_full(shared, &e);
                }
                tracing::error!(error = %e, "chain-of-trust.json not produced");
                resolution = resolution.combine(e.resolution());
                None
            }
        }
    } else {
        None
    };
    drop(sign_timer);

    // Stage 7: upload, in two concurrent waves. First everything our document lists (the
    // script's artifacts, the audit report, the task log), each created and PUT at once, while
    // our document and its signatures are created (reserved) alongside; then, only once every
    // file they list is up, the document and signatures are PUT and live.log is linked. So a
    // verifier that finds the document finds everything it lists, and the critical path is
    // createArtifact, PUT, PUT. The claim is checked before each wave (locally: lost, or
    // `takenUntil` passed) and before each upload starts; after a lost claim nothing more
    // goes to the run and nothing is reported.
    let upload_timer = telemetry.stage(Stage::Upload, Some((&task_id, run_id)));
    let chain_log = task::chain_log_path(&ctx.dirs);
    let mut wave = Vec::new();
    for artifact in &artifacts {
        let (ctx, lost) = (&ctx, claim_state.token());
        wave.push(upload_job(lost, artifact.name.clone(), async move {
            task::upload(ctx, artifact).await
        }));
    }
    if chain_log.exists() {
        let (ctx, lost, path) = (&ctx, claim_state.token(), &chain_log);
        wave.push(upload_job(
            lost,
            task::CHAIN_OF_TRUST_LOG.to_owned(),
            async move { task::upload_worker_file(ctx, task::CHAIN_OF_TRUST_LOG, path).await },
        ));
    }
    if log_ok {
        let (ctx, lost, path) = (&ctx, claim_state.token(), &log_path);
        wave.push(upload_job(
            lost,
            task::LIVE_BACKING_LOG.to_owned(),
            async move { task::upload_task_log(ctx, path).await },
        ));
    }
    let listed = wave.len();
    let cot_files: Vec<(&'static str, &std::path::Path)> = match &signed {
        Some(files) => {
            let mut v = vec![
                (task::COT_JSON, files.json.as_path()),
                (task::COT_ASC, files.asc.as_path()),
            ];
            if let Some(sig) = &files.sig {
                v.push((task::COT_SIG, sig.as_path()));
            }
            v
        }
        None => Vec::new(),
    };
    let reserve = futures_util::future::join_all(cot_files.iter().map(|&(name, path)| {
        let (ctx, lost) = (&ctx, claim_state.token());
        async move {
            if lost.is_cancelled() {
                return None;
            }
            task::reserve_worker_file(ctx, name, path).await
        }
    }));
    let mut uploaded = Vec::new();
    if claim_state.is_lost(crate::clock::now()) {
        return give_up_run(&ctx, &log_path, shared, uploaded);
    }
    let (first, reservations) = tokio::join!(
        run_wave(shared, wave, &mut uploaded, &mut resolution),
        reserve
    );
    if claim_state.is_lost(crate::clock::now()) {
        return give_up_run(&ctx, &log_path, shared, uploaded);
    }
    // After a failed verification, live.log shows the verification report (scriptworker
    // 63.2.0), the task log stays available as live_backing.log. The link never dangles.
    let live_target = if verification_failed && first.contains(task::CHAIN_OF_TRUST_LOG) {
        Some(task::LiveLogTarget::ChainOfTrustLog)
    } else if first.contains(task::LIVE_BACKING_LOG) {
        Some(task::LiveLogTarget::TaskLog)
    } else {
        None
    };
    let mut wave = Vec::new();
    if let Some(target) = live_target {
        let (ctx, lost) = (&ctx, claim_state.token());
        wave.push(upload_job(lost, task::LIVE_LOG.to_owned(), async move {
            task::link_live_log(ctx, target).await
        }));
    }
    if first.len() == listed {
        for ((name, path), reservation) in cot_files.into_iter().zip(reservations) {
            let (ctx, lost) = (&ctx, claim_state.token());
            wave.push(upload_job(lost, name.to_owned(), async move {
                task::upload_reserved(ctx, name, path, reservation).await
            }));
        }
    } else if !cot_files.is_empty() {
        // The run already failed (the upload errors are in its resolution); a document
        // listing files that are not there is never published.
        tracing::warn!(
            missing = listed.saturating_sub(first.len()),
            "not publishing chain-of-trust.json: some files it lists did not upload"
        );
    }
    run_wave(shared, wave, &mut uploaded, &mut resolution).await;
    drop(upload_timer);
    if claim_state.is_lost(crate::clock::now()) {
        return give_up_run(&ctx, &log_path, shared, uploaded);
    }

    // Stage 8: report.
    {
        let _timer = telemetry.stage(Stage::Report, Some((&task_id, run_id)));
        task::report(&ctx, &resolution).await;
        let (outcome, reason) = resolution.metric_labels();
        telemetry.metrics.resolved(outcome, reason);
    }
    tracing::info!(resolution = %resolution.label(), ?uploaded, "task done");
    cleanup(&ctx, &log_path, shared);
    TaskReport::Resolved {
        task_id,
        run_id,
        resolution,
        uploaded,
    }
}

/// The end of a run that is no longer ours: nothing more is uploaded or reported.
/// `uploaded` is what went up before the loss was known (logged for the operator).
fn give_up_run(
    ctx: &RunCtx,
    log_path: &std::path::Path,
    shared: &Shared,
    uploaded: Vec<String>,
) -> TaskReport {
    shared.telemetry.metrics.resolved("lost", "claim-lost");
    tracing::warn!(
        ?uploaded,
        "run lost (reclaim or createArtifact refused, or the claim expired): nothing more \
         uploaded or reported"
    );
    cleanup(ctx, log_path, shared);
    TaskReport::Lost {
        task_id: ctx.task_id.clone(),
        run_id: ctx.run_id,
    }
}

/// `WATCHDOG=1` every half interval systemd asks for (`WatchdogSec=`), but only while the
/// worker is alive by [`crate::metrics::Health::alive`]: a claim loop or a stage that stops
/// making progress runs out of its budget, the pings stop, and systemd restarts the worker.
fn spawn_watchdog(telemetry: &Arc<Telemetry>, stop: &CancellationToken) {
    let Some(interval) = crate::metrics::notify::watchdog_interval() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    let (t, stop) = (telemetry.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            if t.health.alive().is_ok() {
                crate::metrics::notify::watchdog();
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    });
}

/// Once SIGUSR1 or SIGTERM says stop claiming: `/readyz` fails, `chainlock_draining` is 1 and
/// systemd gets `STOPPING=1`.
fn spawn_drain_notice(telemetry: &Arc<Telemetry>, shutdown: &Shutdown, stop: &CancellationToken) {
    let (t, shutdown, stop) = (telemetry.clone(), shutdown.clone(), stop.clone());
    tokio::spawn(async move {
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = shutdown.stop_claiming.cancelled() => {
                let status = if shutdown.abort.is_cancelled() {
                    "stopping: SIGTERM, stopping the current task"
                } else {
                    "draining: no new tasks, exiting after the current one"
                };
                t.draining(status);
            }
        }
    });
}

/// Records that this worker's disk is full (the claim loop then stops) and says so loudly.
fn note_disk_full(shared: &Shared, e: &task::TaskError) {
    tracing::error!(error = %e,
        "DISK FULL on this worker: the task goes back to the queue (worker-shutdown) and no \
         more tasks are claimed; free space under [paths] and restart");
    if let Ok(mut full) = shared.disk_full.lock() {
        full.get_or_insert_with(|| e.to_string());
    }
}

/// Most uploads in flight at once in one wave.
const UPLOAD_CONCURRENCY: usize = 32;

type UploadJob<'a> = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = (String, Option<Result<(), task::TaskError>>)> + Send + 'a,
    >,
>;

/// One upload of a wave: skipped (`None`) when the claim is already lost as it would start.
fn upload_job<'a>(
    lost: &'a CancellationToken,
    name: String,
    upload: impl std::future::Future<Output = Result<(), task::TaskError>> + Send + 'a,
) -> UploadJob<'a> {
    Box::pin(async move {
        if lost.is_cancelled() {
            return (name, None);
        }
        (name, Some(upload.await))
    })
}

/// Runs one wave of uploads concurrently (at most [`UPLOAD_CONCURRENCY`] in flight), recording
/// what went up in `uploaded` (in the wave's order) and folding failures into `resolution`.
/// Returns the names uploaded in this wave.
async fn run_wave(
    shared: &Shared,
    wave: Vec<UploadJob<'_>>,
    uploaded: &mut Vec<String>,
    resolution: &mut Resolution,
) -> std::collections::BTreeSet<String> {
    use futures_util::StreamExt as _;
    let results: Vec<_> = futures_util::stream::iter(wave)
        .buffered(UPLOAD_CONCURRENCY)
        .collect()
        .await;
    let mut done = std::collections::BTreeSet::new();
    for (name, result) in results {
        match result {
            Some(Ok(())) => {
                done.insert(name.clone());
                uploaded.push(name);
            }
            Some(Err(e)) => {
                if e.is_disk_full() {
                    note_disk_full(shared, &e);
                }
                tracing::error!(error = %e, "upload failed");
                *resolution = resolution.clone().combine(e.resolution());
            }
            None => {}
        }
    }
    done
}

fn cleanup(ctx: &RunCtx, _log_path: &std::path::Path, shared: &Shared) {
    if let Err(e) = ctx.dirs.remove() {
        tracing::warn!(error = %e, "cannot remove the task directory");
    }
    let keep = usize::try_from(shared.config.paths.keep_task_logs).unwrap_or(usize::MAX);
    if let Err(e) = workdir::prune_logs(&shared.config.paths.log_dir, keep) {
        tracing::warn!(error = %e, "cannot prune old task logs");
    }
}
