//! Every reason a chain can fail, and which numbered check each belongs to.

use crate::artifact_path::UnsafePathReason;
use crate::ids::TaskId;
use serde::Serialize;
use std::fmt;

/// The checks the verifier runs; every failure names one (brief "verify", checks 1-8, plus the
/// building of the chain itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    /// Building the chain: links, queues known to the policy, cycles, depth, evidence present.
    Chain,
    /// 1. Latest run completed; the document matches the queue's data for that run.
    Run,
    /// 2. The document validates against the chain-of-trust schema.
    Schema,
    /// 3. The signature verifies under the trust store for the link's worker implementation.
    Signature,
    /// 4. Consumed artifacts are listed in the link's document and their sha256 matches.
    Artifacts,
    /// 5. Decision/action tasks: allowed queue, task-graph.json describes every child.
    TaskGraph,
    /// 6. No interactive tasks.
    Interactive,
    /// 7. Docker images trace to a docker-image link of the chain.
    DockerImage,
    /// 8. Source repositories agree; restricted scopes only from allowed repositories/branches.
    SourceAndScopes,
    /// 9. Decision/action tasks equal a task their repository's `.taskcluster.yml` renders to.
    DecisionRebuild,
}

impl Check {
    /// Every check, in report order.
    pub const ALL: [Check; 10] = [
        Check::Chain,
        Check::Run,
        Check::Schema,
        Check::Signature,
        Check::Artifacts,
        Check::TaskGraph,
        Check::Interactive,
        Check::DockerImage,
        Check::SourceAndScopes,
        Check::DecisionRebuild,
    ];

    /// The report name (`task-graph`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Chain => "chain",
            Check::Run => "run",
            Check::Schema => "schema",
            Check::Signature => "signature",
            Check::Artifacts => "artifacts",
            Check::TaskGraph => "task-graph",
            Check::Interactive => "interactive",
            Check::DockerImage => "docker-image",
            Check::SourceAndScopes => "source-and-scopes",
            Check::DecisionRebuild => "decision-rebuild",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a link (or the chain) failed verification.
///
/// Foreign errors (schema validation, signature acceptance) are carried as their rendered text in
/// `detail`, so the report stays self-contained and serialisable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    // ---- chain ----
    /// The link's queue is not in the chain policy.
    #[error(
        "task {task_id} runs on task queue {task_queue_id}, which the chain policy does not allow"
    )]
    UnknownQueue {
        /// The link.
        task_id: TaskId,
        /// Its queue.
        task_queue_id: String,
    },
    /// A link leads back to a task already on the path.
    #[error("cycle in the chain: {}", join_ids(path))]
    Cycle {
        /// The path, ending with the repeated task.
        path: Vec<TaskId>,
    },
    /// The chain is deeper than the limit.
    #[error("task {task_id} is {depth} links from the target, more than the limit of {max}")]
    TooDeep {
        /// The link that is too deep.
        task_id: TaskId,
        /// Its depth.
        depth: usize,
        /// The limit.
        max: usize,
    },
    /// More links than the limit.
    #[error("the chain has more than {max} links")]
    TooManyLinks {
        /// The limit.
        max: usize,
    },
    /// A task of the chain is not in the evidence (its definition could not be fetched: 404).
    #[error("task {task_id} is part of the chain but its definition is not in the evidence")]
    MissingTask {
        /// The task.
        task_id: TaskId,
    },
    /// The task definition cannot be read as a Taskcluster task.
    #[error("task {task_id} has an invalid task definition: {detail}")]
    InvalidTaskDefinition {
        /// The task.
        task_id: TaskId,
        /// What is wrong.
        detail: String,
    },
    /// A field that should name a task does not hold a taskId.
    #[error("task {task_id}: {field} is not a valid taskId: {value:?}")]
    InvalidLinkId {
        /// The task.
        task_id: TaskId,
        /// Where (`payload.upstreamArtifacts[0].taskId`).
        field: String,
        /// The value (whole up to 4096 characters).
        value: String,
    },
    /// A non-decision task with no decision task above it.
    #[error("task {task_id} ({kind}) has no decision task: its taskGroupId is itself")]
    NoDecisionRoot {
        /// The task.
        task_id: TaskId,
        /// Its kind.
        kind: String,
    },
    /// A task lists more upstream artifacts than the limit.
    #[error("task {task_id} lists more than {max} upstream artifacts")]
    TooManyUpstreamArtifacts {
        /// The task.
        task_id: TaskId,
        /// The limit.
        max: usize,
    },

    /// The bundle's `bundle.json` names another target than the task the auditor asked for
    /// (`chainlock verify TASK_ID --bundle DIR`): a bundle cannot retarget itself.
    #[error(
        "the bundle is evidence for task {bundle_target} (its bundle.json says so), not for the \
         requested task {requested}; refusing to verify another task than the one asked for"
    )]
    BundleTargetMismatch {
        /// The task the auditor asked for.
        requested: TaskId,
        /// The target `bundle.json` names.
        bundle_target: TaskId,
    },

    // ---- 1. run ----
    /// No status for the link in the evidence.
    #[error("task {task_id}: no run status in the evidence")]
    StatusMissing {
        /// The task.
        task_id: TaskId,
    },
    /// The task's latest run did not complete.
    #[error("task {task_id}: {}", run_not_completed(*run_id, state))]
    RunNotCompleted {
        /// The task.
        task_id: TaskId,
        /// The latest run, if any.
        run_id: Option<u32>,
        /// Its state.
        state: String,
    },
    /// A document field differs from the queue's data for the run.
    #[error("task {task_id}: chain-of-trust.json {field} is {actual}, the queue says {expected}")]
    DocumentMismatch {
        /// The task.
        task_id: TaskId,
        /// The field (`taskId`, `runId`, `workerType`, `task`, `workerGroup`, `workerId`).
        field: String,
        /// The queue's value.
        expected: String,
        /// The document's value.
        actual: String,
    },

    // ---- 2. schema ----
    /// The chain-of-trust document is missing (404).
    #[error("task {task_id}: {artifact} is missing")]
    DocumentMissing {
        /// The task.
        task_id: TaskId,
        /// The artifact name.
        artifact: String,
    },
    /// The document is not a valid chain-of-trust document.
    #[error("task {task_id}: chain-of-trust.json is invalid: {detail}")]
    DocumentInvalid {
        /// The task.
        task_id: TaskId,
        /// What is wrong.
        detail: String,
    },

    // ---- 3. signature ----
    /// The signature artifact is missing.
    #[error("task {task_id}: signature {artifact} is missing")]
    SignatureMissing {
        /// The task.
        task_id: TaskId,
        /// The signature artifact.
        artifact: String,
    },
    /// The trust store refused the signature.
    #[error("task {task_id}: signature refused for worker implementation {worker_impl}: {detail}")]
    SignatureRejected {
        /// The task.
        task_id: TaskId,
        /// The worker implementation whose keys were tried.
        worker_impl: String,
        /// The trust store's reason.
        detail: String,
    },

    // ---- 4. artifacts ----
    /// An artifact name is not a safe relative path.
    #[error("task {task_id}: artifact name {path:?} is unsafe ({reason})")]
    UnsafePath {
        /// The task the artifact belongs to.
        task_id: TaskId,
        /// The name (whole up to 4096 characters).
        path: String,
        /// Why.
        reason: UnsafePathReason,
    },
    /// A consumed artifact is not listed in its task's document.
    #[error("task {task_id}: {path} is consumed but not listed in its chain-of-trust.json")]
    ArtifactNotInDocument {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact.
        path: String,
    },
    /// The document lists the artifact without a usable sha256.
    #[error("task {task_id}: chain-of-trust.json lists {path} without a valid sha256")]
    ArtifactHashInvalid {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact.
        path: String,
    },
    /// The artifact bytes are not in the evidence (404).
    #[error("task {task_id}: artifact {path} is missing")]
    ArtifactMissing {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact.
        path: String,
    },
    /// The artifact bytes cannot be read from the evidence.
    #[error("task {task_id}: artifact {path} cannot be read: {detail}")]
    ArtifactUnreadable {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact.
        path: String,
        /// Why.
        detail: String,
    },
    /// The bytes do not hash to the signed value.
    #[error(
        "task {task_id}: sha256 of {path} is {actual}, its chain-of-trust.json says {expected}"
    )]
    HashMismatch {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact.
        path: String,
        /// The signed hash.
        expected: String,
        /// The hash of the bytes.
        actual: String,
    },

    // ---- 5. task graph ----
    /// A task that created other links is not on a decision or action queue.
    #[error(
        "task {task_id} created links of the chain but its queue {task_queue_id} is not a decision or action queue"
    )]
    NotDecisionQueue {
        /// The task.
        task_id: TaskId,
        /// Its queue.
        task_queue_id: String,
    },
    /// task-graph.json is not a JSON object of tasks.
    #[error("task {task_id}: task-graph.json is invalid: {detail}")]
    GraphInvalid {
        /// The decision task.
        task_id: TaskId,
        /// What is wrong.
        detail: String,
    },
    /// A child of a decision task is not in its graph.
    #[error("task {task_id} is not in the task-graph.json of its decision task {decision}")]
    TaskNotInGraph {
        /// The child.
        task_id: TaskId,
        /// The decision task.
        decision: TaskId,
    },
    /// A value of the task definition differs from the graph.
    #[error(
        "task {task_id}: {key} differs from task-graph.json of {decision}: graph {graph}, task {runtime}"
    )]
    GraphMismatch {
        /// The child.
        task_id: TaskId,
        /// The decision task.
        decision: TaskId,
        /// JSON pointer into the task definition of the first difference
        /// (`/payload/env/EXTRA`).
        key: String,
        /// The graph's value there, as JSON (whole up to 4 KiB), or `absent`.
        graph: String,
        /// The task's value there, as JSON (whole up to 4 KiB), or `absent`.
        runtime: String,
    },
    /// A key present at run time but not in the graph (a reference gap we close).
    #[error(
        "task {task_id}: {key} is set at run time but absent from task-graph.json of {decision}"
    )]
    RuntimeOnlyKey {
        /// The child.
        task_id: TaskId,
        /// The decision task.
        decision: TaskId,
        /// The key.
        key: String,
    },
    /// A runtime dependency that the graph does not declare.
    #[error("task {task_id}: dependency {dependency} is not in task-graph.json of {decision}")]
    UnexpectedDependency {
        /// The child.
        task_id: TaskId,
        /// The decision task.
        decision: TaskId,
        /// The extra dependency.
        dependency: String,
    },

    // ---- 6. interactive ----
    /// The task is (or may be) interactive.
    #[error("task {task_id} is interactive ({indicator})")]
    Interactive {
        /// The task.
        task_id: TaskId,
        /// Which field says so.
        indicator: String,
    },

    // ---- 7. docker images ----
    /// The image specification cannot be understood.
    #[error("task {task_id}: payload.image is not understood: {detail}")]
    BadImage {
        /// The task.
        task_id: TaskId,
        /// What is wrong.
        detail: String,
    },
    /// A task-image whose task is not a docker-image link.
    #[error("task {task_id}: image task {image_task} is not on a docker-image queue")]
    ImageTaskNotDockerImage {
        /// The consumer.
        task_id: TaskId,
        /// The image task.
        image_task: TaskId,
    },
    /// `extra.chainOfTrust.inputs["docker-image"]` disagrees with `payload.image.taskId`.
    #[error(
        "task {task_id}: extra.chainOfTrust.inputs docker-image {declared} differs from payload.image.taskId {image_task}"
    )]
    ImageInputMismatch {
        /// The consumer.
        task_id: TaskId,
        /// The image task.
        image_task: TaskId,
        /// The declared input.
        declared: String,
    },
    /// The consumer's document does not record the hash of the image it ran.
    #[error("task {task_id}: chain-of-trust.json has no environment.imageArtifactHash")]
    ImageHashMissing {
        /// The consumer.
        task_id: TaskId,
    },
    /// The image the consumer ran is not the one the docker-image link built.
    #[error("task {task_id}: ran image {actual}, but {image_task} lists {path} as {expected}")]
    ImageHashMismatch {
        /// The consumer.
        task_id: TaskId,
        /// The image task.
        image_task: TaskId,
        /// The image path.
        path: String,
        /// The docker-image link's hash.
        expected: String,
        /// The consumer's recorded hash.
        actual: String,
    },
    /// An indexed or unpinned registry image in a chain with restricted scopes.
    #[error(
        "task {task_id} ({kind}) runs an image that no link of the chain built ({image}) while the chain uses restricted scopes"
    )]
    UnpinnedImage {
        /// The task.
        task_id: TaskId,
        /// Its kind.
        kind: String,
        /// The image (whole up to 4096 characters).
        image: String,
    },

    // ---- 8. source and scopes ----
    /// A `*_HEAD_REPOSITORY` variable disagrees with `metadata.source`.
    #[error("task {task_id}: {variable}={value} does not match metadata.source {source_url}")]
    RepositoryEnvMismatch {
        /// The task.
        task_id: TaskId,
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// metadata.source.
        source_url: String,
    },
    /// A link's repository differs from its decision task's.
    #[error(
        "task {task_id} comes from {repository}, its decision task {decision} from {decision_repository}"
    )]
    DecisionRepositoryMismatch {
        /// The task.
        task_id: TaskId,
        /// Its repository.
        repository: String,
        /// Its decision task.
        decision: TaskId,
        /// The decision task's repository.
        decision_repository: String,
    },
    /// A restricted scope used from a repository the rule does not allow.
    #[error(
        "restricted scope {scope}: task {task_id} comes from {repository}, which the policy does not allow for it"
    )]
    RestrictedScopeRepository {
        /// The scope.
        scope: String,
        /// The link.
        task_id: TaskId,
        /// Its repository (or `unknown`).
        repository: String,
    },
    /// A restricted scope used from a branch the rule does not allow.
    #[error(
        "restricted scope {scope}: task {task_id} comes from branch {branch}, which the policy does not allow for it"
    )]
    RestrictedScopeBranch {
        /// The scope.
        scope: String,
        /// The link.
        task_id: TaskId,
        /// Its branch (or `unknown`).
        branch: String,
    },
    /// A restricted scope in a chain that contains a pull-request or try-like task.
    #[error("restricted scope {scope}: task {task_id} is untrusted ({why})")]
    RestrictedScopeUntrusted {
        /// The scope.
        scope: String,
        /// The untrusted link.
        task_id: TaskId,
        /// Why it is untrusted.
        why: String,
    },
    /// `taskQueueId` and `provisionerId/workerType` name different queues: the link's policy
    /// role would depend on which one is read.
    #[error(
        "task {task_id}: {place} says taskQueueId {task_queue_id:?} but provisionerId/workerType \
         {provisioner_worker:?}"
    )]
    QueueIdentityMismatch {
        /// The task.
        task_id: TaskId,
        /// Where (`task definition`, `status`, `task-graph entry`).
        place: &'static str,
        /// The explicit field.
        task_queue_id: String,
        /// The pair.
        provisioner_worker: String,
    },
    /// `status.json` disagrees with the task definition.
    #[error("task {task_id}: status {field} is {actual:?}, the task definition says {expected:?}")]
    StatusMismatch {
        /// The task.
        task_id: TaskId,
        /// The field (`taskGroupId`, `schedulerId`, ...).
        field: &'static str,
        /// From the definition.
        expected: String,
        /// From the status.
        actual: String,
    },
    /// The runs of a status are not a consistent history.
    #[error("task {task_id}: runs are inconsistent: {detail}")]
    RunsInvalid {
        /// The task.
        task_id: TaskId,
        /// What is wrong.
        detail: String,
    },
    /// A decision-kind link is not the root of its group: a child relabelled as a decision
    /// task never escapes its parent's graph.
    #[error(
        "task {task_id} runs on a {kind} queue but names {parent} as its decision task: a {kind} \
         task must be the root its children name"
    )]
    GraphCreatorNotRoot {
        /// The task.
        task_id: TaskId,
        /// Its policy kind.
        kind: String,
        /// The decision task it names.
        parent: TaskId,
    },
    /// The signature is dated before something it must follow (the signed task's `created`,
    /// the run's start).
    #[error("task {task_id}: signature dated {signed_at}, before the {what} ({bound})")]
    SignatureTooEarly {
        /// The task.
        task_id: TaskId,
        /// The signature's time.
        signed_at: String,
        /// `task's created time`, `run's start`.
        what: &'static str,
        /// That time.
        bound: String,
    },
    /// A piece of unsigned evidence is not strict JSON (duplicate key, inexact number).
    #[error("{path}: {detail}")]
    EvidenceMalformed {
        /// The file, relative to the evidence.
        path: String,
        /// Why.
        detail: String,
        /// The check that needed it (`chain` for a definition, `run` for a status).
        check: Check,
    },

    // ---- added for issue 9 (crashes and hangs) ----
    /// A graph `relative-datestamp` offset, or the runtime `created` plus it, is outside the
    /// range of representable times (`300000 years`).
    #[error(
        "task {task_id}: {key} in task-graph.json of {decision} has an out-of-range relative-datestamp {spec:?}"
    )]
    DatestampOutOfRange {
        /// The child.
        task_id: TaskId,
        /// The decision task.
        decision: TaskId,
        /// The top-level key holding it.
        key: String,
        /// The offset (whole up to 4096 characters).
        spec: String,
    },
    /// A piece of evidence exceeds a size limit (as sent, or after gzip decoding).
    #[error("task {task_id}: {artifact} is larger than {max_bytes} bytes (limit {limit})")]
    EvidenceTooLarge {
        /// The task it belongs to.
        task_id: TaskId,
        /// The artifact.
        artifact: String,
        /// The [`Limits`](super::Limits) field that refused it (`max_document_bytes`, ...).
        limit: &'static str,
        /// Its value.
        max_bytes: u64,
        /// The check that needed the evidence.
        check: Check,
    },

    // ---- added for issue 10 (decision-rebuild) ----
    /// The rebuild could not be attempted or its inputs were refused (no rule, disallowed or
    /// unknown `tasks_for`, a source missing or malformed, a json-e error or budget).
    #[error("task {task_id}: cannot rebuild the definition: {detail}")]
    RebuildFailed {
        /// The decision or action task.
        task_id: TaskId,
        /// What went wrong.
        detail: String,
    },
    /// The runtime definition equals none of the rendered tasks.
    #[error(
        "task {task_id}: the runtime definition matches none of the {candidates} task(s) rebuilt from .taskcluster.yml; closest differs at {}",
        differences.join("; ")
    )]
    RebuildMismatch {
        /// The decision or action task.
        task_id: TaskId,
        /// How many tasks the template rendered.
        candidates: usize,
        /// `pointer: rebuilt X / runtime Y`, for the closest candidate.
        differences: Vec<String>,
    },
}

fn run_not_completed(run_id: Option<u32>, state: &str) -> String {
    match run_id {
        Some(run) => format!("latest run {run} is {state}, not completed"),
        None => format!("no run yet (the task is {state}), not completed"),
    }
}

fn join_ids(ids: &[TaskId]) -> String {
    ids.iter()
        .map(TaskId::as_str)
        .collect::<Vec<_>>()
        .join(" -> ")
}

impl VerifyError {
    /// The check this failure belongs to.
    pub fn check(&self) -> Check {
        use VerifyError::*;
        match self {
            UnknownQueue { .. }
            | Cycle { .. }
            | TooDeep { .. }
            | TooManyLinks { .. }
            | MissingTask { .. }
            | InvalidTaskDefinition { .. }
            | InvalidLinkId { .. }
            | NoDecisionRoot { .. }
            | TooManyUpstreamArtifacts { .. }
            | BundleTargetMismatch { .. } => Check::Chain,
            StatusMissing { .. } | RunNotCompleted { .. } | DocumentMismatch { .. } => Check::Run,
            DocumentMissing { .. } | DocumentInvalid { .. } => Check::Schema,
            SignatureMissing { .. } | SignatureRejected { .. } => Check::Signature,
            UnsafePath { .. }
            | ArtifactNotInDocument { .. }
            | ArtifactHashInvalid { .. }
            | ArtifactMissing { .. }
            | ArtifactUnreadable { .. }
            | HashMismatch { .. } => Check::Artifacts,
            NotDecisionQueue { .. }
            | GraphInvalid { .. }
            | TaskNotInGraph { .. }
            | GraphMismatch { .. }
            | RuntimeOnlyKey { .. }
            | UnexpectedDependency { .. } => Check::TaskGraph,
            Interactive { .. } => Check::Interactive,
            BadImage { .. }
            | ImageTaskNotDockerImage { .. }
            | ImageInputMismatch { .. }
            | ImageHashMissing { .. }
            | ImageHashMismatch { .. }
            | UnpinnedImage { .. } => Check::DockerImage,
            RepositoryEnvMismatch { .. }
            | DecisionRepositoryMismatch { .. }
            | RestrictedScopeRepository { .. }
            | RestrictedScopeBranch { .. }
            | RestrictedScopeUntrusted { .. } => Check::SourceAndScopes,
            QueueIdentityMismatch { .. } => Check::Chain,
            EvidenceMalformed { check, .. } => *check,
            StatusMismatch { .. } | RunsInvalid { .. } => Check::Run,
            GraphCreatorNotRoot { .. } => Check::TaskGraph,
            SignatureTooEarly { .. } => Check::Signature,
            DatestampOutOfRange { .. } => Check::TaskGraph,
            EvidenceTooLarge { check, .. } => *check,
            RebuildFailed { .. } | RebuildMismatch { .. } => Check::DecisionRebuild,
        }
    }

    /// A stable machine-readable code (`hash-mismatch`, ...), used in the JSON report.
    pub fn code(&self) -> &'static str {
        use VerifyError::*;
        match self {
            UnknownQueue { .. } => "unknown-queue",
            Cycle { .. } => "cycle",
            TooDeep { .. } => "too-deep",
            TooManyLinks { .. } => "too-many-links",
            MissingTask { .. } => "missing-task",
            InvalidTaskDefinition { .. } => "invalid-task-definition",
            InvalidLinkId { .. } => "invalid-link-id",
            NoDecisionRoot { .. } => "no-decision-root",
            TooManyUpstreamArtifacts { .. } => "too-many-upstream-artifacts",
            BundleTargetMismatch { .. } => "bundle-target-mismatch",
            StatusMissing { .. } => "status-missing",
            RunNotCompleted { .. } => "run-not-completed",
            DocumentMismatch { .. } => "document-mismatch",
            DocumentMissing { .. } => "document-missing",
            DocumentInvalid { .. } => "document-invalid",
            SignatureMissing { .. } => "signature-missing",
            SignatureRejected { .. } => "signature-rejected",
            UnsafePath { .. } => "unsafe-path",
            ArtifactNotInDocument { .. } => "artifact-not-in-document",
            ArtifactHashInvalid { .. } => "artifact-hash-invalid",
            ArtifactMissing { .. } => "artifact-missing",
            ArtifactUnreadable { .. } => "artifact-unreadable",
            HashMismatch { .. } => "hash-mismatch",
            NotDecisionQueue { .. } => "not-decision-queue",
            GraphInvalid { .. } => "graph-invalid",
            TaskNotInGraph { .. } => "task-not-in-graph",
            GraphMismatch { .. } => "graph-mismatch",
            RuntimeOnlyKey { .. } => "runtime-only-key",
            UnexpectedDependency { .. } => "unexpected-dependency",
            Interactive { .. } => "interactive",
            BadImage { .. } => "bad-image",
            ImageTaskNotDockerImage { .. } => "image-task-not-docker-image",
            ImageInputMismatch { .. } => "image-input-mismatch",
            ImageHashMissing { .. } => "image-hash-missing",
            ImageHashMismatch { .. } => "image-hash-mismatch",
            UnpinnedImage { .. } => "unpinned-image",
            RepositoryEnvMismatch { .. } => "repository-env-mismatch",
            DecisionRepositoryMismatch { .. } => "decision-repository-mismatch",
            RestrictedScopeRepository { .. } => "restricted-scope-repository",
            RestrictedScopeBranch { .. } => "restricted-scope-branch",
            RestrictedScopeUntrusted { .. } => "restricted-scope-untrusted",
            QueueIdentityMismatch { .. } => "queue-identity-mismatch",
            StatusMismatch { .. } => "status-mismatch",
            RunsInvalid { .. } => "runs-invalid",
            GraphCreatorNotRoot { .. } => "graph-creator-not-root",
            SignatureTooEarly { .. } => "signature-too-early",
            EvidenceMalformed { .. } => "evidence-malformed",
            DatestampOutOfRange { .. } => "datestamp-out-of-range",
            EvidenceTooLarge { .. } => "evidence-too-large",
            RebuildFailed { .. } => "rebuild-failed",
            RebuildMismatch { .. } => "rebuild-mismatch",
        }
    }
}

/// Bounds untrusted text placed in errors and reports: whole up to 4096 characters (the same
/// bound as a graph mismatch's values), so an auditor sees both sides of a comparison, yet a
/// hostile megabyte-long field cannot flood a report.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 4096;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(MAX).collect();
        out.push('…');
        out
    }
}
