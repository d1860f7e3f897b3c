//! The worker's optional ed25519 chain-of-trust key (`[chain_of_trust] ed25519_key`).
//!
//! File format: the 32-byte ed25519 seed (the RFC 8032 private key), standard base64 with
//! padding, optionally followed by ASCII whitespace; nothing else. The file must be private
//! ([`crate::secret::check_private_file`]: mode 0600 or stricter, a regular file). The public
//! half is the same encoding of the 32-byte public key, as the trust policy lists it
//! (`public_key`, `type = "ed25519"`).
//!
//! The key never appears in `Debug`, errors or logs: [`Ed25519Key`] prints only its public key.

use base64::Engine as _;
use ed25519_dalek::Signer as _;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

/// Largest key file read (a seed is 44 base64 characters plus a newline).
const MAX_FILE_BYTES: u64 = 256;

/// Why the ed25519 key file was refused. Never holds key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Ed25519KeyError {
    /// Opening, reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file breaks the private-file rule.
    #[error("{path}: {source}")]
    NotPrivate {
        /// The key file.
        path: PathBuf,
        /// Which part of the rule.
        source: crate::secret::PrivateFileError,
    },
    /// The contents are not a base64 32-byte seed (the message names no content).
    #[error("{path}: not an ed25519 key file (expected the base64 of a 32-byte seed)")]
    Format {
        /// The key file.
        path: PathBuf,
    },
}

/// An ed25519 signing key. `Debug` shows the public key only.
pub struct Ed25519Key(ed25519_dalek::SigningKey);

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ed25519Key")
            .field("public_key", &self.public_key_base64())
            .finish_non_exhaustive()
    }
}

impl Ed25519Key {
    /// A fresh random key.
    pub fn generate() -> Self {
        Ed25519Key(ed25519_dalek::SigningKey::from_bytes(&rand::random::<
            [u8; 32],
        >()))
    }

    /// Loads the key file at `path`, refusing a file group or others can access.
    pub fn load(path: &Path) -> Result<Self, Ed25519KeyError> {
        let io = |source| Ed25519KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // fstat of the opened file: a swap between check and read cannot slip another in.
        let meta = file.metadata().map_err(io)?;
        crate::secret::check_private_file(&meta).map_err(|source| Ed25519KeyError::NotPrivate {
            path: path.to_path_buf(),
            source,
        })?;
        let mut text = Vec::new();
        file.take(MAX_FILE_BYTES.saturating_add(1))
            .read_to_end(&mut text)
            .map_err(io)?;
        let format = || Ed25519KeyError::Format {
            path: path.to_path_buf(),
        };
        if u64::try_from(text.len()).map_or(true, |n| n > MAX_FILE_BYTES) {
            return Err(format());
        }
        let trimmed = text.trim_ascii();
        let seed = base64::engine::general_purpose::STANDARD
            .decode(trimmed)
            .map_err(|_| format())?;
        let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| format())?;
        Ok(Ed25519Key(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Writes the key to `path`, created new with mode 0600 (never an existing file).
    pub fn write_new(&self, path: &Path) -> Result<(), Ed25519KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| Ed25519KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        let text = format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(self.0.to_bytes())
        );
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// The public key, base64 of 32 bytes (the trust policy's `public_key`).
    pub fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.verifying_key().to_bytes())
    }

    /// The raw 64-byte signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn round_trip_private_file_and_no_secret_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let key = Ed25519Key::generate();
        key.write_new(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = Ed25519Key::load(&path).unwrap();
        assert_eq!(loaded.public_key_base64(), key.public_key_base64());
        assert_eq!(loaded.sign(b"x"), key.sign(b"x"));
        let seed = base64::engine::general_purpose::STANDARD.encode(key.0.to_bytes());
        assert!(!format!("{loaded:?}").contains(&seed));
        assert!(key.write_new(&path).is_err(), "never overwrites");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Ed25519Key::load(&path).unwrap_err();
        assert!(matches!(err, Ed25519KeyError::NotPrivate { .. }), "{err}");

        let bad = dir.path().join("bad");
        std::fs::write(&bad, format!("{seed}{seed}\n")).unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Ed25519Key::load(&bad).unwrap_err();
        assert!(matches!(err, Ed25519KeyError::Format { .. }));
        assert!(!err.to_string().contains(&seed));
    }
}
