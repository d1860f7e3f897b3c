//! Chain-of-trust verification: the pure judge.
//!
//! Why it exists: before chainlock runs its script, everything upstream of the task (the
//! decision task, the builds whose artifacts it consumes, the docker images those ran in) must
//! be proven to be what a trusted repository asked for, run by trusted workers. This module
//! takes the evidence ([`Evidence`]: task definitions, run statuses, chain-of-trust documents,
//! signatures and consumed artifacts), the auditor's [`ChainPolicy`], the [`TrustStore`] and a
//! reference time, and returns either a [`VerifiedChain`] or a [`Report`] of every failure.
//!
//! What it must not do: touch the network, write files or read the clock. It reads evidence
//! through [`Evidence`] only (a bundle directory on disk is one implementation: reading files to
//! hash them is the only IO). The worker, `chainlock verify TASK_ID` and
//! `chainlock verify --bundle DIR` all run [`verify`]; the fetching lives in `crate::evidence`.
//!
//! The evidence is untrusted: the chain is re-derived here from the task definitions, never
//! taken from a list handed over with the evidence, and every piece is bound to the others
//! (document to run, document to task definition, artifact to the signed hash).
//!
//! Checks, in the order of the project brief (each failure names its check in the report):
//! 1. run: the latest run completed; the document's taskId, runId, workerType, worker and
//!    embedded task match the queue's data for that run;
//! 2. schema: the document validates against the cot-v1 schema (`cot::parse_and_validate`);
//! 3. signature: the trust store accepts the signature for the link's worker implementation
//!    (from the policy, never from the task);
//! 4. artifacts: every consumed artifact is listed in its task's document and hashes to it;
//! 5. task-graph: decision/action tasks are on decision queues and their task-graph.json
//!    describes every task they created;
//! 6. interactive: no interactive task anywhere;
//! 7. docker-image: images trace to a docker-image link, or are allowed prebuilt images;
//! 8. source-and-scopes: repositories agree; restricted scopes only from allowed sources.

pub mod bundle;
pub mod chain;
pub mod error;
pub mod graph;

pub mod rebuild;
pub mod report;
pub mod source;

pub use crate::artifact_path::{ArtifactPath, UnsafePathReason};
pub use error::{Check, VerifyError};
pub use report::Report;

use crate::chain_policy::{ChainPolicy, LinkKind, QueueRole, SignatureFormat};
use crate::cot::{self, CotDocument};
use crate::ids::TaskId;
use crate::queue::types::{TaskState, TaskStatus};
use crate::trust::{CotSignature, TrustStore};
use chain::{Chain, ImageSpec, LinkRole, Node};
use chrono::{DateTime, Duration, Utc};
use error::clip;
use report::{CheckReport, CheckStatus, EdgeReport, Finding, LinkReport};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Caps and tolerances of verification. Documented defaults via [`Limits::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deepest link, counted from the target (default 20, as the reference).
    pub max_depth: usize,
    /// Most tasks in one chain (default 500).
    pub max_links: usize,
    /// Most upstream artifact paths one task may list (default 1000).
    pub max_upstream_artifacts: usize,
    /// Largest chain-of-trust document (default 8 MiB).
    pub max_document_bytes: u64,
    /// Largest `task.json` or `status.json` (default 4 MiB; a definition is parsed in memory
    /// and the queue itself refuses far smaller ones).
    pub max_task_bytes: u64,
    /// Largest signature file (default 64 KiB).
    pub max_signature_bytes: u64,
    /// Largest task-graph.json (default 256 MiB; it is parsed in memory).
    pub max_task_graph_bytes: u64,
    /// Largest consumed artifact (default 16 GiB; streamed, never held in memory).
    pub max_artifact_bytes: u64,
    /// Most requests in flight while fetching evidence (default 32: a whole level of a
    /// realistic chain at once, bounded so a huge chain cannot open hundreds of connections).
    pub max_concurrent_fetches: usize,
    /// How far an OpenPGP signature may be dated after the run's resolution (default 5 min).
    pub max_signature_skew: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 20,
            max_links: 500,
            max_upstream_artifacts: 1000,
            max_document_bytes: 8 * 1024 * 1024,
            max_task_bytes: 4 * 1024 * 1024,
            max_signature_bytes: 64 * 1024,
            max_task_graph_bytes: 256 * 1024 * 1024,
            max_artifact_bytes: 16 * 1024 * 1024 * 1024,
            max_concurrent_fetches: 32,
            max_signature_skew: Duration::minutes(5),
        }
    }
}

/// A file's digest as read from the evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Why a piece of evidence could not be read (distinct from "absent").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct EvidenceReadError {
    /// What went wrong (IO error, too large, symlink).
    pub detail: String,
    /// `Some(limit)` when the evidence is larger than `limit` bytes (as stored, or refused as
    /// such by the fetcher): a verification failure of its own,
    /// [`VerifyError::EvidenceTooLarge`].
    pub too_large: Option<u64>,
}

impl EvidenceReadError {
    /// The finding for this failure: [`VerifyError::EvidenceTooLarge`] (naming `limit`, the
    /// [`Limits`] field) when a size limit refused the evidence, else `other(detail)`.
    fn finding(
        self,
        task_id: &TaskId,
        artifact: &str,
        limit: &'static str,
        check: Check,
        other: impl FnOnce(String) -> VerifyError,
    ) -> VerifyError {
        match self.too_large {
            Some(max_bytes) => VerifyError::EvidenceTooLarge {
                task_id: task_id.clone(),
                artifact: clip(artifact),
                limit,
                max_bytes,
                check,
            },
            None => other(self.detail),
        }
    }
}

/// Read access to the evidence of a chain. Everything returned is untrusted.
pub trait Evidence {
    /// The raw task definition, if the evidence has it.
    fn task(&self, task_id: &TaskId) -> Option<&Value>;
    /// The task's status (all runs), if the evidence has it.
    fn status(&self, task_id: &TaskId) -> Option<&TaskStatus>;
    /// An artifact's bytes (`Ok(None)` when absent), refusing more than `max` bytes.
    fn read(
        &self,
        task_id: &TaskId,
        name: &ArtifactPath,
        max: u64,
    ) -> Result<Option<Vec<u8>>, EvidenceReadError>;
    /// Task files the evidence holds but that cannot be used (not strict JSON, too large):
    /// each becomes one finding, and the task counts as present (no second "missing" finding).
    fn unusable(&self) -> Vec<UnusableFile> {
        Vec::new()
    }
    /// A rebuild source (`.taskcluster.yml`, pushlog, API answer) by URL (`Ok(None)` when
    /// the evidence does not have it).
    fn source(
        &self,
        _request: &rebuild::SourceRequest,
    ) -> Result<Option<rebuild::SourceFile>, EvidenceReadError> {
        Ok(None)
    }
    /// An artifact's sha256 and size, streamed (`Ok(None)` when absent).
    fn digest(
        &self,
        task_id: &TaskId,
        name: &ArtifactPath,
        max: u64,
    ) -> Result<Option<FileDigest>, EvidenceReadError>;
}

/// A task file (`task.json` or `status.json`) the evidence has but the verifier cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnusableFile {
    /// The task it belongs to.
    pub task_id: TaskId,
    /// [`TASK_FILE`] or [`STATUS_FILE`].
    pub file: &'static str,
    /// What is wrong with it.
    pub problem: Unusable,
}

/// What is wrong with an [`UnusableFile`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    /// Not strict JSON, or not the expected shape: the parser's message.
    Malformed(String),
    /// Larger than [`Limits::max_task_bytes`] (the value recorded is the limit applied).
    TooLarge(u64),
}

impl UnusableFile {
    fn finding(&self, check: Check) -> VerifyError {
        match &self.problem {
            Unusable::Malformed(detail) => VerifyError::EvidenceMalformed {
                path: format!("{}/{}", self.task_id, self.file),
                detail: clip(detail),
                check,
            },
            Unusable::TooLarge(max_bytes) => VerifyError::EvidenceTooLarge {
                task_id: self.task_id.clone(),
                artifact: self.file.to_owned(),
                limit: "max_task_bytes",
                max_bytes: *max_bytes,
                check,
            },
        }
    }
}

/// A task's definition in the evidence.
pub const TASK_FILE: &str = "task.json";
/// A task's status in the evidence.
pub const STATUS_FILE: &str = "status.json";

/// How the target task is treated, and how json-e runs.
#[derive(Clone, Copy)]
pub struct Mode<'r> {
    /// Also verify the target's own run, document and signature (auditing a finished task).
    /// Off in the worker, where the target is the task about to run.
    pub check_target: bool,
    /// Renders `.taskcluster.yml` for check 9 (bounded: `crate::jsone::Sandboxed`).
    pub renderer: &'r dyn rebuild::Render,
}

impl std::fmt::Debug for Mode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mode")
            .field("check_target", &self.check_target)
            .finish_non_exhaustive()
    }
}

/// One upstream artifact that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedFile {
    /// The task that produced it.
    pub task_id: TaskId,
    /// What the producing task is, from the chain policy (keyed by the queue the queue service
    /// recorded for it), never from the consuming task's payload.
    pub kind: LinkKind,
    /// Its name.
    pub path: ArtifactPath,
    /// The signed, matching sha256.
    pub sha256: String,
    /// Its size.
    pub size: u64,
}

/// Proof that a task's chain of trust verified. Only [`verify`] constructs it; the worker
/// requires it to launch the script.
#[derive(Debug, Clone)]
pub struct VerifiedChain {
    target: TaskId,
    files: Vec<VerifiedFile>,
    report: Report,
}

impl VerifiedChain {
    /// The task whose chain this is.
    pub fn target(&self) -> &TaskId {
        &self.target
    }

    /// The verified upstream artifacts (what the script may consume).
    pub fn files(&self) -> &[VerifiedFile] {
        &self.files
    }

    /// The audit report (all checks passed).
    pub fn report(&self) -> &Report {
        &self.report
    }
}

struct LinkState<'a> {
    role: Option<QueueRole<'a>>,
    errors: Vec<VerifyError>,
    skipped: BTreeMap<Check, String>,
    doc: Option<CotDocument>,
    signer: Option<String>,
    signature_artifact: Option<&'static str>,
    caveats: Vec<String>,
    /// Checks that passed only with a caveat (shown as `caveat`, with the note).
    caveated: BTreeMap<Check, String>,
}

/// Judges the chain of `target` from `evidence`, at `now`.
pub fn verify(
    evidence: &dyn Evidence,
    target: &TaskId,
    policy: &ChainPolicy,
    trust: &TrustStore,
    now: DateTime<Utc>,
    limits: &Limits,
    mode: Mode<'_>,
) -> Result<VerifiedChain, Box<Report>> {
    let chain = chain::build(target, &|id| evidence.task(id), limits);
    let mut chain_errors = chain.errors.clone();
    let unusable = evidence.unusable();
    // A status belongs to its link's run check (see `check_document`).
    for u in unusable.iter().filter(|u| u.file == TASK_FILE) {
        chain_errors.push(u.finding(Check::Chain));
    }
    // One finding per fact: a definition that is present but unusable is not also "missing".
    let unusable_file =
        |id: &TaskId, file: &str| unusable.iter().any(|u| &u.task_id == id && u.file == file);
    for missing in &chain.unresolved {
        if !unusable_file(missing, TASK_FILE) {
            chain_errors.push(VerifyError::MissingTask {
                task_id: missing.clone(),
            });
        }
    }

    let mut states: BTreeMap<TaskId, LinkState<'_>> = BTreeMap::new();
    for (id, node) in &chain.nodes {
        let mut st = LinkState {
            role: None,
            errors: node.errors.clone(),
            skipped: BTreeMap::new(),
            doc: None,
            signer: None,
            signature_artifact: None,
            caveats: Vec::new(),
            caveated: BTreeMap::new(),
        };
        // One queue identity: an explicit taskQueueId must name the provisionerId/workerType
        // pair, or the policy role would depend on which of the two is read.
        if let Some(def) = &node.def
            && let Some(q) = &def.task_queue_id
            && *q != format!("{}/{}", def.provisioner_id, def.worker_type)
        {
            st.errors.push(VerifyError::QueueIdentityMismatch {
                task_id: id.clone(),
                place: "task definition",
                task_queue_id: clip(q),
                provisioner_worker: clip(&format!("{}/{}", def.provisioner_id, def.worker_type)),
            });
        }
        if let Some(q) = node.task_queue_id() {
            st.role = policy.queue(&q);
            if st.role.is_none() {
                st.errors.push(VerifyError::UnknownQueue {
                    task_id: id.clone(),
                    task_queue_id: clip(&q),
                });
            }
        }
        if node.parent.is_none()
            && let Some(role) = &st.role
            && !role.kind.is_graph_creator()
        {
            st.errors.push(VerifyError::NoDecisionRoot {
                task_id: id.clone(),
                kind: role.kind.to_string(),
            });
        }
        // A decision task roots its own group; one that names a parent is a child relabelling
        // itself (action tasks name their decision task through extra.parent, legitimately).
        if let (Some(parent), Some(role)) = (&node.parent, &st.role)
            && role.kind == LinkKind::Decision
        {
            st.errors.push(VerifyError::GraphCreatorNotRoot {
                task_id: id.clone(),
                kind: role.kind.to_string(),
                parent: parent.clone(),
            });
        }
        states.insert(id.clone(), st);
    }

    // Checks 1-3: run, schema, signature.
    for (id, node) in &chain.nodes {
        let Some(st) = states.get_mut(id) else {
            continue;
        };
        if id == target && !mode.check_target {
            for c in [Check::Run, Check::Schema, Check::Signature] {
                st.skipped
                    .insert(c, "the task under verification has no document yet".into());
            }
            continue;
        }
        check_document(evidence, node, st, trust, now, limits);
    }

    // Check 4: consumed artifacts.
    let mut files = Vec::new();
    check_artifacts(evidence, &chain, &mut states, limits, &mut files);

    // Check 5: decision and action tasks, task graphs.
    check_graphs(evidence, &chain, &mut states, limits);

    // Restricted scopes decide checks 7 and 8: every scope of every link that can reach a
    // restricted rule (wildcards and `assume:` included), each with the rules it reaches.
    let mut restricted: Vec<(String, &crate::chain_policy::RestrictedScope)> = Vec::new();
    for node in chain.nodes.values() {
        for scope in node.def.iter().flat_map(|d| &d.scopes) {
            for rule in policy.restricted_rules_for(scope) {
                if !restricted.iter().any(|(s, r)| s == scope && *r == rule) {
                    restricted.push((scope.clone(), rule));
                }
            }
        }
    }

    for (id, node) in &chain.nodes {
        // Check 6.
        let interactive = interactive_indicators(&node.raw);
        // Check 7.
        let docker = check_image(node, &states, policy, !restricted.is_empty());
        if let Some(st) = states.get_mut(id) {
            st.errors.extend(
                interactive
                    .into_iter()
                    .map(|indicator| VerifyError::Interactive {
                        task_id: id.clone(),
                        indicator,
                    }),
            );
            st.errors.extend(docker);
        }
    }

    // Check 8.
    check_sources(&chain, &mut states, policy, &restricted);

    // Check 9.
    check_rebuilds(evidence, &chain, &mut states, policy, mode.renderer);

    // Assemble the report.
    let mut links = Vec::new();
    let mut all_errors = chain_errors.clone();
    for id in &chain.order {
        let (Some(node), Some(st)) = (chain.nodes.get(id), states.get(id)) else {
            continue;
        };
        all_errors.extend(st.errors.iter().cloned());
        links.push(link_report(node, st, id == target));
    }
    let report = Report {
        report_version: report::REPORT_VERSION,
        target: target.clone(),
        verified: all_errors.is_empty(),
        reference_time: crate::queue::types::format_time(now),
        chain_findings: chain_errors.iter().map(Finding::from).collect(),
        links,
        errors: all_errors,
    };
    if report.verified {
        Ok(VerifiedChain {
            target: target.clone(),
            files,
            report,
        })
    } else {
        Err(Box::new(report))
    }
}

fn link_report(node: &Node, st: &LinkState<'_>, is_target: bool) -> LinkReport {
    let checks = Check::ALL
        .iter()
        .map(|&check| {
            let findings: Vec<Finding> = st
                .errors
                .iter()
                .filter(|e| e.check() == check)
                .map(Finding::from)
                .collect();
            let (status, note) = if !findings.is_empty() {
                (CheckStatus::Fail, None)
            } else if let Some(n) = st.caveated.get(&check) {
                (CheckStatus::Caveat, Some(n.clone()))
            } else if let Some(n) = st.skipped.get(&check) {
                (CheckStatus::Skipped, Some(n.clone()))
            } else {
                (CheckStatus::Pass, None)
            };
            CheckReport {
                check,
                status,
                note,
                findings,
            }
        })
        .collect();
    LinkReport {
        task_id: node.task_id.clone(),
        is_target,
        depth: node.depth,
        name: node
            .raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(clip),
        task_queue_id: node.task_queue_id().map(|q| clip(&q)),
        worker_implementation: st.role.as_ref().map(|r| r.worker_impl.to_owned()),
        kind: st.role.as_ref().map(|r| r.kind.to_string()),
        signer: st.signer.clone(),
        signature_artifact: st.signature_artifact.map(str::to_owned),
        caveats: st.caveats.clone(),
        links: node
            .edges
            .iter()
            .map(|e| EdgeReport {
                task_id: e.to.clone(),
                role: e.role.describe(),
            })
            .collect(),
        checks,
    }
}

fn document_path() -> ArtifactPath {
    ArtifactPath::parse(chain::COT_DOCUMENT).expect("a constant, valid artifact name")
}

/// Checks 1-3 for one link.
fn check_document(
    evidence: &dyn Evidence,
    node: &Node,
    st: &mut LinkState<'_>,
    trust: &TrustStore,
    now: DateTime<Utc>,
    limits: &Limits,
) {
    let id = &node.task_id;
    // 1. The latest run completed, and the status agrees with the definition.
    let status = evidence.status(id);
    let latest = match status {
        None => match evidence
            .unusable()
            .into_iter()
            .find(|u| &u.task_id == id && u.file == STATUS_FILE)
        {
            // An unusable status.json has its own finding (one per fact).
            Some(u) => {
                st.errors.push(u.finding(Check::Run));
                None
            }
            None => {
                st.errors.push(VerifyError::StatusMissing {
                    task_id: id.clone(),
                });
                None
            }
        },
        Some(s) => {
            let (latest, errors) = check_status(id, node, s);
            st.errors.extend(errors);
            latest
        }
    };

    let doc_bytes = match evidence.read(id, &document_path(), limits.max_document_bytes) {
        Ok(Some(b)) => b,
        Ok(None) => {
            st.errors.push(VerifyError::DocumentMissing {
                task_id: id.clone(),
                artifact: chain::COT_DOCUMENT.into(),
            });
            skip_after_document(st);
            return;
        }
        Err(e) => {
            let finding = e.finding(
                id,
                chain::COT_DOCUMENT,
                "max_document_bytes",
                Check::Schema,
                |detail| VerifyError::DocumentInvalid {
                    task_id: id.clone(),
                    detail,
                },
            );
            st.errors.push(finding);
            skip_after_document(st);
            return;
        }
    };

    // 3. The signature, over the exact downloaded bytes, before anything reads them.
    let Some(role) = st.role.clone() else {
        st.skipped.insert(
            Check::Signature,
            "the link's queue is not in the policy".into(),
        );
        st.skipped
            .insert(Check::Schema, "the signature could not be checked".into());
        return;
    };
    // The policy may accept several formats: the first (in the policy's order) whose artifact
    // the link has is the one checked. A present signature that cannot be read or does not
    // verify fails the link; the next format is never tried as a fallback.
    let mut present = None;
    for &format in role.signature {
        let sig_name = format.artifact_name();
        let sig_path = ArtifactPath::parse(sig_name).expect("a constant, valid artifact name");
        match evidence.read(id, &sig_path, limits.max_signature_bytes) {
            Ok(Some(b)) => {
                present = Some(Ok((format, b)));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                present = Some(Err((sig_name, e)));
                break;
            }
        }
    }
    let (format, sig_bytes) = match present {
        Some(Ok(found)) => found,
        None => {
            let names: Vec<&str> = role.signature.iter().map(|f| f.artifact_name()).collect();
            st.errors.push(VerifyError::SignatureMissing {
                task_id: id.clone(),
                artifact: names.join(" or "),
            });
            st.skipped
                .insert(Check::Schema, "the signature could not be checked".into());
            return;
        }
        Some(Err((sig_name, e))) => {
            let finding = e.finding(
                id,
                sig_name,
                "max_signature_bytes",
                Check::Signature,
                |detail| VerifyError::SignatureRejected {
                    task_id: id.clone(),
                    worker_impl: role.worker_impl.to_owned(),
                    detail,
                },
            );
            st.errors.push(finding);
            st.skipped
                .insert(Check::Schema, "the signature could not be checked".into());
            return;
        }
    };
    // ed25519 signatures carry no time: judge them at the run's resolution, never later than
    // the reference time (a resolution "in the future" is not believed).
    let observed_at = latest.and_then(|r| r.resolved).map_or(now, |t| t.min(now));
    st.signature_artifact = Some(format.artifact_name());
    let sig = match format {
        SignatureFormat::Openpgp => CotSignature::OpenPgpArmored(&sig_bytes),
        SignatureFormat::Ed25519 => CotSignature::Ed25519Raw(&sig_bytes),
    };
    match trust.verify_cot_signature(
        role.worker_impl,
        &doc_bytes,
        sig,
        observed_at,
        limits.max_signature_skew,
    ) {
        Ok(accepted) => {
            st.signer = Some(format!(
                "{} ({}, trust policy v{})",
                accepted.key_name, accepted.key_id, accepted.policy_version
            ));
            if accepted.key_retired_at <= now {
                st.caveats.push(format!(
                    "key {} was retired at {}; the signature's date ({}) is its holder's claim: \
                     offline evidence cannot rule out that it was made later and backdated \
                     (bounded below by the task's creation and the run's start)",
                    accepted.key_name,
                    crate::queue::types::format_time(accepted.key_retired_at),
                    crate::queue::types::format_time(accepted.signed_at)
                ));
            }
            // A document cannot be signed before the task it describes existed, nor before
            // its run started: a retired key's holder cannot backdate past these.
            let bounds = [
                ("task's created time", node.def.as_ref().map(|d| d.created)),
                ("run's start", latest.and_then(|r| r.started)),
            ];
            for (what, bound) in bounds {
                if let Some(bound) = bound
                    && accepted
                        .signed_at
                        .checked_add_signed(limits.max_signature_skew)
                        .is_none_or(|t| t < bound)
                {
                    st.errors.push(VerifyError::SignatureTooEarly {
                        task_id: id.clone(),
                        signed_at: crate::queue::types::format_time(accepted.signed_at),
                        what,
                        bound: crate::queue::types::format_time(bound),
                    });
                }
            }
        }
        Err(e) => {
            st.errors.push(VerifyError::SignatureRejected {
                task_id: id.clone(),
                worker_impl: role.worker_impl.to_owned(),
                detail: e.to_string(),
            });
            st.skipped
                .insert(Check::Schema, "the signature did not verify".into());
            return;
        }
    }

    // 2. The schema.
    let doc = match cot::parse_and_validate(&doc_bytes) {
        Ok(d) => d,
        Err(e) => {
            st.errors.push(VerifyError::DocumentInvalid {
                task_id: id.clone(),
                detail: clip(&e.to_string()),
            });
            return;
        }
    };

    // 1. The document is about this task's latest run, as the queue knows it.
    let mismatch = |field: &str, expected: String, actual: String| VerifyError::DocumentMismatch {
        task_id: id.clone(),
        field: field.into(),
        expected: clip(&expected),
        actual: clip(&actual),
    };
    if &doc.task_id != id {
        st.errors
            .push(mismatch("taskId", id.to_string(), doc.task_id.to_string()));
    }
    if let Some(run) = latest {
        if doc.run_id != run.run_id {
            st.errors.push(mismatch(
                "runId",
                run.run_id.to_string(),
                doc.run_id.to_string(),
            ));
        }
        if let Some(wg) = &run.worker_group
            && wg != &doc.worker_group
        {
            st.errors.push(mismatch(
                "workerGroup",
                wg.clone(),
                doc.worker_group.clone(),
            ));
        }
        if let Some(wid) = &run.worker_id
            && wid != &doc.worker_id
        {
            st.errors
                .push(mismatch("workerId", wid.clone(), doc.worker_id.clone()));
        }
    }
    if let Some(def) = &node.def {
        if let Some(wt) = &doc.worker_type
            && wt != &def.worker_type
        {
            st.errors
                .push(mismatch("workerType", def.worker_type.clone(), wt.clone()));
        }
        if doc.task_worker_type() != Some(def.worker_type.as_str()) {
            st.errors.push(mismatch(
                "task.workerType",
                def.worker_type.clone(),
                doc.task_worker_type().unwrap_or("absent").to_owned(),
            ));
        }
    }
    if doc.task != node.raw {
        st.errors.push(mismatch(
            "task",
            "the queue's task definition".into(),
            "a different definition".into(),
        ));
    }
    st.doc = Some(doc);
}

/// Check 1 on `status.json`: it is this task's status (taskId, taskGroupId, queue identity,
/// schedulerId and projectId agree with the definition), its runs are numbered 0..n, the latest
/// (highest runId) completed, the task as a whole is completed, and the latest run's times are
/// ordered. Returns the latest run.
fn check_status<'s>(
    id: &TaskId,
    node: &Node,
    status: &'s TaskStatus,
) -> (Option<&'s crate::queue::types::RunStatus>, Vec<VerifyError>) {
    let mut errors = Vec::new();
    let mut mismatch = |field: &'static str, expected: &str, actual: &str| {
        if expected != actual {
            errors.push(VerifyError::StatusMismatch {
                task_id: id.clone(),
                field,
                expected: clip(expected),
                actual: clip(actual),
            });
        }
    };
    mismatch("taskId", id.as_str(), status.task_id.as_str());
    let pair = format!("{}/{}", status.provisioner_id, status.worker_type);
    if let Some(def) = &node.def {
        mismatch(
            "taskGroupId",
            def.task_group_id.as_str(),
            status.task_group_id.as_str(),
        );
        mismatch(
            "provisionerId/workerType",
            &format!("{}/{}", def.provisioner_id, def.worker_type),
            &pair,
        );
        for (field, d, s) in [
            ("schedulerId", &def.scheduler_id, &status.scheduler_id),
            ("projectId", &def.project_id, &status.project_id),
        ] {
            if let (Some(d), Some(s)) = (d, s) {
                mismatch(field, d, s);
            }
        }
    }
    if let Some(q) = &status.task_queue_id
        && *q != pair
    {
        errors.push(VerifyError::QueueIdentityMismatch {
            task_id: id.clone(),
            place: "status",
            task_queue_id: clip(q),
            provisioner_worker: clip(&pair),
        });
    }
    for (i, run) in status.runs.iter().enumerate() {
        if usize::try_from(run.run_id).ok() != Some(i) {
            errors.push(VerifyError::RunsInvalid {
                task_id: id.clone(),
                detail: format!("run at position {i} has runId {}", run.run_id),
            });
            break;
        }
    }
    let latest = status.runs.iter().max_by_key(|r| r.run_id);
    match latest {
        None => errors.push(VerifyError::RunNotCompleted {
            task_id: id.clone(),
            run_id: None,
            state: state_name(status.state),
        }),
        Some(run) if run.state != TaskState::Completed => {
            errors.push(VerifyError::RunNotCompleted {
                task_id: id.clone(),
                run_id: Some(run.run_id),
                state: state_name(run.state),
            })
        }
        Some(run) => {
            if status.state != TaskState::Completed {
                errors.push(VerifyError::RunNotCompleted {
                    task_id: id.clone(),
                    run_id: Some(run.run_id),
                    state: format!("completed, but the task is {}", state_name(status.state)),
                });
            }
            let ordered = match (run.started, run.resolved) {
                (Some(started), Some(resolved)) => run.scheduled <= started && started <= resolved,
                _ => false,
            };
            if !ordered {
                errors.push(VerifyError::RunsInvalid {
                    task_id: id.clone(),
                    detail: format!(
                        "latest run {} must have scheduled <= started <= resolved",
                        run.run_id
                    ),
                });
            }
        }
    }
    (latest, errors)
}

/// The queue's spelling of a state (`completed`, `exception`).
fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

fn skip_after_document(st: &mut LinkState<'_>) {
    st.skipped
        .insert(Check::Signature, "no document to check".into());
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

struct Consumption {
    consumer: TaskId,
    upstream: TaskId,
    path: String,
    optional: bool,
    download: bool,
}

/// Check 4.
fn check_artifacts(
    evidence: &dyn Evidence,
    chain: &Chain,
    states: &mut BTreeMap<TaskId, LinkState<'_>>,
    limits: &Limits,
    files: &mut Vec<VerifiedFile>,
) {
    let mut uses = Vec::new();
    for (id, node) in &chain.nodes {
        for edge in &node.edges {
            if let LinkRole::UpstreamArtifacts { paths, optional } = &edge.role {
                for p in paths {
                    uses.push(Consumption {
                        consumer: id.clone(),
                        upstream: edge.to.clone(),
                        path: p.clone(),
                        optional: *optional,
                        // Only the target's inputs are handed to our script; intermediate
                        // links' inputs were verified by the workers that consumed them, so
                        // here they must only be listed.
                        download: id == &chain.target,
                    });
                }
            }
        }
        if chain.is_parent(id) {
            uses.push(Consumption {
                consumer: id.clone(),
                upstream: id.clone(),
                path: chain::TASK_GRAPH.into(),
                optional: false,
                download: true,
            });
        }
    }
    let mut seen = BTreeSet::new();
    for u in uses {
        let path = match ArtifactPath::parse(&u.path) {
            Ok(p) => p,
            Err(reason) => {
                if let Some(st) = states.get_mut(&u.consumer) {
                    st.errors.push(VerifyError::UnsafePath {
                        task_id: u.upstream.clone(),
                        path: clip(&u.path),
                        reason,
                    });
                }
                continue;
            }
        };
        if !seen.insert((u.upstream.clone(), path.clone(), u.download)) {
            continue;
        }
        let Some(st) = states.get_mut(&u.upstream) else {
            continue; // missing task: reported by the chain check
        };
        let Some(doc) = &st.doc else {
            if u.upstream != chain.target {
                st.skipped.insert(
                    Check::Artifacts,
                    "no verified document to check artifacts against".into(),
                );
            }
            continue;
        };
        let Some(expected) = doc.artifacts.get(path.as_str()).cloned() else {
            if !u.optional {
                st.errors.push(VerifyError::ArtifactNotInDocument {
                    task_id: u.upstream.clone(),
                    path: path.to_string(),
                });
            }
            continue;
        };
        if !is_sha256_hex(&expected) {
            st.errors.push(VerifyError::ArtifactHashInvalid {
                task_id: u.upstream.clone(),
                path: path.to_string(),
            });
            continue;
        }
        if !u.download {
            continue;
        }
        // A document is only accepted (check 3) for a link whose queue the policy names, so
        // the kind is known here; a link without one already carries an UnknownQueue error.
        let Some(kind) = st.role.as_ref().map(|r| r.kind) else {
            continue;
        };
        match evidence.digest(&u.upstream, &path, limits.max_artifact_bytes) {
            Ok(Some(d)) if d.sha256 == expected => files.push(VerifiedFile {
                task_id: u.upstream.clone(),
                kind,
                path,
                sha256: d.sha256,
                size: d.size,
            }),
            Ok(Some(d)) => st.errors.push(VerifyError::HashMismatch {
                task_id: u.upstream.clone(),
                path: path.to_string(),
                expected,
                actual: d.sha256,
            }),
            Ok(None) => st.errors.push(VerifyError::ArtifactMissing {
                task_id: u.upstream.clone(),
                path: path.to_string(),
            }),
            Err(e) => {
                let limit = if path.as_str() == chain::TASK_GRAPH {
                    "max_task_graph_bytes"
                } else {
                    "max_artifact_bytes"
                };
                let finding = e.finding(
                    &u.upstream,
                    path.as_str(),
                    limit,
                    Check::Artifacts,
                    |detail| VerifyError::ArtifactUnreadable {
                        task_id: u.upstream.clone(),
                        path: path.to_string(),
                        detail,
                    },
                );
                st.errors.push(finding);
            }
        }
    }
}

/// Check 5.
fn check_graphs(
    evidence: &dyn Evidence,
    chain: &Chain,
    states: &mut BTreeMap<TaskId, LinkState<'_>>,
    limits: &Limits,
) {
    let graph_path = chain::task_graph_path();
    for (pid, parent) in &chain.nodes {
        if !chain.is_parent(pid) {
            continue;
        }
        let kind = states
            .get(pid)
            .and_then(|s| s.role.as_ref())
            .map(|r| r.kind);
        if let Some(k) = kind
            && !k.is_graph_creator()
        {
            if let Some(st) = states.get_mut(pid) {
                st.errors.push(VerifyError::NotDecisionQueue {
                    task_id: pid.clone(),
                    task_queue_id: parent.task_queue_id().unwrap_or_default(),
                });
            }
            continue;
        }
        // The graph must be the one the decision task's signed document hashes.
        let expected = states
            .get(pid)
            .and_then(|s| s.doc.as_ref())
            .and_then(|d| d.artifacts.get(chain::TASK_GRAPH).cloned());
        let Some(expected) = expected else {
            if let Some(st) = states.get_mut(pid) {
                st.skipped.insert(
                    Check::TaskGraph,
                    "no verified task-graph.json to compare against".into(),
                );
            }
            continue;
        };
        let bytes = match evidence.read(pid, &graph_path, limits.max_task_graph_bytes) {
            Ok(Some(b)) => b,
            // Check 4 hashed it under the (larger) artifact limit: too large to parse here.
            Err(e) if e.too_large.is_some() => {
                if let Some(st) = states.get_mut(pid)
                    && !st.errors.iter().any(|x| {
                        matches!(x, VerifyError::EvidenceTooLarge { artifact, .. }
                            if artifact == chain::TASK_GRAPH)
                    })
                {
                    let finding = e.finding(
                        pid,
                        chain::TASK_GRAPH,
                        "max_task_graph_bytes",
                        Check::TaskGraph,
                        |detail| VerifyError::GraphInvalid {
                            task_id: pid.clone(),
                            detail,
                        },
                    );
                    st.errors.push(finding);
                }
                continue;
            }
            _ => continue, // reported by check 4
        };
        let actual = crate::trust::sha256_hex(&bytes);
        if actual != expected {
            continue; // reported by check 4
        }
        let graph = match crate::strict_json::from_slice(&bytes) {
            Ok(Value::Object(m)) => m,
            Ok(_) | Err(_) => {
                if let Some(st) = states.get_mut(pid) {
                    st.errors.push(VerifyError::GraphInvalid {
                        task_id: pid.clone(),
                        detail: "not a JSON object of tasks".into(),
                    });
                }
                continue;
            }
        };
        for child in chain.children_of(pid) {
            let child_kind = states
                .get(&child.task_id)
                .and_then(|s| s.role.as_ref())
                .map(|r| r.kind);
            // Action tasks are created by hooks, not by the graph of their decision task; but a
            // task the graph describes is always compared with its entry, whatever it claims
            // to be.
            let entry = graph.get(child.task_id.as_str());
            if child_kind.is_some_and(LinkKind::is_graph_creator) && entry.is_none() {
                continue;
            }
            if let Some(t) = entry.and_then(|e| e.get("task"))
                && let Some(q) = t.get("taskQueueId").and_then(Value::as_str)
            {
                let pair = format!(
                    "{}/{}",
                    t.get("provisionerId").and_then(Value::as_str).unwrap_or(""),
                    t.get("workerType").and_then(Value::as_str).unwrap_or("")
                );
                if q != pair
                    && let Some(st) = states.get_mut(&child.task_id)
                {
                    st.errors.push(VerifyError::QueueIdentityMismatch {
                        task_id: child.task_id.clone(),
                        place: "task-graph entry",
                        task_queue_id: clip(q),
                        provisioner_worker: clip(&pair),
                    });
                }
            }
            let errs = graph::compare(&child.task_id, &child.raw, pid, &parent.raw, &graph);
            if let Some(st) = states.get_mut(&child.task_id) {
                st.errors.extend(errs);
            }
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Check 6: every reason a task may be interactive (whatever its worker implementation).
fn interactive_indicators(raw: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if raw
        .pointer("/payload/features/interactive")
        .is_some_and(truthy)
    {
        out.push("payload.features.interactive".into());
    }
    if raw
        .pointer("/payload/env/TASKCLUSTER_INTERACTIVE")
        .is_some_and(truthy)
    {
        out.push("payload.env.TASKCLUSTER_INTERACTIVE".into());
    }
    if raw.pointer("/payload/rdpInfo").is_some_and(truthy) {
        out.push("payload.rdpInfo".into());
    }
    if let Some(scopes) = raw.get("scopes").and_then(Value::as_array) {
        for s in scopes.iter().filter_map(Value::as_str) {
            if s.starts_with("generic-worker:allow-rdp:") {
                out.push(format!("scope {}", clip(s)));
            }
        }
    }
    out
}

/// Check 7.
fn check_image(
    node: &Node,
    states: &BTreeMap<TaskId, LinkState<'_>>,
    policy: &ChainPolicy,
    restricted: bool,
) -> Vec<VerifyError> {
    let id = &node.task_id;
    let kind = states.get(id).and_then(|s| s.role.as_ref()).map(|r| r.kind);
    let kind_name = kind.map_or_else(|| "unknown".to_owned(), |k| k.to_string());
    let danger = policy
        .docker
        .danger_allow_unpinned_images_with_restricted_scopes;
    match chain::image_spec(&node.raw) {
        ImageSpec::None => Vec::new(),
        ImageSpec::Invalid(detail) => vec![VerifyError::BadImage {
            task_id: id.clone(),
            detail,
        }],
        ImageSpec::Indexed(ns) => {
            if restricted && !danger {
                vec![VerifyError::UnpinnedImage {
                    task_id: id.clone(),
                    kind: kind_name,
                    image: format!("indexed-image {ns}"),
                }]
            } else {
                Vec::new()
            }
        }
        ImageSpec::Registry { reference, pinned } => {
            let prebuilt_ok =
                pinned && kind.is_some_and(|k| policy.docker.prebuilt_image_kinds.contains(&k));
            if restricted && !prebuilt_ok && !danger {
                vec![VerifyError::UnpinnedImage {
                    task_id: id.clone(),
                    kind: kind_name,
                    image: clip(&reference),
                }]
            } else {
                Vec::new()
            }
        }
        ImageSpec::TaskImage {
            task_id: image_task,
            path,
        } => {
            let mut errs = Vec::new();
            if let Some(declared) = node.raw.pointer("/extra/chainOfTrust/inputs/docker-image")
                && declared.as_str() != Some(image_task.as_str())
            {
                errs.push(VerifyError::ImageInputMismatch {
                    task_id: id.clone(),
                    image_task: image_task.clone(),
                    declared: clip(&declared.to_string()),
                });
            }
            let image_state = states.get(&image_task);
            let image_kind = image_state.and_then(|s| s.role.as_ref()).map(|r| r.kind);
            if image_state.is_some() && image_kind != Some(LinkKind::DockerImage) {
                errs.push(VerifyError::ImageTaskNotDockerImage {
                    task_id: id.clone(),
                    image_task: image_task.clone(),
                });
            }
            // The consumer's signed document records the hash of the image it ran; it must be
            // the hash the docker-image link's signed document lists for that artifact.
            let Some(consumer_doc) = states.get(id).and_then(|s| s.doc.as_ref()) else {
                return errs; // no verified document (target, or failed checks 1-3)
            };
            let Some(actual) = consumer_doc
                .environment
                .get("imageArtifactHash")
                .and_then(Value::as_str)
            else {
                errs.push(VerifyError::ImageHashMissing {
                    task_id: id.clone(),
                });
                return errs;
            };
            let Some(image_doc) = image_state.and_then(|s| s.doc.as_ref()) else {
                return errs;
            };
            let expected = image_doc
                .artifacts
                .get(&path)
                .map(|h| format!("sha256:{h}"));
            if expected.as_deref() != Some(actual) {
                errs.push(VerifyError::ImageHashMismatch {
                    task_id: id.clone(),
                    image_task,
                    path: clip(&path),
                    expected: expected.unwrap_or_else(|| "(not listed)".into()),
                    actual: clip(actual),
                });
            }
            errs
        }
    }
}

/// Check 8.
fn check_sources(
    chain: &Chain,
    states: &mut BTreeMap<TaskId, LinkState<'_>>,
    policy: &ChainPolicy,
    restricted: &[(String, &crate::chain_policy::RestrictedScope)],
) {
    let mut infos = BTreeMap::new();
    for (id, node) in &chain.nodes {
        let (info, errs) = source::source_info(id, &node.raw, policy);
        if let Some(st) = states.get_mut(id) {
            st.errors.extend(errs);
        }
        infos.insert(id.clone(), info);
    }
    for (id, node) in &chain.nodes {
        let Some(parent) = &node.parent else { continue };
        let (Some(mine), Some(theirs)) = (infos.get(id), infos.get(parent)) else {
            continue;
        };
        if mine.repository != theirs.repository
            && let Some(st) = states.get_mut(id)
        {
            st.errors.push(VerifyError::DecisionRepositoryMismatch {
                task_id: id.clone(),
                repository: mine.repository.clone().unwrap_or_else(|| "unknown".into()),
                decision: parent.clone(),
                decision_repository: theirs
                    .repository
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
            });
        }
    }
    // Every rule a held scope reaches applies to every link (the strictest combination): a
    // scope reaching two rules must satisfy both.
    for (scope, rule) in restricted {
        for (id, info) in &infos {
            let is_root = states
                .get(id)
                .and_then(|s| s.role.as_ref())
                .is_some_and(|r| r.kind.is_graph_creator());
            let errs = source::check_restricted(scope, rule, id, info, is_root, policy);
            if let Some(st) = states.get_mut(id) {
                for e in errs {
                    if !st.errors.contains(&e) {
                        st.errors.push(e);
                    }
                }
            }
        }
    }
}

/// Check 9: every decision and action link of the chain re-renders from its repository's
/// `.taskcluster.yml` to exactly its runtime definition (`rebuild`).
fn check_rebuilds(
    evidence: &dyn Evidence,
    chain: &Chain,
    states: &mut BTreeMap<TaskId, LinkState<'_>>,
    policy: &ChainPolicy,
    renderer: &dyn rebuild::Render,
) {
    for (id, node) in &chain.nodes {
        let Some(st) = states.get(id) else { continue };
        let Some(kind) = st.role.as_ref().map(|r| r.kind) else {
            continue;
        };
        if !kind.is_graph_creator() {
            if let Some(st) = states.get_mut(id) {
                st.skipped.insert(
                    Check::DecisionRebuild,
                    "not a decision or action task".into(),
                );
            }
            continue;
        }
        let outcome = rebuild_link(evidence, chain, states, policy, renderer, id, node, kind);
        if let Some(st) = states.get_mut(id) {
            match outcome {
                Ok((caveat, notes)) => {
                    if let Some(c) = caveat {
                        st.caveated.insert(Check::DecisionRebuild, c);
                    }
                    st.caveats.extend(notes);
                }
                Err(e) => st.errors.push(e),
            }
        }
    }
}

/// One link's rebuild: passed, with the check's caveat (the template was not bound to the
/// revision, or no rule applied) and the link's notes (push facts read from a bundle).
#[allow(clippy::too_many_arguments)]
fn rebuild_link(
    evidence: &dyn Evidence,
    chain: &Chain,
    states: &BTreeMap<TaskId, LinkState<'_>>,
    policy: &ChainPolicy,
    renderer: &dyn rebuild::Render,
    id: &TaskId,
    node: &Node,
    kind: LinkKind,
) -> Result<(Option<String>, Vec<String>), VerifyError> {
    let fail = |detail: String| VerifyError::RebuildFailed {
        task_id: id.clone(),
        detail: clip(&detail),
    };
    let _ = kind;
    let decision_id = rebuild::decision_of(id, node)?;
    let decision = chain.nodes.get(&decision_id).ok_or_else(|| {
        fail(format!(
            "decision task {decision_id} is not in the evidence"
        ))
    })?;
    let plan = match rebuild::plan(policy, id, &node.raw, &decision_id, &decision.raw)? {
        rebuild::Planned::Rebuild(p) => p,
        rebuild::Planned::NotConfigured(why) => return Ok((Some(why), Vec::new())),
    };
    let mut bytes = Vec::new();
    let mut unbound = Vec::new();
    for s in &plan.sources {
        let file = evidence
            .source(s)
            .map_err(|e| {
                fail(format!(
                    "{:?} source {}: {}",
                    s.kind,
                    clip(&s.url),
                    e.detail
                ))
            })?
            .ok_or_else(|| {
                fail(format!(
                    "{:?} source {} is not in the evidence",
                    s.kind,
                    clip(&s.url)
                ))
            })?;
        if file.origin == rebuild::SourceOrigin::Bundled {
            unbound.push(s);
        }
        bytes.push(file.bytes);
    }
    // actions.json / parameters.yml: the decision task's own, bound by its signed document.
    let decision_input = |name: &str| -> Result<Option<Vec<u8>>, VerifyError> {
        let Some(expected) = states
            .get(&decision_id)
            .and_then(|s| s.doc.as_ref())
            .and_then(|d| d.artifacts.get(name).cloned())
        else {
            return Ok(None);
        };
        let path =
            ArtifactPath::parse(name).map_err(|_| fail(format!("bad artifact name {name}")))?;
        let Some(b) = evidence
            .read(&decision_id, &path, rebuild::MAX_DECISION_INPUT_BYTES)
            .map_err(|e| fail(format!("{name} of {decision_id}: {}", e.detail)))?
        else {
            return Ok(None);
        };
        if crate::trust::sha256_hex(&b) != expected {
            return Err(fail(format!(
                "{name} of {decision_id} does not match the hash in its chain-of-trust document"
            )));
        }
        Ok(Some(b))
    };
    let is_action = matches!(plan.tasks_for.as_str(), "action" | "pr-action");
    let (actions, params) = if is_action {
        (
            decision_input(rebuild::ACTIONS_JSON)?,
            decision_input(rebuild::PARAMETERS_YML)?,
        )
    } else {
        (None, None)
    };
    let inputs = rebuild::Inputs {
        link_raw: &node.raw,
        decision_raw: &decision.raw,
        sources: bytes.iter().map(Vec::as_slice).collect(),
        actions_json: actions.as_deref(),
        parameters_yml: params.as_deref(),
    };
    rebuild::rebuild(&plan, &inputs, renderer)?;
    let caveat = unbound
        .iter()
        .find(|s| s.kind == rebuild::SourceKind::Template)
        .map(|s| {
            format!(
                "template taken from the bundle, not bound to the revision {} ({}; give --source \
                 with a clone holding that commit)",
                plan.revision,
                rebuild::shown_url(&s.url)
            )
        });
    let notes = unbound
        .iter()
        .filter(|s| s.kind != rebuild::SourceKind::Template)
        .map(|s| {
            format!(
                "push facts for the rebuild ({}) read from the bundle, where nothing signs them ({})",
                s.kind.describe(),
                rebuild::shown_url(&s.url)
            )
        })
        .collect();
    Ok((caveat, notes))
}
