//! Relative path rules shared by every place that turns task input into a file or object name.
//!
//! An artifact name from a task payload becomes a file path under the work directory
//! (`cot/<taskId>/<path>`), an output name under the artifact directory, and, in the push script,
//! part of an object key under a release prefix. One check, applied before any of those joins,
//! guarantees that no name can leave the directory it is joined to. The check is purely lexical
//! (no filesystem access); callers that open files still refuse symlinks themselves.

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
/// never climb out of the directory it is joined to ([`crate::artifact_path`]'s rule), and, for
/// task input, names exactly one file: no glob characters.
pub fn check_relative_path(path: &str) -> Result<(), PathError> {
    parse_input_path(path).map(|_| ())
}

/// [`check_relative_path`], returning the checked name.
pub fn parse_input_path(path: &str) -> Result<ArtifactPath, PathError> {
    use crate::artifact_path::UnsafePathReason as Unsafe;
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            limit: MAX_PATH_BYTES,
            actual: path.len(),
        });
    }
    let parsed = ArtifactPath::parse(path).map_err(|reason| match reason {
        Unsafe::Empty => PathError::Empty,
        Unsafe::Absolute => PathError::Absolute,
        Unsafe::Backslash => PathError::Backslash,
        Unsafe::ControlCharacter => PathError::ControlCharacter,
        Unsafe::ParentComponent => PathError::ParentTraversal,
        Unsafe::NonNormalComponent => PathError::EmptySegment,
        // Covered by the explicit length check above; map conservatively all the same.
        Unsafe::TooLong => PathError::TooLong {
            limit: MAX_PATH_BYTES,
            actual: path.len(),
        },
    })?;
    if path.contains(['*', '?', '[', ']']) {
        return Err(PathError::Glob);
    }
    Ok(parsed)
}

pub use crate::artifact_path::ArtifactPath;

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
        let p = parse_input_path("public/build/x.zip").unwrap();
        assert_eq!(p.file_name(), "x.zip");
        assert_eq!(parse_input_path("x").unwrap().file_name(), "x");
    }
}
