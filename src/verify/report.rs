//! The audit report: every link, every check, pass or fail with the reason.
//!
//! Rendered as text (the worker uploads it as `public/logs/chain_of_trust.log`; `chainlock
//! verify` prints it), as JSON (**API Boundary:** stable, described by
//! `schemas/verify-report.schema.json`; add fields, never rename) and as Graphviz `dot` (failed
//! links red).
//!
//! Every string of a report may come from the evidence (names, queue ids, worker ids inside
//! finding messages, roles). The data stays as it was found; the text and dot renderings escape
//! it at the edge ([`escape_line`]), so a newline or U+2028 in a `workerId` cannot forge a
//! `[pass] signature` line, and dot labels are quoted by dot's own rules on top.

use super::error::{Check, VerifyError};
use crate::ids::TaskId;
use crate::untrusted_text::escape_line;
use serde::Serialize;
use std::fmt::Write as _;

/// Version of the JSON report format.
pub const REPORT_VERSION: u32 = 1;

/// Outcome of one check on one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckStatus {
    /// The check ran and passed.
    Pass,
    /// The check ran and failed.
    Fail,
    /// The check does not apply to this link, or could not run (see `note`).
    Skipped,
    /// The check passed, with what it could not rule out in `note` (a rebuild from a bundled
    /// template not bound to its revision).
    Caveat,
}

/// One failure, machine- and human-readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable code (`hash-mismatch`, ...).
    pub code: &'static str,
    /// Explanation with the values involved.
    pub message: String,
}

impl From<&VerifyError> for Finding {
    fn from(e: &VerifyError) -> Self {
        Finding {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// One check on one link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Which check.
    pub check: Check,
    /// Outcome.
    pub status: CheckStatus,
    /// Why it was skipped, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Failures (empty unless `status` is `fail`).
    pub findings: Vec<Finding>,
}

/// An edge of the chain, as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EdgeReport {
    /// The task depended upon.
    pub task_id: TaskId,
    /// Why (`decision task`, `upstreamArtifacts public/build/x`, ...).
    pub role: String,
}

/// One link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkReport {
    /// The task.
    pub task_id: TaskId,
    /// Whether this is the task being verified.
    pub is_target: bool,
    /// Distance from the target.
    pub depth: usize,
    /// `metadata.name` (truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `provisionerId/workerType`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_queue_id: Option<String>,
    /// From the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_implementation: Option<String>,
    /// From the policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The key that signed the link's document, as the trust store names it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signature artifact that was checked (`public/chain-of-trust.json.asc` or `.sig`):
    /// with a policy accepting either format, the first present in the policy's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature_artifact: Option<String>,
    /// What a pass cannot rule out (a retired key's signature: its date is its holder's
    /// claim). Shown with the verdict; never a failure by itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub caveats: Vec<String>,
    /// Outgoing links.
    pub links: Vec<EdgeReport>,
    /// Every check, in order.
    pub checks: Vec<CheckReport>,
}

impl LinkReport {
    /// Whether every check passed or was skipped.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.status != CheckStatus::Fail)
    }
}

/// The verdict on a whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The task verified.
    pub target: TaskId,
    /// True only when no check failed anywhere.
    pub verified: bool,
    /// The time the chain was judged at (RFC 3339).
    pub reference_time: String,
    /// Problems of the chain as a whole (cycles, depth, missing tasks).
    pub chain_findings: Vec<Finding>,
    /// Every link, the target first, in discovery order.
    pub links: Vec<LinkReport>,
    /// Typed failures, for callers that match on them (not serialised).
    #[serde(skip)]
    pub errors: Vec<VerifyError>,
}

impl Report {
    /// A failed report for `target` that judged no link because `error` refused the evidence
    /// as a whole (a bundle naming another target than the one asked for).
    pub fn refused(
        target: TaskId,
        reference_time: chrono::DateTime<chrono::Utc>,
        error: VerifyError,
    ) -> Report {
        Report {
            report_version: REPORT_VERSION,
            target,
            verified: false,
            reference_time: crate::queue::types::format_time(reference_time),
            chain_findings: vec![Finding::from(&error)],
            links: Vec::new(),
            errors: vec![error],
        }
    }

    /// Number of failures.
    pub fn failure_count(&self) -> usize {
        self.errors.len()
    }

    /// Whether some failure belongs to `check`.
    pub fn failed_check(&self, check: Check) -> bool {
        self.errors.iter().any(|e| e.check() == check)
    }

    /// Renders the report as the readable tree (chain_of_trust.log). Every string from the
    /// evidence is escaped to one line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.verified {
            "VERIFIED".to_owned()
        } else {
            format!("FAILED ({} problem(s))", self.errors.len())
        };
        let _ = writeln!(out, "chain of trust for task {}: {verdict}", self.target);
        let _ = writeln!(out, "reference time: {}", escape_line(&self.reference_time));
        for f in &self.chain_findings {
            let _ = writeln!(out, "  [FAIL] chain: {}", escape_line(&f.message));
        }
        for link in &self.links {
            let indent = "  ".repeat(link.depth + 1);
            let mark = if link.passed() { "ok" } else { "FAILED" };
            let shown = |v: &Option<String>| escape_line(v.as_deref().unwrap_or("?"));
            let _ = writeln!(
                out,
                "{indent}{} task {} [{}] {} on {} ({}): {mark}",
                if link.is_target { "target" } else { "link" },
                link.task_id,
                shown(&link.kind),
                link.name
                    .as_deref()
                    .map(|n| format!("\"{}\"", escape_line(n)))
                    .unwrap_or_default(),
                shown(&link.task_queue_id),
                shown(&link.worker_implementation),
            );
            for e in &link.links {
                let _ = writeln!(out, "{indent}  -> {} ({})", e.task_id, escape_line(&e.role));
            }
            if let Some(s) = &link.signer {
                match &link.signature_artifact {
                    Some(a) => {
                        let _ = writeln!(
                            out,
                            "{indent}  signed by {} ({})",
                            escape_line(s),
                            escape_line(a)
                        );
                    }
                    None => {
                        let _ = writeln!(out, "{indent}  signed by {}", escape_line(s));
                    }
                }
            }
            for c in &link.caveats {
                let _ = writeln!(out, "{indent}  [caveat] {}", escape_line(c));
            }
            for c in &link.checks {
                match c.status {
                    CheckStatus::Pass => {
                        let _ = writeln!(out, "{indent}  [pass] {}", c.check);
                    }
                    CheckStatus::Skipped => {
                        let _ = writeln!(
                            out,
                            "{indent}  [skip] {}: {}",
                            c.check,
                            escape_line(c.note.as_deref().unwrap_or("not applicable"))
                        );
                    }
                    CheckStatus::Caveat => {
                        let _ = writeln!(
                            out,
                            "{indent}  [caveat] {}: {}",
                            c.check,
                            escape_line(c.note.as_deref().unwrap_or("passed with a caveat"))
                        );
                    }
                    CheckStatus::Fail => {
                        for f in &c.findings {
                            let _ = writeln!(
                                out,
                                "{indent}  [FAIL] {}: {}",
                                c.check,
                                escape_line(&f.message)
                            );
                        }
                    }
                }
            }
        }
        out
    }

    /// Renders the report as JSON (`schemas/verify-report.schema.json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("the report holds only strings, numbers and enums")
    }

    /// Renders the chain as a Graphviz digraph; failed links are red, with their findings as
    /// the node's tooltip. Every string from the evidence is escaped to one line, then quoted
    /// for dot ([`dot_quote`]).
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph chain_of_trust {\n  rankdir=BT;\n  node [shape=box];\n");
        for f in &self.chain_findings {
            let _ = writeln!(out, "  // chain: {}", dot_comment(&f.message));
        }
        for link in &self.links {
            let caveat = link.checks.iter().any(|c| c.status == CheckStatus::Caveat);
            let color = match (link.passed(), caveat) {
                (false, _) => "red",
                (true, true) => "darkorange",
                (true, false) => "darkgreen",
            };
            // `\n` between the quoted parts is dot's own line break, added here, never taken
            // from the evidence (whose newlines arrive escaped as a visible `\n`).
            let label = format!(
                "{}\\n{}\\n{}",
                link.task_id,
                dot_quote(link.kind.as_deref().unwrap_or("?")),
                dot_quote(link.task_queue_id.as_deref().unwrap_or("?"))
            );
            let findings: Vec<String> = link
                .checks
                .iter()
                .flat_map(|c| c.findings.iter().map(move |f| (c.check, f)))
                .map(|(check, f)| format!("[FAIL] {check}: {}", dot_quote(&f.message)))
                .chain(
                    link.checks
                        .iter()
                        .filter(|c| c.status == CheckStatus::Caveat)
                        .map(|c| {
                            format!(
                                "[caveat] {}: {}",
                                c.check,
                                dot_quote(c.note.as_deref().unwrap_or(""))
                            )
                        }),
                )
                .collect();
            let tooltip = if findings.is_empty() {
                String::new()
            } else {
                format!(", tooltip=\"{}\"", findings.join("\\n"))
            };
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{label}\", color={color}, fontcolor={color}{}{tooltip}];",
                link.task_id,
                if link.is_target { ", penwidth=2" } else { "" }
            );
            for e in &link.links {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\" [label=\"{}\"];",
                    link.task_id,
                    e.task_id,
                    dot_quote(&e.role)
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

/// Untrusted text as the inside of a dot double-quoted string: escaped to one line
/// ([`escape_line`]: controls, newlines, NUL, U+2028/U+2029, bidi overrides become visible
/// `\u{..}` text), then `"` and `\` escaped, so a value can neither end the string nor become
/// one of dot's escapes (`\n`, `\l`, `\N`, ...).
pub fn dot_quote(s: &str) -> String {
    let line = escape_line(s);
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Untrusted text inside a dot `//` comment: one line, and no `*/` or the like matters there.
fn dot_comment(s: &str) -> String {
    escape_line(s)
}

/// Kinds of failure reported instead of a chain verdict (`error.kind` in the JSON document).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Bad command line, policy, keys or trust pin (exit 64).
    Usage,
    /// The evidence could not be fetched or read (exit 2).
    EvidenceUnavailable,
}

impl ErrorKind {
    /// The `chainlock verify` exit code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 64,
            ErrorKind::EvidenceUnavailable => 2,
        }
    }
}

/// What `chainlock verify --format json` prints when there is no verdict: the same
/// `reportVersion`, and an `error` object instead of the report (one branch of the schema's
/// `oneOf`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// Why there is no verdict.
    pub error: ErrorDetail,
}

/// The `error` object of an [`ErrorReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorDetail {
    /// Usage or evidence unavailable.
    pub kind: ErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

impl ErrorReport {
    /// An error document of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ErrorReport {
        ErrorReport {
            report_version: REPORT_VERSION,
            error: ErrorDetail {
                kind,
                message: message.into(),
            },
        }
    }

    /// The JSON document (`schemas/verify-report.schema.json`, error branch).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the error report holds only strings and enums")
    }
}

/// What `chainlock verify --format json` prints when it only fetched and exported evidence
/// (no `--policy`/`--keys`, so no verdict).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportReport {
    /// [`REPORT_VERSION`].
    pub report_version: u32,
    /// The export.
    pub exported: ExportDetail,
}

/// The `exported` object of an [`ExportReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportDetail {
    /// The task whose evidence was fetched.
    pub target: TaskId,
    /// The bundle directory, as given on the command line.
    pub bundle: String,
}

impl ExportReport {
    /// The JSON document (`schemas/verify-report.schema.json`, export branch).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the export report holds only strings")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_quote_keeps_values_inside_their_string() {
        assert_eq!(dot_quote("plain"), "plain");
        assert_eq!(dot_quote("a\"b"), "a\\\"b");
        assert_eq!(dot_quote("a\\nb"), "a\\\\nb");
        assert_eq!(dot_quote("a\nb"), "a\\\\nb");
        assert_eq!(dot_quote("a\u{2028}b\u{202E}"), "a\\\\u{2028}b\\\\u{202E}");
        assert!(!dot_quote("x\0y\r").contains(['\0', '\r']));
    }
}
