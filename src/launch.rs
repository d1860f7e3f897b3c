//! The script launcher: the only code in chainlock that starts a process.
//!
//! Why it exists: the script is the one piece of the worker that acts on release artifacts, so
//! how it is started is a security boundary. The launcher execs the operator's argv directly (no
//! shell), in its own process group, with an emptied environment plus an explicit allowlist and
//! the task variables, stdin from `/dev/null`, and the task's work directory as cwd. Its stdout
//! and stderr go line by line into the task log and the worker's log. A timeout, a lost claim or
//! a shutdown stops the whole group: SIGTERM, a grace period, then SIGKILL, so grandchildren die
//! too.
//!
//! [`run`] takes a [`VerifiedChain`], which only the chain-of-trust verifier can build: starting
//! the script for a task whose chain was not verified does not compile. The argv is wrapped by
//! the configured [`Sandbox`] (`[script] isolation`): with `namespaces` the script runs under
//! its own uid in its own PID and mount namespaces and cannot see the worker's files at all;
//! with `uid` it runs under its own uid. After the script ends, whatever the reason,
//! [`Sandbox::contain`] kills everything it started and checks `/proc` that nothing is left,
//! before the worker looks at the artifact directory.
//!
//! What it must not do: pass any credentials. The script receives **no Taskcluster credentials
//! at all** (not even the run's temporary ones) and never the chain-of-trust key: everything it
//! needs from the queue has been downloaded and verified by the worker before it starts, and
//! everything it produces is uploaded by the worker after it ends. With `isolation = "none"`
//! the script still runs as the worker's uid and *can* read the worker's files: only the
//! environment is clean there. `clippy.toml` bans `Command::new` everywhere else.

use crate::queue::EnvSource;
use crate::sandbox::{RunView, Sandbox, SandboxError, procs};
use crate::verify::VerifiedChain;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Byte caps applied to the script's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest line kept whole; longer lines are flushed in pieces of this size (default 64 KiB,
    /// as scriptworker, so a script printing without newlines cannot exhaust memory).
    pub max_line_bytes: usize,
    /// Size of the task log after which script output is dropped, with one notice (default
    /// 1 GiB), so a runaway script cannot fill the disk.
    pub max_log_bytes: u64,
    /// How long to wait for the output pipes to close once the process group is dead (default
    /// 5 s); a process that escaped the group cannot keep the task open forever.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line_bytes: 64 * 1024,
            max_log_bytes: 1024 * 1024 * 1024,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Everything needed to start the script once.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// Exact argv; `argv[0]` is an absolute path (resolved when the config was loaded).
    pub argv: Vec<String>,
    /// The complete environment (see [`script_env`]); nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// Working directory (the task's work dir).
    pub cwd: PathBuf,
    /// Run time limit.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub kill_grace: Duration,
    /// Output caps.
    pub limits: Limits,
    /// The isolation the argv is wrapped in.
    pub sandbox: Arc<Sandbox>,
    /// What this run may see.
    pub view: RunView,
}

/// How the script run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptEnd {
    /// The script exited with this code.
    Exited(i32),
    /// The script was killed by this signal (not by us).
    Signaled(i32),
    /// The run time limit passed; the group was stopped.
    TimedOut {
        /// The limit that applied.
        after: Duration,
    },
    /// The worker cancelled the run (lost claim or shutdown); the group was stopped.
    Cancelled,
}

/// Why the script could not be run or logged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The argv is empty (a config invariant was broken).
    #[error("script argv is empty")]
    EmptyArgv,
    /// The process could not be started.
    #[error("cannot start script {program}: {source}")]
    Spawn {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Waiting for the process failed.
    #[error("cannot wait for script {program}: {source}")]
    Wait {
        /// `argv[0]`.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something of the run survived the kill: the worker must not go on.
    #[error("containment failed: {0}")]
    Contain(#[from] SandboxError),
    /// The task log could not be written.
    #[error("cannot write task log {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Builds the script's complete environment: the allowlisted variables that are set in the
/// worker's environment, then the fixed task variables (which win).
pub fn script_env(
    allowlist: &[String],
    worker_env: &impl EnvSource,
    fixed: &[(&str, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = allowlist
        .iter()
        .filter(|name| !fixed.iter().any(|(f, _)| f == name))
        .filter_map(|name| worker_env.var(name).map(|v| (name.clone(), v)))
        .collect();
    env.extend(fixed.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env
}

/// Which pipe a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

/// The task log file (`live_backing.log`): worker notices and the script's output, in order.
#[derive(Debug)]
pub struct TaskLog {
    path: PathBuf,
    out: BufWriter<tokio::fs::File>,
    bytes: u64,
    max_bytes: u64,
    truncated: bool,
}

impl TaskLog {
    /// Creates (truncating) the log file at `path`.
    pub async fn create(path: &Path, limits: &Limits) -> Result<TaskLog, LaunchError> {
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|source| LaunchError::Log {
                path: path.to_owned(),
                source,
            })?;
        Ok(TaskLog {
            path: path.to_owned(),
            out: BufWriter::new(file),
            bytes: 0,
            max_bytes: limits.max_log_bytes,
            truncated: false,
        })
    }

    /// Reopens an existing log for appending (after the job that wrote it died).
    pub async fn create_append(path: &Path, limits: &Limits) -> Result<TaskLog, LaunchError> {
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .await
            .map_err(|source| LaunchError::Log {
                path: path.to_owned(),
                source,
            })?;
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        Ok(TaskLog {
            path: path.to_owned(),
            out: BufWriter::new(file),
            bytes,
            max_bytes: limits.max_log_bytes,
            truncated: false,
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes one worker line (`[chainlock] …`) to the task log. Never pass secrets.
    pub async fn notice(&mut self, text: &str) -> Result<(), LaunchError> {
        // Notices quote untrusted names and messages: one notice is always exactly one line.
        let line = format!("[chainlock] {}\n", crate::untrusted_text::escape_line(text));
        self.write_unbounded(line.as_bytes()).await
    }

    async fn script_line(&mut self, stream: Stream, bytes: &[u8]) -> Result<(), LaunchError> {
        let text = String::from_utf8_lossy(bytes);
        match stream {
            Stream::Stdout => {
                tracing::info!(target: "chainlock::script", stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::info!(target: "chainlock::script", stream = "stderr", "{text}")
            }
        }
        if self.bytes.saturating_add(text.len() as u64 + 1) > self.max_bytes {
            if !self.truncated {
                self.truncated = true;
                let notice = format!(
                    "[chainlock] task log reached {} bytes: further script output dropped\n",
                    self.max_bytes
                );
                // The notice itself may exceed the cap slightly; that is intended.
                self.write_unbounded(notice.as_bytes()).await?;
            }
            return Ok(());
        }
        let mut line = text.into_owned();
        line.push('\n');
        self.write_unbounded(line.as_bytes()).await
    }

    async fn write_unbounded(&mut self, bytes: &[u8]) -> Result<(), LaunchError> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|source| LaunchError::Log {
                path: self.path.clone(),
                source,
            })?;
        self.bytes = self.bytes.saturating_add(bytes.len() as u64);
        Ok(())
    }

    /// Flushes and syncs the log; after this its bytes are final (they will be hashed).
    pub async fn finish(mut self) -> Result<PathBuf, LaunchError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| LaunchError::Log { path, source }
        };
        self.out.flush().await.map_err(err(&self.path))?;
        self.out
            .get_ref()
            .sync_all()
            .await
            .map_err(err(&self.path))?;
        Ok(self.path)
    }
}

#[allow(clippy::disallowed_methods)] // the one place allowed to start a process
fn spawn(
    spec: &LaunchSpec,
) -> Result<(tokio::process::Child, Option<procs::Registered>), LaunchError> {
    let argv = spec.sandbox.wrap(&spec.argv, &spec.view);
    let (program, args) = argv.split_first().ok_or(LaunchError::EmptyArgv)?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    procs::registry()
        .spawn(|| cmd.spawn(), |c| c.id())
        .map_err(|source| LaunchError::Spawn {
            program: program.clone(),
            source,
        })
}

/// Runs one of the sandbox's own helpers (probe, reaper) to its end with a fixed argv, an
/// environment of `PATH` only and no stdin; returns its stdout, or why it failed.
#[allow(clippy::disallowed_methods)] // the sandbox's own helpers, never task-chosen
pub(crate) async fn run_helper(
    argv: &[String],
    cwd: &Path,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let (program, args) = argv.split_first().ok_or("empty argv")?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let (child, _reg) = procs::registry()
        .spawn(|| cmd.spawn(), |c| c.id())
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| format!("{program} did not finish within {} s", timeout.as_secs()))?
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr: String = stderr.chars().take(2000).collect();
        return Err(format!(
            "{program} failed ({}): {}",
            out.status,
            stderr.trim()
        ));
    }
    Ok(out.stdout)
}

/// Runs the script to its end, streaming its output into `log`. Returns how it ended; the log
/// gets a final line (`exit code: N`, the signal, the timeout or the cancellation).
///
/// `verified` is the proof that the task's chain of trust verified: there is no other way to
/// start the script. On timeout or when `cancel` fires, the whole process group is stopped
/// (SIGTERM, up to `kill_grace`, SIGKILL). After a normal exit, anything left in the group is
/// killed.
pub async fn run(
    spec: &LaunchSpec,
    verified: &VerifiedChain,
    log: &mut TaskLog,
    cancel: &CancellationToken,
) -> Result<ScriptEnd, LaunchError> {
    log.notice(&format!(
        "chain of trust of task {} verified ({} upstream file(s) in cot/)",
        verified.target(),
        verified.files().len()
    ))
    .await?;
    run_script(spec, log, cancel).await
}

/// [`run`] without the proof; private, so only this module's unit tests can call it directly.
async fn run_script(
    spec: &LaunchSpec,
    log: &mut TaskLog,
    cancel: &CancellationToken,
) -> Result<ScriptEnd, LaunchError> {
    let program = spec.argv.first().cloned().unwrap_or_default();
    log.notice(&format!(
        "running {:?} (isolation: {})",
        spec.argv,
        spec.sandbox.level().as_str()
    ))
    .await?;
    let (mut child, registered) = spawn(spec)?;
    // `id()` is Some until the child has been reaped, which cannot have happened yet.
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);

    let (tx, mut rx) = mpsc::channel::<(Stream, Vec<u8>)>(256);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(pump(
            out,
            Stream::Stdout,
            spec.limits.max_line_bytes,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(pump(
            err,
            Stream::Stderr,
            spec.limits.max_line_bytes,
            tx.clone(),
        )));
    }
    drop(tx);

    let wait_err = |source| LaunchError::Wait {
        program: program.clone(),
        source,
    };
    let deadline = Instant::now() + spec.timeout;
    let mut outcome: Option<Result<ScriptEnd, LaunchError>> = None;
    let mut pipes_open = true;
    // Drain output while waiting, so a chatty script never blocks on a full pipe.
    while outcome.is_none() {
        tokio::select! {
            line = rx.recv(), if pipes_open => match line {
                Some((stream, bytes)) => log.script_line(stream, &bytes).await?,
                None => pipes_open = false,
            },
            status = child.wait() => {
                outcome = Some(status.map(end_of).map_err(wait_err));
            }
            _ = tokio::time::sleep_until(deadline) => {
                stop_group(spec, pgid, &mut child, &mut rx, log).await?;
                outcome = Some(Ok(ScriptEnd::TimedOut { after: spec.timeout }));
            }
            _ = cancel.cancelled() => {
                stop_group(spec, pgid, &mut child, &mut rx, log).await?;
                outcome = Some(Ok(ScriptEnd::Cancelled));
            }
        }
    }
    drop(registered);
    // Whatever ended the run: nothing it started may live on (kernel-enforced where the level
    // allows, checked over /proc in every case) before anything looks at its output.
    spec.sandbox.contain(pgid).await?;

    // The group is dead: the pipes close unless something escaped it, which gets a bound.
    let drain_until = Instant::now() + spec.limits.drain_timeout;
    while pipes_open {
        match tokio::time::timeout_at(drain_until, rx.recv()).await {
            Ok(Some((stream, bytes))) => log.script_line(stream, &bytes).await?,
            Ok(None) => pipes_open = false,
            Err(_) => {
                log.notice("output pipes still open after the script ended; stopped reading")
                    .await?;
                pipes_open = false;
            }
        }
    }
    for r in readers {
        r.abort();
    }

    let end = match outcome {
        Some(o) => o?,
        None => return Err(LaunchError::EmptyArgv), // unreachable: the loop sets it
    };
    let footer = match end {
        ScriptEnd::Exited(code) => format!("exit code: {code}"),
        ScriptEnd::Signaled(sig) => format!("killed by signal {}", signal_name(sig)),
        ScriptEnd::TimedOut { after } => {
            format!(
                "exceeded max run time of {} seconds: killed",
                after.as_secs()
            )
        }
        ScriptEnd::Cancelled => "cancelled by the worker: killed".to_owned(),
    };
    log.notice(&footer).await?;
    tracing::info!(target: "chainlock::script", "{footer}");
    Ok(end)
}

/// SIGTERM to the script's processes; wait (still logging output) until they are gone or the
/// grace has passed; then SIGKILL to the group and reap the child ([`Sandbox::contain`] kills
/// the rest).
async fn stop_group(
    spec: &LaunchSpec,
    pgid: Option<Pid>,
    child: &mut tokio::process::Child,
    rx: &mut mpsc::Receiver<(Stream, Vec<u8>)>,
    log: &mut TaskLog,
) -> Result<(), LaunchError> {
    let Some(pgid) = pgid else {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ok(());
    };
    spec.sandbox.terminate(Some(pgid));
    let until = Instant::now() + spec.kill_grace;
    let mut reaped = false;
    let mut pipes_open = true;
    loop {
        if reaped && !spec.sandbox.run_alive(Some(pgid)) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            status = child.wait(), if !reaped => { let _ = status; reaped = true; }
            line = rx.recv(), if pipes_open => match line {
                Some((stream, bytes)) => log.script_line(stream, &bytes).await?,
                None => pipes_open = false,
            },
            _ = tokio::time::sleep(Duration::from_millis(50)), if reaped => {}
        }
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.wait().await;
    Ok(())
}

fn end_of(status: ExitStatus) -> ScriptEnd {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ScriptEnd::Exited(code),
        (None, Some(sig)) => ScriptEnd::Signaled(sig),
        // Neither a code nor a signal cannot happen on Unix; treat it as a failure signal.
        (None, None) => ScriptEnd::Signaled(0),
    }
}

/// `SIGTERM (15)`, or just the number for unknown signals.
pub fn signal_name(sig: i32) -> String {
    match Signal::try_from(sig) {
        Ok(s) => format!("{} ({sig})", s.as_str()),
        Err(_) => format!("{sig}"),
    }
}

/// Reads `r` into lines of at most `cap` bytes (a longer line is sent in pieces) and sends them.
async fn pump<R: AsyncRead + Unpin>(
    r: R,
    stream: Stream,
    cap: usize,
    tx: mpsc::Sender<(Stream, Vec<u8>)>,
) {
    let cap = cap.max(1);
    let mut reader = BufReader::with_capacity(cap.min(64 * 1024), r);
    let mut line: Vec<u8> = Vec::new();
    while let Ok(buf) = reader.fill_buf().await {
        if buf.is_empty() {
            break;
        }
        let room = cap - line.len();
        let window = &buf[..buf.len().min(room)];
        if let Some(pos) = window.iter().position(|&b| b == b'\n') {
            line.extend_from_slice(&window[..pos]);
            reader.consume(pos + 1);
            if tx.send((stream, std::mem::take(&mut line))).await.is_err() {
                return;
            }
        } else {
            let n = window.len();
            line.extend_from_slice(window);
            reader.consume(n);
            if line.len() >= cap && tx.send((stream, std::mem::take(&mut line))).await.is_err() {
                return;
            }
        }
    }
    if !line.is_empty() {
        let _ = tx.send((stream, line)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(script: &str, dir: &Path, timeout: Duration) -> LaunchSpec {
        LaunchSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec![("PATH".into(), "/usr/bin:/bin".into())],
            cwd: dir.to_owned(),
            timeout,
            kill_grace: Duration::from_secs(1),
            limits: Limits {
                max_line_bytes: 16,
                ..Limits::default()
            },
            sandbox: Arc::new(Sandbox::none()),
            view: RunView::default(),
        }
    }

    async fn run_sh(script: &str, timeout: Duration) -> (ScriptEnd, String) {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("log");
        let mut log = TaskLog::create(&log_path, &Limits::default())
            .await
            .unwrap();
        let end = run_script(
            &spec(script, dir.path(), timeout),
            &mut log,
            &CancellationToken::new(),
        )
        .await
        .unwrap();
        log.finish().await.unwrap();
        (end, std::fs::read_to_string(&log_path).unwrap())
    }

    #[tokio::test]
    async fn exit_code_and_output_are_logged() {
        let (end, log) = run_sh("echo out; echo err >&2; exit 3", Duration::from_secs(30)).await;
        assert_eq!(end, ScriptEnd::Exited(3));
        assert!(log.contains("\nout\n") && log.contains("\nerr\n"), "{log}");
        assert!(log.ends_with("[chainlock] exit code: 3\n"), "{log}");
    }

    #[tokio::test]
    async fn long_lines_are_split_and_invalid_utf8_kept() {
        let (end, log) = run_sh(
            "printf 'abcdefghijklmnopqrstuvwxyz\\n'; printf 'x\\377y\\n'; printf 'tail'",
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(end, ScriptEnd::Exited(0));
        assert!(log.contains("\nabcdefghijklmnop\nqrstuvwxyz\n"), "{log}");
        assert!(log.contains("x\u{FFFD}y\n"), "{log}");
        assert!(log.contains("\ntail\n"), "{log}");
    }

    #[tokio::test]
    async fn environment_is_exactly_what_was_given() {
        let (_, log) = run_sh("env | sort", Duration::from_secs(30)).await;
        let vars: Vec<&str> = log
            .lines()
            .filter(|l| !l.starts_with("[chainlock]") && l.contains('='))
            .collect();
        // sh may add PWD/SHLVL/_ itself; nothing from the worker's environment may appear.
        for v in &vars {
            let name = v.split('=').next().unwrap_or_default();
            assert!(
                ["PATH", "PWD", "SHLVL", "_", "OLDPWD"].contains(&name),
                "unexpected variable {v}"
            );
        }
    }

    #[tokio::test]
    async fn own_signal_death_is_reported() {
        let (end, log) = run_sh("kill -9 $$", Duration::from_secs(30)).await;
        assert_eq!(end, ScriptEnd::Signaled(9));
        assert!(log.contains("killed by signal SIGKILL (9)"), "{log}");
    }

    #[tokio::test]
    async fn timeout_stops_the_group() {
        let (end, log) = run_sh(
            "trap '' TERM; sleep 30 & sleep 30; wait",
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(
            end,
            ScriptEnd::TimedOut {
                after: Duration::from_millis(300)
            }
        );
        assert!(log.contains("exceeded max run time"), "{log}");
    }

    fn alive(pid: &str) -> bool {
        // A zombie waiting for init to reap it no longer runs.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn timeout_kills_grandchildren_that_ignore_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            "trap '' TERM; (trap '' TERM; sleep 60 & echo $! >> {p}; sleep 60) & echo $! >> {p}; \
             sleep 60 & echo $! >> {p}; wait",
            p = pids.display()
        );
        let (end, _) = run_sh(&script, Duration::from_millis(500)).await;
        assert!(matches!(end, ScriptEnd::TimedOut { .. }));
        let pids = std::fs::read_to_string(&pids).unwrap();
        assert_eq!(pids.lines().count(), 3, "{pids}");
        for pid in pids.lines() {
            assert!(!alive(pid.trim()), "process {pid} survived");
        }
    }

    #[test]
    fn script_env_takes_allowlisted_and_fixed_only() {
        let worker = HashMap::from([
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
            ("TASKCLUSTER_ACCESS_TOKEN".to_owned(), "secret".to_owned()),
            ("TASK_ID".to_owned(), "spoofed".to_owned()),
        ]);
        let env = script_env(
            &["LANG".into(), "MISSING".into(), "TASK_ID".into()],
            &worker,
            &[("TASK_ID", "real".into())],
        );
        assert_eq!(
            env,
            vec![
                ("LANG".to_owned(), "C.UTF-8".to_owned()),
                ("TASK_ID".to_owned(), "real".to_owned())
            ]
        );
    }
}
