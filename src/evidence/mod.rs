//! Evidence fetching: the IO half of chain-of-trust verification.
//!
//! Why it exists: the verifier (`crate::verify`) is pure, so something must download the
//! evidence it judges. This module discovers the chain with the same pure chain builder the
//! verifier uses and downloads, in one bounded pipeline, definitions, run statuses,
//! chain-of-trust documents, signatures and consumed artifacts into a bundle directory
//! (`crate::verify::bundle` format): each definition that arrives schedules at once everything
//! it reveals, so the critical path is one round trip per level of the chain, not a wave per
//! kind of evidence. The worker then hands the verified copies to its
//! script under `work_dir/cot/<taskId>/<path>` with `work_dir/cot/manifest.json`.
//!
//! What it must not do: judge anything (no check lives here), or turn a queue outage into a
//! verification failure. A 404 (or 410/424) for evidence that must exist is recorded as absent,
//! and evidence larger than its limit (gzip-decoded) is recorded as too large
//! (`<taskId>/too-large/<name>`): the verifier fails the chain (`malformed-payload`) for both.
//! A queue that cannot be reached or keeps answering 5xx after the client's retries is an
//! infrastructure failure (`resource-unavailable`), which the reference implementation gets
//! wrong.

use crate::chain_policy::ChainPolicy;
use crate::ids::TaskId;
use crate::manifest::{MANIFEST_FILE, MANIFEST_VERSION, VerifiedArtifact, VerifiedManifest};
use crate::queue::QueueClient;
use crate::queue::QueueError;
use crate::queue::types::ExceptionReason;
use crate::trust::TrustStore;
use crate::verify::bundle::{
    BUNDLE_FILE, BUNDLE_VERSION, Bundle, BundleError, BundleIndex, SOURCES_DIR, SourceEntry,
    hash_reader, open_no_symlinks,
};
use crate::verify::chain::{self, COT_DOCUMENT};
use crate::verify::rebuild;
use crate::verify::{
    self, ArtifactPath, Limits, Mode, Report, STATUS_FILE, TASK_FILE, VerifiedChain,
};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

/// Why evidence could not be fetched or handed over (never a verification verdict).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceError {
    /// The queue could not be asked (unreachable, 5xx after retries, refused our credentials).
    #[error("cannot fetch {what} of task {task_id}: {source}")]
    Queue {
        /// The task.
        task_id: TaskId,
        /// What was being fetched.
        what: String,
        /// The queue client's error.
        #[source]
        source: Box<QueueError>,
    },
    /// A rebuild source could not be fetched (unreachable, 5xx after retries).
    #[error("cannot fetch source {url}: {source}")]
    Source {
        /// The URL, without its query.
        url: String,
        /// The client's error.
        #[source]
        source: Box<QueueError>,
    },
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The bundle directory cannot be used.
    #[error("bundle {path}: {detail}")]
    BundleDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// A bundle could not be opened.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A verified file changed between verification and hand-over.
    #[error("{path} changed after verification (sha256 {actual}, verified {expected})")]
    ChangedAfterVerification {
        /// The file.
        path: PathBuf,
        /// The verified hash.
        expected: String,
        /// What it hashes to now.
        actual: String,
    },
}

/// Why a chain could not be accepted, as the worker must report it.
#[derive(Debug)]
#[non_exhaustive]
pub enum ChainFailure {
    /// The evidence does not verify: the task's input is untrusted. Carries the full report.
    Verification(Box<Report>),
    /// The evidence could not be fetched (queue unreachable, 5xx after retries).
    Infrastructure(EvidenceError),
    /// A local failure on this worker (disk, a file changed under us), before or after the
    /// verdict: the task's input is not handed over.
    Local(EvidenceError),
}

impl ChainFailure {
    /// The Taskcluster exception reason for this failure (one reviewed place).
    pub fn exception_reason(&self) -> ExceptionReason {
        match self {
            ChainFailure::Verification(_) => ExceptionReason::MalformedPayload,
            ChainFailure::Infrastructure(_) => ExceptionReason::ResourceUnavailable,
            ChainFailure::Local(_) => ExceptionReason::InternalError,
        }
    }

    /// Text for `public/logs/chain_of_trust.log`.
    pub fn log_text(&self) -> String {
        match self {
            ChainFailure::Verification(r) => r.to_text(),
            ChainFailure::Infrastructure(e) => {
                format!("chain of trust could not be verified: evidence unavailable: {e}\n")
            }
            ChainFailure::Local(e) => {
                format!("chain of trust not verified: a local failure on this worker: {e}\n")
            }
        }
    }
}

impl std::fmt::Display for ChainFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainFailure::Verification(r) => write!(
                f,
                "chain of trust of task {} failed verification ({} problem(s))",
                r.target,
                r.failure_count()
            ),
            ChainFailure::Infrastructure(e) => {
                write!(f, "chain-of-trust evidence unavailable: {e}")
            }
            ChainFailure::Local(e) => {
                write!(f, "chain of trust: local failure on this worker: {e}")
            }
        }
    }
}

impl std::error::Error for ChainFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ChainFailure::Verification(_) => None,
            ChainFailure::Infrastructure(e) | ChainFailure::Local(e) => Some(e),
        }
    }
}

/// Whether a queue error means "this evidence does not exist" (a verification matter) rather
/// than "the queue cannot be asked" (infrastructure).
fn is_absent(e: &QueueError) -> bool {
    matches!(e.status(), Some(404 | 410 | 424))
}

fn queue_err(task_id: &TaskId, what: &str, source: QueueError) -> EvidenceError {
    EvidenceError::Queue {
        task_id: task_id.clone(),
        what: what.to_owned(),
        source: Box::new(source),
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EvidenceError + '_ {
    move |source| EvidenceError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Downloads the evidence of `target`'s chain into `dir` (which must be empty or absent) and
/// returns the bundle's index. `target_def` is the definition the caller already holds (the
/// worker's claim); `include_target` also fetches the target's own status, document and
/// signature (auditing a finished task). With `policy`, only the signature format each link's
/// worker implementation uses is requested; without one (exporting a bundle for someone
/// else's policy), both.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_bundle(
    queue: &QueueClient,
    target: &TaskId,
    target_def: Option<&Value>,
    dir: &Path,
    limits: &Limits,
    include_target: bool,
    policy: Option<&ChainPolicy>,
    rebuild_policy: Option<&ChainPolicy>,
) -> Result<BundleIndex, EvidenceError> {
    prepare_empty_dir(dir)?;
    let mut sources: Vec<SourceEntry> = Vec::new();
    let mut tasks: BTreeMap<TaskId, Value> = BTreeMap::new();
    if let Some(def) = target_def {
        tasks.insert(target.clone(), def.clone());
    }
    // Exact bytes of each fetched definition, written to the bundle as the queue sent them
    // so the verifier parses them itself (strictly).
    let mut raw: BTreeMap<TaskId, Vec<u8>> = BTreeMap::new();
    // Definitions that are absent, or present but unusable (recorded for the verifier).
    let mut not_found = BTreeSet::new();
    let mut too_large: BTreeMap<TaskId, u64> = BTreeMap::new();
    let concurrency = limits.max_concurrent_fetches.max(1);

    // One pipeline, no waves: as soon as a definition arrives, the chain is rebuilt (pure,
    // cheap) and everything it newly reveals is requested at once: the definitions of the
    // links it names, and for each known link its status, document and the one signature its
    // worker implementation uses, and every artifact a consumer names (a decision task's graph
    // as soon as a child names it as parent). The critical path is then one round trip per
    // level of the chain plus the last level's signature.
    let mut started: BTreeSet<(TaskId, JobKey)> = BTreeSet::new();
    let mut pending: std::collections::VecDeque<(TaskId, Job)> = Default::default();
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    let mut chain = chain::build(target, &|id| tasks.get(id), limits);
    // Rebuilt only when definitions arrived, once per batch of them: the chain depends on
    // nothing else, and rebuilding per download would make a long chain quadratic.
    let mut new_definitions = true;
    loop {
        if new_definitions {
            new_definitions = false;
            chain = chain::build(target, &|id| tasks.get(id), limits);
            let mut want = |id: &TaskId, job: Job| {
                if started.insert((id.clone(), job.key())) {
                    pending.push_back((id.clone(), job));
                }
            };
            // A link named but not yet fetched: its status and document do not depend on its
            // definition, so they go with it.
            // Its signature goes too when the role naming it fixes the signature format.
            let roles = incoming_roles(&chain);
            for id in chain.unresolved.difference(&not_found) {
                want(id, Job::Definition);
                if id != target || include_target {
                    want(id, Job::Status);
                    want(id, Job::Artifact(constant_path(COT_DOCUMENT)));
                    let named_as = roles.get(id).map(Vec::as_slice).unwrap_or_default();
                    for name in predicted_signature_artifacts(policy, named_as) {
                        want(id, Job::Artifact(constant_path(name)));
                    }
                }
            }
            for (id, node) in &chain.nodes {
                if id != target || include_target {
                    want(id, Job::Status);
                    want(id, Job::Artifact(constant_path(COT_DOCUMENT)));
                    for name in signature_artifacts(policy, &node.raw) {
                        want(id, Job::Artifact(constant_path(name)));
                    }
                }
            }
            for (id, paths) in chain::consumed_artifacts(&chain) {
                for p in paths {
                    want(&id, Job::Artifact(p));
                }
            }
            for id in chain.unresolved.iter().filter(|id| chain.is_parent(id)) {
                want(id, Job::Artifact(constant_path(chain::TASK_GRAPH)));
            }
            // Check 9's inputs: each decision or action link's sources as the policy names
            // them, and an action's decision's actions.json and parameters.yml (verified
            // against that decision's document, like its graph).
            if let Some(rp) = rebuild_policy {
                for req in rebuild_sources(rp, &chain) {
                    let holder = chain.target.clone();
                    want(&holder, Job::Source(req));
                }
            }
            for node in chain.nodes.values() {
                if let Some(parent) = &node.parent
                    && node.raw.pointer("/payload/env/ACTION_CALLBACK").is_some()
                {
                    want(parent, Job::Artifact(constant_path(rebuild::ACTIONS_JSON)));
                    want(
                        parent,
                        Job::Artifact(constant_path(rebuild::PARAMETERS_YML)),
                    );
                }
            }
        }
        while in_flight.len() < concurrency {
            let Some((id, job)) = pending.pop_front() else {
                break;
            };
            in_flight.push(fetch_job(queue, dir, id, job, limits));
        }
        let Some(first) = in_flight.next().await else {
            break;
        };
        // Everything else already finished joins this batch.
        let mut batch = vec![first];
        while let Some(Some(more)) = futures_util::FutureExt::now_or_never(in_flight.next()) {
            batch.push(more);
        }
        for done in batch {
            let Some((id, fetched)) = done? else {
                continue;
            };
            if let Fetched::Source(entry) = fetched {
                sources.push(entry);
                continue;
            }
            new_definitions = true;
            record_definition(
                &mut tasks,
                &mut raw,
                &mut not_found,
                &mut too_large,
                id,
                fetched,
            );
        }
    }

    // Every task the chain names, including the ones whose definition is unusable, so the
    // verifier reports each of them once.
    let mut listed: BTreeSet<TaskId> = chain.nodes.keys().cloned().collect();
    listed.extend(
        chain
            .unresolved
            .iter()
            .filter(|id| raw.contains_key(*id) || too_large.contains_key(*id))
            .cloned(),
    );
    for id in &listed {
        let task_dir = dir.join(id.as_str());
        std::fs::create_dir_all(&task_dir).map_err(io_err(&task_dir))?;
        let (path, bytes) = if let Some(limit) = too_large.get(id) {
            (
                dir.join(Bundle::too_large_task_file_rel_path(id, TASK_FILE)),
                limit.to_string().into_bytes(),
            )
        } else if let Some(bytes) = raw.get(id) {
            (task_dir.join(TASK_FILE), bytes.clone())
        } else if let Some(def) = tasks.get(id) {
            let bytes = serde_json::to_vec_pretty(def).expect("a JSON value always serialises");
            (task_dir.join(TASK_FILE), bytes)
        } else {
            continue;
        };
        std::fs::write(&path, bytes).map_err(io_err(&path))?;
    }

    let index = BundleIndex {
        bundle_version: BUNDLE_VERSION,
        target: target.clone(),
        tasks: listed.into_iter().collect(),
        root_url: Some(queue.root_url().to_owned()),
        fetched_at: None,
        sources: {
            sources.sort_by(|a, b| a.url.cmp(&b.url));
            sources
        },
    };
    let path = dir.join(BUNDLE_FILE);
    let bytes = serde_json::to_vec_pretty(&index).expect("the index always serialises");
    std::fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(index)
}

/// Takes one fetched definition into the scheduler's state.
fn record_definition(
    tasks: &mut BTreeMap<TaskId, Value>,
    raw: &mut BTreeMap<TaskId, Vec<u8>>,
    not_found: &mut BTreeSet<TaskId>,
    too_large: &mut BTreeMap<TaskId, u64>,
    id: TaskId,
    fetched: Fetched,
) {
    match fetched {
        Fetched::Bytes(bytes) => {
            // Not strict JSON: kept for the verifier, which reports it; never followed.
            match crate::strict_json::from_slice(&bytes) {
                Ok(v) => {
                    tasks.insert(id.clone(), v);
                }
                Err(_) => {
                    not_found.insert(id.clone());
                }
            }
            raw.insert(id, bytes);
        }
        Fetched::Absent => {
            not_found.insert(id);
        }
        Fetched::TooLarge(limit) => {
            not_found.insert(id.clone());
            too_large.insert(id, limit);
        }
        Fetched::Source(_) => {}
    }
}

/// One definition fetch.
enum Fetched {
    Bytes(Vec<u8>),
    Absent,
    /// Larger than this many bytes.
    TooLarge(u64),
    /// A rebuild source, stored in the bundle.
    Source(SourceEntry),
}

enum Job {
    Definition,
    Status,
    Artifact(ArtifactPath),
    Source(rebuild::SourceRequest),
}

/// What identifies a job, so each is requested once.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum JobKey {
    Definition,
    Status,
    Artifact(String),
    Source(String),
}

impl Job {
    fn key(&self) -> JobKey {
        match self {
            Job::Definition => JobKey::Definition,
            Job::Status => JobKey::Status,
            Job::Artifact(p) => JobKey::Artifact(p.as_str().to_owned()),
            Job::Source(s) => JobKey::Source(s.url.clone()),
        }
    }
}

fn constant_path(name: &'static str) -> ArtifactPath {
    ArtifactPath::parse(name).expect("constant, valid artifact names")
}

/// The signature artifacts worth requesting for a task: the one its worker implementation
/// uses, by the policy's entry for its queue. Without a policy, or when the definition names a
/// queue the policy does not know (or two queues), both: the verifier decides.
fn signature_artifacts(policy: Option<&ChainPolicy>, raw: &Value) -> Vec<&'static str> {
    const BOTH: [&str; 2] = [
        "public/chain-of-trust.json.asc",
        "public/chain-of-trust.json.sig",
    ];
    let Some(policy) = policy else {
        return BOTH.to_vec();
    };
    let str_field = |k: &str| raw.get(k).and_then(Value::as_str);
    let mut identities = Vec::new();
    if let Some(q) = str_field("taskQueueId") {
        identities.push(q.to_owned());
    }
    if let (Some(p), Some(w)) = (str_field("provisionerId"), str_field("workerType")) {
        identities.push(format!("{p}/{w}"));
    }
    let mut names: Vec<&'static str> = Vec::new();
    for q in &identities {
        match policy.queue(q) {
            Some(role) => names.extend(role.signature.iter().map(|f| f.artifact_name())),
            None => return BOTH.to_vec(),
        }
    }
    if names.is_empty() {
        return BOTH.to_vec();
    }
    names.sort_unstable();
    names.dedup();
    names
}

/// For each task the chain names, the roles it is named in (one pass over the edges).
fn incoming_roles(chain: &chain::Chain) -> BTreeMap<&TaskId, Vec<&chain::LinkRole>> {
    let mut roles: BTreeMap<&TaskId, Vec<&chain::LinkRole>> = BTreeMap::new();
    for node in chain.nodes.values() {
        for edge in &node.edges {
            roles.entry(&edge.to).or_default().push(&edge.role);
        }
    }
    roles
}

/// The signature artifacts of a link whose definition has not arrived yet, predicted from the
/// roles it is named in: a decision task must run on a decision or action queue, a docker
/// image's builder on a docker-image queue (the verifier enforces both). When every queue of
/// those kinds in the policy uses the same formats, the link can use no other, so its
/// signature is requested with its definition instead of one round trip later. Nothing is
/// predicted without a policy, for a link named only as an upstream or input (any kind), or
/// when the queues disagree; the definition then decides ([`signature_artifacts`]).
fn predicted_signature_artifacts(
    policy: Option<&ChainPolicy>,
    named_as: &[&chain::LinkRole],
) -> Vec<&'static str> {
    use crate::chain_policy::LinkKind;
    let Some(policy) = policy else {
        return Vec::new();
    };
    let admits = |role: &chain::LinkRole, kind: LinkKind| match role {
        chain::LinkRole::Decision => kind.is_graph_creator(),
        chain::LinkRole::Image { .. } => kind == LinkKind::DockerImage,
        chain::LinkRole::UpstreamArtifacts { .. } | chain::LinkRole::Input { .. } => true,
    };
    let constrained = named_as
        .iter()
        .any(|r| matches!(r, chain::LinkRole::Decision | chain::LinkRole::Image { .. }));
    if !constrained {
        return Vec::new();
    }
    policy
        .common_signature_formats(|kind| named_as.iter().all(|r| admits(r, kind)))
        .map(|formats| formats.iter().map(|f| f.artifact_name()).collect())
        .unwrap_or_default()
}

type JobResult = Result<Option<(TaskId, Fetched)>, EvidenceError>;

/// Runs one job; a definition comes back to the scheduler, everything else lands in `dir`.
fn fetch_job<'a>(
    queue: &'a QueueClient,
    dir: &'a Path,
    id: TaskId,
    job: Job,
    limits: &'a Limits,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = JobResult> + Send + 'a>> {
    Box::pin(async move {
        if let Job::Definition = job {
            return match queue.task_bytes(&id, limits.max_task_bytes).await {
                Ok(bytes) => Ok(Some((id, Fetched::Bytes(bytes)))),
                Err(e) if is_absent(&e) => Ok(Some((id, Fetched::Absent))),
                Err(QueueError::ResponseTooLarge { limit, .. }) => {
                    Ok(Some((id, Fetched::TooLarge(limit))))
                }
                Err(e) => Err(queue_err(&id, "task definition", e)),
            };
        }
        if let Job::Source(req) = job {
            return fetch_source(queue, dir, req)
                .await
                .map(|e| e.map(|e| (id, Fetched::Source(e))));
        }
        fetch_file(queue, dir, id, job, limits).await.map(|()| None)
    })
}

async fn fetch_file(
    queue: &QueueClient,
    dir: &Path,
    id: TaskId,
    job: Job,
    limits: &Limits,
) -> Result<(), EvidenceError> {
    let task_dir = dir.join(id.as_str());
    std::fs::create_dir_all(&task_dir).map_err(io_err(&task_dir))?;
    match job {
        Job::Definition | Job::Source(_) => Ok(()),
        Job::Status => match queue.status_bytes(&id, limits.max_task_bytes).await {
            Ok(bytes) => {
                // The answer is `{"status": {...}}`; the bundle holds the inner object. Strict
                // parsing keeps it exact; anything else is written as sent, and the verifier
                // reports it as malformed.
                let inner = crate::strict_json::from_slice(&bytes)
                    .ok()
                    .and_then(|mut v| v.get_mut("status").map(Value::take));
                let bytes = match inner {
                    Some(v) => serde_json::to_vec_pretty(&v).expect("a JSON value serialises"),
                    None => bytes,
                };
                let path = dir.join(id.as_str()).join(STATUS_FILE);
                std::fs::write(&path, bytes).map_err(io_err(&path))
            }
            Err(e) if is_absent(&e) => Ok(()),
            Err(QueueError::ResponseTooLarge { limit, .. }) => {
                let path = dir.join(Bundle::too_large_task_file_rel_path(&id, STATUS_FILE));
                std::fs::write(&path, limit.to_string()).map_err(io_err(&path))
            }
            Err(e) => Err(queue_err(&id, "status", e)),
        },
        Job::Artifact(name) => {
            let dest = dir.join(Bundle::artifact_rel_path(&id, &name));
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let max = if name.as_str() == chain::TASK_GRAPH {
                limits.max_task_graph_bytes
            } else if name.as_str() == COT_DOCUMENT {
                limits.max_document_bytes
            } else if name.as_str().starts_with("public/chain-of-trust.json.") {
                // The signature: the verifier's limit, so a refusal names the same one.
                limits.max_signature_bytes
            } else {
                limits.max_artifact_bytes
            };
            match queue
                .get_latest_artifact_to_file(&id, name.as_str(), &dest, max)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if is_absent(&e) => Ok(()),
                // Larger than the limit (as sent, or once gzip-decoded): the task's evidence
                // is at fault, not the queue. Recorded for the verifier, which fails the chain
                // naming the limit (`evidence-too-large`).
                Err(QueueError::TooLarge { max_bytes, .. }) => {
                    let record = dir.join(Bundle::too_large_rel_path(&id, &name));
                    if let Some(parent) = record.parent() {
                        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                    }
                    std::fs::write(&record, max_bytes.to_string()).map_err(io_err(&record))
                }
                // Stored with a Content-Encoding that does not decode: the stored object is at
                // fault (a transfer cut short is a transport error), so the verifier fails it.
                Err(QueueError::BadGzip { source, .. }) => {
                    let record = dir.join(Bundle::undecodable_rel_path(&id, &name));
                    if let Some(parent) = record.parent() {
                        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                    }
                    let why = format!("invalid gzip content: {source}");
                    std::fs::write(&record, why).map_err(io_err(&record))
                }
                Err(e) => Err(queue_err(&id, &format!("artifact {name}"), e)),
            }
        }
    }
}

/// Every source check 9 will ask for: per decision or action link of `chain` that the
/// policy can plan (links it cannot plan fail in the verifier, with the reason).
pub fn rebuild_sources(policy: &ChainPolicy, chain: &chain::Chain) -> Vec<rebuild::SourceRequest> {
    let mut out = Vec::new();
    for (id, node) in &chain.nodes {
        let Some(role) = node.task_queue_id().and_then(|q| policy.queue(&q)) else {
            continue;
        };
        if !role.kind.is_graph_creator() {
            continue;
        }
        let Ok(decision) = rebuild::decision_of(id, node) else {
            continue;
        };
        let Some(d) = chain.nodes.get(&decision) else {
            continue;
        };
        if let Ok(rebuild::Planned::Rebuild(plan)) =
            rebuild::plan(policy, id, &node.raw, &decision, &d.raw)
        {
            out.extend(plan.sources);
        }
    }
    out
}

/// Fetches one source into `sources/` of the bundle. A 404 (a template absent at that
/// revision) is recorded as absent (`None`): the verifier fails the link. An unreachable host
/// is an infrastructure error.
async fn fetch_source(
    queue: &QueueClient,
    dir: &Path,
    req: rebuild::SourceRequest,
) -> Result<Option<SourceEntry>, EvidenceError> {
    let bytes = match queue.get_source(&req.url, rebuild::MAX_SOURCE_BYTES).await {
        Ok(b) => b,
        Err(e) if is_absent(&e) => return Ok(None),
        Err(QueueError::ResponseTooLarge { .. }) => return Ok(None),
        Err(e) => {
            return Err(EvidenceError::Source {
                url: rebuild::shown_url(&req.url),
                source: Box::new(e),
            });
        }
    };
    let sha256 = crate::trust::sha256_hex(&bytes);
    let file = format!(
        "{SOURCES_DIR}/{}",
        crate::trust::sha256_hex(req.url.as_bytes())
    );
    let sources = dir.join(SOURCES_DIR);
    std::fs::create_dir_all(&sources).map_err(io_err(&sources))?;
    let path = dir.join(&file);
    std::fs::write(&path, &bytes).map_err(io_err(&path))?;
    Ok(Some(SourceEntry {
        kind: req.kind,
        url: req.url,
        repository: req.repository,
        revision: req.revision,
        sha256,
        size: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
        file,
    }))
}

fn prepare_empty_dir(dir: &Path) -> Result<(), EvidenceError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(EvidenceError::BundleDir {
                    path: dir.to_owned(),
                    detail: "directory is not empty".into(),
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(io_err(dir))
        }
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// Copies the verified files from the bundle to `cot_dir/<taskId>/<path>`, re-hashing each
/// copy against the verified sha256, and writes `cot_dir/manifest.json`. `cot_dir` must not
/// exist yet or be empty; no symlink is followed or created.
pub fn materialize(
    bundle_root: &Path,
    verified: &VerifiedChain,
    cot_dir: &Path,
) -> Result<VerifiedManifest, EvidenceError> {
    prepare_empty_dir(cot_dir)?;
    let mut artifacts = Vec::new();
    for f in verified.files() {
        let rel = Bundle::artifact_rel_path(&f.task_id, &f.path);
        let src = open_no_symlinks(bundle_root, &rel)
            .map_err(|e| EvidenceError::BundleDir {
                path: bundle_root.join(&rel),
                detail: e.detail,
            })?
            .ok_or_else(|| EvidenceError::BundleDir {
                path: bundle_root.join(&rel),
                detail: "verified file disappeared".into(),
            })?;
        let dest_rel = Path::new(f.task_id.as_str()).join(f.path.to_relative_path());
        let dest = create_file_below(cot_dir, &dest_rel)?;
        let copied = copy_hashing(src, dest, &cot_dir.join(&dest_rel))?;
        if copied.sha256 != f.sha256 {
            return Err(EvidenceError::ChangedAfterVerification {
                path: cot_dir.join(&dest_rel),
                expected: f.sha256.clone(),
                actual: copied.sha256,
            });
        }
        artifacts.push(VerifiedArtifact {
            task_id: f.task_id.clone(),
            task_kind: f.kind,
            path: f.path.to_string(),
            sha256: f.sha256.clone(),
            size: copied.size,
        });
    }
    let manifest = VerifiedManifest {
        version: MANIFEST_VERSION,
        artifacts,
    };
    let path = cot_dir.join(MANIFEST_FILE);
    let bytes = serde_json::to_vec_pretty(&manifest).expect("the manifest always serialises");
    std::fs::write(&path, bytes).map_err(io_err(&path))?;
    Ok(manifest)
}

/// Creates `root/rel` (new file, parents as needed), refusing existing symlinks on the way.
fn create_file_below(root: &Path, rel: &Path) -> Result<std::fs::File, EvidenceError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(part) = c else {
            return Err(EvidenceError::BundleDir {
                path: root.join(rel),
                detail: "not a plain relative path".into(),
            });
        };
        cur.push(part);
        if i + 1 == comps.len() {
            break;
        }
        match std::fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() || !m.is_dir() => {
                return Err(EvidenceError::BundleDir {
                    path: cur.clone(),
                    detail: "exists and is not a plain directory".into(),
                });
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&cur).map_err(io_err(&cur))?;
            }
            Err(e) => return Err(io_err(&cur)(e)),
        }
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&cur)
        .map_err(io_err(&cur))
}

fn copy_hashing(
    src: std::fs::File,
    mut dest: std::fs::File,
    dest_path: &Path,
) -> Result<verify::FileDigest, EvidenceError> {
    use std::io::Write as _;
    // Tee: hash what is written, in one streaming pass.
    struct Tee<'a, R> {
        inner: R,
        out: &'a mut std::fs::File,
        err: Option<std::io::Error>,
    }
    impl<R: std::io::Read> std::io::Read for Tee<'_, R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            if let Err(e) = self.out.write_all(buf.get(..n).unwrap_or_default()) {
                self.err = Some(e);
                return Err(std::io::Error::other("write failed"));
            }
            Ok(n)
        }
    }
    let mut tee = Tee {
        inner: src,
        out: &mut dest,
        err: None,
    };
    let digest = hash_reader(&mut tee, u64::MAX - 1);
    if let Some(e) = tee.err.take() {
        return Err(io_err(dest_path)(e));
    }
    let digest = digest.map_err(|e| EvidenceError::BundleDir {
        path: dest_path.to_owned(),
        detail: e.detail,
    })?;
    // No fsync: these copies live for one run and are deleted with it; after a crash the
    // task is rerun and everything is fetched again.
    Ok(digest)
}

/// The worker's entry point: fetch the evidence of `task_id`'s chain (the task itself is the
/// claimed `task_def`), verify it at `now`, and on success place the verified upstream files
/// under `cot_dir/<taskId>/<path>` with `cot_dir/manifest.json`.
///
/// The evidence is staged in a private temporary directory next to `cot_dir` and removed
/// afterwards; the script only ever sees the verified copies.
#[allow(clippy::too_many_arguments)]
pub async fn fetch_and_verify(
    queue: &QueueClient,
    task_id: &TaskId,
    task_def: &Value,
    cot_dir: &Path,
    policy: &ChainPolicy,
    trust: &TrustStore,
    now: DateTime<Utc>,
    limits: &Limits,
    renderer: &dyn rebuild::Render,
) -> Result<VerifiedChain, ChainFailure> {
    let staging_parent = cot_dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".chainlock-evidence-")
        .tempdir_in(staging_parent)
        .map_err(|e| ChainFailure::Local(io_err(staging_parent)(e)))?;
    let bundle_dir = staging.path().join("bundle");
    fetch_bundle(
        queue,
        task_id,
        Some(task_def),
        &bundle_dir,
        limits,
        false,
        Some(policy),
        Some(policy),
    )
    .await
    .map_err(|e| match e {
        EvidenceError::Queue { .. } | EvidenceError::Source { .. } => {
            ChainFailure::Infrastructure(e)
        }
        other => ChainFailure::Local(other),
    })?;
    // Fetched just now from the policy's URLs: its sources are bound to what those URLs serve.
    let bundle = Bundle::open_fetched(&bundle_dir, limits)
        .map_err(|e| ChainFailure::Local(EvidenceError::Bundle(e)))?;
    let verified = verify::verify(
        &bundle,
        task_id,
        policy,
        trust,
        now,
        limits,
        Mode {
            check_target: false,
            renderer,
        },
    )
    .map_err(ChainFailure::Verification)?;
    materialize(&bundle_dir, &verified, cot_dir).map_err(ChainFailure::Local)?;
    Ok(verified)
}
