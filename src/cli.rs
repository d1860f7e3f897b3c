//! Command-line interface: parses arguments and dispatches to one module per subcommand.
//!
//! Kept thin on purpose (ripgrep's `main.rs`): no queue, signing or verification logic lives here.
//! Each subcommand's arguments are defined next to the code that runs them.

use crate::exit::{EX_USAGE, UsageError};
use clap::{Parser, Subcommand, ValueEnum};

/// Handles a command line clap refused: `--help` and `--version` print to stdout and exit 0;
/// every other parse error (unknown flag, bad value, conflicting or missing argument, no
/// subcommand) is a usage error, exit [`EX_USAGE`], never clap's own 2 (which `chainlock verify`
/// defines as "evidence unavailable"). When the command line asked `chainlock verify` for
/// `--format json`, the error is also printed on stdout as the schema's error document, so a
/// JSON consumer always gets one document. Returns the exit code.
pub fn handle_parse_error(err: &clap::Error, argv: &[std::ffi::OsString]) -> i32 {
    use clap::error::ErrorKind;
    let code = match err.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
        _ => EX_USAGE,
    };
    // clap prints help and version on stdout, errors on stderr.
    let _ = err.print();
    if code == EX_USAGE && crate::verify_cli::wants_json(argv) {
        let rendered = err.render().to_string();
        let message = rendered.trim_end();
        let message = message.strip_prefix("error: ").unwrap_or(message);
        println!(
            "{}",
            crate::verify::report::ErrorReport::new(
                crate::verify::report::ErrorKind::Usage,
                message
            )
            .to_json()
        );
    }
    code
}

/// chainlock: a locked-down Taskcluster release worker.
#[derive(Debug, Parser)]
#[command(name = "chainlock", version, about, long_about = None)]
pub struct Cli {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// JSON lines, for log collectors.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: claim, verify, run the script, upload, report.
    Run(crate::worker::RunArgs),
    /// Inspect configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Serve a small Taskcluster-queue-compatible server for development and tests only.
    ///
    /// NOT a production queue: no HA, local artifact (and object) storage.
    DevQueue(crate::devqueue::DevQueueArgs),
    /// Run the quickstart: a dev queue, a realistic task, the worker, and the result.
    Demo(crate::demo::DemoArgs),
    /// Manage the keys/ trust store: root keys, worker keys, rotation, signatures.
    Keys(crate::keys_cli::KeysArgs),
    /// Run a script chainlock ships (the worker launches it; see the script contract).
    #[command(subcommand)]
    Script(ScriptCommand),
    /// Verify a task's chain of trust, online (TASK_ID) or from an evidence bundle (--bundle).
    ///
    /// Exit 0 verified, 1 verification failed, 2 evidence unavailable, 64 usage.
    Verify(crate::verify_cli::VerifyArgs),
    /// Internal: run inside the script sandbox by the worker's start-up probe.
    #[command(hide = true)]
    SandboxProbe {
        /// The scratch run's artifact directory.
        #[arg(long)]
        artifacts: std::path::PathBuf,
        /// A worker secret the script must not read.
        #[arg(long = "secret")]
        secrets: Vec<std::path::PathBuf>,
    },
    /// Internal: run as the script's uid after every run; SIGKILLs every process of that uid.
    #[command(hide = true)]
    SandboxReap,
}

/// `chainlock script ...`.
#[derive(Debug, Subcommand)]
pub enum ScriptCommand {
    /// Sign verified upstream files with the release key selected by the task's cert scope.
    Sign {
        /// Script configuration (TOML).
        #[arg(long)]
        config: std::path::PathBuf,
    },
    /// Publish verified upstream files to the destination selected by the task's bucket scope.
    Push {
        /// Script configuration (TOML).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Print what would be published; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `chainlock config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate a config file, print the effective config with secrets redacted, and run the
    /// worker's start-up checks read-only (exit 64 if any fails).
    Check {
        /// The config file.
        file: std::path::PathBuf,
    },
}

/// Sets up tracing on stderr: human-readable by default, JSON lines with `--log-format json`.
/// `RUST_LOG` refines the level (default `default_filter`). Colours only on a terminal, so log
/// files and journald get plain text.
pub fn init_logging(format: LogFormat, default_filter: &str) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling `run` twice) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The demo narrates its own steps on stdout; of the in-process workers' logs it shows only
/// warnings and the script's own output lines, so the story stays readable.
const DEMO_LOG_FILTER: &str = "warn,chainlock::script=info";

/// Runs the parsed command line and returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let default_filter = match cli.command {
        Command::Demo(_) => DEMO_LOG_FILTER,
        _ => "info",
    };
    init_logging(cli.log_format, default_filter);
    match cli.command {
        Command::Keys(args) => crate::keys_cli::run(args),
        Command::SandboxProbe { artifacts, secrets } => {
            Ok(crate::sandbox::probe_main(&artifacts, &secrets))
        }
        Command::SandboxReap => Ok(crate::sandbox::reap_main()),
        Command::Verify(args) => crate::verify_cli::run(args).await,
        Command::Script(ScriptCommand::Sign { config }) => {
            Ok(crate::scripts::sign::run(&config).await)
        }
        Command::Script(ScriptCommand::Push { config, dry_run }) => {
            Ok(crate::scripts::push::run(&config, dry_run).await)
        }
        Command::Run(args) => run_worker(args).await,
        Command::Config(ConfigCommand::Check { file }) => config_check(&file).await,
        Command::Demo(args) => crate::demo::run(args).await,
        Command::DevQueue(args) => run_dev_queue(args).await,
    }
}

fn load_config(
    path: &std::path::Path,
) -> Result<(crate::config::Config, crate::queue::Credentials), UsageError> {
    let env = crate::queue::ProcessEnv;
    let config = crate::config::Config::load(path, &env).map_err(|e| UsageError(e.to_string()))?;
    let credentials = config
        .load_credentials(path, &env)
        .map_err(|e| UsageError(e.to_string()))?;
    Ok((config, credentials))
}

async fn run_worker(args: crate::worker::RunArgs) -> anyhow::Result<i32> {
    let (config, credentials) = load_config(&args.config)?;
    let shutdown = crate::worker::Shutdown::new();
    shutdown.install_signal_handlers()?;
    let options = crate::worker::RunOptions {
        max_tasks: args.max_tasks,
        // This process exists only to run the worker: every child it has is a script's.
        adopt_orphans: true,
        ..crate::worker::RunOptions::default()
    };
    match crate::worker::run(
        config,
        credentials,
        &crate::queue::ProcessEnv,
        options,
        shutdown,
    )
    .await
    {
        Ok(_) => Ok(0),
        // Start-up refusals are configuration errors: exit 64, nothing claimed.
        Err(crate::worker::WorkerError::Startup(e)) => Err(UsageError(e.to_string()).into()),
        Err(e) => Err(e.into()),
    }
}

async fn config_check(file: &std::path::Path) -> anyhow::Result<i32> {
    let (config, credentials) = load_config(file)?;
    println!("# {}: valid", file.display());
    println!(
        "# credentials: clientId {} (accessToken {}{})",
        credentials.client_id,
        credentials.access_token,
        if credentials.certificate.is_some() {
            ", with certificate"
        } else {
            ""
        }
    );
    print!("{}", config.to_toml());
    // The same checks the worker runs before its first claim, read-only.
    use crate::worker::startup::{CheckOutcome, check_config};
    let mut checks = check_config(&config, crate::clock::now());
    checks.extend(crate::worker::startup::check_isolation(&config).await);
    println!(
        "# start-up checks (read-only: the queue is not contacted, nothing in the work area is \
         written; the isolation probe runs in a temporary directory)"
    );
    for check in &checks {
        match &check.outcome {
            CheckOutcome::Ok(detail) => println!("ok    {}: {detail}", check.name),
            CheckOutcome::Failed(e) => println!("FAIL  {}: {e}", check.name),
            CheckOutcome::Skipped { needs } => {
                println!("FAIL  {}: not checked, needs {needs}", check.name)
            }
        }
    }
    let failed = checks.iter().filter(|c| !c.passed()).count();
    if failed > 0 {
        return Err(UsageError(format!(
            "{}: {failed} of {} start-up checks failed",
            file.display(),
            checks.len()
        ))
        .into());
    }
    Ok(0)
}

async fn run_dev_queue(args: crate::devqueue::DevQueueArgs) -> anyhow::Result<i32> {
    use crate::devqueue;
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let clients = match &args.clients {
        Some(path) => devqueue::load_clients_file(path),
        None => devqueue::client_from_env(&crate::queue::ProcessEnv).map(|c| vec![c]),
    }
    .map_err(|e| UsageError(e.to_string()))?;
    let mut cfg = devqueue::DevQueueConfig::new(args.listen, args.data_dir, clients);
    cfg.claim_timeout = std::time::Duration::from_secs(args.claim_timeout);
    cfg.claim_work_timeout = std::time::Duration::from_secs(args.claim_work_timeout);
    cfg.injected_latency = std::time::Duration::from_millis(args.latency_ms);
    cfg.azure_queue_endpoint = args.azure_queue_endpoint;
    let handle = devqueue::start(cfg).await?;
    eprintln!(
        "chainlock dev-queue (development only, NOT a production queue) at {}",
        handle.root_url()
    );
    tokio::signal::ctrl_c().await?;
    handle.shutdown().await;
    Ok(0)
}

#[cfg(test)]
mod tests {
    /// ARCHITECTURE.md: only `main` and `cli` know the command line as a whole. A module that
    /// imports `cli` back ties itself into one cycle with every command.
    #[test]
    fn nothing_but_main_imports_cli() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).expect("read src") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        let offenders: Vec<String> = files
            .iter()
            .filter(|p| !p.ends_with("src/cli.rs") && !p.ends_with("src/main.rs"))
            .filter(|p| {
                let text = std::fs::read_to_string(p).expect("read");
                text.contains("crate::cli::") || text.contains("crate::cli;")
            })
            .map(|p| p.display().to_string())
            .collect();
        assert!(offenders.is_empty(), "{offenders:?}");
    }
}
