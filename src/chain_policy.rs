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

/// The signature format(s) a worker implementation's links may be verified by: one
/// (`signature = "openpgp"`) or either of a list (`signature = ["openpgp", "ed25519"]`, one to
/// two distinct formats, checked by the schema).
///
/// With a list, the verifier checks the first format, in the list's order, whose artifact the
/// link has; if that signature is bad the link fails (the other is never tried as a fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignatureFormats {
    /// Exactly this format.
    One(SignatureFormat),
    /// Any of these, in order of preference.
    Either(Vec<SignatureFormat>),
}

impl SignatureFormats {
    /// The accepted formats, in order of preference.
    pub fn as_slice(&self) -> &[SignatureFormat] {
        match self {
            SignatureFormats::One(f) => std::slice::from_ref(f),
            SignatureFormats::Either(v) => v,
        }
    }
}

/// One worker implementation's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerImplPolicy {
    /// Signature format(s) its links are verified by.
    pub signature: SignatureFormats,
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
    /// How its decision and action tasks are re-rendered (check `decision-rebuild`).
    #[serde(default)]
    pub rebuild: Option<RebuildRule>,
}

/// The version control system of a repository with a [`RebuildRule`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Vcs {
    /// Mercurial (`hg-push`, `cron`, `action` contexts with `repository.level`).
    Hg,
    /// git on GitHub (`github-*`, `cron`, `action`, `pr-action` contexts).
    Git,
}

/// Where the inputs of a repository's `.taskcluster.yml` rebuild come from. Every URL is a
/// template of the operator's; only `{revision}`, `{tag}` and `{pull_request}` are filled in,
/// from the decision task's values after they passed a strict character check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildRule {
    /// Which family of json-e contexts applies.
    pub vcs: Vcs,
    /// Prefix of the `*_HEAD_REPOSITORY`, `*_HEAD_REV`, ... variables (`GECKO`).
    pub env_prefix: String,
    /// The template at a revision (`.../raw-file/{revision}/.taskcluster.yml`).
    pub template_url: String,
    /// hg `json-pushes` (version 2, full) for a revision: `hg-push` and hg `cron`.
    #[serde(default)]
    pub pushlog_url: Option<String>,
    /// GitHub's commit API for a revision: `github-push`.
    #[serde(default)]
    pub commit_url: Option<String>,
    /// GitHub's release-by-tag API: `github-release`.
    #[serde(default)]
    pub release_url: Option<String>,
    /// GitHub's pull-request API: `github-pull-request(-untrusted)`.
    #[serde(default)]
    pub pull_request_url: Option<String>,
    /// `repository.project` (the `projects.yml` name); the last path component by default.
    #[serde(default)]
    pub project: Option<String>,
    /// `repository.level` (from `projects.yml`'s access level).
    #[serde(default)]
    pub level: Option<String>,
    /// The `tasks_for` values this repository's decision and action tasks may carry.
    pub tasks_for: Vec<String>,
}

/// Settings of the `decision-rebuild` check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RebuildPolicy {
    /// A decision or action link whose repository has no [`RebuildRule`] fails (default);
    /// `false` lets it pass with a caveat.
    #[serde(default = "default_true")]
    pub required: bool,
}

impl Default for RebuildPolicy {
    fn default() -> Self {
        RebuildPolicy { required: true }
    }
}

fn default_true() -> bool {
    true
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

/// What an `assume:` role may grant, as the operator knows it from the deployment's role
/// table (the verifier cannot see roles). An `assume:` scope no entry covers is treated as able
/// to reach every restricted scope (fail closed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRole {
    /// Role pattern: `assume:<roleId>` exactly, or a prefix ending in `*`, that the held
    /// `assume:` scope must fall under (a held `assume:repo:x:branch:main` falls under
    /// `assume:repo:x:*`).
    pub role: String,
    /// Restricted scope patterns (of `[[restricted_scopes]]`) the role may grant; empty for
    /// none.
    pub reaches: Vec<String>,
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
    /// What `assume:` roles may grant (optional; undeclared roles reach everything).
    #[serde(default)]
    pub assume: Vec<AssumeRole>,
    /// The `decision-rebuild` check's settings.
    #[serde(default)]
    pub rebuild: RebuildPolicy,
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
    /// Signature formats accepted for that worker implementation, in order of preference
    /// (never empty: the schema requires at least one).
    pub signature: &'a [SignatureFormat],
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
            signature: w.signature.as_slice(),
        })
    }

    /// The signature formats every queue of a kind `allowed` accepts, when they all accept the
    /// same ones; `None` when no such queue exists or two of them differ. The evidence fetcher
    /// uses it to request a link's signature as soon as the link is named (by a role that fixes
    /// its kind: a decision task, a docker image), before its definition says which queue it
    /// ran on. The verifier still judges the link by its own queue.
    pub fn common_signature_formats(
        &self,
        allowed: impl Fn(LinkKind) -> bool,
    ) -> Option<&[SignatureFormat]> {
        let mut common: Option<&[SignatureFormat]> = None;
        for q in self.queues.iter().filter(|q| allowed(q.kind)) {
            let formats = self
                .worker_implementations
                .get(&q.worker_implementation)?
                .signature
                .as_slice();
            match common {
                None => common = Some(formats),
                Some(c) if c == formats => {}
                Some(_) => return None,
            }
        }
        common
    }

    /// The restricted-scope rules a held scope can reach, by Taskcluster's satisfaction rule
    /// (a trailing `*` satisfies every scope with that prefix): `project:releng:push:*`,
    /// `project:*` and `*` reach `project:releng:push:bucket`. An `assume:` scope (or one that
    /// can satisfy an `assume:` scope, such as `*` or `assume*`) reaches what the matching
    /// `[[assume]]` entry declares, and every rule when none matches: roles are invisible here.
    pub fn restricted_rules_for<'a>(&'a self, held: &str) -> Vec<&'a RestrictedScope> {
        let assume_reaches: Option<Vec<&str>> = if can_reach(held, "assume:*") {
            // Only an exact-or-narrower held role can use a declaration; a wildcard wide enough
            // to name other roles too (`assume:*`, `*`) reaches everything.
            self.assume
                .iter()
                .find(|a| held.starts_with("assume:") && satisfies(&a.role, held))
                .map(|a| a.reaches.iter().map(String::as_str).collect())
                .or(Some(vec!["*"]))
        } else {
            None
        };
        self.restricted_scopes
            .iter()
            .filter(|r| {
                can_reach(held, &r.scope)
                    || assume_reaches
                        .as_ref()
                        .is_some_and(|list| list.iter().any(|p| can_reach(p, &r.scope)))
            })
            .collect()
    }

    /// The repository with this alias.
    pub fn repository(&self, alias: &str) -> Option<&RepositoryPolicy> {
        self.repositories.iter().find(|r| r.alias == alias)
    }
}

/// Taskcluster's rule: held scope `held` satisfies required scope `required` when they are
/// equal, or `held` ends in `*` and `required` starts with `held` minus that `*`.
pub fn satisfies(held: &str, required: &str) -> bool {
    match held.strip_suffix('*') {
        Some(prefix) => required.starts_with(prefix),
        None => held == required,
    }
}

/// Whether held scope `held` satisfies at least one scope of the family `pattern` (exact, or
/// every scope with a prefix when it ends in `*`).
pub fn can_reach(held: &str, pattern: &str) -> bool {
    match (held.strip_suffix('*'), pattern.strip_suffix('*')) {
        (None, None) => held == pattern,
        (None, Some(p)) => held.starts_with(p),
        (Some(h), None) => pattern.starts_with(h),
        (Some(h), Some(p)) => h.starts_with(p) || p.starts_with(h),
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
    fn signature_is_one_format_or_a_list_of_distinct_ones() {
        let text = |sig: &str| {
            format!(
                "version = 1\n[worker_implementations.chainlock]\nsignature = {sig}\n\
                 [[queues]]\ntask_queue_id = \"p/d\"\nworker_implementation = \"chainlock\"\n\
                 kind = \"decision\"\n[[repositories]]\nalias = \"r\"\n\
                 url = \"https://github.com/o/r\"\n\
                 [[restricted_scopes]]\nscope = \"project:x\"\nrepositories = [\"r\"]\n\
                 [untrusted]\npull_request_tasks_for = []\nrepositories = []\nscheduler_ids = []\n\
                 [docker]\nprebuilt_image_kinds = []\n"
            )
        };
        use SignatureFormat::{Ed25519, Openpgp};
        for (sig, want) in [
            ("\"openpgp\"", vec![Openpgp]),
            ("[\"ed25519\"]", vec![Ed25519]),
            ("[\"openpgp\", \"ed25519\"]", vec![Openpgp, Ed25519]),
            ("[\"ed25519\", \"openpgp\"]", vec![Ed25519, Openpgp]),
        ] {
            let p = ChainPolicy::from_toml(&text(sig)).unwrap();
            assert_eq!(p.queue("p/d").unwrap().signature, want.as_slice(), "{sig}");
        }
        for bad in ["[]", "[\"openpgp\", \"openpgp\"]", "[\"x509\"]", "\"both\""] {
            assert!(ChainPolicy::from_toml(&text(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn common_signature_formats_only_when_every_queue_of_the_kinds_agrees() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/etc/chain-policy.example.toml"
        ))
        .unwrap();
        let p = ChainPolicy::from_toml(&text).unwrap();
        use SignatureFormat::Ed25519;
        let images = p.common_signature_formats(|k| k == LinkKind::DockerImage);
        assert_eq!(images, Some([Ed25519].as_slice()));
        let roots = p.common_signature_formats(LinkKind::is_graph_creator);
        assert_eq!(roots, Some([Ed25519].as_slice()));
        // Builds (generic-worker, ed25519) and signing tasks (chainlock, openpgp) differ.
        assert_eq!(p.common_signature_formats(|_| true), None);
        // No queue of the kind: nothing to predict.
        assert_eq!(p.common_signature_formats(|k| k == LinkKind::Test), None);
        // One queue of the kind that is the odd one out makes the kind unpredictable.
        let mixed = text.replace(
            "task_queue_id = \"example-3/images\"\nworker_implementation = \"generic-worker\"",
            "task_queue_id = \"example-3/images\"\nworker_implementation = \"chainlock\"",
        ) + "\n[[queues]]\ntask_queue_id = \"example-3/images-2\"\n\
             worker_implementation = \"generic-worker\"\nkind = \"docker-image\"\n";
        assert_ne!(mixed, text);
        let p = ChainPolicy::from_toml(&mixed).unwrap();
        assert_eq!(
            p.common_signature_formats(|k| k == LinkKind::DockerImage),
            None
        );
    }

    #[test]
    fn held_scopes_reach_restricted_families() {
        let text = "version = 1\n[worker_implementations.chainlock]\nsignature = \"openpgp\"\n\
            [[queues]]\ntask_queue_id = \"p/d\"\nworker_implementation = \"chainlock\"\nkind = \"decision\"\n\
            [[repositories]]\nalias = \"r\"\nurl = \"https://github.com/o/r\"\n\
            [[restricted_scopes]]\nscope = \"project:releng:push:*\"\nrepositories = [\"r\"]\n\
            [[restricted_scopes]]\nscope = \"project:releng:signing:cert:release\"\nrepositories = [\"r\"]\n\
            [[assume]]\nrole = \"assume:repo:github.com/o/r-try:*\"\nreaches = []\n\
            [[assume]]\nrole = \"assume:repo:github.com/o/r:*\"\nreaches = [\"project:releng:push:*\"]\n\
            [untrusted]\npull_request_tasks_for = []\nrepositories = []\nscheduler_ids = []\n\
            [docker]\nprebuilt_image_kinds = []\n";
        let p = ChainPolicy::from_toml(text).unwrap();
        let reached = |held: &str| -> Vec<&str> {
            p.restricted_rules_for(held)
                .iter()
                .map(|r| r.scope.as_str())
                .collect()
        };
        let push = "project:releng:push:*";
        let cert = "project:releng:signing:cert:release";
        for (held, want) in [
            ("project:releng:push:bucket-release", vec![push]),
            ("project:releng:push:*", vec![push]),
            ("project:releng:push:bucket*", vec![push]),
            ("project:releng:*", vec![push, cert]),
            ("project:*", vec![push, cert]),
            ("*", vec![push, cert]),
            ("project:releng:signing:cert:release", vec![cert]),
            ("project:releng:signing:cert:rel*", vec![cert]),
            ("project:releng:signing:cert:dep", vec![]),
            ("queue:create-task:*", vec![]),
            // Roles: declared ones reach what they declare, undeclared ones everything.
            ("assume:repo:github.com/o/r-try:branch:main", vec![]),
            ("assume:repo:github.com/o/r:branch:main", vec![push]),
            (
                "assume:repo:github.com/other/x:branch:main",
                vec![push, cert],
            ),
            ("assume:*", vec![push, cert]),
            ("assume:repo:github.com/o/*", vec![push, cert]),
        ] {
            assert_eq!(reached(held), want, "{held}");
        }
    }

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
