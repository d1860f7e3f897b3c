//! A wrapper for values that must never be printed.
//!
//! Credentials, access tokens and certificates travel in `Secret`, whose `Debug` and `Display`
//! print a fixed mask. Code that needs the value calls [`Secret::expose`], which makes every use
//! greppable in review.
//!
//! Files that hold secrets (the chain-of-trust signing key, the worker's credentials file, release
//! keys, S3 credentials) follow one rule, [`check_private_file`]: a regular file that neither
//! group nor others have any permission on. A secret others can read is a secret others may
//! have copied, so the rule holds whatever else is configured.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret string (an access token, a temporary certificate, a private key path's contents).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log or format what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{********}")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{********}")
    }
}

/// Why a file holding a secret is refused by [`check_private_file`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PrivateFileError {
    /// Not a regular file (a directory, a device, a FIFO...).
    #[error("not a regular file")]
    NotARegularFile,
    /// Group or others have at least one permission bit.
    #[error(
        "mode {mode:04o} grants group or other access; it must be accessible by its owner only (chmod 600)"
    )]
    GroupOrOtherAccess {
        /// The file's permission bits (`& 0o7777`).
        mode: u32,
    },
}

/// The rule for every file that holds a secret: a regular file with no group or other
/// permission bit at all (`mode & 0o077 == 0`). Pass the metadata of the *opened* file
/// (`File::metadata`, an fstat) so a swap between check and read cannot slip another file in.
pub fn check_private_file(meta: &std::fs::Metadata) -> Result<(), PrivateFileError> {
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() {
        return Err(PrivateFileError::NotARegularFile);
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::GroupOrOtherAccess { mode });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_file_rule() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"x").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o700, true),
            (0o640, false),
            (0o604, false),
            (0o610, false),
            (0o601, false),
            (0o644, false),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = check_private_file(&std::fs::metadata(&p).unwrap());
            if ok {
                assert_eq!(got, Ok(()), "{mode:o}");
            } else {
                assert_eq!(
                    got,
                    Err(PrivateFileError::GroupOrOtherAccess { mode }),
                    "{mode:o}"
                );
            }
        }
        assert_eq!(
            check_private_file(&std::fs::metadata(dir.path()).unwrap()),
            Err(PrivateFileError::NotARegularFile)
        );
    }

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "{********}");
        assert_eq!(format!("{s}"), "{********}");
        assert_eq!(s.expose(), "hunter2-token");
    }
}
