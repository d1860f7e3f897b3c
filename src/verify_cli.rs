//! `chainlock verify`: the auditor's entry point to the same verifier the worker runs.
//!
//! Online (`chainlock verify TASK_ID --root-url URL --policy FILE --keys DIR`) it fetches the
//! evidence anonymously (or with TASKCLUSTER_* credentials when set) into a bundle, optionally
//! exported with `--export-bundle DIR`; offline (`--bundle DIR`) it judges an existing bundle.
//! Policy and keys always come from the auditor, never from the bundle. Thin by design: argument
//! checks, loading, one call to `evidence`/`verify`, rendering, exit code.
//!
//! Exit codes: 0 verified, 1 verification failed, 2 infrastructure error (queue unreachable,
//! bundle unreadable), 64 usage or configuration error.

use crate::chain_policy::ChainPolicy;
use crate::cli::UsageError;
use crate::evidence::{self, EvidenceError};
use crate::ids::TaskId;
use crate::queue::{Credentials, EnvSource, ProcessEnv, QueueClient, RetryPolicy};
use crate::trust::{self, TrustPin, TrustStore};
use crate::verify::bundle::Bundle;
use crate::verify::{self, Limits, Mode, Report};
use chrono::{DateTime, Utc};
use clap::ValueEnum;
use std::path::{Path, PathBuf};

/// Exit code: the chain verified.
pub const EXIT_VERIFIED: i32 = 0;
/// Exit code: verification failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit code: the evidence could not be obtained or read.
pub const EXIT_INFRASTRUCTURE: i32 = 2;

/// Output formats of `chainlock verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// A readable tree, each check marked.
    Text,
    /// JSON, as described by `schemas/verify-report.schema.json`.
    Json,
    /// Graphviz dot; failed links red.
    Dot,
}

/// Arguments of `chainlock verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The task to verify (online). Omit with --bundle.
    pub task_id: Option<String>,
    /// Taskcluster root URL (online).
    #[arg(long, env = "TASKCLUSTER_ROOT_URL")]
    pub root_url: Option<String>,
    /// Judge an evidence bundle directory instead of fetching (offline).
    #[arg(long, conflicts_with_all = ["task_id", "export_bundle"])]
    pub bundle: Option<PathBuf>,
    /// Chain policy (TOML, schemas/chain-policy.schema.json).
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Trust store directory (keys/ layout).
    #[arg(long)]
    pub keys: Option<PathBuf>,
    /// Pin the trust store at `VERSION:SHA256` of its trust.toml (default: version 1 of the
    /// given keys directory, which the auditor chose to trust).
    #[arg(long)]
    pub trust_pin: Option<String>,
    /// Also verify the task's own run, document and signature (auditing a finished task).
    #[arg(long)]
    pub check_task: bool,
    /// Write the fetched evidence to this (new or empty) directory.
    #[arg(long)]
    pub export_bundle: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Retries of failed queue requests (connection errors, 5xx).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
}

/// Runs `chainlock verify` and returns the exit code.
pub async fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let now = crate::clock::now();
    let limits = Limits::default();
    let judge = match (&args.policy, &args.keys) {
        (Some(p), Some(k)) => Some((
            load_policy(p)?,
            load_trust(k, args.trust_pin.as_deref(), now)?,
        )),
        (None, None) => None,
        _ => return Err(usage("--policy and --keys go together")),
    };

    if let Some(dir) = &args.bundle {
        let Some((policy, trust)) = &judge else {
            return Err(usage("--bundle needs --policy and --keys"));
        };
        let bundle = match Bundle::open(dir, &limits) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("chainlock verify: cannot read bundle: {e}");
                return Ok(EXIT_INFRASTRUCTURE);
            }
        };
        let target = bundle.index().target.clone();
        let result = verify::verify(
            &bundle,
            &target,
            policy,
            trust,
            now,
            &limits,
            Mode {
                check_target: args.check_task,
            },
        );
        return Ok(render(result.map(|v| v.report().clone()), args.format));
    }

    let Some(task_id) = &args.task_id else {
        return Err(usage("give a TASK_ID (online) or --bundle DIR (offline)"));
    };
    let task_id = TaskId::parse(task_id).map_err(|e| usage(e.to_string()))?;
    let Some(root_url) = &args.root_url else {
        return Err(usage(
            "online verification needs --root-url (or TASKCLUSTER_ROOT_URL)",
        ));
    };
    if judge.is_none() && args.export_bundle.is_none() {
        return Err(usage(
            "give --policy and --keys to verify, or --export-bundle DIR to only fetch",
        ));
    }
    let credentials = if ProcessEnv.var("TASKCLUSTER_CLIENT_ID").is_some() {
        Some(Credentials::from_env(&ProcessEnv).map_err(|e| usage(e.to_string()))?)
    } else {
        None
    };
    let retry = RetryPolicy {
        max_attempts: args.retries.saturating_add(1),
        ..RetryPolicy::standard()
    };
    let queue = QueueClient::new(root_url, credentials, retry).map_err(|e| usage(e.to_string()))?;

    let staging;
    let dir: PathBuf = match &args.export_bundle {
        Some(d) => d.clone(),
        None => {
            staging = tempfile::tempdir()?;
            staging.path().join("bundle")
        }
    };
    match evidence::fetch_bundle(&queue, &task_id, None, &dir, &limits, args.check_task).await {
        Ok(_) => {}
        Err(e @ EvidenceError::BundleDir { .. }) => return Err(usage(e.to_string())),
        Err(e) => {
            eprintln!("chainlock verify: cannot fetch the evidence: {e}");
            return Ok(EXIT_INFRASTRUCTURE);
        }
    }
    let Some((policy, trust)) = &judge else {
        eprintln!("chainlock verify: evidence written to {}", dir.display());
        return Ok(EXIT_VERIFIED);
    };
    let bundle = match Bundle::open(&dir, &limits) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("chainlock verify: cannot read the fetched bundle: {e}");
            return Ok(EXIT_INFRASTRUCTURE);
        }
    };
    let result = verify::verify(
        &bundle,
        &task_id,
        policy,
        trust,
        now,
        &limits,
        Mode {
            check_target: args.check_task,
        },
    );
    Ok(render(result.map(|v| v.report().clone()), args.format))
}

fn render(result: Result<Report, Box<Report>>, format: ReportFormat) -> i32 {
    let (report, code) = match result {
        Ok(r) => (r, EXIT_VERIFIED),
        Err(r) => (*r, EXIT_FAILED),
    };
    let out = match format {
        ReportFormat::Text => report.to_text(),
        ReportFormat::Json => report.to_json() + "\n",
        ReportFormat::Dot => report.to_dot(),
    };
    print!("{out}");
    code
}

fn load_policy(path: &Path) -> anyhow::Result<ChainPolicy> {
    ChainPolicy::load(path).map_err(|e| usage(e.to_string()))
}

/// Loads the auditor's trust store, pinned at `pin` (`VERSION:SHA256`) or at version 1 of the
/// directory the auditor pointed us at.
pub fn load_trust(
    keys: &Path,
    pin: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<TrustStore> {
    let limits = trust::Limits::default();
    let pin = match pin {
        Some(p) => {
            let (v, sha) = p
                .split_once(':')
                .ok_or_else(|| usage("--trust-pin is VERSION:SHA256"))?;
            TrustPin {
                version: v
                    .parse()
                    .map_err(|_| usage("--trust-pin version is a number"))?,
                sha256: sha.to_ascii_lowercase(),
            }
        }
        None => {
            let first = trust::history_dir(keys, 1).join("trust.toml");
            let path = if first.exists() {
                first
            } else {
                keys.join("trust.toml")
            };
            let bytes = std::fs::read(&path)
                .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
            TrustPin {
                version: 1,
                sha256: trust::sha256_hex(&bytes),
            }
        }
    };
    TrustStore::load(keys, &pin, now, &limits)
        .map_err(|e| usage(format!("trust store {}: {e}", keys.display())))
}
