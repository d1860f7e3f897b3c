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
//! (or the environment) named by `[credentials]`; this module only says where they are.
//! The environment is read through [`EnvSource`], so tests use a map.
//!
//! **API Boundary:** the file format is operators' interface. Adding a section is one field in
//! [`Config`] plus one property in the schema; renaming a key needs a compatibility note.

use crate::queue::{Credentials, CredentialsError, EnvSource};
use serde::{Deserialize, Serialize};
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

impl Default for TimingConfig {
    /// Timing is not security-relevant, so it has defaults (documented on each field).
    fn default() -> Self {
        TimingConfig {
            reclaim_margin_secs: default_reclaim_margin_secs(),
            poll_interval_secs: default_poll_interval_secs(),
            backoff_min_secs: default_backoff_min_secs(),
            backoff_max_secs: default_backoff_max_secs(),
        }
    }
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
        /// The parser's message (with line and column).
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
        crate::cli::EX_USAGE
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
        let value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Toml {
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
        config.finalize(path, env)?;
        Ok(config)
    }

    /// Checks what the schema cannot express and makes relative paths absolute.
    fn finalize(&mut self, path: &Path, env: &impl EnvSource) -> Result<(), ConfigError> {
        let invalid = |pointer: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            pointer: pointer.to_owned(),
            reason,
        };
        let base = path.parent().unwrap_or(Path::new("."));

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
"#;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/etc/chainlock/test.toml"), &env())
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
    fn toml_syntax_error_is_reported() {
        assert!(matches!(load("[queue"), Err(ConfigError::Toml { .. })));
    }
}
