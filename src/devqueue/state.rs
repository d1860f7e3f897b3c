//! The dev queue's task state machine: pure transitions over in-memory records.
//!
//! Every function takes `now` as an argument and does no IO; the HTTP layer persists the records
//! a transition reports as changed. This keeps the queue rules (409 conditions, retries, claim
//! expiry, dependency scheduling) testable and in one place.

use crate::ids::TaskId;
use crate::queue::types::{RunStatus, TaskState, TaskStatus, format_time};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// An error answer of the dev queue: HTTP status, queue error code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Queue error code (`RequestConflict`, ...).
    pub code: &'static str,
    /// Message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    pub(crate) fn input(message: impl Into<String>) -> Self {
        ApiError::new(400, "InputError", message)
    }
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ApiError::new(400, "InputValidationError", message)
    }
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, "ResourceNotFound", message)
    }
    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, "RequestConflict", message)
    }
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(401, "AuthenticationFailed", message)
    }
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "InsufficientScopes", message)
    }
}

/// The typed fields of a stored definition the queue logic needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskMeta {
    /// Provisioner id.
    pub provisioner_id: String,
    /// Worker type.
    pub worker_type: String,
    /// `<provisionerId>/<workerType>`.
    pub task_queue_id: String,
    /// Scheduler id.
    pub scheduler_id: String,
    /// Project id.
    pub project_id: String,
    /// Task group.
    pub task_group_id: TaskId,
    /// Dependencies.
    pub dependencies: Vec<TaskId>,
    /// `all-completed` or `all-resolved`.
    pub requires: String,
    /// Priority.
    pub priority: String,
    /// Deadline.
    pub deadline: DateTime<Utc>,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// Task scopes.
    pub scopes: Vec<String>,
}

/// One artifact as the dev queue stores it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactRecord {
    /// `s3`, `object`, `reference`, `link` or `error`.
    pub storage_type: String,
    /// Name.
    pub name: String,
    /// Expiry.
    pub expires: DateTime<Utc>,
    /// Content type.
    pub content_type: String,
    /// For `s3`: the uploaded length (once uploaded).
    #[serde(default)]
    pub content_length: Option<u64>,
    /// For `s3`: the uploaded `Content-Encoding`.
    #[serde(default)]
    pub content_encoding: Option<String>,
    /// For `s3`: whether bytes were uploaded.
    #[serde(default)]
    pub uploaded: bool,
    /// For `s3`: the current upload token (the putUrl's credential).
    #[serde(default)]
    pub put_token: Option<String>,
    /// For `s3`: when the putUrl stops working.
    #[serde(default)]
    pub put_expires: Option<DateTime<Utc>>,
    /// For `s3`: the download token (the redirect URL's credential).
    #[serde(default)]
    pub read_token: Option<String>,
    /// For `reference`: target URL.
    #[serde(default)]
    pub url: Option<String>,
    /// For `link`: target artifact name.
    #[serde(default)]
    pub artifact: Option<String>,
    /// For `error`: reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// For `error`: message.
    #[serde(default)]
    pub message: Option<String>,
    /// For `object`: the task's project.
    #[serde(default)]
    pub project_id: Option<String>,
    /// For `object`: the upload id createArtifact locked the object to.
    #[serde(default)]
    pub upload_id: Option<String>,
    /// For `object`: content hashes given to createUpload / finishUpload (never changed once
    /// given).
    #[serde(default)]
    pub hashes: std::collections::BTreeMap<String, String>,
    /// For `object`: finishUpload checked the bytes against the hashes; no more uploads.
    #[serde(default)]
    pub object_finished: bool,
    /// For `object`: finishArtifact was called; the artifact is listed and served.
    #[serde(default)]
    pub present: bool,
}

/// One task, as persisted in `DATA_DIR/tasks/<taskId>.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    /// Task id.
    pub task_id: TaskId,
    /// The definition exactly as given, plus defaults.
    pub definition: Value,
    /// Typed view of the definition.
    pub meta: TaskMeta,
    /// Retries left.
    pub retries_left: u32,
    /// Runs.
    pub runs: Vec<RunStatus>,
    /// Artifacts of each run (same index as `runs`).
    pub artifacts: Vec<BTreeMap<String, ArtifactRecord>>,
}

impl TaskRecord {
    /// The task state: the last run's, or `unscheduled` with no runs.
    pub fn state(&self) -> TaskState {
        self.runs
            .last()
            .map(|r| r.state)
            .unwrap_or(TaskState::Unscheduled)
    }

    /// Whether the task is resolved (its last run is resolved).
    pub fn resolved(&self) -> bool {
        matches!(
            self.state(),
            TaskState::Completed | TaskState::Failed | TaskState::Exception
        )
    }

    /// The status document.
    pub fn status(&self) -> TaskStatus {
        TaskStatus {
            task_id: self.task_id.clone(),
            provisioner_id: self.meta.provisioner_id.clone(),
            worker_type: self.meta.worker_type.clone(),
            task_queue_id: Some(self.meta.task_queue_id.clone()),
            scheduler_id: Some(self.meta.scheduler_id.clone()),
            project_id: Some(self.meta.project_id.clone()),
            task_group_id: self.meta.task_group_id.clone(),
            priority: Some(self.meta.priority.clone()),
            deadline: self.meta.deadline,
            expires: self.meta.expires,
            retries_left: self.retries_left,
            state: self.state(),
            runs: self.runs.clone(),
        }
    }

    fn add_run(&mut self, reason_created: &str, now: DateTime<Utc>) {
        let run_id = u32::try_from(self.runs.len()).unwrap_or(u32::MAX);
        self.runs.push(RunStatus {
            run_id,
            state: TaskState::Pending,
            reason_created: reason_created.to_owned(),
            reason_resolved: None,
            worker_group: None,
            worker_id: None,
            taken_until: None,
            scheduled: now,
            started: None,
            resolved: None,
        });
        self.artifacts.push(BTreeMap::new());
    }

    /// The run `run_id`, or 404.
    pub fn run(&self, run_id: u32) -> Result<&RunStatus, ApiError> {
        self.runs.get(run_id as usize).ok_or_else(|| {
            ApiError::not_found(format!("task {} has no run {run_id}", self.task_id))
        })
    }

    fn run_mut(&mut self, run_id: u32) -> Result<&mut RunStatus, ApiError> {
        let task_id = self.task_id.clone();
        self.runs
            .get_mut(run_id as usize)
            .ok_or_else(|| ApiError::not_found(format!("task {task_id} has no run {run_id}")))
    }

    /// Resolves a running run; reruns it when `retry_reason` is set and retries are left.
    fn resolve(
        &mut self,
        run_id: u32,
        state: TaskState,
        reason: &str,
        retry_reason: Option<&str>,
        now: DateTime<Utc>,
    ) {
        if let Some(run) = self.runs.get_mut(run_id as usize) {
            run.state = state;
            run.reason_resolved = Some(reason.to_owned());
            run.resolved = Some(now);
        }
        if let Some(reason_created) = retry_reason
            && self.retries_left > 0
        {
            self.retries_left -= 1;
            self.add_run(reason_created, now);
        }
    }
}

/// Fields of `task.json`; anything else is rejected (the real schema has
/// `additionalProperties: false`).
const TASK_FIELDS: &[&str] = &[
    "provisionerId",
    "workerType",
    "taskQueueId",
    "schedulerId",
    "projectId",
    "taskGroupId",
    "dependencies",
    "requires",
    "routes",
    "priority",
    "retries",
    "created",
    "deadline",
    "expires",
    "scopes",
    "payload",
    "metadata",
    "tags",
    "extra",
];

const PRIORITIES: &[&str] = &[
    "highest",
    "very-high",
    "high",
    "medium",
    "low",
    "very-low",
    "lowest",
];

fn parse_time(def: &Map<String, Value>, key: &str) -> Result<DateTime<Utc>, ApiError> {
    let s = def
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid(format!("{key} must be an RFC 3339 string")))?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::invalid(format!("{key} is not an RFC 3339 timestamp")))
}

fn ident_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Checks an identifier (`workerGroup`, `workerId`, `provisionerId`): 1-38 of `[a-zA-Z0-9-_]`.
pub fn check_identifier(what: &str, s: &str) -> Result<(), ApiError> {
    if ident_ok(s, 38) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} {s:?} is not a valid identifier"
        )))
    }
}

fn string_list(def: &Map<String, Value>, key: &str) -> Result<Vec<String>, ApiError> {
    match def.get(key) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::invalid(format!("{key} must hold strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::invalid(format!("{key} must be an array"))),
    }
}

/// Validates a task definition and fills the queue's defaults. Given fields are kept as given
/// (auditors compare stored definitions by JSON equality), except `created`, `deadline` and
/// `expires`, which are normalised to milliseconds with `Z` as the real queue does.
pub fn fill_defaults(task_id: &TaskId, given: Value) -> Result<(Value, TaskMeta), ApiError> {
    let Value::Object(mut def) = given else {
        return Err(ApiError::invalid(
            "the task definition must be a JSON object",
        ));
    };
    if let Some(k) = def.keys().find(|k| !TASK_FIELDS.contains(&k.as_str())) {
        return Err(ApiError::invalid(format!("unknown task field {k:?}")));
    }
    for key in ["created", "deadline", "payload", "metadata"] {
        if !def.contains_key(key) {
            return Err(ApiError::invalid(format!("missing required field {key}")));
        }
    }
    if !def.get("payload").is_some_and(Value::is_object) {
        return Err(ApiError::invalid("payload must be an object"));
    }
    let str_field = |def: &Map<String, Value>, k: &str| -> Result<Option<String>, ApiError> {
        match def.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid(format!("{k} must be a string"))),
        }
    };
    let (prov, wt) = match (
        str_field(&def, "provisionerId")?,
        str_field(&def, "workerType")?,
        str_field(&def, "taskQueueId")?,
    ) {
        (Some(p), Some(w), tq) => {
            if tq.is_some_and(|tq| tq != format!("{p}/{w}")) {
                return Err(ApiError::invalid(
                    "taskQueueId must equal provisionerId/workerType",
                ));
            }
            (p, w)
        }
        (None, None, Some(tq)) => match tq.split_once('/') {
            Some((p, w)) => (p.to_owned(), w.to_owned()),
            None => {
                return Err(ApiError::invalid(
                    "taskQueueId must be provisionerId/workerType",
                ));
            }
        },
        _ => {
            return Err(ApiError::invalid(
                "give taskQueueId or both provisionerId and workerType",
            ));
        }
    };
    check_identifier("provisionerId", &prov)?;
    if !(wt.len() <= 38
        && wt.starts_with(|c: char| c.is_ascii_lowercase())
        && wt
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
    {
        return Err(ApiError::invalid(format!("workerType {wt:?} is invalid")));
    }
    let task_queue_id = format!("{prov}/{wt}");
    let created = parse_time(&def, "created")?;
    let deadline = parse_time(&def, "deadline")?;
    if deadline <= created || deadline > created + Duration::days(5) {
        return Err(ApiError::invalid(
            "deadline must be after created and at most 5 days later",
        ));
    }
    let defaults: [(&str, Value); 13] = [
        ("provisionerId", Value::String(prov.clone())),
        ("workerType", Value::String(wt.clone())),
        ("taskQueueId", Value::String(task_queue_id.clone())),
        ("schedulerId", Value::String("-".into())),
        ("projectId", Value::String("none".into())),
        ("taskGroupId", Value::String(task_id.to_string())),
        ("dependencies", Value::Array(Vec::new())),
        ("requires", Value::String("all-completed".into())),
        ("routes", Value::Array(Vec::new())),
        ("priority", Value::String("lowest".into())),
        ("retries", Value::from(5)),
        (
            "expires",
            Value::String(format_time(deadline + Duration::days(365))),
        ),
        ("scopes", Value::Array(Vec::new())),
    ];
    for (k, v) in defaults {
        def.entry(k).or_insert(v);
    }
    def.entry("tags")
        .or_insert_with(|| Value::Object(Map::new()));
    def.entry("extra")
        .or_insert_with(|| Value::Object(Map::new()));

    let expires = parse_time(&def, "expires")?;
    if expires < deadline {
        return Err(ApiError::invalid("expires must not be before deadline"));
    }
    // The real queue stores the three timestamps as dates and answers them in JavaScript's
    // `toJSON` form (milliseconds, `Z`), whatever form they were given in.
    for (key, t) in [
        ("created", created),
        ("deadline", deadline),
        ("expires", expires),
    ] {
        def.insert(key.to_owned(), Value::String(format_time(t)));
    }
    let retries = def.get("retries").and_then(Value::as_u64).unwrap_or(99);
    if retries > 49 {
        return Err(ApiError::invalid("retries must be an integer 0-49"));
    }
    let priority = str_field(&def, "priority")?.unwrap_or_default();
    if !PRIORITIES.contains(&priority.as_str()) {
        return Err(ApiError::invalid(format!("unknown priority {priority:?}")));
    }
    let requires = str_field(&def, "requires")?.unwrap_or_default();
    if requires != "all-completed" && requires != "all-resolved" {
        return Err(ApiError::invalid(
            "requires must be all-completed or all-resolved",
        ));
    }
    let task_group_id = str_field(&def, "taskGroupId")?
        .and_then(|s| TaskId::parse(&s).ok())
        .ok_or_else(|| ApiError::invalid("taskGroupId is not a slugid"))?;
    let dependencies = string_list(&def, "dependencies")?
        .iter()
        .map(|s| {
            TaskId::parse(s)
                .map_err(|_| ApiError::invalid(format!("dependency {s:?} is not a slugid")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let scopes = string_list(&def, "scopes")?;
    if scopes
        .iter()
        .any(|s| s.ends_with("**") || !s.bytes().all(|c| (0x20..0x7f).contains(&c)))
    {
        return Err(ApiError::invalid(
            "scopes must be printable ASCII, not ending in **",
        ));
    }
    string_list(&def, "routes")?;
    let meta = TaskMeta {
        provisioner_id: prov,
        worker_type: wt,
        task_queue_id,
        scheduler_id: str_field(&def, "schedulerId")?.unwrap_or_default(),
        project_id: str_field(&def, "projectId")?.unwrap_or_default(),
        task_group_id,
        dependencies,
        requires,
        priority,
        deadline,
        expires,
        scopes,
    };
    Ok((Value::Object(def), meta))
}

fn priority_rank(p: &str) -> usize {
    PRIORITIES
        .iter()
        .position(|x| *x == p)
        .unwrap_or(PRIORITIES.len())
}

/// All tasks.
#[derive(Debug, Default)]
pub struct QueueState {
    /// Tasks by id.
    pub tasks: HashMap<TaskId, TaskRecord>,
}

/// What a successful claim produced (credentials are added by the HTTP layer).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Task.
    pub task_id: TaskId,
    /// Run.
    pub run_id: u32,
    /// New claim deadline.
    pub taken_until: DateTime<Utc>,
}

impl QueueState {
    fn deps_satisfied(&self, rec: &TaskRecord) -> bool {
        rec.meta.dependencies.iter().all(|d| {
            self.tasks.get(d).is_some_and(|dep| {
                if rec.meta.requires == "all-resolved" {
                    dep.resolved()
                } else {
                    dep.state() == TaskState::Completed
                }
            })
        })
    }

    /// `createTask`. Returns the ids of records to persist. Re-creating an identical task is
    /// a no-op; a different definition under the same id is a conflict.
    pub fn create_task(
        &mut self,
        task_id: &TaskId,
        definition: Value,
        meta: TaskMeta,
        now: DateTime<Utc>,
    ) -> Result<bool, ApiError> {
        if let Some(existing) = self.tasks.get(task_id) {
            return if existing.definition == definition {
                Ok(false)
            } else {
                Err(ApiError::conflict(format!(
                    "task {task_id} already exists with a different definition"
                )))
            };
        }
        if let Some(missing) = meta
            .dependencies
            .iter()
            .find(|d| *d != task_id && !self.tasks.contains_key(*d))
        {
            return Err(ApiError::input(format!(
                "dependency {missing} of task {task_id} does not exist"
            )));
        }
        let retries = definition
            .get("retries")
            .and_then(Value::as_u64)
            .unwrap_or(5);
        let mut rec = TaskRecord {
            task_id: task_id.clone(),
            definition,
            meta,
            retries_left: u32::try_from(retries).unwrap_or(0),
            runs: Vec::new(),
            artifacts: Vec::new(),
        };
        if self.deps_satisfied(&rec) {
            rec.add_run("scheduled", now);
        }
        self.tasks.insert(task_id.clone(), rec);
        Ok(true)
    }

    /// Schedules unscheduled tasks whose dependencies are now satisfied. Returns them.
    fn schedule_dependents(&mut self, now: DateTime<Utc>) -> Vec<TaskId> {
        let ready: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|r| r.runs.is_empty() && now < r.meta.deadline && self.deps_satisfied(r))
            .map(|r| r.task_id.clone())
            .collect();
        for id in &ready {
            if let Some(r) = self.tasks.get_mut(id) {
                r.add_run("scheduled", now);
            }
        }
        ready
    }

    /// Expires claims and deadlines. Returns changed task ids.
    pub fn sweep(&mut self, now: DateTime<Utc>) -> Vec<TaskId> {
        let mut changed = Vec::new();
        for rec in self.tasks.values_mut() {
            let Some(last) = rec.runs.last() else {
                if now >= rec.meta.deadline {
                    // An unscheduled task past its deadline gets a run resolved as
                    // deadline-exceeded, as the real queue does.
                    rec.add_run("exception", now);
                    let id = u32::try_from(rec.runs.len() - 1).unwrap_or(0);
                    rec.resolve(id, TaskState::Exception, "deadline-exceeded", None, now);
                    changed.push(rec.task_id.clone());
                }
                continue;
            };
            let run_id = last.run_id;
            match last.state {
                TaskState::Running | TaskState::Pending if now >= rec.meta.deadline => {
                    rec.resolve(run_id, TaskState::Exception, "deadline-exceeded", None, now);
                    changed.push(rec.task_id.clone());
                }
                TaskState::Running if last.taken_until.is_some_and(|t| now >= t) => {
                    rec.resolve(
                        run_id,
                        TaskState::Exception,
                        "claim-expired",
                        Some("retry"),
                        now,
                    );
                    changed.push(rec.task_id.clone());
                }
                _ => {}
            }
        }
        if !changed.is_empty() {
            changed.extend(self.schedule_dependents(now));
        }
        changed
    }

    /// Claims up to `n` pending runs of `task_queue_id`, highest priority then oldest first.
    pub fn claim(
        &mut self,
        task_queue_id: &str,
        worker_group: &str,
        worker_id: &str,
        n: usize,
        now: DateTime<Utc>,
        claim_timeout: Duration,
    ) -> Vec<Claimed> {
        let mut pending: Vec<(usize, DateTime<Utc>, TaskId)> = self
            .tasks
            .values()
            .filter(|r| r.meta.task_queue_id == task_queue_id && r.state() == TaskState::Pending)
            .filter_map(|r| {
                r.runs.last().map(|run| {
                    (
                        priority_rank(&r.meta.priority),
                        run.scheduled,
                        r.task_id.clone(),
                    )
                })
            })
            .collect();
        pending.sort();
        let mut out = Vec::new();
        for (_, _, id) in pending.into_iter().take(n) {
            let Some(rec) = self.tasks.get_mut(&id) else {
                continue;
            };
            let taken_until = (now + claim_timeout).min(rec.meta.deadline);
            if let Some(run) = rec.runs.last_mut() {
                run.state = TaskState::Running;
                run.worker_group = Some(worker_group.to_owned());
                run.worker_id = Some(worker_id.to_owned());
                run.taken_until = Some(taken_until);
                run.started = Some(now);
                out.push(Claimed {
                    task_id: id,
                    run_id: run.run_id,
                    taken_until,
                });
            }
        }
        out
    }

    /// Legacy `claimTask`: claims run `run_id` of `task_id` for the worker. 404 for an unknown
    /// task or run; 409 unless that run is the task's last and still pending (already claimed,
    /// resolved, or superseded by a rerun).
    pub fn claim_task(
        &mut self,
        task_id: &TaskId,
        run_id: u32,
        worker_group: &str,
        worker_id: &str,
        now: DateTime<Utc>,
        claim_timeout: Duration,
    ) -> Result<Claimed, ApiError> {
        let rec = self.task_mut(task_id)?;
        let deadline = rec.meta.deadline;
        let last = rec.runs.len().checked_sub(1);
        rec.run(run_id)?;
        if last != Some(run_id as usize) {
            return Err(ApiError::conflict(format!(
                "run {run_id} of task {task_id} is not its latest run"
            )));
        }
        let run = rec.run_mut(run_id)?;
        if run.state != TaskState::Pending {
            return Err(ApiError::conflict(format!(
                "run {run_id} of task {task_id} is not pending"
            )));
        }
        let taken_until = (now + claim_timeout).min(deadline);
        run.state = TaskState::Running;
        run.worker_group = Some(worker_group.to_owned());
        run.worker_id = Some(worker_id.to_owned());
        run.taken_until = Some(taken_until);
        run.started = Some(now);
        Ok(Claimed {
            task_id: task_id.clone(),
            run_id,
            taken_until,
        })
    }

    /// `(taskId, runId, taskQueueId)` of every run waiting for a worker: what the legacy
    /// queue put an Azure message on the task queue's queue for.
    pub fn pending_runs(&self) -> Vec<(TaskId, u32, String)> {
        let mut out: Vec<(TaskId, u32, String)> = self
            .tasks
            .values()
            .filter(|r| r.state() == TaskState::Pending)
            .filter_map(|r| {
                r.runs
                    .last()
                    .map(|run| (r.task_id.clone(), run.run_id, r.meta.task_queue_id.clone()))
            })
            .collect();
        out.sort();
        out
    }

    /// The task, or 404.
    pub fn task(&self, task_id: &TaskId) -> Result<&TaskRecord, ApiError> {
        self.tasks
            .get(task_id)
            .ok_or_else(|| ApiError::not_found(format!("task {task_id} not found")))
    }

    fn task_mut(&mut self, task_id: &TaskId) -> Result<&mut TaskRecord, ApiError> {
        self.tasks
            .get_mut(task_id)
            .ok_or_else(|| ApiError::not_found(format!("task {task_id} not found")))
    }

    /// `reclaimTask`: 409 unless the run is running.
    pub fn reclaim(
        &mut self,
        task_id: &TaskId,
        run_id: u32,
        now: DateTime<Utc>,
        claim_timeout: Duration,
    ) -> Result<Claimed, ApiError> {
        let rec = self.task_mut(task_id)?;
        let deadline = rec.meta.deadline;
        let run = rec.run_mut(run_id)?;
        if run.state != TaskState::Running {
            return Err(ApiError::conflict(format!(
                "run {run_id} of task {task_id} is not running"
            )));
        }
        let taken_until = (now + claim_timeout).min(deadline);
        run.taken_until = Some(taken_until);
        Ok(Claimed {
            task_id: task_id.clone(),
            run_id,
            taken_until,
        })
    }

    /// `reportCompleted` / `reportFailed` / `reportException`. Returns the ids to persist.
    pub fn report(
        &mut self,
        task_id: &TaskId,
        run_id: u32,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskId>, ApiError> {
        let rec = self.task_mut(task_id)?;
        let run = rec.run(run_id)?;
        let (state, reason, retry) = match outcome {
            Outcome::Completed => (TaskState::Completed, "completed", None),
            Outcome::Failed => (TaskState::Failed, "failed", None),
            Outcome::Exception(r) => (
                TaskState::Exception,
                r,
                match r {
                    "worker-shutdown" => Some("retry"),
                    "intermittent-task" => Some("task-retry"),
                    _ => None,
                },
            ),
        };
        if run.state == state && run.reason_resolved.as_deref() == Some(reason) {
            // Idempotent: the run is already resolved this way.
            return Ok(Vec::new());
        }
        if run.state != TaskState::Running {
            return Err(ApiError::conflict(format!(
                "run {run_id} of task {task_id} is not running"
            )));
        }
        rec.resolve(run_id, state, reason, retry, now);
        let mut changed = vec![task_id.clone()];
        changed.extend(self.schedule_dependents(now));
        Ok(changed)
    }
}

impl QueueState {
    /// `cancelTask`: resolves the current run `exception`/`canceled` (adding one to an
    /// unscheduled task first). A task already resolved is returned unchanged; past its
    /// deadline it is 409. Returns the ids to persist.
    pub fn cancel(
        &mut self,
        task_id: &TaskId,
        now: DateTime<Utc>,
    ) -> Result<Vec<TaskId>, ApiError> {
        let rec = self.task_mut(task_id)?;
        if rec.meta.deadline < now {
            return Err(ApiError::conflict(format!(
                "Task `{task_id}` can't be canceled past its deadline of {}.",
                format_time(rec.meta.deadline)
            )));
        }
        if rec.resolved() {
            return Ok(Vec::new());
        }
        if rec.runs.is_empty() {
            rec.add_run("exception", now);
        }
        let Some(run_id) = rec.runs.last().map(|r| r.run_id) else {
            return Ok(Vec::new());
        };
        rec.resolve(run_id, TaskState::Exception, "canceled", None, now);
        let mut changed = vec![task_id.clone()];
        changed.extend(self.schedule_dependents(now));
        Ok(changed)
    }

    /// `rerunTask`: a resolved (or unscheduled) task gets a new pending run with
    /// `reasonCreated: rerun` and its retries reset; pending or running tasks are returned
    /// unchanged. 409 past the deadline or at the 50-run limit. Returns the ids to persist.
    pub fn rerun(&mut self, task_id: &TaskId, now: DateTime<Utc>) -> Result<Vec<TaskId>, ApiError> {
        let rec = self.task_mut(task_id)?;
        if rec.meta.deadline < now {
            return Err(ApiError::conflict(format!(
                "Task `{task_id}` can't be rescheduled past its deadline of {}.",
                format_time(rec.meta.deadline)
            )));
        }
        if matches!(rec.state(), TaskState::Pending | TaskState::Running) {
            return Ok(Vec::new());
        }
        if rec.runs.len() >= MAX_RUNS {
            return Err(ApiError::conflict(format!(
                "Maximum number of runs reached ({MAX_RUNS})."
            )));
        }
        let retries = rec
            .definition
            .get("retries")
            .and_then(Value::as_u64)
            .unwrap_or(5);
        rec.retries_left = u32::try_from(retries).unwrap_or(0);
        rec.add_run("rerun", now);
        Ok(vec![task_id.clone()])
    }
}

/// The real queue's limit on runs per task.
const MAX_RUNS: usize = 50;

/// How a worker resolves a run.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// `reportCompleted`.
    Completed,
    /// `reportFailed`.
    Failed,
    /// `reportException` with a reason.
    Exception(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn def(deps: &[&TaskId]) -> Value {
        serde_json::json!({
            "provisionerId": "prov", "workerType": "wt",
            "created": "2026-01-01T00:00:00Z", "deadline": "2026-01-02T00:00:00.000Z",
            "dependencies": deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            "payload": {}, "metadata": {"name": "n"}
        })
    }

    fn create(q: &mut QueueState, deps: &[&TaskId], now: DateTime<Utc>) -> TaskId {
        let id = TaskId::generate();
        let (d, m) = fill_defaults(&id, def(deps)).unwrap();
        q.create_task(&id, d, m, now).unwrap();
        id
    }

    #[test]
    fn claim_task_claims_a_pending_run_once() {
        let now = t("2026-01-01T00:00:00Z");
        let mut q = QueueState::default();
        let dep = create(&mut q, &[], now);
        let waiting = create(&mut q, &[&dep], now);
        assert_eq!(
            q.pending_runs(),
            vec![(dep.clone(), 0, "prov/wt".to_owned())]
        );
        let c = q
            .claim_task(&dep, 0, "wg", "w", now, Duration::seconds(60))
            .unwrap();
        assert_eq!(c.taken_until, t("2026-01-01T00:01:00Z"));
        assert_eq!(q.task(&dep).unwrap().state(), TaskState::Running);
        assert!(q.pending_runs().is_empty());
        let again = q.claim_task(&dep, 0, "wg", "w", now, Duration::seconds(60));
        assert_eq!(again.unwrap_err().status, 409);
        // An unscheduled task has no run yet.
        let unscheduled = q.claim_task(&waiting, 0, "wg", "w", now, Duration::seconds(60));
        assert_eq!(unscheduled.unwrap_err().status, 404);
        let no_run = q.claim_task(&dep, 1, "wg", "w", now, Duration::seconds(60));
        assert_eq!(no_run.unwrap_err().status, 404);
        let unknown = q.claim_task(
            &TaskId::generate(),
            0,
            "wg",
            "w",
            now,
            Duration::seconds(60),
        );
        assert_eq!(unknown.unwrap_err().status, 404);
    }

    #[test]
    fn defaults_fill_missing_fields_only() {
        let id = TaskId::generate();
        let (d, m) = fill_defaults(&id, def(&[])).unwrap();
        assert_eq!(
            d["created"], "2026-01-01T00:00:00.000Z",
            "timestamps are normalised to milliseconds"
        );
        assert_eq!(d["taskQueueId"], "prov/wt");
        assert_eq!(d["schedulerId"], "-");
        assert_eq!(d["projectId"], "none");
        assert_eq!(d["retries"], 5);
        assert_eq!(d["priority"], "lowest");
        assert_eq!(d["expires"], "2027-01-02T00:00:00.000Z");
        assert_eq!(d["taskGroupId"], id.as_str());
        assert_eq!(m.requires, "all-completed");
        let mut bad = def(&[]);
        bad["surprise"] = Value::Bool(true);
        assert_eq!(fill_defaults(&id, bad).unwrap_err().status, 400);
    }

    #[test]
    fn dependencies_schedule_on_completion() {
        let now = t("2026-01-01T00:00:00Z");
        let mut q = QueueState::default();
        let a = create(&mut q, &[], now);
        let b = create(&mut q, &[&a], now);
        assert_eq!(q.task(&b).unwrap().state(), TaskState::Unscheduled);
        let c = q.claim("prov/wt", "wg", "w", 5, now, Duration::seconds(60));
        assert_eq!(c.len(), 1);
        q.report(&a, 0, Outcome::Completed, now).unwrap();
        assert_eq!(q.task(&b).unwrap().state(), TaskState::Pending);
        // Idempotent completion; conflicting resolution is 409.
        assert!(q.report(&a, 0, Outcome::Completed, now).unwrap().is_empty());
        assert_eq!(
            q.report(&a, 0, Outcome::Failed, now).unwrap_err().status,
            409
        );
    }

    #[test]
    fn claim_expiry_retries_and_deadline() {
        let now = t("2026-01-01T00:00:00Z");
        let mut q = QueueState::default();
        let a = create(&mut q, &[], now);
        q.claim("prov/wt", "wg", "w", 1, now, Duration::seconds(60));
        assert!(q.sweep(now + Duration::seconds(59)).is_empty());
        assert_eq!(q.sweep(now + Duration::seconds(60)), vec![a.clone()]);
        let rec = q.task(&a).unwrap();
        assert_eq!(
            rec.runs[0].reason_resolved.as_deref(),
            Some("claim-expired")
        );
        assert_eq!(rec.runs[1].reason_created, "retry");
        assert_eq!(rec.retries_left, 4);
        assert_eq!(
            q.reclaim(&a, 0, now, Duration::seconds(60))
                .unwrap_err()
                .status,
            409
        );
        q.sweep(t("2026-01-02T00:00:00Z"));
        let rec = q.task(&a).unwrap();
        assert_eq!(
            rec.runs[1].reason_resolved.as_deref(),
            Some("deadline-exceeded")
        );
    }

    #[test]
    fn cancel_and_rerun_follow_the_real_queue() {
        let now = t("2026-01-01T00:00:00Z");
        let mut q = QueueState::default();
        let a = create(&mut q, &[], now);
        let waiting = create(&mut q, &[&a], now);
        q.claim("prov/wt", "wg", "w", 1, now, Duration::seconds(60));
        assert_eq!(q.cancel(&a, now).unwrap()[0], a);
        let run = &q.task(&a).unwrap().runs[0];
        assert_eq!(run.state, TaskState::Exception);
        assert_eq!(run.reason_resolved.as_deref(), Some("canceled"));
        let reclaim = q.reclaim(&a, 0, now, Duration::seconds(60));
        assert_eq!(reclaim.unwrap_err().status, 409);
        assert!(q.cancel(&a, now).unwrap().is_empty(), "idempotent");
        // An unscheduled task gets one run, resolved at once.
        q.cancel(&waiting, now).unwrap();
        let rec = q.task(&waiting).unwrap();
        assert_eq!(rec.runs.len(), 1);
        assert_eq!(rec.runs[0].reason_created, "exception");
        assert_eq!(rec.runs[0].reason_resolved.as_deref(), Some("canceled"));
        // rerun: a new pending run, retries reset; idempotent while pending.
        q.task_mut(&a).unwrap().retries_left = 0;
        q.rerun(&a, now).unwrap();
        let rec = q.task(&a).unwrap();
        assert_eq!(rec.state(), TaskState::Pending);
        assert_eq!(rec.runs[1].reason_created, "rerun");
        assert_eq!(rec.retries_left, 5);
        assert!(q.rerun(&a, now).unwrap().is_empty());
        // Past the deadline both are 409.
        let late = t("2026-01-03T00:00:00Z");
        assert_eq!(q.cancel(&a, late).unwrap_err().status, 409);
        assert_eq!(q.rerun(&a, late).unwrap_err().status, 409);
    }
}
