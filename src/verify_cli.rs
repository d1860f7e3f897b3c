//! `chainlock verify`: the auditor's entry point to the same verifier the worker runs.
//!
//! Online (`chainlock verify TASK_ID --root-url URL --policy FILE --keys DIR`) it fetches the
//! evidence anonymously (or with TASKCLUSTER_* credentials when set) into a bundle, optionally
//! exported with `--export-bundle DIR`; offline (`--bundle DIR`) it judges an existing bundle,
//! which must be evidence for TASK_ID when one is given (a bundle cannot retarget itself).
//! Policy and keys always come from the auditor, never from the bundle. Thin by design: argument
//! checks, loading, one call to `evidence`/`verify`, rendering, exit code.
//!
//! Exit codes: 0 verified, 1 verification failed, 2 infrastructure error (queue unreachable,
//! bundle unreadable), 64 usage or configuration error. With `--format json` every outcome is
//! one document on stdout (`schemas/verify-report.schema.json`).

use crate::chain_policy::ChainPolicy;
use crate::evidence::{self, EvidenceError};
use crate::ids::TaskId;
use crate::queue::{Credentials, EnvSource, ProcessEnv, QueueClient, RetryPolicy};
use crate::trust::{self, TrustPin, TrustStore};
use crate::untrusted_text::escape_line;
use crate::verify::bundle::{BUNDLE_FILE, Bundle, BundleError};
use crate::verify::report::{ErrorKind, ErrorReport, ExportDetail, ExportReport, REPORT_VERSION};
use crate::verify::{self, Limits, Mode, Report, VerifyError};
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
    /// The task to verify: fetched online, or required of the bundle with --bundle.
    pub task_id: Option<String>,
    /// Taskcluster root URL (online).
    #[arg(long, env = "TASKCLUSTER_ROOT_URL")]
    pub root_url: Option<String>,
    /// Judge an evidence bundle directory instead of fetching (offline). With TASK_ID, the
    /// bundle must be evidence for that task (its bundle.json target), or it is refused.
    #[arg(long, conflicts_with_all = ["export_bundle"])]
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
    /// With --bundle: a local git clone the auditor trusts; each decision task's
    /// `.taskcluster.yml` is read from its object database at the decision's commit (check
    /// decision-rebuild), instead of the bundle's unbound copy.
    #[arg(long, value_name = "DIR", requires = "bundle")]
    pub source: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Retries of failed queue requests (connection errors, 5xx).
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

/// Why `chainlock verify` has no verdict to print: a usage error (exit 64) or unavailable
/// evidence (exit 2). Printed on stderr, and on stdout as the schema's error document with
/// `--format json`.
#[derive(Debug)]
struct Refusal {
    kind: ErrorKind,
    message: String,
}

impl Refusal {
    fn evidence(message: impl Into<String>) -> Refusal {
        Refusal {
            kind: ErrorKind::EvidenceUnavailable,
            message: message.into(),
        }
    }
}

fn usage(msg: impl Into<String>) -> Refusal {
    Refusal {
        kind: ErrorKind::Usage,
        message: msg.into(),
    }
}

/// Whether a raw command line asks `chainlock verify` for `--format json` (used when clap
/// refused it, so the JSON consumer still gets a document).
pub fn wants_json(argv: &[std::ffi::OsString]) -> bool {
    let args: Vec<&str> = argv.iter().skip(1).filter_map(|a| a.to_str()).collect();
    args.contains(&"verify")
        && args.iter().enumerate().any(|(i, a)| {
            *a == "--format=json" || (*a == "--format" && args.get(i + 1) == Some(&"json"))
        })
}

/// Runs `chainlock verify` and returns the exit code. Every outcome is printed here: a report
/// (exit 0 or 1), or a refusal (exit 2 or 64; with `--format json` an error document on
/// stdout as well).
pub async fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let format = args.format;
    match judge(args).await {
        Ok(code) => Ok(code),
        Err(refusal) => {
            eprintln!("chainlock verify: {}", refusal.message);
            if format == ReportFormat::Json {
                println!(
                    "{}",
                    ErrorReport::new(refusal.kind, refusal.message).to_json()
                );
            }
            Ok(refusal.kind.exit_code())
        }
    }
}

async fn judge(args: VerifyArgs) -> Result<i32, Refusal> {
    let now = crate::clock::now();
    let limits = Limits::default();
    // json-e for check 9, in a budgeted child of this binary.
    let renderer = crate::jsone::Sandboxed::current()
        .map_err(|e| Refusal::evidence(format!("cannot locate the chainlock binary: {e}")))?;
    let judge = match (&args.policy, &args.keys) {
        (Some(p), Some(k)) => Some((
            load_policy(p)?,
            load_trust(k, args.trust_pin.as_deref(), now)?,
        )),
        (None, None) => None,
        _ => return Err(usage("--policy and --keys go together")),
    };
    let requested = args
        .task_id
        .as_deref()
        .map(TaskId::parse)
        .transpose()
        .map_err(|e| usage(e.to_string()))?;

    if let Some(dir) = &args.bundle {
        let Some((policy, trust)) = &judge else {
            return Err(usage("--bundle needs --policy and --keys"));
        };
        let mut bundle =
            Bundle::open(dir, &limits).map_err(|e| Refusal::evidence(bundle_error(dir, &e)))?;
        if let Some(src) = &args.source {
            let clone = crate::git_checkout::GitCheckout::open(src)
                .map_err(|e| usage(format!("--source {}: {e}", src.display())))?;
            bundle = bundle.with_checkout(Box::new(clone));
        }
        let named = bundle.index().target.clone();
        let header = match &requested {
            // A bundle cannot retarget itself: the auditor's TASK_ID wins, and a bundle.json
            // naming another task (even another genuine task of the same chain) is refused.
            Some(task_id) if *task_id != named => {
                let report = Report::refused(
                    task_id.clone(),
                    now,
                    VerifyError::BundleTargetMismatch {
                        requested: task_id.clone(),
                        bundle_target: named,
                    },
                );
                return Ok(render(Err(Box::new(report)), args.format, None));
            }
            Some(_) => None,
            None => Some(format!(
                "target {named}: named by {}/{BUNDLE_FILE}, not by the auditor (give TASK_ID \
                 to require a task)",
                dir.display()
            )),
        };
        let result = verify::verify(
            &bundle,
            &named,
            policy,
            trust,
            now,
            &limits,
            Mode {
                check_target: args.check_task,
                renderer: &renderer,
            },
        );
        return Ok(render(
            result.map(|v| v.report().clone()),
            args.format,
            header.as_deref(),
        ));
    }

    let Some(task_id) = requested else {
        return Err(usage("give a TASK_ID (online) or --bundle DIR (offline)"));
    };
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
            staging = tempfile::tempdir().map_err(|e| {
                Refusal::evidence(format!("cannot create a directory for the evidence: {e}"))
            })?;
            staging.path().join("bundle")
        }
    };
    // An exported bundle is for any auditor's policy: it carries both signature formats.
    let fetch_policy = match (&args.export_bundle, &judge) {
        (None, Some((policy, _))) => Some(policy),
        _ => None,
    };
    match evidence::fetch_bundle(
        &queue,
        &task_id,
        None,
        &dir,
        &limits,
        args.check_task,
        fetch_policy,
        judge.as_ref().map(|(p, _)| p),
    )
    .await
    {
        Ok(_) => {}
        Err(e @ EvidenceError::BundleDir { .. }) => return Err(usage(e.to_string())),
        Err(e) => return Err(Refusal::evidence(format!("cannot fetch the evidence: {e}"))),
    }
    let Some((policy, trust)) = &judge else {
        eprintln!("chainlock verify: evidence written to {}", dir.display());
        if args.format == ReportFormat::Json {
            let export = ExportReport {
                report_version: REPORT_VERSION,
                exported: ExportDetail {
                    target: task_id,
                    bundle: dir.display().to_string(),
                },
            };
            println!("{}", export.to_json());
        }
        return Ok(EXIT_VERIFIED);
    };
    let bundle = Bundle::open_fetched(&dir, &limits).map_err(|e| {
        Refusal::evidence(format!(
            "cannot read the fetched {}",
            bundle_error(&dir, &e)
        ))
    })?;
    let result = verify::verify(
        &bundle,
        &task_id,
        policy,
        trust,
        now,
        &limits,
        Mode {
            check_target: args.check_task,
            renderer: &renderer,
        },
    );
    Ok(render(
        result.map(|v| v.report().clone()),
        args.format,
        None,
    ))
}

/// A bundle that cannot be opened, its files named relative to the bundle directory.
fn bundle_error(dir: &Path, e: &BundleError) -> String {
    let rel = |p: &Path| p.strip_prefix(dir).unwrap_or(p).display().to_string();
    let what = match e {
        BundleError::Read { path, detail } => format!("cannot read {}: {detail}", rel(path)),
        BundleError::Malformed { path, detail } => format!("{} is malformed: {detail}", rel(path)),
        other => other.to_string(),
    };
    format!("bundle {}: {}", dir.display(), escape_line(&what))
}

/// Prints the report; `header` (text only) goes first, above the verdict.
fn render(result: Result<Report, Box<Report>>, format: ReportFormat, header: Option<&str>) -> i32 {
    let (report, code) = match result {
        Ok(r) => (r, EXIT_VERIFIED),
        Err(r) => (*r, EXIT_FAILED),
    };
    let out = match format {
        ReportFormat::Text => match header {
            Some(h) => format!("{h}\n{}", report.to_text()),
            None => report.to_text(),
        },
        ReportFormat::Json => report.to_json() + "\n",
        ReportFormat::Dot => report.to_dot(),
    };
    print!("{out}");
    code
}

fn load_policy(path: &Path) -> Result<ChainPolicy, Refusal> {
    ChainPolicy::load(path).map_err(|e| usage(e.to_string()))
}

/// Loads the auditor's trust store, pinned at `pin` (`VERSION:SHA256`) or at version 1 of the
/// directory the auditor pointed us at.
fn load_trust(keys: &Path, pin: Option<&str>, now: DateTime<Utc>) -> Result<TrustStore, Refusal> {
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
