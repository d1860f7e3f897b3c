//! The verified-artifact manifest: the hand-off from chain-of-trust verification to the script.
//!
//! After the worker has verified the chain, it writes `<work_dir>/cot/manifest.json` listing
//! every upstream file it placed under `<work_dir>/cot/<taskId>/<path>` with the sha256 it
//! verified against the upstream task's signed chain-of-trust document. Scripts re-hash each file
//! against this manifest before acting on it (defence in depth: a file changed on disk after
//! verification is refused). **API Boundary:** scripts outside this crate may read this format.
//!
//! Each entry also carries the producing task's kind (`taskKind`: `decision`, `build`,
//! `signing`...) as the chain policy assigned it during verification. A script must take an
//! upstream task's kind from here, never from the payload's `upstreamArtifacts[].taskType`,
//! which the task author wrote.
//!
//! Compatibility: version 2 added the required `taskKind`. Scripts refuse any other version (a
//! version-1 manifest has no verified kind to act on), so worker and scripts are upgraded
//! together.

use crate::chain_policy::LinkKind;
use crate::ids::TaskId;
use serde::{Deserialize, Serialize};

/// File name of the manifest inside `<work_dir>/cot/`.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Current manifest format version.
pub const MANIFEST_VERSION: u32 = 2;

/// Every upstream artifact that passed chain-of-trust verification for this task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifiedManifest {
    /// Always [`MANIFEST_VERSION`].
    pub version: u32,
    /// The verified files.
    pub artifacts: Vec<VerifiedArtifact>,
}

/// One verified upstream file, found at `<work_dir>/cot/<taskId>/<path>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerifiedArtifact {
    /// The upstream task that produced it.
    pub task_id: TaskId,
    /// The producing task's kind, from the chain policy (keyed by its queue), never from a
    /// payload. Serialised as `taskKind`, in the policy-file spelling (`docker-image`).
    pub task_kind: LinkKind,
    /// Artifact name, e.g. `public/build/target.tar.gz` (relative, checked).
    pub path: String,
    /// Lower-case hex sha256 of the file's bytes (as listed in the signed document).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}
