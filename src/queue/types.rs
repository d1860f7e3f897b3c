//! Wire types of the Taskcluster queue API, as a worker sees them.
//!
//! **API Boundary:** these shapes are Taskcluster's, not ours (see
//! `shared/reference/taskcluster-queue.md`). Types the worker only *reads* ignore unknown fields,
//! so a queue that adds a field never breaks the worker (scriptworker 0.8.0 crashed on a new
//! `hintId`). Request bodies are exact. Task definitions are kept as raw JSON where they are
//! re-published or compared (task.json, chain-of-trust.json, task-graph.json) so that no field is
//! lost or reformatted; [`TaskDefinition`] is a typed *view* for the fields chainlock relies on.

use crate::ids::TaskId;
use crate::secret::Secret;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Formats a timestamp the way the queue does: `2026-01-01T00:00:00.000Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Serde helpers that write timestamps in the queue's millisecond form.
pub mod tc_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as `2026-01-01T00:00:00.000Z`.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_time(*t))
    }

    /// Deserialize any RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// Optional variant of [`tc_time`].
pub mod tc_time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize `Some` as `2026-01-01T00:00:00.000Z`, `None` as null (usually skipped).
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format_time(*t)),
            None => s.serialize_none(),
        }
    }

    /// Deserialize an optional RFC 3339 timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}

/// A typed, read-only view of a task definition. Unknown fields are ignored; fields missing
/// from older stored definitions (`taskQueueId`, `projectId`) are optional.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskDefinition {
    /// Provisioner half of the task queue id.
    pub provisioner_id: String,
    /// Worker-type half of the task queue id.
    pub worker_type: String,
    /// `<provisionerId>/<workerType>`; absent in definitions stored before 2020.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue_id: Option<String>,
    /// Scheduler id (`-` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_id: Option<String>,
    /// Project id (`none` by default); absent in old definitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The task group (for tasks made by a decision task: the decision task's id).
    pub task_group_id: TaskId,
    /// Tasks that must resolve before this one runs.
    #[serde(default)]
    pub dependencies: Vec<TaskId>,
    /// Number of retries the queue allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Creation time.
    #[serde(with = "tc_time")]
    pub created: DateTime<Utc>,
    /// The time after which the task can no longer run.
    #[serde(with = "tc_time")]
    pub deadline: DateTime<Utc>,
    /// The time after which the task and its artifacts are deleted.
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
    /// Scopes the task carries.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Worker-specific payload (validated by the worker, never by the queue).
    pub payload: Value,
    /// `{name, description, owner, source}`.
    #[serde(default)]
    pub metadata: Value,
    /// Free-form tags.
    #[serde(default)]
    pub tags: Value,
    /// Free-form extra data (`extra.parent`, `extra.chainOfTrust.inputs`, ...).
    #[serde(default)]
    pub extra: Value,
}

impl TaskDefinition {
    /// `<provisionerId>/<workerType>`, from the explicit field when present.
    pub fn task_queue_id(&self) -> String {
        self.task_queue_id
            .clone()
            .unwrap_or_else(|| format!("{}/{}", self.provisioner_id, self.worker_type))
    }
}

/// State of a task or of one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for dependencies.
    Unscheduled,
    /// Waiting for a worker.
    Pending,
    /// Claimed by a worker.
    Running,
    /// Resolved successfully.
    Completed,
    /// Resolved as failed (the task's own code failed).
    Failed,
    /// Resolved as an exception (worker or infrastructure problem).
    Exception,
    /// A state this version of chainlock does not know.
    #[serde(other)]
    Unknown,
}

/// One run of a task.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Index of the run (equal to its position in `runs`).
    pub run_id: u32,
    /// State of the run.
    pub state: TaskState,
    /// Why the run was created (`scheduled`, `retry`, ...).
    pub reason_created: String,
    /// Why the run was resolved, once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_resolved: Option<String>,
    /// Worker group that claimed the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_group: Option<String>,
    /// Worker that claimed the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    /// Claim deadline of a running run.
    #[serde(default, with = "tc_time_opt", skip_serializing_if = "Option::is_none")]
    pub taken_until: Option<DateTime<Utc>>,
    /// When the run was scheduled.
    #[serde(with = "tc_time")]
    pub scheduled: DateTime<Utc>,
    /// When the run started.
    #[serde(default, with = "tc_time_opt", skip_serializing_if = "Option::is_none")]
    pub started: Option<DateTime<Utc>>,
    /// When the run was resolved.
    #[serde(default, with = "tc_time_opt", skip_serializing_if = "Option::is_none")]
    pub resolved: Option<DateTime<Utc>>,
}

/// Status of a task and all its runs (`GET /task/<taskId>/status` -> `{"status": ...}`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The task.
    pub task_id: TaskId,
    /// Provisioner id.
    pub provisioner_id: String,
    /// Worker type.
    pub worker_type: String,
    /// `<provisionerId>/<workerType>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_queue_id: Option<String>,
    /// Scheduler id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_id: Option<String>,
    /// Project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Task group.
    pub task_group_id: TaskId,
    /// Priority (`highest` ... `lowest`); absent from older queues' answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Deadline.
    #[serde(with = "tc_time")]
    pub deadline: DateTime<Utc>,
    /// Expiry.
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
    /// Retries left.
    pub retries_left: u32,
    /// State of the task (the state of its last run, or pending/unscheduled).
    pub state: TaskState,
    /// Runs, oldest first.
    pub runs: Vec<RunStatus>,
}

/// `{"status": TaskStatus}`, the answer of the status and resolve endpoints.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TaskStatusResponse {
    /// The status.
    pub status: TaskStatus,
}

/// Temporary task credentials from a claim or reclaim. Never logged.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskCredentials {
    /// `task-client/<taskId>/<runId>/on/<workerGroup>/<workerId>/until/<secs>`.
    pub client_id: String,
    /// The temporary access token.
    pub access_token: Secret,
    /// The certificate, a JSON document in a string.
    pub certificate: Secret,
}

/// Body of `claimWork`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimWorkRequest {
    /// Worker group of this worker.
    pub worker_group: String,
    /// Id of this worker.
    pub worker_id: String,
    /// How many tasks to claim (1-32; chainlock always asks for 1).
    pub tasks: u32,
}

/// One claimed task. `task` stays raw JSON: a malformed definition must still leave us the
/// taskId and runId needed to report it as `malformed-payload`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskClaim {
    /// Status of the task after the claim.
    pub status: TaskStatus,
    /// The run we now hold.
    pub run_id: u32,
    /// Worker group recorded for the run.
    pub worker_group: String,
    /// Worker id recorded for the run.
    pub worker_id: String,
    /// The claim is ours until then, unless reclaimed.
    #[serde(with = "tc_time")]
    pub taken_until: DateTime<Utc>,
    /// The full task definition, as stored by the queue.
    pub task: Value,
    /// Temporary credentials for this run.
    pub credentials: TaskCredentials,
}

/// Body of the legacy `claimTask` (`POST /task/<taskId>/runs/<runId>/claim`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimTaskRequest {
    /// Worker group of this worker.
    pub worker_group: String,
    /// Id of this worker.
    pub worker_id: String,
}

/// One signed Azure queue of a legacy `pollTaskUrls` answer. Both URLs carry a SAS query (a
/// credential).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollQueue {
    /// `GET` it for messages.
    pub signed_poll_url: Secret,
    /// `DELETE` it, with `{{messageId}}` and `{{popReceipt}}` substituted, to delete one.
    pub signed_delete_url: Secret,
}

/// Answer of the legacy `pollTaskUrls`: queues in priority order (highest first).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PollTaskUrlsResponse {
    /// Queues, highest priority first.
    pub queues: Vec<PollQueue>,
    /// When the signatures stop working.
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
}

/// Answer of `claimWork`: possibly empty.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClaimWorkResponse {
    /// Claimed tasks.
    pub tasks: Vec<TaskClaim>,
}

/// Answer of `reclaimTask`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReclaimResponse {
    /// Status after the reclaim.
    pub status: TaskStatus,
    /// The run.
    pub run_id: u32,
    /// Worker group.
    pub worker_group: String,
    /// Worker id.
    pub worker_id: String,
    /// New claim deadline.
    #[serde(with = "tc_time")]
    pub taken_until: DateTime<Utc>,
    /// New temporary credentials; the old ones die at the old `takenUntil`.
    pub credentials: TaskCredentials,
}

/// The reasons a worker may give to `reportException`. `superseded` is deliberately absent:
/// today's queue rejects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExceptionReason {
    /// The worker is shutting down; the queue reruns the task.
    WorkerShutdown,
    /// The task's input is invalid or untrusted; not retried.
    MalformedPayload,
    /// A needed resource is temporarily unavailable; not retried.
    ResourceUnavailable,
    /// A bug in the worker; not retried.
    InternalError,
    /// The task asked to be retried.
    IntermittentTask,
}

impl ExceptionReason {
    /// The wire name (`malformed-payload`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionReason::WorkerShutdown => "worker-shutdown",
            ExceptionReason::MalformedPayload => "malformed-payload",
            ExceptionReason::ResourceUnavailable => "resource-unavailable",
            ExceptionReason::InternalError => "internal-error",
            ExceptionReason::IntermittentTask => "intermittent-task",
        }
    }
}

/// Body of `reportException`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExceptionRequest {
    /// Why.
    pub reason: ExceptionReason,
}

/// Body of `createArtifact`, by storage type.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "storageType", rename_all = "camelCase")]
pub enum CreateArtifactRequest {
    /// Upload through a presigned PUT URL.
    #[serde(rename = "s3", rename_all = "camelCase")]
    S3 {
        /// Expiry (must not exceed the task's).
        #[serde(with = "tc_time")]
        expires: DateTime<Utc>,
        /// Content type, signed into the PUT URL.
        content_type: String,
        /// Informational length of the uploaded (uncompressed) content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_length: Option<u64>,
    },
    /// Upload through the object service (`createUpload`, `finishUpload`), then
    /// `finishArtifact`.
    #[serde(rename_all = "camelCase")]
    Object {
        /// Expiry (must not exceed the task's).
        #[serde(with = "tc_time")]
        expires: DateTime<Utc>,
        /// Content type (advisory).
        content_type: String,
        /// Informational length of the content.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_length: Option<u64>,
    },
    /// A redirect to an external URL.
    #[serde(rename_all = "camelCase")]
    Reference {
        /// Expiry.
        #[serde(with = "tc_time")]
        expires: DateTime<Utc>,
        /// Target URL.
        url: String,
        /// Content type.
        content_type: String,
    },
    /// An alias for another artifact of the same run.
    #[serde(rename_all = "camelCase")]
    Link {
        /// Expiry.
        #[serde(with = "tc_time")]
        expires: DateTime<Utc>,
        /// Name of the target artifact.
        artifact: String,
        /// Content type.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content_type: Option<String>,
    },
    /// A placeholder that answers 424 with a reason.
    #[serde(rename_all = "camelCase")]
    Error {
        /// Expiry.
        #[serde(with = "tc_time")]
        expires: DateTime<Utc>,
        /// `file-missing-on-worker`, `invalid-resource-on-worker`, ...
        reason: String,
        /// Human-readable message (max 4096).
        message: String,
    },
}

/// Answer of `createArtifact`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(tag = "storageType", rename_all = "camelCase")]
pub enum CreateArtifactResponse {
    /// Upload the bytes with `PUT putUrl` (the URL is a credential: never log its query).
    #[serde(rename = "s3", rename_all = "camelCase")]
    S3 {
        /// Presigned PUT URL.
        put_url: Secret,
        /// When the URL stops working.
        #[serde(with = "tc_time")]
        expires: DateTime<Utc>,
        /// Content type that must be sent.
        content_type: String,
    },
    /// Upload to the object service, then call `finishArtifact`.
    Object(ObjectArtifact),
    /// Nothing more to do.
    Reference {},
    /// Nothing more to do.
    Link {},
    /// Nothing more to do.
    Error {},
}

/// createArtifact's `object` answer: upload to the object service as `name`, with these
/// temporary credentials (scoped to this one object; never logged), then call
/// `finishArtifact` with `upload_id`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectArtifact {
    /// The object's name on the object service (`t/<taskId>/<runId>/<artifact>`).
    pub name: String,
    /// The task's project.
    pub project_id: String,
    /// The upload this artifact is locked to.
    pub upload_id: String,
    /// The artifact's expiry, to be repeated to `createUpload`.
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
    /// Credentials for `createUpload` and `finishUpload` of this object.
    pub credentials: TaskCredentials,
}

/// `{sha256, sha512}` (lowercase hex) of an object's content; other algorithms a server sends
/// are kept so they can be compared, never trusted alone.
pub type ObjectHashes = std::collections::BTreeMap<String, String>;

/// Body of the object service's `createUpload`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUploadRequest {
    /// The task's project (from createArtifact).
    pub project_id: String,
    /// The upload id (from createArtifact).
    pub upload_id: String,
    /// The artifact's expiry (from createArtifact).
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
    /// Content hashes, if known at this point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<ObjectHashes>,
    /// The methods the caller can do.
    pub proposed_upload_methods: ProposedUploadMethods,
}

/// `proposedUploadMethods` (we only ever propose `putUrl`; `dataInline` is not needed).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProposedUploadMethods {
    /// A URL to PUT the bytes to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put_url: Option<PutUrlProposal>,
    /// Bytes inline (base64) for small objects; parsed only so a server can refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_inline: Option<Value>,
}

/// The `putUrl` proposal.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutUrlProposal {
    /// Content type of the bytes.
    pub content_type: String,
    /// Exact length of the bytes.
    pub content_length: u64,
}

/// Answer of `createUpload`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateUploadResponse {
    /// The method the server chose (none set: it refused every proposal).
    pub upload_method: UploadMethod,
}

/// `uploadMethod`: at most one method is set.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UploadMethod {
    /// PUT the bytes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub put_url: Option<PutUrlMethod>,
}

/// The `putUrl` method: a URL (a credential: never log its query), its expiry and headers to
/// send verbatim.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PutUrlMethod {
    /// Where to PUT.
    pub url: Secret,
    /// When the URL stops working.
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
    /// Headers to include verbatim.
    pub headers: std::collections::BTreeMap<String, String>,
}

/// Body of the object service's `finishUpload`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinishUploadRequest {
    /// The task's project.
    pub project_id: String,
    /// The upload id.
    pub upload_id: String,
    /// Content hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashes: Option<ObjectHashes>,
}

/// Body of the queue's `finishArtifact`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinishArtifactRequest {
    /// The upload id createArtifact returned.
    pub upload_id: String,
}

/// One entry of `listArtifacts` / `listLatestArtifacts`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInfo {
    /// `s3`, `object`, `reference`, `link` or `error`.
    pub storage_type: String,
    /// Artifact name.
    pub name: String,
    /// Expiry.
    #[serde(with = "tc_time")]
    pub expires: DateTime<Utc>,
    /// Content type.
    pub content_type: String,
    /// Length, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
}

/// One page of an artifact listing.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ListArtifactsResponse {
    /// Artifacts on this page.
    pub artifacts: Vec<ArtifactInfo>,
    /// Present when there are more pages (a short page may still carry one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_token: Option<String>,
}

/// The queue's error body: `{"code", "message", "requestInfo"}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// `ResourceNotFound`, `RequestConflict`, ...
    pub code: String,
    /// Human-readable message.
    pub message: String,
    /// Echo of the request (method, params, payload, time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_info: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_response_tolerates_unknown_fields_and_keeps_raw_task() {
        let body = serde_json::json!({"tasks": [{
            "status": {"taskId": "GVi2vTw8RYqdga6pE08Aiw", "provisionerId": "p", "workerType": "w",
              "taskQueueId": "p/w", "schedulerId": "-", "projectId": "none",
              "taskGroupId": "GVi2vTw8RYqdga6pE08Aiw", "deadline": "2026-09-02T12:00:00.000Z",
              "expires": "2027-09-01T12:00:00.000Z", "retriesLeft": 5, "state": "running",
              "hintId": "new-field",
              "runs": [{"runId": 0, "state": "running", "reasonCreated": "scheduled",
                "scheduled": "2026-09-01T11:59:00.000Z", "somethingNew": 1}]},
            "runId": 0, "workerGroup": "wg", "workerId": "wid",
            "takenUntil": "2026-09-01T12:20:00.000Z",
            "task": {"no": "payload"},
            "credentials": {"clientId": "c", "accessToken": "secret-token", "certificate": "{}"}
        }]});
        let r: ClaimWorkResponse = serde_json::from_value(body).unwrap();
        assert_eq!(r.tasks[0].task, serde_json::json!({"no": "payload"}));
        assert!(!format!("{r:?}").contains("secret-token"));
    }

    #[test]
    fn create_artifact_request_shapes() {
        let t = DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let s3 = CreateArtifactRequest::S3 {
            expires: t,
            content_type: "text/plain".into(),
            content_length: Some(3),
        };
        assert_eq!(
            serde_json::to_value(&s3).unwrap(),
            serde_json::json!({"storageType": "s3", "expires": "2027-01-01T00:00:00.000Z",
                "contentType": "text/plain", "contentLength": 3})
        );
        let link = CreateArtifactRequest::Link {
            expires: t,
            artifact: "public/logs/live_backing.log".into(),
            content_type: None,
        };
        assert_eq!(
            serde_json::to_value(&link).unwrap(),
            serde_json::json!({"storageType": "link", "expires": "2027-01-01T00:00:00.000Z",
                "artifact": "public/logs/live_backing.log"})
        );
        assert_eq!(
            serde_json::to_value(ExceptionRequest {
                reason: ExceptionReason::MalformedPayload
            })
            .unwrap(),
            serde_json::json!({"reason": "malformed-payload"})
        );
    }
}
