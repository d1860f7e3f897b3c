//! Process exit codes shared by the commands, and the error that selects [`EX_USAGE`].
//!
//! A leaf module on purpose: configuration, start-up and the commands decide that a failure is
//! a usage error without knowing anything about the command line that `cli` parses.

/// Exit code for bad usage or configuration (`EX_USAGE`).
pub const EX_USAGE: i32 = 64;

/// An error that should make the process exit with [`EX_USAGE`] (bad flags, bad config).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);
