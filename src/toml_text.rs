//! Parsing TOML without quoting it back: the one place chainlock calls `toml::from_str`.
//!
//! Why it exists: the `toml` crate's `Display` for a parse error prints the offending source
//! line with a caret under it. Configuration files hold secrets (`access_token = "..."`, S3
//! keys, dev-queue client tokens), so a typo on a secret's line would copy the secret into the
//! error, and from there into the journal or a task log. [`from_str`] keeps only the position
//! (line and column, computed from the error's byte span) and the parser's own message, and
//! every caller wraps that in its own error enum with the file name. `clippy.toml` bans
//! `toml::from_str` elsewhere so a new call site cannot forget this.
//!
//! What it must not do: keep any part of the input text in the error, in `Display` or `Debug`.
//! The parser's syntax messages describe what was expected, never the input. Shape errors come
//! from serde, whose "invalid type" message quotes a string value (`invalid type: string
//! "hunter2", expected a table`): such a quoted string is cut out, so a secret typed into the
//! wrong key does not leak either. Numbers, booleans, key names and enum variants are kept;
//! they are what an operator needs to fix the file.

use serde::de::DeserializeOwned;
use std::fmt;

/// A TOML document that did not parse or did not fit the expected shape: where, and the
/// parser's description. Carries no source text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TomlError {
    /// 1-based line and column (in characters) of the error, when the parser gave a position.
    at: Option<(usize, usize)>,
    /// The parser's message, without the source snippet.
    message: String,
}

impl TomlError {
    /// 1-based `(line, column)` of the error, if known.
    pub fn position(&self) -> Option<(usize, usize)> {
        self.at
    }

    /// The parser's message (no source text).
    pub fn message(&self) -> &str {
        &self.message
    }

    fn new(text: &str, e: &toml::de::Error) -> TomlError {
        let at = e.span().map(|span| line_column(text, span.start));
        // One line: the message is embedded in longer errors and in JSON logs.
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        TomlError {
            at,
            message: redact_strings(&message),
        }
    }
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => write!(f, "line {line}, column {column}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// 1-based line and character column of byte `offset` in `text` (clamped to the text, and to a
/// character boundary).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = text.get(..end).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).unwrap_or_default().chars().count() + 1;
    (line, column)
}

/// Replaces the contents of serde's quoted string values (`string "..."`, Rust `Debug`
/// escaping) with `…`.
fn redact_strings(message: &str) -> String {
    const MARK: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(MARK) {
        out.push_str(rest.get(..i + MARK.len()).unwrap_or_default());
        out.push('…');
        let after = rest.get(i + MARK.len()..).unwrap_or_default();
        // The closing quote: the first one not escaped by a backslash.
        let mut escaped = false;
        let mut end = None;
        for (j, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = Some(j);
                    break;
                }
                _ => {}
            }
        }
        match end {
            Some(j) => rest = after.get(j..).unwrap_or_default(),
            // Unterminated: drop the remainder rather than risk keeping part of a value.
            None => {
                out.push('"');
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses and deserializes TOML text; on failure, reports only position and message.
#[allow(clippy::disallowed_methods)] // the one sanctioned caller
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|e| TomlError::new(text, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // only parsed
    struct Creds {
        client_id: String,
        access_token: crate::secret::Secret,
    }

    #[test]
    fn syntax_error_reports_position_but_not_the_secret() {
        let text = "client_id = \"worker\"\naccess_token = \"hunter2-very-secret\" x\n";
        let err = from_str::<Creds>(text).unwrap_err();
        let shown = format!("{err} {err:?} {err:#}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("access_token"), "{shown}");
        assert_eq!(err.position().map(|(line, _)| line), Some(2), "{shown}");
        assert!(err.to_string().starts_with("line 2, column "), "{shown}");
        assert!(!err.message().is_empty());
    }

    #[test]
    fn shape_error_keeps_the_message() {
        let err = from_str::<Creds>("client_id = \"worker\"\n").unwrap_err();
        assert!(err.message().contains("access_token"), "{err}");
    }

    #[test]
    fn a_string_in_the_wrong_place_is_not_quoted() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct Numbers {
            parallelism: u32,
        }
        let err = from_str::<Numbers>("parallelism = \"hunter2\\\" still\"\n").unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("still"),
            "{shown}"
        );
        assert!(shown.contains("invalid type: string \"…\""), "{shown}");
        assert_eq!(redact_strings("string \"ab"), "string \"…\"");
        assert_eq!(
            redact_strings("x string \"a\\\"b\" y string \"c\" z"),
            "x string \"…\" y string \"…\" z"
        );
    }

    #[test]
    fn line_column_counts_characters() {
        let text = "a = 1\nbé = x";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        // 'x' is at byte 12 (é is two bytes), character column 6.
        assert_eq!(line_column(text, 12), (2, 6));
        // Inside a multi-byte character and past the end: clamped.
        assert_eq!(line_column(text, 8), (2, 2));
        assert_eq!(line_column(text, 99), (2, 7));
    }
}
