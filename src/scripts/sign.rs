//! `chainlock script sign`: detached OpenPGP signatures for verified upstream files.
//!
//! The task's cert scope (e.g. `project:releng:signing:cert:release-signing`) selects one release
//! key from the script config; the payload never names a key. For every requested upstream file
//! the script writes an armored detached signature `<artifact path>.asc` into the artifact
//! directory, plus `SHA256SUMS` and `SHA512SUMS` (in `sha256sum` format, artifact paths as names)
//! and their own `.asc` signatures.
//!
//! Every file is read once: the same pass feeds the signature, the sha256 checked against the
//! verified manifest, and both checksum files, so the signed bytes are exactly the checked
//! bytes. Each byte goes through two hash functions, not three: the signature's SHA-512 context
//! also gives the file's sha512 ([`openpgp::sign_detached_with_digests`]). The key is loaded
//! and unlocked once per run. Signatures are held until every file of the task has matched; a single mismatch stops
//! the task with nothing written. Files are streamed, so memory does not grow with file size;
//! up to `parallelism` files (default: the machine's cores) are processed at once.
//!
//! What this module must not do: load any key other than the one the scope selects, sign bytes
//! that did not match the manifest, or implement OpenPGP itself (it uses [`crate::openpgp`]).

use super::{
    ScriptEnv, ScriptError, VerifiedInput, build_validator, check_digest, load_task, open_input,
    read_toml_config, resolve_inputs, write_artifact,
};
use crate::openpgp::{self, SigningKey};
use crate::validate::Limits;
use crate::validate::path::check_relative_path;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(4)
        .clamp(1, 64)
}

fn default_checksums_dir() -> String {
    "public".into()
}

/// Sign script configuration (`chainlock script sign --config FILE`). **API Boundary.**
///
/// ```toml
/// payload_schema = "/etc/chainlock/schemas/payload/sign.schema.json"
/// scope_prefix = "project:releng:signing:cert:"
/// parallelism = 4
/// checksums_dir = "public"
/// [keys]
/// release-signing = "/etc/chainlock/release-keys/release-signing.key"
/// ```
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SignConfig {
    /// Payload schema (normally `schemas/payload/sign.schema.json`).
    pub payload_schema: PathBuf,
    /// Cert scope prefix, e.g. `project:releng:signing:cert:`.
    pub scope_prefix: String,
    /// Cert scope value -> private release key file (OpenPGP, mode 0600). Never the worker's
    /// chain-of-trust key.
    pub keys: BTreeMap<String, PathBuf>,
    /// How many files are hashed or signed at once (default 4, at most 64).
    #[serde(default = "default_parallelism")]
    pub parallelism: usize,
    /// Artifact directory for `SHA256SUMS`/`SHA512SUMS` and their signatures (default `public`).
    #[serde(default = "default_checksums_dir")]
    pub checksums_dir: String,
    /// Validation limits (optional).
    #[serde(default)]
    pub limits: Limits,
}

/// Runs the sign script and returns the process exit code.
pub async fn run(config_path: &Path) -> i32 {
    match run_inner(config_path).await {
        Ok(()) => super::EXIT_OK,
        Err(e) => super::report(&e),
    }
}

/// Signs one verified file in a single read: the bytes signed are the bytes whose sha256 is
/// checked against the verified manifest (and whose digests go into the checksum files). The
/// signature is returned, never written, until every file of the task has checked out.
fn sign_one(
    env: &ScriptEnv,
    key: &SigningKey,
    input: &VerifiedInput,
    at: DateTime<Utc>,
) -> Result<(Vec<u8>, super::FileDigests), ScriptError> {
    let file = open_input(env, input)?;
    let signed =
        openpgp::sign_detached_with_digests(key, file, at).map_err(|e| ScriptError::Signing {
            path: input.path.as_str().to_owned(),
            reason: e.to_string(),
        })?;
    let digests = super::FileDigests {
        sha256: hex::encode(signed.sha256),
        sha512: hex::encode(signed.sha512),
        size: signed.size,
    };
    check_digest(input, &digests.sha256, digests.size)?;
    Ok((signed.armored, digests))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ScriptError> + Send + 'static,
) -> Result<T, ScriptError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ScriptError::Internal(format!("worker thread: {e}")))?
}

async fn run_inner(config_path: &Path) -> Result<(), ScriptError> {
    let config: SignConfig = read_toml_config(config_path)?;
    let bad_config = |reason: String| ScriptError::Config {
        path: config_path.to_owned(),
        reason,
    };
    if config.parallelism == 0 || config.parallelism > 64 {
        return Err(bad_config("parallelism must be between 1 and 64".into()));
    }
    check_relative_path(&config.checksums_dir)
        .map_err(|e| bad_config(format!("checksums_dir: {e}")))?;
    let validator = build_validator(
        &config.payload_schema,
        &config.scope_prefix,
        config.keys.keys(),
        &config.limits,
    )?;
    let env = ScriptEnv::from_process()?;
    let task = load_task(&env, &validator)?;
    let scope = task.scope().clone();
    let key_path = config
        .keys
        .get(scope.value())
        // The validator only accepts configured values; this is a local invariant.
        .ok_or_else(|| ScriptError::Internal(format!("no key for {:?}", scope.value())))?;
    // One instant for the whole run: every signature carries the same creation time.
    let at = crate::clock::now();
    let key = openpgp::load_signing_key(key_path, at).map_err(|e| ScriptError::SigningKey {
        scope: scope.scope().to_owned(),
        reason: e.to_string(),
    })?;
    println!(
        "task {}: signing with key {} (signing subkey {}) selected by scope {}",
        env.task_id,
        key.fingerprint(),
        key.signing_fingerprint(),
        scope.scope()
    );
    let key = Arc::new(key);

    let inputs = resolve_inputs(&env, &task)?;
    let sums_256 = format!("{}/SHA256SUMS", config.checksums_dir);
    let sums_512 = format!("{}/SHA512SUMS", config.checksums_dir);
    let mut outputs: BTreeSet<String> = [
        sums_256.clone(),
        format!("{sums_256}.asc"),
        sums_512.clone(),
        format!("{sums_512}.asc"),
    ]
    .into();
    let mut names = BTreeSet::new();
    for input in &inputs {
        let out = format!("{}.asc", input.path);
        if !outputs.insert(out.clone()) || !names.insert(input.path.as_str()) {
            return Err(ScriptError::OutputCollision { name: out });
        }
    }

    // One pass per file: sign while hashing; nothing is written until every file matched the
    // verified manifest.
    let signed: Vec<Result<(Vec<u8>, super::FileDigests), ScriptError>> =
        futures_util::stream::iter(inputs.iter().cloned())
            .map(|input| {
                let env = env.clone();
                let key = Arc::clone(&key);
                blocking(move || sign_one(&env, &key, &input, at))
            })
            .buffered(config.parallelism)
            .collect()
            .await;
    let signed = signed.into_iter().collect::<Result<Vec<_>, _>>()?;
    let (sigs, digests): (Vec<Vec<u8>>, Vec<super::FileDigests>) = signed.into_iter().unzip();
    for (input, sig) in inputs.iter().zip(&sigs) {
        let name = format!("{}.asc", input.path);
        write_artifact(&env.artifact_dir, &name, sig)?;
        println!("signed {}/{} -> {name}", input.task_id, input.path);
    }

    // Checksum files, sorted by name, in the format `sha256sum -c` reads.
    let mut lines: Vec<(&str, &super::FileDigests)> = inputs
        .iter()
        .map(|i| i.path.as_str())
        .zip(digests.iter())
        .collect();
    lines.sort_by(|a, b| a.0.cmp(b.0));
    for (name, pick) in [
        (
            &sums_256,
            (|d: &super::FileDigests| d.sha256.clone()) as fn(&_) -> String,
        ),
        (&sums_512, |d: &super::FileDigests| d.sha512.clone()),
    ] {
        let text: String = lines
            .iter()
            .map(|(path, d)| format!("{}  {path}\n", pick(d)))
            .collect();
        write_artifact(&env.artifact_dir, name, text.as_bytes())?;
        let sig = openpgp::sign_detached_armored(&key, text.as_bytes(), at).map_err(|e| {
            ScriptError::Signing {
                path: name.clone(),
                reason: e.to_string(),
            }
        })?;
        write_artifact(&env.artifact_dir, &format!("{name}.asc"), &sig)?;
        println!("wrote {name} and {name}.asc");
    }
    println!("signed {} file(s)", inputs.len());
    Ok(())
}
