//! The trust store: which keys may sign chain-of-trust documents, and how that set changes.
//!
//! Why this module exists: scriptworker kept its trusted keys in a config tuple with no version,
//! no validity window and no signature on changes, and two key rotations caused outages. Here
//! the set of trusted keys is a versioned policy file, `keys/trust.toml`, changed only by a new
//! version signed by a threshold of the previous version's root keys **and** a threshold of its
//! own (TUF's root rotation). Each worker key carries a validity window and an optional
//! revocation (hard for `compromised`, soft for `retired`/`superseded`).
//!
//! Layout of `keys/`:
//! - `trust.toml` — the current policy, version N; `sigs/*.asc` — detached root signatures
//!   over its exact bytes (one armored signature per file);
//! - `history/v<K>/trust.toml` + `history/v<K>/sigs/*.asc` — every earlier version, unchanged;
//! - `pending/` — a proposed version N+1 collecting signatures (never trusted by the worker).
//!
//! The core ([`verify_history`], [`TrustStore::verify_cot_signature`]) is pure: bytes, a
//! reference time and [`Limits`] in, a verdict out. [`TrustStore::load`] is the thin IO edge.
//!
//! What it must not do: read the clock (times are arguments), read private keys, or accept a
//! policy it cannot chain back to the operator's pin.

pub mod outlook;
pub mod policy;

use crate::openpgp::{self, OpenPgpError};
use chrono::{DateTime, Duration, Utc};
use policy::{KeyMaterial, KeyType, Policy, RevocationReason};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use policy::decode_ed25519_public_key;

/// Explicit caps on what the trust store reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `trust.toml` accepted (default 1 MiB, as tough caps root.json).
    pub max_policy_bytes: u64,
    /// Largest signature file accepted (default 64 KiB).
    pub max_signature_bytes: u64,
    /// Most signature files read per version (default 64).
    pub max_signatures_per_version: usize,
    /// Most versions walked from the pin to the newest in one load (default 1024).
    pub max_versions: u64,
    /// How far in the future of the evaluation time a root signature may be dated
    /// (default 5 minutes).
    pub max_root_signature_skew: Duration,
    /// How far the clock may be behind the newest evaluation time recorded in the state file
    /// before loading is refused (default 1 hour; TUF/tough's `SystemTimeSteppedBackward`). A
    /// clock set back could otherwise make an expired policy, or a key whose window closed,
    /// look valid again.
    pub max_clock_step_back: Duration,
    /// Between tasks, how often the worker records its evaluation time in the state file
    /// (default 10 minutes; loads always record it).
    pub evaluation_record_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_policy_bytes: 1024 * 1024,
            max_signature_bytes: 64 * 1024,
            max_signatures_per_version: 64,
            max_versions: 1024,
            max_root_signature_skew: Duration::minutes(5),
            max_clock_step_back: Duration::hours(1),
            evaluation_record_interval: Duration::minutes(10),
        }
    }
}

/// Why the trust store could not be loaded or a policy version is not acceptable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file is larger than the limit.
    #[error("{path}: {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A version has more signature files than the limit.
    #[error("{path}: more than {limit} signature files")]
    TooManySignatures {
        /// The directory.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// `trust.toml` is not valid TOML for the policy format.
    #[error("policy does not parse: {reason}")]
    PolicyParse {
        /// Why.
        reason: String,
    },
    /// The policy parses but is inconsistent.
    #[error("policy version {version} is invalid: {reason}")]
    PolicyInvalid {
        /// The version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// The pinned version's bytes do not hash to the pinned digest.
    #[error("policy version {version} has sha256 {actual}, but {expected} is pinned")]
    PinMismatch {
        /// The version.
        version: u64,
        /// The pinned digest.
        expected: String,
        /// The digest found.
        actual: String,
    },
    /// The newest policy on disk is older than the pinned or last-seen version.
    #[error(
        "rollback refused: newest policy on disk is version {found}, version {pinned} was already trusted"
    )]
    Rollback {
        /// The version trusted before.
        pinned: u64,
        /// The newest version found.
        found: u64,
    },
    /// A version does not follow its predecessor by exactly one.
    #[error("policy version {found} does not follow version {previous}")]
    VersionGap {
        /// The predecessor's version.
        previous: u64,
        /// The version found.
        found: u64,
    },
    /// Too many versions between the pin and the newest.
    #[error("{count} policy versions to walk exceeds the limit of {limit}")]
    TooManyVersions {
        /// How many.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// Not enough distinct root keys signed a version.
    #[error(
        "policy version {version}: {valid} valid signature(s) from the root keys of version \
         {by_version}, threshold is {threshold} (signed by: {signers:?})"
    )]
    ThresholdNotMet {
        /// The version being checked.
        version: u64,
        /// Whose root keys were counted (the previous version's or its own).
        by_version: u64,
        /// The threshold.
        threshold: usize,
        /// Distinct valid signers found.
        valid: usize,
        /// Their primary fingerprints.
        signers: Vec<String>,
    },
    /// The newest policy has expired (possible freeze attack).
    #[error("policy version {version} expired at {expires} (evaluated at {now})")]
    Expired {
        /// The version.
        version: u64,
        /// Its expiry.
        expires: DateTime<Utc>,
        /// The evaluation time.
        now: DateTime<Utc>,
    },
    /// The clock is further behind the newest recorded evaluation time than the tolerance:
    /// it was stepped back (or the state file comes from a machine whose clock ran ahead).
    #[error(
        "trust state {path}: the clock reads {now}, but the trust policy was already evaluated \
         at {last_evaluated}; more than {} back in time, refusing to load (fix the \
         clock; if the recorded time is wrong, remove evaluated_at from the state file)",
        crate::clock::human_duration(*tolerance)
    )]
    ClockSteppedBack {
        /// The state file.
        path: PathBuf,
        /// The newest evaluation time recorded.
        last_evaluated: DateTime<Utc>,
        /// The clock now.
        now: DateTime<Utc>,
        /// The tolerance ([`Limits::max_clock_step_back`]).
        tolerance: Duration,
    },
    /// The state file is unreadable or inconsistent with the configured pin.
    #[error("trust state {path}: {reason}")]
    State {
        /// The state file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A trusted starting point: a policy version and the sha256 of its exact `trust.toml` bytes.
/// The operator configures the first one; the worker persists the newest verified one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPin {
    /// The version.
    pub version: u64,
    /// Lowercase hex sha256 of that version's `trust.toml`.
    pub sha256: String,
}

/// The worker's trust state file: the newest verified pin (the rollback floor) and the newest
/// time at which the policy was evaluated (the clock floor).
///
/// **API Boundary**: files written before `evaluated_at` existed (just `version` and `sha256`)
/// still load; they simply have no clock floor until the next write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustState {
    /// The newest verified version.
    pub version: u64,
    /// Lowercase hex sha256 of that version's `trust.toml`.
    pub sha256: String,
    /// The newest time at which the worker evaluated the policy; never moves backwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
}

impl TrustState {
    /// The pin this state records.
    pub fn pin(&self) -> TrustPin {
        TrustPin {
            version: self.version,
            sha256: self.sha256.clone(),
        }
    }

    /// Reads a state file written by [`TrustState::write`]; `None` if it does not exist.
    pub fn read(path: &Path) -> Result<Option<TrustState>, TrustError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TrustError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| TrustError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Writes the state atomically (temporary file in the same directory, then rename).
    pub fn write(&self, path: &Path) -> Result<(), TrustError> {
        let io = |source| TrustError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| TrustError::State {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        std::io::Write::write_all(&mut tmp, &json).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

/// Refuses to evaluate at `now` when the clock is more than [`Limits::max_clock_step_back`]
/// behind the newest evaluation time recorded in `state` (read from `path`). Pure.
pub fn check_clock(
    state: &TrustState,
    path: &Path,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(), TrustError> {
    let Some(last_evaluated) = state.evaluated_at else {
        return Ok(());
    };
    if now + limits.max_clock_step_back < last_evaluated {
        return Err(TrustError::ClockSteppedBack {
            path: path.to_path_buf(),
            last_evaluated,
            now,
            tolerance: limits.max_clock_step_back,
        });
    }
    Ok(())
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// One policy version as found on disk: the exact `trust.toml` bytes and its signature files.
#[derive(Debug, Clone)]
pub struct PolicyVersion {
    /// Where it was read from (for reports).
    pub source: PathBuf,
    /// The exact bytes of `trust.toml`.
    pub bytes: Vec<u8>,
    /// The armored detached signatures over `bytes`.
    pub signatures: Vec<Vec<u8>>,
}

/// What was checked for one version (for `chainlock keys verify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionReport {
    /// The version.
    pub version: u64,
    /// sha256 of its bytes.
    pub sha256: String,
    /// Distinct root signers from the previous version (None for the pinned version).
    pub previous_signers: Option<Vec<String>>,
    /// Distinct root signers from its own root keys.
    pub own_signers: Vec<String>,
}

/// Distinct root keys of `roots` (by primary fingerprint) with a valid signature over `bytes`
/// among `signatures`, made no later than `now + skew`. Invalid signatures are skipped, not
/// fatal (in-toto and TUF count only good signatures).
pub fn root_signers(
    roots: &Policy,
    bytes: &[u8],
    signatures: &[Vec<u8>],
    now: DateTime<Utc>,
    skew: Duration,
) -> Vec<String> {
    let certs: Vec<&openpgp::OpenPgpCert> = roots.root_certs.iter().collect();
    let mut signers = BTreeSet::new();
    for sig in signatures {
        if let Ok(v) = openpgp::verify_detached(&certs, bytes, sig)
            && v.created <= now + skew
        {
            // Several subkeys of one certificate count once: keyed by primary fingerprint.
            signers.insert(v.primary_fingerprint);
        }
    }
    signers.into_iter().collect()
}

/// Checks that `next` may follow `prev` (TUF 5.3.4-5.3.5): exactly version N+1, signed by a
/// threshold of N's root keys and a threshold of its own root keys.
pub fn check_transition(
    prev: &Policy,
    next_version: &PolicyVersion,
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(Policy, VersionReport), TrustError> {
    let next = Policy::parse(&next_version.bytes)?;
    // 5.3.5: the version of the new root must be exactly N+1 (rollback protection).
    if next.version() != prev.version().saturating_add(1) {
        return Err(TrustError::VersionGap {
            previous: prev.version(),
            found: next.version(),
        });
    }
    // 5.3.4: signed by a threshold of the trusted (previous) root keys ...
    let skew = limits.max_root_signature_skew;
    let old = root_signers(
        prev,
        &next_version.bytes,
        &next_version.signatures,
        now,
        skew,
    );
    if old.len() < prev.file.root.threshold {
        return Err(TrustError::ThresholdNotMet {
            version: next.version(),
            by_version: prev.version(),
            threshold: prev.file.root.threshold,
            valid: old.len(),
            signers: old,
        });
    }
    // ... and by a threshold of the new root keys.
    let own = root_signers(
        &next,
        &next_version.bytes,
        &next_version.signatures,
        now,
        skew,
    );
    if own.len() < next.file.root.threshold {
        return Err(TrustError::ThresholdNotMet {
            version: next.version(),
            by_version: next.version(),
            threshold: next.file.root.threshold,
            valid: own.len(),
            signers: own,
        });
    }
    let report = VersionReport {
        version: next.version(),
        sha256: sha256_hex(&next_version.bytes),
        previous_signers: Some(old),
        own_signers: own,
    };
    Ok((next, report))
}

/// Verifies a policy history: `versions[0]` must match `pin` (and be signed by a threshold of
/// its own roots), every following version must be a valid transition from its predecessor,
/// and the final one must not be expired at `now`. Intermediate versions may be expired (TUF
/// 5.3.10: only the final root's expiry matters).
pub fn verify_history(
    pin: &TrustPin,
    versions: &[PolicyVersion],
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<(Policy, Vec<VersionReport>), TrustError> {
    let Some(first) = versions.first() else {
        return Err(TrustError::PolicyParse {
            reason: "no policy version given".into(),
        });
    };
    let count = u64::try_from(versions.len()).unwrap_or(u64::MAX);
    if count > limits.max_versions {
        return Err(TrustError::TooManyVersions {
            count,
            limit: limits.max_versions,
        });
    }
    // 5.3.2: load the trusted root: the pinned bytes, identified by hash.
    let actual = sha256_hex(&first.bytes);
    if actual != pin.sha256.to_ascii_lowercase() {
        return Err(TrustError::PinMismatch {
            version: pin.version,
            expected: pin.sha256.clone(),
            actual,
        });
    }
    let mut current = Policy::parse(&first.bytes)?;
    if current.version() != pin.version {
        return Err(TrustError::VersionGap {
            previous: pin.version.saturating_sub(1),
            found: current.version(),
        });
    }
    let skew = limits.max_root_signature_skew;
    let own = root_signers(&current, &first.bytes, &first.signatures, now, skew);
    if own.len() < current.file.root.threshold {
        return Err(TrustError::ThresholdNotMet {
            version: current.version(),
            by_version: current.version(),
            threshold: current.file.root.threshold,
            valid: own.len(),
            signers: own,
        });
    }
    let mut reports = vec![VersionReport {
        version: current.version(),
        sha256: actual,
        previous_signers: None,
        own_signers: own,
    }];
    // 5.3.3-5.3.7: walk N+1, N+2, ... each authorised by its predecessor.
    for next in &versions[1..] {
        let (policy, report) = check_transition(&current, next, now, limits)?;
        current = policy;
        reports.push(report);
    }
    // 5.3.10: the final root must not be expired at the fixed start time (freeze attack).
    if current.file.expires <= now {
        return Err(TrustError::Expired {
            version: current.version(),
            expires: current.file.expires,
            now,
        });
    }
    Ok((current, reports))
}

/// A chain-of-trust signature to check.
#[derive(Debug, Clone, Copy)]
pub enum CotSignature<'a> {
    /// An ASCII-armored detached OpenPGP signature (`public/chain-of-trust.json.asc`).
    OpenPgpArmored(&'a [u8]),
    /// A raw 64-byte ed25519 signature (`public/chain-of-trust.json.sig`).
    Ed25519Raw(&'a [u8]),
}

/// A signature the trust store accepted, with what an auditor needs to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedSignature {
    /// The worker implementation the key is trusted for.
    pub worker_impl: String,
    /// The key's name in the policy.
    pub key_name: String,
    /// The key's identity: OpenPGP primary fingerprint or base64 ed25519 public key.
    pub key_id: String,
    /// For OpenPGP, the (sub)key that signed.
    pub signing_subkey: Option<String>,
    /// The time the window checks used: the OpenPGP signature's creation time, or the observed
    /// time for ed25519 (which carries no time).
    pub signed_at: DateTime<Utc>,
    /// The policy version that accepted it.
    pub policy_version: u64,
    /// When the key stops (or stopped) being trusted: its `valid_until`, or an earlier
    /// retirement or supersession. A signature from a key retired before the time evidence is
    /// judged at was dated by that key's holder: offline evidence cannot rule out backdating.
    pub key_retired_at: DateTime<Utc>,
}

/// Why a chain-of-trust signature is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The policy lists no key for this worker implementation.
    #[error("no keys are trusted for worker implementation {worker_impl:?}")]
    NoKeysForWorkerImpl {
        /// The worker implementation.
        worker_impl: String,
    },
    /// No key trusted for this worker implementation made the signature.
    #[error("signature is not from any of the {tried} key(s) trusted for {worker_impl:?}")]
    UnknownSigner {
        /// The worker implementation.
        worker_impl: String,
        /// How many keys were tried.
        tried: usize,
    },
    /// The signer is trusted, but only for other worker implementations.
    #[error("key {key} signed, but it is trusted for {listed_for:?}, not {worker_impl:?}")]
    WrongWorkerImpl {
        /// The key.
        key: String,
        /// The worker implementation asked for.
        worker_impl: String,
        /// Where the key is listed.
        listed_for: Vec<String>,
    },
    /// The signature bytes are malformed (not one armored signature, not 64 bytes).
    #[error("malformed signature: {reason}")]
    Malformed {
        /// Why.
        reason: String,
    },
    /// The signature does not verify over the document, or OpenPGP policy refused it.
    #[error("signature by {key} is invalid: {reason}")]
    BadSignature {
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// The signer's OpenPGP certificate was not valid at the signature time (expired, bad
    /// self-signature, weak algorithm).
    #[error("certificate {key} is not valid at {at}: {reason}")]
    CertInvalid {
        /// The key.
        key: String,
        /// The signature time.
        at: DateTime<Utc>,
        /// Why.
        reason: String,
    },
    /// Signed before the key's validity window opens.
    #[error("key {key} signed at {at}, before its window opens at {not_before}")]
    NotYetValid {
        /// The key.
        key: String,
        /// The signature time.
        at: DateTime<Utc>,
        /// `valid_from`.
        not_before: DateTime<Utc>,
    },
    /// Signed at or after the end of the key's validity window.
    #[error("key {key} signed at {at}, after its window closed at {not_after}")]
    Expired {
        /// The key.
        key: String,
        /// The signature time.
        at: DateTime<Utc>,
        /// `valid_until`.
        not_after: DateTime<Utc>,
    },
    /// The key is revoked: always for `compromised` (and OpenPGP hard self-revocations),
    /// for signatures at or after `revoked_at` for soft reasons.
    #[error("key {key} is revoked ({reason}) as of {revoked_at}; signature made at {at}")]
    Revoked {
        /// The key.
        key: String,
        /// The revocation reason.
        reason: String,
        /// The signature time.
        at: DateTime<Utc>,
        /// When the revocation took effect.
        revoked_at: DateTime<Utc>,
    },
    /// The signature claims a creation time too far after the time it was observed.
    #[error(
        "signature by {key} is dated {signed_at}, more than {} after it was observed at \
         {observed_at}",
        crate::clock::human_duration(*max_skew)
    )]
    Future {
        /// The key.
        key: String,
        /// The claimed creation time.
        signed_at: DateTime<Utc>,
        /// When the document was observed (e.g. the upstream run's resolution).
        observed_at: DateTime<Utc>,
        /// The allowed skew.
        max_skew: Duration,
    },
    /// The OpenPGP signature itself expired before it was observed.
    #[error("signature by {key} expired at {expired_at}, observed at {observed_at}")]
    SignatureExpired {
        /// The key.
        key: String,
        /// The signature's expiration.
        expired_at: DateTime<Utc>,
        /// The observation time.
        observed_at: DateTime<Utc>,
    },
}

impl SignatureError {
    /// The Taskcluster exception reason for a task whose upstream signature is refused: the
    /// task's input is untrusted, which retrying will not change (scriptworker's `CoTError`).
    pub fn report_reason(&self) -> crate::queue::types::ExceptionReason {
        use crate::queue::types::ExceptionReason;
        match self {
            SignatureError::NoKeysForWorkerImpl { .. }
            | SignatureError::UnknownSigner { .. }
            | SignatureError::WrongWorkerImpl { .. }
            | SignatureError::Malformed { .. }
            | SignatureError::BadSignature { .. }
            | SignatureError::CertInvalid { .. }
            | SignatureError::NotYetValid { .. }
            | SignatureError::Expired { .. }
            | SignatureError::Revoked { .. }
            | SignatureError::Future { .. }
            | SignatureError::SignatureExpired { .. } => ExceptionReason::MalformedPayload,
        }
    }
}

/// The verified policy in force, ready to judge signatures.
#[derive(Debug, Clone)]
pub struct TrustStore {
    policy: Policy,
    pin: TrustPin,
    keys_dir: Option<PathBuf>,
    reports: Vec<VersionReport>,
}

impl TrustStore {
    /// Builds a store from an already verified history (see [`verify_history`]).
    pub fn from_versions(
        pin: &TrustPin,
        versions: &[PolicyVersion],
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<TrustStore, TrustError> {
        let (policy, reports) = verify_history(pin, versions, now, limits)?;
        let last = versions
            .last()
            .map(|v| sha256_hex(&v.bytes))
            .unwrap_or_default();
        Ok(TrustStore {
            pin: TrustPin {
                version: policy.version(),
                sha256: last,
            },
            policy,
            keys_dir: None,
            reports,
        })
    }

    /// Loads `keys_dir`, walking from `pin` to the newest version on disk, at time `now`.
    /// Persisting [`TrustStore::pin`] afterwards (see [`TrustStore::load_with_state`]) is what
    /// makes rollback below the newest seen version impossible.
    pub fn load(
        keys_dir: &Path,
        pin: &TrustPin,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<TrustStore, TrustError> {
        let current = read_version_dir(keys_dir, limits)?;
        let newest = Policy::parse(&current.bytes)?.version();
        if newest < pin.version {
            return Err(TrustError::Rollback {
                pinned: pin.version,
                found: newest,
            });
        }
        let count = newest - pin.version + 1;
        if count > limits.max_versions {
            return Err(TrustError::TooManyVersions {
                count,
                limit: limits.max_versions,
            });
        }
        let mut versions = Vec::new();
        for k in pin.version..newest {
            versions.push(read_version_dir(&history_dir(keys_dir, k), limits)?);
        }
        versions.push(current);
        let mut store = TrustStore::from_versions(pin, &versions, now, limits)?;
        store.keys_dir = Some(keys_dir.to_path_buf());
        Ok(store)
    }

    /// Like [`TrustStore::load`], starting from the newer of the configured pin and the pin
    /// persisted in `state_file`, and persisting the new pin when it moved forward. Refuses to
    /// load when `now` is more than [`Limits::max_clock_step_back`] behind the evaluation time
    /// recorded in `state_file` ([`TrustError::ClockSteppedBack`]), and records `now` as the
    /// newest evaluation time otherwise.
    pub fn load_with_state(
        keys_dir: &Path,
        configured: &TrustPin,
        state_file: &Path,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<TrustStore, TrustError> {
        let (store, stored) =
            TrustStore::load_from_state(keys_dir, configured, state_file, now, limits)?;
        // The clock floor never moves backwards (a clock within the tolerance behind it keeps
        // the recorded time).
        let evaluated_at = match stored.as_ref().and_then(|s| s.evaluated_at) {
            Some(last) if last > now => last,
            _ => now,
        };
        let next = TrustState {
            version: store.pin.version,
            sha256: store.pin.sha256.clone(),
            evaluated_at: Some(evaluated_at),
        };
        if stored.as_ref() != Some(&next) {
            next.write(state_file)?;
        }
        Ok(store)
    }

    /// Like [`TrustStore::load_with_state`] (including the clock check), but never writes
    /// `state_file` (nor anything else): for `chainlock config check`, which must judge the same inputs the worker would
    /// without moving the worker's rollback floor.
    pub fn load_with_state_read_only(
        keys_dir: &Path,
        configured: &TrustPin,
        state_file: &Path,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<TrustStore, TrustError> {
        TrustStore::load_from_state(keys_dir, configured, state_file, now, limits)
            .map(|(store, _)| store)
    }

    /// The shared read half of the two loaders: the store, and the pin the state file held.
    fn load_from_state(
        keys_dir: &Path,
        configured: &TrustPin,
        state_file: &Path,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<(TrustStore, Option<TrustState>), TrustError> {
        let stored = TrustState::read(state_file)?;
        if let Some(state) = &stored {
            check_clock(state, state_file, now, limits)?;
        }
        let pin = match &stored {
            Some(s) if s.version > configured.version => s.pin(),
            Some(s) if s.version == configured.version && s.sha256 != configured.sha256 => {
                return Err(TrustError::State {
                    path: state_file.to_path_buf(),
                    reason: format!(
                        "state pins version {} with sha256 {}, configuration pins {}",
                        s.version, s.sha256, configured.sha256
                    ),
                });
            }
            _ => configured.clone(),
        };
        let store = TrustStore::load(keys_dir, &pin, now, limits)?;
        Ok((store, stored))
    }

    /// Records `now` as the newest evaluation time in `state_file` (between tasks, without
    /// reloading): refuses with [`TrustError::ClockSteppedBack`] if `now` is too far behind
    /// the time already recorded, never moves the recorded time or the pin backwards.
    pub fn record_evaluation(
        &self,
        state_file: &Path,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<(), TrustError> {
        let stored = TrustState::read(state_file)?;
        if let Some(state) = &stored {
            check_clock(state, state_file, now, limits)?;
        }
        let mut next = match &stored {
            Some(s) if s.version > self.pin.version => s.clone(),
            _ => TrustState {
                version: self.pin.version,
                sha256: self.pin.sha256.clone(),
                evaluated_at: None,
            },
        };
        next.evaluated_at = match stored.as_ref().and_then(|s| s.evaluated_at) {
            Some(last) if last > now => Some(last),
            _ => Some(now),
        };
        if stored.as_ref() != Some(&next) {
            next.write(state_file)?;
        }
        Ok(())
    }

    /// The version and digest now in force (persist it as the next pin).
    pub fn pin(&self) -> &TrustPin {
        &self.pin
    }

    /// The version in force.
    pub fn version(&self) -> u64 {
        self.pin.version
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// What was checked per version when loading.
    pub fn reports(&self) -> &[VersionReport] {
        &self.reports
    }

    /// Whether `trust.toml` on disk differs from the version in force. Cheap (one small file
    /// hashed); call between tasks, and reload with [`TrustStore::load`] when it returns true.
    /// A store not loaded from disk never changes.
    pub fn changed_on_disk(&self) -> Result<bool, TrustError> {
        let Some(dir) = &self.keys_dir else {
            return Ok(false);
        };
        let path = dir.join("trust.toml");
        let bytes = std::fs::read(&path).map_err(|source| TrustError::Io { path, source })?;
        Ok(sha256_hex(&bytes) != self.pin.sha256)
    }

    /// Decides whether `sig` over `document` is an acceptable chain-of-trust signature for
    /// `worker_impl`, as observed at `observed_at` (e.g. the upstream run's resolution time).
    ///
    /// Accepted only if: a key listed for `worker_impl` made it; for OpenPGP the certificate is
    /// valid, alive and unrevoked at the signature's creation time under the standard policy,
    /// and that time is not after `observed_at + max_skew`; the signature time (ed25519:
    /// `observed_at`) is inside the key's `[valid_from, valid_until)` window; the key is not
    /// revoked as `compromised`, and not revoked for a soft reason at or before that time.
    pub fn verify_cot_signature(
        &self,
        worker_impl: &str,
        document: &[u8],
        sig: CotSignature<'_>,
        observed_at: DateTime<Utc>,
        max_skew: Duration,
    ) -> Result<AcceptedSignature, SignatureError> {
        let keys = self
            .policy
            .workers
            .get(worker_impl)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| SignatureError::NoKeysForWorkerImpl {
                worker_impl: worker_impl.to_owned(),
            })?;
        let (entry, signed_at, subkey) = match sig {
            CotSignature::OpenPgpArmored(armored) => {
                self.check_openpgp(worker_impl, keys, document, armored, observed_at, max_skew)?
            }
            CotSignature::Ed25519Raw(raw) => {
                let entry = self.check_ed25519(worker_impl, keys, document, raw)?;
                (entry, observed_at, None)
            }
        };
        check_window(entry, signed_at)?;
        Ok(AcceptedSignature {
            worker_impl: worker_impl.to_owned(),
            key_name: entry.name.clone(),
            key_id: entry.key_id(),
            signing_subkey: subkey,
            signed_at,
            policy_version: self.version(),
            key_retired_at: entry
                .revocation
                .map_or(entry.valid_until, |r| r.at.min(entry.valid_until)),
        })
    }

    /// Worker implementations other than `worker_impl` that list a key matching `pred`.
    fn listed_elsewhere(
        &self,
        worker_impl: &str,
        pred: impl Fn(&KeyMaterial) -> bool,
    ) -> Vec<String> {
        self.policy
            .workers
            .iter()
            .filter(|(name, _)| name.as_str() != worker_impl)
            .filter(|(_, keys)| keys.iter().any(|(_, m)| pred(m)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    fn check_openpgp<'p>(
        &self,
        worker_impl: &str,
        keys: &'p [(policy::WorkerKey, KeyMaterial)],
        document: &[u8],
        armored: &[u8],
        observed_at: DateTime<Utc>,
        max_skew: Duration,
    ) -> Result<(&'p policy::WorkerKey, DateTime<Utc>, Option<String>), SignatureError> {
        let parsed =
            openpgp::parse_detached_signature(armored).map_err(|e| SignatureError::Malformed {
                reason: e.to_string(),
            })?;
        let issuers = openpgp::signature_issuers(&parsed);
        let found = keys.iter().find_map(|(k, m)| match m {
            KeyMaterial::OpenPgp(cert) if openpgp::cert_has_issuer(cert, &issuers) => {
                Some((k, cert))
            }
            _ => None,
        });
        let Some((entry, cert)) = found else {
            let elsewhere = self.listed_elsewhere(
                worker_impl,
                |m| matches!(m, KeyMaterial::OpenPgp(c) if openpgp::cert_has_issuer(c, &issuers)),
            );
            return Err(unknown_or_wrong(
                worker_impl,
                keys,
                KeyType::Openpgp,
                elsewhere,
                issuers
                    .iter()
                    .map(|h| h.to_hex())
                    .collect::<Vec<_>>()
                    .join(","),
            ));
        };
        let key = entry.key_id();
        let verified = openpgp::verify_with_cert(cert, &parsed, document)
            .map_err(|e| map_openpgp_error(&key, e))?;
        if verified.created > observed_at + max_skew {
            return Err(SignatureError::Future {
                key,
                signed_at: verified.created,
                observed_at,
                max_skew,
            });
        }
        if let Some(expired_at) = verified.expires
            && expired_at <= observed_at
        {
            return Err(SignatureError::SignatureExpired {
                key,
                expired_at,
                observed_at,
            });
        }
        Ok((entry, verified.created, Some(verified.signing_fingerprint)))
    }

    fn check_ed25519<'p>(
        &self,
        worker_impl: &str,
        keys: &'p [(policy::WorkerKey, KeyMaterial)],
        document: &[u8],
        raw: &[u8],
    ) -> Result<&'p policy::WorkerKey, SignatureError> {
        let bytes: [u8; 64] = raw.try_into().map_err(|_| SignatureError::Malformed {
            reason: format!("ed25519 signature is {} bytes, expected 64", raw.len()),
        })?;
        let sig = ed25519_dalek::Signature::from_bytes(&bytes);
        let verifies = |m: &KeyMaterial| match m {
            // verify_strict: no small-order keys, no malleable (non-canonical) signatures.
            KeyMaterial::Ed25519(vk) => vk.verify_strict(document, &sig).is_ok(),
            KeyMaterial::OpenPgp(_) => false,
        };
        if let Some((entry, _)) = keys.iter().find(|(_, m)| verifies(m)) {
            return Ok(entry);
        }
        // ed25519 signatures name no key: a bad signature and an unknown signer look alike.
        let elsewhere = self.listed_elsewhere(worker_impl, verifies);
        Err(unknown_or_wrong(
            worker_impl,
            keys,
            KeyType::Ed25519,
            elsewhere,
            String::new(),
        ))
    }
}

fn unknown_or_wrong(
    worker_impl: &str,
    keys: &[(policy::WorkerKey, KeyMaterial)],
    key_type: KeyType,
    elsewhere: Vec<String>,
    key: String,
) -> SignatureError {
    if elsewhere.is_empty() {
        SignatureError::UnknownSigner {
            worker_impl: worker_impl.to_owned(),
            tried: keys.iter().filter(|(k, _)| k.key_type == key_type).count(),
        }
    } else {
        SignatureError::WrongWorkerImpl {
            key,
            worker_impl: worker_impl.to_owned(),
            listed_for: elsewhere,
        }
    }
}

fn map_openpgp_error(key: &str, e: OpenPgpError) -> SignatureError {
    let key = key.to_owned();
    match e {
        OpenPgpError::KeyRevoked {
            fingerprint,
            at,
            revoked_at,
            reason,
        } => SignatureError::Revoked {
            key,
            reason: format!("OpenPGP self-revocation of {fingerprint}: {reason}"),
            at,
            // Only a hard revocation can apply without a creation time (a soft one is never
            // alive without one); it then reaches back to any signature, so report that time.
            revoked_at: revoked_at.unwrap_or(at),
        },
        OpenPgpError::CertInvalid { at, reason, .. } => {
            SignatureError::CertInvalid { key, at, reason }
        }
        OpenPgpError::NoCreationTime
        | OpenPgpError::UnsupportedSignatureType { .. }
        | OpenPgpError::Parse { .. } => SignatureError::Malformed {
            reason: e.to_string(),
        },
        other => SignatureError::BadSignature {
            key,
            reason: other.to_string(),
        },
    }
}

/// The policy's window and revocation rules for one key at signature time `at`.
fn check_window(entry: &policy::WorkerKey, at: DateTime<Utc>) -> Result<(), SignatureError> {
    let key = entry.key_id();
    if let Some(rev) = entry.revocation {
        // A compromised key's signatures are refused whenever they claim to have been made:
        // the attacker chooses the claimed time.
        let applies = match rev.reason {
            RevocationReason::Compromised => true,
            RevocationReason::Retired | RevocationReason::Superseded => at >= rev.at,
        };
        if applies {
            return Err(SignatureError::Revoked {
                key,
                reason: rev.reason.as_str().to_owned(),
                at,
                revoked_at: rev.at,
            });
        }
    }
    if at < entry.valid_from {
        return Err(SignatureError::NotYetValid {
            key,
            at,
            not_before: entry.valid_from,
        });
    }
    if at >= entry.valid_until {
        return Err(SignatureError::Expired {
            key,
            at,
            not_after: entry.valid_until,
        });
    }
    Ok(())
}

/// `keys/history/v<version>`.
pub fn history_dir(keys_dir: &Path, version: u64) -> PathBuf {
    keys_dir.join("history").join(format!("v{version}"))
}

fn read_capped(path: &Path, limit: u64) -> Result<Vec<u8>, TrustError> {
    use std::io::Read;
    let io = |source| TrustError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(TrustError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    Ok(bytes)
}

/// Reads `dir/trust.toml` and `dir/sigs/*.asc` (sorted by name; a missing `sigs/` is empty).
pub fn read_version_dir(dir: &Path, limits: &Limits) -> Result<PolicyVersion, TrustError> {
    let source = dir.join("trust.toml");
    let bytes = read_capped(&source, limits.max_policy_bytes)?;
    let sigs_dir = dir.join("sigs");
    let mut names = Vec::new();
    match std::fs::read_dir(&sigs_dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|source| TrustError::Io {
                    path: sigs_dir.clone(),
                    source,
                })?;
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "asc") {
                    names.push(path);
                    if names.len() > limits.max_signatures_per_version {
                        return Err(TrustError::TooManySignatures {
                            path: sigs_dir,
                            limit: limits.max_signatures_per_version,
                        });
                    }
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(TrustError::Io {
                path: sigs_dir,
                source,
            });
        }
    }
    names.sort();
    let mut signatures = Vec::new();
    for path in names {
        signatures.push(read_capped(&path, limits.max_signature_bytes)?);
    }
    Ok(PolicyVersion {
        source,
        bytes,
        signatures,
    })
}

#[cfg(test)]
mod tests;
