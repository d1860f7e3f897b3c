//! Relative path rules shared by every place that turns task input into a file or object name.
//!
//! An artifact name from a task payload becomes a file path under the work directory
//! (`cot/<taskId>/<path>`), an output name under the artifact directory, and, in the push script,
//! part of an object key under a release prefix. One check, applied before any of those joins,
//! guarantees that no name can leave the directory it is joined to. The check is purely lexical
//! (no filesystem access); callers that open files still refuse symlinks themselves.

use std::fmt;

/// Longest accepted relative path, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Why a string is not an acceptable relative path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    #[error("path is empty")]
    Empty,
    /// The path starts with `/` (absolute).
    #[error("path is absolute")]
    Absolute,
    /// A segment is `..`.
    #[error("path contains a `..` segment")]
    ParentTraversal,
    /// A segment is `.` or empty (`a//b`, `a/./b`, trailing `/`).
    #[error("path contains an empty or `.` segment")]
    EmptySegment,
    /// The path contains a backslash (a separator on Windows, ambiguous everywhere).
    #[error("path contains a backslash")]
    Backslash,
    /// The path contains NUL or another control character.
    #[error("path contains NUL or a control character")]
    ControlCharacter,
    /// The path contains a glob character; chainlock names every upstream file exactly.
    #[error("path contains a glob character (`*`, `?`, `[`, `]`)")]
    Glob,
    /// The path is longer than [`MAX_PATH_BYTES`].
    #[error("path is {actual} bytes long, more than the limit of {limit}")]
    TooLong {
        /// The limit.
        limit: usize,
        /// The path's length.
        actual: usize,
    },
}

/// Checks that `path` is a plain relative path made of `/`-separated, non-empty segments that
/// never climb out of the directory it is joined to.
pub fn check_relative_path(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            limit: MAX_PATH_BYTES,
            actual: path.len(),
        });
    }
    if path.chars().any(char::is_control) {
        return Err(PathError::ControlCharacter);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    if path.contains(['*', '?', '[', ']']) {
        return Err(PathError::Glob);
    }
    for segment in path.split('/') {
        match segment {
            ".." => return Err(PathError::ParentTraversal),
            "" | "." => return Err(PathError::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

/// A relative artifact path that passed [`check_relative_path`]; safe to join to a directory.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct ArtifactPath(String);

impl ArtifactPath {
    /// Checks and wraps `path`.
    pub fn parse(path: &str) -> Result<ArtifactPath, PathError> {
        check_relative_path(path).map(|()| ArtifactPath(path.to_owned()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment (`public/build/x.zip` -> `x.zip`).
    pub fn file_name(&self) -> &str {
        // Checked paths have at least one non-empty segment.
        self.0.rsplit('/').next().unwrap_or(&self.0)
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
    fn path_rules_table() {
        let long = "a/".repeat(600) + "b";
        let cases: &[(&str, Result<(), PathError>)] = &[
            ("public/build/target.tar.gz", Ok(())),
            ("public/..foo/x", Ok(())),
            ("a", Ok(())),
            ("", Err(PathError::Empty)),
            ("/etc/passwd", Err(PathError::Absolute)),
            ("public/../../etc", Err(PathError::ParentTraversal)),
            ("..", Err(PathError::ParentTraversal)),
            ("public//x", Err(PathError::EmptySegment)),
            ("public/./x", Err(PathError::EmptySegment)),
            ("public/", Err(PathError::EmptySegment)),
            ("public\\x", Err(PathError::Backslash)),
            ("..\\x", Err(PathError::Backslash)),
            ("public/x\0", Err(PathError::ControlCharacter)),
            ("public/x\n", Err(PathError::ControlCharacter)),
            ("public/*.zip", Err(PathError::Glob)),
        ];
        for (input, expected) in cases {
            assert_eq!(&check_relative_path(input), expected, "{input:?}");
        }
        assert!(matches!(
            check_relative_path(&long),
            Err(PathError::TooLong { .. })
        ));
    }

    #[test]
    fn file_name_is_last_segment() {
        let p = ArtifactPath::parse("public/build/x.zip").unwrap();
        assert_eq!(p.file_name(), "x.zip");
        assert_eq!(ArtifactPath::parse("x").unwrap().file_name(), "x");
    }
}
