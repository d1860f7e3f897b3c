//! Restricted task input validation: the first thing that happens to a claimed task.
//!
//! A task definition is attacker-reachable input: anyone able to create a task on the worker's
//! queue controls its payload and can ask for any scope the queue lets it carry. Before chainlock
//! downloads, verifies or runs anything, [`TaskValidator::validate`] checks the definition against
//! `schemas/task.schema.json`, the payload against the script's own strict payload schema
//! (draft 2020-12, formats asserted), the size limits, the `upstreamArtifacts` rules (slugid task
//! ids that are dependencies of the task, plain relative paths, no duplicates) and the scope rule
//! (exactly one scope under the configured prefix, with a value the operator listed).
//!
//! Every violation is collected, with its JSON pointer and the rule it broke, so a task author
//! sees all problems in one task log; the whole [`Rejection`] maps to `malformed-payload`.
//! A [`ValidatedTask`] can only be built here, so code holding one knows all of this passed.
//!
//! This module must not do IO at validation time (schemas are read and compiled once, at
//! start-up, by [`TaskValidator::new`]: a broken schema stops start-up, not a task), and it must
//! never echo a whole task or payload into an error.

pub mod path;

use crate::ids::TaskId;
use crate::queue::types::{ExceptionReason, TaskDefinition};
use path::{ArtifactPath, PathError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

/// The task-definition schema every claimed task must satisfy (embedded at build time).
pub const TASK_SCHEMA: &str = include_str!("../../schemas/task.schema.json");

/// Exit code a script uses for a rejected task (`malformed-payload`).
pub const EXIT_MALFORMED_PAYLOAD: i32 = 3;

/// Size and count limits applied before and during validation.
///
/// Defaults are generous for release tasks and small enough that a hostile task cannot make the
/// worker spend much memory or time: a FirefoxCI signing task definition is a few KiB.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest accepted task definition, in bytes of the raw JSON (default 1 MiB).
    pub max_task_bytes: usize,
    /// Largest accepted payload, in bytes of its compact JSON (default 256 KiB).
    pub max_payload_bytes: usize,
    /// Most upstream files a task may list, over all `upstreamArtifacts` entries (default 1000).
    pub max_upstream_paths: usize,
    /// Most errors listed in one rejection; the rest are counted (default 100).
    pub max_reported_errors: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_task_bytes: 1024 * 1024,
            max_payload_bytes: 256 * 1024,
            max_upstream_paths: 1000,
            max_reported_errors: 100,
        }
    }
}

/// The `[task]` section of the worker configuration.
///
/// ```toml
/// [task]
/// payload_schema = "/etc/chainlock/schemas/payload/sign.schema.json"
/// scope_prefix = "project:releng:signing:cert:"
/// allowed_scopes = ["release-signing", "dep-signing"]
/// [task.limits]          # optional; every key optional
/// max_task_bytes = 1048576
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// Payload schema of the script this worker runs (JSON Schema draft 2020-12).
    pub payload_schema: PathBuf,
    /// Prefix of the resource scope that selects the key or destination, ending with `:`.
    pub scope_prefix: String,
    /// Values accepted after the prefix; a task scope with any other value is refused.
    pub allowed_scopes: Vec<String>,
    /// Size limits.
    #[serde(default)]
    pub limits: Limits,
}

/// The resource-scope rule: a prefix and the values the operator knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRules {
    prefix: String,
    allowed: BTreeSet<String>,
}

impl ScopeRules {
    /// Checks the rule itself: the prefix is non-empty, ends with `:` and has no `*`; every
    /// value is non-empty and free of `*` and whitespace.
    pub fn new(
        prefix: impl Into<String>,
        allowed: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<ScopeRules, ValidateError> {
        let prefix = prefix.into();
        if prefix.len() < 2 || !prefix.ends_with(':') || prefix.contains('*') {
            return Err(ValidateError::BadScopePrefix { prefix });
        }
        let mut set = BTreeSet::new();
        for value in allowed {
            let value = value.into();
            if value.is_empty()
                || value.contains('*')
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ValidateError::BadAllowedScope { value });
            }
            set.insert(value);
        }
        if set.is_empty() {
            return Err(ValidateError::NoAllowedScopes { prefix });
        }
        Ok(ScopeRules {
            prefix,
            allowed: set,
        })
    }

    /// The scope prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The accepted values.
    pub fn allowed(&self) -> impl Iterator<Item = &str> {
        self.allowed.iter().map(String::as_str)
    }
}

/// A start-up problem with the validator's own inputs (schemas, scope rules).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ValidateError {
    /// The payload schema file could not be read.
    #[error("cannot read payload schema {path}: {source}")]
    ReadSchema {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The schema file is not JSON.
    #[error("payload schema {path} is not valid JSON: {source}")]
    ParseSchema {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The schema is not a valid draft 2020-12 schema.
    #[error("schema {path} does not compile: {message}")]
    CompileSchema {
        /// The file (or `<embedded task schema>`).
        path: PathBuf,
        /// The compiler's message.
        message: String,
    },
    /// The schema does not declare draft 2020-12.
    #[error("schema {path} must declare \"$schema\": \"{DRAFT_2020_12}\"")]
    WrongDraft {
        /// The file.
        path: PathBuf,
    },
    /// The scope prefix is empty, lacks the trailing `:` or contains `*`.
    #[error("scope prefix {prefix:?} must be non-empty, end with ':' and contain no '*'")]
    BadScopePrefix {
        /// The prefix.
        prefix: String,
    },
    /// No scope values are configured.
    #[error("no allowed scope values are configured for prefix {prefix:?}")]
    NoAllowedScopes {
        /// The prefix.
        prefix: String,
    },
    /// A configured scope value is empty or contains `*` or whitespace.
    #[error("allowed scope value {value:?} is empty or contains '*' or whitespace")]
    BadAllowedScope {
        /// The value.
        value: String,
    },
}

const DRAFT_2020_12: &str = "https://json-schema.org/draft/2020-12/schema";

/// Which schema produced a schema violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaKind {
    /// `schemas/task.schema.json`.
    Task,
    /// The script's payload schema.
    Payload,
}

/// The rule a task broke.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// The raw task definition is larger than [`Limits::max_task_bytes`].
    TaskTooLarge {
        /// The limit.
        limit: usize,
        /// The task's size.
        actual: usize,
    },
    /// The payload is larger than [`Limits::max_payload_bytes`].
    PayloadTooLarge {
        /// The limit.
        limit: usize,
        /// The payload's size.
        actual: usize,
    },
    /// A JSON Schema keyword failed.
    Schema {
        /// Which schema.
        schema: SchemaKind,
        /// The failing keyword (`additionalProperties`, `format`, `pattern`, ...).
        keyword: String,
    },
    /// The definition passed the schema but not the typed view (should not happen).
    TaskShape,
    /// `upstreamArtifacts` is not an array of objects with the expected member types.
    UpstreamShape,
    /// An upstream `taskId` is not a slugid.
    BadTaskId,
    /// An upstream `taskId` is neither a dependency of the task nor its task group.
    NotADependency,
    /// An upstream path breaks a path rule.
    ArtifactPath(PathError),
    /// The same (taskId, path) is listed twice.
    DuplicatePath,
    /// More upstream paths than [`Limits::max_upstream_paths`].
    TooManyUpstreamPaths {
        /// The limit.
        limit: usize,
    },
    /// No scope under the configured prefix.
    NoScope {
        /// The prefix.
        prefix: String,
    },
    /// More than one scope under the configured prefix.
    SeveralScopes {
        /// The prefix.
        prefix: String,
    },
    /// A scope under the prefix whose value the configuration does not list.
    UnknownScope {
        /// The scope's value after the prefix.
        value: String,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::TaskTooLarge { limit, actual } => {
                write!(f, "task-size (task is {actual} bytes, limit {limit})")
            }
            Rule::PayloadTooLarge { limit, actual } => {
                write!(f, "payload-size (payload is {actual} bytes, limit {limit})")
            }
            Rule::Schema { schema, keyword } => {
                let s = match schema {
                    SchemaKind::Task => "task",
                    SchemaKind::Payload => "payload",
                };
                write!(f, "{s}-schema/{keyword}")
            }
            Rule::TaskShape => f.write_str("task-shape"),
            Rule::UpstreamShape => f.write_str("upstream-shape"),
            Rule::BadTaskId => f.write_str("upstream-task-id"),
            Rule::NotADependency => f.write_str("upstream-not-a-dependency"),
            Rule::ArtifactPath(e) => write!(f, "upstream-path ({e})"),
            Rule::DuplicatePath => f.write_str("upstream-duplicate-path"),
            Rule::TooManyUpstreamPaths { limit } => write!(f, "upstream-count (limit {limit})"),
            Rule::NoScope { prefix } => write!(f, "scope-missing (no scope {prefix}*)"),
            Rule::SeveralScopes { prefix } => {
                write!(f, "scope-ambiguous (more than one scope {prefix}*)")
            }
            Rule::UnknownScope { value } => write!(f, "scope-unknown (value {value:?})"),
        }
    }
}

/// One violation: where, which rule, and a short human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer into the task definition (`/payload/upstreamArtifacts/0/paths/1`).
    pub pointer: String,
    /// The rule.
    pub rule: Rule,
    /// Details for the task log (values truncated).
    pub message: String,
}

/// Why a task was refused: every violation found (up to [`Limits::max_reported_errors`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Rejection {
    /// The violations, in the order found.
    pub violations: Vec<Violation>,
    /// How many more violations were found but not listed.
    pub omitted: usize,
}

impl Rejection {
    /// The Taskcluster outcome of a rejected task.
    pub fn exception_reason(&self) -> ExceptionReason {
        ExceptionReason::MalformedPayload
    }

    /// True if some violation broke `rule` (compared by variant and content).
    pub fn has(&self, rule: &Rule) -> bool {
        self.violations.iter().any(|v| &v.rule == rule)
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "task rejected (malformed-payload): {} problem(s)",
            self.violations.len() + self.omitted
        )?;
        for v in &self.violations {
            let at = if v.pointer.is_empty() {
                "(root)"
            } else {
                &v.pointer
            };
            writeln!(f, "  {at}: [{}] {}", v.rule, v.message)?;
        }
        if self.omitted > 0 {
            writeln!(f, "  ... and {} more", self.omitted)?;
        }
        Ok(())
    }
}

/// The scope that selected the key or destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedScope {
    scope: String,
    value: String,
}

impl SelectedScope {
    /// The whole scope (`project:releng:signing:cert:release-signing`).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The value after the prefix (`release-signing`): the key into the script's config.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// One `upstreamArtifacts` entry, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamArtifact {
    /// The upstream task (a dependency of this task).
    pub task_id: TaskId,
    /// The upstream task's type (`build`, `signing`, ...) as the task author wrote it. Not
    /// trusted: the verified kind comes from the chain policy (`cot/manifest.json`'s
    /// `taskKind`), and the scripts refuse a payload whose label disagrees with it.
    pub task_type: String,
    /// Files from that task, each checked by [`path::check_relative_path`].
    pub paths: Vec<ArtifactPath>,
    /// Formats requested (signing), empty when absent.
    pub formats: Vec<String>,
    /// True if the task may run without these files.
    pub optional: bool,
}

/// A task that passed every check. Only [`TaskValidator::validate`] builds one.
#[derive(Debug, Clone)]
pub struct ValidatedTask {
    definition: TaskDefinition,
    scope: SelectedScope,
    upstream: Vec<UpstreamArtifact>,
}

impl ValidatedTask {
    /// The typed task definition.
    pub fn definition(&self) -> &TaskDefinition {
        &self.definition
    }

    /// The payload (valid against the script's payload schema).
    pub fn payload(&self) -> &Value {
        &self.definition.payload
    }

    /// The resource scope that selects the signing key or destination.
    pub fn scope(&self) -> &SelectedScope {
        &self.scope
    }

    /// The upstream artifacts the task asks for (empty if the payload lists none).
    pub fn upstream_artifacts(&self) -> &[UpstreamArtifact] {
        &self.upstream
    }
}

/// Compiled schemas, scope rules and limits; built once at start-up, shared by every task.
pub struct TaskValidator {
    task_schema: jsonschema::Validator,
    payload_schema: jsonschema::Validator,
    scopes: ScopeRules,
    limits: Limits,
}

impl fmt::Debug for TaskValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskValidator")
            .field("scopes", &self.scopes)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// Compiles a draft 2020-12 schema with format assertion on, unknown formats refused, and the
/// chainlock formats `slugid` and `artifact-path` registered. No remote `$ref` is ever fetched
/// (the jsonschema crate is built without its HTTP resolver).
fn compile(schema: &Value, path: &Path) -> Result<jsonschema::Validator, ValidateError> {
    if schema.get("$schema").and_then(Value::as_str) != Some(DRAFT_2020_12) {
        return Err(ValidateError::WrongDraft {
            path: path.to_owned(),
        });
    }
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .should_ignore_unknown_formats(false)
        .with_format("slugid", |s: &str| TaskId::parse(s).is_ok())
        .with_format("artifact-path", |s: &str| {
            path::check_relative_path(s).is_ok()
        })
        .build(schema)
        .map_err(|e| ValidateError::CompileSchema {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

/// Cuts a message for the task log so a hostile value cannot flood it.
fn truncate(s: String) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

struct Collector {
    violations: Vec<Violation>,
    omitted: usize,
    max: usize,
}

impl Collector {
    fn push(&mut self, pointer: impl Into<String>, rule: Rule, message: impl Into<String>) {
        if self.violations.len() < self.max {
            self.violations.push(Violation {
                pointer: pointer.into(),
                rule,
                message: truncate(message.into()),
            });
        } else {
            self.omitted += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.violations.is_empty() && self.omitted == 0
    }

    fn into_rejection(self) -> Rejection {
        Rejection {
            violations: self.violations,
            omitted: self.omitted,
        }
    }

    fn schema(
        &mut self,
        kind: SchemaKind,
        prefix: &str,
        validator: &jsonschema::Validator,
        v: &Value,
    ) {
        for err in validator.iter_errors(v) {
            let keyword = err.kind().keyword().to_owned();
            let pointer = format!("{prefix}{}", err.instance_path().as_str());
            self.push(
                pointer,
                Rule::Schema {
                    schema: kind,
                    keyword,
                },
                err.to_string(),
            );
        }
    }
}

impl TaskValidator {
    /// Reads and compiles the payload schema at `payload_schema_path` and the embedded task
    /// schema. Call once at start-up; an error here must stop the worker.
    pub fn new(
        payload_schema_path: &Path,
        scope_rules: ScopeRules,
        limits: Limits,
    ) -> Result<TaskValidator, ValidateError> {
        let text = std::fs::read_to_string(payload_schema_path).map_err(|source| {
            ValidateError::ReadSchema {
                path: payload_schema_path.to_owned(),
                source,
            }
        })?;
        let schema: Value =
            serde_json::from_str(&text).map_err(|source| ValidateError::ParseSchema {
                path: payload_schema_path.to_owned(),
                source,
            })?;
        Self::from_schema(&schema, payload_schema_path, scope_rules, limits)
    }

    /// Builds the validator from the `[task]` config section.
    pub fn from_config(config: &TaskConfig) -> Result<TaskValidator, ValidateError> {
        let rules = ScopeRules::new(config.scope_prefix.clone(), config.allowed_scopes.clone())?;
        Self::new(&config.payload_schema, rules, config.limits.clone())
    }

    /// Like [`TaskValidator::new`] with an already-parsed payload schema; `origin` names it in
    /// errors.
    pub fn from_schema(
        payload_schema: &Value,
        origin: &Path,
        scope_rules: ScopeRules,
        limits: Limits,
    ) -> Result<TaskValidator, ValidateError> {
        let task_origin = Path::new("<embedded schemas/task.schema.json>");
        let task_schema: Value =
            serde_json::from_str(TASK_SCHEMA).map_err(|source| ValidateError::ParseSchema {
                path: task_origin.to_owned(),
                source,
            })?;
        Ok(TaskValidator {
            task_schema: compile(&task_schema, task_origin)?,
            payload_schema: compile(payload_schema, origin)?,
            scopes: scope_rules,
            limits,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Checks a claimed task definition. `raw_len` is the size in bytes of the JSON the task
    /// arrived as (the claim's `task` member or `task.json`).
    pub fn validate(&self, raw_task: &Value, raw_len: usize) -> Result<ValidatedTask, Rejection> {
        let mut c = Collector {
            violations: Vec::new(),
            omitted: 0,
            max: self.limits.max_reported_errors.max(1),
        };
        if raw_len > self.limits.max_task_bytes {
            // Nothing else is looked at: an oversized task is not worth parsing further.
            c.push(
                "",
                Rule::TaskTooLarge {
                    limit: self.limits.max_task_bytes,
                    actual: raw_len,
                },
                "task definition too large",
            );
            return Err(c.into_rejection());
        }
        c.schema(SchemaKind::Task, "", &self.task_schema, raw_task);

        if let Some(payload) = raw_task.get("payload").filter(|p| p.is_object()) {
            // Compact re-serialisation of a `Value` cannot fail (string keys only).
            let payload_len = serde_json::to_vec(payload).map_or(usize::MAX, |v| v.len());
            if payload_len > self.limits.max_payload_bytes {
                c.push(
                    "/payload",
                    Rule::PayloadTooLarge {
                        limit: self.limits.max_payload_bytes,
                        actual: payload_len,
                    },
                    "payload too large",
                );
            } else {
                c.schema(
                    SchemaKind::Payload,
                    "/payload",
                    &self.payload_schema,
                    payload,
                );
            }
        }

        let deps = dependency_set(raw_task);
        let upstream = self.check_upstream(raw_task, &deps, &mut c);
        let scope = self.check_scopes(raw_task, &mut c);

        if !c.is_empty() {
            return Err(c.into_rejection());
        }
        let definition = match TaskDefinition::deserialize(raw_task) {
            Ok(d) => d,
            Err(e) => {
                c.push("", Rule::TaskShape, e.to_string());
                return Err(c.into_rejection());
            }
        };
        match scope {
            Some(scope) => Ok(ValidatedTask {
                definition,
                scope,
                upstream,
            }),
            None => {
                // check_scopes always records a violation when it returns None.
                c.push("/scopes", Rule::TaskShape, "no scope selected");
                Err(c.into_rejection())
            }
        }
    }

    fn check_upstream(
        &self,
        raw_task: &Value,
        deps: &HashSet<String>,
        c: &mut Collector,
    ) -> Vec<UpstreamArtifact> {
        let mut out = Vec::new();
        let Some(list) = raw_task.pointer("/payload/upstreamArtifacts") else {
            return out;
        };
        let base = "/payload/upstreamArtifacts";
        let Some(items) = list.as_array() else {
            c.push(
                base,
                Rule::UpstreamShape,
                "upstreamArtifacts must be an array",
            );
            return out;
        };
        let mut seen = HashSet::new();
        let mut total_paths = 0usize;
        for (i, item) in items.iter().enumerate() {
            let at = format!("{base}/{i}");
            let Some(obj) = item.as_object() else {
                c.push(at, Rule::UpstreamShape, "entry must be an object");
                continue;
            };
            let task_id = match obj.get("taskId").and_then(Value::as_str) {
                Some(s) => match TaskId::parse(s) {
                    Ok(id) => {
                        if !deps.contains(id.as_str()) {
                            c.push(
                                format!("{at}/taskId"),
                                Rule::NotADependency,
                                format!("task {id} is not in dependencies or taskGroupId"),
                            );
                        }
                        Some(id)
                    }
                    Err(e) => {
                        c.push(format!("{at}/taskId"), Rule::BadTaskId, e.to_string());
                        None
                    }
                },
                None => {
                    c.push(
                        format!("{at}/taskId"),
                        Rule::UpstreamShape,
                        "taskId must be a string",
                    );
                    None
                }
            };
            let task_type = match obj.get("taskType") {
                Some(Value::String(s)) => s.clone(),
                None => String::new(),
                Some(_) => {
                    c.push(
                        format!("{at}/taskType"),
                        Rule::UpstreamShape,
                        "taskType must be a string",
                    );
                    String::new()
                }
            };
            let optional = match obj.get("optional") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    c.push(
                        format!("{at}/optional"),
                        Rule::UpstreamShape,
                        "optional must be a boolean",
                    );
                    false
                }
            };
            let formats = match obj.get("formats") {
                None => Vec::new(),
                Some(Value::Array(a)) if a.iter().all(Value::is_string) => a
                    .iter()
                    .filter_map(|f| f.as_str().map(str::to_owned))
                    .collect(),
                Some(_) => {
                    c.push(
                        format!("{at}/formats"),
                        Rule::UpstreamShape,
                        "formats must be an array of strings",
                    );
                    Vec::new()
                }
            };
            let Some(raw_paths) = obj.get("paths").and_then(Value::as_array) else {
                c.push(
                    format!("{at}/paths"),
                    Rule::UpstreamShape,
                    "paths must be an array",
                );
                continue;
            };
            let mut paths = Vec::new();
            for (j, p) in raw_paths.iter().enumerate() {
                let at_p = format!("{at}/paths/{j}");
                total_paths += 1;
                if total_paths == self.limits.max_upstream_paths + 1 {
                    c.push(
                        at_p.clone(),
                        Rule::TooManyUpstreamPaths {
                            limit: self.limits.max_upstream_paths,
                        },
                        "too many upstream paths",
                    );
                }
                let Some(s) = p.as_str() else {
                    c.push(at_p, Rule::UpstreamShape, "path must be a string");
                    continue;
                };
                match path::parse_input_path(s) {
                    Ok(ap) => {
                        let key = (
                            task_id.as_ref().map(|t| t.as_str().to_owned()),
                            ap.as_str().to_owned(),
                        );
                        if task_id.is_some() && !seen.insert(key) {
                            c.push(
                                at_p,
                                Rule::DuplicatePath,
                                format!("{s:?} is listed more than once for this taskId"),
                            );
                        } else {
                            paths.push(ap);
                        }
                    }
                    Err(e) => c.push(at_p, Rule::ArtifactPath(e.clone()), format!("{e}")),
                }
            }
            if let Some(task_id) = task_id {
                out.push(UpstreamArtifact {
                    task_id,
                    task_type,
                    paths,
                    formats,
                    optional,
                });
            }
        }
        out
    }

    fn check_scopes(&self, raw_task: &Value, c: &mut Collector) -> Option<SelectedScope> {
        let prefix = self.scopes.prefix();
        let scopes = raw_task.get("scopes").and_then(Value::as_array);
        let matching: Vec<(usize, &str)> = scopes
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, s)| s.as_str().map(|s| (i, s)))
            .filter(|(_, s)| s.starts_with(prefix))
            .collect();
        match matching.as_slice() {
            [] => {
                c.push(
                    "/scopes",
                    Rule::NoScope {
                        prefix: prefix.to_owned(),
                    },
                    format!("the task must carry exactly one scope starting with {prefix:?}"),
                );
                None
            }
            [(i, scope)] => {
                let value = &scope[prefix.len()..];
                if self.scopes.allowed.contains(value) {
                    Some(SelectedScope {
                        scope: (*scope).to_owned(),
                        value: value.to_owned(),
                    })
                } else {
                    c.push(
                        format!("/scopes/{i}"),
                        Rule::UnknownScope {
                            value: value.chars().take(100).collect(),
                        },
                        format!("{scope:?} is not a scope this worker is configured for"),
                    );
                    None
                }
            }
            several => {
                let list: Vec<&str> = several.iter().map(|(_, s)| *s).collect();
                c.push(
                    "/scopes",
                    Rule::SeveralScopes {
                        prefix: prefix.to_owned(),
                    },
                    format!("the task carries several scopes under the prefix: {list:?}"),
                );
                None
            }
        }
    }
}

/// Task ids an upstream artifact may come from: the task's dependencies and its task group
/// (the decision task), as scriptworker allows for downloads.
fn dependency_set(raw_task: &Value) -> HashSet<String> {
    let mut deps: HashSet<String> = raw_task
        .get("dependencies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(str::to_owned))
        .collect();
    if let Some(g) = raw_task.get("taskGroupId").and_then(Value::as_str) {
        deps.insert(g.to_owned());
    }
    deps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_rules_are_checked() {
        assert!(matches!(
            ScopeRules::new("project:releng:signing:cert", ["x"]),
            Err(ValidateError::BadScopePrefix { .. })
        ));
        assert!(matches!(
            ScopeRules::new("project:releng:signing:cert:", Vec::<String>::new()),
            Err(ValidateError::NoAllowedScopes { .. })
        ));
        assert!(matches!(
            ScopeRules::new("project:releng:signing:cert:", ["*"]),
            Err(ValidateError::BadAllowedScope { .. })
        ));
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        let s = "é".repeat(400);
        let t = truncate(s);
        assert!(t.ends_with("..."));
        assert!(t.len() <= 303);
    }
}
