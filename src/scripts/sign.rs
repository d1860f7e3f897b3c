//! `chainlock script sign` (being written).

use std::path::Path;

/// Runs the sign script and returns the process exit code.
pub async fn run(_config_path: &Path) -> i32 {
    super::report(&super::ScriptError::Internal(
        "sign is not implemented yet".into(),
    ))
}
