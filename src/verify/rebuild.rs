//! Check 9, `decision-rebuild`: a decision or action task must be exactly what its
//! repository's `.taskcluster.yml` renders to.
//!
//! Why it exists: the other checks trust a decision task as far as its queue, repository and
//! scopes go. Anyone who can create a task on a decision queue (a leaked hook credential, a
//! mis-scoped role) could otherwise hand us an arbitrary graph. Re-rendering the in-tree
//! template (json-e) at the decision's revision, in the context the Taskcluster integration
//! would have used, and requiring the runtime definition to equal one rendered task, proves the
//! task is what the tree asked for.
//!
//! Pure: the sources (template, pushlog, GitHub API answers) come through
//! [`super::Evidence::source`], the decision's `actions.json` / `parameters.yml` through the
//! evidence and the decision's signed document, and json-e runs behind [`Render`], which the
//! caller supplies (the worker and the CLI use a budgeted child process, `crate::jsone`).
//! Everything a source URL is built from is operator policy ([`RebuildRule`]) plus the decision
//! task's repository and revision, which must pass a strict character check first.
//!
//! Differences from the reference, on purpose: the repository's rule (project, level, allowed
//! `tasks_for`, URLs) is chain policy, not a `projects.yml` fetched at run time; a pushlog must
//! hold exactly one push (the reference only warns); a rebuilt definition is compared with
//! numbers compared by value; every difference is reported with its JSON pointer.

use super::error::{VerifyError, clip};
use crate::chain_policy::{ChainPolicy, RebuildRule, Vcs};
use crate::ids::TaskId;
use serde_json::{Map, Value, json};

/// The in-tree template every rule renders.
pub const TEMPLATE_FILE: &str = ".taskcluster.yml";
/// A decision task's actions (action and pr-action links).
pub const ACTIONS_JSON: &str = "public/actions.json";
/// A decision task's parameters (hg action links).
pub const PARAMETERS_YML: &str = "public/parameters.yml";

/// Largest template, pushlog or API answer read (a gecko `.taskcluster.yml` is ~15 KiB).
pub const MAX_SOURCE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest `actions.json` / `parameters.yml` parsed (realistic ones are ~100 KiB).
pub const MAX_DECISION_INPUT_BYTES: u64 = 16 * 1024 * 1024;
/// Most differences listed in one finding.
const MAX_DIFFERENCES: usize = 20;

/// What a source is, for reports and the bundle index.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// `.taskcluster.yml` at the decision's revision.
    Template,
    /// hg `json-pushes` for the revision.
    Pushlog,
    /// GitHub commit API answer.
    Commit,
    /// GitHub release-by-tag API answer.
    Release,
    /// GitHub pull-request API answer.
    PullRequest,
}

impl SourceKind {
    /// For reports.
    pub fn describe(self) -> &'static str {
        match self {
            SourceKind::Template => ".taskcluster.yml",
            SourceKind::Pushlog => "pushlog",
            SourceKind::Commit => "commit API answer",
            SourceKind::Release => "release API answer",
            SourceKind::PullRequest => "pull-request API answer",
        }
    }
}

/// One source a rebuild needs, as the fetcher must request it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRequest {
    /// What it is.
    pub kind: SourceKind,
    /// The URL (policy template with validated values filled in).
    pub url: String,
    /// The repository (as the decision names it) and revision it belongs to: a local clone
    /// can stand in for a [`SourceKind::Template`] offline.
    pub repository: String,
    /// See `repository`.
    pub revision: String,
}

/// How a source reached the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceOrigin {
    /// Fetched just now from the policy's URL.
    Fetched,
    /// Read from a bundle: nothing binds it to the revision.
    Bundled,
    /// Read at the revision from the auditor's own clone (path shown).
    Checkout(String),
}

/// A source's bytes and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Where they came from.
    pub origin: SourceOrigin,
}

/// Why json-e rendering did not produce a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// json-e refused the template or context.
    #[error("json-e error: {0}")]
    Template(String),
    /// The render exceeded its budget (time, memory, output size, input size).
    #[error("json-e evaluation exceeded its budget: {0}")]
    Budget(String),
    /// The renderer itself could not run.
    #[error("json-e renderer failed: {0}")]
    Failed(String),
}

/// Renders a json-e template in a context. Implementations must bound time and memory.
pub trait Render: Sync {
    /// Renders `template` with `context`.
    fn render(&self, template: &Value, context: &Value) -> Result<Value, RenderError>;
}

/// A renderer for verifiers that never rebuild (a policy without rebuild rules): every render
/// fails, so a rule reached by mistake fails closed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRenderer;

impl Render for NoRenderer {
    fn render(&self, _: &Value, _: &Value) -> Result<Value, RenderError> {
        Err(RenderError::Failed(
            "no json-e renderer is configured".into(),
        ))
    }
}

/// One difference between a rebuilt and the runtime definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// JSON pointer.
    pub pointer: String,
    /// Rebuilt value (`None`: absent).
    pub rebuilt: Option<String>,
    /// Runtime value (`None`: absent).
    pub runtime: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "absent".into());
        write!(
            f,
            "{}: rebuilt {} / runtime {}",
            self.pointer,
            show(&self.rebuilt),
            show(&self.runtime)
        )
    }
}

/// What the rebuild of one link needs: computed from the policy and the definitions only, so
/// the fetcher and the verifier agree on it.
#[derive(Debug, Clone)]
pub struct Plan<'p> {
    /// The decision or action task being rebuilt.
    pub link: TaskId,
    /// Its decision task (itself for a decision task).
    pub decision: TaskId,
    /// `extra.tasks_for`, allowed by the rule.
    pub tasks_for: String,
    /// The repository's rule.
    pub rule: &'p RebuildRule,
    /// `<PREFIX>_HEAD_REPOSITORY` of the decision task (trailing `/` dropped).
    pub repository: String,
    /// `<PREFIX>_HEAD_REV` of the decision task, checked.
    pub revision: String,
    /// Sources to fetch.
    pub sources: Vec<SourceRequest>,
}

/// The outcome of planning a link.
#[derive(Debug)]
pub enum Planned<'p> {
    /// Rebuild with this plan.
    Rebuild(Box<Plan<'p>>),
    /// The repository has no rule and the policy does not require one.
    NotConfigured(String),
}

fn env_str<'a>(raw: &'a Value, name: &str) -> Option<&'a str> {
    raw.pointer("/payload/env")
        .and_then(|e| e.get(name))
        .and_then(Value::as_str)
}

fn fail(task_id: &TaskId, detail: impl Into<String>) -> VerifyError {
    VerifyError::RebuildFailed {
        task_id: task_id.clone(),
        detail: clip(&detail.into()),
    }
}

/// Whether `s` is a commit hash (hg or git: 12 to 64 lower-case hex digits).
fn is_commit_hash(s: &str) -> bool {
    (12..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `s` is a plausible tag name: safe characters only, no `..`, no leading `-`/`/`.
fn is_tag(s: &str) -> bool {
    (1..=200).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
        && !s.contains("..")
        && !s.starts_with(['-', '/'])
        && !s.ends_with('/')
}

/// A URL for messages: without its query (a token could hide there), clipped.
pub fn shown_url(url: &str) -> String {
    clip(url.split(['?', '#']).next().unwrap_or_default())
}

/// Fills a policy URL template; every value has passed [`is_commit_hash`], [`is_tag`] or is
/// decimal, so none can change the URL's structure.
fn fill(template: &str, revision: &str, tag: &str, pull_request: &str) -> String {
    template
        .replace("{revision}", revision)
        .replace("{tag}", tag)
        .replace("{pull_request}", pull_request)
}

/// The rule for the repository a link comes from: a policy repository whose normalised URL
/// equals the decision's normalised `repository` exactly.
fn rule_for<'p>(policy: &'p ChainPolicy, repository: &str) -> Option<&'p RebuildRule> {
    let want = super::source::normalize_url(repository);
    policy
        .repositories
        .iter()
        .filter(|r| super::source::normalize_url(&r.url) == want)
        .find_map(|r| r.rebuild.as_ref())
}

/// Whether a `tasks_for` is an action's (its template is a hook's; its decision is its parent).
pub fn is_action(tasks_for: &str) -> bool {
    matches!(tasks_for, "action" | "pr-action")
}

/// The decision task a graph-creating link is rebuilt against: its parent for an action
/// (`extra.tasks_for` `action` / `pr-action`), itself otherwise.
pub fn decision_of(id: &TaskId, node: &super::chain::Node) -> Result<TaskId, VerifyError> {
    let tasks_for = node.raw.pointer("/extra/tasks_for").and_then(Value::as_str);
    if !tasks_for.is_some_and(is_action) {
        return Ok(id.clone());
    }
    match &node.parent {
        Some(p) if p != id => Ok(p.clone()),
        _ => Err(fail(
            id,
            "the action task names no decision task other than itself",
        )),
    }
}

/// Plans the rebuild of graph-creating link `link` (decision task `decision`).
pub fn plan<'p>(
    policy: &'p ChainPolicy,
    link: &TaskId,
    link_raw: &Value,
    decision: &TaskId,
    decision_raw: &Value,
) -> Result<Planned<'p>, VerifyError> {
    let (info, _) = super::source::source_info(decision, decision_raw, policy);
    let Some(repo_norm) = info.repository else {
        return Err(fail(
            link,
            format!("decision task {decision} names no repository to rebuild from"),
        ));
    };
    let tasks_for = link_raw
        .pointer("/extra/tasks_for")
        .and_then(Value::as_str)
        .ok_or_else(|| fail(link, "extra.tasks_for is missing or not a string"))?;
    // A pull request from a fork names the fork as its head repository: its rule is the base
    // repository's, the one the pull request was made to (`<PREFIX>_BASE_REPOSITORY`).
    let is_pr = tasks_for.starts_with("github-pull-request");
    let rule = rule_for(policy, &repo_norm).or_else(|| {
        policy
            .repositories
            .iter()
            .filter(|_| is_pr)
            .filter_map(|r| r.rebuild.as_ref().map(|rule| (r, rule)))
            .find(|(r, rule)| {
                env_str(
                    decision_raw,
                    &format!("{}_BASE_REPOSITORY", rule.env_prefix),
                )
                .map(super::source::normalize_url)
                    == Some(super::source::normalize_url(&r.url))
            })
            .map(|(_, rule)| rule)
    });
    let Some(rule) = rule else {
        let why = format!(
            "the chain policy has no rebuild rule for repository {repo_norm} (unknown project)"
        );
        return if policy.rebuild.required {
            Err(fail(link, why))
        } else {
            Ok(Planned::NotConfigured(why))
        };
    };
    if !rule.tasks_for.iter().any(|t| t == tasks_for) {
        return Err(fail(
            link,
            format!(
                "tasks_for {:?} is not allowed for {repo_norm} by the chain policy (allowed: {})",
                clip(tasks_for),
                rule.tasks_for.join(", ")
            ),
        ));
    }
    let prefix = &rule.env_prefix;
    let repository = env_str(decision_raw, &format!("{prefix}_HEAD_REPOSITORY"))
        .map(|r| r.trim_end_matches('/').to_owned())
        .ok_or_else(|| {
            fail(
                link,
                format!("decision task {decision} has no {prefix}_HEAD_REPOSITORY"),
            )
        })?;
    let revision = env_str(decision_raw, &format!("{prefix}_HEAD_REV"))
        .ok_or_else(|| {
            fail(
                link,
                format!("decision task {decision} has no {prefix}_HEAD_REV"),
            )
        })?
        .to_owned();
    let release = tasks_for == "github-release";
    if !(is_commit_hash(&revision) || release && is_tag(&revision)) {
        return Err(fail(
            link,
            format!(
                "{prefix}_HEAD_REV {:?} is not a commit hash{}",
                clip(&revision),
                if release { " or tag name" } else { "" }
            ),
        ));
    }
    let pull_request =
        env_str(decision_raw, &format!("{prefix}_PULL_REQUEST_NUMBER")).unwrap_or("");
    let pr_ok = !pull_request.is_empty()
        && pull_request.len() <= 12
        && pull_request.bytes().all(|b| b.is_ascii_digit());
    let mut sources = vec![SourceRequest {
        kind: SourceKind::Template,
        url: fill(&rule.template_url, &revision, &revision, pull_request),
        repository: repository.clone(),
        revision: revision.clone(),
    }];
    let mut need = |kind: SourceKind,
                    url: &Option<String>,
                    name: &str|
     -> Result<(), VerifyError> {
        let url = url.as_ref().ok_or_else(|| {
            fail(
                link,
                format!("tasks_for {tasks_for} needs {name} in the rebuild rule for {repo_norm}"),
            )
        })?;
        sources.push(SourceRequest {
            kind,
            url: fill(url, &revision, &revision, pull_request),
            repository: repository.clone(),
            revision: revision.clone(),
        });
        Ok(())
    };
    match (rule.vcs, tasks_for) {
        (Vcs::Hg, "hg-push" | "cron") => {
            need(SourceKind::Pushlog, &rule.pushlog_url, "pushlog_url")?
        }
        (Vcs::Hg, "action" | "pr-action") => {}
        (Vcs::Git, "github-push") => need(SourceKind::Commit, &rule.commit_url, "commit_url")?,
        (Vcs::Git, "github-release") => {
            need(SourceKind::Release, &rule.release_url, "release_url")?
        }
        (Vcs::Git, "github-pull-request" | "github-pull-request-untrusted") => {
            if !pr_ok {
                return Err(fail(
                    link,
                    format!("{prefix}_PULL_REQUEST_NUMBER is missing or not a number"),
                ));
            }
            need(
                SourceKind::PullRequest,
                &rule.pull_request_url,
                "pull_request_url",
            )?
        }
        (Vcs::Git, "cron" | "action" | "pr-action") => {}
        (vcs, other) => {
            return Err(fail(
                link,
                format!(
                    "unknown tasks_for {:?} for a {vcs:?} repository",
                    clip(other)
                ),
            ));
        }
    }
    Ok(Planned::Rebuild(Box::new(Plan {
        link: link.clone(),
        decision: decision.clone(),
        tasks_for: tasks_for.to_owned(),
        rule,
        repository,
        revision,
        sources,
    })))
}

/// Everything [`rebuild`] reads besides the plan.
pub struct Inputs<'a> {
    /// The link's raw definition.
    pub link_raw: &'a Value,
    /// Its decision task's raw definition.
    pub decision_raw: &'a Value,
    /// Source bytes, in the order of [`Plan::sources`].
    pub sources: Vec<&'a [u8]>,
    /// The decision's verified `actions.json` (action links).
    pub actions_json: Option<&'a [u8]>,
    /// The decision's verified `parameters.yml` (hg action links).
    pub parameters_yml: Option<&'a [u8]>,
}

/// Parses YAML (or JSON, a subset) into a JSON value with the YAML parser's budgets.
pub fn parse_yaml(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    // Duplicate keys: the last wins, as in PyYAML (which renders in-tree templates upstream).
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    };
    serde_saphyr::from_str_with_options::<Value>(text, options).map_err(|e| clip(&e.to_string()))
}

fn parse_json(bytes: &[u8]) -> Result<Value, String> {
    crate::strict_json::from_slice(bytes).map_err(|e| clip(&e.to_string()))
}

/// The name of the context object that stands in for `as_slugid` (the json-e crate takes no
/// functions in a context).
const SLUGID_MAP: &str = "__chainlock_slugid";

/// Rewrites every `as_slugid("name")` / `as_slugid('name')` in the template's strings to a
/// lookup in [`SLUGID_MAP`], and returns the names seen. Any other use of `as_slugid` is left
/// alone and fails in json-e (an unknown context value): fail closed.
fn rewrite_slugids(v: &mut Value, names: &mut Vec<String>) {
    fn rewrite_str(s: &str, names: &mut Vec<String>) -> Option<String> {
        if !s.contains("as_slugid") {
            return None;
        }
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("as_slugid(") {
            let (head, tail) = rest.split_at(i);
            out.push_str(head);
            let after = &tail["as_slugid(".len()..];
            let quote = after.chars().next();
            let parsed = quote.filter(|q| *q == '"' || *q == '\'').and_then(|q| {
                let body = &after[1..];
                let end = body.find(q)?;
                let name = &body[..end];
                let close = body[end + 1..].strip_prefix(')')?;
                (name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
                .then(|| (name.to_owned(), q, close))
            });
            match parsed {
                Some((name, q, close)) => {
                    out.push_str(&format!("{SLUGID_MAP}[{q}{name}{q}]"));
                    if !names.contains(&name) {
                        names.push(name);
                    }
                    rest = close;
                }
                None => {
                    out.push_str("as_slugid(");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        Some(out)
    }
    match v {
        Value::String(s) => {
            if let Some(n) = rewrite_str(s, names) {
                *s = n;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_slugids(x, names)),
        Value::Object(m) => {
            let old = std::mem::take(m);
            for (k, mut x) in old {
                rewrite_slugids(&mut x, names);
                let k = rewrite_str(&k, names).unwrap_or(k);
                m.insert(k, x);
            }
        }
        _ => {}
    }
}

/// The reference's `remove_empty_keys`, stricter: drop object members and array items whose
/// value is `{}`, `null` or `[]` (json-e drops empty values; the queue fills defaults such as
/// `routes: []`), recursively, judged before recursing. The reference also drops the string
/// `"null"`; we do not, so a runtime-only `FOO: "null"` (an environment variable, a scope) is
/// a difference.
pub fn remove_empty(v: &Value) -> Value {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !empty(x))
                .map(|(k, x)| (k.clone(), remove_empty(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().filter(|x| !empty(x)).map(remove_empty).collect()),
        other => other.clone(),
    }
}

/// `projectId` defaults to `none`; `provisionerId`/`workerType` become `taskQueueId`.
fn normalise(mut def: Map<String, Value>) -> Map<String, Value> {
    def.entry("projectId").or_insert_with(|| json!("none"));
    if !def.contains_key("taskQueueId")
        && let (Some(p), Some(w)) = (
            def.get("provisionerId").and_then(Value::as_str),
            def.get("workerType").and_then(Value::as_str),
        )
    {
        let q = format!("{p}/{w}");
        def.insert("taskQueueId".into(), Value::String(q));
    }
    def.remove("provisionerId");
    def.remove("workerType");
    def
}

fn pointer_token(key: &str) -> String {
    format!("/{}", key.replace('~', "~0").replace('/', "~1"))
}

fn show(v: &Value) -> String {
    clip(&v.to_string())
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || x.as_f64().is_some_and(|f| y.as_f64() == Some(f))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| same(p, q)))
        }
        _ => a == b,
    }
}

/// Every difference between `rebuilt` and `runtime` (up to [`MAX_DIFFERENCES`]).
pub fn differences(rebuilt: &Value, runtime: &Value) -> Vec<Difference> {
    fn walk(a: &Value, b: &Value, at: &str, out: &mut Vec<Difference>) {
        if out.len() >= MAX_DIFFERENCES || same(a, b) {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, p) in x {
                    let here = format!("{at}{}", pointer_token(k));
                    match y.get(k) {
                        Some(q) => walk(p, q, &here, out),
                        None if out.len() < MAX_DIFFERENCES => out.push(Difference {
                            pointer: here,
                            rebuilt: Some(show(p)),
                            runtime: None,
                        }),
                        None => return,
                    }
                }
                for (k, q) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                    if out.len() >= MAX_DIFFERENCES {
                        return;
                    }
                    out.push(Difference {
                        pointer: format!("{at}{}", pointer_token(k)),
                        rebuilt: None,
                        runtime: Some(show(q)),
                    });
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(p, q, &format!("{at}/{i}"), out);
                }
            }
            _ => out.push(Difference {
                pointer: if at.is_empty() { "/".into() } else { at.into() },
                rebuilt: Some(show(a)),
                runtime: Some(show(b)),
            }),
        }
    }
    let mut out = Vec::new();
    walk(rebuilt, runtime, "", &mut out);
    out
}

/// The json-e context and template for `plan` (the reference's
/// `get_jsone_context_and_template`), before the `now` wrapper [`rebuild`] adds.
pub fn context_and_template(
    plan: &Plan<'_>,
    inputs: &Inputs<'_>,
    renderer: &dyn Render,
) -> Result<(Value, Value), VerifyError> {
    let link = &plan.link;
    let err = |d: String| fail(link, d);
    let Some(template_bytes) = inputs.sources.first() else {
        return Err(err("no template".into()));
    };
    let template = parse_yaml(template_bytes).map_err(|e| {
        err(format!(
            "{TEMPLATE_FILE} at {} is not valid YAML: {e}",
            plan.revision
        ))
    })?;
    let now = inputs
        .link_raw
        .get("created")
        .and_then(Value::as_str)
        .filter(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
        .ok_or_else(|| err("created is missing or not an RFC 3339 time".into()))?
        .to_owned();

    let mut ctx = Map::new();
    ctx.insert("now".into(), Value::String(now.clone()));
    ctx.insert("tasks_for".into(), Value::String(plan.tasks_for.clone()));
    ctx.insert("ownTaskId".into(), Value::String(link.as_str().to_owned()));
    ctx.insert("taskId".into(), Value::Null);
    let rule = plan.rule;
    let prefix = &rule.env_prefix;
    let d = inputs.decision_raw;
    let denv = |name: &str| env_str(d, &format!("{prefix}_{name}"));
    let source = |i: usize, what: &str| -> Result<Value, VerifyError> {
        let bytes = inputs
            .sources
            .get(i)
            .ok_or_else(|| err(format!("no {what}")))?;
        parse_json(bytes).map_err(|e| err(format!("{what} is not valid JSON: {e}")))
    };
    let action_context = || -> Result<Map<String, Value>, VerifyError> {
        match inputs.link_raw.pointer("/extra/action/context") {
            Some(Value::Object(m)) => Ok(m.clone()),
            _ => Err(err(
                "extra.action.context is missing or not an object".into()
            )),
        }
    };
    let cron = || -> Result<Value, VerifyError> {
        match inputs.link_raw.pointer("/extra/cron") {
            Some(Value::String(s)) => {
                parse_json(s.as_bytes()).map_err(|e| err(format!("extra.cron is not JSON: {e}")))
            }
            Some(v @ Value::Object(_)) => Ok(v.clone()),
            _ => Err(err("extra.cron is missing".into())),
        }
    };
    let project = rule.project.clone().unwrap_or_else(|| {
        plan.repository
            .trim_end_matches(".git")
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let level = || {
        rule.level.clone().ok_or_else(|| {
            err(format!(
                "the rebuild rule for {} has no level",
                plan.repository
            ))
        })
    };
    let is_action = matches!(plan.tasks_for.as_str(), "action" | "pr-action");

    match rule.vcs {
        Vcs::Hg => {
            ctx.insert(
                "repository".into(),
                json!({"url": plan.repository, "level": level()?, "project": project}),
            );
            match plan.tasks_for.as_str() {
                "action" | "pr-action" => {
                    ctx.extend(action_context()?);
                    let params = inputs.parameters_yml.ok_or_else(|| {
                        err(format!(
                            "the decision task's verified {PARAMETERS_YML} is not available"
                        ))
                    })?;
                    let params =
                        parse_yaml(params).map_err(|e| err(format!("{PARAMETERS_YML}: {e}")))?;
                    ctx.insert("parameters".into(), params);
                    ctx.insert("task".into(), Value::Null);
                }
                kind @ ("hg-push" | "cron") => {
                    let pushlog = source(1, "the pushlog")?;
                    let push = one_push(&pushlog).map_err(&err)?;
                    let push_ctx = if kind == "hg-push" {
                        let decision_comment = denv("COMMIT_MSG").unwrap_or(" ");
                        let mut allowed = vec![" ".to_owned()];
                        if let Some(i) = push.comment.find("try:") {
                            allowed.push(
                                push.comment[i..]
                                    .split('\n')
                                    .next()
                                    .unwrap_or("")
                                    .to_owned(),
                            );
                        }
                        if !allowed.iter().any(|a| a == decision_comment) {
                            return Err(err(format!(
                                "{prefix}_COMMIT_MSG {:?} is neither \" \" nor the push's try: line",
                                clip(decision_comment)
                            )));
                        }
                        json!({"base_revision": push.base_revision, "revision": plan.revision,
                               "comment": decision_comment, "owner": push.user,
                               "pushlog_id": push.id, "pushdate": push.date})
                    } else {
                        ctx.insert("cron".into(), cron()?);
                        json!({"base_revision": push.base_revision, "revision": plan.revision,
                               "comment": "", "owner": "cron",
                               "pushlog_id": push.id, "pushdate": push.date})
                    };
                    ctx.insert("push".into(), push_ctx);
                    if let Some(Value::Object(r)) = ctx.get_mut("repository") {
                        r.insert("type".into(), json!("hg"));
                    }
                }
                other => return Err(err(format!("unknown tasks_for {:?}", clip(other)))),
            }
        }
        Vcs::Git => {
            let repo_url = plan
                .repository
                .replacen("git@github.com:", "ssh://github.com/", 1);
            let norm = super::source::normalize_url(&repo_url);
            let full_name = norm
                .strip_prefix("https://")
                .and_then(|r| r.split_once('/'))
                .map(|(_, p)| p.to_owned())
                .unwrap_or_default();
            let ssh_url = format!("git@github.com:{full_name}.git");
            let repo_name = full_name.rsplit('/').next().unwrap_or_default().to_owned();
            let branch = denv("HEAD_BRANCH").or_else(|| denv("HEAD_REF"));
            let pushed_at = denv("PUSH_DATE_TIME");
            match plan.tasks_for.as_str() {
                "github-push" => {
                    let commit = source(1, "the commit API answer")?;
                    let login = |p: &str| commit.pointer(p).and_then(Value::as_str);
                    let committer = login("/committer/login").filter(|l| *l != "web-flow");
                    let sender = committer
                        .or_else(|| login("/author/login"))
                        .or_else(|| login("/commit/author/login"))
                        .unwrap_or("@@@unknown@@@");
                    let owner = inputs
                        .decision_raw
                        .pointer("/metadata/owner")
                        .cloned()
                        .unwrap_or(Value::Null);
                    ctx.insert(
                        "event".into(),
                        json!({"before": denv("BASE_REV"), "after": plan.revision,
                               "pusher": {"email": owner},
                               "base_ref": denv("BASE_BRANCH").or_else(|| denv("BASE_REF")),
                               "ref": branch,
                               "repository": {"full_name": full_name, "ssh_url": ssh_url,
                                              "html_url": repo_url, "name": repo_name,
                                              "pushed_at": pushed_at},
                               "sender": {"login": sender}}),
                    );
                }
                "github-release" => {
                    let rel = source(1, "the release API answer")?;
                    ctx.insert(
                        "event".into(),
                        json!({"action": "published",
                               "repository": {"clone_url": format!("{repo_url}.git"),
                                              "full_name": full_name, "html_url": repo_url,
                                              "name": repo_name},
                               "release": {"tag_name": plan.revision,
                                           "target_commitish": rel.get("target_commitish"),
                                           "published_at": rel.get("published_at")},
                               "sender": {"login": rel.pointer("/author/login")}}),
                    );
                }
                "github-pull-request" | "github-pull-request-untrusted" => {
                    let mut pr = source(1, "the pull-request API answer")?;
                    let set = |pr: &mut Value, p: &str, k: &str, v: Option<&str>| {
                        if let Some(Value::Object(m)) = pr.pointer_mut(p) {
                            m.insert(k.into(), v.map_or(Value::Null, |s| json!(s)));
                        }
                    };
                    set(&mut pr, "/head", "updated_at", pushed_at);
                    set(&mut pr, "/base", "sha", denv("BASE_REV"));
                    set(&mut pr, "/head", "sha", denv("HEAD_REV"));
                    let base_repo = pr.pointer("/base/repo").cloned().unwrap_or(Value::Null);
                    let sender = pr
                        .pointer("/head/user/login")
                        .cloned()
                        .unwrap_or(Value::Null);
                    ctx.insert(
                        "event".into(),
                        json!({"action": "synchronize", "repository": base_repo,
                               "pull_request": pr, "sender": {"login": sender}}),
                    );
                }
                "cron" => {
                    let user = denv("TRIGGERED_BY").unwrap_or("TaskclusterHook");
                    ctx.insert("cron".into(), cron()?);
                    ctx.insert(
                        "event".into(),
                        json!({"repository": {"clone_url": repo_url, "full_name": full_name,
                                              "html_url": repo_url, "name": repo_name},
                               "release": {"tag_name": plan.revision, "target_commitish": branch,
                                           "published_at": pushed_at},
                               "sender": {"login": user}}),
                    );
                    ctx.insert(
                        "repository".into(),
                        json!({"url": repo_url, "project": repo_name, "level": level()?, "type": "git"}),
                    );
                    ctx.insert(
                        "push".into(),
                        json!({"revision": plan.revision, "branch": branch}),
                    );
                }
                "action" | "pr-action" => ctx.extend(action_context()?),
                other => return Err(err(format!("unknown tasks_for {:?}", clip(other)))),
            }
        }
    }

    if !is_action {
        return Ok((Value::Object(ctx), template));
    }

    // Actions: the template is the hook's (the in-tree template wrapped in a `$let`), and the
    // context is the hook's firing context, with the payload rendered from actions.json.
    let callback = env_str(inputs.link_raw, "ACTION_CALLBACK")
        .ok_or_else(|| err("payload.env.ACTION_CALLBACK is missing".into()))?;
    let actions = inputs.actions_json.ok_or_else(|| {
        err(format!(
            "the decision task's verified {ACTIONS_JSON} is not available"
        ))
    })?;
    let actions = parse_json(actions).map_err(|e| err(format!("{ACTIONS_JSON}: {e}")))?;
    let defn = actions
        .get("actions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| {
            a.pointer("/hookPayload/decision/action/cb_name")
                .and_then(Value::as_str)
                == Some(callback)
        })
        .ok_or_else(|| {
            err(format!(
                "no action with callback {:?} in {ACTIONS_JSON}",
                clip(callback)
            ))
        })?;
    if defn.get("kind").and_then(Value::as_str) != Some("hook") {
        return Err(err(format!(
            "action {:?} is of kind {}, not hook",
            clip(callback),
            show(defn.get("kind").unwrap_or(&Value::Null))
        )));
    }
    let action_perm = defn
        .pointer("/extra/actionPerm")
        .or_else(|| defn.get("actionPerm"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let hook = defn
                .get("hookId")
                .and_then(Value::as_str)
                .unwrap_or("generic/");
            if hook.contains("generic/") {
                "generic".into()
            } else {
                callback.to_owned()
            }
        });
    let tasks_for = &plan.tasks_for;
    let wrapped = json!({
        "$let": {
            "tasks_for": tasks_for,
            "action": {
                "name": "${payload.decision.action.name}",
                "title": "${payload.decision.action.title}",
                "description": "${payload.decision.action.description}",
                "taskGroupId": "${payload.decision.action.taskGroupId}",
                "symbol": "${payload.decision.action.symbol}",
                "repo_scope": format!("assume:repo:${{payload.decision.repository.url[8:]}}:{tasks_for}:{action_perm}"),
                "action_perm": action_perm,
                "cb_name": "${payload.decision.action.cb_name}",
            },
            "push": {"$eval": "payload.decision.push"},
            "repository": {"$eval": "payload.decision.repository"},
            "input": {"$eval": "payload.user.input"},
            "parameters": {"$eval": "payload.decision['parameters']"},
            "taskId": {"$eval": "payload.user.taskId"},
            "taskGroupId": {"$eval": "payload.user.taskGroupId"},
            "ownTaskId": {"$eval": "taskId"},
        },
        "in": template,
    });
    let hook_payload = defn.get("hookPayload").cloned().unwrap_or(Value::Null);
    let group = inputs
        .link_raw
        .get("taskGroupId")
        .cloned()
        .unwrap_or(Value::Null);
    let payload_ctx = json!({
        "input": ctx.get("input").cloned().unwrap_or(Value::Null),
        "parameters": ctx.get("parameters").cloned().unwrap_or(Value::Null),
        "taskGroupId": group,
        "taskId": ctx.get("taskId").cloned().unwrap_or(Value::Null),
    });
    let payload = renderer.render(&hook_payload, &payload_ctx).map_err(|e| {
        err(format!(
            "rendering the hook payload of {:?}: {e}",
            clip(callback)
        ))
    })?;
    let hook_ctx = json!({
        "payload": payload,
        "taskId": link.as_str(),
        "now": now,
        "clientId": ctx.get("clientId").cloned().unwrap_or(Value::Null),
    });
    Ok((hook_ctx, wrapped))
}

struct Push {
    id: String,
    user: Value,
    date: Value,
    comment: String,
    base_revision: Value,
}

/// The single push of a `json-pushes` (version 2) answer.
fn one_push(pushlog: &Value) -> Result<Push, String> {
    let pushes = pushlog
        .get("pushes")
        .and_then(Value::as_object)
        .ok_or("the pushlog has no pushes object")?;
    if pushes.len() != 1 {
        return Err(format!(
            "the pushlog holds {} pushes, not exactly one",
            pushes.len()
        ));
    }
    let (id, push) = pushes.iter().next().ok_or("the pushlog has no push")?;
    let changesets = push
        .get("changesets")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or("the push has no changesets")?;
    let (Some(first), Some(tip)) = (changesets.first(), changesets.last()) else {
        return Err("the push has no changesets".into());
    };
    Ok(Push {
        id: id.clone(),
        user: push.get("user").cloned().unwrap_or(Value::Null),
        date: push.get("date").cloned().unwrap_or(Value::Null),
        comment: tip
            .get("desc")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        base_revision: first
            .pointer("/parents/0")
            .cloned()
            .ok_or("the push's first changeset has no parent")?,
    })
}

/// Renders the plan and compares: `Ok(())` when the runtime definition equals one rendered
/// task (the first that matches wins), else the finding with the differences from the
/// closest candidate.
pub fn rebuild(
    plan: &Plan<'_>,
    inputs: &Inputs<'_>,
    renderer: &dyn Render,
) -> Result<(), VerifyError> {
    let link = &plan.link;
    let (mut context, mut template) = context_and_template(plan, inputs, renderer)?;
    // `as_slugid(name)`: the decision's id for "decision", the link's for any other name.
    let mut names = Vec::new();
    rewrite_slugids(&mut template, &mut names);
    let slugids: Map<String, Value> = names
        .iter()
        .map(|n| {
            let id = if n == "decision" {
                &plan.decision
            } else {
                link
            };
            (n.clone(), Value::String(id.as_str().to_owned()))
        })
        .collect();
    if let Value::Object(m) = &mut context {
        m.insert(SLUGID_MAP.into(), Value::Object(slugids));
    }
    // The json-e crate sets `now` to the wall clock; the `$let` gives it the task's `created`
    // instead (a checked RFC 3339 string, so nothing in it is interpolated).
    let now = context.get("now").cloned().unwrap_or(Value::Null);
    let wrapped = json!({"$let": {"now": now}, "in": template});
    let rendered = renderer
        .render(&wrapped, &context)
        .map_err(|e| fail(link, format!("rebuilding from {TEMPLATE_FILE}: {e}")))?;
    let mut tasks = match rendered.get("tasks") {
        Some(Value::Array(t)) => t.clone(),
        _ => {
            return Err(fail(
                link,
                format!("{TEMPLATE_FILE} rendered no tasks array"),
            ));
        }
    };
    let is_action = matches!(plan.tasks_for.as_str(), "action" | "pr-action");
    if is_action {
        let runtime_gid = inputs
            .link_raw
            .pointer("/payload/env/ACTION_TASK_GROUP_ID")
            .cloned();
        if let Some(Value::Object(first_env)) = tasks
            .first_mut()
            .and_then(|t| t.pointer_mut("/payload/env"))
        {
            let rebuilt = first_env
                .get("ACTION_TASK_GROUP_ID")
                .and_then(Value::as_str)
                .unwrap_or("");
            if rebuilt != plan.link.as_str() && rebuilt != plan.decision.as_str() {
                return Err(fail(
                    link,
                    format!(
                        "the rebuilt ACTION_TASK_GROUP_ID {:?} is neither the action nor its decision task",
                        clip(rebuilt)
                    ),
                ));
            }
            if let Some(gid) = runtime_gid {
                first_env.insert("ACTION_TASK_GROUP_ID".into(), gid);
            }
        }
    }
    let Value::Object(runtime) = remove_empty(inputs.link_raw) else {
        return Err(fail(link, "the task definition is not an object"));
    };
    let runtime = Value::Object(normalise(runtime));
    let mut best: Option<Vec<Difference>> = None;
    for t in &tasks {
        let Value::Object(mut m) = t.clone() else {
            continue;
        };
        m.remove("taskId");
        let Value::Object(m) = remove_empty(&Value::Object(m)) else {
            continue;
        };
        let candidate = Value::Object(normalise(m));
        if same(&candidate, &runtime) {
            return Ok(());
        }
        let diffs = differences(&candidate, &runtime);
        if best.as_ref().is_none_or(|b| diffs.len() < b.len()) {
            best = Some(diffs);
        }
    }
    let diffs = best.unwrap_or_default();
    Err(VerifyError::RebuildMismatch {
        task_id: link.clone(),
        candidates: tasks.len(),
        differences: diffs.iter().map(ToString::to_string).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_slugid_calls_become_lookups() {
        let mut v = json!({"a": "${as_slugid(\"decision\")}", "b": {"$eval": "as_slugid('x')"}, "c": "as_slugid(foo)"});
        let mut names = Vec::new();
        rewrite_slugids(&mut v, &mut names);
        assert_eq!(v["a"], json!("${__chainlock_slugid[\"decision\"]}"));
        assert_eq!(v["b"]["$eval"], json!("__chainlock_slugid['x']"));
        assert_eq!(v["c"], json!("as_slugid(foo)"));
        assert_eq!(names, vec!["decision".to_owned(), "x".to_owned()]);
    }

    #[test]
    fn empty_values_are_dropped_as_the_reference_does() {
        let v = json!({"a": null, "b": {}, "c": [], "d": "null", "e": [1, null, {}], "f": {"g": {"h": null}}});
        assert_eq!(
            remove_empty(&v),
            json!({"d": "null", "e": [1], "f": {"g": {}}})
        );
    }

    #[test]
    fn differences_name_pointers_and_both_values() {
        let d = differences(
            &json!({"a": 1, "b": [1, 2], "c/d": "x"}),
            &json!({"a": 1.0, "b": [1, 3], "e": true}),
        );
        let shown: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "/b/1: rebuilt 2 / runtime 3",
                "/c~1d: rebuilt \"x\" / runtime absent",
                "/e: rebuilt absent / runtime true"
            ]
        );
    }

    #[test]
    fn revisions_and_tags_cannot_change_a_url() {
        for bad in [
            "../x",
            "abc/../../d",
            "-rf",
            "a b",
            "a?b",
            "a#b",
            "x%2f",
            "",
        ] {
            assert!(!is_commit_hash(bad) && !is_tag(bad), "{bad}");
        }
        assert!(is_commit_hash("054fe08d229f064a71bae9bb793e7ab8d95eff61"));
        assert!(!is_commit_hash("054FE08D229F"));
        assert!(is_tag("v1.2.3") && is_tag("release/1.0"));
    }
}
