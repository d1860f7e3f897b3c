//! How a run is resolved: the mapping from script exits and worker errors to Taskcluster
//! outcomes, and the explicit severity order used to combine them.
//!
//! Why it is separate: the choice between `failed`, `malformed-payload`, `internal-error` and
//! the retried exceptions decides whether a release task is rerun, so it is made in one
//! reviewed place. scriptworker combined statuses with a numeric max, so exit code 7 beat 5 and
//! any odd number beat everything; here the order is written down ([`Resolution::severity`]).

use crate::launch::{ScriptEnd, signal_name};
use crate::queue::types::ExceptionReason;
use std::time::Duration;

/// Whether `err`, or anything it was caused by, is a full disk (`ENOSPC`) or an exceeded quota
/// (`EDQUOT`) on this worker.
///
/// Why it matters: a full disk is the worker's condition, not the task's. Wherever it surfaces
/// (evidence staging, collecting artifacts, the chain-of-trust document, a gzip temporary for an
/// upload), the run is resolved `exception/worker-shutdown`, so the queue gives the task to
/// another worker, and this worker stops claiming ([`super::WorkerError::DiskFull`]): claiming
/// on a full disk would burn the retries of every task it touched.
pub fn is_disk_full(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            )
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// Why a run is reported as `failed` (the task's own code failed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailReason {
    /// The script exited 1, or with a code that has no special meaning.
    ExitCode(i32),
    /// The script exited 6 (`superseded`), which today's queue rejects as an exception reason.
    Superseded,
    /// The script died from a signal it did not get from us.
    Signal(i32),
    /// The script exceeded its run time.
    TimedOut(Duration),
    /// The script left artifacts the worker refused (symlinks, reserved names, ...).
    ArtifactsRefused(usize),
}

impl std::fmt::Display for FailReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailReason::ExitCode(c) => write!(f, "script exited with code {c}"),
            FailReason::Superseded => write!(
                f,
                "script exited 6 (superseded), which the queue no longer accepts: reported as failed"
            ),
            FailReason::Signal(s) => write!(f, "script killed by signal {}", signal_name(*s)),
            FailReason::TimedOut(d) => write!(f, "script exceeded {} seconds", d.as_secs()),
            FailReason::ArtifactsRefused(n) => write!(f, "{n} artifact(s) refused"),
        }
    }
}

/// The way one run will be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// `reportCompleted`.
    Completed,
    /// `reportFailed`.
    Failed(FailReason),
    /// `reportException` with this reason.
    Exception(ExceptionReason),
}

impl Resolution {
    /// Exit code mapping (scriptworker's table, with 6 mapped to `failed`): 0 completed;
    /// 2 worker-shutdown, 3 malformed-payload, 4 resource-unavailable, 5 internal-error,
    /// 7 intermittent-task; anything else, signal deaths and timeouts failed. A cancelled run is
    /// a worker shutdown (a reclaim conflict never reaches reporting).
    pub fn from_script(end: ScriptEnd) -> Resolution {
        match end {
            ScriptEnd::Exited(0) => Resolution::Completed,
            ScriptEnd::Exited(2) => Resolution::Exception(ExceptionReason::WorkerShutdown),
            ScriptEnd::Exited(3) => Resolution::Exception(ExceptionReason::MalformedPayload),
            ScriptEnd::Exited(4) => Resolution::Exception(ExceptionReason::ResourceUnavailable),
            ScriptEnd::Exited(5) => Resolution::Exception(ExceptionReason::InternalError),
            ScriptEnd::Exited(6) => Resolution::Failed(FailReason::Superseded),
            ScriptEnd::Exited(7) => Resolution::Exception(ExceptionReason::IntermittentTask),
            ScriptEnd::Exited(code) => Resolution::Failed(FailReason::ExitCode(code)),
            ScriptEnd::Signaled(sig) => Resolution::Failed(FailReason::Signal(sig)),
            ScriptEnd::TimedOut { after } => Resolution::Failed(FailReason::TimedOut(after)),
            ScriptEnd::Cancelled => Resolution::Exception(ExceptionReason::WorkerShutdown),
        }
    }

    /// The explicit severity order, lowest first:
    /// completed < failed < intermittent-task < resource-unavailable < malformed-payload <
    /// internal-error < worker-shutdown.
    ///
    /// Reasons: any problem beats success; an exception says more about the run than the
    /// script's own failure (an upload that hit the network makes the result unreliable);
    /// a task found malformed will not get better on retry, so it beats retryable reasons; a
    /// worker bug invalidates every other verdict; a shutdown means the run was cut short and
    /// must be rerun elsewhere, whatever else happened.
    pub fn severity(&self) -> u8 {
        match self {
            Resolution::Completed => 0,
            Resolution::Failed(_) => 1,
            Resolution::Exception(ExceptionReason::IntermittentTask) => 2,
            Resolution::Exception(ExceptionReason::ResourceUnavailable) => 3,
            Resolution::Exception(ExceptionReason::MalformedPayload) => 4,
            Resolution::Exception(ExceptionReason::InternalError) => 5,
            Resolution::Exception(ExceptionReason::WorkerShutdown) => 6,
        }
    }

    /// The more severe of two resolutions (the first one on a tie).
    pub fn combine(self, other: Resolution) -> Resolution {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// The `outcome` and `reason` labels of `chainlock_tasks_resolved_total`: fixed names,
    /// never the exit code or signal number (bounded cardinality).
    pub fn metric_labels(&self) -> (&'static str, &'static str) {
        match self {
            Resolution::Completed => ("completed", "none"),
            Resolution::Failed(reason) => (
                "failed",
                match reason {
                    FailReason::ExitCode(_) => "exit-code",
                    FailReason::Superseded => "superseded",
                    FailReason::Signal(_) => "signal",
                    FailReason::TimedOut(_) => "timed-out",
                    FailReason::ArtifactsRefused(_) => "artifacts-refused",
                },
            ),
            Resolution::Exception(r) => ("exception", r.as_str()),
        }
    }

    /// Short label for logs: `completed`, `failed`, `exception/<reason>`.
    pub fn label(&self) -> String {
        match self {
            Resolution::Completed => "completed".into(),
            Resolution::Failed(_) => "failed".into(),
            Resolution::Exception(r) => format!("exception/{}", r.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExceptionReason as E;

    #[test]
    fn exit_code_table() {
        let table = [
            (0, Resolution::Completed),
            (1, Resolution::Failed(FailReason::ExitCode(1))),
            (2, Resolution::Exception(E::WorkerShutdown)),
            (3, Resolution::Exception(E::MalformedPayload)),
            (4, Resolution::Exception(E::ResourceUnavailable)),
            (5, Resolution::Exception(E::InternalError)),
            (6, Resolution::Failed(FailReason::Superseded)),
            (7, Resolution::Exception(E::IntermittentTask)),
            (8, Resolution::Failed(FailReason::ExitCode(8))),
            (245, Resolution::Failed(FailReason::ExitCode(245))),
            (-1, Resolution::Failed(FailReason::ExitCode(-1))),
        ];
        for (code, expected) in table {
            assert_eq!(
                Resolution::from_script(ScriptEnd::Exited(code)),
                expected,
                "{code}"
            );
        }
        assert_eq!(
            Resolution::from_script(ScriptEnd::Signaled(9)),
            Resolution::Failed(FailReason::Signal(9))
        );
    }

    #[test]
    fn combine_uses_the_explicit_order_not_numbers() {
        let failed = Resolution::Failed(FailReason::ExitCode(9));
        let table = [
            (Resolution::Completed, failed.clone(), failed.clone()),
            (
                failed.clone(),
                Resolution::Exception(E::IntermittentTask),
                Resolution::Exception(E::IntermittentTask),
            ),
            // Numerically 7 > 5; by severity internal-error wins.
            (
                Resolution::Exception(E::InternalError),
                Resolution::Exception(E::IntermittentTask),
                Resolution::Exception(E::InternalError),
            ),
            (
                Resolution::Exception(E::MalformedPayload),
                Resolution::Exception(E::WorkerShutdown),
                Resolution::Exception(E::WorkerShutdown),
            ),
        ];
        for (a, b, expected) in table {
            assert_eq!(a.clone().combine(b.clone()), expected);
            assert_eq!(b.combine(a), expected);
        }
    }
}
