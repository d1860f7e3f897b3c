//! The audit report: every link, every check, pass or fail with the reason.
//!
//! Rendered as text (the worker uploads it as `public/logs/chain_of_trust.log`; `chainlock
//! verify` prints it), as JSON (**API Boundary:** stable, described by
//! `schemas/verify-report.schema.json`; add fields, never rename) and as Graphviz `dot` (failed
//! links red).

use super::error::{Check, VerifyError};
use crate::ids::TaskId;
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
    /// Number of failures.
    pub fn failure_count(&self) -> usize {
        self.errors.len()
    }

    /// Whether some failure belongs to `check`.
    pub fn failed_check(&self, check: Check) -> bool {
        self.errors.iter().any(|e| e.check() == check)
    }

    /// Renders the report as the readable tree (chain_of_trust.log).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let verdict = if self.verified {
            "VERIFIED".to_owned()
        } else {
            format!("FAILED ({} problem(s))", self.errors.len())
        };
        let _ = writeln!(out, "chain of trust for task {}: {verdict}", self.target);
        let _ = writeln!(out, "reference time: {}", self.reference_time);
        for f in &self.chain_findings {
            let _ = writeln!(out, "  [FAIL] chain: {}", f.message);
        }
        for link in &self.links {
            let indent = "  ".repeat(link.depth + 1);
            let mark = if link.passed() { "ok" } else { "FAILED" };
            let _ = writeln!(
                out,
                "{indent}{} task {} [{}] {} on {} ({}){}",
                if link.is_target { "target" } else { "link" },
                link.task_id,
                link.kind.as_deref().unwrap_or("?"),
                link.name
                    .as_deref()
                    .map(|n| format!("{n:?}"))
                    .unwrap_or_default(),
                link.task_queue_id.as_deref().unwrap_or("?"),
                link.worker_implementation.as_deref().unwrap_or("?"),
                format_args!(": {mark}"),
            );
            for e in &link.links {
                let _ = writeln!(out, "{indent}  -> {} ({})", e.task_id, e.role);
            }
            if let Some(s) = &link.signer {
                let _ = writeln!(out, "{indent}  signed by {s}");
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
                            c.note.as_deref().unwrap_or("not applicable")
                        );
                    }
                    CheckStatus::Fail => {
                        for f in &c.findings {
                            let _ = writeln!(out, "{indent}  [FAIL] {}: {}", c.check, f.message);
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

    /// Renders the chain as a Graphviz digraph; failed links are red.
    pub fn to_dot(&self) -> String {
        let mut out =
            String::from("digraph chain_of_trust {\n  rankdir=BT;\n  node [shape=box];\n");
        for link in &self.links {
            let color = if link.passed() { "darkgreen" } else { "red" };
            let label = format!(
                "{}\\n{}\\n{}",
                link.task_id,
                dot_escape(link.kind.as_deref().unwrap_or("?")),
                dot_escape(link.task_queue_id.as_deref().unwrap_or("?"))
            );
            let _ = writeln!(
                out,
                "  \"{}\" [label=\"{label}\", color={color}, fontcolor={color}{}];",
                link.task_id,
                if link.is_target { ", penwidth=2" } else { "" }
            );
            for e in &link.links {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\" [label=\"{}\"];",
                    link.task_id,
                    e.task_id,
                    dot_escape(&e.role)
                );
            }
        }
        out.push_str("}\n");
        out
    }
}

fn dot_escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            _ => vec![c],
        })
        .collect()
}
