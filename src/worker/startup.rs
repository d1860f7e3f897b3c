//! Start-up and between-task trust checks: everything the worker loads before its first claim.
//!
//! Why it exists: a release worker that cannot validate its input, verify its chain or sign its
//! output must not claim anything. So, before the first `claimWork`, [`Startup::prepare`]
//! compiles the task validator, loads the chain policy, loads the signing key (refusing one
//! group or others can read; the same rule for the `[credentials] file`), loads the trust store from the configured pin and the state file,
//! proves that the trust store accepts a signature made with our key for our worker
//! implementation, and, when `[script] run_as` is set, proves that the script's user can read
//! neither the signing key nor the credentials file. Any failure is a [`StartupError`], which
//! names the config file and key and maps to exit code 64.
//!
//! Between tasks, [`TrustGuard::refresh`] reloads the trust policy when `trust.toml` changed on
//! disk, and re-checks that the policy in force has not expired and still trusts our key. If
//! not, the worker claims nothing until it does (it never falls back to an older policy
//! silently). It is never called while a task runs: a task is judged by one policy version.
//!
//! What it must not do: read the clock (times are arguments) or log key material.

use crate::chain_policy::{ChainPolicy, PolicyError};
use crate::config::{ChainOfTrustConfig, Config, Isolation, RunAs};
use crate::openpgp::{self, OpenPgpError, SigningKey};
use crate::sandbox::{ProbeReport, Sandbox};
use crate::trust::{self, CotSignature, SignatureError, TrustError, TrustStore};
use crate::validate::{TaskValidator, ValidateError};
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why the worker refuses to start. Every variant maps to exit code 64 ([`Self::exit_code`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// `[task]`: the payload schema or the scope rules are unusable.
    #[error("config file {config}: /task: {source}")]
    Validator {
        /// The config file.
        config: PathBuf,
        /// Why.
        source: ValidateError,
    },
    /// `[verify] policy`: the chain policy is unreadable or invalid.
    #[error("config file {config}: /verify/policy: {source}")]
    ChainPolicy {
        /// The config file.
        config: PathBuf,
        /// Why.
        source: PolicyError,
    },
    /// `[chain_of_trust] signing_key`: the key is unreadable, too permissive or unusable.
    #[error("config file {config}: /chain_of_trust/signing_key: {source}")]
    SigningKey {
        /// The config file.
        config: PathBuf,
        /// Why.
        source: OpenPgpError,
    },
    /// `[chain_of_trust] ed25519_key`: the key is unreadable, too permissive or malformed.
    #[error("config file {config}: /chain_of_trust/ed25519_key: {source}")]
    Ed25519Key {
        /// The config file.
        config: PathBuf,
        /// Why (never key material).
        source: crate::ed25519_key::Ed25519KeyError,
    },
    /// The trust policy in force does not accept our ed25519 key for our worker implementation.
    #[error(
        "config file {config}: /chain_of_trust/ed25519_key: trust policy version {version} does \
         not accept signatures by ed25519 key {public_key} for worker implementation \
         {worker_impl:?}: {source}"
    )]
    Ed25519KeyNotTrusted {
        /// The config file.
        config: PathBuf,
        /// Our ed25519 public key, base64.
        public_key: String,
        /// Our worker implementation.
        worker_impl: String,
        /// The policy version in force.
        version: u64,
        /// The trust store's verdict.
        source: Box<SignatureError>,
    },
    /// `[chain_of_trust]`: the trust store could not be loaded from the pin and state file.
    #[error("config file {config}: /chain_of_trust/keys_dir {keys_dir}: {source}")]
    TrustStore {
        /// The config file.
        config: PathBuf,
        /// The trust store directory.
        keys_dir: PathBuf,
        /// Why.
        source: TrustError,
    },
    /// The trust policy in force does not accept signatures by our key for our worker
    /// implementation: every document we signed would be rejected downstream.
    #[error(
        "config file {config}: /chain_of_trust/worker_impl: trust policy version {version} does \
         not accept signatures by key {fingerprint} for worker implementation {worker_impl:?}: \
         {source}"
    )]
    KeyNotTrusted {
        /// The config file.
        config: PathBuf,
        /// Our key's primary fingerprint.
        fingerprint: String,
        /// Our worker implementation.
        worker_impl: String,
        /// The policy version in force.
        version: u64,
        /// The trust store's verdict.
        source: Box<SignatureError>,
    },
    /// `[script] run_as`: the script's user could read a secret file.
    #[error(
        "config file {config}: /script/run_as: uid {uid} could read {path} (named by {pointer}): \
         {reason}"
    )]
    ReadableByScript {
        /// The config file.
        config: PathBuf,
        /// The key naming the file.
        pointer: &'static str,
        /// The file.
        path: PathBuf,
        /// The script's uid.
        uid: u32,
        /// Why it could read it.
        reason: String,
    },
    /// `[script] run_as`: the worker cannot hand directories to another user (not root).
    #[error(
        "config file {config}: /script/run_as: cannot give the work area to uid {uid}: {source} \
         (run_as needs a worker running as root)"
    )]
    CannotDropPrivileges {
        /// The config file.
        config: PathBuf,
        /// The script's uid.
        uid: u32,
        /// The OS error.
        source: std::io::Error,
    },
    /// `[script] isolation`: the host does not provide the isolation the config asks for.
    #[error("config file {config}: /script/isolation: {reason}")]
    Isolation {
        /// The config file.
        config: PathBuf,
        /// What the probe found (one line per failed property).
        reason: String,
    },
    /// `[credentials] file`: unreadable, not a regular file, or group or others have a
    /// permission bit on it (the signing key's rule, whatever else is configured).
    #[error("config file {config}: /credentials/file: {source}")]
    CredentialsFile {
        /// The config file.
        config: PathBuf,
        /// Why.
        source: crate::queue::CredentialsError,
    },
    /// A file named by the configuration could not be inspected.
    #[error("config file {config}: {pointer}: cannot inspect {path}: {source}")]
    Inspect {
        /// The config file.
        config: PathBuf,
        /// The key naming the file.
        pointer: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl StartupError {
    /// A worker that cannot start is misconfigured: exit 64, nothing claimed.
    pub fn exit_code(&self) -> i32 {
        crate::exit::EX_USAGE
    }
}

/// Why the trust policy cannot be used for the next task (between-task check).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustProblem {
    /// The policy on disk does not load (bad signature, rollback, expired, unreadable, ...).
    #[error("trust policy in {keys_dir} is not usable: {source}")]
    Load {
        /// The trust store directory.
        keys_dir: PathBuf,
        /// Why.
        source: TrustError,
    },
    /// The policy in force expired while no new version appeared.
    #[error("trust policy version {version} expired at {expires}")]
    Expired {
        /// The version.
        version: u64,
        /// Its expiry.
        expires: DateTime<Utc>,
    },
    /// The policy in force no longer accepts our own signatures.
    #[error(
        "trust policy version {version} does not accept our key {fingerprint} for {worker_impl:?}: \
         {source}"
    )]
    KeyNotTrusted {
        /// The version.
        version: u64,
        /// Our key.
        fingerprint: String,
        /// Our worker implementation.
        worker_impl: String,
        /// Why.
        source: Box<SignatureError>,
    },
}

/// Checks that `store` accepts a signature made now by `key` for `cfg.worker_impl`.
fn check_own_key(
    store: &TrustStore,
    key: &SigningKey,
    cfg: &ChainOfTrustConfig,
    now: DateTime<Utc>,
) -> Result<crate::trust::AcceptedSignature, SignatureError> {
    const PROBE: &[u8] = b"chainlock start-up probe: is our chain-of-trust key trusted?";
    let sig = match openpgp::sign_detached_armored(key, PROBE, now) {
        Ok(s) => s,
        Err(e) => {
            return Err(SignatureError::Malformed {
                reason: format!("cannot sign with our own key: {e}"),
            });
        }
    };
    store.verify_cot_signature(
        &cfg.worker_impl,
        PROBE,
        CotSignature::OpenPgpArmored(&sig),
        now,
        cfg.max_clock_skew(),
    )
}

/// The trust store in force, reloaded between tasks when it changes on disk.
#[derive(Debug)]
pub struct TrustGuard {
    cfg: ChainOfTrustConfig,
    limits: trust::Limits,
    current: Option<Arc<TrustStore>>,
    /// The newest evaluation time this guard wrote to the state file.
    recorded: DateTime<Utc>,
    /// The store in force accepted a probe signature by our key at `.0`, and that answer
    /// stands until `.1` (reset whenever the store changes).
    key_accepted: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

/// Until when an accepted own-key probe at `now` stands while the store is unchanged: the
/// first instant its answer can change by itself, the earliest of the key's window end or
/// retirement in the policy and the key's own certificate expiry. (The policy's own expiry is
/// checked on every refresh.) So the probe signature is made once per policy or key change,
/// not once per claim; every task's own signature is verified through the store anyway.
fn own_key_accepted_until(
    accepted: &crate::trust::AcceptedSignature,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> DateTime<Utc> {
    match key.expires(now) {
        Some(end) => end.min(accepted.key_retired_at),
        None => accepted.key_retired_at,
    }
}

impl TrustGuard {
    /// Loads the trust store from the configured pin and the state file.
    pub fn load(
        cfg: &ChainOfTrustConfig,
        now: DateTime<Utc>,
        limits: &trust::Limits,
    ) -> Result<TrustGuard, TrustError> {
        let store =
            TrustStore::load_with_state(&cfg.keys_dir, &cfg.pin(), &cfg.state_file, now, limits)?;
        Ok(TrustGuard {
            cfg: cfg.clone(),
            limits: *limits,
            current: Some(Arc::new(store)),
            recorded: now,
            key_accepted: None,
        })
    }

    /// The version in force, if a usable policy is loaded.
    pub fn version(&self) -> Option<u64> {
        self.current.as_ref().map(|s| s.version())
    }

    /// Between tasks only: reloads the policy if `trust.toml` changed on disk (or the last
    /// attempt failed), then checks that it has not expired at `now` and accepts our key.
    /// `Err` means: claim nothing now, try again after the poll interval.
    pub fn refresh(
        &mut self,
        key: &SigningKey,
        now: DateTime<Utc>,
    ) -> Result<Arc<TrustStore>, TrustProblem> {
        let load_err = |source| TrustProblem::Load {
            keys_dir: self.cfg.keys_dir.clone(),
            source,
        };
        // A clock stepped back behind what we already recorded: claim nothing (the reload
        // this forces checks the state file again, and keeps refusing until the clock is
        // right).
        if now + self.limits.max_clock_step_back < self.recorded {
            self.current = None;
            return Err(load_err(TrustError::ClockSteppedBack {
                path: self.cfg.state_file.clone(),
                last_evaluated: self.recorded,
                now,
                tolerance: self.limits.max_clock_step_back,
            }));
        }
        let changed = match &self.current {
            None => true,
            Some(store) => match store.changed_on_disk() {
                Ok(changed) => changed,
                Err(e) => {
                    self.current = None;
                    return Err(load_err(e));
                }
            },
        };
        if changed {
            let before = self.version();
            // Fail closed: the old store is dropped first, so an unusable new policy never
            // leaves the old one silently in force.
            self.current = None;
            self.key_accepted = None;
            let store = TrustStore::load_with_state(
                &self.cfg.keys_dir,
                &self.cfg.pin(),
                &self.cfg.state_file,
                now,
                &self.limits,
            )
            .map_err(load_err)?;
            tracing::info!(
                previous_version = ?before,
                version = store.version(),
                keys_dir = %self.cfg.keys_dir.display(),
                "trust policy reloaded"
            );
            self.current = Some(Arc::new(store));
            self.recorded = self.recorded.max(now);
        }
        let Some(store) = self.current.clone() else {
            // Unreachable: set just above or kept from before.
            return Err(TrustProblem::Expired {
                version: 0,
                expires: now,
            });
        };
        let expires = store.policy().file.expires;
        if expires <= now {
            self.current = None;
            return Err(TrustProblem::Expired {
                version: store.version(),
                expires,
            });
        }
        // Accepted by this same store, and nothing that answer depends on has ended since
        // (a clock stepped back before the probe also makes a new one).
        let fresh = self
            .key_accepted
            .is_some_and(|(at, until)| at <= now && now < until);
        if !fresh {
            match check_own_key(&store, key, &self.cfg, now) {
                Ok(accepted) => {
                    self.key_accepted = Some((now, own_key_accepted_until(&accepted, key, now)));
                }
                Err(source) => {
                    self.current = None;
                    self.key_accepted = None;
                    return Err(TrustProblem::KeyNotTrusted {
                        version: store.version(),
                        fingerprint: key.fingerprint(),
                        worker_impl: self.cfg.worker_impl.clone(),
                        source: Box::new(source),
                    });
                }
            }
        }
        // Keep the clock floor in the state file current while the worker runs for long.
        if now - self.recorded >= self.limits.evaluation_record_interval {
            if let Err(e) = store.record_evaluation(&self.cfg.state_file, now, &self.limits) {
                self.current = None;
                return Err(TrustProblem::Load {
                    keys_dir: self.cfg.keys_dir.clone(),
                    source: e,
                });
            }
            self.recorded = now;
        }
        Ok(store)
    }
}

/// Everything loaded before the first claim.
#[derive(Debug)]
pub struct Startup {
    /// The compiled task validator.
    pub validator: TaskValidator,
    /// The chain-of-trust policy.
    pub policy: ChainPolicy,
    /// Our chain-of-trust signing key.
    pub signing_key: SigningKey,
    /// Our optional ed25519 key (`public/chain-of-trust.json.sig`).
    pub ed25519_key: Option<crate::ed25519_key::Ed25519Key>,
    /// The trust store in force.
    pub trust: TrustGuard,
}

impl Startup {
    /// Loads and checks everything the configuration names, at `now`.
    pub fn prepare(
        config: &Config,
        now: DateTime<Utc>,
        trust_limits: &trust::Limits,
    ) -> Result<Startup, StartupError> {
        let cot = &config.chain_of_trust;
        let validator = load_validator(config)?;
        let policy = load_chain_policy(config)?;
        let signing_key = load_key(config, now)?;
        let ed25519_key = load_ed25519_key(config)?;
        check_credentials_file(config)?;
        check_run_as(config)?;
        let trust = TrustGuard::load(cot, now, trust_limits).map_err(|e| trust_error(config, e))?;
        if let Some(store) = &trust.current {
            check_key_trusted(config, store, &signing_key, now)?;
            if let Some(key) = &ed25519_key {
                check_ed25519_trusted(config, store, key, now)?;
            }
            tracing::info!(
                version = store.version(),
                keys_dir = %cot.keys_dir.display(),
                signing_key = %signing_key.fingerprint(),
                worker_impl = %cot.worker_impl,
                "trust policy loaded; our signing key is trusted"
            );
        }
        Ok(Startup {
            validator,
            policy,
            signing_key,
            ed25519_key,
            trust,
        })
    }
}

fn load_validator(config: &Config) -> Result<TaskValidator, StartupError> {
    TaskValidator::from_config(&config.task).map_err(|e| StartupError::Validator {
        config: config.source.clone(),
        source: e,
    })
}

fn load_chain_policy(config: &Config) -> Result<ChainPolicy, StartupError> {
    ChainPolicy::load(&config.verify.policy).map_err(|e| StartupError::ChainPolicy {
        config: config.source.clone(),
        source: e,
    })
}

fn load_key(config: &Config, now: DateTime<Utc>) -> Result<SigningKey, StartupError> {
    openpgp::load_signing_key(&config.chain_of_trust.signing_key, now).map_err(|e| {
        StartupError::SigningKey {
            config: config.source.clone(),
            source: e,
        }
    })
}

fn load_ed25519_key(
    config: &Config,
) -> Result<Option<crate::ed25519_key::Ed25519Key>, StartupError> {
    let Some(path) = &config.chain_of_trust.ed25519_key else {
        return Ok(None);
    };
    crate::ed25519_key::Ed25519Key::load(path)
        .map(Some)
        .map_err(|source| StartupError::Ed25519Key {
            config: config.source.clone(),
            source,
        })
}

/// The trust policy must accept a raw ed25519 signature by `key` for our worker implementation.
fn check_ed25519_trusted(
    config: &Config,
    store: &TrustStore,
    key: &crate::ed25519_key::Ed25519Key,
    now: DateTime<Utc>,
) -> Result<(), StartupError> {
    const PROBE: &[u8] = b"chainlock start-up probe: is our ed25519 key trusted?";
    let cot = &config.chain_of_trust;
    store
        .verify_cot_signature(
            &cot.worker_impl,
            PROBE,
            CotSignature::Ed25519Raw(&key.sign(PROBE)),
            now,
            cot.max_clock_skew(),
        )
        .map(|_| ())
        .map_err(|e| StartupError::Ed25519KeyNotTrusted {
            config: config.source.clone(),
            public_key: key.public_key_base64(),
            worker_impl: cot.worker_impl.clone(),
            version: store.version(),
            source: Box::new(e),
        })
}

/// `[credentials] file`, when set, must be private like the signing key. (The worker's loader
/// refuses such a file too; checking here keeps the rule visible in `chainlock config check`.)
fn check_credentials_file(config: &Config) -> Result<Option<&Path>, StartupError> {
    let Some(path) = &config.credentials.file else {
        return Ok(None);
    };
    crate::queue::credentials::check_file(path).map_err(|source| {
        StartupError::CredentialsFile {
            config: config.source.clone(),
            source,
        }
    })?;
    Ok(Some(path))
}

/// With `[script] run_as`: neither the signing key nor the credentials file may be readable by
/// the script's user.
fn check_run_as(config: &Config) -> Result<(), StartupError> {
    let Some(run_as) = config.script.run_as else {
        return Ok(());
    };
    let source = &config.source;
    check_not_readable_by(
        source,
        "/chain_of_trust/signing_key",
        &config.chain_of_trust.signing_key,
        run_as,
    )?;
    if let Some(key) = &config.chain_of_trust.ed25519_key {
        check_not_readable_by(source, "/chain_of_trust/ed25519_key", key, run_as)?;
    }
    if let Some(creds) = &config.credentials.file {
        check_not_readable_by(source, "/credentials/file", creds, run_as)?;
    }
    Ok(())
}

fn trust_error(config: &Config, e: TrustError) -> StartupError {
    StartupError::TrustStore {
        config: config.source.clone(),
        keys_dir: config.chain_of_trust.keys_dir.clone(),
        source: e,
    }
}

fn check_key_trusted(
    config: &Config,
    store: &TrustStore,
    key: &SigningKey,
    now: DateTime<Utc>,
) -> Result<(), StartupError> {
    let cot = &config.chain_of_trust;
    check_own_key(store, key, cot, now)
        .map(|_| ())
        .map_err(|e| StartupError::KeyNotTrusted {
            config: config.source.clone(),
            fingerprint: key.fingerprint(),
            worker_impl: cot.worker_impl.clone(),
            version: store.version(),
            source: Box::new(e),
        })
}

/// The trust limits the worker uses for `config`: the defaults, with the root-signature skew
/// taken from `[chain_of_trust] max_clock_skew_seconds` (as [`crate::worker::run`] does).
pub fn trust_limits_for(config: &Config) -> trust::Limits {
    trust::Limits {
        max_root_signature_skew: config.chain_of_trust.max_clock_skew(),
        ..trust::Limits::default()
    }
}

/// The outcome of one start-up check run by [`check_config`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckOutcome {
    /// The check passed; a short description of what was found.
    Ok(String),
    /// The check failed, exactly as the worker's start-up would fail.
    Failed(StartupError),
    /// The check could not run because a check it depends on failed.
    Skipped {
        /// The check(s) it needs.
        needs: &'static str,
    },
}

/// One named start-up check and its outcome.
#[derive(Debug)]
pub struct Check {
    /// What was checked (`"signing key"`, `"trust store"`, ...).
    pub name: &'static str,
    /// The outcome.
    pub outcome: CheckOutcome,
}

impl Check {
    /// Whether the check passed.
    pub fn passed(&self) -> bool {
        matches!(self.outcome, CheckOutcome::Ok(_))
    }
}

/// Runs every check [`Startup::prepare`] runs before the first claim, without stopping at the
/// first failure, for `chainlock config check`. Read-only: the queue is not contacted and the
/// trust state file is read but never written (so checking a config cannot move the worker's
/// rollback floor). The run_as hand-over probe, which writes into the work area, is not run.
pub fn check_config(config: &Config, now: DateTime<Utc>) -> Vec<Check> {
    let limits = trust_limits_for(config);
    let cot = &config.chain_of_trust;
    let mut checks = Vec::new();
    let mut push = |name, outcome| checks.push(Check { name, outcome });
    push(
        "payload schema",
        match load_validator(config) {
            Ok(_) => CheckOutcome::Ok(format!("{} compiles", config.task.payload_schema.display())),
            Err(e) => CheckOutcome::Failed(e),
        },
    );
    push(
        "chain policy",
        match load_chain_policy(config) {
            Ok(_) => CheckOutcome::Ok(format!("{} loads", config.verify.policy.display())),
            Err(e) => CheckOutcome::Failed(e),
        },
    );
    let key = match load_key(config, now) {
        Ok(k) => {
            push(
                "signing key",
                CheckOutcome::Ok(format!(
                    "{}: key {}, not readable by group or others",
                    cot.signing_key.display(),
                    k.fingerprint()
                )),
            );
            Some(k)
        }
        Err(e) => {
            push("signing key", CheckOutcome::Failed(e));
            None
        }
    };
    let ed25519 = match load_ed25519_key(config) {
        Ok(None) => {
            push("ed25519 key", CheckOutcome::Ok("not configured".into()));
            None
        }
        Ok(Some(k)) => {
            push(
                "ed25519 key",
                CheckOutcome::Ok(format!(
                    "{}: public key {}, not readable by group or others",
                    config
                        .chain_of_trust
                        .ed25519_key
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display(),
                    k.public_key_base64()
                )),
            );
            Some(k)
        }
        Err(e) => {
            push("ed25519 key", CheckOutcome::Failed(e));
            None
        }
    };
    push(
        "credentials file",
        match check_credentials_file(config) {
            Ok(None) => {
                CheckOutcome::Ok("not configured (credentials from the environment)".into())
            }
            Ok(Some(path)) => CheckOutcome::Ok(format!(
                "{}: not accessible by group or others",
                path.display()
            )),
            Err(e) => CheckOutcome::Failed(e),
        },
    );
    push(
        "run_as",
        match (config.script.run_as, check_run_as(config)) {
            (_, Err(e)) => CheckOutcome::Failed(e),
            (None, Ok(())) => CheckOutcome::Ok("not configured".into()),
            (Some(r), Ok(())) => CheckOutcome::Ok(format!(
                "uid {} cannot read the signing key or credentials file",
                r.uid
            )),
        },
    );
    let store = TrustStore::load_with_state_read_only(
        &cot.keys_dir,
        &cot.pin(),
        &cot.state_file,
        now,
        &limits,
    );
    let store = match store {
        Ok(store) => {
            push(
                "trust store",
                CheckOutcome::Ok(format!(
                    "{}: policy version {} verified from pin version {} (state file {} not written)",
                    cot.keys_dir.display(),
                    store.version(),
                    cot.pinned_version,
                    cot.state_file.display()
                )),
            );
            Some(store)
        }
        Err(e) => {
            push("trust store", CheckOutcome::Failed(trust_error(config, e)));
            None
        }
    };
    push(
        "own key trusted",
        match (&store, &key) {
            (Some(store), Some(key)) => match check_key_trusted(config, store, key, now) {
                Ok(()) => CheckOutcome::Ok(format!(
                    "policy version {} accepts key {} for {:?}",
                    store.version(),
                    key.fingerprint(),
                    cot.worker_impl
                )),
                Err(e) => CheckOutcome::Failed(e),
            },
            _ => CheckOutcome::Skipped {
                needs: "signing key and trust store",
            },
        },
    );
    if config.chain_of_trust.ed25519_key.is_some() {
        push(
            "own ed25519 key trusted",
            match (&store, &ed25519) {
                (Some(store), Some(key)) => match check_ed25519_trusted(config, store, key, now) {
                    Ok(()) => CheckOutcome::Ok(format!(
                        "policy version {} accepts ed25519 key {} for {:?}",
                        store.version(),
                        key.public_key_base64(),
                        cot.worker_impl
                    )),
                    Err(e) => CheckOutcome::Failed(e),
                },
                _ => CheckOutcome::Skipped {
                    needs: "ed25519 key and trust store",
                },
            },
        );
    }
    checks
}

/// Refuses a secret file the script's user could read: owned by that uid, or with any group or
/// other permission bit (a group the user is in, or everyone).
fn check_not_readable_by(
    config: &Path,
    pointer: &'static str,
    path: &Path,
    run_as: RunAs,
) -> Result<(), StartupError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| StartupError::Inspect {
        config: config.to_owned(),
        pointer,
        path: path.to_owned(),
        source,
    })?;
    let refuse = |reason: String| StartupError::ReadableByScript {
        config: config.to_owned(),
        pointer,
        path: path.to_owned(),
        uid: run_as.uid,
        reason,
    };
    if meta.uid() == run_as.uid {
        return Err(refuse("the file is owned by that uid".into()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {mode:04o} grants group or other access (chmod 600)"
        )));
    }
    Ok(())
}

/// With `run_as`, proves the worker can hand a directory to the script's user (it must be
/// root), by creating and chowning a probe file in `dir`.
pub fn check_can_hand_over(config: &Path, dir: &Path, run_as: RunAs) -> Result<(), StartupError> {
    let err = |source| StartupError::CannotDropPrivileges {
        config: config.to_owned(),
        uid: run_as.uid,
        source,
    };
    let probe = tempfile::NamedTempFile::new_in(dir).map_err(err)?;
    std::os::unix::fs::chown(probe.path(), Some(run_as.uid), Some(run_as.gid)).map_err(err)?;
    Ok(())
}

/// The worker's files the script must never read, as `(name, path)`: what the isolation probe
/// tries to open from inside the sandbox. With `uid` these are the secrets (not readable by the
/// script's uid); with `namespaces` also everything else of the worker's (not visible at all).
pub fn worker_secrets(config: &Config) -> Vec<(&'static str, PathBuf)> {
    let cot = &config.chain_of_trust;
    let mut out = vec![
        ("hidden: signing key", cot.signing_key.clone()),
        ("hidden: task logs", config.paths.log_dir.clone()),
    ];
    if let Some(key) = &cot.ed25519_key {
        out.push(("hidden: ed25519 key", key.clone()));
    }
    if let Some(creds) = &config.credentials.file {
        out.push(("hidden: credentials file", creds.clone()));
    }
    if config.script.isolation == Isolation::Namespaces {
        // Not secret, but none of the script's business: invisible with namespaces.
        out.push(("hidden: config file", config.source.clone()));
        out.push(("hidden: trust store", cot.keys_dir.join("trust.toml")));
        out.push(("hidden: trust state", cot.state_file.clone()));
        // Other runs' directories live next to the marker; the sandbox shows only its own.
        out.push((
            "hidden: work area",
            config.paths.work_dir.join(super::workdir::MARKER),
        ));
        for files in config.script.scope_files.values() {
            out.extend(
                files
                    .iter()
                    .map(|f| ("hidden: unselected scope file", f.clone())),
            );
        }
    } else {
        out.push(("hidden: work area", config.paths.work_dir.clone()));
    }
    out
}

/// Builds the configured [`Sandbox`] and proves the host provides it: a sandboxed no-op in a
/// scratch run under `scratch` must run as the configured uid without privileges and, for
/// `namespaces`, in its own PID and mount namespaces where none of [`worker_secrets`] exists.
/// Also kills anything a previous worker's script left running (before the first claim).
/// `adopt_orphans`: see [`Sandbox::adopt_orphans`] (`chainlock run` only).
pub async fn prepare_sandbox(
    config: &Config,
    scratch: &Path,
    adopt_orphans: bool,
) -> Result<Sandbox, StartupError> {
    let refuse = |reason: String| StartupError::Isolation {
        config: config.source.clone(),
        reason,
    };
    let mut sandbox = Sandbox::from_config(&config.script).map_err(|e| refuse(e.to_string()))?;
    sandbox
        .install_helper(scratch)
        .map_err(|e| refuse(e.to_string()))?;
    // Orphans of a script without a PID namespace come back to us, never to init.
    if adopt_orphans {
        sandbox.adopt_orphans().map_err(|e| refuse(e.to_string()))?;
    }
    // Before anything else: nothing of an earlier run (of a worker killed with SIGKILL) lives.
    sandbox
        .contain(None)
        .await
        .map_err(|e| refuse(format!("left over from an earlier run: {e}")))?;
    let report = probe_report(config, &sandbox, scratch).await?;
    for c in &report.checks {
        tracing::info!(
            level = sandbox.level().as_str(),
            property = c.name,
            ok = c.ok,
            "isolation: {}",
            c.detail
        );
    }
    if !report.passed() {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        return Err(refuse(format!(
            "the host does not provide isolation \"{}\": {}",
            sandbox.level().as_str(),
            failed.join("; ")
        )));
    }
    if sandbox.level() == Isolation::None {
        tracing::warn!(
            "isolation = \"none\": the script runs as the worker's uid and can read the \
             worker's credentials and signing key"
        );
    }
    Ok(sandbox)
}

async fn probe_report(
    config: &Config,
    sandbox: &Sandbox,
    scratch: &Path,
) -> Result<ProbeReport, StartupError> {
    let refuse = |reason: String| StartupError::Isolation {
        config: config.source.clone(),
        reason,
    };
    if sandbox.level() == Isolation::None {
        return Ok(ProbeReport {
            level: Isolation::None,
            checks: vec![crate::sandbox::ProbeCheck {
                name: "sandbox uid",
                ok: true,
                detail: "the worker's own uid: the script can read the worker's credentials, \
                         signing key and every other run's files (isolation = \"none\")"
                    .into(),
            }],
        });
    }
    if let Some(run_as) = sandbox.run_as() {
        check_can_hand_over(&config.source, scratch, run_as)?;
    }
    let dir = tempfile::Builder::new()
        .prefix(".probe-")
        .tempdir_in(scratch)
        .map_err(|e| {
            refuse(format!(
                "cannot create a probe directory in {}: {e}",
                scratch.display()
            ))
        })?;
    let report = sandbox
        .probe(dir.path(), &worker_secrets(config))
        .await
        .map_err(|e| refuse(e.to_string()))?;
    Ok(report)
}

/// `chainlock config check`: the isolation level, one line per probed property (the probe
/// runs in a temporary directory, never in the work area).
pub async fn check_isolation(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    let failed = |reason: String| {
        CheckOutcome::Failed(StartupError::Isolation {
            config: config.source.clone(),
            reason,
        })
    };
    let ready = Sandbox::from_config(&config.script)
        .map_err(|e| e.to_string())
        .and_then(|mut s| {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            s.install_helper(dir.path()).map_err(|e| e.to_string())?;
            Ok((s, dir))
        });
    let (sandbox, scratch) = match ready {
        Ok(x) => x,
        Err(reason) => {
            checks.push(Check {
                name: "isolation",
                outcome: failed(reason),
            });
            return checks;
        }
    };
    match probe_report(config, &sandbox, scratch.path()).await {
        Ok(report) => {
            checks.push(Check {
                name: "isolation",
                outcome: CheckOutcome::Ok(format!("level \"{}\" requested", report.level.as_str())),
            });
            for c in report.checks {
                checks.push(Check {
                    name: c.name,
                    outcome: if c.ok {
                        CheckOutcome::Ok(c.detail)
                    } else {
                        failed(c.detail)
                    },
                });
            }
        }
        Err(e) => checks.push(Check {
            name: "isolation",
            outcome: CheckOutcome::Failed(e),
        }),
    }
    checks
}
