//! `chainlock script push`: publish verified upstream files to a release destination.
//!
//! The task's bucket scope (e.g. `project:releng:push:bucket:releases`) selects one destination
//! from the script config: a local directory (`file:///srv/releases`) or an S3-compatible bucket
//! (`s3://bucket/prefix`, through the `object_store` crate; no hand-written request signing).
//! Object keys come from the config's path template (`{product}/{version}/{platform}/{name}`)
//! filled with payload values, each checked so no value can climb out of the prefix.
//!
//! Which upstream files may be published is decided by their *verified* kind: the `taskKind`
//! the worker wrote into `cot/manifest.json` from its chain policy. `allowed_task_types` and
//! the `{task_type}` template variable both use that kind. The payload's
//! `upstreamArtifacts[].taskType` is only a label the task author wrote; it must equal the
//! verified kind or the task is refused as malformed (see [`super::resolve_inputs`]), so a
//! payload cannot get a decision task's file published by calling it `build`.
//!
//! Publishing is idempotent: an object that already holds identical bytes is left alone; one
//! with different bytes is a conflict that fails the task before anything is uploaded, unless
//! the destination allows overwriting. A push that failed half-way can therefore simply be
//! re-run. `public/manifest.json` lists every published URL with its size and sha256.
//!
//! A `file://` destination never writes through a symlink. Before an object is looked at and
//! again just before it is written, every component of its path from the configured directory
//! down (the directory itself included) is checked with `symlink_metadata`: a symlink anywhere
//! (say a planted `<dest>/pub/firefox/1.0 -> /etc`) fails the task before anything is
//! published. The write itself goes to a new staging file next to the object (created with
//! `O_EXCL`) that is then renamed over it, so even a symlink appearing at the final component
//! is replaced, not followed (object_store's `LocalFileSystem` does this). What remains is a
//! race with someone swapping a checked *directory* for a symlink between the check and the
//! write; the destination directory must therefore be writable only by the worker's user.
//!
//! What this module must not do: publish a file whose bytes differ from the verified manifest,
//! choose a destination from the payload, put credentials in a log, error or the manifest, or
//! hold a whole file in memory.

use super::{
    ScriptEnv, ScriptError, VerifiedInput, build_validator, check_digest, load_task, open_input,
    read_capped, read_toml_config, recheck_input, resolve_inputs, write_artifact,
};
use crate::chain_policy::LinkKind;
use crate::secret::Secret;
use crate::validate::Limits;
use crate::validate::path::{PathError, check_relative_path};
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, buffered::BufWriter};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Name of the manifest artifact the push writes.
pub const MANIFEST_ARTIFACT: &str = "public/manifest.json";

/// Largest credentials file (bytes).
const MAX_CREDENTIALS_BYTES: u64 = 64 * 1024;

fn default_parallelism() -> usize {
    4
}

/// Push script configuration (`chainlock script push --config FILE`). **API Boundary.**
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Payload schema (normally `schemas/payload/push.schema.json`).
    pub payload_schema: PathBuf,
    /// Bucket scope prefix, e.g. `project:releng:push:bucket:`.
    pub scope_prefix: String,
    /// Object key template; variables `{product}`, `{version}`, `{platform}`, `{name}` (the
    /// artifact's file name), `{task_id}`, `{task_type}`. Must contain `{name}`.
    pub path_template: String,
    /// Upstream task kinds whose files may be published (e.g. `["build", "signing"]` to publish
    /// builds together with the detached signatures of an upstream signing task). Matched
    /// against the kind verified by the chain of trust (the manifest's `taskKind`), never the
    /// payload's `taskType`; values use the chain policy's spelling, unknown ones are refused.
    pub allowed_task_types: Vec<LinkKind>,
    /// How many files are uploaded at once (default 4).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Validation limits (optional).
    #[serde(default)]
    pub limits: Limits,
    /// Bucket scope value -> destination.
    pub destinations: BTreeMap<String, DestinationConfig>,
}

/// One destination.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    /// `file:///absolute/dir` (must exist) or `s3://bucket` / `s3://bucket/prefix`.
    pub url: String,
    /// Replace objects whose content differs. Off unless the operator says so.
    pub overwrite: bool,
    /// Base of the public URLs written to the manifest (e.g. `https://archive.example/pub/`);
    /// default: the destination URL.
    #[serde(default)]
    pub public_url: Option<String>,
    /// S3 region (default `us-east-1`).
    #[serde(default)]
    pub region: Option<String>,
    /// S3 endpoint for S3-compatible services (e.g. `http://127.0.0.1:9000`).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Allow a plain-HTTP endpoint (tests and local services only).
    #[serde(default)]
    pub allow_http: bool,
    /// TOML file with `access_key_id`, `secret_access_key` and optional `session_token`; must
    /// not be readable by group or others. Without it, object_store's default credential chain
    /// for the host (instance metadata) is used.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Credentials {
    access_key_id: String,
    secret_access_key: Secret,
    #[serde(default)]
    session_token: Option<Secret>,
}

/// A template variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Var {
    /// `{product}` from the payload.
    Product,
    /// `{version}` from the payload.
    Version,
    /// `{platform}` from the payload.
    Platform,
    /// `{name}`: the artifact's file name.
    Name,
    /// `{task_id}`: the upstream task id.
    TaskId,
    /// `{task_type}`: the upstream task's verified kind (from the manifest, not the payload).
    TaskType,
}

impl Var {
    fn name(self) -> &'static str {
        match self {
            Var::Product => "product",
            Var::Version => "version",
            Var::Platform => "platform",
            Var::Name => "name",
            Var::TaskId => "task_id",
            Var::TaskType => "task_type",
        }
    }
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{}}}", self.name())
    }
}

/// Why a template or a value for it is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// The template has an unknown variable or an unbalanced brace.
    #[error("path template: {0}")]
    Syntax(String),
    /// The template does not contain `{name}` (every file would get the same key).
    #[error("path template must contain {{name}}")]
    NoName,
    /// The template's literal text breaks a path rule.
    #[error("path template is not a plain relative path: {0}")]
    Literal(PathError),
    /// A value needed by the template is absent from the payload.
    #[error("the path template needs {var} but the payload has no value for it")]
    Missing {
        /// The variable.
        var: Var,
    },
    /// A value breaks a path rule.
    #[error("value for {var} is refused: {reason}")]
    BadValue {
        /// The variable.
        var: Var,
        /// The rule.
        reason: PathError,
    },
    /// A value contains `/`; every value must be one path segment.
    #[error("value for {var} contains '/'")]
    Separator {
        /// The variable.
        var: Var,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed destination path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

/// Values for a [`PathTemplate`].
#[derive(Debug, Clone, Default)]
pub struct TemplateValues<'a> {
    /// `{product}`.
    pub product: Option<&'a str>,
    /// `{version}`.
    pub version: Option<&'a str>,
    /// `{platform}`.
    pub platform: Option<&'a str>,
    /// `{name}`.
    pub name: Option<&'a str>,
    /// `{task_id}`.
    pub task_id: Option<&'a str>,
    /// `{task_type}`.
    pub task_type: Option<&'a str>,
}

impl PathTemplate {
    /// Parses a template such as `{product}/{version}/{platform}/{name}`.
    pub fn parse(template: &str) -> Result<PathTemplate, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('{') {
                let end = after
                    .find('}')
                    .ok_or_else(|| TemplateError::Syntax("unclosed '{'".into()))?;
                let name = after.get(..end).unwrap_or_default();
                let var = match name {
                    "product" => Var::Product,
                    "version" => Var::Version,
                    "platform" => Var::Platform,
                    "name" => Var::Name,
                    "task_id" => Var::TaskId,
                    "task_type" => Var::TaskType,
                    other => {
                        return Err(TemplateError::Syntax(format!("unknown variable {other:?}")));
                    }
                };
                parts.push(Part::Var(var));
                rest = after.get(end + 1..).unwrap_or_default();
            } else {
                let end = rest.find('{').unwrap_or(rest.len());
                let lit = rest.get(..end).unwrap_or_default();
                if lit.contains('}') {
                    return Err(TemplateError::Syntax("unmatched '}'".into()));
                }
                parts.push(Part::Lit(lit.to_owned()));
                rest = rest.get(end..).unwrap_or_default();
            }
        }
        if !parts.contains(&Part::Var(Var::Name)) {
            return Err(TemplateError::NoName);
        }
        // Check the literal skeleton with every variable replaced by a harmless segment.
        let skeleton: String = parts
            .iter()
            .map(|p| match p {
                Part::Lit(s) => s.as_str(),
                Part::Var(_) => "x",
            })
            .collect();
        check_relative_path(&skeleton).map_err(TemplateError::Literal)?;
        Ok(PathTemplate { parts })
    }

    /// Fills the template. Every value must be one non-empty path segment (no `/`, `\`, NUL,
    /// `.` or `..`), and the result must be a plain relative path.
    pub fn render(&self, values: &TemplateValues<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(var) => {
                    let value = match var {
                        Var::Product => values.product,
                        Var::Version => values.version,
                        Var::Platform => values.platform,
                        Var::Name => values.name,
                        Var::TaskId => values.task_id,
                        Var::TaskType => values.task_type,
                    }
                    .ok_or(TemplateError::Missing { var: *var })?;
                    check_relative_path(value)
                        .map_err(|reason| TemplateError::BadValue { var: *var, reason })?;
                    if value.contains('/') {
                        return Err(TemplateError::Separator { var: *var });
                    }
                    out.push_str(value);
                }
            }
        }
        check_relative_path(&out).map_err(|reason| TemplateError::BadValue {
            var: Var::Name,
            reason,
        })?;
        Ok(out)
    }
}

/// An opened destination.
struct Destination {
    store: Arc<dyn ObjectStore>,
    /// Key prefix inside the store (empty for `file://`).
    prefix: String,
    /// The configured directory of a `file://` destination, whose object paths are checked for
    /// symlinks before use; `None` for object stores.
    local_root: Option<PathBuf>,
    /// Base for manifest URLs, ending with `/`.
    public_base: String,
    overwrite: bool,
}

impl Destination {
    fn open(scope_value: &str, cfg: &DestinationConfig) -> Result<Destination, ScriptError> {
        let bad = |reason: String| ScriptError::Config {
            path: PathBuf::from(format!("destinations.{scope_value}")),
            reason,
        };
        let url = url::Url::parse(&cfg.url).map_err(|e| bad(format!("url: {e}")))?;
        if !url.username().is_empty() || url.password().is_some() || url.query().is_some() {
            return Err(bad("url must not carry credentials or a query".into()));
        }
        let (store, prefix, local_root): (Arc<dyn ObjectStore>, String, _) = match url.scheme() {
            "file" => {
                let dir = url
                    .to_file_path()
                    .map_err(|()| bad("file:// url must be an absolute local path".into()))?;
                let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| bad(format!("{}: {e}", dir.display())))?;
                // Without the trailing '/' of a directory URL: `symlink_metadata("link/")`
                // would resolve the link instead of reporting it.
                let root: PathBuf = dir.components().collect();
                (Arc::new(store), String::new(), Some(root))
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad("s3:// url needs a bucket".into()))?;
                let prefix = url.path().trim_matches('/').to_owned();
                if !prefix.is_empty() {
                    check_relative_path(&prefix).map_err(|e| bad(format!("s3 prefix: {e}")))?;
                }
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(cfg.region.as_deref().unwrap_or("us-east-1"))
                    .with_allow_http(cfg.allow_http);
                if let Some(endpoint) = &cfg.endpoint {
                    b = b.with_endpoint(endpoint);
                }
                if let Some(path) = &cfg.credentials_file {
                    let creds = read_credentials(path)?;
                    b = b
                        .with_access_key_id(creds.access_key_id)
                        .with_secret_access_key(creds.secret_access_key.expose());
                    if let Some(t) = creds.session_token {
                        b = b.with_token(t.expose());
                    }
                }
                let store = b.build().map_err(|e| bad(format!("s3: {e}")))?;
                (Arc::new(store), prefix, None)
            }
            other => return Err(bad(format!("unsupported scheme {other:?}"))),
        };
        let mut public_base = cfg.public_url.clone().unwrap_or_else(|| {
            let mut s = cfg.url.clone();
            if !prefix.is_empty() && !s.ends_with('/') {
                s.push('/');
            }
            s
        });
        if !public_base.ends_with('/') {
            public_base.push('/');
        }
        Ok(Destination {
            store,
            prefix,
            local_root,
            public_base,
            overwrite: cfg.overwrite,
        })
    }

    fn location(&self, key: &str) -> Result<ObjPath, ScriptError> {
        let full = if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjPath::parse(&full).map_err(|e| ScriptError::BadInput(format!("object key {key:?}: {e}")))
    }

    fn url(&self, key: &str) -> String {
        format!("{}{key}", self.public_base)
    }

    /// For a `file://` destination: refuses `key` if the configured directory or any existing
    /// component of `<dir>/<key>` is a symlink, an intermediate component is not a directory, or
    /// the final one exists and is not a regular file. Components that do not exist yet are
    /// fine (they are created as real directories). No-op for object stores.
    fn check_local(&self, key: &str) -> Result<(), ScriptError> {
        let Some(root) = &self.local_root else {
            return Ok(());
        };
        let unsafe_path = |path: &Path, reason: &'static str| ScriptError::UnsafeDestination {
            path: path.to_owned(),
            reason,
        };
        let io = |path: &Path, e: std::io::Error| ScriptError::Destination {
            url: self.url(key),
            reason: format!("{}: {e}", path.display()),
        };
        match std::fs::symlink_metadata(root) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path(root, "the destination directory is a symlink"));
            }
            Ok(m) if !m.is_dir() => {
                return Err(unsafe_path(root, "the destination is not a directory"));
            }
            Ok(_) => {}
            Err(e) => return Err(io(root, e)),
        }
        let parts: Vec<&str> = key.split('/').collect();
        let mut cur = root.clone();
        for (i, part) in parts.iter().enumerate() {
            cur.push(part);
            let last = i + 1 == parts.len();
            match std::fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(unsafe_path(&cur, "is a symlink"));
                }
                Ok(m) if !last && !m.is_dir() => {
                    return Err(unsafe_path(&cur, "exists and is not a directory"));
                }
                Ok(m) if last && !m.is_file() => {
                    return Err(unsafe_path(&cur, "exists and is not a regular file"));
                }
                Ok(_) => {}
                // Nothing below a missing component can exist.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io(&cur, e)),
            }
        }
        Ok(())
    }
}

/// Reads an S3 credentials file, refusing one that group or others can access.
fn read_credentials(path: &Path) -> Result<S3Credentials, ScriptError> {
    let bad = |reason: String| ScriptError::Config {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    crate::secret::check_private_file(&meta).map_err(|e| bad(format!("credentials file: {e}")))?;
    let bytes = read_capped(path, MAX_CREDENTIALS_BYTES)?;
    let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
    // Position and message only (never the source line, which may hold a secret).
    crate::toml_text::from_str(&text)
        .map_err(|e| bad(format!("not a valid credentials TOML file: {e}")))
}

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// The object does not exist yet.
    Upload,
    /// The object exists with identical bytes; nothing to do.
    Unchanged,
    /// The object exists with different bytes and the destination allows overwriting.
    Overwrite,
    /// The object exists with different bytes; refused.
    Conflict,
}

struct Planned {
    input: VerifiedInput,
    key: String,
    location: ObjPath,
    url: String,
    action: Action,
}

/// One published file in `public/manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishedFile {
    /// Public URL of the object.
    pub url: String,
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex sha256.
    pub sha256: String,
    /// Upstream task that produced it.
    pub task_id: String,
    /// Artifact path in that task.
    pub path: String,
}

/// `public/manifest.json`. **API Boundary:** release tooling reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushManifest {
    /// Format version, 1.
    pub version: u32,
    /// The bucket scope that selected the destination.
    pub scope: String,
    /// Published files, sorted by URL.
    pub files: Vec<PublishedFile>,
}

/// Runs the push script and returns the process exit code.
pub async fn run(config_path: &Path, dry_run: bool) -> i32 {
    match run_inner(config_path, dry_run).await {
        Ok(()) => super::EXIT_OK,
        Err(e) => super::report(&e),
    }
}

async fn run_inner(config_path: &Path, dry_run: bool) -> Result<(), ScriptError> {
    let config: PushConfig = read_toml_config(config_path)?;
    let template = PathTemplate::parse(&config.path_template).map_err(|e| ScriptError::Config {
        path: config_path.to_owned(),
        reason: e.to_string(),
    })?;
    if config.parallelism == 0 || config.parallelism > 64 {
        return Err(ScriptError::Config {
            path: config_path.to_owned(),
            reason: "parallelism must be between 1 and 64".into(),
        });
    }
    let validator = build_validator(
        &config.payload_schema,
        &config.scope_prefix,
        config.destinations.keys(),
        &config.limits,
    )?;
    let env = ScriptEnv::from_process()?;
    let task = load_task(&env, &validator)?;
    let scope = task.scope().clone();
    let dest_cfg = config.destinations.get(scope.value()).ok_or_else(|| {
        // The validator only accepts configured values; this is a local invariant.
        ScriptError::Internal(format!("no destination for {:?}", scope.value()))
    })?;
    println!(
        "task {}: destination selected by scope {}",
        env.task_id,
        scope.scope()
    );
    let dest = Destination::open(scope.value(), dest_cfg)?;

    let inputs = resolve_inputs(&env, &task)?;
    let allowed: BTreeSet<LinkKind> = config.allowed_task_types.iter().copied().collect();
    let payload = task.payload();
    let field = |k: &str| payload.get(k).and_then(serde_json::Value::as_str);
    let mut plans = Vec::new();
    let mut keys = BTreeSet::new();
    for input in inputs {
        // The verified kind, never the payload's label (resolve_inputs refused a disagreement).
        if !allowed.contains(&input.task_kind) {
            return Err(ScriptError::BadInput(format!(
                "upstream task {} is a verified {} task; its files may not be published by this \
                 worker (allowed_task_types)",
                input.task_id, input.task_kind
            )));
        }
        let values = TemplateValues {
            product: field("product"),
            version: field("version"),
            platform: field("platform"),
            name: Some(input.path.file_name()),
            task_id: Some(input.task_id.as_str()),
            task_type: Some(input.task_kind.as_str()),
        };
        let key = template
            .render(&values)
            .map_err(|e| ScriptError::BadInput(format!("{}/{}: {e}", input.task_id, input.path)))?;
        if !keys.insert(key.clone()) {
            return Err(ScriptError::OutputCollision { name: key });
        }
        let location = dest.location(&key)?;
        // Before anything at the destination is read or written (a planted symlink must not
        // even be hashed through).
        dest.check_local(&key)?;
        let url = dest.url(&key);
        plans.push(Planned {
            input,
            key,
            location,
            url,
            action: Action::Upload,
        });
    }

    // Defence in depth: every file must still match the verified manifest before it is
    // published anywhere.
    for p in &plans {
        let env = env.clone();
        let input = p.input.clone();
        tokio::task::spawn_blocking(move || recheck_input(&env, &input))
            .await
            .map_err(|e| ScriptError::Internal(e.to_string()))??;
    }

    // Look at the destination before changing it, so a conflict stops the push with nothing
    // uploaded.
    let actions: Vec<Result<Action, ScriptError>> = futures_util::stream::iter(plans.iter())
        .map(|p| existing_action(&dest, p))
        .buffered(config.parallelism)
        .collect()
        .await;
    for (p, a) in plans.iter_mut().zip(actions) {
        p.action = a?;
    }
    for p in &plans {
        let verb = match (p.action, dry_run) {
            (Action::Upload, true) => "would upload",
            (Action::Upload, false) => "upload",
            (Action::Overwrite, true) => "would overwrite",
            (Action::Overwrite, false) => "overwrite",
            (Action::Unchanged, _) => "unchanged",
            (Action::Conflict, _) => "CONFLICT (different content exists)",
        };
        println!(
            "{verb}: {}/{} -> {} ({} bytes, sha256 {})",
            p.input.task_id, p.input.path, p.url, p.input.size, p.input.sha256
        );
    }
    let conflicts: Vec<String> = plans
        .iter()
        .filter(|p| p.action == Action::Conflict)
        .map(|p| p.url.clone())
        .collect();
    if !conflicts.is_empty() {
        return Err(ScriptError::Conflict { urls: conflicts });
    }
    if dry_run {
        println!("dry run: nothing published, no manifest written");
        return Ok(());
    }

    let results: Vec<Result<(), ScriptError>> = futures_util::stream::iter(
        plans
            .iter()
            .filter(|p| matches!(p.action, Action::Upload | Action::Overwrite)),
    )
    .map(|p| upload(&env, &dest, p))
    .buffer_unordered(config.parallelism)
    .collect()
    .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    let mut files: Vec<PublishedFile> = plans
        .iter()
        .map(|p| PublishedFile {
            url: p.url.clone(),
            size: p.input.size,
            sha256: p.input.sha256.clone(),
            task_id: p.input.task_id.as_str().to_owned(),
            path: p.input.path.as_str().to_owned(),
        })
        .collect();
    files.sort_by(|a, b| a.url.cmp(&b.url));
    let manifest = PushManifest {
        version: 1,
        scope: scope.scope().to_owned(),
        files,
    };
    let mut bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ScriptError::Internal(e.to_string()))?;
    bytes.push(b'\n');
    write_artifact(&env.artifact_dir, MANIFEST_ARTIFACT, &bytes)?;
    println!(
        "published {} file(s) ({} already present); wrote {MANIFEST_ARTIFACT}",
        plans
            .iter()
            .filter(|p| p.action != Action::Unchanged)
            .count(),
        plans
            .iter()
            .filter(|p| p.action == Action::Unchanged)
            .count()
    );
    Ok(())
}

fn dest_err(url: &str, e: impl fmt::Display) -> ScriptError {
    ScriptError::Destination {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Decides what to do with one object by comparing what exists (streamed, hashed) with the
/// verified file.
async fn existing_action(dest: &Destination, p: &Planned) -> Result<Action, ScriptError> {
    let meta = match dest.store.head(&p.location).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(Action::Upload),
        Err(e) => return Err(dest_err(&p.url, e)),
    };
    let same = if meta.size != p.input.size {
        false
    } else {
        let got = dest
            .store
            .get(&p.location)
            .await
            .map_err(|e| dest_err(&p.url, e))?;
        let mut stream = got.into_stream();
        let mut h = Sha256::new();
        while let Some(chunk) = stream.try_next().await.map_err(|e| dest_err(&p.url, e))? {
            h.update(&chunk);
        }
        hex::encode(h.finalize()) == p.input.sha256
    };
    Ok(match (same, dest.overwrite) {
        (true, _) => Action::Unchanged,
        (false, true) => Action::Overwrite,
        (false, false) => Action::Conflict,
    })
}

/// Streams one file to its object, hashing on the way; if the bytes sent differ from the
/// verified manifest (the file changed during the upload), the object is deleted again.
async fn upload(env: &ScriptEnv, dest: &Destination, p: &Planned) -> Result<(), ScriptError> {
    // Again right before writing: the check at planning time was a while (hashing) ago.
    dest.check_local(&p.key)?;
    let file = open_input(env, &p.input)?;
    let mut file = tokio::fs::File::from_std(file);
    // Memory per upload is bounded by the buffer and the in-flight parts, never the file size.
    let mut writer = BufWriter::with_capacity(dest.store.clone(), p.location.clone(), 8 << 20)
        .with_max_concurrency(2);
    let mut h = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    let io = |e: std::io::Error| ScriptError::Io {
        path: p.input.file.clone(),
        source: e,
    };
    let result: Result<(), ScriptError> = async {
        loop {
            let n = file.read(&mut buf).await.map_err(io)?;
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).unwrap_or_default();
            h.update(chunk);
            size += n as u64;
            writer
                .write_all(chunk)
                .await
                .map_err(|e| dest_err(&p.url, e))?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        // Best effort: a multipart upload left open would cost storage; the error that matters
        // is the one above.
        let _ = writer.abort().await;
        return Err(e);
    }
    writer.shutdown().await.map_err(|e| dest_err(&p.url, e))?;
    if let Err(e) = check_digest(&p.input, &hex::encode(h.finalize()), size) {
        let _ = dest.store.delete(&p.location).await;
        return Err(e);
    }
    println!("published {} (key {})", p.url, p.key);
    Ok(())
}
