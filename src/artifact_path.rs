//! Artifact names that are safe to use as relative paths: the one lexical path rule.
//!
//! Artifact names come from task payloads (`upstreamArtifacts[].paths`), from upstream
//! chain-of-trust documents and from script configs: attacker- or operator-controlled. Every
//! place that joins such a name to a directory or an object prefix (verification, validation,
//! the sign and push scripts) uses this one check, so the rule cannot drift between them. An [`ArtifactPath`] can only be built by
//! [`ArtifactPath::parse`], which refuses anything that could leave the directory it is joined
//! to: absolute paths, `..`, `.`, empty components, backslashes, NUL and other control
//! characters, and line separators or bidi overrides that could forge a log line. Symlinks are a property of the file system, not of the name: the code that opens
//! or creates files (`bundle`, `evidence`) refuses symlinked components separately.

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;

/// Longest artifact name accepted (the queue allows 1024 characters).
pub const MAX_ARTIFACT_NAME: usize = 1024;

/// A relative, normalised artifact name such as `public/build/target.tar.gz`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ArtifactPath(String);

/// Why a name is not a safe artifact path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum UnsafePathReason {
    /// Empty name.
    Empty,
    /// Longer than [`MAX_ARTIFACT_NAME`].
    TooLong,
    /// Starts with `/`.
    Absolute,
    /// Contains `\` (a separator on Windows).
    Backslash,
    /// Contains NUL, another control character, U+2028/U+2029 or a bidi override.
    ControlCharacter,
    /// Has a `..` component.
    ParentComponent,
    /// Has a `.` component or an empty one (`a//b`, trailing `/`).
    NonNormalComponent,
}

impl UnsafePathReason {
    /// A short human-readable reason.
    pub fn as_str(self) -> &'static str {
        match self {
            UnsafePathReason::Empty => "empty name",
            UnsafePathReason::TooLong => "name too long",
            UnsafePathReason::Absolute => "absolute path",
            UnsafePathReason::Backslash => "contains a backslash",
            UnsafePathReason::ControlCharacter => {
                "contains a NUL, control, line-separator or bidi-override character"
            }
            UnsafePathReason::ParentComponent => "contains a '..' component",
            UnsafePathReason::NonNormalComponent => "contains a '.' or empty component",
        }
    }
}

impl fmt::Display for UnsafePathReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ArtifactPath {
    /// Checks a name. Every rule is a hard refusal, never a rewrite.
    pub fn parse(name: &str) -> Result<ArtifactPath, UnsafePathReason> {
        if name.is_empty() {
            return Err(UnsafePathReason::Empty);
        }
        if name.len() > MAX_ARTIFACT_NAME {
            return Err(UnsafePathReason::TooLong);
        }
        if name.starts_with('/') {
            return Err(UnsafePathReason::Absolute);
        }
        if name.contains('\\') {
            return Err(UnsafePathReason::Backslash);
        }
        if name.chars().any(crate::untrusted_text::is_deceptive) {
            return Err(UnsafePathReason::ControlCharacter);
        }
        for component in name.split('/') {
            match component {
                ".." => return Err(UnsafePathReason::ParentComponent),
                "" | "." => return Err(UnsafePathReason::NonNormalComponent),
                _ => {}
            }
        }
        Ok(ArtifactPath(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last component (`public/build/x.zip` -> `x.zip`).
    pub fn file_name(&self) -> &str {
        // A parsed name has at least one non-empty component.
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }

    /// The name as a relative path (only normal components, by construction).
    pub fn to_relative_path(&self) -> PathBuf {
        self.0.split('/').collect()
    }
}

impl fmt::Display for ArtifactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ArtifactPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ArtifactPath({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_table() {
        use UnsafePathReason::*;
        let rows: &[(&str, Result<(), UnsafePathReason>)] = &[
            ("public/build/target.tar.gz", Ok(())),
            ("public/chain-of-trust.json", Ok(())),
            ("public/a..b", Ok(())),
            ("", Err(Empty)),
            ("/etc/passwd", Err(Absolute)),
            ("public/../../etc/passwd", Err(ParentComponent)),
            ("..", Err(ParentComponent)),
            ("public\\..\\x", Err(Backslash)),
            ("public/a\0b", Err(ControlCharacter)),
            ("public/a\nb", Err(ControlCharacter)),
            ("public//x", Err(NonNormalComponent)),
            ("public/./x", Err(NonNormalComponent)),
            ("public/", Err(NonNormalComponent)),
        ];
        for (name, want) in rows {
            assert_eq!(ArtifactPath::parse(name).map(|_| ()), *want, "{name:?}");
        }
        let long = "a".repeat(MAX_ARTIFACT_NAME + 1);
        assert_eq!(ArtifactPath::parse(&long), Err(TooLong));
    }
}
