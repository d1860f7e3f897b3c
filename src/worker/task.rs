//! The per-task pipeline: one claimed run, from the raw claim to the report, in numbered stages.
//!
//! Stages (later issues insert theirs where the placeholders are):
//! 1. parse the claim (a malformed definition is reported `malformed-payload`, never a crash),
//!    write `task.json`;
//! 2. validate the restricted input (issue 5);
//! 3. verify the chain of trust (issue 4);
//! 4. launch the script;
//! 5. collect its artifacts;
//! 6. write and sign `chain-of-trust.json` (issue 3);
//! 7. upload: artifacts, then the task log, then `public/logs/live.log` as a link to it;
//! 8. report.
//!
//! Invariants: a claimed run is always resolved, unless the queue told us it is no longer ours
//! (reclaim 409), in which case nothing more is uploaded or reported. The script never sees
//! credentials. Errors from every stage become a [`Resolution`] in one place,
//! [`TaskError::resolution`].

use super::Shared;
use super::outcome::{FailReason, Resolution};
use super::reclaim::TaskClient;
use super::workdir::{TaskDirs, sorted_json};
use crate::artifacts::{self, ArtifactError, CollectedArtifact};
use crate::ids::TaskId;
use crate::launch::{self, LaunchError, LaunchSpec, ScriptEnd, TaskLog};
use crate::queue::QueueError;
use crate::queue::types::{
    CreateArtifactRequest, CreateArtifactResponse, ExceptionReason, TaskDefinition,
};
use chrono::{DateTime, Utc};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Name of the uploaded task log.
pub const LIVE_BACKING_LOG: &str = "public/logs/live_backing.log";
/// Name of the link to the task log that UIs read.
pub const LIVE_LOG: &str = "public/logs/live.log";
/// Content type of the task log.
pub const LOG_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

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
    /// The outcome each failure gets: the task's fault -> `malformed-payload`; the network
    /// after retries -> `intermittent-task` (rerun); everything else is ours -> `internal-error`.
    pub fn resolution(&self) -> Resolution {
        use ExceptionReason as E;
        match self {
            TaskError::Malformed { .. } | TaskError::WrongQueue { .. } => {
                Resolution::Exception(E::MalformedPayload)
            }
            TaskError::Upload { source, .. } if source.is_transient() => {
                Resolution::Exception(E::IntermittentTask)
            }
            TaskError::Upload { .. }
            | TaskError::UnexpectedArtifactResponse { .. }
            | TaskError::WorkDir(_)
            | TaskError::WriteTaskJson { .. }
            | TaskError::Launch(_)
            | TaskError::Artifacts(_)
            | TaskError::Internal(_) => Resolution::Exception(E::InternalError),
        }
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
    pub expires: DateTime<Utc>,
    pub dirs: TaskDirs,
    pub client: TaskClient,
    /// The queue took the run away.
    pub lost: CancellationToken,
    /// SIGTERM: stop the script now.
    pub abort: CancellationToken,
}

/// Stages 1-7a. Returns the resolution so far and the artifacts uploaded; the caller uploads
/// the log (it must come last) and reports.
pub(super) async fn pipeline(
    ctx: &RunCtx,
    log: &mut TaskLog,
) -> Result<(Resolution, Vec<String>), TaskError> {
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
        "task {} run {}: definition accepted",
        ctx.task_id, ctx.run_id
    ))
    .await?;

    // Stage 2: validate the restricted input (issue 5): payload against schemas/ and the task's
    // scopes against the configured prefixes. Placeholder: nothing is checked yet beyond stage 1.

    // Stage 3: verify the chain of trust (issue 4): download and verify upstream documents and
    // artifacts into <work>/cot/<taskId>/<path> and write <work>/cot/manifest.json.
    // Placeholder: not implemented yet.

    // Stage 4: launch the script (unless we are already shutting down or lost the run).
    let end = if ctx.abort.is_cancelled() || ctx.lost.is_cancelled() {
        log.notice("not starting the script: the worker is shutting down")
            .await?;
        ScriptEnd::Cancelled
    } else {
        let spec = launch_spec(ctx, &def)?;
        let cancel = CancellationToken::new();
        let guard = cancel.clone().drop_guard();
        let (lost, abort, c) = (ctx.lost.clone(), ctx.abort.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = lost.cancelled() => c.cancel(),
                _ = abort.cancelled() => c.cancel(),
                _ = c.cancelled() => {}
            }
        });
        let end = launch::run(&spec, log, &cancel).await?;
        drop(guard);
        end
    };
    if ctx.lost.is_cancelled() {
        return Ok((
            Resolution::Exception(ExceptionReason::WorkerShutdown),
            Vec::new(),
        ));
    }
    let mut resolution = Resolution::from_script(end);
    if let Resolution::Failed(reason) = &resolution {
        log.notice(&reason.to_string()).await?;
    }

    // Stage 5: collect the artifacts (even after a failure or shutdown: they help debugging).
    let dir = ctx.dirs.artifacts.clone();
    let limits = ctx.shared.options.artifact_limits;
    let collection = tokio::task::spawn_blocking(move || artifacts::collect(&dir, &limits))
        .await
        .map_err(|e| TaskError::Internal(format!("artifact collection: {e}")))?
        .map_err(TaskError::Artifacts)?;
    for refused in &collection.refused {
        log.notice(&format!("refused: {refused}")).await?;
        tracing::warn!(task_id = %ctx.task_id, "{refused}");
    }
    if !collection.refused.is_empty() {
        resolution = resolution.combine(Resolution::Failed(FailReason::ArtifactsRefused(
            collection.refused.len(),
        )));
    }

    // Stage 6: write and sign chain-of-trust.json over `collection.artifacts` and the frozen
    // task log (issue 3). Placeholder: not implemented yet.

    // Stage 7a: upload the script's artifacts.
    let mut uploaded = Vec::new();
    for artifact in &collection.artifacts {
        if ctx.lost.is_cancelled() {
            return Ok((resolution, uploaded));
        }
        match upload(ctx, artifact).await {
            Ok(()) => {
                log.notice(&format!(
                    "uploaded {} ({} bytes, sha256 {})",
                    artifact.name, artifact.size, artifact.sha256
                ))
                .await?;
                uploaded.push(artifact.name.clone());
            }
            Err(e) => {
                log.notice(&e.to_string()).await?;
                tracing::error!(task_id = %ctx.task_id, error = %e, "upload failed");
                resolution = resolution.combine(e.resolution());
            }
        }
    }
    Ok((resolution, uploaded))
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

fn launch_spec(ctx: &RunCtx, def: &TaskDefinition) -> Result<LaunchSpec, TaskError> {
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
    })
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
    let client = ctx.client.current();
    let req = CreateArtifactRequest::S3 {
        expires: ctx.expires,
        content_type: content_type.to_owned(),
        content_length: Some(size),
    };
    let err = |source| TaskError::Upload {
        name: name.to_owned(),
        source: Box::new(source),
    };
    let resp = client
        .create_artifact(&ctx.task_id, ctx.run_id, name, &req)
        .await
        .map_err(err)?;
    let CreateArtifactResponse::S3 {
        put_url,
        content_type: signed_type,
        ..
    } = resp
    else {
        return Err(TaskError::UnexpectedArtifactResponse {
            name: name.to_owned(),
        });
    };
    client
        .upload_file(&put_url, path, &signed_type, gzip)
        .await
        .map_err(err)?;
    Ok(())
}

/// Stage 7b: the task log (after everything else, so it is complete), then `live.log` as a
/// link to it.
pub(super) async fn upload_log(ctx: &RunCtx, log_path: &std::path::Path) -> Result<(), TaskError> {
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
    .await?;
    let link = CreateArtifactRequest::Link {
        expires: ctx.expires,
        artifact: LIVE_BACKING_LOG.to_owned(),
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
