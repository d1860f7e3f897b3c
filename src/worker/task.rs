//! The per-task pipeline: one claimed run, from the raw claim to the report, in numbered stages.
//!
//! Stages:
//! 1. parse the claim (a malformed definition is reported `malformed-payload`, never a crash),
//!    write `task.json`, log the trust policy version in force;
//! 2. validate the restricted input ([`crate::validate`]): a rejection lists every violation in
//!    the task log and ends the run as `malformed-payload`, before anything is downloaded;
//! 3. verify the chain of trust ([`crate::evidence::fetch_and_verify`] with the run's task
//!    credentials and the instant read once per task): the audit report becomes
//!    `public/logs/chain_of_trust.log` (pass or fail); a failure ends the run with
//!    [`ChainFailure::exception_reason`] and the script is not started;
//! 4. launch the script, which [`crate::launch::run`] only does given the [`VerifiedChain`];
//! 5. collect its artifacts;
//! 6. after the script exited (any code or a signal of its own; not after a timeout, a
//!    shutdown or a failed verification): finalise the task log, then write and sign
//!    `chain-of-trust.json` over every artifact's sha256 plus both logs ([`sign_cot`]);
//! 7. upload: artifacts, `chain_of_trust.log`, the task log and the `live.log` link (to the
//!    task log, or to `chain_of_trust.log` when verification failed), then
//!    `public/chain-of-trust.json` and its `.asc` last;
//! 8. report.
//!
//! Stages 1-5 are [`pipeline`]; the caller (`super::process_claim`) runs 6-8, because the task
//! log must be closed before it is hashed.
//!
//! Invariants: a claimed run is always resolved, unless the queue told us it is no longer ours
//! (reclaim 409), in which case nothing more is uploaded or reported. The script never gets
//! credentials in its environment; with `isolation = "namespaces"` or `"uid"` it cannot read
//! them or the signing key either (with `"none"` it can: see README, "Security model"). No
//! process of the run is alive when stage 5 starts. Nothing is written to the task log after it
//! was hashed.
//! Errors from every stage become a [`Resolution`] in one place, [`TaskError::resolution`].

use super::Shared;
use super::outcome::{FailReason, Resolution};
use super::reclaim::{ClaimState, TaskClient};
use super::workdir::{TaskDirs, sorted_json};
use crate::artifacts::{self, ArtifactError, CollectedArtifact};
use crate::config::ArtifactStorage;
use crate::config::Isolation;
use crate::evidence::{self, ChainFailure};
use crate::ids::TaskId;
use crate::launch::{self, LaunchError, LaunchSpec, ScriptEnd, TaskLog};
use crate::metrics::Stage;
use crate::queue::QueueError;
use crate::queue::types::{
    CreateArtifactRequest, CreateArtifactResponse, ExceptionReason, TaskDefinition,
};
use crate::sandbox::RunView;
use crate::trust::{CotSignature, SignatureError, TrustStore};
use crate::validate::Rejection;
use crate::verify::VerifiedChain;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Name of the uploaded task log.
pub const LIVE_BACKING_LOG: &str = "public/logs/live_backing.log";
/// Name of the link to the task log that UIs read.
pub const LIVE_LOG: &str = "public/logs/live.log";
/// Content type of the task log.
pub const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";
/// Name of the uploaded chain-of-trust audit report.
pub const CHAIN_OF_TRUST_LOG: &str = "public/logs/chain_of_trust.log";
/// Name of our chain-of-trust document.
pub const COT_JSON: &str = "public/chain-of-trust.json";
/// Name of its detached armored OpenPGP signature.
pub const COT_ASC: &str = "public/chain-of-trust.json.asc";
/// The optional raw ed25519 signature of [`COT_JSON`] (`[chain_of_trust] ed25519_key`).
pub const COT_SIG: &str = "public/chain-of-trust.json.sig";
/// Most verification failures copied into the task log (the full list is in
/// `chain_of_trust.log`).
const MAX_SUMMARY_LINES: usize = 50;

/// Why a stage failed. [`TaskError::resolution`] is the one place that maps these to outcomes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The claimed task definition is not usable.
    #[error("task {task_id}: malformed task definition: {reason}")]
    Malformed {
        /// Task.
        task_id: TaskId,
        /// What is wrong.
        reason: String,
    },
    /// The task belongs to another task queue than ours.
    #[error("task {task_id} is for task queue {actual:?}, this worker serves {expected:?}")]
    WrongQueue {
        /// Task.
        task_id: TaskId,
        /// Our queue.
        expected: String,
        /// The task's.
        actual: String,
    },
    /// The task's restricted input broke the rules (every violation is in the task log).
    #[error("task {task_id} rejected: {} problem(s) with its input", .rejection.violations.len() + .rejection.omitted)]
    Rejected {
        /// Task.
        task_id: TaskId,
        /// Every violation.
        rejection: Rejection,
    },
    /// The chain of trust did not verify, or its evidence could not be fetched.
    #[error("task {task_id}: {failure}")]
    Chain {
        /// Task.
        task_id: TaskId,
        /// Why (the full report is `chain_of_trust.log`).
        #[source]
        failure: ChainFailure,
    },
    /// A worker-owned file (chain-of-trust log or document) could not be written or read.
    #[error("cannot {op} {path}: {source}")]
    WorkerFile {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Our chain-of-trust document could not be built.
    #[error("task {task_id}: cannot build chain-of-trust.json: {source}")]
    Cot {
        /// Task.
        task_id: TaskId,
        /// Why.
        source: crate::cot::CotError,
    },
    /// Signing our chain-of-trust document failed.
    #[error("task {task_id}: cannot sign chain-of-trust.json: {source}")]
    Sign {
        /// Task.
        task_id: TaskId,
        /// Why.
        source: crate::openpgp::OpenPgpError,
    },
    /// Our own signature does not verify under the trust policy in force: downstream verifiers
    /// would reject it, so it is not uploaded.
    #[error(
        "task {task_id}: our chain-of-trust signature does not verify under trust policy version \
         {version}: {source}"
    )]
    SelfCheck {
        /// Task.
        task_id: TaskId,
        /// The policy version in force.
        version: u64,
        /// The trust store's verdict.
        source: SignatureError,
    },
    /// The work directories could not be prepared.
    #[error(transparent)]
    WorkDir(#[from] super::workdir::WorkDirError),
    /// Writing `task.json` failed.
    #[error("cannot write {path}: {source}")]
    WriteTaskJson {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The script could not be started or logged.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The artifact directory could not be read.
    #[error(transparent)]
    Artifacts(ArtifactError),
    /// An upload failed (after the client's retries).
    #[error("upload of {name:?} failed: {source}")]
    Upload {
        /// Artifact name.
        name: String,
        /// The queue error (boxed: it is large).
        source: Box<QueueError>,
    },
    /// The queue answered createArtifact with something other than an s3 upload.
    #[error("createArtifact for {name:?} did not return an s3 putUrl")]
    UnexpectedArtifactResponse {
        /// Artifact name.
        name: String,
    },
    /// A background job panicked or was aborted (a worker bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl TaskError {
    /// The outcome each failure gets: the task's fault -> `malformed-payload` (a rejected
    /// input, a chain that does not verify); the queue unreachable while fetching evidence ->
    /// `resource-unavailable`; the network after retries while uploading -> `intermittent-task`
    /// (rerun); everything else is ours -> `internal-error`.
    pub fn resolution(&self) -> Resolution {
        use ExceptionReason as E;
        if self.is_disk_full() {
            return Resolution::Exception(E::WorkerShutdown);
        }
        match self {
            TaskError::Malformed { .. } | TaskError::WrongQueue { .. } => {
                Resolution::Exception(E::MalformedPayload)
            }
            TaskError::Rejected { rejection, .. } => {
                Resolution::Exception(rejection.exception_reason())
            }
            TaskError::Chain { failure, .. } => Resolution::Exception(failure.exception_reason()),
            TaskError::Upload { source, .. } if source.is_transient() => {
                Resolution::Exception(E::IntermittentTask)
            }
            TaskError::Upload { .. }
            | TaskError::UnexpectedArtifactResponse { .. }
            | TaskError::WorkDir(_)
            | TaskError::WriteTaskJson { .. }
            | TaskError::Launch(_)
            | TaskError::Artifacts(_)
            | TaskError::WorkerFile { .. }
            | TaskError::Cot { .. }
            | TaskError::Sign { .. }
            | TaskError::SelfCheck { .. }
            | TaskError::Internal(_) => Resolution::Exception(E::InternalError),
        }
    }
}

impl TaskError {
    /// This worker's disk is full (see [`super::outcome::is_disk_full`]).
    pub fn is_disk_full(&self) -> bool {
        super::outcome::is_disk_full(self)
    }
}

/// What happened to one claimed run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskReport {
    /// The run was resolved this way (the report may still have failed; see logs).
    Resolved {
        /// Task.
        task_id: TaskId,
        /// Run.
        run_id: u32,
        /// How.
        resolution: Resolution,
        /// Names of the artifacts uploaded.
        uploaded: Vec<String>,
    },
    /// The queue took the run away (reclaim 409): nothing uploaded or reported after that.
    Lost {
        /// Task.
        task_id: TaskId,
        /// Run.
        run_id: u32,
    },
}

/// Per-run state shared by the stages.
pub(super) struct RunCtx {
    pub shared: Arc<Shared>,
    pub task_id: TaskId,
    pub run_id: u32,
    pub raw_task: serde_json::Value,
    /// Size of the claimed definition as compact JSON (the validator's size limit).
    pub raw_len: usize,
    pub expires: DateTime<Utc>,
    /// The instant this run is judged and signed at (the clock is read once per task).
    pub now: DateTime<Utc>,
    /// The trust policy in force for this whole run (never swapped mid-task).
    pub trust: Arc<TrustStore>,
    pub dirs: TaskDirs,
    pub client: TaskClient,
    /// Whether the run is still ours (the queue took it away, or the claim ran out).
    pub claim: ClaimState,
    /// SIGTERM: stop the script now.
    pub abort: CancellationToken,
}

/// What stages 1-5 leave for the caller.
#[derive(Debug)]
pub(super) struct Staged {
    /// The resolution so far.
    pub resolution: Resolution,
    /// The script's accepted artifacts, hashed (not uploaded yet).
    pub artifacts: Vec<CollectedArtifact>,
    /// Whether our chain-of-trust document is to be written: the script ran and exited by
    /// itself (not after a timeout, a shutdown or a lost claim).
    pub sign_cot: bool,
}

/// Where stage 3 writes the audit report (worker-owned, uploaded as [`CHAIN_OF_TRUST_LOG`]).
pub(super) fn chain_log_path(dirs: &TaskDirs) -> PathBuf {
    dirs.worker.join("chain_of_trust.log")
}

/// Stages 1-5. Returns the resolution so far and the artifacts to upload; the caller closes the
/// log, signs, uploads and reports.
pub(super) async fn pipeline(ctx: &RunCtx, log: &mut TaskLog) -> Result<Staged, TaskError> {
    let telemetry = &ctx.shared.telemetry;
    let run = Some((&ctx.task_id, ctx.run_id));
    let validate_timer = telemetry.stage(Stage::Validate, run);
    // Stage 1: parse the claim. The definition stays raw JSON for task.json; the typed view
    // only checks the fields we rely on.
    let def = parse_definition(ctx)?;
    let task_json = ctx.dirs.work.join("task.json");
    tokio::fs::write(&task_json, sorted_json(&ctx.raw_task))
        .await
        .map_err(|source| TaskError::WriteTaskJson {
            path: task_json.clone(),
            source,
        })?;
    log.notice(&format!(
        "task {} run {}: definition accepted; trust policy version {} in force",
        ctx.task_id,
        ctx.run_id,
        ctx.trust.version()
    ))
    .await?;

    // Stage 2: validate the restricted input. Nothing has been downloaded or run yet, and
    // nothing will be for a rejected task.
    let validated = match ctx.shared.validator.validate(&ctx.raw_task, ctx.raw_len) {
        Ok(v) => v,
        Err(rejection) => {
            for line in rejection.to_string().lines() {
                log.notice(line).await?;
            }
            return Err(TaskError::Rejected {
                task_id: ctx.task_id.clone(),
                rejection,
            });
        }
    };
    log.notice("task input valid (payload schema, scopes, upstream artifacts)")
        .await?;
    drop(validate_timer);

    // Stage 3: verify the chain of trust. The verified upstream files land in <work>/cot/.
    let verify_timer = telemetry.stage(Stage::Verify, run);
    let verified = verify_chain(ctx, log).await;
    drop(verify_timer);
    let Some(verified) = verified? else {
        // Cancelled by a shutdown or a lost claim: nothing ran, nothing to collect.
        return Ok(Staged {
            resolution: Resolution::Exception(ExceptionReason::WorkerShutdown),
            artifacts: Vec::new(),
            sign_cot: false,
        });
    };

    // Stage 4: launch the script (unless we are already shutting down or lost the run).
    let script_timer = telemetry.stage(Stage::Script, run);
    let end = if ctx.abort.is_cancelled() || ctx.claim.token().is_cancelled() {
        log.notice("not starting the script: the worker is shutting down")
            .await?;
        ScriptEnd::Cancelled
    } else {
        let scope_files = ctx
            .shared
            .config
            .script
            .scope_files
            .get(validated.scope().value())
            .cloned()
            .unwrap_or_default();
        let spec = launch_spec(ctx, &def, &scope_files).await?;
        if let Some(run_as) = spec.sandbox.run_as() {
            ctx.dirs.share_inputs()?;
            ctx.dirs.hand_to(run_as.uid, run_as.gid)?;
        }
        if spec.sandbox.level() == Isolation::None {
            log.notice(
                "WARNING: isolation = \"none\": this script runs as the worker's uid and could \
                 read the worker's credentials and signing key",
            )
            .await?;
            tracing::warn!(task_id = %ctx.task_id, "isolation = \"none\": the script runs as the worker's uid");
        }
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let (lost, abort, c) = (ctx.claim.token().clone(), ctx.abort.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => c.cancel(),
                _ = abort.cancelled() => c.cancel(),
                _ = c.cancelled() => {}
            }
        });
        let end = launch::run(&spec, &verified, log, &cancel).await?;
        drop(guard);
        end
    };
    drop(script_timer);
    if ctx.claim.token().is_cancelled() {
        return Ok(Staged {
            resolution: Resolution::Exception(ExceptionReason::WorkerShutdown),
            artifacts: Vec::new(),
            sign_cot: false,
        });
    }
    let sign_cot = matches!(end, ScriptEnd::Exited(_) | ScriptEnd::Signaled(_));
    let mut resolution = Resolution::from_script(end);
    if let Resolution::Failed(reason) = &resolution {
        log.notice(&reason.to_string()).await?;
    }

    let _collect_timer = telemetry.stage(Stage::Collect, run);
    // Stage 5: collect the artifacts (even after a failure or shutdown: they help debugging).
    // Every process of the run is dead by now (launch::run contained it); each file is copied
    // into worker-owned staging while it is hashed, and only the copy is uploaded.
    let dir = ctx.dirs.artifacts.clone();
    let staging = ctx.dirs.worker.join("staged");
    tokio::fs::create_dir(&staging)
        .await
        .map_err(|source| TaskError::WorkerFile {
            op: "create",
            path: staging.clone(),
            source,
        })?;
    let cfg = &ctx.shared.config.script;
    let limits = artifacts::Limits {
        max_artifacts: cfg.max_artifacts,
        max_total_bytes: cfg.max_artifact_bytes,
        ..ctx.shared.options.artifact_limits
    };
    let collection =
        tokio::task::spawn_blocking(move || artifacts::collect(&dir, &staging, &limits))
            .await
            .map_err(|e| TaskError::Internal(format!("artifact collection: {e}")))?
            .map_err(TaskError::Artifacts)?;
    for refused in &collection.refused {
        log.notice(&format!("refused: {refused}")).await?;
        tracing::warn!(task_id = %ctx.task_id, "{}", crate::untrusted_text::escape_line(&refused.to_string()));
    }
    if collection.refused_unlisted > 0 {
        log.notice(&format!(
            "refused: {} more entries not listed",
            collection.refused_unlisted
        ))
        .await?;
        tracing::warn!(task_id = %ctx.task_id, unlisted = collection.refused_unlisted, "more refused artifact entries");
    }
    if collection.refused_count() > 0 {
        resolution = resolution.combine(Resolution::Failed(FailReason::ArtifactsRefused(
            collection.refused_count(),
        )));
    }
    Ok(Staged {
        resolution,
        artifacts: collection.artifacts,
        sign_cot,
    })
}

/// Stage 3: fetch the evidence with the run's task credentials, verify it at the run's instant,
/// write the audit report to the worker dir, and summarise the verdict in the task log.
async fn verify_chain(ctx: &RunCtx, log: &mut TaskLog) -> Result<Option<VerifiedChain>, TaskError> {
    log.notice("verifying the chain of trust").await?;
    let shared = &ctx.shared;
    let (client, cot_dir) = (ctx.client.current(), ctx.dirs.work.join("cot"));
    // json-e for check 9 runs in a budgeted child of this binary, its answers remembered
    // across tasks; without one, a rebuild fails closed.
    let renderer: &dyn crate::verify::rebuild::Render = match &shared.renderer {
        Some(r) => r,
        None => &crate::verify::rebuild::NoRenderer,
    };
    let fetch = evidence::fetch_and_verify(
        &client,
        &ctx.task_id,
        &ctx.raw_task,
        &cot_dir,
        &shared.policy,
        &ctx.trust,
        ctx.now,
        &shared.options.verify_limits,
        renderer,
    );
    // Fetching can take long (large artifacts, a slow store): SIGTERM or a lost claim stops
    // it. Dropping the future drops the staging directory with the partial evidence; the
    // caller reports `worker-shutdown`, or nothing for a lost run.
    let result = tokio::select! {
        r = fetch => r,
        () = ctx.abort.cancelled() => {
            log.notice("chain-of-trust verification cancelled: the worker is shutting down")
                .await?;
            return Ok(None);
        }
        () = ctx.claim.token().cancelled() => {
            log.notice("chain-of-trust verification cancelled: the run was lost").await?;
            return Ok(None);
        }
    };
    let text = match &result {
        Ok(verified) => verified.report().to_text(),
        Err(failure) => failure.log_text(),
    };
    let metrics = &ctx.shared.telemetry.metrics;
    match &result {
        Ok(_) => metrics.verification("pass", &[]),
        Err(ChainFailure::Verification(report)) => {
            let checks: Vec<&'static str> =
                report.errors.iter().map(|e| e.check().as_str()).collect();
            metrics.verification("fail", &checks);
        }
        Err(_) => metrics.verification("error", &[]),
    }
    let path = chain_log_path(&ctx.dirs);
    let header = format!(
        "chainlock: task {} run {}, trust policy version {}\n",
        ctx.task_id,
        ctx.run_id,
        ctx.trust.version()
    );
    tokio::fs::write(&path, format!("{header}{text}"))
        .await
        .map_err(|source| TaskError::WorkerFile {
            op: "write",
            path: path.clone(),
            source,
        })?;
    match result {
        Ok(verified) => {
            log.notice(&format!(
                "chain of trust verified: {} link(s), {} upstream file(s) (see {CHAIN_OF_TRUST_LOG})",
                verified.report().links.len(),
                verified.files().len()
            ))
            .await?;
            Ok(Some(verified))
        }
        Err(failure) => {
            log.notice(&format!(
                "{failure}: the script is not started (full report: {CHAIN_OF_TRUST_LOG})"
            ))
            .await?;
            if let ChainFailure::Verification(report) = &failure {
                for e in report.errors.iter().take(MAX_SUMMARY_LINES) {
                    log.notice(&format!("  [FAIL] {}: {e}", e.check())).await?;
                }
                if report.errors.len() > MAX_SUMMARY_LINES {
                    log.notice(&format!(
                        "  ... and {} more",
                        report.errors.len() - MAX_SUMMARY_LINES
                    ))
                    .await?;
                }
            }
            tracing::warn!(task_id = %ctx.task_id, reason = %failure.exception_reason().as_str(),
                "{failure}");
            Err(TaskError::Chain {
                task_id: ctx.task_id.clone(),
                failure,
            })
        }
    }
}

/// Our chain-of-trust document and its signature, written in the worker dir.
#[derive(Debug)]
pub(super) struct SignedCot {
    /// `chain-of-trust.json` (canonical bytes).
    pub json: PathBuf,
    /// `chain-of-trust.json.asc`.
    pub asc: PathBuf,
    /// `chain-of-trust.json.sig` (raw 64-byte ed25519), when `ed25519_key` is configured.
    pub sig: Option<PathBuf>,
}

/// Stage 6, after the task log is final: hash both logs (streaming), build the document over
/// them and every artifact, sign it with the worker key at the run's instant, check our own
/// signature under the trust policy in force, and write both files to the worker dir.
pub(super) async fn sign_cot(
    ctx: &RunCtx,
    artifacts: &[CollectedArtifact],
    task_log: &Path,
) -> Result<SignedCot, TaskError> {
    let mut digests: BTreeMap<String, String> = artifacts
        .iter()
        .map(|a| (a.name.clone(), a.sha256.clone()))
        .collect();
    for (name, path) in [
        (LIVE_BACKING_LOG, task_log.to_owned()),
        (CHAIN_OF_TRUST_LOG, chain_log_path(&ctx.dirs)),
    ] {
        digests.insert(name.to_owned(), hash_file(path).await?);
    }
    let cfg = &ctx.shared.config;
    let worker_type = cfg
        .queue
        .task_queue_id
        .split_once('/')
        .map_or(cfg.queue.task_queue_id.as_str(), |(_, wt)| wt);
    let doc = crate::cot::generate(
        &ctx.raw_task,
        &ctx.task_id,
        ctx.run_id,
        &cfg.queue.worker_group,
        &cfg.queue.worker_id,
        worker_type,
        &digests,
    )
    .map_err(|source| TaskError::Cot {
        task_id: ctx.task_id.clone(),
        source,
    })?;
    let sig = crate::openpgp::sign_detached_armored(&ctx.shared.signing_key, &doc, ctx.now)
        .map_err(|source| TaskError::Sign {
            task_id: ctx.task_id.clone(),
            source,
        })?;
    // Fail closed: never publish a signature that the policy we verify others with rejects.
    let self_check = |sig: CotSignature<'_>| {
        ctx.trust
            .verify_cot_signature(
                &cfg.chain_of_trust.worker_impl,
                &doc,
                sig,
                ctx.now,
                cfg.chain_of_trust.max_clock_skew(),
            )
            .map(|_| ())
            .map_err(|source| TaskError::SelfCheck {
                task_id: ctx.task_id.clone(),
                version: ctx.trust.version(),
                source,
            })
    };
    self_check(CotSignature::OpenPgpArmored(&sig))?;
    // The same exact bytes, signed a second way; checked by the same policy, same fail-closed.
    let raw = match &ctx.shared.ed25519_key {
        None => None,
        Some(key) => {
            let raw = key.sign(&doc);
            self_check(CotSignature::Ed25519Raw(&raw))?;
            Some(raw)
        }
    };
    let files = SignedCot {
        json: ctx.dirs.worker.join("chain-of-trust.json"),
        asc: ctx.dirs.worker.join("chain-of-trust.json.asc"),
        sig: raw
            .is_some()
            .then(|| ctx.dirs.worker.join("chain-of-trust.json.sig")),
    };
    let mut writes: Vec<(&PathBuf, &[u8])> = vec![(&files.json, &doc), (&files.asc, &sig)];
    if let (Some(path), Some(raw)) = (&files.sig, &raw) {
        writes.push((path, raw));
    }
    for (path, bytes) in writes {
        tokio::fs::write(path, bytes)
            .await
            .map_err(|source| TaskError::WorkerFile {
                op: "write",
                path: path.clone(),
                source,
            })?;
    }
    tracing::info!(task_id = %ctx.task_id, artifacts = digests.len(),
        signing_key = %ctx.shared.signing_key.fingerprint(), "chain-of-trust.json signed");
    Ok(files)
}

/// Streaming sha256 of a worker-owned file (memory does not grow with its size).
async fn hash_file(path: PathBuf) -> Result<String, TaskError> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path).map_err(|source| TaskError::WorkerFile {
            op: "read",
            path: path.clone(),
            source,
        })?;
        crate::verify::bundle::hash_reader(file, u64::MAX - 1)
            .map(|d| d.sha256)
            .map_err(|e| TaskError::WorkerFile {
                op: "hash",
                path: path.clone(),
                source: std::io::Error::other(e.detail),
            })
    })
    .await
    .map_err(|e| TaskError::Internal(format!("hashing: {e}")))?
}

/// Stage 7: uploads a worker-owned file under `name` (content type from the name).
pub(super) async fn upload_worker_file(
    ctx: &RunCtx,
    name: &str,
    path: &Path,
) -> Result<(), TaskError> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|source| TaskError::WorkerFile {
            op: "inspect",
            path: path.to_owned(),
            source,
        })?
        .len();
    let (content_type, gzip) = artifacts::content_type_for(name);
    upload_file(ctx, name, path, content_type, gzip, size).await
}

fn parse_definition(ctx: &RunCtx) -> Result<TaskDefinition, TaskError> {
    let malformed = |reason: String| TaskError::Malformed {
        task_id: ctx.task_id.clone(),
        reason,
    };
    let def: TaskDefinition =
        serde_json::from_value(ctx.raw_task.clone()).map_err(|e| malformed(e.to_string()))?;
    let Some(payload) = def.payload.as_object() else {
        return Err(malformed("payload is not an object".into()));
    };
    if let Some(v) = payload.get("maxRunTime")
        && v.as_u64().is_none_or(|n| n == 0)
    {
        return Err(malformed(
            "payload.maxRunTime is not a positive integer".into(),
        ));
    }
    let actual = def.task_queue_id();
    let expected = &ctx.shared.config.queue.task_queue_id;
    if &actual != expected {
        return Err(TaskError::WrongQueue {
            task_id: ctx.task_id.clone(),
            expected: expected.clone(),
            actual,
        });
    }
    Ok(def)
}

async fn launch_spec(
    ctx: &RunCtx,
    def: &TaskDefinition,
    scope_files: &[PathBuf],
) -> Result<LaunchSpec, TaskError> {
    let cfg = &ctx.shared.config;
    let max_run_time = def
        .payload
        .get("maxRunTime")
        .and_then(|v| v.as_u64())
        .map(Duration::from_secs);
    let timeout = match max_run_time {
        Some(m) => m.min(cfg.script.timeout()),
        None => cfg.script.timeout(),
    };
    let path_str = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let fixed = [
        ("TASK_ID", ctx.task_id.to_string()),
        ("RUN_ID", ctx.run_id.to_string()),
        ("TASKCLUSTER_ROOT_URL", cfg.queue.root_url.clone()),
        ("CHAINLOCK_WORK_DIR", path_str(&ctx.dirs.work)),
        ("CHAINLOCK_ARTIFACT_DIR", path_str(&ctx.dirs.artifacts)),
    ];
    let env: Vec<(String, String)> = ctx
        .shared
        .script_env_base
        .iter()
        .filter(|(k, _)| !fixed.iter().any(|(f, _)| f == k))
        .cloned()
        .chain(fixed.iter().map(|(k, v)| ((*k).to_owned(), v.clone())))
        .collect();
    Ok(LaunchSpec {
        argv: cfg.script.argv.clone(),
        env,
        cwd: ctx.dirs.work.clone(),
        timeout,
        kill_grace: cfg.script.kill_grace(),
        limits: ctx.shared.options.launch_limits,
        sandbox: ctx.shared.sandbox.clone(),
        view: RunView {
            work: ctx.dirs.work.clone(),
            artifacts: ctx.dirs.artifacts.clone(),
            read_only: vec![ctx.dirs.work.join("cot"), ctx.dirs.work.join("task.json")],
            files: stage_scope_files(ctx, scope_files).await?,
        },
    })
}

/// Copies the files the task's validated scope selects (`[script] scope_files`) into the run,
/// readable only by the script's uid (mode 0400), for the sandbox to show at their configured
/// paths. Files of other scopes are never copied, so no run can see them. The copies go with
/// the run's directory.
async fn stage_scope_files(
    ctx: &RunCtx,
    files: &[PathBuf],
) -> Result<Vec<(PathBuf, PathBuf)>, TaskError> {
    use std::os::unix::fs::PermissionsExt;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let err = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| TaskError::WorkerFile { op, path, source }
    };
    let dir = ctx.dirs.root.join("scope");
    tokio::fs::create_dir(&dir)
        .await
        .map_err(err("create", &dir))?;
    tokio::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
        .await
        .map_err(err("chmod", &dir))?;
    let mut out = Vec::new();
    for (i, src) in files.iter().enumerate() {
        let copy = dir.join(i.to_string());
        tokio::fs::copy(src, &copy)
            .await
            .map_err(err("copy", src))?;
        tokio::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o400))
            .await
            .map_err(err("chmod", &copy))?;
        if let Some(r) = ctx.shared.sandbox.run_as() {
            std::os::unix::fs::chown(&copy, Some(r.uid), Some(r.gid))
                .map_err(err("chown", &copy))?;
        }
        out.push((copy, src.clone()));
    }
    Ok(out)
}

/// createArtifact (s3, expires = task expiry) then PUT the file.
pub(super) async fn upload(ctx: &RunCtx, a: &CollectedArtifact) -> Result<(), TaskError> {
    upload_file(ctx, &a.name, &a.path, &a.content_type, a.gzip, a.size).await
}

pub(super) async fn upload_file(
    ctx: &RunCtx,
    name: &str,
    path: &std::path::Path,
    content_type: &str,
    gzip: bool,
    size: u64,
) -> Result<(), TaskError> {
    let answer = create_file_artifact(ctx, name, content_type, size).await?;
    send_file(ctx, name, path, content_type, gzip, answer).await
}

/// createArtifact for a file (s3 or object, as configured; expires with the task). A 409
/// gives the run up: it no longer takes artifacts (resolved by someone else, or past the
/// grace the queue gives an exception), so nothing more goes to it and nothing is reported.
async fn create_file_artifact(
    ctx: &RunCtx,
    name: &str,
    content_type: &str,
    size: u64,
) -> Result<CreateArtifactResponse, TaskError> {
    let object = ctx.shared.config.queue.artifact_storage == ArtifactStorage::Object;
    let req = if object {
        CreateArtifactRequest::Object {
            expires: ctx.expires,
            content_type: content_type.to_owned(),
            content_length: Some(size),
        }
    } else {
        CreateArtifactRequest::S3 {
            expires: ctx.expires,
            content_type: content_type.to_owned(),
            content_length: Some(size),
        }
    };
    ctx.client
        .current()
        .create_artifact(&ctx.task_id, ctx.run_id, name, &req)
        .await
        .map_err(|e| {
            if e.is_conflict() {
                tracing::warn!(artifact = name, error = %e,
                    "createArtifact refused (409): the run is no longer ours");
                ctx.claim.give_up();
            }
            TaskError::Upload {
                name: name.to_owned(),
                source: Box::new(e),
            }
        })
}

/// Sends a file's bytes where createArtifact's `answer` says: a PUT to the presigned URL
/// (s3), or the object service's upload and `finishArtifact` (object).
async fn send_file(
    ctx: &RunCtx,
    name: &str,
    path: &std::path::Path,
    content_type: &str,
    gzip: bool,
    answer: CreateArtifactResponse,
) -> Result<(), TaskError> {
    let client = ctx.client.current();
    let object = ctx.shared.config.queue.artifact_storage == ArtifactStorage::Object;
    let err = |source| TaskError::Upload {
        name: name.to_owned(),
        source: Box::new(source),
    };
    match answer {
        CreateArtifactResponse::S3 {
            put_url,
            content_type: signed_type,
            ..
        } if !object => {
            client
                .upload_file(&put_url, path, &signed_type, gzip)
                .await
                .map_err(err)?;
        }
        // Object storage keeps the bytes as they are (no gzip): its hashes are over what a
        // downloader receives.
        CreateArtifactResponse::Object(o) if object => {
            client
                .upload_object_artifact(&ctx.task_id, ctx.run_id, name, &o, path, content_type)
                .await
                .map_err(err)?;
        }
        _ => {
            return Err(TaskError::UnexpectedArtifactResponse {
                name: name.to_owned(),
            });
        }
    }
    Ok(())
}

/// A presigned PUT URL obtained for a worker file before its bytes are final to publish (our
/// chain-of-trust document and signatures, reserved while the files they list go up, so that
/// their own upload is one round trip instead of two).
pub(super) struct Reservation {
    answer: CreateArtifactResponse,
}

/// A reservation is used only while its URL has at least this long to live; otherwise the
/// file is created again (an identical createArtifact is safe) just before its PUT.
const RESERVATION_MARGIN: chrono::Duration = chrono::Duration::seconds(120);

/// Stage 7, first wave: createArtifact for a worker file whose bytes go up later. `None`
/// when there is nothing to gain or the queue did not answer: the file is then created when
/// it is sent ([`upload_reserved`]). Object storage never reserves: its upload is bound to
/// temporary credentials and an upload id that are best used at once.
pub(super) async fn reserve_worker_file(
    ctx: &RunCtx,
    name: &str,
    path: &Path,
) -> Option<Reservation> {
    if ctx.shared.config.queue.artifact_storage == ArtifactStorage::Object {
        return None;
    }
    let size = tokio::fs::metadata(path).await.ok()?.len();
    let (content_type, _) = artifacts::content_type_for(name);
    match create_file_artifact(ctx, name, content_type, size).await {
        Ok(answer @ CreateArtifactResponse::S3 { .. }) => Some(Reservation { answer }),
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(artifact = name, error = %e,
                "createArtifact ahead of the upload failed; retried when the file is sent");
            None
        }
    }
}

/// Stage 7, second wave: sends a worker file through its reservation while the URL is fresh
/// enough, else creates it again first.
pub(super) async fn upload_reserved(
    ctx: &RunCtx,
    name: &str,
    path: &Path,
    reservation: Option<Reservation>,
) -> Result<(), TaskError> {
    let fresh = reservation.filter(|r| match &r.answer {
        CreateArtifactResponse::S3 { expires, .. } => crate::clock::now()
            .checked_add_signed(RESERVATION_MARGIN)
            .is_some_and(|deadline| *expires > deadline),
        _ => false,
    });
    let Some(reservation) = fresh else {
        return upload_worker_file(ctx, name, path).await;
    };
    let (content_type, gzip) = artifacts::content_type_for(name);
    send_file(ctx, name, path, content_type, gzip, reservation.answer).await
}

/// What `public/logs/live.log`, the log UIs and Treeherder show, links to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LiveLogTarget {
    /// The task log, [`LIVE_BACKING_LOG`]: the normal case.
    TaskLog,
    /// The audit report, [`CHAIN_OF_TRUST_LOG`]: after a failed verification, so the reason is
    /// what a reader sees first (as scriptworker 63.2.0 does). Only once that report is
    /// uploaded, so the link never dangles.
    ChainOfTrustLog,
}

impl LiveLogTarget {
    /// The artifact name the link points at.
    pub(super) fn artifact(self) -> &'static str {
        match self {
            LiveLogTarget::TaskLog => LIVE_BACKING_LOG,
            LiveLogTarget::ChainOfTrustLog => CHAIN_OF_TRUST_LOG,
        }
    }
}

/// Stage 7: the task log (closed before anything is uploaded, so it is complete).
pub(super) async fn upload_task_log(
    ctx: &RunCtx,
    log_path: &std::path::Path,
) -> Result<(), TaskError> {
    let size = tokio::fs::metadata(log_path)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    upload_file(
        ctx,
        LIVE_BACKING_LOG,
        log_path,
        LOG_CONTENT_TYPE,
        true,
        size,
    )
    .await
}

/// Stage 7, second wave: `live.log` as a link to `target` (the task log itself, unless
/// verification failed), once `target` is uploaded.
pub(super) async fn link_live_log(ctx: &RunCtx, target: LiveLogTarget) -> Result<(), TaskError> {
    let link = CreateArtifactRequest::Link {
        expires: ctx.expires,
        artifact: target.artifact().to_owned(),
        content_type: Some(LOG_CONTENT_TYPE.to_owned()),
    };
    ctx.client
        .current()
        .create_artifact(&ctx.task_id, ctx.run_id, LIVE_LOG, &link)
        .await
        .map_err(|source| TaskError::Upload {
            name: LIVE_LOG.to_owned(),
            source: Box::new(source),
        })?;
    Ok(())
}

/// Stage 8: resolve the run. A 409 means someone else resolved it (e.g. cancelled): logged and
/// ignored, as the queue's state is then final anyway.
pub(super) async fn report(ctx: &RunCtx, resolution: &Resolution) {
    let client = ctx.client.current();
    let result = match resolution {
        Resolution::Completed => client.report_completed(&ctx.task_id, ctx.run_id).await,
        Resolution::Failed(_) => client.report_failed(&ctx.task_id, ctx.run_id).await,
        Resolution::Exception(r) => client.report_exception(&ctx.task_id, ctx.run_id, *r).await,
    };
    match result {
        Ok(_) => tracing::info!(task_id = %ctx.task_id, run_id = ctx.run_id,
            resolution = %resolution.label(), "reported"),
        Err(e) if e.is_conflict() => tracing::warn!(task_id = %ctx.task_id, run_id = ctx.run_id,
            error = %e, "report refused (409): the run was already resolved"),
        Err(e) => tracing::error!(task_id = %ctx.task_id, run_id = ctx.run_id, error = %e,
            "report failed; the claim will expire and the queue will retry the task"),
    }
}

#[cfg(test)]
mod disk_full_tests {
    use super::*;
    use crate::evidence::EvidenceError;
    use crate::queue::QueueError;

    fn enospc() -> std::io::Error {
        std::io::Error::from_raw_os_error(nix::libc::ENOSPC)
    }

    fn queue_io(source: std::io::Error) -> QueueError {
        QueueError::Io {
            op: "write",
            path: "/w/x".into(),
            source,
        }
    }

    /// A full disk is one outcome wherever it surfaces: evidence staging, the fetcher's
    /// writes, collecting artifacts, our own files, an upload's gzip temporary.
    #[test]
    fn a_full_disk_is_worker_shutdown_wherever_it_surfaces() {
        let id = TaskId::generate();
        let full = [
            TaskError::WorkerFile {
                op: "write",
                path: "/w/cot".into(),
                source: enospc(),
            },
            TaskError::Chain {
                task_id: id.clone(),
                failure: ChainFailure::Local(EvidenceError::Io {
                    path: "/w/status.json".into(),
                    source: enospc(),
                }),
            },
            TaskError::Chain {
                task_id: id.clone(),
                failure: ChainFailure::Infrastructure(EvidenceError::Queue {
                    task_id: id.clone(),
                    what: "artifact".into(),
                    source: Box::new(queue_io(enospc())),
                }),
            },
            TaskError::Artifacts(ArtifactError::Io {
                path: "/w/staged".into(),
                source: std::io::Error::from_raw_os_error(nix::libc::EDQUOT),
            }),
            TaskError::Upload {
                name: "public/x".into(),
                source: Box::new(queue_io(enospc())),
            },
        ];
        for e in &full {
            assert!(e.is_disk_full(), "{e}");
            assert_eq!(
                e.resolution(),
                Resolution::Exception(ExceptionReason::WorkerShutdown),
                "{e}"
            );
        }
        let other = TaskError::WorkerFile {
            op: "write",
            path: "/w/cot".into(),
            source: std::io::Error::from_raw_os_error(nix::libc::EACCES),
        };
        assert!(!other.is_disk_full());
        assert_eq!(
            other.resolution(),
            Resolution::Exception(ExceptionReason::InternalError)
        );
    }
}
