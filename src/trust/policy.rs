//! The trust policy file (`keys/trust.toml`): its serialised form and its semantic checks.
//!
//! **API Boundary**: operators and auditors read and sign these files; a version once signed is
//! kept byte for byte in `keys/history/`. Changing the format needs a compatibility note and a
//! reader for the old form.

use super::TrustError;
use crate::openpgp::{self, OpenPgpCert};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One version of the trust policy, as written in `trust.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Monotonic version, starting at 1; version N+1 must be signed by N's roots.
    pub version: u64,
    /// After this instant the policy may not be the newest one in force (freeze-attack guard).
    pub expires: DateTime<Utc>,
    /// The keys that authorise policy changes.
    pub root: RootRole,
    /// Per worker implementation (`chainlock`, `scriptworker`, `generic-worker`, ...): the keys
    /// allowed to sign that implementation's chain-of-trust documents.
    #[serde(default)]
    pub workers: BTreeMap<String, Vec<WorkerKey>>,
}

/// The root role: OpenPGP certificates and how many of them must sign a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootRole {
    /// How many distinct root keys must sign (counted by primary fingerprint).
    pub threshold: usize,
    /// The root keys.
    pub keys: Vec<RootKey>,
}

/// One root key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKey {
    /// A human name (e.g. the operator's).
    pub name: String,
    /// The certificate's primary fingerprint (uppercase hex, no spaces).
    pub fingerprint: String,
    /// The ASCII-armored public certificate.
    pub cert: String,
}

/// What kind of key a worker key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// An OpenPGP certificate: signatures are armored detached OpenPGP signatures.
    Openpgp,
    /// A raw ed25519 public key: signatures are 64 raw bytes (generic-worker, docker-worker,
    /// scriptworker since 23.0).
    Ed25519,
}

/// Why a key was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevocationReason {
    /// The private key leaked: every signature it ever made is refused.
    Compromised,
    /// Taken out of service: signatures made before the revocation time stay valid.
    Retired,
    /// Replaced by another key: signatures made before the revocation time stay valid.
    Superseded,
}

impl RevocationReason {
    /// Whether the revocation reaches back before its own time (a hard revocation).
    pub fn is_hard(self) -> bool {
        matches!(self, RevocationReason::Compromised)
    }

    /// The lowercase name used in `trust.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Compromised => "compromised",
            RevocationReason::Retired => "retired",
            RevocationReason::Superseded => "superseded",
        }
    }
}

/// A revocation recorded in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// When the revocation takes effect (for soft reasons, signatures at or after it are refused).
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: RevocationReason,
}

/// A key allowed to sign one worker implementation's chain-of-trust documents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerKey {
    /// A unique name (`chainlock-2026-03`), used by `chainlock keys retire/revoke`.
    pub name: String,
    /// The key type.
    #[serde(rename = "type")]
    pub key_type: KeyType,
    /// For `openpgp`: the certificate's primary fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// For `openpgp`: the ASCII-armored public certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// For `ed25519`: standard base64 (with padding) of the 32-byte public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Signatures made before this instant are refused.
    pub valid_from: DateTime<Utc>,
    /// Signatures made at or after this instant are refused.
    pub valid_until: DateTime<Utc>,
    /// A revocation, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
}

impl WorkerKey {
    /// The key's identity for reports: the fingerprint or the base64 public key.
    pub fn key_id(&self) -> String {
        match self.key_type {
            KeyType::Openpgp => self.fingerprint.clone().unwrap_or_default(),
            KeyType::Ed25519 => self.public_key.clone().unwrap_or_default(),
        }
    }
}

/// Decodes an ed25519 public key: standard base64 with padding, surrounding ASCII whitespace
/// trimmed and nothing else tolerated (scriptworker's decoder silently drops any non-alphabet
/// character; a key file is either exactly right or refused).
pub fn decode_ed25519_public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .map_err(|e| format!("not strict base64: {e}"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, expected 32", bytes.len()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&arr).map_err(|_| "not an ed25519 point".to_owned())
}

/// A key in a checked policy, with its material parsed.
#[derive(Debug, Clone)]
pub(crate) enum KeyMaterial {
    OpenPgp(Box<OpenPgpCert>),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// A semantically checked policy with parsed key material.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The policy as written.
    pub file: PolicyFile,
    pub(crate) root_certs: Vec<OpenPgpCert>,
    pub(crate) workers: BTreeMap<String, Vec<(WorkerKey, KeyMaterial)>>,
}

fn invalid(version: u64, reason: impl Into<String>) -> TrustError {
    TrustError::PolicyInvalid {
        version,
        reason: reason.into(),
    }
}

fn valid_impl_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

impl Policy {
    /// Parses `trust.toml` bytes (no signature check: callers verify signatures over the same
    /// bytes before trusting the result).
    pub fn parse(bytes: &[u8]) -> Result<Policy, TrustError> {
        let text = std::str::from_utf8(bytes).map_err(|e| TrustError::PolicyParse {
            reason: format!("not UTF-8: {e}"),
        })?;
        let file: PolicyFile =
            crate::toml_text::from_str(text).map_err(|e| TrustError::PolicyParse {
                reason: e.to_string(),
            })?;
        Policy::check(file)
    }

    /// Checks a policy's internal consistency and parses its key material.
    pub fn check(file: PolicyFile) -> Result<Policy, TrustError> {
        let v = file.version;
        if v == 0 {
            return Err(invalid(v, "version must be at least 1"));
        }
        let root = &file.root;
        if root.threshold == 0 {
            return Err(invalid(v, "root threshold must be at least 1"));
        }
        if root.threshold > root.keys.len() {
            return Err(invalid(
                v,
                format!(
                    "root threshold {} exceeds the {} root keys",
                    root.threshold,
                    root.keys.len()
                ),
            ));
        }
        let mut names = BTreeSet::new();
        let mut root_fprs = BTreeSet::new();
        let mut root_certs = Vec::new();
        for k in &root.keys {
            if !names.insert(k.name.clone()) {
                return Err(invalid(v, format!("duplicate key name {:?}", k.name)));
            }
            let cert = openpgp::parse_public_cert(k.cert.as_bytes())
                .map_err(|e| invalid(v, format!("root key {:?}: {e}", k.name)))?;
            let fpr = cert.fingerprint().to_hex();
            if fpr != k.fingerprint {
                return Err(invalid(
                    v,
                    format!(
                        "root key {:?}: certificate is {fpr}, policy says {}",
                        k.name, k.fingerprint
                    ),
                ));
            }
            // A key listed twice would count twice towards the threshold.
            if !root_fprs.insert(fpr.clone()) {
                return Err(invalid(v, format!("root key {fpr} listed twice")));
            }
            root_certs.push(cert);
        }
        let mut workers = BTreeMap::new();
        for (impl_name, keys) in &file.workers {
            if !valid_impl_name(impl_name) {
                return Err(invalid(
                    v,
                    format!("worker implementation name {impl_name:?} is not [a-z0-9_-]+"),
                ));
            }
            let mut ids = BTreeSet::new();
            let mut checked = Vec::new();
            for k in keys {
                if !names.insert(k.name.clone()) {
                    return Err(invalid(v, format!("duplicate key name {:?}", k.name)));
                }
                if k.valid_from >= k.valid_until {
                    return Err(invalid(
                        v,
                        format!("key {:?}: valid_from is not before valid_until", k.name),
                    ));
                }
                let material = match k.key_type {
                    KeyType::Openpgp => {
                        if k.public_key.is_some() {
                            return Err(invalid(
                                v,
                                format!("key {:?}: openpgp keys take cert, not public_key", k.name),
                            ));
                        }
                        let (Some(cert_text), Some(fpr)) = (&k.cert, &k.fingerprint) else {
                            return Err(invalid(
                                v,
                                format!("key {:?}: openpgp keys need cert and fingerprint", k.name),
                            ));
                        };
                        let cert = openpgp::parse_public_cert(cert_text.as_bytes())
                            .map_err(|e| invalid(v, format!("key {:?}: {e}", k.name)))?;
                        if &cert.fingerprint().to_hex() != fpr {
                            return Err(invalid(
                                v,
                                format!(
                                    "key {:?}: certificate is {}, policy says {fpr}",
                                    k.name,
                                    cert.fingerprint().to_hex()
                                ),
                            ));
                        }
                        KeyMaterial::OpenPgp(Box::new(cert))
                    }
                    KeyType::Ed25519 => {
                        if k.cert.is_some() || k.fingerprint.is_some() {
                            return Err(invalid(
                                v,
                                format!("key {:?}: ed25519 keys take public_key only", k.name),
                            ));
                        }
                        let Some(text) = &k.public_key else {
                            return Err(invalid(
                                v,
                                format!("key {:?}: ed25519 keys need public_key", k.name),
                            ));
                        };
                        let key = decode_ed25519_public_key(text)
                            .map_err(|e| invalid(v, format!("key {:?}: {e}", k.name)))?;
                        KeyMaterial::Ed25519(key)
                    }
                };
                if !ids.insert(k.key_id()) {
                    return Err(invalid(
                        v,
                        format!("key {} listed twice for {impl_name}", k.key_id()),
                    ));
                }
                checked.push((k.clone(), material));
            }
            workers.insert(impl_name.clone(), checked);
        }
        Ok(Policy {
            file,
            root_certs,
            workers,
        })
    }

    /// The policy version.
    pub fn version(&self) -> u64 {
        self.file.version
    }

    /// Serialises the policy as TOML (used by `chainlock keys` when proposing a new version;
    /// signatures are always over the bytes as written, never over a re-serialisation).
    pub fn to_toml(file: &PolicyFile) -> Result<String, TrustError> {
        toml::to_string_pretty(file).map_err(|e| TrustError::PolicyParse {
            reason: format!("cannot serialise policy: {e}"),
        })
    }
}
