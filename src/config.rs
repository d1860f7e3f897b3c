//! Worker configuration: one TOML file, checked completely before anything is claimed.
//!
//! Why a module of its own: a release worker runs unattended for years, so a typo in its
//! configuration must stop it at start-up with a message that names the key, not surface weeks
//! later as a half-applied setting. Loading is three steps, each fail-closed:
//! 1. parse the TOML;
//! 2. validate it against `schemas/config.schema.json` (draft 2020-12, embedded in the binary,
//!    `additionalProperties: false` everywhere) so unknown keys, wrong types and missing keys are
//!    reported by JSON pointer;
//! 3. deserialize into structs with `deny_unknown_fields` and check what a schema cannot express
//!    (the script exists and is executable, directories are not dangerous, plain `http` only to
//!    loopback).
//!
//! What this module must not do: hold secrets. The permanent credentials live in a separate file
//! (or the environment) named by `[credentials]`, the chain-of-trust signing key in the file
//! named by `[chain_of_trust] signing_key`; this module only says where they are. Loading the
//! files it names (payload schema, chain policy, signing key, trust store) is the worker's
//! start-up (`crate::worker::Startup`), which fails with exit 64 too.
//!
//! The sections `[task]`, `[chain_of_trust]` and `[verify]` are required: a release worker that
//! does not validate its input, verify its chain and sign its output must not start.
//! The environment is read through [`EnvSource`], so tests use a map.
//!
//! **API Boundary:** the file format is operators' interface. Adding a section is one field in
//! [`Config`] plus one property in the schema; renaming a key needs a compatibility note.

use crate::queue::{Credentials, CredentialsError, EnvSource};
use crate::trust::TrustPin;
pub use crate::validate::TaskConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

/// The embedded JSON Schema (draft 2020-12) every configuration file must satisfy.
pub const CONFIG_SCHEMA: &str = include_str!("../schemas/config.schema.json");

/// Environment variable names the script always receives (set by the worker, never allowlisted).
pub const SCRIPT_ENV_FIXED: [&str; 5] = [
    "TASK_ID",
    "RUN_ID",
    "TASKCLUSTER_ROOT_URL",
    "CHAINLOCK_WORK_DIR",
    "CHAINLOCK_ARTIFACT_DIR",
];

/// The whole configuration, immutable after [`Config::load`].
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[queue]`: where to claim work and who we are.
    pub queue: QueueConfig,
    /// `[credentials]`: where the permanent worker credentials come from.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// `[paths]`: the work area and task logs.
    pub paths: PathsConfig,
    /// `[script]`: the one script this worker runs.
    pub script: ScriptConfig,
    /// `[timing]`: claim, reclaim and backoff timing.
    #[serde(default)]
    pub timing: TimingConfig,
    /// `[task]`: restricted input validation (payload schema, resource scope, size limits).
    pub task: TaskConfig,
    /// `[chain_of_trust]`: our signing key and the trust store that judges upstream signatures.
    pub chain_of_trust: ChainOfTrustConfig,
    /// `[verify]`: the chain-of-trust policy upstream chains are verified against.
    pub verify: VerifyConfig,
    /// `[metrics]`: the Prometheus and health endpoint (off unless `listen` is set).
    #[serde(default, skip_serializing_if = "MetricsConfig::is_off")]
    pub metrics: MetricsConfig,
    /// The file this configuration was loaded from (absolute when given so); not a key.
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[chain_of_trust]`: signing our own chain-of-trust document and trusting others'.
///
/// Every path is absolute or relative to the config file's directory.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainOfTrustConfig {
    /// The worker's OpenPGP private key (armored TSK), mode 0600 or stricter; it signs
    /// `public/chain-of-trust.json`. Never given to the script.
    pub signing_key: PathBuf,
    /// Optional ed25519 private key (base64 of the 32-byte seed, mode 0600 or stricter; see
    /// [`crate::ed25519_key`]). When set, the worker also publishes the raw ed25519 signature
    /// `public/chain-of-trust.json.sig` over the same bytes. Never given to the script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ed25519_key: Option<PathBuf>,
    /// Our worker implementation's name in the trust store (`chainlock`): the trust policy must
    /// list `signing_key` under it, or start-up refuses (our documents would not verify).
    pub worker_impl: String,
    /// The trust store directory (`keys/`: `trust.toml`, `sigs/`, `history/`).
    pub keys_dir: PathBuf,
    /// The trust policy version the operator pins (the walk to the newest starts here).
    pub pinned_version: u64,
    /// Lower-case hex sha256 of the pinned version's exact `trust.toml` bytes.
    pub pinned_sha256: String,
    /// Where the newest verified version is persisted (rollback protection across restarts).
    pub state_file: PathBuf,
    /// How far a signature may be dated after the time it was observed (upstream signatures,
    /// trust policy root signatures). Default 300.
    #[serde(default = "default_max_clock_skew_seconds")]
    pub max_clock_skew_seconds: u64,
}

fn default_max_clock_skew_seconds() -> u64 {
    300
}

impl ChainOfTrustConfig {
    /// The pin as the trust store takes it.
    pub fn pin(&self) -> TrustPin {
        TrustPin {
            version: self.pinned_version,
            sha256: self.pinned_sha256.clone(),
        }
    }

    /// [`Self::max_clock_skew_seconds`] as a chrono duration (saturating).
    pub fn max_clock_skew(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::try_from(self.max_clock_skew_seconds).unwrap_or(i64::MAX))
    }
}

/// `[verify]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// The chain-of-trust policy file (`etc/chain-policy.example.toml` documents one).
    pub policy: PathBuf,
}

/// `[script.run_as]`: the uid and gid the script runs as (the worker must be root to use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// `[queue]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Taskcluster root URL (`https://…`; plain `http` only to a loopback host).
    pub root_url: String,
    /// `<provisionerId>/<workerType>`.
    pub task_queue_id: String,
    /// Worker group reported to the queue.
    pub worker_group: String,
    /// Worker id reported to the queue.
    pub worker_id: String,
    /// How work is found: `claim-work` (default) or, for queues of before Taskcluster v24
    /// only, `azure-poll`.
    #[serde(default)]
    pub protocol: Protocol,
    /// Where artifact bytes go: `s3` (default; createArtifact answers with a presigned PUT
    /// URL) or `object` (createArtifact answers with object-service credentials; the bytes go
    /// through the object service's createUpload / finishUpload, then finishArtifact).
    #[serde(default)]
    pub artifact_storage: ArtifactStorage,
}

/// `[queue] artifact_storage`: how artifact bytes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArtifactStorage {
    /// `storageType: "s3"`: a presigned PUT URL from the queue.
    #[default]
    S3,
    /// `storageType: "object"`: the object service, with the credentials the queue hands out.
    Object,
}

/// `[queue] protocol`: how the worker finds and claims work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// `claimWork` long polls: every Taskcluster queue since v24.
    #[default]
    ClaimWork,
    /// Legacy: `pollTaskUrls`, Azure Storage queue messages, `claimTask` (scriptworker ≤ 3.x).
    /// Only for deployments that still run a queue of that era.
    AzurePoll,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::ClaimWork => "claim-work",
            Protocol::AzurePoll => "azure-poll",
        }
    }
}

/// `[credentials]`: a JSON file `{clientId, accessToken, certificate?}`, or, when `file` is
/// absent, `TASKCLUSTER_CLIENT_ID` / `TASKCLUSTER_ACCESS_TOKEN` / `TASKCLUSTER_CERTIFICATE`.
/// Defaulting to the environment is not a weakening: either way the operator provides them.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Path of the credentials file (absolute, or relative to the config file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

/// `[paths]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PathsConfig {
    /// Work area root. The worker owns it: per-task directories (`task.json`, `cot/`,
    /// artifacts) are created inside and removed after each task and at start-up.
    pub work_dir: PathBuf,
    /// Where task logs are kept locally (`<taskId>-<runId>.log`), outside the work area so they
    /// survive its cleanup.
    pub log_dir: PathBuf,
    /// How many task logs to keep in `log_dir` (oldest removed first). Default 200.
    #[serde(default = "default_keep_task_logs")]
    pub keep_task_logs: u32,
}

fn default_keep_task_logs() -> u32 {
    200
}

/// `[script]`: the operator's script. The task never chooses what runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// Exact argv; nothing is appended. `argv[0]` is made absolute at load time.
    pub argv: Vec<String>,
    /// Upper bound of a run in seconds; `payload.maxRunTime` may only shorten it.
    pub timeout_secs: u64,
    /// Seconds between SIGTERM and SIGKILL to the script's process group. Default 10.
    #[serde(default = "default_kill_grace_secs")]
    pub kill_grace_secs: u64,
    /// Names of worker environment variables passed through to the script. Default: none.
    #[serde(default)]
    pub env_allowlist: Vec<String>,
    /// Run the script as this uid/gid instead of the worker's own (isolation from the signing
    /// key and credentials). Required by `isolation = "uid"` and `"namespaces"`; uid and gid 0
    /// are refused. The uid must be dedicated to this worker: after every run (and at start-up)
    /// every process of that uid is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_as: Option<RunAs>,
    /// The isolation level the operator expects (required, no default: `none` must be chosen
    /// explicitly). Start-up proves the host provides it and refuses to start otherwise.
    pub isolation: Isolation,
    /// `namespaces` only: extra host paths visible read-only in the sandbox (the script's own
    /// config, schemas, binaries outside `/usr`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ro_paths: Vec<PathBuf>,
    /// `namespaces` only: extra host directories visible writable in the sandbox (for example a
    /// `file://` push destination).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rw_paths: Vec<PathBuf>,
    /// `namespaces` only: share the host's network. Default false (own loopback only).
    #[serde(default)]
    pub network: bool,
    /// `namespaces` only: scope value (one of `task.allowed_scopes`) -> files made visible,
    /// read-only at the same path, only to runs whose validated scope is that value (release
    /// keys of `chainlock script sign`). The worker copies them into the run (owned by the
    /// script's uid, mode 0400) and removes the copy with the run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scope_files: BTreeMap<String, Vec<PathBuf>>,
    /// Most artifacts per task. Default 1000.
    #[serde(default = "default_max_artifacts")]
    pub max_artifacts: usize,
    /// Most bytes of artifacts per task. Default 8 GiB.
    #[serde(default = "default_max_artifact_bytes")]
    pub max_artifact_bytes: u64,
    /// The bubblewrap binary (`namespaces`). Default `/usr/bin/bwrap`.
    #[serde(default = "default_bwrap")]
    pub bwrap: PathBuf,
    /// The setpriv binary (`uid`, `namespaces`). Default `/usr/bin/setpriv`.
    #[serde(default = "default_setpriv")]
    pub setpriv: PathBuf,
}

/// `[script] isolation`: how the script is contained (README "Security model" says exactly
/// what each level protects).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// bubblewrap: own uid, pid, mount, ipc and uts namespaces (and network unless
    /// `network = true`); only the run's directories and read-only system paths are visible.
    Namespaces,
    /// Own uid only: the host filesystem as that uid sees it.
    Uid,
    /// The worker's own uid: the script can read everything the worker can.
    None,
}

impl Isolation {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::Uid => "uid",
            Isolation::None => "none",
        }
    }
}

fn default_max_artifacts() -> usize {
    1000
}
fn default_max_artifact_bytes() -> u64 {
    8 * 1024 * 1024 * 1024
}
fn default_bwrap() -> PathBuf {
    PathBuf::from("/usr/bin/bwrap")
}
fn default_setpriv() -> PathBuf {
    PathBuf::from("/usr/bin/setpriv")
}

fn default_kill_grace_secs() -> u64 {
    10
}

impl ScriptConfig {
    /// [`Self::timeout_secs`] as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// [`Self::kill_grace_secs`] as a duration.
    pub fn kill_grace(&self) -> Duration {
        Duration::from_secs(self.kill_grace_secs)
    }
}

/// `[metrics]`: where `/metrics`, `/healthz` and `/readyz` are served (see README,
/// "Observability"). Off by default. The answers carry no secret and no task-controlled label,
/// but they are unauthenticated: bind to loopback, or to an address only the scraper and the
/// kubelet reach.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `ip:port` to listen on, e.g. `127.0.0.1:9464` or `[::1]:9464`; unset means no
    /// listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `listen`, parsed by [`Config::load`] (which names `/metrics/listen` when it is not an
    /// address).
    #[serde(skip)]
    pub addr: Option<std::net::SocketAddr>,
}

impl MetricsConfig {
    /// No listener configured.
    pub fn is_off(&self) -> bool {
        self.listen.is_none()
    }
}

/// `[timing]`; every key is optional with the documented default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimingConfig {
    /// Reclaim this many seconds before `takenUntil`. Default 180 (as generic-worker).
    #[serde(default = "default_reclaim_margin_secs")]
    pub reclaim_margin_secs: u64,
    /// Pause after an empty claimWork answer. Default 10 (as scriptworker).
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// First pause after a failed queue call. Default 1.
    #[serde(default = "default_backoff_min_secs")]
    pub backoff_min_secs: u64,
    /// Longest pause after repeated failed queue calls. Default 60.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
    /// Longest one artifact upload or download may take, over every attempt and retry pause.
    /// Default 3600.
    #[serde(default = "default_transfer_deadline_secs")]
    pub transfer_deadline_secs: u64,
    /// Slowest accepted transfer, in bytes per second: a download body delivering less in a
    /// `transfer_rate_window_secs` window, or an upload whose store has taken less than this
    /// rate on average since the attempt began, is cut and retried (within the deadline).
    /// `0` turns the check off. Default 4096.
    #[serde(default = "default_min_transfer_rate")]
    pub min_transfer_rate: u64,
    /// How often the minimum rate is checked. Default 30.
    #[serde(default = "default_transfer_rate_window_secs")]
    pub transfer_rate_window_secs: u64,
}

impl TimingConfig {
    /// The queue client's transfer limits these settings give (everything else default).
    pub fn client_limits(&self) -> crate::queue::ClientLimits {
        let deadline = Duration::from_secs(self.transfer_deadline_secs);
        let window = Duration::from_secs(self.transfer_rate_window_secs);
        crate::queue::ClientLimits {
            download_deadline: deadline,
            min_download_rate: self.min_transfer_rate,
            download_rate_window: window,
            upload_deadline: deadline,
            min_upload_rate: self.min_transfer_rate,
            upload_rate_window: window,
            ..Default::default()
        }
    }
}

fn default_reclaim_margin_secs() -> u64 {
    180
}
fn default_poll_interval_secs() -> u64 {
    10
}
fn default_backoff_min_secs() -> u64 {
    1
}
fn default_backoff_max_secs() -> u64 {
    60
}
fn default_transfer_deadline_secs() -> u64 {
    3600
}
fn default_min_transfer_rate() -> u64 {
    4096
}
fn default_transfer_rate_window_secs() -> u64 {
    30
}

impl Default for TimingConfig {
    /// Timing is not security-relevant, so it has defaults (documented on each field).
    fn default() -> Self {
        TimingConfig {
            reclaim_margin_secs: default_reclaim_margin_secs(),
            poll_interval_secs: default_poll_interval_secs(),
            backoff_min_secs: default_backoff_min_secs(),
            backoff_max_secs: default_backoff_max_secs(),
            transfer_deadline_secs: default_transfer_deadline_secs(),
            min_transfer_rate: default_min_transfer_rate(),
            transfer_rate_window_secs: default_transfer_rate_window_secs(),
        }
    }
}

/// A path handed into the sandbox: absolute, normal components only, and never `/` itself or
/// a top-level system directory the sandbox already provides read-only.
fn check_sandbox_path(p: &Path) -> Result<(), &'static str> {
    if !p.is_absolute() {
        return Err("must be an absolute path");
    }
    if p.components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return Err("must not contain `.` or `..`");
    }
    if p.components().count() < 2 {
        return Err("must not be `/`");
    }
    Ok(())
}

/// One schema violation, located by JSON pointer into the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// JSON pointer of the offending key (`/script/timeout_secs`, `/queue/unknown_key`).
    pub pointer: String,
    /// What is wrong (values are masked).
    pub message: String,
}

/// Why a configuration file was refused. Every variant maps to exit code 64 (`EX_USAGE`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// Line, column and the parser's message, never the source text (which may hold a
        /// secret): see [`crate::toml_text`].
        message: String,
    },
    /// The file does not match the configuration schema.
    #[error("config file {path} is invalid: {}", fmt_violations(.violations))]
    Schema {
        /// The file.
        path: PathBuf,
        /// Every violation found, in schema order.
        violations: Vec<Violation>,
    },
    /// The permanent credentials could not be loaded (the message never holds the token).
    #[error("config file {path}: credentials from {source_desc}: {error}")]
    Credentials {
        /// The config file.
        path: PathBuf,
        /// `file /etc/…` or `environment`.
        source_desc: String,
        /// Why.
        error: CredentialsError,
    },
    /// A key has a valid type but an unacceptable value.
    #[error("config file {path}: {pointer}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// JSON pointer of the key.
        pointer: String,
        /// Why the value is refused.
        reason: String,
    },
}

impl ConfigError {
    /// Every configuration error is a usage error: exit 64, nothing claimed.
    pub fn exit_code(&self) -> i32 {
        crate::exit::EX_USAGE
    }

    /// The JSON pointers the error is about (empty for read and TOML errors).
    pub fn pointers(&self) -> Vec<&str> {
        match self {
            ConfigError::Schema { violations, .. } => {
                violations.iter().map(|v| v.pointer.as_str()).collect()
            }
            ConfigError::Invalid { pointer, .. } => vec![pointer.as_str()],
            ConfigError::Credentials { .. } => vec!["/credentials"],
            ConfigError::Read { .. } | ConfigError::Toml { .. } => Vec::new(),
        }
    }
}

fn fmt_violations(v: &[Violation]) -> String {
    v.iter()
        .map(|v| format!("{}: {}", v.pointer, v.message))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Config {
    /// Reads, validates and finalizes the configuration file at `path`.
    pub fn load(path: &Path, env: &impl EnvSource) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path, env)
    }

    /// Validates and finalizes configuration text; `path` names the file in errors and anchors
    /// relative paths (`argv[0]` with a `/`, the credentials file).
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        env: &impl EnvSource,
    ) -> Result<Config, ConfigError> {
        let value: toml::Value =
            crate::toml_text::from_str(text).map_err(|e| ConfigError::Toml {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let json = serde_json::to_value(&value).map_err(|e| ConfigError::Toml {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        check_schema(&json, path)?;
        let mut config: Config =
            serde_json::from_value(json).map_err(|e| ConfigError::Invalid {
                path: path.to_owned(),
                pointer: String::new(),
                reason: e.to_string(),
            })?;
        config.source = path.to_owned();
        config.finalize(path, env)?;
        Ok(config)
    }

    /// The `[script]` isolation rules the schema cannot express: which keys each level needs
    /// or forbids. Whether the host provides the level is proved at start-up
    /// ([`crate::sandbox::Sandbox::probe`]), not here.
    fn check_isolation(&self) -> Result<(), ConfigError> {
        let invalid = |pointer: &str, reason: String| ConfigError::Invalid {
            path: self.source.clone(),
            pointer: pointer.to_owned(),
            reason,
        };
        let s = &self.script;
        if s.isolation != Isolation::None && s.run_as.is_none() {
            return Err(invalid(
                "/script/run_as",
                format!(
                    "isolation = \"{}\" needs run_as (a uid and gid dedicated to this worker's \
                     script)",
                    s.isolation.as_str()
                ),
            ));
        }
        if s.isolation == Isolation::None && s.run_as.is_some() {
            return Err(invalid(
                "/script/run_as",
                "isolation = \"none\" runs the script as the worker's uid: set isolation = \"uid\" \
                 or \"namespaces\" to use run_as"
                    .into(),
            ));
        }
        if s.isolation != Isolation::Namespaces {
            let only_ns = [
                ("/script/ro_paths", !s.ro_paths.is_empty()),
                ("/script/rw_paths", !s.rw_paths.is_empty()),
                ("/script/network", s.network),
                ("/script/scope_files", !s.scope_files.is_empty()),
            ];
            if let Some((pointer, _)) = only_ns.iter().find(|(_, set)| *set) {
                return Err(invalid(
                    pointer,
                    format!(
                        "only meaningful with isolation = \"namespaces\" (this config says \"{}\": \
                         the script sees the host filesystem and network as they are)",
                        s.isolation.as_str()
                    ),
                ));
            }
        }
        let lists = [("ro_paths", &s.ro_paths), ("rw_paths", &s.rw_paths)];
        for (name, list) in lists {
            for (i, p) in list.iter().enumerate() {
                check_sandbox_path(p)
                    .map_err(|r| invalid(&format!("/script/{name}/{i}"), r.to_owned()))?;
            }
        }
        for (scope, files) in &s.scope_files {
            if !self.task.allowed_scopes.contains(scope) {
                return Err(invalid(
                    &format!("/script/scope_files/{scope}"),
                    "not one of task.allowed_scopes".into(),
                ));
            }
            for (i, p) in files.iter().enumerate() {
                check_sandbox_path(p).map_err(|r| {
                    invalid(&format!("/script/scope_files/{scope}/{i}"), r.to_owned())
                })?;
            }
        }
        Ok(())
    }

    /// Checks what the schema cannot express and makes relative paths absolute.
    fn finalize(&mut self, path: &Path, env: &impl EnvSource) -> Result<(), ConfigError> {
        let invalid = |pointer: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            pointer: pointer.to_owned(),
            reason,
        };
        let base = path.parent().unwrap_or(Path::new("."));

        if let Some(listen) = &self.metrics.listen {
            let addr = listen.parse().map_err(|_| {
                invalid(
                    "/metrics/listen",
                    format!(
                        "{listen:?} is not an ip:port address (e.g. \"127.0.0.1:9464\"; no host \
                         names)"
                    ),
                )
            })?;
            self.metrics.addr = Some(addr);
        }

        let url = url::Url::parse(&self.queue.root_url)
            .map_err(|e| invalid("/queue/root_url", format!("not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&url) => {}
            "http" => {
                return Err(invalid(
                    "/queue/root_url",
                    "plain http is only allowed to a loopback host: task credentials travel in \
                     claim responses"
                        .into(),
                ));
            }
            other => return Err(invalid("/queue/root_url", format!("scheme {other:?}"))),
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(invalid(
                "/queue/root_url",
                "must not carry a query, fragment or user info".into(),
            ));
        }
        self.queue.root_url = self.queue.root_url.trim_end_matches('/').to_owned();

        check_area_dir(&self.paths.work_dir).map_err(|r| invalid("/paths/work_dir", r))?;
        check_area_dir(&self.paths.log_dir).map_err(|r| invalid("/paths/log_dir", r))?;
        if self.paths.log_dir.starts_with(&self.paths.work_dir)
            || self.paths.work_dir.starts_with(&self.paths.log_dir)
        {
            return Err(invalid(
                "/paths/log_dir",
                "must not overlap paths.work_dir (the work area is wiped)".into(),
            ));
        }

        if let Some(file) = &self.credentials.file {
            self.credentials.file = Some(base.join(file));
        }
        self.task.payload_schema = base.join(&self.task.payload_schema);
        let cot = &mut self.chain_of_trust;
        cot.signing_key = base.join(&cot.signing_key);
        if let Some(key) = &cot.ed25519_key {
            cot.ed25519_key = Some(base.join(key));
        }
        cot.keys_dir = base.join(&cot.keys_dir);
        cot.state_file = base.join(&cot.state_file);
        self.verify.policy = base.join(&self.verify.policy);
        if cot.state_file.starts_with(&self.paths.work_dir) {
            return Err(invalid(
                "/chain_of_trust/state_file",
                "must not be inside paths.work_dir (the work area is wiped)".into(),
            ));
        }
        if let Some(run_as) = self.script.run_as
            && (run_as.uid == 0 || run_as.gid == 0)
        {
            return Err(invalid(
                "/script/run_as",
                "uid and gid 0 would give the script root: omit run_as instead".into(),
            ));
        }
        self.check_isolation()?;

        let argv0 = self
            .script
            .argv
            .first()
            .cloned()
            .ok_or_else(|| invalid("/script/argv", "must not be empty".into()))?;
        let resolved = resolve_program(&argv0, base, env)
            .map_err(|reason| invalid("/script/argv/0", reason))?;
        if let Some(first) = self.script.argv.first_mut() {
            *first = resolved.to_string_lossy().into_owned();
        }

        for (i, name) in self.script.env_allowlist.iter().enumerate() {
            if SCRIPT_ENV_FIXED.contains(&name.as_str())
                || name.starts_with("TASKCLUSTER_")
                || name.starts_with("CHAINLOCK_")
            {
                return Err(invalid(
                    &format!("/script/env_allowlist/{i}"),
                    format!(
                        "{name} is reserved: the script never receives Taskcluster credentials \
                         or chainlock settings from the worker's environment"
                    ),
                ));
            }
        }

        if self.timing.backoff_min_secs > self.timing.backoff_max_secs {
            return Err(invalid(
                "/timing/backoff_min_secs",
                "must not exceed timing.backoff_max_secs".into(),
            ));
        }
        Ok(())
    }

    /// Loads the worker's permanent credentials from `[credentials] file`, or from the
    /// environment when no file is configured. `config_path` names the config in errors.
    pub fn load_credentials(
        &self,
        config_path: &Path,
        env: &impl EnvSource,
    ) -> Result<Credentials, ConfigError> {
        let (source_desc, loaded) = match &self.credentials.file {
            Some(file) => (
                format!("file {}", file.display()),
                Credentials::from_json_file(file),
            ),
            None => ("environment".to_owned(), Credentials::from_env(env)),
        };
        loaded.map_err(|error| ConfigError::Credentials {
            path: config_path.to_owned(),
            source_desc,
            error,
        })
    }

    /// The configuration as TOML, for `chainlock config check`. It holds no secrets: the
    /// credentials are in their own file or the environment.
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings and integers cannot fail.
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

fn check_schema(json: &serde_json::Value, path: &Path) -> Result<(), ConfigError> {
    let schema: serde_json::Value =
        serde_json::from_str(CONFIG_SCHEMA).map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            pointer: String::new(),
            reason: format!("embedded schema is not JSON (build defect): {e}"),
        })?;
    let validator = jsonschema::draft202012::options()
        .build(&schema)
        .map_err(|e| ConfigError::Invalid {
            path: path.to_owned(),
            pointer: String::new(),
            reason: format!("embedded schema does not compile (build defect): {e}"),
        })?;
    let violations: Vec<Violation> = validator
        .iter_errors(json)
        .map(|e| {
            let base = e.instance_path().as_str().to_owned();
            let pointer = match e.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } => {
                    match unexpected.first() {
                        Some(key) => format!("{base}/{}", escape_pointer(key)),
                        None => base,
                    }
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let key = property.as_str().unwrap_or_default();
                    format!("{base}/{}", escape_pointer(key))
                }
                _ => base,
            };
            Violation {
                pointer,
                message: e.masked().to_string(),
            }
        })
        .collect();
    if violations.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Schema {
            path: path.to_owned(),
            violations,
        })
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Refuses directories the worker must never own (and therefore never wipe): relative paths,
/// `..`, the root and top-level system directories.
pub fn check_area_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err("must be an absolute path".into());
    }
    if dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err("must not contain `.` or `..`".into());
    }
    let normal = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    if normal < 2 {
        return Err(format!(
            "{} is too close to the filesystem root: use a dedicated directory such as \
             /var/lib/chainlock/work",
            dir.display()
        ));
    }
    Ok(())
}

/// Makes `argv[0]` absolute: a name with a `/` is taken relative to the config file's
/// directory, a bare name is looked up in `PATH`. The result must be an executable file.
fn resolve_program(argv0: &str, base: &Path, env: &impl EnvSource) -> Result<PathBuf, String> {
    let candidate = if argv0.contains('/') {
        let p = base.join(argv0);
        if is_executable_file(&p) {
            Some(p)
        } else {
            return Err(format!("{} is not an executable file", p.display()));
        }
    } else {
        env.var("PATH").and_then(|path| {
            path.split(':')
                .filter(|d| d.starts_with('/'))
                .map(|d| Path::new(d).join(argv0))
                .find(|p| is_executable_file(p))
        })
    };
    let found = candidate.ok_or_else(|| format!("{argv0:?} not found in PATH"))?;
    std::fs::canonicalize(&found).map_err(|e| format!("{}: {e}", found.display()))
}

fn is_executable_file(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::HashMap;

    fn env() -> HashMap<String, String> {
        HashMap::from([("PATH".to_owned(), "/usr/bin:/bin".to_owned())])
    }

    const GOOD: &str = r#"
[queue]
root_url = "https://tc.example.com/"
task_queue_id = "scriptworker-k8s/gecko-3-signing"
worker_group = "releng-wg"
worker_id = "signing-1"

[paths]
work_dir = "/var/lib/chainlock/work"
log_dir = "/var/log/chainlock"

[script]
argv = ["sh", "-c", "true"]
timeout_secs = 600
env_allowlist = ["LANG"]
isolation = "none"

[task]
payload_schema = "schemas/sign.schema.json"
scope_prefix = "project:releng:signing:cert:"
allowed_scopes = ["dep-signing"]

[chain_of_trust]
signing_key = "cot-key.asc"
worker_impl = "chainlock"
keys_dir = "/etc/chainlock/keys"
pinned_version = 1
pinned_sha256 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
state_file = "/var/lib/chainlock/trust-state.json"

[verify]
policy = "chain-policy.toml"
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/etc/chainlock/test.toml"), &env())
    }

    #[test]
    fn metrics_listen_is_off_by_default_and_an_ip_port() {
        assert_eq!(load(GOOD).unwrap().metrics, MetricsConfig::default());
        let on = load(&format!("{GOOD}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n")).unwrap();
        assert_eq!(on.metrics.addr, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(
            on.to_toml()
                .contains("[metrics]\nlisten = \"127.0.0.1:9464\"")
        );
        for (bad, pointer) in [
            ("listen = \"localhost:9464\"", "/metrics/listen"),
            ("listen = \"127.0.0.1\"", "/metrics/listen"),
            ("listen = 9464", "/metrics/listen"),
            ("port = 9464", "/metrics"),
        ] {
            match load(&format!("{GOOD}\n[metrics]\n{bad}\n")) {
                Err(e) => assert!(e.to_string().contains(pointer), "{bad}: {e}"),
                Ok(_) => panic!("{bad} accepted"),
            }
        }
    }

    #[test]
    fn good_config_loads_with_defaults_and_resolved_argv0() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.queue.root_url, "https://tc.example.com");
        assert!(c.script.argv[0].starts_with('/'), "{:?}", c.script.argv);
        assert_eq!(c.script.kill_grace_secs, 10);
        assert_eq!(c.timing, TimingConfig::default());
        assert_eq!(c.paths.keep_task_logs, 200);
        assert!(c.to_toml().contains("task_queue_id"));
        assert_eq!(c.source, Path::new("/etc/chainlock/test.toml"));
        assert_eq!(c.queue.protocol, Protocol::ClaimWork);
        assert_eq!(c.queue.artifact_storage, ArtifactStorage::S3);
    }

    #[test]
    fn artifact_storage_is_s3_or_object() {
        let c = load(&GOOD.replace(
            "worker_id = ",
            "artifact_storage = \"object\"\nworker_id = ",
        ))
        .unwrap();
        assert_eq!(c.queue.artifact_storage, ArtifactStorage::Object);
        assert!(c.to_toml().contains("artifact_storage = \"object\""));
        assert_eq!(
            schema_pointers(
                &GOOD.replace("worker_id = ", "artifact_storage = \"azure\"\nworker_id = ")
            ),
            vec!["/queue/artifact_storage"]
        );
    }

    #[test]
    fn protocol_is_claim_work_or_azure_poll() {
        let c =
            load(&GOOD.replace("worker_id = ", "protocol = \"azure-poll\"\nworker_id = ")).unwrap();
        assert_eq!(c.queue.protocol, Protocol::AzurePoll);
        assert!(c.to_toml().contains("protocol = \"azure-poll\""));
        assert_eq!(
            schema_pointers(&GOOD.replace("worker_id = ", "protocol = \"azure\"\nworker_id = ")),
            vec!["/queue/protocol"]
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let c = load(GOOD).unwrap();
        let cot = &c.chain_of_trust;
        assert_eq!(
            c.task.payload_schema,
            Path::new("/etc/chainlock/schemas/sign.schema.json")
        );
        assert_eq!(cot.signing_key, Path::new("/etc/chainlock/cot-key.asc"));
        assert_eq!(cot.keys_dir, Path::new("/etc/chainlock/keys"));
        assert_eq!(
            cot.state_file,
            Path::new("/var/lib/chainlock/trust-state.json")
        );
        assert_eq!(
            c.verify.policy,
            Path::new("/etc/chainlock/chain-policy.toml")
        );
        assert_eq!(cot.max_clock_skew_seconds, 300);
        assert_eq!(cot.pin().version, 1);
        assert_eq!(c.task.limits, crate::validate::Limits::default());
        assert_eq!(c.script.run_as, None);
        // The rendered config names every section (config check output).
        let rendered = c.to_toml();
        for section in ["[task]", "[chain_of_trust]", "[verify]", "pinned_sha256"] {
            assert!(rendered.contains(section), "{rendered}");
        }
    }

    #[test]
    fn security_sections_are_required() {
        for section in ["[task]", "[chain_of_trust]", "[verify]"] {
            let start = GOOD.find(section).unwrap();
            let end = GOOD[start + 1..]
                .find("\n[")
                .map_or(GOOD.len(), |i| start + 1 + i);
            let text = format!("{}{}", &GOOD[..start], &GOOD[end..]);
            let name = section.trim_matches(['[', ']']);
            assert_eq!(
                schema_pointers(&text),
                vec![format!("/{name}")],
                "{section}"
            );
        }
        let table = [
            ("pinned_version = 1\n", "/chain_of_trust/pinned_version"),
            (
                "signing_key = \"cot-key.asc\"\n",
                "/chain_of_trust/signing_key",
            ),
            (
                "allowed_scopes = [\"dep-signing\"]\n",
                "/task/allowed_scopes",
            ),
            ("policy = \"chain-policy.toml\"\n", "/verify/policy"),
        ];
        for (line, pointer) in table {
            assert_eq!(schema_pointers(&GOOD.replace(line, "")), vec![pointer]);
        }
    }

    fn schema_pointers(text: &str) -> Vec<String> {
        match load(text) {
            Err(ConfigError::Schema { violations, .. }) => {
                violations.into_iter().map(|v| v.pointer).collect()
            }
            other => panic!("expected a schema error, got {other:?}"),
        }
    }

    #[test]
    fn schema_errors_name_the_key() {
        let table = [
            (
                GOOD.replace("worker_id = ", "wrker_id = "),
                vec!["/queue/worker_id", "/queue/wrker_id"],
            ),
            (GOOD.replace("600", "\"600\""), vec!["/script/timeout_secs"]),
            (
                GOOD.replace("[paths]", "[paths]\nextra = 1"),
                vec!["/paths/extra"],
            ),
            (
                GOOD.replace("scriptworker-k8s/gecko-3-signing", "UPPER/Case"),
                vec!["/queue/task_queue_id"],
            ),
            (
                GOOD.replace("argv = [\"sh\", \"-c\", \"true\"]", "argv = []"),
                vec!["/script/argv"],
            ),
            (format!("{GOOD}\n[surprise]\nx = 1\n"), vec!["/surprise"]),
            (
                GOOD.replace("00112233", "0011223G"),
                vec!["/chain_of_trust/pinned_sha256"],
            ),
            (
                GOOD.replace(
                    "worker_impl = \"chainlock\"",
                    "worker_impl = \"Chain Lock\"",
                ),
                vec!["/chain_of_trust/worker_impl"],
            ),
            (
                GOOD.replace(
                    "allowed_scopes = [\"dep-signing\"]",
                    "allowed_scopes = [\"*\"]",
                ),
                vec!["/task/allowed_scopes/0"],
            ),
            (
                GOOD.replace("[verify]", "[task.limits]\nmax_tasks = 3\n\n[verify]"),
                vec!["/task/limits/max_tasks"],
            ),
            (
                GOOD.replace("[task]", "run_as = { uid = 1000 }\n\n[task]"),
                vec!["/script/run_as/gid"],
            ),
            (
                GOOD.replace("[task]", "run_as = { uid = 0, gid = 5 }\n\n[task]"),
                vec!["/script/run_as/uid"],
            ),
        ];
        for (text, expected) in table {
            let mut got = schema_pointers(&text);
            got.sort();
            let mut expected: Vec<String> = expected.into_iter().map(String::from).collect();
            expected.sort();
            assert_eq!(got, expected);
        }
    }

    fn invalid_pointer(text: &str) -> String {
        match load(text) {
            Err(ConfigError::Invalid { pointer, .. }) => pointer,
            other => panic!("expected an invalid-value error, got {other:?}"),
        }
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let table = [
            (
                GOOD.replace("https://tc.example.com/", "http://tc.example.com"),
                "/queue/root_url",
            ),
            (
                GOOD.replace("/var/lib/chainlock/work", "/var"),
                "/paths/work_dir",
            ),
            (
                GOOD.replace("/var/log/chainlock", "/var/lib/chainlock/work/logs"),
                "/paths/log_dir",
            ),
            (
                GOOD.replace("\"sh\", \"-c\"", "\"no-such-program-xyz\", \"-c\""),
                "/script/argv/0",
            ),
            (
                GOOD.replace("[\"LANG\"]", "[\"LANG\", \"TASKCLUSTER_ACCESS_TOKEN\"]"),
                "/script/env_allowlist/1",
            ),
            (
                GOOD.replace(
                    "/var/lib/chainlock/trust-state.json",
                    "/var/lib/chainlock/work/s",
                ),
                "/chain_of_trust/state_file",
            ),
        ];
        for (text, expected) in table {
            assert_eq!(invalid_pointer(&text), expected);
        }
    }

    #[test]
    fn http_allowed_to_loopback_only() {
        let c = load(&GOOD.replace("https://tc.example.com/", "http://127.0.0.1:8080")).unwrap();
        assert_eq!(c.queue.root_url, "http://127.0.0.1:8080");
    }

    #[test]
    fn credentials_from_env_or_file_never_show_the_token() {
        let c = load(GOOD).unwrap();
        let path = Path::new("/etc/chainlock/test.toml");
        let mut e = env();
        assert!(matches!(
            c.load_credentials(path, &e),
            Err(ConfigError::Credentials { .. })
        ));
        e.insert("TASKCLUSTER_CLIENT_ID".into(), "worker/x".into());
        e.insert("TASKCLUSTER_ACCESS_TOKEN".into(), "tok-SECRET-123".into());
        let creds = c.load_credentials(path, &e).unwrap();
        assert_eq!(creds.client_id, "worker/x");
        assert!(!format!("{creds:?}").contains("tok-SECRET-123"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds.json");
        std::fs::write(
            &file,
            "{\"clientId\": \"a\", \"accessToken\": \"tok-SECRET-123\"",
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let with_file = load(&format!(
            "{GOOD}\n[credentials]\nfile = \"{}\"\n",
            file.display()
        ))
        .unwrap();
        let err = with_file.load_credentials(path, &e).unwrap_err();
        assert!(matches!(err, ConfigError::Credentials { .. }));
        assert!(!err.to_string().contains("tok-SECRET-123"), "{err}");
    }

    #[test]
    fn run_as_is_parsed() {
        let c = load(&GOOD.replace(
            "isolation = \"none\"\n",
            "isolation = \"uid\"\nrun_as = { uid = 65534, gid = 65534 }\n",
        ))
        .unwrap();
        assert_eq!(
            c.script.run_as,
            Some(RunAs {
                uid: 65534,
                gid: 65534
            })
        );
        assert_eq!(c.script.isolation, Isolation::Uid);
    }

    #[test]
    fn isolation_rules() {
        let with = |script: &str| GOOD.replace("isolation = \"none\"\n", script);
        // No default: the level must be stated.
        let err = load(&with("")).unwrap_err().to_string();
        assert!(err.contains("isolation"), "{err}");
        for (script, pointer) in [
            ("isolation = \"namespaces\"\n", "/script/run_as"),
            ("isolation = \"uid\"\n", "/script/run_as"),
            (
                "isolation = \"none\"\nrun_as = { uid = 5, gid = 5 }\n",
                "/script/run_as",
            ),
            (
                "isolation = \"uid\"\nrun_as = { uid = 5, gid = 5 }\nro_paths = [\"/srv\"]\n",
                "/script/ro_paths",
            ),
            (
                "isolation = \"uid\"\nrun_as = { uid = 5, gid = 5 }\nnetwork = true\n",
                "/script/network",
            ),
            (
                "isolation = \"namespaces\"\nrun_as = { uid = 5, gid = 5 }\nro_paths = [\"/a/../etc\"]\n",
                "/script/ro_paths/0",
            ),
            (
                "isolation = \"namespaces\"\nrun_as = { uid = 5, gid = 5 }\nscope_files = { nope = [\"/k\"] }\n",
                "/script/scope_files/nope",
            ),
            ("isolation = \"sandboxed\"\n", "/script/isolation"),
        ] {
            let err = load(&with(script)).unwrap_err().to_string();
            assert!(err.contains(pointer), "{script}: {err}");
        }
        let ok = load(&with(
            "isolation = \"namespaces\"\nrun_as = { uid = 5, gid = 5 }\nro_paths = [\"/srv/x\"]\n",
        ))
        .unwrap();
        assert_eq!(ok.script.isolation, Isolation::Namespaces);
        assert_eq!(ok.script.max_artifacts, 1000);
    }

    #[test]
    fn shipped_example_configs_satisfy_the_schema() {
        for name in ["chainlock.example.toml", "dev.toml"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc").join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            let value: toml::Value = crate::toml_text::from_str(&text).unwrap();
            let json = serde_json::to_value(&value).unwrap();
            check_schema(&json, &path).unwrap_or_else(|e| panic!("{e}"));
            let _: Config = serde_json::from_value(json).unwrap();
        }
    }

    /// `[timing]`'s transfer settings reach the queue client, for uploads and downloads alike;
    /// without them the client's defaults apply.
    #[test]
    fn transfer_settings_become_the_client_limits() {
        let d = crate::queue::ClientLimits::default();
        let none = TimingConfig::default().client_limits();
        assert_eq!(
            (
                none.upload_deadline,
                none.min_upload_rate,
                none.upload_rate_window
            ),
            (d.upload_deadline, d.min_upload_rate, d.upload_rate_window)
        );
        assert_eq!(
            (none.download_deadline, none.min_download_rate),
            (d.download_deadline, d.min_download_rate)
        );
        let t: TimingConfig = serde_json::from_value(serde_json::json!({
            "transfer_deadline_secs": 600, "min_transfer_rate": 0, "transfer_rate_window_secs": 5
        }))
        .unwrap();
        let l = t.client_limits();
        assert_eq!(l.upload_deadline, Duration::from_secs(600));
        assert_eq!(l.download_deadline, Duration::from_secs(600));
        assert_eq!((l.min_upload_rate, l.min_download_rate), (0, 0));
        assert_eq!(l.upload_rate_window, Duration::from_secs(5));
        assert_eq!(l.download_rate_window, Duration::from_secs(5));
    }

    #[test]
    fn toml_syntax_error_is_reported() {
        assert!(matches!(load("[queue"), Err(ConfigError::Toml { .. })));
    }

    /// Issue 8: the `toml` crate's own error text quotes the offending line.
    #[test]
    fn toml_syntax_error_does_not_quote_a_secret() {
        let err = load("[queue]\naccess_token = \"s3cr3t-token-value\" x\n").unwrap_err();
        let shown = format!("{err} | {err:?} | {err:#}");
        assert!(!shown.contains("s3cr3t-token-value"), "{shown}");
        let ConfigError::Toml { message, .. } = &err else {
            panic!("not a TOML error: {shown}");
        };
        assert!(message.starts_with("line 2, column "), "{message}");
    }
}
