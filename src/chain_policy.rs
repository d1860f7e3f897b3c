//! The chain-of-trust policy: what may appear in a chain, and who may use restricted scopes.
//!
//! The reference implementation lets a task pick the verifier for each upstream link
//! (`upstreamArtifacts[].taskType`). We do not: a link's worker implementation and kind come only
//! from this policy, keyed by the link's task queue (`provisionerId/workerType`), which the queue
//! itself records. A queue the policy does not name fails verification. Nothing here is specific
//! to one Taskcluster deployment; `etc/chain-policy.example.toml` documents a realistic file.
//!
//! The policy is owned by the operator (worker) or the auditor (`chainlock verify`), never by the
//! evidence being judged. It is parsed strictly: the TOML is validated against
//! `schemas/chain-policy.schema.json` (unknown keys rejected) before it is deserialized.
//! **API Boundary:** operators write this file; changes to its shape need a compatibility note.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The JSON Schema the policy file must satisfy.
pub const CHAIN_POLICY_SCHEMA: &str = include_str!("../schemas/chain-policy.schema.json");

/// Largest policy file we read (a policy is a few kilobytes).
const MAX_POLICY_BYTES: u64 = 1024 * 1024;

/// Why a policy file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The file could not be read.
    #[error("cannot read chain policy {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is larger than a policy can reasonably be.
    #[error("chain policy {path} is larger than {max} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The cap.
        max: u64,
    },
    /// Not valid TOML.
    #[error("chain policy is not valid TOML: {0}")]
    Toml(#[from] crate::toml_text::TomlError),
    /// Valid TOML that breaks the schema.
    #[error("chain policy breaks schemas/chain-policy.schema.json at {at}: {message}")]
    Schema {
        /// JSON pointer of the offending value.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The same queue is listed twice.
    #[error("chain policy lists task queue {0} more than once")]
    DuplicateQueue(String),
    /// A queue names a worker implementation without a signature format.
    #[error(
        "task queue {queue} uses worker implementation {worker_impl}, which is not in [worker_implementations]"
    )]
    UnknownWorkerImpl {
        /// The queue.
        queue: String,
        /// The worker implementation.
        worker_impl: String,
    },
    /// A restricted-scope rule names a repository alias that is not defined.
    #[error(
        "restricted scope {scope} names repository alias {alias}, which is not in [[repositories]]"
    )]
    UnknownRepositoryAlias {
        /// The scope rule.
        scope: String,
        /// The alias.
        alias: String,
    },
    /// Two repositories share an alias.
    #[error("repository alias {0} is defined more than once")]
    DuplicateAlias(String),
}

/// What a task on a queue is, for the checks that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    /// A decision task: creates the task graph (`public/task-graph.json`).
    Decision,
    /// An action task: a decision task started by a hook, with its own graph.
    Action,
    /// A build task.
    Build,
    /// Builds docker images that other tasks run in.
    DockerImage,
    /// A signing task.
    Signing,
    /// A push / release task.
    Push,
    /// A test task.
    Test,
    /// Anything else.
    Other,
}

impl LinkKind {
    /// Decision and action tasks create graphs; they are the roots a chain traces back to.
    pub fn is_graph_creator(self) -> bool {
        matches!(self, LinkKind::Decision | LinkKind::Action)
    }

    /// The policy-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Decision => "decision",
            LinkKind::Action => "action",
            LinkKind::Build => "build",
            LinkKind::DockerImage => "docker-image",
            LinkKind::Signing => "signing",
            LinkKind::Push => "push",
            LinkKind::Test => "test",
            LinkKind::Other => "other",
        }
    }
}

impl fmt::Display for LinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker implementation signs its `public/chain-of-trust.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureFormat {
    /// Armored detached OpenPGP signature in `public/chain-of-trust.json.asc` (chainlock).
    Openpgp,
    /// Raw 64-byte ed25519 signature in `public/chain-of-trust.json.sig` (generic-worker,
    /// docker-worker, scriptworker).
    Ed25519,
}

impl SignatureFormat {
    /// The artifact that carries the signature.
    pub fn artifact_name(self) -> &'static str {
        match self {
            SignatureFormat::Openpgp => "public/chain-of-trust.json.asc",
            SignatureFormat::Ed25519 => "public/chain-of-trust.json.sig",
        }
    }
}

/// One worker implementation's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerImplPolicy {
    /// Signature format it uses.
    pub signature: SignatureFormat,
}

/// One task queue allowed in chains.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicy {
    /// `provisionerId/workerType`.
    pub task_queue_id: String,
    /// Worker implementation (a key of `worker_implementations` and of the trust store).
    pub worker_implementation: String,
    /// What tasks on this queue are.
    pub kind: LinkKind,
}

/// A repository that may root chains with restricted scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryPolicy {
    /// Repository URL (`https://github.com/org/repo`, `https://hg.example.org/releases/beta`).
    pub url: String,
    /// Name used by restricted-scope rules.
    pub alias: String,
    /// Branches of this repository that are trusted (exact, or a prefix ending in `*`). Absent:
    /// any branch (for repositories where the repository is the branch, as in Mercurial).
    #[serde(default)]
    pub branches: Option<Vec<String>>,
}

/// A restricted scope and who may use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictedScope {
    /// Exact scope, or a prefix ending in `*`.
    pub scope: String,
    /// Repository aliases allowed to use it.
    pub repositories: Vec<String>,
    /// Branches allowed (overrides the repository's list when present).
    #[serde(default)]
    pub branches: Option<Vec<String>>,
}

/// Sources that never get restricted scopes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UntrustedSources {
    /// `extra.tasks_for` values that mean "pull request" (`github-pull-request`, `pr-action`).
    pub pull_request_tasks_for: Vec<String>,
    /// Try-like repository URLs (anyone may push there).
    pub repositories: Vec<String>,
    /// Scheduler ids of untrusted (try-level) tasks.
    pub scheduler_ids: Vec<String>,
}

/// Docker image rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerPolicy {
    /// Kinds whose tasks may run a digest-pinned registry image in a chain with restricted
    /// scopes (typically `decision` and `action`, whose image is fixed by the repository).
    pub prebuilt_image_kinds: Vec<LinkKind>,
    /// Allow indexed or unpinned registry images even when restricted scopes are used. Weakens
    /// the chain: an image that no link built can run code in it.
    #[serde(default)]
    pub danger_allow_unpinned_images_with_restricted_scopes: bool,
}

/// The whole policy (see `etc/chain-policy.example.toml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPolicy {
    /// Always 1.
    pub version: u32,
    /// Signature format per worker implementation.
    pub worker_implementations: BTreeMap<String, WorkerImplPolicy>,
    /// Allowed queues.
    pub queues: Vec<QueuePolicy>,
    /// Trusted repositories.
    pub repositories: Vec<RepositoryPolicy>,
    /// Restricted scopes.
    pub restricted_scopes: Vec<RestrictedScope>,
    /// Untrusted sources.
    pub untrusted: UntrustedSources,
    /// Docker image rules.
    pub docker: DockerPolicy,
}

/// What the policy says about one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRole<'a> {
    /// Worker implementation.
    pub worker_impl: &'a str,
    /// Kind.
    pub kind: LinkKind,
    /// Signature format of that worker implementation.
    pub signature: SignatureFormat,
}

impl ChainPolicy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<ChainPolicy, PolicyError> {
        use std::io::Read as _;
        let file = std::fs::File::open(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut text = String::new();
        file.take(MAX_POLICY_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|source| PolicyError::Read {
                path: path.to_owned(),
                source,
            })?;
        if text.len() as u64 > MAX_POLICY_BYTES {
            return Err(PolicyError::TooLarge {
                path: path.to_owned(),
                max: MAX_POLICY_BYTES,
            });
        }
        ChainPolicy::from_toml(&text)
    }

    /// Parses and validates policy text (schema first, then cross-references).
    pub fn from_toml(text: &str) -> Result<ChainPolicy, PolicyError> {
        let value: serde_json::Value = crate::toml_text::from_str(text)?;
        let schema: serde_json::Value = serde_json::from_str(CHAIN_POLICY_SCHEMA)
            .expect("the embedded policy schema is valid JSON (checked by a unit test)");
        let validator = jsonschema::validator_for(&schema)
            .expect("the embedded policy schema compiles (checked by a unit test)");
        if let Some(err) = validator.iter_errors(&value).next() {
            return Err(PolicyError::Schema {
                at: err.instance_path().to_string(),
                message: err.to_string(),
            });
        }
        let policy: ChainPolicy =
            serde_json::from_value(value).map_err(|e| PolicyError::Schema {
                at: String::new(),
                message: e.to_string(),
            })?;
        policy.check_references()?;
        Ok(policy)
    }

    fn check_references(&self) -> Result<(), PolicyError> {
        let mut seen = std::collections::BTreeSet::new();
        for q in &self.queues {
            if !seen.insert(q.task_queue_id.as_str()) {
                return Err(PolicyError::DuplicateQueue(q.task_queue_id.clone()));
            }
            if !self
                .worker_implementations
                .contains_key(&q.worker_implementation)
            {
                return Err(PolicyError::UnknownWorkerImpl {
                    queue: q.task_queue_id.clone(),
                    worker_impl: q.worker_implementation.clone(),
                });
            }
        }
        let mut aliases = std::collections::BTreeSet::new();
        for r in &self.repositories {
            if !aliases.insert(r.alias.as_str()) {
                return Err(PolicyError::DuplicateAlias(r.alias.clone()));
            }
        }
        for rule in &self.restricted_scopes {
            for alias in &rule.repositories {
                if !aliases.contains(alias.as_str()) {
                    return Err(PolicyError::UnknownRepositoryAlias {
                        scope: rule.scope.clone(),
                        alias: alias.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// What the policy says about a queue, or `None` when the queue is not allowed in chains.
    pub fn queue(&self, task_queue_id: &str) -> Option<QueueRole<'_>> {
        let q = self
            .queues
            .iter()
            .find(|q| q.task_queue_id == task_queue_id)?;
        let w = self.worker_implementations.get(&q.worker_implementation)?;
        Some(QueueRole {
            worker_impl: &q.worker_implementation,
            kind: q.kind,
            signature: w.signature,
        })
    }

    /// The restricted-scope rules a scope falls under.
    pub fn restricted_rules_for<'a>(&'a self, scope: &str) -> Vec<&'a RestrictedScope> {
        self.restricted_scopes
            .iter()
            .filter(|r| pattern_matches(&r.scope, scope))
            .collect()
    }

    /// The repository with this alias.
    pub fn repository(&self, alias: &str) -> Option<&RepositoryPolicy> {
        self.repositories.iter().find(|r| r.alias == alias)
    }
}

/// `pattern` is either exact or a prefix ending in `*` (the Taskcluster scope convention).
pub fn pattern_matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_policy_loads() {
        let text = include_str!("../etc/chain-policy.example.toml");
        let p = ChainPolicy::from_toml(text).unwrap();
        assert!(!p.queues.is_empty());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = include_str!("../etc/chain-policy.example.toml");
        let bad = format!("{text}\nsurprise = true\n");
        assert!(matches!(
            ChainPolicy::from_toml(&bad),
            Err(PolicyError::Schema { .. })
        ));
    }

    #[test]
    fn references_are_checked() {
        let text = include_str!("../etc/chain-policy.example.toml");
        let bad = text.replacen(
            "worker_implementation = \"generic-worker\"",
            "worker_implementation = \"nobody\"",
            1,
        );
        assert!(matches!(
            ChainPolicy::from_toml(&bad),
            Err(PolicyError::UnknownWorkerImpl { .. })
        ));
    }

    #[test]
    fn scope_patterns() {
        assert!(pattern_matches("a:b:*", "a:b:c"));
        assert!(pattern_matches("a:b", "a:b"));
        assert!(!pattern_matches("a:b", "a:bc"));
        assert!(!pattern_matches("a:b:*", "a:c"));
    }
}
