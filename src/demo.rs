//! `chainlock demo`: the quickstart (dev queue, a realistic task, the worker, the result).

/// Runs the demo.
pub async fn run(_args: crate::cli::DemoArgs) -> anyhow::Result<i32> {
    Err(crate::cli::UsageError("demo: not implemented yet".into()).into())
}
