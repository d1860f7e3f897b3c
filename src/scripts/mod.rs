//! The scripts chainlock ships: `chainlock script sign` and `chainlock script push`.
//!
//! A worker runs exactly one operator-chosen script per task, as a separate process, with the
//! fixed contract below. These scripts are ordinary clients of that contract: they get no
//! Taskcluster credentials and never use the worker's chain-of-trust key (which, with
//! `isolation = "namespaces"` or `"uid"`, they cannot even read). Each one re-validates
//! `task.json` with the same [`crate::validate`] rules the worker applied (so a script run by
//! hand, or by a differently configured worker, is just as strict), then re-hashes every upstream
//! file against the verified manifest before acting on it: a file changed on disk after
//! verification is never signed or published.
//!
//! Contract: env `TASK_ID`, `RUN_ID`, `TASKCLUSTER_ROOT_URL`, `CHAINLOCK_WORK_DIR`,
//! `CHAINLOCK_ARTIFACT_DIR`; `$CHAINLOCK_WORK_DIR/task.json`; verified upstream files at
//! `$CHAINLOCK_WORK_DIR/cot/<taskId>/<path>` listed in `$CHAINLOCK_WORK_DIR/cot/manifest.json`;
//! outputs at `$CHAINLOCK_ARTIFACT_DIR/<artifact name>`. Exit codes: 0 ok, 1 failure,
//! 3 malformed-payload, 4 resource-unavailable, 5 internal-error.
//!
//! Only verified facts are acted on. An upstream task's kind (`build`, `signing`...) comes from
//! the manifest's `taskKind`, which the worker took from its chain policy; the payload's
//! `upstreamArtifacts[].taskType` is still required by the schemas (compatibility with
//! scriptworker-style payloads), but a label that disagrees with the verified kind is refused
//! as a malformed payload instead of being silently corrected: a task that mislabels its inputs
//! was built wrongly or is probing the worker, and either way should not run.
//!
//! What this module must not do: read private keys other than the one selected by the task's
//! scope, write outside the artifact directory (or the configured destination), or follow a
//! symlink out of the work directory.

pub mod push;
pub mod sign;

use crate::chain_policy::LinkKind;
use crate::ids::TaskId;
use crate::manifest::{MANIFEST_FILE, MANIFEST_VERSION, VerifiedManifest};
use crate::validate::path::ArtifactPath;
use crate::validate::{Limits, Rejection, ScopeRules, TaskValidator, ValidateError, ValidatedTask};
use sha2::{Digest, Sha256, Sha512};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: the task failed (reported as `failed`).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: the task's input is invalid (`malformed-payload`).
pub const EXIT_MALFORMED_PAYLOAD: i32 = 3;
/// Exit code: a needed resource is unavailable (`resource-unavailable`).
pub const EXIT_RESOURCE_UNAVAILABLE: i32 = 4;
/// Exit code: a bug or misconfiguration (`internal-error`).
pub const EXIT_INTERNAL_ERROR: i32 = 5;

/// Largest `manifest.json` a script reads (bytes).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Largest script configuration file (bytes).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why a script stopped. [`ScriptError::exit_code`] maps each reason to the exit contract.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScriptError {
    /// A required environment variable is missing or empty.
    #[error("environment variable {name} is not set")]
    MissingEnv {
        /// The variable.
        name: &'static str,
    },
    /// The script configuration is unreadable or invalid.
    #[error("script config {path}: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The validator could not be built from the configuration.
    #[error("script config: {0}")]
    Validator(#[from] ValidateError),
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `task.json` is not JSON or too large.
    #[error("task.json: {reason}")]
    TaskJson {
        /// Why.
        reason: String,
    },
    /// The task broke the validation rules.
    #[error("{0}")]
    Rejected(Rejection),
    /// The verified manifest is missing, malformed or of an unknown version.
    #[error("verified manifest {path}: {reason}")]
    Manifest {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The task asks for a non-optional file the verified chain of trust did not provide.
    #[error("upstream file {task_id}/{path} is not in the verified manifest")]
    NotVerified {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact path.
        path: String,
    },
    /// A verified file is not a regular file inside the work directory (symlink, directory).
    #[error("{path}: not a regular file inside the verified area")]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// A verified file's bytes no longer match the manifest (changed after verification).
    #[error(
        "integrity failure: {task_id}/{path} has sha256 {actual} ({actual_size} bytes), the \
         verified manifest says {expected} ({expected_size} bytes)"
    )]
    HashMismatch {
        /// The upstream task.
        task_id: TaskId,
        /// The artifact path.
        path: String,
        /// sha256 from the manifest.
        expected: String,
        /// sha256 of the file now.
        actual: String,
        /// Size from the manifest.
        expected_size: u64,
        /// Size now.
        actual_size: u64,
    },
    /// The payload labels an upstream task with a type other than the kind the chain of trust
    /// verified for it.
    #[error(
        "upstream task {task_id} is labelled taskType {claimed:?} in the payload, but the chain \
         of trust verified it as {verified}"
    )]
    TaskTypeMismatch {
        /// The upstream task.
        task_id: TaskId,
        /// The payload's `taskType`.
        claimed: String,
        /// The kind from the verified manifest.
        verified: LinkKind,
    },
    /// Two inputs would produce the same output name.
    #[error("two upstream files would produce the same output {name:?}")]
    OutputCollision {
        /// The output name.
        name: String,
    },
    /// An input value cannot be used (bad template value, unknown task type...).
    #[error("{0}")]
    BadInput(String),
    /// The release key selected by the scope cannot be used (unreadable, readable by group or
    /// others, no valid signing key).
    #[error("release key for {scope}: {reason}")]
    SigningKey {
        /// The cert scope that selected it.
        scope: String,
        /// Why (never key material).
        reason: String,
    },
    /// Signing failed.
    #[error("signing {path}: {reason}")]
    Signing {
        /// The file being signed.
        path: String,
        /// Why.
        reason: String,
    },
    /// The destination refused or failed an operation.
    #[error("destination {url}: {reason}")]
    Destination {
        /// The object's URL.
        url: String,
        /// Why (never includes credentials).
        reason: String,
    },
    /// A local destination path goes through a symlink or something that is not a plain
    /// directory/file; nothing is written there.
    #[error("destination path {path}: {reason}; refusing to write through it")]
    UnsafeDestination {
        /// The offending component.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Objects already exist at the destination with different content.
    #[error(
        "{} object(s) already exist with different content and overwriting is disabled: {}",
        urls.len(), urls.join(", ")
    )]
    Conflict {
        /// The objects' URLs.
        urls: Vec<String>,
    },
    /// A background job panicked or was cancelled (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ScriptError {
    /// The exit code that reports this error to the worker.
    ///
    /// Decisions: a file that changed after verification is a `failure` (1), not
    /// `malformed-payload`: the task author did nothing wrong, the host did, and it must be
    /// loud; so is a symlink planted in a local destination. A task asking for a file its
    /// verified chain does not contain, or mislabelling an upstream task's kind, is malformed (3).
    /// Destination errors are `resource-unavailable` (4); configuration problems are
    /// `internal-error` (5) because the operator, not the task, must fix them.
    pub fn exit_code(&self) -> i32 {
        match self {
            ScriptError::TaskJson { .. }
            | ScriptError::Rejected(_)
            | ScriptError::NotVerified { .. }
            | ScriptError::TaskTypeMismatch { .. }
            | ScriptError::OutputCollision { .. }
            | ScriptError::BadInput(_) => EXIT_MALFORMED_PAYLOAD,
            ScriptError::HashMismatch { .. }
            | ScriptError::NotRegularFile { .. }
            | ScriptError::UnsafeDestination { .. }
            | ScriptError::Conflict { .. } => EXIT_FAILURE,
            ScriptError::Destination { .. } => EXIT_RESOURCE_UNAVAILABLE,
            ScriptError::MissingEnv { .. }
            | ScriptError::Config { .. }
            | ScriptError::Validator(_)
            | ScriptError::Io { .. }
            | ScriptError::Manifest { .. }
            | ScriptError::Signing { .. }
            | ScriptError::SigningKey { .. }
            | ScriptError::Internal(_) => EXIT_INTERNAL_ERROR,
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ScriptError + '_ {
    move |source| ScriptError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The environment the worker gives a script.
#[derive(Debug, Clone)]
pub struct ScriptEnv {
    /// `TASK_ID`.
    pub task_id: TaskId,
    /// `RUN_ID`.
    pub run_id: u32,
    /// `CHAINLOCK_WORK_DIR`.
    pub work_dir: PathBuf,
    /// `CHAINLOCK_ARTIFACT_DIR`.
    pub artifact_dir: PathBuf,
}

impl ScriptEnv {
    /// Reads the contract's variables through `get` (the process environment in production).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<ScriptEnv, ScriptError> {
        let need = |name: &'static str| {
            get(name)
                .filter(|v| !v.is_empty())
                .ok_or(ScriptError::MissingEnv { name })
        };
        let task_id = TaskId::parse(&need("TASK_ID")?)
            .map_err(|_| ScriptError::MissingEnv { name: "TASK_ID" })?;
        let run_id = need("RUN_ID")?
            .parse()
            .map_err(|_| ScriptError::MissingEnv { name: "RUN_ID" })?;
        Ok(ScriptEnv {
            task_id,
            run_id,
            work_dir: PathBuf::from(need("CHAINLOCK_WORK_DIR")?),
            artifact_dir: PathBuf::from(need("CHAINLOCK_ARTIFACT_DIR")?),
        })
    }

    /// Reads the contract's variables from the process environment.
    pub fn from_process() -> Result<ScriptEnv, ScriptError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

/// Reads a small file completely, refusing anything larger than `limit` bytes.
pub(crate) fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, ScriptError> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        return Err(ScriptError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(format!("file larger than {limit} bytes")),
        });
    }
    Ok(bytes)
}

/// Reads and parses a TOML script configuration.
pub(crate) fn read_toml_config<T: serde::de::DeserializeOwned>(
    path: &Path,
) -> Result<T, ScriptError> {
    let bytes = read_capped(path, MAX_CONFIG_BYTES).map_err(|e| ScriptError::Config {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| ScriptError::Config {
        path: path.to_owned(),
        reason: "not UTF-8".into(),
    })?;
    // Position and message only: the source line may hold a secret.
    crate::toml_text::from_str(&text).map_err(|e| ScriptError::Config {
        path: path.to_owned(),
        reason: format!("not valid TOML: {e}"),
    })
}

/// Reads `task.json` and validates it with `validator`.
pub fn load_task(env: &ScriptEnv, validator: &TaskValidator) -> Result<ValidatedTask, ScriptError> {
    let path = env.work_dir.join("task.json");
    // Read a little more than the limit so an oversized file is reported by the validator's
    // size rule with its real size class, without reading an unbounded file.
    let limit = u64::try_from(validator.limits().max_task_bytes).unwrap_or(u64::MAX);
    let file = std::fs::File::open(&path).map_err(io_err(&path))?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_err(&path))?;
    if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
        let rejection = validator
            .validate(&serde_json::Value::Null, bytes.len())
            .err()
            .ok_or_else(|| ScriptError::TaskJson {
                reason: "task.json too large".into(),
            })?;
        return Err(ScriptError::Rejected(rejection));
    }
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| ScriptError::TaskJson {
            reason: e.to_string(),
        })?;
    validator
        .validate(&raw, bytes.len())
        .map_err(ScriptError::Rejected)
}

/// Builds a validator from a script config's task fields; the allowed scope values are the
/// keys of the script's scope map (a scope the script has no key/destination for is unknown).
pub(crate) fn build_validator<'a>(
    payload_schema: &Path,
    scope_prefix: &str,
    allowed: impl IntoIterator<Item = &'a String>,
    limits: &Limits,
) -> Result<TaskValidator, ScriptError> {
    let rules = ScopeRules::new(scope_prefix, allowed.into_iter().cloned())?;
    Ok(TaskValidator::new(payload_schema, rules, limits.clone())?)
}

/// One upstream file the task asked for, located and listed in the verified manifest.
#[derive(Debug, Clone)]
pub struct VerifiedInput {
    /// The upstream task.
    pub task_id: TaskId,
    /// The upstream task's kind from the verified manifest (never the payload's label).
    pub task_kind: LinkKind,
    /// The artifact path.
    pub path: ArtifactPath,
    /// `<work_dir>/cot/<taskId>/<path>`.
    pub file: PathBuf,
    /// sha256 from the manifest (lower-case hex).
    pub sha256: String,
    /// Size from the manifest.
    pub size: u64,
}

/// Reads `cot/manifest.json` and matches every requested upstream file against it. Optional
/// entries missing from the manifest are skipped; a missing non-optional file is refused, and
/// so is a payload `taskType` that differs from the file's verified `taskKind`.
pub fn resolve_inputs(
    env: &ScriptEnv,
    task: &ValidatedTask,
) -> Result<Vec<VerifiedInput>, ScriptError> {
    let cot = env.work_dir.join("cot");
    let manifest_path = cot.join(MANIFEST_FILE);
    let bad = |reason: String| ScriptError::Manifest {
        path: manifest_path.clone(),
        reason,
    };
    let bytes = read_capped(&manifest_path, MAX_MANIFEST_BYTES)?;
    // The version first, so an older worker's manifest is reported as such rather than as a
    // missing field.
    #[derive(serde::Deserialize)]
    struct VersionOnly {
        version: u32,
    }
    let VersionOnly { version } = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if version != MANIFEST_VERSION {
        return Err(bad(format!(
            "unknown version {version} (this script reads version {MANIFEST_VERSION})"
        )));
    }
    let manifest: VerifiedManifest =
        serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut by_key = HashMap::new();
    for a in &manifest.artifacts {
        if !is_sha256_hex(&a.sha256) {
            return Err(bad(format!("{}/{}: malformed sha256", a.task_id, a.path)));
        }
        by_key.insert((a.task_id.as_str(), a.path.as_str()), a);
    }
    let mut out = Vec::new();
    for up in task.upstream_artifacts() {
        for p in &up.paths {
            match by_key.get(&(up.task_id.as_str(), p.as_str())) {
                Some(a) if a.task_kind.as_str() != up.task_type => {
                    return Err(ScriptError::TaskTypeMismatch {
                        task_id: up.task_id.clone(),
                        claimed: up.task_type.clone(),
                        verified: a.task_kind,
                    });
                }
                Some(a) => out.push(VerifiedInput {
                    task_id: up.task_id.clone(),
                    task_kind: a.task_kind,
                    path: p.clone(),
                    file: cot.join(up.task_id.as_str()).join(p.as_str()),
                    sha256: a.sha256.clone(),
                    size: a.size,
                }),
                None if up.optional => {
                    println!(
                        "optional upstream file {}/{} is absent; skipped",
                        up.task_id, p
                    );
                }
                None => {
                    return Err(ScriptError::NotVerified {
                        task_id: up.task_id.clone(),
                        path: p.as_str().to_owned(),
                    });
                }
            }
        }
    }
    Ok(out)
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Digests of one file, computed in a single streaming pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigests {
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Lower-case hex sha512.
    pub sha512: String,
    /// Bytes read.
    pub size: u64,
}

/// Opens a verified input, refusing symlinks and anything that is not a regular file inside
/// `<work_dir>/cot`.
pub(crate) fn open_input(
    env: &ScriptEnv,
    input: &VerifiedInput,
) -> Result<std::fs::File, ScriptError> {
    let not_regular = || ScriptError::NotRegularFile {
        path: input.file.clone(),
    };
    let meta = std::fs::symlink_metadata(&input.file).map_err(io_err(&input.file))?;
    if !meta.file_type().is_file() {
        return Err(not_regular());
    }
    let root = std::fs::canonicalize(env.work_dir.join("cot")).map_err(io_err(&env.work_dir))?;
    let real = std::fs::canonicalize(&input.file).map_err(io_err(&input.file))?;
    if !real.starts_with(&root) {
        return Err(not_regular());
    }
    let file = std::fs::File::open(&real).map_err(io_err(&input.file))?;
    let meta = file.metadata().map_err(io_err(&input.file))?;
    if !meta.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

/// Streams `reader` through sha256 and sha512 in fixed-size chunks (constant memory).
pub fn digest_reader(mut reader: impl Read, path: &Path) -> Result<FileDigests, ScriptError> {
    let mut s256 = Sha256::new();
    let mut s512 = Sha512::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        s256.update(chunk);
        s512.update(chunk);
        size += n as u64;
    }
    Ok(FileDigests {
        sha256: hex::encode(s256.finalize()),
        sha512: hex::encode(s512.finalize()),
        size,
    })
}

/// Re-hashes a verified input and compares it with the manifest (defence in depth).
pub fn recheck_input(env: &ScriptEnv, input: &VerifiedInput) -> Result<FileDigests, ScriptError> {
    let file = open_input(env, input)?;
    let d = digest_reader(std::io::BufReader::new(file), &input.file)?;
    check_digest(input, &d.sha256, d.size)?;
    Ok(d)
}

/// Compares a digest with the manifest entry.
pub(crate) fn check_digest(
    input: &VerifiedInput,
    sha256: &str,
    size: u64,
) -> Result<(), ScriptError> {
    if sha256 != input.sha256 || size != input.size {
        return Err(ScriptError::HashMismatch {
            task_id: input.task_id.clone(),
            path: input.path.as_str().to_owned(),
            expected: input.sha256.clone(),
            actual: sha256.to_owned(),
            expected_size: input.size,
            actual_size: size,
        });
    }
    Ok(())
}

/// Writes `bytes` to `<artifact_dir>/<name>`, creating parent directories; refuses to replace
/// an existing file (two outputs with one name is a bug, not something to paper over).
///
/// Not fsynced: the worker reads every artifact back (hashing it into its own staging) right
/// after the script exits, from the page cache; a crash before that loses the run, which the
/// queue reruns, so a flush per file (one per signature: hundreds per task) buys nothing.
pub(crate) fn write_artifact(
    artifact_dir: &Path,
    name: &str,
    bytes: &[u8],
) -> Result<PathBuf, ScriptError> {
    use std::io::Write;
    crate::validate::path::check_relative_path(name)
        .map_err(|e| ScriptError::BadInput(format!("output name {name:?}: {e}")))?;
    let path = artifact_dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                ScriptError::OutputCollision {
                    name: name.to_owned(),
                }
            } else {
                ScriptError::Io {
                    path: path.clone(),
                    source: e,
                }
            }
        })?;
    f.write_all(bytes).map_err(io_err(&path))?;
    Ok(path)
}

/// Prints the error for the task log and returns its exit code.
pub fn report(err: &ScriptError) -> i32 {
    let code = err.exit_code();
    eprintln!("error: {err}");
    eprintln!("exiting with status {code}");
    code
}
