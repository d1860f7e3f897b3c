//! Taskcluster credentials: where they come from and how they are kept.
//!
//! Credentials are read from a task claim, a JSON file or the environment. The environment is read
//! through the [`EnvSource`] trait so parsing is tested with a map and nothing else in chainlock
//! reads `TASKCLUSTER_*` variables. The access token and certificate live in [`Secret`], so no
//! `Debug` output, log line or error ever shows them.
//!
//! The credentials file must pass [`crate::secret::check_private_file`] (no group or other
//! permission bit), the same rule as the chain-of-trust signing key, whatever else is
//! configured: `[script] run_as` only adds that the script's uid must not own it.

use crate::queue::types::TaskCredentials;
use crate::secret::{PrivateFileError, Secret, check_private_file};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Taskcluster credentials: permanent (no certificate) or temporary (with certificate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The clientId.
    pub client_id: String,
    /// The access token (the Hawk key).
    pub access_token: Secret,
    /// The certificate of temporary credentials, a JSON document in a string.
    pub certificate: Option<Secret>,
}

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// A required environment variable is unset or empty.
    #[error("environment variable {name} is not set")]
    MissingEnv {
        /// The variable.
        name: &'static str,
    },
    /// The credentials file could not be read.
    #[error("cannot read credentials file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not a regular file, or group or others have a permission bit on
    /// it.
    #[error("credentials file {path}: {reason}")]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: PrivateFileError,
    },
    /// The credentials file is not the expected JSON (the parser's message is not included:
    /// it could quote the token).
    #[error("credentials file {path} is not JSON {{clientId, accessToken, certificate?}}")]
    Malformed {
        /// The file.
        path: PathBuf,
    },
    /// The certificate is neither a JSON object nor a string holding one.
    #[error("the certificate for client {client_id} is not a JSON object")]
    BadCertificate {
        /// The clientId.
        client_id: String,
    },
}

/// Read access to environment variables (a map in tests, the process environment in `main`).
pub trait EnvSource {
    /// The value of `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl EnvSource for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl From<&TaskCredentials> for Credentials {
    fn from(c: &TaskCredentials) -> Self {
        Credentials {
            client_id: c.client_id.clone(),
            access_token: c.access_token.clone(),
            certificate: Some(c.certificate.clone()),
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialsFile {
    client_id: String,
    access_token: Secret,
    #[serde(default)]
    certificate: Option<serde_json::Value>,
}

impl Credentials {
    /// Permanent credentials.
    pub fn permanent(client_id: impl Into<String>, access_token: Secret) -> Self {
        Credentials {
            client_id: client_id.into(),
            access_token,
            certificate: None,
        }
    }

    /// Credentials from a claim or reclaim.
    pub fn from_task_credentials(c: &TaskCredentials) -> Self {
        Credentials::from(c)
    }

    /// Reads `TASKCLUSTER_CLIENT_ID`, `TASKCLUSTER_ACCESS_TOKEN` and optional
    /// `TASKCLUSTER_CERTIFICATE`.
    pub fn from_env(env: &impl EnvSource) -> Result<Credentials, CredentialsError> {
        let get = |name: &'static str| {
            env.var(name)
                .filter(|v| !v.is_empty())
                .ok_or(CredentialsError::MissingEnv { name })
        };
        let client_id = get("TASKCLUSTER_CLIENT_ID")?;
        let access_token = Secret::new(get("TASKCLUSTER_ACCESS_TOKEN")?);
        let certificate = match env.var("TASKCLUSTER_CERTIFICATE").filter(|v| !v.is_empty()) {
            Some(text) => Some(check_certificate(
                &client_id,
                serde_json::Value::String(text),
            )?),
            None => None,
        };
        Ok(Credentials {
            client_id,
            access_token,
            certificate,
        })
    }

    /// Reads `{"clientId", "accessToken", "certificate"?}` from a JSON file; the certificate may
    /// be a JSON object or a string holding one.
    /// The file must be private ([`check_file`]).
    pub fn from_json_file(path: &Path) -> Result<Credentials, CredentialsError> {
        use std::io::Read as _;
        let read_err = |source| CredentialsError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = open_private(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read_err)?;
        let file: CredentialsFile =
            serde_json::from_slice(&bytes).map_err(|_| CredentialsError::Malformed {
                path: path.to_owned(),
            })?;
        let certificate = match file.certificate {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(check_certificate(&file.client_id, v)?),
        };
        Ok(Credentials {
            client_id: file.client_id,
            access_token: file.access_token,
            certificate,
        })
    }
}

/// Refuses a credentials file that is not a regular file or that group or others have any
/// permission on. For `chainlock config check`; [`Credentials::from_json_file`] applies the same
/// check to the file it reads.
pub fn check_file(path: &Path) -> Result<(), CredentialsError> {
    open_private(path).map(|_| ())
}

/// Opens `path` and checks the opened file (fstat), so the checked file is the one read.
fn open_private(path: &Path) -> Result<std::fs::File, CredentialsError> {
    let read_err = |source| CredentialsError::Read {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    check_private_file(&meta).map_err(|reason| CredentialsError::NotPrivate {
        path: path.to_owned(),
        reason,
    })?;
    Ok(file)
}

fn check_certificate(client_id: &str, v: serde_json::Value) -> Result<Secret, CredentialsError> {
    let bad = || CredentialsError::BadCertificate {
        client_id: client_id.to_owned(),
    };
    let text = match v {
        serde_json::Value::String(s) => s,
        obj @ serde_json::Value::Object(_) => obj.to_string(),
        _ => return Err(bad()),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(_)) => Ok(Secret::new(text)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn from_env_permanent_and_temporary() {
        let c = Credentials::from_env(&env(&[
            ("TASKCLUSTER_CLIENT_ID", "worker/1"),
            ("TASKCLUSTER_ACCESS_TOKEN", "tok-secret"),
        ]))
        .unwrap();
        assert_eq!(c.client_id, "worker/1");
        assert!(c.certificate.is_none());
        assert!(!format!("{c:?}").contains("tok-secret"));

        let c = Credentials::from_env(&env(&[
            ("TASKCLUSTER_CLIENT_ID", "worker/1"),
            ("TASKCLUSTER_ACCESS_TOKEN", "tok-secret"),
            ("TASKCLUSTER_CERTIFICATE", r#"{"version":1}"#),
        ]))
        .unwrap();
        assert_eq!(c.certificate.unwrap().expose(), r#"{"version":1}"#);
    }

    #[test]
    fn from_env_rejects_missing_and_bad_values() {
        assert!(matches!(
            Credentials::from_env(&env(&[("TASKCLUSTER_CLIENT_ID", "x")])),
            Err(CredentialsError::MissingEnv {
                name: "TASKCLUSTER_ACCESS_TOKEN"
            })
        ));
        assert!(matches!(
            Credentials::from_env(&env(&[
                ("TASKCLUSTER_CLIENT_ID", "x"),
                ("TASKCLUSTER_ACCESS_TOKEN", "t"),
                ("TASKCLUSTER_CERTIFICATE", "[1]"),
            ])),
            Err(CredentialsError::BadCertificate { .. })
        ));
    }

    #[test]
    fn from_json_file_accepts_object_certificate_and_hides_token_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(
            &p,
            r#"{"clientId":"c","accessToken":"tok-secret","certificate":{"version":1}}"#,
        )
        .unwrap();
        set_mode(&p, 0o600);
        let c = Credentials::from_json_file(&p).unwrap();
        assert_eq!(c.access_token.expose(), "tok-secret");
        assert!(c.certificate.is_some());

        std::fs::write(&p, r#"{"clientId":"c","accessToken":"tok-secret","#).unwrap();
        let e = Credentials::from_json_file(&p).unwrap_err();
        assert!(matches!(e, CredentialsError::Malformed { .. }));
        assert!(!e.to_string().contains("tok-secret"));
    }

    fn set_mode(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Issue 8: a credentials file group or others can access is refused, whatever the rest of
    /// the configuration says.
    #[test]
    fn from_json_file_refuses_a_file_group_or_others_can_access() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.json");
        std::fs::write(&p, r#"{"clientId":"c","accessToken":"tok-secret"}"#).unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620] {
            set_mode(&p, mode);
            let e = Credentials::from_json_file(&p).unwrap_err();
            assert!(
                matches!(
                    e,
                    CredentialsError::NotPrivate {
                        reason: PrivateFileError::GroupOrOtherAccess { mode: m },
                        ..
                    } if m == mode
                ),
                "{mode:o}: {e}"
            );
            assert!(e.to_string().contains("chmod 600"), "{e}");
            assert!(check_file(&p).is_err());
        }
        set_mode(&p, 0o600);
        assert_eq!(Credentials::from_json_file(&p).unwrap().client_id, "c");
        check_file(&p).unwrap();
        let e = Credentials::from_json_file(dir.path()).unwrap_err();
        assert!(matches!(e, CredentialsError::NotPrivate { .. }), "{e}");
    }
}
